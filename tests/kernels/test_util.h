// Helpers for the CPU kernel tests: deterministic random data and tensors.
#ifndef RETORT_TESTS_KERNELS_TEST_UTIL_H_
#define RETORT_TESTS_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <vector>

#include "core/convert.h"
#include "core/tensor.h"

namespace retort::testing {

inline std::vector<float> RandomVector(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// An owned tensor of `dtype` holding `values` (rounded to dtype).
inline Tensor MakeTensor(DType dtype, Shape shape, const std::vector<float>& values) {
  Tensor t = Tensor::Zeros(dtype, shape);
  ConvertFromF32(dtype, values.data(), t.mutable_raw(), t.numel());
  return t;
}

// The values a tensor holds, widened to double.
inline std::vector<double> TensorValues(const Tensor& t) {
  std::vector<float> f(t.numel());
  ConvertToF32(t.dtype(), t.raw(), f.data(), t.numel());
  return std::vector<double>(f.begin(), f.end());
}

}  // namespace retort::testing

#endif  // RETORT_TESTS_KERNELS_TEST_UTIL_H_
