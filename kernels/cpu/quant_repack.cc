#include "kernels/cpu/quant_repack.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/ggml_blocks.h"
#include "kernels/cpu/kernel_path.h"
#include "kernels/cpu/quant_dot_kernels.h"

namespace retort::cpu {

using quant_internal::kQ8R8BlockBytes;
using quant_internal::kR8BlockBytes;
using quant_internal::kR8Rows;

namespace {
inline int Load4(const uint8_t* p) {
  int v;
  std::memcpy(&v, p, 4);
  return v;
}

// The kR8 layout of [n, k] blocks: for each group of kR8Rows rows and each
// block column, one block of `r8_block_bytes`: the rows' f16 scales (2 bytes
// each), then from byte 16 their quants, row r's 4-byte chunks at 16 + 4r
// with a stride of 32. place(q, at) writes block q's chunks from `at`.
template <typename Block, typename PlaceChunks>
void InterleaveR8(const void* src, int64_t n, int64_t k, int64_t r8_block_bytes, void* dst,
                  PlaceChunks place) {
  const int64_t nb = k / 32;
  const auto* in = static_cast<const Block*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t g = 0; g < n / kR8Rows; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = out + (g * nb + b) * r8_block_bytes;
      for (int r = 0; r < kR8Rows; ++r) {
        const Block& q = in[(g * kR8Rows + r) * nb + b];
        std::memcpy(blk + 2 * r, &q.d, 2);
        place(q, blk + 16 + 4 * r);
      }
    }
  }
}

// Calls fn(d, chunks, out) for each block of rows [r0, r0 + rows) of a kR8
// matrix of width k: d the block's scale, chunks its row's first 4-byte
// chunk (stride 32), out where its 32 floats go in dst (rows of k floats).
template <typename Fn>
inline void ForEachR8RowBlock(const void* w, int64_t k, int64_t r0, int64_t rows,
                              int64_t r8_block_bytes, float* dst, Fn fn) {
  const int64_t nb = k / 32;
  const auto* in = static_cast<const uint8_t*>(w);
  for (int64_t row = r0; row < r0 + rows; ++row, dst += k) {
    const int64_t g = row / kR8Rows, r = row % kR8Rows;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = in + (g * nb + b) * r8_block_bytes;
      uint16_t h;
      std::memcpy(&h, blk + 2 * r, 2);
      fn(_cvtsh_ss(h), blk + 16 + 4 * r, dst + 32 * b);
    }
  }
}
}  // namespace

bool CanRepackForCpu(const Tensor& w) {
  return w.rank() == 2 && w.dim(0) > 0 && w.dim(1) > 0 &&
         IsValidWeightLayout(w.dtype(), WeightLayout::kR8, w.dim(0), w.dim(1));
}

void RepackQ4_0ToR8(const void* src, int64_t n, int64_t k, void* dst) {
  InterleaveR8<ggml::BlockQ4_0>(src, n, k, kR8BlockBytes, dst,
                                [](const ggml::BlockQ4_0& q, uint8_t* at) {
                                  for (int t = 0; t < 4; ++t)
                                    std::memcpy(at + 32 * t, q.qs + 4 * t, 4);
                                });
}

PreparedWeight PrepareWeightForCpu(const Tensor& w) {
  if (EnvFlagSet("RETORT_NO_REPACK")) return {w};
  if (!CanRepackForCpu(w)) return {w};
  // Same dtype and bytes as `w`; only the arrangement (the layout) differs.
  Tensor out = Tensor::Zeros(w.dtype(), w.shape());
  if (w.dtype() == DType::kQ8_0) {
    RepackQ8_0ToR8(w.raw(), w.dim(0), w.dim(1), out.mutable_raw());
  } else {
    RepackQ4_0ToR8(w.raw(), w.dim(0), w.dim(1), out.mutable_raw());
  }
  return {std::move(out), WeightLayout::kR8};
}

void RepackQ8_0ToR8(const void* src, int64_t n, int64_t k, void* dst) {
  InterleaveR8<ggml::BlockQ8_0>(src, n, k, kQ8R8BlockBytes, dst,
                                [](const ggml::BlockQ8_0& q, uint8_t* at) {
                                  for (int t = 0; t < 8; ++t)
                                    for (int j = 0; j < 4; ++j)
                                      at[32 * t + j] = static_cast<uint8_t>(q.qs[4 * t + j]) ^ 0x80;
                                });
}

void DequantizeRowsQ8_0R8(const void* w, int64_t k, int64_t r0, int64_t rows, float* dst) {
  ForEachR8RowBlock(
      w, k, r0, rows, kQ8R8BlockBytes, dst, [](float d, const uint8_t* q, float* out) {
        const __m256 dv = _mm256_set1_ps(d);
        // The row's 32 bytes, in Q8_0 order, from the 8 chunks, back to signed.
        const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
        for (int half = 0; half < 2; ++half, q += 128) {
          const __m128i v = _mm_xor_si128(
              _mm_setr_epi32(Load4(q), Load4(q + 32), Load4(q + 64), Load4(q + 96)), flip);
          float* o = out + 16 * half;
          _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), dv));
          _mm256_storeu_ps(
              o + 8,
              _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))), dv));
        }
      });
}

void DequantizeRowsQ4_0R8(const void* w, int64_t k, int64_t r0, int64_t rows, float* dst) {
  ForEachR8RowBlock(w, k, r0, rows, kR8BlockBytes, dst, [](float d, const uint8_t* q, float* out) {
    // The row's 16 nibble bytes, in Q4_0 order, from the 4 chunks.
    const __m128i bytes = _mm_setr_epi32(Load4(q), Load4(q + 32), Load4(q + 64), Load4(q + 96));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(bytes, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
    const __m256 dv = _mm256_set1_ps(d);
    const __m256i eight = _mm256_set1_epi32(8);
    auto put = [&](__m128i v, float* o) {
      const __m256i i32 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), eight);
      _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(i32), dv));
    };
    put(lo, out);
    put(_mm_srli_si128(lo, 8), out + 8);
    put(hi, out + 16);
    put(_mm_srli_si128(hi, 8), out + 24);
  });
}

}  // namespace retort::cpu
