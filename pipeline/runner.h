// RunRecipe: the engine of `retort run`. Runs a recipe's stages in order,
// each as its typed job (pipeline/stage_job.h; executed through the caller's
// StageRunner, which opens the stage's log and selects its device), into
// RUN_DIR/<stage>/, and
// keeps RUN_DIR/manifest.json and RUN_DIR/<stage>/provenance.json current.
//
// Resume: a stage is skipped when its provenance.json records the same
// fingerprint (settings + the SHA-256 of every input + the retort version)
// and its recorded outputs still hash the same; otherwise it runs again, and
// a later stage whose input changed runs again because its fingerprint
// changed. A stage runs in RUN_DIR/.<stage>.partial and is renamed into
// place only when it succeeded, so a crash never leaves a folder that looks
// done. A bad recipe (or a missing input file, or a device that cannot be
// used) fails before RUN_DIR is touched.
#ifndef RETORT_PIPELINE_RUNNER_H_
#define RETORT_PIPELINE_RUNNER_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/provenance.h"
#include "pipeline/stage_job.h"

namespace retort::pipeline {

// Runs `stage` (its inputs resolved to paths) in `context` to completion
// (usually RunStageJob, or a launcher for a multi-rank stage), its log written
// to `log_path`. Returns the job's error.
using StageRunner = std::function<absl::Status(
    const proto::Stage& stage, const StageContext& context, const std::string& log_path)>;

// Whether this process can run on `device` ("cuda:0"; never called for
// "cpu"): the error (one line) when it cannot.
using DeviceChecker = std::function<absl::Status(const std::string& device)>;

struct RunOptions {
  std::string recipe_path;
  std::string run_dir;
  std::string from;      // run this stage and the ones after it (earlier ones are left as they are)
  std::string only;      // run only this stage
  bool force = false;    // rerun the selected stages even when up to date
  bool dry_run = false;  // print the plan; write nothing
  int threads = 0;       // > 0: the worker threads of every stage
  std::string retort_version;  // for tests; empty: RetortVersion()
  StageRunner run_stage;
  // Checks every device the selected stages run on before anything is
  // written (the CLI asks kernels/backend.h); null: not checked here, a
  // stage's command then refuses its device itself.
  DeviceChecker check_device;
  std::ostream* progress = nullptr;  // one line per stage; null: quiet
};

struct RunSummary {
  Manifest manifest;
  int ran = 0, skipped = 0;
};

// REQUIRES: options.run_stage set (unless dry_run).
absl::StatusOr<RunSummary> RunRecipe(const RunOptions& options);

// "0.1.0"; the fingerprints use it. RetortVersionString() adds the git
// commit the binary was built from when known: "0.1.0 (git 1a2b3c4)".
std::string RetortVersion();
std::string RetortVersionString();

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_RUNNER_H_
