// The HTTP server's protocol edges found by review (issue 9): a lingering close against a peer
// that floods, 100 Continue against a response already under way, a protocol switch with a
// request body still unread, responses the handler built wrong (a header that would split the
// response, a 1xx status as the final one), and a malformed body found while discarding it.
//
// Tests run client and server on one single-threaded io_context and wait on events, never on
// sleeps; the flooding client writes from a thread of its own, so that the server always finds
// input waiting.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

using namespace sluice::test;
using cs = sluice::http::connection_state;

namespace {

// A client on a thread of its own: it sends a malformed request line, reads the head of the 400,
// then writes as fast as the kernel takes bytes until the server ends the connection. The peer a
// lingering close must not wait on forever. The destructor joins the thread, which ends once the
// server's side of the connection is closed.
class flooder {
 public:
  explicit flooder(tcp::endpoint server) : socket_(io_) {
    socket_.connect(server);
    local_ = socket_.local_endpoint();
  }
  flooder(const flooder&) = delete;
  flooder& operator=(const flooder&) = delete;
  ~flooder() { join(); }

  // The server's name for this connection.
  tcp::endpoint local_endpoint() const { return local_; }
  void start() { thread_ = std::thread([this] { run(); }); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  // Read after join().
  const std::string& answer() const { return answer_; }
  std::error_code ended() const { return ended_; }
  std::size_t sent() const { return sent_; }

 private:
  void run() {
    std::error_code ec;
    asio::write(socket_, asio::buffer(std::string_view("\x01 / HTTP/1.1\r\n\r\n")), ec);
    char piece[512];
    while (!ec && answer_.find("\r\n\r\n") == std::string::npos) {
      const std::size_t n = socket_.read_some(asio::buffer(piece), ec);
      answer_.append(piece, n);
    }
    const std::string block(64 * 1024, 'f');
    while (!ec) sent_ += asio::write(socket_, asio::buffer(block), ec);
    ended_ = ec;
  }

  asio::io_context io_;
  tcp::socket socket_;
  tcp::endpoint local_;
  std::thread thread_;
  std::string answer_;
  std::error_code ended_;
  std::size_t sent_ = 0;
};

// Every exception on_handler_error receives, by its what().
struct error_log {
  std::vector<std::string> errors;
  void attach(http::server_options& o) {
    o.on_handler_error = [this](std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        errors.emplace_back(ex.what());
      }
    };
  }
};

// The echo upgrade of upgrade_or_ok, counting how many times a connection was taken over.
http::response counted_echo_upgrade(std::error_code& ended, int& switched) {
  auto res = echo_upgrade(ended);
  auto echo = std::move(res.upgrade);
  res.upgrade = [echo = std::move(echo), &switched](http::upgraded& u) -> awaitable<void> {
    ++switched;
    co_await echo(u);
  };
  return res;
}

std::string upgrade_with_body(std::string_view framing, std::string_view body) {
  std::string r = "GET /upgrade HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n";
  r.append(framing).append("\r\n\r\n").append(body);
  return r;
}

// Sends `request` on a connection of its own and expects `status` with "Connection: close", then
// the end of the connection with nothing more from the server.
awaitable<void> expect_refused_and_closed(tcp::endpoint ep, std::string request, unsigned status) {
  auto c = co_await http_client::connect(ep);
  co_await c.send(request);
  auto r = co_await c.read_response();
  CHECK(r.status == status);
  CHECK(r.closes());
  c.socket().shutdown(tcp::socket::shutdown_send);
  co_await check_closed_silently(c);
}

}  // namespace

TEST_CASE("lingering close ends at linger_timeout while the peer floods after a 400") {
  std::optional<flooder> flood;  // joined after the io_context is gone, whatever happened
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.linger_timeout = 200ms;
  log.attach(options);
  http::server srv(
      io.get_executor(), [](http::request&) -> awaitable<http::response> { co_return http::response::text(200, ""); },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  flood.emplace(ep);
  flood->start();
  run_guarded(io, [&]() -> awaitable<void> {
    co_await log.until_closed(flood->local_endpoint());
    CHECK(srv.connections().total() == 0);
    co_await srv.stop_now();
  });
  flood->join();
  CHECK(flood->answer().rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(flood->ended());  // the server closed with input unread: a reset, or a broken pipe
  CHECK(flood->sent() > 0);
}

TEST_CASE("shutdown returns at its deadline while a lingering peer floods") {
  std::optional<flooder> flood;
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();  // linger_timeout 10 s: only the shutdown deadline can end it
  log.attach(options);
  http::server srv(
      io.get_executor(), [](http::request&) -> awaitable<http::response> { co_return http::response::text(200, ""); },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  flood.emplace(ep);
  flood->start();
  run_guarded(io, [&]() -> awaitable<void> {
    co_await log.until_entered(flood->local_endpoint(), cs::closing);
    background_shutdown shutdown(io, srv, 100ms);
    auto summary = co_await shutdown.wait();
    CHECK(summary.completed == 1);  // its last response was out
    CHECK(log.closed(flood->local_endpoint()));
    CHECK(srv.connections().total() == 0);
  });
  flood->join();
  CHECK(flood->ended());
}

TEST_CASE("Expect: 100-continue: no 100 once a streamed response has begun (full-duplex echo)") {
  asio::io_context io;
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        http::response res;
        res.stream = [&req](http::body_writer& w) -> awaitable<void> {
          co_await w.write("start");
          for (;;) {
            auto piece = co_await req.read_some();
            if (piece.empty()) co_return;
            co_await w.write(piece);
          }
        };
        co_return res;
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    const std::string head = co_await c.read_until("5\r\nstart\r\n");
    CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(head.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
    CHECK(head.find("100 Continue") == std::string::npos);
    // The client sends its body on seeing the final head; the echo goes on in chunks only.
    co_await c.send("hello");
    CHECK(co_await c.read_until("0\r\n\r\n") == "5\r\nhello\r\n0\r\n\r\n");
    // It was never told to go on, so the server cannot know where a next request would start.
    CHECK(head.find("Connection: close\r\n") != std::string::npos);
    co_await check_closed_silently(c);
    co_await srv.stop_now();
  });
}

TEST_CASE("an upgrade starts after the whole request body; a body that cannot be read refuses it") {
  asio::io_context io;
  std::error_code echo_end;
  int switched = 0;
  int connects = 0;
  auto options = long_timeouts();
  options.max_discard = 1024;
  http::server srv(
      io.get_executor(),
      [&](http::request& req) -> awaitable<http::response> {
        if (req.method() == "CONNECT") ++connects;
        if (req.target() == "/upgrade" || req.method() == "CONNECT") {
          auto res = counted_echo_upgrade(echo_end, switched);
          if (req.method() == "CONNECT") res.status = 200;
          co_return res;
        }
        co_return http::response::text(200, "ok\n");
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    // The new protocol's first bytes follow the chunked body in the same packet.
    auto c = co_await http_client::connect(ep);
    co_await c.send(upgrade_with_body("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\nPING"));
    CHECK((co_await c.read_response()).status == 101);
    CHECK(co_await c.read_exact(4) == "PING");
    co_await c.send("pong");
    CHECK(co_await c.read_exact(4) == "pong");
    CHECK(switched == 1);

    // A malformed body: no switch, its error, and the connection closes.
    co_await expect_refused_and_closed(ep, upgrade_with_body("Transfer-Encoding: chunked", "zz\r\nPING"), 400);

    // A body beyond max_discard: 413, no switch.
    co_await expect_refused_and_closed(ep, upgrade_with_body("Content-Length: 2000", std::string(2000, 'b')), 413);
    CHECK(switched == 1);

    // CONNECT has no content (RFC 9110 9.3.6): one declaring some is refused before the handler.
    co_await expect_refused_and_closed(
        ep, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 5\r\n\r\nhello", 400);
    CHECK(connects == 0);

    // Without content, CONNECT opens its tunnel.
    auto open = co_await http_client::connect(ep);
    co_await open.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\ndata");
    CHECK((co_await open.read_response(true)).status == 200);  // a 2xx to CONNECT has no content
    CHECK(co_await open.read_exact(4) == "data");
    CHECK(switched == 2);
    co_await srv.stop_now();
  });
}

TEST_CASE("a response header with CR or LF gets a 500, reaches on_handler_error, and the connection serves on") {
  asio::io_context io;
  error_log log;
  auto options = long_timeouts();
  log.attach(options);
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        auto res = http::response::text(200, "fine\n");
        if (req.target() == "/split") res.headers.add("X-Split", "a\r\nInjected: yes");
        co_return res;
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/split"));
    auto r = co_await c.try_read_response();  // before: none, the session ended on the exception
    REQUIRE(r);
    CHECK(r->status == 500);
    CHECK(r->body == "500 Internal Server Error\n");
    CHECK(!r->header("injected"));
    CHECK(!r->closes());
    CHECK((co_await c.request(get("/"))).body == "fine\n");
    REQUIRE(log.errors.size() == 1);
    CHECK(log.errors[0].find("CR, LF") != std::string::npos);
    co_await srv.stop_now();
  });
}

TEST_CASE("a 1xx status returned as the final response gets a 500; the next request gets its own response") {
  asio::io_context io;
  error_log log;
  auto options = long_timeouts();
  log.attach(options);
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        if (req.target() == "/early-hints") co_return http::response::text(103, "");
        if (req.target() == "/switch") co_return http::response::text(101, "");  // no upgrade function
        co_return http::response::text(200, std::string(req.target()));
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/early-hints") + get("/next") + get("/switch") + get("/last"));
    for (std::string_view expected : {"500", "/next", "500", "/last"}) {
      auto r = co_await c.read_response();
      if (expected == "500") {
        CHECK(r.status == 500);
        CHECK(!r.closes());
      } else {
        CHECK(r.status == 200);
        CHECK(r.body == expected);
      }
    }
    CHECK(log.errors.size() == 2);
    co_await srv.stop_now();
  });
}

TEST_CASE("a switch the client did not ask for, or a 2xx to CONNECT without its tunnel, gets a 500") {
  asio::io_context io;
  error_log log;
  auto options = long_timeouts();
  log.attach(options);
  std::size_t switched = 0;
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        auto res = http::response::text(101, "");
        res.upgrade = [&](http::upgraded&) -> awaitable<void> {
          ++switched;
          co_return;
        };
        co_return res;
      },
      options);
  http::server no_tunnel(
      io.get_executor(),
      [](http::request&) -> awaitable<http::response> { co_return http::response::text(200, ""); }, options);
  stop_on_exit stop(io, srv);
  stop_on_exit stop_no_tunnel(io, no_tunnel);
  auto ep = srv.listen(loopback_any);
  auto no_tunnel_ep = no_tunnel.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    // A 101 to a request without Upgrade: refused, and the connection serves on.
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/no-upgrade-asked"));
    auto r = co_await c.read_response();
    CHECK(r.status == 500);
    CHECK(!r.closes());
    // A 200 to CONNECT with no upgrade function would be read as an open tunnel.
    auto t = co_await http_client::connect(no_tunnel_ep);
    co_await t.send("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
    auto tr = co_await t.read_response();
    CHECK(tr.status == 500);
    CHECK(tr.closes());
    CHECK(switched == 0);
    CHECK(log.errors.size() == 2);
    co_await srv.stop_now();
    co_await no_tunnel.stop_now();
  });
}

TEST_CASE("a malformed body found while discarding it: the response whole, then a lingering close, counted") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  log.attach(options);
  int handled = 0;
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        ++handled;
        co_return http::response::text(200, "answered unread\n");
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    // The bad chunk size line comes with a next request and plenty more: closing on them unread
    // would reset the connection under the response.
    co_await c.send("POST /ignore HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + get("/next") +
                    std::string(64 * 1024, 'g'));
    auto r = co_await c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "answered unread\n");
    CHECK(!r.closes());  // it was sent before the body turned out malformed
    auto end = co_await c.wait_closed();
    CHECK(end.ec == asio::error::eof);  // a FIN after the whole response, not a reset
    CHECK(end.extra.empty());           // nothing for the pipelined request
    c.close();
    co_await log.until_closed(c.local_endpoint());
    CHECK(handled == 1);
    CHECK(srv.unread_bodies_rejected() == 1);
    CHECK(log.history(c.local_endpoint()) == "new>reading reading>active active>closing closed@closing");
    co_await srv.stop_now();
  });
}
