#include "text/pretokenizer.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <utility>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace retort {
namespace {

constexpr const char* kDeepSeekV3Patterns[] = {
    R"(\p{N}{1,3})",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./"
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

// The reference tokenizers run these patterns on Oniguruma. PCRE2 in UCP mode
// agrees with it on the classes these patterns use, including \s on U+0085,
// U+00A0, U+2028 and U+3000 (the corpus case "NEL runs" checks that).
struct ThreadMatchState {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    match_data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr) {
      pcre2_set_match_limit(context, kRegexMatchLimit);
      pcre2_set_depth_limit(context, kRegexMatchLimit / 10);
      pcre2_set_heap_limit(context, 64 * 1024);  // KiB
      if (jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
  }
  ~ThreadMatchState() {
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (context) pcre2_match_context_free(context);
    if (match_data) pcre2_match_data_free(match_data);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

// At most 80 characters of a pattern, for messages.
std::string ShortPattern(const std::string& pattern) {
  if (pattern.size() <= 80) return pattern;
  size_t n = 77;
  while (n > 0 && (static_cast<unsigned char>(pattern[n]) & 0xC0) == 0x80) --n;
  return pattern.substr(0, n) + "...";
}

// Texts on which a pattern with catastrophic backtracking reaches the match
// limit: 4 KiB runs of one character class each, and of mixed classes.
std::vector<std::string> ProbeTexts() {
  std::vector<std::string> texts;
  for (const char* unit : {"a", "A", " ", "0", "\n", "_", ".", "\xc3\xa9", "aA0 ._-\n", "ab"}) {
    std::string t;
    while (t.size() < 4096) t += unit;
    texts.push_back(t);
    // The run, then a character no class above has, then every printable
    // ASCII character: a literal the pattern requires is then present, so
    // PCRE2 cannot rule the match out before backtracking.
    std::string tail = "!\xe2\x80\x94";
    for (char c = ' '; c <= '~'; ++c) tail += c;
    texts.push_back(t + tail);
  }
  return texts;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(const std::string& pattern,
                                                            bool literal) {
  if (!IsValidUtf8(pattern)) {
    return absl::InvalidArgumentError("pre-tokenizer pattern is not valid UTF-8");
  }
  const std::string& translated = pattern;
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(), options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(
        absl::StrCat("cannot compile pre-tokenizer regex /", ShortPattern(pattern),
                     "/: ", reinterpret_cast<char*>(message), " at offset ", error_offset));
  }
  // JIT is an optimisation only; the interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::shared_ptr<Regex> regex(new Regex());
  regex->pattern_ = pattern;
  regex->code_ = code;
  if (!literal) {
    std::vector<std::pair<size_t, size_t>> matches;
    for (const std::string& text : ProbeTexts()) {
      matches.clear();
      if (!regex->Match(text, &matches)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "pre-tokenizer regex /", ShortPattern(pattern), "/ exceeds PCRE2's match limit (",
            kRegexMatchLimit, " steps) on a 4 KiB probe text: catastrophic backtracking"));
      }
    }
  }
  return std::shared_ptr<const Regex>(std::move(regex));
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::Match(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  ThreadMatchState& state = MatchState();
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                               state.match_data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) return true;
    if (rc < 0) return false;  // a resource limit: the rest stays unmatched
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
    const size_t b = ovector[0], e = ovector[1];
    if (e > b) {
      matches->emplace_back(b, e);
      start = e;
    } else {
      // Empty match: step over one character.
      start = NextUtf8CharStart(text, b);
    }
  }
  return true;
}

bool Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  if (Match(text, matches)) return true;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    std::cerr << "warning: pre-tokenizer regex /" << ShortPattern(pattern_)
              << "/ reached PCRE2's match limit; the rest of that text was left unsplit\n";
  }
  return false;
}

namespace {
// The tokenizer.json normalizer type of each normal form.
constexpr std::pair<NormalForm, const char*> kNormalFormNames[] = {
    {NormalForm::kNfc, "NFC"},
    {NormalForm::kNfd, "NFD"},
    {NormalForm::kNfkc, "NFKC"},
    {NormalForm::kNfkd, "NFKD"},
};

using JsonStepFn = std::function<absl::Status(const nlohmann::json& step, const std::string& type)>;

// Calls step(node, type) on each step of a tokenizer.json normalizer or
// pre_tokenizer, in order: a {"type": "Sequence", <children>: [...]} is walked
// into (at most 16 deep), and every node must be an object with a string
// "type". `what` ("normalizer", "pre_tokenizer") and `children`
// ("normalizers", "pretokenizers") name them in messages.
absl::Status ForEachJsonStep(const nlohmann::json& node, const char* what, const char* children,
                             const JsonStepFn& step, int depth = 0) {
  if (depth > 16) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": Sequence nested too deeply"));
  }
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an object with a string \"type\""));
  }
  const std::string type = node["type"].get<std::string>();
  if (type != "Sequence") return step(node, type);
  if (!node.contains(children) || !node[children].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " Sequence: missing array \"", children, "\""));
  }
  for (const auto& child : node[children]) {
    RETURN_IF_ERROR(ForEachJsonStep(child, what, children, step, depth + 1));
  }
  return absl::OkStatus();
}
}  // namespace

// ---------------------------------------------------------------- Normalizer

absl::StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& j) {
  Normalizer n;
  if (j.is_null()) return n;
  auto add = [&](const nlohmann::json&, const std::string& type) -> absl::Status {
    for (const auto& [form, name] : kNormalFormNames) {
      if (type == name) {
        n.AddNormalForm(form);
        return absl::OkStatus();
      }
    }
    if (type != "Lowercase") {
      return absl::UnimplementedError(absl::StrCat(
          "normalizer type \"", type,
          "\" is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase)"));
    }
    n.AddLowercase();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(ForEachJsonStep(j, "normalizer", "normalizers", add));
  return n;
}

std::string Normalizer::Apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    s = step.kind == Step::kForm ? Normalize(s, step.form) : Lowercase(s);
  }
  return s;
}

std::string Normalizer::Describe() const {
  std::vector<std::string> names;
  for (const Step& step : steps_) {
    if (step.kind == Step::kLowercase) {
      names.push_back("Lowercase");
      continue;
    }
    for (const auto& [form, name] : kNormalFormNames) {
      if (step.form == form) names.push_back(name);
    }
  }
  return names.empty() ? "none" : absl::StrJoin(names, ",");
}

// -------------------------------------------------------------- PreTokenizer

absl::Status PreTokenizer::AddSplit(const std::string& pattern, SplitBehavior behavior, bool invert,
                                    bool literal) {
  ASSIGN_OR_RETURN(auto regex, Regex::Compile(pattern, literal));
  Step step;
  step.kind = Step::kSplit;
  step.regex = std::move(regex);
  step.behavior = behavior;
  step.invert = invert;
  steps_.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status PreTokenizer::AddByteLevel(bool add_prefix_space, bool use_regex) {
  if (add_prefix_space) {
    Step step;
    step.kind = Step::kPrefixSpace;
    steps_.push_back(std::move(step));
  }
  if (use_regex) RETURN_IF_ERROR(AddSplit(kGpt2Pattern, SplitBehavior::kIsolated, false));
  byte_level_ = true;
  return absl::OkStatus();
}

absl::Status PreTokenizer::AddDigits(bool individual_digits) {
  return AddSplit(R"(\p{N})",
                  individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
}

namespace {
absl::StatusOr<SplitBehavior> ParseBehavior(const nlohmann::json& j) {
  if (!j.is_string()) return absl::InvalidArgumentError("Split: \"behavior\" must be a string");
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("Split: unknown behavior \"", b, "\""));
}

bool GetBool(const nlohmann::json& j, const char* key, bool fallback) {
  if (j.contains(key) && j[key].is_boolean()) return j[key].get<bool>();
  return fallback;
}
}  // namespace

absl::Status PreTokenizer::AddJsonStep(const nlohmann::json& j, const std::string& type) {
  if (type == "Split") {
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return absl::InvalidArgumentError("pre_tokenizer Split: missing object \"pattern\"");
    }
    const auto& pat = j["pattern"];
    bool literal;
    std::string text;
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      literal = false;
      text = pat["Regex"].get<std::string>();
    } else if (pat.contains("String") && pat["String"].is_string()) {
      literal = true;
      text = pat["String"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          "pre_tokenizer Split: \"pattern\" needs a string \"Regex\" or \"String\"");
    }
    if (!j.contains("behavior")) {
      return absl::InvalidArgumentError("pre_tokenizer Split: missing \"behavior\"");
    }
    ASSIGN_OR_RETURN(SplitBehavior behavior, ParseBehavior(j["behavior"]));
    return AddSplit(text, behavior, GetBool(j, "invert", false), literal);
  }
  if (type == "ByteLevel") {
    return AddByteLevel(GetBool(j, "add_prefix_space", true), GetBool(j, "use_regex", true));
  }
  if (type == "Digits") return AddDigits(GetBool(j, "individual_digits", false));
  if (type == "Whitespace") {
    return AddSplit(R"(\w+|[^\w\s]+)", SplitBehavior::kRemoved, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return AddSplit(R"(\s+)", SplitBehavior::kRemoved, false);
  return absl::UnimplementedError(absl::StrCat(
      "pre_tokenizer type \"", type,
      "\" is not supported (supported: Sequence, Split, ByteLevel, Digits, Whitespace, "
      "WhitespaceSplit)"));
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& j) {
  PreTokenizer p;
  if (j.is_null()) return p;
  RETURN_IF_ERROR(ForEachJsonStep(j, "pre_tokenizer", "pretokenizers",
                                  [&](const nlohmann::json& step, const std::string& type) {
                                    return p.AddJsonStep(step, type);
                                  }));
  return p;
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromName(const std::string& name) {
  PreTokenizer p;
  auto is = [&](std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (name == n) return true;
    }
    return false;
  };
  if (is({"gpt2", "gpt-2", "default", "mpt", "olmo", "jais"})) {
    RETURN_IF_ERROR(p.AddByteLevel(false, true));
  } else if (is({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"})) {
    RETURN_IF_ERROR(p.AddDigits(true));
    RETURN_IF_ERROR(p.AddByteLevel(false, true));
  } else if (is({"llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"})) {
    RETURN_IF_ERROR(p.AddSplit(kLlama3Pattern, SplitBehavior::kIsolated, false));
    RETURN_IF_ERROR(p.AddByteLevel(false, false));
  } else if (is({"qwen2", "deepseek-r1-qwen", "megrez"})) {
    RETURN_IF_ERROR(p.AddSplit(kQwen2Pattern, SplitBehavior::kIsolated, false));
    RETURN_IF_ERROR(p.AddByteLevel(false, false));
  } else if (is({"deepseek-v3", "deepseek-r1", "deepseek3-llm"})) {
    for (const char* pattern : kDeepSeekV3Patterns) {
      RETURN_IF_ERROR(p.AddSplit(pattern, SplitBehavior::kIsolated, false));
    }
    RETURN_IF_ERROR(p.AddByteLevel(false, false));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown pre-tokenizer name \"", name,
        "\" (known: gpt2, smollm, starcoder, llama-bpe, qwen2, deepseek-r1-qwen, deepseek-v3)"));
  }
  return p;
}

namespace {
struct Segment {
  size_t begin, end;
  bool is_match;
};

// Applies one Split step to piece, appending the resulting non-empty pieces.
void SplitPiece(const std::string& piece, const Regex& regex, SplitBehavior behavior, bool invert,
                std::vector<std::pair<size_t, size_t>>* scratch, std::vector<Segment>* segments,
                std::vector<std::string>* out) {
  scratch->clear();
  regex.FindAll(piece, scratch);
  segments->clear();
  size_t pos = 0;
  for (const auto& [b, e] : *scratch) {
    if (b > pos) segments->push_back({pos, b, invert});
    segments->push_back({b, e, !invert});
    pos = e;
  }
  if (pos < piece.size()) segments->push_back({pos, piece.size(), invert});

  std::vector<Segment> merged;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      merged = *segments;
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : *segments) {
        if (!s.is_match) merged.push_back(s);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      // A match joins the piece before it (a run of matches joins only once).
      bool previous_match = false;
      for (const Segment& s : *segments) {
        if (s.is_match && !previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool next_match = false;
      for (auto it = segments->rbegin(); it != segments->rend(); ++it) {
        if (it->is_match && !next_match && !merged.empty()) {
          merged.back().begin = it->begin;
        } else {
          merged.push_back(*it);
        }
        next_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      // Adjacent matches fuse into one piece.
      bool previous_match = false;
      for (const Segment& s : *segments) {
        if (s.is_match && previous_match && !merged.empty()) {
          merged.back().end = s.end;
        } else {
          merged.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const Segment& s : merged) {
    if (s.end > s.begin) out->emplace_back(piece.substr(s.begin, s.end - s.begin));
  }
}
}  // namespace

void PreTokenizer::Split(std::string_view text, std::vector<std::string>* words) const {
  if (text.empty()) return;
  std::vector<std::string> current = {std::string(text)};
  std::vector<std::string> next;
  std::vector<std::pair<size_t, size_t>> scratch;
  std::vector<Segment> segments;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string& piece : current) {
      if (step.kind == Step::kPrefixSpace) {
        if (piece.empty() || piece[0] != ' ') piece.insert(piece.begin(), ' ');
        next.push_back(std::move(piece));
      } else {
        SplitPiece(piece, *step.regex, step.behavior, step.invert, &scratch, &segments, &next);
      }
    }
    current.swap(next);
  }
  for (std::string& piece : current) {
    if (!piece.empty()) words->push_back(std::move(piece));
  }
}

std::string PreTokenizer::Describe() const {
  std::vector<std::string> parts;
  for (const Step& step : steps_) {
    parts.push_back(step.kind == Step::kPrefixSpace
                        ? "PrefixSpace"
                        : absl::StrCat("Split(", step.regex->pattern(), ")"));
  }
  if (byte_level_) parts.push_back("ByteLevel");
  return parts.empty() ? "none" : absl::StrJoin(parts, " ");
}

}  // namespace retort
