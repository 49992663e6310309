// Lifetimes at the HTTP server's edges: a server destroyed without a stop while a session still
// runs (its io_context then run, or destroyed unrun), observers that throw, timeouts too long for
// the clock, and a shutdown() cancelled while a shutdown hook runs.
//
// Every test runs client and server on one single-threaded io_context and waits on events (a
// response, an end of stream, a server callback), never on sleeps.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

using namespace sluice::test;
using cs = sluice::http::connection_state;

namespace {

awaitable<http::response> answers_hello(http::request&) { co_return http::response::text(200, "hello\n"); }

std::string what(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace

// The session's frame holds the last reference to the server's state; the connection it also
// holds writes into that state when destroyed.
TEST_CASE("an unstopped server destroyed with an idle keep-alive connection: its session ends when the loop runs") {
  asio::io_context io(1);
  std::optional<http::server> srv(std::in_place, io.get_executor(), answers_hello, long_timeouts());
  auto ep = srv->listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await idle_client(ep);
    REQUIRE(srv->connections()[cs::idle] == 1);
    srv.reset();
    co_await check_closed_silently(c);
  });
}

TEST_CASE("an unstopped server destroyed with an idle keep-alive connection, then its io_context unrun") {
  const auto baseline = open_descriptors();
  std::optional<asio::io_context> io(std::in_place, 1);
  std::optional<http::server> srv(std::in_place, io->get_executor(), answers_hello, long_timeouts());
  auto ep = srv->listen(loopback_any);
  std::optional<http_client> c;
  run_guarded(*io, [&]() -> awaitable<void> { c.emplace(co_await idle_client(ep)); });
  REQUIRE(srv->connections()[cs::idle] == 1);
  srv.reset();
  c.reset();
  io.reset();  // destroys the session's frame without resuming it
  CHECK(open_descriptors() == baseline);
}

TEST_CASE("a throwing on_state_change goes to on_handler_error; the connection is served and the counts stay exact") {
  asio::io_context io(1);
  notifier reported(io.get_executor());
  std::size_t observed = 0, closes_observed = 0;
  std::vector<std::string> errors;
  auto options = long_timeouts();
  options.on_state_change = [&](const tcp::endpoint&, cs, cs, bool closed) {
    ++observed;
    if (closed) ++closes_observed;
    throw std::runtime_error(closed ? "observer failed at the end" : "observer failed");
  };
  options.on_handler_error = [&](std::exception_ptr e) {
    errors.push_back(what(e));
    reported.notify();
  };
  http::server srv(io.get_executor(), answers_hello, options);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await idle_client(ep);
    CHECK(srv.connections()[cs::idle] == 1);
    CHECK(srv.connections().total() == 1);
    CHECK((co_await c.request(get("/"))).status == 200);
    CHECK(srv.connections()[cs::idle] == 1);
    CHECK(srv.connections().total() == 1);
    c.close();
    auto end_reported = [&] { return closes_observed == 1 && errors.size() == observed; };
    co_await reported.until(end_reported);
    CHECK(srv.connections().total() == 0);
    CHECK(observed >= 6);  // two requests: new, reading, active, idle twice over
    CHECK(errors.back() == "observer failed at the end");
  });
}

// Two servers: the one whose idle timeout is short proves that time passed, and that the
// deadline timer ran, while the other's connection stayed open.
TEST_CASE("timeouts of milliseconds::max() never expire instead of overflowing into the past") {
  asio::io_context io(1);
  http::server_options never;
  never.header_timeout = never.idle_timeout = never.body_timeout = never.write_timeout = never.linger_timeout =
      never.handshake_timeout = std::chrono::milliseconds::max();
  http::server patient(io.get_executor(), answers_hello, never);
  auto patient_ep = patient.listen(loopback_any);
  auto brisk_options = long_timeouts();
  brisk_options.idle_timeout = std::chrono::milliseconds(100);
  http::server brisk(io.get_executor(), answers_hello, brisk_options);
  auto brisk_ep = brisk.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto kept = co_await idle_client(patient_ep);
    auto dropped = co_await idle_client(brisk_ep);
    co_await check_closed_silently(dropped);
    CHECK(patient.connections()[cs::idle] == 1);
    auto r = co_await kept.request(get("/"));
    CHECK(r.status == 200);
    CHECK_FALSE(r.closes());
  });
}

TEST_CASE("shutdown(milliseconds::max()) has no deadline: it completes when the last response is out") {
  asio::io_context io(1);
  gate g(io);
  auto handler = [&g](http::request& req) -> awaitable<http::response> {
    if (req.target() == "/gate") co_await g.pass();
    co_return http::response::text(200, "done\n");
  };
  http::server srv(io.get_executor(), handler, long_timeouts());
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/gate"));
    co_await g.until_entered();
    event finished(co_await asio::this_coro::executor);
    http::shutdown_summary summary;
    asio::co_spawn(io, srv.shutdown(std::chrono::milliseconds::max()),
                   [&](std::exception_ptr e, http::shutdown_summary s) {
                     CHECK_FALSE(e);
                     summary = s;
                     finished.set();
                   });
    CHECK_FALSE(finished.is_set());
    g.open();
    auto r = co_await c.read_response();
    CHECK(r.status == 200);
    CHECK(r.closes());
    co_await finished.wait();
    CHECK(summary.completed == 1);
    CHECK(summary.forced == 0);
  });
}

// The shutdown is cancelled once the new client has been served: its drain would last 10 s.
TEST_CASE("drain_delay = milliseconds::max() lasts the whole grace period instead of none") {
  asio::io_context io(1);
  auto options = long_timeouts();
  options.drain_delay = std::chrono::milliseconds::max();
  http::server srv(io.get_executor(), answers_hello, options);
  auto ep = srv.listen(loopback_any);
  auto served_while_draining = [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    CHECK(srv.draining());
    CHECK((co_await c.request(get("/"))).status == 200);
  };
  run_guarded(io, [&]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    auto first = co_await (srv.shutdown(std::chrono::seconds(10)) || served_while_draining());
    CHECK(first.index() == 1);
  });
  stop_on_exit stop(io, srv);
}

// A hook that outlives the shutdown() running it: stopped, it waits once more, then throws.
TEST_CASE("a shutdown cancelled while a hook runs: the hook's later exception still reaches on_handler_error") {
  asio::io_context io(1);
  gate running(io);
  event release(io.get_executor());
  event reported(io.get_executor());
  std::string error;
  auto options = long_timeouts();
  options.on_handler_error = [&](std::exception_ptr e) {
    error = what(e);
    reported.set();
  };
  std::optional<http::server> srv(std::in_place, io.get_executor(), answers_hello, options);
  srv->listen(loopback_any);
  std::error_code hook_saw;
  srv->on_shutdown([&]() -> awaitable<void> {
    try {
      co_await running.pass();
    } catch (const std::system_error& e) {
      hook_saw = e.code();
    }
    co_await asio::this_coro::reset_cancellation_state();
    co_await release.wait();
    throw std::runtime_error("hook failed after its shutdown was cancelled");
  });
  run_guarded(io, [&]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    auto first = co_await (srv->shutdown(std::chrono::seconds(10)) || running.until_entered());
    CHECK(first.index() == 1);
    srv.reset();  // the shutdown() frame is gone; now the server is too
    release.set();
    co_await reported.wait();
    CHECK(hook_saw == asio::error::operation_aborted);
    CHECK(error == "hook failed after its shutdown was cancelled");
  });
}
