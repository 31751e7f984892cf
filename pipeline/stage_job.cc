#include "pipeline/stage_job.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/staged_directory.h"
#include "core/status.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "pipeline/recipe.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<JobCommand>> NewStageJob(const proto::Stage& stage) {
  switch (stage.step_case()) {
    case proto::Stage::kInit:
      return NewInitJob();
    case proto::Stage::kGenerate:
    case proto::Stage::kEval:
      return NewGenerateTracesJob();
    case proto::Stage::kDistill:
      return NewDistillJob();
    case proto::Stage::kPrune:
      return NewPruneJob();
    case proto::Stage::kQuantize:
      return NewQuantizeJob();
    case proto::Stage::kConvert:
      return NewConvertJob();
    case proto::Stage::STEP_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("stage \"", stage.name(), "\" has no step"));
}

// A rank other than 0 of an mpirun group (OpenMPI, MPICH, PMIx).
bool IsOtherMpiRank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    const char* rank = std::getenv(v);
    if (rank != nullptr) return std::string(rank) != "0";
  }
  return false;
}

}  // namespace

void OutputOption::AddOptions(po::options_description& options, bool required,
                              const std::string& help, const char* name) {
  std::string text = help;
  if (kind_ == Kind::kStream) absl::StrAppend(&text, "; - writes to stdout");
  absl::StrAppend(&text, existing_ == Existing::kResume ? "; an existing OUT is resumed"
                         : resume_ != nullptr
                             ? "; an existing OUT is refused unless --force (start over) or "
                               "--resume (continue its run)"
                             : "; an existing OUT is refused unless --force");
  po::typed_value<std::string>* value = po::value(&path_);
  options.add_options()(name, required ? value->required() : value, text.c_str());
  const std::string long_name(name, std::strcspn(name, ","));
  flag_ = long_name == "output" ? "-o" : absl::StrCat("--", long_name);
  if (existing_ == Existing::kRefuse) {
    options.add_options()("force", po::bool_switch(&force_),
                          "replace an existing OUT (the new one is written beside it, then "
                          "renamed over it)");
  }
}

absl::Status OutputOption::Check() const {
  if (path_.empty()) return absl::OkStatus();
  if (path_ == "-" && kind_ != Kind::kStream) {
    const char* what = kind_ == Kind::kFolder ? "a folder"
                       : kind_ == Kind::kFile ? "a binary file"
                                              : "a model (a .gguf file or an HF directory)";
    return OptionError(absl::StrCat(flag_, " -: OUT is ", what,
                                    " here; stdout (-) takes only a text stream: give a path"));
  }
  if (existing_ == Existing::kResume || force_ || (resume_ != nullptr && *resume_) ||
      IsOtherMpiRank()) {
    return absl::OkStatus();
  }
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(path_, ec));
  if (exists && !(fs::is_directory(path_, ec) && fs::is_empty(path_, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat(path_, " already exists (use --force to replace it",
                     resume_ != nullptr ? ", or --resume to continue its run)" : ")"));
  }
  return absl::OkStatus();
}

absl::Status OutputOption::RunReplacing(const std::function<absl::Status()>& job) const {
  std::error_code ec;
  const auto has_contents = [](const std::string& path) {
    std::error_code e;
    return fs::exists(fs::symlink_status(path, e)) &&
           !(fs::is_directory(path, e) && fs::is_empty(path, e));
  };
  if (!force_ || (resume_ != nullptr && *resume_) || IsOtherMpiRank() || !has_contents(path_)) {
    return job();
  }
  ASSIGN_OR_RETURN(const std::string aside, MoveAside(path_));
  const absl::Status status = job();
  if (has_contents(path_)) {
    fs::remove_all(aside, ec);
  } else {
    fs::remove(path_, ec);
    fs::rename(aside, path_, ec);
  }
  return status;
}

std::string StageCommandName(const proto::Stage& stage) {
  return stage.has_eval() ? "generate" : StageKind(stage);
}

std::string StageCommandLine(const proto::Stage& stage, const std::string& device) {
  return absl::StrCat("retort ", StageCommandName(stage), " ",
                      StageSettingsJson(stage, device).dump());
}

absl::Status RunStageJob(const proto::Stage& stage, const StageContext& context, const JobIo& io) {
  ASSIGN_OR_RETURN(std::unique_ptr<JobCommand> job, NewStageJob(stage));
  po::options_description options;
  job->AddOptions(options, /*command_line=*/false);
  po::variables_map vm;
  try {
    const std::vector<std::string> extra(stage.extra_args().begin(), stage.extra_args().end());
    po::store(po::command_line_parser(extra).options(options).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return OptionError(absl::StrCat("extra_args: ", e.what()));
  }
  RETURN_IF_ERROR(job->FromStage(stage, context, vm));
  return job->Run(vm, io);
}

absl::StatusOr<std::vector<std::string>> StageLauncher(const proto::Stage& stage,
                                                       const StageContext& context,
                                                       const std::string& job_file) {
  if (!stage.has_distill() || !stage.distill().has_ranks() || stage.distill().ranks() <= 1) {
    return std::vector<std::string>{};
  }
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  std::string stage_json;
  if (!google::protobuf::util::MessageToJsonString(stage, &stage_json, print).ok()) {
    return absl::InternalError("cannot write the stage as JSON");
  }
  ASSIGN_OR_RETURN(nlohmann::json stage_obj, ParseJson(stage_json, "the stage"));
  nlohmann::json j = {{"stage", std::move(stage_obj)},
                      {"dir", context.dir},
                      {"threads", context.threads},
                      {"device", context.device},
                      {"resume", context.resume}};
  RETURN_IF_ERROR(WriteFileAtomically(job_file, j.dump(2) + "\n"));
  return std::vector<std::string>{"mpirun", "-np",       absl::StrCat(stage.distill().ranks()),
                                  "retort", "stage-job", job_file};
}

absl::StatusOr<std::pair<proto::Stage, StageContext>> ReadStageJobFile(
    const std::string& job_file) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(job_file));
  auto bad = [&] { return absl::DataLossError(absl::StrCat(job_file, ": not a stage job file")); };
  absl::StatusOr<nlohmann::json> parsed = ParseJson(text, job_file);
  if (!parsed.ok()) return absl::DataLossError(parsed.status().message());
  nlohmann::json j = *std::move(parsed);
  if (!j.is_object() || !j.contains("stage") || !j["dir"].is_string() ||
      !j["threads"].is_number_integer() || !j["device"].is_string()) {
    return bad();
  }
  std::pair<proto::Stage, StageContext> out;
  if (!google::protobuf::util::JsonStringToMessage(j["stage"].dump(), &out.first).ok()) {
    return bad();
  }
  out.second.dir = j["dir"].get<std::string>();
  out.second.threads = j["threads"].get<int>();
  out.second.device = j["device"].get<std::string>();
  out.second.resume = j.value("resume", false);
  return out;
}

}  // namespace retort::pipeline
