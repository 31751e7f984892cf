// End-to-end tests of `retort serve`: a real server process on a tiny random
// model (byte tokenizer, ChatML template), spoken to over HTTP with
// cpp-httplib, as an OpenAI client would.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"
#include "tests/cli/serve_process.h"

namespace retort {
namespace {

using nlohmann::json;
using testing::CliHarness;
using testing::CliRun;
using testing::ServeProcess;

constexpr const char* kModelName = "tiny-test";

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new CliHarness("serve_test");
    model_ = (harness_->root() / "tiny").string();
    CliRun r =
        harness_->Exec("init " + model_ + " --family llama --size tiny --dtype f32 --seed 7");
    ASSERT_EQ(r.code, 0) << r.err;
    server_ = new ServeProcess();
    std::string error;
    ASSERT_TRUE(server_->Start(
        {model_, "--model-name", kModelName, "--max-request-bytes", "4096", "--threads", "2"},
        (harness_->root() / "serve.err").string(), &error))
        << error;
  }
  static void TearDownTestSuite() {
    delete server_;
    delete harness_;
    server_ = nullptr;
    harness_ = nullptr;
  }

  static httplib::Client Client() {
    httplib::Client c(server_->host(), server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  // POSTs JSON; returns (status, parsed body or discarded).
  static std::pair<int, json> Post(const std::string& path, const std::string& body) {
    httplib::Client c = Client();
    auto res = c.Post(path.c_str(), body, "application/json");
    if (!res) return {-1, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  static std::pair<int, json> Post(const std::string& path, const json& body) {
    return Post(path, body.dump());
  }
  // POSTs a streaming request; returns the "data: " payloads in order.
  static std::vector<std::string> PostStream(const std::string& path, const json& body,
                                             int* status) {
    httplib::Client c = Client();
    auto res = c.Post(path.c_str(), body.dump(), "application/json");
    std::vector<std::string> events;
    *status = res ? res->status : -1;
    if (!res) return events;
    EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
    const std::string& b = res->body;
    size_t pos = 0;
    while (pos < b.size()) {
      size_t end = b.find("\n\n", pos);
      EXPECT_NE(end, std::string::npos) << "unterminated SSE event at byte " << pos;
      if (end == std::string::npos) break;
      std::string event = b.substr(pos, end - pos);
      EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
      events.push_back(event.substr(6));
      pos = end + 2;
    }
    return events;
  }
  static void ExpectApiError(const std::pair<int, json>& r, int status,
                             const std::string& needle = "") {
    EXPECT_EQ(r.first, status) << r.second.dump();
    ASSERT_TRUE(r.second.is_object()) << "error body is not JSON";
    ASSERT_TRUE(r.second.contains("error")) << r.second.dump();
    EXPECT_TRUE(r.second["error"]["message"].is_string());
    EXPECT_FALSE(r.second["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(r.second["error"]["type"].is_string());
    if (!needle.empty()) {
      EXPECT_NE(r.second["error"]["message"].get<std::string>().find(needle), std::string::npos)
          << r.second.dump();
    }
  }
  static json Completion(json extra) {
    json body = {
        {"model", kModelName}, {"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }
  static json Chat(json extra) {
    json body = {{"model", kModelName},
                 {"messages", json::array({{{"role", "user"}, {"content", "hi there"}}})},
                 {"max_tokens", 10},
                 {"temperature", 0}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    return body;
  }

  static CliHarness* harness_;
  static ServeProcess* server_;
  static std::string model_;
};

CliHarness* ServeTest::harness_ = nullptr;
ServeProcess* ServeTest::server_ = nullptr;
std::string ServeTest::model_;

TEST_F(ServeTest, HealthAndModels) {
  httplib::Client c = Client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], kModelName);
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["max_model_len"], 2048);

  auto one = c.Get((std::string("/v1/models/") + kModelName).c_str());
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  auto other = c.Get("/v1/models/gpt-4");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  auto nowhere = c.Get("/v1/nowhere");
  ASSERT_TRUE(nowhere);
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_TRUE(json::parse(nowhere->body, nullptr, false).contains("error"));
}

TEST_F(ServeTest, CompletionShapeAndGreedyMatchesGenerate) {
  auto [status, r] = Post("/v1/completions", Completion({{"return_token_ids", true}}));
  ASSERT_EQ(status, 200) << r.dump();
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], kModelName);
  EXPECT_TRUE(r["id"].is_string());
  EXPECT_TRUE(r["created"].is_number_integer());
  ASSERT_EQ(r["choices"].size(), 1u);
  const json& c = r["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_TRUE(c["text"].is_string());
  EXPECT_TRUE(c["logprobs"].is_null());
  const std::string finish = c["finish_reason"];
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
  // The byte tokenizer has no BOS: "Hello" is 5 tokens.
  EXPECT_EQ(r["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(r["usage"]["completion_tokens"], c["token_ids"].size());
  EXPECT_EQ(r["usage"]["total_tokens"], 5 + c["token_ids"].size());
  if (finish == "length") {
    EXPECT_EQ(c["token_ids"].size(), 12u);
  }

  // Same ids as `retort generate --greedy`.
  CliRun g =
      harness_->Exec("generate " + model_ + " --prompt Hello --max-tokens 12 --greedy --json");
  ASSERT_EQ(g.code, 0) << g.err;
  json gen = json::parse(g.out);
  EXPECT_EQ(c["token_ids"], gen["token_ids"]);
  EXPECT_EQ(c["text"], gen["text"]);

  // Greedy is deterministic; a token-id prompt is the same prompt.
  auto again = Post("/v1/completions", Completion({{"return_token_ids", true}}));
  EXPECT_EQ(again.second["choices"][0]["token_ids"], c["token_ids"]);
  auto ids = Post("/v1/completions",
                  Completion({{"prompt", {72, 101, 108, 108, 111}}, {"return_token_ids", true}}));
  ASSERT_EQ(ids.first, 200) << ids.second.dump();
  EXPECT_EQ(ids.second["choices"][0]["token_ids"], c["token_ids"]);
}

TEST_F(ServeTest, SeededSamplingIsReproducibleAndNGivesSeedPlusIndex) {
  json body = Completion(
      {{"temperature", 1.0}, {"seed", 1234}, {"max_tokens", 16}, {"return_token_ids", true}});
  auto a = Post("/v1/completions", body);
  auto b = Post("/v1/completions", body);
  ASSERT_EQ(a.first, 200) << a.second.dump();
  EXPECT_EQ(a.second["choices"][0]["token_ids"], b.second["choices"][0]["token_ids"]);
  EXPECT_EQ(a.second["choices"][0]["text"], b.second["choices"][0]["text"]);

  body["n"] = 3;
  auto n = Post("/v1/completions", body);
  ASSERT_EQ(n.first, 200) << n.second.dump();
  ASSERT_EQ(n.second["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(n.second["choices"][i]["index"], i);
  EXPECT_EQ(n.second["choices"][0]["token_ids"], a.second["choices"][0]["token_ids"]);
  body.erase("n");
  body["seed"] = 1235;
  auto c = Post("/v1/completions", body);
  EXPECT_EQ(n.second["choices"][1]["token_ids"], c.second["choices"][0]["token_ids"]);
  int64_t total = 0;
  for (const json& ch : n.second["choices"]) total += ch["token_ids"].size();
  EXPECT_EQ(n.second["usage"]["completion_tokens"], total);
}

TEST_F(ServeTest, CompletionLogprobsLegacyShape) {
  auto [status, r] =
      Post("/v1/completions", Completion({{"logprobs", 3}, {"return_token_ids", true}}));
  ASSERT_EQ(status, 200) << r.dump();
  const json& c = r["choices"][0];
  const json& lp = c["logprobs"];
  const size_t n = c["token_ids"].size();
  ASSERT_EQ(lp["tokens"].size(), n);
  ASSERT_EQ(lp["token_logprobs"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  ASSERT_EQ(lp["text_offset"].size(), n);
  int64_t prev = 0;
  for (size_t i = 0; i < n; ++i) {
    const double chosen = lp["token_logprobs"][i];
    EXPECT_LE(chosen, 0.0);
    const json& top = lp["top_logprobs"][i];
    ASSERT_TRUE(top.is_object());
    EXPECT_GE(top.size(), 1u);
    EXPECT_LE(top.size(), 4u);  // the chosen token + top 3 (distinct token strings)
    // Greedy: the chosen token is the most likely one.
    double best = -1e30;
    for (auto& [k, v] : top.items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(chosen, best, 1e-5);
    EXPECT_EQ(lp["token_ids"][i], c["token_ids"][i]);
    const int64_t off = lp["text_offset"][i];
    EXPECT_GE(off, prev);
    prev = off;
  }
}

TEST_F(ServeTest, ChatShapeLogprobsAndGreedyMatchesGenerate) {
  auto [status, r] =
      Post("/v1/chat/completions",
           Chat({{"logprobs", true}, {"top_logprobs", 2}, {"return_token_ids", true}}));
  ASSERT_EQ(status, 200) << r.dump();
  EXPECT_EQ(r["object"], "chat.completion");
  const json& c = r["choices"][0];
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_TRUE(c["message"]["content"].is_string());
  const size_t n = c["token_ids"].size();
  EXPECT_EQ(r["usage"]["completion_tokens"], n);
  const json& content = c["logprobs"]["content"];
  ASSERT_EQ(content.size(), n);
  for (size_t i = 0; i < n; ++i) {
    const json& e = content[i];
    EXPECT_TRUE(e["token"].is_string());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    EXPECT_TRUE(e["bytes"].is_array());
    EXPECT_EQ(e["token_id"], c["token_ids"][i]);
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][0]["token_id"], e["token_id"]);  // greedy
    EXPECT_NEAR(e["top_logprobs"][0]["logprob"].get<double>(), e["logprob"].get<double>(), 1e-6);
    EXPECT_GE(e["top_logprobs"][0]["logprob"].get<double>(),
              e["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_TRUE(e["top_logprobs"][1]["bytes"].is_array());
  }

  CliRun g = harness_->Exec(
      "generate " + model_ +
      " --chat '[{\"role\":\"user\",\"content\":\"hi there\"}]' --max-tokens 10 --greedy --json");
  ASSERT_EQ(g.code, 0) << g.err;
  json gen = json::parse(g.out);
  EXPECT_EQ(c["token_ids"], gen["token_ids"]);
  EXPECT_EQ(r["usage"]["prompt_tokens"], gen["prompt_tokens"]);

  // max_completion_tokens is the newer name of max_tokens.
  json body = Chat({});
  body.erase("max_tokens");
  body["max_completion_tokens"] = 3;
  auto short_answer = Post("/v1/chat/completions", body);
  ASSERT_EQ(short_answer.first, 200) << short_answer.second.dump();
  EXPECT_LE(short_answer.second["usage"]["completion_tokens"].get<int>(), 3);
}

TEST_F(ServeTest, ChatStreamingMatchesNonStreaming) {
  auto whole = Post("/v1/chat/completions", Chat({{"max_tokens", 16}}));
  ASSERT_EQ(whole.first, 200);
  int status = 0;
  std::vector<std::string> events = PostStream(
      "/v1/chat/completions",
      Chat({{"max_tokens", 16}, {"stream", true}, {"stream_options", {{"include_usage", true}}}}),
      &status);
  ASSERT_EQ(status, 200);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content;
  std::string finish;
  bool saw_role = false, saw_usage = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i], nullptr, false);
    ASSERT_FALSE(chunk.is_discarded()) << events[i];
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["model"], kModelName);
    if (chunk.contains("usage") && !chunk["usage"].is_null()) {
      saw_usage = true;
      EXPECT_TRUE(chunk["choices"].empty());
      EXPECT_EQ(chunk["usage"], whole.second["usage"]);
      continue;
    }
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("role")) saw_role = true;
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(saw_role);
  EXPECT_TRUE(saw_usage);
  EXPECT_EQ(content, whole.second["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, whole.second["choices"][0]["finish_reason"]);
}

TEST_F(ServeTest, CompletionStreamingWithLogprobs) {
  auto whole = Post("/v1/completions", Completion({{"logprobs", 2}, {"max_tokens", 16}}));
  ASSERT_EQ(whole.first, 200);
  int status = 0;
  std::vector<std::string> events =
      PostStream("/v1/completions",
                 Completion({{"logprobs", 2}, {"max_tokens", 16}, {"stream", true}}), &status);
  ASSERT_EQ(status, 200);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  json tokens = json::array(), lps = json::array();
  std::string finish;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    const json& c = chunk["choices"][0];
    text += c["text"].get<std::string>();
    if (c["logprobs"].is_object()) {
      for (const json& t : c["logprobs"]["tokens"]) tokens.push_back(t);
      for (const json& l : c["logprobs"]["token_logprobs"]) lps.push_back(l);
    }
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  const json& ref = whole.second["choices"][0];
  EXPECT_EQ(text, ref["text"]);
  EXPECT_EQ(finish, ref["finish_reason"]);
  EXPECT_EQ(tokens, ref["logprobs"]["tokens"]);
  ASSERT_EQ(lps.size(), ref["logprobs"]["token_logprobs"].size());
  for (size_t i = 0; i < lps.size(); ++i)
    EXPECT_DOUBLE_EQ(lps[i].get<double>(), ref["logprobs"]["token_logprobs"][i].get<double>());
}

TEST_F(ServeTest, StopStringCutsTheText) {
  auto whole = Post("/v1/completions", Completion({{"max_tokens", 24}, {"ignore_eos", true}}));
  ASSERT_EQ(whole.first, 200);
  const std::string text = whole.second["choices"][0]["text"];
  // Two characters from the middle of the greedy text (whatever they are).
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(text.size());
  ASSERT_GE(starts.size(), 7u) << "greedy text too short: " << text;
  const size_t begin = starts[4], end = starts[6];
  const std::string stop = text.substr(begin, end - begin);
  const std::string expected = text.substr(0, text.find(stop));
  auto cut = Post("/v1/completions",
                  Completion({{"max_tokens", 24}, {"ignore_eos", true}, {"stop", stop}}));
  ASSERT_EQ(cut.first, 200) << cut.second.dump();
  EXPECT_EQ(cut.second["choices"][0]["text"], expected);
  EXPECT_EQ(cut.second["choices"][0]["finish_reason"], "stop");
  int status = 0;
  std::vector<std::string> events = PostStream("/v1/completions",
                                               Completion({{"max_tokens", 24},
                                                           {"ignore_eos", true},
                                                           {"stop", {stop, "never-seen"}},
                                                           {"stream", true}}),
                                               &status);
  std::string streamed;
  for (size_t i = 0; i + 1 < events.size(); ++i)
    streamed += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(streamed, expected);
}

TEST_F(ServeTest, ConcurrentRequestsGetTheSameAnswers) {
  json body = Completion({{"max_tokens", 20}, {"ignore_eos", true}, {"return_token_ids", true}});
  auto ref = Post("/v1/completions", body);
  ASSERT_EQ(ref.first, 200);
  std::vector<std::future<std::pair<int, json>>> futures;
  for (int i = 0; i < 6; ++i)
    futures.push_back(
        std::async(std::launch::async, [&] { return Post("/v1/completions", body); }));
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_EQ(r.first, 200);
    EXPECT_EQ(r.second["choices"][0]["token_ids"], ref.second["choices"][0]["token_ids"]);
  }
}

TEST_F(ServeTest, ConcurrentDifferentRequestsMatchEachAlone) {
  // Requests that share the batch (different prompts, lengths, seeds) get what
  // each gets alone.
  std::vector<json> bodies;
  for (int i = 0; i < 5; ++i) {
    bodies.push_back(Completion({{"prompt", std::string(1 + 3 * i, 'a' + i)},
                                 {"max_tokens", 8 + 4 * i},
                                 {"ignore_eos", true},
                                 {"temperature", i % 2 ? 0.8 : 0.0},
                                 {"seed", 100 + i},
                                 {"return_token_ids", true}}));
  }
  std::vector<json> alone;
  for (const json& b : bodies) {
    auto r = Post("/v1/completions", b);
    ASSERT_EQ(r.first, 200) << r.second.dump();
    alone.push_back(r.second["choices"][0]["token_ids"]);
  }
  std::vector<std::future<std::pair<int, json>>> futures;
  for (const json& b : bodies) {
    futures.push_back(std::async(std::launch::async, [b] { return Post("/v1/completions", b); }));
  }
  for (size_t i = 0; i < futures.size(); ++i) {
    auto r = futures[i].get();
    ASSERT_EQ(r.first, 200);
    EXPECT_EQ(r.second["choices"][0]["token_ids"], alone[i]) << "request " << i;
  }
}

TEST_F(ServeTest, BadRequestsGetOpenAiErrors) {
  ExpectApiError(Post("/v1/completions", std::string("{not json")), 400, "JSON");
  ExpectApiError(Post("/v1/chat/completions", std::string("[1, 2]")), 400);
  ExpectApiError(Post("/v1/completions", json{{"model", kModelName}}), 400, "prompt");
  ExpectApiError(Post("/v1/completions", Completion({{"temperature", "hot"}})), 400, "temperature");
  ExpectApiError(Post("/v1/completions", Completion({{"temperature", -1}})), 400, "temperature");
  ExpectApiError(Post("/v1/completions", Completion({{"top_p", 0}})), 400, "top_p");
  ExpectApiError(Post("/v1/completions", Completion({{"max_tokens", 0}})), 400, "max_tokens");
  ExpectApiError(Post("/v1/completions", Completion({{"max_tokens", 2.5}})), 400, "max_tokens");
  ExpectApiError(Post("/v1/completions", Completion({{"max_tokens", 100000}})), 400, "2048");
  ExpectApiError(Post("/v1/completions", Completion({{"max_tokens", 2045}})), 400,
                 "context length");
  ExpectApiError(Post("/v1/completions", Completion({{"n", 17}})), 400, "n");
  ExpectApiError(Post("/v1/completions", Completion({{"n", "two"}})), 400, "n");
  ExpectApiError(Post("/v1/completions", Completion({{"stop", 5}})), 400, "stop");
  ExpectApiError(Post("/v1/completions", Completion({{"logprobs", 21}})), 400, "logprobs");
  ExpectApiError(Post("/v1/completions", Completion({{"prompt", {1, 99999}}})), 400, "token ids");
  ExpectApiError(Post("/v1/completions", Completion({{"prompt", ""}})), 400, "empty");
  ExpectApiError(Post("/v1/completions", Completion({{"echo", true}, {"stream", true}})), 400,
                 "echo");
  ExpectApiError(Post("/v1/completions", Completion({{"max_tokens", 0}, {"prompt", {"a", "b"}}})),
                 400, "max_tokens");
  ExpectApiError(Post("/v1/completions", Completion({{"stream", "yes"}})), 400, "stream");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"messages", "hi"}})), 400, "messages");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"messages", json::array()}})), 400,
                 "messages");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"messages", {{{"content", "no role"}}}}})),
                 400, "role");
  ExpectApiError(
      Post("/v1/chat/completions", Chat({{"messages", {{{"role", "user"}, {"content", 7}}}}})), 400,
      "content");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"top_logprobs", 3}})), 400, "logprobs");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"logprobs", true}, {"top_logprobs", 21}})),
                 400, "top_logprobs");
  ExpectApiError(Post("/v1/chat/completions", Chat({{"logprobs", 2}})), 400, "logprobs");

  auto unknown = Post("/v1/chat/completions", Chat({{"model", "gpt-4o"}}));
  ExpectApiError(unknown, 404, "gpt-4o");
  EXPECT_EQ(unknown.second["error"]["code"], "model_not_found");

  // Over --max-request-bytes (4096): 413 with an OpenAI-style body.
  auto big = Post("/v1/completions", Completion({{"prompt", std::string(10000, 'x')}}));
  ExpectApiError(big, 413, "max-request-bytes");

  // Content parts are accepted (text only).
  auto parts =
      Post("/v1/chat/completions",
           Chat({{"messages",
                  {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi there"}}}}}}}}));
  EXPECT_EQ(parts.first, 200) << parts.second.dump();

  // The server is still fine after all that.
  auto ok = Post("/v1/completions", Completion({}));
  EXPECT_EQ(ok.first, 200);
}

// Structured output and tool calls are refused, not answered with free text.
TEST_F(ServeTest, ResponseFormatAndToolsAre400) {
  const json tools = {{{"type", "function"},
                       {"function", {{"name", "add"}, {"parameters", {{"type", "object"}}}}}}};
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    SCOPED_TRACE(path);
    const bool chat = std::string(path) == "/v1/chat/completions";
    auto body = [&](json extra) { return chat ? Chat(extra) : Completion(extra); };
    auto r = Post(path, body({{"response_format", {{"type", "json_object"}}}}));
    ExpectApiError(r, 400, "\"response_format\" is not supported");
    EXPECT_EQ(r.second["error"]["param"], "response_format");
    r = Post(path, body({{"tools", tools}}));
    ExpectApiError(r, 400, "\"tools\" is not supported");
    EXPECT_EQ(r.second["error"]["param"], "tools");
    ExpectApiError(Post(path, body({{"tool_choice", "required"}})), 400, "tool_choice");
    // The neutral values still work.
    auto ok = Post(path, body({{"response_format", {{"type", "text"}}}, {"tool_choice", "none"}}));
    EXPECT_EQ(ok.first, 200) << ok.second.dump();
    EXPECT_TRUE(ok.second["choices"][0].contains("stop_reason"));
  }
}

// The log-prob of token t under the logits at t - 1, from
// `retort eval --token-ids --dump-logits` on the same tokens (f64), and
// whether token t was the most likely there.
struct DumpedScores {
  std::vector<double> logprobs;
  std::vector<bool> greedy;
};
DumpedScores ScoresFromEvalDump(CliHarness& harness, const std::string& model,
                                const std::vector<int32_t>& ids) {
  static int n = 0;
  const std::string out =
      (harness.root() / ("logits" + std::to_string(n++) + ".safetensors")).string();
  std::string list;
  for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  CliRun r = harness.Exec("eval " + model + " --token-ids " + list + " --dump-logits " + out);
  EXPECT_EQ(r.code, 0) << r.err;
  DumpedScores scores;
  auto reader = SafetensorsReader::Open(out);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return scores;
  auto logits = (*reader)->Get("logits");
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok() || logits->dim(0) != static_cast<int64_t>(ids.size())) return scores;
  const int64_t vocab = logits->dim(1);
  for (size_t t = 1; t < ids.size(); ++t) {
    const float* row = logits->data<float>() + (t - 1) * vocab;
    const float* top = std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - *top);
    scores.logprobs.push_back(static_cast<double>(row[ids[t]]) - *top - std::log(sum));
    scores.greedy.push_back(row[ids[t]] == *top);
  }
  return scores;
}

std::vector<int32_t> FirstIds(const json& ids, size_t n) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < n && i < ids.size(); ++i) out.push_back(ids[i].get<int32_t>());
  return out;
}

// What lm-evaluation-harness's local-completions sends for a log-likelihood
// task, and how its parse_logprobs reads the answer: the prompt log-probs
// must be those of `retort eval --dump-logits`.
TEST_F(ServeTest, LmEvalLoglikelihoodMatchesEvalDumpLogits) {
  const std::vector<std::vector<int32_t>> prompts = {{72, 101, 108, 108, 111, 44, 32, 119},
                                                     {84, 104, 101, 32, 99, 97, 116, 32, 115}};
  // Token ids (tokenized_requests=True), score only and as lm-eval sends it
  // (max_tokens 1: the last entry is the generated token, which it drops).
  for (int max_tokens : {0, 1}) {
    SCOPED_TRACE(max_tokens);
    auto r = Post("/v1/completions", json{{"model", kModelName},
                                          {"prompt", prompts},
                                          {"temperature", 0},
                                          {"max_tokens", max_tokens},
                                          {"logprobs", 1},
                                          {"seed", 1234},
                                          {"echo", true}});
    ASSERT_EQ(r.first, 200) << r.second.dump();
    ASSERT_EQ(r.second["choices"].size(), 2u);
    for (size_t p = 0; p < prompts.size(); ++p) {
      const json& choice = r.second["choices"][p];
      EXPECT_EQ(choice["index"], p);
      const json& lp = choice["logprobs"];
      const size_t n = prompts[p].size();
      ASSERT_EQ(lp["token_logprobs"].size(), n + max_tokens);
      ASSERT_EQ(lp["top_logprobs"].size(), n + max_tokens);
      EXPECT_TRUE(lp["token_logprobs"][0].is_null());
      EXPECT_TRUE(lp["top_logprobs"][0].is_null());
      EXPECT_EQ(FirstIds(lp["token_ids"], n), prompts[p]);
      const DumpedScores dumped = ScoresFromEvalDump(*harness_, model_, prompts[p]);
      ASSERT_EQ(dumped.logprobs.size(), n - 1);
      for (size_t t = 1; t < n; ++t) {
        EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), dumped.logprobs[t - 1], 1e-4)
            << "prompt " << p << " token " << t;
        // lm-eval's is_greedy: the token's log-prob is the top one's.
        double best = -1e30;
        for (const auto& [token, v] : lp["top_logprobs"][t].items())
          best = std::max(best, v.get<double>());
        EXPECT_EQ(lp["token_logprobs"][t].get<double>() == best, dumped.greedy[t - 1]) << t;
      }
    }
  }

  // Text prompts (tokenized_requests=False): the server's tokens, scored the same.
  auto r = Post("/v1/completions", json{{"model", kModelName},
                                        {"prompt", {"Hello, w", "The cat s"}},
                                        {"temperature", 0},
                                        {"max_tokens", 1},
                                        {"logprobs", 1},
                                        {"echo", true}});
  ASSERT_EQ(r.first, 200) << r.second.dump();
  for (size_t p = 0; p < 2; ++p) {
    const json& choice = r.second["choices"][p];
    EXPECT_EQ(choice["text"].get<std::string>().rfind(p == 0 ? "Hello, w" : "The cat s", 0), 0u);
    const json& lp = choice["logprobs"];
    const std::vector<int32_t> ids = FirstIds(lp["token_ids"], lp["token_ids"].size() - 1);
    const DumpedScores dumped = ScoresFromEvalDump(*harness_, model_, ids);
    ASSERT_EQ(dumped.logprobs.size(), ids.size() - 1);
    for (size_t t = 1; t < ids.size(); ++t) {
      EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), dumped.logprobs[t - 1], 1e-4);
    }
  }
}

// vLLM's prompt_logprobs, as a distillation teacher is asked (token ids,
// max_tokens 1) and for text prompts: the prompt tokens' log-probs are echo's
// token_logprobs, in vLLM's layout.
TEST_F(ServeTest, PromptLogprobsEqualEchoLogprobs) {
  const json prompts = {{72, 101, 108, 108, 111, 44, 32, 119}, "The cat s"};
  auto scored = Post(
      "/v1/completions",
      json{{"model", kModelName}, {"prompt", prompts}, {"max_tokens", 1}, {"prompt_logprobs", 3}});
  auto echoed = Post("/v1/completions", json{{"model", kModelName},
                                             {"prompt", prompts},
                                             {"max_tokens", 0},
                                             {"logprobs", 3},
                                             {"echo", true}});
  ASSERT_EQ(scored.first, 200) << scored.second.dump();
  ASSERT_EQ(echoed.first, 200) << echoed.second.dump();
  ASSERT_EQ(scored.second["choices"].size(), 2u);
  for (size_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(p);
    const json& choice = scored.second["choices"][p];
    EXPECT_EQ(choice["finish_reason"], "length");
    EXPECT_TRUE(choice["logprobs"].is_null());
    const json& lp = choice["prompt_logprobs"];
    const json& echo = echoed.second["choices"][p]["logprobs"];
    ASSERT_TRUE(lp.is_array()) << choice.dump();
    ASSERT_EQ(lp.size(), echo["token_ids"].size());
    EXPECT_TRUE(lp[0].is_null());
    for (size_t t = 1; t < lp.size(); ++t) {
      const std::string id = std::to_string(echo["token_ids"][t].get<int32_t>());
      ASSERT_TRUE(lp[t].is_object() && lp[t].contains(id)) << lp[t].dump();
      const json& token = lp[t][id];
      EXPECT_EQ(token["logprob"].get<double>(), echo["token_logprobs"][t].get<double>()) << t;
      EXPECT_EQ(token["decoded_token"], echo["tokens"][t]);
      // The token and the top 3 (ranks 1..3, most likely first), 3 or 4 keys.
      EXPECT_GE(lp[t].size(), 3u);
      EXPECT_LE(lp[t].size(), 4u);
      double best = -1e30;
      for (const auto& [key, v] : echo["top_logprobs"][t].items())
        best = std::max(best, v.get<double>());
      std::vector<double> by_rank(4, 0);
      for (const auto& [key, v] : lp[t].items()) {
        ASSERT_GE(v["rank"].get<int>(), 1) << lp[t].dump();
        if (v["rank"].get<int>() <= 3) by_rank[v["rank"].get<int>()] = v["logprob"].get<double>();
      }
      EXPECT_EQ(by_rank[1], best) << lp[t].dump();
      EXPECT_GE(by_rank[1], by_rank[2]);
      EXPECT_GE(by_rank[2], by_rank[3]);
      EXPECT_EQ(token["rank"].get<int>() == 1, token["logprob"].get<double>() == best) << t;
    }
  }
  // As vLLM: an integer >= 0, not with stream.
  ExpectApiError(Post("/v1/completions", Completion({{"prompt_logprobs", -1}})), 400,
                 "prompt_logprobs");
  ExpectApiError(Post("/v1/completions", Completion({{"prompt_logprobs", 1}, {"stream", true}})),
                 400, "prompt_logprobs");
}

TEST_F(ServeTest, LogsOneLinePerRequest) {
  ASSERT_EQ(Post("/v1/completions", Completion({{"max_tokens", 2}})).first, 200);
  // The line is written after the response is sent: give the server a moment.
  std::string err;
  for (int i = 0; i < 100; ++i) {
    err = server_->Stderr();
    if (err.find("prompt_tokens=5") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(err.find("POST /v1/completions 200"), std::string::npos) << err;
  EXPECT_NE(err.find("prompt_tokens=5"), std::string::npos) << err;
}

// A separate server: SIGTERM while a long request runs -> it ends, the server
// exits 0 and no longer accepts connections.
TEST(ServeShutdownTest, SigtermFinishesInFlightAndExitsZero) {
  CliHarness h("serve_shutdown_test");
  const std::string model = (h.root() / "tiny").string();
  ASSERT_EQ(h.Exec("init " + model + " --family llama --size tiny --dtype f32 --seed 3").code, 0);
  ServeProcess server;
  std::string error;
  ASSERT_TRUE(server.Start({model, "--shutdown-grace", "0.2", "--threads", "2"},
                           (h.root() / "err").string(), &error))
      << error;
  const int port = server.port();
  auto request = std::async(std::launch::async, [port] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    // 16 x 2000 tokens: seconds of work, cut short by the 0.2 s grace.
    json body = {
        {"prompt", "x"}, {"max_tokens", 2000}, {"n", 16}, {"ignore_eos", true}, {"temperature", 0}};
    auto res = c.Post("/v1/completions", body.dump(), "application/json");
    return res ? std::make_pair(res->status, res->body) : std::make_pair(-1, std::string());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.Stderr();
  auto [status, body] = request.get();
  EXPECT_EQ(status, 200) << body;
  json r = json::parse(body, nullptr, false);
  ASSERT_TRUE(r.is_object()) << body;
  ASSERT_EQ(r["choices"].size(), 16u);
  EXPECT_EQ(r["choices"][15]["finish_reason"], "abort");
  EXPECT_NE(server.Stderr().find("SIGTERM"), std::string::npos);

  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/health"));
}

// A template whose generation prompt ends with "<think>\n" (as R1-Distill's
// does): the answer opens inside the reasoning, so without a </think> all of
// it is reasoning_content, streamed as delta.reasoning_content.
TEST(ServeReasoningTest, ThinkPromptPutsTheAnswerInReasoningContent) {
  CliHarness h("serve_reasoning_test");
  const std::string model = (h.root() / "tiny").string();
  ASSERT_EQ(h.Exec("init " + model + " --family llama --size tiny --dtype f32 --seed 5").code, 0);
  const std::string config_path = model + "/tokenizer_config.json";
  json config = json::parse(ReadFileToString(config_path).value());
  std::string tmpl = config["chat_template"];
  const std::string gen = "'<|im_start|>assistant\\n'";
  ASSERT_NE(tmpl.find(gen), std::string::npos) << tmpl;
  tmpl.replace(tmpl.find(gen), gen.size(), "'<|im_start|>assistant\\n<think>\\n'");
  config["chat_template"] = tmpl;
  ASSERT_TRUE(WriteFileAtomically(config_path, config.dump()).ok());

  ServeProcess server;
  std::string error;
  ASSERT_TRUE(server.Start({model, "--threads", "2"}, (h.root() / "err").string(), &error))
      << error;
  httplib::Client c("127.0.0.1", server.port());
  json body = {{"messages", {{{"role", "user"}, {"content", "think first"}}}},
               {"max_tokens", 12},
               {"temperature", 0},
               {"ignore_eos", true}};
  auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json r = json::parse(res->body);
  const json& message = r["choices"][0]["message"];
  ASSERT_TRUE(message.contains("reasoning_content")) << res->body;
  const std::string reasoning = message["reasoning_content"];
  const std::string content = message["content"];
  // The model is random: it almost surely never writes "</think>".
  if (reasoning.find("</think>") == std::string::npos) {
    EXPECT_FALSE(reasoning.empty());
    EXPECT_EQ(content, "");
  }

  body["stream"] = true;
  auto streamed = c.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(streamed);
  std::string got_reasoning, got_content;
  size_t pos = 0;
  while ((pos = streamed->body.find("data: ", pos)) != std::string::npos) {
    size_t end = streamed->body.find("\n\n", pos);
    std::string payload = streamed->body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") break;
    json chunk = json::parse(payload);
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("reasoning_content"))
      got_reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("content")) got_content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(got_reasoning, reasoning);
  EXPECT_EQ(got_content, content);

  // --reasoning-parser none leaves everything in content.
  EXPECT_EQ(server.Stop(SIGINT), 0);
  ServeProcess plain;
  ASSERT_TRUE(plain.Start({model, "--threads", "2", "--reasoning-parser", "none"},
                          (h.root() / "err2").string(), &error))
      << error;
  httplib::Client c2("127.0.0.1", plain.port());
  body.erase("stream");
  auto none = c2.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(none);
  json n = json::parse(none->body);
  EXPECT_FALSE(n["choices"][0]["message"].contains("reasoning_content"));
  EXPECT_EQ(n["choices"][0]["message"]["content"], reasoning + content);
}

TEST(ServeUsageTest, RejectsBadFlags) {
  CliHarness h("serve_usage_test");
  EXPECT_EQ(h.Exec("serve --no-such-option").code, 2);
  EXPECT_EQ(h.Exec("serve /nonexistent --port 70000").code, 2);
  EXPECT_EQ(h.Exec("serve /nonexistent --reasoning-parser bogus").code, 2);
  CliRun r = h.Exec("serve /nonexistent/model --port 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace retort
