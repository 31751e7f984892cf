#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "formats/compressed_tensors.h"
#include "kernels/backend.h"
#include "model/rope.h"

namespace retort {
namespace {

const float* OrNull(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// One output of a MatMulGroup: the linear's weight as the backend runs it.
template <typename Linear>
MatMulOutput Output(const Linear& w, const std::vector<float>& bias, float* y) {
  return MatMulOutput{w.dev.get(), OrNull(bias), y};
}

std::string LayerName(int64_t layer, const char* suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

absl::Status CheckWeightDType(const std::string& where, const std::string& name, const Tensor& t) {
  if (DefaultBackend().SupportsWeightDType(t.dtype())) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": tensor ", name, " has dtype ", std::string(DTypeName(t.dtype())),
                   "; the engine reads F32, BF16, F16 or ggml block types"));
}

absl::Status CheckShape(const std::string& where, const std::string& name, const Shape& actual,
                        const Shape& shape) {
  if (actual == shape) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", name, " has shape ",
                                                 ShapeString(actual), ", expected ",
                                                 ShapeString(shape)));
}

// ---- deterministic random init -------------------------------------------

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// N(0, stddev) values in `dtype`; each block of 64K elements has its own
// stream derived from (seed, name, block), so the result does not depend on
// how the blocks are spread over threads.
Tensor RandomNormal(const std::string& name, const Shape& shape, double stddev, uint64_t seed,
                    DType dtype) {
  Tensor t = Tensor::Zeros(dtype, shape);
  const int64_t n = t.numel();
  constexpr int64_t kBlock = 1 << 16;
  const uint64_t base = seed * 0x9e3779b97f4a7c15ull ^ Fnv1a(name);
  const size_t elem = DTypeBytes(dtype, 1);
  ParallelFor((n + kBlock - 1) / kBlock, 1, [&](int64_t b, int64_t e) {
    std::vector<float> buf(kBlock);
    for (int64_t blk = b; blk < e; ++blk) {
      uint64_t state = base + static_cast<uint64_t>(blk) * 0xd1b54a32d192ed03ull;
      const int64_t begin = blk * kBlock, count = std::min(kBlock, n - begin);
      for (int64_t i = 0; i < count; i += 2) {
        // Box-Muller on two uniforms in (0, 1].
        double u1 = (static_cast<double>(SplitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
        double u2 = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
        double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
        buf[i] = static_cast<float>(r * std::cos(2 * M_PI * u2));
        if (i + 1 < count) buf[i + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2));
      }
      ConvertFromF32(dtype, buf.data(), static_cast<char*>(t.mutable_raw()) + begin * elem, count);
    }
  });
  return t;
}

Tensor Filled(const Shape& shape, float value, DType dtype) {
  std::vector<float> v(NumElements(shape), value);
  Tensor t = Tensor::Zeros(dtype, shape);
  ConvertFromF32(dtype, v.data(), t.mutable_raw(), t.numel());
  return t;
}

}  // namespace

const char* LinearSlotName(LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kQ:
      return "self_attn.q_proj";
    case LinearSlot::kK:
      return "self_attn.k_proj";
    case LinearSlot::kV:
      return "self_attn.v_proj";
    case LinearSlot::kO:
      return "self_attn.o_proj";
    case LinearSlot::kGate:
      return "mlp.gate_proj";
    case LinearSlot::kUp:
      return "mlp.up_proj";
    case LinearSlot::kDown:
      return "mlp.down_proj";
  }
  return "?";
}

std::string LinearWeightName(int64_t layer, LinearSlot slot) {
  return absl::StrCat("model.layers.", layer, ".", LinearSlotName(slot), ".weight");
}

std::string LinearBiasName(int64_t layer, LinearSlot slot) {
  return absl::StrCat("model.layers.", layer, ".", LinearSlotName(slot), ".bias");
}

Shape LinearShape(const ModelConfig& c, LinearSlot slot) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t qdim = c.num_heads * c.head_dim, kvdim = c.num_kv_heads * c.head_dim;
  switch (slot) {
    case LinearSlot::kQ:
      return {qdim, H};
    case LinearSlot::kK:
    case LinearSlot::kV:
      return {kvdim, H};
    case LinearSlot::kO:
      return {H, qdim};
    case LinearSlot::kGate:
    case LinearSlot::kUp:
      return {I, H};
    case LinearSlot::kDown:
      return {H, I};
  }
  return {};
}

bool LinearHasBias(const ModelConfig& c, LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kQ:
    case LinearSlot::kK:
    case LinearSlot::kV:
      return c.attention_bias;
    case LinearSlot::kO:
      return c.attention_out_bias;
    case LinearSlot::kGate:
    case LinearSlot::kUp:
    case LinearSlot::kDown:
      return c.mlp_bias;
  }
  return false;
}

std::vector<LinearTensor> LinearTensors(const ModelConfig& config, int64_t layer,
                                        std::initializer_list<LinearSlot> slots) {
  std::vector<LinearTensor> out;
  for (LinearSlot s : slots) {
    out.push_back({s, false, LinearWeightName(layer, s), LinearShape(config, s)});
  }
  for (LinearSlot s : slots) {
    if (LinearHasBias(config, s)) {
      out.push_back({s, true, LinearBiasName(layer, s), {LinearShape(config, s)[0]}});
    }
  }
  return out;
}

LinearSlot InputSlot(LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kK:
    case LinearSlot::kV:
      return LinearSlot::kQ;
    case LinearSlot::kUp:
      return LinearSlot::kGate;
    default:
      return slot;
  }
}

// ---- construction ---------------------------------------------------------

absl::Status Transformer::Build(const Lookup& lookup) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, hd = c.head_dim;
  named_.clear();
  auto matrix = [&](const std::string& name, Shape shape, Tensor& out) -> absl::Status {
    ASSIGN_OR_RETURN(out, lookup(name, shape));
    named_.emplace_back(name, out);
    return absl::OkStatus();
  };
  // A linear layer: quantized when quantized_ has it, else a dense tensor.
  auto linear = [&](const std::string& name, Shape shape, Linear& out) -> absl::Status {
    out = Linear{};
    if (auto it = quantized_.find(name); it != quantized_.end()) {
      const QuantizedMatrix& q = *it->second;
      if (q.rows != shape[0] || q.cols != shape[1]) {
        return absl::InvalidArgumentError(absl::StrCat("quantized tensor ", name, " is [", q.rows,
                                                       ", ", q.cols, "], expected ",
                                                       ShapeString(shape)));
      }
      out.quant = it->second;
      return absl::OkStatus();
    }
    return matrix(name, std::move(shape), out.w);
  };
  auto vec = [&](const std::string& name, int64_t n, std::vector<float>& out) -> absl::Status {
    ASSIGN_OR_RETURN(Tensor t, lookup(name, {n}));
    named_.emplace_back(name, t);
    out.resize(n);
    ConvertToF32(t.dtype(), t.raw(), out.data(), n);
    return absl::OkStatus();
  };

  RETURN_IF_ERROR(matrix("model.embed_tokens.weight", {c.vocab_size, H}, embed_));
  layers_.assign(c.num_layers, Layer{});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& L = layers_[l];
    auto name = [&](const char* s) { return LayerName(l, s); };
    // By LinearSlot.
    Linear* const weights[] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    std::vector<float>* const biases[] = {&L.q_bias,    &L.k_bias,  &L.v_bias,   &L.o_bias,
                                          &L.gate_bias, &L.up_bias, &L.down_bias};
    auto linears = [&](std::initializer_list<LinearSlot> slots) -> absl::Status {
      for (const LinearTensor& t : LinearTensors(c, l, slots)) {
        const int i = static_cast<int>(t.slot);
        RETURN_IF_ERROR(t.is_bias ? vec(t.name, t.shape[0], *biases[i])
                                  : linear(t.name, t.shape, *weights[i]));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(vec(name("input_layernorm.weight"), H, L.input_norm));
    RETURN_IF_ERROR(linears({LinearSlot::kQ, LinearSlot::kK, LinearSlot::kV, LinearSlot::kO}));
    if (c.qk_norm) {
      RETURN_IF_ERROR(vec(name("self_attn.q_norm.weight"), hd, L.q_norm));
      RETURN_IF_ERROR(vec(name("self_attn.k_norm.weight"), hd, L.k_norm));
    }
    RETURN_IF_ERROR(vec(name("post_attention_layernorm.weight"), H, L.post_norm));
    RETURN_IF_ERROR(linears({LinearSlot::kGate, LinearSlot::kUp, LinearSlot::kDown}));
  }
  RETURN_IF_ERROR(vec("model.norm.weight", H, final_norm_));
  if (c.tie_word_embeddings) {
    lm_head_ = Linear{embed_, nullptr};
  } else {
    RETURN_IF_ERROR(linear("lm_head.weight", {c.vocab_size, H}, lm_head_));
  }
  // Every weight in the form the backend runs it (the CPU repacks some
  // linears for its GEMV; a GPU would upload them); named_ keeps the stored
  // tensors.
  backend_ = &DefaultBackend();
  auto prepare = [&](Linear& t) -> absl::Status {
    if (t.quant) {
      ASSIGN_OR_RETURN(t.dev, backend_->PrepareWeight(t.quant));
    } else {
      ASSIGN_OR_RETURN(t.dev, backend_->PrepareWeight(t.w, WeightUse::kLinear));
    }
    return absl::OkStatus();
  };
  for (Layer& L : layers_) {
    for (Linear* t : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      RETURN_IF_ERROR(prepare(*t));
    }
  }
  RETURN_IF_ERROR(prepare(lm_head_));
  ASSIGN_OR_RETURN(embed_dev_, backend_->PrepareWeight(embed_, WeightUse::kEmbedding));
  inv_freq_ = RopeInvFreq(c);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(const HfDirectory& dir) {
  const std::string config_path = absl::StrCat(dir.dir(), "/", kHfConfigFile);
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(dir.config(), config_path));
  // Name the weights file in messages when there is one, else the folder.
  const std::vector<std::string> files = dir.WeightFiles();
  const std::string weights_where =
      files.size() == 1 ? files[0] : absl::StrCat(dir.dir(), "/", kHfIndexFile);
  Lookup lookup = [&](const std::string& name, const Shape& shape) -> absl::StatusOr<Tensor> {
    if (!dir.Has(name)) {
      return absl::NotFoundError(absl::StrCat(weights_where, ": missing tensor ", name, " (",
                                              config.architecture_name, " expects shape ",
                                              ShapeString(shape), ")"));
    }
    const std::string where = dir.FileOf(name);
    const SafetensorsEntry* e = dir.Find(name);
    if (e != nullptr) {
      // Check from the header before touching the bytes.
      RETURN_IF_ERROR(CheckShape(where, name, e->shape, shape));
    }
    ASSIGN_OR_RETURN(Tensor t, dir.GetWithShape(name, shape));
    RETURN_IF_ERROR(CheckWeightDType(where, name, t));
    return t;
  };
  std::unique_ptr<Transformer> model(new Transformer(config));
  // Quantized checkpoints (compressed-tensors, GPTQ, AWQ, DeepSeek FP8):
  // their linears stay quantized and run as stored.
  ASSIGN_OR_RETURN(QuantizationConfig qc, ParseQuantizationConfig(dir.config(), config_path));
  if (qc.kind != QuantizationConfig::Kind::kNone) {
    TensorLookup raw = [&](const std::string& name) -> std::optional<Tensor> {
      if (!dir.Has(name)) return std::nullopt;
      auto t = dir.Get(name);
      if (!t.ok()) return std::nullopt;
      return *t;
    };
    std::vector<std::string> modules;
    for (int64_t l = 0; l < config.num_layers; ++l) {
      for (LinearSlot slot : kLinearSlots) {
        modules.push_back(absl::StrCat("model.layers.", l, ".", LinearSlotName(slot)));
      }
    }
    if (!config.tie_word_embeddings) modules.push_back("lm_head");
    for (const std::string& module : modules) {
      auto q = ReadQuantizedLinear(qc, module, raw);
      if (!q.ok()) {
        return absl::Status(q.status().code(),
                            absl::StrCat(weights_where, ": ", q.status().message()));
      }
      if (q->has_value()) {
        model->quantized_[module + ".weight"] =
            std::make_shared<const QuantizedMatrix>(std::move(**q));
      }
    }
  }
  RETURN_IF_ERROR(model->Build(lookup));
  return model;
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(const std::string& dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<HfDirectory> hf, HfDirectory::Open(dir));
  return Load(*hf);  // tensors keep their mappings alive after hf is gone
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::FromNamedWeights(
    const ModelConfig& config, const std::vector<std::pair<std::string, Tensor>>& weights,
    const std::string& source) {
  RETURN_IF_ERROR(config.Validate(source));
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : weights) by_name[name] = &t;
  Lookup lookup = [&](const std::string& name, const Shape& shape) -> absl::StatusOr<Tensor> {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::NotFoundError(absl::StrCat(source, ": missing tensor ", name,
                                              " (expected shape ", ShapeString(shape), ")"));
    }
    RETURN_IF_ERROR(CheckShape(source, name, it->second->shape(), shape));
    RETURN_IF_ERROR(CheckWeightDType(source, name, *it->second));
    return *it->second;
  };
  std::unique_ptr<Transformer> model(new Transformer(config));
  RETURN_IF_ERROR(model->Build(lookup));
  return model;
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::RandomInit(const ModelConfig& config,
                                                                     uint64_t seed, DType dtype) {
  RETURN_IF_ERROR(config.Validate("RandomInit"));
  if (!DefaultBackend().SupportsWeightDType(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RandomInit: dtype ", std::string(DTypeName(dtype)), " is not one of F32, BF16, F16"));
  }
  ModelConfig c = config;
  c.torch_dtype = dtype;
  Lookup make = [&](const std::string& name, const Shape& shape) -> absl::StatusOr<Tensor> {
    auto ends_with = [&](const char* s) {
      const std::string suffix(s);
      return name.size() >= suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("norm.weight")) return Filled(shape, 1.f, dtype);
    if (ends_with(".bias")) return Filled(shape, 0.f, dtype);
    return RandomNormal(name, shape, c.initializer_range, seed, dtype);
  };
  std::unique_ptr<Transformer> model(new Transformer(c));
  RETURN_IF_ERROR(model->Build(make));
  return model;
}

size_t Transformer::WeightBytes() const {
  size_t total = 0;
  for (const auto& [name, t] : named_) total += t.nbytes();
  return total;
}

// ---- forward ----------------------------------------------------------------

absl::Status Transformer::Forward(const int32_t* tokens, int64_t n, KvCache& cache, float* logits,
                                  LogitsMode mode) const {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("Forward: negative token count ", n));
  if (n == 0) return absl::OkStatus();
  if (mode != LogitsMode::kNone && logits == nullptr) {
    return absl::InvalidArgumentError("Forward: logits buffer is null");
  }
  if (cache.num_layers_ != config_.num_layers || cache.num_kv_heads_ != config_.num_kv_heads ||
      cache.head_dim_ != config_.head_dim) {
    return absl::InvalidArgumentError("Forward: the KV cache was made for a different model shape");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                " is outside the vocabulary [0, ",
                                                config_.vocab_size, ")"));
    }
  }
  RETURN_IF_ERROR(cache.Reserve(cache.position() + n));
  for (int64_t begin = 0; begin < n; begin += kPrefillChunk) {
    const int64_t count = std::min(kPrefillChunk, n - begin);
    const bool last_chunk = begin + count == n;
    LogitsMode chunk_mode = mode;
    float* chunk_logits = logits;
    if (mode == LogitsMode::kAll) {
      chunk_logits = logits + begin * config_.vocab_size;
    } else if (mode == LogitsMode::kLast && !last_chunk) {
      chunk_mode = LogitsMode::kNone;
    }
    RETURN_IF_ERROR(ForwardChunk(tokens + begin, count, cache, chunk_logits, chunk_mode));
  }
  return absl::OkStatus();
}

// A chunk of one sequence is a batch of one piece.
absl::Status Transformer::ForwardChunk(const int32_t* tokens, int64_t n, KvCache& cache,
                                       float* logits, LogitsMode mode) const {
  return ForwardPieces({BatchPiece{&cache, tokens, n, mode == LogitsMode::kNone ? nullptr : logits,
                                   mode == LogitsMode::kAll}});
}

absl::Status Transformer::ForwardBatch(const std::vector<BatchSlot>& slots, float* logits) const {
  // Check everything before touching any cache, so an error leaves all as they were.
  const int64_t vocab = config_.vocab_size;
  for (size_t s = 0; s < slots.size(); ++s) {
    const BatchSlot& slot = slots[s];
    if (slot.cache == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: slot ", s, " has no KV cache"));
    }
    for (size_t o = 0; o < s; ++o) {
      if (slots[o].cache == slot.cache) {
        return absl::InvalidArgumentError(
            absl::StrCat("ForwardBatch: slots ", o, " and ", s, " share one KV cache"));
      }
    }
    const KvCache& cache = *slot.cache;
    if (cache.num_layers_ != config_.num_layers || cache.num_kv_heads_ != config_.num_kv_heads ||
        cache.head_dim_ != config_.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: the KV cache of slot ", s,
                                                     " was made for a different model shape"));
    }
    if (slot.n < 1 || slot.tokens == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("ForwardBatch: slot ", s, " has ", slot.n, " new tokens, expected >= 1"));
    }
    if (slot.want_logits && logits == nullptr) {
      return absl::InvalidArgumentError("ForwardBatch: logits buffer is null");
    }
    for (int64_t i = 0; i < slot.n; ++i) {
      if (slot.tokens[i] < 0 || slot.tokens[i] >= vocab) {
        return absl::OutOfRangeError(absl::StrCat("ForwardBatch: slot ", s, ": token id ",
                                                  slot.tokens[i], " at position ", i,
                                                  " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
    if (cache.position() + slot.n > cache.max_tokens()) {
      return absl::OutOfRangeError(absl::StrCat(
          "ForwardBatch: slot ", s, ": ", slot.n, " new tokens after ", cache.position(),
          " overflow its KV cache of ", cache.max_tokens(), " positions"));
    }
  }
  for (const BatchSlot& slot : slots) {
    RETURN_IF_ERROR(slot.cache->Reserve(slot.cache->position() + slot.n));
  }

  // Passes of at most kPrefillChunk rows, slots taken in order; a slot's
  // tokens may span passes (its logits come with its last piece).
  std::vector<int64_t> done(slots.size(), 0);
  size_t first = 0;  // slots before this one are finished
  while (first < slots.size()) {
    std::vector<BatchPiece> pieces;
    int64_t budget = kPrefillChunk;
    for (size_t s = first; s < slots.size() && budget > 0; ++s) {
      const BatchSlot& slot = slots[s];
      const int64_t take = std::min(budget, slot.n - done[s]);
      const bool last = done[s] + take == slot.n;
      float* out = last && slot.want_logits ? logits + static_cast<int64_t>(s) * vocab : nullptr;
      pieces.push_back({slot.cache, slot.tokens + done[s], take, out});
      done[s] += take;
      budget -= take;
    }
    RETURN_IF_ERROR(ForwardPieces(pieces));
    while (first < slots.size() && done[first] == slots[first].n) ++first;
  }
  return absl::OkStatus();
}

// Grows a forward workspace to n stacked rows of this model's shapes, on
// `be` (a workspace last used with another backend is reallocated).
absl::Status Transformer::FitWorkspace(const ModelConfig& c, int64_t n, Backend& be,
                                       KvCache::Workspace& ws) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qdim = c.num_heads * hd, kvdim = c.num_kv_heads * hd;
  auto fit = [&](Buffer& b, int64_t count, size_t elem) -> absl::Status {
    const size_t bytes = static_cast<size_t>(count) * elem;
    if (b.backend() == &be && b.size() >= bytes) return absl::OkStatus();
    ASSIGN_OR_RETURN(b, be.Allocate(bytes));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(fit(ws.x, n * H, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.h, n * H, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.q, n * qdim, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.k, n * kvdim, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.v, n * kvdim, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.attn, n * qdim, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.gate, n * I, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.up, n * I, sizeof(float)));
  RETURN_IF_ERROR(fit(ws.cos, n * (hd / 2), sizeof(float)));
  RETURN_IF_ERROR(fit(ws.sin, n * (hd / 2), sizeof(float)));
  RETURN_IF_ERROR(fit(ws.positions, n, sizeof(int64_t)));
  RETURN_IF_ERROR(fit(ws.tokens, n, sizeof(int32_t)));
  ws.host_positions.resize(n);
  ws.host_tokens.resize(n);
  return absl::OkStatus();
}

absl::Status Transformer::ForwardPieces(const std::vector<BatchPiece>& pieces) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, half = c.head_dim / 2;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Row offsets of the pieces in the stacked activations.
  std::vector<int64_t> row0(pieces.size() + 1, 0);
  for (size_t p = 0; p < pieces.size(); ++p) row0[p + 1] = row0[p] + pieces[p].n;
  const int64_t n = row0.back();
  if (n == 0) return absl::OkStatus();

  // Scratch for the stacked rows: one per thread (like the kernels' own), so
  // a const Transformer needs no mutable state.
  thread_local KvCache::Workspace ws;
  Backend& be = *backend_;
  RETURN_IF_ERROR(FitWorkspace(c, n, be, ws));
  float* x = ws.x.as<float>();
  float* h = ws.h.as<float>();
  float* cos = ws.cos.as<float>();
  float* sin = ws.sin.as<float>();
  for (size_t p = 0; p < pieces.size(); ++p) {
    const int64_t pos0 = pieces[p].cache->position_;
    for (int64_t i = 0; i < pieces[p].n; ++i) {
      ws.host_positions[row0[p] + i] = pos0 + i;
      ws.host_tokens[row0[p] + i] = pieces[p].tokens[i];
    }
  }
  RETURN_IF_ERROR(be.CopyToDevice(ws.host_positions.data(), ws.positions.data(),
                                  static_cast<size_t>(n) * sizeof(int64_t)));
  RETURN_IF_ERROR(be.CopyToDevice(ws.host_tokens.data(), ws.tokens.data(),
                                  static_cast<size_t>(n) * sizeof(int32_t)));
  RETURN_IF_ERROR(be.RopeCosSin(inv_freq_.data(), half, ws.positions.as<int64_t>(), n, cos, sin));

  RETURN_IF_ERROR(be.Embedding(*embed_dev_, ws.tokens.as<int32_t>(), n, x));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    RETURN_IF_ERROR(LayerStep(l, pieces, row0, n, ws, cos, sin, nullptr));
  }
  for (const BatchPiece& piece : pieces) piece.cache->position_ += piece.n;

  // Logits go straight into the caller's (host) array when the backend's
  // memory is the host's; otherwise through ws.logits and a copy back.
  auto logits_out = [&](int64_t rows, float* host) -> absl::StatusOr<float*> {
    if (be.memory_is_host()) return host;
    const size_t bytes = static_cast<size_t>(rows * c.vocab_size) * sizeof(float);
    if (ws.logits.backend() != &be || ws.logits.size() < bytes) {
      ASSIGN_OR_RETURN(ws.logits, be.Allocate(bytes));
    }
    return ws.logits.as<float>();
  };
  auto copy_back = [&](int64_t rows, const float* dev, float* host) -> absl::Status {
    if (dev == host) return absl::OkStatus();
    return be.CopyToHost(dev, host, static_cast<size_t>(rows * c.vocab_size) * sizeof(float));
  };
  // Every row of an all_logits piece (a single sequence, LogitsMode::kAll).
  for (size_t p = 0; p < pieces.size(); ++p) {
    if (pieces[p].logits == nullptr || !pieces[p].all_logits) continue;
    const int64_t r0 = row0[p], count = pieces[p].n;
    RETURN_IF_ERROR(be.RmsNorm(x + r0 * H, count, H, final_norm_.data(), eps, h + r0 * H));
    ASSIGN_OR_RETURN(float* out, logits_out(count, pieces[p].logits));
    RETURN_IF_ERROR(be.MatMul(h + r0 * H, count, *lm_head_.dev, nullptr, out));
    RETURN_IF_ERROR(copy_back(count, out, pieces[p].logits));
  }
  // lm_head over the last rows of the pieces that want logits, in one MatMul.
  std::vector<const BatchPiece*> wanted;
  for (size_t p = 0; p < pieces.size(); ++p) {
    if (pieces[p].logits == nullptr || pieces[p].all_logits) continue;
    RETURN_IF_ERROR(be.RmsNorm(x + (row0[p + 1] - 1) * H, 1, H, final_norm_.data(), eps,
                               h + static_cast<int64_t>(wanted.size()) * H));
    wanted.push_back(&pieces[p]);
  }
  if (wanted.empty()) return absl::OkStatus();
  const int64_t vocab = c.vocab_size, rows = static_cast<int64_t>(wanted.size());
  if (rows == 1) {
    ASSIGN_OR_RETURN(float* out, logits_out(1, wanted[0]->logits));
    RETURN_IF_ERROR(be.MatMul(h, 1, *lm_head_.dev, nullptr, out));
    return copy_back(1, out, wanted[0]->logits);
  }
  thread_local std::vector<float> host_out;
  if (static_cast<int64_t>(host_out.size()) < rows * vocab) host_out.resize(rows * vocab);
  ASSIGN_OR_RETURN(float* y, logits_out(rows, host_out.data()));
  RETURN_IF_ERROR(be.MatMul(h, rows, *lm_head_.dev, nullptr, y));
  RETURN_IF_ERROR(copy_back(rows, y, host_out.data()));
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(host_out.data() + r * vocab, vocab, wanted[r]->logits);
  return absl::OkStatus();
}

absl::Status Transformer::LayerStep(int64_t l, const std::vector<BatchPiece>& pieces,
                                    const std::vector<int64_t>& row0, int64_t n,
                                    KvCache::Workspace& ws, const float* cos, const float* sin,
                                    const LinearInputObserver* observe) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  float* x = ws.x.as<float>();
  float* h = ws.h.as<float>();
  float* q = ws.q.as<float>();
  float* k = ws.k.as<float>();
  float* v = ws.v.as<float>();
  float* attn = ws.attn.as<float>();
  float* gate = ws.gate.as<float>();
  float* up = ws.up.as<float>();
  const AttentionShape shape{nh, nkv, hd};
  const Layer& L = layers_[l];
  Backend& be = *backend_;
  // Attention block: projections over all rows, attention per sequence.
  RETURN_IF_ERROR(be.RmsNorm(x, n, H, L.input_norm.data(), eps, h));
  if (observe) (*observe)(LinearSlot::kQ, h, n, H);
  RETURN_IF_ERROR(be.MatMulGroup(
      h, n, H, {Output(L.q, L.q_bias, q), Output(L.k, L.k_bias, k), Output(L.v, L.v_bias, v)}));
  if (c.qk_norm) {
    RETURN_IF_ERROR(be.RmsNorm(q, n * nh, hd, L.q_norm.data(), eps, q));
    RETURN_IF_ERROR(be.RmsNorm(k, n * nkv, hd, L.k_norm.data(), eps, k));
  }
  RETURN_IF_ERROR(be.ApplyRope(q, n, nh, hd, qdim, cos, sin));
  RETURN_IF_ERROR(be.ApplyRope(k, n, nkv, hd, kvdim, cos, sin));
  for (size_t p = 0; p < pieces.size(); ++p) {
    KvCache& cache = *pieces[p].cache;
    const int64_t pos0 = cache.position_, r0 = row0[p], count = pieces[p].n;
    const KvView kv{cache.keys(l), cache.values(l), cache.head_stride()};
    RETURN_IF_ERROR(be.AppendKv(k + r0 * kvdim, v + r0 * kvdim, count, nkv, hd, pos0, kv));
    RETURN_IF_ERROR(be.Attention(q + r0 * qdim, count, pos0, kv, shape, scale, c.WindowOf(l),
                                 attn + r0 * qdim));
  }
  if (observe) (*observe)(LinearSlot::kO, attn, n, qdim);
  RETURN_IF_ERROR(be.MatMul(attn, n, *L.o.dev, OrNull(L.o_bias), h));
  RETURN_IF_ERROR(be.Add(x, h, n * H, x));
  // MLP block (SwiGLU).
  RETURN_IF_ERROR(be.RmsNorm(x, n, H, L.post_norm.data(), eps, h));
  if (observe) (*observe)(LinearSlot::kGate, h, n, H);
  RETURN_IF_ERROR(
      be.MatMulGroup(h, n, H, {Output(L.gate, L.gate_bias, gate), Output(L.up, L.up_bias, up)}));
  RETURN_IF_ERROR(be.SiluMul(gate, up, n * I, gate));
  if (observe) (*observe)(LinearSlot::kDown, gate, n, I);
  RETURN_IF_ERROR(be.MatMul(gate, n, *L.down.dev, OrNull(L.down_bias), h));
  RETURN_IF_ERROR(be.Add(x, h, n * H, x));
  return absl::OkStatus();
}

// ---- layer-wise passes ------------------------------------------------------

absl::Status Transformer::Embed(const int32_t* tokens, int64_t n, float* x) const {
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                " is outside the vocabulary [0, ",
                                                config_.vocab_size, ")"));
    }
  }
  return backend_->Embedding(*embed_dev_, tokens, n, x);
}

absl::Status Transformer::ForwardLayer(int64_t layer, float* x, int64_t n, KvCache& scratch,
                                       const LinearInputObserver* observe) const {
  if (layer < 0 || layer >= config_.num_layers) {
    return absl::OutOfRangeError(
        absl::StrCat("ForwardLayer: layer ", layer, " of a ", config_.num_layers, "-layer model"));
  }
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("ForwardLayer: ", n, " rows"));
  if (scratch.num_layers_ != config_.num_layers || scratch.num_kv_heads_ != config_.num_kv_heads ||
      scratch.head_dim_ != config_.head_dim) {
    return absl::InvalidArgumentError("ForwardLayer: the KV cache was made for a different model");
  }
  scratch.Clear();
  RETURN_IF_ERROR(scratch.Reserve(n));
  thread_local KvCache::Workspace ws;
  Backend& be = *backend_;
  RETURN_IF_ERROR(FitWorkspace(config_, n, be, ws));
  for (int64_t i = 0; i < n; ++i) ws.host_positions[i] = i;
  RETURN_IF_ERROR(be.CopyToDevice(ws.host_positions.data(), ws.positions.data(),
                                  static_cast<size_t>(n) * sizeof(int64_t)));
  RETURN_IF_ERROR(be.RopeCosSin(inv_freq_.data(), config_.head_dim / 2, ws.positions.as<int64_t>(),
                                n, ws.cos.as<float>(), ws.sin.as<float>()));
  const size_t bytes = static_cast<size_t>(n * config_.hidden_size) * sizeof(float);
  RETURN_IF_ERROR(be.CopyToDevice(x, ws.x.data(), bytes));
  const std::vector<BatchPiece> pieces = {BatchPiece{&scratch, nullptr, n, nullptr}};
  RETURN_IF_ERROR(
      LayerStep(layer, pieces, {0, n}, n, ws, ws.cos.as<float>(), ws.sin.as<float>(), observe));
  return be.CopyToHost(ws.x.data(), x, bytes);
}

const Tensor* Transformer::FindWeight(const std::string& name) const {
  for (const auto& [n, t] : named_) {
    if (n == name) return &t;
  }
  return nullptr;
}

absl::Status Transformer::Rebuild() {
  std::map<std::string, Tensor> by_name(named_.begin(), named_.end());
  Lookup lookup = [&](const std::string& name, const Shape& shape) -> absl::StatusOr<Tensor> {
    auto it = by_name.find(name);
    if (it == by_name.end()) return absl::NotFoundError(absl::StrCat("missing tensor ", name));
    RETURN_IF_ERROR(CheckShape("model", name, it->second.shape(), shape));
    return it->second;
  };
  return Build(lookup);
}

absl::Status Transformer::ReplaceWeight(const std::string& name, const Tensor& t) {
  RETURN_IF_ERROR(CheckWeightDType("ReplaceWeight", name, t));
  auto q = quantized_.find(name);
  if (q != quantized_.end()) {
    if (t.shape() != Shape{q->second->rows, q->second->cols}) {
      return absl::InvalidArgumentError(absl::StrCat("ReplaceWeight: ", name, " is [",
                                                     q->second->rows, ", ", q->second->cols,
                                                     "], got ", ShapeString(t.shape())));
    }
    quantized_.erase(q);
    named_.emplace_back(name, t);
    return Rebuild();
  }
  for (auto& [n, old] : named_) {
    if (n != name) continue;
    RETURN_IF_ERROR(CheckShape("ReplaceWeight", name, t.shape(), old.shape()));
    old = t;
    return Rebuild();
  }
  return absl::NotFoundError(absl::StrCat("ReplaceWeight: the model has no weight ", name));
}

absl::Status Transformer::SetQuantizedWeight(const std::string& name,
                                             std::shared_ptr<const QuantizedMatrix> q) {
  if (q == nullptr) return absl::InvalidArgumentError("SetQuantizedWeight: null matrix");
  const bool is_linear =
      (absl::StartsWith(name, "model.layers.") && absl::EndsWith(name, "_proj.weight")) ||
      (name == "lm_head.weight" && !config_.tie_word_embeddings);
  if (!is_linear) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetQuantizedWeight: ", name, " is not a linear layer's weight"));
  }
  RETURN_IF_ERROR(ValidateQuantizedMatrix(*q, name));
  Shape expected;
  if (auto it = quantized_.find(name); it != quantized_.end()) {
    expected = {it->second->rows, it->second->cols};
  } else if (const Tensor* t = FindWeight(name)) {
    expected = t->shape();
  } else {
    return absl::NotFoundError(absl::StrCat("SetQuantizedWeight: the model has no weight ", name));
  }
  if (expected != Shape{q->rows, q->cols}) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetQuantizedWeight: ", name, " is ", ShapeString(expected),
                     ", the quantized matrix [", q->rows, ", ", q->cols, "]"));
  }
  std::erase_if(named_, [&](const auto& e) { return e.first == name; });
  quantized_[name] = std::move(q);
  return Rebuild();
}

absl::StatusOr<std::vector<float>> Transformer::Logits(const std::vector<int32_t>& tokens) const {
  KvCache cache = NewCache(std::max<int64_t>(static_cast<int64_t>(tokens.size()), 1));
  std::vector<float> logits(tokens.size() * config_.vocab_size);
  RETURN_IF_ERROR(Forward(tokens.data(), static_cast<int64_t>(tokens.size()), cache, logits.data(),
                          LogitsMode::kAll));
  return logits;
}

}  // namespace retort
