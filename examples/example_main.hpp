// examples/example_main.hpp: what every example does around its one idea, written once.
//
// Each example takes --port P (0: any free port) and --grace-ms G (default 5000), plus flags of
// its own; listens on 127.0.0.1 and prints `listening on HOST:PORT` first; stops on a signal:
// SIGTERM drains with shutdown(G ms), SIGINT (or a second signal during the drain) calls
// stop_now(); then prints one JSON line {"event":"stopped",...} with the summary and exits, with
// nothing left running. A bad flag or a failure prints one line on stderr and exits with 1.
#pragma once

#include "sluice/signals.hpp"

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace example {

struct flags {
  unsigned short port = 0;
  std::chrono::milliseconds grace{5000};
};

// A flag of the example's own that takes milliseconds: its name and where the value goes.
using duration_flag = std::pair<std::string_view, std::chrono::milliseconds*>;

// Throws std::invalid_argument for an unknown flag or one without its value.
inline flags parse(int argc, char** argv, std::initializer_list<duration_flag> own = {}) {
  flags f;
  std::vector<duration_flag> known(own);
  known.emplace_back("--grace-ms", &f.grace);
  for (int i = 1; i < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (i + 1 == argc) throw std::invalid_argument(std::string(flag) + " needs a value");
    if (flag == "--port") {
      f.port = static_cast<unsigned short>(std::stoul(argv[i + 1]));
      continue;
    }
    auto found = std::find_if(known.begin(), known.end(), [&](const auto& k) { return k.first == flag; });
    if (found == known.end()) throw std::invalid_argument("unknown argument: " + std::string(flag));
    *found->second = std::chrono::milliseconds(std::stol(argv[i + 1]));
  }
  return f;
}

// Listens, says where, and stops `server` on the first signal as this header's opening says.
template <typename Server>
asio::awaitable<void> serve_until_signalled(Server& server, flags f) {
  // Registered before the port opens: a signal sent as soon as "listening" is printed reaches
  // the server instead of killing the process.
  asio::signal_set signals(co_await asio::this_coro::executor, SIGINT, SIGTERM);
  const auto ep = server.listen("127.0.0.1", f.port);
  std::printf("listening on 127.0.0.1:%u\n", ep.port());
  std::fflush(stdout);
  const std::vector<int> immediate{SIGINT};
  const auto stopped = co_await sluice::stop_on_signals(server, signals, f.grace, immediate);
  std::printf("%s\n", sluice::to_json(stopped).c_str());
}

// Runs the coroutine `start()` makes on a one-thread io_context until all is done.
template <typename Start>
int run(const char* name, Start start) {
  try {
    asio::io_context io(1);  // one thread: Asio's promise, which spares sluice a strand per connection
    asio::co_spawn(io, start(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace example
