// Row-wise building blocks shared by the inference kernels (ops.cc,
// attention.cc) and the training kernels (train_ops.cc). Internal header.
#ifndef RETORT_KERNELS_CPU_ROW_OPS_H_
#define RETORT_KERNELS_CPU_ROW_OPS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/simd.h"

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

// The online softmax of blockwise attention (the FlashAttention recurrence)
// for one block of query rows: the caller walks the visible keys in blocks,
// writes each block's scores into scores() [rows, kn], folds every row, and
// adds P · V of the block into output() [rows, d]; each row keeps a running
// max m and normaliser l, and its accumulator is rescaled when m grows. The
// buffers are reused from one Begin to the next (keep one per thread).
class OnlineSoftmax {
 public:
  // Starts `rows` query rows of head dimension d with key blocks of at most
  // key_block keys: accumulators 0, m = -inf, l = 0.
  void Begin(int64_t rows, int64_t key_block, int64_t d) {
    d_ = d;
    s_.resize(rows * key_block);
    o_.assign(rows * d, 0.f);
    m_.assign(rows, -INFINITY);
    l_.assign(rows, 0.f);
  }
  float* scores() { return s_.data(); }
  float* output() { return o_.data(); }

  // Row i of the current block of kn scores, whose visible keys are [lo, hi):
  // the scores become exp(s - m) (0 for invisible keys), the row's
  // accumulator is rescaled to the new max and l grows by the row's sum.
  // Inlined: it runs for every row of every key block.
  [[gnu::always_inline]] void FoldRow(int64_t i, int64_t kn, int64_t lo, int64_t hi) {
    float* si = s_.data() + i * kn;
    if (hi <= lo) {
      std::fill(si, si + kn, 0.f);
      return;
    }
    const float m_new = std::max(m_[i], simd::RowMax(si + lo, hi - lo));
    const float corr = std::exp(m_[i] - m_new);  // exp(-inf) = 0 on the row's first block
    std::fill(si, si + lo, 0.f);
    std::fill(si + hi, si + kn, 0.f);
    const float sum = simd::ExpShiftedInPlace(si + lo, hi - lo, m_new);
    if (corr != 1.f) {
      float* oi = o_.data() + i * d_;
      for (int64_t c = 0; c < d_; ++c) oi[c] *= corr;
    }
    l_[i] = l_[i] * corr + sum;
    m_[i] = m_new;
  }

  // out[0, d) = row i of the output over l (zeros for a row that saw no key).
  void WriteRow(int64_t i, float* out) const {
    const float inv = l_[i] > 0.f ? 1.f / l_[i] : 0.f;
    const float* oi = o_.data() + i * d_;
    for (int64_t c = 0; c < d_; ++c) out[c] = oi[c] * inv;
  }
  // log sum_j exp(s_ij) of row i; -inf for a row that saw no key.
  float LogSumExp(int64_t i) const { return l_[i] > 0.f ? m_[i] + std::log(l_[i]) : -INFINITY; }

 private:
  int64_t d_ = 0;
  std::vector<float> s_, o_, m_, l_;
};

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_ROW_OPS_H_
