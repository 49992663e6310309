// HTTP/2 through sluice's HTTP server, seen from an nghttp2 client
// (support/h2_client.hpp) on loopback: h2c by prior knowledge, h2 by ALPN
// over TLS and its HTTP/1.1 fallback, bodies streamed both ways beyond the
// windows, concurrent streams, RST_STREAM cancelling a handler, the
// two-phase GOAWAY of shutdown(), the deadline, stop_now(), and the counts.
//
// Single-threaded; the tests wait on events (a handler reaching a point, a
// response, a GOAWAY, a closed connection), never on sleeps.
#include "sluice/http/server.hpp"
#include "sluice/tls/server.hpp"

#include "support/async_test.hpp"
#include "support/h2_client.hpp"
#include "support/http_client.hpp"
#include "support/tls_certs.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/ssl.hpp>
#include <doctest/doctest.h>

#include <string>

namespace {

using namespace sluice::test;
using cs = http::connection_state;
using h2c = h2_client<tcp::socket>;

constexpr std::int32_t max_stream_id = 0x7fffffff;

// "/echo" streams the request body back as it reads it; "/big?n=N" answers
// N bytes in 10000-byte writes; "/gate" waits at the gate; "/watch" waits on
// a timer bound to the request's slot until the slot fires; anything else
// is answered with its method, path and authority.
struct h2_handlers {
  asio::io_context& io;
  gate held{io};
  event watch_waiting{io.get_executor()};
  event watch_ended{io.get_executor()};
  std::error_code watch_error;
  bool watch_saw_gone = false;
  int versions_seen = 0;

  explicit h2_handlers(asio::io_context& io) : io(io) {}

  http::server::handler_type handler() {
    return [this](http::request& req) -> awaitable<http::response> {
      versions_seen = req.version();
      if (req.path() == "/echo") co_return echo(req);
      if (req.path() == "/big") co_return big(std::stoul(std::string(req.query_param("n").value_or("0"))));
      if (req.path() == "/gate") co_await held.pass();
      if (req.path() == "/watch") co_await watch(req);
      co_return http::response::text(200, std::string(req.method()) + " " + std::string(req.path()) + " " +
                                               std::string(req.authority()));
    };
  }

  static http::response echo(http::request& req) {
    http::response res;
    res.stream = [&req](http::body_writer& w) -> awaitable<void> {
      for (;;) {
        auto piece = co_await req.read_some();
        if (piece.empty()) break;
        const std::string copy(piece);
        co_await w.write(copy);
      }
      const std::string trailer(req.trailers().get("x-end").value_or(""));
      if (!trailer.empty()) co_await w.write("|" + trailer);
    };
    return res;
  }

  static http::response big(std::size_t n) {
    http::response res;
    res.stream = [n](http::body_writer& w) -> awaitable<void> {
      const std::string block(10000, 'b');
      for (std::size_t sent = 0; sent < n; sent += block.size())
        co_await w.write(std::string_view(block).substr(0, std::min(block.size(), n - sent)));
    };
    return res;
  }

  awaitable<void> watch(http::request& req) {
    asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
    watch_waiting.set();
    auto slot = co_await req.cancellation_slot();
    auto [ec] = co_await timer.async_wait(asio::bind_cancellation_slot(slot, nothrow));
    watch_error = ec;
    watch_saw_gone = req.client_gone();
    watch_ended.set();
  }
};

awaitable<h2c> h2c_connect(tcp::endpoint ep) { co_return h2c(co_await connect_to(ep)); }

TEST_CASE("http2: h2c by prior knowledge serves a GET with the HTTP/1.1 handler") {
  asio::io_context io;
  h2_handlers h(io);
  state_log log(io);
  auto options = long_timeouts();
  log.attach(options);
  http::server srv(io.get_executor(), h.handler(), options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/hello?x=1");
    auto done = [&] { return c.peer.response(id).closed; };
    REQUIRE(co_await c.until(done));
    CHECK(c.peer.response(id).status == 200);
    CHECK(c.peer.response(id).body == "GET /hello localhost");
    CHECK(c.peer.response(id).close_error == 0);
    CHECK(h.versions_seen == 20);
    CHECK(srv.connections()[cs::http2] == 1);
    CHECK(srv.connections().total() == 1);
    CHECK(log.entered(c.stream().local_endpoint(), cs::http2) == 1);
  });
}

TEST_CASE("http2: a connection with no open stream for idle_timeout gets GOAWAY and is closed") {
  asio::io_context io;
  h2_handlers h(io);
  auto options = long_timeouts();
  options.idle_timeout = 200ms;
  http::server srv(io.get_executor(), h.handler(), options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/");
    CHECK(co_await c.until_closed());
    CHECK(c.peer.response(id).status == 200);
    REQUIRE(c.peer.goaways().size() == 1);
    CHECK(c.peer.goaways()[0].last_stream_id == id);
    CHECK(c.peer.goaways()[0].error == NGHTTP2_NO_ERROR);
  });
}

TEST_CASE("http2: a POST body larger than the windows is echoed, streamed both ways, trailers included") {
  asio::io_context io;
  h2_handlers h(io);
  auto options = long_timeouts();
  options.http2.stream_window = 16 * 1024;
  options.http2.connection_window = 32 * 1024;
  http::server srv(io.get_executor(), h.handler(), options);
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    std::string body;
    for (int i = 0; body.size() < 300 * 1024; ++i) body += std::to_string(i) + ",";
    const auto id = c.peer.request("POST", "/echo", {}, {}, true);
    c.peer.send_body(id, body, false);
    auto sent_most = [&] { return c.peer.response(id).body.size() > 200 * 1024; };
    REQUIRE(co_await c.until(sent_most));
    c.peer.send_body(id, {}, true, {{"x-end", "fin"}});
    auto done = [&] { return c.peer.response(id).closed; };
    REQUIRE(co_await c.until(done));
    CHECK(c.peer.response(id).status == 200);
    const std::string& got = c.peer.response(id).body;
    CHECK(got.size() == body.size() + 4);
    CHECK(got.ends_with("|fin"));
    CHECK((got.substr(0, body.size()) == body));
  });
}

TEST_CASE("http2: a large response is read as the client's window allows") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/big?n=1000000");
    auto done = [&] { return c.peer.response(id).closed; };
    REQUIRE(co_await c.until(done));
    CHECK(c.peer.response(id).body.size() == 1000000);
  });
}

TEST_CASE("http2: concurrent streams on one connection are served at once") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto held = c.peer.request("GET", "/gate");
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 10; ++i) ids.push_back(c.peer.request("GET", "/n" + std::to_string(i)));
    auto others_done = [&] {
      return std::all_of(ids.begin(), ids.end(), [&](auto id) { return c.peer.response(id).closed; });
    };
    REQUIRE(co_await c.until(others_done));  // while /gate still waits
    CHECK_FALSE(c.peer.response(held).closed);
    CHECK(srv.connections().streams == 1);
    for (int i = 0; i < 10; ++i) CHECK(c.peer.response(ids[i]).body == "GET /n" + std::to_string(i) + " localhost");
    h.held.open();
    auto held_done = [&] { return c.peer.response(held).closed; };
    REQUIRE(co_await c.until(held_done));
    CHECK(c.peer.response(held).status == 200);
    CHECK(srv.connections().streams == 0);
  });
}

TEST_CASE("http2: RST_STREAM from the client fires the handler's cancellation slot") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/watch");
    auto sent = [] { return true; };
    co_await c.until(sent);
    co_await h.watch_waiting.wait();
    c.peer.reset(id, NGHTTP2_CANCEL);
    co_await c.flush();
    co_await h.watch_ended.wait();
    CHECK(h.watch_error == asio::error::operation_aborted);
    CHECK(h.watch_saw_gone);
    // The connection serves on.
    const auto next = c.peer.request("GET", "/after");
    auto done = [&] { return c.peer.response(next).closed; };
    REQUIRE(co_await c.until(done));
    CHECK(c.peer.response(next).status == 200);
  });
}

TEST_CASE("http2: shutdown sends GOAWAY(2^31-1), then GOAWAY(last stream) after the PING; the stream completes") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/gate");
    auto sent = [] { return true; };
    co_await c.until(sent);
    co_await h.held.until_entered();
    background_shutdown shutdown(io, srv, 10s);
    auto two_goaways = [&] { return c.peer.goaways().size() >= 2; };
    REQUIRE(co_await c.until(two_goaways));
    CHECK(c.peer.goaways()[0].last_stream_id == max_stream_id);
    CHECK(c.peer.goaways()[1].last_stream_id == id);
    CHECK(c.peer.goaways()[1].error == NGHTTP2_NO_ERROR);
    CHECK_FALSE(shutdown.done());
    h.held.open();
    CHECK(co_await c.until_closed());  // served, then the server closes
    c.stream().close();
    CHECK(c.peer.response(id).status == 200);
    CHECK(c.peer.response(id).closed);
    auto summary = co_await shutdown.wait();
    CHECK(summary.completed == 1);
    CHECK(summary.forced == 0);
    CHECK(srv.connections().total() == 0);
  });
}

TEST_CASE("http2: shutdown closes an idle HTTP/2 connection at once, after one GOAWAY") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/");
    auto done = [&] { return c.peer.response(id).closed; };
    REQUIRE(co_await c.until(done));
    background_shutdown shutdown(io, srv, 10s);
    CHECK(co_await c.until_closed());
    c.stream().close();  // what a client does once the server closed: the lingering close ends
    REQUIRE(c.peer.goaways().size() == 1);
    CHECK(c.peer.goaways()[0].last_stream_id == id);
    auto summary = co_await shutdown.wait();
    CHECK(summary.forced == 0);
    CHECK(srv.connections().total() == 0);
  });
}

TEST_CASE("http2: at the shutdown deadline an open stream gets RST_STREAM(CANCEL) and its handler is cancelled") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    const auto id = c.peer.request("GET", "/watch");
    auto sent = [] { return true; };
    co_await c.until(sent);
    co_await h.watch_waiting.wait();
    background_shutdown shutdown(io, srv, 300ms);
    CHECK(co_await c.until_closed());
    CHECK(c.peer.response(id).reset_received);
    CHECK(c.peer.response(id).close_error == NGHTTP2_CANCEL);
    CHECK(h.watch_ended.is_set());
    CHECK(h.watch_error == asio::error::operation_aborted);
    auto summary = co_await shutdown.wait();
    CHECK(summary.forced == 1);
    CHECK(srv.connections().total() == 0);
    CHECK(srv.connections().streams == 0);
  });
}

TEST_CASE("http2: stop_now cancels and awaits every stream's handler") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await h2c_connect(ep);
    c.peer.request("GET", "/watch");
    c.peer.request("GET", "/gate");
    auto sent = [] { return true; };
    co_await c.until(sent);
    co_await h.watch_waiting.wait();
    co_await h.held.until_entered();
    CHECK(srv.connections().streams == 2);
    auto summary = co_await srv.stop_now();
    CHECK(h.watch_ended.is_set());  // awaited before stop_now returned
    CHECK(summary.forced == 1);
    CHECK(srv.connections().total() == 0);
    CHECK(srv.connections().streams == 0);
    CHECK(co_await c.until_closed());
  });
}

TEST_CASE("http2: Upgrade: h2c is answered over HTTP/1.1") {
  asio::io_context io;
  h2_handlers h(io);
  http::server srv(io.get_executor(), h.handler(), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request(get("/up", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"));
    CHECK(r.status == 200);
    CHECK(r.body == "GET /up test");
    CHECK(h.versions_seen == 11);
  });
}

#if SLUICE_TEST_TLS
const temp_dir& h2_certs_dir() {
  static temp_dir dir;
  return dir;
}
const cert_files& h2_certs() {
  static cert_files files = make_self_signed(h2_certs_dir().path(), "h2", 1, "sluice-h2");
  return files;
}

// A TLS client offering `alpn` (wire format).
asio::ssl::context h2_client_context(std::string_view alpn) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_verify_mode(asio::ssl::verify_none);
  SSL_CTX_set_alpn_protos(ctx.native_handle(), reinterpret_cast<const unsigned char*>(alpn.data()),
                          static_cast<unsigned>(alpn.size()));
  return ctx;
}

using tls_socket = asio::ssl::stream<tcp::socket>;

awaitable<tls_socket> tls_connect(tcp::endpoint ep, asio::ssl::context& ctx) {
  tls_socket s(co_await connect_to(ep), ctx);
  co_await s.async_handshake(asio::ssl::stream_base::client, use_awaitable);
  co_return s;
}

std::string_view selected_alpn(tls_socket& s) {
  const unsigned char* name = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(s.native_handle(), &name, &length);
  return name ? std::string_view(reinterpret_cast<const char*>(name), length) : std::string_view{};
}

TEST_CASE("http2: h2 over TLS by ALPN, and http/1.1 for a client that offers only that") {
  asio::io_context io;
  h2_handlers h(io);
  sluice::tls::server srv(io.get_executor(), h.handler(),
                          sluice::tls::make_server_context(h2_certs().cert, h2_certs().key), long_timeouts());
  stop_on_exit stop(io, srv);
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto h2ctx = h2_client_context(std::string_view("\x02h2\x08http/1.1", 12));
    h2_client<tls_socket> c(co_await tls_connect(ep, h2ctx));
    CHECK(selected_alpn(c.stream()) == "h2");
    const auto id = c.peer.request("GET", "/tls");
    auto done = [&] { return c.peer.response(id).closed; };
    REQUIRE(co_await c.until(done));
    CHECK(c.peer.response(id).body == "GET /tls localhost");
    CHECK(h.versions_seen == 20);

    auto h1ctx = h2_client_context(std::string_view("\x08http/1.1", 9));
    auto s = co_await tls_connect(ep, h1ctx);
    CHECK(selected_alpn(s) == "http/1.1");
    const std::string req = get("/one");
    co_await asio::async_write(s, asio::buffer(req), use_awaitable);
    std::string got(256, '\0');
    const auto n = co_await s.async_read_some(asio::buffer(got), use_awaitable);
    CHECK(got.substr(0, n).starts_with("HTTP/1.1 200"));
    CHECK(h.versions_seen == 11);
  });
}
#endif

}  // namespace
