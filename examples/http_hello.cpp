// http_hello: the smallest complete sluice HTTP server, and how it stops.
//
//   http_hello [--port P] [--grace-ms G]
//
// GET / answers "Hello, world!". Prints `listening on HOST:PORT` first.
// SIGTERM drains: shutdown(G ms) lets requests in progress finish and closes
// idle connections at once. SIGINT (Ctrl-C), or a second signal during the
// drain, calls stop_now(). Either way the program prints one JSON line with
// the summary and exits when the server has stopped: nothing is left running.
#include "example_main.hpp"
#include "sluice/http/server.hpp"

#include <chrono>

using namespace std::chrono;
namespace http = sluice::http;

asio::awaitable<http::response> hello(http::request& req) {
  if (req.path() != "/") co_return http::response::text(404, "Not found\n");
  co_return http::response::text(200, "Hello, world!\n");
}

asio::awaitable<void> serve(example::flags f) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, hello);
  co_await example::serve_until_signalled(server, f);
}

int main(int argc, char** argv) {
  return example::run("http_hello", [&] { return serve(example::parse(argc, argv)); });
}
