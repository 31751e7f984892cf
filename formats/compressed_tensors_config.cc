// compressed_tensors.h, the quantization_config JSON: writing
// compressed-tensors' block for `retort quantize`, and parsing every
// checkpoint kind's block (compressed-tensors, GPTQ, AWQ, DeepSeek FP8).
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "formats/compressed_tensors.h"
#include "formats/compressed_tensors_internal.h"
#include "formats/json_fields.h"

namespace retort {

using ct_internal::IsFp8;
using ct_internal::IsIntValue;
using ct_internal::TypeName;
namespace {

using json = nlohmann::json;

// The compressed-tensors release whose output CompressedTensorsConfig
// reproduces. Act-order ("actorder": "group", weight_g_idx) was removed in
// 0.20, so those configs say the last release line that wrote them.
constexpr char kCtVersion[] = "0.20.0";
constexpr char kCtActOrderVersion[] = "0.12.2";

// Fills the GPTQ-style summary fields of qc from its first group.
void FillSummary(QuantizationConfig& qc) {
  if (qc.groups.empty()) return;
  const QuantSchemeSpec& s = qc.groups[0];
  qc.bits = s.bits();
  qc.sym = s.symmetric;
  qc.desc_act = s.act_order;
  switch (s.granularity) {
    case QuantGranularity::kGroup:
      qc.group_size = s.group_size;
      break;
    case QuantGranularity::kChannel:
      qc.group_size = -1;
      break;
    case QuantGranularity::kBlock:
      qc.group_size = 0;
      qc.weight_block_size = {s.group_size, s.group_size};
      break;
    case QuantGranularity::kTensor:
      qc.group_size = 0;
      break;
  }
}

absl::StatusOr<ActivationQuant> ParseCtActivations(const JsonFields& f, const json& scheme,
                                                   const std::string& path) {
  const json* a = JsonFields::Find(scheme, "input_activations");
  if (a == nullptr) return ActivationQuant::kNone;
  const std::string apath = path + ".input_activations";
  if (!a->is_object()) return f.Bad(apath, "expected an object or null");
  const json* dyn = JsonFields::Find(*a, "dynamic");
  if (dyn == nullptr) return ActivationQuant::kStatic;
  if (dyn->is_boolean())
    return dyn->get<bool>() ? ActivationQuant::kDynamic : ActivationQuant::kStatic;
  if (dyn->is_string() && absl::AsciiStrToLower(dyn->get<std::string>()) == "local") {
    return f.Bad(apath + ".dynamic", "\"local\" (nvfp4 tensor-group activations) is not supported");
  }
  return f.Bad(apath + ".dynamic", "expected true or false, got ", dyn->dump());
}

bool KnownCtFormat(const std::string& format) {
  return format == "pack-quantized" || format == "float-quantized" || format == "naive-quantized" ||
         format == "int-quantized" || format == "dense";
}

absl::StatusOr<QuantSchemeSpec> ParseCtGroup(const JsonFields& f, const json& scheme,
                                             const std::string& path,
                                             const std::string& top_format) {
  QuantSchemeSpec s;
  ASSIGN_OR_RETURN(s.targets, f.Strings(scheme, path, "targets"));
  if (s.targets.empty()) return f.Bad(path + ".targets", "missing or empty");
  ASSIGN_OR_RETURN(s.format, f.String(scheme, path, "format", top_format));
  if (!KnownCtFormat(s.format)) {
    return f.Bad(path + ".format", "\"", s.format,
                 "\" is not supported (expected pack-quantized, float-quantized, naive-quantized, "
                 "int-quantized or dense)");
  }
  ASSIGN_OR_RETURN(s.activations, ParseCtActivations(f, scheme, path));
  const json& w = scheme["weights"];
  const std::string wpath = path + ".weights";
  if (!w.is_object()) return f.Bad(wpath, "expected an object");

  ASSIGN_OR_RETURN(std::string type, f.String(w, wpath, "type", std::string("int")));
  type = absl::AsciiStrToLower(type);
  ASSIGN_OR_RETURN(int64_t bits, f.Int(w, wpath, "num_bits", 8));
  if (type == "int") {
    if (bits != 4 && bits != 8)
      return f.Bad(wpath + ".num_bits", bits, " (supported: 4, 8 for int)");
    s.value_type = bits == 4 ? DType::kI4 : DType::kI8;
  } else if (type == "float") {
    if (bits != 8) return f.Bad(wpath + ".num_bits", bits, " (supported: 8 for float, fp8 e4m3)");
    s.value_type = DType::kF8E4M3;
  } else {
    return f.Bad(wpath + ".type", "\"", type, "\" (expected \"int\" or \"float\")");
  }
  if (s.format == "pack-quantized" && type != "int") {
    return f.Bad(path + ".format", "pack-quantized needs int weights");
  }
  if (s.format == "float-quantized" && type != "float") {
    return f.Bad(path + ".format", "float-quantized needs float weights");
  }

  ASSIGN_OR_RETURN(int64_t group_size, f.Int(w, wpath, "group_size", 0));
  ASSIGN_OR_RETURN(std::string strategy, f.String(w, wpath, "strategy", std::string()));
  strategy = absl::AsciiStrToLower(strategy);
  if (strategy.empty()) {  // the library infers it from group_size
    strategy = group_size > 0 ? "group" : group_size == -1 ? "channel" : "tensor";
  }
  if (strategy == "tensor") {
    s.granularity = QuantGranularity::kTensor;
  } else if (strategy == "channel") {
    s.granularity = QuantGranularity::kChannel;
  } else if (strategy == "group") {
    s.granularity = QuantGranularity::kGroup;
    if (group_size <= 0)
      return f.Bad(wpath + ".group_size", group_size, " (group strategy needs a positive size)");
    s.group_size = group_size;
  } else if (strategy == "block") {
    s.granularity = QuantGranularity::kBlock;
    const json* b = JsonFields::Find(w, "block_structure");
    std::vector<int64_t> dims;
    if (b != nullptr && b->is_array()) {
      for (const json& e : *b) {
        if (!e.is_number_integer()) {
          dims.clear();
          break;
        }
        dims.push_back(e.get<int64_t>());
      }
    } else if (b != nullptr && b->is_string()) {  // old spelling "128x128"
      const std::string str = b->get<std::string>();
      const size_t x = str.find('x');
      if (x != std::string::npos) {
        dims = {std::atoll(str.substr(0, x).c_str()), std::atoll(str.substr(x + 1).c_str())};
      }
    }
    if (dims.size() != 2 || dims[0] <= 0 || dims[1] <= 0) {
      return f.Bad(wpath + ".block_structure", "expected [rows, cols] of positive integers, got ",
                   b == nullptr ? std::string("null") : b->dump());
    }
    if (dims[0] != dims[1]) {
      return f.Bad(wpath + ".block_structure", "[", dims[0], ", ", dims[1],
                   "]: only square blocks are supported");
    }
    s.group_size = dims[0];
  } else {
    return f.Bad(wpath + ".strategy", "\"", strategy,
                 "\" is not supported for weights (expected tensor, channel, group or block)");
  }
  if (s.granularity == QuantGranularity::kBlock && !IsFp8(s.value_type)) {
    return f.Bad(wpath + ".strategy", "block scales are only supported for float weights");
  }

  ASSIGN_OR_RETURN(s.symmetric, f.Bool(w, wpath, "symmetric", true));
  if (!s.symmetric && IsFp8(s.value_type))
    return f.Bad(wpath + ".symmetric", "asymmetric float weights are not supported");
  if (!s.symmetric && s.granularity == QuantGranularity::kTensor) {
    return f.Bad(wpath + ".symmetric", "asymmetric weights need group or channel scales");
  }
  const json* dyn = JsonFields::Find(w, "dynamic");
  if (dyn != nullptr && !(dyn->is_boolean() && !dyn->get<bool>())) {
    return f.Bad(wpath + ".dynamic", dyn->dump(), " (weights must be statically quantized)");
  }
  const json* act = JsonFields::Find(w, "actorder");
  if (act != nullptr) {
    if (act->is_boolean()) {
      s.act_order = act->get<bool>();  // old spelling of "group"
    } else if (act->is_string()) {
      const std::string a = absl::AsciiStrToLower(act->get<std::string>());
      if (a == "group" || a == "dynamic") {
        s.act_order = true;
      } else if (a != "weight" && a != "static") {
        return f.Bad(wpath + ".actorder", "\"", a, "\" (expected group, weight or null)");
      }
    } else {
      return f.Bad(wpath + ".actorder", "expected a string, got ", act->dump());
    }
  }
  if (s.act_order && s.granularity != QuantGranularity::kGroup) {
    return f.Bad(wpath + ".actorder", "group activation ordering needs the group strategy");
  }
  return s;
}

absl::Status ParseCompressedTensors(const JsonFields& f, const json& q, const std::string& path,
                                    QuantizationConfig& qc) {
  qc.kind = QuantizationConfig::Kind::kCompressedTensors;
  ASSIGN_OR_RETURN(qc.format, f.String(q, path, "format", std::string("dense")));
  if (!KnownCtFormat(qc.format) && qc.format != "mixed-precision") {
    return f.Bad(path + ".format", "\"", qc.format,
                 "\" is not supported (expected pack-quantized, float-quantized, naive-quantized, "
                 "int-quantized, mixed-precision or dense)");
  }
  const json* sparsity = JsonFields::Find(q, "sparsity_config");
  if (sparsity != nullptr && !(sparsity->is_object() && sparsity->empty())) {
    return f.Bad(path + ".sparsity_config",
                 "sparse compressed-tensors checkpoints are not supported");
  }
  ASSIGN_OR_RETURN(qc.ignore, f.Strings(q, path, "ignore"));
  qc.kv_cache_quantized = JsonFields::Find(q, "kv_cache_scheme") != nullptr;
  const json* groups = JsonFields::Find(q, "config_groups");
  if (groups == nullptr || !groups->is_object())
    return f.Bad(path + ".config_groups", "missing or not an object");
  const std::string group_format = qc.format == "mixed-precision" ? std::string() : qc.format;
  for (auto it = groups->begin(); it != groups->end(); ++it) {
    const std::string gpath = path + ".config_groups." + it.key();
    if (!it.value().is_object()) {
      return f.Bad(gpath, "expected a scheme object (preset scheme names are not supported)");
    }
    if (JsonFields::Find(it.value(), "weights") == nullptr) continue;  // activations only
    if (group_format.empty() && JsonFields::Find(it.value(), "format") == nullptr) {
      return f.Bad(gpath + ".format",
                   "missing (a mixed-precision checkpoint names each group's format)");
    }
    ASSIGN_OR_RETURN(QuantSchemeSpec s, ParseCtGroup(f, it.value(), gpath, group_format));
    qc.groups.push_back(std::move(s));
  }
  FillSummary(qc);
  return absl::OkStatus();
}

// GPTQ-style group_size (GPTQ, AWQ): -1 for one scale per output channel,
// N > 0 for groups of N input columns. `key_path` names the key in errors.
absl::Status SetGroupSize(const JsonFields& f, const std::string& key_path, int64_t group_size,
                          QuantSchemeSpec& s) {
  if (group_size == -1) {
    s.granularity = QuantGranularity::kChannel;
  } else if (group_size > 0) {
    s.granularity = QuantGranularity::kGroup;
    s.group_size = group_size;
  } else {
    return f.Bad(key_path, group_size, " (expected -1 or a positive size)");
  }
  return absl::OkStatus();
}

// The end of a GPTQ, AWQ or DeepSeek FP8 block: a config of `kind` whose
// one scheme applies to every Linear except the modules_to_not_convert.
absl::Status AddLinearScheme(const JsonFields& f, const json& q, const std::string& path,
                             QuantizationConfig::Kind kind, QuantSchemeSpec s,
                             QuantizationConfig& qc) {
  qc.kind = kind;
  s.targets = {"Linear"};
  ASSIGN_OR_RETURN(qc.ignore, f.Strings(q, path, "modules_to_not_convert"));
  qc.groups.push_back(std::move(s));
  FillSummary(qc);
  return absl::OkStatus();
}

absl::Status ParseGptq(const JsonFields& f, const json& q, const std::string& path,
                       QuantizationConfig& qc) {
  QuantSchemeSpec s;
  ASSIGN_OR_RETURN(int64_t bits, f.Int(q, path, "bits", std::nullopt));
  if (bits != 4 && bits != 8) return f.Bad(path + ".bits", bits, " (supported: 4, 8)");
  s.value_type = bits == 4 ? DType::kI4 : DType::kI8;
  ASSIGN_OR_RETURN(int64_t group_size, f.Int(q, path, "group_size", -1));
  RETURN_IF_ERROR(SetGroupSize(f, path + ".group_size", group_size, s));
  ASSIGN_OR_RETURN(s.act_order, f.Bool(q, path, "desc_act", false));
  ASSIGN_OR_RETURN(s.symmetric, f.Bool(q, path, "sym", true));
  // AutoGPTQ omits it (v1); GPTQModel writes checkpoint_format and/or format.
  ASSIGN_OR_RETURN(std::string fmt, f.String(q, path, "checkpoint_format", std::string()));
  const char* fmt_key = "checkpoint_format";
  if (fmt.empty()) {
    ASSIGN_OR_RETURN(fmt, f.String(q, path, "format", std::string("gptq")));
    fmt_key = "format";
  }
  fmt = absl::AsciiStrToLower(fmt);
  if (fmt != "gptq" && fmt != "gptq_v2") {
    return f.Bad(path + "." + fmt_key, "\"", fmt, "\" is not supported (expected gptq or gptq_v2)");
  }
  qc.format = fmt;
  s.format = fmt;
  return AddLinearScheme(f, q, path, QuantizationConfig::Kind::kGptq, std::move(s), qc);
}

absl::Status ParseAwq(const JsonFields& f, const json& q, const std::string& path,
                      QuantizationConfig& qc) {
  QuantSchemeSpec s;
  const char* bits_key = JsonFields::Find(q, "bits") != nullptr ? "bits" : "w_bit";
  ASSIGN_OR_RETURN(int64_t bits, f.Int(q, path, bits_key, 4));
  if (bits != 4) return f.Bad(path + "." + bits_key, bits, " (AWQ gemm checkpoints are 4-bit)");
  s.value_type = DType::kI4;
  const char* gs_key = JsonFields::Find(q, "group_size") != nullptr ? "group_size" : "q_group_size";
  ASSIGN_OR_RETURN(int64_t group_size, f.Int(q, path, gs_key, std::nullopt));
  RETURN_IF_ERROR(SetGroupSize(f, path + "." + gs_key, group_size, s));
  ASSIGN_OR_RETURN(bool zero_point, f.Bool(q, path, "zero_point", true));
  if (!zero_point)
    return f.Bad(path + ".zero_point", "false is not supported (AWQ gemm stores zeros)");
  s.symmetric = false;
  ASSIGN_OR_RETURN(std::string version, f.String(q, path, "version", std::string("gemm")));
  version = absl::AsciiStrToLower(version);
  if (version != "gemm") {
    return f.Bad(path + ".version", "\"", version, "\" is not supported (expected gemm)");
  }
  qc.format = version;
  s.format = version;
  RETURN_IF_ERROR(AddLinearScheme(f, q, path, QuantizationConfig::Kind::kAwq, std::move(s), qc));
  qc.sym = false;
  return absl::OkStatus();
}

absl::Status ParseFp8Block(const JsonFields& f, const json& q, const std::string& path,
                           QuantizationConfig& qc) {
  QuantSchemeSpec s;
  ASSIGN_OR_RETURN(std::string fmt, f.String(q, path, "fmt", std::string("e4m3")));
  fmt = absl::AsciiStrToLower(fmt);
  if (fmt != "e4m3") return f.Bad(path + ".fmt", "\"", fmt, "\" is not supported (expected e4m3)");
  qc.format = fmt;
  s.format = fmt;
  s.value_type = DType::kF8E4M3;
  s.granularity = QuantGranularity::kBlock;
  const json* b = JsonFields::Find(q, "weight_block_size");
  if (b == nullptr) {
    return f.Bad(path + ".weight_block_size",
                 "missing (only block-scaled fp8 checkpoints are supported)");
  }
  if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_integer() ||
      !(*b)[1].is_number_integer() || (*b)[0].get<int64_t>() <= 0 || (*b)[1].get<int64_t>() <= 0) {
    return f.Bad(path + ".weight_block_size", "expected [rows, cols] of positive integers, got ",
                 b->dump());
  }
  if ((*b)[0].get<int64_t>() != (*b)[1].get<int64_t>()) {
    return f.Bad(path + ".weight_block_size", b->dump(), ": only square blocks are supported");
  }
  s.group_size = (*b)[0].get<int64_t>();
  ASSIGN_OR_RETURN(std::string act, f.String(q, path, "activation_scheme", std::string("dynamic")));
  act = absl::AsciiStrToLower(act);
  if (act == "dynamic") {
    s.activations = ActivationQuant::kDynamic;
  } else if (act == "static") {
    s.activations = ActivationQuant::kStatic;
  } else {
    return f.Bad(path + ".activation_scheme", "\"", act, "\" (expected dynamic or static)");
  }
  return AddLinearScheme(f, q, path, QuantizationConfig::Kind::kFp8Block, std::move(s), qc);
}

// compressed-tensors' match of a target / ignore entry against a module name:
// "re:<pattern>" matches from the start of the name (Python re.match), a
// plain entry matches the whole name, and the class name "Linear" matches
// every linear layer (the only modules this reader is asked about).
// Returns 3 (exact name), 2 (pattern), 1 (class) or 0.
int CtMatch(const std::string& target, const std::string& module) {
  if (target == module) return 3;
  if (absl::StartsWith(target, "re:")) {
    try {
      const std::regex re(target.substr(3));
      if (std::regex_search(module, re, std::regex_constants::match_continuous)) return 2;
    } catch (const std::regex_error&) {
      return 0;
    }
    return 0;
  }
  return target == "Linear" ? 1 : 0;
}

}  // namespace

const char* ActivationQuantName(ActivationQuant a) {
  switch (a) {
    case ActivationQuant::kNone:
      return "none";
    case ActivationQuant::kDynamic:
      return "dynamic";
    case ActivationQuant::kStatic:
      return "static";
  }
  return "?";
}

const char* QuantizationKindName(QuantizationConfig::Kind k) {
  switch (k) {
    case QuantizationConfig::Kind::kNone:
      return "none";
    case QuantizationConfig::Kind::kCompressedTensors:
      return "compressed-tensors";
    case QuantizationConfig::Kind::kGptq:
      return "gptq";
    case QuantizationConfig::Kind::kAwq:
      return "awq";
    case QuantizationConfig::Kind::kFp8Block:
      return "fp8";
  }
  return "?";
}

// ================================================================ writing ==

absl::Status ValidateCtConfigSpec(const CtConfigSpec& spec) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("compressed-tensors scheme: ", parts...));
  };
  const bool fp8 = spec.value_type == DType::kF8E4M3;
  if (!fp8 && !IsIntValue(spec.value_type)) {
    return bad("value type ", TypeName(spec.value_type),
               " (compressed-tensors stores I4, I8 or F8_E4M3 weights)");
  }
  if ((spec.granularity == QuantGranularity::kGroup ||
       spec.granularity == QuantGranularity::kBlock) &&
      spec.group_size <= 0) {
    return bad(QuantGranularityName(spec.granularity), " size ", spec.group_size,
               " must be positive");
  }
  if (spec.granularity == QuantGranularity::kBlock && !fp8)
    return bad("block scales need fp8 weights");
  if (!spec.symmetric && fp8) return bad("fp8 weights are symmetric");
  if (!spec.symmetric && spec.granularity == QuantGranularity::kTensor) {
    return bad("asymmetric int weights need group or channel scales");
  }
  if (spec.act_order && (fp8 || spec.granularity != QuantGranularity::kGroup)) {
    return bad("act-order (weight_g_idx) needs int weights with group scales");
  }
  if (spec.act_order && spec.static_act_order) {
    return bad("act-order is either group (weight_g_idx) or static, not both");
  }
  if (spec.activations != ActivationQuant::kNone && !fp8) {
    return bad("activation quantization is only written for fp8 weights");
  }
  return absl::OkStatus();
}

const char* CompressedTensorsFormat(const CtConfigSpec& spec) {
  if (IsIntValue(spec.value_type)) return "pack-quantized";
  return spec.activations == ActivationQuant::kNone ? "naive-quantized" : "float-quantized";
}

nlohmann::json CompressedTensorsConfig(const CtConfigSpec& spec) {
  const bool fp8 = !IsIntValue(spec.value_type);
  json weights = json::object();
  weights["dynamic"] = false;
  weights["group_size"] =
      spec.granularity == QuantGranularity::kGroup ? json(spec.group_size) : json(nullptr);
  weights["num_bits"] = DTypeBits(spec.value_type);
  weights["strategy"] = QuantGranularityName(spec.granularity);
  weights["symmetric"] = fp8 ? true : spec.symmetric;
  weights["type"] = fp8 ? "float" : "int";
  if (spec.granularity == QuantGranularity::kBlock) {
    weights["block_structure"] = json::array({spec.group_size, spec.group_size});
  }
  if (spec.act_order) weights["actorder"] = "group";
  if (spec.static_act_order) weights["actorder"] = "static";

  json inputs = nullptr;
  if (spec.activations != ActivationQuant::kNone) {
    const bool dynamic = spec.activations == ActivationQuant::kDynamic;
    const bool block = spec.granularity == QuantGranularity::kBlock;
    inputs = json::object();
    inputs["dynamic"] = dynamic;
    // vLLM's block-fp8 kernels quantize activations per token and group of 128.
    inputs["group_size"] = dynamic && block ? json(128) : json(nullptr);
    inputs["num_bits"] = 8;
    inputs["strategy"] = !dynamic ? "tensor" : block ? "group" : "token";
    inputs["symmetric"] = true;
    inputs["type"] = "float";
  }

  const char* format = CompressedTensorsFormat(spec);
  json group = json::object();
  group["format"] = format;
  group["input_activations"] = inputs;
  group["output_activations"] = nullptr;
  group["targets"] = json::array({"Linear"});
  group["weights"] = weights;

  json q = json::object();
  q["config_groups"] = json::object({{"group_0", group}});
  q["format"] = format;
  q["global_compression_ratio"] = nullptr;
  q["ignore"] = spec.ignore;
  q["kv_cache_scheme"] = nullptr;
  q["moe_sparsity_config"] = nullptr;
  q["quant_method"] = "compressed-tensors";
  q["quantization_status"] = "compressed";
  q["sparsity_config"] = json::object();
  q["transform_config"] = json::object();
  q["version"] = spec.act_order ? kCtActOrderVersion : kCtVersion;
  return q;
}

// ================================================================ reading ==

const QuantSchemeSpec* QuantizationConfig::SchemeFor(const std::string& module) const {
  if (kind == Kind::kNone || groups.empty()) return nullptr;
  if (kind == Kind::kCompressedTensors) {
    for (const std::string& ig : ignore) {
      if (CtMatch(ig, module) > 1) return nullptr;
    }
    const QuantSchemeSpec* best = nullptr;
    int best_rank = 0;
    for (const QuantSchemeSpec& g : groups) {
      for (const std::string& t : g.targets) {
        const int rank = CtMatch(t, module);
        if (rank > best_rank) {
          best_rank = rank;
          best = &g;
        }
      }
    }
    return best;
  }
  // GPTQ / AWQ / FP8 "modules_to_not_convert": substring of the module name.
  for (const std::string& ig : ignore) {
    if (!ig.empty() && absl::StrContains(module, ig)) return nullptr;
  }
  return &groups[0];
}

absl::StatusOr<QuantizationConfig> ParseQuantizationConfig(const nlohmann::json& config_json,
                                                           const std::string& source) {
  QuantizationConfig qc;
  const JsonFields f(source);
  try {
    if (!config_json.is_object()) return f.Bad("config", "expected a JSON object");
    const json* q = JsonFields::Find(config_json, "quantization_config");
    if (q == nullptr) return qc;
    const std::string path = "quantization_config";
    if (!q->is_object()) return f.Bad(path, "expected an object");
    ASSIGN_OR_RETURN(qc.quant_method, f.String(*q, path, "quant_method", std::nullopt));
    const std::string method = absl::AsciiStrToLower(qc.quant_method);
    if (method == "compressed-tensors") {
      RETURN_IF_ERROR(ParseCompressedTensors(f, *q, path, qc));
    } else if (method == "gptq") {
      RETURN_IF_ERROR(ParseGptq(f, *q, path, qc));
    } else if (method == "awq") {
      RETURN_IF_ERROR(ParseAwq(f, *q, path, qc));
    } else if (method == "fp8") {
      RETURN_IF_ERROR(ParseFp8Block(f, *q, path, qc));
    } else {
      return f.Bad(path + ".quant_method", "\"", qc.quant_method,
                   "\" is not supported (expected compressed-tensors, gptq, awq or fp8)");
    }
  } catch (const json::exception& e) {
    return f.Bad("quantization_config", e.what());
  }
  return qc;
}

}  // namespace retort
