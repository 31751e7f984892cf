// Row-wise building blocks shared by the inference kernels (ops.cc,
// attention.cc) and the training kernels (train_ops.cc). Internal header.
#ifndef RETORT_KERNELS_CPU_ROW_OPS_H_
#define RETORT_KERNELS_CPU_ROW_OPS_H_

#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"

namespace retort::cpu {

// Runs fn(begin, end) over [0, rows), in parallel when rows * cols reaches
// `parallel_elements`. Callers keep per-row results independent of how rows
// are grouped, so the split never changes the numbers.
template <typename Fn>
void ForRows(int64_t rows, int64_t cols, int64_t parallel_elements, const Fn& fn) {
  if (rows * cols < parallel_elements || rows < 2) {
    fn(0, rows);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, parallel_elements / 4 / std::max<int64_t>(cols, 1));
  ParallelFor(rows, grain, fn);
}

// The half-rotated (NeoX) RoPE rotation of n rows of n_heads heads, in place:
// the pair (x[i], x[i + head_dim/2]) turns by +angle (kInverse = false, the
// forward) or by -angle (kInverse = true: the transpose, i.e. the backward).
// cos/sin: [n, head_dim / 2]; row r starts at x + r * row_stride.
template <bool kInverse>
void RotateHalves(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                  const float* cos, const float* sin, int64_t parallel_elements) {
  const int64_t half = head_dim / 2;
  ForRows(n, n_heads * head_dim, parallel_elements, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + t * row_stride + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b2 = v[i + half];
          if constexpr (kInverse) {
            v[i] = a * c[i] + b2 * s[i];
            v[i + half] = b2 * c[i] - a * s[i];
          } else {
            v[i] = a * c[i] - b2 * s[i];
            v[i + half] = b2 * c[i] + a * s[i];
          }
        }
      }
    }
  });
}

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_ROW_OPS_H_
