// libFuzzer target for the HTTP/1.1 request parser.
//
// The first 4 bytes choose the limits and where the rest is split; the rest is a connection's
// byte stream (heads, bodies, pipelined messages). It is parsed twice, whole and in pieces that
// are copied to a fresh buffer on every call, and both runs must produce the same messages and
// verdict. Along the way every documented invariant is checked; a violation traps.
#include "sluice/http/detail/chars.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http/serialize.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace http = sluice::http;
using status = http::request_parser::status;

#define FUZZ_ASSERT(cond)          \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

struct rng {
  std::uint32_t state;
  std::uint32_t next() {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  }
};

http::parser_limits choose_limits(std::uint32_t seed) {
  http::parser_limits limits;
  if (seed & 1) {  // small limits so that every limit is reached by short inputs
    limits.max_target = 1 + (seed >> 1) % 64;
    limits.max_head_bytes = 8 + (seed >> 7) % 256;
    limits.max_header_count = (seed >> 15) % 8;
    limits.max_body = (seed >> 18) % 512;
    limits.max_chunk_line = 1 + (seed >> 27) % 32;
    limits.max_trailer_bytes = (seed >> 9) % 64;
    limits.max_chunk_framing = (seed >> 21) % 128;
  }
  limits.require_host = (seed & 2) != 0;
  return limits;
}

bool valid_status(unsigned s) {
  return s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505;
}

void assert_parsed_fields(const http::fields& f) {
  for (const auto [name, value] : f) {
    FUZZ_ASSERT(http::detail::is_token(name));
    for (char c : value) FUZZ_ASSERT(http::detail::is_field_char(c));
    FUZZ_ASSERT(value.empty() ||
                (!http::detail::is_ows(value.front()) && !http::detail::is_ows(value.back())));
  }
}

// The target's parts agree with its form: CONNECT names an authority only, origin-form and "*"
// are their own path, absolute-form is scheme "://" authority, then the path ("/" when empty).
void check_target_parts(const http::request_head& h) {
  if (h.method == "CONNECT") {
    FUZZ_ASSERT(h.authority == h.target && h.path_and_query.empty());
    return;
  }
  if (h.target.front() == '/' || h.target == "*") {
    FUZZ_ASSERT(h.authority.empty() && h.path_and_query == h.target);
    return;
  }
  FUZZ_ASSERT(!h.authority.empty() && h.authority.find('@') == std::string_view::npos);
  FUZZ_ASSERT(!h.path_and_query.empty() && h.path_and_query.front() == '/');
  const std::size_t after_scheme = h.target.find("://") + 3;
  FUZZ_ASSERT(h.target.substr(after_scheme, h.authority.size()) == h.authority);
  const std::string_view rest = h.target.substr(after_scheme + h.authority.size());
  FUZZ_ASSERT(rest == h.path_and_query || "/" + std::string(rest) == h.path_and_query);
}

void check_head(const http::request_head& h, const http::parser_limits& limits) {
  FUZZ_ASSERT(http::detail::is_token(h.method));
  FUZZ_ASSERT(!h.target.empty() && h.target.size() <= limits.max_target);
  for (char c : h.target) FUZZ_ASSERT(http::detail::is_target_char(c));
  FUZZ_ASSERT(h.version_minor == 0 || h.version_minor == 1);
  FUZZ_ASSERT(h.headers.size() <= limits.max_header_count);
  assert_parsed_fields(h.headers);
  FUZZ_ASSERT(h.content_length <= limits.max_body);
  FUZZ_ASSERT((h.body == http::body_kind::length) == (h.content_length > 0));
  FUZZ_ASSERT(!h.expect_continue || (h.version_minor == 1 && h.body != http::body_kind::none));
  FUZZ_ASSERT(!h.keep_alive || h.version_minor == 1 ||
              h.headers.has_token("connection", "keep-alive"));
  if (h.method == "CONNECT") FUZZ_ASSERT(h.upgrade && h.body == http::body_kind::none);
  check_target_parts(h);

  // Copies keep their own views; parsed fields always serialize.
  const http::request_head copy = h;
  FUZZ_ASSERT(copy.method == h.method && copy.target == h.target);
  FUZZ_ASSERT(copy.method.data() != h.method.data());
  FUZZ_ASSERT(copy.authority == h.authority && copy.path_and_query == h.path_and_query);
  std::string out;
  try {
    http::serialize_head(200, h.headers, http::framing::length, h.content_length, h.keep_alive,
                         h.version_minor == 0, out);
  } catch (...) {
    __builtin_trap();
  }
}

void check_failed(http::request_parser& p) {
  const std::error_code ec = p.error();
  FUZZ_ASSERT(ec);
  FUZZ_ASSERT(valid_status(http::status_for(ec)));
  FUZZ_ASSERT(p.parse_head("GET / HTTP/1.1\r\nHost: h\r\n\r\n") == status::error);
  const auto r = p.parse_body("0\r\n\r\n");
  FUZZ_ASSERT(r.st == status::error && r.consumed == 0);
  FUZZ_ASSERT(p.error() == ec);
}

// What a run produced, comparable between the whole and the split run.
struct trace {
  std::string events;
  bool operator==(const trace&) const = default;
};

void record(trace& t, std::string_view s) {
  t.events.append(s);
  t.events.push_back('\0');
}

// Parses `input` like a server reading a socket, in pieces given by `next_piece`.
template <class NextPiece>
trace drive(std::string_view input, const http::parser_limits& limits, NextPiece next_piece) {
  trace t;
  http::request_parser p(limits);
  std::string buf;
  std::size_t fed = 0;
  const auto feed = [&] {
    if (fed == input.size()) return false;
    const std::size_t n = std::min(next_piece(), input.size() - fed);
    buf.append(input.substr(fed, n));
    fed += n;
    return true;
  };
  for (;;) {
    status st = status::need_more;
    for (;;) {
      const std::string moved = buf;  // the caller's buffer may move between calls
      const std::size_t before = p.head_size();
      st = p.parse_head(moved);
      FUZZ_ASSERT(st == status::need_more || st == status::head_done || st == status::error);
      FUZZ_ASSERT(p.head_size() >= before && p.head_size() <= moved.size());
      FUZZ_ASSERT(p.head_size() <= limits.max_head_bytes);
      if (st != status::need_more || !feed()) break;
    }
    if (st == status::error) {
      check_failed(p);
      record(t, "error:" + std::to_string(p.error().value()));
      return t;
    }
    if (st == status::need_more) {
      record(t, "need_more");
      return t;
    }
    FUZZ_ASSERT(p.head_size() > 0);
    FUZZ_ASSERT(p.parse_head(buf) == status::head_done);
    const http::request_head& h = p.head();
    check_head(h, limits);
    record(t, h.method);
    record(t, h.target);
    record(t, h.authority);
    record(t, h.path_and_query);
    for (const auto [name, value] : h.headers) {
      record(t, name);
      record(t, value);
    }
    record(t, h.keep_alive ? "keep-alive" : "close");
    buf.erase(0, p.head_size());

    std::string body;
    for (;;) {
      const std::string in = buf;
      const auto r = p.parse_body(in);
      FUZZ_ASSERT(r.consumed <= in.size());
      if (!r.data.empty()) {
        FUZZ_ASSERT(r.data.data() >= in.data() &&
                    r.data.data() + r.data.size() <= in.data() + r.consumed);
      }
      if (r.st == status::error) {  // body bytes of the same call are dropped with the message
        check_failed(p);
        record(t, "error:" + std::to_string(p.error().value()));
        return t;
      }
      body.append(r.data);
      FUZZ_ASSERT(p.body_bytes_seen() == body.size());
      FUZZ_ASSERT(body.size() <= limits.max_body);
      // Framing never outruns the body by more than its allowance.
      if (h.body == http::body_kind::length) FUZZ_ASSERT(p.body_wire_bytes() == body.size());
      FUZZ_ASSERT(p.body_wire_bytes() <= 2 * body.size() + limits.max_chunk_framing);
      buf.erase(0, r.consumed);
      if (r.st == status::message_done) break;
      if (r.st == status::need_more) {
        FUZZ_ASSERT(r.consumed == in.size());
        if (!feed()) {
          record(t, "incomplete body");
          return t;
        }
      } else {
        FUZZ_ASSERT(r.st == status::body_data && !r.data.empty());
      }
    }
    if (h.body == http::body_kind::length) FUZZ_ASSERT(body.size() == h.content_length);
    FUZZ_ASSERT(p.trailers().size() <= limits.max_header_count);
    assert_parsed_fields(p.trailers());
    record(t, body);
    for (const auto [name, value] : p.trailers()) {
      record(t, name);
      record(t, value);
    }
    if (h.upgrade) {
      record(t, "upgrade");
      return t;
    }
    p.reset();
    FUZZ_ASSERT(!p.error() && p.head_size() == 0 && p.trailers().empty() &&
                p.body_bytes_seen() == 0 && p.body_wire_bytes() == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::uint32_t seed =
      static_cast<std::uint32_t>(data[0]) | static_cast<std::uint32_t>(data[1]) << 8 |
      static_cast<std::uint32_t>(data[2]) << 16 | static_cast<std::uint32_t>(data[3]) << 24;
  const std::string_view input(reinterpret_cast<const char*>(data) + 4, size - 4);
  const http::parser_limits limits = choose_limits(seed);

  const trace whole = drive(input, limits, [&] { return input.size(); });
  rng r{seed | 1};
  const std::size_t max_piece = 1 + (seed >> 24) % 32;
  const trace split = drive(input, limits, [&] { return 1 + r.next() % max_piece; });
  FUZZ_ASSERT(whole == split);
  return 0;
}
