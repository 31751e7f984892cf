// Causal GQA attention over a KV cache, blockwise with an online softmax
// (the FlashAttention recurrence): for each (head, block of queries) we walk
// the visible keys in blocks, keep a running row max m and normaliser l, and
// rescale the f32 output accumulator when m grows. Memory is O(block^2) per
// thread instead of O(n * context). Blocks of >= 8 queries use Sgemm for
// Q·K^T and P·V; decode (one query) uses vectorised dot/axpy loops.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/row_ops.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 256;
constexpr int64_t kSgemmMinRows = 8;

// S[rows, kn] = scale * Q[rows, d] · K[kn, d]^T.
void Scores(const float* q, int64_t ldq, int64_t rows, const float* k, int64_t kn, int64_t d,
            float scale, float* s) {
  if (rows >= kSgemmMinRows) {
    Sgemm(false, true, static_cast<int>(rows), static_cast<int>(kn), static_cast<int>(d), scale, q,
          static_cast<int>(ldq), k, static_cast<int>(d), 0.f, s, static_cast<int>(kn));
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kn; ++j) s[i * kn + j] = scale * simd::Dot(q + i * ldq, k + j * d, d);
  }
}

// O[rows, d] += P[rows, kn] · V[kn, d].
void AccumulatePV(const float* p, int64_t rows, int64_t kn, const float* v, int64_t d, float* o) {
  if (rows >= kSgemmMinRows) {
    Sgemm(false, false, static_cast<int>(rows), static_cast<int>(d), static_cast<int>(kn), 1.f, p,
          static_cast<int>(kn), v, static_cast<int>(d), 1.f, o, static_cast<int>(d));
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kn; ++j) {
      const float pij = p[i * kn + j];
      if (pij != 0.f) simd::Axpy(pij, v + j * d, o + i * d, d);
    }
  }
}

void AttendBlock(const float* q, int64_t ldq, int64_t rows, int64_t first_pos, const float* k,
                 const float* v, int64_t d, float scale, int64_t window, float* out, int64_t ldo,
                 OnlineSoftmax& sc) {
  const int64_t last_pos = first_pos + rows - 1;  // last query's position
  const int64_t key_begin = window > 0 ? std::max<int64_t>(0, first_pos - window + 1) : 0;
  const int64_t key_end = last_pos + 1;
  sc.Begin(rows, kKeyBlock, d);
  for (int64_t kb = key_begin; kb < key_end; kb += kKeyBlock) {
    const int64_t kn = std::min(kKeyBlock, key_end - kb);
    Scores(q, ldq, rows, k + kb * d, kn, d, scale, sc.scores());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = first_pos + i;
      // Visible keys of this row within the block: [lo, hi).
      const int64_t lo = window > 0 ? std::clamp<int64_t>(pos - window + 1 - kb, 0, kn) : 0;
      const int64_t hi = std::clamp<int64_t>(pos + 1 - kb, 0, kn);
      sc.FoldRow(i, kn, lo, hi);
    }
    AccumulatePV(sc.scores(), rows, kn, v + kb * d, d, sc.output());
  }
  for (int64_t i = 0; i < rows; ++i) sc.WriteRow(i, out + i * ldo);
}

}  // namespace

void Attention(const float* q, int64_t n, int64_t start_pos, const float* k, const float* v,
               int64_t kv_head_stride, const AttentionShape& shape, float scale, int64_t window,
               float* out) {
  const int64_t d = shape.head_dim;
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  const int64_t ld = shape.n_heads * d;
  const int64_t q_blocks = (n + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = shape.n_heads * q_blocks;
  ParallelFor(tasks, 1, [&](int64_t b, int64_t e) {
    thread_local OnlineSoftmax sc;
    for (int64_t t = b; t < e; ++t) {
      // Later query blocks see more keys; interleave so chunks balance.
      const int64_t qb = t / shape.n_heads, h = t % shape.n_heads;
      const int64_t kvh = h / group;
      const int64_t q0 = qb * kQueryBlock, rows = std::min(kQueryBlock, n - q0);
      AttendBlock(q + q0 * ld + h * d, ld, rows, start_pos + q0, k + kvh * kv_head_stride,
                  v + kvh * kv_head_stride, d, scale, window, out + q0 * ld + h * d, ld, sc);
    }
  });
}

}  // namespace retort::cpu
