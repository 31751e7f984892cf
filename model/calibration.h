// Calibration for the passes that look at activations (GPTQ, AWQ, FP8
// activation scales, importance matrices, Wanda, SparseGPT, structured
// pruning): token samples cut from the user's data, and a runner that takes
// them through the model one decoder layer at a time.
//
// Layer-wise, memory stays near one layer's work plus the hidden states of
// the samples (samples x tokens x hidden f32: 128 x 512 x 576 x 4 B = 151 MB
// for SmolLM2-135M), never a second copy of the model. A pass observes layer
// l's linear inputs, rewrites layer l's weights (quantized, pruned), then
// Advance() runs layer l again with its new weights to produce layer l+1's
// inputs, so later layers are calibrated on what the rewritten model
// computes (GPTQ's sequential order).
#ifndef RETORT_MODEL_CALIBRATION_H_
#define RETORT_MODEL_CALIBRATION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/progress.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "text/tokenizer.h"

namespace retort {

struct CalibrationOptions {
  int64_t samples = 128;  // sequences wanted
  int64_t seq_len = 512;  // tokens per sequence
};

// Token samples from files:
//   *.jsonl / *.json  traces or chats (formats/traces.h dialects): each record
//                     is one sample, its messages' text joined with blank
//                     lines, truncated to seq_len; records shorter than 16
//                     tokens are skipped
//   a trace shard     (zstd; retort generate's token shards): prompt +
//                     completion ids, truncated to seq_len; every id must be
//                     inside `vocab_size` (a shard written with another
//                     tokenizer is an error)
//   anything else     plain UTF-8 text: all text files are concatenated,
//                     tokenized once, and cut into consecutive seq_len chunks
//                     (llama.cpp's imatrix/perplexity way)
// Each text sample starts with BOS when the tokenizer adds one. Takes the
// first `samples` samples in file order. Errors name the file; no samples at
// all is an error.
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibrationSamples(
    const std::vector<std::string>& paths, const Tokenizer& tokenizer, int64_t vocab_size,
    const CalibrationOptions& options);

// Progress of a layer-wise pass (quantization, pruning), reported after
// each decoder layer.
struct LayerProgress {
  int64_t layer = 0;
  int64_t num_layers = 0;
  double seconds = 0;        // this layer
  double total_seconds = 0;  // so far
  size_t peak_rss = 0;       // bytes, the process so far
};
using LayerProgressFn = std::function<void(const LayerProgress&)>;

// Calibration text for the passes that look at activations (quantize,
// calibrate, prune), as a user names it.
struct CalibrationFiles {
  std::vector<std::string> files;  // text, trace/chat .jsonl or trace shards
  CalibrationOptions options;
};

// Tokenizes calib.files with MODEL's own tokenizer (model_files.h) into at
// most calib.options.samples sequences of calib.options.seq_len tokens below
// `vocab_size`; logs "[calib] N samples, T tokens". Errors name the file.
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadModelCalibration(
    const std::string& model_path, int64_t vocab_size, const CalibrationFiles& calib,
    ProgressSink& progress);

// Total tokens of a sample set.
int64_t CountTokens(const std::vector<std::vector<int32_t>>& samples);

// Runs `model` one decoder layer at a time over calibration samples.
class LayerwiseRunner {
 public:
  // Embeds every sample (the hidden states entering layer 0). The model must
  // outlive the runner; its weights may be replaced between calls.
  static absl::StatusOr<LayerwiseRunner> Start(const Transformer& model,
                                               std::vector<std::vector<int32_t>> samples);

  // The layer the hidden states enter next (num_layers when done).
  int64_t layer() const { return layer_; }
  int64_t num_samples() const { return static_cast<int64_t>(hidden_.size()); }
  int64_t tokens() const { return tokens_; }

  // Runs the current layer over every sample, calling `observe` with the
  // inputs of its linears, without moving on (the hidden states are kept).
  absl::Status Observe(const LinearInputObserver& observe);
  // Runs the current layer (with the model's weights as they are now) over
  // every sample and makes its output the next layer's input. Returns the
  // mean over tokens of cos(input, output) of the layer (1 - block influence).
  // `observe`, if not null, sees the linear inputs of this pass.
  absl::StatusOr<double> Advance(const LinearInputObserver* observe = nullptr);

  // The current hidden states of sample i ([len_i, hidden]).
  const std::vector<float>& hidden(int64_t i) const { return hidden_[i]; }
  const std::vector<int32_t>& sample(int64_t i) const { return samples_[i]; }

 private:
  LayerwiseRunner(const Transformer& model, KvCache cache)
      : model_(&model), cache_(std::move(cache)) {}
  absl::Status RunLayer(bool keep_output, const LinearInputObserver* observe, double* cos_sum);

  const Transformer* model_;
  KvCache cache_;
  std::vector<std::vector<int32_t>> samples_;
  std::vector<std::vector<float>> hidden_;
  int64_t layer_ = 0;
  int64_t tokens_ = 0;
};

}  // namespace retort

#endif  // RETORT_MODEL_CALIBRATION_H_
