// IncrementalDecoder: what it returns, pushed token by token, adds up to
// Tokenizer::Decode of the whole sequence, and characters cut across tokens
// come out whole.
#include "text/detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/text/byte_tokenizer.h"

namespace retort {
namespace {

using testing::ByteIds;
using testing::MakeByteTokenizer;

std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids, int max_pending,
                      std::vector<std::string>* pieces = nullptr) {
  IncrementalDecoder d(tok, /*skip_special_tokens=*/true, max_pending);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = d.Push(id);
    if (pieces) pieces->push_back(piece);
    out += piece;
  }
  return out + d.Finish();
}

TEST(IncrementalDecoderTest, CharacterCutAcrossTokensWaitsUntilWhole) {
  auto tok = MakeByteTokenizer();
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder d(*tok, true);
  EXPECT_EQ(d.Push('a'), "a");
  // "é" is C3 A9; "中" is E4 B8 AD.
  EXPECT_EQ(d.Push(0xC3), "");
  EXPECT_EQ(d.pending_tokens(), 1u);
  EXPECT_EQ(d.Push(0xA9), "\xC3\xA9");
  EXPECT_EQ(d.Push(0xE4), "");
  EXPECT_EQ(d.Push(0xB8), "");
  EXPECT_EQ(d.Push(0xAD), "\xE4\xB8\xAD");
  EXPECT_EQ(d.pending_tokens(), 0u);
  EXPECT_EQ(d.Finish(), "");
}

TEST(IncrementalDecoderTest, FinishFlushesAnIncompleteCharacterAsReplacement) {
  auto tok = MakeByteTokenizer();
  IncrementalDecoder d(*tok, true);
  EXPECT_EQ(d.Push('x'), "x");
  EXPECT_EQ(d.Push(0xE4), "");
  EXPECT_EQ(d.Push(0xB8), "");
  EXPECT_EQ(d.Finish(), "\xEF\xBF\xBD");
}

TEST(IncrementalDecoderTest, PendingLimitFlushesBrokenBytes) {
  auto tok = MakeByteTokenizer();
  IncrementalDecoder d(*tok, true, /*max_pending_tokens=*/2);
  EXPECT_EQ(d.Push(0xF0), "");
  // Two tokens still inside a 4-byte character: out they go, as U+FFFD.
  EXPECT_EQ(d.Push(0x9F), "\xEF\xBF\xBD");
  // A new group starts: nothing joins the flushed bytes.
  EXPECT_EQ(d.Push(0x98), "");
  EXPECT_EQ(d.Finish(), "\xEF\xBF\xBD");
}

TEST(IncrementalDecoderTest, SpecialTokensAreSkippedAndAddedTokensKept) {
  auto tok = MakeByteTokenizer();
  std::vector<int32_t> ids = {testing::kThinkId, 'h', 'm', testing::kEndThinkId, testing::kEndId,
                              testing::kAbId,    -5,  999};
  EXPECT_EQ(StreamAll(*tok, ids, 0), "<think>hm</think>ab");
}

TEST(IncrementalDecoderTest, JoinsLikeDecodeWithoutAByteLevelDecoder) {
  auto tok = MakeByteTokenizer(/*byte_level_decoder=*/false);
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> ids = {'a', testing::kEndId, 'b', testing::kAbId, testing::kThinkId};
  EXPECT_EQ(StreamAll(*tok, ids, 0), tok->Decode(ids, true));
  EXPECT_EQ(StreamAll(*tok, ids, 0), "a b ab <think>");
}

TEST(IncrementalDecoderTest, RandomBytesAddUpToDecodeOfTheWhole) {
  auto tok = MakeByteTokenizer();
  std::mt19937 rng(11);
  const std::string alphabet = "a \xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\x80\xFF";
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      const uint32_t r = rng() % 20;
      if (r == 0) {
        ids.push_back(testing::kEndId);
      } else if (r == 1) {
        ids.push_back(testing::kAbId);
      } else {
        ids.push_back(static_cast<unsigned char>(alphabet[rng() % alphabet.size()]));
      }
    }
    std::vector<std::string> pieces;
    EXPECT_EQ(StreamAll(*tok, ids, 0, &pieces), tok->Decode(ids, true)) << "round " << round;
    // Without a limit nothing returned before Finish() ends in U+FFFD.
    for (const std::string& p : pieces) {
      EXPECT_FALSE(p.size() >= 3 && p.substr(p.size() - 3) == "\xEF\xBF\xBD") << "round " << round;
    }
  }
}

TEST(IncrementalDecoderTest, TextAsStreamedByTheWholeDecodeBefore) {
  // What `retort generate` printed before: decode everything each step and
  // print the new part unless it ends in U+FFFD. Same bytes now.
  auto tok = MakeByteTokenizer();
  std::vector<int32_t> ids = ByteIds("h\xC3\xA9llo \xE4\xB8\xAD \xF0\x9F\x98\x80!");
  std::vector<int32_t> so_far;
  std::string printed;
  for (int32_t id : ids) {
    so_far.push_back(id);
    std::string text = tok->Decode(so_far, true);
    if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) continue;
    printed += text.substr(printed.size());
  }
  printed += tok->Decode(so_far, true).substr(printed.size());
  EXPECT_EQ(StreamAll(*tok, ids, 0), printed);
}

}  // namespace
}  // namespace retort
