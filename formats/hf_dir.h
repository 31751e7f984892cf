// A Hugging Face model directory: config.json plus safetensors weights, either
// one model.safetensors or shards listed by model.safetensors.index.json.
//
// HfDirectory::Open() parses config.json, opens (memory-maps) every weight
// file and validates the index up front, so a directory that opened
// successfully serves every tensor name it lists. Tensors are zero-copy views
// into the mappings (see SafetensorsReader::Get). Which weights are loaded,
// in the order transformers uses: model.safetensors, else
// model.safetensors.index.json, else the only *.safetensors file in `dir`.
// Thread-safety: immutable after Open(); const methods are safe concurrently.
#ifndef RETORT_FORMATS_HF_DIR_H_
#define RETORT_FORMATS_HF_DIR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "formats/safetensors.h"
#include "nlohmann/json.hpp"

namespace retort {

inline constexpr char kHfConfigFile[] = "config.json";
inline constexpr char kHfSingleWeightsFile[] = "model.safetensors";
inline constexpr char kHfIndexFile[] = "model.safetensors.index.json";

class HfDirectory {
 public:
  // `dir` holds config.json and either model.safetensors or
  // model.safetensors.index.json + shards (also accepts a single *.safetensors
  // when there is exactly one). Validates the index: every shard exists and
  // opens, every weight_map entry is present in its shard. Errors name the
  // file and the problem on one line.
  static absl::StatusOr<std::unique_ptr<HfDirectory>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }  // parsed config.json (an object)
  std::vector<std::string> TensorNames() const;             // sorted
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  // NotFound naming dir + tensor when missing.
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // Get + check the shape; error "<file>: tensor <name> has shape [a, b], expected [c, d]".
  absl::StatusOr<Tensor> GetWithShape(const std::string& name, const Shape& expected) const;
  // dir/filename, "" if it does not exist (tokenizer.json,
  // tokenizer_config.json, generation_config.json).
  std::string FilePath(const std::string& filename) const;

  // The header entry of `name` (dtype, shape) without touching its bytes;
  // nullptr if absent.
  const SafetensorsEntry* Find(const std::string& name) const;
  // Path of the weight file that holds `name`, "" if absent.
  std::string FileOf(const std::string& name) const;
  // Paths of the weight files, sorted.
  std::vector<std::string> WeightFiles() const;

 private:
  HfDirectory() = default;
  absl::Status OpenWeights();
  absl::Status OpenIndex(const std::string& index_path);
  absl::StatusOr<const SafetensorsReader*> OpenShard(const std::string& filename);

  std::string dir_;
  nlohmann::json config_;
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers_;  // by file name
  std::map<std::string, const SafetensorsReader*> tensors_;            // tensor name -> its file
};

struct HfWriteOptions {
  // A new shard starts when adding the next tensor would exceed this (a
  // tensor larger than the limit gets a shard of its own).
  uint64_t max_shard_bytes = 5ull << 30;
};

// Writes config.json and model.safetensors (or model-0000i-of-0000n.safetensors
// + model.safetensors.index.json with {"metadata":{"total_size":N},
// "weight_map":{...}}) into dir (created if missing). Every file atomic;
// everything is validated before the first file is written, and shards this
// call wrote are removed again if a later write fails. Weight files left from
// an earlier save in the other layout (a stale model.safetensors, index or
// model-*-of-*.safetensors shard) are removed so loaders cannot pick them up.
// Tokenizer files are copied by the caller. JSON files are written as
// transformers writes them: indent 2, keys sorted, trailing newline.
absl::Status WriteHfDirectory(const std::string& dir, const nlohmann::json& config,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const HfWriteOptions& options = {});

}  // namespace retort

#endif  // RETORT_FORMATS_HF_DIR_H_
