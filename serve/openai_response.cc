#include "serve/openai_response.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
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

// The legacy completions format: parallel lists.
Json LegacyLogprobs(const Tokenizer& tokenizer, const std::vector<GeneratedToken>& tokens,
                    const std::vector<size_t>& offsets, size_t begin, size_t end) {
  Json strings = Json::array(), lps = Json::array(), tops = Json::array(), offs = Json::array(),
       ids = Json::array();
  for (size_t i = begin; i < end; ++i) {
    const std::string token = Utf8Lossy(TokenBytes(tokenizer, tokens[i].id));
    strings.push_back(token);
    lps.push_back(Finite(tokens[i].logprob));
    Json top = Json::object();
    top[token] = Finite(tokens[i].logprob);
    for (const auto& [id, lp] : tokens[i].top) {
      top[Utf8Lossy(TokenBytes(tokenizer, id))] = Finite(lp);
    }
    tops.push_back(std::move(top));
    offs.push_back(offsets[i]);
    ids.push_back(tokens[i].id);
  }
  return {{"tokens", strings},
          {"token_logprobs", lps},
          {"top_logprobs", tops},
          {"text_offset", offs},
          {"token_ids", ids}};
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
  const int64_t p = static_cast<int64_t>(job.prompt.size());
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

Json ChoiceJson(const CompletionJob& job, const Tokenizer& tokenizer, int index,
                const ChoiceResult& r) {
  Json choice = {{"index", index}};
  if (job.chat) {
    Json message = {{"role", "assistant"}, {"content", r.content}};
    if (r.saw_reasoning) message["reasoning_content"] = r.reasoning;
    choice["message"] = std::move(message);
  } else {
    choice["text"] = r.text;
  }
  choice["logprobs"] = job.top_logprobs >= 0
                           ? LogprobsJson(job, tokenizer, r.tokens, r.offsets, 0, r.tokens.size())
                           : Json(nullptr);
  choice["finish_reason"] = r.finish_reason;
  if (job.return_token_ids) choice["token_ids"] = TokenIds(r.tokens);
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
  if (job.return_token_ids) last["token_ids"] = TokenIds(result.tokens);
  return last;
}

}  // namespace retort::serve
