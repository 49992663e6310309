// Production operation: the signal policy helper and inherited listeners.
#include "sluice/http/server.hpp"
#include "sluice/signals.hpp"
#include "sluice/tcp/inherited.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/io_context.hpp>
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>

using namespace sluice::test;
namespace http = sluice::http;
using report_type = sluice::stop_report<http::shutdown_summary>;

namespace {

// Answers /gate only once the test opens the gate, anything else at once.
struct gated_handler {
  event* gate;
  event* entered;
  awaitable<http::response> operator()(http::request& req) const {
    if (req.path() == "/gate") {
      entered->set();
      co_await gate->wait();
    }
    co_return http::response::text(200, "done\n");
  }
};

// Runs a signal policy on `io`; `report` holds what it reports once it ends.
void spawn_policy(asio::io_context& io, asio::awaitable<report_type> policy, std::optional<report_type>& report) {
  asio::co_spawn(io, std::move(policy), [&report](std::exception_ptr e, report_type r) {
    REQUIRE(!e);
    report = r;
  });
}

}  // namespace

TEST_CASE("stop_on_signals: SIGTERM drains in-flight requests and the program keeps running") {
  asio::io_context io(1);
  event gate(io.get_executor()), entered(io.get_executor());
  http::server srv(io.get_executor(), gated_handler{&gate, &entered}, long_timeouts());
  auto ep = srv.listen(loopback_any);
  std::optional<report_type> report;
  spawn_policy(io, sluice::stop_on_signals(srv, std::chrono::seconds(10)), report);
  run_guarded(io, [&]() -> awaitable<void> {
    auto idle = co_await http_client::connect(ep);
    CHECK((co_await idle.request(get("/"))).status == 200);
    auto busy = co_await http_client::connect(ep);
    co_await busy.send(get("/gate"));
    co_await entered.wait();
    std::raise(SIGTERM);
    CHECK((co_await idle.wait_closed()).closed());  // shutdown began: the idle one is closed at once
    gate.set();
    auto res = co_await busy.read_response();
    CHECK(res.status == 200);
    CHECK(res.has_token("Connection", "close"));
    busy.close();  // as a client does on "Connection: close"
    while (!report) co_await asio::post(io, use_awaitable);
  });
  REQUIRE(report);
  CHECK(report->signal == SIGTERM);
  CHECK(report->graceful);
  CHECK_FALSE(report->escalated);
  CHECK(report->summary.idle_closed == 1);
  CHECK(report->summary.completed == 1);
  CHECK(report->summary.forced == 0);
  // The io_context was never stopped: more work still runs on it.
  bool ran = false;
  asio::post(io, [&] { ran = true; });
  io.run();
  CHECK(ran);
}

TEST_CASE("stop_on_signals: a second signal during the shutdown escalates to stop_now") {
  asio::io_context io(1);
  event gate(io.get_executor()), entered(io.get_executor());
  http::server srv(io.get_executor(), gated_handler{&gate, &entered}, long_timeouts());
  auto ep = srv.listen(loopback_any);
  std::optional<report_type> report;
  spawn_policy(io, sluice::stop_on_signals(srv, std::chrono::hours(1)), report);
  run_guarded(io, [&]() -> awaitable<void> {
    auto busy = co_await http_client::connect(ep);
    co_await busy.send(get("/gate"));
    co_await entered.wait();
    std::raise(SIGTERM);
    while (!srv.draining()) co_await asio::post(io, use_awaitable);
    std::raise(SIGINT);
    co_await check_closed_silently(busy);
    while (!report) co_await asio::post(io, use_awaitable);
  });
  REQUIRE(report);
  CHECK(report->graceful);
  CHECK(report->escalated);
  CHECK(report->summary.forced == 1);
  CHECK(srv.connections().total() == 0);
}

TEST_CASE("stop_on_signals: a signal listed as immediate calls stop_now at once") {
  asio::io_context io(1);
  event gate(io.get_executor()), entered(io.get_executor());
  http::server srv(io.get_executor(), gated_handler{&gate, &entered}, long_timeouts());
  auto ep = srv.listen(loopback_any);
  std::optional<report_type> report;
  sluice::signal_policy policy{{SIGTERM}, {SIGINT}};
  spawn_policy(io, sluice::stop_on_signals(srv, std::chrono::hours(1), policy), report);
  run_guarded(io, [&]() -> awaitable<void> {
    auto busy = co_await http_client::connect(ep);
    co_await busy.send(get("/gate"));
    co_await entered.wait();
    std::raise(SIGINT);
    co_await check_closed_silently(busy);
    while (!report) co_await asio::post(io, use_awaitable);
  });
  REQUIRE(report);
  CHECK(report->signal == SIGINT);
  CHECK_FALSE(report->graceful);
  CHECK(report->summary.forced == 1);
}

TEST_CASE("inherited_listeners adopts descriptors passed through LISTEN_FDS, and only for this process") {
  asio::io_context io(1);
  // A listener at descriptor 3, as systemd would pass it.
  tcp::acceptor original(io, loopback_any);
  const auto ep = original.local_endpoint();
  const int saved3 = ::dup(3);  // whatever the test process has at 3 (or -1)
  REQUIRE(::dup2(original.native_handle(), 3) == 3);

  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_PID", std::to_string(::getpid() + 1).c_str(), 1);
  CHECK(sluice::tcp::inherited_listeners(io.get_executor()).empty());  // meant for another process
  CHECK(std::getenv("LISTEN_FDS") == nullptr);

  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
  auto listeners = sluice::tcp::inherited_listeners(io.get_executor());
  REQUIRE(listeners.size() == 1);
  CHECK(listeners[0].local_endpoint() == ep);

  http::server srv(io.get_executor(), [](http::request&) -> awaitable<http::response> {
    co_return http::response::text(200, "adopted\n");
  });
  CHECK(srv.adopt(std::move(listeners[0])) == ep);
  original.close();  // the adopted copy keeps the port open
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto res = co_await c.request(get("/"));
    CHECK(res.body == "adopted\n");
    co_await srv.stop_now();
  });
  if (saved3 >= 0) {
    ::dup2(saved3, 3);
    ::close(saved3);
  }
}

TEST_CASE("inherited_listeners refuses a descriptor that is not a listening socket") {
  asio::io_context io(1);
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const int saved3 = ::dup(3);
  REQUIRE(::dup2(pipe_fds[0], 3) == 3);
  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
  CHECK_THROWS_WITH_AS(sluice::tcp::inherited_listeners(io.get_executor()),
                       doctest::Contains("inherited descriptor 3 is not a socket"), std::system_error);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  if (saved3 >= 0) {
    ::dup2(saved3, 3);
    ::close(saved3);
  } else {
    ::close(3);
  }
}

namespace {

awaitable<http::response> ready_handler(http::request& req) {
  if (req.path() == "/ready")
    co_return req.server_draining() ? http::response::text(503, "draining\n") : http::response::text(200, "ready\n");
  co_return http::response::text(200, "Hello, world!\n");
}

}  // namespace

TEST_CASE("shutdown hooks run after the connections are torn down, in order, each awaited") {
  asio::io_context io(1);
  gate g(io);
  http::server srv(io.get_executor(), ready_handler, long_timeouts());
  auto ep = srv.listen(loopback_any);
  std::vector<std::string> order;
  srv.on_shutdown([&]() -> awaitable<void> {
    order.push_back("first, connections: " + std::to_string(srv.connections().total()));
    co_return;
  });
  srv.on_shutdown([&]() -> awaitable<void> {
    co_await g.pass();  // awaited: shutdown() cannot complete before the gate opens
    order.push_back("second");
  });
  srv.on_shutdown([&]() -> awaitable<void> {
    order.push_back("third");
    co_return;
  });
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    CHECK((co_await c.request(get("/"))).status == 200);
    background_shutdown stopping(io, srv, std::chrono::seconds(10));
    co_await g.until_entered();
    CHECK_FALSE(stopping.done());
    CHECK(order == std::vector<std::string>{"first, connections: 0"});
    g.open();
    auto summary = co_await stopping.wait();
    CHECK(summary.idle_closed == 1);
    CHECK(summary.hooks_cut_short == 0);
    CHECK(order == std::vector<std::string>{"first, connections: 0", "second", "third"});
  });
}

TEST_CASE("shutdown hooks are bounded by the same deadline: the running one is cancelled, the rest skipped") {
  asio::io_context io(1);
  http::server srv(io.get_executor(), ready_handler, long_timeouts());
  srv.listen(loopback_any);
  bool first_ran = false, third_ran = false;
  std::error_code stuck_saw;
  srv.on_shutdown([&]() -> awaitable<void> {
    first_ran = true;
    co_return;
  });
  srv.on_shutdown([&]() -> awaitable<void> {
    asio::steady_timer hour(co_await asio::this_coro::executor, std::chrono::hours(1));
    auto [ec] = co_await hour.async_wait(nothrow);
    stuck_saw = ec;
  });
  srv.on_shutdown([&]() -> awaitable<void> {
    third_ran = true;
    co_return;
  });
  run_guarded(io, [&]() -> awaitable<void> {
    auto summary = co_await srv.shutdown(std::chrono::milliseconds(200));
    CHECK(summary.hooks_cut_short == 2);
  });
  CHECK(first_ran);
  CHECK(stuck_saw == asio::error::operation_aborted);
  CHECK_FALSE(third_ran);
}

TEST_CASE("drain_delay: draining() and /ready say 503 at once, new connections are still served until the delay ends") {
  asio::io_context io(1);
  auto options = long_timeouts();
  options.drain_delay = std::chrono::milliseconds(300);
  http::server srv(io.get_executor(), ready_handler, options);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto before = co_await http_client::connect(ep);
    CHECK((co_await before.request(get("/ready"))).status == 200);
    background_shutdown stopping(io, srv, std::chrono::seconds(10));
    co_await asio::post(io, use_awaitable);
    CHECK(srv.draining());
    auto probe = co_await before.request(get("/ready"));
    CHECK(probe.status == 503);
    CHECK_FALSE(probe.closes());  // still serving as usual during the delay
    auto newcomer = co_await http_client::connect(ep);
    CHECK((co_await newcomer.request(get("/"))).status == 200);
    auto summary = co_await stopping.wait();
    CHECK(stopping.took() >= std::chrono::milliseconds(300));
    CHECK(summary.idle_closed == 2);
    CHECK((co_await before.wait_closed()).closed());
    CHECK((co_await newcomer.wait_closed()).closed());
  });
  tcp::socket refused(io);
  std::error_code ec;
  refused.connect(ep, ec);
  CHECK(ec == asio::error::connection_refused);
}

TEST_CASE("socket activation: a child adopts a listening socket passed through LISTEN_FDS and answers on it") {
  asio::io_context io(1);
  tcp::acceptor listener(io, loopback_any);
  const auto ep = listener.local_endpoint();
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    if (!sluice::tcp::pass_listeners_to_exec({listener.native_handle()})) ::_exit(126);
    ::execl(SLUICE_HELLO_SERVER, "hello_server", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  listener.close();  // from now on only the child holds the socket
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  CHECK(line == "listening on 127.0.0.1:" + std::to_string(ep.port()));
  run_guarded(io, [&]() -> awaitable<void> {
    auto client = co_await http_client::connect(ep);
    auto res = co_await client.request(get("/"));
    CHECK(res.status == 200);
    CHECK(res.body == "Hello, world!\n");
  });
  ::kill(child, SIGTERM);
  line.clear();
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  CHECK(line.rfind("{\"event\":\"stopped\",\"mode\":\"graceful\"", 0) == 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  ::close(out[0]);
}
