// sluice/http/parser.hpp: incremental, strict HTTP/1.1 request parser with no I/O.
//
// Pure bytes in, a request head and body bytes out. Strict by default (RFC 9112 and the
// request-smuggling rules): CRLF only, no obs-fold, no bare CR, token methods and field names,
// one unambiguous body length, chunked as the final and only transfer coding. Every byte is
// scanned once and validated as it arrives, so a bad byte or an exceeded limit is reported as
// soon as it is received, not at the end of the line. No exceptions on bad input; allocations
// only grow the head's storage, which reset() keeps for the next message.
//
// Request-targets (RFC 9112 3.2): origin-form and "*" for any method, absolute-form with an http
// or https scheme, an authority and no userinfo (RFC 9110 4.2.4), and CONNECT's authority-form
// (host ":" port) only; anything else is a 400. The target's authority wins over Host.
//
// Chunk framing is bounded per message: size lines, extensions, the CRLFs after data and the
// trailers may exceed the body bytes received so far by at most max_chunk_framing (413 beyond).
// Chunks whose data is at least as long as their framing never hit it; a flood of extensions or
// of tiny chunks does, so every wire byte of a chunked body is either body, bounded by max_body,
// or framing, bounded by max_body + max_chunk_framing (the class of CVE-2024-22019).
//
// One parser per connection; not thread-safe.
#pragma once

#include "sluice/http/detail/chars.hpp"
#include "sluice/http/detail/field_scanner.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/fields.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace sluice::http {

struct parser_limits {
  std::size_t max_target = 8 * 1024;         // longer request-target: 414
  std::size_t max_head_bytes = 16 * 1024;    // request line + header section: 431
  std::size_t max_header_count = 100;        // 431 (also bounds the trailer count)
  std::uint64_t max_body = 8 * 1024 * 1024;  // declared or chunked total: 413
  std::size_t max_chunk_line = 4 * 1024;     // chunk-size line incl. extensions and CRLF: 400
  std::size_t max_trailer_bytes = 8 * 1024;  // 431
  // Chunk framing (size lines, extensions, CRLFs, trailers) allowed beyond the body bytes
  // received so far, per message: 413. Node allows 16 KiB of extensions per message.
  std::size_t max_chunk_framing = 16 * 1024;
  // RFC 9112 3.2: an HTTP/1.1 request without Host is a 400. A server-side policy more than a
  // syntax rule: a parser used behind a proxy or for testing may turn it off.
  bool require_host = true;
};

enum class body_kind { none, length, chunked };

class request_parser;

struct request_head {
  // Views into storage owned by this object: valid until the parser's next reset(), and they
  // follow the object when it is copied or moved.
  std::string_view method;
  std::string_view target;  // as received
  // The target's authority: absolute-form's, or CONNECT's authority-form (the whole target).
  // Empty for origin-form and "*", whose authority is Host's (see request::authority()).
  std::string_view authority;
  // The target as origin-form: path and query, "/" first when absolute-form has an empty path;
  // "*" for asterisk-form; empty for CONNECT.
  std::string_view path_and_query;
  int version_minor = 1;  // HTTP/1.0 or HTTP/1.1
  int version_major = 1;  // 2 for a head built from HTTP/2 fields (assign_line), minor 0
  fields headers;
  body_kind body = body_kind::none;  // Content-Length: 0 is body_kind::none
  std::uint64_t content_length = 0;  // when body == length
  bool keep_alive = true;            // 1.1: unless Connection: close; 1.0: only with keep-alive
  bool expect_continue = false;      // Expect: 100-continue on HTTP/1.1 with a body
  // CONNECT, PRI (the HTTP/2 preface), or Upgrade with Connection: upgrade on HTTP/1.1. After
  // this message (head and body, if any) the server may hand the connection over; the parser
  // does not look at the bytes that follow it.
  bool upgrade = false;

  request_head() = default;
  request_head(const request_head& other) { *this = other; }
  request_head(request_head&& other) noexcept { *this = std::move(other); }

  request_head& operator=(const request_head& other) {
    if (this == &other) return *this;
    line_ = other.line_;
    copy_members(other);
    headers = other.headers;
    return *this;
  }

  // A head built from parts rather than parsed (HTTP/2's pseudo-header
  // fields): the three are copied into the head's own storage, and
  // path_and_query is the target, except for CONNECT (none).
  void assign_line(std::string_view m, std::string_view t, std::string_view a) {
    line_.assign(m).append(t).append(a);
    method = std::string_view(line_).substr(0, m.size());
    target = std::string_view(line_).substr(m.size(), t.size());
    authority = std::string_view(line_).substr(m.size() + t.size());
    path_and_query = m == "CONNECT" ? std::string_view{} : target;
  }

  request_head& operator=(request_head&& other) noexcept {
    if (this == &other) return *this;
    const std::string_view old_line = other.line_;  // where the views point before the move
    line_ = std::move(other.line_);
    copy_members(other, old_line);
    headers = std::move(other.headers);
    return *this;
  }

 private:
  friend class request_parser;

  void copy_members(const request_head& other) { copy_members(other, other.line_); }

  void copy_members(const request_head& other, std::string_view other_line) noexcept {
    method = rebase(other.method, other_line);
    target = rebase(other.target, other_line);
    authority = rebase(other.authority, other_line);
    path_and_query = rebase(other.path_and_query, other_line);
    version_minor = other.version_minor;
    version_major = other.version_major;
    body = other.body;
    content_length = other.content_length;
    keep_alive = other.keep_alive;
    expect_continue = other.expect_continue;
    upgrade = other.upgrade;
  }

  // A view into the other object's storage becomes the same view into ours; a view set by the
  // user to point elsewhere is kept as is.
  std::string_view rebase(std::string_view v, std::string_view other_line) const noexcept {
    const std::less_equal<const char*> le;
    if (v.data() == nullptr || !le(other_line.data(), v.data()) ||
        !le(v.data() + v.size(), other_line.data() + other_line.size()))
      return v;
    return {line_.data() + (v.data() - other_line.data()), v.size()};
  }

  void clear() noexcept {
    line_.clear();
    method = target = authority = path_and_query = {};
    version_minor = 1;
    version_major = 1;
    headers.clear();
    body = body_kind::none;
    content_length = 0;
    keep_alive = true;
    expect_continue = upgrade = false;
  }

  std::string line_;  // method, target, then "/" and the query when absolute-form has no path
};

class request_parser {
 public:
  explicit request_parser(parser_limits limits = {}) : limits_(limits) {}

  enum class status { need_more, head_done, body_data, message_done, error };

  // Head phase. `buffered` holds every byte of the current message received so far, from its
  // first byte; each call passes the same prefix plus new bytes (the buffer may have moved).
  // Only the new bytes are scanned. Empty lines (CRLF) before the request line are skipped
  // (RFC 9112 2.2) and count as part of the head. On head_done, head() is filled and the first
  // head_size() bytes of `buffered` were the head; calling again returns head_done. A target
  // over max_target (414) or a head over max_head_bytes (431) fails as soon as the byte that
  // exceeds the limit is passed in, whatever follows.
  status parse_head(std::string_view buffered) {
    if (msg_.in == phase::failed) return status::error;
    if (msg_.in != phase::head) return status::head_done;
    if (buffered.size() <= msg_.scanned) return status::need_more;

    const char* const base = buffered.data();
    const char* const end = base + std::min(buffered.size(), limits_.max_head_bytes);
    const char* p = base + msg_.scanned;
    if (msg_.line != line_state::fields) {
      p = scan_request_line(p, end);
      if (msg_.in == phase::failed) return status::error;
    }
    if (msg_.line == line_state::fields) {
      const auto r = scanner_.scan(
          p, end, head_.headers,
          [this](std::string_view name, std::string_view value) { return on_header(name, value); });
      if (r.res == detail::field_scanner::result::error) return fail(r.err);
      p = r.stop;
      if (r.res == detail::field_scanner::result::done) {
        msg_.scanned = static_cast<std::size_t>(p - base);
        return finish_head();
      }
    }
    msg_.scanned = static_cast<std::size_t>(p - base);
    if (buffered.size() > limits_.max_head_bytes) return fail(http::error::headers_too_large);
    return status::need_more;
  }

  std::size_t head_size() const noexcept { return msg_.scanned; }
  const request_head& head() const noexcept { return head_; }
  request_head& head() noexcept { return head_; }

  struct body_result {
    status st;
    std::size_t consumed;
    std::string_view data;
  };

  // Body phase, after head_done. Consumes framing and body bytes from `in`:
  // - body_data: `data` (a view into `in`) is body; `consumed` bytes were used, call again
  //   with the rest.
  // - message_done: the message is complete (`data` may hold its last bytes); the next
  //   pipelined message starts at `consumed`.
  // - need_more: all of `in` was consumed (`data` may hold body bytes).
  // - error: error() tells why.
  // Chunk extensions are validated and ignored; trailers go to trailers().
  body_result parse_body(std::string_view in) {
    switch (msg_.in) {
      case phase::failed: return {status::error, 0, {}};
      case phase::head:  // called before head_done: a bug in the caller, hence not a 4xx
        fail(std::make_error_code(std::errc::operation_not_permitted));
        return {status::error, 0, {}};
      case phase::done: return {status::message_done, 0, {}};
      case phase::body: break;
    }
    if (head_.body == body_kind::length) return parse_length_body(in);
    return parse_chunked_body(in);
  }

  const fields& trailers() const noexcept { return trailers_; }
  std::uint64_t body_bytes_seen() const noexcept { return msg_.body_seen; }
  // Bytes of the body consumed so far as they were on the wire: the body and its chunk framing.
  std::uint64_t body_wire_bytes() const noexcept { return msg_.body_seen + msg_.framing_seen; }
  std::error_code error() const noexcept { return msg_.error; }
  const parser_limits& limits() const noexcept { return limits_; }

  // Prepares for the next message on the same connection; keeps allocated capacity.
  void reset() noexcept {
    msg_ = {};
    scanner_.reset();
    head_.clear();
    trailers_.clear();
  }

 private:
  enum class phase : std::uint8_t { head, body, done, failed };
  enum class line_state : std::uint8_t {
    start,
    start_lf,
    method,
    target,
    version,
    line_cr,
    line_lf,
    fields
  };
  enum class chunk_state : std::uint8_t {
    size_start,
    size,
    ext_bws,
    ext_name_start,
    ext_name,
    ext_after_name,
    ext_value_start,
    ext_value_token,
    ext_quoted,
    ext_quoted_pair,
    ext_after_quoted,
    size_lf,
    data,
    data_cr,
    data_lf,
    trailers
  };

  static constexpr std::string_view version_prefix = "HTTP/";

  status fail(std::error_code ec) noexcept {
    msg_.error = ec;
    msg_.in = phase::failed;
    return status::error;
  }
  status fail(http::error e) noexcept { return fail(make_error_code(e)); }

  // Request line --------------------------------------------------------------------------

  // Returns where scanning stopped; on a bad byte the parser has failed.
  const char* scan_request_line(const char* p, const char* const end) {
    while (p < end) {
      switch (msg_.line) {
        case line_state::start:
          if (*p == '\r') {
            ++p;
            msg_.line = line_state::start_lf;
            break;
          }
          if (!detail::is_tchar(*p))
            return failed(p, *p == '\n' ? http::error::bare_lf : http::error::invalid_method);
          msg_.line = line_state::method;
          [[fallthrough]];
        case line_state::method: {
          const char* const run = p;
          while (p < end && detail::is_tchar(*p)) ++p;
          head_.line_.append(run, static_cast<std::size_t>(p - run));
          if (p == end) break;
          if (*p != ' ') return failed(p, http::error::invalid_method);
          msg_.method_len = head_.line_.size();
          msg_.line = line_state::target;
          ++p;
          break;
        }
        case line_state::target: {
          const char* const run = p;
          p = detail::skip_target_chars(p, end);
          head_.line_.append(run, static_cast<std::size_t>(p - run));
          const std::size_t target_len = head_.line_.size() - msg_.method_len;
          if (target_len > limits_.max_target) return failed(p, http::error::uri_too_long);
          if (p == end) break;
          if (*p != ' ' || target_len == 0) return failed(p, target_error(*p));
          if (const http::error e = split_target(); e != detail::ok) return failed(p, e);
          msg_.line = line_state::version;
          ++p;
          break;
        }
        case line_state::version:
          if (msg_.version_index == 0 && end - p >= 8 && std::memcmp(p, "HTTP/1.", 7) == 0 &&
              (p[7] == '0' || p[7] == '1')) {  // the usual case at once; others byte by byte
            msg_.version_major = 1;
            msg_.version_minor = p[7] - '0';
            msg_.version_index = 8;
            msg_.line = line_state::line_cr;
            p += 8;
            break;
          }
          if (!version_byte(*p)) return failed(p, http::error::invalid_version);
          ++p;
          if (msg_.version_index == version_prefix.size() + 3 && !version_supported())
            return failed(p, http::error::unsupported_version);
          break;
        case line_state::line_cr:
          if (*p != '\r')
            return failed(p, *p == '\n' ? http::error::bare_lf : http::error::invalid_version);
          ++p;
          msg_.line = line_state::line_lf;
          break;
        case line_state::start_lf:
        case line_state::line_lf:
          if (*p != '\n') return failed(p, http::error::bare_cr);
          ++p;
          msg_.line = msg_.line == line_state::start_lf ? line_state::start : line_state::fields;
          break;
        case line_state::fields: return p;
      }
    }
    return p;
  }

  const char* failed(const char* p, http::error e) noexcept {
    fail(e);
    return p;
  }

  http::error target_error(char c) const noexcept {
    if (c == '\r' || c == '\n') return http::error::missing_version;  // HTTP/0.9 "GET /"
    return http::error::invalid_target;                               // also an empty target
  }

  // "HTTP/" DIGIT "." DIGIT, one byte at a time so that garbage is caught as it arrives.
  bool version_byte(char c) noexcept {
    const std::size_t i = msg_.version_index++;
    if (i < version_prefix.size()) return c == version_prefix[i];
    const bool digit = c >= '0' && c <= '9';
    if (i == version_prefix.size()) {
      msg_.version_major = c - '0';
      return digit;
    }
    if (i == version_prefix.size() + 1) return c == '.';
    msg_.version_minor = c - '0';
    msg_.line = line_state::line_cr;
    return digit;
  }

  bool version_supported() const noexcept {
    return msg_.version_major == 1 && (msg_.version_minor == 0 || msg_.version_minor == 1);
  }

  // Header fields -------------------------------------------------------------------------

  http::error on_header(std::string_view name, std::string_view value) {
    if (head_.headers.size() > limits_.max_header_count) return http::error::too_many_headers;
    using detail::iequals;
    switch (name.size()) {  // the length rules out most names without comparing bytes
      case 4:
        if (iequals(name, "host")) return on_host(value);
        break;
      case 6:
        if (iequals(name, "expect")) on_expect(value);
        break;
      case 7:
        if (iequals(name, "upgrade")) msg_.upgrade_field = true;
        break;
      case 10:
        if (iequals(name, "connection")) on_connection(value);
        break;
      case 14:
        if (iequals(name, "content-length")) return on_content_length(value);
        break;
      case 17:
        if (iequals(name, "transfer-encoding")) return on_transfer_encoding(value);
        break;
      default: break;
    }
    return detail::ok;
  }

  http::error on_host(std::string_view value) noexcept {
    if (++msg_.host_count > 1) return http::error::duplicate_host;
    for (char c : value)
      if (!detail::is_host_char(c)) return http::error::invalid_host;
    return detail::ok;
  }

  void on_expect(std::string_view value) {
    detail::for_each_list_element(value, [this](std::string_view expectation) {
      msg_.expect_100 = msg_.expect_100 || detail::iequals(expectation, "100-continue");
      return true;
    });
  }

  void on_connection(std::string_view value) {
    detail::for_each_list_element(value, [this](std::string_view option) {
      msg_.conn_close = msg_.conn_close || detail::iequals(option, "close");
      msg_.conn_keep_alive = msg_.conn_keep_alive || detail::iequals(option, "keep-alive");
      msg_.conn_upgrade = msg_.conn_upgrade || detail::iequals(option, "upgrade");
      return true;
    });
  }

  // RFC 9110 8.6: a list of identical values ("5, 5"), or repeated identical fields, is one
  // length; anything else is ambiguous framing.
  http::error on_content_length(std::string_view value) noexcept {
    if (msg_.te_seen) return http::error::content_length_with_transfer_encoding;
    http::error result = detail::ok;
    detail::for_each_list_element(value, [&](std::string_view element) {
      std::uint64_t n = 0;
      result = parse_decimal(element, n);
      if (result == detail::ok && msg_.content_length_seen && n != msg_.content_length)
        result = http::error::conflicting_content_length;
      msg_.content_length = n;
      msg_.content_length_seen = true;
      return result == detail::ok;
    });
    if (result == detail::ok && msg_.content_length > limits_.max_body)
      return http::error::body_too_large;
    return result;
  }

  static http::error parse_decimal(std::string_view s, std::uint64_t& out) noexcept {
    if (s.empty()) return http::error::invalid_content_length;
    std::uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return http::error::invalid_content_length;
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10)
        return http::error::content_length_overflow;
      v = v * 10 + digit;
    }
    out = v;
    return detail::ok;
  }

  // RFC 9112 6.1/6.3: chunked must be the final coding and appear once; any other coding is
  // one we cannot decode (501) unless it follows chunked, which leaves the length unknown (400).
  http::error on_transfer_encoding(std::string_view value) noexcept {
    if (msg_.content_length_seen) return http::error::content_length_with_transfer_encoding;
    if (msg_.version_minor == 0) return http::error::transfer_encoding_in_http10;
    msg_.te_seen = true;
    http::error result = detail::ok;
    detail::for_each_list_element(value, [&](std::string_view element) {
      if (element.empty()) return true;  // RFC 9110 5.6.1: empty list elements are ignored
      const std::size_t semicolon = element.find(';');
      const std::string_view coding = detail::trim_ows(element.substr(0, semicolon));
      if (!detail::is_token(coding))
        result = http::error::invalid_transfer_encoding;
      else if (msg_.te_chunked)
        result = detail::iequals(coding, "chunked") ? http::error::chunked_twice
                                                    : http::error::chunked_not_final;
      else if (detail::iequals(coding, "chunked"))
        msg_.te_chunked = true;
      else
        msg_.te_other = true;
      if (msg_.te_chunked && semicolon != std::string_view::npos)
        result = http::error::invalid_transfer_encoding;  // chunked takes no parameters
      return result == detail::ok;
    });
    return result;
  }

  status finish_head() {
    if (msg_.version_minor == 1 && limits_.require_host && msg_.host_count == 0)
      return fail(http::error::missing_host);
    if (msg_.te_seen && !msg_.te_chunked) return fail(http::error::chunked_not_final);
    if (msg_.te_seen && msg_.te_other) return fail(http::error::unsupported_transfer_encoding);

    request_head& h = head_;
    set_line_views();
    h.version_minor = msg_.version_minor;
    if (msg_.te_seen) {
      h.body = body_kind::chunked;
    } else if (msg_.content_length > 0) {
      h.body = body_kind::length;
      h.content_length = msg_.content_length;
    }
    h.keep_alive =
        msg_.version_minor == 1 ? !msg_.conn_close : msg_.conn_keep_alive && !msg_.conn_close;
    if (h.method == "CONNECT") {  // RFC 9110 9.3.6: CONNECT has no content; the tunnel follows
      h.body = body_kind::none;
      h.content_length = 0;
      h.upgrade = true;
    } else {
      h.upgrade =
          h.method == "PRI" || (msg_.version_minor == 1 && msg_.upgrade_field && msg_.conn_upgrade);
    }
    h.expect_continue = msg_.version_minor == 1 && msg_.expect_100 && h.body != body_kind::none;
    msg_.remaining = h.content_length;
    msg_.in = h.body == body_kind::none ? phase::done : phase::body;
    return status::head_done;
  }

  // Request-target ------------------------------------------------------------------------

  // Finds the target's form and parts (RFC 9112 3.2), once it is whole in the line. For
  // absolute-form without a path, "/" and the rest are appended to the line, so that
  // path_and_query is one view.
  http::error split_target() {
    std::string& line = head_.line_;
    const std::string_view target = std::string_view(line).substr(msg_.method_len);
    msg_.target_len = target.size();
    msg_.origin_pos = msg_.method_len;
    if (line.compare(0, msg_.method_len, "CONNECT") == 0) {  // authority-form only (3.2.3)
      msg_.authority_pos = msg_.method_len;
      msg_.authority_len = target.size();
      msg_.origin_pos = line.size();  // no path
      return check_authority(target, true);
    }
    if (target.front() == '/' || target == "*") return detail::ok;
    const std::size_t colon = scheme_end(target);
    if (colon == std::string_view::npos) return http::error::invalid_target_form;
    const std::string_view scheme = target.substr(0, colon);
    if (!detail::iequals(scheme, "http") && !detail::iequals(scheme, "https"))
      return http::error::unsupported_target_scheme;
    if (target.substr(colon + 1, 2) != "//") return http::error::invalid_target_authority;
    const std::size_t begin = colon + 3;
    const std::size_t end = std::min(target.find_first_of("/?#", begin), target.size());
    if (const http::error e = check_authority(target.substr(begin, end - begin), false);
        e != detail::ok)
      return e;
    msg_.authority_pos = msg_.method_len + begin;
    msg_.authority_len = end - begin;
    msg_.origin_pos = msg_.method_len + end;
    if (end == target.size() || target[end] != '/') {
      const std::size_t query_len = target.size() - end;  // "?q" or "#f", if any
      line.push_back('/');  // `target` may dangle from here
      line.append(line, msg_.origin_pos, query_len);
      msg_.origin_pos = line.size() - query_len - 1;
    }
    return detail::ok;
  }

  // The head's views into its line, where split_target() found the parts.
  void set_line_views() noexcept {
    const std::string_view line(head_.line_);
    head_.method = line.substr(0, msg_.method_len);
    head_.target = line.substr(msg_.method_len, msg_.target_len);
    head_.authority = line.substr(msg_.authority_pos, msg_.authority_len);
    head_.path_and_query = line.substr(msg_.origin_pos);
  }

  // Where the ':' after a URI scheme is (RFC 3986 3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" /
  // "." )), or npos when the target does not start with one.
  static std::size_t scheme_end(std::string_view target) noexcept {
    const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (!alpha(target.front())) return std::string_view::npos;
    for (std::size_t i = 1; i < target.size(); ++i) {
      const char c = target[i];
      if (c == ':') return i;
      if (!alpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.') break;
    }
    return std::string_view::npos;
  }

  // authority = host [ ":" port ] (RFC 3986 3.2), the host not empty (RFC 9110 4.2.1) and no
  // userinfo: deprecated, and a way to make a URI look like another host's (RFC 9110 4.2.4).
  static http::error check_authority(std::string_view authority, bool port_required) noexcept {
    if (authority.find('@') != std::string_view::npos) return http::error::userinfo_in_target;
    const bool literal = !authority.empty() && authority.front() == '[';  // IPv6 or IPvFuture
    std::size_t host_end = authority.find(literal ? ']' : ':');
    if (literal && host_end != std::string_view::npos) ++host_end;
    host_end = std::min(host_end, authority.size());
    const std::string_view host = authority.substr(0, host_end);
    std::string_view port = authority.substr(host_end);
    const std::string_view name = literal ? host.substr(1, host.size() - 2) : host;
    if (name.empty() || (literal && host.back() != ']') ||
        name.find_first_of("[]") != std::string_view::npos ||
        !std::all_of(name.begin(), name.end(), detail::is_host_char))
      return http::error::invalid_target_authority;
    if (!port.empty() && port.front() != ':') return http::error::invalid_target_authority;
    if (!port.empty()) port.remove_prefix(1);
    const bool digits =
        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || (port_required && port.empty())) return http::error::invalid_target_authority;
    return detail::ok;
  }

  // Body ----------------------------------------------------------------------------------

  body_result parse_length_body(std::string_view in) noexcept {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(msg_.remaining, in.size()));
    msg_.remaining -= n;
    msg_.body_seen += n;
    if (msg_.remaining > 0) return {status::need_more, n, in.substr(0, n)};
    msg_.in = phase::done;
    return {status::message_done, n, in.substr(0, n)};
  }

  body_result parse_chunked_body(std::string_view in) {
    const char* const begin = in.data();
    const char* const end = begin + in.size();
    const char* p = begin;
    std::string_view data;
    while (true) {
      if (msg_.chunk == chunk_state::data) {
        if (p == end) break;
        // A second chunk's data is not contiguous with the first: hand the first one over.
        if (!data.empty()) return {status::body_data, static_cast<std::size_t>(p - begin), data};
        const auto n = static_cast<std::size_t>(
            std::min<std::uint64_t>(msg_.chunk_size, static_cast<std::size_t>(end - p)));
        data = std::string_view(p, n);
        p += n;
        msg_.chunk_size -= n;
        msg_.body_seen += n;
        if (msg_.chunk_size == 0) msg_.chunk = chunk_state::data_cr;
        continue;
      }
      if (p == end) break;
      if (msg_.chunk == chunk_state::trailers) {
        const std::size_t trailer_budget = limits_.max_trailer_bytes - msg_.trailer_bytes;
        const std::uint64_t budget = std::min<std::uint64_t>(trailer_budget, framing_budget());
        const char* const stop = static_cast<std::uint64_t>(end - p) > budget
                                     ? p + static_cast<std::size_t>(budget)
                                     : end;
        const auto r =
            scanner_.scan(p, stop, trailers_, [this](std::string_view, std::string_view) {
              return trailers_.size() > limits_.max_header_count ? http::error::too_many_headers
                                                                 : detail::ok;
            });
        if (r.res == detail::field_scanner::result::error) return failed_body(r.err);
        msg_.trailer_bytes += static_cast<std::size_t>(r.stop - p);
        msg_.framing_seen += static_cast<std::size_t>(r.stop - p);
        p = r.stop;
        if (r.res == detail::field_scanner::result::done) {
          msg_.in = phase::done;
          return {status::message_done, static_cast<std::size_t>(p - begin), data};
        }
        if (stop != end)
          return failed_body(msg_.trailer_bytes == limits_.max_trailer_bytes
                                 ? http::error::trailers_too_large
                                 : http::error::chunk_framing_too_large);
        continue;
      }
      if (const http::error e = chunk_byte(*p); e != detail::ok) return failed_body(e);
      ++p;
    }
    return {status::need_more, in.size(), data};
  }

  body_result failed_body(http::error e) noexcept {
    fail(e);
    return {status::error, 0, {}};
  }

  // One byte of chunk framing outside the data: the chunk-size line and the CRLF after data.
  // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 7.1), with
  // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
  http::error chunk_byte(char c) noexcept {
    using detail::is_ows;
    using detail::is_tchar;
    using cs = chunk_state;
    if (framing_budget() == 0) return http::error::chunk_framing_too_large;
    ++msg_.framing_seen;
    if (msg_.chunk == cs::data_cr)
      return to(c == '\r', cs::data_lf, http::error::missing_chunk_crlf);
    if (msg_.chunk == cs::data_lf) return to(c == '\n', cs::size_start, http::error::bare_cr);
    if (++msg_.chunk_line_len > limits_.max_chunk_line) return http::error::chunk_line_too_long;
    if (c == '\n' && msg_.chunk != cs::size_lf) return http::error::bare_lf;
    switch (msg_.chunk) {
      case cs::size_start:
        if (detail::hex_value(c) < 0) return http::error::invalid_chunk_size;
        msg_.chunk = cs::size;
        return add_hex_digit(detail::hex_value(c));
      case cs::size:
        if (detail::hex_value(c) >= 0) return add_hex_digit(detail::hex_value(c));
        if (c == ';' || c == '\r' || is_ows(c)) return after_extension(c);
        return http::error::invalid_chunk_size;
      case cs::ext_bws:
        if (is_ows(c)) return detail::ok;
        return to(c == ';', cs::ext_name_start, http::error::invalid_chunk_extension);
      case cs::ext_name_start:
        if (is_ows(c)) return detail::ok;
        return to(is_tchar(c), cs::ext_name, http::error::invalid_chunk_extension);
      case cs::ext_name:
        if (is_tchar(c)) return detail::ok;
        if (c == '=') return to(true, cs::ext_value_start, detail::ok);
        if (is_ows(c)) return to(true, cs::ext_after_name, detail::ok);
        return after_extension(c);
      case cs::ext_after_name:
        if (is_ows(c)) return detail::ok;
        if (c == '=') return to(true, cs::ext_value_start, detail::ok);
        return to(c == ';', cs::ext_name_start, http::error::invalid_chunk_extension);
      case cs::ext_value_start:
        if (is_ows(c)) return detail::ok;
        if (c == '"') return to(true, cs::ext_quoted, detail::ok);
        return to(is_tchar(c), cs::ext_value_token, http::error::invalid_chunk_extension);
      case cs::ext_value_token:
        if (is_tchar(c)) return detail::ok;
        return after_extension(c);
      case cs::ext_quoted:
        if (c == '\\') return to(true, cs::ext_quoted_pair, detail::ok);
        if (c == '"') return to(true, cs::ext_after_quoted, detail::ok);
        return to(detail::is_qdtext(c), cs::ext_quoted, http::error::invalid_chunk_extension);
      case cs::ext_quoted_pair:
        return to(detail::is_field_char(c), cs::ext_quoted, http::error::invalid_chunk_extension);
      case cs::ext_after_quoted: return after_extension(c);
      case cs::size_lf:
        if (c != '\n') return http::error::bare_cr;
        msg_.chunk_line_len = 0;
        msg_.chunk = msg_.chunk_size == 0 ? cs::trailers : cs::data;
        return detail::ok;
      case cs::data:
      case cs::data_cr:
      case cs::data_lf:
      case cs::trailers: break;
    }
    return detail::ok;
  }

  // Framing bytes the message may still use before the body must catch up with it.
  std::uint64_t framing_budget() const noexcept {
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t allowed =
        msg_.body_seen + std::min<std::uint64_t>(limits_.max_chunk_framing, max - msg_.body_seen);
    return allowed - msg_.framing_seen;  // never negative: every framing byte is checked
  }

  // After the size or a complete extension: another extension, BWS before one, or the CR.
  http::error after_extension(char c) noexcept {
    if (c == ';') return to(true, chunk_state::ext_name_start, detail::ok);
    if (c == '\r') return to(true, chunk_state::size_lf, detail::ok);
    return to(detail::is_ows(c), chunk_state::ext_bws, http::error::invalid_chunk_extension);
  }

  http::error to(bool valid, chunk_state next, http::error otherwise) noexcept {
    if (!valid) return otherwise;
    msg_.chunk = next;
    return detail::ok;
  }

  http::error add_hex_digit(int digit) noexcept {
    if (msg_.chunk_size > (std::numeric_limits<std::uint64_t>::max() >> 4))
      return http::error::body_too_large;
    msg_.chunk_size = msg_.chunk_size * 16 + static_cast<std::uint64_t>(digit);
    if (msg_.chunk_size > limits_.max_body - msg_.body_seen) return http::error::body_too_large;
    return detail::ok;
  }

  // Everything about the current message except what holds memory; reset() starts it afresh.
  struct message_state {
    phase in = phase::head;
    line_state line = line_state::start;
    chunk_state chunk = chunk_state::size_start;
    std::error_code error;

    std::size_t scanned = 0;  // head bytes consumed so far
    std::size_t method_len = 0;
    std::size_t target_len = 0;
    std::size_t authority_pos = 0;  // in the line, as is origin_pos
    std::size_t authority_len = 0;  // 0 unless the target has an authority
    std::size_t origin_pos = 0;     // path and query, up to the end of the line
    std::size_t host_count = 0;
    std::size_t chunk_line_len = 0;
    std::size_t trailer_bytes = 0;
    std::size_t version_index = 0;
    int version_major = 0;
    int version_minor = 0;

    std::uint64_t content_length = 0;
    std::uint64_t remaining = 0;   // of a Content-Length body
    std::uint64_t chunk_size = 0;  // while reading the size, then what is left of the chunk
    std::uint64_t body_seen = 0;
    std::uint64_t framing_seen = 0;  // chunk framing bytes, trailers included

    bool content_length_seen = false;
    bool te_seen = false;
    bool te_chunked = false;  // chunked seen, necessarily as the last coding so far
    bool te_other = false;
    bool conn_close = false;
    bool conn_keep_alive = false;
    bool conn_upgrade = false;
    bool upgrade_field = false;
    bool expect_100 = false;
  };

  parser_limits limits_;
  request_head head_;
  fields trailers_;
  detail::field_scanner scanner_;
  message_state msg_;
};

}  // namespace sluice::http
