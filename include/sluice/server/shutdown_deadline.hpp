// Internals of the servers: the deadline shutdown() set, as handlers and
// protocols see it (http::request::shutdown_deadline()).
//
// Guarantees: empty until shutdown() begins; then the earliest deadline any
// shutdown() call set (time_point::max() for none), never changed back.
// Stored before the server says it is draining, with release ordering, so a
// handler that saw server_draining() also sees the deadline.
//
// Thread safety: set() and get() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>

namespace sluice::server {

class shutdown_deadline {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  void set(time_point deadline) {
    const auto ticks = deadline.time_since_epoch().count();
    auto held = ticks_.load(std::memory_order_relaxed);
    while ((held == unset || ticks < held) &&
           !ticks_.compare_exchange_weak(held, ticks, std::memory_order_release, std::memory_order_relaxed)) {
    }
  }

  std::optional<time_point> get() const {
    const auto ticks = ticks_.load(std::memory_order_acquire);
    if (ticks == unset) return std::nullopt;
    return time_point(time_point::duration(ticks));
  }

 private:
  // No steady_clock reading is this far in the past.
  static constexpr auto unset = time_point::duration::min().count();
  std::atomic<time_point::rep> ticks_{unset};
};

}  // namespace sluice::server
