// Helpers shared by the compressed-tensors tests (quantized and sparse):
// library-made fixtures, safetensors contents as maps, lookups, comparisons.
#ifndef RETORT_TESTS_FORMATS_COMPRESSED_TENSORS_TEST_UTIL_H_
#define RETORT_TESTS_FORMATS_COMPRESSED_TENSORS_TEST_UTIL_H_

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/convert.h"
#include "core/tensor.h"
#include "formats/compressed_tensors.h"
#include "formats/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/formats/test_util.h"

namespace retort::testing_util {

inline std::string CtFixture(const std::string& name) {
  return SourceDir() + "/tests/reference/compressed_tensors/" + name;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

inline std::unique_ptr<SafetensorsReader> OpenOrDie(const std::string& path) {
  auto r = SafetensorsReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

// Every tensor of a safetensors file, copied out of the mapping.
inline std::map<std::string, Tensor> LoadAll(const std::string& path) {
  std::map<std::string, Tensor> out;
  auto r = OpenOrDie(path);
  if (!r) return out;
  for (const auto& e : r->entries()) out[e.name] = (*r->Get(e.name)).Clone();
  return out;
}

inline TensorLookup MapLookup(const std::map<std::string, Tensor>& tensors) {
  return [&tensors](const std::string& name) -> std::optional<Tensor> {
    auto it = tensors.find(name);
    if (it == tensors.end()) return std::nullopt;
    return it->second;
  };
}

inline std::map<std::string, Tensor> ToMap(const std::vector<std::pair<std::string, Tensor>>& v) {
  return std::map<std::string, Tensor>(v.begin(), v.end());
}

inline std::vector<float> AsF32(const Tensor& t) {
  std::vector<float> v(t.numel());
  ConvertToF32(t.dtype(), t.raw(), v.data(), t.numel());
  return v;
}

inline bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace retort::testing_util

#endif  // RETORT_TESTS_FORMATS_COMPRESSED_TENSORS_TEST_UTIL_H_
