#include "pipeline/results.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace retort::pipeline {
namespace {

double Number(const nlohmann::ordered_json& metrics, const char* key, double fallback = -1) {
  auto it = metrics.find(key);
  return it != metrics.end() && it->is_number() ? it->get<double>() : fallback;
}

}  // namespace

std::string EvalTable(const Manifest& manifest) {
  std::string rows;
  for (const StageRecord& s : manifest.stages) {
    if (s.kind != "eval") continue;
    const double accuracy = Number(s.metrics, "accuracy");
    if (accuracy < 0) continue;
    const double correct = Number(s.metrics, "correct", 0);
    const double total = Number(s.metrics, "total", 0);
    const double bytes = Number(s.metrics, "model_bytes");
    const double speed = Number(s.metrics, "tokens_per_s");
    absl::StrAppend(
        &rows, absl::StrFormat("| %s | %.1f%% | %.0f/%.0f | %s | %s |\n",
                               s.label.empty() ? s.name : s.label, 100 * accuracy, correct, total,
                               bytes > 0 ? absl::StrFormat("%.2f MB", bytes / 1e6) : "-",
                               speed > 0 ? absl::StrFormat("%.0f", speed) : "-"));
  }
  if (rows.empty()) return "";
  return absl::StrCat(
      "| model | held-out accuracy | correct | size | decode tokens/s |\n"
      "|---|---|---|---|---|\n",
      rows);
}

}  // namespace retort::pipeline
