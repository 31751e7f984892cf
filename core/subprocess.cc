#include "core/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

extern char** environ;

namespace retort {
namespace {

// Closes a file descriptor once.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

void KillGroupAndReap(pid_t pid, bool reaped) {
  ::kill(-pid, SIGKILL);
  if (!reaped) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace

absl::StatusOr<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                               std::string_view input,
                                               const SubprocessOptions& options) {
  using Clock = std::chrono::steady_clock;
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  const std::string& name = argv[0];

  // stdin is a socket so that writing to a child that never reads can be
  // non-blocking and SIGPIPE-free (MSG_NOSIGNAL).
  int in_pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) {
    return absl::InternalError(absl::StrCat("socketpair: ", std::strerror(errno)));
  }
  Fd in_parent(in_pair[0]), in_child(in_pair[1]);
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  Fd out_parent(out_pipe[0]), out_child(out_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_child.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, out_child.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, out_child.fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty_mask, default_signals;
  sigemptyset(&empty_mask);
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int spawn_error = ::posix_spawnp(&pid, name.c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  in_child.Close();
  out_child.Close();
  if (spawn_error != 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot start '", name, "': ", std::strerror(spawn_error)));
  }

  ::fcntl(in_parent.fd, F_SETFL, ::fcntl(in_parent.fd, F_GETFL) | O_NONBLOCK);
  ::fcntl(out_parent.fd, F_SETFL, ::fcntl(out_parent.fd, F_GETFL) | O_NONBLOCK);
  if (input.empty()) in_parent.Close();  // EOF at once, not at the timeout
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options.timeout_seconds));
  const size_t max_output = options.max_output_bytes;
  std::string output;
  size_t written = 0;
  bool reaped = false;
  int status = 0;
  auto timed_out = [&]() -> absl::Status {
    KillGroupAndReap(pid, reaped);
    return absl::DeadlineExceededError(
        absl::StrFormat("'%s' ran past its timeout of %.3g s", name, options.timeout_seconds));
  };

  // Feed stdin and drain stdout until the child exits (a grandchild holding
  // the pipe open does not keep us waiting).
  while (!reaped) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) reaped = true;
    std::vector<pollfd> fds;
    if (in_parent.fd >= 0 && written < input.size()) fds.push_back({in_parent.fd, POLLOUT, 0});
    if (out_parent.fd >= 0) fds.push_back({out_parent.fd, POLLIN, 0});
    auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (!reaped && remaining <= 0) return timed_out();
    int wait_ms = reaped ? 0 : static_cast<int>(std::min<long long>(remaining, 20));
    if (fds.empty()) {
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      continue;
    }
    int n = ::poll(fds.data(), fds.size(), wait_ms);
    if (n < 0 && errno != EINTR) {
      KillGroupAndReap(pid, reaped);
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    for (const pollfd& p : fds) {
      if (p.fd == in_parent.fd && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t k = ::send(in_parent.fd, input.data() + written, input.size() - written,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) written += static_cast<size_t>(k);
        // The child may exit without reading its stdin; that is its right.
        if (k < 0 && errno != EAGAIN && errno != EINTR) written = input.size();
        if (written >= input.size()) in_parent.Close();
      } else if (p.fd == out_parent.fd && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
        char buf[4096];
        for (;;) {
          ssize_t k = ::read(out_parent.fd, buf, sizeof(buf));
          if (k > 0) {
            if (output.size() < max_output)
              output.append(buf, std::min<size_t>(k, max_output - output.size()));
            continue;
          }
          if (k == 0) out_parent.Close();
          break;
        }
      }
    }
    if (reaped) break;
  }
  // Leftover processes in the child's group (backgrounded by a script).
  ::kill(-pid, SIGKILL);

  SubprocessResult result;
  result.output = std::move(output);
  if (WIFEXITED(status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(status);
  } else {
    result.signaled = true;
    result.signal = WIFSIGNALED(status) ? WTERMSIG(status) : -1;
  }
  return result;
}

}  // namespace retort
