// Internals: exact-size memory for operations that stay pending a long time.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/asio_internals.hpp"

#include <asio/awaitable.hpp>

#include <array>
#include <cstddef>
#include <memory>
#include <utility>

namespace sluice::detail {

// std::allocator by another name. Asio allocates the operation of a handler
// whose allocator is std::allocator from a small per-thread cache of blocks
// sized for whatever completed last; an operation that stays pending for a
// connection's whole idle time then keeps a block larger than it needs. Bound
// to such a handler (asio::bind_allocator), this one takes the exact size.
template <typename T>
struct exact_allocator {
  using value_type = T;
  exact_allocator() noexcept = default;
  template <typename U>
  exact_allocator(const exact_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  friend bool operator==(const exact_allocator&, const exact_allocator&) noexcept { return true; }
};

inline asio::awaitable<void> placeholder_frame() { co_return; }

template <std::size_t... I>
std::array<asio::awaitable<void>, sizeof...(I)> placeholder_frames(std::index_sequence<I...>) {
  return {((void)I, placeholder_frame())...};
}

// The same for the coroutine frame in which use_awaitable starts an
// operation: that frame lives as long as the operation is pending, and Asio
// gives it any block from the thread's cache of recently freed frames that is
// large enough, such as the one a request handler's frame just left (some
// 240 bytes more per idle connection, measured). `start` (which makes the
// awaitable for the operation) runs while unawaited placeholder frames hold
// every cached block, so its frame gets a block of its own size; the
// placeholders give theirs back afterwards.
template <typename Start>
auto in_exact_frame(Start start) {
  auto held = placeholder_frames(std::make_index_sequence<awaitable_frame_cache_size>());
  return start();
}

}  // namespace sluice::detail
