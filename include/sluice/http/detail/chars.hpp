// sluice/http/detail/chars.hpp: byte classes and small string helpers for the HTTP/1.1 layer.
//
// One 256-entry table instead of chains of comparisons, and runs skipped 8 bytes at a time, so
// that the scanners stay tight loops. Everything here is pure and thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace sluice::http::detail {

enum char_class : std::uint8_t {
  cc_tchar = 1,   // token character (RFC 9110 5.6.2)
  cc_target = 2,  // request-target byte we accept: visible ASCII
  cc_field = 4,   // field-value byte: VCHAR, obs-text, SP, HTAB
  cc_qdtext = 8,  // quoted-string text (RFC 9110 5.6.4) without the backslash
  cc_host = 16,   // Host value: uri-host [":" port], IP-literal brackets included
};

constexpr std::array<std::uint8_t, 256> make_char_table() {
  std::array<std::uint8_t, 256> t{};
  constexpr std::string_view tchar_punct = "!#$%&'*+-.^_`|~";
  for (unsigned c = 0; c < 256; ++c) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    const bool vchar = c >= 0x21 && c <= 0x7e;
    std::uint8_t v = 0;
    if (alpha || digit || tchar_punct.find(static_cast<char>(c)) != std::string_view::npos)
      v |= cc_tchar;
    if (vchar) v |= cc_target;
    if (vchar || c >= 0x80 || c == ' ' || c == '\t') v |= cc_field;
    if ((vchar && c != '"' && c != '\\') || c >= 0x80 || c == ' ' || c == '\t') v |= cc_qdtext;
    if (alpha || digit ||
        std::string_view("-._~%!$&'()*+,;=:[]").find(static_cast<char>(c)) !=
            std::string_view::npos)
      v |= cc_host;
    t[c] = v;
  }
  return t;
}

inline constexpr std::array<std::uint8_t, 256> char_table = make_char_table();

constexpr bool has_class(char c, std::uint8_t cls) noexcept {
  return (char_table[static_cast<unsigned char>(c)] & cls) != 0;
}
constexpr bool is_tchar(char c) noexcept { return has_class(c, cc_tchar); }
constexpr bool is_target_char(char c) noexcept { return has_class(c, cc_target); }
constexpr bool is_field_char(char c) noexcept { return has_class(c, cc_field); }
constexpr bool is_qdtext(char c) noexcept { return has_class(c, cc_qdtext); }
constexpr bool is_host_char(char c) noexcept { return has_class(c, cc_host); }
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

// Runs of field-value and request-target bytes are skipped 8 bytes at a time (SWAR): a word
// passes when no byte is below `low`, equal to DEL, or (for targets) at or above 0x80; only a
// word that fails is looked at byte by byte, where the table decides.
namespace swar {
inline constexpr std::uint64_t ones = 0x0101010101010101u;
inline constexpr std::uint64_t high = 0x8080808080808080u;

inline std::uint64_t load(const char* p) noexcept {
  std::uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
// Non-zero when some byte of x is < n (n <= 128), is 0x7f, or (with `non_ascii`) is >= 0x80.
constexpr std::uint64_t stops(std::uint64_t x, std::uint8_t n, bool non_ascii) noexcept {
  const std::uint64_t del = x ^ (ones * 0x7f);
  return ((x - ones * n) & ~x & high) | ((del - ones) & ~del & high) | (non_ascii ? x & high : 0);
}
}  // namespace swar

template <bool (*accept)(char) noexcept, std::uint8_t low, bool non_ascii>
inline const char* skip_run(const char* p, const char* const end) noexcept {
  for (;;) {
    while (end - p >= 8 && swar::stops(swar::load(p), low, non_ascii) == 0) p += 8;
    const char* const word_end = end - p >= 8 ? p + 8 : end;
    while (p < word_end && accept(*p)) ++p;
    if (p != word_end || p == end) return p;
  }
}

// -1 when not a hex digit.
constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Field-value bytes: stops at CR, LF, other controls and DEL; HTAB goes the slow way.
inline const char* skip_field_chars(const char* p, const char* end) noexcept {
  return skip_run<is_field_char, 0x20, false>(p, end);
}
// Request-target bytes (visible ASCII): stops at SP, controls, DEL and bytes >= 0x80.
inline const char* skip_target_chars(const char* p, const char* end) noexcept {
  return skip_run<is_target_char, 0x21, true>(p, end);
}

// Field names and tokens are ASCII and compared case-insensitively (RFC 9110 5.1, 5.6.2).
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

constexpr std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

constexpr bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

// Calls f(element) for each OWS-trimmed element of a comma-separated list (RFC 9110 5.6.1),
// empty elements included so that callers decide whether they are acceptable. Stops early and
// returns false as soon as f returns false.
template <class F>
constexpr bool for_each_list_element(std::string_view list, F&& f) {
  for (;;) {
    const std::size_t comma = list.find(',');
    if (!f(trim_ows(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace sluice::http::detail
