// Hostile chat templates and pre-tokenizer regexes in a model folder, run from
// the CLI as a user would: each ends in one clean error line and a non-zero
// exit, in bounded time and memory (they crashed, hung or took gigabytes in
// the 2026-12 audit).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "core/file.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_harness.h"

namespace retort {
namespace {

namespace fs = std::filesystem;
using testing::CliHarness;
using testing::CliRun;

class HostileTextCliTest : public ::testing::Test {
 protected:
  HostileTextCliTest() : cli_("hostile_text_cli_test") {}

  // A copy of the bundled teacher whose tokenizer_config.json / tokenizer.json
  // `edit` rewrites.
  std::string Model(const std::string& name, const std::string& file,
                    const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dir = cli_.root() / name;
    fs::copy(fs::path(RETORT_SOURCE_DIR_PATH) / "models/arith-teacher", dir,
             fs::copy_options::recursive);
    nlohmann::json j = nlohmann::json::parse(*ReadFileToString((dir / file).string()));
    edit(j);
    EXPECT_TRUE(WriteFileAtomically((dir / file).string(), j.dump()).ok());
    return dir.string();
  }
  std::string Template(const std::string& name, const std::string& tpl) {
    return Model(name, "tokenizer_config.json",
                 [&](nlohmann::json& j) { j["chat_template"] = tpl; });
  }
  // `retort tokenize MODEL --chat ...`: fails with one line that says `words`.
  void ExpectOneLineError(const std::string& model, const std::string& words) {
    CliRun r = cli_.Exec(model + " --chat '[{\"role\": \"user\", \"content\": \"hi\"}]'");
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  }

  CliHarness cli_;
};

TEST_F(HostileTextCliTest, TemplateBlowUpsAreOneLineErrors) {
  const std::string tokenize = "tokenize ";
  ExpectOneLineError(tokenize + Template("deep",
                                         "{% set ns = namespace(x=[]) %}"
                                         "{% for i in range(100000) %}{% set ns.x = [ns.x] %}"
                                         "{% endfor %}{{ ns.x }}"),
                     "nested deeper than 200");
  ExpectOneLineError(tokenize + Template("double",
                                         "{% set ns = namespace(s='ab') %}"
                                         "{% for i in range(64) %}"
                                         "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
                     "exceeds the limit of 67108864");
  ExpectOneLineError(tokenize + Template("iterate", "{% for c in 'x' * 60000000 %}{% endfor %}"),
                     "iterating a string");
  ExpectOneLineError(tokenize + Template("range", "{{ range(9223372036854775807)|length }}"),
                     "more than 100000 items");
}

TEST_F(HostileTextCliTest, BacktrackingRegexIsRefusedAtLoad) {
  const std::string model = Model("regex", "tokenizer.json", [](nlohmann::json& j) {
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"},
                             {"pattern", {{"Regex", "(\\w+\\s?)+$"}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            j["pre_tokenizer"]}}};
  });
  ExpectOneLineError("tokenize " + model, "catastrophic backtracking");
}

}  // namespace
}  // namespace retort
