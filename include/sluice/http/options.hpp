// sluice/http/options.hpp: limits and timeouts of an HTTP server.
//
// Every timeout closes the connection it fires on, and only that one:
// - header_timeout: from a connection's first byte of a request (or from
//   accept, for a connection that has sent nothing) to the end of the request
//   head. Measured from the start, so a client trickling bytes (slowloris)
//   cannot stretch it.
// - idle_timeout: how long a keep-alive connection may wait for its next request.
// - body_timeout: how long a request body may make no progress.
// - write_timeout: how long a response write may make no progress.
// - linger_timeout: after the last response of a connection, how long the
//   server keeps reading (and discarding) what the peer still sends before it
//   closes, so that the peer never gets a reset that would destroy a response
//   it has not read yet.
// - handshake_timeout: for TLS, how long the handshake may take.
//
// No timeout: std::chrono::milliseconds::max() (any duration too long for
// steady_clock) means never; such a deadline is never armed. It does not
// overflow into one in the past. Zero or negative means at once.
#pragma once

#include "sluice/http/connection_state.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http2/options.hpp"
#include "sluice/tcp/server.hpp"

#include <asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>

namespace sluice::http {

struct server_options {
  parser_limits limits;
  std::chrono::milliseconds header_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(65)};
  std::chrono::milliseconds body_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds write_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds linger_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
  // After shutdown() starts, how long the server keeps accepting and serving
  // as usual while draining() already says so, so that a readiness probe
  // fails and load balancers stop sending new connections before the
  // listeners close (what a Kubernetes pre-stop sleep is for). Part of the
  // grace period, not added to it.
  std::chrono::milliseconds drain_delay{0};
  // Requests served on one connection; 0 means no limit. The last one allowed
  // is answered with "Connection: close", unless the next request has already
  // arrived (pipelined): that one is then answered with 503 and the close.
  std::size_t max_requests_per_connection = 0;
  // A request body the handler left unread is read and discarded, up to this
  // many bytes as sent (chunk framing included), to keep the connection; a
  // larger one closes it instead. Before an upgrade the body is discarded
  // within the same bound, and a larger one refuses the switch (413).
  std::size_t max_discard = 256 * 1024;
  // Told of exceptions escaping handlers (each answered with 500). By default
  // each is reported on stderr.
  std::function<void(std::exception_ptr)> on_handler_error;
  // Told of every connection state change, and of each connection's end
  // (`closed` true). Runs on the connection's strand: keep it short. What it
  // throws goes to on_handler_error; the connection carries on, and the
  // state counts stay exact.
  std::function<void(const asio::ip::tcp::endpoint& peer, connection_state from, connection_state to, bool closed)>
      on_state_change;
  // At tcp.max_connections the server stops accepting until a connection
  // ends; newcomers wait in the kernel backlog. With answer_503_at_limit it
  // accepts them and answers each one's first request with 503 and
  // "Connection: close" (at most tcp.max_refusing at once, past which it
  // pauses as well): a client then learns at once instead of timing out.
  bool answer_503_at_limit = false;
  // HTTP/2 (when sluice is built with libnghttp2): h2 by ALPN over TLS, h2c
  // by prior knowledge on plain TCP, and its limits (http2/options.hpp).
  http2_options http2;
  tcp::server_options tcp;
};

}  // namespace sluice::http
