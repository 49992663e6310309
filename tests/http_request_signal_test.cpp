// What a handler can learn about why it may stop: its client leaving
// mid-request (request::cancellation_slot(), client_gone()) and the shutdown
// deadline while the server drains (request::shutdown_deadline()).
//
// Single-threaded; the tests wait on events (a handler reaching a point, a
// response, a closed connection), never on sleeps.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <system_error>

#if SLUICE_TEST_TLS
#include "sluice/tls/server.hpp"

#include "support/tls_certs.hpp"

#include <asio/ssl/stream.hpp>
#endif

using namespace sluice::test;
using namespace std::chrono_literals;

namespace {

// "/watch" asks whether its client is gone (which starts the watch once the
// body is read), reads the body, then waits on a timer bound to the request's
// slot until the slot fires or the test calls release(); anything else is
// answered with its target at once.
class watching_handler {
 public:
  explicit watching_handler(asio::io_context& io) : waiting_(io.get_executor()), finished_(io.get_executor()) {}

  http::server::handler_type handler() {
    return [this](http::request& req) -> awaitable<http::response> {
      if (req.target() != "/watch") co_return http::response::text(200, std::string(req.target()));
      CHECK_FALSE(req.client_gone());
      auto body = co_await req.read_body();
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
      timer_ = &timer;
      waiting_.set();
      auto slot = co_await req.cancellation_slot();
      auto [ec] = co_await timer.async_wait(asio::bind_cancellation_slot(slot, nothrow));
      timer_ = nullptr;
      ended_ = ec;
      gone_ = req.client_gone();
      finished_.set();
      co_return http::response::text(200, "released " + body);
    };
  }

  awaitable<void> until_waiting() { co_await waiting_.wait(); }
  awaitable<void> until_finished() { co_await finished_.wait(); }
  bool finished() const { return finished_.is_set(); }
  void release() {
    released_ = true;
    if (timer_) timer_->cancel();
  }

  // The handler's wait ended because the client left, not by release().
  bool saw_client_leave() const { return !released_ && ended_ == asio::error::operation_aborted && gone_; }
  bool client_gone() const { return gone_; }
  std::error_code ended() const { return ended_; }

 private:
  event waiting_;
  event finished_;
  asio::steady_timer* timer_ = nullptr;
  bool released_ = false;
  std::error_code ended_;
  bool gone_ = false;
};

// A full request and response on another connection: by its end the server's
// event loop has handled whatever the loopback delivered before it.
awaitable<void> round_trip(tcp::endpoint ep) {
  auto other = co_await http_client::connect(ep);
  auto r = co_await other.request(get("/other"));
  CHECK(r.body == "/other");
}

}  // namespace

TEST_CASE("a client leaving while its handler waits fires the request's slot; the handler sees client_gone()") {
  asio::io_context io;
  watching_handler w(io);
  http::server srv(io.get_executor(), w.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/watch"));
    co_await w.until_waiting();
    c.close();
    co_await w.until_finished();
    CHECK(w.saw_client_leave());
    // The server goes on serving.
    co_await round_trip(ep);
  });
}

TEST_CASE("the watch starts once the body is read: a client leaving after sending its body fires the slot") {
  asio::io_context io;
  watching_handler w(io);
  http::server srv(io.get_executor(), w.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send("POST /watch HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\n");
    co_await c.send("hello");
    co_await w.until_waiting();
    c.close();
    co_await w.until_finished();
    CHECK(w.saw_client_leave());
  });
}

TEST_CASE("a handler that lets the client-gone cancellation escape ends the connection without a 500 or a report") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  log.attach(options);
  int reported = 0;
  options.on_handler_error = [&reported](std::exception_ptr) { ++reported; };
  event waiting(io.get_executor());
  http::server srv(
      io.get_executor(),
      [&waiting](http::request& req) -> awaitable<http::response> {
        asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
        waiting.set();
        auto slot = co_await req.cancellation_slot();
        co_await timer.async_wait(asio::bind_cancellation_slot(slot, asio::use_awaitable));  // throws
        co_return http::response::text(200, "unreachable");
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    const auto peer = c.local_endpoint();
    co_await c.send(get("/"));
    co_await waiting.wait();
    c.close();
    co_await log.until_closed(peer);
    CHECK(reported == 0);
  });
}

TEST_CASE("a normal request or a pipelined one does not fire the slot") {
  asio::io_context io;
  watching_handler w(io);
  http::server srv(io.get_executor(), w.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    bool next_sent = true;
    SUBCASE("a request behind the watched one, sent while its handler waits") {
      co_await c.send(get("/watch"));
      co_await w.until_waiting();
      co_await c.send(get("/next"));
    }
    SUBCASE("a request pipelined behind the watched one in the same write") {
      co_await c.send(get("/watch") + get("/next"));
      co_await w.until_waiting();
    }
    SUBCASE("a lone request") {
      co_await c.send(get("/watch"));
      co_await w.until_waiting();
      next_sent = false;
    }
    co_await round_trip(ep);
    CHECK_FALSE(w.finished());
    w.release();
    auto first = co_await c.read_response();
    CHECK(first.body == "released ");
    CHECK_FALSE(w.client_gone());
    if (!next_sent) co_await c.send(get("/next"));
    auto second = co_await c.read_response();
    CHECK(second.body == "/next");
  });
}

// Without the slot taking the stop over, this wait would never end.
TEST_CASE("stop_now reaches an operation bound to the request's slot") {
  asio::io_context io;
  watching_handler w(io);
  http::server srv(io.get_executor(), w.handler(), long_timeouts());
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/watch"));
    co_await w.until_waiting();
    auto summary = co_await srv.stop_now();
    CHECK(summary.forced == 1);
    CHECK(w.finished());
    CHECK(w.ended() == asio::error::operation_aborted);
    CHECK_FALSE(w.client_gone());
    co_await check_closed_silently(c);
  });
}

TEST_CASE("shutdown_deadline() is empty while serving, then the shutdown's deadline; max() without one") {
  asio::io_context io;
  std::optional<std::optional<std::chrono::steady_clock::time_point>> seen;
  gate g(io);
  auto handler = [&](http::request& req) -> awaitable<http::response> {
    if (req.target() == "/gate") co_await g.pass();
    seen = req.shutdown_deadline();
    co_return http::response::text(200, "ok");
  };
  bool unbounded = false;
  SUBCASE("a grace of 10 s") {}
  SUBCASE("a grace too long for the clock") { unbounded = true; }
  http::server srv(io.get_executor(), handler, long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.request(get("/"));
    REQUIRE(seen);
    CHECK_FALSE(seen->has_value());

    co_await c.send(get("/gate"));
    co_await g.until_entered();
    const auto before = std::chrono::steady_clock::now();
    background_shutdown shutdown(io, srv, unbounded ? std::chrono::steady_clock::duration::max() : 10s);
    while (!srv.draining()) co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
    const auto after = std::chrono::steady_clock::now();
    g.open();
    auto r = co_await c.read_response();
    CHECK(r.closes());
    REQUIRE(seen->has_value());
    if (unbounded) {
      CHECK(**seen == std::chrono::steady_clock::time_point::max());
    } else {
      CHECK(**seen >= before + 10s);
      CHECK(**seen <= after + 10s);
    }
    co_await shutdown.wait();
  });
}

#if SLUICE_TEST_TLS
TEST_CASE("over TLS, a client that drops the connection fires the request's slot") {
  asio::io_context io;
  temp_dir dir;
  const auto cert = make_self_signed(dir.path(), "signal", 1, "sluice-signal");
  watching_handler w(io);
  sluice::tls::server srv(io.get_executor(), w.handler(), sluice::tls::make_server_context(cert.cert, cert.key),
                          long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    auto client = std::make_unique<asio::ssl::stream<tcp::socket>>(co_await asio::this_coro::executor, ctx);
    co_await client->next_layer().async_connect(ep, use_awaitable);
    co_await client->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    const std::string request = get("/watch");
    co_await asio::async_write(*client, asio::buffer(request), use_awaitable);
    co_await w.until_waiting();
    client->next_layer().close();  // no close_notify: what a client that dies sends
    co_await w.until_finished();
    CHECK(w.saw_client_leave());
  });
}
#endif
