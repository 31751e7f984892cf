// CPU kernels of the optimizer: the AdamW update and the two halves of
// global gradient-norm clipping (the f64 sum of squares and the scaling).
// The CPU backend's Backend::AdamWStep, SumSquares and Scale.
//
// Each splits its range into fixed blocks of 2^15 elements over the thread
// pool, so results do not depend on the number of threads (the updates are
// elementwise; the sum of squares adds its per-block partial sums in block
// order). Like the other CPU kernels, call from one thread at a time.
#ifndef RETORT_KERNELS_CPU_OPTIMIZER_OPS_H_
#define RETORT_KERNELS_CPU_OPTIMIZER_OPS_H_

#include <cstdint>

#include "kernels/backend.h"

namespace retort::cpu {

// One AdamW update of params[n] from grads[n] with moments m[n], v[n], in
// torch's single-tensor order of operations (lerp for m):
//   p *= 1 - lr * weight_decay              (only when weight_decay != 0)
//   m  = m + (1 - beta1) * (g - m)
//   v  = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// with the bias corrections computed in f64 and rounded to f32 once.
void AdamWStep(float* params, const float* grads, float* m, float* v, int64_t n,
               const AdamWStepParams& p);

// sum(x[i]^2) in f64: per block of 2^15 elements four f64 lanes
// ((s0 + s1) + (s2 + s3)), then the block sums in order. 0 for n == 0.
double GradSumSquares(const float* x, int64_t n);

// x[i] *= s (f32 multiply).
void ScaleInPlace(float* x, int64_t n, float s);

}  // namespace retort::cpu

#endif  // RETORT_KERNELS_CPU_OPTIMIZER_OPS_H_
