// Conformance of the request parser with llhttp's own request corpus (Node.js's parser).
//
// Every strict case is run the way the server uses the parser (pipelined messages in a loop, the
// connection closed after a message without keep-alive, the parser stopped at an upgrade) and
// must agree with llhttp on the verdict and on every accepted message, or be listed below with
// the reason sluice deliberately differs. Lenient cases show what llhttp accepts only when asked
// to; they are run for robustness and reported, not compared.
//
// The corpus is optional data kept outside the repository: it is read from $SLUICE_CONFORMANCE_DIR,
// else from ../shared/conformance/ beside the source tree. Without it this suite exits with 77,
// which meson reports as skipped, after one line saying where it looked.
#define DOCTEST_CONFIG_IMPLEMENT
#include "sluice/http/parser.hpp"

#include "support/json.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef SLUICE_CONFORMANCE_DEFAULT_DIR
#error "tests/meson.build passes SLUICE_CONFORMANCE_DEFAULT_DIR, where the corpus is when not told otherwise"
#endif

namespace http = sluice::http;
namespace json = sluice::test::json;
using status = http::request_parser::status;

namespace {

// Where sluice deliberately differs from llhttp's strict mode, and why. Missing Host is not in
// this list: these cases run with `require_host = false`, since most llhttp vectors omit Host
// and the rule (RFC 9112 3.2) is a server policy, tested in http_parser_test.cpp.
const std::map<std::string, std::string, std::less<>> deliberate_differences = {
    {"sample:317", "HTTP/0.9 request line without version: rejected (HTTP/1.x only)"},
    {"method:375", "ICE/1.0 (SHOUTcast) protocol: rejected, HTTP only"},
    {"method:405", "RTSP/1.0 protocol: rejected, HTTP only"},
    {"method:433", "RTSP/1.0 protocol: rejected, HTTP only"},
    {"invalid:69",
     "ANNOUNCE over HTTP: accepted, any token is a method (RFC 9110 9.1); llhttp "
     "knows a fixed list"},
    {"invalid:359", "MKCOLA: accepted, any token is a method (RFC 9110 9.1)"},
    {"uri:225",
     "userinfo in an absolute-form target: 400 (RFC 9110 4.2.4 deprecates it; it can make a "
     "URI look like another host's)"},
    {"transfer-encoding:754",
     "'deflate, chunked': 501, we do not decode deflate; llhttp hands "
     "the still-deflated body over"},
    {"transfer-encoding:796", "'deflate' then 'chunked' fields: 501, as above"},
};

std::string base64_decode(std::string_view in) {
  const auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (in.size() % 4 != 0) throw std::runtime_error("base64: length not a multiple of 4");
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    unsigned bits = 0;
    int have = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = in[i + j];
      if (c == '=') {
        if (i + 4 != in.size() || j < 2) throw std::runtime_error("base64: misplaced padding");
        continue;
      }
      const int v = value(c);
      if (v < 0 || have < static_cast<int>(j))
        throw std::runtime_error("base64: invalid character");
      bits = bits << 6 | static_cast<unsigned>(v);
      ++have;
    }
    bits <<= 6 * (4 - have);
    for (int k = 0; k < have - 1; ++k)
      out.push_back(static_cast<char>(bits >> (16 - 8 * k) & 0xFF));
  }
  return out;
}

// RFC 9112 5: trailing whitespace is not part of a field value; llhttp reports it.
std::string_view trim_trailing_ows(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

using field_list = std::vector<std::pair<std::string, std::string>>;

struct got_message {
  std::string method, url, version;
  field_list headers;  // then trailers, as llhttp reports them
  std::string body;
  bool complete = false;
  bool operator==(const got_message&) const = default;
};

enum class verdict { complete, incomplete, error, upgrade };

const char* name(verdict v) {
  switch (v) {
    case verdict::complete: return "complete";
    case verdict::incomplete: return "incomplete";
    case verdict::error: return "error";
    case verdict::upgrade: return "upgrade";
  }
  return "?";
}

struct result {
  std::vector<got_message> messages;
  verdict v = verdict::complete;
  std::error_code ec;
  bool operator==(const result&) const = default;
};

bool only_empty_lines(std::string_view s) { return s.find_first_not_of("\r\n") == s.npos; }

void append_fields(const http::fields& f, field_list& out) {
  for (const auto [n, v] : f) out.emplace_back(n, v);
}

// Feeds `raw` in pieces of the given sizes (cycled) like a server reading a socket.
// `skip_body` mirrors llhttp's skipBody test flag: the caller ignores the body framing.
result run(std::string_view raw, const std::vector<std::size_t>& piece_sizes, bool skip_body) {
  http::parser_limits limits;
  limits.require_host = false;
  http::request_parser parser(limits);
  result out;
  std::string buf;
  std::size_t fed = 0, piece = 0;
  const auto feed = [&] {
    if (fed == raw.size()) return false;
    const std::size_t n = std::min(piece_sizes[piece++ % piece_sizes.size()], raw.size() - fed);
    buf.append(raw.substr(fed, n));
    fed += n;
    return true;
  };
  const auto fail = [&] {
    out.v = verdict::error;
    out.ec = parser.error();
    // Body bytes streamed before the error depend on how the input was split; the message is
    // discarded anyway.
    if (!out.messages.empty() && !out.messages.back().complete) out.messages.back().body.clear();
    return out;
  };
  for (;;) {
    status st = parser.parse_head(buf);
    while (st == status::need_more && feed()) st = parser.parse_head(buf);
    if (st == status::error) return fail();
    if (st == status::need_more) {
      out.v = only_empty_lines(buf) ? verdict::complete : verdict::incomplete;
      return out;
    }
    const http::request_head& h = parser.head();
    got_message& m = out.messages.emplace_back();
    m.method = h.method;
    m.url = h.target;
    m.version = "1." + std::to_string(h.version_minor);
    append_fields(h.headers, m.headers);
    buf.erase(0, parser.head_size());
    while (!skip_body) {
      const auto r = parser.parse_body(buf);
      m.body.append(r.data);
      buf.erase(0, r.consumed);
      if (r.st == status::message_done) break;
      if (r.st == status::error) return fail();
      if (r.st == status::need_more && !feed()) {
        out.v = verdict::incomplete;
        return out;
      }
    }
    append_fields(parser.trailers(), m.headers);
    m.complete = true;
    if (h.upgrade) {
      out.v = verdict::upgrade;
      return out;
    }
    if (!h.keep_alive) {  // like llhttp's CLOSED_CONNECTION: only empty lines may follow
      while (feed()) {
      }
      out.v = only_empty_lines(buf) ? verdict::complete : verdict::error;
      return out;
    }
    parser.reset();
  }
}

struct test_case {
  std::string id;
  std::string raw;
  bool skip_body = false;
  const json::value* expect = nullptr;
};

verdict expected_verdict(const json::value& expect) {
  const std::string& o = expect["outcome"].as_string();
  if (o == "complete") return verdict::complete;
  if (o == "incomplete") return verdict::incomplete;
  if (o == "error") return verdict::error;
  if (o == "upgrade") return verdict::upgrade;
  throw std::runtime_error("unknown outcome " + o);
}

// Empty when sluice agrees with llhttp, else what differs.
std::string disagreement(const result& got, const json::value& expect) {
  const verdict want = expected_verdict(expect);
  if (got.v != want) {
    std::string why = std::string("verdict ") + name(got.v) + ", llhttp " + name(want);
    if (got.ec) why += " (" + got.ec.message() + ")";
    return why;
  }
  const json::array& messages = expect["messages"].as_array();
  std::size_t expected_complete = 0;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const json::value& e = messages[i];
    const bool complete = e["complete"].as_bool();
    expected_complete += complete;
    if (i >= got.messages.size()) {
      if (complete) return "message " + std::to_string(i) + " missing";
      continue;
    }
    const got_message& g = got.messages[i];
    const std::string prefix = "message " + std::to_string(i) + ": ";
    // Message texts are UTF-8 in the corpus, as were the request's bytes (only `raw` is latin-1).
    if (!e["method"].is_null() && g.method != e["method"].as_string())
      return prefix + "method " + g.method;
    if (!e["url"].is_null() && g.url != e["url"].as_string()) return prefix + "url " + g.url;
    if (!complete) continue;  // llhttp stopped inside it: only the request line is comparable
    if (!g.complete) return prefix + "not complete";
    if (e["version"].is_null() || g.version != e["version"].as_string())
      return prefix + "version " + g.version;
    field_list want_fields;
    for (const json::value& f : e["headers"].as_array())
      want_fields.emplace_back(f.as_array().at(0).as_string(),
                               trim_trailing_ows(f.as_array().at(1).as_string()));
    if (g.headers != want_fields) return prefix + "headers differ";
    const std::string want_body = e["body"].is_null() ? "" : e["body"].as_string();
    if (g.body != want_body) return prefix + "body '" + g.body + "'";
  }
  std::size_t got_complete = 0;
  for (const got_message& g : got.messages) got_complete += g.complete;
  // At an upgrade llhttp may stop before calling the message complete (PRI): not a difference.
  if (got_complete > expected_complete + (want == verdict::upgrade ? 1 : 0))
    return "more messages than llhttp: " + std::to_string(got_complete);
  return {};
}

bool has_tag(const json::value& c, std::string_view tag) {
  if (const json::value* tags = c.find("tags"))
    for (const json::value& t : tags->as_array())
      if (t.as_string() == tag) return true;
  return false;
}

// Where the corpus is looked for: $SLUICE_CONFORMANCE_DIR when set, else beside the source tree.
std::filesystem::path corpus_path() {
  const char* dir = std::getenv("SLUICE_CONFORMANCE_DIR");
  return std::filesystem::path(dir != nullptr && *dir != '\0' ? dir : SLUICE_CONFORMANCE_DEFAULT_DIR) /
         "llhttp_requests.json";
}

const json::value& corpus() {
  static const json::value doc = [] {
    try {
      return json::parse_file(corpus_path().string());
    } catch (const std::exception& e) {
      FAIL("cannot load the llhttp conformance corpus at " << corpus_path().string() << ": "
           << std::string(e.what()));
      throw;
    }
  }();
  return doc;
}

std::vector<test_case> cases(std::string_view mode, std::size_t* pausing = nullptr) {
  std::vector<test_case> out;
  for (const json::value& c : corpus()["cases"].as_array()) {
    if (c["mode"].as_string() != mode) continue;
    if (c["skip"].as_bool() || has_tag(c, "pause-callback")) {
      if (pausing != nullptr) ++*pausing;
      continue;
    }
    const json::value* skip_body = c["meta"].find("skipBody");
    out.push_back({c["id"].as_string(), base64_decode(c["raw_b64"].as_string()),
                   skip_body != nullptr && skip_body->as_bool(), &c["expect"]});
  }
  return out;
}

void report(const std::string& line) {
  MESSAGE(line);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace

TEST_CASE("base64 decoder") {
  CHECK(base64_decode("") == "");
  CHECK(base64_decode("TWFu") == "Man");
  CHECK(base64_decode("TWE=") == "Ma");
  CHECK(base64_decode("TQ==") == "M");
  CHECK(base64_decode("R0VUIC8gSFRUUC8xLjENCg0K") == "GET / HTTP/1.1\r\n\r\n");
  CHECK_THROWS(base64_decode("TQ="));
  CHECK_THROWS(base64_decode("T=Q="));
  CHECK_THROWS(base64_decode("TQ*="));
}

TEST_CASE("json reader") {
  const json::value v = json::parse(
      R"( {"a": [1, -2.5e1, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} )");
  CHECK(v["a"].as_array().size() == 5);
  CHECK(v["a"].as_array()[1].as_number() == -25.0);
  CHECK(v["a"].as_array()[4].is_null());
  CHECK(v["s"].as_string() == "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(v["o"].as_object().empty());
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS(json::parse("{\"a\": }"));
  CHECK_THROWS(json::parse("[1, 2"));
  CHECK_THROWS(json::parse("\"\\ud800\""));
  CHECK_THROWS(json::parse("01"));
  CHECK_THROWS(json::parse("{} x"));
}

TEST_CASE("llhttp strict request cases") {
  std::size_t pausing = 0;
  const std::vector<test_case> strict = cases("strict", &pausing);
  REQUIRE_MESSAGE(!strict.empty(), "no strict cases in " << corpus_path().string());

  std::size_t agree = 0;
  std::vector<std::string> differing;
  std::mt19937 rng(20240521);
  for (const test_case& c : strict) {
    CAPTURE(c.id);
    const result whole = run(c.raw, {c.raw.size() + 1}, c.skip_body);
    // The verdict cannot depend on how the bytes were split.
    CHECK_MESSAGE(run(c.raw, {1}, c.skip_body) == whole, "byte by byte differs from whole");
    std::vector<std::size_t> sizes;
    for (int i = 0; i < 16; ++i)
      sizes.push_back(std::uniform_int_distribution<std::size_t>(1, 23)(rng));
    CHECK_MESSAGE(run(c.raw, sizes, c.skip_body) == whole, "random split differs from whole");

    const std::string why = disagreement(whole, *c.expect);
    const auto listed = deliberate_differences.find(c.id);
    if (why.empty()) {
      ++agree;
      CHECK_MESSAGE(listed == deliberate_differences.end(), c.id,
                    " agrees with llhttp now: remove it from deliberate_differences");
    } else if (listed != deliberate_differences.end()) {
      differing.push_back(c.id + " (" + listed->second + "; " + why + ")");
    } else {
      FAIL_CHECK(c.id, " disagrees with llhttp without a listed reason: ", why);
    }
  }
  std::string line = "conformance: " + std::to_string(agree) + "/" + std::to_string(strict.size()) +
                     " strict cases agree, " + std::to_string(pausing) + " skipped (pausing), " +
                     std::to_string(differing.size()) + " deliberately different:";
  for (const std::string& d : differing) line += "\n  " + d;
  report(line);
  CHECK(agree + differing.size() == strict.size());
  CHECK(pausing == 13);
}

TEST_CASE("llhttp lenient request cases: sluice stays strict") {
  const std::vector<test_case> lenient = cases("lenient");
  std::size_t rejected = 0;
  for (const test_case& c : lenient) {
    const result r = run(c.raw, {c.raw.size() + 1}, c.skip_body);
    CHECK(run(c.raw, {1}, c.skip_body) == r);
    rejected += r.v == verdict::error;
  }
  report("conformance: sluice rejects " + std::to_string(rejected) + "/" +
         std::to_string(lenient.size()) +
         " lenient cases (accepted by llhttp only with leniency flags)");
}

// 77 is meson's "skipped": a missing corpus is not a failure, but it must not look like a pass.
int main(int argc, char** argv) {
  if (!std::filesystem::exists(corpus_path())) {
    std::printf("http_conformance: skipped (no llhttp corpus at %s)\n", corpus_path().c_str());
    return 77;
  }
  return doctest::Context(argc, argv).run();
}
