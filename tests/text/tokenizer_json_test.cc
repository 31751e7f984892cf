// tokenizer.json writing: the document's fixed parts and key order, and that
// the tokenizer read back from it encodes as written.
#include "text/tokenizer_json.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace retort {
namespace {

TEST(TokenizerJsonTest, PartsComeInTheOrderTokenizersWrites) {
  EXPECT_EQ(ByteLevelJson(true, false).dump(),
            R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,)"
            R"("use_regex":true})");
  EXPECT_EQ(ByteLevelJson(false, true, false).dump(),
            R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,)"
            R"("use_regex":false})");
  EXPECT_EQ(AddedTokenJson(7, "<s>", true).dump(),
            R"({"id":7,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,)"
            R"("normalized":false,"special":true})");

  BpeTokenizerJson t;
  t.vocab["a"] = 0;
  t.vocab["b"] = 1;
  t.vocab["ab"] = 2;
  t.merges.push_back("a b");
  t.ignore_merges = true;
  EXPECT_EQ(TokenizerJson(t).dump(),
            R"({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],)"
            R"("normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,)"
            R"("model":{"type":"BPE","dropout":null,"unk_token":null,)"
            R"("continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,)"
            R"("byte_fallback":false,"ignore_merges":true,"vocab":{"a":0,"b":1,"ab":2},)"
            R"("merges":["a b"]}})");
}

TEST(TokenizerJsonTest, WrittenTokenizerEncodesAsBuilt) {
  BpeTokenizerJson t;
  const std::vector<std::string> pieces = {"a", "b", "\xC4\xA0", "ab",
                                           "\xC4\xA0"
                                           "ab"};
  for (size_t i = 0; i < pieces.size(); ++i) t.vocab[pieces[i]] = i;
  t.merges = {"a b", "\xC4\xA0 ab"};
  t.added_tokens.push_back(AddedTokenJson(5, "<|end|>", true));
  t.pre_tokenizer = ByteLevelJson(false, true);
  t.post_processor = t.decoder = ByteLevelJson(false, true);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::FromJsonString(TokenizerJson(t).dump(), "test");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("ab ab<|end|>", false), (std::vector<int32_t>{3, 4, 5}));
}

}  // namespace
}  // namespace retort
