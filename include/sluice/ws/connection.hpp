// sluice/ws/connection.hpp: one server-side WebSocket (RFC 6455) over a connection that the HTTP
// server handed over by upgrade (ws::accept in ws/server.hpp makes them; applications use them).
//
//     for (;;) {
//       auto msg = co_await ws.read();          // a whole message; throws ws::closed at the end
//       co_await ws.write(msg.data, msg.kind);
//     }
//
// Guarantees:
// - read() returns whole messages (text is valid UTF-8, none over max_message); pings are answered
//   with pongs while it reads; a peer that breaks the protocol gets the Close code the RFC asks for
//   (ws/reader.hpp lists them) and read() throws ws::closed with that code.
// - The close handshake: a Close from the peer is answered (its code echoed) and read() throws
//   ws::closed with the peer's code and reason; close(code, reason) sends one and waits for the
//   peer's; a connection that ends without a Close is ws::closed with 1006. Once closed, read()
//   and write() throw ws::closed again.
// - Frames never interleave: write(), the pongs and Closes the connection sends itself are
//   serialized, each frame written whole. After a Close has been sent, write() throws ws::closed.
// - Drain: when the server starts draining (shutdown()), the connection sends Close 1001 at once
//   if read() is waiting (else when the current write ends, or at the next read() or write()),
//   read() then skips data until the peer's Close, and throws ws::closed. The server's deadline
//   bounds the wait; stop_now() cancels read() and write() (std::system_error,
//   operation_aborted) like any handler.
// - Keep-alive (options::keepalive): a ping every interval; a peer that has not answered one by
//   the next is gone: read() throws ws::closed with 1006.
// - Memory: between messages a connection holds no read buffer: it waits for readability, then
//   reads into a per-thread buffer; only bytes left over after a message are kept. zlib's state
//   follows ws/deflate.hpp (none while idle without context takeover).
//
// Thread safety: a connection runs on its upgraded connection's executor (a strand); call it from
// coroutines on that executor. One read() at a time; write() may run while read() waits.
#pragma once

#include "sluice/config.hpp"
#include "sluice/http/connection_state.hpp"
#include "sluice/http/message.hpp"
#include "sluice/ws/deflate.hpp"
#include "sluice/ws/frame.hpp"
#include "sluice/ws/handshake.hpp"
#include "sluice/ws/reader.hpp"

#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

namespace sluice::ws {

// The end of a WebSocket: the Close code (the peer's, or the one the server sent when the peer
// broke the protocol, 1006 when the connection ended without a Close) and its reason.
class closed : public std::runtime_error {
 public:
  closed(std::uint16_t code, std::string reason)
      : std::runtime_error("WebSocket closed (" + std::to_string(code) + (reason.empty() ? "" : ": " + reason) + ")"),
        code_(code),
        reason_(std::move(reason)) {}
  std::uint16_t code() const noexcept { return code_; }
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::uint16_t code_;
  std::string reason_;
};

struct options {
  // The largest message read() returns, after inflating; a larger one is closed with 1009.
  std::size_t max_message = 16 * 1024 * 1024;
  deflate_options deflate;
  // A ping every `keepalive` (0: none); a peer that has not answered one by the next is gone.
  std::chrono::steady_clock::duration keepalive{0};
  // Picks the subprotocol from the client's offers (Sec-WebSocket-Protocol, in its order): one of
  // them, or empty for none. Unset: none.
  std::function<std::string(const std::vector<std::string_view>& offered)> choose_subprotocol;
};

class connection;

namespace detail {
// What the handshake agreed, for the connection it starts.
struct agreement {
  std::optional<deflate_params> deflate;
  std::string subprotocol;
};
struct serve_args;
asio::awaitable<void> serve(const serve_args& args, http::upgraded& up);
}  // namespace detail

class connection {
 public:
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  // The next whole message. Throws ws::closed when the WebSocket ends (see above),
  // std::system_error (operation_aborted) when the server stops it.
  asio::awaitable<message> read();
  // Sends one message, whole, in one frame (compressed when permessage-deflate was agreed and it
  // is 64 bytes or more). Throws ws::closed once a Close was sent or received.
  asio::awaitable<void> write(std::string_view data, message_kind kind = message_kind::text);
  // Sends a ping (at most 125 bytes of payload); its pong is taken by read().
  asio::awaitable<void> ping(std::string_view payload = {});
  // The close handshake: sends Close (code, reason cut to 123 bytes), then reads, skipping data
  // messages, until the peer's Close or the end of the connection. Returns normally either way.
  // It reads: call it where read() would be, not while a read() waits.
  asio::awaitable<void> close(std::uint16_t code = close_code::normal, std::string_view reason = {});

  // The subprotocol agreed in the handshake; empty when none.
  const std::string& subprotocol() const noexcept { return subprotocol_; }
  // Whether permessage-deflate was agreed.
  bool compressed() const noexcept { return compression_ != nullptr; }
  // The connection beneath, for its socket's endpoints and options.
  http::upgraded& stream() noexcept { return up_; }

 private:
  friend asio::awaitable<void> detail::serve(const detail::serve_args&, http::upgraded&);
  struct keepalive_timer;
  struct compression {
    inflater in;
    deflater out;
  };

  connection(http::upgraded& up, const detail::serve_args& args);

  std::span<char> take_input(std::error_code& ec);
  asio::awaitable<void> read_waiting();
  void wait_failed(std::error_code ec);
  void keep_unread(std::span<char> in, std::size_t used);
  asio::awaitable<void> answer(message_reader::event what);
  bool owes_frame() const noexcept { return (draining_ || ping_due_) && !close_sent_; }
  asio::awaitable<void> send(std::string frame);
  asio::awaitable<void> send_pending();
  asio::awaitable<void> send_close(std::uint16_t code, std::string_view reason);
  asio::awaitable<void> answer_peer_close();
  asio::awaitable<void> fail(std::uint16_t code);
  void wake_reader();
  [[noreturn]] void throw_closed() const { throw closed(end_code_, end_reason_); }
  void end(std::uint16_t code, std::string reason);
  void start_keepalive(std::chrono::steady_clock::duration interval);

  http::upgraded& up_;
  std::unique_ptr<compression> compression_;  // set when permessage-deflate was agreed
  message_reader reader_;
  std::string pending_;  // bytes received after the last event; empty (no buffer) when idle
  const std::string& subprotocol_;  // in the agreement, which outlives the connection (see detail::serve)
  std::string end_reason_;
  std::shared_ptr<keepalive_timer> keepalive_;
  std::unique_ptr<asio::steady_timer> write_done_;  // where writes queue; made at the first contention
  std::uint16_t end_code_ = 0;
  bool ended_ = false;          // read() and write() throw closed
  bool close_sent_ = false;
  bool writing_ = false;
  bool reader_waiting_ = false;  // read() waits for input: wake_reader() may interrupt it
  bool woken_ = false;
  bool draining_ = false;
  bool ping_due_ = false;
  bool awaiting_pong_ = false;
};

// Implementation

namespace detail {

// Sets a flag for as long as it lives.
struct waiting_guard {
  bool& flag;
  explicit waiting_guard(bool& f) : flag(f) { flag = true; }
  ~waiting_guard() { flag = false; }
};

// What a WebSocket keeps of accept()'s arguments while it runs: only what the connection needs
// after the handshake (the upgrade function's closure holds it for as long).
struct serve_args {
  std::size_t max_message;
  std::chrono::steady_clock::duration keepalive;
  agreement agreed;
  std::function<asio::awaitable<void>(connection&)> fn;
};

// Where read() takes fresh bytes: per thread, so that an idle connection holds none. Whatever
// is left of it when read() suspends is copied to the connection first.
inline std::span<char> read_scratch() {
  static thread_local std::array<char, 16 * 1024> scratch;
  return scratch;
}

inline bool is_end_of_stream(std::error_code ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::not_connected;
}

}  // namespace detail

// The keep-alive timer's handler may run after its connection is gone (it was queued before the
// cancel): it reaches the connection through `owner`, which the connection clears.
struct connection::keepalive_timer {
  keepalive_timer(asio::any_io_executor ex, connection* c) : timer(std::move(ex)), owner(c) {}
  asio::steady_timer timer;
  connection* owner;
};

inline connection::connection(http::upgraded& up, const detail::serve_args& args)
    : up_(up),
      compression_(args.agreed.deflate
                       ? new compression{inflater(args.agreed.deflate->client_context_takeover),
                                         deflater(args.agreed.deflate->server_max_window_bits,
                                                  args.agreed.deflate->server_context_takeover)}
                       : nullptr),
      reader_({args.max_message, compression_ ? &compression_->in : nullptr}),
      subprotocol_(args.agreed.subprotocol) {
  up_.set_state(http::connection_state::websocket);
  up_.on_drain([this] {
    draining_ = true;
    wake_reader();
  });
  if (args.keepalive.count() > 0) start_keepalive(args.keepalive);
}

inline connection::~connection() {
  up_.on_drain([] {});
  if (keepalive_) {
    keepalive_->owner = nullptr;
    keepalive_->timer.cancel();
  }
}

inline void connection::start_keepalive(std::chrono::steady_clock::duration interval) {
  keepalive_ = std::make_shared<keepalive_timer>(up_.get_executor(), this);
  struct tick {
    std::shared_ptr<keepalive_timer> k;
    std::chrono::steady_clock::duration interval;
    void operator()(std::error_code ec) {
      connection* c = k->owner;
      if (ec || !c || c->ended_) return;
      if (c->awaiting_pong_) {
        c->end(close_code::abnormal, "no pong to a keep-alive ping");
        std::error_code ignored;
        c->up_.socket().cancel(ignored);  // the peer is gone: stop the reads and writes waiting for it
        return;
      }
      c->awaiting_pong_ = c->ping_due_ = true;
      c->wake_reader();
      k->timer.expires_after(interval);
      k->timer.async_wait(tick{k, interval});
    }
  };
  keepalive_->timer.expires_after(interval);
  keepalive_->timer.async_wait(tick{keepalive_, interval});
}

// read() is the one coroutine that is always there to write what the connection owes (a Close
// on drain, a keep-alive ping) when no write is under way: interrupting its wait hands it over.
inline void connection::wake_reader() {
  if (!reader_waiting_ || writing_) return;  // a write under way sends it when it ends
  woken_ = true;
  std::error_code ignored;
  up_.socket().cancel(ignored);
}

inline void connection::end(std::uint16_t code, std::string reason) {
  if (ended_) return;
  ended_ = true;
  end_code_ = code;
  end_reason_ = std::move(reason);
}

// Between messages the coroutines above read() and the wait are all an idle connection holds:
// read() waits itself (no child frame), and what it rarely does is in helpers.
inline asio::awaitable<message> connection::read() {
  for (;;) {
    if (ended_) throw_closed();
    if (owes_frame()) co_await send_pending();
    std::span<char> in(pending_);
    if (in.empty()) {
      std::error_code ec;
      {
        const detail::waiting_guard waiting(reader_waiting_);
        woken_ = false;
        std::tie(ec) = co_await up_.wait_readable();
      }
      if (!ec) in = take_input(ec);
      if (ec == asio::error::would_block) {
        co_await read_waiting();
        continue;
      }
      if (ec) {
        wait_failed(ec);  // throws unless wake_reader() interrupted the wait
        continue;
      }
    }
    const auto [what, used] = reader_.read(in);
    keep_unread(in, used);  // before anything suspends: `in` may be the per-thread buffer
    if (what == message_reader::event::message) {
      // After a Close was sent, data is read only to reach the peer's Close (RFC 6455 1.4).
      if (!close_sent_) co_return reader_.take_message();
      reader_.take_message();
    } else if (what != message_reader::event::need_more) {
      co_await answer(what);
    }
  }
}

// What the socket has, into the per-thread buffer.
inline std::span<char> connection::take_input(std::error_code& ec) {
  const std::span<char> scratch = detail::read_scratch();
  const std::size_t n = up_.try_read_some(asio::buffer(scratch.data(), scratch.size()), ec);
  return scratch.first(ec ? 0 : n);
}

// TLS (or a spurious wake-up): a read that waits, into a buffer of this connection's.
inline asio::awaitable<void> connection::read_waiting() {
  std::string chunk(4096, '\0');
  std::error_code ec;
  try {
    const detail::waiting_guard waiting(reader_waiting_);
    chunk.resize(co_await up_.read_some(asio::buffer(chunk)));
  } catch (const std::system_error& e) {
    ec = e.code();
  }
  if (ec) wait_failed(ec);
  else pending_ = std::move(chunk);
}

// Waiting for input failed: the connection is over, or wake_reader() interrupted the wait.
inline void connection::wait_failed(std::error_code ec) {
  if (ended_) throw_closed();  // keep-alive gave up on the peer
  if (ec == asio::error::operation_aborted && std::exchange(woken_, false)) return;
  if (detail::is_end_of_stream(ec)) {
    end(close_code::abnormal, "the connection ended without a Close");
    throw_closed();
  }
  throw std::system_error(ec);
}

// A control frame or an error: what read() owes the peer for it.
inline asio::awaitable<void> connection::answer(message_reader::event what) {
  switch (what) {
    case message_reader::event::ping:
      if (!close_sent_) co_await send(make_frame(opcode::pong, reader_.control_payload()));
      break;
    case message_reader::event::pong:
      awaiting_pong_ = false;
      break;
    case message_reader::event::close:
      co_await answer_peer_close();
      break;
    default:
      co_await fail(reader_.error_code());
  }
}

// Keeps the bytes of `in` after `used` for the next read(); `in` is pending_ or the scratch buffer.
inline void connection::keep_unread(std::span<char> in, std::size_t used) {
  if (in.data() == pending_.data()) {
    pending_.erase(0, used);
    if (pending_.empty()) pending_ = std::string();  // release the buffer
  } else {
    pending_.assign(in.data() + used, in.size() - used);
  }
}

inline asio::awaitable<void> connection::write(std::string_view data, message_kind kind) {
  if (ended_ || close_sent_) throw closed(ended_ ? end_code_ : close_code::normal, "a Close was sent");
  const opcode op = kind == message_kind::text ? opcode::text : opcode::binary;
  if (!compression_ || data.size() < 64) {
    co_await send(make_frame(op, data));
    co_return;
  }
  std::string frame = compression_->out.compress(data, max_server_header);
  std::array<char, max_server_header> header;
  const std::size_t n = write_frame_header(header, op, frame.size() - max_server_header, true, true);
  frame.replace(0, max_server_header, header.data(), n);
  co_await send(std::move(frame));
}

inline asio::awaitable<void> connection::ping(std::string_view payload) {
  if (payload.size() > 125) throw std::invalid_argument("sluice::ws: a ping's payload is at most 125 bytes");
  if (ended_ || close_sent_) throw closed(ended_ ? end_code_ : close_code::normal, "a Close was sent");
  co_await send(make_frame(opcode::ping, payload));
}

inline asio::awaitable<void> connection::close(std::uint16_t code, std::string_view reason) {
  if (ended_) co_return;
  co_await send_close(code, reason);
  try {
    for (;;) co_await read();
  } catch (const closed&) {
  }
}

// Writes one frame whole, after any write under way, then what the connection owes.
inline asio::awaitable<void> connection::send(std::string frame) {
  while (writing_) {
    if (!write_done_) write_done_ = std::make_unique<asio::steady_timer>(up_.get_executor(), asio::steady_timer::time_point::max());
    std::error_code ignored;
    co_await write_done_->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  struct write_lock {
    connection& c;
    explicit write_lock(connection& c) : c(c) { c.writing_ = true; }
    ~write_lock() {
      c.writing_ = false;
      if (c.write_done_) c.write_done_->cancel();  // the next writer goes
    }
  };
  try {
    write_lock lock(*this);
    co_await up_.write(frame);
  } catch (const std::system_error& e) {
    if (ended_ || detail::is_end_of_stream(e.code())) {
      end(close_code::abnormal, "the connection ended without a Close");  // unless it had ended already
      throw_closed();
    }
    throw;
  }
  co_await send_pending();
}

// A Close on drain and a keep-alive ping are sent by whoever writes next.
inline asio::awaitable<void> connection::send_pending() {
  if (draining_ && !close_sent_) co_await send_close(close_code::going_away, "the server is shutting down");
  if (std::exchange(ping_due_, false) && !close_sent_) co_await send(make_frame(opcode::ping, {}));
}

inline asio::awaitable<void> connection::send_close(std::uint16_t code, std::string_view reason) {
  if (close_sent_) co_return;
  close_sent_ = true;  // from now on no data frame may start
  co_await send(make_frame(opcode::close, make_close_payload(code, reason)));
}

// RFC 6455 5.5.1: the peer's Close is answered with the same code, and the WebSocket is over.
inline asio::awaitable<void> connection::answer_peer_close() {
  const std::uint16_t code = reader_.close_code();
  end(code, std::string(reader_.close_reason()));
  if (!close_sent_) {
    close_sent_ = true;
    std::string payload = code == close_code::no_status ? std::string() : make_close_payload(code, {});
    co_await send(make_frame(opcode::close, payload));
  }
  throw_closed();
}

// The peer broke the protocol: Close with the code that says how, and the WebSocket is over.
inline asio::awaitable<void> connection::fail(std::uint16_t code) {
  static constexpr std::string_view why[] = {"protocol error", "invalid payload", "message too big"};
  const std::string_view reason = why[code == close_code::protocol_error ? 0 : code == close_code::invalid_payload ? 1 : 2];
  end(code, std::string(reason));
  if (!close_sent_) {
    close_sent_ = true;
    co_await send(make_frame(opcode::close, make_close_payload(code, reason)));
  }
  throw_closed();
}

}  // namespace sluice::ws
