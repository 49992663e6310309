// libFuzzer target for the whole HTTP session: parser, keep-alive, pipelining, bodies,
// 100-continue, upgrade and error paths, through the real http::server.
//
// Input: the first byte chooses server options and whether the client sends all at once or
// head by head; the rest is what that client sends on one connection, then it half-closes. Each request's path is a small program for
// the handler (see `run_program`): read the body or not, stream, read while streaming, throw,
// upgrade, return odd statuses or a bad header. After every input the bytes the server wrote must
// be a valid sequence of HTTP/1.1 responses, one per handled request, in order, with nothing after
// a "Connection: close"; every session must end on its own once the client has gone; no
// descriptor may be left open; and no sanitizer may report. A violation prints what was broken
// and aborts, so libFuzzer keeps the input.
//
// Transport: an AF_UNIX stream socket pair, made by a listening AF_UNIX socket (abstract name,
// so nothing on disk) adopted by the server as a tcp::acceptor. Asio does not check the address
// family, so the server runs unchanged: its accept loop, registry, sessions and shutdown, with no
// test-only entry point in the headers, while the bytes stay in kernel buffers: no ports, no
// TIME_WAIT however many inputs run, and a client on the same thread, so that every run is
// deterministic. Every timeout is short and the run is bounded: a hang is reported as one.
#include "sluice/http/detail/chars.hpp"
#include "sluice/http/server.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace http = sluice::http;
using asio::awaitable;
using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// What the handler saw and did for one request, in call order.
struct call {
  std::string method;
  bool expect_continue = false;
  bool threw = false;           // an exception of its own left the handler: a 500 is due
  std::error_code body_error;   // a body read threw this
  bool stream_threw = false;    // the streamed body failed after the head was out
  bool upgraded = false;        // the upgrade function took the connection
  std::string upgraded_input;   // what it read there
};

struct run_log {
  std::vector<call> calls;
  std::vector<std::string> escaped;  // exceptions that left a session
  std::optional<http::shutdown_summary> summary;
};

[[noreturn]] void violation(std::string_view input, std::string_view out, const std::string& what) {
  const auto show = [](std::string_view s) {
    std::string r;
    for (char c : s.substr(0, 2000)) {
      if (c == '\r') r += "\\r";
      else if (c == '\n') r += "\\n\n  ";
      else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
        r += hex;
      } else r += c;
    }
    return r;
  };
  std::fprintf(stderr, "session_fuzz: %s\n-- sent:\n  %s\n-- received:\n  %s\n", what.c_str(), show(input).c_str(),
               show(out).c_str());
  std::abort();
}

// Options: short timeouts (nothing in a run waits for one, so one firing only slows it down),
// and the first input byte picks the limits that matter for keep-alive and errors (bits 0-3;
// bit 4 makes the client send in steps, see send_all).
http::server_options options_for(std::uint8_t cfg) {
  http::server_options o;
  o.header_timeout = o.idle_timeout = o.body_timeout = o.write_timeout = o.linger_timeout = 1s;
  if (cfg & 1) o.max_requests_per_connection = 2;
  if (cfg & 2) o.max_discard = 16;
  if (cfg & 4) {
    o.limits.max_target = 64;
    o.limits.max_head_bytes = 512;
    o.limits.max_header_count = 8;
    o.limits.max_body = 256;
    o.limits.max_chunk_line = 32;
    o.limits.max_trailer_bytes = 64;
  }
  o.limits.require_host = (cfg & 8) != 0;
  o.on_handler_error = [](std::exception_ptr) {};  // each is answered with a 500, which is checked
  // The oracle reads HTTP/1.1: with h2c on, an input that starts with the HTTP/2 preface is
  // answered in HTTP/2 frames. HTTP/2 has its own fuzzer (http2_fuzz.cpp); "PRI * HTTP/2.0" stays
  // an HTTP/1.1 request line here, as it is to a server with HTTP/2 off.
  o.http2.enabled = false;
  return o;
}

awaitable<std::string> read_body(http::request& req, call& c) {
  try {
    co_return co_await req.read_body();
  } catch (const std::system_error& e) {
    c.body_error = e.code();
    throw;
  }
}

// Streams three pieces; with `echo`, reads the request body while streaming (full duplex) and
// sends each piece back; with `fail`, throws after the first piece.
http::response streamed(http::request& req, call& c, bool echo, bool fail) {
  http::response res;
  res.stream = [&req, &c, echo, fail](http::body_writer& w) -> awaitable<void> {
    co_await w.write("first\n");
    if (fail) {
      c.stream_threw = true;
      throw std::runtime_error("session_fuzz: stream failed");
    }
    if (echo) {
      for (;;) {
        std::string_view piece;
        try {
          piece = co_await req.read_some();
        } catch (const std::system_error& e) {
          c.body_error = e.code();
          c.stream_threw = true;
          throw;
        }
        if (piece.empty()) break;
        const std::string copy(piece);
        co_await w.write(copy);
      }
    }
    co_await w.write("last\n");
  };
  return res;
}

// 101 (2xx to CONNECT), then echo every byte until the client ends the stream.
http::response upgrade(http::request& req, call& c) {
  http::response res;
  res.status = req.method() == "CONNECT" ? 200 : 101;
  if (res.status == 101) {
    res.headers.add("Upgrade", "echo");
    res.headers.add("Connection", "Upgrade");
  }
  res.upgrade = [&c](http::upgraded& u) -> awaitable<void> {
    c.upgraded = true;
    char buf[4096];
    for (;;) {
      auto n = co_await u.read_some(asio::buffer(buf));  // throws eof at the end: the normal end
      c.upgraded_input.append(buf, n);
      co_await u.write(std::string_view(buf, n));
    }
  };
  return res;
}

// The handler's program is the request's X-Program field, else its path after '/' (a CONNECT
// target is an authority, so it needs the field), one letter per step:
//   b read the whole body (and echo it)   p read one piece of the body
//   s stream the response                 d stream, reading the body meanwhile (full duplex)
//   f stream, then fail after one piece   t throw before answering
//   u upgrade (101, or 200 to CONNECT)    c answer "Connection: close"
//   h a header value with CR LF in it     l a 70 kB body
//   e an empty body                       three digits: that status (100 to 599)
awaitable<http::response> run_program(http::request& req, call& c, std::string_view program) {
  if (!program.empty() && program.front() == '/') program.remove_prefix(1);
  http::response res = http::response::text(200, "ok\n");
  for (std::size_t i = 0; i < program.size(); ++i) {
    switch (program[i]) {
      case 'b': res.body = co_await read_body(req, c); break;
      case 'p': {
        try {
          (void)co_await req.read_some();
        } catch (const std::system_error& e) {
          c.body_error = e.code();
          throw;
        }
        break;
      }
      case 's': res.stream = streamed(req, c, false, false).stream; break;
      case 'd': res.stream = streamed(req, c, true, false).stream; break;
      case 'f': res.stream = streamed(req, c, false, true).stream; break;
      case 't': throw std::runtime_error("session_fuzz: handler threw");
      case 'u': res = upgrade(req, c); break;
      case 'c': res.headers.add("Connection", "close"); break;
      case 'h': res.headers.add("X-Bad", "a\r\nInjected: yes"); break;
      case 'l': res.body.assign(70000, 'x'); break;
      case 'e': res.body.clear(); break;
      default: {
        unsigned status = 0;
        const char* first = program.data() + i;
        const char* last = program.data() + std::min(program.size(), i + 3);
        if (auto [p, ec] = std::from_chars(first, last, status); ec == std::errc() && p == last && status >= 100 &&
                                                                   status <= 599) {
          res.status = status;
          i += 2;
        }
      }
    }
  }
  co_return res;
}

http::server::handler_type handler(run_log& log) {
  return [&log](http::request& req) -> awaitable<http::response> {
    call& c = log.calls.emplace_back();
    c.method = req.method();
    const auto program = req.headers().get("x-program");
    c.expect_continue = req.head().expect_continue;
    try {
      co_return co_await run_program(req, c, program ? *program : req.path());
    } catch (...) {
      if (!c.body_error) c.threw = true;
      throw;
    }
  };
}

// Strict reading of the server's output ----------------------------------------------------

struct response {
  unsigned status = 0;
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  bool complete = false;  // the whole message is there
  bool until_close = false;

  std::optional<std::string_view> field(std::string_view name) const {
    std::optional<std::string_view> found;
    for (auto [n, v] : fields)
      if (http::detail::iequals(n, name)) {
        if (found) return "(repeated)";
        found = v;
      }
    return found;
  }
  bool closes() const {
    for (auto [n, v] : fields)
      if (http::detail::iequals(n, "connection") && http::detail::iequals(v, "close")) return true;
    return false;
  }
};

// Reads one response to a `method` request at `pos` (advanced past it). Throws
// std::runtime_error on invalid bytes; `complete` is false when the output ends inside it.
response read_response(std::string_view out, std::size_t& pos, std::string_view method) {
  response r;
  const auto line = [&](std::string_view& l) {
    const auto end = out.find("\r\n", pos);
    if (end == std::string_view::npos) return false;
    l = out.substr(pos, end - pos);
    pos = end + 2;
    return true;
  };
  std::string_view l;
  if (!line(l)) return r;
  if (l.size() < 13 || l.substr(0, 9) != "HTTP/1.1 " || l[12] != ' ' ||
      std::from_chars(l.data() + 9, l.data() + 12, r.status).ptr != l.data() + 12 || r.status < 100)
    throw std::runtime_error("bad status line");
  for (;;) {
    if (!line(l)) return r;
    if (l.empty()) break;
    const auto colon = l.find(':');
    if (colon == std::string_view::npos || !http::detail::is_token(l.substr(0, colon)))
      throw std::runtime_error("bad header line");
    std::string_view value = l.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    for (char c : value)
      if (!http::detail::is_field_char(c)) throw std::runtime_error("bad header value");
    r.fields.emplace_back(l.substr(0, colon), value);
  }
  const auto te = r.field("transfer-encoding");
  const auto cl = r.field("content-length");
  if (te && cl) throw std::runtime_error("both Transfer-Encoding and Content-Length");
  const bool tunnel = method == "CONNECT" && r.status / 100 == 2;
  if (method == "HEAD" || tunnel || r.status < 200 || r.status == 204 || r.status == 304) {
    // RFC 9110 8.6, 6.4.1: never framing fields on a 1xx, a 204 or a 2xx to CONNECT.
    if ((te || cl) && (r.status < 200 || r.status == 204 || tunnel))
      throw std::runtime_error("framing field on a 1xx, 204 or 2xx to CONNECT");
    r.complete = true;
    return r;
  }
  if (te) {
    if (*te != "chunked") throw std::runtime_error("unexpected Transfer-Encoding");
    for (;;) {
      if (!line(l)) return r;
      std::size_t size = 0;
      if (l.empty() || std::from_chars(l.data(), l.data() + l.size(), size, 16).ptr != l.data() + l.size())
        throw std::runtime_error("bad chunk size line");
      if (size == 0) break;
      if (out.size() - pos < size + 2) return r;
      if (out.substr(pos + size, 2) != "\r\n") throw std::runtime_error("chunk data not followed by CRLF");
      pos += size + 2;
    }
    if (!line(l)) return r;
    if (!l.empty()) throw std::runtime_error("trailer fields from a server that sends none");
  } else if (cl) {
    std::size_t size = 0;
    if (std::from_chars(cl->data(), cl->data() + cl->size(), size).ptr != cl->data() + cl->size())
      throw std::runtime_error("bad Content-Length");
    if (out.size() - pos < size) return r;
    pos += size;
  } else {
    r.until_close = true;
    pos = out.size();
  }
  r.complete = true;
  return r;
}

// Where the request message at `offset` ends in the client's bytes (as the server's own parser
// sees them); empty when it is not all there.
std::optional<std::size_t> message_end(std::string_view input, std::size_t offset, const http::parser_limits& limits) {
  http::request_parser p(limits);
  std::string_view rest = input.substr(offset);
  if (p.parse_head(rest) != http::request_parser::status::head_done) return std::nullopt;
  std::size_t at = p.head_size();
  for (;;) {
    auto r = p.parse_body(rest.substr(at));
    at += r.consumed;
    if (r.st == http::request_parser::status::message_done) return offset + at;
    if (r.st != http::request_parser::status::body_data) return std::nullopt;
  }
}

// Where each request the handler saw starts in the client's bytes: one entry per request, since
// a request after one whose end is not found is never read.
std::vector<std::size_t> message_starts(std::string_view input, std::size_t n, const http::parser_limits& limits) {
  std::vector<std::size_t> starts;
  for (std::size_t at = 0; starts.size() < n;) {
    starts.push_back(at);
    const auto end = message_end(input, at, limits);
    if (!end) break;
    at = *end;
  }
  return starts;
}

// The method of the first request the handler did not see: the one after the last handled.
std::string_view unhandled_method(std::string_view input, const std::vector<std::size_t>& starts,
                                  const http::parser_limits& limits) {
  std::size_t at = 0;
  if (!starts.empty()) {
    const auto end = message_end(input, starts.back(), limits);
    if (!end) return {};
    at = *end;
  }
  const auto space = input.find(' ', at);
  return space == std::string_view::npos ? std::string_view() : input.substr(at, space - at);
}

void check(std::string_view input, std::string_view out, const run_log& log, const http::parser_limits& limits) {
  const auto fail = [&](const std::string& what) { violation(input, out, what); };
  if (!log.escaped.empty()) fail("an exception left a session: " + log.escaped.front());
  if (log.summary->forced != 0) fail("a session outlived its client and had to be forced at shutdown");

  const auto starts = message_starts(input, log.calls.size(), limits);
  std::size_t pos = 0;
  std::size_t answered = 0;  // final responses to handled requests
  bool continued = false;
  for (;;) {
    const std::size_t at = pos;
    const bool handled = answered < log.calls.size();
    const call* c = handled ? &log.calls[answered] : nullptr;
    const std::string which = handled ? "request " + std::to_string(answered + 1) : "error response";
    if (pos == out.size()) {
      if (handled && !c->body_error) fail(which + " was handled but got no response");
      break;
    }
    // The one error response sent after the server read a request's head is the 503 at the
    // request limit: to a HEAD, it has no body.
    std::string_view method = c ? std::string_view(c->method) : std::string_view();
    if (!c && out.substr(pos).starts_with("HTTP/1.1 503 ")) method = unhandled_method(input, starts, limits);
    response r;
    try {
      r = read_response(out, pos, method);
    } catch (const std::runtime_error& e) {
      fail(which + ": not a valid HTTP/1.1 response at byte " + std::to_string(at) + ": " + e.what());
    }
    if (!r.complete) {
      if (!c || !c->stream_threw || answered + 1 != log.calls.size())
        fail(which + ": response cut short at byte " + std::to_string(at));
      ++answered;  // a failed stream ends its body, and the connection, abruptly
      break;
    }
    if (r.status < 200 && r.status != 101) {
      if (r.status != 100) fail(which + ": " + std::to_string(r.status) + " is not an interim response the server may send");
      if (!c || !c->expect_continue || continued) fail(which + ": 100 Continue not asked for, or sent twice");
      continued = true;
      continue;
    }
    continued = false;
    if (!handled) {  // the server's own answer to a request it could not take
      if (r.status < 400 || !r.closes()) fail("an error response without an error status and Connection: close");
      if (pos != out.size()) fail("bytes after an error response");
      break;
    }
    ++answered;
    if (c->threw && r.status != 500) fail(which + ": the handler threw, and the status is not 500");
    if (c->upgraded) {
      if (r.status != 101 && r.status / 100 != 2) fail(which + ": upgraded after a " + std::to_string(r.status));
      if (out.substr(pos) != c->upgraded_input) fail(which + ": the upgraded stream did not echo what it read");
      if (const auto end = message_end(input, starts[answered - 1], limits);
          end && c->upgraded_input != input.substr(*end))
        fail(which + ": the upgraded protocol did not start right after the request message");
      break;
    }
    if (r.status == 101) fail(which + ": 101 without an upgrade");
    if (r.closes() || r.until_close) {
      if (pos != out.size()) fail(which + ": bytes after a response that closes the connection");
      if (answered != log.calls.size()) fail(which + ": requests handled after a response that closes");
      break;
    }
  }
}

// The client and the server, on one thread --------------------------------------------------

// A listening AF_UNIX socket in the abstract namespace (unique per process and run).
tcp::acceptor unix_listener(asio::io_context& io, sockaddr_un& addr, socklen_t& len) {
  static unsigned counter = 0;
  addr = {};
  addr.sun_family = AF_UNIX;
  const int n = std::snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "sluice-fuzz-%d-%u", ::getpid(), counter++);
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + static_cast<std::size_t>(n));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4) != 0)
    throw std::system_error(errno, std::generic_category(), "session_fuzz: unix listener");
  tcp::acceptor acceptor(io);
  acceptor.assign(tcp::v4(), fd);
  return acceptor;
}

tcp::socket unix_client(asio::io_context& io, const sockaddr_un& addr, socklen_t len) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0)
    throw std::system_error(errno, std::generic_category(), "session_fuzz: unix connect");
  tcp::socket s(io);
  s.assign(tcp::v4(), fd);
  return s;
}

// Sends the input whole, or (`in_steps`) in pieces that each end a request head, letting the
// server run between two pieces: it then sees heads apart from their bodies, waits idle between
// requests, and answers Expect: 100-continue before the body is there. The single-threaded
// io_context keeps either way deterministic.
awaitable<void> send_all(tcp::socket& s, std::string_view input, bool in_steps) {
  const auto ex = co_await asio::this_coro::executor;
  while (!input.empty()) {
    const auto head_end = in_steps ? input.find("\r\n\r\n") : std::string_view::npos;
    const std::string_view piece = input.substr(0, head_end == std::string_view::npos ? input.size() : head_end + 4);
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(piece), nothrow);
    if (ec) break;  // the server may close first
    input.remove_prefix(n);
    for (int turn = 0; in_steps && turn < 8; ++turn) co_await asio::post(ex, asio::use_awaitable);
  }
  std::error_code ignored;
  s.shutdown(tcp::socket::shutdown_send, ignored);
}

awaitable<void> receive_all(tcp::socket& s, std::string& out) {
  char buf[16 * 1024];
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), nothrow);
    out.append(buf, n);
    if (ec) co_return;
  }
}

// Sends everything, reads until the server ends the stream, closes, then shuts the server down
// with a grace period that a session still running after its client left would exhaust.
awaitable<void> exchange(tcp::socket& client, std::string_view input, bool in_steps, std::string& out,
                         http::server& srv, run_log& log) {
  using namespace asio::experimental::awaitable_operators;
  co_await (send_all(client, input, in_steps) && receive_all(client, out));
  client.close();
  log.summary = co_await srv.shutdown(5s);
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // Counted around each input, not once: libFuzzer opens files of its own between inputs.
  const std::size_t descriptors_before = open_descriptors();
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  run_log log;
  std::string out;
  http::parser_limits limits;
  {
    asio::io_context io;
    const http::server_options options = options_for(data[0]);
    limits = options.limits;
    http::server srv(io.get_executor(), handler(log), options);
    srv.set_exception_handler([&log](std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        log.escaped.emplace_back(x.what());
      } catch (...) {
        log.escaped.emplace_back("(not a std::exception)");
      }
    });
    sockaddr_un addr;
    socklen_t len = 0;
    srv.adopt(unix_listener(io, addr, len));
    tcp::socket client = unix_client(io, addr, len);
    asio::co_spawn(io, exchange(client, input, (data[0] & 16) != 0, out, srv, log), asio::detached);
    io.run_for(20s);
    if (!log.summary) violation(input, out, "no end within 20 s: a hang");
  }
  check(input, out, log, limits);
  if (const std::size_t after = open_descriptors(); after != descriptors_before)
    violation(input, out,
              "descriptors: " + std::to_string(descriptors_before) + " before the run, " + std::to_string(after) + " after");
  return 0;
}
