// sluice/tls/context.hpp: server TLS contexts built from PEM files, and the
// holder through which a server picks a context by server name (SNI) and
// swaps any of them without a restart.
//
//     auto contexts = std::make_shared<sluice::tls::context_holder>(
//         sluice::tls::make_server_context("default.pem", "default.key"));
//     contexts->set("api.example.com", sluice::tls::make_server_context("api.pem", "api.key"));
//     contexts->reload("api.example.com", "api.pem", "api.key");  // new connections only
//
// Guarantees
// - make_server_context() returns a context that is complete before anyone
//   sees it: TLS 1.2 and 1.3 only; for TLS 1.2 ECDHE key exchange with AEAD
//   ciphers (AES-GCM, ChaCha20-Poly1305) only, for TLS 1.3 OpenSSL's
//   defaults (all AEAD); no compression, no renegotiation. ALPN selects from
//   the protocols each connection's transport offers for its protocol (see
//   net/tls.hpp): a client that offers ALPN without any of them gets a
//   no_application_protocol alert, as RFC 7301 asks, and where the protocol
//   names none ALPN is ignored. So one context can serve servers of
//   different protocols. The key must match the certificate.
// - Sessions resume statelessly only: tickets encrypted with the holder's
//   ticket_keys (tls/ticket_keys.hpp), no server-side session cache, so a
//   connection leaves nothing behind in the server when it ends.
// - SNI: a connection whose client names a server the holder has a context
//   for (exactly, or by a "*.example.com" entry one label up; names compare
//   case-insensitively) gets that context; any other gets the default one.
// - Any failure throws context_error, whose message names the file and gives
//   OpenSSL's reason; nothing ever prompts for a passphrase (encrypted keys
//   are refused).
// - context_holder::set() and reload() affect only connections made from
//   then on: a connection keeps the context it was created with (its
//   shared_ptr) and the one SNI chose (OpenSSL's own reference) for its whole
//   life. reload() builds the new context first and leaves the old one in
//   place when that throws.
//
// Thread safety: make_server_context() may run on any thread. Every member of
// context_holder may be called from any thread at any time. A published
// context is never modified again, which is what lets OpenSSL share it
// between connections on several threads.
#pragma once

#include "sluice/config.hpp"
#include "sluice/tls/ticket_keys.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
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

// An OpenSSL server context (SSL_CTX), owned. Connections hold it through
// shared_ptr; OpenSSL's own reference count keeps it alive for an SSL too.
class context {
 public:
  // Takes ownership of `native` (not null).
  explicit context(SSL_CTX* native) : native_(native) {
    if (!native_) throw std::invalid_argument("sluice::tls: null SSL_CTX");
  }
  SSL_CTX* native_handle() const noexcept { return native_.get(); }

 private:
  struct deleter {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
  };
  std::unique_ptr<SSL_CTX, deleter> native_;
};

// A server context for `cert_chain` (PEM: the certificate, then its chain)
// and `private_key` (PEM, unencrypted). Throws context_error.
std::shared_ptr<context> make_server_context(const std::filesystem::path& cert_chain,
                                             const std::filesystem::path& private_key);

// The contexts that new connections get: a default one, and one per server
// name (SNI); and the ticket keys of the sessions they resume.
class context_holder {
 public:
  explicit context_holder(std::shared_ptr<context> default_context,
                          ticket_keys::clock::duration ticket_key_period = std::chrono::hours(1))
      : tickets_(ticket_key_period) {
    set(std::move(default_context));
  }
  context_holder(const context_holder&) = delete;
  context_holder& operator=(const context_holder&) = delete;

  // The default context: for clients that name no server, or one without its own.
  std::shared_ptr<context> current() const;
  // The context for `server_name` (see the SNI guarantee above).
  std::shared_ptr<context> current(std::string_view server_name) const;

  // `ctx` must be complete: it is shared with other threads from now on.
  void set(std::shared_ptr<context> ctx);
  void set(std::string_view server_name, std::shared_ptr<context> ctx);

  // Builds a context from the files, then swaps it in. On failure throws
  // context_error and keeps serving the current one.
  void reload(const std::filesystem::path& cert_chain, const std::filesystem::path& private_key) {
    set(make_server_context(cert_chain, private_key));
  }
  void reload(std::string_view server_name, const std::filesystem::path& cert_chain,
              const std::filesystem::path& private_key) {
    set(server_name, make_server_context(cert_chain, private_key));
  }

  ticket_keys& tickets() noexcept { return tickets_; }

  // Implementation

 private:
  static std::string lower(std::string_view name);
  // Under the lock: the exact name's context, else the wildcard's one label up, else null.
  const std::shared_ptr<context>* named(const std::string& name) const;

  mutable std::mutex mutex_;
  std::shared_ptr<context> default_;
  std::map<std::string, std::shared_ptr<context>, std::less<>> by_name_;
  ticket_keys tickets_;
};

namespace detail {

// What a transport gives each of its connections, read by the context's
// callbacks (SSL ex_data): which protocols ALPN may select, where SNI looks
// names up and whose keys encrypt tickets. Shared by a transport's
// connections and outliving them.
struct connection_settings {
  std::shared_ptr<context_holder> contexts;
  std::string alpn;  // ALPN's wire format (each name after its length), most preferred first; empty: none
};

inline int settings_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// `settings` must outlive `ssl`.
inline void attach_settings(SSL* ssl, const connection_settings* settings) {
  SSL_set_ex_data(ssl, settings_index(), const_cast<connection_settings*>(settings));
}

inline const connection_settings* settings_of(SSL* ssl) {
  return static_cast<const connection_settings*>(SSL_get_ex_data(ssl, settings_index()));
}

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

// The callbacks are static, and their user pointers unused, so that no
// context can ever reference freed memory through them: what they need
// comes from the connection (settings_of).

// The first of the connection's protocols that the client offers.
inline int select_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                       unsigned int inlen, void*) {
  const auto* settings = settings_of(ssl);
  if (!settings || settings->alpn.empty()) return SSL_TLSEXT_ERR_NOACK;  // the protocol names none: as if not offered
  const std::string& ours = settings->alpn;
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, reinterpret_cast<const unsigned char*>(ours.data()),
                            static_cast<unsigned int>(ours.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = selected;
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

// SNI: moves the connection to the context of the name its client asked
// for. OpenSSL takes its own reference to that context, so a later reload
// leaves this connection's alone.
inline int select_context(SSL* ssl, int*, void*) {
  const auto* settings = settings_of(ssl);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!settings || !name) return SSL_TLSEXT_ERR_OK;
  const auto chosen = settings->contexts->current(name);
  if (chosen->native_handle() != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen->native_handle());
  return SSL_TLSEXT_ERR_OK;
}

// Tickets are always encrypted with the holder's keys, whichever context
// SNI chose (OpenSSL asks the connection's first context).
inline int crypt_ticket(SSL* ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                        EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
  const auto* settings = settings_of(ssl);
  if (!settings) return 0;  // not a sluice connection: no ticket, no resumption
  return settings->contexts->tickets().crypt(name, iv, cipher, mac, enc);
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

// The policy every sluice context has, before its certificate.
inline void apply_policy(SSL_CTX* native) {
  SSL_CTX_set_default_passwd_cb(native, no_passphrase);
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // TLS 1.2 (1.3 has only sound suites): ECDHE with AEAD, Mozilla's "intermediate" set.
  if (SSL_CTX_set_cipher_list(native,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1)
    throw std::runtime_error("sluice::tls: cipher list refused: " + openssl_reason());
  // Stateless resumption only: a server-side cache would keep every
  // session (about 1 KB each) after its connection ended.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  static const unsigned char id_context[] = "sluice";  // the same for every context, so SNI keeps resumption
  SSL_CTX_set_session_id_context(native, id_context, sizeof id_context - 1);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(native, crypt_ticket);
  SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
  SSL_CTX_set_tlsext_servername_callback(native, select_context);
}

}  // namespace detail

// Implementation

inline std::shared_ptr<context> make_server_context(const std::filesystem::path& cert_chain,
                                                    const std::filesystem::path& private_key) {
  auto ctx = std::make_shared<context>(SSL_CTX_new(TLS_server_method()));
  SSL_CTX* native = ctx->native_handle();
  detail::apply_policy(native);
  detail::load_certificate_chain(native, cert_chain);
  detail::load_private_key(native, private_key, cert_chain);
  return ctx;
}

inline std::shared_ptr<context> context_holder::current() const {
  std::lock_guard lock(mutex_);
  return default_;
}

inline std::shared_ptr<context> context_holder::current(std::string_view server_name) const {
  const std::string name = lower(server_name);
  std::lock_guard lock(mutex_);
  const auto* found = named(name);
  return found ? *found : default_;
}

inline void context_holder::set(std::shared_ptr<context> ctx) {
  if (!ctx) throw std::invalid_argument("sluice::tls: null context");
  std::lock_guard lock(mutex_);
  default_.swap(ctx);
}  // the old context is released outside the lock

inline void context_holder::set(std::string_view server_name, std::shared_ptr<context> ctx) {
  if (!ctx) throw std::invalid_argument("sluice::tls: null context");
  std::string name = lower(server_name);
  std::lock_guard lock(mutex_);
  by_name_[std::move(name)].swap(ctx);
}

inline std::string context_holder::lower(std::string_view name) {
  std::string out(name);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

inline const std::shared_ptr<context>* context_holder::named(const std::string& name) const {
  if (auto exact = by_name_.find(name); exact != by_name_.end()) return &exact->second;
  const auto dot = name.find('.');
  if (dot == std::string::npos) return nullptr;
  auto wildcard = by_name_.find("*" + name.substr(dot));
  return wildcard != by_name_.end() ? &wildcard->second : nullptr;
}

}  // namespace sluice::tls
