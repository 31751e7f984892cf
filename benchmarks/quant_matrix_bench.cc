// cpu::MatMul with QuantizedMatrix weights (kernels/cpu/quant_matrix_matmul.h)
// beside the Tensor MatMul on BF16 and GGUF Q4_0 weights of the same shape,
// in one run: SmolLM2-135M's layer shapes (rows x cols = out x in: 576x576
// attention q/o, 1536x576 gate/up, 576x1536 down) and a 4096x4096 matrix.
//
// Formats: bf16, q4_0 (Tensor); int4 g128 sym, int4 g128 asym, int8
// channel, fp8 (e4m3) channel, fp8 block128 (QuantizedMatrix).
// Entries, per format and shape:
//   gemv_cold/<fmt>/<shape>  m = 1; the weights rotate through enough copies
//                            to overflow the last-level cache (a real decode
//                            step reads every matrix once per token).
//   gemv_hot/<fmt>/<shape>   m = 1, the same matrix each call (cache-resident:
//                            the kernel's compute ceiling).
//   gemm64/<fmt>/<shape>     m = 64 (prefill; dequantize tiles + sgemm).
// Counters: weight_GBps = bytes of the stored weight (values + scales + zero
// points, as held in memory) per second; GFLOPS = 2*m*rows*cols per second;
// weight_bytes. The memcpy and sgemm ceilings of the same run are in the
// JSON context (ceiling_memcpy_gbps, ceiling_sgemm_gflops).
//
//   quant_matrix_bench [--threads N] [--smoke] [benchmark flags]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/convert.h"
#include "core/named_values.h"
#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/ops.h"

namespace retort {
namespace {

enum class Format {
  kBF16,
  kQ4_0,
  kInt4G128Sym,
  kInt4G128Asym,
  kInt8Channel,
  kFp8Channel,
  kFp8Block128
};
constexpr NamedValue<Format> kFormats[] = {{Format::kBF16, "bf16"},
                                           {Format::kQ4_0, "q4_0"},
                                           {Format::kInt4G128Sym, "int4_g128_sym"},
                                           {Format::kInt4G128Asym, "int4_g128_asym"},
                                           {Format::kInt8Channel, "int8_channel"},
                                           {Format::kFp8Channel, "fp8_channel"},
                                           {Format::kFp8Block128, "fp8_block128"}};

const char* FormatName(Format f) { return NameOfValue(kFormats, f); }

// One weight matrix of a format: a Tensor (bf16, q4_0) or a QuantizedMatrix.
struct Weight {
  Tensor tensor;
  QuantizedMatrix quant;
  bool is_quant = false;
  size_t bytes() const { return is_quant ? quant.nbytes() : tensor.nbytes(); }
  absl::Status MatMul(const float* x, int64_t m, float* y) const {
    return is_quant ? cpu::MatMul(x, m, quant, nullptr, y) : cpu::MatMul(x, m, tensor, nullptr, y);
  }
};

void RandomBytes(Tensor& t, std::mt19937& rng) {
  auto* p = static_cast<uint8_t*>(t.mutable_raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
}

// Random values (the speed does not depend on them) with valid scales.
Weight MakeWeight(Format f, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  Weight w;
  if (f == Format::kBF16) {
    w.tensor = Tensor::Zeros(DType::kBF16, {rows, cols});
    auto* p = w.tensor.mutable_data<uint16_t>();
    std::uniform_real_distribution<float> d(-0.1f, 0.1f);
    for (int64_t i = 0; i < rows * cols; ++i) p[i] = F32ToBF16(d(rng));
    return w;
  }
  if (f == Format::kQ4_0) {
    w.tensor = Tensor::Zeros(DType::kQ4_0, {rows, cols});
    RandomBytes(w.tensor, rng);
    auto* p = static_cast<uint8_t*>(w.tensor.mutable_raw());
    const uint16_t d = F32ToF16(0.01f);
    for (size_t b = 0; b < w.tensor.nbytes() / 18; ++b) std::memcpy(p + 18 * b, &d, 2);
    return w;
  }
  w.is_quant = true;
  QuantizedMatrix& q = w.quant;
  q.rows = rows;
  q.cols = cols;
  const auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  Shape scale_shape;
  switch (f) {
    case Format::kInt4G128Sym:
    case Format::kInt4G128Asym:
      q.value_type = DType::kI4;
      q.granularity = QuantGranularity::kGroup;
      q.group_size = 128;
      scale_shape = {rows, ceil_div(cols, 128)};
      break;
    case Format::kInt8Channel:
    case Format::kFp8Channel:
      q.value_type = f == Format::kInt8Channel ? DType::kI8 : DType::kF8E4M3;
      q.granularity = QuantGranularity::kChannel;
      scale_shape = {rows, 1};
      break;
    default:
      q.value_type = DType::kF8E4M3;
      q.granularity = QuantGranularity::kBlock;
      q.group_size = 128;
      scale_shape = {ceil_div(rows, 128), ceil_div(cols, 128)};
  }
  q.values = Tensor::Zeros(q.value_type, {rows, cols});
  RandomBytes(q.values, rng);
  if (q.value_type == DType::kF8E4M3) {  // no NaN codes
    auto* p = static_cast<uint8_t*>(q.values.mutable_raw());
    for (size_t i = 0; i < q.values.nbytes(); ++i)
      if ((p[i] & 0x7f) == 0x7f) p[i] &= 0xfe;
  }
  q.scales = Tensor::Zeros(DType::kF32, scale_shape);
  for (int64_t i = 0; i < q.scales.numel(); ++i) q.scales.mutable_data<float>()[i] = 0.01f;
  if (f == Format::kInt4G128Asym) {
    q.zero_points = Tensor::Zeros(DType::kI8, scale_shape);
    int8_t* z = q.zero_points.mutable_data<int8_t>();
    for (int64_t i = 0; i < q.zero_points.numel(); ++i) z[i] = static_cast<int8_t>(rng() % 16) - 8;
  }
  return w;
}

struct ShapeSpec {
  const char* name;
  int64_t rows, cols;
};

// The weights of the entry being run: one matrix, or (cold) enough copies
// to fill `cold_bytes`. Google Benchmark calls an entry several times while
// it sizes the iteration count; the copies are made once and kept until an
// entry asks for different ones.
const std::vector<Weight>& Weights(Format f, const ShapeSpec& s, size_t cold_bytes) {
  static std::string key;
  static std::vector<Weight> ws;
  const std::string want = std::string(FormatName(f)) + s.name + std::to_string(cold_bytes);
  if (want != key) {
    ws.clear();
    ws.push_back(MakeWeight(f, s.rows, s.cols, 1));
    const size_t copies = cold_bytes == 0 ? 1 : std::max<size_t>(2, cold_bytes / ws[0].bytes());
    for (size_t c = 1; c < copies; ++c)
      ws.push_back(MakeWeight(f, s.rows, s.cols, 1 + static_cast<uint32_t>(c)));
    key = want;
  }
  return ws;
}

void Register(Format f, const ShapeSpec& s, size_t cold_bytes, double min_time) {
  const std::string base = std::string(FormatName(f)) + "/" + s.name;
  auto run = [=](benchmark::State& state, int64_t m, bool cold) {
    const std::vector<Weight>& ws = Weights(f, s, cold ? cold_bytes : 0);
    const size_t bytes = ws[0].bytes();
    std::vector<float> x(m * s.cols), y(m * s.rows);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
    size_t next = 0;
    for (auto _ : state) {
      const absl::Status st = ws[next].MatMul(x.data(), m, y.data());
      if (!st.ok()) {
        state.SkipWithError(std::string(st.message()).c_str());
        break;
      }
      benchmark::DoNotOptimize(y.data());
      next = (next + 1) % ws.size();
    }
    state.counters["weight_GBps"] = PerSecond(bytes / 1e9);
    state.counters["GFLOPS"] = PerSecond(2.0 * m * s.rows * s.cols / 1e9);
    state.counters["weight_bytes"] = static_cast<double>(bytes);
  };
  struct Case {
    const char* name;
    int64_t m;
    bool cold;
  };
  for (const Case& c :
       {Case{"gemv_cold/", 1, true}, Case{"gemv_hot/", 1, false}, Case{"gemm64/", 64, false}}) {
    RegisterWallClockBenchmark(c.name + base, benchmark::kMicrosecond, min_time,
                               [=](benchmark::State& st) { run(st, c.m, c.cold); });
  }
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) {
  using namespace retort;
  BenchFlags flags = ParseBenchFlags("quant_matrix_bench", &argc, argv);
  SetNumThreads(flags.threads);
  benchmark::AddCustomContext("retort_threads", std::to_string(flags.threads));
  if (!flags.smoke) AddCeilingsToBenchmarkContext(flags.threads, size_t{256} << 20, 1024);
  const double min_time = flags.smoke ? 0.01 : 0.3;
  // Cold rotation: well past a 32 MiB last-level cache.
  const size_t cold_bytes = flags.smoke ? size_t{1} << 20 : size_t{160} << 20;
  std::vector<ShapeSpec> shapes = {{"576x576", 576, 576},
                                   {"1536x576", 1536, 576},
                                   {"576x1536", 576, 1536},
                                   {"4096x4096", 4096, 4096}};
  if (flags.smoke) shapes = {{"64x256", 64, 256}};
  for (const ShapeSpec& s : shapes)
    for (const NamedValue<Format>& f : kFormats) Register(f.value, s, cold_bytes, min_time);
  return RunGoogleBenchmarks(&argc, argv);
}
