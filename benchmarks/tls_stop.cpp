// tls_stop: how long stop_now() takes with N idle HTTPS connections, next to
// the same figure for plain HTTP (issue 4's target: at most 1.2 times).
//
//   tls_stop [--conns 1000] [--rounds 5] [--client-cpu C] [--json]
//
// For each round and each mode (plain, tls), a forked child opens N
// keep-alive connections with blocking sockets (and OpenSSL for tls: a full
// handshake each), makes one GET / on each and then holds them idle. The
// server, in this process on an io_context(1), then times stop_now() on its
// own clock. Both modes use the same child code and the same hello handler;
// each figure is the median over the rounds, and the ratio is tls / plain from
// the same run. The certificate (P-256, self-signed) is made at start-up.
#include "sluice/http/server.hpp"
#include "sluice/tls/server.hpp"

#include "support/tls_certs.hpp"

#include "stop_timing.hpp"

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read_until.hpp>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using asio::ip::tcp;

namespace {


struct settings {
  int conns = 1000;
  int rounds = 5;
  int client_cpu = -1;
  bool json = false;
};

// The child: N connections, one request each, then idle until the parent
// closes `control`. Reports "ready" (or what failed) on `report`.
[[noreturn]] void hold_connections(int control, int report, bool tls, int n) {
  auto fail = [&](const std::string& what) {
    const std::string line = "error: " + what + "\n";
    [[maybe_unused]] auto w = ::write(report, line.data(), line.size());
    ::_exit(1);
  };
  unsigned short port = 0;
  if (::read(control, &port, sizeof port) != sizeof port) ::_exit(0);  // the parent gave up
  SSL_CTX* ctx = nullptr;
  if (tls) {
    ctx = SSL_CTX_new(TLS_client_method());
    static constexpr unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
  }
  static constexpr char request[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
  std::vector<int> fds;
  std::vector<SSL*> sessions;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      fail("connect: " + std::string(std::strerror(errno)));
    fds.push_back(fd);
    SSL* ssl = nullptr;
    if (tls) {
      ssl = SSL_new(ctx);
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) != 1) fail("TLS handshake " + std::to_string(i));
      sessions.push_back(ssl);
    }
    auto send = [&](const char* p, int len) { return ssl ? SSL_write(ssl, p, len) : ::write(fd, p, len); };
    auto receive = [&](char* p, int len) { return ssl ? SSL_read(ssl, p, len) : ::read(fd, p, len); };
    if (send(request, sizeof request - 1) != static_cast<int>(sizeof request - 1)) fail("request");
    std::string response;
    char buf[1024];
    // The hello response: a head, then "Hello, world!\n".
    while (response.size() < 14 || response.compare(response.size() - 14, 14, "Hello, world!\n") != 0) {
      const auto got = receive(buf, sizeof buf);
      if (got <= 0) fail("response " + std::to_string(i));
      response.append(buf, static_cast<std::size_t>(got));
    }
  }
  [[maybe_unused]] auto w = ::write(report, "ready\n", 6);
  char c;
  while (::read(control, &c, 1) > 0) {
  }
  ::_exit(0);
}

// One round of one mode: the child connects, the server stops, the child goes.
template <typename Server>
bench::sample measure(const settings& s, bool tls, std::unique_ptr<Server> (*make)(asio::io_context&)) {
  int control[2], report[2];
  if (::pipe(control) || ::pipe(report)) throw std::runtime_error("pipe failed");
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    if (s.client_cpu >= 0) {
      cpu_set_t cpus;
      CPU_ZERO(&cpus);
      CPU_SET(s.client_cpu, &cpus);
      ::sched_setaffinity(0, sizeof cpus, &cpus);
    }
    ::close(control[1]);
    ::close(report[0]);
    hold_connections(control[0], report[1], tls, s.conns);
  }
  ::close(control[0]);
  ::close(report[1]);

  bench::sample result{};
  {
    asio::io_context io(1);
    auto server = make(io);
    const unsigned short port = server->local_endpoints().front().port();
    const auto heap_before = bench::heap_in_use();
    if (::write(control[1], &port, sizeof port) != sizeof port) throw std::runtime_error("child gone");
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          asio::posix::stream_descriptor from_child(co_await asio::this_coro::executor, report[0]);
          std::string line;
          co_await asio::async_read_until(from_child, asio::dynamic_buffer(line), '\n', asio::use_awaitable);
          from_child.release();
          if (line != "ready\n") throw std::runtime_error("client " + line);
          result = co_await bench::time_stop(*server, heap_before, s.conns);
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
    io.run();
  }
  ::close(control[1]);
  ::close(report[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return result;
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return std::stoi(argv[++i]);
    };
    if (a == "--conns") s.conns = value();
    else if (a == "--rounds") s.rounds = value();
    else if (a == "--client-cpu") s.client_cpu = value();
    else if (a == "--json") s.json = true;
    else throw std::invalid_argument("unknown argument " + a);
  }
  return s;
}

const tcp::endpoint any(asio::ip::address_v4::loopback(), 0);
std::shared_ptr<sluice::tls::context> server_context;

std::unique_ptr<sluice::http::server> make_plain(asio::io_context& io) {
  auto srv = std::make_unique<sluice::http::server>(io.get_executor(), bench::hello);
  srv->listen(any);
  return srv;
}

std::unique_ptr<sluice::tls::server> make_tls(asio::io_context& io) {
  auto srv = std::make_unique<sluice::tls::server>(io.get_executor(), bench::hello, server_context);
  srv->listen(any);
  return srv;
}

}  // namespace

int main(int argc, char** argv) try {
  const settings s = parse(argc, argv);
  {
    sluice::test::temp_dir dir;
    auto files = sluice::test::make_self_signed(dir.path(), "bench", 1, "sluice-bench");
    server_context = sluice::tls::make_server_context(files.cert, files.key);
  }
  std::map<std::string, std::vector<double>> ms;
  std::map<std::string, double> heap;
  for (int r = 0; r < s.rounds; ++r) {
    std::fprintf(stderr, "tls_stop: N=%d round %d/%d\n", s.conns, r + 1, s.rounds);
    // Alternated, so that drift on the shared machine hits both modes alike.
    auto plain = measure<sluice::http::server>(s, false, make_plain);
    auto tls = measure<sluice::tls::server>(s, true, make_tls);
    ms["plain"].push_back(plain.ms);
    ms["tls"].push_back(tls.ms);
    heap["plain"] = std::max(heap["plain"], plain.heap_per_conn);
    heap["tls"] = std::max(heap["tls"], tls.heap_per_conn);
  }
  const double plain_ms = bench::median(ms["plain"]);
  if (!s.json)
    std::printf("| N | server | stop_now ms (median of %d) | µs per connection | ratio to plain | heap B per idle connection |\n"
                "|---:|---|---:|---:|---:|---:|\n",
                s.rounds);
  for (std::string mode : {"plain", "tls"}) {
    const double m = bench::median(ms[mode]);
    if (s.json)
      std::printf("{\"n\":%d,\"server\":\"%s\",\"stop_now_ms\":%.3f,\"ratio_to_plain\":%.3f,\"us_per_conn\":%.3f,"
                  "\"heap_bytes_per_conn\":%.0f,\"rounds\":%d}\n",
                  s.conns, mode.c_str(), m, m / plain_ms, 1000 * m / s.conns, heap[mode], s.rounds);
    else
      std::printf("| %d | %s | %.2f | %.2f | %.2f | %.0f |\n", s.conns, mode.c_str(), m, 1000 * m / s.conns,
                  m / plain_ms, heap[mode]);
  }
  if (!s.json) {
    std::printf("\nevery round (ms):");
    for (std::string mode : {"plain", "tls"}) {
      std::printf(" %s", mode.c_str());
      for (double v : ms[mode]) std::printf(" %.2f", v);
      std::printf(";");
    }
    std::printf("\n");
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tls_stop: %s\n", e.what());
  return 1;
}
