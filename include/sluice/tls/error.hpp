// sluice/tls/error.hpp: OpenSSL's errors as std::error_code, for what the
// TLS transport (net/tls.hpp) reports.
//
//     if (ec == sluice::tls::stream_truncated()) ...  // TCP ended without close_notify
//
// Guarantees
// - An error of this category holds OpenSSL's packed error code (lib and
//   reason, ERR_PACK); its message is OpenSSL's reason string.
// - stream_truncated() is OpenSSL 3's own code for an end of TCP without
//   close_notify, so the same condition compares equal however it arose.
//
// Thread safety: everything here may be used from any thread.
#pragma once

#include "sluice/config.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <string>
#include <system_error>

namespace sluice::tls {

const std::error_category& openssl_category() noexcept;

// The error_code of an OpenSSL error (ERR_get_error's value).
inline std::error_code openssl_error(unsigned long packed) noexcept {
  return {static_cast<int>(packed), openssl_category()};
}

// The peer ended TCP without sending close_notify.
inline std::error_code stream_truncated() noexcept {
  return openssl_error(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING));
}

// Implementation

namespace detail {

class openssl_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sluice.openssl"; }
  std::string message(int value) const override {
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(value));
    return reason ? reason : "OpenSSL error " + std::to_string(value);
  }
};

}  // namespace detail

inline const std::error_category& openssl_category() noexcept {
  static const detail::openssl_category_impl category;
  return category;
}

}  // namespace sluice::tls
