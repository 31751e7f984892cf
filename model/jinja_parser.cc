// Lexer and parser for the Jinja subset in jinja.h. The lexer applies the
// whitespace rules of the environment transformers builds: trim_blocks (drop
// the first newline after a block or comment tag), lstrip_blocks (drop the
// spaces and tabs before a block or comment tag that starts a line), `-` and
// `+` modifiers, newlines normalised to \n and one trailing newline dropped.
// The grammar and operator precedence follow jinja2's parser.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/jinja_internal.h"

namespace retort::jinja {
namespace {

constexpr int kMaxNesting = 100;    // nested blocks, and recursion while parsing
constexpr int kMaxExprDepth = 200;  // height of one expression tree

enum class TokType {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  TokType type = TokType::kEof;
  std::string text;
  int line = 1;
  int64_t ival = 0;
  double fval = 0;
};

absl::Status LineError(int line, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", msg));
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Decodes the body of a string literal the way Python's "unicode-escape"
// codec does (which is what jinja2 uses); unknown escapes stay as written.
std::string DecodeStringLiteral(const std::string& raw) {
  std::string out;
  size_t i = 0;
  auto hex_value = [&](size_t start, int count, uint32_t* value) {
    if (start + count > raw.size()) return false;
    uint32_t v = 0;
    for (int k = 0; k < count; ++k) {
      char c = raw[start + k];
      if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
      v = v * 16 +
          (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10));
    }
    *value = v;
    return true;
  };
  while (i < raw.size()) {
    char c = raw[i];
    if (c != '\\' || i + 1 >= raw.size()) {
      out.push_back(c);
      ++i;
      continue;
    }
    char e = raw[i + 1];
    switch (e) {
      case '\n':
        i += 2;
        break;
      case '\\':
        out.push_back('\\');
        i += 2;
        break;
      case '\'':
        out.push_back('\'');
        i += 2;
        break;
      case '"':
        out.push_back('"');
        i += 2;
        break;
      case 'a':
        out.push_back('\a');
        i += 2;
        break;
      case 'b':
        out.push_back('\b');
        i += 2;
        break;
      case 'f':
        out.push_back('\f');
        i += 2;
        break;
      case 'n':
        out.push_back('\n');
        i += 2;
        break;
      case 'r':
        out.push_back('\r');
        i += 2;
        break;
      case 't':
        out.push_back('\t');
        i += 2;
        break;
      case 'v':
        out.push_back('\v');
        i += 2;
        break;
      case 'x':
      case 'u':
      case 'U': {
        int count = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
        uint32_t v = 0;
        if (hex_value(i + 2, count, &v) && v <= 0x10ffff) {
          AppendUtf8(static_cast<char32_t>(v), &out);
          i += 2 + count;
        } else {
          out.push_back('\\');
          ++i;
        }
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = 0;
          size_t k = i + 1;
          int n = 0;
          while (k < raw.size() && n < 3 && raw[k] >= '0' && raw[k] <= '7') {
            v = v * 8 + (raw[k] - '0');
            ++k;
            ++n;
          }
          AppendUtf8(static_cast<char32_t>(v), &out);
          i = k;
        } else {
          out.push_back('\\');
          ++i;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    Normalize();
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t start = FindTagStart(pos);
      if (start == std::string::npos) {
        EmitText(src_.substr(pos), line_);
        break;
      }
      std::string text = src_.substr(pos, start - pos);
      int text_line = line_;
      line_ += CountNewlines(text);
      char kind = src_[start + 1];
      char sign =
          start + 2 < n && (src_[start + 2] == '-' || src_[start + 2] == '+') ? src_[start + 2] : 0;
      if (sign == '-') {
        size_t end = text.find_last_not_of(" \t\n\r\f\v");
        text = end == std::string::npos ? std::string() : text.substr(0, end + 1);
      } else if (sign != '+' && kind != '{') {
        size_t nl = text.rfind('\n');
        size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            text.find_first_not_of(" \t\f\v\r", l_pos) == std::string::npos) {
          text.resize(l_pos);
        }
      }
      EmitText(std::move(text), text_line);
      size_t p = start + 2 + (sign ? 1 : 0);
      absl::StatusOr<size_t> next;
      if (kind == '#') {
        next = LexComment(p);
      } else if (kind == '%' && IsRawTag(p)) {
        next = LexRaw(start, p);
      } else {
        next = LexTag(kind == '{', p);
      }
      if (!next.ok()) return next.status();
      pos = *next;
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Token eof;
    eof.type = TokType::kEof;
    eof.line = line_;
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  void Normalize() {
    std::string out;
    out.reserve(src_.size());
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\r') {
        out.push_back('\n');
        if (i + 1 < src_.size() && src_[i + 1] == '\n') ++i;
      } else {
        out.push_back(src_[i]);
      }
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();
    src_ = std::move(out);
  }

  static int CountNewlines(const std::string& s) {
    int count = 0;
    for (char c : s) count += c == '\n';
    return count;
  }

  size_t FindTagStart(size_t pos) const {
    while (true) {
      size_t p = src_.find('{', pos);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  void EmitText(std::string text, int line) {
    if (text.empty()) return;
    Token t;
    t.type = TokType::kText;
    t.text = std::move(text);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  void Emit(TokType type, std::string text, int line) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  // Consumes whitespace after a tag end; `strip` is the `-` modifier.
  size_t AfterTagEnd(size_t pos, bool strip, bool trim_newline) {
    if (strip) {
      while (pos < src_.size() && IsSpace(src_[pos])) {
        if (src_[pos] == '\n') ++line_;
        ++pos;
      }
    } else if (trim_newline && pos < src_.size() && src_[pos] == '\n') {
      ++line_;
      ++pos;
    }
    return pos;
  }

  absl::StatusOr<size_t> LexComment(size_t p) {
    size_t end = src_.find("#}", p);
    if (end == std::string::npos) return LineError(line_, "unterminated comment, expected '#}'");
    bool strip = end > p && src_[end - 1] == '-';
    line_ += CountNewlines(src_.substr(p, end - p));
    return AfterTagEnd(end + 2, strip, true);
  }

  // True when the block tag starting at p is `raw`.
  bool IsRawTag(size_t p) const {
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    return p < src_.size() && (IsSpace(src_[p]) || src_[p] == '-' || src_[p] == '%');
  }

  absl::StatusOr<size_t> LexRaw(size_t tag_start, size_t p) {
    int line = line_;
    size_t close = src_.find("%}", p);
    if (close == std::string::npos) return LineError(line, "unterminated raw tag");
    bool strip_after = src_[close - 1] == '-';
    size_t body_start = AfterTagEnd(close + 2, strip_after, true);
    // Find {% endraw %} with optional modifiers.
    size_t search = body_start;
    while (true) {
      size_t s = src_.find("{%", search);
      if (s == std::string::npos) return LineError(line, "missing endraw for raw block");
      size_t q = s + 2;
      bool strip_before = q < src_.size() && src_[q] == '-';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      while (q < src_.size() && IsSpace(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") == 0) {
        q += 6;
        while (q < src_.size() && IsSpace(src_[q])) ++q;
        bool strip_end = q < src_.size() && src_[q] == '-';
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
        if (src_.compare(q, 2, "%}") != 0) return LineError(line_, "malformed endraw tag");
        std::string body = src_.substr(body_start, s - body_start);
        line_ += CountNewlines(body);
        if (strip_before) {
          size_t e = body.find_last_not_of(" \t\n\r\f\v");
          body = e == std::string::npos ? std::string() : body.substr(0, e + 1);
        }
        EmitText(std::move(body), line);
        line_ += CountNewlines(src_.substr(s, q + 2 - s));
        (void)tag_start;
        return AfterTagEnd(q + 2, strip_end, true);
      }
      search = s + 2;
    }
  }

  absl::StatusOr<size_t> LexTag(bool is_var, size_t p) {
    Emit(is_var ? TokType::kVarBegin : TokType::kBlockBegin, "", line_);
    int depth = 0;
    const size_t n = src_.size();
    while (true) {
      while (p < n && IsSpace(src_[p])) {
        if (src_[p] == '\n') ++line_;
        ++p;
      }
      if (p >= n) {
        return LineError(line_, is_var ? "unexpected end of template, expected '}}'"
                                       : "unexpected end of template, expected '%}'");
      }
      if (depth == 0) {
        if (is_var) {
          if (src_.compare(p, 3, "-}}") == 0) {
            Emit(TokType::kVarEnd, "", line_);
            return AfterTagEnd(p + 3, true, false);
          }
          if (src_.compare(p, 2, "}}") == 0) {
            Emit(TokType::kVarEnd, "", line_);
            return p + 2;
          }
        } else {
          if (src_.compare(p, 3, "-%}") == 0) {
            Emit(TokType::kBlockEnd, "", line_);
            return AfterTagEnd(p + 3, true, true);
          }
          if (src_.compare(p, 3, "+%}") == 0) {
            Emit(TokType::kBlockEnd, "", line_);
            return p + 3;
          }
          if (src_.compare(p, 2, "%}") == 0) {
            Emit(TokType::kBlockEnd, "", line_);
            return AfterTagEnd(p + 2, false, true);
          }
        }
      }
      char c = src_[p];
      if (IsNameStart(c)) {
        size_t q = p;
        while (q < n && IsNameChar(src_[q])) ++q;
        Emit(TokType::kName, src_.substr(p, q - p), line_);
        p = q;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        absl::StatusOr<size_t> q = LexNumber(p);
        if (!q.ok()) return q.status();
        p = *q;
      } else if (c == '\'' || c == '"') {
        size_t q = p + 1;
        while (q < n && src_[q] != c) {
          if (src_[q] == '\\' && q + 1 < n) ++q;
          ++q;
        }
        if (q >= n) return LineError(line_, "unterminated string literal");
        std::string raw = src_.substr(p + 1, q - p - 1);
        Emit(TokType::kString, DecodeStringLiteral(raw), line_);
        line_ += CountNewlines(raw);
        p = q + 1;
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* two : kTwo) {
          if (src_.compare(p, 2, two) == 0) {
            op = two;
            break;
          }
        }
        if (op.empty()) {
          if (std::string("+-*/%~<>=.,:|()[]{}").find(c) == std::string::npos) {
            return LineError(line_,
                             absl::StrCat("unexpected character '", std::string(1, c), "' in tag"));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) return LineError(line_, absl::StrCat("unexpected '", op, "'"));
          --depth;
        }
        Emit(TokType::kOp, op, line_);
        p += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexNumber(size_t p) {
    const size_t n = src_.size();
    auto digits = [&](size_t q) {
      while (q < n && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                       (src_[q] == '_' && q + 1 < n &&
                        std::isdigit(static_cast<unsigned char>(src_[q + 1]))))) {
        ++q;
      }
      return q;
    };
    size_t q = digits(p);
    bool is_float = false;
    bool after_dot = p > 0 && src_[p - 1] == '.';
    if (!after_dot) {
      if (q + 1 < n && src_[q] == '.' && std::isdigit(static_cast<unsigned char>(src_[q + 1]))) {
        q = digits(q + 1);
        is_float = true;
      }
      if (q < n && (src_[q] == 'e' || src_[q] == 'E')) {
        size_t r = q + 1;
        if (r < n && (src_[r] == '+' || src_[r] == '-')) ++r;
        if (r < n && std::isdigit(static_cast<unsigned char>(src_[r]))) {
          q = digits(r);
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Token t;
    t.line = line_;
    t.text = text;
    if (is_float) {
      t.type = TokType::kFloat;
      t.fval = std::strtod(text.c_str(), nullptr);
    } else {
      t.type = TokType::kInt;
      errno = 0;
      char* end = nullptr;
      long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE)
        return LineError(line_, absl::StrCat("integer literal too large: ", text));
      t.ival = v;
    }
    tokens_.push_back(std::move(t));
    return q;
  }

  std::string src_;
  int line_ = 1;
  std::vector<Token> tokens_;
};

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
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kText;
        node->line = t.line;
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
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kOutput;
        node->line = line;
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
      auto node = std::make_unique<Node>();
      node->kind = word == "break" ? NodeKind::kBreak : NodeKind::kContinue;
      node->line = line;
      if (!ExpectBlockEnd()) return nullptr;
      return node;
    }
    if (word == "generation") {
      Advance();
      auto node = std::make_unique<Node>();
      node->kind = NodeKind::kScope;
      node->line = line;
      if (!ExpectBlockEnd()) return nullptr;
      std::string end;
      if (!ParseBody({"endgeneration"}, &node->body, &end)) return nullptr;
      Advance();
      if (!ExpectBlockEnd()) return nullptr;
      return node;
    }
    return Fail(line, absl::StrCat("unknown or unsupported tag '", word, "'"));
  }

  std::unique_ptr<Node> ParseIf() {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kIf;
    node->line = Cur().line;
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
        if (!ExpectBlockEnd()) return nullptr;
        if (!ParseBody({"endif"}, &node->else_body, &end)) return nullptr;
        Advance();
      }
      if (!ExpectBlockEnd()) return nullptr;
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
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kFor;
    node->line = Cur().line;
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
      if (!ExpectBlockEnd()) return nullptr;
      if (!ParseBody({"endfor"}, &node->else_body, &end)) return nullptr;
      Advance();
    }
    if (!ExpectBlockEnd()) return nullptr;
    return node;
  }

  std::unique_ptr<Node> ParseSet() {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kSet;
    node->line = Cur().line;
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
    if (!ExpectBlockEnd()) return nullptr;
    std::string end;
    if (!ParseBody({"endset"}, &node->body, &end)) return nullptr;
    Advance();
    if (!ExpectBlockEnd()) return nullptr;
    return node;
  }

  std::unique_ptr<Node> ParseMacro() {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kMacro;
    node->line = Cur().line;
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
    std::string end;
    bool ok = ParseBody({"endmacro"}, &node->body, &end);
    loop_depth_ = saved_loop_depth;
    if (!ok) return nullptr;
    Advance();
    if (!ExpectBlockEnd()) return nullptr;
    return node;
  }

  std::unique_ptr<Node> ParseFilterBlock() {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kFilterBlock;
    node->line = Cur().line;
    Advance();  // filter
    node->expr = ParseFilterCall(nullptr);
    if (!node->expr) return nullptr;
    if (IsOp("|")) {
      node->expr = ParseFilterChain(std::move(node->expr));
      if (!node->expr) return nullptr;
    }
    if (!ExpectBlockEnd()) return nullptr;
    std::string end;
    if (!ParseBody({"endfilter"}, &node->body, &end)) return nullptr;
    Advance();
    if (!ExpectBlockEnd()) return nullptr;
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

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (left && IsName("or")) {
      int line = Cur().line;
      Advance();
      ExprPtr right = ParseAnd();
      if (!right) return nullptr;
      left = Combine(ExprKind::kOr, "or", std::move(left), std::move(right), line);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (left && IsName("and")) {
      int line = Cur().line;
      Advance();
      ExprPtr right = ParseNot();
      if (!right) return nullptr;
      left = Combine(ExprKind::kAnd, "and", std::move(left), std::move(right), line);
    }
    return left;
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
    ExprPtr left = ParseConcat();
    while (left && (IsOp("+") || IsOp("-"))) {
      std::string op = Cur().text;
      int line = Cur().line;
      Advance();
      ExprPtr right = ParseConcat();
      if (!right) return nullptr;
      left = Combine(ExprKind::kBinary, op, std::move(left), std::move(right), line);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (left && IsOp("~")) {
      int line = Cur().line;
      Advance();
      ExprPtr right = ParseMath2();
      if (!right) return nullptr;
      left = Combine(ExprKind::kBinary, "~", std::move(left), std::move(right), line);
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (left && (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"))) {
      std::string op = Cur().text;
      int line = Cur().line;
      Advance();
      ExprPtr right = ParsePow();
      if (!right) return nullptr;
      left = Combine(ExprKind::kBinary, op, std::move(left), std::move(right), line);
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (left && IsOp("**")) {
      int line = Cur().line;
      Advance();
      ExprPtr right = ParseUnary(true);
      if (!right) return nullptr;
      left = Combine(ExprKind::kBinary, "**", std::move(left), std::move(right), line);
    }
    return left;
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
    if (!ExpectName(&name)) return nullptr;
    while (IsOp(".") && Peek().type == TokType::kName) {  // dotted filter names
      Advance();
      name += "." + Cur().text;
      Advance();
    }
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
    if (!ExpectName(&name)) return nullptr;
    while (IsOp(".") && Peek().type == TokType::kName) {
      Advance();
      name += "." + Cur().text;
      Advance();
    }
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
  Lexer lexer(source);
  absl::StatusOr<std::vector<Token>> tokens = lexer.Run();
  if (!tokens.ok()) return tokens.status();
  Parser parser(*std::move(tokens));
  return parser.Run();
}

}  // namespace retort::jinja
