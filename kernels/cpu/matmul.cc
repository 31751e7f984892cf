// MatMul: nn.Linear products with weights kept in their stored dtype.
//
// Two paths, chosen by the number of input rows m:
//  * GEMV (m <= kGemvMaxRows, i.e. decode): memory-bound. Each weight row is
//    streamed once per input row straight from its stored bytes (bf16/f16
//    widened in registers), four rows at a time so the loads of x are shared.
//    Threads split the output rows.
//  * GEMM (prefill): compute-bound. Threads split the output rows into blocks;
//    each block of bf16/f16 rows is widened into a per-thread f32 scratch that
//    fits in L2 and multiplied with a single-threaded cblas_sgemm. f32 weights
//    go to sgemm directly. The conversion costs O(n*k) per call against the
//    O(m*n*k) product, so it vanishes for the m this path sees.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

template <DType D>
constexpr int64_t ElemBytes() {
  return D == DType::kF32 ? 4 : 2;
}

template <DType D>
inline const void* RowPtr(const void* w, int64_t r, int64_t k) {
  return static_cast<const char*>(w) + r * k * ElemBytes<D>();
}

// y[i, r] = x[i, :] · w[r, :] (+ bias[r]) for rows r in [r0, r1), all i < m.
template <DType D>
void GemvRows(const float* x, int64_t m, int64_t k, const void* w, const float* bias, float* y,
              int64_t ldy, int64_t r0, int64_t r1) {
  using simd::Load1;
  using simd::Load8;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const void* w0 = RowPtr<D>(w, r, k);
    const void* w1 = RowPtr<D>(w, r + 1, k);
    const void* w2 = RowPtr<D>(w, r + 2, k);
    const void* w3 = RowPtr<D>(w, r + 3, k);
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
             a3 = _mm256_setzero_ps();
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(),
             b3 = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 16 <= k; j += 16) {
        __m256 xa = _mm256_loadu_ps(xi + j), xb = _mm256_loadu_ps(xi + j + 8);
        a0 = _mm256_fmadd_ps(Load8<D>(w0, j), xa, a0);
        a1 = _mm256_fmadd_ps(Load8<D>(w1, j), xa, a1);
        a2 = _mm256_fmadd_ps(Load8<D>(w2, j), xa, a2);
        a3 = _mm256_fmadd_ps(Load8<D>(w3, j), xa, a3);
        b0 = _mm256_fmadd_ps(Load8<D>(w0, j + 8), xb, b0);
        b1 = _mm256_fmadd_ps(Load8<D>(w1, j + 8), xb, b1);
        b2 = _mm256_fmadd_ps(Load8<D>(w2, j + 8), xb, b2);
        b3 = _mm256_fmadd_ps(Load8<D>(w3, j + 8), xb, b3);
      }
      for (; j + 8 <= k; j += 8) {
        __m256 xa = _mm256_loadu_ps(xi + j);
        a0 = _mm256_fmadd_ps(Load8<D>(w0, j), xa, a0);
        a1 = _mm256_fmadd_ps(Load8<D>(w1, j), xa, a1);
        a2 = _mm256_fmadd_ps(Load8<D>(w2, j), xa, a2);
        a3 = _mm256_fmadd_ps(Load8<D>(w3, j), xa, a3);
      }
      float s0 = simd::HorizontalSum(_mm256_add_ps(a0, b0));
      float s1 = simd::HorizontalSum(_mm256_add_ps(a1, b1));
      float s2 = simd::HorizontalSum(_mm256_add_ps(a2, b2));
      float s3 = simd::HorizontalSum(_mm256_add_ps(a3, b3));
      for (; j < k; ++j) {
        float xv = xi[j];
        s0 += Load1<D>(w0, j) * xv;
        s1 += Load1<D>(w1, j) * xv;
        s2 += Load1<D>(w2, j) * xv;
        s3 += Load1<D>(w3, j) * xv;
      }
      float* yi = y + i * ldy + r;
      if (bias) {
        s0 += bias[r];
        s1 += bias[r + 1];
        s2 += bias[r + 2];
        s3 += bias[r + 3];
      }
      yi[0] = s0;
      yi[1] = s1;
      yi[2] = s2;
      yi[3] = s3;
    }
  }
  for (; r < r1; ++r) {
    const void* wr = RowPtr<D>(w, r, k);
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      __m256 a = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 8 <= k; j += 8) a = _mm256_fmadd_ps(Load8<D>(wr, j), _mm256_loadu_ps(xi + j), a);
      float s = simd::HorizontalSum(a);
      for (; j < k; ++j) s += Load1<D>(wr, j) * xi[j];
      y[i * ldy + r] = s + (bias ? bias[r] : 0.f);
    }
  }
}

void GemvDispatch(const float* x, int64_t m, int64_t k, const Tensor& w, const float* bias,
                  float* y, int64_t r0, int64_t r1) {
  const int64_t ldy = w.dim(0);
  switch (w.dtype()) {
    case DType::kF32:
      return GemvRows<DType::kF32>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
    case DType::kBF16:
      return GemvRows<DType::kBF16>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
    case DType::kF16:
      return GemvRows<DType::kF16>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
    default:
      return;  // rejected by CheckWeight
  }
}

// Rows of weight per sgemm block: the widened block (rows * k floats) should
// sit in L2 while sgemm walks it.
int64_t GemmBlockRows(int64_t k) {
  int64_t rows = (256 * 1024) / std::max<int64_t>(k, 1);
  rows = std::clamp<int64_t>(rows, 16, 256);
  return rows / 16 * 16;
}

// y[:, r0:r1] = x · w[r0:r1]^T (+ bias) with one single-threaded sgemm.
void GemmBlock(const float* x, int64_t m, int64_t k, const Tensor& w, const float* bias, float* y,
               int64_t r0, int64_t r1, std::vector<float>& scratch) {
  const int64_t n = w.dim(0), rows = r1 - r0;
  const float* wf;
  if (w.dtype() == DType::kF32) {
    wf = w.data<float>() + r0 * k;
  } else {
    scratch.resize(static_cast<size_t>(rows * k));
    RowToF32(w.dtype(), static_cast<const char*>(w.raw()) + r0 * k * 2, scratch.data(), rows * k);
    wf = scratch.data();
  }
  float beta = 0.f;
  if (bias) {
    for (int64_t i = 0; i < m; ++i) std::copy(bias + r0, bias + r1, y + i * n + r0);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(rows),
              static_cast<int>(k), 1.f, x, static_cast<int>(k), wf, static_cast<int>(k), beta,
              y + r0, static_cast<int>(n));
}

absl::Status CheckWeight(const Tensor& w, int64_t k) {
  if (w.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: weight must be rank 2, got shape ", ShapeString(w.shape())));
  }
  if (!IsSupportedWeightDType(w.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: unsupported weight dtype ", std::string(DTypeName(w.dtype()))));
  }
  if (w.dim(1) != k) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul: weight shape ", ShapeString(w.shape()),
                                                   " does not take inputs of width ", k));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSupportedWeightDType(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}

void RowToF32(DType t, const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  switch (t) {
    case DType::kF32:
      std::copy(static_cast<const float*>(src), static_cast<const float*>(src) + n, dst);
      return;
    case DType::kBF16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, simd::Load8<DType::kBF16>(src, i));
      for (; i < n; ++i) dst[i] = simd::Load1<DType::kBF16>(src, i);
      return;
    case DType::kF16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, simd::Load8<DType::kF16>(src, i));
      for (; i < n; ++i) dst[i] = simd::Load1<DType::kF16>(src, i);
      return;
    default:
      ConvertToF32(t, src, dst, n);
  }
}

absl::Status MatMulGroup(const float* x, int64_t m, int64_t k,
                         const std::vector<MatMulOutput>& outs) {
  for (const MatMulOutput& o : outs) RETURN_IF_ERROR(CheckWeight(*o.w, k));
  if (m <= 0 || outs.empty()) return absl::OkStatus();

  if (m <= kGemvMaxRows) {
    // Concatenate the outputs' rows into one index space and split it.
    std::vector<int64_t> start(outs.size() + 1, 0);
    for (size_t i = 0; i < outs.size(); ++i) start[i + 1] = start[i] + outs[i].w->dim(0);
    const int64_t total = start.back();
    const int64_t bytes_per_row = k * ElemBytes<DType::kBF16>();
    // ~64 KiB of weights per chunk keeps dispatch overhead small.
    const int64_t grain =
        std::max<int64_t>(4, (64 * 1024) / std::max<int64_t>(bytes_per_row, 1)) / 4 * 4;
    ParallelFor(total, grain, [&](int64_t b, int64_t e) {
      for (size_t i = 0; i < outs.size(); ++i) {
        int64_t lo = std::max(b, start[i]), hi = std::min(e, start[i + 1]);
        if (lo >= hi) continue;
        GemvDispatch(x, m, k, *outs[i].w, outs[i].bias, outs[i].y, lo - start[i], hi - start[i]);
      }
    });
    return absl::OkStatus();
  }

  EnsureBlasSingleThreaded();
  struct Block {
    size_t out;
    int64_t r0, r1;
  };
  std::vector<Block> blocks;
  const int64_t block_rows = GemmBlockRows(k);
  for (size_t i = 0; i < outs.size(); ++i) {
    const int64_t n = outs[i].w->dim(0);
    for (int64_t r = 0; r < n; r += block_rows)
      blocks.push_back({i, r, std::min(n, r + block_rows)});
  }
  ParallelFor(static_cast<int64_t>(blocks.size()), 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scratch;
    for (int64_t i = b; i < e; ++i) {
      const Block& bl = blocks[i];
      const MatMulOutput& o = outs[bl.out];
      GemmBlock(x, m, k, *o.w, o.bias, o.y, bl.r0, bl.r1, scratch);
    }
  });
  return absl::OkStatus();
}

absl::Status MatMul(const float* x, int64_t m, const Tensor& w, const float* bias, float* y) {
  if (w.rank() != 2) return CheckWeight(w, 0);
  return MatMulGroup(x, m, w.dim(1), {MatMulOutput{&w, bias, y}});
}

}  // namespace retort::cpu
