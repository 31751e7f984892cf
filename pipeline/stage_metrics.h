// The numbers a finished stage reports (its provenance "metrics", an eval
// stage's result.json): pure functions of the stage and its files.
#ifndef RETORT_PIPELINE_STAGE_METRICS_H_
#define RETORT_PIPELINE_STAGE_METRICS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/proto/recipe.pb.h"
#include "nlohmann/json.hpp"

namespace retort::pipeline {

// result.json of an eval stage from `retort generate`'s summary.json:
// {"accuracy","correct","total","tokens_per_s","model_bytes","model"}.
// Fails when the summary has no verification (prompts without answers).
absl::StatusOr<nlohmann::ordered_json> EvalResult(const nlohmann::json& summary,
                                                  uint64_t model_bytes,
                                                  const std::string& model_name);

// The provenance "metrics" of a finished stage (numbers only) from the files
// in `stage_dir`: distill: final_loss, eval_loss, steps, tokens,
// tokens_per_s (metrics.jsonl); generate: prompts, samples, kept, accuracy,
// tokens_per_s (summary.json); eval: result.json's numbers; stages that
// write a model: model_bytes.
absl::StatusOr<nlohmann::ordered_json> StageMetrics(const proto::Stage& stage,
                                                    const std::string& stage_dir);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_STAGE_METRICS_H_
