#include "formats/reasoning.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace retort {
namespace {

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace

ThinkSplit SplitThink(std::string_view text) {
  constexpr std::string_view kOpen = kReasoningOpenTag, kClose = kReasoningCloseTag;
  ThinkSplit out;
  const size_t open = text.find(kOpen);
  const size_t close = text.find(kClose, open == std::string_view::npos ? 0 : open + kOpen.size());
  if (open == std::string_view::npos && close == std::string_view::npos) {
    out.answer = std::string(text);
    return out;
  }
  out.found = true;
  if (close == std::string_view::npos) {  // cut off while thinking
    out.reasoning = Trim(text.substr(open + kOpen.size()));
    out.answer = Trim(text.substr(0, open));
    return out;
  }
  const size_t begin = open == std::string_view::npos ? 0 : open + kOpen.size();
  out.reasoning = Trim(text.substr(begin, close - begin));
  const std::string before = open == std::string_view::npos ? "" : Trim(text.substr(0, open));
  const std::string after = Trim(text.substr(close + kClose.size()));
  out.answer = before.empty() ? after : after.empty() ? before : before + "\n\n" + after;
  return out;
}

std::string JoinReasoning(std::string_view reasoning, std::string_view answer) {
  if (reasoning.empty()) return std::string(answer);
  std::string out(kReasoningPrefix);
  out.append(reasoning).append("\n").append(kReasoningCloseTag).append("\n\n").append(answer);
  return out;
}

size_t PartialSuffixLength(std::string_view text, std::string_view s) {
  if (s.empty()) return 0;
  for (size_t n = std::min(text.size(), s.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == s.substr(0, n)) return n;
  }
  return 0;
}

bool EndsInsideReasoning(std::string_view prompt) {
  while (!prompt.empty() && std::isspace(static_cast<unsigned char>(prompt.back()))) {
    prompt.remove_suffix(1);
  }
  return prompt.size() >= kReasoningOpenTag.size() &&
         prompt.substr(prompt.size() - kReasoningOpenTag.size()) == kReasoningOpenTag;
}

std::string RemoveThinkBlocks(const std::string& text) {
  const std::string open(kReasoningOpenTag), close(kReasoningCloseTag);
  std::string s = text;
  // A closing tag before any opening one: the reasoning began in the prompt.
  const size_t first_open = s.find(open), first_close = s.find(close);
  if (first_close != std::string::npos &&
      (first_open == std::string::npos || first_close < first_open)) {
    s.erase(0, first_close + close.size());
  }
  for (size_t at = s.find(open); at != std::string::npos; at = s.find(open, at)) {
    const size_t end = s.find(close, at + open.size());
    s.erase(at, end == std::string::npos ? std::string::npos : end + close.size() - at);
  }
  const size_t keep = s.find_first_not_of(" \t\r\n");
  return keep == std::string::npos ? std::string() : s.substr(keep);
}

}  // namespace retort
