// Flags shared by retort's benchmark programs, parsed (and removed from argv)
// before Google Benchmark sees the rest:
//   --threads=N   threads for retort's pool and OpenBLAS (default 2)
//   --smoke       tiny sizes, for a quick check that the program runs and
//                 writes its JSON (not a measurement)
// Everything else goes to benchmark::Initialize (e.g. --benchmark_format=json,
// --benchmark_out=FILE, --benchmark_filter=REGEX).
#ifndef RETORT_BENCHMARKS_BENCH_FLAGS_H_
#define RETORT_BENCHMARKS_BENCH_FLAGS_H_

#include <string>
#include <vector>

namespace retort {

struct BenchFlags {
  int threads = 2;
  bool smoke = false;
  // Program-specific "--name=value" flags the caller asked for (see below).
  std::vector<std::pair<std::string, std::string>> extra;
};

// Removes retort's flags (and every "--<name>=value" with a name in
// `extra_names`) from argc/argv and returns them. Exits with a message on a
// malformed value.
BenchFlags ParseBenchFlags(int* argc, char** argv,
                           const std::vector<std::string>& extra_names = {});

}  // namespace retort

#endif  // RETORT_BENCHMARKS_BENCH_FLAGS_H_
