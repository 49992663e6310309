// sluice/ws/frame.hpp: the WebSocket frame codec (RFC 6455 5): bytes in, frame events out, and
// server frame headers out. No I/O, so it is unit-tested and fuzzed on bytes.
//
// frame_parser reads what a client sends and enforces every rule that a frame's header and its
// place in the stream decide; it fails with the close code the RFC asks for:
// - 1002 (protocol error): an unmasked frame (5.1), a reserved bit that no negotiated extension
//   defines (5.2; RSV1 is permessage-deflate's, on a message's first frame only), an unknown
//   opcode, a fragmented control frame or one over 125 bytes (5.5), a continuation frame with no
//   message to continue or a new data frame inside a fragmented one (5.4), a length that is not
//   in its shortest form or has its top bit set (5.2).
// - 1009 (message too big): a message whose frames add up to more than max_message bytes,
//   known from the headers before any of its payload is read.
// Payload is unmasked in place in the caller's buffer and handed out as views, piece by piece:
// the parser holds no payload, only the header it is reading (a few bytes).
// Whole-message rules (UTF-8, close payloads, inflating) are message_reader's (ws/reader.hpp).
//
//     sluice::ws::frame_parser p({.max_message = 1 << 20});
//     for (std::size_t used = 0;;) {
//       auto r = p.parse(in.subspan(used));
//       used += r.consumed;
//       if (r.what == frame_parser::event::need_more) break;     // all of `in` is consumed
//       if (r.what == frame_parser::event::error) fail(p.error_code());
//       ...  // frame_start: p.frame() is the new header; payload: r.payload; frame_end
//     }
//
// Thread safety: a parser belongs to one connection; use it from one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sluice::ws {

enum class opcode : std::uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

constexpr bool is_control(opcode op) noexcept { return (static_cast<std::uint8_t>(op) & 0x8) != 0; }

// Close status codes (RFC 6455 7.4.1) that sluice sends or reports.
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  // reported when a Close carried no code; never sent
inline constexpr std::uint16_t abnormal = 1006;   // reported when the connection ended without a Close; never sent
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t internal_error = 1011;
}  // namespace close_code

// Whether a peer may send `code` in a Close frame: the codes RFC 6455 7.4 defines for the wire
// (1004-1006 and 1015 are reserved), the IANA-registered 1012-1014, and 3000-4999 for
// libraries and applications.
constexpr bool is_valid_close_code(std::uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

struct frame_header {
  opcode op = opcode::continuation;
  bool fin = false;
  bool compressed = false;  // the message this frame belongs to has RSV1 (permessage-deflate)
  std::uint64_t length = 0;
};

struct parser_options {
  // The largest data message accepted, in payload bytes on the wire (before inflating).
  std::uint64_t max_message = 1 << 20;
  // permessage-deflate was negotiated: RSV1 may mark a message's first frame.
  bool compression = false;
};

class frame_parser {
 public:
  enum class event : std::uint8_t {
    need_more,    // every byte given was consumed; give more
    frame_start,  // frame() is the header of a new frame
    payload,      // result::payload is the next piece of the frame's payload, unmasked
    frame_end,    // the frame's payload is complete
    error,        // the stream is invalid: close with error_code(); every later call says so again
  };
  struct result {
    event what;
    std::size_t consumed;  // bytes of the input used
    std::string_view payload;
  };

  explicit frame_parser(parser_options options = {}) noexcept : options_(options) {}

  // Consumes bytes of `in` up to the next event. Unmasks payload bytes in place.
  result parse(std::span<char> in) noexcept;

  const frame_header& frame() const noexcept { return frame_; }
  // True between a data message's first frame and its final one.
  bool in_message() const noexcept { return in_message_; }
  std::uint16_t error_code() const noexcept { return error_; }

 private:
  enum class stage : std::uint8_t { header, payload, end, failed };

  std::size_t header_size() const noexcept;
  result finish_header() noexcept;
  result fail(std::uint16_t code, std::size_t consumed) noexcept;

  parser_options options_;
  frame_header frame_;
  std::uint64_t remaining_ = 0;        // payload bytes of this frame still to come
  std::uint64_t message_length_ = 0;   // payload bytes of the current data message so far
  std::array<std::uint8_t, 14> header_{};
  std::array<std::uint8_t, 4> mask_{};
  std::uint8_t header_have_ = 0;
  std::uint8_t mask_at_ = 0;
  stage stage_ = stage::header;
  bool in_message_ = false;
  bool message_compressed_ = false;
  std::uint16_t error_ = 0;
};

// The largest header a server frame needs: 2 bytes, then a 64-bit length (servers do not mask).
inline constexpr std::size_t max_server_header = 10;

// Writes the header of an unmasked (server) frame to `out`; returns its size (2, 4 or 10).
std::size_t write_frame_header(std::span<char, max_server_header> out, opcode op, std::uint64_t length,
                               bool fin = true, bool compressed = false) noexcept;

// A whole unmasked frame: header then payload.
std::string make_frame(opcode op, std::string_view payload, bool fin = true, bool compressed = false);

// A Close frame's payload (RFC 6455 5.5.1): the code, big-endian, then the reason cut to fit 123
// bytes at a UTF-8 character boundary.
std::string make_close_payload(std::uint16_t code, std::string_view reason);

// Implementation

inline std::size_t frame_parser::header_size() const noexcept {
  const std::uint8_t len7 = header_[1] & 0x7F;
  const std::size_t extended = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  return 2 + extended + ((header_[1] & 0x80) ? 4 : 0);
}

inline frame_parser::result frame_parser::fail(std::uint16_t code, std::size_t consumed) noexcept {
  stage_ = stage::failed;
  error_ = code;
  return {event::error, consumed, {}};
}

inline frame_parser::result frame_parser::parse(std::span<char> in) noexcept {
  switch (stage_) {
    case stage::failed:
      return {event::error, 0, {}};
    case stage::end:
      stage_ = stage::header;
      header_have_ = 0;
      if (!is_control(frame_.op)) in_message_ = !frame_.fin;
      return {event::frame_end, 0, {}};
    case stage::payload: {
      if (in.empty()) return {event::need_more, 0, {}};
      const std::size_t n = remaining_ < in.size() ? static_cast<std::size_t>(remaining_) : in.size();
      for (std::size_t i = 0; i < n; ++i) {
        in[i] = static_cast<char>(static_cast<std::uint8_t>(in[i]) ^ mask_[mask_at_]);
        mask_at_ = (mask_at_ + 1) & 3;
      }
      remaining_ -= n;
      if (remaining_ == 0) stage_ = stage::end;
      return {event::payload, n, {in.data(), n}};
    }
    case stage::header:
      break;
  }
  std::size_t used = 0;
  // The first two bytes say how long the rest of the header is.
  while (used < in.size() && (header_have_ < 2 || header_have_ < header_size()))
    header_[header_have_++] = static_cast<std::uint8_t>(in[used++]);
  if (header_have_ < 2 || header_have_ < header_size()) return {event::need_more, used, {}};
  auto r = finish_header();
  r.consumed = used;
  return r;
}

inline frame_parser::result frame_parser::finish_header() noexcept {
  const std::uint8_t b0 = header_[0], b1 = header_[1];
  const auto op = static_cast<opcode>(b0 & 0x0F);
  const bool fin = (b0 & 0x80) != 0, rsv1 = (b0 & 0x40) != 0;
  if ((b0 & 0x30) != 0) return fail(close_code::protocol_error, 0);
  switch (op) {
    case opcode::continuation: case opcode::text: case opcode::binary:
    case opcode::close: case opcode::ping: case opcode::pong: break;
    default: return fail(close_code::protocol_error, 0);
  }
  if ((b1 & 0x80) == 0) return fail(close_code::protocol_error, 0);  // clients must mask (5.1)
  std::uint64_t length = b1 & 0x7F;
  std::size_t at = 2;
  if (length >= 126) {
    const std::size_t bytes = length == 126 ? 2 : 8;
    length = 0;
    for (std::size_t i = 0; i < bytes; ++i) length = (length << 8) | header_[at++];
    const bool shortest = bytes == 2 ? length >= 126 : length > 0xFFFF;
    if (!shortest || (length >> 63) != 0) return fail(close_code::protocol_error, 0);
  }
  for (std::size_t i = 0; i < 4; ++i) mask_[i] = header_[at++];
  mask_at_ = 0;

  if (is_control(op)) {
    if (!fin || length > 125 || rsv1) return fail(close_code::protocol_error, 0);
  } else {
    const bool continuation = op == opcode::continuation;
    if (continuation != in_message_) return fail(close_code::protocol_error, 0);
    if (rsv1 && (continuation || !options_.compression)) return fail(close_code::protocol_error, 0);
    if (!continuation) {
      message_length_ = 0;
      message_compressed_ = rsv1;
    }
    // A compressed message may be a little larger than its inflated form (deflate's stored
    // blocks); inflating bounds what it becomes.
    const std::uint64_t limit = message_compressed_
        ? options_.max_message + options_.max_message / 1024 + 64 : options_.max_message;
    if (length > limit - message_length_) return fail(close_code::message_too_big, 0);
    message_length_ += length;
  }
  frame_ = {op, fin, !is_control(op) && message_compressed_, length};
  remaining_ = length;
  stage_ = length == 0 ? stage::end : stage::payload;
  return {event::frame_start, 0, {}};
}

inline std::size_t write_frame_header(std::span<char, max_server_header> out, opcode op, std::uint64_t length,
                                      bool fin, bool compressed) noexcept {
  out[0] = static_cast<char>((fin ? 0x80 : 0) | (compressed ? 0x40 : 0) | static_cast<std::uint8_t>(op));
  std::size_t extended = 0;
  if (length < 126) {
    out[1] = static_cast<char>(length);
  } else if (length <= 0xFFFF) {
    out[1] = 126;
    extended = 2;
  } else {
    out[1] = 127;
    extended = 8;
  }
  for (std::size_t i = 0; i < extended; ++i)
    out[2 + i] = static_cast<char>(length >> (8 * (extended - 1 - i)));
  return 2 + extended;
}

inline std::string make_frame(opcode op, std::string_view payload, bool fin, bool compressed) {
  std::array<char, max_server_header> header;
  const std::size_t n = write_frame_header(header, op, payload.size(), fin, compressed);
  std::string frame;
  frame.reserve(n + payload.size());
  frame.append(header.data(), n).append(payload);
  return frame;
}

inline std::string make_close_payload(std::uint16_t code, std::string_view reason) {
  if (reason.size() > 123) {
    // Cut before the character that byte 123 belongs to, so that none is cut in half.
    std::size_t cut = 123;
    while (cut > 0 && (static_cast<std::uint8_t>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  std::string payload;
  payload.reserve(2 + reason.size());
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(reason);
  return payload;
}

}  // namespace sluice::ws
