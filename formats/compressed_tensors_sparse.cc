// compressed_tensors.h, sparse compressors: the sparse-bitmask and
// 2:4 sparse-24-bitmask layouts and their sparsity_config JSON.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"

namespace retort {

namespace {

constexpr char kCtSparseVersion[] = "0.12.2";

bool IsSparseValueType(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || t == DType::kF8E4M3;
}

// Whether element i of a float tensor is +0.0 or -0.0 (every bit but the
// sign clear), which is what the library's `tensor != 0` treats as zero.
bool IsZeroAt(const uint8_t* data, size_t elem_bytes, int64_t i) {
  const uint8_t* e = data + static_cast<size_t>(i) * elem_bytes;
  // Little-endian: the sign bit is the top bit of the last byte.
  for (size_t b = 0; b + 1 < elem_bytes; ++b) {
    if (e[b] != 0) return false;
  }
  return (e[elem_bytes - 1] & 0x7f) == 0;
}

absl::Status CheckDenseForSparse(const std::string& module, const Tensor& w) {
  if (w.rank() != 2 || w.dim(0) <= 0 || w.dim(1) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".weight: sparse compression needs a non-empty 2-D weight, got ",
                     ShapeString(w.shape())));
  }
  if (!IsSparseValueType(w.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".weight: sparse compression supports F32, F16, BF16 or F8_E4M3 weights, got ",
        std::string(DTypeName(w.dtype()))));
  }
  return absl::OkStatus();
}

// The packed bitmask (U8 [rows, ceil(cols/8)], bit order little) of `keep`.
Tensor PackBits(const std::vector<uint8_t>& keep, int64_t rows, int64_t cols) {
  const int64_t line = (cols + 7) / 8;
  Tensor bits = Tensor::Zeros(DType::kU8, {rows, line});
  uint8_t* out = bits.mutable_data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (keep[r * cols + c]) out[r * line + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
    }
  }
  return bits;
}

// Copies the kept elements of `w` in row-major order into `values`.
void GatherKept(const Tensor& w, const std::vector<uint8_t>& keep, Tensor* values) {
  const size_t eb = DTypeBytes(w.dtype(), 1);
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(values->mutable_raw());
  size_t k = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (keep[i]) std::memcpy(dst + (k++) * eb, src + static_cast<size_t>(i) * eb, eb);
  }
}

absl::StatusOr<Tensor> RequireSparseTensor(const std::string& module, const char* suffix,
                                           const TensorLookup& lookup) {
  const std::string name = absl::StrCat(module, ".", suffix);
  std::optional<Tensor> t = lookup(name);
  if (!t.has_value()) {
    return absl::NotFoundError(absl::StrCat(name, ": missing from the sparse checkpoint"));
  }
  return *t;
}

// Reads <m>.shape (I64 or I32 with 2 elements, positive) as {rows, cols}.
absl::StatusOr<std::array<int64_t, 2>> ReadSparseShape(const std::string& module,
                                                       const TensorLookup& lookup) {
  ASSIGN_OR_RETURN(Tensor t, RequireSparseTensor(module, "shape", lookup));
  const std::string name = module + ".shape";
  if (t.numel() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected 2 elements (rows, cols), got shape ", ShapeString(t.shape())));
  }
  std::array<int64_t, 2> s;
  if (t.dtype() == DType::kI64) {
    s = {t.data<int64_t>()[0], t.data<int64_t>()[1]};
  } else if (t.dtype() == DType::kI32) {
    s = {t.data<int32_t>()[0], t.data<int32_t>()[1]};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected I64, got ", std::string(DTypeName(t.dtype()))));
  }
  if (s[0] <= 0 || s[1] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": dimensions must be positive, got [", s[0], ", ", s[1], "]"));
  }
  return s;
}

// Reads <m>.bitmask, checks it is U8/I8 [rows, ceil(cols/8)] and unpacks it.
absl::StatusOr<std::vector<uint8_t>> ReadSparseBitmask(const std::string& module,
                                                       const TensorLookup& lookup, int64_t rows,
                                                       int64_t cols) {
  ASSIGN_OR_RETURN(Tensor t, RequireSparseTensor(module, "bitmask", lookup));
  const std::string name = module + ".bitmask";
  const int64_t line = (cols + 7) / 8;
  if (t.dtype() != DType::kU8 && t.dtype() != DType::kI8) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected U8, got ", std::string(DTypeName(t.dtype()))));
  }
  if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != line) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected shape [", rows, ", ", line,
                                                   "] for a [", rows, ", ", cols, "] weight, got ",
                                                   ShapeString(t.shape())));
  }
  const auto* bits = static_cast<const uint8_t*>(t.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      keep[r * cols + c] = (bits[r * line + c / 8] >> (c % 8)) & 1;
    }
  }
  return keep;
}

// Scatters `values` (numel = number of kept positions) into a zero tensor
// of `shape` at the kept positions, in row-major order, then converts.
Tensor ScatterKept(const Tensor& values, const std::vector<uint8_t>& keep, const Shape& shape,
                   DType dtype) {
  Tensor dense = Tensor::Zeros(values.dtype(), shape);
  const size_t eb = DTypeBytes(values.dtype(), 1);
  const auto* src = static_cast<const uint8_t*>(values.raw());
  auto* dst = static_cast<uint8_t*>(dense.mutable_raw());
  size_t k = 0;
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i]) std::memcpy(dst + i * eb, src + (k++) * eb, eb);
  }
  return dense.dtype() == dtype ? dense : dense.To(dtype);
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparseBitmask(
    const std::string& module, const Tensor& dense_weight) {
  RETURN_IF_ERROR(CheckDenseForSparse(module, dense_weight));
  const int64_t rows = dense_weight.dim(0), cols = dense_weight.dim(1);
  const size_t eb = DTypeBytes(dense_weight.dtype(), 1);
  const auto* data = static_cast<const uint8_t*>(dense_weight.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  Tensor row_offsets = Tensor::Zeros(DType::kI64, {rows});
  int64_t nnz = 0;
  for (int64_t r = 0; r < rows; ++r) {
    row_offsets.mutable_data<int64_t>()[r] = nnz;
    for (int64_t c = 0; c < cols; ++c) {
      const bool nonzero = !IsZeroAt(data, eb, r * cols + c);
      keep[r * cols + c] = nonzero;
      nnz += nonzero;
    }
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  Tensor values = Tensor::Zeros(dense_weight.dtype(), {nnz});
  GatherKept(dense_weight, keep, &values);
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(module + ".shape", std::move(shape));
  out.emplace_back(module + ".compressed", std::move(values));
  out.emplace_back(module + ".bitmask", PackBits(keep, rows, cols));
  out.emplace_back(module + ".row_offsets", std::move(row_offsets));
  return out;
}

absl::StatusOr<Tensor> UnpackSparseBitmask(const std::string& module, const TensorLookup& lookup,
                                           DType dtype) {
  ASSIGN_OR_RETURN(auto shape, ReadSparseShape(module, lookup));
  const int64_t rows = shape[0], cols = shape[1];
  ASSIGN_OR_RETURN(std::vector<uint8_t> keep, ReadSparseBitmask(module, lookup, rows, cols));
  ASSIGN_OR_RETURN(Tensor values, RequireSparseTensor(module, "compressed", lookup));
  if (!IsSparseValueType(values.dtype()) || values.rank() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".compressed: expected a 1-D F32/F16/BF16/F8_E4M3 tensor, got ",
                     std::string(DTypeName(values.dtype())), " ", ShapeString(values.shape())));
  }
  int64_t set = 0;
  for (uint8_t k : keep) set += k;
  if (set != values.numel()) {
    return absl::InvalidArgumentError(absl::StrCat(module, ".compressed: has ", values.numel(),
                                                   " values but ", module, ".bitmask marks ", set,
                                                   " nonzeros"));
  }
  ASSIGN_OR_RETURN(Tensor offsets, RequireSparseTensor(module, "row_offsets", lookup));
  if (offsets.dtype() != DType::kI64 || offsets.numel() != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".row_offsets: expected I64 [", rows, "], got ",
                     std::string(DTypeName(offsets.dtype())), " ", ShapeString(offsets.shape())));
  }
  int64_t start = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (offsets.data<int64_t>()[r] != start) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".row_offsets[", r, "] = ", offsets.data<int64_t>()[r],
                       " but the bitmask puts row ", r, " at ", start));
    }
    for (int64_t c = 0; c < cols; ++c) start += keep[r * cols + c];
  }
  return ScatterKept(values, keep, {rows, cols}, dtype);
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparse24Bitmask(
    const std::string& module, const Tensor& dense_weight) {
  RETURN_IF_ERROR(CheckDenseForSparse(module, dense_weight));
  const int64_t rows = dense_weight.dim(0), cols = dense_weight.dim(1);
  if (cols % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".weight: sparse-24-bitmask needs columns a multiple of 4, got ",
                     ShapeString(dense_weight.shape())));
  }
  const size_t eb = DTypeBytes(dense_weight.dtype(), 1);
  const auto* data = static_cast<const uint8_t*>(dense_weight.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t g = 0; g < rows * cols; g += 4) {
    int nonzero = 0;
    for (int j = 0; j < 4; ++j) {
      keep[g + j] = !IsZeroAt(data, eb, g + j);
      nonzero += keep[g + j];
    }
    if (nonzero > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".weight: not 2:4 sparse: row ", g / cols, ", columns ", g % cols,
                       "..", g % cols + 3, " hold ", nonzero, " nonzeros (at most 2 allowed)"));
    }
    for (int j = 0; j < 4 && nonzero < 2; ++j) {
      if (!keep[g + j]) {
        keep[g + j] = 1;
        ++nonzero;
      }
    }
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2, 1});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  Tensor values = Tensor::Zeros(dense_weight.dtype(), {rows, cols / 2});
  GatherKept(dense_weight, keep, &values);
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(module + ".shape", std::move(shape));
  out.emplace_back(module + ".compressed", std::move(values));
  out.emplace_back(module + ".bitmask", PackBits(keep, rows, cols));
  return out;
}

absl::StatusOr<Tensor> UnpackSparse24Bitmask(const std::string& module, const TensorLookup& lookup,
                                             DType dtype) {
  ASSIGN_OR_RETURN(auto shape, ReadSparseShape(module, lookup));
  const int64_t rows = shape[0], cols = shape[1];
  if (cols % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".shape: sparse-24-bitmask needs columns a multiple of 4, got ", cols));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> keep, ReadSparseBitmask(module, lookup, rows, cols));
  for (int64_t g = 0; g < rows * cols; g += 4) {
    const int set = keep[g] + keep[g + 1] + keep[g + 2] + keep[g + 3];
    if (set != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".bitmask: row ", g / cols, ", columns ", g % cols, "..",
                       g % cols + 3, " mark ", set, " values (2:4 needs exactly 2)"));
    }
  }
  ASSIGN_OR_RETURN(Tensor values, RequireSparseTensor(module, "compressed", lookup));
  if (!IsSparseValueType(values.dtype()) || values.numel() != rows * cols / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".compressed: expected F32/F16/BF16/F8_E4M3 [", rows, ", ", cols / 2, "], got ",
        std::string(DTypeName(values.dtype())), " ", ShapeString(values.shape())));
  }
  return ScatterKept(values, keep, {rows, cols}, dtype);
}

const char* SparseFormatFor(const std::string& structure) {
  return structure == "2:4" ? "sparse-24-bitmask" : "sparse-bitmask";
}

nlohmann::json SparsityConfig(const std::string& structure, double global_sparsity,
                              const std::vector<std::string>& ignore) {
  nlohmann::json s = nlohmann::json::object();
  s["format"] = SparseFormatFor(structure);
  s["global_sparsity"] = global_sparsity;
  s["ignore"] = ignore;
  s["registry_requires_subclass"] = false;
  s["sparsity_structure"] = structure;
  s["targets"] = nlohmann::json::array({"Linear"});
  return s;
}

nlohmann::json SparseQuantizationConfig(const std::string& structure, double global_sparsity,
                                        const std::vector<std::string>& ignore) {
  nlohmann::json q = nlohmann::json::object();
  q["quant_method"] = "compressed-tensors";
  q["sparsity_config"] = SparsityConfig(structure, global_sparsity, ignore);
  q["transform_config"] = nlohmann::json::object();
  q["version"] = kCtSparseVersion;
  return q;
}

}  // namespace retort
