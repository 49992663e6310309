// One server on several threads: one io_context run by two threads, and two
// io_contexts with a listener each on one SO_REUSEPORT port.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"

#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>
#include <malloc.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace sluice::test;
namespace http = sluice::http;

namespace {

constexpr auto nothrow = asio::experimental::as_tuple(use_awaitable);
constexpr std::string_view request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

// Makes requests on one connection after another until the server is gone.
awaitable<void> client_loop(tcp::endpoint ep, std::atomic<long>& answered, std::atomic<int>& finished) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    tcp::socket s(ex);
    auto [connect_error] = co_await s.async_connect(ep, nothrow);
    if (connect_error) break;  // the listener is closed
    std::string in;
    for (int i = 0; i < 5; ++i) {
      auto [write_error, written] = co_await asio::async_write(s, asio::buffer(request), nothrow);
      if (write_error) break;
      auto [read_error, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(in), "Hello", nothrow);
      if (read_error) break;
      in.clear();
      ++answered;
    }
  }
  ++finished;
}

awaitable<http::response> hello(http::request&) { co_return http::response::text(200, "Hello, world!\n"); }

std::size_t heap_in_use() {
  auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// Runs `f` on `ex` and waits for its result from this thread.
template <typename T>
T wait_for(asio::any_io_executor ex, asio::awaitable<T> f) {
  std::promise<T> done;
  asio::co_spawn(ex, std::move(f), [&](std::exception_ptr e, T value) {
    if (e)
      done.set_exception(e);
    else
      done.set_value(std::move(value));
  });
  return done.get_future().get();
}

}  // namespace

TEST_CASE("1,000 clients on two server threads, stop_now from a third thread, 100 rounds" * doctest::test_suite("mt")) {
  asio::io_context server_io;  // the default hint: run by several threads, so sessions get strands
  auto server_work = asio::make_work_guard(server_io);
  std::vector<std::thread> server_threads;
  for (int i = 0; i < 2; ++i) server_threads.emplace_back([&] { server_io.run(); });

  asio::io_context client_io(1);
  auto client_work = asio::make_work_guard(client_io);
  std::thread client_thread([&] { client_io.run(); });

  std::size_t fds_after_first_round = 0;
  std::size_t heap_after_warmup = 0;
  constexpr int rounds = 100, clients = 1000;
  for (int round = 0; round < rounds; ++round) {
    auto srv = std::make_unique<http::server>(server_io.get_executor(), hello);
    auto ep = srv->listen(loopback_any);
    std::atomic<long> answered{0};
    std::atomic<int> finished{0};
    for (int c = 0; c < clients; ++c) asio::co_spawn(client_io, client_loop(ep, answered, finished), asio::detached);
    while (answered < 2 * clients) std::this_thread::yield();

    std::thread stopper([&] { wait_for(server_io.get_executor(), srv->stop_now()); });
    stopper.join();
    CHECK(srv->connections().total() == 0);
    while (finished < clients) std::this_thread::yield();
    srv.reset();
    if (round == 0) fds_after_first_round = open_descriptors();  // the reactors' own descriptors exist now
    if (round == 4) heap_after_warmup = heap_in_use();
    REQUIRE(open_descriptors() == fds_after_first_round);
  }
  // Whatever the first rounds left in pools and caches, later rounds do not add to it.
  CHECK(heap_in_use() <= heap_after_warmup + 256 * 1024);

  client_work.reset();
  client_thread.join();
  server_work.reset();
  for (auto& t : server_threads) t.join();
}

TEST_CASE("two io_contexts with a listener each on one SO_REUSEPORT port: both serve, one shutdown drains both" *
          doctest::test_suite("mt")) {
  asio::io_context a(1), b(1);  // one thread each: thread per core
  auto work_a = asio::make_work_guard(a);
  auto work_b = asio::make_work_guard(b);
  std::atomic<int> served_by_a{0}, served_by_b{0};
  http::server_options options;
  options.tcp.reuse_port = true;
  http::server srv(
      a.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        auto ex = co_await asio::this_coro::executor;
        auto& ctx = asio::query(ex, asio::execution::context);
        ++(&ctx == &a ? served_by_a : served_by_b);
        co_return http::response::text(200, "Hello, world!\n");
      },
      options);
  auto ep = srv.listen(loopback_any, a.get_executor());
  CHECK(srv.listen(ep, b.get_executor()) == ep);
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); });

  asio::io_context client_io(1);
  std::atomic<long> answered{0};
  std::atomic<int> finished{0};
  for (int c = 0; c < 64; ++c) asio::co_spawn(client_io, client_loop(ep, answered, finished), asio::detached);
  std::thread client_thread([&] { client_io.run(); });
  while (answered < 1000) std::this_thread::yield();
  CHECK(served_by_a > 0);
  CHECK(served_by_b > 0);

  auto s = wait_for(a.get_executor(), srv.shutdown(std::chrono::seconds(10)));
  CHECK(srv.connections().total() == 0);
  CHECK(s.forced == 0);
  client_thread.join();  // every client loop ends: the port is closed on both contexts
  CHECK(finished == 64);
  work_a.reset();
  work_b.reset();
  ta.join();
  tb.join();
}
