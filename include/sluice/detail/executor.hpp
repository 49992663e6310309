// Internals: the executor each connection or accept loop runs on.
#pragma once

#include "sluice/config.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/detail/concurrency_hint.hpp>
#include <asio/detail/scheduler.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>

namespace sluice::detail {

// True when `ex` belongs to an execution context that Asio was promised runs
// on one thread: io_context(1), or one of the unsafe concurrency hints.
inline bool runs_on_one_thread(const asio::any_io_executor& ex) {
  auto& ctx = asio::query(ex, asio::execution::context);
  if (!asio::has_service<asio::detail::scheduler>(ctx)) return false;
  const int hint = asio::use_service<asio::detail::scheduler>(ctx).concurrency_hint();
  return hint == 1 || hint == ASIO_CONCURRENCY_HINT_UNSAFE || hint == ASIO_CONCURRENCY_HINT_UNSAFE_IO;
}

// An executor that runs one task's handlers one at a time: a new strand, or
// `ex` itself where everything already runs on one thread (a strand would
// then only cost memory and time: it does not fit in any_io_executor's
// small buffer, so each copy made from it allocates).
inline asio::any_io_executor serial_executor(const asio::any_io_executor& ex, bool one_thread) {
  if (one_thread) return ex;
  return asio::make_strand(ex);
}

}  // namespace sluice::detail
