// sluice/net/serve_over.hpp: any protocol of yours over any transport, on
// tcp::server: what makes TLS a transport rather than "HTTP over TLS".
//
//     auto echo = [](sluice::net::tls_stream& s) -> asio::awaitable<void> {
//       char data[1024];
//       for (;;) {
//         const std::size_t n = co_await s.async_read_some(asio::buffer(data), asio::use_awaitable);
//         co_await asio::async_write(s, asio::buffer(data, n), asio::use_awaitable);
//       }
//     };
//     sluice::tcp::server srv(ex, sluice::net::serve_over(sluice::net::tls(contexts, {}, 10s), echo));
//
// Guarantees
// - Each accepted connection gets its stream from the transport, then the
//   transport's handshake, and only after a successful one your session
//   function, with the stream. The handshake is bounded by the transport
//   (net::tls: its handshake_timeout, from accept); a failed one is reported
//   by the transport (net::tls: one log line) and closes that connection
//   only: your function never sees it.
// - When your function returns, the transport says its goodbye (net::tls:
//   close_notify, waiting for the peer's at most close_notify_timeout), then
//   the socket closes. When it throws, or the server stops it (stop_now()),
//   the socket closes at once, without the goodbye; what it threw goes to
//   the server's exception handler as with any tcp::server session.
// - stop_now() ends a connection at once in any step, handshake included:
//   every transport operation honours terminal cancellation.
// - The stream lives in the connection's coroutine frame, and the transport
//   and your function are shared by all connections (one allocation per
//   server): a connection costs the stream and the frames of the handshake
//   and of your function.
//
// Thread safety: as tcp::server. The transport and your function are used by
// every connection at once, on the connections' executors: they must allow
// concurrent calls (net::plain and net::tls do). A stream belongs to its
// connection's executor.
#pragma once

#include "sluice/config.hpp"
#include "sluice/net/transport.hpp"
#include "sluice/tcp/server.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/this_coro.hpp>

#include <functional>
#include <memory>
#include <utility>

namespace sluice::net {

// What runs a protocol over a connection whose handshake succeeded.
template <transport Transport>
using session_over = std::function<asio::awaitable<void>(typename Transport::stream_type&)>;

template <transport Transport>
tcp::server::session_function serve_over(Transport transport, session_over<Transport> session);

// Implementation

namespace detail {

template <transport Transport>
struct shared_by_sessions {
  shared_by_sessions(Transport t, session_over<Transport> s) : transport(std::move(t)), session(std::move(s)) {}
  Transport transport;
  const session_over<Transport> session;
};

// What a connection's frame owns, in one parameter (g++ and clang destroy
// several in opposite orders): the stream goes first, then the shared part
// it may point into (net::tls's log options).
template <transport Transport>
struct owned_by_session {
  std::shared_ptr<shared_by_sessions<Transport>> shared;
  typename Transport::stream_type stream;
};

template <transport Transport>
asio::awaitable<void> serve_connection(owned_by_session<Transport> own) {
  if (co_await own.shared->transport.handshake(own.stream)) co_return;
  co_await own.shared->session(own.stream);
  // After a cancel every co_await would throw: a stopped session closes at once.
  auto cancel = co_await asio::this_coro::cancellation_state;
  if (cancel.cancelled() == asio::cancellation_type::none) co_await Transport::async_close_notify(own.stream);
}

}  // namespace detail

// A session function for tcp::server that runs `session` over `transport`.
// The result may be copied; every copy shares the transport and `session`.
template <transport Transport>
tcp::server::session_function serve_over(Transport transport, session_over<Transport> session) {
  auto shared = std::make_shared<detail::shared_by_sessions<Transport>>(std::move(transport), std::move(session));
  return [shared = std::move(shared)](asio::ip::tcp::socket socket) {
    auto stream = shared->transport.make_stream(std::move(socket));
    return detail::serve_connection<Transport>({shared, std::move(stream)});
  };
}

}  // namespace sluice::net
