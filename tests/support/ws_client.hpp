// Test support for the WebSocket tests: client frames built byte by byte (masked, or broken on
// purpose), and a raw client that does the opening handshake over http_client and then reads the
// server's frames as they are on the wire.
#pragma once

#include "sluice/ws/frame.hpp"

#include "support/http_client.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::test {

namespace ws = sluice::ws;

// A client frame: first byte `b0` (FIN, RSV, opcode), the shortest length form, masked with `key`
// unless `masked` is false.
inline std::string client_frame(std::uint8_t b0, std::string_view payload, bool masked = true,
                                std::uint32_t key = 0x37fa213d) {
  std::string f(1, static_cast<char>(b0));
  const std::uint8_t mask_bit = masked ? 0x80 : 0;
  const std::uint64_t n = payload.size();
  if (n < 126) {
    f.push_back(static_cast<char>(mask_bit | n));
  } else if (n <= 0xFFFF) {
    f.push_back(static_cast<char>(mask_bit | 126));
    for (int i = 1; i >= 0; --i) f.push_back(static_cast<char>(n >> (8 * i)));
  } else {
    f.push_back(static_cast<char>(mask_bit | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(n >> (8 * i)));
  }
  const char k[4] = {char(key >> 24), char(key >> 16), char(key >> 8), char(key)};
  if (masked) f.append(k, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f.push_back(masked ? char(payload[i] ^ k[i % 4]) : payload[i]);
  return f;
}

inline std::uint8_t fin(ws::opcode op) { return static_cast<std::uint8_t>(0x80 | static_cast<std::uint8_t>(op)); }

inline std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
  return ws::make_close_payload(code, reason);
}

// A server frame as read off the wire.
struct server_frame {
  std::uint8_t b0 = 0;
  std::string payload;
  ws::opcode op() const { return static_cast<ws::opcode>(b0 & 0x0F); }
  bool fin() const { return b0 & 0x80; }
  bool compressed() const { return b0 & 0x40; }
  std::uint16_t close_code() const {
    return payload.size() < 2 ? 0 : std::uint16_t((std::uint8_t(payload[0]) << 8) | std::uint8_t(payload[1]));
  }
};

inline std::string upgrade_request_ws(std::string_view target = "/ws", std::string_view extra = {}) {
  std::string r = "GET ";
  r.append(target).append(" HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
      .append(extra).append("\r\n");
  return r;
}

class ws_client {
 public:
  explicit ws_client(http_client c) : c_(std::move(c)) {}

  // Connects and upgrades; checks the 101 and its accept key (RFC 6455 4.2.2's example).
  static awaitable<ws_client> connect(tcp::endpoint ep, std::string_view extra = {}, http_response* out = nullptr) {
    auto c = co_await http_client::connect(ep);
    auto r = co_await c.request(upgrade_request_ws("/ws", extra));
    REQUIRE(r.status == 101);
    CHECK(r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    if (out) *out = r;
    co_return ws_client(std::move(c));
  }

  http_client& http() { return c_; }
  awaitable<void> send(std::string_view bytes) { co_await c_.send(bytes); }
  awaitable<void> send(ws::opcode op, std::string_view payload) {
    const std::string frame = client_frame(fin(op), payload);
    co_await c_.send(frame);
  }

  awaitable<server_frame> read_frame() {
    server_frame f;
    auto h = co_await c_.read_exact(2);
    f.b0 = std::uint8_t(h[0]);
    std::uint64_t n = std::uint8_t(h[1]) & 0x7F;
    CHECK((std::uint8_t(h[1]) & 0x80) == 0);  // servers do not mask
    if (n >= 126) {
      auto ext = co_await c_.read_exact(n == 126 ? 2 : 8);
      n = 0;
      for (char b : ext) n = (n << 8) | std::uint8_t(b);
    }
    f.payload = co_await c_.read_exact(n);
    co_return f;
  }

 private:
  http_client c_;
};

}  // namespace sluice::test
