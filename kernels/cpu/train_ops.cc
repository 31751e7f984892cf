// CPU training kernels (train_ops.h).
//
// Determinism: every kernel cuts its work into pieces whose size depends only
// on the problem shape (GEMM tiles, row blocks, column blocks, attention
// tiles), never on the number of threads, and each output element is written
// by exactly one piece whose sums run in a fixed order. ParallelFor only
// decides which thread runs which piece, so the results are bit-identical
// for any thread count.
//
// GEMMs: one single-threaded Sgemm (sgemm.h) per fixed output tile.
// Reductions over rows (dweight of RMSNorm, SumSquares) go through per-block
// partial sums reduced in block order.
//
// Attention follows FlashAttention-2: the forward walks key blocks with an
// online softmax and keeps only lse per query row; the backward recomputes
// P = exp(S - lse) tile by tile. dK/dV and dQ are produced by two passes so
// that no two tasks ever add into the same rows:
//   pass 1, one task per (kv head, key block): dV += P^T dO, dK += dS^T Q over
//           every query head of the group and every query block that sees it;
//   pass 2, one task per (query head, query block): dQ += dS K.
// The price is recomputing S, P and dP in both passes (7 small GEMMs per
// tile pair instead of 5), which buys race-free, ordered accumulation
// without n^2 memory or per-thread copies of dK/dV.
#include "kernels/cpu/train_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/row_ops.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

// ----------------------------------------------------------------------------
// Tiled GEMM: C[M, N] = alpha * op(A) · op(B) + beta * C, one sgemm per
// kGemmTile x kGemmTile tile of C. The sgemms pack their own panels; at this
// tile size the packing is a few % of the multiply.

constexpr int64_t kGemmTile = 256;

struct Gemm {
  bool trans_a = false;  // A stored [K, M] (use A^T)
  bool trans_b = false;  // B stored [N, K] (use B^T)
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.f;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float beta = 0.f;
  float* c = nullptr;
  int64_t ldc = 0;
  const float* row_bias = nullptr;  // if set: C rows start as bias[0..N) (beta ignored)
};

void RunGemmTile(const Gemm& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  float* c = g.c + i0 * g.ldc + j0;
  float beta = g.beta;
  if (g.row_bias != nullptr) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(g.c + i * g.ldc + j0, g.row_bias + j0, (j1 - j0) * sizeof(float));
    beta = 1.f;
  }
  if (g.k == 0) {  // empty product: C = beta * C (bias already in place)
    for (int64_t i = i0; i < i1; ++i) {
      float* ci = g.c + i * g.ldc;
      for (int64_t j = j0; j < j1; ++j) ci[j] = beta == 0.f ? 0.f : beta * ci[j];
    }
    return;
  }
  const float* a = g.trans_a ? g.a + i0 : g.a + i0 * g.lda;
  const float* b = g.trans_b ? g.b + j0 * g.ldb : g.b + j0;
  Sgemm(g.trans_a, g.trans_b, static_cast<int>(i1 - i0), static_cast<int>(j1 - j0),
        static_cast<int>(g.k), g.alpha, a, static_cast<int>(g.lda), b, static_cast<int>(g.ldb),
        beta, c, static_cast<int>(g.ldc));
}

void TiledGemm(const Gemm& g) {
  if (g.m <= 0 || g.n <= 0) return;
  const int64_t tm = (g.m + kGemmTile - 1) / kGemmTile;
  const int64_t tn = (g.n + kGemmTile - 1) / kGemmTile;
  ParallelFor(tm * tn, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i0 = (t / tn) * kGemmTile, j0 = (t % tn) * kGemmTile;
      RunGemmTile(g, i0, std::min(g.m, i0 + kGemmTile), j0, std::min(g.n, j0 + kGemmTile));
    }
  });
}

// ----------------------------------------------------------------------------
// Row-wise helpers.

constexpr int64_t kParallelElements = 1 << 15;

// row_ops.h's ForRows at this file's threshold. The per-row results must not
// depend on how rows are grouped.
template <typename Fn>
void ForRows(int64_t rows, int64_t cols, const Fn& fn) {
  cpu::ForRows(rows, cols, kParallelElements, fn);
}

// sum_i a[i] * b[i] * c[i] in f32.
float Dot3(const float* a, const float* b, const float* c, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)),
                           _mm256_loadu_ps(c + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)),
                           _mm256_loadu_ps(c + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)),
                           _mm256_loadu_ps(c + i), acc0);
  }
  float s = simd::HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i] * c[i];
  return s;
}

// ----------------------------------------------------------------------------
// Attention helpers.

constexpr int64_t kFwdQueryBlock = 64;
constexpr int64_t kFwdKeyBlock = 256;
constexpr int64_t kBwdBlock = 64;  // query and key blocks of the backward

// The first key query i may see: its document's start, and with a window
// the window's start.
inline int64_t FirstVisibleKey(const int32_t* doc_start, int64_t window, int64_t i) {
  int64_t lo = doc_start[i];
  if (window > 0) lo = std::max<int64_t>(lo, i - window + 1);
  return lo;
}

// S[rows, kn] = alpha * A[rows, d] · B[kn, d]^T (row strides lda, ldb).
void GemmABt(const float* a, int64_t lda, int64_t rows, const float* b, int64_t ldb, int64_t kn,
             int64_t d, float alpha, float* s) {
  Sgemm(false, true, static_cast<int>(rows), static_cast<int>(kn), static_cast<int>(d), alpha, a,
        static_cast<int>(lda), b, static_cast<int>(ldb), 0.f, s, static_cast<int>(kn));
}

// One (head, query block) of the forward: out rows [q0, q0 + rows) of one
// head, and their lse.
void ForwardBlock(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldkv,
                  const int32_t* doc_start, int64_t q0, int64_t rows, int64_t d, float scale,
                  int64_t window, float* out, float* lse, OnlineSoftmax& sc) {
  int64_t key_begin = q0;
  for (int64_t i = 0; i < rows; ++i)
    key_begin = std::min(key_begin, FirstVisibleKey(doc_start, window, q0 + i));
  const int64_t key_end = q0 + rows;
  sc.Begin(rows, kFwdKeyBlock, d);
  for (int64_t kb = key_begin; kb < key_end; kb += kFwdKeyBlock) {
    const int64_t kn = std::min(kFwdKeyBlock, key_end - kb);
    GemmABt(q, ldq, rows, k + kb * ldkv, ldkv, kn, d, scale, sc.scores());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = q0 + i;
      const int64_t lo = std::clamp<int64_t>(FirstVisibleKey(doc_start, window, pos) - kb, 0, kn);
      const int64_t hi = std::clamp<int64_t>(pos + 1 - kb, 0, kn);
      sc.FoldRow(i, kn, lo, hi);
    }
    // O[rows, d] += P[rows, kn] · V[kn, d].
    Sgemm(false, false, static_cast<int>(rows), static_cast<int>(d), static_cast<int>(kn), 1.f,
          sc.scores(), static_cast<int>(kn), v + kb * ldkv, static_cast<int>(ldkv), 1.f,
          sc.output(), static_cast<int>(d));
  }
  for (int64_t i = 0; i < rows; ++i) {
    sc.WriteRow(i, out + i * ldq);
    lse[i] = sc.LogSumExp(i);
  }
}

struct BwdScratch {
  std::vector<float> p, dp;
};

// Everything the backward tiles share.
struct BwdArgs {
  const float *q, *k, *v, *dout, *lse, *delta;
  const int32_t* doc_start;
  int64_t n, d, ldq, ldkv, window;
  float scale;
};

// For query rows [q0, q0 + rows) of head h against keys [k0, k0 + kn) (kv
// head offset applied by the caller through kh/vh): P (masked, from lse)
// into sc.p and dS = P * (dP - delta) into sc.dp. Returns false when no
// query of the tile sees any key of it.
bool BackwardTile(const BwdArgs& a, int64_t h, const float* kh, const float* vh, int64_t q0,
                  int64_t rows, int64_t k0, int64_t kn, BwdScratch& sc) {
  const float* qh = a.q + q0 * a.ldq + h * a.d;
  const float* doh = a.dout + q0 * a.ldq + h * a.d;
  const float* lse = a.lse + h * a.n + q0;
  const float* delta = a.delta + h * a.n + q0;
  sc.p.resize(rows * kn);
  sc.dp.resize(rows * kn);
  float* p = sc.p.data();
  float* dp = sc.dp.data();
  GemmABt(qh, a.ldq, rows, kh + k0 * a.ldkv, a.ldkv, kn, a.d, a.scale, p);
  GemmABt(doh, a.ldq, rows, vh + k0 * a.ldkv, a.ldkv, kn, a.d, 1.f, dp);
  bool any = false;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t pos = q0 + i;
    float* pi = p + i * kn;
    float* dpi = dp + i * kn;
    const int64_t lo = std::clamp<int64_t>(FirstVisibleKey(a.doc_start, a.window, pos) - k0, 0, kn);
    const int64_t hi = std::clamp<int64_t>(pos + 1 - k0, 0, kn);
    if (hi <= lo || lse[i] == -INFINITY) {
      std::fill(pi, pi + kn, 0.f);
      std::fill(dpi, dpi + kn, 0.f);
      continue;
    }
    any = true;
    std::fill(pi, pi + lo, 0.f);
    std::fill(pi + hi, pi + kn, 0.f);
    std::fill(dpi, dpi + lo, 0.f);
    std::fill(dpi + hi, dpi + kn, 0.f);
    const __m256 l8 = _mm256_set1_ps(lse[i]), d8 = _mm256_set1_ps(delta[i]);
    int64_t j = lo;
    for (; j + 8 <= hi; j += 8) {
      const __m256 pv = simd::Exp8(_mm256_sub_ps(_mm256_loadu_ps(pi + j), l8));
      _mm256_storeu_ps(pi + j, pv);
      _mm256_storeu_ps(dpi + j, _mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(dpi + j), d8)));
    }
    for (; j < hi; ++j) {
      pi[j] = std::exp(pi[j] - lse[i]);
      dpi[j] = pi[j] * (dpi[j] - delta[i]);
    }
  }
  return any;
}

// The range of keys query block [q0, q0 + rows) may see: [lo, q0 + rows).
int64_t BlockFirstKey(const int32_t* doc_start, int64_t window, int64_t q0, int64_t rows) {
  int64_t lo = q0;
  for (int64_t i = 0; i < rows; ++i) lo = std::min(lo, FirstVisibleKey(doc_start, window, q0 + i));
  return lo;
}

}  // namespace

// ----------------------------------------------------------------------------
// Linear.

void LinearForward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                   const float* bias, float* y) {
  Gemm g;
  g.trans_b = true;
  g.m = m, g.n = n, g.k = k;
  g.a = x, g.lda = k;
  g.b = w, g.ldb = k;
  g.c = y, g.ldc = n;
  g.row_bias = bias;
  TiledGemm(g);
}

void LinearBackward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                    const float* dy, float* dx, float* dw, float* dbias, bool accumulate_dx) {
  if (dx != nullptr) {  // dx[m, k] = dy[m, n] · w[n, k]
    Gemm g;
    g.m = m, g.n = k, g.k = n;
    g.a = dy, g.lda = n;
    g.b = w, g.ldb = k;
    g.beta = accumulate_dx ? 1.f : 0.f;
    g.c = dx, g.ldc = k;
    TiledGemm(g);
  }
  if (dw != nullptr && m > 0) {  // dw[n, k] += dy^T[n, m] · x[m, k]
    Gemm g;
    g.trans_a = true;
    g.m = n, g.n = k, g.k = m;
    g.a = dy, g.lda = n;
    g.b = x, g.ldb = k;
    g.beta = 1.f;
    g.c = dw, g.ldc = k;
    TiledGemm(g);
  }
  if (dbias != nullptr && m > 0) {
    // Column blocks, rows summed in order: deterministic and race-free.
    constexpr int64_t kCols = 64;
    const int64_t blocks = (n + kCols - 1) / kCols;
    auto fn = [&](int64_t b, int64_t e) {
      for (int64_t blk = b; blk < e; ++blk) {
        const int64_t c0 = blk * kCols, c1 = std::min(n, c0 + kCols);
        float acc[kCols];
        std::copy(dbias + c0, dbias + c1, acc);
        for (int64_t r = 0; r < m; ++r) {
          const float* row = dy + r * n;
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
        }
        std::copy(acc, acc + (c1 - c0), dbias + c0);
      }
    };
    if (m * n < kParallelElements) {
      fn(0, blocks);
    } else {
      ParallelFor(blocks, 1, fn);
    }
  }
}

// ----------------------------------------------------------------------------
// RMSNorm.

void RmsNormForward(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                    float* y, float* rstd) {
  ForRows(rows, dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      // Same arithmetic as RmsNorm (ops.cc), so training and inference agree.
      const float ss = simd::Dot(xr, xr, dim);
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
      rstd[r] = inv;
      for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
  });
}

void RmsNormApply(const float* x, const float* rstd, int64_t rows, int64_t dim, const float* weight,
                  float* y) {
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float s = rstd[r];
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * s * weight[i];
    }
  });
}

void RmsNormBackward(const float* x, const float* rstd, int64_t rows, int64_t dim,
                     const float* weight, const float* dy, float* dx, float* dweight,
                     bool accumulate_dx) {
  if (rows <= 0 || dim <= 0) return;
  // y_i = w_i * x_i * r with r = (mean(x^2) + eps)^-1/2, so
  //   dx_i = r * w_i * dy_i - x_i * r^3 / dim * sum_j w_j dy_j x_j
  //   dw_i = sum over rows of dy_i * x_i * r.
  // dweight: one partial per block of kRowBlock rows, summed in block order.
  constexpr int64_t kRowBlock = 64;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  std::vector<float> partial;
  if (dweight != nullptr) partial.assign(blocks * dim, 0.f);
  auto rows_fn = [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      float* pw = dweight != nullptr ? partial.data() + blk * dim : nullptr;
      for (int64_t r = blk * kRowBlock, r1 = std::min(rows, r + kRowBlock); r < r1; ++r) {
        const float* xr = x + r * dim;
        const float* dyr = dy + r * dim;
        float* dxr = dx + r * dim;
        const float rs = rstd[r];
        const float dot = Dot3(weight, dyr, xr, dim);
        const float coef = rs * rs * rs * dot / static_cast<float>(dim);
        const __m256 rs8 = _mm256_set1_ps(rs), coef8 = _mm256_set1_ps(coef);
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8) {
          const __m256 xv = _mm256_loadu_ps(xr + i), dyv = _mm256_loadu_ps(dyr + i);
          __m256 g = _mm256_fmsub_ps(_mm256_mul_ps(rs8, _mm256_loadu_ps(weight + i)), dyv,
                                     _mm256_mul_ps(coef8, xv));
          if (accumulate_dx) g = _mm256_add_ps(g, _mm256_loadu_ps(dxr + i));
          _mm256_storeu_ps(dxr + i, g);
          if (pw != nullptr) {
            _mm256_storeu_ps(pw + i,
                             _mm256_fmadd_ps(_mm256_mul_ps(dyv, xv), rs8, _mm256_loadu_ps(pw + i)));
          }
        }
        for (; i < dim; ++i) {
          // dy is read before dx is written: they may be the same buffer.
          const float dyi = dyr[i];
          const float g = std::fma(rs * weight[i], dyi, -(coef * xr[i]));
          if (pw != nullptr) pw[i] = std::fma(dyi * xr[i], rs, pw[i]);
          dxr[i] = accumulate_dx ? dxr[i] + g : g;
        }
      }
    }
  };
  if (rows * dim < kParallelElements) {
    rows_fn(0, blocks);
  } else {
    ParallelFor(blocks, 1, rows_fn);
  }
  if (dweight == nullptr) return;
  ForRows((dim + 63) / 64, 64 * blocks, [&](int64_t b, int64_t e) {
    for (int64_t c = b * 64, c1 = std::min(dim, e * 64); c < c1; ++c) {
      float acc = dweight[c];
      for (int64_t blk = 0; blk < blocks; ++blk) acc += partial[blk * dim + c];
      dweight[c] = acc;
    }
  });
}

// ----------------------------------------------------------------------------
// SwiGLU.

void SiluMulBackward(const float* gate, const float* up, const float* dout, int64_t n, float* dgate,
                     float* dup) {
  // s = sigmoid(g): d(g s u)/dg = u s (1 + g (1 - s)), d/du = g s.
  constexpr int64_t kChunk = 1024;
  ForRows((n + kChunk - 1) / kChunk, kChunk, [&](int64_t b, int64_t e) {
    int64_t i = b * kChunk;
    const int64_t end = std::min(n, e * kChunk);
    const __m256 one = _mm256_set1_ps(1.f);
    for (; i + 8 <= end; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
      const __m256 d = _mm256_loadu_ps(dout + i);
      const __m256 s =
          _mm256_div_ps(one, _mm256_add_ps(one, simd::Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      const __m256 gs = _mm256_mul_ps(g, s);
      _mm256_storeu_ps(dup + i, _mm256_mul_ps(d, gs));
      // 1 + g (1 - s) = 1 + g - g s
      const __m256 t = _mm256_sub_ps(_mm256_add_ps(one, g), gs);
      _mm256_storeu_ps(dgate + i, _mm256_mul_ps(_mm256_mul_ps(d, u), _mm256_mul_ps(s, t)));
    }
    for (; i < end; ++i) {
      const float g = gate[i], s = 1.f / (1.f + std::exp(-g));
      const float gs = g * s;
      const float d = dout[i], u = up[i];
      dup[i] = d * gs;
      dgate[i] = (d * u) * (s * (1.f + g - gs));
    }
  });
}

// ----------------------------------------------------------------------------
// RoPE.

void ApplyRopeBackward(float* dx, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                       const float* cos, const float* sin) {
  // Forward: (a, b) -> (a c - b s, b c + a s). Its transpose, the rotation by
  // -angle: (da, db) = (dy1 c + dy2 s, dy2 c - dy1 s).
  RotateHalves</*kInverse=*/true>(dx, n, n_heads, head_dim, row_stride, cos, sin,
                                  kParallelElements);
}

// ----------------------------------------------------------------------------
// Embedding.

void EmbeddingBackward(const int32_t* ids, int64_t n, int64_t dim, const float* dout,
                       float* dtable) {
  // Threads own column slices of the table; each walks the tokens in order,
  // so every element receives its additions in token order.
  constexpr int64_t kCols = 64;
  const int64_t blocks = (dim + kCols - 1) / kCols;
  auto fn = [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t c0 = blk * kCols, len = std::min(dim, c0 + kCols) - c0;
      for (int64_t i = 0; i < n; ++i) {
        float* row = dtable + static_cast<int64_t>(ids[i]) * dim + c0;
        const float* src = dout + i * dim + c0;
        int64_t c = 0;
        for (; c + 8 <= len; c += 8) {
          _mm256_storeu_ps(row + c,
                           _mm256_add_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(src + c)));
        }
        for (; c < len; ++c) row[c] += src[c];
      }
    }
  };
  if (n * dim < kParallelElements) {
    fn(0, blocks);
  } else {
    ParallelFor(blocks, 1, fn);
  }
}

// ----------------------------------------------------------------------------
// Attention.

void AttentionForward(const float* q, const float* k, const float* v, const int32_t* doc_start,
                      int64_t n, const AttentionShape& shape, float scale, int64_t window,
                      float* out, float* lse) {
  if (n <= 0) return;
  const int64_t d = shape.head_dim;
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  const int64_t ldq = shape.n_heads * d, ldkv = shape.n_kv_heads * d;
  const int64_t q_blocks = (n + kFwdQueryBlock - 1) / kFwdQueryBlock;
  ParallelFor(shape.n_heads * q_blocks, 1, [&](int64_t b, int64_t e) {
    thread_local OnlineSoftmax sc;
    for (int64_t t = b; t < e; ++t) {
      // Later query blocks see more keys; interleaving heads balances chunks.
      const int64_t qb = t / shape.n_heads, h = t % shape.n_heads, g = h / group;
      const int64_t q0 = qb * kFwdQueryBlock, rows = std::min(kFwdQueryBlock, n - q0);
      ForwardBlock(q + q0 * ldq + h * d, ldq, k + g * d, v + g * d, ldkv, doc_start, q0, rows, d,
                   scale, window, out + q0 * ldq + h * d, lse + h * n + q0, sc);
    }
  });
}

void AttentionBackward(const float* q, const float* k, const float* v, const int32_t* doc_start,
                       int64_t n, const AttentionShape& shape, float scale, int64_t window,
                       const float* out, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv) {
  if (n <= 0) return;
  const int64_t d = shape.head_dim, heads = shape.n_heads, kv_heads = shape.n_kv_heads;
  const int64_t group = heads / kv_heads;
  const int64_t ldq = heads * d, ldkv = kv_heads * d;
  const int64_t blocks = (n + kBwdBlock - 1) / kBwdBlock;

  // delta[h, i] = dO_i · O_i (the softmax backward's row term).
  std::vector<float> delta(heads * n);
  ForRows(n, ldq, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t h = 0; h < heads; ++h)
        delta[h * n + i] = simd::Dot(dout + i * ldq + h * d, out + i * ldq + h * d, d);
    }
  });
  // First key any query of each block sees (skips tiles with nothing visible).
  std::vector<int64_t> first_key(blocks);
  for (int64_t qb = 0; qb < blocks; ++qb) {
    const int64_t q0 = qb * kBwdBlock;
    first_key[qb] = BlockFirstKey(doc_start, window, q0, std::min(kBwdBlock, n - q0));
  }
  const BwdArgs args{q, k, v, dout, lse, delta.data(), doc_start, n, d, ldq, ldkv, window, scale};

  // Pass 1: dK, dV, one task per (key block, kv head).
  ParallelFor(blocks * kv_heads, 1, [&](int64_t b, int64_t e) {
    thread_local BwdScratch sc;
    for (int64_t t = b; t < e; ++t) {
      const int64_t kb = t / kv_heads, g = t % kv_heads;
      const int64_t k0 = kb * kBwdBlock, kn = std::min(kBwdBlock, n - k0);
      float* dkt = dk + k0 * ldkv + g * d;
      float* dvt = dv + k0 * ldkv + g * d;
      for (int64_t j = 0; j < kn; ++j) {
        std::fill(dkt + j * ldkv, dkt + j * ldkv + d, 0.f);
        std::fill(dvt + j * ldkv, dvt + j * ldkv + d, 0.f);
      }
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (int64_t qb = kb; qb < blocks; ++qb) {  // queries before k0 see none of it
          if (first_key[qb] >= k0 + kn) continue;
          const int64_t q0 = qb * kBwdBlock, rows = std::min(kBwdBlock, n - q0);
          if (!BackwardTile(args, h, k + g * d, v + g * d, q0, rows, k0, kn, sc)) continue;
          // dV[kn, d] += P^T[kn, rows] · dO[rows, d]
          Sgemm(true, false, static_cast<int>(kn), static_cast<int>(d), static_cast<int>(rows), 1.f,
                sc.p.data(), static_cast<int>(kn), dout + q0 * ldq + h * d, static_cast<int>(ldq),
                1.f, dvt, static_cast<int>(ldkv));
          // dK[kn, d] += scale * dS^T[kn, rows] · Q[rows, d]
          Sgemm(true, false, static_cast<int>(kn), static_cast<int>(d), static_cast<int>(rows),
                scale, sc.dp.data(), static_cast<int>(kn), q + q0 * ldq + h * d,
                static_cast<int>(ldq), 1.f, dkt, static_cast<int>(ldkv));
        }
      }
    }
  });

  // Pass 2: dQ, one task per (query block, head).
  ParallelFor(blocks * heads, 1, [&](int64_t b, int64_t e) {
    thread_local BwdScratch sc;
    for (int64_t t = b; t < e; ++t) {
      const int64_t qb = t / heads, h = t % heads, g = h / group;
      const int64_t q0 = qb * kBwdBlock, rows = std::min(kBwdBlock, n - q0);
      float* dqt = dq + q0 * ldq + h * d;
      for (int64_t i = 0; i < rows; ++i) std::fill(dqt + i * ldq, dqt + i * ldq + d, 0.f);
      for (int64_t kb = first_key[qb] / kBwdBlock; kb <= qb; ++kb) {
        const int64_t k0 = kb * kBwdBlock, kn = std::min(kBwdBlock, n - k0);
        if (!BackwardTile(args, h, k + g * d, v + g * d, q0, rows, k0, kn, sc)) continue;
        // dQ[rows, d] += scale * dS[rows, kn] · K[kn, d]
        Sgemm(false, false, static_cast<int>(rows), static_cast<int>(d), static_cast<int>(kn),
              scale, sc.dp.data(), static_cast<int>(kn), k + k0 * ldkv + g * d,
              static_cast<int>(ldkv), 1.f, dqt, static_cast<int>(ldq));
      }
    }
  });
}

// ----------------------------------------------------------------------------
// Reductions.

double SumSquares(const float* x, int64_t n) {
  // Fixed blocks summed in f64, then the block sums in order.
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  if (blocks <= 0) return 0.0;
  std::vector<double> partial(blocks);
  auto fn = [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t i0 = blk * kBlock, i1 = std::min(n, i0 + kBlock);
      __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
      int64_t i = i0;
      for (; i + 8 <= i1; i += 8) {
        const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        const __m256d hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        acc0 = _mm256_fmadd_pd(lo, lo, acc0);
        acc1 = _mm256_fmadd_pd(hi, hi, acc1);
      }
      alignas(32) double lanes[4];
      _mm256_store_pd(lanes, _mm256_add_pd(acc0, acc1));
      double s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
      for (; i < i1; ++i) s += static_cast<double>(x[i]) * x[i];
      partial[blk] = s;
    }
  };
  if (blocks == 1) {
    fn(0, 1);
  } else {
    ParallelFor(blocks, 1, fn);
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace retort::cpu
