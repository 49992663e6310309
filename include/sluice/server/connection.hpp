// Internals of the servers, whatever protocol their connections speak: what a
// server knows of each connection (its state, its deadline, its drain
// signal) and the registry through which close_idle() and shutdown() reach
// them. The protocols see a connection through server/driver.hpp.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/intrusive_list.hpp"
#include "sluice/detail/scope_state.hpp"
#include "sluice/server/connection_state.hpp"
#include "sluice/server/deadlines.hpp"
#include "sluice/server/disconnect_watch.hpp"
#include "sluice/server/lifecycle.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/ip/tcp.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace sluice::server {

class connection;

// Told of every connection state change, and of each connection's end
// (`closed` true), on the connection's executor.
using state_observer =
    std::function<void(const asio::ip::tcp::endpoint& peer, connection_state from, connection_state to, bool closed)>;
// Where what escapes a handler, an observer or a drain hook goes.
using error_reporter = std::function<void(std::exception_ptr)>;

// To `report`, or to stderr when it is empty; never throws.
inline void report_error(const error_reporter& report, std::exception_ptr e) noexcept {
  try {
    if (report)
      report(e);
    else
      sluice::detail::report_to_stderr(e);
  } catch (...) {
    sluice::detail::report_to_stderr(std::current_exception());
  }
}

// The server's view of all its connections. Counts are kept per state so that
// reading them takes no lock; the list serves close_idle() and shutdown().
class connection_registry {
 public:
  // `observer`, `report` and `lifecycle` must outlive the registry.
  connection_registry(const asio::any_io_executor& ex, const timeout_table& kinds, const state_observer& observer,
                      const error_reporter& report, const lifecycle& lifecycle)
      : observer_(observer),
        report_(report),
        lifecycle_(lifecycle),
        deadlines_(std::make_shared<deadline_lists<connection>>(ex, kinds)) {}

  bool observed() const { return static_cast<bool>(observer_); }

  state_counts counts() const {
    state_counts c;
    for (std::size_t i = 0; i < connection_state_count; ++i)
      c.by_state[i] = by_state_[i].load(std::memory_order_relaxed);
    c.streams = streams_.load(std::memory_order_relaxed);
    return c;
  }

  void add(connection& c);
  void remove(connection& c);

  // An HTTP/2 stream's handler started (+1) or ended (-1).
  void count_stream(int delta) {
    if (delta > 0) streams_.fetch_add(1, std::memory_order_relaxed);
    else streams_.fetch_sub(1, std::memory_order_relaxed);
  }

  // Asks every idle or never-used connection to close, on its own executor.
  void close_idle();

  // Gives every connection registered now connection::drain(), on its own
  // executor. Call it once the lifecycle says draining: a connection that
  // this misses registered after it took the list, under the same mutex, so
  // it sees the lifecycle's draining() (see server::driver::serve).
  void drain_all();

  enum class end_reason { idle_closed, completed, forced };
  struct ends {
    std::uint64_t total = 0;
    std::uint64_t idle_closed = 0;
    std::uint64_t forced = 0;
  };
  void count_end(end_reason r) {
    ended_.fetch_add(1, std::memory_order_relaxed);
    if (r == end_reason::idle_closed) idle_closed_.fetch_add(1, std::memory_order_relaxed);
    if (r == end_reason::forced) forced_.fetch_add(1, std::memory_order_relaxed);
  }
  ends ended() const {
    return {ended_.load(std::memory_order_relaxed), idle_closed_.load(std::memory_order_relaxed),
            forced_.load(std::memory_order_relaxed)};
  }

 private:
  friend class connection;

  void count(connection_state from, connection_state to) {
    by_state_[static_cast<std::size_t>(from)].fetch_sub(1, std::memory_order_relaxed);
    by_state_[static_cast<std::size_t>(to)].fetch_add(1, std::memory_order_relaxed);
  }
  template <typename F>
  void for_each_connection(F f);

  void count_in(connection_state s) { by_state_[static_cast<std::size_t>(s)].fetch_add(1, std::memory_order_relaxed); }
  void count_out(connection_state s) { by_state_[static_cast<std::size_t>(s)].fetch_sub(1, std::memory_order_relaxed); }

  const state_observer& observer_;
  const error_reporter& report_;
  const lifecycle& lifecycle_;
  const std::shared_ptr<deadline_lists<connection>> deadlines_;
  std::array<std::atomic<std::size_t>, connection_state_count> by_state_{};
  std::atomic<std::size_t> streams_{0};
  std::atomic<std::uint64_t> ended_{0}, idle_closed_{0}, forced_{0};
  std::mutex mutex_;
  sluice::detail::intrusive_list<connection, connection_registry> all_;
};

// One connection, as its session and the server share it. Everything but
// construction runs on the connection's executor (a strand), the deadline
// lists and the registry's list being guarded by their own mutexes.
class connection : public deadline_hook,
                   public sluice::detail::intrusive_list_node<connection_registry>,
                   public std::enable_shared_from_this<connection> {
 public:
  // `peer` only matters to a state observer: without one it is not kept.
  connection(connection_registry& registry, const asio::ip::tcp::endpoint& peer)
      : registry_(registry),
        peer_(registry.observed() ? std::make_unique<asio::ip::tcp::endpoint>(peer) : nullptr) {
    registry_.count_in(state_);
  }
  ~connection() { registry_.count_out(state_); }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Valid while the session runs (between attach and detach), which is when
  // the registry and the deadline lists know of the connection.
  asio::any_io_executor executor() { return socket_->get_executor(); }
  connection_state state() const { return state_; }

  // The state and its count change first: whatever the observer does, they agree.
  void set_state(connection_state s) {
    if (s == state_) return;
    const auto from = std::exchange(state_, s);
    registry_.count(from, s);
    tell_observer(from, s, false);
  }

  // How a timeout stops what the session waits for without closing the
  // socket (so that a 408 can still be written): the transport knows.
  using interrupt_function = void (*)(asio::ip::tcp::socket&);

  // The socket that timeouts and close_idle() act on; null once the session ends.
  void attach(asio::ip::tcp::socket* s, interrupt_function interrupt) {
    socket_ = s;
    interrupt_ = interrupt;
  }
  void detach() {
    registry_.deadlines_->clear(*this);
    socket_ = nullptr;
    tell_observer(state_, state_, true);
  }

  // The deadline is now plus `kind`'s timeout.
  void set_deadline(timeout_kind kind) { registry_.deadlines_->set(*this, kind); }
  void clear_deadline() { registry_.deadlines_->clear(*this); }
  timeout_kind timed_out() const { return timed_out_; }

  // True when close_idle() (or shutdown) closed this connection while it was
  // idle or fresh: its peer's next request, if any, was never read.
  bool close_requested() const { return close_requested_; }

  // True once drain() reached this connection.
  bool drain_signalled() const { return drained_; }
  // Tells the running handler that its client left. Here rather than in the
  // session's frame: its wait may complete after the frame is gone. Made on
  // the first handler's first question: a connection whose handlers never
  // ask keeps one pointer for it, not the watch.
  disconnect_watch& disconnect() {
    if (!disconnect_) disconnect_ = std::make_unique<disconnect_watch>();
    return *disconnect_;
  }
  // The watch if a handler ever asked for it, else null.
  disconnect_watch* disconnect_if_asked() { return disconnect_.get(); }

  // Accepted beyond tcp.max_connections: its first request is answered 503
  // with "Connection: close". Set before the session starts.
  void refuse() { refused_ = true; }
  bool refused() const { return refused_; }

  void close_if_idle() {
    if (state_ != connection_state::idle && state_ != connection_state::fresh) return;
    close_requested_ = true;
    close_socket();
  }

  // The server started draining: the upgrade's drain hook runs if it set
  // one, else an idle or never-used connection closes (a busy one says
  // "Connection: close" when it answers, and closes when it would go idle:
  // drain_signalled()). Once per connection.
  void drain() {
    if (std::exchange(drained_, true)) return;
    if (drain_hook_ && *drain_hook_)
      run_drain_hook();
    else
      close_if_idle();
  }

  // What an upgraded connection does when the server drains (see
  // http::upgraded::on_drain), kept by the upgrade, which passes null when
  // it ends: an idle connection pays one pointer for it. A hook set after the
  // drain began runs at once, posted: not inside the caller.
  void set_drain_hook(std::function<void()>* hook) {
    drain_hook_ = hook;
    if (!drain_hook_ || !*drain_hook_ || !(drained_ || registry_.lifecycle_.draining())) return;
    asio::post(executor(), [weak = weak_from_this()] {
      if (auto c = weak.lock()) c->run_drain_hook();
    });
  }

  // From the deadline lists, on this connection's executor. The kind says
  // whether anything is left worth saying (see on_expiry): if not, close;
  // else the session is interrupted and keeps its socket (a 408 to a stalled
  // body).
  void on_deadline(timeout_kind kind, std::uint32_t expired_generation) {
    if (!socket_ || expired_generation != generation) return;  // the session moved on meanwhile
    timed_out_ = kind;
    if (registry_.deadlines_->kinds().action(kind) == sluice::server::on_expiry::close)
      close_socket();
    else
      interrupt_(*socket_);
  }

 private:
  // What the observer throws goes where a handler's exceptions go: it must
  // neither end the session nor, called from a destructor, the process.
  void tell_observer(connection_state from, connection_state to, bool closed) noexcept {
    if (!peer_) return;
    try {
      registry_.observer_(*peer_, from, to, closed);
    } catch (...) {
      report_error(registry_.report_, std::current_exception());
    }
  }

  // A hook runs once: a drain and a post racing to run it find it taken.
  void run_drain_hook() noexcept {
    drained_ = true;
    if (!drain_hook_ || !*drain_hook_) return;
    auto fn = std::exchange(*drain_hook_, nullptr);
    try {
      fn();
    } catch (...) {
      report_error(registry_.report_, std::current_exception());
    }
  }

  // Closing rather than cancelling: a cancel reaches only the operation
  // pending now, and is lost if it lands between two steps of a composed one
  // (a TLS write); on a closed socket every later operation fails at once.
  void close_socket() {
    std::error_code ignored;
    if (socket_) socket_->close(ignored);
  }

  connection_registry& registry_;
  std::unique_ptr<asio::ip::tcp::endpoint> peer_;
  asio::ip::tcp::socket* socket_ = nullptr;
  interrupt_function interrupt_ = nullptr;
  connection_state state_ = connection_state::fresh;
  timeout_kind timed_out_ = timeout_kind::none;
  std::function<void()>* drain_hook_ = nullptr;
  std::unique_ptr<disconnect_watch> disconnect_;
  bool close_requested_ = false;
  bool refused_ = false;
  bool drained_ = false;
};

inline void connection_registry::add(connection& c) {
  std::lock_guard lock(mutex_);
  all_.push_front(c);
}

inline void connection_registry::remove(connection& c) {
  std::lock_guard lock(mutex_);
  all_.erase(c);
}

// Calls f(connection&) for every registered connection, on its own executor.
// Only weak references leave the lock: a connection is touched on its own
// executor alone, and only if its session still runs.
template <typename F>
void connection_registry::for_each_connection(F f) {
  std::vector<std::pair<std::weak_ptr<connection>, asio::any_io_executor>> all;
  {
    std::lock_guard lock(mutex_);
    for (connection& c : all_) all.emplace_back(c.weak_from_this(), c.executor());
  }
  for (auto& [weak, ex] : all) {
    asio::dispatch(ex, [weak = std::move(weak), f] {
      if (auto c = weak.lock()) f(*c);
    });
  }
}

inline void connection_registry::close_idle() {
  for_each_connection([](connection& c) { c.close_if_idle(); });
}

inline void connection_registry::drain_all() {
  for_each_connection([](connection& c) { c.drain(); });
}

}  // namespace sluice::server
