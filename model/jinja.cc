// The Jinja interpreter: walks the tree from jinja_parser.cc over Values.
#include "model/jinja.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/jinja_internal.h"

namespace retort::jinja {

namespace {

// Bound on nested Exec/Eval calls (blocks + expression height + macro
// recursion), keeping the C++ stack well under 1 MB even in debug builds.
constexpr int kMaxEvalDepth = 600;
constexpr int64_t kMaxRange = 10'000'000;

absl::Status Error(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Prefixes "line N: " unless the message already names a line.
absl::Status AtLine(const absl::Status& s, int line) {
  if (s.ok() || absl::StartsWith(s.message(), "line ")) return s;
  return absl::Status(s.code(), absl::StrCat("line ", line, ": ", s.message()));
}

std::string UndefinedMessage(const Value& v) {
  return v.as_string().empty() ? std::string("value is undefined") : v.as_string();
}

// ---- Python string helpers ----

bool IsPyWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

// Simple (one-to-one) Unicode case mapping for the scripts chat text meets
// most: Latin (Basic, Latin-1, Extended-A, Extended Additional), Greek,
// Cyrillic, Armenian and fullwidth Latin. Other characters are unchanged.
// Python's special case of 'ß'.upper() == 'SS' is handled in Upper().
char32_t ToUpper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (c == 0xb5) return 0x39c;
  if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 32;
  if (c == 0xff) return 0x178;
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return (c & 1) ? c - 1 : c;
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
  if (c == 0x131) return 'I';
  if (c == 0x17f) return 'S';
  if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) return c - 32;
  if (c == 0x3c2) return 0x3a3;
  if (c == 0x3ac) return 0x386;
  if (c >= 0x3ad && c <= 0x3af) return c - 37;
  if (c == 0x3cc) return 0x38c;
  if (c == 0x3cd || c == 0x3ce) return c - 63;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)) return (c & 1) ? c - 1 : c;
  if (c >= 0x561 && c <= 0x586) return c - 48;
  if ((c >= 0x1e00 && c <= 0x1e95) || (c >= 0x1ea0 && c <= 0x1eff)) return (c & 1) ? c - 1 : c;
  if (c >= 0xff41 && c <= 0xff5a) return c - 32;
  return c;
}

char32_t ToLower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if ((c >= 0xc0 && c <= 0xde && c != 0xd7)) return c + 32;
  if (c == 0x178) return 0xff;
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return (c & 1) ? c : c + 1;
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 37;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 63;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)) return (c & 1) ? c : c + 1;
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if ((c >= 0x1e00 && c <= 0x1e95) || (c >= 0x1ea0 && c <= 0x1eff)) return (c & 1) ? c : c + 1;
  if (c >= 0xff21 && c <= 0xff3a) return c + 32;
  return c;
}

bool IsCased(char32_t c) { return ToUpper(c) != c || ToLower(c) != c || c == 0xdf; }
bool IsAlpha(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0xc0 && c != 0xd7 && c != 0xf7);
}
bool IsDigit(char32_t c) { return c >= '0' && c <= '9'; }

std::string Upper(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  if (IsAscii(s)) {
    for (char c : s) out.push_back((c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c);
    return out;
  }
  for (char32_t c : DecodeUtf8Lossy(s)) {
    if (c == 0xdf) {
      out += "SS";
    } else {
      AppendUtf8(ToUpper(c), &out);
    }
  }
  return out;
}

std::string Lower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  if (IsAscii(s)) {
    for (char c : s) out.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c);
    return out;
  }
  for (char32_t c : DecodeUtf8Lossy(s)) AppendUtf8(ToLower(c), &out);
  return out;
}

// Python str.strip / lstrip / rstrip. `chars` null: whitespace.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::u32string cps = DecodeUtf8Lossy(s);
  std::u32string set;
  if (chars) set = DecodeUtf8Lossy(*chars);
  auto strip_me = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : IsPyWhitespace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_me(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_me(cps[e - 1])) --e;
  }
  return EncodeUtf8(cps.substr(b, e - b));
}

std::vector<std::string> SplitWhitespace(const std::string& s, int64_t maxsplit) {
  std::u32string cps = DecodeUtf8Lossy(s);
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = cps.size();
  while (true) {
    while (i < n && IsPyWhitespace(cps[i])) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      size_t e = n;
      while (e > i && IsPyWhitespace(cps[e - 1])) --e;
      out.push_back(EncodeUtf8(cps.substr(i, e - i)));
      break;
    }
    size_t j = i;
    while (j < n && !IsPyWhitespace(cps[j])) ++j;
    out.push_back(EncodeUtf8(cps.substr(i, j - i)));
    i = j;
  }
  return out;
}

std::vector<std::string> SplitSep(const std::string& s, const std::string& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::vector<std::string> RSplitSep(const std::string& s, const std::string& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t p = s.rfind(sep, end - sep.size());
    if (p == std::string::npos) break;
    out.push_back(s.substr(p + sep.size(), end - p - sep.size()));
    end = p;
  }
  out.push_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  if (from.empty()) {
    std::u32string cps = DecodeUtf8Lossy(s);
    std::string out;
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) AppendUtf8(cps[i], &out);
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t p = s.find(from, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += to;
    start = p + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string Capitalize(const std::string& s) {
  std::u32string cps = DecodeUtf8Lossy(s);
  for (size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? ToUpper(cps[i]) : ToLower(cps[i]);
  return EncodeUtf8(cps);
}

std::string Title(const std::string& s) {
  std::u32string cps = DecodeUtf8Lossy(s);
  bool prev_cased = false;
  for (char32_t& c : cps) {
    bool cased = IsCased(c);
    c = cased ? (prev_cased ? ToLower(c) : ToUpper(c)) : c;
    prev_cased = cased;
  }
  return EncodeUtf8(cps);
}

int64_t CodepointLength(const std::string& s) { return static_cast<int64_t>(Utf8Length(s)); }

// ---- argument helpers ----

// Looks up argument `index` / `name` of a call; null when absent.
const Value* Arg(const CallArgs& args, size_t index, const char* name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t index, const char* name,
                                      const char* fn,
                                      std::optional<std::string> def = std::nullopt) {
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

// ---- generic value operations ----

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
  if (step > 0) {
    for (int64_t i = b; i < e; i += step) idx.push_back(i);
  } else {
    for (int64_t i = b; i > e; i += step) idx.push_back(i);
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

absl::StatusOr<Value> IntResult(bool overflow, int64_t v) {
  if (overflow) return Error("integer overflow");
  return Value::Int(v);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

absl::StatusOr<Value> PercentFormat(const std::string& fmt, const Value& args_value);

absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value::String(a.Str() + b.Str());
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
    if (a.is_string() && b.is_string()) return Value::String(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
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
      if (unit > 0 && times > (int64_t{1} << 28) / unit)
        return Error("repetition result too large");
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

// Python int() of a string, as Jinja's int filter tries it.
std::optional<int64_t> ParseInt(const std::string& text, int base) {
  std::string s = Strip(text, nullptr, true, true);
  std::string digits;
  for (char c : s) {
    if (c != '_') digits.push_back(c);
  }
  if (digits.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno != 0 || end != digits.c_str() + digits.size()) return std::nullopt;
  return v;
}

std::optional<double> ParseFloat(const std::string& text) {
  std::string s = Strip(text, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

// ---- the interpreter ----

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options) : options_(options) {}

  absl::StatusOr<std::string> Run(const Program& program, const ValueDict& context) {
    frames_.push_back(std::make_shared<Frame>(Globals()));
    auto root = std::make_shared<Frame>();
    for (const auto& [k, v] : context.entries) (*root)[k] = v;
    frames_.push_back(std::move(root));
    if (absl::Status s = ExecBody(program.body); !s.ok()) return s;
    return std::move(out_);
  }

  absl::StatusOr<Value> CallValue(const Value& fn, const CallArgs& args, int line) {
    if (fn.is_undefined()) return AtLine(Error(UndefinedMessage(fn)), line);
    if (!fn.is_callable())
      return AtLine(Error(absl::StrCat("'", fn.TypeName(), "' object is not callable")), line);
    if (absl::Status s = Tick(); !s.ok()) return s;
    absl::StatusOr<Value> r = fn.as_callable().fn(*this, args);
    if (!r.ok()) return AtLine(r.status(), line);
    return r;
  }

  const RenderOptions& options() const { return options_; }

 private:
  using Frame = std::unordered_map<std::string, Value>;
  enum class Pending { kNone, kBreak, kContinue };

  // Keeps the recursion of Eval/Exec bounded whatever the template does.
  struct DepthGuard {
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }
    int* depth_;
  };

  static Value MakeFunction(
      std::string name, std::function<absl::StatusOr<Value>(Interpreter&, const CallArgs&)> fn) {
    auto c = std::make_shared<Callable>();
    c->name = std::move(name);
    c->fn = std::move(fn);
    return Value::Function(std::move(c));
  }

  static Frame Globals() {
    Frame g;
    g["range"] =
        MakeFunction("range", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          std::vector<int64_t> nums;
          for (const Value& v : args.positional) {
            if (!v.is_int() && !v.is_bool())
              return Error(absl::StrCat("range() integer expected, got ", v.TypeName()));
            nums.push_back(v.as_int());
          }
          if (nums.empty() || nums.size() > 3) return Error("range expected 1 to 3 arguments");
          int64_t start = nums.size() == 1 ? 0 : nums[0];
          int64_t stop = nums.size() == 1 ? nums[0] : nums[1];
          int64_t step = nums.size() == 3 ? nums[2] : 1;
          if (step == 0) return Error("range() arg 3 must not be zero");
          ValueList out;
          for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            if (static_cast<int64_t>(out.size()) >= kMaxRange) return Error("range too large");
            out.push_back(Value::Int(i));
          }
          return Value::List(std::move(out));
        });
    g["namespace"] =
        MakeFunction("namespace", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          ValueDict d;
          for (const Value& v : args.positional) {
            if (!v.is_dict()) return Error("namespace() positional argument must be a dict");
            for (const auto& [k, x] : v.as_dict().entries) d.Set(k, x);
          }
          for (const auto& [k, v] : args.keyword) d.Set(k, v);
          for (const auto& [k, v] : d.entries) {
            if (!k.empty() && k[0] == '_') {
              return Error(
                  absl::StrCat("chat templates cannot store underscore-prefixed attributes on a "
                               "namespace, got '",
                               k, "'"));
            }
          }
          return Value::Namespace(std::move(d));
        });
    g["dict"] =
        MakeFunction("dict", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          ValueDict d;
          for (const Value& v : args.positional) {
            if (!v.is_dict()) return Error("dict() positional argument must be a dict");
            for (const auto& [k, x] : v.as_dict().entries) d.Set(k, x);
          }
          for (const auto& [k, v] : args.keyword) d.Set(k, v);
          return Value::Dict(std::move(d));
        });
    g["raise_exception"] = MakeFunction(
        "raise_exception", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          std::string msg = args.positional.empty() ? std::string() : args.positional[0].Str();
          return Error(absl::StrCat("raise_exception: ", msg));
        });
    g["strftime_now"] = MakeFunction(
        "strftime_now", [](Interpreter& in, const CallArgs& args) -> absl::StatusOr<Value> {
          absl::StatusOr<std::string> fmt = StringArg(args, 0, "format", "strftime_now");
          if (!fmt.ok()) return fmt.status();
          std::tm tm{};
          if (in.options().fixed_now) {
            tm = *in.options().fixed_now;
          } else {
            std::time_t t = std::time(nullptr);
            localtime_r(&t, &tm);
          }
          if (fmt->empty()) return Value::String("");
          std::string buf(256, '\0');
          for (int attempt = 0; attempt < 6; ++attempt) {
            size_t n = std::strftime(buf.data(), buf.size(), fmt->c_str(), &tm);
            if (n > 0) return Value::String(buf.substr(0, n));
            buf.resize(buf.size() * 4);
          }
          return Value::String("");
        });
    return g;
  }

  absl::Status Tick() {
    if (++steps_ > options_.max_steps) {
      return Error(absl::StrCat("template exceeded ", options_.max_steps, " evaluation steps"));
    }
    return absl::OkStatus();
  }

  absl::Status Emit(const std::string& s) {
    out_ += s;
    if (out_.size() > options_.max_output_bytes) {
      return Error(absl::StrCat("template output exceeded ", options_.max_output_bytes, " bytes"));
    }
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto f = (*it)->find(name);
      if (f != (*it)->end()) return f->second;
    }
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  void SetVar(const std::string& name, Value v) { (*frames_.back())[name] = std::move(v); }

  absl::Status Assign(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) {
      SetVar(targets[0], v);
      return absl::OkStatus();
    }
    absl::StatusOr<ValueList> items = Iterate(v);
    if (!items.ok())
      return AtLine(Error(absl::StrCat("cannot unpack non-iterable ", v.TypeName())), line);
    if (items->size() != targets.size()) {
      return AtLine(Error(absl::StrCat(items->size() < targets.size() ? "not enough" : "too many",
                                       " values to unpack (expected ", targets.size(), ", got ",
                                       items->size(), ")")),
                    line);
    }
    for (size_t i = 0; i < targets.size(); ++i) SetVar(targets[i], (*items)[i]);
    return absl::OkStatus();
  }

  // ---- statements ----

  absl::Status ExecBody(const Body& body) {
    for (const auto& node : body) {
      if (absl::Status s = Exec(*node); !s.ok()) return s;
      if (pending_ != Pending::kNone) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Capture(const Body& body) {
    std::string saved;
    saved.swap(out_);
    absl::Status s = ExecBody(body);
    std::string captured;
    captured.swap(out_);
    out_.swap(saved);
    if (!s.ok()) return s;
    if (out_.size() + captured.size() > options_.max_output_bytes) {
      return Error(absl::StrCat("template output exceeded ", options_.max_output_bytes, " bytes"));
    }
    return captured;
  }

  absl::Status Exec(const Node& node) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxEvalDepth) return AtLine(Error("template nested too deeply"), node.line);
    if (absl::Status s = Tick(); !s.ok()) return AtLine(s, node.line);
    switch (node.kind) {
      case NodeKind::kText:
        return Emit(node.text);
      case NodeKind::kOutput: {
        absl::StatusOr<Value> v = Eval(*node.expr);
        if (!v.ok()) return AtLine(v.status(), node.line);
        return Emit(v->Str());
      }
      case NodeKind::kIf:
        for (const auto& [cond, body] : node.branches) {
          absl::StatusOr<Value> c = Eval(*cond);
          if (!c.ok()) return AtLine(c.status(), node.line);
          if (c->Truthy()) return ExecBody(body);
        }
        return ExecBody(node.else_body);
      case NodeKind::kFor:
        return ExecFor(node);
      case NodeKind::kSet: {
        absl::StatusOr<Value> v = Eval(*node.expr);
        if (!v.ok()) return AtLine(v.status(), node.line);
        if (!node.attr.empty()) {
          Value ns = Lookup(node.targets[0]);
          if (!ns.is_namespace()) {
            return AtLine(Error(absl::StrCat("cannot assign attribute on non-namespace object '",
                                             node.targets[0], "'")),
                          node.line);
          }
          if (node.attr[0] == '_') {
            return AtLine(
                Error("chat templates cannot store underscore-prefixed attributes on a namespace"),
                node.line);
          }
          ns.mutable_namespace().Set(node.attr, *std::move(v));
          return absl::OkStatus();
        }
        return Assign(node.targets, *v, node.line);
      }
      case NodeKind::kSetBlock: {
        absl::StatusOr<std::string> text = Capture(node.body);
        if (!text.ok()) return text.status();
        Value v = Value::String(*std::move(text));
        if (node.expr) {
          absl::StatusOr<Value> f = EvalFilterChain(*node.expr, v);
          if (!f.ok()) return AtLine(f.status(), node.line);
          v = *std::move(f);
        }
        SetVar(node.targets[0], std::move(v));
        return absl::OkStatus();
      }
      case NodeKind::kMacro: {
        const Node* macro = &node;
        SetVar(node.name, MakeFunction(node.name, [macro](Interpreter& in, const CallArgs& args) {
                 return in.CallMacro(*macro, args);
               }));
        return absl::OkStatus();
      }
      case NodeKind::kFilterBlock: {
        absl::StatusOr<std::string> text = Capture(node.body);
        if (!text.ok()) return text.status();
        absl::StatusOr<Value> v = EvalFilterChain(*node.expr, Value::String(*std::move(text)));
        if (!v.ok()) return AtLine(v.status(), node.line);
        return Emit(v->Str());
      }
      case NodeKind::kBreak:
        pending_ = Pending::kBreak;
        return absl::OkStatus();
      case NodeKind::kContinue:
        pending_ = Pending::kContinue;
        return absl::OkStatus();
      case NodeKind::kScope:
        return ExecBody(node.body);
    }
    return absl::OkStatus();
  }

  absl::Status ExecFor(const Node& node) {
    absl::StatusOr<Value> seq = Eval(*node.expr);
    if (!seq.ok()) return AtLine(seq.status(), node.line);
    absl::StatusOr<ValueList> all = Iterate(*seq);
    if (!all.ok()) return AtLine(all.status(), node.line);
    ValueList items;
    if (node.cond) {
      frames_.push_back(std::make_shared<Frame>());
      for (const Value& item : *all) {
        if (absl::Status s = Tick(); !s.ok()) {
          frames_.pop_back();
          return AtLine(s, node.line);
        }
        absl::Status s = Assign(node.targets, item, node.line);
        absl::StatusOr<Value> keep = s.ok() ? Eval(*node.cond) : absl::StatusOr<Value>(s);
        if (!keep.ok()) {
          frames_.pop_back();
          return AtLine(keep.status(), node.line);
        }
        if (keep->Truthy()) items.push_back(item);
      }
      frames_.pop_back();
    } else {
      items = *std::move(all);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (absl::Status s = Tick(); !s.ok()) return AtLine(s, node.line);
      frames_.push_back(std::make_shared<Frame>());
      absl::Status s = Assign(node.targets, items[static_cast<size_t>(i)], node.line);
      if (s.ok()) {
        SetVar("loop", MakeLoop(items, i));
        s = ExecBody(node.body);
      }
      frames_.pop_back();
      if (!s.ok()) return s;
      if (pending_ == Pending::kBreak) {
        pending_ = Pending::kNone;
        break;
      }
      pending_ = Pending::kNone;
    }
    if (n == 0 && !node.else_body.empty()) {
      frames_.push_back(std::make_shared<Frame>());
      absl::Status s = ExecBody(node.else_body);
      frames_.pop_back();
      return s;
    }
    return absl::OkStatus();
  }

  static Value MakeLoop(const ValueList& items, int64_t i) {
    const int64_t n = static_cast<int64_t>(items.size());
    ValueDict loop;
    loop.entries.reserve(12);
    loop.entries.emplace_back("index", Value::Int(i + 1));
    loop.entries.emplace_back("index0", Value::Int(i));
    loop.entries.emplace_back("revindex", Value::Int(n - i));
    loop.entries.emplace_back("revindex0", Value::Int(n - i - 1));
    loop.entries.emplace_back("first", Value::Bool(i == 0));
    loop.entries.emplace_back("last", Value::Bool(i == n - 1));
    loop.entries.emplace_back("length", Value::Int(n));
    loop.entries.emplace_back("depth", Value::Int(1));
    loop.entries.emplace_back("depth0", Value::Int(0));
    loop.entries.emplace_back("previtem", i > 0 ? items[static_cast<size_t>(i - 1)]
                                                : Value::Undefined("there is no previous item"));
    loop.entries.emplace_back("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)]
                                                    : Value::Undefined("there is no next item"));
    loop.entries.emplace_back(
        "cycle",
        MakeFunction("cycle", [i](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
          if (args.positional.empty()) return Error("no items for cycling given");
          return args.positional[static_cast<size_t>(i) % args.positional.size()];
        }));
    return Value::Dict(std::move(loop));
  }

  absl::StatusOr<Value> CallMacro(const Node& macro, const CallArgs& args) {
    if (call_depth_ >= options_.max_call_depth) {
      return Error(absl::StrCat("macro calls nested deeper than ", options_.max_call_depth));
    }
    if (args.positional.size() > macro.params.size()) {
      return Error(absl::StrCat("macro '", macro.name, "' takes not more than ",
                                macro.params.size(), " argument(s)"));
    }
    auto frame = std::make_shared<Frame>();
    std::vector<std::shared_ptr<Frame>> saved = frames_;
    frames_ = {saved[0], saved[1]};
    for (size_t i = 0; i < macro.params.size(); ++i) {
      const std::string& p = macro.params[i];
      const Value* v = i < args.positional.size() ? &args.positional[i] : nullptr;
      if (v == nullptr) {
        for (const auto& [k, x] : args.keyword) {
          if (k == p) v = &x;
        }
      }
      if (v) {
        (*frame)[p] = *v;
      } else if (macro.defaults[i]) {
        frames_.push_back(frame);
        absl::StatusOr<Value> d = Eval(*macro.defaults[i]);
        frames_.pop_back();
        if (!d.ok()) {
          frames_ = std::move(saved);
          return d.status();
        }
        (*frame)[p] = *std::move(d);
      } else {
        (*frame)[p] = Value::Undefined(absl::StrCat("'", p, "' is undefined"));
      }
    }
    for (const auto& [k, x] : args.keyword) {
      if (std::find(macro.params.begin(), macro.params.end(), k) == macro.params.end()) {
        frames_ = std::move(saved);
        return Error(absl::StrCat("macro '", macro.name, "' takes no keyword argument '", k, "'"));
      }
    }
    frames_.push_back(frame);
    ++call_depth_;
    absl::StatusOr<std::string> text = Capture(macro.body);
    --call_depth_;
    frames_ = std::move(saved);
    pending_ = Pending::kNone;
    if (!text.ok()) return text.status();
    return Value::String(*std::move(text));
  }

  // ---- expressions ----

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.args.size(); ++i) {
      absl::StatusOr<Value> v = Eval(*e.args[i]);
      if (!v.ok()) return v.status();
      args.positional.push_back(*std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      absl::StatusOr<Value> v = Eval(*x);
      if (!v.ok()) return v.status();
      args.keyword.emplace_back(k, *std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> EvalFilterChain(const Expr& e, const Value& input) {
    Value in = input;
    if (e.args[0]) {
      absl::StatusOr<Value> inner = EvalFilterChain(*e.args[0], input);
      if (!inner.ok()) return inner;
      in = *std::move(inner);
    }
    absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    absl::StatusOr<Value> r = ApplyFilter(e.name, in, *args);
    if (!r.ok()) return AtLine(r.status(), e.line);
    return r;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxEvalDepth) return AtLine(Error("expression nested too deeply"), e.line);
    absl::StatusOr<Value> r = EvalInner(e);
    if (!r.ok()) return AtLine(r.status(), e.line);
    return r;
  }

  absl::StatusOr<Value> EvalInner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.value;
      case ExprKind::kName:
        return Lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        ValueList items;
        for (const auto& a : e.args) {
          absl::StatusOr<Value> v = Eval(*a);
          if (!v.ok()) return v;
          items.push_back(*std::move(v));
        }
        return Value::List(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        ValueDict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          absl::StatusOr<Value> k = Eval(*e.args[i]);
          if (!k.ok()) return k;
          if (!k->is_string()) return Error("only string keys are supported in dict literals");
          absl::StatusOr<Value> v = Eval(*e.args[i + 1]);
          if (!v.ok()) return v;
          d.Set(k->as_string(), *std::move(v));
        }
        return Value::Dict(std::move(d));
      }
      case ExprKind::kAttr: {
        absl::StatusOr<Value> obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        return GetAttr(*obj, e.name);
      }
      case ExprKind::kItem: {
        absl::StatusOr<Value> obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        absl::StatusOr<Value> key = Eval(*e.args[1]);
        if (!key.ok()) return key;
        return GetItem(*obj, *key);
      }
      case ExprKind::kSlice: {
        absl::StatusOr<Value> obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (!e.args[1 + i]) continue;
          absl::StatusOr<Value> v = Eval(*e.args[1 + i]);
          if (!v.ok()) return v;
          parts[i] = *std::move(v);
        }
        return Slice(*obj, parts[0], parts[1], parts[2]);
      }
      case ExprKind::kCall:
        return EvalCall(e);
      case ExprKind::kFilter: {
        absl::StatusOr<Value> in = Eval(*e.args[0]);
        if (!in.ok()) return in;
        absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        return ApplyFilter(e.name, *in, *args);
      }
      case ExprKind::kTest: {
        absl::StatusOr<Value> in = Eval(*e.args[0]);
        if (!in.ok()) return in;
        absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        absl::StatusOr<bool> r = ApplyTest(e.name, *in, *args);
        if (!r.ok()) return r.status();
        return Value::Bool(*r != e.negated);
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        absl::StatusOr<Value> v = Eval(*e.args[0]);
        if (!v.ok()) return v;
        if (v->is_undefined()) return Error(UndefinedMessage(*v));
        if (!v->is_number())
          return Error(absl::StrCat("bad operand type for unary ",
                                    e.kind == ExprKind::kNeg ? "-" : "+", ": '", v->TypeName(),
                                    "'"));
        if (e.kind == ExprKind::kPos) return v->is_bool() ? Value::Int(v->as_int()) : *v;
        if (v->is_float()) return Value::Float(-v->as_double());
        if (v->as_int() == INT64_MIN) return Error("integer overflow");
        return Value::Int(-v->as_int());
      }
      case ExprKind::kNot: {
        absl::StatusOr<Value> v = Eval(*e.args[0]);
        if (!v.ok()) return v;
        return Value::Bool(!v->Truthy());
      }
      case ExprKind::kBinary: {
        absl::StatusOr<Value> a = Eval(*e.args[0]);
        if (!a.ok()) return a;
        absl::StatusOr<Value> b = Eval(*e.args[1]);
        if (!b.ok()) return b;
        return BinaryOp(e.name, *a, *b);
      }
      case ExprKind::kCompare: {
        absl::StatusOr<Value> left = Eval(*e.args[0]);
        if (!left.ok()) return left;
        for (size_t i = 0; i < e.ops.size(); ++i) {
          absl::StatusOr<Value> right = Eval(*e.args[i + 1]);
          if (!right.ok()) return right;
          absl::StatusOr<bool> r = Compare(e.ops[i], *left, *right);
          if (!r.ok()) return r.status();
          if (!*r) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kAnd:
      case ExprKind::kOr: {
        absl::StatusOr<Value> a = Eval(*e.args[0]);
        if (!a.ok()) return a;
        bool short_circuit = e.kind == ExprKind::kAnd ? !a->Truthy() : a->Truthy();
        if (short_circuit) return a;
        return Eval(*e.args[1]);
      }
      case ExprKind::kCond: {
        absl::StatusOr<Value> c = Eval(*e.args[1]);
        if (!c.ok()) return c;
        if (c->Truthy()) return Eval(*e.args[0]);
        if (e.args[2]) return Eval(*e.args[2]);
        return Value::Undefined(
            "the inline if-expression evaluated to false and no else section was defined");
      }
    }
    return Error("unknown expression");
  }

  absl::StatusOr<Value> EvalCall(const Expr& e) {
    const Expr& callee = *e.args[0];
    absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    if (callee.kind == ExprKind::kAttr) {
      absl::StatusOr<Value> obj = Eval(*callee.args[0]);
      if (!obj.ok()) return obj;
      if (obj->is_undefined()) return Error(UndefinedMessage(*obj));
      if (absl::Status s = Tick(); !s.ok()) return s;
      std::optional<absl::StatusOr<Value>> m = CallMethod(*obj, callee.name, *args);
      if (m) return *std::move(m);
      absl::StatusOr<Value> fn = GetAttr(*obj, callee.name);
      if (!fn.ok()) return fn;
      if (!fn->is_callable()) {
        return Error(
            absl::StrCat("'", obj->TypeName(), " object' has no attribute '", callee.name, "'"));
      }
      return CallValue(*fn, *args, e.line);
    }
    absl::StatusOr<Value> fn = Eval(callee);
    if (!fn.ok()) return fn;
    return CallValue(*fn, *args, e.line);
  }

  // Python methods of str / dict / list. nullopt: no such method.
  std::optional<absl::StatusOr<Value>> CallMethod(const Value& obj, const std::string& name,
                                                  const CallArgs& args) {
    if (obj.is_string()) return StringMethod(obj.as_string(), name, args);
    if (obj.is_dict()) {
      const ValueDict& d = obj.as_dict();
      if (name == "get") {
        absl::StatusOr<std::string> key = StringArg(args, 0, "key", "get");
        const Value* def = Arg(args, 1, "default");
        if (!key.ok()) {
          const Value* k = Arg(args, 0, "key");
          if (k && !k->is_string()) return def ? *def : Value::None();
          return key.status();
        }
        const Value* v = d.Find(*key);
        if (v) return *v;
        return def ? *def : Value::None();
      }
      if (name == "keys" || name == "values" || name == "items") {
        ValueList out;
        for (const auto& [k, v] : d.entries) {
          if (name == "keys") {
            out.push_back(Value::String(k));
          } else if (name == "values") {
            out.push_back(v);
          } else {
            out.push_back(Value::List({Value::String(k), v}, true));
          }
        }
        return Value::List(std::move(out));
      }
      return std::nullopt;
    }
    if (obj.is_list()) {
      if (name == "count" || name == "index") {
        const Value* x = Arg(args, 0, "value");
        if (!x)
          return absl::StatusOr<Value>(Error(absl::StrCat(name, "() takes exactly one argument")));
        int64_t count = 0;
        const ValueList& items = obj.as_list();
        for (size_t i = 0; i < items.size(); ++i) {
          if (!items[i].Equals(*x)) continue;
          if (name == "index") return Value::Int(static_cast<int64_t>(i));
          ++count;
        }
        if (name == "index")
          return absl::StatusOr<Value>(Error(absl::StrCat(x->Repr(), " is not in list")));
        return Value::Int(count);
      }
      if (name == "append" || name == "extend" || name == "pop" || name == "insert" ||
          name == "remove" || name == "clear" || name == "sort" || name == "reverse") {
        return absl::StatusOr<Value>(Error(absl::StrCat(
            "access to list method '", name, "' is unsafe in the sandbox (lists are immutable)")));
      }
    }
    return std::nullopt;
  }

  std::optional<absl::StatusOr<Value>> StringMethod(const std::string& s, const std::string& name,
                                                    const CallArgs& args) {
    auto str_list = [](const std::vector<std::string>& parts) {
      ValueList out;
      for (const auto& p : parts) out.push_back(Value::String(p));
      return Value::List(std::move(out));
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = Arg(args, 0, "chars");
      if (chars && !chars->is_none() && !chars->is_undefined() && !chars->is_string()) {
        return absl::StatusOr<Value>(Error(absl::StrCat(name, " arg must be None or str")));
      }
      const std::string* set = chars && chars->is_string() ? &chars->as_string() : nullptr;
      return Value::String(Strip(s, set, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = Arg(args, 0, "sep");
      absl::StatusOr<int64_t> maxsplit = IntArg(args, 1, "maxsplit", name.c_str(), -1);
      if (!maxsplit.ok()) return absl::StatusOr<Value>(maxsplit.status());
      if (sep == nullptr || sep->is_none() || sep->is_undefined()) {
        if (name == "rsplit" && *maxsplit >= 0) {
          // Rare; split from the left is what the whitespace form gives when
          // all parts are kept.
          return str_list(SplitWhitespace(s, -1));
        }
        return str_list(SplitWhitespace(s, *maxsplit));
      }
      if (!sep->is_string()) return absl::StatusOr<Value>(Error("must be str or None"));
      if (sep->as_string().empty()) return absl::StatusOr<Value>(Error("empty separator"));
      return str_list(name == "split" ? SplitSep(s, sep->as_string(), *maxsplit)
                                      : RSplitSep(s, sep->as_string(), *maxsplit));
    }
    if (name == "splitlines") {
      std::vector<std::string> parts;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          parts.push_back(s.substr(start, i - start));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) parts.push_back(s.substr(start));
      return str_list(parts);
    }
    if (name == "startswith" || name == "endswith") {
      const Value* a = Arg(args, 0, "prefix");
      if (!a)
        return absl::StatusOr<Value>(Error(absl::StrCat(name, "() takes at least 1 argument")));
      ValueList options = a->is_tuple() ? a->as_list() : ValueList{*a};
      for (const Value& o : options) {
        if (!o.is_string()) {
          return absl::StatusOr<Value>(Error(
              absl::StrCat(name, " first arg must be str or a tuple of str, not ", o.TypeName())));
        }
        bool hit = name == "startswith" ? absl::StartsWith(s, o.as_string())
                                        : absl::EndsWith(s, o.as_string());
        if (hit) return Value::Bool(true);
      }
      return Value::Bool(false);
    }
    if (name == "upper") return Value::String(Upper(s));
    if (name == "lower" || name == "casefold") return Value::String(Lower(s));
    if (name == "title") return Value::String(Title(s));
    if (name == "capitalize") return Value::String(Capitalize(s));
    if (name == "replace") {
      absl::StatusOr<std::string> from = StringArg(args, 0, "old", "replace");
      absl::StatusOr<std::string> to = StringArg(args, 1, "new", "replace");
      absl::StatusOr<int64_t> count = IntArg(args, 2, "count", "replace", -1);
      if (!from.ok()) return absl::StatusOr<Value>(from.status());
      if (!to.ok()) return absl::StatusOr<Value>(to.status());
      if (!count.ok()) return absl::StatusOr<Value>(count.status());
      return Value::String(Replace(s, *from, *to, *count));
    }
    if (name == "find" || name == "rfind" || name == "count" || name == "index" ||
        name == "rindex") {
      absl::StatusOr<std::string> sub = StringArg(args, 0, "sub", name.c_str());
      if (!sub.ok()) return absl::StatusOr<Value>(sub.status());
      if (name == "count") {
        if (sub->empty()) return Value::Int(CodepointLength(s) + 1);
        int64_t c = 0;
        for (size_t p = s.find(*sub); p != std::string::npos; p = s.find(*sub, p + sub->size()))
          ++c;
        return Value::Int(c);
      }
      size_t p = (name == "find" || name == "index") ? s.find(*sub) : s.rfind(*sub);
      if (p == std::string::npos) {
        if (name == "index" || name == "rindex")
          return absl::StatusOr<Value>(Error("substring not found"));
        return Value::Int(-1);
      }
      return Value::Int(CodepointLength(s.substr(0, p)));
    }
    if (name == "join") {
      const Value* seq = Arg(args, 0, "iterable");
      if (!seq) return absl::StatusOr<Value>(Error("join() takes exactly one argument"));
      absl::StatusOr<ValueList> items = Iterate(*seq);
      if (!items.ok()) return absl::StatusOr<Value>(items.status());
      std::string out;
      for (size_t i = 0; i < items->size(); ++i) {
        if (!(*items)[i].is_string()) {
          return absl::StatusOr<Value>(Error(absl::StrCat(
              "sequence item ", i, ": expected str instance, ", (*items)[i].TypeName(), " found")));
        }
        if (i > 0) out += s;
        out += (*items)[i].as_string();
      }
      return Value::String(std::move(out));
    }
    if (name == "removeprefix" || name == "removesuffix") {
      absl::StatusOr<std::string> a = StringArg(args, 0, "affix", name.c_str());
      if (!a.ok()) return absl::StatusOr<Value>(a.status());
      if (name == "removeprefix" && absl::StartsWith(s, *a))
        return Value::String(s.substr(a->size()));
      if (name == "removesuffix" && !a->empty() && absl::EndsWith(s, *a)) {
        return Value::String(s.substr(0, s.size() - a->size()));
      }
      return Value::String(s);
    }
    if (name == "isdigit" || name == "isnumeric" || name == "isdecimal" || name == "isalpha" ||
        name == "isalnum" || name == "isspace" || name == "isupper" || name == "islower") {
      std::u32string cps = DecodeUtf8Lossy(s);
      if (cps.empty()) return Value::Bool(false);
      bool any_cased = false;
      for (char32_t c : cps) {
        bool ok;
        if (name == "isspace") {
          ok = IsPyWhitespace(c);
        } else if (name == "isalpha") {
          ok = IsAlpha(c);
        } else if (name == "isalnum") {
          ok = IsAlpha(c) || IsDigit(c);
        } else if (name == "isupper" || name == "islower") {
          bool upper = ToLower(c) != c, lower = ToUpper(c) != c;
          any_cased |= upper || lower;
          ok = name == "isupper" ? !lower : !upper;
        } else {
          ok = IsDigit(c);
        }
        if (!ok) return Value::Bool(false);
      }
      if (name == "isupper" || name == "islower") return Value::Bool(any_cased);
      return Value::Bool(true);
    }
    return std::nullopt;
  }

  // ---- tests ----

  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v, const CallArgs& args) {
    const Value* a0 = Arg(args, 0, "other");
    auto need_arg = [&]() -> absl::Status {
      if (!a0) return Error(absl::StrCat("test '", name, "' takes an argument"));
      return absl::OkStatus();
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_float();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_dict();
    if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
    if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
    if (name == "callable") return v.is_callable();
    if (name == "lower" || name == "upper") {
      if (!v.is_string()) return false;
      std::string s = v.as_string();
      return name == "lower" ? Lower(s) == s : Upper(s) == s;
    }
    if (name == "odd" || name == "even") {
      if (!v.is_int() && !v.is_bool())
        return Error(absl::StrCat("test '", name, "' expects an integer"));
      bool odd = (v.as_int() % 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "divisibleby") {
      if (absl::Status s = need_arg(); !s.ok()) return s;
      if (!(v.is_int() || v.is_bool()) || !(a0->is_int() || a0->is_bool()) || a0->as_int() == 0) {
        return Error("divisibleby expects non-zero integers");
      }
      return v.as_int() % a0->as_int() == 0;
    }
    if (name == "escaped") return false;
    if (name == "sameas") {
      if (absl::Status s = need_arg(); !s.ok()) return s;
      if (v.is_none() || v.is_bool() || v.is_undefined())
        return v.type() == a0->type() && v.Equals(*a0);
      return v.Equals(*a0) && v.type() == a0->type() && (v.is_int() || v.is_string());
    }
    static const std::unordered_map<std::string, std::string> kCompare = {
        {"eq", "=="}, {"equalto", "=="}, {"==", "=="},      {"ne", "!="},
        {"!=", "!="}, {"lt", "<"},       {"lessthan", "<"}, {"<", "<"},
        {"le", "<="}, {"<=", "<="},      {"gt", ">"},       {"greaterthan", ">"},
        {">", ">"},   {"ge", ">="},      {">=", ">="},      {"in", "in"}};
    auto it = kCompare.find(name);
    if (it != kCompare.end()) {
      if (absl::Status s = need_arg(); !s.ok()) return s;
      return Compare(it->second, v, *a0);
    }
    return Error(absl::StrCat("no test named '", name, "'"));
  }

  // ---- filters ----

  absl::StatusOr<ValueList> SelectOrReject(const Value& input, const CallArgs& args, bool by_attr,
                                           bool select) {
    absl::StatusOr<ValueList> items = Iterate(input);
    if (!items.ok()) return items.status();
    size_t next = 0;
    std::string attr;
    if (by_attr) {
      if (args.positional.empty() || !args.positional[0].is_string()) {
        return Error("selectattr/rejectattr need an attribute name");
      }
      attr = args.positional[0].as_string();
      next = 1;
    }
    std::string test;
    CallArgs test_args;
    if (next < args.positional.size()) {
      if (!args.positional[next].is_string()) return Error("test name must be a string");
      test = args.positional[next].as_string();
      test_args.positional.assign(args.positional.begin() + static_cast<long>(next) + 1,
                                  args.positional.end());
    }
    ValueList out;
    for (const Value& item : *items) {
      Value subject = item;
      if (by_attr) {
        absl::StatusOr<Value> a = AttrPath(item, attr);
        if (!a.ok()) return a.status();
        subject = *std::move(a);
      }
      bool pass;
      if (test.empty()) {
        pass = subject.Truthy();
      } else {
        absl::StatusOr<bool> r = ApplyTest(test, subject, test_args);
        if (!r.ok()) return r.status();
        pass = *r;
      }
      if (pass == select) out.push_back(item);
    }
    return out;
  }

  absl::StatusOr<Value> SortKey(const Value& item, const std::string& attribute,
                                bool case_sensitive) {
    Value key = item;
    if (!attribute.empty()) {
      absl::StatusOr<Value> a = AttrPath(item, attribute);
      if (!a.ok()) return a;
      key = *std::move(a);
    }
    if (!case_sensitive && key.is_string()) return Value::String(Lower(key.as_string()));
    return key;
  }

  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, const CallArgs& args) {
    if (absl::Status s = Tick(); !s.ok()) return s;
    if (name == "default" || name == "d") {
      const Value* def = Arg(args, 0, "default_value");
      bool boolean = BoolArg(args, 1, "boolean", false);
      if (v.is_undefined() || (boolean && !v.Truthy())) return def ? *def : Value::String("");
      return v;
    }
    if (name == "safe" || name == "forceescape_off") return v;
    if (name == "string") return Value::String(v.Str());
    if (name == "pprint") return Value::String(v.Repr());
    if (name == "length" || name == "count") {
      absl::StatusOr<int64_t> n = Length(v);
      if (!n.ok()) return n.status();
      return Value::Int(*n);
    }
    if (name == "trim") {
      const Value* chars = Arg(args, 0, "chars");
      const std::string* set = chars && chars->is_string() ? &chars->as_string() : nullptr;
      return Value::String(Strip(v.Str(), set, true, true));
    }
    if (name == "upper") return Value::String(Upper(v.Str()));
    if (name == "lower") return Value::String(Lower(v.Str()));
    if (name == "capitalize") return Value::String(Capitalize(v.Str()));
    if (name == "title") return Value::String(Title(v.Str()));
    if (name == "replace") {
      absl::StatusOr<std::string> from = StringArg(args, 0, "old", "replace");
      absl::StatusOr<std::string> to = StringArg(args, 1, "new", "replace");
      absl::StatusOr<int64_t> count = IntArg(args, 2, "count", "replace", -1);
      if (!from.ok()) return from.status();
      if (!to.ok()) return to.status();
      if (!count.ok()) return count.status();
      return Value::String(Replace(v.Str(), *from, *to, *count));
    }
    if (name == "tojson") {
      bool ensure_ascii = BoolArg(args, 0, "ensure_ascii", false);
      const Value* indent = Arg(args, 1, "indent");
      const Value* separators = Arg(args, 2, "separators");
      bool sort_keys = BoolArg(args, 3, "sort_keys", false);
      int indent_n = -1;
      std::string indent_s;
      if (indent && !indent->is_none() && !indent->is_undefined()) {
        if (indent->is_string()) {
          indent_s = indent->as_string();
          if (indent_s.empty()) indent_n = 0;
        } else if (indent->is_int()) {
          indent_n = static_cast<int>(std::clamp<int64_t>(indent->as_int(), 0, 64));
        } else {
          return Error("tojson indent must be an int or a string");
        }
      }
      std::optional<std::string> item_sep;
      std::string key_sep = ": ";
      if (separators && !separators->is_none() && !separators->is_undefined()) {
        if (!separators->is_list() || separators->as_list().size() != 2 ||
            !separators->as_list()[0].is_string() || !separators->as_list()[1].is_string()) {
          return Error("tojson separators must be a pair of strings");
        }
        item_sep = separators->as_list()[0].as_string();
        key_sep = separators->as_list()[1].as_string();
      }
      absl::StatusOr<std::string> json =
          ToJson(v, indent_n, ensure_ascii, sort_keys, item_sep, key_sep, indent_s);
      if (!json.ok()) return json.status();
      return Value::String(*std::move(json));
    }
    if (name == "first" || name == "last") {
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      if (items->empty())
        return Value::Undefined(absl::StrCat("No ", name, " item, sequence was empty."));
      return name == "first" ? items->front() : items->back();
    }
    if (name == "list") {
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      return Value::List(*std::move(items));
    }
    if (name == "items") {
      if (v.is_undefined()) return Value::List({});
      if (!v.is_dict())
        return Error(absl::StrCat("items filter expects a mapping, got ", v.TypeName()));
      ValueList out;
      for (const auto& [k, x] : v.as_dict().entries)
        out.push_back(Value::List({Value::String(k), x}, true));
      return Value::List(std::move(out));
    }
    if (name == "join") {
      const Value* sep = Arg(args, 0, "d");
      const Value* attribute = Arg(args, 1, "attribute");
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      std::string out;
      std::string d = sep && !sep->is_undefined() ? sep->Str() : std::string();
      for (size_t i = 0; i < items->size(); ++i) {
        Value item = (*items)[i];
        if (attribute && attribute->is_string()) {
          absl::StatusOr<Value> a = AttrPath(item, attribute->as_string());
          if (!a.ok()) return a;
          item = *std::move(a);
        }
        if (i > 0) out += d;
        out += item.Str();
      }
      return Value::String(std::move(out));
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string cps = DecodeUtf8Lossy(v.as_string());
        std::reverse(cps.begin(), cps.end());
        return Value::String(EncodeUtf8(cps));
      }
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      std::reverse(items->begin(), items->end());
      return Value::List(*std::move(items));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      absl::StatusOr<ValueList> out =
          SelectOrReject(v, args, name == "selectattr" || name == "rejectattr",
                         name == "select" || name == "selectattr");
      if (!out.ok()) return out.status();
      return Value::List(*std::move(out));
    }
    if (name == "map") {
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      ValueList out;
      const Value* attribute = nullptr;
      const Value* def = nullptr;
      for (const auto& [k, x] : args.keyword) {
        if (k == "attribute") attribute = &x;
        if (k == "default") def = &x;
      }
      if (attribute) {
        if (!attribute->is_string()) return Error("map attribute must be a string");
        for (const Value& item : *items) {
          absl::StatusOr<Value> a = AttrPath(item, attribute->as_string());
          if (!a.ok()) return a;
          out.push_back(a->is_undefined() && def ? *def : *std::move(a));
        }
        return Value::List(std::move(out));
      }
      if (args.positional.empty() || !args.positional[0].is_string())
        return Error("map needs a filter name");
      std::string filter = args.positional[0].as_string();
      CallArgs rest;
      rest.positional.assign(args.positional.begin() + 1, args.positional.end());
      rest.keyword = args.keyword;
      for (const Value& item : *items) {
        absl::StatusOr<Value> r = ApplyFilter(filter, item, rest);
        if (!r.ok()) return r;
        out.push_back(*std::move(r));
      }
      return Value::List(std::move(out));
    }
    if (name == "attr") {
      absl::StatusOr<std::string> a = StringArg(args, 0, "name", "attr");
      if (!a.ok()) return a.status();
      return GetAttr(v, *a);
    }
    if (name == "int") {
      absl::StatusOr<int64_t> def = IntArg(args, 0, "default", "int", 0);
      absl::StatusOr<int64_t> base = IntArg(args, 1, "base", "int", 10);
      if (!def.ok()) return def.status();
      if (!base.ok()) return base.status();
      if (v.is_int() || v.is_bool()) return Value::Int(v.as_int());
      if (v.is_float()) {
        double d = v.as_double();
        if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return Value::Int(*def);
        return Value::Int(static_cast<int64_t>(d));
      }
      if (v.is_string()) {
        if (std::optional<int64_t> i = ParseInt(v.as_string(), static_cast<int>(*base)))
          return Value::Int(*i);
        if (std::optional<double> d = ParseFloat(v.as_string());
            d && std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
          return Value::Int(static_cast<int64_t>(*d));
        }
      }
      return Value::Int(*def);
    }
    if (name == "float") {
      const Value* def = Arg(args, 0, "default");
      if (v.is_number()) return Value::Float(v.as_double());
      if (v.is_string()) {
        if (std::optional<double> d = ParseFloat(v.as_string())) return Value::Float(*d);
      }
      return def ? Value::Float(def->as_double()) : Value::Float(0.0);
    }
    if (name == "abs") {
      if (v.is_float()) return Value::Float(std::fabs(v.as_double()));
      if (v.is_int() || v.is_bool()) {
        if (v.as_int() == INT64_MIN) return Error("integer overflow");
        return Value::Int(v.as_int() < 0 ? -v.as_int() : v.as_int());
      }
      return Error(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
    }
    if (name == "round") {
      absl::StatusOr<int64_t> precision = IntArg(args, 0, "precision", "round", 0);
      if (!precision.ok()) return precision.status();
      const Value* method = Arg(args, 1, "method");
      std::string m = method && method->is_string() ? method->as_string() : "common";
      if (!v.is_number()) return Error("round filter expects a number");
      double scale = std::pow(10.0, static_cast<double>(*precision));
      double x = v.as_double() * scale;
      double r = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::nearbyint(x);
      return Value::Float(r / scale);
    }
    if (name == "sum") {
      const Value* attribute = Arg(args, 0, "attribute");
      const Value* start = Arg(args, 1, "start");
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      Value total = start ? *start : Value::Int(0);
      for (const Value& item : *items) {
        Value x = item;
        if (attribute && attribute->is_string()) {
          absl::StatusOr<Value> a = AttrPath(item, attribute->as_string());
          if (!a.ok()) return a;
          x = *std::move(a);
        }
        absl::StatusOr<Value> t = BinaryOp("+", total, x);
        if (!t.ok()) return t;
        total = *std::move(t);
      }
      return total;
    }
    if (name == "sort" || name == "min" || name == "max" || name == "unique") {
      bool reverse = name == "sort" ? BoolArg(args, 0, "reverse", false) : false;
      bool case_sensitive = BoolArg(args, name == "sort" ? 1 : 0, "case_sensitive", false);
      const Value* attribute = Arg(args, name == "sort" ? 2 : 1, "attribute");
      std::string attr =
          attribute && attribute->is_string() ? attribute->as_string() : std::string();
      absl::StatusOr<ValueList> items = Iterate(v);
      if (!items.ok()) return items.status();
      std::vector<std::pair<Value, Value>> keyed;
      for (const Value& item : *items) {
        absl::StatusOr<Value> k = SortKey(item, attr, case_sensitive);
        if (!k.ok()) return k;
        keyed.emplace_back(*std::move(k), item);
      }
      if (name == "unique") {
        ValueList out;
        std::vector<Value> seen;
        for (const auto& [k, item] : keyed) {
          bool dup =
              std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return s.Equals(k); });
          if (!dup) {
            seen.push_back(k);
            out.push_back(item);
          }
        }
        return Value::List(std::move(out));
      }
      absl::Status status;
      auto less = [&](const std::pair<Value, Value>& a, const std::pair<Value, Value>& b) {
        if (!status.ok()) return false;
        absl::StatusOr<bool> r = Less(a.first, b.first);
        if (!r.ok()) {
          status = r.status();
          return false;
        }
        return *r;
      };
      if (name == "sort") {
        std::stable_sort(keyed.begin(), keyed.end(), less);
        if (!status.ok()) return status;
        if (reverse) std::reverse(keyed.begin(), keyed.end());
        ValueList out;
        for (auto& kv : keyed) out.push_back(std::move(kv.second));
        return Value::List(std::move(out));
      }
      if (keyed.empty())
        return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
      auto it = name == "min" ? std::min_element(keyed.begin(), keyed.end(), less)
                              : std::max_element(keyed.begin(), keyed.end(), less);
      if (!status.ok()) return status;
      return it->second;
    }
    if (name == "dictsort") {
      if (!v.is_dict()) return Error("dictsort expects a mapping");
      bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
      const Value* by = Arg(args, 1, "by");
      bool by_value = by && by->is_string() && by->as_string() == "value";
      bool reverse = BoolArg(args, 2, "reverse", false);
      std::vector<std::pair<Value, Value>> keyed;
      for (const auto& [k, x] : v.as_dict().entries) {
        Value key = by_value ? x : Value::String(k);
        if (!case_sensitive && key.is_string()) key = Value::String(Lower(key.as_string()));
        keyed.emplace_back(key, Value::List({Value::String(k), x}, true));
      }
      absl::Status status;
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
        absl::StatusOr<bool> r = Less(a.first, b.first);
        if (!r.ok()) {
          status = r.status();
          return false;
        }
        return *r;
      });
      if (!status.ok()) return status;
      if (reverse) std::reverse(keyed.begin(), keyed.end());
      ValueList out;
      for (auto& kv : keyed) out.push_back(std::move(kv.second));
      return Value::List(std::move(out));
    }
    if (name == "indent") {
      const Value* width = Arg(args, 0, "width");
      bool first = BoolArg(args, 1, "first", false);
      bool blank = BoolArg(args, 2, "blank", false);
      std::string ind =
          width && width->is_string()
              ? width->as_string()
              : std::string(static_cast<size_t>(std::clamp<int64_t>(
                                width && width->is_int() ? width->as_int() : 4, 0, 256)),
                            ' ');
      std::string s = v.Str() + "\n";
      std::vector<std::string> lines = SplitSep(s, "\n", -1);
      lines.pop_back();
      std::string out;
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i > 0) out += "\n";
        bool add = (i > 0 || first) && (blank || !lines[i].empty());
        if (i == 0 && first) add = true;
        if (add) out += ind;
        out += lines[i];
      }
      return Value::String(std::move(out));
    }
    if (name == "wordcount") {
      std::u32string cps = DecodeUtf8Lossy(v.Str());
      int64_t words = 0;
      bool in_word = false;
      for (char32_t c : cps) {
        bool w = IsAlpha(c) || IsDigit(c) || c == '_';
        if (w && !in_word) ++words;
        in_word = w;
      }
      return Value::Int(words);
    }
    if (name == "escape" || name == "e") {
      std::string out;
      for (char c : v.Str()) {
        switch (c) {
          case '&':
            out += "&amp;";
            break;
          case '<':
            out += "&lt;";
            break;
          case '>':
            out += "&gt;";
            break;
          case '"':
            out += "&#34;";
            break;
          case '\'':
            out += "&#39;";
            break;
          default:
            out.push_back(c);
        }
      }
      return Value::String(std::move(out));
    }
    if (name == "format") {
      Value tuple = Value::List(args.positional, true);
      return PercentFormat(v.Str(), tuple);
    }
    return Error(absl::StrCat("no filter named '", name, "'"));
  }

  const RenderOptions& options_;
  std::vector<std::shared_ptr<Frame>> frames_;
  std::string out_;
  Pending pending_ = Pending::kNone;
  int64_t steps_ = 0;
  int depth_ = 0;
  int call_depth_ = 0;
};

absl::StatusOr<Template> Template::Parse(const std::string& source) {
  absl::StatusOr<std::shared_ptr<const Program>> program = ParseProgram(source);
  if (!program.ok()) return program.status();
  Template t;
  t.program_ = *std::move(program);
  return t;
}

absl::StatusOr<std::string> Template::Render(const ValueDict& context,
                                             const RenderOptions& options) const {
  if (!program_) return absl::FailedPreconditionError("template was not parsed");
  Interpreter interp(options);
  return interp.Run(*program_, context);
}

}  // namespace retort::jinja
