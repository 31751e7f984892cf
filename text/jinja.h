// A Jinja2 interpreter for the part of the language that Hugging Face chat
// templates use, configured the way transformers configures it
// (ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks on, the
// loopcontrols extension, and transformers' own tojson / raise_exception /
// strftime_now / namespace / dict globals).
//
// Values follow Python and Jinja semantics where templates can observe them:
// truthiness, `==` across int/float/bool, Python's str()/repr() of None, True,
// floats, lists and dicts, dicts that keep insertion order, Jinja's Undefined
// (prints as "", is falsy and iterates as empty, but reading an attribute or
// item of it, calling it or doing arithmetic with it is an error), and the
// sandbox's immutability (lists and dicts cannot be changed; only a
// namespace() can be assigned to).
//
// Supported: {{ }}, {% %}, {# #}, `-`/`+` whitespace control; if/elif/else;
// for (loop.*, for-else, `for x in y if cond`, unpacking, break/continue);
// set (plain, tuple, `ns.attr`, block); macro; filter blocks; raw; the
// transformers `generation` tag (renders its body). Expressions: literals,
// list/tuple/dict displays, attribute/item/slice access, calls with keyword
// arguments, filters, tests, `a if c else b`, and/or/not, in/not in,
// comparisons (chained), + - * / // % ** ~. Python methods of str (strip,
// split, startswith, replace, ...), dict (get, keys, values, items).
// Unicode-aware where Python is (length, indexing and slicing count code
// points); case mappings and the is*() predicates use Unicode's tables
// (utf8proc), as Python's str does (jinja_pystr.h lists the few differences).
//
// Bad templates never crash or hang: parse errors carry a line number,
// evaluation is bounded in steps, call depth and output size.
//
// Thread-safety: a parsed Template is immutable; Render may be called from
// several threads at once.
#ifndef RETORT_TEXT_JINJA_H_
#define RETORT_TEXT_JINJA_H_

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort::jinja {

class Value;
struct ValueDict;
struct Callable;
using ValueList = std::vector<Value>;

// One Jinja value. Copies are cheap: strings, lists and dicts are shared and
// immutable; a namespace is shared and mutable (that is the point of it).
class Value {
 public:
  enum class Type {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() = default;  // Undefined
  static Value Undefined(std::string hint = "");
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(ValueList items, bool tuple = false);
  static Value Dict(ValueDict dict);
  static Value Namespace(ValueDict dict);
  static Value Function(std::shared_ptr<const Callable> fn);

  // JSON objects keep their key order with ordered_json; with nlohmann::json
  // they come in sorted order (that is all that type remembers).
  static Value FromJson(const nlohmann::ordered_json& j);
  static Value FromJson(const nlohmann::json& j);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_int() const { return type_ == Type::kInt; }
  bool is_float() const { return type_ == Type::kFloat; }
  bool is_number() const {
    return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool;
  }
  bool is_string() const { return type_ == Type::kString; }
  bool is_list() const { return type_ == Type::kList; }
  bool is_tuple() const { return type_ == Type::kList && tuple_; }
  bool is_dict() const { return type_ == Type::kDict; }
  bool is_namespace() const { return type_ == Type::kNamespace; }
  bool is_callable() const { return type_ == Type::kCallable; }

  bool as_bool() const { return bool_; }
  int64_t as_int() const { return type_ == Type::kBool ? (bool_ ? 1 : 0) : int_; }
  double as_double() const;              // any number
  const std::string& as_string() const;  // string value, or an Undefined's hint
  const ValueList& as_list() const;
  const ValueDict& as_dict() const;  // dict or namespace
  ValueDict& mutable_namespace() const;
  const Callable& as_callable() const;

  // Python truthiness (Undefined is false).
  bool Truthy() const;
  // Python str(): what {{ value }} prints ("" for Undefined).
  std::string Str() const;
  // Python repr(): how the value prints inside a list or dict.
  std::string Repr() const;
  // Python ==.
  bool Equals(const Value& other) const;
  // Name of the Python type, for error messages ("str", "dict", ...).
  std::string TypeName() const;
  // How deeply lists and dicts nest in this value, counted when each was
  // built (0 for a scalar, 1 for a flat list). A namespace counts as 1: its
  // contents can change after it is built, so printing it guards itself.
  int depth() const { return depth_; }

 private:
  Type type_ = Type::kUndefined;
  bool bool_ = false;
  bool tuple_ = false;
  int32_t depth_ = 0;
  int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<const std::string> str_;
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<const Callable> fn_;
};

// String-keyed map that keeps insertion order, like a Python dict from JSON.
struct ValueDict {
  std::vector<std::pair<std::string, Value>> entries;

  const Value* Find(const std::string& key) const;
  // Replaces the value of an existing key in place, or appends the key.
  void Set(const std::string& key, Value value);
};

// Positional and keyword arguments of a call.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

class Interpreter;

// A function a template can call: a macro, a global such as range(), or a
// bound helper such as loop.cycle.
struct Callable {
  std::string name;
  std::function<absl::StatusOr<Value>(Interpreter& interp, const CallArgs& args)> fn;
};

struct RenderOptions {
  // strftime_now() formats this instead of the local time when set.
  std::optional<std::tm> fixed_now;
  // Limits that turn a runaway template into an error.
  size_t max_output_bytes = size_t{256} << 20;
  int64_t max_steps = 20'000'000;  // statements executed + loop iterations + calls
  int max_call_depth = 100;        // nested macro calls
};

struct Program;  // parsed template (defined in jinja.cc)

// A parsed template.
class Template {
 public:
  // Parses `source`. Errors are InvalidArgument and say "line N: ...".
  static absl::StatusOr<Template> Parse(const std::string& source);

  // Renders with `context` as the template's variables (on top of the
  // globals range, namespace, dict, raise_exception, strftime_now).
  // raise_exception("msg") gives InvalidArgument whose message ends with msg;
  // other errors name the line they happened on.
  absl::StatusOr<std::string> Render(const ValueDict& context,
                                     const RenderOptions& options = RenderOptions()) const;

 private:
  std::shared_ptr<const Program> program_;
};

// Python json.dumps of `value` with transformers' tojson defaults
// (ensure_ascii=False). `indent` < 0 means none; a non-empty `indent_str`
// overrides it (Python accepts a string indent too). Without
// `item_separator` Python's default applies: ", " or "," when indenting.
absl::StatusOr<std::string> ToJson(const Value& value, int indent = -1, bool ensure_ascii = false,
                                   bool sort_keys = false,
                                   const std::optional<std::string>& item_separator = std::nullopt,
                                   const std::string& key_separator = ": ",
                                   const std::string& indent_str = "");

// Python repr() of a float ("1.0", "0.1", "1e+16", "1.5e-05", "inf").
std::string PythonFloatRepr(double d);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_H_
