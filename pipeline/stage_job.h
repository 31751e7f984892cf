// The `retort` commands a recipe stage can run (init, generate --prompts,
// distill, prune, quantize, convert; an eval stage is a greedy generate), as
// objects: each declares its options once, bound to its typed settings, and
// runs its library job (quantize/quantize_job.h, prune/prune_job.h,
// distill/train_student.h, ...). The CLI parses a command line with those
// options (cli/cmd_*.cc); `retort run` parses a stage's extra_args with the
// same options, sets the recipe's typed fields on top and calls the same job
// in its own process: nothing is turned into a command line and parsed
// again. Only a multi-rank distill stage runs as child processes
// (`mpirun -np K retort stage-job FILE`), each of which reads the stage back
// from FILE and runs it through RunStageJob.
#ifndef RETORT_PIPELINE_STAGE_JOB_H_
#define RETORT_PIPELINE_STAGE_JOB_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "boost/program_options.hpp"
#include "core/progress.h"
#include "formats/proto/recipe.pb.h"
#include "model/calibration.h"

namespace retort::pipeline {

namespace po = boost::program_options;

// Where a job writes: its results (the lines a command prints on stdout), its
// notes and warnings, and its progress.
struct JobIo {
  std::ostream* out;
  std::ostream* err;
  ProgressSink* progress;
  // How the job was asked for ("retort distill STUDENT --data ..."), recorded
  // where a job keeps its provenance (distill's run.json).
  std::string invocation;
};

// Where a stage's job runs: the folder it writes into, the worker threads
// (> 0 overrides the command's default), the device ("cpu", "cuda:0"; the
// caller selects it before the job runs), and whether the folder holds what
// an interrupted attempt of the same stage left (a distill stage resumes from
// its newest checkpoint; a generate stage resumes in any case). The stage
// itself comes with every input resolved to a path (pipeline/recipe.h
// ResolveStageInputs).
struct StageContext {
  std::string dir;
  int threads = 0;
  std::string device = "cpu";
  bool resume = false;
};

// OUT, what a command writes, with the conventions every command keeps: it
// is the positional after the command's inputs and also -o/--output; an
// existing OUT is refused unless --force, which replaces it only once the new
// one is complete (written under a temporary name beside it, then renamed
// over it); "-" is stdout where OUT is one text stream and refused elsewhere.
// A resumable job's folder (generate --prompts, run) is continued instead.
class OutputOption {
 public:
  enum class Kind {
    kFolder,  // a folder (an HF directory, a training run)
    kFile,    // one binary file (.safetensors, an imatrix)
    kModel,   // a model: a .gguf file or an HF directory
    kStream,  // one text stream (JSONL, HTML): "-" writes it to stdout
  };
  enum class Existing {
    kRefuse,  // refused unless --force
    kResume,  // continued: the job resumes what the folder holds (no --force)
  };
  explicit OutputOption(Kind kind, Existing existing = Existing::kRefuse)
      : kind_(kind), existing_(existing) {}
  // A folder refused unless --force, or continued when `*resume` (the job's
  // --resume) is set.
  OutputOption(Kind kind, const bool* resume)
      : kind_(kind), existing_(Existing::kRefuse), resume_(resume) {}

  // Adds "output,o" (or `name`, for a command whose OUT is an option of one
  // of its modes: eval's --dump-logits) and, unless the folder is resumed,
  // "force". Required when `required`. `help` says what OUT is; the rules
  // are added to it.
  void AddOptions(po::options_description& options, bool required, const std::string& help,
                  const char* name = "output,o");

  const std::string& path() const { return path_; }
  std::string& path() { return path_; }
  bool force() const { return force_; }
  bool to_stdout() const { return kind_ == Kind::kStream && path_ == "-"; }

  // The checks before any work, as one line: "-" where OUT is not a stream,
  // and an existing OUT (anything but an empty folder) without --force. Only
  // rank 0 of an mpirun group checks (the others write nothing there).
  absl::Status Check() const;

  // Runs `job`, which writes into OUT as it goes (a training run's
  // checkpoints). With --force an existing OUT is moved aside first and
  // removed once the job has written into the new OUT, or put back when the
  // job wrote nothing there.
  absl::Status RunReplacing(const std::function<absl::Status()>& job) const;

 private:
  Kind kind_;
  Existing existing_;
  const bool* resume_ = nullptr;
  std::string flag_ = "-o";  // how OUT is given: "-o", "--dump-logits"
  std::string path_;
  bool force_ = false;
};

class JobCommand {
 public:
  virtual ~JobCommand() = default;

  // The command's options, bound to this object's settings. `command_line`:
  // the options that are positional or required on a command line are
  // marked so (a recipe stage gives them as typed fields instead).
  virtual void AddOptions(po::options_description& options, bool command_line) = 0;
  // The positional options of the command line, in order ("model", "output").
  virtual std::vector<std::string> Positionals() const = 0;

  // Sets the settings a recipe stage gives as typed fields and its output
  // folder. `vm` holds the stage's extra_args: a setting given both ways is
  // an error. REQUIRES: `stage` is of this command's kind.
  virtual absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                                 const po::variables_map& vm) = 0;

  // Checks the settings (an OptionError for a usage error: the CLI exits 2)
  // and runs the job. Cancelled when interrupted.
  virtual absl::Status Run(const po::variables_map& vm, const JobIo& io) = 0;

  // The command's OUT when it declares one with OutputOption: the CLI checks
  // it (OutputOption::Check) before Run; a recipe stage's folders are the
  // runner's. Null when the command checks its output itself.
  virtual const OutputOption* Output() const { return nullptr; }
};

// An option a command line must give (positional or required there) but a
// recipe stage sets from its typed fields.
template <typename T>
po::typed_value<T>* RequiredOnCommandLine(T* value, bool command_line) {
  po::typed_value<T>* v = po::value(value);
  return command_line ? v->required() : v;
}

// The commands, one object per run.
std::unique_ptr<JobCommand> NewInitJob();
std::unique_ptr<JobCommand> NewGenerateTracesJob();
std::unique_ptr<JobCommand> NewDistillJob();
std::unique_ptr<JobCommand> NewPruneJob();
std::unique_ptr<JobCommand> NewQuantizeJob();
std::unique_ptr<JobCommand> NewConvertJob();

// The calibration options of the commands that look at activations
// (quantize, calibrate, prune): --calib FILE..., --calib-samples,
// --calib-seq-len.
void AddCalibOptions(po::options_description& options, CalibrationFiles& files);

// The command a stage runs ("distill"; "generate" for an eval stage).
std::string StageCommandName(const proto::Stage& stage);
// How a stage's job reads in logs: "retort distill {settings JSON}".
std::string StageCommandLine(const proto::Stage& stage, const std::string& device);

// Runs a resolved stage's job in this process: its extra_args parsed with the
// command's options, the typed fields on top, the job into `context.dir`.
// Errors are the job's own (the caller names the stage and the command).
// A distill stage with ranks > 1 is not run here: see StageLauncher.
absl::Status RunStageJob(const proto::Stage& stage, const StageContext& context, const JobIo& io);

// For a distill stage with ranks > 1: the child command line
// ({"mpirun", "-np", "K", "retort", "stage-job", FILE}) after writing the
// resolved stage and its context to FILE (beside the stage folder); empty for
// every other stage. `retort stage-job FILE` reads it back with
// ReadStageJobFile and runs it through RunStageJob on each rank.
absl::StatusOr<std::vector<std::string>> StageLauncher(const proto::Stage& stage,
                                                       const StageContext& context,
                                                       const std::string& job_file);
absl::StatusOr<std::pair<proto::Stage, StageContext>> ReadStageJobFile(const std::string& job_file);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_STAGE_JOB_H_
