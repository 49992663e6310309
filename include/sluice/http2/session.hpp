// sluice/http2/session.hpp: the server side of one HTTP/2 connection as
// bytes in, events and bytes out: nghttp2's server session with no I/O.
//
// nghttp2 does the framing, HPACK, flow control, stream states and the
// protocol's validation; this wrapper feeds it what was read (receive),
// turns its callbacks into the events a protocol acts on (session_events),
// and serializes what it has to send into a bounded buffer (output), which
// the caller writes. So it can be unit-tested and fuzzed on bytes alone.
//
// Guarantees
// - Request bytes are acknowledged to the client (WINDOW_UPDATE) only when
//   the caller says it used them (consume): stream_window and
//   connection_window bound what a client can make the server buffer.
// - output() holds at most max_output_buffered bytes plus one frame: a client
//   that does not read makes the caller's writes wait, not memory grow.
// - A streamed response body is pulled from the caller's chunk
//   (write_chunk), copied when the frame is serialized, and the caller is
//   told when the whole chunk was taken (on_chunk_taken): the writer's
//   backpressure. Until then the chunk's bytes must stay valid.
// - Limits (http2_options): SETTINGS_MAX_CONCURRENT_STREAMS and
//   SETTINGS_MAX_HEADER_LIST_SIZE are advertised and enforced
//   (REFUSED_STREAM by nghttp2; a head over the size gets 431); a stream
//   opened above the final GOAWAY's last stream gets REFUSED_STREAM; rapid reset,
//   CONTINUATION, SETTINGS and PING-ACK floods end the session (nghttp2's
//   options); max_empty_frames empty DATA/HEADERS/CONTINUATION frames in a
//   row end it with GOAWAY(ENHANCE_YOUR_CALM).
// - Malformed input never throws: receive() returns false and the session
//   has queued the GOAWAY nghttp2 chose; write output() and close.
//
// Events are called from inside receive(), output() and the submit calls:
// an event handler records and wakes, it never calls back into the session
// (consume excepted, which only counts).
//
// Thread safety: none; one session per connection, used on its executor.
//
//     struct events : sluice::http2::session_events { ... };
//     sluice::http2::session s(events, options);
//     if (!s.receive(bytes)) ...;                // malformed: flush and close
//     write(s.output()); s.output_written();     // until output() is empty
//     s.respond(id, 200, fields, "hello");       // or respond_streamed + write_chunk
#pragma once

#include "sluice/http/fields.hpp"
#include "sluice/http/parser.hpp"
#include "sluice/http2/options.hpp"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sluice::http2 {

using stream_id = std::int32_t;

// RFC 9113 7, as RST_STREAM and GOAWAY carry them.
enum class error_code : std::uint32_t {
  no_error = NGHTTP2_NO_ERROR,
  protocol_error = NGHTTP2_PROTOCOL_ERROR,
  internal_error = NGHTTP2_INTERNAL_ERROR,
  refused_stream = NGHTTP2_REFUSED_STREAM,
  cancel = NGHTTP2_CANCEL,
  enhance_your_calm = NGHTTP2_ENHANCE_YOUR_CALM,
};

// What the session tells its protocol.
struct session_events {
  // A request head is complete; `ended` when no body follows.
  virtual void on_request(stream_id id, http::request_head& head, bool ended) = 0;
  // Request body bytes, valid during the call only. Return false when no one
  // will read them (the stream's handler is gone): the session consumes them.
  virtual bool on_data(stream_id id, std::string_view data) = 0;
  // The request is complete; `trailers` holds its trailing fields, if any.
  virtual void on_request_end(stream_id id, http::fields& trailers) = 0;
  // The stream is closed: its response was sent, or it was reset
  // (`error` from RST_STREAM, or the session's own reset).
  virtual void on_stream_close(stream_id id, error_code error) = 0;
  // The PING sent by shutdown_notice() came back.
  virtual void on_ping_ack() = 0;
  // The chunk given to write_chunk() was copied whole into frames.
  virtual void on_chunk_taken(stream_id id) = 0;

 protected:
  ~session_events() = default;
};

class session {
 public:
  session(session_events& events, const http::http2_options& options);
  ~session() { nghttp2_session_del(session_); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Feeds bytes read from the client. False once the session failed (bad
  // preface, protocol error, flood): it has queued its GOAWAY.
  bool receive(std::string_view bytes);

  // Serialized frames to write next, at most max_output_buffered plus one
  // frame: valid until output_written(). Empty when nothing is due.
  std::string_view output();
  void output_written() { out_.clear(); }

  // Whether nghttp2 still reads or has something to write: both false once
  // the session is over (GOAWAY exchanged and no stream left).
  bool wants_read() const { return nghttp2_session_want_read(session_) != 0; }
  bool wants_write() const { return nghttp2_session_want_write(session_) != 0; }
  bool failed() const { return failed_; }

  // Request bytes that the handler has used: re-opens the windows.
  void consume(stream_id id, std::size_t n) { nghttp2_session_consume(session_, id, n); }

  // A whole response; `body` is moved into the session until sent. With
  // `send_body` false (HEAD, 204, 304), only its length is told.
  void respond(stream_id id, unsigned status, const http::fields& headers, std::string body, bool send_body = true);
  // A response whose body follows through write_chunk() and end_body().
  void respond_streamed(stream_id id, unsigned status, const http::fields& headers);
  // The next piece of a streamed body; its bytes must stay valid until
  // on_chunk_taken(id). One chunk at a time.
  void write_chunk(stream_id id, std::string_view chunk);
  void end_body(stream_id id);

  void reset(stream_id id, error_code error) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, static_cast<std::uint32_t>(error));
  }
  // RFC 9113 6.8: GOAWAY(2^31-1), then (serialized after it) a PING whose
  // ACK (on_ping_ack) says the client has read it.
  void shutdown_notice();
  // GOAWAY with the last stream processed: streams above it are refused.
  void final_goaway(error_code error = error_code::no_error);
  // Whether the final GOAWAY was submitted.
  bool goaway_sent() const { return final_goaway_sent_; }

 private:
  struct stream;
  struct callbacks;

  stream* find(stream_id id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }
  void submit(stream_id id, unsigned status, const http::fields& headers, const std::string* length,
              const nghttp2_data_provider* body);
  void reject_head(stream_id id);
  void deliver_head(stream_id id, bool ended);
  bool serialize();
  void refuse_late_streams();
  bool beyond_goaway(stream_id id) const {
    return final_goaway_sent_ && id > last_processed_ && id % 2 == 1 && !streams_.count(id);
  }
  bool count_empty(const nghttp2_frame_hd& hd);
  void terminate(error_code error) {
    nghttp2_session_terminate_session(session_, static_cast<std::uint32_t>(error));
    failed_ = true;
  }

  session_events& events_;
  const http::http2_options options_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<stream_id, std::unique_ptr<stream>> streams_;
  std::vector<stream_id> refused_;  // opened after the final GOAWAY, to reset
  stream_id last_processed_ = 0;    // the final GOAWAY's
  std::string out_;
  std::uint32_t empty_frames_ = 0;
  bool failed_ = false;
  bool final_goaway_sent_ = false;
  bool ping_after_notice_ = false;
};

// Implementation -------------------------------------------------------------

// What the session keeps of a stream: the head being received, then the
// response body being sent.
struct session::stream {
  std::string method, path, authority, cookie;
  http::request_head head;
  http::fields trailers;
  std::size_t header_bytes = 0;
  bool head_too_large = false;
  bool delivered = false;  // the protocol has the head
  // The response body: owned (a whole response) or the caller's chunk.
  std::string owned;
  std::string_view pending;
  bool body_complete = false;  // no byte after `pending`
  bool deferred = false;       // nghttp2 waits for write_chunk or end_body
};

// nghttp2's callbacks, each handing over to the session.
struct session::callbacks {
  static session& self(void* user) { return *static_cast<session*>(user); }

  static int on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user) {
    session& me = self(user);
    if (hd->type == NGHTTP2_HEADERS && me.beyond_goaway(hd->stream_id)) me.refused_.push_back(hd->stream_id);
    return me.count_empty(*hd) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
  }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (self(user).beyond_goaway(frame->hd.stream_id)) return 0;  // refused, never delivered
    self(user).streams_[frame->hd.stream_id] = std::make_unique<stream>();
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                       const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* user) {
    stream* s = self(user).find(frame->hd.stream_id);
    if (!s || s->head_too_large) return 0;
    // RFC 9113 6.5.2: a field costs its name, its value and 32.
    s->header_bytes += namelen + valuelen + 32;
    if (s->header_bytes > self(user).options_.max_header_list_size) {
      s->head_too_large = true;
      return 0;
    }
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) s->trailers.add(n, v);
    else if (n == ":method") s->method = v;
    else if (n == ":path") s->path = v;
    else if (n == ":authority") s->authority = v;
    else if (n == "cookie") s->cookie.append(s->cookie.empty() ? "" : "; ").append(v);  // RFC 9113 8.2.3
    else if (n.front() != ':') s->head.headers.add(n, v);
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    session& me = self(user);
    const bool ended = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) me.deliver_head(frame->hd.stream_id, ended);
        break;
      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) me.events_.on_ping_ack();
        return 0;
      default:
        break;
    }
    if (ended && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA)) {
      stream* s = me.find(frame->hd.stream_id);
      if (s && s->delivered) me.events_.on_request_end(frame->hd.stream_id, s->trailers);
    }
    return 0;
  }

  static int on_data_chunk(nghttp2_session* ng, std::uint8_t, stream_id id, const std::uint8_t* data, std::size_t len,
                           void* user) {
    stream* s = self(user).find(id);
    const bool kept = s && s->delivered &&
                      self(user).events_.on_data(id, std::string_view(reinterpret_cast<const char*>(data), len));
    if (!kept) nghttp2_session_consume(ng, id, len);
    return 0;
  }

  static int on_stream_close(nghttp2_session*, stream_id id, std::uint32_t code, void* user) {
    session& me = self(user);
    auto it = me.streams_.find(id);
    if (it == me.streams_.end()) return 0;
    const bool delivered = it->second->delivered;
    me.streams_.erase(it);
    if (delivered) me.events_.on_stream_close(id, static_cast<error_code>(code));
    return 0;
  }

  static ssize_t read_body(nghttp2_session*, stream_id id, std::uint8_t* buf, std::size_t length,
                           std::uint32_t* flags, nghttp2_data_source*, void* user) {
    session& me = self(user);
    stream* s = me.find(id);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::size_t n = std::min(length, s->pending.size());
    if (n > 0) std::memcpy(buf, s->pending.data(), n);
    s->pending.remove_prefix(n);
    const bool chunk_done = n > 0 && s->pending.empty() && s->owned.empty();
    if (s->pending.empty() && s->body_complete) *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (chunk_done) me.events_.on_chunk_taken(id);
    if (n == 0 && !(*flags & NGHTTP2_DATA_FLAG_EOF)) {
      s->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    return static_cast<ssize_t>(n);
  }
};

inline session::session(session_events& events, const http::http2_options& options)
    : events_(events), options_(options) {
  struct owned_callbacks {
    nghttp2_session_callbacks* p = nullptr;
    ~owned_callbacks() { nghttp2_session_callbacks_del(p); }
  } cbs;
  struct owned_option {
    nghttp2_option* p = nullptr;
    ~owned_option() { nghttp2_option_del(p); }
  } opt;
  if (nghttp2_session_callbacks_new(&cbs.p) != 0 || nghttp2_option_new(&opt.p) != 0) throw std::bad_alloc();
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs.p, callbacks::on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs.p, callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs.p, callbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs.p, callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs.p, callbacks::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs.p, callbacks::on_stream_close);
  // The windows re-open as handlers read (consume), not as bytes arrive.
  nghttp2_option_set_no_auto_window_update(opt.p, 1);
  nghttp2_option_set_stream_reset_rate_limit(opt.p, options.reset_burst, options.reset_rate);
  nghttp2_option_set_max_continuations(opt.p, 8);
  nghttp2_option_set_max_settings(opt.p, 32);
  nghttp2_option_set_max_outbound_ack(opt.p, 1000);
  if (nghttp2_session_server_new2(&session_, cbs.p, this, opt.p) != 0) throw std::bad_alloc();

  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options.stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options.max_header_list_size},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<std::int32_t>(std::min<std::uint32_t>(options.connection_window,
                                                                                          NGHTTP2_MAX_WINDOW_SIZE)));
}

inline bool session::receive(std::string_view bytes) {
  if (failed_) return false;
  const auto n = nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  refuse_late_streams();
  if (n < 0) {
    // A fatal error (bad preface, flood): nghttp2 queued its GOAWAY when it could.
    if (!failed_) terminate(n == NGHTTP2_ERR_FLOODED ? error_code::enhance_your_calm : error_code::protocol_error);
    return false;
  }
  return !failed_;
}

inline std::string_view session::output() {
  // The PING goes once the notice is serialized: nghttp2 would send it
  // first, and its ACK must prove the client has read the GOAWAY.
  if (serialize() && std::exchange(ping_after_notice_, false)) {
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
    serialize();
  }
  return out_;
}

// True when nothing more is due now (rather than the bound reached).
inline bool session::serialize() {
  while (out_.size() < options_.max_output_buffered) {
    const std::uint8_t* data = nullptr;
    const auto n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) return true;  // nothing due, or a fatal error: what is here still goes
    out_.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return false;
}

inline void session::respond(stream_id id, unsigned status, const http::fields& headers, std::string body,
                             bool send_body) {
  const std::string length = std::to_string(body.size());
  stream* s = find(id);
  if (!s || !send_body || body.empty()) return submit(id, status, headers, &length, nullptr);
  s->owned = std::move(body);
  s->pending = s->owned;
  s->body_complete = true;
  nghttp2_data_provider provider{};
  provider.read_callback = callbacks::read_body;
  submit(id, status, headers, &length, &provider);
}

inline void session::respond_streamed(stream_id id, unsigned status, const http::fields& headers) {
  nghttp2_data_provider provider{};
  provider.read_callback = callbacks::read_body;
  submit(id, status, headers, nullptr, &provider);
}

inline void session::write_chunk(stream_id id, std::string_view chunk) {
  stream* s = find(id);
  if (!s) return;
  s->pending = chunk;
  if (std::exchange(s->deferred, false)) nghttp2_session_resume_data(session_, id);
}

inline void session::end_body(stream_id id) {
  stream* s = find(id);
  if (!s) return;
  s->body_complete = true;
  if (std::exchange(s->deferred, false)) nghttp2_session_resume_data(session_, id);
}

inline void session::shutdown_notice() {
  nghttp2_submit_shutdown_notice(session_);
  ping_after_notice_ = true;
}

inline void session::final_goaway(error_code error) {
  if (std::exchange(final_goaway_sent_, true)) return;
  last_processed_ = nghttp2_session_get_last_proc_stream_id(session_);
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last_processed_, static_cast<std::uint32_t>(error), nullptr, 0);
}

// A stream the client opened above the final GOAWAY's last stream id, before
// it read the GOAWAY: RST_STREAM(REFUSED_STREAM) says it was not processed
// and may be retried (nghttp2 would ignore it silently once the GOAWAY is
// out, and serve it if it is not yet). Submitted once mem_recv has counted
// the stream as received, below which nghttp2 would drop the reset.
inline void session::refuse_late_streams() {
  for (const stream_id id : std::exchange(refused_, {})) reset(id, error_code::refused_stream);
}

// RFC 9113 8.3: the fields HTTP/2 forbids (connection-specific) are dropped,
// names are lower-cased, and the length is the server's.
inline void session::submit(stream_id id, unsigned status, const http::fields& headers, const std::string* length,
                            const nghttp2_data_provider* body) {
  static constexpr std::string_view dropped[] = {"connection", "keep-alive", "transfer-encoding", "upgrade",
                                                 "proxy-connection", "content-length"};
  std::vector<std::string> names;
  names.reserve(headers.size());
  const std::string status_text = std::to_string(status);
  std::vector<nghttp2_nv> nv;
  nv.reserve(headers.size() + 2);
  auto add = [&nv](std::string_view n, std::string_view v) {
    nv.push_back({const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(n.data())),
                  const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(v.data())), n.size(), v.size(),
                  NGHTTP2_NV_FLAG_NONE});
  };
  add(":status", status_text);
  for (const auto& f : headers) {
    std::string& lower = names.emplace_back(f.name);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    if (std::find(std::begin(dropped), std::end(dropped), lower) != std::end(dropped)) continue;
    add(lower, f.value);
  }
  if (length) add("content-length", *length);
  nghttp2_submit_response(session_, id, nv.data(), nv.size(), body);  // copies the fields
}

// A head over max_header_list_size gets 431; what follows of its request is
// consumed unread (on_data_chunk: never delivered).
inline void session::reject_head(stream_id id) {
  static const http::fields none;
  submit(id, 431, none, nullptr, nullptr);
}

inline void session::deliver_head(stream_id id, bool ended) {
  stream* s = find(id);
  if (!s) return;
  if (s->head_too_large) return reject_head(id);
  http::request_head& head = s->head;
  head.assign_line(s->method, s->method == "CONNECT" ? s->authority : s->path, s->authority);
  head.version_major = 2;
  head.version_minor = 0;
  if (!s->cookie.empty()) head.headers.add("cookie", s->cookie);
  head.body = ended ? http::body_kind::none
                    : head.headers.contains("content-length") ? http::body_kind::length : http::body_kind::chunked;
  s->delivered = true;
  events_.on_request(id, head, ended);
}

// False once the session ends for a run of empty frames: each costs the
// server work and the client nothing (CVE-2019-9518).
inline bool session::count_empty(const nghttp2_frame_hd& hd) {
  if (hd.type != NGHTTP2_DATA && hd.type != NGHTTP2_HEADERS && hd.type != NGHTTP2_CONTINUATION) return true;
  if (hd.length > 0 || (hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    empty_frames_ = 0;
    return true;
  }
  if (++empty_frames_ <= options_.max_empty_frames) return true;
  terminate(error_code::enhance_your_calm);
  return false;
}

}  // namespace sluice::http2
