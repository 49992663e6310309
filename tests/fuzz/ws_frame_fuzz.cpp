// libFuzzer target for the WebSocket codec: frame_parser under message_reader, with and without
// permessage-deflate.
//
// The first 2 bytes choose max_message, compression (and its context takeover) and how the rest is
// split; the rest is what a client sends. It is read twice, whole and in pieces copied to a fresh
// buffer on every call, and both runs must report the same events and verdict (with compression,
// 1007 and 1009 count as one verdict: which comes first depends on where the input is cut). Along the way
// every documented invariant is checked (a message is never over max_message, text is UTF-8, a
// Close code is one a peer may send, need_more means every byte was used, an error stays); a
// violation traps.
#include "sluice/ws/reader.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace ws = sluice::ws;
using event = ws::message_reader::event;

#define FUZZ_ASSERT(cond)          \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

struct setup {
  std::size_t max_message;
  bool compression;
  bool keep_context;
  std::size_t step;  // 0: whole
};

setup choose(std::uint8_t a, std::uint8_t b) {
  static constexpr std::size_t sizes[] = {0, 1, 16, 125, 1000, 1 << 16};
  const std::size_t step = b % 4 == 0 ? 0 : 1 + b % 23u;
  return {sizes[a % 6], (a & 0x08) != 0, (a & 0x10) != 0, step};
}

// Every event as a string, the verdict (0 or the close code) last.
std::vector<std::string> read_all(const setup& s, std::string_view input) {
  ws::inflater in(s.keep_context);
  ws::message_reader r({.max_message = s.max_message, .compression = s.compression ? &in : nullptr});
  std::vector<std::string> events;
  std::size_t at = 0;
  while (at < input.size()) {
    const std::size_t n = s.step == 0 ? input.size() : std::min(s.step, input.size() - at);
    auto piece = std::make_unique<char[]>(n);  // fresh each time: nothing may point into the last one
    std::copy_n(input.data() + at, n, piece.get());
    std::span<char> bytes(piece.get(), n);
    std::size_t used = 0;
    for (;;) {
      auto [what, consumed] = r.read(bytes.subspan(used));
      FUZZ_ASSERT(consumed <= n - used);
      used += consumed;
      if (what == event::need_more) {
        FUZZ_ASSERT(used == n);
        break;
      }
      if (what == event::error) {
        const auto code = r.error_code();
        FUZZ_ASSERT(code == 1002 || code == 1007 || code == 1009);
        FUZZ_ASSERT(r.read(bytes.subspan(used)).what == event::error);
        // Inflating a piece at a time can meet corrupt data (1007) before the output has grown
        // past max_message (1009), where inflating all at once meets them the other way round.
        const bool either = s.compression && (code == 1007 || code == 1009);
        events.push_back(either ? "error 1007 or 1009" : "error " + std::to_string(code));
        return events;
      }
      if (what == event::message) {
        auto m = r.take_message();
        FUZZ_ASSERT(m.data.size() <= s.max_message);
        FUZZ_ASSERT(m.kind == ws::message_kind::binary || ws::is_valid_utf8(m.data));
        events.push_back((m.kind == ws::message_kind::text ? "text " : "binary ") + m.data);
      } else if (what == event::close) {
        FUZZ_ASSERT(r.close_code() == ws::close_code::no_status || ws::is_valid_close_code(r.close_code()));
        FUZZ_ASSERT(ws::is_valid_utf8(r.close_reason()));
        events.push_back("close " + std::to_string(r.close_code()) + std::string(r.close_reason()));
      } else {
        FUZZ_ASSERT(r.control_payload().size() <= 125);
        events.push_back((what == event::ping ? "ping " : "pong ") + std::string(r.control_payload()));
      }
    }
    at += n;
  }
  events.push_back("ok");
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  setup s = choose(data[0], data[1]);
  std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);
  auto pieces = read_all(s, input);
  s.step = 0;
  FUZZ_ASSERT(read_all(s, input) == pieces);
  return 0;
}
