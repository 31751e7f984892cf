// ParseCompletionRequest: typed jobs from request bodies, and the exact
// OpenAI-style errors for bad ones.
#include "serve/openai_request.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gtest/gtest.h"
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
  EXPECT_EQ(job.prompt, retort::testing::ByteIds("Hi"));
  EXPECT_EQ(job.n, 1);
  EXPECT_EQ(job.max_tokens, 16);  // OpenAI's legacy default
  EXPECT_EQ(job.sampler.temperature, 1.0f);
  EXPECT_FALSE(job.seeded);
  EXPECT_EQ(job.stop_ids, std::vector<int32_t>{retort::testing::kEndId});
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
  EXPECT_EQ(job.prompt, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(job.n, 3);
  EXPECT_EQ(job.max_tokens, 10);
  EXPECT_EQ(job.sampler.temperature, 0.0f);
  EXPECT_EQ(job.sampler.top_k, 4);
  EXPECT_TRUE(job.seeded);
  EXPECT_EQ(job.sampler.seed, 9u);
  EXPECT_EQ(job.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(job.stop_ids, std::vector<int32_t>{258});
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
  EXPECT_EQ(f_.tokenizer->Decode(job.prompt, false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(job.max_tokens, 5);
  EXPECT_EQ(job.top_logprobs, 0);
  EXPECT_FALSE(job.starts_in_reasoning);
  // Chat runs to the end of the context (or the server's limit).
  ASSERT_FALSE(Parse(Chat(Json::object()), true, &job));
  EXPECT_EQ(job.max_tokens, std::min<int64_t>(48, 64 - static_cast<int64_t>(job.prompt.size())));
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
  EXPECT_NE(f_.tokenizer->Decode(job.prompt, false).find("user\na\nb<|im_end|>"),
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
  ExpectError(Completion({{"prompt", {"a", "b"}}}), false, 400, "prompt",
              "several prompts in one request are not supported: send one request per prompt");
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
  ExpectError(Completion({{"echo", true}}), false, 400, "echo", "\"echo\" is not supported");
  ExpectError(Completion({{"best_of", 2}}), false, 400, "best_of", "\"best_of\" > 1");
  ExpectError(Completion({{"suffix", "x"}}), false, 400, "suffix", "\"suffix\" is not supported");
  ExpectError(Completion({{"logit_bias", {{"5", 1}}}}), false, 400, "logit_bias", "not supported");
  ExpectError(Completion({{"presence_penalty", 0.5}}), false, 400, "presence_penalty",
              "(use repetition_penalty)");
  // Neutral values are accepted.
  EXPECT_FALSE(Parse(Completion({{"echo", false},
                                 {"best_of", 1},
                                 {"logit_bias", Json::object()},
                                 {"frequency_penalty", 0}}),
                     false));
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
