// The training loop end to end on a tiny model and real text: the loss goes
// down, --resume continues bit-exactly, a NaN stops without saving, and the
// saved HF directory loads in the inference engine with the same logits.
#include "distill/trainer.h"

#include <filesystem>
#include <fstream>

#include "core/file.h"
#include "distill/data.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/collective.h"
#include "model/init.h"
#include "model/train_model.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer_bytes.h"

namespace retort {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Real text: the GPL-3 (Debian's common-licenses), byte-tokenized.
class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClearTrainerStopRequest();
    auto tok = Tokenizer::FromJsonString(ByteTokenizerJson().dump());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
    auto text = ReadFileToString("/usr/share/common-licenses/GPL-3");
    ASSERT_TRUE(text.ok()) << text.status();
    DatasetOptions dopt;
    dopt.eval_fraction = 0.1;
    auto examples = TextExamples(*text, *tokenizer_, dopt.text, "GPL-3");
    ASSERT_TRUE(examples.ok()) << examples.status();
    for (TrainExample& ex : *examples) data_.Add(std::move(ex), dopt.eval_fraction);
    ASSERT_GT(data_.eval().size(), 2u);
    auto config = PresetConfig("llama", "tiny");
    ASSERT_TRUE(config.ok());
    config_ = *config;
    config_.vocab_size = kByteTokenizerVocab;
    dir_ = (fs::path(::testing::TempDir()) /
            ::testing::UnitTest::GetInstance()->current_test_info()->name())
               .string();
    fs::remove_all(dir_);
  }

  struct Run {
    std::unique_ptr<TrainModel> model;
    std::unique_ptr<DataLoader> train, eval;
    std::unique_ptr<Collective> collective;
    std::unique_ptr<Trainer> trainer;
  };

  Run MakeRun(const std::string& out, TrainerOptions options) {
    Run r;
    auto model = TrainModel::RandomInit(config_, /*seed=*/7);
    EXPECT_TRUE(model.ok()) << model.status();
    r.model = *std::move(model);
    PackingOptions popt;
    popt.seq_len = 128;
    popt.rows_per_batch = 2;
    popt.seed = 3;
    auto train = DataLoader::Create(&data_.train(), popt);
    EXPECT_TRUE(train.ok()) << train.status();
    r.train = *std::move(train);
    popt.shuffle = false;
    popt.repeat = false;
    auto eval = DataLoader::Create(&data_.eval(), popt);
    EXPECT_TRUE(eval.ok()) << eval.status();
    r.eval = *std::move(eval);
    r.collective = NewLocalCollective();
    options.output_dir = out;
    options.progress = false;
    r.trainer = std::make_unique<Trainer>(r.model.get(), nullptr, r.train.get(), r.eval.get(),
                                          r.collective.get(), options);
    return r;
  }

  static TrainerOptions BaseOptions() {
    TrainerOptions o;
    o.max_steps = 8;
    o.grad_accum = 2;
    o.schedule.peak_lr = 3e-3;
    o.schedule.min_lr = 3e-4;
    o.schedule.warmup_steps = 2;
    o.optimizer.weight_decay = 0.1f;
    o.clip_grad_norm = 1.0f;
    return o;
  }

  static std::vector<nlohmann::json> Metrics(const std::string& dir) {
    std::ifstream in(fs::path(dir) / "metrics.jsonl");
    std::vector<nlohmann::json> out;
    std::string line;
    while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  Dataset data_;
  ModelConfig config_;
  std::string dir_;
};

TEST_F(TrainerTest, HeldOutLossFallsAndTheSavedModelLoadsWithTheSameLogits) {
  TrainerOptions o = BaseOptions();
  o.max_steps = 40;
  o.eval_every = 10;
  Run r = MakeRun(dir_, o);
  auto summary = r.trainer->Run();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->steps, 40);
  std::vector<double> evals;
  for (const auto& m : Metrics(dir_)) {
    if (m.contains("eval_loss")) evals.push_back(m["eval_loss"].get<double>());
  }
  ASSERT_EQ(evals.size(), 4u);
  for (size_t i = 1; i < evals.size(); ++i) EXPECT_LT(evals[i], evals[i - 1]) << i;
  EXPECT_LT(evals.back(), 0.75 * std::log(static_cast<double>(kByteTokenizerVocab)));

  // final/ is an HF directory the engine loads; its logits are the trained ones.
  auto engine = Transformer::Load((fs::path(dir_) / "final").string());
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<int32_t> tokens = tokenizer_->Encode("This License applies to", false);
  auto logits = (*engine)->Logits(tokens);
  ASSERT_TRUE(logits.ok());
  const int64_t n = tokens.size(), d = config_.hidden_size, v = config_.vocab_size;
  std::vector<int32_t> pos(n), doc(n, 0);
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i);
  std::vector<float> hidden(n * d);
  ASSERT_TRUE(r.model->Forward(tokens.data(), pos.data(), doc.data(), n, hidden.data()).ok());
  double max_err = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < v; ++j) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k)
        z += double(hidden[i * d + k]) * r.model->lm_head()[j * d + k];
      max_err = std::max(max_err, std::abs(z - (*logits)[i * v + j]));
    }
  }
  EXPECT_LT(max_err, 1e-4);
  // The tokenizer files given to the trainer are saved beside the weights.
  EXPECT_TRUE(fs::exists(fs::path(dir_) / "final" / "config.json"));
}

TEST_F(TrainerTest, ResumeIsBitExact) {
  TrainerOptions o = BaseOptions();
  o.save_every = 4;
  o.eval_every = 4;
  o.extra_files = {{"tokenizer.json", ByteTokenizerJson().dump()}};
  const std::string straight = dir_ + "_straight", resumed = dir_ + "_resumed";
  fs::remove_all(straight);
  fs::remove_all(resumed);
  {
    Run r = MakeRun(straight, o);
    ASSERT_TRUE(r.trainer->Run().ok());
  }
  {
    // Stopped after step 3: the stop saves checkpoint-3 (between the regular ones).
    Run r = MakeRun(resumed, o);
    r.trainer->set_step_callback([](int64_t step, double) {
      if (step == 3) RequestTrainerStop();
    });
    auto s = r.trainer->Run();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(s->interrupted);
    EXPECT_EQ(s->steps, 3);
    EXPECT_TRUE(fs::exists(fs::path(resumed) / "checkpoint-0000003" / "optimizer.bin"));
    EXPECT_FALSE(fs::exists(fs::path(resumed) / "final"));
    ClearTrainerStopRequest();
  }
  {
    // A new process state: fresh model (different init is overwritten), loader at 0.
    TrainerOptions o2 = o;
    o2.resume = true;
    Run r = MakeRun(resumed, o2);
    auto s = r.trainer->Run();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->steps, 8);
  }
  for (const char* file : {"final/model.safetensors", "checkpoint-0000008/optimizer.bin",
                           "checkpoint-0000008/master.safetensors", "final/tokenizer.json"}) {
    auto a = ReadFileToString((fs::path(straight) / file).string());
    auto b = ReadFileToString((fs::path(resumed) / file).string());
    ASSERT_TRUE(a.ok() && b.ok()) << file;
    EXPECT_TRUE(*a == *b) << file << " differs between the straight and the resumed run";
  }
  // The metrics of both runs agree line by line (losses, lr, grad norm, evals).
  auto ma = Metrics(straight), mb = Metrics(resumed);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    for (const char* key : {"step", "loss", "lr", "grad_norm", "eval_loss"}) {
      if (ma[i].contains(key)) {
        EXPECT_EQ(ma[i][key], mb[i][key]) << i << " " << key;
      }
    }
  }
}

TEST_F(TrainerTest, RefusesToOverwriteAnEarlierRunWithoutResume) {
  TrainerOptions o = BaseOptions();
  o.max_steps = 1;
  {
    Run r = MakeRun(dir_, o);
    ASSERT_TRUE(r.trainer->Run().ok());
  }
  Run r = MakeRun(dir_, o);
  auto s = r.trainer->Run();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--resume"));
}

TEST_F(TrainerTest, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  TrainerOptions o = BaseOptions();
  o.max_steps = 6;
  o.grad_accum = 1;
  o.save_every = 1;
  o.schedule.kind = LrScheduleKind::kConstant;
  o.schedule.warmup_steps = 0;
  o.schedule.peak_lr = 1e30;  // the first update blows the weights up
  o.clip_grad_norm = 0;
  Run r = MakeRun(dir_, o);
  auto s = r.trainer->Run();
  ASSERT_FALSE(s.ok());
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr("stopped without saving"));
  EXPECT_THAT(msg, HasSubstr("checkpoint-0000001"));
  EXPECT_TRUE(fs::exists(fs::path(dir_) / "checkpoint-0000001" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "final"));
}

}  // namespace
}  // namespace retort
