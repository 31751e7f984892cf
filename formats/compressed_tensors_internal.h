// Private to formats/compressed_tensors_*.cc: tensor helpers shared by the
// compressed-tensors codecs and the foreign (GPTQ, AWQ, DeepSeek FP8) readers,
// and the foreign readers ReadQuantizedLinear dispatches to. Not for other
// modules: the public API is formats/compressed_tensors.h.
#ifndef RETORT_FORMATS_COMPRESSED_TENSORS_INTERNAL_H_
#define RETORT_FORMATS_COMPRESSED_TENSORS_INTERNAL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "formats/compressed_tensors.h"

namespace retort::ct_internal {

// DTypeName is a std::string_view, which this Abseil's StrCat does not take.
inline std::string TypeName(DType t) { return std::string(DTypeName(t)); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool IsFp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }
inline bool IsIntValue(DType t) { return t == DType::kI4 || t == DType::kI8; }
inline bool IsFloatScaleType(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}

// F32/BF16/F16 tensor as an owned F32 tensor of `shape` (same numel).
Tensor FloatToF32(const Tensor& t, Shape shape);

// The transpose of a [a, b] F32 tensor.
Tensor TransposeF32(const Tensor& t);

// Stores q (already in range) as element (r, c) of an I4 or I8 values tensor.
void PutValue(Tensor& values, int64_t cols, int64_t r, int64_t c, int q);

int GetValue(const QuantizedMatrix& m, int64_t r, int64_t c);

bool AllZero(const Tensor& zeros);

// True when g_idx[c] == c / group_size for every column (plain grouping).
bool TrivialGIdx(const Tensor& g_idx, int64_t group_size);

// Errors about tensor `<module>.<suffix>`.
class TensorErrors {
 public:
  explicit TensorErrors(const std::string& module) : module_(module) {}
  template <typename... Args>
  absl::Status Bad(const std::string& suffix, const Args&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(module_, ".", suffix, ": ", parts...));
  }
  absl::Status Missing(const std::string& suffix, const std::string& why) const {
    return absl::NotFoundError(absl::StrCat(module_, ".", suffix, " is missing (", why, ")"));
  }
  std::string Name(const std::string& suffix) const { return absl::StrCat(module_, ".", suffix); }

 private:
  const std::string& module_;
};

std::string ShapeOf(const Tensor& t);

// A float scale tensor of exactly `shape` (any of F32/BF16/F16) as F32.
absl::StatusOr<Tensor> ScaleTensor(const TensorErrors& err, const std::string& suffix,
                                   const Tensor& t, const Shape& shape, const Shape& out_shape);

// g_idx as I32 [cols] (I32 or I64 in the file), entries in [0, groups).
absl::StatusOr<Tensor> GIdxTensor(const TensorErrors& err, const std::string& suffix,
                                  const Tensor& t, int64_t cols, int64_t groups);

absl::StatusOr<QuantizedMatrix> Validated(QuantizedMatrix m, const std::string& module);

// The foreign checkpoints (compressed_tensors_foreign.cc): nullopt when the
// module is not quantized in the checkpoint.
absl::StatusOr<std::optional<QuantizedMatrix>> ReadGptqOrAwq(const QuantizationConfig& qc,
                                                             const std::string& module,
                                                             const TensorLookup& lookup);
absl::StatusOr<std::optional<QuantizedMatrix>> ReadDeepSeekFp8(const QuantizationConfig& qc,
                                                               const std::string& module,
                                                               const TensorLookup& lookup);

}  // namespace retort::ct_internal

#endif  // RETORT_FORMATS_COMPRESSED_TENSORS_INTERNAL_H_
