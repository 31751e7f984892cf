// TrainModel: a Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) that can
// be trained: f32 master weights, a forward pass over a packed sequence of
// documents that keeps what the backward needs, and an explicit backward (the
// llm.c way, no autograd) built on kernels/cpu/train_ops.h.
//
//   Forward(tokens, positions, doc_start, n)  -> hidden [n, H] (after the final
//                                                RMSNorm: the LM head's input)
//   <the loss computes logits = hidden · lm_head^T chunk by chunk, adds its
//    gradient to lm_head_grad() and returns d loss / d hidden>
//   Backward(dhidden)                         -> gradients accumulated (+=)
//
// Parameters and their gradients each live in one contiguous f32 arena, in
// the order of parameters(), so an optimizer or an all-reduce can treat them
// as flat arrays. With tied embeddings the LM head IS the embedding table
// (and its gradient the table's gradient).
//
// Memory: per layer the forward keeps the layer's input and its post-attention
// residual, the RMSNorm reciprocal std-devs, q/k (after RoPE), v, the
// attention output and its log-sum-exp, and the MLP's gate and up
// pre-activations (Qwen3 also q/k before their norm). The normalised inputs of
// the projections and silu(gate)·up are recomputed in the backward (cheap
// element-wise work). Attention keeps no n^2 matrix.
//
// Thread-safety: none; one thread at a time (the kernels share one pool).
#ifndef RETORT_MODEL_TRAIN_MODEL_H_
#define RETORT_MODEL_TRAIN_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/transformer.h"

namespace retort {

class TrainModel {
 public:
  // One trainable tensor: a slice of the parameter arena and the same slice of
  // the gradient arena.
  struct Parameter {
    std::string name;  // HF name, e.g. "model.layers.0.mlp.up_proj.weight"
    float* value;
    float* grad;
    int64_t size;  // elements
    Shape shape;
    // Weight decay applies: true for linear weights (the untied lm_head
    // included), false for norm weights, biases and the embedding table.
    bool decay;
  };

  // f32 copy of every weight of `model` (F32/BF16/F16 or ggml block types,
  // dequantized). Gradients start at zero.
  static absl::StatusOr<std::unique_ptr<TrainModel>> FromTransformer(const Transformer& model);
  // transformers' initialisation (see Transformer::RandomInit), deterministic in `seed`.
  static absl::StatusOr<std::unique_ptr<TrainModel>> RandomInit(const ModelConfig& config,
                                                                uint64_t seed);

  TrainModel(const TrainModel&) = delete;
  TrainModel& operator=(const TrainModel&) = delete;

  const ModelConfig& config() const { return config_; }

  std::vector<Parameter>& parameters() { return params_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  // The arenas: num_parameters() floats each, in parameters() order.
  float* param_arena() { return values_.data(); }
  float* grad_arena() { return grads_.data(); }
  int64_t num_parameters() const { return static_cast<int64_t>(values_.size()); }

  void ZeroGrads();

  // Runs the decoder on a packed sequence of n tokens and writes the final-
  // normed hidden states hidden[n, hidden_size]. positions[i]: position of
  // token i within its document (RoPE angle); doc_start[i]: index of the first
  // token of token i's document (documents are contiguous; see
  // cpu::AttentionForward). Keeps the activations for Backward (the arena
  // grows to the largest n seen). Errors: token id outside [0, vocab), a
  // negative position, an inconsistent doc_start, n <= 0.
  absl::Status Forward(const int32_t* tokens, const int32_t* positions, const int32_t* doc_start,
                       int64_t n, float* hidden);

  // The LM head [vocab, hidden] and its gradient (the embedding table and its
  // gradient when tie_word_embeddings). The loss adds its lm_head gradient here.
  const float* lm_head() const { return lm_head_; }
  float* lm_head_grad() { return lm_head_grad_; }

  // dhidden: d loss / d hidden [n, hidden] for the n of the last Forward.
  // Back-propagates through the final norm, every layer and the embedding,
  // ADDING into the gradients. REQUIRES: Forward was called since the last
  // Backward (error otherwise).
  absl::Status Backward(const float* dhidden);

  // Parameters under their HF names (tied lm_head omitted, as save_pretrained
  // does) as owned tensors of `dtype` (F32, or BF16/F16 rounded to nearest
  // even), ready for WriteHfDirectory.
  std::vector<std::pair<std::string, Tensor>> NamedWeights(DType dtype = DType::kF32) const;
  // The inference engine over an f32 copy of the current weights (evaluation).
  absl::StatusOr<std::unique_ptr<Transformer>> ToTransformer() const;

  // Bytes of the activations and backward scratch a step of n tokens uses
  // (in the current checkpointing mode).
  size_t ActivationBytes(int64_t n) const;

  // Activation (gradient) checkpointing: Forward keeps only each layer's
  // input; Backward recomputes a layer's activations from it, one layer at a
  // time, just before back-propagating through it. The gradients are
  // bit-identical (the same kernels on the same inputs); a step costs one
  // more forward pass, and the activations shrink from every layer's
  // buffers to one layer's plus the layer inputs. A model that only runs
  // Forward (an online teacher) saves the memory at no cost.
  void SetActivationCheckpointing(bool on);
  bool activation_checkpointing() const { return checkpointing_; }
  // Frees the gradient arena of a model that never runs Backward (an online
  // teacher); Backward then fails.
  void ReleaseGradients();

 private:
  // Offsets into the arenas (-1: absent).
  struct LayerParams {
    int64_t input_norm = -1, q = -1, k = -1, v = -1, o = -1;
    int64_t q_bias = -1, k_bias = -1, v_bias = -1, o_bias = -1;
    int64_t q_norm = -1, k_norm = -1, post_norm = -1;
    int64_t gate = -1, up = -1, down = -1;
    int64_t gate_bias = -1, up_bias = -1, down_bias = -1;
  };
  // Pointers of one layer's saved activations inside acts_.
  struct LayerActs {
    float* x_in;      // [n, H] layer input (residual)
    float* x_mid;     // [n, H] residual after attention
    float* rstd_in;   // [n]
    float* rstd_mid;  // [n]
    float* q_pre;     // [n, qdim] before q_norm (qk_norm only)
    float* k_pre;     // [n, kvdim]
    float* rstd_q;    // [n * heads] (qk_norm only)
    float* rstd_k;    // [n * kv_heads]
    float* q;         // [n, qdim] after RoPE
    float* k;         // [n, kvdim] after RoPE
    float* v;         // [n, kvdim]
    float* attn;      // [n, qdim] attention output
    float* lse;       // [heads, n]
    float* gate;      // [n, I] pre-activation
    float* up;        // [n, I]
  };

  explicit TrainModel(const ModelConfig& config);
  void Layout();  // fills params_ and layers_ offsets, sizes the arenas
  int64_t AddParam(const std::string& name, Shape shape, bool decay);
  float* W(int64_t offset) { return offset < 0 ? nullptr : values_.data() + offset; }
  float* G(int64_t offset) { return offset < 0 ? nullptr : grads_.data() + offset; }
  int64_t LayerFloatsPerToken() const;
  int64_t ActivationFloats(int64_t n) const;
  int64_t ScratchFloats(int64_t n) const;
  void Reserve(int64_t n);
  LayerActs ActsOf(int64_t layer);
  // One decoder layer's forward from a.x_in into a's buffers; x_out (null:
  // not written) gets the layer's output. h [n, H], tmp [n, H] and act
  // [n, I] are scratch.
  absl::Status LayerForward(int64_t layer, const LayerActs& a, float* h, float* tmp, float* act,
                            float* x_out);

  ModelConfig config_;
  std::vector<float> values_, grads_;
  std::vector<Parameter> params_;
  int64_t embed_ = -1, final_norm_ = -1, lm_head_off_ = -1;
  std::vector<LayerParams> layers_;
  const float* lm_head_ = nullptr;
  float* lm_head_grad_ = nullptr;
  std::vector<float> inv_freq_;

  // State of the last Forward.
  bool checkpointing_ = false;
  int64_t n_ = 0;         // tokens (0: no Forward pending a Backward)
  int64_t capacity_ = 0;  // tokens the arenas are sized for
  std::vector<float> acts_, scratch_;
  std::vector<int32_t> tokens_, doc_start_;
  std::vector<float> cos_, sin_;
  float* x_final_ = nullptr;     // [n, H] residual entering the final norm
  float* rstd_final_ = nullptr;  // [n]
};

}  // namespace retort

#endif  // RETORT_MODEL_TRAIN_MODEL_H_
