#include "serve/server.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "serve/request_guard.h"

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
  bool client_gone = false;
};
thread_local RequestLog t_log;

// One client connection, served on one pool thread from accept to close.
// Its phase says whether it may be evicted: a connection waiting for a
// request (kIdle) or still receiving one (kReading) holds a thread without
// work, one in kHandling is being answered.
enum class Phase { kIdle, kReading, kHandling };
struct Connection {
  explicit Connection(int fd) : fd(fd) {}
  const int fd;
  Phase phase = Phase::kIdle;  // guarded by ConnectionTable's mutex
  Clock::time_point since = Clock::now();
  bool evicted = false;
  // Set on the connection's own thread.
  Clock::time_point read_deadline = Clock::time_point::max();
  int64_t bytes_read = 0;  // of the current request
  bool over_limit = false;
  bool close_after = false;  // the stream may hold unread bytes: no keep-alive
};
// The connection the current pool thread serves (null outside GuardedServer).
thread_local Connection* t_connection = nullptr;
class ConnectionTable;
thread_local ConnectionTable* t_table = nullptr;

// True for 1, 2, 4, 8, ...: log lines under a flood stay few.
bool LogThisOne(int64_t count) { return count > 0 && (count & (count - 1)) == 0; }

// Whether the peer of `fd` is still there: no FIN or reset received (pending
// bytes, a pipelined request, count as there).
bool PeerConnected(int fd) {
  char c;
  const ssize_t r = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r > 0) return true;
  if (r == 0) return false;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

int PollMs(Clock::duration d) {
  const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 100));
}

// The connections being served, and the admission rule at accept time.
class ConnectionTable {
 public:
  explicit ConnectionTable(int capacity) : capacity_(capacity) {}

  // On the accept thread, for a new connection: true when it may have a
  // thread, after evicting the connection idle or reading for longest when
  // all are taken; false when every connection is being answered.
  bool Admit() {
    std::lock_guard<std::mutex> lock(mu_);
    if (admitted_ < capacity_ + evicting_) {
      ++admitted_;
      return true;
    }
    Connection* oldest = nullptr;
    for (Connection* c : live_) {
      if (c->evicted || c->phase == Phase::kHandling) continue;
      if (!oldest || c->since < oldest->since) oldest = c;
    }
    if (!oldest) {
      ++refusals_;
      if (LogThisOne(refusals_)) {
        std::cerr << "retort serve: refused a connection, all " << capacity_
                  << " are answering requests (" << refusals_ << " refused so far)\n";
      }
      return false;
    }
    oldest->evicted = true;
    ++evicting_;
    ++evictions_;
    if (LogThisOne(evictions_)) {
      std::cerr << "retort serve: " << capacity_ << " connections open, closed the one idle for "
                << absl::StrFormat(
                       "%.1f", std::chrono::duration<double>(Clock::now() - oldest->since).count())
                << "s (" << evictions_ << " closed so far)\n";
    }
    // Wakes its thread (its reads return 0); the thread closes the fd.
    ::shutdown(oldest->fd, SHUT_RDWR);
    ++admitted_;
    return true;
  }
  void Add(Connection* c) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.insert(c);
  }
  // After Remove the fd is never touched by the table again.
  void Remove(Connection* c) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(c);
    if (c->evicted) --evicting_;
    --admitted_;
  }
  void SetPhase(Connection* c, Phase phase) {
    std::lock_guard<std::mutex> lock(mu_);
    c->phase = phase;
    c->since = Clock::now();
  }
  int64_t evictions() {
    std::lock_guard<std::mutex> lock(mu_);
    return evictions_;
  }

 private:
  const int capacity_;
  std::mutex mu_;
  std::set<Connection*> live_;
  int admitted_ = 0;  // queued or served
  int evicting_ = 0;  // evicted, their threads not yet done
  int64_t evictions_ = 0;
  int64_t refusals_ = 0;
};

// Set on the accept thread while a refused connection is answered there.
thread_local bool t_refuse = false;

// httplib's thread pool behind the admission rule: a refused connection is
// run at once on the accept thread, where GuardedServer answers it 503.
class AdmittingQueue : public httplib::TaskQueue {
 public:
  AdmittingQueue(ConnectionTable& table, size_t threads) : table_(table), pool_(threads) {}
  void enqueue(std::function<void()> fn) override {
    if (table_.Admit()) return pool_.enqueue(std::move(fn));
    t_refuse = true;
    fn();
    t_refuse = false;
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  ConnectionTable& table_;
  httplib::ThreadPool pool_;
};

// httplib's Stream over a connection's socket, with the limits httplib 0.11
// lacks: a deadline for the whole request (not only for each read), a cap on
// the bytes of one request, and reads that end when the server stops.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(Connection& conn, const std::atomic<socket_t>& server_socket,
                   Clock::duration op_timeout, int64_t max_bytes)
      : conn_(conn),
        server_socket_(server_socket),
        op_timeout_(op_timeout),
        max_bytes_(max_bytes) {}

  bool is_readable() const override { return WaitFor(POLLIN); }
  bool is_writable() const override { return WaitFor(POLLOUT) && PeerConnected(conn_.fd); }
  ssize_t read(char* ptr, size_t size) override {
    if (conn_.bytes_read >= max_bytes_) {
      conn_.over_limit = true;
      return -1;
    }
    if (!WaitFor(POLLIN)) return -1;
    size = static_cast<size_t>(
        std::min<int64_t>(static_cast<int64_t>(size), max_bytes_ - conn_.bytes_read));
    ssize_t n;
    do {
      n = ::recv(conn_.fd, ptr, size, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) conn_.bytes_read += n;
    return n;
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!WaitFor(POLLOUT)) return -1;
    ssize_t n;
    do {
      n = ::send(conn_.fd, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getpeername(conn_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      Describe(addr, len, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(conn_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      Describe(addr, len, ip, port);
  }
  socket_t socket() const override { return conn_.fd; }

 private:
  static void Describe(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port) {
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host), serv,
                      sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }
  // Waits for `events` up to the per-operation timeout, and for reads up to
  // the request's deadline; false on timeout, error or server stop.
  bool WaitFor(short events) const {
    Clock::time_point end = Clock::now() + op_timeout_;
    if (events == POLLIN) end = std::min(end, conn_.read_deadline);
    for (;;) {
      if (server_socket_ == INVALID_SOCKET && events == POLLIN) return false;
      const Clock::time_point now = Clock::now();
      if (now >= end) return false;
      pollfd p{conn_.fd, events, 0};
      const int r = ::poll(&p, 1, std::max(1, PollMs(end - now)));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  Connection& conn_;
  const std::atomic<socket_t>& server_socket_;
  const Clock::duration op_timeout_;
  const int64_t max_bytes_;
};

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// httplib::Server with its connection loop replaced (httplib 0.11 has no
// hook for it): ConnectionStream's limits, the idle timeout, admission and
// eviction through a ConnectionTable, and a 503 for refused connections.
class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(const ServeOptions& options)
      : options_(options), table_(std::max(1, options.max_connections)) {
    const size_t threads = static_cast<size_t>(std::max(1, options.max_connections));
    new_task_queue = [this, threads] { return new AdmittingQueue(table_, threads); };
    set_payload_max_length(static_cast<size_t>(options.max_request_bytes));
  }
  ConnectionTable& table() { return table_; }

 private:
  // Request line and headers on top of the body.
  static constexpr int64_t kHeaderAllowance = 64 << 10;

  bool process_and_close_socket(socket_t sock) override {
    if (t_refuse) {
      Refuse(sock);
      return false;
    }
    Connection conn(sock);
    table_.Add(&conn);
    t_connection = &conn;
    t_table = &table_;
    ConnectionStream stream(conn, svr_sock_, Seconds(std::min(options_.read_timeout_s, 5.0)),
                            options_.max_request_bytes + kHeaderAllowance);
    bool ok = false;
    for (size_t left = keep_alive_max_count_; left > 0; --left) {
      table_.SetPhase(&conn, Phase::kIdle);
      if (!WaitForRequest(conn)) break;
      table_.SetPhase(&conn, Phase::kReading);
      conn.read_deadline = Clock::now() + Seconds(options_.read_timeout_s);
      conn.bytes_read = 0;
      t_log = RequestLog{};
      bool closed = false;
      ok = process_request(stream, /*close_connection=*/left == 1, closed, nullptr);
      if (!ok || closed || conn.close_after || conn.evicted) break;
    }
    t_connection = nullptr;
    t_table = nullptr;
    table_.Remove(&conn);
    CloseLingering(sock);
    return ok;
  }

  // Waits for the first byte of the next request: false after the idle
  // timeout, when evicted or when the server stops.
  bool WaitForRequest(const Connection& conn) {
    const Clock::time_point end = Clock::now() + Seconds(options_.keep_alive_timeout_s);
    for (;;) {
      if (svr_sock_ == INVALID_SOCKET) return false;
      const Clock::time_point now = Clock::now();
      if (now >= end) return false;
      pollfd p{conn.fd, POLLIN, 0};
      const int r = ::poll(&p, 1, std::max(1, PollMs(end - now)));
      if (r > 0) return PeerConnected(conn.fd);
      if (r < 0 && errno != EINTR) return false;
    }
  }

  // Half-closes, then drains what the client still sends for a moment: closing
  // a socket with unread bytes resets it, and the client could lose the
  // answer (an early 401 or 413 leaves the body unread).
  static void CloseLingering(int fd) {
    ::shutdown(fd, SHUT_WR);
    const Clock::time_point end = Clock::now() + std::chrono::milliseconds(200);
    char buf[4096];
    int64_t drained = 0;
    while (Clock::now() < end && drained < (1 << 20)) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, std::max(1, PollMs(end - Clock::now()))) <= 0) break;
      const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) break;
      drained += n;
    }
    ::close(fd);
  }

  // On the accept thread: a short 503 that never blocks, then close.
  static void Refuse(int fd) {
    static const std::string response = [] {
      const std::string body = DumpJson(ErrorJson(ApiError{
          503, "the server is busy: every connection is answering a request; retry shortly",
          "server_busy"}));
      return absl::StrCat(
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Retry-After: 1\r\nConnection: close\r\nContent-Length: ",
          body.size(), "\r\n\r\n", body);
    }();
    (void)!::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
  }

  const ServeOptions& options_;
  ConnectionTable table_;
};

// Called once a request has been read in full: from now on its connection is
// busy answering, not waiting on the client.
void MarkHandling() {
  if (t_connection && t_table) t_table->SetPhase(t_connection, Phase::kHandling);
}

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
  c.max_request_tokens = options.max_request_tokens;
  c.max_prompt_bytes = MaxPromptBytes(tokenizer, c.context_length);
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
  MarkHandling();
  try {
    auto job = std::make_shared<CompletionJob>();
    if (std::optional<ApiError> e = Parse(req.body, chat, job.get())) return SendError(res, *e);
    t_log.prompt_tokens = job->prompt_tokens();
    if (!job->stream) {
      Json answer;
      std::function<bool()> connected;
      if (t_connection) {
        const int fd = t_connection->fd;
        connected = [fd] { return PeerConnected(fd); };
      }
      if (std::optional<ApiError> e = Complete(*job, &answer, connected)) return SendError(res, *e);
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
                                                  const TextCallback& on_text,
                                                  const std::function<bool()>& connected) {
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
    if ((on_text && !on_text(keep(text.TakeReady()), &token)) || (connected && !connected())) {
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

std::optional<ApiError> ApiServer::Complete(const CompletionJob& job, Json* answer,
                                            const std::function<bool()>& connected) {
  const int total = job.choices();
  std::vector<absl::StatusOr<ChoiceResult>> results(total, absl::UnknownError("not run"));
  std::atomic<int> next{0};
  auto work = [&] {
    for (int i = next++; i < total; i = next++) {
      try {
        results[i] = RunChoice(job, i, nullptr, connected);
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
  if (connected && !connected()) {
    // Nobody reads the answer; the log says why it ended.
    t_log.client_gone = true;
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
    absl::StatusOr<ChoiceResult> r = RunChoice(job, i, on_text, nullptr);
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
  GuardedServer svr(options);
  // Runs once the headers are in, before the body is read.
  svr.set_pre_routing_handler([&options](const httplib::Request& req, httplib::Response& res) {
    auto refuse = [&res](const ApiError& e) {
      // The body stays unread: the connection cannot be reused.
      if (t_connection) t_connection->close_after = true;
      ApiServer::SendError(res, e);
      return httplib::Server::HandlerResponse::Handled;
    };
    if (req.path != "/health") {
      if (std::optional<ApiError> e =
              CheckApiKey(options.api_key, req.get_header_value("Authorization"))) {
        res.set_header("WWW-Authenticate", "Bearer");
        return refuse(*e);
      }
    }
    if (req.has_header("Content-Length")) {
      const std::string length = req.get_header_value("Content-Length");
      char* end = nullptr;
      errno = 0;
      const unsigned long long n = std::strtoull(length.c_str(), &end, 10);
      if (errno != 0 || end == length.c_str() || *end != '\0' ||
          n > static_cast<unsigned long long>(options.max_request_bytes)) {
        return refuse(ApiError{413, absl::StrCat("the request body (Content-Length ", length,
                                                 ") is larger than this server's "
                                                 "--max-request-bytes (",
                                                 options.max_request_bytes, ")")});
      }
    }
    if (req.method == "GET") MarkHandling();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        // httplib's own errors (a request it could not read) may leave bytes
        // of it in the stream.
        if (t_connection) {
          t_connection->close_after = true;
          if (t_connection->over_limit) res.status = 413;
        }
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
      if (t_log.client_gone) absl::StrAppend(&line, " client_gone");
    }
    std::cerr << line + "\n" << std::flush;
    t_log = RequestLog{};  // nothing of this request shows in the next line
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
