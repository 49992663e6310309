// Internals of the servers: notices, while a handler runs, that its client
// left, and tells the handler (http::request::cancellation_slot(),
// http::request::client_gone()).
//
// How: a readiness wait on the TCP socket, started once the request has been
// read whole with nothing pipelined behind it, so that any input is news. On
// waking, a peek tells them apart: 0 bytes (a FIN) or an error (a reset) means
// the client is gone; data means a pipelined request (or, over TLS, a record)
// and the watch stops, saying nothing. Over TLS the wait is on the TCP socket
// beneath, so a FIN or reset with no TLS record before it is seen (a client
// that died or dropped the connection); a close_notify sent first is data,
// and stops the watch.
//
// Guarantees
// - Costs nothing until the handler asks (watch()); then one reactor
//   operation, allocated by Asio's per-thread recycling allocator, cancelled
//   when the handler returns (end_request()).
// - The wait's completion holds a weak reference to the watch's owner (the
//   connection), never the session's frame: it may run after the session
//   ended and then does nothing.
// - The client's leaving is emitted at most once per request (terminal
//   cancellation), on the connection's executor, where the wait completes.
//   A stop reaches the slot too, through the forwarding slot() installs,
//   emitted where the stop is (the session's executor as well).
//
// Thread safety: everything runs on the connection's executor.
#pragma once

#include "sluice/config.hpp"

#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

namespace sluice::server {

class disconnect_watch {
 public:
  disconnect_watch() = default;
  disconnect_watch(const disconnect_watch&) = delete;
  disconnect_watch& operator=(const disconnect_watch&) = delete;

  // What the handler binds its next operation to. `awaiting` is the slot of
  // the coroutine that will await it, where a stop (stop_now(), the shutdown
  // deadline) arrives: it is forwarded to the operation bound here, until an
  // operation bound there replaces the forwarding.
  asio::cancellation_slot slot(asio::cancellation_slot awaiting) {
    if (awaiting.is_connected())
      awaiting.assign([this](asio::cancellation_type type) { to_handler_.emit(type); });
    return to_handler_.slot();
  }
  bool client_gone() const { return gone_; }

  // The client is known gone another way (HTTP/2: its stream was reset, or
  // the connection ended): told once, as if the watch had seen it.
  void client_left() {
    if (std::exchange(gone_, true)) return;
    to_handler_.emit(asio::cancellation_type::terminal);
  }

  // Watches `socket` until end_request(), unless already watching or the
  // client is known gone. `owner` owns this watch: the pending wait holds
  // only a weak reference to it. No other operation may be pending on the
  // socket meanwhile (end_request() cancels them all).
  void watch(asio::ip::tcp::socket& socket, const std::shared_ptr<void>& owner) {
    if (socket_ || gone_) return;
    socket_ = &socket;
    wait(std::shared_ptr<disconnect_watch>(owner, this));
  }

  // The handler returned: the wait (if any) is cancelled, whatever was
  // bound to the slot is forgotten (and its memory freed), and the next
  // request starts afresh. `session` is the session's own slot, where slot()
  // may have left a forwarding that must not outlive this watch.
  void end_request(asio::cancellation_slot session) {
    if (session.is_connected()) session.clear();
    ++generation_;
    if (socket_) {
      std::error_code ignored;
      socket_->cancel(ignored);
      socket_ = nullptr;
    }
    to_handler_.slot().clear();
    gone_ = false;
  }

 private:
  void wait(const std::shared_ptr<disconnect_watch>& self) {
    socket_->async_wait(asio::socket_base::wait_read,
                        [weak = std::weak_ptr<disconnect_watch>(self), generation = generation_](std::error_code ec) {
                          if (auto watch = weak.lock(); watch && watch->generation_ == generation && watch->socket_)
                            watch->woke(ec, watch);
                        });
  }

  // An error here is a cancel (end_request(), a timeout, a stop) or a
  // closed socket: the watch ends; the peek is what detects a reset.
  void woke(std::error_code ec, const std::shared_ptr<disconnect_watch>& self) {
    if (ec) {
      socket_ = nullptr;
      return;
    }
    switch (peek(*socket_)) {
      case input::none: wait(self); return;  // a wake-up for input already taken
      case input::data: socket_ = nullptr; return;
      case input::gone: break;
    }
    socket_ = nullptr;
    client_left();
  }

  enum class input { none, data, gone };

  // Reads nothing: MSG_PEEK leaves a pipelined request where the session
  // will read it.
  static input peek(asio::ip::tcp::socket& socket) {
    char byte;
    const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return input::data;
    if (n == 0) return input::gone;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? input::none : input::gone;
  }

  asio::cancellation_signal to_handler_;
  asio::ip::tcp::socket* socket_ = nullptr;  // while a wait is pending
  std::uint32_t generation_ = 0;             // a wait from an earlier request finds a newer one
  bool gone_ = false;
};

}  // namespace sluice::server
