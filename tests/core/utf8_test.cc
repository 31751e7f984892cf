// core/utf8: the codec's verdicts on the cases Unicode's Table 3-7 separates
// (valid, overlong, surrogate, truncated, above U+10FFFF) and the U+FFFD
// replacement rule Python's errors="replace" follows.
#include "core/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace retort {
namespace {

TEST(Utf8Test, DecodesValidCharacters) {
  struct Case {
    std::string bytes;
    char32_t cp;
  } cases[] = {{"A", U'A'},
               {"\xC3\xA9", 0xE9},
               {"\xE3\x80\x82", 0x3002},
               {"\xF0\x9F\x98\x80", 0x1F600},
               {"\xF4\x8F\xBF\xBF", 0x10FFFF},
               {"\xEF\xBF\xBD", 0xFFFD}};
  for (const Case& c : cases) {
    char32_t cp = 0;
    EXPECT_EQ(DecodeUtf8Char(c.bytes, 0, &cp), static_cast<int>(c.bytes.size()));
    EXPECT_EQ(cp, c.cp);
    std::string round;
    AppendUtf8(c.cp, &round);
    EXPECT_EQ(round, c.bytes);
  }
}

TEST(Utf8Test, RejectsIllFormedSequences) {
  const std::string bad[] = {
      "\xC0\xAF",          // overlong '/'
      "\xE0\x80\xAF",      // overlong, 3 bytes
      "\xF0\x80\x80\xAF",  // overlong, 4 bytes
      "\xED\xA0\x80",      // surrogate U+D800
      "\xED\xBF\xBF",      // surrogate U+DFFF
      "\xF4\x90\x80\x80",  // U+110000
      "\xF5\x80\x80\x80",  // lead byte beyond U+10FFFF
      "\xE2\x82",          // truncated
      "\xF0\x9F\x98",      // truncated
      "\x80",              // stray continuation
      "\xFF",
  };
  for (const std::string& b : bad) {
    SCOPED_TRACE(b);
    char32_t cp = 0;
    EXPECT_EQ(DecodeUtf8Char(b, 0, &cp), 0);
    EXPECT_FALSE(IsValidUtf8(b));
    EXPECT_EQ(ValidUtf8Prefix("ok" + b), 2u);
  }
  EXPECT_TRUE(IsValidUtf8("plain \xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_EQ(ValidUtf8Prefix("\xC3\xA9"), 2u);
}

TEST(Utf8Test, ReplacesMaximalSubparts) {
  // Python: b"...".decode("utf-8", errors="replace").
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");                          // one
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // two
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // three
  EXPECT_EQ(Utf8Lossy("a\xE2\x82z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(DecodeUtf8Lossy("a\xF4\x90\x80\x80"),
            (std::u32string{U'a', 0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD}));
  EXPECT_EQ(DecodeUtf8Lossy("\xC3\xA9\xE3\x80\x82"), (std::u32string{0xE9, 0x3002}));
}

TEST(Utf8Test, CountsCodePoints) {
  EXPECT_EQ(Utf8Length(""), 0u);
  EXPECT_EQ(Utf8Length("abc"), 3u);
  EXPECT_EQ(Utf8Length("h\xC3\xA9llo \xE3\x80\x82\xF0\x9F\x98\x80"), 8u);
  EXPECT_TRUE(IsAscii("abc"));
  EXPECT_FALSE(IsAscii("\xC3\xA9"));
  EXPECT_EQ(EncodeUtf8(U"h\u00e9\U0001F600"), "h\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(Utf8Test, FindsAnIncompleteTail) {
  EXPECT_EQ(IncompleteUtf8Tail(""), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2\x82\xAC"), 0u);  // complete '€'
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2"), 1u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2\x82"), 2u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xF0\x9F\x98"), 3u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xED\xA0"), 0u);  // a surrogate never completes
  EXPECT_EQ(IncompleteUtf8Tail("a\x80\x80"), 0u);  // stray continuations
  EXPECT_EQ(IncompleteUtf8Tail("a\xC0"), 0u);      // never a lead byte
}

TEST(Utf8Test, StepsOverWholeCharacters) {
  const std::string s = "a\xC3\xA9\xF0\x9F\x98\x80z";
  EXPECT_EQ(NextUtf8CharStart(s, 0), 1u);
  EXPECT_EQ(NextUtf8CharStart(s, 1), 3u);
  EXPECT_EQ(NextUtf8CharStart(s, 3), 7u);
  EXPECT_EQ(PrevUtf8CharStart(s, 7), 3u);
  EXPECT_EQ(PrevUtf8CharStart(s, 3), 1u);
  EXPECT_EQ(PrevUtf8CharStart(s, 1), 0u);

  Utf8Reader reader("a\xC3\xA9\xFFz");
  std::u32string seen;
  std::vector<size_t> offsets;
  for (char32_t c; reader.Next(&c);) {
    seen.push_back(c);
    offsets.push_back(reader.offset());
  }
  EXPECT_EQ(seen, (std::u32string{U'a', 0xE9, 0xFFFD, U'z'}));
  EXPECT_EQ(offsets, (std::vector<size_t>{1, 3, 4, 5}));
}

}  // namespace
}  // namespace retort
