// The CPU backend: kernels/backend.h's interface over the kernels of this
// folder (our sgemm and OpenBLAS, the AVX2 / AVX-512 loops, the spinning
// thread pool of core/thread_pool.h, the repacked Q4_0/Q8_0 layouts).
// Internal to kernels/: only kernels/backend.cc's registry includes it.
#ifndef RETORT_KERNELS_CPU_CPU_BACKEND_H_
#define RETORT_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"

namespace retort::cpu {

std::unique_ptr<Backend> NewCpuBackend();

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_CPU_BACKEND_H_
