// Statistics over verified samples: the unbiased pass@k estimator and the
// summary `retort generate` prints and writes after verifying.
//
// Thread safety: pure functions.
#ifndef RETORT_DISTILL_VERIFY_STATS_H_
#define RETORT_DISTILL_VERIFY_STATS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort {

// One prompt's verification counts: `n` samples, `correct` of them verified.
struct PromptStats {
  std::string id;
  int n = 0;
  int correct = 0;
};

// Unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language
// Models Trained on Code"): 1 - C(n-c, k) / C(n, k), computed as the stable
// product 1 - prod_{i=n-c+1..n} (1 - k/i). Equals 1 when n - c < k.
// Errors: k < 1, c < 0, c > n, or n < k (the estimator needs n >= k).
absl::StatusOr<double> PassAtK(int n, int c, int k);

// Summary of a generation run as JSON:
//   {"prompts": P, "samples": N, "correct": C,
//    "accuracy": C/N (mean over samples),
//    "prompt_accuracy": mean over prompts of c/n (prompts with n > 0),
//    "pass@k": {"1": ..., "4": ...}   mean over prompts with n >= k,
//    "pass@k_prompts": {"1": P1, "4": P4}  how many prompts each mean is over,
//    "per_prompt": [{"id", "n", "correct", "accuracy"}, ...]}
// A pass@k with no eligible prompt is null. k = 1 is always included.
// Errors: a k < 1, or a prompt with n < 0 or correct outside [0, n].
absl::StatusOr<nlohmann::ordered_json> SummarizeVerification(
    const std::vector<PromptStats>& prompts, const std::vector<int>& ks);

// A short human-readable rendering of SummarizeVerification's JSON: totals,
// one line per pass@k, then up to `max_prompt_rows` per-prompt rows (the
// worst prompts first, the rest counted).
std::string FormatVerificationSummary(const nlohmann::ordered_json& summary,
                                      int max_prompt_rows = 20);

}  // namespace retort

#endif  // RETORT_DISTILL_VERIFY_STATS_H_
