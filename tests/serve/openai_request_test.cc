// ParseCompletionRequest: typed jobs from request bodies, and the exact
// OpenAI-style errors for bad ones.
#include "serve/openai_request.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "serve/text_util.h"
#include "tests/serve/request_fixture.h"

namespace retort::serve {
namespace {

using testing::kModel;
using testing::RequestFixture;

class OpenAiRequestTest : public ::testing::Test {
 protected:
  std::optional<ApiError> Parse(const Json& body, bool chat, CompletionJob* job = nullptr) {
    CompletionJob local;
    return ParseCompletionRequest(body.dump(), chat, f_.context, job ? job : &local);
  }
  // The error's status, param and that its message contains `fragment`.
  void ExpectError(const Json& body, bool chat, int status, const std::string& param,
                   const std::string& fragment) {
    std::optional<ApiError> e = Parse(body, chat);
    ASSERT_TRUE(e.has_value()) << body.dump();
    EXPECT_EQ(e->status, status) << body.dump();
    EXPECT_EQ(e->param, param) << body.dump();
    EXPECT_NE(e->message.find(fragment), std::string::npos) << e->message;
  }
  static Json Completion(Json extra) {
    Json body = {{"model", kModel}, {"prompt", "Hi"}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }
  static Json Chat(Json extra) {
    Json body = {{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }
  RequestFixture f_;
};

TEST_F(OpenAiRequestTest, CompletionDefaults) {
  CompletionJob job;
  ASSERT_FALSE(Parse(Completion(Json::object()), false, &job));
  EXPECT_FALSE(job.chat);
  EXPECT_EQ(job.prompts, std::vector<std::vector<int32_t>>{retort::testing::ByteIds("Hi")});
  EXPECT_EQ(job.choices(), 1);
  EXPECT_FALSE(job.echo);
  EXPECT_EQ(job.n, 1);
  EXPECT_EQ(job.max_tokens, 16);  // OpenAI's legacy default
  EXPECT_EQ(job.sampler.temperature, 1.0f);
  EXPECT_FALSE(job.seeded);
  EXPECT_EQ(job.stop_ids, std::vector<int32_t>{retort::testing::kEndId});
  EXPECT_EQ(job.silent_stop_id, retort::testing::kEndId);
  EXPECT_EQ(job.top_logprobs, -1);
  EXPECT_EQ(job.id.rfind("cmpl-", 0), 0u) << job.id;
  EXPECT_GT(job.created, 0);
}

TEST_F(OpenAiRequestTest, CompletionFields) {
  CompletionJob job;
  ASSERT_FALSE(Parse(Completion({{"prompt", {5, 6, 7}},
                                 {"n", 3},
                                 {"max_tokens", 10},
                                 {"temperature", 0},
                                 {"top_k", 4},
                                 {"seed", 9},
                                 {"stop", {"a", "bc"}},
                                 {"ignore_eos", true},
                                 {"stop_token_ids", {258}},
                                 {"logprobs", 2},
                                 {"stream", true},
                                 {"stream_options", {{"include_usage", true}}},
                                 {"return_token_ids", true}}),
                     false, &job));
  EXPECT_EQ(job.prompts, (std::vector<std::vector<int32_t>>{{5, 6, 7}}));
  EXPECT_EQ(job.n, 3);
  EXPECT_EQ(job.max_tokens, 10);
  EXPECT_EQ(job.sampler.temperature, 0.0f);
  EXPECT_EQ(job.sampler.top_k, 4);
  EXPECT_TRUE(job.seeded);
  EXPECT_EQ(job.sampler.seed, 9u);
  EXPECT_EQ(job.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(job.stop_ids, std::vector<int32_t>{258});
  EXPECT_EQ(job.silent_stop_id, -1);  // ignore_eos
  EXPECT_EQ(job.top_logprobs, 2);
  EXPECT_TRUE(job.stream);
  EXPECT_TRUE(job.include_usage);
  EXPECT_TRUE(job.return_token_ids);
}

TEST_F(OpenAiRequestTest, ChatRendersTheTemplate) {
  CompletionJob job;
  ASSERT_FALSE(Parse(Chat({{"max_completion_tokens", 5}, {"logprobs", true}}), true, &job));
  EXPECT_TRUE(job.chat);
  EXPECT_EQ(job.id.rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(job.prompts.size(), 1u);
  EXPECT_EQ(f_.tokenizer->Decode(job.prompts[0], false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(job.max_tokens, 5);
  EXPECT_EQ(job.top_logprobs, 0);
  EXPECT_FALSE(job.starts_in_reasoning);
  // Chat runs to the end of the context (or the server's limit).
  ASSERT_FALSE(Parse(Chat(Json::object()), true, &job));
  EXPECT_EQ(job.max_tokens, std::min<int64_t>(48, 64 - job.prompt_tokens()));
}

TEST_F(OpenAiRequestTest, ChatPromptEndingInThinkStartsInReasoning) {
  CompletionJob job;
  ASSERT_FALSE(Parse(Chat({{"chat_template_kwargs", {{"think", true}}}}), true, &job));
  EXPECT_TRUE(job.starts_in_reasoning);
}

TEST_F(OpenAiRequestTest, ChatContentParts) {
  CompletionJob job;
  Json parts = {
      {{"role", "user"},
       {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}}};
  ASSERT_FALSE(Parse(Chat({{"messages", parts}}), true, &job));
  EXPECT_NE(f_.tokenizer->Decode(job.prompts[0], false).find("user\na\nb<|im_end|>"),
            std::string::npos);
}

TEST_F(OpenAiRequestTest, BadBodies) {
  CompletionJob job;
  std::optional<ApiError> e = ParseCompletionRequest("{not json", false, f_.context, &job);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->message, "the request body is not valid JSON");
  e = ParseCompletionRequest("[1, 2]", true, f_.context, &job);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "the request body must be a JSON object");
}

TEST_F(OpenAiRequestTest, FieldErrorsNameTheField) {
  ExpectError({{"model", kModel}}, false, 400, "prompt", "\"prompt\" is required");
  ExpectError(Completion({{"temperature", "hot"}}), false, 400, "temperature",
              "\"temperature\": expected a number in [0, 100]");
  ExpectError(Completion({{"temperature", -1}}), false, 400, "temperature", "got -1");
  ExpectError(Completion({{"top_p", 0}}), false, 400, "top_p", "a number in (0, 1]");
  ExpectError(Completion({{"max_tokens", 0}}), false, 400, "max_tokens", "an integer in [1, ");
  ExpectError(Completion({{"max_tokens", 2.5}}), false, 400, "max_tokens", "an integer");
  ExpectError(Completion({{"max_tokens", 49}}), false, 400, "max_tokens",
              "\"max_tokens\" is 49; this server allows at most 48");
  ExpectError(Completion({{"max_tokens", 48}, {"prompt", std::string(20, 'x')}}), false, 400,
              "max_tokens",
              "This model's maximum context length is 64 tokens. However, you requested 68 tokens "
              "(20 in the prompt, 48 in the completion).");
  ExpectError(Completion({{"prompt", std::string(64, 'x')}}), false, 400, "prompt",
              "the prompt has 64 tokens; this model's maximum context length is 64 tokens");
  ExpectError(Completion({{"n", 17}}), false, 400, "n", "an integer in [1, 16], got 17");
  ExpectError(Completion({{"stop", 5}}), false, 400, "stop",
              "a string or a list of at most 16 strings");
  ExpectError(Completion({{"stop", {""}}}), false, 400, "stop", "non-empty strings");
  ExpectError(Completion({{"logprobs", 21}}), false, 400, "logprobs", "[0, 20]");
  ExpectError(Completion({{"prompt", {1, 300}}}), false, 400, "prompt",
              "token ids in [0, 300), got 300");
  ExpectError(Completion({{"prompt", ""}}), false, 400, "prompt",
              "the prompt is empty (no tokens)");
  ExpectError(Completion({{"stream", "yes"}}), false, 400, "stream", "true or false");
  ExpectError(Completion({{"stop_token_ids", {-1}}}), false, 400, "stop_token_ids",
              "token ids in [0, 300)");
  ExpectError(Completion({{"stream_options", 1}}), false, 400, "stream_options", "an object");
}

TEST_F(OpenAiRequestTest, RefusedFeatures) {
  ExpectError(Completion({{"best_of", 2}}), false, 400, "best_of", "\"best_of\" > 1");
  ExpectError(Completion({{"suffix", "x"}}), false, 400, "suffix", "\"suffix\" is not supported");
  ExpectError(Completion({{"logit_bias", {{"5", 1}}}}), false, 400, "logit_bias", "not supported");
  ExpectError(Completion({{"presence_penalty", 0.5}}), false, 400, "presence_penalty",
              "(use repetition_penalty)");
  // Neutral values are accepted.
  EXPECT_FALSE(
      Parse(Completion({{"best_of", 1}, {"logit_bias", Json::object()}, {"frequency_penalty", 0}}),
            false));
}

TEST_F(OpenAiRequestTest, StructuredOutputAndToolsAreRefused) {
  for (bool chat : {false, true}) {
    auto body = [&](Json extra) { return chat ? Chat(extra) : Completion(extra); };
    ExpectError(body({{"response_format", {{"type", "json_object"}}}}), chat, 400,
                "response_format",
                "\"response_format\" is not supported: this server does no constrained decoding");
    ExpectError(
        body({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}}}}),
        chat, 400, "response_format", "not supported");
    const Json tool = {{"type", "function"}, {"function", {{"name", "f"}}}};
    ExpectError(body({{"tools", Json::array({tool})}}), chat, 400, "tools",
                "\"tools\" is not supported: this server does no tool calling");
    ExpectError(body({{"tools", "f"}}), chat, 400, "tools", "not supported");
    ExpectError(body({{"tool_choice", "auto"}}), chat, 400, "tool_choice", "no tool calling");
    ExpectError(body({{"functions", Json::array({{{"name", "f"}}})}}), chat, 400, "functions",
                "no tool calling");
    ExpectError(body({{"function_call", "auto"}}), chat, 400, "function_call", "no tool calling");
    // The neutral values are accepted.
    EXPECT_FALSE(Parse(body({{"response_format", {{"type", "text"}}},
                             {"tools", Json::array()},
                             {"tool_choice", "none"}}),
                       chat));
  }
}

TEST_F(OpenAiRequestTest, PromptListsGiveOneChoicePerPromptAndN) {
  using retort::testing::ByteIds;
  using Prompts = std::vector<std::vector<int32_t>>;
  CompletionJob job;
  ASSERT_FALSE(Parse(Completion({{"prompt", {"Hi", "cde"}}, {"n", 2}}), false, &job));
  EXPECT_EQ(job.prompts, (Prompts{ByteIds("Hi"), ByteIds("cde")}));
  EXPECT_EQ(job.choices(), 4);
  EXPECT_EQ(job.prompt_of(1), ByteIds("Hi"));
  EXPECT_EQ(job.prompt_of(2), ByteIds("cde"));
  EXPECT_EQ(job.prompt_tokens(), 5);
  EXPECT_TRUE(job.prompt_texts.empty());  // kept for echo only
  // Token-id lists (lm-evaluation-harness's tokenized requests), one or several.
  ASSERT_FALSE(Parse(Completion({{"prompt", {{5, 6, 7}, {8}}}}), false, &job));
  EXPECT_EQ(job.prompts, (Prompts{{5, 6, 7}, {8}}));
  ASSERT_FALSE(Parse(Completion({{"prompt", {{5, 6}}}}), false, &job));
  EXPECT_EQ(job.prompts, (Prompts{{5, 6}}));
  ASSERT_FALSE(Parse(Completion({{"prompt", {"Hi"}}}), false, &job));
  EXPECT_EQ(job.prompts, (Prompts{ByteIds("Hi")}));

  const std::string expected =
      "a string, a list of strings, a non-empty list of token ids or a list of them";
  ExpectError(Completion({{"prompt", Json::array()}}), false, 400, "prompt", expected);
  ExpectError(Completion({{"prompt", {"a", 5}}}), false, 400, "prompt", expected);
  ExpectError(Completion({{"prompt", {{1, 2}, Json::array()}}}), false, 400, "prompt", expected);
  ExpectError(Completion({{"prompt", {{1, 2}, {3, 300}}}}), false, 400, "prompt",
              "token ids in [0, 300), got 300");
  ExpectError(Completion({{"prompt", {"ab", ""}}}), false, 400, "prompt",
              "prompt 1 is empty (no tokens)");
  ExpectError(Completion({{"prompt", {"ab", std::string(64, 'x')}}}), false, 400, "prompt",
              "prompt 1 has 64 tokens; this model's maximum context length is 64 tokens");
  ExpectError(Completion({{"prompt", {"ab", std::string(20, 'x')}}, {"max_tokens", 45}}), false,
              400, "max_tokens", "prompt 1: This model's maximum context length is 64 tokens.");
  ExpectError(Completion({{"prompt", Json(std::vector<std::string>(513, "a"))}, {"n", 2}}), false,
              400, "prompt",
              "513 prompts x n = 2 is 1026 choices; this server allows at most 1024");
}

TEST_F(OpenAiRequestTest, EchoKeepsThePromptTextAndMayScoreOnly) {
  using retort::testing::ByteIds;
  CompletionJob job;
  // lm-evaluation-harness's log-likelihood request (it sends max_tokens 1; 0 scores only).
  ASSERT_FALSE(Parse(Completion({{"prompt", {"Hi", "cde"}},
                                 {"echo", true},
                                 {"logprobs", 1},
                                 {"max_tokens", 0},
                                 {"temperature", 0}}),
                     false, &job));
  EXPECT_TRUE(job.echo);
  EXPECT_EQ(job.max_tokens, 0);
  EXPECT_EQ(job.top_logprobs, 1);
  EXPECT_EQ(job.prompt_texts, (std::vector<std::string>{"Hi", "cde"}));
  // Token ids are decoded for the text.
  ASSERT_FALSE(Parse(Completion({{"prompt", ByteIds("ok")}, {"echo", true}, {"max_tokens", 1}}),
                     false, &job));
  EXPECT_EQ(job.prompt_texts, std::vector<std::string>{"ok"});
  EXPECT_EQ(job.max_tokens, 1);
  // Scoring alone may fill the context; generating needs room.
  EXPECT_FALSE(Parse(
      Completion({{"prompt", std::string(64, 'x')}, {"echo", true}, {"max_tokens", 0}}), false));
  ExpectError(Completion({{"prompt", std::string(64, 'x')}, {"echo", true}}), false, 400, "prompt",
              "the prompt has 64 tokens");
  ExpectError(Completion({{"prompt", std::string(65, 'x')}, {"echo", true}, {"max_tokens", 0}}),
              false, 400, "prompt", "the prompt has 65 tokens");
  // max_tokens 0 means nothing without echo.
  ExpectError(Completion({{"max_tokens", 0}}), false, 400, "max_tokens", "an integer in [1, ");
  ExpectError(Completion({{"echo", true}, {"stream", true}}), false, 400, "echo",
              "\"echo\" with \"stream\" is not supported");
  ExpectError(Chat({{"echo", true}}), true, 400, "echo",
              "\"echo\" is only supported by /v1/completions");
}

// vLLM's prompt_logprobs: K >= 0 alternatives per prompt token, for text or
// token-id prompts and lists of them; like echo it may score only.
TEST_F(OpenAiRequestTest, PromptLogprobs) {
  using retort::testing::ByteIds;
  CompletionJob job;
  ASSERT_FALSE(Parse(Completion(Json::object()), false, &job));
  EXPECT_EQ(job.prompt_logprobs, -1);
  EXPECT_FALSE(job.scores_prompt());
  ASSERT_FALSE(Parse(Completion({{"prompt", {5, 6, 7}}, {"prompt_logprobs", 3}, {"max_tokens", 1}}),
                     false, &job));
  EXPECT_EQ(job.prompt_logprobs, 3);
  EXPECT_EQ(job.prompts, (std::vector<std::vector<int32_t>>{{5, 6, 7}}));
  EXPECT_FALSE(job.echo);
  EXPECT_EQ(job.top_logprobs, -1);
  EXPECT_TRUE(job.scores_prompt());
  EXPECT_EQ(job.prompt_top_k(), 3);
  ASSERT_FALSE(Parse(Completion({{"prompt", {"Hi", "cde"}}, {"prompt_logprobs", 0}}), false, &job));
  EXPECT_EQ(job.prompt_logprobs, 0);
  EXPECT_EQ(job.prompts, (std::vector<std::vector<int32_t>>{ByteIds("Hi"), ByteIds("cde")}));
  EXPECT_EQ(job.prompt_top_k(), 0);
  ASSERT_FALSE(Parse(
      Completion(
          {{"prompt", {ByteIds("ab"), ByteIds("c")}}, {"prompt_logprobs", 20}, {"max_tokens", 0}}),
      false, &job));
  EXPECT_EQ(job.prompts.size(), 2u);
  EXPECT_EQ(job.prompt_logprobs, 20);
  EXPECT_EQ(job.max_tokens, 0);  // score only, as with echo
  // With echo and logprobs, the prompt is scored once with the larger K.
  ASSERT_FALSE(
      Parse(Completion({{"echo", true}, {"logprobs", 5}, {"prompt_logprobs", 2}}), false, &job));
  EXPECT_EQ(job.prompt_top_k(), 5);
  ASSERT_FALSE(
      Parse(Completion({{"echo", true}, {"logprobs", 1}, {"prompt_logprobs", 4}}), false, &job));
  EXPECT_EQ(job.prompt_top_k(), 4);
  // null is absent.
  ASSERT_FALSE(Parse(Completion({{"prompt_logprobs", nullptr}}), false, &job));
  EXPECT_EQ(job.prompt_logprobs, -1);

  ExpectError(Completion({{"prompt_logprobs", -1}}), false, 400, "prompt_logprobs",
              "\"prompt_logprobs\": expected an integer in [0, 20], got -1");
  ExpectError(Completion({{"prompt_logprobs", 21}}), false, 400, "prompt_logprobs", "got 21");
  ExpectError(Completion({{"prompt_logprobs", 1.5}}), false, 400, "prompt_logprobs",
              "an integer in [0, 20]");
  ExpectError(Completion({{"prompt_logprobs", "3"}}), false, 400, "prompt_logprobs",
              "an integer in [0, 20]");
  ExpectError(Completion({{"prompt_logprobs", true}}), false, 400, "prompt_logprobs",
              "an integer in [0, 20]");
  ExpectError(Completion({{"prompt_logprobs", 1}, {"stream", true}}), false, 400, "prompt_logprobs",
              "\"prompt_logprobs\" with \"stream\" is not supported");
  ExpectError(Chat({{"prompt_logprobs", 1}}), true, 400, "prompt_logprobs",
              "\"prompt_logprobs\" is only supported by /v1/completions");
  // Scoring alone may fill the context; generating needs room.
  EXPECT_FALSE(Parse(
      Completion({{"prompt", std::string(64, 'x')}, {"prompt_logprobs", 1}, {"max_tokens", 0}}),
      false));
  ExpectError(Completion({{"prompt", std::string(64, 'x')}, {"prompt_logprobs", 1}}), false, 400,
              "prompt", "the prompt has 64 tokens");
}

TEST_F(OpenAiRequestTest, ChatErrors) {
  ExpectError(Chat({{"messages", "hi"}}), true, 400, "messages", "a non-empty list");
  ExpectError(Chat({{"messages", Json::array()}}), true, 400, "messages", "a non-empty list");
  ExpectError(Chat({{"messages", {{{"content", "no role"}}}}}), true, 400, "messages[0].role",
              "a string");
  ExpectError(Chat({{"messages", {{{"role", "user"}, {"content", 7}}}}}), true, 400,
              "messages[0].content", "a string, a list of text parts or null");
  ExpectError(Chat({{"top_logprobs", 3}}), true, 400, "top_logprobs",
              "\"top_logprobs\" requires \"logprobs\": true");
  ExpectError(Chat({{"logprobs", true}, {"top_logprobs", 21}}), true, 400, "top_logprobs",
              "[0, 20]");
  ExpectError(Chat({{"logprobs", 2}}), true, 400, "logprobs", "true or false");
  ExpectError(Chat({{"chat_template_kwargs", 1}}), true, 400, "chat_template_kwargs", "an object");
}

// A content part whose "type" is not a string (or is missing) is the client's
// error, not the server's.
TEST_F(OpenAiRequestTest, ContentPartsOfAnyShapeGet400) {
  for (const Json& part :
       {Json{{"type", 5}, {"text", "x"}}, Json{{"type", Json::array()}},
        Json{{"type", nullptr}, {"text", "x"}}, Json{{"text", "x"}}, Json{{"type", "image_url"}},
        Json{{"type", "text"}, {"text", 3}}, Json("text"), Json(7)}) {
    SCOPED_TRACE(part.dump());
    ExpectError(Chat({{"messages", {{{"role", "user"}, {"content", Json::array({part})}}}}}), true,
                400, "messages[0].content", "a string or a list of {\"type\": \"text\"");
  }
}

// Nesting is bounded before the parser sees the body: 200,000 levels would
// overflow its recursion.
TEST_F(OpenAiRequestTest, DeeplyNestedBodyIs400BeforeParsing) {
  const int depth = 200000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  CompletionJob job;
  for (bool chat : {false, true}) {
    const std::string body = chat ? R"({"messages": [{"role": "user", "content": )" + deep + "}]}"
                                  : R"({"prompt": )" + deep + "}";
    std::optional<ApiError> e = ParseCompletionRequest(body, chat, f_.context, &job);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, 400);
    EXPECT_NE(e->message.find("nests arrays/objects more than 64 levels deep"), std::string::npos)
        << e->message;
  }
  // 64 levels are fine as far as nesting goes (then refused as a bad prompt).
  std::optional<ApiError> e =
      ParseCompletionRequest(R"({"prompt": )" + std::string(63, '[') + std::string(63, ']') + "}",
                             false, f_.context, &job);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "prompt");
}

TEST_F(OpenAiRequestTest, RequestTokenBudgetBoundsChoicesTimesMaxTokens) {
  f_.context.max_request_tokens = 40;
  CompletionJob job;
  ASSERT_FALSE(Parse(Completion({{"n", 4}, {"max_tokens", 10}}), false, &job));
  EXPECT_EQ(job.max_tokens, 10);
  ExpectError(Completion({{"n", 4}, {"max_tokens", 11}}), false, 400, "max_tokens",
              "4 choices (prompts x n) x \"max_tokens\" 11 = 44 tokens; this server generates at "
              "most 40 tokens per request");
  ExpectError(Completion({{"prompt", {"a", "b"}}, {"n", 3}, {"max_tokens", 7}}), false, 400,
              "max_tokens", "6 choices (prompts x n) x \"max_tokens\" 7 = 42 tokens");
  ExpectError(Chat({{"n", 4}, {"max_completion_tokens", 11}}), true, 400, "max_completion_tokens",
              "= 44 tokens");
  // Left out, max_tokens is lowered to fit: a chat runs to the context
  // otherwise (12 tokens after the 52 of the prompt).
  ASSERT_FALSE(Parse(Chat({{"n", 4}}), true, &job));
  EXPECT_EQ(job.max_tokens, 10);
  ASSERT_FALSE(Parse(Chat(Json::object()), true, &job));
  EXPECT_EQ(job.max_tokens, 12);
  ASSERT_FALSE(Parse(Completion({{"n", 16}}), false, &job));
  EXPECT_EQ(job.max_tokens, 2);
  ExpectError(Completion({{"prompt", Json::array({"a", "b", "c"})}, {"n", 16}}), false, 400, "n",
              "48 choices (prompts x n); this server generates at most 40 tokens per request");
  // 0: no budget.
  f_.context.max_request_tokens = 0;
  EXPECT_FALSE(Parse(Completion({{"n", 16}, {"max_tokens", 48}}), false));
}

// Bounds checked before the template renders or the tokenizer runs: 270,000
// empty messages once cost 441 MB before the length check refused them.
TEST_F(OpenAiRequestTest, MessageCountAndPromptBytesAreBoundedBeforeRendering) {
  // At most one message per context token (64 here).
  Json messages = Json::array();
  for (int i = 0; i < 65; ++i) messages.push_back({{"role", "user"}, {"content", ""}});
  ExpectError(Chat({{"messages", messages}}), true, 400, "messages",
              "65 messages; this server takes at most 64 in one request");
  messages = Json::array();
  for (int i = 0; i < 270000; ++i) messages.push_back({{"role", "user"}, {"content", ""}});
  ExpectError(Chat({{"messages", messages}}), true, 400, "messages", "270000 messages");

  f_.context.max_prompt_bytes = MaxPromptBytes(*f_.tokenizer, f_.context.context_length);
  ASSERT_GT(f_.context.max_prompt_bytes, 0);
  const int64_t over = f_.context.max_prompt_bytes + 1;
  ExpectError(
      Completion({{"prompt", std::string(over, 'x')}}), false, 400, "prompt",
      absl::StrCat("the prompt is ", over, " bytes; no text over ", f_.context.max_prompt_bytes,
                   " bytes fits this model's context of 64 tokens"));
  ExpectError(Completion({{"prompt", {"a", std::string(over, 'x')}}}), false, 400, "prompt",
              "bytes fits this model's context");
  // Content parts count too, and so do several messages together.
  const std::string half(over / 2 + 1, 'x');
  ExpectError(Chat({{"messages",
                     {{{"role", "user"}, {"content", half}},
                      {{"role", "user"}, {"content", {{{"type", "text"}, {"text", half}}}}}}}}),
              true, 400, "messages", "bytes of content; no text over");
  // Below the bound the usual token count decides.
  ExpectError(Completion({{"prompt", std::string(100, 'x')}}), false, 400, "prompt",
              "the prompt has 100 tokens");
}

TEST(MaxPromptBytesTest, IsTheContextOfLongestTokensTwice) {
  std::unique_ptr<Tokenizer> t = retort::testing::MakeByteTokenizer();
  size_t longest = 1;
  for (int32_t id = 0; id < t->vocab_size(); ++id)
    longest = std::max(longest, TokenBytes(*t, id).size());
  EXPECT_EQ(MaxPromptBytes(*t, 64), 2 * 64 * static_cast<int64_t>(longest));
  // No tokenizer's text of that many bytes can encode to fewer tokens than
  // the context: each token covers at most `longest` bytes.
  EXPECT_GE(static_cast<int64_t>(t->Encode(std::string(MaxPromptBytes(*t, 64), 'x'), false).size()),
            64);
}

TEST_F(OpenAiRequestTest, UnknownModelIs404) {
  std::optional<ApiError> e = Parse(Chat({{"model", "gpt-4o"}}), true);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 404);
  EXPECT_EQ(e->code, "model_not_found");
  EXPECT_EQ(e->message, "The model `gpt-4o` does not exist (this server serves `tiny-test`)");
}

TEST_F(OpenAiRequestTest, NoChatTemplateRefusesChat) {
  f_.context.chat_template = nullptr;
  ExpectError(Chat(Json::object()), true, 400, "messages",
              "model tiny-test has no chat template; use /v1/completions");
}

}  // namespace
}  // namespace retort::serve
