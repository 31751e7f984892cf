// The job behind `retort prune`: opens MODEL (an HF directory, or a GGUF
// whose quantized weights are dequantized to f32), checks the options against it,
// prunes (unstructured / N:M layer by layer on calibration data, or
// structured into a smaller dense model) and writes OUT (built under a
// temporary name, renamed into place only when everything succeeded).
// Progress goes to a ProgressSink; errors in option values that need the
// model to be found are OptionError (core/status.h).
#ifndef RETORT_PRUNE_PRUNE_JOB_H_
#define RETORT_PRUNE_PRUNE_JOB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "formats/hf_dir.h"
#include "model/calibration.h"
#include "model/config.h"
#include "nlohmann/json.hpp"
#include "prune/model_pruner.h"
#include "prune/structured.h"

namespace retort::prune {

struct PruneJobOptions {
  std::string model_path, out;
  bool replace_existing = false;  // an existing OUT is replaced once the new one is written
  bool structured = false;
  // Unstructured / N:M: method, pattern, SparseGPT settings (the pattern is
  // ignored when layer_sparsity is given).
  PruneOptions unstructured;
  std::string layer_sparsity;  // "0.3,0.4,..." or "0-9=0.4,10-29=0.6"; parsed against the model
  bool sparse_format = false;  // decoder linears in compressed-tensors' sparse layout
  // Structured: target dimensions, and/or a parameter budget ("90M", "70%").
  StructuredTarget target;
  std::string target_params;
  std::string dtype = "auto";  // output weights: auto, f32, bf16, f16
  CalibrationFiles calib;
};

struct PruneJobResult {
  ModelConfig config_before, config;
  int64_t params_before = 0;
  int64_t params = 0;  // dense parameter count written
  uint64_t bytes = 0;  // tensor bytes written
  DType dtype = DType::kBF16;
  std::string format = "dense";  // or the compressed-tensors sparse format
  PruneReport report;            // unstructured / N:M
  PruneOptions applied;          // unstructured / N:M: the options with the schedule resolved
  int64_t calibration_tokens = 0;
};

absl::StatusOr<PruneJobResult> PruneModelToDirectory(const PruneJobOptions& options,
                                                     ProgressSink& progress);

// Zeros in the decoder layers' linear weights (what PruneModelToDirectory writes),
// and whether every linear keeps the 2:4 / 4:8 pattern.
struct LinearSparsity {
  int64_t elements = 0, zeros = 0;
  bool nm_2_4 = true, nm_4_8 = true;
  std::string error;  // why it could not be counted
};

LinearSparsity CountLinearSparsity(const HfDirectory& dir);

// "N layers, hidden H, intermediate I, A heads, K kv heads" and its JSON.
std::string ConfigLine(const ModelConfig& c);
nlohmann::ordered_json ConfigSummary(const ModelConfig& c);

}  // namespace retort::prune

#endif  // RETORT_PRUNE_PRUNE_JOB_H_
