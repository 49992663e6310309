// Internals of the HTTP server: one connection's session, written once for
// every stream type (the Transport says what differs; see plain_transport.hpp).
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/exact_allocator.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/detail/connection.hpp"
#include "sluice/http/detail/read_buffer.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/message.hpp"
#include "sluice/http/options.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http/serialize.hpp"
#include "sluice/scope.hpp"

#include <asio/bind_allocator.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include <array>
#include <charconv>
#include <optional>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace sluice::http::detail {

using handler_function = std::function<asio::awaitable<response>(request&)>;

// Each kind of timeout's duration, as the deadline lists take them.
inline std::array<clock::duration, timeout_kinds> timeouts(const server_options& o) {
  std::array<clock::duration, timeout_kinds> t{};
  t[static_cast<std::size_t>(timeout_kind::handshake)] = saturated(o.handshake_timeout);
  t[static_cast<std::size_t>(timeout_kind::header)] = saturated(o.header_timeout);
  t[static_cast<std::size_t>(timeout_kind::body)] = saturated(o.body_timeout);
  t[static_cast<std::size_t>(timeout_kind::idle)] = saturated(o.idle_timeout);
  t[static_cast<std::size_t>(timeout_kind::write)] = saturated(o.write_timeout);
  t[static_cast<std::size_t>(timeout_kind::linger)] = saturated(o.linger_timeout);
  return t;
}

// What the server shares with every session. One pointer in each session.
struct server_core {
  server_core(const asio::any_io_executor& ex, server_options o, handler_function h)
      : options(std::move(o)), handler(std::move(h)), registry(ex, timeouts(options), options) {}
  const server_options options;
  const handler_function handler;
  connection_registry registry;
  // True from the start of shutdown(), drain_delay included.
  std::atomic<bool> not_ready{false};
  // True once stop_now() or the shutdown deadline cancelled the sessions.
  std::atomic<bool> forcing{false};
  // Request bodies a handler left unread that proved malformed or too large
  // while being discarded after the response (see basic_server).
  std::atomic<std::uint64_t> unread_bodies_rejected{0};
};

// Request parsers kept for reuse on this thread: once warm, a request costs
// no allocation for its head, while an idle connection holds no parser.
class pooled_parser {
 public:
  explicit pooled_parser(const parser_limits& limits) {
    auto& free = pool();
    if (!free.empty()) {
      parser_ = std::move(free.back());
      free.pop_back();
    }
    if (!parser_ || !same_limits(parser_->limits(), limits)) parser_ = std::make_unique<request_parser>(limits);
  }
  ~pooled_parser() {
    auto& free = pool();
    if (free.size() < max_pooled) {
      parser_->reset();
      free.push_back(std::move(parser_));
    }
  }
  pooled_parser(const pooled_parser&) = delete;
  pooled_parser& operator=(const pooled_parser&) = delete;

  request_parser& operator*() { return *parser_; }
  request_parser* operator->() { return parser_.get(); }

 private:
  static constexpr std::size_t max_pooled = 64;
  static std::vector<std::unique_ptr<request_parser>>& pool() {
    thread_local std::vector<std::unique_ptr<request_parser>> free;
    return free;
  }
  static bool same_limits(const parser_limits& a, const parser_limits& b) {
    return a.max_target == b.max_target && a.max_head_bytes == b.max_head_bytes &&
           a.max_header_count == b.max_header_count && a.max_body == b.max_body &&
           a.max_chunk_line == b.max_chunk_line && a.max_trailer_bytes == b.max_trailer_bytes &&
           a.max_chunk_framing == b.max_chunk_framing &&
           a.require_host == b.require_host;
  }
  std::unique_ptr<request_parser> parser_;
};

inline constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// use_nothrow for an operation that stays pending a connection's whole idle
// time: allocated to its exact size (see exact_allocator).
inline auto pending_long() { return asio::bind_allocator(sluice::detail::exact_allocator<void>(), use_nothrow); }

template <typename Transport>
class session final : body_source, body_sink {
 public:
  using stream_type = typename Transport::stream_type;

  session(server_core& core, stream_type& stream, connection& conn) : core_(core), stream_(stream), conn_(&conn) {}

  // What a session's frame owns. Members are destroyed in reverse order: the
  // stream first, then the connection, which leaves the registry in its
  // destructor, and only then the server's state that holds the registry.
  // One parameter, because g++ and clang destroy several in opposite orders,
  // and a frame destroyed before it first runs has nothing but parameters.
  struct owned {
    std::shared_ptr<void> server_state;
    std::shared_ptr<connection> conn;
    stream_type stream;
  };

  // One connection, from accept to close. The stream and the session live in
  // this coroutine's frame, so an idle connection costs one frame and the
  // operation it waits on; the frame keeps the server's state alive meanwhile.
  static asio::awaitable<void> serve(server_core& core, Transport& transport, owned own) {
    session s(core, own.stream, *own.conn);

    struct registration {
      session& s;
      explicit registration(session& self) : s(self) {
        s.conn_->attach(&Transport::socket(s.stream_), &Transport::interrupt);
        s.core_.registry.add(*s.conn_);
      }
      // The socket is closed here, so that the registry and the state
      // observer learn of the end only once it is true.
      ~registration() {
        std::error_code ignored;
        Transport::socket(s.stream_).close(ignored);
        s.core_.registry.remove(*s.conn_);
        s.core_.registry.count_end(s.end_reason());
        s.conn_->detach();
      }
    } registered(s);

    // A connection accepted after shutdown() looked at the others is as
    // never-used as they were: it closes before any handshake.
    if (core.registry.draining()) co_return s.conn_->close_if_idle();
    s.conn_->set_deadline(timeout_kind::handshake);
    if (co_await transport.handshake(s.stream_)) co_return;
    s.conn_->set_deadline(timeout_kind::header);

    for (bool first = true;; first = false) {
      if (s.buffer_.empty()) {
        // Wait for the next request holding no buffer where the transport
        // allows it. The state is set before draining is checked, on this
        // strand: a close_idle() that ran before saw a busy connection, one
        // that runs after sees an idle one.
        s.buffer_.release();
        s.conn_->set_state(first ? connection_state::fresh : connection_state::idle);
        if (core.registry.draining()) co_return s.conn_->close_if_idle();
        if (!first) s.conn_->set_deadline(timeout_kind::idle);
        if constexpr (Transport::readiness_wait) {
          // Inline rather than a coroutine of its own: an idle connection
          // should not hold one more frame. A readiness wait may wake with
          // nothing to read (an event for input already taken), so the read
          // confirms it, and the session waits again if there was none.
          for (bool found = false; !found;) {
            auto wait = sluice::detail::in_exact_frame(
                [&s] { return Transport::async_wait_readable(s.stream_, pending_long()); });
            auto [ec] = co_await std::move(wait);
            if (ec || s.interrupted()) co_return;
            switch (s.try_read()) {
              case read_result::got: found = true; break;
              case read_result::nothing: s.buffer_.release(); break;
              case read_result::ended: co_return;
            }
          }
        } else {
          const bool got = co_await s.read_more();
          if (!got) co_return;
        }
      }
      s.conn_->set_state(connection_state::reading);
      switch (co_await s.serve_one()) {
        case next::keep_alive: continue;
        case next::close: co_await s.close_after_last_response(); co_return;
        case next::abort: co_return;
      }
    }
  }

 private:
  enum class next { keep_alive, close, abort };

  connection_registry::end_reason end_reason() const {
    using r = connection_registry::end_reason;
    if (conn_->close_requested()) return r::idle_closed;
    // Its last response was out: whatever cut the lingering short, it completed.
    if (conn_->state() == connection_state::closing) return r::completed;
    return core_.forcing.load() ? r::forced : r::completed;
  }

  bool interrupted() const { return conn_->close_requested() || conn_->timed_out() != timeout_kind::none; }

  enum class read_result { got, nothing, ended };

  // A non-blocking read into the buffer.
  read_result try_read() {
    auto space = buffer_.prepare(1024, core_.options.limits.max_head_bytes + 1024);
    if (space.size() == 0) return read_result::ended;
    std::error_code ec;
    const std::size_t n = Transport::try_read_some(stream_, space, ec);
    if (ec == asio::error::would_block) return read_result::nothing;
    if (ec) return read_result::ended;
    buffer_.commit(n);
    return read_result::got;
  }

  // Reads what is available into the buffer: at once when the transport can,
  // else asynchronously. False on end of stream, error, timeout or close.
  asio::awaitable<bool> read_more() {
    switch (try_read()) {
      case read_result::got: co_return !interrupted();
      case read_result::ended: co_return false;
      case read_result::nothing: break;
    }
    if (interrupted()) co_return false;
    auto space = buffer_.prepare(1024, core_.options.limits.max_head_bytes + 1024);
    auto [ec, n] = co_await stream_.async_read_some(space, use_nothrow);
    if (ec || interrupted()) co_return false;
    buffer_.commit(n);
    co_return true;
  }

  // Writes every byte of `buffers`, re-arming the write timeout whenever some
  // progress is made. False if the connection failed.
  template <std::size_t N>
  asio::awaitable<bool> write_all(std::array<asio::const_buffer, N> buffers) {
    std::error_code ec;
    std::size_t n = Transport::try_write_some(stream_, buffers, ec);
    if (ec && ec != asio::error::would_block) co_return false;
    for (bool waited = false;; waited = true) {
      consume(buffers, n);
      if (asio::buffer_size(buffers) == 0) {
        // The timeout guards this write only: a handler taking its time before
        // its next write is not a peer that stopped reading.
        if (waited) conn_->clear_deadline();
        break;
      }
      if (interrupted()) co_return false;
      conn_->set_deadline(timeout_kind::write);
      std::tie(ec, n) = co_await stream_.async_write_some(buffers, use_nothrow);
      if (ec) co_return false;
    }
    co_return !interrupted();
  }

  template <std::size_t N>
  static void consume(std::array<asio::const_buffer, N>& buffers, std::size_t n) {
    for (auto& b : buffers) {
      std::size_t k = std::min(n, b.size());
      b += k;
      n -= k;
    }
  }

  asio::awaitable<next> serve_one() {
    pooled_parser pooled(core_.options.limits);
    request_parser& parser = *pooled;
    if (auto failed = co_await read_head(parser)) co_return *failed;
    buffer_.consume(parser.head_size());
    conn_->clear_deadline();
    conn_->set_state(connection_state::active);
    ++served_;

    request_head& head = parser.head();
    parser_ = &parser;
    body_done_ = head.body == body_kind::none;
    continue_sent_ = false;
    final_head_sent_ = false;
    io_failed_ = false;
    request req(head, *this);
    const bool over_limit = (limit() && served_ > limit()) || conn_->refused();

    std::optional<response> handled;
    if (over_limit)
      handled = error_response(503, conn_->refused() ? "too many connections" : "too many requests on one connection");
    else if (connect_with_content(head))
      handled = error_response(400, "CONNECT request with content");
    else
      handled = co_await call_handler(req);
    if (!handled) co_return next::abort;
    response& res = *handled;
    consume_pending();
    if (auto unsendable = check_sendable(head, res)) {
      report(unsendable);
      res = status_response(500, {});  // the connection itself is intact: it stays usable
    }

    bool keep = head.keep_alive && !over_limit && !res.headers.has_token("connection", "close");
    bool upgrading = res.upgrade && (res.status == 101 || (head.method == "CONNECT" && res.status / 100 == 2));
    // The new protocol starts after the whole request (RFC 9110 7.8): what is
    // left of its body is discarded first, and a body that cannot be (too
    // large, malformed, stalled) refuses the switch.
    if (upgrading && !body_done_) {
      const std::error_code failed = co_await discard_body();
      if (failed) {
        auto refusal = refusal_for(failed);
        if (!refusal) co_return next::abort;
        res = std::move(*refusal);
        upgrading = false;
      }
    }
    if (head.upgrade && !upgrading) keep = false;  // the bytes after that head are not HTTP
    if (!body_done_ && (head.expect_continue && !continue_sent_)) keep = false;
    // An unread body known to exceed max_discard will not be discarded: the
    // connection closes after this response, which says so.
    if (!body_done_ && head.body == body_kind::length &&
        head.content_length - parser.body_bytes_seen() > core_.options.max_discard)
      keep = false;
    // While draining, or at the request limit, a connection ends after this
    // response, unless a next request was already read: that one is answered
    // too (past the limit, with the 503 above), never dropped after a
    // "Connection: close", which must be the last response (RFC 9112 9.6).
    const bool next_read = body_done_ && !buffer_.empty();
    if ((core_.registry.draining() || (limit() && served_ >= limit())) && !next_read) keep = false;

    if (!co_await write_response(head, res, keep, upgrading)) co_return next::abort;
    if (upgrading) {
      co_await hand_over(res);
      co_return next::abort;
    }
    if (!keep) co_return next::close;
    if (!body_done_) {
      // Too late for an error response: the connection closes after the one
      // sent, lingering so that a reset cannot destroy it.
      const std::error_code failed = co_await discard_body();
      if (failed.category() == http_category())
        core_.unread_bodies_rejected.fetch_add(1, std::memory_order_relaxed);
      if (failed) co_return next::close;
    }
    co_return next::keep_alive;
  }

  // RFC 9110 9.3.6: a CONNECT request has no content, so one that declares
  // some is read differently by different servers. Refused rather than
  // guessed at: its tunnel would start where another reader sees a body.
  static bool connect_with_content(const request_head& head) {
    if (head.method != "CONNECT") return false;
    auto length = head.headers.get("content-length");
    return head.headers.get("transfer-encoding") || (length && *length != "0");
  }

  // Why the handler's response cannot go on the wire as it is, if it cannot:
  // a header field that would split it; a 1xx status as a final one, which
  // the client would complete with the next request's response; a switch the
  // client did not ask for (RFC 9110 15.2.2: 101 only to an Upgrade request);
  // or a 2xx to CONNECT that does not take the tunnel, which the client
  // would take for one (RFC 9110 9.3.6).
  static std::exception_ptr check_sendable(const request_head& head, const response& res) {
    try {
      check_fields(res.headers);
      const bool connect = head.method == "CONNECT";
      const bool interim = res.status < 200 && !(res.status == 101 && res.upgrade && head.upgrade && !connect);
      if (interim || res.status > 999)
        throw std::invalid_argument("sluice::http: status " + std::to_string(res.status) +
                                    " cannot be a final response" +
                                    (res.status == 101 ? " (101 needs an Upgrade request and an upgrade function)" : ""));
      if (connect && res.status / 100 == 2 && !res.upgrade)
        throw std::invalid_argument("sluice::http: a 2xx response to CONNECT opens a tunnel: it needs an upgrade function");
    } catch (const std::invalid_argument&) {
      return std::current_exception();
    }
    return nullptr;
  }

  // The response refusing a protocol switch whose request body could not be
  // read; none when the server is stopping or the connection broke. A peer
  // that ended its side inside the body may still be reading: it is told.
  static std::optional<response> refusal_for(std::error_code failed) {
    if (failed.category() == http_category()) return error_response(status_for(failed), failed.message());
    if (failed == asio::error::timed_out) return error_response(408, "the request body stalled");
    if (failed == asio::error::connection_aborted) return error_response(400, "the request body ended early");
    return std::nullopt;
  }

  std::size_t limit() const { return core_.options.max_requests_per_connection; }

  // Reads and parses a request head. Empty on success, else what to do with
  // the connection (the error response, if any, is already written).
  asio::awaitable<std::optional<next>> read_head(request_parser& parser) {
    for (bool deadline_set = false;;) {
      switch (parser.parse_head(buffer_.data())) {
        case request_parser::status::head_done:
          co_return std::nullopt;
        case request_parser::status::error:
          co_return co_await write_error(parser.error());
        default:
          break;
      }
      if (!deadline_set) {
        conn_->set_deadline(timeout_kind::header);
        deadline_set = true;
      }
      if (!co_await read_more()) co_return next::abort;
    }
  }

  asio::awaitable<std::optional<next>> write_error(std::error_code ec) {
    closing_mid_request_ = true;
    std::string out;
    serialize_error(ec, out);
    std::array<asio::const_buffer, 1> b{asio::buffer(out)};
    co_return co_await write_all(b) ? next::close : next::abort;
  }

  [[noreturn]] void fail_io(std::error_code ec, const char* what) {
    io_failed_ = true;
    throw std::system_error(ec, what);
  }

  // The handler's response; empty when the connection broke under it.
  asio::awaitable<std::optional<response>> call_handler(request& req) {
    std::exception_ptr failure;
    try {
      co_return co_await core_.handler(req);
    } catch (const std::system_error& e) {
      const auto code = e.code();
      if (code.category() == http_category()) co_return error_response(status_for(code), code.message());
      if (io_failed_) {
        if (conn_->timed_out() == timeout_kind::body) co_return error_response(408, "the request body stalled");
        co_return std::nullopt;
      }
      if (code == asio::error::operation_aborted && core_.forcing.load()) throw;  // this session is being stopped
      failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    report(failure);
    co_return error_response(500, {});
  }

  // "<status> <reason>[: what]" as a text response.
  static response status_response(unsigned status, std::string_view what) {
    std::string body = std::to_string(status);
    body.append(" ").append(reason_phrase(status));
    if (!what.empty()) body.append(": ").append(what);
    body.push_back('\n');
    return response::text(status, std::move(body));
  }

  static response error_response(unsigned status, std::string_view what) {
    auto res = status_response(status, what);
    res.headers.add("Connection", "close");
    return res;
  }

  void report(std::exception_ptr e) { report_handler_error(core_.options, e); }

  asio::awaitable<bool> write_response(const request_head& head, response& res, bool& keep, bool upgrading) {
    const bool http10 = head.version_minor == 0;
    const bool no_content = res.status < 200 || res.status == 204 || res.status == 304;
    const bool send_body = head.method != "HEAD" && !no_content;
    framing f = upgrading ? framing::none : framing::length;
    if (res.stream && !upgrading) {
      f = http10 ? framing::none : framing::chunked;
      if (http10) keep = false;  // an HTTP/1.0 body without length ends with the connection
    }
    if (upgrading) keep = true;  // no "Connection: close" on a 101
    std::string out;
    serialize_head(res.status, res.headers, f, res.body.size(), keep, http10, out);
    const bool inline_body = send_body && !res.stream && !upgrading;
    std::array<asio::const_buffer, 2> bufs{asio::buffer(out), inline_body ? asio::buffer(res.body) : asio::const_buffer()};
    final_head_sent_ = true;
    if (!co_await write_all(bufs)) co_return false;
    if (!res.stream || !send_body || upgrading) co_return true;

    chunked_ = f == framing::chunked;
    body_writer writer(*this);
    std::exception_ptr failure;
    try {
      co_await res.stream(writer);
    } catch (const std::system_error& e) {
      if (io_failed_) co_return false;
      if (e.code() == asio::error::operation_aborted && core_.forcing.load()) throw;  // this session is being stopped
      failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      report(failure);  // too late for a 500: the head is out, so the body ends abruptly
      co_return false;
    }
    if (chunked_) {
      std::array<asio::const_buffer, 1> end{asio::buffer(last_chunk)};
      co_return co_await write_all(end);
    }
    co_return true;
  }

  // body_sink: one chunk of a streamed response.
  asio::awaitable<void> write(std::string_view data) override {
    if (data.empty()) co_return;
    char size_line[24];
    std::size_t len = 0;
    if (chunked_) {
      auto r = std::to_chars(size_line, size_line + 20, data.size(), 16);
      len = static_cast<std::size_t>(r.ptr - size_line);
      size_line[len++] = '\r';
      size_line[len++] = '\n';
    }
    std::array<asio::const_buffer, 3> bufs{asio::buffer(size_line, len), asio::buffer(data),
                                            chunked_ ? asio::buffer("\r\n", 2) : asio::const_buffer()};
    if (!co_await write_all(bufs)) fail_io(asio::error::connection_aborted, "sluice: response body write failed");
  }

  // body_source: the next piece of the request body.
  asio::awaitable<std::string_view> read_some() override {
    consume_pending();
    if (body_done_) co_return std::string_view{};
    // Once the final head is out, a 100 would land inside its body.
    if (parser_->head().expect_continue && !continue_sent_ && !final_head_sent_) {
      continue_sent_ = true;
      static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
      std::array<asio::const_buffer, 1> b{asio::buffer(go_on)};
      if (!co_await write_all(b)) fail_io(asio::error::connection_aborted, "sluice: 100 Continue write failed");
    }
    for (;;) {
      if (!buffer_.empty()) {
        auto r = parser_->parse_body(buffer_.data());
        if (r.st == request_parser::status::error) throw std::system_error(parser_->error());
        if (r.st == request_parser::status::message_done) body_done_ = true;
        if (!r.data.empty()) {
          pending_ = r.consumed;
          co_return r.data;
        }
        buffer_.consume(r.consumed);
        if (body_done_) co_return std::string_view{};
      }
      conn_->set_deadline(timeout_kind::body);
      const bool got = co_await read_more();
      conn_->clear_deadline();
      if (!got) {
        if (conn_->timed_out() == timeout_kind::body) fail_io(asio::error::timed_out, "sluice: request body timeout");
        // Lets the handler tell a stopping server from a peer that left.
        if (core_.forcing.load()) fail_io(asio::error::operation_aborted, "sluice: the server is stopping");
        fail_io(asio::error::connection_aborted, "sluice: connection ended inside the request body");
      }
    }
  }

  bool body_done() const override { return body_done_; }
  bool server_draining() const override { return core_.not_ready.load(std::memory_order_acquire); }

  void consume_pending() {
    buffer_.consume(pending_);
    pending_ = 0;
  }

  // Reads and drops what the handler left of the request body, within
  // max_discard, so that the connection can serve its next request. Wire
  // bytes count, chunk framing included: they are what the peer makes us
  // read. Empty when done, else why not: an http::error for a malformed or
  // too large body, or the I/O failure.
  asio::awaitable<std::error_code> discard_body() {
    const std::uint64_t start = parser_->body_wire_bytes();
    try {
      for (;;) {
        auto piece = co_await read_some();
        if (piece.empty()) co_return std::error_code{};
        if (parser_->body_wire_bytes() - start > core_.options.max_discard)
          co_return make_error_code(error::body_too_large);
      }
    } catch (const std::system_error& e) {
      co_return e.code();
    }
  }

  // Hands the stream, the bytes read past the head and the connection's
  // hooks to the upgrade function.
  asio::awaitable<void> hand_over(response& res) {
    struct stream_ref final : upgraded_connection {
      stream_ref(stream_type& s, connection& c) : s(s), c(c) {}
      // The upgrade function has returned: nothing its hook refers to is left.
      ~stream_ref() override { c.set_drain_hook(nullptr); }
      asio::awaitable<std::size_t> read_some(asio::mutable_buffer b) override {
        co_return co_await s.async_read_some(b, asio::use_awaitable);
      }
      asio::awaitable<void> write(asio::const_buffer b) override {
        co_await asio::async_write(s, b, asio::use_awaitable);
      }
      asio::ip::tcp::socket& socket() override { return Transport::socket(s); }
      asio::awaitable<void> wait_readable() override {
        if constexpr (Transport::readiness_wait) {
          auto wait = sluice::detail::in_exact_frame([this] { return Transport::async_wait_readable(s, pending_long()); });
          auto [ec] = co_await std::move(wait);
          if (ec) throw std::system_error(ec, "sluice: waiting for input on an upgraded connection");
        }
      }
      std::size_t try_read_some(asio::mutable_buffer b, std::error_code& ec) override {
        return Transport::try_read_some(s, b, ec);
      }
      void on_drain(std::function<void()> fn) override {
        drain_hook = std::move(fn);
        c.set_drain_hook(&drain_hook);
      }
      void set_state(connection_state state) override { c.set_state(state); }
      asio::any_io_executor get_executor() override { return c.executor(); }
      stream_type& s;
      connection& c;
      std::function<void()> drain_hook;
    };
    conn_->set_state(connection_state::upgraded);
    std::string leftover(buffer_.data());
    buffer_.consume(buffer_.size());
    buffer_.release();
    upgraded taken(std::make_unique<stream_ref>(stream_, *conn_), std::move(leftover));
    std::exception_ptr failure;
    try {
      co_await res.upgrade(taken);
    } catch (const std::system_error& e) {
      if (e.code() == asio::error::operation_aborted && core_.forcing.load()) throw;  // this session is being stopped
      // The peer leaving is how an upgraded connection normally ends.
      if (e.code() != asio::error::eof && e.code() != asio::error::connection_reset) failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) report(failure);
  }

  // After the last response: the stream's own goodbye, then the TCP close.
  // Closing a socket with unread input makes the kernel send a reset, which
  // can destroy a response the peer has not read yet; so when the peer may
  // still be sending (bytes already here, a body not fully read, an error
  // answered mid-request), the server shuts its sending side and drains until
  // the peer closes or linger_timeout passes (what Apache calls a lingering
  // close). Otherwise it closes at once.
  asio::awaitable<void> close_after_last_response() {
    conn_->set_state(connection_state::closing);
    conn_->set_deadline(timeout_kind::linger);
    co_await Transport::async_close_notify(stream_);
    if (interrupted()) co_return;
    auto& socket = Transport::socket(stream_);
    std::error_code ec;
    socket.shutdown(asio::socket_base::shutdown_send, ec);
    if (ec || !peer_may_send(socket)) co_return;
    buffer_.consume(buffer_.size());
    for (;;) {
      auto space = buffer_.prepare(1024, 4096);
      auto [read_ec, n] = co_await socket.async_read_some(space, use_nothrow);
      // A read that completes at once, as it does while the peer floods,
      // never sees a cancel, so the deadline is checked after every read. So
      // is the scope's (stop_now, the shutdown deadline), lost the same way:
      // without this, only throw_if_cancelled would end the loop.
      if (read_ec || interrupted()) co_return;
      auto cancel = co_await asio::this_coro::cancellation_state;
      if (cancel.cancelled() != asio::cancellation_type::none) co_return;
    }
  }

  bool peer_may_send(asio::ip::tcp::socket& socket) {
    if (!buffer_.empty() || !body_done_ || closing_mid_request_) return true;
    std::error_code ec;
    return socket.available(ec) > 0 || ec;
  }

  server_core& core_;
  stream_type& stream_;
  connection* conn_;
  read_buffer buffer_;
  request_parser* parser_ = nullptr;
  std::size_t pending_ = 0;
  std::size_t served_ = 0;
  bool body_done_ = true;
  bool continue_sent_ = false;
  bool final_head_sent_ = false;  // no 100 Continue may follow
  bool chunked_ = false;
  bool io_failed_ = false;  // a body read or write of ours failed under the handler
  bool closing_mid_request_ = false;  // an error was answered before the request was all read
};

}  // namespace sluice::http::detail
