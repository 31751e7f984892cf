// Shared plumbing for the `retort` subcommands: option parsing with --help,
// one-line errors, and the exit codes the CLI promises (0 ok, 1 failure, 2 usage).
#ifndef RETORT_CLI_CLI_UTIL_H_
#define RETORT_CLI_CLI_UTIL_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "boost/program_options.hpp"
#include "core/device.h"
#include "core/file.h"
#include "core/progress.h"
#include "pipeline/stage_job.h"

namespace retort::cli {

namespace po = boost::program_options;

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Where a command writes: its results (stdout), its messages and errors
// (stderr) and its jobs' progress. `retort` itself uses the process's
// streams (StdIo); `retort run` gives each stage streams into its log, and
// `error` receives the stage's failure (the message Fail/UsageError print).
struct CommandIo {
  std::ostream* out;
  std::ostream* err;
  ProgressSink* progress;
  absl::Status* error = nullptr;
};
const CommandIo& StdIo();

struct CommandSpec {
  std::string name;     // "generate"
  std::string usage;    // "MODEL [options]"
  std::string summary;  // one line for `retort --help`
  // The command's first positional is a model (MODEL, STUDENT, IN): when it
  // is not given, ParseArgs puts DefaultModelPath() in its place (a single
  // positional of a MODEL OUT command is then OUT).
  bool default_model = false;
  // The command runs a model: ParseArgs adds --device (AddDeviceOption) and,
  // once the options parse, selects that device (SelectDevice) before the
  // command opens a model or writes anything.
  bool device = false;
};

// The model a command uses when none is given: $RETORT_MODEL when set, else
// the bundled teacher (models/arith-teacher) beside the binary's source tree
// (found from the executable, then from the source folder it was built
// from). Empty when there is none.
std::string DefaultModelPath();

// Parses `args` (without the program and command names). Adds --help (and
// --device when spec.device, then selects it). Returns an exit code when the
// command should stop (help printed, a usage error printed to stderr, or an
// unusable --device: kExitFailure), std::nullopt when `vm` is ready to use.
std::optional<int> ParseArgs(const CommandSpec& spec, const std::vector<std::string>& args,
                             po::options_description& options,
                             const po::positional_options_description& positional,
                             po::variables_map& vm);
std::optional<int> ParseArgs(const CommandIo& io, const CommandSpec& spec,
                             const std::vector<std::string>& args, po::options_description& options,
                             const po::positional_options_description& positional,
                             po::variables_map& vm);

// `--device` (default "cpu"): where the command's model runs (cpu, cuda or
// cuda:N; core/device.h).
void AddDeviceOption(po::options_description& options);

// The device `text` names ("cpu", "cuda", "cuda:N") when this binary can run
// on it; else one error line (which the caller prefixes with the device) for
// a wrong spelling, a backend that is not compiled in, or a device that does
// not exist.
absl::StatusOr<Device> UsableDevice(const std::string& text);

// Parses a --device value and makes it the device model code runs on
// (kernels/backend.h SetDefaultDevice). When the spelling is wrong, or this
// binary has no backend for it, or there is no such device, prints one line
// ("retort NAME: error: --device cuda:1: ...") and returns kExitFailure;
// std::nullopt when the device is selected.
std::optional<int> SelectDevice(const std::string& command, const std::string& device);
// Help text with each "(=0.000300000014)" default written as the shortest
// number that reads back as the same float or double ("(=0.0003)").
std::string ShortestDefaults(const std::string& help);

// SelectDevice's work without the printing: the error reads "--device TEXT: ...".
absl::Status UseDevice(const std::string& device);
std::optional<int> SelectDevice(const CommandIo& io, const std::string& command,
                                const std::string& device);

// Prints "retort NAME: error: MESSAGE" on one line and returns kExitFailure.
// (An OptionError status is printed as a usage error.) The CommandIo forms
// write to io.err and record the error in io.error.
int Fail(const std::string& command, const absl::Status& status);
int UsageError(const std::string& command, const std::string& message);
int Fail(const CommandIo& io, const std::string& command, const absl::Status& status);
int UsageError(const CommandIo& io, const std::string& command, const std::string& message);

// A command that is a typed job (pipeline/stage_job.h): parses `args` with
// the job's options, runs it and prints its error. Exit codes as above; 130
// when the job was interrupted (it has said so and kept what it can resume).
int RunJobCommand(const CommandIo& io, const CommandSpec& spec, pipeline::JobCommand& job,
                  const std::vector<std::string>& args);

// Comma-separated integers ("1,2, 3").
absl::Status ParseIntList(const std::string& text, std::vector<int32_t>* out);

}  // namespace retort::cli

#endif  // RETORT_CLI_CLI_UTIL_H_
