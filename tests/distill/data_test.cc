// The training data pipeline: chat samples -> (prompt, completion) token ids
// and masks checked token by token against transformers' apply_chat_template
// + tokenizers (tests/reference/data/make_fixtures.py) with real tokenizers
// and templates (SmolLM2, Qwen2.5, Qwen3, R1-Distill-Qwen); plain-text
// documents; the held-out split; the shuffle (bit-exact with an independent
// Python transcription); packing invariants; resume; the rank split rule;
// bad input.
#include "distill/data.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/file.h"
#include "formats/gguf.h"
#include "formats/traces.h"
#include "model/gguf_model.h"
#include "tests/fixture_util.h"

namespace retort {
namespace {

using testing_util::ReadOrDie;
using testing_util::Unzstd;

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

const std::string kData = "tests/reference/data/";
const std::string kTokenizers = "tests/reference/tokenizers/";
const std::string kTemplates = "tests/reference/chat_templates/";
constexpr char kSmolLM2Gguf[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

const ojson& Fixtures() {
  static const ojson* j = new ojson(ojson::parse(ReadOrDie(kData + "chat_examples.json")));
  return *j;
}

// A tokenizer of tests/reference/tokenizers/expected.json by name (base file
// with its overrides), loaded once.
const Tokenizer& TokenizerNamed(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(name);
  if (it != cache->end()) return *it->second;
  const nlohmann::json expected = nlohmann::json::parse(ReadOrDie(kTokenizers + "expected.json"));
  nlohmann::json j;
  for (const auto& e : expected["tokenizers"]) {
    if (e["name"] != name) continue;
    j = nlohmann::json::parse(Unzstd(ReadOrDie(kTokenizers + e["base"].get<std::string>())));
    for (auto o = e["overrides"].begin(); o != e["overrides"].end(); ++o) {
      if (o.key().rfind("model.", 0) == 0) {
        j["model"][o.key().substr(6)] = o.value();
      } else {
        j[o.key()] = o.value();
      }
    }
  }
  EXPECT_FALSE(j.is_null()) << "no tokenizer " << name << " in expected.json";
  auto t = Tokenizer::FromJsonString(j.dump(), name);
  EXPECT_TRUE(t.ok()) << t.status();
  return *cache->emplace(name, std::move(*t)).first->second;
}

ChatTemplate TemplateFor(const ojson& c) {
  auto t = ChatTemplate::Parse(ReadOrDie(kTemplates + c["template"].get<std::string>()));
  EXPECT_TRUE(t.ok()) << t.status();
  ojson special = ojson::object();
  if (c["bos_token"].is_string()) special["bos_token"] = c["bos_token"];
  if (c["eos_token"].is_string()) special["eos_token"] = c["eos_token"];
  t->SetSpecialTokens(special);
  return *std::move(t);
}

std::vector<int32_t> Ids(const ojson& a) { return a.get<std::vector<int32_t>>(); }

void ExpectMatchesCase(const ojson& c, const ChatTemplate& tmpl, const Tokenizer& tok) {
  auto builder = ChatExampleBuilder::Create(&tmpl, &tok);
  ASSERT_TRUE(builder.ok()) << builder.status();
  auto texts = builder->RenderFinalTurn(c["messages"], "case");
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(texts->prompt, c["prompt_text"].get<std::string>());
  EXPECT_EQ(texts->completion, c["completion_text"].get<std::string>());
  auto ex = builder->Build(c["messages"], "id-1", "case");
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<int32_t> want = Ids(c["prompt_ids"]);
  std::vector<uint8_t> want_mask(want.size(), 0);
  for (int32_t id : Ids(c["completion_ids"])) {
    want.push_back(id);
    want_mask.push_back(1);
  }
  EXPECT_EQ(ex->tokens, want);
  EXPECT_EQ(ex->loss_mask, want_mask);
  EXPECT_EQ(ex->id, "id-1");
  EXPECT_FALSE(ex->has_teacher());
}

TEST(ChatExamplesTest, MatchTransformersTokenByToken) {
  std::map<std::string, int> per_setup;
  for (const ojson& c : Fixtures()["cases"]) {
    SCOPED_TRACE(c["setup"].get<std::string>() + " / " + c["conversation"].get<std::string>());
    ChatTemplate tmpl = TemplateFor(c);
    ExpectMatchesCase(c, tmpl, TokenizerNamed(c["tokenizer"]));
    ++per_setup[c["setup"]];
  }
  EXPECT_EQ(per_setup.size(), 4u);
  for (const auto& [setup, n] : per_setup) EXPECT_GE(n, 5) << setup;
}

// The same SmolLM2 cases with the tokenizer and template read from the
// model's GGUF file (the way a run loads a GGUF student).
TEST(ChatExamplesTest, SmolLM2FromGgufMatches) {
  ASSERT_TRUE(fs::exists(kSmolLM2Gguf))
      << kSmolLM2Gguf << " is missing: run scripts/fetch-models (scripts/test does)";
  auto reader = GgufReader::Open(kSmolLM2Gguf);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto parts = TokenizerPartsFromGguf(**reader);
  ASSERT_TRUE(parts.ok()) << parts.status();
  auto tok = Tokenizer::FromParts(*parts);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto source = (*reader)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.status();
  auto tmpl = ChatTemplate::Parse(*source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  tmpl->SetSpecialTokens(
      {{"bos_token", parts->tokens[parts->bos_id]}, {"eos_token", parts->tokens[parts->eos_id]}});
  int n = 0;
  for (const ojson& c : Fixtures()["cases"]) {
    if (c["setup"] != "smollm2") continue;
    SCOPED_TRACE(c["conversation"].get<std::string>());
    ExpectMatchesCase(c, *tmpl, **tok);
    ++n;
  }
  EXPECT_GE(n, 5);
}

const ojson& CaseOf(const std::string& setup, const std::string& conversation) {
  for (const ojson& c : Fixtures()["cases"]) {
    if (c["setup"] == setup && c["conversation"] == conversation) return c;
  }
  static const ojson none;
  ADD_FAILURE() << "no case " << setup << "/" << conversation;
  return none;
}

TEST(ChatExamplesTest, EndOfTurnAndThinkHandling) {
  const ojson& smol = CaseOf("smollm2", "single");
  ChatTemplate smol_tmpl = TemplateFor(smol);
  auto b = ChatExampleBuilder::Create(&smol_tmpl, &TokenizerNamed("smollm2"));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->end_of_turn(), "<|im_end|>\n");

  const ojson& r1 = CaseOf("r1_distill", "single");
  ChatTemplate r1_tmpl = TemplateFor(r1);
  auto rb = ChatExampleBuilder::Create(&r1_tmpl, &TokenizerNamed("r1_distill_qwen"));
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->end_of_turn(), "<｜end▁of▁sentence｜>");
  // Reasoning written inline in the content (R1 trace style): the prompt's
  // "<think>\n" is not repeated.
  ojson inline_think =
      ojson::array({{{"role", "user"}, {"content", "2+2?"}},
                    {{"role", "assistant"}, {"content", "<think>\nadd them\n</think>\n\n4"}}});
  auto t = rb->RenderFinalTurn(inline_think, "x");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->from_template);
  EXPECT_EQ(t->prompt, "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n");
  EXPECT_EQ(t->completion, "add them\n</think>\n\n4<｜end▁of▁sentence｜>");
  // The same reasoning given as reasoning_content.
  ojson separate = ojson::array(
      {{{"role", "user"}, {"content", "2+2?"}},
       {{"role", "assistant"}, {"content", "4"}, {"reasoning_content", "\nadd them\n"}}});
  auto t2 = rb->RenderFinalTurn(separate, "x");
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_EQ(t2->completion, t->completion);
  // The prompt's BOS is rendered by the template and not doubled by the
  // tokenizer's post-processor.
  auto ex = rb->Build(separate, "a", "x");
  ASSERT_TRUE(ex.ok());
  const Tokenizer& r1tok = TokenizerNamed("r1_distill_qwen");
  ASSERT_GE(r1tok.bos_id(), 0);
  EXPECT_EQ(ex->tokens[0], r1tok.bos_id());
  EXPECT_NE(ex->tokens[1], r1tok.bos_id());
  // Special tokens written in the completion are recognised: it ends with EOS.
  EXPECT_EQ(ex->tokens.back(), r1tok.TokenId("<｜end▁of▁sentence｜>"));
}

TEST(ChatExamplesTest, TrainAllAssistantTurns) {
  const ojson& c = CaseOf("smollm2", "multi_turn");
  ChatTemplate tmpl = TemplateFor(c);
  const Tokenizer& tok = TokenizerNamed("smollm2");
  ChatExampleOptions all;
  all.train_all_assistant_turns = true;
  auto b = ChatExampleBuilder::Create(&tmpl, &tok, all);
  ASSERT_TRUE(b.ok());
  auto ex = b->Build(c["messages"], "m", "x");
  ASSERT_TRUE(ex.ok()) << ex.status();
  // Same tokens as the final-turn-only example (ChatML re-renders history
  // unchanged), but the first answer "7<|im_end|>\n" is trained too.
  auto only_last = ChatExampleBuilder::Create(&tmpl, &tok);
  auto ex_last = only_last->Build(c["messages"], "m", "x");
  ASSERT_TRUE(ex_last.ok());
  EXPECT_EQ(ex->tokens, ex_last->tokens);
  EXPECT_EQ(ex->num_trained(), ex_last->num_trained() + 3);  // "7", "<|im_end|>", "\n"
  // R1 drops <think> of earlier turns: training them is refused by name.
  const ojson& r1 = CaseOf("r1_distill", "multi_turn");
  ChatTemplate r1_tmpl = TemplateFor(r1);
  auto rb = ChatExampleBuilder::Create(&r1_tmpl, &TokenizerNamed("r1_distill_qwen"), all);
  auto bad = rb->Build(r1["messages"], "m", "f.jsonl:3");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("f.jsonl:3"));
  EXPECT_THAT(bad.status().message(), HasSubstr("train only the final assistant turn"));
}

// TRL's SFTTrainer renders a "messages" dataset with the tokenizer's chat
// template: tests/reference/traces/make_trl_fixture.py ran TRL's own
// maybe_apply_chat_template over trl_input.jsonl (loaded with datasets). Line
// 1 is what we write today, the reasoning inline; line 2 the layout we wrote
// before (reasoning_content), which SmolLM2's template drops, so TRL trained
// on the answers alone. Checked: the writer writes line 1 exactly, and our
// template engine renders both lines as TRL did.
TEST(TrlDataTest, TracesKeepTheirReasoningUnderTrlsChatTemplating) {
  const std::string dir = "tests/reference/traces/";
  const std::string text = ReadOrDie(dir + "trl_input.jsonl");
  std::vector<std::string> lines;
  for (size_t pos = 0, nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1)
    lines.push_back(text.substr(pos, nl - pos));
  ASSERT_EQ(lines.size(), 2u);
  absl::StatusOr<TraceSample> old = ParseTraceLine(lines[1], 2, "trl_input.jsonl");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(TraceSampleToJsonLine(*old), lines[0]);

  const ojson rendered = ojson::parse(ReadOrDie(dir + "trl_rendered.json"))["rendered"];
  for (const std::string name : {"smollm2_instruct", "qwen3"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(ReadOrDie(kTemplates + name + ".jinja"));
    ASSERT_TRUE(t.ok()) << t.status();
    for (size_t i = 0; i < lines.size(); ++i) {
      absl::StatusOr<std::string> ours =
          t->Render(ojson::parse(lines[i])["messages"], /*add_generation_prompt=*/false);
      ASSERT_TRUE(ours.ok()) << ours.status();
      EXPECT_EQ(*ours, rendered[name][i].get<std::string>()) << "line " << i + 1;
    }
  }
  const std::string reasoning = "7 + 5 = 12, write 2 carry 1";
  EXPECT_THAT(rendered["smollm2_instruct"][0].get<std::string>(), HasSubstr(reasoning));
  EXPECT_THAT(rendered["smollm2_instruct"][1].get<std::string>(),
              ::testing::Not(HasSubstr(reasoning)));
}

TEST(AnswersOnlyTest, RemoveThinkBlocks) {
  EXPECT_EQ(RemoveThinkBlocks("<think>\nadd them\n</think>\n\n4"), "4");
  EXPECT_EQ(RemoveThinkBlocks("4"), "4");
  EXPECT_EQ(RemoveThinkBlocks(""), "");
  // Several blocks, text between them kept.
  EXPECT_EQ(RemoveThinkBlocks("<think>a</think>x <think>b</think>y"), "x y");
  // Unclosed: the rest is reasoning.
  EXPECT_EQ(RemoveThinkBlocks("<think>\nstill thinking"), "");
  EXPECT_EQ(RemoveThinkBlocks("5 <think>more"), "5 ");
  // The prompt opened the reasoning (R1-Distill): everything up to </think> goes.
  EXPECT_EQ(RemoveThinkBlocks("add them\n</think>\n\n4"), "4");
  EXPECT_EQ(RemoveThinkBlocks("r\n</think>\n4 <think>x</think> 5"), "4  5");
}

TEST(AnswersOnlyTest, WithoutReasoningTouchesOnlyAssistantMessages) {
  ojson m = ojson::array({{{"role", "system"}, {"content", "<think>keep</think>s"}},
                          {{"role", "user"}, {"content", "<think>q</think>2+2?"}},
                          {{"role", "assistant"},
                           {"content", "<think>\nx\n</think>\n\n4"},
                           {"reasoning_content", "r"},
                           {"reasoning", "r2"},
                           {"thinking", "r3"},
                           {"name", "bot"}},
                          {{"role", "assistant"}, {"content", nullptr}}});
  ojson out = WithoutReasoning(m);
  EXPECT_EQ(out[0], m[0]);
  EXPECT_EQ(out[1], m[1]);
  EXPECT_EQ(out[2], (ojson{{"role", "assistant"}, {"content", "4"}, {"name", "bot"}}));
  EXPECT_EQ(out[3], m[3]);
  EXPECT_EQ(WithoutReasoning(ojson("not an array")), ojson("not an array"));
}

// --answers-only: the same tokens as a chat that never had reasoning, for
// reasoning given in a field or inline, in ChatML and in R1-Distill's template.
TEST(AnswersOnlyTest, ExamplesEqualTheAnswerOnlyChat) {
  const ojson& smol = CaseOf("smollm2", "single");
  ChatTemplate smol_tmpl = TemplateFor(smol);
  const ojson& r1 = CaseOf("r1_distill", "single");
  ChatTemplate r1_tmpl = TemplateFor(r1);
  struct Setup {
    const ChatTemplate* tmpl;
    const Tokenizer* tok;
    std::string end_of_turn;
  } setups[] = {{&smol_tmpl, &TokenizerNamed("smollm2"), "<|im_end|>\n"},
                {&r1_tmpl, &TokenizerNamed("r1_distill_qwen"), "<｜end▁of▁sentence｜>"}};
  const ojson plain = ojson::array(
      {{{"role", "user"}, {"content", "2+2?"}}, {{"role", "assistant"}, {"content", "4"}}});
  const ojson field = ojson::array(
      {{{"role", "user"}, {"content", "2+2?"}},
       {{"role", "assistant"}, {"content", "4"}, {"reasoning_content", "\nadd them\n"}}});
  const ojson inline_think =
      ojson::array({{{"role", "user"}, {"content", "2+2?"}},
                    {{"role", "assistant"}, {"content", "<think>\nadd them\n</think>\n\n4"}}});
  ChatExampleOptions answers;
  answers.answers_only = true;
  for (const Setup& s : setups) {
    SCOPED_TRACE(s.end_of_turn);
    auto with = ChatExampleBuilder::Create(s.tmpl, s.tok);
    auto without = ChatExampleBuilder::Create(s.tmpl, s.tok, answers);
    ASSERT_TRUE(with.ok() && without.ok());
    auto want = with->Build(plain, "a", "x");
    ASSERT_TRUE(want.ok()) << want.status();
    for (const ojson& m : {field, inline_think, plain}) {
      auto t = without->RenderFinalTurn(m, "x");
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->completion, "4" + s.end_of_turn);
      EXPECT_EQ(t->completion.find("add them"), std::string::npos);
      auto ex = without->Build(m, "a", "x");
      ASSERT_TRUE(ex.ok()) << ex.status();
      EXPECT_EQ(ex->tokens, want->tokens);
      EXPECT_EQ(ex->loss_mask, want->loss_mask);
    }
    // Without the option the reasoning is trained.
    auto full = with->Build(field, "a", "x");
    ASSERT_TRUE(full.ok());
    EXPECT_GT(full->num_trained(), want->num_trained());
  }
}

// ---- files, errors, split ------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("retort_data_test_" + std::to_string(getpid()));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& contents) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }

 private:
  fs::path path_;
};

TEST(DatasetTest, JsonlSkipsCountedAndErrorsNameFileAndLine) {
  const ojson& c = CaseOf("smollm2", "single");
  ChatTemplate tmpl = TemplateFor(c);
  const Tokenizer& tok = TokenizerNamed("smollm2");
  TempDir dir;
  const std::string good =
      R"({"id": "p1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})";
  const std::string empty =
      R"({"id": "p2", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]})";
  const std::string prompt_only =
      R"({"id": "p3", "messages": [{"role": "user", "content": "hi"}]})";
  const std::string path =
      dir.Write("ok.jsonl", good + "\n\n" + empty + "\n" + prompt_only + "\n" + good + "\n");
  DatasetOptions options;
  auto ds = Dataset::Load({path}, tok, &tmpl, options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->train().size(), 2u);
  EXPECT_EQ(ds->summary().skipped.at("empty completion"), 1);
  EXPECT_EQ(ds->summary().skipped.at("last message is not the assistant's"), 1);
  EXPECT_THAT(ds->summary().ToString(), HasSubstr("skipped 2 samples"));
  EXPECT_EQ(ds->summary().files, 1);

  struct Bad {
    std::string contents, want;
  } bads[] = {
      {good + "\n{not json\n", "bad.jsonl:2: not valid JSON"},
      {good + "\n" + R"({"id": "x"})" + "\n", "bad.jsonl:2: messages: missing"},
      {std::string(R"({"messages": [{"role": "user", "content": "caf)") + "\xe9" +
           R"("}, {"role": "assistant", "content": "x"}]})",
       "bad.jsonl:1: invalid UTF-8"},
      {R"({"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]})",
       "bad.jsonl:1: messages[0].role: missing"},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]})",
       "bad.jsonl:1: messages[1].content: expected a string"},
  };
  for (const Bad& b : bads) {
    const std::string p = dir.Write("bad.jsonl", b.contents);
    auto r = Dataset::Load({p}, tok, &tmpl, options);
    ASSERT_FALSE(r.ok()) << b.want;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(b.want));
  }
  auto no_tmpl = Dataset::Load({path}, tok, nullptr, options);
  ASSERT_FALSE(no_tmpl.ok());
  EXPECT_THAT(no_tmpl.status().message(), HasSubstr("chat template"));
  auto all_skipped = Dataset::Load({dir.Write("e.jsonl", empty + "\n")}, tok, &tmpl, options);
  ASSERT_FALSE(all_skipped.ok());
  EXPECT_THAT(all_skipped.status().message(), HasSubstr("no training examples"));
  auto missing = Dataset::Load({"/nonexistent/x.jsonl"}, tok, &tmpl, options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/x.jsonl"));
  options.eval_fraction = 1.5;
  EXPECT_FALSE(Dataset::Load({path}, tok, &tmpl, options).ok());
}

TEST(DatasetTest, TraceDialectsAndVerdicts) {
  const ojson& c = CaseOf("r1_distill", "reasoning");
  ChatTemplate tmpl = TemplateFor(c);
  const Tokenizer& tok = TokenizerNamed("r1_distill_qwen");
  TempDir dir;
  // The fixture conversation as an R1 trace line (reasoning inline in the
  // content), as ShareGPT, and as open-r1 columns with two generations, one
  // marked wrong; plus a generation cut by the length limit.
  const ojson& m = c["messages"];
  const std::string q = m[0]["content"];
  const std::string r = m[1]["reasoning_content"];
  const std::string a = m[1]["content"];
  const std::string inline_answer = "<think>\n" + r + "\n</think>\n\n" + a;
  ojson trace = {{"id", "q1"},
                 {"sample", 0},
                 {"correct", true},
                 {"messages", ojson::array({{{"role", "user"}, {"content", q}},
                                            {{"role", "assistant"}, {"content", inline_answer}}})}};
  ojson sharegpt = {{"conversations", ojson::array({{{"from", "human"}, {"value", q}},
                                                    {{"from", "gpt"}, {"value", inline_answer}}})}};
  ojson columns = {
      {"uuid", "q2"},
      {"problem", q},
      {"answer", "no"},
      {"generations", ojson::array({inline_answer, "<think>\nwrong\n</think>\n\nyes"})},
      {"correctness_math_verify", ojson::array({true, false})}};
  ojson cut = trace;
  cut["id"] = "q3";
  cut["finish_reason"] = "length";
  const std::string path = dir.Write("traces.jsonl", trace.dump() + "\n" + sharegpt.dump() + "\n" +
                                                         columns.dump() + "\n" + cut.dump() + "\n");
  auto ds = Dataset::Load({path}, tok, &tmpl, DatasetOptions());
  ASSERT_TRUE(ds.ok()) << ds.status();
  std::vector<int32_t> want = Ids(c["prompt_ids"]);
  for (int32_t id : Ids(c["completion_ids"])) want.push_back(id);
  ASSERT_EQ(ds->train().size(), 3u);
  for (const TrainExample& e : ds->train()) EXPECT_EQ(e.tokens, want) << e.id;
  EXPECT_EQ(ds->train()[0].id, "q1");
  EXPECT_EQ(ds->train()[2].id, "q2");
  // The id-less ShareGPT line is named by its content, not its line number.
  EXPECT_EQ(ds->train()[1].id.size(), 16u);
  EXPECT_EQ(ds->summary().skipped.at("marked incorrect by the verifier"), 1);
  EXPECT_EQ(ds->summary().skipped.at("generation cut by the length limit"), 1);
  DatasetOptions keep;
  keep.keep_incorrect = keep.keep_unfinished = true;
  auto all = Dataset::Load({path}, tok, &tmpl, keep);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->train().size(), 5u);
}

// --answers-only over a trace file as `retort generate` writes it: the
// reasoning is gone, answer-less samples are skipped and counted, token
// shards are refused by name.
TEST(DatasetTest, AnswersOnlyTraces) {
  const ojson& c = CaseOf("smollm2", "single");
  ChatTemplate tmpl = TemplateFor(c);
  const Tokenizer& tok = TokenizerNamed("smollm2");
  TempDir dir;
  auto line = [](const std::string& id, const std::string& reasoning, const std::string& content) {
    ojson j = {
        {"id", id},
        {"sample", 0},
        {"correct", true},
        {"messages",
         ojson::array(
             {{{"role", "user"}, {"content", "What is 12 + 30?"}},
              {{"role", "assistant"}, {"content", content}, {"reasoning_content", reasoning}}})}};
    return j.dump() + "\n";
  };
  const std::string traces =
      dir.Write("traces.jsonl", line("t1", "2+0+0=2, 1+3, c=0, r=2\n1+3+0=4, +, c=0, r=42", "42") +
                                    line("t2", "only thinking", "") +
                                    line("t3", "", "<think>\ninline\n</think>\n\n42"));
  DatasetOptions options;
  options.chat.answers_only = true;
  auto ds = Dataset::Load({traces}, tok, &tmpl, options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->train().size(), 2u);
  EXPECT_EQ(ds->summary().skipped.at("empty completion"), 1);
  const std::string answer_only = dir.Write(
      "answers.jsonl",
      ojson({{"id", "t1"},
             {"messages", ojson::array({{{"role", "user"}, {"content", "What is 12 + 30?"}},
                                        {{"role", "assistant"}, {"content", "42"}}})}})
              .dump() +
          "\n");
  auto want = Dataset::Load({answer_only}, tok, &tmpl, DatasetOptions());
  ASSERT_TRUE(want.ok()) << want.status();
  for (const TrainExample& e : ds->train()) EXPECT_EQ(e.tokens, want->train()[0].tokens) << e.id;
  // The same file with the reasoning trains more tokens.
  auto with = Dataset::Load({traces}, tok, &tmpl, DatasetOptions());
  ASSERT_TRUE(with.ok());
  EXPECT_GT(with->summary().trained_tokens, 2 * ds->summary().trained_tokens);

  TraceTokens record;
  record.id = "s1";
  record.prompt_ids = {1, 2};
  record.completion_ids = {3, 4};
  const std::string shard = dir.Write("tokens.shard", "");
  {
    auto w = TraceShardWriter::Open(shard, /*append=*/false);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE(w->Append(record).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  ASSERT_TRUE(Dataset::Load({shard}, tok, &tmpl, DatasetOptions()).ok());
  auto refused = Dataset::Load({shard}, tok, &tmpl, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr(shard));
  EXPECT_THAT(refused.status().message(), HasSubstr("answers-only"));
}

// A shard keeps the teacher's prompt as sent; one opened with "<think>\n"
// (the teacher's think prefix) trains a student that must be prompted the
// same way, and the data summary says so (issue: think_prefix "off" at eval
// silently scored 0%).
TEST(DatasetTest, ShardPromptsThatOpenTheReasoningAreNoted) {
  const Tokenizer& tok = TokenizerNamed("smollm2");
  TempDir dir;
  const std::string path = dir.Write("opened.shard", "");
  const std::string prompts[] = {
      "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n",
      "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"};
  {
    auto w = TraceShardWriter::Open(path, /*append=*/false);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int r = 0; r < 2; ++r) {
      TraceTokens t;
      t.id = "p" + std::to_string(r);
      t.prompt_ids = tok.Encode(prompts[r], EncodeOptions());
      t.completion_ids = tok.Encode("2</think>\n\n2", EncodeOptions());
      ASSERT_TRUE(w->Append(t).ok());
    }
    ASSERT_TRUE(w->Close().ok());
  }
  auto ds = Dataset::Load({path}, tok, nullptr, DatasetOptions());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->summary().shard_examples, 2);
  EXPECT_EQ(ds->summary().prompts_open_reasoning, 1);
  EXPECT_THAT(ds->summary().ToString(),
              HasSubstr("note: 1 of 2 token-shard prompts end inside an opened <think>"));
  EXPECT_THAT(ds->summary().ToString(), HasSubstr("think_prefix auto or on"));
}

TEST(DatasetTest, TokenShardsCarryTeacherTopK) {
  const Tokenizer& tok = TokenizerNamed("smollm2");
  TempDir dir;
  const std::string path = dir.Write("traces.shard", "");
  std::vector<TraceTokens> records(3);
  for (int r = 0; r < 3; ++r) {
    TraceTokens& t = records[r];
    t.id = "p" + std::to_string(r);
    t.prompt_ids = {1, 100 + r, 200};
    t.completion_ids = {300 + r, 301, 302, 2};
    t.top_k = 3;
    for (size_t j = 0; j < t.completion_ids.size(); ++j) {
      for (int k = 0; k < 3; ++k) {
        t.topk_ids.push_back(t.completion_ids[j] + 10 * k);
        t.topk_logprobs.push_back(-0.25f * k - 0.125f * j);
      }
    }
  }
  records[1].completion_ids.clear();  // nothing generated: skipped
  records[1].topk_ids.clear();
  records[1].topk_logprobs.clear();
  {
    auto w = TraceShardWriter::Open(path, /*append=*/false);
    ASSERT_TRUE(w.ok()) << w.status();
    for (const auto& t : records) ASSERT_TRUE(w->Append(t).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  auto ds = Dataset::Load({path}, tok, nullptr, DatasetOptions());
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->train().size(), 2u);
  EXPECT_EQ(ds->summary().skipped.at("empty completion"), 1);
  EXPECT_EQ(ds->summary().teacher_examples, 2);
  // What the shard reader returns (log-probs are stored quantized).
  auto reader = TraceShardReader::Open(path);
  ASSERT_TRUE(reader.ok());
  TraceTokens stored;
  ASSERT_TRUE(*reader->Next(&stored));
  const TrainExample& e = ds->train()[0];
  EXPECT_EQ(e.id, "p0");
  EXPECT_EQ(e.tokens, (std::vector<int32_t>{1, 100, 200, 300, 301, 302, 2}));
  EXPECT_EQ(e.loss_mask, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1, 1}));
  ASSERT_EQ(e.top_k, 3);
  for (int t = 0; t < 7; ++t) {
    for (int k = 0; k < 3; ++k) {
      if (t < 3) {
        EXPECT_EQ(e.topk_ids[t * 3 + k], -1);
      } else {
        EXPECT_EQ(e.topk_ids[t * 3 + k], stored.topk_ids[(t - 3) * 3 + k]);
        EXPECT_EQ(e.topk_logprobs[t * 3 + k], stored.topk_logprobs[(t - 3) * 3 + k]);
      }
    }
  }
  // Packed: position i predicting completion token j carries row j.
  PackingOptions o;
  o.seq_len = 8;
  o.shuffle = false;
  o.repeat = false;
  auto dl = DataLoader::Create(&ds->train(), o);
  ASSERT_TRUE(dl.ok());
  PackedBatch b;
  ASSERT_TRUE((*dl)->Next(&b));
  EXPECT_EQ(b.num_targets, 4);
  EXPECT_EQ(b.num_teacher_targets, 4);
  for (int i = 2; i < 6; ++i) {
    ASSERT_TRUE(b.has_teacher[i]);
    EXPECT_EQ(b.targets[i], e.tokens[i + 1]);
    EXPECT_EQ(b.topk_ids[i * 3], e.tokens[i + 1]);  // the teacher's top-1 is the sampled token here
    EXPECT_EQ(b.topk_logprobs[i * 3 + 1], stored.topk_logprobs[(i - 2) * 3 + 1]);
  }
  // A student whose vocabulary is smaller than the teacher's ids.
  DatasetOptions small;
  small.student_vocab = 250;
  auto bad = Dataset::Load({path}, tok, nullptr, small);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()),
            "student vocabulary (250) does not cover token id 300 in " + path + " record p0");
  // A file that starts like a zstd frame but is no shard: an error naming it.
  auto junk = Dataset::Load({dir.Write("notes.bin", std::string("\x28\xB5\x2F\xFD", 4) + "junk")},
                            tok, nullptr, DatasetOptions());
  ASSERT_FALSE(junk.ok());
  EXPECT_THAT(std::string(junk.status().message()), HasSubstr("notes.bin"));
  // Anything else without a known extension is plain text (e.g. GPL-3).
  auto text = Dataset::Load({dir.Write("NOTES", "hello there")}, tok, nullptr, DatasetOptions());
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->summary().examples, 1);
  // Text examples are checked against the student's vocabulary too.
  DatasetOptions tiny;
  tiny.student_vocab = 10;
  auto uncovered = Dataset::Load({dir.Write("NOTES2", "hello there")}, tok, nullptr, tiny);
  ASSERT_FALSE(uncovered.ok());
  EXPECT_THAT(std::string(uncovered.status().message()),
              HasSubstr("student vocabulary (10) does not cover token id"));
  EXPECT_THAT(std::string(uncovered.status().message()), HasSubstr("NOTES2 example"));
}

TEST(DatasetTest, TextCorpusMatchesTokenizers) {
  const Tokenizer& tok = TokenizerNamed("smollm2");
  const ojson& docs = Fixtures()["corpus"];
  auto ds = Dataset::Load({kData + "corpus.txt"}, tok, nullptr, DatasetOptions());
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->train().size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(ds->train()[i].tokens, Ids(docs[i]["ids"])) << docs[i]["text"];
    EXPECT_EQ(ds->train()[i].num_trained(), static_cast<int64_t>(docs[i]["ids"].size()));
  }
  // Fixed-size chunks cover the file's ids exactly.
  TextSplitOptions chunks;
  chunks.chunk_tokens = 16;
  const std::string text = ReadOrDie(kData + "corpus.txt");
  auto ex = TextExamples(text, tok, chunks, "corpus.txt");
  ASSERT_TRUE(ex.ok());
  EncodeOptions plain;
  plain.add_special_tokens = false;
  std::vector<int32_t> all;
  for (const auto& e : *ex) {
    EXPECT_LE(e.tokens.size(), 16u);
    all.insert(all.end(), e.tokens.begin(), e.tokens.end());
  }
  EXPECT_EQ(all, tok.Encode(text, plain));
  auto bad = TextExamples("ok\nline two \xff\n", tok, TextSplitOptions(), "c.txt");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("c.txt:2: not valid UTF-8"));
}

TEST(DatasetTest, SplitFollowsIdNotOrder) {
  std::vector<TrainExample> examples;
  for (int i = 0; i < 2000; ++i) {
    TrainExample e;
    e.id = "prompt-" + std::to_string(i);
    e.tokens = {1, 2, 3};
    e.loss_mask = {0, 1, 1};
    examples.push_back(e);
  }
  Dataset forward, backward;
  for (const auto& e : examples) forward.Add(e, 0.1);
  for (auto it = examples.rbegin(); it != examples.rend(); ++it) backward.Add(*it, 0.1);
  std::set<std::string> f, b;
  for (const auto& e : forward.eval()) f.insert(e.id);
  for (const auto& e : backward.eval()) b.insert(e.id);
  EXPECT_EQ(f, b);
  EXPECT_GT(f.size(), 150u);
  EXPECT_LT(f.size(), 250u);
  EXPECT_EQ(forward.summary().train_examples + forward.summary().eval_examples, 2000);
  EXPECT_FALSE(IsHeldOut("anything", 0.0));
  EXPECT_EQ(StableHash64(""), 0xcbf29ce484222325ull);   // FNV-1a offset basis
  EXPECT_EQ(StableHash64("a"), 0xaf63dc4c8601ec8cull);  // published FNV-1a 64 test vector
}

// ---- shuffle -----------------------------------------------------------------

TEST(ShuffleTest, BitExactWithIndependentTranscription) {
  const ojson& first = Fixtures()["xoshiro_first_outputs"];
  Xoshiro256 rng(first["seed"].get<uint64_t>());
  for (const auto& v : first["values"]) EXPECT_EQ(rng.Next(), std::stoull(v.get<std::string>()));
  int n = 0;
  for (const ojson& p : Fixtures()["permutations"]) {
    std::vector<uint32_t> got = EpochPermutation(p["n"].get<uint64_t>(), p["seed"].get<uint64_t>(),
                                                 p["epoch"].get<uint64_t>());
    EXPECT_EQ(got, p["perm"].get<std::vector<uint32_t>>()) << p["n"] << " " << p["seed"];
    ++n;
  }
  EXPECT_GE(n, 5);
  EXPECT_NE(EpochPermutation(50, 1, 0), EpochPermutation(50, 1, 1));
  EXPECT_NE(EpochPermutation(50, 1, 0), EpochPermutation(50, 2, 0));
}

// ---- packing -----------------------------------------------------------------

// Example i: tokens 1000*i + t, a prompt of `prompt` tokens (mask 0), then
// completion tokens (mask 1).
TrainExample Synthetic(int i, int len, int prompt, int top_k = 0) {
  TrainExample e;
  e.id = "ex" + std::to_string(i);
  for (int t = 0; t < len; ++t) {
    e.tokens.push_back(1000 * i + t);
    e.loss_mask.push_back(t >= prompt ? 1 : 0);
  }
  if (top_k > 0) {
    e.top_k = top_k;
    for (int t = 0; t < len; ++t) {
      for (int k = 0; k < top_k; ++k) {
        e.topk_ids.push_back(t >= prompt ? 1000 * i + t + k : -1);
        e.topk_logprobs.push_back(t >= prompt ? -0.5f * k - 0.001f * t : 0.0f);
      }
    }
  }
  return e;
}

std::vector<TrainExample> SyntheticSet(int n, int seed_len = 3) {
  std::vector<TrainExample> v;
  for (int i = 0; i < n; ++i) v.push_back(Synthetic(i + 1, 4 + (i * seed_len) % 13, 1 + i % 3));
  return v;
}

// Checks every invariant of one batch against the examples and returns, per
// example id, the tokens seen.
void CheckBatch(const PackedBatch& b, const std::vector<TrainExample>& examples,
                std::map<int, std::vector<int32_t>>* seen) {
  const int64_t n = b.seq_len * b.rows;
  ASSERT_EQ(static_cast<int64_t>(b.tokens.size()), n);
  ASSERT_EQ(b.positions.size(), b.tokens.size());
  ASSERT_EQ(b.doc_start.size(), b.tokens.size());
  ASSERT_EQ(b.targets.size(), b.tokens.size());
  int64_t targets = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = i / b.seq_len;
    // A document starts at its doc_start, inside the same row; positions
    // count from it.
    ASSERT_LE(b.doc_start[i], i);
    ASSERT_GE(b.doc_start[i], row * b.seq_len) << "document crosses a row at " << i;
    ASSERT_EQ(b.positions[i], i - b.doc_start[i]);
    if (i > 0 && b.doc_start[i] != b.doc_start[i - 1]) {
      ASSERT_EQ(b.doc_start[i], i);
    }
    const bool last_of_doc = i + 1 == n || b.doc_start[i + 1] != b.doc_start[i];
    if (b.targets[i] != -1) {
      ++targets;
      ASSERT_FALSE(last_of_doc) << i;
      ASSERT_EQ(b.targets[i], b.tokens[i + 1]);
    }
    const int32_t tok = b.tokens[i];
    if (tok >= 1000) {  // a synthetic example's token (padding is 0)
      const int ex = tok / 1000;
      const int t = tok % 1000;
      ASSERT_EQ(b.positions[i], t) << "pieces start at the example's first token here";
      (*seen)[ex].push_back(tok);
      const TrainExample& e = examples[ex - 1];
      const bool want_target = !last_of_doc && e.loss_mask[t + 1] == 1;
      ASSERT_EQ(b.targets[i] != -1, want_target) << "token " << tok;
      if (b.top_k > 0) {
        ASSERT_EQ(b.has_teacher[i] != 0, want_target && e.has_teacher());
        if (b.has_teacher[i]) {
          for (int k = 0; k < b.top_k; ++k) {
            ASSERT_EQ(b.topk_ids[i * b.top_k + k], e.topk_ids[(t + 1) * e.top_k + k]);
            ASSERT_EQ(b.topk_logprobs[i * b.top_k + k], e.topk_logprobs[(t + 1) * e.top_k + k]);
          }
        } else {
          ASSERT_EQ(b.topk_ids[i * b.top_k], -1);
        }
      }
    } else {
      ASSERT_EQ(tok, 0);
      ASSERT_EQ(b.targets[i], -1);
    }
  }
  EXPECT_EQ(b.num_targets, targets);
}

TEST(PackingTest, InvariantsAndEveryExampleOncePerEpoch) {
  std::vector<TrainExample> examples = SyntheticSet(40);
  PackingOptions o;
  o.seq_len = 16;
  o.rows_per_batch = 3;
  o.seed = 5;
  auto dl = DataLoader::Create(&examples, o);
  ASSERT_TRUE(dl.ok()) << dl.status();
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::map<int, std::vector<int32_t>> seen;
    const uint64_t batches = (*dl)->BatchesInEpoch(epoch);
    for (uint64_t k = 0; k < batches; ++k) {
      PackedBatch b;
      ASSERT_TRUE((*dl)->Next(&b));
      EXPECT_EQ(b.epoch, epoch);
      EXPECT_EQ(b.index_in_epoch, k);
      CheckBatch(b, examples, &seen);
      if (HasFailure()) return;
    }
    ASSERT_EQ(seen.size(), examples.size());
    for (const auto& [ex, toks] : seen) EXPECT_EQ(toks, examples[ex - 1].tokens) << ex;
  }
  EXPECT_EQ((*dl)->position().epoch, 3u);
  EXPECT_EQ((*dl)->position().cursor, 0u);
  // Shuffling changes the order between epochs; a repeat with the same seed
  // does not.
  auto again = DataLoader::Create(&examples, o);
  PackedBatch a, b;
  ASSERT_TRUE((*again)->Next(&a));
  auto fresh = DataLoader::Create(&examples, o);
  ASSERT_TRUE((*fresh)->Next(&b));
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST(PackingTest, OverlongTruncatedOrSplitAndCounted) {
  std::vector<TrainExample> examples = {Synthetic(1, 30, 4), Synthetic(2, 5, 1),
                                        Synthetic(3, 25, 12)};  // prompt 12 >= seq_len 10
  PackingOptions o;
  o.seq_len = 10;
  o.shuffle = false;
  o.repeat = false;
  auto dl = DataLoader::Create(&examples, o);
  ASSERT_TRUE(dl.ok());
  EXPECT_EQ((*dl)->packing_summary().truncated_examples, 2);
  EXPECT_EQ((*dl)->packing_summary().truncated_tokens, 20 + 15);
  EXPECT_EQ((*dl)->packing_summary().dropped_untrainable, 1);  // example 3 keeps only prompt
  std::map<int, std::vector<int32_t>> seen;
  PackedBatch b;
  int batches = 0;
  while ((*dl)->Next(&b)) {
    CheckBatch(b, examples, &seen);
    ++batches;
  }
  EXPECT_EQ(batches, 2);
  EXPECT_EQ(seen[1].size(), 10u);
  EXPECT_EQ(seen[2].size(), 5u);
  EXPECT_EQ(seen.count(3), 0u);

  o.overlong = OverlongPolicy::kSplit;
  auto split = DataLoader::Create(&examples, o);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ((*split)->packing_summary().split_examples, 2);
  EXPECT_EQ((*split)->packing_summary().truncated_examples, 0);
  // Example 3's first piece [0, 10) is all prompt (dropped); its second
  // [10, 20) trains tokens 12..19 and its third [20, 25) all of its own.
  EXPECT_EQ((*split)->packing_summary().dropped_untrainable, 1);
  std::map<int, int> tokens_of;
  int pieces = 0;
  while ((*split)->Next(&b)) {
    for (int64_t i = 0; i < b.seq_len * b.rows; ++i) {
      if (b.tokens[i] >= 1000) ++tokens_of[b.tokens[i] / 1000];
      if (b.tokens[i] >= 1000 && b.positions[i] == 0) ++pieces;
    }
    // Positions restart at every piece.
    for (int64_t i = 0; i < b.seq_len * b.rows; ++i) EXPECT_EQ(b.positions[i], i - b.doc_start[i]);
  }
  EXPECT_EQ(tokens_of[1], 30);
  EXPECT_EQ(tokens_of[2], 5);
  EXPECT_EQ(tokens_of[3], 15);
  EXPECT_EQ(pieces, 3 + 1 + 2);
  DataSummary s;
  s.Merge((*dl)->packing_summary());
  EXPECT_THAT(s.ToString(), HasSubstr("truncated 2 examples longer than seq_len (35 tokens cut)"));
}

TEST(PackingTest, TeacherTopKFollowsTargets) {
  std::vector<TrainExample> examples = {Synthetic(1, 9, 3, 4), Synthetic(2, 6, 2, 0),
                                        Synthetic(3, 7, 1, 4)};
  PackingOptions o;
  o.seq_len = 12;
  o.rows_per_batch = 2;
  o.shuffle = false;
  o.repeat = false;
  auto dl = DataLoader::Create(&examples, o);
  ASSERT_TRUE(dl.ok()) << dl.status();
  EXPECT_EQ((*dl)->top_k(), 4);
  std::map<int, std::vector<int32_t>> seen;
  PackedBatch b;
  int64_t teacher = 0;
  while ((*dl)->Next(&b)) {
    ASSERT_EQ(b.top_k, 4);
    ASSERT_EQ(b.topk_ids.size(), b.tokens.size() * 4);
    ASSERT_EQ(b.has_teacher.size(), b.tokens.size());
    CheckBatch(b, examples, &seen);
    teacher += b.num_teacher_targets;
  }
  EXPECT_EQ(teacher, (9 - 3) + (7 - 1));
  // Examples disagreeing on k are refused.
  examples.push_back(Synthetic(4, 5, 1, 2));
  auto bad = DataLoader::Create(&examples, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("top_k 2 differs"));
}

TEST(PackingTest, ResumeFromSavedPositionIsBitExact) {
  std::vector<TrainExample> examples = SyntheticSet(25);
  PackingOptions o;
  o.seq_len = 20;
  o.rows_per_batch = 2;
  o.seed = 99;
  auto a = DataLoader::Create(&examples, o);
  ASSERT_TRUE(a.ok());
  const uint64_t per_epoch = (*a)->BatchesInEpoch(0);
  PackedBatch b;
  // Stop mid-epoch and near an epoch boundary.
  for (uint64_t stop : {uint64_t{3}, per_epoch - 1, per_epoch + 2}) {
    auto run = DataLoader::Create(&examples, o);
    for (uint64_t k = 0; k < stop; ++k) ASSERT_TRUE((*run)->Next(&b));
    auto saved = DataPosition::FromJson(nlohmann::json::parse((*run)->position().ToJson().dump()));
    ASSERT_TRUE(saved.ok());
    EXPECT_EQ(*saved, (*run)->position());
    auto resumed = DataLoader::Create(&examples, o);
    ASSERT_TRUE((*resumed)->Seek(*saved).ok());
    for (int k = 0; k < 2 * static_cast<int>(per_epoch) + 3; ++k) {
      PackedBatch x, y;
      ASSERT_TRUE((*run)->Next(&x));
      ASSERT_TRUE((*resumed)->Next(&y));
      ASSERT_EQ(x.tokens, y.tokens) << "stop " << stop << " batch " << k;
      ASSERT_EQ(x.targets, y.targets);
      ASSERT_EQ(x.doc_start, y.doc_start);
      ASSERT_EQ(x.epoch, y.epoch);
    }
  }
  EXPECT_FALSE((*a)->Seek({0, per_epoch + 5}).ok());
  EXPECT_FALSE(DataPosition::FromJson({{"epoch", -1}, {"cursor", 0}}).ok());
}

TEST(PackingTest, RankSplitRule) {
  std::vector<TrainExample> examples = SyntheticSet(30);
  PackingOptions o;
  o.seq_len = 16;
  o.seed = 3;
  auto single = DataLoader::Create(&examples, o);
  ASSERT_TRUE(single.ok());
  const int A = 3, W = 2, steps = 7;  // spans several epochs
  o.world_size = W;
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int r = 0; r < W; ++r) {
    o.rank = r;
    auto dl = DataLoader::Create(&examples, o);
    ASSERT_TRUE(dl.ok());
    ranks.push_back(std::move(*dl));
  }
  for (int s = 0; s < steps; ++s) {
    // World 1, accumulation A*W: the step's batches in stream order.
    std::vector<std::vector<int32_t>> want;
    for (int k = 0; k < A * W; ++k) {
      PackedBatch b;
      ASSERT_TRUE((*single)->Next(&b));
      want.push_back(b.tokens);
    }
    // World W, accumulation A: rank r's k-th batch is stream batch k*W + r.
    for (int k = 0; k < A; ++k) {
      for (int r = 0; r < W; ++r) {
        PackedBatch b;
        ASSERT_TRUE(ranks[r]->Next(&b));
        EXPECT_EQ(b.tokens, want[k * W + r]) << "step " << s << " k " << k << " rank " << r;
      }
    }
    // One position for all ranks, equal to world 1's at the same step.
    EXPECT_EQ(ranks[0]->position(), ranks[1]->position());
    EXPECT_EQ(ranks[0]->position(), (*single)->position());
  }
  o.rank = 2;
  EXPECT_FALSE(DataLoader::Create(&examples, o).ok());
}

TEST(PackingTest, EvalPassEndsAndBadOptionsAreRefused) {
  std::vector<TrainExample> examples = SyntheticSet(10);
  PackingOptions o;
  o.seq_len = 16;
  o.shuffle = false;
  o.repeat = false;
  o.world_size = 3;
  std::map<int, std::vector<int32_t>> seen;
  int total = 0;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    auto dl = DataLoader::Create(&examples, o);
    ASSERT_TRUE(dl.ok());
    PackedBatch b;
    while ((*dl)->Next(&b)) {
      EXPECT_EQ(b.index_in_epoch % 3, static_cast<uint64_t>(r));
      CheckBatch(b, examples, &seen);
      ++total;
    }
    EXPECT_FALSE((*dl)->Next(&b));
  }
  EXPECT_EQ(seen.size(), examples.size());
  o.world_size = 1;
  o.rank = 0;
  auto one = DataLoader::Create(&examples, o);
  EXPECT_EQ(static_cast<uint64_t>(total), (*one)->BatchesInEpoch(0));

  o.seq_len = 1;
  EXPECT_FALSE(DataLoader::Create(&examples, o).ok());
  o.seq_len = 16;
  o.rows_per_batch = 0;
  EXPECT_FALSE(DataLoader::Create(&examples, o).ok());
  o.rows_per_batch = 1;
  std::vector<TrainExample> untrainable = {Synthetic(1, 5, 5)};
  auto none = DataLoader::Create(&untrainable, o);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("none of the 1 examples"));
  std::vector<TrainExample> mismatched = {Synthetic(1, 5, 1)};
  mismatched[0].loss_mask.pop_back();
  EXPECT_FALSE(DataLoader::Create(&mismatched, o).ok());
}

}  // namespace
}  // namespace retort
