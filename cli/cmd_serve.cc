// retort serve MODEL: an OpenAI-compatible HTTP server for one model.
//
// Endpoints: GET /health, GET /v1/models, GET /v1/models/{id},
// POST /v1/completions, POST /v1/chat/completions (non-streaming, or SSE with
// "data: {...}\n\n" chunks ending in "data: [DONE]\n\n").
//
// What is supported, and how it differs from OpenAI:
//   * n >= 1 (up to kMaxChoices): the choices are generated one after the
//     other; with a seed, choice i uses seed + i, so results are reproducible.
//   * one prompt per /v1/completions request (a list of several prompts is
//     refused with 400); echo, best_of > 1, suffix, logit_bias and non-zero
//     frequency/presence penalties are refused with 400.
//   * logprobs are the model's own (log-softmax of the raw logits, before
//     temperature and the top-p/top-k filters, as vLLM reports them); every
//     entry also carries "token_id" (an extension). return_token_ids: true adds
//     the choice's "token_ids".
//   * extensions (as in vLLM): top_k, min_p, repetition_penalty, stop_token_ids,
//     ignore_eos, chat_template_kwargs, add_generation_prompt.
//   * reasoning: <think>...</think> in a chat answer goes to
//     message.reasoning_content (delta.reasoning_content when streaming), see
//     --reasoning-parser.
//
// Concurrency: requests are served by the HTTP thread pool; up to --max-batch
// sequences are in progress at once, each with its own KV cache, and their
// forward passes take turns on the model (one token each), since the CPU
// kernels share one thread pool. SIGINT/SIGTERM stop accepting connections,
// let in-flight requests finish for --shutdown-grace seconds, then cut them
// short (finish_reason "abort"), and exit 0.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/endpoint.h"
#include "httplib.h"
#include "model/sampler.h"
#include "model/transformer.h"
#include "model/unicode.h"

namespace retort::cli {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr int kMaxChoices = 16;
constexpr int kMaxTopLogprobs = 20;
constexpr int kMaxStopStrings = 16;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// ------------------------------------------------------------------ generation

// One sequence to generate.
struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  SamplerOptions sampler;
  std::vector<int32_t> stop_ids;  // sampling one ends the sequence (not reported)
  int top_logprobs = -1;          // < 0: no log-probs; k >= 0: chosen + top k
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

// Called per generated token; returning false ends the sequence ("cancelled").
using TokenCallback = std::function<bool(const GeneratedToken&)>;

// The server's view of the engine: generate one sequence, token by token.
// Finish reasons: "stop" (a stop id), "length" (max_new_tokens), "cancelled".
// Generate may be called from several threads at once.
class Generator {
 public:
  virtual ~Generator() = default;
  virtual absl::StatusOr<std::string> Generate(const GenerationRequest& request, const TokenCallback& on_token) = 0;
};

// Log-probs of the raw logits (f64 log-sum-exp): the chosen token's and the
// k largest (ties by id). NaN counts as -inf.
void FillLogprobs(const float* logits, int64_t vocab, int k, GeneratedToken* t) {
  double m = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] > m) m = logits[i];
  }
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] > -INFINITY) sum += std::exp(static_cast<double>(logits[i]) - m);
  }
  const double lse = m + std::log(sum);
  auto lp = [&](int64_t i) {
    float l = logits[i];
    return std::isnan(l) ? -INFINITY : static_cast<float>(static_cast<double>(l) - lse);
  };
  t->logprob = lp(t->id);
  if (k <= 0) return;
  std::vector<int32_t> ids(vocab);
  for (int64_t i = 0; i < vocab; ++i) ids[i] = static_cast<int32_t>(i);
  const int64_t take = std::min<int64_t>(k, vocab);
  auto key = [&](int32_t i) { return std::isnan(logits[i]) ? -INFINITY : logits[i]; };
  std::partial_sort(ids.begin(), ids.begin() + take, ids.end(), [&](int32_t a, int32_t b) {
    return key(a) != key(b) ? key(a) > key(b) : a < b;
  });
  for (int64_t i = 0; i < take; ++i) t->top.emplace_back(ids[i], lp(ids[i]));
}

// Generates with Transformer::Forward and a KvCache per sequence. Up to
// `max_active` sequences run at once; their forward passes are serialised
// (the kernels share one thread pool), one step at a time, so concurrent
// requests interleave token by token.
class SequentialGenerator final : public Generator {
 public:
  SequentialGenerator(const Transformer& engine, int max_active) : engine_(engine), max_active_(max_active) {}

  absl::StatusOr<std::string> Generate(const GenerationRequest& request, const TokenCallback& on_token) override {
    Slot slot(this);
    const int64_t vocab = engine_.config().vocab_size;
    const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
    KvCache cache = engine_.NewCache(n_prompt + request.max_new_tokens);
    std::vector<float> logits(vocab);
    {
      std::lock_guard<std::mutex> lock(forward_mu_);
      RETURN_IF_ERROR(engine_.Forward(request.prompt.data(), n_prompt, cache, logits.data()));
    }
    Sampler sampler(request.sampler);
    std::vector<int32_t> history = request.prompt;
    for (int64_t i = 0; i < request.max_new_tokens; ++i) {
      GeneratedToken token;
      token.id = sampler.Sample(logits.data(), vocab, history);
      if (token.id < 0) return absl::InternalError("no token can be sampled (all logits NaN or -inf)");
      if (std::find(request.stop_ids.begin(), request.stop_ids.end(), token.id) != request.stop_ids.end()) {
        return std::string("stop");
      }
      if (request.top_logprobs >= 0) FillLogprobs(logits.data(), vocab, request.top_logprobs, &token);
      history.push_back(token.id);
      if (!on_token(token)) return std::string("cancelled");
      if (i + 1 == request.max_new_tokens) break;
      std::lock_guard<std::mutex> lock(forward_mu_);
      RETURN_IF_ERROR(engine_.Forward(&token.id, 1, cache, logits.data()));
    }
    return std::string("length");
  }

 private:
  // Holds one of the max_active_ places for the life of a sequence.
  class Slot {
   public:
    explicit Slot(SequentialGenerator* g) : g_(g) {
      std::unique_lock<std::mutex> lock(g_->slot_mu_);
      g_->slot_cv_.wait(lock, [&] { return g_->active_ < g_->max_active_; });
      ++g_->active_;
    }
    ~Slot() {
      {
        std::lock_guard<std::mutex> lock(g_->slot_mu_);
        --g_->active_;
      }
      g_->slot_cv_.notify_one();
    }

   private:
    SequentialGenerator* g_;
  };

  const Transformer& engine_;
  const int max_active_;
  std::mutex slot_mu_;
  std::condition_variable slot_cv_;
  int active_ = 0;
  std::mutex forward_mu_;
};

// ------------------------------------------------------------------ text

// The raw bytes a token stands for (byte-level pieces mapped back through the
// GPT-2 table; added tokens as written).
std::string TokenBytes(const Tokenizer& tok, int32_t id) {
  const std::string piece = tok.TokenText(id);
  std::string bytes;
  char32_t cp;
  for (size_t i = 0; i < piece.size();) {
    const int len = DecodeUtf8Char(piece, i, &cp);
    const int b = len > 0 ? UnicodeToByte(cp) : -1;
    if (b < 0) return piece;
    bytes.push_back(static_cast<char>(b));
    i += len;
  }
  return bytes;
}

size_t CountChars(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Longest suffix of `text` that is a proper prefix of `s`.
size_t PartialSuffix(std::string_view text, std::string_view s) {
  if (s.empty()) return 0;
  for (size_t n = std::min(text.size(), s.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == s.substr(0, n)) return n;
  }
  return 0;
}

// Turns generated tokens into the text a client sees. Decoding is
// incremental and keeps multi-byte characters whole (a token group whose
// bytes end inside a character waits for the next token, up to 4 tokens).
// Stop strings: the text is cut before the earliest match, and text that may
// be the start of a stop string is held back from TakeReady().
class OutputText {
 public:
  OutputText(const Tokenizer& tok, const std::vector<std::string>& stop) : tok_(tok), stop_(stop) {}

  // Adds a token; false once a stop string has appeared (generation ends).
  bool Push(int32_t id) {
    if (stopped_) return false;
    pending_.push_back(id);
    std::string t = tok_.Decode(pending_, /*skip_special_tokens=*/true);
    static const std::string kReplacement = "\xEF\xBF\xBD";
    if (pending_.size() < 4 && t.size() >= 3 && t.compare(t.size() - 3, 3, kReplacement) == 0) return true;
    pending_.clear();
    return Append(t);
  }
  // Code points of text decoded so far (a token's text_offset).
  size_t chars() const { return chars_; }
  // Final text not yet taken.
  std::string TakeReady() {
    size_t limit = text_.size();
    if (!stopped_) {
      size_t hold = 0;
      for (const std::string& s : stop_) hold = std::max(hold, PartialSuffix(text_, s));
      limit -= hold;
    }
    if (limit <= sent_) return "";
    std::string out = text_.substr(sent_, limit - sent_);
    sent_ = limit;
    return out;
  }
  // At the end: decodes what is pending (incomplete bytes become U+FFFD) and
  // returns the rest of the text.
  std::string TakeRest() {
    if (!pending_.empty() && !stopped_) Append(tok_.Decode(pending_, true));
    pending_.clear();
    stopped_ = true;
    return TakeReady();
  }
  const std::string& text() const { return text_; }
  bool stopped() const { return stopped_; }

 private:
  bool Append(const std::string& t) {
    const size_t from = text_.size();
    text_ += t;
    chars_ += CountChars(t);
    size_t cut = std::string::npos;
    for (const std::string& s : stop_) {
      size_t start = from >= s.size() ? from - s.size() + 1 : 0;
      size_t at = text_.find(s, start);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut == std::string::npos) return true;
    text_.resize(std::max(cut, sent_));
    stopped_ = true;
    return false;
  }

  const Tokenizer& tok_;
  const std::vector<std::string>& stop_;
  std::vector<int32_t> pending_;
  std::string text_;
  size_t chars_ = 0;
  size_t sent_ = 0;
  bool stopped_ = false;
};

// ------------------------------------------------------------------ requests

struct ApiError {
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : status(status), message(std::move(message)), type(std::move(type)), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;
  std::string code;
};

ApiError BadField(const std::string& field, const std::string& expected) {
  return ApiError{400, absl::StrCat("\"", field, "\": expected ", expected), "invalid_request_error", field, ""};
}

// Typed access to optional request fields; null counts as absent.
class Fields {
 public:
  explicit Fields(const Json& body) : body_(body) {}
  const Json* Find(const char* key) const {
    auto it = body_.find(key);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<ApiError> Number(const char* key, double lo, double hi, std::optional<double>* out) const {
    const Json* v = Find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) return BadField(key, absl::StrFormat("a number in [%g, %g]", lo, hi));
    double d = v->get<double>();
    if (!(d >= lo && d <= hi)) return BadField(key, absl::StrFormat("a number in [%g, %g], got %g", lo, hi, d));
    *out = d;
    return std::nullopt;
  }
  std::optional<ApiError> Int(const char* key, int64_t lo, int64_t hi, std::optional<int64_t>* out) const {
    const Json* v = Find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) return BadField(key, absl::StrFormat("an integer in [%d, %d]", lo, hi));
    int64_t i = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX
                                                                                              : v->get<int64_t>();
    if (i < lo || i > hi) return BadField(key, absl::StrFormat("an integer in [%d, %d], got %d", lo, hi, i));
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

// Everything one request needs to run, decided before anything is sent.
struct Job {
  bool chat = false;
  std::string id;
  int64_t created = 0;
  std::vector<int32_t> prompt;
  int n = 1;
  int64_t max_tokens = 16;
  SamplerOptions sampler;
  bool seeded = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;
  int top_logprobs = -1;  // < 0: none
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  bool starts_in_reasoning = false;  // the rendered prompt ends with <think>
};

struct ChoiceResult {
  std::string text;
  std::vector<GeneratedToken> tokens;
  std::vector<size_t> offsets;  // text_offset (code points) per token
  std::string finish_reason;
};

// One access-log line per request: filled by the handler thread, printed by
// the logger (httplib runs both on the connection's thread).
struct RequestLog {
  Clock::time_point start = Clock::now();
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = 0;
  std::string finish;
};
thread_local RequestLog t_log;

struct ServeOptions {
  std::string model_path;
  std::string model_name;
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_batch = 4;
  int64_t max_request_bytes = 8 << 20;
  int64_t max_tokens_limit = 0;
  ReasoningSplitter::Mode reasoning = ReasoningSplitter::Mode::kAuto;
  double shutdown_grace_s = 10;
};

class ApiServer {
 public:
  ApiServer(const ServeOptions& options, const Tokenizer& tok, std::optional<ChatTemplate> chat_template,
            const ModelConfig& config, Generator& generator)
      : options_(options),
        tok_(tok),
        chat_template_(std::move(chat_template)),
        config_(config),
        generator_(generator),
        created_(std::time(nullptr)) {
    for (int64_t e : config.eos_token_ids) eos_ids_.insert(static_cast<int32_t>(e));
    if (tok.eos_id() >= 0) eos_ids_.insert(tok.eos_id());
  }

  void Register(httplib::Server& svr) {
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      Json list = {{"object", "list"}, {"data", Json::array({ModelCard()})}};
      res.set_content(Dump(list), "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1] != options_.model_name) return SendError(res, UnknownModel(req.matches[1]));
      res.set_content(Dump(ModelCard()), "application/json");
    });
    svr.Post("/v1/completions",
             [this](const httplib::Request& req, httplib::Response& res) { HandleGenerate(req, res, false); });
    svr.Post("/v1/chat/completions",
             [this](const httplib::Request& req, httplib::Response& res) { HandleGenerate(req, res, true); });
  }

  // Abort in-flight generations (after the shutdown grace period).
  void Abort() { abort_ = true; }
  int in_flight() const { return in_flight_; }

  static void SendError(httplib::Response& res, const ApiError& e) {
    Json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
    if (!e.param.empty()) err["param"] = e.param;
    if (!e.code.empty()) err["code"] = e.code;
    res.status = e.status;
    res.set_content(Dump(Json{{"error", err}}), "application/json");
  }

 private:
  Json ModelCard() const {
    return {{"id", options_.model_name},
            {"object", "model"},
            {"created", created_},
            {"owned_by", "retort"},
            {"max_model_len", config_.max_position_embeddings}};
  }

  ApiError UnknownModel(const std::string& name) const {
    return ApiError{404, absl::StrCat("The model `", name, "` does not exist (this server serves `", options_.model_name, "`)"),
                    "invalid_request_error", "model", "model_not_found"};
  }

  void HandleGenerate(const httplib::Request& req, httplib::Response& res, bool chat) {
    try {
      Json body = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) return SendError(res, ApiError{400, "the request body is not valid JSON"});
      if (!body.is_object()) return SendError(res, ApiError{400, "the request body must be a JSON object"});
      auto job = std::make_shared<Job>();
      job->chat = chat;
      if (std::optional<ApiError> e = ParseJob(body, job.get())) return SendError(res, *e);
      t_log.prompt_tokens = static_cast<int64_t>(job->prompt.size());
      if (!job->stream) {
        Json answer;
        if (std::optional<ApiError> e = RunBlocking(*job, &answer)) return SendError(res, *e);
        res.set_content(Dump(answer), "application/json");
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [this, job](size_t, httplib::DataSink& sink) {
        try {
          RunStreaming(*job, sink);
        } catch (const std::exception& e) {
          std::cerr << "retort serve: error while streaming: " << e.what() << "\n";
        }
        sink.done();
        return true;
      });
    } catch (const std::exception& e) {
      SendError(res, ApiError{500, absl::StrCat("internal error: ", e.what()), "internal_error"});
    }
  }

  // Validates the body and fills `job`; an error to send otherwise.
  std::optional<ApiError> ParseJob(const Json& body, Job* job) const {
    Fields f(body);
    if (const Json* model = f.Find("model")) {
      if (!model->is_string()) return BadField("model", "a string");
      if (model->get<std::string>() != options_.model_name) return UnknownModel(model->get<std::string>());
    }
    // Refused OpenAI features (better a clear 400 than a silently different answer).
    bool echo = false;
    if (auto e = f.Bool("echo", &echo)) return e;
    if (echo) return ApiError{400, "\"echo\" is not supported", "invalid_request_error", "echo"};
    std::optional<int64_t> best_of;
    if (auto e = f.Int("best_of", 1, kMaxChoices, &best_of)) return e;
    if (best_of && *best_of > 1) return ApiError{400, "\"best_of\" > 1 is not supported", "invalid_request_error", "best_of"};
    if (f.Find("suffix")) return ApiError{400, "\"suffix\" is not supported", "invalid_request_error", "suffix"};
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
    if (absl::Status s = ValidateSamplerOptions(job->sampler); !s.ok()) return ApiError{400, std::string(s.message())};

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
        return BadField("stop", absl::StrCat("a string or a list of at most ", kMaxStopStrings, " strings"));
      }
      for (const std::string& s : job->stop) {
        if (s.empty()) return BadField("stop", "non-empty strings");
      }
    }
    bool ignore_eos = false;
    if (auto e = f.Bool("ignore_eos", &ignore_eos)) return e;
    if (!ignore_eos) job->stop_ids.assign(eos_ids_.begin(), eos_ids_.end());
    if (const Json* ids = f.Find("stop_token_ids")) {
      if (!ids->is_array()) return BadField("stop_token_ids", "a list of token ids");
      for (const Json& id : *ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= config_.vocab_size) {
          return BadField("stop_token_ids", absl::StrCat("token ids in [0, ", config_.vocab_size, ")"));
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
    if (auto e = f.Bool("return_token_ids", &job->return_token_ids)) return e;
    if (job->chat) {
      bool logprobs = false;
      std::optional<int64_t> top;
      if (auto e = f.Bool("logprobs", &logprobs)) return e;
      if (auto e = f.Int("top_logprobs", 0, kMaxTopLogprobs, &top)) return e;
      if (top && !logprobs) return ApiError{400, "\"top_logprobs\" requires \"logprobs\": true", "invalid_request_error", "top_logprobs"};
      if (logprobs) job->top_logprobs = static_cast<int>(top.value_or(0));
    } else {
      std::optional<int64_t> logprobs;
      if (auto e = f.Int("logprobs", 0, kMaxTopLogprobs, &logprobs)) return e;
      if (logprobs) job->top_logprobs = static_cast<int>(*logprobs);
    }

    // The prompt.
    std::optional<ApiError> prompt_error = job->chat ? ParseMessages(body, job) : ParsePrompt(body, job);
    if (prompt_error) return prompt_error;
    const int64_t n_prompt = static_cast<int64_t>(job->prompt.size());
    const int64_t context = config_.max_position_embeddings;
    if (n_prompt == 0) return ApiError{400, "the prompt is empty (no tokens)", "invalid_request_error", job->chat ? "messages" : "prompt"};
    if (n_prompt >= context) {
      return ApiError{400, absl::StrFormat("the prompt has %d tokens; this model's maximum context length is %d tokens", n_prompt, context),
                      "invalid_request_error", job->chat ? "messages" : "prompt"};
    }

    // Length.
    std::optional<int64_t> max_tokens;
    const char* max_key = "max_tokens";
    if (job->chat && f.Find("max_completion_tokens")) max_key = "max_completion_tokens";
    if (auto e = f.Int(max_key, 1, INT64_MAX, &max_tokens)) return e;
    const int64_t limit = options_.max_tokens_limit;
    if (max_tokens) {
      if (*max_tokens > limit) {
        return ApiError{400, absl::StrFormat("\"%s\" is %d; this server allows at most %d", max_key, *max_tokens, limit),
                        "invalid_request_error", max_key};
      }
      if (n_prompt + *max_tokens > context) {
        return ApiError{400, absl::StrFormat("This model's maximum context length is %d tokens. However, you requested %d tokens "
                                             "(%d in the prompt, %d in the completion).",
                                             context, n_prompt + *max_tokens, n_prompt, *max_tokens),
                        "invalid_request_error", max_key};
      }
      job->max_tokens = *max_tokens;
    } else {
      // OpenAI's legacy default for completions is 16; chat runs to the end of the context.
      job->max_tokens = std::min(job->chat ? limit : std::min<int64_t>(16, limit), context - n_prompt);
    }

    static std::atomic<uint64_t> counter{0};
    job->created = std::time(nullptr);
    job->id = absl::StrFormat("%s-%x%06x", job->chat ? "chatcmpl" : "cmpl", job->created, counter.fetch_add(1) & 0xFFFFFF);
    return std::nullopt;
  }

  std::optional<ApiError> ParsePrompt(const Json& body, Job* job) const {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) return ApiError{400, "\"prompt\" is required", "invalid_request_error", "prompt"};
    const Json* prompt = &*it;
    if (prompt->is_array() && prompt->size() == 1 && ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
      prompt = &(*prompt)[0];
    }
    if (prompt->is_string()) {
      job->prompt = tok_.Encode(prompt->get<std::string>(), /*add_special_tokens=*/true);
      return std::nullopt;
    }
    if (prompt->is_array() && !prompt->empty() && std::all_of(prompt->begin(), prompt->end(), [](const Json& v) { return v.is_number_integer(); })) {
      for (const Json& v : *prompt) {
        int64_t id = v.get<int64_t>();
        if (id < 0 || id >= config_.vocab_size) {
          return BadField("prompt", absl::StrCat("token ids in [0, ", config_.vocab_size, "), got ", id));
        }
        job->prompt.push_back(static_cast<int32_t>(id));
      }
      return std::nullopt;
    }
    if (prompt->is_array() && prompt->size() > 1 &&
        std::all_of(prompt->begin(), prompt->end(), [](const Json& v) { return v.is_string() || v.is_array(); })) {
      return ApiError{400, "several prompts in one request are not supported: send one request per prompt",
                      "invalid_request_error", "prompt"};
    }
    return BadField("prompt", "a string or a non-empty list of token ids");
  }

  std::optional<ApiError> ParseMessages(const Json& body, Job* job) const {
    auto it = body.find("messages");
    if (it == body.end() || !it->is_array() || it->empty()) {
      return BadField("messages", "a non-empty list of {\"role\", \"content\"} objects");
    }
    if (!chat_template_) {
      return ApiError{400, absl::StrCat("model ", options_.model_name, " has no chat template; use /v1/completions"),
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
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
            return BadField(where + ".content", "a string or a list of {\"type\": \"text\", \"text\": ...} parts");
          }
          if (!text.empty()) text += "\n";
          text += part["text"].get<std::string>();
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
    if (const Json* tools = Fields(body).Find("tools")) {
      if (!tools->is_array()) return BadField("tools", "a list");
      extra["tools"] = *tools;
    }
    bool add_generation_prompt = true;
    if (auto e = Fields(body).Bool("add_generation_prompt", &add_generation_prompt)) return e;
    absl::StatusOr<std::string> text = chat_template_->Render(messages, add_generation_prompt, extra);
    if (!text.ok()) {
      return ApiError{400, absl::StrCat("the chat template could not render these messages: ", text.status().message()),
                      "invalid_request_error", "messages"};
    }
    EncodeOptions enc;
    enc.add_special_tokens = true;
    enc.avoid_double_bos = true;
    job->prompt = tok_.Encode(*text, enc);
    std::string_view rendered(*text);
    while (!rendered.empty() && std::isspace(static_cast<unsigned char>(rendered.back()))) rendered.remove_suffix(1);
    job->starts_in_reasoning = rendered.size() >= 7 && rendered.substr(rendered.size() - 7) == "<think>";
    return std::nullopt;
  }

  // Counts a generation in flight (for the shutdown grace period).
  struct InFlight {
    explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
    ~InFlight() { --n_; }
    std::atomic<int>& n_;
  };

  // Generates choice `index`. on_text (may be empty) receives text as it
  // becomes final and the token that made it so (null for the final flush);
  // returning false cancels (client gone).
  absl::StatusOr<ChoiceResult> RunChoice(
      const Job& job, int index,
      const std::function<bool(const std::string& text, const GeneratedToken* token)>& on_text) {
    InFlight guard(in_flight_);
    GenerationRequest request;
    request.prompt = job.prompt;
    request.max_new_tokens = job.max_tokens;
    request.sampler = job.sampler;
    request.sampler.seed = job.seeded ? job.sampler.seed + static_cast<uint64_t>(index) : std::random_device{}();
    request.stop_ids = job.stop_ids;
    request.top_logprobs = job.top_logprobs;
    ChoiceResult result;
    OutputText text(tok_, job.stop);
    bool client_gone = false;
    absl::StatusOr<std::string> finish = generator_.Generate(request, [&](const GeneratedToken& token) {
      result.offsets.push_back(text.chars());
      result.tokens.push_back(token);
      bool more = text.Push(token.id);
      if (on_text && !on_text(text.TakeReady(), &token)) {
        client_gone = true;
        return false;
      }
      return more && !abort_;
    });
    if (!finish.ok()) return finish.status();
    const bool hit_stop_string = text.stopped();
    std::string rest = text.TakeRest();
    if (on_text && !client_gone && !rest.empty()) on_text(rest, nullptr);
    result.text = text.text();
    if (*finish == "cancelled") {
      result.finish_reason = hit_stop_string && !client_gone ? "stop" : "abort";
    } else {
      result.finish_reason = *finish;
    }
    t_log.completion_tokens += static_cast<int64_t>(result.tokens.size());
    t_log.finish = result.finish_reason;
    return result;
  }

  // Log-prob entry in the chat format, plus "token_id".
  Json ChatLogprob(int32_t id, float logprob) const {
    const std::string bytes = TokenBytes(tok_, id);
    Json b = Json::array();
    for (unsigned char c : bytes) b.push_back(c);
    return {{"token", Utf8Lossy(bytes)}, {"logprob", Finite(logprob)}, {"bytes", b}, {"token_id", id}};
  }
  static double Finite(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

  Json ChatLogprobs(const std::vector<GeneratedToken>& tokens, size_t begin, size_t end) const {
    Json content = Json::array();
    for (size_t i = begin; i < end; ++i) {
      Json e = ChatLogprob(tokens[i].id, tokens[i].logprob);
      Json top = Json::array();
      for (const auto& [id, lp] : tokens[i].top) top.push_back(ChatLogprob(id, lp));
      e["top_logprobs"] = top;
      content.push_back(std::move(e));
    }
    return {{"content", content}};
  }

  // The legacy completions format: parallel lists.
  Json LegacyLogprobs(const std::vector<GeneratedToken>& tokens, const std::vector<size_t>& offsets, size_t begin,
                      size_t end) const {
    Json strings = Json::array(), lps = Json::array(), tops = Json::array(), offs = Json::array(), ids = Json::array();
    for (size_t i = begin; i < end; ++i) {
      strings.push_back(Utf8Lossy(TokenBytes(tok_, tokens[i].id)));
      lps.push_back(Finite(tokens[i].logprob));
      Json top = Json::object();
      top[Utf8Lossy(TokenBytes(tok_, tokens[i].id))] = Finite(tokens[i].logprob);
      for (const auto& [id, lp] : tokens[i].top) top[Utf8Lossy(TokenBytes(tok_, id))] = Finite(lp);
      tops.push_back(std::move(top));
      offs.push_back(offsets[i]);
      ids.push_back(tokens[i].id);
    }
    return {{"tokens", strings}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}, {"token_ids", ids}};
  }

  Json UsageJson(int64_t completion_tokens, const Job& job) const {
    const int64_t p = static_cast<int64_t>(job.prompt.size());
    return {{"prompt_tokens", p}, {"completion_tokens", completion_tokens}, {"total_tokens", p + completion_tokens}};
  }

  std::optional<ApiError> RunBlocking(const Job& job, Json* answer) {
    Json choices = Json::array();
    int64_t completion_tokens = 0;
    for (int i = 0; i < job.n; ++i) {
      absl::StatusOr<ChoiceResult> r = RunChoice(job, i, nullptr);
      if (!r.ok()) return ApiError{500, absl::StrCat("generation failed: ", r.status().message()), "internal_error"};
      completion_tokens += static_cast<int64_t>(r->tokens.size());
      Json choice = {{"index", i}};
      if (job.chat) {
        ReasoningSplitter splitter(options_.reasoning, job.starts_in_reasoning);
        ReasoningSplitter::Delta d = splitter.Push(r->text);
        ReasoningSplitter::Delta rest = splitter.Finish();
        Json message = {{"role", "assistant"}, {"content", d.content + rest.content}};
        if (splitter.saw_reasoning()) message["reasoning_content"] = d.reasoning + rest.reasoning;
        choice["message"] = std::move(message);
        choice["logprobs"] = job.top_logprobs >= 0 ? ChatLogprobs(r->tokens, 0, r->tokens.size()) : Json(nullptr);
      } else {
        choice["text"] = r->text;
        choice["logprobs"] =
            job.top_logprobs >= 0 ? LegacyLogprobs(r->tokens, r->offsets, 0, r->tokens.size()) : Json(nullptr);
      }
      choice["finish_reason"] = r->finish_reason;
      if (job.return_token_ids) {
        Json ids = Json::array();
        for (const GeneratedToken& t : r->tokens) ids.push_back(t.id);
        choice["token_ids"] = std::move(ids);
      }
      choices.push_back(std::move(choice));
    }
    *answer = {{"id", job.id},
               {"object", job.chat ? "chat.completion" : "text_completion"},
               {"created", job.created},
               {"model", options_.model_name},
               {"choices", std::move(choices)},
               {"usage", UsageJson(completion_tokens, job)}};
    return std::nullopt;
  }

  void RunStreaming(const Job& job, httplib::DataSink& sink) {
    auto send = [&](const Json& chunk) {
      std::string line = absl::StrCat("data: ", Dump(chunk), "\n\n");
      return sink.write(line.data(), line.size());
    };
    auto chunk = [&](Json choice) {
      return Json{{"id", job.id},
                  {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
                  {"created", job.created},
                  {"model", options_.model_name},
                  {"choices", Json::array({std::move(choice)})}};
    };
    int64_t completion_tokens = 0;
    for (int i = 0; i < job.n; ++i) {
      ReasoningSplitter splitter(options_.reasoning, job.starts_in_reasoning);
      if (job.chat && !send(chunk({{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
        return;
      }
      size_t sent_tokens = 0;
      std::vector<GeneratedToken> seen;
      std::vector<size_t> offsets;
      auto on_text = [&](const std::string& text, const GeneratedToken* token) {
        if (token) {
          offsets.push_back(0);
          seen.push_back(*token);
        }
        Json choice = {{"index", i}};
        bool has_logprobs = job.top_logprobs >= 0 && sent_tokens < seen.size();
        if (job.chat) {
          ReasoningSplitter::Delta d = splitter.Push(text);
          if (d.reasoning.empty() && d.content.empty() && !has_logprobs) return true;
          Json delta = Json::object();
          if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
          if (!d.content.empty() || d.reasoning.empty()) delta["content"] = d.content;
          choice["delta"] = std::move(delta);
          choice["logprobs"] = has_logprobs ? ChatLogprobs(seen, sent_tokens, seen.size()) : Json(nullptr);
        } else {
          if (text.empty() && !has_logprobs) return true;
          choice["text"] = text;
          choice["logprobs"] = has_logprobs ? LegacyLogprobs(seen, offsets, sent_tokens, seen.size()) : Json(nullptr);
        }
        sent_tokens = seen.size();
        choice["finish_reason"] = nullptr;
        return send(chunk(std::move(choice)));
      };
      absl::StatusOr<ChoiceResult> r = RunChoice(job, i, on_text);
      if (!r.ok()) {
        send(Json{{"error", {{"message", absl::StrCat("generation failed: ", r.status().message())}, {"type", "internal_error"}}}});
        break;
      }
      if (r->finish_reason == "abort" && !sink.is_writable()) return;
      if (job.chat) {
        // Reasoning held back by the splitter when no text came at the end.
        ReasoningSplitter::Delta rest = splitter.Finish();
        if (!rest.reasoning.empty() || !rest.content.empty()) {
          Json delta = Json::object();
          if (!rest.reasoning.empty()) delta["reasoning_content"] = rest.reasoning;
          if (!rest.content.empty()) delta["content"] = rest.content;
          send(chunk({{"index", i}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
        }
      }
      completion_tokens += static_cast<int64_t>(r->tokens.size());
      Json last = {{"index", i}};
      if (job.chat) {
        last["delta"] = Json::object();
      } else {
        last["text"] = "";
      }
      last["logprobs"] = nullptr;
      last["finish_reason"] = r->finish_reason;
      if (job.return_token_ids) {
        Json ids = Json::array();
        for (const GeneratedToken& t : r->tokens) ids.push_back(t.id);
        last["token_ids"] = std::move(ids);
      }
      if (!send(chunk(std::move(last)))) return;
    }
    if (job.include_usage) {
      Json u = chunk(nullptr);
      u["choices"] = Json::array();
      u["usage"] = UsageJson(completion_tokens, job);
      send(u);
    }
    static const std::string kDone = "data: [DONE]\n\n";
    sink.write(kDone.data(), kDone.size());
  }

  const ServeOptions& options_;
  const Tokenizer& tok_;
  const std::optional<ChatTemplate> chat_template_;
  const ModelConfig& config_;
  Generator& generator_;
  const int64_t created_;
  std::set<int32_t> eos_ids_;
  std::atomic<bool> abort_{false};
  std::atomic<int> in_flight_{0};
};

volatile std::sig_atomic_t g_stop_signals = 0;
volatile std::sig_atomic_t g_last_signal = 0;
void OnStopSignal(int sig) {
  g_last_signal = sig;
  g_stop_signals = g_stop_signals + 1;
}

std::string DefaultModelName(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  if (p.extension() == ".gguf") p.replace_extension();
  std::string name = p.filename().string();
  return name.empty() ? "model" : name;
}

}  // namespace

int RunServe(const Args& args) {
  CommandSpec spec{"serve", "MODEL [options]",
                   "Serve MODEL over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models)."};
  // SIGINT/SIGTERM only set a flag (any thread may take them: OpenBLAS starts
  // its threads before main, so a blocked mask cannot cover every thread);
  // the watcher thread below acts on it.
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  ServeOptions o;
  int threads = 0;
  std::string reasoning = "auto";
  po::options_description opts("options");
  opts.add_options()("model", po::value(&o.model_path)->required(), "model directory or .gguf file")(
      "host", po::value(&o.host)->default_value("127.0.0.1"), "address to listen on (0.0.0.0 = every interface)")(
      "port", po::value(&o.port)->default_value(8080), "TCP port (0 = pick a free one; the URL is printed)")(
      "model-name", po::value(&o.model_name), "the model id clients send (default: MODEL's folder/file name)")(
      "max-batch", po::value(&o.max_batch)->default_value(4), "sequences generated at once")(
      "max-request-bytes", po::value(&o.max_request_bytes)->default_value(8 << 20), "largest request body accepted")(
      "max-tokens-limit", po::value(&o.max_tokens_limit)->default_value(0),
      "largest max_tokens a request may ask for (0 = the model's context)")(
      "reasoning-parser", po::value(&reasoning)->default_value("auto"),
      "auto: <think>...</think> goes to reasoning_content; deepseek_r1: the answer always opens inside the reasoning; none")(
      "shutdown-grace", po::value(&o.shutdown_grace_s)->default_value(10.0, "10"),
      "seconds in-flight requests may run after SIGINT/SIGTERM before they are cut short")(
      "threads", po::value(&threads)->default_value(0), "compute threads (0 = all cores)");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (o.port < 0 || o.port > 65535) return UsageError(spec.name, "--port must be in 0..65535");
  if (o.max_batch < 1) return UsageError(spec.name, "--max-batch must be at least 1");
  if (o.max_request_bytes < 64) return UsageError(spec.name, "--max-request-bytes must be at least 64");
  if (o.max_tokens_limit < 0) return UsageError(spec.name, "--max-tokens-limit must be >= 0");
  if (!(o.shutdown_grace_s >= 0)) return UsageError(spec.name, "--shutdown-grace must be >= 0");
  auto mode = ReasoningSplitter::ParseMode(reasoning);
  if (!mode.ok()) return UsageError(spec.name, std::string(mode.status().message()));
  o.reasoning = *mode;
  if (o.model_name.empty()) o.model_name = DefaultModelName(o.model_path);
  if (threads > 0) SetNumThreads(threads);

  auto tokenizer = LoadTokenizer(o.model_path);
  if (!tokenizer.ok()) return Fail(spec.name, tokenizer.status());
  auto engine = LoadEngine(o.model_path);
  if (!engine.ok()) return Fail(spec.name, engine.status());
  const ModelConfig& config = (*engine)->config();
  if (o.max_tokens_limit == 0 || o.max_tokens_limit > config.max_position_embeddings) {
    o.max_tokens_limit = config.max_position_embeddings;
  }
  std::optional<ChatTemplate> chat_template;
  if (auto t = LoadChatTemplate(o.model_path); t.ok()) {
    chat_template = *std::move(t);
  } else {
    std::cerr << "retort serve: warning: no chat template (" << t.status().message()
              << "); /v1/chat/completions will answer 400\n";
  }

  SequentialGenerator generator(**engine, o.max_batch);
  ApiServer api(o, **tokenizer, std::move(chat_template), config, generator);
  httplib::Server svr;
  const size_t pool = static_cast<size_t>(std::max(8, 2 * o.max_batch + 2));
  svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  svr.set_payload_max_length(static_cast<size_t>(o.max_request_bytes));
  svr.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_log = RequestLog{};
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e{res.status, absl::StrCat("HTTP ", res.status)};
    if (res.status == 404) e.message = absl::StrCat("no such endpoint: ", req.method, " ", req.path);
    if (res.status == 413) e.message = "the request body is larger than this server's --max-request-bytes";
    if (res.status >= 500) e.type = "internal_error";
    ApiServer::SendError(res, e);
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const double s = std::chrono::duration<double>(Clock::now() - t_log.start).count();
    std::string line = absl::StrFormat("retort serve: %s %s %s %d %.3fs", req.remote_addr, req.method, req.path,
                                       res.status, s);
    if (t_log.prompt_tokens >= 0) {
      absl::StrAppend(&line, " prompt_tokens=", t_log.prompt_tokens, " completion_tokens=", t_log.completion_tokens);
      if (!t_log.finish.empty()) absl::StrAppend(&line, " finish=", t_log.finish);
    }
    std::cerr << line + "\n" << std::flush;
  });
  api.Register(svr);

  int port = o.port;
  if (port == 0) {
    port = svr.bind_to_any_port(o.host);
    if (port < 0) {
      return Fail(spec.name, absl::UnavailableError(absl::StrCat("cannot listen on ", o.host, " (any port)")));
    }
  } else if (!svr.bind_to_port(o.host, port)) {
    return Fail(spec.name, absl::UnavailableError(absl::StrCat("cannot listen on ", o.host, ":", port,
                                                               " (address in use, or not this machine's?)")));
  }
  std::cout << "retort serve: listening on http://" << o.host << ":" << port << "/v1 (model " << o.model_name
            << ", context " << config.max_position_embeddings << ")" << std::endl;

  // The signal thread: first SIGINT/SIGTERM stops accepting and starts the
  // grace period; a second one (or the end of the grace period) aborts the
  // in-flight generations.
  std::atomic<bool> finished{false};
  std::thread signal_thread([&] {
    bool stopping = false;
    int seen = 0;
    Clock::time_point deadline;
    while (!finished) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const int count = g_stop_signals;
      if (count > seen) {
        seen = count;
        if (!stopping) {
          std::cerr << "retort serve: " << (g_last_signal == SIGINT ? "SIGINT" : "SIGTERM") << ", stopping ("
                    << api.in_flight() << " request(s) in flight)\n"
                    << std::flush;
          stopping = true;
          deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o.shutdown_grace_s));
        }
        if (count > 1) api.Abort();
      }
      if (stopping) {
        if (svr.is_running()) svr.stop();
        if (Clock::now() >= deadline) api.Abort();
      }
    }
  });
  const bool listened = svr.listen_after_bind();
  finished = true;
  signal_thread.join();
  if (!listened) return Fail(spec.name, absl::InternalError("the HTTP server stopped unexpectedly"));
  std::cerr << "retort serve: stopped\n";
  return kExitOk;
}

}  // namespace retort::cli
