#include "quantize/model_quantizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/named_values.h"
#include "core/process.h"
#include "core/status.h"
#include "model/calibration.h"

namespace retort::quant {
namespace {

using Clock = std::chrono::steady_clock;

std::string ModuleName(int64_t layer, LinearSlot slot) {
  return absl::StrCat("model.layers.", layer, ".", LinearSlotName(slot));
}

// One layer's linear weights as f32 working copies [rows, cols].
struct WorkingLinear {
  std::string name;
  Tensor w;  // F32
  int64_t rows() const { return w.dim(0); }
  int64_t cols() const { return w.dim(1); }
  float* data() { return w.mutable_data<float>(); }
};

// Per distinct linear input of a layer: what the method needs from it.
struct InputStats {
  std::optional<HessianAccumulator> hessian;  // GPTQ
  std::vector<float> rows;                    // AWQ: a strided subset of the inputs
  int64_t cols = 0;
  int64_t seen = 0;  // rows observed (for the AWQ stride)
  float absmax = 0;  // static activation scale
};

// Whether weight `name` can be quantized: present, not quantized already
// (unless allow_requantize, for GGUF blocks), and fits the scheme.
absl::Status CheckQuantizable(const Transformer& model, const std::string& name,
                              const ModelQuantOptions& options) {
  if (model.QuantizedWeights().count(name) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the model is already quantized (", name, " is ",
        model.QuantizedWeights().at(name)->Describe(), "); quantize the original weights instead"));
  }
  const Tensor* t = model.FindWeight(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("the model has no weight ", name));
  if (IsBlockQuantized(t->dtype()) && !options.allow_requantize) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the model is already quantized (", name, " is stored as ",
        std::string(DTypeName(t->dtype())),
        "); quantizing again compounds both errors. Pass --allow-requantize to dequantize "
        "and requantize, or start from the original weights"));
  }
  return CheckSchemeFits(options.scheme, t->dim(0), t->dim(1), name);
}

// An f32 working copy of weight `name` (which CheckQuantizable accepted);
// refuses non-finite weights.
absl::StatusOr<Tensor> F32Copy(const Transformer& model, const std::string& name) {
  const Tensor* t = model.FindWeight(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("the model has no weight ", name));
  Tensor f = t->To(DType::kF32);
  if (std::string at = FindNonFinite(f.data<float>(), f.dim(0), f.numel() / f.dim(0));
      !at.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": non-finite weight at ", at, "; refusing to quantize"));
  }
  return f;
}

// w[:, j] *= s[j] (fold a scale into a weight's input columns).
void ScaleColumns(WorkingLinear& l, const std::vector<float>& s) {
  float* w = l.data();
  for (int64_t r = 0; r < l.rows(); ++r) {
    for (int64_t c = 0; c < l.cols(); ++c) w[r * l.cols() + c] *= s[c];
  }
}

// The AWQ mappings of one layer, applied in AutoAWQ's order.
struct AwqMapping {
  std::vector<LinearSlot> linears;
  LinearSlot input;
  // The op before: a norm weight, or a linear whose output rows carry 1/s.
  std::string prev_norm;                  // non-empty: norm weight name
  std::optional<LinearSlot> prev_linear;  // else: this linear's rows (and bias)
};

}  // namespace

constexpr NamedValue<QuantMethod> kQuantMethods[] = {
    {QuantMethod::kRtn, "rtn"}, {QuantMethod::kGptq, "gptq"}, {QuantMethod::kAwq, "awq"}};

absl::StatusOr<QuantMethod> ParseQuantMethod(const std::string& name) {
  if (std::optional<QuantMethod> m = FindNamedValue(kQuantMethods, name)) return *m;
  return absl::InvalidArgumentError(
      absl::StrCat("quantization method '", name, "': expected ", NamesOf(kQuantMethods)));
}

const char* QuantMethodName(QuantMethod m) { return NameOfValue(kQuantMethods, m); }

bool NeedsCalibration(const ModelQuantOptions& options) {
  return options.method != QuantMethod::kRtn || options.activations == ActivationScales::kStatic;
}

int64_t MinCalibrationTokens(const ModelConfig& c, const ModelQuantOptions& options) {
  if (options.method == QuantMethod::kRtn) {
    return options.activations == ActivationScales::kStatic ? 1 : 0;
  }
  return std::max({c.hidden_size, c.num_heads * c.head_dim, c.intermediate_size});
}

absl::StatusOr<ModelQuantReport> QuantizeModel(Transformer& model,
                                               const std::vector<std::vector<int32_t>>& calibration,
                                               const ModelQuantOptions& options,
                                               const LayerProgressFn& progress) {
  const auto t_start = Clock::now();
  const ModelConfig& c = model.config();
  const QuantScheme& scheme = options.scheme;
  if (options.activations != ActivationScales::kNone && !scheme.is_fp8()) {
    return absl::InvalidArgumentError(
        "activation scales are recorded for fp8 schemes only (int schemes are weight-only)");
  }
  if (options.method == QuantMethod::kAwq && scheme.is_fp8()) {
    return absl::InvalidArgumentError(
        "AWQ searches integer grids; use rtn or gptq for fp8 schemes");
  }

  // Everything that can be checked before any work.
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) {
      RETURN_IF_ERROR(CheckQuantizable(model, LinearWeightName(l, slot), options));
    }
  }
  const bool lm_head = options.quantize_lm_head && !c.tie_word_embeddings;
  if (lm_head) RETURN_IF_ERROR(CheckQuantizable(model, "lm_head.weight", options));
  ModelQuantReport report;
  const bool calibrate = NeedsCalibration(options);
  std::optional<LayerwiseRunner> runner;
  if (calibrate) {
    const int64_t tokens = CountTokens(calibration);
    const int64_t need = MinCalibrationTokens(c, options);
    if (tokens < need) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration set too small: ", tokens, " tokens in ", calibration.size(), " samples; ",
          QuantMethodName(options.method), " on this model needs at least ", need,
          " (the widest linear input) - give more data or raise --calib-samples/--calib-seq-len"));
    }
    ASSIGN_OR_RETURN(LayerwiseRunner r, LayerwiseRunner::Start(model, calibration));
    runner.emplace(std::move(r));
    report.calibration_tokens = tokens;
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto t_layer = Clock::now();
    // 1. Statistics of the layer's inputs (as the already-quantized layers
    //    before it produce them).
    std::map<LinearSlot, InputStats> stats;
    if (calibrate) {
      const int64_t stride =
          options.method == QuantMethod::kAwq
              ? std::max<int64_t>(1, (runner->tokens() + options.awq_search_tokens - 1) /
                                         options.awq_search_tokens)
              : 1;
      LinearInputObserver observe = [&](LinearSlot slot, const float* x, int64_t rows,
                                        int64_t cols) {
        InputStats& s = stats[slot];
        s.cols = cols;
        if (options.method == QuantMethod::kGptq) {
          if (!s.hessian) s.hessian.emplace(cols);
          s.hessian->Add(x, rows);
        }
        for (int64_t r = 0; r < rows; ++r, ++s.seen) {
          const float* row = x + r * cols;
          if (options.method == QuantMethod::kAwq && s.seen % stride == 0) {
            s.rows.insert(s.rows.end(), row, row + cols);
          }
          if (options.activations == ActivationScales::kStatic) {
            for (int64_t j = 0; j < cols; ++j) s.absmax = std::max(s.absmax, std::abs(row[j]));
          }
        }
      };
      RETURN_IF_ERROR(runner->Observe(observe));
    }

    // 2. f32 working copies of the layer's linears.
    std::map<LinearSlot, WorkingLinear> work;
    for (LinearSlot slot : kLinearSlots) {
      const std::string name = LinearWeightName(l, slot);
      ASSIGN_OR_RETURN(Tensor w, F32Copy(model, name));
      work[slot] = WorkingLinear{name, std::move(w)};
    }

    // 3. AWQ: scales folded into the previous op, then clipping.
    if (options.method == QuantMethod::kAwq) {
      const int64_t qdim = c.num_heads * c.head_dim, kvdim = c.num_kv_heads * c.head_dim;
      std::vector<AwqMapping> mappings;
      mappings.push_back({{LinearSlot::kQ, LinearSlot::kK, LinearSlot::kV},
                          LinearSlot::kQ,
                          absl::StrCat("model.layers.", l, ".input_layernorm.weight"),
                          std::nullopt});
      if (qdim == kvdim) {
        mappings.push_back({{LinearSlot::kO}, LinearSlot::kO, "", LinearSlot::kV});
      }
      mappings.push_back({{LinearSlot::kGate, LinearSlot::kUp},
                          LinearSlot::kGate,
                          absl::StrCat("model.layers.", l, ".post_attention_layernorm.weight"),
                          std::nullopt});
      mappings.push_back({{LinearSlot::kDown}, LinearSlot::kDown, "", LinearSlot::kUp});
      for (const AwqMapping& m : mappings) {
        InputStats& in = stats[m.input];
        const int64_t cols = in.cols;
        const int64_t tokens = static_cast<int64_t>(in.rows.size()) / cols;
        std::vector<LinearRef> refs;
        for (LinearSlot s : m.linears)
          refs.push_back({work[s].data(), work[s].rows(), work[s].name});
        double loss = 0;
        ASSIGN_OR_RETURN(std::vector<float> s, AwqSearchScales(in.rows.data(), tokens, cols, refs,
                                                               scheme, options.awq, &loss));
        report.method_error += loss;
        for (LinearSlot slot : m.linears) ScaleColumns(work[slot], s);
        // The inputs these linears see from now on are x / s.
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t j = 0; j < cols; ++j) in.rows[t * cols + j] /= s[j];
        }
        if (!m.prev_norm.empty()) {
          const Tensor* norm = model.FindWeight(m.prev_norm);
          if (norm == nullptr) return absl::NotFoundError(absl::StrCat("no weight ", m.prev_norm));
          Tensor f = norm->To(DType::kF32);
          for (int64_t j = 0; j < cols; ++j) f.mutable_data<float>()[j] /= s[j];
          RETURN_IF_ERROR(model.ReplaceWeight(m.prev_norm, f));
        } else {
          WorkingLinear& prev = work[*m.prev_linear];
          float* w = prev.data();
          for (int64_t r = 0; r < prev.rows(); ++r) {
            for (int64_t j = 0; j < prev.cols(); ++j) w[r * prev.cols() + j] /= s[r];
          }
          const std::string bias_name =
              absl::StrCat("model.layers.", l, ".", LinearSlotName(*m.prev_linear), ".bias");
          if (const Tensor* b = model.FindWeight(bias_name)) {
            Tensor f = b->To(DType::kF32);
            for (int64_t r = 0; r < prev.rows(); ++r) f.mutable_data<float>()[r] /= s[r];
            RETURN_IF_ERROR(model.ReplaceWeight(bias_name, f));
          }
        }
      }
      for (LinearSlot slot : kLinearSlots) {
        if (slot == LinearSlot::kQ || slot == LinearSlot::kK) continue;  // AutoAWQ's choice
        InputStats& in = stats[InputSlot(slot)];
        const int64_t tokens = static_cast<int64_t>(in.rows.size()) / in.cols;
        RETURN_IF_ERROR(AwqClip(work[slot].data(), work[slot].rows(), work[slot].cols(),
                                in.rows.data(), tokens, scheme, options.awq, work[slot].name));
      }
    }

    // 4. Round, install.
    for (LinearSlot slot : kLinearSlots) {
      WorkingLinear& wl = work[slot];
      QuantizedMatrix q;
      if (options.method == QuantMethod::kGptq) {
        GptqStats gs;
        ASSIGN_OR_RETURN(
            q, QuantizeGptq(wl.data(), wl.rows(), wl.cols(), *stats[InputSlot(slot)].hessian,
                            scheme, options.gptq, wl.name, &gs));
        report.method_error += gs.loss;
      } else {
        ASSIGN_OR_RETURN(q, QuantizeRtn(wl.data(), wl.rows(), wl.cols(), scheme, wl.name));
      }
      if (options.activations == ActivationScales::kStatic) {
        const float absmax = stats[InputSlot(slot)].absmax;
        report.input_scales[ModuleName(l, slot)] = absmax > 0 ? absmax / scheme.qmax() : 1.0f;
      }
      RETURN_IF_ERROR(
          model.SetQuantizedWeight(wl.name, std::make_shared<const QuantizedMatrix>(std::move(q))));
      wl.w = Tensor();
    }
    stats.clear();

    // 5. The next layer's inputs, through this layer as quantized.
    if (calibrate && l + 1 < c.num_layers) RETURN_IF_ERROR(runner->Advance().status());

    const double secs = SecondsSince(t_layer);
    report.layer_seconds.push_back(secs);
    if (progress) {
      progress(LayerProgress{l, c.num_layers, secs, SecondsSince(t_start), PeakRssBytes()});
    }
  }
  if (lm_head) {
    ASSIGN_OR_RETURN(Tensor w, F32Copy(model, "lm_head.weight"));
    ASSIGN_OR_RETURN(QuantizedMatrix q,
                     QuantizeRtn(w.data<float>(), w.dim(0), w.dim(1), scheme, "lm_head.weight"));
    RETURN_IF_ERROR(model.SetQuantizedWeight(
        "lm_head.weight", std::make_shared<const QuantizedMatrix>(std::move(q))));
  }
  report.seconds = SecondsSince(t_start);
  report.peak_rss = PeakRssBytes();
  return report;
}

}  // namespace retort::quant
