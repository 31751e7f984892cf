#include "text/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"

namespace retort::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// How a tag may close, longest first, and what the lexer does with the white
// space after it: `-` strips all of it; a block tag drops one newline
// (trim_blocks) unless closed with `+%}`.
struct TagEnd {
  const char* text;
  bool strip;
  bool trim_newline;
};
constexpr TagEnd kVarEnds[] = {{"-}}", true, false}, {"}}", false, false}};
constexpr TagEnd kBlockEnds[] = {{"-%}", true, true}, {"+%}", false, false}, {"%}", false, true}};

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
    if (!text.empty()) Emit(TokType::kText, std::move(text), line);
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
        for (const TagEnd& end :
             is_var ? std::span<const TagEnd>(kVarEnds) : std::span<const TagEnd>(kBlockEnds)) {
          const size_t len = std::char_traits<char>::length(end.text);
          if (src_.compare(p, len, end.text) == 0) {
            Emit(is_var ? TokType::kVarEnd : TokType::kBlockEnd, "", line_);
            return AfterTagEnd(p + len, end.strip, end.trim_newline);
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

}  // namespace

absl::Status LineError(int line, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", msg));
}

absl::StatusOr<std::vector<Token>> Lex(const std::string& source) {
  Lexer lexer(source);
  return lexer.Run();
}

}  // namespace retort::jinja
