// The syntax tree of a Jinja template: what jinja_parser.cc builds and the
// interpreter walks. Internal to the Jinja engine, not part of the public API
// (see jinja.h).
#ifndef RETORT_TEXT_JINJA_AST_H_
#define RETORT_TEXT_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "text/jinja.h"

namespace retort::jinja {

enum class ExprKind {
  kLiteral,  // value
  kName,     // name
  kList,     // args = items
  kTuple,    // args = items
  kDict,     // args = key0, value0, key1, value1, ...
  kAttr,     // args[0].name
  kItem,     // args[0][args[1]]
  kSlice,    // args[0][args[1]:args[2]:args[3]] (null parts allowed)
  kCall,     // args[0](args[1:], kwargs)
  kFilter,   // args[0] | name(args[1:], kwargs); args[0] null inside a filter block
  kTest,     // args[0] is [not] name(args[1:], kwargs)
  kNeg,      // -args[0]
  kPos,      // +args[0]
  kNot,      // not args[0]
  kBinary,   // args[0] name args[1]; name in + - * / // % ** ~
  kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ...
  kAnd,      // args[0] and args[1]
  kOr,       // args[0] or args[1]
  kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  Value value;
  std::string name;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
  int depth = 1;  // height of this subtree; the parser bounds it
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

enum class NodeKind {
  kText,         // text
  kOutput,       // {{ expr }}
  kIf,           // branches (cond, body) ..., else_body
  kFor,          // for targets in expr [if cond]: body else else_body
  kSet,          // set targets = expr; or set targets[0].attr = expr when attr non-empty
  kSetBlock,     // set targets[0] %}body{% endset; optional filter chain in expr
  kMacro,        // macro name(params = defaults): body
  kFilterBlock,  // filter chain expr (innermost input null) applied to body
  kBreak,
  kContinue,
  kScope,  // body rendered in place (generation tag)
};

struct Node {
  NodeKind kind = NodeKind::kText;
  int line = 0;
  std::string text;
  std::string name;
  std::string attr;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param, null when it has none
};

struct Program {
  Body body;
};

// Lexes and parses a template the way transformers' Jinja environment does
// (trim_blocks, lstrip_blocks, no trailing newline kept).
absl::StatusOr<std::shared_ptr<const Program>> ParseProgram(const std::string& source);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_AST_H_
