// libFuzzer target for sluice::http2::session: what a client sends after
// the connection preface, fed in pieces, while the server side answers as a
// protocol would (whole and streamed responses, bodies consumed, resets, a
// shutdown notice and the final GOAWAY half way).
//
// The first byte chooses the piece size and small limits (windows, output
// bound, empty frames); the rest is the client's frames. Checked along the
// way: output() never holds more than max_output_buffered plus one frame, a
// request head has a method, data comes only for a stream whose head came,
// nothing comes after a stream closed, and once receive() failed it stays
// failed. A violation traps.
#include "sluice/http2/session.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace {

namespace h2 = sluice::http2;

#define FUZZ_ASSERT(cond)          \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

enum class phase { open, ended, closed };

struct server final : h2::session_events {
  std::map<h2::stream_id, phase> streams;
  std::map<h2::stream_id, std::string> chunks;  // the chunk being written, per stream
  std::vector<h2::stream_id> to_answer;

  void on_request(h2::stream_id id, sluice::http::request_head& head, bool ended) override {
    FUZZ_ASSERT(!head.method.empty());
    FUZZ_ASSERT(streams.count(id) == 0);
    streams[id] = ended ? phase::ended : phase::open;
    to_answer.push_back(id);
  }
  bool on_data(h2::stream_id id, std::string_view) override {
    FUZZ_ASSERT(streams.count(id) == 1 && streams[id] == phase::open);
    return id % 4 == 1;  // some handlers read their body, some are gone
  }
  void on_request_end(h2::stream_id id, sluice::http::fields&) override {
    FUZZ_ASSERT(streams.count(id) == 1 && streams[id] == phase::open);
    streams[id] = phase::ended;
  }
  void on_stream_close(h2::stream_id id, h2::error_code) override {
    FUZZ_ASSERT(streams.count(id) == 1 && streams[id] != phase::closed);
    streams[id] = phase::closed;
  }
  void on_ping_ack() override {}
  void on_chunk_taken(h2::stream_id id) override { FUZZ_ASSERT(streams.count(id) == 1); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t choice = data[0];
  sluice::http::http2_options options;
  options.stream_window = (choice & 1) ? 100 : 65535;
  options.connection_window = (choice & 2) ? 1000 : 1 << 20;
  options.max_output_buffered = (choice & 4) ? 100 : 1 << 16;
  options.max_empty_frames = (choice & 8) ? 2 : 100;
  options.max_concurrent_streams = (choice & 16) ? 1 : 100;
  const std::size_t step = 1 + (choice >> 5) * 9;

  server events;
  h2::session s(events, options);
  std::string input = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  input.append(reinterpret_cast<const char*>(data) + 1, size - 1);
  bool failed = false;
  for (std::size_t at = 0, round = 0; at < input.size(); at += step, ++round) {
    auto piece = std::make_unique<char[]>(step);  // fresh each time: nothing may point into the last one
    const std::size_t n = std::min(step, input.size() - at);
    std::copy_n(input.data() + at, n, piece.get());
    const bool ok = s.receive(std::string_view(piece.get(), n));
    FUZZ_ASSERT(!failed || !ok);
    failed = !ok;
    for (auto id : std::exchange(events.to_answer, {})) {
      if (id % 3 == 0) {
        s.respond(id, 200, {}, std::string(static_cast<std::size_t>(id) * 100, 'r'));
      } else if (id % 3 == 1) {
        s.respond_streamed(id, 200, {});
        s.write_chunk(id, events.chunks[id] = std::string(300, 'c'));
        s.end_body(id);
      } else {
        s.reset(id, h2::error_code::cancel);
      }
      s.consume(id, 50);
    }
    if (round == 5) s.shutdown_notice();
    if (round == 10) s.final_goaway();
    const std::string_view out = s.output();
    FUZZ_ASSERT(out.size() <= options.max_output_buffered + 16384 + 9);
    s.output_written();
  }
  return 0;
}
