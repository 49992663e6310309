// Test support: the process's heap in use, for the tests that pin memory per connection or
// bound what an attack makes the server hold. Measured with mallinfo2, which only means something
// without a sanitizer's allocator: the tests check heap_measurable first (heap_watch does).
#pragma once

#include "sluice/server/connection_state.hpp"
#include "support/http_client.hpp"

#include <asio/post.hpp>
#include <doctest/doctest.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

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

// The largest heap growth seen at the sample() calls since construction. The clients are in the
// same process: what they allocate counts too (an http_client holds a 16 KiB buffer), so the
// attack's bytes are built before the watch starts and the bounds leave room for the clients.
class heap_watch {
 public:
  void sample() { peak_ = std::max(peak_, heap_in_use()); }
  std::size_t growth() const { return peak_ > start_ ? peak_ - start_ : 0; }
  // Checks the growth against `bound` where the heap can be measured.
  void check(std::size_t bound) const {
    if (!heap_measurable) return;
    MESSAGE("server heap growth: ", growth(), " bytes (bound ", bound, ")");
    CHECK(growth() < bound);
  }

 private:
  std::size_t start_ = heap_in_use();
  std::size_t peak_ = start_;
};

// Raises the soft descriptor limit so that `connections` loopback connections fit with both
// their ends in this process; false if the hard limit does not allow it.
inline bool allow_connections(std::size_t connections) {
  const rlim_t wanted = 2 * connections + 64;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return false;
  files.rlim_cur = std::max<rlim_t>(files.rlim_cur, std::min<rlim_t>(files.rlim_max, wanted));
  return ::setrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur >= wanted;
}

// The server heap each connection holds once it has settled in `state` (idle keep-alive, an
// idle WebSocket): `visit(socket)` connects one client socket and makes its request. Client and
// server share the process, so the clients' sockets are all opened before the measurement and
// driven one after another; one connection first, closed again, warms the per-thread caches
// (parsers, OpenSSL's, Asio's recycled blocks) as in a server that has been running. The server
// runs on `io`, one thread.
template <typename Server, typename Visit>
double heap_per_connection(asio::io_context& io, Server& srv, std::size_t connections,
                           sluice::server::connection_state state, const Visit& visit) {
  const auto visit_each = [&](std::vector<tcp::socket>& clients) -> awaitable<void> {
    for (auto& s : clients) co_await visit(s);
  };
  const auto until_settled = [&](std::size_t n) -> awaitable<void> {
    while (srv.connections()[state] != n || srv.connections().total() != n) co_await asio::post(io, use_awaitable);
  };
  std::vector<tcp::socket> clients;
  clients.emplace_back(io).open(tcp::v4());
  run_guarded(io, [&]() { return visit_each(clients); });
  run_guarded(io, [&]() { return until_settled(1); });
  clients.clear();
  run_guarded(io, [&]() { return until_settled(0); });

  clients.reserve(connections);
  for (std::size_t i = 0; i < connections; ++i) clients.emplace_back(io).open(tcp::v4());
  const std::size_t before = heap_in_use();
  run_guarded(io, [&]() { return visit_each(clients); }, std::chrono::seconds(120));
  run_guarded(io, [&]() { return until_settled(connections); });
  return double(heap_in_use() - before) / double(connections);
}

}  // namespace sluice::test
