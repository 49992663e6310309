// sluice/http/server.hpp: an HTTP/1.1 server that stops exactly.
//
//     sluice::http::server srv(io.get_executor(), [](sluice::http::request& req)
//         -> asio::awaitable<sluice::http::response> {
//       co_return sluice::http::response::text(200, "Hello, world!\n");
//     });
//     srv.listen("127.0.0.1", 8080);
//     ...
//     co_await srv.shutdown(5s);   // or: co_await srv.stop_now();
//
// Guarantees
// - stop_now(): closes the listeners, cancels every connection in every
//   state (a handler's pending operation completes with operation_aborted if
//   it supports cancellation slots, as Asio's sockets and timers do; see
//   scope.hpp),
//   and completes when every session has finished and every socket is closed.
//   Nothing else on the io_context is touched.
// - shutdown(grace): stops accepting; sends each connection one drain
//   signal, on its executor (a connection accepted as it starts gets it at
//   registration): closes never-used and idle connections at once; lets
//   requests being read or handled finish, their responses saying
//   "Connection: close", each connection closing after its last response;
//   runs an upgraded connection's on_drain hook (see http::upgraded), or
//   waits for one without a hook until the deadline; a request already
//   read from a connection is always answered, one not yet read never is. A half-received request keeps its header
//   timeout. At the deadline whatever is left gets stop_now(). Then the
//   shutdown hooks run, within the same deadline. Completes when all is torn
//   down, with how many connections were closed idle, completed, and forced.
//   No polling: the last session to end wakes it. With drain_delay, the
//   server first keeps serving for that long while draining() already says
//   so (for load balancers to take it out of rotation). A grace period too
//   long for the clock (milliseconds::max()) means no deadline.
// - Once stop_now(), shutdown() (from when it stops accepting) or the
//   destructor has begun, listen() and adopt() throw tcp::server_stopped.
// - At most tcp.max_connections connections at once; past it, newcomers wait
//   in the kernel backlog, or get 503 (see server_options::answer_503_at_limit).
// - close_idle(): closes the connections that are idle or never used now.
// - A handler can learn why it may stop (see message.hpp): its client leaving
//   mid-request (request::cancellation_slot(), client_gone()) and, once
//   shutdown() began, its deadline (request::shutdown_deadline()).
// - Keep-alive by default for HTTP/1.1 and on request for HTTP/1.0;
//   pipelined requests are answered in order.
// - Malformed requests get their status (400, 413, 414, 431, 501, 505) with
//   "Connection: close"; the server goes on serving everyone else.
// - A request body the handler left unread is discarded after its response,
//   within max_discard. If it proves malformed or too large then, nothing
//   more can be said: the connection closes after that response (sent whole,
//   possibly without "Connection: close"; a request pipelined after it is
//   not answered), with a lingering close, and unread_bodies_rejected()
//   counts it.
// - A response that cannot be sent as the handler built it (CR, LF or a
//   control in a header field; a 1xx status, except 101 with an upgrade
//   function to a request that asked for one with Upgrade; a 2xx to CONNECT
//   without an upgrade function to carry the tunnel) is answered with a 500
//   instead and reported to on_handler_error; the connection stays usable
//   unless the request was an upgrade or a CONNECT.
// - 100 Continue is sent only before the final response head: a handler
//   that starts its response before reading the body gets no 100 (the
//   client sends the body on seeing the head, or after its own wait), and
//   that response closes the connection.
// - An upgrade (101, or 2xx to CONNECT) starts after the whole request: the
//   rest of its body is discarded first, within max_discard, and one that
//   cannot be (too large, malformed, stalled) gets 413, 400 or 408 instead of
//   the switch, with the close. A CONNECT that declares content gets 400.
// - A lingering close lasts at most linger_timeout however fast the peer
//   sends, and ends at once at stop_now() or the shutdown deadline.
// - Idle keep-alive connections hold no read buffer (plain TCP).
// - HTTP/2 (built with libnghttp2; server_options::http2): h2c by prior
//   knowledge on plain TCP, h2 by ALPN over TLS, the same handlers (each
//   stream's a task of its connection; RST_STREAM fires its cancellation
//   slot). shutdown() sends GOAWAY(2^31-1) and a PING, then GOAWAY(last
//   stream processed); those streams complete, the connection closes after
//   the last; an HTTP/2 connection with no open stream closes at once. At
//   the deadline and at stop_now(): RST_STREAM(CANCEL), every handler
//   cancelled and awaited. See http2/protocol.hpp. "Upgrade: h2c" is
//   answered over HTTP/1.1.
// - Call shutdown() and stop_now() from outside the server's own handlers: a
//   handler is one of the sessions being stopped (see sluice/signals.hpp for
//   the usual signal policy in one line).
//
// Thread safety: every member may be called from any thread. The server may
// serve from several threads in either common shape: one io_context run by
// several threads (sessions then run on per-connection strands), or one
// io_context per thread, each with its own listener on a shared port
// (listen(ep, ex) with tcp.reuse_port). stop_now() and shutdown() stop every
// part and return when every part is torn down.
// Destroying a server that was not stopped behaves as tcp::server does.
#pragma once

#include "sluice/config.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/detail/protocol.hpp"
#include "sluice/http/message.hpp"
#include "sluice/http/options.hpp"
#include "sluice/net/plain.hpp"
#include "sluice/net/transport.hpp"
#include "sluice/server/lifecycle.hpp"
#include "sluice/tcp/server.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http {

// What shutdown() or stop_now() did, by connection.
struct shutdown_summary {
  std::uint64_t idle_closed = 0;      // idle or never used, closed at once
  std::uint64_t completed = 0;        // finished their requests and closed
  std::uint64_t forced = 0;           // cancelled at the deadline
  std::uint64_t hooks_cut_short = 0;  // shutdown hooks cancelled or skipped at the deadline
};

// The application protocols this server speaks, as ALPN names, most
// preferred first: what a TLS transport offers for it (tls::server).
inline constexpr std::array<std::string_view, 2> alpn_protocols{"h2", "http/1.1"};

// What a TLS transport offers for a server with these options: HTTP/2 only
// when it is enabled and built in.
inline std::span<const std::string_view> alpn_protocols_for(const server_options& o) {
  const bool h2 = detail::http2_available && o.http2.enabled;
  return std::span<const std::string_view>(alpn_protocols).subspan(h2 ? 0 : 1);
}

template <net::transport Transport>
class basic_server {
 public:
  using handler_type = detail::handler_function;

  basic_server(asio::any_io_executor ex, handler_type handler, server_options options = {},
               Transport transport = {})
      : state_(std::make_shared<state>(ex, std::move(options), std::move(handler), std::move(transport))) {
    auto tcp_options = state_->core.options.tcp;
    if (state_->core.options.answer_503_at_limit) tcp_options.refuse_session = session_function(state_, true);
    state_->tcp.emplace(std::move(ex), session_function(state_, false), std::move(tcp_options));
  }
  basic_server(const basic_server&) = delete;
  basic_server& operator=(const basic_server&) = delete;
  ~basic_server() {
    state_->core.connections.lifecycle.start_forcing();
    state_->tcp->request_stop();
  }

  asio::ip::tcp::endpoint listen(const asio::ip::tcp::endpoint& ep) { return state_->tcp->listen(ep); }
  asio::ip::tcp::endpoint listen(const asio::ip::tcp::endpoint& ep, asio::any_io_executor ex) {
    return state_->tcp->listen(ep, std::move(ex));
  }
  asio::ip::tcp::endpoint listen(std::string_view address, unsigned short port) { return state_->tcp->listen(address, port); }
  asio::ip::tcp::endpoint adopt(asio::ip::tcp::acceptor acceptor) { return state_->tcp->adopt(std::move(acceptor)); }
  std::vector<asio::ip::tcp::endpoint> local_endpoints() const { return state_->tcp->local_endpoints(); }

  void stop_accepting() { state_->tcp->stop_accepting(); }
  void close_idle() { state_->core.connections.registry.close_idle(); }

  // Returns what it closed (all of it counted as forced).
  asio::awaitable<shutdown_summary> stop_now() {
    auto st = state_;
    const auto before = st->core.connections.registry.ended();
    co_await force(st);
    co_return summarize(before, st->core.connections.registry.ended());
  }

  // `grace` may be any duration: one too long for steady_clock (e.g.
  // milliseconds::max()) means no deadline, as duration::max() does.
  template <typename Rep, typename Period>
  asio::awaitable<shutdown_summary> shutdown(std::chrono::duration<Rep, Period> grace) {
    using namespace asio::experimental::awaitable_operators;
    const auto limit = detail::saturated(grace);
    auto st = state_;
    auto ex = co_await asio::this_coro::executor;
    const auto before = st->core.connections.registry.ended();
    asio::steady_timer deadline(ex, limit);  // Asio saturates now + limit
    // Before the phase moves: a handler that sees the drain sees its deadline.
    st->core.connections.drain_deadline.set(deadline.expiry());
    st->core.connections.lifecycle.announce_drain();
    if (auto delay = std::min(detail::saturated(st->core.options.drain_delay), limit); delay.count() > 0) {
      asio::steady_timer wait(ex, delay);
      co_await wait.async_wait(sluice::detail::use_nothrow);
    }
    start_draining(*st);
    auto first = co_await (st->tcp->join() || deadline.async_wait(asio::use_awaitable));
    if (first.index() == 1)
      co_await force(st);
    else
      st->core.connections.lifecycle.finish();
    auto summary = summarize(before, st->core.connections.registry.ended());
    summary.hooks_cut_short = co_await run_shutdown_hooks(st, deadline);
    co_return summary;
  }

  // Adds a hook that shutdown() runs once every connection is torn down (to
  // close a database pool, flush logs): hooks run one after another, in the
  // order they were added, each awaited, all within shutdown()'s deadline. At
  // the deadline the running hook is cancelled (its pending operation
  // completes with operation_aborted) and the ones not started are skipped.
  // An exception escaping a hook goes to on_handler_error; the next hook
  // still runs. A shutdown() that is itself cancelled cancels the running
  // hook without awaiting it; what that hook throws later is still reported.
  // stop_now() runs no hooks.
  void on_shutdown(std::function<asio::awaitable<void>()> hook) {
    std::lock_guard lock(state_->hooks_mutex);
    state_->hooks.push_back(std::move(hook));
  }

  // Open connections by state.
  state_counts connections() const {
    auto counts = state_->core.connections.registry.counts();
    counts.refused = state_->tcp->refused();
    return counts;
  }
  std::uint64_t accepted() const { return state_->tcp->accepted(); }
  // Request bodies a handler left unread that proved malformed or larger than
  // max_discard while the server discarded them. Each one's response was
  // already out, whole: its connection closed after it (a lingering close).
  std::uint64_t unread_bodies_rejected() const {
    return state_->core.unread_bodies_rejected.load(std::memory_order_relaxed);
  }
  // True from the start of shutdown(), drain_delay included: what a
  // readiness probe should report.
  bool draining() const { return state_->core.connections.lifecycle.drain_announced(); }

  // Receives exceptions escaping sessions (handler exceptions go to
  // server_options::on_handler_error and are answered with 500).
  void set_exception_handler(scope::exception_handler h) { state_->tcp->set_exception_handler(std::move(h)); }
  Transport& transport() { return state_->transport; }

 private:
  struct state {
    state(const asio::any_io_executor& ex, server_options o, handler_type h, Transport t)
        : core(ex, std::move(o), std::move(h)), transport(std::move(t)) {}

    detail::server_core core;
    Transport transport;
    std::optional<tcp::server> tcp;
    std::mutex hooks_mutex;
    std::vector<std::function<asio::awaitable<void>()>> hooks;
  };

  // The lifecycle's transitions past drain_announced, each with what it sets
  // off. The phase moves first: a session that meets the effect (a drain(),
  // a cancellation) finds the phase that explains it (release in the
  // transition, acquire in the session's load; see server/lifecycle.hpp).
  static void start_draining(state& st) {
    st.core.connections.lifecycle.start_draining();
    st.tcp->stop_accepting_for_good();
    // The sweep takes the registry's lock after the phase moved: a connection
    // it misses registers later under that lock, so sees draining() and
    // drains itself (server::driver::serve). Each connection is told once.
    st.core.connections.registry.drain_all();
  }

  static asio::awaitable<void> force(std::shared_ptr<state> st) {
    st->core.connections.lifecycle.start_forcing();
    co_await st->tcp->stop_now();
    st->core.connections.lifecycle.finish();
  }

  // Runs the hooks until the deadline; returns how many did not complete.
  static asio::awaitable<std::size_t> run_shutdown_hooks(std::shared_ptr<state> st, asio::steady_timer& deadline) {
    using namespace asio::experimental::awaitable_operators;
    std::vector<std::function<asio::awaitable<void>()>> hooks;
    {
      std::lock_guard lock(st->hooks_mutex);
      hooks = st->hooks;
    }
    auto ex = co_await asio::this_coro::executor;
    std::size_t completed = 0;
    for (auto& hook : hooks) {
      if (std::chrono::steady_clock::now() >= deadline.expiry()) break;
      scope running;
      // By value: a shutdown() cancelled while this hook runs leaves it running
      // (stopped, not awaited), and it may still throw after this frame is gone.
      running.set_exception_handler([st](std::exception_ptr e) { sluice::server::report_error(st->core.options.on_handler_error, e); });
      running.spawn(ex, hook);
      auto first = co_await (running.join() || deadline.async_wait(asio::use_awaitable));
      if (first.index() == 1) {
        co_await running.stop();
        break;
      }
      ++completed;
    }
    co_return hooks.size() - completed;
  }

  static shutdown_summary summarize(const sluice::server::connection_registry::ends& before,
                                    const sluice::server::connection_registry::ends& after) {
    shutdown_summary summary;
    summary.idle_closed = after.idle_closed - before.idle_closed;
    summary.forced = after.forced - before.forced;
    summary.completed = (after.total - before.total) - summary.idle_closed - summary.forced;
    return summary;
  }

  // The sessions hold the state only while they run: the server's state owns
  // the TCP server, which owns this function. `refused`: for the connections
  // accepted beyond the limit, which get 503.
  static tcp::server::session_function session_function(const std::shared_ptr<state>& st, bool refused) {
    return [weak = std::weak_ptr<state>(st), refused](asio::ip::tcp::socket socket) {
      auto st = weak.lock();
      if (!st) return nothing();
      asio::ip::tcp::endpoint peer;
      if (st->core.connections.registry.observed()) {
        std::error_code ignored;
        peer = socket.remote_endpoint(ignored);
      }
      auto conn = std::make_shared<sluice::server::connection>(st->core.connections.registry, peer);
      if (refused) conn->refuse();
      auto stream = st->transport.make_stream(std::move(socket));
      using driver = sluice::server::driver<Transport>;
      return driver::template serve<detail::protocol<Transport>>(st->core.connections, st->core, st->transport,
                                                                 {st, std::move(conn), std::move(stream)});
    };
  }

  static asio::awaitable<void> nothing() { co_return; }

  std::shared_ptr<state> state_;
};

using server = basic_server<net::plain>;

}  // namespace sluice::http
