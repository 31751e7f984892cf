// Transformer: the forward pass of a Llama-family decoder (Llama, Mistral,
// Qwen2, Qwen3) on a kernels/backend.h Backend (the default backend when the
// model is built: the CPU unless --device chose another).
//
//   x = embed(tokens)
//   per layer:  h = RMSNorm(x); q,k,v = h·W^T (+bias); [Qwen3: RMSNorm(q), RMSNorm(k) per head]
//               RoPE(q, k); append k,v to the cache; x += o_proj(attention(q, cache))
//               h = RMSNorm(x); x += down(silu(gate(h)) * up(h))
//   logits = RMSNorm(x) · lm_head^T   (lm_head = embed_tokens when tied)
//
// Weights stay in the dtype they are stored in (F32, BF16 or F16): loaded
// from an HF directory they are zero-copy views into the memory-mapped
// safetensors files, so a bf16 model occupies its file size, not twice it.
// Only the small vectors (norm weights, biases) are widened to f32 copies.
//
// Forward() appends n tokens to a KvCache: prefill is one call with the whole
// prompt (processed in chunks of up to kPrefillChunk tokens through GEMMs),
// decode is one call per token (GEMV). Forward is const; concurrent calls with
// different caches are not supported because the kernels share one thread pool.
//
// ForwardBatch() advances several sequences (each with its own KvCache) in
// one pass: the projections and the MLP see all their new tokens as one
// matrix (GEMM instead of one GEMV per sequence: this is what makes batched
// decoding faster), RoPE uses each row's own position, attention runs per
// sequence against its own cache. A sequence's logits equal what Forward
// gives it alone up to f32 rounding: the matrix kernels pick their path by
// the total row count (GEMV for few rows, GEMM for more), and the
// paths sum in different orders (f32/bf16/f16 weights: ~1e-6 relative). For
// ggml block weights the GEMV path dots 8-bit-quantized activations (as
// llama.cpp) while sgemm multiplies the f32 activations, so rows that cross
// kQuantGemvMaxRows differ by the activation rounding (~1e-3 relative).
#ifndef RETORT_MODEL_TRANSFORMER_H_
#define RETORT_MODEL_TRANSFORMER_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "formats/hf_dir.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace retort {

// Which rows of logits Forward writes.
enum class LogitsMode {
  kLast,  // logits[vocab] for the last token only (generation)
  kAll,   // logits[n, vocab], one row per token (perplexity, distillation)
  kNone,  // none (prefill whose output is not needed); logits may be null
};

// One sequence's share of a Transformer::ForwardBatch call.
struct BatchSlot {
  KvCache* cache = nullptr;         // this sequence's cache; one slot per cache
  const int32_t* tokens = nullptr;  // its new tokens [n], appended at cache->position()
  int64_t n = 0;                    // >= 1: 1 while decoding, more while prefilling
  bool want_logits = true;          // write the logits of its last new token
};

// The linear layers of a decoder layer.
enum class LinearSlot { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr LinearSlot kLinearSlots[] = {LinearSlot::kQ,   LinearSlot::kK,    LinearSlot::kV,
                                              LinearSlot::kO,   LinearSlot::kGate, LinearSlot::kUp,
                                              LinearSlot::kDown};
// The HF module name inside a layer: "self_attn.q_proj", ..., "mlp.down_proj".
const char* LinearSlotName(LinearSlot slot);
// "model.layers.<layer>.<LinearSlotName>.weight".
std::string LinearWeightName(int64_t layer, LinearSlot slot);
// "model.layers.<layer>.<LinearSlotName>.bias".
std::string LinearBiasName(int64_t layer, LinearSlot slot);
// [out, in] of `slot`'s weight under `config`; its bias, when it has one, is
// [out].
Shape LinearShape(const ModelConfig& config, LinearSlot slot);
// Whether `config` gives `slot` a bias: q, k and v with attention_bias, o with
// attention_out_bias, gate, up and down with mlp_bias.
bool LinearHasBias(const ModelConfig& config, LinearSlot slot);
// A layer linear's weight or bias as a checkpoint names and shapes it.
struct LinearTensor {
  LinearSlot slot;
  bool is_bias;
  std::string name;  // LinearWeightName or LinearBiasName
  Shape shape;       // LinearShape, or [out] for the bias
};
// The tensors of the linears `slots` of layer `layer` in the order the model
// loads and lays them out: each weight in turn, then the biases `config`
// gives them.
std::vector<LinearTensor> LinearTensors(const ModelConfig& config, int64_t layer,
                                        std::initializer_list<LinearSlot> slots);
// The slot under which a LinearInputObserver sees `slot`'s input (q/k/v
// share kQ's, gate/up kGate's; o and down have their own).
LinearSlot InputSlot(LinearSlot slot);

// Sees the input of a layer's linears during Transformer::ForwardLayer: called
// once per distinct input, with slot kQ for the normed hidden states q/k/v
// share, kO for the attention output, kGate for the normed hidden states
// gate/up share, kDown for silu(gate) * up. x is [rows, cols], row-major, in
// the memory of the model's backend (host memory on the CPU; elsewhere pass
// it to that backend's ops, such as AccumulateGram, or copy it with CopyToHost).
using LinearInputObserver =
    std::function<void(LinearSlot slot, const float* x, int64_t rows, int64_t cols)>;

class Transformer {
 public:
  // Tokens per internal prefill chunk (bounds activation memory).
  static constexpr int64_t kPrefillChunk = 512;

  // Reads config.json and the weights of an HF directory. Errors are one line
  // naming the file: unsupported architecture, missing tensor, wrong shape,
  // unsupported dtype.
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(const HfDirectory& dir);
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(const std::string& dir);

  // Builds a model from tensors named as in HF checkpoints
  // ("model.layers.0.self_attn.q_proj.weight", ...), e.g. the output of a
  // pass. Tensors are shared, not copied. `source` prefixes error messages.
  static absl::StatusOr<std::unique_ptr<Transformer>> FromNamedWeights(
      const ModelConfig& config, const std::vector<std::pair<std::string, Tensor>>& weights,
      const std::string& source = "weights");

  // A randomly initialised model (transformers' scheme: linear and embedding
  // weights ~ N(0, initializer_range), norms 1, biases 0), weights stored in
  // `dtype` (F32/BF16/F16). Deterministic in `seed`, independent of threads.
  static absl::StatusOr<std::unique_ptr<Transformer>> RandomInit(const ModelConfig& config,
                                                                 uint64_t seed, DType dtype);

  const ModelConfig& config() const { return config_; }

  // Every parameter under its HF name, in stored dtype (tied lm_head omitted,
  // as save_pretrained does). Ready for WriteHfDirectory.
  const std::vector<std::pair<std::string, Tensor>>& NamedWeights() const { return named_; }
  // Bytes of all weights (what one decode step streams, roughly).
  size_t WeightBytes() const;

  // A cache sized for this model; max_tokens <= 0: max_position_embeddings.
  KvCache NewCache(int64_t max_tokens = 0) const { return KvCache(config_, max_tokens, backend_); }

  // Runs tokens[0..n) at positions cache.position() .. +n-1 and appends them
  // to the cache. Writes logits per `mode`: kLast -> logits[vocab],
  // kAll -> logits[n * vocab]. Errors (cache unchanged): token id outside
  // [0, vocab), cache full, n < 0.
  absl::Status Forward(const int32_t* tokens, int64_t n, KvCache& cache, float* logits,
                       LogitsMode mode = LogitsMode::kLast) const;

  // Runs every slot's new tokens in one pass (see the file comment) and
  // appends them to the slots' caches. logits: [slots.size() * vocab], row i
  // the last-token logits of slot i; rows of slots with want_logits false are
  // left untouched (logits may be null when no slot wants any). Work is split
  // into internal passes of at most kPrefillChunk rows (all of a pass's rows
  // go through the GEMMs together), so callers that want decode steps to stay
  // short should also bound the prefill tokens they put in one call.
  // Errors, with every cache unchanged: a null or repeated cache, a cache of
  // another model shape, n < 1, a token id outside [0, vocab), a cache that
  // would overflow (naming the slot).
  absl::Status ForwardBatch(const std::vector<BatchSlot>& slots, float* logits) const;

  // Convenience: logits [n * vocab] of a whole sequence from a fresh cache.
  absl::StatusOr<std::vector<float>> Logits(const std::vector<int32_t>& tokens) const;

  // ---- Layer-wise passes (calibration for quantization and pruning) ----
  // x[n, hidden] = the embeddings of tokens[0..n). Error for an id outside the vocabulary.
  absl::Status Embed(const int32_t* tokens, int64_t n, float* x) const;
  // Runs decoder layer `layer` over one sequence's hidden states x[n, hidden]
  // in place, at positions 0..n-1 (causal, the same arithmetic as Forward).
  // `scratch` holds the layer's keys/values (it is cleared; any cache of this
  // model with room for n tokens). `observe`, if not null, sees the input of
  // every linear of the layer.
  absl::Status ForwardLayer(int64_t layer, float* x, int64_t n, KvCache& scratch,
                            const LinearInputObserver* observe = nullptr) const;

  // Replaces the weight `name` (an HF name NamedWeights lists, or a linear
  // that is quantized now) with a dense tensor of the same shape, in a dtype
  // the engine reads; the model keeps a reference to t's storage.
  absl::Status ReplaceWeight(const std::string& name, const Tensor& t);
  // Replaces a linear layer's weight ("model.layers.L.mlp.down_proj.weight"
  // or "lm_head.weight" when untied) with a quantized matrix [out, in] that
  // the kernels multiply directly. NamedWeights() stops listing it;
  // QuantizedWeights() lists it.
  absl::Status SetQuantizedWeight(const std::string& name,
                                  std::shared_ptr<const QuantizedMatrix> q);
  const std::map<std::string, std::shared_ptr<const QuantizedMatrix>>& QuantizedWeights() const {
    return quantized_;
  }
  // The dense weight `name` or null (quantized and unknown names give null).
  const Tensor* FindWeight(const std::string& name) const;

 private:
  // A linear layer's weight: a dense Tensor [out, in] in its stored dtype, or
  // a QuantizedMatrix when `quant` is set; `dev` is the form the backend
  // runs (Backend::PrepareWeight).
  struct Linear {
    Tensor w;
    std::shared_ptr<const QuantizedMatrix> quant;
    std::shared_ptr<const DeviceWeight> dev;
  };
  struct Layer {
    Linear q, k, v, o, gate, up, down;
    std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
    std::vector<float> gate_bias, up_bias, down_bias;
    std::vector<float> input_norm, post_norm;  // [hidden]
    std::vector<float> q_norm, k_norm;         // [head_dim] (Qwen3)
  };
  using Lookup = std::function<absl::StatusOr<Tensor>(const std::string& name, const Shape& shape)>;

  explicit Transformer(const ModelConfig& config) : config_(config) {}
  absl::Status Build(const Lookup& lookup);
  absl::Status ForwardChunk(const int32_t* tokens, int64_t n, KvCache& cache, float* logits,
                            LogitsMode mode) const;
  // One ForwardBatch pass: `pieces` of consecutive tokens of distinct caches.
  struct BatchPiece {
    KvCache* cache;
    const int32_t* tokens;
    int64_t n;
    float* logits;  // null: no logits for this piece
    // false: logits[vocab] of the piece's last token; true: logits[n, vocab]
    // of every token (LogitsMode::kAll).
    bool all_logits = false;
  };
  absl::Status ForwardPieces(const std::vector<BatchPiece>& pieces) const;
  // Layer l over the n stacked rows of ws.x (pieces at row0, RoPE tables for
  // every row); appends their keys/values to the pieces' caches at each
  // cache's position() without advancing it.
  absl::Status LayerStep(int64_t l, const std::vector<BatchPiece>& pieces,
                         const std::vector<int64_t>& row0, int64_t n, KvCache::Workspace& ws,
                         const float* cos, const float* sin,
                         const LinearInputObserver* observe) const;
  // Grows a forward workspace to n stacked rows of the config's shapes on `be`.
  static absl::Status FitWorkspace(const ModelConfig& c, int64_t n, Backend& be,
                                   KvCache::Workspace& ws);
  // Rebuilds the layers from named_ and quantized_ (after a replacement).
  absl::Status Rebuild();

  ModelConfig config_;
  Backend* backend_ = nullptr;  // the device the forward runs on (set by Build)
  Tensor embed_;
  std::shared_ptr<const DeviceWeight> embed_dev_;
  Linear lm_head_;
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;
  std::vector<std::pair<std::string, Tensor>> named_;
  std::map<std::string, std::shared_ptr<const QuantizedMatrix>> quantized_;
};

}  // namespace retort

#endif  // RETORT_MODEL_TRANSFORMER_H_
