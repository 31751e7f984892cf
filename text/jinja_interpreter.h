// The Jinja interpreter: renders a parsed Program (jinja_ast.h) over Values,
// with Python's scoping as jinja2 implements it (a for loop or macro body gets
// its own frame; a macro sees the globals and the template's variables, not
// its caller's), macros, loops with loop.*, break/continue, and the limits of
// RenderOptions. One Interpreter renders one template once; it is not
// thread-safe, but any number may render the same Program at once.
// Internal to the Jinja engine (see jinja.h).
#ifndef RETORT_TEXT_JINJA_INTERPRETER_H_
#define RETORT_TEXT_JINJA_INTERPRETER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "text/jinja.h"
#include "text/jinja_ast.h"
#include "text/jinja_ops.h"

namespace retort::jinja {

// A callable Value named `name`.
Value MakeFunction(std::string name,
                   std::function<absl::StatusOr<Value>(Interpreter&, const CallArgs&)> fn);

// The globals every template sees: range, namespace, dict, raise_exception,
// strftime_now (jinja.cc).
std::unordered_map<std::string, Value> Globals();

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options);

  // Renders `program` with `context` as its variables.
  absl::StatusOr<std::string> Run(const Program& program, const ValueDict& context);

  // fn(args) for any callable Value; errors name `line`.
  absl::StatusOr<Value> CallValue(const Value& fn, const CallArgs& args, int line);

  const RenderOptions& options() const { return options_; }

 private:
  using Frame = std::unordered_map<std::string, Value>;
  enum class Pending { kNone, kBreak, kContinue };

  absl::Status Emit(const std::string& s);
  Value Lookup(const std::string& name) const;
  void SetVar(const std::string& name, Value v);
  absl::Status Assign(const std::vector<std::string>& targets, const Value& v, int line);

  // Statements.
  absl::Status ExecBody(const Body& body);
  absl::StatusOr<std::string> Capture(const Body& body);
  absl::Status Exec(const Node& node);
  absl::Status ExecFor(const Node& node);
  static Value MakeLoop(const ValueList& items, int64_t i);
  absl::StatusOr<Value> CallMacro(const Node& macro, const CallArgs& args);

  // Expressions.
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first);
  absl::StatusOr<Value> EvalFilterChain(const Expr& e, const Value& input);
  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalInner(const Expr& e);
  absl::StatusOr<Value> EvalCall(const Expr& e);

  const RenderOptions& options_;
  StepBudget budget_;
  std::vector<std::shared_ptr<Frame>> frames_;
  std::string out_;
  Pending pending_ = Pending::kNone;
  int depth_ = 0;       // nested Exec/Eval calls
  int call_depth_ = 0;  // nested macro calls
};

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_INTERPRETER_H_
