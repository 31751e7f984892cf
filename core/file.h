// Files: read-only memory maps and atomic writes.
//
// MappedFile maps a whole file read-only; Tensors borrow from it through a
// shared_ptr so the mapping lives as long as any tensor that points into it.
// AtomicFile writes to "<path>.tmp.<pid>" in the same folder, fsyncs and
// renames on Commit(); destroyed without Commit() it deletes the temporary, so
// a failed job never leaves a partial output behind.
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

// Whole-file helpers.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace retort

#endif  // RETORT_CORE_FILE_H_
