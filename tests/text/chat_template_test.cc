// Renders real chat templates (tests/reference/chat_templates/*.jinja) over
// the conversations in fixtures.json and compares with what transformers'
// apply_chat_template produced for the same inputs.
#include "text/chat_template.h"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>

#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixture_util.h"

namespace retort {
namespace {

using testing_util::ReadOrDie;

using ::testing::HasSubstr;

const char kDir[] = "tests/reference/chat_templates/";

std::tm ParseFixedNow(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  in >> std::get_time(&tm, "%Y-%m-%d %H:%M:%S");
  EXPECT_FALSE(in.fail()) << s;
  // Fill the derived fields (weekday, yday) the way Python's datetime has them.
  std::tm copy = tm;
  timegm(&copy);
  tm.tm_wday = copy.tm_wday;
  tm.tm_yday = copy.tm_yday;
  return tm;
}

TEST(ChatTemplateTest, MatchesTransformersOnRealTemplates) {
  nlohmann::ordered_json doc =
      nlohmann::ordered_json::parse(ReadOrDie(std::string(kDir) + "fixtures.json"));
  std::map<std::string, ChatTemplate> templates;
  int checked = 0, errors = 0;
  std::map<std::string, int> per_template;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["template"].get<std::string>();
    SCOPED_TRACE(name + " / " + c["conversation"].get<std::string>() +
                 (c["add_generation_prompt"].get<bool>() ? " / gen" : " / no-gen"));
    auto it = templates.find(name);
    if (it == templates.end()) {
      absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(ReadOrDie(kDir + name));
      ASSERT_TRUE(t.ok()) << t.status();
      it = templates.emplace(name, *std::move(t)).first;
    }
    ChatTemplate& tmpl = it->second;
    tmpl.SetFixedNow(ParseFixedNow(c["fixed_now"].get<std::string>()));
    absl::StatusOr<std::string> out =
        tmpl.Render(c["messages"], c["add_generation_prompt"].get<bool>(), c["extra_context"]);
    if (c.contains("error")) {
      ASSERT_FALSE(out.ok()) << "expected error: " << c["error"];
      EXPECT_THAT(std::string(out.status().message()), HasSubstr(c["error"].get<std::string>()));
      ++errors;
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    }
    ++checked;
    ++per_template[name];
  }
  EXPECT_GE(checked, 100);
  EXPECT_GE(errors, 2);
  for (const char* t :
       {"smollm2_instruct.jinja", "qwen2_5_instruct.jinja", "deepseek_r1_distill_qwen.jinja",
        "llama3_1_instruct.jinja", "llama3_2_instruct.jinja", "qwen3.jinja"}) {
    EXPECT_GE(per_template[t], 12) << t;
  }
}

TEST(ChatTemplateTest, LoadsTokenizerConfigWithAddedTokenObjects) {
  std::string dir = ::testing::TempDir() + "/chat_cfg_added";
  std::filesystem::create_directories(dir);
  nlohmann::ordered_json cfg = {
      {"bos_token", {{"__type", "AddedToken"}, {"content", "<｜begin▁of▁sentence｜>"}}},
      {"eos_token", {{"__type", "AddedToken"}, {"content", "<｜end▁of▁sentence｜>"}}},
      {"unk_token", nullptr},
      {"chat_template", ReadOrDie(std::string(kDir) + "deepseek_r1_distill_qwen.jinja")}};
  ASSERT_TRUE(WriteFileAtomically(dir + "/tokenizer_config.json", cfg.dump()).ok());
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->special_tokens()["bos_token"], "<｜begin▁of▁sentence｜>");
  EXPECT_FALSE(t->special_tokens().contains("unk_token"));
  nlohmann::ordered_json msgs =
      nlohmann::ordered_json::parse(R"([{"role":"user","content":"Hi"}])");
  absl::StatusOr<std::string> out = t->Render(msgs, true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n");
}

TEST(ChatTemplateTest, LoadsTemplateListByName) {
  std::string dir = ::testing::TempDir() + "/chat_cfg_list";
  std::filesystem::create_directories(dir);
  nlohmann::ordered_json cfg = {{"eos_token", "</s>"},
                                {"chat_template",
                                 {{{"name", "default"}, {"template", "D{{ eos_token }}"}},
                                  {{"name", "tool_use"}, {"template", "T"}}}}};
  ASSERT_TRUE(WriteFileAtomically(dir + "/tokenizer_config.json", cfg.dump()).ok());
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  absl::StatusOr<ChatTemplate> d =
      ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d->Render(msgs, false), "D</s>");
  absl::StatusOr<ChatTemplate> tu =
      ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json", "tool_use");
  ASSERT_TRUE(tu.ok()) << tu.status();
  EXPECT_EQ(*tu->Render(msgs, false), "T");
  absl::StatusOr<ChatTemplate> missing =
      ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json", "rag");
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("default, tool_use"));
}

TEST(ChatTemplateTest, ChatTemplateJinjaFileWins) {
  std::string dir = ::testing::TempDir() + "/chat_cfg_file";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/tokenizer_config.json", R"({"chat_template": "old"})").ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/chat_template.jinja", "new {{ messages | length }}\n").ok());
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Render(nlohmann::ordered_json::array(), false), "new 0");
}

TEST(ChatTemplateTest, ConfigErrors) {
  std::string dir = ::testing::TempDir() + "/chat_cfg_err";
  std::filesystem::create_directories(dir);
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(dir + "/absent.json").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/a.json", "{not json").ok());
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(dir + "/a.json").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/b.json", R"({"eos_token": "x"})").ok());
  absl::StatusOr<ChatTemplate> none = ChatTemplate::FromTokenizerConfig(dir + "/b.json");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteFileAtomically(dir + "/c.json", R"({"chat_template": "{% for x in %}"})").ok());
  absl::StatusOr<ChatTemplate> bad = ChatTemplate::FromTokenizerConfig(dir + "/c.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 1"));
}

TEST(ChatTemplateTest, MessagesMustBeObjects) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ messages }}");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->Render(nlohmann::ordered_json::parse(R"("hi")"), false).ok());
  EXPECT_FALSE(t->Render(nlohmann::ordered_json::parse(R"([1])"), false).ok());
}

TEST(ChatTemplateTest, NullKeysDroppedAndReasoningAliased) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{% for m in messages %}{{ m.content is defined }}|{{ m.thinking }}|{{ m.reasoning_content "
      "}}|"
      "{{ m | tojson }}{% endfor %}");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::string> out = t->Render(
      nlohmann::ordered_json::parse(R"([{"role":"assistant","content":null,"reasoning":"r1"}])"),
      false);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "False|r1|r1|{\"thinking\": \"r1\", \"role\": \"assistant\", \"reasoning\": \"r1\", "
            "\"reasoning_content\": \"r1\"}");
}

TEST(ChatTemplateTest, ExtraContextOverridesSpecialTokensAndSortedJsonOverload) {
  absl::StatusOr<ChatTemplate> t =
      ChatTemplate::Parse("{{ bos_token }}{{ tools is none }}{{ x | tojson }}");
  ASSERT_TRUE(t.ok());
  t->SetSpecialTokens({{"bos_token", "<s>"}});
  nlohmann::json msgs = nlohmann::json::array();
  nlohmann::json extra = {{"x", {{"b", 1}, {"a", 2}}}};
  absl::StatusOr<std::string> out = t->Render(msgs, false, extra);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>True{\"a\": 2, \"b\": 1}");
  absl::StatusOr<std::string> over =
      t->Render(msgs, false, nlohmann::json{{"bos_token", "B"}, {"x", 1}});
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(*over, "BTrue1");
}

}  // namespace
}  // namespace retort
