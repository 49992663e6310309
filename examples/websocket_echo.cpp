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
#include "example_main.hpp"
#include "sluice/http/server.hpp"
#include "sluice/ws/server.hpp"


#include <chrono>
#include <string>

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

asio::awaitable<void> serve(example::flags f) {
  auto ex = co_await asio::this_coro::executor;
  http::server server(ex, route);
  co_await example::serve_until_signalled(server, f);
}

int main(int argc, char** argv) {
  return example::run("websocket_echo", [&] { return serve(example::parse(argc, argv)); });
}
