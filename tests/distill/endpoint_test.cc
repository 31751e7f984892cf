// EndpointClient: against a real `retort serve` on a tiny model (a child
// process, and the server library in-process for scoring, checked against the
// local model's own log-probs), and against small fake servers
// (httplib::Server on a thread) for retries, backoff, timeouts, API keys and
// other servers' answer shapes. ReasoningSplitter on its own.
#include "distill/endpoint.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <future>
#include <numeric>
#include <thread>

#include "gtest/gtest.h"
#include "httplib.h"
#include "model/transformer.h"
#include "serve/server.h"
#include "tests/cli/cli_harness.h"
#include "tests/cli/serve_process.h"
#include "tests/text/byte_tokenizer.h"

namespace retort {
namespace {

using nlohmann::json;
using Mode = ReasoningSplitter::Mode;

// ---------------------------------------------------------------- splitter

ReasoningSplitter::Delta PushByPieces(std::string_view text, size_t piece, Mode mode,
                                      bool starts_in_reasoning) {
  ReasoningSplitter s(mode, starts_in_reasoning);
  ReasoningSplitter::Delta all;
  for (size_t i = 0; i < text.size(); i += piece) {
    ReasoningSplitter::Delta d = s.Push(text.substr(i, piece));
    all.reasoning += d.reasoning;
    all.content += d.content;
  }
  ReasoningSplitter::Delta d = s.Finish();
  all.reasoning += d.reasoning;
  all.content += d.content;
  return all;
}

void ExpectSplit(std::string_view text, Mode mode, bool starts, const std::string& reasoning,
                 const std::string& content) {
  for (size_t piece : {1, 2, 3, 5, 1000}) {
    ReasoningSplitter::Delta d = PushByPieces(text, piece, mode, starts);
    EXPECT_EQ(d.reasoning, reasoning) << "text \"" << text << "\" in pieces of " << piece;
    EXPECT_EQ(d.content, content) << "text \"" << text << "\" in pieces of " << piece;
  }
}

TEST(ReasoningSplitterTest, AutoMode) {
  ExpectSplit("<think>\nplan it</think>\n\nThe answer is 4.", Mode::kAuto, false, "\nplan it",
              "\n\nThe answer is 4.");
  ExpectSplit("no tags at all <thin", Mode::kAuto, false, "", "no tags at all <thin");
  ExpectSplit("pre <think>r</think> post </think> x", Mode::kAuto, false, "r",
              "pre  post </think> x");
  ExpectSplit("<think>cut off mid-thought", Mode::kAuto, false, "cut off mid-thought", "");
  // R1-Distill templates end the prompt with "<think>\n": the output opens inside.
  ExpectSplit("step 1, step 2</think>Answer: 7", Mode::kAuto, true, "step 1, step 2", "Answer: 7");
  ExpectSplit("", Mode::kAuto, false, "", "");
  ReasoningSplitter s(Mode::kAuto, false);
  s.Push("plain");
  EXPECT_FALSE(s.saw_reasoning());
  s.Push("<think>x");
  EXPECT_TRUE(s.saw_reasoning());
}

TEST(ReasoningSplitterTest, DeepSeekR1AndNone) {
  ExpectSplit("<think>r</think>c", Mode::kDeepSeekR1, false, "r", "c");
  ExpectSplit("r</think>c", Mode::kDeepSeekR1, false, "r", "c");
  ExpectSplit("never closed", Mode::kDeepSeekR1, false, "never closed", "");
  ExpectSplit("<think>r</think>c", Mode::kNone, false, "", "<think>r</think>c");
  EXPECT_EQ(ReasoningSplitter::ParseMode("deepseek_r1").value(), Mode::kDeepSeekR1);
  EXPECT_EQ(ReasoningSplitter::ParseMode("none").value(), Mode::kNone);
  EXPECT_FALSE(ReasoningSplitter::ParseMode("qwen3").ok());
}

// ---------------------------------------------------------------- options

TEST(EndpointClientTest, CreateChecksTheUrlAndOptions) {
  EndpointOptions o;
  o.model = "m";
  for (const char* bad : {"", "localhost:8000/v1", "ftp://host/v1", "http:///v1",
                          "http://host:99999/v1", "http://host:abc/v1"}) {
    o.base_url = bad;
    auto c = EndpointClient::Create(o);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok() && *bad) {
      EXPECT_NE(std::string(c.status().message()).find(bad), std::string::npos) << c.status();
    }
  }
  o.base_url = "https://api.example.com/v1/";  // built with OpenSSL here
  auto https = EndpointClient::Create(o);
  ASSERT_TRUE(https.ok()) << https.status();
  EXPECT_EQ((*https)->Url("/chat/completions"), "https://api.example.com/v1/chat/completions");
  o.base_url = "http://127.0.0.1:8000/v1";
  o.model = "";
  EXPECT_FALSE(EndpointClient::Create(o).ok());
}

TEST(EndpointClientTest, BuildsTheRequestBody) {
  EndpointOptions o;
  o.base_url = "http://127.0.0.1:1/v1";
  o.model = "teacher";
  auto c = EndpointClient::Create(o);
  ASSERT_TRUE(c.ok());
  ChatParams p;
  p.n = 4;
  p.temperature = 0.6;
  p.top_p = 0.95;
  p.max_tokens = 100;
  p.seed = 7;
  p.stop = {"###"};
  p.logprobs = true;
  p.top_logprobs = 5;
  p.extra = {{"top_k", 20}};
  json messages = json::array({{{"role", "user"}, {"content", "2+2?"}}});
  json body = (*c)->BuildChatRequest(messages, p);
  EXPECT_EQ(body["model"], "teacher");
  EXPECT_EQ(body["messages"], messages);
  EXPECT_EQ(body["n"], 4);
  EXPECT_DOUBLE_EQ(body["temperature"].get<double>(), 0.6);
  EXPECT_DOUBLE_EQ(body["top_p"].get<double>(), 0.95);
  EXPECT_EQ(body["max_tokens"], 100);
  EXPECT_EQ(body["seed"], 7);
  EXPECT_EQ(body["stop"], json::array({"###"}));
  EXPECT_EQ(body["logprobs"], true);
  EXPECT_EQ(body["top_logprobs"], 5);
  EXPECT_EQ(body["top_k"], 20);
  json minimal = (*c)->BuildChatRequest(messages, ChatParams{});
  EXPECT_FALSE(minimal.contains("n"));
  EXPECT_FALSE(minimal.contains("temperature"));
  EXPECT_FALSE(minimal.contains("logprobs"));
}

// ---------------------------------------------------------------- fake servers

// An httplib::Server on its own thread, on a free loopback port.
class FakeServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // `chat` answers /v1/chat/completions, `completions` /v1/completions.
  explicit FakeServer(Handler chat, Handler completions = nullptr) {
    server_.Post("/v1/chat/completions",
                 [this, chat](const httplib::Request& req, httplib::Response& res) {
                   ++requests_;
                   chat(req, res);
                 });
    if (completions) {
      server_.Post("/v1/completions",
                   [this, completions](const httplib::Request& req, httplib::Response& res) {
                     ++requests_;
                     completions(req, res);
                   });
    }
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeServer() {
    server_.stop();
    thread_.join();
  }
  EndpointOptions Options() const {
    EndpointOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port_) + "/v1";
    o.model = "fake";
    o.initial_backoff_s = 0.01;
    o.max_backoff_s = 0.05;
    o.jitter_seed = 42;
    o.api_key_env = "";
    return o;
  }
  int requests() const { return requests_; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> requests_{0};
};

const char* kCannedAnswer = R"({
  "id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
  "choices": [
    {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "length"},
    {"index": 0, "message": {"role": "assistant", "content": "<think>hmm</think>four", "reasoning_content": null},
     "finish_reason": "stop",
     "logprobs": {"content": [
       {"token": "token_id:17", "logprob": -0.5, "bytes": [102],
        "top_logprobs": [{"token": "token_id:17", "logprob": -0.5}, {"token": "token_id:3", "logprob": -1.5}]}]}}
  ],
  "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
})";

json OneMessage() { return json::array({{{"role", "user"}, {"content", "2+2?"}}}); }

TEST(EndpointClientTest, RetriesServerErrorsThenSucceeds) {
  std::atomic<int> calls{0};
  FakeServer fake([&](const httplib::Request&, httplib::Response& res) {
    if (calls++ < 2) {
      res.status = 503;
      res.set_content(R"({"error": {"message": "warming up"}})", "application/json");
      return;
    }
    res.set_content(kCannedAnswer, "application/json");
  });
  auto client = EndpointClient::Create(fake.Options());
  ASSERT_TRUE(client.ok()) << client.status();
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->attempts, 3);
  EXPECT_EQ(fake.requests(), 3);
  // Other servers' shapes: choices sorted by index, <think> split client-side,
  // vLLM's "token_id:N" tokens give ids.
  ASSERT_EQ(r->choices.size(), 2u);
  EXPECT_EQ(r->choices[0].index, 0);
  EXPECT_EQ(r->choices[0].content, "four");
  EXPECT_EQ(r->choices[0].reasoning_content, "hmm");
  EXPECT_EQ(r->choices[0].finish_reason, "stop");
  ASSERT_TRUE(r->choices[0].has_logprobs);
  ASSERT_EQ(r->choices[0].logprobs.size(), 1u);
  EXPECT_EQ(r->choices[0].logprobs[0].chosen.token_id, 17);
  EXPECT_DOUBLE_EQ(r->choices[0].logprobs[0].chosen.logprob, -0.5);
  EXPECT_EQ(r->choices[0].logprobs[0].chosen.bytes, std::vector<uint8_t>({102}));
  ASSERT_EQ(r->choices[0].logprobs[0].top.size(), 2u);
  EXPECT_EQ(r->choices[0].logprobs[0].top[1].token_id, 3);
  EXPECT_EQ(r->choices[1].content, "second");
  EXPECT_FALSE(r->choices[1].has_logprobs);
  EXPECT_EQ(r->usage.total_tokens, 13);
}

TEST(EndpointClientTest, GivesUpAfterMaxRetriesNamingUrlAndStatus) {
  FakeServer fake([](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
    res.set_content(R"({"error": {"message": "kaboom"}})", "application/json");
  });
  EndpointOptions o = fake.Options();
  o.max_retries = 2;
  auto client = EndpointClient::Create(o);
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  const std::string m(r.status().message());
  EXPECT_NE(m.find(o.base_url + "/chat/completions"), std::string::npos) << m;
  EXPECT_NE(m.find("HTTP 500"), std::string::npos) << m;
  EXPECT_NE(m.find("kaboom"), std::string::npos) << m;
  EXPECT_NE(m.find("3 attempts"), std::string::npos) << m;
  EXPECT_EQ(fake.requests(), 3);
}

TEST(EndpointClientTest, DoesNotRetryClientErrors) {
  FakeServer fake([](const httplib::Request&, httplib::Response& res) {
    res.status = 400;
    res.set_content(R"({"error": {"message": "bad field", "type": "invalid_request_error"}})",
                    "application/json");
  });
  auto client = EndpointClient::Create(fake.Options());
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("bad field"), std::string::npos);
  EXPECT_EQ(fake.requests(), 1);
}

TEST(EndpointClientTest, RetriesTooManyRequestsHonouringRetryAfter) {
  std::atomic<int> calls{0};
  FakeServer fake([&](const httplib::Request&, httplib::Response& res) {
    if (calls++ == 0) {
      res.status = 429;
      res.set_header("Retry-After", "0.2");
      return;
    }
    res.set_content(kCannedAnswer, "application/json");
  });
  auto client = EndpointClient::Create(fake.Options());
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->attempts, 2);
  // Retry-After (0.2 s) is capped by max_backoff_s (0.05 s) in these options.
  EXPECT_GE(s, 0.04);
  EXPECT_LT(s, 5.0);
}

TEST(EndpointClientTest, TimesOutAndRetries) {
  FakeServer fake([](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    res.set_content(kCannedAnswer, "application/json");
  });
  EndpointOptions o = fake.Options();
  o.request_timeout_s = 0.2;
  o.max_retries = 1;
  auto client = EndpointClient::Create(o);
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("2 attempts"), std::string::npos) << r.status();
  EXPECT_LT(s, 1.4);
  EXPECT_EQ(fake.requests(), 2);
}

TEST(EndpointClientTest, ConnectionRefusedIsUnavailable) {
  const int port = 1;  // tcpmux: nothing listens there on a test machine
  EndpointOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  o.model = "x";
  o.max_retries = 1;
  o.initial_backoff_s = 0.01;
  auto client = EndpointClient::Create(o);
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(std::string(r.status().message()).find(o.base_url), std::string::npos) << r.status();
}

TEST(EndpointClientTest, SendsTheApiKeyFromTheEnvironment) {
  FakeServer fake([](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer sekret-123") {
      res.status = 401;
      res.set_content(R"({"error": {"message": "no key"}})", "application/json");
      return;
    }
    res.set_content(kCannedAnswer, "application/json");
  });
  ::setenv("RETORT_TEST_API_KEY", "sekret-123", 1);
  EndpointOptions o = fake.Options();
  o.api_key_env = "RETORT_TEST_API_KEY";
  auto client = EndpointClient::Create(o);
  EXPECT_TRUE((*client)->ChatCompletion(OneMessage(), ChatParams{}).ok());
  o.api_key_env = "";
  auto keyless = EndpointClient::Create(o);
  auto r = (*keyless)->ChatCompletion(OneMessage(), ChatParams{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(fake.requests(), 2);  // 401 is not retried
}

TEST(EndpointClientTest, AsyncKeepsAtMostMaxInFlight) {
  std::atomic<int> now{0}, peak{0};
  FakeServer fake([&](const httplib::Request&, httplib::Response& res) {
    int n = ++now;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    --now;
    res.set_content(kCannedAnswer, "application/json");
  });
  EndpointOptions o = fake.Options();
  o.max_in_flight = 3;
  auto client = EndpointClient::Create(o);
  std::vector<std::future<absl::StatusOr<ChatResponse>>> futures;
  for (int i = 0; i < 9; ++i)
    futures.push_back((*client)->ChatCompletionAsync(OneMessage(), ChatParams{}));
  for (auto& f : futures) EXPECT_TRUE(f.get().ok());
  EXPECT_EQ(fake.requests(), 9);
  EXPECT_LE(peak.load(), 3);
  EXPECT_GE(peak.load(), 2);
}

// ---------------------------------------------------------------- scoring

EndpointOptions OfflineOptions() {
  EndpointOptions o;
  o.base_url = "http://127.0.0.1:1/v1";
  o.model = "teacher";
  o.api_key_env = "";
  return o;
}

// A vLLM answer to a prompt_logprobs request: `entries` (one per prompt
// token) in the choice, or at the top level as older vLLM put them.
std::string ScoreAnswer(const json& entries, bool in_choice = true) {
  json choice = {{"index", 0}, {"text", "x"}, {"logprobs", nullptr}, {"finish_reason", "length"}};
  json answer = {{"id", "cmpl-1"}, {"object", "text_completion"}, {"model", "fake"}};
  if (in_choice) {
    choice["prompt_logprobs"] = entries;
  } else {
    answer["prompt_logprobs"] = entries;
  }
  answer["choices"] = json::array({choice});
  return answer.dump();
}

json Lp(double logprob, int rank) {
  return {{"logprob", logprob}, {"rank", rank}, {"decoded_token", "t"}};
}

TEST(EndpointScoreTest, BuildsTheRequestBody) {
  auto c = EndpointClient::Create(OfflineOptions());
  ASSERT_TRUE(c.ok());
  json body = (*c)->BuildScoreRequest({1, 2, 3}, 5);
  EXPECT_EQ(body, (json{{"model", "teacher"},
                        {"prompt", {1, 2, 3}},
                        {"max_tokens", 1},
                        {"temperature", 1.0},
                        {"top_p", 1.0},
                        {"prompt_logprobs", 5}}));
}

TEST(EndpointScoreTest, ParsesVllmPromptLogprobs) {
  auto c = EndpointClient::Create(OfflineOptions());
  ASSERT_TRUE(c.ok());
  const std::vector<int32_t> tokens = {1, 7, 8, 9};
  // Position 1: token 7 outside the top 2 (K + 1 keys); position 2: token 8
  // is the top one (K keys); position 3: the server gave only the token
  // (padding), as a bare number; a tie (ids 3 and 4) goes to the smaller id.
  const json entries = {nullptr,
                        {{"7", Lp(-3.0, 4)}, {"4", Lp(-0.5, 1)}, {"3", Lp(-0.5, 2)}},
                        {{"8", Lp(-0.25, 1)}, {"11", Lp(-2.0, 2)}},
                        {{"9", -1.75}}};
  for (bool in_choice : {true, false}) {
    SCOPED_TRACE(in_choice);
    auto s = (*c)->ParseScoreResponse(ScoreAnswer(entries, in_choice), tokens, 1, 2, "src");
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->top_k, 2);
    EXPECT_EQ(s->logprobs, (std::vector<float>{-3.0f, -0.25f, -1.75f}));
    EXPECT_EQ(s->topk_ids, (std::vector<int32_t>{3, 4, 8, 11, 9, -1}));
    EXPECT_EQ(s->topk_logprobs, (std::vector<float>{-0.5f, -0.5f, -0.25f, -2.0f, -1.75f, 0.f}));
  }
  // From `first` on; earlier entries are not read. top_k 0: the log-probs alone.
  json later = entries;
  later[1] = "not read";
  auto s = (*c)->ParseScoreResponse(ScoreAnswer(later), tokens, 2, 0, "src");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->logprobs, (std::vector<float>{-0.25f, -1.75f}));
  EXPECT_TRUE(s->topk_ids.empty());
  EXPECT_TRUE(s->topk_logprobs.empty());
  // More alternatives than asked: the best top_k of them.
  s = (*c)->ParseScoreResponse(ScoreAnswer(entries), tokens, 1, 1, "src");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->topk_ids, (std::vector<int32_t>{3, 8, 9}));
}

TEST(EndpointScoreTest, MalformedAnswersAreOneLineErrorsNamingTheSource) {
  auto c = EndpointClient::Create(OfflineOptions());
  ASSERT_TRUE(c.ok());
  const std::vector<int32_t> tokens = {1, 7, 8};
  const std::string src = "POST http://127.0.0.1:1/v1/completions";
  auto expect = [&](const std::string& body, absl::StatusCode code, const std::string& needle) {
    auto s = (*c)->ParseScoreResponse(body, tokens, 1, 1, src);
    ASSERT_FALSE(s.ok()) << body;
    EXPECT_EQ(s.status().code(), code) << s.status();
    const std::string m(s.status().message());
    EXPECT_EQ(m.rfind(src + ": ", 0), 0u) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  };
  const json good = {nullptr, {{"7", Lp(-1, 1)}}, {{"8", Lp(-2, 1)}}};
  ASSERT_TRUE((*c)->ParseScoreResponse(ScoreAnswer(good), tokens, 1, 1, src).ok());
  // A server without the extension (OpenAI, SGLang, llama.cpp).
  expect(R"({"choices": [{"index": 0, "text": "x"}]})", absl::StatusCode::kUnimplemented,
         "the endpoint does not return prompt_logprobs (vLLM and retort serve do)");
  expect(ScoreAnswer(nullptr), absl::StatusCode::kUnimplemented, "does not return prompt_logprobs");
  expect("<html>oops</html>", absl::StatusCode::kDataLoss, "not a JSON object");
  expect(ScoreAnswer(json::array({nullptr, {{"7", Lp(-1, 1)}}})), absl::StatusCode::kDataLoss,
         "prompt_logprobs has 2 entries for a prompt of 3 tokens");
  expect(ScoreAnswer("x"), absl::StatusCode::kDataLoss,
         "prompt_logprobs is string, expected a list");
  json bad = good;
  bad[2] = {{"8", {{"logprob", "-2"}}}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss,
         "prompt_logprobs[2][\"8\"]: the log-prob is not a number");
  bad[2] = {{"8", {{"rank", 1}}}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss, "the log-prob is not a number");
  bad[2] = {{"8", nullptr}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss, "the log-prob is not a number");
  bad[2] = {{"8", Lp(-2, 1)}, {"Hello", Lp(-3, 2)}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss,
         "prompt_logprobs[2]: key \"Hello\" is not a token id");
  bad[2] = {{"8", Lp(-2, 1)}, {"-4", Lp(-3, 2)}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss, "key \"-4\" is not a token id");
  bad[2] = {{"8", Lp(-2, 1)}, {"99999999999", Lp(-3, 2)}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss, "key \"99999999999\" is not a token id");
  bad[2] = {{"9", Lp(-2, 1)}};
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss,
         "prompt_logprobs[2] has no entry for the scored token 8");
  bad[2] = nullptr;
  expect(ScoreAnswer(bad), absl::StatusCode::kDataLoss, "prompt_logprobs[2] is null");
}

TEST(EndpointScoreTest, ChecksItsArguments) {
  auto c = EndpointClient::Create(OfflineOptions());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->ScoreTokens({1, 2}, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->ScoreTokens({1, 2}, 3, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->ScoreTokens({}, 1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->ScoreTokens({1, 2}, 1, 21).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->ScoreTokens({1, -2}, 1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing to score: no request (nothing listens on this port).
  auto none = (*c)->ScoreTokens({1, 2}, 2, 3);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->logprobs.empty());
  EXPECT_EQ(none->top_k, 3);
}

TEST(EndpointScoreTest, PostsToCompletionsWithRetriesAndAsync) {
  std::atomic<int> calls{0};
  FakeServer fake(
      [](const httplib::Request&, httplib::Response& res) { res.status = 500; },
      [&](const httplib::Request& req, httplib::Response& res) {
        if (calls++ == 0) {
          res.status = 503;
          return;
        }
        json body = json::parse(req.body);
        EXPECT_EQ(body["prompt_logprobs"], 1);
        EXPECT_EQ(body["max_tokens"], 1);
        json entries = json::array({nullptr});
        for (size_t i = 1; i < body["prompt"].size(); ++i) {
          const int id = body["prompt"][i];
          entries.push_back({{std::to_string(id), Lp(-0.5 * id, 2)}, {"0", Lp(-0.1, 1)}});
        }
        res.set_content(ScoreAnswer(entries), "application/json");
      });
  auto client = EndpointClient::Create(fake.Options());
  ASSERT_TRUE(client.ok());
  auto s = (*client)->ScoreTokens({5, 2, 4}, 1, 1);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->attempts, 2);
  EXPECT_EQ(s->logprobs, (std::vector<float>{-1.0f, -2.0f}));
  EXPECT_EQ(s->topk_ids, (std::vector<int32_t>{0, 0}));
  std::vector<std::future<absl::StatusOr<TokenScores>>> futures;
  for (int i = 0; i < 4; ++i) futures.push_back((*client)->ScoreTokensAsync({5, 2, 4, i}, 3, 1));
  for (int i = 0; i < 4; ++i) {
    auto a = futures[i].get();
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->logprobs, std::vector<float>{-0.5f * i});
  }
  // A server without the extension: not retried, named.
  FakeServer plain([](const httplib::Request&, httplib::Response& res) { res.status = 500; },
                   [](const httplib::Request&, httplib::Response& res) {
                     res.set_content(R"({"choices": [{"index": 0, "text": "x"}]})",
                                     "application/json");
                   });
  auto other = EndpointClient::Create(plain.Options());
  auto r = (*other)->ScoreTokens({5, 2}, 1, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(std::string(r.status().message()).find(plain.Options().base_url + "/completions"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(plain.requests(), 1);
}

// `retort serve`'s server run in-process (serve::RunServer on its own
// thread, port 0) over tests/reference/models/llama with the byte tokenizer.
class InProcessServer {
 public:
  InProcessServer() {
    auto engine = Transformer::Load("tests/reference/models/llama");
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return;
    engine_ = *std::move(engine);
    tokenizer_ = testing::MakeByteTokenizer();
    options_.model_name = "tiny-scorer";
    options_.port = 0;
    options_.shutdown_grace_s = 0;
    serve::ServedModel model{engine_.get(), tokenizer_.get(), nullptr};
    serve::ServeHooks hooks;
    std::future<int> port = listening_.get_future();
    hooks.on_listening = [this](int p) {
      told_ = true;
      listening_.set_value(p);
    };
    hooks.stop_requests = [this](std::string* name) {
      *name = "test end";
      return stop_.load();
    };
    thread_ = std::thread([this, model, hooks] {
      absl::Status s = serve::RunServer(options_, model, hooks);
      EXPECT_TRUE(s.ok()) << s;
      if (!told_) listening_.set_value(-1);  // it never listened
    });
    port_ = port.get();
  }
  ~InProcessServer() {
    stop_ = 1;
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  const Transformer& engine() const { return *engine_; }

 private:
  std::unique_ptr<Transformer> engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
  serve::ServeOptions options_;
  std::promise<int> listening_;
  std::atomic<bool> told_{false};
  std::atomic<int> stop_{0};
  std::thread thread_;
  int port_ = -1;
};

// Per position i >= 1: log_softmax(logits[i - 1]) in f64, from one forward
// over the whole sequence.
std::vector<std::vector<double>> LocalLogSoftmax(const Transformer& model,
                                                 const std::vector<int32_t>& tokens) {
  absl::StatusOr<std::vector<float>> logits = model.Logits(tokens);
  EXPECT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<double>> out(tokens.size());
  if (!logits.ok()) return out;
  for (size_t i = 1; i < tokens.size(); ++i) {
    const float* row = logits->data() + (i - 1) * vocab;
    const double max = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
    const double log_z = max + std::log(sum);
    for (int64_t v = 0; v < vocab; ++v) out[i].push_back(static_cast<double>(row[v]) - log_z);
  }
  return out;
}

TEST(EndpointScoreServeTest, ScoresEqualTheLocalModel) {
  InProcessServer server;
  ASSERT_GT(server.port(), 0);
  EndpointOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1";
  o.model = "tiny-scorer";
  o.api_key_env = "";
  auto client = EndpointClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();

  // Ids past the byte tokenizer's (up to the model's 320) are scored too.
  const std::vector<int32_t> tokens = {1,   72, 101, 108, 108, 111, 300, 44, 32,
                                       119, 5,  259, 17,  317, 2,   64,  64, 90};
  const std::vector<std::vector<double>> local = LocalLogSoftmax(server.engine(), tokens);
  const int32_t k = 5;
  for (int64_t first : {int64_t{1}, int64_t{6}}) {
    SCOPED_TRACE(first);
    auto s = (*client)->ScoreTokens(tokens, first, k);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->attempts, 1);
    ASSERT_EQ(s->logprobs.size(), tokens.size() - first);
    ASSERT_EQ(s->topk_ids.size(), s->logprobs.size() * k);
    ASSERT_EQ(s->topk_logprobs.size(), s->logprobs.size() * k);
    for (size_t p = 0; p < s->logprobs.size(); ++p) {
      const size_t i = first + p;
      EXPECT_NEAR(s->logprobs[p], local[i][tokens[i]], 1e-4) << "token " << i;
      std::vector<int32_t> order(local[i].size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return local[i][a] > local[i][b]; });
      for (int32_t r = 0; r < k; ++r) {
        EXPECT_EQ(s->topk_ids[p * k + r], order[r]) << "token " << i << " rank " << r;
        EXPECT_NEAR(s->topk_logprobs[p * k + r], local[i][order[r]], 1e-4);
      }
    }
  }
  // Async, several at once on the client's pool: the same scores.
  auto whole = (*client)->ScoreTokens(tokens, 1, 2);
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<std::future<absl::StatusOr<TokenScores>>> futures;
  for (int i = 0; i < 3; ++i) futures.push_back((*client)->ScoreTokensAsync(tokens, 1, 2));
  for (auto& f : futures) {
    auto a = f.get();
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->logprobs, whole->logprobs);
    EXPECT_EQ(a->topk_ids, whole->topk_ids);
  }
}

// ---------------------------------------------------------------- real server

class EndpointServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new testing::CliHarness("endpoint_test");
    const std::string model = (harness_->root() / "tiny").string();
    testing::CliRun r =
        harness_->Exec("init " + model + " --family llama --size tiny --dtype f32 --seed 11");
    ASSERT_EQ(r.code, 0) << r.err;
    server_ = new testing::ServeProcess();
    std::string error;
    ASSERT_TRUE(server_->Start({model, "--model-name", "tiny-teacher", "--threads", "2"},
                               (harness_->root() / "serve.err").string(), &error))
        << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    delete harness_;
  }
  static EndpointOptions Options() {
    EndpointOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(server_->port()) + "/v1";
    o.model = "tiny-teacher";
    o.max_in_flight = 3;
    o.initial_backoff_s = 0.01;
    return o;
  }
  static testing::CliHarness* harness_;
  static testing::ServeProcess* server_;
};
testing::CliHarness* EndpointServeTest::harness_ = nullptr;
testing::ServeProcess* EndpointServeTest::server_ = nullptr;

TEST_F(EndpointServeTest, ChatCompletionWithLogprobs) {
  auto client = EndpointClient::Create(Options());
  ASSERT_TRUE(client.ok());
  auto models = (*client)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(*models, std::vector<std::string>({"tiny-teacher"}));

  ChatParams p;
  p.temperature = 0;
  p.max_tokens = 8;
  p.logprobs = true;
  p.top_logprobs = 3;
  auto r = (*client)->ChatCompletion(OneMessage(), p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->attempts, 1);
  EXPECT_EQ(r->model, "tiny-teacher");
  ASSERT_EQ(r->choices.size(), 1u);
  const ChatChoice& c = r->choices[0];
  EXPECT_TRUE(c.finish_reason == "stop" || c.finish_reason == "length") << c.finish_reason;
  ASSERT_TRUE(c.has_logprobs);
  EXPECT_EQ(static_cast<int64_t>(c.logprobs.size()), r->usage.completion_tokens);
  EXPECT_EQ(r->usage.total_tokens, r->usage.prompt_tokens + r->usage.completion_tokens);
  for (const GeneratedTokenLogprobs& t : c.logprobs) {
    EXPECT_GE(t.chosen.token_id, 0);
    EXPECT_LT(t.chosen.token_id, 259);
    EXPECT_LE(t.chosen.logprob, 0);
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].token_id, t.chosen.token_id);  // greedy
    EXPECT_GE(t.top[0].logprob, t.top[1].logprob);
    EXPECT_GE(t.top[1].logprob, t.top[2].logprob);
  }
  // Greedy twice: same content; async on the client's pool: same again.
  auto again = (*client)->ChatCompletion(OneMessage(), p);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->choices[0].content, c.content);
  std::vector<std::future<absl::StatusOr<ChatResponse>>> futures;
  for (int i = 0; i < 4; ++i) futures.push_back((*client)->ChatCompletionAsync(OneMessage(), p));
  for (auto& f : futures) {
    auto a = f.get();
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->choices[0].content, c.content);
  }
}

TEST_F(EndpointServeTest, SeededSamplesAndN) {
  auto client = EndpointClient::Create(Options());
  ChatParams p;
  p.temperature = 1.0;
  p.seed = 99;
  p.max_tokens = 12;
  p.n = 2;
  auto a = (*client)->ChatCompletion(OneMessage(), p);
  auto b = (*client)->ChatCompletion(OneMessage(), p);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->choices.size(), 2u);
  EXPECT_EQ(a->choices[0].content, b->choices[0].content);
  EXPECT_EQ(a->choices[1].content, b->choices[1].content);
  EXPECT_EQ(a->choices[1].index, 1);
}

TEST_F(EndpointServeTest, ServerErrorsAreNotRetriedAndNamed) {
  EndpointOptions o = Options();
  o.model = "no-such-model";
  auto client = EndpointClient::Create(o);
  auto r = (*client)->ChatCompletion(OneMessage(), ChatParams{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("HTTP 404"), std::string::npos) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("no-such-model"), std::string::npos)
      << r.status();

  ChatParams bad;
  bad.max_tokens = 1000000;
  auto too_long = (*EndpointClient::Create(Options()))->ChatCompletion(OneMessage(), bad);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument) << too_long.status();
}

}  // namespace
}  // namespace retort
