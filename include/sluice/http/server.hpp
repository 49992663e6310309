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
//   state (a handler's pending operations complete with operation_aborted),
//   and completes when every session has finished and every socket is closed.
//   Nothing else on the io_context is touched.
// - shutdown(grace): stops accepting; closes never-used and idle connections
//   at once; lets requests being read or handled finish, their responses
//   saying "Connection: close", each connection closing after its last
//   response (with a lingering close); a request already read from a
//   connection is always answered, one not yet read never is. A half-received
//   request keeps its header timeout. At the deadline whatever is left gets
//   stop_now(). Completes when all is torn down, with how many connections
//   were closed idle, completed, and forced. No polling: the last session to
//   end wakes it.
// - close_idle(): closes the connections that are idle or never used now.
// - Keep-alive by default for HTTP/1.1 and on request for HTTP/1.0;
//   pipelined requests are answered in order.
// - Malformed requests get their status (400, 413, 414, 431, 501, 505) with
//   "Connection: close"; the server goes on serving everyone else.
// - Idle keep-alive connections hold no read buffer (plain TCP).
// - Call shutdown() and stop_now() from outside the server's own handlers: a
//   handler is one of the sessions being stopped.
//
// Thread safety: every member may be called from any thread; the io_context
// may be run by several threads (sessions run on per-connection strands).
// Destroying a server that was not stopped behaves as tcp::server does.
#pragma once

#include "sluice/config.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/detail/connection.hpp"
#include "sluice/http/detail/plain_transport.hpp"
#include "sluice/http/detail/session.hpp"
#include "sluice/http/message.hpp"
#include "sluice/http/options.hpp"
#include "sluice/tcp/server.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http {

// What shutdown() or stop_now() did, by connection.
struct shutdown_summary {
  std::uint64_t idle_closed = 0;  // idle or never used, closed at once
  std::uint64_t completed = 0;    // finished their requests and closed
  std::uint64_t forced = 0;       // cancelled at the deadline
};

template <typename Transport>
class basic_server {
 public:
  using handler_type = detail::handler_function;

  basic_server(asio::any_io_executor ex, handler_type handler, server_options options = {},
               Transport transport = {})
      : state_(std::make_shared<state>(std::move(options), std::move(handler), std::move(transport))) {
    state_->tcp.emplace(std::move(ex), session_function(state_), state_->core.options.tcp);
  }
  basic_server(const basic_server&) = delete;
  basic_server& operator=(const basic_server&) = delete;
  ~basic_server() {
    state_->core.forcing = true;
    state_->tcp->stop_accepting();
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
  void close_idle() { state_->core.registry.close_idle(); }

  // Returns what it closed (all of it counted as forced).
  asio::awaitable<shutdown_summary> stop_now() {
    auto st = state_;
    const auto before = st->core.registry.ended();
    st->core.forcing = true;
    co_await st->tcp->stop_now();
    co_return summarize(before, st->core.registry.ended());
  }

  asio::awaitable<shutdown_summary> shutdown(std::chrono::steady_clock::duration grace) {
    using namespace asio::experimental::awaitable_operators;
    auto st = state_;
    const auto before = st->core.registry.ended();
    st->core.registry.start_draining();
    st->tcp->stop_accepting();
    st->core.registry.close_idle();
    asio::steady_timer deadline(co_await asio::this_coro::executor, grace);
    auto first = co_await (st->tcp->join() || deadline.async_wait(asio::use_awaitable));
    if (first.index() == 1) {
      st->core.forcing = true;
      co_await st->tcp->stop_now();
    }
    co_return summarize(before, st->core.registry.ended());
  }

  // Open connections by state.
  state_counts connections() const { return state_->core.registry.counts(); }
  std::uint64_t accepted() const { return state_->tcp->accepted(); }
  // True from the start of shutdown().
  bool draining() const { return state_->core.registry.draining(); }

  // Receives exceptions escaping sessions (handler exceptions go to
  // server_options::on_handler_error and are answered with 500).
  void set_exception_handler(scope::exception_handler h) { state_->tcp->set_exception_handler(std::move(h)); }
  Transport& transport() { return state_->transport; }

 private:
  struct state {
    state(server_options o, handler_type h, Transport t) : core(std::move(o), std::move(h)), transport(std::move(t)) {}

    detail::server_core core;
    Transport transport;
    std::optional<tcp::server> tcp;
  };

  static shutdown_summary summarize(const detail::connection_registry::ends& before,
                                    const detail::connection_registry::ends& after) {
    shutdown_summary summary;
    summary.idle_closed = after.idle_closed - before.idle_closed;
    summary.forced = after.forced - before.forced;
    summary.completed = (after.total - before.total) - summary.idle_closed - summary.forced;
    return summary;
  }

  // The sessions hold the state only while they run: the server's state owns
  // the TCP server, which owns this function.
  static tcp::server::session_function session_function(const std::shared_ptr<state>& st) {
    return [weak = std::weak_ptr<state>(st)](asio::ip::tcp::socket socket) -> asio::awaitable<void> {
      auto st = weak.lock();
      if (!st) co_return;
      std::error_code ec;
      auto peer = socket.remote_endpoint(ec);
      auto conn = std::make_shared<detail::connection>(st->core.registry, socket.get_executor(), peer);
      detail::session<Transport> session(st->core, st->transport.make_stream(std::move(socket)), std::move(conn));
      co_await session.run(st->transport);
    };
  }

  std::shared_ptr<state> state_;
};

using server = basic_server<detail::plain_transport>;

}  // namespace sluice::http
