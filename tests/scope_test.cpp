#include "sluice/scope.hpp"

#include "support/async_test.hpp"

#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace sluice::test;
using sluice::scope;

namespace {

awaitable<void> wait_an_hour() {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  co_await t.async_wait(use_awaitable);
}

// Records, from its destructor, that a task's frame is gone.
struct frame_probe {
  std::atomic<int>* destroyed;
  ~frame_probe() { destroyed->fetch_add(1); }
};

}  // namespace

TEST_CASE("join on an empty scope completes at once") {
  asio::io_context io;
  scope s;
  run(io, [&]() -> awaitable<void> { co_await s.join(); });
  CHECK(s.size() == 0);
}

TEST_CASE("join completes after the last task, once its frame is destroyed") {
  asio::io_context io;
  scope s;
  std::atomic<int> destroyed{0};
  asio::steady_timer gate(io, 1h);
  for (int i = 0; i < 3; ++i) {
    s.spawn(io.get_executor(), [&]() -> awaitable<void> {
      frame_probe probe{&destroyed};
      co_await gate.async_wait(asio::experimental::as_tuple(use_awaitable));
    });
  }
  CHECK(s.size() == 3);
  run(io, [&]() -> awaitable<void> {
    asio::post(io, [&] { gate.cancel(); });
    co_await s.join();
    CHECK(destroyed == 3);
    CHECK(s.size() == 0);
  });
}

TEST_CASE("request_stop cancels timers, nested co_awaits and socket reads") {
  asio::io_context io;
  scope s;
  std::vector<std::string> ended;
  auto note = [&](std::string what) { ended.push_back(std::move(what)); };

  s.spawn(io.get_executor(), [&]() -> awaitable<void> {
    try {
      co_await wait_an_hour();
    } catch (const std::system_error& e) {
      CHECK(e.code() == asio::error::operation_aborted);
      note("nested timer");
    }
  });
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  auto server_side = std::make_shared<tcp::socket>(acceptor.accept());
  s.spawn(io.get_executor(), [&, server_side]() -> awaitable<void> {
    char byte;
    auto [ec, n] =
        co_await server_side->async_read_some(asio::buffer(&byte, 1), asio::experimental::as_tuple(use_awaitable));
    CHECK(ec == asio::error::operation_aborted);
    note("socket read");
  });

  run(io, [&]() -> awaitable<void> {
    co_await s.stop();
    CHECK(ended.size() == 2);
  });
}

TEST_CASE("spawn after stop is refused with scope_closed") {
  asio::io_context io;
  scope s;
  s.request_stop();
  CHECK(s.stop_requested());
  CHECK_THROWS_AS(s.spawn(io.get_executor(), []() -> awaitable<void> { co_return; }), sluice::scope_closed);
  CHECK_FALSE(s.try_spawn(io.get_executor(), []() -> awaitable<void> { co_return; }));
  CHECK(s.size() == 0);
}

TEST_CASE("asynchronous clean-up after cancellation is awaited by join") {
  asio::io_context io;
  scope s;
  bool cleaned_up = false;
  s.spawn(io.get_executor(), [&]() -> awaitable<void> {
    try {
      co_await wait_an_hour();
    } catch (const std::system_error&) {
    }
    co_await asio::this_coro::reset_cancellation_state();
    // A real asynchronous step: a zero-length timer completes on a later turn of the loop.
    asio::steady_timer t(co_await asio::this_coro::executor, 0ms);
    co_await t.async_wait(use_awaitable);
    co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
    cleaned_up = true;
  });
  run(io, [&]() -> awaitable<void> {
    co_await s.stop();
    CHECK(cleaned_up);
  });
}

TEST_CASE("an escaping exception reaches the handler and spares the other tasks") {
  asio::io_context io;
  scope s;
  std::vector<std::string> caught;
  s.set_exception_handler([&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      caught.push_back(ex.what());
    }
  });
  bool survivor_cancelled = false;
  s.spawn(io.get_executor(), [&]() -> awaitable<void> {
    try {
      co_await wait_an_hour();
    } catch (const std::system_error&) {
      survivor_cancelled = true;
      throw;  // cancellation after stop is not reported
    }
  });
  s.spawn(io.get_executor(), []() -> awaitable<void> {
    co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
    throw std::runtime_error("boom");
  });
  run(io, [&]() -> awaitable<void> {
    while (caught.empty()) co_await asio::post(io, use_awaitable);
    CHECK(s.size() == 1);
    co_await s.stop();
  });
  CHECK(survivor_cancelled);
  REQUIRE(caught.size() == 1);
  CHECK(caught[0] == "boom");
}

TEST_CASE("join from inside a stopped task throws operation_aborted instead of waiting for itself") {
  asio::io_context io;
  scope s;
  bool inner_aborted = false;
  s.spawn(io.get_executor(), [&]() -> awaitable<void> {
    try {
      co_await s.stop();
    } catch (const std::system_error& e) {
      inner_aborted = e.code() == asio::error::operation_aborted;
    }
  });
  s.spawn(io.get_executor(), wait_an_hour());
  run(io, [&]() -> awaitable<void> { co_await s.join(); });
  CHECK(inner_aborted);
  CHECK(s.size() == 0);
}

TEST_CASE("a cancelled join completes with operation_aborted and leaves the scope intact") {
  asio::io_context io;
  scope s;
  scope outer;
  s.spawn(io.get_executor(), wait_an_hour());
  bool join_aborted = false;
  outer.spawn(io.get_executor(), [&]() -> awaitable<void> {
    try {
      co_await s.join();
    } catch (const std::system_error& e) {
      join_aborted = e.code() == asio::error::operation_aborted;
    }
  });
  run(io, [&]() -> awaitable<void> {
    co_await outer.stop();
    CHECK(join_aborted);
    CHECK(s.size() == 1);
    co_await s.stop();
  });
}

TEST_CASE("spawn, stop and join from several threads while the io_context runs on four" * doctest::test_suite("mt")) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 4; ++i) runners.emplace_back([&] { io.run(); });

  for (int round = 0; round < 20; ++round) {
    scope s;
    std::atomic<int> destroyed{0};
    std::atomic<int> started{0};
    constexpr int per_thread = 50;
    std::vector<std::thread> spawners;
    for (int t = 0; t < 3; ++t) {
      spawners.emplace_back([&] {
        for (int i = 0; i < per_thread; ++i) {
          s.spawn(asio::make_strand(io), [&]() -> awaitable<void> {
            frame_probe probe{&destroyed};
            started.fetch_add(1);
            co_await wait_an_hour();
          });
        }
      });
    }
    for (auto& t : spawners) t.join();
    while (started.load() < 3 * per_thread) std::this_thread::yield();

    std::promise<void> stopped;
    std::thread stopper([&] {
      asio::co_spawn(asio::make_strand(io), s.stop(), [&](std::exception_ptr e) {
        if (e)
          stopped.set_exception(e);
        else
          stopped.set_value();
      });
    });
    stopped.get_future().get();
    stopper.join();
    CHECK(destroyed.load() == 3 * per_thread);
    CHECK(s.size() == 0);
  }
  guard.reset();
  for (auto& t : runners) t.join();
}

TEST_CASE("a stop that races spawns on other threads still reaches every task" * doctest::test_suite("mt")) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 2; ++i) runners.emplace_back([&] { io.run(); });

  std::atomic<int> spawned{0}, destroyed{0};  // outlive the io_context, which may hold frames on failure
  for (int round = 0; round < 200; ++round) {
    scope s;
    spawned = 0;
    destroyed = 0;
    std::vector<std::thread> spawners;
    for (int t = 0; t < 2; ++t) {
      spawners.emplace_back([&] {
        // Spawns until refused, so that some spawns straddle the stop.
        while (s.try_spawn(asio::make_strand(io), [&]() -> awaitable<void> {
          frame_probe probe{&destroyed};
          co_await wait_an_hour();
        }))
          spawned.fetch_add(1);
      });
    }
    while (spawned.load() < 20) std::this_thread::yield();

    std::promise<void> stopped;
    asio::co_spawn(asio::make_strand(io), s.stop(), [&](std::exception_ptr e) {
      if (e)
        stopped.set_exception(e);
      else
        stopped.set_value();
    });
    for (auto& t : spawners) t.join();
    // A lost cancellation leaves a task waiting its hour: fail instead of hanging.
    auto done = stopped.get_future();
    if (done.wait_for(60s) != std::future_status::ready) {
      FAIL_CHECK("round ", round, ": a task missed the stop");
      io.stop();
      break;
    }
    done.get();
    CHECK(destroyed.load() == spawned.load());
    CHECK(s.size() == 0);
  }
  guard.reset();
  for (auto& t : runners) t.join();
}

// ---------------------------------------------------------------------------
// Destroying an io_context destroys the coroutine frames it holds, those of
// tasks and those of joiners (issue 9, item 2). Whichever of scope and
// io_context goes first, and wherever the joiner runs, a task leaves the scope
// as its frame goes, and a pending join is either woken or destroyed with its
// own io_context: no dangling pointer, no leak.

namespace {

// Awaits s.join() and notes that it returned; `destroyed` counts its frame's end.
awaitable<void> join_and_note(scope& s, std::atomic<int>& destroyed, std::atomic<bool>& joined) {
  frame_probe probe{&destroyed};
  co_await s.join();
  joined = true;
}

void spawn_probed_task(scope& s, const asio::any_io_executor& ex, std::atomic<int>& destroyed) {
  s.spawn(ex, [&destroyed]() -> awaitable<void> {
    frame_probe probe{&destroyed};
    co_await wait_an_hour();
  });
}

}  // namespace

TEST_CASE("a task whose io_context is destroyed leaves the scope, and a join pending there goes with it") {
  scope s;  // outlives the io_context
  std::atomic<int> destroyed{0};
  std::atomic<bool> joined{false};
  {
    asio::io_context io;
    spawn_probed_task(s, io.get_executor(), destroyed);
    asio::co_spawn(io, join_and_note(s, destroyed, joined), asio::detached);
    io.poll();
    REQUIRE(s.size() == 1);
  }
  CHECK(destroyed == 2);
  CHECK_FALSE(joined);
  CHECK(s.size() == 0);
  s.request_stop();  // walks the list of tasks: nothing may dangle there
}

TEST_CASE("a scope destroyed before its io_context: the pending join ends with the io_context") {
  std::atomic<int> destroyed{0};
  std::atomic<bool> joined{false};
  std::optional<asio::io_context> io(std::in_place);
  {
    scope s;
    spawn_probed_task(s, io->get_executor(), destroyed);
    asio::co_spawn(*io, join_and_note(s, destroyed, joined), asio::detached);
    io->poll();
    REQUIRE(s.size() == 1);
  }  // ~scope requests stop and does not wait
  SUBCASE("the io_context is destroyed without running again: the joiner is destroyed") {
    io.reset();
    CHECK(destroyed == 2);
    CHECK_FALSE(joined);
  }
  SUBCASE("the io_context runs on: the joiner completes, touching nothing of the scope") {
    io->run();
    CHECK(destroyed == 2);
    CHECK(joined);
  }
}

TEST_CASE("a join on another io_context is woken when the tasks' io_context is destroyed" * doctest::test_suite("mt")) {
  scope s;
  std::atomic<int> destroyed{0};
  std::atomic<bool> joined{false};
  asio::io_context joiner_io;
  std::optional<asio::io_context> tasks_io(std::in_place);
  spawn_probed_task(s, tasks_io->get_executor(), destroyed);
  tasks_io->poll();
  asio::co_spawn(joiner_io, join_and_note(s, destroyed, joined), asio::detached);
  joiner_io.poll();
  REQUIRE(s.size() == 1);
  // The pending join is the runner's only work: run() returns once the joiner has finished.
  std::thread runner([&] { joiner_io.run_for(60s); });
  tasks_io.reset();
  runner.join();
  CHECK(joined);
  CHECK(destroyed == 2);
  CHECK(s.size() == 0);
}

TEST_CASE("a join whose io_context is destroyed first goes with it; the tasks' later end touches nothing of it") {
  scope s;
  std::atomic<int> destroyed{0};
  std::atomic<bool> joined{false};
  asio::io_context tasks_io;
  spawn_probed_task(s, tasks_io.get_executor(), destroyed);
  tasks_io.poll();
  {
    asio::io_context joiner_io;
    asio::co_spawn(joiner_io, join_and_note(s, destroyed, joined), asio::detached);
    joiner_io.poll();
  }
  CHECK(destroyed == 1);  // the joiner's frame
  run(tasks_io, [&]() -> awaitable<void> { co_await s.stop(); });
  CHECK(destroyed == 2);
  CHECK_FALSE(joined);
  CHECK(s.size() == 0);
}

TEST_CASE("joiners on an io_context run by four threads, without a strand, are all woken" * doctest::test_suite("mt")) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> runners;
  for (int i = 0; i < 4; ++i) runners.emplace_back([&] { io.run(); });

  constexpr int joiners = 8;
  for (int round = 0; round < 50; ++round) {
    scope s;
    // Tasks that end a few turns later, so that the last one leaves while
    // joiners register on the other threads.
    for (int t = 0; t < 4; ++t) {
      s.spawn(io.get_executor(), [t]() -> awaitable<void> {
        for (int turn = 0; turn < t; ++turn) co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
      });
    }
    std::atomic<int> joined{0}, failed{0};
    std::promise<void> all_joined;
    for (int j = 0; j < joiners; ++j) {
      asio::co_spawn(io, s.join(), [&](std::exception_ptr e) {
        if (e) failed.fetch_add(1);
        if (joined.fetch_add(1) + 1 == joiners) all_joined.set_value();
      });
    }
    auto done = all_joined.get_future();
    if (done.wait_for(60s) != std::future_status::ready) {
      FAIL_CHECK("round ", round, ": a joiner was never woken");
      io.stop();
      break;
    }
    CHECK(failed == 0);
    CHECK(s.size() == 0);
  }
  guard.reset();
  for (auto& t : runners) t.join();
}
