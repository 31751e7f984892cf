// Recipes for `retort run`: loading (protobuf text format, or JSON for
// *.json), validation, and what each stage reads and writes.
//
// The schema is formats/proto/recipe.proto. A stage's input is either a
// path (relative to the recipe file unless absolute) or a reference to an
// earlier stage's output: "@stage" (its main output, StageMainOutput) or
// "@stage/relative/path". Validation refuses unknown fields, stages without
// a step, missing required inputs, invalid or duplicate names and references
// to unknown or later stages; text-format errors carry the line number.
#ifndef RETORT_PIPELINE_RECIPE_H_
#define RETORT_PIPELINE_RECIPE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/proto/recipe.pb.h"
#include "nlohmann/json.hpp"

namespace retort::pipeline {

enum class RecipeSyntax { kText, kJson };

// A parsed, validated recipe and where it came from.
struct LoadedRecipe {
  proto::Recipe recipe;
  std::string path;    // as given
  std::string dir;     // folder that relative input paths start from
  std::string text;    // the file's bytes
  std::string sha256;  // of `text`
  RecipeSyntax syntax = RecipeSyntax::kText;
};

// Parses and validates `text`; errors start with `where` (the file name),
// plus ":LINE:" where the text format knows the line.
absl::StatusOr<proto::Recipe> ParseRecipe(const std::string& text, const std::string& where,
                                          RecipeSyntax syntax);

// Reads `path` (JSON when it ends in .json, else text format), then ParseRecipe.
absl::StatusOr<LoadedRecipe> LoadRecipe(const std::string& path);

// "generate", "distill", "prune", "quantize", "convert", "eval", "init" or
// "" when the stage has no step.
std::string StageKind(const proto::Stage& stage);

// The recipe's label, or the stage name when it has none.
std::string StageLabel(const proto::Stage& stage);

// The path of the stage's main output inside its folder: "final" (init,
// distill, prune, quantize, convert --to hf), "traces.jsonl" (generate),
// "out.gguf" (convert), "result.json" (eval).
std::string StageMainOutput(const proto::Stage& stage);

// One input of a stage as written in the recipe.
struct StageInput {
  std::string field;  // "student", "data", "prompts", ...
  std::string value;  // "@generate", "data/x.jsonl", ...
};
// Every input field that names a file, folder or stage output (empty ones
// left out), in field order.
std::vector<StageInput> StageInputs(const proto::Stage& stage);

// `stage` with each of its inputs replaced by `resolve`'s path for it.
proto::Stage ResolveStageInputs(const proto::Stage& stage,
                                const std::function<std::string(const std::string&)>& resolve);

// An input value split into its parts.
struct InputRef {
  bool is_stage = false;
  std::string stage;     // is_stage: the referenced stage
  std::string relative;  // is_stage: path inside its folder ("" = main output)
  std::string path;      // !is_stage: the path as written
};
// Splits "@stage[/relative]" or a plain path. Errors on an empty stage name,
// or a relative part that is absolute or climbs out with "..".
absl::StatusOr<InputRef> ParseInputRef(const std::string& value);

// True for the stages whose command runs a model and takes --device:
// generate, distill, prune, quantize, eval.
bool StageTakesDevice(const proto::Stage& stage);

// The device `stage` runs on, in DeviceName's spelling ("cpu", "cuda:0"):
// its own `device`, else the recipe's, else "cpu"; always "cpu" for stages
// that take none (init, convert). REQUIRES: a validated recipe.
std::string StageDevice(const proto::Recipe& recipe, const proto::Stage& stage);

// The stage as JSON (protobuf's JSON mapping with the .proto field names;
// unset fields left out): the "settings" of its provenance record. `device`
// (StageDevice) replaces the stage's own "device" field, and enters only
// when it is not "cpu": a stage on the CPU hashes as it did before recipes
// had devices, one on a GPU differently (its results differ by rounding).
nlohmann::ordered_json StageSettingsJson(const proto::Stage& stage, const std::string& device);

// The recipe in protobuf text format (what RUN_DIR/recipe.textproto holds
// for a JSON recipe).
std::string RecipeToText(const proto::Recipe& recipe);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_RECIPE_H_
