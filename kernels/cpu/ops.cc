// Row-wise and element-wise kernels. Work below ~64K elements runs on the
// calling thread: a pool dispatch costs more than it saves there (decode).
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/thread_pool.h"
#include "kernels/cpu/row_ops.h"
#include "kernels/cpu/simd.h"

namespace retort::cpu {
namespace {

constexpr int64_t kParallelElements = 1 << 16;

// row_ops.h's ForRows at this file's threshold.
template <typename Fn>
void ForRows(int64_t rows, int64_t cols, const Fn& fn) {
  cpu::ForRows(rows, cols, kParallelElements, fn);
}

}  // namespace

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  ForRows(rows, dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float ss = simd::Dot(xr, xr, dim);
      // transformers: x * rsqrt(mean(x^2) + eps), then weight * that.
      float inv = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
      for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
  });
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  ForRows(n / 1024 + 1, 1024, [&](int64_t b, int64_t e) {
    int64_t i = b * 1024, end = std::min(n, e * 1024);
    const __m256 one = _mm256_set1_ps(1.f);
    for (; i + 8 <= end; i += 8) {
      __m256 g = _mm256_loadu_ps(gate + i);
      __m256 sig =
          _mm256_div_ps(one, _mm256_add_ps(one, simd::Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
    }
    for (; i < end; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
  });
}

void AppendKv(const float* k, const float* v, int64_t n, int64_t n_kv_heads, int64_t head_dim,
              int64_t start_pos, float* kc, float* vc, int64_t kv_head_stride) {
  const int64_t kvdim = n_kv_heads * head_dim;
  for (int64_t t = 0; t < n; ++t) {
    const float* kr = k + t * kvdim;
    const float* vr = v + t * kvdim;
    for (int64_t g = 0; g < n_kv_heads; ++g) {
      std::copy_n(kr + g * head_dim, head_dim,
                  kc + g * kv_head_stride + (start_pos + t) * head_dim);
      std::copy_n(vr + g * head_dim, head_dim,
                  vc + g * kv_head_stride + (start_pos + t) * head_dim);
    }
  }
}

void Add(const float* a, const float* b, int64_t n, float* out) {
  ForRows(n / 1024 + 1, 1024, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo * 1024, end = std::min(n, hi * 1024); i < end; ++i) out[i] = a[i] + b[i];
  });
}

void Softmax(float* x, int64_t rows, int64_t cols) {
  ForRows(rows, cols, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* xr = x + r * cols;
      float mx = -INFINITY;
      for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, xr[i]);
      if (mx == -INFINITY) {  // every entry masked: define as all zeros
        std::fill(xr, xr + cols, 0.f);
        continue;
      }
      float sum = 0.f;
      for (int64_t i = 0; i < cols; ++i) {
        xr[i] = std::exp(xr[i] - mx);
        sum += xr[i];
      }
      float inv = 1.f / sum;
      for (int64_t i = 0; i < cols; ++i) xr[i] *= inv;
    }
  });
}

absl::Status Embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out) {
  if (table.rank() != 2 || !IsSupportedWeightDType(table.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("Embedding: table must be a rank-2 F32/BF16/F16 or ggml block tensor, got ",
                     std::string(DTypeName(table.dtype())), " ", ShapeString(table.shape())));
  }
  const int64_t vocab = table.dim(0), dim = table.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::OutOfRangeError(absl::StrCat("token id ", ids[i], " at position ", i,
                                                " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  const size_t row_bytes = DTypeBytes(table.dtype(), dim);
  for (int64_t i = 0; i < n; ++i) {
    RowToF32(table.dtype(), static_cast<const char*>(table.raw()) + ids[i] * row_bytes,
             out + i * dim, dim);
  }
  return absl::OkStatus();
}

void RopeCosSin(const float* inv_freq, int64_t half, const int64_t* positions, int64_t n,
                float* cos_out, float* sin_out) {
  for (int64_t t = 0; t < n; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      // transformers forms the angle as an f32 product; cos/sin of that f32
      // value (evaluated in double, correctly rounded to f32 in practice).
      const float angle = pos * inv_freq[i];
      cos_out[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_out[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void ApplyRope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
               const float* cos, const float* sin) {
  RotateHalves</*kInverse=*/false>(x, n, n_heads, head_dim, row_stride, cos, sin,
                                   kParallelElements);
}

}  // namespace retort::cpu
