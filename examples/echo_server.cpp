// echo_server: a TCP echo server that shows what stop_now() guarantees.
//
//   echo_server PORT
//
// Ctrl-C calls stop_now(): every connection is closed and awaited, and the
// program prints how long that took. The ticker on the same io_context keeps
// ticking for a moment afterwards, because only the server stopped.
#include "sluice/tcp/server.hpp"

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

using namespace std::chrono;
using asio::ip::tcp;

asio::awaitable<void> echo(tcp::socket socket) {
  char data[4096];
  for (;;) {
    std::size_t n = co_await socket.async_read_some(asio::buffer(data), asio::use_awaitable);
    co_await asio::async_write(socket, asio::buffer(data, n), asio::use_awaitable);
  }
}

asio::awaitable<void> ticker(bool& server_stopped) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int after_stop = 0; after_stop < 3;) {
    timer.expires_after(500ms);
    co_await timer.async_wait(asio::use_awaitable);
    std::printf("tick%s\n", server_stopped ? " (the server is stopped, the program is not)" : "");
    std::fflush(stdout);
    if (server_stopped) ++after_stop;
  }
}

asio::awaitable<void> run(unsigned short port, bool& server_stopped) {
  auto ex = co_await asio::this_coro::executor;
  sluice::tcp::server server(ex, echo);
  auto ep = server.listen(tcp::endpoint(tcp::v4(), port));
  std::printf("echo server on port %u; Ctrl-C stops it\n", ep.port());
  std::fflush(stdout);

  asio::signal_set signals(ex, SIGINT, SIGTERM);
  co_await signals.async_wait(asio::use_awaitable);
  const auto open = server.connections();
  const auto start = steady_clock::now();
  co_await server.stop_now();
  const double ms = duration<double, std::milli>(steady_clock::now() - start).count();
  std::printf("stop_now() closed %zu connections in %.3f ms\n", open, ms);
  server_stopped = true;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: echo_server PORT\n");
    return 2;
  }
  asio::io_context io(1);
  bool server_stopped = false;
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(io, run(static_cast<unsigned short>(std::stoi(argv[1])), server_stopped), rethrow);
  asio::co_spawn(io, ticker(server_stopped), rethrow);
  io.run();
}
