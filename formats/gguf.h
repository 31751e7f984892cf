// GGUF: llama.cpp's single-file model format (versions 2 and 3, little-endian).
//
// A file is a header ("GGUF", u32 version, u64 tensor count, u64 metadata
// count), typed key/value metadata, tensor infos (name, dims innermost first,
// ggml type, offset), padding to `general.alignment` (default 32), then the
// data section with every tensor padded to the alignment. formats/gguf.md lists
// exactly what we accept and reject.
//
// GgufReader memory-maps the file and validates every count, offset and size
// against the file on Open(), before it allocates anything sized by the file,
// so a reader that opened successfully only hands out tensors inside the file.
// GgufWriter lays files out exactly as gguf-py's GGUFWriter does.
//
// Dimension order: GGUF lists the innermost (fastest-varying) dimension first.
// GgufTensorInfo::dims is as stored; shape() and every Tensor we hand out or
// take are row-major, outermost first (an HF [out, in] weight is stored as
// dims [in, out]).
// Metadata values (GgufValue) are in formats/gguf_value.h.
// Thread-safety: a reader is immutable after Open() and safe to share; a
// writer is not thread-safe.
#ifndef RETORT_FORMATS_GGUF_H_
#define RETORT_FORMATS_GGUF_H_

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
#include "formats/gguf_value.h"  // IWYU pragma: export

namespace retort {

inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint64_t kGgufDefaultAlignment = 32;
// ggml's GGML_MAX_NAME includes the NUL: names hold at most 63 bytes.
inline constexpr size_t kGgufMaxNameBytes = 63;
inline constexpr int kGgufMaxDims = 4;

// One tensor of a GGUF file.
struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // as stored: innermost first
  uint32_t ggml_type = 0;
  DType dtype = DType::kF32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  // Row-major, outermost first: dims reversed.
  Shape shape() const;
};

// ggml type ids: F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q8_1 9,
// Q2_K 10 .. Q8_K 15, I8 24, I16 25, I32 26, I64 27, F64 28, BF16 30. Other
// ids (IQ*, TQ*, MXFP4, ...) are errors naming the id (and its ggml name).
absl::StatusOr<DType> DTypeFromGgmlType(uint32_t ggml_type);
absl::StatusOr<uint32_t> GgmlTypeFromDType(DType dtype);
// ggml's name for a type id ("Q4_K"), "type <id>" if unknown to us.
std::string GgmlTypeName(uint32_t ggml_type);

class GgufReader {
 public:
  // Maps and validates `path`. Errors are one line "<path>: <problem>":
  // NotFound for a missing file, DataLoss for a file that ends early or
  // offsets/sizes that do not fit, InvalidArgument for malformed content
  // (bad magic, unsupported version, unknown types, duplicates, ...).
  static absl::StatusOr<std::unique_ptr<GgufReader>> Open(const std::string& path);
  // Parses a GGUF image in memory; `name` is used in messages, `owner` keeps
  // `data` alive for the tensors Get() returns.
  static absl::StatusOr<std::unique_ptr<GgufReader>> FromMemory(const std::string& name,
                                                                const uint8_t* data, size_t size,
                                                                std::shared_ptr<const void> owner);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // File offset of the data section.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  // In file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  // nullptr if absent.
  const GgufValue* Find(const std::string& key) const;
  // Typed lookups. Errors name the file and key: "<path>: metadata key
  // llama.block_count is missing" / "... has type string, expected an integer".
  absl::StatusOr<int64_t> GetInt(const std::string& key) const;
  absl::StatusOr<double> GetFloat(const std::string& key) const;
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<bool> GetBool(const std::string& key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(const std::string& key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(const std::string& key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(const std::string& key) const;

  // In file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr if absent.
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  // A zero-copy view (dtype incl. block types, shape = info.shape()) that
  // keeps the mapping alive; an owned aligned copy if the bytes are not
  // aligned for the element type (only with general.alignment < 8).
  // NotFound names the file and tensor.
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // The raw bytes of a tensor. REQUIRES: `info` comes from tensors().
  const uint8_t* TensorData(const GgufTensorInfo& info) const {
    return data_ + data_offset_ + info.offset;
  }

 private:
  friend class GgufParser;
  GgufReader() = default;

  std::string path_;
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF file: metadata in insertion order, tensor infos, padding to
// the alignment, tensor data each padded to the alignment — byte for byte
// what gguf-py's GGUFWriter writes for the same calls (GGUFWriter(path, arch)
// adds general.architecture first: the architecture constructor does too).
// Tensors are held by reference (Tensor copies share bytes) and streamed on
// Write(); the model is never copied in memory.
class GgufWriter {
 public:
  GgufWriter() = default;
  // Adds general.architecture = `architecture` first, as gguf-py does.
  explicit GgufWriter(const std::string& architecture);

  // A key added twice keeps its first position and takes the new value (as
  // gguf-py does). general.alignment sets the data alignment; Write() checks
  // it is a u32 power of two.
  void AddMetadata(const std::string& key, GgufValue value);
  // `tensor` shape is row-major (HF [out, in]); the file stores dims
  // reversed. Checks name length (< 64 bytes), duplicates, rank <= 4, that
  // the dtype has a ggml type, and that the innermost dimension is a whole
  // number of blocks for block types.
  absl::Status AddTensor(const std::string& name, const Tensor& tensor);
  // Adds a tensor from raw ggml bytes (e.g. blocks copied from another file).
  // `shape` is row-major; `data` must hold exactly the tensor's bytes and is
  // kept alive by `owner` until Write() returns.
  absl::Status AddRawTensor(const std::string& name, DType dtype, const Shape& shape,
                            const void* data, size_t nbytes, std::shared_ptr<const void> owner);

  // The data alignment general.alignment asks for (32 without it).
  uint64_t alignment() const;
  // Everything before the data section, padding included.
  absl::StatusOr<std::string> HeaderBytes() const;
  // Writes atomically (temp + fsync + rename); no file is left on error.
  absl::Status Write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    Shape shape;
    const void* data;
    size_t nbytes;
    std::shared_ptr<const void> owner;
    Tensor tensor;  // keeps a Tensor's bytes alive
  };
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<PendingTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace retort

#endif  // RETORT_FORMATS_GGUF_H_
