// sluice/tls/server.hpp: the HTTP/1.1 server of http/server.hpp over TLS,
// with its certificate replaceable while it runs.
//
//     sluice::tls::server srv(io.get_executor(), handler,
//                             sluice::tls::make_server_context("cert.pem", "key.pem"));
//     srv.listen("127.0.0.1", 8443);
//     ...
//     srv.reload("cert.pem", "key.pem");  // new connections get the new certificate
//     co_await srv.shutdown(5s);          // or: co_await srv.stop_now();
//
// Guarantees: those of http::basic_server (the same session code runs over
// the TLS stream, net::tls), plus:
// - server_options::handshake_timeout bounds each handshake; a failed one is
//   logged (see net/tls.hpp) and closes that connection only.
// - ALPN offers the HTTP server's protocols (http::alpn_protocols_for: h2 and
//   http/1.1, or http/1.1 alone when HTTP/2 is disabled or not built in).
// - A connection in its handshake counts as new: shutdown() and close_idle()
//   close it at once, stop_now() cancels it.
// - stop_now() cancels handshakes, reads, writes and close_notify waits at
//   once; it never waits for a peer's close_notify.
// - shutdown(grace): after a connection's last response the server sends
//   close_notify and waits for the peer's only for tls::options::
//   close_notify_timeout, then closes as the plain server does.
// - set_tls_context() and reload() change the certificate for connections
//   accepted from then on; open connections keep theirs. reload() throws
//   context_error on a bad file and the server keeps its current context.
//
// Thread safety: as http::basic_server; set_tls_context(), reload() and
// tls_context() may also be called from any thread at any time.
#pragma once

#include "sluice/config.hpp"
#include "sluice/http/server.hpp"
#include "sluice/net/tls.hpp"
#include "sluice/tls/context.hpp"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <utility>

namespace sluice::tls {

// The TLS transport's options, under the name tls::server's users know.
using options = net::tls_options;

class server final : public http::basic_server<net::tls> {
 public:
  server(asio::any_io_executor ex, handler_type handler, std::shared_ptr<asio::ssl::context> context,
         http::server_options options = {}, tls::options tls_options = {})
      : server(std::move(ex), std::move(handler), std::make_shared<context_holder>(std::move(context)),
               std::move(options), std::move(tls_options)) {}

  // Takes its contexts from `contexts`, which other servers may share (one
  // reload then serves them all).
  server(asio::any_io_executor ex, handler_type handler, std::shared_ptr<context_holder> contexts,
         http::server_options options = {}, tls::options tls_options = {})
      : basic_server(std::move(ex), std::move(handler), options,
                     net::tls(contexts, bounded(std::move(tls_options), options), options.handshake_timeout,
                              http::alpn_protocols_for(options))),
        contexts_(std::move(contexts)) {}

  // Serves connections accepted from now on with `context`.
  void set_tls_context(std::shared_ptr<asio::ssl::context> context) { contexts_->set(std::move(context)); }
  // Builds a context from the files, then serves new connections with it.
  // Throws context_error (the current context stays) when a file is bad.
  void reload(const std::filesystem::path& cert_chain, const std::filesystem::path& private_key) {
    contexts_->reload(cert_chain, private_key);
  }
  // The context new connections get now.
  std::shared_ptr<asio::ssl::context> tls_context() const { return contexts_->current(); }
  const std::shared_ptr<context_holder>& contexts() const noexcept { return contexts_; }

 private:
  static tls::options bounded(tls::options o, const http::server_options& http) {
    o.close_notify_timeout = std::min(o.close_notify_timeout, http.linger_timeout / 2);
    return o;
  }

  std::shared_ptr<context_holder> contexts_;
};

}  // namespace sluice::tls
