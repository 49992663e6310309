// sluice/http/fields.hpp: an ordered list of HTTP header (or trailer) fields.
//
// Duplicates are kept in arrival order; lookups compare names case-insensitively. All names and
// values live in ONE string arena indexed by a vector of offset records, so a parsed request head
// costs at most two allocations, and clear() keeps both capacities for the next message on the
// connection. Views returned by get() or by iteration are invalidated by add/set/erase/clear and
// by moving or copying the object. Not thread-safe: one object per message/connection.
#pragma once

#include "sluice/http/detail/chars.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::http {

namespace detail {
class field_scanner;
}

class fields {
 public:
  struct field {
    std::string_view name;
    std::string_view value;
  };

  class const_iterator {
   public:
    using iterator_concept = std::forward_iterator_tag;
    using iterator_category = std::input_iterator_tag;  // operator* yields a value
    using value_type = field;
    using difference_type = std::ptrdiff_t;
    using reference = field;

    const_iterator() = default;
    field operator*() const { return owner_->at(index_); }
    const_iterator& operator++() {
      ++index_;
      return *this;
    }
    const_iterator operator++(int) {
      auto old = *this;
      ++index_;
      return old;
    }
    bool operator==(const const_iterator&) const = default;

   private:
    friend class fields;
    const_iterator(const fields* owner, std::size_t index) : owner_(owner), index_(index) {}
    const fields* owner_ = nullptr;
    std::size_t index_ = 0;
  };

  void add(std::string_view name, std::string_view value) {
    if (aliases_arena(name) || aliases_arena(value)) {
      const std::string copy = std::string(name).append(value);
      add(std::string_view(copy).substr(0, name.size()),
          std::string_view(copy).substr(name.size()));
      return;
    }
    const std::size_t offset = arena_.size();
    check_capacity(offset + name.size() + value.size());
    arena_.append(name).append(value);
    records_.push_back({static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(name.size()),
                        static_cast<std::uint32_t>(value.size())});
  }

  // Replaces every field called `name` by one field appended at the end.
  void set(std::string_view name, std::string_view value) {
    if (aliases_arena(name) || aliases_arena(value)) {
      const std::string copy = std::string(name).append(value);
      set(std::string_view(copy).substr(0, name.size()),
          std::string_view(copy).substr(name.size()));
      return;
    }
    erase(name);
    add(name, value);
  }

  // Removes every field called `name`; returns how many were removed.
  std::size_t erase(std::string_view name) {
    std::size_t kept = 0;
    std::size_t write = 0;  // compacts the arena in place; records stay in arena order
    for (const record& r : records_) {
      if (detail::iequals(name_of(r), name)) continue;
      const std::size_t length = r.name_len + r.value_len;
      std::memmove(arena_.data() + write, arena_.data() + r.offset, length);
      records_[kept++] = {static_cast<std::uint32_t>(write), r.name_len, r.value_len};
      write += length;
    }
    const std::size_t removed = records_.size() - kept;
    records_.resize(kept);
    arena_.resize(write);
    return removed;
  }

  void clear() noexcept {
    arena_.clear();
    records_.clear();
  }

  std::optional<std::string_view> get(std::string_view name) const {
    for (const record& r : records_)
      if (detail::iequals(name_of(r), name)) return value_of(r);
    return std::nullopt;
  }

  bool contains(std::string_view name) const { return get(name).has_value(); }

  // Whether `token` is an element of the comma-separated lists of every field called `name`
  // (e.g. Connection: keep-alive, Upgrade). Case-insensitive.
  bool has_token(std::string_view name, std::string_view token) const {
    for (const record& r : records_) {
      if (!detail::iequals(name_of(r), name)) continue;
      const bool absent = detail::for_each_list_element(
          value_of(r), [&](std::string_view element) { return !detail::iequals(element, token); });
      if (!absent) return true;
    }
    return false;
  }

  field at(std::size_t i) const { return {name_of(records_[i]), value_of(records_[i])}; }
  field operator[](std::size_t i) const { return at(i); }
  std::size_t size() const noexcept { return records_.size(); }
  bool empty() const noexcept { return records_.empty(); }
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, records_.size()}; }

  // Bytes of names and values held; what the arena needs.
  std::size_t bytes() const noexcept { return arena_.size(); }
  void reserve(std::size_t bytes, std::size_t count) {
    arena_.reserve(bytes);
    records_.reserve(count);
  }

 private:
  friend class detail::field_scanner;

  struct record {
    std::uint32_t offset;  // name at offset, value right after it
    std::uint32_t name_len;
    std::uint32_t value_len;
  };

  std::string_view name_of(const record& r) const noexcept {
    return {arena_.data() + r.offset, r.name_len};
  }
  std::string_view value_of(const record& r) const noexcept {
    return {arena_.data() + r.offset + r.name_len, r.value_len};
  }

  bool aliases_arena(std::string_view s) const noexcept {
    const std::less_equal<const char*> le;
    return !s.empty() && le(arena_.data(), s.data()) && le(s.data(), arena_.data() + arena_.size());
  }

  static void check_capacity(std::size_t arena_size) {
    if (arena_size > std::numeric_limits<std::uint32_t>::max())
      throw std::length_error("sluice::http::fields: more than 4 GiB of fields");
  }

  // Incremental construction for the parser: a field is streamed into the arena as its bytes
  // arrive (one copy, no staging buffer) and becomes visible at commit.
  void begin_field() noexcept { pending_ = arena_.size(); }
  void append_pending(const char* first, const char* last) {
    const auto n = static_cast<std::size_t>(last - first);
    check_capacity(arena_.size() + n);
    arena_.append(first, n);
  }
  void end_pending_name() noexcept { pending_name_len_ = arena_.size() - pending_; }
  // The value's trailing whitespace is not part of it (RFC 9112 5.1).
  field commit_field() {
    while (arena_.size() > pending_ + pending_name_len_ && detail::is_ows(arena_.back()))
      arena_.pop_back();
    const std::size_t value_len = arena_.size() - pending_ - pending_name_len_;
    records_.push_back({static_cast<std::uint32_t>(pending_),
                        static_cast<std::uint32_t>(pending_name_len_),
                        static_cast<std::uint32_t>(value_len)});
    return at(records_.size() - 1);
  }

  std::string arena_;
  std::vector<record> records_;
  std::size_t pending_ = 0;
  std::size_t pending_name_len_ = 0;
};

}  // namespace sluice::http
