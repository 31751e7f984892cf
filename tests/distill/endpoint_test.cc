// EndpointClient: against a real `retort serve` on a tiny model, and against
// small fake servers (httplib::Server on a thread) for retries, backoff,
// timeouts, API keys and other servers' answer shapes. ReasoningSplitter on
// its own.
#include "distill/endpoint.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/cli/cli_harness.h"
#include "tests/cli/serve_process.h"

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
  explicit FakeServer(std::function<void(const httplib::Request&, httplib::Response&)> chat) {
    server_.Post("/v1/chat/completions",
                 [this, chat](const httplib::Request& req, httplib::Response& res) {
                   ++requests_;
                   chat(req, res);
                 });
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
