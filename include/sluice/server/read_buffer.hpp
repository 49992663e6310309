// Internals of server::driver: a connection's input buffer.
#pragma once

#include "sluice/detail/thread_local_pool.hpp"

#include <asio/buffer.hpp>

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>

namespace sluice::server {

// Bytes read from the peer and not consumed yet. The storage exists only
// while there is something to read into or keep: release() gives it back, so
// an idle keep-alive connection holds no buffer. Buffers of the initial size
// go back to a small per-thread pool rather than to malloc, since a busy
// keep-alive connection takes and gives back one per request.
class read_buffer {
 public:
  static constexpr std::size_t initial_capacity = 4096;

  read_buffer() = default;
  read_buffer(const read_buffer&) = delete;
  read_buffer& operator=(const read_buffer&) = delete;
  ~read_buffer() { give_back(); }

  std::string_view data() const { return {storage_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  void consume(std::size_t n) {
    begin_ += static_cast<std::uint32_t>(n);
    if (begin_ == end_) begin_ = end_ = 0;
  }

  // Free space after the data, at least `min_free` bytes unless that would
  // take the buffer past `max_capacity`; empty when the buffer is full at its limit.
  asio::mutable_buffer prepare(std::size_t min_free, std::size_t max_capacity) {
    max_capacity = std::min<std::size_t>(max_capacity, UINT32_MAX);
    if (capacity_ - end_ < min_free && begin_ > 0) {
      std::memmove(storage_.get(), storage_.get() + begin_, size());
      end_ -= begin_;
      begin_ = 0;
    }
    if (capacity_ - end_ < min_free && capacity_ < max_capacity) {
      std::size_t wanted = capacity_ ? capacity_ : initial_capacity;
      while (wanted - end_ < min_free && wanted < max_capacity) wanted *= 2;
      if (wanted > max_capacity) wanted = max_capacity;
      auto bigger = take(wanted);
      if (end_ > begin_) std::memcpy(bigger.get(), storage_.get() + begin_, size());
      end_ -= begin_;
      begin_ = 0;
      give_back();
      storage_ = std::move(bigger);
      capacity_ = static_cast<std::uint32_t>(wanted);
    }
    return asio::buffer(storage_.get() + end_, capacity_ - end_);
  }

  void commit(std::size_t n) { end_ += static_cast<std::uint32_t>(n); }

  void release() {
    if (empty()) give_back();
  }

 private:
  using block = std::unique_ptr<char[]>;
  // Blocks of initial_capacity only.
  using pool = sluice::detail::thread_local_pool<char[], read_buffer>;

  static block take(std::size_t size) {
    if (size == initial_capacity)
      if (block kept = pool::take()) return kept;
    return std::make_unique_for_overwrite<char[]>(size);
  }

  void give_back() {
    if (capacity_ == initial_capacity) pool::give_back(std::move(storage_));
    storage_.reset();
    capacity_ = 0;
  }

  std::unique_ptr<char[]> storage_;
  // 32 bits: a connection's buffer is bounded by the head limit or a body
  // piece, and an idle connection keeps this object.
  std::uint32_t capacity_ = 0;
  std::uint32_t begin_ = 0;
  std::uint32_t end_ = 0;
};

}  // namespace sluice::server
