#include "core/thread_pool.h"

#include <atomic>
#include <new>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(ThreadPoolTest, EveryIndexOnceOverManyShortRegions) {
  for (int threads : {1, 2, 3, 8}) {
    SetNumThreads(threads);
    EXPECT_EQ(NumThreads(), threads);
    std::vector<std::atomic<int>> hits(1000);
    for (int round = 0; round < 2000; ++round) {
      int64_t n = 1 + round % 1000;
      ParallelFor(n, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
    }
    int64_t total = 0;
    for (auto& h : hits) total += h.load();
    int64_t expected = 0;
    for (int round = 0; round < 2000; ++round) expected += 1 + round % 1000;
    EXPECT_EQ(total, expected) << threads;
  }
}

TEST(ThreadPoolTest, WorkersWakeAfterSleeping) {
  SetNumThreads(2);
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 3; ++round) {
    // Long enough idle time that workers leave their spin and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ParallelFor(100, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
    });
  }
  EXPECT_EQ(sum.load(), 3 * 4950);
}

TEST(ThreadPoolTest, UsesMoreThanOneThread) {
  SetNumThreads(2);
  std::atomic<int> distinct{0};
  std::thread::id first = std::this_thread::get_id();
  for (int round = 0; round < 200 && distinct.load() == 0; ++round) {
    ParallelFor(8, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != first) distinct.store(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    });
  }
  EXPECT_EQ(distinct.load(), 1);
}

TEST(ThreadPoolTest, AnExceptionInAWorkerReachesTheCaller) {
  SetNumThreads(4);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int64_t> done{0};
    EXPECT_THROW(ParallelFor(1000, 1,
                             [&](int64_t b, int64_t e) {
                               if (b <= 500 && 500 < e) throw std::bad_alloc();
                               done += e - b;
                             }),
                 std::bad_alloc);
    // Every other chunk still ran, and the pool keeps working.
    EXPECT_LT(done.load(), 1000);
    std::atomic<int64_t> sum{0};
    ParallelFor(1000, 1, [&](int64_t b, int64_t e) { sum += e - b; });
    EXPECT_EQ(sum.load(), 1000);
  }
}

}  // namespace
}  // namespace retort
