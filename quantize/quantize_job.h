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
  std::string model_path;  // HF directory or .gguf (GGUF output: HF directory only)
  std::string out;         // compressed-tensors directory, or .gguf file
  bool to_gguf = false;
  ModelQuantOptions quant;  // compressed-tensors output
  CalibrationFiles calib;
  GgufPreset preset = GgufPreset::kQ4_K_M;  // GGUF output
  std::string imatrix;                      // GGUF output: importance matrix file
};

struct QuantizeJobResult {
  int64_t params = 0;
  uint64_t bytes = 0;
  int64_t tensors = 0;  // GGUF output
  double seconds = 0;   // the quantization (compressed-tensors) or the whole job (GGUF)
  double mean_layer_seconds = 0;
  bool with_imatrix = false;
};

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
