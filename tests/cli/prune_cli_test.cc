// `retort prune` as users run it, on a tiny `retort init` model with real
// text (GPL-3) as calibration: every unstructured method at 50% and the N:M
// patterns (sparsity counted independently from the written safetensors),
// structured pruning to a target config and to a parameter budget, the
// outputs loading in `retort eval`, `retort inspect`'s sparsity line,
// --format sparse (compressed-tensors sparse-bitmask / sparse-24-bitmask), and
// one-line errors that write nothing.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_harness.h"
#include "core/tensor.h"
#include "formats/compressed_tensors.h"
#include "formats/hf_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {
namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;
using ::testing::HasSubstr;

constexpr char kText[] = "/usr/share/common-licenses/GPL-3";
constexpr char kCalib[] =
    "--calib /usr/share/common-licenses/GPL-3 --calib-samples 8 --calib-seq-len 128 --threads 2";

int Lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

bool IsLinear(const std::string& name) {
  return name.rfind("model.layers.", 0) == 0 && name.size() > 12 &&
         name.compare(name.size() - 12, 12, "_proj.weight") == 0;
}

// Zeros per linear weight of an HF directory, read without retort's pruning code.
struct Counted {
  int64_t elements = 0, zeros = 0;
  bool every_matrix_exact = true;  // each linear has exactly floor(fraction * numel) zeros
  bool nm_holds = true;            // every m-column group has <= n nonzeros
};

Counted CountZeros(const std::string& dir, double fraction, int n, int m) {
  Counted c;
  auto hf = HfDirectory::Open(dir);
  EXPECT_TRUE(hf.ok()) << hf.status();
  if (!hf.ok()) return c;
  for (const std::string& name : (*hf)->TensorNames()) {
    if (!IsLinear(name)) continue;
    auto t = (*hf)->Get(name);
    EXPECT_TRUE(t.ok()) << t.status();
    Tensor f = t->To(DType::kF32);
    const float* w = f.data<float>();
    const int64_t rows = f.dim(0), cols = f.dim(1);
    int64_t zeros = 0;
    for (int64_t i = 0; i < rows * cols; ++i) zeros += w[i] == 0.0f;
    if (zeros != static_cast<int64_t>(std::floor(fraction * rows * cols + 1e-9))) {
      c.every_matrix_exact = false;
    }
    if (m > 0) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g = 0; g < cols; g += m) {
          int nonzero = 0;
          for (int64_t j = g; j < g + m; ++j) nonzero += w[r * cols + j] != 0.0f;
          if (nonzero > n) c.nm_holds = false;
        }
      }
    }
    c.elements += rows * cols;
    c.zeros += zeros;
  }
  return c;
}

class PruneCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    h_ = new CliHarness("prune_cli");
    // 4 layers so structured pruning can drop some; bf16 like real checkpoints.
    CliRun init = h_->Exec("init " + Model() + " --size tiny --layers 4 --dtype bf16 --seed 3");
    ASSERT_EQ(init.code, 0) << init.err;
  }
  static void TearDownTestSuite() { delete h_; }
  static std::string Model() { return (h_->root() / "base").string(); }
  static std::string Out(const std::string& name) { return (h_->root() / name).string(); }

  static nlohmann::json Json(const CliRun& r) {
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return j;
  }
  // `retort eval --perplexity` on the output: loads and gives a finite number.
  static void ExpectEvaluates(const std::string& dir) {
    CliRun e = h_->Exec("eval " + dir + " --perplexity " + kText +
                        " --max-tokens 384 --context 128 --threads 2 --json");
    ASSERT_EQ(e.code, 0) << e.err;
    const double ppl = Json(e)["perplexity"].get<double>();
    EXPECT_TRUE(std::isfinite(ppl) && ppl > 1) << e.out;
  }
  // A bad invocation: one line on stderr naming `what`, exit `code`, and
  // nothing at OUT (nor a staging folder beside it).
  static void ExpectRefused(const std::string& args, int code, const std::string& what) {
    const std::string out = Out("refused");
    CliRun r = h_->Exec("prune " + Model() + " " + out + " " + args);
    EXPECT_EQ(r.code, code) << args << "\n" << r.err;
    EXPECT_EQ(Lines(r.err), 1) << args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(what)) << args;
    EXPECT_FALSE(fs::exists(out)) << args;
    for (const auto& e : fs::directory_iterator(h_->root())) {
      EXPECT_EQ(e.path().filename().string().find(".refused"), std::string::npos) << e.path();
    }
  }
  static CliHarness* h_;
};
CliHarness* PruneCliTest::h_ = nullptr;

TEST_F(PruneCliTest, EveryMethodReachesHalfSparsityAndTheOutputRuns) {
  auto base = HfDirectory::Open(Model());
  ASSERT_TRUE(base.ok()) << base.status();
  for (const std::string method : {"magnitude", "wanda", "sparsegpt"}) {
    SCOPED_TRACE(method);
    const std::string out = Out("u50_" + method);
    CliRun r = h_->Exec("prune " + Model() + " " + out + " --method " + method +
                        " --sparsity 0.5 --json " + kCalib);
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = Json(r);
    EXPECT_EQ(j["method"], method);
    EXPECT_EQ(j["linear_zeros"].get<int64_t>() * 2, j["linear_elements"].get<int64_t>());
    EXPECT_EQ(j["dtype"], "BF16");  // the model's dtype
    EXPECT_THAT(r.err, HasSubstr("[prune] layer 4/4"));

    const Counted c = CountZeros(out, 0.5, 0, 0);
    EXPECT_GT(c.elements, 0);
    EXPECT_EQ(c.zeros * 2, c.elements);
    EXPECT_TRUE(c.every_matrix_exact);
    EXPECT_EQ(c.elements, j["linear_elements"].get<int64_t>());

    // Everything that is not a decoder linear is untouched, and the config
    // and tokenizer come along.
    auto pruned = HfDirectory::Open(out);
    ASSERT_TRUE(pruned.ok()) << pruned.status();
    EXPECT_EQ((*pruned)->TensorNames(), (*base)->TensorNames());
    for (const std::string& name : (*base)->TensorNames()) {
      if (IsLinear(name)) continue;
      Tensor a = *(*base)->Get(name), b = *(*pruned)->Get(name);
      ASSERT_EQ(a.dtype(), b.dtype()) << name;
      ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
      EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes())) << name;
    }
    EXPECT_TRUE(fs::exists(fs::path(out) / "tokenizer.json"));
    ExpectEvaluates(out);

    CliRun inspect = h_->Exec("inspect " + out);
    ASSERT_EQ(inspect.code, 0) << inspect.err;
    EXPECT_THAT(inspect.out, HasSubstr("linear weights 50.00% zero"));
  }
  // The unpruned model reports no sparsity.
  CliRun inspect = h_->Exec("inspect " + Model() + " --json");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  nlohmann::json j = Json(inspect);
  EXPECT_EQ(j["sparsity"]["linear_zeros"], 0);
  EXPECT_EQ(j["sparsity"]["nm_2_4"], false);
}

// A per-layer schedule: every layer reaches its own fraction, reported per
// layer, and the output runs.
TEST_F(PruneCliTest, PerLayerSparsitySchedule) {
  for (const std::string method : {"magnitude", "sparsegpt"}) {
    SCOPED_TRACE(method);
    const std::string out = Out("layers_" + method);
    CliRun r = h_->Exec("prune " + Model() + " " + out + " --method " + method +
                        " --layer-sparsity 0=0.25,1-2=0.5,3=0.75 --json " + kCalib);
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = Json(r);
    EXPECT_EQ(j["pattern"], "per-layer 0.25-0.75 (mean 0.50)");
    EXPECT_EQ(j["layer_sparsity"], nlohmann::json({0.25, 0.5, 0.5, 0.75}));
    EXPECT_EQ(j["linear_zeros"].get<int64_t>() * 2, j["linear_elements"].get<int64_t>());
    EXPECT_THAT(r.err, HasSubstr("per-layer 0.25-0.75"));
    ExpectEvaluates(out);
  }
}

TEST_F(PruneCliTest, NMPatternsHoldInEveryGroup) {
  struct Case {
    std::string method, pattern;
    int n, m;
  };
  for (const Case& c : {Case{"magnitude", "2:4", 2, 4}, Case{"wanda", "2:4", 2, 4},
                        Case{"sparsegpt", "2:4", 2, 4}, Case{"sparsegpt", "4:8", 4, 8}}) {
    SCOPED_TRACE(c.method + " " + c.pattern);
    const std::string out = Out("nm_" + c.method + "_" + c.pattern.substr(0, 1));
    CliRun r = h_->Exec("prune " + Model() + " " + out + " --method " + c.method + " --pattern " +
                        c.pattern + " --dtype f32 --json " + kCalib);
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = Json(r);
    EXPECT_EQ(j["dtype"], "F32");
    EXPECT_EQ(j[c.m == 4 ? "nm_2_4" : "nm_4_8"], true);
    const Counted counted = CountZeros(out, 0.5, c.n, c.m);
    EXPECT_TRUE(counted.nm_holds);
    EXPECT_EQ(counted.zeros * 2, counted.elements);  // exactly n of m kept: 50%
    ExpectEvaluates(out);

    CliRun inspect = h_->Exec("inspect " + out + " --json");
    ASSERT_EQ(inspect.code, 0) << inspect.err;
    nlohmann::json s = Json(inspect)["sparsity"];
    EXPECT_EQ(s["nm_4_8"], true);  // 2:4 implies 4:8
    EXPECT_EQ(s["nm_2_4"], c.m == 4);
    EXPECT_DOUBLE_EQ(s["fraction"].get<double>(), 0.5);
  }
}

TEST_F(PruneCliTest, StructuredToATargetConfig) {
  const std::string out = Out("s_config");
  CliRun r = h_->Exec("prune " + Model() + " " + out +
                      " --structured --num-layers 3 --num-heads 2 --num-kv-heads 1"
                      " --intermediate-size 96 --hidden-size 48 --json " +
                      kCalib);
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = Json(r);
  auto dir = HfDirectory::Open(out);
  ASSERT_TRUE(dir.ok()) << dir.status();
  const nlohmann::json& config = (*dir)->config();
  EXPECT_EQ(config["num_hidden_layers"], 3);
  EXPECT_EQ(config["num_attention_heads"], 2);
  EXPECT_EQ(config["num_key_value_heads"], 1);
  EXPECT_EQ(config["intermediate_size"], 96);
  EXPECT_EQ(config["hidden_size"], 48);
  EXPECT_EQ(config["head_dim"], 16);  // unchanged
  EXPECT_EQ(j["config"]["num_layers"], 3);
  EXPECT_LT(j["parameters"].get<int64_t>(), j["parameters_before"].get<int64_t>());
  int64_t params = 0;
  for (const std::string& name : (*dir)->TensorNames()) params += (*dir)->Get(name)->numel();
  EXPECT_EQ(params, j["parameters"].get<int64_t>());
  EXPECT_FALSE((*dir)->Has("model.layers.3.mlp.down_proj.weight"));
  ExpectEvaluates(out);
  // The smaller dense model converts to GGUF and that file runs too.
  const std::string gguf = Out("s_config.gguf");
  CliRun c = h_->Exec("convert " + out + " " + gguf + " --type f16");
  ASSERT_EQ(c.code, 0) << c.err;
  CliRun inspect = h_->Exec("inspect " + gguf);
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  ExpectEvaluates(gguf);
}

TEST_F(PruneCliTest, StructuredToAParameterBudget) {
  const std::string out = Out("s_budget");
  CliRun r =
      h_->Exec("prune " + Model() + " " + out + " --structured --target-params 60% " + kCalib);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("kept"));
  CliRun inspect = h_->Exec("inspect " + out + " --json");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  nlohmann::json after = Json(inspect);
  nlohmann::json before = Json(h_->Exec("inspect " + Model() + " --json"));
  const int64_t p0 = before["parameters"].get<int64_t>(), p1 = after["parameters"].get<int64_t>();
  EXPECT_LE(p1, static_cast<int64_t>(0.6 * p0));
  EXPECT_GT(p1, static_cast<int64_t>(0.3 * p0));
  EXPECT_EQ(after["num_heads"].get<int64_t>() % after["num_kv_heads"].get<int64_t>(), 0);
  ExpectEvaluates(out);
}

// The recovery recipe of `retort prune --help` and the README: the pruned
// model distills from the unpruned one (same tokenizer) and the result runs.
TEST_F(PruneCliTest, StructuredThenDistillFromTheUnprunedModel) {
  const std::string pruned = Out("recipe_pruned"), recovered = Out("recipe_recovered");
  CliRun p =
      h_->Exec("prune " + Model() + " " + pruned + " --structured --target-params 50% " + kCalib);
  ASSERT_EQ(p.code, 0) << p.err;
  CliRun d = h_->Exec("distill " + pruned + " --teacher " + Model() +
                      " --kd-weight 1 --ce-weight 0 --data " + kText +
                      " --seq-len 64 --batch-rows 2 --max-steps 3 --threads 2 -q -o " + recovered);
  ASSERT_EQ(d.code, 0) << d.err;
  ExpectEvaluates(recovered + "/final");
}

// --format sparse writes the same model as the default dense output, with
// every decoder linear in compressed-tensors' sparse layout and the config
// block the library writes; everything else is the dense output's bytes.
// Recovery after 2:4 pruning: with --keep-sparsity the distilled student
// keeps every zero (2:4 still holds, same zero count) while its other
// weights move; without it the pattern is lost.
TEST_F(PruneCliTest, SparseRecoveryKeepsThePattern) {
  const std::string pruned = Out("s24"), kept = Out("s24_kept"), lost = Out("s24_lost");
  CliRun p =
      h_->Exec("prune " + Model() + " " + pruned + " --method wanda --pattern 2:4 " + kCalib);
  ASSERT_EQ(p.code, 0) << p.err;
  const std::string common = " --teacher " + Model() + " --kd-weight 1 --ce-weight 0 --data " +
                             std::string(kText) +
                             " --seq-len 64 --batch-rows 2 --max-steps 3 --lr 1e-2 --threads 2 ";
  CliRun d = h_->Exec("distill " + pruned + common + "--keep-sparsity -o " + kept);
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_THAT(d.err, HasSubstr("zero entries of the decoder linears stay zero"));
  d = h_->Exec("distill " + pruned + common + "-q -o " + lost);
  ASSERT_EQ(d.code, 0) << d.err;
  auto sparsity = [&](const std::string& dir) {
    CliRun r = h_->Exec("inspect " + dir + " --json");
    EXPECT_EQ(r.code, 0) << r.err;
    return Json(r)["sparsity"];
  };
  const nlohmann::json before = sparsity(pruned), after = sparsity(kept + "/final"),
                       free = sparsity(lost + "/final");
  EXPECT_EQ(after["nm_2_4"], true);
  EXPECT_EQ(after["linear_zeros"], before["linear_zeros"]);
  EXPECT_EQ(free["nm_2_4"], false);
  EXPECT_LT(free["linear_zeros"].get<int64_t>(), before["linear_zeros"].get<int64_t>());
  // The kept run did train: its weights differ from the pruned model's.
  auto a = HfDirectory::Open(pruned), b = HfDirectory::Open(kept + "/final");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  Tensor ta = (*a)->Get(name)->To(DType::kF32), tb = (*b)->Get(name)->To(DType::kF32);
  ASSERT_EQ(ta.numel(), tb.numel());
  int64_t moved = 0;
  for (int64_t i = 0; i < ta.numel(); ++i) moved += ta.data<float>()[i] != tb.data<float>()[i];
  EXPECT_GT(moved, ta.numel() / 4);
  ExpectEvaluates(kept + "/final");
}

TEST_F(PruneCliTest, SparseFormatUnpacksToTheDenseOutput) {
  struct Case {
    std::string args, structure, format;
    bool two_four;
  };
  for (const Case& c : {Case{"--sparsity 0.5", "unstructured", "sparse-bitmask", false},
                        Case{"--pattern 2:4", "2:4", "sparse-24-bitmask", true}}) {
    SCOPED_TRACE(c.args);
    const std::string tag = c.two_four ? "24" : "50";
    const std::string dense_out = Out("fmt_dense_" + tag), sparse_out = Out("fmt_sparse_" + tag);
    CliRun d = h_->Exec("prune " + Model() + " " + dense_out + " --method magnitude " + c.args +
                        " --json");
    ASSERT_EQ(d.code, 0) << d.err;
    CliRun r = h_->Exec("prune " + Model() + " " + sparse_out + " --method magnitude " + c.args +
                        " --format sparse --json");
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json j = Json(r);
    EXPECT_EQ(j["format"], c.format);
    auto dense = HfDirectory::Open(dense_out);
    auto sparse = HfDirectory::Open(sparse_out);
    ASSERT_TRUE(dense.ok()) << dense.status();
    ASSERT_TRUE(sparse.ok()) << sparse.status();

    const nlohmann::json& q = (*sparse)->config()["quantization_config"];
    const double global = j["linear_zeros"].get<double>() / j["parameters"].get<double>();
    EXPECT_EQ(q, SparseQuantizationConfig(c.structure, global, {"lm_head"})) << q.dump();
    EXPECT_EQ(q["sparsity_config"]["format"], c.format);
    EXPECT_EQ(q["sparsity_config"]["targets"], nlohmann::json::array({"Linear"}));
    EXPECT_FALSE((*dense)->config().contains("quantization_config"));

    const HfDirectory& sd = **sparse;
    TensorLookup lookup = [&sd](const std::string& name) -> std::optional<Tensor> {
      if (!sd.Has(name)) return std::nullopt;
      auto t = sd.Get(name);
      if (!t.ok()) return std::nullopt;
      return *t;
    };
    int linears = 0;
    size_t expected_names = 0;
    for (const std::string& name : (*dense)->TensorNames()) {
      Tensor want = *(*dense)->Get(name);
      if (!IsLinear(name)) {
        ++expected_names;
        ASSERT_TRUE(sd.Has(name)) << name;
        Tensor got = *sd.Get(name);
        ASSERT_EQ(got.dtype(), want.dtype()) << name;
        ASSERT_EQ(got.nbytes(), want.nbytes()) << name;
        EXPECT_EQ(0, std::memcmp(got.raw(), want.raw(), want.nbytes())) << name;
        continue;
      }
      ++linears;
      const std::string module = name.substr(0, name.size() - 7);
      EXPECT_FALSE(sd.Has(name)) << name;
      std::vector<std::string> parts = {"shape", "compressed", "bitmask"};
      if (!c.two_four) parts.push_back("row_offsets");
      for (const std::string& p : parts) EXPECT_TRUE(sd.Has(module + "." + p)) << module << p;
      expected_names += parts.size();
      auto got = c.two_four ? UnpackSparse24Bitmask(module, lookup, want.dtype())
                            : UnpackSparseBitmask(module, lookup, want.dtype());
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->shape(), want.shape()) << name;
      EXPECT_EQ(0, std::memcmp(got->raw(), want.raw(), want.nbytes())) << name;
    }
    EXPECT_EQ(linears, 4 * 7);
    EXPECT_EQ(sd.TensorNames().size(), expected_names);
    EXPECT_EQ(Json(d)["format"], "dense");
    EXPECT_EQ(j["parameters"], Json(d)["parameters"]);
    EXPECT_LT(j["bytes"].get<int64_t>(), Json(d)["bytes"].get<int64_t>());
  }
  ExpectRefused("--structured --target-params 50% --format sparse " + std::string(kCalib), 2,
                "--format sparse");
  ExpectRefused("--method magnitude --sparsity 0.5 --format packed", 2, "packed");
}

TEST_F(PruneCliTest, BadInputIsOneLineAndWritesNothing) {
  const std::string calib = kCalib;
  ExpectRefused("--method wanda --sparsity 1.5 " + calib, 2, "1.5");
  ExpectRefused("--method magnitude --sparsity 0", 2, "0");
  ExpectRefused("--method magnitude --pattern 4:4", 2, "4:4");
  ExpectRefused("--method magnitude --pattern 2:3", 1, "model.layers.0");  // 3 does not divide 64
  ExpectRefused("--method magnitude --sparsity 0.5 --pattern 2:4", 2, "exactly one");
  ExpectRefused("--method magnitude --sparsity 2:4", 2, "--pattern");
  ExpectRefused("--method magnitude --sparsity 0.5 --layer-sparsity 0-3=0.5", 2, "exactly one");
  ExpectRefused("--method magnitude --layer-sparsity 0.5,0.5", 2, "2 fractions for 4 layers");
  ExpectRefused("--method magnitude --layer-sparsity 0-2=0.5", 2, "layer 3 has no sparsity");
  ExpectRefused("--method magnitude --layer-sparsity 0-3=1.2", 2, "outside (0, 1)");
  ExpectRefused("--structured --layer-sparsity 0-3=0.5 " + calib, 2, "--layer-sparsity");
  ExpectRefused("--method prune-harder --sparsity 0.5", 2, "prune-harder");
  ExpectRefused("--method wanda --sparsity 0.5", 2, "--calib");
  ExpectRefused("--method sparsegpt --pattern 2:4", 2, "--calib");
  ExpectRefused("--structured --num-layers 2", 2, "--calib");
  ExpectRefused("--structured " + calib, 2, "--target-params");
  ExpectRefused("--num-heads 2 " + calib, 2, "--structured");
  // 3 query heads cannot fill 2 kv groups evenly.
  ExpectRefused("--structured --num-heads 3 --num-kv-heads 2 " + calib, 1, "num_heads");
  ExpectRefused("--structured --num-kv-heads 3 " + calib, 1, "kv");
  ExpectRefused("--structured --target-params lots " + calib, 2, "lots");
  ExpectRefused("--method magnitude --sparsity 0.5 --dtype f8", 2, "f8");
  ExpectRefused("--method wanda --sparsity 0.5 --calib /does/not/exist", 1, "/does/not/exist");
  // An existing OUT is never overwritten.
  const std::string taken = Out("taken");
  fs::create_directories(taken);
  { std::ofstream(fs::path(taken) / "keep.txt") << "mine"; }
  CliRun r = h_->Exec("prune " + Model() + " " + taken + " --method magnitude --sparsity 0.5");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("already exists"));
  EXPECT_TRUE(fs::exists(fs::path(taken) / "keep.txt"));
}

}  // namespace
}  // namespace retort
