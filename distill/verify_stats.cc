#include "distill/verify_stats.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace retort {

absl::StatusOr<double> PassAtK(int n, int c, int k) {
  if (k < 1 || c < 0 || c > n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pass@k needs k >= 1 and 0 <= c <= n, got n=%d c=%d k=%d", n, c, k));
  }
  if (n < k) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pass@%d needs at least %d samples, got n=%d", k, k, n));
  }
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i).
  double prod = 1.0;
  for (int i = n - c + 1; i <= n; ++i) {
    prod *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  }
  return 1.0 - prod;
}

absl::StatusOr<nlohmann::ordered_json> SummarizeVerification(
    const std::vector<PromptStats>& prompts, const std::vector<int>& ks_in) {
  std::vector<int> ks = ks_in;
  ks.push_back(1);
  for (int k : ks) {
    if (k < 1) {
      return absl::InvalidArgumentError(absl::StrCat("pass@k: k must be >= 1, got ", k));
    }
  }
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());

  int64_t samples = 0, correct = 0;
  double prompt_acc_sum = 0.0;
  int prompts_with_samples = 0;
  std::vector<double> pass_sum(ks.size(), 0.0);
  std::vector<int> pass_count(ks.size(), 0);
  nlohmann::ordered_json per_prompt = nlohmann::ordered_json::array();
  for (const PromptStats& p : prompts) {
    if (p.n < 0 || p.correct < 0 || p.correct > p.n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt \"%s\": correct=%d is outside [0, n=%d]", p.id, p.correct, p.n));
    }
    samples += p.n;
    correct += p.correct;
    nlohmann::ordered_json row = {{"id", p.id}, {"n", p.n}, {"correct", p.correct}};
    if (p.n > 0) {
      double acc = static_cast<double>(p.correct) / p.n;
      prompt_acc_sum += acc;
      ++prompts_with_samples;
      row["accuracy"] = acc;
    } else {
      row["accuracy"] = nullptr;
    }
    per_prompt.push_back(std::move(row));
    for (size_t i = 0; i < ks.size(); ++i) {
      if (p.n < ks[i]) continue;
      ASSIGN_OR_RETURN(double v, PassAtK(p.n, p.correct, ks[i]));
      pass_sum[i] += v;
      ++pass_count[i];
    }
  }
  nlohmann::ordered_json out;
  out["prompts"] = prompts.size();
  out["samples"] = samples;
  out["correct"] = correct;
  out["accuracy"] =
      samples > 0
          ? nlohmann::ordered_json(static_cast<double>(correct) / static_cast<double>(samples))
          : nlohmann::ordered_json(nullptr);
  out["prompt_accuracy"] = prompts_with_samples > 0
                               ? nlohmann::ordered_json(prompt_acc_sum / prompts_with_samples)
                               : nlohmann::ordered_json(nullptr);
  nlohmann::ordered_json pass = nlohmann::ordered_json::object();
  nlohmann::ordered_json pass_n = nlohmann::ordered_json::object();
  for (size_t i = 0; i < ks.size(); ++i) {
    std::string key = std::to_string(ks[i]);
    pass[key] = pass_count[i] > 0 ? nlohmann::ordered_json(pass_sum[i] / pass_count[i])
                                  : nlohmann::ordered_json(nullptr);
    pass_n[key] = pass_count[i];
  }
  out["pass@k"] = std::move(pass);
  out["pass@k_prompts"] = std::move(pass_n);
  out["per_prompt"] = std::move(per_prompt);
  return out;
}

std::string FormatVerificationSummary(const nlohmann::ordered_json& summary, int max_prompt_rows) {
  auto pct = [](const nlohmann::ordered_json& v) -> std::string {
    if (!v.is_number()) return "n/a";
    return absl::StrFormat("%.1f%%", 100.0 * v.get<double>());
  };
  std::string out;
  try {
    absl::StrAppendFormat(
        &out, "prompts %d  samples %d  correct %d  accuracy %s (samples) %s (prompts)\n",
        summary.value("prompts", 0), summary.value("samples", int64_t{0}),
        summary.value("correct", int64_t{0}),
        pct(summary.value("accuracy", nlohmann::ordered_json())),
        pct(summary.value("prompt_accuracy", nlohmann::ordered_json())));
    if (summary.contains("pass@k")) {
      for (const auto& [k, v] : summary.at("pass@k").items()) {
        int count =
            summary.contains("pass@k_prompts") ? summary.at("pass@k_prompts").value(k, 0) : 0;
        std::string key = "pass@" + k;
        absl::StrAppendFormat(
            &out, "%-8s %s  (%d prompts)\n", key,
            v.is_number() ? absl::StrFormat("%.4f", v.get<double>()) : std::string("n/a"), count);
      }
    }
    if (summary.contains("per_prompt") && max_prompt_rows > 0 &&
        !summary.at("per_prompt").empty()) {
      std::vector<const nlohmann::ordered_json*> rows;
      for (const auto& row : summary.at("per_prompt")) rows.push_back(&row);
      auto acc_of = [](const nlohmann::ordered_json* r) {
        const auto& a = r->at("accuracy");
        return a.is_number() ? a.get<double>() : -1.0;
      };
      std::stable_sort(rows.begin(), rows.end(),
                       [&](const auto* a, const auto* b) { return acc_of(a) < acc_of(b); });
      size_t width = 2;
      size_t shown = std::min<size_t>(rows.size(), max_prompt_rows);
      for (size_t i = 0; i < shown; ++i)
        width = std::max(width, rows[i]->at("id").get<std::string>().size());
      width = std::min<size_t>(width, 40);
      absl::StrAppendFormat(&out, "%-*s  %9s  %7s\n", static_cast<int>(width), "id", "correct/n",
                            "acc");
      for (size_t i = 0; i < shown; ++i) {
        const auto& r = *rows[i];
        std::string id = r.at("id").get<std::string>();
        if (id.size() > width) id = id.substr(0, width - 3) + "...";
        std::string frac = absl::StrCat(r.at("correct").get<int>(), "/", r.at("n").get<int>());
        absl::StrAppendFormat(&out, "%-*s  %9s  %7s\n", static_cast<int>(width), id, frac,
                              pct(r.at("accuracy")));
      }
      if (rows.size() > shown) {
        absl::StrAppendFormat(&out, "(%d more prompts)\n", rows.size() - shown);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    absl::StrAppend(&out, "(summary not readable: ", e.what(), ")\n");
  }
  return out;
}

}  // namespace retort
