// hello_server: the HTTP server that the benchmarks and the tests drive.
//
//   hello_server [--port P] [--grace-ms G] [--threads T] [--restart] [--tls CERT KEY]
//
// GET / answers "Hello, world!"; GET /slow?ms=X answers after X milliseconds.
// SIGTERM starts shutdown(G ms); SIGINT, or a second signal during a
// shutdown, calls stop_now(). When the server has stopped it prints one JSON
// line; with --restart it then listens on the same port again, in the same
// process, until the next signal.
//
// --tls serves the same over HTTPS with the PEM certificate chain CERT and key
// KEY (needs a build with OpenSSL). SIGHUP then reloads both files: new
// connections get the new certificate, open ones keep theirs; if a file is
// bad, the error goes to stderr and the previous certificate stays in use.
#include "sluice/http/server.hpp"
#if SLUICE_HAS_TLS
#include "sluice/tls/server.hpp"
#endif

#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono;
namespace http = sluice::http;

namespace {

struct options {
  unsigned short port = 0;
  milliseconds grace{5000};
  int threads = 1;
  bool restart = false;
  std::string tls_cert;  // empty: plain HTTP
  std::string tls_key;
};

options parse(int argc, char** argv) {
  options o;
  auto number = [&](int& i) {
    if (i + 1 >= argc) throw std::invalid_argument(std::string(argv[i]) + " needs a value");
    return std::stol(argv[++i]);
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port") o.port = static_cast<unsigned short>(number(i));
    else if (a == "--grace-ms") o.grace = milliseconds(number(i));
    else if (a == "--threads") o.threads = static_cast<int>(number(i));
    else if (a == "--restart") o.restart = true;
    else if (a == "--tls") {
#if SLUICE_HAS_TLS
      if (i + 2 >= argc) throw std::invalid_argument("--tls needs CERT and KEY");
      o.tls_cert = argv[++i];
      o.tls_key = argv[++i];
#else
      throw std::invalid_argument("--tls: this hello_server was built without OpenSSL");
#endif
    }
    else throw std::invalid_argument("unknown argument: " + std::string(a));
  }
  return o;
}

asio::awaitable<http::response> hello(http::request& req) {
  if (req.path() == "/slow") {
    long ms = 0;
    if (auto v = req.query_param("ms")) std::from_chars(v->data(), v->data() + v->size(), ms);
    asio::steady_timer t(co_await asio::this_coro::executor, milliseconds(ms));
    co_await t.async_wait(asio::use_awaitable);
  } else if (req.path() != "/") {
    co_return http::response::text(404, "Not found\n");
  }
  co_return http::response::text(200, "Hello, world!\n");
}

// Serves until a signal stops the server. A restart listens on the same port.
template <typename Server>
asio::awaitable<void> serve_with(asio::io_context& io, Server& server, options& o, bool& again) {
  asio::signal_set signals(io, SIGINT, SIGTERM);
  auto ep = server.listen("127.0.0.1", o.port);
  o.port = ep.port();
  std::printf("listening on 127.0.0.1:%u\n", ep.port());
  std::fflush(stdout);

  const int first = co_await signals.async_wait(asio::use_awaitable);
  const auto start = steady_clock::now();
  http::shutdown_summary summary;
  const char* mode = "now";
  if (first == SIGTERM) {
    mode = "graceful";
    // A second signal during the shutdown escalates to stop_now().
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await signals.async_wait(asio::use_awaitable);
          co_await server.stop_now();
        },
        [](std::exception_ptr) {});
    summary = co_await server.shutdown(o.grace);
    signals.cancel();
  } else {
    summary = co_await server.stop_now();
  }
  const double ms = duration<double, std::milli>(steady_clock::now() - start).count();
  std::printf("{\"event\":\"stopped\",\"mode\":\"%s\",\"ms\":%.3f,\"idle_closed\":%llu,\"completed\":%llu,\"forced\":%llu}\n",
              mode, ms, static_cast<unsigned long long>(summary.idle_closed),
              static_cast<unsigned long long>(summary.completed), static_cast<unsigned long long>(summary.forced));
  std::fflush(stdout);
  again = o.restart;
}

#if SLUICE_HAS_TLS
// SIGHUP: reload the certificate files; a bad one leaves the current context serving.
asio::awaitable<void> reload_on_hangup(asio::signal_set& hangup, sluice::tls::server& server, const options& o) {
  for (;;) {
    auto [ec, number] = co_await hangup.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    try {
      server.reload(o.tls_cert, o.tls_key);
      std::fprintf(stderr, "hello_server: reloaded %s\n", o.tls_cert.c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hello_server: reload failed, keeping the previous certificate: %s\n", e.what());
    }
  }
}
#endif

asio::awaitable<void> serve(asio::io_context& io, options& o, bool& again) {
#if SLUICE_HAS_TLS
  if (!o.tls_cert.empty()) {
    sluice::tls::server server(io.get_executor(), hello, sluice::tls::make_server_context(o.tls_cert, o.tls_key));
    asio::signal_set hangup(io, SIGHUP);
    asio::co_spawn(io, reload_on_hangup(hangup, server, o), asio::detached);
    co_await serve_with(io, server, o, again);
    hangup.cancel();
    co_return;
  }
#endif
  http::server server(io.get_executor(), hello);
  co_await serve_with(io, server, o, again);
}

}  // namespace

int main(int argc, char** argv) try {
  options o = parse(argc, argv);
  asio::io_context io(o.threads == 1 ? 1 : ASIO_CONCURRENCY_HINT_DEFAULT);
  bool again = true;
  while (again) {
    again = false;
    std::exception_ptr failure;
    asio::co_spawn(io, serve(io, o, again), [&](std::exception_ptr e) { failure = e; });
    std::vector<std::thread> extra;
    for (int i = 1; i < o.threads; ++i) extra.emplace_back([&] { io.run(); });
    io.run();
    for (auto& t : extra) t.join();
    io.restart();
    if (failure) std::rethrow_exception(failure);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hello_server: %s\n", e.what());
  return 1;
}
