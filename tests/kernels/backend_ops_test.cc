// The backend parity test (issue 15; ggml's test-backend-ops is the model):
// one table of op cases that walks every op of kernels/backend.h, forward and
// backward.
//
// Each case builds fresh random inputs from a seed, runs its op(s) on a given
// Backend -- operands allocated with Backend::Allocate and copied in with
// CopyToDevice, results copied out with CopyToHost, weights handed to
// PrepareWeight as host tensors -- so it runs unchanged on a device backend,
// and computes what the op must give with plain f64 loops written here from
// backend.h's contracts. Two parameterised suites walk the table:
//  * CpuVsF64: the CPU backend against the f64 loops, every case. Always runs.
//  * BackendVsCpu: every other kind in CompiledBackendKinds() whose device 0
//    GetBackend finds, against the CPU backend. With only the CPU compiled
//    in it has no instances; a new backend gets the whole table by
//    registering itself in kernels/backend.cc's table.
// Both also run each case twice on the backend under test and require the
// same bits (backend.h: "on a given backend the same inputs give the same
// bits").
// BackendOpsCoverage keeps the table complete: it parses class Backend out of
// kernels/backend.h, checks that kBackendOps below lists every op (overloads
// counted), and that every listed op has at least one case, so adding an op
// without a case fails here. BackendOpsHarness runs BackendVsCpu's
// comparison with the CPU in the device's place, and BackendOpsReference
// checks the f64 backward references against finite differences.
//
// Seeds: each case's seed is a hash of its name mixed with a base seed
// (kDefaultSeed, or RETORT_BACKEND_OPS_SEED from the environment for other
// fresh inputs); failures print the seed. RETORT_BACKEND_OPS_VERBOSE=1
// prints, per output, the worst |diff| / bound (how much of its tolerance a
// backend uses).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/convert.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/ggml_blocks.h"
#include "core/quant_matrix.h"
#include "core/status.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/lm_head_loss.h"

namespace retort {
namespace {

// ============================================================================
// Tolerances, one row per precision class.
//
// An output element passes when
//     |got - want| <= rel * mag + aux * aux_scale + floor * max|want|
// where `mag` is the sum of the magnitudes of the terms the value is made of
// (sum_j |x_j w_j| for a dot product; |want| for an elementwise result),
// `aux_scale` is a second, op-specific error scale for rounding an op does
// to its inputs (empty for most outputs):
//  * block-quantized weights: the activation grid, sum over activation
//    blocks of (sum |w| in the block) * max|x in the block| / 127;
//  * LM-head loss sums: per row, the l1 sensitivity of the row's loss to its
//    logits (2 for CE, 2 T (1 + max|log P - log Q|) for KD) times the
//    logits' magnitude max_v sum_j |h_j w_vj| (student plus teacher), so
//    aux is the relative rounding of the logits;
// and max|want| is over the whole output (a floor for values that cancel).
// vs_f64 is what the CPU backend must meet against the f64 loops; vs_cpu is
// what another backend must meet against the CPU backend. Where both are
// bounds on the distance to the exact value, vs_cpu is twice vs_f64 (two
// results within b of the truth are within 2b of each other); where a device
// is expected to round differently (tensor-core inputs) the row says so.
enum class Prec {
  kExact,
  kF32Round,
  kF32Elem,
  kF32Sum,
  kF32Dot,
  kBF16Weight,
  kF16Weight,
  kBlockWeight,
  kAttention,
  kLoss,
  kLossSum,
  kF64Sum,
  kF64Factor,
};

struct Tol {
  double rel = 0, aux = 0, floor = 0;
};

struct PrecRow {
  Prec prec;
  const char* name;
  Tol vs_f64;
  Tol vs_cpu;
};

const PrecRow kTolerances[] = {
    // Copies (the KV cache, buffers), integer results and status codes: the
    // same bits.
    {Prec::kExact, "exact", {0, 0, 0}, {0, 0, 0}},
    // One correctly rounded f32 operation per element (Add, Scale, a stored
    // weight decoded to f32): half an ulp of the exact value, 2^-24 relative;
    // 2^-23 (one ulp) so two such results may sit on either side. IEEE
    // arithmetic on every device, so the same against the CPU.
    {Prec::kF32Round, "f32 rounding", {0x1p-23, 0, 0}, {0x1p-23, 0, 0}},
    // A handful of f32 operations per element, some of them exp / sin / cos
    // (libm or SIMD polynomials, <= 4 ulp) and possibly contracted into FMAs:
    // 16 ulp of mag, and a floor of 2^-22 of the output's largest value for
    // results near zero (sin of a large angle, silu near 0). Devices may use
    // their own math library (CUDA's expf/sinf are within 2 ulp, fast-math
    // intrinsics within ~2^-21 relative): 1e-5.
    {Prec::kF32Elem, "f32 elementwise", {2e-6, 0, 2.4e-7}, {1e-5, 0, 2e-6}},
    // Row reductions accumulated in f32 (RMSNorm's mean square, softmax's
    // sum, an embedding gradient's row sum) over at most a few hundred terms
    // here: the worst-case bound k * 2^-24 * mag is 2e-5 at k = 300; SIMD and
    // pairwise sums stay far below it.
    {Prec::kF32Sum, "f32 sums", {2e-5, 0, 1e-7}, {4e-5, 0, 2e-7}},
    // Dot products of f32 operands (f32 weights, training linears, Gemm f32,
    // QuantizedMatrix weights, the f32 Gram matrix): f32 sums as above. A
    // device may run these GEMMs on tensor cores with TF32 inputs (2^-11
    // relative rounding of each operand, 2 * 2^-11 ~ 1e-3 of mag).
    {Prec::kF32Dot, "f32 dot products", {2e-5, 0, 0}, {1e-3, 0, 0}},
    // BF16 weights: decoded exactly, so against the f64 loops the f32 dot
    // bound. A device GEMM may round the activations to bf16 for its tensor
    // cores: 2^-8 of mag, plus the f32 sums.
    {Prec::kBF16Weight, "bf16 weights", {2e-5, 0, 0}, {4.5e-3, 0, 0}},
    // F16 weights: likewise, activations rounded to f16: 2^-11 of mag.
    {Prec::kF16Weight, "f16 weights", {2e-5, 0, 0}, {6e-4, 0, 0}},
    // ggml block weights (Q8_0, Q4_0, Q4_K): the reference is x . dequant(W)
    // in f64; the GEMV (and a device's MMQ) takes integer dots against the
    // input rounded to 8 bits per block (ggml's Q8_0 / Q8_K): at most half a
    // grid step max|x|/127 per element, plus Q8_0's f16 scale (127 * step *
    // 2^-11 <= 0.062 step): 0.5 + 0.062 < 0.6 of the grid. The grid uses
    // 32-element blocks for the legacy types and 256 for the k-quants (the
    // coarser of ggml's Q8_K and ggml-cuda's 32-element Q8_1). The GEMM path
    // (m > 4 on the CPU) dequantizes to f32 and meets the f32 bound alone.
    {Prec::kBlockWeight, "ggml block weights", {2e-5, 0.6, 0}, {4e-5, 1.2, 0}},
    // Softmax-weighted f32 sums (attention out, lse, dq / dk / dv): the score
    // error (head_dim * 2^-24 relative) moves each probability by as much;
    // mag is sum_j p_j |v_j| (for dq/dk: the |terms| of dS = P (dP - D)), and
    // a floor of 1e-6 of the largest value for outputs that cancel. Devices
    // may use TF32 GEMMs and fast exp inside flash kernels: 1e-3.
    {Prec::kAttention, "attention", {3e-5, 0, 1e-6}, {1e-3, 0, 1e-5}},
    // The fused LM-head loss: f32 logits (d * 2^-24 of sum |h w|) through f32
    // exponentials into f64 row sums; gradients d(loss)/d(logits) in f32 times
    // h or W. mag is sum_v |dz_v| |W_v| (|dz_v| widened by the softmax's
    // sensitivity to the logits' rounding); 1e-5 of it and 1e-7 of the
    // largest value. Devices: TF32 GEMMs, 1e-3.
    {Prec::kLoss, "lm-head gradients", {1e-5, 0, 1e-7}, {1e-3, 0, 1e-5}},
    // The loss sums (loss_sum, ce_sum, kd_sum): f32 exponentials summed in
    // f64 give a few ulp of sum |row loss| (1e-6); the logits' rounding counts
    // through aux: f32 logits are within d * 2^-24 <= 2e-6 (d <= 32 here)
    // relative; a device's TF32 logits within 2 * 2^-11 ~ 1e-3.
    {Prec::kLossSum, "lm-head loss sums", {1e-6, 2e-6, 0}, {1e-5, 1e-3, 0}},
    // f64 products and sums (Gram matrix f64, column squares, SumSquares,
    // Gemm f64): k * 2^-53 * mag is ~1e-14 at these sizes; 1e-12 leaves room
    // for any summation order. A device must compute these in f64 too.
    {Prec::kF64Sum, "f64 sums", {1e-12, 0, 0}, {2e-12, 0, 0}},
    // f64 Cholesky, inverse and the upper factor of the inverse of SPD
    // matrices built with condition number < 10: backward stable, error
    // ~ n * kappa * 2^-53 of the largest entry; 1e-11 of it.
    {Prec::kF64Factor, "f64 factorizations", {0, 0, 1e-11}, {0, 0, 2e-11}},
};

const PrecRow& RowOf(Prec p) {
  for (const PrecRow& r : kTolerances) {
    if (r.prec == p) return r;
  }
  std::fprintf(stderr, "backend_ops_test: no tolerance row for precision %d\n",
               static_cast<int>(p));
  std::abort();
}

constexpr uint32_t kDefaultSeed = 0x5eed2024u;

// ============================================================================
// The op list: every op of class Backend (kernels/backend.h), overloads as
// Name/variant, plus the non-virtual Allocate and ToHost. Hand-maintained;
// BackendOpsCoverage checks it against the header and against the cases.
const char* const kBackendOps[] = {
    "device",
    "Describe",
    "memory_is_host",
    "Allocate",
    "AllocateRaw",
    "FreeRaw",
    "CopyToDevice",
    "CopyToHost",
    "CopyOnDevice",
    "Synchronize",
    "ToHost",
    "PrepareWeight/tensor",
    "PrepareWeight/quantized",
    "SupportsWeightDType",
    "MatMul",
    "MatMulGroup",
    "Embedding",
    "RmsNorm",
    "SiluMul",
    "Add",
    "Softmax",
    "RopeCosSin",
    "ApplyRope",
    "AppendKv",
    "Attention",
    "LinearForward",
    "LinearBackward",
    "RmsNormForward",
    "RmsNormApply",
    "RmsNormBackward",
    "SiluMulBackward",
    "ApplyRopeBackward",
    "EmbeddingBackward",
    "AttentionForward",
    "AttentionBackward",
    "LmHeadLoss",
    "AdamWStep",
    "SumSquares",
    "Scale",
    "AccumulateGram/f64",
    "AccumulateGram/f32",
    "AccumulateColumnSquares",
    "Gemm/f64",
    "Gemm/f32",
    "CholeskyLower",
    "CholeskyInverse",
    "UpperCholeskyOfInverse",
};
// Non-virtual members of Backend that the list names too (not parsed).
const char* const kNonVirtualOps[] = {"Allocate", "ToHost"};

// ============================================================================
// Outputs, references and the comparison.

// What a case's run gives: named outputs widened to f64 (status codes and
// flags as numbers).
using Outputs = std::map<std::string, std::vector<double>>;

// What an output must be: the f64 value, the per-element magnitudes (empty:
// |value|) and the op-specific aux scale (see the tolerance table).
struct Expect {
  Prec prec = Prec::kExact;
  std::vector<double> value;
  std::vector<double> mag;
  std::vector<double> aux;
};
using Reference = std::map<std::string, Expect>;

Expect Exact(std::vector<double> v) {
  Expect e;
  e.prec = Prec::kExact;
  e.value = std::move(v);
  return e;
}
Expect Valued(Prec p, std::vector<double> v, std::vector<double> mag = {}) {
  Expect e;
  e.prec = p;
  e.value = std::move(v);
  e.mag = std::move(mag);
  return e;
}

template <typename T>
std::vector<double> Widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

double Code(const absl::Status& s) { return static_cast<double>(static_cast<int>(s.code())); }
double CodeOf(absl::StatusCode c) { return static_cast<double>(static_cast<int>(c)); }

// Compares `got` with `want` element by element under `tol`, magnitudes from
// `e`. Reports the first few mismatches and their count.
void ExpectClose(const std::string& name, const Expect& e, const std::vector<double>& want,
                 const std::vector<double>& got, const Tol& tol, const char* against) {
  ASSERT_EQ(got.size(), want.size()) << "output " << name << ": element count";
  double max_want = 0;
  for (double v : e.value) max_want = std::max(max_want, std::abs(v));
  int64_t bad = 0;
  double worst = 0;  // largest |diff| / bound over the inexact elements
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double mag = e.mag.empty() ? std::abs(e.value[i]) : e.mag[i];
    const double aux = e.aux.empty() ? 0.0 : e.aux[i];
    const double bound = tol.rel * mag + tol.aux * aux + tol.floor * max_want;
    const double diff = std::abs(got[i] - want[i]);
    const bool ok = e.prec == Prec::kExact
                        ? (got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))
                        : diff <= bound;
    if (!ok) {
      if (bad < 5) {
        first << "\n  [" << i << "] got " << got[i] << ", want " << want[i] << " (" << against
              << "), |diff| " << diff << " > bound " << bound << " (mag " << mag
              << (e.aux.empty() ? "" : ", aux ") << (e.aux.empty() ? "" : std::to_string(aux))
              << ")";
      }
      ++bad;
    }
    if (e.prec != Prec::kExact && bound > 0) worst = std::max(worst, diff / bound);
  }
  if (std::getenv("RETORT_BACKEND_OPS_VERBOSE")) {
    std::printf("  %-34s %-20s worst |diff|/bound %.3g\n", name.c_str(), RowOf(e.prec).name, worst);
  }
  EXPECT_EQ(bad, 0) << "output " << name << " (" << RowOf(e.prec).name << "): " << bad << " of "
                    << got.size() << " elements out of tolerance" << first.str();
}

// Every output of `ref` is in `got` (and nothing else is).
void ExpectSameNames(const Reference& ref, const Outputs& got) {
  for (const auto& [name, e] : ref) {
    EXPECT_TRUE(got.count(name)) << "the run gave no output " << name;
  }
  for (const auto& [name, v] : got) {
    EXPECT_TRUE(ref.count(name)) << "output " << name << " has no reference";
  }
}

void ExpectSameBits(const Outputs& a, const Outputs& b) {
  for (const auto& [name, v] : a) {
    auto it = b.find(name);
    ASSERT_TRUE(it != b.end()) << name;
    ASSERT_EQ(it->second.size(), v.size()) << name;
    EXPECT_EQ(std::memcmp(v.data(), it->second.data(), v.size() * sizeof(double)), 0)
        << "output " << name << " differs between two runs with the same inputs";
  }
}

// ============================================================================
// Random inputs.

class Rng {
 public:
  explicit Rng(uint32_t seed) : g_(seed) {}
  float Uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g_); }
  std::vector<float> Vec(int64_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (float& x : v) x = Uniform(lo, hi);
    return v;
  }
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_); }  // [lo, hi]
  uint32_t Bits() { return g_(); }
  float Normal(float sd) { return std::normal_distribution<float>(0.f, sd)(g_); }

 private:
  std::mt19937 g_;
};

// A weight as stored (host tensor) and decoded to f64 [rows * cols].
struct HostWeight {
  Tensor t;
  std::vector<double> w;
};

std::vector<size_t> ScaleOffsets(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return {offsetof(ggml::BlockQ4_0, d)};
    case DType::kQ8_0:
      return {offsetof(ggml::BlockQ8_0, d)};
    case DType::kQ4_K:
      return {offsetof(ggml::BlockQ4_K, d), offsetof(ggml::BlockQ4_K, dmin)};
    default:
      std::fprintf(stderr, "backend_ops_test: no scale offsets for %s\n",
                   std::string(DTypeName(t)).c_str());
      std::abort();
  }
}

// F32/BF16/F16: uniform values rounded to the dtype. Block types: random
// bytes (every quant and packed scale value occurs) with f16 scales of
// either sign, |d| in [0.01, 0.1]. Decoded with core's converters / ggml
// decoder (bit-exact with gguf-py).
HostWeight RandomWeight(DType t, int64_t rows, int64_t cols, Rng& rng) {
  HostWeight hw;
  hw.t = Tensor::Zeros(t, {rows, cols});
  std::vector<float> dec(rows * cols);
  if (!IsBlockQuantized(t)) {
    std::vector<float> v = rng.Vec(rows * cols, -1.f, 1.f);
    ConvertFromF32(t, v.data(), hw.t.mutable_raw(), hw.t.numel());
    ConvertToF32(t, hw.t.raw(), dec.data(), hw.t.numel());
  } else {
    auto* bytes = static_cast<uint8_t*>(hw.t.mutable_raw());
    for (size_t i = 0; i < hw.t.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(rng.Bits());
    const size_t bb = DTypeBlockBytes(t);
    for (size_t b = 0; b < hw.t.nbytes() / bb; ++b) {
      for (size_t off : ScaleOffsets(t)) {
        const float v = rng.Uniform(0.01f, 0.1f) * ((rng.Bits() & 1) ? -1.f : 1.f);
        const uint16_t h = F32ToF16(v);
        std::memcpy(bytes + b * bb + off, &h, 2);
      }
    }
    const size_t row_bytes = DTypeBytes(t, cols);
    for (int64_t r = 0; r < rows; ++r) {
      ggml::DequantizeRow(t, bytes + r * row_bytes, dec.data() + r * cols, cols);
    }
  }
  hw.w = Widen(dec);
  return hw;
}

// Elements per activation block the GEMV rounds the input in (0: none).
int64_t ActivationBlock(DType t) {
  switch (t) {
    case DType::kQ4_0:
    case DType::kQ8_0:
      return 32;
    case DType::kQ4_K:
      return 256;
    default:
      return 0;
  }
}

Prec WeightPrec(DType t) {
  if (IsBlockQuantized(t)) return Prec::kBlockWeight;
  if (t == DType::kBF16) return Prec::kBF16Weight;
  if (t == DType::kF16) return Prec::kF16Weight;
  return Prec::kF32Dot;
}

// A QuantizedMatrix (int4, group scales, optional zero points) and its f64
// values scale * (q - zero).
struct HostQuant {
  std::shared_ptr<QuantizedMatrix> q;
  std::vector<double> w;
};

HostQuant RandomInt4Group(int64_t rows, int64_t cols, int64_t group, bool asym, Rng& rng) {
  auto q = std::make_shared<QuantizedMatrix>();
  q->rows = rows;
  q->cols = cols;
  q->value_type = DType::kI4;
  q->granularity = QuantGranularity::kGroup;
  q->group_size = group;
  const int64_t groups = (cols + group - 1) / group;
  q->values = Tensor::Zeros(DType::kI4, {rows, cols});
  q->scales = Tensor::Zeros(DType::kF32, {rows, groups});
  if (asym) q->zero_points = Tensor::Zeros(DType::kI8, {rows, groups});
  auto* packed = static_cast<uint8_t*>(q->values.mutable_raw());
  std::vector<int> vals(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    vals[i] = rng.Int(-8, 7);
    PackI4(packed, i, vals[i]);
  }
  float* scales = q->scales.mutable_data<float>();
  for (int64_t i = 0; i < rows * groups; ++i) scales[i] = rng.Uniform(0.01f, 0.05f);
  int8_t* zeros = asym ? q->zero_points.mutable_data<int8_t>() : nullptr;
  if (asym) {
    for (int64_t i = 0; i < rows * groups; ++i) zeros[i] = static_cast<int8_t>(rng.Int(-3, 3));
  }
  HostQuant hq;
  hq.w.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = r * groups + c / group;
      const double z = asym ? zeros[g] : 0.0;
      hq.w[r * cols + c] = static_cast<double>(scales[g]) * (vals[r * cols + c] - z);
    }
  }
  hq.q = std::move(q);
  return hq;
}

// ============================================================================
// Operands on the backend under test.

class Dev {
 public:
  explicit Dev(Backend& b) : b_(b) {}
  Backend& b() { return b_; }

  // n zeroed elements of device memory.
  template <typename T>
  T* Alloc(size_t n) {
    absl::StatusOr<Buffer> buf = b_.Allocate(std::max<size_t>(n, 1) * sizeof(T));
    Check(buf.status(), "Allocate");
    bufs_.push_back(std::move(*buf));
    return bufs_.back().template as<T>();
  }
  // A device copy of host data.
  template <typename T>
  T* Up(const std::vector<T>& host) {
    T* p = Alloc<T>(host.size());
    Check(b_.CopyToDevice(host.data(), p, host.size() * sizeof(T)), "CopyToDevice");
    return p;
  }
  // A host copy of n elements (after every op issued so far).
  template <typename T>
  std::vector<T> Down(const T* p, size_t n) {
    std::vector<T> h(n);
    Check(b_.Synchronize(), "Synchronize");
    Check(b_.CopyToHost(p, h.data(), n * sizeof(T)), "CopyToHost");
    return h;
  }
  template <typename T>
  std::vector<double> Out(const T* p, size_t n) {
    return Widen(Down(p, n));
  }

 private:
  // A buffer or copy failure is not the op's result: stop the test binary.
  static void Check(const absl::Status& s, const char* what) {
    if (!s.ok()) {
      std::fprintf(stderr, "backend_ops_test: %s failed: %s\n", what, s.ToString().c_str());
      std::abort();
    }
  }
  Backend& b_;
  std::vector<Buffer> bufs_;
};

// ============================================================================
// The case table.

struct OpCase {
  std::string name;
  std::vector<std::string> ops;  // entries of kBackendOps it exercises
  std::function<absl::StatusOr<Outputs>(Backend&, uint32_t)> run;
  std::function<Reference(uint32_t)> reference;
};

// make(Rng&) -> In builds the inputs; run(Dev&, const In&) -> StatusOr<Outputs>
// runs the op; ref(const In&) -> Reference computes the f64 answer.
template <typename Make, typename Run, typename Ref>
OpCase MakeCase(std::string name, std::vector<std::string> ops, Make make, Run run, Ref ref) {
  OpCase c;
  c.name = std::move(name);
  c.ops = std::move(ops);
  c.run = [make, run](Backend& b, uint32_t seed) -> absl::StatusOr<Outputs> {
    Rng rng(seed);
    const auto in = make(rng);
    Dev dev(b);
    return run(dev, in);
  };
  c.reference = [make, ref](uint32_t seed) -> Reference {
    Rng rng(seed);
    const auto in = make(rng);
    return ref(in);
  };
  return c;
}

// ---- f64 helpers -------------------------------------------------------------

// y[m, n] = x[m, k] . w[n, k]^T + bias, with mag = sum |x w| + |bias| and, for
// act_block > 0, the activation grid.
Expect DotRef(Prec prec, const float* x, int64_t m, int64_t k, const std::vector<double>& w,
              int64_t n, const float* bias, int64_t act_block) {
  Expect e;
  e.prec = prec;
  e.value.assign(m * n, 0);
  e.mag.assign(m * n, 0);
  if (act_block > 0) e.aux.assign(m * n, 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double s = bias ? bias[r] : 0.0, a = bias ? std::abs(bias[r]) : 0.0, g = 0;
      for (int64_t j = 0; j < k; ++j) {
        s += static_cast<double>(x[i * k + j]) * w[r * k + j];
        a += std::abs(static_cast<double>(x[i * k + j]) * w[r * k + j]);
      }
      if (act_block > 0) {
        for (int64_t b0 = 0; b0 < k; b0 += act_block) {
          double amax = 0, wsum = 0;
          for (int64_t j = b0; j < std::min(k, b0 + act_block); ++j) {
            amax = std::max(amax, std::abs(static_cast<double>(x[i * k + j])));
            wsum += std::abs(w[r * k + j]);
          }
          g += wsum * amax / 127.0;
        }
        e.aux[i * n + r] = g;
      }
      e.value[i * n + r] = s;
      e.mag[i * n + r] = a;
    }
  }
  return e;
}

double LogSumExp(const std::vector<double>& a) {
  double mx = -std::numeric_limits<double>::infinity();
  for (double v : a) mx = std::max(mx, v);
  double s = 0;
  for (double v : a) s += std::exp(v - mx);
  return mx + std::log(s);
}

// log softmax(z / t).
std::vector<double> LogSoftmax(const std::vector<double>& z, double t) {
  std::vector<double> y(z.size());
  for (size_t j = 0; j < z.size(); ++j) y[j] = z[j] / t;
  const double l = LogSumExp(y);
  for (double& v : y) v -= l;
  return y;
}

// ============================================================================
// Cases: identity, buffers, weights.

std::vector<OpCase> IdentityAndBufferCases() {
  std::vector<OpCase> cases;
  struct None {};
  cases.push_back(MakeCase(
      "Identity", {"device", "Describe", "memory_is_host"}, [](Rng&) { return None{}; },
      [](Dev& d, const None&) -> absl::StatusOr<Outputs> {
        Outputs o;
        o["describe_nonempty"] = {d.b().Describe().empty() ? 0.0 : 1.0};
        absl::StatusOr<Backend*> again = GetBackend(d.b().device());
        o["registry_returns_this_context"] = {again.ok() && *again == &d.b() ? 1.0 : 0.0};
        // Host memory exactly when the device is the CPU.
        o["memory_is_host_iff_cpu"] = {d.b().memory_is_host() == d.b().device().is_cpu() ? 1.0
                                                                                         : 0.0};
        return o;
      },
      [](const None&) {
        Reference r;
        r["describe_nonempty"] = Exact({1});
        r["registry_returns_this_context"] = Exact({1});
        r["memory_is_host_iff_cpu"] = Exact({1});
        return r;
      }));

  struct BufIn {
    std::vector<float> pattern;  // 250
  };
  cases.push_back(MakeCase(
      "Buffers",
      {"Allocate", "AllocateRaw", "FreeRaw", "CopyToDevice", "CopyToHost", "CopyOnDevice",
       "Synchronize", "ToHost"},
      [](Rng& rng) { return BufIn{rng.Vec(250, -10.f, 10.f)}; },
      [](Dev& d, const BufIn& in) -> absl::StatusOr<Outputs> {
        Backend& b = d.b();
        Outputs o;
        ASSIGN_OR_RETURN(Buffer a, b.Allocate(1000));
        std::vector<float> host(300, -1.f);
        RETURN_IF_ERROR(b.Synchronize());
        RETURN_IF_ERROR(b.CopyToHost(a.data(), host.data(), 1000));
        o["allocate_is_zeroed"] = Widen(std::vector<float>(host.begin(), host.begin() + 250));
        RETURN_IF_ERROR(b.CopyToDevice(in.pattern.data(), a.data(), 1000));
        ASSIGN_OR_RETURN(Buffer c, b.Allocate(1200));
        RETURN_IF_ERROR(b.CopyOnDevice(a.data(), c.as<char>() + 64, 1000));
        RETURN_IF_ERROR(b.Synchronize());
        RETURN_IF_ERROR(b.CopyToHost(c.data(), host.data(), 1200));
        o["copy_on_device"] = Widen(host);
        o["buffer_size_and_device"] = {c.size() == 1200 && c.device() == b.device() ? 1.0 : 0.0};
        const Tensor view = c.View(DType::kF32, {10, 30});
        const TensorLocation want_loc =
            b.device().is_cpu() ? TensorLocation::kHost : TensorLocation::kDevice;
        o["view_location"] = {view.location() == want_loc && view.device() == b.device() &&
                                      view.device_data() == c.data()
                                  ? 1.0
                                  : 0.0};
        ASSIGN_OR_RETURN(Tensor back, b.ToHost(view));
        o["to_host_is_on_host"] = {back.on_host() && back.location() == TensorLocation::kHost &&
                                           back.shape() == Shape({10, 30})
                                       ? 1.0
                                       : 0.0};
        o["to_host"] = Widen(std::vector<float>(back.data<float>(), back.data<float>() + 300));
        Tensor h = Tensor::Zeros(DType::kF32, {3});
        ASSIGN_OR_RETURN(Tensor same, b.ToHost(h));
        o["to_host_of_host_tensor_is_itself"] = {same.raw() == h.raw() ? 1.0 : 0.0};
        Buffer moved = std::move(a);
        o["move_and_reset"] = {a.empty() && !moved.empty() ? 1.0 : 0.0};
        moved.Reset();
        o["move_and_reset"].push_back(moved.empty() && moved.size() == 0 ? 1.0 : 0.0);
        return o;
      },
      [](const BufIn& in) {
        Reference r;
        r["allocate_is_zeroed"] = Exact(std::vector<double>(250, 0.0));
        std::vector<double> c(300, 0.0);
        for (int i = 0; i < 250; ++i) c[16 + i] = in.pattern[i];
        r["copy_on_device"] = Exact(c);
        r["to_host"] = Exact(c);
        r["buffer_size_and_device"] = Exact({1});
        r["view_location"] = Exact({1});
        r["to_host_is_on_host"] = Exact({1});
        r["to_host_of_host_tensor_is_itself"] = Exact({1});
        r["move_and_reset"] = Exact({1, 1});
        return r;
      }));

  struct PrepIn {
    HostWeight f32;
    HostQuant q;
  };
  cases.push_back(MakeCase(
      "PrepareWeight", {"PrepareWeight/tensor", "PrepareWeight/quantized", "SupportsWeightDType"},
      [](Rng& rng) {
        return PrepIn{RandomWeight(DType::kF32, 5, 8, rng), RandomInt4Group(6, 64, 32, false, rng)};
      },
      [](Dev& d, const PrepIn& in) -> absl::StatusOr<Outputs> {
        Backend& b = d.b();
        Outputs o;
        for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_0,
                        DType::kQ4_K, DType::kI32, DType::kI4}) {
          o["supports_f32_bf16_f16_q8_0_q4_0_q4_k_not_i32_i4"].push_back(
              b.SupportsWeightDType(t) ? 1.0 : 0.0);
        }
        ASSIGN_OR_RETURN(auto w, b.PrepareWeight(in.f32.t, WeightUse::kLinear));
        o["dense_rows_cols"] = {static_cast<double>(w->rows()), static_cast<double>(w->cols()),
                                w->bytes() > 0 ? 1.0 : 0.0};
        ASSIGN_OR_RETURN(auto e, b.PrepareWeight(in.f32.t, WeightUse::kEmbedding));
        o["embedding_rows_cols"] = {static_cast<double>(e->rows()), static_cast<double>(e->cols())};
        ASSIGN_OR_RETURN(auto qw, b.PrepareWeight(in.q.q));
        o["quantized_rows_cols"] = {static_cast<double>(qw->rows()),
                                    static_cast<double>(qw->cols()), qw->bytes() > 0 ? 1.0 : 0.0};
        // Operands the op cannot take: InvalidArgument.
        const Tensor rank1 = Tensor::Zeros(DType::kF32, {8});
        const Tensor i32 = Tensor::Zeros(DType::kI32, {4, 4});
        auto bad_quant = std::make_shared<QuantizedMatrix>(*in.q.q);
        bad_quant->scales = Tensor::Zeros(DType::kF32, {bad_quant->rows, 1});  // wrong shape
        o["error_codes_rank1_i32_badlayout"] = {
            Code(b.PrepareWeight(rank1, WeightUse::kLinear).status()),
            Code(b.PrepareWeight(i32, WeightUse::kLinear).status()),
            Code(b.PrepareWeight(bad_quant).status())};
        return o;
      },
      [](const PrepIn&) {
        Reference r;
        r["supports_f32_bf16_f16_q8_0_q4_0_q4_k_not_i32_i4"] = Exact({1, 1, 1, 1, 1, 1, 0, 0});
        r["dense_rows_cols"] = Exact({5, 8, 1});
        r["embedding_rows_cols"] = Exact({5, 8});
        r["quantized_rows_cols"] = Exact({6, 64, 1});
        const double ia = CodeOf(absl::StatusCode::kInvalidArgument);
        r["error_codes_rank1_i32_badlayout"] = Exact({ia, ia, ia});
        return r;
      }));
  return cases;
}

// ============================================================================
// Forward (inference) cases.

// GEMV rows (m <= 4 on the CPU) and a GEMM row count.
const int64_t kMatMulRows[] = {1, 2, 3, 17};
constexpr int64_t kMaxMatMulRows = 17;

struct MatIn {
  DType t;
  int64_t n, k;
  HostWeight hw;  // dense weight (unless quant)
  HostQuant hq;   // QuantizedMatrix weight when quant.q is set
  std::vector<float> x, bias;
};

OpCase MatMulCase(const std::string& name, DType t, int64_t n, int64_t k, int64_t group = 0,
                  bool asym = false) {
  const bool quant = group > 0;
  return MakeCase(
      name, {quant ? "PrepareWeight/quantized" : "PrepareWeight/tensor", "MatMul"},
      [=](Rng& rng) {
        MatIn in;
        in.t = t;
        in.n = n;
        in.k = k;
        if (quant) {
          in.hq = RandomInt4Group(n, k, group, asym, rng);
        } else {
          in.hw = RandomWeight(t, n, k, rng);
        }
        in.x = rng.Vec(kMaxMatMulRows * k, -1.f, 1.f);
        in.bias = rng.Vec(n, -1.f, 1.f);
        return in;
      },
      [quant](Dev& d, const MatIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        std::shared_ptr<const DeviceWeight> w;
        if (quant) {
          ASSIGN_OR_RETURN(w, d.b().PrepareWeight(in.hq.q));
        } else {
          ASSIGN_OR_RETURN(w, d.b().PrepareWeight(in.hw.t, WeightUse::kLinear));
        }
        o["rows_cols"] = {static_cast<double>(w->rows()), static_cast<double>(w->cols())};
        const float* x = d.Up(in.x);
        const float* bias = d.Up(in.bias);
        for (int64_t m : kMatMulRows) {
          // Garbage in y: MatMul overwrites it.
          float* y = d.Up(std::vector<float>(m * in.n, 7.f));
          RETURN_IF_ERROR(d.b().MatMul(x, m, *w, m % 2 == 0 ? bias : nullptr, y));
          o["y_m" + std::to_string(m)] = d.Out(y, m * in.n);
        }
        return o;
      },
      [quant](const MatIn& in) {
        Reference r;
        r["rows_cols"] = Exact({static_cast<double>(in.n), static_cast<double>(in.k)});
        const std::vector<double>& w = quant ? in.hq.w : in.hw.w;
        for (int64_t m : kMatMulRows) {
          r["y_m" + std::to_string(m)] =
              DotRef(quant ? Prec::kF32Dot : WeightPrec(in.t), in.x.data(), m, in.k, w, in.n,
                     m % 2 == 0 ? in.bias.data() : nullptr, quant ? 0 : ActivationBlock(in.t));
        }
        return r;
      });
}

std::vector<OpCase> MatMulCases() {
  std::vector<OpCase> cases;
  // Shapes: rows not a multiple of 8 (the CPU repacks Q4_0/Q8_0 8 rows at a
  // time), F32/BF16/F16 columns not a multiple of the vector width.
  cases.push_back(MatMulCase("MatMul/F32", DType::kF32, 13, 70));
  cases.push_back(MatMulCase("MatMul/BF16", DType::kBF16, 13, 70));
  cases.push_back(MatMulCase("MatMul/F16", DType::kF16, 13, 70));
  cases.push_back(MatMulCase("MatMul/Q8_0", DType::kQ8_0, 13, 96));
  cases.push_back(MatMulCase("MatMul/Q4_0", DType::kQ4_0, 13, 96));
  cases.push_back(MatMulCase("MatMul/Q4_K", DType::kQ4_K, 11, 512));
  cases.push_back(MatMulCase("MatMul/Int4_g32_sym", DType::kI4, 11, 96, 32, false));
  // A group size that is not a multiple of 8 (the CPU's generic GEMV).
  cases.push_back(MatMulCase("MatMul/Int4_g20_asym", DType::kI4, 11, 100, 20, true));

  // MatMulGroup: outputs of every weight kind sharing x[m, 256].
  struct GroupIn {
    std::vector<DType> types;  // kI4: a QuantizedMatrix
    std::vector<int64_t> rows;
    std::vector<HostWeight> dense;
    std::vector<HostQuant> quant;
    std::vector<std::vector<float>> bias;  // empty: none
    std::vector<float> x;
  };
  constexpr int64_t kGroupK = 256;
  const int64_t kGroupRows[] = {2, 19};
  cases.push_back(MakeCase(
      "MatMulGroup/mixed", {"PrepareWeight/tensor", "PrepareWeight/quantized", "MatMulGroup"},
      [](Rng& rng) {
        GroupIn in;
        in.types = {DType::kF32, DType::kQ4_0, DType::kQ4_K,
                    DType::kI4,  DType::kBF16, DType::kQ8_0};
        in.rows = {7, 13, 9, 10, 5, 8};
        for (size_t i = 0; i < in.types.size(); ++i) {
          if (in.types[i] == DType::kI4) {
            in.quant.push_back(RandomInt4Group(in.rows[i], kGroupK, 32, true, rng));
            in.dense.push_back({});
          } else {
            in.dense.push_back(RandomWeight(in.types[i], in.rows[i], kGroupK, rng));
            in.quant.push_back({});
          }
          in.bias.push_back(i % 2 == 0 ? rng.Vec(in.rows[i], -1.f, 1.f) : std::vector<float>());
        }
        in.x = rng.Vec(19 * kGroupK, -1.f, 1.f);
        return in;
      },
      [kGroupRows](Dev& d, const GroupIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        std::vector<std::shared_ptr<const DeviceWeight>> w(in.types.size());
        std::vector<const float*> bias(in.types.size(), nullptr);
        for (size_t i = 0; i < in.types.size(); ++i) {
          if (in.types[i] == DType::kI4) {
            ASSIGN_OR_RETURN(w[i], d.b().PrepareWeight(in.quant[i].q));
          } else {
            ASSIGN_OR_RETURN(w[i], d.b().PrepareWeight(in.dense[i].t, WeightUse::kLinear));
          }
          if (!in.bias[i].empty()) bias[i] = d.Up(in.bias[i]);
        }
        const float* x = d.Up(in.x);
        for (int64_t m : kGroupRows) {
          std::vector<MatMulOutput> outs;
          std::vector<float*> ys;
          for (size_t i = 0; i < in.types.size(); ++i) {
            ys.push_back(d.Up(std::vector<float>(m * in.rows[i], 7.f)));
            outs.push_back(MatMulOutput{w[i].get(), bias[i], ys.back()});
          }
          RETURN_IF_ERROR(d.b().MatMulGroup(x, m, kGroupK, outs));
          for (size_t i = 0; i < in.types.size(); ++i) {
            o["m" + std::to_string(m) + "_" + std::to_string(i) + "_" +
              std::string(DTypeName(in.types[i]))] = d.Out(ys[i], m * in.rows[i]);
          }
        }
        return o;
      },
      [kGroupRows](const GroupIn& in) {
        Reference r;
        for (int64_t m : kGroupRows) {
          for (size_t i = 0; i < in.types.size(); ++i) {
            const bool q = in.types[i] == DType::kI4;
            r["m" + std::to_string(m) + "_" + std::to_string(i) + "_" +
              std::string(DTypeName(in.types[i]))] =
                DotRef(q ? Prec::kF32Dot : WeightPrec(in.types[i]), in.x.data(), m, kGroupK,
                       q ? in.quant[i].w : in.dense[i].w, in.rows[i],
                       in.bias[i].empty() ? nullptr : in.bias[i].data(),
                       q ? 0 : ActivationBlock(in.types[i]));
          }
        }
        return r;
      }));
  return cases;
}

std::vector<OpCase> ElementwiseCases() {
  std::vector<OpCase> cases;

  // Embedding over every table dtype; ids repeat and hit both ends.
  struct EmbIn {
    std::vector<DType> types;
    std::vector<int64_t> dims;
    std::vector<HostWeight> tables;
    std::vector<int32_t> ids;
  };
  constexpr int64_t kVocab = 29;
  cases.push_back(MakeCase(
      "Embedding", {"PrepareWeight/tensor", "Embedding"},
      [](Rng& rng) {
        EmbIn in;
        in.types = {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_K};
        in.dims = {40, 40, 40, 64, 256};
        for (size_t i = 0; i < in.types.size(); ++i) {
          in.tables.push_back(RandomWeight(in.types[i], kVocab, in.dims[i], rng));
        }
        in.ids = {0, kVocab - 1, 5, 5, 17, 3, 0, 28, 11};
        for (size_t i = 2; i < in.ids.size(); ++i) {
          if (i % 3 == 0) in.ids[i] = rng.Int(0, kVocab - 1);
        }
        return in;
      },
      [](Dev& d, const EmbIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        const int64_t n = in.ids.size();
        const int32_t* ids = d.Up(in.ids);
        const int32_t* bad_hi = d.Up(std::vector<int32_t>{1, kVocab});
        const int32_t* bad_lo = d.Up(std::vector<int32_t>{-1});
        for (size_t i = 0; i < in.types.size(); ++i) {
          ASSIGN_OR_RETURN(auto t, d.b().PrepareWeight(in.tables[i].t, WeightUse::kEmbedding));
          float* out = d.Up(std::vector<float>(n * in.dims[i], 7.f));
          RETURN_IF_ERROR(d.b().Embedding(*t, ids, n, out));
          const std::string name(DTypeName(in.types[i]));
          o[name] = d.Out(out, n * in.dims[i]);
          float* scratch = d.Alloc<float>(2 * in.dims[i]);
          o[name + "_error_codes"] = {Code(d.b().Embedding(*t, bad_hi, 2, scratch)),
                                      Code(d.b().Embedding(*t, bad_lo, 1, scratch))};
        }
        return o;
      },
      [](const EmbIn& in) {
        Reference r;
        // backend.h: an id outside the table is OutOfRange.
        const double ia = CodeOf(absl::StatusCode::kOutOfRange);
        for (size_t i = 0; i < in.types.size(); ++i) {
          const int64_t dim = in.dims[i];
          std::vector<double> v;
          for (int32_t id : in.ids) {
            for (int64_t c = 0; c < dim; ++c) v.push_back(in.tables[i].w[id * dim + c]);
          }
          const std::string name(DTypeName(in.types[i]));
          r[name] = Valued(Prec::kF32Round, v);
          r[name + "_error_codes"] = Exact({ia, ia});
        }
        return r;
      }));

  // RmsNorm, out of place and in place (y aliasing x).
  struct NormIn {
    int64_t rows, dim;
    float eps;
    std::vector<float> x, w;
  };
  cases.push_back(MakeCase(
      "RmsNorm", {"RmsNorm"},
      [](Rng& rng) {
        NormIn in{3, 67, 1e-5f, {}, {}};
        in.x = rng.Vec(in.rows * in.dim, -2.f, 2.f);
        in.w = rng.Vec(in.dim, 0.5f, 1.5f);
        return in;
      },
      [](Dev& d, const NormIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        float* y = d.Up(std::vector<float>(in.x.size(), 7.f));
        RETURN_IF_ERROR(d.b().RmsNorm(x, in.rows, in.dim, w, in.eps, y));
        o["y"] = d.Out(y, in.x.size());
        RETURN_IF_ERROR(d.b().RmsNorm(x, in.rows, in.dim, w, in.eps, x));
        o["y_in_place"] = d.Out(x, in.x.size());
        return o;
      },
      [](const NormIn& in) {
        std::vector<double> y(in.x.size());
        for (int64_t r = 0; r < in.rows; ++r) {
          double ss = 0;
          for (int64_t c = 0; c < in.dim; ++c)
            ss += double(in.x[r * in.dim + c]) * in.x[r * in.dim + c];
          const double rstd = 1.0 / std::sqrt(ss / in.dim + in.eps);
          for (int64_t c = 0; c < in.dim; ++c)
            y[r * in.dim + c] = in.x[r * in.dim + c] * rstd * in.w[c];
        }
        Reference r;
        r["y"] = Valued(Prec::kF32Sum, y);
        r["y_in_place"] = Valued(Prec::kF32Sum, y);
        return r;
      }));

  // SiluMul, Add (both with an aliased output), Scale.
  struct VecIn {
    std::vector<float> a, b;
    float s;
  };
  constexpr int64_t kVecN = 1003;
  auto make_vec = [](Rng& rng) {
    return VecIn{rng.Vec(kVecN, -8.f, 8.f), rng.Vec(kVecN, -2.f, 2.f), 0.37f};
  };
  cases.push_back(MakeCase(
      "SiluMul", {"SiluMul"}, make_vec,
      [](Dev& d, const VecIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        float* g = d.Up(in.a);
        const float* u = d.Up(in.b);
        float* out = d.Up(std::vector<float>(kVecN, 7.f));
        RETURN_IF_ERROR(d.b().SiluMul(g, u, kVecN, out));
        o["out"] = d.Out(out, kVecN);
        RETURN_IF_ERROR(d.b().SiluMul(g, u, kVecN, g));
        o["out_aliasing_gate"] = d.Out(g, kVecN);
        return o;
      },
      [](const VecIn& in) {
        std::vector<double> y(kVecN);
        for (int64_t i = 0; i < kVecN; ++i) {
          const double g = in.a[i];
          y[i] = g / (1.0 + std::exp(-g)) * in.b[i];
        }
        Reference r;
        r["out"] = Valued(Prec::kF32Elem, y);
        r["out_aliasing_gate"] = Valued(Prec::kF32Elem, y);
        return r;
      }));
  cases.push_back(MakeCase(
      "Add", {"Add"}, make_vec,
      [](Dev& d, const VecIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        const float* a = d.Up(in.a);
        float* b = d.Up(in.b);
        float* out = d.Up(std::vector<float>(kVecN, 7.f));
        RETURN_IF_ERROR(d.b().Add(a, b, kVecN, out));
        o["out"] = d.Out(out, kVecN);
        RETURN_IF_ERROR(d.b().Add(a, b, kVecN, b));
        o["out_aliasing_b"] = d.Out(b, kVecN);
        return o;
      },
      [](const VecIn& in) {
        std::vector<double> y(kVecN);
        for (int64_t i = 0; i < kVecN; ++i) y[i] = double(in.a[i]) + in.b[i];
        Reference r;
        r["out"] = Valued(Prec::kF32Round, y);
        r["out_aliasing_b"] = Valued(Prec::kF32Round, y);
        return r;
      }));
  cases.push_back(MakeCase(
      "Scale", {"Scale"}, make_vec,
      [](Dev& d, const VecIn& in) -> absl::StatusOr<Outputs> {
        float* x = d.Up(in.a);
        RETURN_IF_ERROR(d.b().Scale(x, kVecN, in.s));
        return Outputs{{"x", d.Out(x, kVecN)}};
      },
      [](const VecIn& in) {
        std::vector<double> y(kVecN);
        for (int64_t i = 0; i < kVecN; ++i) y[i] = double(in.a[i]) * in.s;
        return Reference{{"x", Valued(Prec::kF32Round, y)}};
      }));

  // Softmax: a short row and a long one with large logits (max subtraction).
  struct SoftIn {
    std::vector<int64_t> rows, cols;
    std::vector<std::vector<float>> x;
  };
  cases.push_back(MakeCase(
      "Softmax", {"Softmax"},
      [](Rng& rng) {
        SoftIn in{{5, 2}, {37, 300}, {}};
        in.x.push_back(rng.Vec(5 * 37, -4.f, 4.f));
        in.x.push_back(rng.Vec(2 * 300, -30.f, 30.f));
        return in;
      },
      [](Dev& d, const SoftIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        for (size_t s = 0; s < in.x.size(); ++s) {
          float* x = d.Up(in.x[s]);
          RETURN_IF_ERROR(d.b().Softmax(x, in.rows[s], in.cols[s]));
          o["cols" + std::to_string(in.cols[s])] = d.Out(x, in.x[s].size());
        }
        return o;
      },
      [](const SoftIn& in) {
        Reference r;
        for (size_t s = 0; s < in.x.size(); ++s) {
          std::vector<double> y;
          for (int64_t i = 0; i < in.rows[s]; ++i) {
            std::vector<double> z(in.x[s].begin() + i * in.cols[s],
                                  in.x[s].begin() + (i + 1) * in.cols[s]);
            for (double v : LogSoftmax(z, 1.0)) y.push_back(std::exp(v));
          }
          r["cols" + std::to_string(in.cols[s])] = Valued(Prec::kF32Sum, y);
        }
        return r;
      }));

  // RopeCosSin: angle = float(pos) * inv_freq[i] in f32, then cos / sin.
  struct CosSinIn {
    std::vector<float> inv_freq;
    std::vector<int64_t> pos;
  };
  cases.push_back(MakeCase(
      "RopeCosSin", {"RopeCosSin"},
      [](Rng& rng) {
        CosSinIn in;
        const int64_t half = 16;
        const float base = 10000.f * rng.Uniform(0.9f, 1.1f);
        for (int64_t i = 0; i < half; ++i) {
          in.inv_freq.push_back(static_cast<float>(1.0 / std::pow(base, 2.0 * i / (2 * half))));
        }
        in.pos = {0, 1, 2, 7, 100, 513, 4095, 32767, static_cast<int64_t>(rng.Int(0, 1 << 17))};
        return in;
      },
      [](Dev& d, const CosSinIn& in) -> absl::StatusOr<Outputs> {
        const int64_t half = in.inv_freq.size(), n = in.pos.size();
        const float* f = d.Up(in.inv_freq);
        const int64_t* p = d.Up(in.pos);
        float* c = d.Up(std::vector<float>(n * half, 7.f));
        float* s = d.Up(std::vector<float>(n * half, 7.f));
        RETURN_IF_ERROR(d.b().RopeCosSin(f, half, p, n, c, s));
        return Outputs{{"cos", d.Out(c, n * half)}, {"sin", d.Out(s, n * half)}};
      },
      [](const CosSinIn& in) {
        std::vector<double> c, s;
        for (int64_t p : in.pos) {
          for (float f : in.inv_freq) {
            const float angle = static_cast<float>(p) * f;  // the f32 product the contract names
            c.push_back(std::cos(static_cast<double>(angle)));
            s.push_back(std::sin(static_cast<double>(angle)));
          }
        }
        return Reference{{"cos", Valued(Prec::kF32Elem, c)}, {"sin", Valued(Prec::kF32Elem, s)}};
      }));

  // ApplyRope / ApplyRopeBackward on rows wider than the heads (fused qkv
  // rows): the columns past the heads stay as they were.
  struct RopeIn {
    int64_t n, heads, hd, stride;
    std::vector<float> x, cos, sin;
  };
  auto make_rope = [](int64_t n, int64_t heads, int64_t hd, int64_t stride) {
    return [=](Rng& rng) {
      RopeIn in{n, heads, hd, stride, {}, {}, {}};
      in.x = rng.Vec(n * stride, -2.f, 2.f);
      for (int64_t i = 0; i < n * hd / 2; ++i) {
        const double a = rng.Uniform(-3.2f, 3.2f);
        in.cos.push_back(static_cast<float>(std::cos(a)));
        in.sin.push_back(static_cast<float>(std::sin(a)));
      }
      return in;
    };
  };
  auto rope_ref = [](const RopeIn& in, bool inverse) {
    std::vector<double> y = Widen(in.x), mag(in.x.size());
    for (size_t i = 0; i < y.size(); ++i) mag[i] = std::abs(y[i]);
    const int64_t half = in.hd / 2;
    for (int64_t r = 0; r < in.n; ++r) {
      for (int64_t h = 0; h < in.heads; ++h) {
        for (int64_t i = 0; i < half; ++i) {
          const int64_t a = r * in.stride + h * in.hd + i, b = a + half;
          const double c = in.cos[r * half + i],
                       s = inverse ? -in.sin[r * half + i] : in.sin[r * half + i];
          const double x1 = in.x[a], x2 = in.x[b];
          y[a] = x1 * c - x2 * s;
          y[b] = x2 * c + x1 * s;
          mag[a] = std::abs(x1 * c) + std::abs(x2 * s);
          mag[b] = std::abs(x2 * c) + std::abs(x1 * s);
        }
      }
    }
    return Valued(Prec::kF32Elem, y, mag);
  };
  for (bool inverse : {false, true}) {
    const std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> shapes = {{5, 3, 12, 44},
                                                                                {4, 2, 64, 136}};
    for (auto [n, heads, hd, stride] : shapes) {
      const std::string op = inverse ? "ApplyRopeBackward" : "ApplyRope";
      cases.push_back(MakeCase(
          op + "/hd" + std::to_string(hd), {op}, make_rope(n, heads, hd, stride),
          [inverse](Dev& d, const RopeIn& in) -> absl::StatusOr<Outputs> {
            float* x = d.Up(in.x);
            const float* c = d.Up(in.cos);
            const float* s = d.Up(in.sin);
            if (inverse) {
              RETURN_IF_ERROR(d.b().ApplyRopeBackward(x, in.n, in.heads, in.hd, in.stride, c, s));
            } else {
              RETURN_IF_ERROR(d.b().ApplyRope(x, in.n, in.heads, in.hd, in.stride, c, s));
            }
            return Outputs{{"x", d.Out(x, in.x.size())}};
          },
          [inverse, rope_ref](const RopeIn& in) {
            return Reference{{"x", rope_ref(in, inverse)}};
          }));
    }
  }
  return cases;
}

// ============================================================================
// Generation: the KV cache and attention over it.

struct KvIn {
  int64_t H, KvH, D, head_stride, total;
  float scale;
  std::vector<int64_t> n, start, window;  // per phase
  std::vector<std::vector<float>> q, k, v;
};

// Attention of q[n, H*D] at positions start.. over keys/values k_all, v_all
// [total, KvH*D] (f64 loop), with mag = sum p |v|.
Expect DecodeAttentionRef(const KvIn& in, const std::vector<float>& q, int64_t n, int64_t start,
                          int64_t window, const std::vector<float>& k_all,
                          const std::vector<float>& v_all) {
  const int64_t H = in.H, D = in.D, KvD = in.KvH * D, group = in.H / in.KvH;
  Expect e;
  e.prec = Prec::kAttention;
  e.value.assign(n * H * D, 0);
  e.mag.assign(n * H * D, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = start + i;
    const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      std::vector<double> s;
      for (int64_t j = lo; j <= pos; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < D; ++c)
          dot += double(q[i * H * D + h * D + c]) * k_all[j * KvD + kvh * D + c];
        s.push_back(dot * in.scale);
      }
      const double l = LogSumExp(s);
      for (int64_t j = lo; j <= pos; ++j) {
        const double p = std::exp(s[j - lo] - l);
        for (int64_t c = 0; c < D; ++c) {
          e.value[i * H * D + h * D + c] += p * v_all[j * KvD + kvh * D + c];
          e.mag[i * H * D + h * D + c] += p * std::abs(v_all[j * KvD + kvh * D + c]);
        }
      }
    }
  }
  return e;
}

// phases: (n, window) appended and attended in order from position 0.
OpCase KvCase(const std::string& name, int64_t H, int64_t KvH, int64_t D,
              std::vector<std::pair<int64_t, int64_t>> phases) {
  return MakeCase(
      name, {"AppendKv", "Attention"},
      [=](Rng& rng) {
        KvIn in;
        in.H = H;
        in.KvH = KvH;
        in.D = D;
        in.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
        int64_t pos = 0;
        for (auto [n, window] : phases) {
          in.n.push_back(n);
          in.start.push_back(pos);
          in.window.push_back(window);
          in.q.push_back(rng.Vec(n * H * D, -1.5f, 1.5f));
          in.k.push_back(rng.Vec(n * KvH * D, -1.5f, 1.5f));
          in.v.push_back(rng.Vec(n * KvH * D, -1.f, 1.f));
          pos += n;
        }
        in.total = pos;
        in.head_stride = (pos + 2) * D + 3;  // room for two more positions, odd padding
        return in;
      },
      [](Dev& d, const KvIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        float* kc = d.Alloc<float>(in.KvH * in.head_stride);
        float* vc = d.Alloc<float>(in.KvH * in.head_stride);
        const KvView cache{kc, vc, in.head_stride};
        for (size_t p = 0; p < in.n.size(); ++p) {
          const float* k = d.Up(in.k[p]);
          const float* v = d.Up(in.v[p]);
          const float* q = d.Up(in.q[p]);
          RETURN_IF_ERROR(d.b().AppendKv(k, v, in.n[p], in.KvH, in.D, in.start[p], cache));
          float* out = d.Up(std::vector<float>(in.n[p] * in.H * in.D, 7.f));
          RETURN_IF_ERROR(d.b().Attention(q, in.n[p], in.start[p], cache,
                                          AttentionShape{in.H, in.KvH, in.D}, in.scale,
                                          in.window[p], out));
          o["out" + std::to_string(p)] = d.Out(out, in.n[p] * in.H * in.D);
        }
        o["cache_k"] = d.Out(kc, in.KvH * in.head_stride);
        o["cache_v"] = d.Out(vc, in.KvH * in.head_stride);
        return o;
      },
      [](const KvIn& in) {
        Reference r;
        std::vector<float> k_all, v_all;
        for (size_t p = 0; p < in.n.size(); ++p) {
          k_all.insert(k_all.end(), in.k[p].begin(), in.k[p].end());
          v_all.insert(v_all.end(), in.v[p].begin(), in.v[p].end());
          r["out" + std::to_string(p)] =
              DecodeAttentionRef(in, in.q[p], in.n[p], in.start[p], in.window[p], k_all, v_all);
        }
        std::vector<double> kc(in.KvH * in.head_stride, 0.0), vc(kc.size(), 0.0);
        for (int64_t pos = 0; pos < in.total; ++pos) {
          for (int64_t h = 0; h < in.KvH; ++h) {
            for (int64_t c = 0; c < in.D; ++c) {
              kc[h * in.head_stride + pos * in.D + c] = k_all[pos * in.KvH * in.D + h * in.D + c];
              vc[h * in.head_stride + pos * in.D + c] = v_all[pos * in.KvH * in.D + h * in.D + c];
            }
          }
        }
        r["cache_k"] = Exact(kc);
        r["cache_v"] = Exact(vc);
        return r;
      });
}

std::vector<OpCase> KvCases() {
  std::vector<OpCase> cases;
  // GQA 4/2, head_dim 20: prefill, one decode step, a windowed chunk at
  // start_pos 10, a windowed decode step.
  cases.push_back(KvCase("KvCache/gqa_window", 4, 2, 20, {{9, 0}, {1, 0}, {5, 6}, {1, 4}}));
  // MQA 6/1, head_dim 64: a prefill past 64 queries, a chunk past 256 keys.
  cases.push_back(KvCase("KvCache/mqa_long", 6, 1, 64, {{70, 0}, {200, 0}, {1, 0}, {3, 100}}));
  return cases;
}

// ============================================================================
// Training cases.

std::vector<OpCase> LinearAndNormCases() {
  std::vector<OpCase> cases;
  struct LinIn {
    int64_t m, k, n;
    std::vector<float> x, w, bias, dy, dx0, dw0, db0;
  };
  auto make_lin = [](Rng& rng) {
    LinIn in{5, 67, 19, {}, {}, {}, {}, {}, {}, {}};
    in.x = rng.Vec(in.m * in.k, -1.f, 1.f);
    in.w = rng.Vec(in.n * in.k, -1.f, 1.f);
    in.bias = rng.Vec(in.n, -1.f, 1.f);
    in.dy = rng.Vec(in.m * in.n, -1.f, 1.f);
    in.dx0 = rng.Vec(in.m * in.k, -1.f, 1.f);
    in.dw0 = rng.Vec(in.n * in.k, -1.f, 1.f);
    in.db0 = rng.Vec(in.n, -1.f, 1.f);
    return in;
  };
  cases.push_back(MakeCase(
      "LinearForward", {"LinearForward"}, make_lin,
      [](Dev& d, const LinIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        const float* b = d.Up(in.bias);
        float* y1 = d.Up(std::vector<float>(in.m * in.n, 7.f));
        float* y2 = d.Up(std::vector<float>(in.m * in.n, 7.f));
        RETURN_IF_ERROR(d.b().LinearForward(x, in.m, in.k, w, in.n, b, y1));
        RETURN_IF_ERROR(d.b().LinearForward(x, in.m, in.k, w, in.n, nullptr, y2));
        return Outputs{{"y_bias", d.Out(y1, in.m * in.n)}, {"y_no_bias", d.Out(y2, in.m * in.n)}};
      },
      [](const LinIn& in) {
        const std::vector<double> w = Widen(in.w);
        return Reference{
            {"y_bias", DotRef(Prec::kF32Dot, in.x.data(), in.m, in.k, w, in.n, in.bias.data(), 0)},
            {"y_no_bias", DotRef(Prec::kF32Dot, in.x.data(), in.m, in.k, w, in.n, nullptr, 0)}};
      }));
  cases.push_back(MakeCase(
      "LinearBackward", {"LinearBackward"}, make_lin,
      [](Dev& d, const LinIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        Backend& b = d.b();
        const float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        const float* dy = d.Up(in.dy);
        // dx overwritten (garbage before), dw and dbias accumulated.
        float* dx = d.Up(std::vector<float>(in.m * in.k, 7.f));
        float* dw = d.Up(in.dw0);
        float* db = d.Up(in.db0);
        RETURN_IF_ERROR(b.LinearBackward(x, in.m, in.k, w, in.n, dy, dx, dw, db, false));
        o["overwrite_dx"] = d.Out(dx, in.m * in.k);
        o["overwrite_dw"] = d.Out(dw, in.n * in.k);
        o["overwrite_dbias"] = d.Out(db, in.n);
        // accumulate_dx, no dw / dbias.
        float* dx2 = d.Up(in.dx0);
        RETURN_IF_ERROR(b.LinearBackward(x, in.m, in.k, w, in.n, dy, dx2, nullptr, nullptr, true));
        o["accumulate_dx"] = d.Out(dx2, in.m * in.k);
        // dw only (dx and dbias null).
        float* dw3 = d.Up(in.dw0);
        RETURN_IF_ERROR(b.LinearBackward(x, in.m, in.k, w, in.n, dy, nullptr, dw3, nullptr, false));
        o["dw_only"] = d.Out(dw3, in.n * in.k);
        // m == 0 leaves dw and dbias unchanged.
        float* dw4 = d.Up(in.dw0);
        float* db4 = d.Up(in.db0);
        RETURN_IF_ERROR(b.LinearBackward(x, 0, in.k, w, in.n, dy, nullptr, dw4, db4, false));
        o["m0_dw"] = d.Out(dw4, in.n * in.k);
        o["m0_dbias"] = d.Out(db4, in.n);
        return o;
      },
      [](const LinIn& in) {
        Reference r;
        // dx = dy . w: DotRef with "x" = dy [m, n] and "w" = w^T [k, n].
        std::vector<double> wt(in.k * in.n);
        for (int64_t i = 0; i < in.n; ++i)
          for (int64_t j = 0; j < in.k; ++j) wt[j * in.n + i] = in.w[i * in.k + j];
        Expect dx = DotRef(Prec::kF32Dot, in.dy.data(), in.m, in.n, wt, in.k, nullptr, 0);
        r["overwrite_dx"] = dx;
        Expect acc = dx;
        for (size_t i = 0; i < acc.value.size(); ++i) {
          acc.value[i] += in.dx0[i];
          acc.mag[i] += std::abs(in.dx0[i]);
        }
        r["accumulate_dx"] = acc;
        // dw = dw0 + dy^T x.
        Expect dw;
        dw.prec = Prec::kF32Dot;
        dw.value = Widen(in.dw0);
        for (float v : in.dw0) dw.mag.push_back(std::abs(v));
        for (int64_t i = 0; i < in.n; ++i)
          for (int64_t j = 0; j < in.k; ++j)
            for (int64_t t = 0; t < in.m; ++t) {
              const double p = double(in.dy[t * in.n + i]) * in.x[t * in.k + j];
              dw.value[i * in.k + j] += p;
              dw.mag[i * in.k + j] += std::abs(p);
            }
        r["overwrite_dw"] = dw;
        r["dw_only"] = dw;
        Expect db = Valued(Prec::kF32Dot, Widen(in.db0));
        db.mag = Widen(in.db0);
        for (double& v : db.mag) v = std::abs(v);
        for (int64_t t = 0; t < in.m; ++t)
          for (int64_t i = 0; i < in.n; ++i) {
            db.value[i] += in.dy[t * in.n + i];
            db.mag[i] += std::abs(in.dy[t * in.n + i]);
          }
        r["overwrite_dbias"] = db;
        r["m0_dw"] = Exact(Widen(in.dw0));
        r["m0_dbias"] = Exact(Widen(in.db0));
        return r;
      }));

  // RMSNorm training ops.
  struct NormIn {
    int64_t rows, dim;
    float eps;
    std::vector<float> x, w, dy, rstd, dx0, dw0;
  };
  auto make_norm = [](Rng& rng) {
    NormIn in{4, 67, 1e-5f, {}, {}, {}, {}, {}, {}};
    in.x = rng.Vec(in.rows * in.dim, -2.f, 2.f);
    in.w = rng.Vec(in.dim, 0.5f, 1.5f);
    in.dy = rng.Vec(in.rows * in.dim, -1.f, 1.f);
    in.dx0 = rng.Vec(in.rows * in.dim, -1.f, 1.f);
    in.dw0 = rng.Vec(in.dim, -1.f, 1.f);
    for (int64_t r = 0; r < in.rows; ++r) {  // the forward's rstd, rounded to f32
      double ss = 0;
      for (int64_t c = 0; c < in.dim; ++c)
        ss += double(in.x[r * in.dim + c]) * in.x[r * in.dim + c];
      in.rstd.push_back(static_cast<float>(1.0 / std::sqrt(ss / in.dim + in.eps)));
    }
    return in;
  };
  cases.push_back(MakeCase(
      "RmsNormForward", {"RmsNormForward"}, make_norm,
      [](Dev& d, const NormIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        float* y = d.Up(std::vector<float>(in.x.size(), 7.f));
        float* rstd = d.Up(std::vector<float>(in.rows, 7.f));
        RETURN_IF_ERROR(d.b().RmsNormForward(x, in.rows, in.dim, w, in.eps, y, rstd));
        return Outputs{{"y", d.Out(y, in.x.size())}, {"rstd", d.Out(rstd, in.rows)}};
      },
      [](const NormIn& in) {
        std::vector<double> y(in.x.size()), rs(in.rows);
        for (int64_t r = 0; r < in.rows; ++r) {
          double ss = 0;
          for (int64_t c = 0; c < in.dim; ++c)
            ss += double(in.x[r * in.dim + c]) * in.x[r * in.dim + c];
          rs[r] = 1.0 / std::sqrt(ss / in.dim + in.eps);
          for (int64_t c = 0; c < in.dim; ++c)
            y[r * in.dim + c] = in.x[r * in.dim + c] * rs[r] * in.w[c];
        }
        return Reference{{"y", Valued(Prec::kF32Sum, y)}, {"rstd", Valued(Prec::kF32Sum, rs)}};
      }));
  cases.push_back(MakeCase(
      "RmsNormApply", {"RmsNormApply"}, make_norm,
      [](Dev& d, const NormIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        const float* rstd = d.Up(in.rstd);
        float* y = d.Up(std::vector<float>(in.x.size(), 7.f));
        RETURN_IF_ERROR(d.b().RmsNormApply(x, rstd, in.rows, in.dim, w, y));
        return Outputs{{"y", d.Out(y, in.x.size())}};
      },
      [](const NormIn& in) {
        std::vector<double> y(in.x.size());
        for (int64_t r = 0; r < in.rows; ++r)
          for (int64_t c = 0; c < in.dim; ++c)
            y[r * in.dim + c] = double(in.x[r * in.dim + c]) * in.rstd[r] * in.w[c];
        return Reference{{"y", Valued(Prec::kF32Elem, y)}};
      }));
  cases.push_back(MakeCase(
      "RmsNormBackward", {"RmsNormBackward"}, make_norm,
      [](Dev& d, const NormIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        Backend& b = d.b();
        const float* x = d.Up(in.x);
        const float* w = d.Up(in.w);
        const float* rstd = d.Up(in.rstd);
        const float* dy = d.Up(in.dy);
        const size_t nx = in.x.size();
        float* dx = d.Up(std::vector<float>(nx, 7.f));
        float* dw = d.Up(in.dw0);
        RETURN_IF_ERROR(b.RmsNormBackward(x, rstd, in.rows, in.dim, w, dy, dx, dw, false));
        o["dx"] = d.Out(dx, nx);
        o["dweight"] = d.Out(dw, in.dim);
        float* dx2 = d.Up(in.dx0);
        RETURN_IF_ERROR(b.RmsNormBackward(x, rstd, in.rows, in.dim, w, dy, dx2, nullptr, true));
        o["dx_accumulated"] = d.Out(dx2, nx);
        float* dy3 = d.Up(in.dy);  // dx written over dy itself
        RETURN_IF_ERROR(b.RmsNormBackward(x, rstd, in.rows, in.dim, w, dy3, dy3, nullptr, false));
        o["dx_in_place"] = d.Out(dy3, nx);
        return o;
      },
      [](const NormIn& in) {
        const int64_t D = in.dim;
        Expect dx = Valued(Prec::kF32Sum, std::vector<double>(in.x.size()),
                           std::vector<double>(in.x.size()));
        Expect dw = Valued(Prec::kF32Sum, Widen(in.dw0), Widen(in.dw0));
        for (double& v : dw.mag) v = std::abs(v);
        for (int64_t r = 0; r < in.rows; ++r) {
          const double rs = in.rstd[r];
          double s = 0, sa = 0;
          for (int64_t c = 0; c < D; ++c) {
            const double t = double(in.dy[r * D + c]) * in.w[c] * in.x[r * D + c];
            s += t;
            sa += std::abs(t);
          }
          for (int64_t c = 0; c < D; ++c) {
            const int64_t i = r * D + c;
            const double a = rs * in.w[c] * in.dy[i], bterm = in.x[i] * rs * rs * rs / D;
            dx.value[i] = a - bterm * s;
            dx.mag[i] = std::abs(a) + std::abs(bterm) * sa;
            dw.value[c] += double(in.dy[i]) * in.x[i] * rs;
            dw.mag[c] += std::abs(double(in.dy[i]) * in.x[i] * rs);
          }
        }
        Expect acc = dx;
        for (size_t i = 0; i < acc.value.size(); ++i) {
          acc.value[i] += in.dx0[i];
          acc.mag[i] += std::abs(in.dx0[i]);
        }
        return Reference{{"dx", dx}, {"dweight", dw}, {"dx_accumulated", acc}, {"dx_in_place", dx}};
      }));

  // SiluMulBackward.
  struct SiluIn {
    std::vector<float> g, u, dout;
  };
  constexpr int64_t kSiluN = 1003;
  cases.push_back(MakeCase(
      "SiluMulBackward", {"SiluMulBackward"},
      [](Rng& rng) {
        return SiluIn{rng.Vec(kSiluN, -8.f, 8.f), rng.Vec(kSiluN, -2.f, 2.f),
                      rng.Vec(kSiluN, -1.f, 1.f)};
      },
      [](Dev& d, const SiluIn& in) -> absl::StatusOr<Outputs> {
        const float* g = d.Up(in.g);
        const float* u = d.Up(in.u);
        const float* dout = d.Up(in.dout);
        float* dg = d.Up(std::vector<float>(kSiluN, 7.f));
        float* du = d.Up(std::vector<float>(kSiluN, 7.f));
        RETURN_IF_ERROR(d.b().SiluMulBackward(g, u, dout, kSiluN, dg, du));
        return Outputs{{"dgate", d.Out(dg, kSiluN)}, {"dup", d.Out(du, kSiluN)}};
      },
      [](const SiluIn& in) {
        std::vector<double> dg(kSiluN), dgm(kSiluN), du(kSiluN);
        for (int64_t i = 0; i < kSiluN; ++i) {
          const double g = in.g[i], s = 1.0 / (1.0 + std::exp(-g)),
                       k = double(in.dout[i]) * in.u[i];
          dg[i] = k * s * (1.0 + g * (1.0 - s));
          dgm[i] = std::abs(k) * s * (1.0 + std::abs(g) * (1.0 - s));
          du[i] = double(in.dout[i]) * g * s;
        }
        return Reference{{"dgate", Valued(Prec::kF32Elem, dg, dgm)},
                         {"dup", Valued(Prec::kF32Elem, du)}};
      }));

  // EmbeddingBackward: repeated ids accumulate.
  struct EmbBwdIn {
    int64_t vocab, dim;
    std::vector<int32_t> ids;
    std::vector<float> dout, table0;
  };
  cases.push_back(MakeCase(
      "EmbeddingBackward", {"EmbeddingBackward"},
      [](Rng& rng) {
        EmbBwdIn in{13, 37, {}, {}, {}};
        for (int i = 0; i < 11; ++i) in.ids.push_back(rng.Int(0, 12));
        in.ids[3] = in.ids[7] = in.ids[9] = 4;
        in.ids[10] = 12;
        in.dout = rng.Vec(11 * in.dim, -1.f, 1.f);
        in.table0 = rng.Vec(in.vocab * in.dim, -1.f, 1.f);
        return in;
      },
      [](Dev& d, const EmbBwdIn& in) -> absl::StatusOr<Outputs> {
        const int32_t* ids = d.Up(in.ids);
        const float* dout = d.Up(in.dout);
        float* t = d.Up(in.table0);
        RETURN_IF_ERROR(d.b().EmbeddingBackward(ids, in.ids.size(), in.dim, dout, t));
        return Outputs{{"dtable", d.Out(t, in.table0.size())}};
      },
      [](const EmbBwdIn& in) {
        Expect e = Valued(Prec::kF32Sum, Widen(in.table0), Widen(in.table0));
        for (double& v : e.mag) v = std::abs(v);
        for (size_t i = 0; i < in.ids.size(); ++i)
          for (int64_t c = 0; c < in.dim; ++c) {
            e.value[in.ids[i] * in.dim + c] += in.dout[i * in.dim + c];
            e.mag[in.ids[i] * in.dim + c] += std::abs(in.dout[i * in.dim + c]);
          }
        return Reference{{"dtable", e}};
      }));
  return cases;
}

// ---- Packed-sequence attention (training) ---------------------------------------

struct AttnIn {
  int64_t n, H, KvH, D, window;
  float scale;
  std::vector<int32_t> doc;
  std::vector<float> q, k, v, dout;
  std::vector<float> out_f32, lse_f32;  // the f64 forward rounded: the backward's inputs
};

struct AttnF64 {
  std::vector<double> out, out_mag, lse, lse_mag;
  std::vector<double> dq, dq_mag, dk, dk_mag, dv, dv_mag;
};

// f64 forward and analytic backward of document-masked, windowed GQA
// attention (P = softmax(scale q k^T) over visible keys; dV = P^T dO;
// dS = P (dP - rowsum(P dP)), dP = dO V^T; dQ = scale dS K; dK = scale dS^T Q).
AttnF64 AttentionF64(const AttnIn& in, const std::vector<float>& q, const std::vector<float>& k,
                     const std::vector<float>& v) {
  const int64_t n = in.n, H = in.H, D = in.D, QD = H * D, KvD = in.KvH * D, group = H / in.KvH;
  AttnF64 r;
  r.out.assign(n * QD, 0);
  r.out_mag.assign(n * QD, 0);
  r.lse.assign(H * n, 0);
  r.lse_mag.assign(H * n, 0);
  r.dq.assign(n * QD, 0);
  r.dq_mag.assign(n * QD, 0);
  r.dk.assign(n * KvD, 0);
  r.dk_mag.assign(n * KvD, 0);
  r.dv.assign(n * KvD, 0);
  r.dv_mag.assign(n * KvD, 0);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t kvh = h / group;
    for (int64_t i = 0; i < n; ++i) {
      int64_t lo = in.doc[i];
      if (in.window > 0) lo = std::max<int64_t>(lo, i - in.window + 1);
      const int64_t cnt = i - lo + 1;
      std::vector<double> s(cnt), sa(cnt), p(cnt), dp(cnt), dpa(cnt);
      const float* qi = &q[i * QD + h * D];
      const float* doi = &in.dout[i * QD + h * D];
      for (int64_t j = lo; j <= i; ++j) {
        double dot = 0, adot = 0, dd = 0, add = 0;
        for (int64_t c = 0; c < D; ++c) {
          dot += double(qi[c]) * k[j * KvD + kvh * D + c];
          adot += std::abs(double(qi[c]) * k[j * KvD + kvh * D + c]);
          dd += double(doi[c]) * v[j * KvD + kvh * D + c];
          add += std::abs(double(doi[c]) * v[j * KvD + kvh * D + c]);
        }
        s[j - lo] = dot * in.scale;
        sa[j - lo] = adot * in.scale;
        dp[j - lo] = dd;
        dpa[j - lo] = add;
      }
      const double l = LogSumExp(s);
      double smax = 0, delta = 0, delta_a = 0;
      for (int64_t t = 0; t < cnt; ++t) {
        p[t] = std::exp(s[t] - l);
        smax = std::max(smax, sa[t]);
        delta += p[t] * dp[t];
        delta_a += p[t] * dpa[t];
      }
      r.lse[h * n + i] = l;
      r.lse_mag[h * n + i] = std::abs(l) + smax;
      for (int64_t j = lo; j <= i; ++j) {
        const double pj = p[j - lo];
        const double ds = pj * (dp[j - lo] - delta);
        const double ds_a = pj * (dpa[j - lo] + delta_a + sa[j - lo]);
        for (int64_t c = 0; c < D; ++c) {
          const double vj = v[j * KvD + kvh * D + c], kj = k[j * KvD + kvh * D + c];
          r.out[i * QD + h * D + c] += pj * vj;
          r.out_mag[i * QD + h * D + c] += pj * std::abs(vj) * (1 + sa[j - lo]);
          r.dv[j * KvD + kvh * D + c] += pj * doi[c];
          r.dv_mag[j * KvD + kvh * D + c] += pj * std::abs(doi[c]) * (1 + sa[j - lo]);
          r.dq[i * QD + h * D + c] += in.scale * ds * kj;
          r.dq_mag[i * QD + h * D + c] += in.scale * ds_a * std::abs(kj);
          r.dk[j * KvD + kvh * D + c] += in.scale * ds * qi[c];
          r.dk_mag[j * KvD + kvh * D + c] += in.scale * ds_a * std::abs(qi[c]);
        }
      }
    }
  }
  return r;
}

// docs: lengths of the packed documents (summing to n).
OpCase AttentionTrainCase(const std::string& name, int64_t H, int64_t KvH, int64_t D,
                          std::vector<int64_t> docs, int64_t window) {
  return MakeCase(
      name, {"AttentionForward", "AttentionBackward"},
      [=](Rng& rng) {
        AttnIn in;
        in.H = H;
        in.KvH = KvH;
        in.D = D;
        in.window = window;
        in.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
        for (int64_t len : docs) {
          const int32_t first = static_cast<int32_t>(in.doc.size());
          for (int64_t t = 0; t < len; ++t) in.doc.push_back(first);
        }
        in.n = in.doc.size();
        in.q = rng.Vec(in.n * H * D, -1.5f, 1.5f);
        in.k = rng.Vec(in.n * KvH * D, -1.5f, 1.5f);
        in.v = rng.Vec(in.n * KvH * D, -1.f, 1.f);
        in.dout = rng.Vec(in.n * H * D, -1.f, 1.f);
        const AttnF64 f = AttentionF64(in, in.q, in.k, in.v);
        for (double x : f.out) in.out_f32.push_back(static_cast<float>(x));
        for (double x : f.lse) in.lse_f32.push_back(static_cast<float>(x));
        return in;
      },
      [](Dev& d, const AttnIn& in) -> absl::StatusOr<Outputs> {
        Backend& b = d.b();
        const AttentionShape shape{in.H, in.KvH, in.D};
        const float* q = d.Up(in.q);
        const float* k = d.Up(in.k);
        const float* v = d.Up(in.v);
        const int32_t* doc = d.Up(in.doc);
        const size_t nq = in.q.size(), nk = in.k.size();
        float* out = d.Up(std::vector<float>(nq, 7.f));
        float* lse = d.Up(std::vector<float>(in.H * in.n, 7.f));
        RETURN_IF_ERROR(
            b.AttentionForward(q, k, v, doc, in.n, shape, in.scale, in.window, out, lse));
        // The backward from backend-independent inputs (the f64 forward
        // rounded to f32), so a forward error is not counted twice.
        const float* out_in = d.Up(in.out_f32);
        const float* lse_in = d.Up(in.lse_f32);
        const float* dout = d.Up(in.dout);
        float* dq = d.Up(std::vector<float>(nq, 7.f));
        float* dk = d.Up(std::vector<float>(nk, 7.f));
        float* dv = d.Up(std::vector<float>(nk, 7.f));
        RETURN_IF_ERROR(b.AttentionBackward(q, k, v, doc, in.n, shape, in.scale, in.window, out_in,
                                            lse_in, dout, dq, dk, dv));
        return Outputs{{"out", d.Out(out, nq)},
                       {"lse", d.Out(lse, in.H * in.n)},
                       {"dq", d.Out(dq, nq)},
                       {"dk", d.Out(dk, nk)},
                       {"dv", d.Out(dv, nk)}};
      },
      [](const AttnIn& in) {
        AttnF64 f = AttentionF64(in, in.q, in.k, in.v);
        return Reference{{"out", Valued(Prec::kAttention, f.out, f.out_mag)},
                         {"lse", Valued(Prec::kAttention, f.lse, f.lse_mag)},
                         {"dq", Valued(Prec::kAttention, f.dq, f.dq_mag)},
                         {"dk", Valued(Prec::kAttention, f.dk, f.dk_mag)},
                         {"dv", Valued(Prec::kAttention, f.dv, f.dv_mag)}};
      });
}

std::vector<OpCase> AttentionTrainCases() {
  std::vector<OpCase> cases;
  // Three documents, one of a single token; GQA 4/2, head_dim 12.
  cases.push_back(AttentionTrainCase("AttentionTrain/docs_gqa", 4, 2, 12, {9, 1, 13}, 0));
  cases.push_back(AttentionTrainCase("AttentionTrain/docs_gqa_window5", 4, 2, 12, {9, 1, 13}, 5));
  // Past the CPU's 64-row query / key blocks, MQA, head_dim 40.
  cases.push_back(AttentionTrainCase("AttentionTrain/long_mqa", 3, 1, 40, {50, 41}, 0));
  return cases;
}

// ============================================================================
// The fused LM-head loss.

struct LossIn {
  int64_t n, d, vocab, td = 0, k = 0;
  TeacherSignal::Kind kind = TeacherSignal::Kind::kNone;
  LossOptions opt;
  float grad_scale;
  std::vector<float> h, w, th, tw, lp, dw0;
  std::vector<int32_t> targets, ids;
};

struct RowLossF64 {
  double ce = 0, kd = 0, lmax = 0;  // lmax: largest |log P - log Q| (for magnitudes)
  std::vector<double> p1, pt,
      qt;  // student at T = 1, at T, teacher at T (per vocab id; 0 in the tail)
};

constexpr double kLogFloor = -87.49823353377374;  // log(1e-38)

// The bucket divergence of lm_head_loss.h (teacher logs floored), times T^2 by the caller.
double Divergence(const LossOptions& o, const std::vector<double>& logp,
                  const std::vector<double>& logq_in) {
  std::vector<double> logq = logq_in;
  for (double& v : logq) v = std::max(v, kLogFloor);
  double fwd = 0, rev = 0;
  for (size_t b = 0; b < logp.size(); ++b) {
    const double p = std::exp(logp[b]), q = std::exp(logq_in[b]);
    if (q > 0) fwd += q * (logq[b] - logp[b]);
    if (p > 0) rev += p * (logp[b] - logq[b]);
  }
  switch (o.divergence) {
    case KdDivergence::kForwardKl:
      return fwd;
    case KdDivergence::kReverseKl:
      return rev;
    case KdDivergence::kJsd: {
      const double beta = o.jsd_beta;
      if (beta == 0) return fwd;
      if (beta == 1) return rev;
      double a = 0, c = 0;
      for (size_t b = 0; b < logp.size(); ++b) {
        const double p = std::exp(logp[b]), q = std::exp(logq_in[b]);
        const double m = beta * q + (1 - beta) * p;
        const double lm = std::log(m);
        if (q > 0) a += q * (logq[b] - lm);
        if (p > 0) c += p * (logp[b] - lm);
      }
      return beta * a + (1 - beta) * c;
    }
  }
  return 0;
}

// CE and KD (with T^2) of one unmasked row from its student logits z.
RowLossF64 RowLoss(const LossIn& in, int64_t i, const std::vector<double>& z) {
  RowLossF64 r;
  const double T = in.opt.temperature;
  const int64_t V = in.vocab;
  r.ce = LogSumExp(z) - z[in.targets[i]];
  const std::vector<double> lp1 = LogSoftmax(z, 1.0), lpt = LogSoftmax(z, T);
  r.p1.resize(V);
  r.pt.resize(V);
  r.qt.assign(V, 0.0);
  for (int64_t v = 0; v < V; ++v) {
    r.p1[v] = std::exp(lp1[v]);
    r.pt[v] = std::exp(lpt[v]);
  }
  if (!(in.opt.kd_weight > 0) || in.kind == TeacherSignal::Kind::kNone) return r;
  std::vector<double> logp, logq;
  if (in.kind == TeacherSignal::Kind::kDense) {
    std::vector<double> zt(V);
    for (int64_t v = 0; v < V; ++v) {
      double s = 0;
      for (int64_t c = 0; c < in.td; ++c) s += double(in.th[i * in.td + c]) * in.tw[v * in.td + c];
      zt[v] = s;
    }
    logp = lpt;
    logq = LogSoftmax(zt, T);
    for (int64_t v = 0; v < V; ++v) r.qt[v] = std::exp(logq[v]);
  } else {
    std::vector<int32_t> id;
    std::vector<double> l1;
    for (int64_t s = 0; s < in.k; ++s) {
      if (in.ids[i * in.k + s] < 0) continue;
      id.push_back(in.ids[i * in.k + s]);
      l1.push_back(in.lp[i * in.k + s]);
    }
    const int64_t kv = id.size();
    if (in.opt.topk_tail == TopKTail::kTailBucket) {
      // Buckets: the kv ids, then the tail.
      double tail = 0;
      std::vector<bool> in_top(V, false);
      for (int32_t j : id) in_top[j] = true;
      for (int64_t v = 0; v < V; ++v) {
        if (!in_top[v]) tail += r.pt[v];
      }
      for (int64_t b = 0; b < kv; ++b) logp.push_back(lpt[id[b]]);
      logp.push_back(std::log(tail));
      double qsum = 0;
      for (double l : l1) qsum += std::exp(l);
      const double qtail = 1.0 - qsum, tail_ids = static_cast<double>(V - kv);
      for (double l : l1) logq.push_back(l / T);
      logq.push_back(std::log(tail_ids) + (std::log(qtail) - std::log(tail_ids)) / T);
      const double norm = LogSumExp(logq);
      for (double& l : logq) l -= norm;
      for (int64_t b = 0; b < kv; ++b) r.qt[id[b]] = std::exp(logq[b]);
    } else {
      std::vector<double> zs;
      for (int64_t b = 0; b < kv; ++b) zs.push_back(z[id[b]]);
      logp = LogSoftmax(zs, T);
      logq = LogSoftmax(l1, T);
      for (int64_t b = 0; b < kv; ++b) r.qt[id[b]] = std::exp(logq[b]);
    }
  }
  r.kd = T * T * Divergence(in.opt, logp, logq);
  for (size_t b = 0; b < logp.size(); ++b) {
    r.lmax = std::max(r.lmax, std::abs(logp[b] - std::max(logq[b], kLogFloor)));
  }
  return r;
}

double RowTotal(const LossIn& in, const RowLossF64& r) {
  return in.opt.ce_weight * r.ce + (in.opt.kd_weight > 0 ? in.opt.kd_weight * r.kd : 0.0);
}

struct LossF64 {
  double loss = 0, ce = 0, kd = 0, loss_mag = 0, ce_mag = 0, kd_mag = 0;
  double loss_aux = 0, ce_aux = 0, kd_aux = 0;  // sensitivity x logit magnitude
  int64_t tokens = 0;
  std::vector<double> dh, dh_mag, dw, dw_mag;  // dw includes dw0
};

// Losses, and dh / dw from d(row loss)/d(logits) by a 4-point central
// difference in f64 (step 1e-3: truncation ~1e-12, rounding ~1e-12).
LossF64 LossReference(const LossIn& in) {
  const int64_t n = in.n, d = in.d, V = in.vocab;
  const double T = in.opt.temperature, gs = in.grad_scale;
  const double cw = in.opt.ce_weight, kw = in.opt.kd_weight > 0 ? in.opt.kd_weight : 0.0;
  LossF64 r;
  r.dh.assign(n * d, 0);
  r.dh_mag.assign(n * d, 0);
  r.dw = Widen(in.dw0);
  r.dw_mag.resize(V * d);
  for (int64_t i = 0; i < V * d; ++i) r.dw_mag[i] = std::abs(in.dw0[i]);
  for (int64_t i = 0; i < n; ++i) {
    if (in.targets[i] < 0) continue;
    ++r.tokens;
    std::vector<double> z(V);
    double zmag = 0;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < d; ++c) {
        s += double(in.h[i * d + c]) * in.w[v * d + c];
        a += std::abs(double(in.h[i * d + c]) * in.w[v * d + c]);
      }
      z[v] = s;
      zmag = std::max(zmag, a);
    }
    double ztmag = 0;
    if (in.kind == TeacherSignal::Kind::kDense) {
      for (int64_t v = 0; v < V; ++v) {
        double a = 0;
        for (int64_t c = 0; c < in.td; ++c)
          a += std::abs(double(in.th[i * in.td + c]) * in.tw[v * in.td + c]);
        ztmag = std::max(ztmag, a);
      }
    }
    const RowLossF64 row = RowLoss(in, i, z);
    r.ce += row.ce;
    r.kd += row.kd;
    r.loss += RowTotal(in, row);
    const double kd_sens = 2 * T * (1 + row.lmax);
    r.ce_mag += std::abs(row.ce);
    r.kd_mag += std::abs(row.kd);
    r.loss_mag += cw * std::abs(row.ce) + kw * std::abs(row.kd);
    r.ce_aux += 2 * zmag;
    r.kd_aux += kd_sens * (zmag + ztmag);
    r.loss_aux += cw * 2 * zmag + kw * kd_sens * (zmag + ztmag);
    // d(row total)/dz.
    std::vector<double> dz(V), dz_mag(V);
    const double step = 1e-3;
    for (int64_t v = 0; v < V; ++v) {
      auto f = [&](double delta) {
        std::vector<double> zz = z;
        zz[v] += delta;
        return RowTotal(in, RowLoss(in, i, zz));
      };
      dz[v] = gs * (-f(2 * step) + 8 * f(step) - 8 * f(-step) + f(-2 * step)) / (12 * step);
      dz_mag[v] = std::abs(dz[v]) +
                  gs * (cw + kw * T * (1 + row.lmax)) *
                      (row.p1[v] + row.pt[v] + row.qt[v] + (v == in.targets[i] ? 1.0 : 0.0));
    }
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t c = 0; c < d; ++c) {
        r.dh[i * d + c] += dz[v] * in.w[v * d + c];
        r.dh_mag[i * d + c] += dz_mag[v] * std::abs(in.w[v * d + c]);
        r.dw[v * d + c] += dz[v] * in.h[i * d + c];
        r.dw_mag[v * d + c] += dz_mag[v] * std::abs(in.h[i * d + c]);
      }
    }
  }
  return r;
}

struct LossSpec {
  std::string name;
  TeacherSignal::Kind kind;
  LossOptions opt;
};

OpCase LossCase(const LossSpec& spec) {
  return MakeCase(
      "LmHeadLoss/" + spec.name, {"LmHeadLoss"},
      [spec](Rng& rng) {
        LossIn in;
        in.n = 7;
        in.d = 24;
        in.vocab = 53;
        in.kind = spec.kind;
        in.opt = spec.opt;
        in.h = rng.Vec(in.n * in.d, -1.f, 1.f);
        in.w = rng.Vec(in.vocab * in.d, -0.5f, 0.5f);
        in.dw0 = rng.Vec(in.vocab * in.d, -0.1f, 0.1f);
        for (int64_t i = 0; i < in.n; ++i) in.targets.push_back(rng.Int(0, in.vocab - 1));
        in.targets[2] = -1;  // a masked position
        in.grad_scale = 1.f / 6.f;
        if (spec.kind == TeacherSignal::Kind::kDense) {
          in.td = 16;
          in.th = rng.Vec(in.n * in.td, -1.f, 1.f);
          in.tw = rng.Vec(in.vocab * in.td, -1.f, 1.f);
        } else if (spec.kind == TeacherSignal::Kind::kTopK) {
          // The teacher's top-5 of a random distribution (sum < 1: a tail),
          // with an empty slot in some rows.
          in.k = 5;
          for (int64_t i = 0; i < in.n; ++i) {
            std::vector<double> zt(in.vocab);
            for (double& x : zt) x = rng.Normal(2.f);
            const std::vector<double> l = LogSoftmax(zt, 1.0);
            std::vector<int32_t> order(in.vocab);
            for (int32_t v = 0; v < in.vocab; ++v) order[v] = v;
            std::sort(order.begin(), order.end(),
                      [&](int32_t a, int32_t b) { return l[a] > l[b]; });
            for (int64_t s = 0; s < in.k; ++s) {
              const bool empty = (i % 3 == 1) && s == in.k - 1;
              in.ids.push_back(empty ? -1 : order[s]);
              in.lp.push_back(empty ? 0.f : static_cast<float>(l[order[s]]));
            }
          }
        }
        return in;
      },
      [](Dev& d, const LossIn& in) -> absl::StatusOr<Outputs> {
        Backend& b = d.b();
        const float* h = d.Up(in.h);
        const float* w = d.Up(in.w);
        const int32_t* targets = d.Up(in.targets);
        TeacherSignal teacher;
        if (in.kind == TeacherSignal::Kind::kDense) {
          teacher = TeacherSignal::Dense(d.Up(in.th), in.td, d.Up(in.tw), in.vocab);
        } else if (in.kind == TeacherSignal::Kind::kTopK) {
          teacher = TeacherSignal::TopK(d.Up(in.ids), d.Up(in.lp), in.k);
        }
        float* dh = d.Up(std::vector<float>(in.n * in.d, 7.f));  // overwritten, masked rows too
        float* dw = d.Up(in.dw0);                                // accumulated
        ASSIGN_OR_RETURN(LossResult r, b.LmHeadLoss(h, in.n, in.d, w, in.vocab, targets, teacher,
                                                    in.opt, in.grad_scale, dh, dw));
        Outputs o;
        o["loss_sum"] = {r.loss_sum};
        o["ce_sum"] = {r.ce_sum};
        o["kd_sum"] = {r.kd_sum};
        o["tokens"] = {static_cast<double>(r.tokens)};
        o["dh"] = d.Out(dh, in.n * in.d);
        o["dw"] = d.Out(dw, in.vocab * in.d);
        // Without a backward (dh, dw null): the same sums.
        ASSIGN_OR_RETURN(LossResult f, b.LmHeadLoss(h, in.n, in.d, w, in.vocab, targets, teacher,
                                                    in.opt, in.grad_scale, nullptr, nullptr));
        o["loss_sum_forward_only"] = {f.loss_sum};
        // Only dh (dw null), only dw (dh null).
        float* dh2 = d.Up(std::vector<float>(in.n * in.d, 7.f));
        RETURN_IF_ERROR(b.LmHeadLoss(h, in.n, in.d, w, in.vocab, targets, teacher, in.opt,
                                     in.grad_scale, dh2, nullptr)
                            .status());
        o["dh_without_dw"] = d.Out(dh2, in.n * in.d);
        float* dw2 = d.Up(in.dw0);
        RETURN_IF_ERROR(b.LmHeadLoss(h, in.n, in.d, w, in.vocab, targets, teacher, in.opt,
                                     in.grad_scale, nullptr, dw2)
                            .status());
        o["dw_without_dh"] = d.Out(dw2, in.vocab * in.d);
        return o;
      },
      [](const LossIn& in) {
        const LossF64 f = LossReference(in);
        Reference r;
        auto sum = [](double v, double mag, double aux) {
          Expect e = Valued(Prec::kLossSum, {v}, {mag});
          e.aux = {aux};
          return e;
        };
        r["loss_sum"] = sum(f.loss, f.loss_mag, f.loss_aux);
        r["loss_sum_forward_only"] = r["loss_sum"];
        r["ce_sum"] = sum(f.ce, f.ce_mag, f.ce_aux);
        r["kd_sum"] = sum(f.kd, f.kd_mag, f.kd_aux);
        r["tokens"] = Exact({static_cast<double>(f.tokens)});
        r["dh"] = Valued(Prec::kLoss, f.dh, f.dh_mag);
        r["dh_without_dw"] = r["dh"];
        r["dw"] = Valued(Prec::kLoss, f.dw, f.dw_mag);
        r["dw_without_dh"] = r["dw"];
        return r;
      });
}

std::vector<OpCase> LossCases() {
  using K = TeacherSignal::Kind;
  std::vector<LossSpec> specs;
  {
    LossOptions o;  // CE only, chunks of 2 rows
    o.row_chunk = 2;
    specs.push_back({"ce", K::kNone, o});
  }
  {
    LossOptions o;
    o.ce_weight = 0.5f;
    o.kd_weight = 1.f;
    o.divergence = KdDivergence::kForwardKl;
    specs.push_back({"dense_forward_kl", K::kDense, o});
  }
  {
    LossOptions o;
    o.kd_weight = 0.5f;
    o.divergence = KdDivergence::kReverseKl;
    o.temperature = 2.f;
    o.row_chunk = 3;
    specs.push_back({"dense_reverse_kl_T2", K::kDense, o});
  }
  {
    LossOptions o;
    o.ce_weight = 0.f;
    o.kd_weight = 1.f;
    o.divergence = KdDivergence::kJsd;
    o.jsd_beta = 0.3f;
    o.temperature = 1.5f;
    specs.push_back({"dense_jsd_T1_5", K::kDense, o});
  }
  {
    LossOptions o;
    o.ce_weight = 0.5f;
    o.kd_weight = 1.f;
    o.divergence = KdDivergence::kForwardKl;
    specs.push_back({"topk_tail_forward_kl", K::kTopK, o});
  }
  {
    LossOptions o;
    o.kd_weight = 0.7f;
    o.divergence = KdDivergence::kJsd;
    o.jsd_beta = 0.5f;
    o.temperature = 2.f;
    specs.push_back({"topk_tail_jsd_T2", K::kTopK, o});
  }
  {
    LossOptions o;
    o.kd_weight = 1.f;
    o.divergence = KdDivergence::kReverseKl;
    o.topk_tail = TopKTail::kRenormalize;
    specs.push_back({"topk_renormalize_reverse_kl", K::kTopK, o});
  }
  std::vector<OpCase> cases;
  for (const LossSpec& s : specs) cases.push_back(LossCase(s));
  return cases;
}

// ============================================================================
// Optimizer.

std::vector<OpCase> OptimizerCases() {
  std::vector<OpCase> cases;
  struct AdamIn {
    std::vector<float> p, g1, g2, m, v;
    AdamWStepParams s1, s2;
  };
  constexpr int64_t kN = 1005;
  cases.push_back(MakeCase(
      "AdamWStep", {"AdamWStep"},
      [](Rng& rng) {
        AdamIn in;
        in.p = rng.Vec(kN, -1.f, 1.f);
        in.g1 = rng.Vec(kN, -0.1f, 0.1f);
        in.g2 = rng.Vec(kN, -0.1f, 0.1f);
        in.m = rng.Vec(kN, -0.01f, 0.01f);
        in.v = rng.Vec(kN, 0.f, 1e-3f);
        in.s1.lr = 1e-3f;
        in.s1.weight_decay = 0.1f;
        in.s1.step = 3;
        in.s2.lr = 2e-3f;
        in.s2.beta1 = 0.8f;
        in.s2.beta2 = 0.95f;
        in.s2.eps = 1e-6f;
        in.s2.weight_decay = 0;
        in.s2.step = 4;
        return in;
      },
      [](Dev& d, const AdamIn& in) -> absl::StatusOr<Outputs> {
        float* p = d.Up(in.p);
        float* m = d.Up(in.m);
        float* v = d.Up(in.v);
        const float* g1 = d.Up(in.g1);
        const float* g2 = d.Up(in.g2);
        RETURN_IF_ERROR(d.b().AdamWStep(p, g1, m, v, kN, in.s1));
        Outputs o{{"params_1", d.Out(p, kN)}, {"m_1", d.Out(m, kN)}, {"v_1", d.Out(v, kN)}};
        RETURN_IF_ERROR(d.b().AdamWStep(p, g2, m, v, kN, in.s2));
        o["params_2"] = d.Out(p, kN);
        o["m_2"] = d.Out(m, kN);
        o["v_2"] = d.Out(v, kN);
        return o;
      },
      [](const AdamIn& in) {
        // torch.optim.AdamW, single tensor, in f64.
        std::vector<double> p = Widen(in.p), m = Widen(in.m), v = Widen(in.v);
        std::vector<double> pm(kN), mm(kN), vm(kN);
        Reference r;
        auto step = [&](const std::vector<float>& g, const AdamWStepParams& s,
                        const std::string& tag) {
          const double b1 = s.beta1, b2 = s.beta2, lr = s.lr, eps = s.eps, wd = s.weight_decay;
          const double bc1 = 1 - std::pow(b1, s.step), bc2 = 1 - std::pow(b2, s.step);
          for (int64_t i = 0; i < kN; ++i) {
            const double p0 = p[i];
            if (wd != 0) p[i] *= 1 - lr * wd;
            const double m0 = m[i];
            m[i] = m0 + (1 - b1) * (g[i] - m0);
            mm[i] = std::abs(m0) + (1 - b1) * (std::abs(g[i]) + std::abs(m0));
            v[i] = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
            vm[i] = std::abs(v[i]);
            const double upd = lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
            p[i] -= upd;
            pm[i] = std::abs(p0) + std::abs(upd);
          }
          r["params_" + tag] = Valued(Prec::kF32Elem, p, pm);
          r["m_" + tag] = Valued(Prec::kF32Elem, m, mm);
          r["v_" + tag] = Valued(Prec::kF32Elem, v, vm);
        };
        step(in.g1, in.s1, "1");
        step(in.g2, in.s2, "2");
        return r;
      }));

  struct SqIn {
    std::vector<float> x;
  };
  cases.push_back(MakeCase(
      "SumSquares", {"SumSquares"},
      // Past the CPU's 2^15-element blocks.
      [](Rng& rng) { return SqIn{rng.Vec(70001, -3.f, 3.f)}; },
      [](Dev& d, const SqIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        Outputs o;
        for (int64_t n : {int64_t{0}, int64_t{5}, static_cast<int64_t>(in.x.size())}) {
          ASSIGN_OR_RETURN(double s, d.b().SumSquares(x, n));
          o["n" + std::to_string(n)] = {s};
        }
        return o;
      },
      [](const SqIn& in) {
        Reference r;
        for (int64_t n : {int64_t{0}, int64_t{5}, static_cast<int64_t>(in.x.size())}) {
          double s = 0;
          for (int64_t i = 0; i < n; ++i) s += double(in.x[i]) * in.x[i];
          r["n" + std::to_string(n)] = Valued(Prec::kF64Sum, {s});
        }
        return r;
      }));
  return cases;
}

// ============================================================================
// Calibration linear algebra.

// SPD n x n: B B^T / n + I (eigenvalues in [1, ~5]).
std::vector<double> RandomSpd(int64_t n, Rng& rng) {
  std::vector<double> b(n * n), a(n * n, 0.0);
  for (double& x : b) x = rng.Uniform(-1.f, 1.f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < n; ++t) s += b[i * n + t] * b[j * n + t];
      a[i * n + j] = s / n + (i == j ? 1.0 : 0.0);
    }
  return a;
}

// Plain Cholesky: lower L (zeros above), a = L L^T.
std::vector<double> CholeskyF64(const std::vector<double>& a, int64_t n) {
  std::vector<double> l(n * n, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double s = a[j * n + j];
    for (int64_t t = 0; t < j; ++t) s -= l[j * n + t] * l[j * n + t];
    l[j * n + j] = std::sqrt(s);
    for (int64_t i = j + 1; i < n; ++i) {
      double x = a[i * n + j];
      for (int64_t t = 0; t < j; ++t) x -= l[i * n + t] * l[j * n + t];
      l[i * n + j] = x / l[j * n + j];
    }
  }
  return l;
}

// a^-1 = L^-T L^-1.
std::vector<double> InverseF64(const std::vector<double>& a, int64_t n) {
  const std::vector<double> l = CholeskyF64(a, n);
  std::vector<double> li(n * n, 0.0);  // L^-1, lower
  for (int64_t j = 0; j < n; ++j) {
    li[j * n + j] = 1.0 / l[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      double s = 0;
      for (int64_t t = j; t < i; ++t) s += l[i * n + t] * li[t * n + j];
      li[i * n + j] = -s / l[i * n + i];
    }
  }
  std::vector<double> inv(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = std::max(i, j); t < n; ++t) s += li[t * n + i] * li[t * n + j];
      inv[i * n + j] = s;
    }
  return inv;
}

std::vector<OpCase> LinalgCases() {
  std::vector<OpCase> cases;

  struct GramIn {
    int64_t rows, cols;
    std::vector<float> x;
    std::vector<double> h0;
  };
  auto make_gram = [](int64_t rows, int64_t cols) {
    return [=](Rng& rng) {
      GramIn in{rows, cols, rng.Vec(rows * cols, -2.f, 2.f), {}};
      in.h0.assign(cols * cols, 0.0);
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j <= i; ++j)
          in.h0[i * cols + j] = in.h0[j * cols + i] = rng.Uniform(-1.f, 1.f);
      return in;
    };
  };
  auto gram_ref = [](const GramIn& in, Prec prec, bool f32_start) {
    Expect e;
    e.prec = prec;
    for (double v : in.h0) {
      const double v0 = f32_start ? static_cast<float>(v) : v;
      e.value.push_back(v0);
      e.mag.push_back(std::abs(v0));
    }
    for (int64_t r = 0; r < in.rows; ++r)
      for (int64_t i = 0; i < in.cols; ++i)
        for (int64_t j = 0; j < in.cols; ++j) {
          const double p = double(in.x[r * in.cols + i]) * in.x[r * in.cols + j];
          e.value[i * in.cols + j] += p;
          e.mag[i * in.cols + j] += std::abs(p);
        }
    return e;
  };
  // Rows past the CPU's 256-row Gram blocks.
  cases.push_back(MakeCase(
      "AccumulateGram/f64", {"AccumulateGram/f64"}, make_gram(300, 11),
      [](Dev& d, const GramIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        double* h = d.Up(in.h0);
        RETURN_IF_ERROR(d.b().AccumulateGram(x, in.rows, in.cols, h));
        return Outputs{{"h", d.Out(h, in.h0.size())}};
      },
      [gram_ref](const GramIn& in) {
        return Reference{{"h", gram_ref(in, Prec::kF64Sum, false)}};
      }));
  cases.push_back(MakeCase(
      "AccumulateGram/f32", {"AccumulateGram/f32"}, make_gram(40, 19),
      [](Dev& d, const GramIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        std::vector<float> h0(in.h0.begin(), in.h0.end());
        float* h = d.Up(h0);
        RETURN_IF_ERROR(d.b().AccumulateGram(x, in.rows, in.cols, h));
        return Outputs{{"h", d.Out(h, h0.size())}};
      },
      [gram_ref](const GramIn& in) {
        return Reference{{"h", gram_ref(in, Prec::kF32Dot, true)}};
      }));
  cases.push_back(MakeCase(
      "AccumulateColumnSquares", {"AccumulateColumnSquares"}, make_gram(300, 13),
      [](Dev& d, const GramIn& in) -> absl::StatusOr<Outputs> {
        const float* x = d.Up(in.x);
        std::vector<double> sq0(in.h0.begin(), in.h0.begin() + in.cols);
        for (double& v : sq0) v = std::abs(v);
        double* sq = d.Up(sq0);
        RETURN_IF_ERROR(d.b().AccumulateColumnSquares(x, in.rows, in.cols, sq));
        return Outputs{{"sq", d.Out(sq, in.cols)}};
      },
      [](const GramIn& in) {
        std::vector<double> sq(in.h0.begin(), in.h0.begin() + in.cols);
        for (double& v : sq) v = std::abs(v);
        for (int64_t r = 0; r < in.rows; ++r)
          for (int64_t j = 0; j < in.cols; ++j)
            sq[j] += double(in.x[r * in.cols + j]) * in.x[r * in.cols + j];
        return Reference{{"sq", Valued(Prec::kF64Sum, sq)}};
      }));

  // Gemm: every transpose combination, padded leading dimensions, beta 0.3
  // and 0 (C's padding columns must stay as they were).
  struct GemmIn {
    int64_t m, n, k;
    std::vector<float> a[2], b[2], c;  // [trans]: the stored operands
  };
  auto make_gemm = [](int64_t m, int64_t n, int64_t k) {
    return [=](Rng& rng) {
      GemmIn in;
      in.m = m;
      in.n = n;
      in.k = k;
      for (int ta = 0; ta < 2; ++ta) {
        // op(a) [m, k]: stored [m, k + 3] or [k, m + 3].
        const int64_t rows = ta ? k : m, ld = (ta ? m : k) + 3;
        in.a[ta] = rng.Vec(rows * ld, -1.f, 1.f);
      }
      for (int tb = 0; tb < 2; ++tb) {
        // op(b) [k, n]: stored [k, n + 3] or [n, k + 3].
        const int64_t rows = tb ? n : k, ld = (tb ? k : n) + 3;
        in.b[tb] = rng.Vec(rows * ld, -1.f, 1.f);
      }
      in.c = rng.Vec(m * (n + 2), -1.f, 1.f);
      return in;
    };
  };
  // c = alpha op(a) op(b) + beta c over [m, n + 2] (padding untouched).
  auto gemm_ref = [](const GemmIn& in, int ta, int tb, double alpha, double beta, Prec prec) {
    const int64_t lda = (ta ? in.m : in.k) + 3, ldb = (tb ? in.k : in.n) + 3, ldc = in.n + 2;
    Expect e = Valued(prec, Widen(in.c), Widen(in.c));
    for (double& v : e.mag) v = std::abs(v);
    for (int64_t i = 0; i < in.m; ++i)
      for (int64_t j = 0; j < in.n; ++j) {
        double s = 0, sa = 0;
        for (int64_t t = 0; t < in.k; ++t) {
          const double av = ta ? in.a[1][t * lda + i] : in.a[0][i * lda + t];
          const double bv = tb ? in.b[1][j * ldb + t] : in.b[0][t * ldb + j];
          s += av * bv;
          sa += std::abs(av * bv);
        }
        const double c0 = in.c[i * ldc + j];
        e.value[i * ldc + j] = alpha * s + beta * c0;
        e.mag[i * ldc + j] = std::abs(alpha) * sa + std::abs(beta * c0);
      }
    return e;
  };
  auto gemm_name = [](int ta, int tb, double beta) {
    return std::string(ta ? "T" : "N") + (tb ? "T" : "N") + (beta == 0 ? "_beta0" : "_beta0_3");
  };
  for (bool f64 : {true, false}) {
    const std::string op = f64 ? "Gemm/f64" : "Gemm/f32";
    const Prec prec = f64 ? Prec::kF64Sum : Prec::kF32Dot;
    cases.push_back(MakeCase(
        op, {op}, f64 ? make_gemm(6, 7, 9) : make_gemm(37, 29, 41),
        [f64, gemm_name](Dev& d, const GemmIn& in) -> absl::StatusOr<Outputs> {
          Outputs o;
          for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb)
              for (double beta : {0.3, 0.0}) {
                const int64_t lda = (ta ? in.m : in.k) + 3, ldb = (tb ? in.k : in.n) + 3,
                              ldc = in.n + 2;
                const std::string name = gemm_name(ta, tb, beta);
                if (f64) {
                  const double* a = d.Up(Widen(in.a[ta]));
                  const double* b = d.Up(Widen(in.b[tb]));
                  double* c = d.Up(Widen(in.c));
                  RETURN_IF_ERROR(
                      d.b().Gemm(ta, tb, in.m, in.n, in.k, 0.7, a, lda, b, ldb, beta, c, ldc));
                  o[name] = d.Out(c, in.c.size());
                } else {
                  const float* a = d.Up(in.a[ta]);
                  const float* b = d.Up(in.b[tb]);
                  float* c = d.Up(in.c);
                  RETURN_IF_ERROR(d.b().Gemm(ta, tb, in.m, in.n, in.k, 0.7f, a, lda, b, ldb,
                                             static_cast<float>(beta), c, ldc));
                  o[name] = d.Out(c, in.c.size());
                }
              }
          return o;
        },
        [f64, prec, gemm_ref, gemm_name](const GemmIn& in) {
          Reference r;
          const double alpha = f64 ? 0.7 : static_cast<double>(0.7f);
          for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb)
              for (double beta : {0.3, 0.0}) {
                r[gemm_name(ta, tb, beta)] =
                    gemm_ref(in, ta, tb, alpha,
                             f64 ? beta : static_cast<double>(static_cast<float>(beta)), prec);
              }
          return r;
        }));
  }

  // Cholesky family: SPD n = 13 and n = 70 (past the CPU's 64-wide panels),
  // and a matrix that is not positive definite.
  struct CholIn {
    std::vector<int64_t> n;
    std::vector<std::vector<double>> a;
  };
  cases.push_back(MakeCase(
      "Cholesky", {"CholeskyLower", "CholeskyInverse", "UpperCholeskyOfInverse"},
      [](Rng& rng) {
        CholIn in;
        for (int64_t n : {13, 70}) {
          in.n.push_back(n);
          in.a.push_back(RandomSpd(n, rng));
        }
        return in;
      },
      [](Dev& d, const CholIn& in) -> absl::StatusOr<Outputs> {
        Outputs o;
        Backend& b = d.b();
        for (size_t s = 0; s < in.n.size(); ++s) {
          const int64_t n = in.n[s];
          const std::string tag = "_n" + std::to_string(n);
          double* a1 = d.Up(in.a[s]);
          RETURN_IF_ERROR(b.CholeskyLower(a1, n));
          o["lower" + tag] = d.Out(a1, n * n);
          double* a2 = d.Up(in.a[s]);
          RETURN_IF_ERROR(b.CholeskyInverse(a2, n));
          o["inverse" + tag] = d.Out(a2, n * n);
          double* a3 = d.Up(in.a[s]);
          RETURN_IF_ERROR(b.UpperCholeskyOfInverse(a3, n));
          o["upper_of_inverse" + tag] = d.Out(a3, n * n);
        }
        // Not positive definite: the identity with a[5][5] = -1.
        const int64_t n = 9;
        std::vector<double> bad(n * n, 0.0);
        for (int64_t i = 0; i < n; ++i) bad[i * n + i] = 1.0;
        bad[5 * n + 5] = -1.0;
        o["not_positive_definite_codes"] = {Code(b.CholeskyLower(d.Up(bad), n)),
                                            Code(b.CholeskyInverse(d.Up(bad), n)),
                                            Code(b.UpperCholeskyOfInverse(d.Up(bad), n))};
        return o;
      },
      [](const CholIn& in) {
        Reference r;
        for (size_t s = 0; s < in.n.size(); ++s) {
          const int64_t n = in.n[s];
          const std::string tag = "_n" + std::to_string(n);
          r["lower" + tag] = Valued(Prec::kF64Factor, CholeskyF64(in.a[s], n));
          const std::vector<double> inv = InverseF64(in.a[s], n);
          r["inverse" + tag] = Valued(Prec::kF64Factor, inv);
          // U^T U = a^-1 with U upper: U = L^T for a^-1 = L L^T.
          const std::vector<double> l = CholeskyF64(inv, n);
          std::vector<double> u(n * n, 0.0);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j) u[i * n + j] = l[j * n + i];
          r["upper_of_inverse" + tag] = Valued(Prec::kF64Factor, u);
        }
        const double fp = CodeOf(absl::StatusCode::kFailedPrecondition);
        r["not_positive_definite_codes"] = Exact({fp, fp, fp});
        return r;
      }));
  return cases;
}

// ============================================================================
// The table.

const std::vector<OpCase>& AllCases() {
  static const std::vector<OpCase>* cases = [] {
    auto* v = new std::vector<OpCase>();
    for (auto group :
         {IdentityAndBufferCases, MatMulCases, ElementwiseCases, KvCases, LinearAndNormCases,
          AttentionTrainCases, LossCases, OptimizerCases, LinalgCases}) {
      for (OpCase& c : group()) v->push_back(std::move(c));
    }
    return v;
  }();
  return *cases;
}

uint32_t BaseSeed() {
  if (const char* s = std::getenv("RETORT_BACKEND_OPS_SEED")) {
    return static_cast<uint32_t>(std::strtoul(s, nullptr, 0));
  }
  return kDefaultSeed;
}

uint32_t CaseSeed(const OpCase& c) {
  uint32_t h = 2166136261u;  // FNV-1a of the name
  for (unsigned char ch : c.name) h = (h ^ ch) * 16777619u;
  return h ^ BaseSeed();
}

std::string TestName(const std::string& case_name) {
  std::string s = case_name;
  for (char& ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

// ============================================================================
// (a) The CPU backend against the f64 loops.

class CpuVsF64 : public ::testing::TestWithParam<size_t> {};

TEST_P(CpuVsF64, MatchesF64Loops) {
  const OpCase& c = AllCases()[GetParam()];
  const uint32_t seed = CaseSeed(c);
  SCOPED_TRACE(::testing::Message() << "case " << c.name << ", seed " << seed
                                    << " (base RETORT_BACKEND_OPS_SEED=" << BaseSeed() << ")");
  Backend& cpu = CpuBackend();
  const Reference ref = c.reference(seed);
  const absl::StatusOr<Outputs> got = c.run(cpu, seed);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameNames(ref, *got);
  for (const auto& [name, e] : ref) {
    auto it = got->find(name);
    if (it == got->end()) continue;
    ExpectClose(name, e, e.value, it->second, RowOf(e.prec).vs_f64, "f64 loops");
  }
  const absl::StatusOr<Outputs> again = c.run(cpu, seed);
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSameBits(*got, *again);
}

INSTANTIATE_TEST_SUITE_P(Ops, CpuVsF64, ::testing::Range<size_t>(0, AllCases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return TestName(AllCases()[info.param].name);
                         });

// ============================================================================
// (b) Every other compiled-in backend against the CPU backend.

struct BackendCase {
  DeviceKind kind;
  size_t index;  // into AllCases()
};

// The non-CPU kinds compiled in whose device 0 exists, times every case.
std::vector<BackendCase> OtherBackendCases() {
  std::vector<BackendCase> out;
  for (DeviceKind kind : CompiledBackendKinds()) {
    if (kind == DeviceKind::kCpu) continue;
    absl::StatusOr<Backend*> b = GetBackend(Device{kind, 0});
    if (!b.ok()) {
      std::fprintf(stderr, "backend_ops_test: %s is compiled in but unusable here: %s\n",
                   DeviceKindName(kind), b.status().ToString().c_str());
      continue;
    }
    for (size_t i = 0; i < AllCases().size(); ++i) out.push_back({kind, i});
  }
  return out;
}

// Runs case `c` on `dev` and on the CPU backend and compares the two under
// the vs_cpu tolerances (magnitudes from the f64 reference), then checks that
// `dev` repeats its bits.
void ExpectMatchesCpu(Backend& dev, const OpCase& c) {
  const uint32_t seed = CaseSeed(c);
  SCOPED_TRACE(::testing::Message()
               << "case " << c.name << " on " << DeviceName(dev.device()) << ", seed " << seed);
  const Reference ref = c.reference(seed);
  const absl::StatusOr<Outputs> want = c.run(CpuBackend(), seed);
  ASSERT_TRUE(want.ok()) << "cpu: " << want.status();
  const absl::StatusOr<Outputs> got = c.run(dev, seed);
  ASSERT_TRUE(got.ok()) << DeviceName(dev.device()) << ": " << got.status();
  ExpectSameNames(ref, *got);
  for (const auto& [name, e] : ref) {
    auto g = got->find(name);
    auto w = want->find(name);
    if (g == got->end() || w == want->end()) continue;
    ExpectClose(name, e, w->second, g->second, RowOf(e.prec).vs_cpu, "cpu backend");
  }
  const absl::StatusOr<Outputs> again = c.run(dev, seed);
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSameBits(*got, *again);
}

class BackendVsCpu : public ::testing::TestWithParam<BackendCase> {};

TEST_P(BackendVsCpu, MatchesCpuBackend) {
  absl::StatusOr<Backend*> dev = GetBackend(Device{GetParam().kind, 0});
  ASSERT_TRUE(dev.ok()) << dev.status();
  ExpectMatchesCpu(**dev, AllCases()[GetParam().index]);
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendVsCpu, ::testing::ValuesIn(OtherBackendCases()),
                         [](const ::testing::TestParamInfo<BackendCase>& info) {
                           return std::string(DeviceKindName(info.param.kind)) + "_" +
                                  TestName(AllCases()[info.param.index].name);
                         });
// With only the CPU compiled in, BackendVsCpu has no instances: that is the
// expected state, not a skipped test.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BackendVsCpu);

// The comparison BackendVsCpu runs, exercised with the CPU in the device's
// place (so the cross-backend half of this file is not dead code until a
// second backend is compiled in). This is a check of the harness, not
// coverage of another backend.
TEST(BackendOpsHarness, CrossBackendComparisonRunsCpuAgainstItself) {
  for (const OpCase& c : AllCases()) ExpectMatchesCpu(CpuBackend(), c);
}

// ============================================================================
// Completeness.

std::string BaseName(const std::string& op) { return op.substr(0, op.find('/')); }

// Names of the virtual functions of class Backend in kernels/backend.h, with
// repeats for overloads.
std::multiset<std::string> VirtualOpsOfBackendH() {
  const std::string path = std::string(RETORT_SOURCE_DIR_PATH) + "/kernels/backend.h";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot read " << path;
  std::string text, line;
  while (std::getline(f, line)) {
    const size_t comment = line.find("//");
    text += (comment == std::string::npos ? line : line.substr(0, comment)) + "\n";
  }
  const size_t begin = text.find("class Backend {");
  EXPECT_NE(begin, std::string::npos) << "no `class Backend {` in " << path;
  const size_t end = text.find("\n};", begin);
  const std::string body = text.substr(begin, end - begin);
  std::multiset<std::string> names;
  const std::regex virt(R"(virtual\s+[^;{}]*?(~?\w+)\s*\()");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), virt); it != std::sregex_iterator();
       ++it) {
    const std::string name = (*it)[1];
    if (name[0] != '~') names.insert(name);
  }
  return names;
}

TEST(BackendOpsCoverage, OpListMatchesBackendH) {
  const std::multiset<std::string> parsed = VirtualOpsOfBackendH();
  EXPECT_GT(parsed.size(), 30u) << "the parse of kernels/backend.h found too few ops";
  std::multiset<std::string> listed;
  const std::set<std::string> non_virtual(std::begin(kNonVirtualOps), std::end(kNonVirtualOps));
  for (const char* op : kBackendOps) {
    if (!non_virtual.count(op)) listed.insert(BaseName(op));
  }
  for (const std::string& name : std::set<std::string>(parsed.begin(), parsed.end())) {
    EXPECT_EQ(listed.count(name), parsed.count(name))
        << "Backend::" << name << " is declared " << parsed.count(name)
        << " time(s) in kernels/backend.h but kBackendOps lists it " << listed.count(name)
        << " time(s): add it (Name/variant for overloads) and a case that covers it";
  }
  for (const std::string& name : std::set<std::string>(listed.begin(), listed.end())) {
    EXPECT_TRUE(parsed.count(name)) << name << " is in kBackendOps but not a virtual of Backend";
  }
}

TEST(BackendOpsCoverage, EveryOpHasACase) {
  std::map<std::string, int> covered;
  for (const OpCase& c : AllCases()) {
    for (const std::string& op : c.ops) ++covered[op];
  }
  for (const char* op : kBackendOps) {
    EXPECT_GT(covered[op], 0) << "no case in the table exercises Backend op " << op;
  }
}

TEST(BackendOpsCoverage, CasesNameListedOpsAndUniqueNames) {
  const std::set<std::string> ops(std::begin(kBackendOps), std::end(kBackendOps));
  std::set<std::string> names;
  for (const OpCase& c : AllCases()) {
    EXPECT_TRUE(names.insert(TestName(c.name)).second) << "duplicate case name " << c.name;
    EXPECT_FALSE(c.ops.empty()) << c.name;
    for (const std::string& op : c.ops) {
      EXPECT_TRUE(ops.count(op)) << "case " << c.name << " names " << op
                                 << ", which is not in kBackendOps";
    }
  }
}

TEST(BackendOpsCoverage, EveryPrecisionHasATolerance) {
  for (const OpCase& c : AllCases()) {
    for (const auto& [name, e] : c.reference(CaseSeed(c))) {
      (void)RowOf(e.prec);
      EXPECT_TRUE(e.mag.empty() || e.mag.size() == e.value.size()) << c.name << " " << name;
      EXPECT_TRUE(e.aux.empty() || e.aux.size() == e.value.size()) << c.name << " " << name;
    }
  }
}

// ============================================================================
// The f64 references checked against finite differences of themselves, so a
// wrong reference cannot agree with a wrong kernel.

TEST(BackendOpsReference, AttentionBackwardMatchesFiniteDifferences) {
  AttnIn in;
  in.H = 4;
  in.KvH = 2;
  in.D = 6;
  in.window = 4;
  in.scale = 0.4f;
  in.doc = {0, 0, 0, 3, 3, 3, 3, 3, 3};
  in.n = in.doc.size();
  Rng rng(7);
  in.q = rng.Vec(in.n * in.H * in.D, -1.f, 1.f);
  in.k = rng.Vec(in.n * in.KvH * in.D, -1.f, 1.f);
  in.v = rng.Vec(in.n * in.KvH * in.D, -1.f, 1.f);
  in.dout = rng.Vec(in.n * in.H * in.D, -1.f, 1.f);
  const AttnF64 f = AttentionF64(in, in.q, in.k, in.v);
  // L = sum dout . out; dL/dx by central differences. The inputs are floats,
  // so perturb through a double copy: the loss is smooth in them.
  auto loss = [&](int which, size_t idx, double delta) {
    std::vector<double> q = Widen(in.q), k = Widen(in.k), v = Widen(in.v);
    (which == 0 ? q : which == 1 ? k : v)[idx] += delta;
    // Re-run the f64 forward on doubles: AttentionF64 takes floats, so
    // inline the forward here.
    const int64_t n = in.n, H = in.H, D = in.D, QD = H * D, KvD = in.KvH * D, g = H / in.KvH;
    double L = 0;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t lo = std::max<int64_t>(in.doc[i], i - in.window + 1);
        std::vector<double> s;
        for (int64_t j = lo; j <= i; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < D; ++c)
            dot += q[i * QD + h * D + c] * k[j * KvD + (h / g) * D + c];
          s.push_back(dot * in.scale);
        }
        const double l = LogSumExp(s);
        for (int64_t j = lo; j <= i; ++j)
          for (int64_t c = 0; c < D; ++c)
            L += in.dout[i * QD + h * D + c] * std::exp(s[j - lo] - l) *
                 v[j * KvD + (h / g) * D + c];
      }
    return L;
  };
  const double eps = 1e-5;
  const std::vector<double>* grads[3] = {&f.dq, &f.dk, &f.dv};
  for (int which = 0; which < 3; ++which) {
    for (size_t i = 0; i < grads[which]->size(); ++i) {
      const double fd = (loss(which, i, eps) - loss(which, i, -eps)) / (2 * eps);
      EXPECT_NEAR((*grads[which])[i], fd, 1e-8) << "input " << which << " element " << i;
    }
  }
}

TEST(BackendOpsReference, LossGradientMatchesAnalyticForwardKl) {
  // CE + forward KL at T: d/dz = gs * (cw (p1 - onehot) + kw T (p_T - q_T)).
  LossIn in;
  in.n = 3;
  in.d = 5;
  in.vocab = 11;
  in.td = 4;
  in.kind = TeacherSignal::Kind::kDense;
  in.opt.ce_weight = 0.6f;
  in.opt.kd_weight = 0.9f;
  in.opt.temperature = 1.7f;
  in.grad_scale = 0.5f;
  Rng rng(11);
  in.h = rng.Vec(in.n * in.d, -1.f, 1.f);
  in.w = rng.Vec(in.vocab * in.d, -1.f, 1.f);
  in.th = rng.Vec(in.n * in.td, -1.f, 1.f);
  in.tw = rng.Vec(in.vocab * in.td, -1.f, 1.f);
  in.dw0.assign(in.vocab * in.d, 0.f);
  in.targets = {3, -1, 10};
  const LossF64 f = LossReference(in);
  std::vector<double> dh(in.n * in.d, 0.0);
  const double T = in.opt.temperature;
  for (int64_t i = 0; i < in.n; ++i) {
    if (in.targets[i] < 0) continue;
    std::vector<double> z(in.vocab), zt(in.vocab);
    for (int64_t v = 0; v < in.vocab; ++v) {
      for (int64_t c = 0; c < in.d; ++c) z[v] += double(in.h[i * in.d + c]) * in.w[v * in.d + c];
      for (int64_t c = 0; c < in.td; ++c)
        zt[v] += double(in.th[i * in.td + c]) * in.tw[v * in.td + c];
    }
    const auto l1 = LogSoftmax(z, 1), lt = LogSoftmax(z, T), qt = LogSoftmax(zt, T);
    for (int64_t v = 0; v < in.vocab; ++v) {
      const double dz =
          in.grad_scale * (in.opt.ce_weight * (std::exp(l1[v]) - (v == in.targets[i])) +
                           in.opt.kd_weight * T * (std::exp(lt[v]) - std::exp(qt[v])));
      for (int64_t c = 0; c < in.d; ++c) dh[i * in.d + c] += dz * in.w[v * in.d + c];
    }
  }
  for (size_t i = 0; i < dh.size(); ++i) EXPECT_NEAR(f.dh[i], dh[i], 1e-9) << i;
}

}  // namespace
}  // namespace retort
