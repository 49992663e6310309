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
#include "example_main.hpp"
#include "sluice/http/server.hpp"

#include <asio/steady_timer.hpp>

#include <chrono>
#include <cstdio>

using namespace std::chrono;
namespace http = sluice::http;

asio::awaitable<void> serve(example::flags f, milliseconds work) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, [work](http::request& req) -> asio::awaitable<http::response> {
    if (req.path() != "/work") co_return http::response::text(404, "Not found\n");
    std::printf("working on /work\n");
    std::fflush(stdout);
    // A timer stands for the slow part (a database, another service). At the
    // shutdown deadline stop_now() cancels it, and the request ends there.
    asio::steady_timer slow_part(co_await asio::this_coro::executor, work);
    co_await slow_part.async_wait(asio::use_awaitable);
    co_return http::response::text(200, "done\n");
  });
  co_await example::serve_until_signalled(server, f);
}

int main(int argc, char** argv) {
  return example::run("graceful_shutdown", [&] {
    milliseconds work{2000};
    const auto f = example::parse(argc, argv, {{"--work-ms", &work}});
    return serve(f, work);
  });
}
