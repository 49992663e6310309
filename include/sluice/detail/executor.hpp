// Internals: the executor each connection or accept loop runs on.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/asio_internals.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>

#include <optional>
#include <stdexcept>

namespace sluice::detail {

// The servers touch their contexts from any thread (a stop dispatches to
// every session, a close comes from whoever calls it), which is only safe
// while Asio keeps its internal locks: a context built with
// ASIO_CONCURRENCY_HINT_UNSAFE or ASIO_CONCURRENCY_HINT_UNSAFE_IO (or any hint
// that turns a lock off) is refused with std::invalid_argument.
inline void require_asio_locking(const asio::any_io_executor& ex) {
  const auto hint = concurrency_hint(ex);
  if (!hint || keeps_asio_locking(*hint)) return;
  throw std::invalid_argument(
      "sluice: an io_context whose concurrency hint disables Asio's locking (ASIO_CONCURRENCY_HINT_UNSAFE, "
      "ASIO_CONCURRENCY_HINT_UNSAFE_IO) cannot serve: the server uses it from other threads; use a hint of 1");
}

// True when `ex` belongs to an io_context that Asio was promised runs on one
// thread: io_context(1). (The hints that also drop Asio's locks are refused
// by require_asio_locking.)
inline bool runs_on_one_thread(const asio::any_io_executor& ex) { return concurrency_hint(ex) == 1; }

// An executor that runs one task's handlers one at a time: a new strand, or
// `ex` itself where everything already runs on one thread (a strand would
// then only cost memory and time: it does not fit in any_io_executor's
// small buffer, so each copy made from it allocates).
inline asio::any_io_executor serial_executor(const asio::any_io_executor& ex, bool one_thread) {
  if (one_thread) return ex;
  return asio::make_strand(ex);
}

}  // namespace sluice::detail
