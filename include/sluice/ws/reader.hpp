// sluice/ws/reader.hpp: WebSocket messages out of client bytes (RFC 6455 5.4-5.6, 8.1; RFC 7692).
// No I/O: the connection feeds it what it reads; the fuzzer feeds it anything.
//
// message_reader runs frame_parser (ws/frame.hpp) and adds what needs a whole message or a whole
// control frame: it joins fragments (control frames may come between them), inflates compressed
// messages, checks text as UTF-8 across fragments, and checks Close payloads. It fails with:
// - 1002: a Close payload of 1 byte or with a code a peer may not send, and every frame_parser rule;
// - 1007: text or a close reason that is not UTF-8, compressed data that does not inflate;
// - 1009: a message over max_message bytes, counted after inflating (a zip bomb stops there).
// Memory: the message being received (bounded by max_message) and a control payload (at most
// 125 bytes); both are empty between messages, so an idle reader holds no buffer.
//
//     sluice::ws::message_reader r({.max_message = 1 << 20});
//     auto [what, used] = r.read(in);   // repeat on in.subspan(used) until need_more
//     if (what == message_reader::event::message) handle(r.take_message());
//
// Thread safety: one per connection; use from one thread at a time.
#pragma once

#include "sluice/ws/deflate.hpp"
#include "sluice/ws/frame.hpp"
#include "sluice/ws/utf8.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::ws {

enum class message_kind : std::uint8_t { text, binary };

struct message {
  std::string data;
  message_kind kind = message_kind::text;
};

struct reader_options {
  std::size_t max_message = 1 << 20;
  // Set when permessage-deflate was negotiated: inflates the compressed messages (RSV1).
  inflater* compression = nullptr;
};

class message_reader {
 public:
  enum class event : std::uint8_t {
    need_more,  // all the input was used; read more
    message,    // take_message() is a whole data message
    ping,       // control_payload() is its payload
    pong,
    close,      // the peer's Close: close_code() (1005 when it gave none) and close_reason()
    error,      // fail the connection with error_code(); every later call says so again
  };
  struct result {
    event what;
    std::size_t consumed;
  };

  explicit message_reader(reader_options options) noexcept
      : options_(options), frames_({options.max_message, options.compression != nullptr}) {}

  // Consumes bytes of `in` (unmasking them in place) up to the next event.
  result read(std::span<char> in);

  message take_message() noexcept { return {std::exchange(data_, {}), kind_}; }
  // The payload of the ping or pong just reported; valid until the next read().
  std::string_view control_payload() const noexcept { return control_; }
  std::uint16_t close_code() const noexcept { return close_code_; }
  std::string_view close_reason() const noexcept;
  std::uint16_t error_code() const noexcept { return error_; }
  // True between the first frame of a data message and its last.
  bool in_message() const noexcept { return frames_.in_message(); }

 private:
  std::uint16_t take_data(std::string_view piece);
  std::optional<event> end_frame();
  std::optional<event> end_control_frame();
  result fail(std::uint16_t code, std::size_t consumed) noexcept;

  reader_options options_;
  frame_parser frames_;
  std::string data_;     // the data message so far (inflated)
  std::string control_;  // the control frame so far
  utf8_validator utf8_;
  message_kind kind_ = message_kind::text;
  std::uint16_t close_code_ = 0;
  std::uint16_t error_ = 0;
  bool control_ready_ = false;  // control_ is a whole control frame's payload
};

// Implementation

inline message_reader::result message_reader::fail(std::uint16_t code, std::size_t consumed) noexcept {
  error_ = code;
  return {event::error, consumed};
}

inline message_reader::result message_reader::read(std::span<char> in) {
  if (error_) return {event::error, 0};
  // The last control payload was readable until now; an idle reader holds no buffer.
  if (control_ready_) {
    control_ = std::string();
    control_ready_ = false;
  }
  std::size_t used = 0;
  for (;;) {
    const auto r = frames_.parse(in.subspan(used));
    used += r.consumed;
    switch (r.what) {
      case frame_parser::event::need_more:
        return {event::need_more, used};
      case frame_parser::event::error:
        return fail(frames_.error_code(), used);
      case frame_parser::event::frame_start:
        if (frames_.frame().op == opcode::text || frames_.frame().op == opcode::binary) {
          kind_ = frames_.frame().op == opcode::text ? message_kind::text : message_kind::binary;
          utf8_.reset();
        } else if (is_control(frames_.frame().op)) {
          control_.clear();
        }
        break;
      case frame_parser::event::payload:
        if (is_control(frames_.frame().op)) {
          control_.append(r.payload);
        } else if (auto code = take_data(r.payload)) {
          return fail(code, used);
        }
        break;
      case frame_parser::event::frame_end:
        if (auto what = end_frame()) return what == event::error ? fail(error_, used) : result{*what, used};
        break;
    }
  }
}

// A piece of a data message's payload: inflated when the message is compressed, then checked.
inline std::uint16_t message_reader::take_data(std::string_view piece) {
  const std::size_t before = data_.size();
  if (frames_.frame().compressed) {
    if (auto code = options_.compression->inflate(piece, data_, options_.max_message)) return code;
  } else {
    data_.append(piece);  // frame_parser has bounded the uncompressed size already
  }
  if (kind_ == message_kind::text && !utf8_.feed(std::string_view(data_).substr(before)))
    return close_code::invalid_payload;
  return 0;
}

inline std::optional<message_reader::event> message_reader::end_frame() {
  const frame_header& f = frames_.frame();
  if (is_control(f.op)) return end_control_frame();
  if (!f.fin) return std::nullopt;
  if (f.compressed) {
    const std::size_t before = data_.size();
    error_ = options_.compression->finish(data_, options_.max_message);
    if (!error_ && kind_ == message_kind::text && !utf8_.feed(std::string_view(data_).substr(before)))
      error_ = close_code::invalid_payload;
    if (error_) return event::error;
  }
  if (kind_ == message_kind::text && !utf8_.complete()) {
    error_ = close_code::invalid_payload;
    return event::error;
  }
  return event::message;
}

inline std::optional<message_reader::event> message_reader::end_control_frame() {
  control_ready_ = true;
  if (frames_.frame().op == opcode::ping) return event::ping;
  if (frames_.frame().op == opcode::pong) return event::pong;
  // Close (RFC 6455 5.5.1, 7.4): no payload, or a code a peer may send and a UTF-8 reason.
  close_code_ = close_code::no_status;
  if (control_.size() == 1) {
    error_ = close_code::protocol_error;
  } else if (control_.size() >= 2) {
    close_code_ = static_cast<std::uint16_t>((static_cast<std::uint8_t>(control_[0]) << 8) |
                                             static_cast<std::uint8_t>(control_[1]));
    if (!is_valid_close_code(close_code_)) error_ = close_code::protocol_error;
    else if (!is_valid_utf8(close_reason())) error_ = close_code::invalid_payload;
  }
  return error_ ? event::error : event::close;
}

inline std::string_view message_reader::close_reason() const noexcept {
  return control_.size() > 2 ? std::string_view(control_).substr(2) : std::string_view{};
}

}  // namespace sluice::ws
