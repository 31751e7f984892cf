#include "eval/kl_divergence.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace retort {
namespace {

// Mean and its standard error, two-pass in f64.
Estimate MeanAndStandardError(const std::vector<double>& v) {
  Estimate e;
  const double n = static_cast<double>(v.size());
  if (v.empty()) return e;
  double sum = 0;
  for (double x : v) sum += x;
  e.value = sum / n;
  if (v.size() < 2) return e;
  double ss = 0;
  for (double x : v) ss += (x - e.value) * (x - e.value);
  e.uncertainty = std::sqrt(ss / n / (n - 1));
  return e;
}

// Covariance of the two means' estimators: population covariance / (n-1).
double CovarianceOfMeans(const std::vector<double>& a, double mean_a, const std::vector<double>& b,
                         double mean_b) {
  const double n = static_cast<double>(a.size());
  if (a.size() < 2) return 0;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - mean_a) * (b[i] - mean_b);
  return s / n / (n - 1);
}

// Log-sum-exp of logits[0..vocab) in f64, and the first index of the maximum.
double LogSumExp(const float* logits, int64_t vocab, int64_t* argmax) {
  float max = logits[0];
  int64_t imax = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > max) {
      max = logits[i];
      imax = i;
    }
  }
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  *argmax = imax;
  return std::log(sum) + max;
}

}  // namespace

absl::StatusOr<std::vector<ScoredWindow>> PlanWindows(int64_t n,
                                                      const KlDivergenceOptions& options) {
  if (options.scheme == WindowScheme::kStrided) {
    // Same walk as ComputePerplexity: each target once, from the first window
    // that contains it with a predecessor.
    return PlanStridedWindows(n, options.context, options.stride, "KL divergence");
  }
  // llama-perplexity's chunks: logits of window positions context/2 ..
  // context-2 predict the tokens one later.
  if (options.context < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama.cpp windows need a context of at least 3 tokens, got ", options.context));
  }
  const int64_t windows = n / options.context;
  if (windows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama.cpp windows need at least one full window of ", options.context,
                     " tokens, the text has ", n));
  }
  std::vector<ScoredWindow> plan;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * options.context;
    plan.push_back({begin, options.context, begin + options.context / 2 + 1});
  }
  return plan;
}

TokenComparison CompareDistributions(const float* logits, const float* ref_logits, int64_t vocab,
                                     int32_t target) {
  int64_t top = 0, ref_top = 0;
  const double lse = LogSumExp(logits, vocab, &top);
  const double ref_lse = LogSumExp(ref_logits, vocab, &ref_top);
  double kld = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double ref_logp = static_cast<double>(ref_logits[i]) - ref_lse;
    const double logp = static_cast<double>(logits[i]) - lse;
    kld += std::exp(ref_logp) * (ref_logp - logp);
  }
  TokenComparison c;
  c.nll = lse - static_cast<double>(logits[target]);
  c.nll_ref = ref_lse - static_cast<double>(ref_logits[target]);
  c.kld = kld;
  c.p_diff = std::exp(-c.nll) - std::exp(-c.nll_ref);
  c.same_top = top == ref_top;
  return c;
}

double Percentile(const std::vector<double>& sorted, double fraction) {
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  const double pos = fraction * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  const size_t j = std::min(i + 1, sorted.size() - 1);
  return (1 - frac) * sorted[i] + frac * sorted[j];
}

Quantiles ComputeQuantiles(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  Quantiles q;
  q.min = values.front();
  q.p0_1 = Percentile(values, 0.001);
  q.p1 = Percentile(values, 0.01);
  q.p5 = Percentile(values, 0.05);
  q.p10 = Percentile(values, 0.10);
  q.p25 = Percentile(values, 0.25);
  q.median = Percentile(values, 0.5);
  q.p75 = Percentile(values, 0.75);
  q.p90 = Percentile(values, 0.90);
  q.p95 = Percentile(values, 0.95);
  q.p99 = Percentile(values, 0.99);
  q.p99_9 = Percentile(values, 0.999);
  q.max = values.back();
  return q;
}

absl::StatusOr<KlDivergenceStats> SummarizeComparisons(
    const std::vector<TokenComparison>& positions) {
  if (positions.empty()) return absl::InvalidArgumentError("no positions to summarize");
  const size_t n = positions.size();
  std::vector<double> nll(n), nll_ref(n), ln_ratio(n), kld(n), p_diff(n), p_diff2(n);
  int64_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    const TokenComparison& c = positions[i];
    nll[i] = c.nll;
    nll_ref[i] = c.nll_ref;
    ln_ratio[i] = c.nll - c.nll_ref;
    kld[i] = c.kld;
    p_diff[i] = c.p_diff;
    p_diff2[i] = c.p_diff * c.p_diff;
    same += c.same_top ? 1 : 0;
  }
  KlDivergenceStats s;
  s.count = static_cast<int64_t>(n);

  const Estimate log_ppl = MeanAndStandardError(nll);
  const Estimate log_ppl_ref = MeanAndStandardError(nll_ref);
  s.ppl = {std::exp(log_ppl.value), std::exp(log_ppl.value) * log_ppl.uncertainty};
  s.ppl_ref = {std::exp(log_ppl_ref.value), std::exp(log_ppl_ref.value) * log_ppl_ref.uncertainty};
  const double cov = CovarianceOfMeans(nll, log_ppl.value, nll_ref, log_ppl_ref.value);
  const double denom = log_ppl.uncertainty * log_ppl_ref.uncertainty;
  if (denom > 0) {
    s.ln_ppl_correlation = cov / denom;
  } else {
    s.ln_ppl_correlation = nll == nll_ref ? 1.0 : 0.0;
  }
  s.ln_ppl_ratio = MeanAndStandardError(ln_ratio);
  s.ppl_ratio = {std::exp(s.ln_ppl_ratio.value),
                 std::exp(s.ln_ppl_ratio.value) * s.ln_ppl_ratio.uncertainty};
  const double diff_var = s.ppl.uncertainty * s.ppl.uncertainty +
                          s.ppl_ref.uncertainty * s.ppl_ref.uncertainty -
                          2 * s.ppl.value * s.ppl_ref.value * cov;
  s.ppl_diff = {s.ppl.value - s.ppl_ref.value, std::sqrt(std::max(0.0, diff_var))};

  s.kld = MeanAndStandardError(kld);
  s.kld_quantiles = ComputeQuantiles(kld);

  s.p_diff = MeanAndStandardError(p_diff);
  s.p_diff_quantiles = ComputeQuantiles(p_diff);
  const Estimate mse = MeanAndStandardError(p_diff2);
  const double rms = std::sqrt(mse.value);
  s.rms_p_diff = {rms, rms > 0 ? 0.5 / rms * mse.uncertainty : 0.0};

  const double f = static_cast<double>(same) / static_cast<double>(n);
  s.same_top = {f, n > 1 ? std::sqrt(f * (1 - f) / static_cast<double>(n - 1)) : 0.0};
  return s;
}

absl::StatusOr<KlDivergenceResult> ComputeKlDivergence(
    const std::vector<int32_t>& tokens, int64_t vocab, const WindowLogitsFn& logits_fn,
    int64_t ref_vocab, const WindowLogitsFn& ref_logits_fn, const KlDivergenceOptions& options) {
  if (vocab != ref_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("the model's vocabulary has ", vocab,
                                                   " tokens and the reference's ", ref_vocab,
                                                   "; KL divergence needs the same vocabulary"));
  }
  if (vocab < 1) return absl::InvalidArgumentError("vocabulary is empty");
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                     " is outside the vocabulary (", vocab, ")"));
    }
  }
  if (options.scheme == WindowScheme::kLlamaCpp && options.bos_id >= vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("BOS id ", options.bos_id, " is outside the vocabulary (", vocab, ")"));
  }
  ASSIGN_OR_RETURN(std::vector<ScoredWindow> plan, PlanWindows(n, options));

  const auto start = std::chrono::steady_clock::now();
  KlDivergenceResult result;
  std::vector<TokenComparison> positions;
  std::vector<float> logits, ref_logits;
  std::vector<int32_t> window_tokens;
  for (const ScoredWindow& w : plan) {
    window_tokens.assign(tokens.begin() + w.begin, tokens.begin() + w.begin + w.length);
    if (options.scheme == WindowScheme::kLlamaCpp && options.bos_id >= 0)
      window_tokens[0] = options.bos_id;
    logits.resize(static_cast<size_t>(w.length * vocab));
    ref_logits.resize(logits.size());
    RETURN_IF_ERROR(logits_fn(window_tokens.data(), w.length, logits.data()));
    RETURN_IF_ERROR(ref_logits_fn(window_tokens.data(), w.length, ref_logits.data()));
    const int64_t end = w.begin + w.length;
    const size_t offset = positions.size();
    positions.resize(offset + static_cast<size_t>(end - w.first_target));
    ParallelFor(end - w.first_target, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t t = w.first_target + k;
        const size_t row = static_cast<size_t>((t - 1 - w.begin) * vocab);
        positions[offset + k] =
            CompareDistributions(logits.data() + row, ref_logits.data() + row, vocab, tokens[t]);
      }
    });
    result.tokens_evaluated += w.length;
    ++result.windows;
    if (options.progress) {
      options.progress(result.windows, static_cast<int64_t>(plan.size()),
                       static_cast<int64_t>(positions.size()));
    }
  }
  ASSIGN_OR_RETURN(result.stats, SummarizeComparisons(positions));
  if (options.keep_positions) result.positions = std::move(positions);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace retort
