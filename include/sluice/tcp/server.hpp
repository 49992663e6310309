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
// - Once a stop has begun (stop_now(), request_stop(), the destructor,
//   stop_accepting_for_good()), listen() and adopt() throw server_stopped:
//   a port opened then would only reset every connection, and a stop that
//   has begun always completes.
// - At most max_connections sessions at once. At the limit the accept loop
//   pauses until a session ends (woken by that end, no polling), and
//   newcomers wait in the kernel backlog; or, with refuse_session, up to
//   max_refusing more are accepted and handed to it, to be told so.
// - Accept errors never end an accept loop, nor do exceptions from starting
//   a session (the session function, bad_alloc) or from on_accept_error:
//   that socket is closed, the exception goes to the exception handler (see
//   set_exception_handler), and the loop accepts on. An error that concerns one peer
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
// of one thread) they run on its executor directly, which costs less. The
// hints that turn Asio's own locking off (ASIO_CONCURRENCY_HINT_UNSAFE,
// ASIO_CONCURRENCY_HINT_UNSAFE_IO) are refused with std::invalid_argument by
// the constructor, listen() and adopt(): stops and closes come from other
// threads, which those contexts cannot take.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/asio_internals.hpp"
#include "sluice/detail/executor.hpp"
#include "sluice/scope.hpp"
#include "sluice/tcp/detail/listener.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice::tcp {

using asio::ip::tcp;

// Thrown by listen() and adopt() once the server's stop has begun.
class server_stopped : public std::logic_error {
 public:
  server_stopped()
      : std::logic_error("sluice::tcp::server: the server is stopping or stopped; listen() and adopt() are refused") {}
};

// Three quarters of the soft RLIMIT_NOFILE at the time of the call (at least
// 1): the other quarter stays for whatever else the process opens (listeners,
// files, upstream connections). 0, no limit, when the soft limit is infinite.
inline std::size_t default_max_connections() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  return std::max<std::size_t>(1, static_cast<std::size_t>(limit.rlim_cur / 4 * 3));
}

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
  // for an error that concerns one peer only). Runs in the accept loop; what
  // it throws goes to the exception handler.
  std::function<void(const std::error_code&, std::chrono::milliseconds retry_in)> on_accept_error;
  // Sessions at once; 0 means no limit. At the limit the server stops
  // accepting until a session ends: newcomers wait in the kernel backlog
  // (up to `backlog`), the sessions it has are served as usual. By default
  // three quarters of the soft descriptor limit (default_max_connections()).
  std::size_t max_connections = default_max_connections();
  // When set, runs instead of the session function for connections accepted
  // beyond max_connections, to turn them away politely (HTTP: 503); at most
  // max_refusing of them at once, past which accepting pauses all the same
  // (unbounded refusals would defeat the limit).
  std::function<asio::awaitable<void>(tcp::socket)> refuse_session;
  std::size_t max_refusing = 16;
};

class server {
 public:
  using session_function = std::function<asio::awaitable<void>(tcp::socket)>;

  server(asio::any_io_executor ex, session_function fn, server_options options = {})
      : state_(std::make_shared<state>(std::move(ex), std::move(fn), std::move(options))) {
    sluice::detail::require_asio_locking(state_->executor);
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() { request_stop(); }

  // Binds, listens and starts accepting on `ep`; returns the bound endpoint
  // (with the chosen port when ep's port is 0). Throws std::system_error, or
  // server_stopped once a stop has begun.
  tcp::endpoint listen(const tcp::endpoint& ep) { return listen(ep, state_->executor); }

  // As above, with the accept loop and its sessions on `ex` (for instance one
  // io_context per thread, each with a listener bound with reuse_port).
  tcp::endpoint listen(const tcp::endpoint& ep, asio::any_io_executor ex) {
    state_->throw_if_stopping();  // before the port is taken, even briefly
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
  // systemd or a parent process, for instance). Throws std::system_error, or
  // server_stopped once a stop has begun (the acceptor is then closed).
  tcp::endpoint adopt(tcp::acceptor acceptor) {
    auto ex = acceptor.get_executor();
    return adopt(std::move(acceptor), std::move(ex));
  }

  std::vector<tcp::endpoint> local_endpoints() const { return state_->local_endpoints(); }

  void stop_accepting() { state_->stop_accepting(); }

  // As stop_accepting(), and listen() and adopt() throw server_stopped from
  // now on: the first step of every stop, sessions untouched.
  void stop_accepting_for_good() { state_->stop_accepting_for_good(); }

  asio::awaitable<void> stop_now() {
    auto st = state_;
    st->stop_accepting_for_good();
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
  // Of those, the ones handed to refuse_session.
  std::uint64_t refused() const { return state_->refused.load(std::memory_order_relaxed); }

  // Receives the exceptions that escape sessions (see scope).
  void set_exception_handler(scope::exception_handler h) { state_->sessions.set_exception_handler(std::move(h)); }

  // Stops accepting for good and asks every session to stop, without waiting
  // (stop_now() waits). The accept loops' scope is stopped too: should the
  // io_context then be destroyed without running again, the last loop frame
  // to go releases a scope with nothing left to cancel.
  void request_stop() {
    state_->stop_accepting_for_good();
    state_->sessions.request_stop();
    state_->accept_loops.request_stop();
  }

 private:
  struct state;
  enum class place_kind { serving, refusing };

  // A place under max_connections (or max_refusing), taken before an accept
  // and given back when the session it went to has finished, or when nothing
  // came of it: the giving back wakes the accept loops paused at the limit.
  class place {
   public:
    place(std::shared_ptr<state> st, place_kind kind) : state_(std::move(st)), kind_(kind) {}
    place(place&&) = default;
    ~place() {
      if (state_) state_->give_back(kind_);
    }
    place_kind kind() const { return kind_; }

   private:
    std::shared_ptr<state> state_;
    place_kind kind_;
  };

  // A session's task: the coroutine and, until the task has ended, its place.
  // A function object rather than a wrapper coroutine: no frame more per
  // connection.
  struct placed_session {
    asio::awaitable<void> session;
    place held;
    asio::awaitable<void> operator()() { return std::move(session); }
  };

  struct state : std::enable_shared_from_this<state> {
    state(asio::any_io_executor ex, session_function fn, server_options opt)
        : executor(std::move(ex)), session(std::move(fn)), options(std::move(opt)) {}

    void throw_if_stopping() const {
      std::lock_guard lock(mutex);
      if (stopping) throw server_stopped();
    }

    // Adds `l`, unless a stop has begun: then closes it and throws.
    void publish(const std::shared_ptr<detail::listener>& l) {
      {
        std::lock_guard lock(mutex);
        if (!stopping) {
          listeners.push_back(l);
          return;
        }
      }
      l->close();
      throw server_stopped();
    }

    void stop_accepting_for_good() {
      {
        std::lock_guard lock(mutex);
        stopping = true;
      }
      stop_accepting();
    }

    // A place for the next connection; none at the limits, and `l` is then
    // woken by the next give_back().
    std::optional<place> take_place(const std::shared_ptr<detail::listener>& l) {
      std::lock_guard lock(mutex);
      if (options.max_connections == 0 || serving < options.max_connections) {
        ++serving;
        return place(shared_from_this(), place_kind::serving);
      }
      if (options.refuse_session && refusing < options.max_refusing) {
        ++refusing;
        return place(shared_from_this(), place_kind::refusing);
      }
      paused.push_back(l);
      return std::nullopt;
    }

    void give_back(place_kind kind) {
      std::vector<std::shared_ptr<detail::listener>> woken;
      {
        std::lock_guard lock(mutex);
        --(kind == place_kind::serving ? serving : refusing);
        woken.swap(paused);
      }
      for (auto& l : woken) l->wake();
    }

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
    bool stopping = false;
    std::size_t serving = 0;   // places taken under max_connections
    std::size_t refusing = 0;  // places taken under max_refusing
    std::vector<std::shared_ptr<detail::listener>> paused;
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> refused{0};
  };

  // The accept loop joins accept_loops before the listener is published, so
  // that a stop beginning meanwhile either closes it or makes publish() do
  // so, and in both cases waits for the loop.
  tcp::endpoint adopt(tcp::acceptor acceptor, asio::any_io_executor ex) {
    sluice::detail::require_asio_locking(ex);
    state_->throw_if_stopping();
    auto ep = acceptor.local_endpoint();
    const bool one_thread = sluice::detail::runs_on_one_thread(ex);
    auto l = std::make_shared<detail::listener>(sluice::detail::serial_executor(ex, one_thread), std::move(acceptor),
                                                one_thread);
    l->set_local_endpoint(ep);
    state_->accept_loops.spawn(l->executor(), accept_loop(state_, l));
    state_->publish(l);
    return ep;
  }

  static void set_reuse_port(tcp::acceptor& acceptor) {
    acceptor.set_option(sluice::detail::reuse_port_option(true));
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> st, std::shared_ptr<detail::listener> l) {
    auto backoff = st->options.accept_backoff;
    while (!l->closed()) {
      auto held = st->take_place(l);
      if (!held) {
        co_await l->async_pause(detail::use_nothrow);  // until a session ends or the listener closes
        continue;
      }
      auto session_ex = sluice::detail::serial_executor(l->inner_executor(), l->one_thread());
      auto [ec, socket] = co_await l->async_accept(session_ex, detail::use_nothrow);
      if (!ec) {
        backoff = st->options.accept_backoff;
        contain(st, l->executor(), [&st, &held, s = std::move(socket)]() mutable {
          start_session(st, std::move(s), std::move(*held));
        });
        continue;
      }
      held.reset();
      if (l->closed()) co_return;
      const auto delay = detail::is_peer_error(ec) ? std::chrono::milliseconds(0) : backoff;
      contain(st, l->executor(), [&st, delay, ec = ec] {
        if (st->options.on_accept_error) st->options.on_accept_error(ec, delay);
      });
      if (delay.count() == 0) continue;
      co_await l->async_backoff(delay, detail::use_nothrow);
      backoff = doubled(backoff, st->options.accept_backoff_max);
    }
  }

  // Twice `d`, at most `max`, without overflowing whatever `d` is.
  static std::chrono::milliseconds doubled(std::chrono::milliseconds d, std::chrono::milliseconds max) {
    return d > max / 2 ? max : d * 2;
  }

  // Runs `f` for the accept loop: what it throws goes to the exception handler
  // and the loop carries on.
  template <typename F>
  static void contain(const std::shared_ptr<state>& st, const asio::any_io_executor& ex, F&& f) noexcept {
    try {
      f();
    } catch (...) {
      report(st, ex, std::current_exception());
    }
  }

  // Through the sessions' scope, as if a session had thrown `e`, so that it
  // meets the same handler; on stderr if even that fails.
  static void report(const std::shared_ptr<state>& st, const asio::any_io_executor& ex, std::exception_ptr e) noexcept {
    try {
      if (st->sessions.try_spawn(ex, rethrow(e))) return;
    } catch (...) {
    }
    sluice::detail::report_to_stderr(e);
  }

  static asio::awaitable<void> rethrow(std::exception_ptr e) {
    std::rethrow_exception(e);
    co_return;
  }

  // If the session function throws, the socket it was given closes with it
  // and the place is given back.
  static void start_session(const std::shared_ptr<state>& st, tcp::socket socket, place held) {
    st->accepted.fetch_add(1, std::memory_order_relaxed);
    std::error_code ignored;
    if (st->options.no_delay) socket.set_option(tcp::no_delay(true), ignored);
    auto ex = socket.get_executor();
    const bool refusing = held.kind() == place_kind::refusing;
    if (refusing) st->refused.fetch_add(1, std::memory_order_relaxed);
    auto& fn = refusing ? st->options.refuse_session : st->session;
    // The session coroutine is the task itself. Refused once stop was
    // requested: the socket then closes with the unstarted coroutine.
    st->sessions.try_spawn(ex, placed_session{fn(std::move(socket)), std::move(held)});
  }

  std::shared_ptr<state> state_;
};

}  // namespace sluice::tcp
