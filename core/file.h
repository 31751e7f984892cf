// Files: read-only memory maps and atomic writes.
//
// MappedFile maps a whole file read-only; Tensors borrow from it through a
// shared_ptr so the mapping lives as long as any tensor that points into it.
// AtomicFile writes to "<path>.tmp.<pid>" in the same folder, fsyncs and
// renames on Commit() and fsyncs the folder; destroyed without Commit() it
// deletes the temporary, so a failed job never leaves a partial output behind.
// A killed job cannot delete its temporaries: RemoveStaleTemporaries collects
// them on a later run. DirectoryLock keeps two processes from writing one
// output folder at once.
#ifndef RETORT_CORE_FILE_H_
#define RETORT_CORE_FILE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace retort {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class AtomicFile {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFile>> Create(const std::string& path);
  ~AtomicFile();

  absl::Status Write(const void* data, size_t n);
  absl::Status Write(std::string_view s) { return Write(s.data(), s.size()); }
  // Flushes, fsyncs, renames over the destination.
  absl::Status Commit();
  uint64_t bytes_written() const { return written_; }

 private:
  AtomicFile() = default;
  std::string path_, tmp_path_;
  std::FILE* file_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// fsyncs a folder, so that the names in it (a rename, new files) are durable.
// Best effort: some filesystems refuse to sync folders.
void SyncDirectory(const std::string& dir);

// Removes, from folder `dir`, what runs that were killed left behind: files
// "NAME.tmp.PID" (AtomicFile) and folders ".NAME.partial-PID" and
// ".NAME.replaced-PID" (StagedDirectory, MoveAside), when process PID is no
// longer alive. Best effort; returns how many it removed.
int RemoveStaleTemporaries(const std::string& dir);

// An advisory lock (flock) on a folder, held until the object goes or the
// process dies: a second process that writes the same output gets a clear
// error instead of interleaving with the first.
class DirectoryLock {
 public:
  // Locks existing folder `dir`. Error (FailedPrecondition): "DIR is in use by
  // another process (a retort job writing it holds its lock); wait for it to
  // finish or choose another output folder".
  static absl::StatusOr<DirectoryLock> Acquire(const std::string& dir);
  DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Whole-file helpers.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace retort

#endif  // RETORT_CORE_FILE_H_
