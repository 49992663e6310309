// loadgen: client-side measuring tool for sluice's benchmarks (see benchmarks/run.py).
//
// Linux only: epoll + raw non-blocking sockets, no dependencies, one file.
//
//   loadgen idle --port P --conns N --server-pid PID --signal TERM|INT|NONE
//                [--inflight K --slow-ms MS] [--never-used U] [--half-sent H]
//                [--timeout-ms T] [--settle-ms S] [--connect-concurrency C]
//     Opens N idle keep-alive connections (each did one `GET /` and got its 200), U that
//     sent nothing, H that sent a partial request line and K with a `GET /slow?ms=MS` in
//     flight. Then reads the server's VmRSS, takes t0 = CLOCK_MONOTONIC, sends the signal
//     and records per class when the server closed each connection (EOF or reset) and, for
//     the in-flight requests, whether a complete response arrived and whether it carried
//     `Connection: close`. Prints one JSON object on stdout when every connection is
//     closed or at --timeout-ms (default 30000).
//
//     With --websocket PATH the N idle connections are WebSockets (a handshake to PATH, no
//     compression) instead; the result then also says, per close code, how many Close frames
//     the server sent and when (ws_close: the latency of a graceful shutdown's Close 1001).
//     Each Close is answered with the same code, as a browser does, and the TCP close awaited.
//
//     With --h2 every connection speaks HTTP/2 by prior knowledge (h2c): the idle ones did one
//     GET / as stream 1, the in-flight ones have GET /slow as stream 1. The server's SETTINGS and
//     PINGs are acknowledged (its two-phase GOAWAY waits for the PING's ACK), and the result
//     says per class when each connection saw its first and its last GOAWAY and the last
//     stream id that one carried (h2_idle, h2_inflight).
//
//   loadgen ws-echo --port P --conns N --websocket PATH [--seconds S] [--size B]
//     N WebSockets, each doing request/response echo: a masked text message of B bytes
//     (default 32), wait for its echo, send the next. Prints round trips per second.
//
//   loadgen hold --port P --conns N [--websocket PATH | --h2] [--exit-when-closed] [--connect-concurrency C]
//     Opens N idle keep-alive connections, prints {"ready":N,...} (one line, flushed),
//     then waits for stdin EOF, SIGTERM or SIGINT (or, with --exit-when-closed, for the
//     server to have closed all of them), closes them and prints a final JSON line.
//     Close times are also given on CLOCK_MONOTONIC (ms), the clock std::chrono::
//     steady_clock uses on Linux, so an in-process benchmark can relate them to its own t0.
//
// Progress and errors go to stderr. Exit status: 0 ok, 1 setup failure, 2 usage.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

double mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}

[[noreturn]] void die(const char* fmt, const char* a = "", const char* b = "") {
  std::fprintf(stderr, "loadgen: ");
  std::fprintf(stderr, fmt, a, b);
  std::fprintf(stderr, "\n");
  std::exit(1);
}

// ---------------------------------------------------------------- options

struct Options {
  std::string cmd;
  int port = 0;
  long conns = 0;
  long inflight = 0;
  long slow_ms = 2000;
  long never_used = 0;
  long half_sent = 0;
  long server_pid = 0;
  std::string signal = "INT";
  long timeout_ms = 30000;
  long settle_ms = 100;
  long connect_concurrency = 200;
  bool exit_when_closed = false;
  bool h2 = false;        // HTTP/2 by prior knowledge instead of HTTP/1.1
  std::string websocket;  // the path of a WebSocket handshake; empty: plain HTTP connections
  long seconds = 5;
  long size = 32;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  loadgen idle --port P --conns N --server-pid PID --signal TERM|INT|NONE\n"
               "               [--inflight K --slow-ms MS] [--never-used U] [--half-sent H]\n"
               "               [--timeout-ms T] [--settle-ms S] [--connect-concurrency C] [--websocket PATH | --h2]\n"
               "  loadgen ws-echo --port P --conns N --websocket PATH [--seconds S] [--size B]\n"
               "  loadgen hold --port P --conns N [--websocket PATH | --h2] [--exit-when-closed] [--connect-concurrency C]\n");
  std::exit(2);
}

long to_long(const char* s, const char* name) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0) {
    std::fprintf(stderr, "loadgen: bad value for %s: %s\n", name, s);
    usage();
  }
  return v;
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage();
  Options o;
  o.cmd = argv[1];
  if (o.cmd != "idle" && o.cmd != "hold" && o.cmd != "ws-echo") usage();
  for (int i = 2; i < argc; ++i) {
    std::string_view k = argv[i];
    if (k == "--exit-when-closed" || k == "--h2") {
      (k == "--h2" ? o.h2 : o.exit_when_closed) = true;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    if (k == "--port") o.port = int(to_long(v, argv[i - 1]));
    else if (k == "--conns") o.conns = to_long(v, argv[i - 1]);
    else if (k == "--inflight") o.inflight = to_long(v, argv[i - 1]);
    else if (k == "--slow-ms") o.slow_ms = to_long(v, argv[i - 1]);
    else if (k == "--never-used") o.never_used = to_long(v, argv[i - 1]);
    else if (k == "--half-sent") o.half_sent = to_long(v, argv[i - 1]);
    else if (k == "--server-pid") o.server_pid = to_long(v, argv[i - 1]);
    else if (k == "--signal") o.signal = v;
    else if (k == "--timeout-ms") o.timeout_ms = to_long(v, argv[i - 1]);
    else if (k == "--settle-ms") o.settle_ms = to_long(v, argv[i - 1]);
    else if (k == "--websocket") o.websocket = v;
    else if (k == "--seconds") o.seconds = std::max(1L, to_long(v, argv[i - 1]));
    else if (k == "--size") o.size = std::min(65535L, to_long(v, argv[i - 1]));
    else if (k == "--connect-concurrency") o.connect_concurrency = std::max(1L, to_long(v, argv[i - 1]));
    else {
      std::fprintf(stderr, "loadgen: unknown option %s\n", argv[i - 1]);
      usage();
    }
  }
  if (o.port <= 0 || o.port > 65535) {
    std::fprintf(stderr, "loadgen: --port is required\n");
    usage();
  }
  if (o.cmd == "ws-echo" && o.websocket.empty()) {
    std::fprintf(stderr, "loadgen: ws-echo needs --websocket PATH\n");
    usage();
  }
  if (o.cmd == "idle") {
    if (o.signal.rfind("SIG", 0) == 0) o.signal = o.signal.substr(3);
    if (o.signal != "TERM" && o.signal != "INT" && o.signal != "NONE") usage();
    if (o.signal != "NONE" && o.server_pid <= 0) {
      std::fprintf(stderr, "loadgen: --server-pid is required\n");
      usage();
    }
  }
  return o;
}

// ---------------------------------------------------------------- HTTP response parsing

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool icontains_token(std::string_view v, std::string_view tok) {
  for (size_t i = 0; i + tok.size() <= v.size(); ++i)
    if (iequals(v.substr(i, tok.size()), tok)) return true;
  return false;
}

struct Response {
  int status = 0;
  bool connection_close = false;
};

// Parses one response at the start of buf. Returns the bytes it takes when complete,
// 0 when more bytes are needed, -1 when malformed.
long parse_response(std::string_view buf, Response& out) {
  size_t hend = buf.find("\r\n\r\n");
  if (hend == std::string_view::npos) return buf.size() > 65536 ? -1 : 0;
  std::string_view head = buf.substr(0, hend);
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1.") return -1;
  out.status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  out.connection_close = false;
  long content_length = -1;
  bool chunked = false;
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view line = head.substr(pos, e - pos);
    pos = e + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    if (iequals(name, "content-length")) content_length = std::atol(std::string(value).c_str());
    else if (iequals(name, "connection")) out.connection_close = icontains_token(value, "close");
    else if (iequals(name, "transfer-encoding")) chunked = icontains_token(value, "chunked");
  }
  size_t body = hend + 4;
  if (chunked) {
    size_t p = body;
    for (;;) {
      size_t e = buf.find("\r\n", p);
      if (e == std::string_view::npos) return 0;
      long n = std::strtol(std::string(buf.substr(p, e - p)).c_str(), nullptr, 16);
      if (n < 0) return -1;
      p = e + 2;
      if (n == 0) {  // trailers, then an empty line
        for (;;) {
          size_t t = buf.find("\r\n", p);
          if (t == std::string_view::npos) return 0;
          if (t == p) return long(t + 2);
          p = t + 2;
        }
      }
      if (buf.size() < p + size_t(n) + 2) return 0;
      p += size_t(n) + 2;
    }
  }
  if (content_length < 0) content_length = 0;  // our servers always send a length
  if (buf.size() < body + size_t(content_length)) return 0;
  return long(body + size_t(content_length));
}

// ---------------------------------------------------------------- WebSocket framing (RFC 6455)

std::string ws_handshake(const std::string& path) {
  return "GET " + path +
         " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

// A client frame: FIN set, masked as RFC 6455 requires of clients.
std::string ws_frame(uint8_t opcode, std::string_view payload) {
  static uint32_t seed = 0x9e3779b9u;
  seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
  const uint8_t mask[4] = {uint8_t(seed), uint8_t(seed >> 8), uint8_t(seed >> 16), uint8_t(seed >> 24)};
  std::string f;
  f += char(0x80 | opcode);
  if (payload.size() < 126) {
    f += char(0x80 | payload.size());
  } else {
    f += char(0x80 | 126);
    f += char(payload.size() >> 8);
    f += char(payload.size() & 0xff);
  }
  f.append(reinterpret_cast<const char*>(mask), 4);
  for (size_t i = 0; i < payload.size(); ++i) f += char(uint8_t(payload[i]) ^ mask[i % 4]);
  return f;
}

struct WsFrame {
  uint8_t opcode = 0;
  std::string_view payload;
};

// One server frame at the start of buf: the bytes it takes, 0 when incomplete, -1 when a
// server frame is masked or absurdly long (this tool never expects more than 64 KiB).
long ws_parse(std::string_view buf, WsFrame& out) {
  if (buf.size() < 2) return 0;
  const auto b0 = uint8_t(buf[0]), b1 = uint8_t(buf[1]);
  if (b1 & 0x80) return -1;
  size_t len = b1 & 0x7f, head = 2;
  if (len == 126) {
    if (buf.size() < 4) return 0;
    len = size_t(uint8_t(buf[2])) << 8 | uint8_t(buf[3]);
    head = 4;
  } else if (len == 127) {
    return -1;
  }
  if (buf.size() < head + len) return 0;
  out.opcode = b0 & 0x0f;
  out.payload = buf.substr(head, len);
  return long(head + len);
}

// ---------------------------------------------------------------- HTTP/2 (RFC 9113), client side

// Just what an idle or in-flight GET needs: no HPACK decoder (every server here sends
// ":status: 200" as static table entry 8, one byte), no flow control (the bodies are tiny).
enum H2Type : uint8_t { kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7 };
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8, kPriority = 0x20;
constexpr uint8_t kStatus200 = 0x88;

std::string h2_frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  const size_t n = payload.size();
  std::string f{char(n >> 16), char(n >> 8), char(n), char(type), char(flags),
                char(stream >> 24), char(stream >> 16), char(stream >> 8), char(stream)};
  return f.append(payload);
}

uint32_t be32(std::string_view b) {
  return uint32_t(uint8_t(b[0])) << 24 | uint32_t(uint8_t(b[1])) << 16 | uint32_t(uint8_t(b[2])) << 8 | uint8_t(b[3]);
}

// The client preface, an empty SETTINGS and GET `path` as stream 1 (END_STREAM). HPACK:
// :method GET, :scheme http and :path / from the static table, another :path as a literal
// with the static name (paths here are under 127 bytes), :authority a literal.
std::string h2_get(std::string_view path) {
  std::string block = "\x82\x86";
  block += path == "/" ? std::string("\x84") : std::string{'\x04', char(path.size())} + std::string(path);
  block += "\x41\x09localhost";
  return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(kSettings, 0, 0, {}) +
         h2_frame(kHeaders, kEndStream | kEndHeaders, 1, block);
}

// ---------------------------------------------------------------- connections

enum Cls : uint8_t { kIdle, kNeverUsed, kHalfSent, kInflight, kClasses };
const char* const kClsName[kClasses] = {"idle", "never_used", "half_sent", "inflight"};

enum class St : uint8_t { connecting, awaiting_response, armed, closed };

struct Conn {
  int fd = -1;
  Cls cls = kIdle;
  St st = St::connecting;
  bool reset = false;        // closed by RST (or another socket error) rather than FIN
  bool early = false;        // closed before t0
  bool complete = false;     // in-flight: a complete response arrived
  Response resp;
  double close_ms = -1;      // relative to t0
  double resp_ms = -1;       // relative to t0
  double close_mono = -1;    // CLOCK_MONOTONIC ms
  size_t unexpected = 0;     // bytes received that no request asked for
  int close_code = -1;       // WebSocket: the code of the server's Close frame (0: none given)
  double close_frame_ms = -1;  // WebSocket: when that Close arrived, relative to t0
  long echoes = 0;           // ws-echo: round trips completed
  int goaways = 0;           // HTTP/2: GOAWAY frames received
  double first_goaway_ms = -1, last_goaway_ms = -1;  // relative to t0
  long goaway_last_stream = -1;  // the last stream id of the latest GOAWAY
  std::string buf;
};

constexpr std::string_view kGet = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
constexpr std::string_view kHalf = "GET /slow?ms=1 HT";
constexpr int kMaxEvents = 16384;
constexpr uint32_t kArmed = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;

struct Loader {
  Options opt;
  int ep = -1;
  sockaddr_in addr{};
  std::vector<Conn> conns;
  std::vector<epoll_event> evs = std::vector<epoll_event>(kMaxEvents);
  long early_closes = 0;
  long bad_status = 0;
  const std::string idle_request;  // a keep-alive GET, or a WebSocket handshake
  const int idle_status;           // what it must be answered with
  double t0 = 0;  // CLOCK_MONOTONIC ms of the trigger
  bool triggered = false;
  long closed = 0;  // connections closed (any time)

  explicit Loader(const Options& o)
      : opt(o),
        idle_request(o.h2 ? h2_get("/") : o.websocket.empty() ? std::string(kGet) : ws_handshake(o.websocket)),
        idle_status(o.websocket.empty() ? 200 : 101) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1: %s", std::strerror(errno));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(opt.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }

  void ctl(int op, Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = uint32_t(&c - conns.data());
    if (epoll_ctl(ep, op, c.fd, &ev) != 0) die("epoll_ctl: %s", std::strerror(errno));
  }

  void mark_closed(Conn& c, double mono, bool reset) {
    c.st = St::closed;
    c.reset = reset;
    c.close_mono = mono;
    ++closed;
    if (triggered) {
      c.close_ms = mono - t0;
    } else {
      c.early = true;
      ++early_closes;
    }
  }

  // WebSocket frames on an idle connection: a Close is recorded and answered with its code.
  void on_ws_data(Conn& c, const char* p, size_t n, double mono) {
    c.buf.append(p, n);
    WsFrame f;
    long used;
    while ((used = ws_parse(c.buf, f)) > 0) {
      if (f.opcode == 8 && c.close_code < 0) {
        c.close_code = f.payload.size() >= 2 ? uint8_t(f.payload[0]) << 8 | uint8_t(f.payload[1]) : 0;
        c.close_frame_ms = triggered ? mono - t0 : -1;
        const std::string reply = ws_frame(8, f.payload.substr(0, std::min<size_t>(f.payload.size(), 2)));
        (void)!::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
      } else {
        c.unexpected += size_t(used);
      }
      c.buf.erase(0, size_t(used));
    }
    if (used < 0) {
      c.unexpected += c.buf.size();
      c.buf.clear();
    }
  }

  // HTTP/2 frames: SETTINGS and PINGs are acknowledged, GOAWAYs recorded, and stream 1's
  // end (END_STREAM, or RST_STREAM: not a 200) marks the response complete.
  void on_h2_data(Conn& c, const char* p, size_t n, double mono) {
    c.buf.append(p, n);
    const double at = triggered ? mono - t0 : -1;
    size_t off = 0;
    while (c.buf.size() - off >= 9) {
      const std::string_view head(c.buf.data() + off, 9);
      const size_t len = size_t(uint8_t(head[0])) << 16 | size_t(uint8_t(head[1])) << 8 | uint8_t(head[2]);
      if (c.buf.size() - off < 9 + len) break;
      const uint8_t type = uint8_t(head[3]), flags = uint8_t(head[4]);
      const uint32_t stream = be32(head.substr(5)) & 0x7fffffffu;
      const std::string_view payload(c.buf.data() + off + 9, len);
      off += 9 + len;
      std::string reply;
      if (type == kSettings && !(flags & kAck)) reply = h2_frame(kSettings, kAck, 0, {});
      if (type == kPing && !(flags & kAck)) reply = h2_frame(kPing, kAck, 0, payload);
      if (!reply.empty()) (void)!::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
      if (type == kGoaway && len >= 8) {
        if (c.goaways++ == 0) c.first_goaway_ms = at;
        c.last_goaway_ms = at;
        c.goaway_last_stream = long(be32(payload) & 0x7fffffffu);
      }
      if (stream != 1 || c.complete) continue;
      if (type == kHeaders && c.resp.status == 0) {
        const size_t skip = (flags & kPadded ? 1 : 0) + (flags & kPriority ? 5 : 0);
        c.resp.status = len > skip && uint8_t(payload[skip]) == kStatus200 ? 200 : -1;
      }
      if (type == kRstStream) c.resp.status = -1;
      if (type == kRstStream || ((type == kData || type == kHeaders) && (flags & kEndStream))) {
        c.complete = true;
        c.resp_ms = at;
      }
    }
    c.buf.erase(0, off);
  }

  // Data on an armed connection. In-flight ones parse their response, others count it.
  void on_data(Conn& c, const char* p, size_t n, double mono) {
    if (opt.h2) {
      on_h2_data(c, p, n, mono);
      return;
    }
    if (c.cls == kIdle && !opt.websocket.empty()) {
      on_ws_data(c, p, n, mono);
      return;
    }
    if (c.cls != kInflight || c.complete) {
      c.unexpected += n;
      return;
    }
    c.buf.append(p, n);
    long used = parse_response(c.buf, c.resp);
    if (used < 0) {
      c.unexpected += c.buf.size();
      c.buf.clear();
      c.complete = true;  // give up parsing; counted as not 200
      c.resp.status = -1;
    } else if (used > 0) {
      c.complete = true;
      c.resp_ms = triggered ? mono - t0 : -1;
      c.unexpected += c.buf.size() - size_t(used);
      c.buf.clear();
      c.buf.shrink_to_fit();
    }
  }

  // One event on an armed (one-shot) connection: normally a single read that returns 0.
  void on_armed(Conn& c, uint32_t events, double mono) {
    char buf[16384];
    for (;;) {
      ssize_t r = ::read(c.fd, buf, sizeof buf);
      if (r > 0) {
        on_data(c, buf, size_t(r), mono);
        if (size_t(r) == sizeof buf || (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
        ctl(EPOLL_CTL_MOD, c, kArmed);
        return;
      }
      if (r == 0) {
        mark_closed(c, mono, false);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ctl(EPOLL_CTL_MOD, c, kArmed);
        return;
      }
      mark_closed(c, mono, true);
      return;
    }
  }

  // Opens conns[first, first+count) of one class with bounded connect concurrency.
  // Idle ones are done when their 200 arrived; the others when their bytes are sent.
  void open_range(size_t first, size_t count, Cls cls, std::string_view req) {
    const bool want_resp = cls == kIdle;
    const size_t end = first + count;
    size_t next = first, done = 0;
    long pending = 0;
    const double deadline = mono_ms() + 120000;
    auto finish = [&](Conn& c) {
      c.st = St::armed;
      ctl(EPOLL_CTL_MOD, c, kArmed);
      --pending;
      ++done;
    };
    auto connected = [&](Conn& c) {
      if (!req.empty()) {
        ssize_t w = ::send(c.fd, req.data(), req.size(), MSG_NOSIGNAL);
        if (w != ssize_t(req.size())) die("send during setup failed: %s", w < 0 ? std::strerror(errno) : "short write");
      }
      if (want_resp) {
        c.st = St::awaiting_response;
        ctl(EPOLL_CTL_MOD, c, EPOLLIN | EPOLLRDHUP);
      } else {
        finish(c);
      }
    };
    while (done < count) {
      while (next < end && pending < opt.connect_concurrency) {
        Conn& c = conns[next++];
        c.cls = cls;
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) die("socket: %s (raise ulimit -n?)", std::strerror(errno));
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ++pending;
        c.st = St::connecting;
        int rc = ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        if (rc == 0) {
          ctl(EPOLL_CTL_ADD, c, EPOLLIN | EPOLLRDHUP);
          connected(c);
        } else if (errno == EINPROGRESS) {
          ctl(EPOLL_CTL_ADD, c, EPOLLOUT | EPOLLIN | EPOLLRDHUP);
        } else {
          die("connect: %s", std::strerror(errno));
        }
      }
      if (done >= count) break;
      double left = deadline - mono_ms();
      if (left <= 0) die("setup timed out (server not accepting?)");
      int n = epoll_wait(ep, evs.data(), kMaxEvents, int(std::min(left, 1000.0)) + 1);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait: %s", std::strerror(errno));
      }
      double mono = mono_ms();
      for (int i = 0; i < n; ++i) {
        Conn& c = conns[evs[i].data.u32];
        uint32_t e = evs[i].events;
        switch (c.st) {
          case St::connecting: {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) die("connect: %s", std::strerror(err));
            if (!(e & EPOLLOUT)) die("connect: unexpected event");
            connected(c);
            break;
          }
          case St::awaiting_response: {
            char buf[4096];
            ssize_t r = ::read(c.fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
              die("server closed a connection during setup (%s)", r == 0 ? "EOF" : std::strerror(errno));
            if (r < 0) break;
            if (opt.h2) {
              on_h2_data(c, buf, size_t(r), mono);
              if (!c.complete) break;
              if (c.resp.status != 200) ++bad_status;
              c.complete = false;  // for idle connections "complete" is about a later response
              c.buf.clear();
              c.buf.shrink_to_fit();
              finish(c);
              break;
            }
            c.buf.append(buf, size_t(r));
            long used = parse_response(c.buf, c.resp);
            if (used < 0) die("malformed response during setup");
            if (used > 0) {
              if (c.resp.status != (cls == kIdle ? idle_status : 200)) ++bad_status;
              if (size_t(used) != c.buf.size()) c.unexpected += c.buf.size() - size_t(used);
              c.buf.clear();
              c.buf.shrink_to_fit();
              finish(c);
            }
            break;
          }
          case St::armed:
            on_armed(c, e, mono);  // an earlier connection closed or sent something
            break;
          case St::closed:
            break;
        }
      }
    }
  }

  // Services events for ms milliseconds (early closes are recorded).
  void pump(double ms) {
    double until = mono_ms() + ms;
    for (;;) {
      double left = until - mono_ms();
      if (left <= 0) return;
      int n = epoll_wait(ep, evs.data(), kMaxEvents, int(left) + 1);
      if (n < 0 && errno != EINTR) die("epoll_wait: %s", std::strerror(errno));
      double mono = mono_ms();
      for (int i = 0; i < n; ++i) {
        Conn& c = conns[evs[i].data.u32];
        if (c.st == St::armed) on_armed(c, evs[i].events, mono);
      }
    }
  }

  void open_all(long n_idle, long n_never, long n_half, long n_inflight) {
    conns.resize(size_t(n_idle + n_never + n_half + n_inflight));
    size_t at = 0;
    double t = mono_ms();
    open_range(at, size_t(n_idle), kIdle, idle_request);
    at += size_t(n_idle);
    std::fprintf(stderr, "loadgen: %ld idle keep-alive connections ready in %.0f ms\n", n_idle, mono_ms() - t);
    open_range(at, size_t(n_never), kNeverUsed, {});
    at += size_t(n_never);
    open_range(at, size_t(n_half), kHalfSent, kHalf);
    at += size_t(n_half);
    const std::string slow_path = "/slow?ms=" + std::to_string(opt.slow_ms);
    const std::string slow = opt.h2 ? h2_get(slow_path) : "GET " + slow_path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    open_range(at, size_t(n_inflight), kInflight, slow);
    if (bad_status > 0)
      die("%s idle connections did not get a %s", std::to_string(bad_status).c_str(),
          std::to_string(idle_status).c_str());
  }
};

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      std::fprintf(stderr, "loadgen: setrlimit(NOFILE): %s\n", std::strerror(errno));
  }
}

long read_rss_kb(long pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/status";
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, "VmRSS:", 6) == 0) kb = std::atol(line + 6);
  std::fclose(f);
  return kb;
}

// ---------------------------------------------------------------- JSON

struct Json {
  std::string s = "{";
  bool first = true;
  void key(const char* k) {
    if (!first) s += ',';
    first = false;
    s += '"';
    s += k;
    s += "\":";
  }
  void num(const char* k, long v) {
    key(k);
    s += std::to_string(v);
  }
  void ms(const char* k, double v) {  // negative = unknown -> null
    key(k);
    if (v < 0) {
      s += "null";
      return;
    }
    char b[64];
    std::snprintf(b, sizeof b, "%.3f", v);
    s += b;
  }
  void str(const char* k, const std::string& v) {
    key(k);
    s += '"' + v + '"';
  }
  void boolean(const char* k, bool v) {
    key(k);
    s += v ? "true" : "false";
  }
  void raw(const char* k, const std::string& v) {
    key(k);
    s += v;
  }
  std::string done() { return s + "}"; }
};

double percentile_sorted(const std::vector<double>& v, double p) {
  if (v.empty()) return -1;
  if (p >= 1.0) return v.back();
  double idx = p * double(v.size() - 1);
  size_t lo = size_t(idx);
  double frac = idx - double(lo);
  if (lo + 1 >= v.size()) return v[lo];
  return v[lo] * (1 - frac) + v[lo + 1] * frac;
}

// HTTP/2: per class, how many connections saw no, one or two-or-more GOAWAYs, when the last
// of them saw its first and its final one, and the largest last-stream id a final one carried.
std::string h2_stats(const Loader& L, Cls cls) {
  Json j;
  long none = 0, once = 0, twice = 0, last_stream = -1;
  double first = -1, final = -1;
  for (const Conn& c : L.conns) {
    if (c.cls != cls) continue;
    (c.goaways == 0 ? none : c.goaways == 1 ? once : twice) += 1;
    first = std::max(first, c.first_goaway_ms);
    final = std::max(final, c.last_goaway_ms);
    last_stream = std::max(last_stream, c.goaway_last_stream);
  }
  j.num("no_goaway", none);
  j.num("one_goaway", once);
  j.num("two_goaways", twice);
  j.ms("last_first_goaway_ms", first);
  j.ms("last_final_goaway_ms", final);
  j.num("max_final_last_stream", last_stream);
  return j.done();
}

std::string class_stats(const Loader& L, Cls cls) {
  Json j;
  long count = 0, n_closed = 0, resets = 0, early = 0, complete = 0, ok = 0, with_close = 0;
  size_t unexpected = 0;
  std::vector<double> closes, resps;
  for (const Conn& c : L.conns) {
    if (c.cls != cls) continue;
    ++count;
    if (c.st == St::closed) {
      ++n_closed;
      if (c.reset) ++resets;
      if (c.early) ++early;
      else closes.push_back(c.close_ms);
    }
    if (c.complete) {
      ++complete;
      if (c.resp.status == 200) ++ok;
      if (c.resp.connection_close) ++with_close;
      if (c.resp_ms >= 0) resps.push_back(c.resp_ms);
    }
    unexpected += c.unexpected;
  }
  std::sort(closes.begin(), closes.end());
  std::sort(resps.begin(), resps.end());
  j.num("count", count);
  j.num("closed", n_closed);
  j.num("resets", resets);
  j.num("closed_before_signal", early);
  j.ms("first_close_ms", closes.empty() ? -1 : closes.front());
  j.ms("median_close_ms", percentile_sorted(closes, 0.5));
  j.ms("p99_close_ms", percentile_sorted(closes, 0.99));
  j.ms("last_close_ms", closes.empty() ? -1 : closes.back());
  j.num("unexpected_bytes", long(unexpected));
  if (cls == kInflight) {
    j.num("complete", complete);
    j.num("status_200", ok);
    j.num("with_connection_close", with_close);
    j.ms("first_response_ms", resps.empty() ? -1 : resps.front());
    j.ms("last_response_ms", resps.empty() ? -1 : resps.back());
  }
  return j.done();
}

// WebSocket idle connections: how many Close frames came with which code, and when.
std::string ws_close_stats(const Loader& L) {
  std::vector<std::pair<int, long>> codes;
  std::vector<double> at;
  long none = 0;
  for (const Conn& c : L.conns) {
    if (c.cls != kIdle) continue;
    if (c.close_code < 0) {
      ++none;
      continue;
    }
    auto it = std::find_if(codes.begin(), codes.end(), [&](auto& p) { return p.first == c.close_code; });
    if (it == codes.end()) codes.emplace_back(c.close_code, 1);
    else ++it->second;
    if (c.close_frame_ms >= 0) at.push_back(c.close_frame_ms);
  }
  std::sort(codes.begin(), codes.end());
  std::sort(at.begin(), at.end());
  Json by_code;
  for (auto& [code, n] : codes) by_code.num(std::to_string(code).c_str(), n);
  Json j;
  j.raw("codes", by_code.done());
  j.num("no_close_frame", none);
  j.ms("median_close_frame_ms", percentile_sorted(at, 0.5));
  j.ms("max_close_frame_ms", at.empty() ? -1 : at.back());
  return j.done();
}

// ---------------------------------------------------------------- sub-commands

int cmd_idle(const Options& opt) {
  Loader L(opt);
  double setup_start = mono_ms();
  L.open_all(opt.conns, opt.never_used, opt.half_sent, opt.inflight);
  double setup_ms = mono_ms() - setup_start;
  // Let the server accept / read what was just sent (never-used and in-flight ones).
  L.pump(double(opt.settle_ms));
  long rss = opt.server_pid > 0 ? read_rss_kb(opt.server_pid) : -1;
  std::fprintf(stderr, "loadgen: %zu connections open (setup %.0f ms), server VmRSS %ld kB, sending SIG%s\n",
               L.conns.size(), setup_ms, rss, opt.signal.c_str());

  L.t0 = mono_ms();
  L.triggered = true;
  if (opt.signal != "NONE") {
    int sig = opt.signal == "TERM" ? SIGTERM : SIGINT;
    if (::kill(pid_t(opt.server_pid), sig) != 0) die("kill: %s", std::strerror(errno));
  }
  const double deadline = L.t0 + double(opt.timeout_ms);
  const long total = long(L.conns.size());
  bool timed_out = false;
  while (L.closed < total) {
    double left = deadline - mono_ms();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    int n = epoll_wait(L.ep, L.evs.data(), kMaxEvents, int(left) + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", std::strerror(errno));
    }
    double mono = mono_ms();  // one stamp per batch: every event in it happened before
    for (int i = 0; i < n; ++i) {
      Conn& c = L.conns[L.evs[i].data.u32];
      if (c.st == St::armed) L.on_armed(c, L.evs[i].events, mono);
    }
  }
  double last = -1;
  for (const Conn& c : L.conns)
    if (c.st == St::closed && !c.early) last = std::max(last, c.close_ms);

  Json j;
  j.str("cmd", "idle");
  j.num("port", opt.port);
  j.num("server_pid", opt.server_pid);
  j.str("signal", opt.signal);
  j.ms("t0_mono_ms", L.t0);
  j.ms("setup_ms", setup_ms);
  j.num("rss_loaded_kb", rss);
  j.num("total", total);
  j.num("closed", L.closed);
  j.num("unclosed", total - L.closed);
  j.boolean("timed_out", timed_out);
  j.num("closed_before_signal", L.early_closes);
  j.ms("last_close_ms", last);
  Json counts;
  counts.num("idle", opt.conns);
  counts.num("never_used", opt.never_used);
  counts.num("half_sent", opt.half_sent);
  counts.num("inflight", opt.inflight);
  j.raw("counts", counts.done());
  for (int k = 0; k < kClasses; ++k) {
    Cls cls = Cls(k);
    long n = cls == kIdle ? opt.conns : cls == kNeverUsed ? opt.never_used : cls == kHalfSent ? opt.half_sent : opt.inflight;
    if (n > 0 || cls == kIdle) j.raw(kClsName[k], class_stats(L, cls));
  }
  if (!opt.websocket.empty()) j.raw("ws_close", ws_close_stats(L));
  if (opt.h2) {
    j.raw("h2_idle", h2_stats(L, kIdle));
    if (opt.inflight > 0) j.raw("h2_inflight", h2_stats(L, kInflight));
  }
  std::printf("%s\n", j.done().c_str());
  std::fflush(stdout);
  return 0;
}

int cmd_ws_echo(const Options& opt) {
  Loader L(opt);
  L.open_all(opt.conns, 0, 0, 0);
  const std::string message = ws_frame(1, std::string(size_t(opt.size), 'x'));
  for (Conn& c : L.conns) {
    L.ctl(EPOLL_CTL_MOD, c, EPOLLIN | EPOLLRDHUP);
    if (::send(c.fd, message.data(), message.size(), MSG_NOSIGNAL) != ssize_t(message.size())) die("send failed");
  }
  const double start = mono_ms(), end = start + 1000.0 * double(opt.seconds);
  long round_trips = 0, failed = 0;
  char buf[65536];
  for (double now = start; now < end && failed < opt.conns; now = mono_ms()) {
    int n = epoll_wait(L.ep, L.evs.data(), kMaxEvents, int(end - now) + 1);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", std::strerror(errno));
    for (int i = 0; i < n; ++i) {
      Conn& c = L.conns[L.evs[i].data.u32];
      if (c.st == St::closed) continue;
      ssize_t r = ::read(c.fd, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        L.mark_closed(c, mono_ms(), r < 0);
        epoll_ctl(L.ep, EPOLL_CTL_DEL, c.fd, nullptr);
        ++failed;
        continue;
      }
      c.buf.append(buf, size_t(r));
      WsFrame f;
      // One message is in flight per connection: each whole echo sends the next.
      for (long used; (used = ws_parse(c.buf, f)) > 0;) {
        if (f.opcode == 1 && f.payload.size() == size_t(opt.size)) {
          ++c.echoes, ++round_trips;
          if (::send(c.fd, message.data(), message.size(), MSG_NOSIGNAL) < 0) ++failed;
        } else {
          c.unexpected += size_t(used);
        }
        c.buf.erase(0, size_t(used));
      }
    }
  }
  const double seconds = (mono_ms() - start) / 1000.0;
  long slowest = round_trips;
  for (const Conn& c : L.conns) slowest = std::min(slowest, c.echoes);
  Json j;
  j.str("cmd", "ws-echo");
  j.num("conns", opt.conns);
  j.num("size", opt.size);
  j.ms("seconds", seconds);
  j.num("round_trips", round_trips);
  j.num("per_second", long(double(round_trips) / seconds));
  j.num("fewest_on_a_connection", slowest);
  j.num("closed", failed);
  std::printf("%s\n", j.done().c_str());
  return failed == 0 ? 0 : 1;
}

int cmd_hold(const Options& opt) {
  // Block the signals before anything else so they are only read from the signalfd.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);

  Loader L(opt);
  double t = mono_ms();
  L.open_all(opt.conns, 0, 0, 0);
  double setup_ms = mono_ms() - t;
  double ready_mono = mono_ms();
  std::printf("{\"ready\":%ld,\"setup_ms\":%.3f,\"ready_mono_ms\":%.3f}\n", opt.conns, setup_ms, ready_mono);
  std::fflush(stdout);

  const uint32_t kSigTag = 0xFFFFFFFFu, kStdinTag = 0xFFFFFFFEu;
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = kSigTag;
  if (sfd < 0 || epoll_ctl(L.ep, EPOLL_CTL_ADD, sfd, &ev) != 0) die("signalfd: %s", std::strerror(errno));
  ev.data.u32 = kStdinTag;
  ev.events = EPOLLIN | EPOLLRDHUP;
  bool watch_stdin = epoll_ctl(L.ep, EPOLL_CTL_ADD, 0, &ev) == 0;  // fails for /dev/null, files
  if (!watch_stdin) std::fprintf(stderr, "loadgen: stdin not pollable; waiting for SIGTERM/SIGINT\n");

  std::string why = "signal";
  const long total = long(L.conns.size());
  for (bool run = true; run;) {
    int n = epoll_wait(L.ep, L.evs.data(), kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", std::strerror(errno));
    }
    double mono = mono_ms();
    for (int i = 0; i < n; ++i) {
      uint32_t tag = L.evs[i].data.u32;
      if (tag == kSigTag) {
        run = false;
        why = "signal";
      } else if (tag == kStdinTag) {
        char b[512];
        ssize_t r = ::read(0, b, sizeof b);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          run = false;
          why = "stdin";
          epoll_ctl(L.ep, EPOLL_CTL_DEL, 0, nullptr);
        }
      } else {
        Conn& c = L.conns[tag];
        if (c.st == St::armed) L.on_armed(c, L.evs[i].events, mono);
      }
    }
    if (opt.exit_when_closed && L.closed >= total) {
      run = false;
      why = "all_closed";
    }
  }
  std::vector<double> closes;
  for (Conn& c : L.conns) {
    if (c.st == St::closed) closes.push_back(c.close_mono);
    if (c.fd >= 0) ::close(c.fd);
  }
  std::sort(closes.begin(), closes.end());
  Json j;
  j.str("cmd", "hold");
  j.num("ready", opt.conns);
  j.str("ended_by", why);
  j.num("closed_by_server", long(closes.size()));
  j.ms("ready_mono_ms", ready_mono);
  j.ms("first_close_mono_ms", closes.empty() ? -1 : closes.front());
  j.ms("median_close_mono_ms", percentile_sorted(closes, 0.5));
  j.ms("last_close_mono_ms", closes.empty() ? -1 : closes.back());
  std::printf("%s\n", j.done().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  long need = opt.conns + opt.never_used + opt.half_sent + opt.inflight + 16;
  if (rl.rlim_cur != RLIM_INFINITY && long(rl.rlim_cur) < need)
    die("open-file limit %s too low for %s connections", std::to_string(rl.rlim_cur).c_str(),
        std::to_string(need - 16).c_str());
  if (opt.cmd == "ws-echo") return cmd_ws_echo(opt);
  return opt.cmd == "idle" ? cmd_idle(opt) : cmd_hold(opt);
}
