#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/linalg.h"
#include "kernels/cpu/lm_head_loss.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/optimizer_ops.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/quant_matrix_matmul.h"
#include "kernels/cpu/quant_repack.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/train_ops.h"

namespace retort::cpu {
namespace {

// A weight as the CPU kernels read it: the stored tensor (or its repacked
// copy, for linears whose layout the GEMV runs faster on: same dtype, layout
// kR8, quant_repack.h), or a quantized matrix multiplied as stored.
class CpuWeight final : public DeviceWeight {
 public:
  explicit CpuWeight(PreparedWeight w) : w_(std::move(w.tensor)), layout_(w.layout) {}
  explicit CpuWeight(std::shared_ptr<const QuantizedMatrix> q) : quant_(std::move(q)) {}

  int64_t rows() const override { return quant_ ? quant_->rows : w_.dim(0); }
  int64_t cols() const override { return quant_ ? quant_->cols : w_.dim(1); }
  size_t bytes() const override { return quant_ ? quant_->nbytes() : w_.nbytes(); }

  const Tensor& tensor() const { return w_; }
  // How tensor()'s bytes are arranged (kR8 only for repacked linears).
  WeightLayout layout() const { return layout_; }
  const QuantizedMatrix* quant() const { return quant_.get(); }

 private:
  Tensor w_;
  WeightLayout layout_ = WeightLayout::kRowMajor;
  std::shared_ptr<const QuantizedMatrix> quant_;
};

const CpuWeight& AsCpu(const DeviceWeight& w) { return static_cast<const CpuWeight&>(w); }

cpu::AttentionShape ToCpu(const ::retort::AttentionShape& s) {
  return cpu::AttentionShape{s.n_heads, s.n_kv_heads, s.head_dim};
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::Cpu(); }
  bool memory_is_host() const override { return true; }

  std::string Describe() const override {
    return absl::StrCat("cpu (", SgemmPathName(ActiveSgemmPath()), " sgemm, ",
                        QuantDotPathName(ActiveQuantDotPath()), " integer dots, ", NumThreads(),
                        " threads)");
  }

  absl::Status CopyToDevice(const void* host, void* device, size_t bytes) override {
    if (bytes) std::memcpy(device, host, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(const void* device, void* host, size_t bytes) override {
    if (bytes) std::memcpy(host, device, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyOnDevice(const void* src, void* dst, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  bool SupportsWeightDType(DType t) const override { return IsSupportedWeightDType(t); }

  absl::StatusOr<std::shared_ptr<const DeviceWeight>> PrepareWeight(const Tensor& w,
                                                                    WeightUse use) override {
    if (!w.on_host()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpu backend: weight is on ", DeviceName(w.device()), ", not the host"));
    }
    if (w.rank() != 2 || !IsSupportedWeightDType(w.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpu backend: a weight must be rank 2 in F32, BF16, F16 or a ggml block "
                       "type; got ",
                       std::string(DTypeName(w.dtype())), " ", ShapeString(w.shape())));
    }
    // Linears take the GEMV's fastest layout (Q4_0 / Q8_0 repacked 8 rows at
    // a time); embedding tables stay as stored, looked up by row.
    PreparedWeight t = use == WeightUse::kLinear ? PrepareWeightForCpu(w) : PreparedWeight{w};
    return std::shared_ptr<const DeviceWeight>(std::make_shared<CpuWeight>(std::move(t)));
  }

  absl::StatusOr<std::shared_ptr<const DeviceWeight>> PrepareWeight(
      std::shared_ptr<const QuantizedMatrix> w) override {
    if (w == nullptr) return absl::InvalidArgumentError("cpu backend: null quantized matrix");
    RETURN_IF_ERROR(CheckQuantizedMatrixLayout(*w, w->cols));
    return std::shared_ptr<const DeviceWeight>(std::make_shared<CpuWeight>(std::move(w)));
  }

  absl::Status MatMul(const float* x, int64_t m, const DeviceWeight& w, const float* bias,
                      float* y) override {
    const CpuWeight& cw = AsCpu(w);
    if (cw.quant()) return cpu::MatMul(x, m, *cw.quant(), bias, y);
    return cpu::MatMul(x, m, cw.tensor(), cw.layout(), bias, y);
  }

  absl::Status MatMulGroup(const float* x, int64_t m, int64_t k,
                           const std::vector<::retort::MatMulOutput>& outs) override {
    // Reused per thread: a decode step issues this twice per layer.
    thread_local std::vector<cpu::MatMulOutput> cpu_outs;
    cpu_outs.clear();
    for (const ::retort::MatMulOutput& o : outs) {
      const CpuWeight& cw = AsCpu(*o.w);
      cpu_outs.push_back(cpu::MatMulOutput{&cw.tensor(), o.bias, o.y, cw.quant(), cw.layout()});
    }
    return cpu::MatMulGroup(x, m, k, cpu_outs);
  }

  absl::Status Embedding(const DeviceWeight& table, const int32_t* ids, int64_t n,
                         float* out) override {
    const CpuWeight& cw = AsCpu(table);
    if (cw.quant()) {
      return absl::InvalidArgumentError(
          "cpu backend: an embedding table cannot be a quantized matrix");
    }
    if (cw.layout() != WeightLayout::kRowMajor) {  // rows of a repacked linear are not contiguous
      return absl::InvalidArgumentError(
          "cpu backend: an embedding table must be prepared with WeightUse::kEmbedding");
    }
    return cpu::Embedding(cw.tensor(), ids, n, out);
  }

  absl::Status RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                       float* y) override {
    cpu::RmsNorm(x, rows, dim, weight, eps, y);
    return absl::OkStatus();
  }
  absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out) override {
    cpu::SiluMul(gate, up, n, out);
    return absl::OkStatus();
  }
  absl::Status Add(const float* a, const float* b, int64_t n, float* out) override {
    cpu::Add(a, b, n, out);
    return absl::OkStatus();
  }
  absl::Status Softmax(float* x, int64_t rows, int64_t cols) override {
    cpu::Softmax(x, rows, cols);
    return absl::OkStatus();
  }
  absl::Status RopeCosSin(const float* inv_freq, int64_t half, const int64_t* positions, int64_t n,
                          float* cos, float* sin) override {
    cpu::RopeCosSin(inv_freq, half, positions, n, cos, sin);
    return absl::OkStatus();
  }
  absl::Status ApplyRope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                         const float* cos, const float* sin) override {
    cpu::ApplyRope(x, n, n_heads, head_dim, row_stride, cos, sin);
    return absl::OkStatus();
  }

  absl::Status AppendKv(const float* k, const float* v, int64_t n, int64_t n_kv_heads,
                        int64_t head_dim, int64_t start_pos, const KvView& cache) override {
    cpu::AppendKv(k, v, n, n_kv_heads, head_dim, start_pos, cache.k, cache.v, cache.head_stride);
    return absl::OkStatus();
  }
  absl::Status Attention(const float* q, int64_t n, int64_t start_pos, const KvView& cache,
                         const ::retort::AttentionShape& shape, float scale, int64_t window,
                         float* out) override {
    cpu::Attention(q, n, start_pos, cache.k, cache.v, cache.head_stride, ToCpu(shape), scale,
                   window, out);
    return absl::OkStatus();
  }

  absl::Status LinearForward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                             const float* bias, float* y) override {
    cpu::LinearForward(x, m, k, w, n, bias, y);
    return absl::OkStatus();
  }
  absl::Status LinearBackward(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                              const float* dy, float* dx, float* dw, float* dbias,
                              bool accumulate_dx) override {
    cpu::LinearBackward(x, m, k, w, n, dy, dx, dw, dbias, accumulate_dx);
    return absl::OkStatus();
  }
  absl::Status RmsNormForward(const float* x, int64_t rows, int64_t dim, const float* weight,
                              float eps, float* y, float* rstd) override {
    cpu::RmsNormForward(x, rows, dim, weight, eps, y, rstd);
    return absl::OkStatus();
  }
  absl::Status RmsNormApply(const float* x, const float* rstd, int64_t rows, int64_t dim,
                            const float* weight, float* y) override {
    cpu::RmsNormApply(x, rstd, rows, dim, weight, y);
    return absl::OkStatus();
  }
  absl::Status RmsNormBackward(const float* x, const float* rstd, int64_t rows, int64_t dim,
                               const float* weight, const float* dy, float* dx, float* dweight,
                               bool accumulate_dx) override {
    cpu::RmsNormBackward(x, rstd, rows, dim, weight, dy, dx, dweight, accumulate_dx);
    return absl::OkStatus();
  }
  absl::Status SiluMulBackward(const float* gate, const float* up, const float* dout, int64_t n,
                               float* dgate, float* dup) override {
    cpu::SiluMulBackward(gate, up, dout, n, dgate, dup);
    return absl::OkStatus();
  }
  absl::Status ApplyRopeBackward(float* dx, int64_t n, int64_t n_heads, int64_t head_dim,
                                 int64_t row_stride, const float* cos, const float* sin) override {
    cpu::ApplyRopeBackward(dx, n, n_heads, head_dim, row_stride, cos, sin);
    return absl::OkStatus();
  }
  absl::Status EmbeddingBackward(const int32_t* ids, int64_t n, int64_t dim, const float* dout,
                                 float* dtable) override {
    cpu::EmbeddingBackward(ids, n, dim, dout, dtable);
    return absl::OkStatus();
  }
  absl::Status AttentionForward(const float* q, const float* k, const float* v,
                                const int32_t* doc_start, int64_t n,
                                const ::retort::AttentionShape& shape, float scale, int64_t window,
                                float* out, float* lse) override {
    cpu::AttentionForward(q, k, v, doc_start, n, ToCpu(shape), scale, window, out, lse);
    return absl::OkStatus();
  }
  absl::Status AttentionBackward(const float* q, const float* k, const float* v,
                                 const int32_t* doc_start, int64_t n,
                                 const ::retort::AttentionShape& shape, float scale, int64_t window,
                                 const float* out, const float* lse, const float* dout, float* dq,
                                 float* dk, float* dv) override {
    cpu::AttentionBackward(q, k, v, doc_start, n, ToCpu(shape), scale, window, out, lse, dout, dq,
                           dk, dv);
    return absl::OkStatus();
  }

  absl::StatusOr<LossResult> LmHeadLoss(const float* h, int64_t n, int64_t d, const float* w,
                                        int64_t vocab, const int32_t* targets,
                                        const TeacherSignal& teacher, const LossOptions& options,
                                        float grad_scale, float* dh, float* dw) override {
    return cpu::LmHeadLoss(h, n, d, w, vocab, targets, teacher, options, grad_scale, dh, dw);
  }

  absl::Status AdamWStep(float* params, const float* grads, float* m, float* v, int64_t n,
                         const AdamWStepParams& p) override {
    cpu::AdamWStep(params, grads, m, v, n, p);
    return absl::OkStatus();
  }
  absl::StatusOr<double> SumSquares(const float* x, int64_t n) override {
    return cpu::GradSumSquares(x, n);
  }
  absl::Status Scale(float* x, int64_t n, float s) override {
    cpu::ScaleInPlace(x, n, s);
    return absl::OkStatus();
  }

  absl::Status AccumulateGram(const float* x, int64_t rows, int64_t cols, double* h) override {
    cpu::AccumulateGram(x, rows, cols, h);
    return absl::OkStatus();
  }
  absl::Status AccumulateGram(const float* x, int64_t rows, int64_t cols, float* h) override {
    cpu::AccumulateGram(x, rows, cols, h);
    return absl::OkStatus();
  }
  absl::Status AccumulateColumnSquares(const float* x, int64_t rows, int64_t cols,
                                       double* sq) override {
    cpu::AccumulateColumnSquares(x, rows, cols, sq);
    return absl::OkStatus();
  }
  absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                    const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                    double* c, int64_t ldc) override {
    cpu::Gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return absl::OkStatus();
  }
  absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc) override {
    cpu::Gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return absl::OkStatus();
  }
  absl::Status CholeskyLower(double* a, int64_t n) override { return cpu::CholeskyLower(a, n); }
  absl::Status CholeskyInverse(double* a, int64_t n) override { return cpu::CholeskyInverse(a, n); }
  absl::Status UpperCholeskyOfInverse(double* a, int64_t n) override {
    return cpu::UpperCholeskyOfInverse(a, n);
  }

 protected:
  absl::StatusOr<void*> AllocateRaw(size_t bytes) override {
    const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu backend: cannot allocate ", bytes, " bytes"));
    }
    std::memset(p, 0, rounded);
    return p;
  }
  void FreeRaw(void* p) override { std::free(p); }
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace retort::cpu
