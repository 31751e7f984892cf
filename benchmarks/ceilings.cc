#include "benchmarks/ceilings.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/thread_pool.h"
#include "kernels/cpu/sgemm.h"

// Declared by OpenBLAS's cblas.h on Debian; repeated here (same signature)
// for cblas.h variants that leave them out.
extern "C" {
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}

namespace retort {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::unique_ptr<char, FreeDeleter> AlignedBuffer(size_t bytes) {
  return std::unique_ptr<char, FreeDeleter>(static_cast<char*>(
      std::aligned_alloc(4096, std::max<size_t>(4096, (bytes + 4095) / 4096 * 4096))));
}

namespace {

// Sets retort's pool size for the lifetime of the object.
class ScopedPoolThreads {
 public:
  explicit ScopedPoolThreads(int n) : previous_(NumThreads()) { SetNumThreads(n); }
  ~ScopedPoolThreads() { SetNumThreads(previous_); }

 private:
  int previous_;
};

class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int n) : previous_(openblas_get_num_threads()) {
    openblas_set_num_threads(n);
  }
  ~ScopedBlasThreads() { openblas_set_num_threads(previous_); }

 private:
  int previous_;
};

// Row-major n x n GEMM operands a, b (a fixed, non-trivial pattern) and c.
struct SquareGemm {
  explicit SquareGemm(int n) : n(n), a(Elems()), b(Elems()), c(Elems()) {
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<float>((i * 7) % 13) / 13.0f - 0.5f;
      b[i] = static_cast<float>((i * 5) % 11) / 11.0f - 0.5f;
    }
  }
  size_t Elems() const { return static_cast<size_t>(n) * n; }

  // GFLOP/s of `gemm` (c = a * b): one warm-up call (threads start, buffers
  // are allocated), then the best of `repeats` timed calls.
  template <typename Gemm>
  double BestGflops(int repeats, Gemm&& gemm) {
    gemm();
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < std::max(1, repeats); ++r) {
      const double t0 = Now();
      gemm();
      best = std::min(best, Now() - t0);
    }
    benchmark::DoNotOptimize(c[c.size() / 2]);
    return 2.0 * n * n * static_cast<double>(n) / best / 1e9;
  }

  int n;
  std::vector<float> a, b, c;
};

}  // namespace

void ParallelMemcpy(char* dst, const char* src, size_t bytes, int threads) {
  threads = std::max(1, threads);
  const size_t slice = (bytes / threads + 4095) / 4096 * 4096;
  ParallelFor(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const size_t off = std::min(bytes, static_cast<size_t>(t) * slice);
      std::memcpy(dst + off, src + off, std::min(bytes - off, slice));
    }
  });
}

double MeasureMemcpyGBps(int threads, size_t bytes, int repeats) {
  threads = std::max(1, threads);
  ScopedPoolThreads pool(threads);
  auto src = AlignedBuffer(bytes), dst = AlignedBuffer(bytes);
  // First touch by a copy from the same threads and slices as the timed ones
  // (pages land on their NUMA nodes and are mapped before timing).
  std::memset(src.get(), 1, bytes);
  ParallelMemcpy(dst.get(), src.get(), bytes, threads);
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < std::max(1, repeats); ++r) {
    double t0 = Now();
    ParallelMemcpy(dst.get(), src.get(), bytes, threads);
    best = std::min(best, Now() - t0);
  }
  benchmark::DoNotOptimize(dst.get()[bytes / 2]);
  return static_cast<double>(bytes) / best / 1e9;
}

double MeasureSgemmGflops(int threads, int n, int repeats) {
  threads = std::max(1, threads);
  n = std::max(1, n);
  ScopedBlasThreads blas(threads);
  SquareGemm g(n);
  return g.BestGflops(repeats, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, g.a.data(), n, g.b.data(),
                n, 0.0f, g.c.data(), n);
  });
}

double MeasureRetortSgemmGflops(int threads, int n, int repeats) {
  threads = std::max(1, threads);
  n = std::max(1, n);
  ScopedPoolThreads pool(threads);
  SquareGemm g(n);
  constexpr int kTile = 256;  // train_ops.cc's GEMM tile
  const int tiles = (n + kTile - 1) / kTile;
  return g.BestGflops(repeats, [&] {
    ParallelFor(static_cast<int64_t>(tiles) * tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int i0 = static_cast<int>(t / tiles) * kTile,
                  j0 = static_cast<int>(t % tiles) * kTile;
        cpu::Sgemm(false, false, std::min(kTile, n - i0), std::min(kTile, n - j0), n, 1.0f,
                   g.a.data() + static_cast<size_t>(i0) * n, n, g.b.data() + j0, n, 0.0f,
                   g.c.data() + static_cast<size_t>(i0) * n + j0, n);
      }
    });
  });
}

Ceilings AddCeilingsToBenchmarkContext(int threads, size_t memcpy_bytes, int sgemm_n) {
  Ceilings c;
  c.threads = threads;
  c.memcpy_gbps = MeasureMemcpyGBps(threads, memcpy_bytes);
  c.sgemm_gflops = MeasureSgemmGflops(threads, sgemm_n);
  c.retort_sgemm_gflops = MeasureRetortSgemmGflops(threads, sgemm_n);
  benchmark::AddCustomContext("ceiling_threads", std::to_string(threads));
  benchmark::AddCustomContext("ceiling_memcpy_gbps", std::to_string(c.memcpy_gbps));
  benchmark::AddCustomContext("ceiling_sgemm_gflops", std::to_string(c.sgemm_gflops));
  benchmark::AddCustomContext("ceiling_retort_sgemm_gflops", std::to_string(c.retort_sgemm_gflops));
  benchmark::AddCustomContext("ceiling_retort_sgemm_path",
                              cpu::SgemmPathName(cpu::ActiveSgemmPath()));
  return c;
}

}  // namespace retort
