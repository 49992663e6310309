// HTTPS: the HTTP server's stopping guarantees over TLS, handshake failures,
// certificate reload, and a real client (curl) against benchmarks/hello_server.
#include "sluice/tls/server.hpp"
#include "sluice/net/serve_over.hpp"

#include "support/http_client.hpp"
#include "support/tls_certs.hpp"

#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace sluice::test;
using sluice::http::connection_state;
namespace tls = sluice::tls;

namespace {

// Two certificates for the whole run: the server starts with `one`; reload tests move to `two`.
struct test_certs {
  temp_dir dir;
  cert_files one = make_self_signed(dir.path(), "one", 1, "sluice-test-1");
  cert_files two = make_self_signed(dir.path(), "two", 2, "sluice-test-2");
};

const test_certs& certs() {
  static const test_certs c;
  return c;
}

// A client context that trusts both test certificates and offers `alpn` (wire format; empty: no ALPN).
asio::ssl::context client_context(std::string_view alpn = std::string_view("\x08http/1.1", 9)) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(certs().one.cert.string());
  ctx.load_verify_file(certs().two.cert.string());
  ctx.set_verify_mode(asio::ssl::verify_peer);
  if (!alpn.empty())
    SSL_CTX_set_alpn_protos(ctx.native_handle(), reinterpret_cast<const unsigned char*>(alpn.data()),
                            static_cast<unsigned>(alpn.size()));
  return ctx;
}

struct reply {
  unsigned status = 0;
  std::string head;
  std::string body;
  bool closes() const {
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    return lower.find("\r\nconnection: close\r\n") != std::string::npos;
  }
};

// A TLS client reading Content-Length responses: all the hello handler sends.
// (Its stream is on the heap and its buffers too: g++ 12's ASan build warns
// about coroutine frames above Asio's recycling size.)
class tls_client {
 public:
  tls_client(asio::any_io_executor ex, asio::ssl::context& ctx)
      : stream_(std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(ex), ctx)) {}

  static awaitable<tls_client> connect(tcp::endpoint ep, asio::ssl::context& ctx) {
    tls_client c(co_await asio::this_coro::executor, ctx);
    co_await c.stream_->next_layer().async_connect(ep, use_awaitable);
    co_await c.stream_->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    co_return c;
  }

  tcp::endpoint local_endpoint() const { return stream_->next_layer().local_endpoint(); }
  tcp::socket& socket() { return stream_->next_layer(); }

  long serial() const {
    auto cert = peer_cert();
    return serial_of(cert.get());
  }
  std::string common_name() const {
    auto cert = peer_cert();
    return common_name_of(cert.get());
  }
  int version() const { return SSL_version(stream_->native_handle()); }
  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(stream_->native_handle(), &p, &len);
    return std::string(reinterpret_cast<const char*>(p), len);
  }

  awaitable<void> send(std::string_view bytes) {
    co_await asio::async_write(*stream_, asio::buffer(bytes), use_awaitable);
  }

  awaitable<reply> read_response() {
    const std::size_t n =
        co_await asio::async_read_until(*stream_, asio::dynamic_buffer(buffer_), "\r\n\r\n", use_awaitable);
    reply r;
    r.head = buffer_.substr(0, n);
    buffer_.erase(0, n);
    r.status = static_cast<unsigned>(std::stoul(r.head.substr(9, 3)));
    std::string lower = r.head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto at = lower.find("\r\ncontent-length:");
    const std::size_t length = at == std::string::npos ? 0 : std::stoul(lower.substr(at + 17));
    if (buffer_.size() < length)
      co_await asio::async_read(*stream_, asio::dynamic_buffer(buffer_), asio::transfer_exactly(length - buffer_.size()),
                                use_awaitable);
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    co_return r;
  }

  // Sends `line`, then reads one line back.
  awaitable<std::string> read_line_after(std::string_view line) {
    co_await send(line);
    const std::size_t n = co_await asio::async_read_until(*stream_, asio::dynamic_buffer(buffer_), '\n', use_awaitable);
    std::string echoed = buffer_.substr(0, n);
    buffer_.erase(0, n);
    co_return echoed;
  }

  awaitable<reply> request(std::string_view raw) {
    co_await send(raw);
    co_return co_await read_response();
  }

  // Reads until the server ends the TLS stream: eof after its close_notify,
  // stream_truncated when it closed TCP without one, or a reset.
  awaitable<std::error_code> wait_closed() {
    std::vector<char> chunk(4096);
    for (;;) {
      auto [ec, n] = co_await stream_->async_read_some(asio::buffer(chunk), nothrow);
      if (ec) co_return ec;
    }
  }

  // Answers the server's close_notify with ours.
  awaitable<void> close_notify() { co_await stream_->async_shutdown(nothrow); }

 private:
  std::unique_ptr<X509, decltype(&X509_free)> peer_cert() const {
    std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(stream_->native_handle()), X509_free);
    REQUIRE(cert);
    return cert;
  }

  std::unique_ptr<asio::ssl::stream<tcp::socket>> stream_;
  std::string buffer_;
};

bool closed_by_server(std::error_code ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset;
}

// What a plain TCP peer receives until the server closes: true on EOF or reset.
awaitable<bool> raw_sees_close(tcp::socket& s) {
  std::vector<char> chunk(4096);
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), nothrow);
    if (ec) co_return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
}

// GET / says hello; GET /held first waits at the gate, when there is one.
struct hello_handler {
  gate* held = nullptr;
  awaitable<http::response> operator()(http::request& req) const {
    if (req.path() == "/held" && held) co_await held->pass();
    co_return http::response::text(200, "Hello, world!\n");
  }
};

// Log lines from the transport, with a way to wait for them.
class log_lines {
 public:
  explicit log_lines(asio::io_context& io) : changed_(io.get_executor()) {}
  tls::options options(std::chrono::milliseconds close_notify = std::chrono::seconds(5)) {
    tls::options o;
    o.close_notify_timeout = close_notify;
    o.log = [this](std::string_view line) {
      lines_.emplace_back(line);
      changed_.notify();
    };
    return o;
  }
  const std::vector<std::string>& lines() const { return lines_; }
  awaitable<void> until_count(std::size_t n) {
    auto enough = [&] { return lines_.size() >= n; };
    co_await changed_.until(enough);
  }

 private:
  std::vector<std::string> lines_;
  notifier changed_;
};

// A client whose ALPN list `ctx` offers nothing the server serves is refused in its handshake,
// with one log line naming what the server wanted (`lacks`).
awaitable<void> expect_alpn_refused(tcp::endpoint ep, asio::ssl::context& ctx, log_lines& log, std::string lacks) {
  bool refused = false;
  try {
    co_await tls_client::connect(ep, ctx);
  } catch (const std::system_error&) {
    refused = true;
  }
  CHECK(refused);
  co_await log.until_count(1);
  CHECK(log.lines()[0].find("failed: no application protocol (the client's ALPN list lacks " + lacks + ")") !=
        std::string::npos);
}

http::server_options test_options(state_log* log = nullptr) {
  auto o = long_timeouts();
  o.handshake_timeout = std::chrono::seconds(10);
  if (log) log->attach(o);
  return o;
}

// An HTTP/1.1-only server (HTTP/2 off): ALPN offers http/1.1 alone.
http::server_options http1_only_options() {
  auto o = test_options();
  o.http2.enabled = false;
  return o;
}

std::shared_ptr<asio::ssl::context> context_one() { return tls::make_server_context(certs().one.cert, certs().one.key); }
std::shared_ptr<asio::ssl::context> context_two() { return tls::make_server_context(certs().two.cert, certs().two.key); }

// Yields to the io_context until `pred` holds: for server-side facts that no event announces.
template <typename Pred>
awaitable<void> until_polled(const Pred& pred) {
  auto ex = co_await asio::this_coro::executor;
  while (!pred()) co_await asio::post(ex, use_awaitable);
}

// The first flight of a TLS client: a complete ClientHello record.
std::string client_hello() {
  auto ctx = client_context();
  SSL* ssl = SSL_new(ctx.native_handle());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants the server's reply: returns with the ClientHello in `out`
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string hello(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  return hello;
}

// shutdown(grace) running in the background: `done` once it has returned.
struct shutdown_result {
  explicit shutdown_result(asio::io_context& io) : done(io.get_executor()) {}
  event done;
  http::shutdown_summary summary;
  bool failed = false;
};

std::shared_ptr<shutdown_result> start_shutdown(asio::io_context& io, tls::server& srv,
                                                std::chrono::milliseconds grace) {
  auto r = std::make_shared<shutdown_result>(io);
  asio::co_spawn(io, srv.shutdown(grace), [r](std::exception_ptr e, http::shutdown_summary s) {
    r->failed = e != nullptr;
    r->summary = s;
    r->done.set();
  });
  return r;
}

}  // namespace

TEST_CASE("HTTPS serves requests on a keep-alive connection over TLS 1.3 and 1.2; ALPN selects http/1.1 (HTTP/2 off)") {
  asio::io_context io;
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), http1_only_options(), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context(std::string_view("\x02h2\x08http/1.1", 12));
    auto c = co_await tls_client::connect(ep, ctx);
    CHECK(c.alpn() == "http/1.1");
    CHECK(c.serial() == 1);
    CHECK(c.common_name() == "sluice-test-1");
    for (int i = 0; i < 3; ++i) {
      auto r = co_await c.request(get("/"));
      CHECK(r.status == 200);
      CHECK(r.body == "Hello, world!\n");
      CHECK(!r.closes());
    }
    CHECK(c.version() == TLS1_3_VERSION);
    auto no_alpn_ctx = client_context("");
    auto no_alpn = co_await tls_client::connect(ep, no_alpn_ctx);
    CHECK(no_alpn.alpn().empty());
    CHECK((co_await no_alpn.request(get("/"))).status == 200);
    auto tls12_ctx = client_context();
    SSL_CTX_set_max_proto_version(tls12_ctx.native_handle(), TLS1_2_VERSION);
    auto tls12 = co_await tls_client::connect(ep, tls12_ctx);
    CHECK(tls12.version() == TLS1_2_VERSION);
    CHECK(tls12.alpn() == "http/1.1");
    CHECK((co_await tls12.request(get("/"))).status == 200);
  });
  CHECK(log.lines().empty());
}

TEST_CASE("ALPN: a client offering only h2 is refused by an HTTP/1.1-only server with a log line, and the server goes on") {
  asio::io_context io;
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), http1_only_options(), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto h2_ctx = client_context(std::string_view("\x02h2", 3));
    co_await expect_alpn_refused(ep, h2_ctx, log, "http/1.1");
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    CHECK((co_await c.request(get("/"))).status == 200);
  });
}

TEST_CASE("close-all over TLS: stop_now closes an unfinished request and an idle keep-alive client at once") {
  asio::io_context io;
  state_log states(io);
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(&states), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto unfinished = co_await tls_client::connect(ep, ctx);
    co_await unfinished.send("GET / HT");
    co_await states.until_entered(unfinished.local_endpoint(), connection_state::reading);
    auto idle = co_await tls_client::connect(ep, ctx);
    CHECK((co_await idle.request(get("/"))).status == 200);
    co_await states.until_entered(idle.local_endpoint(), connection_state::idle);

    const auto t0 = std::chrono::steady_clock::now();
    auto summary = co_await srv.stop_now();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(summary.forced == 2);
    CHECK(srv.connections().total() == 0);
    CHECK(closed_by_server(co_await unfinished.wait_closed()));
    CHECK(closed_by_server(co_await idle.wait_closed()));
  });
  CHECK(log.lines().empty());
}

TEST_CASE("close-idle over TLS: shutdown closes the idle client at once and lets the half-sent request finish") {
  asio::io_context io;
  state_log states(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(&states));
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto idle = co_await tls_client::connect(ep, ctx);
    CHECK((co_await idle.request(get("/"))).status == 200);
    co_await states.until_entered(idle.local_endpoint(), connection_state::idle);
    auto half = co_await tls_client::connect(ep, ctx);
    co_await half.send("GET / HTTP/1.1\r\nHost: test\r\n");
    co_await states.until_entered(half.local_endpoint(), connection_state::reading);

    auto stopping = start_shutdown(io, srv, std::chrono::seconds(10));
    CHECK(closed_by_server(co_await idle.wait_closed()));
    CHECK(!states.closed(half.local_endpoint()));
    CHECK(!stopping->done.is_set());

    co_await half.send("\r\n");
    auto r = co_await half.read_response();
    CHECK(r.status == 200);
    CHECK(r.closes());
    CHECK(co_await half.wait_closed() == asio::error::eof);  // the server's close_notify
    co_await half.close_notify();
    half.socket().close();
    co_await stopping->done.wait();
    CHECK(!stopping->failed);
    CHECK(stopping->summary.idle_closed == 1);
    CHECK(stopping->summary.completed == 1);
    CHECK(stopping->summary.forced == 0);
  });
}

TEST_CASE("wait-response over TLS: the in-flight response arrives with Connection: close, then close_notify") {
  asio::io_context io;
  gate held(io);
  tls::server srv(io.get_executor(), hello_handler{&held}, context_one(), test_options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    co_await c.send(get("/held"));
    co_await held.until_entered();
    auto stopping = start_shutdown(io, srv, std::chrono::seconds(10));
    auto draining = [&] { return srv.draining(); };
    co_await until_polled(draining);
    held.open();
    auto r = co_await c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "Hello, world!\n");
    CHECK(r.closes());
    CHECK(co_await c.wait_closed() == asio::error::eof);
    co_await c.close_notify();
    // The server shuts its sending side after the close_notify exchange, then sees our close.
    CHECK(co_await raw_sees_close(c.socket()));
    c.socket().close();
    co_await stopping->done.wait();
    CHECK(stopping->summary.completed == 1);
    CHECK(stopping->summary.forced == 0);
  });
}

TEST_CASE("never-used over TLS: shutdown closes a connection that completed its handshake and sent nothing") {
  asio::io_context io;
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    auto one_new = [&] { return srv.connections()[connection_state::fresh] == 1; };
    co_await until_polled(one_new);
    auto summary = co_await srv.shutdown(std::chrono::seconds(10));
    CHECK(summary.idle_closed == 1);
    CHECK(summary.forced == 0);
    CHECK(closed_by_server(co_await c.wait_closed()));
  });
}

// Connects two raw TCP clients stuck in the handshake: one sends nothing, one
// half a ClientHello. Returns once `both_started` says the server has a
// session for each. (Name the predicate in a local: g++ 12 frees a capturing
// lambda temporary twice inside a co_await expression.)
template <typename Pred>
awaitable<std::array<tcp::socket, 2>> stuck_in_handshake(tcp::endpoint ep, Pred both_started) {
  auto silent = co_await connect_to(ep);
  auto truncated = co_await connect_to(ep);
  const std::string hello = client_hello();
  REQUIRE(hello.size() > 100);
  co_await asio::async_write(truncated, asio::buffer(hello.data(), hello.size() / 2), use_awaitable);
  co_await until_polled(both_started);
  co_return std::array<tcp::socket, 2>{std::move(silent), std::move(truncated)};
}

auto two_fresh(const tls::server& srv) {
  return [&srv] { return srv.connections()[connection_state::fresh] == 2; };
}

TEST_CASE("no ClientHello, and half a ClientHello: stop_now closes both at once, without a log line") {
  asio::io_context io;
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto both_started = two_fresh(srv);
    auto clients = co_await stuck_in_handshake(ep, both_started);
    const auto t0 = std::chrono::steady_clock::now();
    auto summary = co_await srv.stop_now();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(summary.forced == 2);
    CHECK(co_await raw_sees_close(clients[0]));
    CHECK(co_await raw_sees_close(clients[1]));
  });
  CHECK(log.lines().empty());
}

TEST_CASE("no ClientHello, and half a ClientHello: shutdown closes both at once, as never-used connections") {
  asio::io_context io;
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto both_started = two_fresh(srv);
    auto clients = co_await stuck_in_handshake(ep, both_started);
    const auto t0 = std::chrono::steady_clock::now();
    auto summary = co_await srv.shutdown(std::chrono::seconds(30));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(summary.idle_closed == 2);
    CHECK(summary.forced == 0);
    CHECK(co_await raw_sees_close(clients[0]));
    CHECK(co_await raw_sees_close(clients[1]));
  });
  CHECK(log.lines().empty());
}

TEST_CASE("handshake_timeout closes a client that never sends its ClientHello, with a log line") {
  asio::io_context io;
  log_lines log(io);
  auto o = test_options();
  o.handshake_timeout = std::chrono::milliseconds(100);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), o, log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto silent = co_await connect_to(ep);
    const auto port = silent.local_endpoint().port();
    CHECK(co_await raw_sees_close(silent));
    co_await log.until_count(1);
    CHECK(log.lines()[0] == "sluice: TLS handshake with 127.0.0.1:" + std::to_string(port) + " failed: timed out after 100 ms");
    CHECK(srv.connections().total() == 0);
  });
}

TEST_CASE("garbage handshakes (plain HTTP, random bytes) close that connection with a log line; the server goes on") {
  asio::io_context io;
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(), log.options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto http_peer = co_await connect_to(ep);
    const auto http_port = http_peer.local_endpoint().port();
    const std::string plain = get("/");
    co_await asio::async_write(http_peer, asio::buffer(plain), use_awaitable);
    CHECK(co_await raw_sees_close(http_peer));
    co_await log.until_count(1);
    CHECK(log.lines()[0] == "sluice: TLS handshake with 127.0.0.1:" + std::to_string(http_port) +
                                " failed: http request (plain HTTP sent to the TLS port)");

    std::mt19937 random(4);
    std::string noise(600, '\0');
    for (auto& b : noise) b = static_cast<char>(random() & 0xff);
    noise[0] = 0x42;  // not a handshake record, whatever the seed gives
    auto noisy = co_await connect_to(ep);
    const auto noisy_port = noisy.local_endpoint().port();
    co_await asio::async_write(noisy, asio::buffer(noise), use_awaitable);
    CHECK(co_await raw_sees_close(noisy));
    co_await log.until_count(2);
    const std::string prefix = "sluice: TLS handshake with 127.0.0.1:" + std::to_string(noisy_port) + " failed: ";
    CHECK_MESSAGE(log.lines()[1].compare(0, prefix.size(), prefix) == 0, log.lines()[1]);

    auto ctx = client_context();
    auto good = co_await tls_client::connect(ep, ctx);
    CHECK((co_await good.request(get("/"))).status == 200);
    CHECK(log.lines().size() == 2);
  });
}

TEST_CASE("shutdown waits for the peer's close_notify only for close_notify_timeout") {
  asio::io_context io;
  state_log states(io);
  log_lines log(io);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options(&states),
                  log.options(std::chrono::milliseconds(100)));
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    auto r = co_await c.request(get("/", "Connection: close\r\n"));
    CHECK(r.closes());
    CHECK(co_await c.wait_closed() == asio::error::eof);
    // We never answer: the server stops waiting and closes (TCP FIN) after
    // close_notify_timeout, well before linger_timeout (10 s, the guard would
    // fire first). Nothing more was coming from us, so it does not linger.
    CHECK(co_await raw_sees_close(c.socket()));
    co_await states.until_closed(c.local_endpoint());
  });
}

TEST_CASE("stop_now does not wait for the peer's close_notify") {
  asio::io_context io;
  state_log states(io);
  log_lines log(io);
  auto o = test_options(&states);
  o.linger_timeout = std::chrono::seconds(60);
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), o, log.options(std::chrono::seconds(30)));
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    CHECK((co_await c.request(get("/", "Connection: close\r\n"))).closes());
    co_await states.until_entered(c.local_endpoint(), connection_state::closing);
    CHECK(co_await c.wait_closed() == asio::error::eof);  // its close_notify: it now waits for ours
    const auto t0 = std::chrono::steady_clock::now();
    auto summary = co_await srv.stop_now();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(summary.completed == 1);  // its response was out: only the goodbye was cut short
    CHECK(co_await raw_sees_close(c.socket()));
  });
}

TEST_CASE("stop_now cancels a TLS write to a client that never reads") {
  asio::io_context io;
  event writing(io.get_executor());
  auto handler = [&writing](http::request&) -> awaitable<http::response> {
    writing.set();
    co_return http::response::text(200, std::string(32 << 20, 'x'));
  };
  tls::server srv(io.get_executor(), handler, context_one(), test_options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    co_await c.send(get("/"));
    co_await writing.wait();
    auto summary = co_await srv.stop_now();
    CHECK(summary.forced == 1);
    CHECK(srv.connections().total() == 0);
  });
}

TEST_CASE("reload: an open connection keeps its certificate and context; a new one gets the new certificate") {
  asio::io_context io;
  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto before = co_await tls_client::connect(ep, ctx);
    CHECK((co_await before.request(get("/"))).status == 200);
    std::weak_ptr<asio::ssl::context> old_context = srv.tls_context();

    srv.reload(certs().two.cert, certs().two.key);
    CHECK(srv.tls_context() != old_context.lock());
    CHECK(!old_context.expired());  // the open connection holds it

    auto after = co_await tls_client::connect(ep, ctx);
    CHECK(after.serial() == 2);
    CHECK(after.common_name() == "sluice-test-2");
    CHECK((co_await after.request(get("/"))).status == 200);
    CHECK((co_await before.request(get("/"))).status == 200);
    CHECK(before.serial() == 1);

    // Once that connection has ended, nothing holds the old context.
    CHECK((co_await before.request(get("/", "Connection: close\r\n"))).closes());
    CHECK(co_await before.wait_closed() == asio::error::eof);
    co_await before.close_notify();
    before.socket().close();
    auto one_left = [&] { return srv.connections().total() == 1; };
    co_await until_polled(one_left);
    CHECK(old_context.expired());

    srv.set_tls_context(context_one());
    auto third = co_await tls_client::connect(ep, ctx);
    CHECK(third.serial() == 1);
  });
}

TEST_CASE("servers sharing one context holder: one reload serves them all") {
  asio::io_context io;
  auto contexts = std::make_shared<tls::context_holder>(context_one());
  tls::server first(io.get_executor(), hello_handler{}, contexts, test_options());
  tls::server second(io.get_executor(), hello_handler{}, contexts, test_options());
  auto ep1 = first.listen(loopback_any);
  auto ep2 = second.listen(loopback_any);
  stop_on_exit guard1(io, first);
  stop_on_exit guard2(io, second);
  contexts->reload(certs().two.cert, certs().two.key);
  CHECK(first.tls_context() == second.tls_context());
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto a = co_await tls_client::connect(ep1, ctx);
    auto b = co_await tls_client::connect(ep2, ctx);
    CHECK(a.serial() == 2);
    CHECK(b.serial() == 2);
  });
}

TEST_CASE("reload with a broken file throws a clear error and the old context keeps serving") {
  asio::io_context io;
  temp_dir dir;
  const auto missing = dir.path() / "missing.pem";
  const auto garbage = dir.path() / "garbage.pem";
  std::ofstream(garbage) << "not a certificate\n";

  tls::server srv(io.get_executor(), hello_handler{}, context_one(), test_options());
  auto ep = srv.listen(loopback_any);
  stop_on_exit guard(io, srv);
  const auto serving = srv.tls_context();

  auto fails = [&](const std::filesystem::path& cert, const std::filesystem::path& key,
                   const std::filesystem::path& named, const std::string& reason) {
    try {
      srv.reload(cert, key);
      FAIL("reload succeeded");
    } catch (const tls::context_error& e) {
      CHECK(e.file() == named);
      const std::string what = e.what();
      CHECK(what.find(named.string()) != std::string::npos);
      CHECK_MESSAGE(what.find(reason) != std::string::npos, what);
    }
    CHECK(srv.tls_context() == serving);
  };
  fails(missing, certs().two.key, missing, "No such file or directory");
  fails(certs().two.cert, missing, missing, "No such file or directory");
  fails(garbage, certs().two.key, garbage, "no start line");
  fails(certs().two.cert, garbage, garbage, "no PEM private key found");
  fails(certs().two.cert, certs().two.cert, certs().two.cert, "no PEM private key found");
  fails(certs().two.cert, certs().one.key, certs().one.key,
        "does not match the certificate in " + certs().two.cert.string() + " (key values mismatch)");
  fails(certs().two.key, certs().two.key, certs().two.key, "no start line");  // a key where the certificate goes

  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto c = co_await tls_client::connect(ep, ctx);
    CHECK(c.serial() == 1);
    CHECK((co_await c.request(get("/"))).status == 200);
  });
}

TEST_CASE("stop_accepting, then a new server on the same port with a new certificate, while the old one finishes") {
  asio::io_context io;
  gate held(io);
  tls::server old_srv(io.get_executor(), hello_handler{&held}, context_one(), test_options());
  auto ep = old_srv.listen(loopback_any);
  std::optional<tls::server> new_srv;
  stop_on_exit old_guard(io, old_srv);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context();
    auto in_flight = co_await tls_client::connect(ep, ctx);
    co_await in_flight.send(get("/held"));
    co_await held.until_entered();

    old_srv.stop_accepting();
    new_srv.emplace(io.get_executor(), hello_handler{}, context_two(), test_options());
    CHECK(new_srv->listen(ep) == ep);
    auto fresh = co_await tls_client::connect(ep, ctx);
    CHECK(fresh.serial() == 2);
    CHECK((co_await fresh.request(get("/"))).status == 200);

    auto stopping = start_shutdown(io, old_srv, std::chrono::seconds(10));
    auto draining = [&] { return old_srv.draining(); };
    co_await until_polled(draining);
    held.open();
    auto r = co_await in_flight.read_response();
    CHECK(r.status == 200);
    CHECK(r.closes());
    CHECK(in_flight.serial() == 1);
    CHECK(co_await in_flight.wait_closed() == asio::error::eof);
    co_await in_flight.close_notify();
    in_flight.socket().close();
    co_await stopping->done.wait();
    CHECK(stopping->summary.completed == 1);

    CHECK((co_await fresh.request(get("/"))).status == 200);
    co_await new_srv->stop_now();
  });
}

namespace {

// A child process with its stdout and stderr on pipes; killed if still running at the end.
class child_process {
 public:
  explicit child_process(std::vector<std::string> args) {
    int out[2], err[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    fds_ = {out[0], err[0]};
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    for (int fd : fds_) ::close(fd);
  }

  void signal(int sig) { ::kill(pid_, sig); }

  // The next line (without '\n') of stdout (0) or stderr (1); empty if none comes
  // within `limit`, a guard against a hung child only.
  std::string read_line(int which, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    std::string& buf = buffers_[which];
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto nl = buf.find('\n'); nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fds_[which], POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
      char chunk[1024];
      const auto n = ::read(fds_[which], chunk, sizeof chunk);
      if (n <= 0) return {};
      buf.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // The exit status, after the child has exited.
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  std::array<int, 2> fds_{-1, -1};
  std::array<std::string, 2> buffers_;
};

// Runs a shell command; its standard output (and its stderr when redirected in `command`).
std::string shell(const std::string& command) {
  std::unique_ptr<FILE, decltype(&::pclose)> p(::popen(command.c_str(), "r"), ::pclose);
  REQUIRE(p);
  std::string out;
  char chunk[4096];
  while (auto n = std::fread(chunk, 1, sizeof chunk, p.get())) out.append(chunk, n);
  return out;
}

}  // namespace

TEST_CASE("curl against benchmarks/hello_server --tls, and a certificate reload on SIGHUP") {
  if (!std::filesystem::exists(SLUICE_HELLO_SERVER)) {
    MESSAGE("skipped: " SLUICE_HELLO_SERVER " is not built");
    return;
  }
  temp_dir dir;
  const auto cert = dir.path() / "served.crt";
  const auto key = dir.path() / "served.key";
  auto serve = [&](const cert_files& f) {
    std::filesystem::copy_file(f.cert, cert, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(f.key, key, std::filesystem::copy_options::overwrite_existing);
  };
  serve(certs().one);
  child_process server({SLUICE_HELLO_SERVER, "--port", "0", "--tls", cert.string(), key.string()});
  const std::string ready = server.read_line(0);
  REQUIRE(ready.rfind("listening on 127.0.0.1:", 0) == 0);
  const std::string url = "https://127.0.0.1:" + ready.substr(ready.rfind(':') + 1) + "/";
  const std::string curl = "curl -sk --max-time 10 ";

  CHECK(shell(curl + url) == "Hello, world!\n");
  CHECK(shell(curl + url + "slow?ms=1") == "Hello, world!\n");
  CHECK(shell(curl + "-v " + url + " 2>&1").find("CN=sluice-test-1") != std::string::npos);

  serve(certs().two);
  server.signal(SIGHUP);
  CHECK(server.read_line(1).rfind("hello_server: reloaded ", 0) == 0);
  const std::string verbose = shell(curl + "-v " + url + " 2>&1");
  CHECK(verbose.find("CN=sluice-test-2") != std::string::npos);
  CHECK(verbose.find("Hello, world!") != std::string::npos);

  std::ofstream(cert, std::ios::trunc) << "broken\n";
  server.signal(SIGHUP);
  const std::string failed = server.read_line(1);
  CHECK(failed.rfind("hello_server: reload failed, keeping the previous certificate: ", 0) == 0);
  CHECK(failed.find(cert.string()) != std::string::npos);
  CHECK(shell(curl + "-v " + url + " 2>&1").find("CN=sluice-test-2") != std::string::npos);

  server.signal(SIGTERM);
  const std::string stopped = server.read_line(0);
  CHECK(stopped.rfind("{\"event\":\"stopped\",\"mode\":\"graceful\",", 0) == 0);
  const int status = server.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// TLS as a transport for any protocol: tcp::server with net::serve_over -------------------------

namespace {

namespace net = sluice::net;

// Echoes lines until the peer leaves or says "bye".
awaitable<void> echo_lines(net::tls_stream& s) {
  std::string line;
  for (;;) {
    auto [ec, n] = co_await asio::async_read_until(s, asio::dynamic_buffer(line), '\n', nothrow);
    if (ec) co_return;
    co_await asio::async_write(s, asio::buffer(line, n), use_awaitable);
    if (line.compare(0, n, "bye\n") == 0) co_return;
    line.erase(0, n);
  }
}

constexpr std::string_view echo_alpn[] = {"x-echo"};

net::tls echo_transport(log_lines& log, std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10)) {
  return net::tls(std::make_shared<tls::context_holder>(context_one()), log.options(), handshake_timeout, echo_alpn);
}

}  // namespace

TEST_CASE("tcp::server over net::tls: an echo protocol with its own ALPN name, close_notify when it ends") {
  asio::io_context io;
  log_lines log(io);
  sluice::tcp::server srv(io.get_executor(), net::serve_over(echo_transport(log), echo_lines));
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto ctx = client_context(std::string_view("\x02h2\x06x-echo", 10));
    auto c = co_await tls_client::connect(ep, ctx);
    CHECK(c.alpn() == "x-echo");
    CHECK(co_await c.read_line_after("ping\n") == "ping\n");
    CHECK(co_await c.read_line_after("pong\n") == "pong\n");
    // The protocol ends: the transport says goodbye with close_notify (eof, not a truncation).
    CHECK(co_await c.read_line_after("bye\n") == "bye\n");
    CHECK(co_await c.wait_closed() == asio::error::eof);

    auto no_alpn_ctx = client_context("");
    auto no_alpn = co_await tls_client::connect(ep, no_alpn_ctx);
    CHECK(no_alpn.alpn().empty());
    CHECK(co_await no_alpn.read_line_after("plain\n") == "plain\n");

    // The HTTP server's name is not this protocol's.
    auto http_ctx = client_context();
    co_await expect_alpn_refused(ep, http_ctx, log, "x-echo");

    co_await srv.stop_now();
    CHECK(srv.connections() == 0);
    CHECK(closed_by_server(co_await no_alpn.wait_closed()));
  });
  CHECK(log.lines().size() == 1);
}

TEST_CASE("tcp::server over net::tls: stop_now during handshakes completes at once, without a log line") {
  asio::io_context io;
  log_lines log(io);
  bool session_ran = false;
  auto session = [&session_ran](net::tls_stream&) -> awaitable<void> {
    session_ran = true;
    co_return;
  };
  sluice::tcp::server srv(io.get_executor(), net::serve_over(echo_transport(log), session));
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto both_started = [&srv] { return srv.connections() == 2; };
    auto clients = co_await stuck_in_handshake(ep, both_started);
    const auto t0 = std::chrono::steady_clock::now();
    co_await srv.stop_now();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(srv.connections() == 0);
    CHECK(co_await raw_sees_close(clients[0]));
    CHECK(co_await raw_sees_close(clients[1]));
  });
  CHECK(!session_ran);
  CHECK(log.lines().empty());
}

TEST_CASE("tcp::server over net::tls: the handshake timeout closes a silent client, with a log line") {
  asio::io_context io;
  log_lines log(io);
  bool session_ran = false;
  auto session = [&session_ran](net::tls_stream&) -> awaitable<void> {
    session_ran = true;
    co_return;
  };
  sluice::tcp::server srv(io.get_executor(),
                          net::serve_over(echo_transport(log, std::chrono::milliseconds(100)), session));
  auto ep = srv.listen(loopback_any);
  run_guarded(io, [&]() -> awaitable<void> {
    auto silent = co_await connect_to(ep);
    const auto port = silent.local_endpoint().port();
    CHECK(co_await raw_sees_close(silent));
    co_await log.until_count(1);
    CHECK(log.lines()[0] ==
          "sluice: TLS handshake with 127.0.0.1:" + std::to_string(port) + " failed: timed out after 100 ms");
    co_await srv.stop_now();
  });
  CHECK(!session_ran);
}
