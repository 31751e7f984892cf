// The jobs behind `retort quantize` and `retort calibrate`, over typed
// options, reporting through a ProgressSink (the CLI renders it on stderr,
// `retort run` writes it to the stage log).
//
// QuantizeToDirectory: to compressed-tensors (what vLLM loads) the model's
// linears become QuantizedMatrix weights (model_quantizer.h), packed with
// formats/compressed_tensors.h; everything else is written in the model's
// float dtype with config.json + quantization_config and the tokenizer files.
// To GGUF: llama.cpp's k-quant presets (model_convert.h), weighted by an
// importance matrix from CalibrateImportance when one is given. Nothing is
// written until everything has succeeded.
#ifndef RETORT_QUANTIZE_QUANTIZE_JOB_H_
#define RETORT_QUANTIZE_QUANTIZE_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "model/calibration.h"
#include "model/gguf_model.h"
#include "quantize/model_quantizer.h"

namespace retort::quant {

struct QuantizeJobOptions {
  std::string model_path;         // HF directory or .gguf (GGUF output: HF directory only)
  std::string out;                // compressed-tensors directory, or .gguf file
  bool replace_existing = false;  // an existing OUT is replaced once the new one is written
  bool to_gguf = false;
  ModelQuantOptions quant;  // compressed-tensors output
  // The scheme is a default, not the user's choice: where its group does not
  // divide every layer, take the largest of 128/64/32 that does (or channel
  // scales) and say so in one line, instead of refusing.
  bool fit_group_size = false;
  CalibrationFiles calib;
  GgufPreset preset = GgufPreset::kQ4_K_M;  // GGUF output
  // Importance matrix file (`retort calibrate`): weighs GGUF output's
  // k-quants, or compressed-tensors' --observer imatrix-mse scale search
  // (instead of importance from calibration).
  std::string imatrix;
};

// Whether the compressed-tensors job needs calibration samples:
// NeedsCalibration of its options, where an imatrix file gives imatrix-mse
// its importance.
bool JobNeedsCalibration(const QuantizeJobOptions& options);

// Parameters and bytes of one part of the written model.
struct SizePart {
  int64_t params = 0;
  uint64_t bytes = 0;
};

struct QuantizeJobResult {
  int64_t params = 0;
  uint64_t bytes = 0;
  // compressed-tensors output: the scheme used (after fit_group_size), and
  // where the bytes go: the quantized linears (values, scales, zero points,
  // g_idx) and what stays float, as llm-compressor leaves it: the embeddings
  // (also the lm_head when tied), an unquantized lm_head, norms and biases.
  QuantScheme scheme;
  DType float_dtype = DType::kBF16;
  SizePart quantized, embeddings, lm_head, other_float;
  bool tied_embeddings = false;
  // A GGUF input: the embeddings' block type there (e.g. Q8_0) and bytes,
  // and the file's size (0 for other inputs).
  std::string input_embedding_type;
  uint64_t input_embedding_bytes = 0, input_file_bytes = 0;
  // Calibration actually used (0 when the method needs none).
  int64_t calib_samples = 0, calib_tokens = 0;
  int64_t tensors = 0;  // GGUF output
  double seconds = 0;   // the quantization (compressed-tensors) or the whole job (GGUF)
  double mean_layer_seconds = 0;
  bool with_imatrix = false;
};

// The line to print when calibration used far less than was asked (under
// half the samples or half the tokens of samples x seq_len), else empty.
std::string CalibrationShortfall(const CalibrationOptions& asked, int64_t samples, int64_t tokens);

absl::StatusOr<QuantizeJobResult> QuantizeToDirectory(const QuantizeJobOptions& options,
                                                      ProgressSink& progress);

struct CalibrateResult {
  int64_t weights = 0, chunks = 0, chunk_size = 0;
  double seconds = 0;
};

// Computes llama.cpp's importance matrix of MODEL over calib and writes it
// to `out` (.gguf).
absl::StatusOr<CalibrateResult> CalibrateImportance(const std::string& model_path,
                                                    const CalibrationFiles& calib,
                                                    const std::string& out, ProgressSink& progress);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_QUANTIZE_JOB_H_
