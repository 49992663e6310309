// sluice/tcp/server.hpp: a TCP server whose connections are tasks of one scope.
//
// Each accepted connection runs your coroutine, `awaitable<void>(tcp::socket)`,
// as a task of the server's session scope, on a strand of its own. Each
// listener runs an accept loop.
//
// Guarantees
// - co_await stop_now(): closes every listener (the ports can be bound again
//   as soon as it has returned, indeed as soon as it has started), cancels
//   every session, and completes when every session coroutine has finished
//   and every accepted socket is closed. It never stops an io_context: other
//   work on it carries on. Idempotent; may be awaited several times, at once,
//   from any thread. Awaited from inside one of this server's own sessions, it
//   stops everything and then throws operation_aborted in that session (which
//   is itself being stopped and cannot wait for itself).
// - stop_accepting(): closes the listeners and returns once the ports are free;
//   sessions carry on. Thread-safe, synchronous.
// - Accept errors never end an accept loop. An error that concerns one peer
//   (ECONNABORTED, ECONNRESET, EPROTO) is retried at once; any other, above
//   all EMFILE, backs off, doubling from accept_backoff up to
//   accept_backoff_max, instead of spinning; the server keeps serving the
//   connections it has.
// - Destroying a server that was not stopped closes its listeners and
//   requests stop of its sessions without waiting: the sessions end, and
//   their sockets close, when their executors next run them (or when their
//   io_context is destroyed). Your session function must therefore not
//   capture state that dies with the server object.
//
// Thread safety: all members may be called from any thread. Sessions run on
// per-connection strands, so the io_context may be run by several threads;
// on an io_context constructed with a concurrency hint of 1 (Asio's promise
// of one thread) they run on its executor directly, which costs less.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/executor.hpp"
#include "sluice/scope.hpp"
#include "sluice/tcp/detail/listener.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <vector>

namespace sluice::tcp {

using asio::ip::tcp;

struct server_options {
  int backlog = asio::socket_base::max_listen_connections;
  std::chrono::milliseconds accept_backoff{10};
  std::chrono::milliseconds accept_backoff_max{1000};
  // SO_REUSEPORT, for several listeners (one per thread or process) on one port.
  bool reuse_port = false;
  // TCP_NODELAY on accepted sockets: request/response protocols write whole
  // messages and must not wait for Nagle.
  bool no_delay = true;
  // Told of every failed accept, with the delay before the next attempt (zero
  // for an error that concerns one peer only). Runs in the accept loop.
  std::function<void(const std::error_code&, std::chrono::milliseconds retry_in)> on_accept_error;
};

class server {
 public:
  using session_function = std::function<asio::awaitable<void>(tcp::socket)>;

  server(asio::any_io_executor ex, session_function fn, server_options options = {})
      : state_(std::make_shared<state>(std::move(ex), std::move(fn), options)) {}
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() {
    stop_accepting();
    request_stop();
  }

  // Binds, listens and starts accepting on `ep`; returns the bound endpoint
  // (with the chosen port when ep's port is 0). Throws std::system_error.
  tcp::endpoint listen(const tcp::endpoint& ep) { return listen(ep, state_->executor); }

  // As above, with the accept loop and its sessions on `ex` (for instance one
  // io_context per thread, each with a listener bound with reuse_port).
  tcp::endpoint listen(const tcp::endpoint& ep, asio::any_io_executor ex) {
    tcp::acceptor acceptor(ex);
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    if (ep.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true));
    if (state_->options.reuse_port) set_reuse_port(acceptor);
    acceptor.bind(ep);
    acceptor.listen(state_->options.backlog);
    return adopt(std::move(acceptor), std::move(ex));
  }

  tcp::endpoint listen(std::string_view address, unsigned short port) {
    return listen(tcp::endpoint(asio::ip::make_address(address), port));
  }

  // Starts accepting on an acceptor that is already listening (one passed by
  // systemd or a parent process, for instance). Throws std::system_error.
  tcp::endpoint adopt(tcp::acceptor acceptor) {
    auto ex = acceptor.get_executor();
    return adopt(std::move(acceptor), std::move(ex));
  }

  std::vector<tcp::endpoint> local_endpoints() const { return state_->local_endpoints(); }

  void stop_accepting() { state_->stop_accepting(); }

  asio::awaitable<void> stop_now() {
    auto st = state_;
    st->stop_accepting();
    co_await st->sessions.stop();
    co_await st->accept_loops.join();
  }

  // Completes when every session and accept loop has finished, without
  // asking anything to stop.
  asio::awaitable<void> join() {
    auto st = state_;
    co_await st->sessions.join();
    co_await st->accept_loops.join();
  }

  // Connections whose session has not finished yet.
  std::size_t connections() const { return state_->sessions.size(); }
  // Connections accepted since the server was created.
  std::uint64_t accepted() const { return state_->accepted.load(std::memory_order_relaxed); }

  // Receives the exceptions that escape sessions (see scope).
  void set_exception_handler(scope::exception_handler h) { state_->sessions.set_exception_handler(std::move(h)); }

  // Asks every session to stop, without waiting (stop_now() waits).
  void request_stop() { state_->sessions.request_stop(); }

 private:
  struct state : std::enable_shared_from_this<state> {
    state(asio::any_io_executor ex, session_function fn, server_options opt)
        : executor(std::move(ex)), session(std::move(fn)), options(opt) {}

    void stop_accepting() {
      std::vector<std::shared_ptr<detail::listener>> ls;
      {
        std::lock_guard lock(mutex);
        ls = listeners;
      }
      for (auto& l : ls) l->close();
    }

    std::vector<tcp::endpoint> local_endpoints() const {
      std::lock_guard lock(mutex);
      std::vector<tcp::endpoint> eps;
      for (auto& l : listeners) eps.push_back(l->local_endpoint());
      return eps;
    }

    asio::any_io_executor executor;
    session_function session;
    server_options options;
    scope sessions;
    scope accept_loops;
    mutable std::mutex mutex;
    std::vector<std::shared_ptr<detail::listener>> listeners;
    std::atomic<std::uint64_t> accepted{0};
  };

  tcp::endpoint adopt(tcp::acceptor acceptor, asio::any_io_executor ex) {
    auto ep = acceptor.local_endpoint();
    const bool one_thread = sluice::detail::runs_on_one_thread(ex);
    auto l = std::make_shared<detail::listener>(sluice::detail::serial_executor(ex, one_thread), std::move(acceptor),
                                                one_thread);
    l->set_local_endpoint(ep);
    {
      std::lock_guard lock(state_->mutex);
      state_->listeners.push_back(l);
    }
    if (!state_->accept_loops.try_spawn(l->executor(), accept_loop(state_, l))) l->close();
    return ep;
  }

  static void set_reuse_port(tcp::acceptor& acceptor) {
    using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    acceptor.set_option(reuse_port(true));
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> st, std::shared_ptr<detail::listener> l) {
    auto backoff = st->options.accept_backoff;
    for (;;) {
      auto session_ex = sluice::detail::serial_executor(l->inner_executor(), l->one_thread());
      auto [ec, socket] = co_await l->async_accept(session_ex, detail::use_nothrow);
      if (!ec) {
        backoff = st->options.accept_backoff;
        start_session(st, std::move(socket));
      } else if (l->closed()) {
        co_return;
      } else if (detail::is_peer_error(ec)) {
        if (st->options.on_accept_error) st->options.on_accept_error(ec, std::chrono::milliseconds(0));
      } else {
        if (st->options.on_accept_error) st->options.on_accept_error(ec, backoff);
        co_await l->async_backoff(backoff, detail::use_nothrow);
        backoff = std::min(backoff * 2, st->options.accept_backoff_max);
      }
      if (l->closed()) co_return;
    }
  }

  static void start_session(const std::shared_ptr<state>& st, tcp::socket socket) {
    st->accepted.fetch_add(1, std::memory_order_relaxed);
    std::error_code ignored;
    if (st->options.no_delay) socket.set_option(tcp::no_delay(true), ignored);
    auto ex = socket.get_executor();
    // The session coroutine is the task itself: no wrapper frame per
    // connection. Refused once stop was requested: the socket then closes
    // with the unstarted coroutine.
    st->sessions.try_spawn(ex, st->session(std::move(socket)));
  }

  std::shared_ptr<state> state_;
};

}  // namespace sluice::tcp
