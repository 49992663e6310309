// sluice/tls/transport.hpp: what the HTTP session template needs to run over
// TLS (the transport concept is described in http/detail/plain_transport.hpp).
// Use sluice::tls::server (tls/server.hpp); this header is its plumbing.
//
// Guarantees
// - Each connection takes the holder's current context when it is accepted
//   and keeps it (a shared_ptr in its stream) until it ends.
// - A failed handshake is reported as one line through options::log (stderr
//   by default) and the connection just closes:
//     sluice: TLS handshake with 127.0.0.1:5555 failed: http request (plain HTTP sent to the TLS port)
//   A handshake the server itself ends (stop_now(), shutdown(), close_idle())
//   is not reported; one ended by handshake_timeout is ("timed out after N ms").
// - The handshake never outlives handshake_timeout (unbounded when that is
//   milliseconds::max(), see http/options.hpp). The session's deadline
//   cancels the socket, but Asio's handshake is a composed operation: a socket
//   cancel that lands while one of its reads has completed and not yet been
//   handled is lost, and the next read would wait for the peer. So the
//   transport also bounds the handshake itself, with a terminal cancellation,
//   which Asio's SSL operations remember between their steps.
// - async_close_notify() sends close_notify and waits for the peer's for at
//   most options::close_notify_timeout: the session then shuts the TCP
//   sending side and drains within its linger_timeout, which would otherwise
//   be spent here.
// - Every operation honours terminal cancellation (the only kind Asio 1.22's
//   SSL operations honour), so stop_now() ends handshakes, reads, writes and
//   close_notify waits at once.
//
// Thread safety: the transport is shared by all of a server's sessions, on
// any threads; options::log may therefore be called from several threads at
// once. A stream belongs to its session's strand.
#pragma once

#include "sluice/config.hpp"
#include "sluice/server/deadlines.hpp"
#include "sluice/tls/context.hpp"

#include <asio/error.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace sluice::tls {

struct options {
  // How long to wait for the peer's close_notify after sending ours. The
  // server keeps it below half of server_options::linger_timeout, so that the
  // lingering close always gets its share.
  std::chrono::milliseconds close_notify_timeout{500};
  // Receives each log line (no trailing newline). Default: stderr.
  std::function<void(std::string_view line)> log;
};

// One connection: the SSL stream over its socket, and the context it was
// created with. An AsyncReadStream and AsyncWriteStream, so that the session
// and asio::async_write use it as they use a socket.
class stream {
 public:
  using ssl_stream_type = asio::ssl::stream<asio::ip::tcp::socket>;
  using executor_type = ssl_stream_type::executor_type;
  using lowest_layer_type = ssl_stream_type::lowest_layer_type;

  stream(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> context,
         std::chrono::milliseconds close_notify_timeout)
      : context_(std::move(context)),
        ssl_(std::move(socket), *context_),
        close_notify_timeout_(close_notify_timeout),
        accepted_(std::chrono::steady_clock::now()) {}

  executor_type get_executor() noexcept { return ssl_.get_executor(); }

  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return ssl_.async_read_some(buffers, std::forward<Token>(token));
  }
  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return ssl_.async_write_some(buffers, std::forward<Token>(token));
  }

  ssl_stream_type& ssl() noexcept { return ssl_; }
  asio::ip::tcp::socket& socket() noexcept { return ssl_.next_layer(); }
  lowest_layer_type& lowest_layer() noexcept { return ssl_.lowest_layer(); }

 private:
  friend class transport;
  std::shared_ptr<asio::ssl::context> context_;  // first: outlives the SSL object made from it
  ssl_stream_type ssl_;
  std::chrono::milliseconds close_notify_timeout_;
  // Taken before the session arms its handshake deadline, so that the
  // transport's own bound (from here) expires first.
  std::chrono::steady_clock::time_point accepted_;
};

class transport {
 public:
  using stream_type = stream;
  // OpenSSL may hold decrypted bytes that no socket readiness announces, so a
  // TLS session waits for input with a read into its buffer.
  static constexpr bool readiness_wait = false;

  // `handshake_timeout`: the server's (server_options::handshake_timeout).
  transport(std::shared_ptr<context_holder> contexts, options o, std::chrono::milliseconds handshake_timeout)
      : contexts_(std::move(contexts)), options_(std::move(o)), handshake_timeout_(handshake_timeout) {
    if (!contexts_) throw std::invalid_argument("sluice::tls: no context holder");
  }

  context_holder& contexts() const noexcept { return *contexts_; }

  stream make_stream(asio::ip::tcp::socket socket) const {
    return stream(std::move(socket), contexts_->current(), options_.close_notify_timeout);
  }

  static asio::ip::tcp::socket& socket(stream& s) noexcept { return s.socket(); }

  // A cancel alone can land between two steps of an SSL operation and be
  // lost; with the receiving side shut too, the next step's read ends at
  // once. Writes (a 408) still go out.
  static void interrupt(asio::ip::tcp::socket& s) {
    std::error_code ignored;
    s.cancel(ignored);
    s.shutdown(asio::socket_base::shutdown_receive, ignored);
  }

  // Never at once: every byte goes through OpenSSL's asynchronous engine.
  static std::size_t try_read_some(stream&, asio::mutable_buffer, std::error_code& ec) {
    ec = asio::error::would_block;
    return 0;
  }
  template <typename ConstBuffers>
  static std::size_t try_write_some(stream&, const ConstBuffers&, std::error_code& ec) {
    ec = asio::error::would_block;
    return 0;
  }

  asio::awaitable<std::error_code> handshake(stream& s) const {
    namespace exp = asio::experimental;
    std::error_code ignored;
    // Now: after a failure a reset peer no longer has an address.
    const auto peer = s.socket().remote_endpoint(ignored);
    asio::steady_timer deadline(s.get_executor(),
                                sluice::server::saturating_add(s.accepted_, sluice::server::saturated(handshake_timeout_)));
    auto first_done = exp::make_parallel_group(s.ssl().async_handshake(asio::ssl::stream_base::server, exp::deferred),
                                               deadline.async_wait(exp::deferred));
    auto [order, ec, deadline_ec] = co_await first_done.async_wait(exp::wait_for_one(), asio::use_awaitable);
    if (order[0] == 1 && !deadline_ec && ec)
      log_failure(peer, "timed out after " + std::to_string(handshake_timeout_.count()) + " ms");
    else if (ec && ec != asio::error::operation_aborted)  // aborted: the server ended it (stop, shutdown, close_idle)
      log_failure(peer, describe(ec));
    co_return ec;
  }

  static asio::awaitable<void> async_close_notify(stream& s) {
    asio::steady_timer bound(s.get_executor(), sluice::server::saturated(s.close_notify_timeout_));
    auto first_done = asio::experimental::make_parallel_group(s.ssl().async_shutdown(asio::experimental::deferred),
                                                              bound.async_wait(asio::experimental::deferred));
    co_await first_done.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  }

 private:
  void log_failure(const asio::ip::tcp::endpoint& peer, const std::string& why) const {
    std::string line = "sluice: TLS handshake with ";
    line.append(peer.address().to_string()).append(":").append(std::to_string(peer.port()));
    line.append(" failed: ").append(why);
    log(line);
  }

  void log(std::string_view line) const {
    if (options_.log) {
      options_.log(line);
    } else {
      std::string out(line);
      out.push_back('\n');
      std::fwrite(out.data(), 1, out.size(), stderr);  // one write: lines from several threads stay whole
    }
  }

  // OpenSSL's reason, with what it usually means for the handful that a
  // server operator meets.
  static std::string describe(const std::error_code& ec) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
      return "connection closed by the peer mid-handshake";
    if (ec.category() != asio::error::get_ssl_category()) return ec.message();
    const auto code = static_cast<unsigned long>(ec.value());
    const char* reason = ERR_reason_error_string(code);
    std::string out = reason ? reason : ec.message();
    const char* hint = nullptr;
    switch (ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0) {
      case SSL_R_HTTP_REQUEST: hint = "plain HTTP sent to the TLS port"; break;
      case SSL_R_HTTPS_PROXY_REQUEST: hint = "a proxy CONNECT sent to the TLS port"; break;
      case SSL_R_WRONG_VERSION_NUMBER: hint = "not TLS"; break;
      case SSL_R_UNSUPPORTED_PROTOCOL: hint = "the client offers only versions below TLS 1.2"; break;
      case SSL_R_NO_SHARED_CIPHER: hint = "no cipher suite in common"; break;
      case SSL_R_NO_APPLICATION_PROTOCOL: hint = "the client's ALPN list lacks http/1.1"; break;
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN: hint = "the client does not trust the certificate"; break;
      default: break;
    }
    if (hint) out.append(" (").append(hint).append(")");
    return out;
  }

  std::shared_ptr<context_holder> contexts_;
  options options_;
  std::chrono::milliseconds handshake_timeout_;
};

}  // namespace sluice::tls
