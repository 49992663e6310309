// sluice/net/plain.hpp: the plain TCP transport (see net/transport.hpp):
// bytes go straight to the socket.
//
//     sluice::http::server srv(ex, handler);                 // HTTP over net::plain
//     sluice::tcp::server echo(ex, sluice::net::serve_over(sluice::net::plain{}, session));
//
// Guarantees
// - Reads and writes are tried without waiting first (the socket is
//   non-blocking), so a response that fits the socket's buffer costs no
//   asynchronous operation.
// - An idle connection can wait for input holding no buffer (readiness_wait).
// - No handshake and no goodbye of its own: the TCP close is the driver's.
//
// Thread safety: stateless; a stream belongs to its connection's executor.
#pragma once

#include "sluice/config.hpp"
#include "sluice/net/transport.hpp"

#include <asio/awaitable.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>

#include <cstddef>
#include <string_view>
#include <system_error>
#include <utility>

namespace sluice::net {

struct plain {
  using stream_type = asio::ip::tcp::socket;
  static constexpr bool readiness_wait = true;

  stream_type make_stream(asio::ip::tcp::socket socket) {
    std::error_code ignored;
    socket.non_blocking(true, ignored);  // lets try_read_some and try_write_some return would_block
    return socket;
  }

  static asio::ip::tcp::socket& socket(stream_type& s) { return s; }

  // Asio's reactor is edge-triggered, but starting a wait re-arms the
  // descriptor (EPOLL_CTL_MOD), which reports input that is already there:
  // nothing that arrived while no operation waited is missed.
  template <typename Token>
  static auto async_wait_readable(stream_type& s, Token&& token) {
    return s.async_wait(asio::socket_base::wait_read, std::forward<Token>(token));
  }

  static std::size_t try_read_some(stream_type& s, asio::mutable_buffer b, std::error_code& ec) {
    return s.read_some(b, ec);
  }

  template <typename ConstBuffers>
  static std::size_t try_write_some(stream_type& s, const ConstBuffers& b, std::error_code& ec) {
    return s.write_some(b, ec);
  }

  // One operation at a time, each a single system call: a cancel cannot fall between steps.
  static void interrupt(asio::ip::tcp::socket& s) {
    std::error_code ignored;
    s.cancel(ignored);
  }

  static asio::awaitable<std::error_code> handshake(stream_type&) { co_return std::error_code{}; }
  static asio::awaitable<void> async_close_notify(stream_type&) { co_return; }
  static std::string_view alpn(stream_type&) { return {}; }
};

static_assert(transport<plain>);

}  // namespace sluice::net
