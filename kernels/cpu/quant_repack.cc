#include "kernels/cpu/quant_repack.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "core/ggml_blocks.h"
#include "kernels/cpu/quant_dot_kernels.h"

namespace retort::cpu {

using quant_internal::kR8BlockBytes;
using quant_internal::kR8Rows;

bool CanRepackForCpu(const Tensor& w) {
  return w.rank() == 2 && w.dtype() == DType::kQ4_0 && w.dim(0) % kR8Rows == 0 &&
         w.dim(1) % 32 == 0 && w.dim(0) > 0 && w.dim(1) > 0;
}

void RepackQ4_0ToR8(const void* src, int64_t n, int64_t k, void* dst) {
  const int64_t nb = k / 32;
  const auto* in = static_cast<const ggml::BlockQ4_0*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t g = 0; g < n / kR8Rows; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = out + (g * nb + b) * kR8BlockBytes;
      for (int r = 0; r < kR8Rows; ++r) {
        const ggml::BlockQ4_0& q = in[(g * kR8Rows + r) * nb + b];
        std::memcpy(blk + 2 * r, &q.d, 2);
        for (int t = 0; t < 4; ++t) std::memcpy(blk + 16 + 32 * t + 4 * r, q.qs + 4 * t, 4);
      }
    }
  }
}

Tensor PrepareWeightForCpu(const Tensor& w) {
  const char* off = std::getenv("RETORT_NO_REPACK");
  if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return w;
  if (!CanRepackForCpu(w)) return w;
  Tensor out = Tensor::Zeros(DType::kQ4_0_R8, w.shape());
  RepackQ4_0ToR8(w.raw(), w.dim(0), w.dim(1), out.mutable_raw());
  return out;
}

void DequantizeRowsQ4_0R8(const void* w, int64_t k, int64_t r0, int64_t rows, float* dst) {
  const int64_t nb = k / 32;
  const auto* in = static_cast<const uint8_t*>(w);
  for (int64_t row = r0; row < r0 + rows; ++row, dst += k) {
    const int64_t g = row / kR8Rows, r = row % kR8Rows;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = in + (g * nb + b) * kR8BlockBytes;
      uint16_t h;
      std::memcpy(&h, blk + 2 * r, 2);
      const float d = _cvtsh_ss(h);
      float* o = dst + 32 * b;
      for (int t = 0; t < 4; ++t) {
        const uint8_t* q = blk + 16 + 32 * t + 4 * r;
        for (int i = 0; i < 4; ++i) {
          o[4 * t + i] = static_cast<float>((q[i] & 0x0f) - 8) * d;
          o[16 + 4 * t + i] = static_cast<float>((q[i] >> 4) - 8) * d;
        }
      }
    }
  }
}

}  // namespace retort::cpu
