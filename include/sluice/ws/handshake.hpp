// sluice/ws/handshake.hpp: the server's half of the WebSocket opening handshake (RFC 6455 4.2)
// and of permessage-deflate's negotiation (RFC 7692 7). No I/O: a request head in, an answer out.
//
// check_handshake() says what is wrong with an upgrade request, with the status to answer:
// 405 (with Allow: GET) for another method, 426 (with Sec-WebSocket-Version: 13) for another
// version, 400 for a missing Upgrade/Connection token or a key that is not 16 bytes in base64.
// accept_key() is Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)), by OpenSSL's
// libcrypto. negotiate_deflate() picks the first permessage-deflate offer the server can honour
// and says what to answer.
//
//     if (auto refusal = sluice::ws::check_handshake(req.head())) return *refusal;
//     res.headers.add("Sec-WebSocket-Accept", sluice::ws::accept_key(*req.headers().get("sec-websocket-key")));
//
// Thread safety: free functions on their arguments.
#pragma once

#include "sluice/http/message.hpp"

#include <openssl/evp.h>

#include <array>
#include <charconv>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::ws {

// What the server offers of permessage-deflate.
struct deflate_options {
  bool enabled = false;
  // Keep zlib's window between messages (better compression of similar messages, about 300 KiB
  // per connection for its life). Off: both directions are negotiated without context takeover
  // and zlib's state exists only while a message is processed.
  bool context_takeover = false;
};

// What was agreed for one connection.
struct deflate_params {
  bool server_context_takeover = true;
  bool client_context_takeover = true;
  int server_max_window_bits = 15;
  std::optional<int> client_max_window_bits;  // set when the client offered a value
};

// A refusal (status, fields, reason) for a request that is not a valid handshake; none when it is.
std::optional<http::response> check_handshake(const http::request_head& head);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
std::string accept_key(std::string_view key);

// The subprotocols the client offers (Sec-WebSocket-Protocol, every field), in its order.
std::vector<std::string_view> offered_subprotocols(const http::fields& headers);

// The agreement for the first offer in Sec-WebSocket-Extensions the server can honour.
std::optional<deflate_params> negotiate_deflate(const http::fields& headers, const deflate_options& ours);

// The Sec-WebSocket-Extensions value that answers an agreement.
std::string deflate_response(const deflate_params& p);

// Implementation

namespace detail {

inline bool is_base64_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// A 16-byte value in base64 is 22 characters and "==", and the last character's unused bits are 0.
inline bool is_valid_key(std::string_view key) noexcept {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (char c : key.substr(0, 22))
    if (!is_base64_char(c)) return false;
  return std::string_view("AQgw").find(key[21]) != std::string_view::npos;
}

inline http::response refuse(unsigned status, std::string_view why) {
  return http::response::text(status, std::string("WebSocket handshake refused: ").append(why).append("\n"));
}

// Calls f(element) for each comma-separated element of every `name` field, commas inside
// quoted strings included in their element.
template <typename F>
void for_each_element(const http::fields& headers, std::string_view name, F&& f) {
  for (auto field : headers) {
    if (!http::detail::iequals(field.name, name)) continue;
    std::string_view rest = field.value;
    while (!rest.empty()) {
      std::size_t end = 0;
      for (bool quoted = false; end < rest.size() && (quoted || rest[end] != ','); ++end)
        if (rest[end] == '"') quoted = !quoted;
      if (auto e = http::detail::trim_ows(rest.substr(0, end)); !e.empty()) f(e);
      rest.remove_prefix(end == rest.size() ? end : end + 1);
    }
  }
}

inline std::optional<int> window_bits(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  int bits = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), bits);
  if (ec != std::errc{} || end != v.data() + v.size() || bits < 8 || bits > 15) return std::nullopt;
  return bits;
}

// One offer ("permessage-deflate; a; b=1"): the agreement, or none when it has an unknown,
// repeated or invalid parameter (RFC 7692 7.1) or asks for what zlib cannot do.
inline std::optional<deflate_params> agree(std::string_view offer, const deflate_options& ours) {
  auto semi = offer.find(';');
  if (!http::detail::iequals(http::detail::trim_ows(offer.substr(0, semi)), "permessage-deflate")) return std::nullopt;
  deflate_params p;
  p.server_context_takeover = p.client_context_takeover = ours.context_takeover;
  unsigned seen = 0;
  while (semi != std::string_view::npos) {
    offer.remove_prefix(semi + 1);
    semi = offer.find(';');
    auto param = http::detail::trim_ows(offer.substr(0, semi));
    auto eq = param.find('=');
    auto key = http::detail::trim_ows(param.substr(0, eq));
    std::optional<std::string_view> value;
    if (eq != std::string_view::npos) value = http::detail::trim_ows(param.substr(eq + 1));
    static constexpr std::array<std::string_view, 4> known = {
        "server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"};
    std::size_t k = 0;
    while (k < known.size() && key != known[k]) ++k;
    if (k == known.size() || (seen & (1u << k))) return std::nullopt;
    seen |= 1u << k;
    if (k < 2) {
      if (value) return std::nullopt;
      (k == 0 ? p.server_context_takeover : p.client_context_takeover) = false;
    } else if (k == 2) {
      // zlib's raw deflate has no 256-byte window (it needs 9 bits or more).
      auto bits = value ? window_bits(*value) : std::nullopt;
      if (!bits || *bits < 9) return std::nullopt;
      p.server_max_window_bits = *bits;
    } else if (value) {
      auto bits = window_bits(*value);
      if (!bits) return std::nullopt;
      p.client_max_window_bits = bits;
    }
  }
  return p;
}

}  // namespace detail

inline std::optional<http::response> check_handshake(const http::request_head& head) {
  if (head.method != "GET") {
    auto r = detail::refuse(405, "the method must be GET");
    r.headers.add("Allow", "GET");
    return r;
  }
  if (head.version_minor < 1) return detail::refuse(400, "HTTP/1.1 is needed");
  if (!head.headers.has_token("upgrade", "websocket") || !head.headers.has_token("connection", "upgrade"))
    return detail::refuse(400, "Upgrade: websocket and Connection: Upgrade are needed");
  if (head.headers.get("sec-websocket-version") != "13") {
    auto r = detail::refuse(426, "only version 13 is supported");
    r.headers.add("Sec-WebSocket-Version", "13");
    return r;
  }
  auto key = head.headers.get("sec-websocket-key");
  if (!key || !detail::is_valid_key(*key)) return detail::refuse(400, "Sec-WebSocket-Key must be 16 bytes in base64");
  return std::nullopt;
}

inline std::string accept_key(std::string_view key) {
  std::string input(key);
  input.append("258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned int digest_size = 0;
  if (!EVP_Digest(input.data(), input.size(), digest.data(), &digest_size, EVP_sha1(), nullptr))
    throw std::runtime_error("sluice::ws: SHA-1 failed");
  std::array<unsigned char, 4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1> encoded;
  const int n = EVP_EncodeBlock(encoded.data(), digest.data(), static_cast<int>(digest_size));
  return std::string(reinterpret_cast<const char*>(encoded.data()), static_cast<std::size_t>(n));
}

inline std::vector<std::string_view> offered_subprotocols(const http::fields& headers) {
  std::vector<std::string_view> offered;
  detail::for_each_element(headers, "sec-websocket-protocol", [&](std::string_view p) { offered.push_back(p); });
  return offered;
}

inline std::optional<deflate_params> negotiate_deflate(const http::fields& headers, const deflate_options& ours) {
  std::optional<deflate_params> agreed;
  if (!ours.enabled) return agreed;
  detail::for_each_element(headers, "sec-websocket-extensions", [&](std::string_view offer) {
    if (!agreed) agreed = detail::agree(offer, ours);
  });
  return agreed;
}

inline std::string deflate_response(const deflate_params& p) {
  std::string r = "permessage-deflate";
  if (!p.server_context_takeover) r += "; server_no_context_takeover";
  if (!p.client_context_takeover) r += "; client_no_context_takeover";
  if (p.server_max_window_bits != 15) r += "; server_max_window_bits=" + std::to_string(p.server_max_window_bits);
  if (p.client_max_window_bits) r += "; client_max_window_bits=" + std::to_string(*p.client_max_window_bits);
  return r;
}

}  // namespace sluice::ws
