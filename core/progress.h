// What a long job tells the person running it, through one sink.
//
// Library jobs (quantize, prune, convert, train, generate traces) never write
// to stdout or stderr themselves: they take a ProgressSink. The CLI passes
// StderrProgress() (a status redrawn in place on a terminal, a line each
// otherwise); `retort run` passes a sink that writes the stage's log.txt and
// echoes to the terminal. Tests pass a RecordingProgress and read it back.
#ifndef RETORT_CORE_PROGRESS_H_
#define RETORT_CORE_PROGRESS_H_

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace retort {

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  // One line of the job's log ("resuming from X (step 40)"), without the
  // newline. A status being redrawn ends first, so the line starts fresh.
  virtual void Line(std::string_view text) = 0;
  // The job's current state ("step 3/10 | loss 1.2 | ETA 4s"), replacing the
  // previous one where the output can redraw, else a line of its own.
  virtual void Status(std::string_view text) = 0;
  // The status is finished: the next output starts on a new line.
  virtual void EndStatus() = 0;
};

// Writes to `out`; with `redraw` the status is rewritten in place ("\r").
// Thread-safe. Destroyed with an open status, it ends the line.
class StreamProgress : public ProgressSink {
 public:
  StreamProgress(std::FILE* out, bool redraw) : out_(out), redraw_(redraw) {}
  ~StreamProgress() override { EndStatus(); }
  void Line(std::string_view text) override;
  void Status(std::string_view text) override;
  void EndStatus() override;

 private:
  void EndStatusLocked();
  std::mutex mu_;
  std::FILE* out_;
  bool redraw_;
  bool status_open_ = false;
};

// stderr, redrawing in place when it is a terminal.
ProgressSink& StderrProgress();
// Discards everything.
ProgressSink& NullProgress();

// Sends everything to several sinks (a stage log and the terminal).
class TeeProgress : public ProgressSink {
 public:
  explicit TeeProgress(std::vector<ProgressSink*> sinks) : sinks_(std::move(sinks)) {}
  void Line(std::string_view text) override;
  void Status(std::string_view text) override;
  void EndStatus() override;

 private:
  std::vector<ProgressSink*> sinks_;
};

// Keeps what was reported (tests; a job's error context).
class RecordingProgress : public ProgressSink {
 public:
  void Line(std::string_view text) override;
  void Status(std::string_view text) override;
  void EndStatus() override {}
  std::vector<std::string> lines() const;
  std::vector<std::string> statuses() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_, statuses_;
};

// Numbers for people: "1.23M" parameters, "456.7 MiB", "1h02m".
std::string HumanCount(double n);
std::string HumanBytes(double bytes);
std::string HumanDuration(double seconds);

}  // namespace retort

#endif  // RETORT_CORE_PROGRESS_H_
