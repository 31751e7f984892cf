// CPU optimizer kernels (optimizer_ops.h).
#include "kernels/cpu/optimizer_ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"

namespace retort::cpu {
namespace {

// Elements per parallel task (fixed, so per-block sums do not depend on the
// number of threads).
constexpr int64_t kBlock = 1 << 15;

}  // namespace

void AdamWStep(float* params, const float* grads, float* m, float* v, int64_t n,
               const AdamWStepParams& hp) {
  const double b1 = hp.beta1, b2 = hp.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(hp.step));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(hp.step));
  const float step_size = static_cast<float>(static_cast<double>(hp.lr) / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float w1 = static_cast<float>(1 - b1);
  const float fb2 = hp.beta2, w2 = static_cast<float>(1 - b2);
  const float eps = hp.eps;
  const float decay = static_cast<float>(1 - static_cast<double>(hp.lr) * hp.weight_decay);
  const bool decays = hp.weight_decay != 0;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
    // The order of operations of torch's single-tensor AdamW (lerp for m).
    // Eight at a time with the very operations (and roundings) of the
    // scalar loop below, so every element gets the same bits either way.
    const __m256 v_decay = _mm256_set1_ps(decay), v_w1 = _mm256_set1_ps(w1);
    const __m256 v_b2 = _mm256_set1_ps(fb2), v_w2 = _mm256_set1_ps(w2);
    const __m256 v_bc2 = _mm256_set1_ps(bc2_sqrt), v_eps = _mm256_set1_ps(eps);
    const __m256 v_step = _mm256_set1_ps(step_size);
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
      __m256 p = _mm256_loadu_ps(params + i);
      if (decays) p = _mm256_mul_ps(p, v_decay);
      const __m256 gr = _mm256_loadu_ps(grads + i);
      const __m256 m0 = _mm256_loadu_ps(m + i);
      const __m256 mi = _mm256_fmadd_ps(_mm256_sub_ps(gr, m0), v_w1, m0);
      const __m256 g2 = _mm256_mul_ps(_mm256_mul_ps(gr, v_w2), gr);
      const __m256 vi = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), v_b2, g2);
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), v_bc2), v_eps);
      p = _mm256_sub_ps(p, _mm256_div_ps(_mm256_mul_ps(mi, v_step), denom));
      _mm256_storeu_ps(params + i, p);
    }
    for (; i < i1; ++i) {
      float p = params[i];
      if (decays) p *= decay;
      const float gr = grads[i];
      const float mi = std::fma(w1, gr - m[i], m[i]);
      // Written as the fma the compiler contracted it to (before the vector
      // loop existed), so the tail matches the vector lanes.
      const float vi = std::fma(v[i], fb2, w2 * gr * gr);
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) / bc2_sqrt + eps;
      params[i] = p - (step_size * mi) / denom;
    }
  });
}

double GradSumSquares(const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
      double s[4] = {0, 0, 0, 0};
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        for (int l = 0; l < 4; ++l) s[l] += static_cast<double>(x[i + l]) * x[i + l];
      }
      for (; i < i1; ++i) s[0] += static_cast<double>(x[i]) * x[i];
      partial[b] = (s[0] + s[1]) + (s[2] + s[3]);
    }
  });
  double sum = 0;
  for (double p : partial) sum += p;
  return sum;
}

void ScaleInPlace(float* x, int64_t n, float s) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, 1, [&](int64_t b0, int64_t b1) {
    const int64_t i1 = std::min(n, b1 * kBlock);
    for (int64_t i = b0 * kBlock; i < i1; ++i) x[i] *= s;
  });
}

}  // namespace retort::cpu
