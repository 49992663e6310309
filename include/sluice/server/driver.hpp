// sluice/server/driver.hpp: the life of one connection, whatever protocol it
// speaks: registration, handshake, the wait for input, deadlines, reads and
// writes, lingering close, and why it ended. A protocol (HTTP/1.1:
// http/detail/protocol.hpp) is an object the driver runs.
//
// Guarantees
// - The connection is in the registry (close_idle() and shutdown() reach it)
//   from before its handshake until its socket is closed; the registry and the
//   state observer learn of its end only once the socket is closed, and each
//   end is counted once: closed idle, completed or forced.
// - Between two exchanges the connection holds no read buffer and no frame
//   but the driver's own where the transport allows it (plain TCP): it waits
//   for readability in an operation allocated to its exact size.
// - Handshake, idle, write and linger deadlines, kinds the driver registers in
//   the server's timeout_table (add_driver_timeouts); protocols add theirs.
// - After the last response, a lingering close: the peer that may still be
//   sending gets to finish (within the linger timeout) instead of a reset
//   that could destroy the response.
//
// The protocol is constructed in the driver's frame and lives as long as the
// connection:
//   Protocol(driver<Transport>&, typename Protocol::shared_type&)
//   void start()                    the handshake is done: sets the deadline
//                                   for the first input
//   asio::awaitable<next> serve_one()
//                                   input is in buffer(): serves what it
//                                   starts (a request and its response);
//                                   after next::upgrade, called again at
//                                   once: runs the protocol switched to
//   bool input_unfinished() const   after the last response: the peer may
//                                   still send what the protocol left unread
//   bool speaks_first() const       after the handshake: serve_one() starts
//                                   without waiting for input (HTTP/2
//                                   agreed by ALPN sends its SETTINGS first)
// An upgrade runs the next protocol on the same driver, once serve_one has
// returned (so the request that asked for it holds no memory meanwhile):
// registration, counts, deadlines and drain stay the connection's.
//
// Thread safety: a driver and its protocol are used on the connection's
// executor (a strand) only.
//
//     return sluice::server::driver<Transport>::serve<http::detail::protocol<Transport>>(
//         core.connections, core, transport, {state, std::move(conn), std::move(stream)});
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/exact_allocator.hpp"
#include "sluice/detail/use_nothrow.hpp"
#include "sluice/server/connection.hpp"
#include "sluice/server/deadlines.hpp"
#include "sluice/server/lifecycle.hpp"
#include "sluice/server/shutdown_deadline.hpp"
#include "sluice/server/read_buffer.hpp"

#include <asio/bind_allocator.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/this_coro.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <system_error>
#include <tuple>

namespace sluice::server {

using sluice::detail::use_nothrow;

// use_nothrow for an operation that stays pending a connection's whole idle
// time: allocated to its exact size (see exact_allocator).
inline auto pending_long() { return asio::bind_allocator(sluice::detail::exact_allocator<void>(), use_nothrow); }

// The kinds of timeout the driver sets itself.
struct driver_timeouts {
  timeout_kind handshake, idle, write, linger;
};

// Registers the driver's kinds in `table`. A write that stalls leaves nothing
// worth saying, so its expiry closes the socket; the others interrupt.
inline driver_timeouts add_driver_timeouts(timeout_table& table, clock::duration handshake, clock::duration idle,
                                           clock::duration write, clock::duration linger) {
  return {table.add(handshake, on_expiry::interrupt), table.add(idle, on_expiry::interrupt),
          table.add(write, on_expiry::close), table.add(linger, on_expiry::interrupt)};
}

// What a server shares with every connection it drives. `options` (its
// on_state_change and on_handler_error) must outlive it.
struct driver_core {
  driver_core(const asio::any_io_executor& ex, const timeout_table& kinds, driver_timeouts timeouts,
              std::size_t max_buffered, const state_observer& observer, const error_reporter& report)
      : registry(ex, kinds, observer, report, lifecycle), timeouts(timeouts), max_buffered(max_buffered) {}

  // The server's phase: changed by the server alone, read by every connection.
  sluice::server::lifecycle lifecycle;
  // Set by shutdown() where it computes its deadline, before the phase moves.
  shutdown_deadline drain_deadline;
  connection_registry registry;
  const driver_timeouts timeouts;
  // How far the read buffer may grow: the most a protocol must hold at once.
  const std::size_t max_buffered;
};

// What a protocol's serve_one() asks of the driver next. upgrade: call
// serve_one() again at once, which runs the protocol switched to (the frame
// of the request that asked for it is gone by then); it ends with abort, the
// switched-to protocol having said its goodbye, if it has one.
enum class next { keep_alive, close, abort, upgrade };

template <typename Transport>
class driver {
 public:
  using stream_type = typename Transport::stream_type;
  using connection = sluice::server::connection;

  // What a connection's frame owns. Members are destroyed in reverse order:
  // the stream first, then the connection, which leaves the registry in its
  // destructor, and only then the server's state that holds the registry.
  // One parameter, because g++ and clang destroy several in opposite orders,
  // and a frame destroyed before it first runs has nothing but parameters.
  struct owned {
    std::shared_ptr<void> server_state;
    std::shared_ptr<connection> conn;
    stream_type stream;
  };

  // One connection, from accept to close. The stream, the driver and the
  // protocol live in this coroutine's frame, so an idle connection costs one
  // frame and the operation it waits on; the frame keeps the server's state
  // alive meanwhile.
  template <typename Protocol>
  static asio::awaitable<void> serve(driver_core& core, typename Protocol::shared_type& shared,
                                     Transport& transport, owned own) {
    driver d(core, own.stream, *own.conn);
    registration registered(d);
    Protocol protocol(d, shared);

    // A connection registered after the drain sweep took its list (the race
    // of golang/go#81153) is told now: never used, it closes before any
    // handshake.
    if (core.lifecycle.draining()) co_return d.conn_->drain();
    d.set_deadline(core.timeouts.handshake);
    if (co_await transport.handshake(d.stream_)) co_return;
    protocol.start();

    for (bool first = true;; first = false) {
      if (d.buffer_.empty() && !(first && protocol.speaks_first())) {
        // Wait for the next exchange holding no buffer where the transport
        // allows it. The state is set before the drain signal is checked, on
        // this strand: a drain() that ran before saw a busy connection and
        // left the signal, one that runs after sees an idle one and closes it.
        d.buffer_.release();
        d.set_state(first ? connection_state::fresh : connection_state::idle);
        if (d.conn_->drain_signalled()) co_return d.conn_->close_if_idle();
        if (!first) d.set_deadline(core.timeouts.idle);
        if constexpr (Transport::readiness_wait) {
          // Inline rather than a coroutine of its own: an idle connection
          // should not hold one more frame. A readiness wait may wake with
          // nothing to read (an event for input already taken), so the read
          // confirms it, and the driver waits again if there was none.
          for (bool found = false; !found;) {
            auto wait = d.readable();
            auto [ec] = co_await std::move(wait);
            if (ec || d.interrupted()) co_return;
            switch (d.try_read()) {
              case read_result::got: found = true; break;
              case read_result::nothing: d.buffer_.release(); break;
              case read_result::ended: co_return;
            }
          }
        } else {
          const bool got = co_await d.read_more();
          if (!got) co_return;
        }
      }
      d.set_state(connection_state::reading);
      // One co_await for both: each costs the frame of every connection.
      next what;
      do what = co_await protocol.serve_one();
      while (what == next::upgrade);
      switch (what) {
        case next::keep_alive: continue;
        case next::close: co_await d.close_after_last_response(protocol.input_unfinished()); co_return;
        case next::abort:
        case next::upgrade: co_return;
      }
    }
  }

  driver_core& core() const { return core_; }
  stream_type& stream() const { return stream_; }
  connection& conn() const { return *conn_; }
  read_buffer& buffer() { return buffer_; }

  // The state and its count change first: whatever the observer does, they agree.
  void set_state(connection_state s) { conn_->set_state(s); }
  // The deadline is now plus `kind`'s timeout; one at a time.
  void set_deadline(timeout_kind kind) { conn_->set_deadline(kind); }
  void clear_deadline() { conn_->clear_deadline(); }
  // The kind whose deadline passed, if one did.
  timeout_kind timed_out() const { return conn_->timed_out(); }
  // What the protocol running now does when the server drains (null: none;
  // see connection::set_drain_hook).
  void set_drain_hook(std::function<void()>* hook) { conn_->set_drain_hook(hook); }
  asio::any_io_executor executor() const { return conn_->executor(); }
  // Accepted beyond the connection limit: its first request is refused.
  bool refused() const { return conn_->refused(); }
  // A deadline passed or close_idle() closed the connection: stop using it.
  bool interrupted() const { return conn_->close_requested() || conn_->timed_out() != timeout_kind::none; }

  // One wait until input may be there, holding no buffer, allocated to its
  // exact size: an awaitable of tuple<error_code>. Only where
  // Transport::readiness_wait; the wake-up may find nothing (try_read says).
  auto readable() {
    return sluice::detail::in_exact_frame([this] { return Transport::async_wait_readable(stream_, pending_long()); });
  }

  enum class read_result { got, nothing, ended };

  // A non-blocking read into the buffer.
  read_result try_read() {
    auto space = buffer_.prepare(1024, core_.max_buffered);
    if (space.size() == 0) return read_result::ended;
    std::error_code ec;
    const std::size_t n = Transport::try_read_some(stream_, space, ec);
    if (ec == asio::error::would_block) return read_result::nothing;
    if (ec) return read_result::ended;
    buffer_.commit(n);
    return read_result::got;
  }

  // Reads what is available into the buffer: at once when the transport can,
  // else asynchronously. False on end of stream, error, timeout or close.
  asio::awaitable<bool> read_more() {
    switch (try_read()) {
      case read_result::got: co_return !interrupted();
      case read_result::ended: co_return false;
      case read_result::nothing: break;
    }
    if (interrupted()) co_return false;
    auto space = buffer_.prepare(1024, core_.max_buffered);
    auto [ec, n] = co_await stream_.async_read_some(space, use_nothrow);
    if (ec || interrupted()) co_return false;
    buffer_.commit(n);
    co_return true;
  }

  // Writes every byte of `buffers`, re-arming the write timeout whenever some
  // progress is made. False if the connection failed.
  template <std::size_t N>
  asio::awaitable<bool> write_all(std::array<asio::const_buffer, N> buffers) {
    std::error_code ec;
    std::size_t n = Transport::try_write_some(stream_, buffers, ec);
    if (ec && ec != asio::error::would_block) co_return false;
    for (bool waited = false;; waited = true) {
      consume(buffers, n);
      if (asio::buffer_size(buffers) == 0) {
        // The timeout guards this write only: a handler taking its time before
        // its next write is not a peer that stopped reading.
        if (waited) clear_deadline();
        break;
      }
      if (interrupted()) co_return false;
      set_deadline(core_.timeouts.write);
      std::tie(ec, n) = co_await stream_.async_write_some(buffers, use_nothrow);
      if (ec) co_return false;
    }
    co_return !interrupted();
  }

  // The bytes read and not consumed, taken out of the buffer, which is given
  // back: for the protocol that takes the connection over.
  std::string take_buffered() {
    std::string taken(buffer_.data());
    buffer_.consume(buffer_.size());
    buffer_.release();
    return taken;
  }

 private:
  driver(driver_core& core, stream_type& stream, connection& conn) : core_(core), stream_(stream), conn_(&conn) {}

  // Registered for as long as the driver runs. The socket is closed at the
  // end, so that the registry and the state observer learn of the end only
  // once it is true.
  struct registration {
    driver& d;
    explicit registration(driver& self) : d(self) {
      d.conn_->attach(&Transport::socket(d.stream_), &Transport::interrupt);
      d.core_.registry.add(*d.conn_);
    }
    ~registration() {
      std::error_code ignored;
      Transport::socket(d.stream_).close(ignored);
      d.core_.registry.remove(*d.conn_);
      d.core_.registry.count_end(d.end_reason());
      d.conn_->detach();
    }
  };

  connection_registry::end_reason end_reason() const {
    using r = connection_registry::end_reason;
    if (conn_->close_requested()) return r::idle_closed;
    // Its last response was out: whatever cut the lingering short, it completed.
    if (conn_->state() == connection_state::closing) return r::completed;
    return core_.lifecycle.forcing() ? r::forced : r::completed;
  }

  template <std::size_t N>
  static void consume(std::array<asio::const_buffer, N>& buffers, std::size_t n) {
    for (auto& b : buffers) {
      std::size_t k = std::min(n, b.size());
      b += k;
      n -= k;
    }
  }

  // After the last response: the stream's own goodbye, then the TCP close.
  // Closing a socket with unread input makes the kernel send a reset, which
  // can destroy a response the peer has not read yet; so when the peer may
  // still be sending (bytes already here, input the protocol left unread),
  // the driver shuts its sending side and drains until the peer closes or
  // the linger timeout passes (what Apache calls a lingering close).
  // Otherwise it closes at once.
  asio::awaitable<void> close_after_last_response(bool input_unfinished) {
    set_state(connection_state::closing);
    set_deadline(core_.timeouts.linger);
    co_await Transport::async_close_notify(stream_);
    if (interrupted()) co_return;
    auto& socket = Transport::socket(stream_);
    std::error_code ec;
    socket.shutdown(asio::socket_base::shutdown_send, ec);
    if (ec || !peer_may_send(socket, input_unfinished)) co_return;
    buffer_.consume(buffer_.size());
    for (;;) {
      auto space = buffer_.prepare(1024, 4096);
      auto [read_ec, n] = co_await socket.async_read_some(space, use_nothrow);
      // A read that completes at once, as it does while the peer floods,
      // never sees a cancel, so the deadline is checked after every read. So
      // is the scope's (stop_now, the shutdown deadline), lost the same way:
      // without this, only throw_if_cancelled would end the loop.
      if (read_ec || interrupted()) co_return;
      auto cancel = co_await asio::this_coro::cancellation_state;
      if (cancel.cancelled() != asio::cancellation_type::none) co_return;
    }
  }

  bool peer_may_send(asio::ip::tcp::socket& socket, bool input_unfinished) {
    if (!buffer_.empty() || input_unfinished) return true;
    std::error_code ec;
    return socket.available(ec) > 0 || ec;
  }

  driver_core& core_;
  stream_type& stream_;
  connection* conn_;
  read_buffer buffer_;
};

}  // namespace sluice::server
