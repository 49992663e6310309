// Internals: the completion token for an operation whose failure is an
// answer, not an exception.
//
//     auto [ec, n] = co_await socket.async_read_some(buffer, sluice::detail::use_nothrow);
//
// The coroutine gets the error_code as the first element of a tuple instead
// of a thrown std::system_error: the servers meet EOF, resets and cancels on
// every connection, and an exception per close would cost more than the
// close. (A coroutine whose cancellation state is terminal still throws at its
// next co_await, whatever the token: see throw_if_cancelled.)
#pragma once

#include "sluice/config.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

namespace sluice::detail {

inline constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

}  // namespace sluice::detail
