#include "distill/math_answer.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace retort {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool StartsWithAt(const std::string& s, size_t pos, const char* prefix) {
  size_t n = std::strlen(prefix);
  return pos + n <= s.size() && s.compare(pos, n, prefix) == 0;
}

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// Removes every occurrence of the control word `word` ("\left") that is not
// the prefix of a longer control word ("\leftarrow").
void RemoveControlWord(std::string& s, const std::string& word) {
  size_t pos = 0;
  while ((pos = s.find(word, pos)) != std::string::npos) {
    size_t end = pos + word.size();
    if (end < s.size() && IsAsciiAlpha(s[end])) {
      pos = end;
      continue;
    }
    s.erase(pos, word.size());
  }
}

// Index one past the '}' that closes the '{' at `open`, or npos. "\{" and
// "\}" are escaped braces and do not count.
size_t MatchBrace(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') {
      ++i;
      continue;
    }
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0) return i + 1;
  }
  return std::string::npos;
}

// Replaces "\cmd{X}" by "X" for every listed command.
void UnwrapCommands(std::string& s, const std::vector<std::string>& commands) {
  for (const std::string& cmd : commands) {
    size_t pos = 0;
    while ((pos = s.find(cmd, pos)) != std::string::npos) {
      size_t open = pos + cmd.size();
      while (open < s.size() && s[open] == ' ') ++open;
      if (open >= s.size() || s[open] != '{') {
        pos += cmd.size();
        continue;
      }
      size_t close = MatchBrace(s, open);
      if (close == std::string::npos) {
        pos += cmd.size();
        continue;
      }
      std::string inner = s.substr(open + 1, close - open - 2);
      s.replace(pos, close - pos, inner);
    }
  }
}

// Unit words: letters, spaces, '.', '/', and a power "^2" / "^{3}" ("m^2",
// "km/h"). No digits elsewhere, so "3 and 4" is not "3" with a unit.
bool LooksLikeUnit(const std::string& t) {
  std::string u = Trim(t);
  if (u.empty() || !IsAsciiAlpha(u[0])) return false;
  for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) ReplaceAll(u, power, "");
  for (char c : u) {
    if (!(IsAsciiAlpha(c) || c == ' ' || c == '.' || c == '/')) return false;
  }
  return true;
}

// Drops a trailing "\text{ cm}" / "\mbox{units}" (optionally with ^2) when
// something precedes it.
void DropTrailingTextUnit(std::string& s) {
  for (const char* cmd : {"\\text", "\\mbox", "\\textrm", "\\mathrm"}) {
    size_t pos = s.rfind(cmd);
    if (pos == std::string::npos || pos == 0) continue;
    size_t open = pos + std::strlen(cmd);
    while (open < s.size() && s[open] == ' ') ++open;
    if (open >= s.size() || s[open] != '{') continue;
    size_t close = MatchBrace(s, open);
    if (close == std::string::npos) continue;
    std::string tail = s.substr(close);
    std::string inner = s.substr(open + 1, close - open - 2);
    // Allow "^2", "^{2}" after the unit.
    std::string t = Trim(tail);
    bool tail_ok = t.empty() || t == "^2" || t == "^3" || t == "^{2}" || t == "^{3}";
    if (!tail_ok || !LooksLikeUnit(inner)) continue;
    if (Trim(s.substr(0, pos)).empty()) continue;
    s.erase(pos);
    return;
  }
}

// "\frac12" -> "\frac{1}{2}", "\sqrt2" -> "\sqrt{2}" (after whitespace
// removal). Single-token arguments are a character or a control word.
std::string BraceShorthandArgs(const std::string& s) {
  std::string out;
  size_t i = 0;
  auto take_arg = [&](size_t& j) {
    if (j >= s.size()) return;
    if (s[j] == '{') {
      size_t close = MatchBrace(s, j);
      if (close == std::string::npos) close = s.size();
      out += BraceShorthandArgs(s.substr(j, close - j));
      j = close;
      return;
    }
    out += '{';
    if (s[j] == '\\') {
      size_t k = j + 1;
      while (k < s.size() && IsAsciiAlpha(s[k])) ++k;
      if (k == j + 1 && k < s.size()) ++k;
      out += s.substr(j, k - j);
      j = k;
    } else {
      out += s[j++];
    }
    out += '}';
  };
  while (i < s.size()) {
    if (StartsWithAt(s, i, "\\frac") && !(i + 5 < s.size() && IsAsciiAlpha(s[i + 5]))) {
      out += "\\frac";
      i += 5;
      take_arg(i);
      take_arg(i);
      continue;
    }
    if (StartsWithAt(s, i, "\\sqrt") && !(i + 5 < s.size() && IsAsciiAlpha(s[i + 5]))) {
      out += "\\sqrt";
      i += 5;
      if (i < s.size() && s[i] == '[') {
        size_t close = s.find(']', i);
        if (close == std::string::npos) close = s.size() - 1;
        out += s.substr(i, close + 1 - i);
        i = close + 1;
      }
      take_arg(i);
      continue;
    }
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[i];
      out += s[i + 1];
      i += 2;
      continue;
    }
    out += s[i++];
  }
  return out;
}

// Removes whitespace, keeping one space where it separates a control word
// from a following letter ("\pi r" must not become "\pir").
std::string RemoveWhitespace(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!IsSpace(s[i])) {
      out += s[i];
      continue;
    }
    size_t j = i;
    while (j < s.size() && IsSpace(s[j])) ++j;
    if (j < s.size() && IsAsciiAlpha(s[j]) && !out.empty() && IsAsciiAlpha(out.back())) {
      // Is the letter run at the end of `out` a control word?
      size_t k = out.size();
      while (k > 0 && IsAsciiAlpha(out[k - 1])) --k;
      if (k > 0 && out[k - 1] == '\\') out += ' ';
    }
    i = j - 1;
  }
  return out;
}

// Length of a minus sign at `pos`: '-' (1), U+2212 or U+2013 (3), else 0.
size_t MinusLength(const std::string& s, size_t pos) {
  if (pos < s.size() && s[pos] == '-') return 1;
  if (StartsWithAt(s, pos, "\xE2\x88\x92") || StartsWithAt(s, pos, "\xE2\x80\x93")) return 3;
  return 0;
}

// Whether a sign just before `pos` belongs to the number starting at `pos`
// (and not to a subtraction "10-3"). Returns the start including the sign.
size_t IncludeSign(const std::string& s, size_t pos) {
  size_t start = pos;
  if (pos >= 1 && (s[pos - 1] == '-' || s[pos - 1] == '+')) {
    start = pos - 1;
  } else if (pos >= 3 && MinusLength(s, pos - 3) == 3) {
    start = pos - 3;
  } else {
    return pos;
  }
  if (start == 0) return start;
  char before = s[start - 1];
  if (IsDigit(before) || IsAsciiAlpha(before) || before == ')' || before == '}' || before == ']')
    return pos;
  return start;
}

// Parses a number-like span of raw text at `pos` (a digit or '.'); returns
// its end, or pos when there is none.
size_t ScanPlainNumber(const std::string& s, size_t pos) {
  size_t i = pos;
  size_t int_start = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  size_t int_len = i - int_start;
  if (int_len >= 1 && int_len <= 3) {
    // Thousands groups: ",ddd", "{,}ddd", "\,ddd".
    for (;;) {
      size_t sep = 0;
      if (StartsWithAt(s, i, ","))
        sep = 1;
      else if (StartsWithAt(s, i, "{,}"))
        sep = 3;
      else if (StartsWithAt(s, i, "\\,"))
        sep = 2;
      if (sep == 0) break;
      size_t d = i + sep;
      if (d + 3 <= s.size() && IsDigit(s[d]) && IsDigit(s[d + 1]) && IsDigit(s[d + 2]) &&
          (d + 3 == s.size() || !IsDigit(s[d + 3]))) {
        i = d + 3;
      } else {
        break;
      }
    }
  }
  if (i < s.size() && s[i] == '.' && i + 1 < s.size() && IsDigit(s[i + 1])) {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
  }
  if (i == pos) return pos;
  // Exponent: e3, e-3, E+10 (only when digits follow).
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '-' || s[j] == '+')) ++j;
    if (j < s.size() && IsDigit(s[j])) {
      while (j < s.size() && IsDigit(s[j])) ++j;
      if (j == s.size() || !IsAsciiAlpha(s[j])) i = j;
    }
  }
  return i;
}

// Scans \frac{A}{B} (or \dfrac, \tfrac) at `pos` whose arguments are numbers;
// returns its end or pos.
size_t ScanFrac(const std::string& s, size_t pos) {
  size_t i = pos;
  for (const char* cmd : {"\\frac", "\\dfrac", "\\tfrac"}) {
    if (StartsWithAt(s, pos, cmd)) {
      i = pos + std::strlen(cmd);
      break;
    }
  }
  if (i == pos) return pos;
  for (int arg = 0; arg < 2; ++arg) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i >= s.size()) return pos;
    size_t end;
    std::string content;
    if (s[i] == '{') {
      end = MatchBrace(s, i);
      if (end == std::string::npos) return pos;
      content = s.substr(i + 1, end - i - 2);
    } else if (IsDigit(s[i])) {
      end = i + 1;
      content = s.substr(i, 1);
    } else {
      return pos;
    }
    if (!ParseMathNumber(NormalizeMathAnswer(content))) return pos;
    i = end;
  }
  return i;
}

// Trailing percent after a number: "%" or "\%".
size_t ScanPercent(const std::string& s, size_t pos) {
  size_t i = pos;
  while (i < s.size() && s[i] == ' ') ++i;
  if (StartsWithAt(s, i, "\\%")) return i + 2;
  if (StartsWithAt(s, i, "%")) return i + 1;
  return pos;
}

}  // namespace

std::optional<std::string> ExtractLastBoxed(const std::string& text) {
  size_t best = std::string::npos;
  size_t best_len = 0;
  for (const char* cmd : {"\\boxed", "\\fbox"}) {
    size_t len = std::strlen(cmd);
    size_t pos = text.size();
    while (pos > 0) {
      size_t found = text.rfind(cmd, pos - 1);
      if (found == std::string::npos) break;
      size_t end = found + len;
      if (end < text.size() && IsAsciiAlpha(text[end])) {
        pos = found;
        continue;
      }
      if (best == std::string::npos || found > best) {
        best = found;
        best_len = len;
      }
      break;
    }
  }
  if (best == std::string::npos) return std::nullopt;
  size_t i = best + best_len;
  while (i < text.size() && IsSpace(text[i])) ++i;
  if (i >= text.size()) return std::nullopt;
  if (text[i] == '{') {
    size_t close = MatchBrace(text, i);
    if (close == std::string::npos) return std::nullopt;
    return text.substr(i + 1, close - i - 2);
  }
  // "\boxed 5": the next token.
  size_t end = i;
  while (end < text.size() && !IsSpace(text[end]) && text[end] != '$') ++end;
  return text.substr(i, end - i);
}

std::optional<std::string> ExtractLastNumber(const std::string& text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '\\') {
      size_t end = ScanFrac(text, i);
      if (end != i) {
        size_t start = IncludeSign(text, i);
        end = ScanPercent(text, end);
        last = text.substr(start, end - start);
        i = end;
        continue;
      }
      // Skip the control word (or the escaped character).
      ++i;
      if (i < text.size() && !IsAsciiAlpha(text[i])) {
        ++i;
      } else {
        while (i < text.size() && IsAsciiAlpha(text[i])) ++i;
      }
      continue;
    }
    bool starts_number = IsDigit(c) || (c == '.' && i + 1 < text.size() && IsDigit(text[i + 1]) &&
                                        (i == 0 || !IsDigit(text[i - 1])));
    if (!starts_number) {
      ++i;
      continue;
    }
    size_t end = ScanPlainNumber(text, i);
    if (end == i) {
      ++i;
      continue;
    }
    // a/b with a plain-number denominator.
    if (end < text.size() && text[end] == '/' && end + 1 < text.size() && IsDigit(text[end + 1])) {
      size_t den_end = ScanPlainNumber(text, end + 1);
      if (den_end != end + 1) end = den_end;
    }
    size_t start = IncludeSign(text, i);
    end = ScanPercent(text, end);
    last = text.substr(start, end - start);
    i = end;
  }
  return last;
}

std::string ExtractReferenceAnswer(const std::string& reference) {
  size_t hashes = reference.rfind("####");
  if (hashes != std::string::npos) return Trim(reference.substr(hashes + 4));
  std::optional<std::string> boxed = ExtractLastBoxed(reference);
  if (boxed) return Trim(*boxed);
  return Trim(reference);
}

std::string NormalizeMathAnswer(const std::string& answer) {
  std::string s = Trim(answer);
  // Unicode look-alikes.
  ReplaceAll(s, "\xE2\x88\x92", "-");     // U+2212 minus sign
  ReplaceAll(s, "\xE2\x80\x93", "-");     // U+2013 en dash
  ReplaceAll(s, "\xC2\xA0", " ");         // no-break space
  ReplaceAll(s, "\xE2\x80\x89", " ");     // thin space
  ReplaceAll(s, "\xE2\x80\xAF", " ");     // narrow no-break space
  ReplaceAll(s, "\xC3\x97", "\\times ");  // multiplication sign
  ReplaceAll(s, "\xC2\xB0", "");          // degree sign
  // Math delimiters and currency.
  ReplaceAll(s, "\\$", "");
  ReplaceAll(s, "$", "");
  ReplaceAll(s, "\\(", "");
  ReplaceAll(s, "\\)", "");
  ReplaceAll(s, "\\[", "");
  ReplaceAll(s, "\\]", "");
  UnwrapCommands(s, {"\\boxed", "\\fbox"});
  RemoveControlWord(s, "\\left");
  RemoveControlWord(s, "\\right");
  RemoveControlWord(s, "\\displaystyle");
  RemoveControlWord(s, "\\qquad");
  RemoveControlWord(s, "\\quad");
  for (const char* space : {"\\!", "\\,", "\\;", "\\:", "\\ ", "~"}) ReplaceAll(s, space, "");
  for (const char* frac : {"\\dfrac", "\\tfrac", "\\cfrac"}) {
    size_t pos = 0;
    std::string f = frac;
    while ((pos = s.find(f, pos)) != std::string::npos) {
      size_t end = pos + f.size();
      if (end < s.size() && IsAsciiAlpha(s[end])) {
        pos = end;
        continue;
      }
      s.replace(pos, f.size(), "\\frac");
    }
  }
  // Degrees, percent.
  ReplaceAll(s, "^{\\circ}", "");
  ReplaceAll(s, "^\\circ", "");
  RemoveControlWord(s, "\\circ");
  RemoveControlWord(s, "\\degree");
  ReplaceAll(s, "\\%", "");
  ReplaceAll(s, "%", "");
  DropTrailingTextUnit(s);
  UnwrapCommands(s, {"\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf",
                     "\\mathit", "\\mbox"});
  s = Trim(s);
  // "5 cm", "12 apples": a number followed by plain words.
  {
    size_t sp = s.find(' ');
    if (sp != std::string::npos && LooksLikeUnit(s.substr(sp + 1))) {
      std::string head = Trim(s.substr(0, sp));
      std::string head_norm = BraceShorthandArgs(RemoveWhitespace(head));
      ReplaceAll(head_norm, "{,}", ",");
      if (ParseMathNumber(head_norm)) s = head;
    }
  }
  s = RemoveWhitespace(s);
  ReplaceAll(s, "{,}", ",");
  s = BraceShorthandArgs(s);
  // "x=5", "k=\frac{1}{2}", "\theta=30": keep the right-hand side.
  {
    size_t eq = s.find('=');
    if (eq != std::string::npos && s.find('=', eq + 1) == std::string::npos && eq + 1 < s.size()) {
      std::string lhs = s.substr(0, eq);
      bool variable = false;
      if (!lhs.empty() && lhs.size() <= 2 && std::all_of(lhs.begin(), lhs.end(), IsAsciiAlpha)) {
        variable = true;
      } else if (lhs.size() >= 2 && lhs[0] == '\\' &&
                 std::all_of(lhs.begin() + 1, lhs.end(), IsAsciiAlpha)) {
        variable = true;
      }
      if (variable) s = s.substr(eq + 1);
    }
  }
  while (!s.empty() && (s.back() == '.' || s.back() == ',')) s.pop_back();
  // A lone pair of braces around everything: "{5}".
  while (s.size() >= 2 && s.front() == '{' && MatchBrace(s, 0) == s.size())
    s = s.substr(1, s.size() - 2);
  return s;
}

}  // namespace retort
