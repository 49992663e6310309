// sluice/ws/deflate.hpp: permessage-deflate's compression (RFC 7692) with zlib: raw deflate, each
// message ended by a sync flush whose 00 00 ff ff tail is left off the wire (7.2.1).
//
// Guarantees:
// - inflating is bounded: inflate() never makes a message larger than the `max` it is given, and
//   says 1009 instead (a zip bomb costs at most `max` bytes of output, never more);
// - corrupt deflate data is 1007 (the payload is not what the message type says);
// - memory: zlib's state (about 7 KiB to inflate with a 32 KiB window, about 256 KiB to deflate)
//   exists only while a message is being processed when context takeover is off (the server's
//   default: it negotiates no_context_takeover both ways), so an idle connection holds none; with
//   context takeover it is kept for the connection's life, as the RFC requires.
//
//     sluice::ws::inflater in(false);
//     std::string msg;
//     if (auto code = in.inflate(payload, msg, max); code) fail(code);
//     if (auto code = in.finish(msg, max); code) fail(code);
//
// Thread safety: one per connection and direction; use from one thread at a time.
#pragma once

#include "sluice/ws/frame.hpp"

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>

namespace sluice::ws {

namespace detail {
struct zstream_deleter {
  bool inflating;
  void operator()(z_stream* z) const noexcept;
};
using zstream_ptr = std::unique_ptr<z_stream, zstream_deleter>;
}  // namespace detail

class inflater {
 public:
  // keep_context: the peer compresses with context takeover, so the window outlives a message.
  explicit inflater(bool keep_context) noexcept : keep_context_(keep_context) {}

  // Appends the inflated form of `in` to `out`. Returns 0, or the close code to fail with: 1009
  // when `out` would grow past `max`, 1007 when `in` is not deflate data.
  std::uint16_t inflate(std::string_view in, std::string& out, std::size_t max);
  // Ends a message: inflates the tail the sender left off, then, without context takeover,
  // releases zlib's state.
  std::uint16_t finish(std::string& out, std::size_t max);

 private:
  std::uint16_t run(std::string_view in, std::string& out, std::size_t max);

  detail::zstream_ptr z_{nullptr, {true}};
  bool keep_context_;
};

class deflater {
 public:
  // window_bits: the server_max_window_bits negotiated (9 to 15).
  deflater(int window_bits, bool keep_context) noexcept : window_bits_(window_bits), keep_context_(keep_context) {}

  // `room` bytes (left for a frame header), then the compressed form of `in` without the tail.
  std::string compress(std::string_view in, std::size_t room);

 private:
  detail::zstream_ptr z_{nullptr, {false}};
  int window_bits_;
  bool keep_context_;
};

// Implementation

inline void detail::zstream_deleter::operator()(z_stream* z) const noexcept {
  if (inflating) ::inflateEnd(z); else ::deflateEnd(z);
  delete z;
}

inline std::uint16_t inflater::inflate(std::string_view in, std::string& out, std::size_t max) {
  return run(in, out, max);
}

inline std::uint16_t inflater::finish(std::string& out, std::size_t max) {
  static constexpr char tail[] = {'\x00', '\x00', '\xff', '\xff'};
  const std::uint16_t code = run({tail, sizeof tail}, out, max);
  if (!keep_context_) z_.reset();
  return code;
}

inline std::uint16_t inflater::run(std::string_view in, std::string& out, std::size_t max) {
  if (!z_) {
    z_.reset(new z_stream{});
    if (::inflateInit2(z_.get(), -15) != Z_OK) {
      z_.reset();
      throw std::bad_alloc();
    }
  }
  z_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z_->avail_in = static_cast<uInt>(in.size());
  for (;;) {
    const std::size_t old = out.size();
    if (old > max) return close_code::message_too_big;
    // Room for one byte past `max`: producing it is how a too large message shows.
    constexpr std::size_t step = 16 * 1024;
    const std::size_t room = max - old < step ? max - old + 1 : step;
    out.resize(old + room);
    z_->next_out = reinterpret_cast<Bytef*>(out.data() + old);
    z_->avail_out = static_cast<uInt>(room);
    const int rc = ::inflate(z_.get(), Z_SYNC_FLUSH);
    out.resize(old + room - z_->avail_out);
    if (out.size() > max) return close_code::message_too_big;
    if (rc == Z_STREAM_END) return z_->avail_in == 0 ? 0 : close_code::invalid_payload;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      if (rc == Z_MEM_ERROR) throw std::bad_alloc();
      return close_code::invalid_payload;
    }
    // Done when zlib has all the input and space to spare (nothing more is pending).
    if (z_->avail_in == 0 && z_->avail_out != 0) return 0;
  }
}

inline std::string deflater::compress(std::string_view in, std::size_t room) {
  if (!z_) {
    z_.reset(new z_stream{});
    if (::deflateInit2(z_.get(), Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits_, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      z_.reset();
      throw std::bad_alloc();
    }
  }
  std::string out(room + ::deflateBound(z_.get(), static_cast<uLong>(in.size())) + 16, '\0');
  z_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z_->avail_in = static_cast<uInt>(in.size());
  std::size_t used = room;
  // deflateBound does not count the sync flush's marker: loop until zlib has said everything.
  for (;;) {
    z_->next_out = reinterpret_cast<Bytef*>(out.data() + used);
    z_->avail_out = static_cast<uInt>(out.size() - used);
    ::deflate(z_.get(), Z_SYNC_FLUSH);
    used = out.size() - z_->avail_out;
    if (z_->avail_out != 0) break;
    out.resize(out.size() * 2);
  }
  out.resize(used - 4);  // the 00 00 ff ff that every sync flush ends with
  if (!keep_context_) z_.reset();
  return out;
}

}  // namespace sluice::ws
