// Test support: a small JSON reader (RFC 8259) for test vectors, with no dependency.
//
// Objects keep their member order; strings are UTF-8 (\uXXXX escapes, surrogate pairs included);
// numbers are doubles. Malformed input throws std::runtime_error naming the offset. For tests
// only: simple rather than fast. Values are independent; reading is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace sluice::test::json {

struct value;
using array = std::vector<value>;
using object = std::vector<std::pair<std::string, value>>;

struct value {
  std::variant<std::nullptr_t, bool, double, std::string, array, object> v = nullptr;

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_number() const { return std::holds_alternative<double>(v); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_array() const { return std::holds_alternative<array>(v); }
  bool is_object() const { return std::holds_alternative<object>(v); }

  bool as_bool() const { return get<bool>("bool"); }
  double as_number() const { return get<double>("number"); }
  const std::string& as_string() const { return get<std::string>("string"); }
  const array& as_array() const { return get<array>("array"); }
  const object& as_object() const { return get<object>("object"); }

  // Member lookup; nullptr when absent or when this is not an object.
  const value* find(std::string_view key) const {
    if (!is_object()) return nullptr;
    for (const auto& [k, member] : as_object())
      if (k == key) return &member;
    return nullptr;
  }
  const value& operator[](std::string_view key) const {
    const value* member = find(key);
    if (member == nullptr) throw std::runtime_error("json: no member \"" + std::string(key) + "\"");
    return *member;
  }

 private:
  template <class T>
  const T& get(const char* what) const {
    if (const T* p = std::get_if<T>(&v)) return *p;
    throw std::runtime_error(std::string("json: value is not a ") + what);
  }
};

namespace detail {

class reader {
 public:
  explicit reader(std::string_view text) : text_(text) {}

  value document() {
    value result = parse_value(0);
    skip_ws();
    if (pos_ != text_.size()) fail("trailing characters");
    return result;
  }

 private:
  static constexpr int max_depth = 256;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("json: " + what + " at offset " + std::to_string(pos_));
  }

  void skip_ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  char peek() {
    skip_ws();
    if (pos_ == text_.size()) fail("unexpected end");
    return text_[pos_];
  }

  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  void literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal");
    pos_ += word.size();
  }

  value parse_value(int depth) {
    if (depth > max_depth) fail("nesting too deep");
    switch (peek()) {
      case '{': return {parse_object(depth)};
      case '[': return {parse_array(depth)};
      case '"': return {parse_string()};
      case 't': literal("true"); return {true};
      case 'f': literal("false"); return {false};
      case 'n': literal("null"); return {nullptr};
      default: return {parse_number()};
    }
  }

  object parse_object(int depth) {
    object result;
    expect('{');
    if (peek() == '}') {
      ++pos_;
      return result;
    }
    for (;;) {
      if (peek() != '"') fail("expected a member name");
      std::string key = parse_string();
      expect(':');
      result.emplace_back(std::move(key), parse_value(depth + 1));
      if (peek() == '}') {
        ++pos_;
        return result;
      }
      expect(',');
    }
  }

  array parse_array(int depth) {
    array result;
    expect('[');
    if (peek() == ']') {
      ++pos_;
      return result;
    }
    for (;;) {
      result.push_back(parse_value(depth + 1));
      if (peek() == ']') {
        ++pos_;
        return result;
      }
      expect(',');
    }
  }

  double parse_number() {
    const std::size_t start = pos_;
    const auto digits = [&] {
      const std::size_t first = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      if (pos_ == first) fail("expected a digit");
    };
    if (pos_ < text_.size() && text_[pos_] == '-') ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '0')
      ++pos_;
    else
      digits();
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      digits();
    }
    return std::stod(std::string(text_.substr(start, pos_ - start)));
  }

  unsigned hex4() {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail("invalid \\u escape");
    }
    return v;
  }

  static void append_utf8(std::uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  std::uint32_t escaped_code_point() {
    const unsigned high = hex4();
    if (high >= 0xDC00 && high <= 0xDFFF) fail("unpaired low surrogate");
    if (high < 0xD800 || high > 0xDBFF) return high;
    if (text_.substr(pos_, 2) != "\\u") fail("unpaired high surrogate");
    pos_ += 2;
    const unsigned low = hex4();
    if (low < 0xDC00 || low > 0xDFFF) fail("invalid low surrogate");
    return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ == text_.size()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ == text_.size()) fail("unterminated escape");
      switch (const char e = text_[pos_++]) {
        case '"':
        case '\\':
        case '/': out.push_back(e); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': append_utf8(escaped_code_point(), out); break;
        default: fail("invalid escape");
      }
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace detail

inline value parse(std::string_view text) { return detail::reader(text).document(); }

// Throws std::runtime_error naming the path when the file cannot be read.
inline value parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("json: cannot open " + path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse(text);
}

}  // namespace sluice::test::json
