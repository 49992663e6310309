// Internals: an allocator for operations that stay pending a long time.
#pragma once

#include <cstddef>
#include <memory>

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

}  // namespace sluice::detail
