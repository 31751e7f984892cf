#include "report/run_dir.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace retort::report {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// Parses without throwing: a discarded value on malformed or too deeply
// nested text.
Json ParseJson(const std::string& text) {
  return ParseOrderedJson(text, "").value_or(Json(Json::value_t::discarded));
}

std::string StringField(const Json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  return Dump(*it);
}

std::optional<double> NumberField(const Json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::vector<StageFile> Files(const Json& list) {
  std::vector<StageFile> out;
  if (!list.is_array()) return out;
  for (const Json& e : list) {
    StageFile f;
    if (e.is_string()) {
      f.path = e.get<std::string>();
    } else {
      f.path = StringField(e, "path");
      f.sha256 = StringField(e, "sha256");
      f.bytes = NumberField(e, "bytes");
    }
    out.push_back(std::move(f));
  }
  return out;
}

// Numeric entries of a JSON object (others are ignored).
void MergeNumbers(const Json& obj, bool overwrite, std::map<std::string, double>* out) {
  if (!obj.is_object()) return;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (!it.value().is_number() || it.value().is_boolean()) continue;
    if (overwrite || !out->count(it.key())) (*out)[it.key()] = it.value().get<double>();
  }
}

// A stage's folder name is its name; names that would leave RUN_DIR are not followed.
bool SafeFolderName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

void ReadCurves(const std::string& path, const StageInfo& stage, RunInfo* run, StageInfo* out) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (stage.is_distill()) {
      run->notes.push_back(absl::StrCat("distill stage \"", stage.name, "\" has no metrics.jsonl (",
                                        path, "): no loss curve for it"));
    }
    return;
  }
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    run->notes.push_back(absl::StrCat("cannot read ", path, ": ", text.status().message()));
    return;
  }
  StageCurves curves;
  int64_t line_no = 0, bad = 0, first_bad = 0;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    const std::string line = text->substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Json j = ParseJson(line);
    if (!j.is_object()) {
      if (bad++ == 0) first_bad = line_no;
      continue;
    }
    // A line without a step counts from its position, so curves still draw.
    const double step = NumberField(j, "step").value_or(static_cast<double>(line_no));
    if (std::optional<double> loss = NumberField(j, "loss")) {
      curves.steps.push_back(step);
      curves.loss.push_back(*loss);
    }
    if (std::optional<double> eval = NumberField(j, "eval_loss")) {
      curves.eval_steps.push_back(step);
      curves.eval_loss.push_back(*eval);
    }
    if (NumberField(j, "on_policy_batches").value_or(0) > 0) {
      std::optional<double> kd = NumberField(j, "reverse_kl");
      if (!kd) kd = NumberField(j, "jsd");
      if (kd) {
        curves.on_policy_steps.push_back(step);
        curves.on_policy_kd.push_back(*kd);
      }
      if (std::optional<double> acc = NumberField(j, "sampled_accuracy")) {
        curves.accuracy_steps.push_back(step);
        curves.sampled_accuracy.push_back(*acc);
      }
    }
  }
  if (bad > 0) {
    run->notes.push_back(absl::StrCat(path, ": ", bad, " unreadable line", bad == 1 ? "" : "s",
                                      " skipped (first: line ", first_bad, ")"));
  }
  if (curves.loss.empty() && curves.eval_loss.empty()) {
    run->notes.push_back(absl::StrCat(path, " has no loss or eval_loss lines"));
  }
  out->curves = std::move(curves);
}

void ReadResult(const std::string& path, RunInfo* run, StageInfo* stage) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    run->notes.push_back(absl::StrCat("cannot read ", path, ": ", text.status().message()));
    return;
  }
  const Json j = ParseJson(*text);
  if (!j.is_object()) {
    run->notes.push_back(absl::StrCat(path, " is not a JSON object; ignored"));
    return;
  }
  // The manifest's copy wins where both have a value.
  MergeNumbers(j, /*overwrite=*/false, &stage->metrics);
  if (stage->model.empty()) stage->model = StringField(j, "model");
}

absl::StatusOr<StageInfo> ParseStage(const Json& e, size_t index, const std::string& manifest) {
  if (!e.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(manifest, ": stages[", index, "] is not an object"));
  }
  StageInfo s;
  s.name = StringField(e, "name");
  if (s.name.empty()) s.name = absl::StrCat("stage ", index + 1);
  s.kind = StringField(e, "kind");
  s.status = StringField(e, "status");
  s.label = StringField(e, "label");
  if (s.label.empty()) s.label = s.name;
  s.fingerprint = StringField(e, "fingerprint");
  s.started = StringField(e, "started");
  s.seconds = NumberField(e, "seconds");
  s.error = StringField(e, "error");
  s.model = StringField(e, "model");
  if (e.contains("settings") && !e["settings"].is_null()) s.settings_json = Dump(e["settings"], 2);
  if (e.contains("inputs")) s.inputs = Files(e["inputs"]);
  if (e.contains("outputs")) s.outputs = Files(e["outputs"]);
  if (e.contains("metrics")) MergeNumbers(e["metrics"], /*overwrite=*/true, &s.metrics);
  return s;
}

}  // namespace

std::optional<double> StageInfo::Metric(const std::string& key) const {
  auto it = metrics.find(key);
  if (it == metrics.end() || !std::isfinite(it->second)) return std::nullopt;
  return it->second;
}

std::optional<double> StageInfo::OutputBytes() const {
  std::optional<double> total;
  for (const StageFile& f : outputs) {
    if (f.bytes) total = total.value_or(0) + *f.bytes;
  }
  return total;
}

std::string RunInfo::StartTime() const {
  std::string first;
  for (const StageInfo& s : stages) {
    // ISO-8601 UTC times sort as strings.
    if (!s.started.empty() && (first.empty() || s.started < first)) first = s.started;
  }
  return first;
}

double RunInfo::TotalSeconds() const {
  double total = 0;
  for (const StageInfo& s : stages) {
    if (s.seconds && std::isfinite(*s.seconds)) total += *s.seconds;
  }
  return total;
}

absl::StatusOr<RunInfo> LoadRunDir(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(run_dir,
                                            " is not a directory (expected a RUN_DIR "
                                            "written by retort run)"));
  }
  const std::string manifest = (fs::path(run_dir) / "manifest.json").string();
  if (!fs::exists(manifest, ec)) {
    return absl::NotFoundError(absl::StrCat("no manifest.json in ", run_dir, " (expected ",
                                            manifest,
                                            ", written by retort run; is this a run directory?)"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(manifest));
  const Json j = ParseJson(text);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        manifest, " is not a JSON object (a partial write, or not a retort manifest)"));
  }
  RunInfo run;
  run.run_dir = run_dir;
  if (j.contains("recipe")) {
    const Json& r = j["recipe"];
    if (r.is_string()) {
      run.recipe_name = r.get<std::string>();
    } else {
      run.recipe_name = StringField(r, "name");
      run.recipe_path = StringField(r, "path");
      run.recipe_sha256 = StringField(r, "sha256");
    }
  }
  run.retort_version = StringField(j, "retort_version");
  run.machine = StringField(j, "machine");
  run.status = StringField(j, "status");
  if (run.status == "running") {
    run.notes.push_back(
        "the run has not finished (manifest.json says \"running\"): the page "
        "shows the stages recorded so far");
  }
  if (run.recipe_name.empty()) run.notes.push_back("manifest.json names no recipe");

  const std::string recipe_file = (fs::path(run_dir) / "recipe.textproto").string();
  if (fs::exists(recipe_file, ec)) {
    absl::StatusOr<std::string> recipe = ReadFileToString(recipe_file);
    if (recipe.ok()) {
      run.recipe_text = *std::move(recipe);
    } else {
      run.notes.push_back(
          absl::StrCat("cannot read ", recipe_file, ": ", recipe.status().message()));
    }
  } else {
    run.notes.push_back(absl::StrCat("no recipe.textproto in ", run_dir));
  }

  if (j.contains("stages") && !j["stages"].is_array() && !j["stages"].is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(manifest, ": \"stages\" is not a list"));
  }
  const Json stages = j.contains("stages") && j["stages"].is_array() ? j["stages"] : Json::array();
  for (size_t i = 0; i < stages.size(); ++i) {
    ASSIGN_OR_RETURN(StageInfo stage, ParseStage(stages[i], i, manifest));
    if (stage.status == "failed") {
      run.notes.push_back(absl::StrCat("stage \"", stage.name, "\" failed",
                                       stage.error.empty() ? "" : ": ", stage.error));
    } else if (stage.status != "done" && stage.status != "skipped") {
      run.notes.push_back(absl::StrCat("stage \"", stage.name, "\" did not finish (status \"",
                                       stage.status.empty() ? "none" : stage.status, "\")"));
    }
    if (SafeFolderName(stage.name)) {
      const fs::path dir = fs::path(run_dir) / stage.name;
      ReadCurves((dir / "metrics.jsonl").string(), stage, &run, &stage);
      if (stage.is_eval()) ReadResult((dir / "result.json").string(), &run, &stage);
    } else {
      run.notes.push_back(absl::StrCat("stage name \"", stage.name,
                                       "\" is not a folder name; its files were not read"));
    }
    if (stage.is_eval() && stage.status != "failed") {
      if (!stage.Metric("accuracy")) {
        run.notes.push_back(absl::StrCat("eval stage \"", stage.name,
                                         "\" has no accuracy (neither in manifest.json nor in ",
                                         stage.name, "/result.json)"));
      } else if (!stage.Metric("model_bytes")) {
        run.notes.push_back(absl::StrCat("eval stage \"", stage.name,
                                         "\" has no model_bytes: it is not on the size/quality "
                                         "plot"));
      }
    }
    run.stages.push_back(std::move(stage));
  }
  if (run.stages.empty()) {
    run.notes.push_back("manifest.json lists no stages yet");
  } else if (std::none_of(run.stages.begin(), run.stages.end(),
                          [](const StageInfo& s) { return s.is_eval(); })) {
    run.notes.push_back("the run has no eval stage: no accuracy chart and no size/quality plot");
  }
  if (!run.stages.empty() && std::none_of(run.stages.begin(), run.stages.end(),
                                          [](const StageInfo& s) { return s.is_distill(); })) {
    run.notes.push_back("the run has no distill stage: no loss curves");
  }
  return run;
}

}  // namespace retort::report
