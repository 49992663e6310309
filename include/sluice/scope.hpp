// sluice/scope.hpp: a cancellation-scoped set of coroutine tasks.
//
// A scope owns the tasks spawned into it, the way a nursery owns its
// children: stopping the scope cancels every task and completes only after the
// last one has finished. It knows nothing about networking; the servers are
// built on it.
//
// Guarantees
// - spawn(ex, task) runs `task` on `ex` as a member of the scope. The task
//   leaves the scope after its coroutine frame has been destroyed, so its
//   locals (sockets, timers, buffers) are gone by then.
// - request_stop() delivers terminal cancellation to every task, on the
//   task's own executor: the operation the task is suspended in, however
//   deeply nested in co_awaits, completes with asio::error::operation_aborted,
//   provided it supports Asio's cancellation slots (sockets, timers, signal
//   sets, SSL streams and what is composed of them do; Asio 1.22's
//   resolver does not). One that does not runs to its own end, and the task's
//   next co_await then throws operation_aborted.
//   From then on spawn() throws scope_closed and try_spawn() returns false.
//   Stop is requested once; calling it again does nothing.
// - join() completes when the scope is empty, at once if it is empty now.
//   It is event-driven: the last task to leave wakes the joiners.
//   stop() is request_stop() followed by join().
// - An exception that escapes a task never terminates the program and is
//   never lost: it goes to the exception handler (by default one line on
//   stderr per exception). operation_aborted escaping a task after stop was
//   requested is the normal way for a task to end and is not reported.
//
// Thread safety: every member may be called from any thread, while the
// io_contexts run on any number of threads. Cancellation is delivered by
// dispatching to the task's executor, so a task whose executor may run
// handlers on several threads at once must be given a strand.
//
// Clean-up after cancellation: once cancelled, every further co_await in the
// task throws operation_aborted. A task that must do asynchronous clean-up
// (write a goodbye line, release a lease) first resets its state, and join()
// waits for that clean-up too. Bound it yourself: stop is delivered once.
//
//     catch (const std::system_error&) {
//       co_await asio::this_coro::reset_cancellation_state();
//       co_await asio::async_write(socket, asio::buffer(bye), asio::use_awaitable);
//     }
//
// Joining from inside a task: a task that awaits join() (or stop()) of its
// own scope would wait for itself. When stop was requested it is cancelled
// like every other task, so its join() throws operation_aborted instead of
// deadlocking; join() from a task without a stop would never complete.
//
// Destruction: ~scope() requests stop and does not wait. Running tasks keep
// the scope's shared state alive until they finish; a pending join() needs
// nothing of the scope object. Scopes and io_contexts may be destroyed in any
// order, without leak or dangling pointer:
// - Destroying an io_context destroys the frames of the tasks it holds. Each
//   such task leaves the scope then without running anything more (an
//   exception it had not yet reported is dropped), and the last one to leave
//   wakes the joiners, as if it had finished.
// - A pending join() is a pending operation of its own executor's io_context:
//   destroying that io_context destroys the joining coroutine (with the
//   frames awaiting it) without resuming it, and takes it out of the scope. A
//   woken joiner resumes only when its io_context runs. The wake-up is posted
//   to that io_context from the thread of the last task to leave: as with any
//   io_context, do not destroy it while that may happen on another thread.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/scope_state.hpp"

#include <asio/any_io_executor.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace sluice {

// Thrown by scope::spawn once stop has been requested.
class scope_closed : public std::logic_error {
 public:
  scope_closed() : std::logic_error("sluice::scope: stop was requested, spawn refused") {}
};

class scope {
 public:
  using exception_handler = std::function<void(std::exception_ptr)>;

  scope() : state_(std::make_shared<detail::scope_state>()) {}
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;
  ~scope() { state_->request_stop(); }

  // Runs `task` on `ex` as a task of this scope. Throws scope_closed once
  // stop has been requested.
  template <typename Executor>
  void spawn(const Executor& ex, asio::awaitable<void> task) {
    if (!try_spawn(ex, std::move(task))) throw scope_closed();
  }

  // As spawn, with a function object returning awaitable<void>; the function
  // object lives until the task has finished, so lambda captures are safe.
  template <typename Executor, typename F>
    requires std::is_invocable_r_v<asio::awaitable<void>, F&>
  void spawn(const Executor& ex, F&& f) {
    if (!try_spawn(ex, std::forward<F>(f))) throw scope_closed();
  }

  // As spawn, but returns false instead of throwing when stop was requested;
  // `task` is then destroyed without having run.
  template <typename Executor, typename Task>
  bool try_spawn(const Executor& ex, Task&& task) {
    return state_->launch(ex, std::forward<Task>(task));
  }

  void request_stop() { state_->request_stop(); }
  bool stop_requested() const { return state_->stop_requested(); }

  // Completes when no task is left. Cancellable: a terminal cancellation of
  // the awaiting coroutine completes it with operation_aborted.
  asio::awaitable<void> join() { return detail::scope_state::join(state_); }

  asio::awaitable<void> stop() {
    request_stop();
    co_await join();
  }

  // Number of tasks that have not finished yet.
  std::size_t size() const { return state_->size(); }

  // Replaces the handler that receives exceptions escaping tasks. It is called
  // on the failed task's executor, possibly from several threads at once.
  void set_exception_handler(exception_handler h) { state_->set_exception_handler(std::move(h)); }

 private:
  std::shared_ptr<detail::scope_state> state_;
};

}  // namespace sluice
