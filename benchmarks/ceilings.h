// Machine ceilings for a roofline: the memory bandwidth a plain multithreaded
// memcpy reaches and the f32 GEMM rates OpenBLAS and retort's own Sgemm
// (kernels/cpu/sgemm.h, what the kernels call) reach, on N threads.
//
// Benchmarks of real work (model prefill/decode, kernels) report their rate
// beside these numbers from the same run, so a reader sees how close to the
// machine's limits they are. Each call allocates its buffers, warms up, and
// returns the best of a few timed repetitions (seconds of work in total).
// The functions set the thread counts they need (retort's pool, OpenBLAS)
// and restore the previous counts before returning. Not thread-safe: call
// them from the driver thread while nothing else runs.
#ifndef RETORT_BENCHMARKS_CEILINGS_H_
#define RETORT_BENCHMARKS_CEILINGS_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace retort {

// Bytes copied per second (GB = 1e9 bytes) by memcpy of `bytes`-sized buffers
// split over `threads` threads of retort's ParallelFor pool. Memory traffic
// is about twice that (read + write; three times with write-allocate).
double MeasureMemcpyGBps(int threads, size_t bytes = size_t{256} << 20, int repeats = 5);

// GFLOP/s (2*n^3 / time) of OpenBLAS cblas_sgemm on n x n x n row-major
// matrices with OpenBLAS set to `threads` threads.
double MeasureSgemmGflops(int threads, int n = 2048, int repeats = 3);

// GFLOP/s (2*n^3 / time) of retort's cpu::Sgemm on the same n x n x n
// product, the way the training kernels run it: C cut into 256 x 256 tiles,
// one single-threaded Sgemm per tile, spread over `threads` threads of
// retort's pool. Uses whichever path Sgemm has (cpu::ActiveSgemmPath: on a
// CPU without AVX-512 that is OpenBLAS again).
double MeasureRetortSgemmGflops(int threads, int n = 2048, int repeats = 3);

// Copies `bytes` from src to dst as `threads` contiguous page-aligned slices,
// one ParallelFor index each (the pool should have at least `threads`
// threads). The kernel both MeasureMemcpyGBps and roofline_bench time.
void ParallelMemcpy(char* dst, const char* src, size_t bytes, int threads);

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
// A 4096-byte aligned, uninitialised buffer of at least `bytes` bytes.
std::unique_ptr<char, FreeDeleter> AlignedBuffer(size_t bytes);

struct Ceilings {
  int threads = 0;
  double memcpy_gbps = 0;
  double sgemm_gflops = 0;         // OpenBLAS
  double retort_sgemm_gflops = 0;  // cpu::Sgemm, tiled over the pool
};

// Measures the ceilings and records them in Google Benchmark's JSON
// "context" block as ceiling_memcpy_gbps, ceiling_sgemm_gflops (OpenBLAS),
// ceiling_retort_sgemm_gflops and ceiling_threads. Call before benchmark::RunSpecifiedBenchmarks().
Ceilings AddCeilingsToBenchmarkContext(int threads, size_t memcpy_bytes = size_t{256} << 20,
                                       int sgemm_n = 2048);

}  // namespace retort

#endif  // RETORT_BENCHMARKS_CEILINGS_H_
