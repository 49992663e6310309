// Test support: run coroutines to completion on an io_context, count descriptors.
#pragma once

#include "sluice/config.hpp"

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <utility>

namespace sluice::test {

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace std::chrono_literals;

// Port 0 on 127.0.0.1: the kernel picks a free port, and listen() says which.
inline const tcp::endpoint loopback_any(asio::ip::address_v4::loopback(), 0);

// Runs `f` (a coroutine function) on `io` until it completes, rethrowing what
// it threw. Other work left on `io` stays queued for the next call.
template <typename F>
void run(asio::io_context& io, F&& f) {
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(io, std::forward<F>(f), [&](std::exception_ptr e) {
    error = e;
    done = true;
    io.stop();
  });
  io.restart();
  io.run();
  io.restart();
  if (!done) throw std::logic_error("test coroutine did not complete");
  if (error) std::rethrow_exception(error);
}

inline std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// The count once `io` has created its reactor's own descriptors, which it does
// on first use.
inline std::size_t open_descriptors_with_reactor(asio::io_context& io) {
  tcp::socket s(io);
  s.open(tcp::v4());
  asio::steady_timer t(io);
  t.async_wait([](std::error_code) {});
  t.cancel();
  io.poll();
  io.restart();
  s.close();
  return open_descriptors();
}

inline awaitable<tcp::socket> connect_to(tcp::endpoint ep) {
  tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(ep, use_awaitable);
  co_return s;
}

}  // namespace sluice::test
