#include "distill/endpoint.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_limits.h"
#include "core/named_values.h"
#include "core/status.h"
#include "formats/reasoning.h"
#include "httplib.h"
#include "model/sampler.h"

namespace retort {
namespace {

std::string Str(std::string_view s) { return std::string(s.data(), s.size()); }

}  // namespace

// ---------------------------------------------------------------- reasoning

absl::StatusOr<ReasoningSplitter::Mode> ReasoningSplitter::ParseMode(const std::string& name) {
  static constexpr NamedValue<Mode> kModes[] = {
      {Mode::kNone, "none"}, {Mode::kAuto, "auto"}, {Mode::kDeepSeekR1, "deepseek_r1"}};
  if (std::optional<Mode> m = FindNamedValue(kModes, name)) return *m;
  return absl::InvalidArgumentError(
      absl::StrCat("reasoning parser \"", name, "\": expected ", NamesOf(kModes)));
}

ReasoningSplitter::ReasoningSplitter(Mode mode, bool starts_in_reasoning)
    : mode_(mode), state_(State::kContent), strip_open_tag_(false) {
  if (mode == Mode::kNone) {
    state_ = State::kDone;
  } else if (mode == Mode::kDeepSeekR1 || starts_in_reasoning) {
    state_ = State::kReasoning;
    strip_open_tag_ = true;
    saw_reasoning_ = true;
  }
}

void ReasoningSplitter::Emit(std::string_view text, Delta* out) const {
  if (text.empty()) return;
  (state_ == State::kReasoning ? out->reasoning : out->content).append(text.data(), text.size());
}

ReasoningSplitter::Delta ReasoningSplitter::Push(std::string_view text) {
  Delta out;
  pending_.append(text.data(), text.size());
  while (!pending_.empty()) {
    if (state_ == State::kDone) {
      Emit(pending_, &out);
      pending_.clear();
      break;
    }
    if (strip_open_tag_) {
      // Wait until we know whether the output opens with "<think>".
      if (pending_.size() < kReasoningOpenTag.size() &&
          kReasoningOpenTag.substr(0, pending_.size()) == pending_)
        break;
      if (std::string_view(pending_).substr(0, kReasoningOpenTag.size()) == kReasoningOpenTag)
        pending_.erase(0, kReasoningOpenTag.size());
      strip_open_tag_ = false;
      continue;
    }
    const std::string_view tag = state_ == State::kContent ? kReasoningOpenTag : kReasoningCloseTag;
    size_t at = pending_.find(tag.data(), 0, tag.size());
    if (at == std::string::npos) {
      size_t keep = PartialSuffixLength(pending_, tag);
      Emit(std::string_view(pending_).substr(0, pending_.size() - keep), &out);
      pending_.erase(0, pending_.size() - keep);
      break;
    }
    Emit(std::string_view(pending_).substr(0, at), &out);
    pending_.erase(0, at + tag.size());
    if (state_ == State::kContent) {
      state_ = State::kReasoning;
      saw_reasoning_ = true;
    } else {
      state_ = State::kDone;
    }
  }
  return out;
}

ReasoningSplitter::Delta ReasoningSplitter::Finish() {
  Delta out;
  strip_open_tag_ = false;
  Emit(pending_, &out);
  pending_.clear();
  return out;
}

ReasoningSplitter::Delta ReasoningSplitter::Split(std::string_view text, Mode mode,
                                                  bool starts_in_reasoning) {
  ReasoningSplitter splitter(mode, starts_in_reasoning);
  Delta out = splitter.Push(text);
  Delta rest = splitter.Finish();
  out.reasoning += rest.reasoning;
  out.content += rest.content;
  return out;
}

// ---------------------------------------------------------------- client

EndpointClient::EndpointClient(const EndpointOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<EndpointClient>> EndpointClient::Create(
    const EndpointOptions& options) {
  const std::string& url = options.base_url;
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint URL \"", url,
                     "\": expected http://host[:port][/path], e.g. http://127.0.0.1:8080/v1"));
  }
  std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint URL \"", url, "\": scheme must be http or https"));
  }
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (scheme == "https") {
    return absl::UnimplementedError(
        absl::StrCat("endpoint URL \"", url,
                     "\": https needs cpp-httplib built with OpenSSL, and this build has none"));
  }
#endif
  size_t host_begin = scheme_end + 3;
  size_t path_begin = url.find('/', host_begin);
  std::string authority = url.substr(
      host_begin, path_begin == std::string::npos ? std::string::npos : path_begin - host_begin);
  std::string path = path_begin == std::string::npos ? "" : url.substr(path_begin);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (authority.empty() || authority.find_first_of("?#@ ") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint URL \"", url, "\": missing or unsupported host"));
  }
  if (size_t colon = authority.rfind(':');
      colon != std::string::npos && authority.find(']') == std::string::npos) {
    std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) ||
        std::stoi(port) > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint URL \"", url, "\": bad port \"", port, "\""));
    }
  }
  if (options.model.empty()) return absl::InvalidArgumentError("endpoint: the model name is empty");
  if (options.max_in_flight < 1)
    return absl::InvalidArgumentError("endpoint: max_in_flight must be at least 1");
  if (options.max_retries < 0)
    return absl::InvalidArgumentError("endpoint: max_retries must be >= 0");
  if (!(options.request_timeout_s > 0) || !(options.connect_timeout_s > 0)) {
    return absl::InvalidArgumentError("endpoint: timeouts must be positive");
  }
  if (!(options.initial_backoff_s >= 0) || !(options.max_backoff_s >= 0)) {
    return absl::InvalidArgumentError("endpoint: backoff times must be >= 0");
  }

  std::unique_ptr<EndpointClient> client(new EndpointClient(options));
  client->scheme_host_port_ = absl::StrCat(scheme, "://", authority);
  client->path_prefix_ = path;
  client->api_key_ = options.api_key;
  if (client->api_key_.empty() && !options.api_key_env.empty()) {
    if (const char* env = std::getenv(options.api_key_env.c_str())) client->api_key_ = env;
  }
  client->rng_state_ = options.jitter_seed != 0 ? options.jitter_seed : std::random_device{}();
  for (int i = 0; i < options.max_in_flight; ++i) {
    client->workers_.emplace_back([c = client.get()] { c->WorkerLoop(); });
  }
  return client;
}

EndpointClient::~EndpointClient() {
  std::deque<std::function<void(bool)>> cancelled;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
    cancelled.swap(queue_);
  }
  queue_cv_.notify_all();
  for (auto& task : cancelled) task(/*cancelled=*/true);
  for (std::thread& t : workers_) t.join();
}

void EndpointClient::WorkerLoop() {
  while (true) {
    std::function<void(bool)> task;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task(/*cancelled=*/false);
  }
}

std::string EndpointClient::Url(const std::string& path) const {
  return absl::StrCat(scheme_host_port_, path_prefix_, path);
}

double EndpointClient::BackoffSeconds(int retry, double retry_after_s) const {
  double d = std::min(options_.max_backoff_s,
                      options_.initial_backoff_s * std::ldexp(1.0, std::min(retry, 30)));
  double u;
  {
    std::lock_guard<std::mutex> lock(rng_mu_);
    u = static_cast<double>(SplitMix64(rng_state_) >> 11) * 0x1.0p-53;
  }
  double wait = d * (0.5 + 0.5 * u);
  if (retry_after_s > 0) wait = std::max(wait, std::min(retry_after_s, options_.max_backoff_s));
  return wait;
}

absl::StatusOr<EndpointClient::HttpAnswer> EndpointClient::Attempt(const std::string& method,
                                                                   const std::string& path,
                                                                   const std::string& body) const {
  httplib::Client http(scheme_host_port_);
  auto to_timeval = [](double s, time_t* sec, time_t* usec) {
    *sec = static_cast<time_t>(s);
    *usec = static_cast<time_t>((s - static_cast<double>(*sec)) * 1e6);
  };
  time_t sec, usec;
  to_timeval(options_.connect_timeout_s, &sec, &usec);
  http.set_connection_timeout(sec, usec);
  to_timeval(options_.request_timeout_s, &sec, &usec);
  http.set_read_timeout(sec, usec);
  http.set_write_timeout(sec, usec);
  httplib::Headers headers = {{"Accept", "application/json"}};
  if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
  const std::string full_path = path_prefix_ + path;
  httplib::Result result = method == "GET"
                               ? http.Get(full_path.c_str(), headers)
                               : http.Post(full_path.c_str(), headers, body, "application/json");
  if (!result) {
    const httplib::Error error = result.error();
    std::string what = absl::StrCat(method, " ", Url(path), ": ", httplib::to_string(error));
    if (error == httplib::Error::Read || error == httplib::Error::ConnectionTimeout) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, " (no complete answer within the timeout)"));
    }
    return absl::UnavailableError(what);
  }
  HttpAnswer answer;
  answer.status = result->status;
  answer.body = result->body;
  if (result->has_header("Retry-After")) {
    const std::string v = result->get_header_value("Retry-After");
    char* end = nullptr;
    double s = std::strtod(v.c_str(), &end);
    if (end != v.c_str() && std::isfinite(s)) answer.retry_after_s = s;
  }
  return answer;
}

namespace {

// The server's own message from an OpenAI error body, else the body's start.
std::string ServerMessage(const std::string& body) {
  nlohmann::json j = ParseJson(body, "the answer").value_or(nlohmann::json());
  if (j.is_object()) {
    auto e = j.find("error");
    if (e != j.end()) {
      if (e->is_object() && e->contains("message") && (*e)["message"].is_string())
        return (*e)["message"];
      if (e->is_string()) return *e;
    }
    if (j.contains("message") && j["message"].is_string()) return j["message"];
  }
  return body.size() > 300 ? body.substr(0, 300) + "..." : body;
}

absl::Status StatusForHttp(int status, const std::string& message) {
  static constexpr std::pair<int, absl::StatusCode> kCodes[] = {
      {400, absl::StatusCode::kInvalidArgument},  {413, absl::StatusCode::kInvalidArgument},
      {422, absl::StatusCode::kInvalidArgument},  {401, absl::StatusCode::kUnauthenticated},
      {403, absl::StatusCode::kPermissionDenied}, {404, absl::StatusCode::kNotFound},
      {408, absl::StatusCode::kDeadlineExceeded}, {429, absl::StatusCode::kResourceExhausted}};
  for (const auto& [http, code] : kCodes) {
    if (http == status) return absl::Status(code, message);
  }
  return absl::Status(status >= 500 ? absl::StatusCode::kUnavailable : absl::StatusCode::kUnknown,
                      message);
}

bool Retryable(int status) { return status == 408 || status == 429 || status >= 500; }

}  // namespace

absl::StatusOr<EndpointClient::HttpAnswer> EndpointClient::Exchange(const std::string& method,
                                                                    const std::string& path,
                                                                    const std::string& body,
                                                                    int* attempts) const {
  absl::Status last;
  for (int attempt = 0;; ++attempt) {
    *attempts = attempt + 1;
    absl::StatusOr<HttpAnswer> answer = Attempt(method, path, body);
    double retry_after = -1;
    if (answer.ok()) {
      if (answer->status >= 200 && answer->status < 300) return answer;
      last = StatusForHttp(answer->status,
                           absl::StrCat(method, " ", Url(path), ": HTTP ", answer->status, ": ",
                                        ServerMessage(answer->body)));
      if (!Retryable(answer->status)) return last;
      retry_after = answer->retry_after_s;
    } else {
      last = answer.status();
    }
    if (attempt >= options_.max_retries) {
      return absl::Status(
          last.code(), absl::StrCat(last.message(), " (gave up after ", attempt + 1, " attempts)"));
    }
    std::this_thread::sleep_for(
        std::chrono::duration<double>(BackoffSeconds(attempt, retry_after)));
  }
}

nlohmann::json EndpointClient::BuildChatRequest(const nlohmann::json& messages,
                                                const ChatParams& params) const {
  nlohmann::json body = {{"model", options_.model}, {"messages", messages}};
  if (params.n != 1) body["n"] = params.n;
  if (params.temperature) body["temperature"] = *params.temperature;
  if (params.top_p) body["top_p"] = *params.top_p;
  if (params.max_tokens) body["max_tokens"] = *params.max_tokens;
  if (params.seed) body["seed"] = *params.seed;
  if (!params.stop.empty()) body["stop"] = params.stop;
  if (params.logprobs) {
    body["logprobs"] = true;
    if (params.top_logprobs > 0) body["top_logprobs"] = params.top_logprobs;
  }
  if (params.extra.is_object()) {
    for (auto it = params.extra.begin(); it != params.extra.end(); ++it)
      body[it.key()] = it.value();
  }
  return body;
}

namespace {

// "token_id:123" (vLLM's return_tokens_as_token_ids) -> 123.
int32_t IdFromTokenString(const std::string& token) {
  static const std::string kPrefix = "token_id:";
  if (token.compare(0, kPrefix.size(), kPrefix) != 0 || token.size() == kPrefix.size() ||
      token.size() > 20)
    return -1;
  int64_t v = 0;
  for (size_t i = kPrefix.size(); i < token.size(); ++i) {
    if (token[i] < '0' || token[i] > '9') return -1;
    v = v * 10 + (token[i] - '0');
  }
  return v <= INT32_MAX ? static_cast<int32_t>(v) : -1;
}

TokenLogprob ParseLogprobEntry(const nlohmann::json& e) {
  TokenLogprob t;
  if (auto it = e.find("token"); it != e.end() && it->is_string()) t.token = *it;
  if (auto it = e.find("logprob"); it != e.end() && it->is_number()) t.logprob = it->get<double>();
  if (auto it = e.find("token_id"); it != e.end() && it->is_number_integer()) {
    t.token_id = it->get<int32_t>();
  } else {
    t.token_id = IdFromTokenString(t.token);
  }
  if (auto it = e.find("bytes"); it != e.end() && it->is_array()) {
    for (const auto& b : *it) {
      if (b.is_number_integer()) t.bytes.push_back(static_cast<uint8_t>(b.get<int>()));
    }
  } else {
    t.bytes.assign(t.token.begin(), t.token.end());
  }
  return t;
}

}  // namespace

absl::StatusOr<ChatResponse> EndpointClient::ParseChatResponse(const std::string& body,
                                                               const std::string& source) const {
  nlohmann::json j = ParseJson(body, source).value_or(nlohmann::json());
  if (!j.is_object()) {
    return absl::DataLossError(
        absl::StrCat(source, ": the answer is not a JSON object: ", ServerMessage(body)));
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array()) {
    return absl::DataLossError(absl::StrCat(source, ": the answer has no \"choices\" array"));
  }
  ChatResponse out;
  if (j.contains("id") && j["id"].is_string()) out.id = j["id"];
  if (j.contains("model") && j["model"].is_string()) out.model = j["model"];
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    auto num = [&](const char* key) -> int64_t {
      auto it = u->find(key);
      return it != u->end() && it->is_number_integer() ? it->get<int64_t>() : 0;
    };
    out.usage = {num("prompt_tokens"), num("completion_tokens"), num("total_tokens")};
  }
  int position = 0;
  for (const auto& c : *choices) {
    if (!c.is_object())
      return absl::DataLossError(
          absl::StrCat(source, ": choices[", position, "] is not an object"));
    ChatChoice choice;
    choice.index =
        c.contains("index") && c["index"].is_number_integer() ? c["index"].get<int>() : position;
    if (c.contains("finish_reason") && c["finish_reason"].is_string())
      choice.finish_reason = c["finish_reason"];
    auto message = c.find("message");
    if (message == c.end() || !message->is_object()) {
      return absl::DataLossError(
          absl::StrCat(source, ": choices[", position, "] has no \"message\" object"));
    }
    if (auto it = message->find("content"); it != message->end() && it->is_string())
      choice.content = *it;
    bool has_reasoning = false;
    for (const char* key : {"reasoning_content", "reasoning"}) {
      if (auto it = message->find(key); it != message->end() && it->is_string()) {
        choice.reasoning_content = *it;
        has_reasoning = true;
        break;
      }
    }
    if (!has_reasoning && options_.split_think_tags &&
        choice.content.find(Str(kReasoningCloseTag)) != std::string::npos) {
      ReasoningSplitter::Delta d =
          ReasoningSplitter::Split(choice.content, ReasoningSplitter::Mode::kDeepSeekR1, true);
      choice.reasoning_content = d.reasoning;
      choice.content = d.content;
    }
    if (auto lp = c.find("logprobs"); lp != c.end() && lp->is_object()) {
      choice.has_logprobs = true;
      if (auto content = lp->find("content"); content != lp->end() && content->is_array()) {
        for (const auto& e : *content) {
          if (!e.is_object()) continue;
          GeneratedTokenLogprobs g;
          g.chosen = ParseLogprobEntry(e);
          if (auto top = e.find("top_logprobs"); top != e.end() && top->is_array()) {
            for (const auto& t : *top) {
              if (t.is_object()) g.top.push_back(ParseLogprobEntry(t));
            }
          }
          choice.logprobs.push_back(std::move(g));
        }
      }
    }
    out.choices.push_back(std::move(choice));
    ++position;
  }
  std::stable_sort(out.choices.begin(), out.choices.end(),
                   [](const ChatChoice& a, const ChatChoice& b) { return a.index < b.index; });
  return out;
}

absl::StatusOr<ChatResponse> EndpointClient::ChatCompletion(const nlohmann::json& messages,
                                                            const ChatParams& params) const {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError("chat completion: messages must be a non-empty array");
  }
  if (params.n < 1) return absl::InvalidArgumentError("chat completion: n must be at least 1");
  if (params.top_logprobs < 0 || params.top_logprobs > 20) {
    return absl::InvalidArgumentError("chat completion: top_logprobs must be in 0..20");
  }
  const std::string body = BuildChatRequest(messages, params)
                               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  int attempts = 0;
  absl::StatusOr<HttpAnswer> answer = Exchange("POST", "/chat/completions", body, &attempts);
  if (!answer.ok()) return answer.status();
  absl::StatusOr<ChatResponse> response =
      ParseChatResponse(answer->body, "POST " + Url("/chat/completions"));
  if (response.ok()) response->attempts = attempts;
  return response;
}

template <typename T>
std::future<absl::StatusOr<T>> EndpointClient::RunAsync(const std::string& path,
                                                        std::function<absl::StatusOr<T>()> call) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  std::future<absl::StatusOr<T>> future = promise->get_future();
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_) {
      promise->set_value(absl::CancelledError("endpoint client is shutting down"));
      return future;
    }
    queue_.push_back([this, promise, path, call = std::move(call)](bool cancelled) {
      if (cancelled) {
        promise->set_value(absl::CancelledError(
            absl::StrCat("POST ", Url(path), ": cancelled (the client was destroyed)")));
        return;
      }
      promise->set_value(call());
    });
  }
  queue_cv_.notify_one();
  return future;
}

std::future<absl::StatusOr<ChatResponse>> EndpointClient::ChatCompletionAsync(
    nlohmann::json messages, ChatParams params) {
  return RunAsync<ChatResponse>("/chat/completions",
                                [this, messages = std::move(messages), params = std::move(params)] {
                                  return ChatCompletion(messages, params);
                                });
}

// ---------------------------------------------------------------- scoring

nlohmann::json EndpointClient::BuildScoreRequest(const std::vector<int32_t>& tokens,
                                                 int32_t top_k) const {
  // temperature and top_p 1: servers that report the log-probs of the
  // processed distribution (vLLM's V0 engine) then report the model's own.
  return {{"model", options_.model}, {"prompt", tokens}, {"max_tokens", 1},
          {"temperature", 1.0},      {"top_p", 1.0},     {"prompt_logprobs", top_k}};
}

namespace {

// "1234" -> 1234; false for anything but a decimal int32 >= 0.
bool ParseTokenId(const std::string& key, int32_t* id) {
  if (key.empty() || key.size() > 10) return false;
  int64_t v = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v > INT32_MAX) return false;
  *id = static_cast<int32_t>(v);
  return true;
}

}  // namespace

absl::StatusOr<TokenScores> EndpointClient::ParseScoreResponse(const std::string& body,
                                                               const std::vector<int32_t>& tokens,
                                                               int64_t first, int32_t top_k,
                                                               const std::string& source) const {
  nlohmann::json j = ParseJson(body, source).value_or(nlohmann::json());
  if (!j.is_object()) {
    return absl::DataLossError(
        absl::StrCat(source, ": the answer is not a JSON object: ", ServerMessage(body)));
  }
  // Recent vLLM (and `retort serve`) put the list in the choice; older vLLM
  // put it at the top level.
  const nlohmann::json* list = nullptr;
  if (auto choices = j.find("choices");
      choices != j.end() && choices->is_array() && !choices->empty() && (*choices)[0].is_object()) {
    const nlohmann::json& choice = (*choices)[0];
    if (auto it = choice.find("prompt_logprobs"); it != choice.end() && !it->is_null()) list = &*it;
  }
  if (list == nullptr) {
    if (auto it = j.find("prompt_logprobs"); it != j.end() && !it->is_null()) list = &*it;
  }
  if (list == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": the endpoint does not return prompt_logprobs (vLLM and retort serve do)"));
  }
  if (!list->is_array()) {
    return absl::DataLossError(
        absl::StrCat(source, ": prompt_logprobs is ", list->type_name(), ", expected a list"));
  }
  if (list->size() != tokens.size()) {
    return absl::DataLossError(absl::StrCat(source, ": prompt_logprobs has ", list->size(),
                                            " entries for a prompt of ", tokens.size(), " tokens"));
  }
  const int64_t positions = static_cast<int64_t>(tokens.size()) - first;
  TokenScores out;
  out.top_k = top_k;
  out.logprobs.resize(positions);
  out.topk_ids.assign(positions * top_k, -1);
  out.topk_logprobs.assign(positions * top_k, 0.f);
  std::vector<std::pair<double, int32_t>> entries;
  for (int64_t p = 0; p < positions; ++p) {
    const int64_t i = first + p;
    const nlohmann::json& e = (*list)[i];
    const std::string where = absl::StrCat(source, ": prompt_logprobs[", i, "]");
    if (!e.is_object()) {
      return absl::DataLossError(absl::StrCat(where, " is ", e.is_null() ? "null" : e.type_name(),
                                              ", expected {token id: log-prob}"));
    }
    entries.clear();
    bool found = false;
    for (auto it = e.begin(); it != e.end(); ++it) {
      int32_t id;
      if (!ParseTokenId(it.key(), &id)) {
        return absl::DataLossError(
            absl::StrCat(where, ": key \"", it.key(), "\" is not a token id"));
      }
      const nlohmann::json& v = it.value();
      const nlohmann::json* number = &v;
      if (v.is_object()) {
        auto lp = v.find("logprob");
        number = lp == v.end() ? nullptr : &*lp;
      }
      if (number == nullptr || !number->is_number()) {
        return absl::DataLossError(
            absl::StrCat(where, "[\"", it.key(), "\"]: the log-prob is not a number: ",
                         v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
      }
      const double logprob = number->get<double>();
      if (id == tokens[i]) {
        out.logprobs[p] = static_cast<float>(logprob);
        found = true;
      }
      entries.emplace_back(logprob, id);
    }
    if (!found) {
      return absl::DataLossError(
          absl::StrCat(where, " has no entry for the scored token ", tokens[i]));
    }
    const size_t k = std::min(entries.size(), static_cast<size_t>(top_k));
    std::partial_sort(entries.begin(), entries.begin() + k, entries.end(),
                      [](const auto& a, const auto& b) {
                        return a.first != b.first ? a.first > b.first : a.second < b.second;
                      });
    for (size_t r = 0; r < k; ++r) {
      out.topk_ids[p * top_k + r] = entries[r].second;
      out.topk_logprobs[p * top_k + r] = static_cast<float>(entries[r].first);
    }
  }
  return out;
}

absl::StatusOr<TokenScores> EndpointClient::ScoreTokens(const std::vector<int32_t>& tokens,
                                                        int64_t first, int32_t top_k) const {
  if (first < 1 || first > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("scoring tokens: first must be in [1, ", tokens.size(), "], got ", first));
  }
  if (top_k < 0 || top_k > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("scoring tokens: top_k must be in 0..20, got ", top_k));
  }
  if (std::any_of(tokens.begin(), tokens.end(), [](int32_t id) { return id < 0; })) {
    return absl::InvalidArgumentError("scoring tokens: token ids must be >= 0");
  }
  if (first == static_cast<int64_t>(tokens.size())) {
    TokenScores none;
    none.top_k = top_k;
    return none;
  }
  const std::string body = BuildScoreRequest(tokens, top_k).dump();
  int attempts = 0;
  absl::StatusOr<HttpAnswer> answer = Exchange("POST", "/completions", body, &attempts);
  if (!answer.ok()) return answer.status();
  absl::StatusOr<TokenScores> scores =
      ParseScoreResponse(answer->body, tokens, first, top_k, "POST " + Url("/completions"));
  if (scores.ok()) scores->attempts = attempts;
  return scores;
}

std::future<absl::StatusOr<TokenScores>> EndpointClient::ScoreTokensAsync(
    std::vector<int32_t> tokens, int64_t first, int32_t top_k) {
  return RunAsync<TokenScores>("/completions", [this, tokens = std::move(tokens), first, top_k] {
    return ScoreTokens(tokens, first, top_k);
  });
}

absl::StatusOr<std::vector<std::string>> EndpointClient::ListModels() const {
  int attempts = 0;
  absl::StatusOr<HttpAnswer> answer = Exchange("GET", "/models", "", &attempts);
  if (!answer.ok()) return answer.status();
  nlohmann::json j = ParseJson(answer->body, "/models").value_or(nlohmann::json());
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array()) {
    return absl::DataLossError(
        absl::StrCat("GET ", Url("/models"), ": expected {\"data\": [...]}"));
  }
  std::vector<std::string> ids;
  for (const auto& m : j["data"]) {
    if (m.is_object() && m.contains("id") && m["id"].is_string()) ids.push_back(m["id"]);
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<EndpointClient>> ConnectEndpoint(EndpointOptions options) {
  if (!options.model.empty()) return EndpointClient::Create(options);
  options.model = "unknown";  // Create() wants a name; the server's comes next
  ASSIGN_OR_RETURN(std::unique_ptr<EndpointClient> probe, EndpointClient::Create(options));
  ASSIGN_OR_RETURN(std::vector<std::string> models, probe->ListModels());
  if (models.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.base_url, " serves no models; pass --model-name"));
  }
  options.model = models.front();
  return EndpointClient::Create(options);
}

}  // namespace retort
