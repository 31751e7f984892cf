#include "pipeline/runner.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "pipeline/recipe.h"
#include "pipeline/stage_job.h"
#include "pipeline/stage_metrics.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr char kProvenance[] = "provenance.json";
constexpr char kLog[] = "log.txt";

// Resolves recipe inputs to paths and back to the manifest's spelling.
class Paths {
 public:
  Paths(const LoadedRecipe& recipe, const std::string& run_dir)
      : recipe_dir_(recipe.dir), run_dir_(fs::absolute(run_dir).lexically_normal()) {
    for (const proto::Stage& s : recipe.recipe.stage()) main_output_[s.name()] = StageMainOutput(s);
  }

  // "@stage[/rel]" -> RUN_DIR/stage/(rel | main output); a plain path is
  // taken relative to the recipe's folder. Values were validated by
  // LoadRecipe, so parsing cannot fail here.
  std::string Resolve(const std::string& value) const {
    absl::StatusOr<InputRef> ref = ParseInputRef(value);
    if (!ref.ok() || !ref->is_stage) {
      fs::path p(value);
      return (p.is_absolute() ? p : fs::path(recipe_dir_) / p).lexically_normal().string();
    }
    auto it = main_output_.find(ref->stage);
    const std::string rel = !ref->relative.empty()     ? ref->relative
                            : it != main_output_.end() ? it->second
                                                       : std::string();
    return (run_dir_ / ref->stage / rel).lexically_normal().string();
  }

  // Relative to RUN_DIR when inside it, else absolute.
  std::string Display(const std::string& path) const {
    const fs::path p = fs::absolute(path).lexically_normal();
    const std::string root = run_dir_.string() + "/";
    const std::string s = p.string();
    return absl::StartsWith(s, root) ? s.substr(root.size()) : s;
  }

  const fs::path& run_dir() const { return run_dir_; }
  fs::path StageDir(const std::string& name) const { return run_dir_ / name; }
  fs::path PartialDir(const std::string& name) const {
    return run_dir_ / absl::StrCat(".", name, ".partial");
  }

 private:
  std::string recipe_dir_;
  fs::path run_dir_;
  std::map<std::string, std::string> main_output_;
};

// The stage's inputs with their hashes; fails when one is missing.
absl::StatusOr<std::vector<FileRecord>> HashInputs(const proto::Stage& stage, const Paths& paths) {
  std::vector<FileRecord> inputs;
  for (const StageInput& in : StageInputs(stage)) {
    const std::string path = paths.Resolve(in.value);
    absl::StatusOr<PathDigest> d = HashPath(path);
    if (!d.ok()) {
      std::string hint;
      if (absl::StartsWith(in.value, "@")) {
        hint = absl::StrCat(" (", in.value, " is another stage's output: has that stage run?)");
      }
      return absl::Status(d.status().code(),
                          absl::StrCat(in.field, " ", in.value, ": ", d.status().message(), hint));
    }
    inputs.push_back({paths.Display(path), d->sha256, -1});
  }
  return inputs;
}

// True when every recorded output still hashes as recorded.
bool OutputsIntact(const StageRecord& record, const Paths& paths) {
  if (record.outputs.empty()) return false;
  for (const FileRecord& out : record.outputs) {
    const fs::path p =
        fs::path(out.path).is_absolute() ? fs::path(out.path) : paths.run_dir() / out.path;
    absl::StatusOr<PathDigest> d = HashPath(p.string());
    if (!d.ok() || d->sha256 != out.sha256) return false;
  }
  return true;
}

class Runner {
 public:
  Runner(const RunOptions& options, LoadedRecipe recipe)
      : o_(options), recipe_(std::move(recipe)), paths_(recipe_, options.run_dir) {
    version_ = o_.retort_version.empty() ? RetortVersion() : o_.retort_version;
  }

  absl::StatusOr<RunSummary> Run();

 private:
  void Progress(const std::string& line) {
    if (o_.progress != nullptr) *o_.progress << "[run] " << line << "\n" << std::flush;
  }
  bool Selected(int i) const { return i >= first_ && i <= last_; }
  absl::Status Preflight();
  void DryRun();
  absl::Status WriteManifest() {
    return pipeline::WriteManifest((paths_.run_dir() / "manifest.json").string(), manifest_);
  }
  // Runs stage `i` (or finds it up to date); appends its record.
  absl::Status RunStage(int i);
  // The command, the eval summary and the metrics, in the partial folder.
  absl::Status Execute(const proto::Stage& stage, const std::string& dir, bool resume,
                       StageRecord* record);

  const RunOptions& o_;
  LoadedRecipe recipe_;
  Paths paths_;
  std::string version_;
  int first_ = 0, last_ = 0;
  Manifest manifest_;
  RunSummary summary_;
};

absl::Status Runner::Preflight() {
  const auto& stages = recipe_.recipe.stage();
  auto find = [&](const std::string& name, const char* flag) -> absl::StatusOr<int> {
    for (int i = 0; i < stages.size(); ++i) {
      if (stages[i].name() == name) return i;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", name, ": the recipe has no such stage"));
  };
  first_ = 0;
  last_ = stages.size() - 1;
  if (!o_.from.empty() && !o_.only.empty()) {
    return absl::InvalidArgumentError("give --from or --only, not both");
  }
  if (!o_.from.empty()) {
    ASSIGN_OR_RETURN(first_, find(o_.from, "--from"));
  }
  if (!o_.only.empty()) {
    ASSIGN_OR_RETURN(first_, find(o_.only, "--only"));
    last_ = first_;
  }
  // Files the recipe names must exist before anything is written.
  for (int i = first_; i <= last_; ++i) {
    for (const StageInput& in : StageInputs(stages[i])) {
      if (absl::StartsWith(in.value, "@")) continue;
      const std::string path = paths_.Resolve(in.value);
      std::error_code ec;
      if (!fs::exists(path, ec)) {
        return absl::NotFoundError(absl::StrCat(recipe_.path, ": stage \"", stages[i].name(), "\" ",
                                                in.field, " ", in.value, ": ", path,
                                                " does not exist"));
      }
    }
  }
  // So must the devices the selected stages run on.
  if (o_.check_device) {
    std::set<std::string> checked;
    for (int i = first_; i <= last_; ++i) {
      const proto::Stage& s = stages[i];
      const std::string device = StageDevice(recipe_.recipe, s);
      if (device == "cpu") continue;
      // Named as the recipe spells it: the stage's field, or the recipe's.
      const bool own = !s.device().empty();
      const std::string field =
          own ? absl::StrCat("stage \"", s.name(), "\" device \"", s.device(), "\"")
              : absl::StrCat("device \"", recipe_.recipe.device(), "\"");
      if (!checked.insert(field).second) continue;
      if (absl::Status st = o_.check_device(device); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat(recipe_.path, ": ", field, ": ", st.message()));
      }
    }
  }
  std::error_code ec;
  if (fs::exists(paths_.run_dir(), ec) && !fs::is_directory(paths_.run_dir(), ec)) {
    return absl::AlreadyExistsError(absl::StrCat(o_.run_dir, ": exists and is not a directory"));
  }
  return absl::OkStatus();
}

void Runner::DryRun() {
  const auto& stages = recipe_.recipe.stage();
  std::set<std::string> will_run;
  for (int i = first_; i <= last_; ++i) {
    const proto::Stage& s = stages[i];
    std::string state;
    for (const StageInput& in : StageInputs(s)) {
      absl::StatusOr<InputRef> ref = ParseInputRef(in.value);
      if (ref.ok() && ref->is_stage && will_run.count(ref->stage)) {
        state = absl::StrCat("would run (after ", ref->stage, ")");
        break;
      }
    }
    if (state.empty()) {
      state = "would run";
      absl::StatusOr<std::vector<FileRecord>> inputs = HashInputs(s, paths_);
      absl::StatusOr<StageRecord> old =
          ReadProvenance((paths_.StageDir(s.name()) / kProvenance).string());
      if (!o_.force && inputs.ok() && old.ok() &&
          old->fingerprint == StageFingerprint(version_,
                                               StageSettingsJson(s, StageDevice(recipe_.recipe, s)),
                                               *inputs) &&
          OutputsIntact(*old, paths_)) {
        state = "up to date";
      }
    }
    if (state != "up to date") will_run.insert(s.name());
    Progress(absl::StrFormat("%d/%d %s (%s): %s: %s", i + 1, stages.size(), s.name(), StageKind(s),
                             state, StageCommandLine(s, StageDevice(recipe_.recipe, s))));
  }
}

absl::Status Runner::Execute(const proto::Stage& stage, const std::string& dir, bool resume,
                             StageRecord* record) {
  const auto resolve = [&](const std::string& v) { return paths_.Resolve(v); };
  const StageContext context{dir, o_.threads, StageDevice(recipe_.recipe, stage), resume};
  RETURN_IF_ERROR(
      o_.run_stage(ResolveStageInputs(stage, resolve), context, (fs::path(dir) / kLog).string()));
  std::error_code ec;
  if (stage.has_eval()) {
    const std::string summary_path = (fs::path(dir) / "gen" / "summary.json").string();
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(summary_path));
    absl::StatusOr<nlohmann::json> parsed = ParseJson(text, summary_path);
    if (!parsed.ok()) return absl::DataLossError(parsed.status().message());
    nlohmann::json summary = *std::move(parsed);
    const std::string model = resolve(stage.eval().model());
    ASSIGN_OR_RETURN(uint64_t model_bytes, ModelBytes(model));
    const std::string& written = stage.eval().model();
    const std::string name = absl::StartsWith(written, "@") ? written.substr(1) : written;
    ASSIGN_OR_RETURN(Json result, EvalResult(summary, model_bytes, name));
    RETURN_IF_ERROR(
        WriteFileAtomically((fs::path(dir) / "result.json").string(), result.dump(2) + "\n"));
  }
  if (stage.has_distill()) {
    // The trainer's resume state (f32 master weights and Adam moments, 4x the
    // model) only serves `retort distill --resume`, and a finished stage never
    // resumes. A stage that asks for checkpoints (save_every) keeps their
    // models, for later stages to evaluate ("@stage/checkpoint-0000100");
    // otherwise they go entirely.
    const bool keep_models = stage.distill().save_every() > 0;
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      if (!e.is_directory() || !absl::StartsWith(e.path().filename().string(), "checkpoint-")) {
        continue;
      }
      if (!keep_models) {
        fs::remove_all(e.path(), ec);
        continue;
      }
      for (const char* resume_only : {"master.safetensors", "optimizer.bin"}) {
        fs::remove(e.path() / resume_only, ec);
      }
    }
  }
  ASSIGN_OR_RETURN(record->metrics, StageMetrics(stage, dir));
  std::vector<std::string> entries;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name != kProvenance && name != kLog) entries.push_back(name);
  }
  std::sort(entries.begin(), entries.end());
  for (const std::string& name : entries) {
    ASSIGN_OR_RETURN(PathDigest d, HashPath((fs::path(dir) / name).string()));
    record->outputs.push_back(
        {absl::StrCat(stage.name(), "/", name), d.sha256, static_cast<int64_t>(d.bytes)});
  }
  return absl::OkStatus();
}

absl::Status Runner::RunStage(int i) {
  const proto::Stage& stage = recipe_.recipe.stage(i);
  const std::string where =
      absl::StrFormat("%d/%d %s", i + 1, recipe_.recipe.stage_size(), stage.name());
  StageRecord record;
  record.name = stage.name();
  record.kind = StageKind(stage);
  record.label = StageLabel(stage);
  record.settings = StageSettingsJson(stage, StageDevice(recipe_.recipe, stage));
  record.started = UtcNow();
  const auto t0 = std::chrono::steady_clock::now();
  auto fail = [&](const absl::Status& s) {
    // An interrupted stage keeps its folder (a distill checkpoint, the
    // traces so far): the next run resumes it.
    const bool interrupted = absl::IsCancelled(s);
    record.status = interrupted ? "interrupted" : "failed";
    record.error = interrupted ? "interrupted; its folder is kept: run the same `retort run` "
                                 "again to resume it"
                               : std::string(s.message());
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    manifest_.stages.push_back(record);
    manifest_.status = record.status;
    (void)WriteManifest();
    Progress(absl::StrFormat("%s: %s after %.1f s", where, record.status, record.seconds));
    return absl::Status(s.code(), absl::StrCat("stage \"", stage.name(), "\" (", record.kind, ") ",
                                               record.status, ": ", record.error));
  };

  absl::StatusOr<std::vector<FileRecord>> inputs = HashInputs(stage, paths_);
  if (!inputs.ok()) return fail(inputs.status());
  record.inputs = *inputs;
  record.fingerprint = StageFingerprint(version_, record.settings, record.inputs);

  const fs::path stage_dir = paths_.StageDir(stage.name());
  const std::string provenance_path = (stage_dir / kProvenance).string();
  if (!o_.force) {
    absl::StatusOr<StageRecord> old = ReadProvenance(provenance_path);
    if (old.ok() && (old->status == "done" || old->status == "skipped") &&
        old->fingerprint == record.fingerprint && OutputsIntact(*old, paths_)) {
      old->status = "skipped";
      old->label = record.label;
      old->settings = record.settings;
      if (absl::Status s = WriteProvenance(provenance_path, *old); !s.ok()) return fail(s);
      manifest_.stages.push_back(*old);
      ++summary_.skipped;
      Progress(
          absl::StrFormat("%s: skipped (up to date, %.1f s when it ran)", where, old->seconds));
      return WriteManifest();
    }
  }

  Progress(absl::StrFormat("%s (%s): running", where, record.kind));
  const fs::path partial = paths_.PartialDir(stage.name());
  // The fingerprint of an interrupted attempt, beside its folder: the same
  // stage with the same inputs resumes from what that attempt left.
  const std::string resume_marker = partial.string() + ".interrupted";
  absl::StatusOr<std::string> interrupted = ReadFileToString(resume_marker);
  const bool resume = !o_.force && interrupted.ok() && *interrupted == record.fingerprint;
  std::error_code ec;
  fs::remove(resume_marker, ec);
  absl::StatusOr<StagedDirectory> staged = StagedDirectory::Create(
      stage_dir.string(), {.temp_path = partial.string(), .keep_contents = resume});
  if (!staged.ok()) return fail(staged.status());
  if (resume) Progress(absl::StrFormat("%s: resuming the interrupted run", where));
  absl::Status status = Execute(stage, partial.string(), resume, &record);
  if (absl::IsCancelled(status) && WriteFileAtomically(resume_marker, record.fingerprint).ok()) {
    staged->Keep();
  }
  record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (status.ok()) {
    record.status = "done";
    status = WriteProvenance((partial / kProvenance).string(), record);
  }
  if (status.ok()) status = staged->Commit();
  if (!status.ok()) {
    record.outputs.clear();
    record.metrics = Json::object();
    return fail(status);
  }
  manifest_.stages.push_back(record);
  ++summary_.ran;
  Progress(absl::StrFormat("%s: done in %.1f s", where, record.seconds));
  return WriteManifest();
}

absl::StatusOr<RunSummary> Runner::Run() {
  RETURN_IF_ERROR(Preflight());
  if (o_.dry_run) {
    DryRun();
    return summary_;
  }
  std::error_code ec;
  fs::create_directories(paths_.run_dir(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(o_.run_dir, ": cannot create the run folder: ", ec.message()));
  }
  // One `retort run` per run folder, until this one ends.
  ASSIGN_OR_RETURN(DirectoryLock lock, DirectoryLock::Acquire(paths_.run_dir().string()));
  RemoveStaleTemporaries(paths_.run_dir().string());
  RETURN_IF_ERROR(WriteFileAtomically(
      (paths_.run_dir() / "recipe.textproto").string(),
      recipe_.syntax == RecipeSyntax::kText ? recipe_.text : RecipeToText(recipe_.recipe)));
  manifest_.recipe_name = recipe_.recipe.name();
  manifest_.recipe_path = recipe_.path;
  manifest_.recipe_sha256 = recipe_.sha256;
  manifest_.retort_version = o_.retort_version.empty() ? RetortVersionString() : o_.retort_version;
  manifest_.machine = MachineDescription();
  Progress(absl::StrCat("machine: ", manifest_.machine));
  manifest_.status = "running";
  const auto& stages = recipe_.recipe.stage();
  // Stages outside --from/--only keep whatever an earlier run recorded.
  auto keep_earlier = [&](int i) {
    absl::StatusOr<StageRecord> old =
        ReadProvenance((paths_.StageDir(stages[i].name()) / kProvenance).string());
    if (old.ok() && old->status != "failed") {
      old->status = "skipped";
      manifest_.stages.push_back(*old);
    }
  };
  for (int i = 0; i < first_; ++i) keep_earlier(i);
  RETURN_IF_ERROR(WriteManifest());
  for (int i = first_; i <= last_; ++i) RETURN_IF_ERROR(RunStage(i));
  for (int i = last_ + 1; i < stages.size(); ++i) keep_earlier(i);
  manifest_.status = "done";
  RETURN_IF_ERROR(WriteManifest());
  summary_.manifest = manifest_;
  return summary_;
}

}  // namespace

absl::StatusOr<RunSummary> RunRecipe(const RunOptions& options) {
  ASSIGN_OR_RETURN(LoadedRecipe recipe, LoadRecipe(options.recipe_path));
  if (!options.dry_run && !options.run_stage) {
    return absl::InvalidArgumentError("RunRecipe: no stage runner");
  }
  Runner runner(options, std::move(recipe));
  return runner.Run();
}

}  // namespace retort::pipeline
