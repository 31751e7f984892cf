#include "distill/data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "core/utf8.h"
#include "formats/reasoning.h"
#include "formats/traces.h"

namespace retort {
namespace {

using ojson = nlohmann::ordered_json;

std::string HexId(uint64_t h) { return absl::StrFormat("%016x", h); }

}  // namespace

// ---- plain text --------------------------------------------------------------

std::vector<std::string> SplitParagraphs(const std::string& text) {
  std::vector<std::string> docs;
  std::string current;
  // Only non-blank lines are joined, so a document is never blank and
  // neither starts nor ends with a newline.
  auto flush = [&] {
    if (!current.empty()) docs.push_back(std::move(current));
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
        ojson j = ParseOrderedJson(line, where).value_or(ojson());
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
  ex.Append(record.prompt_ids, 0);
  ex.Append(record.completion_ids, 1);
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

namespace {

// Whether the prompt part of `ex` (the tokens before the first trained one)
// ends inside an opened <think>; decodes its last few tokens only.
bool PromptOpensReasoning(const TrainExample& ex, const Tokenizer& tokenizer) {
  size_t end = 0;
  while (end < ex.loss_mask.size() && ex.loss_mask[end] == 0) ++end;
  const size_t begin = end > 16 ? end - 16 : 0;
  const std::vector<int32_t> tail(ex.tokens.begin() + static_cast<std::ptrdiff_t>(begin),
                                  ex.tokens.begin() + static_cast<std::ptrdiff_t>(end));
  return EndsInsideReasoning(tokenizer.Decode(tail, /*skip_special_tokens=*/false));
}

}  // namespace

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
    } else if (!StartsLikeTraceShard(path)) {
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
      for (const TrainExample& ex : examples) {
        ++ds.summary_.shard_examples;
        if (PromptOpensReasoning(ex, tokenizer)) ++ds.summary_.prompts_open_reasoning;
      }
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

}  // namespace retort
