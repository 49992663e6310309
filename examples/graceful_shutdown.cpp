// graceful_shutdown: a request that takes a while is finished, not cut, when
// the server is told to stop.
//
//   graceful_shutdown [--port P] [--grace-ms G] [--work-ms W]
//
// GET /work answers after W milliseconds (default 2000); while it works it
// prints `working on /work` so you can send the signal in time:
//
//   curl -i localhost:PORT/work &  sleep 0.5;  kill -TERM <pid>
//
// SIGTERM calls shutdown(G ms): the listener closes, idle connections close at
// once, /work finishes and its response says "Connection: close". The JSON
// line then says "completed":1. A grace shorter than the work (G < W) shows
// the other side: at the deadline the request is cancelled ("forced":1).
// SIGINT, or a second signal during the drain, calls stop_now().
#include "sluice/http/server.hpp"
#include "sluice/signals.hpp"

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono;
namespace http = sluice::http;

struct options {
  unsigned short port = 0;
  milliseconds grace{5000};
  milliseconds work{2000};
};

asio::awaitable<void> serve(options o) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, [work = o.work](http::request& req) -> asio::awaitable<http::response> {
    if (req.path() != "/work") co_return http::response::text(404, "Not found\n");
    std::printf("working on /work\n");
    std::fflush(stdout);
    // A timer stands for the slow part (a database, another service). At the
    // shutdown deadline stop_now() cancels it, and the request ends there.
    asio::steady_timer slow_part(co_await asio::this_coro::executor, work);
    co_await slow_part.async_wait(asio::use_awaitable);
    co_return http::response::text(200, "done\n");
  });
  asio::signal_set signals(ex, SIGINT, SIGTERM);  // before "listening": no signal is lost
  auto ep = server.listen("127.0.0.1", o.port);
  std::printf("listening on 127.0.0.1:%u\n", ep.port());
  std::fflush(stdout);

  const std::vector<int> immediate{SIGINT};
  auto stopped = co_await sluice::stop_on_signals(server, signals, o.grace, immediate);
  std::printf("%s\n", sluice::to_json(stopped).c_str());
}

int main(int argc, char** argv) try {
  options o;
  for (int i = 1; i < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (i + 1 == argc) throw std::invalid_argument(std::string(flag) + " needs a value");
    if (flag == "--port") o.port = static_cast<unsigned short>(std::stoul(argv[i + 1]));
    else if (flag == "--grace-ms") o.grace = milliseconds(std::stol(argv[i + 1]));
    else if (flag == "--work-ms") o.work = milliseconds(std::stol(argv[i + 1]));
    else throw std::invalid_argument("unknown argument: " + std::string(flag));
  }
  asio::io_context io(1);
  asio::co_spawn(io, serve(o), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run();
} catch (const std::exception& e) {
  std::fprintf(stderr, "graceful_shutdown: %s\n", e.what());
  return 1;
}
