// Shared plumbing for the `retort` subcommands: option parsing with --help,
// one-line errors, and the exit codes the CLI promises (0 ok, 1 failure, 2 usage).
#ifndef RETORT_CLI_CLI_UTIL_H_
#define RETORT_CLI_CLI_UTIL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "boost/program_options.hpp"
#include "core/device.h"

namespace retort::cli {

namespace po = boost::program_options;

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

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

// Prints "retort NAME: error: MESSAGE" on one line and returns kExitFailure.
int Fail(const std::string& command, const absl::Status& status);
int UsageError(const std::string& command, const std::string& message);

// Comma-separated integers ("1,2, 3").
absl::Status ParseIntList(const std::string& text, std::vector<int32_t>* out);

// An output directory built under a temporary sibling name
// (".OUT.partial-PID") and renamed to OUT by Commit(), so a failed command
// leaves nothing at OUT; the destructor removes an uncommitted folder.
class StagedDir {
 public:
  // Error when OUT exists and is not an empty directory.
  static absl::StatusOr<StagedDir> Create(const std::string& out);
  StagedDir(StagedDir&& o) noexcept;
  StagedDir& operator=(StagedDir&&) = delete;
  ~StagedDir();
  // Where to write (the temporary folder; created by the writer).
  const std::string& path() const { return tmp_; }
  // Renames the temporary folder to OUT (replacing an empty directory there).
  absl::Status Commit();

 private:
  StagedDir() = default;
  std::string out_, tmp_;
};

}  // namespace retort::cli

#endif  // RETORT_CLI_CLI_UTIL_H_
