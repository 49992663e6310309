// Internals of the HTTP server: what the server knows of each connection
// (its state, its deadline) and the registry through which close_idle() and
// shutdown() reach them.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/scope_state.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/detail/deadlines.hpp"
#include "sluice/http/options.hpp"

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

namespace sluice::http::detail {

class connection;

// To on_handler_error, or to stderr when it is not set; never throws.
inline void report_handler_error(const server_options& options, std::exception_ptr e) {
  try {
    if (options.on_handler_error)
      options.on_handler_error(e);
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
  // `options` (its on_state_change and on_handler_error) must outlive the registry.
  connection_registry(const asio::any_io_executor& ex, std::array<clock::duration, timeout_kinds> timeouts,
                      const server_options& options)
      : options_(options), deadlines_(std::make_shared<deadline_lists<connection>>(ex, timeouts)) {}

  bool observed() const { return static_cast<bool>(options_.on_state_change); }

  state_counts counts() const {
    state_counts c;
    for (std::size_t i = 0; i < connection_state_count; ++i)
      c.by_state[i] = by_state_[i].load(std::memory_order_relaxed);
    return c;
  }

  void add(connection& c);
  void remove(connection& c);

  // Asks every idle or never-used connection to close, on its own executor.
  void close_idle();

  // Once set, responses say "Connection: close" and connections close when
  // they would otherwise go idle.
  void start_draining() { draining_.store(true, std::memory_order_release); }
  // Gives every connection registered now connection::drain(), on its own
  // executor. One registered later sees draining() once it is in the list.
  void drain_all();
  bool draining() const { return draining_.load(std::memory_order_acquire); }

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

  const server_options& options_;
  const std::shared_ptr<deadline_lists<connection>> deadlines_;
  std::array<std::atomic<std::size_t>, connection_state_count> by_state_{};
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> ended_{0}, idle_closed_{0}, forced_{0};
  std::mutex mutex_;
  connection* head_ = nullptr;
};

// One connection, as its session and the server share it. Everything but
// construction runs on the connection's executor (a strand), the deadline
// lists and the registry's list being guarded by their own mutexes.
class connection : public deadline_hook, public std::enable_shared_from_this<connection> {
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
  // "Connection: close" when it answers). Once per connection.
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
    if (!drain_hook_ || !*drain_hook_ || !(drained_ || registry_.draining())) return;
    asio::post(executor(), [weak = weak_from_this()] {
      if (auto c = weak.lock()) c->run_drain_hook();
    });
  }

  // From the deadline lists, on this connection's executor. A write that
  // timed out leaves nothing worth saying: close. Anything else the session
  // may still answer (408 to a stalled body), so it is interrupted and keeps
  // its socket.
  void on_deadline(timeout_kind kind, std::uint32_t expired_generation) {
    if (!socket_ || expired_generation != generation) return;  // the session moved on meanwhile
    timed_out_ = kind;
    if (kind == timeout_kind::write)
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
      registry_.options_.on_state_change(*peer_, from, to, closed);
    } catch (...) {
      report_handler_error(registry_.options_, std::current_exception());
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
      report_handler_error(registry_.options_, std::current_exception());
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
  bool close_requested_ = false;
  bool refused_ = false;
  bool drained_ = false;
  // The registry's list, guarded by its mutex.
  friend class connection_registry;
  connection* prev_ = nullptr;
  connection* next_ = nullptr;
};

inline void connection_registry::add(connection& c) {
  std::lock_guard lock(mutex_);
  c.next_ = head_;
  if (head_) head_->prev_ = &c;
  head_ = &c;
}

inline void connection_registry::remove(connection& c) {
  std::lock_guard lock(mutex_);
  if (c.prev_) c.prev_->next_ = c.next_;
  if (c.next_) c.next_->prev_ = c.prev_;
  if (head_ == &c) head_ = c.next_;
  c.prev_ = c.next_ = nullptr;
}

// Calls f(connection&) for every registered connection, on its own executor.
// Only weak references leave the lock: a connection is touched on its own
// executor alone, and only if its session still runs.
template <typename F>
void connection_registry::for_each_connection(F f) {
  std::vector<std::pair<std::weak_ptr<connection>, asio::any_io_executor>> all;
  {
    std::lock_guard lock(mutex_);
    for (connection* c = head_; c; c = c->next_) all.emplace_back(c->weak_from_this(), c->executor());
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

}  // namespace sluice::http::detail
