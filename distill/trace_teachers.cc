#include "distill/trace_teachers.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/process.h"
#include "core/status.h"
#include "distill/generation.h"
#include "formats/reasoning.h"

namespace retort {
namespace {

using Clock = std::chrono::steady_clock;

std::string Trimmed(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

}  // namespace

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
        c.content = split.found ? split.answer : Trimmed(text);
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
    out->reasoning = Trimmed(choice.reasoning_content);
    out->content = Trimmed(choice.content);
  } else {
    ThinkSplit split = SplitThink(choice.content);
    out->reasoning = split.reasoning;
    out->content = split.found ? split.answer : Trimmed(choice.content);
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
      // Already parsed (through ParseOrderedJson) when the prompts were read.
      nlohmann::json messages(item.prompt->messages);
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

}  // namespace retort
