// Internals of sluice::scope: the state shared by the scope, its tasks and
// its joiners.
#pragma once

#include "sluice/config.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>

#include <algorithm>
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
struct scope_task : std::enable_shared_from_this<scope_task> {
  explicit scope_task(asio::any_io_executor ex) : executor(std::move(ex)) {}
  asio::any_io_executor executor;
  asio::cancellation_signal signal;
  scope_task* prev = nullptr;
  scope_task* next = nullptr;
  // Set once co_spawn has connected `signal` to the task. Before that an emit
  // from another thread would race the connection (and be lost), so
  // request_stop() leaves unarmed tasks to launch(), which arms them.
  bool armed = false;
};

// A coroutine suspended in scope::join(). complete() is called exactly once,
// by whoever took the waiter out of the scope's list.
struct join_waiter {
  virtual void complete(std::error_code ec) = 0;

 protected:
  ~join_waiter() = default;
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
      task->next = head_;
      if (head_) head_->prev = task.get();
      head_ = task.get();
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
      for (scope_task* t = head_; t; t = t->next)
        if (t->armed) tasks.push_back(t->shared_from_this());
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

  struct initiate_join {
    template <typename Handler>
    void operator()(Handler&& handler, std::shared_ptr<scope_state> state) const {
      using op = join_op<std::decay_t<Handler>>;
      auto* w = new op(std::forward<Handler>(handler));
      auto slot = asio::get_associated_cancellation_slot(w->handler);
      if (slot.is_connected()) slot.template emplace<cancel_join>(state, w);
      if (!state->add_joiner(w)) w->complete({});
    }
  };

 private:
  // Completion handler of a task's co_spawn: runs on the task's executor after
  // the task's coroutine frame has been destroyed.
  struct on_task_done {
    std::shared_ptr<scope_state> state;
    std::shared_ptr<scope_task> task;
    void operator()(std::exception_ptr e) {
      if (e) state->report(e);
      state->leave(*task);
    }
  };

  template <typename Handler>
  class join_op final : public join_waiter {
   public:
    explicit join_op(Handler h)
        : handler(std::move(h)),
          work_(asio::prefer(asio::get_associated_executor(handler), asio::execution::outstanding_work.tracked)) {}

    // Hands the result to the waiter's own executor, which clears the
    // cancellation slot before the handler runs so that no later cancellation
    // can name this (by then freed) waiter.
    void complete(std::error_code ec) override {
      auto ex = work_;
      asio::post(ex, [this, ec] {
        auto h = std::move(handler);
        auto slot = asio::get_associated_cancellation_slot(h);
        if (slot.is_connected()) slot.clear();
        delete this;
        std::move(h)(ec);
      });
    }

    Handler handler;

   private:
    using work_executor = std::decay_t<decltype(asio::prefer(
        std::declval<asio::associated_executor_t<Handler>>(), asio::execution::outstanding_work.tracked))>;
    work_executor work_;
  };

  struct cancel_join {
    cancel_join(std::shared_ptr<scope_state> s, join_waiter* w) : state(std::move(s)), waiter(w) {}
    void operator()(asio::cancellation_type type) {
      if (type == asio::cancellation_type::none) return;
      if (state->remove_joiner(waiter)) waiter->complete(asio::error::operation_aborted);
    }
    std::shared_ptr<scope_state> state;
    join_waiter* waiter;
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
    std::vector<join_waiter*> woken;
    {
      std::lock_guard lock(mutex_);
      if (task.prev) task.prev->next = task.next;
      if (task.next) task.next->prev = task.prev;
      if (head_ == &task) head_ = task.next;
      task.prev = task.next = nullptr;
      if (--size_ == 0) woken.swap(joiners_);
    }
    for (auto* w : woken) w->complete({});
  }

  // False when the scope is already empty: the caller completes the waiter.
  bool add_joiner(join_waiter* w) {
    std::lock_guard lock(mutex_);
    if (size_ == 0) return false;
    joiners_.push_back(w);
    return true;
  }

  bool remove_joiner(join_waiter* w) {
    std::lock_guard lock(mutex_);
    auto it = std::find(joiners_.begin(), joiners_.end(), w);
    if (it == joiners_.end()) return false;
    joiners_.erase(it);
    return true;
  }

  mutable std::mutex mutex_;
  scope_task* head_ = nullptr;
  std::size_t size_ = 0;
  bool stop_requested_ = false;
  std::vector<join_waiter*> joiners_;
  std::function<void(std::exception_ptr)> on_exception_;
};

}  // namespace sluice::detail
