// Internals of sluice::scope: the state shared by the scope, its tasks and
// its joiners.
#pragma once

#include "sluice/config.hpp"
#include "sluice/detail/intrusive_list.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>

#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice::detail {

// One spawned task, linked into its scope's list while it runs. The co_spawn
// completion handler owns it; an emit queued by request_stop() shares it, so
// the signal outlives every emit.
struct scope_task : std::enable_shared_from_this<scope_task>, intrusive_list_node<scope_task> {
  explicit scope_task(asio::any_io_executor ex) : executor(std::move(ex)) {}
  asio::any_io_executor executor;
  asio::cancellation_signal signal;
  // Set once co_spawn has connected `signal` to the task. Before that an emit
  // from another thread would race the connection (and be lost), so
  // request_stop() leaves unarmed tasks to launch(), which arms them.
  bool armed = false;
};

// A coroutine suspended in scope::join(), waiting on a timer of its own frame
// that never expires: waking it cancels that wait. The pending wait belongs to
// the joiner's io_context, which therefore owns the suspended joiner: its
// destruction destroys the joiner like any other pending operation. The frame
// forgets the timer before destroying it.
class join_waiter : public std::enable_shared_from_this<join_waiter> {
 public:
  explicit join_waiter(asio::steady_timer& timer) : timer_(&timer) {}

  // From any thread. The cancel runs on the joiner's executor, serialised with
  // the frame's forget(). Posting under the lock is safe: while the timer is
  // known, the frame has not been destroyed, and an io_context destroys the
  // frames it owns before it frees itself.
  void wake() {
    std::lock_guard lock(mutex_);
    if (!timer_) return;
    woken_ = true;
    asio::post(timer_->get_executor(), [self = shared_from_this()] { self->cancel_wait(); });
  }

  // From the joiner's frame as it goes: later wake-ups touch nothing.
  void forget() {
    std::lock_guard lock(mutex_);
    timer_ = nullptr;
  }

  bool woken() const {
    std::lock_guard lock(mutex_);
    return woken_;
  }

 private:
  void cancel_wait() {
    std::lock_guard lock(mutex_);
    if (timer_) timer_->cancel();
  }

  mutable std::mutex mutex_;
  asio::steady_timer* timer_;
  bool woken_ = false;
};

inline void report_to_stderr(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "sluice: a task ended with an exception: %s\n", ex.what());
  } catch (...) {
    std::fprintf(stderr, "sluice: a task ended with an exception not derived from std::exception\n");
  }
}

inline bool is_operation_aborted(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& ex) {
    return ex.code() == asio::error::operation_aborted;
  } catch (...) {
    return false;
  }
}

class scope_state : public std::enable_shared_from_this<scope_state> {
 public:
  // Registers a task and starts it; false (and `body` unused) once stop was requested.
  template <typename Executor, typename Task>
  bool launch(const Executor& ex, Task&& body) {
    auto task = std::make_shared<scope_task>(asio::any_io_executor(ex));
    {
      std::lock_guard lock(mutex_);
      if (stop_requested_) return false;
      tasks_.push_front(*task);
      ++size_;
    }
    auto slot = task->signal.slot();
    asio::co_spawn(ex, std::forward<Task>(body),
                   asio::bind_cancellation_slot(slot, on_task_done{shared_from_this(), task}));
    bool stop_came_first;
    {
      std::lock_guard lock(mutex_);
      task->armed = true;
      stop_came_first = stop_requested_;
    }
    if (stop_came_first) cancel(std::move(task));
    return true;
  }

  void request_stop() {
    std::vector<std::shared_ptr<scope_task>> tasks;
    {
      std::lock_guard lock(mutex_);
      if (stop_requested_) return;
      stop_requested_ = true;
      tasks.reserve(size_);
      for (scope_task& t : tasks_)
        if (t.armed) tasks.push_back(t.shared_from_this());
    }
    // Outside the lock: dispatch may run the emit inline, and a task's
    // completion takes the lock.
    for (auto& t : tasks) cancel(std::move(t));
  }

  bool stop_requested() const {
    std::lock_guard lock(mutex_);
    return stop_requested_;
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return size_;
  }

  void set_exception_handler(std::function<void(std::exception_ptr)> h) {
    std::lock_guard lock(mutex_);
    on_exception_ = std::move(h);
  }

  // scope::join(). Only `state` is kept, so a joiner may outlive the scope
  // object. A cancellation of the joiner reaches the timer's wait.
  static asio::awaitable<void> join(std::shared_ptr<scope_state> state) {
    if (state->size() == 0) co_return;
    asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
    joiner_registration registration{state, std::make_shared<join_waiter>(timer)};
    try {
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(
          initiate_join{}, asio::use_awaitable, state, registration.waiter, &timer);
    } catch (const std::system_error&) {
      if (!registration.waiter->woken()) throw;  // cancelled
    }
  }

 private:
  // Completion handler of a task's co_spawn: runs on the task's executor after
  // the task's coroutine frame has been destroyed. When the task's io_context
  // is destroyed instead, it destroys the frame and then this handler unrun,
  // and the task leaves from the destructor. co_spawn moves the handler
  // around: only the object still holding `task` leaves.
  struct on_task_done {
    on_task_done(std::shared_ptr<scope_state> s, std::shared_ptr<scope_task> t)
        : state(std::move(s)), task(std::move(t)) {}
    on_task_done(on_task_done&&) = default;
    ~on_task_done() {
      if (task) state->leave(*task);
    }
    void operator()(std::exception_ptr e) {
      if (e) state->report(e);
      auto leaving = std::move(task);
      state->leave(*leaving);
    }
    std::shared_ptr<scope_state> state;
    std::shared_ptr<scope_task> task;
  };

  // Starts the joiner's wait before registering it: a wake-up may come at once
  // from another thread, and must find the wait to cancel.
  struct initiate_join {
    template <typename Handler>
    void operator()(Handler&& handler, std::shared_ptr<scope_state> state, std::shared_ptr<join_waiter> waiter,
                    asio::steady_timer* timer) const {
      timer->async_wait(std::forward<Handler>(handler));
      if (!state->add_joiner(waiter)) waiter->wake();
    }
  };

  // Takes a joiner out of the scope when its frame goes, however it goes:
  // woken, cancelled, or destroyed with its io_context.
  struct joiner_registration {
    std::shared_ptr<scope_state> state;
    std::shared_ptr<join_waiter> waiter;
    ~joiner_registration() {
      state->remove_joiner(*waiter);
      waiter->forget();
    }
  };

  // The emit runs on the task's executor, serialised with the task itself.
  static void cancel(std::shared_ptr<scope_task> t) {
    auto ex = t->executor;
    asio::dispatch(ex, [t = std::move(t)] { t->signal.emit(asio::cancellation_type::terminal); });
  }

  void report(std::exception_ptr e) {
    std::function<void(std::exception_ptr)> handler;
    {
      std::lock_guard lock(mutex_);
      if (stop_requested_ && is_operation_aborted(e)) return;
      handler = on_exception_;
    }
    try {
      if (handler)
        handler(e);
      else
        report_to_stderr(e);
    } catch (...) {
      report_to_stderr(std::current_exception());
    }
  }

  void leave(scope_task& task) {
    std::vector<std::shared_ptr<join_waiter>> woken;
    {
      std::lock_guard lock(mutex_);
      tasks_.erase(task);
      if (--size_ == 0) woken.swap(joiners_);
    }
    for (auto& w : woken) w->wake();
  }

  // False when the scope is already empty: the caller wakes the waiter.
  bool add_joiner(const std::shared_ptr<join_waiter>& w) {
    std::lock_guard lock(mutex_);
    if (size_ == 0) return false;
    joiners_.push_back(w);
    return true;
  }

  void remove_joiner(const join_waiter& w) {
    std::lock_guard lock(mutex_);
    std::erase_if(joiners_, [&](const auto& p) { return p.get() == &w; });
  }

  mutable std::mutex mutex_;
  intrusive_list<scope_task> tasks_;
  std::size_t size_ = 0;
  bool stop_requested_ = false;
  std::vector<std::shared_ptr<join_waiter>> joiners_;
  std::function<void(std::exception_ptr)> on_exception_;
};

}  // namespace sluice::detail
