// sluice/server/deadlines.hpp: every connection's deadline, with one timer for
// the whole server, for timeout kinds that the driver and the protocols
// register.
//
// Guarantees
// - Setting or clearing a connection's deadline is O(1) and costs no timer
//   operation; one timer, for the earliest deadline, serves the server.
// - A kind is registered once, with its duration and what its expiry does
//   (see on_expiry); the table holds at most timeout_table::capacity kinds.
// - An expired deadline reaches its connection on the connection's own
//   executor, only while the connection lives, and only if no deadline was
//   set or cleared on it since (see deadline_lists).
//
// Thread safety: deadline_lists may be called from any thread; a
// timeout_table is a plain value, filled before the lists are built.
//
//     timeout_table table;
//     const timeout_kind header = table.add(saturated(10s), on_expiry::interrupt);
//     auto lists = std::make_shared<deadline_lists<connection>>(ex, table);
//     lists->set(conn, header);   // conn derives from deadline_hook
//     lists->clear(conn);
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/exact_allocator.hpp"
#include "sluice/detail/intrusive_list.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/bind_allocator.hpp>
#include <asio/dispatch.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace sluice::server {

using clock = std::chrono::steady_clock;

// `d` in the clock's units, saturated instead of overflowing: a duration too
// long for the clock (milliseconds::max() is, by far) becomes
// clock::duration::max(), which means never; a negative one becomes zero.
template <typename Rep, typename Period>
constexpr clock::duration saturated(std::chrono::duration<Rep, Period> d) {
  using source = std::chrono::duration<Rep, Period>;
  if (d <= source::zero()) return clock::duration::zero();
  if (d >= std::chrono::duration_cast<source>(clock::duration::max())) return clock::duration::max();
  return std::chrono::duration_cast<clock::duration>(d);
}

// `t + d` for a `d` of zero or more, time_point::max() (never) where the sum
// would overflow. `t` is a steady_clock reading, hence past its epoch.
inline clock::time_point saturating_add(clock::time_point t, clock::duration d) {
  return d >= clock::time_point::max() - t ? clock::time_point::max() : t + d;
}

// Why a deadline was set; what a connection reports when it passes. The
// values other than `none` come from timeout_table::add.
enum class timeout_kind : unsigned char { none };

// What passing a deadline does to its connection. `close`: nothing is left to
// say (a write that stalled), the socket closes. `interrupt`: what the
// connection waits for ends now, its socket kept so that the protocol can
// still answer (408 to a stalled request body).
enum class on_expiry : unsigned char { interrupt, close };

// The kinds of timeout of one server: the driver's own, then those of the
// protocols it runs.
class timeout_table {
 public:
  static constexpr std::size_t capacity = 16;

  // Throws std::length_error when `capacity` kinds are registered already.
  timeout_kind add(clock::duration timeout, on_expiry action) {
    if (size_ == capacity) throw std::length_error("sluice: too many kinds of timeout");
    kinds_[size_] = {timeout, action};
    return static_cast<timeout_kind>(size_++);
  }

  clock::duration timeout(timeout_kind k) const { return kinds_[index(k)].timeout; }
  on_expiry action(timeout_kind k) const { return kinds_[index(k)].action; }

  static std::size_t index(timeout_kind k) { return static_cast<std::size_t>(k); }

 private:
  struct kind {
    clock::duration timeout{};
    on_expiry action = on_expiry::interrupt;
  };
  std::array<kind, capacity> kinds_{};
  std::size_t size_ = 1;  // kinds_[0] stands for none
};

// A connection's place in the deadline lists.
struct deadline_hook : sluice::detail::intrusive_list_node<deadline_hook> {
  clock::time_point due{};
  // Counts sets and clears, so that an expiry that raced with a later one is
  // recognised as stale.
  std::uint32_t generation = 0;
  timeout_kind kind = timeout_kind::none;
};

// One list per kind of timeout. Every deadline of a kind is "now plus that
// kind's timeout", so a connection whose deadline is set goes to the tail of
// its list and each list stays ordered by deadline: setting or clearing one
// is O(1) and costs no timer operation. A single timer, for the earliest
// head, wakes the server when a deadline has passed. Per connection this
// saves a timer and the wait it keeps pending, and a request/response cycle
// only relinks list nodes.
//
// A timeout of clock::duration::max() (see saturated()) gives a deadline of
// time_point::max(), which never passes and never arms the timer.
//
// When deadlines pass, each connection's on_deadline(kind, generation) is
// dispatched to its own executor, holding only a weak reference: a
// connection is touched on its executor alone, and only while it lives. A
// deadline set or cleared in the meantime has moved the generation on.
//
// Thread safety: all members may be called from any thread.
template <typename Connection>
class deadline_lists : public std::enable_shared_from_this<deadline_lists<Connection>> {
 public:
  deadline_lists(asio::any_io_executor ex, const timeout_table& kinds) : timer_(std::move(ex)), kinds_(kinds) {}

  const timeout_table& kinds() const { return kinds_; }

  void set(deadline_hook& h, timeout_kind kind) {
    const auto due = saturating_add(clock::now(), kinds_.timeout(kind));
    std::lock_guard lock(mutex_);
    unlink(h);
    ++h.generation;
    h.due = due;
    h.kind = kind;
    lists_[timeout_table::index(kind)].push_back(h);
    if (due < armed_) arm(due);
  }

  void clear(deadline_hook& h) {
    std::lock_guard lock(mutex_);
    unlink(h);
    ++h.generation;
    if (empty()) disarm();
  }

 private:
  using list = sluice::detail::intrusive_list<deadline_hook>;

  void unlink(deadline_hook& h) {
    if (h.kind == timeout_kind::none) return;
    lists_[timeout_table::index(h.kind)].erase(h);
    h.kind = timeout_kind::none;
  }

  bool empty() const {
    for (auto& l : lists_)
      if (!l.empty()) return false;
    return true;
  }

  // Under the lock. The pending wait keeps its io_context running, so there
  // is none while no deadline is set.
  void arm(clock::time_point when) {
    armed_ = when;
    timer_.expires_at(when);
    timer_.async_wait(asio::bind_allocator(sluice::detail::exact_allocator<void>(),
                                           [weak = this->weak_from_this(), when](std::error_code ec) {
                                             if (auto self = weak.lock(); self && !ec) self->fire(when);
                                           }));
  }

  void disarm() {
    armed_ = clock::time_point::max();
    timer_.cancel();
  }

  void fire(clock::time_point when) {
    struct expired_one {
      std::weak_ptr<Connection> connection;
      asio::any_io_executor executor;
      timeout_kind kind;
      std::uint32_t generation;
    };
    std::vector<expired_one> expired;
    {
      std::lock_guard lock(mutex_);
      if (armed_ != when) return;  // re-armed for an earlier deadline meanwhile
      armed_ = clock::time_point::max();
      const auto now = clock::now();
      auto next = clock::time_point::max();
      for (auto& l : lists_) {
        while (!l.empty() && l.front().due <= now) {
          auto& c = static_cast<Connection&>(l.front());
          expired.push_back({c.weak_from_this(), c.executor(), c.kind, c.generation});
          unlink(c);
        }
        if (!l.empty() && l.front().due < next) next = l.front().due;
      }
      if (next != clock::time_point::max()) arm(next);
    }
    for (auto& e : expired) {
      asio::dispatch(e.executor, [weak = std::move(e.connection), kind = e.kind, generation = e.generation] {
        if (auto c = weak.lock()) c->on_deadline(kind, generation);
      });
    }
  }

  std::mutex mutex_;
  std::array<list, timeout_table::capacity> lists_{};
  asio::steady_timer timer_;
  clock::time_point armed_ = clock::time_point::max();
  const timeout_table kinds_;
};

}  // namespace sluice::server
