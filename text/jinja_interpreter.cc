#include "text/jinja_interpreter.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "text/jinja_builtins.h"

namespace retort::jinja {
namespace {

// Bound on nested Exec/Eval calls (blocks + expression height + macro
// recursion), keeping the C++ stack well under 1 MB even in debug builds.
constexpr int kMaxEvalDepth = 600;

// Keeps the recursion of Eval/Exec bounded whatever the template does.
struct DepthGuard {
  explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
  ~DepthGuard() { --*depth_; }
  int* depth_;
};

}  // namespace

Value MakeFunction(std::string name,
                   std::function<absl::StatusOr<Value>(Interpreter&, const CallArgs&)> fn) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  return Value::Function(std::move(c));
}

Interpreter::Interpreter(const RenderOptions& options)
    : options_(options), budget_(options.max_steps) {}

absl::StatusOr<std::string> Interpreter::Run(const Program& program, const ValueDict& context) {
  frames_.push_back(std::make_shared<Frame>(Globals()));
  auto root = std::make_shared<Frame>();
  for (const auto& [k, v] : context.entries) (*root)[k] = v;
  frames_.push_back(std::move(root));
  if (absl::Status s = ExecBody(program.body); !s.ok()) return s;
  return std::move(out_);
}

absl::StatusOr<Value> Interpreter::CallValue(const Value& fn, const CallArgs& args, int line) {
  if (fn.is_undefined()) return AtLine(Error(UndefinedMessage(fn)), line);
  if (!fn.is_callable())
    return AtLine(Error(absl::StrCat("'", fn.TypeName(), "' object is not callable")), line);
  if (absl::Status s = budget_.Tick(); !s.ok()) return s;
  absl::StatusOr<Value> r = fn.as_callable().fn(*this, args);
  if (!r.ok()) return AtLine(r.status(), line);
  return r;
}

absl::Status Interpreter::Emit(const std::string& s) {
  out_ += s;
  if (out_.size() > options_.max_output_bytes) {
    return Error(absl::StrCat("template output exceeded ", options_.max_output_bytes, " bytes"));
  }
  return absl::OkStatus();
}

Value Interpreter::Lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
    auto f = (*it)->find(name);
    if (f != (*it)->end()) return f->second;
  }
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

void Interpreter::SetVar(const std::string& name, Value v) {
  (*frames_.back())[name] = std::move(v);
}

absl::Status Interpreter::Assign(const std::vector<std::string>& targets, const Value& v,
                                 int line) {
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

absl::Status Interpreter::ExecBody(const Body& body) {
  for (const auto& node : body) {
    if (absl::Status s = Exec(*node); !s.ok()) return s;
    if (pending_ != Pending::kNone) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Interpreter::Capture(const Body& body) {
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

absl::Status Interpreter::Exec(const Node& node) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxEvalDepth) return AtLine(Error("template nested too deeply"), node.line);
  if (absl::Status s = budget_.Tick(); !s.ok()) return AtLine(s, node.line);
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

absl::Status Interpreter::ExecFor(const Node& node) {
  absl::StatusOr<Value> seq = Eval(*node.expr);
  if (!seq.ok()) return AtLine(seq.status(), node.line);
  absl::StatusOr<ValueList> all = Iterate(*seq);
  if (!all.ok()) return AtLine(all.status(), node.line);
  ValueList items;
  if (node.cond) {
    frames_.push_back(std::make_shared<Frame>());
    for (const Value& item : *all) {
      if (absl::Status s = budget_.Tick(); !s.ok()) {
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
    if (absl::Status s = budget_.Tick(); !s.ok()) return AtLine(s, node.line);
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

Value Interpreter::MakeLoop(const ValueList& items, int64_t i) {
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

absl::StatusOr<Value> Interpreter::CallMacro(const Node& macro, const CallArgs& args) {
  if (call_depth_ >= options_.max_call_depth) {
    return Error(absl::StrCat("macro calls nested deeper than ", options_.max_call_depth));
  }
  if (args.positional.size() > macro.params.size()) {
    return Error(absl::StrCat("macro '", macro.name, "' takes not more than ", macro.params.size(),
                              " argument(s)"));
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

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const Expr& e, size_t first) {
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

absl::StatusOr<Value> Interpreter::EvalFilterChain(const Expr& e, const Value& input) {
  Value in = input;
  if (e.args[0]) {
    absl::StatusOr<Value> inner = EvalFilterChain(*e.args[0], input);
    if (!inner.ok()) return inner;
    in = *std::move(inner);
  }
  absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
  if (!args.ok()) return args.status();
  absl::StatusOr<Value> r = ApplyFilter(e.name, in, *args, budget_);
  if (!r.ok()) return AtLine(r.status(), e.line);
  return r;
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& e) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxEvalDepth) return AtLine(Error("expression nested too deeply"), e.line);
  absl::StatusOr<Value> r = EvalInner(e);
  if (!r.ok()) return AtLine(r.status(), e.line);
  if (absl::Status s = CheckValueSize(*r); !s.ok()) return AtLine(s, e.line);
  return r;
}

absl::StatusOr<Value> Interpreter::EvalInner(const Expr& e) {
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
      return ApplyFilter(e.name, *in, *args, budget_);
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
                                  e.kind == ExprKind::kNeg ? "-" : "+", ": '", v->TypeName(), "'"));
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

absl::StatusOr<Value> Interpreter::EvalCall(const Expr& e) {
  const Expr& callee = *e.args[0];
  absl::StatusOr<CallArgs> args = EvalArgs(e, 1);
  if (!args.ok()) return args.status();
  if (callee.kind == ExprKind::kAttr) {
    absl::StatusOr<Value> obj = Eval(*callee.args[0]);
    if (!obj.ok()) return obj;
    if (obj->is_undefined()) return Error(UndefinedMessage(*obj));
    if (absl::Status s = budget_.Tick(); !s.ok()) return s;
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

}  // namespace retort::jinja
