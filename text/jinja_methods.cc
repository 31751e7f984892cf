// The Python methods of str, dict and list that chat templates call, as
// tables from name to function. The sandbox makes lists immutable, so the
// mutating list methods are errors.
#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "text/jinja_builtins.h"
#include "text/jinja_pystr.h"

namespace retort::jinja {
namespace {

// `name` is the method called, for the functions that serve several.
using Method = absl::StatusOr<Value> (*)(const std::string& name, const Value& obj,
                                         const CallArgs& args);
using MethodTable = std::unordered_map<std::string, Method>;

Value StrList(const std::vector<std::string>& parts) {
  ValueList out;
  for (const auto& p : parts) out.push_back(Value::String(p));
  return Value::List(std::move(out));
}

// ---- str ----

absl::StatusOr<Value> StrStrip(const std::string& name, const Value& obj, const CallArgs& args) {
  const Value* chars = Arg(args, 0, "chars");
  if (chars && !chars->is_none() && !chars->is_undefined() && !chars->is_string()) {
    return Error(absl::StrCat(name, " arg must be None or str"));
  }
  const std::string* set = chars && chars->is_string() ? &chars->as_string() : nullptr;
  return Value::String(Strip(obj.as_string(), set, name != "rstrip", name != "lstrip"));
}

absl::StatusOr<Value> StrSplit(const std::string& name, const Value& obj, const CallArgs& args) {
  const std::string& s = obj.as_string();
  const Value* sep = Arg(args, 0, "sep");
  absl::StatusOr<int64_t> maxsplit = IntArg(args, 1, "maxsplit", name.c_str(), -1);
  if (!maxsplit.ok()) return maxsplit.status();
  if (sep == nullptr || sep->is_none() || sep->is_undefined()) {
    if (name == "rsplit" && *maxsplit >= 0) {
      // Rare; split from the left is what the whitespace form gives when
      // all parts are kept.
      return StrList(SplitWhitespace(s, -1));
    }
    return StrList(SplitWhitespace(s, *maxsplit));
  }
  if (!sep->is_string()) return Error("must be str or None");
  if (sep->as_string().empty()) return Error("empty separator");
  return StrList(name == "split" ? SplitSep(s, sep->as_string(), *maxsplit)
                                 : RSplitSep(s, sep->as_string(), *maxsplit));
}

absl::StatusOr<Value> StrSplitLines(const std::string&, const Value& obj, const CallArgs&) {
  return StrList(SplitLines(obj.as_string()));
}

absl::StatusOr<Value> StrAffixTest(const std::string& name, const Value& obj,
                                   const CallArgs& args) {
  const Value* a = Arg(args, 0, "prefix");
  if (!a) return Error(absl::StrCat(name, "() takes at least 1 argument"));
  ValueList options = a->is_tuple() ? a->as_list() : ValueList{*a};
  for (const Value& o : options) {
    if (!o.is_string()) {
      return Error(
          absl::StrCat(name, " first arg must be str or a tuple of str, not ", o.TypeName()));
    }
    bool hit = name == "startswith" ? absl::StartsWith(obj.as_string(), o.as_string())
                                    : absl::EndsWith(obj.as_string(), o.as_string());
    if (hit) return Value::Bool(true);
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> StrCase(const std::string& name, const Value& obj, const CallArgs&) {
  const std::string& s = obj.as_string();
  if (name == "upper") return Value::String(Upper(s));
  if (name == "title") return Value::String(Title(s));
  if (name == "capitalize") return Value::String(Capitalize(s));
  return Value::String(Lower(s));  // lower, casefold
}

absl::StatusOr<Value> StrReplace(const std::string&, const Value& obj, const CallArgs& args) {
  absl::StatusOr<std::string> from = StringArg(args, 0, "old", "replace");
  absl::StatusOr<std::string> to = StringArg(args, 1, "new", "replace");
  absl::StatusOr<int64_t> count = IntArg(args, 2, "count", "replace", -1);
  if (!from.ok()) return from.status();
  if (!to.ok()) return to.status();
  if (!count.ok()) return count.status();
  // Refuse a result over the size limit before building it.
  if (to->size() > from->size()) {
    const std::string& s = obj.as_string();
    int64_t matches = 0;
    if (from->empty()) {
      matches = CodepointLength(s) + 1;
    } else {
      for (size_t p = s.find(*from); p != std::string::npos && matches != *count;
           p = s.find(*from, p + from->size())) {
        ++matches;
      }
    }
    if (*count >= 0) matches = std::min(matches, *count);
    const int64_t growth = static_cast<int64_t>(to->size() - from->size());
    if (matches > 0 && growth > (kMaxStringBytes - static_cast<int64_t>(s.size())) / matches) {
      return Error(
          absl::StrCat("replace() result exceeds the limit of ", kMaxStringBytes, " bytes"));
    }
  }
  return Value::String(Replace(obj.as_string(), *from, *to, *count));
}

absl::StatusOr<Value> StrFind(const std::string& name, const Value& obj, const CallArgs& args) {
  const std::string& s = obj.as_string();
  absl::StatusOr<std::string> sub = StringArg(args, 0, "sub", name.c_str());
  if (!sub.ok()) return sub.status();
  if (name == "count") {
    if (sub->empty()) return Value::Int(CodepointLength(s) + 1);
    int64_t c = 0;
    for (size_t p = s.find(*sub); p != std::string::npos; p = s.find(*sub, p + sub->size())) ++c;
    return Value::Int(c);
  }
  size_t p = (name == "find" || name == "index") ? s.find(*sub) : s.rfind(*sub);
  if (p == std::string::npos) {
    if (name == "index" || name == "rindex") return Error("substring not found");
    return Value::Int(-1);
  }
  return Value::Int(CodepointLength(s.substr(0, p)));
}

absl::StatusOr<Value> StrJoin(const std::string&, const Value& obj, const CallArgs& args) {
  const Value* seq = Arg(args, 0, "iterable");
  if (!seq) return Error("join() takes exactly one argument");
  absl::StatusOr<ValueList> items = Iterate(*seq);
  if (!items.ok()) return items.status();
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    if (!(*items)[i].is_string()) {
      return Error(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                (*items)[i].TypeName(), " found"));
    }
    if (i > 0) out += obj.as_string();
    out += (*items)[i].as_string();
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> StrRemoveAffix(const std::string& name, const Value& obj,
                                     const CallArgs& args) {
  const std::string& s = obj.as_string();
  absl::StatusOr<std::string> a = StringArg(args, 0, "affix", name.c_str());
  if (!a.ok()) return a.status();
  if (name == "removeprefix" && absl::StartsWith(s, *a)) return Value::String(s.substr(a->size()));
  if (name == "removesuffix" && !a->empty() && absl::EndsWith(s, *a)) {
    return Value::String(s.substr(0, s.size() - a->size()));
  }
  return Value::String(s);
}

// isalpha, isdigit, ...: true when the str is not empty and every code point
// is in the class.
absl::StatusOr<Value> StrCharClass(const std::string& name, const Value& obj, const CallArgs&) {
  static const std::unordered_map<std::string, bool (*)(char32_t)> kClasses = {
      {"isspace", IsPyWhitespace}, {"isalpha", IsPyAlpha},     {"isalnum", IsPyAlnum},
      {"isdigit", IsPyDigit},      {"isdecimal", IsPyDecimal}, {"isnumeric", IsPyNumeric}};
  bool (*in_class)(char32_t) = kClasses.at(name);
  const std::string& s = obj.as_string();
  if (s.empty()) return Value::Bool(false);
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) {
    if (!in_class(c)) return Value::Bool(false);
  }
  return Value::Bool(true);
}

absl::StatusOr<Value> StrCasePredicate(const std::string& name, const Value& obj, const CallArgs&) {
  const std::string& s = obj.as_string();
  if (name == "isupper") return Value::Bool(IsUpperString(s));
  if (name == "islower") return Value::Bool(IsLowerString(s));
  return Value::Bool(IsTitleString(s));
}

const MethodTable& StrMethods() {
  static const MethodTable* table = new MethodTable{
      {"strip", StrStrip},
      {"lstrip", StrStrip},
      {"rstrip", StrStrip},
      {"split", StrSplit},
      {"rsplit", StrSplit},
      {"splitlines", StrSplitLines},
      {"startswith", StrAffixTest},
      {"endswith", StrAffixTest},
      {"upper", StrCase},
      {"lower", StrCase},
      {"casefold", StrCase},
      {"title", StrCase},
      {"capitalize", StrCase},
      {"replace", StrReplace},
      {"find", StrFind},
      {"rfind", StrFind},
      {"count", StrFind},
      {"index", StrFind},
      {"rindex", StrFind},
      {"join", StrJoin},
      {"removeprefix", StrRemoveAffix},
      {"removesuffix", StrRemoveAffix},
      {"isspace", StrCharClass},
      {"isalpha", StrCharClass},
      {"isalnum", StrCharClass},
      {"isdigit", StrCharClass},
      {"isdecimal", StrCharClass},
      {"isnumeric", StrCharClass},
      {"isupper", StrCasePredicate},
      {"islower", StrCasePredicate},
      {"istitle", StrCasePredicate},
  };
  return *table;
}

// ---- dict ----

absl::StatusOr<Value> DictGet(const std::string&, const Value& obj, const CallArgs& args) {
  absl::StatusOr<std::string> key = StringArg(args, 0, "key", "get");
  const Value* def = Arg(args, 1, "default");
  if (!key.ok()) {
    const Value* k = Arg(args, 0, "key");
    if (k && !k->is_string()) return def ? *def : Value::None();
    return key.status();
  }
  const Value* v = obj.as_dict().Find(*key);
  if (v) return *v;
  return def ? *def : Value::None();
}

absl::StatusOr<Value> DictView(const std::string& name, const Value& obj, const CallArgs&) {
  ValueList out;
  for (const auto& [k, v] : obj.as_dict().entries) {
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

const MethodTable& DictMethods() {
  static const MethodTable* table = new MethodTable{
      {"get", DictGet}, {"keys", DictView}, {"values", DictView}, {"items", DictView}};
  return *table;
}

// ---- list ----

absl::StatusOr<Value> ListSearch(const std::string& name, const Value& obj, const CallArgs& args) {
  const Value* x = Arg(args, 0, "value");
  if (!x) return Error(absl::StrCat(name, "() takes exactly one argument"));
  int64_t count = 0;
  const ValueList& items = obj.as_list();
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].Equals(*x)) continue;
    if (name == "index") return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (name == "index") return Error(absl::StrCat(x->Repr(), " is not in list"));
  return Value::Int(count);
}

absl::StatusOr<Value> ListMutation(const std::string& name, const Value&, const CallArgs&) {
  return Error(absl::StrCat("access to list method '", name,
                            "' is unsafe in the sandbox (lists are immutable)"));
}

const MethodTable& ListMethods() {
  static const MethodTable* table = new MethodTable{
      {"count", ListSearch},     {"index", ListSearch},   {"append", ListMutation},
      {"extend", ListMutation},  {"pop", ListMutation},   {"insert", ListMutation},
      {"remove", ListMutation},  {"clear", ListMutation}, {"sort", ListMutation},
      {"reverse", ListMutation},
  };
  return *table;
}

}  // namespace

std::optional<absl::StatusOr<Value>> CallMethod(const Value& obj, const std::string& name,
                                                const CallArgs& args) {
  const MethodTable* table = obj.is_string() ? &StrMethods()
                             : obj.is_dict() ? &DictMethods()
                             : obj.is_list() ? &ListMethods()
                                             : nullptr;
  if (table == nullptr) return std::nullopt;
  auto it = table->find(name);
  if (it == table->end()) return std::nullopt;
  return it->second(name, obj, args);
}

}  // namespace retort::jinja
