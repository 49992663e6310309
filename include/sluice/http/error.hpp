// sluice/http/error.hpp: why the HTTP/1.1 parser rejected a request, and which status to answer.
//
// Every error names one precise rule of RFC 9112 / RFC 9110 so that logs and error responses say
// exactly what was wrong. `status_for` maps an error to the response status (400, 413, 414, 431,
// 501, 505). Everything here is stateless and thread-safe.
#pragma once

#include <string>
#include <system_error>

namespace sluice::http {

enum class error {
  // 400 Bad Request: the request line is malformed.
  invalid_method = 1,
  invalid_target,
  invalid_target_form,
  unsupported_target_scheme,
  invalid_target_authority,
  userinfo_in_target,
  missing_version,
  invalid_version,
  // 400: line structure.
  bare_cr,
  bare_lf,
  obs_fold,
  whitespace_before_first_field,
  // 400: field syntax.
  invalid_header_name,
  empty_header_name,
  whitespace_before_colon,
  invalid_header_value,
  // 400: framing and request semantics.
  invalid_content_length,
  content_length_overflow,
  conflicting_content_length,
  content_length_with_transfer_encoding,
  invalid_transfer_encoding,
  chunked_not_final,
  chunked_twice,
  transfer_encoding_in_http10,
  missing_host,
  duplicate_host,
  invalid_host,
  // 400: chunked framing.
  invalid_chunk_size,
  invalid_chunk_extension,
  chunk_line_too_long,
  missing_chunk_crlf,
  // 413 Content Too Large.
  body_too_large,
  chunk_framing_too_large,
  // 414 URI Too Long.
  uri_too_long,
  // 431 Request Header Fields Too Large.
  headers_too_large,
  too_many_headers,
  trailers_too_large,
  // 501 Not Implemented.
  unsupported_transfer_encoding,
  // 505 HTTP Version Not Supported.
  unsupported_version,
};

namespace detail {

class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sluice.http"; }

  std::string message(int ev) const override {
    switch (static_cast<error>(ev)) {
      case error::invalid_method: return "invalid character in method";
      case error::invalid_target: return "invalid character in request-target";
      case error::invalid_target_form:
        return "request-target in none of the forms its method allows";
      case error::unsupported_target_scheme:
        return "absolute-form request-target with a scheme other than http or https";
      case error::invalid_target_authority: return "request-target without a valid authority";
      case error::userinfo_in_target: return "userinfo in the request-target's authority";
      case error::missing_version: return "request line without HTTP version";
      case error::invalid_version: return "malformed HTTP version";
      case error::bare_cr: return "bare CR (CR not followed by LF)";
      case error::bare_lf: return "bare LF (lines must end with CRLF)";
      case error::obs_fold: return "obsolete line folding";
      case error::whitespace_before_first_field:
        return "whitespace between request line and first header field";
      case error::invalid_header_name: return "invalid character in header name";
      case error::empty_header_name: return "empty header name";
      case error::whitespace_before_colon: return "whitespace between header name and colon";
      case error::invalid_header_value: return "invalid character in header value";
      case error::invalid_content_length: return "invalid Content-Length value";
      case error::content_length_overflow: return "Content-Length value overflows 64 bits";
      case error::conflicting_content_length: return "differing Content-Length values";
      case error::content_length_with_transfer_encoding:
        return "Content-Length together with Transfer-Encoding";
      case error::invalid_transfer_encoding: return "malformed Transfer-Encoding value";
      case error::chunked_not_final: return "Transfer-Encoding does not end with chunked";
      case error::chunked_twice: return "chunked transfer coding applied more than once";
      case error::transfer_encoding_in_http10: return "Transfer-Encoding in an HTTP/1.0 request";
      case error::missing_host: return "HTTP/1.1 request without Host header";
      case error::duplicate_host: return "more than one Host header";
      case error::invalid_host: return "invalid character in Host header";
      case error::invalid_chunk_size: return "invalid chunk size";
      case error::invalid_chunk_extension: return "invalid chunk extension";
      case error::chunk_line_too_long: return "chunk-size line too long";
      case error::missing_chunk_crlf: return "missing CRLF after chunk data";
      case error::body_too_large: return "request body too large";
      case error::chunk_framing_too_large:
        return "chunk framing (sizes, extensions, trailers) out of proportion to the body";
      case error::uri_too_long: return "request-target too long";
      case error::headers_too_large: return "request header section too large";
      case error::too_many_headers: return "too many header fields";
      case error::trailers_too_large: return "trailer section too large";
      case error::unsupported_transfer_encoding:
        return "unsupported transfer coding (only chunked is implemented)";
      case error::unsupported_version: return "unsupported HTTP version (only 1.0 and 1.1)";
    }
    return "unknown sluice.http error";
  }
};

}  // namespace detail

inline const std::error_category& http_category() noexcept {
  static const detail::error_category_impl instance;
  return instance;
}

inline std::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), http_category()};
}

// The response status for a parse error. Codes from other categories are not the client's fault
// as far as this layer knows: 500.
inline unsigned status_for(std::error_code ec) noexcept {
  if (ec.category() != http_category()) return 500;
  switch (static_cast<error>(ec.value())) {
    case error::body_too_large:
    case error::chunk_framing_too_large: return 413;
    case error::uri_too_long: return 414;
    case error::headers_too_large:
    case error::too_many_headers:
    case error::trailers_too_large: return 431;
    case error::unsupported_transfer_encoding: return 501;
    case error::unsupported_version: return 505;
    default: return 400;
  }
}

}  // namespace sluice::http

template <>
struct std::is_error_code_enum<sluice::http::error> : std::true_type {};
