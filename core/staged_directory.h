// A folder written as a whole or not at all: the files go into a temporary
// folder beside the destination (same parent, so the final rename stays on
// one filesystem), and Commit() fsyncs it and renames it into place. Destroyed
// without Commit() (an error on the way, an exception, a crash's next run),
// the temporary folder is removed, so a failed job never leaves a
// half-written model or checkpoint where a finished one is expected.
//
// Files inside are written with the usual helpers (core/file.h); the rename
// is what makes the folder appear at once.
//
// Thread safety: one owner; not copyable, movable.
#ifndef RETORT_CORE_STAGED_DIRECTORY_H_
#define RETORT_CORE_STAGED_DIRECTORY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace retort {

class StagedDirectory {
 public:
  struct Options {
    // The temporary folder; default "<parent>/.<name>.partial-<pid>". REQUIRES:
    // in the same parent as the destination.
    std::string temp_path;
    // Commit() over an existing destination: true replaces it (it is moved
    // aside, the new folder renamed into place, then the old one removed);
    // false accepts only an empty folder there and fails otherwise.
    bool replace_existing = true;
    // Create() fails at once when the destination exists and is not an empty
    // folder ("OUT already exists (remove it or choose another OUT)"), before
    // any work: what a command writing a new model wants.
    bool must_be_new = false;
    // Create() keeps what the temporary folder already holds (the state an
    // interrupted job left to resume from) instead of emptying it.
    bool keep_contents = false;
  };

  // Creates the (emptied) temporary folder and the destination's parent.
  // Errors name the folder that could not be created.
  static absl::StatusOr<StagedDirectory> Create(const std::string& destination, Options options);
  static absl::StatusOr<StagedDirectory> Create(const std::string& destination) {
    return Create(destination, Options());
  }
  StagedDirectory(StagedDirectory&& other) noexcept;
  StagedDirectory& operator=(StagedDirectory&&) = delete;
  StagedDirectory(const StagedDirectory&) = delete;
  ~StagedDirectory();

  // Where to write the folder's files until Commit().
  const std::string& path() const { return temp_path_; }
  const std::string& destination() const { return destination_; }

  // fsyncs the temporary folder, moves it to the destination and fsyncs the
  // parent. REQUIRES: not committed yet. On error the temporary folder stays
  // until destruction (so the caller may look at it) and the destination is
  // not half-replaced by it.
  absl::Status Commit();

  // Leaves the temporary folder where it is when this object goes (an
  // interrupted job's resumable state). REQUIRES: not committed.
  void Keep() { keep_ = true; }

 private:
  StagedDirectory() = default;
  std::string destination_, temp_path_;
  bool replace_existing_ = true;
  bool keep_ = false;
};

// Renames `path` to a hidden sibling (".NAME.replaced-PID", an older one of
// that name removed first) and returns the sibling's path: what is being
// replaced moves aside until its replacement is in place. Error: "PATH:
// cannot move it aside to replace it: ...".
absl::StatusOr<std::string> MoveAside(const std::string& path);

}  // namespace retort

#endif  // RETORT_CORE_STAGED_DIRECTORY_H_
