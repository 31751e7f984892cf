// The fused LM-head loss: its options, teacher signals and results. The op
// itself is Backend::LmHeadLoss (kernels/backend.h); the CPU implementation
// is kernels/cpu/lm_head_loss.cc. distill/loss.h's ComputeLoss calls it on
// the default backend.
//
// What it computes — student training losses over the LM head: cross-entropy on next-token
// labels plus knowledge distillation (KD) from a teacher, fused with the LM
// head product so that the [n, vocab] logits of a whole sequence never exist.
//
// ComputeLoss takes the student's final-normed hidden states h[n, d] and its
// LM head W[vocab, d]. It walks the unmasked positions in chunks of up to
// `row_chunk` rows (fewer when their logits would pass
// `max_chunk_logits_bytes`): logits = h_chunk · W^T (cpu::Sgemm over fixed blocks of
// the vocabulary, split over the thread pool), one pass per row for the
// softmax statistics, the loss and d(loss)/d(logits) written over the logits,
// then dh = dlogits · W and dW += dlogits^T · h_chunk. Scratch memory is
// O(row_chunk * vocab) (LossScratchBytes says exactly how much), whatever n is.
//
// Conventions (all sums run over unmasked positions only):
//  * targets[i] is the label of the token after position i; -1 masks the
//    position (prompt, padding, document end): it adds nothing to any sum and
//    its dh row is zero. KD applies to the same positions as CE.
//  * CE is always at temperature 1: ce_i = logsumexp(z_i) - z_i[targets[i]].
//  * KD compares the teacher's softmax(z_t / T) with the student's
//    softmax(z_s / T) and is multiplied by T^2 (Hinton et al.), so gradient
//    magnitudes stay comparable across temperatures. kd_sum includes T^2.
//  * loss_sum = ce_weight * ce_sum + kd_weight * kd_sum. ce_sum is reported
//    even when ce_weight is 0; KD is computed only when kd_weight > 0.
//  * Gradients: dh = grad_scale * d(loss_sum)/dh (overwritten, all n rows);
//    dw += grad_scale * d(loss_sum)/dW. The trainer passes
//    grad_scale = 1 / (tokens over all micro-batches) so gradients come out
//    averaged. dh and dw may each be null (no backward for that one).
//
// Divergences, for teacher distribution q and student distribution p:
//  * kForwardKl: KL(q || p) = sum q (log q - log p)   (mode covering).
//  * kReverseKl: KL(p || q)                           (mode seeking).
//  * kJsd: the generalized Jensen-Shannon divergence of TRL's GKD trainer,
//    with m = beta * q + (1 - beta) * p:
//        JSD_beta = beta * KL(q || m) + (1 - beta) * KL(p || m).
//    As in TRL, beta == 0 is computed as forward KL and beta == 1 as reverse
//    KL. (The mixture formula itself tends to 0 at both ends; it is
//    JSD_beta / beta that tends to KL(q || p) as beta -> 0 and
//    JSD_beta / (1 - beta) that tends to KL(p || q) as beta -> 1.)
//  * kSampledReverseKl: on-policy distillation's per-token estimator of
//    KL(p || q) (Thinking Machines, "On-Policy Distillation", 2025): the
//    targets are tokens the student itself sampled, and each row's value is
//        k_i = log p(y_i) - log q(y_i)
//    (kd_sum is their sum: an unbiased estimate of the reverse KL of the
//    sampled sequences). Its gradient is the policy gradient with k_i as a
//    detached per-token cost, i.e. of the surrogate  sum_i sg(k_i) log p(y_i):
//        d/dz_i = kd_weight * k_i * (onehot(y_i) - softmax(z_i)).
//    Needs temperature 1 and a teacher that gives log q(y_i): dense (the
//    teacher's log_softmax at y_i) or token log-probs (below).
//
// Teacher signals (TeacherSignal):
//  * none: CE only (kd_weight must be 0).
//  * dense (online teacher): the teacher's final hidden states th[n, td] and
//    its LM head TW[vocab, td]; teacher logits are computed chunk-wise like
//    the student's. The teacher's vocabulary must equal the student's.
//  * top-k (offline teacher): per position k token ids and their natural-log
//    probabilities under the teacher's temperature-1 distribution, as stored
//    by generation. An id of -1 marks an empty slot. The rest of the
//    vocabulary (the "tail") carries teacher mass 1 - sum(exp(logprobs)),
//    handled by LossOptions::topk_tail:
//      - kTailBucket: the divergence runs over K+1 buckets, the K ids and one
//        tail bucket. The student's tail bucket is the sum of its
//        probabilities on every other id (summed directly, not 1 - sum, so
//        small tails stay accurate). At T != 1 the teacher's tail is assumed
//        spread uniformly over the other vocab - K ids before tempering
//        (exact at T == 1: tempering a bucket needs its members' values,
//        which the stored top-k does not have).
//      - kRenormalize: teacher and student are both renormalised over the
//        K ids (student: softmax of its logits on those ids / T); the tail is
//        ignored and gets no KD gradient.
//    Teacher probabilities are floored at 1e-38 wherever their log is taken
//    (reverse KL against a zero tail bucket would otherwise be infinite).
//  * token log-probs (a teacher that scored the sampled tokens only, e.g. an
//    endpoint's prompt_logprobs): logprobs[i] = log q(targets[i]), natural
//    log, temperature 1; only kSampledReverseKl uses it.
//
// Numerics: max-subtracted exponentials in f32, sums over the vocabulary in
// f64, per-row results reduced in row order. Results do not depend on the
// thread count (every GEMM block and every row has a fixed extent); a
// different chunk size (row_chunk, max_chunk_logits_bytes) changes them only
// by rounding.
//
// Thread-safety: uses the process-wide thread pool; call from one thread at
// a time (like the CPU kernels).
#ifndef RETORT_KERNELS_LM_HEAD_LOSS_H_
#define RETORT_KERNELS_LM_HEAD_LOSS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace retort {

enum class KdDivergence { kForwardKl, kReverseKl, kJsd, kSampledReverseKl };

// "forward_kl" | "reverse_kl" | "jsd" | "sampled_reverse_kl".
absl::StatusOr<KdDivergence> ParseKdDivergence(const std::string& name);
const char* KdDivergenceName(KdDivergence d);

// How the offline top-k teacher's missing mass is treated (see above).
enum class TopKTail { kTailBucket, kRenormalize };

struct LossOptions {
  float ce_weight = 1.f;
  float kd_weight = 0.f;
  KdDivergence divergence = KdDivergence::kForwardKl;
  float jsd_beta = 0.5f;  // weight of the teacher in the JSD mixture, [0, 1]
  float temperature = 1.f;
  TopKTail topk_tail = TopKTail::kTailBucket;
  // Unmasked rows per chunk, at most: the scratch is ~rows * vocab floats
  // (twice that with a dense teacher). Larger chunks make the passes over the
  // whole [vocab, d] LM head and its gradient (packing W for two GEMMs, the dW
  // update) cheaper relative to the GEMMs: measured on one core, vocab 32000,
  // d 768, 1020 rows: 84 GFLOP/s at 64 rows, 94 at 128, 100 at 256.
  int64_t row_chunk = 256;
  // Chunks also stop at the row whose logits would pass this many bytes (the
  // student's plus the dense teacher's), so a large vocabulary keeps the
  // scratch bounded: 256 rows at vocab 32000, 55 at 150000. 0: no cap.
  int64_t max_chunk_logits_bytes = int64_t{32} << 20;
};

// What the teacher provides for each position; pointers are borrowed.
struct TeacherSignal {
  enum class Kind { kNone, kDense, kTopK, kTokenLogprobs };
  Kind kind = Kind::kNone;

  // kDense: hidden[n, dim], head[vocab, dim], row-major f32.
  const float* hidden = nullptr;
  int64_t dim = 0;
  const float* head = nullptr;
  int64_t vocab = 0;

  // kTopK: ids[n, k] (-1 = empty slot) and logprobs[n, k] (natural log,
  // teacher at temperature 1).
  const int32_t* topk_ids = nullptr;
  const float* topk_logprobs = nullptr;
  int64_t k = 0;

  // kTokenLogprobs: token_logprobs[n], log q(targets[i]) (masked rows unread).
  const float* token_logprobs = nullptr;

  static TeacherSignal None() { return TeacherSignal(); }
  static TeacherSignal Dense(const float* hidden, int64_t dim, const float* head, int64_t vocab) {
    TeacherSignal t;
    t.kind = Kind::kDense;
    t.hidden = hidden;
    t.dim = dim;
    t.head = head;
    t.vocab = vocab;
    return t;
  }
  static TeacherSignal TopK(const int32_t* ids, const float* logprobs, int64_t k) {
    TeacherSignal t;
    t.kind = Kind::kTopK;
    t.topk_ids = ids;
    t.topk_logprobs = logprobs;
    t.k = k;
    return t;
  }
  static TeacherSignal TokenLogprobs(const float* logprobs) {
    TeacherSignal t;
    t.kind = Kind::kTokenLogprobs;
    t.token_logprobs = logprobs;
    return t;
  }
};

// Sums over unmasked positions; kd_sum includes the T^2 factor.
struct LossResult {
  double loss_sum = 0;
  double ce_sum = 0;
  double kd_sum = 0;
  int64_t tokens = 0;
};

// Bytes of scratch LmHeadLoss allocates on the CPU for these sizes (its only
// allocations besides the GEMM packing buffers): the gathered hidden rows,
// the logits chunk(s), dh of a chunk and per-row sums.
int64_t LossScratchBytes(int64_t n, int64_t d, int64_t vocab, const int32_t* targets,
                         const TeacherSignal& teacher, const LossOptions& options);

}  // namespace retort

#endif  // RETORT_KERNELS_LM_HEAD_LOSS_H_
