// Internals: every use sluice makes of Asio's internals (asio::detail), in
// one place, behind one check of the Asio version.
//
// Asio promises nothing about asio::detail: a new release may rename or
// change any of it without a compile error where it matters (a cache size
// that no longer means what in_exact_frame counts on only costs memory). So
// this header refuses other versions outright, with what to re-verify, rather
// than compiling into a quietly different server. Verified with Asio 1.22.1
// (Debian 12); 1.23 to 1.29 are let through unverified: re-verify the list
// in the #error below on such a version too, and whenever a test
// (http_hostile_test's idle memory above all) moves after an upgrade. Nothing
// else under include/sluice may name asio::detail or include <asio/detail/...>.
#pragma once

#include "sluice/config.hpp"

#include <asio/version.hpp>

#if ASIO_VERSION < 102200 || ASIO_VERSION >= 103000
#error "sluice: this Asio is outside 1.22 to 1.29, the versions sluice/detail/asio_internals.hpp accepts. \
Before widening the range, re-verify with this Asio: (1) thread_info_base::awaitable_frame_tag::cache_size \
is still the number of coroutine frames each thread caches for reuse (in_exact_frame; http_hostile_test \
measures the idle connection); (2) io_context's service is still asio::detail::scheduler and its \
concurrency_hint() is the hint the context was built with; (3) ASIO_CONCURRENCY_HINT_IS_LOCKING still \
tells which locks a hint keeps; (4) socket_option::boolean<Level, Name> is still a settable socket option."
#endif

#include <asio/any_io_executor.hpp>
#include <asio/detail/concurrency_hint.hpp>
#include <asio/detail/scheduler.hpp>
#include <asio/detail/socket_option.hpp>
#include <asio/detail/thread_info_base.hpp>
#include <asio/execution/context.hpp>
#include <asio/execution_context.hpp>
#include <sys/socket.h>

#include <cstddef>
#include <optional>

namespace sluice::detail {

// How many freed coroutine frames Asio keeps per thread for its next ones
// (see in_exact_frame, which holds them all while it starts an operation).
inline constexpr std::size_t awaitable_frame_cache_size =
    asio::detail::thread_info_base::awaitable_frame_tag::cache_size;

// The concurrency hint `ex`'s execution context was constructed with, if it
// is one that takes hints (an io_context). Asio offers no public query.
inline std::optional<int> concurrency_hint(const asio::any_io_executor& ex) {
  auto& ctx = asio::query(ex, asio::execution::context);
  if (!asio::has_service<asio::detail::scheduler>(ctx)) return std::nullopt;
  return asio::use_service<asio::detail::scheduler>(ctx).concurrency_hint();
}

// True when a context built with `hint` keeps all of Asio's locks: the
// scheduler's, the reactor's registration lock and its per-descriptor lock.
inline bool keeps_asio_locking(int hint) {
  return ASIO_CONCURRENCY_HINT_IS_LOCKING(SCHEDULER, hint) &&
         ASIO_CONCURRENCY_HINT_IS_LOCKING(REACTOR_REGISTRATION, hint) &&
         ASIO_CONCURRENCY_HINT_IS_LOCKING(REACTOR_IO, hint);
}

// SO_REUSEPORT as an Asio socket option: Asio names only the portable ones.
using reuse_port_option = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

}  // namespace sluice::detail
