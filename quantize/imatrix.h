// Importance matrices ("imatrix"): per input column of every linear layer,
// the sum of squared activations over calibration tokens, which the GGUF
// k-quant encoders use to weigh rounding errors (quantize/gguf_quants.h).
//
// The file is llama.cpp's GGUF imatrix format (llama-imatrix
// --output-format gguf, read by llama-quantize --imatrix): general.type
// "imatrix", imatrix.datasets (string array), imatrix.chunk_count and
// imatrix.chunk_size (u32), and per weight (GGUF tensor names,
// "blk.0.attn_q.weight") two F32 tensors: "<name>.in_sum2" [cols] (ggml
// shape {cols, 1}) and "<name>.counts" [1] (tokens summed). The importance
// of column j is in_sum2[j] / counts.
#ifndef RETORT_QUANTIZE_IMATRIX_H_
#define RETORT_QUANTIZE_IMATRIX_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/transformer.h"

namespace retort::quant {

struct ImportanceMatrix {
  struct Entry {
    std::vector<double> sum2;  // [cols]
    double count = 0;          // tokens
  };
  std::map<std::string, Entry> entries;  // by GGUF tensor name
  std::vector<std::string> datasets;
  int64_t chunk_count = 0;  // calibration samples
  int64_t chunk_size = 0;   // tokens per sample

  // Mean squared activation per column of GGUF tensor `name`, or empty
  // when the matrix has no entry for it.
  std::vector<float> Importance(const std::string& name) const;
};

// Runs the samples through `model` layer by layer (model/calibration.h) and
// sums the squared inputs of every linear, filed under the GGUF names of
// the weights that read them (q/k/v share their input's sums, as do
// gate/up). progress(layer, num_layers) after each layer.
absl::StatusOr<ImportanceMatrix> CollectImportance(
    const Transformer& model, const std::vector<std::vector<int32_t>>& samples,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

// Writes / reads the GGUF imatrix file (atomically; errors name the path and
// the malformed tensor or key).
absl::Status WriteImportanceMatrix(const ImportanceMatrix& m, const std::string& path);
absl::StatusOr<ImportanceMatrix> ReadImportanceMatrix(const std::string& path);

}  // namespace retort::quant

#endif  // RETORT_QUANTIZE_IMATRIX_H_
