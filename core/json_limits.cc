#include "core/json_limits.h"

#include <cstddef>
#include <exception>
#include <string>

#include "absl/strings/str_cat.h"

namespace retort {
namespace {

// nlohmann's messages start with "[json.exception.parse_error.101] "; the
// rest ("parse error at line 1, column 5: syntax error ...") is what helps.
// They quote the bytes last read, which may be anything: those become '?'
// and the quote is cut short, so the error stays one printable line.
std::string ParserMessage(const std::exception& e) {
  std::string_view m = e.what();
  if (!m.empty() && m.front() == '[') {
    size_t close = m.find("] ");
    if (close != std::string_view::npos) m.remove_prefix(close + 2);
  }
  constexpr size_t kMaxLength = 200;
  std::string out;
  for (unsigned char c : m) {
    if (out.size() >= kMaxLength) return out + "...";
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out;
}

template <typename Json>
absl::StatusOr<Json> Parse(std::string_view text, std::string_view what, JsonLimits limits) {
  if (absl::Status s = CheckJsonDepth(text, what, limits); !s.ok()) return s;
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const std::bad_alloc&) {
    throw;  // the CLI reports running out of memory itself
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": not valid JSON: ", ParserMessage(e)));
  }
}

}  // namespace

absl::Status CheckJsonDepth(std::string_view text, std::string_view what, JsonLimits limits) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limits.max_depth) {
          return absl::InvalidArgumentError(
              absl::StrCat(std::string(what), ": JSON nests deeper than ", limits.max_depth,
                           " levels (at byte ", i, ")"));
        }
        break;
      case ']':
      case '}':
        // An unbalanced closer is a syntax error the parser reports.
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what,
                                         JsonLimits limits) {
  return Parse<nlohmann::json>(text, what, limits);
}

absl::StatusOr<nlohmann::ordered_json> ParseOrderedJson(std::string_view text,
                                                        std::string_view what, JsonLimits limits) {
  return Parse<nlohmann::ordered_json>(text, what, limits);
}

}  // namespace retort
