// Internals: the one per-thread pool of objects kept for reuse (request
// parsers, read buffers' blocks).
//
// Guarantees: take() and give_back() never block, never lock and never
// allocate (the pool is a fixed array per thread); what the pool holds beyond
// `Capacity` is freed. An object is reused only on the thread that gave it
// back, so objects that connections take and give back once per request cost
// no allocation once the thread is warm, while an idle connection holds none.
// Whatever the pool holds is freed when its thread ends.
//
// Thread safety: each thread has its own pool.
//
//     using parsers = sluice::detail::thread_local_pool<request_parser>;
//     auto p = parsers::take();
//     if (!p) p = std::make_unique<request_parser>(limits);
//     ...
//     parsers::give_back(std::move(p));
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <utility>

namespace sluice::detail {

// `T` may be an array type (char[]) as in std::unique_ptr. `Tag` tells apart
// pools of one type kept for different uses.
template <typename T, typename Tag = T, std::size_t Capacity = 64>
class thread_local_pool {
 public:
  using pointer = std::unique_ptr<T>;

  // An object this thread gave back, or null when there is none.
  static pointer take() noexcept {
    auto& p = pool();
    return p.size == 0 ? pointer() : std::move(p.objects[--p.size]);
  }

  // Keeps `object` for a later take() on this thread, or frees it if the
  // pool is full.
  static void give_back(pointer object) noexcept {
    auto& p = pool();
    if (object && p.size < Capacity) p.objects[p.size++] = std::move(object);
  }

 private:
  struct objects_kept {
    std::array<pointer, Capacity> objects;
    std::size_t size = 0;
  };

  static objects_kept& pool() noexcept {
    thread_local objects_kept kept;
    return kept;
  }
};

}  // namespace sluice::detail
