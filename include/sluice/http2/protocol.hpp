// sluice/http2/protocol.hpp: HTTP/2 on one connection, as server::driver
// runs it: the driver's reads feed an http2::session, each stream's handler
// is a task of the connection's scope, and a writer started on demand
// flushes what the session has to send.
//
// The HTTP/1.1 protocol hands the connection over to it (ALPN "h2" after
// the TLS handshake, or the h2c preface as the first bytes) and it serves
// the rest of the connection; see http/detail/protocol.hpp.
//
// Guarantees
// - The same handler as HTTP/1.1: the request body is read as DATA arrives
//   (read_some), and what a handler has not read is not acknowledged to the
//   client (flow control bounds it); a streamed response's write completes
//   when nghttp2 has taken its bytes. A handler's exception is a 500 (or,
//   once its head is out, RST_STREAM) and goes to on_handler_error.
// - RST_STREAM from the client, or the connection's end, tells the stream's
//   handler (request::cancellation_slot() fires, client_gone() turns true);
//   its later body reads and writes throw connection_aborted.
// - Drain (RFC 9113 6.8): GOAWAY(2^31-1) and a PING; on the ACK, or after
//   ping_timeout, GOAWAY(last stream processed). Streams at or below it
//   complete; the connection closes when the last has ended. A connection
//   with no open stream gets one GOAWAY and closes at once.
// - stop_now() and the shutdown deadline: RST_STREAM(CANCEL) for each open
//   stream and GOAWAY, written only if the socket takes them at once; every
//   handler is cancelled and awaited before the connection ends.
// - No open stream for idle_timeout: GOAWAY and close.
// - The connection counts as connection_state::http2, its open streams in
//   state_counts::streams.
//
// Thread safety: everything runs on the connection's executor (a strand).
//
//     http2::protocol<Transport, http::detail::server_core> h2(driver, core);
//     co_return co_await h2.run();   // in the driver's serve_one(): the rest of the connection
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/use_nothrow.hpp"
#include "sluice/http/detail/status_response.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/message.hpp"
#include "sluice/http/serialize.hpp"
#include "sluice/http2/session.hpp"
#include "sluice/scope.hpp"
#include "sluice/server/disconnect_watch.hpp"
#include "sluice/server/driver.hpp"

#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/this_coro.hpp>

#include <array>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sluice::http2 {

// `Core` is what the HTTP server shares with its connections
// (http::detail::server_core): handler, options, timeouts.
template <typename Transport, typename Core>
class protocol final : session_events {
 public:
  using driver = sluice::server::driver<Transport>;
  using next = sluice::server::next;

  protocol(driver& d, Core& core)
      : d_(d), core_(core), session_(*this, core.options.http2), ping_timer_(d.executor()), writer_done_(d.executor()) {}
  protocol(const protocol&) = delete;
  protocol& operator=(const protocol&) = delete;

  // Serves the connection until it ends; the bytes already in the driver's
  // buffer (the preface) are the first input.
  asio::awaitable<next> run();

 private:
  struct stream;

  // session_events: recorded, and the waiting coroutine woken.
  void on_request(stream_id id, http::request_head& head, bool ended) override;
  bool on_data(stream_id id, std::string_view data) override;
  void on_request_end(stream_id id, http::fields& trailers) override;
  void on_stream_close(stream_id id, error_code error) override;
  void on_ping_ack() override { ping_timer_.cancel(); }
  void on_chunk_taken(stream_id id) override;

  asio::awaitable<bool> read();
  bool feed();
  void start_streams();
  asio::awaitable<void> serve_stream(std::shared_ptr<stream> s);
  asio::awaitable<std::optional<http::response>> call_handler(http::request& req, stream& s);
  asio::awaitable<void> send(stream& s, http::response& res);
  void flush();
  asio::awaitable<void> write_output();
  asio::awaitable<void> await_writer();
  void on_drain();
  asio::awaitable<void> goaway_after_ping();
  bool finished() const;
  void check_finished();
  void client_gone_everywhere();
  asio::awaitable<void> end(bool forced);
  void report(std::exception_ptr e) { sluice::server::report_error(core_.options.on_handler_error, e); }

  driver& d_;
  Core& core_;
  session session_;
  // Handlers, the writer and the GOAWAY timer: all awaited before run() returns.
  sluice::scope tasks_;
  std::unordered_map<stream_id, std::shared_ptr<stream>> streams_;  // request head received, not closed
  std::vector<std::shared_ptr<stream>> arrived_;                     // to start once receive() returns
  std::size_t handlers_ = 0;                                         // running
  asio::steady_timer ping_timer_;   // the GOAWAY round trip; cancelled by the PING's ACK
  asio::steady_timer writer_done_;  // cancelled when the writer stops
  std::function<void()> drain_hook_;
  bool writing_ = false;
  bool write_failed_ = false;
  bool draining_ = false;
  bool closing_ = false;  // done: the reader is told to stop
  unsigned reads_in_a_row_ = 0;  // without a wait: see read()
  // Expires with this object: a task frame destroyed with its io_context,
  // after this object, touches nothing of it.
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

// Implementation -------------------------------------------------------------

// A wait until something about a stream changed; the changer calls notify().
// Conditions are checked before waiting, on one strand: no wake-up is lost.
class waker {
 public:
  explicit waker(const asio::any_io_executor& ex) : timer_(ex) {}
  void notify() { timer_.cancel(); }
  // Throws operation_aborted when the waiting coroutine itself was cancelled.
  asio::awaitable<void> wait() {
    timer_.expires_at(asio::steady_timer::time_point::max());
    co_await timer_.async_wait(sluice::detail::use_nothrow);
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none)
      throw std::system_error(asio::error::operation_aborted, "sluice: the stream's handler was cancelled");
  }

 private:
  asio::steady_timer timer_;
};

// One request and its response: the handler's body source and sink.
template <typename Transport, typename Core>
struct protocol<Transport, Core>::stream final : http::detail::body_source, http::detail::body_sink {
  stream(protocol& p, stream_id id, http::request_head& h, bool ended)
      : p(p), id(id), head(std::move(h)), ended(ended), wake(p.d_.executor()) {}

  asio::awaitable<std::string_view> read_some() override {
    give_back();
    while (received.empty() && !ended) {
      if (closed) gone_error("the stream was reset inside the request body");
      co_await wake.wait();
    }
    reading.swap(received);
    received.clear();
    co_return reading;
  }

  asio::awaitable<void> write(std::string_view data) override {
    if (data.empty()) co_return;
    if (closed) gone_error("the stream was reset");
    taken = false;
    p.session_.write_chunk(id, data);
    p.flush();
    while (!taken) {
      if (closed) gone_error("the stream was reset");
      co_await wake.wait();
    }
  }

  bool body_done() const override { return ended && received.empty(); }
  const http::fields& trailers() const override { return trailer_fields; }
  bool server_draining() const override { return p.d_.core().lifecycle.drain_announced(); }
  std::optional<std::chrono::steady_clock::time_point> shutdown_deadline() const override {
    return p.d_.core().drain_deadline.get();
  }
  asio::awaitable<asio::cancellation_slot> cancellation_slot() override {
    auto awaiting = co_await asio::this_coro::cancellation_state;
    co_return gone.slot(awaiting.slot());
  }
  bool client_gone() override { return gone.client_gone(); }

  // The bytes handed to the handler were used: the client may send more.
  void give_back() {
    if (reading.empty()) return;
    if (!closed) p.session_.consume(id, reading.size());
    reading.clear();
    p.flush();
  }

  // The handler is done: what it left unread re-opens the windows too (and
  // what comes after it is consumed on arrival: on_data).
  void give_back_unread() {
    reading.append(received);
    received.clear();
    give_back();
  }

  // The stream ended under the handler.
  void close() {
    closed = true;
    gone.client_left();
    wake.notify();
  }

  [[noreturn]] static void gone_error(const char* what) {
    throw std::system_error(asio::error::connection_aborted, std::string("sluice: ") + what);
  }

  protocol& p;
  const stream_id id;
  http::request_head head;
  http::fields trailer_fields;
  std::string received;  // DATA not handed to the handler yet
  std::string reading;   // what read_some() returned last
  bool ended;            // the request's END_STREAM arrived
  bool closed = false;   // reset, or the connection ended
  bool taken = false;    // the chunk being written was taken
  bool handler_done = false;
  sluice::server::disconnect_watch gone;
  waker wake;
};

template <typename Transport, typename Core>
asio::awaitable<sluice::server::next> protocol<Transport, Core>::run() {
  d_.set_state(sluice::server::connection_state::http2);
  tasks_.set_exception_handler([this](std::exception_ptr e) { report(e); });
  drain_hook_ = [this] { on_drain(); };
  d_.set_drain_hook(&drain_hook_);  // posted at once when the drain began already
  bool forced = false;
  std::exception_ptr failure;  // rethrown once the streams are over: they refer to this object
  try {
    bool ok = feed();
    while (ok && !closing_) {
      flush();
      if (handlers_ == 0) d_.set_deadline(core_.timeouts.driver.idle);
      ok = co_await read() && feed();
    }
  } catch (const std::system_error& e) {
    forced = true;
    if (e.code() != asio::error::operation_aborted) failure = std::current_exception();
  } catch (...) {
    forced = true;
    failure = std::current_exception();
  }
  forced = forced || d_.core().lifecycle.forcing();
  if (!forced && d_.timed_out() == core_.timeouts.driver.idle) session_.final_goaway();
  // After a terminal cancel every co_await (end()'s included) would throw.
  co_await asio::this_coro::reset_cancellation_state();
  co_await end(forced);
  if (failure) std::rethrow_exception(failure);
  // A forced end is counted so (the driver's end_reason): no lingering close.
  co_return !forced && (closing_ || session_.goaway_sent()) ? next::close : next::abort;
}

// Reads input into the driver's buffer, waiting for it if there is none,
// holding no buffer while it waits where the transport allows. False when
// the connection ended, timed out, or closing_ was set meanwhile.
//
// The socket is read before any wait: a read takes at most one buffer's
// worth, and the readiness wait is edge-triggered (epoll), so a wait begun
// while the kernel still holds bytes would only wake when more arrive: a
// client that sent everything at once (1,000 HEADERS + RST_STREAM) and then
// waits for the answer would hang with its bytes unread.
template <typename Transport, typename Core>
asio::awaitable<bool> protocol<Transport, Core>::read() {
  if constexpr (Transport::readiness_wait) {
    for (;;) {
      if (closing_ || d_.interrupted()) co_return false;
      switch (d_.try_read()) {
        case driver::read_result::got:
          // A client that never stops sending would otherwise keep this
          // strand: the writer and the handlers get their turn now and then.
          if (++reads_in_a_row_ % 16 == 0) co_await asio::post(d_.executor(), asio::use_awaitable);
          co_return true;
        case driver::read_result::nothing: break;
        case driver::read_result::ended: co_return false;
      }
      reads_in_a_row_ = 0;
      d_.buffer().release();
      auto wait = d_.readable();
      auto [ec] = co_await std::move(wait);
      auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none)
        throw std::system_error(asio::error::operation_aborted);
      if (ec) co_return false;
    }
  } else {
    const bool got = co_await d_.read_more();
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) throw std::system_error(asio::error::operation_aborted);
    co_return got && !closing_;
  }
}

// What was read goes to the session, and the streams it opened start.
template <typename Transport, typename Core>
bool protocol<Transport, Core>::feed() {
  const bool ok = session_.receive(d_.buffer().data());
  d_.buffer().consume(d_.buffer().size());
  start_streams();
  flush();
  return ok;
}

template <typename Transport, typename Core>
void protocol<Transport, Core>::on_request(stream_id id, http::request_head& head, bool ended) {
  auto s = std::make_shared<stream>(*this, id, head, ended);
  streams_[id] = s;
  arrived_.push_back(std::move(s));
}

template <typename Transport, typename Core>
bool protocol<Transport, Core>::on_data(stream_id id, std::string_view data) {
  auto it = streams_.find(id);
  if (it == streams_.end() || it->second->handler_done) return false;
  it->second->received.append(data);
  it->second->wake.notify();
  return true;
}

template <typename Transport, typename Core>
void protocol<Transport, Core>::on_request_end(stream_id id, http::fields& trailers) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->ended = true;
  it->second->trailer_fields = std::move(trailers);
  it->second->wake.notify();
}

template <typename Transport, typename Core>
void protocol<Transport, Core>::on_stream_close(stream_id id, error_code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->close();
  streams_.erase(it);
}

template <typename Transport, typename Core>
void protocol<Transport, Core>::on_chunk_taken(stream_id id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->taken = true;
  it->second->wake.notify();
}

// Out of the session's callbacks: a task must not start inside one (it would
// call back into the session).
template <typename Transport, typename Core>
void protocol<Transport, Core>::start_streams() {
  for (auto& s : std::exchange(arrived_, {})) {
    ++handlers_;
    d_.core().registry.count_stream(+1);
    d_.clear_deadline();
    if (!tasks_.try_spawn(d_.executor(), serve_stream(s))) {
      --handlers_;
      d_.core().registry.count_stream(-1);
    }
  }
}

template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::serve_stream(std::shared_ptr<stream> s) {
  // Counted out however the task ends (a cancel included), and the handler's
  // cancellation slot forgets the stream before the stream goes.
  struct running {
    protocol& p;
    stream& s;
    asio::cancellation_slot own;
    std::weak_ptr<char> alive;
    ~running() {
      s.gone.end_request(own);
      if (alive.expired()) return;  // an io_context destroyed with its frames: the protocol may be gone
      s.handler_done = true;
      s.give_back_unread();
      --p.handlers_;
      p.d_.core().registry.count_stream(-1);
      p.check_finished();
    }
  };
  const auto own_state = co_await asio::this_coro::cancellation_state;
  running r{*this, *s, own_state.slot(), alive_};
  // Reset before its handler began (rapid reset sends HEADERS + RST_STREAM
  // together): nobody to answer, and the handler could never be told, since
  // the stream's cancellation fires once, before anything was bound to it.
  if (s->closed) co_return;
  // Here, not in call_handler: a streamed response may read the request body.
  http::request req(s->head, *s);
  std::optional<http::response> res = co_await call_handler(req, *s);
  if (!res || s->closed) co_return;
  co_await send(*s, *res);
}

template <typename Transport, typename Core>
asio::awaitable<std::optional<http::response>> protocol<Transport, Core>::call_handler(http::request& req,
                                                                                      stream& s) {
  std::exception_ptr failure;
  try {
    co_return co_await core_.handler(req);
  } catch (const std::system_error& e) {
    const auto code = e.code();
    if (code.category() == http::http_category())
      co_return http::detail::status_response(http::status_for(code), code.message());
    if (code == asio::error::operation_aborted && d_.core().lifecycle.forcing()) throw;  // the server is stopping
    // The handler let its client's leaving escape: nobody is there to answer.
    if (s.closed || s.gone.client_gone()) co_return std::nullopt;
    failure = std::current_exception();
  } catch (...) {
    failure = std::current_exception();
  }
  report(failure);
  co_return http::detail::status_response(500, {});
}

// The response on the stream: whole, or streamed through the handler's
// writer. What HTTP/2 cannot carry (an upgrade: no extended CONNECT here;
// fields that would split; a 1xx as final) is refused as HTTP/1.1 does.
template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::send(stream& s, http::response& res) {
  try {
    http::check_fields(res.headers);
    if (res.status < 200 || res.status > 999)
      throw std::invalid_argument("sluice::http: status " + std::to_string(res.status) + " cannot be a final response");
  } catch (const std::invalid_argument&) {
    report(std::current_exception());
    res = http::detail::status_response(500, {});
  }
  if (res.upgrade) res = http::detail::status_response(501, "no protocol switch over HTTP/2");
  const bool send_body = s.head.method != "HEAD" && res.status != 204 && res.status != 304;
  if (!res.stream || !send_body) {
    session_.respond(s.id, res.status, res.headers, std::move(res.body), send_body);
    co_return flush();
  }
  session_.respond_streamed(s.id, res.status, res.headers);
  flush();
  http::body_writer writer(s);
  std::exception_ptr failure;
  try {
    co_await res.stream(writer);
  } catch (const std::system_error& e) {
    if (s.closed) co_return;
    if (e.code() == asio::error::operation_aborted && d_.core().lifecycle.forcing()) throw;
    failure = std::current_exception();
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    report(failure);  // too late for a 500: the head is out
    session_.reset(s.id, error_code::internal_error);
  } else {
    session_.end_body(s.id);
  }
  flush();
}

// Starts the writer unless it runs: it takes whatever is due when it gets to it.
template <typename Transport, typename Core>
void protocol<Transport, Core>::flush() {
  if (writing_ || write_failed_ || closing_) return;
  writing_ = true;
  if (!tasks_.try_spawn(d_.executor(), write_output())) writing_ = false;
}

template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::write_output() {
  struct stopped {
    protocol& p;
    std::weak_ptr<char> alive;
    ~stopped() {
      if (alive.expired()) return;  // as in serve_stream
      p.writing_ = false;
      p.writer_done_.cancel();
      p.check_finished();
    }
  } on_exit{*this, alive_};
  for (std::string_view out = session_.output(); !out.empty(); out = session_.output()) {
    std::array<asio::const_buffer, 1> b{asio::buffer(out)};
    const bool ok = co_await d_.write_all(b);
    session_.output_written();
    if (!ok) {
      write_failed_ = true;
      break;
    }
  }
  if (handlers_ == 0 && !closing_) d_.set_deadline(core_.timeouts.driver.idle);
}

template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::await_writer() {
  while (writing_) {
    writer_done_.expires_at(asio::steady_timer::time_point::max());
    co_await writer_done_.async_wait(sluice::detail::use_nothrow);
  }
}

// The drain signal: the first GOAWAY and its PING, or, with no stream open,
// the final GOAWAY at once.
template <typename Transport, typename Core>
void protocol<Transport, Core>::on_drain() {
  if (std::exchange(draining_, true)) return;
  if (handlers_ == 0) {
    session_.final_goaway();
  } else {
    session_.shutdown_notice();
    ping_timer_.expires_after(core_.options.http2.ping_timeout);
    tasks_.try_spawn(d_.executor(), goaway_after_ping());
  }
  flush();
  check_finished();
}

template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::goaway_after_ping() {
  co_await ping_timer_.async_wait(sluice::detail::use_nothrow);
  session_.final_goaway();
  flush();
  check_finished();
}

// Nothing left to serve or say: the final GOAWAY (or the session's own) is
// out and no handler runs.
template <typename Transport, typename Core>
bool protocol<Transport, Core>::finished() const {
  if (handlers_ > 0 || writing_) return false;
  if (write_failed_) return true;
  return (session_.goaway_sent() || session_.failed() || !session_.wants_read()) && !session_.wants_write();
}

// Wakes the reader, which is waiting for input, to end the connection.
template <typename Transport, typename Core>
void protocol<Transport, Core>::check_finished() {
  if (closing_ || !finished()) return;
  closing_ = true;
  Transport::interrupt(Transport::socket(d_.stream()));
}

template <typename Transport, typename Core>
void protocol<Transport, Core>::client_gone_everywhere() {
  for (auto& [id, s] : streams_) s->close();
  streams_.clear();
}

// The connection's end: at a stop, the last frames are tried without
// waiting; handlers are told (or cancelled at a stop) and awaited; the
// writer finishes what it was writing.
template <typename Transport, typename Core>
asio::awaitable<void> protocol<Transport, Core>::end(bool forced) {
  d_.set_drain_hook(nullptr);
  ping_timer_.cancel();
  if (forced) {
    for (auto& [id, s] : streams_) session_.reset(id, error_code::cancel);
    session_.final_goaway();
    if (!writing_) {
      std::error_code ignored;
      const std::string_view out = session_.output();
      std::array<asio::const_buffer, 1> b{asio::buffer(out)};
      Transport::try_write_some(d_.stream(), b, ignored);
    }
    tasks_.request_stop();
  } else if (!closing_) {
    // The client left or broke the protocol: say what the session has to say.
    co_await await_writer();
    if (!write_failed_) {  // tried even after a timeout: write_all tries once without waiting
      const std::string_view out = session_.output();
      std::array<asio::const_buffer, 1> b{asio::buffer(out)};
      co_await d_.write_all(b);
    }
  }
  client_gone_everywhere();
  co_await tasks_.join();
  d_.clear_deadline();
}

}  // namespace sluice::http2
