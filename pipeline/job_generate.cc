// `retort generate --prompts` as a JobCommand (stage_job.h) over
// distill/generate_traces.h: N verified samples per prompt, resumable, from
// our engine or an OpenAI-compatible endpoint. An eval stage is the same job,
// greedy, keeping every sample, verified, without a token shard.
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "distill/generate_traces.h"
#include "distill/verify.h"
#include "model/sampler.h"
#include "pipeline/stage_fields.h"
#include "pipeline/stage_job.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

class GenerateTracesJob : public JobCommand {
 public:
  void AddOptions(po::options_description& opts, bool command_line) override {
    opts.add_options()("model", po::value(&job_.model), "teacher: model directory or .gguf file")(
        "prompts", RequiredOnCommandLine(&job_.prompts_path, command_line),
        "prompts JSONL: {\"id\", \"prompt\" | \"messages\", \"answer\"?} per line");
    out_.AddOptions(opts, command_line,
                    "output folder (a rerun with the same settings generates only what is "
                    "missing)");
    opts.add_options()("samples,n", po::value(&job_.sampling.samples)->default_value(1),
                       "samples per prompt")(
        "temperature", po::value(&job_.sampling.temperature)->default_value(0.6f, "0.6"),
        "0 = greedy")("top-p", po::value(&job_.sampling.top_p)->default_value(0.95f, "0.95"),
                      "nucleus sampling mass")(
        "max-tokens", po::value(&job_.sampling.max_tokens)->default_value(1024),
        "tokens per sample at most")(
        "seed", po::value(&job_.sampling.seed)->default_value(0),
        "base seed; sample i of prompt ID uses TraceSampleSeed(seed, ID, i)")(
        "greedy", po::bool_switch(&greedy), "same as --temperature 0")(
        "top-logprobs", po::value(&job_.sampling.top_logprobs)->default_value(0),
        "store the teacher's top-K log-probs per generated token in tokens.shard")(
        "verifier", po::value(&job_.verifier),
        "math | exact | exact-ci | regex:PATTERN | command:PROG ARGS | none "
        "(default: math when the prompts have answers)")(
        "keep", po::value(&job_.keep), "correct | all (default: correct when verifying, else all)")(
        "think-prefix", po::value(&job_.think_name)->default_value("auto"),
        "open the assistant turn with <think>\\n: auto (templates that mention <think>) | on | "
        "off")("no-shard", po::bool_switch(&no_shard), "write no tokens.shard (JSONL only)")(
        "max-batch", po::value(&job_.max_batch)->default_value(8),
        "sequences generated at once (local)")("threads", po::value(&threads)->default_value(0),
                                               "worker threads (0 = all cores)")(
        "endpoint", po::value(&job_.endpoint),
        "OpenAI-compatible base URL, e.g. http://host:8000/v1")(
        "model-name", po::value(&job_.model_name),
        "model name sent to the endpoint (default: its first)")(
        "api-key-env", po::value(&job_.api_key_env)->default_value("OPENAI_API_KEY"),
        "environment variable holding the endpoint's API key")(
        "concurrency", po::value(&job_.concurrency)->default_value(8),
        "endpoint requests in flight")("timeout", po::value(&job_.timeout_s)->default_value(600),
                                       "seconds per endpoint request")(
        "retries", po::value(&job_.retries)->default_value(4), "endpoint retries per request");
  }
  // With --endpoint and one positional, it is MODEL (the tokenizer): OUT is -o.
  std::vector<std::string> Positionals() const override { return {"model", "output"}; }
  const OutputOption* Output() const override { return &out_; }

  absl::Status FromStage(const proto::Stage& stage, const StageContext& context,
                         const po::variables_map& vm) override {
    from_stage_ = true;
    StageFields f(vm);
    if (stage.has_eval()) {
      const proto::Eval& e = stage.eval();
      f.Text("model", e.model(), &job_.model);
      f.Text("prompts", e.prompts(), &job_.prompts_path);
      f.Fixed("output", (fs::path(context.dir) / "gen").string(), &out_.path());
      f.Fixed("greedy", true, &greedy);
      f.Fixed("keep", std::string("all"), &job_.keep);
      f.Text("verifier", e.verifier().empty() ? "math" : e.verifier(), &job_.verifier);
      f.Fixed("no-shard", true, &no_shard);
      f.Num("max-tokens", e.has_max_tokens(), e.max_tokens(), &job_.sampling.max_tokens);
      f.Num("max-batch", e.has_max_batch(), e.max_batch(), &job_.max_batch);
      f.Text("think-prefix", e.think_prefix(), &job_.think_name);
    } else {
      const proto::Generate& g = stage.generate();
      f.Text("model", g.model(), &job_.model);
      f.Text("prompts", g.prompts(), &job_.prompts_path);
      f.Fixed("output", context.dir, &out_.path());
      f.Num("samples", g.has_samples(), g.samples(), &job_.sampling.samples);
      f.Num("temperature", g.has_temperature(), g.temperature(), &job_.sampling.temperature);
      f.Num("top-p", g.has_top_p(), g.top_p(), &job_.sampling.top_p);
      f.Num("max-tokens", g.has_max_tokens(), g.max_tokens(), &job_.sampling.max_tokens);
      f.Num("seed", g.has_seed(), g.seed(), &job_.sampling.seed);
      f.Text("verifier", g.verifier(), &job_.verifier);
      f.Text("keep", g.keep(), &job_.keep);
      f.Num("max-batch", g.has_max_batch(), g.max_batch(), &job_.max_batch);
      f.Num("top-logprobs", g.has_top_logprobs(), g.top_logprobs(), &job_.sampling.top_logprobs);
      f.Text("think-prefix", g.think_prefix(), &job_.think_name);
      f.Flag("no-shard", g.no_shard(), &no_shard);
      f.Text("endpoint", g.endpoint(), &job_.endpoint);
      f.Text("model-name", g.model_name(), &job_.model_name);
      f.Text("api-key-env", g.api_key_env(), &job_.api_key_env);
      f.Num("concurrency", g.has_concurrency(), g.concurrency(), &job_.concurrency);
    }
    f.Num("threads", context.threads > 0, context.threads, &threads);
    return f.status();
  }

  absl::Status Run(const po::variables_map&, const JobIo& io) override {
    job_.output = out_.path();
    if (!from_stage_) {
      // OUT is resumed only when it is a traces folder: a command never
      // writes into another one (a stage's folder is the runner's).
      std::error_code ec;
      if (fs::is_directory(job_.output, ec) && !fs::is_empty(job_.output, ec) &&
          !fs::exists(fs::path(job_.output) / "job.json", ec)) {
        return absl::AlreadyExistsError(
            absl::StrCat(job_.output,
                         " already exists and is not a traces folder (no job.json); choose "
                         "another OUT"));
      }
    }
    if (greedy) job_.sampling.temperature = 0;
    if (job_.model.empty() && job_.endpoint.empty()) return OptionError("give MODEL or --endpoint");
    if (job_.sampling.samples < 1) return OptionError("--samples must be at least 1");
    if (job_.sampling.max_tokens < 1) return OptionError("--max-tokens must be at least 1");
    if (job_.sampling.top_logprobs < 0) return OptionError("--top-logprobs must be >= 0");
    if (job_.max_batch < 1) return OptionError("--max-batch must be at least 1");
    if (job_.concurrency < 1) return OptionError("--concurrency must be at least 1");
    SamplerOptions check;
    check.temperature = job_.sampling.temperature;
    check.top_p = job_.sampling.top_p;
    RETURN_IF_ERROR(ValidateSamplerOptions(check));
    absl::StatusOr<ThinkPrefix> think = ParseThinkPrefix(job_.think_name);
    if (!think.ok()) return think.status();
    if (threads > 0) SetNumThreads(threads);
    const bool write_shard = !no_shard;
    if (!write_shard && job_.sampling.top_logprobs > 0) {
      return OptionError("--top-logprobs needs tokens.shard (drop --no-shard)");
    }

    job_.think = *think;
    job_.write_shard = write_shard;
    ASSIGN_OR_RETURN(TraceJobReport result, GenerateTraces(job_, *io.progress));
    const TraceJobReport* report = &result;
    const nlohmann::ordered_json& sum = report->summary;
    *io.out << absl::StrFormat(
        "%d prompts (%d skipped), %d samples: %d kept, %d rejected; %d tokens generated in %.1f s "
        "(%.1f tok/s)\n",
        report->prompts, report->prompts_skipped, sum["samples"].get<int64_t>(),
        sum["kept"].get<int64_t>(), sum["rejected"].get<int64_t>(), report->generated_tokens,
        report->seconds, report->generated_tokens / std::max(report->seconds, 1e-9));
    if (sum["rejected"].get<int64_t>() > 0) {
      std::string why;
      for (const auto& [reason, count] : sum["rejected_reasons"].items()) {
        absl::StrAppend(&why, why.empty() ? "" : ", ", count.get<int64_t>(), " ", reason);
      }
      *io.out << "rejected: " << why << " (kept in rejected.jsonl)\n";
    }
    if (!sum["verification"].is_null()) *io.out << FormatVerificationSummary(sum["verification"]);
    for (const auto& w : sum["warnings"]) *io.out << w.get<std::string>() << "\n";
    *io.out << "wrote " << job_.output << "/traces.jsonl" << (write_shard ? ", tokens.shard" : "")
            << ", rejected.jsonl, summary.json\n";
    return absl::OkStatus();
  }

 private:
  GenerateTracesOptions job_;
  OutputOption out_{OutputOption::Kind::kFolder, OutputOption::Existing::kResume};
  int threads = 0;
  bool greedy = false, no_shard = false, from_stage_ = false;
};

}  // namespace

std::unique_ptr<JobCommand> NewGenerateTracesJob() { return std::make_unique<GenerateTracesJob>(); }

}  // namespace retort::pipeline
