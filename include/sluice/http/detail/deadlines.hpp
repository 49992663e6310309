// Internals of the HTTP server: every connection's deadline, with one timer
// for the whole server.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/exact_allocator.hpp"

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
#include <vector>

namespace sluice::http::detail {

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

// Why a deadline was set; what the session reports when it passes.
enum class timeout_kind : unsigned char { none, handshake, header, body, idle, write, linger };
inline constexpr std::size_t timeout_kinds = 7;

// A connection's place in the deadline lists.
struct deadline_hook {
  deadline_hook* prev = nullptr;
  deadline_hook* next = nullptr;
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
  deadline_lists(asio::any_io_executor ex, std::array<clock::duration, timeout_kinds> timeouts)
      : timer_(std::move(ex)), timeouts_(timeouts) {}

  void set(deadline_hook& h, timeout_kind kind) {
    const auto due = saturating_add(clock::now(), timeouts_[static_cast<std::size_t>(kind)]);
    std::lock_guard lock(mutex_);
    unlink(h);
    ++h.generation;
    h.due = due;
    h.kind = kind;
    auto& l = lists_[static_cast<std::size_t>(kind)];
    h.prev = l.tail;
    if (l.tail)
      l.tail->next = &h;
    else
      l.head = &h;
    l.tail = &h;
    if (due < armed_) arm(due);
  }

  void clear(deadline_hook& h) {
    std::lock_guard lock(mutex_);
    unlink(h);
    ++h.generation;
    if (empty()) disarm();
  }

 private:
  struct list {
    deadline_hook* head = nullptr;
    deadline_hook* tail = nullptr;
  };

  void unlink(deadline_hook& h) {
    if (h.kind == timeout_kind::none) return;
    auto& l = lists_[static_cast<std::size_t>(h.kind)];
    (h.prev ? h.prev->next : l.head) = h.next;
    (h.next ? h.next->prev : l.tail) = h.prev;
    h.prev = h.next = nullptr;
    h.kind = timeout_kind::none;
  }

  bool empty() const {
    for (auto& l : lists_)
      if (l.head) return false;
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
        while (l.head && l.head->due <= now) {
          auto& c = static_cast<Connection&>(*l.head);
          expired.push_back({c.weak_from_this(), c.executor(), l.head->kind, l.head->generation});
          unlink(*l.head);
        }
        if (l.head && l.head->due < next) next = l.head->due;
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
  std::array<list, timeout_kinds> lists_{};
  asio::steady_timer timer_;
  clock::time_point armed_ = clock::time_point::max();
  const std::array<clock::duration, timeout_kinds> timeouts_;
};

}  // namespace sluice::http::detail
