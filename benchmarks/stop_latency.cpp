// stop_latency: how long stop_now() takes with N idle connections, next to
// the floor of closing the same number of accepted sockets in a bare loop.
//
//   stop_latency [--conns 1000,9000] [--rounds 5] [--loadgen PATH] [--client-cpu C] [--json] [--h2]
//
// For each N and round, a second process (loadgen hold) opens N keep-alive
// connections that each make one request and then sit idle. The server side
// then times, on its own clock:
//   tcp    sluice::tcp::server::stop_now() (a minimal responder per connection)
//   http   sluice::http::server::stop_now() (the hello handler)
//   floor  close() over the N accepted descriptors, nothing else
//   epoll floor  the same close() loop over descriptors registered in an epoll
//          set the way Asio's reactor registers them: what any event loop pays
//   http2  with --h2: sluice::http::server::stop_now() with N idle HTTP/2
//          connections (h2c, each did one stream: loadgen hold --h2)
// Each figure is the median over the rounds; memory is the heap the server
// holds per idle connection (largest over the rounds), measured with mallinfo2.
#include "sluice/http/server.hpp"
#include "sluice/tcp/server.hpp"

#include "stop_timing.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono;
using asio::ip::tcp;

namespace {


constexpr std::string_view hello_response =
    "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n\r\nHello, world!\n";

struct settings {
  std::vector<int> conns{1000, 9000};
  int rounds = 5;
  std::string loadgen;
  int client_cpu = -1;
  bool json = false;
  bool h2 = false;  // also an http2 row: the HTTP server with idle h2c connections
};

// The load generator, a child process holding N idle connections.
class client {
 public:
  // h2: the connections speak HTTP/2 (h2c) instead of HTTP/1.1.
  client(const settings& s, unsigned short port, int n, bool h2 = false) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      if (s.client_cpu >= 0) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(s.client_cpu, &cpus);
        sched_setaffinity(0, sizeof cpus, &cpus);
      }
      dup2(in[0], 0);
      dup2(out[1], 1);
      auto p = std::to_string(port), c = std::to_string(n);
      execl(s.loadgen.c_str(), "loadgen", "hold", "--port", p.c_str(), "--conns", c.c_str(), h2 ? "--h2" : nullptr,
            nullptr);
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  client(const client&) = delete;
  ~client() {
    if (stdin_ >= 0) ::close(stdin_);
    ::close(stdout_);
    int status = 0;
    waitpid(pid_, &status, 0);
  }

  int output() const { return stdout_; }

  // Blocking: for the floor, whose server does not run an event loop.
  void wait_ready() const {
    std::string line;
    char c;
    while (::read(stdout_, &c, 1) == 1 && c != '\n') line += c;
    if (line.find("\"ready\"") == std::string::npos) throw std::runtime_error("loadgen failed: " + line);
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
};

asio::awaitable<void> await_ready(const client& c) {
  asio::posix::stream_descriptor out(co_await asio::this_coro::executor, ::dup(c.output()));
  std::string line;
  co_await asio::async_read_until(out, asio::dynamic_buffer(line), '\n', asio::use_awaitable);
  if (line.find("\"ready\"") == std::string::npos) throw std::runtime_error("loadgen failed: " + line);
}

// Answers each request with the hello response, then waits for the next.
// Errors are values, not exceptions: stop_now() ends each session with one.
asio::awaitable<void> tcp_responder(tcp::socket s) {
  constexpr auto nothrow = asio::experimental::as_tuple(asio::use_awaitable);
  std::string request;
  for (;;) {
    const std::size_t old = request.size();
    request.resize(old + 512);
    auto [ec, n] = co_await s.async_read_some(asio::buffer(request.data() + old, 512), nothrow);
    if (ec) co_return;
    request.resize(old + n);
    if (request.find("\r\n\r\n") == std::string::npos) continue;
    request.clear();
    request.shrink_to_fit();  // an idle connection holds no buffer
    auto [write_ec, written] = co_await asio::async_write(s, asio::buffer(hello_response), nothrow);
    if (write_ec) co_return;
  }
}

template <typename Server>
bench::sample measure_server(const settings& s, int n, std::function<std::unique_ptr<Server>(asio::io_context&)> make,
                             bool h2 = false) {
  asio::io_context io(1);
  auto server = make(io);
  auto port = server->local_endpoints().front().port();
  const auto heap_before = bench::heap_in_use();
  client c(s, port, n, h2);
  bench::sample result{};
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await await_ready(c);
        result = co_await bench::time_stop(*server, heap_before, n);
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  return result;
}

// registered_in_epoll: each descriptor is first added to an epoll set (edge-triggered, for
// reading and writing, as asio::detail::epoll_reactor::register_descriptor does), so close()
// also has to take it out of that set.
bench::sample measure_floor(const settings& s, int n, bool registered_in_epoll) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) || ::listen(listener, 4096) ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len))
    throw std::runtime_error("floor: listen failed");
  client c(s, ntohs(addr.sin_port), n);
  std::vector<int> fds;
  fds.reserve(n);
  char buf[512];
  for (int i = 0; i < n; ++i) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) throw std::runtime_error("floor: accept failed");
    std::string request;
    while (request.find("\r\n\r\n") == std::string::npos) {
      auto got = ::read(fd, buf, sizeof buf);
      if (got <= 0) throw std::runtime_error("floor: read failed");
      request.append(buf, static_cast<std::size_t>(got));
    }
    if (::write(fd, hello_response.data(), hello_response.size()) != static_cast<ssize_t>(hello_response.size()))
      throw std::runtime_error("floor: write failed");
    fds.push_back(fd);
  }
  ::close(listener);
  const int epoll = registered_in_epoll ? ::epoll_create1(EPOLL_CLOEXEC) : -1;
  for (int fd : fds) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLPRI | EPOLLOUT | EPOLLET;
    if (registered_in_epoll && ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0)
      throw std::runtime_error("floor: epoll_ctl failed");
  }
  c.wait_ready();
  const auto t0 = steady_clock::now();
  for (int fd : fds) ::close(fd);
  const double ms = duration<double, std::milli>(steady_clock::now() - t0).count();
  if (epoll >= 0) ::close(epoll);
  return {ms, 0};
}

settings parse(int argc, char** argv) {
  settings s;
  s.loadgen = (std::filesystem::canonical("/proc/self/exe").parent_path() / "loadgen").string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--conns") {
      s.conns.clear();
      std::string list = value();
      for (std::size_t p = 0; p < list.size();) {
        auto q = list.find(',', p);
        s.conns.push_back(std::stoi(list.substr(p, q - p)));
        p = q == std::string::npos ? list.size() : q + 1;
      }
    } else if (a == "--rounds") {
      s.rounds = std::stoi(value());
    } else if (a == "--loadgen") {
      s.loadgen = value();
    } else if (a == "--client-cpu") {
      s.client_cpu = std::stoi(value());
    } else if (a == "--json") {
      s.json = true;
    } else if (a == "--h2") {
      s.h2 = true;
    } else {
      throw std::invalid_argument("unknown argument " + a);
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  const settings s = parse(argc, argv);
  const tcp::endpoint any(asio::ip::address_v4::loopback(), 0);
  auto make_tcp = [&](asio::io_context& io) {
    auto srv = std::make_unique<sluice::tcp::server>(io.get_executor(), tcp_responder);
    srv->listen(any);
    return srv;
  };
  auto make_http = [&](asio::io_context& io) {
    auto srv = std::make_unique<sluice::http::server>(io.get_executor(), bench::hello);
    srv->listen(any);
    return srv;
  };

  if (!s.json)
    std::printf("| N | server | stop_now ms | floor ms | epoll floor ms | ratio | µs per connection | "
                "heap B per idle connection |\n"
                "|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (int n : s.conns) {
    std::map<std::string, std::vector<double>> ms;
    std::map<std::string, double> heap;
    for (int r = 0; r < s.rounds; ++r) {
      std::fprintf(stderr, "stop_latency: N=%d round %d/%d\n", n, r + 1, s.rounds);
      auto floor = measure_floor(s, n, false);
      auto epoll_floor = measure_floor(s, n, true);
      auto t = measure_server<sluice::tcp::server>(s, n, make_tcp);
      auto h = measure_server<sluice::http::server>(s, n, make_http);
      ms["floor"].push_back(floor.ms);
      ms["epoll floor"].push_back(epoll_floor.ms);
      ms["tcp"].push_back(t.ms);
      ms["http"].push_back(h.ms);
      heap["tcp"] = std::max(heap["tcp"], t.heap_per_conn);
      heap["http"] = std::max(heap["http"], h.heap_per_conn);
      if (s.h2) {
        auto h2 = measure_server<sluice::http::server>(s, n, make_http, true);
        ms["http2"].push_back(h2.ms);
        heap["http2"] = std::max(heap["http2"], h2.heap_per_conn);
      }
    }
    const double floor_ms = bench::median(ms["floor"]);
    const double epoll_floor_ms = bench::median(ms["epoll floor"]);
    for (std::string server : {"tcp", "http", "http2"}) {
      if (ms[server].empty()) continue;
      const double m = bench::median(ms[server]);
      if (s.json)
        std::printf("{\"n\":%d,\"server\":\"%s\",\"stop_now_ms\":%.3f,\"floor_ms\":%.3f,\"epoll_floor_ms\":%.3f,"
                    "\"ratio\":%.3f,\"us_per_conn\":%.3f,\"heap_bytes_per_conn\":%.0f,\"rounds\":%d}\n",
                    n, server.c_str(), m, floor_ms, epoll_floor_ms, m / floor_ms, 1000 * m / n, heap[server], s.rounds);
      else
        std::printf("| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f |\n", n, server.c_str(), m, floor_ms,
                    epoll_floor_ms, m / floor_ms, 1000 * m / n, heap[server]);
      std::fflush(stdout);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "stop_latency: %s\n", e.what());
  return 1;
}
