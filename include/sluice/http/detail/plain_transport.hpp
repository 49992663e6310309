// Internals of the HTTP server: how a session talks to a plain TCP socket.
//
// A transport tells the one connection driver (server/driver.hpp) what differs
// between stream types:
//   stream_type                    the stream a session owns
//   make_stream(socket)            wraps an accepted socket
//   socket(stream)                 the TCP socket beneath
//   readiness_wait                 true if the session may wait for input
//                                  without a buffer (see async_wait_readable)
//   async_wait_readable(stream, token)
//                                  waits until input is available (or may be:
//                                  a wake-up with none is possible), reading
//                                  nothing; completes with an error_code
//   try_read_some / try_write_some a non-blocking attempt; would_block when
//                                  the session must wait instead
//   interrupt(socket)              makes the session's pending and next reads
//                                  and writes end now (a timeout), socket kept open
//   handshake(stream)              completes the stream's own handshake
//   async_close_notify(stream)     the stream's own goodbye before the TCP close
#pragma once

#include "sluice/config.hpp"

#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>

#include <cstddef>
#include <system_error>
#include <utility>

namespace sluice::http::detail {

struct plain_transport {
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
};

}  // namespace sluice::http::detail
