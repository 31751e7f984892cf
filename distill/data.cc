#include "distill/data.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "core/utf8.h"
#include "formats/json_fields.h"
#include "formats/traces.h"

namespace retort {
namespace {

using ojson = nlohmann::ordered_json;

// A content no template produces by itself: what follows it in a rendered
// assistant turn is the template's end-of-turn text.
constexpr char kSentinel[] = "RETORTSENTINELASSISTANTCONTENT";

std::string StripNewlines(const std::string& s, bool leading, bool trailing) {
  size_t b = 0, e = s.size();
  if (leading) {
    while (b < e && s[b] == '\n') ++b;
  }
  if (trailing) {
    while (e > b && s[e - 1] == '\n') --e;
  }
  return s.substr(b, e - b);
}

// A string field of a message; "" when absent or null. Error when present
// with another type.
absl::StatusOr<std::string> StringField(const ojson& message, const char* key, size_t index,
                                        const std::string& where) {
  const JsonFields fields(where, JsonFields::Shown::kType);
  const std::string field = absl::StrCat("messages[", index, "].", key);
  const ojson* value = JsonFields::Find(message, key);
  if (value == nullptr) return std::string();
  ASSIGN_OR_RETURN(std::string s, fields.String(*value, field));
  if (const size_t bad = ValidUtf8Prefix(s); bad < s.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", field, " is not valid UTF-8 (byte ", bad, ")"));
  }
  return s;
}

absl::Status CheckMessages(const ojson& messages, const std::string& where) {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected a non-empty array of {\"role\", \"content\"} messages"));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ojson& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": messages[", i, "] has no string \"role\""));
    }
    auto c = m.find("content");
    if (c != m.end() && !c->is_null() && !c->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": messages[", i, "].content must be a string, got ", c->type_name()));
    }
  }
  return absl::OkStatus();
}

ojson Slice(const ojson& messages, size_t n) {
  ojson out = ojson::array();
  for (size_t i = 0; i < n; ++i) out.push_back(messages[i]);
  return out;
}

std::string HexId(uint64_t h) { return absl::StrFormat("%016x", h); }

void Append(const std::vector<int32_t>& ids, uint8_t mask, TrainExample* ex) {
  ex->tokens.insert(ex->tokens.end(), ids.begin(), ids.end());
  ex->loss_mask.insert(ex->loss_mask.end(), ids.size(), mask);
}

constexpr const char* kReasoningKeys[] = {"reasoning_content", "reasoning", "thinking"};

}  // namespace

nlohmann::ordered_json WithoutReasoning(const nlohmann::ordered_json& messages) {
  ojson out = messages;
  if (!out.is_array()) return out;
  for (ojson& m : out) {
    if (!m.is_object()) continue;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string() || role->get<std::string>() != "assistant") continue;
    for (const char* key : kReasoningKeys) m.erase(key);
    auto content = m.find("content");
    if (content != m.end() && content->is_string()) {
      *content = RemoveThinkBlocks(content->get<std::string>());
    }
  }
  return out;
}

int64_t TrainExample::num_trained() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m != 0;
  return n;
}

// ---- chat samples -------------------------------------------------------------

absl::StatusOr<ChatExampleBuilder> ChatExampleBuilder::Create(const ChatTemplate* tmpl,
                                                              const Tokenizer* tokenizer,
                                                              ChatExampleOptions options) {
  if (tmpl == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("ChatExampleBuilder needs a chat template and a tokenizer");
  }
  ChatExampleBuilder b;
  b.tmpl_ = tmpl;
  b.tokenizer_ = tokenizer;
  b.options_ = options;
  ojson probe = ojson::array({ojson{{"role", "user"}, {"content", "Hi"}},
                              ojson{{"role", "assistant"}, {"content", kSentinel}}});
  absl::StatusOr<std::string> text = tmpl->Render(probe, /*add_generation_prompt=*/false);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template: rendering a user + assistant turn to find its end-of-turn text failed: ",
        text.status().message()));
  }
  const size_t at = text->rfind(kSentinel);
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "chat template: the assistant's content does not appear in its rendering, so its "
        "end-of-turn text cannot be found");
  }
  b.end_of_turn_ = text->substr(at + sizeof(kSentinel) - 1);
  return b;
}

absl::StatusOr<ChatExampleBuilder::Texts> ChatExampleBuilder::RenderFinalTurn(
    const ojson& original, const std::string& where) const {
  RETURN_IF_ERROR(CheckMessages(original, where));
  const ojson stripped = options_.answers_only ? WithoutReasoning(original) : ojson();
  const ojson& messages = options_.answers_only ? stripped : original;
  const size_t last = messages.size() - 1;
  const ojson& final_turn = messages[last];
  if (final_turn["role"].get<std::string>() != "assistant") {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": last message is not the assistant's (role \"",
                     final_turn["role"].get<std::string>(), "\")"));
  }
  ASSIGN_OR_RETURN(std::string content, StringField(final_turn, "content", last, where));
  std::string reasoning;
  for (const char* key : kReasoningKeys) {
    ASSIGN_OR_RETURN(reasoning, StringField(final_turn, key, last, where));
    if (!reasoning.empty()) break;
  }
  reasoning = StripNewlines(reasoning, true, true);
  if (absl::StripAsciiWhitespace(content).empty() &&
      absl::StripAsciiWhitespace(reasoning).empty()) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": empty completion"));
  }

  Texts t;
  absl::StatusOr<std::string> prompt =
      tmpl_->Render(Slice(messages, last), /*add_generation_prompt=*/true);
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": chat template (prompt): ", prompt.status().message()));
  }
  t.prompt = *std::move(prompt);

  // 1. The template's own rendering of the final turn, when it continues the
  //    generation prompt and keeps the reasoning.
  absl::StatusOr<std::string> full = tmpl_->Render(messages, /*add_generation_prompt=*/false);
  if (full.ok() && full->size() > t.prompt.size() && absl::StartsWith(*full, t.prompt)) {
    std::string rest = full->substr(t.prompt.size());
    const std::string content_core(absl::StripAsciiWhitespace(content));
    if ((reasoning.empty() || absl::StrContains(rest, reasoning)) &&
        absl::StrContains(rest, content_core)) {
      t.completion = std::move(rest);
      t.from_template = true;
    }
  }
  // 2. Constructed.
  if (!t.from_template) {
    if (!reasoning.empty()) {
      t.completion = JoinReasoning(reasoning, StripNewlines(content, true, false)) + end_of_turn_;
    } else {
      t.completion = content + end_of_turn_;
    }
  }
  const std::string think_open(kReasoningPrefix);
  if (absl::EndsWith(t.prompt, think_open) && absl::StartsWith(t.completion, think_open)) {
    t.completion.erase(0, think_open.size());
  }
  return t;
}

absl::Status ChatExampleBuilder::AppendEarlierTurns(const ojson& messages, const std::string& where,
                                                    TrainExample* ex, std::string* rendered) const {
  const size_t last = messages.size() - 1;
  auto render = [&](size_t n, bool gen) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> s = tmpl_->Render(Slice(messages, n), gen);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": chat template: ", s.status().message()));
    }
    return s;
  };
  auto not_prefix = [&](size_t turn) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the chat template renders the conversation up to messages[", turn,
        "] differently from its continuation (it rewrites earlier turns, e.g. drops <think>); "
        "train only the final assistant turn with this template"));
  };
  for (size_t k = 1; k < last; ++k) {
    if (messages[k]["role"].get<std::string>() != "assistant") continue;
    ASSIGN_OR_RETURN(std::string prompt, render(k, true));
    ASSIGN_OR_RETURN(std::string full, render(k + 1, false));
    if (!absl::StartsWith(prompt, *rendered) || !absl::StartsWith(full, prompt))
      return not_prefix(k);
    EncodeOptions first;
    first.avoid_double_bos = true;
    EncodeOptions plain;
    plain.add_special_tokens = false;
    const std::string between = prompt.substr(rendered->size());
    Append(tokenizer_->Encode(between, rendered->empty() ? first : plain), 0, ex);
    Append(tokenizer_->Encode(full.substr(prompt.size()), plain), 1, ex);
    *rendered = std::move(full);
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainExample> ChatExampleBuilder::Build(const ojson& original, const std::string& id,
                                                       const std::string& where) const {
  ASSIGN_OR_RETURN(Texts t, RenderFinalTurn(original, where));
  // (RenderFinalTurn checked the messages.)
  const ojson stripped = options_.answers_only ? WithoutReasoning(original) : ojson();
  const ojson& messages = options_.answers_only ? stripped : original;
  TrainExample ex;
  ex.id = id;
  std::string rendered;
  if (options_.train_all_assistant_turns) {
    RETURN_IF_ERROR(AppendEarlierTurns(messages, where, &ex, &rendered));
    if (!absl::StartsWith(t.prompt, rendered)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where,
                       ": the chat template's generation prompt for the final turn does not extend "
                       "its rendering of the earlier turns; train only the final assistant turn"));
    }
  }
  EncodeOptions prompt_options;
  prompt_options.avoid_double_bos = true;
  EncodeOptions plain;
  plain.add_special_tokens = false;
  Append(tokenizer_->Encode(t.prompt.substr(rendered.size()),
                            rendered.empty() ? prompt_options : plain),
         0, &ex);
  Append(tokenizer_->Encode(t.completion, plain), 1, &ex);
  return ex;
}

// ---- plain text --------------------------------------------------------------

std::vector<std::string> SplitParagraphs(const std::string& text) {
  std::vector<std::string> docs;
  std::string current;
  auto flush = [&] {
    std::string d = StripNewlines(current, true, true);
    if (!absl::StripAsciiWhitespace(d).empty()) docs.push_back(std::move(d));
    current.clear();
  };
  size_t i = 0;
  while (i < text.size()) {
    size_t nl = text.find('\n', i);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    std::string line = text.substr(i, end - i);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) {
      flush();
    } else {
      if (!current.empty()) current += '\n';
      current += line;
    }
    i = nl == std::string::npos ? text.size() : nl + 1;
  }
  flush();
  return docs;
}

absl::StatusOr<std::vector<TrainExample>> TextExamples(const std::string& text,
                                                       const Tokenizer& tokenizer,
                                                       const TextSplitOptions& options,
                                                       const std::string& source) {
  if (const size_t bad = ValidUtf8Prefix(text); bad < text.size()) {
    const int64_t line = std::count(text.begin(), text.begin() + bad, '\n') + 1;
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", line, ": not valid UTF-8 (byte offset ", bad, ")"));
  }
  if (options.chunk_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": chunk size must be >= 0"));
  }
  EncodeOptions plain;
  plain.add_special_tokens = false;
  std::vector<TrainExample> out;
  if (options.chunk_tokens == 0) {
    for (const std::string& doc : SplitParagraphs(text)) {
      TrainExample ex;
      ex.id = HexId(StableHash64(doc));
      ex.tokens = tokenizer.Encode(doc, plain);
      if (options.add_eos && tokenizer.eos_id() >= 0) ex.tokens.push_back(tokenizer.eos_id());
      ex.loss_mask.assign(ex.tokens.size(), 1);
      out.push_back(std::move(ex));
    }
    return out;
  }
  const std::vector<int32_t> ids = tokenizer.Encode(text, plain);
  for (size_t b = 0; b < ids.size(); b += options.chunk_tokens) {
    const size_t e = std::min(ids.size(), b + static_cast<size_t>(options.chunk_tokens));
    TrainExample ex;
    ex.tokens.assign(ids.begin() + b, ids.begin() + e);
    ex.loss_mask.assign(ex.tokens.size(), 1);
    ex.id = HexId(StableHash64(std::string(reinterpret_cast<const char*>(ex.tokens.data()),
                                           ex.tokens.size() * sizeof(int32_t))));
    out.push_back(std::move(ex));
  }
  return out;
}

// ---- datasets ----------------------------------------------------------------

uint64_t StableHash64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool IsHeldOut(const std::string& id, double eval_fraction) {
  if (eval_fraction <= 0) return false;
  // FNV-1a's high bits are poorly mixed for ids that differ in their last
  // characters ("prompt-1", "prompt-2"): finish with splitmix64's mixer, then
  // the top 53 bits -> [0, 1) exactly.
  uint64_t state = StableHash64(id) - 0x9E3779B97F4A7C15ull;  // SplitMix64 adds it back
  const double u = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
  return u < eval_fraction;
}

void DataSummary::Merge(const DataSummary& o) {
  files += o.files;
  examples += o.examples;
  train_examples += o.train_examples;
  eval_examples += o.eval_examples;
  tokens += o.tokens;
  trained_tokens += o.trained_tokens;
  teacher_examples += o.teacher_examples;
  for (const auto& [k, v] : o.skipped) skipped[k] += v;
  truncated_examples += o.truncated_examples;
  truncated_tokens += o.truncated_tokens;
  split_examples += o.split_examples;
  dropped_untrainable += o.dropped_untrainable;
}

std::string DataSummary::ToString() const {
  std::string s = absl::StrFormat(
      "data: %d files, %d examples (%d train, %d held out), %d tokens, %d trained, %d with teacher "
      "top-k\n",
      files, examples, train_examples, eval_examples, tokens, trained_tokens, teacher_examples);
  int64_t total_skipped = 0;
  for (const auto& [k, v] : skipped) total_skipped += v;
  if (total_skipped > 0) {
    absl::StrAppend(&s, "skipped ", total_skipped, " samples:");
    for (const auto& [k, v] : skipped) absl::StrAppend(&s, " ", k, " (", v, ")");
    s += "\n";
  }
  if (truncated_examples > 0) {
    absl::StrAppend(&s, "truncated ", truncated_examples, " examples longer than seq_len (",
                    truncated_tokens, " tokens cut)\n");
  }
  if (split_examples > 0) {
    absl::StrAppend(&s, "split ", split_examples, " examples longer than seq_len into pieces\n");
  }
  if (dropped_untrainable > 0) {
    absl::StrAppend(&s, "dropped ", dropped_untrainable,
                    " documents with no trained token within seq_len (prompt too long)\n");
  }
  return s;
}

void Dataset::Add(TrainExample example, double eval_fraction) {
  ++summary_.examples;
  summary_.tokens += static_cast<int64_t>(example.tokens.size());
  summary_.trained_tokens += example.num_trained();
  summary_.teacher_examples += example.has_teacher();
  if (IsHeldOut(example.id, eval_fraction)) {
    ++summary_.eval_examples;
    eval_.push_back(std::move(example));
  } else {
    ++summary_.train_examples;
    train_.push_back(std::move(example));
  }
}

namespace {

// A parsed sample's messages as the chat template sees them.
ojson TraceMessagesJson(const TraceSample& sample) {
  ojson messages = ojson::array();
  for (const TraceMessage& m : sample.messages) {
    ojson j = ojson::object();
    j["role"] = m.role;
    j["content"] = m.content;
    if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
    for (auto it = m.extra.begin(); it != m.extra.end(); ++it) {
      if (!j.contains(it.key())) j[it.key()] = it.value();
    }
    messages.push_back(std::move(j));
  }
  return messages;
}

}  // namespace

absl::StatusOr<std::vector<TrainExample>> ChatJsonlExamples(const std::string& path,
                                                            const ChatExampleBuilder& builder,
                                                            const DatasetOptions& options,
                                                            DataSummary* summary) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  // Parse every line first (cheap, in order), then render and tokenize the
  // samples on the thread pool (the costly part); results are taken in file
  // order, so skips and the first error do not depend on the thread count.
  struct Job {
    ojson messages;
    std::string id, where;
  };
  std::vector<Job> jobs;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(path, ":", line_no);
    ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ParseTraceLineSamples(line, line_no, path));
    for (const TraceSample& sample : samples) {
      if (sample.correct.has_value() && !*sample.correct && !options.keep_incorrect) {
        summary->skipped["marked incorrect by the verifier"] += 1;
        continue;
      }
      if (sample.finish_reason == "length" && !options.keep_unfinished) {
        summary->skipped["generation cut by the length limit"] += 1;
        continue;
      }
      Job job{TraceMessagesJson(sample), sample.id, where};
      if (job.id == absl::StrCat(line_no)) {
        // The reader numbers id-less lines by position; the split must not
        // depend on order, so such samples are identified by their content.
        ojson j = ojson::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!j.is_object() || (!j.contains("id") && !j.contains("uuid"))) {
          job.id = HexId(StableHash64(job.messages.dump()));
        }
      }
      jobs.push_back(std::move(job));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error after line ", line_no));

  std::vector<absl::StatusOr<TrainExample>> built(jobs.size(), absl::UnknownError("not built"));
  const int64_t chunk = options.progress_every > 0 ? options.progress_every : 1024;
  for (int64_t b = 0; b < static_cast<int64_t>(jobs.size()); b += chunk) {
    const int64_t e = std::min<int64_t>(jobs.size(), b + chunk);
    ParallelFor(e - b, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = b + lo; i < b + hi; ++i) {
        built[i] = builder.Build(jobs[i].messages, jobs[i].id, jobs[i].where);
      }
    });
    if (options.progress_every > 0) {
      (options.sink ? *options.sink : StderrProgress())
          .Line(absl::StrFormat("%s: %d of %d samples tokenized", path, e, jobs.size()));
    }
  }
  std::vector<TrainExample> out;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!built[i].ok()) {
      if (absl::IsFailedPrecondition(built[i].status())) {
        // Counted, not fatal: the reason is the text after "file:line: ".
        std::string reason(built[i].status().message());
        reason = reason.substr(std::min(reason.size(), jobs[i].where.size() + 2));
        if (reason.rfind("last message is not", 0) == 0)
          reason = "last message is not the assistant's";
        summary->skipped[reason] += 1;
        continue;
      }
      return built[i].status();
    }
    out.push_back(*std::move(built[i]));
  }
  return out;
}

absl::StatusOr<TrainExample> TraceTokensExample(const TraceTokens& record, int32_t student_vocab,
                                                const std::string& path) {
  auto check = [&](int32_t id) -> absl::Status {
    if (id < 0 || id >= student_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("student vocabulary (", student_vocab,
                                                     ") does not cover token id ", id, " in ", path,
                                                     " record ", record.id));
    }
    return absl::OkStatus();
  };
  for (int32_t id : record.prompt_ids) RETURN_IF_ERROR(check(id));
  for (int32_t id : record.completion_ids) RETURN_IF_ERROR(check(id));
  const size_t P = record.prompt_ids.size(), C = record.completion_ids.size();
  const int32_t K = record.top_k;
  if (K < 0 || record.topk_ids.size() != C * static_cast<size_t>(K) ||
      record.topk_logprobs.size() != record.topk_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " record ", record.id, ": top-k arrays have ", record.topk_ids.size(), "/",
        record.topk_logprobs.size(), " entries, expected completion (", C, ") * top_k (", K, ")"));
  }
  for (int32_t id : record.topk_ids) RETURN_IF_ERROR(check(id));
  TrainExample ex;
  ex.id = record.id;
  Append(record.prompt_ids, 0, &ex);
  Append(record.completion_ids, 1, &ex);
  if (K > 0) {
    ex.top_k = K;
    ex.topk_ids.assign(P * K, -1);
    ex.topk_logprobs.assign(P * K, 0.0f);
    ex.topk_ids.insert(ex.topk_ids.end(), record.topk_ids.begin(), record.topk_ids.end());
    ex.topk_logprobs.insert(ex.topk_logprobs.end(), record.topk_logprobs.begin(),
                            record.topk_logprobs.end());
  }
  return ex;
}

absl::StatusOr<std::vector<TrainExample>> TraceShardExamples(const std::string& path,
                                                             int32_t student_vocab,
                                                             const DatasetOptions& options,
                                                             DataSummary* summary) {
  ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(path));
  std::vector<TrainExample> out;
  TraceTokens record;
  int64_t n = 0;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&record));
    if (!more) break;
    ++n;
    if (options.progress_every > 0 && n % options.progress_every == 0) {
      (options.sink ? *options.sink : StderrProgress())
          .Line(absl::StrFormat("%s: %d records", path, n));
    }
    if (record.completion_ids.empty()) {
      summary->skipped["empty completion"] += 1;
      continue;
    }
    ASSIGN_OR_RETURN(TrainExample ex, TraceTokensExample(record, student_vocab, path));
    out.push_back(std::move(ex));
  }
  return out;
}

namespace {
// Trace shards are sequences of zstd frames (formats/traces.md).
bool StartsWithZstdMagic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  unsigned char magic[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(magic), 4);
  return f.gcount() == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F &&
         magic[3] == 0xFD;
}
}  // namespace

absl::StatusOr<Dataset> Dataset::Load(const std::vector<std::string>& paths,
                                      const Tokenizer& tokenizer, const ChatTemplate* tmpl,
                                      const DatasetOptions& options) {
  if (!(options.eval_fraction >= 0 && options.eval_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval fraction must be in [0, 1), got ", options.eval_fraction));
  }
  Dataset ds;
  std::unique_ptr<ChatExampleBuilder> builder;
  for (const std::string& path : paths) {
    const std::string ext = absl::AsciiStrToLower(std::filesystem::path(path).extension().string());
    std::vector<TrainExample> examples;
    if (ext == ".jsonl" || ext == ".json") {
      if (builder == nullptr) {
        if (tmpl == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": chat samples need the student's chat template, and none was given"));
        }
        ASSIGN_OR_RETURN(ChatExampleBuilder b,
                         ChatExampleBuilder::Create(tmpl, &tokenizer, options.chat));
        builder = std::make_unique<ChatExampleBuilder>(std::move(b));
      }
      ASSIGN_OR_RETURN(examples, ChatJsonlExamples(path, *builder, options, &ds.summary_));
    } else if (!StartsWithZstdMagic(path)) {
      // Anything that is not JSONL and not a (zstd-framed) trace shard is
      // plain text: .txt, .md, or extension-less files such as
      // /usr/share/common-licenses/GPL-3.
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
      ASSIGN_OR_RETURN(examples, TextExamples(text, tokenizer, options.text, path));
    } else {
      if (options.chat.answers_only) {
        return absl::InvalidArgumentError(
            absl::StrCat(path,
                         ": answers-only training needs chat/trace JSONL (a token shard keeps the "
                         "teacher's reasoning tokens as written); pass the traces.jsonl instead"));
      }
      absl::StatusOr<std::vector<TrainExample>> shard = TraceShardExamples(
          path, options.student_vocab > 0 ? options.student_vocab : tokenizer.vocab_size(), options,
          &ds.summary_);
      if (!shard.ok()) {
        if (absl::IsInvalidArgument(shard.status()) &&
            absl::StrContains(shard.status().message(), "student vocabulary")) {
          return shard.status();
        }
        return absl::Status(shard.status().code(),
                            absl::StrCat(shard.status().message(),
                                         " (data files are .jsonl/.json chat samples, .txt/.md "
                                         "text, or trace token shards)"));
      }
      examples = *std::move(shard);
    }
    // Chat and text examples come from the tokenizer, whose vocabulary may be
    // larger than the student's embedding table; shards were checked above.
    if (options.student_vocab > 0) {
      for (const TrainExample& ex : examples) {
        for (int32_t id : ex.tokens) {
          if (id < 0 || id >= options.student_vocab) {
            return absl::InvalidArgumentError(
                absl::StrCat("student vocabulary (", options.student_vocab,
                             ") does not cover token id ", id, " in ", path, " example ", ex.id));
          }
        }
      }
    }
    ++ds.summary_.files;
    for (TrainExample& ex : examples) ds.Add(std::move(ex), options.eval_fraction);
  }
  if (ds.summary_.examples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no training examples in the data files\n", ds.summary_.ToString()));
  }
  return ds;
}

// ---- shuffling ---------------------------------------------------------------

std::vector<uint32_t> EpochPermutation(uint64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<uint32_t> p(n);
  for (uint64_t i = 0; i < n; ++i) p[i] = static_cast<uint32_t>(i);
  uint64_t a = seed, b = epoch ^ 0xD1B54A32D192ED03ull;
  Xoshiro256 rng(SplitMix64(a) ^ SplitMix64(b));
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = rng.Below(i);
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

// ---- packing -----------------------------------------------------------------

nlohmann::json DataPosition::ToJson() const { return {{"epoch", epoch}, {"cursor", cursor}}; }

absl::StatusOr<DataPosition> DataPosition::FromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("epoch") || !j.contains("cursor") ||
      !j["epoch"].is_number_unsigned() || !j["cursor"].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        "data position: expected {\"epoch\": unsigned integer, \"cursor\": unsigned integer}");
  }
  DataPosition p;
  p.epoch = j["epoch"].get<uint64_t>();
  p.cursor = j["cursor"].get<uint64_t>();
  return p;
}

DataLoader::DataLoader(const std::vector<TrainExample>* examples, const PackingOptions& options)
    : examples_(examples), options_(options) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(
    const std::vector<TrainExample>* examples, const PackingOptions& options) {
  if (examples == nullptr) return absl::InvalidArgumentError("DataLoader: no examples");
  if (options.seq_len < 2 || options.seq_len > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_len must be in [2, 2^31), got ", options.seq_len));
  }
  if (options.rows_per_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows_per_batch must be >= 1, got ", options.rows_per_batch));
  }
  if (options.seq_len * options.rows_per_batch > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        "seq_len * rows_per_batch must fit in int32 (doc_start indices)");
  }
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " outside world of size ", options.world_size));
  }
  if (examples->size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("DataLoader: more than 2^32 - 1 examples");
  }
  std::unique_ptr<DataLoader> dl(new DataLoader(examples, options));
  const int64_t L = options.seq_len;
  dl->example_pieces_.resize(examples->size());
  for (size_t e = 0; e < examples->size(); ++e) {
    const TrainExample& ex = (*examples)[e];
    if (ex.loss_mask.size() != ex.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat("example ", ex.id, ": loss_mask has ",
                                                     ex.loss_mask.size(), " entries for ",
                                                     ex.tokens.size(), " tokens"));
    }
    if (ex.has_teacher()) {
      if (dl->top_k_ != 0 && dl->top_k_ != ex.top_k) {
        return absl::InvalidArgumentError(absl::StrCat("example ", ex.id, ": teacher top_k ",
                                                       ex.top_k, " differs from other examples' ",
                                                       dl->top_k_));
      }
      dl->top_k_ = ex.top_k;
      const size_t want = ex.tokens.size() * static_cast<size_t>(ex.top_k);
      if (ex.topk_ids.size() != want || ex.topk_logprobs.size() != want) {
        return absl::InvalidArgumentError(
            absl::StrCat("example ", ex.id, ": teacher top-k arrays have ", ex.topk_ids.size(), "/",
                         ex.topk_logprobs.size(), " entries, expected tokens * top_k = ", want));
      }
    }
    // A piece trains something when some token after its first is masked 1
    // (position i predicts token i + 1 of the same piece).
    auto trainable = [&](int64_t b, int64_t end) {
      for (int64_t i = b + 1; i < end; ++i) {
        if (ex.loss_mask[i]) return true;
      }
      return false;
    };
    const int64_t n = static_cast<int64_t>(ex.tokens.size());
    std::vector<Piece>& pieces = dl->example_pieces_[e];
    if (n <= L) {
      pieces.push_back({static_cast<uint32_t>(e), 0, static_cast<uint32_t>(n)});
    } else if (options.overlong == OverlongPolicy::kTruncate) {
      ++dl->packing_summary_.truncated_examples;
      dl->packing_summary_.truncated_tokens += n - L;
      pieces.push_back({static_cast<uint32_t>(e), 0, static_cast<uint32_t>(L)});
    } else {
      ++dl->packing_summary_.split_examples;
      for (int64_t b = 0; b < n; b += L) {
        pieces.push_back({static_cast<uint32_t>(e), static_cast<uint32_t>(b),
                          static_cast<uint32_t>(std::min(n, b + L))});
      }
    }
    std::vector<Piece> kept;
    for (const Piece& p : pieces) {
      if (trainable(p.begin, p.end)) {
        kept.push_back(p);
      } else {
        ++dl->packing_summary_.dropped_untrainable;
      }
    }
    pieces = std::move(kept);
  }
  bool any = false;
  for (const auto& p : dl->example_pieces_) any |= !p.empty();
  if (!any) {
    return absl::InvalidArgumentError(absl::StrCat("DataLoader: none of the ", examples->size(),
                                                   " examples has a trained token within seq_len ",
                                                   L));
  }
  return dl;
}

const DataLoader::EpochLayout& DataLoader::Layout(uint64_t epoch) {
  const uint64_t key = options_.shuffle ? epoch : 0;
  for (EpochLayout& l : layouts_) {
    if (l.epoch == key) return l;
  }
  // Replace the entry that is not the current position's epoch.
  EpochLayout& l =
      layouts_[0].epoch == (options_.shuffle ? position_.epoch : 0) ? layouts_[1] : layouts_[0];
  l = EpochLayout();
  l.epoch = key;
  std::vector<uint32_t> order;
  if (options_.shuffle) {
    order = EpochPermutation(examples_->size(), options_.seed, epoch);
  } else {
    order.resize(examples_->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  }
  const int64_t L = options_.seq_len;
  int64_t used = 0;  // tokens in the current (last) row
  for (uint32_t e : order) {
    for (const Piece& p : example_pieces_[e]) {
      const int64_t len = p.end - p.begin;
      if (l.rows.empty() || used + len > L) {
        used = 0;
        l.rows.push_back({static_cast<uint32_t>(l.pieces.size()), 0});
      }
      l.pieces.push_back(p);
      ++l.rows.back().num_pieces;
      used += len;
    }
  }
  const uint64_t R = options_.rows_per_batch;
  l.batches = (l.rows.size() + R - 1) / R;
  return l;
}

uint64_t DataLoader::BatchesInEpoch(uint64_t epoch) { return Layout(epoch).batches; }

bool DataLoader::Advance(DataPosition* pos, uint64_t n) {
  while (true) {
    const uint64_t batches = Layout(pos->epoch).batches;
    if (pos->cursor + n < batches) {
      pos->cursor += n;
      return true;
    }
    if (!options_.repeat) {
      pos->cursor = batches;
      return false;
    }
    n -= batches - pos->cursor;
    ++pos->epoch;
    pos->cursor = 0;
  }
}

absl::Status DataLoader::Seek(const DataPosition& position) {
  if (!options_.repeat && position.epoch > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position epoch ", position.epoch, " of a single-pass loader"));
  }
  const uint64_t batches = Layout(position.epoch).batches;
  if (position.cursor > batches || (options_.repeat && position.cursor == batches)) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position cursor ", position.cursor, " past the ", batches,
                     " batches of epoch ", position.epoch, " (different data or options?)"));
  }
  position_ = position;
  return absl::OkStatus();
}

bool DataLoader::Next(PackedBatch* batch) {
  DataPosition mine = position_;
  const uint64_t batches = Layout(mine.epoch).batches;
  if (!options_.repeat && mine.cursor >= batches) return false;
  if (options_.rank > 0 && !Advance(&mine, options_.rank)) {
    // This rank has no batch left in the stream; the round is done.
    position_ = mine;
    return false;
  }
  Fill(Layout(mine.epoch), mine.cursor, batch);
  batch->epoch = mine.epoch;
  batch->index_in_epoch = mine.cursor;
  DataPosition next = position_;
  Advance(&next, options_.world_size);
  position_ = next;
  return true;
}

void DataLoader::Fill(const EpochLayout& layout, uint64_t batch_index, PackedBatch* b) const {
  const int64_t L = options_.seq_len;
  const int64_t R = options_.rows_per_batch;
  const int64_t n = L * R;
  const int32_t K = top_k_;
  b->seq_len = L;
  b->rows = R;
  b->tokens.assign(n, options_.pad_id);
  b->positions.assign(n, 0);
  b->doc_start.assign(n, 0);
  b->targets.assign(n, -1);
  b->num_targets = 0;
  b->top_k = K;
  b->topk_ids.assign(K > 0 ? n * K : 0, -1);
  b->topk_logprobs.assign(K > 0 ? n * K : 0, 0.0f);
  b->has_teacher.assign(K > 0 ? n : 0, 0);
  b->num_teacher_targets = 0;
  for (int64_t r = 0; r < R; ++r) {
    const uint64_t row_index = batch_index * R + r;
    int64_t at = r * L;  // next free slot
    const int64_t row_end = (r + 1) * L;
    if (row_index < layout.rows.size()) {
      const Row& row = layout.rows[row_index];
      for (uint32_t pi = row.first_piece; pi < row.first_piece + row.num_pieces; ++pi) {
        const Piece& p = layout.pieces[pi];
        const TrainExample& ex = (*examples_)[p.example];
        const int64_t start = at;
        for (uint32_t t = p.begin; t < p.end; ++t, ++at) {
          b->tokens[at] = ex.tokens[t];
          b->positions[at] = static_cast<int32_t>(t - p.begin);
          b->doc_start[at] = static_cast<int32_t>(start);
          if (t + 1 < p.end && ex.loss_mask[t + 1]) {
            b->targets[at] = ex.tokens[t + 1];
            ++b->num_targets;
            if (ex.has_teacher()) {
              b->has_teacher[at] = 1;
              ++b->num_teacher_targets;
              std::copy_n(ex.topk_ids.begin() + (t + 1) * K, K, b->topk_ids.begin() + at * K);
              std::copy_n(ex.topk_logprobs.begin() + (t + 1) * K, K,
                          b->topk_logprobs.begin() + at * K);
            }
          }
        }
      }
    }
    // Padding: one document of its own up to the row end.
    const int64_t pad_start = at;
    for (; at < row_end; ++at) {
      b->positions[at] = static_cast<int32_t>(at - pad_start);
      b->doc_start[at] = static_cast<int32_t>(pad_start);
    }
  }
}

}  // namespace retort
