// websocket_echo: a WebSocket echo at /ws, and a page at / that uses it.
//
//   websocket_echo [--port P] [--grace-ms G]
//
// Open http://HOST:PORT/ in a browser: its script opens ws://HOST:PORT/ws, sends
// "hello", shows the echo and the close code it sees when the server stops (with
// ?report=URL it also GETs URL + "echo?data=.." and URL + "closed?code=..": how
// tests/clients/chromium.py learns what the browser saw).
//
// SIGTERM calls shutdown(G ms): each WebSocket is sent Close 1001 ("going away")
// at once and ends when the client answers. SIGINT, or a second signal, calls
// stop_now(): the connections are cut without a Close.
#include "sluice/http/server.hpp"
#include "sluice/signals.hpp"
#include "sluice/ws/server.hpp"

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
namespace ws = sluice::ws;

constexpr std::string_view page = R"(<!doctype html>
<meta charset="utf-8"><title>sluice WebSocket echo</title>
<pre id="log"></pre>
<script>
const report = new URLSearchParams(location.search).get('report');
const say = (line, path) => {
  document.getElementById('log').textContent += line + '\n';
  if (report) fetch(report + path, {mode: 'no-cors'});
};
const socket = new WebSocket(`ws://${location.host}/ws`);
socket.onopen = () => socket.send('hello');
socket.onmessage = (e) => say('echo: ' + e.data, 'echo?data=' + encodeURIComponent(e.data));
socket.onclose = (e) => say('closed: ' + e.code, 'closed?code=' + e.code);
</script>
)";

asio::awaitable<void> echo(ws::connection& socket) {
  for (;;) {  // ends when read() throws ws::closed (or the connection is cut)
    auto message = co_await socket.read();
    co_await socket.write(message.data, message.kind);
  }
}

// permessage-deflate when the client offers it (browsers do), without context takeover: zlib's
// state exists only while a message is processed, so an idle WebSocket holds none.
const ws::options echo_options = [] {
  ws::options o;
  o.deflate.enabled = true;
  return o;
}();

asio::awaitable<http::response> route(http::request& req) {
  if (req.path() == "/ws" && ws::is_upgrade(req)) co_return ws::accept(req, echo_options, echo);
  if (req.path() != "/") co_return http::response::text(404, "Not found\n");
  co_return http::response::text(200, std::string(page), "text/html; charset=utf-8");
}

asio::awaitable<void> serve(unsigned short port, milliseconds grace) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, route);
  asio::signal_set signals(ex, SIGINT, SIGTERM);  // before "listening": no signal is lost
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
  std::fprintf(stderr, "websocket_echo: %s\n", e.what());
  return 1;
}
