// Roofline ceilings of this machine on N threads (default 2): memcpy
// bandwidth over large buffers split across retort's ParallelFor pool, and
// OpenBLAS sgemm GFLOP/s. Output is Google Benchmark's (use
// --benchmark_format=json); each entry carries a GBps or GFLOPS counter.
//
//   roofline_bench [--threads N] [--memcpy_mb 256] [--gemm_sizes 1024,2048]
//                  [--smoke] [benchmark flags]
// (each flag also as --name=value)
#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/thread_pool.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace retort {
namespace {

void RegisterMemcpy(size_t bytes, int threads, double min_time) {
  std::string name =
      "memcpy/" + std::to_string(bytes >> 20) + "MiB/threads:" + std::to_string(threads);
  RegisterWallClockBenchmark(
      name, benchmark::kMillisecond, min_time, [bytes, threads](benchmark::State& state) {
        auto src = AlignedBuffer(bytes), dst = AlignedBuffer(bytes);
        std::memset(src.get(), 1, bytes);
        ParallelMemcpy(dst.get(), src.get(), bytes, threads);  // first touch
        for (auto _ : state) {
          ParallelMemcpy(dst.get(), src.get(), bytes, threads);
          benchmark::ClobberMemory();
        }
        const double copied = static_cast<double>(bytes) * state.iterations();
        state.SetBytesProcessed(static_cast<int64_t>(copied));
        state.counters["GBps"] = benchmark::Counter(copied / 1e9, benchmark::Counter::kIsRate);
        state.counters["threads"] = threads;
      });
}

void RegisterSgemm(int n, int threads, double min_time) {
  std::string name = "sgemm/" + std::to_string(n) + "/threads:" + std::to_string(threads);
  RegisterWallClockBenchmark(
      name, benchmark::kMillisecond, min_time, [n, threads](benchmark::State& state) {
        const size_t elems = static_cast<size_t>(n) * n;
        std::vector<float> a(elems, 0.5f), b(elems, 0.25f), c(elems);
        for (size_t i = 0; i < elems; ++i) a[i] = static_cast<float>(i % 17) / 17.0f - 0.5f;
        for (auto _ : state) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n,
                      b.data(), n, 0.0f, c.data(), n);
          benchmark::DoNotOptimize(c.data());
        }
        state.counters["GFLOPS"] = PerSecond(2.0 * n * n * static_cast<double>(n) / 1e9);
        state.counters["threads"] = threads;
      });
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) {
  using namespace retort;
  BenchFlags flags;
  int64_t memcpy_mb = 0;
  std::string gemm_sizes_text;
  BenchArgs args("roofline_bench");
  args.AddThreads(&flags.threads);
  args.AddSmoke(&flags.smoke);
  args.Add()("memcpy_mb", po::value(&memcpy_mb), "memcpy buffer MiB (default 256; smoke 4)")(
      "gemm_sizes", po::value(&gemm_sizes_text),
      "sgemm n x n x n sizes (default 1024,2048; smoke 64)");
  args.Parse(&argc, argv, UnknownFlags::kKeepForGoogleBenchmark);
  memcpy_mb = args.PositiveOr("memcpy_mb", memcpy_mb, flags.smoke ? 4 : 256);
  std::vector<int64_t> gemm_sizes =
      flags.smoke ? std::vector<int64_t>{64} : std::vector<int64_t>{1024, 2048};
  if (args.Given("gemm_sizes")) gemm_sizes = args.IntList("gemm_sizes", gemm_sizes_text, 1, 65536);
  SetNumThreads(flags.threads);
  openblas_set_num_threads(flags.threads);
  benchmark::AddCustomContext("retort_threads", std::to_string(flags.threads));
  // The smoke run also exercises the ceilings library (tiny sizes) so its
  // context keys are checked; real runs report the timed entries below.
  if (flags.smoke) AddCeilingsToBenchmarkContext(flags.threads, size_t{4} << 20, 64);
  const double min_time = flags.smoke ? 0.01 : 0.5;
  RegisterMemcpy(static_cast<size_t>(memcpy_mb) << 20, flags.threads, min_time);
  for (int64_t n : gemm_sizes) RegisterSgemm(static_cast<int>(n), flags.threads, min_time);
  return RunGoogleBenchmarks(&argc, argv);
}
