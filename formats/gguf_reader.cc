// formats/gguf.h, reading: GgufParser validates a GGUF image section by
// section before anything sized by the file is allocated; GgufReader holds
// the result and hands out metadata and zero-copy tensor views.
#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "formats/gguf_internal.h"

namespace retort {

using gguf_internal::Escaped;
using gguf_internal::Invalid;
using gguf_internal::kNumGgufTypes;
using gguf_internal::LoadLE;
using gguf_internal::Loss;
using gguf_internal::PadTo;
using gguf_internal::Quoted;
using gguf_internal::ScalarWidth;
using gguf_internal::TypeDescription;

namespace {
// Arrays of arrays deeper than this are refused (each level costs only 12
// bytes in the file, so an unbounded depth would let a small file exhaust the
// stack of a recursive reader).
constexpr int kMaxArrayDepth = 16;
}  // namespace

absl::Status GgufParser::Need(uint64_t n, const std::string& what) const {
  if (n > left()) {
    return Loss(path_, absl::StrCat("file ends inside ", what, " (needs ", n, " bytes at offset ",
                                    pos_, ", ", left(), " left of ", size_, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> GgufParser::Read(size_t width, const std::string& what) {
  RETURN_IF_ERROR(Need(width, what));
  uint64_t v = LoadLE(data_ + pos_, width);
  pos_ += width;
  return v;
}

absl::StatusOr<std::string> GgufParser::ReadString(const std::string& what) {
  ASSIGN_OR_RETURN(uint64_t len, Read(8, what));
  if (len > left()) {
    return Loss(path_, absl::StrCat(what, " claims ", len, " bytes at offset ", pos_, " but only ",
                                    left(), " bytes are left in the file"));
  }
  std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
  pos_ += len;
  return s;
}

absl::StatusOr<GgufType> GgufParser::ReadType(const std::string& what) {
  ASSIGN_OR_RETURN(uint64_t id, Read(4, what));
  if (id >= kNumGgufTypes) {
    return Invalid(path_,
                   absl::StrCat(what, ": unknown value type ", id, " (GGUF has types 0..12)"));
  }
  return static_cast<GgufType>(id);
}

absl::StatusOr<GgufValue> GgufParser::ReadValue(GgufType type, const std::string& what, int depth) {
  if (type == GgufType::kString) {
    ASSIGN_OR_RETURN(std::string s, ReadString(what));
    return GgufValue::String(std::move(s));
  }
  if (type != GgufType::kArray) {
    ASSIGN_OR_RETURN(uint64_t bits, Read(ScalarWidth(type), what));
    return Scalar(type, bits);
  }
  if (depth >= kMaxArrayDepth) {
    return Invalid(path_,
                   absl::StrCat(what, ": arrays nested deeper than ", kMaxArrayDepth, " levels"));
  }
  ASSIGN_OR_RETURN(GgufType elem, ReadType(absl::StrCat(what, " (array element type)")));
  ASSIGN_OR_RETURN(uint64_t count, Read(8, absl::StrCat(what, " (array length)")));
  // The least each element takes in the file: checked before anything is
  // allocated, so a lying count costs nothing.
  const uint64_t min_elem = elem == GgufType::kString  ? 8
                            : elem == GgufType::kArray ? 12
                                                       : ScalarWidth(elem);
  if (count > left() / min_elem) {
    return Loss(
        path_, absl::StrCat(what, ": array of ", count, " ", GgufTypeName(elem), " needs at least ",
                            count > std::numeric_limits<uint64_t>::max() / min_elem
                                ? std::string("more than 2^64")
                                : absl::StrCat(count * min_elem),
                            " bytes but only ", left(), " are left in the file"));
  }
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = elem;
  if (elem == GgufType::kString) {
    out.strings_.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(std::string s, ReadString(absl::StrCat(what, " item ", i)));
      out.strings_.push_back(std::move(s));
    }
  } else if (elem == GgufType::kArray) {
    out.items_.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(GgufValue item,
                       ReadValue(GgufType::kArray, absl::StrCat(what, " item ", i), depth + 1));
      out.items_.push_back(std::move(item));
    }
  } else {
    out.bytes_.assign(reinterpret_cast<const char*>(data_ + pos_), count * min_elem);
    pos_ += count * min_elem;
  }
  return out;
}

absl::Status GgufParser::Parse(GgufReader* r) {
  if (size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
    if (size_ < 4)
      return Loss(path_, absl::StrCat("file is ", size_, " bytes, too short for a GGUF header"));
    return Invalid(path_,
                   absl::StrCat("not a GGUF file (starts with \"",
                                Escaped(std::string(reinterpret_cast<const char*>(data_), 4), 16),
                                "\", expected \"GGUF\")"));
  }
  pos_ = 4;
  ASSIGN_OR_RETURN(uint64_t version, Read(4, "the header (version)"));
  if (version != 0 && (version & 0xffff) == 0) {
    return Invalid(
        path_,
        absl::StrFormat("version field 0x%08x looks byte-swapped: big-endian GGUF files are not "
                        "supported",
                        version));
  }
  if (version == 1) {
    return Invalid(
        path_,
        "GGUF version 1 is not supported (its counts and lengths are 32-bit); re-convert the "
        "model with a current llama.cpp");
  }
  if (version != 2 && version != 3) {
    return Invalid(
        path_, absl::StrCat("unsupported GGUF version ", version, " (we read versions 2 and 3)"));
  }
  r->version_ = static_cast<uint32_t>(version);
  ASSIGN_OR_RETURN(uint64_t n_tensors, Read(8, "the header (tensor count)"));
  ASSIGN_OR_RETURN(uint64_t n_kv, Read(8, "the header (metadata count)"));
  // A metadata pair takes at least 13 bytes (key length, type, one byte), a
  // tensor info at least 24 (name length, n_dims, type, offset).
  if (n_kv > left() / 13) {
    return Loss(path_, absl::StrCat("header claims ", n_kv, " metadata pairs, more than the ",
                                    left(), " bytes left in the file can hold"));
  }
  if (n_tensors > left() / 24) {
    return Loss(path_, absl::StrCat("header claims ", n_tensors, " tensors, more than the ", left(),
                                    " bytes left in the file can hold"));
  }

  r->metadata_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    ASSIGN_OR_RETURN(std::string key, ReadString(absl::StrCat("metadata pair ", i, " (key)")));
    const std::string what = absl::StrCat("metadata key ", Quoted(key));
    ASSIGN_OR_RETURN(GgufType type, ReadType(what));
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(type, what, 0));
    if (!r->metadata_index_.emplace(key, r->metadata_.size()).second) {
      return Invalid(path_, absl::StrCat("duplicate metadata key ", Quoted(key)));
    }
    r->metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = r->Find("general.alignment")) {
    if (a->type() != GgufType::kU32) {
      return Invalid(path_, absl::StrCat("metadata key general.alignment has type ",
                                         TypeDescription(*a), ", expected u32"));
    }
    const uint64_t align = *a->AsInt();
    if (align == 0 || (align & (align - 1)) != 0) {
      return Invalid(path_, absl::StrCat("general.alignment ", align, " is not a power of two"));
    }
    r->alignment_ = align;
  }

  if (n_tensors > left() / 24) {
    return Loss(path_, absl::StrCat("header claims ", n_tensors, " tensors, more than the ", left(),
                                    " bytes left after the metadata can hold"));
  }
  r->tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    ASSIGN_OR_RETURN(t.name, ReadString(absl::StrCat("tensor info ", i, " (name)")));
    const std::string what = absl::StrCat("tensor ", Quoted(t.name));
    if (t.name.size() > kGgufMaxNameBytes) {
      return Invalid(path_, absl::StrCat(what, ": name is ", t.name.size(),
                                         " bytes, ggml allows at most ", kGgufMaxNameBytes));
    }
    ASSIGN_OR_RETURN(uint64_t n_dims, Read(4, absl::StrCat(what, " (n_dims)")));
    if (n_dims > kGgufMaxDims) {
      return Invalid(path_, absl::StrCat(what, ": ", n_dims, " dimensions, ggml allows at most ",
                                         kGgufMaxDims));
    }
    uint64_t numel = 1;
    for (uint64_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t dim, Read(8, absl::StrCat(what, " (dims)")));
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, dim, &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(path_,
                       absl::StrCat(what, ": dimensions overflow int64 (dim ", d, " = ", dim, ")"));
      }
      t.dims.push_back(dim);
    }
    ASSIGN_OR_RETURN(uint64_t ggml_type, Read(4, absl::StrCat(what, " (type)")));
    t.ggml_type = static_cast<uint32_t>(ggml_type);
    auto dtype = DTypeFromGgmlType(t.ggml_type);
    if (!dtype.ok()) return Invalid(path_, absl::StrCat(what, ": ", dtype.status().message()));
    t.dtype = *dtype;
    ASSIGN_OR_RETURN(t.offset, Read(8, absl::StrCat(what, " (offset)")));

    const uint64_t block = static_cast<uint64_t>(DTypeBlockElems(t.dtype));
    const uint64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % block != 0) {
      return Invalid(path_,
                     absl::StrCat(what, ": rows of ", row, " elements are not a whole number of ",
                                  GgmlTypeName(t.ggml_type), " blocks of ", block));
    }
    // numel * block_bytes / block without overflow: numel is a multiple of block.
    if (__builtin_mul_overflow(numel / block, static_cast<uint64_t>(DTypeBlockBytes(t.dtype)),
                               &t.nbytes)) {
      return Invalid(path_, absl::StrCat(what, ": size overflows 64 bits"));
    }
    if (!r->tensor_index_.emplace(t.name, r->tensors_.size()).second) {
      return Invalid(path_, absl::StrCat("duplicate tensor name ", Quoted(t.name)));
    }
    r->tensors_.push_back(std::move(t));
  }

  r->data_offset_ = PadTo(pos_, r->alignment_);
  if (!r->tensors_.empty() && r->data_offset_ > size_) {
    return Loss(path_, absl::StrCat("data section would start at byte ", r->data_offset_,
                                    ", past the end of the ", size_, "-byte file"));
  }
  const uint64_t data_size = r->data_offset_ <= size_ ? size_ - r->data_offset_ : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(r->tensors_.size());
  for (const GgufTensorInfo& t : r->tensors_) {
    const std::string what = absl::StrCat("tensor ", Quoted(t.name));
    if (t.offset % r->alignment_ != 0) {
      return Invalid(path_, absl::StrCat(what, ": data offset ", t.offset,
                                         " is not a multiple of the alignment ", r->alignment_));
    }
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return Loss(path_, absl::StrCat(what, ": data [", t.offset, ", +", t.nbytes,
                                      ") lies outside the data section of ", data_size,
                                      " bytes (file truncated?)"));
    }
    if (t.nbytes) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset) {
      return Invalid(path_,
                     absl::StrCat("tensors ", Quoted(by_offset[i - 1]->name), " and ",
                                  Quoted(by_offset[i]->name), " overlap in the data section"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GgufReader>> GgufReader::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  return FromMemory(path, data, size, std::move(file));
}

absl::StatusOr<std::unique_ptr<GgufReader>> GgufReader::FromMemory(
    const std::string& name, const uint8_t* data, size_t size, std::shared_ptr<const void> owner) {
  std::unique_ptr<GgufReader> r(new GgufReader());
  r->path_ = name;
  r->data_ = data;
  r->size_ = size;
  r->owner_ = std::move(owner);
  GgufParser parser(r->path_, data, size);
  RETURN_IF_ERROR(parser.Parse(r.get()));
  return r;
}

const GgufValue* GgufReader::Find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
// Looks up `key` and applies `as`, with errors naming the file and key.
template <typename T, typename F>
absl::StatusOr<T> TypedGet(const GgufReader& r, const std::string& key, F as) {
  const GgufValue* v = r.Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat(r.path(), ": metadata key ", key, " is missing"));
  absl::StatusOr<T> out = as(*v);
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat(r.path(), ": metadata key ", key, " ",
                                                          out.status().message()));
  }
  return out;
}
}  // namespace

absl::StatusOr<int64_t> GgufReader::GetInt(const std::string& key) const {
  return TypedGet<int64_t>(*this, key, [](const GgufValue& v) { return v.AsInt(); });
}
absl::StatusOr<double> GgufReader::GetFloat(const std::string& key) const {
  return TypedGet<double>(*this, key, [](const GgufValue& v) { return v.AsFloat(); });
}
absl::StatusOr<std::string> GgufReader::GetString(const std::string& key) const {
  return TypedGet<std::string>(*this, key, [](const GgufValue& v) { return v.AsString(); });
}
absl::StatusOr<bool> GgufReader::GetBool(const std::string& key) const {
  return TypedGet<bool>(*this, key, [](const GgufValue& v) { return v.AsBool(); });
}
absl::StatusOr<std::vector<std::string>> GgufReader::GetStringArray(const std::string& key) const {
  return TypedGet<std::vector<std::string>>(*this, key,
                                            [](const GgufValue& v) { return v.AsStringArray(); });
}
absl::StatusOr<std::vector<int64_t>> GgufReader::GetIntArray(const std::string& key) const {
  return TypedGet<std::vector<int64_t>>(*this, key,
                                        [](const GgufValue& v) { return v.AsIntArray(); });
}
absl::StatusOr<std::vector<double>> GgufReader::GetFloatArray(const std::string& key) const {
  return TypedGet<std::vector<double>>(*this, key,
                                       [](const GgufValue& v) { return v.AsFloatArray(); });
}

const GgufTensorInfo* GgufReader::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> GgufReader::Get(const std::string& name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", Quoted(name)));
  const uint8_t* p = TensorData(*t);
  // Block structs hold f16/f32 fields; scalar types need their own size.
  const size_t need =
      IsBlockQuantized(t->dtype) ? 4 : std::min<size_t>(8, DTypeBlockBytes(t->dtype));
  if (reinterpret_cast<uintptr_t>(p) % need == 0)
    return Tensor::View(t->dtype, t->shape(), p, owner_, TensorLocation::kMapped);
  Tensor copy = Tensor::Zeros(t->dtype, t->shape());
  if (t->nbytes) std::memcpy(copy.mutable_raw(), p, t->nbytes);
  return copy;
}

}  // namespace retort
