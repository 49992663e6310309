// sluice/tls/context.hpp: server TLS contexts built from PEM files, and the
// holder through which a server swaps its context without a restart.
//
//     auto ctx = sluice::tls::make_server_context("cert.pem", "key.pem");
//
// Guarantees
// - make_server_context() returns a context that is complete before anyone
//   sees it: TLS 1.2 and 1.3 only, forward-secret AEAD cipher suites for
//   TLS 1.2, no compression, no renegotiation. ALPN selects from the
//   protocols each connection's transport offers for its protocol (see
//   net/tls.hpp; the HTTP server offers "http/1.1"): a client that offers
//   ALPN without any of them gets a no_application_protocol alert, as RFC
//   7301 asks, and where the protocol names none ALPN is ignored. So one
//   context can serve servers of different protocols. The key must match
//   the certificate.
// - Any failure throws context_error, whose message names the file and gives
//   OpenSSL's reason; nothing ever prompts for a passphrase (encrypted keys
//   are refused).
// - context_holder::set() and reload() affect only what current() returns
//   from then on: a connection keeps the context it was created with (its
//   shared_ptr) for its whole life. reload() builds the new context first and
//   leaves the old one in place when that throws.
//
// Thread safety: make_server_context() may run on any thread. Every member of
// context_holder may be called from any thread at any time. A published
// context is never modified again, which is what lets OpenSSL share it
// between connections on several threads.
#pragma once

#include "sluice/config.hpp"

#include <asio/ssl/context.hpp>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace sluice::tls {

// A certificate or key file that could not be used.
class context_error : public std::runtime_error {
 public:
  context_error(std::filesystem::path file, const std::string& what)
      : std::runtime_error("sluice::tls: " + file.string() + ": " + what), file_(std::move(file)) {}
  const std::filesystem::path& file() const noexcept { return file_; }

 private:
  std::filesystem::path file_;
};

namespace detail {

// The first error OpenSSL queued (the cause; later ones only add context),
// and an empty queue for whoever comes next on this thread.
inline std::string openssl_reason() {
  const unsigned long code = ERR_peek_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(code);
  return reason ? reason : "OpenSSL error " + std::to_string(code);
}

inline std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw context_error(file, std::string("cannot open: ") + std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw context_error(file, "read failed");
  return data;
}

struct bio_deleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct x509_deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct pkey_deleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

inline std::unique_ptr<BIO, bio_deleter> memory_bio(const std::string& data) {
  return std::unique_ptr<BIO, bio_deleter>(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// Stands in for OpenSSL's default, which would prompt on the terminal.
inline int no_passphrase(char*, int, int, void*) { return 0; }

// ALPN is the protocol's choice, and a context may serve several protocols:
// so each connection carries the list its transport offers (offer_alpn),
// under an ex_data index of our own (Asio's stream uses the app data slot).
inline int alpn_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// `wire`: ALPN's wire format (each name after its length), most preferred
// first; must outlive `ssl`. Null or empty: ALPN is ignored for `ssl`.
inline void offer_alpn(SSL* ssl, const std::string* wire) {
  SSL_set_ex_data(ssl, alpn_index(), const_cast<std::string*>(wire));
}

// The first of the connection's protocols that the client offers. Static,
// and the user pointer unused, so that no context can ever reference freed
// memory through it.
inline int select_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                       unsigned int inlen, void*) {
  const auto* ours = static_cast<const std::string*>(SSL_get_ex_data(ssl, alpn_index()));
  if (!ours || ours->empty()) return SSL_TLSEXT_ERR_NOACK;  // the protocol names none: as if not offered
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, reinterpret_cast<const unsigned char*>(ours->data()),
                            static_cast<unsigned int>(ours->size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = selected;
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

inline void load_certificate_chain(SSL_CTX* ctx, const std::filesystem::path& file) {
  const std::string pem = read_file(file);
  auto bio = memory_bio(pem);
  ERR_clear_error();
  std::unique_ptr<X509, x509_deleter> leaf(PEM_read_bio_X509_AUX(bio.get(), nullptr, no_passphrase, nullptr));
  if (!leaf) throw context_error(file, "no PEM certificate: " + openssl_reason());
  if (SSL_CTX_use_certificate(ctx, leaf.get()) != 1)
    throw context_error(file, "certificate refused: " + openssl_reason());
  // The rest of the file is the chain, sent to clients after the leaf.
  while (std::unique_ptr<X509, x509_deleter> ca{PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr)}) {
    if (SSL_CTX_add0_chain_cert(ctx, ca.get()) != 1)
      throw context_error(file, "chain certificate refused: " + openssl_reason());
    ca.release();  // owned by the context now
  }
  // The loop ends at the end of the data (PEM "no start line"), or at a bad block.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE))
    throw context_error(file, "bad chain certificate: " + openssl_reason());
  ERR_clear_error();
}

inline void load_private_key(SSL_CTX* ctx, const std::filesystem::path& file, const std::filesystem::path& cert) {
  const std::string pem = read_file(file);
  auto bio = memory_bio(pem);
  ERR_clear_error();
  std::unique_ptr<EVP_PKEY, pkey_deleter> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) {
    // OpenSSL 3's decoders say little more than "unsupported": look for ourselves.
    const std::string reason = openssl_reason();
    if (pem.find("ENCRYPTED") != std::string::npos)
      throw context_error(file, "encrypted private keys are not supported (" + reason + ")");
    if (pem.find("PRIVATE KEY-----") == std::string::npos) throw context_error(file, "no PEM private key found");
    throw context_error(file, "bad PEM private key: " + reason);
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1) {
    const unsigned long code = ERR_peek_error();
    const std::string reason = openssl_reason();
    if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
      throw context_error(file, "does not match the certificate in " + cert.string() + " (" + reason + ")");
    throw context_error(file, "private key refused: " + reason);
  }
}

}  // namespace detail

// A server context for `cert_chain` (PEM: the certificate, then its chain)
// and `private_key` (PEM, unencrypted). Throws context_error.
inline std::shared_ptr<asio::ssl::context> make_server_context(const std::filesystem::path& cert_chain,
                                                               const std::filesystem::path& private_key) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_default_passwd_cb(native, detail::no_passphrase);
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // TLS 1.2 (1.3 has only sound suites): ECDHE with AEAD, Mozilla's "intermediate" set.
  if (SSL_CTX_set_cipher_list(native,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1)
    throw std::runtime_error("sluice::tls: cipher list refused: " + detail::openssl_reason());
  SSL_CTX_set_alpn_select_cb(native, detail::select_alpn, nullptr);
  detail::load_certificate_chain(native, cert_chain);
  detail::load_private_key(native, private_key, cert_chain);
  return ctx;
}

// The context that new connections get.
class context_holder {
 public:
  explicit context_holder(std::shared_ptr<asio::ssl::context> ctx) { set(std::move(ctx)); }
  context_holder(const context_holder&) = delete;
  context_holder& operator=(const context_holder&) = delete;

  std::shared_ptr<asio::ssl::context> current() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

  // `ctx` must be complete: it is shared with other threads from now on.
  void set(std::shared_ptr<asio::ssl::context> ctx) {
    if (!ctx) throw std::invalid_argument("sluice::tls: null context");
    std::lock_guard lock(mutex_);
    current_.swap(ctx);
  }  // the old context is released outside the lock

  // Builds a context from the files, then swaps it in. On failure throws
  // context_error and keeps serving the current one.
  void reload(const std::filesystem::path& cert_chain, const std::filesystem::path& private_key) {
    set(make_server_context(cert_chain, private_key));
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<asio::ssl::context> current_;
};

}  // namespace sluice::tls
