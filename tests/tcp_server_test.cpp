#include "sluice/tcp/server.hpp"

#include "sluice/net/plain.hpp"
#include "sluice/net/serve_over.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace sluice::test;
using sluice::tcp::server;

namespace {

// Says "+" when it starts, then echoes lines until the peer leaves.
awaitable<void> echo(tcp::socket s) {
  co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
  std::string line;
  for (;;) {
    auto [ec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(line), '\n', nothrow);
    if (ec) co_return;
    co_await asio::async_write(s, asio::buffer(line, n), use_awaitable);
    line.erase(0, n);
  }
}

// Connects and waits for the session's "+", so the session is known to run.
awaitable<tcp::socket> connect_session(tcp::endpoint ep) {
  auto s = co_await connect_to(ep);
  char plus = 0;
  co_await asio::async_read(s, asio::buffer(&plus, 1), use_awaitable);
  REQUIRE(plus == '+');
  co_return s;
}

awaitable<std::string> exchange(tcp::socket& s, std::string line) {
  co_await asio::async_write(s, asio::buffer(line), use_awaitable);
  std::string reply;
  co_await asio::async_read_until(s, asio::dynamic_buffer(reply), '\n', use_awaitable);
  co_return reply;
}

// True once the peer has closed: EOF or reset, after any bytes still queued.
awaitable<bool> sees_close(tcp::socket& s) {
  char buf[256];
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), nothrow);
    if (ec) co_return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
}

}  // namespace

TEST_CASE("stop_now closes 1,000 idle connections and frees every descriptor and the port") {
  asio::io_context io;
  const auto baseline = open_descriptors_with_reactor(io);
  std::vector<tcp::socket> clients;
  tcp::endpoint ep;
  {
    server srv(io.get_executor(), echo);
    ep = srv.listen(loopback_any);
    run(io, [&]() -> awaitable<void> {
      for (int i = 0; i < 1000; ++i) clients.push_back(co_await connect_session(ep));
      CHECK(srv.connections() == 1000);
      CHECK(srv.accepted() == 1000);
      co_await srv.stop_now();
      CHECK(srv.connections() == 0);
      // Only the clients' own sockets are left: every accepted socket and the listener are closed.
      CHECK(open_descriptors() == baseline + 1000);
      for (auto& c : clients) CHECK(co_await sees_close(c));
    });
  }
  CHECK_NOTHROW(tcp::acceptor(io, ep));
  clients.clear();
  CHECK(open_descriptors() == baseline);
}

TEST_CASE("serve_over(net::plain): the session function gets the connected socket, closed when it returns") {
  asio::io_context io;
  auto echo_once = [](tcp::socket& s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    std::string line;
    const std::size_t n = co_await asio::async_read_until(s, asio::dynamic_buffer(line), '\n', use_awaitable);
    co_await asio::async_write(s, asio::buffer(line, n), use_awaitable);
  };
  server srv(io.get_executor(), sluice::net::serve_over(sluice::net::plain{}, echo_once));
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto c = co_await connect_session(ep);
    CHECK(co_await exchange(c, "ping\n") == "ping\n");
    CHECK(co_await sees_close(c));
    co_await srv.stop_now();
    CHECK(srv.accepted() == 1);
    CHECK(srv.connections() == 0);
  });
}

TEST_CASE("stop_now cancels a session blocked writing to a client that never reads") {
  asio::io_context io;
  server srv(io.get_executor(), [](tcp::socket) -> awaitable<void> { co_return; });
  std::error_code write_error;
  std::size_t written = 0;
  const std::string flood(64 << 20, 'x');
  server blocked(io.get_executor(), [&](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    std::tie(write_error, written) = co_await asio::async_write(s, asio::buffer(flood), nothrow);
  });
  auto ep = blocked.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto client = co_await connect_session(ep);
    co_await blocked.stop_now();
    CHECK(write_error == asio::error::operation_aborted);
    CHECK(written < flood.size());
  });
}

TEST_CASE("stop_now cancels a session waiting on a one-hour timer, and waits for its clean-up") {
  asio::io_context io;
  bool timer_aborted = false;
  bool cleanup_done = false;
  server srv(io.get_executor(), [&](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    asio::steady_timer hour(s.get_executor(), 1h);
    auto [ec] = co_await hour.async_wait(nothrow);
    timer_aborted = ec == asio::error::operation_aborted;
    co_await asio::this_coro::reset_cancellation_state();
    co_await asio::async_write(s, asio::buffer("bye\n", 4), use_awaitable);
    cleanup_done = true;
  });
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto client = co_await connect_session(ep);
    co_await srv.stop_now();
    CHECK(timer_aborted);
    CHECK(cleanup_done);
    std::string bye;
    co_await asio::async_read_until(client, asio::dynamic_buffer(bye), '\n', use_awaitable);
    CHECK(bye == "bye\n");
    CHECK(co_await sees_close(client));
  });
}

TEST_CASE("the rest of the io_context keeps running: a ticker and a second server") {
  asio::io_context io;
  std::atomic<int> ticks{0};
  asio::steady_timer ticker(io);
  bool ticking = true;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        while (ticking) {
          ticker.expires_after(1ms);
          co_await ticker.async_wait(nothrow);
          ++ticks;
        }
      },
      asio::detached);

  server first(io.get_executor(), echo);
  server second(io.get_executor(), echo);
  auto ep1 = first.listen(loopback_any);
  auto ep2 = second.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto a = co_await connect_session(ep1);
    auto b = co_await connect_session(ep2);
    co_await first.stop_now();
    CHECK(co_await sees_close(a));
    CHECK(co_await exchange(b, "still here\n") == "still here\n");
    auto c = co_await connect_session(ep2);
    CHECK(co_await exchange(c, "new client\n") == "new client\n");
    const int seen = ticks;
    asio::steady_timer t(io);
    while (ticks < seen + 3) {
      t.expires_after(1ms);
      co_await t.async_wait(use_awaitable);
    }
    ticking = false;
    co_await second.stop_now();
  });
  CHECK(ticks >= 3);
}

TEST_CASE("stop_now twice, concurrently, and after the server stopped") {
  asio::io_context io;
  server srv(io.get_executor(), echo);
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    std::vector<tcp::socket> clients;
    for (int i = 0; i < 10; ++i) clients.push_back(co_await connect_session(ep));
    int finished = 0;
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < 2; ++i)
      asio::co_spawn(ex, srv.stop_now(), [&](std::exception_ptr e) {
        CHECK(!e);
        ++finished;
      });
    co_await srv.stop_now();
    co_await srv.stop_now();
    while (finished < 2) co_await asio::post(ex, use_awaitable);
    CHECK(srv.connections() == 0);
  });
}

TEST_CASE("stop_now from inside a session stops the others and throws operation_aborted in the caller") {
  asio::io_context io;
  std::error_code caller_saw;
  server* self = nullptr;
  server srv(io.get_executor(), [&](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    std::string line;
    co_await asio::async_read_until(s, asio::dynamic_buffer(line), '\n', use_awaitable);
    try {
      co_await self->stop_now();
    } catch (const std::system_error& e) {
      caller_saw = e.code();
      throw;
    }
  });
  self = &srv;
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto idle = co_await connect_session(ep);
    auto caller = co_await connect_session(ep);
    co_await asio::async_write(caller, asio::buffer("stop\n", 5), use_awaitable);
    co_await srv.join();
    CHECK(caller_saw == asio::error::operation_aborted);
    CHECK(srv.connections() == 0);
    CHECK(co_await sees_close(idle));
    CHECK(co_await sees_close(caller));
  });
}

TEST_CASE("stop_accepting frees the port while a session finishes its exchange") {
  asio::io_context io;
  server old_server(io.get_executor(), echo);
  auto ep = old_server.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto client = co_await connect_session(ep);
    CHECK(co_await exchange(client, "one\n") == "one\n");
    old_server.stop_accepting();
    server successor(io.get_executor(), echo);
    CHECK(successor.listen(ep) == ep);
    CHECK(co_await exchange(client, "two\n") == "two\n");
    auto fresh = co_await connect_session(ep);
    CHECK(successor.accepted() == 1);
    CHECK(old_server.accepted() == 1);
    CHECK(co_await exchange(fresh, "three\n") == "three\n");
    co_await old_server.stop_now();
    co_await successor.stop_now();
  });
}

TEST_CASE("an exception from one session reaches the handler and spares the others") {
  asio::io_context io;
  server srv(io.get_executor(), [](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    std::string line;
    for (;;) {
      auto n = co_await asio::async_read_until(s, asio::dynamic_buffer(line), '\n', use_awaitable);
      if (line.starts_with("throw")) throw std::runtime_error("session failed on purpose");
      co_await asio::async_write(s, asio::buffer(line, n), use_awaitable);
      line.erase(0, n);
    }
  });
  std::vector<std::string> caught;
  srv.set_exception_handler([&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      caught.push_back(ex.what());
    }
  });
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto good = co_await connect_session(ep);
    auto bad = co_await connect_session(ep);
    co_await asio::async_write(bad, asio::buffer("throw\n", 6), use_awaitable);
    CHECK(co_await sees_close(bad));
    CHECK(co_await exchange(good, "fine\n") == "fine\n");
    REQUIRE(caught.size() == 1);
    CHECK(caught[0] == "session failed on purpose");
    co_await srv.stop_now();
  });
}

TEST_CASE("listens on IPv4 and IPv6 at once and reports the chosen ports") {
  asio::io_context io;
  server srv(io.get_executor(), echo);
  auto v4 = srv.listen("127.0.0.1", 0);
  auto v6 = srv.listen("::1", 0);
  CHECK(v4.port() != 0);
  CHECK(v6.port() != 0);
  CHECK(v6.address().is_v6());
  CHECK(srv.local_endpoints().size() == 2);
  run(io, [&]() -> awaitable<void> {
    auto a = co_await connect_session(v4);
    auto b = co_await connect_session(v6);
    CHECK(co_await exchange(a, "4\n") == "4\n");
    CHECK(co_await exchange(b, "6\n") == "6\n");
    co_await srv.stop_now();
  });
}

TEST_CASE("EMFILE: the accept loop backs off, keeps its sessions and accepts again when descriptors free up") {
  asio::io_context io;
  std::vector<std::chrono::milliseconds> delays;
  std::error_code last_error;
  sluice::tcp::server_options options;
  options.accept_backoff = 1ms;
  rlimit original{};
  getrlimit(RLIMIT_NOFILE, &original);
  options.on_accept_error = [&](const std::error_code& ec, std::chrono::milliseconds retry_in) {
    last_error = ec;
    delays.push_back(retry_in);
    if (delays.size() == 4) setrlimit(RLIMIT_NOFILE, &original);  // descriptors become available again
  };
  server srv(io.get_executor(), echo, options);
  auto ep = srv.listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    auto existing = co_await connect_session(ep);
    tcp::socket waiting(io);
    waiting.open(tcp::v4());
    // A limit at the lowest free descriptor number makes every new descriptor fail with EMFILE.
    const int lowest_free = ::dup(0);
    ::close(lowest_free);
    rlimit tight = original;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free);
    setrlimit(RLIMIT_NOFILE, &tight);
    co_await waiting.async_connect(ep, use_awaitable);
    char plus = 0;
    co_await asio::async_read(waiting, asio::buffer(&plus, 1), use_awaitable);
    CHECK(plus == '+');
    CHECK(co_await exchange(existing, "kept\n") == "kept\n");
    co_await srv.stop_now();
  });
  setrlimit(RLIMIT_NOFILE, &original);
  CHECK(last_error == asio::error::no_descriptors);
  REQUIRE(delays.size() >= 4);
  CHECK(delays[0] == 1ms);
  CHECK(delays[1] == 2ms);
  CHECK(delays[2] == 4ms);
  CHECK(delays[3] == 8ms);
}

TEST_CASE("a server destroyed without a stop closes its listener and sessions once the loop runs") {
  asio::io_context io;
  const auto baseline = open_descriptors_with_reactor(io);
  std::vector<tcp::socket> clients;
  auto srv = std::make_unique<server>(io.get_executor(), echo);
  auto ep = srv->listen(loopback_any);
  run(io, [&]() -> awaitable<void> {
    for (int i = 0; i < 5; ++i) clients.push_back(co_await connect_session(ep));
  });
  srv.reset();
  CHECK_NOTHROW(tcp::acceptor(io, ep));
  run(io, [&]() -> awaitable<void> {
    for (auto& c : clients) CHECK(co_await sees_close(c));
  });
  io.run();  // whatever is left of the sessions runs to its end
  clients.clear();
  CHECK(open_descriptors() == baseline);
}

TEST_CASE("stop_now from another thread while the io_context runs on two threads" * doctest::test_suite("mt")) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 2; ++i) runners.emplace_back([&] { io.run(); });

  for (int round = 0; round < 10; ++round) {
    server srv(io.get_executor(), echo);
    auto ep = srv.listen(loopback_any);
    std::vector<std::thread> clients;
    std::atomic<int> connected{0};
    std::atomic<bool> release{false};
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&] {
        asio::io_context client_io;
        std::vector<tcp::socket> socks;
        for (int i = 0; i < 25; ++i) {
          socks.emplace_back(client_io);
          socks.back().connect(ep);
          char plus;
          asio::read(socks.back(), asio::buffer(&plus, 1));
          ++connected;
        }
        while (!release) std::this_thread::yield();
        for (auto& s : socks) {
          char b;
          std::error_code ec;
          s.read_some(asio::buffer(&b, 1), ec);
          CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));
        }
      });
    }
    while (connected < 100) std::this_thread::yield();
    std::promise<void> stopped;
    std::thread stopper([&] {
      asio::co_spawn(io, srv.stop_now(), [&](std::exception_ptr e) {
        if (e)
          stopped.set_exception(e);
        else
          stopped.set_value();
      });
    });
    std::thread second([&] {
      std::promise<void> also;
      asio::co_spawn(asio::make_strand(io), srv.stop_now(), [&](std::exception_ptr) { also.set_value(); });
      also.get_future().get();
    });
    stopped.get_future().get();
    second.join();
    stopper.join();
    CHECK(srv.connections() == 0);
    release = true;
    for (auto& t : clients) t.join();
  }
  guard.reset();
  for (auto& t : runners) t.join();
}

// Issue 9: listen() once a stop has begun, exceptions in the accept loop, the connection limit,
// concurrency hints without Asio's locking, the back-off's doubling. ------------------------------

namespace {

// Answers "+" and then waits for the peer to leave.
awaitable<void> hold(tcp::socket s) {
  co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
  char b;
  co_await s.async_read_some(asio::buffer(&b, 1), nothrow);
}

// The messages of the exceptions handed to a server's exception handler.
sluice::scope::exception_handler collect(std::vector<std::string>& messages) {
  return [&messages](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      messages.push_back(ex.what());
    }
  };
}

// The lowest free descriptor becomes the soft limit: every new descriptor fails with EMFILE
// until `original` is restored. Accept once before: UBSan's first type check of the accept's
// completion needs a descriptor, and reports a false error without one.
void exhaust_descriptors(const rlimit& original) {
  const int lowest_free = ::dup(0);
  ::close(lowest_free);
  rlimit tight = original;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);
  setrlimit(RLIMIT_NOFILE, &tight);
}

}  // namespace

TEST_CASE("listen and adopt during stop_now throw server_stopped, and stop_now completes") {
  asio::io_context io;
  event cleaning(io.get_executor()), release(io.get_executor());
  server srv(io.get_executor(), [&](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("+", 1), use_awaitable);
    asio::steady_timer hour(s.get_executor(), 1h);
    co_await hour.async_wait(nothrow);
    co_await asio::this_coro::reset_cancellation_state();
    cleaning.set();
    co_await release.wait();  // the stop is under way until the test says so
  });
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto client = co_await connect_session(ep);
    event stopped(io.get_executor());
    asio::co_spawn(io, srv.stop_now(), [&](std::exception_ptr) { stopped.set(); });
    co_await cleaning.wait();
    CHECK_THROWS_AS(srv.listen(loopback_any), sluice::tcp::server_stopped);
    CHECK_THROWS_AS(srv.adopt(tcp::acceptor(io, loopback_any)), sluice::tcp::server_stopped);
    release.set();
    co_await stopped.wait();
    CHECK(srv.local_endpoints().size() == 1);
  });
}

TEST_CASE("listen and adopt after stop_now or request_stop throw server_stopped; stop_accepting alone does not") {
  asio::io_context io;
  server srv(io.get_executor(), echo);
  srv.listen(loopback_any);
  srv.stop_accepting();
  auto ep = srv.listen(loopback_any);  // a pause, not a stop: listening again is allowed
  run(io, [&]() -> awaitable<void> {
    co_await srv.stop_now();
    try {
      srv.listen(ep);
      FAIL("listen after stop_now did not throw");
    } catch (const sluice::tcp::server_stopped& e) {
      CHECK(std::string(e.what()).find("stopping or stopped") != std::string::npos);
    }
    tcp::acceptor acceptor(io, loopback_any);
    CHECK_THROWS_AS(srv.adopt(std::move(acceptor)), sluice::tcp::server_stopped);
    CHECK_FALSE(acceptor.is_open());
  });
  CHECK_NOTHROW(tcp::acceptor(io, ep));  // the port stayed free

  server other(io.get_executor(), echo);
  other.request_stop();
  CHECK_THROWS_AS(other.listen(loopback_any), sluice::tcp::server_stopped);
}

TEST_CASE("a session function that throws costs its one connection; the accept loop accepts on") {
  asio::io_context io;
  int calls = 0;
  server srv(io.get_executor(), [&](tcp::socket s) -> awaitable<void> {
    if (++calls == 1) throw std::runtime_error("no session for you");
    return echo(std::move(s));
  });
  std::vector<std::string> caught;
  srv.set_exception_handler(collect(caught));
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto refused = co_await connect_to(ep);
    CHECK(co_await sees_close(refused));
    auto served = co_await connect_session(ep);
    CHECK(co_await exchange(served, "on\n") == "on\n");
    REQUIRE(caught.size() == 1);
    CHECK(caught[0] == "no session for you");
    co_await srv.stop_now();
  });
}

TEST_CASE("an on_accept_error that throws is reported and the accept loop backs off and accepts on") {
  asio::io_context io;
  rlimit original{};
  getrlimit(RLIMIT_NOFILE, &original);
  sluice::tcp::server_options options;
  options.accept_backoff = 1ms;
  options.on_accept_error = [&](const std::error_code&, std::chrono::milliseconds) {
    setrlimit(RLIMIT_NOFILE, &original);
    throw std::runtime_error("observer failed");
  };
  server srv(io.get_executor(), echo, options);
  std::vector<std::string> caught;
  srv.set_exception_handler(collect(caught));
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto warm = co_await connect_session(ep);
    tcp::socket waiting(io);
    waiting.open(tcp::v4());
    exhaust_descriptors(original);
    co_await waiting.async_connect(ep, use_awaitable);
    char plus = 0;
    co_await asio::async_read(waiting, asio::buffer(&plus, 1), use_awaitable);
    CHECK(plus == '+');
    REQUIRE(!caught.empty());
    CHECK(caught[0] == "observer failed");
    co_await srv.stop_now();
  });
  setrlimit(RLIMIT_NOFILE, &original);
}

TEST_CASE("the back-off saturates at accept_backoff_max for the largest durations") {
  asio::io_context io;
  rlimit original{};
  getrlimit(RLIMIT_NOFILE, &original);
  event failed(io.get_executor());
  std::vector<std::chrono::milliseconds> delays;
  sluice::tcp::server_options options;
  options.accept_backoff = options.accept_backoff_max = std::chrono::milliseconds::max();
  options.on_accept_error = [&](const std::error_code&, std::chrono::milliseconds retry_in) {
    setrlimit(RLIMIT_NOFILE, &original);
    delays.push_back(retry_in);
    failed.set();
  };
  server srv(io.get_executor(), echo, options);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto warm = co_await connect_session(ep);
    tcp::socket waiting(io);
    waiting.open(tcp::v4());
    exhaust_descriptors(original);
    co_await waiting.async_connect(ep, use_awaitable);
    co_await failed.wait();
    co_await srv.stop_now();  // ends the back-off, after which the next one is computed
  });
  setrlimit(RLIMIT_NOFILE, &original);
  REQUIRE(delays.size() == 1);
  CHECK(delays[0] == std::chrono::milliseconds::max());
}

TEST_CASE("max_connections defaults to three quarters of the soft descriptor limit") {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  REQUIRE(limit.rlim_cur != RLIM_INFINITY);
  CHECK(sluice::tcp::server_options{}.max_connections == limit.rlim_cur / 4 * 3);
}

TEST_CASE("at max_connections the server keeps its sessions and accepts the next one when one ends") {
  asio::io_context io;
  sluice::tcp::server_options options;
  options.max_connections = 2;
  server srv(io.get_executor(), echo, options);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto a = co_await connect_session(ep);
    auto b = co_await connect_session(ep);
    auto waiting = co_await connect_to(ep);  // completes in the kernel's backlog
    CHECK(co_await exchange(a, "a\n") == "a\n");
    CHECK(co_await exchange(b, "b\n") == "b\n");
    CHECK(srv.accepted() == 2);
    CHECK(srv.connections() == 2);
    a.close();
    char plus = 0;
    co_await asio::async_read(waiting, asio::buffer(&plus, 1), use_awaitable);
    CHECK(plus == '+');
    CHECK(co_await exchange(waiting, "c\n") == "c\n");
    CHECK(co_await exchange(b, "b\n") == "b\n");
    CHECK(srv.accepted() == 3);
    CHECK(srv.refused() == 0);
    co_await srv.stop_now();
  });
}

TEST_CASE("refuse_session gets the connections beyond max_connections, at most max_refusing at once") {
  asio::io_context io;
  sluice::tcp::server_options options;
  options.max_connections = 1;
  options.max_refusing = 1;
  options.refuse_session = [](tcp::socket s) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer("-", 1), use_awaitable);
    char b;
    co_await s.async_read_some(asio::buffer(&b, 1), nothrow);  // held until the peer leaves
  };
  server srv(io.get_executor(), hold, options);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto served = co_await connect_session(ep);
    auto refused = co_await connect_to(ep);
    char sign = 0;
    co_await asio::async_read(refused, asio::buffer(&sign, 1), use_awaitable);
    CHECK(sign == '-');
    CHECK(srv.refused() == 1);
    auto waiting = co_await connect_to(ep);  // past max_refusing too: left in the backlog
    refused.close();
    co_await asio::async_read(waiting, asio::buffer(&sign, 1), use_awaitable);
    CHECK(sign == '-');
    CHECK(srv.refused() == 2);
    CHECK(srv.accepted() == 3);
    co_await srv.stop_now();
  });
}

TEST_CASE("io_contexts whose concurrency hint disables Asio's locking are refused") {
  asio::io_context unsafe(ASIO_CONCURRENCY_HINT_UNSAFE);
  asio::io_context unsafe_io(ASIO_CONCURRENCY_HINT_UNSAFE_IO);
  asio::io_context one(1);
  CHECK_THROWS_AS(server(unsafe.get_executor(), echo), std::invalid_argument);
  CHECK_THROWS_AS(server(unsafe_io.get_executor(), echo), std::invalid_argument);
  server srv(one.get_executor(), echo);
  CHECK_THROWS_AS(srv.listen(loopback_any, unsafe_io.get_executor()), std::invalid_argument);
  CHECK_THROWS_AS(srv.adopt(tcp::acceptor(unsafe, loopback_any)), std::invalid_argument);
  CHECK(srv.local_endpoints().empty());
  CHECK_NOTHROW(srv.listen(loopback_any));
}

TEST_CASE("a server destroyed before its io_context ever ran, then the io_context, leave nothing behind") {
  auto io = std::make_unique<asio::io_context>();
  auto srv = std::make_unique<server>(io->get_executor(), echo);
  srv->listen(loopback_any);
  srv->listen(loopback_any);
  srv.reset();
  io.reset();  // destroys the accept loops' frames, which held the server's last state
}

TEST_CASE("max_connections holds with two threads: clients are served in turn, never more at once" *
          doctest::test_suite("mt")) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 2; ++i) runners.emplace_back([&] { io.run(); });
  std::atomic<int> open{0}, most{0};
  sluice::tcp::server_options options;
  options.max_connections = 2;
  server srv(
      io.get_executor(),
      [&](tcp::socket s) -> awaitable<void> {
        const int now = ++open;
        for (int seen = most; now > seen && !most.compare_exchange_weak(seen, now);) {
        }
        co_await hold(std::move(s));
        --open;
      },
      options);
  auto ep = srv.listen(loopback_any);
  std::vector<std::thread> clients;
  std::atomic<int> served{0};
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        asio::io_context client_io;
        tcp::socket s(client_io);
        s.connect(ep);
        char plus = 0;
        asio::read(s, asio::buffer(&plus, 1));
        if (plus == '+') ++served;
      }
    });
  }
  for (auto& t : clients) t.join();
  std::promise<void> stopped;
  asio::co_spawn(io, srv.stop_now(), [&](std::exception_ptr) { stopped.set_value(); });
  stopped.get_future().get();
  guard.reset();
  for (auto& t : runners) t.join();
  CHECK(served == 40);
  CHECK(most <= 2);
  CHECK(srv.accepted() == 40);
}
