// Test support: an HTTP/2 client on nghttp2's client session.
//
// h2_peer has no I/O (bytes in, bytes out, what it saw recorded), so the
// session unit tests drive sluice::http2::session with it in memory;
// h2_client runs one over a socket (plain or TLS) for the server tests. Both
// record each stream's response (status, fields, body, the RST_STREAM code
// that closed it) and every GOAWAY (last stream id, error code), and read
// a response body only as fast as the test lets them (flow control).
#pragma once

#include "support/async_test.hpp"

#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::test {

struct h2_response {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool closed = false;
  std::uint32_t close_error = 0;  // the RST_STREAM code, or 0 when it completed
  bool reset_received = false;    // an RST_STREAM frame came for it

  std::string header(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (n == name) return v;
    return {};
  }
};

struct h2_goaway {
  std::int32_t last_stream_id;
  std::uint32_t error;
};

class h2_peer {
 public:
  // `auto_consume`: give every response byte back to the window at once;
  // else only through consume().
  explicit h2_peer(bool auto_consume = true, std::uint32_t window = 65535) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    if (!auto_consume) nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_client_new2(&session_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
  }
  ~h2_peer() { nghttp2_session_del(session_); }
  h2_peer(const h2_peer&) = delete;
  h2_peer& operator=(const h2_peer&) = delete;

  // A request; its body, if any, is sent whole, or later through
  // send_body() when `streamed`. Returns the stream id.
  std::int32_t request(std::string_view method, std::string_view path, std::string body = {},
                       std::vector<std::pair<std::string, std::string>> extra = {}, bool streamed = false) {
    std::vector<std::pair<std::string, std::string>> fields{
        {":method", std::string(method)}, {":scheme", "http"}, {":path", std::string(path)},
        {":authority", "localhost"}};
    for (auto& f : extra) fields.push_back(f);
    auto nv = name_values(fields);
    const bool has_body = streamed || !body.empty();
    auto up = std::make_unique<upload>();
    up->data = std::move(body);
    up->done = !streamed;
    nghttp2_data_provider provider{};
    provider.source.ptr = up.get();
    provider.read_callback = read_upload;
    const auto id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), has_body ? &provider : nullptr,
                                           nullptr);
    if (id < 0) throw std::runtime_error(nghttp2_strerror(id));
    uploads_[id] = std::move(up);
    responses_[id];
    return id;
  }

  // More of a streamed request body; `last` ends it, with `trailers` after
  // the last DATA frame when there are some.
  void send_body(std::int32_t id, std::string more, bool last,
                 std::vector<std::pair<std::string, std::string>> trailers = {}) {
    auto& up = *uploads_.at(id);
    up.data += more;
    up.done = last;
    up.trailers = std::move(trailers);
    nghttp2_session_resume_data(session_, id);
  }

  void reset(std::int32_t id, std::uint32_t error = NGHTTP2_CANCEL) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, error);
  }
  void ping() { nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr); }

  // Response body bytes read: re-opens the windows (auto_consume false).
  void consume(std::int32_t id, std::size_t n) { nghttp2_session_consume(session_, id, n); }

  // Bytes from the server. False when nghttp2 found them malformed.
  bool receive(std::string_view bytes) {
    return nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) >= 0;
  }
  // Bytes to send to the server.
  std::string output() {
    std::string out;
    for (;;) {
      const std::uint8_t* data;
      auto n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) return out;
      out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
    }
  }

  h2_response& response(std::int32_t id) { return responses_[id]; }
  const std::vector<h2_goaway>& goaways() const { return goaways_; }
  std::size_t ping_acks() const { return ping_acks_; }
  // Response bytes received so far, all streams.
  std::size_t data_received() const { return data_received_; }
  nghttp2_session* native() { return session_; }

 private:
  struct upload {
    std::string data;
    std::size_t sent = 0;
    bool done = true;
    std::vector<std::pair<std::string, std::string>> trailers;
  };

  static std::vector<nghttp2_nv> name_values(std::vector<std::pair<std::string, std::string>>& fields) {
    std::vector<nghttp2_nv> nv;
    for (auto& [n, v] : fields)
      nv.push_back({reinterpret_cast<std::uint8_t*>(n.data()), reinterpret_cast<std::uint8_t*>(v.data()), n.size(),
                    v.size(), NGHTTP2_NV_FLAG_NONE});
    return nv;
  }

  static h2_peer& self(void* p) { return *static_cast<h2_peer*>(p); }

  // Trailers go from here, as nghttp2 wants them: the last DATA frame then
  // leaves the stream open for them.
  static ssize_t read_upload(nghttp2_session* session, std::int32_t id, std::uint8_t* buf, std::size_t length,
                             std::uint32_t* flags, nghttp2_data_source* source, void*) {
    auto& up = *static_cast<upload*>(source->ptr);
    const std::size_t n = std::min(length, up.data.size() - up.sent);
    if (n > 0) std::memcpy(buf, up.data.data() + up.sent, n);
    up.sent += n;
    if (up.sent == up.data.size()) {
      if (!up.done && n == 0) return NGHTTP2_ERR_DEFERRED;
      if (up.done) *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (up.done && !up.trailers.empty()) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        auto nv = name_values(up.trailers);
        nghttp2_submit_trailer(session, id, nv.data(), nv.size());
      }
    }
    return static_cast<ssize_t>(n);
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                       const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* p) {
    auto& r = self(p).responses_[frame->hd.stream_id];
    std::string n(reinterpret_cast<const char*>(name), namelen), v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") r.status = static_cast<unsigned>(std::stoul(v));
    else r.headers.emplace_back(std::move(n), std::move(v));
    return 0;
  }
  static int on_data(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* data, std::size_t len,
                     void* p) {
    self(p).responses_[id].body.append(reinterpret_cast<const char*>(data), len);
    self(p).data_received_ += len;
    return 0;
  }
  static int on_frame(nghttp2_session*, const nghttp2_frame* frame, void* p) {
    auto& me = self(p);
    if (frame->hd.type == NGHTTP2_GOAWAY)
      me.goaways_.push_back({frame->goaway.last_stream_id, frame->goaway.error_code});
    if (frame->hd.type == NGHTTP2_RST_STREAM) me.responses_[frame->hd.stream_id].reset_received = true;
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) ++me.ping_acks_;
    return 0;
  }
  static int on_close(nghttp2_session*, std::int32_t id, std::uint32_t error, void* p) {
    auto& r = self(p).responses_[id];
    r.closed = true;
    r.close_error = error;
    return 0;
  }

  nghttp2_session* session_ = nullptr;
  std::map<std::int32_t, std::unique_ptr<upload>> uploads_;
  std::map<std::int32_t, h2_response> responses_;
  std::vector<h2_goaway> goaways_;
  std::size_t ping_acks_ = 0;
  std::size_t data_received_ = 0;
};

// h2_peer over a connected stream (a tcp::socket or an asio::ssl::stream):
// exchange() writes what the peer has to send and reads until `done` holds
// or the server closes. Single-threaded, like the tests.
template <typename Stream>
class h2_client {
 public:
  explicit h2_client(Stream stream, bool auto_consume = true)
      : stream_(std::move(stream)), owned_(std::make_unique<h2_peer>(auto_consume)), peer(*owned_) {}

  // Sends, then reads and answers until done() is true; false if the
  // connection ended first (eof_ then says so).
  awaitable<bool> until(std::function<bool()> done) {
    for (;;) {
      co_await flush();
      if (done()) co_return true;
      if (eof_) co_return false;
      char buf[16384];
      auto [ec, n] = co_await stream_.async_read_some(asio::buffer(buf), asio::experimental::as_tuple(use_awaitable));
      if (ec) {
        eof_ = true;
        co_return done();
      }
      if (!peer.receive(std::string_view(buf, n))) throw std::runtime_error("h2_client: malformed input");
    }
  }
  awaitable<void> flush() {
    const std::string out = peer.output();
    if (out.empty() || eof_) co_return;
    auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(out), asio::experimental::as_tuple(use_awaitable));
    if (ec) eof_ = true;
  }
  // The server closed the connection (or a read failed).
  awaitable<bool> until_closed() {
    co_return !co_await until([] { return false; }) && eof_;
  }
  bool closed() const { return eof_; }
  Stream& stream() { return stream_; }

 private:
  Stream stream_;
  bool eof_ = false;
  // On the heap: nghttp2 holds its address, and a move keeps it.
  std::unique_ptr<h2_peer> owned_;

 public:
  h2_peer& peer;
};

}  // namespace sluice::test
