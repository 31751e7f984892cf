// retort run RECIPE -o RUN_DIR [--from STAGE] [--only STAGE] [--force]
//                             [--threads N] [--dry-run]
//
// Runs a recipe (formats/proto/recipe.proto; example: recipes/arith.textproto)
// through pipeline/runner.h. Each stage's command runs in this process
// through the Run* functions of cli/commands.h, with its stdout and stderr
// also copied to RUN_DIR/<stage>/log.txt; a failing command's own error line
// becomes the stage's error in manifest.json.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "pipeline/results.h"
#include "pipeline/runner.h"

namespace retort::cli {
namespace {

// While alive, whatever is written to file descriptors 1 and 2 (by this
// process's iostreams, stdio or anything else) still reaches the terminal
// and is also appended to a log file; the end of stderr is kept for the
// error message. One at a time per process.
class OutputTee {
 public:
  // `echo_stdout` false: the command's stdout goes to the log only (its
  // stderr, progress and errors, still reaches the terminal).
  static absl::StatusOr<std::unique_ptr<OutputTee>> Start(const std::string& log_path,
                                                          bool echo_stdout) {
    std::unique_ptr<OutputTee> tee(new OutputTee());
    tee->echo_stdout_ = echo_stdout;
    tee->log_fd_ = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tee->log_fd_ < 0) {
      return absl::InternalError(absl::StrCat(log_path, ": cannot create the log"));
    }
    FlushAll();
    for (int i = 0; i < 2; ++i) {
      Channel& c = tee->channels_[i];
      c.fd = i + 1;
      int p[2];
      if (::pipe(p) != 0) return absl::InternalError("cannot create a pipe for the stage log");
      c.read_fd = p[0];
      c.saved_fd = ::dup(c.fd);
      ::dup2(p[1], c.fd);
      ::close(p[1]);
      c.reader = std::thread([t = tee.get(), &c] { t->Pump(c); });
    }
    return tee;
  }

  ~OutputTee() { Stop(); }

  // Puts fds 1 and 2 back and waits until everything written is copied.
  void Stop() {
    FlushAll();
    for (Channel& c : channels_) {
      if (c.saved_fd < 0) continue;
      ::dup2(c.saved_fd, c.fd);  // closes the pipe's last write end: the reader sees EOF
      if (c.reader.joinable()) c.reader.join();
      ::close(c.saved_fd);
      ::close(c.read_fd);
      c.saved_fd = -1;
    }
    if (log_fd_ >= 0) ::close(log_fd_);
    log_fd_ = -1;
  }

  // The command's own error message: the text after ": error: " on the last
  // stderr line that has it, else the last non-empty stderr line.
  // REQUIRES: Stop() called.
  std::string ErrorMessage() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string last, error;
    for (absl::string_view line : absl::StrSplit(stderr_tail_, '\n', absl::SkipWhitespace())) {
      last = std::string(line);
      if (size_t at = line.find(": error: "); at != absl::string_view::npos) {
        error = std::string(line.substr(at + 9));
      }
    }
    return error.empty() ? last : error;
  }

 private:
  struct Channel {
    int fd = -1, read_fd = -1, saved_fd = -1;
    std::thread reader;
  };

  OutputTee() = default;

  static void FlushAll() {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
  }

  static void WriteAll(int fd, const char* p, ssize_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w <= 0) return;
      p += w;
      n -= w;
    }
  }

  void Pump(Channel& c) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(c.read_fd, buf, sizeof(buf))) > 0) {
      if (c.fd != 1 || echo_stdout_) WriteAll(c.saved_fd, buf, n);
      std::lock_guard<std::mutex> lock(mu_);
      WriteAll(log_fd_, buf, n);
      if (c.fd == 2) {
        stderr_tail_.append(buf, n);
        if (stderr_tail_.size() > 16384) stderr_tail_.erase(0, stderr_tail_.size() - 8192);
      }
    }
  }

  int log_fd_ = -1;
  bool echo_stdout_ = true;
  Channel channels_[2];
  std::mutex mu_;
  std::string stderr_tail_;
};

// `retort run --verbose`: the stages' stdout on the terminal too.
bool g_echo_stdout = false;

// The subcommands a recipe stage can become.
const std::map<std::string, int (*)(const Args&)>& StageCommands() {
  static const auto* commands = new std::map<std::string, int (*)(const Args&)>{
      {"init", RunInit},   {"generate", RunGenerate}, {"distill", RunDistill},
      {"prune", RunPrune}, {"quantize", RunQuantize}, {"convert", RunConvert}};
  return *commands;
}

// What a command run under the tee ended with: its exit code (-1: killed by
// a signal) and, when it failed, its own error line.
struct TeedRun {
  int code = kExitOk;
  std::string message;
};

// Prints `echo` and runs `body` (which returns the command's exit code) with
// fds 1 and 2 copied into `log_path` (stdout echoed only with --verbose).
absl::StatusOr<TeedRun> RunTeed(const std::string& log_path, const std::string& echo,
                                const std::function<absl::StatusOr<int>()>& body) {
  ASSIGN_OR_RETURN(std::unique_ptr<OutputTee> tee, OutputTee::Start(log_path, g_echo_stdout));
  std::cerr << echo << "\n";
  absl::StatusOr<int> code = body();
  tee->Stop();
  if (!code.ok()) return code.status();
  TeedRun run{*code, ""};
  if (run.code != kExitOk) run.message = tee->ErrorMessage();
  return run;
}

// A stage launched as its own process group ("mpirun -np K retort distill
// ..."): "retort" becomes this binary; the output goes through the same tee
// (the child inherits the redirected descriptors). Runs as root only with
// OpenMPI's explicit consent flag, which mpirun otherwise demands.
absl::Status RunLauncher(const std::vector<std::string>& argv, const std::string& log_path) {
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
  ASSIGN_OR_RETURN(
      TeedRun run,
      RunTeed(
          log_path, absl::StrCat("[run] ", absl::StrJoin(argv, " ")), [&]() -> absl::StatusOr<int> {
            std::cerr.flush();
            pid_t pid = 0;
            const int rc = ::posix_spawnp(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ);
            if (rc != 0) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "cannot start ", argv[0], ": ", std::strerror(rc),
                  argv[0] == "mpirun" ? " (install OpenMPI: scripts/setup.sh does)" : ""));
            }
            int status = 0;
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
          }));
  if (run.code == kExitOk) return absl::OkStatus();
  return absl::UnknownError(
      absl::StrCat(argv[0], " exited with ",
                   run.code >= 0 ? absl::StrCat("code ", run.code) : std::string("a signal"),
                   run.message.empty() ? "" : ": ", run.message));
}

absl::Status RunInProcess(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty stage command");
  if (argv[0] == "mpirun") return RunLauncher(argv, log_path);
  auto it = StageCommands().find(argv[0]);
  if (it == StageCommands().end()) {
    return absl::InvalidArgumentError(absl::StrCat("no stage command \"", argv[0], "\""));
  }
  ASSIGN_OR_RETURN(TeedRun run,
                   RunTeed(log_path, absl::StrCat("[run] retort ", absl::StrJoin(argv, " ")),
                           [&]() -> absl::StatusOr<int> {
                             return it->second(Args(argv.begin() + 1, argv.end()));
                           }));
  const int code = run.code;
  std::string message = std::move(run.message);
  if (code == kExitOk) return absl::OkStatus();
  if (message.empty()) message = absl::StrCat("exited with status ", code);
  // Usage errors print "retort CMD: MESSAGE" without ": error: ".
  if (const std::string prefix = absl::StrCat("retort ", argv[0], ": ");
      absl::StartsWith(message, prefix)) {
    message = message.substr(prefix.size());
  }
  const std::string text = absl::StrCat("retort ", argv[0], ": ", message);
  if (code == 130) return absl::CancelledError(text);
  return code == kExitUsage ? absl::InvalidArgumentError(text) : absl::UnknownError(text);
}

}  // namespace

int RunRun(const Args& args) {
  CommandSpec spec{
      "run", "RECIPE -o RUN_DIR [--from STAGE] [--only STAGE] [--force] [--threads N] [--dry-run]",
      "Run a recipe's stages in order (formats/proto/recipe.proto: text format, or JSON for "
      "*.json), each into RUN_DIR/<stage>/, with RUN_DIR/manifest.json and a provenance.json per "
      "stage. A stage whose settings, input hashes and retort version match its provenance and "
      "whose outputs are intact is skipped; a changed input reruns the stages that depend on "
      "it."};
  pipeline::RunOptions o;
  po::options_description opts("options");
  opts.add_options()("recipe", po::value(&o.recipe_path)->required(),
                     "recipe file (.textproto, or .json)")(
      "output,o", po::value(&o.run_dir)->required(),
      "run directory (created; resumed when it exists)")(
      "from", po::value(&o.from),
      "run this stage and the later ones (earlier ones stay as they are)")(
      "only", po::value(&o.only), "run only this stage")(
      "force", po::bool_switch(&o.force), "rerun the selected stages even when up to date")(
      "threads", po::value(&o.threads)->default_value(0), "worker threads (0 = all cores)")(
      "dry-run", po::bool_switch(&o.dry_run),
      "print each stage's command and state; write nothing")(
      "verbose,v", po::bool_switch(&g_echo_stdout),
      "show each command's standard output too (always in RUN_DIR/<stage>/log.txt)");
  po::positional_options_description pos;
  pos.add("recipe", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (o.threads < 0) return UsageError(spec.name, "--threads must be >= 0");
  if (o.threads > 0) SetNumThreads(o.threads);
  o.run_command = RunInProcess;
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
