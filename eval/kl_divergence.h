// KL divergence of a model against a reference model over a token stream, and
// the statistics llama.cpp's perplexity tool prints with --kl-divergence
// (PPL of both, their ratio, KLD percentiles, top-1 agreement, Δp).
//
// Both models are seen only through functions that compute logits for a fresh
// window (the WindowLogitsFn of perplexity.h), and they run in lockstep: for
// each window the model's and the reference's logits [len, vocab] are
// computed, every scored position is compared (full softmax of both, in f64),
// and only a few numbers per position are kept. So memory is two windows of
// logits, never two [n, vocab] matrices for the whole text.
//
// Which positions are scored:
//   kStrided  — exactly the targets ComputePerplexity scores (windows of
//               `context` tokens every `stride` tokens, each target scored
//               once, the first window from its second token): PPL(Q) here
//               equals ComputePerplexity's perplexity of the model.
//   kLlamaCpp — llama-perplexity's chunks: non-overlapping windows of
//               `context` tokens (a trailing partial window is dropped), the
//               first token of every window replaced by BOS when bos_id >= 0,
//               and only targets context/2+1 .. context-1 of each window
//               scored (context-1-context/2 per window), so every prediction
//               has at least context/2 tokens of left context.
//
// Statistics (SummarizeComparisons) follow llama.cpp's definitions:
//   KLD(position) = sum_v p_ref(v) (log p_ref(v) - log p(v)) — KL(ref || model).
//   Δp = p(target) - p_ref(target) for the actual next token.
//   same top = argmax of both logits agree (first index on ties).
//   uncertainty of a mean = standard error sqrt(var / (n-1)) with var the
//     population variance; of PPL = PPL * SE(mean NLL); of ln(PPL(Q)/PPL(base))
//     = SE of the per-token difference NLL(Q) - NLL(base) (equal to llama.cpp's
//     sqrt(var_Q + var_base - 2 cov)); of RMS Δp = SE(Δp²) / (2 RMS);
//     of same top = sqrt(f (1-f) / (n-1)).
//   percentiles: the sorted values, linearly interpolated at fraction*(n-1)
//     (numpy.percentile's default "linear" method, the one llama.cpp uses;
//     the median is the mean of the two middle values for even n).
// Unlike llama.cpp, the reference log-probs are exact (llama.cpp stores them
// quantized to 16 bits and drops terms with log p_ref <= -16 from the KLD sum),
// so the two agree to about 1e-4 relative, not bit for bit.
#ifndef RETORT_EVAL_KL_DIVERGENCE_H_
#define RETORT_EVAL_KL_DIVERGENCE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/perplexity.h"

namespace retort {

enum class WindowScheme { kStrided, kLlamaCpp };

struct KlDivergenceOptions {
  int64_t context = 1024;  // window length in tokens
  int64_t stride = 512;    // kStrided: step between window starts, 0 < stride < context
  WindowScheme scheme = WindowScheme::kStrided;
  int32_t bos_id = -1;  // kLlamaCpp: first token of each window becomes this (-1: unchanged)
  bool keep_positions = false;  // fill KlDivergenceResult::positions
  // Called after each window with (windows done, windows in all, tokens scored so far).
  std::function<void(int64_t, int64_t, int64_t)> progress;
};

// The windows `options` gives for a stream of n tokens (kStrided:
// PlanStridedWindows, eval/perplexity.h); errors on a bad
// context/stride or too few tokens (kLlamaCpp needs at least one full window).
absl::StatusOr<std::vector<ScoredWindow>> PlanWindows(int64_t n,
                                                      const KlDivergenceOptions& options);

// What one scored position contributes.
struct TokenComparison {
  double nll = 0;      // -log p(target), model
  double nll_ref = 0;  // -log p_ref(target)
  double kld = 0;      // KL(ref || model) over the whole vocabulary
  double p_diff = 0;   // p(target) - p_ref(target)
  bool same_top = false;
};

// Compares the distributions softmax(logits) and softmax(ref_logits) (f64).
TokenComparison CompareDistributions(const float* logits, const float* ref_logits, int64_t vocab,
                                     int32_t target);

struct Estimate {
  double value = 0;
  double uncertainty = 0;  // one standard error
};

// Order statistics of a set of values (see the header comment for the method).
struct Quantiles {
  double min = 0, p0_1 = 0, p1 = 0, p5 = 0, p10 = 0, p25 = 0, median = 0;
  double p75 = 0, p90 = 0, p95 = 0, p99 = 0, p99_9 = 0, max = 0;
};

// The value at `fraction` in [0, 1] of ascending `sorted` values, linearly
// interpolated between neighbours. REQUIRES: !sorted.empty().
double Percentile(const std::vector<double>& sorted, double fraction);
Quantiles ComputeQuantiles(std::vector<double> values);

struct KlDivergenceStats {
  int64_t count = 0;              // positions compared
  Estimate ppl;                   // PPL(Q), the model
  Estimate ppl_ref;               // PPL(base), the reference
  double ln_ppl_correlation = 0;  // Cor(NLL(Q), NLL(base)) over positions
  Estimate ln_ppl_ratio;          // mean ln(PPL(Q)/PPL(base))
  Estimate ppl_ratio;             // PPL(Q)/PPL(base)
  Estimate ppl_diff;              // PPL(Q)-PPL(base)
  Estimate kld;                   // mean KLD
  Quantiles kld_quantiles;
  Estimate p_diff;  // mean Δp (probability, not %)
  Quantiles p_diff_quantiles;
  Estimate rms_p_diff;  // sqrt(mean Δp²)
  Estimate same_top;    // fraction of positions whose argmaxes agree
};

// REQUIRES nothing; an empty input is an error.
absl::StatusOr<KlDivergenceStats> SummarizeComparisons(
    const std::vector<TokenComparison>& positions);

struct KlDivergenceResult {
  KlDivergenceStats stats;
  int64_t windows = 0;
  int64_t tokens_evaluated = 0;  // tokens through each model (windows may overlap)
  double seconds = 0;
  std::vector<TokenComparison> positions;  // in stream order, when keep_positions
};

// Runs `logits_fn` (the model, Q) and `ref_logits_fn` (the reference, base) on
// the same windows of `tokens` and compares every scored position. The two
// vocabularies must be the same size; token ids must be inside it.
absl::StatusOr<KlDivergenceResult> ComputeKlDivergence(
    const std::vector<int32_t>& tokens, int64_t vocab, const WindowLogitsFn& logits_fn,
    int64_t ref_vocab, const WindowLogitsFn& ref_logits_fn, const KlDivergenceOptions& options);

}  // namespace retort

#endif  // RETORT_EVAL_KL_DIVERGENCE_H_
