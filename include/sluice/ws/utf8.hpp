// sluice/ws/utf8.hpp: incremental UTF-8 validation (RFC 3629), for WebSocket text messages and
// close reasons (RFC 6455 8.1: invalid UTF-8 fails the connection with 1007).
//
// Guarantee: feed() accepts exactly the byte sequences that are a prefix of well-formed UTF-8
// (no overlong forms, no surrogates, nothing above U+10FFFF), however the bytes are split across
// calls, so a text message is checked fragment by fragment as it arrives, and fails at the first
// byte that cannot lead anywhere valid. complete() says whether the bytes end on a character
// boundary. No allocation; a validator is 3 bytes.
//
//     sluice::ws::utf8_validator v;
//     bool ok = v.feed("\xE2\x82") && v.feed("\xAC") && v.complete();  // "€" in two pieces
//
// Thread safety: a validator is a plain value; use one from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace sluice::ws {

class utf8_validator {
 public:
  // False once the bytes fed so far cannot be a prefix of valid UTF-8; stays false.
  bool feed(std::string_view bytes) noexcept;
  // True when the bytes fed so far are valid UTF-8 that ends on a character boundary.
  bool complete() const noexcept { return need_ == 0 && !failed_; }
  void reset() noexcept { *this = utf8_validator{}; }

 private:
  bool step(std::uint8_t byte) noexcept;

  std::uint8_t need_ = 0;  // continuation bytes still expected
  std::uint8_t lo_ = 0x80;  // the range the next continuation byte must be in
  std::uint8_t hi_ = 0xBF;
  bool failed_ = false;
};

// Whether `bytes` is valid UTF-8 on its own.
inline bool is_valid_utf8(std::string_view bytes) noexcept {
  utf8_validator v;
  return v.feed(bytes) && v.complete();
}

// Implementation

inline bool utf8_validator::feed(std::string_view bytes) noexcept {
  if (failed_) return false;
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  while (p != end) {
    // Most text is ASCII: take 8 bytes at a time while between characters.
    if (need_ == 0) {
      while (end - p >= 8) {
        std::uint64_t word;
        std::memcpy(&word, p, 8);
        if (word & 0x8080808080808080ull) break;
        p += 8;
      }
      if (p == end) break;
    }
    if (!step(static_cast<std::uint8_t>(*p++))) return !(failed_ = true);
  }
  return true;
}

inline bool utf8_validator::step(std::uint8_t b) noexcept {
  if (need_ != 0) {
    if (b < lo_ || b > hi_) return false;
    --need_;
    lo_ = 0x80;
    hi_ = 0xBF;
    return true;
  }
  if (b < 0x80) return true;
  // The second byte's range rules out overlong forms (E0, F0), surrogates (ED) and code points
  // above U+10FFFF (F4) (RFC 3629 4).
  if (b >= 0xC2 && b <= 0xDF) {
    need_ = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need_ = 2;
    if (b == 0xE0) lo_ = 0xA0;
    if (b == 0xED) hi_ = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need_ = 3;
    if (b == 0xF0) lo_ = 0x90;
    if (b == 0xF4) hi_ = 0x8F;
  } else {
    return false;
  }
  return true;
}

}  // namespace sluice::ws
