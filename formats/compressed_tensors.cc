#include "formats/compressed_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"

namespace retort {
namespace {

using json = nlohmann::json;

// DTypeName is a std::string_view, which this Abseil's StrCat does not take.
std::string TypeName(DType t) { return std::string(DTypeName(t)); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool IsFp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }
bool IsIntValue(DType t) { return t == DType::kI4 || t == DType::kI8; }
bool IsFloatScaleType(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// The compressed-tensors release whose output CompressedTensorsConfig
// reproduces. Act-order ("actorder": "group", weight_g_idx) was removed in
// 0.20, so those configs say the last release line that wrote them.
constexpr char kCtVersion[] = "0.20.0";
constexpr char kCtActOrderVersion[] = "0.12.2";

// --------------------------------------------------------- bit packing --
//
// Both compressed-tensors and GPTQ store b-bit unsigned fields (b = 4 or 8)
// LSB-first in int32 words: field i of a packed line is word i / (32 / b),
// bits (i % (32 / b)) * b. For b in {4, 8} no field straddles two words.

uint32_t Field(const int32_t* words, int64_t i, int bits) {
  const int per = 32 / bits;
  const uint32_t w = static_cast<uint32_t>(words[i / per]);
  return (w >> ((i % per) * bits)) & ((1u << bits) - 1u);
}

void SetField(int32_t* words, int64_t i, int bits, uint32_t v) {
  const int per = 32 / bits;
  uint32_t w = static_cast<uint32_t>(words[i / per]);
  w |= (v & ((1u << bits) - 1u)) << ((i % per) * bits);
  words[i / per] = static_cast<int32_t>(w);
}

// AWQ's gemm kernels interleave the 8 nibbles of a word: nibble i holds
// output column 8 j + kAwqOrder[i]; kAwqNibble is its inverse.
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// ------------------------------------------------------- tensor helpers --

// F32/BF16/F16 tensor as an owned F32 tensor of `shape` (same numel).
Tensor FloatToF32(const Tensor& t, Shape shape) {
  Tensor out = Tensor::Zeros(DType::kF32, std::move(shape));
  ConvertToF32(t.dtype(), t.raw(), out.mutable_data<float>(), t.numel());
  return out;
}

// The transpose of a [a, b] F32 tensor.
Tensor TransposeF32(const Tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1);
  Tensor out = Tensor::Zeros(DType::kF32, {b, a});
  const float* src = t.data<float>();
  float* dst = out.mutable_data<float>();
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < b; ++j) dst[j * a + i] = src[i * b + j];
  }
  return out;
}

// Stores q (already in range) as element (r, c) of an I4 or I8 values tensor.
void PutValue(Tensor& values, int64_t cols, int64_t r, int64_t c, int q) {
  if (values.dtype() == DType::kI4) {
    PackI4(values.mutable_data<uint8_t>() + r * (cols / 2), c, q);
  } else {
    values.mutable_data<int8_t>()[r * cols + c] = static_cast<int8_t>(q);
  }
}

int GetValue(const QuantizedMatrix& m, int64_t r, int64_t c) {
  if (m.value_type == DType::kI4) return UnpackI4(m.values.data<uint8_t>() + r * (m.cols / 2), c);
  return m.values.data<int8_t>()[r * m.cols + c];
}

bool AllZero(const Tensor& zeros) {
  const int8_t* z = zeros.data<int8_t>();
  for (int64_t i = 0; i < zeros.numel(); ++i) {
    if (z[i] != 0) return false;
  }
  return true;
}

// True when g_idx[c] == c / group_size for every column (plain grouping).
bool TrivialGIdx(const Tensor& g_idx, int64_t group_size) {
  const int32_t* g = g_idx.data<int32_t>();
  for (int64_t c = 0; c < g_idx.numel(); ++c) {
    if (g[c] != c / group_size) return false;
  }
  return true;
}

// Errors about tensor `<module>.<suffix>`.
class TensorErrors {
 public:
  explicit TensorErrors(const std::string& module) : module_(module) {}
  template <typename... Args>
  absl::Status Bad(const std::string& suffix, const Args&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(module_, ".", suffix, ": ", parts...));
  }
  absl::Status Missing(const std::string& suffix, const std::string& why) const {
    return absl::NotFoundError(absl::StrCat(module_, ".", suffix, " is missing (", why, ")"));
  }
  std::string Name(const std::string& suffix) const { return absl::StrCat(module_, ".", suffix); }

 private:
  const std::string& module_;
};

std::string ShapeOf(const Tensor& t) { return TypeName(t.dtype()) + " " + ShapeString(t.shape()); }

// A float scale tensor of exactly `shape` (any of F32/BF16/F16) as F32.
absl::StatusOr<Tensor> ScaleTensor(const TensorErrors& err, const std::string& suffix,
                                   const Tensor& t, const Shape& shape, const Shape& out_shape) {
  if (!IsFloatScaleType(t.dtype()) || t.shape() != shape) {
    return err.Bad(suffix, "is ", ShapeOf(t), ", expected F32/BF16/F16 ", ShapeString(shape));
  }
  return FloatToF32(t, out_shape);
}

// g_idx as I32 [cols] (I32 or I64 in the file), entries in [0, groups).
absl::StatusOr<Tensor> GIdxTensor(const TensorErrors& err, const std::string& suffix,
                                  const Tensor& t, int64_t cols, int64_t groups) {
  if ((t.dtype() != DType::kI32 && t.dtype() != DType::kI64) || t.shape() != Shape{cols}) {
    return err.Bad(suffix, "is ", ShapeOf(t), ", expected I32 [", cols, "]");
  }
  Tensor out = Tensor::Zeros(DType::kI32, {cols});
  int32_t* g = out.mutable_data<int32_t>();
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t v = t.dtype() == DType::kI32 ? t.data<int32_t>()[c] : t.data<int64_t>()[c];
    if (v < 0 || v >= groups) {
      return err.Bad(suffix, "entry ", c, " is ", v, ", outside the ", groups, " groups");
    }
    g[c] = static_cast<int32_t>(v);
  }
  return out;
}

absl::StatusOr<QuantizedMatrix> Validated(QuantizedMatrix m, const std::string& module) {
  RETURN_IF_ERROR(ValidateQuantizedMatrix(m, module));
  return m;
}

// ------------------------------------------------------- JSON reading --

// Typed access to config.json fields with errors that name the field path.
class JsonFields {
 public:
  explicit JsonFields(const std::string& source) : source_(source) {}

  template <typename... Args>
  absl::Status Bad(const std::string& path, const Args&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", path, ": ", parts...));
  }

  static const json* Find(const json& obj, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::StatusOr<int64_t> Int(const json& obj, const std::string& path, const char* key,
                              std::optional<int64_t> fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) {
      if (fallback.has_value()) return *fallback;
      return Bad(path + "." + key, "missing (expected an integer)");
    }
    if (!v->is_number_integer())
      return Bad(path + "." + key, "expected an integer, got ", v->dump());
    return v->get<int64_t>();
  }

  absl::StatusOr<bool> Bool(const json& obj, const std::string& path, const char* key,
                            bool fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) return Bad(path + "." + key, "expected true or false, got ", v->dump());
    return v->get<bool>();
  }

  absl::StatusOr<std::string> String(const json& obj, const std::string& path, const char* key,
                                     std::optional<std::string> fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) {
      if (fallback.has_value()) return *fallback;
      return Bad(path + "." + key, "missing (expected a string)");
    }
    if (!v->is_string()) return Bad(path + "." + key, "expected a string, got ", v->dump());
    return v->get<std::string>();
  }

  absl::StatusOr<std::vector<std::string>> Strings(const json& obj, const std::string& path,
                                                   const char* key) const {
    std::vector<std::string> out;
    const json* v = Find(obj, key);
    if (v == nullptr) return out;
    if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
    if (!v->is_array()) return Bad(path + "." + key, "expected a list of strings, got ", v->dump());
    for (const json& e : *v) {
      if (!e.is_string())
        return Bad(path + "." + key, "expected a list of strings, got ", v->dump());
      out.push_back(e.get<std::string>());
    }
    return out;
  }

 private:
  const std::string& source_;
};

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

absl::Status ParseGptq(const JsonFields& f, const json& q, const std::string& path,
                       QuantizationConfig& qc) {
  qc.kind = QuantizationConfig::Kind::kGptq;
  QuantSchemeSpec s;
  s.targets = {"Linear"};
  ASSIGN_OR_RETURN(int64_t bits, f.Int(q, path, "bits", std::nullopt));
  if (bits != 4 && bits != 8) return f.Bad(path + ".bits", bits, " (supported: 4, 8)");
  s.value_type = bits == 4 ? DType::kI4 : DType::kI8;
  ASSIGN_OR_RETURN(int64_t group_size, f.Int(q, path, "group_size", -1));
  if (group_size == -1) {
    s.granularity = QuantGranularity::kChannel;
  } else if (group_size > 0) {
    s.granularity = QuantGranularity::kGroup;
    s.group_size = group_size;
  } else {
    return f.Bad(path + ".group_size", group_size, " (expected -1 or a positive size)");
  }
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
  ASSIGN_OR_RETURN(qc.ignore, f.Strings(q, path, "modules_to_not_convert"));
  qc.groups.push_back(std::move(s));
  FillSummary(qc);
  return absl::OkStatus();
}

absl::Status ParseAwq(const JsonFields& f, const json& q, const std::string& path,
                      QuantizationConfig& qc) {
  qc.kind = QuantizationConfig::Kind::kAwq;
  QuantSchemeSpec s;
  s.targets = {"Linear"};
  const char* bits_key = JsonFields::Find(q, "bits") != nullptr ? "bits" : "w_bit";
  ASSIGN_OR_RETURN(int64_t bits, f.Int(q, path, bits_key, 4));
  if (bits != 4) return f.Bad(path + "." + bits_key, bits, " (AWQ gemm checkpoints are 4-bit)");
  s.value_type = DType::kI4;
  const char* gs_key = JsonFields::Find(q, "group_size") != nullptr ? "group_size" : "q_group_size";
  ASSIGN_OR_RETURN(int64_t group_size, f.Int(q, path, gs_key, std::nullopt));
  if (group_size == -1) {
    s.granularity = QuantGranularity::kChannel;
  } else if (group_size > 0) {
    s.granularity = QuantGranularity::kGroup;
    s.group_size = group_size;
  } else {
    return f.Bad(path + "." + gs_key, group_size, " (expected -1 or a positive size)");
  }
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
  ASSIGN_OR_RETURN(qc.ignore, f.Strings(q, path, "modules_to_not_convert"));
  qc.groups.push_back(std::move(s));
  FillSummary(qc);
  qc.sym = false;
  return absl::OkStatus();
}

absl::Status ParseFp8Block(const JsonFields& f, const json& q, const std::string& path,
                           QuantizationConfig& qc) {
  qc.kind = QuantizationConfig::Kind::kFp8Block;
  QuantSchemeSpec s;
  s.targets = {"Linear"};
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
  ASSIGN_OR_RETURN(qc.ignore, f.Strings(q, path, "modules_to_not_convert"));
  qc.groups.push_back(std::move(s));
  FillSummary(qc);
  return absl::OkStatus();
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

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackCompressedTensors(
    const std::string& module, const QuantizedMatrix& m, DType scale_dtype,
    std::optional<float> input_scale) {
  RETURN_IF_ERROR(ValidateQuantizedMatrix(m, module));
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(module, ": ", parts...));
  };
  if (!IsFloatScaleType(scale_dtype)) {
    return bad("scale dtype ", TypeName(scale_dtype), " (expected BF16, F16 or F32)");
  }
  const int64_t rows = m.rows, cols = m.cols;
  std::vector<std::pair<std::string, Tensor>> out;
  // compressed-tensors' scale shapes: [1] per tensor, [rows, 1] per channel,
  // [rows, groups] per group, [ceil(rows/B), ceil(cols/B)] per block -- ours
  // except the tensor case.
  Shape scale_shape = m.scales.shape();
  if (m.granularity == QuantGranularity::kTensor) scale_shape = {1};
  ASSIGN_OR_RETURN(Tensor scales_f32, m.scales.Reshape(scale_shape));
  Tensor scale = scales_f32.To(scale_dtype);

  if (IsFp8(m.value_type)) {
    if (m.value_type != DType::kF8E4M3) {
      return bad("fp8 e5m2 weights have no compressed-tensors format (it stores float8_e4m3fn)");
    }
    out.emplace_back(module + ".weight", m.values);
    out.emplace_back(module + ".weight_scale", scale);
    if (input_scale.has_value()) {
      if (!std::isfinite(*input_scale) || *input_scale <= 0) {
        return bad("input_scale ", *input_scale, " must be finite and positive");
      }
      Tensor s = Tensor::Zeros(DType::kF32, {1});
      s.mutable_data<float>()[0] = *input_scale;
      out.emplace_back(module + ".input_scale", s.To(scale_dtype));
    }
    return out;
  }
  if (input_scale.has_value()) return bad("input_scale is only written for fp8 weights");
  if (m.granularity == QuantGranularity::kBlock) {
    return bad("int weights with block scales have no compressed-tensors format");
  }
  const int bits = DTypeBits(m.value_type);
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const int64_t packed_cols = CeilDiv(cols, per);
  Tensor packed = Tensor::Zeros(DType::kI32, {rows, packed_cols});
  int32_t* p = packed.mutable_data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      SetField(p + r * packed_cols, c, bits, static_cast<uint32_t>(GetValue(m, r, c) + half));
    }
  }
  out.emplace_back(module + ".weight_packed", packed);
  out.emplace_back(module + ".weight_scale", scale);
  if (!m.zero_points.empty()) {
    // Packed along the output dim (packed_dim=0): column g of the result
    // holds the zero points of every row for scale column g.
    const int64_t zcols = m.zero_points.dim(1);
    const int64_t zrows = CeilDiv(rows, per);
    Tensor zp = Tensor::Zeros(DType::kI32, {zrows, zcols});
    int32_t* z = zp.mutable_data<int32_t>();
    const int8_t* src = m.zero_points.data<int8_t>();
    for (int64_t g = 0; g < zcols; ++g) {
      for (int64_t r = 0; r < rows; ++r) {
        const uint32_t v = static_cast<uint32_t>(src[r * zcols + g] + half);
        z[(r / per) * zcols + g] |=
            static_cast<int32_t>((v & ((1u << bits) - 1u)) << ((r % per) * bits));
      }
    }
    out.emplace_back(module + ".weight_zero_point", zp);
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  out.emplace_back(module + ".weight_shape", shape);
  if (!m.g_idx.empty()) out.emplace_back(module + ".weight_g_idx", m.g_idx);
  return out;
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

namespace {

// compressed-tensors pack-quantized: weight_packed I32 [rows, ceil(cols*b/32)]
// (values + 2^(b-1), packed along the input dim), weight_shape [rows, cols],
// weight_scale, weight_zero_point I32 [ceil(rows*b/32), groups] (asymmetric,
// packed along the output dim), weight_g_idx I32 [cols] (act-order).
absl::StatusOr<QuantizedMatrix> ReadCtPacked(const QuantSchemeSpec& s, const std::string& module,
                                             const Tensor& packed, const TensorLookup& lookup) {
  const TensorErrors err(module);
  if (!IsIntValue(s.value_type)) {
    return err.Bad("weight_packed", "found, but the config group for this module has ",
                   TypeName(s.value_type), " weights (pack-quantized is for int4/int8)");
  }
  std::optional<Tensor> shape_t = lookup(err.Name("weight_shape"));
  if (!shape_t) return err.Missing("weight_shape", "pack-quantized weights store their shape");
  if ((shape_t->dtype() != DType::kI64 && shape_t->dtype() != DType::kI32) ||
      shape_t->shape() != Shape{2}) {
    return err.Bad("weight_shape", "is ", ShapeOf(*shape_t), ", expected I64 [2]");
  }
  const int64_t rows =
      shape_t->dtype() == DType::kI64 ? shape_t->data<int64_t>()[0] : shape_t->data<int32_t>()[0];
  const int64_t cols =
      shape_t->dtype() == DType::kI64 ? shape_t->data<int64_t>()[1] : shape_t->data<int32_t>()[1];
  if (rows <= 0 || cols <= 0 || rows > (int64_t{1} << 31) || cols > (int64_t{1} << 31)) {
    return err.Bad("weight_shape", "[", rows, ", ", cols, "] is not a valid matrix shape");
  }
  const int bits = s.bits();
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const int64_t packed_cols = CeilDiv(cols, per);
  if (packed.dtype() != DType::kI32 || packed.shape() != Shape{rows, packed_cols}) {
    return err.Bad("weight_packed", "is ", ShapeOf(packed), ", expected I32 [", rows, ", ",
                   packed_cols, "] for weight_shape [", rows, ", ", cols, "] at ", bits, " bits");
  }
  if (s.value_type == DType::kI4 && cols % 2 != 0) {
    return err.Bad("weight_shape", "int4 weights need an even number of columns, got ", cols);
  }
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  Shape file_scale_shape;
  switch (s.granularity) {
    case QuantGranularity::kTensor:
      file_scale_shape = {1};
      break;
    case QuantGranularity::kChannel:
      file_scale_shape = {rows, 1};
      break;
    case QuantGranularity::kGroup:
      if (cols % s.group_size != 0) {
        return err.Bad("weight_shape", "group size ", s.group_size, " does not divide the ", cols,
                       " input columns");
      }
      m.group_size = s.group_size;
      file_scale_shape = {rows, cols / s.group_size};
      break;
    case QuantGranularity::kBlock:
      return err.Bad("weight_packed", "int weights with block scales are not supported");
  }
  const Shape scale_shape =
      s.granularity == QuantGranularity::kTensor ? Shape{1, 1} : file_scale_shape;
  std::optional<Tensor> scale_t = lookup(err.Name("weight_scale"));
  if (!scale_t) return err.Missing("weight_scale", "every quantized weight has scales");
  if (s.granularity == QuantGranularity::kTensor && scale_t->numel() == 1 && scale_t->rank() <= 2) {
    file_scale_shape = scale_t->shape();  // [1], [1, 1] and [] all mean one scale
  }
  ASSIGN_OR_RETURN(m.scales,
                   ScaleTensor(err, "weight_scale", *scale_t, file_scale_shape, scale_shape));

  m.values = Tensor::Zeros(s.value_type, {rows, cols});
  const int32_t* p = packed.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      PutValue(m.values, cols, r, c, static_cast<int>(Field(p + r * packed_cols, c, bits)) - half);
    }
  }
  if (!s.symmetric) {
    std::optional<Tensor> zp = lookup(err.Name("weight_zero_point"));
    if (!zp) return err.Missing("weight_zero_point", "the scheme is asymmetric");
    const int64_t zcols = scale_shape[1];
    const int64_t zrows = CeilDiv(rows, per);
    if (zp->dtype() != DType::kI32 || zp->shape() != Shape{zrows, zcols}) {
      return err.Bad("weight_zero_point", "is ", ShapeOf(*zp), ", expected I32 [", zrows, ", ",
                     zcols, "] (", bits, "-bit zero points of ", rows,
                     " rows packed along the output dim)");
    }
    m.zero_points = Tensor::Zeros(DType::kI8, scale_shape);
    int8_t* z = m.zero_points.mutable_data<int8_t>();
    const int32_t* src = zp->data<int32_t>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < zcols; ++g) {
        const uint32_t w = static_cast<uint32_t>(src[(r / per) * zcols + g]);
        const int v = static_cast<int>((w >> ((r % per) * bits)) & ((1u << bits) - 1u)) - half;
        z[r * zcols + g] = static_cast<int8_t>(v);
      }
    }
    if (AllZero(m.zero_points)) m.zero_points = Tensor();
  }
  std::optional<Tensor> g_idx = lookup(err.Name("weight_g_idx"));
  if (g_idx.has_value()) {
    if (s.granularity != QuantGranularity::kGroup) {
      return err.Bad("weight_g_idx", "present, but the scheme has ",
                     QuantGranularityName(s.granularity), " scales (g_idx needs group scales)");
    }
    ASSIGN_OR_RETURN(Tensor g, GIdxTensor(err, "weight_g_idx", *g_idx, cols, scale_shape[1]));
    if (!TrivialGIdx(g, s.group_size)) m.g_idx = g;
  } else if (s.act_order) {
    return err.Missing("weight_g_idx", "the scheme has group activation ordering");
  }
  return Validated(std::move(m), module);
}

// Scale shapes for unpacked values (float-quantized / naive-quantized fp8 or
// int8, DeepSeek fp8): file shape and our shape.
absl::Status UnpackedScaleShapes(const TensorErrors& err, const QuantSchemeSpec& s, int64_t rows,
                                 int64_t cols, const Tensor& scale, Shape* file, Shape* ours) {
  switch (s.granularity) {
    case QuantGranularity::kTensor:
      *ours = {1, 1};
      *file = scale.numel() == 1 && scale.rank() <= 2 ? scale.shape() : Shape{1};
      return absl::OkStatus();
    case QuantGranularity::kChannel:
      *ours = {rows, 1};
      *file = scale.rank() == 1 ? Shape{rows} : Shape{rows, 1};
      return absl::OkStatus();
    case QuantGranularity::kGroup:
      if (cols % s.group_size != 0) {
        return err.Bad("weight", "group size ", s.group_size, " does not divide the ", cols,
                       " input columns");
      }
      *ours = *file = {rows, cols / s.group_size};
      return absl::OkStatus();
    case QuantGranularity::kBlock:
      *ours = *file = {CeilDiv(rows, s.group_size), CeilDiv(cols, s.group_size)};
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

// compressed-tensors float-quantized / naive-quantized / int-quantized: the
// values stored one per element in `weight` (F8_E4M3 or I8) + weight_scale
// (+ weight_zero_point I8 with the scales' shape when asymmetric).
absl::StatusOr<QuantizedMatrix> ReadCtUnpacked(const QuantSchemeSpec& s, const std::string& module,
                                               const Tensor& weight, const TensorLookup& lookup) {
  const TensorErrors err(module);
  if (weight.rank() != 2 || weight.dim(0) <= 0 || weight.dim(1) <= 0) {
    return err.Bad("weight", "is ", ShapeOf(weight), ", expected a matrix");
  }
  const bool fp8 = weight.dtype() == DType::kF8E4M3;
  if (fp8 != IsFp8(s.value_type)) {
    return err.Bad("weight", "is ", TypeName(weight.dtype()),
                   " but the config group for this module has ", TypeName(s.value_type),
                   " weights");
  }
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  m.group_size =
      s.granularity == QuantGranularity::kGroup || s.granularity == QuantGranularity::kBlock
          ? s.group_size
          : 0;
  std::optional<Tensor> scale_t = lookup(err.Name("weight_scale"));
  if (!scale_t) return err.Missing("weight_scale", "every quantized weight has scales");
  Shape file_shape, our_shape;
  RETURN_IF_ERROR(UnpackedScaleShapes(err, s, rows, cols, *scale_t, &file_shape, &our_shape));
  ASSIGN_OR_RETURN(m.scales, ScaleTensor(err, "weight_scale", *scale_t, file_shape, our_shape));
  if (fp8) {
    m.values = weight;  // shares the checkpoint's bytes
  } else {
    if (s.value_type == DType::kI4 && cols % 2 != 0) {
      return err.Bad("weight", "int4 weights need an even number of columns, got ", cols);
    }
    const int lo = s.value_type == DType::kI4 ? -8 : -128;
    const int hi = s.value_type == DType::kI4 ? 7 : 127;
    m.values = Tensor::Zeros(s.value_type, {rows, cols});
    const int8_t* src = weight.data<int8_t>();
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (src[i] < lo || src[i] > hi) {
        return err.Bad("weight", "value ", int{src[i]}, " at element ", i, " is outside [", lo,
                       ", ", hi, "]");
      }
      PutValue(m.values, cols, i / cols, i % cols, src[i]);
    }
    if (!s.symmetric) {
      std::optional<Tensor> zp = lookup(err.Name("weight_zero_point"));
      if (!zp) return err.Missing("weight_zero_point", "the scheme is asymmetric");
      if (zp->dtype() != DType::kI8 || zp->numel() != NumElements(our_shape)) {
        return err.Bad("weight_zero_point", "is ", ShapeOf(*zp), ", expected I8 ",
                       ShapeString(our_shape));
      }
      ASSIGN_OR_RETURN(m.zero_points, zp->Clone().Reshape(our_shape));
      if (AllZero(m.zero_points)) m.zero_points = Tensor();
    }
  }
  return Validated(std::move(m), module);
}

absl::StatusOr<std::optional<QuantizedMatrix>> ReadCompressedTensors(const QuantizationConfig& qc,
                                                                     const std::string& module,
                                                                     const TensorLookup& lookup) {
  const TensorErrors err(module);
  const QuantSchemeSpec* s = qc.SchemeFor(module);
  std::optional<Tensor> packed = lookup(err.Name("weight_packed"));
  if (packed.has_value()) {
    if (s == nullptr) {
      return err.Bad("weight_packed", "found, but no quantization config group targets ", module,
                     " (or it is in the ignore list)");
    }
    ASSIGN_OR_RETURN(QuantizedMatrix m, ReadCtPacked(*s, module, *packed, lookup));
    return std::optional<QuantizedMatrix>(std::move(m));
  }
  std::optional<Tensor> weight = lookup(err.Name("weight"));
  if (!weight.has_value())
    return err.Missing("weight", "neither weight nor weight_packed is in the checkpoint");
  const bool quantized_storage =
      IsFp8(weight->dtype()) ||
      (weight->dtype() == DType::kI8 && lookup(err.Name("weight_scale")).has_value());
  if (!quantized_storage) return std::optional<QuantizedMatrix>();  // stored unquantized
  if (weight->dtype() == DType::kF8E5M2) {
    return err.Bad("weight",
                   "F8_E5M2 weights are not a compressed-tensors format (expected F8_E4M3)");
  }
  if (s == nullptr) {
    return err.Bad("weight", "is ", TypeName(weight->dtype()),
                   " with scales, but no quantization config group "
                   "targets ",
                   module, " (or it is in the ignore list)");
  }
  ASSIGN_OR_RETURN(QuantizedMatrix m, ReadCtUnpacked(*s, module, *weight, lookup));
  return std::optional<QuantizedMatrix>(std::move(m));
}

// GPTQ: qweight I32 [cols*b/32, rows] packed along the input dim, qzeros I32
// [groups, rows*b/32] packed along the output dim (v1: zero - 1), scales
// [groups, rows], g_idx I32 [cols]. AWQ gemm: qweight I32 [cols, rows/8] and
// qzeros I32 [groups, rows/8] packed along the output dim in AWQ's nibble
// order, scales [groups, rows].
absl::StatusOr<std::optional<QuantizedMatrix>> ReadGptqOrAwq(const QuantizationConfig& qc,
                                                             const std::string& module,
                                                             const TensorLookup& lookup) {
  const TensorErrors err(module);
  const bool awq = qc.kind == QuantizationConfig::Kind::kAwq;
  std::optional<Tensor> qweight = lookup(err.Name("qweight"));
  if (!qweight.has_value()) {
    if (lookup(err.Name("weight")).has_value()) return std::optional<QuantizedMatrix>();
    return err.Missing("qweight", "neither qweight nor weight is in the checkpoint");
  }
  const QuantSchemeSpec* sp = qc.SchemeFor(module);
  if (sp == nullptr)
    return err.Bad("qweight", "found, but the module is in modules_to_not_convert");
  const QuantSchemeSpec& s = *sp;
  const int bits = s.bits();
  const int per = 32 / bits;
  const int half = 1 << (bits - 1);
  const uint32_t mask = (1u << bits) - 1u;
  if (qweight->dtype() != DType::kI32 || qweight->rank() != 2 || qweight->dim(0) <= 0 ||
      qweight->dim(1) <= 0) {
    return err.Bad("qweight", "is ", ShapeOf(*qweight), ", expected a 2-D I32 tensor");
  }
  const int64_t rows = awq ? qweight->dim(1) * per : qweight->dim(1);
  const int64_t cols = awq ? qweight->dim(0) : qweight->dim(0) * per;
  int64_t groups = 1;
  if (s.granularity == QuantGranularity::kGroup) {
    if (cols % s.group_size != 0) {
      return err.Bad("qweight", "group size ", s.group_size, " does not divide the ", cols,
                     " input columns of ", ShapeOf(*qweight));
    }
    groups = cols / s.group_size;
  }
  if (rows % per != 0) {
    return err.Bad("qweight", rows, " output rows do not fill whole ", bits, "-bit qzeros words");
  }
  std::optional<Tensor> scales = lookup(err.Name("scales"));
  if (!scales) return err.Missing("scales", "every quantized weight has scales");
  std::optional<Tensor> qzeros = lookup(err.Name("qzeros"));
  if (!qzeros) return err.Missing("qzeros", "GPTQ/AWQ checkpoints store zero points");
  if (qzeros->dtype() != DType::kI32 || qzeros->shape() != Shape{groups, rows / per}) {
    return err.Bad("qzeros", "is ", ShapeOf(*qzeros), ", expected I32 [", groups, ", ", rows / per,
                   "]");
  }
  ASSIGN_OR_RETURN(Tensor scales_gr,
                   ScaleTensor(err, "scales", *scales, {groups, rows}, {groups, rows}));

  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = s.value_type;
  m.granularity = s.granularity;
  m.group_size = s.granularity == QuantGranularity::kGroup ? s.group_size : 0;
  m.scales = TransposeF32(scales_gr);  // [rows, groups]
  m.values = Tensor::Zeros(s.value_type, {rows, cols});
  const int32_t* qw = qweight->data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t u;
      if (awq) {
        const uint32_t w = static_cast<uint32_t>(qw[c * (rows / 8) + r / 8]);
        u = (w >> (kAwqNibble[r % 8] * 4)) & 0xfu;
      } else {
        const uint32_t w = static_cast<uint32_t>(qw[(c / per) * rows + r]);
        u = (w >> ((c % per) * bits)) & mask;
      }
      PutValue(m.values, cols, r, c, static_cast<int>(u) - half);
    }
  }
  // GPTQ v1 stores zero - 1 (AutoGPTQ's historical offset), v2 and AWQ the zero.
  const int zero_offset = !awq && qc.format == "gptq" ? 1 : 0;
  m.zero_points = Tensor::Zeros(DType::kI8, {rows, groups});
  int8_t* z = m.zero_points.mutable_data<int8_t>();
  const int32_t* qz = qzeros->data<int32_t>();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint32_t w = static_cast<uint32_t>(qz[g * (rows / per) + r / per]);
      const int shift = awq ? kAwqNibble[r % 8] * 4 : static_cast<int>(r % per) * bits;
      const int zero = static_cast<int>((w >> shift) & mask) + zero_offset;
      if (zero > static_cast<int>(mask)) {
        return err.Bad("qzeros", "zero point of row ", r, ", group ", g, " is ", zero, " (stored ",
                       zero - 1, " + 1), outside the ", bits, "-bit range");
      }
      z[r * groups + g] = static_cast<int8_t>(zero - half);
    }
  }
  if (AllZero(m.zero_points)) m.zero_points = Tensor();
  if (!awq) {
    std::optional<Tensor> g_idx = lookup(err.Name("g_idx"));
    if (g_idx.has_value()) {
      ASSIGN_OR_RETURN(Tensor g, GIdxTensor(err, "g_idx", *g_idx, cols, groups));
      if (s.granularity == QuantGranularity::kGroup && !TrivialGIdx(g, s.group_size)) m.g_idx = g;
    } else if (s.act_order) {
      return err.Missing("g_idx", "desc_act checkpoints store the group of each column");
    }
  }
  ASSIGN_OR_RETURN(QuantizedMatrix v, Validated(std::move(m), module));
  return std::optional<QuantizedMatrix>(std::move(v));
}

absl::StatusOr<std::optional<QuantizedMatrix>> ReadDeepSeekFp8(const QuantizationConfig& qc,
                                                               const std::string& module,
                                                               const TensorLookup& lookup) {
  const TensorErrors err(module);
  std::optional<Tensor> weight = lookup(err.Name("weight"));
  if (!weight.has_value()) return err.Missing("weight", "no weight tensor for this module");
  std::optional<Tensor> scale_inv = lookup(err.Name("weight_scale_inv"));
  if (weight->dtype() != DType::kF8E4M3) {
    if (IsFp8(weight->dtype()))
      return err.Bad("weight", "is ", TypeName(weight->dtype()), ", expected F8_E4M3");
    if (scale_inv.has_value()) {
      return err.Bad("weight", "is ", TypeName(weight->dtype()),
                     " but has a weight_scale_inv (expected F8_E4M3)");
    }
    return std::optional<QuantizedMatrix>();  // stored unquantized
  }
  if (!scale_inv) return err.Missing("weight_scale_inv", "F8_E4M3 weights need their block scales");
  const QuantSchemeSpec* s = qc.SchemeFor(module);
  if (s == nullptr)
    return err.Bad("weight", "is F8_E4M3, but the module is in modules_to_not_convert");
  if (weight->rank() != 2 || weight->dim(0) <= 0 || weight->dim(1) <= 0) {
    return err.Bad("weight", "is ", ShapeOf(*weight), ", expected a matrix");
  }
  const int64_t rows = weight->dim(0), cols = weight->dim(1), b = s->group_size;
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.value_type = DType::kF8E4M3;
  m.granularity = QuantGranularity::kBlock;
  m.group_size = b;
  m.values = *weight;
  const Shape shape = {CeilDiv(rows, b), CeilDiv(cols, b)};
  ASSIGN_OR_RETURN(m.scales, ScaleTensor(err, "weight_scale_inv", *scale_inv, shape, shape));
  ASSIGN_OR_RETURN(QuantizedMatrix v, Validated(std::move(m), module));
  return std::optional<QuantizedMatrix>(std::move(v));
}

}  // namespace

absl::StatusOr<std::optional<QuantizedMatrix>> ReadQuantizedLinear(const QuantizationConfig& qc,
                                                                   const std::string& module,
                                                                   const TensorLookup& lookup) {
  switch (qc.kind) {
    case QuantizationConfig::Kind::kNone:
      return std::optional<QuantizedMatrix>();
    case QuantizationConfig::Kind::kCompressedTensors:
      return ReadCompressedTensors(qc, module, lookup);
    case QuantizationConfig::Kind::kGptq:
    case QuantizationConfig::Kind::kAwq:
      return ReadGptqOrAwq(qc, module, lookup);
    case QuantizationConfig::Kind::kFp8Block:
      return ReadDeepSeekFp8(qc, module, lookup);
  }
  return absl::InternalError("unknown quantization kind");
}

absl::StatusOr<std::optional<float>> ReadInputScale(const std::string& module,
                                                    const TensorLookup& lookup) {
  const TensorErrors err(module);
  std::optional<Tensor> t = lookup(err.Name("input_scale"));
  if (!t.has_value()) return std::optional<float>();
  if (!IsFloatScaleType(t->dtype()) || t->numel() != 1 || t->rank() > 2) {
    return err.Bad("input_scale", "is ", ShapeOf(*t), ", expected one F32/BF16/F16 value");
  }
  float v;
  ConvertToF32(t->dtype(), t->raw(), &v, 1);
  if (!std::isfinite(v) || v <= 0)
    return err.Bad("input_scale", "is ", v, " (expected finite and positive)");
  return std::optional<float>(v);
}

absl::StatusOr<Tensor> DequantizeFp8BlockToBf16(const Tensor& weight,
                                                const Tensor& weight_scale_inv,
                                                const std::string& what) {
  constexpr int64_t kBlock = 128;
  if (weight.dtype() != DType::kF8E4M3 || weight.rank() != 2 || weight.dim(0) <= 0 ||
      weight.dim(1) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": weight is ", ShapeOf(weight), ", expected an F8_E4M3 matrix"));
  }
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  const Shape shape = {CeilDiv(rows, kBlock), CeilDiv(cols, kBlock)};
  if (!IsFloatScaleType(weight_scale_inv.dtype()) || weight_scale_inv.shape() != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": weight_scale_inv is ", ShapeOf(weight_scale_inv), ", expected F32 ",
                     ShapeString(shape), " (128x128 blocks of ", ShapeString(weight.shape()), ")"));
  }
  const Tensor s = FloatToF32(weight_scale_inv, shape);
  const float* sp = s.data<float>();
  for (int64_t i = 0; i < s.numel(); ++i) {
    if (!std::isfinite(sp[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": weight_scale_inv entry ", i, " is not finite"));
    }
  }
  Tensor out = Tensor::Zeros(DType::kBF16, {rows, cols});
  uint16_t* o = out.mutable_data<uint16_t>();
  const uint8_t* w = weight.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* srow = sp + (r / kBlock) * shape[1];
    for (int64_t c = 0; c < cols; ++c) {
      o[r * cols + c] = F32ToBF16(F8E4M3ToF32(w[r * cols + c]) * srow[c / kBlock]);
    }
  }
  return out;
}

// --------------------------------------------------------------- sparsity --

namespace {

constexpr char kCtSparseVersion[] = "0.12.2";

bool IsSparseValueType(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || t == DType::kF8E4M3;
}

// Whether element i of a float tensor is +0.0 or -0.0 (every bit but the
// sign clear), which is what the library's `tensor != 0` treats as zero.
bool IsZeroAt(const uint8_t* data, size_t elem_bytes, int64_t i) {
  const uint8_t* e = data + static_cast<size_t>(i) * elem_bytes;
  // Little-endian: the sign bit is the top bit of the last byte.
  for (size_t b = 0; b + 1 < elem_bytes; ++b) {
    if (e[b] != 0) return false;
  }
  return (e[elem_bytes - 1] & 0x7f) == 0;
}

absl::Status CheckDenseForSparse(const std::string& module, const Tensor& w) {
  if (w.rank() != 2 || w.dim(0) <= 0 || w.dim(1) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".weight: sparse compression needs a non-empty 2-D weight, got ",
                     ShapeString(w.shape())));
  }
  if (!IsSparseValueType(w.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".weight: sparse compression supports F32, F16, BF16 or F8_E4M3 weights, got ",
        std::string(DTypeName(w.dtype()))));
  }
  return absl::OkStatus();
}

// The packed bitmask (U8 [rows, ceil(cols/8)], bit order little) of `keep`.
Tensor PackBits(const std::vector<uint8_t>& keep, int64_t rows, int64_t cols) {
  const int64_t line = (cols + 7) / 8;
  Tensor bits = Tensor::Zeros(DType::kU8, {rows, line});
  uint8_t* out = bits.mutable_data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (keep[r * cols + c]) out[r * line + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
    }
  }
  return bits;
}

// Copies the kept elements of `w` in row-major order into `values`.
void GatherKept(const Tensor& w, const std::vector<uint8_t>& keep, Tensor* values) {
  const size_t eb = DTypeBytes(w.dtype(), 1);
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(values->mutable_raw());
  size_t k = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (keep[i]) std::memcpy(dst + (k++) * eb, src + static_cast<size_t>(i) * eb, eb);
  }
}

absl::StatusOr<Tensor> RequireSparseTensor(const std::string& module, const char* suffix,
                                           const TensorLookup& lookup) {
  const std::string name = absl::StrCat(module, ".", suffix);
  std::optional<Tensor> t = lookup(name);
  if (!t.has_value()) {
    return absl::NotFoundError(absl::StrCat(name, ": missing from the sparse checkpoint"));
  }
  return *t;
}

// Reads <m>.shape (I64 or I32 with 2 elements, positive) as {rows, cols}.
absl::StatusOr<std::array<int64_t, 2>> ReadSparseShape(const std::string& module,
                                                       const TensorLookup& lookup) {
  ASSIGN_OR_RETURN(Tensor t, RequireSparseTensor(module, "shape", lookup));
  const std::string name = module + ".shape";
  if (t.numel() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected 2 elements (rows, cols), got shape ", ShapeString(t.shape())));
  }
  std::array<int64_t, 2> s;
  if (t.dtype() == DType::kI64) {
    s = {t.data<int64_t>()[0], t.data<int64_t>()[1]};
  } else if (t.dtype() == DType::kI32) {
    s = {t.data<int32_t>()[0], t.data<int32_t>()[1]};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected I64, got ", std::string(DTypeName(t.dtype()))));
  }
  if (s[0] <= 0 || s[1] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": dimensions must be positive, got [", s[0], ", ", s[1], "]"));
  }
  return s;
}

// Reads <m>.bitmask, checks it is U8/I8 [rows, ceil(cols/8)] and unpacks it.
absl::StatusOr<std::vector<uint8_t>> ReadSparseBitmask(const std::string& module,
                                                       const TensorLookup& lookup, int64_t rows,
                                                       int64_t cols) {
  ASSIGN_OR_RETURN(Tensor t, RequireSparseTensor(module, "bitmask", lookup));
  const std::string name = module + ".bitmask";
  const int64_t line = (cols + 7) / 8;
  if (t.dtype() != DType::kU8 && t.dtype() != DType::kI8) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected U8, got ", std::string(DTypeName(t.dtype()))));
  }
  if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != line) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected shape [", rows, ", ", line,
                                                   "] for a [", rows, ", ", cols, "] weight, got ",
                                                   ShapeString(t.shape())));
  }
  const auto* bits = static_cast<const uint8_t*>(t.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      keep[r * cols + c] = (bits[r * line + c / 8] >> (c % 8)) & 1;
    }
  }
  return keep;
}

// Scatters `values` (numel = number of kept positions) into a zero tensor
// of `shape` at the kept positions, in row-major order, then converts.
Tensor ScatterKept(const Tensor& values, const std::vector<uint8_t>& keep, const Shape& shape,
                   DType dtype) {
  Tensor dense = Tensor::Zeros(values.dtype(), shape);
  const size_t eb = DTypeBytes(values.dtype(), 1);
  const auto* src = static_cast<const uint8_t*>(values.raw());
  auto* dst = static_cast<uint8_t*>(dense.mutable_raw());
  size_t k = 0;
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i]) std::memcpy(dst + i * eb, src + (k++) * eb, eb);
  }
  return dense.dtype() == dtype ? dense : dense.To(dtype);
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparseBitmask(
    const std::string& module, const Tensor& dense_weight) {
  RETURN_IF_ERROR(CheckDenseForSparse(module, dense_weight));
  const int64_t rows = dense_weight.dim(0), cols = dense_weight.dim(1);
  const size_t eb = DTypeBytes(dense_weight.dtype(), 1);
  const auto* data = static_cast<const uint8_t*>(dense_weight.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  Tensor row_offsets = Tensor::Zeros(DType::kI64, {rows});
  int64_t nnz = 0;
  for (int64_t r = 0; r < rows; ++r) {
    row_offsets.mutable_data<int64_t>()[r] = nnz;
    for (int64_t c = 0; c < cols; ++c) {
      const bool nonzero = !IsZeroAt(data, eb, r * cols + c);
      keep[r * cols + c] = nonzero;
      nnz += nonzero;
    }
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  Tensor values = Tensor::Zeros(dense_weight.dtype(), {nnz});
  GatherKept(dense_weight, keep, &values);
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(module + ".shape", std::move(shape));
  out.emplace_back(module + ".compressed", std::move(values));
  out.emplace_back(module + ".bitmask", PackBits(keep, rows, cols));
  out.emplace_back(module + ".row_offsets", std::move(row_offsets));
  return out;
}

absl::StatusOr<Tensor> UnpackSparseBitmask(const std::string& module, const TensorLookup& lookup,
                                           DType dtype) {
  ASSIGN_OR_RETURN(auto shape, ReadSparseShape(module, lookup));
  const int64_t rows = shape[0], cols = shape[1];
  ASSIGN_OR_RETURN(std::vector<uint8_t> keep, ReadSparseBitmask(module, lookup, rows, cols));
  ASSIGN_OR_RETURN(Tensor values, RequireSparseTensor(module, "compressed", lookup));
  if (!IsSparseValueType(values.dtype()) || values.rank() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".compressed: expected a 1-D F32/F16/BF16/F8_E4M3 tensor, got ",
                     std::string(DTypeName(values.dtype())), " ", ShapeString(values.shape())));
  }
  int64_t set = 0;
  for (uint8_t k : keep) set += k;
  if (set != values.numel()) {
    return absl::InvalidArgumentError(absl::StrCat(module, ".compressed: has ", values.numel(),
                                                   " values but ", module, ".bitmask marks ", set,
                                                   " nonzeros"));
  }
  ASSIGN_OR_RETURN(Tensor offsets, RequireSparseTensor(module, "row_offsets", lookup));
  if (offsets.dtype() != DType::kI64 || offsets.numel() != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".row_offsets: expected I64 [", rows, "], got ",
                     std::string(DTypeName(offsets.dtype())), " ", ShapeString(offsets.shape())));
  }
  int64_t start = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (offsets.data<int64_t>()[r] != start) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".row_offsets[", r, "] = ", offsets.data<int64_t>()[r],
                       " but the bitmask puts row ", r, " at ", start));
    }
    for (int64_t c = 0; c < cols; ++c) start += keep[r * cols + c];
  }
  return ScatterKept(values, keep, {rows, cols}, dtype);
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> PackSparse24Bitmask(
    const std::string& module, const Tensor& dense_weight) {
  RETURN_IF_ERROR(CheckDenseForSparse(module, dense_weight));
  const int64_t rows = dense_weight.dim(0), cols = dense_weight.dim(1);
  if (cols % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ".weight: sparse-24-bitmask needs columns a multiple of 4, got ",
                     ShapeString(dense_weight.shape())));
  }
  const size_t eb = DTypeBytes(dense_weight.dtype(), 1);
  const auto* data = static_cast<const uint8_t*>(dense_weight.raw());
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols));
  for (int64_t g = 0; g < rows * cols; g += 4) {
    int nonzero = 0;
    for (int j = 0; j < 4; ++j) {
      keep[g + j] = !IsZeroAt(data, eb, g + j);
      nonzero += keep[g + j];
    }
    if (nonzero > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".weight: not 2:4 sparse: row ", g / cols, ", columns ", g % cols,
                       "..", g % cols + 3, " hold ", nonzero, " nonzeros (at most 2 allowed)"));
    }
    for (int j = 0; j < 4 && nonzero < 2; ++j) {
      if (!keep[g + j]) {
        keep[g + j] = 1;
        ++nonzero;
      }
    }
  }
  Tensor shape = Tensor::Zeros(DType::kI64, {2, 1});
  shape.mutable_data<int64_t>()[0] = rows;
  shape.mutable_data<int64_t>()[1] = cols;
  Tensor values = Tensor::Zeros(dense_weight.dtype(), {rows, cols / 2});
  GatherKept(dense_weight, keep, &values);
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(module + ".shape", std::move(shape));
  out.emplace_back(module + ".compressed", std::move(values));
  out.emplace_back(module + ".bitmask", PackBits(keep, rows, cols));
  return out;
}

absl::StatusOr<Tensor> UnpackSparse24Bitmask(const std::string& module, const TensorLookup& lookup,
                                             DType dtype) {
  ASSIGN_OR_RETURN(auto shape, ReadSparseShape(module, lookup));
  const int64_t rows = shape[0], cols = shape[1];
  if (cols % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".shape: sparse-24-bitmask needs columns a multiple of 4, got ", cols));
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> keep, ReadSparseBitmask(module, lookup, rows, cols));
  for (int64_t g = 0; g < rows * cols; g += 4) {
    const int set = keep[g] + keep[g + 1] + keep[g + 2] + keep[g + 3];
    if (set != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(module, ".bitmask: row ", g / cols, ", columns ", g % cols, "..",
                       g % cols + 3, " mark ", set, " values (2:4 needs exactly 2)"));
    }
  }
  ASSIGN_OR_RETURN(Tensor values, RequireSparseTensor(module, "compressed", lookup));
  if (!IsSparseValueType(values.dtype()) || values.numel() != rows * cols / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ".compressed: expected F32/F16/BF16/F8_E4M3 [", rows, ", ", cols / 2, "], got ",
        std::string(DTypeName(values.dtype())), " ", ShapeString(values.shape())));
  }
  return ScatterKept(values, keep, {rows, cols}, dtype);
}

const char* SparseFormatFor(const std::string& structure) {
  return structure == "2:4" ? "sparse-24-bitmask" : "sparse-bitmask";
}

nlohmann::json SparsityConfig(const std::string& structure, double global_sparsity,
                              const std::vector<std::string>& ignore) {
  nlohmann::json s = nlohmann::json::object();
  s["format"] = SparseFormatFor(structure);
  s["global_sparsity"] = global_sparsity;
  s["ignore"] = ignore;
  s["registry_requires_subclass"] = false;
  s["sparsity_structure"] = structure;
  s["targets"] = nlohmann::json::array({"Linear"});
  return s;
}

nlohmann::json SparseQuantizationConfig(const std::string& structure, double global_sparsity,
                                        const std::vector<std::string>& ignore) {
  nlohmann::json q = nlohmann::json::object();
  q["quant_method"] = "compressed-tensors";
  q["sparsity_config"] = SparsityConfig(structure, global_sparsity, ignore);
  q["transform_config"] = nlohmann::json::object();
  q["version"] = kCtSparseVersion;
  return q;
}

}  // namespace retort
