// retort's Sgemm (kernels/cpu/sgemm.h) beside OpenBLAS cblas_sgemm, both on
// one thread in the same process, on the GEMM shapes of a training step:
//   full/   m=1024 rows x n in {512, 768, 1024, 2048, 3072} x k in {512, 768,
//           2048}, in the three layouts train_ops issues: NT (forward,
//           x · W^T), NN (dx = dy · W) and TN (dW = dy^T · x);
//   tile/   the 256 x 256 x k tiles train_ops.cc's TiledGemm actually hands
//           to one sgemm call;
//   attn/   the 64 x 64 x 64 tiles of the attention backward (NT, NN, TN);
//   square/ 512 and 1024.
// Each entry reports GFLOPS (2*m*n*k per call). OpenBLAS picks its kernels
// from OPENBLAS_CORETYPE when that is set (this machine's environment pins
// Haswell = AVX2); run once with and once without it to compare.
//
//   sgemm_bench [--smoke] [benchmark flags, e.g. --benchmark_format=json]
#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "kernels/cpu/sgemm.h"

namespace retort {
namespace {

enum class Impl { kOurs, kOpenBlas };

void Register(const std::string& group, Impl impl, bool ta, bool tb, int m, int n, int k,
              double min_time) {
  const std::string layout = std::string(ta ? "T" : "N") + (tb ? "T" : "N");
  const std::string name = group + "/" + layout + "/m" + std::to_string(m) + "_n" +
                           std::to_string(n) + "_k" + std::to_string(k) + "/" +
                           (impl == Impl::kOurs ? "ours" : "openblas");
  RegisterWallClockBenchmark(name, benchmark::kMicrosecond, min_time, [=](benchmark::State& state) {
    // Stored shapes: A [m, k] or [k, m]; B [k, n] or [n, k]; C [m, n].
    const int lda = ta ? m : k, ldb = tb ? k : n;
    auto a = RandomFloats(static_cast<size_t>(m) * k, 1);
    auto b = RandomFloats(static_cast<size_t>(k) * n, 2);
    std::vector<float> c(static_cast<size_t>(m) * n, 0.f);
    for (auto _ : state) {
      if (impl == Impl::kOurs) {
        cpu::Sgemm(ta, tb, m, n, k, 1.f, a.data(), lda, b.data(), ldb, 0.f, c.data(), n);
      } else {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.f, a.data(), lda, b.data(), ldb, 0.f, c.data(), n);
      }
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
    state.counters["GFLOPS"] = PerSecond(2.0 * m * n * k / 1e9);
  });
}

void RegisterBoth(const std::string& group, bool ta, bool tb, int m, int n, int k,
                  double min_time) {
  Register(group, Impl::kOurs, ta, tb, m, n, k, min_time);
  Register(group, Impl::kOpenBlas, ta, tb, m, n, k, min_time);
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) {
  using namespace retort;
  BenchFlags flags = ParseBenchFlags("sgemm_bench", &argc, argv);
  openblas_set_num_threads(1);
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("openblas_coretype", coretype ? coretype : "(unset)");
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("sgemm_path", cpu::SgemmPathName(cpu::ActiveSgemmPath()));
  const double min_time = flags.smoke ? 0.01 : 0.3;
  struct Layout {
    bool ta, tb;
  };
  const Layout train_layouts[] = {{false, true}, {false, false}, {true, false}};
  if (flags.smoke) {
    for (const Layout& l : train_layouts) RegisterBoth("full", l.ta, l.tb, 64, 48, 40, min_time);
  } else {
    for (const Layout& l : train_layouts) {
      for (int n : {512, 768, 1024, 2048, 3072}) {
        for (int k : {512, 768, 2048}) RegisterBoth("full", l.ta, l.tb, 1024, n, k, min_time);
      }
      for (int k : {512, 768, 2048, 3072}) RegisterBoth("tile", l.ta, l.tb, 256, 256, k, min_time);
      RegisterBoth("attn", l.ta, l.tb, 64, 64, 64, min_time);
    }
    for (int s : {512, 1024}) RegisterBoth("square", false, false, s, s, s, min_time);
  }
  return RunGoogleBenchmarks(&argc, argv);
}
