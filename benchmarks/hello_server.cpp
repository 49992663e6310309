// hello_server: the HTTP server that the benchmarks and the tests drive (a fixture, not an
// example: examples/ has those).
//
//   hello_server [--port P] [--grace-ms G] [--threads T [--reuseport]] [--restart]
//                [--drain-delay-ms D] [--tls CERT KEY]
//
// GET / answers "Hello, world!"; GET /slow?ms=X answers after X milliseconds;
// GET /ready answers 200, or 503 once shutdown has started (a readiness probe).
// SIGTERM starts shutdown(G ms); SIGINT, or a second signal during a
// shutdown, calls stop_now(). When the server has stopped it prints one JSON
// line; with --restart it then listens on the same port again, in the same
// process, until the next signal.
//
// --threads T runs one io_context on T threads; with --reuseport, T
// io_contexts of one thread each, every one with its own SO_REUSEPORT
// listener (thread per core). Listening sockets passed by systemd or a parent
// process (LISTEN_FDS, LISTEN_PID) are adopted instead of binding a port.
// --drain-delay-ms keeps accepting for D ms after SIGTERM while /ready says 503.
//
// --tls serves the same over HTTPS with the PEM certificate chain CERT and key
// KEY (needs a build with OpenSSL). SIGHUP then reloads both files: new
// connections get the new certificate, open ones keep theirs; if a file is
// bad, the error goes to stderr and the previous certificate stays in use.
#include "sluice/http/server.hpp"
#include "sluice/signals.hpp"
#include "sluice/tcp/inherited.hpp"
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
#include <deque>
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
  milliseconds drain_delay{0};
  int threads = 1;
  bool reuseport = false;
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
    if (a == "--port") {
      o.port = static_cast<unsigned short>(number(i));
    } else if (a == "--grace-ms") {
      o.grace = milliseconds(number(i));
    } else if (a == "--drain-delay-ms") {
      o.drain_delay = milliseconds(number(i));
    } else if (a == "--threads") {
      o.threads = static_cast<int>(number(i));
    } else if (a == "--reuseport") {
      o.reuseport = true;
    } else if (a == "--restart") {
      o.restart = true;
    } else if (a == "--tls") {
#if SLUICE_HAS_TLS
      if (i + 2 >= argc) throw std::invalid_argument("--tls needs CERT and KEY");
      o.tls_cert = argv[++i];
      o.tls_key = argv[++i];
#else
      throw std::invalid_argument("--tls: this hello_server was built without OpenSSL");
#endif
    } else {
      throw std::invalid_argument("unknown argument: " + std::string(a));
    }
  }
  if (o.threads < 1) throw std::invalid_argument("--threads must be at least 1");
  return o;
}

asio::awaitable<http::response> hello(http::request& req) {
  if (req.path() == "/slow") {
    long ms = 0;
    if (auto v = req.query_param("ms")) std::from_chars(v->data(), v->data() + v->size(), ms);
    asio::steady_timer t(co_await asio::this_coro::executor, milliseconds(ms));
    co_await t.async_wait(asio::use_awaitable);
  } else if (req.path() == "/ready") {
    co_return req.server_draining() ? http::response::text(503, "draining\n") : http::response::text(200, "ready\n");
  } else if (req.path() != "/") {
    co_return http::response::text(404, "Not found\n");
  }
  co_return http::response::text(200, "Hello, world!\n");
}

// The io_contexts and the threads that run them: one context on T threads,
// or T contexts on a thread each (--reuseport).
class contexts {
 public:
  explicit contexts(const options& o) {
    const int n = o.reuseport ? o.threads : 1;
    // A concurrency hint of 1 tells Asio (and sluice) that one thread runs a context.
    const int hint = o.reuseport || o.threads == 1 ? 1 : ASIO_CONCURRENCY_HINT_DEFAULT;
    for (int i = 0; i < n; ++i) all_.emplace_back(hint);
    threads_per_context_ = o.reuseport ? 1 : o.threads;
  }

  asio::io_context& main() { return all_.front(); }
  std::deque<asio::io_context>& all() { return all_; }

  // Runs every context until the main one runs out of work.
  void run() {
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> others;
    for (std::size_t i = 1; i < all_.size(); ++i) others.push_back(asio::make_work_guard(all_[i]));
    std::vector<std::thread> threads;
    for (auto& ctx : all_)
      for (int t = 0; t < threads_per_context_; ++t)
        if (&ctx != &all_.front() || t > 0) threads.emplace_back([&ctx] { ctx.run(); });
    all_.front().run();
    others.clear();
    for (auto& t : threads) t.join();
    for (auto& ctx : all_) ctx.restart();
  }

 private:
  std::deque<asio::io_context> all_;
  int threads_per_context_ = 1;
};

// Binds (or adopts inherited listeners) on every context; returns the port.
template <typename Server>
unsigned short listen(Server& server, contexts& ctxs, options& o) {
  auto inherited = sluice::tcp::inherited_listeners(ctxs.main().get_executor());
  if (!inherited.empty()) {
    unsigned short port = 0;
    for (auto& acceptor : inherited) port = server.adopt(std::move(acceptor)).port();
    return port;
  }
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), o.port);
  auto bound = server.listen(ep, ctxs.main().get_executor());
  for (std::size_t i = 1; i < ctxs.all().size(); ++i) server.listen(bound, ctxs.all()[i].get_executor());
  return bound.port();
}

// Serves until a signal stops the server. A restart listens on the same port.
template <typename Server>
asio::awaitable<void> serve_with(contexts& ctxs, Server& server, options& o, bool& again) {
  // Registered before the port opens: a SIGTERM right after "listening" must not kill the process.
  asio::signal_set signals(ctxs.main(), SIGINT, SIGTERM);
  o.port = listen(server, ctxs, o);
  std::printf("listening on 127.0.0.1:%u\n", o.port);
  std::fflush(stdout);

  const std::vector<int> immediate{SIGINT};  // a local: g++ 12 rejects a braced list inside co_await
  auto stopped = co_await sluice::stop_on_signals(server, signals, o.grace, immediate);
  std::printf("%s\n", sluice::to_json(stopped).c_str());
  std::fflush(stdout);
  again = o.restart;
}

http::server_options server_options(const options& o) {
  http::server_options so;
  so.drain_delay = o.drain_delay;
  so.tcp.reuse_port = o.reuseport;
  return so;
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

asio::awaitable<void> serve(contexts& ctxs, options& o, bool& again) {
  auto ex = ctxs.main().get_executor();
#if SLUICE_HAS_TLS
  if (!o.tls_cert.empty()) {
    sluice::tls::server server(ex, hello, sluice::tls::make_server_context(o.tls_cert, o.tls_key), server_options(o));
    asio::signal_set hangup(ex, SIGHUP);
    asio::co_spawn(ex, reload_on_hangup(hangup, server, o), asio::detached);
    co_await serve_with(ctxs, server, o, again);
    hangup.cancel();
    co_return;
  }
#endif
  http::server server(ex, hello, server_options(o));
  co_await serve_with(ctxs, server, o, again);
}

}  // namespace

int main(int argc, char** argv) try {
  options o = parse(argc, argv);
  contexts ctxs(o);
  for (bool again = true; again;) {
    again = false;
    std::exception_ptr failure;
    asio::co_spawn(ctxs.main(), serve(ctxs, o, again), [&](std::exception_ptr e) { failure = e; });
    ctxs.run();
    if (failure) std::rethrow_exception(failure);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hello_server: %s\n", e.what());
  return 1;
}
