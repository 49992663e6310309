// The WebSocket codec on bytes: UTF-8 validation, the frame parser's rules and their close codes,
// messages (fragments, control frames between them, Close payloads), permessage-deflate and the
// opening handshake's checks. No sockets.
#include "sluice/ws/handshake.hpp"
#include "sluice/ws/reader.hpp"

#include "support/ws_client.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

using namespace sluice::test;
using sluice::ws::opcode;
namespace cc = sluice::ws::close_code;

// What a reader reports for `bytes`, fed `step` bytes at a time: one line per event.
struct outcome {
  std::vector<std::string> events;
  std::uint16_t error = 0;
};

outcome feed(ws::message_reader& r, std::string bytes, std::size_t step = std::string::npos) {
  outcome o;
  for (std::size_t at = 0; at < bytes.size() && !o.error;) {
    const std::size_t n = std::min(step, bytes.size() - at);
    std::span<char> in(bytes.data() + at, n);
    std::size_t used = 0;
    for (;;) {
      auto [what, consumed] = r.read(in.subspan(used));
      used += consumed;
      using e = ws::message_reader::event;
      if (what == e::need_more) break;
      if (what == e::error) {
        o.error = r.error_code();
        break;
      }
      if (what == e::message) {
        auto m = r.take_message();
        o.events.push_back((m.kind == ws::message_kind::text ? "text:" : "binary:") + m.data);
      } else if (what == e::ping || what == e::pong) {
        o.events.push_back((what == e::ping ? "ping:" : "pong:") + std::string(r.control_payload()));
      } else {
        o.events.push_back("close:" + std::to_string(r.close_code()) + ":" + std::string(r.close_reason()));
      }
    }
    CHECK((o.error || used == n));
    at += n;
  }
  return o;
}

std::uint16_t error_for(std::string bytes, ws::reader_options options = {}) {
  ws::message_reader r(options);
  return feed(r, std::move(bytes)).error;
}

constexpr std::uint8_t text_start = static_cast<std::uint8_t>(opcode::text);  // FIN clear
constexpr std::uint8_t more = static_cast<std::uint8_t>(opcode::continuation);

}  // namespace

TEST_CASE("utf8_validator accepts UTF-8 however it is split, and rejects overlong forms, surrogates and > U+10FFFF") {
  const std::string good = "plain ascii, then \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 and \xF4\x8F\xBF\xBF";
  for (std::size_t cut = 0; cut <= good.size(); ++cut) {
    ws::utf8_validator v;
    CHECK(v.feed(std::string_view(good).substr(0, cut)));
    CHECK(v.feed(std::string_view(good).substr(cut)));
    CHECK(v.complete());
  }
  for (std::string_view bad : {"\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                               "\x80", "a\xFF", "\xC3\x28"}) {
    CAPTURE(bad);
    CHECK(!ws::is_valid_utf8(bad));
  }
  ws::utf8_validator cut;
  CHECK(cut.feed("\xE2\x82"));
  CHECK(!cut.complete());
}

TEST_CASE("frame_parser unmasks payloads in every length form, whole or a byte at a time") {
  for (std::size_t size : {0u, 5u, 125u, 126u, 65535u, 65536u}) {
    std::string payload(size, '\0');
    for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<char>('a' + i % 26);
    for (std::size_t step : {std::size_t(1), std::size_t(7), std::string::npos}) {
      if (step == 1 && size > 200) continue;
      CAPTURE(size);
      CAPTURE(step);
      ws::message_reader r({.max_message = 1 << 20});
      auto o = feed(r, client_frame(fin(opcode::binary), payload), step);
      REQUIRE(o.events.size() == 1);
      CHECK(o.events[0] == "binary:" + payload);
    }
  }
}

TEST_CASE("a fragmented message is joined, with control frames between its fragments") {
  ws::message_reader r({});
  auto o = feed(r, client_frame(text_start, "Hel") + client_frame(fin(opcode::ping), "p1") +
                   client_frame(more, "lo, ") + client_frame(fin(opcode::pong), "") +
                   client_frame(fin(opcode::continuation), "world") + client_frame(fin(opcode::text), "next"), 3);
  CHECK(o.error == 0);
  CHECK(o.events == std::vector<std::string>{"ping:p1", "pong:", "text:Hello, world", "text:next"});
}

TEST_CASE("each malformed frame fails with the close code RFC 6455 asks for" * doctest::test_suite("hostile")) {
  CHECK(error_for(client_frame(fin(opcode::text), "hi", false)) == cc::protocol_error);  // unmasked
  CHECK(error_for(client_frame(0x80 | 0x20 | 1, "hi")) == cc::protocol_error);            // RSV2
  CHECK(error_for(client_frame(0x80 | 0x10 | 1, "hi")) == cc::protocol_error);            // RSV3
  CHECK(error_for(client_frame(0x80 | 0x40 | 1, "hi")) == cc::protocol_error);            // RSV1, no deflate
  for (std::uint8_t op : {3, 4, 5, 6, 7, 11, 12, 13, 14, 15}) {
    CAPTURE(int(op));
    CHECK(error_for(client_frame(0x80 | op, "")) == cc::protocol_error);
  }
  CHECK(error_for(client_frame(static_cast<std::uint8_t>(opcode::ping), "")) == cc::protocol_error);  // fragmented
  CHECK(error_for(client_frame(fin(opcode::ping), std::string(126, 'x'))) == cc::protocol_error);
  CHECK(error_for(client_frame(fin(opcode::continuation), "x")) == cc::protocol_error);  // nothing to continue
  CHECK(error_for(client_frame(text_start, "a") + client_frame(fin(opcode::text), "b")) == cc::protocol_error);
  // 5 bytes in the 16-bit form, and a 64-bit length with its top bit set.
  CHECK(error_for(std::string("\x82\xFE\x00\x05", 4) + "mask" + "12345") == cc::protocol_error);
  CHECK(error_for(std::string("\x82\xFF\x80\x00\x00\x00\x00\x00\x00\x00", 10) + "mask") == cc::protocol_error);
  CHECK(error_for(client_frame(fin(opcode::text), "\xC3\x28")) == cc::invalid_payload);
  CHECK(error_for(client_frame(fin(opcode::close), "\x03")) == cc::protocol_error);  // 1-byte Close
  for (std::uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000}) {
    CAPTURE(code);
    CHECK(error_for(client_frame(fin(opcode::close), close_payload(code))) == cc::protocol_error);
  }
  CHECK(error_for(client_frame(fin(opcode::close), close_payload(1000) + "\xFF")) == cc::invalid_payload);
}

TEST_CASE("a message over max_message fails with 1009 from its headers, before its payload arrives" * doctest::test_suite("hostile")) {
  ws::message_reader r({.max_message = 100});
  // Only the header of a 101-byte frame.
  auto o = feed(r, client_frame(fin(opcode::binary), std::string(101, 'x')).substr(0, 8));
  CHECK(o.error == cc::message_too_big);
  // Fragments that add up to more.
  CHECK(error_for(client_frame(text_start, std::string(60, 'x')) + client_frame(fin(opcode::continuation), std::string(41, 'x')),
                  {.max_message = 100}) == cc::message_too_big);
  ws::message_reader exact({.max_message = 100});
  CHECK(feed(exact, client_frame(fin(opcode::binary), std::string(100, 'x'))).events.size() == 1);
}

TEST_CASE("bad UTF-8 fails as soon as it arrives, across fragments, and a text cut mid-character fails at its end" * doctest::test_suite("hostile")) {
  ws::message_reader early({});
  // The fragment after "\xE2" cannot continue it; the message never ends, the error is there.
  CHECK(feed(early, client_frame(text_start, "ok \xE2") + client_frame(more, "\x28")).error == cc::invalid_payload);
  CHECK(error_for(client_frame(text_start, "\xE2\x82") + client_frame(fin(opcode::continuation), "\xAC")) == 0);
  CHECK(error_for(client_frame(text_start, "\xE2\x82") + client_frame(fin(opcode::continuation), "")) == cc::invalid_payload);
  CHECK(error_for(client_frame(fin(opcode::binary), "\xFF\xFE")) == 0);  // binary is not checked
}

TEST_CASE("a Close frame reports its code and reason; an empty one reports 1005") {
  ws::message_reader r({});
  auto o = feed(r, client_frame(fin(opcode::close), close_payload(4001, "bye \xE2\x82\xAC")));
  CHECK(o.events == std::vector<std::string>{"close:4001:bye \xE2\x82\xAC"});
  ws::message_reader empty({});
  CHECK(feed(empty, client_frame(fin(opcode::close), "")).events == std::vector<std::string>{"close:1005:"});
}

TEST_CASE("server frames: shortest length forms, and close reasons cut at a character boundary") {
  CHECK(ws::make_frame(opcode::text, "hi") == std::string("\x81\x02hi", 4));
  CHECK(ws::make_frame(opcode::binary, std::string(126, 'x')).substr(0, 4) == std::string("\x82\x7E\x00\x7E", 4));
  CHECK(ws::make_frame(opcode::binary, std::string(65536, 'x')).substr(0, 10) ==
        std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  CHECK(ws::make_frame(opcode::text, "a", false, true)[0] == '\x41');
  std::string euros;
  for (int i = 0; i < 50; ++i) euros += "\xE2\x82\xAC";  // 150 bytes
  auto payload = ws::make_close_payload(1001, euros);
  CHECK(payload.size() == 2 + 123);  // 41 whole euro signs
  CHECK(ws::is_valid_utf8(payload.substr(2)));
}

TEST_CASE("permessage-deflate: compressed messages round trip, fragmented or not, with and without context takeover") {
  for (bool keep : {false, true}) {
    CAPTURE(keep);
    ws::deflater out(15, keep);
    ws::inflater in(keep);
    ws::message_reader r({.max_message = 1 << 20, .compression = &in});
    std::string text(5000, 'a');
    for (int i = 0; i < 5000; i += 7) text[i] = 'b';
    auto z1 = out.compress(text, 0);
    CHECK(z1.size() < text.size() / 10);
    auto z2 = out.compress(text, 0);
    if (keep) CHECK(z2.size() < z1.size());  // the second refers to the first
    auto half = z2.size() / 2;
    auto o = feed(r, client_frame(0x80 | 0x40 | 1, z1) + client_frame(0x40 | 1, z2.substr(0, half)) +
                     client_frame(fin(opcode::ping), "between") + client_frame(fin(opcode::continuation), z2.substr(half)) +
                     client_frame(fin(opcode::binary), "plain"), 100);
    CHECK(o.error == 0);
    CHECK(o.events == std::vector<std::string>{"text:" + text, "ping:between", "text:" + text, "binary:plain"});
  }
}

TEST_CASE("permessage-deflate: a zip bomb stops at max_message with 1009, corrupt data is 1007" * doctest::test_suite("hostile")) {
  ws::deflater out(15, false);
  const std::string bomb = out.compress(std::string(50 << 20, '\0'), 0);  // 50 MiB of zeros
  CHECK(bomb.size() < 100 * 1024);
  ws::inflater in(false);
  ws::message_reader r({.max_message = 1 << 20, .compression = &in});
  CHECK(feed(r, client_frame(0x80 | 0x40 | 2, bomb)).error == cc::message_too_big);

  ws::inflater in2(false);
  CHECK(error_for(client_frame(0x80 | 0x40 | 2, "\xFF\xFF\xFF\xFF garbage"), {.compression = &in2}) == cc::invalid_payload);
  ws::inflater in3(false);
  auto z = ws::deflater(15, false).compress("\xC3\x28", 0);
  CHECK(error_for(client_frame(0x80 | 0x40 | 1, z), {.compression = &in3}) == cc::invalid_payload);  // bad UTF-8 inside
}

TEST_CASE("the opening handshake: the accept key, and each refusal's status") {
  CHECK(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");  // RFC 6455 1.3
  auto status_for = [](std::string raw) -> unsigned {
    sluice::http::request_parser p;
    REQUIRE(p.parse_head(raw) == sluice::http::request_parser::status::head_done);
    auto refusal = ws::check_handshake(p.head());
    return refusal ? refusal->status : 101;
  };
  const std::string good = upgrade_request_ws();
  CHECK(status_for(good) == 101);
  auto with = [&](std::string_view from, std::string_view to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  CHECK(status_for(with("GET", "POST")) == 405);
  CHECK(status_for(with("Version: 13", "Version: 8")) == 426);
  CHECK(status_for(with("Upgrade: websocket", "Upgrade: h2c")) == 400);
  CHECK(status_for(with("Connection: Upgrade", "Connection: keep-alive")) == 400);
  CHECK(status_for(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ")) == 400);
  CHECK(status_for(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR==")) == 400);
}

TEST_CASE("permessage-deflate negotiation: the first offer the server can honour, and its answer") {
  auto agree = [](std::string offers, ws::deflate_options ours = {.enabled = true}) -> std::string {
    sluice::http::request_parser p;
    REQUIRE(p.parse_head(upgrade_request_ws("/ws", "Sec-WebSocket-Extensions: " + offers + "\r\n")) ==
            sluice::http::request_parser::status::head_done);
    auto a = ws::negotiate_deflate(p.head().headers, ours);
    return a ? ws::deflate_response(*a) : "none";
  };
  CHECK(agree("permessage-deflate") == "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  CHECK(agree("permessage-deflate; client_max_window_bits", {.enabled = true, .context_takeover = true}) == "permessage-deflate");
  CHECK(agree("permessage-deflate; server_no_context_takeover", {.enabled = true, .context_takeover = true}) ==
        "permessage-deflate; server_no_context_takeover");
  CHECK(agree("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=12") ==
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12");
  CHECK(agree("permessage-deflate; unknown") == "none");
  CHECK(agree("permessage-deflate; server_no_context_takeover; server_no_context_takeover") == "none");
  CHECK(agree("x-webkit-deflate-frame") == "none");
  CHECK(agree("permessage-deflate", {.enabled = false}) == "none");
}
