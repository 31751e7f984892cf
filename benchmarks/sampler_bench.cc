// Time per sampled token on a Qwen2-sized vocabulary (151,936 logits) for the
// usual decoding settings. Single-threaded (the sampler is). JSON with
// --benchmark_format=json; --smoke uses a 1,000-token vocabulary.
#include <cmath>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "model/sampler.h"

namespace retort {
namespace {

std::vector<float> Logits(int64_t vocab) {
  Xoshiro256 rng(2024);
  std::vector<float> l(vocab);
  for (float& v : l) {  // roughly normal, scale 3: a peaked LLM-like row
    double u1 = 1.0 - rng.Uniform(), u2 = rng.Uniform();
    v = static_cast<float>(3.0 * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return l;
}

void Register(const std::string& name, SamplerOptions o, int64_t vocab) {
  benchmark::RegisterBenchmark(
      ("sample/" + name + "/vocab:" + std::to_string(vocab)).c_str(),
      [o, vocab](benchmark::State& state) {
        std::vector<float> logits = Logits(vocab);
        std::vector<int32_t> history;
        for (int i = 0; i < 256; ++i) history.push_back((i * 7919) % vocab);
        Sampler sampler(o);
        for (auto _ : state) {
          benchmark::DoNotOptimize(sampler.Sample(logits.data(), vocab, history));
        }
        state.SetItemsProcessed(state.iterations());
      })
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) {
  using namespace retort;
  BenchFlags flags = ParseBenchFlags("sampler_bench", &argc, argv);
  const int64_t vocab = flags.smoke ? 1000 : 151936;
  Register("greedy", {0.f, 0, 1.f, 0.f, 1.f, 1}, vocab);
  Register("temperature", {0.8f, 0, 1.f, 0.f, 1.f, 1}, vocab);
  Register("top_k40", {0.8f, 40, 1.f, 0.f, 1.f, 1}, vocab);
  Register("top_p0.95", {0.6f, 0, 0.95f, 0.f, 1.f, 1}, vocab);
  Register("top_k20_top_p0.95", {0.6f, 20, 0.95f, 0.f, 1.f, 1}, vocab);
  Register("min_p0.05_penalty1.1", {1.f, 0, 1.f, 0.05f, 1.1f, 1}, vocab);
  return RunGoogleBenchmarks(&argc, argv);
}
