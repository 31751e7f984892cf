// The response JSON, compared as the exact text clients receive.
#include "serve/openai_response.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/serve/request_fixture.h"

namespace retort::serve {
namespace {

CompletionJob Job(bool chat) {
  CompletionJob job;
  job.chat = chat;
  job.id = chat ? "chatcmpl-1" : "cmpl-1";
  job.created = 100;
  job.prompts = {{1, 2, 3}};
  return job;
}

TEST(OpenAiResponseTest, ErrorJson) {
  EXPECT_EQ(
      DumpJson(ErrorJson(ApiError{400, "bad"})),
      R"({"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}})");
  EXPECT_EQ(DumpJson(ErrorJson(UnknownModel("x", "m"))),
            R"j({"error":{"message":"The model `x` does not exist (this server serves `m`)",)j"
            R"("type":"invalid_request_error","param":"model","code":"model_not_found"}})");
}

TEST(OpenAiResponseTest, ModelsAndUsage) {
  Json card = ModelCardJson("m", 5, 64);
  EXPECT_EQ(DumpJson(ModelListJson(card)),
            R"({"object":"list","data":[{"id":"m","object":"model","created":5,)"
            R"("owned_by":"retort","max_model_len":64}]})");
  EXPECT_EQ(DumpJson(UsageJson(Job(false), 4)),
            R"({"prompt_tokens":3,"completion_tokens":4,"total_tokens":7})");
}

TEST(OpenAiResponseTest, NonStreamedChoices) {
  testing::RequestFixture f;
  ChoiceResult r;
  r.text = "<think>x</think>hi";
  r.reasoning = "x";
  r.content = "hi";
  r.saw_reasoning = true;
  r.tokens = {{'h', -0.5f, {}}, {'i', -std::numeric_limits<float>::infinity(), {}}};
  r.offsets = {0, 1};
  r.finish_reason = "stop";
  CompletionJob chat = Job(true);
  EXPECT_EQ(DumpJson(ChoiceJson(chat, *f.tokenizer, 0, r)),
            R"({"index":0,"message":{"role":"assistant","content":"hi","reasoning_content":"x"},)"
            R"("logprobs":null,"finish_reason":"stop","stop_reason":null})");
  chat.top_logprobs = 0;
  chat.return_token_ids = true;
  EXPECT_EQ(DumpJson(ChoiceJson(chat, *f.tokenizer, 1, r)),
            R"({"index":1,"message":{"role":"assistant","content":"hi","reasoning_content":"x"},)"
            R"("logprobs":{"content":[)"
            R"({"token":"h","logprob":-0.5,"bytes":[104],"token_id":104,"top_logprobs":[]},)"
            R"({"token":"i","logprob":-9999.0,"bytes":[105],"token_id":105,"top_logprobs":[]}]},)"
            R"("finish_reason":"stop","stop_reason":null,"token_ids":[104,105]})");
  CompletionJob legacy = Job(false);
  legacy.top_logprobs = 1;
  r.tokens[0].top = {{'j', -2.0f}};
  r.stop_reason = "</s>";
  EXPECT_EQ(DumpJson(ChoiceJson(legacy, *f.tokenizer, 0, r)),
            R"({"index":0,"text":"<think>x</think>hi","logprobs":{"tokens":["h","i"],)"
            R"("token_logprobs":[-0.5,-9999.0],"top_logprobs":[{"h":-0.5,"j":-2.0},{"i":-9999.0}],)"
            R"("text_offset":[0,1],"token_ids":[104,105]},"finish_reason":"stop",)"
            R"("stop_reason":"</s>"})");
  EXPECT_EQ(DumpJson(CompletionJson(legacy, "m", Json::array(), 2)),
            R"({"id":"cmpl-1","object":"text_completion","created":100,"model":"m","choices":[],)"
            R"("usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})");
}

// Echo: vLLM's legacy lists over prompt + completion, the first token's
// log-prob and top_logprobs null, text_offset counting the tokens' code points.
TEST(OpenAiResponseTest, EchoPutsThePromptFirst) {
  testing::RequestFixture f;
  CompletionJob job = Job(false);
  job.prompts = {{'H', 'i'}, {0xC3, 0xA9, 'x'}};
  job.prompt_texts = {"Hi", "\xC3\xA9x"};
  job.echo = true;
  job.top_logprobs = 1;
  ChoiceResult r;
  r.prompt_scores = {{'i', -1.5f, {{'j', -0.5f}}}};
  r.tokens = {{'!', -0.25f, {{'!', -0.25f}}}};
  r.text = "!";
  r.finish_reason = "length";
  EXPECT_EQ(DumpJson(ChoiceJson(job, *f.tokenizer, 0, r)),
            R"({"index":0,"text":"Hi!","logprobs":{"tokens":["H","i","!"],)"
            R"("token_logprobs":[null,-1.5,-0.25],"top_logprobs":[null,{"i":-1.5,"j":-0.5},)"
            R"({"!":-0.25}],"text_offset":[0,1,2],"token_ids":[72,105,33]},)"
            R"("finish_reason":"length","stop_reason":null})");
  // Choice 1 runs prompt 1 (n = 1); nothing generated (max_tokens 0). A
  // byte cut from its character is U+FFFD, one code point.
  r.prompt_scores = {{0xA9, -1.0f, {}}, {'x', -2.0f, {}}};
  r.tokens.clear();
  r.text.clear();
  job.top_logprobs = 0;
  EXPECT_EQ(DumpJson(ChoiceJson(job, *f.tokenizer, 1, r)),
            "{\"index\":1,\"text\":\"\xC3\xA9x\",\"logprobs\":{\"tokens\":[\"\xEF\xBF\xBD\","
            "\"\xEF\xBF\xBD\",\"x\"],\"token_logprobs\":[null,-1.0,-2.0],\"top_logprobs\":[null,"
            "{\"\xEF\xBF\xBD\":-1.0},{\"x\":-2.0}],\"text_offset\":[0,1,2],\"token_ids\":[195,169,"
            "120]},\"finish_reason\":\"length\",\"stop_reason\":null}");
  // Without logprobs, the text alone.
  job.top_logprobs = -1;
  EXPECT_EQ(
      DumpJson(ChoiceJson(job, *f.tokenizer, 0, r)),
      R"({"index":0,"text":"Hi","logprobs":null,"finish_reason":"length","stop_reason":null})");
}

// vLLM's prompt_logprobs: null first, then per token a dict keyed by token
// id (the prompt token first, with its rank, then the top K, ranks 1..K).
TEST(OpenAiResponseTest, PromptLogprobsInVllmLayout) {
  testing::RequestFixture f;
  CompletionJob job = Job(false);
  job.prompts = {{'H', 'i', '!'}};
  job.prompt_logprobs = 1;
  ChoiceResult r;
  // 'i' is not the most likely ('j' is); '!' is, and is its own top-1.
  r.prompt_scores = {{'i', -1.5f, {{'j', -0.5f}, {'k', -2.0f}}, 2},
                     {'!', -0.25f, {{'!', -0.25f}}, 1}};
  r.finish_reason = "length";
  EXPECT_EQ(DumpJson(ChoiceJson(job, *f.tokenizer, 0, r)),
            R"({"index":0,"text":"","logprobs":null,"finish_reason":"length","stop_reason":null,)"
            R"("prompt_logprobs":[null,)"
            R"({"105":{"logprob":-1.5,"rank":2,"decoded_token":"i"},)"
            R"("106":{"logprob":-0.5,"rank":1,"decoded_token":"j"}},)"
            R"({"33":{"logprob":-0.25,"rank":1,"decoded_token":"!"}}]})");
  // K = 0: the prompt token alone; a byte cut from its character is U+FFFD,
  // -inf is -9999.
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(DumpJson(PromptLogprobsJson(*f.tokenizer, {0xC3, 0xA9},
                                        {{0xA9, -inf, {{'a', -0.1f}}, 7}}, 0)),
            "[null,{\"169\":{\"logprob\":-9999.0,\"rank\":7,\"decoded_token\":\"\xEF\xBF\xBD\"}}]");
  // One token: only the null.
  EXPECT_EQ(DumpJson(PromptLogprobsJson(*f.tokenizer, {'x'}, {}, 5)), "[null]");
  // With echo and logprobs 0 the prompt was scored with K = 1 for
  // prompt_logprobs: echo's top_logprobs still hold only the token itself.
  job.echo = true;
  job.top_logprobs = 0;
  job.prompt_texts = {"Hi!"};
  Json choice = ChoiceJson(job, *f.tokenizer, 0, r);
  EXPECT_EQ(DumpJson(choice["logprobs"]["top_logprobs"]), R"([null,{"i":-1.5},{"!":-0.25}])");
  EXPECT_EQ(DumpJson(choice["logprobs"]["token_logprobs"]), "[null,-1.5,-0.25]");
  EXPECT_EQ(choice["prompt_logprobs"].size(), 3u);
}

TEST(OpenAiResponseTest, StreamedChunks) {
  CompletionJob chat = Job(true);
  EXPECT_EQ(SseEvent(ChunkJson(chat, "m", RoleChoiceJson(0))),
            "data: "
            R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":100,"model":"m",)"
            R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,)"
            R"("finish_reason":null}]})"
            "\n\n");
  // A delta carries content unless it only has reasoning.
  EXPECT_EQ(
      DumpJson(TextChoiceJson(chat, 0, TextDelta{"<think>r", "r", ""}, nullptr)),
      R"({"index":0,"delta":{"reasoning_content":"r"},"logprobs":null,"finish_reason":null})");
  EXPECT_EQ(DumpJson(TextChoiceJson(chat, 0, TextDelta{}, nullptr)),
            R"({"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":null})");
  EXPECT_EQ(DumpJson(TextChoiceJson(Job(false), 2, TextDelta{"ab", "", "ab"}, nullptr)),
            R"({"index":2,"text":"ab","logprobs":null,"finish_reason":null,"stop_reason":null})");
  EXPECT_EQ(DumpJson(ReasoningTailChoiceJson(0, TextDelta{"", "", "<thi"})),
            R"({"index":0,"delta":{"content":"<thi"},"logprobs":null,"finish_reason":null})");
  ChoiceResult r;
  r.finish_reason = "length";
  r.tokens = {{7, 0, {}}};
  chat.return_token_ids = true;
  EXPECT_EQ(DumpJson(FinishChoiceJson(chat, 0, r)),
            R"({"index":0,"delta":{},"logprobs":null,"finish_reason":"length","stop_reason":null,)"
            R"("token_ids":[7]})");
  r.finish_reason = "stop";
  r.stop_reason = 42;
  EXPECT_EQ(DumpJson(FinishChoiceJson(Job(false), 0, r)),
            R"({"index":0,"text":"","logprobs":null,"finish_reason":"stop","stop_reason":42})");
  EXPECT_EQ(DumpJson(UsageChunkJson(Job(false), "m", 1)),
            R"({"id":"cmpl-1","object":"text_completion","created":100,"model":"m","choices":[],)"
            R"("usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

}  // namespace
}  // namespace retort::serve
