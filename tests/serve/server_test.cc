// ApiServer over a scripted Generator: whole answers and SSE streams as the
// routes send them, without sockets (tests/cli/serve_test.cc covers HTTP).
#include "serve/server.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "core/file.h"
#include "gtest/gtest.h"
#include "tests/serve/request_fixture.h"

namespace retort::serve {
namespace {

using retort::testing::ByteIds;
using retort::testing::kEndThinkId;
using retort::testing::kThinkId;

// Emits a fixed token script with finish reasons as BatchedGenerator gives
// them: "stop" on a stop id (not reported, named in stop_id), "length",
// "cancelled". Scores prompt token t at -t / 8 with rank t, its top-K 'a',
// 'b', ... at -(k + 1) / 16.
class ScriptedGenerator : public Generator {
 public:
  explicit ScriptedGenerator(std::vector<int32_t> script) : script_(std::move(script)) {}
  absl::StatusOr<SequenceEnd> Generate(const SequenceRequest& request,
                                       const TokenCallback& on_token) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      seeds_.push_back(request.sampler.seed);
    }
    for (int64_t i = 0; i < static_cast<int64_t>(script_.size()); ++i) {
      if (i == request.max_new_tokens) return SequenceEnd{"length"};
      const int32_t id = script_[i];
      for (int32_t s : request.stop_ids) {
        if (s == id) return SequenceEnd{"stop", id};
      }
      GeneratedToken t{id, -0.25f, {}};
      for (int k = 0; k < request.top_logprobs; ++k) t.top.emplace_back(id, -0.25f);
      if (!on_token(t)) return SequenceEnd{"cancelled"};
    }
    return SequenceEnd{"length"};
  }
  absl::StatusOr<std::vector<GeneratedToken>> ScorePrompt(const std::vector<int32_t>& prompt,
                                                          int top_logprobs) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++scored_;
    std::vector<GeneratedToken> out;
    for (size_t t = 1; t < prompt.size(); ++t) {
      GeneratedToken g{prompt[t], -0.125f * static_cast<float>(t), {}, static_cast<int32_t>(t)};
      for (int k = 0; k < top_logprobs; ++k) g.top.emplace_back('a' + k, -0.0625f * (k + 1));
      out.push_back(std::move(g));
    }
    return out;
  }
  std::vector<uint64_t> seeds() {
    std::lock_guard<std::mutex> lock(mu_);
    return seeds_;
  }
  int scored() {
    std::lock_guard<std::mutex> lock(mu_);
    return scored_;
  }

 private:
  std::vector<int32_t> script_;
  std::mutex mu_;
  std::vector<uint64_t> seeds_;
  int scored_ = 0;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.max_position_embeddings = 64;
    config_.vocab_size = 300;
    config_.eos_token_ids = {retort::testing::kEndId};
    options_.model_name = testing::kModel;
    options_.max_tokens_limit = 48;
  }
  std::unique_ptr<ApiServer> Server(Generator& g) {
    return std::make_unique<ApiServer>(options_, *f_.tokenizer, &*f_.chat_template, config_, g);
  }
  static Json Completion(Json extra) {
    Json body = {{"prompt", "Hi"}, {"max_tokens", 20}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }
  static Json Chat(Json extra) {
    // The rendered prompt is 52 tokens of the 64 in the context.
    Json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 10}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }
  // The parsed chunks of a stream; `done` says it ended with [DONE].
  std::vector<Json> StreamChunks(ApiServer& api, const Json& body, bool chat, bool* done,
                                 int fail_after = -1) {
    CompletionJob job;
    EXPECT_FALSE(api.Parse(body.dump(), chat, &job));
    std::vector<std::string> events;
    api.Stream(
        job,
        [&](std::string_view bytes) {
          if (fail_after >= 0 && static_cast<int>(events.size()) >= fail_after) return false;
          events.emplace_back(bytes);
          return true;
        },
        [&] { return fail_after < 0; });
    *done = !events.empty() && events.back() == kSseDone;
    std::vector<Json> chunks;
    for (const std::string& e : events) {
      if (e == kSseDone) continue;
      EXPECT_EQ(e.rfind("data: ", 0), 0u) << e;
      EXPECT_EQ(e.substr(e.size() - 2), "\n\n") << e;
      chunks.push_back(Json::parse(e.substr(6)));
    }
    return chunks;
  }
  Json Answer(ApiServer& api, const Json& body, bool chat) {
    CompletionJob job;
    EXPECT_FALSE(api.Parse(body.dump(), chat, &job));
    Json answer;
    EXPECT_FALSE(api.Complete(job, &answer));
    return answer;
  }

  testing::RequestFixture f_;
  ModelConfig config_;
  ServeOptions options_;
};

TEST_F(ServerTest, CompletionRunsToLengthOrStop) {
  ScriptedGenerator g(ByteIds("hello world"));
  auto api = Server(g);
  Json a = Answer(*api, Completion({{"max_tokens", 5}}), false);
  EXPECT_EQ(a["object"], "text_completion");
  EXPECT_EQ(a["model"], testing::kModel);
  EXPECT_EQ(a["choices"][0]["text"], "hello");
  EXPECT_EQ(a["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(a["usage"]["completion_tokens"], 5);
  EXPECT_EQ(a["usage"]["prompt_tokens"], 2);

  ScriptedGenerator eos({'o', 'k', retort::testing::kEndId, 'x'});
  auto api2 = Server(eos);
  a = Answer(*api2, Completion(Json::object()), false);
  EXPECT_EQ(a["choices"][0]["text"], "ok");
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, StopStringEndsWithStop) {
  ScriptedGenerator g(ByteIds("one. two. three."));
  auto api = Server(g);
  Json a = Answer(*api, Completion({{"stop", ". t"}}), false);
  EXPECT_EQ(a["choices"][0]["text"], "one");
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(a["usage"]["completion_tokens"], 6);  // "one. t" was generated
}

TEST_F(ServerTest, SeededChoicesUseSeedPlusIndex) {
  ScriptedGenerator g(ByteIds("abc"));
  auto api = Server(g);
  Json a = Answer(*api, Completion({{"n", 3}, {"seed", 40}}), false);
  ASSERT_EQ(a["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a["choices"][i]["index"], i);
  std::vector<uint64_t> seeds = g.seeds();
  std::sort(seeds.begin(), seeds.end());
  EXPECT_EQ(seeds, (std::vector<uint64_t>{40, 41, 42}));
}

TEST_F(ServerTest, SeveralPromptsGiveChoicesInPromptMajorOrder) {
  ScriptedGenerator g(ByteIds("xyz"));
  auto api = Server(g);
  Json a = Answer(*api, Completion({{"prompt", {"a", "bc"}}, {"n", 2}, {"seed", 7}}), false);
  ASSERT_EQ(a["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(a["choices"][i]["index"], i);
    EXPECT_EQ(a["choices"][i]["text"], "xyz");
  }
  std::vector<uint64_t> seeds = g.seeds();
  std::sort(seeds.begin(), seeds.end());
  EXPECT_EQ(seeds, (std::vector<uint64_t>{7, 7, 8, 8}));  // each prompt's choices: seed + i
  EXPECT_EQ(a["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(a["usage"]["completion_tokens"], 12);
}

// lm-evaluation-harness's log-likelihood request: echo, logprobs 1, a list
// of prompts, max_tokens 1 (what it sends) or 0 (score only).
TEST_F(ServerTest, EchoReturnsThePromptLogprobs) {
  ScriptedGenerator g(ByteIds("hello"));
  auto api = Server(g);
  for (int max_tokens : {0, 1}) {
    SCOPED_TRACE(max_tokens);
    Json a = Answer(*api,
                    Completion({{"prompt", {"Hi", "cde"}},
                                {"echo", true},
                                {"logprobs", 1},
                                {"max_tokens", max_tokens},
                                {"temperature", 0}}),
                    false);
    ASSERT_EQ(a["choices"].size(), 2u);
    const std::string gen = max_tokens ? "h" : "";
    EXPECT_EQ(a["choices"][0]["text"], "Hi" + gen);
    EXPECT_EQ(a["choices"][1]["text"], "cde" + gen);
    EXPECT_EQ(a["choices"][1]["index"], 1);
    EXPECT_EQ(a["choices"][1]["finish_reason"], "length");
    EXPECT_TRUE(a["choices"][1]["stop_reason"].is_null());
    const Json& lp = a["choices"][1]["logprobs"];
    Json tokens = {"c", "d", "e"}, logprobs = {nullptr, -0.125, -0.25};
    Json tops = {nullptr, {{"d", -0.125}, {"a", -0.0625}}, {{"e", -0.25}, {"a", -0.0625}}};
    Json offsets = {0, 1, 2};
    if (max_tokens) {
      tokens.push_back("h");
      logprobs.push_back(-0.25);
      tops.push_back({{"h", -0.25}});
      offsets.push_back(3);
    }
    EXPECT_EQ(lp["tokens"], tokens);
    EXPECT_EQ(lp["token_logprobs"], logprobs);
    EXPECT_EQ(lp["top_logprobs"], tops);
    EXPECT_EQ(lp["text_offset"], offsets);
    EXPECT_EQ(a["usage"]["prompt_tokens"], 5);
    EXPECT_EQ(a["usage"]["completion_tokens"], 2 * max_tokens);
  }
  EXPECT_EQ(g.scored(), 4);
  EXPECT_EQ(g.seeds().size(), 2u);  // only max_tokens 1 generated

  // Echo without logprobs: the text, no scoring.
  Json a = Answer(*api, Completion({{"echo", true}, {"max_tokens", 2}}), false);
  EXPECT_EQ(a["choices"][0]["text"], "Hihe");
  EXPECT_TRUE(a["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(g.scored(), 4);
}

// vLLM's prompt_logprobs: the same scores as echo's, in its layout, for each
// choice; scored once per choice even when echo asks too.
TEST_F(ServerTest, PromptLogprobsAreEchosScores) {
  ScriptedGenerator g(ByteIds("hello"));
  auto api = Server(g);
  for (int max_tokens : {0, 2}) {
    SCOPED_TRACE(max_tokens);
    const Json prompts = {"Hi", ByteIds("cde")};
    Json a = Answer(
        *api,
        Completion(
            {{"prompt", prompts}, {"prompt_logprobs", 2}, {"max_tokens", max_tokens}, {"n", 2}}),
        false);
    Json echo = Answer(
        *api,
        Completion(
            {{"prompt", prompts}, {"echo", true}, {"logprobs", 2}, {"max_tokens", 0}, {"n", 2}}),
        false);
    ASSERT_EQ(a["choices"].size(), 4u);
    for (int c = 0; c < 4; ++c) {
      const Json& choice = a["choices"][c];
      EXPECT_EQ(choice["text"], max_tokens ? "he" : "");
      EXPECT_TRUE(choice["logprobs"].is_null());
      EXPECT_EQ(choice["finish_reason"], "length");
      const Json& lp = choice["prompt_logprobs"];
      const Json& echoed = echo["choices"][c]["logprobs"];
      ASSERT_EQ(lp.size(), echoed["token_ids"].size());
      EXPECT_TRUE(lp[0].is_null());
      for (size_t t = 1; t < lp.size(); ++t) {
        const std::string id = std::to_string(echoed["token_ids"][t].get<int>());
        ASSERT_TRUE(lp[t].contains(id)) << lp[t].dump();
        EXPECT_EQ(lp[t][id]["logprob"], echoed["token_logprobs"][t]);
        EXPECT_EQ(lp[t][id]["rank"], t);
        EXPECT_EQ(lp[t][id]["decoded_token"], echoed["tokens"][t]);
        EXPECT_EQ(lp[t].size(), 3u);  // the token and 'a', 'b'
        EXPECT_EQ(lp[t].at("97"),
                  (Json{{"logprob", -0.0625}, {"rank", 1}, {"decoded_token", "a"}}));
        EXPECT_EQ(lp[t].at("98"), (Json{{"logprob", -0.125}, {"rank", 2}, {"decoded_token", "b"}}));
      }
    }
  }
  EXPECT_EQ(g.scored(), 4 * 4);
  // Both asked: one scoring per choice, each answer with its own K.
  Json both = Answer(*api,
                     Completion({{"prompt", "cde"},
                                 {"echo", true},
                                 {"logprobs", 0},
                                 {"prompt_logprobs", 1},
                                 {"max_tokens", 0}}),
                     false);
  EXPECT_EQ(g.scored(), 4 * 4 + 1);
  const Json& choice = both["choices"][0];
  EXPECT_EQ(choice["logprobs"]["top_logprobs"][1], (Json{{"d", -0.125}}));
  EXPECT_EQ(choice["prompt_logprobs"][1].size(), 2u);
  EXPECT_EQ(choice["prompt_logprobs"][2]["101"]["logprob"], -0.25);
}

// stop_reason as vLLM sets it: the stop string, a stop id other than the
// tokenizer's EOS, else null.
TEST_F(ServerTest, StopReasonNamesTheStringOrTheStopId) {
  ScriptedGenerator words(ByteIds("one. two. three."));
  auto api = Server(words);
  Json a = Answer(*api, Completion({{"stop", {"xx", ". t"}}}), false);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(a["choices"][0]["stop_reason"], ". t");
  a = Answer(*api, Completion({{"max_tokens", 3}}), false);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(a["choices"][0]["stop_reason"].is_null());
  a = Answer(*api, Completion({{"stop_token_ids", {'.'}}}), false);
  EXPECT_EQ(a["choices"][0]["text"], "one");
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(a["choices"][0]["stop_reason"], '.');
  bool done = false;
  std::vector<Json> chunks =
      StreamChunks(*api, Completion({{"stream", true}, {"stop_token_ids", {'.'}}}), false, &done);
  ASSERT_TRUE(done);
  EXPECT_TRUE(chunks.front()["choices"][0]["stop_reason"].is_null());
  EXPECT_EQ(chunks.back()["choices"][0]["stop_reason"], '.');

  // The config's EOS: reported while the tokenizer names no EOS (vLLM adds
  // such ids to stop_token_ids), null once it is the tokenizer's EOS.
  ScriptedGenerator eos({'o', 'k', retort::testing::kEndId});
  a = Answer(*Server(eos), Completion(Json::object()), false);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(a["choices"][0]["stop_reason"], retort::testing::kEndId);
  const std::string config = ::testing::TempDir() + "/server_test_tokenizer_config.json";
  ASSERT_TRUE(WriteFileAtomically(config, R"({"eos_token": "<|end|>"})").ok());
  ASSERT_TRUE(f_.tokenizer->LoadSpecialTokensFromConfig(config).ok());
  ASSERT_EQ(f_.tokenizer->eos_id(), retort::testing::kEndId);
  a = Answer(*Server(eos), Completion(Json::object()), false);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(a["choices"][0]["stop_reason"].is_null());
}

TEST_F(ServerTest, ChatSplitsReasoning) {
  std::vector<int32_t> script = {kThinkId, 'm', 'm', kEndThinkId, 'o', 'k'};
  ScriptedGenerator g(script);
  auto api = Server(g);
  Json a = Answer(*api, Chat(Json::object()), true);
  EXPECT_EQ(a["object"], "chat.completion");
  EXPECT_EQ(a["choices"][0]["message"]["content"], "ok");
  EXPECT_EQ(a["choices"][0]["message"]["reasoning_content"], "mm");
  options_.reasoning = ReasoningSplitter::Mode::kNone;
  auto plain = Server(g);
  a = Answer(*plain, Chat(Json::object()), true);
  EXPECT_EQ(a["choices"][0]["message"]["content"], "<think>mm</think>ok");
  EXPECT_FALSE(a["choices"][0]["message"].contains("reasoning_content"));
}

TEST_F(ServerTest, ChatStreamMatchesTheWholeAnswer) {
  std::vector<int32_t> script = {'o', 'k', kThinkId, 'm', 0xC3, 0xA9, '<', '/', 't'};
  ScriptedGenerator g(script);
  auto api = Server(g);
  Json whole = Answer(*api, Chat({{"stream_options", nullptr}}), true);
  bool done = false;
  std::vector<Json> chunks = StreamChunks(
      *api, Chat({{"stream", true}, {"stream_options", {{"include_usage", true}}}}), true, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(chunks.size(), 4u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  std::string reasoning, content;
  for (size_t i = 1; i + 2 < chunks.size(); ++i) {
    const Json& delta = chunks[i]["choices"][0]["delta"];
    EXPECT_EQ(chunks[i]["object"], "chat.completion.chunk");
    reasoning += delta.value("reasoning_content", "");
    content += delta.value("content", "");
  }
  EXPECT_EQ(reasoning, whole["choices"][0]["message"]["reasoning_content"]);
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(content, "ok");
  EXPECT_EQ(reasoning, "m\xC3\xA9</t");
  // The split held "</t" back until the end: it comes as its own chunk.
  EXPECT_EQ(chunks[chunks.size() - 3]["choices"][0]["delta"], (Json{{"reasoning_content", "</t"}}));
  const Json& last = chunks[chunks.size() - 2]["choices"][0];
  EXPECT_EQ(last["finish_reason"], "length");
  EXPECT_EQ(last["delta"], Json::object());
  EXPECT_EQ(chunks.back()["choices"], Json::array());
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 9);
}

TEST_F(ServerTest, CompletionStreamHoldsBackAStopPrefix) {
  ScriptedGenerator g(ByteIds("abXYcdXYZe"));
  auto api = Server(g);
  bool done = false;
  std::vector<Json> chunks = StreamChunks(
      *api, Completion({{"stream", true}, {"stop", "XYZ"}, {"logprobs", 0}}), false, &done);
  ASSERT_TRUE(done);
  std::vector<std::string> texts;
  size_t logprob_tokens = 0;
  for (const Json& c : chunks) {
    texts.push_back(c["choices"][0]["text"]);
    const Json& lp = c["choices"][0]["logprobs"];
    if (!lp.is_null()) {
      logprob_tokens += lp["tokens"].size();
      for (const Json& off : lp["text_offset"]) EXPECT_EQ(off, 0);
    }
  }
  // Every token's log-prob is sent once, with the text it released (none
  // while "XY" may still grow into "XYZ").
  EXPECT_EQ(texts, (std::vector<std::string>{"a", "b", "", "", "XYc", "d", "", "", "", ""}));
  EXPECT_EQ(logprob_tokens, 9u);
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, ClientGoneEndsTheStream) {
  ScriptedGenerator g(ByteIds("abcdefgh"));
  auto api = Server(g);
  bool done = true;
  std::vector<Json> chunks = StreamChunks(*api, Completion({{"stream", true}}), false, &done, 3);
  EXPECT_FALSE(done);
  EXPECT_EQ(chunks.size(), 3u);
  EXPECT_EQ(api->in_flight(), 0);
}

// A client that hangs up on a non-streaming request stops its generation:
// the choices end early with finish_reason "abort".
TEST_F(ServerTest, ClientGoneCancelsAWholeAnswer) {
  ScriptedGenerator g(ByteIds("abcdefghijklmnopqrstuvwxyz0123456789"));
  auto api = Server(g);
  CompletionJob job;
  ASSERT_FALSE(api->Parse(Completion({{"max_tokens", 36}, {"n", 2}}).dump(), false, &job));
  std::atomic<int> polls{0};
  Json answer;
  ASSERT_FALSE(api->Complete(job, &answer, [&polls] { return ++polls <= 6; }));
  ASSERT_EQ(answer["choices"].size(), 2u);
  int64_t generated = 0;
  for (const Json& c : answer["choices"]) {
    EXPECT_EQ(c["finish_reason"], "abort") << c.dump();
    generated += static_cast<int64_t>(c["text"].get<std::string>().size());
  }
  EXPECT_LE(generated, 8);  // 6 polls said "connected": 2 x 36 tokens were asked for
  EXPECT_EQ(answer["usage"]["completion_tokens"], generated);
  EXPECT_EQ(api->in_flight(), 0);
  // Still connected: the whole answer.
  ASSERT_FALSE(api->Complete(job, &answer, [] { return true; }));
  EXPECT_EQ(answer["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(answer["usage"]["completion_tokens"], 72);
}

TEST_F(ServerTest, ParseErrorsComeFromTheRequestParser) {
  ScriptedGenerator g({});
  auto api = Server(g);
  CompletionJob job;
  std::optional<ApiError> e = api->Parse(R"({"prompt": "x", "model": "other"})", false, &job);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 404);
  // max_tokens_limit 0 means the whole context.
  options_.max_tokens_limit = 0;
  auto wide = Server(g);
  EXPECT_FALSE(wide->Parse(Completion({{"max_tokens", 60}}).dump(), false, &job));
}

}  // namespace
}  // namespace retort::serve
