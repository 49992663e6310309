// sluice/http/serialize.hpp: HTTP/1.1 response heads, chunk framing and the Date header.
//
// Appends bytes to a caller-owned std::string (no I/O, no iostreams). The server owns framing:
// Content-Length, Transfer-Encoding and Connection are written from the arguments, never copied
// from the caller's fields. Header names and values are checked so that a response can never be
// split by a CR/LF smuggled into a value (std::invalid_argument, a caller bug).
// All functions are pure except http_date(), which caches per thread; all are thread-safe.
#pragma once

#include "sluice/http/detail/chars.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/fields.hpp"

#include <charconv>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace sluice::http {

// The RFC 9110 reason phrase; empty for unregistered codes (the phrase is optional on the wire).
constexpr std::string_view reason_phrase(unsigned status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return {};
  }
}

enum class framing { none, length, chunked };

namespace detail {

// IMF-fixdate (RFC 9110 5.6.7) of a Unix time, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
inline constexpr std::size_t imf_fixdate_size = 29;

constexpr void format_imf_fixdate(std::int64_t unix_seconds, char* out) noexcept {
  constexpr std::string_view days = "ThuFriSatSunMonTueWed";  // 1970-01-01 was a Thursday
  constexpr std::string_view months = "JanFebMarAprMayJunJulAugSepOctNovDec";
  std::int64_t day = unix_seconds / 86400;
  std::int64_t secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    --day;
  }
  // Civil date from a day count (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
  const std::int64_t z = day + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const auto y = static_cast<unsigned>(static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2));
  const auto wday = static_cast<std::size_t>(((day % 7) + 7) % 7);

  const auto two = [](char* o, unsigned v) {
    o[0] = static_cast<char>('0' + v / 10 % 10);
    o[1] = static_cast<char>('0' + v % 10);
  };
  for (std::size_t i = 0; i < 3; ++i) out[i] = days[wday * 3 + i];
  out[3] = ',';
  out[4] = ' ';
  two(out + 5, d);
  out[7] = ' ';
  for (std::size_t i = 0; i < 3; ++i) out[8 + i] = months[(m - 1) * 3 + i];
  out[11] = ' ';
  two(out + 12, y / 100);
  two(out + 14, y % 100);
  out[16] = ' ';
  two(out + 17, static_cast<unsigned>(secs / 3600));
  out[19] = ':';
  two(out + 20, static_cast<unsigned>(secs / 60 % 60));
  out[22] = ':';
  two(out + 23, static_cast<unsigned>(secs % 60));
  const std::string_view gmt = " GMT";
  for (std::size_t i = 0; i < gmt.size(); ++i) out[25 + i] = gmt[i];
}

inline void append_decimal(std::uint64_t v, std::string& out) {
  char buf[20];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

inline void append_field(std::string_view name, std::string_view value, std::string& out) {
  out.append(name).append(": ").append(value).append("\r\n");
}

inline void check_field(fields::field f) {
  if (!is_token(f.name)) throw std::invalid_argument("sluice::http: invalid header name");
  for (char c : f.value)
    if (!is_field_char(c))
      throw std::invalid_argument("sluice::http: CR, LF or control in header value");
}

// Framing fields come from serialize_head's arguments, never from the caller's list.
inline bool is_framing_field(std::string_view name) noexcept {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
         iequals(name, "connection");
}

}  // namespace detail

// IMF-fixdate of now, formatted at most once per second per thread. The view stays valid on
// this thread until a later call in another second.
inline std::string_view http_date() {
  thread_local std::int64_t cached_second = -1;
  thread_local char cached[detail::imf_fixdate_size];
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  if (now != cached_second) {
    detail::format_imf_fixdate(now, cached);
    cached_second = now;
  }
  return {cached, detail::imf_fixdate_size};
}

// Throws std::invalid_argument for a field serialize_head would reject, so that a caller can
// refuse a response before any of it is written.
inline void check_fields(const fields& headers) {
  for (const fields::field field : headers) detail::check_field(field);
}

// Appends a complete response head:
//   "HTTP/1.1 <status> <reason>\r\n", the caller's headers (minus Content-Length,
//   Transfer-Encoding, Connection), "Date" unless given, then framing: "Content-Length: n" for
//   framing::length, "Transfer-Encoding: chunked" for framing::chunked (neither for 1xx, 204,
//   304, which have no content), "Connection: close" when !keep_alive or "Connection:
//   keep-alive" for an HTTP/1.0 client kept alive, and the empty line.
// framing::length with no body following is how a HEAD response is written. framing::none
// means no content or a body delimited by closing (then pass keep_alive = false). Chunked
// needs an HTTP/1.1 client. A 101 keeps the caller's Connection (e.g. "upgrade") as is.
inline void serialize_head(unsigned status, const fields& headers, framing f,
                           std::uint64_t content_length, bool keep_alive, bool http10_client,
                           std::string& out) {
  const bool interim = status < 200;
  const bool no_content = interim || status == 204 || status == 304;
  out.append("HTTP/1.1 ");
  detail::append_decimal(status, out);
  out.push_back(' ');
  out.append(reason_phrase(status)).append("\r\n");

  bool has_date = false;
  for (const fields::field field : headers) {
    detail::check_field(field);
    if (detail::is_framing_field(field.name) &&
        !(status == 101 && detail::iequals(field.name, "connection")))
      continue;
    has_date = has_date || detail::iequals(field.name, "date");
    detail::append_field(field.name, field.value, out);
  }
  if (!has_date) detail::append_field("Date", http_date(), out);
  if (!no_content && f == framing::length) {
    out.append("Content-Length: ");
    detail::append_decimal(content_length, out);
    out.append("\r\n");
  } else if (!no_content && f == framing::chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  }
  if (!interim && !keep_alive) out.append("Connection: close\r\n");
  if (!interim && keep_alive && http10_client) out.append("Connection: keep-alive\r\n");
  out.append("\r\n");
}

// One chunk: "<hex size>\r\n<data>\r\n"; nothing for empty data, which would end the body.
inline void append_chunk(std::string_view data, std::string& out) {
  if (data.empty()) return;
  char buf[16];
  const auto r = std::to_chars(buf, buf + sizeof buf, data.size(), 16);
  out.append(buf, r.ptr).append("\r\n").append(data).append("\r\n");
}

inline constexpr std::string_view last_chunk = "0\r\n\r\n";

// A complete error response that closes the connection, with a one-line text body naming the
// problem, e.g. "400 Bad Request: bare CR (CR not followed by LF)\n".
inline void serialize_error(unsigned status, std::string_view what, std::string& out) {
  std::string body;
  detail::append_decimal(status, body);
  body.push_back(' ');
  body.append(reason_phrase(status));
  if (!what.empty()) body.append(": ").append(what);
  body.push_back('\n');
  fields headers;
  headers.add("Content-Type", "text/plain; charset=utf-8");
  serialize_head(status, headers, framing::length, body.size(), false, false, out);
  out.append(body);
}

// The response for a parse error: its status (see status_for) and its message.
inline void serialize_error(std::error_code ec, std::string& out) {
  serialize_error(status_for(ec), ec.message(), out);
}

}  // namespace sluice::http
