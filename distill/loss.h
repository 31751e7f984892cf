// Student training losses over the LM head: cross-entropy on next-token
// labels plus knowledge distillation (KD) from a teacher, fused with the LM
// head product so that the [n, vocab] logits of a whole sequence never exist.
//
// The op is Backend::LmHeadLoss; its options (LossOptions), teacher signals
// (TeacherSignal), results (LossResult), conventions and numerics are
// described in kernels/lm_head_loss.h. ComputeLoss runs it on the default
// backend (kernels/backend.h: DefaultBackend()).
#ifndef RETORT_DISTILL_LOSS_H_
#define RETORT_DISTILL_LOSS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/lm_head_loss.h"

namespace retort {

// Loss and gradients of the LM head; see kernels/lm_head_loss.h.
// h[n, d], w[vocab, d], targets[n]; dh[n, d] overwritten (may be null);
// dw[vocab, d] accumulated (may be null: LM head frozen).
// Errors (InvalidArgument, nothing written): a target outside [-1, vocab),
// teacher vocabulary != vocab, a top-k id outside [-1, vocab) or repeated at
// an unmasked position, top-k probabilities summing above 1.02 (shards store them quantized, so
// slightly above 1 is accepted and the tail clamped at 0), bad options.
absl::StatusOr<LossResult> ComputeLoss(const float* h, int64_t n, int64_t d, const float* w,
                                       int64_t vocab, const int32_t* targets,
                                       const TeacherSignal& teacher, const LossOptions& options,
                                       float grad_scale, float* dh, float* dw);

}  // namespace retort

#endif  // RETORT_DISTILL_LOSS_H_
