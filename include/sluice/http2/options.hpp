// sluice/http2/options.hpp: the limits of an HTTP/2 connection
// (http::server_options::http2).
//
// Each bounds what a client can make the server hold or do: streams at once,
// a request head, request bytes buffered per stream and per connection,
// serialized frames waiting for a client that does not read, and the floods
// of RFC 9113's "denial-of-service considerations" (rapid reset,
// CONTINUATION, SETTINGS, PING, empty frames). A client over a limit gets
// the answer the RFC gives: REFUSED_STREAM, 431, or GOAWAY and the close.
//
// Thread safety: a plain value, copied into each server.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace sluice::http {

struct http2_options {
  bool enabled = true;                              // h2 by ALPN, h2c by prior knowledge
  std::uint32_t max_concurrent_streams = 100;       // SETTINGS_MAX_CONCURRENT_STREAMS; beyond: REFUSED_STREAM
  std::uint32_t max_header_list_size = 16 * 1024;   // SETTINGS_MAX_HEADER_LIST_SIZE; beyond: 431
  std::uint32_t stream_window = 64 * 1024;          // request bytes buffered per stream at most
  std::uint32_t connection_window = 1024 * 1024;    // ... per connection at most
  std::size_t max_output_buffered = 64 * 1024;      // serialized frames not yet written, at most
  std::chrono::milliseconds ping_timeout{std::chrono::seconds(2)};  // bound of the GOAWAY round trip
  std::uint32_t reset_burst = 1000, reset_rate = 33;  // rapid reset: RST_STREAMs received (token bucket)
  std::uint32_t max_empty_frames = 100;             // empty DATA/HEADERS/CONTINUATION in a row before GOAWAY
};

}  // namespace sluice::http
