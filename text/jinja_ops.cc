#include "text/jinja_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "text/jinja_pystr.h"

namespace retort::jinja {
namespace {

absl::StatusOr<Value> IntResult(bool overflow, int64_t v) {
  if (overflow) return Error("integer overflow");
  return Value::Int(v);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

absl::Status Error(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Prefixes "line N: " unless the message already names a line.
absl::Status AtLine(const absl::Status& s, int line) {
  if (s.ok() || absl::StartsWith(s.message(), "line ")) return s;
  return absl::Status(s.code(), absl::StrCat("line ", line, ": ", s.message()));
}

std::string UndefinedMessage(const Value& v) {
  return v.as_string().empty() ? std::string("value is undefined") : v.as_string();
}

StepBudget::StepBudget(int64_t max_steps) : max_steps_(max_steps) {}

absl::Status StepBudget::Tick() {
  if (++steps_ > max_steps_) {
    return Error(absl::StrCat("template exceeded ", max_steps_, " evaluation steps"));
  }
  return absl::OkStatus();
}

// Looks up argument `index` / `name` of a call; null when absent.
const Value* Arg(const CallArgs& args, size_t index, const char* name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t index, const char* name,
                                      const char* fn, std::optional<std::string> def) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->is_undefined()) {
    if (def) return *def;
    return Error(absl::StrCat(fn, "() missing argument '", name, "'"));
  }
  if (!v->is_string())
    return Error(absl::StrCat(fn, "() argument '", name, "' must be str, not ", v->TypeName()));
  return v->as_string();
}

absl::StatusOr<int64_t> IntArg(const CallArgs& args, size_t index, const char* name, const char* fn,
                               int64_t def) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->is_undefined() || v->is_none()) return def;
  if (v->is_int() || v->is_bool()) return v->as_int();
  return Error(absl::StrCat(fn, "() argument '", name, "' must be int, not ", v->TypeName()));
}

bool BoolArg(const CallArgs& args, size_t index, const char* name, bool def) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->is_undefined()) return def;
  return v->Truthy();
}

absl::Status CheckValueSize(const Value& v) {
  if (v.is_string() && static_cast<int64_t>(v.as_string().size()) > kMaxStringBytes) {
    return Error(absl::StrCat("string of ", v.as_string().size(), " bytes exceeds the limit of ",
                              kMaxStringBytes));
  }
  if (v.is_list() && static_cast<int64_t>(v.as_list().size()) > kMaxListItems) {
    return Error(absl::StrCat("list of ", v.as_list().size(), " items exceeds the limit of ",
                              kMaxListItems));
  }
  if (v.depth() > kMaxValueDepth) {
    return Error(absl::StrCat("value nested deeper than ", kMaxValueDepth, " levels"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ValueList> Iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return ValueList();
    case Value::Type::kList:
      return v.as_list();
    case Value::Type::kDict: {
      ValueList keys;
      for (const auto& e : v.as_dict().entries) keys.push_back(Value::String(e.first));
      return keys;
    }
    case Value::Type::kString: {
      ValueList chars;
      std::u32string cps = DecodeUtf8Lossy(v.as_string());
      if (static_cast<int64_t>(cps.size()) > kMaxListItems) {
        return Error(absl::StrCat("iterating a string of ", cps.size(),
                                  " characters exceeds the limit of ", kMaxListItems, " items"));
      }
      for (char32_t c : cps) {
        std::string s;
        AppendUtf8(c, &s);
        chars.push_back(Value::String(std::move(s)));
      }
      return chars;
    }
    default:
      return Error(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return 0;
    case Value::Type::kString:
      return CodepointLength(v.as_string());
    case Value::Type::kList:
      return static_cast<int64_t>(v.as_list().size());
    case Value::Type::kDict:
      return static_cast<int64_t>(v.as_dict().entries.size());
    default:
      return Error(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
  switch (obj.type()) {
    case Value::Type::kUndefined:
      return Error(UndefinedMessage(obj));
    case Value::Type::kDict:
    case Value::Type::kNamespace: {
      const Value* v = obj.as_dict().Find(name);
      if (v) return *v;
      return Value::Undefined(absl::StrCat("'", obj.is_dict() ? "dict" : "Namespace",
                                           " object' has no attribute '", name, "'"));
    }
    default:
      return Value::Undefined(
          absl::StrCat("'", obj.TypeName(), " object' has no attribute '", name, "'"));
  }
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  switch (obj.type()) {
    case Value::Type::kUndefined:
      return Error(UndefinedMessage(obj));
    case Value::Type::kDict:
    case Value::Type::kNamespace:
      if (key.is_string()) return GetAttr(obj, key.as_string());
      return Value::Undefined(absl::StrCat("'dict object' has no attribute ", key.Repr()));
    case Value::Type::kList:
    case Value::Type::kString: {
      if (!key.is_int() && !key.is_bool()) {
        if (key.is_string()) return GetAttr(obj, key.as_string());
        return Value::Undefined(
            absl::StrCat("'", obj.TypeName(), " object' has no element ", key.Repr()));
      }
      int64_t i = key.as_int();
      if (obj.is_list()) {
        const ValueList& items = obj.as_list();
        int64_t n = static_cast<int64_t>(items.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) {
          return Value::Undefined(absl::StrCat("'list object' has no element ", key.as_int()));
        }
        return items[static_cast<size_t>(i)];
      }
      std::u32string cps = DecodeUtf8Lossy(obj.as_string());
      int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n)
        return Value::Undefined(absl::StrCat("'str object' has no element ", key.as_int()));
      std::string s;
      AppendUtf8(cps[static_cast<size_t>(i)], &s);
      return Value::String(std::move(s));
    }
    default:
      return Value::Undefined(
          absl::StrCat("'", obj.TypeName(), " object' has no attribute ", key.Repr()));
  }
}

// Follows a dotted attribute path ("function.name", "0") like Jinja's
// attribute= arguments.
absl::StatusOr<Value> AttrPath(const Value& v, const std::string& path) {
  Value cur = v;
  for (const std::string& part : SplitSep(path, ".", -1)) {
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(),
                                                [](char c) { return c >= '0' && c <= '9'; });
    absl::StatusOr<Value> next =
        numeric ? GetItem(cur, Value::Int(std::stoll(part))) : GetItem(cur, Value::String(part));
    if (!next.ok()) return next.status();
    cur = *std::move(next);
  }
  return cur;
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const ValueList& x = a.as_list();
    const ValueList& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined())
    return Error(UndefinedMessage(a.is_undefined() ? a : b));
  return Error(absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '",
                            b.TypeName(), "'"));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::kUndefined:
      return false;
    case Value::Type::kString:
      if (!item.is_string()) {
        return Error(
            absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::kList:
      for (const Value& v : container.as_list()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Value::Type::kDict:
    case Value::Type::kNamespace:
      return item.is_string() && container.as_dict().Find(item.as_string()) != nullptr;
    default:
      return Error(absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<Value> Slice(const Value& obj, const Value& start_v, const Value& stop_v,
                            const Value& step_v) {
  if (obj.is_undefined()) return Error(UndefinedMessage(obj));
  auto to_opt = [](const Value& v, std::optional<int64_t>* out) -> absl::Status {
    if (v.is_undefined() || v.is_none()) return absl::OkStatus();
    if (!v.is_int() && !v.is_bool()) return Error("slice indices must be integers or None");
    *out = v.as_int();
    return absl::OkStatus();
  };
  std::optional<int64_t> start, stop, step_opt;
  if (absl::Status s = to_opt(start_v, &start); !s.ok()) return s;
  if (absl::Status s = to_opt(stop_v, &stop); !s.ok()) return s;
  if (absl::Status s = to_opt(step_v, &step_opt); !s.ok()) return s;
  int64_t step = step_opt.value_or(1);
  if (step == 0) return Error("slice step cannot be zero");
  std::u32string cps;
  int64_t n;
  if (obj.is_list()) {
    n = static_cast<int64_t>(obj.as_list().size());
  } else if (obj.is_string()) {
    cps = DecodeUtf8Lossy(obj.as_string());
    n = static_cast<int64_t>(cps.size());
  } else {
    return Value::Undefined(absl::StrCat("'", obj.TypeName(), "' object is not subscriptable"));
  }
  int64_t lower = step > 0 ? 0 : -1;
  int64_t upper = step > 0 ? n : n - 1;
  auto clamp = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  int64_t b = clamp(start, step > 0 ? lower : upper);
  int64_t e = clamp(stop, step > 0 ? upper : lower);
  std::vector<int64_t> idx;
  // Stepping stops before i + step could overflow (a step near INT64_MAX).
  if (step > 0) {
    for (int64_t i = b; i < e; i += step) {
      idx.push_back(i);
      if (step >= e - i) break;
    }
  } else {
    for (int64_t i = b; i > e; i += step) {
      idx.push_back(i);
      if (step <= e - i) break;
    }
  }
  if (obj.is_list()) {
    ValueList out;
    out.reserve(idx.size());
    for (int64_t i : idx) out.push_back(obj.as_list()[static_cast<size_t>(i)]);
    return Value::List(std::move(out), obj.is_tuple());
  }
  std::u32string out;
  for (int64_t i : idx) out.push_back(cps[static_cast<size_t>(i)]);
  return Value::String(EncodeUtf8(out));
}

absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string sa = a.Str(), sb = b.Str();
    if (static_cast<int64_t>(sa.size() + sb.size()) > kMaxStringBytes) {
      return Error(absl::StrCat("concatenation of ", sa.size() + sb.size(),
                                " bytes exceeds the limit of ", kMaxStringBytes));
    }
    return Value::String(sa + sb);
  }
  if (a.is_undefined()) return Error(UndefinedMessage(a));
  if (b.is_undefined()) return Error(UndefinedMessage(b));
  const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) {
      int64_t r;
      bool overflow = __builtin_add_overflow(a.as_int(), b.as_int(), &r);
      return IntResult(overflow, r);
    }
    if (nums) return Value::Float(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      if (static_cast<int64_t>(a.as_string().size() + b.as_string().size()) > kMaxStringBytes) {
        return Error(
            absl::StrCat("concatenation exceeds the limit of ", kMaxStringBytes, " bytes"));
      }
      return Value::String(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      if (static_cast<int64_t>(a.as_list().size() + b.as_list().size()) > kMaxListItems) {
        return Error(absl::StrCat("concatenation exceeds the limit of ", kMaxListItems, " items"));
      }
      ValueList out = a.as_list();
      out.insert(out.end(), b.as_list().begin(), b.as_list().end());
      return Value::List(std::move(out), a.is_tuple());
    }
    if (a.is_string()) {
      return Error(absl::StrCat("can only concatenate str (not \"", b.TypeName(), "\") to str"));
    }
  } else if (op == "-") {
    if (ints) {
      int64_t r;
      bool overflow = __builtin_sub_overflow(a.as_int(), b.as_int(), &r);
      return IntResult(overflow, r);
    }
    if (nums) return Value::Float(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (ints) {
      int64_t r;
      bool overflow = __builtin_mul_overflow(a.as_int(), b.as_int(), &r);
      return IntResult(overflow, r);
    }
    if (nums) return Value::Float(a.as_double() * b.as_double());
    const Value* seq =
        (a.is_string() || a.is_list()) ? &a : ((b.is_string() || b.is_list()) ? &b : nullptr);
    const Value* count = seq == &a ? &b : &a;
    if (seq && (count->is_int() || count->is_bool())) {
      int64_t times = std::max<int64_t>(0, count->as_int());
      int64_t unit = seq->is_string() ? static_cast<int64_t>(seq->as_string().size())
                                      : static_cast<int64_t>(seq->as_list().size());
      const int64_t limit = seq->is_string() ? kMaxStringBytes : kMaxListItems;
      if (unit > 0 && times > limit / unit) {
        return Error(absl::StrCat("repetition result exceeds the limit of ", limit,
                                  seq->is_string() ? " bytes" : " items"));
      }
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += seq->as_string();
        return Value::String(std::move(out));
      }
      ValueList out;
      for (int64_t i = 0; i < times; ++i)
        out.insert(out.end(), seq->as_list().begin(), seq->as_list().end());
      return Value::List(std::move(out), seq->is_tuple());
    }
  } else if (op == "/") {
    if (nums) {
      if (b.as_double() == 0) return Error("division by zero");
      return Value::Float(a.as_double() / b.as_double());
    }
  } else if (op == "//") {
    if (ints) {
      if (b.as_int() == 0) return Error("integer division or modulo by zero");
      if (a.as_int() == INT64_MIN && b.as_int() == -1) return Error("integer overflow");
      return Value::Int(FloorDiv(a.as_int(), b.as_int()));
    }
    if (nums) {
      if (b.as_double() == 0) return Error("float floor division by zero");
      return Value::Float(std::floor(a.as_double() / b.as_double()));
    }
  } else if (op == "%") {
    if (a.is_string()) return PercentFormat(a.as_string(), b);
    if (ints) {
      if (b.as_int() == 0) return Error("integer division or modulo by zero");
      if (b.as_int() == -1) return Value::Int(0);
      int64_t r = a.as_int() % b.as_int();
      if (r != 0 && ((r < 0) != (b.as_int() < 0))) r += b.as_int();
      return Value::Int(r);
    }
    if (nums) {
      double x = a.as_double(), y = b.as_double();
      if (y == 0) return Error("float modulo");
      double r = std::fmod(x, y);
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      return Value::Float(r);
    }
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t r = 1, base = a.as_int();
      for (int64_t e = b.as_int(); e > 0; --e) {
        if (__builtin_mul_overflow(r, base, &r)) return Error("integer overflow");
        if (r == 0 || r == 1) break;
      }
      return Value::Int(r);
    }
    if (nums) return Value::Float(std::pow(a.as_double(), b.as_double()));
  }
  return Error(absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '",
                            b.TypeName(), "'"));
}

// Python's "fmt % args" for the conversions templates use (%s %r %d %i %f %%).
absl::StatusOr<Value> PercentFormat(const std::string& fmt, const Value& args_value) {
  ValueList args = args_value.is_tuple() ? args_value.as_list() : ValueList{args_value};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) return Error("incomplete format");
    std::string spec;
    while (i < fmt.size() && std::string("0123456789.-+ #").find(fmt[i]) != std::string::npos)
      spec += fmt[i++];
    if (i >= fmt.size()) return Error("incomplete format");
    char conv = fmt[i];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= args.size()) return Error("not enough arguments for format string");
    const Value& v = args[next++];
    char buf[512];
    switch (conv) {
      case 's':
        out += v.Str();
        break;
      case 'r':
        out += v.Repr();
        break;
      case 'd':
      case 'i':
        if (!v.is_number())
          return Error(absl::StrCat("%d format: a real number is required, not ", v.TypeName()));
        std::snprintf(buf, sizeof(buf), ("%" + spec + "lld").c_str(),
                      static_cast<long long>(v.is_float() ? static_cast<int64_t>(v.as_double())
                                                          : v.as_int()));
        out += buf;
        break;
      case 'f':
      case 'e':
      case 'g':
        if (!v.is_number()) return Error(absl::StrCat("must be real number, not ", v.TypeName()));
        std::snprintf(buf, sizeof(buf), ("%" + spec + conv).c_str(), v.as_double());
        out += buf;
        break;
      default:
        return Error(absl::StrCat("unsupported format character '", std::string(1, conv), "'"));
    }
  }
  if (next < args.size() && args_value.is_tuple())
    return Error("not all arguments converted during string formatting");
  return Value::String(std::move(out));
}

absl::StatusOr<bool> Compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return a.Equals(b);
  if (op == "!=") return !a.Equals(b);
  if (op == "<") return Less(a, b);
  if (op == ">") return Less(b, a);
  if (op == "<=") {
    absl::StatusOr<bool> r = Less(b, a);
    if (!r.ok()) return r;
    return !*r;
  }
  if (op == ">=") {
    absl::StatusOr<bool> r = Less(a, b);
    if (!r.ok()) return r;
    return !*r;
  }
  if (op == "in") return Contains(b, a);
  if (op == "not in") {
    absl::StatusOr<bool> r = Contains(b, a);
    if (!r.ok()) return r;
    return !*r;
  }
  return Error(absl::StrCat("unknown comparison ", op));
}

}  // namespace retort::jinja
