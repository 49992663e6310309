// The HTTP server's protocol behaviour over loopback: pipelining, malformed requests, Expect,
// keep-alive, HEAD, streamed bodies both ways, timeouts, request limits, connection states,
// close_idle(), lingering close, handler errors, IPv6. Shutdown scenarios: http_shutdown_test.cpp.
//
// Every test runs client and server on one single-threaded io_context and waits on events (a
// response, an end of stream, a server callback), never on sleeps. The only timers are the
// server's timeouts under test and, where a test is about time passing, a client's pace or a
// handler's pause.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <asio/steady_timer.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

using namespace sluice::test;
using cs = sluice::http::connection_state;

namespace {

// "<method> <target> <body>", the body read whole.
awaitable<http::response> echo_request(http::request& req) {
  std::string body = co_await req.read_body();
  std::string text(req.method());
  text.append(" ").append(req.target()).append(" ").append(body);
  co_return http::response::text(200, std::move(text));
}

awaitable<http::response> hello(http::request&) { co_return http::response::text(200, "hello\n"); }

std::string post(std::string_view target, std::string_view body) {
  std::string r = "POST ";
  r.append(target).append(" HTTP/1.1\r\nHost: test\r\nContent-Length: ").append(std::to_string(body.size()));
  r.append("\r\n\r\n").append(body);
  return r;
}

}  // namespace

TEST_CASE("pipelined requests are answered in order, and the connection stays open") {
  asio::io_context io;
  http::server srv(io.get_executor(), echo_request, long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/1") + post("/2", "body") + get("/3"));
    for (std::string_view expected : {"GET /1 ", "POST /2 body", "GET /3 "}) {
      auto r = co_await c.read_response();
      CHECK(r.status == 200);
      CHECK(r.body == expected);
      CHECK(!r.header("connection"));
    }
    auto again = co_await c.request(get("/4"));
    CHECK(again.body == "GET /4 ");
    co_await srv.stop_now();
  });
}

TEST_CASE("every class of malformed request gets its status with Connection: close; the server serves on") {
  struct bad_request {
    const char* what;
    std::string bytes;
    unsigned status;
  };
  const std::string chunked_head = "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string many_fields = "GET / HTTP/1.1\r\nHost: test\r\n";
  for (int i = 0; i < 150; ++i) many_fields.append("X-").append(std::to_string(i)).append(": v\r\n");
  many_fields += "\r\n";
  const std::vector<bad_request> cases = {
      {"bare LF", "GET / HTTP/1.1\nHost: test\n\n", 400},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: test\r\nX-Folded: a\r\n b\r\n\r\n", 400},
      {"invalid token in the method", "G(T / HTTP/1.1\r\nHost: test\r\n\r\n", 400},
      {"invalid token in a field name", "GET / HTTP/1.1\r\nHost: test\r\nBad[Name]: v\r\n\r\n", 400},
      {"Content-Length with Transfer-Encoding",
       "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 400},
      {"bad chunk size", chunked_head + "zz\r\nhello\r\n0\r\n\r\n", 400},
      {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400},
      {"Content-Length over max_body", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 65537\r\n\r\n", 413},
      {"chunked body over max_body",
       chunked_head + "a000\r\n" + std::string(0xa000, 'x') + "\r\na000\r\n" + std::string(0xa000, 'y') +
           "\r\n0\r\n\r\n",
       413},
      {"long target", get(std::string("/").append(2000, 't')), 414},
      {"too many header fields", many_fields, 431},
      {"header section too large", get("/", std::string("X-Big: ").append(20000, 'b').append("\r\n")), 431},
      {"Transfer-Encoding: gzip, chunked", "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       501},
      {"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: test\r\n\r\n", 505},
  };

  asio::io_context io;
  auto options = long_timeouts();
  options.limits.max_target = 1024;
  options.limits.max_body = 64 * 1024;
  http::server srv(io.get_executor(), echo_request, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto regular = co_await http_client::connect(ep);
    CHECK((co_await regular.request(get("/before"))).status == 200);
    for (auto& bad : cases) {
      INFO(bad.what);
      auto c = co_await http_client::connect(ep);
      co_await c.send(bad.bytes);
      auto r = co_await c.read_response();
      CHECK(r.status == bad.status);
      CHECK(r.closes());
      CHECK(r.body.starts_with(std::to_string(bad.status) + " "));
      // Lingering close: the unread rest of the request is drained, so the end is orderly.
      auto end = co_await c.wait_closed();
      CHECK(end.ec == asio::error::eof);
      CHECK(end.extra.empty());
      auto still = co_await regular.request(get("/after"));
      CHECK(still.status == 200);
      CHECK(still.body == "GET /after ");
    }
    co_await srv.stop_now();
  });
}

TEST_CASE("Expect: 100-continue is answered when the handler reads the body, rejected when it does not") {
  asio::io_context io;
  int rejected = 0;
  http::server srv(
      io.get_executor(),
      [&](http::request& req) -> awaitable<http::response> {
        if (req.target() == "/reject") {
          ++rejected;
          co_return http::response::text(403, "not that\n");
        }
        co_return co_await echo_request(req);
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  const std::string expect = "Expect: 100-continue\r\n";
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    // The client holds the body back until it sees the interim response.
    co_await c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n" + expect + "\r\n");
    auto interim = co_await c.read_response();
    CHECK(interim.status == 100);
    CHECK(c.buffered().empty());
    co_await c.send("hello");
    auto final_response = co_await c.read_response();
    CHECK(final_response.status == 200);
    CHECK(final_response.body == "POST /upload hello");
    CHECK(!final_response.closes());
    CHECK((co_await c.request(get("/next"))).body == "GET /next ");

    auto r = co_await http_client::connect(ep);
    co_await r.send("POST /reject HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n" + expect + "\r\n");
    auto refused = co_await r.read_response();
    CHECK(refused.status == 403);  // the final response at once, no 100 before it
    CHECK(refused.closes());
    auto end = co_await r.wait_closed();
    CHECK(end.closed());
    CHECK(end.extra.empty());
    CHECK(rejected == 1);
    co_await srv.stop_now();
  });
}

TEST_CASE("keep-alive: HTTP/1.1 by default, Connection: close honoured both ways, HTTP/1.0 only on request") {
  asio::io_context io;
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        auto res = http::response::text(200, "ok\n");
        if (req.target() == "/handler-closes") res.headers.add("Connection", "close");
        co_return res;
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto v11 = co_await http_client::connect(ep);
    for (int i = 0; i < 3; ++i) {
      auto r = co_await v11.request(get("/"));
      CHECK(r.status == 200);
      CHECK(!r.header("connection"));
    }

    auto client_closes = co_await http_client::connect(ep);
    auto r1 = co_await client_closes.request(get("/", "Connection: close\r\n"));
    CHECK(r1.closes());
    CHECK((co_await client_closes.wait_closed()).ec == asio::error::eof);

    auto handler_closes = co_await http_client::connect(ep);
    auto r2 = co_await handler_closes.request(get("/handler-closes"));
    CHECK(r2.closes());
    CHECK(r2.count("connection") == 1);
    CHECK((co_await handler_closes.wait_closed()).ec == asio::error::eof);

    auto v10 = co_await http_client::connect(ep);
    auto r3 = co_await v10.request("GET / HTTP/1.0\r\n\r\n");
    CHECK(r3.closes());
    CHECK(r3.body == "ok\n");
    CHECK((co_await v10.wait_closed()).ec == asio::error::eof);

    auto v10_keep = co_await http_client::connect(ep);
    for (int i = 0; i < 2; ++i) {
      auto r = co_await v10_keep.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      CHECK(r.has_token("connection", "keep-alive"));
      CHECK(r.header("content-length") == "3");
      CHECK(r.body == "ok\n");
    }
    co_await srv.stop_now();
  });
}

TEST_CASE("HEAD gets the header fields GET would, Content-Length included, and no body") {
  asio::io_context io;
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        auto res = http::response::text(200, "twelve bytes");
        res.headers.add("X-Custom", "kept");
        res.headers.add("Content-Length", "999");  // framing is the server's: replaced
        res.headers.add("Transfer-Encoding", "gzip");
        if (req.target() == "/stream") {
          res.stream = [](http::body_writer& w) -> awaitable<void> { co_await w.write("streamed"); };
        }
        co_return res;
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto got = co_await c.request(get("/doc"));
    auto head = co_await c.request("HEAD /doc HTTP/1.1\r\nHost: test\r\n\r\n", true);
    CHECK(c.buffered().empty());
    CHECK(head.status == 200);
    CHECK(got.header("content-length") == "12");
    CHECK(got.count("content-length") == 1);
    CHECK(!got.header("transfer-encoding"));
    CHECK(got.header("x-custom") == "kept");
    CHECK(head.header("content-length") == "12");
    CHECK(head.body.empty());
    auto without_date = [](std::vector<std::pair<std::string, std::string>> h) {
      std::erase_if(h, [](auto& f) { return iequal(f.first, "date"); });
      return h;
    };
    CHECK(without_date(head.headers) == without_date(got.headers));

    auto streamed_head = co_await c.request("HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n", true);
    CHECK(streamed_head.header("transfer-encoding") == "chunked");
    CHECK(streamed_head.count("transfer-encoding") == 1);
    CHECK(!streamed_head.header("content-length"));
    CHECK(c.buffered().empty());
    // Had any body byte followed either HEAD response, this one would not parse.
    auto after = co_await c.request(get("/doc"));
    CHECK(after.body == "twelve bytes");
    co_await srv.stop_now();
  });
}

TEST_CASE("a streamed response is chunked for HTTP/1.1 and delimited by closing for HTTP/1.0") {
  asio::io_context io;
  http::server srv(
      io.get_executor(),
      [](http::request&) -> awaitable<http::response> {
        http::response res;
        res.stream = [](http::body_writer& w) -> awaitable<void> {
          co_await w.write("one,");
          co_await w.write("");  // writes nothing: an empty chunk would end the body
          co_await w.write("two,");
          co_await w.write("three");
        };
        co_return res;
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request(get("/"));
    CHECK(r.chunked);
    CHECK(r.chunk_sizes == std::vector<std::size_t>{4, 4, 5});
    CHECK(r.body == "one,two,three");
    CHECK(!r.header("content-length"));
    CHECK(!r.closes());
    CHECK((co_await c.request(get("/"))).body == "one,two,three");

    auto old = co_await http_client::connect(ep);
    auto r10 = co_await old.request("GET / HTTP/1.0\r\n\r\n");
    CHECK(r10.until_close);
    CHECK(r10.closes());
    CHECK(!r10.header("transfer-encoding"));
    CHECK(!r10.header("content-length"));
    CHECK(r10.body == "one,two,three");
    co_await srv.stop_now();
  });
}

TEST_CASE("a streamed response reaches the client piece by piece") {
  asio::io_context io;
  gate g(io);
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        http::response res;
        res.stream = [&](http::body_writer& w) -> awaitable<void> {
          co_await w.write("first");
          co_await g.pass();
          co_await w.write("second");
        };
        co_return res;
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/"));
    auto start = co_await c.read_until("5\r\nfirst\r\n");
    CHECK(start.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
    co_await g.until_entered();
    CHECK(c.buffered().empty());
    g.open();
    CHECK(co_await c.read_until("0\r\n\r\n") == "6\r\nsecond\r\n0\r\n\r\n");
    co_await srv.stop_now();
  });
}

TEST_CASE("a streamed response may pause longer than write_timeout between two writes") {
  // The write timeout is about a peer that stops reading, not a producer taking its time.
  asio::io_context io;
  auto options = long_timeouts();
  options.write_timeout = 400ms;
  const std::string big(16 << 20, 'b');  // more than the socket buffers take: the write waits for the client
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        http::response res;
        res.stream = [&](http::body_writer& w) -> awaitable<void> {
          co_await w.write(big);
          asio::steady_timer pause(co_await asio::this_coro::executor, 2 * options.write_timeout);
          co_await pause.async_wait(use_awaitable);
          co_await w.write("tail");
        };
        co_return res;
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request(get("/"));
    CHECK(r.body.size() == big.size() + 4);
    CHECK(r.body.ends_with("btail"));
    co_await srv.stop_now();
  });
}

TEST_CASE("a body left unread is discarded to keep the connection, within max_discard; beyond, the response closes") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.linger_timeout = 30s;  // longer than the test may take: the connection must end without it
  options.max_discard = 1024;
  log.attach(options);
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        co_return http::response::text(200, std::string(req.target()));
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(post("/small", std::string(1000, 'd')) + get("/next"));
    CHECK(!(co_await c.read_response()).closes());
    CHECK((co_await c.read_response()).body == "/next");

    // Over max_discard: the response closes the connection instead.
    co_await c.send(post("/large", std::string(2000, 'd')));
    CHECK((co_await c.read_response()).closes());
    CHECK((co_await c.wait_closed()).ec == asio::error::eof);
    c.close();
    co_await log.until_closed(c.local_endpoint());

    // The peer sends part of a body, gets its response, and ends its side.
    auto leaving = co_await http_client::connect(ep);
    co_await leaving.send("POST /partial HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789");
    CHECK(!(co_await leaving.read_response()).closes());
    leaving.socket().shutdown(tcp::socket::shutdown_send);
    co_await check_closed_silently(leaving);
    co_await log.until_closed(leaving.local_endpoint());
    CHECK(srv.connections().total() == 0);
    co_await srv.stop_now();
  });
}

TEST_CASE("a 1 MB chunked upload is read piece by piece, never held whole") {
  asio::io_context io;
  std::size_t bytes = 0, pieces = 0, largest = 0;
  std::uint64_t sum = 0;
  http::server srv(
      io.get_executor(),
      [&](http::request& req) -> awaitable<http::response> {
        for (;;) {
          auto piece = co_await req.read_some();
          if (piece.empty()) break;
          bytes += piece.size();
          ++pieces;
          largest = std::max(largest, piece.size());
          for (unsigned char ch : piece) sum += ch;
        }
        co_return http::response::text(200, std::to_string(bytes));
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send("POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::uint64_t expected_sum = 0;
    std::size_t offset = 0;
    // One 512 KB chunk, then 128 chunks of 4 KB: 1 MB.
    auto send_chunk = [&](std::size_t size) {
      std::string data(size, '\0');
      for (auto& ch : data) {
        ch = static_cast<char>(offset++ % 251);
        expected_sum += static_cast<unsigned char>(ch);
      }
      char hex[20];
      auto end = std::to_chars(hex, hex + sizeof hex, size, 16).ptr;
      return std::string(hex, end) + "\r\n" + data + "\r\n";
    };
    std::string chunk = send_chunk(512 * 1024);
    co_await c.send(chunk);
    for (int i = 0; i < 128; ++i) {
      chunk = send_chunk(4096);
      co_await c.send(chunk);
    }
    co_await c.send("0\r\n\r\n");
    auto r = co_await c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "1048576");
    CHECK(bytes == 1u << 20);
    CHECK(sum == expected_sum);
    CHECK(pieces > 128);
    CHECK(largest < 64 * 1024);  // bounded by the server's read buffer, not by the chunk or the body
    co_await srv.stop_now();
  });
}

TEST_CASE("header timeout: a client trickling its head byte by byte is dropped unanswered") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.header_timeout = 250ms;
  log.attach(options);
  http::server srv(io.get_executor(), hello, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    const auto peer = c.local_endpoint();
    // A head that would take 5 s to arrive at one byte per 5 ms.
    const std::string head = get("/", std::string("X-Slow: ").append(1000, 's').append("\r\n"));
    const auto start = std::chrono::steady_clock::now();
    asio::steady_timer pace(io);
    std::size_t sent = 0;
    while (!log.closed(peer) && sent < head.size()) {
      if (co_await c.try_send(std::string_view(head).substr(sent, 1))) break;
      ++sent;
      pace.expires_after(5ms);
      co_await pace.async_wait(use_awaitable);
    }
    auto end = co_await c.wait_closed();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(end.closed());
    CHECK(end.extra.empty());
    CHECK(sent < head.size());
    CHECK(elapsed >= options.header_timeout);
    CHECK(elapsed < 5s);
    co_await log.until_closed(peer);
    CHECK(log.history(peer) == "new>reading closed@reading");
    co_await srv.stop_now();
  });
}

TEST_CASE("idle timeout: a keep-alive connection with no next request is closed") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.idle_timeout = 200ms;
  log.attach(options);
  http::server srv(io.get_executor(), hello, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    const auto start = std::chrono::steady_clock::now();
    auto r = co_await c.request(get("/"));
    CHECK(!r.closes());
    auto end = co_await c.wait_closed();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(end.ec == asio::error::eof);
    CHECK(end.extra.empty());
    CHECK(elapsed >= options.idle_timeout);
    CHECK(elapsed < 5s);
    co_await log.until_closed(c.local_endpoint());
    CHECK(log.history(c.local_endpoint()) == "new>reading reading>active active>idle closed@idle");
    co_await srv.stop_now();
  });
}

TEST_CASE("body timeout: a request body that stalls gets 408 and the connection closes") {
  asio::io_context io;
  auto options = long_timeouts();
  options.body_timeout = 200ms;
  std::error_code handler_saw;
  std::string handler_got;
  http::server srv(
      io.get_executor(),
      [&](http::request& req) -> awaitable<http::response> {
        try {
          for (;;) {
            auto piece = co_await req.read_some();
            if (piece.empty()) break;
            handler_got.append(piece);
          }
        } catch (const std::system_error& e) {
          handler_saw = e.code();
          throw;
        }
        co_return http::response::text(200, "unexpected\n");
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789");
    auto r = co_await c.try_read_response();
    REQUIRE(r);
    CHECK(r->status == 408);
    CHECK(r->closes());
    CHECK((co_await c.wait_closed()).closed());
    CHECK(handler_got == "0123456789");
    CHECK(handler_saw == asio::error::timed_out);
    CHECK(srv.connections().total() == 0);
    co_await srv.stop_now();
  });
}

TEST_CASE("write timeout: a client that never reads a huge streamed response is dropped") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.write_timeout = 200ms;
  log.attach(options);
  std::size_t written = 0;
  std::error_code stream_saw;
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> {
        http::response res;
        res.stream = [&](http::body_writer& w) -> awaitable<void> {
          const std::string block(64 * 1024, 'w');
          try {
            for (;;) {
              co_await w.write(block);
              written += block.size();
            }
          } catch (const std::system_error& e) {
            stream_saw = e.code();
            throw;
          }
        };
        co_return res;
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/"));
    co_await log.until_closed(c.local_endpoint());
    CHECK(srv.connections().total() == 0);
    CHECK(written > 0);
    CHECK(stream_saw);
    CHECK(log.history(c.local_endpoint()) == "new>reading reading>active closed@active");
    co_await srv.stop_now();
  });
}

TEST_CASE("max_requests_per_connection: the last response allowed closes; a request pipelined past it gets 503") {
  asio::io_context io;
  auto options = long_timeouts();
  options.max_requests_per_connection = 2;
  int handled = 0;
  http::server srv(
      io.get_executor(),
      [&](http::request& req) -> awaitable<http::response> {
        ++handled;
        co_return http::response::text(200, std::string(req.target()));
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto one_by_one = co_await http_client::connect(ep);
    auto r1 = co_await one_by_one.request(get("/1"));
    CHECK(!r1.closes());
    auto r2 = co_await one_by_one.request(get("/2"));
    CHECK(r2.status == 200);
    CHECK(r2.closes());
    CHECK((co_await one_by_one.wait_closed()).ec == asio::error::eof);
    CHECK(handled == 2);

    auto two = co_await http_client::connect(ep);
    co_await two.send(get("/a") + get("/b"));
    CHECK(!(co_await two.read_response()).closes());
    CHECK((co_await two.read_response()).closes());
    CHECK((co_await two.wait_closed()).ec == asio::error::eof);
    CHECK(handled == 4);

    // With a third request already read, the second response cannot end the connection (the
    // third would be dropped unanswered): the third gets the 503, and the close.
    auto three = co_await http_client::connect(ep);
    co_await three.send(get("/x") + get("/y") + get("/z"));
    auto x = co_await three.read_response();
    auto y = co_await three.read_response();
    auto z = co_await three.read_response();
    CHECK(x.body == "/x");
    CHECK(!x.closes());
    CHECK(y.body == "/y");
    CHECK(!y.closes());
    CHECK(z.status == 503);
    CHECK(z.closes());
    CHECK((co_await three.wait_closed()).ec == asio::error::eof);
    CHECK(handled == 6);
    co_await srv.stop_now();
  });
}

TEST_CASE("connection states are counted at each step, and on_state_change reports every change in order") {
  asio::io_context io;
  state_log log(io);
  gate g(io);
  std::error_code echo_end;
  auto options = long_timeouts();
  log.attach(options);
  http::server srv(io.get_executor(), upgrade_or_ok(echo_end, &g), options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  auto counts_are = [&](std::size_t fresh, std::size_t reading, std::size_t active, std::size_t idle,
                        std::size_t upgraded, std::size_t closing) {
    auto c = srv.connections();
    return c[cs::fresh] == fresh && c[cs::reading] == reading && c[cs::active] == active && c[cs::idle] == idle &&
           c[cs::upgraded] == upgraded && c[cs::closing] == closing;
  };
  run_guarded(io, [&]() -> awaitable<void> {
    CHECK(srv.connections().total() == 0);
    auto a = co_await http_client::connect(ep);
    auto b = co_await http_client::connect(ep);
    // `a` was accepted first, so its session has started (and waits for a request) by the time
    // `b` has a response.
    CHECK((co_await b.request(get("/"))).status == 200);
    co_await log.until_entered(b.local_endpoint(), cs::idle);
    CHECK(counts_are(1, 0, 0, 1, 0, 0));

    co_await a.send("GET /gate HTTP/1.1\r\nHo");
    co_await log.until_entered(a.local_endpoint(), cs::reading);
    CHECK(counts_are(0, 1, 0, 1, 0, 0));
    co_await a.send("st: test\r\n\r\n");
    co_await g.until_entered();
    CHECK(counts_are(0, 0, 1, 1, 0, 0));
    g.open();
    CHECK(!(co_await a.read_response()).closes());
    co_await log.until_entered(a.local_endpoint(), cs::idle);
    CHECK(counts_are(0, 0, 0, 2, 0, 0));

    auto u = co_await http_client::connect(ep);
    co_await u.send(upgrade_request("/upgrade") + "hi");
    CHECK((co_await u.read_response()).status == 101);
    CHECK(co_await u.read_exact(2) == "hi");
    CHECK(counts_are(0, 0, 0, 2, 1, 0));

    CHECK((co_await a.request(get("/", "Connection: close\r\n"))).closes());
    CHECK((co_await a.wait_closed()).ec == asio::error::eof);
    // Nothing more was coming from the client: no lingering, the socket closes at once.
    co_await log.until_closed(a.local_endpoint());
    CHECK(counts_are(0, 0, 0, 1, 1, 0));
    a.close();

    auto summary = co_await srv.stop_now();
    CHECK(summary.forced == 2);
    CHECK(srv.connections().total() == 0);
    CHECK(echo_end == asio::error::operation_aborted);
    CHECK(log.history(a.local_endpoint()) ==
          "new>reading reading>active active>idle idle>reading reading>active active>closing closed@closing");
    CHECK(log.history(b.local_endpoint()) == "new>reading reading>active active>idle closed@idle");
    CHECK(log.history(u.local_endpoint()) == "new>reading reading>active active>upgraded closed@upgraded");
  });
}

TEST_CASE("an upgraded connection: set_state(websocket) is counted; wait_readable and try_read_some read leftover bytes first") {
  asio::io_context io;
  state_log log(io);
  std::error_code ended;
  auto options = long_timeouts();
  log.attach(options);
  // Echoes without holding a buffer between reads: wait_readable(), then try_read_some() until
  // would_block, through a small buffer so that the leftover bytes take several reads.
  auto upgrade = [&ended](http::upgraded& u) -> awaitable<void> {
    u.set_state(cs::websocket);
    char buf[3];
    for (;;) {
      if (auto [ec] = co_await u.wait_readable(); ec) {
        ended = ec;
        co_return;
      }
      for (;;) {
        std::error_code ec;
        const std::size_t n = u.try_read_some(asio::buffer(buf), ec);
        if (ec == asio::error::would_block) break;
        if (ec) {
          ended = ec;
          co_return;
        }
        co_await u.write(std::string_view(buf, n));
      }
    }
  };
  auto handler = [&upgrade](http::request&) -> awaitable<http::response> {
    http::response res;
    res.status = 101;
    res.headers.add("Upgrade", "echo");
    res.headers.add("Connection", "Upgrade");
    res.upgrade = upgrade;
    co_return res;
  };
  http::server srv(io.get_executor(), handler, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    co_await c.send(upgrade_request("/upgrade") + "leftover");
    CHECK((co_await c.read_response()).status == 101);
    CHECK(co_await c.read_exact(8) == "leftover");
    auto counts = srv.connections();
    CHECK(counts[cs::websocket] == 1);
    CHECK(counts[cs::upgraded] == 0);
    CHECK(counts.total() == 1);
    co_await c.send("from the socket");
    CHECK(co_await c.read_exact(15) == "from the socket");
    c.socket().shutdown(tcp::socket::shutdown_send);
    co_await check_closed_silently(c);
    co_await log.until_closed(c.local_endpoint());
    CHECK(ended == asio::error::eof);
    CHECK(srv.connections().total() == 0);
    CHECK(log.history(c.local_endpoint()) ==
          "new>reading reading>active active>upgraded upgraded>websocket closed@websocket");
    CHECK(http::to_string(cs::websocket) == "websocket");
  });
}

TEST_CASE("close_idle() closes idle and never-used connections only") {
  asio::io_context io;
  state_log log(io);
  gate g(io);
  std::error_code echo_end;
  auto options = long_timeouts();
  log.attach(options);
  http::server srv(io.get_executor(), upgrade_or_ok(echo_end, &g), options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto fresh = co_await http_client::connect(ep);
    auto idle = co_await http_client::connect(ep);
    CHECK((co_await idle.request(get("/"))).status == 200);
    auto reading = co_await http_client::connect(ep);
    co_await reading.send("GET / HTTP/1.1\r\nHost: te");
    co_await log.until_entered(reading.local_endpoint(), cs::reading);
    auto active = co_await http_client::connect(ep);
    co_await active.send(get("/gate"));
    co_await g.until_entered();
    auto upgraded = co_await http_client::connect(ep);
    CHECK((co_await upgraded.request(upgrade_request("/upgrade"))).status == 101);
    auto c = srv.connections();
    CHECK(c[cs::fresh] == 1);
    CHECK(c[cs::idle] == 1);
    CHECK(c[cs::reading] == 1);
    CHECK(c[cs::active] == 1);
    CHECK(c[cs::upgraded] == 1);

    srv.close_idle();
    for (auto* closed : {&fresh, &idle}) {
      auto end = co_await closed->wait_closed();
      CHECK(end.closed());
      CHECK(end.extra.empty());
      co_await log.until_closed(closed->local_endpoint());
    }
    c = srv.connections();
    CHECK(c.total() == 3);
    CHECK(c[cs::reading] == 1);
    CHECK(c[cs::active] == 1);
    CHECK(c[cs::upgraded] == 1);

    // The others carry on, and stay open: the server is not shutting down.
    co_await reading.send("st\r\n\r\n");
    CHECK(!(co_await reading.read_response()).closes());
    g.open();
    CHECK(!(co_await active.read_response()).closes());
    co_await upgraded.send("still echoing");
    CHECK(co_await upgraded.read_exact(13) == "still echoing");
    CHECK((co_await reading.request(get("/again"))).status == 200);

    auto summary = co_await srv.stop_now();
    CHECK(summary.forced == 3);
    CHECK(summary.idle_closed == 0);
  });
}

TEST_CASE("lingering close: a full response survives garbage pipelined after Connection: close") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.linger_timeout = 200ms;
  log.attach(options);
  const std::string body(1 << 20, 'r');
  http::server srv(
      io.get_executor(),
      [&](http::request&) -> awaitable<http::response> { co_return http::response::text(200, body); }, options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    // The 64 KB after the request are never read as requests; closing on them unread would
    // reset the connection and could destroy the response before the client has read it.
    auto c = co_await http_client::connect(ep);
    co_await c.send(get("/", "Connection: close\r\n") + std::string(64 * 1024, 'g'));
    auto r = co_await c.read_response();
    CHECK(r.status == 200);
    CHECK(r.closes());
    CHECK(r.body == body);
    CHECK((co_await c.wait_closed()).ec == asio::error::eof);
    c.close();
    co_await log.until_closed(c.local_endpoint());

    // A client that never closes its side is left after linger_timeout.
    auto stays = co_await http_client::connect(ep);
    const auto start = std::chrono::steady_clock::now();
    co_await stays.send(get("/", "Connection: close\r\n") + "more bytes");
    CHECK((co_await stays.read_response()).body == body);
    CHECK((co_await stays.wait_closed()).ec == asio::error::eof);
    co_await log.until_closed(stays.local_endpoint());
    CHECK(std::chrono::steady_clock::now() - start >= options.linger_timeout);
    CHECK(srv.connections().total() == 0);
    CHECK(log.history(stays.local_endpoint()) == "new>reading reading>active active>closing closed@closing");
    co_await srv.stop_now();
  });
}

TEST_CASE("an exception escaping a handler gives 500 and reaches on_handler_error; other connections carry on") {
  asio::io_context io;
  std::vector<std::string> errors;
  auto options = long_timeouts();
  options.on_handler_error = [&](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      errors.emplace_back(ex.what());
    }
  };
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        if (req.target() == "/throw") throw std::runtime_error("handler failed on purpose");
        co_return http::response::text(200, "fine\n");
      },
      options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto other = co_await http_client::connect(ep);
    CHECK((co_await other.request(get("/"))).status == 200);
    auto failing = co_await http_client::connect(ep);
    auto r = co_await failing.request(get("/throw"));
    CHECK(r.status == 500);
    CHECK(r.closes());
    CHECK(r.body == "500 Internal Server Error\n");  // nothing of the exception leaks to the client
    CHECK((co_await failing.wait_closed()).ec == asio::error::eof);
    CHECK(errors == std::vector<std::string>{"handler failed on purpose"});
    CHECK((co_await other.request(get("/"))).body == "fine\n");
    co_await srv.stop_now();
  });
}

TEST_CASE("listens and serves on the IPv6 loopback") {
  asio::io_context io;
  http::server srv(io.get_executor(), hello, long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen("::1", 0);
  CHECK(ep.address().is_v6());
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request(get("/"));
    CHECK(r.status == 200);
    CHECK(r.body == "hello\n");
    auto summary = co_await srv.stop_now();
    CHECK(summary.forced == 1);
  });
}
