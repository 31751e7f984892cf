// Unstructured and N:M pruning of one linear layer's weight matrix.
//
// Every function works on a row-major f32 matrix w[rows, cols] in the HF
// layout of nn.Linear (one row per output, one column per input) and zeroes
// entries in place. Three criteria, as compared in the Wanda paper (Sun et
// al. 2023, "A Simple and Effective Pruning Approach for LLMs"):
//   * magnitude: score |W_ij|. Comparison group = the whole matrix (the
//     paper's magnitude baseline, and what its code's prune_magnitude does).
//   * Wanda: score |W_ij| * ||X_j||_2 over the calibration tokens, compared
//     within each output row (the paper's "per output" group).
//   * SparseGPT (Frantar & Alistarh 2023): OBS saliency w^2 / [H^-1]_jj^2
//     with the mask chosen per block of columns from the current (already
//     updated) weights, and the remaining weights of each row updated to
//     compensate, GPTQ-style (column by column inside a block, one lazy
//     GEMM for the columns after it), H = 2/n X^T X.
//
// How many entries a group loses: exactly floor(sparsity * group size) (a
// 1e-9 slack absorbs decimal fractions such as 0.3 * 10), the smallest
// scores, ties broken towards the lower index, so masks are deterministic
// and independent of the thread count.
//
// N:M ("2:4"): in every group of M consecutive input columns of a row at most
// N entries are nonzero (the M - N smallest scores of the group are zeroed);
// this is the pattern sparse tensor cores accelerate for 2:4. With N:M the
// groups above are replaced by these M-column groups for every criterion.
//
// Thread-safety: the functions are reentrant; they use the process thread
// pool (core/thread_pool.h), so call them from one thread at a time.
#ifndef RETORT_PRUNE_UNSTRUCTURED_H_
#define RETORT_PRUNE_UNSTRUCTURED_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace retort::prune {

// Target sparsity of a matrix: unstructured (n == m == 0, `sparsity` the
// fraction of zeros) or N:M (m > 0: at most n nonzeros in every m
// consecutive input columns; `sparsity` is then 1 - n/m).
struct SparsityPattern {
  double sparsity = 0.5;
  int n = 0, m = 0;

  bool is_nm() const { return m > 0; }
  // "0.5" or "2:4".
  std::string ToString() const;
};

// Parses "0.5", "50%", "2:4", "4:8". Errors name the text: not a number,
// sparsity outside (0, 1), N:M with N < 1 or N >= M.
absl::StatusOr<SparsityPattern> ParseSparsityPattern(const std::string& text);

// Checks `pattern` against a matrix of `cols` input columns; errors name
// `what` (the tensor): sparsity outside (0, 1), N >= M, M not dividing cols.
absl::Status ValidateSparsityPattern(const SparsityPattern& pattern, int64_t cols,
                                     const std::string& what);

// Zeroes the smallest |w| (whole matrix as one group, or per N:M group).
// Errors naming `what`: invalid pattern, empty matrix, non-finite weight.
absl::Status PruneMagnitude(float* w, int64_t rows, int64_t cols, const SparsityPattern& pattern,
                            const std::string& what);

// Wanda: zeroes the smallest |W_ij| * sqrt(input_sq_norm[j]) of each row (or
// of each N:M group). input_sq_norm[j] = sum over calibration tokens of x_j^2.
// Errors naming `what`: invalid pattern, non-finite weight, negative or
// non-finite norm.
absl::Status PruneWanda(float* w, int64_t rows, int64_t cols, const double* input_sq_norm,
                        const SparsityPattern& pattern, const std::string& what);

struct SparseGptOptions {
  // Added to H's diagonal: dampening * mean(diag H) (SparseGPT's percdamp).
  double dampening = 0.01;
  // Columns per mask-selection block and lazy update; for N:M it is rounded
  // down to a multiple of M (at least M) so no group straddles two blocks.
  int64_t block_size = 128;
};

// SparseGPT with H[cols, cols] = 2/n X^T X (symmetric; only read). Inputs
// that never fire (H_jj == 0) get their column zeroed, as in the reference.
// Inside a block the solver runs in f64; the lazy update of the later
// columns is an f32 GEMM on the f32 weights (as the reference); H is factored
// in f64. Errors naming `what`: invalid pattern or options, non-finite
// weight or Hessian, a Hessian that is not positive definite after
// dampening. Memory besides w and H: cols x cols f64 (the factor) and f32
// (its copy for the GEMM), and one block of rows x block_size.
absl::Status PruneSparseGpt(float* w, int64_t rows, int64_t cols, const double* H,
                            const SparsityPattern& pattern, const SparseGptOptions& options,
                            const std::string& what);

// Sparsity of a stored tensor, for `retort inspect`. Rows are the leading
// dimensions, columns the last one (the input dimension of a linear weight).
struct SparsityStats {
  int64_t elements = 0;
  int64_t zeros = 0;    // value == 0 (either sign) after conversion to f32
  double fraction = 0;  // zeros / elements (0 for an empty tensor)
  bool nm_2_4 = false;  // cols % 4 == 0 and every 4-column group has <= 2 nonzeros
  bool nm_4_8 = false;  // cols % 8 == 0 and every 8-column group has <= 4 nonzeros
};

// Error for block types whose rows are not whole blocks.
absl::StatusOr<SparsityStats> CountSparsity(const Tensor& tensor);

}  // namespace retort::prune

#endif  // RETORT_PRUNE_UNSTRUCTURED_H_
