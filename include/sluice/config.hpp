// sluice/config.hpp: the one place that prepares standalone Asio for sluice.
//
// Every sluice header includes this first. Clang 14 with libstdc++ has C++20
// coroutines, but Asio 1.22 looks for <experimental/coroutine> and so does not
// enable `asio::awaitable`; defining the two macros here turns it on. If you
// include <asio.hpp> yourself before any sluice header under clang, define
// them on the command line as well (the `sluice` Meson dependency and sluice.pc
// do that for you).
#pragma once

#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#define ASIO_HAS_STD_COROUTINE 1
#endif

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/use_awaitable.hpp>

#if !defined(ASIO_HAS_CO_AWAIT)
#error "sluice needs C++20 coroutines in Asio (ASIO_HAS_CO_AWAIT): compile with -std=c++20"
#endif
