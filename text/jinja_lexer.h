// The Jinja lexer: turns template source into text and tag tokens, applying
// the whitespace rules of the environment transformers builds: trim_blocks
// (drop the first newline after a block or comment tag), lstrip_blocks (drop
// the spaces and tabs before a block or comment tag that starts a line), `-`
// and `+` modifiers, newlines normalised to \n and one trailing newline
// dropped. Internal to the Jinja engine (see jinja.h).
#ifndef RETORT_TEXT_JINJA_LEXER_H_
#define RETORT_TEXT_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace retort::jinja {

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

// "line N: msg" as InvalidArgument, the form of every parse error.
absl::Status LineError(int line, const std::string& msg);

// Tokens of `source`, ending with one kEof. Errors name the line.
absl::StatusOr<std::vector<Token>> Lex(const std::string& source);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_LEXER_H_
