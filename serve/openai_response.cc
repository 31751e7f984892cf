#include "serve/openai_response.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "text/unicode.h"

namespace retort::serve {
namespace {

double Finite(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

// Log-prob entry in the chat format, plus "token_id".
Json ChatLogprob(const Tokenizer& tokenizer, int32_t id, float logprob) {
  const std::string bytes = TokenBytes(tokenizer, id);
  Json b = Json::array();
  for (unsigned char c : bytes) b.push_back(c);
  return {
      {"token", Utf8Lossy(bytes)}, {"logprob", Finite(logprob)}, {"bytes", b}, {"token_id", id}};
}

Json ChatLogprobs(const Tokenizer& tokenizer, const std::vector<GeneratedToken>& tokens,
                  size_t begin, size_t end) {
  Json content = Json::array();
  for (size_t i = begin; i < end; ++i) {
    Json e = ChatLogprob(tokenizer, tokens[i].id, tokens[i].logprob);
    Json top = Json::array();
    for (const auto& [id, lp] : tokens[i].top) top.push_back(ChatLogprob(tokenizer, id, lp));
    e["top_logprobs"] = top;
    content.push_back(std::move(e));
  }
  return {{"content", content}};
}

// The legacy completions format: parallel lists, one entry per token.
class LegacyLists {
 public:
  explicit LegacyLists(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Token `id` at `offset` with its log-probs (and at most `top_k` of its
  // alternatives), or nulls (a prompt's first token) when `scored` is null.
  // Returns the token's length in code points.
  size_t Add(int32_t id, const GeneratedToken* scored, size_t offset,
             size_t top_k = std::numeric_limits<size_t>::max()) {
    const std::string token = Utf8Lossy(TokenBytes(tokenizer_, id));
    strings_.push_back(token);
    offsets_.push_back(offset);
    ids_.push_back(id);
    if (scored == nullptr) {
      logprobs_.push_back(nullptr);
      tops_.push_back(nullptr);
    } else {
      logprobs_.push_back(Finite(scored->logprob));
      Json top = Json::object();
      top[token] = Finite(scored->logprob);
      for (size_t k = 0; k < std::min(top_k, scored->top.size()); ++k) {
        const auto& [top_id, lp] = scored->top[k];
        top[Utf8Lossy(TokenBytes(tokenizer_, top_id))] = Finite(lp);
      }
      tops_.push_back(std::move(top));
    }
    return Utf8Length(token);
  }

  Json Take() {
    return {{"tokens", std::move(strings_)},
            {"token_logprobs", std::move(logprobs_)},
            {"top_logprobs", std::move(tops_)},
            {"text_offset", std::move(offsets_)},
            {"token_ids", std::move(ids_)}};
  }

 private:
  const Tokenizer& tokenizer_;
  Json strings_ = Json::array(), logprobs_ = Json::array(), tops_ = Json::array(),
       offsets_ = Json::array(), ids_ = Json::array();
};

Json LegacyLogprobs(const Tokenizer& tokenizer, const std::vector<GeneratedToken>& tokens,
                    const std::vector<size_t>& offsets, size_t begin, size_t end) {
  LegacyLists lists(tokenizer);
  for (size_t i = begin; i < end; ++i) lists.Add(tokens[i].id, &tokens[i], offsets[i]);
  return lists.Take();
}

// Echo: the prompt's tokens (their scores may carry more alternatives, for
// prompt_logprobs, than the `top_k` asked here), then the generated ones.
Json EchoLogprobs(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                  const ChoiceResult& r, int top_k) {
  LegacyLists lists(tokenizer);
  size_t offset = 0;
  for (size_t t = 0; t < prompt.size(); ++t) {
    offset += lists.Add(prompt[t], t == 0 ? nullptr : &r.prompt_scores[t - 1], offset,
                        static_cast<size_t>(std::max(0, top_k)));
  }
  for (const GeneratedToken& token : r.tokens) offset += lists.Add(token.id, &token, offset);
  return lists.Take();
}

Json TokenIds(const std::vector<GeneratedToken>& tokens) {
  Json ids = Json::array();
  for (const GeneratedToken& t : tokens) ids.push_back(t.id);
  return ids;
}

}  // namespace

Json ErrorJson(const ApiError& e) {
  Json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return Json{{"error", err}};
}

Json ModelCardJson(const std::string& model_name, int64_t created, int64_t max_model_len) {
  return {{"id", model_name},
          {"object", "model"},
          {"created", created},
          {"owned_by", "retort"},
          {"max_model_len", max_model_len}};
}

Json ModelListJson(const Json& card) { return {{"object", "list"}, {"data", Json::array({card})}}; }

Json UsageJson(const CompletionJob& job, int64_t completion_tokens) {
  const int64_t p = job.prompt_tokens();
  return {{"prompt_tokens", p},
          {"completion_tokens", completion_tokens},
          {"total_tokens", p + completion_tokens}};
}

Json LogprobsJson(const CompletionJob& job, const Tokenizer& tokenizer,
                  const std::vector<GeneratedToken>& tokens, const std::vector<size_t>& offsets,
                  size_t begin, size_t end) {
  return job.chat ? ChatLogprobs(tokenizer, tokens, begin, end)
                  : LegacyLogprobs(tokenizer, tokens, offsets, begin, end);
}

Json PromptLogprobsJson(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                        const std::vector<GeneratedToken>& scores, int top_k) {
  auto entry = [&tokenizer](int32_t id, float logprob, int32_t rank) {
    return Json{{"logprob", Finite(logprob)},
                {"rank", rank},
                {"decoded_token", Utf8Lossy(TokenBytes(tokenizer, id))}};
  };
  Json list = Json::array();
  for (size_t t = 0; t < prompt.size(); ++t) {
    if (t == 0 || t > scores.size()) {
      list.push_back(nullptr);
      continue;
    }
    const GeneratedToken& s = scores[t - 1];
    // The prompt token first; an alternative that is the same token replaces
    // its entry in place (its rank then is its place in the top K, as vLLM).
    Json tokens = Json::object();
    tokens[std::to_string(s.id)] = entry(s.id, s.logprob, s.rank);
    const size_t k = std::min(static_cast<size_t>(std::max(0, top_k)), s.top.size());
    for (size_t i = 0; i < k; ++i) {
      const auto& [id, lp] = s.top[i];
      tokens[std::to_string(id)] = entry(id, lp, static_cast<int32_t>(i + 1));
    }
    list.push_back(std::move(tokens));
  }
  return list;
}

Json ChoiceJson(const CompletionJob& job, const Tokenizer& tokenizer, int index,
                const ChoiceResult& r) {
  Json choice = {{"index", index}};
  if (job.chat) {
    Json message = {{"role", "assistant"}, {"content", r.content}};
    if (r.saw_reasoning) message["reasoning_content"] = r.reasoning;
    choice["message"] = std::move(message);
  } else {
    choice["text"] = job.echo ? job.prompt_texts[index / job.n] + r.text : r.text;
  }
  if (job.top_logprobs < 0) {
    choice["logprobs"] = nullptr;
  } else if (job.echo) {
    choice["logprobs"] = EchoLogprobs(tokenizer, job.prompt_of(index), r, job.top_logprobs);
  } else {
    choice["logprobs"] = LogprobsJson(job, tokenizer, r.tokens, r.offsets, 0, r.tokens.size());
  }
  choice["finish_reason"] = r.finish_reason;
  choice["stop_reason"] = r.stop_reason;
  if (job.return_token_ids) choice["token_ids"] = TokenIds(r.tokens);
  if (job.prompt_logprobs >= 0) {
    choice["prompt_logprobs"] =
        PromptLogprobsJson(tokenizer, job.prompt_of(index), r.prompt_scores, job.prompt_logprobs);
  }
  return choice;
}

Json CompletionJson(const CompletionJob& job, const std::string& model_name, Json choices,
                    int64_t completion_tokens) {
  return {{"id", job.id},
          {"object", job.chat ? "chat.completion" : "text_completion"},
          {"created", job.created},
          {"model", model_name},
          {"choices", std::move(choices)},
          {"usage", UsageJson(job, completion_tokens)}};
}

std::string SseEvent(const Json& chunk) { return absl::StrCat("data: ", DumpJson(chunk), "\n\n"); }

Json ChunkJson(const CompletionJob& job, const std::string& model_name, Json choice) {
  return Json{{"id", job.id},
              {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", job.created},
              {"model", model_name},
              {"choices", Json::array({std::move(choice)})}};
}

Json UsageChunkJson(const CompletionJob& job, const std::string& model_name,
                    int64_t completion_tokens) {
  Json u = ChunkJson(job, model_name, nullptr);
  u["choices"] = Json::array();
  u["usage"] = UsageJson(job, completion_tokens);
  return u;
}

Json RoleChoiceJson(int index) {
  return {{"index", index},
          {"delta", {{"role", "assistant"}, {"content", ""}}},
          {"logprobs", nullptr},
          {"finish_reason", nullptr}};
}

Json TextChoiceJson(const CompletionJob& job, int index, const TextDelta& d, Json logprobs) {
  Json choice = {{"index", index}};
  if (job.chat) {
    Json delta = Json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty() || d.reasoning.empty()) delta["content"] = d.content;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = d.text;
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = nullptr;
  if (!job.chat) choice["stop_reason"] = nullptr;  // vLLM's completion chunks carry it
  return choice;
}

Json ReasoningTailChoiceJson(int index, const TextDelta& tail) {
  Json delta = Json::object();
  if (!tail.reasoning.empty()) delta["reasoning_content"] = tail.reasoning;
  if (!tail.content.empty()) delta["content"] = tail.content;
  return {{"index", index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
}

Json FinishChoiceJson(const CompletionJob& job, int index, const ChoiceResult& result) {
  Json last = {{"index", index}};
  if (job.chat) {
    last["delta"] = Json::object();
  } else {
    last["text"] = "";
  }
  last["logprobs"] = nullptr;
  last["finish_reason"] = result.finish_reason;
  last["stop_reason"] = result.stop_reason;
  if (job.return_token_ids) last["token_ids"] = TokenIds(result.tokens);
  return last;
}

}  // namespace retort::serve
