// Work split evenly up front, except for a tail the threads claim an item at a time. The two cores of a shared
// machine do not run at the same speed from one moment to the next: with an even split of everything the faster
// thread waits at the end of every kernel for the slower one; with a claimed tail it takes more of the tail.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace ingot {

// Calls ``body(item, next)`` for every item in [0, count), on at::parallel_for's threads, each item once.
// ``next`` is the item the same thread runs after this one (-1 if none), known ahead so that ``body`` can fetch
// its data while it computes this one.
template <typename Body>
void for_each_claimed(int64_t count, const Body& body) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  const int64_t split = count * 3 / 4 / threads * threads;  // the rest is claimed
  std::atomic<int64_t> claimed{split};
  at::parallel_for(0, threads, 1, [&](int64_t first, int64_t last) {
    const int64_t end = split * last / threads;
    int64_t item = split * first / threads;
    if (item == end) item = claimed.fetch_add(1);
    while (item < count) {
      const int64_t next = item + 1 < end ? item + 1 : claimed.fetch_add(1);
      body(item, next < count ? next : -1);
      item = next;
    }
  });
}

}  // namespace ingot
