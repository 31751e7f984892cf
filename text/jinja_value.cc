// Value: Python-flavoured str()/repr()/==, JSON conversion and json.dumps.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "text/jinja.h"
#include "text/jinja_ops.h"
#include "text/jinja_pystr.h"

namespace retort::jinja {
namespace {

const std::string& EmptyString() {
  static const std::string* empty = new std::string();
  return *empty;
}
const ValueList& EmptyList() {
  static const ValueList* empty = new ValueList();
  return *empty;
}
ValueDict& EmptyDict() {
  static ValueDict* empty = new ValueDict();
  return *empty;
}

template <typename J>
Value FromJsonImpl(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value::Bool(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::Int(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::Float(static_cast<double>(u));
      return Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::Float(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::String(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(FromJsonImpl(item));
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      ValueDict dict;
      dict.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        dict.entries.emplace_back(it.key(), FromJsonImpl(it.value()));
      }
      return Value::Dict(std::move(dict));
    }
    default:
      return Value::None();
  }
}

void AppendJsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  std::u32string cps = DecodeUtf8Lossy(s);
  char buf[16];
  for (char32_t c : cps) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7f)) {
          if (c >= 0x10000) {
            char32_t v = c - 0x10000;
            std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x",
                          static_cast<unsigned>(0xd800 + (v >> 10)),
                          static_cast<unsigned>(0xdc00 + (v & 0x3ff)));
          } else {
            std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          }
          *out += buf;
        } else {
          AppendUtf8(c, out);
        }
    }
  }
  out->push_back('"');
}

struct JsonWriter {
  std::string indent;  // empty: no newlines
  bool pretty = false;
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_sep;
  std::string key_sep;
  int depth = 0;

  absl::Status Write(const Value& v, int level, std::string* out) {
    if (level > 512) return absl::InvalidArgumentError("tojson: value nested too deeply");
    switch (v.type()) {
      case Value::Type::kNone:
        *out += "null";
        return absl::OkStatus();
      case Value::Type::kBool:
        *out += v.as_bool() ? "true" : "false";
        return absl::OkStatus();
      case Value::Type::kInt:
        *out += std::to_string(v.as_int());
        return absl::OkStatus();
      case Value::Type::kFloat: {
        double d = v.as_double();
        if (std::isnan(d)) {
          *out += "NaN";
        } else if (std::isinf(d)) {
          *out += d > 0 ? "Infinity" : "-Infinity";
        } else {
          *out += PythonFloatRepr(d);
        }
        return absl::OkStatus();
      }
      case Value::Type::kString:
        AppendJsonString(v.as_string(), ensure_ascii, out);
        return absl::OkStatus();
      case Value::Type::kList: {
        const ValueList& items = v.as_list();
        if (items.empty()) {
          *out += "[]";
          return absl::OkStatus();
        }
        out->push_back('[');
        for (size_t i = 0; i < items.size(); ++i) {
          if (i > 0) *out += item_sep;
          Newline(level + 1, out);
          if (absl::Status s = Write(items[i], level + 1, out); !s.ok()) return s;
        }
        Newline(level, out);
        out->push_back(']');
        return absl::OkStatus();
      }
      case Value::Type::kDict:
      case Value::Type::kNamespace: {
        if (v.is_namespace()) {
          return absl::InvalidArgumentError("Object of type Namespace is not JSON serializable");
        }
        const ValueDict& dict = v.as_dict();
        if (dict.entries.empty()) {
          *out += "{}";
          return absl::OkStatus();
        }
        std::vector<const std::pair<std::string, Value>*> entries;
        for (const auto& e : dict.entries) entries.push_back(&e);
        if (sort_keys) {
          std::stable_sort(entries.begin(), entries.end(),
                           [](const auto* a, const auto* b) { return a->first < b->first; });
        }
        out->push_back('{');
        for (size_t i = 0; i < entries.size(); ++i) {
          if (i > 0) *out += item_sep;
          Newline(level + 1, out);
          AppendJsonString(entries[i]->first, ensure_ascii, out);
          *out += key_sep;
          if (absl::Status s = Write(entries[i]->second, level + 1, out); !s.ok()) return s;
        }
        Newline(level, out);
        out->push_back('}');
        return absl::OkStatus();
      }
      case Value::Type::kUndefined:
        return absl::InvalidArgumentError("Object of type Undefined is not JSON serializable");
      case Value::Type::kCallable:
        return absl::InvalidArgumentError("Object of type function is not JSON serializable");
    }
    return absl::OkStatus();
  }

  void Newline(int level, std::string* out) const {
    if (!pretty) return;
    out->push_back('\n');
    for (int i = 0; i < level; ++i) *out += indent;
  }
};

}  // namespace

// ---- Value ----

Value Value::Undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.str_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::None() {
  Value v;
  v.type_ = Type::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.type_ = Type::kInt;
  v.int_ = i;
  return v;
}
Value Value::Float(double f) {
  Value v;
  v.type_ = Type::kFloat;
  v.float_ = f;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.str_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::List(ValueList items, bool tuple) {
  Value v;
  v.type_ = Type::kList;
  v.tuple_ = tuple;
  v.list_ = std::make_shared<const ValueList>(std::move(items));
  v.depth_ = 1;
  for (const Value& item : *v.list_) v.depth_ = std::max(v.depth_, item.depth_ + 1);
  return v;
}
Value Value::Dict(ValueDict dict) {
  Value v;
  v.type_ = Type::kDict;
  v.dict_ = std::make_shared<ValueDict>(std::move(dict));
  v.depth_ = 1;
  for (const auto& entry : v.dict_->entries) v.depth_ = std::max(v.depth_, entry.second.depth_ + 1);
  return v;
}
Value Value::Namespace(ValueDict dict) {
  Value v;
  v.type_ = Type::kNamespace;
  v.dict_ = std::make_shared<ValueDict>(std::move(dict));
  v.depth_ = 1;
  return v;
}
Value Value::Function(std::shared_ptr<const Callable> fn) {
  Value v;
  v.type_ = Type::kCallable;
  v.fn_ = std::move(fn);
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j) { return FromJsonImpl(j); }
Value Value::FromJson(const nlohmann::json& j) { return FromJsonImpl(j); }

double Value::as_double() const {
  switch (type_) {
    case Type::kFloat:
      return float_;
    case Type::kInt:
      return static_cast<double>(int_);
    case Type::kBool:
      return bool_ ? 1.0 : 0.0;
    default:
      return 0.0;
  }
}
const std::string& Value::as_string() const { return str_ ? *str_ : EmptyString(); }
const ValueList& Value::as_list() const { return list_ ? *list_ : EmptyList(); }
const ValueDict& Value::as_dict() const { return dict_ ? *dict_ : EmptyDict(); }
ValueDict& Value::mutable_namespace() const { return dict_ ? *dict_ : EmptyDict(); }
const Callable& Value::as_callable() const { return *fn_; }

bool Value::Truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone:
      return false;
    case Type::kBool:
      return bool_;
    case Type::kInt:
      return int_ != 0;
    case Type::kFloat:
      return float_ != 0.0;
    case Type::kString:
      return !as_string().empty();
    case Type::kList:
      return !as_list().empty();
    case Type::kDict:
      return !as_dict().entries.empty();
    case Type::kNamespace:
    case Type::kCallable:
      return true;
  }
  return false;
}

std::string Value::Str() const {
  switch (type_) {
    case Type::kUndefined:
      return "";
    case Type::kString:
      return as_string();
    default:
      return Repr();
  }
}

namespace {

// Python's repr of `v` appended to `out`. A namespace met again inside itself
// prints as <Namespace {...}>, as jinja2 prints it (Python marks a dict met
// again inside itself so); values
// nested deeper than kMaxValueDepth (only namespaces can grow past it: the
// interpreter refuses deeper lists and dicts) print as "...".
void AppendRepr(const Value& v, int depth, std::vector<const ValueDict*>* open_namespaces,
                std::string* out) {
  if (depth > kMaxValueDepth) {
    *out += "...";
    return;
  }
  switch (v.type()) {
    case Value::Type::kList: {
      const bool tuple = v.is_tuple();
      *out += tuple ? "(" : "[";
      const ValueList& items = v.as_list();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += ", ";
        AppendRepr(items[i], depth + 1, open_namespaces, out);
      }
      if (tuple && items.size() == 1) *out += ",";
      *out += tuple ? ")" : "]";
      return;
    }
    case Value::Type::kDict:
    case Value::Type::kNamespace: {
      const bool ns = v.is_namespace();
      const ValueDict* dict = &v.as_dict();
      if (ns && std::find(open_namespaces->begin(), open_namespaces->end(), dict) !=
                    open_namespaces->end()) {
        *out += "<Namespace {...}>";
        return;
      }
      if (ns) open_namespaces->push_back(dict);
      *out += ns ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, x] : dict->entries) {
        if (!first) *out += ", ";
        first = false;
        *out += ReprString(k);
        *out += ": ";
        AppendRepr(x, depth + 1, open_namespaces, out);
      }
      *out += ns ? "}>" : "}";
      if (ns) open_namespaces->pop_back();
      return;
    }
    default:
      *out += v.Repr();
  }
}

}  // namespace

std::string Value::Repr() const {
  switch (type_) {
    case Type::kUndefined:
      return "";
    case Type::kNone:
      return "None";
    case Type::kBool:
      return bool_ ? "True" : "False";
    case Type::kInt:
      return std::to_string(int_);
    case Type::kFloat:
      return PythonFloatRepr(float_);
    case Type::kString:
      return ReprString(as_string());
    case Type::kList:
    case Type::kDict:
    case Type::kNamespace: {
      std::string out;
      std::vector<const ValueDict*> open_namespaces;
      AppendRepr(*this, 0, &open_namespaces, &out);
      return out;
    }
    case Type::kCallable:
      return absl::StrCat("<function ", fn_ ? fn_->name : std::string(), ">");
  }
  return "";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (type_ == Type::kFloat || other.type_ == Type::kFloat)
      return as_double() == other.as_double();
    return as_int() == other.as_int();
  }
  if (type_ != other.type_) return false;
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone:
      return true;
    case Type::kString:
      return as_string() == other.as_string();
    case Type::kList: {
      const ValueList& a = as_list();
      const ValueList& b = other.as_list();
      if (a.size() != b.size() || tuple_ != other.tuple_) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Type::kDict: {
      const ValueDict& a = as_dict();
      const ValueDict& b = other.as_dict();
      if (a.entries.size() != b.entries.size()) return false;
      for (const auto& [k, v] : a.entries) {
        const Value* w = b.Find(k);
        if (w == nullptr || !v.Equals(*w)) return false;
      }
      return true;
    }
    case Type::kNamespace:
      return dict_ == other.dict_;
    case Type::kCallable:
      return fn_ == other.fn_;
    default:
      return false;
  }
}

std::string Value::TypeName() const {
  switch (type_) {
    case Type::kUndefined:
      return "Undefined";
    case Type::kNone:
      return "NoneType";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "int";
    case Type::kFloat:
      return "float";
    case Type::kString:
      return "str";
    case Type::kList:
      return tuple_ ? "tuple" : "list";
    case Type::kDict:
      return "dict";
    case Type::kNamespace:
      return "Namespace";
    case Type::kCallable:
      return "function";
  }
  return "object";
}

const Value* ValueDict::Find(const std::string& key) const {
  for (const auto& e : entries) {
    if (e.first == key) return &e.second;
  }
  return nullptr;
}

void ValueDict::Set(const std::string& key, Value value) {
  for (auto& e : entries) {
    if (e.first == key) {
      e.second = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

std::string PythonFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout: fixed notation when the
  // decimal exponent is in [-4, 16), scientific otherwise.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(0, e_pos);
  int exp10 = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  int decpt = exp10 + 1;  // position of the decimal point relative to digits
  std::string out = negative ? "-" : "";
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-decpt), '0');
      out += digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits;
      out.append(static_cast<size_t>(decpt) - digits.size(), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt));
      out += '.';
      out += digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    out += ebuf;
  }
  return out;
}

absl::StatusOr<std::string> ToJson(const Value& value, int indent, bool ensure_ascii,
                                   bool sort_keys, const std::optional<std::string>& item_separator,
                                   const std::string& key_separator,
                                   const std::string& indent_str) {
  JsonWriter w;
  w.ensure_ascii = ensure_ascii;
  w.sort_keys = sort_keys;
  if (!indent_str.empty()) {
    w.pretty = true;
    w.indent = indent_str;
  } else if (indent >= 0) {
    w.pretty = true;
    w.indent = std::string(static_cast<size_t>(indent), ' ');
  }
  w.item_sep = item_separator ? *item_separator : (w.pretty ? "," : ", ");
  w.key_sep = key_separator;
  std::string out;
  if (absl::Status s = w.Write(value, 0, &out); !s.ok()) return s;
  return out;
}

}  // namespace retort::jinja
