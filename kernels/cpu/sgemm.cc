// Sgemm (sgemm.h): the degenerate cases, the per-thread packing buffers and
// the choice between the AVX-512 build (sgemm_avx512.cc) and OpenBLAS.
#include "kernels/cpu/sgemm.h"

#include <cblas.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/kernel_path.h"
#include "kernels/cpu/sgemm_kernels.h"

namespace retort::cpu {
namespace {

bool CpuHasAvx512() { return __builtin_cpu_supports("avx512f"); }

using Paths = KernelPathChoice<SgemmPath, SgemmPath::kOpenBlas, SgemmPath::kAvx512, CpuHasAvx512>;

// The packing buffers of one thread, allocated on its first Sgemm and kept
// until the thread ends (about 0.8 MiB).
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  PackBuffers() {
    a = static_cast<float*>(std::aligned_alloc(64, sgemm_internal::kPackAFloats * sizeof(float)));
    b = static_cast<float*>(std::aligned_alloc(64, sgemm_internal::kPackBFloats * sizeof(float)));
    if (a == nullptr || b == nullptr) std::abort();
  }
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
  PackBuffers(const PackBuffers&) = delete;
  PackBuffers& operator=(const PackBuffers&) = delete;
};

// C = beta * C over m x n (beta == 0 writes zeros without reading C).
void ScaleC(int m, int n, float beta, float* c, int ldc) {
  if (beta == 1.f) return;
  for (int i = 0; i < m; ++i) {
    float* ci = c + static_cast<int64_t>(i) * ldc;
    if (beta == 0.f) {
      std::memset(ci, 0, static_cast<size_t>(n) * sizeof(float));
    } else {
      for (int j = 0; j < n; ++j) ci[j] *= beta;
    }
  }
}

}  // namespace

void Sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    ScaleC(m, n, beta, c, ldc);
    return;
  }
  if (Paths::Active().load(std::memory_order_relaxed) == SgemmPath::kAvx512) {
    thread_local PackBuffers buffers;
    sgemm_internal::SgemmAvx512(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                buffers.a, buffers.b);
    return;
  }
  EnsureBlasSingleThreaded();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

SgemmPath ActiveSgemmPath() { return Paths::Active().load(); }

bool SgemmPathSupported(SgemmPath path) { return Paths::Supported(path); }

bool SetSgemmPath(SgemmPath path) { return Paths::Set(path); }

const char* SgemmPathName(SgemmPath path) {
  return path == SgemmPath::kAvx512 ? "avx512" : "openblas";
}

}  // namespace retort::cpu
