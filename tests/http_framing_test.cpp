// Hostile framing over loopback: chunk framing floods (the class of CVE-2024-22019) against
// handlers that read the body and handlers that leave it, max_discard counted in wire bytes, and
// absolute-form targets reconciled with Host. The parser-level rules are in http_parser_test.cpp.
//
// Client and server share one single-threaded io_context; the tests wait on events (a response,
// an end of stream, a connection's end), never on sleeps.
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/http_client.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

using namespace sluice::test;

namespace {

const std::string chunked_post = "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";

// Chunks of one body byte behind a 4,000-byte extension, as in the report: 4,007 wire bytes each.
std::string extension_flood_block() {
  const std::string chunk = "1;" + std::string(4000, 'e') + "\r\nx\r\n";
  std::string block;
  while (block.size() < 64 * 1024) block += chunk;
  return block;
}

// A client writing a flood beside the test's reads: `block` over and over until `stop` is set,
// a write fails or `limit` bytes are out, then the last chunk. `sent` is what the kernel took,
// exactly: writes are counted piece by piece. Shared, so that a test leaving early (a failed
// REQUIRE) leaves the writer nothing dangling.
struct flood {
  std::size_t sent = 0;
  bool stop = false;
};

awaitable<void> send_flood(tcp::socket& socket, std::string block, std::size_t limit, std::shared_ptr<flood> f) {
  while (!f->stop && (f->sent < limit || f->sent % block.size() != 0)) {
    auto [ec, n] = co_await socket.async_write_some(asio::buffer(block) + f->sent % block.size(), nothrow);
    f->sent += n;
    if (ec) co_return;  // the socket may be gone: touch it no more
  }
  if (!f->stop) co_await asio::async_write(socket, asio::buffer("0\r\n\r\n", 5), nothrow);
}

// What the client may have sent when the server ended the connection: the 16 KiB framing
// allowance and what the kernels buffer (the client's send buffer is held at 64 KiB; the
// server's receive buffer, 128 KiB at first, has had no time to grow); measured: 136 KB. The
// bound is generous, the flood 32 times larger (the code before the fix read all of it).
constexpr std::size_t flood_size = 32 * 1024 * 1024;
constexpr std::size_t accepted_bound = 1024 * 1024;

// Sends a chunked request head and the flood; returns the first response and how many bytes
// the client had sent when the server ended the connection. The server must end it by itself.
awaitable<std::size_t> flood_until_closed(tcp::endpoint ep, state_log& log, http_response& first) {
  auto c = co_await http_client::connect(ep);
  c.socket().set_option(asio::socket_base::send_buffer_size(64 * 1024));
  co_await c.send(chunked_post);
  auto f = std::make_shared<flood>();
  auto ex = co_await asio::this_coro::executor;
  auto sender_done = std::make_shared<event>(ex);
  auto on_sender_done = [sender_done](std::exception_ptr) { sender_done->set(); };
  asio::co_spawn(ex, send_flood(c.socket(), extension_flood_block(), flood_size, f), std::move(on_sender_done));
  first = co_await c.read_response();
  const close_result end = co_await c.wait_closed();
  const std::size_t sent_at_close = f->sent;
  CHECK(end.closed());
  CHECK(end.extra.empty());
  f->stop = true;
  co_await sender_done->wait();
  // The server lingers until the peer is done sending; this peer is.
  c.socket().shutdown(tcp::socket::shutdown_send);
  co_await log.until_closed(c.local_endpoint());
  co_return sent_at_close;
}

http::server_options flood_options(state_log& log) {
  auto options = long_timeouts();
  // Only on the code before the fix, which keeps the connection after the flood: it then ends
  // by this timeout instead of holding the test until the guard.
  options.idle_timeout = std::chrono::seconds(1);
  log.attach(options);
  return options;
}

}  // namespace

TEST_CASE("a chunk-extension flood read by the handler: 413 with Connection: close after a bounded read") {
  asio::io_context io;
  state_log log(io);
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        auto body = co_await req.read_body();
        co_return http::response::text(200, std::to_string(body.size()));
      },
      flood_options(log));
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(
      io,
      [&]() -> awaitable<void> {
        http_response r;
        const std::size_t sent = co_await flood_until_closed(ep, log, r);
        CHECK(r.status == 413);
        CHECK(r.closes());
        CHECK(r.body.find("chunk framing") != std::string::npos);
        CHECK(sent < accepted_bound);
        MESSAGE("bytes sent when the server closed: ", sent);
        CHECK(srv.connections().total() == 0);
        co_await srv.stop_now();
      },
      std::chrono::seconds(60));
}

TEST_CASE("a chunk-extension flood the handler leaves unread: the discard stops after a bounded read") {
  asio::io_context io;
  state_log log(io);
  http::server srv(
      io.get_executor(),
      [](http::request&) -> awaitable<http::response> { co_return http::response::text(200, "unread\n"); },
      flood_options(log));
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(
      io,
      [&]() -> awaitable<void> {
        // The response goes out before the body is read, so it cannot be the 413; the flood
        // then ends the connection (its end is the answer), long before max_discard's 256 KiB
        // of decoded body would.
        http_response r;
        const std::size_t sent = co_await flood_until_closed(ep, log, r);
        CHECK(r.status == 200);
        CHECK(r.body == "unread\n");
        CHECK(sent < accepted_bound);
        MESSAGE("bytes sent when the server closed: ", sent);
        co_await srv.stop_now();
      },
      std::chrono::seconds(60));
}

TEST_CASE("max_discard counts the body's wire bytes, chunk framing included") {
  asio::io_context io;
  state_log log(io);
  auto options = long_timeouts();
  options.max_discard = 8 * 1024;
  options.limits.max_chunk_framing = 1024 * 1024;  // so that only max_discard can stop it
  options.idle_timeout = std::chrono::seconds(1);   // ends a connection kept by mistake
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
    // 8 body bytes in 32 KB of chunk extensions, then a pipelined request.
    std::string body;
    for (int i = 0; i < 8; ++i) body += "1;" + std::string(4000, 'e') + "\r\nx\r\n";
    auto c = co_await http_client::connect(ep);
    co_await c.send(chunked_post + body + "0\r\n\r\n" + get("/next"));
    CHECK((co_await c.read_response()).body == "/upload");
    // Discarding stopped at max_discard: the connection ends, /next is not answered.
    co_await check_closed_silently(c);
    c.close();
    co_await log.until_closed(c.local_endpoint());

    // Within max_discard, the connection serves on.
    auto small = co_await http_client::connect(ep);
    co_await small.send(chunked_post + "1;a=b\r\nx\r\n0\r\n\r\n" + get("/next"));
    CHECK((co_await small.read_response()).body == "/upload");
    CHECK((co_await small.read_response()).body == "/next");
    co_await srv.stop_now();
  });
}

TEST_CASE("an absolute-form target: path() is its path, its authority wins over Host") {
  asio::io_context io;
  http::server srv(
      io.get_executor(),
      [](http::request& req) -> awaitable<http::response> {
        std::string text = "path=";
        text.append(req.path()).append(" query=").append(req.query());
        text.append(" authority=").append(req.authority()).append(" target=").append(req.target());
        co_return http::response::text(200, std::move(text));
      },
      long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request("GET http://evil.example/p?q=1 HTTP/1.1\r\nHost: good\r\n\r\n");
    CHECK(r.body == "path=/p query=q=1 authority=evil.example target=http://evil.example/p?q=1");
    r = co_await c.request("GET HTTP://evil.example?q=1 HTTP/1.1\r\nHost: good\r\n\r\n");
    CHECK(r.body == "path=/ query=q=1 authority=evil.example target=HTTP://evil.example?q=1");
    r = co_await c.request("GET /p?q=1 HTTP/1.1\r\nHost: good\r\n\r\n");
    CHECK(r.body == "path=/p query=q=1 authority=good target=/p?q=1");

    for (std::string_view bad : {"GET http://good@evil.example/ HTTP/1.1\r\nHost: good\r\n\r\n",
                                 "GET ftp://good/ HTTP/1.1\r\nHost: good\r\n\r\n",
                                 "GET http:/p HTTP/1.1\r\nHost: good\r\n\r\n"}) {
      INFO(bad);
      auto rejected = co_await http_client::connect(ep);
      r = co_await rejected.request(bad);
      CHECK(r.status == 400);
      CHECK(r.closes());
      CHECK((co_await rejected.wait_closed()).ec == asio::error::eof);
    }
    co_await srv.stop_now();
  });
}
