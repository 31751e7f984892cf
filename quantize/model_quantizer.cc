#include "quantize/model_quantizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  int64_t seen = 0;          // rows observed (for the AWQ stride)
  float absmax = 0;          // static activation scale
  std::vector<double> sum2;  // imatrix-mse from calibration: sum x^2 per column
};

// Whether weight `name` can be quantized: present and not quantized already
// (unless allow_requantize, for GGUF blocks). CheckModelFitsScheme checks
// its shape.
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
  return absl::OkStatus();
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

// imatrix-mse's importance of linear `wl` (see ModelQuantOptions::importance):
// from options.importance, else from the calibration inputs (empty for GPTQ,
// which weighs by its Hessian's diagonal); divided by AWQ's s^2 where AWQ
// scaled the weight's columns.
absl::StatusOr<std::vector<float>> LinearImportance(
    const ModelQuantOptions& options, std::map<LinearSlot, InputStats>& stats,
    const std::map<LinearSlot, std::vector<float>>& awq_scales, const WorkingLinear& wl,
    LinearSlot slot) {
  const LinearSlot input = InputSlot(slot);
  std::vector<float> imp;
  if (options.importance) {
    imp = options.importance(wl.name);
    if (imp.empty()) {
      return absl::NotFoundError(
          absl::StrCat(wl.name, ": the importance matrix has no entry for this weight"));
    }
    if (static_cast<int64_t>(imp.size()) != wl.cols()) {
      return absl::InvalidArgumentError(absl::StrCat(wl.name, ": the importance matrix has ",
                                                     imp.size(), " columns, the weight has ",
                                                     wl.cols(), " input columns"));
    }
    if (auto it = awq_scales.find(input); it != awq_scales.end()) {
      for (int64_t j = 0; j < wl.cols(); ++j) imp[j] /= it->second[j] * it->second[j];
    }
    return imp;
  }
  if (options.method == QuantMethod::kGptq) return imp;
  InputStats& in = stats[input];
  imp.assign(wl.cols(), 0.0f);
  if (options.method == QuantMethod::kAwq) {
    // The kept inputs, already divided by s.
    const int64_t tokens = static_cast<int64_t>(in.rows.size()) / std::max<int64_t>(in.cols, 1);
    std::vector<double> sum(wl.cols(), 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < wl.cols(); ++j) {
        const double v = in.rows[t * in.cols + j];
        sum[j] += v * v;
      }
    }
    for (int64_t j = 0; j < wl.cols(); ++j) {
      imp[j] = tokens > 0 ? static_cast<float>(sum[j] / tokens) : 0.0f;
    }
    return imp;
  }
  for (int64_t j = 0; j < wl.cols() && j < static_cast<int64_t>(in.sum2.size()); ++j) {
    imp[j] = in.seen > 0 ? static_cast<float>(in.sum2[j] / in.seen) : 0.0f;
  }
  return imp;
}

}  // namespace

constexpr NamedValue<QuantMethod> kQuantMethods[] = {
    {QuantMethod::kRtn, "rtn"}, {QuantMethod::kGptq, "gptq"}, {QuantMethod::kAwq, "awq"}};

absl::StatusOr<QuantMethod> ParseQuantMethod(const std::string& name) {
  if (std::optional<QuantMethod> m = FindNamedValue(kQuantMethods, name)) return *m;
  return absl::InvalidArgumentError(
      absl::StrCat("quantization method '", name, "': expected ", NamesOf(kQuantMethods)));
}

const char* QuantMethodName(QuantMethod m) { return NameOfValue(kQuantMethods, m); }

namespace {

// llm-compressor's preset names (compressed-tensors 0.18,
// quantization/quant_scheme.py: PRESET_SCHEMES) as our schemes, or why not.
struct QuantPreset {
  const char* name;
  const char* scheme;  // ours; nullptr: refused with `refusal`
  ActivationScales activations;
  const char* refusal;
};

constexpr char kIntActivations[] =
    "integer activation quantization is not written yet (retort records activation scales for "
    "fp8 weights only); use W8A16 for int8 weights alone or FP8_DYNAMIC for 8-bit weights and "
    "activations";
constexpr char kFp4NotYet[] =
    "not yet: retort has no fp4/microscaled (e2m1, ue8m0) values; use W4A16 for 4-bit "
    "weights or FP8_DYNAMIC";

constexpr QuantPreset kQuantPresets[] = {
    {"W4A16", "int4-g128", ActivationScales::kNone, nullptr},
    {"W4A16_ASYM", "int4-g128-asym", ActivationScales::kNone, nullptr},
    {"W8A16", "int8-g128", ActivationScales::kNone, nullptr},
    {"FP8", "fp8-tensor", ActivationScales::kStatic, nullptr},
    {"FP8_DYNAMIC", "fp8-channel", ActivationScales::kDynamic, nullptr},
    {"FP8_BLOCK", "fp8-block128", ActivationScales::kDynamic, nullptr},
    {"W8A8", nullptr, ActivationScales::kNone,
     "int8-channel weights with dynamic per-token int8 activations: "},
    {"INT8", nullptr, ActivationScales::kNone,
     "int8-channel weights with dynamic per-token int8 activations (W8A8): "},
    {"W4A8", nullptr, ActivationScales::kNone,
     "int4-g128 weights with dynamic per-token int8 activations: "},
    {"W4AFP8", nullptr, ActivationScales::kNone,
     "int4-g128 weights with dynamic per-token fp8 activations: fp8 activations are written "
     "for fp8 weights only; use W4A16 or FP8_DYNAMIC"},
    {"NVFP4", nullptr, ActivationScales::kNone, "fp4 weights and activations, groups of 16: "},
    {"NVFP4A16", nullptr, ActivationScales::kNone, "fp4 weights, groups of 16: "},
    {"MXFP4", nullptr, ActivationScales::kNone, "mxfp4 weights and activations: "},
    {"MXFP4A16", nullptr, ActivationScales::kNone, "mxfp4 weights: "},
    {"MXFP8", nullptr, ActivationScales::kNone, "mxfp8 weights and activations: "},
    {"MXFP8A16", nullptr, ActivationScales::kNone, "mxfp8 weights: "},
    {"UNQUANTIZED", nullptr, ActivationScales::kNone,
     "leaves every weight as it is: nothing to write"},
};

// The presets we produce, for messages: "W4A16, W4A16_ASYM, ...".
std::string SupportedPresetNames() {
  std::string out;
  for (const QuantPreset& p : kQuantPresets) {
    if (p.scheme == nullptr) continue;
    absl::StrAppend(&out, out.empty() ? "" : ", ", p.name);
  }
  return out;
}

// Why a preset we do not produce is refused (the table's text, completed).
std::string PresetRefusal(const QuantPreset& p) {
  const std::string why = p.refusal;
  if (absl::EndsWith(why, ": ")) {
    const bool fp4 = absl::StrContains(why, "fp4") || absl::StrContains(why, "mxfp");
    return absl::StrCat(why, fp4 ? kFp4NotYet : kIntActivations);
  }
  return why;
}

}  // namespace

absl::StatusOr<SchemeChoice> ParseSchemeOrPreset(std::string_view name_view) {
  const std::string name(name_view);
  const std::string upper = absl::AsciiStrToUpper(name);
  for (const QuantPreset& p : kQuantPresets) {
    if (upper != p.name) continue;
    if (p.scheme == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantization scheme '", name, "' (llm-compressor preset): ", PresetRefusal(p)));
    }
    ASSIGN_OR_RETURN(QuantScheme scheme, ParseQuantScheme(p.scheme));
    return SchemeChoice{scheme, p.name, p.activations};
  }
  // compressed-tensors' other integer presets, W<bits>A<bits>.
  int wbits = 0, abits = 0;
  if (upper.size() >= 4 && upper[0] == 'W' && upper[2] == 'A' && absl::ascii_isdigit(upper[1]) &&
      absl::SimpleAtoi(upper.substr(1, 1), &wbits) && absl::SimpleAtoi(upper.substr(3), &abits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization scheme '", name, "' (llm-compressor preset): ",
                     wbits != 4 && wbits != 8 ? "retort writes 4- and 8-bit integer weights only"
                                              : kIntActivations,
                     "; presets retort writes: ", SupportedPresetNames()));
  }
  absl::StatusOr<QuantScheme> scheme = ParseQuantScheme(name);
  if (!scheme.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        scheme.status().message(), "; or an llm-compressor preset: ", SupportedPresetNames()));
  }
  return SchemeChoice{*scheme, "", std::nullopt};
}

std::vector<LinearShape> QuantizedLinearShapes(const Transformer& model,
                                               const ModelQuantOptions& options) {
  const ModelConfig& c = model.config();
  std::vector<std::string> names;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) names.push_back(LinearWeightName(l, slot));
  }
  if (options.quantize_lm_head && !c.tie_word_embeddings) names.push_back("lm_head.weight");
  std::vector<LinearShape> out;
  for (const std::string& name : names) {
    if (auto it = model.QuantizedWeights().find(name); it != model.QuantizedWeights().end()) {
      out.push_back({name, it->second->rows, it->second->cols});
    } else if (const Tensor* t = model.FindWeight(name); t != nullptr && t->rank() == 2) {
      out.push_back({name, t->dim(0), t->dim(1)});
    }
  }
  return out;
}

std::vector<QuantScheme> FittingSchemes(const Transformer& model,
                                        const ModelQuantOptions& options) {
  const std::vector<LinearShape> shapes = QuantizedLinearShapes(model, options);
  auto fits = [&](const QuantScheme& s) {
    for (const LinearShape& l : shapes) {
      if (!CheckSchemeFits(s, l.rows, l.cols, l.name).ok()) return false;
    }
    return true;
  };
  std::vector<QuantScheme> out;
  QuantScheme s = options.scheme;
  if (s.granularity == QuantGranularity::kGroup) {
    for (int64_t g : {128, 64, 32}) {
      if (g > options.scheme.group_size) continue;
      s.group_size = g;
      if (fits(s)) out.push_back(s);
    }
  }
  if (s.granularity == QuantGranularity::kGroup || s.granularity == QuantGranularity::kChannel) {
    s.granularity = QuantGranularity::kChannel;
    s.group_size = 0;
    if (fits(s)) out.push_back(s);
  }
  return out;
}

absl::Status CheckModelQuantizable(const Transformer& model, const ModelQuantOptions& options) {
  const ModelConfig& c = model.config();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) {
      RETURN_IF_ERROR(CheckQuantizable(model, LinearWeightName(l, slot), options));
    }
  }
  if (options.quantize_lm_head && !c.tie_word_embeddings) {
    RETURN_IF_ERROR(CheckQuantizable(model, "lm_head.weight", options));
  }
  return CheckModelFitsScheme(model, options);
}

absl::Status CheckModelFitsScheme(const Transformer& model, const ModelQuantOptions& options) {
  for (const LinearShape& l : QuantizedLinearShapes(model, options)) {
    absl::Status s = CheckSchemeFits(options.scheme, l.rows, l.cols, l.name);
    if (s.ok()) continue;
    std::vector<std::string> names;
    for (const QuantScheme& f : FittingSchemes(model, options)) names.push_back(f.Name());
    if (names.empty()) return s;
    return absl::InvalidArgumentError(absl::StrCat(
        s.message(), "; schemes that fit every layer of this model: ", absl::StrJoin(names, ", ")));
  }
  return absl::OkStatus();
}

// imatrix-mse with the importance taken from the calibration inputs.
bool CalibratedImportance(const ModelQuantOptions& options) {
  return options.observer.kind == ScaleObserver::kImatrixMse && !options.importance;
}

bool NeedsCalibration(const ModelQuantOptions& options) {
  return options.method != QuantMethod::kRtn || options.activations == ActivationScales::kStatic ||
         CalibratedImportance(options);
}

int64_t MinCalibrationTokens(const ModelConfig& c, const ModelQuantOptions& options) {
  if (options.method == QuantMethod::kRtn) {
    return NeedsCalibration(options) ? 1 : 0;
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

  RETURN_IF_ERROR(CheckModelQuantizable(model, options));
  RETURN_IF_ERROR(CheckObserverOptions(options.observer));
  const bool imatrix = options.observer.kind == ScaleObserver::kImatrixMse;
  // Sums x^2 while calibrating (GPTQ reads its Hessian instead).
  const bool sum_squares = CalibratedImportance(options) && options.method != QuantMethod::kGptq;
  const bool lm_head = options.quantize_lm_head && !c.tie_word_embeddings;
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
          if (sum_squares && options.method == QuantMethod::kRtn) {
            s.sum2.resize(cols, 0.0);
            for (int64_t j = 0; j < cols; ++j) s.sum2[j] += double(row[j]) * row[j];
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
    std::map<LinearSlot, std::vector<float>> awq_scales;  // by input slot
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
        awq_scales[m.input] = s;
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
      std::vector<float> importance;
      if (imatrix) {
        ASSIGN_OR_RETURN(importance, LinearImportance(options, stats, awq_scales, wl, slot));
      }
      QuantizedMatrix q;
      if (options.method == QuantMethod::kGptq) {
        GptqStats gs;
        GptqOptions gptq = options.gptq;
        gptq.observer = options.observer;
        ASSIGN_OR_RETURN(
            q, QuantizeGptq(wl.data(), wl.rows(), wl.cols(), *stats[InputSlot(slot)].hessian,
                            scheme, gptq, wl.name, &gs, importance));
        report.method_error += gs.loss;
      } else {
        ASSIGN_OR_RETURN(q, QuantizeRtn(wl.data(), wl.rows(), wl.cols(), scheme, wl.name,
                                        options.observer, importance));
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
    // imatrix-mse needs the final norm's output statistics, which the layer
    // runner does not observe: the lm_head uses an unweighted mse then.
    ObserverOptions observer = options.observer;
    std::vector<float> importance;
    if (imatrix && options.importance) importance = options.importance("lm_head.weight");
    if (imatrix && importance.empty()) observer.kind = ScaleObserver::kMse;
    ASSIGN_OR_RETURN(QuantizedMatrix q, QuantizeRtn(w.data<float>(), w.dim(0), w.dim(1), scheme,
                                                    "lm_head.weight", observer, importance));
    RETURN_IF_ERROR(model.SetQuantizedWeight(
        "lm_head.weight", std::make_shared<const QuantizedMatrix>(std::move(q))));
  }
  report.seconds = SecondsSince(t_start);
  report.peak_rss = PeakRssBytes();
  return report;
}

}  // namespace retort::quant
