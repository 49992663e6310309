// The HTTP server at its connection limit (tcp.max_connections): paused accepting with newcomers
// in the kernel backlog, or 503 with "Connection: close" (answer_503_at_limit), bounded either
// way; and listen()/adopt() refused once a stop or a shutdown has begun.
//
// Client and server share one single-threaded io_context; tests wait on events (a response, an
// end of stream), never on sleeps.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace sluice::test;

namespace {

awaitable<http::response> ok(http::request&) { co_return http::response::text(200, "ok\n"); }

http::server_options limited_to(std::size_t connections) {
  auto options = long_timeouts();
  options.tcp.max_connections = connections;
  return options;
}

}  // namespace

TEST_CASE("at max_connections the server serves the ones it has; a newcomer waits, served once one closes") {
  asio::io_context io;
  http::server srv(io.get_executor(), ok, limited_to(1));
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto held = co_await http_client::connect(ep);
    CHECK((co_await held.request(get("/1"))).status == 200);
    auto newcomer = co_await http_client::connect(ep);  // completes in the kernel's backlog
    co_await newcomer.send(get("/new"));
    auto again = co_await held.request(get("/2"));
    CHECK(again.status == 200);
    CHECK(!again.closes());
    CHECK(srv.accepted() == 1);
    CHECK(srv.connections().total() == 1);
    held.socket().close();
    auto served = co_await newcomer.read_response();
    CHECK(served.status == 200);
    CHECK(!served.closes());
    CHECK(srv.accepted() == 2);
    CHECK(srv.connections().refused == 0);
    co_await srv.stop_now();
  });
}

TEST_CASE("answer_503_at_limit: a newcomer gets 503 with Connection: close, counted as refused") {
  asio::io_context io;
  auto options = limited_to(1);
  options.answer_503_at_limit = true;
  options.tcp.max_refusing = 1;
  http::server srv(io.get_executor(), ok, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto held = co_await http_client::connect(ep);
    CHECK((co_await held.request(get("/1"))).status == 200);

    auto turned_away = co_await http_client::connect(ep);
    auto refused = co_await turned_away.request(get("/new"));
    CHECK(refused.status == 503);
    CHECK(refused.closes());
    CHECK((co_await turned_away.wait_closed()).closed());
    CHECK(srv.connections().refused == 1);
    CHECK((co_await held.request(get("/2"))).status == 200);

    // The refusals are bounded too: while one is pending, the next newcomer waits in the backlog.
    auto silent = co_await http_client::connect(ep);
    auto waiting = co_await http_client::connect(ep);
    co_await waiting.send(get("/later"));
    CHECK((co_await held.request(get("/3"))).status == 200);
    CHECK(srv.accepted() == 3);
    co_await silent.send(get("/now"));
    CHECK((co_await silent.read_response()).status == 503);
    auto later = co_await waiting.read_response();
    CHECK(later.status == 503);
    CHECK(later.closes());
    CHECK(srv.connections().refused == 3);
    CHECK(srv.accepted() == 4);
    co_await srv.stop_now();
  });
}

TEST_CASE("listen and adopt throw tcp::server_stopped once shutdown() or stop_now() has begun") {
  asio::io_context io;
  http::server drained(io.get_executor(), ok, long_timeouts());
  http::server stopped(io.get_executor(), ok, long_timeouts());
  drained.listen(loopback_any);
  stopped.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    co_await drained.shutdown(std::chrono::seconds(5));
    co_await stopped.stop_now();
  });
  CHECK_THROWS_AS(drained.listen(loopback_any), sluice::tcp::server_stopped);
  CHECK_THROWS_AS(stopped.listen(loopback_any), sluice::tcp::server_stopped);
  CHECK_THROWS_AS(stopped.adopt(tcp::acceptor(io, loopback_any)), sluice::tcp::server_stopped);
  CHECK(drained.local_endpoints().size() == 1);
}
