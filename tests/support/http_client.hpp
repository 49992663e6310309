// Test support for the HTTP server tests: a tiny raw HTTP/1.1 client, event primitives, and
// server-side helpers (a log of connection states, gates for handlers).
//
// The client sends bytes exactly as given (malformed ones too) and reads responses the way a
// strict client would: status line, header fields, then a body framed by Content-Length, by
// chunked coding or by the end of the connection. Everything is a coroutine on the caller's
// executor; nothing sleeps: tests wait on events (a response, an end of stream, a server
// callback). The event types are for a single-threaded io_context.
#pragma once

#include "sluice/http/server.hpp"

#include "support/async_test.hpp"

#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice::test {

namespace http = sluice::http;

inline constexpr auto nothrow = asio::experimental::as_tuple(use_awaitable);

inline bool iequal(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct http_response {
  unsigned status = 0;
  int version_minor = 1;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;      // the body came with chunked coding
  bool until_close = false;  // the body was delimited by the end of the connection
  std::vector<std::size_t> chunk_sizes;

  std::optional<std::string> header(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (iequal(n, name)) return v;
    return std::nullopt;
  }
  std::size_t count(std::string_view name) const {
    return static_cast<std::size_t>(
        std::count_if(headers.begin(), headers.end(), [&](auto& h) { return iequal(h.first, name); }));
  }
  // Whether `token` is in the comma-separated lists of the fields called `name`.
  bool has_token(std::string_view name, std::string_view token) const {
    for (auto& [n, v] : headers) {
      if (!iequal(n, name)) continue;
      std::string_view rest = v;
      while (!rest.empty()) {
        auto comma = rest.find(',');
        if (iequal(trim(rest.substr(0, comma)), token)) return true;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
    }
    return false;
  }
  bool closes() const { return has_token("connection", "close"); }
};

// How a connection ended, seen from the client, and what arrived before the end.
struct close_result {
  std::error_code ec;  // eof or connection_reset when the peer closed
  std::string extra;   // bytes that arrived before the end (should usually be none)
  bool closed() const { return ec == asio::error::eof || ec == asio::error::connection_reset; }
};

class http_client {
 public:
  explicit http_client(tcp::socket s) : socket_(std::move(s)), local_(socket_.local_endpoint()) {}

  static awaitable<http_client> connect(tcp::endpoint ep) {
    auto s = co_await connect_to(ep);
    co_return http_client(std::move(s));
  }

  tcp::socket& socket() { return socket_; }
  // The server's name for this connection (its peer endpoint); still known after close().
  tcp::endpoint local_endpoint() const { return local_; }
  // Bytes received and not consumed by a read yet.
  std::string_view buffered() const { return buffer_; }

  awaitable<void> send(std::string_view bytes) {
    co_await asio::async_write(socket_, asio::buffer(bytes), use_awaitable);
  }

  // As send, but reports failure (the server closed or reset) instead of throwing.
  awaitable<std::error_code> try_send(std::string_view bytes) {
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes), nothrow);
    co_return ec;
  }

  // Reads one response (a 1xx one included). `head_request`: the response to HEAD has no body.
  // Throws std::system_error when the connection ends first, std::runtime_error when the bytes
  // are not a valid response.
  awaitable<http_response> read_response(bool head_request = false) {
    auto r = co_await try_read_response(head_request);
    if (!r) throw std::system_error(asio::error::eof, "http_client: connection closed before a response");
    co_return std::move(*r);
  }

  // Empty when the connection ended (EOF or reset) before the first byte of a response.
  awaitable<std::optional<http_response>> try_read_response(bool head_request = false) {
    if (buffer_.empty()) {
      auto ec = co_await fill();
      if (ec) co_return std::nullopt;
    }
    http_response r;
    const std::string status_line = co_await read_line();
    parse_status_line(status_line, r);
    for (;;) {
      const std::string line = co_await read_line();
      if (line.empty()) break;
      auto colon = line.find(':');
      if (colon == std::string::npos || colon == 0) throw std::runtime_error("http_client: bad header line: " + line);
      r.headers.emplace_back(line.substr(0, colon), std::string(trim(std::string_view(line).substr(colon + 1))));
    }
    const bool no_body = head_request || r.status / 100 == 1 || r.status == 204 || r.status == 304;
    if (no_body) co_return r;
    if (r.has_token("transfer-encoding", "chunked")) {
      r.chunked = true;
      co_await read_chunked(r);
    } else if (auto cl = r.header("content-length")) {
      std::size_t n = 0;
      auto [p, err] = std::from_chars(cl->data(), cl->data() + cl->size(), n);
      if (err != std::errc() || p != cl->data() + cl->size())
        throw std::runtime_error("http_client: bad Content-Length: " + *cl);
      r.body = co_await read_exact(n);
    } else {
      r.until_close = true;
      for (;;) {
        r.body += take(buffer_.size());
        auto ec = co_await fill();
        if (ec == asio::error::eof) break;
        if (ec) throw std::system_error(ec, "http_client: close-delimited body");
      }
    }
    co_return r;
  }

  // Sends a request and reads its response.
  awaitable<http_response> request(std::string_view raw, bool head_request = false) {
    co_await send(raw);
    co_return co_await read_response(head_request);
  }

  // Exactly `n` bytes.
  awaitable<std::string> read_exact(std::size_t n) {
    while (buffer_.size() < n) {
      auto ec = co_await fill();
      if (ec) throw std::system_error(ec, "http_client: connection ended early");
    }
    co_return take(n);
  }

  // The bytes up to and including `delim`.
  awaitable<std::string> read_until(std::string_view delim) {
    for (std::size_t from = 0;;) {
      auto at = buffer_.find(delim, from);
      if (at != std::string::npos) co_return take(at + delim.size());
      from = buffer_.size() >= delim.size() ? buffer_.size() - delim.size() + 1 : 0;
      auto ec = co_await fill();
      if (ec) throw std::system_error(ec, "http_client: connection ended early");
    }
  }

  // Waits until the peer closes (EOF or reset), collecting whatever arrives before.
  awaitable<close_result> wait_closed() {
    close_result r;
    r.extra = take(buffer_.size());
    for (;;) {
      auto ec = co_await fill();
      r.extra += take(buffer_.size());
      if (ec) {
        r.ec = ec;
        co_return r;
      }
    }
  }

  void close() {
    std::error_code ignored;
    socket_.close(ignored);
  }

 private:
  // Appends what the socket has to the buffer. Once the connection has ended it says so again
  // without reading: after a read that saw the end (EOF or reset), Asio's edge-triggered
  // reactor completes no further read on that socket, there being no further readiness event.
  awaitable<std::error_code> fill() {
    if (ended_) co_return ended_;
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(chunk_), nothrow);
    buffer_.append(chunk_.data(), n);
    ended_ = ec;
    co_return ec;
  }

  std::string take(std::size_t n) {
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }

  // One CRLF-terminated line, without the CRLF.
  awaitable<std::string> read_line() {
    std::string line = co_await read_until("\r\n");
    line.resize(line.size() - 2);
    co_return line;
  }

  // "HTTP/1.1 200 OK"; the reason phrase may be empty.
  static void parse_status_line(const std::string& line, http_response& r) {
    const bool valid = line.size() >= 12 && line.compare(0, 7, "HTTP/1.") == 0 && line[8] == ' ' &&
                       (line.size() == 12 || line[12] == ' ') &&
                       std::from_chars(line.data() + 9, line.data() + 12, r.status).ptr == line.data() + 12;
    if (!valid) throw std::runtime_error("http_client: bad status line: " + line);
    r.version_minor = line[7] - '0';
    r.reason = line.size() > 13 ? line.substr(13) : std::string();
  }

  awaitable<void> read_chunked(http_response& r) {
    for (;;) {
      std::string size_line = co_await read_line();
      std::size_t size = 0;
      auto semicolon = size_line.find(';');
      std::string_view digits = trim(std::string_view(size_line).substr(0, semicolon));
      auto [p, err] = std::from_chars(digits.data(), digits.data() + digits.size(), size, 16);
      if (err != std::errc() || p != digits.data() + digits.size() || digits.empty())
        throw std::runtime_error("http_client: bad chunk size line: " + size_line);
      if (size == 0) break;
      r.chunk_sizes.push_back(size);
      r.body += co_await read_exact(size);
      if (co_await read_exact(2) != "\r\n") throw std::runtime_error("http_client: chunk without CRLF");
    }
    for (;;) {  // trailer section
      if ((co_await read_line()).empty()) break;
    }
  }

  tcp::socket socket_;
  tcp::endpoint local_;
  std::string buffer_;
  std::vector<char> chunk_ = std::vector<char>(16 * 1024);  // what one read takes
  std::error_code ended_;
};

// A flag coroutines can wait for. Single-threaded: set() and wait() on the io_context's thread.
class event {
 public:
  explicit event(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  void set() {
    set_ = true;
    timer_.cancel();
  }
  bool is_set() const { return set_; }
  awaitable<void> wait() {
    while (!set_) co_await timer_.async_wait(nothrow);
  }

 private:
  asio::steady_timer timer_;
  bool set_ = false;
};

// Wakes waiters whenever something they may be waiting for has changed. Pass until() a named
// predicate (g++ 12: no lambda temporaries inside a co_await expression).
class notifier {
 public:
  explicit notifier(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  void notify() { timer_.cancel(); }
  template <typename Pred>
  awaitable<void> until(const Pred& pred) {
    while (!pred()) co_await timer_.async_wait(nothrow);
  }

 private:
  asio::steady_timer timer_;
};

// As run(), but gives up (and fails) if `f` has not completed within `limit`: a guard against
// hangs only, far above what any test needs.
template <typename F>
void run_guarded(asio::io_context& io, F&& f, std::chrono::steady_clock::duration limit = std::chrono::seconds(10)) {
  asio::steady_timer guard(io, limit);
  guard.async_wait([&io](std::error_code ec) {
    if (!ec) io.stop();
  });
  run(io, std::forward<F>(f));
  guard.cancel();  // its aborted wait stays queued; it references `io` only
}

// The connection ends (EOF or reset) with no byte (more) from the server.
inline awaitable<void> check_closed_silently(http_client& c) {
  auto end = co_await c.wait_closed();
  CHECK(end.closed());
  CHECK(end.extra.empty());
}

// Server side -------------------------------------------------------------------------------

// Timeouts far above anything a test waits for, so that only the one a test shortens can fire.
inline http::server_options long_timeouts() {
  http::server_options o;
  o.header_timeout = o.idle_timeout = o.body_timeout = o.write_timeout = o.linger_timeout = std::chrono::seconds(10);
  return o;
}

inline std::string get(std::string_view target, std::string_view extra_fields = {}) {
  std::string r = "GET ";
  r.append(target).append(" HTTP/1.1\r\nHost: test\r\n").append(extra_fields).append("\r\n");
  return r;
}

// A keep-alive connection that has had one response, so its session now waits idle. A
// connection accepted before it has its session started too: the accept loop starts sessions in
// order on one thread.
inline awaitable<http_client> idle_client(tcp::endpoint ep) {
  auto c = co_await http_client::connect(ep);
  auto r = co_await c.request(get("/"));
  REQUIRE(r.status == 200);
  REQUIRE_FALSE(r.closes());
  co_return c;
}

// Every on_state_change call, in order, waking waiters on each.
class state_log {
 public:
  struct entry {
    tcp::endpoint peer;
    http::connection_state from;
    http::connection_state to;
    bool closed;
  };

  explicit state_log(asio::io_context& io) : changed_(io.get_executor()) {}

  // Makes `o` report to this log.
  void attach(http::server_options& o) {
    o.on_state_change = [this](const tcp::endpoint& peer, http::connection_state from, http::connection_state to,
                               bool closed) {
      entries_.push_back({peer, from, to, closed});
      changed_.notify();
    };
  }

  // How many times `peer` entered `to`.
  std::size_t entered(const tcp::endpoint& peer, http::connection_state to) const {
    return static_cast<std::size_t>(std::count_if(
        entries_.begin(), entries_.end(), [&](const entry& e) { return e.peer == peer && !e.closed && e.to == to; }));
  }
  bool closed(const tcp::endpoint& peer) const {
    return std::any_of(entries_.begin(), entries_.end(), [&](const entry& e) { return e.peer == peer && e.closed; });
  }

  // One connection's history, e.g. "new>reading reading>active ... closed@closing".
  std::string history(const tcp::endpoint& peer) const {
    std::string h;
    for (auto& e : entries_) {
      if (e.peer != peer) continue;
      if (!h.empty()) h += ' ';
      if (e.closed)
        h.append("closed@").append(http::to_string(e.to));
      else
        h.append(http::to_string(e.from)).append(">").append(http::to_string(e.to));
    }
    return h;
  }

  // Until `peer` has entered `to` for the `n`th time.
  awaitable<void> until_entered(tcp::endpoint peer, http::connection_state to, std::size_t n = 1) {
    auto reached = [&] { return entered(peer, to) >= n; };
    co_await changed_.until(reached);
  }
  awaitable<void> until_closed(tcp::endpoint peer) {
    auto done = [&] { return closed(peer); };
    co_await changed_.until(done);
  }

 private:
  std::vector<entry> entries_;
  notifier changed_;
};

// Holds a handler at a point the test controls: pass() says the handler got there, then waits
// until the test calls open().
class gate {
 public:
  explicit gate(asio::io_context& io) : entered_(io.get_executor()), opened_(io.get_executor()) {}
  awaitable<void> pass() {
    entered_.set();
    co_await opened_.wait();
  }
  awaitable<void> until_entered() { co_await entered_.wait(); }
  void open() { opened_.set(); }

 private:
  event entered_;
  event opened_;
};

// 101 Switching Protocols to "echo": the connection then echoes every byte (the ones read along
// with the request head first) until the peer ends it. `ended` gets how the echo ended: eof when
// the peer closed, operation_aborted when the server stopped it.
inline http::response echo_upgrade(std::error_code& ended) {
  http::response res;
  res.status = 101;
  res.headers.add("Upgrade", "echo");
  res.headers.add("Connection", "Upgrade");
  res.upgrade = [&ended](http::upgraded& u) -> awaitable<void> {
    std::vector<char> buf(4096);
    for (;;) {
      std::error_code ec;
      std::size_t n = 0;
      try {
        n = co_await u.read_some(asio::buffer(buf));
      } catch (const std::system_error& e) {
        ec = e.code();
      }
      if (ec) {
        ended = ec;
        if (ec == asio::error::eof) co_return;
        throw std::system_error(ec, "echo");
      }
      co_await u.write(std::string_view(buf.data(), n));
    }
  };
  return res;
}

inline std::string upgrade_request(std::string_view target) {
  std::string r = "GET ";
  r.append(target).append(" HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
  return r;
}

// shutdown() running beside the test: done() says whether it has returned yet, wait() gives its
// summary. The result lives in shared state, so a test that fails early leaves nothing dangling.
class background_shutdown {
 public:
  template <typename Server>
  background_shutdown(asio::io_context& io, Server& srv, std::chrono::steady_clock::duration grace)
      : state_(std::make_shared<state>(io)) {
    asio::co_spawn(io, srv.shutdown(grace), [st = state_](std::exception_ptr e, http::shutdown_summary s) {
      st->error = e;
      st->summary = s;
      st->took = std::chrono::steady_clock::now() - st->start;
      st->finished.set();
    });
  }

  bool done() const { return state_->finished.is_set(); }

  awaitable<http::shutdown_summary> wait() {
    auto st = state_;
    co_await st->finished.wait();
    if (st->error) std::rethrow_exception(st->error);
    co_return st->summary;
  }

  // From the call to shutdown() to its return.
  std::chrono::steady_clock::duration took() const { return state_->took; }

 private:
  struct state {
    explicit state(asio::io_context& io) : finished(io.get_executor()) {}
    event finished;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration took{};
    std::exception_ptr error;
    http::shutdown_summary summary;
  };
  std::shared_ptr<state> state_;
};

// "/gate" waits at `g` first (when one is given), "/upgrade" switches to the echo protocol, and
// anything else is answered "ok" at once.
inline http::server::handler_type upgrade_or_ok(std::error_code& echo_end, gate* g = nullptr) {
  return [&echo_end, g](http::request& req) -> awaitable<http::response> {
    if (g && req.target() == "/gate") co_await g->pass();
    if (req.target() == "/upgrade") co_return echo_upgrade(echo_end);
    co_return http::response::text(200, "ok\n");
  };
}

// Stops the server when the test leaves, even by a failed REQUIRE, so that no session outlives
// what its handler or observer references. Declare it after the server and everything they use.
template <typename Server>
class stop_on_exit {
 public:
  stop_on_exit(asio::io_context& io, Server& srv) : io_(io), srv_(srv) {}
  stop_on_exit(const stop_on_exit&) = delete;
  stop_on_exit& operator=(const stop_on_exit&) = delete;
  ~stop_on_exit() {
    asio::co_spawn(io_, srv_.stop_now(), [&io = io_](std::exception_ptr, http::shutdown_summary) { io.stop(); });
    io_.restart();
    io_.run_for(std::chrono::seconds(5));
    io_.restart();
  }

 private:
  asio::io_context& io_;
  Server& srv_;
};

}  // namespace sluice::test
