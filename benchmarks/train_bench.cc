// Training throughput of the CPU student trainer on a random-initialised
// preset, beside two f32 GEMM peaks measured in the same run: retort's own
// Sgemm (kernels/cpu/sgemm.h, what the training kernels call; 256 x 256 tiles
// over the pool as train_ops.cc cuts them) and OpenBLAS on the same threads.
//
// One timed step is what distill/trainer.cc's Trainer::Run does for one
// micro-batch: ZeroGrads, TrainModel::Forward, ComputeLoss (CE, fused LM
// head, chunked), TrainModel::Backward, gradients scaled to the mean per
// target token, ClipGradNorm(1.0), AdamW::Step (lr 1e-4, weight decay 0.1 on
// the decaying groups: the PyTorch baseline's settings). The batch is `rows`
// documents of `seq` random tokens packed into one sequence of rows * seq
// tokens (attention never crosses a document); targets are the next token of
// the same document (the last token of each document has none), as
// transformers' labels = input_ids does.
//
// FLOP counts:
//   gflops_6n          : 6 * N * tokens, N = every parameter, the (tied)
//                        embedding table included, per second of step time.
//                        The conventional "model FLOPs" of llm.c / PaLM MFU.
//   gflops_with_attention: 6N plus the causal attention products
//                        (QK^T and PV: 4 * q_dim * (seq + 1) / 2 per token per
//                        layer forward, x3 for forward + backward).
// Both count useful work only: the backward's recomputation (attention
// probabilities, RMSNorm outputs, SwiGLU) is not counted.
//
// Output: one JSON object on stdout (and --out FILE).
//
//   train_bench [--preset 30m] [--family llama] [--seq 256] [--rows 4]
//               [--threads 2] [--steps 5] [--warmup 1] [--row-chunk N]
//               [--out FILE]
// The JSON names the Sgemm path (sgemm_path: avx512 or openblas, the latter on
// CPUs without AVX-512 or with RETORT_NO_AVX512 set) and OpenBLAS's kernel set
// (blas_core): OPENBLAS_CORETYPE in the environment pins it; the OpenBLAS
// peak uses it, and the training does only on the openblas path.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "benchmarks/ceilings.h"
#include "core/process.h"
#include "core/thread_pool.h"
#include "distill/loss.h"
#include "distill/optimizer.h"
#include "kernels/cpu/sgemm.h"
#include "model/init.h"
#include "model/train_model.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

struct Flags {
  std::string preset = "30m", family = "llama", out;
  int64_t seq = 256, rows = 4, row_chunk = 0;  // 0: LossOptions' default
  int threads = 2, steps = 5, warmup = 1;
};

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchArgs args("train_bench");
  args.AddThreads(&f.threads);
  args.Add()("preset", po::value(&f.preset)->default_value(f.preset), "preset size")(
      "family", po::value(&f.family)->default_value(f.family), "preset family")(
      "seq", po::value(&f.seq)->default_value(f.seq), "tokens per document")(
      "rows", po::value(&f.rows)->default_value(f.rows), "documents per step")(
      "steps", po::value(&f.steps)->default_value(f.steps), "timed steps")(
      "warmup", po::value(&f.warmup)->default_value(f.warmup), "untimed steps first")(
      "row-chunk", po::value(&f.row_chunk)->default_value(f.row_chunk),
      "loss row chunk (0: LossOptions' default)");
  args.AddOut(&f.out);
  args.Parse(&argc, argv, UnknownFlags::kError);
  if (f.seq < 2 || f.rows < 1 || f.steps < 1 || f.warmup < 0 || f.row_chunk < 0) {
    args.Fail(
        "need --seq >= 2, --rows >= 1, --threads >= 1, --steps >= 1, --warmup >= 0, "
        "--row-chunk >= 0");
  }
  return f;
}

// OpenBLAS's name for its kernel set ("Haswell", "SkylakeX", ...); weak, so
// another BLAS gives "".
extern "C" char* openblas_get_corename(void) __attribute__((weak));
std::string BlasCoreName() {
  const char* name = openblas_get_corename != nullptr ? openblas_get_corename() : nullptr;
  return name != nullptr ? name : "";
}

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

// The 1-minute load average (/proc/loadavg): other processes competing for
// the cores make the wall times (not the CPU times) longer.
double LoadAverage() {
  std::ifstream f("/proc/loadavg");
  double load = -1;
  f >> load;
  return load;
}

// CPU seconds used by every thread of this process so far.
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double Mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// Wall time of each phase of one step, seconds.
struct StepTimes {
  double zero = 0, forward = 0, loss = 0, backward = 0, optimizer = 0, total = 0;
  // CPU seconds of all threads (spinning pool workers included): with
  // --threads 1 the work itself, whatever else runs on the machine.
  double cpu = 0, cpu_zero = 0, cpu_forward = 0, cpu_loss = 0, cpu_backward = 0, cpu_optimizer = 0;
};

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  absl::StatusOr<ModelConfig> config = PresetConfig(flags.family, flags.preset);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 1;
  }
  const ModelConfig& c = *config;

  // The sgemm peak first, on an idle process (same threads as the training).
  const double load_before = LoadAverage();
  const double sgemm_before = MeasureSgemmGflops(flags.threads);
  const double retort_sgemm_before = MeasureRetortSgemmGflops(flags.threads);
  SetNumThreads(flags.threads);

  absl::StatusOr<std::unique_ptr<TrainModel>> created = TrainModel::RandomInit(c, /*seed=*/0);
  if (!created.ok()) {
    std::cerr << created.status() << "\n";
    return 1;
  }
  TrainModel& model = **created;

  // The optimizer exactly as Trainer::Run builds it (decay groups from the
  // parameters' decay flags).
  std::vector<ParamGroup> groups;
  for (const TrainModel::Parameter& p : model.parameters()) {
    const int64_t begin = p.value - model.param_arena();
    if (!groups.empty() && groups.back().decay == p.decay && groups.back().end == begin) {
      groups.back().end = begin + p.size;
    } else {
      groups.push_back(ParamGroup{begin, begin + p.size, p.decay});
    }
  }
  AdamWOptions adam;
  adam.weight_decay = 0.1f;
  absl::StatusOr<AdamW> optimizer = AdamW::Create(model.num_parameters(), adam, std::move(groups));
  if (!optimizer.ok()) {
    std::cerr << optimizer.status() << "\n";
    return 1;
  }
  const float lr = 1e-4f;
  const double clip = 1.0;

  // One packed sequence of `rows` full-length documents of random tokens.
  const int64_t n = flags.rows * flags.seq, d = c.hidden_size;
  std::vector<int32_t> tokens(n), positions(n), doc_start(n), targets(n);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    tokens[i] = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(c.vocab_size));
    positions[i] = static_cast<int32_t>(i % flags.seq);
    doc_start[i] = static_cast<int32_t>(i - i % flags.seq);
  }
  for (int64_t i = 0; i < n; ++i) {
    targets[i] = (i + 1) % flags.seq == 0 ? -1 : tokens[i + 1];
  }
  std::vector<float> hidden(n * d), dhidden(n * d);
  LossOptions loss_options;
  if (flags.row_chunk > 0) loss_options.row_chunk = flags.row_chunk;

  std::vector<StepTimes> times;
  std::vector<double> losses, norms;
  for (int s = 0; s < flags.warmup + flags.steps; ++s) {
    StepTimes st;
    const double cpu0 = ProcessCpuSeconds();
    const auto t0 = Clock::now();
    model.ZeroGrads();
    const auto t1 = Clock::now();
    const double cpu1 = ProcessCpuSeconds();
    absl::Status status =
        model.Forward(tokens.data(), positions.data(), doc_start.data(), n, hidden.data());
    const auto t2 = Clock::now();
    const double cpu2 = ProcessCpuSeconds();
    absl::StatusOr<LossResult> loss =
        status.ok() ? ComputeLoss(hidden.data(), n, d, model.lm_head(), c.vocab_size,
                                  targets.data(), TeacherSignal::None(), loss_options, 1.0f,
                                  dhidden.data(), model.lm_head_grad())
                    : absl::StatusOr<LossResult>(status);
    const auto t3 = Clock::now();
    const double cpu3 = ProcessCpuSeconds();
    if (!loss.ok()) {
      std::cerr << loss.status() << "\n";
      return 1;
    }
    status = model.Backward(dhidden.data());
    if (!status.ok()) {
      std::cerr << status << "\n";
      return 1;
    }
    const auto t4 = Clock::now();
    const double cpu4 = ProcessCpuSeconds();
    // As Trainer::Run: the mean-per-token gradient, clipping, AdamW.
    const float inv = static_cast<float>(1.0 / static_cast<double>(loss->tokens));
    float* g = model.grad_arena();
    for (int64_t i = 0, np = model.num_parameters(); i < np; ++i) g[i] *= inv;
    const double norm = ClipGradNorm(model.grad_arena(), model.num_parameters(), clip);
    optimizer->Step(model.param_arena(), model.grad_arena(), lr);
    const auto t5 = Clock::now();
    const double cpu5 = ProcessCpuSeconds();
    st.cpu = cpu5 - cpu0;
    st.cpu_zero = cpu1 - cpu0;
    st.cpu_forward = cpu2 - cpu1;
    st.cpu_loss = cpu3 - cpu2;
    st.cpu_backward = cpu4 - cpu3;
    st.cpu_optimizer = cpu5 - cpu4;
    auto sec = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    st.zero = sec(t0, t1);
    st.forward = sec(t1, t2);
    st.loss = sec(t2, t3);
    st.backward = sec(t3, t4);
    st.optimizer = sec(t4, t5);
    st.total = sec(t0, t5);
    if (s >= flags.warmup) times.push_back(st);
    losses.push_back(loss->loss_sum / static_cast<double>(loss->tokens));
    norms.push_back(norm);
  }

  const double sgemm_after = MeasureSgemmGflops(flags.threads);
  const double retort_sgemm_after = MeasureRetortSgemmGflops(flags.threads);
  const double sgemm_peak = std::max(sgemm_before, sgemm_after);
  const double retort_sgemm_peak = std::max(retort_sgemm_before, retort_sgemm_after);
  const double load_after = LoadAverage();

  auto column = [&](double StepTimes::*field) {
    std::vector<double> v;
    for (const StepTimes& t : times) v.push_back(t.*field);
    return v;
  };
  const double step_mean = Mean(column(&StepTimes::total));
  const double step_median = Median(column(&StepTimes::total));
  const std::vector<double> totals = column(&StepTimes::total);
  const double step_best = *std::min_element(totals.begin(), totals.end());
  const double tokens_per_step = static_cast<double>(n);
  const double N = static_cast<double>(model.num_parameters());
  const double flops_6n = 6.0 * N * tokens_per_step;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const double attn_flops = 3.0 * 4.0 * static_cast<double>(q_dim) * c.num_layers *
                            (static_cast<double>(flags.seq) + 1) / 2 * tokens_per_step;
  const double gflops = flops_6n / step_mean / 1e9;
  const double gflops_attn = (flops_6n + attn_flops) / step_mean / 1e9;

  const size_t state_bytes = sizeof(float) * 4 * static_cast<size_t>(model.num_parameters());
  const int64_t loss_scratch =
      LossScratchBytes(n, d, c.vocab_size, targets.data(), TeacherSignal::None(), loss_options);

  nlohmann::ordered_json breakdown;
  struct Phase {
    const char* name;
    double StepTimes::*wall;
    double StepTimes::*cpu;
  };
  for (const Phase& ph : {Phase{"zero_grads", &StepTimes::zero, &StepTimes::cpu_zero},
                          Phase{"forward", &StepTimes::forward, &StepTimes::cpu_forward},
                          Phase{"loss", &StepTimes::loss, &StepTimes::cpu_loss},
                          Phase{"backward", &StepTimes::backward, &StepTimes::cpu_backward},
                          Phase{"optimizer", &StepTimes::optimizer, &StepTimes::cpu_optimizer}}) {
    const double med = Median(column(ph.wall));
    breakdown[ph.name] = {
        {"seconds", med}, {"share", med / step_median}, {"cpu_seconds", Median(column(ph.cpu))}};
  }

  nlohmann::ordered_json out = {
      {"impl", "retort"},
      {"model",
       {{"family", flags.family},
        {"preset", flags.preset},
        {"parameters", model.num_parameters()},
        {"parameters_counted_as", "all parameters, the tied embedding/lm_head table once"},
        {"layers", c.num_layers},
        {"hidden", c.hidden_size},
        {"intermediate", c.intermediate_size},
        {"heads", c.num_heads},
        {"kv_heads", c.num_kv_heads},
        {"vocab", c.vocab_size},
        {"tied_embeddings", c.tie_word_embeddings}}},
      {"batch",
       {{"rows", flags.rows},
        {"seq", flags.seq},
        {"tokens_per_step", n},
        {"target_tokens_per_step", n - flags.rows},
        {"loss_row_chunk", loss_options.row_chunk},
        {"loss_max_chunk_logits_bytes", loss_options.max_chunk_logits_bytes}}},
      {"threads", flags.threads},
      {"sgemm_path", cpu::SgemmPathName(cpu::ActiveSgemmPath())},
      {"blas_core", BlasCoreName()},
      {"openblas_coretype_env", EnvOr("OPENBLAS_CORETYPE", "")},
      {"steps", flags.steps},
      {"warmup", flags.warmup},
      {"step_seconds", {{"mean", step_mean}, {"median", step_median}, {"best", step_best}}},
      {"step_cpu_seconds_mean", Mean(column(&StepTimes::cpu))},
      {"load_average_1min", {{"before", load_before}, {"after", load_after}}},
      {"tokens_per_s", tokens_per_step / step_mean},
      {"gflops_6n", gflops},
      {"gflops_with_attention", gflops_attn},
      {"sgemm_peak_gflops", {{"retort", retort_sgemm_peak}, {"openblas", sgemm_peak}}},
      {"sgemm_gflops_before", {{"retort", retort_sgemm_before}, {"openblas", sgemm_before}}},
      {"sgemm_gflops_after", {{"retort", retort_sgemm_after}, {"openblas", sgemm_after}}},
      {"fraction_of_sgemm_peak",
       {{"retort", gflops / retort_sgemm_peak}, {"openblas", gflops / sgemm_peak}}},
      {"fraction_of_sgemm_peak_with_attention",
       {{"retort", gflops_attn / retort_sgemm_peak}, {"openblas", gflops_attn / sgemm_peak}}},
      {"breakdown_median", breakdown},
      {"memory",
       {{"weights_grads_adam_bytes", state_bytes},
        {"activation_bytes", model.ActivationBytes(n)},
        {"loss_scratch_bytes", loss_scratch},
        {"peak_rss_bytes", PeakRssBytes()}}},
      {"loss", {{"first", losses.front()}, {"last", losses.back()}}},
      {"grad_norm", {{"first", norms.front()}, {"last", norms.back()}}}};
  EmitBenchJson(out, flags.out);
  return 0;
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) { return retort::Main(argc, argv); }
