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
#include <string>
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

// Whether the method (and activation mode) needs calibration samples.
bool NeedsCalibration(const ModelQuantOptions& options);
// The least calibration tokens accepted for `model` (GPTQ/AWQ need at least
// as many tokens as the widest linear input, so the statistics have full
// rank before dampening; 0 when no calibration is needed).
int64_t MinCalibrationTokens(const ModelConfig& config, const ModelQuantOptions& options);

// Quantizes every linear of `model` in place. `calibration` may be empty
// when NeedsCalibration is false. Checks up front that every linear fits
// the scheme (CheckSchemeFits), that no weight is already quantized (see
// allow_requantize), that there are enough calibration tokens; a non-finite
// weight is an error naming the tensor. On error the model may be partly
// quantized: callers discard it (nothing is written).
absl::StatusOr<ModelQuantReport> QuantizeModel(Transformer& model,
                                               const std::vector<std::vector<int32_t>>& calibration,
                                               const ModelQuantOptions& options,
                                               const LayerProgressFn& progress = nullptr);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_MODEL_QUANTIZER_H_
