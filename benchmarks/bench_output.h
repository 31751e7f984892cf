// What the benchmark programs share besides their flags (bench_flags.h): the
// clock they time with, the machine they describe, where their JSON goes, and
// the run of a Google Benchmark program.
#ifndef RETORT_BENCHMARKS_BENCH_OUTPUT_H_
#define RETORT_BENCHMARKS_BENCH_OUTPUT_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"

namespace retort {

using Clock = std::chrono::steady_clock;

// Seconds from `t` to now.
inline double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The middle value (the mean of the middle two for an even count).
// REQUIRES: !v.empty().
double Median(std::vector<double> v);

// /proc/cpuinfo's "model name" of the first CPU, "" when unreadable.
std::string CpuModelName();
// Whether /proc/cpuinfo lists `flag` (e.g. "sha_ni", "avx512f") for the first CPU.
bool CpuHasFlag(const std::string& flag);

// Prints `text` and, when `path` is not empty, writes it there too.
void EmitBenchText(const std::string& text, const std::string& path);
// Prints `out` (indent 2) and, when `path` is not empty, writes it there too.
void EmitBenchJson(const nlohmann::json& out, const std::string& path);

// benchmark::Initialize on what ParseBenchFlags / BenchArgs::Parse left in
// argv, then every registered benchmark. Returns main's exit code: 2 for a
// flag nobody knows.
int RunGoogleBenchmarks(int* argc, char** argv);

// Registers fn(benchmark::State&) as `name`, timed by the wall clock (the
// kernels run on a thread pool), reported in `unit`, each run for at least
// min_time seconds.
template <typename Fn>
benchmark::internal::Benchmark* RegisterWallClockBenchmark(const std::string& name,
                                                           benchmark::TimeUnit unit,
                                                           double min_time, Fn&& fn) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))
      ->UseRealTime()
      ->Unit(unit)
      ->MinTime(min_time);
}

// A counter of `per_iteration` (GFLOP, GB, ...) per second.
inline benchmark::Counter PerSecond(double per_iteration) {
  return benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

// n floats uniform in [-1, 1) from std::mt19937(seed): kernel inputs.
std::vector<float> RandomFloats(size_t n, uint32_t seed);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_OUTPUT_H_
