// Backend: the one interface between retort's numeric code and a device.
//
// Everything above kernels/ (model/, distill/, quantize/, prune/, eval/,
// cli/) reaches arithmetic only through a Backend; no file outside kernels/
// includes a backend's headers (kernels/cpu/..., kernels/cuda/...), and
// tests/kernels/include_boundary_test checks that. The shape follows
// ggml-backend: a table of operations behind a C++ abstract class, one
// implementation per device kind, found through a registry.
//
// A Backend object is the *context* of one device: it owns what that device
// needs to run ops (a stream, library handles such as cuBLAS, per-thread
// scratch, the CPU's thread pool) for as long as the process runs.
// GetBackend(device) returns the process-wide context of a device, created
// on first use; asking for a device whose backend is not compiled in, or
// that does not exist, is one error line (FailedPrecondition / NotFound)
// before any work.
//
// Memory: a Backend allocates Buffers of its device and copies bytes between
// the host and the device (and within the device). Op arguments are raw
// pointers into the backend's own memory (Buffer::data(), or a Tensor whose
// location() is that device), with explicit shapes and strides, the
// FlashInfer way. On the CPU backend host memory is device memory, so
// std::vector data and memory-mapped tensors are valid operands there.
//
// Weights: a model hands each weight to PrepareWeight once (at load time)
// and keeps the returned DeviceWeight. The backend may keep the stored
// bytes, convert them, or copy them to the device: the CPU backend repacks
// Q4_0/Q8_0 linears into 8-row interleaved layouts that its GEMV runs faster
// on; a GPU backend uploads. What a DeviceWeight holds is the backend's
// private business.
//
// Conventions shared by every op:
//  * Ops return absl::Status: InvalidArgument for operands the op cannot take
//    (a dtype, a rank: the message names it), OutOfRange for an index outside
//    its table (Embedding's token ids), Internal for a device failure. No op
//    throws.
//  * Row-major f32 activations; sums accumulated in f32 or wider.
//  * Gradient outputs named d<param> ACCUMULATE (+=), so micro-batches sum
//    into one gradient; gradients of activations (dx) are overwritten unless
//    an `accumulate_dx` flag says otherwise.
//  * Outputs must not overlap inputs unless the op says otherwise.
//  * Ops never allocate behind the caller's back in a hot loop: scratch is
//    per-thread and grows to the largest call seen, or is owned by the caller.
//  * Determinism: on a given backend the same inputs give the same bits,
//    whatever the number of threads.
//  * Thread-safety: one thread at a time issues ops to a backend (the CPU
//    backend splits each op over its own pool).
//
// The ops, grouped as kernels/README.md lists them (each with the test that
// covers it): buffers, weights, forward, generation (KV cache), training
// (forward-with-saved-state and backward), the fused LM-head loss, the
// optimizer, calibration linear algebra. The collective (all-reduce) is
// kernels/collective.h.
#ifndef RETORT_KERNELS_BACKEND_H_
#define RETORT_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/quant_matrix.h"
#include "core/tensor.h"
#include "kernels/lm_head_loss.h"

namespace retort {

class Backend;

// ----------------------------------------------------------------------------
// Buffers.

// Bytes on one device, owned: freed by the backend that allocated them when
// the Buffer is destroyed. Move-only. data() is a device address: on a
// device other than the CPU it must not be dereferenced on the host (copy
// with Backend::CopyToHost).
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }

  bool empty() const { return data_ == nullptr; }
  size_t size() const { return size_; }
  Device device() const;
  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T>
  T* as() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data_);
  }

  // A Tensor over this buffer's bytes (location: the buffer's device). The
  // tensor does not keep the buffer alive.
  Tensor View(DType dtype, Shape shape) const;

  void Reset();
  // The backend that allocated it (null when empty).
  Backend* backend() const { return backend_; }

 private:
  friend class Backend;
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// ----------------------------------------------------------------------------
// Weights as a backend runs them.

// What a weight is used for (a backend may prepare the two differently: the
// CPU repacks linears for its GEMV but keeps embedding tables row-addressable).
enum class WeightUse { kLinear, kEmbedding };

// A weight prepared by Backend::PrepareWeight: a dense tensor [out, in] in a
// dtype the backend reads (F32, BF16, F16, ggml block types), or a
// QuantizedMatrix (core/quant_matrix.h). Immutable; shared between threads.
class DeviceWeight {
 public:
  virtual ~DeviceWeight() = default;
  // [rows, cols] of the logical matrix (out, in for a linear).
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  // Bytes the backend holds for it (for footprints and bandwidth figures).
  virtual size_t bytes() const = 0;
};

// One output of MatMulGroup: y[m, w->rows()] = x · w^T (+ bias).
struct MatMulOutput {
  const DeviceWeight* w = nullptr;
  const float* bias = nullptr;  // [w->rows()], may be null
  float* y = nullptr;
};

// Heads of one attention call.
struct AttentionShape {
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // REQUIRES: divides n_heads
  int64_t head_dim = 0;
};

// The KV cache of one layer of one sequence: keys of kv head h, position p at
// k + h * head_stride + p * head_dim (values likewise).
struct KvView {
  float* k = nullptr;
  float* v = nullptr;
  int64_t head_stride = 0;
};

// AdamW hyper-parameters of one update (torch.optim.AdamW's single-tensor
// arithmetic; see Backend::AdamWStep).
struct AdamWStepParams {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0;  // 0: no decay for this range
  int64_t step = 1;        // 1-based count including this update
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  // A line for logs: "cpu (AVX-512, 2 threads)".
  virtual std::string Describe() const = 0;
  // True when this device's memory is the process's host memory (the CPU):
  // host pointers are valid operands and results need no copy back.
  virtual bool memory_is_host() const = 0;

  // ---- Buffers -------------------------------------------------------------
  // `bytes` of device memory (zeroed), aligned to 64 bytes. Error
  // (ResourceExhausted) when the device cannot hold it.
  absl::StatusOr<Buffer> Allocate(size_t bytes);
  // host -> device, device -> host, device -> device; `bytes` from the start
  // of each pointer. Synchronous: the copy is complete on return.
  virtual absl::Status CopyToDevice(const void* host, void* device, size_t bytes) = 0;
  virtual absl::Status CopyToHost(const void* device, void* host, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(const void* src, void* dst, size_t bytes) = 0;
  // Waits until every op issued so far has finished.
  virtual absl::Status Synchronize() = 0;
  // A host copy of a tensor on this backend's device (the explicit copy that
  // reading a device tensor's bytes requires); host tensors come back as is.
  absl::StatusOr<Tensor> ToHost(const Tensor& t);

  // ---- Weights -------------------------------------------------------------
  // The backend's form of a dense weight [rows, cols] (F32, BF16, F16 or a
  // ggml block type MatMul accepts). Error naming the dtype otherwise.
  virtual absl::StatusOr<std::shared_ptr<const DeviceWeight>> PrepareWeight(const Tensor& w,
                                                                            WeightUse use) = 0;
  // The backend's form of a quantized matrix (checked: CheckQuantizedMatrixLayout).
  virtual absl::StatusOr<std::shared_ptr<const DeviceWeight>> PrepareWeight(
      std::shared_ptr<const QuantizedMatrix> w) = 0;
  // True for the dense weight dtypes PrepareWeight accepts.
  virtual bool SupportsWeightDType(DType t) const = 0;

  // ---- Forward (inference) -------------------------------------------------
  // y[m, w.rows()] = x[m, w.cols()] · w^T (+ bias). Few rows (decode) run a
  // GEMV streaming w once; more rows a GEMM.
  virtual absl::Status MatMul(const float* x, int64_t m, const DeviceWeight& w, const float* bias,
                              float* y) = 0;
  // Several MatMuls sharing x[m, k] in one pass (q/k/v, gate/up). Every
  // weight has k columns.
  virtual absl::Status MatMulGroup(const float* x, int64_t m, int64_t k,
                                   const std::vector<MatMulOutput>& outs) = 0;
  // out[i, :] = table[ids[i], :] in f32. OutOfRange naming an id outside [0, rows).
  virtual absl::Status Embedding(const DeviceWeight& table, const int32_t* ids, int64_t n,
                                 float* out) = 0;
  // y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight; y may alias x.
  virtual absl::Status RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight,
                               float eps, float* y) = 0;
  // out = silu(gate) * up (n elements); out may alias gate or up.
  virtual absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // out = a + b (n elements); out may alias a or b.
  virtual absl::Status Add(const float* a, const float* b, int64_t n, float* out) = 0;
  // In place, max-subtracted softmax of each of `rows` rows of `cols`.
  virtual absl::Status Softmax(float* x, int64_t rows, int64_t cols) = 0;
  // cos/sin [n, half] for positions[n]: angle = float(pos) * inv_freq[i] (as transformers).
  virtual absl::Status RopeCosSin(const float* inv_freq, int64_t half, const int64_t* positions,
                                  int64_t n, float* cos, float* sin) = 0;
  // Half-rotated (NeoX/HF) RoPE in place on n rows of n_heads heads; row r
  // at x + r * row_stride. cos/sin: [n, head_dim / 2].
  virtual absl::Status ApplyRope(float* x, int64_t n, int64_t n_heads, int64_t head_dim,
                                 int64_t row_stride, const float* cos, const float* sin) = 0;

  // ---- Generation: the KV cache --------------------------------------------
  // Writes the keys and values of n new positions k[n, n_kv_heads * head_dim]
  // (likewise v) into `cache` at positions start_pos .. start_pos + n - 1.
  virtual absl::Status AppendKv(const float* k, const float* v, int64_t n, int64_t n_kv_heads,
                                int64_t head_dim, int64_t start_pos, const KvView& cache) = 0;
  // Causal GQA attention of q[n, n_heads * head_dim] (positions start_pos..)
  // over the cache, which holds every position < start_pos + n; sliding
  // window when window > 0. out [n, n_heads * head_dim], not aliasing q.
  virtual absl::Status Attention(const float* q, int64_t n, int64_t start_pos, const KvView& cache,
                                 const AttentionShape& shape, float scale, int64_t window,
                                 float* out) = 0;

  // ---- Training ------------------------------------------------------------
  // f32 linear: y[m, n] = x[m, k] · w[n, k]^T (+ bias).
  virtual absl::Status LinearForward(const float* x, int64_t m, int64_t k, const float* w,
                                     int64_t n, const float* bias, float* y) = 0;
  // dx = dy · w (dx may be null; accumulate_dx adds), dw += dy^T · x, dbias += rows of dy.
  virtual absl::Status LinearBackward(const float* x, int64_t m, int64_t k, const float* w,
                                      int64_t n, const float* dy, float* dx, float* dw,
                                      float* dbias, bool accumulate_dx) = 0;
  // RmsNorm that stores rstd[rows] for the backward.
  virtual absl::Status RmsNormForward(const float* x, int64_t rows, int64_t dim,
                                      const float* weight, float eps, float* y, float* rstd) = 0;
  // y = x * rstd[row] * weight: RmsNormForward's output recomputed from its
  // saved rstd (the backward recomputes it instead of storing it).
  virtual absl::Status RmsNormApply(const float* x, const float* rstd, int64_t rows, int64_t dim,
                                    const float* weight, float* y) = 0;
  // dx (overwritten, or added with accumulate_dx; may be dy itself when not
  // accumulating), dweight += (may be null).
  virtual absl::Status RmsNormBackward(const float* x, const float* rstd, int64_t rows, int64_t dim,
                                       const float* weight, const float* dy, float* dx,
                                       float* dweight, bool accumulate_dx) = 0;
  // dgate, dup (overwritten) of out = silu(gate) * up.
  virtual absl::Status SiluMulBackward(const float* gate, const float* up, const float* dout,
                                       int64_t n, float* dgate, float* dup) = 0;
  // The inverse rotation of ApplyRope, in place on dx.
  virtual absl::Status ApplyRopeBackward(float* dx, int64_t n, int64_t n_heads, int64_t head_dim,
                                         int64_t row_stride, const float* cos,
                                         const float* sin) = 0;
  // dtable[ids[i], :] += dout[i, :]. REQUIRES ids in range (checked by Embedding).
  virtual absl::Status EmbeddingBackward(const int32_t* ids, int64_t n, int64_t dim,
                                         const float* dout, float* dtable) = 0;
  // Packed-sequence causal attention with document masking (doc_start[i]: the
  // first token of i's document), GQA and a sliding window; lse [n_heads, n]
  // kept for the backward.
  virtual absl::Status AttentionForward(const float* q, const float* k, const float* v,
                                        const int32_t* doc_start, int64_t n,
                                        const AttentionShape& shape, float scale, int64_t window,
                                        float* out, float* lse) = 0;
  // dq, dk, dv (overwritten) given dout and the forward's out and lse.
  virtual absl::Status AttentionBackward(const float* q, const float* k, const float* v,
                                         const int32_t* doc_start, int64_t n,
                                         const AttentionShape& shape, float scale, int64_t window,
                                         const float* out, const float* lse, const float* dout,
                                         float* dq, float* dk, float* dv) = 0;

  // ---- The fused LM-head loss (kernels/lm_head_loss.h) -----------------------
  virtual absl::StatusOr<LossResult> LmHeadLoss(const float* h, int64_t n, int64_t d,
                                                const float* w, int64_t vocab,
                                                const int32_t* targets,
                                                const TeacherSignal& teacher,
                                                const LossOptions& options, float grad_scale,
                                                float* dh, float* dw) = 0;

  // ---- Optimizer -----------------------------------------------------------
  // One AdamW update of params[n] from grads[n] with moments m[n], v[n]
  // (torch's single-tensor order of operations, lerp for m).
  virtual absl::Status AdamWStep(float* params, const float* grads, float* m, float* v, int64_t n,
                                 const AdamWStepParams& p) = 0;
  // sum(x[i]^2) in f64, summed in a fixed order (the global gradient norm).
  virtual absl::StatusOr<double> SumSquares(const float* x, int64_t n) = 0;
  // x[i] *= s.
  virtual absl::Status Scale(float* x, int64_t n, float s) = 0;

  // ---- Calibration linear algebra (GPTQ, AWQ, SparseGPT, Wanda) ---------------
  // h[cols, cols] += x^T x for x[rows, cols]; f64 widens x first, f32 sums in f32.
  virtual absl::Status AccumulateGram(const float* x, int64_t rows, int64_t cols, double* h) = 0;
  virtual absl::Status AccumulateGram(const float* x, int64_t rows, int64_t cols, float* h) = 0;
  // sq[j] += sum over rows of x[r, j]^2 in f64, rows in order (Wanda's
  // input norms).
  virtual absl::Status AccumulateColumnSquares(const float* x, int64_t rows, int64_t cols,
                                               double* sq) = 0;
  // c = alpha * op(a) · op(b) + beta * c, row-major (cblas semantics). One
  // unit of work: callers may tile a product and issue the tiles from pool
  // workers (calibration passes do), and each tile gives the same bits as
  // the whole.
  virtual absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            double alpha, const double* a, int64_t lda, const double* b,
                            int64_t ldb, double beta, double* c, int64_t ldc) = 0;
  virtual absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                            float beta, float* c, int64_t ldc) = 0;
  // In place, f64, n x n: the lower Cholesky factor of SPD a; a^-1 of SPD a;
  // the upper U with U^T U = a^-1 (GPTQ/SparseGPT). FailedPrecondition naming
  // the pivot when a is not positive definite.
  virtual absl::Status CholeskyLower(double* a, int64_t n) = 0;
  virtual absl::Status CholeskyInverse(double* a, int64_t n) = 0;
  virtual absl::Status UpperCholeskyOfInverse(double* a, int64_t n) = 0;

 protected:
  // Raw device memory for Allocate / Buffer (zeroed) and its release.
  virtual absl::StatusOr<void*> AllocateRaw(size_t bytes) = 0;
  virtual void FreeRaw(void* p) = 0;
  // Tensors this backend's buffers are viewed as.
  Tensor DeviceTensor(DType dtype, Shape shape, void* data) const;

  friend class Buffer;
};

// ----------------------------------------------------------------------------
// The registry.

// The context of `device`, created on first use and alive until exit. Errors,
// one line each: FailedPrecondition when no backend of that kind is compiled
// into this binary ("retort was built without CUDA ..."), NotFound when the
// backend has no such device ("cuda:3: this machine has 1 CUDA device").
absl::StatusOr<Backend*> GetBackend(const Device& device);
// The CPU backend (always compiled in).
Backend& CpuBackend();

// The device that model code runs on unless told otherwise; the CLI sets it
// from --device after checking it with GetBackend. Starts as the CPU.
Backend& DefaultBackend();
absl::Status SetDefaultDevice(const Device& device);

// The kinds compiled into this binary, CPU first. A new backend adds one
// line to the table in kernels/backend.cc (see kernels/README.md).
std::vector<DeviceKind> CompiledBackendKinds();

}  // namespace retort

#endif  // RETORT_KERNELS_BACKEND_H_
