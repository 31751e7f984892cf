#include "pipeline/recipe.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/stage_command.h"

namespace retort::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char kGood[] = R"pb(
  name: "tiny"
  description: "init, distill, convert, eval"
  stage {
    name: "init"
    init { family: "llama" size: "tiny" seed: 3 rope_theta: 10000 }
  }
  stage {
    name: "sft"
    label: "student after SFT"
    distill {
      student: "@init"
      data: "data/train.jsonl"
      data: "@init/extra.jsonl"
      max_steps: 4
      lr: 0.0003
      seq_len: 64
      answers_only: true
    }
    extra_args: "--quiet"
  }
  stage {
    name: "gguf"
    convert { model: "@sft" type: "q8_0" }
  }
  stage {
    name: "eval-sft"
    eval { model: "@sft" prompts: "/abs/heldout.jsonl" max_tokens: 32 think_prefix: "off" }
  }
)pb";

absl::StatusOr<proto::Recipe> Parse(const std::string& text) {
  return ParseRecipe(text, "r.textproto", RecipeSyntax::kText);
}

std::string Error(const std::string& text) {
  absl::StatusOr<proto::Recipe> r = Parse(text);
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? std::string() : std::string(r.status().message());
}

TEST(RecipeTest, ParsesTextFormat) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->stage_size(), 4);
  EXPECT_EQ(r->name(), "tiny");
  EXPECT_EQ(StageKind(r->stage(0)), "init");
  EXPECT_EQ(StageKind(r->stage(1)), "distill");
  EXPECT_EQ(StageLabel(r->stage(0)), "init");
  EXPECT_EQ(StageLabel(r->stage(1)), "student after SFT");
  EXPECT_EQ(StageMainOutput(r->stage(0)), "final");
  EXPECT_EQ(StageMainOutput(r->stage(1)), "final");
  EXPECT_EQ(StageMainOutput(r->stage(2)), "out.gguf");
  EXPECT_EQ(StageMainOutput(r->stage(3)), "result.json");
  EXPECT_TRUE(r->stage(1).distill().has_max_steps());
  EXPECT_FALSE(r->stage(1).distill().has_epochs());
}

TEST(RecipeTest, ParsesJsonToTheSameMessage) {
  const std::string json = R"({"name": "tiny", "stage": [
      {"name": "init", "init": {"family": "llama", "size": "tiny"}},
      {"name": "sft", "distill": {"student": "@init", "data": ["d.jsonl"], "max_steps": 4,
                                  "answersOnly": true}}]})";
  absl::StatusOr<proto::Recipe> r = ParseRecipe(json, "r.json", RecipeSyntax::kJson);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage(1).distill().max_steps(), 4);
  EXPECT_TRUE(r->stage(1).distill().answers_only());
  // The text rendering parses back to the same recipe.
  absl::StatusOr<proto::Recipe> again = Parse(RecipeToText(*r));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), r->SerializeAsString());

  absl::StatusOr<proto::Recipe> bad =
      ParseRecipe(R"({"name": "x", "stage": [{"name": "a", "init": {"sise": "tiny"}}]})", "r.json",
                  RecipeSyntax::kJson);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("r.json"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("sise"));
}

TEST(RecipeTest, SyntaxErrorsAndUnknownFieldsCarryTheLine) {
  EXPECT_THAT(Error("name: \"x\"\nstage {\n  name: \"a\"\n  init { sise: \"tiny\" }\n}\n"),
              HasSubstr("r.textproto:4:"));
  EXPECT_THAT(Error("name: \"x\"\nstage {\n  name: \"a\"\n  init { sise: \"tiny\" }\n}\n"),
              HasSubstr("sise"));
  EXPECT_THAT(Error("name: \"x\"\nstage {\n  name: \"a\"\n"), HasSubstr("r.textproto:4:"));
  EXPECT_THAT(Error("name: \"x\"\nstage { name: \"a\" distill { max_steps: \"ten\" } }\n"),
              HasSubstr("r.textproto:2:"));
  // Two steps in one stage: the oneof refuses the second.
  EXPECT_THAT(Error("stage {\n name: \"a\"\n init {}\n prune { model: \"m\" }\n}\n"),
              HasSubstr("r.textproto:4:"));
}

TEST(RecipeTest, StageNamesMustBeValidAndUnique) {
  EXPECT_THAT(Error("stage { name: \"a\" init {} }\nstage {\n  name: \"a\"\n  init {}\n}\n"),
              HasSubstr("r.textproto:3: stage name \"a\" is used twice (also stage 1)"));
  EXPECT_THAT(Error("stage {\n  name: \"a b\"\n  init {}\n}\n"),
              HasSubstr("r.textproto:2: stage name \"a b\" is not valid"));
  EXPECT_THAT(Error("stage { name: \"../up\" init {} }"), HasSubstr("is not valid"));
  EXPECT_THAT(Error("stage { init {} }"), HasSubstr("stage name \"\" is not valid"));
  EXPECT_THAT(Error("name: \"empty\""), HasSubstr("r.textproto: the recipe has no stage"));
}

TEST(RecipeTest, StageWithoutStepOrRequiredInput) {
  EXPECT_THAT(Error("stage { name: \"init\" init {} }\n\nstage {\n  name: \"x\"\n}\n"),
              HasSubstr("r.textproto:3: stage \"x\" has no step"));
  EXPECT_THAT(Error("stage {\n name: \"d\"\n distill {\n  student: \"m\"\n }\n}\n"),
              HasSubstr("r.textproto:3: stage \"d\" needs distill.data"));
  EXPECT_THAT(Error("stage { name: \"e\" eval { model: \"m\" } }"),
              HasSubstr("needs eval.prompts"));
  EXPECT_THAT(Error("stage { name: \"g\" generate { prompts: \"p\" } }"),
              HasSubstr("needs generate.model"));
}

TEST(RecipeTest, ReferencesMustNameEarlierStages) {
  const std::string later =
      "stage {\n name: \"d\"\n distill {\n  student: \"@init\"\n  data: \"x\"\n }\n}\n"
      "stage { name: \"init\" init {} }\n";
  EXPECT_THAT(Error(later), HasSubstr("r.textproto:4: stage \"d\" student refers to @init, which "
                                      "does not run before it"));
  EXPECT_THAT(Error("stage { name: \"d\" distill { student: \"@d\" data: \"x\" } }"),
              HasSubstr("does not run before it"));
  EXPECT_THAT(Error("stage { name: \"i\" init {} }\nstage {\n name: \"d\"\n distill {\n  "
                    "student: \"@i\"\n  data: \"x\"\n  data: \"@nope/t.jsonl\"\n }\n}\n"),
              HasSubstr("r.textproto:6: stage \"d\" data refers to @nope, which is not a stage"));
  EXPECT_THAT(Error("stage { name: \"i\" init {} }\n"
                    "stage { name: \"c\" convert { model: \"@i/../../etc\" } }"),
              HasSubstr("may not use .."));
  EXPECT_THAT(Error("stage { name: \"c\" convert { model: \"@\" } }"),
              HasSubstr("expected @STAGE"));
}

TEST(RecipeTest, InputRefs) {
  auto a = ParseInputRef("@gen");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_stage);
  EXPECT_EQ(a->stage, "gen");
  EXPECT_EQ(a->relative, "");
  auto b = ParseInputRef("@gen/sub/traces.jsonl");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->stage, "gen");
  EXPECT_EQ(b->relative, "sub/traces.jsonl");
  auto c = ParseInputRef("data/x.jsonl");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->is_stage);
  EXPECT_EQ(c->path, "data/x.jsonl");
  EXPECT_FALSE(ParseInputRef("@g//abs").ok());
  EXPECT_FALSE(ParseInputRef("").ok());
}

TEST(RecipeTest, StageInputsListEveryPathField) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(StageInputs(r->stage(0)).empty());  // bytes tokenizer: nothing to read
  std::vector<std::string> fields, values;
  for (const StageInput& in : StageInputs(r->stage(1))) {
    fields.push_back(in.field);
    values.push_back(in.value);
  }
  EXPECT_THAT(fields, ElementsAre("student", "data", "data"));
  EXPECT_THAT(values, ElementsAre("@init", "data/train.jsonl", "@init/extra.jsonl"));
}

TEST(RecipeTest, SettingsJsonUsesProtoNamesAndOmitsUnsetFields) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok());
  nlohmann::ordered_json s = StageSettingsJson(r->stage(1));
  EXPECT_EQ(s["name"], "sft");
  EXPECT_EQ(s["label"], "student after SFT");
  EXPECT_EQ(s["distill"]["max_steps"], 4);
  EXPECT_EQ(s["distill"]["answers_only"], true);
  EXPECT_FALSE(s["distill"].contains("epochs"));
  EXPECT_EQ(s["extra_args"], nlohmann::ordered_json::array({"--quiet"}));
  EXPECT_EQ(s.dump(), StageSettingsJson(r->stage(1)).dump());  // deterministic
}

TEST(StageCommandTest, BuildsEachCommandLine) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok());
  InputResolver resolve = [](const std::string& v) { return "<" + v + ">"; };
  auto init = StageCommand(r->stage(0), resolve, "RUN/init", 0);
  ASSERT_TRUE(init.ok());
  EXPECT_THAT(*init, ElementsAre("init", "RUN/init/final", "--family", "llama", "--size", "tiny",
                                 "--seed", "3", "--rope-theta", "10000"));
  auto sft = StageCommand(r->stage(1), resolve, "RUN/sft", 2);
  ASSERT_TRUE(sft.ok());
  EXPECT_THAT(
      *sft, ElementsAre("distill", "<@init>", "--data", "<data/train.jsonl>", "<@init/extra.jsonl>",
                        "--output", "RUN/sft", "--max-steps", "4", "--lr", "0.0003", "--seq-len",
                        "64", "--answers-only", "--threads", "2", "--quiet"));
  auto gguf = StageCommand(r->stage(2), resolve, "RUN/gguf", 0);
  ASSERT_TRUE(gguf.ok());
  EXPECT_THAT(*gguf, ElementsAre("convert", "<@sft>", "RUN/gguf/out.gguf", "--to", "gguf", "--type",
                                 "q8_0"));
  auto eval = StageCommand(r->stage(3), resolve, "RUN/eval-sft", 0);
  ASSERT_TRUE(eval.ok());
  EXPECT_THAT(*eval, ElementsAre("generate", "<@sft>", "--prompts", "</abs/heldout.jsonl>",
                                 "--output", "RUN/eval-sft/gen", "--greedy", "--keep", "all",
                                 "--verifier", "math", "--no-shard", "--max-tokens", "32",
                                 "--think-prefix", "off"));
}

TEST(StageCommandTest, PruneQuantizeGenerate) {
  auto r = Parse(R"pb(
    stage {
      name: "t"
      init {}
    }
    stage {
      name: "g"
      generate {
        model: "@t"
        prompts: "p.jsonl"
        samples: 2
        temperature: 0
        max_batch: 32
        keep: "correct"
      }
    }
    stage {
      name: "p"
      prune { model: "@t" pattern: "2:4" calib: "c.txt" calib_samples: 8 }
    }
    stage {
      name: "q"
      quantize { model: "@p" scheme: "int4-g32" method: "gptq" }
    }
  )pb");
  ASSERT_TRUE(r.ok()) << r.status();
  InputResolver resolve = [](const std::string& v) { return v; };
  EXPECT_THAT(*StageCommand(r->stage(1), resolve, "R/g", 0),
              ElementsAre("generate", "@t", "--prompts", "p.jsonl", "--output", "R/g", "--samples",
                          "2", "--temperature", "0", "--keep", "correct", "--max-batch", "32"));
  EXPECT_THAT(*StageCommand(r->stage(2), resolve, "R/p", 0),
              ElementsAre("prune", "@t", "R/p/final", "--pattern", "2:4", "--calib", "c.txt",
                          "--calib-samples", "8"));
  EXPECT_THAT(
      *StageCommand(r->stage(3), resolve, "R/q", 0),
      ElementsAre("quantize", "@p", "R/q/final", "--scheme", "int4-g32", "--method", "gptq"));
}

// The scale-out path: an endpoint teacher needs no model, and a distill
// stage with ranks > 1 becomes an mpirun process group.
TEST(StageCommandTest, EndpointTeacherAndMpiRanks) {
  auto r = Parse(R"pb(
    stage {
      name: "g"
      generate {
        prompts: "p.jsonl"
        endpoint: "http://gpu-host:8000/v1"
        model_name: "deepseek-ai/DeepSeek-R1"
        concurrency: 64
      }
    }
    stage {
      name: "d"
      distill { student: "s" data: "@g" ranks: 2 keep_sparsity: true }
    }
  )pb");
  ASSERT_TRUE(r.ok()) << r.status();
  InputResolver resolve = [](const std::string& v) { return v; };
  EXPECT_THAT(*StageCommand(r->stage(0), resolve, "R/g", 0),
              ElementsAre("generate", "--prompts", "p.jsonl", "--output", "R/g", "--endpoint",
                          "http://gpu-host:8000/v1", "--model-name", "deepseek-ai/DeepSeek-R1",
                          "--concurrency", "64"));
  EXPECT_THAT(*StageCommand(r->stage(1), resolve, "R/d", 2),
              ElementsAre("mpirun", "-np", "2", "retort", "distill", "s", "--data", "@g",
                          "--output", "R/d", "--keep-sparsity", "--threads", "2"));
  EXPECT_THAT(Error(R"pb(stage { name: "g" generate { prompts: "p.jsonl" } })pb"),
              HasSubstr("needs generate.model (or generate.endpoint)"));
  EXPECT_THAT(Error(R"pb(stage { name: "d" distill { student: "s" data: "x" ranks: 0 } })pb"),
              HasSubstr("ranks must be >= 1"));
}

TEST(StageCommandTest, EvalResultFromGenerateSummary) {
  nlohmann::json summary = nlohmann::json::parse(R"({
      "prompts": 5, "samples": 5,
      "verification": {"samples": 5, "correct": 4, "accuracy": 0.8},
      "this_run": {"tokens_per_second": 812.5}})");
  auto r = EvalResult(summary, 12345, "sft");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dump(), R"({"accuracy":0.8,"correct":4,"total":5,"tokens_per_s":812.5,)"
                       R"("model_bytes":12345,"model":"sft"})");
  summary["verification"] = nullptr;
  EXPECT_THAT(std::string(EvalResult(summary, 1, "m").status().message()),
              HasSubstr("need answers"));
}

}  // namespace
}  // namespace retort::pipeline
