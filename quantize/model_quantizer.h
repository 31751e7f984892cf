// Quantizes a whole model's linear layers, one decoder layer at a time:
// RTN, GPTQ or AWQ into any QuantScheme (int4/int8 groups or channels, fp8
// tensor/channel/block), the result installed in the Transformer itself
// (Transformer::SetQuantizedWeight), so the caller can evaluate it at once or
// hand NamedWeights() + QuantizedWeights() to a writer.
//
// Per layer l (calibration methods run the samples through layers < l
// already quantized, GPTQ's sequential order, via model/calibration.h):
//   RTN   round every linear (no calibration needed)
//   GPTQ  one pass collects the Hessians of the four distinct linear inputs
//         (q/k/v share one, gate/up share one, o, down), then each weight is
//         quantized against its input's Hessian (quantize/gptq.h)
//   AWQ   one pass collects the inputs (a strided subset of at most
//         AwqOptions::max_tokens rows each), then AutoAWQ's four mappings:
//         input_layernorm -> q/k/v, v_proj -> o_proj (only when they have the
//         same width, i.e. no GQA, as AutoAWQ), post_attention_layernorm ->
//         gate/up, up_proj -> down_proj: search per-channel scales, fold 1/s
//         into the previous op and s into the weights (exact in f32), search
//         weight clipping (not for q/k, as AutoAWQ), round (quantize/awq.h)
// Static fp8 activation scales (compressed-tensors' input_scale, for
// runtimes that quantize activations with a fixed scale) are the max |x|
// over calibration tokens / 448 per linear input.
//
// Memory: the model as loaded (memory-mapped) plus the quantized linears,
// one layer's f32 working copies, the calibration hidden states and one
// layer's statistics; never a second copy of the model.
#ifndef RETORT_QUANTIZE_MODEL_QUANTIZER_H_
#define RETORT_QUANTIZE_MODEL_QUANTIZER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/calibration.h"
#include "model/transformer.h"
#include "quantize/awq.h"
#include "quantize/gptq.h"
#include "quantize/scheme.h"

namespace retort::quant {

enum class QuantMethod { kRtn, kGptq, kAwq };
// "rtn", "gptq", "awq".
absl::StatusOr<QuantMethod> ParseQuantMethod(const std::string& name);
const char* QuantMethodName(QuantMethod m);

// How runtimes should scale fp8 activations (recorded, not applied: the CPU
// engine keeps activations in f32).
enum class ActivationScales { kNone, kDynamic, kStatic };

struct ModelQuantOptions {
  QuantScheme scheme;
  QuantMethod method = QuantMethod::kRtn;
  GptqOptions gptq;
  AwqOptions awq;
  // AWQ: calibration tokens kept per linear input for the scale search (a
  // strided subset; the clip search subsamples further to awq.max_tokens).
  int64_t awq_search_tokens = 4096;
  ActivationScales activations = ActivationScales::kNone;
  // lm_head stays unquantized unless set (compressed-tensors' and
  // llm-compressor's default ignore list); tied embeddings are never quantized.
  bool quantize_lm_head = false;
  // Weights already stored quantized (GGUF block types) are refused unless
  // set; then they are dequantized layer by layer first.
  bool allow_requantize = false;
  // How every method picks its scales (scheme.h): RTN's rounding, GPTQ's
  // groups as it reaches them, AWQ's final rounding (its scale and clip
  // searches keep minmax, as AutoAWQ's).
  ObserverOptions observer;
  // imatrix-mse: the importance (mean squared input, [cols]) of weight
  // `name` (HF name), e.g. from an imatrix file; empty when unknown. When
  // not set, the importance comes from the calibration samples: the inputs
  // each layer sees (GPTQ: its Hessian's diagonal), which makes RTN
  // calibrate. AWQ divides it by s^2 for its scaled weights.
  std::function<std::vector<float>(const std::string& name)> importance;
};

struct ModelQuantReport {
  std::vector<double> layer_seconds;
  // Static fp8 input scales by module ("model.layers.0.self_attn.q_proj").
  std::map<std::string, float> input_scales;
  int64_t calibration_tokens = 0;
  double seconds = 0;
  size_t peak_rss = 0;
  // Sum over linears of the method's own error measure (GPTQ's weighted
  // squared error, AWQ's output loss; 0 for RTN), for logs.
  double method_error = 0;
};

// A --scheme value: one of ours (ParseQuantScheme's spelling) or one of
// llm-compressor's preset names (compressed-tensors 0.18's PRESET_SCHEMES,
// any case), which fixes the activation quantization too:
//   W4A16        int4-g128, symmetric, weights only
//   W4A16_ASYM   int4-g128-asym, weights only
//   W8A16        int8-g128, symmetric, weights only (int8-channel before 0.18)
//   FP8          fp8-tensor + static per-tensor fp8 activations (calibrated)
//   FP8_DYNAMIC  fp8-channel + dynamic per-token fp8 activations
//   FP8_BLOCK    fp8-block128 + dynamic per-token-group-of-128 activations
// The others (W8A8/INT8 and W4A8: int8 activations; W4AFP8; NVFP4, MXFP4,
// MXFP8: fp4/microscaled values; W2..W7: other widths) are refused with why.
struct SchemeChoice {
  QuantScheme scheme;
  std::string preset;                           // the preset's name in upper case; empty for ours
  std::optional<ActivationScales> activations;  // set by presets only
};
absl::StatusOr<SchemeChoice> ParseSchemeOrPreset(std::string_view name);

// One weight QuantizeModel quantizes: its name and [rows, cols].
struct LinearShape {
  std::string name;
  int64_t rows = 0, cols = 0;
};
// The weights QuantizeModel would quantize under `options` (the decoder
// linears, and an untied lm_head with quantize_lm_head), with their shapes;
// weights the model lacks are left out (QuantizeModel reports them).
std::vector<LinearShape> QuantizedLinearShapes(const Transformer& model,
                                               const ModelQuantOptions& options);

// The schemes of options.scheme's value type and symmetry that fit every
// weight of QuantizedLinearShapes, best first: groups of 128, 64 and 32 (the
// sizes vLLM's int4/int8 kernels take) no larger than the scheme's group,
// then channel scales. Empty when even channel scales do not fit.
std::vector<QuantScheme> FittingSchemes(const Transformer& model, const ModelQuantOptions& options);

// CheckSchemeFits for every weight of QuantizedLinearShapes, before any
// work; the error names the first weight that does not fit and the schemes
// that fit this model (FittingSchemes).
absl::Status CheckModelFitsScheme(const Transformer& model, const ModelQuantOptions& options);

// What QuantizeModel checks before any work: every weight is present, none
// is quantized already (see allow_requantize), and CheckModelFitsScheme.
absl::Status CheckModelQuantizable(const Transformer& model, const ModelQuantOptions& options);

// Whether the method (and activation mode, and observer) needs calibration
// samples.
bool NeedsCalibration(const ModelQuantOptions& options);
// The least calibration tokens accepted for `model` (GPTQ/AWQ need at least
// as many tokens as the widest linear input, so the statistics have full
// rank before dampening; 0 when no calibration is needed).
int64_t MinCalibrationTokens(const ModelConfig& config, const ModelQuantOptions& options);

// Quantizes every linear of `model` in place. `calibration` may be empty
// when NeedsCalibration is false. Checks up front CheckModelQuantizable and
// that there are enough calibration tokens; a non-finite
// weight is an error naming the tensor. On error the model may be partly
// quantized: callers discard it (nothing is written).
absl::StatusOr<ModelQuantReport> QuantizeModel(Transformer& model,
                                               const std::vector<std::vector<int32_t>>& calibration,
                                               const ModelQuantOptions& options,
                                               const LayerProgressFn& progress = nullptr);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_MODEL_QUANTIZER_H_
