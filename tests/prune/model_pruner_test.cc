// prune/model_pruner: the layer-by-layer drivers on a tiny random f32 Llama
// with synthetic calibration tokens. Every method reaches the target sparsity
// in every linear, N:M holds, nothing but the decoder linears changes,
// SparseGPT's layer output error < Wanda's < magnitude's, bad input is
// refused before any weight changes, and the structured importance has the
// sizes PlanStructuredPruning needs.
#include "prune/model_pruner.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/calibration.h"
#include "model/init.h"
#include "model/transformer.h"

namespace retort::prune {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSeed = 7;

ModelConfig TinyConfig() {
  auto c = PresetConfig("llama", "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// A random model whose RMSNorm weights vary per channel over two decades
// (log-uniform in [0.1, 10]). Real LLMs have such outlier input channels;
// without them every input column of a random model is equally strong and
// Wanda's activation weighting has nothing to find.
std::unique_ptr<Transformer> MakeModel() {
  const ModelConfig c = TinyConfig();
  auto m = Transformer::RandomInit(c, kSeed, DType::kF32);
  EXPECT_TRUE(m.ok()) << m.status();
  std::mt19937_64 rng(kSeed + 1);
  std::uniform_real_distribution<double> log_scale(std::log(0.1), std::log(10.0));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      Tensor w = Tensor::Zeros(DType::kF32, {c.hidden_size});
      for (int64_t j = 0; j < c.hidden_size; ++j) {
        w.mutable_data<float>()[j] = static_cast<float>(std::exp(log_scale(rng)));
      }
      const std::string name = "model.layers." + std::to_string(l) + "." + norm + ".weight";
      EXPECT_TRUE((*m)->ReplaceWeight(name, w).ok()) << name;
    }
  }
  return std::move(*m);
}

std::vector<std::vector<int32_t>> RandomTokens(int samples, int len, uint64_t seed, int64_t vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(1, static_cast<int32_t>(vocab) - 1);
  std::vector<std::vector<int32_t>> out(samples);
  for (auto& s : out) {
    s.resize(len);
    for (int32_t& t : s) t = id(rng);
  }
  return out;
}

std::vector<std::vector<int32_t>> Calibration() {
  return RandomTokens(16, 32, 11, TinyConfig().vocab_size);
}

bool IsDecoderLinear(const std::string& name, const ModelConfig& c) {
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) {
      if (name == LinearWeightName(l, slot)) return true;
    }
  }
  return false;
}

std::map<std::string, std::vector<char>> Bytes(const Transformer& m) {
  std::map<std::string, std::vector<char>> out;
  for (const auto& [name, t] : m.NamedWeights()) {
    const char* p = static_cast<const char*>(t.raw());
    out[name] = std::vector<char>(p, p + t.nbytes());
  }
  return out;
}

PruneOptions Options(PruneMethod method, SparsityPattern pattern, DType dtype = DType::kF32) {
  PruneOptions o;
  o.method = method;
  o.pattern = pattern;
  o.dtype = dtype;
  return o;
}

SparsityPattern Unstructured(double s) { return SparsityPattern{s, 0, 0}; }
SparsityPattern NM(int n, int m) { return SparsityPattern{1.0 - static_cast<double>(n) / m, n, m}; }

constexpr PruneMethod kMethods[] = {PruneMethod::kMagnitude, PruneMethod::kWanda,
                                    PruneMethod::kSparseGpt};

TEST(ModelPrunerTest, ParsesMethodNames) {
  for (PruneMethod m : kMethods) {
    auto parsed = ParsePruneMethod(PruneMethodName(m));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, m);
  }
  auto bad = ParsePruneMethod("obs");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"obs\": expected magnitude, wanda or sparsegpt"));
  EXPECT_FALSE(NeedsCalibration(Options(PruneMethod::kMagnitude, Unstructured(0.5))));
  EXPECT_TRUE(NeedsCalibration(Options(PruneMethod::kWanda, Unstructured(0.5))));
  EXPECT_TRUE(NeedsCalibration(Options(PruneMethod::kSparseGpt, Unstructured(0.5))));
}

// Every linear loses exactly half its weights (magnitude: of the whole
// matrix; Wanda/SparseGPT: of each row; either way numel/2 here), or obeys
// N:M; the report adds them up; every other tensor is byte-identical.
TEST(ModelPrunerTest, EveryMethodReachesTheTargetInEveryLinear) {
  const auto calib = Calibration();
  for (PruneMethod method : kMethods) {
    for (const SparsityPattern& pattern : {Unstructured(0.5), NM(2, 4), NM(4, 8)}) {
      SCOPED_TRACE(std::string(PruneMethodName(method)) + " " + pattern.ToString());
      auto model = MakeModel();
      const ModelConfig& c = model->config();
      const auto before = Bytes(*model);
      std::vector<LayerProgress> progress;
      auto report = PruneModel(*model, calib, Options(method, pattern),
                               [&](const LayerProgress& p) { progress.push_back(p); });
      ASSERT_TRUE(report.ok()) << report.status();

      int64_t elements = 0, zeros = 0;
      for (int64_t l = 0; l < c.num_layers; ++l) {
        for (LinearSlot slot : kLinearSlots) {
          const std::string name = LinearWeightName(l, slot);
          const Tensor* w = model->FindWeight(name);
          ASSERT_NE(w, nullptr) << name;
          EXPECT_EQ(w->dtype(), DType::kF32) << name;
          auto st = CountSparsity(*w);
          ASSERT_TRUE(st.ok()) << st.status();
          EXPECT_EQ(st->zeros, st->elements / 2) << name;
          if (pattern.m == 4) {
            EXPECT_TRUE(st->nm_2_4) << name;
          }
          if (pattern.m == 8) {
            EXPECT_TRUE(st->nm_4_8) << name;
          }
          if (!pattern.is_nm()) {
            EXPECT_FALSE(st->nm_4_8) << name;  // not a pattern by chance
          }
          elements += st->elements;
          zeros += st->zeros;
        }
      }
      EXPECT_EQ(report->linear_elements, elements);
      EXPECT_EQ(report->linear_zeros, zeros);
      EXPECT_DOUBLE_EQ(report->linear_sparsity(), 0.5);
      EXPECT_EQ(report->nm_2_4, pattern.m == 4);
      EXPECT_EQ(report->nm_4_8, pattern.is_nm());  // 2:4 implies 4:8
      EXPECT_EQ(report->calibration_tokens, method == PruneMethod::kMagnitude ? 0 : 16 * 32);
      EXPECT_EQ(report->layer_seconds.size(), static_cast<size_t>(c.num_layers));

      ASSERT_EQ(progress.size(), static_cast<size_t>(c.num_layers));
      for (int64_t l = 0; l < c.num_layers; ++l) {
        EXPECT_EQ(progress[l].layer, l);
        EXPECT_EQ(progress[l].num_layers, c.num_layers);
        EXPECT_GT(progress[l].peak_rss, 0u);
      }

      const auto after = Bytes(*model);
      ASSERT_EQ(after.size(), before.size());
      for (const auto& [name, bytes] : before) {
        if (IsDecoderLinear(name, c)) continue;
        ASSERT_TRUE(after.count(name)) << name;
        EXPECT_TRUE(after.at(name) == bytes) << name << " changed";
      }
    }
  }
}

TEST(ModelPrunerTest, ParsesPerLayerSchedules) {
  auto list = ParseLayerSparsity("0.3, 0.4,50%", 3);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(*list, ::testing::ElementsAre(0.3, 0.4, 0.5));
  auto ranges = ParseLayerSparsity("0=0.2,1-3=0.6,4-5=0.7", 6);
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_THAT(*ranges, ::testing::ElementsAre(0.2, 0.6, 0.6, 0.6, 0.7, 0.7));
  struct Bad {
    const char* text;
    const char* message;
  };
  for (const Bad& b :
       {Bad{"0.3,0.4", "2 fractions for 3 layers"}, Bad{"0.3,1.5,0.5", "outside (0, 1)"},
        Bad{"0.3,x,0.5", "expected a fraction"}, Bad{"0.3,2:4,0.5", "is N:M"},
        Bad{"0-1=0.5", "layer 2 has no sparsity"}, Bad{"0-2=0.5,1=0.4", "layer 1 is given twice"},
        Bad{"0-3=0.5", "outside 0-2"}, Bad{"2-1=0.5", "outside 0-2"}, Bad{"a-2=0.5", "not a layer"},
        Bad{"0-2=0.5,0.4", "expected LAYER=FRACTION"}}) {
    auto r = ParseLayerSparsity(b.text, 3);
    ASSERT_FALSE(r.ok()) << b.text;
    EXPECT_THAT(r.status().message(), HasSubstr(b.message)) << b.text;
    EXPECT_THAT(r.status().message(), HasSubstr(b.text));
  }
}

// A per-layer schedule: each layer reaches its own target (exactly: the
// widths divide), the report lists what each layer got, and the describe
// line names the range.
TEST(ModelPrunerTest, PerLayerSparsityReachesEachLayersTarget) {
  const auto calib = Calibration();
  for (PruneMethod method : kMethods) {
    SCOPED_TRACE(PruneMethodName(method));
    auto model = MakeModel();
    const ModelConfig& c = model->config();
    ASSERT_EQ(c.num_layers, 2);
    PruneOptions o = Options(method, Unstructured(0.5));
    o.layer_sparsity = {0.25, 0.75};
    EXPECT_EQ(DescribeSparsity(o), "per-layer 0.25-0.75 (mean 0.50)");
    auto report = PruneModel(*model, calib, o);
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_EQ(report->layer_sparsity.size(), 2u);
    for (int64_t l = 0; l < 2; ++l) {
      EXPECT_DOUBLE_EQ(report->layer_sparsity[l], o.layer_sparsity[l]);
      for (LinearSlot slot : kLinearSlots) {
        const std::string name = LinearWeightName(l, slot);
        auto st = CountSparsity(*model->FindWeight(name));
        ASSERT_TRUE(st.ok()) << st.status();
        EXPECT_DOUBLE_EQ(static_cast<double>(st->zeros) / st->elements, o.layer_sparsity[l])
            << name;
      }
    }
    EXPECT_DOUBLE_EQ(report->linear_sparsity(), 0.5);  // equal-sized layers
  }
}

TEST(ModelPrunerTest, RefusesBadPerLayerSchedules) {
  auto model = MakeModel();
  const auto before = Bytes(*model);
  PruneOptions wrong_size = Options(PruneMethod::kMagnitude, Unstructured(0.5));
  wrong_size.layer_sparsity = {0.5, 0.5, 0.5};
  auto r = PruneModel(*model, {}, wrong_size);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("3 entries; the model has 2 decoder layers"));
  PruneOptions nm = Options(PruneMethod::kMagnitude, NM(2, 4));
  nm.layer_sparsity = {0.5, 0.5};
  r = PruneModel(*model, {}, nm);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not N:M"));
  PruneOptions outside = Options(PruneMethod::kMagnitude, Unstructured(0.5));
  outside.layer_sparsity = {0.5, 1.0};
  r = PruneModel(*model, {}, outside);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("model.layers.1."));
  EXPECT_TRUE(Bytes(*model) == before);
}

// The pruned linears are installed in the output dtype, and the zeros are
// counted on what is installed.
TEST(ModelPrunerTest, InstallsTheOutputDType) {
  auto model = MakeModel();
  auto report =
      PruneModel(*model, Calibration(), Options(PruneMethod::kWanda, NM(2, 4), DType::kBF16));
  ASSERT_TRUE(report.ok()) << report.status();
  for (int64_t l = 0; l < model->config().num_layers; ++l) {
    for (LinearSlot slot : kLinearSlots) {
      const Tensor* w = model->FindWeight(LinearWeightName(l, slot));
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->dtype(), DType::kBF16);
    }
  }
  EXPECT_EQ(model->FindWeight("model.embed_tokens.weight")->dtype(), DType::kF32);
  EXPECT_TRUE(report->nm_2_4);
  EXPECT_DOUBLE_EQ(report->linear_sparsity(), 0.5);
}

// Sum over layers of ||pruned layer(x) - dense layer(x)||^2 / ||dense layer(x) - x||^2,
// x = the dense model's input of that layer on held-out tokens.
double LayerOutputError(const Transformer& dense, const Transformer& pruned,
                        const std::vector<std::vector<int32_t>>& tokens) {
  const ModelConfig& c = dense.config();
  auto runner = LayerwiseRunner::Start(dense, tokens);
  EXPECT_TRUE(runner.ok()) << runner.status();
  KvCache scratch = dense.NewCache(64);
  double total = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    double err = 0, ref = 0;
    for (int64_t i = 0; i < runner->num_samples(); ++i) {
      const std::vector<float>& x = runner->hidden(i);
      const int64_t n = static_cast<int64_t>(x.size()) / c.hidden_size;
      std::vector<float> yd = x, yp = x;
      EXPECT_TRUE(dense.ForwardLayer(l, yd.data(), n, scratch).ok());
      EXPECT_TRUE(pruned.ForwardLayer(l, yp.data(), n, scratch).ok());
      for (size_t k = 0; k < x.size(); ++k) {
        err += (static_cast<double>(yp[k]) - yd[k]) * (static_cast<double>(yp[k]) - yd[k]);
        ref += (static_cast<double>(yd[k]) - x[k]) * (static_cast<double>(yd[k]) - x[k]);
      }
    }
    total += err / ref;
    EXPECT_TRUE(runner->Advance().ok());
  }
  return total;
}

TEST(ModelPrunerTest, SparseGptBeatsWandaBeatsMagnitudeOnLayerOutputs) {
  const auto calib = Calibration();
  const auto held_out = RandomTokens(8, 32, 12345, TinyConfig().vocab_size);
  const auto dense = MakeModel();
  for (const SparsityPattern& pattern : {Unstructured(0.5), NM(2, 4)}) {
    SCOPED_TRACE(pattern.ToString());
    std::map<PruneMethod, double> error;
    for (PruneMethod method : kMethods) {
      auto model = MakeModel();
      auto report = PruneModel(*model, calib, Options(method, pattern));
      ASSERT_TRUE(report.ok()) << report.status();
      error[method] = LayerOutputError(*dense, *model, held_out);
    }
    const double mag = error[PruneMethod::kMagnitude], wanda = error[PruneMethod::kWanda],
                 sgpt = error[PruneMethod::kSparseGpt];
    EXPECT_GT(sgpt, 0);
    EXPECT_LT(sgpt, wanda) << "magnitude " << mag << " wanda " << wanda << " sparsegpt " << sgpt;
    EXPECT_LT(wanda, mag) << "magnitude " << mag << " wanda " << wanda << " sparsegpt " << sgpt;
  }
}

// Refused before any work: the model is left exactly as it was.
TEST(ModelPrunerTest, RefusesBadInputUpFront) {
  const auto calib = Calibration();
  struct Case {
    PruneOptions options;
    std::vector<std::vector<int32_t>> calibration;
    absl::StatusCode code;
    std::string message;
  };
  PruneOptions bad_dampening = Options(PruneMethod::kSparseGpt, Unstructured(0.5));
  bad_dampening.sparsegpt.dampening = -1;
  PruneOptions bad_block = Options(PruneMethod::kSparseGpt, Unstructured(0.5));
  bad_block.sparsegpt.block_size = 0;
  const std::vector<Case> cases = {
      {Options(PruneMethod::kMagnitude, Unstructured(0)),
       {},
       absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      {Options(PruneMethod::kMagnitude, Unstructured(1)),
       {},
       absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      {Options(PruneMethod::kWanda, Unstructured(1.5)), calib, absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      {Options(PruneMethod::kWanda, Unstructured(-0.2)), calib, absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      // 3 divides no width of the tiny model (64, 128).
      {Options(PruneMethod::kMagnitude, NM(2, 3)),
       {},
       absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      {Options(PruneMethod::kSparseGpt, NM(4, 4)), calib, absl::StatusCode::kInvalidArgument,
       "model.layers.0.self_attn.q_proj.weight"},
      {Options(PruneMethod::kWanda, Unstructured(0.5)),
       {},
       absl::StatusCode::kInvalidArgument,
       "wanda needs calibration samples"},
      {Options(PruneMethod::kSparseGpt, NM(2, 4)),
       {},
       absl::StatusCode::kInvalidArgument,
       "sparsegpt needs calibration samples"},
      {Options(PruneMethod::kSparseGpt, Unstructured(0.5)),
       {{}, {}},
       absl::StatusCode::kInvalidArgument,
       "sparsegpt needs calibration samples"},
      {bad_dampening, calib, absl::StatusCode::kInvalidArgument, "dampening"},
      {bad_block, calib, absl::StatusCode::kInvalidArgument, "block size"},
      {Options(PruneMethod::kMagnitude, Unstructured(0.5), DType::kI8),
       {},
       absl::StatusCode::kInvalidArgument,
       "f32, bf16 or f16"},
  };
  auto model = MakeModel();
  const auto before = Bytes(*model);
  for (const Case& k : cases) {
    SCOPED_TRACE(k.message);
    auto report = PruneModel(*model, k.calibration, k.options);
    ASSERT_FALSE(report.ok());
    EXPECT_EQ(report.status().code(), k.code) << report.status();
    EXPECT_THAT(report.status().message(), HasSubstr(k.message));
    EXPECT_TRUE(Bytes(*model) == before);
  }
  // CheckPruneOptions gives the same answer without the calibration set.
  EXPECT_THAT(CheckPruneOptions(*model, Options(PruneMethod::kMagnitude, NM(2, 3))).message(),
              HasSubstr("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(CheckPruneOptions(*model, Options(PruneMethod::kWanda, NM(4, 8))).ok());
  EXPECT_TRUE(CheckFloatWeights(*model).ok());
}

// A token outside the vocabulary is an error of the calibration pass.
TEST(ModelPrunerTest, RefusesTokensOutsideTheVocabulary) {
  auto model = MakeModel();
  std::vector<std::vector<int32_t>> calib = {{1, 2, 3, 100000}};
  EXPECT_FALSE(PruneModel(*model, calib, Options(PruneMethod::kWanda, Unstructured(0.5))).ok());
  EXPECT_FALSE(CollectModelImportance(*model, calib).ok());
}

TEST(ModelPrunerTest, ImportanceHasTheModelsSizesAndPlans) {
  const auto model = MakeModel();
  const ModelConfig& c = model->config();
  const auto before = Bytes(*model);
  int calls = 0;
  auto imp = CollectModelImportance(*model, Calibration(), [&](const LayerProgress& p) {
    EXPECT_EQ(p.layer, calls);
    EXPECT_EQ(p.num_layers, c.num_layers);
    ++calls;
  });
  ASSERT_TRUE(imp.ok()) << imp.status();
  EXPECT_EQ(calls, c.num_layers);
  ASSERT_EQ(imp->layers.size(), static_cast<size_t>(c.num_layers));
  for (const LayerImportance& layer : imp->layers) {
    ASSERT_EQ(layer.head.size(), static_cast<size_t>(c.num_heads));
    ASSERT_EQ(layer.mlp.size(), static_cast<size_t>(c.intermediate_size));
    for (double h : layer.head) EXPECT_TRUE(std::isfinite(h) && h > 0) << h;
    for (double m : layer.mlp) EXPECT_TRUE(std::isfinite(m) && m > 0) << m;
    EXPECT_TRUE(layer.block_influence > 0 && layer.block_influence <= 2) << layer.block_influence;
  }
  ASSERT_EQ(imp->hidden.size(), static_cast<size_t>(c.hidden_size));
  for (double h : imp->hidden) EXPECT_TRUE(std::isfinite(h) && h > 0) << h;
  EXPECT_TRUE(Bytes(*model) == before);  // the importance pass changes nothing

  StructuredTarget target;
  target.num_heads = c.num_heads / 2;
  target.intermediate_size = c.intermediate_size / 2;
  EXPECT_TRUE(CheckStructuredTarget(c, target).ok());
  auto plan = PlanStructuredPruning(c, *imp, target);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto pruned = ApplyStructuredPlan(c, model->NamedWeights(), *plan);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->first.num_heads, c.num_heads / 2);
  EXPECT_EQ(pruned->first.intermediate_size, c.intermediate_size / 2);
  EXPECT_TRUE(Transformer::FromNamedWeights(pruned->first, pruned->second).ok());
}

TEST(ModelPrunerTest, ImportanceAndTargetErrors) {
  const auto model = MakeModel();
  const ModelConfig& c = model->config();
  auto imp = CollectModelImportance(*model, {});
  ASSERT_FALSE(imp.ok());
  EXPECT_THAT(imp.status().message(), HasSubstr("needs calibration samples"));
  StructuredTarget too_many;
  too_many.num_heads = c.num_heads * 2;
  EXPECT_FALSE(CheckStructuredTarget(c, too_many).ok());
  StructuredTarget uneven;  // 3 query heads cannot fill 2 KV groups evenly
  uneven.num_heads = 3;
  EXPECT_FALSE(CheckStructuredTarget(c, uneven).ok());
  StructuredTarget budget;
  budget.target_params = 10;
  EXPECT_FALSE(CheckStructuredTarget(c, budget).ok());
}

}  // namespace
}  // namespace retort::prune
