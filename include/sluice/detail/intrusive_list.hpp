// Internals: the one intrusive doubly linked list (the deadline lists, the
// connection registry, a scope's tasks).
//
// Guarantees: push_front, push_back and erase are O(1) and never allocate; an
// element is linked into at most one list per Tag. The list neither owns nor
// destroys its elements: an element must be erased before it is destroyed.
//
// Thread safety: none; each user guards its list with its own mutex.
//
//     struct task : sluice::detail::intrusive_list_node<task> { ... };
//     sluice::detail::intrusive_list<task> running;
//     running.push_front(t);
//     for (task& each : running) ...;
//     running.erase(t);
//
// An element in two lists derives from two nodes with different tags:
//     struct conn : intrusive_list_node<deadline_tag>, intrusive_list_node<registry_tag> {};
//     intrusive_list<conn, registry_tag> all;
#pragma once

#include <cstddef>
#include <iterator>

namespace sluice::detail {

template <typename T, typename Tag>
class intrusive_list;

// What an element carries for one list: two pointers.
template <typename Tag>
class intrusive_list_node {
 protected:
  intrusive_list_node() = default;
  ~intrusive_list_node() = default;

 private:
  template <typename, typename>
  friend class intrusive_list;
  intrusive_list_node* prev_ = nullptr;
  intrusive_list_node* next_ = nullptr;
};

// `T` derives from intrusive_list_node<Tag>.
template <typename T, typename Tag = T>
class intrusive_list {
  using node = intrusive_list_node<Tag>;

 public:
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(node* n) : n_(n) {}
    T& operator*() const { return static_cast<T&>(*n_); }
    T* operator->() const { return &**this; }
    iterator& operator++() {
      n_ = n_->next_;
      return *this;
    }
    iterator operator++(int) {
      auto was = *this;
      ++*this;
      return was;
    }
    friend bool operator==(const iterator&, const iterator&) = default;

   private:
    node* n_ = nullptr;
  };

  intrusive_list() = default;
  intrusive_list(const intrusive_list&) = delete;
  intrusive_list& operator=(const intrusive_list&) = delete;

  bool empty() const { return head_ == nullptr; }
  // The first element; the list must not be empty.
  T& front() const { return static_cast<T&>(*head_); }
  iterator begin() const { return iterator(head_); }
  iterator end() const { return iterator(); }

  void push_front(T& x) {
    node& n = x;
    n.prev_ = nullptr;
    n.next_ = head_;
    (head_ ? head_->prev_ : tail_) = &n;
    head_ = &n;
  }

  void push_back(T& x) {
    node& n = x;
    n.next_ = nullptr;
    n.prev_ = tail_;
    (tail_ ? tail_->next_ : head_) = &n;
    tail_ = &n;
  }

  // `x` must be in this list.
  void erase(T& x) {
    node& n = x;
    (n.prev_ ? n.prev_->next_ : head_) = n.next_;
    (n.next_ ? n.next_->prev_ : tail_) = n.prev_;
    n.prev_ = n.next_ = nullptr;
  }

 private:
  node* head_ = nullptr;
  node* tail_ = nullptr;
};

}  // namespace sluice::detail
