// TextStream: decoding, stop strings and the reasoning split, token by token.
#include "serve/text_stream.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/text/byte_tokenizer.h"

namespace retort::serve {
namespace {

using retort::testing::ByteIds;
using retort::testing::MakeByteTokenizer;
using Mode = ReasoningSplitter::Mode;

// Pushes ids one at a time, taking what is ready after each; returns the
// pieces (the rest, then the reasoning tail, last).
struct Fed {
  std::vector<std::string> pieces;
  std::string text, reasoning, content;
  bool stopped_early = false;
};

Fed Feed(TextStream& s, const std::vector<int32_t>& ids) {
  Fed r;
  auto add = [&r](const TextDelta& d) {
    r.pieces.push_back(d.text);
    r.text += d.text;
    r.reasoning += d.reasoning;
    r.content += d.content;
  };
  for (int32_t id : ids) {
    const bool more = s.Push(id);
    add(s.TakeReady());
    if (!more) {
      r.stopped_early = true;
      break;
    }
  }
  add(s.TakeRest());
  add(s.FinishReasoning());
  return r;
}

TextStreamOptions Stops(std::vector<std::string> stop) {
  TextStreamOptions o;
  o.stop = std::move(stop);
  return o;
}

// Chat's options: the auto reasoning parser.
TextStreamOptions Chat(bool starts_in_reasoning, std::vector<std::string> stop = {}) {
  TextStreamOptions o = Stops(std::move(stop));
  o.reasoning = Mode::kAuto;
  o.starts_in_reasoning = starts_in_reasoning;
  return o;
}

TEST(TextStreamTest, PlainTextPassesThrough) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, {});
  Fed r = Feed(s, ByteIds("hello"));
  EXPECT_EQ(r.text, "hello");
  EXPECT_EQ(r.content, "hello");
  EXPECT_EQ(r.pieces[0], "h");
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ(s.chars(), 5u);
}

TEST(TextStreamTest, StopStringSplitAcrossTokensCutsTheText) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"END"}));
  Fed r = Feed(s, ByteIds("abcENDxyz"));
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.text, "abc");
  EXPECT_EQ(s.text(), "abc");
  EXPECT_TRUE(s.stopped());
  // "E" and "EN" were held back, never sent.
  EXPECT_EQ((std::vector<std::string>{"a", "b", "c", "", "", "", "", ""}), r.pieces);
}

TEST(TextStreamTest, HeldBackPrefixIsReleasedWhenItCannotBecomeAStop) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"END"}));
  Fed r = Feed(s, ByteIds("aENx"));
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ((std::vector<std::string>{"a", "", "", "ENx", "", ""}), r.pieces);
  EXPECT_EQ(r.text, "aENx");
}

TEST(TextStreamTest, FinishFlushesAHeldBackPrefix) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"END"}));
  Fed r = Feed(s, ByteIds("aEN"));
  EXPECT_EQ((std::vector<std::string>{"a", "", "", "EN", ""}), r.pieces);
}

TEST(TextStreamTest, EarliestOfSeveralStopStringsWins) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"xyz", "yz!", "b"}));
  Fed r = Feed(s, ByteIds("aaxyz!"));
  EXPECT_EQ(r.text, "aa");
}

TEST(TextStreamTest, PartialUtf8AcrossTokensComesOutWhole) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, {});
  Fed r = Feed(s, ByteIds("\xE4\xB8\xAD!"));
  EXPECT_EQ((std::vector<std::string>{"", "", "\xE4\xB8\xAD", "!", "", ""}), r.pieces);
  EXPECT_EQ(s.chars(), 2u);
}

TEST(TextStreamTest, BrokenUtf8IsFlushedAfterFourTokens) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, {});
  // Four tokens and still inside a character: out they go, as U+FFFD.
  Fed r = Feed(s, {0xF0, 0x9F, 0x98, 0xF0, 'a'});
  EXPECT_EQ((std::vector<std::string>{"", "", "", "\xEF\xBF\xBD\xEF\xBF\xBD", "a", "", ""}),
            r.pieces);
}

TEST(TextStreamTest, FinishDecodesAnIncompleteCharacter) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, {});
  Fed r = Feed(s, {'a', 0xE4, 0xB8});
  EXPECT_EQ(r.text, "a\xEF\xBF\xBD");
}

TEST(TextStreamTest, StopStringMatchesAcrossAMultiByteCharacter) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"\xC3\xA9!"}));
  Fed r = Feed(s, ByteIds("x\xC3\xA9!y"));
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.text, "x");
}

TEST(TextStreamTest, ReasoningIsSplitOff) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Chat(/*starts_in_reasoning=*/false));
  std::vector<int32_t> ids = {retort::testing::kThinkId,    'h', 'm',
                              retort::testing::kEndThinkId, 'o', 'k'};
  Fed r = Feed(s, ids);
  EXPECT_EQ(r.reasoning, "hm");
  EXPECT_EQ(r.content, "ok");
  EXPECT_EQ(r.text, "<think>hm</think>ok");
  EXPECT_TRUE(s.saw_reasoning());
}

TEST(TextStreamTest, StopInsideReasoningEndsTheGeneration) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Chat(/*starts_in_reasoning=*/true, {"STOP"}));
  Fed r = Feed(s, ByteIds("plan STOP</think>answer"));
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.reasoning, "plan ");
  EXPECT_EQ(r.content, "");
  EXPECT_TRUE(s.saw_reasoning());
}

TEST(TextStreamTest, ReasoningTailIsHeldUntilFinish) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Chat(/*starts_in_reasoning=*/false));
  for (int32_t id : ByteIds("hi<thi")) s.Push(id);
  TextDelta ready = s.TakeReady();
  EXPECT_EQ(ready.text, "hi<thi");
  EXPECT_EQ(ready.content, "hi");
  EXPECT_TRUE(s.TakeRest().empty());
  TextDelta tail = s.FinishReasoning();
  EXPECT_EQ(tail.content, "<thi");
  EXPECT_EQ(tail.text, "");
}

TEST(TextStreamTest, SpecialTokensAddNoText) {
  auto tok = MakeByteTokenizer();
  TextStream s(*tok, Stops({"x"}));
  Fed r = Feed(s, {'a', retort::testing::kEndId, 'b'});
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(s.chars(), 2u);
}

}  // namespace
}  // namespace retort::serve
