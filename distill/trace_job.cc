#include "distill/trace_job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <future>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file.h"
#include "core/process.h"
#include "core/status.h"
#include "distill/data.h"
#include "distill/generation.h"
#include "model/sampler.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// splitmix64's output for state x (model/sampler.h advances a state in place).
uint64_t Mix64(uint64_t x) { return SplitMix64(x); }

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::Status FsyncFile(std::FILE* f, const std::string& path) {
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) {
    return absl::InternalError(absl::StrCat(path, ": write/fsync failed"));
  }
  return absl::OkStatus();
}

absl::Status WriteAll(std::FILE* f, const std::string& data, const std::string& path) {
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) {
    return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

// Splits `text` into complete lines ('\n'-terminated): (offset, line) pairs;
// *tail_start is where the unterminated rest begins.
std::vector<std::pair<size_t, std::string>> CompleteLines(const std::string& text,
                                                          size_t* tail_start) {
  std::vector<std::pair<size_t, std::string>> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;
    lines.emplace_back(pos, text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  *tail_start = pos;
  return lines;
}

absl::StatusOr<TraceDoneEntry> ParseDoneLine(const std::string& line) {
  Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string() ||
      !j.contains("sample") || !j["sample"].is_number_integer() || !j.contains("kept") ||
      !j["kept"].is_boolean()) {
    return absl::DataLossError("not a done record");
  }
  TraceDoneEntry e;
  e.id = j["id"].get<std::string>();
  e.sample = j["sample"].get<int64_t>();
  e.kept = j["kept"].get<bool>();
  if (j.contains("correct") && j["correct"].is_boolean()) e.correct = j["correct"].get<bool>();
  if (j.contains("finish_reason") && j["finish_reason"].is_string())
    e.finish_reason = j["finish_reason"].get<std::string>();
  if (j.contains("prompt_tokens") && j["prompt_tokens"].is_number_integer())
    e.prompt_tokens = j["prompt_tokens"].get<int64_t>();
  if (j.contains("completion_tokens") && j["completion_tokens"].is_number_integer())
    e.completion_tokens = j["completion_tokens"].get<int64_t>();
  if (j.contains("time_s") && j["time_s"].is_number()) e.time_s = j["time_s"].get<double>();
  return e;
}

std::string DoneLine(const TraceDoneEntry& e) {
  Json j = {{"id", e.id}, {"sample", e.sample}, {"kept", e.kept}};
  j["correct"] = e.correct ? Json(*e.correct) : Json(nullptr);
  j["finish_reason"] = e.finish_reason;
  j["prompt_tokens"] = e.prompt_tokens;
  j["completion_tokens"] = e.completion_tokens;
  j["time_s"] = e.time_s;
  return Dump(j);
}

}  // namespace

// ------------------------------------------------------------------ prompts

absl::StatusOr<std::vector<TracePrompt>> ReadTracePrompts(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<TracePrompt> prompts;
  std::map<std::string, int64_t> seen;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (Trim(line).empty()) {
      if (nl >= text.size()) break;
      continue;
    }
    auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", what));
    };
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return error("bad JSON (expected one object per line)");
    if (!j.is_object()) return error("expected a JSON object");
    TracePrompt p;
    p.line = line_no;
    auto id = j.find("id");
    if (id == j.end()) return error("id: missing");
    if (id->is_string()) {
      p.id = id->get<std::string>();
    } else if (id->is_number_integer()) {
      p.id = std::to_string(id->get<int64_t>());
    } else {
      return error("id: expected a string or an integer");
    }
    if (p.id.empty()) return error("id: empty");
    auto prompt = j.find("prompt");
    auto messages = j.find("messages");
    if ((prompt == j.end()) == (messages == j.end())) {
      return error("expected exactly one of \"prompt\" (a string) or \"messages\" (a chat list)");
    }
    if (prompt != j.end()) {
      if (!prompt->is_string()) return error("prompt: expected a string");
      p.messages = Json::array({Json{{"role", "user"}, {"content", prompt->get<std::string>()}}});
    } else {
      if (!messages->is_array() || messages->empty()) {
        return error("messages: expected a non-empty list of {\"role\", \"content\"} objects");
      }
      for (size_t i = 0; i < messages->size(); ++i) {
        const Json& m = (*messages)[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
            !m.contains("content") || !m["content"].is_string()) {
          return error(
              absl::StrCat("messages[", i, "]: expected {\"role\": string, \"content\": string}"));
        }
      }
      p.messages = *messages;
    }
    if (auto a = j.find("answer"); a != j.end() && !a->is_null()) {
      if (a->is_string()) {
        p.answer = a->get<std::string>();
      } else if (a->is_number()) {
        p.answer = a->dump();
      } else {
        return error("answer: expected a string or a number");
      }
    }
    if (auto [it, fresh] = seen.emplace(p.id, line_no); !fresh) {
      return error(absl::StrCat("duplicate id \"", p.id, "\" (first on line ", it->second, ")"));
    }
    prompts.push_back(std::move(p));
    if (nl >= text.size()) break;
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no prompts"));
  return prompts;
}

uint64_t TraceSampleSeed(uint64_t seed, const std::string& id, int64_t sample) {
  // 63 bits: a non-negative JSON integer that any OpenAI-compatible server
  // takes as "seed".
  return Mix64(seed ^ Mix64(StableHash64(id) + static_cast<uint64_t>(sample))) >> 1;
}

absl::StatusOr<ThinkPrefix> ParseThinkPrefix(const std::string& name) {
  if (name == "auto") return ThinkPrefix::kAuto;
  if (name == "on") return ThinkPrefix::kOn;
  if (name == "off") return ThinkPrefix::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("think prefix \"", name, "\": expected auto, on or off"));
}

absl::StatusOr<RenderedPrompt> RenderTracePrompt(const ChatTemplate& chat_template,
                                                 const Tokenizer& tokenizer,
                                                 const nlohmann::ordered_json& messages,
                                                 ThinkPrefix think) {
  RenderedPrompt out;
  ASSIGN_OR_RETURN(out.text,
                   chat_template.Render(messages, /*add_generation_prompt=*/true, Json::object()));
  if (EndsInsideReasoning(out.text)) {
    out.starts_in_reasoning = true;
  } else if (think == ThinkPrefix::kOn ||
             (think == ThinkPrefix::kAuto &&
              chat_template.source().find(kReasoningOpenTag) != std::string::npos)) {
    out.text += kReasoningPrefix;
    out.starts_in_reasoning = true;
  }
  EncodeOptions enc;
  enc.add_special_tokens = true;
  enc.avoid_double_bos = true;
  out.ids = tokenizer.Encode(out.text, enc);
  return out;
}

// ------------------------------------------------------------------ local teacher

LocalTraceTeacher::LocalTraceTeacher(const Transformer& model, const Tokenizer& tokenizer,
                                     const ChatTemplate& chat_template,
                                     const TraceSamplingOptions& sampling,
                                     LocalTeacherOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      chat_template_(chat_template),
      sampling_(sampling),
      options_(options) {}

absl::Status LocalTraceTeacher::Run(const std::vector<TraceWorkItem>& items,
                                    const TraceDoneFn& on_done) {
  std::vector<GenerationResult> finished;
  GeneratorOptions go;
  go.max_batch = std::max<int64_t>(1, options_.max_batch);
  go.on_finished = [&](GenerationResult&& r) { finished.push_back(std::move(r)); };
  BatchGenerator gen(model_, go);
  const ModelConfig& config = model_.config();
  const int64_t max_context = config.max_position_embeddings;
  std::vector<int32_t> stop_ids;
  for (int64_t e : config.eos_token_ids) stop_ids.push_back(static_cast<int32_t>(e));
  if (tokenizer_.eos_id() >= 0) stop_ids.push_back(tokenizer_.eos_id());

  std::map<const TracePrompt*, RenderedPrompt> rendered;
  std::vector<std::pair<const TraceWorkItem*, const RenderedPrompt*>> by_index;
  std::vector<TraceCompletion> group;
  for (const TraceWorkItem& item : items) {
    auto it = rendered.find(item.prompt);
    if (it == rendered.end()) {
      absl::StatusOr<RenderedPrompt> r =
          RenderTracePrompt(chat_template_, tokenizer_, item.prompt->messages, options_.think);
      if (!r.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prompt \"", item.prompt->id, "\": the chat template failed: ", r.status().message()));
      }
      it = rendered.emplace(item.prompt, *std::move(r)).first;
    }
    const RenderedPrompt& rp = it->second;
    if (static_cast<int64_t>(rp.ids.size()) + 1 > max_context) {
      TraceCompletion c;
      c.item = &item;
      c.prompt_tokens = static_cast<int64_t>(rp.ids.size());
      c.status = absl::FailedPreconditionError(
          absl::StrFormat("prompt \"%s\" has %d tokens; the model's context is %d", item.prompt->id,
                          rp.ids.size(), max_context));
      group.push_back(std::move(c));
      continue;
    }
    GenerationRequest req;
    req.id = item.prompt->id;
    req.prompt = rp.ids;
    req.sampling.temperature = sampling_.temperature;
    req.sampling.top_p = sampling_.top_p;
    req.sampling.seed = item.seed;
    req.max_new_tokens = sampling_.max_tokens;
    req.stop_token_ids = stop_ids;
    req.include_stop_token = true;
    req.top_logprobs = sampling_.top_logprobs;
    int64_t index = gen.Submit(std::move(req));
    if (index != static_cast<int64_t>(by_index.size())) {
      return absl::InternalError("BatchGenerator indices out of order");
    }
    by_index.emplace_back(&item, &rp);
  }
  if (!group.empty()) RETURN_IF_ERROR(on_done(std::move(group)));

  std::set<int32_t> stop_set(stop_ids.begin(), stop_ids.end());
  while (gen.Pending() > 0) {
    RETURN_IF_ERROR(gen.Step());
    std::vector<TraceCompletion> done;
    for (GenerationResult& r : finished) {
      const auto& [item, rp] = by_index.at(r.index);
      TraceCompletion c;
      c.item = item;
      c.status = r.status;
      c.prompt_tokens = r.prompt_tokens;
      c.completion_tokens = r.completion_tokens;
      c.time_s = r.queue_seconds >= 0 ? r.total_seconds : 0;
      c.finish_reason = r.finish_reason;
      if (r.status.ok()) {
        // The text: without a kept stop token (R1's end-of-sentence is not
        // flagged special, so skip_special_tokens would not drop it).
        std::vector<int32_t> text_ids = r.tokens;
        if (r.finish_reason == "stop" && r.stop_string.empty() && !text_ids.empty() &&
            stop_set.count(text_ids.back())) {
          text_ids.pop_back();
        }
        std::string text = tokenizer_.Decode(text_ids, /*skip_special_tokens=*/true);
        ThinkSplit split =
            SplitThink(rp->starts_in_reasoning ? std::string(kReasoningPrefix) + text : text);
        c.reasoning = split.reasoning;
        c.content = split.found ? split.answer : Trim(text);
        c.has_tokens = true;
        c.prompt_ids = rp->ids;
        c.completion_ids = std::move(r.tokens);
        c.sampled_logprobs = std::move(r.logprobs);
        c.top_k = r.top_k;
        c.topk_ids = std::move(r.topk_ids);
        c.topk_logprobs = std::move(r.topk_logprobs);
        generated_ += static_cast<int64_t>(c.completion_ids.size());
      }
      done.push_back(std::move(c));
    }
    finished.clear();
    RETURN_IF_ERROR(on_done(std::move(done)));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ endpoint teacher

EndpointTraceTeacher::EndpointTraceTeacher(EndpointClient& client,
                                           const TraceSamplingOptions& sampling,
                                           EndpointTeacherOptions options)
    : client_(client), sampling_(sampling), options_(options) {}

std::string EndpointTraceTeacher::Describe() const {
  return absl::StrCat("endpoint ", client_.options().base_url);
}

absl::Status EndpointTraceTeacher::FillFromChoice(const ChatChoice& choice, bool want_tokens,
                                                  TraceCompletion* out) {
  if (!choice.reasoning_content.empty()) {
    out->reasoning = Trim(choice.reasoning_content);
    out->content = Trim(choice.content);
  } else {
    ThinkSplit split = SplitThink(choice.content);
    out->reasoning = split.reasoning;
    out->content = split.found ? split.answer : Trim(choice.content);
  }
  out->finish_reason = choice.finish_reason;
  if (!choice.has_logprobs) {
    if (want_tokens) {
      return absl::FailedPreconditionError(
          "the endpoint returned no logprobs, so no token ids for tokens.shard (use --no-shard)");
    }
    return absl::OkStatus();
  }
  std::vector<int32_t> ids;
  std::vector<float> lps;
  int32_t top_k = -1;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_lps;
  bool ids_known = true;
  for (size_t pos = 0; pos < choice.logprobs.size(); ++pos) {
    const GeneratedTokenLogprobs& g = choice.logprobs[pos];
    if (g.chosen.token_id < 0) ids_known = false;
    ids.push_back(g.chosen.token_id);
    lps.push_back(static_cast<float>(g.chosen.logprob));
    std::vector<TokenLogprob> top = g.top;
    std::stable_sort(top.begin(), top.end(), [](const TokenLogprob& a, const TokenLogprob& b) {
      if (a.logprob != b.logprob) return a.logprob > b.logprob;
      return a.token_id < b.token_id;
    });
    if (top_k < 0) top_k = static_cast<int32_t>(top.size());
    if (static_cast<int32_t>(top.size()) != top_k) {
      return absl::InvalidArgumentError(
          absl::StrFormat("the endpoint returned %d top log-probs at position %d, %d before",
                          top.size(), pos, top_k));
    }
    for (const TokenLogprob& t : top) {
      if (t.token_id < 0) ids_known = false;
      topk_ids.push_back(t.token_id);
      topk_lps.push_back(static_cast<float>(t.logprob));
    }
  }
  if (!ids_known) {
    if (want_tokens) {
      return absl::FailedPreconditionError(
          "the endpoint's logprobs carry token strings but no token ids (retort serve writes "
          "\"token_id\", vLLM does with --return-tokens-as-token-ids); use --no-shard");
    }
    return absl::OkStatus();
  }
  out->has_tokens = true;
  out->completion_ids = std::move(ids);
  out->sampled_logprobs = std::move(lps);
  out->top_k = std::max(top_k, 0);
  out->topk_ids = std::move(topk_ids);
  out->topk_logprobs = std::move(topk_lps);
  return absl::OkStatus();
}

absl::Status EndpointTraceTeacher::Run(const std::vector<TraceWorkItem>& items,
                                       const TraceDoneFn& on_done) {
  if (sampling_.top_logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--top-logprobs ", sampling_.top_logprobs,
        " with an endpoint: the OpenAI API returns at most 20 alternatives per token"));
  }
  struct InFlight {
    const TraceWorkItem* item;
    std::future<absl::StatusOr<ChatResponse>> answer;
    Clock::time_point start;
  };
  std::map<const TracePrompt*, std::vector<int32_t>> prompt_ids;
  auto ids_for = [&](const TracePrompt* p) -> absl::StatusOr<std::vector<int32_t>> {
    if (!options_.tokenizer || !options_.chat_template) return std::vector<int32_t>{};
    auto it = prompt_ids.find(p);
    if (it != prompt_ids.end()) return it->second;
    ASSIGN_OR_RETURN(RenderedPrompt r,
                     RenderTracePrompt(*options_.chat_template, *options_.tokenizer, p->messages,
                                       ThinkPrefix::kOff));
    return prompt_ids.emplace(p, std::move(r.ids)).first->second;
  };
  const size_t window = static_cast<size_t>(std::max(1, client_.options().max_in_flight)) * 2;
  std::deque<InFlight> inflight;
  size_t next = 0;
  auto last_report = Clock::now();
  while (next < items.size() || !inflight.empty()) {
    while (next < items.size() && inflight.size() < window) {
      const TraceWorkItem& item = items[next++];
      ChatParams params;
      params.n = 1;
      params.temperature = sampling_.temperature;
      params.top_p = sampling_.top_p;
      params.max_tokens = sampling_.max_tokens;
      params.seed = static_cast<int64_t>(item.seed);
      params.logprobs = options_.want_tokens || sampling_.top_logprobs > 0;
      params.top_logprobs = params.logprobs ? sampling_.top_logprobs : 0;
      nlohmann::json messages = nlohmann::json::parse(item.prompt->messages.dump());
      inflight.push_back(
          {&item, client_.ChatCompletionAsync(std::move(messages), params), Clock::now()});
    }
    std::vector<TraceCompletion> done;
    for (auto it = inflight.begin(); it != inflight.end();) {
      if (it->answer.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
        ++it;
        continue;
      }
      absl::StatusOr<ChatResponse> r = it->answer.get();
      TraceCompletion c;
      c.item = it->item;
      c.time_s = SecondsSince(it->start);
      if (!r.ok()) {
        return absl::UnavailableError(absl::StrCat("prompt \"", c.item->prompt->id, "\" sample ",
                                                   c.item->sample, ": ", r.status().message()));
      }
      if (r->choices.empty()) {
        return absl::DataLossError(absl::StrCat("prompt \"", c.item->prompt->id,
                                                "\": the endpoint answered with no choice"));
      }
      absl::Status s = FillFromChoice(r->choices[0], options_.want_tokens, &c);
      if (!s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("prompt \"", c.item->prompt->id, "\": ", s.message()));
      }
      c.prompt_tokens = r->usage.prompt_tokens;
      c.completion_tokens = r->usage.completion_tokens;
      if (c.has_tokens) {
        c.completion_tokens = static_cast<int64_t>(c.completion_ids.size());
        ASSIGN_OR_RETURN(c.prompt_ids, ids_for(c.item->prompt));
        if (!c.prompt_ids.empty()) c.prompt_tokens = static_cast<int64_t>(c.prompt_ids.size());
      }
      generated_ += c.completion_tokens;
      done.push_back(std::move(c));
      it = inflight.erase(it);
    }
    if (!done.empty() || SecondsSince(last_report) > 1.0) {
      last_report = Clock::now();
      RETURN_IF_ERROR(on_done(std::move(done)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ output folder

TraceOutputDir::~TraceOutputDir() { (void)Close(); }

absl::Status TraceOutputDir::Close() {
  absl::Status s;
  if (jsonl_) {
    if (std::fclose(jsonl_) != 0) s = absl::InternalError(Path("traces.jsonl") + ": close failed");
    jsonl_ = nullptr;
  }
  if (done_log_) {
    if (std::fclose(done_log_) != 0) s = absl::InternalError(Path("done.jsonl") + ": close failed");
    done_log_ = nullptr;
  }
  if (shard_) {
    absl::Status c = shard_->Close();
    if (s.ok()) s = c;
    shard_.reset();
  }
  return s;
}

bool TraceOutputDir::IsDone(const std::string& id, int64_t sample) const {
  return done_index_.count({id, sample}) > 0;
}

absl::StatusOr<std::unique_ptr<TraceOutputDir>> TraceOutputDir::Open(
    const std::string& dir, const nlohmann::ordered_json& job, bool write_shard) {
  std::unique_ptr<TraceOutputDir> out(new TraceOutputDir());
  out->dir_ = dir;
  out->write_shard_ = write_shard;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat(dir, ": cannot create the folder: ", ec.message()));
  const std::string job_path = out->Path("job.json");
  if (fs::exists(job_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(job_path));
    Json old = Json::parse(text, nullptr, false);
    if (old.is_discarded() || !old.is_object()) {
      return absl::DataLossError(absl::StrCat(job_path, ": not a JSON object"));
    }
    for (auto it = job.begin(); it != job.end(); ++it) {
      if (!old.contains(it.key()) || old[it.key()] != it.value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir, " holds a job with other parameters: ", it.key(), " was ",
            old.contains(it.key()) ? Dump(old[it.key()]) : std::string("unset"), ", now ",
            Dump(it.value()), " (use another --output folder, or the same parameters to resume)"));
      }
    }
  } else {
    if (fs::exists(out->Path("done.jsonl")) || fs::exists(out->Path("traces.jsonl"))) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " holds traces but no job.json; refusing to add to it (use another --output)"));
    }
    RETURN_IF_ERROR(WriteFileAtomically(job_path, job.dump(2) + "\n"));
  }
  RETURN_IF_ERROR(out->Recover(write_shard));
  return out;
}

absl::Status TraceOutputDir::Recover(bool write_shard) {
  // 1. The commit log.
  const std::string done_path = Path("done.jsonl");
  std::string text;
  if (fs::exists(done_path)) {
    ASSIGN_OR_RETURN(text, ReadFileToString(done_path));
  }
  size_t tail = 0;
  auto lines = CompleteLines(text, &tail);
  size_t keep_bytes = tail;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<TraceDoneEntry> e = ParseDoneLine(lines[i].second);
    if (!e.ok()) {
      if (i + 1 == lines.size()) {  // a torn last write
        keep_bytes = lines[i].first;
        break;
      }
      return absl::DataLossError(
          absl::StrCat(done_path, ":", i + 1, ": not a done record; the folder is damaged"));
    }
    if (!done_index_.emplace(std::make_pair(e->id, e->sample), done_.size()).second) {
      return absl::DataLossError(absl::StrCat(done_path, ":", i + 1, ": sample ", e->sample,
                                              " of \"", e->id, "\" is listed twice"));
    }
    done_.push_back(*std::move(e));
  }
  if (keep_bytes < text.size()) {
    recovery_.done_log_cut_bytes = static_cast<int64_t>(text.size() - keep_bytes);
    fs::resize_file(done_path, keep_bytes);
  }
  std::vector<const TraceDoneEntry*> kept;
  for (const TraceDoneEntry& e : done_)
    if (e.kept) kept.push_back(&e);
  recovery_.done = static_cast<int64_t>(done_.size());
  recovery_.kept = static_cast<int64_t>(kept.size());

  // 2. traces.jsonl: the kept samples' lines, in the same order.
  const std::string jsonl_path = Path("traces.jsonl");
  text.clear();
  if (fs::exists(jsonl_path)) {
    ASSIGN_OR_RETURN(text, ReadFileToString(jsonl_path));
  }
  lines = CompleteLines(text, &tail);
  if (lines.size() < kept.size()) {
    return absl::DataLossError(absl::StrFormat(
        "%s has %d complete lines but done.jsonl commits %d kept samples; the folder is damaged",
        jsonl_path, lines.size(), kept.size()));
  }
  for (size_t i = 0; i < kept.size(); ++i) {
    Json j = Json::parse(lines[i].second, nullptr, false);
    bool match = !j.is_discarded() && j.is_object() && j.value("id", "") == kept[i]->id &&
                 j.contains("sample") && j["sample"].is_number_integer() &&
                 j["sample"].get<int64_t>() == kept[i]->sample;
    if (!match) {
      return absl::DataLossError(absl::StrFormat(
          "%s:%d is not sample %d of \"%s\" as done.jsonl says; the folder is damaged", jsonl_path,
          i + 1, kept[i]->sample, kept[i]->id));
    }
  }
  size_t jsonl_keep =
      kept.empty() ? 0 : lines[kept.size() - 1].first + lines[kept.size() - 1].second.size() + 1;
  if (jsonl_keep < text.size()) {
    recovery_.jsonl_cut_bytes = static_cast<int64_t>(text.size() - jsonl_keep);
    fs::resize_file(jsonl_path, jsonl_keep);
  }

  // 3. tokens.shard: the kept samples' records, in the same order.
  const std::string shard_path = Path("tokens.shard");
  if (write_shard) {
    if (fs::exists(shard_path)) {
      ASSIGN_OR_RETURN(TraceShardReader reader, TraceShardReader::Open(shard_path));
      const int64_t file_bytes = reader.file_bytes();
      int64_t keep = 0, frames_at_keep = 0;
      TraceTokens rec;
      for (size_t i = 0; i < kept.size(); ++i) {
        absl::StatusOr<bool> more = reader.Next(&rec);
        if (!more.ok() || !*more) {
          return absl::DataLossError(absl::StrFormat(
              "%s has %d readable records but done.jsonl commits %d kept samples%s", shard_path, i,
              kept.size(), more.ok() ? "" : absl::StrCat(" (", more.status().message(), ")")));
        }
        if (rec.id != kept[i]->id || rec.sample != kept[i]->sample) {
          return absl::DataLossError(absl::StrFormat(
              "%s record %d is sample %d of \"%s\", done.jsonl says sample %d of \"%s\"",
              shard_path, i, rec.sample, rec.id, kept[i]->sample, kept[i]->id));
        }
        keep = reader.valid_bytes();
        frames_at_keep = reader.frames_read();
      }
      // Anything after the K-th record is uncommitted.
      absl::StatusOr<bool> more = reader.Next(&rec);
      bool rewrite = more.ok() && *more && reader.frames_read() == frames_at_keep;
      if (more.ok() && *more) {
        int64_t dropped = 1;
        while (true) {
          absl::StatusOr<bool> m = reader.Next(&rec);
          if (!m.ok() || !*m) break;
          ++dropped;
        }
        recovery_.shard_dropped_records = dropped;
      }
      if (rewrite) {
        // The K-th record shares its frame with uncommitted ones: copy the
        // first K records into a fresh shard.
        const std::string tmp = shard_path + ".rewrite";
        {
          ASSIGN_OR_RETURN(TraceShardReader again, TraceShardReader::Open(shard_path));
          ASSIGN_OR_RETURN(TraceShardWriter w, TraceShardWriter::Open(tmp, /*append=*/false));
          for (size_t i = 0; i < kept.size(); ++i) {
            ASSIGN_OR_RETURN(bool ok, again.Next(&rec));
            if (!ok) return absl::DataLossError(absl::StrCat(shard_path, ": short on rewrite"));
            RETURN_IF_ERROR(w.Append(rec));
          }
          RETURN_IF_ERROR(w.Close());
        }
        fs::rename(tmp, shard_path);
        recovery_.shard_cut_bytes = file_bytes - static_cast<int64_t>(fs::file_size(shard_path));
      } else if (keep < file_bytes) {
        recovery_.shard_cut_bytes = file_bytes - keep;
        fs::resize_file(shard_path, static_cast<uintmax_t>(keep));
      }
    } else if (!kept.empty()) {
      return absl::DataLossError(absl::StrFormat(
          "%s is missing but done.jsonl commits %d kept samples", shard_path, kept.size()));
    }
    ASSIGN_OR_RETURN(TraceShardWriter w, TraceShardWriter::Open(shard_path, /*append=*/true));
    shard_.emplace(std::move(w));
  }

  jsonl_ = std::fopen(jsonl_path.c_str(), "ab");
  if (!jsonl_) return absl::InternalError(absl::StrCat(jsonl_path, ": cannot open for append"));
  done_log_ = std::fopen(done_path.c_str(), "ab");
  if (!done_log_) return absl::InternalError(absl::StrCat(done_path, ": cannot open for append"));
  return absl::OkStatus();
}

absl::Status TraceOutputDir::Commit(std::vector<Pending> group) {
  if (group.empty()) return absl::OkStatus();
  const std::string jsonl_path = Path("traces.jsonl"), done_path = Path("done.jsonl");
  bool any_kept = false;
  for (const Pending& p : group) {
    if (done_index_.count({p.entry.id, p.entry.sample})) {
      return absl::InternalError(
          absl::StrCat("sample ", p.entry.sample, " of \"", p.entry.id, "\" committed twice"));
    }
    any_kept |= p.entry.kept;
  }
  if (any_kept) {
    if (shard_) {
      for (const Pending& p : group) {
        if (p.entry.kept) RETURN_IF_ERROR(shard_->Append(p.tokens));
      }
      RETURN_IF_ERROR(shard_->Commit());
    }
    std::string lines;
    for (const Pending& p : group) {
      if (p.entry.kept) absl::StrAppend(&lines, p.jsonl_line, "\n");
    }
    RETURN_IF_ERROR(WriteAll(jsonl_, lines, jsonl_path));
    RETURN_IF_ERROR(FsyncFile(jsonl_, jsonl_path));
  }
  std::string done_lines;
  for (const Pending& p : group) absl::StrAppend(&done_lines, DoneLine(p.entry), "\n");
  RETURN_IF_ERROR(WriteAll(done_log_, done_lines, done_path));
  RETURN_IF_ERROR(FsyncFile(done_log_, done_path));
  for (Pending& p : group) {
    done_index_.emplace(std::make_pair(p.entry.id, p.entry.sample), done_.size());
    done_.push_back(std::move(p.entry));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ the job

nlohmann::ordered_json TraceJobParams(const TraceSamplingOptions& sampling, KeepPolicy keep,
                                      const std::string& verifier, const std::string& teacher,
                                      bool write_shard, const std::string& prompts_path) {
  return Json{{"format", "retort-traces-v1"},
              {"prompts", prompts_path},
              {"teacher", teacher},
              {"samples", sampling.samples},
              {"temperature", sampling.temperature},
              {"top_p", sampling.top_p},
              {"max_tokens", sampling.max_tokens},
              {"seed", sampling.seed},
              {"top_logprobs", sampling.top_logprobs},
              {"verifier", verifier},
              {"keep", keep == KeepPolicy::kCorrect ? "correct" : "all"},
              {"shard", write_shard}};
}

absl::StatusOr<TraceJobReport> RunTraceJob(const std::vector<TracePrompt>& prompts,
                                           TraceTeacher& teacher, TraceOutputDir& out,
                                           const TraceJobOptions& options) {
  const auto start = Clock::now();
  const int64_t n = std::max<int64_t>(1, options.sampling.samples);
  ProgressSink& sink = options.progress ? *options.progress : StderrProgress();
  auto log = [&sink](const std::string& s) { sink.Line(s); };
  TraceJobReport report;
  report.prompts = static_cast<int64_t>(prompts.size());
  report.samples_total = report.prompts * n;

  std::map<std::string, int64_t> done_per_prompt;
  for (const TraceDoneEntry& e : out.done()) ++done_per_prompt[e.id];
  std::vector<TraceWorkItem> items;
  int64_t prompts_done = 0;
  for (const TracePrompt& p : prompts) {
    int64_t already = 0;
    for (int64_t s = 0; s < n; ++s) {
      if (out.IsDone(p.id, s)) {
        ++already;
        continue;
      }
      items.push_back({&p, s, TraceSampleSeed(options.sampling.seed, p.id, s)});
    }
    report.samples_resumed += already;
    if (already == n) ++prompts_done;
  }
  if (report.samples_resumed > 0) {
    const TraceRecovery& r = out.recovery();
    log(absl::StrFormat(
        "resuming: %d of %d samples already done (%d prompts complete); repaired: done.jsonl -%d "
        "B, traces.jsonl -%d B, tokens.shard -%d records / -%d B",
        report.samples_resumed, report.samples_total, prompts_done, r.done_log_cut_bytes,
        r.jsonl_cut_bytes, r.shard_dropped_records, r.shard_cut_bytes));
  }

  std::map<std::string, int64_t> remaining;  // samples left per prompt this run
  for (const TraceWorkItem& it : items) ++remaining[it.prompt->id];
  std::set<std::string> skipped;
  auto last_progress = Clock::now();
  const bool verify_any = options.verifier != nullptr;

  auto progress = [&](bool force) {
    if (!force && (options.progress_interval_s <= 0 ||
                   SecondsSince(last_progress) < options.progress_interval_s)) {
      return;
    }
    last_progress = Clock::now();
    double secs = SecondsSince(start);
    double tps = teacher.generated_tokens() / std::max(secs, 1e-9);
    int64_t todo = static_cast<int64_t>(items.size()) - report.samples_generated;
    double per_sample = report.samples_generated > 0 ? secs / report.samples_generated : NAN;
    log(absl::StrFormat(
        "[generate] prompts %d/%d done | samples %d/%d (kept %d, rejected %d) | %.1f tok/s | "
        "elapsed %s | ETA %s",
        prompts_done, report.prompts, report.samples_resumed + report.samples_generated,
        report.samples_total, report.samples_kept, report.samples_rejected, tps,
        HumanDuration(secs), HumanDuration(per_sample * std::max<int64_t>(0, todo))));
  };

  auto on_done = [&](std::vector<TraceCompletion>&& group) -> absl::Status {
    std::vector<TraceOutputDir::Pending> pending;
    for (TraceCompletion& c : group) {
      const TracePrompt& p = *c.item->prompt;
      if (absl::IsFailedPrecondition(c.status)) {
        if (skipped.insert(p.id).second) log(absl::StrCat("skipped: ", c.status.message()));
        continue;
      }
      if (!c.status.ok()) {
        return absl::Status(c.status.code(),
                            absl::StrCat("prompt \"", p.id, "\" sample ", c.item->sample, ": ",
                                         c.status.message()));
      }
      TraceSample t;
      t.id = p.id;
      t.sample = c.item->sample;
      for (const Json& m : p.messages) {
        TraceMessage tm;
        for (auto it = m.begin(); it != m.end(); ++it) {
          if (it.key() == "role" && it->is_string()) {
            tm.role = it->get<std::string>();
          } else if (it.key() == "content" && it->is_string()) {
            tm.content = it->get<std::string>();
          } else if (it.key() == "reasoning_content" && it->is_string()) {
            tm.reasoning_content = it->get<std::string>();
          } else {
            tm.extra[it.key()] = *it;
          }
        }
        t.messages.push_back(std::move(tm));
      }
      TraceMessage assistant;
      assistant.role = "assistant";
      assistant.content = c.content;
      assistant.reasoning_content = c.reasoning;
      t.messages.push_back(std::move(assistant));
      t.answer = p.answer;
      t.finish_reason = c.finish_reason;
      t.prompt_tokens = c.prompt_tokens;
      t.completion_tokens = c.completion_tokens;
      t.time_s = std::round(c.time_s * 1000) / 1000;
      if (verify_any && p.answer) {
        absl::StatusOr<VerifyResult> v = options.verifier->Verify(c.content, *p.answer);
        t.verifier = options.verifier->Describe();
        if (v.ok()) {
          t.correct = v->correct;
          t.extra["extracted_answer"] = v->extracted;
        } else {
          ++report.verify_errors;
          t.extra["verify_error"] = std::string(v.status().message());
        }
      }
      t.extra["seed"] = c.item->seed;
      if (!options.teacher_name.empty()) t.extra["model"] = options.teacher_name;
      const bool kept = options.keep == KeepPolicy::kAll || t.correct.value_or(false);

      TraceOutputDir::Pending pd;
      pd.entry.id = p.id;
      pd.entry.sample = c.item->sample;
      pd.entry.kept = kept;
      pd.entry.correct = t.correct;
      pd.entry.finish_reason = c.finish_reason;
      pd.entry.prompt_tokens = c.prompt_tokens;
      pd.entry.completion_tokens = c.completion_tokens;
      pd.entry.time_s = t.time_s;
      if (kept) {
        pd.jsonl_line = TraceSampleToJsonLine(t);
        pd.tokens.id = p.id;
        pd.tokens.sample = static_cast<int32_t>(c.item->sample);
        pd.tokens.prompt_ids = std::move(c.prompt_ids);
        pd.tokens.completion_ids = std::move(c.completion_ids);
        pd.tokens.top_k = c.top_k;
        pd.tokens.topk_ids = std::move(c.topk_ids);
        pd.tokens.topk_logprobs = std::move(c.topk_logprobs);
        pd.tokens.sampled_logprobs = std::move(c.sampled_logprobs);
      }
      pending.push_back(std::move(pd));
      ++report.samples_generated;
      if (--remaining[p.id] == 0) ++prompts_done;
    }
    RETURN_IF_ERROR(out.Commit(std::move(pending)));
    // Kept/rejected over everything done so far.
    report.samples_kept = report.samples_rejected = 0;
    for (const TraceDoneEntry& e : out.done())
      (e.kept ? report.samples_kept : report.samples_rejected)++;
    progress(false);
    return absl::OkStatus();
  };
  for (const TraceDoneEntry& e : out.done())
    (e.kept ? report.samples_kept : report.samples_rejected)++;
  if (!items.empty()) RETURN_IF_ERROR(teacher.Run(items, on_done));
  report.prompts_skipped = static_cast<int64_t>(skipped.size());
  report.generated_tokens = teacher.generated_tokens();
  report.seconds = SecondsSince(start);
  progress(true);

  // The summary over every done sample of these prompts.
  std::map<std::string, const TracePrompt*> by_id;
  for (const TracePrompt& p : prompts) by_id[p.id] = &p;
  std::map<std::string, PromptStats> stats;
  std::map<std::string, int64_t> finish;
  std::vector<int64_t> lengths;
  int64_t done_samples = 0, kept = 0, rejected = 0;
  for (const TraceDoneEntry& e : out.done()) {
    if (!by_id.count(e.id)) continue;
    ++done_samples;
    (e.kept ? kept : rejected)++;
    ++finish[e.finish_reason.empty() ? "unknown" : e.finish_reason];
    lengths.push_back(e.completion_tokens);
    if (e.correct.has_value()) {
      PromptStats& s = stats[e.id];
      s.id = e.id;
      ++s.n;
      s.correct += *e.correct ? 1 : 0;
    }
  }
  Json summary = Json::object();
  summary["teacher"] = options.teacher_name;
  summary["prompts"] = report.prompts;
  summary["prompts_skipped"] = report.prompts_skipped;
  summary["samples_per_prompt"] = n;
  summary["samples"] = done_samples;
  summary["kept"] = kept;
  summary["rejected"] = rejected;
  summary["verify_errors"] = report.verify_errors;
  summary["finish_reasons"] = finish;
  std::sort(lengths.begin(), lengths.end());
  auto pct = [&](double q) -> Json {
    if (lengths.empty()) return nullptr;
    size_t i = static_cast<size_t>(std::ceil(q * lengths.size())) - (q > 0 ? 1 : 0);
    return lengths[std::min(i, lengths.size() - 1)];
  };
  double mean = 0;
  for (int64_t l : lengths) mean += static_cast<double>(l);
  summary["completion_tokens"] = {
      {"total", static_cast<int64_t>(mean)},
      {"mean", lengths.empty() ? 0.0 : mean / static_cast<double>(lengths.size())},
      {"median", pct(0.5)},
      {"p90", pct(0.9)}};
  if (!stats.empty()) {
    std::vector<PromptStats> list;
    for (const TracePrompt& p : prompts) {
      if (auto it = stats.find(p.id); it != stats.end()) list.push_back(it->second);
    }
    std::vector<int> ks = {1};
    for (int k = 2; k < n; k *= 2) ks.push_back(k);
    if (n > 1) ks.push_back(static_cast<int>(n));
    ASSIGN_OR_RETURN(summary["verification"], SummarizeVerification(list, ks));
  } else {
    summary["verification"] = nullptr;
  }
  summary["this_run"] = {
      {"samples_generated", report.samples_generated},
      {"samples_resumed", report.samples_resumed},
      {"generated_tokens", report.generated_tokens},
      {"seconds", report.seconds},
      {"tokens_per_second", report.generated_tokens / std::max(report.seconds, 1e-9)}};
  RETURN_IF_ERROR(WriteFileAtomically(out.Path("summary.json"), summary.dump(2) + "\n"));
  report.summary = std::move(summary);
  return report;
}

}  // namespace retort
