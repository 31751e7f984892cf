// `retort serve` against hostile clients, end to end: a real server process
// on a tiny random model, spoken to with cpp-httplib and with raw sockets
// where a client misbehaves (slow headers, hang-ups, oversized or deeply
// nested bodies, missing keys).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"
#include "tests/cli/serve_process.h"

namespace retort {
namespace {

using nlohmann::json;
using testing::CliHarness;
using testing::ServeProcess;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A tiny model and a server over it with `flags`.
class Served {
 public:
  Served(const std::string& name, const std::vector<std::string>& flags) : h_(name) {
    model_ = (h_.root() / "tiny").string();
    ok_ = h_.Exec("init " + model_ + " --family llama --size tiny --dtype f32 --seed 7").code == 0;
    if (!ok_) return;
    std::vector<std::string> args = {model_, "--threads", "2"};
    args.insert(args.end(), flags.begin(), flags.end());
    ok_ = server_.Start(args, (h_.root() / "serve.err").string(), &error_);
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  ServeProcess& server() { return server_; }
  int port() const { return server_.port(); }
  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server_.port());
    c.set_read_timeout(30, 0);
    return c;
  }
  // Waits up to `timeout_s` for `needle` in the server's stderr.
  bool LogHas(const std::string& needle, double timeout_s = 5) {
    const Clock::time_point start = Clock::now();
    do {
      if (server_.Stderr().find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (SecondsSince(start) < timeout_s);
    return false;
  }

 private:
  CliHarness h_;
  std::string model_;
  ServeProcess server_;
  bool ok_ = false;
  std::string error_;
};

// A raw TCP client, for what httplib's client will not do.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Close();
  }
  ~RawConnection() { Close(); }
  bool connected() const { return fd_ >= 0; }
  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (fd_ >= 0 && sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return sent == bytes.size();
  }
  // Reads until `needle` has arrived, the peer closes or `timeout_s` passes.
  std::string ReadUntil(const std::string& needle, double timeout_s) {
    std::string got;
    const Clock::time_point start = Clock::now();
    while (fd_ >= 0 && got.find(needle) == std::string::npos && SecondsSince(start) < timeout_s) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  // Whether the server closes the connection within `timeout_s` (reading and
  // dropping whatever it sends first).
  bool ClosedByServerWithin(double timeout_s) {
    const Clock::time_point start = Clock::now();
    while (fd_ >= 0 && SecondsSince(start) < timeout_s) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      if (::recv(fd_, buf, sizeof(buf), 0) <= 0) return true;
    }
    return false;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string PostHead(const std::string& path, size_t length, const std::string& extra = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
         extra + "Content-Length: " + std::to_string(length) + "\r\n\r\n";
}

int StatusOf(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : -1;
}

json BodyOf(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  if (at == std::string::npos) return json();
  return json::parse(response.substr(at + 4), nullptr, false);
}

void ExpectOpenAiError(const json& body, const std::string& needle) {
  ASSERT_TRUE(body.is_object() && body.contains("error")) << body.dump();
  const std::string message = body["error"].value("message", "");
  EXPECT_NE(message.find(needle), std::string::npos) << body.dump();
  EXPECT_TRUE(body["error"]["type"].is_string()) << body.dump();
}

// 200,000 levels of nesting killed the server (the parser recursed off the
// stack); now it is a 400 and the server goes on answering.
TEST(ServeHardeningTest, DeepJsonIs400AndTheServerStillAnswers) {
  Served s("serve_deep_test", {});
  ASSERT_TRUE(s.ok()) << s.error();
  const int depth = 200000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  for (const auto& [path, body] :
       {std::pair<std::string, std::string>{
            "/v1/chat/completions", R"({"messages": [{"role": "user", "content": )" + deep + "}]}"},
        {"/v1/completions", R"({"prompt": )" + deep + "}"},
        {"/v1/completions", std::string(depth, '{')}}) {
    SCOPED_TRACE(path);
    auto res = s.Client().Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(res) << "no answer: " << res.error();
    EXPECT_EQ(res->status, 400);
    ExpectOpenAiError(json::parse(res->body, nullptr, false), "more than 64 levels deep");
    auto health = s.Client().Get("/health");
    ASSERT_TRUE(health) << "the server stopped answering";
    EXPECT_EQ(health->status, 200);
  }
}

// Over --max-request-bytes: 413 from the declared length before the body is
// read, and from the bytes themselves when the length is not declared.
TEST(ServeHardeningTest, OversizedBodiesAre413) {
  Served s("serve_413_test", {"--max-request-bytes", "4096"});
  ASSERT_TRUE(s.ok()) << s.error();
  const std::string big = json{{"prompt", std::string(10000, 'x')}}.dump();
  auto res = s.Client().Post("/v1/completions", big, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  ExpectOpenAiError(json::parse(res->body, nullptr, false), "--max-request-bytes");

  // A declared 10 GB is refused at once, without waiting for any of it.
  RawConnection huge(s.port());
  ASSERT_TRUE(huge.connected());
  const Clock::time_point start = Clock::now();
  ASSERT_TRUE(huge.Send(PostHead("/v1/completions", 10000000000ULL)));
  std::string answer = huge.ReadUntil("}}", 5);
  EXPECT_EQ(StatusOf(answer), 413) << answer;
  EXPECT_LT(SecondsSince(start), 2.0);

  // Chunked, with no length: cut off once the bytes pass the limit.
  RawConnection chunked(s.port());
  ASSERT_TRUE(chunked.connected());
  std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 100; ++i) request += "400\r\n" + std::string(1024, 'x') + "\r\n";
  request += "0\r\n\r\n";
  chunked.Send(request);
  answer = chunked.ReadUntil("}}", 5);
  EXPECT_EQ(StatusOf(answer), 413) << answer;

  auto health = s.Client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

void ExpectKeyChecks(Served& s, const std::string& key) {
  httplib::Client c = s.Client();
  const std::string body = json{{"prompt", "Hello"}, {"max_tokens", 2}}.dump();
  // /health stays open.
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  for (const std::string& header :
       std::vector<std::string>{"", "Bearer wrong-key", "Basic " + key, key}) {
    SCOPED_TRACE(header);
    httplib::Headers headers;
    if (!header.empty()) headers.emplace("Authorization", header);
    auto models = c.Get("/v1/models", headers);
    ASSERT_TRUE(models);
    EXPECT_EQ(models->status, 401);
    EXPECT_EQ(models->get_header_value("WWW-Authenticate"), "Bearer");
    json error = json::parse(models->body, nullptr, false);
    ExpectOpenAiError(error, "");
    EXPECT_EQ(error["error"]["code"], "invalid_api_key");
    EXPECT_EQ(models->body.find(key), std::string::npos);
    // A POST is refused before its body is read, and the answer arrives whole.
    auto post = c.Post("/v1/completions", headers, body, "application/json");
    ASSERT_TRUE(post) << post.error();
    EXPECT_EQ(post->status, 401);
    EXPECT_EQ(json::parse(post->body, nullptr, false)["error"]["code"], "invalid_api_key");
  }
  httplib::Headers good = {{"Authorization", "Bearer " + key}};
  auto models = c.Get("/v1/models", good);
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  auto post = c.Post("/v1/completions", good, body, "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 200) << post->body;
  EXPECT_EQ(json::parse(post->body)["choices"].size(), 1u);
}

TEST(ServeHardeningTest, ApiKeyFromTheFlag) {
  Served s("serve_key_flag_test", {"--api-key", "sk-flag-123"});
  ASSERT_TRUE(s.ok()) << s.error();
  ExpectKeyChecks(s, "sk-flag-123");
}

TEST(ServeHardeningTest, ApiKeyFromTheEnvironment) {
  ::setenv("RETORT_API_KEY", "sk-env-456", 1);
  Served s("serve_key_env_test", {});
  ::unsetenv("RETORT_API_KEY");
  ASSERT_TRUE(s.ok()) << s.error();
  ExpectKeyChecks(s, "sk-env-456");
}

TEST(ServeHardeningTest, RequestTokenBudget) {
  Served s("serve_budget_test", {"--max-request-tokens", "100"});
  ASSERT_TRUE(s.ok()) << s.error();
  auto over = s.Client().Post("/v1/completions",
                              json{{"prompt", "Hi"}, {"n", 4}, {"max_tokens", 30}}.dump(),
                              "application/json");
  ASSERT_TRUE(over);
  EXPECT_EQ(over->status, 400);
  ExpectOpenAiError(json::parse(over->body, nullptr, false),
                    "4 choices (prompts x n) x \"max_tokens\" 30 = 120 tokens; this server "
                    "generates at most 100 tokens per request");
  auto fits = s.Client().Post(
      "/v1/completions",
      json{{"prompt", "Hi"}, {"n", 4}, {"max_tokens", 25}, {"ignore_eos", true}}.dump(),
      "application/json");
  ASSERT_TRUE(fits);
  EXPECT_EQ(fits->status, 200) << fits->body;
  EXPECT_EQ(json::parse(fits->body)["usage"]["completion_tokens"], 100);
}

// Without --host the server listens on 127.0.0.1 alone: /proc/net/tcp lists
// its port bound to 0100007F, never to 00000000 (every interface).
TEST(ServeHardeningTest, BindsLoopbackByDefault) {
  Served s("serve_bind_test", {});
  ASSERT_TRUE(s.ok()) << s.error();
  EXPECT_EQ(s.server().host(), "127.0.0.1");
  char port_hex[8];
  std::snprintf(port_hex, sizeof(port_hex), "%04X", s.port());
  std::ifstream tcp("/proc/net/tcp");
  ASSERT_TRUE(tcp) << "no /proc/net/tcp";
  std::string line;
  std::vector<std::string> listening;  // local addresses with our port, state 0A (LISTEN)
  while (std::getline(tcp, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state;
    in >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() > 5 && local.substr(local.size() - 4) == port_hex)
      listening.push_back(local.substr(0, local.size() - 5));
  }
  EXPECT_EQ(listening, std::vector<std::string>{"0100007F"});
}

// Slow clients holding every connection are closed for a new one: with room
// for 2, four clients stuck in their headers do not keep a fifth waiting.
TEST(ServeHardeningTest, SlowClientsAreEvictedForNewOnes) {
  Served s("serve_evict_test", {"--max-connections", "2", "--read-timeout", "60"});
  ASSERT_TRUE(s.ok()) << s.error();
  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(std::make_unique<RawConnection>(s.port()));
    ASSERT_TRUE(slow.back()->connected());
    ASSERT_TRUE(slow.back()->Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const Clock::time_point start = Clock::now();
  auto res = s.Client().Post("/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 2}}.dump(),
                             "application/json");
  ASSERT_TRUE(res) << res.error();
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(SecondsSince(start), 2.0);
  // The two oldest went first.
  EXPECT_TRUE(slow[0]->ClosedByServerWithin(2));
  EXPECT_TRUE(slow[1]->ClosedByServerWithin(2));
  EXPECT_TRUE(s.LogHas("closed the one idle for")) << s.server().Stderr();
}

// A request must arrive whole within --read-timeout of its first byte, however
// often its bytes trickle in.
TEST(ServeHardeningTest, ReadTimeoutEndsATrickledRequest) {
  Served s("serve_read_timeout_test", {"--read-timeout", "1"});
  ASSERT_TRUE(s.ok()) << s.error();
  RawConnection c(s.port());
  ASSERT_TRUE(c.connected());
  const Clock::time_point start = Clock::now();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnop";
  bool closed = false;
  for (size_t i = 0; i < request.size() && !closed && SecondsSince(start) < 5; ++i) {
    if (!c.Send(request.substr(i, 1))) break;
    closed = c.ClosedByServerWithin(0.2);
  }
  if (!closed) closed = c.ClosedByServerWithin(1);
  EXPECT_TRUE(closed);
  EXPECT_LT(SecondsSince(start), 2.5);
}

// With every connection answering, a new one is refused at once with 503; a
// client that hangs up on its non-streaming request cancels the generation,
// which frees its connection.
TEST(ServeHardeningTest, BusyIs503AndHangingUpCancels) {
  Served s("serve_busy_test", {"--max-connections", "1"});
  ASSERT_TRUE(s.ok()) << s.error();
  RawConnection running(s.port());
  ASSERT_TRUE(running.connected());
  // 16 x 2000 tokens: many seconds of work for the tiny model.
  const std::string body =
      json{{"prompt", "x"}, {"max_tokens", 2000}, {"n", 16}, {"ignore_eos", true}}.dump();
  ASSERT_TRUE(running.Send(PostHead("/v1/completions", body.size()) + body));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  RawConnection refused(s.port());
  ASSERT_TRUE(refused.connected());
  refused.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string answer = refused.ReadUntil("}}", 5);
  EXPECT_EQ(StatusOf(answer), 503) << answer;
  ExpectOpenAiError(BodyOf(answer), "busy");

  const Clock::time_point hung_up = Clock::now();
  running.Close();
  EXPECT_TRUE(s.LogHas("finish=abort client_gone", 5)) << s.server().Stderr();
  EXPECT_LT(SecondsSince(hung_up), 3.0);
  auto health = s.Client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// A request that fails before it is routed (a malformed request line) logs
// its own line, not the fields of the request before it on the connection.
TEST(ServeHardeningTest, AccessLogOfAFailedRequestHasNoStaleFields) {
  Served s("serve_log_test", {});
  ASSERT_TRUE(s.ok()) << s.error();
  RawConnection c(s.port());
  ASSERT_TRUE(c.connected());
  const std::string body = json{{"prompt", "Hello"}, {"max_tokens", 2}}.dump();
  ASSERT_TRUE(c.Send(PostHead("/v1/completions", body.size()) + body));
  std::string first = c.ReadUntil("}}", 10);
  ASSERT_EQ(StatusOf(first), 200) << first;
  ASSERT_TRUE(s.LogHas("prompt_tokens=5"));
  ASSERT_TRUE(c.Send("BOGUS\r\n\r\n"));
  std::string second = c.ReadUntil("}}", 5);
  EXPECT_EQ(StatusOf(second), 400) << second;
  ASSERT_TRUE(s.LogHas(" 400 "));
  const std::string log = s.server().Stderr();
  const size_t line_start = log.rfind('\n', log.find(" 400 "));
  const std::string line = log.substr(line_start + 1, log.find('\n', line_start + 1) - line_start);
  EXPECT_EQ(line.find("prompt_tokens"), std::string::npos) << line;
}

TEST(ServeHardeningTest, RejectsBadLimitFlags) {
  CliHarness h("serve_limit_flags_test");
  for (const char* flags : {"--max-connections 0", "--max-request-tokens -1", "--read-timeout 0",
                            "--keep-alive-timeout -1"}) {
    SCOPED_TRACE(flags);
    testing::CliRun r = h.Exec(std::string("serve /nonexistent ") + flags);
    EXPECT_EQ(r.code, 2) << r.err;
  }
}

}  // namespace
}  // namespace retort
