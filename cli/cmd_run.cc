// retort run RECIPE RUN_DIR [--from STAGE] [--only STAGE] [--force]
//                             [--threads N] [--dry-run]
//
// Runs a recipe (formats/proto/recipe.proto; example: recipes/arith.textproto)
// through pipeline/runner.h. Each stage's typed job (pipeline/stage_job.h)
// runs in this process with streams and a progress sink that write
// RUN_DIR/<stage>/log.txt and the terminal; the job's error becomes the
// stage's error in manifest.json. Only a multi-rank stage is a child process
// ("mpirun -np K retort stage-job FILE"), its output read from pipes.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <streambuf>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/backend.h"
#include "pipeline/recipe.h"
#include "pipeline/results.h"
#include "pipeline/runner.h"
#include "pipeline/stage_job.h"

namespace retort::cli {
namespace {

// An output stream's buffer that writes to the stage's log file and, when
// `echo` is set, to a terminal stream too.
class LogBuf : public std::streambuf {
 public:
  LogBuf(std::FILE* log, std::streambuf* echo) : log_(log), echo_(echo) {}

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::fwrite(s, 1, static_cast<size_t>(n), log_);
    if (echo_ != nullptr) echo_->sputn(s, n);
    return n;
  }
  int sync() override {
    std::fflush(log_);
    if (echo_ != nullptr) echo_->pubsync();
    return 0;
  }

 private:
  std::FILE* log_;
  std::streambuf* echo_;
};

// RUN_DIR/<stage>/log.txt and what the terminal shows of a stage: its
// messages, errors and progress always, its results (stdout) with --verbose.
class StageLog {
 public:
  static absl::StatusOr<std::unique_ptr<StageLog>> Open(const std::string& path, bool echo_stdout) {
    std::FILE* f = std::fopen(path.c_str(), "we");
    if (f == nullptr) return absl::InternalError(absl::StrCat(path, ": cannot create the log"));
    return std::unique_ptr<StageLog>(new StageLog(f, echo_stdout));
  }
  ~StageLog() {
    out_.flush();
    err_.flush();
    std::fclose(log_);
  }

  CommandIo io() { return CommandIo{&out_, &err_, &progress_, &error_}; }
  std::ostream& err() { return err_; }
  const absl::Status& error() const { return error_; }

 private:
  StageLog(std::FILE* log, bool echo_stdout)
      : log_(log),
        out_buf_(log, echo_stdout ? std::cout.rdbuf() : nullptr),
        err_buf_(log, std::cerr.rdbuf()),
        out_(&out_buf_),
        err_(&err_buf_),
        log_progress_(log, /*redraw=*/false),
        progress_({&log_progress_, &StderrProgress()}) {}

  std::FILE* log_;
  LogBuf out_buf_, err_buf_;
  std::ostream out_, err_;
  StreamProgress log_progress_;
  TeeProgress progress_;
  absl::Status error_;
};

// `retort run --verbose`: the stages' stdout on the terminal too.
bool g_echo_stdout = false;

// A child's own error line: the text after ": error: " on the last line of
// its stderr that has it, else its last non-empty line.
std::string ChildErrorMessage(const std::string& stderr_tail) {
  std::string last, error;
  for (absl::string_view line : absl::StrSplit(stderr_tail, '\n', absl::SkipWhitespace())) {
    last = std::string(line);
    if (size_t at = line.find(": error: "); at != absl::string_view::npos) {
      error = std::string(line.substr(at + 9));
    }
  }
  return error.empty() ? last : error;
}

// A stage launched as its own process group ("mpirun -np K retort distill
// ..."): "retort" becomes this binary; the child's stdout and stderr come
// back through pipes into the stage log. Runs as root only with OpenMPI's
// explicit consent flag, which mpirun otherwise demands.
absl::Status RunLauncher(const std::vector<std::string>& argv, StageLog& log) {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return absl::InternalError("cannot find the retort binary (/proc/self/exe)");
  std::vector<std::string> command;
  for (size_t i = 0; i < argv.size(); ++i) {
    command.push_back(argv[i] == "retort" ? self : argv[i]);
    if (i == 0 && argv[0] == "mpirun" && ::geteuid() == 0) command.push_back("--allow-run-as-root");
  }
  std::vector<char*> cargv;
  for (std::string& a : command) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError("cannot create a pipe for the stage log");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  std::string stderr_tail;
  if (rc == 0) {
    CommandIo io = log.io();
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open = 2;
    char buf[4096];
    while (open > 0) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          fds[i].fd = -1;
          --open;
          continue;
        }
        std::ostream& to = i == 0 ? *io.out : *io.err;
        to.write(buf, n);
        to.flush();
        if (i == 1) {
          stderr_tail.append(buf, n);
          if (stderr_tail.size() > 16384) stderr_tail.erase(0, stderr_tail.size() - 8192);
        }
      }
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  if (rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc),
                     argv[0] == "mpirun" ? " (install OpenMPI: scripts/setup.sh does)" : ""));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == kExitOk) return absl::OkStatus();
  const std::string message = ChildErrorMessage(stderr_tail);
  return absl::UnknownError(absl::StrCat(
      argv[0], " exited with ", code >= 0 ? absl::StrCat("code ", code) : std::string("a signal"),
      message.empty() ? "" : ": ", message));
}

// A stage's job in this process, on its device.
absl::Status RunStageHere(const proto::Stage& stage, const pipeline::StageContext& context,
                          const CommandIo& io) {
  if (context.device != "cpu") RETURN_IF_ERROR(UseDevice(context.device));
  return pipeline::RunStageJob(
      stage, context,
      {io.out, io.err, io.progress, absl::StrCat("retort run: stage ", stage.name())});
}

// A stage's job with its log: in this process, or as `mpirun` ranks of
// `retort stage-job FILE` for a multi-rank distill stage.
absl::Status RunStage(const proto::Stage& stage, const pipeline::StageContext& context,
                      const std::string& log_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<StageLog> log, StageLog::Open(log_path, g_echo_stdout));
  const std::string command = pipeline::StageCommandName(stage);
  log->err() << "[run] " << pipeline::StageCommandLine(stage, context.device) << std::endl;
  const std::string job_file = context.dir + ".job.json";
  ASSIGN_OR_RETURN(std::vector<std::string> launcher,
                   pipeline::StageLauncher(stage, context, job_file));
  if (!launcher.empty()) {
    log->err() << "[run] " << absl::StrJoin(launcher, " ") << std::endl;
    absl::Status s = RunLauncher(launcher, *log);
    std::error_code ec;
    std::filesystem::remove(job_file, ec);
    return s;
  }
  const CommandIo io = log->io();
  absl::Status s = RunStageHere(stage, context, io);
  if (s.ok()) return s;
  if (!absl::IsCancelled(s)) *io.err << "retort " << command << ": error: " << s.message() << "\n";
  return absl::Status(s.code(), absl::StrCat("retort ", command, ": ", s.message()));
}

}  // namespace

int RunStageJobCommand(const Args& args) {
  CommandSpec spec{
      .name = "stage-job",
      .usage = "FILE",
      .summary = "Run one recipe stage written by `retort run` (a rank of a multi-rank stage)."};
  std::string file;
  po::options_description opts("options");
  opts.add_options()("file", po::value(&file)->required(), "stage job file");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  absl::StatusOr<std::pair<proto::Stage, pipeline::StageContext>> job =
      pipeline::ReadStageJobFile(file);
  if (!job.ok()) return Fail(spec.name, job.status());
  const auto& [stage, context] = *job;
  const std::string command = pipeline::StageCommandName(stage);
  absl::Status s = RunStageHere(stage, context, StdIo());
  if (s.ok()) return kExitOk;
  if (absl::IsCancelled(s)) return 130;
  return Fail(command, s);
}

int RunRun(const Args& args) {
  CommandSpec spec{
      .name = "run",
      .usage = "RECIPE RUN_DIR [--from STAGE] [--only STAGE] [--force] [--threads N] [--dry-run]",
      .summary =
          "Run a recipe's stages in order (formats/proto/recipe.proto: text format, or JSON for "
          "*.json), each into RUN_DIR/<stage>/, with RUN_DIR/manifest.json and a provenance.json "
          "per stage. A stage whose settings, input hashes and retort version match its provenance "
          "and whose outputs are intact is skipped; a changed input reruns the stages that depend "
          "on it. RUN_DIR (or -o RUN_DIR) is resumed when it exists; --force reruns stages, it "
          "never removes RUN_DIR."};
  pipeline::RunOptions o;
  po::options_description opts("options");
  pipeline::OutputOption run_dir(pipeline::OutputOption::Kind::kFolder,
                                 pipeline::OutputOption::Existing::kResume);
  opts.add_options()("recipe", po::value(&o.recipe_path)->required(),
                     "recipe file (.textproto, or .json)");
  run_dir.AddOptions(opts, /*required=*/true, "run directory (created when missing)");
  opts.add_options()("from", po::value(&o.from),
                     "run this stage and the later ones (earlier ones stay as they are)")(
      "only", po::value(&o.only), "run only this stage")(
      "force", po::bool_switch(&o.force), "rerun the selected stages even when up to date")(
      "threads", po::value(&o.threads)->default_value(0), "worker threads (0 = all cores)")(
      "dry-run", po::bool_switch(&o.dry_run),
      "print each stage's command and state; write nothing")(
      "verbose,v", po::bool_switch(&g_echo_stdout),
      "show each command's standard output too (always in RUN_DIR/<stage>/log.txt)");
  po::positional_options_description pos;
  pos.add("recipe", 1).add("output", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (absl::Status s = run_dir.Check(); !s.ok()) return Fail(spec.name, s);
  o.run_dir = run_dir.path();
  if (o.threads < 0) return UsageError(spec.name, "--threads must be >= 0");
  if (o.threads > 0) SetNumThreads(o.threads);
  o.run_stage = RunStage;
  o.check_device = [](const std::string& device) { return UsableDevice(device).status(); };
  o.progress = &std::cerr;
  absl::StatusOr<pipeline::RunSummary> summary = pipeline::RunRecipe(o);
  if (!summary.ok()) {
    if (absl::IsCancelled(summary.status())) {
      std::cerr << "retort run: " << summary.status().message() << "\n";
      return 130;
    }
    return Fail(spec.name, summary.status());
  }
  if (!o.dry_run) {
    if (const std::string table = pipeline::EvalTable(summary->manifest); !table.empty()) {
      std::cout << "\n" << table << "\n";
    }
    std::cout << o.run_dir << ": " << summary->ran << " stage(s) run, " << summary->skipped
              << " up to date; manifest " << o.run_dir << "/manifest.json\n";
  }
  return kExitOk;
}

}  // namespace retort::cli
