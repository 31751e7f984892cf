#include "formats/reasoning.h"

#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(SplitThinkTest, Forms) {
  ThinkSplit s = SplitThink("<think>\nR\n</think>\n\nA");
  EXPECT_TRUE(s.found);
  EXPECT_EQ(s.reasoning, "R");
  EXPECT_EQ(s.answer, "A");

  s = SplitThink("step 1\nstep 2</think>answer");  // prompt ended in <think>
  EXPECT_TRUE(s.found);
  EXPECT_EQ(s.reasoning, "step 1\nstep 2");
  EXPECT_EQ(s.answer, "answer");

  s = SplitThink("<think>cut off mid");
  EXPECT_TRUE(s.found);
  EXPECT_EQ(s.reasoning, "cut off mid");
  EXPECT_EQ(s.answer, "");

  s = SplitThink("plain answer");
  EXPECT_FALSE(s.found);
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.answer, "plain answer");

  s = SplitThink("<think></think>");
  EXPECT_TRUE(s.found);
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.answer, "");
}

TEST(JoinReasoningTest, InverseOfSplit) {
  EXPECT_EQ(JoinReasoning("R", "A"), "<think>\nR\n</think>\n\nA");
  EXPECT_EQ(JoinReasoning("", "A"), "A");
  ThinkSplit s = SplitThink(JoinReasoning("two\nlines", "the answer"));
  EXPECT_TRUE(s.found);
  EXPECT_EQ(s.reasoning, "two\nlines");
  EXPECT_EQ(s.answer, "the answer");
}

TEST(EndsInsideReasoningTest, TrailingOpenTag) {
  EXPECT_TRUE(EndsInsideReasoning("<|Assistant|><think>\n"));
  EXPECT_TRUE(EndsInsideReasoning("<think>"));
  EXPECT_TRUE(EndsInsideReasoning("x<think> \t\r\n"));
  EXPECT_FALSE(EndsInsideReasoning("<think>r</think>\n"));
  EXPECT_FALSE(EndsInsideReasoning("think>"));
  EXPECT_FALSE(EndsInsideReasoning(""));
  EXPECT_FALSE(EndsInsideReasoning("  \n"));
}

TEST(RemoveThinkBlocksTest, Forms) {
  EXPECT_EQ(RemoveThinkBlocks("<think>\nadd them\n</think>\n\n4"), "4");
  EXPECT_EQ(RemoveThinkBlocks("<think>a</think>x <think>b</think>y"), "x y");
  EXPECT_EQ(RemoveThinkBlocks("<think>\nstill thinking"), "");
  EXPECT_EQ(RemoveThinkBlocks("add them\n</think>\n\n4"), "4");
}

TEST(ReasoningTagsTest, Spelling) {
  EXPECT_EQ(kReasoningOpenTag, "<think>");
  EXPECT_EQ(kReasoningCloseTag, "</think>");
  EXPECT_EQ(kReasoningPrefix, "<think>\n");
}

}  // namespace
}  // namespace retort
