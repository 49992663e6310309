// sluice/tcp/inherited.hpp: listening sockets handed over by systemd or by a
// parent process, for a server to adopt instead of binding its own.
//
//     for (auto& a : sluice::tcp::inherited_listeners(io.get_executor()))
//       server.adopt(std::move(a));
//
// The protocol is systemd's socket activation (sd_listen_fds(3)): the
// descriptors start at 3, LISTEN_FDS says how many, LISTEN_PID names the
// process they are meant for. A process that replaces itself, or a parent
// starting its successor, passes its listeners the same way
// (pass_listeners_to_exec), so the successor takes the port over without a
// single refused connection: the kernel queue never closes.
//
// Guarantees
// - No LISTEN_FDS, or LISTEN_PID naming another process: an empty list.
// - Every descriptor must be a listening TCP socket, or the call throws
//   std::system_error naming the descriptor and what is wrong with it.
// - The variables are removed from the environment (as sd_listen_fds(1)
//   does), so children do not inherit them; the descriptors become
//   close-on-exec.
// Thread safety: call it once, at start-up, before threads are started
// (it reads and changes the environment).
#pragma once

#include "sluice/config.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

namespace sluice::tcp {

inline constexpr int first_inherited_fd = 3;

namespace detail {

inline int environment_number(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  errno = 0;
  long n = std::strtol(v, &end, 10);
  if (errno || *end || n < 0) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            std::string("sluice: ") + name + "=" + v + " is not a number");
  }
  return static_cast<int>(n);
}

inline void require(bool ok, int fd, const char* what) {
  if (!ok) {
    throw std::system_error(errno ? std::error_code(errno, std::generic_category())
                                  : std::make_error_code(std::errc::invalid_argument),
                            "sluice: inherited descriptor " + std::to_string(fd) + " " + what);
  }
}

}  // namespace detail

inline std::vector<asio::ip::tcp::acceptor> inherited_listeners(const asio::any_io_executor& ex) {
  const int count = detail::environment_number("LISTEN_FDS");
  const int pid = detail::environment_number("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDNAMES");
  std::vector<asio::ip::tcp::acceptor> out;
  if (count <= 0 || (pid >= 0 && pid != ::getpid())) return out;
  for (int fd = first_inherited_fd; fd < first_inherited_fd + count; ++fd) {
    errno = 0;
    int listening = 0, type = 0, domain = 0;
    socklen_t len = sizeof(int);
    detail::require(::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0, fd, "is not a socket");
    detail::require(listening != 0, fd, "is not listening");
    len = sizeof(int);
    detail::require(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM, fd,
                    "is not a stream socket");
    len = sizeof(int);
    detail::require(::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
                        (domain == AF_INET || domain == AF_INET6),
                    fd, "is not an IPv4 or IPv6 socket");
    detail::require(::fcntl(fd, F_SETFD, FD_CLOEXEC) == 0, fd, "cannot be made close-on-exec");
    out.emplace_back(ex, domain == AF_INET ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), fd);
  }
  return out;
}

// In a child between fork() and exec(): moves `fds` to 3, 4, ... and sets
// LISTEN_FDS and LISTEN_PID for the program about to be executed, so that
// its inherited_listeners() finds them. It allocates and calls setenv, which
// is safe after fork() only if the parent had a single thread when it forked
// (or the child is a launcher of its own). False if a descriptor could not be moved.
inline bool pass_listeners_to_exec(const std::vector<int>& fds) {
  // Park them above the target range first, so that moving one to its slot
  // never overwrites another still to be moved.
  std::vector<int> parked;
  parked.reserve(fds.size());
  for (int fd : fds) {
    int high = ::fcntl(fd, F_DUPFD, first_inherited_fd + static_cast<int>(fds.size()));
    if (high < 0) return false;
    parked.push_back(high);
  }
  for (std::size_t i = 0; i < parked.size(); ++i) {
    int target = first_inherited_fd + static_cast<int>(i);
    if (::dup2(parked[i], target) < 0) return false;  // dup2 clears FD_CLOEXEC on the copy
    ::close(parked[i]);
  }
  ::setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
  ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
  return true;
}

}  // namespace sluice::tcp
