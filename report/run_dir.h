// What `retort report` knows about a run directory written by `retort run`:
// the manifest (recipe, version, stages with their settings, inputs, outputs
// and metrics), each distill stage's metrics.jsonl curves, each eval stage's
// result.json, and the recipe text.
//
// Loading is forgiving about everything but the manifest itself: a missing
// or unreadable metrics.jsonl, result.json or recipe.textproto, a failed or
// unfinished stage, or a run without an eval stage is recorded in `notes`
// (one sentence each, naming the file or stage) so the page can say what is
// missing. A RUN_DIR without a readable manifest.json is an error.
//
// The run directory layout is the one `retort run` writes (pipeline/README.md);
// what the page makes of it: report/README.md.
#ifndef RETORT_REPORT_RUN_DIR_H_
#define RETORT_REPORT_RUN_DIR_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace retort::report {

struct StageFile {
  std::string path;    // as in the manifest (relative to RUN_DIR or absolute)
  std::string sha256;  // empty when not recorded
  std::optional<double> bytes;
};

// A training curve read from metrics.jsonl: train loss lines and eval lines.
struct StageCurves {
  std::vector<double> steps, loss;            // {"step":N,"loss":x,...}
  std::vector<double> eval_steps, eval_loss;  // {"step":N,"eval_loss":x}
  // On-policy distillation steps (on_policy_batches > 0): the divergence on
  // the student's samples ("reverse_kl" or "jsd") and, with a verifier,
  // "sampled_accuracy".
  std::vector<double> on_policy_steps, on_policy_kd;
  std::vector<double> accuracy_steps, sampled_accuracy;
};

struct StageInfo {
  std::string name;
  std::string kind;    // distill, eval, generate, verify, prune, quantize, convert, ...
  std::string status;  // done | skipped | failed (or whatever the manifest says)
  std::string label;   // the manifest's label; the name when it has none
  std::string fingerprint;
  std::string started;
  std::optional<double> seconds;
  std::string settings_json;  // pretty-printed; empty when the manifest has none
  std::string error;          // a failed stage's "error" text, when recorded
  std::string model;          // eval stages: result.json's "model" (the stage evaluated)
  std::vector<StageFile> inputs, outputs;
  std::map<std::string, double> metrics;  // numbers only; eval stages: result.json merged in
  std::optional<StageCurves> curves;      // when <name>/metrics.jsonl was read

  bool is_eval() const { return kind == "eval"; }
  bool is_distill() const { return kind == "distill"; }
  // The metric `key`, when recorded and finite.
  std::optional<double> Metric(const std::string& key) const;
  // Sum of the recorded output sizes, when any output has one.
  std::optional<double> OutputBytes() const;
};

struct RunInfo {
  std::string run_dir;
  std::string recipe_name;
  std::string recipe_path;
  std::string recipe_sha256;
  std::string retort_version;
  std::string machine;  // the manifest's CPU and kernel paths (empty: not recorded)
  std::string status;   // the manifest's run status: running | done | failed ("" when absent)
  std::optional<std::string> recipe_text;  // RUN_DIR/recipe.textproto
  std::vector<StageInfo> stages;
  // What is missing or incomplete, one sentence each, in the order found.
  std::vector<std::string> notes;

  // The earliest stage start time recorded ("" when none).
  std::string StartTime() const;
  // Sum of the stage seconds recorded.
  double TotalSeconds() const;
};

// Reads RUN_DIR. Errors: no RUN_DIR, no manifest.json in it, a manifest
// that is not JSON or whose "stages" is not a list (each naming the path).
absl::StatusOr<RunInfo> LoadRunDir(const std::string& run_dir);

}  // namespace retort::report

#endif  // RETORT_REPORT_RUN_DIR_H_
