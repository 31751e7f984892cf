// Quantized-weight checkpoint formats: compressed-tensors (what vLLM and
// llm-compressor use) written and read, and GPTQ, AWQ and DeepSeek-V3 FP8
// checkpoints read, all mapped to and from QuantizedMatrix (core/quant_matrix.h).
//
// A quantized Hugging Face checkpoint is a config.json whose
// "quantization_config" says how the weights are stored, plus safetensors
// tensors named after each linear module ("model.layers.0.self_attn.q_proj"):
//   compressed-tensors pack-quantized  <m>.weight_packed, .weight_scale,
//                                      .weight_zero_point, .weight_shape, .weight_g_idx
//   compressed-tensors float-quantized <m>.weight (F8_E4M3), .weight_scale, .input_scale
//   GPTQ                               <m>.qweight, .qzeros, .scales, .g_idx
//   AWQ (gemm)                         <m>.qweight, .qzeros, .scales
//   DeepSeek-V3 FP8                    <m>.weight (F8_E4M3), .weight_scale_inv
// formats/compressed_tensors.md gives the exact layouts and where they come
// from. The model loader calls ParseQuantizationConfig once per checkpoint
// and ReadQuantizedLinear once per linear layer; `retort quantize` calls
// CompressedTensorsConfig once and PackCompressedTensors per quantized layer.
//
// Every function is pure (no global state) and thread-safe. Bad input (wrong
// shapes or dtypes, packed sizes that disagree with the stated shape, missing
// tensors, unsupported settings) gives an error that names the module, tensor
// or config field; nothing here crashes on a malformed checkpoint.
#ifndef RETORT_FORMATS_COMPRESSED_TENSORS_H_
#define RETORT_FORMATS_COMPRESSED_TENSORS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "nlohmann/json.hpp"

namespace retort {

// How a layer's input activations are quantized at inference time (recorded
// in the config for the runtime; weights are stored the same way either way).
//   kDynamic: fp8, scale computed per token at run time (per group of 128
//             columns with block weights, as compressed-tensors' FP8_BLOCK)
//   kStatic:  fp8, one calibrated per-tensor scale stored as <m>.input_scale
enum class ActivationQuant { kNone, kDynamic, kStatic };

// "none", "dynamic", "static".
const char* ActivationQuantName(ActivationQuant a);

// ---------------------------------------------------------------- writing --

// The scheme of a compressed-tensors checkpoint as `retort quantize` writes it:
// one config group targeting every Linear layer except `ignore`.
struct CtConfigSpec {
  DType value_type = DType::kI4;  // kI4, kI8 or kF8E4M3
  QuantGranularity granularity = QuantGranularity::kGroup;
  int64_t group_size = 128;  // kGroup: columns per group; kBlock: tile edge
  bool symmetric = true;     // integer values only
  bool act_order = false;    // kGroup int: layers carry weight_g_idx ("actorder": "group")
  // GPTQ took the columns in activation order with groups fixed in natural
  // order (llm-compressor's default, "actorder": "static"): the tensors are
  // those of no act-order; the config says how they were made. Any strategy.
  bool static_act_order = false;
  ActivationQuant activations = ActivationQuant::kNone;  // fp8 weights only
  std::vector<std::string> ignore = {"lm_head"};
};

// Whether compressed-tensors (and vLLM) can express the spec: int4/int8 with
// group/channel/tensor scales (asymmetric only with group/channel), fp8 e4m3
// with tensor/channel/group/block scales, act-order only for int groups,
// activations only for fp8 weights. The error names the offending field.
absl::Status ValidateCtConfigSpec(const CtConfigSpec& spec);

// The compressed-tensors format name for the spec: "pack-quantized" for
// integers, "float-quantized" for fp8 with fp8 activations and
// "naive-quantized" for weight-only fp8 (what the library infers).
const char* CompressedTensorsFormat(const CtConfigSpec& spec);

// The "quantization_config" object for config.json, field for field what
// compressed-tensors' ModelCompressor writes for the same scheme (checked
// against tests/reference/compressed_tensors/quantization_configs.json).
// REQUIRES: ValidateCtConfigSpec(spec).ok().
nlohmann::json CompressedTensorsConfig(const CtConfigSpec& spec);

// The checkpoint tensors of one quantized linear layer `module`, named
// "<module>.<suffix>", in the layout compressed-tensors writes (int:
// pack-quantized; fp8: float-quantized). Scales (and input_scale) are stored
// as `scale_dtype` (kBF16, kF16 or kF32; bf16 is what llm-compressor writes
// for bf16 models: scales that are not bf16-exact are rounded to nearest
// even). `input_scale` (fp8 only) adds the static activation scale.
// Errors: m fails ValidateQuantizedMatrix, fp8 e5m2 values, int block scales.
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackCompressedTensors(
    const std::string& module, const QuantizedMatrix& m, DType scale_dtype = DType::kBF16,
    std::optional<float> input_scale = std::nullopt);

// ---------------------------------------------------------------- reading --

// One way weights are quantized: a compressed-tensors config group, or the
// whole checkpoint for GPTQ / AWQ / DeepSeek FP8.
struct QuantSchemeSpec {
  std::vector<std::string> targets;  // compressed-tensors: "Linear", "re:...", names
  std::string format;                // compressed-tensors format of this group
  DType value_type = DType::kI4;     // kI4, kI8, kF8E4M3
  QuantGranularity granularity = QuantGranularity::kGroup;
  int64_t group_size = 0;  // kGroup: columns per group; kBlock: tile edge
  bool symmetric = true;
  bool act_order = false;  // g_idx expected
  ActivationQuant activations = ActivationQuant::kNone;
  int bits() const { return static_cast<int>(DTypeBits(value_type)); }
};

// A checkpoint's quantization_config, parsed and checked.
struct QuantizationConfig {
  enum class Kind { kNone, kCompressedTensors, kGptq, kAwq, kFp8Block };
  Kind kind = Kind::kNone;
  std::string quant_method;  // as written ("compressed-tensors", "gptq", ...)
  // compressed-tensors: top-level format ("pack-quantized", "float-quantized",
  // "naive-quantized", "int-quantized", "mixed-precision", "dense");
  // GPTQ: checkpoint format "gptq" (v1, zeros stored minus one) or "gptq_v2";
  // AWQ: "gemm"; FP8: "e4m3".
  std::string format;
  std::vector<QuantSchemeSpec> groups;  // compressed-tensors: every config group
                                        // with weights; others: one entry
  std::vector<std::string> ignore;      // module names / "re:" patterns left unquantized
  bool kv_cache_quantized = false;      // compressed-tensors kv_cache_scheme set
  // The first group's scheme in the terms GPTQ-style configs use.
  int bits = 0;
  int64_t group_size = 0;  // -1: one group per row (channel)
  bool desc_act = false;
  bool sym = true;
  std::array<int64_t, 2> weight_block_size = {0, 0};  // kFp8Block / CT block

  // The scheme that applies to `module` (compressed-tensors target matching:
  // exact name, then "re:" pattern, then the class name "Linear"), or nullptr
  // when no group targets it or it is in `ignore`.
  const QuantSchemeSpec* SchemeFor(const std::string& module) const;
};

const char* QuantizationKindName(QuantizationConfig::Kind k);

// Parses config.json (the whole object). No "quantization_config" (or null)
// gives kNone. An unknown quant_method, format, strategy, bit width or any
// other setting this reader cannot map to QuantizedMatrix gives an
// InvalidArgument error naming `source` and the field
// ("quantization_config.config_groups.group_0.weights.num_bits").
absl::StatusOr<QuantizationConfig> ParseQuantizationConfig(const nlohmann::json& config_json,
                                                           const std::string& source);

// Fetches a checkpoint tensor by full name; nullopt when absent.
using TensorLookup = std::function<std::optional<Tensor>(const std::string& name)>;

// The quantized weight of linear layer `module`, or nullopt when the
// checkpoint stores it unquantized (a plain float "<module>.weight"). Values
// are shifted to the signed convention (GPTQ/AWQ unsigned q and zeros minus
// 8 / 128; GPTQ v1 zeros plus one first), scales widened to F32, trivial
// g_idx (column c in group c / group_size) dropped, all-zero zero points
// dropped (symmetric). The result passes ValidateQuantizedMatrix. fp8 values
// share the checkpoint's bytes (zero copy); integer values are unpacked.
absl::StatusOr<std::optional<QuantizedMatrix>> ReadQuantizedLinear(const QuantizationConfig& qc,
                                                                   const std::string& module,
                                                                   const TensorLookup& lookup);

// The static input-activation scale "<module>.input_scale" (compressed-tensors
// fp8 with static activations), or nullopt when the checkpoint has none.
absl::StatusOr<std::optional<float>> ReadInputScale(const std::string& module,
                                                    const TensorLookup& lookup);

// DeepSeek-V3/R1 FP8 weight (F8_E4M3 [rows, cols]) times its 128x128 block
// scales (F32 or BF16 [ceil(rows/128), ceil(cols/128)]) as BF16, rounded once
// from the f32 product (what DeepSeek's fp8_cast_bf16.py computes). `what`
// names the tensor in errors.
absl::StatusOr<Tensor> DequantizeFp8BlockToBf16(const Tensor& weight,
                                                const Tensor& weight_scale_inv,
                                                const std::string& what);

// --------------------------------------------------------------- sparsity --
//
// compressed-tensors' sparsity compressors store a pruned linear layer's
// weight without its zeros (formats/compressed_tensors.md, "Sparse weights"):
//   sparse-bitmask     <m>.shape (I64 [2]), <m>.compressed (the nonzero values
//                      in row-major order, 1-D, the weight's dtype),
//                      <m>.bitmask (U8 [rows, ceil(cols/8)], bit c%8 of byte
//                      c/8 set where w[r, c] != 0), <m>.row_offsets (I64
//                      [rows], index in compressed where row r starts)
//   sparse-24-bitmask  <m>.shape (I64 [2, 1]), <m>.compressed ([rows, cols/2],
//                      the two kept values of every group of 4, in order),
//                      <m>.bitmask (as above, exactly 2 bits per group of 4)
// Weights may be F32, F16, BF16 or F8_E4M3; -0.0 counts as zero (as in the
// library, where -0.0 != 0 is false), so it comes back as +0.0. The byte
// layout is checked against the library's output in
// tests/reference/compressed_tensors/sparse_*.safetensors.

// The sparse-bitmask tensors of `dense_weight` (rank 2) for module `module`.
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparseBitmask(
    const std::string& module, const Tensor& dense_weight);

// The dense weight of `module` from its sparse-bitmask tensors, as `dtype`
// (values are converted from the stored dtype if it differs). Errors name the
// tensor: missing, wrong rank or dtype, bitmask size that disagrees with
// shape, set-bit count that disagrees with compressed, row_offsets that
// disagree with the bitmask.
absl::StatusOr<Tensor> UnpackSparseBitmask(const std::string& module, const TensorLookup& lookup,
                                           DType dtype);

// The sparse-24-bitmask tensors of a 2:4-sparse `dense_weight` (rank 2, cols
// a multiple of 4). A group of 4 with more than 2 nonzeros is an error; one
// with fewer keeps its nonzeros and then its first zeros (the library picks
// those by torch.topk's unspecified tie order, so such bitmasks may differ
// from the library's in which zeros are "kept"; the dense weight is the same).
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparse24Bitmask(
    const std::string& module, const Tensor& dense_weight);

// The dense weight of `module` from its sparse-24-bitmask tensors, as `dtype`.
absl::StatusOr<Tensor> UnpackSparse24Bitmask(const std::string& module, const TensorLookup& lookup,
                                             DType dtype);

// The compressed-tensors format a sparsity structure is stored in:
// "sparse-24-bitmask" for "2:4", "sparse-bitmask" for anything else
// ("unstructured", "4:8", ...).
const char* SparseFormatFor(const std::string& structure);

// The "sparsity_config" object compressed-tensors writes for a pruned model:
// {"format": SparseFormatFor(structure), "global_sparsity": global_sparsity,
//  "ignore": ignore, "registry_requires_subclass": false,
//  "sparsity_structure": structure, "targets": ["Linear"]}.
// global_sparsity is the fraction (0..1) of zero weights.
nlohmann::json SparsityConfig(const std::string& structure, double global_sparsity,
                              const std::vector<std::string>& ignore);

// The whole "quantization_config" object of a sparse-only (unquantized)
// checkpoint, as the library's ModelCompressor.update_config writes it:
// {"quant_method": "compressed-tensors", "sparsity_config": SparsityConfig(..),
//  "transform_config": {}, "version": "0.12.2"} (the last release line with
// the sparse compressors).
nlohmann::json SparseQuantizationConfig(const std::string& structure, double global_sparsity,
                                        const std::vector<std::string>& ignore);

}  // namespace retort

#endif  // RETORT_FORMATS_COMPRESSED_TENSORS_H_
