// sluice/ws/server.hpp: WebSocket (RFC 6455, with RFC 7692's permessage-deflate) in an HTTP
// handler of sluice's server. Needs OpenSSL's libcrypto (SHA-1) and zlib.
//
//     sluice::ws::options opts;
//     opts.deflate.enabled = true;
//     http::server srv(ex, [&](http::request& req) -> asio::awaitable<http::response> {
//       if (req.path() == "/ws" && sluice::ws::is_upgrade(req))
//         co_return sluice::ws::accept(req, opts, [](sluice::ws::connection& ws) -> asio::awaitable<void> {
//           for (;;) {
//             auto msg = co_await ws.read();
//             co_await ws.write(msg.data, msg.kind);
//           }
//         });
//       co_return http::response::text(404, "not found\n");
//     });
//
// Guarantees: accept() answers a valid handshake with 101 (Sec-WebSocket-Accept, the subprotocol
// the application chose, permessage-deflate when both sides want it) and an invalid one with its
// 4xx (ws/handshake.hpp). The function then runs as a task of the server on the taken-over
// connection, counted as connection_state::websocket: stop_now() cancels it; shutdown() makes
// the connection send Close 1001 and waits, up to its deadline, for the peer's Close, which ends
// read() with ws::closed. The function ending with ws::closed is a normal end; returning sends
// Close 1000 (if no Close was sent); throwing anything else sends Close 1011 and the server
// reports the exception as for any handler.
//
// Thread safety: accept() and is_upgrade() are for the handler's coroutine; see
// ws/connection.hpp for the connection.
#pragma once

#include "sluice/http/message.hpp"
#include "sluice/ws/connection.hpp"
#include "sluice/ws/handshake.hpp"

#include <asio/error.hpp>

#include <algorithm>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace sluice::ws {

using handler = std::function<asio::awaitable<void>(connection&)>;

// Whether `req` asks for a WebSocket (Upgrade: websocket); accept() checks the rest.
bool is_upgrade(const http::request& req);

// The answer to a WebSocket handshake: 101 with `fn` to run over the connection, or a 4xx.
// Throws std::invalid_argument when options::choose_subprotocol picks one the client did not offer.
http::response accept(const http::request& req, const options& opts, handler fn);

// Implementation

inline bool is_upgrade(const http::request& req) { return req.headers().has_token("upgrade", "websocket"); }

inline asio::awaitable<void> detail::serve(const serve_args& args, http::upgraded& up) {
  connection ws(up, args);
  std::exception_ptr failure;
  try {
    co_await args.fn(ws);
  } catch (const closed&) {
    co_return;
  } catch (const std::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;  // stopped: nothing more to send
    failure = std::current_exception();
  } catch (...) {
    failure = std::current_exception();
  }
  try {
    co_await ws.send_close(failure ? close_code::internal_error : close_code::normal, {});
  } catch (const closed&) {
  } catch (const std::system_error&) {
  }
  if (failure) std::rethrow_exception(failure);
}

inline http::response accept(const http::request& req, const options& opts, handler fn) {
  if (auto refusal = check_handshake(req.head())) return std::move(*refusal);
  detail::agreement agreed;
  if (opts.choose_subprotocol) {
    const auto offered = offered_subprotocols(req.headers());
    if (!offered.empty()) agreed.subprotocol = opts.choose_subprotocol(offered);
    if (!agreed.subprotocol.empty() && std::find(offered.begin(), offered.end(), agreed.subprotocol) == offered.end())
      throw std::invalid_argument("sluice::ws::accept: the subprotocol chosen was not offered");
  }
  agreed.deflate = negotiate_deflate(req.headers(), opts.deflate);

  http::response res;
  res.status = 101;
  res.headers.add("Upgrade", "websocket");
  res.headers.add("Connection", "Upgrade");
  res.headers.add("Sec-WebSocket-Accept", accept_key(*req.headers().get("sec-websocket-key")));
  if (!agreed.subprotocol.empty()) res.headers.add("Sec-WebSocket-Protocol", agreed.subprotocol);
  if (agreed.deflate) res.headers.add("Sec-WebSocket-Extensions", deflate_response(*agreed.deflate));
  // The server keeps the response, this closure with it, until the upgrade function has
  // returned: the coroutine refers to the closure's arguments instead of holding a copy.
  res.upgrade = [args = detail::serve_args{opts.max_message, opts.keepalive, std::move(agreed), std::move(fn)}](
                    http::upgraded& up) {
    return detail::serve(args, up);
  };
  return res;
}

}  // namespace sluice::ws
