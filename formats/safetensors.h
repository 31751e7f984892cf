// safetensors: the flat tensor file format of Hugging Face checkpoints.
//
// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// (name -> {dtype, shape, data_offsets}, plus an optional "__metadata__"
// string map), then the data buffer. formats/safetensors.md lists exactly what
// we accept and reject.
//
// SafetensorsReader memory-maps the file and validates the whole header on
// Open(), so a reader that opened successfully only hands out tensors that lie
// inside the file. Get() returns zero-copy views that keep the mapping alive;
// when a tensor's bytes are not aligned to its element size (only possible in
// files whose writer did not order tensors by alignment) Get() returns an
// owned, 64-byte-aligned copy instead, so data<T>() is always safe to use.
// Thread-safety: a reader is immutable after Open(); all methods are const and
// safe to call concurrently. Tensors from Get() are read-only unless copied.
#ifndef RETORT_FORMATS_SAFETENSORS_H_
#define RETORT_FORMATS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/file.h"
#include "core/tensor.h"

namespace retort {

// One tensor of a safetensors file. Offsets are relative to the data buffer
// (which starts at byte 8 + N of the file).
struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// The largest header we accept (the reference implementation's limit).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

class SafetensorsReader {
 public:
  // Maps and validates `path`. Every error is one line "<path>: <problem>":
  // NotFound for a missing file, DataLoss for a truncated file or a header
  // whose sizes do not fit the file, InvalidArgument for a malformed header.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  // In file (offset) order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // The "__metadata__" map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(const std::string& name) const { return index_.count(name) > 0; }
  // nullptr if absent.
  const SafetensorsEntry* Find(const std::string& name) const;
  // A zero-copy view into the mapping (keeps it alive), or an aligned copy
  // when the bytes are misaligned for the dtype. NotFound names path + tensor.
  absl::StatusOr<Tensor> Get(const std::string& name) const;

  // The raw bytes of an entry (inside the mapping; valid while the reader or a
  // tensor from it lives). REQUIRES: `e` comes from entries().
  const uint8_t* EntryData(const SafetensorsEntry& e) const;
  // Byte offset of the data buffer in the file (8 + N).
  uint64_t data_start() const { return data_start_; }

 private:
  SafetensorsReader() = default;

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a complete safetensors image held in memory (`data`,
// `size` bytes); `path` is only used in messages. Used by the reader and handy
// for tests. On success fills `entries` (offset order), `metadata` and
// `data_start`.
absl::Status ParseSafetensorsHeader(const std::string& path, const uint8_t* data, uint64_t size,
                                    std::vector<SafetensorsEntry>* entries,
                                    std::map<std::string, std::string>* metadata,
                                    uint64_t* data_start);

// Writes atomically (temp + fsync + rename). Tensors in the given order,
// header padded with spaces to a multiple of 8, metadata defaults to
// {"format":"pt"} (an empty map writes no "__metadata__" key). Names must be
// unique, non-empty and not "__metadata__"; on any error no file is left.
// Given the same tensors in the same order and the same (single-key or empty)
// metadata, the bytes equal those of the python `safetensors` library, which
// orders tensors by descending dtype alignment, then name.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {
                                  {"format", "pt"}});

// The exact header (length prefix excluded, padding included) that
// WriteSafetensors would write; error for invalid input. Exposed so callers
// can size files before writing them.
absl::StatusOr<std::string> SafetensorsHeader(
    const std::vector<std::pair<std::string, Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata);

}  // namespace retort

#endif  // RETORT_FORMATS_SAFETENSORS_H_
