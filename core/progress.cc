#include "core/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_format.h"

namespace retort {

void StreamProgress::Line(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  EndStatusLocked();
  std::fprintf(out_, "%.*s\n", static_cast<int>(text.size()), text.data());
  std::fflush(out_);
}

void StreamProgress::Status(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  if (redraw_) {
    // The trailing spaces clear what a longer previous status left.
    std::fprintf(out_, "\r%.*s   ", static_cast<int>(text.size()), text.data());
    status_open_ = true;
  } else {
    std::fprintf(out_, "%.*s\n", static_cast<int>(text.size()), text.data());
  }
  std::fflush(out_);
}

void StreamProgress::EndStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  EndStatusLocked();
}

void StreamProgress::EndStatusLocked() {
  if (!status_open_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
  status_open_ = false;
}

namespace {

// stderr when it is not a terminal (a log file, a pipe): lines as they come,
// but a status at most every kMinStatusSeconds (a long job must not write a
// line per step: the demo wrote 3,400); a status held back is written before
// the next line or EndStatus, so the last state always shows. No "\r".
class ThrottledProgress : public ProgressSink {
 public:
  static constexpr double kMinStatusSeconds = 5.0;
  explicit ThrottledProgress(std::FILE* out) : out_(out) {}
  void Line(std::string_view text) override {
    std::lock_guard<std::mutex> lock(mu_);
    FlushHeldLocked();
    Write(text);
  }
  void Status(std::string_view text) override {
    std::lock_guard<std::mutex> lock(mu_);
    const double now = Now();
    if (now - last_status_ < kMinStatusSeconds) {
      held_.assign(text);
      return;
    }
    held_.clear();
    last_status_ = now;
    Write(text);
  }
  void EndStatus() override {
    std::lock_guard<std::mutex> lock(mu_);
    FlushHeldLocked();
  }

 private:
  static double Now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void Write(std::string_view text) {
    std::fprintf(out_, "%.*s\n", static_cast<int>(text.size()), text.data());
    std::fflush(out_);
  }
  void FlushHeldLocked() {
    if (held_.empty()) return;
    Write(held_);
    held_.clear();
    last_status_ = Now();
  }
  std::mutex mu_;
  std::FILE* out_;
  std::string held_;
  double last_status_ = -1e30;
};

}  // namespace

ProgressSink& StderrProgress() {
  static ProgressSink* sink = ::isatty(STDERR_FILENO) != 0
                                  ? static_cast<ProgressSink*>(new StreamProgress(stderr, true))
                                  : new ThrottledProgress(stderr);
  return *sink;
}

ProgressSink& NullProgress() {
  class Null : public ProgressSink {
    void Line(std::string_view) override {}
    void Status(std::string_view) override {}
    void EndStatus() override {}
  };
  static auto* sink = new Null();
  return *sink;
}

void TeeProgress::Line(std::string_view text) {
  for (ProgressSink* s : sinks_) s->Line(text);
}
void TeeProgress::Status(std::string_view text) {
  for (ProgressSink* s : sinks_) s->Status(text);
}
void TeeProgress::EndStatus() {
  for (ProgressSink* s : sinks_) s->EndStatus();
}

void RecordingProgress::Line(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  lines_.emplace_back(text);
}
void RecordingProgress::Status(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  statuses_.emplace_back(text);
}
std::vector<std::string> RecordingProgress::lines() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}
std::vector<std::string> RecordingProgress::statuses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return statuses_;
}

std::string HumanCount(double n) {
  if (n >= 1e9) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.2fM", n / 1e6);
  if (n >= 1e3) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrFormat("%.0f", n);
}

std::string HumanBytes(double b) {
  if (b >= 1 << 30) return absl::StrFormat("%.2f GiB", b / (1 << 30));
  if (b >= 1 << 20) return absl::StrFormat("%.1f MiB", b / (1 << 20));
  if (b >= 1 << 10) return absl::StrFormat("%.1f KiB", b / (1 << 10));
  return absl::StrFormat("%.0f B", b);
}

std::string HumanDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t t = static_cast<int64_t>(seconds + 0.5);
  if (t >= 3600) return absl::StrFormat("%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  return absl::StrFormat("%02d:%02d", t / 60, t % 60);
}

}  // namespace retort
