#include "serve/server.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <exception>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace retort::serve {
namespace {

using Clock = std::chrono::steady_clock;

// One access-log line per request: filled by the handler thread, printed by
// the logger (httplib runs both on the connection's thread).
struct RequestLog {
  Clock::time_point start = Clock::now();
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = 0;
  std::string finish;
};
thread_local RequestLog t_log;

// Counts a generation in flight (for the shutdown grace period).
struct InFlight {
  explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  std::atomic<int>& n_;
};

RequestContext MakeContext(const ServeOptions& options, const Tokenizer& tokenizer,
                           const ChatTemplate* chat_template, const ModelConfig& config) {
  RequestContext c;
  c.model_name = options.model_name;
  c.context_length = config.max_position_embeddings;
  c.max_tokens_limit = options.max_tokens_limit == 0 || options.max_tokens_limit > c.context_length
                           ? c.context_length
                           : options.max_tokens_limit;
  c.vocab_size = config.vocab_size;
  c.tokenizer = &tokenizer;
  c.chat_template = chat_template;
  std::set<int32_t> eos;
  for (int64_t e : config.eos_token_ids) eos.insert(static_cast<int32_t>(e));
  if (tokenizer.eos_id() >= 0) eos.insert(tokenizer.eos_id());
  c.eos_ids.assign(eos.begin(), eos.end());
  c.eos_id = tokenizer.eos_id();
  return c;
}

}  // namespace

ApiServer::ApiServer(const ServeOptions& options, const Tokenizer& tokenizer,
                     const ChatTemplate* chat_template, const ModelConfig& config,
                     Generator& generator)
    : options_(options),
      tokenizer_(tokenizer),
      context_(MakeContext(options, tokenizer, chat_template, config)),
      generator_(generator),
      created_(std::time(nullptr)) {}

void ApiServer::Register(httplib::Server& svr) {
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(DumpJson(ModelListJson(ModelCard())), "application/json");
  });
  svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != options_.model_name)
      return SendError(res, UnknownModel(req.matches[1], options_.model_name));
    res.set_content(DumpJson(ModelCard()), "application/json");
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGenerate(req, res, false);
  });
  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGenerate(req, res, true);
  });
}

void ApiServer::SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(DumpJson(ErrorJson(e)), "application/json");
}

Json ApiServer::ModelCard() const {
  return ModelCardJson(options_.model_name, created_, context_.context_length);
}

std::optional<ApiError> ApiServer::Parse(const std::string& body, bool chat,
                                         CompletionJob* job) const {
  return ParseCompletionRequest(body, chat, context_, job);
}

void ApiServer::HandleGenerate(const httplib::Request& req, httplib::Response& res, bool chat) {
  try {
    auto job = std::make_shared<CompletionJob>();
    if (std::optional<ApiError> e = Parse(req.body, chat, job.get())) return SendError(res, *e);
    t_log.prompt_tokens = job->prompt_tokens();
    if (!job->stream) {
      Json answer;
      if (std::optional<ApiError> e = Complete(*job, &answer)) return SendError(res, *e);
      res.set_content(DumpJson(answer), "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [this, job](size_t, httplib::DataSink& sink) {
          try {
            Stream(
                *job,
                [&sink](std::string_view bytes) { return sink.write(bytes.data(), bytes.size()); },
                [&sink] { return sink.is_writable(); });
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

absl::StatusOr<ChoiceResult> ApiServer::RunChoice(const CompletionJob& job, int index,
                                                  const TextCallback& on_text) {
  InFlight guard(in_flight_);
  ChoiceResult result;
  const std::vector<int32_t>& prompt = job.prompt_of(index);
  if (job.scores_prompt()) {
    ASSIGN_OR_RETURN(result.prompt_scores, generator_.ScorePrompt(prompt, job.prompt_top_k()));
  }
  if (job.max_tokens == 0) {  // scoring alone: vLLM reports it as a length stop
    result.finish_reason = "length";
    return result;
  }
  SequenceRequest request;
  request.prompt = prompt;
  request.max_new_tokens = job.max_tokens;
  request.sampler = job.sampler;
  // Choice i of a prompt samples with seed + i, whatever else the request holds.
  request.sampler.seed =
      job.seeded ? job.sampler.seed + static_cast<uint64_t>(index % job.n) : std::random_device{}();
  request.stop_ids = job.stop_ids;
  request.top_logprobs = job.top_logprobs;
  request.abort = &abort_;
  TextStreamOptions text_options;
  text_options.stop = job.stop;
  text_options.reasoning = job.chat ? options_.reasoning : ReasoningSplitter::Mode::kNone;
  text_options.starts_in_reasoning = job.starts_in_reasoning;
  TextStream text(tokenizer_, std::move(text_options));
  auto keep = [&result](TextDelta d) {
    result.reasoning += d.reasoning;
    result.content += d.content;
    return d;
  };
  bool client_gone = false;
  absl::StatusOr<SequenceEnd> end = generator_.Generate(request, [&](const GeneratedToken& token) {
    result.offsets.push_back(text.chars());
    result.tokens.push_back(token);
    const bool more = text.Push(token.id);
    if (on_text && !on_text(keep(text.TakeReady()), &token)) {
      client_gone = true;
      return false;
    }
    return more && !abort_;
  });
  if (!end.ok()) return end.status();
  const bool hit_stop_string = text.stopped();
  TextDelta rest = keep(text.TakeRest());
  if (on_text && !client_gone && !rest.text.empty()) on_text(rest, nullptr);
  result.reasoning_tail = keep(text.FinishReasoning());
  result.saw_reasoning = text.saw_reasoning();
  result.text = text.text();
  if (hit_stop_string && !client_gone) {
    result.finish_reason = "stop";
    result.stop_reason = text.stop_string();
  } else if (end->finish_reason == "cancelled") {
    result.finish_reason = "abort";
  } else {
    result.finish_reason = end->finish_reason;
    if (end->stop_id >= 0 && end->stop_id != job.silent_stop_id) result.stop_reason = end->stop_id;
  }
  return result;
}

std::optional<ApiError> ApiServer::Complete(const CompletionJob& job, Json* answer) {
  const int total = job.choices();
  std::vector<absl::StatusOr<ChoiceResult>> results(total, absl::UnknownError("not run"));
  std::atomic<int> next{0};
  auto work = [&] {
    for (int i = next++; i < total; i = next++) {
      try {
        results[i] = RunChoice(job, i, nullptr);
      } catch (const std::exception& e) {
        results[i] = absl::InternalError(e.what());
      }
    }
  };
  // Choices that generate run side by side, so they share the batch; scoring
  // alone runs one prompt after the other on the engine's thread anyway.
  const int workers =
      job.max_tokens == 0 ? 1 : std::min(total, std::max(kMaxChoices, options_.max_batch));
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();

  Json choices = Json::array();
  int64_t completion_tokens = 0;
  for (int i = 0; i < total; ++i) {
    const absl::StatusOr<ChoiceResult>& r = results[i];
    if (!r.ok()) {
      return ApiError{500, absl::StrCat("generation failed: ", r.status().message()),
                      "internal_error"};
    }
    t_log.completion_tokens += static_cast<int64_t>(r->tokens.size());
    t_log.finish = r->finish_reason;
    completion_tokens += static_cast<int64_t>(r->tokens.size());
    choices.push_back(ChoiceJson(job, tokenizer_, i, *r));
  }
  *answer = CompletionJson(job, options_.model_name, std::move(choices), completion_tokens);
  return std::nullopt;
}

void ApiServer::Stream(const CompletionJob& job, const std::function<bool(std::string_view)>& write,
                       const std::function<bool()>& writable) {
  auto send = [&](Json choice) {
    return write(SseEvent(ChunkJson(job, options_.model_name, std::move(choice))));
  };
  int64_t completion_tokens = 0;
  for (int i = 0; i < job.choices(); ++i) {
    if (job.chat && !send(RoleChoiceJson(i))) return;
    size_t sent_tokens = 0;
    std::vector<GeneratedToken> seen;
    // Streamed legacy log-probs carry text_offset 0.
    std::vector<size_t> offsets;
    auto on_text = [&](const TextDelta& text, const GeneratedToken* token) {
      if (token) {
        offsets.push_back(0);
        seen.push_back(*token);
      }
      const bool has_logprobs = job.top_logprobs >= 0 && sent_tokens < seen.size();
      const bool has_text =
          job.chat ? !text.reasoning.empty() || !text.content.empty() : !text.text.empty();
      if (!has_text && !has_logprobs) return true;
      Json logprobs = has_logprobs
                          ? LogprobsJson(job, tokenizer_, seen, offsets, sent_tokens, seen.size())
                          : Json(nullptr);
      sent_tokens = seen.size();
      return send(TextChoiceJson(job, i, text, std::move(logprobs)));
    };
    absl::StatusOr<ChoiceResult> r = RunChoice(job, i, on_text);
    if (!r.ok()) {
      write(SseEvent(Json{{"error",
                           {{"message", absl::StrCat("generation failed: ", r.status().message())},
                            {"type", "internal_error"}}}}));
      break;
    }
    if (r->finish_reason == "abort" && !writable()) return;
    // Reasoning held back by the split when no text came at the end.
    if (job.chat && !r->reasoning_tail.empty()) send(ReasoningTailChoiceJson(i, r->reasoning_tail));
    completion_tokens += static_cast<int64_t>(r->tokens.size());
    t_log.completion_tokens += static_cast<int64_t>(r->tokens.size());
    t_log.finish = r->finish_reason;
    if (!send(FinishChoiceJson(job, i, *r))) return;
  }
  if (job.include_usage) {
    write(SseEvent(UsageChunkJson(job, options_.model_name, completion_tokens)));
  }
  write(kSseDone);
}

absl::Status RunServer(const ServeOptions& options, const ServedModel& model,
                       const ServeHooks& hooks) {
  BatchedGenerator generator(*model.engine, options.max_batch);
  ApiServer api(options, *model.tokenizer, model.chat_template, model.engine->config(), generator);
  httplib::Server svr;
  const size_t pool = static_cast<size_t>(std::max(8, 2 * options.max_batch + 2));
  svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  svr.set_payload_max_length(static_cast<size_t>(options.max_request_bytes));
  svr.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_log = RequestLog{};
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e{res.status, absl::StrCat("HTTP ", res.status)};
        if (res.status == 404)
          e.message = absl::StrCat("no such endpoint: ", req.method, " ", req.path);
        if (res.status == 413)
          e.message = "the request body is larger than this server's --max-request-bytes";
        if (res.status >= 500) e.type = "internal_error";
        ApiServer::SendError(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const double s = std::chrono::duration<double>(Clock::now() - t_log.start).count();
    std::string line = absl::StrFormat("retort serve: %s %s %s %d %.3fs", req.remote_addr,
                                       req.method, req.path, res.status, s);
    if (t_log.prompt_tokens >= 0) {
      absl::StrAppend(&line, " prompt_tokens=", t_log.prompt_tokens,
                      " completion_tokens=", t_log.completion_tokens);
      if (!t_log.finish.empty()) absl::StrAppend(&line, " finish=", t_log.finish);
    }
    std::cerr << line + "\n" << std::flush;
  });
  api.Register(svr);

  int port = options.port;
  if (port == 0) {
    port = svr.bind_to_any_port(options.host);
    if (port < 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.host, " (any port)"));
    }
  } else if (!svr.bind_to_port(options.host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.host, ":", port,
                                               " (address in use, or not this machine's?)"));
  }
  if (hooks.on_listening) hooks.on_listening(port);

  // The stop watcher: the first stop request stops accepting and starts the
  // grace period; a second one (or the end of the grace period) aborts the
  // in-flight generations.
  std::atomic<bool> finished{false};
  std::thread stop_thread([&] {
    bool stopping = false;
    int seen = 0;
    Clock::time_point deadline;
    while (!finished) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::string name;
      const int count = hooks.stop_requests ? hooks.stop_requests(&name) : 0;
      if (count > seen) {
        seen = count;
        if (!stopping) {
          std::cerr << "retort serve: " << name << ", stopping (" << api.in_flight()
                    << " request(s) in flight)\n"
                    << std::flush;
          stopping = true;
          deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(options.shutdown_grace_s));
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
  stop_thread.join();
  if (!listened) return absl::InternalError("the HTTP server stopped unexpectedly");
  return absl::OkStatus();
}

}  // namespace retort::serve
