// Transformer::Load runs GPTQ (AutoGPTQ v1) and AWQ (AutoAWQ gemm)
// checkpoints with their linears quantized, computing what the dequantized
// model computes. The checkpoints are packed here from RTN results following
// the layouts in formats/compressed_tensors.md (the per-tensor readers are
// checked against library-made fixtures in tests/formats).
#include <filesystem>

#include "core/convert.h"
#include "formats/hf_dir.h"
#include "gtest/gtest.h"
#include "model/init.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "quantize/scheme.h"

namespace retort {
namespace {

namespace fs = std::filesystem;

enum class Packing { kGptqV1, kAwqGemm };

Tensor F16Of(const Tensor& f32_scales_transposed) { return f32_scales_transposed.To(DType::kF16); }

// Packs q (int4, group scales, rows % 8 == 0, cols % 8 == 0) as GPTQ or AWQ
// tensors of `module`.
void Pack(const QuantizedMatrix& q, const std::string& module, Packing packing,
          std::vector<std::pair<std::string, Tensor>>& out) {
  const int64_t rows = q.rows, cols = q.cols, groups = q.scales.dim(1);
  auto value = [&](int64_t r, int64_t c) {
    return static_cast<uint32_t>(UnpackI4(q.values.data<uint8_t>() + r * (cols / 2), c) + 8);
  };
  auto zero = [&](int64_t r, int64_t g) {
    return static_cast<uint32_t>(
        (q.zero_points.empty() ? 0 : q.zero_points.data<int8_t>()[r * groups + g]) + 8);
  };
  Tensor scales = Tensor::Zeros(DType::kF32, {groups, rows});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      scales.mutable_data<float>()[g * rows + r] = q.scales.data<float>()[r * groups + g];
    }
  }
  if (packing == Packing::kGptqV1) {
    Tensor qweight = Tensor::Zeros(DType::kI32, {cols / 8, rows});
    Tensor qzeros = Tensor::Zeros(DType::kI32, {groups, rows / 8});
    Tensor g_idx = Tensor::Zeros(DType::kI32, {cols});
    uint32_t* qw = qweight.mutable_data<uint32_t>();
    uint32_t* qz = qzeros.mutable_data<uint32_t>();
    for (int64_t c = 0; c < cols; ++c) {
      g_idx.mutable_data<int32_t>()[c] = static_cast<int32_t>(c / q.group_size);
      for (int64_t r = 0; r < rows; ++r) qw[(c / 8) * rows + r] |= value(r, c) << (4 * (c % 8));
    }
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < rows; ++r)
        qz[g * (rows / 8) + r / 8] |= (zero(r, g) - 1) << (4 * (r % 8));
    }
    out.emplace_back(module + ".qweight", qweight);
    out.emplace_back(module + ".qzeros", qzeros);
    out.emplace_back(module + ".g_idx", g_idx);
  } else {
    // Output 8j + k sits in nibble kNibble[k] (AutoAWQ's [0,2,4,6,1,3,5,7] order).
    constexpr int kNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    Tensor qweight = Tensor::Zeros(DType::kI32, {cols, rows / 8});
    Tensor qzeros = Tensor::Zeros(DType::kI32, {groups, rows / 8});
    uint32_t* qw = qweight.mutable_data<uint32_t>();
    uint32_t* qz = qzeros.mutable_data<uint32_t>();
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t r = 0; r < rows; ++r) {
        qw[c * (rows / 8) + r / 8] |= value(r, c) << (4 * kNibble[r % 8]);
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < rows; ++r) {
        qz[g * (rows / 8) + r / 8] |= zero(r, g) << (4 * kNibble[r % 8]);
      }
    }
    out.emplace_back(module + ".qweight", qweight);
    out.emplace_back(module + ".qzeros", qzeros);
  }
  out.emplace_back(module + ".scales", F16Of(scales));
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

void CheckCheckpoint(Packing packing, const char* scheme_name, const nlohmann::json& qconfig) {
  auto c = PresetConfig("llama", "tiny");
  ASSERT_TRUE(c.ok());
  auto model = Transformer::RandomInit(*c, 21, DType::kF32);
  ASSERT_TRUE(model.ok());
  auto scheme = quant::ParseQuantScheme(scheme_name);
  ASSERT_TRUE(scheme.ok());
  scheme->scale_dtype = DType::kF16;  // what the checkpoint stores

  std::vector<std::pair<std::string, Tensor>> packed, dequantized;
  for (const auto& [name, t] : (*model)->NamedWeights()) {
    if (name.find("_proj.weight") == std::string::npos) {
      packed.emplace_back(name, t);
      dequantized.emplace_back(name, t);
      continue;
    }
    auto q = quant::QuantizeRtn(t.data<float>(), t.dim(0), t.dim(1), *scheme, name);
    ASSERT_TRUE(q.ok()) << q.status();
    Pack(*q, name.substr(0, name.size() - 7), packing, packed);
    dequantized.emplace_back(name, Dequantize(*q));
  }
  nlohmann::json config = c->ToJson();
  config["quantization_config"] = qconfig;
  const std::string dir =
      (fs::temp_directory_path() / ("retort_qckpt_" + std::to_string(::getpid()) + "_" +
                                    std::to_string(static_cast<int>(packing))))
          .string();
  ASSERT_TRUE(WriteHfDirectory(dir, config, packed).ok());
  auto loaded = Transformer::Load(dir);
  fs::remove_all(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->QuantizedWeights().size(), 7u * c->num_layers);
  for (const auto& [name, q] : (*loaded)->QuantizedWeights()) {
    EXPECT_EQ(q->value_type, DType::kI4) << name;
    EXPECT_EQ(q->group_size, 32) << name;
  }
  auto ref = Transformer::FromNamedWeights(*c, dequantized);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<int32_t> tokens(19);
  for (int i = 0; i < 19; ++i) tokens[i] = (i * 37 + 3) % c->vocab_size;
  auto want = (*ref)->Logits(tokens);
  auto got = (*loaded)->Logits(tokens);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_LT(MaxRelDiff(*got, *want), 1e-4);
}

TEST(QuantizedCheckpoint, GptqV1LoadsQuantized) {
  CheckCheckpoint(Packing::kGptqV1, "int4-g32",
                  {{"quant_method", "gptq"},
                   {"bits", 4},
                   {"group_size", 32},
                   {"desc_act", false},
                   {"sym", true}});
}

TEST(QuantizedCheckpoint, AwqGemmLoadsQuantized) {
  CheckCheckpoint(Packing::kAwqGemm, "int4-g32-asym",
                  {{"quant_method", "awq"},
                   {"bits", 4},
                   {"group_size", 32},
                   {"zero_point", true},
                   {"version", "gemm"}});
}

}  // namespace
}  // namespace retort
