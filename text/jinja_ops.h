// Operations on Jinja values that the interpreter, the filters and the
// methods share: Python's iteration, len(), attribute and item access,
// slicing, ordering, `in`, the arithmetic operators and `%` formatting; the
// reading of call arguments; and the step budget that bounds a render.
// Internal to the Jinja engine (see jinja.h).
#ifndef RETORT_TEXT_JINJA_OPS_H_
#define RETORT_TEXT_JINJA_OPS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "text/jinja.h"

namespace retort::jinja {

// Limits on the values a render may build, so that a hostile template ends in
// an error instead of exhausting memory. jinja2's sandbox (which transformers
// renders chat templates in) caps range() at 100,000 items; the rest are ours.
inline constexpr int64_t kMaxRangeItems = 100'000;
inline constexpr int64_t kMaxStringBytes = int64_t{64} << 20;  // one str value
inline constexpr int64_t kMaxListItems = int64_t{1} << 20;     // one list, or a str iterated
inline constexpr int kMaxValueDepth = 200;                     // nested lists and dicts

// An error when `v` is larger or deeper than the limits above, naming them.
absl::Status CheckValueSize(const Value& v);

// A template error (InvalidArgument).
absl::Status Error(const std::string& msg);
// Prefixes "line N: " unless the message already names a line.
absl::Status AtLine(const absl::Status& s, int line);
// What using an Undefined says: its hint, or "value is undefined".
std::string UndefinedMessage(const Value& v);

// Counts statements, loop iterations, calls and filters against
// RenderOptions::max_steps, so that a runaway template ends in an error.
class StepBudget {
 public:
  explicit StepBudget(int64_t max_steps);
  absl::Status Tick();

 private:
  int64_t max_steps_;
  int64_t steps_ = 0;
};

// Argument `index`, or keyword `name`, of a call; null when absent.
const Value* Arg(const CallArgs& args, size_t index, const char* name);
// A str argument; `def` when absent, else an error naming `fn` and `name`.
absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t index, const char* name,
                                      const char* fn,
                                      std::optional<std::string> def = std::nullopt);
// An int argument; `def` when absent or None.
absl::StatusOr<int64_t> IntArg(const CallArgs& args, size_t index, const char* name, const char* fn,
                               int64_t def);
// Truthiness of an argument; `def` when absent.
bool BoolArg(const CallArgs& args, size_t index, const char* name, bool def);

// The items a for loop sees: list items, dict keys, the characters of a str
// (Undefined iterates as empty).
absl::StatusOr<ValueList> Iterate(const Value& v);
absl::StatusOr<int64_t> Length(const Value& v);
// obj.name and obj[key], Jinja-style: a missing attribute or item is an
// Undefined carrying the reason, not an error.
absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// Follows a dotted path ("function.name", "0") like Jinja's attribute=.
absl::StatusOr<Value> AttrPath(const Value& v, const std::string& path);
// obj[start:stop:step] of a list or str; absent parts are Undefined or None.
absl::StatusOr<Value> Slice(const Value& obj, const Value& start_v, const Value& stop_v,
                            const Value& step_v);

// Python <, and `item in container`.
absl::StatusOr<bool> Less(const Value& a, const Value& b);
absl::StatusOr<bool> Contains(const Value& container, const Value& item);
// A comparison operator: == != < > <= >= in, "not in".
absl::StatusOr<bool> Compare(const std::string& op, const Value& a, const Value& b);
// A binary operator: + - * / // % ** ~ (int overflow is an error).
absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b);
// Python's "fmt % args" for the conversions templates use (%s %r %d %i %f
// %e %g %%); a tuple supplies several arguments.
absl::StatusOr<Value> PercentFormat(const std::string& fmt, const Value& args_value);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_OPS_H_
