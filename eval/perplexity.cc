#include "eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace retort {

double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t target) {
  float max = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return std::log(sum) + max - static_cast<double>(logits[target]);
}

absl::StatusOr<std::vector<ScoredWindow>> PlanStridedWindows(int64_t n, int64_t context,
                                                             int64_t stride, const char* what) {
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " needs at least 2 tokens, the text has ", n));
  }
  if (context < 2) return absl::InvalidArgumentError("context must be at least 2 tokens");
  // Windows must overlap by at least one token, or the first token of each
  // window after the first would never be predicted.
  if (stride < 1 || stride >= context) {
    return absl::InvalidArgumentError(
        absl::StrCat("stride must be in [1, context-1=", context - 1, "], got ", stride));
  }
  std::vector<ScoredWindow> plan;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + context, n);
    plan.push_back({begin, end - begin, std::max(prev_end, begin + 1)});
    prev_end = end;
    if (end == n) break;
  }
  return plan;
}

absl::StatusOr<PerplexityResult> ComputePerplexity(const std::vector<int32_t>& tokens,
                                                   int64_t vocab, const WindowLogitsFn& logits_fn,
                                                   const PerplexityOptions& options) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  ASSIGN_OR_RETURN(std::vector<ScoredWindow> plan,
                   PlanStridedWindows(n, options.context, options.stride, "perplexity"));
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                     " is outside the vocabulary (", vocab, ")"));
    }
  }
  const int64_t total_windows = static_cast<int64_t>(plan.size());

  auto start = std::chrono::steady_clock::now();
  PerplexityResult result;
  std::vector<float> logits;
  double nll = 0;
  for (const ScoredWindow& w : plan) {
    logits.resize(static_cast<size_t>(w.length * vocab));
    RETURN_IF_ERROR(logits_fn(tokens.data() + w.begin, w.length, logits.data()));
    for (int64_t t = w.first_target; t < w.begin + w.length; ++t) {
      nll += NegativeLogLikelihood(logits.data() + (t - 1 - w.begin) * vocab, vocab, tokens[t]);
      ++result.tokens_scored;
    }
    result.tokens_evaluated += w.length;
    ++result.windows;
    if (options.progress) options.progress(result.windows, total_windows, result.tokens_scored);
  }
  result.mean_nll = nll / static_cast<double>(result.tokens_scored);
  result.perplexity = std::exp(result.mean_nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace retort
