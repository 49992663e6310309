// HTTP/2 on a server run by two threads (sessions on strands, streams as
// tasks of their connection): concurrent streams on many connections, then
// shutdown() or stop_now() from a third thread. Run under TSan (suite 'mt').
#include "sluice/http/server.hpp"

#include "support/async_test.hpp"
#include "support/h2_client.hpp"
#include "support/http_client.hpp"

#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

using namespace sluice::test;
namespace http = sluice::http;

namespace {

constexpr int h2mt_connections = 16, h2mt_streams = 8;

// "/hold" waits until the server cancels it; anything else answers at once.
struct h2mt_handlers {
  std::atomic<int> holding{0}, cancelled{0};

  http::server::handler_type handler() {
    return [this](http::request& req) -> awaitable<http::response> {
      if (req.path() != "/hold") co_return http::response::text(200, "ok\n");
      asio::steady_timer forever(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
      ++holding;
      auto [ec] = co_await forever.async_wait(asio::experimental::as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted) ++cancelled;
      co_return http::response::text(200, "released\n");
    };
  }
};

struct h2mt_counts {
  std::atomic<int> answered{0}, closed{0};
};

// One connection: h2mt_streams concurrent GETs, then, with `hold`, one more
// stream left open; then it waits until the server closes the connection.
awaitable<void> h2mt_client(tcp::endpoint ep, bool hold, h2mt_counts& counts) {
  h2_client<tcp::socket> c(co_await connect_to(ep));
  std::vector<std::int32_t> ids;
  for (int i = 0; i < h2mt_streams; ++i) ids.push_back(c.peer.request("GET", "/"));
  auto all_done = [&] {
    for (auto id : ids)
      if (!c.peer.response(id).closed) return false;
    return true;
  };
  if (co_await c.until(all_done))
    for (auto id : ids) counts.answered += c.peer.response(id).status == 200;
  if (hold) c.peer.request("GET", "/hold");
  const bool closed = co_await c.until_closed();
  counts.closed += closed;
}

// Runs the server's stop on its own executor and waits for it from this thread.
http::shutdown_summary h2mt_wait(asio::io_context& io, asio::awaitable<http::shutdown_summary> stop) {
  std::promise<http::shutdown_summary> done;
  asio::co_spawn(io, std::move(stop), [&](std::exception_ptr e, http::shutdown_summary s) {
    if (e)
      done.set_exception(e);
    else
      done.set_value(s);
  });
  return done.get_future().get();
}

// The server on two threads, the clients on a third.
struct h2mt_rig {
  asio::io_context server_io;  // the default hint: several threads, so sessions get strands
  asio::executor_work_guard<asio::io_context::executor_type> server_work = asio::make_work_guard(server_io);
  std::vector<std::thread> server_threads;
  asio::io_context client_io{1};
  h2mt_handlers handlers;
  h2mt_counts counts;
  http::server srv{server_io.get_executor(), handlers.handler(), long_timeouts()};

  h2mt_rig() {
    for (int i = 0; i < 2; ++i) server_threads.emplace_back([this] { server_io.run(); });
  }
  ~h2mt_rig() {
    server_work.reset();
    for (auto& t : server_threads) t.join();
  }

  // Starts the clients; returns the thread that runs them until each connection is closed.
  std::thread start_clients(bool hold) {
    const auto ep = srv.listen(loopback_any);
    for (int i = 0; i < h2mt_connections; ++i) asio::co_spawn(client_io, h2mt_client(ep, hold, counts), asio::detached);
    return std::thread([this] { client_io.run(); });
  }
};

}  // namespace

TEST_CASE("HTTP/2 on two server threads: stop_now from a third thread cancels and awaits every open stream" *
          doctest::test_suite("mt")) {
  h2mt_rig rig;
  std::thread clients = rig.start_clients(true);
  // Each client counted its answers before it opened its held stream.
  while (rig.handlers.holding < h2mt_connections) std::this_thread::yield();
  CHECK(rig.counts.answered == h2mt_connections * h2mt_streams);
  CHECK(rig.srv.connections()[http::connection_state::http2] == h2mt_connections);
  CHECK(rig.srv.connections().streams == h2mt_connections);

  const auto summary = h2mt_wait(rig.server_io, rig.srv.stop_now());
  CHECK(rig.handlers.cancelled == h2mt_connections);  // awaited: counted before stop_now returned
  CHECK(summary.forced == h2mt_connections);
  CHECK(rig.srv.connections().total() == 0);
  CHECK(rig.srv.connections().streams == 0);
  clients.join();
  CHECK(rig.counts.closed == h2mt_connections);
}

TEST_CASE("HTTP/2 on two server threads: shutdown from a third thread closes the idle connections at once" *
          doctest::test_suite("mt")) {
  h2mt_rig rig;
  std::thread clients = rig.start_clients(false);
  while (rig.counts.answered < h2mt_connections * h2mt_streams) std::this_thread::yield();

  const auto summary = h2mt_wait(rig.server_io, rig.srv.shutdown(std::chrono::seconds(30)));
  CHECK(summary.forced == 0);
  CHECK(summary.idle_closed + summary.completed == h2mt_connections);
  CHECK(rig.srv.connections().total() == 0);
  clients.join();
  CHECK(rig.counts.closed == h2mt_connections);
}
