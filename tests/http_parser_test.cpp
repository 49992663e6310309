// The HTTP/1.1 protocol layer without I/O: fields, request parser, serializer, errors.
#include "sluice/http/error.hpp"
#include "sluice/http/fields.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http/serialize.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace http = sluice::http;
using namespace std::string_literals;
using namespace std::string_view_literals;
using status = http::request_parser::status;

namespace {

// ---------------------------------------------------------------------------------------------
// A driver that uses the parser the way a server does: bytes arrive in pieces, the head is
// parsed from the buffered prefix, the body from what follows, pipelined messages in a loop.

struct message {
  std::string method, target;
  int version_minor = 0;
  std::vector<std::pair<std::string, std::string>> headers, trailers;
  http::body_kind body_kind = http::body_kind::none;
  std::uint64_t content_length = 0;
  bool keep_alive = false, expect_continue = false, upgrade = false;
  std::string body;
  std::string authority, path_and_query;
  bool operator==(const message&) const = default;
};

enum class verdict { complete, incomplete, error, upgrade, closed_with_data };

struct outcome {
  std::vector<message> messages;
  verdict v = verdict::complete;
  std::error_code ec;
  bool operator==(const outcome&) const = default;
};

std::vector<std::pair<std::string, std::string>> copy_fields(const http::fields& f) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto [name, value] : f) out.emplace_back(name, value);
  return out;
}

bool only_empty_lines(std::string_view s) { return s.find_first_not_of("\r\n") == s.npos; }

outcome run(const std::vector<std::string_view>& pieces, http::parser_limits limits = {}) {
  http::request_parser parser(limits);
  outcome out;
  std::string buf;
  std::size_t next = 0;
  const auto feed = [&] {
    if (next == pieces.size()) return false;
    buf.append(pieces[next++]);
    return true;
  };
  const auto rest_is_empty_lines = [&] {
    while (feed()) {
    }
    return only_empty_lines(buf);
  };
  for (;;) {
    status st = parser.parse_head(buf);
    while (st == status::need_more && feed()) st = parser.parse_head(buf);
    if (st == status::need_more) {
      out.v = only_empty_lines(buf) ? verdict::complete : verdict::incomplete;
      return out;
    }
    if (st == status::error) {
      out.v = verdict::error;
      out.ec = parser.error();
      return out;
    }
    REQUIRE(st == status::head_done);
    REQUIRE(parser.head_size() <= buf.size());
    const http::request_head& h = parser.head();
    message m{std::string(h.method),
              std::string(h.target),
              h.version_minor,
              copy_fields(h.headers),
              {},
              h.body,
              h.content_length,
              h.keep_alive,
              h.expect_continue,
              h.upgrade,
              {},
              std::string(h.authority),
              std::string(h.path_and_query)};
    buf.erase(0, parser.head_size());
    for (;;) {
      auto r = parser.parse_body(buf);
      REQUIRE(r.consumed <= buf.size());
      m.body.append(r.data);
      buf.erase(0, r.consumed);
      if (r.st == status::message_done) break;
      if (r.st == status::error) {
        out.v = verdict::error;
        out.ec = parser.error();
        return out;
      }
      if (r.st == status::need_more) {
        REQUIRE(buf.empty());
        if (!feed()) {
          out.v = verdict::incomplete;
          return out;
        }
      }
    }
    CHECK(parser.body_bytes_seen() == m.body.size());
    m.trailers = copy_fields(parser.trailers());
    out.messages.push_back(m);
    if (m.upgrade) {
      out.v = verdict::upgrade;
      return out;
    }
    if (!m.keep_alive) {
      out.v = rest_is_empty_lines() ? verdict::complete : verdict::closed_with_data;
      return out;
    }
    parser.reset();
  }
}

std::vector<std::string_view> whole(std::string_view s) { return {s}; }

std::vector<std::string_view> bytewise(std::string_view s) {
  std::vector<std::string_view> v;
  for (std::size_t i = 0; i < s.size(); ++i) v.push_back(s.substr(i, 1));
  return v;
}

std::vector<std::string_view> random_split(std::string_view s, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::string_view> v;
  while (!s.empty()) {
    const std::size_t n =
        std::uniform_int_distribution<std::size_t>(1, std::min<std::size_t>(s.size(), 17))(rng);
    v.push_back(s.substr(0, n));
    s.remove_prefix(n);
  }
  return v;
}

// Runs `input` whole, byte by byte and at random split points; all must agree.
outcome run_all_ways(std::string_view input, http::parser_limits limits = {}) {
  const outcome reference = run(whole(input), limits);
  CHECK_MESSAGE(run(bytewise(input), limits) == reference, "byte by byte differs: ", input);
  for (unsigned seed = 1; seed <= 8; ++seed)
    CHECK_MESSAGE(run(random_split(input, seed), limits) == reference, "split ", seed,
                  " differs: ", input);
  return reference;
}

std::error_code error_of(std::string_view input, http::parser_limits limits = {}) {
  const outcome o = run_all_ways(input, limits);
  CHECK_MESSAGE(o.v == verdict::error, "accepted: ", input);
  return o.ec;
}

message single(std::string_view input, http::parser_limits limits = {}) {
  const outcome o = run_all_ways(input, limits);
  REQUIRE_MESSAGE(o.messages.size() == 1, "input: ", input, " error: ", o.ec.message());
  return o.messages[0];
}

std::string with_host(std::string_view fields_and_body) {
  return "POST /p HTTP/1.1\r\nHost: h\r\n"s.append(fields_and_body);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http fields") {
  TEST_CASE("ordered duplicates with case-insensitive lookup") {
    http::fields f;
    CHECK(f.empty());
    f.add("Accept", "text/html");
    f.add("X-Dup", "1");
    f.add("x-dup", "2");
    REQUIRE(f.size() == 3);
    CHECK(f.get("ACCEPT") == "text/html"sv);
    CHECK(f.get("X-DUP") == "1"sv);
    CHECK(f.contains("x-Dup"));
    CHECK_FALSE(f.contains("X-Du"));
    CHECK_FALSE(f.get("missing").has_value());
    std::vector<std::string> seen;
    for (const auto [name, value] : f) seen.push_back(std::string(name) + "=" + std::string(value));
    CHECK(seen == std::vector<std::string>{"Accept=text/html", "X-Dup=1", "x-dup=2"});
    CHECK(f[2].name == "x-dup");
  }

  TEST_CASE("set replaces all, erase compacts, clear empties") {
    http::fields f;
    f.add("A", "1");
    f.add("B", "2");
    f.add("a", "3");
    f.add("C", "4");
    f.set("A", "new");
    REQUIRE(f.size() == 3);
    CHECK(f[0].name == "B");
    CHECK(f[1].name == "C");
    CHECK(f[2].value == "new");
    CHECK(f.bytes() == "B2C4Anew"sv.size());
    CHECK(f.erase("b") == 1);
    CHECK(f.erase("b") == 0);
    CHECK(f.get("C") == "4"sv);
    CHECK(f.get("A") == "new"sv);
    f.clear();
    CHECK(f.empty());
    CHECK(f.bytes() == 0);
    f.add("D", "5");
    CHECK(f.get("d") == "5"sv);
  }

  TEST_CASE("adding views of its own fields") {
    http::fields f;
    f.add("Name", "a value long enough to live on the heap, not in the small buffer");
    for (int i = 0; i < 20; ++i) f.add(f[0].name, f[0].value);  // forces reallocations
    CHECK(f.size() == 21);
    CHECK(f[20].value == f[0].value);
    f.set(f[3].name, f[3].value);
    CHECK(f.size() == 1);
    CHECK(f[0].value == "a value long enough to live on the heap, not in the small buffer");
  }

  TEST_CASE("has_token searches comma-separated lists across fields") {
    http::fields f;
    f.add("Connection", "keep-alive ,\tUpgrade");
    f.add("connection", ",, close");
    f.add("Other", "close");
    CHECK(f.has_token("connection", "upgrade"));
    CHECK(f.has_token("Connection", "CLOSE"));
    CHECK(f.has_token("CONNECTION", "Keep-Alive"));
    CHECK_FALSE(f.has_token("connection", "keep"));
    CHECK_FALSE(f.has_token("Connection", "alive"));
    CHECK_FALSE(f.has_token("Absent", "close"));
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http error") {
  TEST_CASE("category, messages and statuses") {
    const std::error_code ec = http::error::obs_fold;
    CHECK(ec.category().name() == "sluice.http"s);
    CHECK(ec == http::error::obs_fold);
    CHECK(ec.message() == "obsolete line folding");
    CHECK(http::make_error_code(http::error::content_length_with_transfer_encoding).message() ==
          "Content-Length together with Transfer-Encoding");
    CHECK(std::error_code(http::error::bare_cr).message().find("bare CR") == 0);
    CHECK(http::status_for(http::error::invalid_header_name) == 400);
    CHECK(http::status_for(http::error::body_too_large) == 413);
    CHECK(http::status_for(http::error::uri_too_long) == 414);
    CHECK(http::status_for(http::error::headers_too_large) == 431);
    CHECK(http::status_for(http::error::too_many_headers) == 431);
    CHECK(http::status_for(http::error::trailers_too_large) == 431);
    CHECK(http::status_for(http::error::unsupported_transfer_encoding) == 501);
    CHECK(http::status_for(http::error::unsupported_version) == 505);
    CHECK(http::status_for(std::make_error_code(std::errc::io_error)) == 500);
    std::vector<std::string> messages;
    for (int e = 1; e <= static_cast<int>(http::error::unsupported_version); ++e) {
      const std::string m = http::make_error_code(static_cast<http::error>(e)).message();
      CHECK(m != "unknown sluice.http error");
      for (const std::string& other : messages) CHECK(m != other);
      messages.push_back(m);
    }
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: accepted requests") {
  TEST_CASE("a simple GET") {
    const message m = single(
        "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
        "User-Agent: t\t \r\nAccept:*/*\r\nX-Empty:\r\n\r\n");
    CHECK(m.method == "GET");
    CHECK(m.target == "/index.html?q=1");
    CHECK(m.version_minor == 1);
    CHECK(m.headers ==
          std::vector<std::pair<std::string, std::string>>{
              {"Host", "example.com"}, {"User-Agent", "t"}, {"Accept", "*/*"}, {"X-Empty", ""}});
    CHECK(m.body_kind == http::body_kind::none);
    CHECK(m.keep_alive);
    CHECK_FALSE(m.upgrade);
    CHECK_FALSE(m.expect_continue);
  }

  TEST_CASE("head_size and the head's views") {
    http::request_parser p;
    const std::string req = "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    REQUIRE(p.parse_head(req) == status::head_done);
    CHECK(p.head_size() == req.size() - 2);
    CHECK(p.parse_head(req) == status::head_done);  // idempotent
    CHECK(p.head().method == "PUT");
    CHECK(p.head().target == "/x");
    CHECK(p.head().body == http::body_kind::length);
    CHECK(p.head().content_length == 2);
    const auto r = p.parse_body(std::string_view(req).substr(p.head_size()));
    CHECK(r.st == status::message_done);
    CHECK(r.consumed == 2);
    CHECK(r.data == "hi");
    CHECK(p.parse_body("more").st == status::message_done);
  }

  TEST_CASE("values keep inner whitespace, obs-text and HTAB") {
    const message m =
        single("GET / HTTP/1.1\r\nHost: h\r\nX: a \t b\r\nY: D\xc3\xbcsseldorf\xff\r\n\r\n");
    CHECK(m.headers[1].second == "a \t b");
    CHECK(m.headers[2].second == "D\xc3\xbcsseldorf\xff");
  }

  TEST_CASE("leading empty lines are ignored") {
    const message m = single("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(m.method == "GET");
    http::request_parser p;
    const std::string req = "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    REQUIRE(p.parse_head(req) == status::head_done);
    CHECK(p.head_size() == req.size());
  }

  TEST_CASE("any token method and visible-ASCII targets") {
    CHECK(single("M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n").target == "*");
    CHECK(single("QUERY /q HTTP/1.1\r\nHost: h\r\n\r\n").method == "QUERY");
    CHECK(single("GET http://a:1/b?c=\"d\"|e#f HTTP/1.1\r\nHost: a:1\r\n\r\n").target ==
          "http://a:1/b?c=\"d\"|e#f");
    CHECK(single("OPTIONS * HTTP/1.0\r\n\r\n").version_minor == 0);
  }

  TEST_CASE("keep-alive per version and Connection") {
    CHECK(single("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
    CHECK_FALSE(single("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    CHECK_FALSE(
        single("GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n").keep_alive);
    CHECK_FALSE(single("GET / HTTP/1.0\r\n\r\n").keep_alive);
    CHECK(single("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    CHECK(single("GET / HTTP/1.0\r\nConnection: x\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  }

  TEST_CASE("Content-Length forms") {
    CHECK(single(with_host("Content-Length: 003\r\n\r\nabc")).body == "abc");
    CHECK(single(with_host("Content-Length: \t3 \r\n\r\nabc")).body == "abc");
    const message zero = single(with_host("Content-Length: 0\r\n\r\n"));
    CHECK(zero.body_kind == http::body_kind::none);
    // RFC 9110 8.6: identical values, repeated or listed, are one length.
    CHECK(single(with_host("Content-Length: 3\r\ncontent-length: 3\r\n\r\nabc")).body == "abc");
    CHECK(single(with_host("Content-Length: 3, 3,3\r\n\r\nabc")).body == "abc");
    http::parser_limits small;
    small.max_body = 100;
    CHECK(single(with_host("Content-Length: 100\r\n\r\n") + std::string(100, 'x'), small)
              .content_length == 100);
    CHECK(error_of(with_host("Content-Length: 101\r\n"), small) == http::error::body_too_large);
  }

  TEST_CASE("Expect: 100-continue") {
    CHECK(single(with_host("Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx")).expect_continue);
    CHECK(single(with_host("Expect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
              .expect_continue);
    CHECK_FALSE(single(with_host("Expect: 100-continue\r\n\r\n")).expect_continue);  // no body
    CHECK_FALSE(single("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
                    .expect_continue);
    CHECK_FALSE(single(with_host("Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx")).expect_continue);
  }

  TEST_CASE("upgrade, h2c, CONNECT and PRI") {
    const outcome ws = run_all_ways(
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        "Connection: keep-alive, Upgrade\r\n\r\n\x81\x05hello");
    CHECK(ws.v == verdict::upgrade);
    REQUIRE(ws.messages.size() == 1);
    CHECK(ws.messages[0].upgrade);
    CHECK(single("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
              .upgrade);
    CHECK_FALSE(single("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").upgrade);
    CHECK_FALSE(
        single("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").upgrade);
    // With content, the upgrade follows the body (RFC 9110 7.8).
    const outcome body =
        run_all_ways(with_host("Upgrade: h2c\r\nConnection: upgrade\r\n"
                               "Content-Length: 4\r\n\r\nbodyPRI * HTTP/2.0"));
    CHECK(body.v == verdict::upgrade);
    REQUIRE(body.messages.size() == 1);
    CHECK(body.messages[0].body == "body");
    // CONNECT has no content whatever it declares; the tunnel starts after the head.
    const outcome tunnel = run_all_ways(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
        "Content-Length: 10\r\n\r\n\x16\x03\x01");
    CHECK(tunnel.v == verdict::upgrade);
    REQUIRE(tunnel.messages.size() == 1);
    CHECK(tunnel.messages[0].body_kind == http::body_kind::none);
    CHECK(tunnel.messages[0].target == "example.com:443");
    http::parser_limits no_host;
    no_host.require_host = false;
    CHECK(run_all_ways("PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n", no_host).v == verdict::upgrade);
  }

  TEST_CASE("Host is required on HTTP/1.1 unless the policy is off") {
    CHECK(error_of("GET / HTTP/1.1\r\n\r\n") == http::error::missing_host);
    http::parser_limits lenient;
    lenient.require_host = false;
    CHECK(single("GET / HTTP/1.1\r\n\r\n", lenient).method == "GET");
    CHECK(single("GET / HTTP/1.1\r\nHost:\r\n\r\n").headers[0].second.empty());
    CHECK(single("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").headers[0].second == "[::1]:8080");
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: rejected requests") {
  struct bad {
    const char* input;
    http::error expected;
  };

  void check_rejections(const std::vector<bad>& cases) {
    for (const bad& c : cases) {
      CAPTURE(c.input);
      const std::error_code ec = error_of(c.input);
      CHECK_MESSAGE(ec == c.expected, "got: ", ec.message());
    }
  }

  TEST_CASE("request line") {
    check_rejections({
        {"G@T / HTTP/1.1\r\n", http::error::invalid_method},
        {" GET / HTTP/1.1\r\n", http::error::invalid_method},
        {"GET\t/ HTTP/1.1\r\n", http::error::invalid_method},
        {"GET  / HTTP/1.1\r\n", http::error::invalid_target},
        {"GET /a\x01 HTTP/1.1\r\n", http::error::invalid_target},
        {"GET /a\x7f HTTP/1.1\r\n", http::error::invalid_target},
        {"GET /\xce\xb4 HTTP/1.1\r\n", http::error::invalid_target},
        {"GET /\r\n\r\n", http::error::missing_version},
        {"GET /foo bar HTTP/1.1\r\n", http::error::invalid_version},
        {"GET / http/1.1\r\n", http::error::invalid_version},
        {"GET / HTTP/1.1 \r\n", http::error::invalid_version},
        {"GET / HTTP/1.10\r\n", http::error::invalid_version},
        {"GET / HTTP/11.1\r\n", http::error::invalid_version},
        {"GET / HTTP/1.x\r\n", http::error::invalid_version},
        {"GET / RTSP/1.0\r\n", http::error::invalid_version},
        {"GET / HTTP/2.0\r\n", http::error::unsupported_version},
        {"GET / HTTP/1.2\r\n", http::error::unsupported_version},
        {"GET / HTTP/0.9\r\n", http::error::unsupported_version},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http::error::unsupported_version},
        {"GET / HTTP/1.1\rHost: h\r\n\r\n", http::error::bare_cr},
        {"GET / HTTP/1.1\nHost: h\n\n", http::error::bare_lf},
        {"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", http::error::bare_lf},
        {"\r\rGET / HTTP/1.1\r\n", http::error::bare_cr},
    });
  }

  TEST_CASE("field lines") {
    check_rejections({
        {"GET / HTTP/1.1\r\n Host: h\r\n\r\n", http::error::whitespace_before_first_field},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", http::error::obs_fold},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", http::error::obs_fold},
        {"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n", http::error::bare_cr},
        {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", http::error::bare_cr},
        {"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", http::error::bare_lf},
        {"GET / HTTP/1.1\r\nHost: h\r\n\n", http::error::bare_lf},
        {"GET / HTTP/1.1\r\nHost: h\r\n\rX", http::error::bare_cr},
        {"GET / HTTP/1.1\r\nFo@: x\r\n\r\n", http::error::invalid_header_name},
        {"GET / HTTP/1.1\r\nFoo\x01: x\r\n\r\n", http::error::invalid_header_name},
        {"GET / HTTP/1.1\r\nname\r\n\r\n", http::error::invalid_header_name},
        {"GET / HTTP/1.1\r\n\xc3\xa9: x\r\n\r\n", http::error::invalid_header_name},
        {"GET / HTTP/1.1\r\nFoo : x\r\n\r\n", http::error::whitespace_before_colon},
        {"GET / HTTP/1.1\r\nFoo\t: x\r\n\r\n", http::error::whitespace_before_colon},
        {"GET / HTTP/1.1\r\n: x\r\n\r\n", http::error::empty_header_name},
        {"GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", http::error::invalid_header_value},
        {"GET / HTTP/1.1\r\nX: \x0c\r\n\r\n", http::error::invalid_header_value},
        {"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", http::error::invalid_header_value},
    });
    CHECK(error_of("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"sv) == http::error::invalid_header_value);
  }

  TEST_CASE("Host") {
    check_rejections({
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", http::error::duplicate_host},
        {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", http::error::invalid_host},
        {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", http::error::invalid_host},
        {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", http::error::invalid_host},
    });
  }

  TEST_CASE("Content-Length") {
    check_rejections({
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         http::error::conflicting_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n",
         http::error::conflicting_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4 2\r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +4\r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,\r\n\r\n",
         http::error::invalid_content_length},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n",
         http::error::content_length_overflow},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8388609\r\n\r\n",
         http::error::body_too_large},
    });
    // Detected at the field, without waiting for the end of the head (llhttp agrees).
    CHECK(error_of("PUT / HTTP/1.1\r\nContent-Length: 1000000000000000000000\r\n") ==
          http::error::content_length_overflow);
    CHECK(error_of("PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n") ==
          http::error::conflicting_content_length);
    CHECK(http::status_for(error_of("PUT / HTTP/1.1\r\nContent-Length: 10000000\r\n")) == 413);
  }

  TEST_CASE("Transfer-Encoding and request smuggling") {
    check_rejections({
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         http::error::content_length_with_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
         http::error::content_length_with_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding:\r\n\r\n",
         http::error::content_length_with_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
         http::error::chunked_not_final},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
         http::error::chunked_not_final},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "gzip\r\n\r\n",
         http::error::chunked_not_final},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n",
         http::error::chunked_not_final},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedchunked\r\n\r\n",
         http::error::chunked_not_final},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
         http::error::chunked_twice},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         http::error::chunked_twice},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
         http::error::invalid_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
         http::error::invalid_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         http::error::unsupported_transfer_encoding},
        {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: deflate\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         http::error::unsupported_transfer_encoding},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
         http::error::transfer_encoding_in_http10},
    });
    CHECK(http::status_for(http::error::unsupported_transfer_encoding) == 501);
    // Accepted variants: case, empty list elements, OWS.
    CHECK(single(with_host("Transfer-Encoding: , CHUNKED\t\r\n\r\n0\r\n\r\n")).body_kind ==
          http::body_kind::chunked);
  }

  TEST_CASE("chunked framing") {
    const std::string te = with_host("Transfer-Encoding: chunked\r\n\r\n");
    const std::vector<std::pair<std::string, http::error>> cases = {
        {"zz\r\n", http::error::invalid_chunk_size},
        {"\r\n", http::error::invalid_chunk_size},
        {"-5\r\n", http::error::invalid_chunk_size},
        {"5x\r\n", http::error::invalid_chunk_size},
        {"5 \r\nhello\r\n0\r\n\r\n", http::error::invalid_chunk_extension},
        {"3 \n  \r\nfoo\r\n", http::error::bare_lf},
        {"5\nhello\r\n", http::error::bare_lf},
        {"5\r\rhello\r\n", http::error::bare_cr},
        {"5;\r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5;a=\r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5;a=\"x\r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5;a=b c\r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5;a=b \r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5;@\r\nhello\r\n", http::error::invalid_chunk_extension},
        {"5\r\nhelloX\r\n", http::error::missing_chunk_crlf},
        {"5\r\nhello\rX", http::error::bare_cr},
        {"5\r\nhello\r\n\r\n", http::error::invalid_chunk_size},
        {"ffffffffffffffffffff\r\n", http::error::body_too_large},
        {"800001\r\n", http::error::body_too_large},
    };
    for (const auto& c : cases) {
      CAPTURE(c.first);
      CHECK(error_of(te + c.first) == c.second);
    }
    CHECK(run_all_ways(te + "800000\r\n").v == verdict::incomplete);
    http::parser_limits small;
    small.max_body = 100;
    const std::string total_100 =
        te + "40\r\n" + std::string(64, 'a') + "\r\n24\r\n" + std::string(36, 'b');
    CHECK(run_all_ways(total_100 + "\r\n0\r\n\r\n", small).messages.at(0).body.size() == 100);
    CHECK(error_of(total_100 + "\r\n1\r\n", small) == http::error::body_too_large);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: incremental behaviour") {
  TEST_CASE("a bad byte in a partial head is an error at once") {
    const std::vector<std::pair<std::string_view, http::error>> partial = {
        {"GET / HTTP/1.1\n", http::error::bare_lf},
        {"GET / HTTP/1.1\r\nHost: a\x01", http::error::invalid_header_value},
        {"GET / HTTP/1.1\r\nHo ", http::error::whitespace_before_colon},
        {"GE(", http::error::invalid_method},
        {"GET / HTX", http::error::invalid_version},
        {"GET / HTTP/5.6", http::error::unsupported_version},
        {"GET / HTTP/1.1\r\n ", http::error::whitespace_before_first_field},
        {"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n",
         http::error::content_length_with_transfer_encoding},
    };
    for (const auto& c : partial) {
      const std::string_view input = c.first;
      const http::error expected = c.second;
      CAPTURE(input);
      http::request_parser p;
      std::size_t fed = 0;
      status st = status::need_more;
      while (st == status::need_more && fed < input.size())
        st = p.parse_head(input.substr(0, ++fed));
      CHECK(st == status::error);
      CHECK(fed == input.size());  // not a byte earlier, not later: exactly when it arrived
      CHECK(p.error() == expected);
    }
  }

  TEST_CASE("every byte value at every position of long targets and values") {
    // The scanners skip 8 bytes at a time: check that no position or byte slips through.
    for (std::size_t at = 0; at < 24; ++at) {
      for (int b = 0; b < 256; ++b) {
        const char c = static_cast<char>(b);
        std::string target = "/" + std::string(23, 'a');
        target[at] = c;
        http::request_parser p;
        const status st = p.parse_head("GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n");
        // At 0 only origin-form's '/': "xaaa" is in no form, even when x is a visible byte.
        const bool target_ok = at > 0 ? (b > 0x20 && b < 0x7f) : b == '/';
        CHECK_MESSAGE((st == status::head_done) == target_ok, "target byte ", b, " at ", at);

        std::string value(24, 'v');
        value[at] = c;
        http::request_parser q;
        const status sv = q.parse_head("GET / HTTP/1.1\r\nHost: h\r\nX: " + value + "\r\n\r\n");
        const bool value_ok = b == '\t' || b == ' ' || (b > 0x20 && b != 0x7f);
        CHECK_MESSAGE((sv == status::head_done) == value_ok, "value byte ", b, " at ", at);
      }
    }
  }

  TEST_CASE("only new bytes matter: the buffer may move between calls") {
    const std::string req =
        "GET /moving HTTP/1.1\r\nHost: h\r\nX-Long: " + std::string(300, 'v') + "\r\n\r\n";
    http::request_parser p;
    status st = status::need_more;
    for (std::size_t n = 1; n <= req.size() && st == status::need_more; n += 7) {
      const std::string copy = req.substr(0, n);  // a fresh allocation every time
      st = p.parse_head(copy);
    }
    if (st == status::need_more) st = p.parse_head(std::string(req));
    REQUIRE(st == status::head_done);
    CHECK(p.head().target == "/moving");
    CHECK(p.head().headers.get("x-long")->size() == 300);
  }

  TEST_CASE("once failed, always failed") {
    http::request_parser p;
    CHECK(p.parse_head("GET / HTTP/1.1\r\nBad Name: x\r\n") == status::error);
    const std::error_code ec = p.error();
    CHECK(p.parse_head("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n") == status::error);
    CHECK(p.parse_body("0\r\n\r\n").st == status::error);
    CHECK(p.error() == ec);
    p.reset();
    CHECK_FALSE(p.error());
    CHECK(p.parse_head("GET / HTTP/1.1\r\nHost: h\r\n\r\n") == status::head_done);
  }

  TEST_CASE("parse_body before the head is done is a caller bug, reported as 500") {
    http::request_parser p;
    CHECK(p.parse_body("x").st == status::error);
    CHECK(http::status_for(p.error()) == 500);
  }

  TEST_CASE("pipelined requests parse in order with exact offsets") {
    const std::string first = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    const std::string second =
        "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n";
    const std::string third = "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    const std::string all = first + second + third;

    http::request_parser p;
    std::string_view rest = all;
    std::vector<std::string> targets, bodies;
    while (!rest.empty()) {
      REQUIRE(p.parse_head(rest) == status::head_done);
      targets.emplace_back(p.head().target);
      rest.remove_prefix(p.head_size());
      std::string body;
      for (;;) {
        const auto r = p.parse_body(rest);
        REQUIRE(r.st != status::error);
        body.append(r.data);
        rest.remove_prefix(r.consumed);
        if (r.st == status::message_done) break;
      }
      bodies.push_back(body);
      p.reset();
      if (targets.size() == 1) CHECK(rest.size() == second.size() + third.size());
      if (targets.size() == 2) CHECK(rest.size() == third.size());
    }
    CHECK(targets == std::vector<std::string>{"/a", "/b", "/c"});
    CHECK(bodies == std::vector<std::string>{"hello", "abcde", ""});

    const outcome o = run_all_ways(all);
    CHECK(o.v == verdict::complete);
    REQUIRE(o.messages.size() == 3);
    CHECK(o.messages[1].trailers ==
          std::vector<std::pair<std::string, std::string>>{{"X-Trailer", "t"}});
  }

  TEST_CASE("chunked body: data views, body_data for split chunks, trailers") {
    http::request_parser p;
    const std::string head = "PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    REQUIRE(p.parse_head(head) == status::head_done);
    CHECK(p.head().body == http::body_kind::chunked);
    const std::string body =
        "5;name=\"quoted \\\" \\\\ value\"; flag ;x = y\r\nhello\r\n"
        "6\r\n world\r\nA\r\n0123456789\r\n"
        "000;last\r\nVary: *\r\nContent-Type: text/plain\r\n\r\nNEXT";
    std::string_view in = body;
    auto r = p.parse_body(in);
    CHECK(r.st == status::body_data);
    CHECK(r.data == "hello");
    in.remove_prefix(r.consumed);
    r = p.parse_body(in);
    CHECK(r.st == status::body_data);
    CHECK(r.data == " world");
    in.remove_prefix(r.consumed);
    r = p.parse_body(in);
    CHECK(r.st == status::message_done);
    CHECK(r.data == "0123456789");
    CHECK(in.substr(r.consumed) == "NEXT");
    CHECK(p.body_bytes_seen() == 21);
    REQUIRE(p.trailers().size() == 2);
    CHECK(p.trailers().get("content-type") == "text/plain"sv);
    CHECK(p.trailers()[0].name == "Vary");
  }

  TEST_CASE("chunked body split inside a chunk gives need_more with the data so far") {
    http::request_parser p;
    REQUIRE(p.parse_head("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") ==
            status::head_done);
    auto r = p.parse_body("a\r\n0123");
    CHECK(r.st == status::need_more);
    CHECK(r.consumed == 7);
    CHECK(r.data == "0123");
    r = p.parse_body("456789\r");
    CHECK(r.st == status::need_more);
    CHECK(r.data == "456789");
    r = p.parse_body("\n0\r\n\r\n");
    CHECK(r.st == status::message_done);
    CHECK(r.data.empty());
    CHECK(r.consumed == 6);
  }

  TEST_CASE("trailers are parsed as strictly as headers") {
    const std::string te = with_host("Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n");
    CHECK(error_of(te + "Bad Name: x\r\n\r\n") == http::error::whitespace_before_colon);
    CHECK(error_of(te + "X: a\r\n b\r\n\r\n") == http::error::obs_fold);
    CHECK(error_of(te + "X: a\nY: b\r\n\r\n") == http::error::bare_lf);
    CHECK(error_of(te + "X: \x01\r\n\r\n") == http::error::invalid_header_value);
    const message m = single(te + "X: 1\r\nX: 2\r\n\r\n");
    CHECK(m.trailers.size() == 2);
    CHECK(m.headers.size() == 2);  // trailers do not leak into the header list
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: limits") {
  // Feeds `input` in `piece`-sized steps and returns how many bytes had been fed at the error.
  std::size_t fed_at_error(const std::string& input, std::size_t piece, http::parser_limits limits,
                           std::error_code& ec) {
    http::request_parser p(limits);
    for (std::size_t n = piece; n < input.size() + piece; n += piece) {
      const std::size_t fed = std::min(n, input.size());
      const status st = p.parse_head(std::string_view(input).substr(0, fed));
      if (st == status::error) {
        ec = p.error();
        return fed;
      }
      REQUIRE(st == status::need_more);
    }
    return input.size() + 1;
  }

  TEST_CASE("a 1 MB target is refused with 414 long before it is all received") {
    const std::string input = "GET /" + std::string(1 << 20, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
    std::error_code ec;
    const std::size_t fed = fed_at_error(input, 1024, {}, ec);
    CHECK(ec == http::error::uri_too_long);
    CHECK(http::status_for(ec) == 414);
    CHECK(fed <= 8 * 1024 + 1024 + 5);
  }

  TEST_CASE("target limit boundary") {
    http::parser_limits limits;
    limits.max_target = 10;
    CHECK(single("GET /123456789 HTTP/1.1\r\nHost: h\r\n\r\n", limits).target.size() == 10);
    CHECK(error_of("GET /1234567890 HTTP/1.1\r\nHost: h\r\n\r\n", limits) ==
          http::error::uri_too_long);
    CHECK(error_of("GET /1234567890", limits) == http::error::uri_too_long);
  }

  TEST_CASE("header section over max_head_bytes: 431 as soon as exceeded") {
    std::string input = "GET / HTTP/1.1\r\nHost: h\r\n";
    while (input.size() < 200 * 1024) input += "X-Filler: " + std::string(100, 'f') + "\r\n";
    std::error_code ec;
    http::parser_limits limits;
    limits.max_header_count = 100000;
    const std::size_t fed = fed_at_error(input, 1000, limits, ec);
    CHECK(ec == http::error::headers_too_large);
    CHECK(http::status_for(ec) == 431);
    CHECK(fed <= 16 * 1024 + 1000);
  }

  TEST_CASE("head size boundary, leading empty lines included") {
    const std::string req = "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    http::parser_limits limits;
    limits.max_head_bytes = req.size();
    CHECK(run_all_ways(req, limits).v == verdict::complete);
    limits.max_head_bytes = req.size() - 1;
    CHECK(error_of(req, limits) == http::error::headers_too_large);
    // Bytes after a head of exactly max_head_bytes are not the head's.
    limits.max_head_bytes = req.size();
    CHECK(run_all_ways(req + req.substr(2), limits).messages.size() == 2);
  }

  TEST_CASE("too many header fields") {
    http::parser_limits limits;
    limits.max_header_count = 3;
    CHECK(single("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", limits).headers.size() == 3);
    const std::error_code ec =
        error_of("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n", limits);
    CHECK(ec == http::error::too_many_headers);
    CHECK(http::status_for(ec) == 431);
  }

  TEST_CASE("chunk-size line and trailer section limits") {
    http::parser_limits limits;
    limits.max_chunk_line = 16;
    const std::string te = with_host("Transfer-Encoding: chunked\r\n\r\n");
    CHECK(single(te + "1;abcdefghijkl\r\nx\r\n0\r\n\r\n", limits).body ==
          "x");  // 16 bytes with CRLF
    CHECK(error_of(te + "1;abcdefghijklm\r\nx\r\n0\r\n\r\n", limits) ==
          http::error::chunk_line_too_long);
    CHECK(error_of(te + "00000000000000001\r\n", limits) == http::error::chunk_line_too_long);

    limits = {};
    limits.max_trailer_bytes = 15;
    CHECK(single(te + "0\r\nA: 1234\r\nB:\r\n\r\n", limits).trailers.size() == 2);  // exactly 15
    CHECK(error_of(te + "0\r\nA: 12345\r\nB:\r\n\r\n", limits) == http::error::trailers_too_large);
    limits = {};
    limits.max_header_count = 1;
    CHECK(error_of(te + "0\r\nA: 1\r\nB: 2\r\n\r\n", limits) == http::error::too_many_headers);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: request_head ownership") {
  TEST_CASE("views follow the head when moved or copied, short and long strings alike") {
    for (const std::string& target :
         {"/"s, "/a/long/target/that/does/not/fit/in/a/small/string/buffer"s}) {
      CAPTURE(target);
      http::request_parser p;
      const std::string req = "GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n";
      REQUIRE(p.parse_head(req) == status::head_done);
      http::request_head copy = p.head();
      http::request_head moved = std::move(p.head());
      p.reset();
      REQUIRE(p.parse_head("DELETE /other HTTP/1.1\r\nHost: x\r\n\r\n") == status::head_done);
      CHECK(copy.method == "GET");
      CHECK(copy.target == target);
      CHECK(moved.method == "GET");
      CHECK(moved.target == target);
      CHECK(moved.headers.get("host") == "h"sv);
      http::request_head assigned;
      assigned = moved;
      moved = http::request_head{};
      CHECK(assigned.target == target);
      http::request_head& same = assigned;
      assigned = std::move(same);  // self-move leaves it intact
      CHECK(assigned.method == "GET");
    }
  }

  TEST_CASE("reset keeps the storage: the next head reuses it without reallocating") {
    const std::string long_value(200, 'v');  // well beyond any small-string buffer
    const std::string req = "GET /" + long_value + " HTTP/1.1\r\nHost: h\r\nX: " + long_value +
                            "\r\n\r\n";
    http::request_parser p;
    REQUIRE(p.parse_head(req) == status::head_done);
    const char* const fields_storage = p.head().headers[0].name.data();
    const char* const line_storage = p.head().method.data();
    p.reset();
    REQUIRE(p.parse_head(req) == status::head_done);
    CHECK(p.head().headers[0].name.data() == fields_storage);
    CHECK(p.head().method.data() == line_storage);
  }

  TEST_CASE("reset clears everything for the next message") {
    http::request_parser p;
    REQUIRE(p.parse_head("POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         "Connection: close\r\nExpect: 100-continue\r\n\r\n") == status::head_done);
    REQUIRE(p.parse_body("0\r\nT: 1\r\n\r\n").st == status::message_done);
    p.reset();
    REQUIRE(p.parse_head("GET /2 HTTP/1.1\r\nHost: h\r\n\r\n") == status::head_done);
    CHECK(p.head().target == "/2");
    CHECK(p.head().headers.size() == 1);
    CHECK(p.head().body == http::body_kind::none);
    CHECK(p.head().keep_alive);
    CHECK_FALSE(p.head().expect_continue);
    CHECK(p.trailers().empty());
    CHECK(p.body_bytes_seen() == 0);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http serializer") {
  const std::string date = "Sun, 06 Nov 1994 08:49:37 GMT";

  http::fields with_date(
      std::initializer_list<std::pair<std::string_view, std::string_view>> extra = {}) {
    http::fields f;
    for (const auto& [n, v] : extra) f.add(n, v);
    f.add("Date", date);
    return f;
  }

  std::string head(unsigned status, const http::fields& f, http::framing fr, std::uint64_t n,
                   bool keep_alive, bool http10 = false) {
    std::string out = "prefix|";
    http::serialize_head(status, f, fr, n, keep_alive, http10, out);
    REQUIRE(out.substr(0, 7) == "prefix|");  // appends
    return out.substr(7);
  }

  TEST_CASE("exact bytes per framing") {
    CHECK(head(200, with_date({{"Content-Type", "text/plain"}}), http::framing::length, 5, true) ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: " + date +
              "\r\nContent-Length: 5\r\n\r\n");
    CHECK(head(200, with_date(), http::framing::chunked, 0, true) ==
          "HTTP/1.1 200 OK\r\nDate: " + date + "\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(head(404, with_date(), http::framing::length, 0, false) ==
          "HTTP/1.1 404 Not Found\r\nDate: " + date +
              "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    CHECK(head(200, with_date(), http::framing::length, 2, true, true) ==
          "HTTP/1.1 200 OK\r\nDate: " + date +
              "\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
    CHECK(head(200, with_date(), http::framing::none, 0, false, true) ==
          "HTTP/1.1 200 OK\r\nDate: " + date + "\r\nConnection: close\r\n\r\n");
  }

  TEST_CASE("no content framing where it is forbidden") {
    CHECK(head(204, with_date(), http::framing::length, 7, true) ==
          "HTTP/1.1 204 No Content\r\nDate: " + date + "\r\n\r\n");
    CHECK(head(304, with_date(), http::framing::chunked, 0, true) ==
          "HTTP/1.1 304 Not Modified\r\nDate: " + date + "\r\n\r\n");
    CHECK(head(100, with_date(), http::framing::length, 3, false) ==
          "HTTP/1.1 100 Continue\r\nDate: " + date + "\r\n\r\n");
    CHECK(
        head(101, with_date({{"Upgrade", "websocket"}, {"Connection", "Upgrade"}}),
             http::framing::none, 0, true) ==
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nDate: " +
            date + "\r\n\r\n");
  }

  TEST_CASE("HEAD: framing::length with a length and no body") {
    std::string out;
    http::serialize_head(200, with_date(), http::framing::length, 1234, true, false, out);
    CHECK(out.size() >= 4);
    CHECK(out.find("Content-Length: 1234\r\n") != std::string::npos);
    CHECK(out.substr(out.size() - 4) == "\r\n\r\n");  // and nothing after the head
  }

  TEST_CASE("the server's framing replaces the caller's") {
    const auto f = with_date({{"content-length", "99"},
                              {"Transfer-Encoding", "gzip"},
                              {"Connection", "keep-alive"},
                              {"X", "y"}});
    CHECK(head(200, f, http::framing::length, 1, false) ==
          "HTTP/1.1 200 OK\r\nX: y\r\nDate: " + date +
              "\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
  }

  TEST_CASE("Date is added when absent and is an IMF-fixdate") {
    std::string out;
    http::serialize_head(200, {}, http::framing::none, 0, true, false, out);
    const std::size_t at = out.find("Date: ");
    REQUIRE(at != std::string::npos);
    const std::string_view d = std::string_view(out).substr(at + 6, 29);
    CHECK(d == http::http_date());
    CHECK(d.substr(25) == " GMT");
    CHECK(d[3] == ',');
    CHECK(http::http_date().data() == http::http_date().data());  // cached
  }

  TEST_CASE("IMF-fixdate formatting") {
    char buf[http::detail::imf_fixdate_size];
    const auto fmt = [&](std::int64_t t) {
      http::detail::format_imf_fixdate(t, buf);
      return std::string(buf, sizeof buf);
    };
    CHECK(fmt(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(fmt(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(fmt(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK(fmt(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
    CHECK(fmt(-1) == "Wed, 31 Dec 1969 23:59:59 GMT");
  }

  TEST_CASE("header injection is refused") {
    std::string out;
    http::fields f;
    f.add("X", "a\r\nSet-Cookie: evil");
    CHECK_THROWS_AS(http::serialize_head(200, f, http::framing::none, 0, true, false, out),
                    std::invalid_argument);
    http::fields g;
    g.add("Bad Name", "v");
    CHECK_THROWS_AS(http::serialize_head(200, g, http::framing::none, 0, true, false, out),
                    std::invalid_argument);
  }

  TEST_CASE("chunks") {
    std::string out;
    http::append_chunk("hello", out);
    http::append_chunk("", out);
    http::append_chunk(std::string(26, 'z'), out);
    out.append(http::last_chunk);
    CHECK(out == "5\r\nhello\r\n1a\r\n" + std::string(26, 'z') + "\r\n0\r\n\r\n");
    // What we frame, we parse back.
    const message m = single(with_host("Transfer-Encoding: chunked\r\n\r\n") + out);
    CHECK(m.body == "hello" + std::string(26, 'z'));
  }

  TEST_CASE("reason phrases") {
    CHECK(http::reason_phrase(200) == "OK");
    CHECK(http::reason_phrase(413) == "Content Too Large");
    CHECK(http::reason_phrase(431) == "Request Header Fields Too Large");
    CHECK(http::reason_phrase(505) == "HTTP Version Not Supported");
    CHECK(http::reason_phrase(599).empty());
  }

  TEST_CASE("serialize_head with a body after it") {
    http::fields f;
    f.add("Content-Type", "text/plain; charset=utf-8");
    f.add("Date", date);
    std::string out;
    http::serialize_head(200, f, http::framing::length, 2, true, false, out);
    out.append("hi");
    CHECK(out == "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: " + date +
                     "\r\nContent-Length: 2\r\n\r\nhi");
  }

  TEST_CASE("error responses close the connection and name the problem") {
    std::string out;
    http::serialize_error(http::make_error_code(http::error::content_length_with_transfer_encoding),
                          out);
    CHECK(out.rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
    CHECK(out.find("Connection: close\r\n") != std::string::npos);
    const std::string body = "400 Bad Request: Content-Length together with Transfer-Encoding\n";
    CHECK(out.find("Content-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);
    CHECK(out.substr(out.size() - body.size()) == body);
    out.clear();
    http::serialize_error(http::make_error_code(http::error::uri_too_long), out);
    CHECK(out.rfind("HTTP/1.1 414 URI Too Long\r\n", 0) == 0);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: request-target forms") {
  TEST_CASE("absolute-form: the path is the path and the target's authority wins over Host") {
    const message m = single("GET http://evil.example/a/b?x=1 HTTP/1.1\r\nHost: good\r\n\r\n");
    CHECK(m.target == "http://evil.example/a/b?x=1");
    CHECK(m.authority == "evil.example");
    CHECK(m.path_and_query == "/a/b?x=1");
    // Scheme case-insensitive (RFC 3986 3.1); an empty path is "/" (RFC 9112 3.2.1).
    const message q = single("GET HTTPS://Evil.Example:8443?q=1 HTTP/1.1\r\nHost: good\r\n\r\n");
    CHECK(q.authority == "Evil.Example:8443");
    CHECK(q.path_and_query == "/?q=1");
    CHECK(single("GET http://[::1]:80 HTTP/1.0\r\n\r\n").path_and_query == "/");
    CHECK(single("GET http://[::1]:80 HTTP/1.0\r\n\r\n").authority == "[::1]:80");
    CHECK(single("GET http://a.b HTTP/1.1\r\nHost: c\r\n\r\n").path_and_query == "/");
    CHECK(single("OPTIONS http://a.b:/ HTTP/1.1\r\nHost: c\r\n\r\n").authority == "a.b:");
  }

  TEST_CASE("origin-form and asterisk-form leave the authority to Host; CONNECT names it") {
    const message origin = single("GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(origin.authority.empty());
    CHECK(origin.path_and_query == "/x?y");
    CHECK(single("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path_and_query == "*");
    const outcome tunnel = run_all_ways("CONNECT Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    REQUIRE(tunnel.messages.size() == 1);
    CHECK(tunnel.messages[0].authority == "Example.com:443");
    CHECK(tunnel.messages[0].path_and_query.empty());
    CHECK(run_all_ways("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n")
              .messages.at(0)
              .authority == "[2001:db8::1]:443");
  }

  TEST_CASE("the views follow the head, the appended \"/\" included") {
    http::request_parser p;
    REQUIRE(p.parse_head("GET http://a.example?q HTTP/1.1\r\nHost: h\r\n\r\n") ==
            status::head_done);
    const http::request_head moved = std::move(p.head());
    CHECK(moved.target == "http://a.example?q");
    CHECK(moved.authority == "a.example");
    CHECK(moved.path_and_query == "/?q");
    p.reset();
    REQUIRE(p.parse_head("GET /next HTTP/1.1\r\nHost: h\r\n\r\n") == status::head_done);
    CHECK(p.head().authority.empty());
    CHECK(p.head().path_and_query == "/next");
  }

  TEST_CASE("malformed absolute-form and authority-form: 400") {
    const std::vector<std::pair<std::string, http::error>> cases = {
        {"GET ftp://a/ HTTP/1.1", http::error::unsupported_target_scheme},
        {"GET javascript:x HTTP/1.1", http::error::unsupported_target_scheme},
        {"GET http:/a HTTP/1.1", http::error::invalid_target_authority},
        {"GET http:a HTTP/1.1", http::error::invalid_target_authority},
        {"GET http:///p HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://?q HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://:80/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://a:b/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://a:1:2/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://[::1/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://[]/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://[::1]x/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://a]b/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://a\"b/ HTTP/1.1", http::error::invalid_target_authority},
        {"GET http://good@evil/ HTTP/1.1", http::error::userinfo_in_target},
        {"GET http://u:p@good/ HTTP/1.1", http::error::userinfo_in_target},
        {"GET index.html HTTP/1.1", http::error::invalid_target_form},
        {"GET *x HTTP/1.1", http::error::invalid_target_form},
        {"GET 1http://a/ HTTP/1.1", http::error::invalid_target_form},
        {"GET a.b:80 HTTP/1.1", http::error::unsupported_target_scheme},
        {"CONNECT example.com HTTP/1.1", http::error::invalid_target_authority},
        {"CONNECT example.com: HTTP/1.1", http::error::invalid_target_authority},
        {"CONNECT /x HTTP/1.1", http::error::invalid_target_authority},
        {"CONNECT http://a:443/ HTTP/1.1", http::error::invalid_target_authority},
        {"CONNECT u@h:443 HTTP/1.1", http::error::userinfo_in_target},
    };
    for (const auto& c : cases) {
      CAPTURE(c.first);
      const std::error_code ec = error_of(c.first + "\r\nHost: good\r\n\r\n");
      CHECK_MESSAGE(ec == c.second, "got: ", ec.message());
      CHECK(http::status_for(ec) == 400);
    }
    // Found at the space after the target, whatever follows.
    CHECK(error_of("GET http://u@evil/ ") == http::error::userinfo_in_target);
    CHECK(error_of("CONNECT h HTTP/1.1\r\nContent-Length: x") ==
          http::error::invalid_target_authority);
  }
}

// ---------------------------------------------------------------------------------------------
TEST_SUITE("http parser: chunk framing bound") {
  const std::string te = with_host("Transfer-Encoding: chunked\r\n\r\n");

  // Feeds a chunked body in 1000-byte pieces; returns the parser for its counters at the end.
  http::request_parser& feed_body(http::request_parser& p, std::string_view body) {
    REQUIRE(p.parse_head(te) == status::head_done);
    std::string buf;
    for (std::size_t at = 0; at < body.size(); at += 1000) {
      buf.append(body.substr(at, 1000));
      for (auto st = status::body_data; st == status::body_data;) {
        const auto r = p.parse_body(buf);
        if (r.st == status::error || r.st == status::message_done) return p;
        buf.erase(0, r.consumed);
        st = r.st;
      }
    }
    return p;
  }

  std::string repeated(std::string_view chunk, std::size_t times) {
    std::string out;
    for (std::size_t i = 0; i < times; ++i) out += chunk;
    return out;
  }

  TEST_CASE("an extension flood is cut at max_chunk_framing beyond the body: 413") {
    // The CVE-2024-22019 shape: one body byte per 4 KB chunk-size line.
    const std::string chunk = "1;" + std::string(4000, 'e') + "\r\nx\r\n";
    const std::string flood = repeated(chunk, 1000) + "0\r\n\r\n";
    http::request_parser p;
    feed_body(p, flood);
    CHECK(p.error() == http::error::chunk_framing_too_large);
    CHECK(http::status_for(p.error()) == 413);
    // Cut at the first byte over: framing == body + allowance, and nothing more was taken.
    CHECK(p.body_bytes_seen() == 4);
    CHECK(p.body_wire_bytes() == 2 * p.body_bytes_seen() + 16 * 1024);
    CHECK(error_of(te + flood) == http::error::chunk_framing_too_large);
  }

  TEST_CASE("a flood of tiny chunks is cut once its framing outruns the body") {
    http::request_parser p;
    feed_body(p, repeated("1\r\nx\r\n", 10000));  // 5 framing bytes per body byte
    CHECK(p.error() == http::error::chunk_framing_too_large);
    CHECK(p.body_bytes_seen() < 16 * 1024 / 4 + 1);
    CHECK(p.body_wire_bytes() <= 2 * p.body_bytes_seen() + 16 * 1024);
    // Leading zeros are framing too.
    http::request_parser zeros;
    feed_body(zeros, repeated(std::string(3000, '0') + "1\r\nx\r\n", 100));
    CHECK(zeros.error() == http::error::chunk_framing_too_large);
  }

  TEST_CASE("chunks as long as their framing are never cut, however many") {
    const message m = single(te + repeated("5\r\nhello\r\n", 20000) + "0;last=1\r\nT: v\r\n\r\n");
    CHECK(m.body.size() == 100000);
    CHECK(m.trailers.size() == 1);
  }

  TEST_CASE("the allowance boundary, trailers counted") {
    http::parser_limits limits;
    const std::string body = "0\r\nA: 1234567890\r\n\r\n";  // 20 bytes of framing, no body
    limits.max_chunk_framing = 20;
    CHECK(single(te + body, limits).trailers.size() == 1);
    limits.max_chunk_framing = 19;
    CHECK(error_of(te + body, limits) == http::error::chunk_framing_too_large);
    limits.max_chunk_framing = 2;  // "0\r" fits, the LF does not
    CHECK(error_of(te + body, limits) == http::error::chunk_framing_too_large);
    // Body bytes extend the allowance: 10 framing bytes with 1 byte of body.
    limits.max_chunk_framing = 9;
    CHECK(single(te + "1\r\nx\r\n0\r\n\r\n", limits).body == "x");
    limits.max_chunk_framing = 8;
    CHECK(error_of(te + "1\r\nx\r\n0\r\n\r\n", limits) == http::error::chunk_framing_too_large);
    // The trailer limit still answers 431 when it is the smaller one.
    limits = {};
    limits.max_trailer_bytes = 10;
    CHECK(error_of(te + body, limits) == http::error::trailers_too_large);
  }

  TEST_CASE("body_wire_bytes: body and framing as received; body only for Content-Length") {
    http::request_parser p;
    REQUIRE(p.parse_head(te) == status::head_done);
    const std::string body = "5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n";
    CHECK(p.parse_body(body).st == status::message_done);
    CHECK(p.body_wire_bytes() == body.size());
    CHECK(p.body_bytes_seen() == 5);

    http::request_parser q;
    REQUIRE(q.parse_head(with_host("Content-Length: 3\r\n\r\n")) == status::head_done);
    CHECK(q.parse_body("abcNEXT").st == status::message_done);
    CHECK(q.body_wire_bytes() == 3);
  }
}
