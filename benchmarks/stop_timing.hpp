// What the in-process stop benchmarks (stop_latency, tls_stop) share: the
// handler their HTTP servers run, the heap measure, the timed stop_now(), and
// the median over rounds.
#pragma once

#include "sluice/http/message.hpp"

#include <asio/awaitable.hpp>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

namespace bench {

inline asio::awaitable<sluice::http::response> hello(sluice::http::request&) {
  co_return sluice::http::response::text(200, "Hello, world!\n");
}

inline std::size_t heap_in_use() {
  auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

struct sample {
  double ms;
  double heap_per_conn;
};

// Once `n` connections are open and idle: the heap they hold each (against
// `heap_before`), then stop_now() timed on the server's own clock.
template <typename Server>
asio::awaitable<sample> time_stop(Server& server, std::size_t heap_before, int n) {
  sample result{};
  result.heap_per_conn = double(heap_in_use() - heap_before) / n;
  const auto t0 = std::chrono::steady_clock::now();
  co_await server.stop_now();
  result.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  co_return result;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace bench
