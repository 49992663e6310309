// sluice/net/tls.hpp: the TLS transport (see net/transport.hpp), on
// asio::ssl, for any protocol: HTTP (sluice::tls::server, tls/server.hpp) or
// your own over tcp::server (net/serve_over.hpp).
//
//     auto contexts = std::make_shared<sluice::tls::context_holder>(
//         sluice::tls::make_server_context("cert.pem", "key.pem"));
//     static constexpr std::string_view protocols[] = {"x-echo"};  // ALPN names
//     sluice::net::tls transport(contexts, {}, std::chrono::seconds(10), protocols);
//
// Guarantees
// - Each connection takes the holder's current context when it is accepted
//   and keeps it (a shared_ptr in its stream) until it ends.
// - ALPN belongs to the protocol: the transport offers the protocol names it
//   was given, most preferred first; a client offering ALPN without any of
//   them gets a no_application_protocol alert (RFC 7301), and with none given
//   ALPN is ignored. (The selection is done by the callback that
//   tls::make_server_context() installs; another context ignores ALPN.)
// - A failed handshake is reported as one line through tls_options::log
//   (stderr by default) and the connection just closes:
//     sluice: TLS handshake with 127.0.0.1:5555 failed: http request (plain HTTP sent to the TLS port)
//   A handshake the server itself ends (stop_now(), shutdown(), close_idle())
//   is not reported; one ended by handshake_timeout is ("timed out after N ms").
// - The handshake never outlives handshake_timeout, counted from accept
//   (unbounded when that is milliseconds::max()). A driver's deadline
//   cancels the socket, but Asio's handshake is a composed operation: a
//   socket cancel that lands while one of its reads has completed and not
//   yet been handled is lost, and the next read would wait for the peer. So
//   the transport bounds the handshake itself, with a terminal cancellation,
//   which Asio's SSL operations remember between their steps.
// - async_close_notify() sends close_notify and waits for the peer's for at
//   most tls_options::close_notify_timeout: the driver then shuts the TCP
//   sending side and drains within its linger_timeout, which would otherwise
//   be spent here.
// - Every operation honours terminal cancellation (the only kind Asio 1.22's
//   SSL operations honour), so stop_now() ends handshakes, reads, writes and
//   close_notify waits at once.
//
// Thread safety: the transport is shared by all of a server's connections,
// on any threads; tls_options::log may therefore be called from several
// threads at once. A stream belongs to its connection's executor.
#pragma once

#include "sluice/config.hpp"
#include "sluice/net/transport.hpp"
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

// One connection: the SSL stream over its socket, and the context it was
// created with. An AsyncReadStream and AsyncWriteStream, so that drivers,
// protocols and asio::async_write use it as they use a socket.
class tls_stream {
 public:
  using ssl_stream_type = asio::ssl::stream<asio::ip::tcp::socket>;
  using executor_type = ssl_stream_type::executor_type;
  using lowest_layer_type = ssl_stream_type::lowest_layer_type;

  // `alpn`: the protocols offered (ALPN's wire format), shared by the
  // transport's streams; empty: none.
  tls_stream(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> context,
             std::shared_ptr<const std::string> alpn, std::chrono::milliseconds close_notify_timeout)
      : context_(std::move(context)),
        alpn_(std::move(alpn)),
        ssl_(std::move(socket), *context_),
        close_notify_timeout_(close_notify_timeout),
        accepted_(std::chrono::steady_clock::now()) {
    sluice::tls::detail::offer_alpn(ssl_.native_handle(), alpn_.get());
  }

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
  friend class tls;
  // Both before ssl_: they outlive the SSL object, which points to them.
  std::shared_ptr<asio::ssl::context> context_;
  std::shared_ptr<const std::string> alpn_;
  ssl_stream_type ssl_;
  std::chrono::milliseconds close_notify_timeout_;
  // Taken before the session arms its handshake deadline, so that the
  // transport's own bound (from here) expires first.
  std::chrono::steady_clock::time_point accepted_;
};

class tls {
 public:
  using stream_type = tls_stream;
  // OpenSSL may hold decrypted bytes that no socket readiness announces, so a
  // TLS session waits for input with a read into its buffer.
  static constexpr bool readiness_wait = false;

  // `alpn`: the protocol's names for itself, most preferred first (the HTTP
  // server's are http::alpn_protocols); none: ALPN is ignored. Throws
  // std::invalid_argument for a name that is empty or longer than 255 bytes.
  tls(std::shared_ptr<sluice::tls::context_holder> contexts, tls_options o, std::chrono::milliseconds handshake_timeout,
      std::span<const std::string_view> alpn = {})
      : contexts_(std::move(contexts)),
        options_(std::move(o)),
        handshake_timeout_(handshake_timeout),
        alpn_(std::make_shared<const std::string>(alpn_wire(alpn))),
        alpn_names_(joined(alpn)) {
    if (!contexts_) throw std::invalid_argument("sluice::tls: no context holder");
  }

  sluice::tls::context_holder& contexts() const noexcept { return *contexts_; }

  tls_stream make_stream(asio::ip::tcp::socket socket) const {
    return tls_stream(std::move(socket), contexts_->current(), alpn_, options_.close_notify_timeout);
  }

  static asio::ip::tcp::socket& socket(tls_stream& s) noexcept { return s.socket(); }

  static std::string_view alpn(tls_stream& s) {
    const unsigned char* name = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(s.ssl().native_handle(), &name, &length);
    return name ? std::string_view(reinterpret_cast<const char*>(name), length) : std::string_view{};
  }

  // A cancel alone can land between two steps of an SSL operation and be
  // lost; with the receiving side shut too, the next step's read ends at
  // once. Writes (a 408) still go out.
  static void interrupt(asio::ip::tcp::socket& s) {
    std::error_code ignored;
    s.cancel(ignored);
    s.shutdown(asio::socket_base::shutdown_receive, ignored);
  }

  // Never at once: every byte goes through OpenSSL's asynchronous engine.
  static std::size_t try_read_some(tls_stream&, asio::mutable_buffer, std::error_code& ec) {
    ec = asio::error::would_block;
    return 0;
  }
  template <typename ConstBuffers>
  static std::size_t try_write_some(tls_stream&, const ConstBuffers&, std::error_code& ec) {
    ec = asio::error::would_block;
    return 0;
  }

  asio::awaitable<std::error_code> handshake(tls_stream& s) const {
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

  static asio::awaitable<void> async_close_notify(tls_stream& s) {
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

  // ALPN's wire format: each name after its length.
  static std::string alpn_wire(std::span<const std::string_view> names) {
    std::string wire;
    for (auto name : names) {
      if (name.empty() || name.size() > 255)
        throw std::invalid_argument("sluice::tls: an ALPN protocol name has 1 to 255 bytes");
      wire.push_back(static_cast<char>(name.size()));
      wire.append(name);
    }
    return wire;
  }

  static std::string joined(std::span<const std::string_view> names) {
    std::string out;
    for (auto name : names) out.append(out.empty() ? "" : " and ").append(name);
    return out;
  }

  // OpenSSL's reason, with what it usually means for the handful that a
  // server operator meets.
  std::string describe(const std::error_code& ec) const {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
      return "connection closed by the peer mid-handshake";
    if (ec.category() != asio::error::get_ssl_category()) return ec.message();
    const auto code = static_cast<unsigned long>(ec.value());
    const char* reason = ERR_reason_error_string(code);
    std::string out = reason ? reason : ec.message();
    std::string hint;
    switch (ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0) {
      case SSL_R_HTTP_REQUEST: hint = "plain HTTP sent to the TLS port"; break;
      case SSL_R_HTTPS_PROXY_REQUEST: hint = "a proxy CONNECT sent to the TLS port"; break;
      case SSL_R_WRONG_VERSION_NUMBER: hint = "not TLS"; break;
      case SSL_R_UNSUPPORTED_PROTOCOL: hint = "the client offers only versions below TLS 1.2"; break;
      case SSL_R_NO_SHARED_CIPHER: hint = "no cipher suite in common"; break;
      case SSL_R_NO_APPLICATION_PROTOCOL: hint = "the client's ALPN list lacks " + alpn_names_; break;
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN: hint = "the client does not trust the certificate"; break;
      default: break;
    }
    if (!hint.empty()) out.append(" (").append(hint).append(")");
    return out;
  }

  std::shared_ptr<sluice::tls::context_holder> contexts_;
  tls_options options_;
  std::chrono::milliseconds handshake_timeout_;
  std::shared_ptr<const std::string> alpn_;  // wire format, shared with the streams
  std::string alpn_names_;                   // for log lines
};

static_assert(transport<tls>);

}  // namespace sluice::net
