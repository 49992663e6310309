// Internals of the HTTP server: the HTTP/1.1 protocol, one object per
// connection, that server::driver runs (server/driver.hpp) for every stream
// type (the Transport says what differs; see net/transport.hpp).
//
// The driver owns the connection's life (registration, handshake, the wait
// between requests, the read buffer, writes and their deadline, the lingering
// close); the protocol reads one request at a time out of the driver's
// buffer, runs the handler, writes the response, and hands the connection
// over on an upgrade, still within the driver.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/thread_local_pool.hpp"
#include "sluice/http/detail/status_response.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/message.hpp"
#include "sluice/http/options.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http/serialize.hpp"
#include "sluice/server/deadlines.hpp"
#include "sluice/server/driver.hpp"

#if SLUICE_HAS_HTTP2
#include "sluice/http2/protocol.hpp"
#endif

#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include <array>
#include <atomic>
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

namespace sluice::http::detail {

using handler_function = std::function<asio::awaitable<response>(request&)>;

// Whether sluice was built with libnghttp2 (meson defines SLUICE_HAS_HTTP2).
#if SLUICE_HAS_HTTP2
inline constexpr bool http2_available = true;
#else
inline constexpr bool http2_available = false;
#endif

// RFC 9113 3.4: what an HTTP/2 client sends first, with prior knowledge.
inline constexpr std::string_view http2_preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
using sluice::server::add_driver_timeouts;
using sluice::server::timeout_kind;
using sluice::server::timeout_table;
using sluice::server::on_expiry;
using sluice::server::saturated;

// Every kind of timeout an HTTP/1.1 server sets: the driver's, then the
// protocol's own (header, body), registered in one table.
struct http_timeouts {
  explicit http_timeouts(const server_options& o)
      : driver(add_driver_timeouts(table, saturated(o.handshake_timeout), saturated(o.idle_timeout),
                                   saturated(o.write_timeout), saturated(o.linger_timeout))),
        header(table.add(saturated(o.header_timeout), on_expiry::interrupt)),
        body(table.add(saturated(o.body_timeout), on_expiry::interrupt)) {}

  timeout_table table;
  sluice::server::driver_timeouts driver;
  timeout_kind header, body;
};

// What the server shares with every connection. One pointer in each.
struct server_core {
  server_core(const asio::any_io_executor& ex, server_options o, handler_function h)
      : options(std::move(o)),
        handler(std::move(h)),
        timeouts(options),
        connections(ex, timeouts.table, timeouts.driver, options.limits.max_head_bytes + 1024, options.on_state_change,
                    options.on_handler_error) {}
  const server_options options;
  const handler_function handler;
  const http_timeouts timeouts;
  // What the driver of every connection shares: the registry, the deadlines.
  sluice::server::driver_core connections;
  // Request bodies a handler left unread that proved malformed or too large
  // while being discarded after the response (see basic_server).
  std::atomic<std::uint64_t> unread_bodies_rejected{0};
};

// Request parsers kept for reuse on this thread: once warm, a request costs
// no allocation for its head, while an idle connection holds no parser.
class pooled_parser {
 public:
  explicit pooled_parser(const parser_limits& limits) : parser_(pool::take()) {
    if (!parser_ || !same_limits(parser_->limits(), limits)) parser_ = std::make_unique<request_parser>(limits);
  }
  ~pooled_parser() {
    parser_->reset();
    pool::give_back(std::move(parser_));
  }
  pooled_parser(const pooled_parser&) = delete;
  pooled_parser& operator=(const pooled_parser&) = delete;

  request_parser& operator*() { return *parser_; }
  request_parser* operator->() { return parser_.get(); }

 private:
  using pool = sluice::detail::thread_local_pool<request_parser>;
  static bool same_limits(const parser_limits& a, const parser_limits& b) {
    return a.max_target == b.max_target && a.max_head_bytes == b.max_head_bytes &&
           a.max_header_count == b.max_header_count && a.max_body == b.max_body &&
           a.max_chunk_line == b.max_chunk_line && a.max_trailer_bytes == b.max_trailer_bytes &&
           a.max_chunk_framing == b.max_chunk_framing &&
           a.require_host == b.require_host;
  }
  std::unique_ptr<request_parser> parser_;
};

// HTTP/1.1 on one connection, as server::driver runs it: one request and its
// response per serve_one(), keep-alive and pipelining, request bodies read on
// demand, streamed responses, and the hand-over on an upgrade.
template <typename Transport>
class protocol final : body_source, body_sink {
 public:
  using shared_type = server_core;
  using driver = sluice::server::driver<Transport>;
  using next = sluice::server::next;

  protocol(driver& d, server_core& core) : d_(d), core_(core) {}

  // The time to the first request's head is the header timeout's.
  void start() { d_.set_deadline(core_.timeouts.header); }

  // The peer may still be sending what was left unread: a body, or the rest
  // of a request answered with an error.
  bool input_unfinished() const { return !body_done_ || closing_mid_request_; }

  // HTTP/2 was agreed in the TLS handshake: it starts without waiting for
  // input (the server's SETTINGS go first).
  bool speaks_first() const { return http2_by_alpn(); }

  // Serves the request whose bytes are in the driver's buffer, or, after a
  // response that switched protocols, the protocol switched to. HTTP/2 is
  // chosen before the first request, by ALPN or by the h2c preface, and
  // serves the rest of the connection: the choice costs this object no byte.
  asio::awaitable<next> serve_one() {
    if (upgrade_) return serve_upgraded();
#if SLUICE_HAS_HTTP2
    if (served_ == 0 && (http2_by_alpn() || may_be_preface())) return serve_http2();
#endif
    return serve_request();
  }

 private:
  bool http2_by_alpn() const {
    return http2_available && core_.options.http2.enabled && Transport::alpn(d_.stream()) == "h2";
  }

  // The first bytes agree with the h2c preface so far.
  bool may_be_preface() {
    if (!core_.options.http2.enabled || d_.buffer().empty()) return false;
    const std::string_view in = d_.buffer().data();
    return http2_preface.starts_with(in.substr(0, http2_preface.size()));
  }

#if SLUICE_HAS_HTTP2
  // The preface may arrive in pieces: read until it is whole, or proves not
  // to be one (then this is HTTP/1.1, "PRI" being a method like another).
  asio::awaitable<next> serve_http2() {
    if (!http2_by_alpn()) {
      while (d_.buffer().size() < http2_preface.size() && may_be_preface())
        if (!co_await d_.read_more()) co_return next::abort;
      if (!may_be_preface()) co_return co_await serve_request();
    }
    d_.clear_deadline();
    http2::protocol<Transport, server_core> h2(d_, core_);
    co_return co_await h2.run();
  }
#endif

  asio::awaitable<next> serve_request() {
    pooled_parser pooled(core_.options.limits);
    request_parser& parser = *pooled;
    if (auto failed = co_await read_head(parser)) co_return *failed;
    d_.buffer().consume(parser.head_size());
    d_.clear_deadline();
    d_.set_state(connection_state::active);
    ++served_;

    request_head& head = parser.head();
    parser_ = &parser;
    body_done_ = head.body == body_kind::none;
    continue_sent_ = false;
    final_head_sent_ = false;
    io_failed_ = false;
    request req(head, *this);
    const bool over_limit = (limit() && served_ > limit()) || d_.refused();

    std::optional<response> handled;
    if (over_limit)
      handled = error_response(503, d_.refused() ? "too many connections" : "too many requests on one connection");
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
    const bool next_read = body_done_ && !d_.buffer().empty();
    if ((d_.core().lifecycle.draining() || (limit() && served_ >= limit())) && !next_read) keep = false;

    if (!co_await write_response(head, res, keep, upgrading)) co_return next::abort;
    if (upgrading) {
      // Run by the driver once this request is gone (parser, head, response,
      // this frame): an upgraded connection may stay for hours.
      upgrade_ = std::make_unique<upgrade_function>(std::move(res.upgrade));
      co_return next::upgrade;
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

  // After serve_request() said next::upgrade: hands the stream, the bytes read
  // past the head and the connection's hooks to the upgrade function. The
  // protocol it speaks runs on the same driver, which keeps the connection
  // registered and counted (in state `upgraded` until the protocol names its
  // own) and tells it of a drain.
  asio::awaitable<next> serve_upgraded() {
    // Over the driver rather than the bare stream: the upgraded protocol
    // uses the driver's services (its state, its wait for input, its drain).
    struct driver_stream final : upgraded_connection {
      explicit driver_stream(driver& d) : d(d) {}
      // The upgrade function has returned: nothing its hook refers to is left.
      ~driver_stream() override { d.set_drain_hook(nullptr); }
      asio::awaitable<std::size_t> read_some(asio::mutable_buffer b) override {
        co_return co_await d.stream().async_read_some(b, asio::use_awaitable);
      }
      asio::awaitable<void> write(asio::const_buffer b) override {
        co_await asio::async_write(d.stream(), b, asio::use_awaitable);
      }
      asio::ip::tcp::socket& socket() override { return Transport::socket(d.stream()); }
      // The driver's own wait, not a coroutine around it: an idle upgraded
      // connection holds no frame for it.
      asio::awaitable<std::tuple<std::error_code>> wait_readable() override {
        if constexpr (Transport::readiness_wait) return d.readable();
        else return readable_now();
      }
      std::size_t try_read_some(asio::mutable_buffer b, std::error_code& ec) override {
        return Transport::try_read_some(d.stream(), b, ec);
      }
      void on_drain(std::function<void()> fn) override {
        drain_hook = std::move(fn);
        d.set_drain_hook(&drain_hook);
      }
      void set_state(connection_state state) override { d.set_state(state); }
      asio::any_io_executor get_executor() override { return d.executor(); }
      driver& d;
      std::function<void()> drain_hook;
    };
    d_.set_state(connection_state::upgraded);
    // In this frame, which has room for it, rather than in a block of its own.
    const upgrade_function run = std::move(*std::exchange(upgrade_, nullptr));
    driver_stream stream(d_);
    upgraded taken(stream, d_.take_buffered());
    std::exception_ptr failure;
    try {
      co_await run(taken);
    } catch (const std::system_error& e) {
      if (e.code() == asio::error::operation_aborted && d_.core().lifecycle.forcing()) throw;  // this session is being stopped
      // The peer leaving is how an upgraded connection normally ends.
      if (e.code() != asio::error::eof && e.code() != asio::error::connection_reset) failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) report(failure);
    co_return next::abort;
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
      switch (parser.parse_head(d_.buffer().data())) {
        case request_parser::status::head_done:
          co_return std::nullopt;
        case request_parser::status::error:
          co_return co_await write_error(parser.error());
        default:
          break;
      }
      if (!deadline_set) {
        d_.set_deadline(core_.timeouts.header);
        deadline_set = true;
      }
      if (!co_await d_.read_more()) co_return next::abort;
    }
  }

  asio::awaitable<std::optional<next>> write_error(std::error_code ec) {
    closing_mid_request_ = true;
    std::string out;
    serialize_error(ec, out);
    std::array<asio::const_buffer, 1> b{asio::buffer(out)};
    co_return co_await d_.write_all(b) ? next::close : next::abort;
  }

  [[noreturn]] void fail_io(std::error_code ec, const char* what) {
    io_failed_ = true;
    throw std::system_error(ec, what);
  }

  // The handler's response; empty when the connection broke under it.
  asio::awaitable<std::optional<response>> call_handler(request& req) {
    struct handler_running {
      protocol& p;
      asio::cancellation_slot own;
      handler_running(protocol& self, asio::cancellation_slot slot) : p(self), own(slot) { p.in_handler_ = true; }
      ~handler_running() {
        p.in_handler_ = p.watch_asked_ = false;
        if (auto* watch = p.d_.conn().disconnect_if_asked()) watch->end_request(own);
      }
    };
    const auto own_state = co_await asio::this_coro::cancellation_state;
    handler_running running(*this, own_state.slot());
    std::exception_ptr failure;
    try {
      co_return co_await core_.handler(req);
    } catch (const std::system_error& e) {
      const auto code = e.code();
      if (code.category() == http_category()) co_return error_response(status_for(code), code.message());
      if (io_failed_) {
        if (d_.timed_out() == core_.timeouts.body) co_return error_response(408, "the request body stalled");
        co_return std::nullopt;
      }
      if (code == asio::error::operation_aborted && d_.core().lifecycle.forcing()) throw;  // this session is being stopped
      // The handler let the cancellation that told it of its client's leaving escape.
      if (code == asio::error::operation_aborted && client_left()) co_return std::nullopt;
      failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    report(failure);
    co_return error_response(500, {});
  }

  static response error_response(unsigned status, std::string_view what) {
    auto res = status_response(status, what);
    res.headers.add("Connection", "close");
    return res;
  }

  void report(std::exception_ptr e) { sluice::server::report_error(core_.options.on_handler_error, e); }

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
    if (!co_await d_.write_all(bufs)) co_return false;
    if (!res.stream || !send_body || upgrading) co_return true;

    chunked_ = f == framing::chunked;
    body_writer writer(*this);
    std::exception_ptr failure;
    try {
      co_await res.stream(writer);
    } catch (const std::system_error& e) {
      if (io_failed_) co_return false;
      if (e.code() == asio::error::operation_aborted && d_.core().lifecycle.forcing()) throw;  // this session is being stopped
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
      co_return co_await d_.write_all(end);
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
    if (!co_await d_.write_all(bufs)) fail_io(asio::error::connection_aborted, "sluice: response body write failed");
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
      if (!co_await d_.write_all(b)) fail_io(asio::error::connection_aborted, "sluice: 100 Continue write failed");
    }
    for (;;) {
      if (!d_.buffer().empty()) {
        auto r = parser_->parse_body(d_.buffer().data());
        if (r.st == request_parser::status::error) throw std::system_error(parser_->error());
        if (r.st == request_parser::status::message_done) body_done_ = true;
        pending_ = r.consumed;
        if (body_done_ && watch_asked_) watch_disconnect();
        if (!r.data.empty()) co_return r.data;
        consume_pending();
        if (body_done_) co_return std::string_view{};
      }
      d_.set_deadline(core_.timeouts.body);
      const bool got = co_await d_.read_more();
      d_.clear_deadline();
      if (!got) {
        if (d_.timed_out() == core_.timeouts.body) fail_io(asio::error::timed_out, "sluice: request body timeout");
        // Lets the handler tell a stopping server from a peer that left.
        if (d_.core().lifecycle.forcing()) fail_io(asio::error::operation_aborted, "sluice: the server is stopping");
        fail_io(asio::error::connection_aborted, "sluice: connection ended inside the request body");
      }
    }
  }

  bool body_done() const override { return body_done_; }
  const fields& trailers() const override { return parser_->trailers(); }
  bool server_draining() const override { return d_.core().lifecycle.drain_announced(); }
  std::optional<std::chrono::steady_clock::time_point> shutdown_deadline() const override { return d_.core().drain_deadline.get(); }

  asio::awaitable<asio::cancellation_slot> cancellation_slot() override {
    watch_disconnect();
    auto awaiting = co_await asio::this_coro::cancellation_state;
    co_return d_.conn().disconnect().slot(awaiting.slot());
  }
  bool client_gone() override {
    watch_disconnect();
    return d_.conn().disconnect().client_gone();
  }

  // Only once a handler asked, and only while it runs: a handler that never
  // asks costs nothing. Input is news only when the whole request was read
  // and no pipelined byte waits in the buffer.
  // Whether the watch saw this request's client leave (never asked: no).
  bool client_left() {
    auto* watch = d_.conn().disconnect_if_asked();
    return watch && watch->client_gone();
  }

  void watch_disconnect() {
    if (!in_handler_) return;
    watch_asked_ = true;
    if (body_done_ && d_.buffer().size() == pending_)
      d_.conn().disconnect().watch(Transport::socket(d_.stream()), d_.conn().shared_from_this());
  }

  void consume_pending() {
    d_.buffer().consume(pending_);
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

  driver& d_;
  server_core& core_;
  request_parser* parser_ = nullptr;
  std::size_t pending_ = 0;
  std::size_t served_ = 0;
  bool body_done_ = true;
  bool continue_sent_ = false;
  bool final_head_sent_ = false;  // no 100 Continue may follow
  bool chunked_ = false;
  bool io_failed_ = false;  // a body read or write of ours failed under the handler
  bool closing_mid_request_ = false;  // an error was answered before the request was all read
  bool in_handler_ = false;
  bool watch_asked_ = false;  // by this request's handler: watch once its body is read
  // The upgrade function of the response that switched protocols, from
  // serve_request() to serve_upgraded(), whose frame keeps it while it runs
  // (its coroutine may refer to what it captured). Boxed, as an idle HTTP
  // connection should not pay for a std::function it rarely needs.
  using upgrade_function = std::function<asio::awaitable<void>(upgraded&)>;
  std::unique_ptr<upgrade_function> upgrade_;
};

}  // namespace sluice::http::detail
