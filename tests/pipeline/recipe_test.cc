#include "pipeline/recipe.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/stage_metrics.h"

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

TEST(RecipeTest, StringsMustBeUtf8NamingTheField) {
  EXPECT_EQ(Error("name: \"r\"\n"
                  "stage {\n"
                  "  name: \"a\"\n"
                  "  init { family: \"llama\" size: \"ti\xC0ny\" }\n"
                  "}\n"),
            "r.textproto:4: stage[0].init.size is not valid UTF-8 (byte 2)");
  EXPECT_EQ(Error("name: \"r\"\ndescription: \"\xED\xA0\x80\"\n"
                  "stage { name: \"a\" init { family: \"llama\" } }\n"),
            "r.textproto:2: description is not valid UTF-8 (byte 0)");
  // Escapes count as the bytes they stand for.
  EXPECT_EQ(
      Error("name: \"r\"\nstage { name: \"a\" label: \"\\377\" init { family: \"llama\" } }\n"),
      "r.textproto:2: stage[0].label is not valid UTF-8 (byte 0)");
  // Well-formed text outside ASCII is fine.
  EXPECT_TRUE(Parse("name: \"caf\xC3\xA9\"\nstage { name: \"a\" label: \"\xE2\x9C\x93\" init { "
                    "family: \"llama\" } }\n")
                  .ok());
  absl::StatusOr<proto::Recipe> json =
      ParseRecipe("{\"name\": \"r\",\n \"description\": \"\xFF\"}", "r.json", RecipeSyntax::kJson);
  ASSERT_FALSE(json.ok());
  EXPECT_EQ(json.status().message(), "r.json:2:18: not valid UTF-8 (recipe strings must be UTF-8)");
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
  nlohmann::ordered_json s = StageSettingsJson(r->stage(1), "cpu");
  EXPECT_EQ(s["name"], "sft");
  EXPECT_EQ(s["label"], "student after SFT");
  EXPECT_EQ(s["distill"]["max_steps"], 4);
  EXPECT_EQ(s["distill"]["answers_only"], true);
  EXPECT_FALSE(s["distill"].contains("epochs"));
  EXPECT_EQ(s["extra_args"], nlohmann::ordered_json::array({"--quiet"}));
  EXPECT_EQ(s.dump(), StageSettingsJson(r->stage(1), "cpu").dump());  // deterministic
}

TEST(StageInputsTest, ResolvesEveryInputAndNothingElse) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok());
  auto resolve = [](const std::string& v) { return "<" + v + ">"; };
  const proto::Stage sft = ResolveStageInputs(r->stage(1), resolve);
  EXPECT_EQ(sft.distill().student(), "<@init>");
  EXPECT_THAT(sft.distill().data(), ElementsAre("<data/train.jsonl>", "<@init/extra.jsonl>"));
  EXPECT_EQ(sft.distill().teacher(), "");  // not given: stays empty
  EXPECT_EQ(sft.distill().max_steps(), 4);
  EXPECT_THAT(sft.extra_args(), ElementsAre("--quiet"));
  const proto::Stage eval = ResolveStageInputs(r->stage(3), resolve);
  EXPECT_EQ(eval.eval().model(), "<@sft>");
  EXPECT_EQ(eval.eval().prompts(), "</abs/heldout.jsonl>");
  // The built-in byte tokenizer is not a file.
  auto init = Parse(R"pb(stage {
                           name: "i"
                           init { tokenizer: "bytes" }
                         })pb");
  ASSERT_TRUE(init.ok());
  EXPECT_EQ(ResolveStageInputs(init->stage(0), resolve).init().tokenizer(), "bytes");
  auto copied = Parse(R"pb(stage {
                             name: "i"
                             init { tokenizer: "tok.json" }
                           })pb");
  ASSERT_TRUE(copied.ok());
  EXPECT_EQ(ResolveStageInputs(copied->stage(0), resolve).init().tokenizer(), "<tok.json>");
}

// An endpoint teacher needs no model; ranks must be positive.
TEST(RecipeTest, EndpointTeacherAndRanks) {
  EXPECT_THAT(Error(R"pb(stage {
                           name: "g"
                           generate { prompts: "p.jsonl" }
                         })pb"),
              HasSubstr("needs generate.model (or generate.endpoint)"));
  EXPECT_THAT(Error(R"pb(stage {
                           name: "d"
                           distill { student: "s" data: "x" ranks: 0 }
                         })pb"),
              HasSubstr("ranks must be >= 1"));
}

// `device`: the recipe's, a stage's own instead, spelled as ParseDevice
// reads it; only the stages that run a model take one.
TEST(RecipeTest, DevicesOfTheRecipeAndItsStages) {
  auto r = Parse(R"pb(
    device: "cuda"
    stage {
      name: "t"
      init {}
    }
    stage {
      name: "g"
      device: "cpu"
      generate { model: "@t" prompts: "p.jsonl" }
    }
    stage {
      name: "d"
      device: "cuda:2"
      distill { student: "@t" data: "@g" }
    }
    stage {
      name: "c"
      convert { model: "@d" }
    }
    stage {
      name: "e"
      eval { model: "@d" prompts: "p.jsonl" }
    }
  )pb");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(StageDevice(*r, r->stage(0)), "cpu");  // init: always the CPU
  EXPECT_EQ(StageDevice(*r, r->stage(1)), "cpu");
  EXPECT_EQ(StageDevice(*r, r->stage(2)), "cuda:2");
  EXPECT_EQ(StageDevice(*r, r->stage(3)), "cpu");     // convert
  EXPECT_EQ(StageDevice(*r, r->stage(4)), "cuda:0");  // the recipe's "cuda"
  proto::Recipe plain = *r;
  plain.clear_device();
  EXPECT_EQ(StageDevice(plain, plain.stage(4)), "cpu");

  // Wrong spellings: the line of the field, the value, what is accepted.
  EXPECT_EQ(Error("name: \"x\"\ndevice: \"gpu\"\nstage { name: \"i\" init {} }\n"),
            "r.textproto:2: device 'gpu' is not one of: cpu, cuda, cuda:N (N the GPU's index)");
  EXPECT_EQ(Error("stage { name: \"i\" init {} }\nstage {\n name: \"q\"\n device: \"cuda:x\"\n"
                  " quantize { model: \"@i\" }\n}\n"),
            "r.textproto:4: stage \"q\" device 'cuda:x' is not one of: cpu, cuda, cuda:N (N the "
            "GPU's index)");
  EXPECT_THAT(Error("device: \"CUDA\" stage { name: \"i\" init {} }"), HasSubstr("'CUDA'"));
  EXPECT_THAT(Error("stage { name: \"i\" init {} } stage { name: \"g\" device: \"cuda:-1\" "
                    "generate { model: \"@i\" prompts: \"p\" } }"),
              HasSubstr("stage \"g\" device 'cuda:-1' is not one of"));
  // init and convert run on the CPU: a device there is a mistake.
  EXPECT_EQ(Error("stage {\n name: \"i\"\n device: \"cuda\"\n init {}\n}\n"),
            "r.textproto:3: stage \"i\" (init) has no device: init and convert stages run on "
            "the CPU");
  EXPECT_THAT(Error("stage { name: \"c\" device: \"cpu\" convert { model: \"m\" } }"),
              HasSubstr("stage \"c\" (convert) has no device"));
  // JSON recipes too.
  absl::StatusOr<proto::Recipe> bad = ParseRecipe(
      R"({"device": "tpu", "stage": [{"name": "i", "init": {}}]})", "r.json", RecipeSyntax::kJson);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "r.json: device 'tpu' is not one of: cpu, cuda, cuda:N (N the GPU's index)");
}

// Settings (and so fingerprints) carry the device a stage runs on, and only
// when it is not the CPU: naming "cpu" leaves a stage as it hashed before.
TEST(RecipeTest, SettingsJsonCarriesANonCpuDevice) {
  absl::StatusOr<proto::Recipe> r = Parse(kGood);
  ASSERT_TRUE(r.ok());
  proto::Stage named_cpu = r->stage(1);
  named_cpu.set_device("cpu");
  EXPECT_EQ(StageSettingsJson(named_cpu, "cpu").dump(),
            StageSettingsJson(r->stage(1), "cpu").dump());
  EXPECT_FALSE(StageSettingsJson(named_cpu, "cpu").contains("device"));
  proto::Stage named_gpu = r->stage(1);
  named_gpu.set_device("cuda");
  nlohmann::ordered_json s = StageSettingsJson(named_gpu, "cuda:0");
  EXPECT_EQ(s["device"], "cuda:0");
  // The stage's own spelling gives way to the device it runs on.
  EXPECT_EQ(s.dump(), StageSettingsJson(r->stage(1), "cuda:0").dump());
  EXPECT_NE(s.dump(), StageSettingsJson(r->stage(1), "cuda:1").dump());
}

TEST(StageMetricsTest, EvalResultFromGenerateSummary) {
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
