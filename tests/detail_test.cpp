// The shared helpers of the connection layer, alone: the intrusive list, the per-thread pool, the
// table of timeout kinds. The servers' tests exercise them under load; these pin their contracts.
#include "sluice/detail/intrusive_list.hpp"
#include "sluice/detail/thread_local_pool.hpp"
#include "sluice/server/deadlines.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

struct item : sluice::detail::intrusive_list_node<item>, sluice::detail::intrusive_list_node<struct other_list> {
  explicit item(int v) : value(v) {}
  int value;
};

std::vector<int> values(const sluice::detail::intrusive_list<item>& l) {
  std::vector<int> v;
  for (const item& i : l) v.push_back(i.value);
  return v;
}

}  // namespace

TEST_CASE("intrusive_list: pushes at both ends and erases anywhere, in order") {
  item a(1), b(2), c(3), d(4);
  sluice::detail::intrusive_list<item> l;
  CHECK(l.empty());
  l.push_back(b);
  l.push_front(a);
  l.push_back(c);
  l.push_back(d);
  CHECK(values(l) == std::vector<int>{1, 2, 3, 4});
  l.erase(b);  // middle
  CHECK(values(l) == std::vector<int>{1, 3, 4});
  l.erase(a);  // head
  CHECK(l.front().value == 3);
  l.erase(d);  // tail: a push_back then lands after the new tail
  l.push_back(a);
  CHECK(values(l) == std::vector<int>{3, 1});
  l.erase(c);
  l.erase(a);
  CHECK(l.empty());
  l.push_back(d);  // the emptied list's tail was reset too
  CHECK(values(l) == std::vector<int>{4});
  l.erase(d);
}

TEST_CASE("intrusive_list: one element in two lists, told apart by their tags") {
  item a(1), b(2);
  sluice::detail::intrusive_list<item> mine;
  sluice::detail::intrusive_list<item, other_list> theirs;
  mine.push_back(a);
  mine.push_back(b);
  theirs.push_front(a);
  theirs.push_front(b);
  CHECK(values(mine) == std::vector<int>{1, 2});
  std::vector<int> other;
  for (const item& i : theirs) other.push_back(i.value);
  CHECK(other == std::vector<int>{2, 1});
  mine.erase(a);
  CHECK(theirs.front().value == 2);
  CHECK(values(mine) == std::vector<int>{2});
  theirs.erase(a);
  theirs.erase(b);
  mine.erase(b);
}

TEST_CASE("thread_local_pool: what a thread gives back it takes again, up to the capacity") {
  struct tag {};
  using pool = sluice::detail::thread_local_pool<int, tag, 2>;
  CHECK(pool::take() == nullptr);
  auto one = std::make_unique<int>(1);
  auto two = std::make_unique<int>(2);
  int* const kept = one.get();
  pool::give_back(std::move(one));
  pool::give_back(std::move(two));
  pool::give_back(std::make_unique<int>(3));  // beyond the capacity: freed
  std::thread([] { CHECK(pool::take() == nullptr); }).join();  // another thread has its own pool
  CHECK(*pool::take() == 2);  // last in, first out
  auto again = pool::take();
  CHECK(again.get() == kept);
  CHECK(pool::take() == nullptr);
}

TEST_CASE("timeout_table: kinds in the order registered, with their durations and actions") {
  using namespace sluice::server;
  using namespace std::chrono_literals;
  timeout_table table;
  const auto first = table.add(saturated(5s), on_expiry::interrupt);
  const auto second = table.add(saturated(std::chrono::milliseconds::max()), on_expiry::close);
  CHECK(first != timeout_kind::none);
  CHECK(second != first);
  CHECK(table.timeout(first) == 5s);
  CHECK(table.action(first) == on_expiry::interrupt);
  CHECK(table.timeout(second) == clock::duration::max());  // never
  CHECK(table.action(second) == on_expiry::close);
  for (std::size_t i = 3; i < timeout_table::capacity; ++i) table.add(1s, on_expiry::interrupt);
  CHECK_THROWS_AS(table.add(1s, on_expiry::interrupt), std::length_error);
}
