// Running an external program with bytes on its stdin, a wall-clock limit and
// its output captured: what a "command:" verifier needs, and the one place
// retort starts a child process and waits on it with a timeout.
//
// The program is started directly with posix_spawnp (PATH is searched): no
// shell is involved, so nothing in argv or the input can inject a command.
// The child gets its own process group, killed as a whole at the timeout and
// after it exits (processes it backgrounded do not outlive it).
//
// Thread safety: RunSubprocess may be called from several threads at once.
#ifndef RETORT_CORE_SUBPROCESS_H_
#define RETORT_CORE_SUBPROCESS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace retort {

struct SubprocessOptions {
  // Wall-clock limit; the process group is killed when it runs past it.
  double timeout_seconds = 60.0;
  // How much of stdout + stderr (interleaved as written) to keep.
  size_t max_output_bytes = 4096;
};

// How a child ended. Exactly one of `exited` or `signaled` is true.
struct SubprocessResult {
  bool exited = false;
  int exit_code = 0;  // when exited
  bool signaled = false;
  int signal = 0;      // when signaled
  std::string output;  // the first max_output_bytes of stdout + stderr
};

// Runs argv[0] (REQUIRES: argv non-empty, timeout_seconds > 0) with `input` on
// its stdin; a child that exits without reading its stdin is fine. A grandchild
// holding the output pipe open does not keep the call waiting. Errors:
// NotFound "cannot start '<prog>': ..." when the program does not start,
// DeadlineExceeded "'<prog>' ran past its timeout of <t> s", Internal for a
// failing system call; the messages name no caller, so callers prefix them.
absl::StatusOr<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                               std::string_view input,
                                               const SubprocessOptions& options);

}  // namespace retort

#endif  // RETORT_CORE_SUBPROCESS_H_
