// A recipe stage as a `retort` command line, and the numbers a finished
// stage reports (its provenance "metrics", an eval stage's result.json).
// Pure functions of the stage and its files: the runner (pipeline/runner.h)
// decides where things go and the CLI executes the commands.
#ifndef RETORT_PIPELINE_STAGE_COMMAND_H_
#define RETORT_PIPELINE_STAGE_COMMAND_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/proto/recipe.pb.h"
#include "nlohmann/json.hpp"

namespace retort::pipeline {

// Maps an input value of the recipe ("@distill", "data/x.jsonl") to the
// path the command should open.
using InputResolver = std::function<std::string(const std::string& value)>;

// The command (argv without the program name: {"distill", STUDENT, "--data",
// ...}) that runs `stage` with its outputs in `stage_dir` (main output per
// StageMainOutput; an eval stage generates into `stage_dir`/gen). Typed
// settings come first, then the stage's extra_args verbatim. `threads` > 0
// adds --threads to commands that take it; `device` (StageDevice) other
// than "cpu" adds --device to those that take it (StageTakesDevice).
absl::StatusOr<std::vector<std::string>> StageCommand(const proto::Stage& stage,
                                                      const InputResolver& resolve,
                                                      const std::string& stage_dir, int threads,
                                                      const std::string& device);

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

#endif  // RETORT_PIPELINE_STAGE_COMMAND_H_
