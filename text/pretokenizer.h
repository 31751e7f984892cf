// Normalizers and pre-tokenizers of Hugging Face tokenizer.json files.
//
// Text is encoded in stages: added tokens are cut out first (Tokenizer does
// that), each remaining stretch is normalized (Normalizer), split into words
// (PreTokenizer), and each word is handed to BPE. The pre-tokenizer regexes
// are taken from the tokenizer.json itself and need Unicode classes (\p{L},
// \p{N}) and lookahead (\s+(?!\S)), so they run on PCRE2 in UTF + UCP mode.
//
// Supported (what byte-level BPE models use): normalizers Sequence, NFC, NFD,
// NFKC, NFKD, Lowercase; pre-tokenizers Sequence, Split (Regex or String
// pattern; behaviours Removed, Isolated, MergedWithPrevious, MergedWithNext,
// Contiguous; invert), ByteLevel (add_prefix_space, use_regex), Digits,
// Whitespace, WhitespaceSplit. Anything else is refused when loading, never
// silently ignored.
//
// PreTokenizer::FromName builds the pre-tokenizer of a GGUF
// `tokenizer.ggml.pre` name so that a tokenizer rebuilt from GGUF metadata
// splits text exactly as the model's tokenizer.json does.
//
// Objects are immutable after construction and safe to use from many threads.
#ifndef RETORT_TEXT_PRETOKENIZER_H_
#define RETORT_TEXT_PRETOKENIZER_H_

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "text/unicode.h"

namespace retort {

// Pre-tokenizer regexes of well-known models, as written in their tokenizer.json.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// PCRE2's match limit for one match attempt of a pre-tokenizer regex. The
// shipped patterns need a few steps per byte of the token they match.
inline constexpr uint32_t kRegexMatchLimit = 1'000'000;

// A compiled PCRE2 pattern (UTF, UCP, JIT when available).
class Regex {
 public:
  // `literal` compiles the text as a plain string (tokenizer.json "String" patterns).
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern,
                                                              bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of the non-overlapping, non-empty
  // matches in text, left to right. REQUIRES: text is valid UTF-8.
  //
  // Each match attempt is bounded by PCRE2's match and depth limits
  // (kRegexMatchLimit), so a pattern with catastrophic backtracking cannot
  // hang a process. Compile refuses a pattern that reaches the limit on
  // probe texts; should another text reach it, the rest of that text is left
  // unmatched, a warning is printed once, and FindAll returns false.
  bool FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  // FindAll without the warning: false when a match attempt hit a limit.
  bool Match(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// One text-rewriting step applied to each stretch between added tokens.
class Normalizer {
 public:
  // Parses a tokenizer.json "normalizer" value (null means none).
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& j);
  void AddNormalForm(NormalForm form) { steps_.push_back({Step::kForm, form}); }
  void AddLowercase() { steps_.push_back({Step::kLowercase, NormalForm::kNfc}); }

  // REQUIRES: text is valid UTF-8.
  std::string Apply(std::string_view text) const;
  bool empty() const { return steps_.empty(); }
  // A short description, e.g. "NFC", for messages and tests.
  std::string Describe() const;

 private:
  struct Step {
    enum Kind { kForm, kLowercase } kind;
    NormalForm form;
  };
  std::vector<Step> steps_;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits normalized text into the words that BPE sees.
class PreTokenizer {
 public:
  // Parses a tokenizer.json "pre_tokenizer" value (null means no splitting).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& j);
  // The pre-tokenizer behind a GGUF tokenizer.ggml.pre name: "gpt2", "smollm",
  // "starcoder", "llama-bpe" / "llama3", "qwen2", "deepseek-r1-qwen",
  // "deepseek-v3" / "deepseek-r1" ... (see pretokenizer.cc).
  static absl::StatusOr<PreTokenizer> FromName(const std::string& name);

  absl::Status AddSplit(const std::string& pattern, SplitBehavior behavior, bool invert,
                        bool literal = false);
  absl::Status AddByteLevel(bool add_prefix_space, bool use_regex);
  absl::Status AddDigits(bool individual_digits);

  // Appends the words of text to *words (raw bytes; byte-level mapping is the
  // model's job). REQUIRES: text is valid UTF-8.
  void Split(std::string_view text, std::vector<std::string>* words) const;
  // True if a ByteLevel step is present: words are then byte-mapped before BPE.
  bool byte_level() const { return byte_level_; }
  std::string Describe() const;

 private:
  struct Step {
    enum Kind { kSplit, kPrefixSpace } kind;
    std::shared_ptr<const Regex> regex;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
  };
  // Adds the step of one non-Sequence tokenizer.json pre_tokenizer node of `type`.
  absl::Status AddJsonStep(const nlohmann::json& j, const std::string& type);
  std::vector<Step> steps_;
  bool byte_level_ = false;
};

}  // namespace retort

#endif  // RETORT_TEXT_PRETOKENIZER_H_
