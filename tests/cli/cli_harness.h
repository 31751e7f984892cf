// Runs the `retort` binary the way a user does and captures what they see.
// Shared by the CLI end-to-end tests.
#ifndef RETORT_TESTS_CLI_CLI_HARNESS_H_
#define RETORT_TESTS_CLI_CLI_HARNESS_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/file.h"

namespace retort::testing {

struct CliRun {
  int code = -1;
  std::string out, err;
};

// A scratch folder per test process and the binary under test.
class CliHarness {
 public:
  explicit CliHarness(const std::string& name) {
    const char* bin = std::getenv("RETORT_BINARY_DIR");
    binary_ = std::string(bin ? bin : RETORT_BINARY_DIR_PATH) + "/cli/retort";
    root_ = std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(root_);
  }
  ~CliHarness() { std::filesystem::remove_all(root_); }

  // `retort ARGS` through the shell (ARGS may quote); stdout and stderr captured.
  CliRun Exec(const std::string& args) { return ExecWithPrefix("", args); }
  // Same, with `prefix` (environment assignments, a launcher such as mpirun)
  // in front of the binary.
  CliRun ExecWithPrefix(const std::string& prefix, const std::string& args) {
    std::string out = (root_ / ("out" + std::to_string(n_))).string();
    std::string err = (root_ / ("err" + std::to_string(n_++))).string();
    int status = std::system((prefix + binary_ + " " + args + " >" + out + " 2>" + err).c_str());
    CliRun r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFileToString(out).value_or("");
    r.err = ReadFileToString(err).value_or("");
    return r;
  }
  const std::filesystem::path& root() const { return root_; }
  const std::string& binary() const { return binary_; }

 private:
  std::string binary_;
  std::filesystem::path root_;
  int n_ = 0;
};

}  // namespace retort::testing

#endif  // RETORT_TESTS_CLI_CLI_HARNESS_H_
