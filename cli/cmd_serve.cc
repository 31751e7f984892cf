// retort serve MODEL: an OpenAI-compatible HTTP server for one model. The
// server is serve/server.h; this command parses the flags, opens the model
// and turns SIGINT/SIGTERM into the server's stop requests.
#include <signal.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "model/model_files.h"
#include "serve/server.h"

namespace retort::cli {
namespace {

volatile std::sig_atomic_t g_stop_signals = 0;
volatile std::sig_atomic_t g_last_signal = 0;
void OnStopSignal(int sig) {
  g_last_signal = sig;
  g_stop_signals = g_stop_signals + 1;
}

int StopRequests(std::string* name) {
  *name = g_last_signal == SIGINT ? "SIGINT" : "SIGTERM";
  return g_stop_signals;
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
  CommandSpec spec{.name = "serve",
                   .usage = "MODEL [options]",
                   .summary =
                       "Serve MODEL over an OpenAI-compatible HTTP API (/v1/completions, "
                       "/v1/chat/completions, /v1/models).",
                   .default_model = true,
                   .device = true};
  // SIGINT/SIGTERM only set a flag (any thread may take them: OpenBLAS starts
  // its threads before main, so a blocked mask cannot cover every thread);
  // the server polls it (ServeHooks::stop_requests).
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  serve::ServeOptions o;
  std::string model_path;
  int threads = 0;
  std::string reasoning = "auto";
  po::options_description opts("options");
  opts.add_options()("model", po::value(&model_path)->required(), "model directory or .gguf file")(
      "host", po::value(&o.host)->default_value("127.0.0.1"),
      "address to listen on (0.0.0.0 = every interface)")(
      "port", po::value(&o.port)->default_value(8080),
      "TCP port (0 = pick a free one; the URL is printed)")(
      "model-name", po::value(&o.model_name),
      "the model id clients send (default: MODEL's folder/file name)")(
      "max-batch", po::value(&o.max_batch)->default_value(4), "sequences generated at once")(
      "max-request-bytes", po::value(&o.max_request_bytes)->default_value(8 << 20),
      "largest request body accepted")(
      "max-tokens-limit", po::value(&o.max_tokens_limit)->default_value(0),
      "largest max_tokens a request may ask for (0 = the model's context)")(
      "max-request-tokens", po::value(&o.max_request_tokens)->default_value(o.max_request_tokens),
      "most tokens one request may generate, prompts x n x max_tokens (0 = no limit)")(
      "api-key", po::value(&o.api_key),
      "require \"Authorization: Bearer KEY\" on every route but /health (default: "
      "$RETORT_API_KEY; prefer the variable, a flag shows in the process list)")(
      "max-connections", po::value(&o.max_connections)->default_value(o.max_connections),
      "connections served at once; beyond it the longest-idle one is closed, or the new one "
      "gets 503")("read-timeout",
                  po::value(&o.read_timeout_s)->default_value(o.read_timeout_s, "10"),
                  "seconds a request's headers and body may take to arrive")(
      "keep-alive-timeout",
      po::value(&o.keep_alive_timeout_s)->default_value(o.keep_alive_timeout_s, "5"),
      "seconds an idle connection stays open")(
      "reasoning-parser", po::value(&reasoning)->default_value("auto"),
      "auto: <think>...</think> goes to reasoning_content; deepseek_r1: the answer always opens "
      "inside the reasoning; none")(
      "shutdown-grace", po::value(&o.shutdown_grace_s)->default_value(10.0, "10"),
      "seconds in-flight requests may run after SIGINT/SIGTERM before they are cut short")(
      "threads", po::value(&threads)->default_value(0), "compute threads (0 = all cores)");
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (auto exit = ParseArgs(spec, args, opts, pos, vm)) return *exit;
  if (o.port < 0 || o.port > 65535) return UsageError(spec.name, "--port must be in 0..65535");
  if (o.max_batch < 1) return UsageError(spec.name, "--max-batch must be at least 1");
  if (o.max_request_bytes < 64)
    return UsageError(spec.name, "--max-request-bytes must be at least 64");
  if (o.max_tokens_limit < 0) return UsageError(spec.name, "--max-tokens-limit must be >= 0");
  if (!(o.shutdown_grace_s >= 0)) return UsageError(spec.name, "--shutdown-grace must be >= 0");
  if (o.max_request_tokens < 0) return UsageError(spec.name, "--max-request-tokens must be >= 0");
  if (o.max_connections < 1 || o.max_connections > 4096)
    return UsageError(spec.name, "--max-connections must be in 1..4096");
  if (!(o.read_timeout_s > 0)) return UsageError(spec.name, "--read-timeout must be > 0");
  if (!(o.keep_alive_timeout_s > 0))
    return UsageError(spec.name, "--keep-alive-timeout must be > 0");
  if (vm.count("api-key") == 0) {
    if (const char* key = std::getenv("RETORT_API_KEY")) o.api_key = key;
  }
  auto mode = ReasoningSplitter::ParseMode(reasoning);
  if (!mode.ok()) return UsageError(spec.name, std::string(mode.status().message()));
  o.reasoning = *mode;
  if (o.model_name.empty()) o.model_name = DefaultModelName(model_path);
  if (threads > 0) SetNumThreads(threads);

  auto tokenizer = LoadTokenizer(model_path);
  if (!tokenizer.ok()) return Fail(spec.name, tokenizer.status());
  auto engine = LoadEngine(model_path);
  if (!engine.ok()) return Fail(spec.name, engine.status());
  std::optional<ChatTemplate> chat_template;
  if (auto t = LoadChatTemplate(model_path); t.ok()) {
    chat_template = *std::move(t);
  } else {
    std::cerr << "retort serve: warning: no chat template (" << t.status().message()
              << "); /v1/chat/completions will answer 400\n";
  }

  serve::ServedModel model{engine->get(), tokenizer->get(),
                           chat_template ? &*chat_template : nullptr};
  serve::ServeHooks hooks;
  hooks.on_listening = [&](int port) {
    std::cout << "retort serve: listening on http://" << o.host << ":" << port << "/v1 (model "
              << o.model_name << ", context " << (*engine)->config().max_position_embeddings
              << (o.api_key.empty() ? "" : ", API key required") << ")" << std::endl;
    if (o.api_key.empty() && o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1") {
      std::cerr << "retort serve: warning: listening on " << o.host
                << " without an API key: anyone who can reach it may use it (--api-key or "
                   "RETORT_API_KEY)\n";
    }
  };
  hooks.stop_requests = StopRequests;
  if (absl::Status s = serve::RunServer(o, model, hooks); !s.ok()) return Fail(spec.name, s);
  std::cerr << "retort serve: stopped\n";
  return kExitOk;
}

}  // namespace retort::cli
