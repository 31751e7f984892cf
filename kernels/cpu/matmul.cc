// MatMul: nn.Linear products with weights kept in their stored dtype.
//
// Two paths, chosen by the number of input rows m:
//  * GEMV (m <= kGemvMaxRows, i.e. decode): memory-bound. Each weight row is
//    streamed once, start to end, straight from its stored bytes (bf16/f16
//    widened in registers), serving all m input rows in that one pass.
//    Threads split the output rows.
//  * GEMM (prefill): compute-bound. Threads split the output rows into blocks;
//    each block of bf16/f16 rows is widened into a per-thread f32 scratch that
//    fits in L2 and multiplied with a single-threaded Sgemm. f32 weights
//    go to sgemm directly. The conversion costs O(n*k) per call against the
//    O(m*n*k) product, so it vanishes for the m this path sees.
// Block-quantized (GGUF) weights take quant_matmul.h's integer dots on the
// GEMV path (the input quantized once per call to 8-bit blocks) and the same
// dequantize-a-block-then-sgemm scheme on the GEMM path. QuantizedMatrix
// weights (MatMulOutput::quant) go to quant_matrix_matmul.h's kernels.
#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/quant_matrix_matmul.h"
#include "kernels/cpu/sgemm.h"
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

// y[i, r] = x[i, :] · w[r, :] (+ bias[r]) for rows r in [r0, r1) and the M
// input rows i. One weight row at a time, start to end: a single sequential
// stream per thread is what the hardware prefetcher follows best (measured:
// reading four rows side by side reached ~55% of the read bandwidth, one row
// at a time ~90%). All M input rows are served by the same pass over the
// weights, with U independent accumulators per input row to hide FMA latency.
template <DType D, int M>
void GemvRows(const float* x, int64_t k, const void* w, const float* bias, float* y, int64_t ldy,
              int64_t r0, int64_t r1) {
  using simd::Load1;
  using simd::Load8;
  constexpr int U = M == 1 ? 4 : 2;
  for (int64_t r = r0; r < r1; ++r) {
    const void* wr = RowPtr<D>(w, r, k);
    __m256 acc[M][U];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc[i][u] = _mm256_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 8 * U <= k; j += 8 * U) {
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        const __m256 wv = Load8<D>(wr, j + 8 * u);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          acc[i][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j + 8 * u), acc[i][u]);
        }
      }
    }
    for (; j + 8 <= k; j += 8) {
      const __m256 wv = Load8<D>(wr, j);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i)
        acc[i][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i * k + j), acc[i][0]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      __m256 sum = acc[i][0];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[i][u]);
      float s = simd::HorizontalSum(sum);
      for (int64_t t = j; t < k; ++t) s += Load1<D>(wr, t) * x[i * k + t];
      y[i * ldy + r] = s + (bias ? bias[r] : 0.f);
    }
  }
}

template <DType D>
void GemvRowsAnyM(const float* x, int64_t m, int64_t k, const void* w, const float* bias, float* y,
                  int64_t ldy, int64_t r0, int64_t r1) {
  static_assert(kGemvMaxRows == 4, "GemvRowsAnyM dispatches M = 1..4");
  switch (m) {
    case 1:
      return GemvRows<D, 1>(x, k, w, bias, y, ldy, r0, r1);
    case 2:
      return GemvRows<D, 2>(x, k, w, bias, y, ldy, r0, r1);
    case 3:
      return GemvRows<D, 3>(x, k, w, bias, y, ldy, r0, r1);
    default:
      return GemvRows<D, 4>(x, k, w, bias, y, ldy, r0, r1);
  }
}

void GemvDispatch(const float* x, int64_t m, int64_t k, const Tensor& w, const float* bias,
                  float* y, int64_t r0, int64_t r1) {
  const int64_t ldy = w.dim(0);
  switch (w.dtype()) {
    case DType::kF32:
      return GemvRowsAnyM<DType::kF32>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
    case DType::kBF16:
      return GemvRowsAnyM<DType::kBF16>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
    case DType::kF16:
      return GemvRowsAnyM<DType::kF16>(x, m, k, w.raw(), bias, y, ldy, r0, r1);
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
void GemmBlock(const float* x, int64_t m, int64_t k, const Tensor& w, WeightLayout layout,
               const float* bias, float* y, int64_t r0, int64_t r1, std::vector<float>& scratch) {
  const int64_t n = w.dim(0), rows = r1 - r0;
  const float* wf;
  if (IsBlockQuantized(w.dtype())) {
    scratch.resize(static_cast<size_t>(rows * k));
    DequantizeRows(w.dtype(), layout, w.raw(), k, r0, rows, scratch.data());
    wf = scratch.data();
  } else if (w.dtype() == DType::kF32) {
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
  Sgemm(false, true, static_cast<int>(m), static_cast<int>(rows), static_cast<int>(k), 1.f, x,
        static_cast<int>(k), wf, static_cast<int>(k), beta, y + r0, static_cast<int>(n));
}

absl::Status CheckWeight(const Tensor& w, WeightLayout layout, int64_t k) {
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
  if (k % DTypeBlockElems(w.dtype()) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: ", std::string(DTypeName(w.dtype())), " weight rows of ", k,
                     " elements are not whole blocks of ", DTypeBlockElems(w.dtype())));
  }
  if (!IsValidWeightLayout(w.dtype(), layout, w.dim(0), k)) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: a ", std::string(DTypeName(w.dtype())), " ", ShapeString(w.shape()),
                     " weight cannot be in the 8-row repacked layout"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSupportedWeightDType(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 || IsQuantizedWeightDType(t);
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
  for (const MatMulOutput& o : outs) {
    RETURN_IF_ERROR(o.quant != nullptr ? CheckQuantizedMatrixLayout(*o.quant, k)
                                       : CheckWeight(*o.w, o.layout, k));
  }
  if (m <= 0 || outs.empty()) return absl::OkStatus();
  auto rows_of = [](const MatMulOutput& o) { return o.quant ? o.quant->rows : o.w->dim(0); };

  bool all_quantized = true;
  for (const MatMulOutput& o : outs) all_quantized &= !o.quant && IsBlockQuantized(o.w->dtype());
  static_assert(kQuantMatrixGemvMaxRows == kGemvMaxRows, "one GEMV threshold for the group");
  if (m <= kGemvMaxRows || (all_quantized && m <= kQuantGemvMaxRows)) {
    // QuantizedMatrix weights: the input's per-segment sums, once per call.
    std::vector<std::optional<QuantMatrixGemv>> qgemv(outs.size());
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].quant) qgemv[i].emplace(*outs[i].quant, x, m);
    }
    // Block-quantized weights: quantize the input once per activation type.
    std::vector<const void*> act(outs.size(), nullptr);
    std::vector<size_t> act_row_bytes(outs.size(), 0);
    bool quantized[3] = {false, false, false};
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].quant) continue;
      const DType wt = outs[i].w->dtype();
      if (!IsBlockQuantized(wt)) continue;
      const DType at = QuantDotActivationType(wt);
      act_row_bytes[i] = ActivationRowBytes(at, k);
      if (at == DType::kF32) {
        act[i] = x;
        continue;
      }
      const int slot = at == DType::kQ8_0 ? 0 : at == DType::kQ8_1 ? 1 : 2;
      thread_local std::vector<char> buffers[3];
      std::vector<char>& buf = buffers[slot];
      if (!quantized[slot]) {  // outputs sharing an activation type share its rows
        buf.resize(act_row_bytes[i] * m);
        for (int64_t r = 0; r < m; ++r)
          QuantizeActivationRow(at, x + r * k, buf.data() + r * act_row_bytes[i], k);
        quantized[slot] = true;
      }
      act[i] = buf.data();
    }
    // Concatenate the outputs' rows into one index space and split it.
    std::vector<int64_t> start(outs.size() + 1, 0);
    for (size_t i = 0; i < outs.size(); ++i) start[i + 1] = start[i] + rows_of(outs[i]);
    const int64_t total = start.back();
    const int64_t bytes_per_row = k * ElemBytes<DType::kBF16>();
    // ~64 KiB of weights per chunk keeps dispatch overhead small.
    const int64_t grain =
        std::max<int64_t>(8, (64 * 1024) / std::max<int64_t>(bytes_per_row, 1)) / 8 * 8;
    // Split in whole units of 8 rows: the kernels that work on groups of 8
    // (the kR8 layout) or 4 rows then never see a group cut between threads.
    constexpr int64_t kUnit = 8;
    ParallelFor((total + kUnit - 1) / kUnit, grain / kUnit, [&](int64_t ub, int64_t ue) {
      const int64_t b = ub * kUnit, e = std::min(total, ue * kUnit);
      for (size_t i = 0; i < outs.size(); ++i) {
        int64_t lo = std::max(b, start[i]), hi = std::min(e, start[i + 1]);
        if (lo >= hi) continue;
        if (qgemv[i]) {
          qgemv[i]->Rows(outs[i].bias, outs[i].y, outs[i].quant->rows, lo - start[i],
                         hi - start[i]);
          continue;
        }
        if (act[i] != nullptr) {
          QuantGemvRows(outs[i].w->dtype(), outs[i].layout, outs[i].w->raw(), k, act[i],
                        act_row_bytes[i], m, outs[i].bias, outs[i].y, outs[i].w->dim(0),
                        lo - start[i], hi - start[i]);
          continue;
        }
        GemvDispatch(x, m, k, *outs[i].w, outs[i].bias, outs[i].y, lo - start[i], hi - start[i]);
      }
    });
    return absl::OkStatus();
  }

  struct Block {
    size_t out;
    int64_t r0, r1;
  };
  std::vector<Block> blocks;
  const int64_t block_rows = GemmBlockRows(k);
  for (size_t i = 0; i < outs.size(); ++i) {
    const int64_t n = rows_of(outs[i]);
    for (int64_t r = 0; r < n; r += block_rows)
      blocks.push_back({i, r, std::min(n, r + block_rows)});
  }
  ParallelFor(static_cast<int64_t>(blocks.size()), 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scratch;
    for (int64_t i = b; i < e; ++i) {
      const Block& bl = blocks[i];
      const MatMulOutput& o = outs[bl.out];
      if (o.quant) {
        QuantMatrixGemmBlock(x, m, *o.quant, o.bias, o.y, o.quant->rows, bl.r0, bl.r1, scratch);
        continue;
      }
      GemmBlock(x, m, k, *o.w, o.layout, o.bias, o.y, bl.r0, bl.r1, scratch);
    }
  });
  return absl::OkStatus();
}

absl::Status MatMul(const float* x, int64_t m, const Tensor& w, const float* bias, float* y) {
  return MatMul(x, m, w, WeightLayout::kRowMajor, bias, y);
}

absl::Status MatMul(const float* x, int64_t m, const Tensor& w, WeightLayout layout,
                    const float* bias, float* y) {
  if (w.rank() != 2) return CheckWeight(w, layout, 0);
  return MatMulGroup(x, m, w.dim(1), {MatMulOutput{&w, bias, y, nullptr, layout}});
}

}  // namespace retort::cpu
