#include "serve/openai_request.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <ctime>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "formats/reasoning.h"
#include "serve/request_guard.h"
#include "serve/text_util.h"

namespace retort::serve {

ApiError BadField(const std::string& field, const std::string& expected) {
  return ApiError{400, absl::StrCat("\"", field, "\": expected ", expected),
                  "invalid_request_error", field, ""};
}

ApiError UnknownModel(const std::string& name, const std::string& served) {
  return ApiError{
      404,
      absl::StrCat("The model `", name, "` does not exist (this server serves `", served, "`)"),
      "invalid_request_error", "model", "model_not_found"};
}

namespace {

// Typed access to optional request fields; null counts as absent.
class Fields {
 public:
  explicit Fields(const Json& body) : body_(body) {}
  const Json* Find(const char* key) const {
    auto it = body_.find(key);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<ApiError> Number(const char* key, double lo, double hi,
                                 std::optional<double>* out) const {
    const Json* v = Find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) return BadField(key, absl::StrFormat("a number in [%g, %g]", lo, hi));
    double d = v->get<double>();
    if (!(d >= lo && d <= hi))
      return BadField(key, absl::StrFormat("a number in [%g, %g], got %g", lo, hi, d));
    *out = d;
    return std::nullopt;
  }
  std::optional<ApiError> Int(const char* key, int64_t lo, int64_t hi,
                              std::optional<int64_t>* out) const {
    const Json* v = Find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer())
      return BadField(key, absl::StrFormat("an integer in [%d, %d]", lo, hi));
    int64_t i = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                    ? INT64_MAX
                    : v->get<int64_t>();
    if (i < lo || i > hi)
      return BadField(key, absl::StrFormat("an integer in [%d, %d], got %d", lo, hi, i));
    *out = i;
    return std::nullopt;
  }
  std::optional<ApiError> Bool(const char* key, bool* out) const {
    const Json* v = Find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) return BadField(key, "true or false");
    *out = v->get<bool>();
    return std::nullopt;
  }

 private:
  const Json& body_;
};

// One prompt: a string (encoded with the tokenizer's special tokens, as
// vLLM) or a non-empty list of token ids. `echo` keeps its text.
std::optional<ApiError> AddPrompt(const Json& prompt, const RequestContext& ctx, bool echo,
                                  CompletionJob* job) {
  if (prompt.is_string()) {
    const std::string text = prompt.get<std::string>();
    if (ctx.max_prompt_bytes > 0 && static_cast<int64_t>(text.size()) > ctx.max_prompt_bytes) {
      return ApiError{400,
                      absl::StrFormat("the prompt is %d bytes; no text over %d bytes fits this "
                                      "model's context of %d tokens",
                                      text.size(), ctx.max_prompt_bytes, ctx.context_length),
                      "invalid_request_error", "prompt"};
    }
    job->prompts.push_back(ctx.tokenizer->Encode(text, /*add_special_tokens=*/true));
    if (echo) job->prompt_texts.push_back(text);
    return std::nullopt;
  }
  if (!prompt.is_array() || prompt.empty() ||
      !std::all_of(prompt.begin(), prompt.end(),
                   [](const Json& v) { return v.is_number_integer(); })) {
    return BadField("prompt",
                    "a string, a list of strings, a non-empty list of token ids or a list of them");
  }
  std::vector<int32_t> ids;
  for (const Json& v : prompt) {
    int64_t id = v.get<int64_t>();
    if (id < 0 || id >= ctx.vocab_size) {
      return BadField("prompt", absl::StrCat("token ids in [0, ", ctx.vocab_size, "), got ", id));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  if (echo) job->prompt_texts.push_back(ctx.tokenizer->Decode(ids, /*skip_special_tokens=*/false));
  job->prompts.push_back(std::move(ids));
  return std::nullopt;
}

std::optional<ApiError> ParsePrompts(const Json& body, const RequestContext& ctx,
                                     CompletionJob* job) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null())
    return ApiError{400, "\"prompt\" is required", "invalid_request_error", "prompt"};
  const Json& prompt = *it;
  const bool several =
      prompt.is_array() && !prompt.empty() && (prompt[0].is_string() || prompt[0].is_array());
  if (!several) return AddPrompt(prompt, ctx, job->echo, job);
  if (static_cast<int64_t>(prompt.size()) * job->n > kMaxPrompts) {
    return ApiError{400,
                    absl::StrFormat("%d prompts x n = %d is %d choices; this server allows at most "
                                    "%d in one request",
                                    prompt.size(), job->n, prompt.size() * job->n, kMaxPrompts),
                    "invalid_request_error", "prompt"};
  }
  for (const Json& p : prompt) {
    if (auto e = AddPrompt(p, ctx, job->echo, job)) return e;
  }
  return std::nullopt;
}

// A request for constrained output or tool calls is refused: answering it
// with free text would look like success to the client. The neutral values
// (no tools, tool_choice "none", response_format text) are accepted.
std::optional<ApiError> RefuseStructuredOutput(const Json& body) {
  auto refuse = [](const char* key, const std::string& why) {
    return ApiError{400, absl::StrCat("\"", key, "\" is not supported: ", why),
                    "invalid_request_error", key};
  };
  const char* kNoTools = "this server does no tool calling; send the request without tools";
  Fields f(body);
  if (const Json* format = f.Find("response_format");
      format &&
      !(format->is_object() && format->size() == 1 && format->value("type", "") == "text")) {
    return refuse("response_format",
                  "this server does no constrained decoding (only {\"type\": \"text\"})");
  }
  if (const Json* tools = f.Find("tools"); tools && !(tools->is_array() && tools->empty())) {
    return refuse("tools", kNoTools);
  }
  if (const Json* choice = f.Find("tool_choice"); choice && *choice != "none") {
    return refuse("tool_choice", kNoTools);
  }
  for (const char* key : {"functions", "function_call"}) {
    if (f.Find(key)) return refuse(key, kNoTools);
  }
  return std::nullopt;
}

std::optional<ApiError> ParseMessages(const Json& body, const RequestContext& ctx,
                                      CompletionJob* job) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) {
    return BadField("messages", "a non-empty list of {\"role\", \"content\"} objects");
  }
  if (!ctx.chat_template) {
    return ApiError{
        400, absl::StrCat("model ", ctx.model_name, " has no chat template; use /v1/completions"),
        "invalid_request_error", "messages"};
  }
  // Bounded before anything is copied, rendered or tokenized: each message
  // renders to at least one token, and the contents' bytes bound their tokens.
  const int64_t max_messages = std::min<int64_t>(kMaxMessages, ctx.context_length);
  if (static_cast<int64_t>(it->size()) > max_messages) {
    return ApiError{400,
                    absl::StrFormat("%d messages; this server takes at most %d in one request",
                                    it->size(), max_messages),
                    "invalid_request_error", "messages"};
  }
  int64_t content_bytes = 0;
  for (const Json& m : *it) {
    auto content = m.is_object() ? m.find("content") : m.end();
    if (content == m.end()) continue;
    if (content->is_string()) {
      content_bytes += static_cast<int64_t>(content->get_ref<const std::string&>().size());
    } else if (content->is_array()) {
      for (const Json& part : *content) {
        auto text = part.is_object() ? part.find("text") : part.end();
        if (text != part.end() && text->is_string())
          content_bytes += static_cast<int64_t>(text->get_ref<const std::string&>().size());
      }
    }
  }
  if (ctx.max_prompt_bytes > 0 && content_bytes > ctx.max_prompt_bytes) {
    return ApiError{400,
                    absl::StrFormat("the messages hold %d bytes of content; no text over %d bytes "
                                    "fits this model's context of %d tokens",
                                    content_bytes, ctx.max_prompt_bytes, ctx.context_length),
                    "invalid_request_error", "messages"};
  }
  Json messages = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return BadField(where, "an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return BadField(where + ".role", "a string");
    Json copy = m;
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      // Content parts: only text can be rendered.
      std::string text;
      for (const Json& part : *content) {
        auto type = part.is_object() ? part.find("type") : part.end();
        auto part_text = part.is_object() ? part.find("text") : part.end();
        if (!part.is_object() || type == part.end() || !type->is_string() || *type != "text" ||
            part_text == part.end() || !part_text->is_string()) {
          return BadField(where + ".content",
                          "a string or a list of {\"type\": \"text\", \"text\": ...} parts");
        }
        if (!text.empty()) text += "\n";
        text += part_text->get<std::string>();
      }
      copy["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      return BadField(where + ".content", "a string, a list of text parts or null");
    } else if (content == m.end() && role->get<std::string>() != "assistant") {
      return BadField(where + ".content", "a string");
    }
    messages.push_back(std::move(copy));
  }
  Json extra = Json::object();
  if (const Json* kwargs = Fields(body).Find("chat_template_kwargs")) {
    if (!kwargs->is_object()) return BadField("chat_template_kwargs", "an object");
    extra = *kwargs;
  }
  bool add_generation_prompt = true;
  if (auto e = Fields(body).Bool("add_generation_prompt", &add_generation_prompt)) return e;
  absl::StatusOr<std::string> text =
      ctx.chat_template->Render(messages, add_generation_prompt, extra);
  if (!text.ok()) {
    return ApiError{400,
                    absl::StrCat("the chat template could not render these messages: ",
                                 text.status().message()),
                    "invalid_request_error", "messages"};
  }
  EncodeOptions enc;
  enc.add_special_tokens = true;
  enc.avoid_double_bos = true;
  job->prompts = {ctx.tokenizer->Encode(*text, enc)};
  job->starts_in_reasoning = EndsInsideReasoning(*text);
  return std::nullopt;
}

// Validates the body and fills `job`; an error to send otherwise.
std::optional<ApiError> ParseJob(const Json& body, const RequestContext& ctx, CompletionJob* job) {
  Fields f(body);
  if (const Json* model = f.Find("model")) {
    if (!model->is_string()) return BadField("model", "a string");
    if (model->get<std::string>() != ctx.model_name)
      return UnknownModel(model->get<std::string>(), ctx.model_name);
  }
  // Refused OpenAI features (better a clear 400 than a silently different answer).
  if (auto e = RefuseStructuredOutput(body)) return e;
  if (auto e = f.Bool("echo", &job->echo)) return e;
  if (job->echo && job->chat) {
    return ApiError{400, "\"echo\" is only supported by /v1/completions", "invalid_request_error",
                    "echo"};
  }
  std::optional<int64_t> best_of;
  if (auto e = f.Int("best_of", 1, kMaxChoices, &best_of)) return e;
  if (best_of && *best_of > 1)
    return ApiError{400, "\"best_of\" > 1 is not supported", "invalid_request_error", "best_of"};
  if (f.Find("suffix"))
    return ApiError{400, "\"suffix\" is not supported", "invalid_request_error", "suffix"};
  if (const Json* bias = f.Find("logit_bias"); bias && !(bias->is_object() && bias->empty())) {
    return ApiError{400, "\"logit_bias\" is not supported", "invalid_request_error", "logit_bias"};
  }
  for (const char* key : {"frequency_penalty", "presence_penalty"}) {
    std::optional<double> v;
    if (auto e = f.Number(key, -2, 2, &v)) return e;
    if (v && *v != 0) {
      return ApiError{400, absl::StrCat("\"", key, "\" is not supported (use repetition_penalty)"),
                      "invalid_request_error", key};
    }
  }

  std::optional<int64_t> n;
  if (auto e = f.Int("n", 1, kMaxChoices, &n)) return e;
  job->n = static_cast<int>(n.value_or(1));

  // Sampling.
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k, seed;
  if (auto e = f.Number("temperature", 0, 100, &temperature)) return e;
  if (auto e = f.Number("top_p", 0, 1, &top_p)) return e;
  if (top_p && *top_p <= 0) return BadField("top_p", "a number in (0, 1]");
  if (auto e = f.Number("min_p", 0, 1, &min_p)) return e;
  if (auto e = f.Number("repetition_penalty", 1e-6, 100, &repetition_penalty)) return e;
  if (auto e = f.Int("top_k", -1, INT32_MAX, &top_k)) return e;
  if (auto e = f.Int("seed", INT64_MIN, INT64_MAX, &seed)) return e;
  job->sampler.temperature = static_cast<float>(temperature.value_or(1.0));
  job->sampler.top_p = static_cast<float>(top_p.value_or(1.0));
  job->sampler.min_p = static_cast<float>(min_p.value_or(0.0));
  job->sampler.repetition_penalty = static_cast<float>(repetition_penalty.value_or(1.0));
  job->sampler.top_k = static_cast<int>(std::max<int64_t>(0, top_k.value_or(0)));
  job->seeded = seed.has_value();
  job->sampler.seed = static_cast<uint64_t>(seed.value_or(0));
  if (absl::Status s = ValidateSamplerOptions(job->sampler); !s.ok())
    return ApiError{400, std::string(s.message())};

  // Stops.
  if (const Json* stop = f.Find("stop")) {
    if (stop->is_string()) {
      job->stop.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= kMaxStopStrings) {
      for (const Json& s : *stop) {
        if (!s.is_string()) return BadField("stop", "a string or a list of strings");
        job->stop.push_back(s.get<std::string>());
      }
    } else {
      return BadField("stop",
                      absl::StrCat("a string or a list of at most ", kMaxStopStrings, " strings"));
    }
    for (const std::string& s : job->stop) {
      if (s.empty()) return BadField("stop", "non-empty strings");
    }
  }
  bool ignore_eos = false;
  if (auto e = f.Bool("ignore_eos", &ignore_eos)) return e;
  if (!ignore_eos) {
    job->stop_ids.assign(ctx.eos_ids.begin(), ctx.eos_ids.end());
    job->silent_stop_id = ctx.eos_id;
  }
  if (const Json* ids = f.Find("stop_token_ids")) {
    if (!ids->is_array()) return BadField("stop_token_ids", "a list of token ids");
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= ctx.vocab_size) {
        return BadField("stop_token_ids", absl::StrCat("token ids in [0, ", ctx.vocab_size, ")"));
      }
      job->stop_ids.push_back(id.get<int32_t>());
    }
  }

  // Output options.
  if (auto e = f.Bool("stream", &job->stream)) return e;
  if (const Json* so = f.Find("stream_options")) {
    if (!so->is_object()) return BadField("stream_options", "an object");
    if (auto e = Fields(*so).Bool("include_usage", &job->include_usage)) return e;
  }
  if (job->echo && job->stream) {
    return ApiError{400, "\"echo\" with \"stream\" is not supported; send it without \"stream\"",
                    "invalid_request_error", "echo"};
  }
  // vLLM's prompt_logprobs (completions only; vLLM refuses it with stream too).
  std::optional<int64_t> prompt_logprobs;
  if (auto e = f.Int("prompt_logprobs", 0, kMaxTopLogprobs, &prompt_logprobs)) return e;
  if (prompt_logprobs) {
    if (job->chat) {
      return ApiError{400, "\"prompt_logprobs\" is only supported by /v1/completions",
                      "invalid_request_error", "prompt_logprobs"};
    }
    if (job->stream) {
      return ApiError{400,
                      "\"prompt_logprobs\" with \"stream\" is not supported; send it without "
                      "\"stream\"",
                      "invalid_request_error", "prompt_logprobs"};
    }
    job->prompt_logprobs = static_cast<int>(*prompt_logprobs);
  }
  if (auto e = f.Bool("return_token_ids", &job->return_token_ids)) return e;
  if (job->chat) {
    bool logprobs = false;
    std::optional<int64_t> top;
    if (auto e = f.Bool("logprobs", &logprobs)) return e;
    if (auto e = f.Int("top_logprobs", 0, kMaxTopLogprobs, &top)) return e;
    if (top && !logprobs)
      return ApiError{400, "\"top_logprobs\" requires \"logprobs\": true", "invalid_request_error",
                      "top_logprobs"};
    if (logprobs) job->top_logprobs = static_cast<int>(top.value_or(0));
  } else {
    std::optional<int64_t> logprobs;
    if (auto e = f.Int("logprobs", 0, kMaxTopLogprobs, &logprobs)) return e;
    if (logprobs) job->top_logprobs = static_cast<int>(*logprobs);
  }

  // The prompts.
  std::optional<ApiError> prompt_error =
      job->chat ? ParseMessages(body, ctx, job) : ParsePrompts(body, ctx, job);
  if (prompt_error) return prompt_error;
  const char* prompt_key = job->chat ? "messages" : "prompt";

  // Length: 0 (with echo or prompt_logprobs) scores the prompt and generates nothing.
  std::optional<int64_t> max_tokens;
  const char* max_key = "max_tokens";
  if (job->chat && f.Find("max_completion_tokens")) max_key = "max_completion_tokens";
  const bool may_score_only = job->echo || job->prompt_logprobs >= 0;
  if (auto e = f.Int(max_key, may_score_only ? 0 : 1, INT64_MAX, &max_tokens)) return e;
  const int64_t limit = ctx.max_tokens_limit;
  if (max_tokens && *max_tokens > limit) {
    return ApiError{
        400,
        absl::StrFormat("\"%s\" is %d; this server allows at most %d", max_key, *max_tokens, limit),
        "invalid_request_error", max_key};
  }
  const bool score_only = max_tokens == 0;
  const int64_t context = ctx.context_length;
  int64_t longest = 0;
  for (size_t i = 0; i < job->prompts.size(); ++i) {
    const std::string name =
        job->prompts.size() == 1 ? std::string("the prompt") : absl::StrCat("prompt ", i);
    const int64_t n_prompt = static_cast<int64_t>(job->prompts[i].size());
    if (n_prompt == 0) {
      return ApiError{400, absl::StrCat(name, " is empty (no tokens)"), "invalid_request_error",
                      prompt_key};
    }
    // Scoring alone may fill the context; generating needs room for a token.
    if (n_prompt > context || (n_prompt == context && !score_only)) {
      return ApiError{400,
                      absl::StrFormat("%s has %d tokens; this model's maximum context length is %d "
                                      "tokens",
                                      name, n_prompt, context),
                      "invalid_request_error", prompt_key};
    }
    if (max_tokens && n_prompt + *max_tokens > context) {
      return ApiError{400,
                      absl::StrFormat("%sThis model's maximum context length is %d tokens. "
                                      "However, you requested %d tokens "
                                      "(%d in the prompt, %d in the completion).",
                                      job->prompts.size() == 1 ? "" : name + ": ", context,
                                      n_prompt + *max_tokens, n_prompt, *max_tokens),
                      "invalid_request_error", max_key};
    }
    longest = std::max(longest, n_prompt);
  }
  // OpenAI's legacy default for completions is 16; chat runs to the end of
  // the context, or as far as the per-request budget allows.
  const int64_t choices = job->choices();
  const int64_t budget = ctx.max_request_tokens;
  if (max_tokens && budget > 0 && *max_tokens > budget / choices) {
    return ApiError{400,
                    absl::StrFormat("%d choices (prompts x n) x \"%s\" %d = %d tokens; this server "
                                    "generates at most %d tokens per request",
                                    choices, max_key, *max_tokens, choices * *max_tokens, budget),
                    "invalid_request_error", max_key};
  }
  if (!max_tokens && budget > 0 && budget < choices) {
    return ApiError{400,
                    absl::StrFormat("%d choices (prompts x n); this server generates at most %d "
                                    "tokens per request",
                                    choices, budget),
                    "invalid_request_error", "n"};
  }
  job->max_tokens = max_tokens.value_or(
      std::min(job->chat ? limit : std::min<int64_t>(16, limit), context - longest));
  if (!max_tokens && budget > 0) job->max_tokens = std::min(job->max_tokens, budget / choices);

  static std::atomic<uint64_t> counter{0};
  job->created = std::time(nullptr);
  job->id = absl::StrFormat("%s-%x%06x", job->chat ? "chatcmpl" : "cmpl", job->created,
                            counter.fetch_add(1) & 0xFFFFFF);
  return std::nullopt;
}

}  // namespace

int64_t MaxPromptBytes(const Tokenizer& tokenizer, int64_t context_length) {
  size_t longest = 1;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id)
    longest = std::max(longest, TokenBytes(tokenizer, id).size());
  return 2 * context_length * static_cast<int64_t>(longest);
}

int64_t CompletionJob::prompt_tokens() const {
  int64_t total = 0;
  for (const std::vector<int32_t>& p : prompts) total += static_cast<int64_t>(p.size());
  return total;
}

std::optional<ApiError> ParseCompletionRequest(const std::string& text, bool chat,
                                               const RequestContext& context, CompletionJob* job) {
  // Before the parser, which recurses once per nesting level.
  if (std::optional<ApiError> e = CheckJsonDepth(text)) return e;
  Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return ApiError{400, "the request body is not valid JSON"};
  if (!body.is_object()) return ApiError{400, "the request body must be a JSON object"};
  *job = CompletionJob{};
  job->chat = chat;
  try {
    return ParseJob(body, context, job);
  } catch (const std::exception& e) {
    // A body shape the checks did not foresee (nlohmann throws on it).
    return ApiError{500, absl::StrCat("internal error: ", e.what()), "internal_error"};
  }
}

}  // namespace retort::serve
