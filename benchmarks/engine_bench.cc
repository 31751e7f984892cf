// Prefill and decode speed of the CPU engine on a random-initialised model,
// each beside its ceiling measured in the same run:
//   decode  : tokens/s vs the bandwidth roofline = memory bandwidth / bytes
//             streamed per token (every weight matrix + lm_head + KV cache).
//             Memory bandwidth is counted as STREAM counts a copy: bytes read
//             plus bytes written by a multithreaded memcpy.
//   prefill : achieved GFLOP/s (2 * matmul params * tokens + attention) vs
//             OpenBLAS sgemm peak on the same threads.
//   gemm    : cpu::MatMul GFLOP/s on the model's layer shapes with weights in
//             the stored dtype (m = prompt tokens) vs sgemm peak, and the
//             GEMV (m = 1) weight-read rate vs memory bandwidth.
// Output: one JSON object on stdout (and --out FILE).
//
//   engine_bench [--threads 2] [--family llama] [--size 100m] [--dtype bf16]
//                [--prompt 512] [--decode 64] [--repeats 3] [--out FILE]
//   engine_bench --model FILE.gguf|HF_DIR ...   (a real model instead of a preset)
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_model.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "quantize/gguf_quants.h"

namespace retort {
namespace {

struct Flags : BenchModelFlags {
  int threads = 2;
  std::string out;
  int64_t prompt = 512, decode = 64;
  int repeats = 3;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchArgs args("engine_bench");
  args.AddThreads(&f.threads);
  args.AddOut(&f.out);
  AddBenchModelFlags(args, &f);
  args.Add()("prompt", po::value(&f.prompt)->default_value(f.prompt), "prefill tokens")(
      "decode", po::value(&f.decode)->default_value(f.decode), "decoded tokens")(
      "repeats", po::value(&f.repeats)->default_value(f.repeats), "timed repeats (best kept)");
  args.Parse(&argc, argv, UnknownFlags::kError);
  return f;
}

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  DType dtype;
  std::unique_ptr<Transformer> model = LoadBenchModel(&flags, &dtype);
  if (model == nullptr) return 1;
  const ModelConfig& c = model->config();

  Ceilings ceil;
  ceil.threads = flags.threads;
  ceil.memcpy_gbps = MeasureMemcpyGBps(flags.threads);
  ceil.sgemm_gflops = MeasureSgemmGflops(flags.threads);
  SetNumThreads(flags.threads);

  // Bytes one decode step must stream: all weights except the embedding
  // table, which is read one row per token (unless tied, then it is lm_head).
  size_t weight_bytes = model->WeightBytes();
  size_t embed_bytes = DTypeBytes(dtype, c.vocab_size * c.hidden_size);
  for (const auto& [name, t] : model->NamedWeights()) {
    if (name == "model.embed_tokens.weight") embed_bytes = t.nbytes();
  }
  size_t streamed = c.tie_word_embeddings ? weight_bytes : weight_bytes - embed_bytes;
  // Matmul parameters touched per token in prefill (lm_head only for the last token).
  int64_t kv_dim = c.num_kv_heads * c.head_dim, q_dim = c.num_heads * c.head_dim;
  int64_t layer_params = c.hidden_size * (q_dim + 2 * kv_dim) + q_dim * c.hidden_size +
                         3 * c.hidden_size * c.intermediate_size;
  int64_t matmul_params = layer_params * c.num_layers;

  std::vector<int32_t> tokens(flags.prompt);
  for (int64_t i = 0; i < flags.prompt; ++i)
    tokens[i] = static_cast<int32_t>((i * 7919) % c.vocab_size);
  std::vector<float> logits(c.vocab_size);

  double best_prefill = 1e30;
  for (int r = 0; r < flags.repeats; ++r) {
    KvCache cache = model->NewCache(flags.prompt + 1);
    auto t = Clock::now();
    auto s = model->Forward(tokens.data(), flags.prompt, cache, logits.data(), LogitsMode::kLast);
    best_prefill = std::min(best_prefill, Since(t));
    if (!s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  double n = static_cast<double>(flags.prompt);
  double attn_flops = 4.0 * c.num_layers * q_dim * (n * (n + 1) / 2);  // QK^T and PV, causal
  double prefill_flops = 2.0 * matmul_params * n + attn_flops + 2.0 * c.vocab_size * c.hidden_size;
  double prefill_gflops = prefill_flops / best_prefill / 1e9;

  // Decode: a short prompt, then `decode` single-token steps.
  const int64_t ctx = 64;
  double best_decode = 1e30;
  for (int r = 0; r < flags.repeats; ++r) {
    KvCache cache = model->NewCache(ctx + flags.decode + 1);
    (void)model->Forward(tokens.data(), ctx, cache, logits.data(), LogitsMode::kLast);
    int32_t next = 1;
    auto t = Clock::now();
    for (int64_t i = 0; i < flags.decode; ++i) {
      (void)model->Forward(&next, 1, cache, logits.data(), LogitsMode::kLast);
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    best_decode = std::min(best_decode, Since(t) / flags.decode);
  }
  double kv_bytes = 2.0 * c.num_layers * kv_dim * 4 * (ctx + flags.decode / 2.0);
  double bytes_per_token = streamed + kv_bytes;
  double bandwidth = 2 * ceil.memcpy_gbps * 1e9;  // read + write, STREAM-style
  double roofline_tps = bandwidth / bytes_per_token;
  double decode_tps = 1.0 / best_decode;

  // The kernels alone, on the shapes of one layer: GEMM at m = prompt, GEMV at m = 1.
  nlohmann::ordered_json gemm = nlohmann::ordered_json::array();
  struct Shape2 {
    const char* name;
    int64_t n, k;
  };
  for (const Shape2& sh :
       {Shape2{"qkv", q_dim + 2 * kv_dim, c.hidden_size}, Shape2{"o", c.hidden_size, q_dim},
        Shape2{"gate_up", 2 * c.intermediate_size, c.hidden_size},
        Shape2{"down", c.hidden_size, c.intermediate_size}}) {
    Tensor w = Tensor::Zeros(DType::kF32, {sh.n, sh.k});
    for (int64_t i = 0; i < w.numel(); ++i)
      w.mutable_data<float>()[i] = static_cast<float>((i * 37) % 101) * 1e-3f;
    if (IsBlockQuantized(dtype)) {
      if (sh.k % DTypeBlockElems(dtype) != 0) continue;  // e.g. k-quants on 576-wide rows
      auto q = ggml::QuantizeTensor(w, dtype);
      if (!q.ok()) continue;
      w = *std::move(q);
    } else {
      w = w.To(dtype);
    }
    for (int64_t m : {flags.prompt, int64_t{1}}) {
      std::vector<float> x(m * sh.k, 0.01f), y(m * sh.n);
      double best = 1e30;
      int reps = m == 1 ? 50 : flags.repeats;
      for (int r = 0; r < reps; ++r) {
        auto t = Clock::now();
        (void)cpu::MatMul(x.data(), m, w, nullptr, y.data());
        best = std::min(best, Since(t));
      }
      double gflops = 2.0 * m * sh.n * sh.k / best / 1e9;
      nlohmann::ordered_json row = {
          {"layer", sh.name},     {"m", m},          {"n", sh.n}, {"k", sh.k},
          {"dtype", flags.dtype}, {"gflops", gflops}};
      if (m == 1) {
        double gbps = static_cast<double>(w.nbytes()) / best / 1e9;
        row["weight_gbps"] = gbps;
        row["fraction_of_bandwidth"] = gbps * 1e9 / (2 * ceil.memcpy_gbps * 1e9);
      } else {
        row["fraction_of_sgemm_peak"] = gflops / ceil.sgemm_gflops;
      }
      gemm.push_back(row);
    }
  }

  nlohmann::ordered_json out = {{"model", BenchModelJson(flags, c, weight_bytes)},
                                {"threads", flags.threads},
                                {"ceilings",
                                 {{"memcpy_copy_gbps", ceil.memcpy_gbps},
                                  {"memory_bandwidth_gbps", bandwidth / 1e9},
                                  {"sgemm_gflops", ceil.sgemm_gflops}}},
                                {"prefill",
                                 {{"tokens", flags.prompt},
                                  {"seconds", best_prefill},
                                  {"tokens_per_second", n / best_prefill},
                                  {"gflops", prefill_gflops},
                                  {"fraction_of_sgemm_peak", prefill_gflops / ceil.sgemm_gflops}}},
                                {"decode",
                                 {{"tokens", flags.decode},
                                  {"context", ctx},
                                  {"tokens_per_second", decode_tps},
                                  {"bytes_per_token", bytes_per_token},
                                  {"roofline_tokens_per_second", roofline_tps},
                                  {"fraction_of_roofline", decode_tps / roofline_tps},
                                  {"fraction_of_copy_rate_roofline",
                                   decode_tps / (ceil.memcpy_gbps * 1e9 / bytes_per_token)}}},
                                {"matmul", gemm}};
  EmitBenchJson(out, flags.out);
  return 0;
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) { return retort::Main(argc, argv); }
