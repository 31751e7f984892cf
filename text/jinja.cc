// The public entry points of the Jinja engine (jinja.h) and the globals a
// template sees. The engine's parts: jinja_lexer, jinja_parser (syntax tree
// in jinja_ast.h), jinja_interpreter, jinja_ops (operations on values),
// jinja_methods and jinja_filters (the name -> function tables of
// jinja_builtins.h), jinja_pystr (Python str semantics) and jinja_value.
#include "text/jinja.h"

#include <ctime>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "text/jinja_ast.h"
#include "text/jinja_interpreter.h"
#include "text/jinja_ops.h"

namespace retort::jinja {
std::unordered_map<std::string, Value> Globals() {
  std::unordered_map<std::string, Value> g;
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
        // The item count, in 128 bits so that no bound overflows.
        const __int128 span = static_cast<__int128>(stop) - start;
        const __int128 count = step > 0 ? (span > 0 ? (span + step - 1) / step : 0)
                                        : (span < 0 ? (-span + (-static_cast<__int128>(step)) - 1) /
                                                          (-static_cast<__int128>(step))
                                                    : 0);
        if (count > kMaxRangeItems) {
          return Error(absl::StrCat("range() of more than ", kMaxRangeItems,
                                    " items (the limit of jinja2's sandbox)"));
        }
        ValueList out;
        out.reserve(static_cast<size_t>(count));
        for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) {
          out.push_back(Value::Int(static_cast<int64_t>(start + static_cast<__int128>(k) * step)));
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
  g["dict"] = MakeFunction("dict", [](Interpreter&, const CallArgs& args) -> absl::StatusOr<Value> {
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
