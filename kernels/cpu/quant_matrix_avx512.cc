// The QuantizedMatrix GEMV kernels (quant_matrix_kernels.h) built with
// AVX-512 F/BW/VL: 16 floats a step where the AVX2 build takes 8. This file
// alone is compiled with those flags (kernels/cpu/CMakeLists.txt);
// quant_matrix_matmul.cc calls it only when quant_matmul.h's QuantDotPath is
// kAvx512Vnni (a CPU with AVX-512 F/BW/VL/VNNI, and RETORT_NO_AVX512 unset).
// Keep it free of anything that could be shared with other translation units
// (no std containers or out-of-line std algorithms).
// GCC 12's 512-bit intrinsics pass _mm512_undefined_*() as the unused merge
// operand of their masked builtins, which -Wmaybe-uninitialized reports at
// every use (GCC bug 105593); nothing here reads an undefined value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/cpu/quant_matrix_kernels.h"

#if !defined(__AVX512F__) || !defined(__AVX512VL__) || !defined(__AVX512BW__)
#error "quant_matrix_avx512.cc needs -mavx512f -mavx512bw -mavx512vl"
#endif

namespace retort::cpu::qmm_internal {

void GemvRowsFastAvx512(const GemvJob& job) { GemvRowsFastByType<Avx512>(job); }

}  // namespace retort::cpu::qmm_internal
