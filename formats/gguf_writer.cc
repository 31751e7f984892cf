// formats/gguf.h, writing: GgufWriter lays a file out as gguf-py's
// GGUFWriter does and streams the tensors' bytes into it.
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "formats/gguf_internal.h"

namespace retort {

using gguf_internal::AppendLE;
using gguf_internal::AppendString;
using gguf_internal::PadTo;
using gguf_internal::Quoted;
using gguf_internal::TypeDescription;

GgufWriter::GgufWriter(const std::string& architecture) {
  AddMetadata("general.architecture", GgufValue::String(architecture));
}

void GgufWriter::AddMetadata(const std::string& key, GgufValue value) {
  auto [it, inserted] = metadata_index_.emplace(key, metadata_.size());
  if (inserted) {
    metadata_.emplace_back(key, std::move(value));
  } else {
    metadata_[it->second].second = std::move(value);
  }
}

uint64_t GgufWriter::alignment() const {
  auto it = metadata_index_.find("general.alignment");
  if (it == metadata_index_.end()) return kGgufDefaultAlignment;
  const GgufValue& v = metadata_[it->second].second;
  if (v.type() != GgufType::kU32) return kGgufDefaultAlignment;
  return static_cast<uint64_t>(*v.AsInt());
}

absl::Status GgufWriter::AddRawTensor(const std::string& name, DType dtype, const Shape& shape,
                                      const void* data, size_t nbytes,
                                      std::shared_ptr<const void> owner) {
  const std::string what = absl::StrCat("GGUF tensor ", Quoted(name));
  if (name.size() > kGgufMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": name is ", name.size(), " bytes, ggml allows at most ", kGgufMaxNameBytes));
  }
  if (tensor_index_.count(name))
    return absl::InvalidArgumentError(absl::StrCat(what, " added twice"));
  auto ggml_type = GgmlTypeFromDType(dtype);
  if (!ggml_type.ok())
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", ggml_type.status().message()));
  if (shape.size() > static_cast<size_t>(kGgufMaxDims)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeString(shape),
                                                   " has more than ", kGgufMaxDims, " dimensions"));
  }
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in ", ShapeString(shape)));
  }
  const int64_t row = shape.empty() ? 1 : shape.back();
  const int block = DTypeBlockElems(dtype);
  if (row % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": rows of ", row, " elements (shape ", ShapeString(shape),
        ") are not a whole number of ", std::string(DTypeName(dtype)), " blocks of ", block));
  }
  const size_t expected = DTypeBytes(dtype, NumElements(shape));
  if (nbytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", nbytes, " bytes given, shape ",
                                                   ShapeString(shape), " needs ", expected));
  }
  if (nbytes > 0 && data == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(what, ": no data"));
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(PendingTensor{name, dtype, shape, data, nbytes, std::move(owner), Tensor()});
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, const Tensor& tensor) {
  RETURN_IF_ERROR(
      AddRawTensor(name, tensor.dtype(), tensor.shape(), tensor.raw(), tensor.nbytes(), nullptr));
  tensors_.back().tensor = tensor;
  return absl::OkStatus();
}

absl::StatusOr<std::string> GgufWriter::HeaderBytes() const {
  uint64_t align = kGgufDefaultAlignment;
  if (auto it = metadata_index_.find("general.alignment"); it != metadata_index_.end()) {
    const GgufValue& v = metadata_[it->second].second;
    if (v.type() != GgufType::kU32) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment must be a u32 (llama.cpp and gguf-py "
                       "refuse other types), got ",
                       TypeDescription(v)));
    }
    align = static_cast<uint64_t>(*v.AsInt());
    if (align == 0 || (align & (align - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment ", align, " is not a power of two"));
    }
  }
  std::string out = "GGUF";
  AppendLE(&out, kGgufVersion, 4);
  AppendLE(&out, tensors_.size(), 8);
  AppendLE(&out, metadata_.size(), 8);
  for (const auto& [key, value] : metadata_) {
    AppendString(&out, key);
    value.AppendTo(&out);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    AppendString(&out, t.name);
    AppendLE(&out, t.shape.size(), 4);
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      AppendLE(&out, static_cast<uint64_t>(*it), 8);
    AppendLE(&out, *GgmlTypeFromDType(t.dtype), 4);
    AppendLE(&out, offset, 8);
    offset += PadTo(t.nbytes, align);
  }
  out.resize(PadTo(out.size(), align), '\0');
  return out;
}

absl::Status GgufWriter::Write(const std::string& path) const {
  auto header = HeaderBytes();
  if (!header.ok())
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  const uint64_t align = alignment();
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file->Write(*header));
  const std::string zeros(align, '\0');
  for (const PendingTensor& t : tensors_) {
    RETURN_IF_ERROR(file->Write(t.data, t.nbytes));
    RETURN_IF_ERROR(file->Write(zeros.data(), PadTo(t.nbytes, align) - t.nbytes));
  }
  return file->Commit();
}

}  // namespace retort
