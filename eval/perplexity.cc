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

absl::StatusOr<PerplexityResult> ComputePerplexity(const std::vector<int32_t>& tokens,
                                                   int64_t vocab, const WindowLogitsFn& logits_fn,
                                                   const PerplexityOptions& options) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 tokens, the text has ", n));
  }
  if (options.context < 2) return absl::InvalidArgumentError("context must be at least 2 tokens");
  // Windows must overlap by at least one token, or the first token of each
  // window after the first would never be predicted.
  if (options.stride < 1 || options.stride >= options.context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stride must be in [1, context-1=", options.context - 1, "], got ", options.stride));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                     " is outside the vocabulary (", vocab, ")"));
    }
  }
  int64_t total_windows = 0;
  for (int64_t begin = 0;; begin += options.stride) {
    ++total_windows;
    if (std::min(begin + options.context, n) == n) break;
  }

  auto start = std::chrono::steady_clock::now();
  PerplexityResult result;
  std::vector<float> logits;
  double nll = 0;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += options.stride) {
    const int64_t end = std::min(begin + options.context, n);
    const int64_t len = end - begin;
    logits.resize(static_cast<size_t>(len * vocab));
    RETURN_IF_ERROR(logits_fn(tokens.data() + begin, len, logits.data()));
    for (int64_t t = std::max(prev_end, begin + 1); t < end; ++t) {
      nll += NegativeLogLikelihood(logits.data() + (t - 1 - begin) * vocab, vocab, tokens[t]);
      ++result.tokens_scored;
    }
    result.tokens_evaluated += len;
    ++result.windows;
    prev_end = end;
    if (options.progress) options.progress(result.windows, total_windows, result.tokens_scored);
    if (end == n) break;
  }
  result.mean_nll = nll / static_cast<double>(result.tokens_scored);
  result.perplexity = std::exp(result.mean_nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace retort
