// CPU kernels of the transformer forward pass.
//
// Every function works on raw row-major f32 buffers, except the weight
// operands of MatMul and Embedding, which are Tensors kept in their stored
// dtype (F32, BF16, F16 or a ggml block type such as Q8_0/Q4_K): they are
// converted on the fly, block by block, so a model is never expanded to a
// full f32 copy. All sums are
// accumulated in f32.
//
// Parallelism: the kernels split their work with core/thread_pool.h's
// ParallelFor. OpenBLAS is switched to one thread on first use (see
// MatMul), so the pool is the only source of threads. Like ParallelFor, the
// kernels must be called from one thread at a time.
#ifndef RETORT_KERNELS_CPU_OPS_H_
#define RETORT_KERNELS_CPU_OPS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/cpu/quant_matmul.h"         // WeightLayout
#include "kernels/cpu/quant_matrix_matmul.h"  // MatMul with a QuantizedMatrix

namespace retort::cpu {

// ----------------------------------------------------------------------------
// Matrix multiply with nn.Linear weights.

// True for the weight dtypes MatMul and Embedding read directly.
bool IsSupportedWeightDType(DType t);

// y[m, n] = x[m, k] · w[n, k]^T (+ bias[n]).
// `w` is rank 2 [n, k] in F32, BF16, F16 or a block type of
// IsQuantizedWeightDType (quant_matmul.h; k a whole number of blocks). Small
// m (decode) runs a GEMV that streams each weight row once in its stored
// dtype (block types: integer dots against the input quantized to 8 bits, as
// llama.cpp); larger m converts blocks of weight rows to an f32 scratch and
// multiplies them with Sgemm (sgemm.h).
// `bias` may be null. y must not overlap x. Error for any other dtype/rank.
absl::Status MatMul(const float* x, int64_t m, const Tensor& w, const float* bias, float* y);
// The same for `w` in the given layout (kR8: a Q4_0 / Q8_0 weight repacked
// by PrepareWeightForCpu, quant_repack.h). Error for a layout `w` cannot have.
absl::Status MatMul(const float* x, int64_t m, const Tensor& w, WeightLayout layout,
                    const float* bias, float* y);

// One output of MatMulGroup: y[m, w.dim(0)] = x · w^T (+ bias), `w` in
// `layout`, or, when `quant` is set, y[m, quant->rows] = x · quant^T
// (+ bias) and `w` is ignored (may be null): a QuantizedMatrix weight
// (quant_matrix_matmul.h).
struct MatMulOutput {
  const Tensor* w;
  const float* bias;  // may be null
  float* y;
  const QuantizedMatrix* quant = nullptr;
  WeightLayout layout = WeightLayout::kRowMajor;
};
// Several MatMuls sharing the input x[m, k] in one parallel pass (q/k/v, or
// gate/up), so a decode step pays one thread-pool dispatch, not three.
// Every weight must have k columns. Tensor and QuantizedMatrix outputs mix
// freely; with any QuantizedMatrix output the integer-dot GEMV of block types
// is used only up to kGemvMaxRows rows (the larger m take the GEMM path).
absl::Status MatMulGroup(const float* x, int64_t m, int64_t k,
                         const std::vector<MatMulOutput>& outs);

// Rows at or below this count take the GEMV path (exposed for tests/benchmarks).
inline constexpr int64_t kGemvMaxRows = 4;

// ----------------------------------------------------------------------------
// Element-wise and row-wise operations. Output may alias input unless noted.

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `dim`.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y);

// out = silu(gate) * up, n elements (the SwiGLU of Llama's MLP).
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

// out = a + b, n elements.
void Add(const float* a, const float* b, int64_t n, float* out);

// In-place softmax over each of `rows` rows of `cols` (max-subtracted).
void Softmax(float* x, int64_t rows, int64_t cols);

// out[i, :] = table[ids[i], :] converted to f32. table: [vocab, dim] in
// F32/BF16/F16 or a weight block type (rows dequantized). Error (naming the id) for an id outside
// [0, vocab).
absl::Status Embedding(const Tensor& table, const int32_t* ids, int64_t n, float* out);

// ----------------------------------------------------------------------------
// Rotary position embedding, Hugging Face "half-rotated" (NeoX) layout: the
// pair rotated by angle pos * inv_freq[i] is (x[i], x[i + head_dim/2]).
// (Meta's original checkpoints interleave pairs instead; HF checkpoints and
// GGUF files of qwen2/qwen3 use this layout, GGUF llama permutes to the other.)

// cos/sin tables [n, half] for the given positions, computed as transformers
// does: angle = float(pos) * inv_freq[i] in f32, then cos/sin of that.
void RopeCosSin(const float* inv_freq, int64_t half, const int64_t* positions, int64_t n,
                float* cos_out, float* sin_out);

// Rotates n rows of `n_heads` heads of `head_dim` each; row r starts at
// x + r * row_stride; head h at + h * head_dim. cos/sin: [n, head_dim / 2].
void ApplyRope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
               const float* cos, const float* sin);

// ----------------------------------------------------------------------------
// Causal multi-head attention with grouped KV heads over a KV cache.
struct AttentionShape {
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // REQUIRES: divides n_heads
  int64_t head_dim = 0;
};

// Writes n new positions of keys k[n, n_kv_heads * head_dim] (values v
// likewise) into a cache laid out as Attention reads it, at positions
// start_pos .. start_pos + n - 1: kv head h of position p at
// kc + h * kv_head_stride + p * head_dim.
void AppendKv(const float* k, const float* v, int64_t n, int64_t n_kv_heads, int64_t head_dim,
              int64_t start_pos, float* kc, float* vc, int64_t kv_head_stride);

// q: [n, n_heads * head_dim], the queries of positions start_pos .. start_pos+n-1.
// k, v: the cache; keys of kv head h, position p at k + h * kv_head_stride + p * head_dim
// (same for v), holding every position < start_pos + n.
// out: [n, n_heads * head_dim] (must not alias q).
// Query position i sees keys j <= i, and with window > 0 only i - j < window
// (Mistral's sliding window). Scores are scaled by `scale`. Runs blockwise with
// an online softmax, so memory does not grow with n * (start_pos + n).
void Attention(const float* q, int64_t n, int64_t start_pos, const float* k, const float* v,
               int64_t kv_head_stride, const AttentionShape& shape, float scale, int64_t window,
               float* out);

// ----------------------------------------------------------------------------
// Helpers shared by the kernels (exposed for tests).

// dst[i] = float(src[i]) for an F32/BF16/F16 source, vectorised.
void RowToF32(DType t, const void* src, float* dst, int64_t n);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_OPS_H_
