// sluice/signals.hpp: the usual way to stop a server on a signal, in one line.
//
//     asio::co_spawn(io, sluice::stop_on_signals(server, 30s), report);
//
// The first SIGTERM or SIGINT starts server.shutdown(grace); another signal
// during that shutdown escalates to server.stop_now(). Signals listed as
// immediate skip the graceful stage. It completes, with what happened, once
// the server has stopped.
//
// Guarantees
// - It never calls exit() and never stops an io_context: what happens after
//   the server has stopped is the program's business.
// - Nothing it starts outlives it: the escalation watcher is a task of a
//   scope it joins before completing.
// - Cancelling the awaiting coroutine before a signal arrives removes the
//   signal handlers and leaves the server alone.
//
// to_json(report) is the one line a program logs when its server has
// stopped: {"event":"stopped","mode":"graceful"|"now",...} with the summary.
//
// Works with any server that has `shutdown(duration)` and `stop_now()`
// returning awaitables of a summary (sluice::http::server, the TLS server).
// Thread safety: run it on one executor; the server's members are thread-safe.
#pragma once

#include "sluice/config.hpp"
#include "sluice/scope.hpp"

#include <asio/signal_set.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace sluice {

struct signal_policy {
  std::vector<int> graceful{SIGTERM, SIGINT};
  std::vector<int> immediate{};
};

template <typename Summary>
struct stop_report {
  int signal = 0;          // the signal that started the stop
  bool graceful = false;   // shutdown(grace) ran
  bool escalated = false;  // a second signal turned it into stop_now()
  Summary summary{};       // what the server did
  std::chrono::steady_clock::duration took{};
};

// As below, with signals the caller has already registered (so that none can
// slip through between the server's start and this coroutine's); those in
// `immediate` skip the graceful stage.
template <typename Server>
auto stop_on_signals(Server& server, asio::signal_set& signals, std::chrono::steady_clock::duration grace,
                     std::vector<int> immediate = {})
    -> asio::awaitable<stop_report<typename decltype(server.stop_now())::value_type>> {
  using summary_type = typename decltype(server.stop_now())::value_type;
  stop_report<summary_type> report;
  report.signal = co_await signals.async_wait(asio::use_awaitable);
  const auto start = std::chrono::steady_clock::now();
  if (std::find(immediate.begin(), immediate.end(), report.signal) != immediate.end()) {
    report.summary = co_await server.stop_now();
  } else {
    report.graceful = true;
    auto ex = co_await asio::this_coro::executor;
    auto escalate = [&]() -> asio::awaitable<void> {
      co_await signals.async_wait(asio::use_awaitable);
      report.escalated = true;
      co_await server.stop_now();
    };
    scope watcher;
    watcher.spawn(ex, std::move(escalate));
    // The watcher refers to this frame: it is joined on every way out,
    // cancellation of this coroutine included.
    std::exception_ptr failed;
    try {
      report.summary = co_await server.shutdown(grace);
    } catch (...) {
      failed = std::current_exception();
    }
    co_await asio::this_coro::reset_cancellation_state();
    co_await watcher.stop();
    if (failed) std::rethrow_exception(failed);
  }
  report.took = std::chrono::steady_clock::now() - start;
  co_return report;
}

template <typename Server>
auto stop_on_signals(Server& server, std::chrono::steady_clock::duration grace, signal_policy policy = {})
    -> asio::awaitable<stop_report<typename decltype(server.stop_now())::value_type>> {
  asio::signal_set signals(co_await asio::this_coro::executor);
  for (int s : policy.graceful) signals.add(s);
  for (int s : policy.immediate) signals.add(s);
  co_return co_await stop_on_signals(server, signals, grace, policy.immediate);
}

// One JSON object, no newline: what stopped the server, how long it took and
// the summary's counts (a summary with idle_closed, completed and forced, as
// http::shutdown_summary has).
template <typename Summary>
std::string to_json(const stop_report<Summary>& report) {
  char line[256];
  const double ms = std::chrono::duration<double, std::milli>(report.took).count();
  std::snprintf(line, sizeof line,
                "{\"event\":\"stopped\",\"mode\":\"%s\",\"ms\":%.3f,\"idle_closed\":%llu,\"completed\":%llu,"
                "\"forced\":%llu,\"signal\":%d,\"escalated\":%s}",
                report.graceful ? "graceful" : "now", ms, static_cast<unsigned long long>(report.summary.idle_closed),
                static_cast<unsigned long long>(report.summary.completed),
                static_cast<unsigned long long>(report.summary.forced), report.signal,
                report.escalated ? "true" : "false");
  return line;
}

}  // namespace sluice
