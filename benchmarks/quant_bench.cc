// cpu::MatMul with ggml block-quantized weights on SmolLM2-135M's layer
// shapes (hidden 576, FFN 1536, KV 192, vocab 49152), beside the memcpy
// bandwidth of the same run.
//
//   gemv (m = 1): weight bytes read per second (GB/s) and GFLOP/s (2*n*k).
//     "cold": the weights rotate through enough copies to overflow the
//     last-level cache, as in a real decode step where every matrix is read
//     once per token; "hot": the same matrix again and again (cache-resident:
//     the kernel's compute ceiling).
//     Each integer-dot path the CPU supports (AVX2, AVX-512 VNNI) is
//     timed in the same run, alternating, best of --rounds.
//   gemm (m = 8, 16, 64): GFLOP/s of MatMul (dequantize + sgemm beyond
//     kQuantGemvMaxRows rows), and of the integer-dot path forced for the
//     same m, to place the crossover between the two.
// Output: one JSON object on stdout (and --out FILE).
//
//   quant_bench [--threads 2] [--seconds 0.3] [--rounds 3] [--gemv_only 1]
//               [--types Q8_0,Q4_0,...] [--out FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/convert.h"
#include "core/ggml_blocks.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_matmul.h"

namespace retort {
namespace {

struct Shape {
  const char* name;
  int64_t k, n;
};
const Shape kShapes[] = {
    {"lm_head_slice", 576, 4096},  // 1/12 of lm_head: fits in cache, so "hot" is the kernel
    {"ffn_up_gate", 576, 1536},   {"ffn_down", 1536, 576}, {"attn_q_o", 576, 576},
    {"attn_k_v", 576, 192},       {"lm_head", 576, 49152},
};

// Random blocks with small finite f16 scales (values do not change speed).
Tensor RandomWeights(DType t, int64_t n, int64_t k, uint32_t seed) {
  Tensor w = Tensor::Zeros(t, {n, k});
  std::mt19937 rng(seed);
  auto* p = static_cast<uint8_t*>(w.mutable_raw());
  for (size_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
  if (!IsBlockQuantized(t)) {
    std::vector<float> v(w.numel());
    for (auto& x : v) x = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
    ConvertFromF32(t, v.data(), w.mutable_raw(), w.numel());
    return w;
  }
  // Random bytes in the f16 scale fields could be inf/NaN: set them.
  const size_t bb = DTypeBlockBytes(t);
  std::vector<size_t> offs;
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      offs = {0, 2};
      break;
    case DType::kQ2_K:
      offs = {80, 82};
      break;
    case DType::kQ3_K:
      offs = {108};
      break;
    case DType::kQ6_K:
      offs = {208};
      break;
    default:
      offs = {0};
  }
  const uint16_t h = F32ToF16(0.01f);
  for (size_t b = 0; b < w.nbytes() / bb; ++b)
    for (size_t o : offs) std::memcpy(p + b * bb + o, &h, 2);
  return w;
}

// Runs fn until `seconds` have passed (at least 3 calls after a warm-up);
// returns the best seconds per call over 3 rounds.
template <typename Fn>
double TimePerCall(Fn fn, double seconds) {
  fn();
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    int64_t calls = 0;
    auto t0 = Clock::now();
    double el = 0;
    do {
      fn();
      ++calls;
      el = Since(t0);
    } while (el < seconds / 3 || calls < 3);
    best = std::min(best, el / calls);
  }
  return best;
}

std::string Fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

int Main(int argc, char** argv) {
  int threads = 2, rounds = 3;
  bool gemv_only = false;
  double seconds = 0.3;
  std::string out_path, types_flag, gemv_only_flag;
  BenchArgs args("quant_bench");
  args.AddThreads(&threads);
  args.AddOut(&out_path);
  args.Add()("seconds", po::value(&seconds)->default_value(seconds), "time per measurement")(
      "rounds", po::value(&rounds)->default_value(rounds), "alternating rounds (best kept)")(
      "gemv_only", po::value(&gemv_only_flag), "1 or true: only m = 1")(
      "types", po::value(&types_flag), "weight types (default: bf16 and every ggml type)");
  args.Parse(&argc, argv, UnknownFlags::kError);
  rounds = std::max(1, rounds);
  gemv_only = gemv_only_flag == "1" || gemv_only_flag == "true";
  std::vector<DType> types;
  if (types_flag.empty()) {
    types = {DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
             DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  } else {
    std::stringstream ss(types_flag);
    for (std::string name; std::getline(ss, name, ',');) {
      auto t = ParseAnyDType(name);
      if (!t.ok()) {
        std::cerr << "quant_bench: " << t.status() << "\n";
        return 2;
      }
      types.push_back(*t);
    }
  }

  const double memcpy_gbps = MeasureMemcpyGBps(threads);
  SetNumThreads(threads);
  const cpu::QuantDotPath default_path = cpu::ActiveQuantDotPath();

  std::ostringstream js;
  js << "{\n  \"threads\": " << threads << ",\n  \"memcpy_gbps\": " << Fmt(memcpy_gbps)
     << ",\n  \"memcpy_traffic_gbps\": " << Fmt(2 * memcpy_gbps) << ",\n  \"default_path\": \""
     << cpu::QuantDotPathName(default_path) << "\",\n  \"results\": [\n";
  bool first = true;
  auto emit = [&](const std::string& line) {
    js << (first ? "" : ",\n") << "    " << line;
    first = false;
    std::cerr << line << "\n";
  };

  constexpr size_t kColdBytes = size_t{192} << 20;  // well past any LLC here
  for (DType t : types) {
    const std::string tn(DTypeName(t));
    for (const Shape& s : kShapes) {
      if (s.k % DTypeBlockElems(t) != 0) continue;  // k-quants need k % 256 == 0
      const size_t bytes = DTypeBytes(t, s.n * s.k);
      const int copies = static_cast<int>(std::max<size_t>(1, kColdBytes / bytes));
      std::vector<Tensor> ws;
      for (int c = 0; c < copies; ++c) ws.push_back(RandomWeights(t, s.n, s.k, 100 + c));
      std::vector<float> x(64 * s.k), y(64 * s.n);
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
      int next = 0;
      // Every integer-dot path the CPU has, measured alternately (best of
      // `rounds` each) so that load from other processes hits them alike.
      std::vector<cpu::QuantDotPath> paths = {cpu::QuantDotPath::kAvx2};
      if (IsBlockQuantized(t) && cpu::QuantDotPathSupported(cpu::QuantDotPath::kAvx512Vnni))
        paths.push_back(cpu::QuantDotPath::kAvx512Vnni);
      std::vector<double> cold(paths.size(), 1e30), hot(paths.size(), 1e30);
      for (int round = 0; round < rounds; ++round) {
        for (size_t p = 0; p < paths.size(); ++p) {
          cpu::SetQuantDotPath(paths[p]);
          cold[p] =
              std::min(cold[p], TimePerCall(
                                    [&] {
                                      (void)cpu::MatMul(x.data(), 1, ws[next], nullptr, y.data());
                                      next = (next + 1) % copies;
                                    },
                                    seconds));
          hot[p] = std::min(
              hot[p], TimePerCall([&] { (void)cpu::MatMul(x.data(), 1, ws[0], nullptr, y.data()); },
                                  seconds));
        }
      }
      cpu::SetQuantDotPath(default_path);
      const double flop = 2.0 * s.n * s.k;
      for (size_t p = 0; p < paths.size(); ++p) {
        emit("{\"type\": \"" + tn + "\", \"shape\": \"" + s.name + "\", \"path\": \"" +
             cpu::QuantDotPathName(paths[p]) + "\", \"k\": " + std::to_string(s.k) + ", \"n\": " +
             std::to_string(s.n) + ", \"m\": 1, \"weight_bytes\": " + std::to_string(bytes) +
             ", \"cold_us\": " + Fmt(cold[p] * 1e6) + ", \"cold_gbps\": " +
             Fmt(bytes / cold[p] / 1e9) + ", \"cold_gflops\": " + Fmt(flop / cold[p] / 1e9) +
             ", \"hot_us\": " + Fmt(hot[p] * 1e6) + ", \"hot_gbps\": " + Fmt(bytes / hot[p] / 1e9) +
             ", \"hot_gflops\": " + Fmt(flop / hot[p] / 1e9) + "}");
      }
      if (gemv_only) continue;

      if (std::string(s.name) != "ffn_up_gate" && std::string(s.name) != "ffn_down") continue;
      for (int64_t m : {8, 16, 64}) {
        const double gemm =
            TimePerCall([&] { (void)cpu::MatMul(x.data(), m, ws[0], nullptr, y.data()); }, seconds);
        std::string line = "{\"type\": \"" + tn + "\", \"shape\": \"" + s.name +
                           "\", \"k\": " + std::to_string(s.k) + ", \"n\": " + std::to_string(s.n) +
                           ", \"m\": " + std::to_string(m) +
                           ", \"matmul_gflops\": " + Fmt(m * flop / gemm / 1e9);
        if (IsBlockQuantized(t)) {
          // The integer-dot path forced at this m (what kQuantGemvMaxRows chooses against).
          const DType at = cpu::QuantDotActivationType(t);
          const size_t arb = cpu::ActivationRowBytes(at, s.k);
          std::vector<char> act(arb * m);
          const Tensor& w = ws[0];
          const double dots = TimePerCall(
              [&] {
                for (int64_t i = 0; i < m; ++i)
                  cpu::QuantizeActivationRow(at, x.data() + i * s.k, act.data() + i * arb, s.k);
                ParallelFor(s.n, 16, [&](int64_t b, int64_t e) {
                  cpu::QuantGemvRows(t, cpu::WeightLayout::kRowMajor, w.raw(), s.k, act.data(), arb,
                                     m, nullptr, y.data(), s.n, b, e);
                });
              },
              seconds);
          line += ", \"int_dot_gflops\": " + Fmt(m * flop / dots / 1e9);
        }
        emit(line + "}");
      }
    }
  }
  js << "\n  ]\n}\n";
  EmitBenchText(js.str(), out_path);
  return 0;
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) { return retort::Main(argc, argv); }
