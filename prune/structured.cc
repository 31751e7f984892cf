#include "prune/structured.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace retort::prune {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// Indices of the k largest scores (ties to the lower index), ascending.
std::vector<int64_t> TopK(const std::vector<double>& scores, int64_t k) {
  std::vector<int64_t> idx = Iota(static_cast<int64_t>(scores.size()));
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

absl::Status CheckScores(const std::vector<double>& v, int64_t expected, const std::string& what) {
  if (static_cast<int64_t>(v.size()) != expected) {
    return Invalid(absl::StrCat("structured pruning: ", what, " has ", v.size(),
                                " entries, expected ", expected,
                                v.empty() ? " (importance not collected)" : ""));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return Invalid(absl::StrCat("structured pruning: ", what, "[", i, "] is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckIndices(const std::vector<int64_t>& v, int64_t bound, const std::string& what) {
  if (v.empty()) return Invalid(absl::StrCat("structured plan: ", what, " keeps nothing"));
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0 || v[i] >= bound) {
      return Invalid(
          absl::StrCat("structured plan: ", what, " index ", v[i], " outside [0, ", bound, ")"));
    }
    if (i > 0 && v[i] <= v[i - 1]) {
      return Invalid(absl::StrCat("structured plan: ", what,
                                  " indices must be strictly ascending (", v[i - 1], " then ", v[i],
                                  ")"));
    }
  }
  return absl::OkStatus();
}

// Sizes are rounded down to this multiple: 64 for large dimensions, 8 for
// small ones (the GGUF/GEMM-friendly widths), 1 if the original is odd; and
// to a multiple of `step` as well (see HiddenStep), still at most a quarter of
// the original where one exists.
int64_t Alignment(int64_t original, int64_t step = 1) {
  for (int64_t a : {int64_t{64}, int64_t{8}, int64_t{1}}) {
    const int64_t m = std::lcm(a, step);
    if (original % m == 0 && m <= original / 4) return m;
  }
  return original % step == 0 ? step : 1;
}

int64_t ScaledWidth(int64_t original, double r, int64_t step = 1) {
  const int64_t a = Alignment(original, step);
  const int64_t v = static_cast<int64_t>(std::floor(static_cast<double>(original) * r / a)) * a;
  return std::clamp<int64_t>(v, a, original);
}

// transformers' LlamaConfig (5.x) refuses a hidden_size that is not a
// multiple of num_attention_heads, even with an explicit head_dim; Qwen2,
// Qwen3 and Mistral configs accept any. The hidden width of a pruned model
// keeps to this step so that transformers loads what we write.
int64_t HiddenStep(const ModelConfig& config, int64_t heads) {
  return config.arch == Arch::kLlama ? heads : 1;
}

}  // namespace

// ---------------------------------------------------------------------------
// Importance.

void AccumulateChannelImportance(const float* x, int64_t n, int64_t width, double* sum_sq) {
  if (n <= 0) return;
  std::vector<double> mean(width, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < width; ++c) mean[c] += std::fabs(static_cast<double>(x[t * width + c]));
  }
  for (int64_t c = 0; c < width; ++c) {
    const double m = mean[c] / static_cast<double>(n);
    sum_sq[c] += m * m;
  }
}

void AccumulateHeadImportance(const float* x, int64_t n, int64_t num_heads, int64_t head_dim,
                              double* sum_sq) {
  if (n <= 0) return;
  std::vector<double> mean(num_heads, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      const float* p = x + t * num_heads * head_dim + h * head_dim;
      double s = 0;
      for (int64_t d = 0; d < head_dim; ++d) s += static_cast<double>(p[d]) * p[d];
      mean[h] += std::sqrt(s);
    }
  }
  for (int64_t h = 0; h < num_heads; ++h) {
    const double m = mean[h] / static_cast<double>(n);
    sum_sq[h] += m * m;
  }
}

double SumCosine(const float* input, const float* output, int64_t n, int64_t width) {
  double total = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = input + t * width;
    const float* b = output + t * width;
    double ab = 0, aa = 0, bb = 0;
    for (int64_t c = 0; c < width; ++c) {
      ab += static_cast<double>(a[c]) * b[c];
      aa += static_cast<double>(a[c]) * a[c];
      bb += static_cast<double>(b[c]) * b[c];
    }
    total += (aa == 0 || bb == 0) ? 1.0 : ab / std::sqrt(aa * bb);
  }
  return total;
}

ImportanceCollector::ImportanceCollector(const ModelConfig& config)
    : config_(config),
      head_sq_(config.num_layers),
      mlp_sq_(config.num_layers),
      cos_sum_(config.num_layers, 0.0),
      cos_tokens_(config.num_layers, 0) {}

absl::Status ImportanceCollector::CheckLayer(int64_t layer, const char* what, const float* x,
                                             int64_t n) const {
  if (layer < 0 || layer >= config_.num_layers) {
    return Invalid(absl::StrCat("importance: ", what, " for layer ", layer, " outside [0, ",
                                config_.num_layers, ")"));
  }
  if (n < 0 || (n > 0 && x == nullptr)) {
    return Invalid(
        absl::StrCat("importance: ", what, " of layer ", layer, ": bad activations (n = ", n, ")"));
  }
  return absl::OkStatus();
}

absl::Status ImportanceCollector::AddAttentionOutput(int64_t layer, const float* x, int64_t n) {
  RETURN_IF_ERROR(CheckLayer(layer, "attention output", x, n));
  auto& s = head_sq_[layer];
  if (s.empty()) s.assign(config_.num_heads, 0.0);
  AccumulateHeadImportance(x, n, config_.num_heads, config_.head_dim, s.data());
  return absl::OkStatus();
}

absl::Status ImportanceCollector::AddMlpActivation(int64_t layer, const float* x, int64_t n) {
  RETURN_IF_ERROR(CheckLayer(layer, "MLP activation", x, n));
  auto& s = mlp_sq_[layer];
  if (s.empty()) s.assign(config_.intermediate_size, 0.0);
  AccumulateChannelImportance(x, n, config_.intermediate_size, s.data());
  return absl::OkStatus();
}

absl::Status ImportanceCollector::AddNormedHidden(const float* x, int64_t n) {
  if (n < 0 || (n > 0 && x == nullptr)) {
    return Invalid(absl::StrCat("importance: normed hidden state: bad activations (n = ", n, ")"));
  }
  if (hidden_sq_.empty()) hidden_sq_.assign(config_.hidden_size, 0.0);
  AccumulateChannelImportance(x, n, config_.hidden_size, hidden_sq_.data());
  return absl::OkStatus();
}

absl::Status ImportanceCollector::AddBlock(int64_t layer, const float* input, const float* output,
                                           int64_t n) {
  RETURN_IF_ERROR(CheckLayer(layer, "block input", input, n));
  RETURN_IF_ERROR(CheckLayer(layer, "block output", output, n));
  cos_sum_[layer] += SumCosine(input, output, n, config_.hidden_size);
  cos_tokens_[layer] += n;
  return absl::OkStatus();
}

ModelImportance ImportanceCollector::Importance() const {
  auto root = [](const std::vector<double>& sq) {
    std::vector<double> v(sq.size());
    for (size_t i = 0; i < sq.size(); ++i) v[i] = std::sqrt(sq[i]);
    return v;
  };
  ModelImportance m;
  m.layers.resize(config_.num_layers);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    m.layers[l].head = root(head_sq_[l]);
    m.layers[l].mlp = root(mlp_sq_[l]);
    m.layers[l].block_influence =
        cos_tokens_[l] > 0 ? 1.0 - cos_sum_[l] / static_cast<double>(cos_tokens_[l]) : 0.0;
  }
  m.hidden = root(hidden_sq_);
  return m;
}

// ---------------------------------------------------------------------------
// Plans.

StructuredPlan StructuredPlan::KeepAll(const ModelConfig& config) {
  StructuredPlan p;
  p.layers = Iota(config.num_layers);
  p.heads.assign(config.num_layers, Iota(config.num_heads));
  p.kv_heads.assign(config.num_layers, Iota(config.num_kv_heads));
  p.mlp.assign(config.num_layers, Iota(config.intermediate_size));
  p.hidden = Iota(config.hidden_size);
  return p;
}

absl::Status StructuredPlan::Validate(const ModelConfig& config) const {
  RETURN_IF_ERROR(CheckIndices(layers, config.num_layers, "layers"));
  RETURN_IF_ERROR(CheckIndices(hidden, config.hidden_size, "hidden"));
  const size_t n = layers.size();
  if (heads.size() != n || kv_heads.size() != n || mlp.size() != n) {
    return Invalid(
        absl::StrCat("structured plan: heads/kv_heads/mlp need one entry per kept layer (", n,
                     "), got ", heads.size(), "/", kv_heads.size(), "/", mlp.size()));
  }
  const int64_t group = config.num_heads / config.num_kv_heads;
  for (size_t i = 0; i < n; ++i) {
    const std::string at = absl::StrCat(" of layer ", layers[i]);
    RETURN_IF_ERROR(CheckIndices(heads[i], config.num_heads, "heads" + at));
    RETURN_IF_ERROR(CheckIndices(kv_heads[i], config.num_kv_heads, "kv_heads" + at));
    RETURN_IF_ERROR(CheckIndices(mlp[i], config.intermediate_size, "mlp" + at));
    if (heads[i].size() != heads[0].size() || kv_heads[i].size() != kv_heads[0].size() ||
        mlp[i].size() != mlp[0].size()) {
      return Invalid(absl::StrCat("structured plan: layer ", layers[i], " keeps ", heads[i].size(),
                                  " heads, ", kv_heads[i].size(), " kv heads, ", mlp[i].size(),
                                  " MLP channels; layer ", layers[0], " keeps ", heads[0].size(),
                                  ", ", kv_heads[0].size(), ", ", mlp[0].size(),
                                  " (every layer must keep the same counts)"));
    }
    if (heads[i].size() % kv_heads[i].size() != 0) {
      return Invalid(absl::StrCat("structured plan: ", heads[i].size(), " query heads", at,
                                  " are not a multiple of its ", kv_heads[i].size(),
                                  " kv heads (GQA groups must stay equal)"));
    }
    const size_t per_group = heads[i].size() / kv_heads[i].size();
    for (size_t g = 0; g < kv_heads[i].size(); ++g) {
      const int64_t kv = kv_heads[i][g];
      for (size_t j = 0; j < per_group; ++j) {
        const int64_t h = heads[i][g * per_group + j];
        if (h / group != kv) {
          return Invalid(absl::StrCat("structured plan: query head ", h, at,
                                      " is not in the group of kv head ", kv,
                                      " (each kept kv head needs ", per_group,
                                      " kept query heads of its own group of ", group, ")"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> StructuredPlan::PrunedConfig(const ModelConfig& config) const {
  RETURN_IF_ERROR(Validate(config));
  ModelConfig c = config;
  c.num_layers = static_cast<int64_t>(layers.size());
  c.num_heads = static_cast<int64_t>(heads[0].size());
  c.num_kv_heads = static_cast<int64_t>(kv_heads[0].size());
  c.intermediate_size = static_cast<int64_t>(mlp[0].size());
  c.hidden_size = static_cast<int64_t>(hidden.size());
  c.head_dim = config.head_dim;
  if (!config.sliding_layers.empty()) {
    c.sliding_layers.clear();
    for (int64_t l : layers) c.sliding_layers.push_back(config.sliding_layers[l]);
  }
  RETURN_IF_ERROR(c.Validate("pruned config"));
  return c;
}

absl::StatusOr<StructuredPlan> PlanStructuredPruning(const ModelConfig& config,
                                                     const ModelImportance& importance,
                                                     const StructuredTarget& target) {
  RETURN_IF_ERROR(config.Validate("structured pruning: model config"));
  struct Field {
    const char* name;
    int64_t value, original;
  };
  for (const Field& f :
       {Field{"num_layers", target.num_layers, config.num_layers},
        Field{"num_heads", target.num_heads, config.num_heads},
        Field{"num_kv_heads", target.num_kv_heads, config.num_kv_heads},
        Field{"intermediate_size", target.intermediate_size, config.intermediate_size},
        Field{"hidden_size", target.hidden_size, config.hidden_size}}) {
    if (f.value < 0 || f.value > f.original) {
      return Invalid(absl::StrCat("structured pruning target: ", f.name, " = ", f.value,
                                  " must be in [1, ", f.original, "] (0 keeps it)"));
    }
  }
  if (target.target_params < 0) {
    return Invalid(absl::StrCat("structured pruning target: target_params = ", target.target_params,
                                " is negative"));
  }

  // Heads (GQA-aware, see the header).
  const int64_t group = config.num_heads / config.num_kv_heads;
  const int64_t kv_t = target.num_kv_heads > 0 ? target.num_kv_heads : config.num_kv_heads;
  const int64_t heads_t = target.num_heads > 0      ? target.num_heads
                          : target.num_kv_heads > 0 ? kv_t * group
                                                    : config.num_heads;
  if (heads_t % kv_t != 0) {
    return Invalid(absl::StrCat(
        "structured pruning target: num_heads (", heads_t, ") is not a multiple of num_kv_heads (",
        kv_t, "): GQA needs the same number of query heads per kv head",
        target.num_kv_heads == 0 ? " (num_kv_heads 0 keeps the model's)" : ""));
  }
  if (heads_t / kv_t > group) {
    return Invalid(absl::StrCat("structured pruning target: ", heads_t, " heads over ", kv_t,
                                " kv heads is ", heads_t / kv_t,
                                " query heads per kv group, but the model's groups have ", group));
  }

  // Width and depth.
  int64_t layers_t = target.num_layers > 0 ? target.num_layers : config.num_layers;
  int64_t inter_t =
      target.intermediate_size > 0 ? target.intermediate_size : config.intermediate_size;
  int64_t hidden_t = target.hidden_size > 0 ? target.hidden_size : config.hidden_size;
  const int64_t hidden_step = HiddenStep(config, heads_t);
  if (target.target_params > 0) {
    const bool free_inter = target.intermediate_size == 0, free_hidden = target.hidden_size == 0;
    const bool free_layers = target.num_layers == 0;
    auto params = [&](int64_t layers, double r) {
      ModelConfig c = config;
      c.num_layers = layers;
      c.num_heads = heads_t;
      c.num_kv_heads = kv_t;
      c.intermediate_size = free_inter ? ScaledWidth(config.intermediate_size, r) : inter_t;
      c.hidden_size = free_hidden ? ScaledWidth(config.hidden_size, r, hidden_step) : hidden_t;
      return c.ParameterCount();
    };
    // Largest r in [0.5, 1] that fits (params grows with r); -1 if none.
    auto best_r = [&](int64_t layers) {
      if (params(layers, 0.5) > target.target_params) return -1.0;
      double lo = 0.5, hi = 1.0;
      if (params(layers, hi) <= target.target_params) return hi;
      for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (params(layers, mid) <= target.target_params ? lo : hi) = mid;
      }
      return lo;
    };
    double r = best_r(layers_t);
    if (r < 0 && free_layers) {
      int64_t fit = 0;
      for (int64_t l = layers_t; l >= 1; --l) {
        if (params(l, 0.5) <= target.target_params) {
          fit = l;
          break;
        }
      }
      if (fit > 0) {
        layers_t = fit;
        r = best_r(layers_t);
      }
    }
    if (r < 0) {
      return Invalid(
          absl::StrCat("structured pruning target: target_params ", target.target_params,
                       " cannot be met: the smallest model the rule allows has ",
                       params(free_layers ? 1 : layers_t, 0.5),
                       " parameters (free widths shrink to at most 50%; set num_layers/num_heads/"
                       "intermediate_size/hidden_size explicitly for more)"));
    }
    if (free_inter) inter_t = ScaledWidth(config.intermediate_size, r);
    if (free_hidden) hidden_t = ScaledWidth(config.hidden_size, r, hidden_step);
  }
  if (hidden_t % hidden_step != 0) {
    const int64_t below = hidden_t / hidden_step * hidden_step;
    return Invalid(absl::StrCat(
        "structured pruning target: hidden_size ", hidden_t, " is not a multiple of num_heads (",
        heads_t, "), which transformers' LlamaConfig requires; use ",
        below > 0 ? absl::StrCat(below, " or ") : "", below + hidden_step, " (or other heads)"));
  }

  StructuredPlan plan;
  if (layers_t < config.num_layers) {
    if (static_cast<int64_t>(importance.layers.size()) != config.num_layers) {
      return Invalid(absl::StrCat("structured pruning: block influence needed for ",
                                  config.num_layers, " layers, importance has ",
                                  importance.layers.size()));
    }
    std::vector<double> bi;
    for (const LayerImportance& l : importance.layers) bi.push_back(l.block_influence);
    RETURN_IF_ERROR(CheckScores(bi, config.num_layers, "block influence"));
    plan.layers = TopK(bi, layers_t);
  } else {
    plan.layers = Iota(config.num_layers);
  }
  const bool prune_heads = heads_t < config.num_heads || kv_t < config.num_kv_heads;
  const bool prune_mlp = inter_t < config.intermediate_size;
  if ((prune_heads || prune_mlp) &&
      static_cast<int64_t>(importance.layers.size()) != config.num_layers) {
    return Invalid(absl::StrCat("structured pruning: head/MLP importance needed for ",
                                config.num_layers, " layers, importance has ",
                                importance.layers.size()));
  }
  for (int64_t l : plan.layers) {
    const std::string at = absl::StrCat(" of layer ", l);
    if (prune_heads) {
      const std::vector<double>& hs = importance.layers[l].head;
      RETURN_IF_ERROR(CheckScores(hs, config.num_heads, "head importance" + at));
      std::vector<double> gs(config.num_kv_heads, 0.0);
      for (int64_t h = 0; h < config.num_heads; ++h) gs[h / group] += hs[h];
      std::vector<int64_t> kept_heads;
      const std::vector<int64_t> groups = TopK(gs, kv_t);
      for (int64_t g : groups) {
        std::vector<double> in_group(hs.begin() + g * group, hs.begin() + (g + 1) * group);
        for (int64_t j : TopK(in_group, heads_t / kv_t)) kept_heads.push_back(g * group + j);
      }
      plan.heads.push_back(kept_heads);
      plan.kv_heads.push_back(groups);
    } else {
      plan.heads.push_back(Iota(config.num_heads));
      plan.kv_heads.push_back(Iota(config.num_kv_heads));
    }
    if (prune_mlp) {
      const std::vector<double>& ms = importance.layers[l].mlp;
      RETURN_IF_ERROR(CheckScores(ms, config.intermediate_size, "MLP importance" + at));
      plan.mlp.push_back(TopK(ms, inter_t));
    } else {
      plan.mlp.push_back(Iota(config.intermediate_size));
    }
  }
  if (hidden_t < config.hidden_size) {
    RETURN_IF_ERROR(CheckScores(importance.hidden, config.hidden_size, "hidden importance"));
    plan.hidden = TopK(importance.hidden, hidden_t);
  } else {
    plan.hidden = Iota(config.hidden_size);
  }
  RETURN_IF_ERROR(plan.Validate(config));
  return plan;
}

// ---------------------------------------------------------------------------
// Applying a plan.

namespace {

// Rows `rows` (null: all) and columns `cols` (null: all) of a rank-1 or
// rank-2 tensor, as a new owned tensor of the same dtype.
Tensor Slice(const Tensor& t, const std::vector<int64_t>* rows, const std::vector<int64_t>* cols) {
  const size_t es = DTypeBytes(t.dtype(), 1);
  const char* src = static_cast<const char*>(t.raw());
  if (t.rank() == 1) {
    if (rows == nullptr) return t.Clone();
    Tensor out = Tensor::Zeros(t.dtype(), {static_cast<int64_t>(rows->size())});
    char* dst = static_cast<char*>(out.mutable_raw());
    for (size_t i = 0; i < rows->size(); ++i) std::memcpy(dst + i * es, src + (*rows)[i] * es, es);
    return out;
  }
  const int64_t in_cols = t.dim(1);
  const int64_t nr = rows ? static_cast<int64_t>(rows->size()) : t.dim(0);
  const int64_t nc = cols ? static_cast<int64_t>(cols->size()) : in_cols;
  Tensor out = Tensor::Zeros(t.dtype(), {nr, nc});
  char* dst = static_cast<char*>(out.mutable_raw());
  for (int64_t i = 0; i < nr; ++i) {
    const char* row = src + (rows ? (*rows)[i] : i) * in_cols * es;
    char* orow = dst + i * nc * es;
    if (cols == nullptr) {
      std::memcpy(orow, row, in_cols * es);
    } else {
      for (int64_t j = 0; j < nc; ++j) std::memcpy(orow + j * es, row + (*cols)[j] * es, es);
    }
  }
  return out;
}

std::vector<int64_t> HeadRows(const std::vector<int64_t>& heads, int64_t head_dim) {
  std::vector<int64_t> rows;
  rows.reserve(heads.size() * head_dim);
  for (int64_t h : heads) {
    for (int64_t d = 0; d < head_dim; ++d) rows.push_back(h * head_dim + d);
  }
  return rows;
}

// How a tensor of the original model is sliced.
struct Rule {
  Shape shape;                                 // expected original shape
  const std::vector<int64_t>* rows = nullptr;  // kept rows (dim 0), null: all
  const std::vector<int64_t>* cols = nullptr;  // kept columns (dim 1), null: all
  int64_t layer = -1;                          // >= 0: a layer tensor
  std::string suffix;                          // name after "model.layers.<i>."
  bool optional = false;                       // lm_head of a tied model (dropped)
  bool drop = false;
};

Rule MakeRule(Shape shape, const std::vector<int64_t>* rows = nullptr,
              const std::vector<int64_t>* cols = nullptr) {
  Rule r;
  r.shape = std::move(shape);
  r.rows = rows;
  r.cols = cols;
  return r;
}

}  // namespace

absl::StatusOr<std::pair<ModelConfig, std::vector<std::pair<std::string, Tensor>>>>
ApplyStructuredPlan(const ModelConfig& config,
                    const std::vector<std::pair<std::string, Tensor>>& weights,
                    const StructuredPlan& plan) {
  ASSIGN_OR_RETURN(ModelConfig out_config, plan.PrunedConfig(config));
  const int64_t H = config.hidden_size, V = config.vocab_size, I = config.intermediate_size;
  const int64_t hd = config.head_dim;
  const int64_t q_out = config.num_heads * hd, kv_out = config.num_kv_heads * hd;

  // Row index lists per original layer (kept layers only).
  std::vector<std::vector<int64_t>> q_rows(config.num_layers), kv_rows(config.num_layers),
      mlp_rows(config.num_layers);
  std::vector<int64_t> new_index(config.num_layers, -1);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const int64_t l = plan.layers[i];
    new_index[l] = static_cast<int64_t>(i);
    q_rows[l] = HeadRows(plan.heads[i], hd);
    kv_rows[l] = HeadRows(plan.kv_heads[i], hd);
    mlp_rows[l] = plan.mlp[i];
  }
  const std::vector<int64_t>* hid = &plan.hidden;

  std::map<std::string, Rule> rules;
  rules["model.embed_tokens.weight"] = MakeRule({V, H}, nullptr, hid);
  rules["model.norm.weight"] = MakeRule({H}, hid);
  {
    Rule lm = MakeRule({V, H}, nullptr, hid);
    lm.optional = lm.drop = config.tie_word_embeddings;
    rules["lm_head.weight"] = lm;
  }
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const bool keep = new_index[l] >= 0;
    const std::vector<int64_t>* q = &q_rows[l];
    const std::vector<int64_t>* kv = &kv_rows[l];
    const std::vector<int64_t>* mr = &mlp_rows[l];
    auto add = [&](const std::string& suffix, Rule r) {
      r.layer = l;
      r.suffix = suffix;
      r.drop = !keep;
      rules[absl::StrCat("model.layers.", l, ".", suffix)] = r;
    };
    // A linear [out, in] keeps rows `out_kept` and columns `in_kept`; its
    // bias [out], when the config has one, the same rows.
    auto add_linear = [&](const std::string& linear, int64_t out,
                          const std::vector<int64_t>* out_kept, int64_t in,
                          const std::vector<int64_t>* in_kept, bool bias) {
      add(linear + ".weight", MakeRule({out, in}, out_kept, in_kept));
      if (bias) add(linear + ".bias", MakeRule({out}, out_kept));
    };
    add("input_layernorm.weight", MakeRule({H}, hid));
    add("post_attention_layernorm.weight", MakeRule({H}, hid));
    add_linear("self_attn.q_proj", q_out, q, H, hid, config.attention_bias);
    add_linear("self_attn.k_proj", kv_out, kv, H, hid, config.attention_bias);
    add_linear("self_attn.v_proj", kv_out, kv, H, hid, config.attention_bias);
    add_linear("self_attn.o_proj", H, hid, q_out, q, config.attention_out_bias);
    if (config.qk_norm) {
      add("self_attn.q_norm.weight", MakeRule({hd}));
      add("self_attn.k_norm.weight", MakeRule({hd}));
    }
    add_linear("mlp.gate_proj", I, mr, H, hid, config.mlp_bias);
    add_linear("mlp.up_proj", I, mr, H, hid, config.mlp_bias);
    add_linear("mlp.down_proj", H, hid, I, mr, config.mlp_bias);
  }

  std::map<std::string, int> seen;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, tensor] : weights) {
    auto it = rules.find(name);
    if (it == rules.end()) {
      return Invalid(absl::StrCat("structured pruning: unexpected tensor \"", name, "\" for a ",
                                  ArchClassName(config.arch), " of ", config.num_layers,
                                  " layers with this config"));
    }
    if (++seen[name] > 1) {
      return Invalid(absl::StrCat("structured pruning: tensor \"", name, "\" given twice"));
    }
    const Rule& r = it->second;
    if (tensor.shape() != r.shape) {
      return Invalid(absl::StrCat("structured pruning: tensor \"", name, "\" has shape ",
                                  ShapeString(tensor.shape()), ", expected ",
                                  ShapeString(r.shape)));
    }
    const DType dt = tensor.dtype();
    if (dt != DType::kF32 && dt != DType::kF16 && dt != DType::kBF16 && dt != DType::kF64) {
      return Invalid(absl::StrCat("structured pruning: tensor \"", name, "\" is ",
                                  std::string(DTypeName(dt)),
                                  "; only F32/F16/BF16/F64 weights can be sliced"));
    }
    if (r.drop) continue;
    std::string new_name =
        r.layer >= 0 ? absl::StrCat("model.layers.", new_index[r.layer], ".", r.suffix) : name;
    out.emplace_back(std::move(new_name), Slice(tensor, r.rows, r.cols));
  }
  for (const auto& [name, r] : rules) {
    if (!r.optional && seen.count(name) == 0) {
      return Invalid(absl::StrCat("structured pruning: missing tensor \"", name, "\""));
    }
  }
  return std::make_pair(std::move(out_config), std::move(out));
}

}  // namespace retort::prune
