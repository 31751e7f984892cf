// Throughput of distill/generation.h's BatchGenerator (continuous batching)
// at several batch sizes: `batch` slots, 2 * batch requests of --prompt
// prompt tokens and --new generated tokens each (greedy, EOS ignored, so
// every request runs to its length), one top-5 log-prob row per token as a
// teacher run records. Reports generated tokens/s (what a teacher run is
// limited by) and all tokens/s (prompt + generated) per batch size.
// The machine may be shared: besides wall-clock rates the JSON has the
// process CPU seconds (all threads) and generated tokens per CPU second,
// which other processes' load disturbs far less.
// Output: one JSON object on stdout (and --out FILE).
//
//   generation_bench [--threads 2] [--family llama] [--size 100m] [--dtype bf16]
//                    [--batches 1,8,32] [--prompt 64] [--new 64] [--top-k 5] [--out FILE]
//   generation_bench --model FILE.gguf|HF_DIR ...   (a real model instead of a preset)
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_model.h"
#include "benchmarks/bench_output.h"
#include "core/thread_pool.h"
#include "distill/generation.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

// User + system CPU seconds of this process, all threads.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Flags : BenchModelFlags {
  int threads = 2;
  std::string out;
  std::vector<int64_t> batches = {1, 8, 32};
  int64_t prompt = 64, new_tokens = 64;
  int top_k = 5;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  std::string batches;
  BenchArgs args("generation_bench");
  args.AddThreads(&f.threads);
  args.AddOut(&f.out);
  AddBenchModelFlags(args, &f);
  args.Add()("batches", po::value(&batches)->default_value("1,8,32"), "batch sizes (slots)")(
      "prompt", po::value(&f.prompt)->default_value(f.prompt), "prompt tokens per request")(
      "new", po::value(&f.new_tokens)->default_value(f.new_tokens), "generated tokens per request")(
      "top-k", po::value(&f.top_k)->default_value(f.top_k), "log-probs recorded per token");
  args.Parse(&argc, argv, UnknownFlags::kError);
  f.batches = args.IntList("batches", batches, 1, 1 << 20);
  return f;
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  std::unique_ptr<Transformer> model = LoadBenchModel(&flags);
  if (model == nullptr) return 1;
  SetNumThreads(flags.threads);
  const ModelConfig& c = model->config();

  nlohmann::ordered_json runs = nlohmann::ordered_json::array();
  double batch1_tps = 0;
  // Requests 0 and 1 are the same in every run: their tokens at batch B vs
  // batch 1 show how far ForwardBatch's rounding (GEMV vs sgemm paths) moves
  // greedy decoding on this model.
  std::vector<std::vector<int32_t>> first_two;
  for (int64_t batch : flags.batches) {
    const int64_t count = 2 * batch;
    std::vector<GenerationRequest> requests;
    for (int64_t r = 0; r < count; ++r) {
      GenerationRequest q;
      q.id = std::to_string(r);
      for (int64_t i = 0; i < flags.prompt; ++i)
        q.prompt.push_back(static_cast<int32_t>((r * 7919 + i * 104729 + 11) % c.vocab_size));
      q.max_new_tokens = flags.new_tokens;
      q.ignore_eos = true;
      q.top_logprobs = flags.top_k;
      q.sampling.temperature = 0;
      requests.push_back(std::move(q));
    }
    GeneratorOptions options;
    options.max_batch = batch;
    BatchGenerator gen(*model, options);
    auto t = Clock::now();
    const double cpu0 = CpuSeconds();
    std::vector<GenerationResult> results = gen.Generate(std::move(requests));
    const double seconds = Since(t), cpu_seconds = CpuSeconds() - cpu0;
    int64_t generated = 0, prompt = 0;
    double first_token = 0;
    for (const GenerationResult& r : results) {
      if (!r.status.ok()) {
        std::cerr << r.status << "\n";
        return 1;
      }
      generated += r.completion_tokens;
      prompt += r.prompt_tokens;
      first_token += r.first_token_seconds;
    }
    const double tps = generated / seconds;
    int64_t same = 0, compared = 0;
    for (size_t r = 0; r < 2 && r < results.size(); ++r) {
      if (first_two.size() < 2) {
        first_two.push_back(results[r].tokens);
        continue;
      }
      const std::vector<int32_t>& a = first_two[r];
      const std::vector<int32_t>& b = results[r].tokens;
      size_t common = 0;
      while (common < a.size() && common < b.size() && a[common] == b[common]) ++common;
      same += static_cast<int64_t>(common);
      compared += static_cast<int64_t>(a.size());
    }
    if (batch == 1) batch1_tps = tps;
    nlohmann::ordered_json row = {{"batch", batch},
                                  {"requests", count},
                                  {"prompt_tokens", prompt},
                                  {"generated_tokens", generated},
                                  {"seconds", seconds},
                                  {"generated_tokens_per_second", tps},
                                  {"all_tokens_per_second", (generated + prompt) / seconds},
                                  {"cpu_seconds", cpu_seconds},
                                  {"generated_tokens_per_cpu_second", generated / cpu_seconds},
                                  {"steps", gen.stats().steps},
                                  {"forward_fraction", gen.stats().forward_seconds / seconds},
                                  {"mean_first_token_seconds", first_token / count}};
    if (batch1_tps > 0) row["speedup_vs_batch_1"] = tps / batch1_tps;
    if (compared > 0) {
      row["greedy_prefix_agreement_with_first_run"] = static_cast<double>(same) / compared;
    }
    runs.push_back(row);
    std::cerr << "batch " << batch << ": " << tps << " generated tok/s\n";
  }

  nlohmann::ordered_json out = {{"model", BenchModelJson(flags, c, model->WeightBytes())},
                                {"threads", flags.threads},
                                {"prompt", flags.prompt},
                                {"new_tokens", flags.new_tokens},
                                {"top_logprobs", flags.top_k},
                                {"generation", runs}};
  EmitBenchJson(out, flags.out);
  return 0;
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) { return retort::Main(argc, argv); }
