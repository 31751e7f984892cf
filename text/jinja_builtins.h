// What a template can call by name besides its own macros: the Python methods
// of str, dict and list (`s.strip()`), Jinja's filters (`x|trim`) and tests
// (`x is defined`). Each is a table from name to function; one function may
// serve several names (first/last, select/reject) and is told which.
// Internal to the Jinja engine (see jinja.h).
#ifndef RETORT_TEXT_JINJA_BUILTINS_H_
#define RETORT_TEXT_JINJA_BUILTINS_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "text/jinja.h"
#include "text/jinja_ops.h"

namespace retort::jinja {

// obj.name(args) for a Python method of str, dict or list; nullopt when obj
// has no such method (the caller then looks for a callable attribute).
std::optional<absl::StatusOr<Value>> CallMethod(const Value& obj, const std::string& name,
                                                const CallArgs& args);

// v|name(args). Each filter, including the ones map() applies, costs a step.
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, const CallArgs& args,
                                  StepBudget& budget);

// v is name(args).
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v, const CallArgs& args);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_BUILTINS_H_
