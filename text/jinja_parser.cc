// The Jinja parser: builds the syntax tree of jinja_ast.h from the lexer's
// tokens. The grammar and operator precedence follow jinja2's parser; depth
// limits keep hostile templates from exhausting the stack.
#include <algorithm>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "text/jinja_ast.h"
#include "text/jinja_lexer.h"

namespace retort::jinja {
namespace {

constexpr int kMaxNesting = 100;    // nested blocks, and recursion while parsing
constexpr int kMaxExprDepth = 200;  // height of one expression tree

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  absl::StatusOr<std::shared_ptr<const Program>> Run() {
    auto program = std::make_shared<Program>();
    std::string end_tag;
    if (!ParseBody({}, &program->body, &end_tag)) return status_;
    if (!status_.ok()) return status_;
    return std::shared_ptr<const Program>(std::move(program));
  }

 private:
  const Token& Cur() const { return toks_[pos_]; }
  const Token& Peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void Advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool IsOp(const char* op) const { return Cur().type == TokType::kOp && Cur().text == op; }
  bool IsName(const char* name) const { return Cur().type == TokType::kName && Cur().text == name; }
  bool SkipOp(const char* op) {
    if (!IsOp(op)) return false;
    Advance();
    return true;
  }
  bool SkipName(const char* name) {
    if (!IsName(name)) return false;
    Advance();
    return true;
  }

  std::nullptr_t Fail(int line, const std::string& msg) {
    if (status_.ok()) status_ = LineError(line, msg);
    return nullptr;
  }
  bool FailB(int line, const std::string& msg) {
    Fail(line, msg);
    return false;
  }

  static std::string Describe(const Token& t) {
    switch (t.type) {
      case TokType::kEof:
        return "end of template";
      case TokType::kText:
        return "template text";
      case TokType::kVarBegin:
        return "'{{'";
      case TokType::kVarEnd:
        return "'}}'";
      case TokType::kBlockBegin:
        return "'{%'";
      case TokType::kBlockEnd:
        return "'%}'";
      case TokType::kString:
        return "string literal";
      default:
        return absl::StrCat("'", t.text, "'");
    }
  }

  bool ExpectOp(const char* op) {
    if (SkipOp(op)) return true;
    return FailB(Cur().line, absl::StrCat("expected '", op, "', got ", Describe(Cur())));
  }
  bool ExpectBlockEnd() {
    if (Cur().type == TokType::kBlockEnd) {
      Advance();
      return true;
    }
    return FailB(Cur().line, absl::StrCat("expected end of statement '%}', got ", Describe(Cur())));
  }
  bool ExpectName(std::string* out) {
    if (Cur().type != TokType::kName) {
      return FailB(Cur().line, absl::StrCat("expected a name, got ", Describe(Cur())));
    }
    *out = Cur().text;
    Advance();
    return true;
  }

  // A filter or test name: a name, or names joined by dots.
  bool ExpectDottedName(std::string* out) {
    if (!ExpectName(out)) return false;
    while (IsOp(".") && Peek().type == TokType::kName) {
      Advance();
      *out += "." + Cur().text;
      Advance();
    }
    return true;
  }

  // Parses nodes until a block tag whose keyword is in `ends` (left
  // unconsumed after the `{%`; its name is stored in *end_tag) or the end of
  // input (an error when `ends` is not empty).
  bool ParseBody(const std::unordered_set<std::string>& ends, Body* body, std::string* end_tag) {
    if (++nesting_ > kMaxNesting) return FailB(Cur().line, "blocks nested too deeply");
    while (status_.ok()) {
      const Token& t = Cur();
      if (t.type == TokType::kEof) {
        if (!ends.empty()) {
          std::string expected;
          for (const auto& e : ends) expected += (expected.empty() ? "" : " or ") + ("'" + e + "'");
          return FailB(t.line, absl::StrCat("unexpected end of template, expected ", expected));
        }
        break;
      }
      if (t.type == TokType::kText) {
        std::unique_ptr<Node> node = MakeNode(NodeKind::kText, t.line);
        node->text = t.text;
        body->push_back(std::move(node));
        Advance();
        continue;
      }
      if (t.type == TokType::kVarBegin) {
        int line = t.line;
        Advance();
        ExprPtr e = ParseTuple(true, false);
        if (!e) return false;
        if (Cur().type != TokType::kVarEnd) {
          return FailB(Cur().line, absl::StrCat("expected '}}', got ", Describe(Cur())));
        }
        Advance();
        std::unique_ptr<Node> node = MakeNode(NodeKind::kOutput, line);
        node->expr = std::move(e);
        body->push_back(std::move(node));
        continue;
      }
      if (t.type == TokType::kBlockBegin) {
        const Token& kw = Peek();
        if (kw.type != TokType::kName)
          return FailB(kw.line, "expected a statement keyword after '{%'");
        if (ends.count(kw.text)) {
          Advance();  // past '{%', leave the keyword
          *end_tag = kw.text;
          --nesting_;
          return true;
        }
        Advance();
        std::unique_ptr<Node> node = ParseStatement();
        if (!node) return false;
        body->push_back(std::move(node));
        continue;
      }
      return FailB(t.line, absl::StrCat("unexpected ", Describe(t)));
    }
    --nesting_;
    return status_.ok();
  }

  // Parses a body that only `{% <end_tag> %}` closes, and that closing tag.
  bool ParseBodyThrough(const char* end_tag, Body* body) {
    std::string end;
    if (!ParseBody({end_tag}, body, &end)) return false;
    Advance();  // end_tag
    return ExpectBlockEnd();
  }

  std::unique_ptr<Node> MakeNode(NodeKind kind, int line) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->line = line;
    return node;
  }

  std::unique_ptr<Node> ParseStatement() {
    const Token& kw = Cur();
    const std::string word = kw.text;
    int line = kw.line;
    if (word == "if") return ParseIf();
    if (word == "for") return ParseFor();
    if (word == "set") return ParseSet();
    if (word == "macro") return ParseMacro();
    if (word == "filter") return ParseFilterBlock();
    if (word == "break" || word == "continue") {
      if (loop_depth_ == 0) return Fail(line, absl::StrCat("'", word, "' outside of a loop"));
      Advance();
      std::unique_ptr<Node> node =
          MakeNode(word == "break" ? NodeKind::kBreak : NodeKind::kContinue, line);
      if (!ExpectBlockEnd()) return nullptr;
      return node;
    }
    if (word == "generation") {
      Advance();
      std::unique_ptr<Node> node = MakeNode(NodeKind::kScope, line);
      if (!ExpectBlockEnd() || !ParseBodyThrough("endgeneration", &node->body)) return nullptr;
      return node;
    }
    return Fail(line, absl::StrCat("unknown or unsupported tag '", word, "'"));
  }

  std::unique_ptr<Node> ParseIf() {
    std::unique_ptr<Node> node = MakeNode(NodeKind::kIf, Cur().line);
    Advance();  // if
    while (true) {
      ExprPtr cond = ParseTuple(true, false);
      if (!cond || !ExpectBlockEnd()) return nullptr;
      Body body;
      std::string end;
      if (!ParseBody({"elif", "else", "endif"}, &body, &end)) return nullptr;
      node->branches.emplace_back(std::move(cond), std::move(body));
      Advance();  // keyword
      if (end == "elif") continue;
      if (end == "else") {
        if (!ExpectBlockEnd() || !ParseBodyThrough("endif", &node->else_body)) return nullptr;
      } else if (!ExpectBlockEnd()) {
        return nullptr;
      }
      return node;
    }
  }

  bool ParseTargets(std::vector<std::string>* targets) {
    bool paren = SkipOp("(");
    while (true) {
      std::string name;
      if (!ExpectName(&name)) return false;
      targets->push_back(name);
      if (!SkipOp(",")) break;
      if (Cur().type != TokType::kName) break;  // trailing comma
    }
    if (paren && !ExpectOp(")")) return false;
    return true;
  }

  std::unique_ptr<Node> ParseFor() {
    std::unique_ptr<Node> node = MakeNode(NodeKind::kFor, Cur().line);
    Advance();  // for
    if (!ParseTargets(&node->targets)) return nullptr;
    if (!SkipName("in"))
      return Fail(Cur().line, absl::StrCat("expected 'in', got ", Describe(Cur())));
    node->expr = ParseTuple(false, false);
    if (!node->expr) return nullptr;
    if (SkipName("if")) {
      node->cond = ParseExpression(true);
      if (!node->cond) return nullptr;
    }
    if (IsName("recursive")) return Fail(Cur().line, "recursive loops are not supported");
    if (!ExpectBlockEnd()) return nullptr;
    ++loop_depth_;
    std::string end;
    bool ok = ParseBody({"else", "endfor"}, &node->body, &end);
    --loop_depth_;
    if (!ok) return nullptr;
    Advance();
    if (end == "else") {
      if (!ExpectBlockEnd() || !ParseBodyThrough("endfor", &node->else_body)) return nullptr;
    } else if (!ExpectBlockEnd()) {
      return nullptr;
    }
    return node;
  }

  std::unique_ptr<Node> ParseSet() {
    std::unique_ptr<Node> node = MakeNode(NodeKind::kSet, Cur().line);
    Advance();  // set
    std::string first;
    if (!ExpectName(&first)) return nullptr;
    node->targets.push_back(first);
    if (SkipOp(".")) {
      if (!ExpectName(&node->attr)) return nullptr;
    } else {
      while (SkipOp(",")) {
        std::string name;
        if (!ExpectName(&name)) return nullptr;
        node->targets.push_back(name);
      }
    }
    if (SkipOp("=")) {
      node->expr = ParseTuple(true, false);
      if (!node->expr || !ExpectBlockEnd()) return nullptr;
      return node;
    }
    // Block form: {% set name [| filters] %}...{% endset %}
    if (node->targets.size() != 1 || !node->attr.empty()) {
      return Fail(node->line, "block set takes a single variable name");
    }
    node->kind = NodeKind::kSetBlock;
    if (IsOp("|")) {
      node->expr = ParseFilterChain(nullptr);
      if (!node->expr) return nullptr;
    }
    if (!ExpectBlockEnd() || !ParseBodyThrough("endset", &node->body)) return nullptr;
    return node;
  }

  std::unique_ptr<Node> ParseMacro() {
    std::unique_ptr<Node> node = MakeNode(NodeKind::kMacro, Cur().line);
    Advance();  // macro
    if (!ExpectName(&node->name)) return nullptr;
    if (!ExpectOp("(")) return nullptr;
    while (!IsOp(")")) {
      std::string param;
      if (!ExpectName(&param)) return nullptr;
      node->params.push_back(param);
      if (SkipOp("=")) {
        ExprPtr def = ParseExpression(true);
        if (!def) return nullptr;
        node->defaults.push_back(std::move(def));
      } else {
        node->defaults.push_back(nullptr);
      }
      if (!SkipOp(",")) break;
    }
    if (!ExpectOp(")") || !ExpectBlockEnd()) return nullptr;
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    bool ok = ParseBodyThrough("endmacro", &node->body);
    loop_depth_ = saved_loop_depth;
    if (!ok) return nullptr;
    return node;
  }

  std::unique_ptr<Node> ParseFilterBlock() {
    std::unique_ptr<Node> node = MakeNode(NodeKind::kFilterBlock, Cur().line);
    Advance();  // filter
    node->expr = ParseFilterCall(nullptr);
    if (!node->expr) return nullptr;
    if (IsOp("|")) {
      node->expr = ParseFilterChain(std::move(node->expr));
      if (!node->expr) return nullptr;
    }
    if (!ExpectBlockEnd() || !ParseBodyThrough("endfilter", &node->body)) return nullptr;
    return node;
  }

  // ---- expressions ----

  // Records the height of `e` from its (finished) children and rejects trees
  // too tall to evaluate safely; long chains (a|f|f|f..., 1+1+1...) count.
  ExprPtr Finish(ExprPtr e) {
    if (!e) return e;
    int h = 0;
    for (const auto& a : e->args) {
      if (a) h = std::max(h, a->depth);
    }
    for (const auto& kv : e->kwargs) {
      if (kv.second) h = std::max(h, kv.second->depth);
    }
    e->depth = h + 1;
    if (e->depth > kMaxExprDepth) return Fail(e->line, "expression nested too deeply");
    return e;
  }

  ExprPtr MakeExpr(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  bool IsTupleEnd() const {
    const Token& t = Cur();
    return t.type == TokType::kVarEnd || t.type == TokType::kBlockEnd || t.type == TokType::kEof ||
           (t.type == TokType::kOp && t.text == ")");
  }

  ExprPtr ParseTuple(bool with_condexpr, bool explicit_parens) {
    int line = Cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty() && !SkipOp(",")) break;
      if (IsTupleEnd()) break;
      ExprPtr e = ParseExpression(with_condexpr);
      if (!e) return nullptr;
      items.push_back(std::move(e));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens)
        return Fail(Cur().line, absl::StrCat("expected an expression, got ", Describe(Cur())));
    }
    ExprPtr t = MakeExpr(ExprKind::kTuple, line);
    t->args = std::move(items);
    return Finish(std::move(t));
  }

  ExprPtr ParseExpression(bool with_condexpr) {
    if (++depth_ > kMaxNesting) return Fail(Cur().line, "expression nested too deeply");
    ExprPtr e = with_condexpr ? ParseCondExpr() : ParseOr();
    --depth_;
    return e;
  }

  ExprPtr ParseCondExpr() {
    ExprPtr expr = ParseOr();
    while (expr && IsName("if")) {
      int line = Cur().line;
      Advance();
      ExprPtr cond = ParseOr();
      if (!cond) return nullptr;
      ExprPtr other;
      if (SkipName("else")) {
        other = ParseCondExpr();
        if (!other) return nullptr;
      }
      ExprPtr c = MakeExpr(ExprKind::kCond, line);
      c->args.push_back(std::move(expr));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      expr = Finish(std::move(c));
    }
    return expr;
  }

  ExprPtr Combine(ExprKind kind, const std::string& name, ExprPtr a, ExprPtr b, int line) {
    ExprPtr e = MakeExpr(kind, line);
    e->name = name;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return Finish(std::move(e));
  }

  // One level of left-associative binary operators, `operand (op operand)*`,
  // where at_op() says whether the current token is one of the level's
  // operators; the node is named after the operator's text.
  template <typename Operand, typename AtOp>
  ExprPtr ParseBinaryLevel(ExprKind kind, Operand operand, AtOp at_op) {
    ExprPtr left = operand();
    while (left && at_op()) {
      std::string op = Cur().text;
      int line = Cur().line;
      Advance();
      ExprPtr right = operand();
      if (!right) return nullptr;
      left = Combine(kind, op, std::move(left), std::move(right), line);
    }
    return left;
  }

  ExprPtr ParseOr() {
    return ParseBinaryLevel(
        ExprKind::kOr, [this] { return ParseAnd(); }, [this] { return IsName("or"); });
  }

  ExprPtr ParseAnd() {
    return ParseBinaryLevel(
        ExprKind::kAnd, [this] { return ParseNot(); }, [this] { return IsName("and"); });
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      int line = Cur().line;
      Advance();
      if (++depth_ > kMaxNesting) return Fail(line, "expression nested too deeply");
      ExprPtr inner = ParseNot();
      --depth_;
      if (!inner) return nullptr;
      ExprPtr e = MakeExpr(ExprKind::kNot, line);
      e->args.push_back(std::move(inner));
      return Finish(std::move(e));
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    int line = Cur().line;
    ExprPtr first = ParseMath1();
    if (!first) return nullptr;
    ExprPtr cmp;
    while (true) {
      std::string op;
      const Token& t = Cur();
      if (t.type == TokType::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                     t.text == "<=" || t.text == ">" || t.text == ">=")) {
        op = t.text;
        Advance();
      } else if (IsName("in")) {
        op = "in";
        Advance();
      } else if (IsName("not") && Peek().type == TokType::kName && Peek().text == "in") {
        op = "not in";
        Advance();
        Advance();
      } else {
        break;
      }
      ExprPtr rhs = ParseMath1();
      if (!rhs) return nullptr;
      if (!cmp) {
        cmp = MakeExpr(ExprKind::kCompare, line);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(std::move(rhs));
    }
    return cmp ? Finish(std::move(cmp)) : std::move(first);
  }

  ExprPtr ParseMath1() {
    return ParseBinaryLevel(
        ExprKind::kBinary, [this] { return ParseConcat(); },
        [this] { return IsOp("+") || IsOp("-"); });
  }

  ExprPtr ParseConcat() {
    return ParseBinaryLevel(
        ExprKind::kBinary, [this] { return ParseMath2(); }, [this] { return IsOp("~"); });
  }

  ExprPtr ParseMath2() {
    return ParseBinaryLevel(
        ExprKind::kBinary, [this] { return ParsePow(); },
        [this] { return IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"); });
  }

  ExprPtr ParsePow() {
    return ParseBinaryLevel(
        ExprKind::kBinary, [this] { return ParseUnary(true); }, [this] { return IsOp("**"); });
  }

  ExprPtr ParseUnary(bool with_filter) {
    if (++depth_ > kMaxNesting) return Fail(Cur().line, "expression nested too deeply");
    int line = Cur().line;
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      ExprKind kind = IsOp("-") ? ExprKind::kNeg : ExprKind::kPos;
      Advance();
      ExprPtr inner = ParseUnary(false);
      if (!inner) return nullptr;
      node = MakeExpr(kind, line);
      node->args.push_back(std::move(inner));
      node = Finish(std::move(node));
    } else {
      node = ParsePrimary();
    }
    if (node) node = ParsePostfix(std::move(node));
    if (node && with_filter) node = ParseFilterExpr(std::move(node));
    --depth_;
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Cur();
    int line = t.line;
    switch (t.type) {
      case TokType::kName: {
        ExprPtr e = MakeExpr(ExprKind::kLiteral, line);
        if (t.text == "true" || t.text == "True") {
          e->value = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::None();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        Advance();
        return e;
      }
      case TokType::kString: {
        std::string s;
        while (Cur().type == TokType::kString) {
          s += Cur().text;
          Advance();
        }
        ExprPtr e = MakeExpr(ExprKind::kLiteral, line);
        e->value = Value::String(std::move(s));
        return e;
      }
      case TokType::kInt: {
        ExprPtr e = MakeExpr(ExprKind::kLiteral, line);
        e->value = Value::Int(t.ival);
        Advance();
        return e;
      }
      case TokType::kFloat: {
        ExprPtr e = MakeExpr(ExprKind::kLiteral, line);
        e->value = Value::Float(t.fval);
        Advance();
        return e;
      }
      case TokType::kOp:
        if (t.text == "(") {
          Advance();
          ExprPtr e = ParseTuple(true, true);
          if (!e || !ExpectOp(")")) return nullptr;
          return e;
        }
        if (t.text == "[") {
          Advance();
          ExprPtr e = MakeExpr(ExprKind::kList, line);
          while (!IsOp("]")) {
            ExprPtr item = ParseExpression(true);
            if (!item) return nullptr;
            e->args.push_back(std::move(item));
            if (!SkipOp(",")) break;
          }
          if (!ExpectOp("]")) return nullptr;
          return Finish(std::move(e));
        }
        if (t.text == "{") {
          Advance();
          ExprPtr e = MakeExpr(ExprKind::kDict, line);
          while (!IsOp("}")) {
            ExprPtr key = ParseExpression(true);
            if (!key || !ExpectOp(":")) return nullptr;
            ExprPtr value = ParseExpression(true);
            if (!value) return nullptr;
            e->args.push_back(std::move(key));
            e->args.push_back(std::move(value));
            if (!SkipOp(",")) break;
          }
          if (!ExpectOp("}")) return nullptr;
          return Finish(std::move(e));
        }
        break;
      default:
        break;
    }
    return Fail(line, absl::StrCat("unexpected ", Describe(t)));
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (node) {
      int line = Cur().line;
      if (IsOp(".")) {
        Advance();
        const Token& t = Cur();
        if (t.type == TokType::kName) {
          ExprPtr e = MakeExpr(ExprKind::kAttr, line);
          e->name = t.text;
          e->args.push_back(std::move(node));
          node = Finish(std::move(e));
          Advance();
        } else if (t.type == TokType::kInt) {
          ExprPtr idx = MakeExpr(ExprKind::kLiteral, line);
          idx->value = Value::Int(t.ival);
          ExprPtr e = MakeExpr(ExprKind::kItem, line);
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(idx));
          node = Finish(std::move(e));
          Advance();
        } else {
          return Fail(line,
                      absl::StrCat("expected an attribute name after '.', got ", Describe(t)));
        }
      } else if (IsOp("[")) {
        Advance();
        node = ParseSubscript(std::move(node), line);
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr ParseSubscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    bool is_slice = false;
    if (!IsOp(":")) {
      parts[0] = ParseExpression(true);
      if (!parts[0]) return nullptr;
    }
    if (SkipOp(":")) {
      is_slice = true;
      if (!IsOp("]") && !IsOp(":")) {
        parts[1] = ParseExpression(true);
        if (!parts[1]) return nullptr;
      }
      if (SkipOp(":")) {
        if (!IsOp("]")) {
          parts[2] = ParseExpression(true);
          if (!parts[2]) return nullptr;
        }
      }
    }
    if (!ExpectOp("]")) return nullptr;
    ExprPtr e = MakeExpr(is_slice ? ExprKind::kSlice : ExprKind::kItem, line);
    e->args.push_back(std::move(obj));
    if (is_slice) {
      for (auto& p : parts) e->args.push_back(std::move(p));
    } else {
      e->args.push_back(std::move(parts[0]));
    }
    return Finish(std::move(e));
  }

  // Parses "(args)" into `call` (args appended after what it already holds).
  bool ParseArgs(Expr* call) {
    if (!ExpectOp("(")) return false;
    while (!IsOp(")")) {
      if (IsOp("*") || IsOp("**")) return FailB(Cur().line, "*args and **kwargs are not supported");
      if (Cur().type == TokType::kName && Peek().type == TokType::kOp && Peek().text == "=") {
        std::string key = Cur().text;
        Advance();
        Advance();
        ExprPtr v = ParseExpression(true);
        if (!v) return false;
        call->kwargs.emplace_back(key, std::move(v));
      } else {
        if (!call->kwargs.empty())
          return FailB(Cur().line, "positional argument follows keyword argument");
        ExprPtr v = ParseExpression(true);
        if (!v) return false;
        call->args.push_back(std::move(v));
      }
      if (!SkipOp(",")) break;
    }
    return ExpectOp(")");
  }

  ExprPtr ParseCall(ExprPtr callee) {
    ExprPtr e = MakeExpr(ExprKind::kCall, Cur().line);
    e->args.push_back(std::move(callee));
    if (!ParseArgs(e.get())) return nullptr;
    return Finish(std::move(e));
  }

  // name[(args)] applied to `input` (null inside a filter block).
  ExprPtr ParseFilterCall(ExprPtr input) {
    int line = Cur().line;
    std::string name;
    if (!ExpectDottedName(&name)) return nullptr;
    ExprPtr e = MakeExpr(ExprKind::kFilter, line);
    e->name = name;
    e->args.push_back(std::move(input));
    if (IsOp("(") && !ParseArgs(e.get())) return nullptr;
    return Finish(std::move(e));
  }

  ExprPtr ParseFilterChain(ExprPtr input) {
    ExprPtr node = std::move(input);
    while (SkipOp("|")) {
      node = ParseFilterCall(std::move(node));
      if (!node) return nullptr;
    }
    return node;
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (node) {
      if (IsOp("|")) {
        Advance();
        node = ParseFilterCall(std::move(node));
      } else if (IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr ParseTest(ExprPtr subject) {
    int line = Cur().line;
    Advance();  // is
    bool negated = SkipName("not");
    std::string name;
    if (!ExpectDottedName(&name)) return nullptr;
    ExprPtr e = MakeExpr(ExprKind::kTest, line);
    e->name = name;
    e->negated = negated;
    e->args.push_back(std::move(subject));
    const Token& t = Cur();
    if (IsOp("(")) {
      if (!ParseArgs(e.get())) return nullptr;
    } else if ((t.type == TokType::kName || t.type == TokType::kString || t.type == TokType::kInt ||
                t.type == TokType::kFloat || IsOp("[") || IsOp("{")) &&
               !(t.type == TokType::kName &&
                 (t.text == "else" || t.text == "or" || t.text == "and" || t.text == "if" ||
                  t.text == "is" || t.text == "in" || t.text == "not"))) {
      ExprPtr arg = ParsePrimary();
      if (arg) arg = ParsePostfix(std::move(arg));
      if (!arg) return nullptr;
      e->args.push_back(std::move(arg));
    }
    return Finish(std::move(e));
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int nesting_ = 0;
  int loop_depth_ = 0;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Program>> ParseProgram(const std::string& source) {
  absl::StatusOr<std::vector<Token>> tokens = Lex(source);
  if (!tokens.ok()) return tokens.status();
  Parser parser(*std::move(tokens));
  return parser.Run();
}

}  // namespace retort::jinja
