// A Llama-family model stored as GGUF, in the engine's terms, and the
// conventions that map one onto the other both ways.
//
// llama.cpp's files differ from a Hugging Face checkpoint in three ways that
// change the math silently if ignored; each is handled here and nowhere else:
//   * names: blk.N.attn_q.weight is model.layers.N.self_attn.q_proj.weight
//     (GgufTensorName / HfTensorName);
//   * RoPE layout: the llama arch stores the rows of q and k permuted to the
//     interleaved RoPE layout (convert_hf_to_gguf's `permute`), qwen2/qwen3
//     keep HF's half-rotated layout. The engine rotates half-rotated, so llama
//     q/k rows are un-permuted on load (whole rows move, so block-quantized
//     rows are moved without decoding);
//   * Llama-3.1 rope scaling travels as a rope_freqs tensor of per-frequency
//     divisors, read back into RopeScaling{kLlama3, ...}.
// Tied embeddings are the absence of output.weight.
//
// ReadGgufModel keeps the weights as zero-copy views into the mapped file in
// their stored (possibly block-quantized) type; only the permuted llama q/k
// tensors are owned copies. Thread-safety: free functions, no shared state.
#ifndef RETORT_MODEL_GGUF_MODEL_H_
#define RETORT_MODEL_GGUF_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "formats/gguf.h"
#include "model/config.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

namespace retort {

// general.architecture of a config: "llama" (Llama, Mistral), "qwen2", "qwen3".
const char* GgufArchName(Arch arch);

// blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight, ... Error
// for names with no HF counterpart (rope_freqs.weight included).
absl::StatusOr<std::string> HfTensorName(const std::string& gguf_name);
// The inverse. Error for names the engine does not know.
absl::StatusOr<std::string> GgufTensorName(const std::string& hf_name);

// The row permutation convert_hf_to_gguf applies to llama q/k weights (and
// biases): within each of `n_heads` heads, row s * head_dim/2 + i moves to
// 2 * i + s. `w` is [n_heads * head_dim, ...] of any dtype (block types
// included; rows move whole). Returns an owned tensor.
absl::StatusOr<Tensor> PermuteQkRowsToGguf(const Tensor& w, int64_t n_heads);
// The inverse (GGUF interleaved -> HF half-rotated).
absl::StatusOr<Tensor> UnpermuteQkRowsFromGguf(const Tensor& w, int64_t n_heads);

// rope_freqs values (llama.cpp's per-frequency divisors of inv_freq) for a
// llama3-scaled config; empty when the config has no llama3 scaling.
std::vector<float> Llama3RopeFreqFactors(const ModelConfig& config);

// The model's shape from {arch}.* metadata (and the tensor list: tied
// embeddings, biases, rope_freqs). Errors name the file and key; an
// architecture other than llama/qwen2/qwen3 is refused by name.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufReader& reader);

// tokenizer.ggml.* as TokenizerParts. Only "gpt2" (byte-level BPE) is
// accepted as tokenizer.ggml.model.
absl::StatusOr<TokenizerParts> TokenizerPartsFromGguf(const GgufReader& reader);

struct GgufModel {
  ModelConfig config;
  // HF names, HF row-major shapes, stored dtype; q/k un-permuted.
  std::vector<std::pair<std::string, Tensor>> weights;
  TokenizerParts tokenizer;
  std::string chat_template;  // tokenizer.chat_template, "" if absent
};

// Everything the engine needs from a GGUF file. The weights keep `reader`'s
// mapping alive.
absl::StatusOr<GgufModel> ReadGgufModel(const GgufReader& reader);

// Opens a .gguf and builds the engine with the weights kept quantized.
absl::StatusOr<std::unique_ptr<Transformer>> LoadGgufTransformer(const std::string& path);

// True if `path` is a regular file starting with the GGUF magic.
bool IsGgufFile(const std::string& path);

// ---- writing ----------------------------------------------------------------

// tokenizer.json (+ tokenizer_config.json, may be null) -> GGUF parts, the way
// convert_hf_to_gguf does: vocab_size entries ([PADi] unused tokens fill
// holes), added tokens control (special) or user-defined, merges as "a b",
// bos/eos/pad from tokenizer_config.json. The pre-tokenizer name is
// `pre_override` if given, else recognised from the tokenizer.json
// pre-tokenizer (gpt2, smollm, llama-bpe, qwen2, deepseek-v3); error if not
// recognised.
struct HfTokenizerForGguf {
  TokenizerParts parts;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool has_add_bos = false;  // write tokenizer.ggml.add_bos_token
};
absl::StatusOr<HfTokenizerForGguf> TokenizerPartsFromHf(const nlohmann::json& tokenizer_json,
                                                        const nlohmann::json& tokenizer_config,
                                                        int64_t vocab_size,
                                                        const std::string& pre_override,
                                                        const std::string& source);

// The metadata convert_hf_to_gguf writes for a llama/qwen2/qwen3 model, in its
// order: general.*, {arch}.*, general.file_type, tokenizer.ggml.*,
// tokenizer.chat_template, general.quantization_version.
// `writer` must have been made with GgufArchName(config.arch).
absl::Status AddGgufModelMetadata(const ModelConfig& config, const HfTokenizerForGguf& tokenizer,
                                  const std::string& chat_template, uint32_t file_type,
                                  const std::string& model_name, GgufWriter& writer);

// GGUF vocabulary -> a byte-level BPE tokenizer.json that `tokenizers` and
// our Tokenizer load, with the pre-tokenizer regexes and normalizer the .pre
// name stands for, and a tokenizer_config.json with bos/eos/pad and the chat
// template.
absl::StatusOr<nlohmann::ordered_json> HfTokenizerJsonFromParts(const TokenizerParts& parts);
nlohmann::ordered_json HfTokenizerConfigFromParts(const TokenizerParts& parts,
                                                  const std::string& chat_template);

// ---- llama.cpp's quantization presets -------------------------------------------

enum class GgufPreset {
  kF32,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ4_K_M,
  kQ5_K_M,
  kQ6_K
};
// "f32", "q4_k_m", ... (case-insensitive).
absl::StatusOr<GgufPreset> ParseGgufPreset(const std::string& name);
std::string GgufPresetName(GgufPreset preset);
// llama.cpp's LLAMA_FTYPE for general.file_type.
uint32_t GgufFileType(GgufPreset preset);

// The type a tensor gets under `preset`, as llama.cpp's quantizer chooses it:
// 1-D tensors, norms and rope_freqs stay F32; output.weight (token_embd.weight
// when tied) takes Q6_K in the k-quant and legacy presets; attn_v and ffn_down
// take Q6_K in the layers use_more_bits picks for Q4_K_M/Q5_K_M; a k-quant on
// rows that are not a multiple of 256 falls back (Q4_K->Q5_0, Q5_K->Q5_1,
// Q6_K->Q8_0), a 32-block type on rows not a multiple of 32 to F16.
// `shape` is row-major (HF order).
DType GgufTensorType(GgufPreset preset, const std::string& gguf_name, const Shape& shape,
                     const ModelConfig& config);

}  // namespace retort

#endif  // RETORT_MODEL_GGUF_MODEL_H_
