// Test support for the TLS tests: the two test certificates of a run, and a
// TLS client (asio::ssl, the client side only) that reads Content-Length
// responses, can name a server (SNI) and resume a session from a ticket.
#pragma once

#include "support/http_client.hpp"
#include "support/tls_certs.hpp"

#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::test {

// Two certificates for the whole run: the server starts with `one`; reload tests move to `two`.
struct test_certs {
  temp_dir dir;
  cert_files one = make_self_signed(dir.path(), "one", 1, "sluice-test-1");
  cert_files two = make_self_signed(dir.path(), "two", 2, "sluice-test-2");
};

inline const test_certs& certs() {
  static const test_certs c;
  return c;
}

// A client context that trusts both test certificates and offers `alpn` (wire format; empty: no ALPN).
inline asio::ssl::context client_context(std::string_view alpn = std::string_view("\x08http/1.1", 9)) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(certs().one.cert.string());
  ctx.load_verify_file(certs().two.cert.string());
  ctx.set_verify_mode(asio::ssl::verify_peer);
  if (!alpn.empty())
    SSL_CTX_set_alpn_protos(ctx.native_handle(), reinterpret_cast<const unsigned char*>(alpn.data()),
                            static_cast<unsigned>(alpn.size()));
  return ctx;
}

struct reply {
  unsigned status = 0;
  std::string head;
  std::string body;
  bool closes() const {
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    return lower.find("\r\nconnection: close\r\n") != std::string::npos;
  }
};

// A TLS client reading Content-Length responses: all the hello handler sends.
// (Its stream is on the heap and its buffers too: g++ 12's ASan build warns
// about coroutine frames above Asio's recycling size.)
class tls_client {
 public:
  tls_client(asio::any_io_executor ex, asio::ssl::context& ctx)
      : stream_(std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(ex), ctx)) {}

  // `server_name`: sent as SNI when not empty; `resume`: a session from an
  // earlier connection (session()) to resume, if the server accepts it.
  static awaitable<tls_client> connect(tcp::endpoint ep, asio::ssl::context& ctx, std::string server_name = {},
                                       SSL_SESSION* resume = nullptr) {
    tls_client c(co_await asio::this_coro::executor, ctx);
    if (!server_name.empty()) SSL_set_tlsext_host_name(c.stream_->native_handle(), server_name.c_str());
    if (resume) SSL_set_session(c.stream_->native_handle(), resume);
    co_await c.stream_->next_layer().async_connect(ep, use_awaitable);
    co_await c.stream_->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    co_return c;
  }

  // The session to resume later (TLS 1.3: its ticket arrives after the
  // handshake, so ask after a response was read).
  std::shared_ptr<SSL_SESSION> session() const {
    return std::shared_ptr<SSL_SESSION>(SSL_get1_session(stream_->native_handle()), SSL_SESSION_free);
  }
  bool resumed() const { return SSL_session_reused(stream_->native_handle()) == 1; }

  tcp::endpoint local_endpoint() const { return stream_->next_layer().local_endpoint(); }
  tcp::socket& socket() { return stream_->next_layer(); }

  long serial() const {
    auto cert = peer_cert();
    return serial_of(cert.get());
  }
  std::string common_name() const {
    auto cert = peer_cert();
    return common_name_of(cert.get());
  }
  int version() const { return SSL_version(stream_->native_handle()); }
  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(stream_->native_handle(), &p, &len);
    return std::string(reinterpret_cast<const char*>(p), len);
  }

  awaitable<void> send(std::string_view bytes) {
    co_await asio::async_write(*stream_, asio::buffer(bytes), use_awaitable);
  }

  awaitable<reply> read_response() {
    const std::size_t n =
        co_await asio::async_read_until(*stream_, asio::dynamic_buffer(buffer_), "\r\n\r\n", use_awaitable);
    reply r;
    r.head = buffer_.substr(0, n);
    buffer_.erase(0, n);
    r.status = static_cast<unsigned>(std::stoul(r.head.substr(9, 3)));
    std::string lower = r.head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto at = lower.find("\r\ncontent-length:");
    const std::size_t length = at == std::string::npos ? 0 : std::stoul(lower.substr(at + 17));
    if (buffer_.size() < length)
      co_await asio::async_read(*stream_, asio::dynamic_buffer(buffer_), asio::transfer_exactly(length - buffer_.size()),
                                use_awaitable);
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    co_return r;
  }

  // Sends `line`, then reads one line back.
  awaitable<std::string> read_line_after(std::string_view line) {
    co_await send(line);
    const std::size_t n = co_await asio::async_read_until(*stream_, asio::dynamic_buffer(buffer_), '\n', use_awaitable);
    std::string echoed = buffer_.substr(0, n);
    buffer_.erase(0, n);
    co_return echoed;
  }

  awaitable<reply> request(std::string_view raw) {
    co_await send(raw);
    co_return co_await read_response();
  }

  // Reads until the server ends the TLS stream: eof after its close_notify,
  // stream_truncated when it closed TCP without one, or a reset.
  awaitable<std::error_code> wait_closed() {
    std::vector<char> chunk(4096);
    for (;;) {
      auto [ec, n] = co_await stream_->async_read_some(asio::buffer(chunk), nothrow);
      if (ec) co_return ec;
    }
  }

  // Answers the server's close_notify with ours.
  awaitable<void> close_notify() { co_await stream_->async_shutdown(nothrow); }

 private:
  std::unique_ptr<X509, decltype(&X509_free)> peer_cert() const {
    std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(stream_->native_handle()), X509_free);
    REQUIRE(cert);
    return cert;
  }

  std::unique_ptr<asio::ssl::stream<tcp::socket>> stream_;
  std::string buffer_;
};

inline bool closed_by_server(std::error_code ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset;
}

// What a plain TCP peer receives until the server closes: true on EOF or reset.
inline awaitable<bool> raw_sees_close(tcp::socket& s) {
  std::vector<char> chunk(4096);
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(chunk), nothrow);
    if (ec) co_return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
}

// The first flight of a TLS client: a complete ClientHello record.
inline std::string client_hello() {
  auto ctx = client_context();
  SSL* ssl = SSL_new(ctx.native_handle());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants the server's reply: returns with the ClientHello in `out`
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string hello(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  return hello;
}

// A TLS client on memory BIOs over a plain socket, for what the asio::ssl
// client cannot do: send a record in pieces (seal() gives its bytes), and
// leave a connection open holding nothing but its socket (the tests that
// measure the server's memory per connection). One connection at a time.
class raw_tls_client {
 public:
  explicit raw_tls_client(asio::ssl::context& ctx) : ssl_(SSL_new(ctx.native_handle()), SSL_free) {
    REQUIRE(ssl_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_.get(), in_, out_);  // owned by the SSL from here
    SSL_set_connect_state(ssl_.get());
  }

  awaitable<void> handshake(tcp::socket& s) {
    for (;;) {
      const int r = SSL_do_handshake(ssl_.get());
      co_await flush(s);
      if (r == 1) co_return;
      REQUIRE(SSL_get_error(ssl_.get(), r) == SSL_ERROR_WANT_READ);
      co_await feed(s);
    }
  }

  // The records that carry `plain`, for the test to send as it likes.
  std::string seal(std::string_view plain) {
    std::size_t n = 0;
    REQUIRE(SSL_write_ex(ssl_.get(), plain.data(), plain.size(), &n) == 1);
    return drain_output();
  }

  // Decrypts what the server sends until `end` has arrived; returns it all.
  awaitable<std::string> read_until(tcp::socket& s, std::string_view end) {
    std::string got;
    std::array<char, 4096> chunk;
    while (got.find(end) == std::string::npos) {
      std::size_t n = 0;
      if (SSL_read_ex(ssl_.get(), chunk.data(), chunk.size(), &n) == 1) {
        got.append(chunk.data(), n);
        continue;
      }
      REQUIRE(SSL_get_error(ssl_.get(), 0) == SSL_ERROR_WANT_READ);
      co_await flush(s);
      co_await feed(s);
    }
    co_return got;
  }

 private:
  std::string drain_output() {
    char* data = nullptr;
    const long n = BIO_get_mem_data(out_, &data);
    std::string bytes(data, static_cast<std::size_t>(n));
    (void)BIO_reset(out_);
    return bytes;
  }

  awaitable<void> flush(tcp::socket& s) {
    const std::string bytes = drain_output();
    if (!bytes.empty()) co_await asio::async_write(s, asio::buffer(bytes), use_awaitable);
  }

  awaitable<void> feed(tcp::socket& s) {
    std::array<char, 4096> chunk;
    const std::size_t n = co_await s.async_read_some(asio::buffer(chunk), use_awaitable);
    BIO_write(in_, chunk.data(), static_cast<int>(n));
  }

  std::unique_ptr<SSL, decltype(&SSL_free)> ssl_;
  BIO* in_ = nullptr;
  BIO* out_ = nullptr;
};

}  // namespace sluice::test
