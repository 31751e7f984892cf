// retort inspect MODEL [--tensors] [--json] [--check-values]
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/convert.h"
#include "core/progress.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/gguf.h"
#include "formats/hf_dir.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "model/model_files.h"
#include "model/transformer.h"
#include "prune/prune_job.h"

namespace retort::cli {
namespace {

const char* RopeScalingName(RopeScaling::Type t) {
  switch (t) {
    case RopeScaling::Type::kNone:
      return "none";
    case RopeScaling::Type::kLinear:
      return "linear";
    case RopeScaling::Type::kLlama3:
      return "llama3";
  }
  return "?";
}

// --check-values: reads every tensor's data (the rest of inspect reads only
// headers) and lists those holding NaN or Inf as [{name, non_finite,
// elements}].
template <typename Get>
absl::StatusOr<nlohmann::ordered_json> NonFiniteTensors(const std::vector<std::string>& names,
                                                        const Get& get) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(Tensor t, get(name));
    if (const int64_t bad = CountNonFinite(t.dtype(), t.raw(), t.numel()); bad > 0) {
      list.push_back({{"name", name}, {"non_finite", bad}, {"elements", t.numel()}});
    }
  }
  return list;
}

// The text report's line about the values, and the exit: a model with
// NaN/Inf weights fails the check with one line naming the first tensors.
void PrintValuesLine(const nlohmann::ordered_json& bad, size_t checked) {
  if (bad.empty()) {
    std::cout << absl::StrFormat("values         all finite (%d tensors checked)\n", checked);
    return;
  }
  std::cout << absl::StrFormat("values         %d of %d tensors hold NaN/Inf:\n", bad.size(),
                               checked);
  for (const auto& t : bad) {
    std::cout << absl::StrFormat("  %-52s %d of %d values\n", t["name"].get<std::string>(),
                                 t["non_finite"].get<int64_t>(), t["elements"].get<int64_t>());
  }
}
int ValuesExit(const std::string& command, const std::string& model,
               const std::optional<nlohmann::ordered_json>& bad) {
  if (!bad.has_value() || bad->empty()) return kExitOk;
  std::vector<std::string> names;
  for (const auto& t : *bad) {
    if (names.size() == 3) {
      names.push_back("...");
      break;
    }
    names.push_back(t["name"].get<std::string>());
  }
  return Fail(command, absl::DataLossError(absl::StrCat(model, ": ", bad->size(),
                                                        " tensor(s) hold NaN or Inf values (",
                                                        absl::StrJoin(names, ", "), ")")));
}

// A GGUF file: every metadata key (long arrays abbreviated), the model shape
// when it is one the engine runs, and per-tensor ggml types with bits per weight.
int InspectGguf(const std::string& name, const std::string& model, bool list_tensors, bool json,
                bool check_values) {
  auto reader = GgufReader::Open(model);
  if (!reader.ok()) return Fail(name, reader.status());
  const GgufReader& r = **reader;
  // Loading checks names and shapes against the architecture; a file the
  // engine cannot run is still described.
  absl::Status loadable = LoadGgufTransformer(model).status();

  struct TypeTotal {
    int64_t tensors = 0, params = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, TypeTotal> by_type;
  int64_t params = 0;
  uint64_t bytes = 0;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const GgufTensorInfo& t : r.tensors()) {
    const int64_t n = NumElements(t.shape());
    const std::string type = GgmlTypeName(t.ggml_type);
    params += n;
    bytes += t.nbytes;
    TypeTotal& tt = by_type[type];
    tt.tensors++;
    tt.params += n;
    tt.bytes += t.nbytes;
    tensors.push_back({{"name", t.name},
                       {"type", type},
                       {"shape", t.shape()},
                       {"bytes", t.nbytes},
                       {"bits_per_weight", n > 0 ? 8.0 * t.nbytes / n : 0.0}});
  }
  const double bpw = params > 0 ? 8.0 * bytes / params : 0.0;
  std::optional<nlohmann::ordered_json> non_finite;
  if (check_values) {
    std::vector<std::string> names;
    for (const GgufTensorInfo& t : r.tensors()) names.push_back(t.name);
    auto bad = NonFiniteTensors(names, [&](const std::string& n) { return r.Get(n); });
    if (!bad.ok()) return Fail(name, bad.status());
    non_finite = *std::move(bad);
  }
  if (json) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : r.metadata()) meta[key] = value.DebugString(8);
    nlohmann::ordered_json types = nlohmann::ordered_json::object();
    for (const auto& [type, tt] : by_type) {
      types[type] = {{"tensors", tt.tensors},
                     {"parameters", tt.params},
                     {"bytes", tt.bytes},
                     {"bits_per_weight", tt.params > 0 ? 8.0 * tt.bytes / tt.params : 0.0}};
    }
    nlohmann::ordered_json out = {{"model", model},         {"format", "gguf"},
                                  {"version", r.version()}, {"alignment", r.alignment()},
                                  {"metadata", meta},       {"parameters", params},
                                  {"bytes", bytes},         {"bits_per_weight", bpw},
                                  {"types", types},         {"runs", loadable.ok()}};
    if (!loadable.ok()) out["not_runnable"] = std::string(loadable.message());
    if (list_tensors) out["tensors"] = tensors;
    if (non_finite.has_value()) out["non_finite_tensors"] = *non_finite;
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return ValuesExit(name, model, non_finite);
  }
  std::cout << absl::StrFormat(
      "model          %s (GGUF v%d, alignment %d, %d tensors, %d metadata keys)\n", model,
      r.version(), r.alignment(), r.tensors().size(), r.metadata().size());
  std::cout << "metadata\n";
  for (const auto& [key, value] : r.metadata()) {
    std::cout << absl::StrFormat("  %-44s %s\n", key, value.DebugString(8));
  }
  if (loadable.ok()) {
    auto config = ModelConfigFromGguf(r);
    const ModelConfig& c = *config;
    std::cout << absl::StrFormat("architecture   %s (%s)\n", ArchClassName(c.arch),
                                 GgufArchName(c.arch));
    std::cout << absl::StrFormat("layers         %d   hidden %d   intermediate %d\n", c.num_layers,
                                 c.hidden_size, c.intermediate_size);
    std::cout << absl::StrFormat(
        "attention      %d heads, %d kv heads, head_dim %d%s%s\n", c.num_heads, c.num_kv_heads,
        c.head_dim, c.attention_bias ? ", qkv bias" : "", c.qk_norm ? ", q/k norm" : "");
    std::cout << absl::StrFormat("rope           theta %g, scaling %s, context %d\n", c.rope_theta,
                                 RopeScalingName(c.rope_scaling.type), c.max_position_embeddings);
    std::cout << absl::StrFormat("vocab          %d%s\n", c.vocab_size,
                                 c.tie_word_embeddings ? ", tied embeddings" : "");
  } else {
    std::cout << "engine         cannot run this file: " << loadable.message() << "\n";
  }
  std::cout << absl::StrFormat("parameters     %s (%d)\n", HumanCount(params), params);
  std::cout << absl::StrFormat("weights        %s, %.3f bits per weight overall\n",
                               HumanBytes(bytes), bpw);
  for (const auto& [type, tt] : by_type) {
    std::cout << absl::StrFormat("  %-6s %4d tensors %12d params %11s  %.3f bpw\n", type,
                                 tt.tensors, tt.params, HumanBytes(tt.bytes),
                                 tt.params > 0 ? 8.0 * tt.bytes / tt.params : 0.0);
  }
  if (list_tensors) {
    for (const auto& t : tensors) {
      std::cout << absl::StrFormat(
          "  %-36s %-5s %-16s %10s %7.3f bpw\n", t["name"].get<std::string>(),
          t["type"].get<std::string>(), nlohmann::json(t["shape"]).dump(),
          HumanBytes(t["bytes"].get<double>()), t["bits_per_weight"].get<double>());
    }
  }
  if (non_finite.has_value()) PrintValuesLine(*non_finite, r.tensors().size());
  return ValuesExit(name, model, non_finite);
}

// "int4, groups of 128, symmetric, act-order" for each weight scheme.
std::string QuantizationSummary(const QuantizationConfig& qc) {
  std::vector<std::string> parts;
  for (const QuantSchemeSpec& g : qc.groups) {
    std::string text = std::string(DTypeName(g.value_type));
    switch (g.granularity) {
      case QuantGranularity::kTensor:
        absl::StrAppend(&text, ", per tensor");
        break;
      case QuantGranularity::kChannel:
        absl::StrAppend(&text, ", per channel");
        break;
      case QuantGranularity::kGroup:
        absl::StrAppend(&text, ", groups of ", g.group_size);
        break;
      case QuantGranularity::kBlock:
        absl::StrAppend(&text, ", ", g.group_size, "x", g.group_size, " blocks");
        break;
    }
    absl::StrAppend(&text, g.symmetric ? ", symmetric" : ", asymmetric");
    if (g.act_order) absl::StrAppend(&text, ", act-order");
    if (g.activations != ActivationQuant::kNone) absl::StrAppend(&text, ", activations quantized");
    parts.push_back(text);
  }
  return parts.empty() ? std::string("no weight scheme") : absl::StrJoin(parts, "; ");
}

}  // namespace

int RunInspect(const Args& args) {
  CommandSpec spec{
      .name = "inspect",
      .usage = "MODEL [options]",
      .summary =
          "Show a model's architecture, parameter count, tensors, dtypes and bytes; checks that "
          "every tensor the architecture needs is present and well-shaped.",
      .default_model = true};
  po::options_description opts("options");
  std::string model;
  opts.add_options()("model", po::value(&model)->required(), "model directory or .gguf file")(
      "tensors", po::bool_switch(), "list every tensor")("json", po::bool_switch(), "print JSON")(
      "check-values", po::bool_switch(),
      "read every tensor's values and report those holding NaN or Inf (exit 1 if any)");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (IsGgufFile(model))
    return InspectGguf(spec.name, model, vm["tensors"].as<bool>(), vm["json"].as<bool>(),
                       vm["check-values"].as<bool>());

  auto dir = HfDirectory::Open(model);
  if (!dir.ok()) return Fail(spec.name, dir.status());
  auto config = ModelConfig::FromJson((*dir)->config(), (*dir)->FilePath("config.json"));
  if (!config.ok()) return Fail(spec.name, config.status());
  // Loading maps the weights and checks names and shapes; it copies nothing large.
  auto engine = Transformer::Load(**dir);
  if (!engine.ok()) return Fail(spec.name, engine.status());

  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // dtype -> (params, bytes)
  int64_t tensor_params = 0;
  uint64_t tensor_bytes = 0;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const std::string& name : (*dir)->TensorNames()) {
    const SafetensorsEntry* e = (*dir)->Find(name);
    int64_t n = NumElements(e->shape);
    uint64_t bytes = e->end - e->begin;
    tensor_params += n;
    tensor_bytes += bytes;
    auto& slot = by_dtype[std::string(DTypeName(e->dtype))];
    slot.first += n;
    slot.second += bytes;
    tensors.push_back({{"name", name},
                       {"dtype", std::string(DTypeName(e->dtype))},
                       {"shape", e->shape},
                       {"bytes", bytes}});
  }
  // A quantized checkpoint stores packed values, scales and zero points: the
  // parameters are the model's logical weights (what the engine multiplies).
  const std::map<std::string, std::shared_ptr<const QuantizedMatrix>>& quantized =
      (*engine)->QuantizedWeights();
  int64_t params = tensor_params;
  if (!quantized.empty()) {
    params = 0;
    for (const auto& [name, w] : (*engine)->NamedWeights()) params += w.numel();
    for (const auto& [name, q] : quantized) params += q->rows * q->cols;
  }
  absl::StatusOr<QuantizationConfig> qc =
      ParseQuantizationConfig((*dir)->config(), (*dir)->FilePath("config.json"));
  std::vector<std::string> float_linears;  // 2-D weights the engine keeps in float
  for (const auto& [name, w] : (*engine)->NamedWeights()) {
    if (w.shape().size() == 2) float_linears.push_back(name);
  }
  auto tokenizer = LoadTokenizer(model);
  const prune::LinearSparsity sparsity = prune::CountLinearSparsity(**dir);
  const double zero_fraction =
      sparsity.elements > 0 ? static_cast<double>(sparsity.zeros) / sparsity.elements : 0.0;

  std::optional<nlohmann::ordered_json> non_finite;
  if (vm["check-values"].as<bool>()) {
    auto bad = NonFiniteTensors((*dir)->TensorNames(),
                                [&](const std::string& n) { return (*dir)->Get(n); });
    if (!bad.ok()) return Fail(spec.name, bad.status());
    non_finite = *std::move(bad);
  }
  const ModelConfig& c = *config;
  if (vm["json"].as<bool>()) {
    nlohmann::ordered_json out = {
        {"model", model},
        {"architecture", ArchClassName(c.arch)},
        {"layers", c.num_layers},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"num_heads", c.num_heads},
        {"num_kv_heads", c.num_kv_heads},
        {"head_dim", c.head_dim},
        {"vocab_size", c.vocab_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"rope_theta", c.rope_theta},
        {"rope_scaling", RopeScalingName(c.rope_scaling.type)},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"attention_bias", c.attention_bias},
        {"qk_norm", c.qk_norm},
        {"parameters", params},
        {"stored_elements", tensor_params},
        {"bytes", tensor_bytes},
        {"bits_per_weight", params > 0 ? 8.0 * tensor_bytes / params : 0.0},
        {"tokenizer_vocab", tokenizer.ok() ? (*tokenizer)->vocab_size() : 0}};
    if (sparsity.error.empty()) {
      out["sparsity"] = {{"linear_elements", sparsity.elements},
                         {"linear_zeros", sparsity.zeros},
                         {"fraction", zero_fraction},
                         {"nm_2_4", sparsity.nm_2_4},
                         {"nm_4_8", sparsity.nm_4_8}};
    } else {
      out["sparsity"] = {{"error", sparsity.error}};
    }
    if (qc.ok() && qc->kind != QuantizationConfig::Kind::kNone) {
      out["quantization"] = {{"method", qc->quant_method},
                             {"format", qc->format},
                             {"scheme", QuantizationSummary(*qc)},
                             {"quantized_linears", quantized.size()},
                             {"float_weights", float_linears}};
    }
    if (vm["tensors"].as<bool>()) out["tensors"] = tensors;
    if (non_finite.has_value()) out["non_finite_tensors"] = *non_finite;
    std::cout << out.dump(2) << "\n";
    return ValuesExit(spec.name, model, non_finite);
  }
  std::cout << absl::StrFormat("model          %s\n", model);
  std::cout << absl::StrFormat("architecture   %s\n", ArchClassName(c.arch));
  std::cout << absl::StrFormat("layers         %d   hidden %d   intermediate %d\n", c.num_layers,
                               c.hidden_size, c.intermediate_size);
  std::cout << absl::StrFormat("attention      %d heads, %d kv heads (GQA %dx), head_dim %d%s%s\n",
                               c.num_heads, c.num_kv_heads, c.num_heads / c.num_kv_heads,
                               c.head_dim, c.attention_bias ? ", qkv bias" : "",
                               c.qk_norm ? ", q/k norm" : "");
  std::cout << absl::StrFormat("rope           theta %g, scaling %s%s, context %d\n", c.rope_theta,
                               RopeScalingName(c.rope_scaling.type),
                               c.rope_scaling.type == RopeScaling::Type::kNone
                                   ? ""
                                   : absl::StrFormat(" (factor %g)", c.rope_scaling.factor),
                               c.max_position_embeddings);
  std::cout << absl::StrFormat("vocab          %d%s\n", c.vocab_size,
                               c.tie_word_embeddings ? ", tied embeddings" : "");
  std::cout << absl::StrFormat("parameters     %s (%d)\n", HumanCount(params), params);
  std::cout << absl::StrFormat("weights        %s in %d tensors:", HumanBytes(tensor_bytes),
                               tensors.size());
  for (const auto& [dtype, pb] : by_dtype) {
    std::cout << absl::StrFormat("  %s %s", dtype, HumanBytes(pb.second));
  }
  std::cout << absl::StrFormat(", %.2f bits per weight\n",
                               params > 0 ? 8.0 * tensor_bytes / params : 0.0);
  if (!qc.ok()) {
    std::cout << "quantization   unreadable (" << qc.status().message() << ")\n";
  } else if (qc->kind != QuantizationConfig::Kind::kNone) {
    std::cout << absl::StrFormat("quantization   %s (%s): %s; %d linears quantized",
                                 qc->quant_method, qc->format, QuantizationSummary(*qc),
                                 quantized.size());
    if (!float_linears.empty()) {
      std::cout << "; kept in float: " << absl::StrJoin(float_linears, ", ");
    }
    std::cout << "\n";
  }
  if (sparsity.elements == 0 && !quantized.empty()) {
    std::cout << "sparsity       not counted (the linears are quantized)\n";
  } else if (sparsity.error.empty()) {
    std::cout << absl::StrFormat(
        "sparsity       linear weights %.2f%% zero (%d of %d); 2:4 %s, 4:8 %s\n",
        100 * zero_fraction, sparsity.zeros, sparsity.elements, sparsity.nm_2_4 ? "holds" : "no",
        sparsity.nm_4_8 ? "holds" : "no");
  } else {
    std::cout << "sparsity       not counted (" << sparsity.error << ")\n";
  }
  if (tokenizer.ok()) {
    std::cout << absl::StrFormat("tokenizer      vocab %d, bos %d, eos %d\n",
                                 (*tokenizer)->vocab_size(), (*tokenizer)->bos_id(),
                                 (*tokenizer)->eos_id());
  } else {
    std::cout << "tokenizer      none (" << tokenizer.status().message() << ")\n";
  }
  if (vm["tensors"].as<bool>()) {
    for (const auto& t : tensors) {
      std::string shape = nlohmann::json(t["shape"]).dump();
      std::cout << absl::StrFormat("  %-52s %-8s %-16s %s\n", t["name"].get<std::string>(),
                                   t["dtype"].get<std::string>(), shape,
                                   HumanBytes(t["bytes"].get<double>()));
    }
  }
  if (non_finite.has_value()) PrintValuesLine(*non_finite, (*dir)->TensorNames().size());
  return ValuesExit(spec.name, model, non_finite);
}

}  // namespace retort::cli
