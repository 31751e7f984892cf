#include "prune/unstructured.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/convert.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/backend.h"

namespace retort::prune {
namespace {

absl::Status Invalid(const std::string& what, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", msg));
}

// How many of `group` entries a group at `sparsity` loses (see the header).
int64_t PruneCount(double sparsity, int64_t group) {
  const int64_t k = static_cast<int64_t>(std::floor(sparsity * static_cast<double>(group) + 1e-9));
  return std::clamp<int64_t>(k, 0, group);
}

absl::Status CheckMatrix(const float* w, int64_t rows, int64_t cols, const std::string& what) {
  if (rows <= 0 || cols <= 0) {
    return Invalid(what, absl::StrCat("empty weight matrix [", rows, ", ", cols, "]"));
  }
  if (w == nullptr) return Invalid(what, "null weight pointer");
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(w[i])) {
      return Invalid(
          what, absl::StrCat("weight [", i / cols, ", ", i % cols, "] is not finite (", w[i], ")"));
    }
  }
  return absl::OkStatus();
}

// Indices (into scores[0..n)) of the k smallest scores, ties to the lower
// index; `idx` is scratch of size n. Returns them in idx[0..k).
void SmallestK(const double* scores, int64_t n, int64_t k, std::vector<int64_t>& idx) {
  idx.resize(n);
  std::iota(idx.begin(), idx.end(), int64_t{0});
  if (k <= 0 || k >= n) return;
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), [&](int64_t a, int64_t b) {
    return scores[a] < scores[b] || (scores[a] == scores[b] && a < b);
  });
}

// Zeroes, in every N:M group of each row, the m - n entries of smallest
// score(r, c) (ties to the lower column).
template <typename Score>
void PruneNmGroups(float* w, int64_t rows, int64_t cols, int n, int m, const Score& score) {
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<double> s(m);
    std::vector<int64_t> idx;
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < cols; g += m) {
        for (int j = 0; j < m; ++j) s[j] = score(r, g + j);
        SmallestK(s.data(), m, m - n, idx);
        for (int j = 0; j < m - n; ++j) w[r * cols + g + idx[j]] = 0.0f;
      }
    }
  });
}

}  // namespace

std::string SparsityPattern::ToString() const {
  if (is_nm()) return absl::StrCat(n, ":", m);
  return absl::StrCat(sparsity);
}

absl::StatusOr<SparsityPattern> ParseSparsityPattern(const std::string& text) {
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("sparsity \"", text, "\": ", msg));
  };
  auto parse_int = [](const std::string& s, int* out) {
    if (s.empty() || s.size() > 6) return false;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
    }
    *out = std::atoi(s.c_str());
    return true;
  };
  SparsityPattern p;
  const size_t colon = text.find(':');
  if (colon != std::string::npos) {
    if (!parse_int(text.substr(0, colon), &p.n) || !parse_int(text.substr(colon + 1), &p.m)) {
      return err("expected N:M with two positive integers, e.g. 2:4");
    }
    if (p.m < 1 || p.n < 1 || p.n >= p.m) {
      return err("N:M needs 1 <= N < M (N = nonzeros kept in every M consecutive inputs)");
    }
    p.sparsity = 1.0 - static_cast<double>(p.n) / p.m;
    return p;
  }
  std::string number = text;
  double scale = 1.0;
  if (!number.empty() && number.back() == '%') {
    number.pop_back();
    scale = 0.01;
  }
  char* end = nullptr;
  const double v = number.empty() ? 0.0 : std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || !std::isfinite(v)) {
    return err("expected a fraction (0.5), a percentage (50%) or N:M (2:4)");
  }
  p.sparsity = v * scale;
  if (!(p.sparsity > 0.0 && p.sparsity < 1.0)) {
    return err(absl::StrCat("sparsity ", p.sparsity, " is outside (0, 1)"));
  }
  return p;
}

absl::Status ValidateSparsityPattern(const SparsityPattern& p, int64_t cols,
                                     const std::string& what) {
  if (p.is_nm() || p.n != 0) {
    if (p.m < 1 || p.n < 1 || p.n >= p.m) {
      return Invalid(what, absl::StrCat("N:M pattern ", p.n, ":", p.m, " needs 1 <= N < M"));
    }
    if (cols % p.m != 0) {
      return Invalid(what, absl::StrCat("N:M pattern ", p.n, ":", p.m, ": M (", p.m,
                                        ") does not divide the ", cols, " input columns"));
    }
    return absl::OkStatus();
  }
  if (!(p.sparsity > 0.0 && p.sparsity < 1.0)) {
    return Invalid(what, absl::StrCat("sparsity ", p.sparsity, " is outside (0, 1)"));
  }
  return absl::OkStatus();
}

absl::Status PruneMagnitude(float* w, int64_t rows, int64_t cols, const SparsityPattern& pattern,
                            const std::string& what) {
  RETURN_IF_ERROR(ValidateSparsityPattern(pattern, cols, what));
  RETURN_IF_ERROR(CheckMatrix(w, rows, cols, what));
  if (pattern.is_nm()) {
    PruneNmGroups(w, rows, cols, pattern.n, pattern.m, [&](int64_t r, int64_t c) {
      return std::fabs(static_cast<double>(w[r * cols + c]));
    });
    return absl::OkStatus();
  }
  // One comparison group: the k-th smallest |w| is the threshold t; all
  // entries below t go, and entries equal to t go in index order until k.
  const int64_t numel = rows * cols;
  const int64_t k = PruneCount(pattern.sparsity, numel);
  if (k == 0) return absl::OkStatus();
  std::vector<float> mags(numel);
  for (int64_t i = 0; i < numel; ++i) mags[i] = std::fabs(w[i]);
  std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end());
  const float t = mags[k - 1];
  mags = {};
  int64_t below = 0;
  for (int64_t i = 0; i < numel; ++i) below += std::fabs(w[i]) < t;
  int64_t ties_left = k - below;
  for (int64_t i = 0; i < numel; ++i) {
    const float a = std::fabs(w[i]);
    if (a < t) {
      w[i] = 0.0f;
    } else if (a == t && ties_left > 0) {
      w[i] = 0.0f;
      --ties_left;
    }
  }
  return absl::OkStatus();
}

absl::Status PruneWanda(float* w, int64_t rows, int64_t cols, const double* input_sq_norm,
                        const SparsityPattern& pattern, const std::string& what) {
  RETURN_IF_ERROR(ValidateSparsityPattern(pattern, cols, what));
  RETURN_IF_ERROR(CheckMatrix(w, rows, cols, what));
  if (input_sq_norm == nullptr) return Invalid(what, "null input norms");
  std::vector<double> norm(cols);
  for (int64_t j = 0; j < cols; ++j) {
    if (!std::isfinite(input_sq_norm[j]) || input_sq_norm[j] < 0) {
      return Invalid(what, absl::StrCat("input squared norm of column ", j,
                                        " must be finite and >= 0, got ", input_sq_norm[j]));
    }
    norm[j] = std::sqrt(input_sq_norm[j]);
  }
  auto score = [&](int64_t r, int64_t c) {
    return std::fabs(static_cast<double>(w[r * cols + c])) * norm[c];
  };
  if (pattern.is_nm()) {
    PruneNmGroups(w, rows, cols, pattern.n, pattern.m, score);
    return absl::OkStatus();
  }
  const int64_t k = PruneCount(pattern.sparsity, cols);
  ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
    std::vector<double> s(cols);
    std::vector<int64_t> idx;
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < cols; ++c) s[c] = score(r, c);
      SmallestK(s.data(), cols, k, idx);
      for (int64_t j = 0; j < k; ++j) w[r * cols + idx[j]] = 0.0f;
    }
  });
  return absl::OkStatus();
}

absl::Status PruneSparseGpt(float* w, int64_t rows, int64_t cols, const double* H,
                            const SparsityPattern& pattern, const SparseGptOptions& options,
                            const std::string& what) {
  RETURN_IF_ERROR(ValidateSparsityPattern(pattern, cols, what));
  if (!(options.dampening >= 0.0) || !std::isfinite(options.dampening)) {
    return Invalid(
        what, absl::StrCat("SparseGPT dampening must be finite and >= 0, got ", options.dampening));
  }
  if (options.block_size < 1) {
    return Invalid(what,
                   absl::StrCat("SparseGPT block size must be >= 1, got ", options.block_size));
  }
  RETURN_IF_ERROR(CheckMatrix(w, rows, cols, what));
  if (H == nullptr) return Invalid(what, "null Hessian");
  for (int64_t i = 0; i < cols * cols; ++i) {
    if (!std::isfinite(H[i])) {
      return Invalid(what,
                     absl::StrCat("Hessian entry [", i / cols, ", ", i % cols, "] is not finite"));
    }
  }

  // H + damping, with never-active inputs given a unit diagonal (their
  // weights are zeroed: they never contribute to the output).
  std::vector<double> h(H, H + cols * cols);
  for (int64_t j = 0; j < cols; ++j) {
    if (h[j * cols + j] == 0.0) {
      h[j * cols + j] = 1.0;
      for (int64_t r = 0; r < rows; ++r) w[r * cols + j] = 0.0f;
    }
  }
  double mean_diag = 0;
  for (int64_t j = 0; j < cols; ++j) mean_diag += h[j * cols + j];
  mean_diag /= static_cast<double>(cols);
  const double damp = options.dampening * mean_diag;
  for (int64_t j = 0; j < cols; ++j) h[j * cols + j] += damp;

  // U: upper Cholesky factor of H^-1 (H^-1 = U^T U); row i of U is what the
  // GPTQ/SparseGPT solver uses to spread column i's error over columns > i.
  Backend& be = DefaultBackend();
  absl::Status fact = be.UpperCholeskyOfInverse(h.data(), cols);
  if (!fact.ok()) {
    return Invalid(what, absl::StrCat("Hessian (", cols, "x", cols,
                                      ") is not positive definite after dampening ",
                                      options.dampening, ": ", fact.message()));
  }
  const std::vector<double>& u = h;
  std::vector<float> uf(u.begin(), u.end());

  int64_t block = options.block_size;
  if (pattern.is_nm()) block = std::max<int64_t>(pattern.m, block / pattern.m * pattern.m);
  std::vector<double> w1, scores;
  std::vector<float> err1;
  std::vector<uint8_t> mask;
  std::vector<int64_t> idx;
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(cols, i1 + block), count = i2 - i1;
    w1.resize(rows * count);
    err1.assign(rows * count, 0.0f);
    mask.assign(rows * count, 0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < count; ++c) w1[r * count + c] = w[r * cols + i1 + c];
    }
    auto saliency = [&](int64_t r, int64_t c) {
      const double d = u[(i1 + c) * cols + i1 + c];
      return w1[r * count + c] * w1[r * count + c] / (d * d);
    };
    if (!pattern.is_nm()) {
      // Adaptive mask selection: the block's rows x count entries compete.
      scores.resize(rows * count);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < count; ++c) scores[r * count + c] = saliency(r, c);
      }
      const int64_t k = PruneCount(pattern.sparsity, rows * count);
      SmallestK(scores.data(), rows * count, k, idx);
      for (int64_t j = 0; j < k; ++j) mask[idx[j]] = 1;
    }
    ParallelFor(rows, 8, [&](int64_t begin, int64_t end) {
      std::vector<double> s;
      std::vector<int64_t> gidx;
      for (int64_t r = begin; r < end; ++r) {
        double* wr = &w1[r * count];
        for (int64_t i = 0; i < count; ++i) {
          if (pattern.is_nm() && i % pattern.m == 0) {
            // The group's mask is chosen when the solver reaches it, from
            // the weights as updated by the columns before it.
            s.resize(pattern.m);
            for (int j = 0; j < pattern.m; ++j) s[j] = saliency(r, i + j);
            SmallestK(s.data(), pattern.m, pattern.m - pattern.n, gidx);
            for (int j = 0; j < pattern.m - pattern.n; ++j) mask[r * count + i + gidx[j]] = 1;
          }
          const double* ui = &u[(i1 + i) * cols + i1];
          const double q = mask[r * count + i] ? 0.0 : wr[i];
          const double e = (wr[i] - q) / ui[i];
          for (int64_t j = i + 1; j < count; ++j) wr[j] -= e * ui[j];
          wr[i] = q;
          err1[r * count + i] = static_cast<float>(e);
        }
        for (int64_t c = 0; c < count; ++c) w[r * cols + i1 + c] = static_cast<float>(wr[c]);
      }
    });
    // Lazy update of the columns after the block: W[:, i2:] -= Err1 · U[i1:i2, i2:].
    const int64_t rest = cols - i2;
    if (rest > 0) {
      FirstError error;
      ParallelFor(rows, 64, [&](int64_t begin, int64_t end) {
        error.Update(be.Gemm(false, false, end - begin, rest, count, -1.0f, &err1[begin * count],
                             count, &uf[i1 * cols + i2], cols, 1.0f, w + begin * cols + i2, cols));
      });
      RETURN_IF_ERROR(error.status());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SparsityStats> CountSparsity(const Tensor& tensor) {
  const DType dt = tensor.dtype();
  SparsityStats st;
  if (tensor.empty()) return st;
  st.elements = tensor.numel();
  if (st.elements == 0) return st;
  const int64_t cols = tensor.rank() == 0 ? 1 : tensor.dim(-1);
  const int64_t rows = st.elements / cols;
  if (IsBlockQuantized(dt) && cols % DTypeBlockElems(dt) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sparsity of a ", std::string(DTypeName(dt)), " tensor: rows of ", cols,
                     " elements are not whole blocks of ", DTypeBlockElems(dt)));
  }
  st.nm_2_4 = cols % 4 == 0;
  st.nm_4_8 = cols % 8 == 0;
  // Whole rows at a time, an even number of them (packed I4 rows of odd
  // length then still start on a byte).
  const int64_t chunk_rows = std::max<int64_t>(2, (int64_t{1} << 16) / cols / 2 * 2);
  std::vector<float> buf;
  const char* base = static_cast<const char*>(tensor.raw());
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t nr = std::min(chunk_rows, rows - r0);
    buf.resize(nr * cols);
    ConvertToF32(dt, base + DTypeBytes(dt, r0 * cols), buf.data(), nr * cols);
    for (int64_t r = 0; r < nr; ++r) {
      const float* row = &buf[r * cols];
      int64_t nz4 = 0, nz8 = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const bool zero = row[c] == 0.0f;
        st.zeros += zero;
        nz4 += !zero;
        nz8 += !zero;
        if (c % 4 == 3) {
          if (nz4 > 2) st.nm_2_4 = false;
          nz4 = 0;
        }
        if (c % 8 == 7) {
          if (nz8 > 4) st.nm_4_8 = false;
          nz8 = 0;
        }
      }
    }
  }
  st.fraction = static_cast<double>(st.zeros) / static_cast<double>(st.elements);
  return st;
}

}  // namespace retort::prune
