// sluice/http/message.hpp: what a handler receives and what it returns.
//
// A handler is a coroutine `awaitable<response>(request&)`. The request
// carries the parsed head; its body is read on demand, whole (read_body) or
// piece by piece (read_some), so a large upload never has to fit in memory.
// Reading it answers `Expect: 100-continue` first; a handler that answers
// without reading the body rejects it unread.
//
// path() and query() are the target's in every form: "http://a/p?q" (absolute-form, what a
// client sends to a proxy) gives "/p" and "q", as "/p?q" does. authority() says which host the
// request is for: the target's authority when it has one (RFC 9112 3.2.2), else Host.
//
// A response is a status, header fields and either
// - a body string (sent with Content-Length), or
// - a stream function that writes the body piece by piece (sent chunked to
//   HTTP/1.1 clients, delimited by closing for HTTP/1.0), or
// - an upgrade function that takes the connection over after the head is
//   sent (101 Switching Protocols, or 2xx to CONNECT). The taken-over
//   connection stays a task of the server: stop_now() cancels it and
//   shutdown() waits for it until its deadline.
// Framing fields (Content-Length, Transfer-Encoding) are the server's: set
// them and they are replaced. "Connection: close" in a response is honoured.
//
// Thread safety: a request and its writers belong to one session; use them
// from the handler's coroutine only.
#pragma once

#include "sluice/config.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/fields.hpp"
#include "sluice/http/parser.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>

namespace sluice::http {

namespace detail {

struct body_source {
  virtual asio::awaitable<std::string_view> read_some() = 0;
  virtual bool body_done() const = 0;
  virtual const fields& trailers() const = 0;
  virtual bool server_draining() const = 0;
  virtual asio::awaitable<asio::cancellation_slot> cancellation_slot() = 0;
  virtual bool client_gone() = 0;
  virtual std::optional<std::chrono::steady_clock::time_point> shutdown_deadline() const = 0;

 protected:
  ~body_source() = default;
};

struct body_sink {
  virtual asio::awaitable<void> write(std::string_view data) = 0;

 protected:
  ~body_sink() = default;
};

// A wait for input that is over at once, shaped as upgraded::wait_readable's.
inline asio::awaitable<std::tuple<std::error_code>> readable_now() { co_return std::tuple<std::error_code>{}; }

// A connection handed over by upgrade, its stream's type erased: what
// http::upgraded needs of the session (each member is documented there).
struct upgraded_connection {
  virtual ~upgraded_connection() = default;
  virtual asio::awaitable<std::size_t> read_some(asio::mutable_buffer buffer) = 0;
  virtual asio::awaitable<void> write(asio::const_buffer data) = 0;
  virtual asio::ip::tcp::socket& socket() = 0;
  virtual asio::awaitable<std::tuple<std::error_code>> wait_readable() = 0;
  virtual std::size_t try_read_some(asio::mutable_buffer buffer, std::error_code& ec) = 0;
  virtual void on_drain(std::function<void()> fn) = 0;
  virtual void set_state(connection_state s) = 0;
  virtual asio::any_io_executor get_executor() = 0;
};

}  // namespace detail

class request {
 public:
  request(request_head& head, detail::body_source& body) : head_(head), body_(body) {}

  std::string_view method() const { return head_.method; }
  // The request-target as received: "http://a/p?q" stays so (what a proxy needs).
  std::string_view target() const { return head_.target; }
  // The target's path, before any '?': "/p" for "/p?q" and "http://a/p?q" alike, "/" for
  // "http://a", "*" for asterisk-form, empty for CONNECT.
  std::string_view path() const { return head_.path_and_query.substr(0, head_.path_and_query.find('?')); }
  // The target's query, after the first '?'; empty when there is none.
  std::string_view query() const {
    auto q = head_.path_and_query.find('?');
    return q == std::string_view::npos ? std::string_view{} : head_.path_and_query.substr(q + 1);
  }
  // The authority the request is for (RFC 9110 7.2): the target's when it names one
  // (absolute-form, CONNECT), which wins over Host (RFC 9112 3.2.2); else Host's value; empty
  // when there is neither (HTTP/1.0 without Host).
  std::string_view authority() const {
    if (!head_.authority.empty()) return head_.authority;
    return head_.headers.get("host").value_or(std::string_view{});
  }
  // The value of `name` in the query (first occurrence, not percent-decoded).
  std::optional<std::string_view> query_param(std::string_view name) const {
    std::string_view rest = query();
    while (!rest.empty()) {
      auto amp = rest.find('&');
      auto pair = rest.substr(0, amp);
      auto eq = pair.find('=');
      if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
    return std::nullopt;
  }
  int version_minor() const { return head_.version_minor; }
  // 10 for HTTP/1.0, 11 for HTTP/1.1, 20 for HTTP/2.
  int version() const { return head_.version_major * 10 + head_.version_minor; }
  const fields& headers() const { return head_.headers; }
  const request_head& head() const { return head_; }
  bool has_body() const { return head_.body != body_kind::none; }

  // The next piece of the body; empty once it has all been read. The view is
  // valid until the next call. Throws std::system_error: an http::error for a
  // malformed or too large body, asio::error::timed_out when the body timeout
  // passed, operation_aborted when the server stops, connection_aborted when
  // the connection ended.
  asio::awaitable<std::string_view> read_some() { return body_.read_some(); }

  // The rest of the body, whole (bounded by the server's max_body).
  asio::awaitable<std::string> read_body() {
    std::string body;
    for (;;) {
      auto piece = co_await body_.read_some();
      if (piece.empty()) co_return body;
      body.append(piece);
    }
  }

  bool body_done() const { return body_.body_done(); }

  // The trailing fields of a body that had some (HTTP/1.1 chunked trailers,
  // HTTP/2 trailing HEADERS): complete once body_done().
  const fields& trailers() const { return body_.trailers(); }

  // True once the server's shutdown() has started (its drain_delay
  // included): what a readiness endpoint should answer 503 to.
  bool server_draining() const { return body_.server_draining(); }

  // Why a handler may stop early -----------------------------------------
  //
  // The client leaving mid-request (a FIN or a reset), as Go's r.Context()
  // and Node's req.signal tell it: an operation bound to the slot this gives
  // completes with operation_aborted (terminal cancellation, emitted once, on
  // the request's executor) when the server sees the client go while the
  // handler runs. stop_now() and the shutdown deadline still reach it: the
  // slot takes over, for the operation the calling coroutine awaits next,
  // the cancellation that would have reached that operation. So ask for the
  // slot right before each operation you bind, in the coroutine that awaits
  // it:
  //
  //     asio::steady_timer t(co_await asio::this_coro::executor, 30s);
  //     auto slot = co_await req.cancellation_slot();
  //     auto [ec] = co_await t.async_wait(asio::bind_cancellation_slot(
  //         slot, asio::experimental::as_tuple(asio::use_awaitable)));
  //     if (req.client_gone()) co_return ...;  // nobody is listening
  //
  // The first call starts the watch (handlers that never ask cost nothing);
  // it begins once the body is read whole, and only if no pipelined request
  // follows it (its bytes say the client is there). Over TLS, a FIN or reset
  // with no TLS record before it is seen; a client that sends close_notify
  // first is not. As with any Asio slot, the slot keeps a handle to the last
  // operation bound to it: destroy that operation's I/O object (the timer
  // above) only once the handler returns, or after slot.clear(). The server
  // forgets the slot when the handler returns. It fires once: an operation
  // bound after the client left is not cancelled (check client_gone()
  // first). An operation_aborted that escapes the handler after the client
  // left ends the connection quietly (no 500, no report).
  asio::awaitable<asio::cancellation_slot> cancellation_slot() { return body_.cancellation_slot(); }
  // True once the server saw the client leave during this handler. Asking
  // starts the watch, as cancellation_slot() does: the answer can change
  // only while the handler waits (the event loop tells).
  bool client_gone() const { return body_.client_gone(); }

  // Empty while the server serves; once shutdown() began (its drain_delay
  // included), the deadline after which it cancels what is left, or
  // time_point::max() when its grace has none. A long handler can finish
  // early with a partial answer rather than be cancelled.
  std::optional<std::chrono::steady_clock::time_point> shutdown_deadline() const {
    return body_.shutdown_deadline();
  }

 private:
  request_head& head_;
  detail::body_source& body_;
};

// Writes a streamed response body.
class body_writer {
 public:
  explicit body_writer(detail::body_sink& sink) : sink_(sink) {}
  // Sends `data` (as one chunk to HTTP/1.1 clients); completes when the bytes
  // are handed to the socket. Throws std::system_error when the peer is gone,
  // the write timeout passed or the server stops.
  asio::awaitable<void> write(std::string_view data) { return sink_.write(data); }

 private:
  detail::body_sink& sink_;
};

// A connection taken over by a handler: the raw stream (TCP or TLS), the
// bytes the server had already read past the request, and the hooks through
// which the new protocol stays part of the server: its state in
// connections(), its drain signal, its executor. Use it on that executor
// (the upgrade function runs there) and only while the upgrade function runs.
class upgraded {
 public:
  upgraded(detail::upgraded_connection& conn, std::string leftover) : conn_(&conn), leftover_(std::move(leftover)) {}

  // Reads what is available: first the bytes read before the hand-over.
  // Throws std::system_error (asio::error::eof at the end).
  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buffer) {
    if (!leftover_.empty()) co_return take_leftover(buffer);
    co_return co_await conn_->read_some(buffer);
  }

  asio::awaitable<void> write(std::string_view data) { return conn_->write(asio::buffer(data)); }

  // Waits until input is there, holding no buffer where the transport allows
  // (plain TCP; the wait is allocated to its exact size like the server's
  // idle wait, and no coroutine frame stands between it and the caller).
  // Over TLS it completes at once. Completes at once when bytes read before
  // the hand-over are left. Completes with the error that ended the wait
  // (operation_aborted when the socket's operations were cancelled):
  //     auto [ec] = co_await up.wait_readable();
  asio::awaitable<std::tuple<std::error_code>> wait_readable() {
    if (!leftover_.empty()) return detail::readable_now();
    return conn_->wait_readable();
  }

  // Reads what is there without waiting (leftover bytes first); sets ec to
  // asio::error::would_block when there is nothing (always so over TLS: then
  // use read_some), asio::error::eof at the end.
  std::size_t try_read_some(asio::mutable_buffer buffer, std::error_code& ec) {
    ec.clear();
    if (!leftover_.empty()) return take_leftover(buffer);
    return conn_->try_read_some(buffer, ec);
  }

  // `fn` runs once, on the connection's executor, when the server starts
  // draining (shutdown()); if it already has, `fn` is posted at once. A later
  // call replaces an earlier fn. fn must not throw (what it throws goes to
  // server_options::on_handler_error). It is dropped when the upgrade
  // function returns. Without one, shutdown() waits for the connection until
  // its deadline, then cancels it.
  void on_drain(std::function<void()> fn) { conn_->on_drain(std::move(fn)); }

  // Counts the connection under `s` in connections() from now on and tells
  // on_state_change.
  void set_state(connection_state s) { conn_->set_state(s); }

  // The executor the connection runs on (its strand).
  asio::any_io_executor get_executor() { return conn_->get_executor(); }

  // The TCP socket beneath, for socket options and endpoints.
  asio::ip::tcp::socket& socket() { return conn_->socket(); }

 private:
  std::size_t take_leftover(asio::mutable_buffer buffer) {
    std::size_t n = asio::buffer_copy(buffer, asio::buffer(leftover_));
    leftover_.erase(0, n);
    return n;
  }

  detail::upgraded_connection* conn_;
  std::string leftover_;
};

struct response {
  unsigned status = 200;
  fields headers;
  std::string body;
  // Writes the body instead of `body` when set.
  std::function<asio::awaitable<void>(body_writer&)> stream;
  // Takes the connection over once the head is sent, when set.
  std::function<asio::awaitable<void>(upgraded&)> upgrade;

  static response text(unsigned status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8") {
    response r;
    r.status = status;
    r.body = std::move(body);
    r.headers.add("Content-Type", content_type);
    return r;
  }
};

}  // namespace sluice::http
