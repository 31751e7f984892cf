// Jinja's filters and tests as tables from name to function, with jinja2's
// argument names and defaults.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "text/jinja_builtins.h"
#include "text/jinja_pystr.h"

namespace retort::jinja {
namespace {

// `name` is the filter or test used, for the functions that serve several.
using Filter = absl::StatusOr<Value> (*)(const std::string& name, const Value& v,
                                         const CallArgs& args, StepBudget& budget);
using Test = absl::StatusOr<bool> (*)(const std::string& name, const Value& v,
                                      const CallArgs& args);

// ---- tests ----

absl::StatusOr<bool> TypeTest(const std::string& name, const Value& v, const CallArgs&) {
  static const std::unordered_map<std::string, bool (*)(const Value&)> kTypes = {
      {"defined", [](const Value& x) { return !x.is_undefined(); }},
      {"undefined", [](const Value& x) { return x.is_undefined(); }},
      {"none", [](const Value& x) { return x.is_none(); }},
      {"boolean", [](const Value& x) { return x.is_bool(); }},
      {"false", [](const Value& x) { return x.is_bool() && !x.as_bool(); }},
      {"true", [](const Value& x) { return x.is_bool() && x.as_bool(); }},
      {"integer", [](const Value& x) { return x.is_int(); }},
      {"float", [](const Value& x) { return x.is_float(); }},
      {"number", [](const Value& x) { return x.is_number(); }},
      {"string", [](const Value& x) { return x.is_string(); }},
      {"mapping", [](const Value& x) { return x.is_dict(); }},
      {"iterable",
       [](const Value& x) {
         return x.is_string() || x.is_list() || x.is_dict() || x.is_undefined();
       }},
      {"sequence",
       [](const Value& x) {
         return x.is_string() || x.is_list() || x.is_dict() || x.is_undefined();
       }},
      {"callable", [](const Value& x) { return x.is_callable(); }},
      {"escaped", [](const Value&) { return false; }},
  };
  return kTypes.at(name)(v);
}

absl::StatusOr<bool> CaseTest(const std::string& name, const Value& v, const CallArgs&) {
  if (!v.is_string()) return false;
  return name == "lower" ? IsLowerString(v.as_string()) : IsUpperString(v.as_string());
}

absl::StatusOr<bool> ParityTest(const std::string& name, const Value& v, const CallArgs&) {
  if (!v.is_int() && !v.is_bool()) {
    return Error(absl::StrCat("test '", name, "' expects an integer"));
  }
  bool odd = (v.as_int() % 2) != 0;
  return name == "odd" ? odd : !odd;
}

// The tests below compare with their one argument.
absl::StatusOr<const Value*> OtherArg(const std::string& name, const CallArgs& args) {
  const Value* a0 = Arg(args, 0, "other");
  if (!a0) return Error(absl::StrCat("test '", name, "' takes an argument"));
  return a0;
}

absl::StatusOr<bool> DivisibleByTest(const std::string& name, const Value& v,
                                     const CallArgs& args) {
  absl::StatusOr<const Value*> a0 = OtherArg(name, args);
  if (!a0.ok()) return a0.status();
  const Value& d = **a0;
  if (!(v.is_int() || v.is_bool()) || !(d.is_int() || d.is_bool()) || d.as_int() == 0) {
    return Error("divisibleby expects non-zero integers");
  }
  return v.as_int() % d.as_int() == 0;
}

absl::StatusOr<bool> SameAsTest(const std::string& name, const Value& v, const CallArgs& args) {
  absl::StatusOr<const Value*> a0 = OtherArg(name, args);
  if (!a0.ok()) return a0.status();
  const Value& o = **a0;
  if (v.is_none() || v.is_bool() || v.is_undefined()) return v.type() == o.type() && v.Equals(o);
  return v.Equals(o) && v.type() == o.type() && (v.is_int() || v.is_string());
}

absl::StatusOr<bool> CompareTest(const std::string& name, const Value& v, const CallArgs& args) {
  static const std::unordered_map<std::string, std::string> kOps = {
      {"eq", "=="}, {"equalto", "=="}, {"==", "=="},      {"ne", "!="},
      {"!=", "!="}, {"lt", "<"},       {"lessthan", "<"}, {"<", "<"},
      {"le", "<="}, {"<=", "<="},      {"gt", ">"},       {"greaterthan", ">"},
      {">", ">"},   {"ge", ">="},      {">=", ">="},      {"in", "in"}};
  absl::StatusOr<const Value*> a0 = OtherArg(name, args);
  if (!a0.ok()) return a0.status();
  return Compare(kOps.at(name), v, **a0);
}

const std::unordered_map<std::string, Test>& Tests() {
  static const auto* table = new std::unordered_map<std::string, Test>{
      {"defined", TypeTest},        {"undefined", TypeTest},
      {"none", TypeTest},           {"boolean", TypeTest},
      {"false", TypeTest},          {"true", TypeTest},
      {"integer", TypeTest},        {"float", TypeTest},
      {"number", TypeTest},         {"string", TypeTest},
      {"mapping", TypeTest},        {"iterable", TypeTest},
      {"sequence", TypeTest},       {"callable", TypeTest},
      {"escaped", TypeTest},        {"lower", CaseTest},
      {"upper", CaseTest},          {"odd", ParityTest},
      {"even", ParityTest},         {"divisibleby", DivisibleByTest},
      {"sameas", SameAsTest},       {"eq", CompareTest},
      {"equalto", CompareTest},     {"==", CompareTest},
      {"ne", CompareTest},          {"!=", CompareTest},
      {"lt", CompareTest},          {"lessthan", CompareTest},
      {"<", CompareTest},           {"le", CompareTest},
      {"<=", CompareTest},          {"gt", CompareTest},
      {"greaterthan", CompareTest}, {">", CompareTest},
      {"ge", CompareTest},          {">=", CompareTest},
      {"in", CompareTest},
  };
  return *table;
}

// ---- filters: strings ----

absl::StatusOr<Value> DefaultFilter(const std::string&, const Value& v, const CallArgs& args,
                                    StepBudget&) {
  const Value* def = Arg(args, 0, "default_value");
  bool boolean = BoolArg(args, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !v.Truthy())) return def ? *def : Value::String("");
  return v;
}

absl::StatusOr<Value> SafeFilter(const std::string&, const Value& v, const CallArgs&, StepBudget&) {
  return v;
}

absl::StatusOr<Value> StringFilter(const std::string& name, const Value& v, const CallArgs&,
                                   StepBudget&) {
  return Value::String(name == "pprint" ? v.Repr() : v.Str());
}

absl::StatusOr<Value> LengthFilter(const std::string&, const Value& v, const CallArgs&,
                                   StepBudget&) {
  absl::StatusOr<int64_t> n = Length(v);
  if (!n.ok()) return n.status();
  return Value::Int(*n);
}

absl::StatusOr<Value> TrimFilter(const std::string&, const Value& v, const CallArgs& args,
                                 StepBudget&) {
  const Value* chars = Arg(args, 0, "chars");
  const std::string* set = chars && chars->is_string() ? &chars->as_string() : nullptr;
  return Value::String(Strip(v.Str(), set, true, true));
}

absl::StatusOr<Value> CaseFilter(const std::string& name, const Value& v, const CallArgs&,
                                 StepBudget&) {
  if (name == "upper") return Value::String(Upper(v.Str()));
  if (name == "lower") return Value::String(Lower(v.Str()));
  if (name == "capitalize") return Value::String(Capitalize(v.Str()));
  return Value::String(Title(v.Str()));
}

// Exactly str.replace, on the value's str().
absl::StatusOr<Value> ReplaceFilter(const std::string&, const Value& v, const CallArgs& args,
                                    StepBudget&) {
  return *CallMethod(Value::String(v.Str()), "replace", args);
}

absl::StatusOr<Value> ToJsonFilter(const std::string&, const Value& v, const CallArgs& args,
                                   StepBudget&) {
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

absl::StatusOr<Value> IndentFilter(const std::string&, const Value& v, const CallArgs& args,
                                   StepBudget&) {
  const Value* width = Arg(args, 0, "width");
  bool first = BoolArg(args, 1, "first", false);
  bool blank = BoolArg(args, 2, "blank", false);
  std::string ind = width && width->is_string()
                        ? width->as_string()
                        : std::string(static_cast<size_t>(std::clamp<int64_t>(
                                          width && width->is_int() ? width->as_int() : 4, 0, 256)),
                                      ' ');
  std::string s = v.Str() + "\n";
  std::vector<std::string> lines = SplitSep(s, "\n", -1);
  lines.pop_back();
  if (!ind.empty() &&
      static_cast<int64_t>(lines.size()) >
          (kMaxStringBytes - static_cast<int64_t>(s.size())) / static_cast<int64_t>(ind.size())) {
    return Error(absl::StrCat("indent result exceeds the limit of ", kMaxStringBytes, " bytes"));
  }
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

// jinja2 counts matches of the regex \w+, whose \w is str.isalnum() or '_'.
absl::StatusOr<Value> WordCountFilter(const std::string&, const Value& v, const CallArgs&,
                                      StepBudget&) {
  int64_t words = 0;
  bool in_word = false;
  Utf8Reader reader(v.Str());
  for (char32_t c; reader.Next(&c);) {
    bool w = IsPyAlnum(c) || c == '_';
    if (w && !in_word) ++words;
    in_word = w;
  }
  return Value::Int(words);
}

absl::StatusOr<Value> EscapeFilter(const std::string&, const Value& v, const CallArgs&,
                                   StepBudget&) {
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

absl::StatusOr<Value> FormatFilter(const std::string&, const Value& v, const CallArgs& args,
                                   StepBudget&) {
  return PercentFormat(v.Str(), Value::List(args.positional, true));
}

// ---- filters: sequences ----

absl::StatusOr<Value> FirstLastFilter(const std::string& name, const Value& v, const CallArgs&,
                                      StepBudget&) {
  absl::StatusOr<ValueList> items = Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty())
    return Value::Undefined(absl::StrCat("No ", name, " item, sequence was empty."));
  return name == "first" ? items->front() : items->back();
}

absl::StatusOr<Value> ListFilter(const std::string&, const Value& v, const CallArgs&, StepBudget&) {
  absl::StatusOr<ValueList> items = Iterate(v);
  if (!items.ok()) return items.status();
  return Value::List(*std::move(items));
}

absl::StatusOr<Value> ItemsFilter(const std::string&, const Value& v, const CallArgs&,
                                  StepBudget&) {
  if (v.is_undefined()) return Value::List({});
  if (!v.is_dict())
    return Error(absl::StrCat("items filter expects a mapping, got ", v.TypeName()));
  ValueList out;
  for (const auto& [k, x] : v.as_dict().entries)
    out.push_back(Value::List({Value::String(k), x}, true));
  return Value::List(std::move(out));
}

// What join and sum combine: the item, or its `attribute` (a dotted path)
// when one is given as a string.
absl::StatusOr<Value> ItemOrAttribute(const Value& item, const Value* attribute) {
  if (attribute && attribute->is_string()) return AttrPath(item, attribute->as_string());
  return item;
}

absl::StatusOr<Value> JoinFilter(const std::string&, const Value& v, const CallArgs& args,
                                 StepBudget&) {
  const Value* sep = Arg(args, 0, "d");
  const Value* attribute = Arg(args, 1, "attribute");
  absl::StatusOr<ValueList> items = Iterate(v);
  if (!items.ok()) return items.status();
  std::string out;
  std::string d = sep && !sep->is_undefined() ? sep->Str() : std::string();
  for (size_t i = 0; i < items->size(); ++i) {
    absl::StatusOr<Value> item = ItemOrAttribute((*items)[i], attribute);
    if (!item.ok()) return item;
    if (i > 0) out += d;
    out += item->Str();
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> ReverseFilter(const std::string&, const Value& v, const CallArgs&,
                                    StepBudget&) {
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

// select / reject / selectattr / rejectattr.
absl::StatusOr<Value> SelectFilter(const std::string& name, const Value& input,
                                   const CallArgs& args, StepBudget&) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool select = name == "select" || name == "selectattr";
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
  return Value::List(std::move(out));
}

absl::StatusOr<Value> MapFilter(const std::string&, const Value& v, const CallArgs& args,
                                StepBudget& budget) {
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
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return Error("map needs a filter name");
  }
  std::string filter = args.positional[0].as_string();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : *items) {
    absl::StatusOr<Value> r = ApplyFilter(filter, item, rest, budget);
    if (!r.ok()) return r;
    out.push_back(*std::move(r));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> AttrFilter(const std::string&, const Value& v, const CallArgs& args,
                                 StepBudget&) {
  absl::StatusOr<std::string> a = StringArg(args, 0, "name", "attr");
  if (!a.ok()) return a.status();
  return GetAttr(v, *a);
}

absl::StatusOr<Value> SumFilter(const std::string&, const Value& v, const CallArgs& args,
                                StepBudget&) {
  const Value* attribute = Arg(args, 0, "attribute");
  const Value* start = Arg(args, 1, "start");
  absl::StatusOr<ValueList> items = Iterate(v);
  if (!items.ok()) return items.status();
  Value total = start ? *start : Value::Int(0);
  for (const Value& item : *items) {
    absl::StatusOr<Value> x = ItemOrAttribute(item, attribute);
    if (!x.ok()) return x;
    absl::StatusOr<Value> t = BinaryOp("+", total, *x);
    if (!t.ok()) return t;
    total = *std::move(t);
  }
  return total;
}

// The key sort/min/max/unique compare: the item or its attribute, lower-cased
// unless case_sensitive.
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

// Orders (key, item) pairs by key; the first error Less reports ends up in
// *status and makes every later comparison false.
auto KeyLess(absl::Status* status) {
  return [status](const std::pair<Value, Value>& a, const std::pair<Value, Value>& b) {
    if (!status->ok()) return false;
    absl::StatusOr<bool> r = Less(a.first, b.first);
    if (!r.ok()) {
      *status = r.status();
      return false;
    }
    return *r;
  };
}

ValueList Seconds(std::vector<std::pair<Value, Value>>& keyed) {
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

// sort / min / max / unique.
absl::StatusOr<Value> OrderFilter(const std::string& name, const Value& v, const CallArgs& args,
                                  StepBudget&) {
  const bool sort = name == "sort";
  bool reverse = sort ? BoolArg(args, 0, "reverse", false) : false;
  bool case_sensitive = BoolArg(args, sort ? 1 : 0, "case_sensitive", false);
  const Value* attribute = Arg(args, sort ? 2 : 1, "attribute");
  std::string attr = attribute && attribute->is_string() ? attribute->as_string() : std::string();
  absl::StatusOr<ValueList> items = Iterate(v);
  if (!items.ok()) return items.status();
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : *items) {
    absl::StatusOr<Value> k = SortKey(item, attr, case_sensitive);
    if (!k.ok()) return k;
    keyed.emplace_back(*std::move(k), item);
  }
  if (name == "unique") {
    // Scalars are looked up by a key that is equal exactly when Python's ==
    // is (1 == 1.0 == True), so the filter stays linear; lists and dicts are
    // compared one by one.
    ValueList out;
    std::unordered_set<std::string> seen_scalars;
    std::vector<Value> seen_others;
    for (const auto& [k, item] : keyed) {
      bool dup;
      if (k.is_string()) {
        dup = !seen_scalars.insert("s" + k.as_string()).second;
      } else if (k.is_float() && std::isnan(k.as_double())) {
        dup = false;  // nan != nan
      } else if (k.is_number() || k.is_none()) {
        const double d = k.is_none() ? 0 : k.as_double();
        const bool integral = k.is_number() && !k.is_float();
        dup = !seen_scalars
                   .insert(k.is_none() ? std::string("N")
                           : integral  ? absl::StrCat("i", k.as_int())
                           : d == std::trunc(d) && std::abs(d) < 9.2e18
                               ? absl::StrCat("i", static_cast<int64_t>(d))
                               : absl::StrCat("f", PythonFloatRepr(d)))
                   .second;
      } else {
        const Value& key = k;  // clang 14 cannot capture a structured binding (C++20)
        dup = std::any_of(seen_others.begin(), seen_others.end(),
                          [&](const Value& s) { return s.Equals(key); });
        if (!dup) seen_others.push_back(k);
      }
      if (!dup) out.push_back(item);
    }
    return Value::List(std::move(out));
  }
  absl::Status status;
  if (sort) {
    std::stable_sort(keyed.begin(), keyed.end(), KeyLess(&status));
    if (!status.ok()) return status;
    if (reverse) std::reverse(keyed.begin(), keyed.end());
    return Value::List(Seconds(keyed));
  }
  if (keyed.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  auto it = name == "min" ? std::min_element(keyed.begin(), keyed.end(), KeyLess(&status))
                          : std::max_element(keyed.begin(), keyed.end(), KeyLess(&status));
  if (!status.ok()) return status;
  return it->second;
}

absl::StatusOr<Value> DictSortFilter(const std::string&, const Value& v, const CallArgs& args,
                                     StepBudget&) {
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
  std::stable_sort(keyed.begin(), keyed.end(), KeyLess(&status));
  if (!status.ok()) return status;
  if (reverse) std::reverse(keyed.begin(), keyed.end());
  return Value::List(Seconds(keyed));
}

// ---- filters: numbers ----

absl::StatusOr<Value> IntFilter(const std::string&, const Value& v, const CallArgs& args,
                                StepBudget&) {
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
    if (std::optional<int64_t> i = ParseInt(v.as_string(), static_cast<int>(*base))) {
      return Value::Int(*i);
    }
    if (std::optional<double> d = ParseFloat(v.as_string());
        d && std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(*d));
    }
  }
  return Value::Int(*def);
}

absl::StatusOr<Value> FloatFilter(const std::string&, const Value& v, const CallArgs& args,
                                  StepBudget&) {
  const Value* def = Arg(args, 0, "default");
  if (v.is_number()) return Value::Float(v.as_double());
  if (v.is_string()) {
    if (std::optional<double> d = ParseFloat(v.as_string())) return Value::Float(*d);
  }
  return def ? Value::Float(def->as_double()) : Value::Float(0.0);
}

absl::StatusOr<Value> AbsFilter(const std::string&, const Value& v, const CallArgs&, StepBudget&) {
  if (v.is_float()) return Value::Float(std::fabs(v.as_double()));
  if (v.is_int() || v.is_bool()) {
    if (v.as_int() == INT64_MIN) return Error("integer overflow");
    return Value::Int(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  return Error(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
}

absl::StatusOr<Value> RoundFilter(const std::string&, const Value& v, const CallArgs& args,
                                  StepBudget&) {
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

const std::unordered_map<std::string, Filter>& Filters() {
  static const auto* table = new std::unordered_map<std::string, Filter>{
      {"default", DefaultFilter},
      {"d", DefaultFilter},
      {"safe", SafeFilter},
      {"forceescape_off", SafeFilter},
      {"string", StringFilter},
      {"pprint", StringFilter},
      {"length", LengthFilter},
      {"count", LengthFilter},
      {"trim", TrimFilter},
      {"upper", CaseFilter},
      {"lower", CaseFilter},
      {"capitalize", CaseFilter},
      {"title", CaseFilter},
      {"replace", ReplaceFilter},
      {"tojson", ToJsonFilter},
      {"indent", IndentFilter},
      {"wordcount", WordCountFilter},
      {"escape", EscapeFilter},
      {"e", EscapeFilter},
      {"format", FormatFilter},
      {"first", FirstLastFilter},
      {"last", FirstLastFilter},
      {"list", ListFilter},
      {"items", ItemsFilter},
      {"join", JoinFilter},
      {"reverse", ReverseFilter},
      {"select", SelectFilter},
      {"reject", SelectFilter},
      {"selectattr", SelectFilter},
      {"rejectattr", SelectFilter},
      {"map", MapFilter},
      {"attr", AttrFilter},
      {"sum", SumFilter},
      {"sort", OrderFilter},
      {"min", OrderFilter},
      {"max", OrderFilter},
      {"unique", OrderFilter},
      {"dictsort", DictSortFilter},
      {"int", IntFilter},
      {"float", FloatFilter},
      {"abs", AbsFilter},
      {"round", RoundFilter},
  };
  return *table;
}

}  // namespace

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, const CallArgs& args,
                                  StepBudget& budget) {
  if (absl::Status s = budget.Tick(); !s.ok()) return s;
  auto it = Filters().find(name);
  if (it == Filters().end()) return Error(absl::StrCat("no filter named '", name, "'"));
  return it->second(name, v, args, budget);
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v, const CallArgs& args) {
  auto it = Tests().find(name);
  if (it == Tests().end()) return Error(absl::StrCat("no test named '", name, "'"));
  return it->second(name, v, args);
}

}  // namespace retort::jinja
