#include "formats/traces.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/status.h"
#include "formats/proto/trace.pb.h"

namespace retort {
namespace {

using ojson = nlohmann::ordered_json;

// ---- UTF-8 ------------------------------------------------------------------

// Offset of the first byte that is not part of well-formed UTF-8 (no
// overlongs, no surrogates, nothing above U+10FFFF), or -1.
int64_t FirstInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (int j = 1; j < len; ++j) {
      if ((p[i + j] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + j] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

// ---- JSON fields ------------------------------------------------------------

// Where a line came from, for error messages.
struct LineRef {
  const std::string& path;
  int64_t line_no;
  absl::Status Error(const std::string& field, const std::string& problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", line_no, ": ", field.empty() ? "" : field + ": ", problem));
  }
};

const char* JsonTypeName(const ojson& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  return j.type_name();
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

absl::StatusOr<std::string> GetString(const ojson& j, const std::string& field, const LineRef& ref) {
  if (!j.is_string()) return ref.Error(field, absl::StrCat("expected a string, got ", JsonTypeName(j)));
  return j.get<std::string>();
}

absl::StatusOr<int64_t> GetInt(const ojson& j, const std::string& field, const LineRef& ref) {
  if (!j.is_number_integer()) {
    return ref.Error(field, absl::StrCat("expected an integer, got ", JsonTypeName(j)));
  }
  return j.get<int64_t>();
}

// Message content: a string, null (tool-call turns) or OpenAI's list of parts,
// of which the text parts are concatenated.
absl::StatusOr<std::string> GetContent(const ojson& j, const std::string& field, const LineRef& ref) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return std::string();
  if (j.is_array()) {
    std::string text;
    for (size_t i = 0; i < j.size(); ++i) {
      const ojson& part = j[i];
      const std::string part_field = absl::StrCat(field, "[", i, "]");
      if (part.is_string()) {
        text += part.get<std::string>();
      } else if (part.is_object() && part.contains("text")) {
        ASSIGN_OR_RETURN(std::string t, GetString(part["text"], part_field + ".text", ref));
        text += t;
      } else {
        return ref.Error(part_field, "expected a text part ({\"type\":\"text\",\"text\":...})");
      }
    }
    return text;
  }
  return ref.Error(field, absl::StrCat("expected a string, null or a list of text parts, got ",
                                       JsonTypeName(j)));
}

// Reference answers are strings, but datasets also carry bare numbers.
absl::StatusOr<std::optional<std::string>> GetAnswer(const ojson& j, const std::string& field,
                                                     const LineRef& ref) {
  if (j.is_null()) return std::optional<std::string>();
  if (j.is_string()) return std::optional<std::string>(j.get<std::string>());
  if (j.is_number()) return std::optional<std::string>(j.dump());
  return ref.Error(field, absl::StrCat("expected a string or a number, got ", JsonTypeName(j)));
}

// An assistant turn without an explicit reasoning field gets its think block
// split off.
void SplitAssistant(TraceMessage* m) {
  if (m->role != "assistant") return;
  ThinkSplit split = SplitThink(m->content);
  if (!split.found) return;
  m->reasoning_content = std::move(split.reasoning);
  m->content = std::move(split.answer);
}

absl::StatusOr<TraceMessage> ParseMessage(const ojson& j, const std::string& field,
                                          const LineRef& ref) {
  if (!j.is_object()) return ref.Error(field, absl::StrCat("expected an object, got ", JsonTypeName(j)));
  TraceMessage m;
  if (!j.contains("role")) return ref.Error(field + ".role", "missing");
  ASSIGN_OR_RETURN(m.role, GetString(j["role"], field + ".role", ref));
  if (!j.contains("content")) return ref.Error(field + ".content", "missing");
  ASSIGN_OR_RETURN(m.content, GetContent(j["content"], field + ".content", ref));
  bool has_reasoning = false;
  for (const char* key : {"reasoning_content", "reasoning"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    ASSIGN_OR_RETURN(m.reasoning_content, GetString(j[key], absl::StrCat(field, ".", key), ref));
    has_reasoning = true;
    break;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "role" || it.key() == "content" || it.key() == "reasoning_content" ||
        (it.key() == "reasoning" && has_reasoning)) {
      continue;
    }
    m.extra[it.key()] = it.value();
  }
  if (!has_reasoning) SplitAssistant(&m);
  return m;
}

absl::StatusOr<std::vector<TraceMessage>> ParseMessages(const ojson& j, const std::string& field,
                                                        const LineRef& ref) {
  if (!j.is_array()) return ref.Error(field, absl::StrCat("expected a list, got ", JsonTypeName(j)));
  std::vector<TraceMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    ASSIGN_OR_RETURN(TraceMessage m, ParseMessage(j[i], absl::StrCat(field, "[", i, "]"), ref));
    messages.push_back(std::move(m));
  }
  return messages;
}

// ShareGPT turns: {"from": "human"|"gpt"|"system"|..., "value": ...}.
absl::StatusOr<std::vector<TraceMessage>> ParseConversations(const ojson& j, const LineRef& ref) {
  const std::string field = "conversations";
  if (!j.is_array()) return ref.Error(field, absl::StrCat("expected a list, got ", JsonTypeName(j)));
  std::vector<TraceMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    const ojson& turn = j[i];
    const std::string tf = absl::StrCat(field, "[", i, "]");
    if (!turn.is_object()) return ref.Error(tf, absl::StrCat("expected an object, got ", JsonTypeName(turn)));
    if (!turn.contains("from")) return ref.Error(tf + ".from", "missing");
    if (!turn.contains("value")) return ref.Error(tf + ".value", "missing");
    ASSIGN_OR_RETURN(std::string from, GetString(turn["from"], tf + ".from", ref));
    TraceMessage m;
    if (from == "human" || from == "user") {
      m.role = "user";
    } else if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "model") {
      m.role = "assistant";
    } else if (from == "system") {
      m.role = "system";
    } else if (from == "tool" || from == "function" || from == "observation") {
      m.role = "tool";
    } else {
      return ref.Error(tf + ".from", absl::StrCat("unknown speaker \"", from,
                                                  "\" (expected human, gpt, system or tool)"));
    }
    ASSIGN_OR_RETURN(m.content, GetContent(turn["value"], tf + ".value", ref));
    SplitAssistant(&m);
    messages.push_back(std::move(m));
  }
  return messages;
}

TraceMessage UserMessage(std::string text) {
  TraceMessage m;
  m.role = "user";
  m.content = std::move(text);
  return m;
}

TraceMessage AssistantMessage(std::string text) {
  TraceMessage m;
  m.role = "assistant";
  m.content = std::move(text);
  SplitAssistant(&m);
  return m;
}

// Keys a dialect reads; everything else goes to TraceSample::extra.
bool IsKnownKey(const std::string& key) {
  static const char* const kKnown[] = {
      "id", "uuid", "sample", "messages", "conversations", "problem", "prompt", "generation",
      "generations", "answer", "solution", "correct", "correctness_math_verify", "finish_reason",
      "prompt_tokens", "completion_tokens", "time_s", "verifier"};
  for (const char* k : kKnown) {
    if (key == k) return true;
  }
  return false;
}

absl::StatusOr<std::vector<TraceSample>> ParseLine(std::string_view line, int64_t line_no,
                                                   const std::string& path, bool all_generations) {
  const LineRef ref{path, line_no};
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (const int64_t bad = FirstInvalidUtf8(line); bad >= 0) {
    return ref.Error("", absl::StrCat("invalid UTF-8 at byte ", bad, " of the line"));
  }
  if (Trim(line).empty()) return ref.Error("", "empty line, expected a JSON object");
  ojson j;
  try {
    j = ojson::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    return ref.Error("", absl::StrCat("invalid JSON: ", e.what()));
  }
  if (!j.is_object()) return ref.Error("", absl::StrCat("expected a JSON object, got ", JsonTypeName(j)));

  TraceSample base;
  // Identity.
  if (j.contains("id")) {
    if (j["id"].is_number_integer()) {
      base.id = j["id"].dump();
    } else {
      ASSIGN_OR_RETURN(base.id, GetString(j["id"], "id", ref));
    }
  } else if (j.contains("uuid")) {
    ASSIGN_OR_RETURN(base.id, GetString(j["uuid"], "uuid", ref));
  } else {
    base.id = absl::StrCat(line_no);
  }
  if (j.contains("sample")) {
    ASSIGN_OR_RETURN(base.sample, GetInt(j["sample"], "sample", ref));
  }
  // Reference answer: "answer" (final answer) wins over "solution" (worked).
  for (const char* key : {"answer", "solution"}) {
    if (!j.contains(key)) continue;
    ASSIGN_OR_RETURN(base.answer, GetAnswer(j[key], key, ref));
    if (base.answer) break;
  }
  if (j.contains("correct") && !j["correct"].is_null()) {
    if (!j["correct"].is_boolean()) {
      return ref.Error("correct", absl::StrCat("expected true/false, got ", JsonTypeName(j["correct"])));
    }
    base.correct = j["correct"].get<bool>();
  }
  if (j.contains("finish_reason") && !j["finish_reason"].is_null()) {
    ASSIGN_OR_RETURN(base.finish_reason, GetString(j["finish_reason"], "finish_reason", ref));
  }
  for (auto [key, dst] : {std::pair{"prompt_tokens", &base.prompt_tokens},
                          std::pair{"completion_tokens", &base.completion_tokens}}) {
    if (!j.contains(key)) continue;
    ASSIGN_OR_RETURN(*dst, GetInt(j[key], key, ref));
    if (*dst < 0) return ref.Error(key, absl::StrCat("expected >= 0, got ", *dst));
  }
  if (j.contains("time_s")) {
    if (!j["time_s"].is_number()) {
      return ref.Error("time_s", absl::StrCat("expected a number, got ", JsonTypeName(j["time_s"])));
    }
    base.time_s = j["time_s"].get<double>();
  }
  if (j.contains("verifier") && !j["verifier"].is_null()) {
    ASSIGN_OR_RETURN(base.verifier, GetString(j["verifier"], "verifier", ref));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!IsKnownKey(it.key())) base.extra[it.key()] = it.value();
  }

  // Conversation, by dialect.
  std::vector<TraceSample> out;
  if (j.contains("messages") && !j["messages"].is_null()) {
    ASSIGN_OR_RETURN(base.messages, ParseMessages(j["messages"], "messages", ref));
    out.push_back(std::move(base));
    return out;
  }
  if (j.contains("conversations")) {
    ASSIGN_OR_RETURN(base.messages, ParseConversations(j["conversations"], ref));
    out.push_back(std::move(base));
    return out;
  }
  const char* prompt_key = j.contains("problem") ? "problem" : j.contains("prompt") ? "prompt" : nullptr;
  if (prompt_key == nullptr) {
    return ref.Error("messages", "missing (and no \"conversations\", \"problem\" or \"prompt\" field)");
  }
  std::vector<TraceMessage> prompt;
  if (j[prompt_key].is_array()) {
    ASSIGN_OR_RETURN(prompt, ParseMessages(j[prompt_key], prompt_key, ref));
  } else {
    ASSIGN_OR_RETURN(std::string text, GetString(j[prompt_key], prompt_key, ref));
    prompt.push_back(UserMessage(std::move(text)));
  }
  if (j.contains("generation") && !j["generation"].is_null()) {
    ASSIGN_OR_RETURN(std::string gen, GetString(j["generation"], "generation", ref));
    base.messages = std::move(prompt);
    base.messages.push_back(AssistantMessage(std::move(gen)));
    out.push_back(std::move(base));
    return out;
  }
  if (j.contains("generations") && !j["generations"].is_null()) {
    const ojson& gens = j["generations"];
    if (!gens.is_array()) {
      return ref.Error("generations", absl::StrCat("expected a list, got ", JsonTypeName(gens)));
    }
    const ojson* verdicts = nullptr;
    if (j.contains("correctness_math_verify") && j["correctness_math_verify"].is_array()) {
      verdicts = &j["correctness_math_verify"];
    }
    for (size_t i = 0; i < gens.size(); ++i) {
      const std::string field = absl::StrCat("generations[", i, "]");
      ASSIGN_OR_RETURN(std::string gen, GetString(gens[i], field, ref));
      TraceSample s = base;
      s.sample = static_cast<int64_t>(i);
      s.messages = prompt;
      s.messages.push_back(AssistantMessage(std::move(gen)));
      if (verdicts != nullptr && i < verdicts->size() && (*verdicts)[i].is_boolean()) {
        s.correct = (*verdicts)[i].get<bool>();
        if (s.verifier.empty()) s.verifier = "math_verify";
      }
      if (all_generations || out.empty()) out.push_back(std::move(s));
    }
    if (out.empty()) return ref.Error("generations", "empty list");
    return out;
  }
  // A prompt without a completion (a prompts file).
  base.messages = std::move(prompt);
  out.push_back(std::move(base));
  return out;
}

// ---- varints and bits ---------------------------------------------------------

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

uint64_t ZigZag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

// MSB-first bit packing.
class BitWriter {
 public:
  void Put(uint64_t value, int bits) {
    for (int b = bits - 1; b >= 0; --b) {
      acc_ = static_cast<uint8_t>((acc_ << 1) | ((value >> b) & 1));
      if (++n_ == 8) {
        out_.push_back(static_cast<char>(acc_));
        acc_ = 0, n_ = 0;
      }
    }
  }
  // Truncated binary code of x in [0, n): n == 1 takes no bits.
  void PutTruncated(uint32_t x, uint32_t n) {
    if (n <= 1) return;
    const int b = 31 - __builtin_clz(n);
    const uint32_t u = (2u << b) - n;  // this many values get b bits
    if (x < u) {
      Put(x, b);
    } else {
      Put(x + u, b + 1);
    }
  }
  std::string Finish() {
    if (n_ > 0) out_.push_back(static_cast<char>(acc_ << (8 - n_)));
    n_ = 0, acc_ = 0;
    return std::move(out_);
  }

 private:
  std::string out_;
  uint8_t acc_ = 0;
  int n_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::string_view in) : in_(in) {}
  bool Get(int bits, uint64_t* value) {
    uint64_t v = 0;
    for (int i = 0; i < bits; ++i) {
      if (pos_ >= in_.size() * 8) return false;
      const int bit = (static_cast<unsigned char>(in_[pos_ / 8]) >> (7 - pos_ % 8)) & 1;
      v = (v << 1) | bit;
      ++pos_;
    }
    *value = v;
    return true;
  }
  bool GetTruncated(uint32_t n, uint32_t* x) {
    if (n <= 1) {
      *x = 0;
      return true;
    }
    const int b = 31 - __builtin_clz(n);
    const uint32_t u = (2u << b) - n;
    uint64_t v;
    if (!Get(b, &v)) return false;
    if (v >= u) {
      uint64_t bit;
      if (!Get(1, &bit)) return false;
      v = ((v << 1) | bit) - u;
    }
    *x = static_cast<uint32_t>(v);
    return true;
  }
  // Bits left in the last byte must be zero padding, and no byte may follow.
  bool AtCleanEnd() const {
    if ((pos_ + 7) / 8 != in_.size()) return false;
    uint64_t pad = 0;
    for (size_t p = pos_; p < in_.size() * 8; ++p) {
      pad |= (static_cast<unsigned char>(in_[p / 8]) >> (7 - p % 8)) & 1;
    }
    return pad == 0;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// ---- top-k encoding -------------------------------------------------------------

constexpr uint8_t kTopKVersion = 1;
constexpr double kTop1Scale = 4096.0;      // top-1 log-prob step: 2^-12 nat
constexpr uint64_t kNegInfSteps = 1u << 24;  // offsets at or past this decode to -inf
constexpr int64_t kMaxIdSpace = 1 << 24;     // ids must be below this

// The vocabulary ordered by how often each id has been in a top-k row of the
// record so far (most frequent first; ties keep their current order). Ids
// are coded by their rank here, which turns "the usual suspects" (punctuation,
// function words) into small numbers. Encoder and decoder replay the same
// updates, row by row, in rank order.
class CountRankTable {
 public:
  explicit CountRankTable(int64_t size)
      : id_at_(size), rank_of_(size), count_(size, 0), first_{0}, size_{static_cast<int32_t>(size)} {
    for (int64_t i = 0; i < size; ++i) id_at_[i] = rank_of_[i] = static_cast<int32_t>(i);
  }
  int32_t rank_of(int32_t id) const { return rank_of_[id]; }
  int32_t id_at(int32_t rank) const { return id_at_[rank]; }

  // count[id] += 1: the id swaps with the first id of its count block and so
  // becomes the last of the next higher block.
  void Bump(int32_t id) {
    const int32_t c = count_[id];
    if (static_cast<size_t>(c + 1) >= first_.size()) {
      first_.resize(c + 2, 0);
      size_.resize(c + 2, 0);
    }
    const int32_t r = rank_of_[id];
    const int32_t h = first_[c];
    const int32_t other = id_at_[h];
    id_at_[h] = id, rank_of_[id] = h;
    id_at_[r] = other, rank_of_[other] = r;
    first_[c] = h + 1;
    --size_[c];
    if (size_[c + 1] == 0) first_[c + 1] = h;
    ++size_[c + 1];
    count_[id] = c + 1;
  }

 private:
  std::vector<int32_t> id_at_, rank_of_, count_;
  std::vector<int32_t> first_, size_;  // per count: first rank of its block, block size
};

absl::Status TopKError(const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("top-k: ", problem));
}

absl::Status ValidateEncoding(const TopKEncoding& e) {
  if (e.step_bits < 0 || e.step_bits > 12 || e.tail_step_bits < 0 || e.tail_step_bits > e.step_bits ||
      e.tail_from_nats < 0 || e.tail_from_nats > 255) {
    return TopKError(absl::StrCat("encoding step_bits ", e.step_bits, ", tail_step_bits ", e.tail_step_bits,
                                  ", tail_from_nats ", e.tail_from_nats,
                                  " outside step_bits in [0, 12], tail_step_bits in [0, step_bits], "
                                  "tail_from_nats in [0, 255]"));
  }
  return absl::OkStatus();
}

// Offsets from the top-1 (nats, >= 0) <-> integer codes: fine steps up to
// tail_from_nats, coarse steps beyond, kNegInfSteps and above for -inf. The
// map is monotone, so rank order survives quantisation.
class OffsetScale {
 public:
  explicit OffsetScale(const TopKEncoding& e)
      : fine_(std::ldexp(1.0, e.step_bits)),
        coarse_(std::ldexp(1.0, e.tail_step_bits)),
        knee_nats_(e.tail_from_nats),
        knee_code_(static_cast<uint64_t>(e.tail_from_nats) << e.step_bits) {}

  uint64_t Encode(double offset) const {
    if (!(offset < 1e12)) return kNegInfSteps;  // +inf (a -inf log-prob) and huge
    offset = std::max(0.0, offset);
    const double code = offset < knee_nats_ ? offset * fine_
                                            : static_cast<double>(knee_code_) + (offset - knee_nats_) * coarse_;
    const double rounded = std::nearbyint(code);
    return rounded >= static_cast<double>(kNegInfSteps) ? kNegInfSteps : static_cast<uint64_t>(rounded);
  }
  double Decode(uint64_t code) const {
    if (code < knee_code_) return static_cast<double>(code) / fine_;
    return knee_nats_ + static_cast<double>(code - knee_code_) / coarse_;
  }

 private:
  double fine_, coarse_, knee_nats_;
  uint64_t knee_code_;
};
absl::Status TopKDataLoss(const std::string& problem) {
  return absl::DataLossError(absl::StrCat("topk bytes: ", problem));
}

}  // namespace

// ---- public: JSONL ----------------------------------------------------------------

const TraceMessage* TraceSample::Completion() const {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->role == "assistant") return &*it;
  }
  return nullptr;
}

std::string TraceSample::PromptText() const {
  for (const TraceMessage& m : messages) {
    if (m.role == "user") return m.content;
  }
  return "";
}

ThinkSplit SplitThink(std::string_view text) {
  static constexpr std::string_view kOpen = "<think>", kClose = "</think>";
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

absl::StatusOr<TraceSample> ParseTraceLine(std::string_view line, int64_t line_no,
                                           const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ParseLine(line, line_no, path, false));
  return std::move(samples.front());
}

absl::StatusOr<std::vector<TraceSample>> ParseTraceLineSamples(std::string_view line,
                                                               int64_t line_no,
                                                               const std::string& path) {
  return ParseLine(line, line_no, path, true);
}

std::string TraceSampleToJsonLine(const TraceSample& s) {
  ojson j = ojson::object();
  j["id"] = s.id;
  j["sample"] = s.sample;
  ojson messages = ojson::array();
  for (const TraceMessage& m : s.messages) {
    ojson mj = ojson::object();
    mj["role"] = m.role;
    mj["content"] = m.content;
    // Always present on assistant turns, so a reader never re-splits an
    // answer that happens to contain a think tag.
    if (m.role == "assistant" || !m.reasoning_content.empty()) {
      mj["reasoning_content"] = m.reasoning_content;
    }
    if (m.extra.is_object()) {
      for (auto it = m.extra.begin(); it != m.extra.end(); ++it) mj[it.key()] = it.value();
    }
    messages.push_back(std::move(mj));
  }
  j["messages"] = std::move(messages);
  if (s.answer) j["answer"] = *s.answer;
  if (s.correct) j["correct"] = *s.correct;
  if (!s.finish_reason.empty()) j["finish_reason"] = s.finish_reason;
  j["prompt_tokens"] = s.prompt_tokens;
  j["completion_tokens"] = s.completion_tokens;
  j["time_s"] = s.time_s;
  if (!s.verifier.empty()) j["verifier"] = s.verifier;
  if (s.extra.is_object()) {
    for (auto it = s.extra.begin(); it != s.extra.end(); ++it) {
      if (!j.contains(it.key())) j[it.key()] = it.value();
    }
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::vector<TraceSample>> ReadTraceJsonl(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<TraceSample> samples;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (Trim(line).empty()) continue;
    ASSIGN_OR_RETURN(std::vector<TraceSample> got, ParseTraceLineSamples(line, line_no, path));
    for (TraceSample& s : got) samples.push_back(std::move(s));
  }
  return samples;
}

// ---- public: top-k ------------------------------------------------------------------

double TopKMaxLogprobError(const TopKEncoding& encoding) {
  return std::max({std::ldexp(1.0, -(encoding.step_bits + 1)),
                   std::ldexp(1.0, -(encoding.tail_step_bits + 1)), 0.5 / kTop1Scale});
}

absl::StatusOr<std::string> EncodeTopK(const std::vector<int32_t>& ids,
                                       const std::vector<float>& logprobs, int64_t rows,
                                       int32_t k, const TopKEncoding& encoding) {
  if (k < 0 || rows < 0) return TopKError(absl::StrCat("negative size (rows ", rows, ", k ", k, ")"));
  RETURN_IF_ERROR(ValidateEncoding(encoding));
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(k);
  if (ids.size() != n || logprobs.size() != n) {
    return TopKError(absl::StrCat("expected ", rows, " x ", k, " = ", n, " ids and log-probs, got ",
                                  ids.size(), " and ", logprobs.size()));
  }
  int64_t id_space = 0;
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= kMaxIdSpace) {
      return TopKError(absl::StrCat("row ", i / k, " rank ", i % k, ": id ", ids[i],
                                    " outside [0, ", kMaxIdSpace, ")"));
    }
    id_space = std::max<int64_t>(id_space, ids[i] + 1);
  }
  const OffsetScale scale(encoding);

  std::string header;
  header.push_back(static_cast<char>(kTopKVersion));
  header.push_back(static_cast<char>(encoding.step_bits));
  header.push_back(static_cast<char>(encoding.tail_step_bits));
  header.push_back(static_cast<char>(encoding.tail_from_nats));
  PutVarint(static_cast<uint64_t>(id_space), &header);
  std::string top1, offsets, members;
  BitWriter order;
  CountRankTable table(id_space);
  std::vector<int32_t> ranks(k), remaining;
  remaining.reserve(k);
  for (int64_t row = 0; row < rows; ++row) {
    const int32_t* rid = ids.data() + row * k;
    const float* rlp = logprobs.data() + row * k;
    if (k == 0) continue;
    // Log-probs: the top-1 in steps of 2^-12, the rest as offsets from the
    // decoded top-1, stored as differences of consecutive offsets.
    if (!std::isfinite(rlp[0]) || std::fabs(rlp[0]) > 1e12) {
      return TopKError(absl::StrCat("row ", row, ": top-1 log-prob ", rlp[0], " is not finite"));
    }
    const int64_t top1_steps = std::llround(-static_cast<double>(rlp[0]) * kTop1Scale);
    PutVarint(ZigZag(top1_steps), &top1);
    const double top1_decoded = -static_cast<double>(top1_steps) / kTop1Scale;
    uint64_t prev_q = 0;
    for (int32_t r = 1; r < k; ++r) {
      const float lp = rlp[r];
      if (std::isnan(lp)) return TopKError(absl::StrCat("row ", row, " rank ", r, ": log-prob is NaN"));
      if (lp > rlp[r - 1]) {
        return TopKError(absl::StrCat("row ", row, " rank ", r, ": log-prob ", lp,
                                      " above the previous rank's ", rlp[r - 1],
                                      " (expected rank order, best first)"));
      }
      uint64_t q = scale.Encode(top1_decoded - static_cast<double>(lp));
      q = std::max(q, prev_q);
      PutVarint(q - prev_q, &offsets);
      prev_q = q;
    }
    // Ids: the set as gaps between its sorted count-ranks, then the rank
    // order as a Lehmer code over that sorted list.
    for (int32_t r = 0; r < k; ++r) ranks[r] = table.rank_of(rid[r]);
    remaining.assign(ranks.begin(), ranks.end());
    std::sort(remaining.begin(), remaining.end());
    for (int32_t r = 0; r < k; ++r) {
      if (r > 0 && remaining[r] == remaining[r - 1]) {
        return TopKError(absl::StrCat("row ", row, ": id ", table.id_at(remaining[r]),
                                      " appears twice"));
      }
      PutVarint(static_cast<uint64_t>(remaining[r] - (r > 0 ? remaining[r - 1] + 1 : 0)), &members);
    }
    for (int32_t r = 0; r < k; ++r) {
      const auto it = std::lower_bound(remaining.begin(), remaining.end(), ranks[r]);
      order.PutTruncated(static_cast<uint32_t>(it - remaining.begin()),
                         static_cast<uint32_t>(remaining.size()));
      remaining.erase(it);
    }
    for (int32_t r = 0; r < k; ++r) table.Bump(rid[r]);
  }
  std::string out = std::move(header);
  for (const std::string& stream : {top1, offsets, members, order.Finish()}) {
    PutVarint(stream.size(), &out);
    out += stream;
  }
  return out;
}

absl::Status DecodeTopK(std::string_view bytes, int64_t rows, int32_t k, std::vector<int32_t>* ids,
                        std::vector<float>* logprobs) {
  ids->clear();
  logprobs->clear();
  if (rows < 0 || k < 0) return TopKDataLoss(absl::StrCat("negative size (rows ", rows, ", k ", k, ")"));
  if (bytes.size() < 4) return TopKDataLoss("truncated header");
  if (static_cast<uint8_t>(bytes[0]) != kTopKVersion) {
    return TopKDataLoss(absl::StrCat("unknown version ", static_cast<int>(static_cast<uint8_t>(bytes[0]))));
  }
  const TopKEncoding encoding{static_cast<uint8_t>(bytes[1]), static_cast<uint8_t>(bytes[2]),
                              static_cast<uint8_t>(bytes[3])};
  if (absl::Status st = ValidateEncoding(encoding); !st.ok()) return TopKDataLoss(std::string(st.message()));
  const OffsetScale scale(encoding);
  bytes.remove_prefix(4);
  uint64_t id_space;
  if (!GetVarint(&bytes, &id_space) || id_space > static_cast<uint64_t>(kMaxIdSpace)) {
    return TopKDataLoss("bad id space");
  }
  std::string_view streams[4];
  for (std::string_view& s : streams) {
    uint64_t len;
    if (!GetVarint(&bytes, &len) || len > bytes.size()) return TopKDataLoss("truncated stream");
    s = bytes.substr(0, len);
    bytes.remove_prefix(len);
  }
  if (!bytes.empty()) return TopKDataLoss(absl::StrCat(bytes.size(), " trailing bytes"));
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(k);
  if (n > 0 && id_space < static_cast<uint64_t>(k)) {
    return TopKDataLoss(absl::StrCat("id space ", id_space, " smaller than k ", k));
  }
  // Every entry takes at least one byte of offsets or members; refuse sizes
  // the streams cannot hold before allocating for them.
  if (n > 0 && (streams[2].size() < n || streams[0].size() < static_cast<uint64_t>(rows))) {
    return TopKDataLoss(absl::StrCat("streams too short for ", rows, " x ", k, " entries"));
  }
  ids->resize(n);
  logprobs->resize(n);
  std::string_view top1 = streams[0], offsets = streams[1], members = streams[2];
  BitReader order(streams[3]);
  CountRankTable table(n > 0 ? static_cast<int64_t>(id_space) : 0);
  std::vector<int32_t> sorted;
  sorted.reserve(k);
  for (int64_t row = 0; row < rows && k > 0; ++row) {
    int32_t* rid = ids->data() + row * k;
    float* rlp = logprobs->data() + row * k;
    uint64_t v;
    if (!GetVarint(&top1, &v)) return TopKDataLoss(absl::StrCat("row ", row, ": truncated top-1"));
    const double top1_decoded = -static_cast<double>(UnZigZag(v)) / kTop1Scale;
    rlp[0] = static_cast<float>(top1_decoded);
    uint64_t q = 0;
    for (int32_t r = 1; r < k; ++r) {
      if (!GetVarint(&offsets, &v) || v > kNegInfSteps || q + v > kNegInfSteps) {
        return TopKDataLoss(absl::StrCat("row ", row, " rank ", r, ": bad log-prob offset"));
      }
      q += v;
      rlp[r] = q >= kNegInfSteps ? -std::numeric_limits<float>::infinity()
                                 : static_cast<float>(top1_decoded - scale.Decode(q));
    }
    sorted.clear();
    int64_t rank = -1;
    for (int32_t r = 0; r < k; ++r) {
      if (!GetVarint(&members, &v) || v >= id_space || rank + 1 + static_cast<int64_t>(v) >= static_cast<int64_t>(id_space)) {
        return TopKDataLoss(absl::StrCat("row ", row, " entry ", r, ": bad id gap"));
      }
      rank += 1 + static_cast<int64_t>(v);
      sorted.push_back(static_cast<int32_t>(rank));
    }
    for (int32_t r = 0; r < k; ++r) {
      uint32_t idx;
      if (!order.GetTruncated(static_cast<uint32_t>(sorted.size()), &idx) || idx >= sorted.size()) {
        return TopKDataLoss(absl::StrCat("row ", row, " rank ", r, ": bad order code"));
      }
      rid[r] = table.id_at(sorted[idx]);
      sorted.erase(sorted.begin() + idx);
    }
    for (int32_t r = 0; r < k; ++r) table.Bump(rid[r]);
  }
  if (!top1.empty() || !offsets.empty() || !members.empty() || !order.AtCleanEnd()) {
    return TopKDataLoss("streams longer than the rows they code");
  }
  return absl::OkStatus();
}

// ---- public: shard writer ----------------------------------------------------------

namespace {

absl::Status ErrnoStatus(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

absl::Status RecordError(const TraceTokens& r, const std::string& problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("trace record \"", r.id, "\" sample ", r.sample, ": ", problem));
}

}  // namespace

absl::StatusOr<TraceShardWriter> TraceShardWriter::Open(const std::string& path, bool append,
                                                        TopKEncoding encoding, int zstd_level) {
  if (absl::Status st = ValidateEncoding(encoding); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  TraceShardWriter w;
  w.path_ = path;
  w.encoding_ = encoding;
  w.zstd_level_ = zstd_level;
  if (append && ::access(path.c_str(), F_OK) == 0) {
    ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
    while (true) {
      TraceTokens scratch;
      absl::StatusOr<bool> more = reader.Next(&scratch);
      if (!more.ok()) {
        if (!absl::IsDataLoss(more.status())) return more.status();
        break;
      }
      if (!*more) break;
    }
    const int64_t keep = reader.valid_bytes();
    w.truncated_bytes_ = reader.file_bytes() - keep;
    if (w.truncated_bytes_ > 0 && ::truncate(path.c_str(), keep) != 0) {
      return ErrnoStatus(path, "cannot cut the damaged tail");
    }
  }
  w.file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (w.file_ == nullptr) return ErrnoStatus(path, "cannot open for writing");
  return w;
}

TraceShardWriter::TraceShardWriter(TraceShardWriter&& other) noexcept { *this = std::move(other); }

TraceShardWriter& TraceShardWriter::operator=(TraceShardWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) (void)Close();
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, nullptr);
    encoding_ = other.encoding_;
    zstd_level_ = other.zstd_level_;
    pending_ = std::move(other.pending_);
    other.pending_.clear();
    records_ = other.records_;
    truncated_bytes_ = other.truncated_bytes_;
  }
  return *this;
}

TraceShardWriter::~TraceShardWriter() {
  if (file_ != nullptr) (void)Close();
}

absl::Status TraceShardWriter::Append(const TraceTokens& r) {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  const int64_t completion = static_cast<int64_t>(r.completion_ids.size());
  if (r.top_k < 0) return RecordError(r, absl::StrCat("top_k ", r.top_k, " < 0"));
  const uint64_t topk_n = static_cast<uint64_t>(completion) * static_cast<uint64_t>(r.top_k);
  if (r.topk_ids.size() != topk_n || r.topk_logprobs.size() != topk_n) {
    return RecordError(r, absl::StrCat("expected completion ", completion, " x top_k ", r.top_k, " = ",
                                       topk_n, " top-k ids and log-probs, got ", r.topk_ids.size(),
                                       " and ", r.topk_logprobs.size()));
  }
  if (!r.sampled_logprobs.empty() && static_cast<int64_t>(r.sampled_logprobs.size()) != completion) {
    return RecordError(r, absl::StrCat("expected ", completion, " sampled log-probs (or none), got ",
                                       r.sampled_logprobs.size()));
  }
  if (const int64_t bad = FirstInvalidUtf8(r.id); bad >= 0) {
    return RecordError(r, absl::StrCat("id is not UTF-8 (byte ", bad, ")"));
  }
  proto::TraceTokens msg;
  msg.set_id(r.id);
  msg.set_sample(r.sample);
  msg.mutable_prompt_ids()->Add(r.prompt_ids.begin(), r.prompt_ids.end());
  msg.mutable_completion_ids()->Add(r.completion_ids.begin(), r.completion_ids.end());
  msg.set_top_k(r.top_k);
  if (r.top_k > 0 && completion > 0) {
    absl::StatusOr<std::string> topk = EncodeTopK(r.topk_ids, r.topk_logprobs, completion, r.top_k, encoding_);
    if (!topk.ok()) return RecordError(r, std::string(topk.status().message()));
    msg.set_topk_encoded(std::move(*topk));
  }
  msg.mutable_sampled_logprobs()->Add(r.sampled_logprobs.begin(), r.sampled_logprobs.end());
  std::string bytes;
  if (!msg.SerializeToString(&bytes)) return RecordError(r, "protobuf serialisation failed");
  PutVarint(bytes.size(), &pending_);
  pending_ += bytes;
  ++records_;
  if (pending_.size() >= kAutoFrameBytes) return WriteFrame();
  return absl::OkStatus();
}

absl::Status TraceShardWriter::WriteFrame() {
  if (pending_.empty()) return absl::OkStatus();
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (cctx == nullptr) return absl::ResourceExhaustedError(absl::StrCat(path_, ": cannot create a zstd context"));
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, zstd_level_);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  std::string frame(ZSTD_compressBound(pending_.size()), '\0');
  const size_t n = ZSTD_compress2(cctx.get(), frame.data(), frame.size(), pending_.data(), pending_.size());
  if (ZSTD_isError(n)) {
    return absl::InternalError(absl::StrCat(path_, ": zstd compression failed: ", ZSTD_getErrorName(n)));
  }
  const long before = std::ftell(file_);
  if (std::fwrite(frame.data(), 1, n, file_) != n || std::fflush(file_) != 0) {
    absl::Status err = ErrnoStatus(path_, "write failed");
    // Leave the file at its last whole frame if we can.
    if (before >= 0 && ::ftruncate(::fileno(file_), before) == 0) std::clearerr(file_);
    return err;
  }
  pending_.clear();
  return absl::OkStatus();
}

absl::Status TraceShardWriter::Commit() {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  RETURN_IF_ERROR(WriteFrame());
  if (::fsync(::fileno(file_)) != 0) return ErrnoStatus(path_, "fsync failed");
  return absl::OkStatus();
}

absl::Status TraceShardWriter::Close() {
  if (file_ == nullptr) return absl::OkStatus();
  absl::Status status = Commit();
  if (std::fclose(file_) != 0 && status.ok()) status = ErrnoStatus(path_, "close failed");
  file_ = nullptr;
  return status;
}

// ---- public: shard reader ----------------------------------------------------------

absl::StatusOr<TraceShardReader> TraceShardReader::Open(const std::string& path) {
  TraceShardReader r;
  r.path_ = path;
  ASSIGN_OR_RETURN(r.file_, MappedFile::Open(path));
  return r;
}

TraceShardReader::TraceShardReader(TraceShardReader&&) noexcept = default;
TraceShardReader& TraceShardReader::operator=(TraceShardReader&&) noexcept = default;
TraceShardReader::~TraceShardReader() = default;

int64_t TraceShardReader::file_bytes() const { return file_ ? static_cast<int64_t>(file_->size()) : 0; }

absl::StatusOr<bool> TraceShardReader::LoadNextFrame() {
  const int64_t size = file_bytes();
  frame_.clear();
  frame_pos_ = 0;
  if (frame_offset_ >= size) return false;
  const uint8_t* src = file_->data() + frame_offset_;
  const size_t avail = static_cast<size_t>(size - frame_offset_);
  auto damaged = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(
        path_, ": truncated or corrupt zstd frame at byte ", frame_offset_, " of ", size, " (", why,
        "); the first ", valid_bytes_, " bytes hold ", records_read_, " complete records"));
  };
  const size_t compressed = ZSTD_findFrameCompressedSize(src, avail);
  if (ZSTD_isError(compressed)) return damaged(ZSTD_getErrorName(compressed));
  const unsigned long long content = ZSTD_getFrameContentSize(src, avail);
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return damaged("frame without a content size");
  }
  // A damaged header must not make us allocate: every zstd block holds at
  // most 128 KiB and costs at least a 3-byte header.
  if (content > (compressed / 3 + 1) * (128ull << 10)) {
    return damaged(absl::StrCat("content size ", content, " impossible for ", compressed, " bytes"));
  }
  // Decompress aside: frame_ only ever holds a verified frame.
  std::string frame(content, '\0');
  const size_t got = ZSTD_decompress(frame.data(), frame.size(), src, compressed);
  if (ZSTD_isError(got)) return damaged(ZSTD_getErrorName(got));
  if (got != content) return damaged("content size mismatch");
  // The frame must be whole records.
  std::string_view rest(frame);
  while (!rest.empty()) {
    uint64_t len;
    if (!GetVarint(&rest, &len) || len > rest.size()) return damaged("frame ends inside a record");
    rest.remove_prefix(len);
  }
  frame_ = std::move(frame);
  frame_start_ = frame_offset_;
  frame_offset_ += static_cast<int64_t>(compressed);
  ++frames_read_;
  valid_bytes_ = frame_offset_;
  return true;
}

absl::StatusOr<bool> TraceShardReader::Next(TraceTokens* record) {
  while (frame_pos_ >= frame_.size()) {
    if (done_) return false;
    absl::StatusOr<bool> loaded = LoadNextFrame();
    if (!loaded.ok()) {
      done_ = true;
      tail_status_ = loaded.status();
      return loaded.status();
    }
    if (!*loaded) {
      done_ = true;
      return false;
    }
  }
  std::string_view rest(frame_);
  rest.remove_prefix(frame_pos_);
  uint64_t len = 0;
  GetVarint(&rest, &len);  // checked in LoadNextFrame
  const std::string_view bytes = rest.substr(0, len);
  frame_pos_ = frame_.size() - rest.size() + len;

  auto corrupt = [&](const std::string& why) {
    done_ = true;
    frame_.clear();
    frame_pos_ = 0;
    valid_bytes_ = frame_start_;
    tail_status_ = absl::DataLossError(absl::StrCat(path_, ": corrupt record in the frame at byte ",
                                                    frame_start_, ": ", why));
    return tail_status_;
  };
  proto::TraceTokens msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return corrupt("not a TraceTokens message");
  }
  record->id = msg.id();
  record->sample = msg.sample();
  record->prompt_ids.assign(msg.prompt_ids().begin(), msg.prompt_ids().end());
  record->completion_ids.assign(msg.completion_ids().begin(), msg.completion_ids().end());
  record->top_k = msg.top_k();
  record->sampled_logprobs.assign(msg.sampled_logprobs().begin(), msg.sampled_logprobs().end());
  const int64_t completion = static_cast<int64_t>(record->completion_ids.size());
  if (record->top_k < 0) return corrupt(absl::StrCat("top_k ", record->top_k));
  if (record->top_k > 0 && completion > 0) {
    absl::Status st = DecodeTopK(msg.topk_encoded(), completion, record->top_k, &record->topk_ids,
                                 &record->topk_logprobs);
    if (!st.ok()) return corrupt(absl::StrCat("record \"", record->id, "\": ", st.message()));
  } else {
    record->topk_ids.clear();
    record->topk_logprobs.clear();
    if (!msg.topk_encoded().empty()) return corrupt("top-k bytes without top_k or completion");
  }
  ++records_read_;
  return true;
}

absl::StatusOr<TraceShardStats> ComputeTraceShardStats(const std::string& path) {
  ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
  TraceShardStats stats;
  TraceTokens r;
  while (true) {
    absl::StatusOr<bool> more = reader.Next(&r);
    if (!more.ok()) {
      if (!absl::IsDataLoss(more.status())) return more.status();
      stats.tail = std::string(more.status().message());
      break;
    }
    if (!*more) break;
    ++stats.records;
    stats.prompt_tokens += static_cast<int64_t>(r.prompt_ids.size());
    stats.completion_tokens += static_cast<int64_t>(r.completion_ids.size());
    stats.topk_entries += static_cast<int64_t>(r.completion_ids.size()) * r.top_k;
  }
  stats.frames = reader.frames_read();
  stats.file_bytes = reader.file_bytes();
  stats.valid_bytes = reader.valid_bytes();
  if (stats.completion_tokens > 0) {
    stats.bytes_per_completion_token =
        static_cast<double>(stats.valid_bytes) / static_cast<double>(stats.completion_tokens);
  }
  return stats;
}

}  // namespace retort
