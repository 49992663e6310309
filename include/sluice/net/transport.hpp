// sluice/net/transport.hpp: what a connection driver needs from a transport
// (the bytes' way between a TCP socket and a protocol), as a concept.
//
// A transport is a type with static members and a small state shared by all
// of a server's connections (TLS contexts, log settings): one driver template
// serves every transport, and what differs (a plain socket, an SSL stream)
// is named here, requirement by requirement, each with what the driver
// relies on. The transports: net::plain (plain.hpp), net::tls (tls.hpp).
//
//     static_assert(sluice::net::transport<sluice::net::plain>);
//
//     template <sluice::net::transport Transport>
//     class driver { typename Transport::stream_type stream_; ... };
//
// A transport's shared state is used by all its connections at once, from
// any thread: its members must be safe to call concurrently. A stream
// belongs to one connection and is used on that connection's executor only.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/use_nothrow.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/use_awaitable.hpp>

#include <array>
#include <concepts>
#include <cstddef>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>

namespace sluice::net {

namespace detail {

// A buffer sequence of the shape the drivers write: a head and a body.
using buffers_sample = std::array<asio::const_buffer, 2>;

// Asio's AsyncReadStream and AsyncWriteStream, as the drivers and the
// protocols use them (directly and through asio::async_write).
template <class S>
concept async_stream = requires(S& s, asio::mutable_buffer in, buffers_sample out) {
  // The connection's executor: composed operations (asio::async_write)
  // run their steps on it.
  { s.get_executor() } -> std::convertible_to<asio::any_io_executor>;

  // Reads at least one byte, or fails: eof at the peer's orderly end.
  // Cancellable (terminal cancellation at least): stop_now() ends it.
  { s.async_read_some(in, asio::use_awaitable) } -> std::same_as<asio::awaitable<std::size_t>>;
  { s.async_read_some(in, sluice::detail::use_nothrow) }
      -> std::same_as<asio::awaitable<std::tuple<std::error_code, std::size_t>>>;

  // Writes at least one byte of `out`, or fails. Cancellable as reads.
  { s.async_write_some(out, asio::use_awaitable) } -> std::same_as<asio::awaitable<std::size_t>>;
  { s.async_write_some(out, sluice::detail::use_nothrow) }
      -> std::same_as<asio::awaitable<std::tuple<std::error_code, std::size_t>>>;
};

// The buffer-less wait for input, required of the transports that offer it
// (readiness_wait). Completes with no error when input is there, or may be:
// a wake-up with nothing to read is possible, and the driver then reads
// with try_read_some and waits again on would_block. Reads nothing, so an
// idle connection holds no buffer while it waits. Cancellable.
template <class T>
concept readiness_waits = requires(typename T::stream_type& s) {
  { T::async_wait_readable(s, sluice::detail::use_nothrow) }
      -> std::same_as<asio::awaitable<std::tuple<std::error_code>>>;
};

}  // namespace detail

template <class T>
concept transport = requires(T& t, typename T::stream_type& s, asio::ip::tcp::socket& socket,
                             asio::mutable_buffer in, detail::buffers_sample out, std::error_code& ec) {
  // The stream a connection owns from accept to close: movable, since it is
  // made from the accepted socket and moved into the connection's frame.
  typename T::stream_type;
  requires std::movable<typename T::stream_type>;
  requires detail::async_stream<typename T::stream_type>;

  // Wraps an accepted socket (the transport's state may go into the stream:
  // a TLS context). Called once per connection, on the accepting thread.
  { t.make_stream(std::move(socket)) } -> std::same_as<typename T::stream_type>;

  // The TCP socket beneath the stream: the driver closes it, shuts its
  // sending side for a lingering close, and reads the peer's address.
  { T::socket(s) } -> std::same_as<asio::ip::tcp::socket&>;

  // Whether the driver may wait for input without a buffer
  // (async_wait_readable); false when bytes can be ready that no socket
  // readiness announces (TLS: OpenSSL's own buffer), and the driver then
  // waits with async_read_some into its buffer. A constant: the driver
  // chooses its idle wait at compile time.
  { std::bool_constant<T::readiness_wait>{} };
  requires !T::readiness_wait || detail::readiness_waits<T>;

  // A non-blocking read: the bytes there now, would_block when there are
  // none (always, where the transport cannot read synchronously), eof at
  // the end. The driver tries it before every asynchronous read.
  { T::try_read_some(s, in, ec) } -> std::same_as<std::size_t>;

  // A non-blocking write of what fits now; would_block as for reads. The
  // driver tries it before every asynchronous write.
  { T::try_write_some(s, out, ec) } -> std::same_as<std::size_t>;

  // Makes the connection's pending and next reads and writes end now (a
  // timeout, close_idle()), from the connection's executor, keeping the
  // socket open so that a last response (408) can still go out. A plain
  // function, so that the driver's registry can hold a pointer to it
  // without knowing the transport.
  { &T::interrupt } -> std::convertible_to<void (*)(asio::ip::tcp::socket&)>;

  // The stream's own handshake, before the first byte of the protocol; no
  // error when the connection may go on. Bounded by the transport itself
  // (a driver's deadline alone cannot always end it), reports its own
  // failures, and ends at once on terminal cancellation (stop_now()),
  // returning operation_aborted.
  { t.handshake(s) } -> std::same_as<asio::awaitable<std::error_code>>;

  // The stream's own goodbye after the protocol's last bytes, before the
  // driver shuts the TCP sending side (TLS: close_notify). Never throws for
  // a peer that fails; bounded by the transport; ends on terminal
  // cancellation.
  { T::async_close_notify(s) } -> std::same_as<asio::awaitable<void>>;

  // The application protocol the handshake agreed on (ALPN), empty when none was: what a
  // server that speaks several protocols on one port (HTTP/1.1 and HTTP/2) dispatches on.
  { T::alpn(s) } -> std::same_as<std::string_view>;
};

}  // namespace sluice::net
