// OpenBLAS threading policy of the CPU kernels (internal header).
//
// Every sgemm the kernels issue already runs on a core/thread_pool worker, so
// OpenBLAS's own threads would only oversubscribe the cores. The first kernel
// that calls into BLAS switches OpenBLAS to one thread. (Measured on 2 cores,
// 512x2048x768: pool threads each running single-threaded sgemms on blocks of
// 256 rows reach the same GFLOP/s as one sgemm on two OpenBLAS threads, and
// the split also covers the bf16 -> f32 widening of the weight blocks.)
#ifndef RETORT_KERNELS_CPU_BLAS_H_
#define RETORT_KERNELS_CPU_BLAS_H_

#include <cblas.h>

#include <mutex>

namespace retort::cpu {

inline void EnsureBlasSingleThreaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_BLAS_H_
