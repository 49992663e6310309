// sluice/server/connection_state.hpp: the states a server's connection goes
// through, whatever its protocol, and live counts of connections by state.
//
// fresh      accepted, no byte of a request yet (TLS: during the handshake too)
// reading    part of a request has arrived; its head or body is being read
// active     a handler runs, or its response is being written
// idle       between requests on a keep-alive connection
// upgraded   handed over to a handler (Upgrade, CONNECT)
// websocket  an upgraded connection that said it speaks WebSocket
//            (http::upgraded::set_state)
// http2      an HTTP/2 connection, whatever its streams (state_counts::streams
//            counts those)
// closing    the last response is out; the sending side is shut and the
//            server drains what the peer still sends (lingering close)
//
// Thread safety: state_counts is a plain snapshot.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::server {

enum class connection_state : unsigned char { fresh, reading, active, idle, upgraded, websocket, http2, closing };

inline constexpr std::size_t connection_state_count = 8;

constexpr std::string_view to_string(connection_state s) {
  constexpr std::array<std::string_view, connection_state_count> names{
      "new", "reading", "active", "idle", "upgraded", "websocket", "http2", "closing"};
  return names[static_cast<std::size_t>(s)];
}

struct state_counts {
  std::array<std::size_t, connection_state_count> by_state{};
  // Connections answered 503 at the connection limit since the server
  // started (server_options::answer_503_at_limit); not part of total().
  std::uint64_t refused = 0;
  // Open HTTP/2 streams (requests being served), all connections; not part
  // of total().
  std::size_t streams = 0;

  std::size_t operator[](connection_state s) const { return by_state[static_cast<std::size_t>(s)]; }
  std::size_t total() const {
    std::size_t n = 0;
    for (auto c : by_state) n += c;
    return n;
  }
};

}  // namespace sluice::server
