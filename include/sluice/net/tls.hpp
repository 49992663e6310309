// sluice/net/tls.hpp: the TLS transport (see net/transport.hpp), OpenSSL
// driven directly on the non-blocking socket, for any protocol: HTTP
// (sluice::tls::server, tls/server.hpp) or your own over tcp::server
// (net/serve_over.hpp).
//
//     auto contexts = std::make_shared<sluice::tls::context_holder>(
//         sluice::tls::make_server_context("cert.pem", "key.pem"));
//     static constexpr std::string_view protocols[] = {"x-echo"};  // ALPN names
//     sluice::net::tls transport(contexts, {}, std::chrono::seconds(10), protocols);
//
// Guarantees
// - Lean: OpenSSL reads and writes the socket itself (no copy through Asio's
//   SSL engine and BIO pair) and releases its record buffers whenever they
//   are empty (SSL_MODE_RELEASE_BUFFERS). An idle connection waits on the
//   socket's readiness holding no buffer (readiness_wait), unless OpenSSL
//   already holds decrypted bytes, in which case the wait ends at once.
// - Reads and writes are tried without waiting first (try_read_some,
//   try_write_some), and a write of a head and a body that fit one record
//   (16 KiB) goes out as one record: one SSL_write per response.
// - Each connection takes the holder's current context when it is accepted
//   and keeps it until it ends; SNI may move it to the context of the name
//   its client asked for (tls/context.hpp), which it then keeps.
// - ALPN belongs to the protocol: the transport offers the protocol names it
//   was given, most preferred first; a client offering ALPN without any of
//   them gets a no_application_protocol alert (RFC 7301), and with none given
//   ALPN is ignored. alpn(s) tells which one the handshake agreed on.
// - A failed handshake is reported as one line through tls_options::log
//   (stderr by default) and the connection just closes:
//     sluice: TLS handshake with 127.0.0.1:5555 failed: http request (plain HTTP sent to the TLS port)
//   A handshake the server itself ends (stop_now(), shutdown(), close_idle())
//   is not reported; one ended by handshake_timeout is ("timed out after N ms").
// - The handshake never outlives handshake_timeout, counted from accept
//   (unbounded when that is milliseconds::max()): the transport bounds it
//   itself, whatever the driver's deadline does.
// - async_close_notify() sends close_notify and waits for the peer's for at
//   most tls_options::close_notify_timeout: the driver then shuts the TCP
//   sending side and drains within its linger_timeout, which would otherwise
//   be spent here.
// - Every asynchronous operation (handshake, read, write, close_notify, the
//   readiness wait) takes any completion token and honours terminal
//   cancellation at once, also when it lands between two of its steps: so
//   stop_now() ends a connection in any state. interrupt() (a deadline,
//   close_idle()) ends them too, keeping the socket open for a last write.
// - Sessions resume from tickets (tls/ticket_keys.hpp); full_handshakes()
//   and resumed_handshakes() count the successful handshakes of each kind.
//
// Thread safety: the transport is shared by all of a server's connections,
// on any threads; tls_options::log may therefore be called from several
// threads at once. A stream belongs to its connection's executor.
#pragma once

#include "sluice/config.hpp"
#include "sluice/net/transport.hpp"
#include "sluice/server/deadlines.hpp"
#include "sluice/tls/context.hpp"
#include "sluice/tls/error.hpp"

#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/experimental/append.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace sluice::net {

struct tls_options {
  // How long to wait for the peer's close_notify after sending ours.
  // tls::server keeps it below half of its linger_timeout, so that the
  // lingering close always gets its share.
  std::chrono::milliseconds close_notify_timeout{500};
  // Receives each log line (no trailing newline). Default: stderr.
  std::function<void(std::string_view line)> log;
};

namespace detail {

// What all of a transport's connections share; outlives each of them.
struct tls_shared : sluice::tls::detail::connection_settings {
  tls_options options;
  std::chrono::milliseconds handshake_timeout;
  std::string alpn_names;  // for log lines
  mutable std::atomic<std::uint64_t> full_handshakes{0};
  mutable std::atomic<std::uint64_t> resumed_handshakes{0};
};

// What an OpenSSL call needs before it can go on.
enum class ssl_wants { nothing, read, write };

template <typename Call, typename Signature>
class ssl_operation;

}  // namespace detail

// One connection: OpenSSL on its socket, and the context it was created
// with. An AsyncReadStream and AsyncWriteStream, so that drivers, protocols
// and asio::async_write use it as they use a socket. Not to be moved while
// an operation is pending.
class tls_stream {
 public:
  using executor_type = asio::ip::tcp::socket::executor_type;

  tls_stream(asio::ip::tcp::socket socket, std::shared_ptr<sluice::tls::context> context,
             std::shared_ptr<const detail::tls_shared> shared);

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  asio::ip::tcp::socket& socket() noexcept { return socket_; }
  SSL* native_handle() const noexcept { return ssl_.get(); }

  // Token signatures: void(std::error_code, std::size_t) for reads and
  // writes, void(std::error_code) for the handshake and close_notify.
  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token);
  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token);
  template <typename Token>
  auto async_handshake(Token&& token);
  // Sends close_notify and waits for the peer's (unbounded: see tls::async_close_notify).
  template <typename Token>
  auto async_shutdown(Token&& token);

  // Non-blocking: would_block when OpenSSL needs the socket first.
  std::size_t read_some(asio::mutable_buffer buffer, std::error_code& ec);
  template <typename ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers, std::error_code& ec);

  // Implementation

 private:
  template <typename Call, typename Signature>
  friend class detail::ssl_operation;
  friend class tls;

  struct ssl_deleter {
    void operator()(SSL* s) const { SSL_free(s); }
  };

  template <typename Signature, typename Call, typename Token>
  auto async_run(Call call, Token&& token);
  template <typename Call>
  detail::ssl_wants attempt(Call& call, std::size_t& n, std::error_code& ec);
  std::error_code failure(int ssl_error, int saved_errno) const;
  template <typename ConstBuffers>
  static int write_gathered(SSL* ssl, const ConstBuffers& buffers, std::size_t& n);

  asio::ip::tcp::socket socket_;
  // Before ssl_: they outlive the SSL object, which points into `shared_`.
  std::shared_ptr<sluice::tls::context> context_;
  std::shared_ptr<const detail::tls_shared> shared_;
  std::unique_ptr<SSL, ssl_deleter> ssl_;
  // Taken before the session arms its handshake deadline, so that the
  // transport's own bound (from here) expires first.
  std::chrono::steady_clock::time_point accepted_;
};

class tls {
 public:
  using stream_type = tls_stream;
  // OpenSSL reads only whole records' bytes from the socket: decrypted bytes
  // it still holds are the only input no readiness announces, and the wait
  // checks for them first.
  static constexpr bool readiness_wait = true;

  // `alpn`: the protocol's names for itself, most preferred first (the HTTP
  // server's are http::alpn_protocols); none: ALPN is ignored. Throws
  // std::invalid_argument for a name that is empty or longer than 255 bytes.
  tls(std::shared_ptr<sluice::tls::context_holder> contexts, tls_options o, std::chrono::milliseconds handshake_timeout,
      std::span<const std::string_view> alpn = {});

  sluice::tls::context_holder& contexts() const noexcept { return *shared_->contexts; }
  // Successful handshakes so far, of all this transport's connections.
  std::uint64_t full_handshakes() const noexcept { return shared_->full_handshakes.load(); }
  std::uint64_t resumed_handshakes() const noexcept { return shared_->resumed_handshakes.load(); }

  tls_stream make_stream(asio::ip::tcp::socket socket) const {
    return tls_stream(std::move(socket), shared_->contexts->current(), shared_);
  }

  static asio::ip::tcp::socket& socket(tls_stream& s) noexcept { return s.socket(); }

  // The application protocol ALPN selected; empty when none was.
  static std::string_view alpn(tls_stream& s);

  // A cancel ends the pending wait; one that lands between two steps of an
  // operation is caught by the shut receiving side: the next read ends at
  // once. Writes (a 408) still go out.
  static void interrupt(asio::ip::tcp::socket& s) {
    std::error_code ignored;
    s.cancel(ignored);
    s.shutdown(asio::socket_base::shutdown_receive, ignored);
  }

  template <typename Token>
  static auto async_wait_readable(tls_stream& s, Token&& token);

  static std::size_t try_read_some(tls_stream& s, asio::mutable_buffer b, std::error_code& ec) {
    return s.read_some(b, ec);
  }
  template <typename ConstBuffers>
  static std::size_t try_write_some(tls_stream& s, const ConstBuffers& b, std::error_code& ec) {
    return s.write_some(b, ec);
  }

  asio::awaitable<std::error_code> handshake(tls_stream& s) const;
  static asio::awaitable<void> async_close_notify(tls_stream& s);

  // Implementation

 private:
  void log_failure(const asio::ip::tcp::endpoint& peer, const std::string& why) const;
  void log(std::string_view line) const;
  static std::string alpn_wire(std::span<const std::string_view> names);
  static std::string joined(std::span<const std::string_view> names);
  std::string describe(const std::error_code& ec) const;

  std::shared_ptr<detail::tls_shared> shared_;
};

namespace detail {

// OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
// connection the peer reset; this one sends with MSG_NOSIGNAL. It holds the
// descriptor, not the socket object, which moves with its stream.
inline int bio_fd(BIO* b) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(b))); }

inline bool bio_retry(long n) { return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR); }

inline int bio_write(BIO* b, const char* data, int size) {
  BIO_clear_retry_flags(b);
  const long n = ::send(bio_fd(b), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (bio_retry(n)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

inline int bio_read(BIO* b, char* data, int size) {
  BIO_clear_retry_flags(b);
  const long n = ::recv(bio_fd(b), data, static_cast<std::size_t>(size), 0);
  if (bio_retry(n)) BIO_set_retry_read(b);
  return static_cast<int>(n);
}

inline long bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

inline int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

inline BIO* socket_bio(int fd) {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice socket");
    if (!m || !BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))
      throw std::runtime_error("sluice::tls: cannot make a BIO method");
    return m;
  }();
  BIO* b = BIO_new(method);
  if (!b) throw std::bad_alloc();
  BIO_set_data(b, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
  return b;
}

// One OpenSSL call (`call(SSL*, std::size_t& n)`, OpenSSL's return
// convention) driven to its end: after want-read or want-write it waits for
// the socket and calls again. A cancel is checked before each call, so one
// that lands while a wait's completion is queued is not lost. Never
// completes inside the initiating call (an Asio rule): a call that ends at
// once completes through a post.
template <typename Call, typename... Args>
class ssl_operation<Call, void(std::error_code, Args...)> {
 public:
  ssl_operation(tls_stream& s, Call call) : s_(&s), call_(std::move(call)) {}

  template <typename Self>
  void operator()(Self& self, std::error_code waited = {}) {
    if (finished_at_once_) return finish(self);
    const bool cancelled = self.get_cancellation_state().cancelled() != asio::cancellation_type::none;
    if (!waited && cancelled) waited = asio::error::operation_aborted;
    if (waited) {
      ec_ = waited;
      return finish(self);
    }
    switch (s_->attempt(call_, n_, ec_)) {
      case ssl_wants::read: return wait(self, asio::socket_base::wait_read);
      case ssl_wants::write: return wait(self, asio::socket_base::wait_write);
      case ssl_wants::nothing: break;
    }
    if (waited_) return finish(self);
    finished_at_once_ = true;
    asio::post(s_->get_executor(), std::move(self));
  }

 private:
  template <typename Self>
  void wait(Self& self, asio::socket_base::wait_type what) {
    waited_ = true;
    s_->socket_.async_wait(what, std::move(self));
  }

  template <typename Self>
  void finish(Self& self) {
    if constexpr (sizeof...(Args) == 0)
      self.complete(ec_);
    else
      self.complete(ec_, n_);
  }

  tls_stream* s_;
  Call call_;
  std::error_code ec_;
  std::size_t n_ = 0;
  bool waited_ = false;
  bool finished_at_once_ = false;
};

// The readiness wait: at once (posted) when OpenSSL holds decrypted bytes,
// else the socket's own wait, unwrapped, so that an idle connection's
// pending operation is as small as a plain one's.
struct wait_readable {
  tls_stream* s;
  template <typename Handler>
  void operator()(Handler&& handler) const {
    if (SSL_pending(s->native_handle()) > 0)
      asio::post(s->get_executor(), asio::experimental::append(std::forward<Handler>(handler), std::error_code{}));
    else
      s->socket().async_wait(asio::socket_base::wait_read, std::forward<Handler>(handler));
  }
};

}  // namespace detail

inline tls_stream::tls_stream(asio::ip::tcp::socket socket, std::shared_ptr<sluice::tls::context> context,
                              std::shared_ptr<const detail::tls_shared> shared)
    : socket_(std::move(socket)),
      context_(std::move(context)),
      shared_(std::move(shared)),
      ssl_(SSL_new(context_->native_handle())),
      accepted_(std::chrono::steady_clock::now()) {
  if (!ssl_) throw std::bad_alloc();
  std::error_code ignored;
  socket_.non_blocking(true, ignored);  // OpenSSL's reads and writes then return want-read, want-write
  BIO* bio = detail::socket_bio(socket_.native_handle());
  SSL_set_bio(ssl_.get(), bio, bio);
  // Buffers go back to the heap whenever they are empty; a write may be
  // retried from another address (the coalescing copy) and may end after a
  // whole record rather than all of it.
  SSL_set_mode(ssl_.get(),
               SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_accept_state(ssl_.get());
  sluice::tls::detail::attach_settings(ssl_.get(), shared_.get());
}

template <typename Signature, typename Call, typename Token>
auto tls_stream::async_run(Call call, Token&& token) {
  return asio::async_compose<Token, Signature>(detail::ssl_operation<Call, Signature>(*this, std::move(call)), token,
                                               socket_);
}

template <typename MutableBuffers, typename Token>
auto tls_stream::async_read_some(const MutableBuffers& buffers, Token&& token) {
  const asio::mutable_buffer first = *asio::buffer_sequence_begin(buffers);
  auto read = [first](SSL* ssl, std::size_t& n) {
    return first.size() == 0 ? 1 : SSL_read_ex(ssl, first.data(), first.size(), &n);
  };
  return async_run<void(std::error_code, std::size_t)>(std::move(read), std::forward<Token>(token));
}

template <typename ConstBuffers, typename Token>
auto tls_stream::async_write_some(const ConstBuffers& buffers, Token&& token) {
  auto write = [buffers](SSL* ssl, std::size_t& n) { return write_gathered(ssl, buffers, n); };
  return async_run<void(std::error_code, std::size_t)>(std::move(write), std::forward<Token>(token));
}

template <typename Token>
auto tls_stream::async_handshake(Token&& token) {
  auto handshake = [](SSL* ssl, std::size_t&) { return SSL_do_handshake(ssl); };
  return async_run<void(std::error_code)>(std::move(handshake), std::forward<Token>(token));
}

template <typename Token>
auto tls_stream::async_shutdown(Token&& token) {
  // 0: ours is sent, theirs not yet read: the second call reads it (or wants to).
  auto shutdown = [](SSL* ssl, std::size_t&) {
    const int sent = SSL_shutdown(ssl);
    return sent == 0 ? SSL_shutdown(ssl) : sent;
  };
  return async_run<void(std::error_code)>(std::move(shutdown), std::forward<Token>(token));
}

inline std::size_t tls_stream::read_some(asio::mutable_buffer buffer, std::error_code& ec) {
  std::size_t n = 0;
  auto read = [buffer](SSL* ssl, std::size_t& got) {
    return buffer.size() == 0 ? 1 : SSL_read_ex(ssl, buffer.data(), buffer.size(), &got);
  };
  if (attempt(read, n, ec) != detail::ssl_wants::nothing) ec = asio::error::would_block;
  return n;
}

template <typename ConstBuffers>
std::size_t tls_stream::write_some(const ConstBuffers& buffers, std::error_code& ec) {
  std::size_t n = 0;
  auto write = [&buffers](SSL* ssl, std::size_t& written) { return write_gathered(ssl, buffers, written); };
  if (attempt(write, n, ec) != detail::ssl_wants::nothing) ec = asio::error::would_block;
  return n;
}

// A closed socket's descriptor may already belong to another connection:
// OpenSSL never touches it after the close.
template <typename Call>
detail::ssl_wants tls_stream::attempt(Call& call, std::size_t& n, std::error_code& ec) {
  n = 0;
  if (!socket_.is_open()) {
    ec = asio::error::bad_descriptor;
    return detail::ssl_wants::nothing;
  }
  ERR_clear_error();  // SSL_get_error reads this thread's queue: only this call's errors may be in it
  errno = 0;
  const int ret = call(ssl_.get(), n);
  const int saved_errno = errno;
  ec.clear();
  if (ret > 0) return detail::ssl_wants::nothing;
  switch (const int error = SSL_get_error(ssl_.get(), ret)) {
    case SSL_ERROR_WANT_READ: return detail::ssl_wants::read;
    case SSL_ERROR_WANT_WRITE: return detail::ssl_wants::write;
    default: ec = failure(error, saved_errno); return detail::ssl_wants::nothing;
  }
}

inline std::error_code tls_stream::failure(int ssl_error, int saved_errno) const {
  std::error_code ec;
  if (ssl_error == SSL_ERROR_ZERO_RETURN)
    ec = asio::error::eof;  // close_notify
  else if (ssl_error == SSL_ERROR_SYSCALL && saved_errno)
    ec = std::error_code(saved_errno, asio::error::get_system_category());
  else if (const unsigned long code = ERR_peek_error(); code != 0)
    ec = sluice::tls::openssl_error(code);
  else
    ec = sluice::tls::stream_truncated();  // OpenSSL 1.1's way of saying it: a syscall error without errno
  ERR_clear_error();
  return ec;
}

// OpenSSL takes one contiguous buffer per call: a head and a body that fit
// one record are copied together (on the stack) so that they go out as one
// record; a retry after want-write copies the same bytes again, which
// SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows.
template <typename ConstBuffers>
int tls_stream::write_gathered(SSL* ssl, const ConstBuffers& buffers, std::size_t& n) {
  constexpr std::size_t record = 16 * 1024;
  const std::size_t total = asio::buffer_size(buffers);
  if (total == 0) return 1;
  auto it = asio::buffer_sequence_begin(buffers);
  while (it->size() == 0) ++it;
  const asio::const_buffer first = *it;
  if (first.size() == total || total > record) return SSL_write_ex(ssl, first.data(), first.size(), &n);
  std::array<char, record> joined;
  asio::buffer_copy(asio::buffer(joined), buffers);
  return SSL_write_ex(ssl, joined.data(), total, &n);
}

inline tls::tls(std::shared_ptr<sluice::tls::context_holder> contexts, tls_options o,
                std::chrono::milliseconds handshake_timeout, std::span<const std::string_view> alpn)
    : shared_(std::make_shared<detail::tls_shared>()) {
  if (!contexts) throw std::invalid_argument("sluice::tls: no context holder");
  shared_->contexts = std::move(contexts);
  shared_->alpn = alpn_wire(alpn);
  shared_->options = std::move(o);
  shared_->handshake_timeout = handshake_timeout;
  shared_->alpn_names = joined(alpn);
}

inline std::string_view tls::alpn(tls_stream& s) {
  const unsigned char* name = nullptr;
  unsigned int size = 0;
  SSL_get0_alpn_selected(s.native_handle(), &name, &size);
  return {reinterpret_cast<const char*>(name), size};
}

template <typename Token>
auto tls::async_wait_readable(tls_stream& s, Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(detail::wait_readable{&s}, token);
}

inline asio::awaitable<std::error_code> tls::handshake(tls_stream& s) const {
  namespace exp = asio::experimental;
  std::error_code ignored;
  // Now: after a failure a reset peer no longer has an address.
  const auto peer = s.socket().remote_endpoint(ignored);
  const auto bound = sluice::server::saturated(shared_->handshake_timeout);
  asio::steady_timer deadline(s.get_executor(), sluice::server::saturating_add(s.accepted_, bound));
  auto first_done = exp::make_parallel_group(s.async_handshake(exp::deferred), deadline.async_wait(exp::deferred));
  auto [order, ec, deadline_ec] = co_await first_done.async_wait(exp::wait_for_one(), asio::use_awaitable);
  if (order[0] == 1 && !deadline_ec && ec)
    log_failure(peer, "timed out after " + std::to_string(shared_->handshake_timeout.count()) + " ms");
  else if (ec && ec != asio::error::operation_aborted)  // aborted: the server ended it (stop, shutdown, close_idle)
    log_failure(peer, describe(ec));
  else if (!ec)
    ++(SSL_session_reused(s.native_handle()) ? shared_->resumed_handshakes : shared_->full_handshakes);
  co_return ec;
}

inline asio::awaitable<void> tls::async_close_notify(tls_stream& s) {
  namespace exp = asio::experimental;
  asio::steady_timer bound(s.get_executor(), sluice::server::saturated(s.shared_->options.close_notify_timeout));
  auto first_done = exp::make_parallel_group(s.async_shutdown(exp::deferred), bound.async_wait(exp::deferred));
  co_await first_done.async_wait(exp::wait_for_one(), asio::use_awaitable);
}

inline void tls::log_failure(const asio::ip::tcp::endpoint& peer, const std::string& why) const {
  std::string line = "sluice: TLS handshake with ";
  line.append(peer.address().to_string()).append(":").append(std::to_string(peer.port()));
  line.append(" failed: ").append(why);
  log(line);
}

inline void tls::log(std::string_view line) const {
  if (shared_->options.log) {
    shared_->options.log(line);
  } else {
    std::string out(line);
    out.push_back('\n');
    std::fwrite(out.data(), 1, out.size(), stderr);  // one write: lines from several threads stay whole
  }
}

// ALPN's wire format: each name after its length.
inline std::string tls::alpn_wire(std::span<const std::string_view> names) {
  std::string wire;
  for (auto name : names) {
    if (name.empty() || name.size() > 255)
      throw std::invalid_argument("sluice::tls: an ALPN protocol name has 1 to 255 bytes");
    wire.push_back(static_cast<char>(name.size()));
    wire.append(name);
  }
  return wire;
}

inline std::string tls::joined(std::span<const std::string_view> names) {
  std::string out;
  for (auto name : names) out.append(out.empty() ? "" : " and ").append(name);
  return out;
}

// OpenSSL's reason, with what it usually means for the handful that a
// server operator meets.
inline std::string tls::describe(const std::error_code& ec) const {
  if (ec == asio::error::eof || ec == sluice::tls::stream_truncated())
    return "connection closed by the peer mid-handshake";
  if (ec.category() != sluice::tls::openssl_category()) return ec.message();
  const auto code = static_cast<unsigned long>(ec.value());
  std::string out = ec.message();
  std::string hint;
  switch (ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0) {
    case SSL_R_HTTP_REQUEST: hint = "plain HTTP sent to the TLS port"; break;
    case SSL_R_HTTPS_PROXY_REQUEST: hint = "a proxy CONNECT sent to the TLS port"; break;
    case SSL_R_WRONG_VERSION_NUMBER: hint = "not TLS"; break;
    case SSL_R_UNSUPPORTED_PROTOCOL: hint = "the client offers only versions below TLS 1.2"; break;
    case SSL_R_NO_SHARED_CIPHER: hint = "no cipher suite in common"; break;
    case SSL_R_NO_APPLICATION_PROTOCOL: hint = "the client's ALPN list lacks " + shared_->alpn_names; break;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN: hint = "the client does not trust the certificate"; break;
    default: break;
  }
  if (!hint.empty()) out.append(" (").append(hint).append(")");
  return out;
}

static_assert(transport<tls>);

}  // namespace sluice::net
