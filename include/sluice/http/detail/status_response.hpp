// Internals of the HTTP server: the short text response the server itself
// gives (an error, a refused request), the same over HTTP/1.1 and HTTP/2.
#pragma once

#include "sluice/http/message.hpp"
#include "sluice/http/serialize.hpp"

#include <string>
#include <string_view>
#include <utility>

namespace sluice::http::detail {

// "<status> <reason>[: what]" as a text response.
inline response status_response(unsigned status, std::string_view what) {
  std::string body = std::to_string(status);
  body.append(" ").append(reason_phrase(status));
  if (!what.empty()) body.append(": ").append(what);
  body.push_back('\n');
  return response::text(status, std::move(body));
}

}  // namespace sluice::http::detail
