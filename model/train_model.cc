#include "model/train_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/backend.h"
#include "model/rope.h"

namespace retort {
namespace {

std::string LayerName(int64_t layer, const char* suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

}  // namespace

TrainModel::TrainModel(const ModelConfig& config) : config_(config) {
  config_.torch_dtype = DType::kF32;
  Layout();
  inv_freq_ = RopeInvFreq(config_);
}

int64_t TrainModel::AddParam(const std::string& name, Shape shape, bool decay) {
  const int64_t offset = static_cast<int64_t>(values_.size());
  const int64_t size = NumElements(shape);
  // Pointers are filled once the arenas have their final size (Layout).
  params_.push_back(Parameter{name, nullptr, nullptr, size, std::move(shape), decay});
  values_.resize(offset + size);
  return offset;
}

void TrainModel::Layout() {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, hd = c.head_dim;
  params_.clear();
  values_.clear();
  std::vector<int64_t> offsets;
  auto add = [&](const std::string& name, Shape shape, bool decay) {
    const int64_t off = AddParam(name, std::move(shape), decay);
    offsets.push_back(off);
    return off;
  };
  embed_ = add("model.embed_tokens.weight", {c.vocab_size, H}, false);
  layers_.assign(c.num_layers, LayerParams{});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerParams& L = layers_[l];
    auto name = [&](const char* s) { return LayerName(l, s); };
    // By LinearSlot.
    int64_t* const weights[] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    int64_t* const biases[] = {&L.q_bias,    &L.k_bias,  &L.v_bias,   &L.o_bias,
                               &L.gate_bias, &L.up_bias, &L.down_bias};
    auto linears = [&](std::initializer_list<LinearSlot> slots) {
      for (const LinearTensor& t : LinearTensors(c, l, slots)) {
        const int i = static_cast<int>(t.slot);
        *(t.is_bias ? biases : weights)[i] = add(t.name, t.shape, /*decay=*/!t.is_bias);
      }
    };
    L.input_norm = add(name("input_layernorm.weight"), {H}, false);
    linears({LinearSlot::kQ, LinearSlot::kK, LinearSlot::kV});
    linears({LinearSlot::kO});
    if (c.qk_norm) {
      L.q_norm = add(name("self_attn.q_norm.weight"), {hd}, false);
      L.k_norm = add(name("self_attn.k_norm.weight"), {hd}, false);
    }
    L.post_norm = add(name("post_attention_layernorm.weight"), {H}, false);
    linears({LinearSlot::kGate, LinearSlot::kUp, LinearSlot::kDown});
  }
  final_norm_ = add("model.norm.weight", {H}, false);
  lm_head_off_ = c.tie_word_embeddings ? embed_ : add("lm_head.weight", {c.vocab_size, H}, true);

  grads_.assign(values_.size(), 0.f);
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].value = values_.data() + offsets[i];
    params_[i].grad = grads_.data() + offsets[i];
  }
  lm_head_ = values_.data() + lm_head_off_;
  lm_head_grad_ = grads_.data() + lm_head_off_;
}

// ---- construction -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<TrainModel>> TrainModel::FromTransformer(const Transformer& model) {
  RETURN_IF_ERROR(model.config().Validate("TrainModel::FromTransformer"));
  std::unique_ptr<TrainModel> train(new TrainModel(model.config()));
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : model.NamedWeights()) by_name[name] = &t;
  for (Parameter& p : train->params_) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) {
      return absl::NotFoundError(
          absl::StrCat("TrainModel::FromTransformer: the model has no tensor ", p.name,
                       " (expected shape ", ShapeString(p.shape), ")"));
    }
    const Tensor& t = *it->second;
    if (t.numel() != p.size) {
      return absl::InvalidArgumentError(absl::StrCat("TrainModel::FromTransformer: tensor ", p.name,
                                                     " has shape ", ShapeString(t.shape()),
                                                     ", expected ", ShapeString(p.shape)));
    }
    if (t.dtype() == DType::kF32) {
      std::memcpy(p.value, t.raw(), p.size * sizeof(float));
    } else {
      const Tensor f32 = t.To(DType::kF32);
      std::memcpy(p.value, f32.raw(), p.size * sizeof(float));
    }
  }
  return train;
}

absl::StatusOr<std::unique_ptr<TrainModel>> TrainModel::RandomInit(const ModelConfig& config,
                                                                   uint64_t seed) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model,
                   Transformer::RandomInit(config, seed, DType::kF32));
  return FromTransformer(*model);
}

void TrainModel::ZeroGrads() { std::fill(grads_.begin(), grads_.end(), 0.f); }

std::vector<std::pair<std::string, Tensor>> TrainModel::NamedWeights(DType dtype) const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(params_.size());
  for (const Parameter& p : params_) {
    Tensor t = Tensor::Zeros(dtype, p.shape);
    ConvertFromF32(dtype, p.value, t.mutable_raw(), p.size);
    out.emplace_back(p.name, std::move(t));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Transformer>> TrainModel::ToTransformer() const {
  return Transformer::FromNamedWeights(config_, NamedWeights(DType::kF32), "TrainModel");
}

// ---- activation arena -------------------------------------------------------

// Floats one token keeps per layer (the LayerActs buffers).
int64_t TrainModel::LayerFloatsPerToken() const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, qdim = nh * hd, kvdim = nkv * hd;
  int64_t per_token = 2 * H + 2 + 2 * qdim + 2 * kvdim + nh + 2 * I;
  if (c.qk_norm) per_token += qdim + kvdim + nh + nkv;
  return per_token;
}

int64_t TrainModel::ActivationFloats(int64_t n) const {
  const int64_t H = config_.hidden_size, L = config_.num_layers;
  // Checkpointing: every layer's input, then one layer's buffers (reused).
  const int64_t layers = checkpointing_ ? L * H + LayerFloatsPerToken() : L * LayerFloatsPerToken();
  return n * (layers + H + 1);
}

void TrainModel::SetActivationCheckpointing(bool on) {
  if (on == checkpointing_) return;
  checkpointing_ = on;
  n_ = 0;  // the saved state (if any) is in the other layout
  capacity_ = 0;
  acts_.clear();
  acts_.shrink_to_fit();
}

void TrainModel::ReleaseGradients() {
  grads_.clear();
  grads_.shrink_to_fit();
  for (Parameter& p : params_) p.grad = nullptr;
  lm_head_grad_ = nullptr;
}

int64_t TrainModel::ScratchFloats(int64_t n) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qdim = c.num_heads * hd, kvdim = c.num_kv_heads * hd;
  // dres, dh, h | dattn, dq, dk, dv | (qk_norm: dq, dk after the norm) | act, dact, dgate, dup
  int64_t per_token = 3 * H + 2 * qdim + 2 * kvdim + 4 * I;
  if (c.qk_norm) per_token += qdim + kvdim;
  return n * per_token;
}

size_t TrainModel::ActivationBytes(int64_t n) const {
  const int64_t half = config_.head_dim / 2;
  return sizeof(float) * (ActivationFloats(n) + ScratchFloats(n) + 2 * n * half) +
         sizeof(int32_t) * 2 * n;
}

void TrainModel::Reserve(int64_t n) {
  if (n <= capacity_) return;
  acts_.assign(ActivationFloats(n), 0.f);
  scratch_.assign(ScratchFloats(n), 0.f);
  capacity_ = n;
}

// Buffers of the current n_ packed one after another: layer 0's, layer 1's,
// ..., then the final norm's input and rstd. With checkpointing: the layer
// inputs (x_in of layer 0, 1, ...), then one set of buffers every layer
// shares (its x_in slot unused), then the final norm's input and rstd.
TrainModel::LayerActs TrainModel::ActsOf(int64_t layer) {
  const ModelConfig& c = config_;
  const int64_t n = n_, H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, qdim = nh * hd, kvdim = nkv * hd;
  float* p = checkpointing_ ? acts_.data() + c.num_layers * n * H
                            : acts_.data() + layer * n * LayerFloatsPerToken();
  auto take = [&](int64_t count) {
    float* r = p;
    p += count;
    return r;
  };
  LayerActs a{};
  a.x_in = take(n * H);
  a.x_mid = take(n * H);
  a.rstd_in = take(n);
  a.rstd_mid = take(n);
  if (c.qk_norm) {
    a.q_pre = take(n * qdim);
    a.k_pre = take(n * kvdim);
    a.rstd_q = take(n * nh);
    a.rstd_k = take(n * nkv);
  }
  a.q = take(n * qdim);
  a.k = take(n * kvdim);
  a.v = take(n * kvdim);
  a.attn = take(n * qdim);
  a.lse = take(n * nh);
  a.gate = take(n * I);
  a.up = take(n * I);
  if (checkpointing_) a.x_in = acts_.data() + layer * n * H;
  return a;
}

// ---- forward ----------------------------------------------------------------

absl::Status TrainModel::Forward(const int32_t* tokens, const int32_t* positions,
                                 const int32_t* doc_start, int64_t n, float* hidden) {
  const ModelConfig& c = config_;
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat("TrainModel::Forward: n = ", n));
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("TrainModel::Forward: token id ", tokens[i],
                                                " at index ", i, " is outside the vocabulary [0, ",
                                                c.vocab_size, ")"));
    }
    if (positions[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("TrainModel::Forward: position ", positions[i],
                                                     " at index ", i, " is negative"));
    }
    const bool starts_doc = doc_start[i] == i;
    const bool continues_doc = i > 0 && doc_start[i] == doc_start[i - 1];
    if (!starts_doc && !continues_doc) {
      return absl::InvalidArgumentError(
          absl::StrCat("TrainModel::Forward: doc_start[", i, "] = ", doc_start[i], "; expected ", i,
                       " (a new document) or doc_start[", i - 1, "] (the same document)"));
    }
  }
  n_ = 0;  // no valid saved state until this Forward completes
  Reserve(n);
  n_ = n;

  const int64_t H = c.hidden_size, half = c.head_dim / 2;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Backend& be = DefaultBackend();
  // The parameter, gradient and activation arenas are host vectors: a backend
  // whose memory is not the host's cannot take them as operands yet.
  if (!be.memory_is_host()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "TrainModel: training on ", DeviceName(be.device()),
        " is not supported yet (the training arenas live in host memory); use --device cpu"));
  }

  tokens_.assign(tokens, tokens + n);
  doc_start_.assign(doc_start, doc_start + n);
  std::vector<int64_t> pos64(positions, positions + n);
  cos_.resize(n * half);
  sin_.resize(n * half);
  RETURN_IF_ERROR(be.RopeCosSin(inv_freq_.data(), half, pos64.data(), n, cos_.data(), sin_.data()));

  float* h = scratch_.data();  // [n, H] normed input of the projections
  float* tmp = h + n * H;      // [n, H] o_proj / down_proj output
  float* act = tmp + n * H;    // [n, I] silu(gate) * up

  x_final_ = acts_.data() + ActivationFloats(n) - n * H - n;
  rstd_final_ = x_final_ + n * H;
  {  // Embedding lookup into layer 0's input (or the final norm's input).
    float* x0 = c.num_layers > 0 ? ActsOf(0).x_in : x_final_;
    const Tensor table = Tensor::View(DType::kF32, {c.vocab_size, H}, W(embed_), nullptr);
    ASSIGN_OR_RETURN(std::shared_ptr<const DeviceWeight> t,
                     be.PrepareWeight(table, WeightUse::kEmbedding));
    RETURN_IF_ERROR(be.Embedding(*t, tokens, n, x0));
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    float* x_out = l + 1 < c.num_layers ? ActsOf(l + 1).x_in : x_final_;
    RETURN_IF_ERROR(LayerForward(l, ActsOf(l), h, tmp, act, x_out));
  }
  RETURN_IF_ERROR(be.RmsNormForward(x_final_, n, H, W(final_norm_), eps, hidden, rstd_final_));
  return absl::OkStatus();
}

absl::Status TrainModel::LayerForward(int64_t l, const LayerActs& a, float* h, float* tmp,
                                      float* act, float* x_out) {
  const ModelConfig& c = config_;
  const int64_t n = n_, H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, qdim = nh * hd, kvdim = nkv * hd;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const AttentionShape shape{nh, nkv, hd};
  Backend& be = DefaultBackend();
  const LayerParams& L = layers_[l];
  // Attention block.
  RETURN_IF_ERROR(be.RmsNormForward(a.x_in, n, H, W(L.input_norm), eps, h, a.rstd_in));
  RETURN_IF_ERROR(be.LinearForward(h, n, H, W(L.q), qdim, W(L.q_bias), c.qk_norm ? a.q_pre : a.q));
  RETURN_IF_ERROR(be.LinearForward(h, n, H, W(L.k), kvdim, W(L.k_bias), c.qk_norm ? a.k_pre : a.k));
  RETURN_IF_ERROR(be.LinearForward(h, n, H, W(L.v), kvdim, W(L.v_bias), a.v));
  if (c.qk_norm) {
    RETURN_IF_ERROR(be.RmsNormForward(a.q_pre, n * nh, hd, W(L.q_norm), eps, a.q, a.rstd_q));
    RETURN_IF_ERROR(be.RmsNormForward(a.k_pre, n * nkv, hd, W(L.k_norm), eps, a.k, a.rstd_k));
  }
  RETURN_IF_ERROR(be.ApplyRope(a.q, n, nh, hd, qdim, cos_.data(), sin_.data()));
  RETURN_IF_ERROR(be.ApplyRope(a.k, n, nkv, hd, kvdim, cos_.data(), sin_.data()));
  RETURN_IF_ERROR(be.AttentionForward(a.q, a.k, a.v, doc_start_.data(), n, shape, scale,
                                      c.WindowOf(l), a.attn, a.lse));
  RETURN_IF_ERROR(be.LinearForward(a.attn, n, qdim, W(L.o), H, W(L.o_bias), tmp));
  RETURN_IF_ERROR(be.Add(a.x_in, tmp, n * H, a.x_mid));
  // MLP block (SwiGLU).
  RETURN_IF_ERROR(be.RmsNormForward(a.x_mid, n, H, W(L.post_norm), eps, h, a.rstd_mid));
  RETURN_IF_ERROR(be.LinearForward(h, n, H, W(L.gate), I, W(L.gate_bias), a.gate));
  RETURN_IF_ERROR(be.LinearForward(h, n, H, W(L.up), I, W(L.up_bias), a.up));
  if (x_out == nullptr) return absl::OkStatus();  // a recompute: Backward redoes the rest
  RETURN_IF_ERROR(be.SiluMul(a.gate, a.up, n * I, act));
  RETURN_IF_ERROR(be.LinearForward(act, n, I, W(L.down), H, W(L.down_bias), tmp));
  return be.Add(a.x_mid, tmp, n * H, x_out);
}

// ---- backward ---------------------------------------------------------------

absl::Status TrainModel::Backward(const float* dhidden) {
  if (n_ <= 0) {
    return absl::FailedPreconditionError(
        "TrainModel::Backward: no Forward pending (call Forward before each Backward)");
  }
  if (grads_.empty()) {
    return absl::FailedPreconditionError(
        "TrainModel::Backward: the gradients were released (ReleaseGradients)");
  }
  const ModelConfig& c = config_;
  const int64_t n = n_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, qdim = nh * hd, kvdim = nkv * hd;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const AttentionShape shape{nh, nkv, hd};
  Backend& be = DefaultBackend();

  float* p = scratch_.data();
  auto take = [&](int64_t count) {
    float* r = p;
    p += count;
    return r;
  };
  float* dres = take(n * H);  // d loss / d residual stream at the current point
  float* dh = take(n * H);    // d loss / d (normed input of the projections)
  float* hbuf = take(n * H);  // normed input, recomputed
  float* dattn = take(n * qdim);
  float* dq = take(n * qdim);
  float* dk = take(n * kvdim);
  float* dv = take(n * kvdim);
  float* dq_pre = c.qk_norm ? take(n * qdim) : dq;
  float* dk_pre = c.qk_norm ? take(n * kvdim) : dk;
  float* act = take(n * I);
  float* dact = take(n * I);
  float* dgate = take(n * I);
  float* dup = take(n * I);

  RETURN_IF_ERROR(be.RmsNormBackward(x_final_, rstd_final_, n, H, W(final_norm_), dhidden, dres,
                                     G(final_norm_), /*accumulate_dx=*/false));
  for (int64_t l = c.num_layers - 1; l >= 0; --l) {
    const LayerParams& L = layers_[l];
    const LayerActs a = ActsOf(l);
    // Checkpointing: this layer's activations again, from its saved input
    // (hbuf, dh and act are free until the backward below writes them).
    if (checkpointing_) RETURN_IF_ERROR(LayerForward(l, a, hbuf, dh, act, nullptr));
    // MLP block: x_out = x_mid + down(silu(gate(h)) * up(h)), h = norm(x_mid).
    RETURN_IF_ERROR(be.SiluMul(a.gate, a.up, n * I, act));
    RETURN_IF_ERROR(be.LinearBackward(act, n, I, W(L.down), H, dres, dact, G(L.down),
                                      G(L.down_bias), /*accumulate_dx=*/false));
    RETURN_IF_ERROR(be.SiluMulBackward(a.gate, a.up, dact, n * I, dgate, dup));
    RETURN_IF_ERROR(be.RmsNormApply(a.x_mid, a.rstd_mid, n, H, W(L.post_norm), hbuf));
    RETURN_IF_ERROR(be.LinearBackward(hbuf, n, H, W(L.gate), I, dgate, dh, G(L.gate),
                                      G(L.gate_bias), /*accumulate_dx=*/false));
    RETURN_IF_ERROR(be.LinearBackward(hbuf, n, H, W(L.up), I, dup, dh, G(L.up), G(L.up_bias),
                                      /*accumulate_dx=*/true));
    RETURN_IF_ERROR(be.RmsNormBackward(a.x_mid, a.rstd_mid, n, H, W(L.post_norm), dh, dres,
                                       G(L.post_norm),
                                       /*accumulate_dx=*/true));
    // Attention block: x_mid = x_in + o(attention(rope(q), rope(k), v)), from h = norm(x_in).
    RETURN_IF_ERROR(be.LinearBackward(a.attn, n, qdim, W(L.o), H, dres, dattn, G(L.o), G(L.o_bias),
                                      /*accumulate_dx=*/false));
    RETURN_IF_ERROR(be.AttentionBackward(a.q, a.k, a.v, doc_start_.data(), n, shape, scale,
                                         c.WindowOf(l), a.attn, a.lse, dattn, dq, dk, dv));
    RETURN_IF_ERROR(be.ApplyRopeBackward(dq, n, nh, hd, qdim, cos_.data(), sin_.data()));
    RETURN_IF_ERROR(be.ApplyRopeBackward(dk, n, nkv, hd, kvdim, cos_.data(), sin_.data()));
    if (c.qk_norm) {
      RETURN_IF_ERROR(be.RmsNormBackward(a.q_pre, a.rstd_q, n * nh, hd, W(L.q_norm), dq, dq_pre,
                                         G(L.q_norm), /*accumulate_dx=*/false));
      RETURN_IF_ERROR(be.RmsNormBackward(a.k_pre, a.rstd_k, n * nkv, hd, W(L.k_norm), dk, dk_pre,
                                         G(L.k_norm), /*accumulate_dx=*/false));
    }
    RETURN_IF_ERROR(be.RmsNormApply(a.x_in, a.rstd_in, n, H, W(L.input_norm), hbuf));
    RETURN_IF_ERROR(be.LinearBackward(hbuf, n, H, W(L.q), qdim, dq_pre, dh, G(L.q), G(L.q_bias),
                                      /*accumulate_dx=*/false));
    RETURN_IF_ERROR(be.LinearBackward(hbuf, n, H, W(L.k), kvdim, dk_pre, dh, G(L.k), G(L.k_bias),
                                      /*accumulate_dx=*/true));
    RETURN_IF_ERROR(be.LinearBackward(hbuf, n, H, W(L.v), kvdim, dv, dh, G(L.v), G(L.v_bias),
                                      /*accumulate_dx=*/true));
    RETURN_IF_ERROR(be.RmsNormBackward(a.x_in, a.rstd_in, n, H, W(L.input_norm), dh, dres,
                                       G(L.input_norm),
                                       /*accumulate_dx=*/true));
  }
  RETURN_IF_ERROR(be.EmbeddingBackward(tokens_.data(), n, H, dres, G(embed_)));
  n_ = 0;
  return absl::OkStatus();
}

}  // namespace retort
