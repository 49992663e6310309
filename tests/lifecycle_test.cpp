// server/lifecycle.hpp: the phase only moves forward, each predicate holds from its phase on,
// and stoppers racing from several threads agree on one order.
#include "sluice/server/lifecycle.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using sluice::server::lifecycle;
using sluice::server::phase;

TEST_CASE("a lifecycle moves forward through its phases, each predicate true from its phase on") {
  lifecycle life;
  CHECK(life.current() == phase::serving);
  CHECK(!life.drain_announced());
  CHECK(life.announce_drain());
  CHECK(life.drain_announced());
  CHECK(!life.draining());
  CHECK(life.start_draining());
  CHECK(life.draining());
  CHECK(!life.forcing());
  CHECK(life.start_forcing());
  CHECK((life.forcing() && life.draining() && life.drain_announced()));
  CHECK(!life.stopped());
  CHECK(life.finish());
  CHECK(life.stopped());
  CHECK(life.forcing());
}

TEST_CASE("a lifecycle never moves back: a stop_now during a shutdown is not undone by the shutdown's next step") {
  lifecycle life;
  CHECK(life.start_forcing());  // straight from serving
  CHECK(!life.announce_drain());
  CHECK(!life.start_draining());
  CHECK(!life.start_forcing());
  CHECK(life.current() == phase::forcing);
  CHECK(life.finish());
  CHECK(!life.finish());
  CHECK(!life.start_draining());
  CHECK(life.current() == phase::stopped);
}

TEST_CASE("stoppers racing on several threads: each transition is made once, and the phase ends at the furthest" *
          doctest::test_suite("mt")) {
  for (int round = 0; round < 200; ++round) {
    lifecycle life;
    std::atomic<int> drained{0}, forced{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        if (t % 2 == 0 && life.start_draining()) ++drained;
        if (t % 2 == 1 && life.start_forcing()) ++forced;
      });
    }
    for (auto& t : threads) t.join();
    CHECK(forced == 1);
    // Draining happened only if a drainer got there before the forcing.
    CHECK(drained <= 1);
    CHECK(life.current() == phase::forcing);
  }
}
