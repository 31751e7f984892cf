// Runs `retort serve` as a real child process for the end-to-end tests of
// the server (tests/cli/serve_test.cc) and of the endpoint client
// (tests/distill/endpoint_test.cc): port 0, the port read back from the
// "listening on http://HOST:PORT" line it prints, stderr kept in a file.
#ifndef RETORT_TESTS_CLI_SERVE_PROCESS_H_
#define RETORT_TESTS_CLI_SERVE_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/file.h"

namespace retort::testing {

inline std::string RetortBinary() {
  const char* bin = std::getenv("RETORT_BINARY_DIR");
  return std::string(bin ? bin : RETORT_BINARY_DIR_PATH) + "/cli/retort";
}

class ServeProcess {
 public:
  ServeProcess() = default;
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Starts `retort serve ARGS --port 0` (stderr to `stderr_path`) and waits up
  // to `timeout_s` for its URL. False with *error set if it does not come up.
  bool Start(const std::vector<std::string>& args, const std::string& stderr_path,
             std::string* error, double timeout_s = 60) {
    stderr_path_ = stderr_path;
    int out[2];
    if (::pipe(out) != 0) return Error("pipe failed", error);
    std::vector<std::string> argv_s = {RetortBinary(), "serve"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    argv_s.push_back("--port");
    argv_s.push_back("0");
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) return Error("fork failed", error);
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) ::dup2(err, 2);
      ::close(out[0]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    bool ok = false;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char c;
      ssize_t r = ::read(out[0], &c, 1);
      if (r <= 0) break;  // the process closed stdout (exited)
      if (c != '\n') {
        line.push_back(c);
        continue;
      }
      size_t at = line.find("listening on http://");
      if (at != std::string::npos) {
        std::string rest = line.substr(at + 20);
        size_t colon = rest.find(':');
        port_ = std::atoi(rest.c_str() + colon + 1);
        host_ = rest.substr(0, colon);
        ok = port_ > 0;
        break;
      }
      line.clear();
    }
    ::close(out[0]);
    if (!ok) return Error("retort serve did not print its URL; stderr: " + Stderr(), error);
    return true;
  }

  // Sends `sig` and waits up to `timeout_s` for the exit; returns the exit
  // code, or -1 if it was killed by a signal or did not exit in time.
  int Stop(int sig = SIGTERM, double timeout_s = 30) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      ::usleep(20 * 1000);
    }
    return -1;
  }

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  std::string Stderr() const { return ReadFileToString(stderr_path_).value_or(""); }

 private:
  bool Error(const std::string& message, std::string* error) {
    *error = message;
    return false;
  }

  pid_t pid_ = -1;
  int port_ = 0;
  std::string host_;
  std::string stderr_path_;
};

}  // namespace retort::testing

#endif  // RETORT_TESTS_CLI_SERVE_PROCESS_H_
