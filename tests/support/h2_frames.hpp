// Test support: raw HTTP/2 (RFC 9113) frames, for tests that play a hostile client.
//
// A well-behaved HTTP/2 client library would refuse to send what these tests need (a stream
// over the concurrency limit, endless CONTINUATION, DATA beyond the window, a frame before the
// preface), so the frames are built byte by byte here. Only HPACK, which has no hostile use in
// these tests, comes from nghttp2 (nghttp2_hd_deflate_* and nghttp2_hd_inflate_*): a header
// block is whatever nghttp2 encodes, and what the server sends is decoded the same way.
//
//     auto c = co_await raw_h2::client::connect(ep);
//     co_await c.start();                                  // preface, SETTINGS, their ACKs
//     co_await c.send(c.request(1, "GET", "/"));           // HEADERS with END_STREAM
//     auto s = co_await c.until_stream_ends(1);            // its HEADERS and DATA, or its RST_STREAM
//     CHECK(s.status == 200);
//
// The constants (frame types, flags, error codes, setting ids) are nghttp2's, from nghttp2.h.
// Everything runs on the caller's executor; single-threaded, like support/http_client.hpp,
// whose event primitives and `nothrow` token it shares.
#pragma once

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/buffer.hpp>
#include <asio/write.hpp>
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice::test::raw_h2 {

inline constexpr std::string_view client_preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
inline constexpr std::size_t frame_header_size = 9;
inline constexpr std::size_t default_max_frame_size = 16384;  // SETTINGS_MAX_FRAME_SIZE's initial value
inline constexpr std::uint32_t max_stream_id = 0x7fffffff;     // what a shutdown notice's GOAWAY names

using header_list = std::vector<std::pair<std::string, std::string>>;
using setting = std::pair<std::uint16_t, std::uint32_t>;

// Building frames -----------------------------------------------------------------------------

inline void put_be(std::string& out, std::uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

inline std::uint32_t get_be(std::string_view in, std::size_t at, int bytes) {
  std::uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + static_cast<std::size_t>(i)]);
  return v;
}

// One frame: its 9-byte header (length, type, flags, stream id with the reserved bit clear),
// then the payload as given, however long (a test may exceed SETTINGS_MAX_FRAME_SIZE on purpose).
inline std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream, std::string_view payload = {}) {
  std::string out;
  out.reserve(frame_header_size + payload.size());
  put_be(out, payload.size(), 3);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
  put_be(out, stream & max_stream_id, 4);
  out.append(payload);
  return out;
}

inline std::string settings(const std::vector<setting>& values = {}) {
  std::string payload;
  for (auto [id, value] : values) {
    put_be(payload, id, 2);
    put_be(payload, value, 4);
  }
  return frame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_NONE, 0, payload);
}
inline std::string settings_ack() { return frame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0); }

inline std::string headers(std::uint32_t stream, std::string_view block, std::uint8_t flags) {
  return frame(NGHTTP2_HEADERS, flags, stream, block);
}
inline std::string continuation(std::uint32_t stream, std::string_view block, std::uint8_t flags) {
  return frame(NGHTTP2_CONTINUATION, flags, stream, block);
}
inline std::string data(std::uint32_t stream, std::string_view payload, std::uint8_t flags = NGHTTP2_FLAG_NONE) {
  return frame(NGHTTP2_DATA, flags, stream, payload);
}
inline std::string ping(std::string_view opaque8 = "sluice!!", bool ack = false) {
  return frame(NGHTTP2_PING, ack ? NGHTTP2_FLAG_ACK : NGHTTP2_FLAG_NONE, 0, opaque8.substr(0, 8));
}
inline std::string rst_stream(std::uint32_t stream, std::uint32_t code) {
  std::string payload;
  put_be(payload, code, 4);
  return frame(NGHTTP2_RST_STREAM, NGHTTP2_FLAG_NONE, stream, payload);
}
inline std::string window_update(std::uint32_t stream, std::uint32_t increment) {
  std::string payload;
  put_be(payload, increment, 4);
  return frame(NGHTTP2_WINDOW_UPDATE, NGHTTP2_FLAG_NONE, stream, payload);
}
inline std::string goaway(std::uint32_t last_stream, std::uint32_t code) {
  std::string payload;
  put_be(payload, last_stream, 4);
  put_be(payload, code, 4);
  return frame(NGHTTP2_GOAWAY, NGHTTP2_FLAG_NONE, 0, payload);
}

// A header block as HEADERS then CONTINUATIONs of at most `max_frame` bytes each, the last with
// END_HEADERS; `flags` (END_STREAM) go on the HEADERS frame.
inline std::string header_frames(std::uint32_t stream, std::string_view block, std::uint8_t flags,
                                 std::size_t max_frame = default_max_frame_size) {
  std::string out;
  std::uint8_t type = NGHTTP2_HEADERS;
  do {
    const std::string_view piece = block.substr(0, max_frame);
    block.remove_prefix(piece.size());
    const std::uint8_t end = block.empty() ? NGHTTP2_FLAG_END_HEADERS : NGHTTP2_FLAG_NONE;
    out += frame(type, static_cast<std::uint8_t>((type == NGHTTP2_HEADERS ? flags : 0) | end), stream, piece);
    type = NGHTTP2_CONTINUATION;
  } while (!block.empty());
  return out;
}

// The pseudo-header fields of a request over h2c, then `extra`.
inline header_list request_fields(std::string_view method, std::string_view path, header_list extra = {}) {
  header_list h{{":method", std::string(method)},
                {":scheme", "http"},
                {":authority", "test"},
                {":path", std::string(path)}};
  h.insert(h.end(), std::make_move_iterator(extra.begin()), std::make_move_iterator(extra.end()));
  return h;
}

// A header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 6.5.2): each
// field's name and value, uncompressed, plus 32.
inline std::size_t header_list_size(const header_list& fields) {
  std::size_t n = 0;
  for (auto& [name, value] : fields) n += name.size() + value.size() + 32;
  return n;
}

// HPACK ---------------------------------------------------------------------------------------

// A connection's HPACK encoder (its dynamic table is the connection's: one per client).
class hpack_encoder {
 public:
  hpack_encoder() {
    nghttp2_hd_deflater* d = nullptr;
    if (nghttp2_hd_deflate_new(&d, 4096) != 0) throw std::runtime_error("nghttp2_hd_deflate_new");
    deflater_.reset(d);
  }

  // `never_index`: the fields stay out of both dynamic tables (a test that sends a big header
  // list once must not leave it in the server's table for the requests after it).
  std::string encode(const header_list& fields, bool never_index = false) {
    std::vector<nghttp2_nv> nvs;
    nvs.reserve(fields.size());
    for (auto& [name, value] : fields) {
      nvs.push_back({const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(name.data())),
                     const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(value.data())), name.size(),
                     value.size(), static_cast<std::uint8_t>(never_index ? NGHTTP2_NV_FLAG_NO_INDEX : 0)});
    }
    std::string block(nghttp2_hd_deflate_bound(deflater_.get(), nvs.data(), nvs.size()), '\0');
    const auto n = nghttp2_hd_deflate_hd(deflater_.get(), reinterpret_cast<std::uint8_t*>(block.data()), block.size(),
                                         nvs.data(), nvs.size());
    if (n < 0) throw std::runtime_error(std::string("nghttp2_hd_deflate_hd: ") + nghttp2_strerror(static_cast<int>(n)));
    block.resize(static_cast<std::size_t>(n));
    return block;
  }

 private:
  struct deleter {
    void operator()(nghttp2_hd_deflater* d) const { nghttp2_hd_deflate_del(d); }
  };
  std::unique_ptr<nghttp2_hd_deflater, deleter> deflater_;
};

// The decoder of the server's header blocks: every block, in the order received, for the table.
class hpack_decoder {
 public:
  hpack_decoder() {
    nghttp2_hd_inflater* i = nullptr;
    if (nghttp2_hd_inflate_new(&i) != 0) throw std::runtime_error("nghttp2_hd_inflate_new");
    inflater_.reset(i);
  }

  header_list decode(std::string_view block) {
    header_list out;
    auto in = reinterpret_cast<const std::uint8_t*>(block.data());
    std::size_t left = block.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      const auto n = nghttp2_hd_inflate_hd2(inflater_.get(), &nv, &flags, in, left, 1);
      if (n < 0) throw std::runtime_error(std::string("nghttp2_hd_inflate_hd2: ") + nghttp2_strerror(static_cast<int>(n)));
      in += n;
      left -= static_cast<std::size_t>(n);
      if (flags & NGHTTP2_HD_INFLATE_EMIT)
        out.emplace_back(std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                         std::string(reinterpret_cast<char*>(nv.value), nv.valuelen));
      if (flags & NGHTTP2_HD_INFLATE_FINAL) break;
      if (n == 0 && left == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT)) throw std::runtime_error("hpack: truncated block");
    }
    nghttp2_hd_inflate_end_headers(inflater_.get());
    return out;
  }

 private:
  struct deleter {
    void operator()(nghttp2_hd_inflater* i) const { nghttp2_hd_inflate_del(i); }
  };
  std::unique_ptr<nghttp2_hd_inflater, deleter> inflater_;
};

// Reading frames ------------------------------------------------------------------------------

struct received_frame {
  std::uint8_t type = 0;
  std::uint8_t flags = 0;
  std::uint32_t stream = 0;
  std::string payload;   // HEADERS: the whole header block (CONTINUATIONs appended, padding removed)
  header_list fields;    // HEADERS: the decoded block

  bool has(std::uint8_t flag) const { return (flags & flag) != 0; }
  // RST_STREAM's error code, GOAWAY's error code.
  std::uint32_t error_code() const {
    const std::size_t at = type == NGHTTP2_GOAWAY ? 4 : 0;
    return payload.size() >= at + 4 ? get_be(payload, at, 4) : ~0u;
  }
  // GOAWAY's last-stream-id.
  std::uint32_t last_stream_id() const { return payload.size() >= 4 ? get_be(payload, 0, 4) & max_stream_id : ~0u; }
};

// Splits a byte stream into frames: bytes in, frames out, no I/O.
class frame_splitter {
 public:
  void feed(std::string_view bytes) { buffer_.append(bytes); }

  // The next whole frame, if one has arrived.
  std::optional<received_frame> next() {
    if (buffer_.size() < frame_header_size) return std::nullopt;
    const std::size_t length = get_be(buffer_, 0, 3);
    if (buffer_.size() < frame_header_size + length) return std::nullopt;
    received_frame f;
    f.type = static_cast<std::uint8_t>(buffer_[3]);
    f.flags = static_cast<std::uint8_t>(buffer_[4]);
    f.stream = get_be(buffer_, 5, 4) & max_stream_id;
    f.payload = buffer_.substr(frame_header_size, length);
    buffer_.erase(0, frame_header_size + length);
    return f;
  }

  std::size_t pending() const { return buffer_.size(); }

 private:
  std::string buffer_;
};

// HEADERS and DATA payloads as sent, without padding or priority fields (RFC 9113 6.1, 6.2).
inline std::string_view unpadded(const received_frame& f) {
  std::string_view p = f.payload;
  std::size_t pad = 0;
  if (f.has(NGHTTP2_FLAG_PADDED) && !p.empty()) {
    pad = static_cast<unsigned char>(p[0]);
    p.remove_prefix(1);
  }
  if (f.type == NGHTTP2_HEADERS && f.has(NGHTTP2_FLAG_PRIORITY)) p.remove_prefix(std::min<std::size_t>(5, p.size()));
  return p.substr(0, p.size() >= pad ? p.size() - pad : 0);
}

// What one stream got from the server.
struct stream_result {
  unsigned status = 0;        // the final :status (a 1xx does not count)
  header_list fields;         // the final response head's fields
  std::string body;
  bool ended = false;         // END_STREAM seen
  std::optional<std::uint32_t> reset;  // RST_STREAM's code
  bool done() const { return ended || reset.has_value(); }
};

// "REFUSED_STREAM (7)", for messages (a std::string: doctest prints a const char* as a pointer).
inline std::string error_name(std::uint32_t code) {
  return std::string(nghttp2_http2_strerror(code)) + " (" + std::to_string(code) + ")";
}

// A raw HTTP/2 client over one TCP connection. It sends exactly the bytes it is given, and
// reads what the server sends frame by frame, recording per stream what arrived (stream_result),
// the GOAWAYs, PINGs and RST_STREAMs. While reading it acknowledges the server's SETTINGS (a
// test that must not read at all simply never reads), and nothing else: PINGs are for the test.
class client {
 public:
  explicit client(tcp::socket s) : socket_(std::move(s)) {}

  // `receive_buffer`: SO_RCVBUF before connecting, so that a client that stops reading makes
  // the server's writes block after a known amount instead of after the kernel's autotuned
  // buffer (up to tcp_rmem's 32 MB on this machine); 0 keeps the default.
  static awaitable<client> connect(tcp::endpoint ep, int receive_buffer = 0) {
    tcp::socket s(co_await asio::this_coro::executor);
    s.open(ep.protocol());
    if (receive_buffer > 0) s.set_option(asio::socket_base::receive_buffer_size(receive_buffer));
    co_await s.async_connect(ep, use_awaitable);
    co_return client(std::move(s));
  }

  hpack_encoder& encoder() { return encoder_; }

  awaitable<void> send(std::string_view bytes) {
    co_await asio::async_write(socket_, asio::buffer(bytes), use_awaitable);
  }
  // As send, but reports failure (the server closed or reset) instead of throwing.
  awaitable<std::error_code> try_send(std::string_view bytes) {
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes), nothrow);
    if (ec) send_failed_ = ec;
    co_return ec;
  }

  // The preface and a SETTINGS frame with `values`; then, when `wait` is set, reads until the
  // server's SETTINGS (acknowledged on the way) and the ACK of ours have arrived, so that both
  // sides' settings are in force.
  awaitable<void> start(std::vector<setting> values = {}, bool wait = true) {
    std::string hello(client_preface);
    hello += settings(values);
    co_await send(hello);
    if (!wait) co_return;
    auto both = [this] { return server_settings_ && settings_acked_; };
    const bool started = co_await until(both);
    if (!started) throw std::runtime_error("h2 client: the connection ended during the SETTINGS exchange");
  }

  // A request's HEADERS frame (END_HEADERS; END_STREAM unless `body_follows`).
  std::string request(std::uint32_t stream, std::string_view method, std::string_view path, header_list extra = {},
                      bool body_follows = false) {
    const std::uint8_t flags = NGHTTP2_FLAG_END_HEADERS | (body_follows ? 0 : NGHTTP2_FLAG_END_STREAM);
    return headers(stream, encoder_.encode(request_fields(method, path, std::move(extra))), flags);
  }

  // Reads one frame, recording it; empty once the connection has ended (end() says how).
  awaitable<std::optional<received_frame>> next_frame() {
    for (;;) {
      if (auto f = splitter_.next()) {
        if (f->type == NGHTTP2_HEADERS) {
          f->payload = std::string(unpadded(*f));
          f->flags &= static_cast<std::uint8_t>(~(NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY));
          if (!f->has(NGHTTP2_FLAG_END_HEADERS)) co_await complete_header_block(*f);
          if (!f->has(NGHTTP2_FLAG_END_HEADERS)) co_return std::nullopt;
        }
        record(*f);
        co_return f;
      }
      const bool more = co_await fill();
      if (!more) co_return std::nullopt;
    }
  }

  // Reads frames until `pred()` holds (true) or the connection ends first (false).
  template <typename Pred>
  awaitable<bool> until(const Pred& pred) {
    for (;;) {
      if (pred()) co_return true;
      const auto f = co_await next_frame();
      if (!f) co_return pred();
    }
  }

  // Reads until stream `id` is done (END_STREAM or RST_STREAM) or the connection ends.
  awaitable<stream_result> until_stream_ends(std::uint32_t id) {
    auto done = [this, id] { return streams_[id].done(); };
    co_await until(done);
    co_return streams_[id];
  }

  // Reads until the connection ends, recording everything; how it ended.
  awaitable<std::error_code> until_closed() {
    for (;;) {
      const auto f = co_await next_frame();
      if (!f) co_return ended_;
    }
  }

  // A GET on a new stream `id`, its response read whole: the well-behaved request.
  awaitable<stream_result> get(std::uint32_t id, std::string_view path) {
    co_await send(request(id, "GET", path));
    co_return co_await until_stream_ends(id);
  }

  stream_result& stream(std::uint32_t id) { return streams_[id]; }
  const std::map<std::uint32_t, stream_result>& streams() const { return streams_; }
  const std::vector<received_frame>& goaways() const { return goaways_; }
  const std::vector<received_frame>& pings() const { return pings_; }  // PINGs without ACK
  // Set once the connection has ended: eof or connection_reset when the server closed.
  std::error_code end() const { return ended_; }
  bool closed() const { return ended_ == asio::error::eof || ended_ == asio::error::connection_reset; }

  void close() {
    std::error_code ignored;
    socket_.close(ignored);
  }

 private:
  // Appends to `f` the CONTINUATIONs that end its header block.
  awaitable<void> complete_header_block(received_frame& f) {
    for (;;) {
      auto c = splitter_.next();
      if (!c) {
        const bool more = co_await fill();
        if (!more) co_return;
        continue;
      }
      if (c->type != NGHTTP2_CONTINUATION || c->stream != f.stream)
        throw std::runtime_error("h2 client: the server interleaved a frame inside a header block");
      f.payload += c->payload;
      if (c->has(NGHTTP2_FLAG_END_HEADERS)) {
        f.flags |= NGHTTP2_FLAG_END_HEADERS;
        co_return;
      }
    }
  }

  void record(received_frame& f) {
    switch (f.type) {
      case NGHTTP2_SETTINGS:
        if (f.has(NGHTTP2_FLAG_ACK)) {
          settings_acked_ = true;
        } else {
          server_settings_ = true;
          pending_ack_ = true;  // sent by the next fill(), before it waits
        }
        break;
      case NGHTTP2_HEADERS: {
        f.fields = decoder_.decode(f.payload);
        auto& s = streams_[f.stream];
        for (auto& [name, value] : f.fields)
          if (name == ":status") {
            const unsigned status = static_cast<unsigned>(std::stoul(value));
            if (status >= 200) {
              s.status = status;
              s.fields = f.fields;
            }
          }
        if (f.has(NGHTTP2_FLAG_END_STREAM)) s.ended = true;
        break;
      }
      case NGHTTP2_DATA: {
        auto& s = streams_[f.stream];
        s.body += unpadded(f);
        if (f.has(NGHTTP2_FLAG_END_STREAM)) s.ended = true;
        break;
      }
      case NGHTTP2_RST_STREAM:
        streams_[f.stream].reset = f.error_code();
        break;
      case NGHTTP2_GOAWAY:
        goaways_.push_back(f);
        break;
      case NGHTTP2_PING:
        if (!f.has(NGHTTP2_FLAG_ACK)) pings_.push_back(f);
        break;
      default:
        break;
    }
  }

  // Reads what the socket has into the splitter; false once the connection has ended. Sends a
  // pending SETTINGS ACK first (best effort: a server that closed gets none).
  awaitable<bool> fill() {
    if (ended_) co_return false;
    // Not once a send failed: the failure consumed the socket's error, and a send waiting for
    // writability then never completes (as the read in drain_after_reset()).
    if (std::exchange(pending_ack_, false) && !send_failed_) {
      co_await try_send(settings_ack());
    }
    if (send_failed_) co_return drain_after_reset();
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(chunk_), nothrow);
    splitter_.feed(std::string_view(chunk_.data(), n));
    if (ec) ended_ = ec;
    co_return n > 0 || !ec;
  }

  // A send that failed (the server reset the connection) consumed the socket's error, and a read
  // waiting for readiness then never completes (no further edge comes): what the kernel still
  // holds is read without waiting, and then the connection is over.
  bool drain_after_reset() {
    std::error_code ec;
    socket_.non_blocking(true, ec);
    const std::size_t n = socket_.read_some(asio::buffer(chunk_), ec);
    splitter_.feed(std::string_view(chunk_.data(), n));
    if (ec || n == 0) ended_ = ec && ec != asio::error::would_block ? ec : send_failed_;
    return n > 0;
  }

  tcp::socket socket_;
  hpack_encoder encoder_;
  hpack_decoder decoder_;
  frame_splitter splitter_;
  std::vector<char> chunk_ = std::vector<char>(16 * 1024);
  std::map<std::uint32_t, stream_result> streams_;
  std::vector<received_frame> goaways_;
  std::vector<received_frame> pings_;
  std::error_code ended_;
  std::error_code send_failed_;
  bool server_settings_ = false;
  bool settings_acked_ = false;
  bool pending_ack_ = false;
};

}  // namespace sluice::test::raw_h2
