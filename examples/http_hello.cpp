// http_hello: the smallest complete sluice HTTP server, and how it stops.
//
//   http_hello [--port P] [--grace-ms G]
//
// GET / answers "Hello, world!". Prints `listening on HOST:PORT` first.
// SIGTERM drains: shutdown(G ms) lets requests in progress finish and closes
// idle connections at once. SIGINT (Ctrl-C), or a second signal during the
// drain, calls stop_now(). Either way the program prints one JSON line with
// the summary and exits when the server has stopped: nothing is left running.
#include "sluice/http/server.hpp"
#include "sluice/signals.hpp"

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono;
namespace http = sluice::http;

asio::awaitable<http::response> hello(http::request& req) {
  if (req.path() != "/") co_return http::response::text(404, "Not found\n");
  co_return http::response::text(200, "Hello, world!\n");
}

asio::awaitable<void> serve(unsigned short port, milliseconds grace) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, hello);
  // Registered before the port opens, so that a signal sent as soon as
  // "listening" is printed reaches the server instead of killing the process.
  asio::signal_set signals(ex, SIGINT, SIGTERM);
  auto ep = server.listen("127.0.0.1", port);
  std::printf("listening on 127.0.0.1:%u\n", ep.port());
  std::fflush(stdout);

  const std::vector<int> immediate{SIGINT};
  auto stopped = co_await sluice::stop_on_signals(server, signals, grace, immediate);
  std::printf("%s\n", sluice::to_json(stopped).c_str());
}

int main(int argc, char** argv) try {
  unsigned short port = 0;
  milliseconds grace{5000};
  for (int i = 1; i < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (i + 1 == argc) throw std::invalid_argument(std::string(flag) + " needs a value");
    if (flag == "--port") port = static_cast<unsigned short>(std::stoul(argv[i + 1]));
    else if (flag == "--grace-ms") grace = milliseconds(std::stol(argv[i + 1]));
    else throw std::invalid_argument("unknown argument: " + std::string(flag));
  }
  asio::io_context io(1);
  asio::co_spawn(io, serve(port, grace), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run();
} catch (const std::exception& e) {
  std::fprintf(stderr, "http_hello: %s\n", e.what());
  return 1;
}
