// HTTPS against clients that stall or cut records short, and the memory an
// idle TLS keep-alive connection holds, pinned.
#include "sluice/tls/server.hpp"

#include "support/heap.hpp"
#include "support/tls_client.hpp"

#include <asio/post.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace sluice::test;
using namespace std::chrono_literals;
namespace tls = sluice::tls;

namespace {

std::shared_ptr<tls::context> hostile_context() { return tls::make_server_context(certs().one.cert, certs().one.key); }

awaitable<http::response> hostile_handler(http::request&) { co_return http::response::text(200, "Hello, world!\n"); }

// How the server is asked to end: at once, or gracefully.
enum class tls_stop_kind { stop_now, shutdown };

// Ends `srv` as `how` says and checks that it took no time: stalled peers are never waited for.
awaitable<void> end_at_once(tls::server& srv, tls_stop_kind how) {
  const auto t0 = std::chrono::steady_clock::now();
  if (how == tls_stop_kind::stop_now)
    co_await srv.stop_now();
  else
    co_await srv.shutdown(30s);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(srv.connections().total() == 0);
}

// Yields until `pred` holds: for server-side facts that no event announces.
template <typename Pred>
awaitable<void> polled_until(const Pred& pred) {
  auto ex = co_await asio::this_coro::executor;
  while (!pred()) co_await asio::post(ex, use_awaitable);
}

}  // namespace

TEST_CASE("a client that stalls after its ClientHello, mid-handshake: stop_now and shutdown close it at once") {
  for (const tls_stop_kind how : {tls_stop_kind::stop_now, tls_stop_kind::shutdown}) {
    CAPTURE(int(how));
    asio::io_context io;
    std::vector<std::string> log;
    tls::options o;
    o.log = [&log](std::string_view line) { log.emplace_back(line); };
    tls::server srv(io.get_executor(), hostile_handler, hostile_context(), long_timeouts(), o);
    auto ep = srv.listen(loopback_any);
    stop_on_exit guard(io, srv);
    run_guarded(io, [&]() -> awaitable<void> {
      auto stalled = co_await connect_to(ep);
      co_await asio::async_write(stalled, asio::buffer(client_hello()), use_awaitable);
      // The server's first flight arrives: it now waits for the client's Finished, forever.
      std::array<char, 256> some;
      CHECK(co_await stalled.async_read_some(asio::buffer(some), use_awaitable) > 0);
      co_await end_at_once(srv, how);
      CHECK(co_await raw_sees_close(stalled));
    });
    CHECK(log.empty());  // the server ended it: no handshake failure to report
  }
}

TEST_CASE("a client that stalls mid-record after a request: stop_now and shutdown close it at once") {
  for (const tls_stop_kind how : {tls_stop_kind::stop_now, tls_stop_kind::shutdown}) {
    CAPTURE(int(how));
    asio::io_context io;
    tls::server srv(io.get_executor(), hostile_handler, hostile_context(), long_timeouts());
    auto ep = srv.listen(loopback_any);
    stop_on_exit guard(io, srv);
    run_guarded(io, [&]() -> awaitable<void> {
      auto ctx = client_context();
      raw_tls_client client(ctx);
      auto s = co_await connect_to(ep);
      co_await client.handshake(s);
      // A whole request and half of the next one's record, in one write.
      const std::string first = client.seal(get("/"));
      const std::string next = client.seal(get("/"));
      const std::string bytes = first + next.substr(0, next.size() / 2);
      co_await asio::async_write(s, asio::buffer(bytes), use_awaitable);
      CHECK((co_await client.read_until(s, "Hello, world!\n")).find("200 OK") != std::string::npos);
      auto idle = [&srv] { return srv.connections()[http::connection_state::idle] == 1; };
      co_await polled_until(idle);
      co_await end_at_once(srv, how);
      CHECK(co_await raw_sees_close(s));
    });
  }
}

TEST_CASE("a truncated record, then silence: the connection ends at its deadline, the server goes on") {
  asio::io_context io;
  auto o = long_timeouts();
  o.header_timeout = 200ms;  // from accept, for a connection that has sent no whole request
  tls::server srv(io.get_executor(), hostile_handler, hostile_context(), o);
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    raw_tls_client client(ctx);
    auto s = co_await connect_to(ep);
    co_await client.handshake(s);
    const std::string record = client.seal(get("/"));
    co_await asio::async_write(s, asio::buffer(record.data(), record.size() - 1), use_awaitable);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(co_await raw_sees_close(s));
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);

    auto good_ctx = client_context();
    auto good = co_await tls_client::connect(ep, good_ctx);
    CHECK((co_await good.request(get("/"))).status == 200);
  });
}

TEST_CASE("an idle TLS keep-alive connection holds under 18 KiB of server heap (500 connections)") {
  // As http_hostile_test's plain figure: client and server share the process, so the clients'
  // sockets are opened first and one client drives them one after another; its TLS state is
  // freed after each connection's request, leaving only the socket. One thread, hint 1.
  // Measured 16.8 KB with OpenSSL 3.0 (TLS 1.3, X25519, AES-GCM): about 2.1 KB is the plain
  // connection's, the rest OpenSSL's own per-connection state, which sluice cannot shrink (the
  // SSL object alone is 7.6 KB, the two AES-GCM contexts 2.3 KB, the session 0.9 KB). The
  // record buffers (2 x 17 KB) are released while idle: a regression there shows at once.
  if (!heap_measurable) {
    MESSAGE("skipped: heap per connection is measured with mallinfo2, meaningless under a sanitizer");
    return;
  }
  constexpr std::size_t connections = 500;
  REQUIRE(allow_connections(connections));

  asio::io_context io(1);
  tls::server srv(io.get_executor(), hostile_handler, hostile_context(), long_timeouts());
  stop_on_exit stop(io, srv);
  const auto ep = srv.listen("127.0.0.1", 0);
  auto ctx = client_context();
  const auto request_once = [&](tcp::socket& s) -> awaitable<void> {
    co_await s.async_connect(ep, use_awaitable);
    raw_tls_client client(ctx);
    co_await client.handshake(s);
    const std::string request = client.seal(get("/"));
    co_await asio::async_write(s, asio::buffer(request), use_awaitable);
    co_await client.read_until(s, "Hello, world!\n");
  };
  const double per_connection =
      heap_per_connection(io, srv, connections, http::connection_state::idle, request_once);
  MESSAGE("server heap per idle TLS keep-alive connection: ", per_connection, " bytes");
  CHECK(per_connection < 18 * 1024);
}
