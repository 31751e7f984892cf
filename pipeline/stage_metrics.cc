#include "pipeline/stage_metrics.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "pipeline/provenance.h"
#include "pipeline/recipe.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Reads a JSON object from `path` without throwing.
absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = ParseJson(text, path).value_or(nlohmann::json());
  if (!j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

void CopyNumber(const nlohmann::json& from, const char* key, const char* as, Json* to) {
  auto it = from.find(key);
  if (it != from.end() && it->is_number()) (*to)[as] = *it;
}

}  // namespace

absl::StatusOr<Json> EvalResult(const nlohmann::json& summary, uint64_t model_bytes,
                                const std::string& model_name) {
  auto v = summary.find("verification");
  if (v == summary.end() || !v->is_object()) {
    return absl::InvalidArgumentError(
        "the generation summary has no verification: eval prompts need answers");
  }
  auto number = [](const nlohmann::json& j, const char* key) -> double {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
  };
  const double total = number(*v, "samples");
  const double correct = number(*v, "correct");
  double tokens_per_s = 0;
  if (auto run = summary.find("this_run"); run != summary.end() && run->is_object()) {
    tokens_per_s = number(*run, "tokens_per_second");
  }
  Json r;
  r["accuracy"] = total > 0 ? correct / total : 0.0;
  r["correct"] = static_cast<int64_t>(correct);
  r["total"] = static_cast<int64_t>(total);
  r["tokens_per_s"] = tokens_per_s;
  r["model_bytes"] = model_bytes;
  r["model"] = model_name;
  return r;
}

absl::StatusOr<Json> StageMetrics(const proto::Stage& stage, const std::string& stage_dir) {
  Json m = Json::object();
  const fs::path dir(stage_dir);
  std::error_code ec;
  switch (stage.step_case()) {
    case proto::Stage::kDistill: {
      const std::string path = (dir / "metrics.jsonl").string();
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
      int64_t tokens = 0;
      for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
        nlohmann::json j =
            ParseJson(std::string_view(line.data(), line.size()), path).value_or(nlohmann::json());
        if (!j.is_object()) return absl::DataLossError(absl::StrCat(path, ": a line is not JSON"));
        if (j.contains("loss")) {
          CopyNumber(j, "loss", "final_loss", &m);
          CopyNumber(j, "step", "steps", &m);
          CopyNumber(j, "tokens_per_s", "tokens_per_s", &m);
          if (auto t = j.find("tokens"); t != j.end() && t->is_number())
            tokens += t->get<int64_t>();
        }
        CopyNumber(j, "eval_loss", "eval_loss", &m);
      }
      m["tokens"] = tokens;
      break;
    }
    case proto::Stage::kGenerate: {
      ASSIGN_OR_RETURN(nlohmann::json s, ReadJson((dir / "summary.json").string()));
      CopyNumber(s, "prompts", "prompts", &m);
      CopyNumber(s, "samples", "samples", &m);
      CopyNumber(s, "kept", "kept", &m);
      if (auto v = s.find("verification"); v != s.end() && v->is_object()) {
        CopyNumber(*v, "accuracy", "accuracy", &m);
      }
      if (auto run = s.find("this_run"); run != s.end() && run->is_object()) {
        CopyNumber(*run, "tokens_per_second", "tokens_per_s", &m);
      }
      break;
    }
    case proto::Stage::kEval: {
      ASSIGN_OR_RETURN(nlohmann::json r, ReadJson((dir / "result.json").string()));
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it->is_number()) m[it.key()] = it.value();
      }
      break;
    }
    default:
      break;
  }
  if (stage.step_case() != proto::Stage::kGenerate && stage.step_case() != proto::Stage::kEval) {
    ASSIGN_OR_RETURN(uint64_t bytes, ModelBytes((dir / StageMainOutput(stage)).string()));
    m["model_bytes"] = bytes;
  }
  return m;
}

}  // namespace retort::pipeline
