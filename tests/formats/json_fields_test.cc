#include "formats/json_fields.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace retort {
namespace {

using json = nlohmann::json;

TEST(JsonFieldsTest, MembersWithFallbacks) {
  const json q = json::parse(R"({"bits": 4, "sym": true, "name": "x", "gone": null,
                                 "targets": ["a", "b"], "one": "c", "scale": 0.5})");
  JsonFields f("cfg.json");
  EXPECT_EQ(*f.Int(q, "quantization_config", "bits", std::nullopt), 4);
  EXPECT_EQ(*f.Int(q, "quantization_config", "gone", 8), 8);
  EXPECT_EQ(*f.Bool(q, "quantization_config", "sym", false), true);
  EXPECT_EQ(*f.Bool(q, "quantization_config", "absent", true), true);
  EXPECT_EQ(*f.String(q, "quantization_config", "name", std::nullopt), "x");
  EXPECT_EQ(*f.Number(q, "", "scale", std::nullopt), 0.5);
  EXPECT_EQ(*f.Strings(q, "q", "targets"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*f.Strings(q, "q", "one"), (std::vector<std::string>{"c"}));
  EXPECT_TRUE(f.Strings(q, "q", "absent")->empty());
}

TEST(JsonFieldsTest, MessagesNameFileAndPath) {
  const json q = json::parse(R"({"bits": "4", "sym": 1, "targets": [1]})");
  JsonFields f("cfg.json");
  EXPECT_EQ(f.Int(q, "quantization_config", "bits", std::nullopt).status().message(),
            "cfg.json: quantization_config.bits: expected an integer, got \"4\"");
  EXPECT_EQ(f.Int(q, "quantization_config", "group_size", std::nullopt).status().message(),
            "cfg.json: quantization_config.group_size: missing (expected an integer)");
  EXPECT_EQ(f.String(q, "q", "name", std::nullopt).status().message(),
            "cfg.json: q.name: missing (expected a string)");
  EXPECT_EQ(f.Bool(q, "q", "sym", false).status().message(),
            "cfg.json: q.sym: expected true/false, got 1");
  EXPECT_EQ(f.Strings(q, "q", "targets").status().message(),
            "cfg.json: q.targets: expected a list of strings, got [1]");
  EXPECT_EQ(f.Int(q, "", "bits", std::nullopt).status().message(),
            "cfg.json: bits: expected an integer, got \"4\"");
}

TEST(JsonFieldsTest, TypeShownForLines) {
  const nlohmann::ordered_json line = nlohmann::ordered_json::parse(R"({"id": ["a"], "n": 1.5})");
  JsonFields f("t.jsonl:3", JsonFields::Shown::kType);
  EXPECT_EQ(f.String(line["id"], "id").status().message(),
            "t.jsonl:3: id: expected a string, got array");
  EXPECT_EQ(f.Int(line["n"], "n").status().message(),
            "t.jsonl:3: n: expected an integer, got a number");
  EXPECT_EQ(f.Bad("", "empty line").message(), "t.jsonl:3: empty line");
  EXPECT_EQ(f.Bad("x", "bad ", 2).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace retort
