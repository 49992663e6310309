// WebSocket through sluice's HTTP server, seen from a raw client on loopback: the handshake, echo,
// fragments and control frames, each malformed frame's close code, permessage-deflate, the close
// handshake, keep-alive, and how shutdown(grace) and stop_now() end a WebSocket.
#include "sluice/tls/server.hpp"
#include "sluice/ws/server.hpp"

#include "support/heap.hpp"
#include "support/tls_certs.hpp"
#include "support/ws_client.hpp"

#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace sluice::test;
using sluice::ws::opcode;
namespace cc = sluice::ws::close_code;
using cs = http::connection_state;

// How the server's WebSocket function ended.
struct ending {
  std::optional<std::uint16_t> close_code;  // it saw ws::closed with this code
  std::error_code error;                    // or a std::system_error
  std::size_t ended = 0;
};

// An HTTP handler whose WebSockets echo every message until they close.
struct ws_echo {
  asio::io_context& io;
  ws::options options;
  ending end;
  event finished{io.get_executor()};

  explicit ws_echo(asio::io_context& io, ws::options o = {}) : io(io), options(std::move(o)) {}

  http::server::handler_type handler() {
    return [this](http::request& req) -> awaitable<http::response> {
      if (!ws::is_upgrade(req)) co_return http::response::text(200, "plain\n");
      co_return ws::accept(req, options, [this](ws::connection& c) -> awaitable<void> { co_await echo(c); });
    };
  }

  awaitable<void> echo(ws::connection& c) {
    try {
      for (;;) {
        auto m = co_await c.read();
        co_await c.write(m.data, m.kind);
      }
    } catch (const ws::closed& e) {
      end.close_code = e.code();
      ++end.ended;
      finished.set();
      throw;
    } catch (const std::system_error& e) {
      end.error = e.code();
      ++end.ended;
      finished.set();
      throw;
    }
  }
};

// ws_echo served by an HTTP server.
struct echo_server : ws_echo {
  http::server srv;
  explicit echo_server(asio::io_context& io, ws::options o = {}, http::server_options ho = long_timeouts())
      : ws_echo(io, std::move(o)), srv(io.get_executor(), handler(), ho) {}
};

std::string inflate_all(std::string_view compressed) {
  ws::inflater in(false);
  std::string out;
  REQUIRE(in.inflate(compressed, out, 1 << 20) == 0);
  REQUIRE(in.finish(out, 1 << 20) == 0);
  return out;
}

}  // namespace

TEST_CASE("a WebSocket echoes text and binary messages, and is counted as its own connection state") {
  asio::io_context io;
  echo_server s(io);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    http_response hs;
    auto c = co_await ws_client::connect(ep, {}, &hs);
    CHECK(hs.has_token("upgrade", "websocket"));
    CHECK(!hs.header("sec-websocket-extensions"));
    co_await c.send(opcode::text, "h\xC3\xA9llo");
    auto t = co_await c.read_frame();
    CHECK(t.op() == opcode::text);
    CHECK(t.fin());
    CHECK(t.payload == "h\xC3\xA9llo");
    const std::string big(70000, '\xFE');
    co_await c.send(opcode::binary, big);
    auto b = co_await c.read_frame();
    CHECK(b.op() == opcode::binary);
    CHECK(b.payload == big);
    CHECK(s.srv.connections()[cs::websocket] == 1);

    co_await c.send(opcode::close, close_payload(4000, "done"));
    auto close = co_await c.read_frame();
    CHECK(close.op() == opcode::close);
    CHECK(close.close_code() == 4000);
    co_await check_closed_silently(c.http());
    co_await s.finished.wait();
    CHECK(s.end.close_code == 4000);
  });
}

TEST_CASE("a fragmented message with a ping between its fragments: the pong first, then the whole echo") {
  asio::io_context io;
  echo_server s(io);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await ws_client::connect(ep);
    co_await c.send(client_frame(static_cast<std::uint8_t>(opcode::text), "frag"));
    co_await c.send(opcode::ping, "are you there");
    auto pong = co_await c.read_frame();
    CHECK(pong.op() == opcode::pong);
    CHECK(pong.payload == "are you there");
    co_await c.send(client_frame(static_cast<std::uint8_t>(opcode::continuation), "men"));
    co_await c.send(client_frame(fin(opcode::continuation), "ted"));
    auto echo = co_await c.read_frame();
    CHECK(echo.op() == opcode::text);
    CHECK(echo.payload == "fragmented");
  });
}

TEST_CASE("each malformed frame on a raw socket gets its close code, then the connection closes" * doctest::test_suite("hostile")) {
  struct malformed {
    const char* name;
    std::string bytes;
    std::uint16_t code;
    bool deflate = false;
  };
  // 2 MiB that deflate to less than max_message: only inflating can tell it is too big.
  const std::string bomb = ws::deflater(15, false).compress(std::string(2 << 20, 'z'), 0);
  REQUIRE(bomb.size() < 4096);
  const std::vector<malformed> cases = {
      {"unmasked", client_frame(fin(opcode::text), "hi", false), cc::protocol_error},
      {"bad opcode", client_frame(0x80 | 3, "hi"), cc::protocol_error},
      {"reserved bit", client_frame(0x80 | 0x20 | 1, "hi"), cc::protocol_error},
      {"fragmented control frame", client_frame(static_cast<std::uint8_t>(opcode::ping), "p"), cc::protocol_error},
      {"control payload over 125", client_frame(fin(opcode::ping), std::string(126, 'p')), cc::protocol_error},
      {"continuation without a start", client_frame(fin(opcode::continuation), "x"), cc::protocol_error},
      {"bad UTF-8", client_frame(fin(opcode::text), "ok\xC0\xAF"), cc::invalid_payload},
      {"bad close code", client_frame(fin(opcode::close), close_payload(1005)), cc::protocol_error},
      {"1-byte close payload", client_frame(fin(opcode::close), "\x03"), cc::protocol_error},
      {"oversize", client_frame(fin(opcode::binary), std::string(4097, 'x')), cc::message_too_big},
      {"zip bomb", client_frame(0x80 | 0x40 | 2, bomb), cc::message_too_big, true},
  };
  asio::io_context io;
  ws::options o;
  o.max_message = 4096;
  o.deflate.enabled = true;
  echo_server s(io, o);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    for (auto& m : cases) {
      CAPTURE(m.name);
      auto c = co_await ws_client::connect(ep, m.deflate ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : "");
      co_await c.send(m.bytes);
      auto close = co_await c.read_frame();
      CHECK(close.op() == opcode::close);
      CHECK(close.close_code() == m.code);
      CHECK(ws::is_valid_utf8(close.payload.substr(2)));
      auto end = co_await c.http().wait_closed();
      CHECK(end.closed());
      co_await s.finished.wait();
      CHECK(s.end.close_code == m.code);
      s.finished = event(io.get_executor());
    }
    CHECK(s.end.ended == cases.size());
  });
}

TEST_CASE("the handshake is refused with the right status when it is not a WebSocket version 13 handshake") {
  asio::io_context io;
  echo_server s(io);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    std::string old = upgrade_request_ws();
    old.replace(old.find("Version: 13"), 11, "Version: 8");
    auto r = co_await c.request(old);
    CHECK(r.status == 426);
    CHECK(r.header("sec-websocket-version") == "13");
    auto d = co_await http_client::connect(ep);
    std::string no_key = upgrade_request_ws();
    no_key.erase(no_key.find("Sec-WebSocket-Key"), 45);
    CHECK((co_await d.request(no_key)).status == 400);
  });
}

TEST_CASE("permessage-deflate: compressed messages both ways when the client offers it") {
  asio::io_context io;
  ws::options o;
  o.deflate.enabled = true;
  echo_server s(io, o);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    http_response hs;
    auto c = co_await ws_client::connect(ep, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", &hs);
    CHECK(hs.header("sec-websocket-extensions") == "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    std::string text;
    for (int i = 0; i < 400; ++i) text += "message number " + std::to_string(i % 7) + "; ";
    ws::deflater zip(15, false);
    for (int round = 0; round < 2; ++round) {
      co_await c.send(client_frame(0x80 | 0x40 | 1, zip.compress(text, 0)));
      auto echo = co_await c.read_frame();
      CHECK(echo.op() == opcode::text);
      CHECK(echo.compressed());
      CHECK(echo.payload.size() < text.size() / 4);
      CHECK(inflate_all(echo.payload) == text);
    }
    co_await c.send(opcode::text, "short");  // uncompressed both ways
    auto small = co_await c.read_frame();
    CHECK(!small.compressed());
    CHECK(small.payload == "short");
  });
}

TEST_CASE("shutdown(grace) sends Close 1001 at once and returns as soon as the client answers it") {
  asio::io_context io;
  echo_server s(io);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await ws_client::connect(ep);
    co_await c.send(opcode::text, "before");
    CHECK((co_await c.read_frame()).payload == "before");
    background_shutdown bg(io, s.srv, std::chrono::seconds(30));
    auto close = co_await c.read_frame();
    CHECK(close.op() == opcode::close);
    CHECK(close.close_code() == cc::going_away);
    CHECK(!bg.done());  // it waits for the client's Close
    co_await c.send(opcode::text, "late");  // data after the server's Close is skipped
    co_await c.send(opcode::close, close_payload(cc::going_away));
    auto summary = co_await bg.wait();
    CHECK(summary.forced == 0);
    CHECK(bg.took() < std::chrono::seconds(10));
    co_await check_closed_silently(c.http());
    CHECK(s.end.close_code == cc::going_away);
  });
}

TEST_CASE("stop_now() ends a WebSocket waiting in read()") {
  asio::io_context io;
  echo_server s(io);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await ws_client::connect(ep);
    co_await c.send(opcode::text, "x");
    CHECK((co_await c.read_frame()).payload == "x");
    auto summary = co_await s.srv.stop_now();
    CHECK(summary.forced == 1);
    CHECK(s.end.error == asio::error::operation_aborted);
    CHECK(s.srv.connections().total() == 0);
    CHECK((co_await c.http().wait_closed()).closed());
  });
}

TEST_CASE("keep-alive: pings every interval; a client that never answers is closed with 1006") {
  asio::io_context io;
  ws::options o;
  o.keepalive = std::chrono::milliseconds(20);
  echo_server s(io, o);
  stop_on_exit stop(io, s.srv);
  auto ep = s.srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await ws_client::connect(ep);
    auto ping = co_await c.read_frame();
    CHECK(ping.op() == opcode::ping);
    co_await c.send(opcode::pong, ping.payload);
    CHECK((co_await c.read_frame()).op() == opcode::ping);  // answered: the next one comes
    // This one stays unanswered.
    auto end = co_await c.http().wait_closed();
    CHECK(end.closed());
    co_await s.finished.wait();
    CHECK(s.end.close_code == cc::abnormal);
  });
}

namespace {

// Appends to `in` until it holds `n` bytes at least.
awaitable<void> read_at_least(asio::ssl::stream<tcp::socket>& s, std::string& in, std::size_t n) {
  if (in.size() < n) co_await asio::async_read(s, asio::dynamic_buffer(in), asio::transfer_at_least(n - in.size()), use_awaitable);
}

}  // namespace

TEST_CASE("over TLS (no readiness wait there) a WebSocket echoes, and shutdown(grace) closes it with 1001") {
  temp_dir dir;
  const auto cert = make_self_signed(dir.path(), "ws", 1, "sluice-ws-test");
  asio::io_context io;
  ws_echo echo(io);
  sluice::tls::server srv(io.get_executor(), echo.handler(), sluice::tls::make_server_context(cert.cert, cert.key),
                          long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    asio::ssl::context ctx(asio::ssl::context::tls_client);  // unverified: the test's own server
    auto s = std::make_unique<asio::ssl::stream<tcp::socket>>(co_await asio::this_coro::executor, ctx);
    co_await s->next_layer().async_connect(ep, use_awaitable);
    co_await s->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    const std::string upgrade = upgrade_request_ws();
    co_await asio::async_write(*s, asio::buffer(upgrade), use_awaitable);
    std::string in;
    const std::size_t head = co_await asio::async_read_until(*s, asio::dynamic_buffer(in), "\r\n\r\n", use_awaitable);
    CHECK(in.substr(0, 12) == "HTTP/1.1 101");
    in.erase(0, head);

    const std::string frame = client_frame(fin(opcode::text), "over tls");
    co_await asio::async_write(*s, asio::buffer(frame), use_awaitable);
    co_await read_at_least(*s, in, 10);
    CHECK(in.substr(0, 10) == std::string("\x81\x08over tls", 10));
    in.erase(0, 10);

    background_shutdown bg(io, srv, std::chrono::seconds(30));
    co_await read_at_least(*s, in, 4);
    CHECK(in.substr(0, 1) == "\x88");
    CHECK(in.substr(2, 2) == "\x03\xE9");  // 1001
    const std::string reply = client_frame(fin(opcode::close), close_payload(cc::going_away));
    co_await asio::async_write(*s, asio::buffer(reply), use_awaitable);
    auto summary = co_await bg.wait();
    CHECK(summary.forced == 0);
    co_await echo.finished.wait();
    CHECK(echo.end.close_code == cc::going_away);
  });
}

TEST_CASE("an idle WebSocket holds under 3,600 bytes of server heap (400 connections)") {
  // As http_hostile_test measures an idle keep-alive connection: one thread (concurrency hint 1),
  // caches warmed by one WebSocket first, the clients' sockets opened before the measurement and
  // driven one after another through one buffer, so that only the server's heap grows with them.
  // Each WebSocket waits in read() for its next message, what an idle echo server holds. Measured
  // 3,470 bytes (5,800 before the upgrade ran outside the request's frame); the target
  // is 3,072.
  if (!heap_measurable) {
    MESSAGE("skipped: heap per connection is measured with mallinfo2, meaningless under a sanitizer");
    return;
  }
  constexpr std::size_t connections = 400;
  REQUIRE(allow_connections(connections));  // both ends are in this process

  asio::io_context io(1);
  // The echo of examples/websocket_echo: one coroutine over read() (ws_echo's adds a frame).
  const auto echo = [](ws::connection& c) -> awaitable<void> {
    for (;;) {
      auto m = co_await c.read();
      co_await c.write(m.data, m.kind);
    }
  };
  http::server srv(io.get_executor(), [&echo](http::request& req) -> awaitable<http::response> {
    co_return ws::accept(req, {}, echo);
  });
  stop_on_exit stop(io, srv);
  const auto ep = srv.listen(loopback_any);
  const std::string upgrade = upgrade_request_ws();
  std::string head;
  head.reserve(1024);
  const auto upgrade_once = [&](tcp::socket& c) -> awaitable<void> {
    co_await c.async_connect(ep, use_awaitable);
    co_await asio::async_write(c, asio::buffer(upgrade), use_awaitable);
    head.clear();
    co_await asio::async_read_until(c, asio::dynamic_buffer(head), "\r\n\r\n", use_awaitable);
    REQUIRE(head.starts_with("HTTP/1.1 101"));
  };
  const double per_connection = heap_per_connection(io, srv, connections, cs::websocket, upgrade_once);
  MESSAGE("server heap per idle WebSocket: ", per_connection, " bytes");
  CHECK(per_connection < 3600);
}
