// CPU kernels of training: the forward ops that keep what their backward
// needs, and the backward of every op of the Llama-family decoder.
//
// The llm.c way: no autograd. model/ calls each op's forward while keeping
// its inputs (activations), then the backward ops in reverse order. All
// buffers are row-major f32. Gradient outputs named d<param> ACCUMULATE
// (+=) so micro-batches sum into one gradient; gradients of activations
// (dx) are OVERWRITTEN unless said otherwise. Sums are accumulated in f32
// (row reductions) and GEMMs go through Sgemm (sgemm.h, one thread each,
// split over rows/columns by ParallelFor like the inference kernels).
//
// Like the inference kernels, these must be called from one thread at a time.
//
// Determinism: every result is bit-identical for any number of pool threads
// (work is cut into pieces fixed by the shapes, each output element written
// by one piece with its sums in a fixed order), so a training run repeats
// exactly on another thread count of the same machine and BLAS.
// Outputs must not overlap inputs unless a function says otherwise.
#ifndef RETORT_KERNELS_CPU_TRAIN_OPS_H_
#define RETORT_KERNELS_CPU_TRAIN_OPS_H_

#include <cstdint>

#include "kernels/cpu/ops.h"

namespace retort::cpu {

// ----------------------------------------------------------------------------
// Linear layer with f32 weights w[n, k] (nn.Linear layout).

// y[m, n] = x[m, k] · w^T (+ bias[n]); bias may be null.
void LinearForward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                   const float* bias, float* y);

// Given dy[m, n]:
//   dx[m, k]  = dy · w           (overwritten; dx may be null to skip;
//                                  with accumulate_dx it is added instead)
//   dw[n, k] += dy^T · x          (dw may be null to skip)
//   dbias[n] += sum over rows dy  (may be null)
// m == 0 leaves dw and dbias unchanged.
void LinearBackward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                    const float* dy, float* dx, float* dw, float* dbias,
                    bool accumulate_dx = false);

// ----------------------------------------------------------------------------
// RMSNorm: y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).

// Like RmsNorm, and stores rstd[rows] for the backward.
void RmsNormForward(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                    float* y, float* rstd);

// y = x * rstd[row] * weight: the output of an RMSNorm whose rstd the forward
// kept, recomputed instead of stored (the backward's use).
void RmsNormApply(const float* x, const float* rstd, int64_t rows, int64_t dim, const float* weight,
                  float* y);

// dx[rows, dim] (overwritten, or added with accumulate_dx), dweight[dim] +=.
// `rstd` from RmsNormForward. dweight may be null. dx may be dy itself
// (in place) when accumulate_dx is false.
void RmsNormBackward(const float* x, const float* rstd, int64_t rows, int64_t dim,
                     const float* weight, const float* dy, float* dx, float* dweight,
                     bool accumulate_dx = false);

// ----------------------------------------------------------------------------
// SwiGLU: out = silu(gate) * up.
// dgate, dup overwritten from dout (all n elements).
void SiluMulBackward(const float* gate, const float* up, const float* dout, int64_t n, float* dgate,
                     float* dup);

// ----------------------------------------------------------------------------
// RoPE backward: the rotation is orthogonal, so the gradient is the inverse
// rotation (angle -> -angle) applied in place to dx, same layout as ApplyRope.
void ApplyRopeBackward(float* dx, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                       const float* cos, const float* sin);

// ----------------------------------------------------------------------------
// Embedding backward: dtable[ids[i], :] += dout[i, :] (f32 table gradient
// [vocab, dim]). Deterministic (same order of additions for any thread count).
// REQUIRES: every ids[i] in [0, vocab) (not checked: Embedding checked them
// in the forward).
void EmbeddingBackward(const int32_t* ids, int64_t n, int64_t dim, const float* dout,
                       float* dtable);

// ----------------------------------------------------------------------------
// Causal self-attention over a packed sequence of n tokens with document
// masking, GQA, and an optional sliding window.
//
// q: [n, n_heads * head_dim]; k, v: [n, n_kv_heads * head_dim] (RoPE already
// applied to q and k). doc_start[i]: index of the first token of the document
// that token i belongs to (tokens of one document are contiguous), so query i
// sees keys j with doc_start[i] <= j <= i and, with window > 0, i - j < window.
// out: [n, n_heads * head_dim]; lse: [n_heads, n], the log-sum-exp of the
// scaled scores of each query row (kept for the backward).
// REQUIRES: doc_start[i] <= i, non-decreasing; n_kv_heads divides n_heads.
// Computed blockwise (flash-attention style): memory independent of n^2.
void AttentionForward(const float* q, const float* k, const float* v, const int32_t* doc_start,
                      int64_t n, const AttentionShape& shape, float scale, int64_t window,
                      float* out, float* lse);

// Given dout [n, n_heads * head_dim] and the forward's out and lse:
// dq [n, n_heads * head_dim], dk, dv [n, n_kv_heads * head_dim], overwritten.
// Recomputes the probabilities from q, k and lse (no n^2 storage): O(n)
// extra memory. dK/dV come from a pass over (kv head, key block) tiles and dQ
// from a pass over (head, query block) tiles, so no two threads ever add into
// the same rows.
void AttentionBackward(const float* q, const float* k, const float* v, const int32_t* doc_start,
                       int64_t n, const AttentionShape& shape, float scale, int64_t window,
                       const float* out, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv);

// ----------------------------------------------------------------------------
// Reductions for the optimizer.

// sum(x[i]^2) in f64 (for the global gradient norm).
double SumSquares(const float* x, int64_t n);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_TRAIN_OPS_H_
