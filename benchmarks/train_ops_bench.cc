// Training kernels (kernels/cpu/train_ops.h) on SmolLM2-135M's layer shapes
// (hidden 576, FFN 1536, 9 heads x 64, 3 KV heads) for a packed sequence of
// --tokens (default 512), beside the machine's sgemm ceiling.
//
// Each entry reports GFLOPS of useful work:
//   linear_fwd  2*m*n*k;  linear_bwd 4*m*n*k (dx and dw; dbias is O(m*n)).
//   attention_fwd 4*P*d*heads (Q·K^T and P·V over the P visible pairs);
//   attention_bwd 10*P*d*heads (the five products of the FlashAttention-2
//   backward; this kernel computes seven, recomputing S and dP for dQ).
//
//   train_ops_bench [--threads N] [--tokens 512] [--smoke] [benchmark flags]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/thread_pool.h"
#include "kernels/cpu/train_ops.h"

namespace retort {
namespace {

void RegisterLinear(const char* name, int64_t m, int64_t k, int64_t n, double min_time) {
  const std::string base = std::string(name) + "/m" + std::to_string(m) + "_k" + std::to_string(k) +
                           "_n" + std::to_string(n);
  RegisterWallClockBenchmark("linear_fwd/" + base, benchmark::kMillisecond, min_time,
                             [=](benchmark::State& state) {
                               auto x = RandomFloats(m * k, 1), w = RandomFloats(n * k, 2);
                               std::vector<float> y(m * n);
                               for (auto _ : state) {
                                 cpu::LinearForward(x.data(), m, k, w.data(), n, nullptr, y.data());
                                 benchmark::DoNotOptimize(y.data());
                               }
                               state.counters["GFLOPS"] = PerSecond(2.0 * m * n * k / 1e9);
                             });
  RegisterWallClockBenchmark(
      "linear_bwd/" + base, benchmark::kMillisecond, min_time, [=](benchmark::State& state) {
        auto x = RandomFloats(m * k, 1), w = RandomFloats(n * k, 2), dy = RandomFloats(m * n, 3);
        std::vector<float> dx(m * k), dw(n * k, 0.f);
        for (auto _ : state) {
          cpu::LinearBackward(x.data(), m, k, w.data(), n, dy.data(), dx.data(), dw.data(),
                              nullptr);
          benchmark::DoNotOptimize(dw.data());
        }
        state.counters["GFLOPS"] = PerSecond(4.0 * m * n * k / 1e9);
      });
}

void RegisterAttention(int64_t n, int64_t heads, int64_t kv_heads, int64_t d, int64_t docs,
                       double min_time) {
  const std::string base = "n" + std::to_string(n) + "_h" + std::to_string(heads) + "x" +
                           std::to_string(d) + "_kv" + std::to_string(kv_heads) + "_docs" +
                           std::to_string(docs);
  auto setup = [=] {
    struct Data {
      std::vector<float> q, k, v, dout, out, lse, dq, dk, dv;
      std::vector<int32_t> doc_start;
      double pairs = 0;  // visible (query, key) pairs
    } t;
    t.q = RandomFloats(n * heads * d, 1);
    t.k = RandomFloats(n * kv_heads * d, 2);
    t.v = RandomFloats(n * kv_heads * d, 3);
    t.dout = RandomFloats(n * heads * d, 4);
    t.out.resize(t.q.size());
    t.lse.resize(heads * n);
    t.dq.resize(t.q.size());
    t.dk.resize(t.k.size());
    t.dv.resize(t.v.size());
    const int64_t doc_len = (n + docs - 1) / docs;
    for (int64_t i = 0; i < n; ++i) {
      t.doc_start.push_back(static_cast<int32_t>(i / doc_len * doc_len));
      t.pairs += static_cast<double>(i - t.doc_start.back() + 1);
    }
    return t;
  };
  const cpu::AttentionShape shape{heads, kv_heads, d};
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  RegisterWallClockBenchmark(
      "attention_fwd/" + base, benchmark::kMillisecond, min_time, [=](benchmark::State& state) {
        auto t = setup();
        for (auto _ : state) {
          cpu::AttentionForward(t.q.data(), t.k.data(), t.v.data(), t.doc_start.data(), n, shape,
                                scale, 0, t.out.data(), t.lse.data());
          benchmark::DoNotOptimize(t.out.data());
        }
        state.counters["GFLOPS"] = PerSecond(4.0 * t.pairs * d * heads / 1e9);
      });
  RegisterWallClockBenchmark(
      "attention_bwd/" + base, benchmark::kMillisecond, min_time, [=](benchmark::State& state) {
        auto t = setup();
        cpu::AttentionForward(t.q.data(), t.k.data(), t.v.data(), t.doc_start.data(), n, shape,
                              scale, 0, t.out.data(), t.lse.data());
        for (auto _ : state) {
          cpu::AttentionBackward(t.q.data(), t.k.data(), t.v.data(), t.doc_start.data(), n, shape,
                                 scale, 0, t.out.data(), t.lse.data(), t.dout.data(), t.dq.data(),
                                 t.dk.data(), t.dv.data());
          benchmark::DoNotOptimize(t.dq.data());
        }
        state.counters["GFLOPS"] = PerSecond(10.0 * t.pairs * d * heads / 1e9);
      });
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) {
  using namespace retort;
  BenchFlags flags;
  int64_t tokens = 0;
  BenchArgs args("train_ops_bench");
  args.AddThreads(&flags.threads);
  args.AddSmoke(&flags.smoke);
  args.Add()("tokens", po::value(&tokens), "tokens of the packed sequence (default 512; smoke 70)");
  args.Parse(&argc, argv, UnknownFlags::kKeepForGoogleBenchmark);
  tokens = args.PositiveOr("tokens", tokens, flags.smoke ? 70 : 512);
  SetNumThreads(flags.threads);
  benchmark::AddCustomContext("retort_threads", std::to_string(flags.threads));
  if (!flags.smoke) AddCeilingsToBenchmarkContext(flags.threads, size_t{64} << 20, 1024);
  const double min_time = flags.smoke ? 0.01 : 0.5;
  RegisterLinear("ffn_up", tokens, 576, 1536, min_time);
  RegisterLinear("ffn_down", tokens, 1536, 576, min_time);
  RegisterLinear("attn_q", tokens, 576, 576, min_time);
  RegisterAttention(tokens, 9, 3, 64, 1, min_time);
  RegisterAttention(tokens, 9, 3, 64, 4, min_time);
  return RunGoogleBenchmarks(&argc, argv);
}
