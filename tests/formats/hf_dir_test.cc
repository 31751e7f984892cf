#include "formats/hf_dir.h"

#include <filesystem>

#include "core/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/formats/test_util.h"

namespace retort {
namespace {

using ::retort::testing_util::Fixture;
using ::retort::testing_util::ReadBytes;
using ::retort::testing_util::ScratchDir;
using ::retort::testing_util::WriteBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

// Values ((7 i) mod 11 - 5) / 2, the formula of make_fixtures.py.
Tensor Formula(DType dtype, Shape shape) {
  Tensor f = Tensor::Zeros(DType::kF32, shape);
  for (int64_t i = 0; i < f.numel(); ++i) f.mutable_data<float>()[i] = ((7 * i) % 11 - 5) / 2.0f;
  return f.To(dtype);
}

std::string Bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

nlohmann::json TinyConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 4},
          {"num_hidden_layers", 1},
          {"vocab_size", 6},
          {"torch_dtype", "bfloat16"}};
}

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& prefix,
                 const std::string& needle) {
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_EQ(s.code(), code) << msg;
  EXPECT_THAT(msg, StartsWith(prefix));
  EXPECT_THAT(msg, HasSubstr(needle));
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// --- reading a sharded folder written the python / transformers way -----------

TEST(HfDirectoryTest, ReadsPythonShardedFolder) {
  const std::string dir = Fixture("hf_sharded");
  auto d = HfDirectory::Open(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->dir(), dir);
  EXPECT_EQ((*d)->config()["model_type"], "llama");
  EXPECT_THAT((*d)->TensorNames(),
              ElementsAre("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"));
  EXPECT_TRUE((*d)->Has("model.norm.weight"));
  EXPECT_FALSE((*d)->Has("model.layers.0.mlp.up_proj.weight"));
  EXPECT_EQ((*d)->FileOf("lm_head.weight"), dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ((*d)->WeightFiles().size(), 2u);

  auto embed = (*d)->GetWithShape("model.embed_tokens.weight", {6, 4});
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(embed->dtype(), DType::kBF16);
  EXPECT_EQ(Bytes(*embed), Bytes(Formula(DType::kBF16, {6, 4})));
  auto norm = (*d)->Get("model.norm.weight");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->data<float>()[0], -2.5f);
  EXPECT_EQ(norm->data<float>()[1], 1.0f);

  ExpectError((*d)->GetWithShape("model.norm.weight", {5}).status(),
              absl::StatusCode::kInvalidArgument, dir + "/model-00001-of-00002.safetensors: ",
              "tensor model.norm.weight has shape [4], expected [5]");
  EXPECT_EQ(std::string((*d)->GetWithShape("lm_head.weight", {4, 6}).status().message()),
            dir +
                "/model-00002-of-00002.safetensors: tensor lm_head.weight has shape [6, 4], "
                "expected [4, 6]");
  ExpectError((*d)->Get("nope.weight").status(), absl::StatusCode::kNotFound, dir + ": ",
              "nope.weight");

  EXPECT_EQ((*d)->FilePath("config.json"), dir + "/config.json");
  EXPECT_EQ((*d)->FilePath("tokenizer.json"), "");
}

// Our writer with python's tensor order and the same shard split produces the
// very same four files.
TEST(HfDirectoryTest, ShardedWriteIsByteIdenticalToPythonFolder) {
  ScratchDir out;
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"model.norm.weight", Formula(DType::kF32, {4})},
      {"model.embed_tokens.weight", Formula(DType::kBF16, {6, 4})},
      {"lm_head.weight", Formula(DType::kBF16, {6, 4})},
  };
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), tensors, {.max_shard_bytes = 64}).ok());
  EXPECT_THAT(out.List(),
              ElementsAre("config.json", "model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors", "model.safetensors.index.json"));
  for (const std::string& f : out.List()) {
    SCOPED_TRACE(f);
    EXPECT_EQ(ReadBytes(out.File(f)), ReadBytes(Fixture("hf_sharded/" + f)));
  }
}

// --- writing and reopening ---------------------------------------------------

TEST(HfDirectoryTest, ShardedWriteAndReopen) {
  ScratchDir out;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (int i = 0; i < 7; ++i)
    tensors.emplace_back("layer." + std::to_string(i) + ".w", Formula(DType::kF32, {5, 3 + i}));
  tensors.emplace_back("big",
                       Formula(DType::kBF16, {100}));  // larger than the limit: a shard of its own
  const std::string dir = out.File("model");           // created by the writer
  ASSERT_TRUE(WriteHfDirectory(dir, TinyConfig(), tensors, {.max_shard_bytes = 150}).ok());

  auto d = HfDirectory::Open(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  // 60+80 | 100 | 120 | 140 | 160 | 180 | 200 bytes.
  EXPECT_EQ((*d)->WeightFiles().size(), 7u);
  EXPECT_EQ((*d)->config(), TinyConfig());
  EXPECT_EQ((*d)->TensorNames().size(), tensors.size());
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    auto got = (*d)->GetWithShape(name, t.shape());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(Bytes(*got), Bytes(t));
    total += t.nbytes();
  }
  // Every shard respects the limit unless it holds a single tensor.
  for (const std::string& f : (*d)->WeightFiles()) {
    auto r = SafetensorsReader::Open(f);
    ASSERT_TRUE(r.ok());
    uint64_t bytes = 0;
    for (const auto& e : (*r)->entries()) bytes += e.end - e.begin;
    EXPECT_TRUE(bytes <= 150 || (*r)->entries().size() == 1) << f;
    EXPECT_EQ((*r)->metadata().at("format"), "pt");
  }
  auto index = nlohmann::json::parse(ReadBytes(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  EXPECT_EQ(index["weight_map"]["big"], "model-00007-of-00007.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.1.w"], "model-00001-of-00007.safetensors");
}

TEST(HfDirectoryTest, SingleFileWriteAndReopen) {
  ScratchDir out;
  Tensor w = Formula(DType::kF16, {3, 2});
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), {{"w", w}}).ok());
  EXPECT_THAT(out.List(), ElementsAre("config.json", "model.safetensors"));
  auto d = HfDirectory::Open(out.path());
  ASSERT_TRUE(d.ok()) << d.status();
  auto got = (*d)->Get("w");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(Bytes(*got), Bytes(w));
}

TEST(HfDirectoryTest, RewriteInOtherLayoutRemovesStaleWeights) {
  ScratchDir out;
  std::vector<std::pair<std::string, Tensor>> tensors = {{"a", Formula(DType::kF32, {8})},
                                                         {"b", Formula(DType::kF32, {8})},
                                                         {"c", Formula(DType::kF32, {8})}};
  WriteBytes(out.File("tokenizer.json"), "{}");
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), tensors, {.max_shard_bytes = 32}).ok());
  EXPECT_THAT(out.List(),
              ElementsAre("config.json", "model-00001-of-00003.safetensors",
                          "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                          "model.safetensors.index.json", "tokenizer.json"));
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), tensors, {.max_shard_bytes = 64}).ok());
  EXPECT_THAT(out.List(), ElementsAre("config.json", "model-00001-of-00002.safetensors",
                                      "model-00002-of-00002.safetensors",
                                      "model.safetensors.index.json", "tokenizer.json"));
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), tensors).ok());
  EXPECT_THAT(out.List(), ElementsAre("config.json", "model.safetensors", "tokenizer.json"));
  ASSERT_TRUE(WriteHfDirectory(out.path(), TinyConfig(), tensors, {.max_shard_bytes = 32}).ok());
  EXPECT_THAT(out.List(),
              ElementsAre("config.json", "model-00001-of-00003.safetensors",
                          "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                          "model.safetensors.index.json", "tokenizer.json"));
  auto d = HfDirectory::Open(out.path());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->FilePath("tokenizer.json"), out.File("tokenizer.json"));
}

TEST(HfDirectoryTest, WriterRefusesDuplicateNamesAndWritesNothing) {
  ScratchDir out;
  const std::string dir = out.File("model");
  Tensor w = Formula(DType::kF32, {2});
  ExpectError(
      WriteHfDirectory(dir, TinyConfig(), {{"w", w}, {"v", w}, {"w", w}}, {.max_shard_bytes = 8}),
      absl::StatusCode::kInvalidArgument, dir + ": ", "duplicate tensor name \"w\"");
  EXPECT_FALSE(fs::exists(dir));
}

TEST(HfDirectoryTest, WriterRefusesBadTensorAndWritesNothing) {
  ScratchDir out;
  Tensor w = Formula(DType::kF32, {2});
  ExpectError(WriteHfDirectory(out.path(), TinyConfig(), {{"w", w}, {"v", Tensor()}},
                               {.max_shard_bytes = 8}),
              absl::StatusCode::kInvalidArgument,
              out.File("model-00002-of-00002.safetensors") + ": ", "has no data");
  EXPECT_TRUE(out.List().empty());
  ExpectError(WriteHfDirectory(out.path(), nlohmann::json::array(), {{"w", w}}),
              absl::StatusCode::kInvalidArgument, out.File("config.json") + ": ",
              "must be a JSON object");
  EXPECT_TRUE(out.List().empty());
}

// --- a folder that is not a valid model ---------------------------------------

class HfDirectoryBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        WriteHfDirectory(dir_.path(), TinyConfig(),
                         {{"a", Formula(DType::kF32, {4})}, {"b", Formula(DType::kF32, {4})}},
                         {.max_shard_bytes = 16})
            .ok());
  }
  std::string Index() const { return dir_.File("model.safetensors.index.json"); }
  absl::Status OpenStatus() const { return HfDirectory::Open(dir_.path()).status(); }
  ScratchDir dir_;
};

TEST_F(HfDirectoryBadInputTest, ValidToStartWith) {
  EXPECT_TRUE(OpenStatus().ok()) << OpenStatus();
}

TEST_F(HfDirectoryBadInputTest, MissingFolder) {
  ExpectError(HfDirectory::Open(dir_.File("absent")).status(), absl::StatusCode::kNotFound,
              dir_.File("absent") + ": ", "no such directory");
}

TEST_F(HfDirectoryBadInputTest, FileInsteadOfFolder) {
  ExpectError(HfDirectory::Open(Index()).status(), absl::StatusCode::kInvalidArgument,
              Index() + ": ", "not a directory");
}

TEST_F(HfDirectoryBadInputTest, MissingConfig) {
  fs::remove(dir_.File("config.json"));
  ExpectError(OpenStatus(), absl::StatusCode::kNotFound, dir_.File("config.json") + ": ",
              "no such file");
}

TEST_F(HfDirectoryBadInputTest, ConfigNotJson) {
  WriteBytes(dir_.File("config.json"), "{\"model_type\": \"llama\",");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, dir_.File("config.json") + ": ",
              "not valid JSON");
}

TEST_F(HfDirectoryBadInputTest, ConfigNotAnObject) {
  WriteBytes(dir_.File("config.json"), "[1, 2]");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, dir_.File("config.json") + ": ",
              "expected a JSON object, got array");
}

TEST_F(HfDirectoryBadInputTest, IndexPointsAtMissingShard) {
  fs::remove(dir_.File("model-00002-of-00002.safetensors"));
  ExpectError(OpenStatus(), absl::StatusCode::kNotFound, Index() + ": ",
              "shard \"model-00002-of-00002.safetensors\" (for tensor \"b\") does not exist");
}

TEST_F(HfDirectoryBadInputTest, IndexNamesTensorMissingFromShard) {
  WriteBytes(
      Index(),
      R"({"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors",
    "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  ExpectError(OpenStatus(), absl::StatusCode::kNotFound, Index() + ": ",
              "tensor \"c\" is mapped to \"model-00002-of-00002.safetensors\", but " +
                  dir_.File("model-00002-of-00002.safetensors") + " has no such tensor");
}

TEST_F(HfDirectoryBadInputTest, IndexNotJson) {
  WriteBytes(Index(), "{\"weight_map\": ");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ", "not valid JSON");
}

TEST_F(HfDirectoryBadInputTest, IndexWithoutWeightMap) {
  WriteBytes(Index(), R"({"metadata": {"total_size": 32}})");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ",
              "missing \"weight_map\"");
  WriteBytes(Index(), R"({"weight_map": ["a"]})");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ",
              "\"weight_map\" must be an object");
  WriteBytes(Index(), R"({"weight_map": {"a": 1}})");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ",
              "must be a file name string");
}

TEST_F(HfDirectoryBadInputTest, IndexShardOutsideFolder) {
  WriteBytes(Index(), R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ",
              "not a file inside the model folder");
  WriteBytes(Index(), R"({"weight_map": {"a": "/etc/passwd"}})");
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, Index() + ": ",
              "not a file inside the model folder");
}

TEST_F(HfDirectoryBadInputTest, CorruptShardNamesTheShard) {
  const std::string shard = dir_.File("model-00001-of-00002.safetensors");
  std::string bytes = ReadBytes(shard);
  WriteBytes(shard, bytes.substr(0, bytes.size() - 2));
  ExpectError(OpenStatus(), absl::StatusCode::kDataLoss, shard + ": ", "truncated");
}

TEST_F(HfDirectoryBadInputTest, NoWeights) {
  for (const std::string& f : dir_.List())
    if (f != "config.json") fs::remove(dir_.File(f));
  ExpectError(OpenStatus(), absl::StatusCode::kNotFound, dir_.path() + ": ",
              "no model.safetensors");
}

TEST_F(HfDirectoryBadInputTest, SeveralSafetensorsWithoutIndex) {
  fs::remove(Index());
  ExpectError(OpenStatus(), absl::StatusCode::kInvalidArgument, dir_.path() + ": ",
              "2 *.safetensors files (model-00001-of-00002.safetensors, "
              "model-00002-of-00002.safetensors, ...) but no "
              "model.safetensors.index.json");
}

TEST_F(HfDirectoryBadInputTest, SingleOddlyNamedSafetensorsIsAccepted) {
  fs::remove(Index());
  fs::remove(dir_.File("model-00002-of-00002.safetensors"));
  fs::rename(dir_.File("model-00001-of-00002.safetensors"), dir_.File("weights.safetensors"));
  auto d = HfDirectory::Open(dir_.path());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT((*d)->TensorNames(), ElementsAre("a"));
  EXPECT_EQ((*d)->FileOf("a"), dir_.File("weights.safetensors"));
}

TEST_F(HfDirectoryBadInputTest, MisShapedTensor) {
  auto d = HfDirectory::Open(dir_.path());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(
      std::string((*d)->GetWithShape("b", {2, 2}).status().message()),
      dir_.File("model-00002-of-00002.safetensors") + ": tensor b has shape [4], expected [2, 2]");
}

}  // namespace
}  // namespace retort
