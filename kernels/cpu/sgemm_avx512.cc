// The AVX-512 build of Sgemm's blocked GEMM (sgemm_kernels.h). This file
// alone is compiled with -mavx512f (kernels/cpu/CMakeLists.txt); sgemm.cc
// calls it only when the CPU reports AVX-512 F. Keep it free of anything that
// could be shared with other translation units (no std containers or
// out-of-line std algorithms): an inline function instantiated here with
// AVX-512 instructions could be the copy the linker keeps for everyone.
//
// Layout of the packed panels (both zero-padded to full width so the
// micro-kernel never reads outside them):
//   A micro-panel: for p in [0, kc): kMR floats A[i0 + r, p0 + p], r < kMR.
//   B micro-panel: for p in [0, kc): kNR floats B[p0 + p, j0 + j], j < kNR.
// Operands stored with k contiguous (A not transposed, B transposed) are
// packed by 16 x 16 register transposes; the others by row copies.
//
// GCC 12's 512-bit intrinsics pass _mm512_undefined_*() as the unused merge
// operand of their masked builtins, which -W(maybe-)uninitialized reports at
// every use (GCC bug 105593); nothing here reads an undefined value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/sgemm_kernels.h"

#if !defined(__AVX512F__)
#error "sgemm_avx512.cc needs -mavx512f"
#endif

namespace retort::cpu::sgemm_internal {
namespace {

inline int Min(int a, int b) { return a < b ? a : b; }

// Mask of the low `n` lanes (0 <= n <= 16).
inline __mmask16 LowLanes(int n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1u);
}

// In-place transpose of 16 rows of 16 floats.
inline void Transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Group g = rows 4g..4g+3; u[4g + s] holds, in 128-bit lane l, column
  // 4l + s of those four rows.
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int s = 0; s < 4; ++s) {
    const __m512 lo01 = _mm512_shuffle_f32x4(u[s], u[4 + s], 0x44);
    const __m512 hi01 = _mm512_shuffle_f32x4(u[s], u[4 + s], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0x44);
    const __m512 hi23 = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0xEE);
    r[s] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    r[4 + s] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    r[8 + s] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    r[12 + s] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
}

// Packs `rows` (<= 16) source rows of `kc` contiguous floats (row r at
// src + r * ld) as columns: dst[p * dst_stride + r] = src[r * ld + p] for
// p < kc, r < 16 (rows >= `rows` read as zero); each dst row is written
// under `store_mask`.
void PackTransposed16(const float* src, int64_t ld, int rows, int kc, float* dst, int dst_stride,
                      __mmask16 store_mask) {
  for (int p0 = 0; p0 < kc; p0 += 16) {
    const int np = Min(16, kc - p0);
    const __mmask16 load_mask = LowLanes(np);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
      r[i] = i < rows ? _mm512_maskz_loadu_ps(load_mask, src + i * ld + p0) : _mm512_setzero_ps();
    }
    Transpose16x16(r);
    float* d = dst + static_cast<int64_t>(p0) * dst_stride;
    for (int p = 0; p < np; ++p) _mm512_mask_storeu_ps(d + p * dst_stride, store_mask, r[p]);
  }
}

// One micro-panel of A: rows [0, mr) of op(A) from `a` (already offset to the
// panel's first row and first k), kc values of k.
void PackAPanel(bool trans_a, const float* a, int64_t lda, int mr, int kc, float* dst) {
  if (!trans_a) {  // A[i, p] = a[i * lda + p]: 14 rows to transpose
    PackTransposed16(a, lda, mr, kc, dst, kMR, LowLanes(kMR));
    return;
  }
  // A[i, p] = a[p * lda + i]: a row copy per p.
  const __mmask16 load_mask = LowLanes(mr);
  for (int p = 0; p < kc; ++p) {
    _mm512_mask_storeu_ps(dst + p * kMR, LowLanes(kMR),
                          _mm512_maskz_loadu_ps(load_mask, a + p * lda));
  }
}

// One micro-panel of B: columns [0, nr) of op(B) from `b` (offset to the
// panel's first column and first k), kc values of k.
void PackBPanel(bool trans_b, const float* b, int64_t ldb, int nr, int kc, float* dst) {
  if (trans_b) {  // B[p, j] = b[j * ldb + p]: two 16-column transposes
    PackTransposed16(b, ldb, Min(nr, 16), kc, dst, kNR, 0xFFFF);
    if (nr > 16) {
      PackTransposed16(b + 16 * ldb, ldb, nr - 16, kc, dst + 16, kNR, 0xFFFF);
    } else {
      for (int p = 0; p < kc; ++p) _mm512_store_ps(dst + p * kNR + 16, _mm512_setzero_ps());
    }
    return;
  }
  // B[p, j] = b[p * ldb + j]: a row copy per p.
  const __mmask16 m0 = LowLanes(nr), m1 = LowLanes(nr - 16 > 0 ? nr - 16 : 0);
  for (int p = 0; p < kc; ++p) {
    const float* src = b + p * ldb;
    _mm512_store_ps(dst + p * kNR, _mm512_maskz_loadu_ps(m0, src));
    _mm512_store_ps(dst + p * kNR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
  }
}

// C[R, 16 * V] (columns of the last vector under `last_mask`) =
// alpha * Apanel · Bpanel + beta * C over kc values of k. R <= kMR rows of
// the A panel are used, V <= 2 vectors of each B row. beta == 0 does not
// read C.
template <int R, int V>
void MicroKernel(int kc, const float* ap, const float* bp, float* c, int64_t ldc, float alpha,
                 float beta, __mmask16 last_mask) {
  // C's lines arrive while the k loop runs (the tile is read for beta != 0
  // and written in any case; prefetchw fetches them ready for writing).
#pragma GCC unroll 14
  for (int r = 0; r < R; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * V - 1), _MM_HINT_ET0);
  }
  __m512 acc[R][V];
#pragma GCC unroll 14
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int p = 0; p < kc; ++p) {
    __m512 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(bp + 16 * v);
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(ap[r]);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    ap += kMR;
    bp += kNR;
  }
  const __m512 valpha = _mm512_set1_ps(alpha), vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      const __mmask16 mask = v == V - 1 ? last_mask : static_cast<__mmask16>(0xFFFF);
      __m512 x = alpha == 1.f ? acc[r][v] : _mm512_mul_ps(acc[r][v], valpha);
      if (beta == 1.f) {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, cr + 16 * v));
      } else if (beta != 0.f) {
        x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, cr + 16 * v), vbeta, x);
      }
      _mm512_mask_storeu_ps(cr + 16 * v, mask, x);
    }
  }
}

using MicroKernelFn = void (*)(int, const float*, const float*, float*, int64_t, float, float,
                               __mmask16);

template <int R>
constexpr MicroKernelFn kKernelPair[2] = {&MicroKernel<R, 1>, &MicroKernel<R, 2>};

// kKernels[r - 1][v - 1]: the micro-kernel for r rows and v vectors.
constexpr const MicroKernelFn* kKernels[kMR] = {
    kKernelPair<1>,  kKernelPair<2>,  kKernelPair<3>,  kKernelPair<4>, kKernelPair<5>,
    kKernelPair<6>,  kKernelPair<7>,  kKernelPair<8>,  kKernelPair<9>, kKernelPair<10>,
    kKernelPair<11>, kKernelPair<12>, kKernelPair<13>, kKernelPair<14>};

}  // namespace

void SgemmAvx512(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc, float* pack_a,
                 float* pack_b) {
  const int64_t lda64 = lda, ldb64 = ldb, ldc64 = ldc;
  for (int jc = 0; jc < n; jc += kNC) {
    const int nc = Min(kNC, n - jc);
    for (int pc = 0; pc < k; pc += kKC) {
      const int kc = Min(kKC, k - pc);
      // The first block of k applies beta; later blocks add to C.
      const float block_beta = pc == 0 ? beta : 1.f;
      for (int jr = 0; jr < nc; jr += kNR) {
        const int j = jc + jr;
        const float* src = trans_b ? b + j * ldb64 + pc : b + pc * ldb64 + j;
        PackBPanel(trans_b, src, ldb64, Min(kNR, nc - jr), kc, pack_b + jr * kc);
      }
      for (int ic = 0; ic < m; ic += kMC) {
        const int mc = Min(kMC, m - ic);
        for (int ir = 0; ir < mc; ir += kMR) {
          const int i = ic + ir;
          const float* src = trans_a ? a + pc * lda64 + i : a + i * lda64 + pc;
          PackAPanel(trans_a, src, lda64, Min(kMR, mc - ir), kc, pack_a + ir * kc);
        }
        for (int jr = 0; jr < nc; jr += kNR) {
          const int nr = Min(kNR, nc - jr);
          const int v = nr > 16 ? 2 : 1;
          const __mmask16 last_mask = LowLanes(nr - 16 * (v - 1));
          const float* bp = pack_b + jr * kc;
          for (int ir = 0; ir < mc; ir += kMR) {
            const int mr = Min(kMR, mc - ir);
            float* ct = c + (ic + ir) * ldc64 + jc + jr;
            kKernels[mr - 1][v - 1](kc, pack_a + ir * kc, bp, ct, ldc64, alpha, block_beta,
                                    last_mask);
          }
        }
      }
    }
  }
}

}  // namespace retort::cpu::sgemm_internal
