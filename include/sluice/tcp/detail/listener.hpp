// Internals of sluice::tcp::server: one listening socket and its accept loop.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/use_nothrow.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <system_error>
#include <utility>

namespace sluice::tcp::detail {

using asio::ip::tcp;

using sluice::detail::use_nothrow;

// Accept errors that concern one peer only, so the next accept may succeed at
// once. Any other error (EMFILE above all: the connection stays in the backlog
// while the process has no descriptor for it) would repeat if retried now.
inline bool is_peer_error(const std::error_code& ec) {
  return ec == asio::error::connection_aborted || ec == asio::error::connection_reset ||
         ec == std::error_code(EPROTO, asio::system_category());
}

// An acceptor that may be closed from any thread: close(), wake() and the
// initiation of every operation on the acceptor and its timer take one
// mutex, so a close never races an accept being started on another thread.
class listener {
 public:
  listener(asio::any_io_executor ex, tcp::acceptor acceptor, bool one_thread)
      : executor_(std::move(ex)),
        inner_(acceptor.get_executor()),
        one_thread_(one_thread),
        acceptor_(std::move(acceptor)),
        timer_(executor_) {}

  // The accept loop's executor, and the one sessions derive theirs from.
  const asio::any_io_executor& executor() const { return executor_; }
  const asio::any_io_executor& inner_executor() const { return inner_; }
  bool one_thread() const { return one_thread_; }
  tcp::endpoint local_endpoint() const { return endpoint_; }
  void set_local_endpoint(tcp::endpoint ep) { endpoint_ = ep; }

  // Frees the port at once. A pending accept completes with operation_aborted.
  void close() {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    std::error_code ignored;
    acceptor_.close(ignored);
    timer_.cancel();
  }

  // Ends a pause (see async_pause), or the next one if none is pending yet,
  // so a wake that comes before the wait is not lost.
  void wake() {
    std::lock_guard lock(mutex_);
    woken_ = true;
    timer_.cancel();
  }

  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

  // Accepts a connection whose socket runs on `session_ex`.
  template <typename Token>
  auto async_accept(asio::any_io_executor session_ex, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, tcp::socket)>(initiate_accept{this}, token,
                                                                           std::move(session_ex));
  }

  // Waits `delay`, or less if the listener is closed meanwhile.
  template <typename Token>
  auto async_backoff(std::chrono::milliseconds delay, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(initiate_backoff{this}, token, delay);
  }

  // Waits, with no deadline, for wake() or close(); at once if either came
  // since the last pause.
  template <typename Token>
  auto async_pause(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(initiate_pause{this}, token);
  }

 private:
  struct initiate_accept {
    listener* self;
    template <typename Handler>
    void operator()(Handler&& handler, asio::any_io_executor session_ex) const {
      // On a closed acceptor Asio completes at once with bad_descriptor.
      std::lock_guard lock(self->mutex_);
      self->acceptor_.async_accept(session_ex, std::forward<Handler>(handler));
    }
  };

  struct initiate_backoff {
    listener* self;
    template <typename Handler>
    void operator()(Handler&& handler, std::chrono::milliseconds delay) const {
      std::lock_guard lock(self->mutex_);
      if (self->closed_) delay = std::chrono::milliseconds(0);
      // Within what the timer's duration holds: converting more would overflow.
      using std::chrono::duration_cast, std::chrono::milliseconds;
      delay = std::min(delay, duration_cast<milliseconds>(asio::steady_timer::duration::max()));
      self->timer_.expires_after(delay);
      self->timer_.async_wait(std::forward<Handler>(handler));
    }
  };

  struct initiate_pause {
    listener* self;
    template <typename Handler>
    void operator()(Handler&& handler) const {
      std::lock_guard lock(self->mutex_);
      const bool at_once = self->closed_ || self->woken_;
      self->woken_ = false;
      if (at_once)
        self->timer_.expires_at(asio::steady_timer::time_point::min());
      else
        self->timer_.expires_at(asio::steady_timer::time_point::max());
      self->timer_.async_wait(std::forward<Handler>(handler));
    }
  };

  asio::any_io_executor executor_;
  asio::any_io_executor inner_;
  bool one_thread_;
  mutable std::mutex mutex_;
  tcp::acceptor acceptor_;
  asio::steady_timer timer_;  // back-off delays and pauses at the connection limit
  tcp::endpoint endpoint_;
  bool closed_ = false;
  bool woken_ = false;
};

}  // namespace sluice::tcp::detail
