#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define RETORT_CPU_RELAX() _mm_pause()
#else
#define RETORT_CPU_RELAX() std::this_thread::yield()
#endif

namespace retort {
namespace {

// A pool tuned for many short parallel regions in a row (one decode step of a
// small model is hundreds of them, each a few microseconds long): workers
// spin for a while on a generation counter before sleeping on a condition
// variable, and the caller spins for completion. Sleeping only after ~a
// millisecond of idleness keeps the wake-up cost (a futex round trip, tens
// of microseconds) off the decode path without burning a core when idle.
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i + 1 < n; ++i) workers_.emplace_back([this] { Loop(); });
  }
  ~Pool() {
    stop_.store(true);
    {
      std::lock_guard<std::mutex> l(mu_);
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void Run(int64_t chunks, const std::function<void(int64_t)>& task) {
    Job job;
    job.task = &task;
    job.total = chunks;
    job.remaining.store(chunks);
    current_.store(&job);
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> l(mu_);
      cv_.notify_all();
    }
    Work(job);
    while (job.remaining.load(std::memory_order_acquire) > 0) RETORT_CPU_RELAX();
    // Retire the job, then wait until no worker still holds a pointer to it:
    // a worker announces itself in busy_ before it reads current_.
    current_.store(nullptr);
    while (busy_.load() > 0) RETORT_CPU_RELAX();
  }

 private:
  struct Job {
    const std::function<void(int64_t)>* task = nullptr;
    int64_t total = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> remaining{0};
  };

  static void Work(Job& job) {
    for (int64_t i; (i = job.next.fetch_add(1)) < job.total;) {
      (*job.task)(i);
      job.remaining.fetch_sub(1, std::memory_order_release);
    }
  }

  void Loop() {
    uint64_t seen = generation_.load();
    constexpr int kSpins = 1 << 16;
    for (;;) {
      int spins = 0;
      while (generation_.load() == seen && !stop_.load()) {
        if (++spins < kSpins) {
          RETORT_CPU_RELAX();
          continue;
        }
        std::unique_lock<std::mutex> l(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(l, [&] { return generation_.load() != seen || stop_.load(); });
        sleepers_.fetch_sub(1);
        break;
      }
      if (stop_.load()) return;
      seen = generation_.load();
      busy_.fetch_add(1);
      Job* job = current_.load();
      if (job != nullptr) Work(*job);
      busy_.fetch_sub(1);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<Job*> current_{nullptr};
  std::atomic<int> busy_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

std::unique_ptr<Pool>& GlobalPool() {
  static std::unique_ptr<Pool> pool;
  return pool;
}
std::mutex& PoolMutex() {
  static std::mutex mu;
  return mu;
}

Pool& GetPool() {
  std::lock_guard<std::mutex> l(PoolMutex());
  auto& p = GlobalPool();
  if (!p) p = std::make_unique<Pool>(std::max(1u, std::thread::hardware_concurrency()));
  return *p;
}

}  // namespace

void SetNumThreads(int n) {
  std::lock_guard<std::mutex> l(PoolMutex());
  GlobalPool() = std::make_unique<Pool>(std::max(1, n));
}

int NumThreads() { return GetPool().size(); }

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Pool& pool = GetPool();
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, pool.size() * 4);
  if (chunks <= 1 || pool.size() == 1) {
    fn(0, n);
    return;
  }
  int64_t per = (n + chunks - 1) / chunks;
  // An exception escaping a worker thread would terminate the process (a
  // std::bad_alloc from a file's sizes among them): the first one is kept
  // and rethrown on the calling thread once every chunk has finished.
  std::mutex error_mu;
  std::exception_ptr error;
  std::function<void(int64_t)> task = [&](int64_t c) {
    int64_t b = c * per, e = std::min(n, b + per);
    if (b >= e) return;
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> l(error_mu);
      if (!error) error = std::current_exception();
    }
  };
  pool.Run(chunks, task);
  if (error) std::rethrow_exception(error);
}

}  // namespace retort
