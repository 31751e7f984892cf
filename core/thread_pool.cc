#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace retort {
namespace {

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i + 1 < n; ++i) workers_.emplace_back([this] { Loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void Run(int64_t chunks, const std::function<void(int64_t)>& task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      task_ = &task;
      total_ = chunks;
      next_.store(0);
      done_ = 0;
      ++generation_;
    }
    cv_.notify_all();
    Work();
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return done_ == total_; });
    task_ = nullptr;
  }

 private:
  void Work() {
    int64_t finished = 0;
    for (int64_t i; (i = next_.fetch_add(1)) < total_;) {
      (*task_)(i);
      ++finished;
    }
    if (finished) {
      std::lock_guard<std::mutex> l(mu_);
      done_ += finished;
      if (done_ == total_) done_cv_.notify_all();
    }
  }
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || (generation_ != seen && task_ != nullptr); });
        if (stop_) return;
        seen = generation_;
      }
      Work();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* task_ = nullptr;
  std::atomic<int64_t> next_{0};
  int64_t total_ = 0, done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
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
  std::function<void(int64_t)> task = [&](int64_t c) {
    int64_t b = c * per, e = std::min(n, b + per);
    if (b < e) fn(b, e);
  };
  pool.Run(chunks, task);
}

}  // namespace retort
