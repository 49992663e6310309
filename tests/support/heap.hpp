// Test support: the process's heap in use, for the tests that pin memory per connection.
// Measured with mallinfo2, which only means something without a sanitizer's allocator: the tests
// check heap_measurable first.
#pragma once

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstddef>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLUICE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SLUICE_TEST_SANITIZED 1
#endif
#endif

namespace sluice::test {

#ifdef SLUICE_TEST_SANITIZED
inline constexpr bool heap_measurable = false;
#else
inline constexpr bool heap_measurable = true;
#endif

inline std::size_t heap_in_use() {
  const auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// Raises the soft descriptor limit so that `connections` loopback connections fit with both
// their ends in this process; false if the hard limit does not allow it.
inline bool allow_connections(std::size_t connections) {
  const rlim_t wanted = 2 * connections + 64;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return false;
  files.rlim_cur = std::max<rlim_t>(files.rlim_cur, std::min<rlim_t>(files.rlim_max, wanted));
  return ::setrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur >= wanted;
}

}  // namespace sluice::test
