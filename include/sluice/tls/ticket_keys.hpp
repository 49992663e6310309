// sluice/tls/ticket_keys.hpp: the keys that encrypt TLS session tickets
// (stateless resumption), rotated on a schedule.
//
//     sluice::tls::ticket_keys keys(std::chrono::hours(1));
//     SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, callback_that_calls_keys_crypt);
//     keys.rotate();  // at once, e.g. after a suspected leak
//
// Guarantees
// - A ticket is encrypted (AES-256-CBC) and authenticated (HMAC-SHA256)
//   with the current key; the key before it still decrypts for one more
//   period, so that a ticket lives at most two periods. Tickets under an
//   older or unknown key, or garbled ones, are refused: the client gets a
//   full handshake, never an error.
// - Keys are random (RAND_bytes), made in this process and never written
//   anywhere: a restart invalidates every ticket, and no file can leak them.
// - Rotation happens when a ticket is next encrypted or decrypted after the
//   period has passed (no timer): an idle server does no work for it.
//
// Thread safety: every member may be called from any thread at any time
// (OpenSSL calls crypt() from each connection's handshake).
#pragma once

#include "sluice/config.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>

namespace sluice::tls {

class ticket_keys {
 public:
  using clock = std::chrono::steady_clock;

  explicit ticket_keys(clock::duration period = std::chrono::hours(1));
  ticket_keys(const ticket_keys&) = delete;
  ticket_keys& operator=(const ticket_keys&) = delete;

  // A new current key now; the current one becomes the previous (decrypts
  // only), the previous one is forgotten.
  void rotate();

  // OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb):
  // encrypting (enc = 1) fills `name` and `iv` and returns 1; decrypting
  // returns 1 for the current key, 2 for the previous one (the client gets a
  // fresh ticket), 0 for any other (a full handshake), -1 on failure.
  int crypt(unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher,
            EVP_MAC_CTX* mac, int enc);

  // Implementation

 private:
  struct key {
    std::array<unsigned char, 16> name;
    std::array<unsigned char, 32> aes;
    std::array<unsigned char, 32> hmac;
    clock::time_point made;
  };

  static key fresh(clock::time_point now);
  // Under the lock: rotates once for each period passed (at most twice matters).
  void rotate_if_due(clock::time_point now);
  static bool use(const key& k, unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                  int enc);

  const clock::duration period_;
  std::mutex mutex_;
  key current_;
  std::optional<key> previous_;
};

inline ticket_keys::ticket_keys(clock::duration period) : period_(period), current_(fresh(clock::now())) {
  if (period <= clock::duration::zero()) throw std::invalid_argument("sluice::tls: ticket key period must be positive");
}

inline void ticket_keys::rotate() {
  std::lock_guard lock(mutex_);
  previous_ = current_;
  current_ = fresh(clock::now());
}

inline int ticket_keys::crypt(unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher,
                              EVP_MAC_CTX* mac, int enc) {
  std::lock_guard lock(mutex_);
  rotate_if_due(clock::now());
  if (enc == 1) {
    if (RAND_bytes(iv, 16) != 1) return -1;  // AES-CBC's IV: 16 bytes
    std::memcpy(name, current_.name.data(), current_.name.size());
    return use(current_, iv, cipher, mac, enc) ? 1 : -1;
  }
  if (std::memcmp(name, current_.name.data(), current_.name.size()) == 0)
    return use(current_, iv, cipher, mac, enc) ? 1 : -1;
  if (previous_ && std::memcmp(name, previous_->name.data(), previous_->name.size()) == 0)
    return use(*previous_, iv, cipher, mac, enc) ? 2 : -1;
  return 0;
}

inline ticket_keys::key ticket_keys::fresh(clock::time_point now) {
  key k{};
  if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
      RAND_bytes(k.aes.data(), static_cast<int>(k.aes.size())) != 1 ||
      RAND_bytes(k.hmac.data(), static_cast<int>(k.hmac.size())) != 1)
    throw std::runtime_error("sluice::tls: no random bytes for a ticket key");
  k.made = now;
  return k;
}

inline void ticket_keys::rotate_if_due(clock::time_point now) {
  const auto age = now - current_.made;
  if (age < period_) return;
  // Two periods or more: the current key's decrypting period is over too.
  previous_.reset();
  if (age < 2 * period_) previous_ = current_;
  current_ = fresh(now);
}

inline bool ticket_keys::use(const key& k, unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher,
                             EVP_MAC_CTX* mac, int enc) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(k.hmac.data()), k.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return false;
  return enc == 1 ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1
                  : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1;
}

}  // namespace sluice::tls
