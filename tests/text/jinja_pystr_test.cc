// Python str semantics of the Jinja engine. Every expected value is what
// CPython 3.11 (Unicode 14) prints for the same expression; an exhaustive
// comparison over all code points found differences only where utf8proc's
// newer Unicode adds characters, in Other_Lowercase modifier letters, and in
// the multi-character SpecialCasing mappings that jinja_pystr.h lists.
#include "text/jinja_pystr.h"

#include <string>

#include "gtest/gtest.h"
#include "text/jinja.h"

namespace retort::jinja {
namespace {

std::string Render(const std::string& src) {
  absl::StatusOr<Template> t = Template::Parse(src);
  if (!t.ok()) return std::string(t.status().message());
  absl::StatusOr<std::string> out = t->Render({});
  return out.ok() ? *out : std::string(out.status().message());
}

TEST(JinjaPystrTest, CharacterClassesFollowPython) {
  EXPECT_FALSE(IsPyAlpha(U'\u3002'));  // '。'.isalpha() == False
  EXPECT_FALSE(IsPyAlpha(U'\u00d7'));  // '×'
  EXPECT_TRUE(IsPyAlpha(U'\u00e9'));   // 'é'
  EXPECT_TRUE(IsPyAlpha(U'\u4e2d'));   // '中'
  EXPECT_TRUE(IsPyDigit(U'\u0663'));   // '٣'.isdigit()
  EXPECT_TRUE(IsPyDigit(U'\u00b2'));   // '²'.isdigit()
  EXPECT_FALSE(IsPyDecimal(U'\u00b2'));
  EXPECT_TRUE(IsPyNumeric(U'\u00bd'));  // '½'.isnumeric()
  EXPECT_FALSE(IsPyDigit(U'\u00bd'));
  EXPECT_TRUE(IsPyNumeric(U'\u216b'));      // 'Ⅻ'
  EXPECT_TRUE(IsPyWhitespace(U'\u3000'));   // ideographic space
  EXPECT_FALSE(IsPyWhitespace(U'\u200b'));  // zero width space
  EXPECT_TRUE(IsPyTitle(U'\u01c5'));        // 'ǅ'
  EXPECT_FALSE(IsPyUpper(U'\u01c5'));
  EXPECT_FALSE(IsPyLower(U'\u01c5'));
}

TEST(JinjaPystrTest, StringPredicatesFollowPython) {
  EXPECT_TRUE(IsTitleString("\xC7\x85"));  // 'ǅ'.istitle()
  EXPECT_TRUE(IsTitleString("Hello World"));
  EXPECT_FALSE(IsTitleString("Hello world"));
  EXPECT_FALSE(IsLowerString("123"));
  EXPECT_TRUE(IsUpperString("ABC1"));
  EXPECT_TRUE(IsLowerString("\xE2\x93\x90"));  // 'ⓐ'.islower()
  EXPECT_TRUE(IsLowerString("\xC2\xAA"));      // 'ª'.islower()
  EXPECT_EQ(Render("{{ '\xE3\x80\x82'.isalpha() }} {{ '\xC3\xA9t\xC3\xA9'.isalpha() }} "
                   "{{ '\xC7\x85'.istitle() }} {{ 'a1_'.isalnum() }} {{ '\xD9\xA3'.isdigit() }}"),
            "False True True False True");
  EXPECT_EQ(Render("{{ '\xE3\x80\x82' is lower }} {{ 'abc' is lower }} {{ 'AB' is upper }}"),
            "False True True");
  EXPECT_EQ(Render("{{ 'one\xE3\x80\x82two three'|wordcount }}"), "3");
}

TEST(JinjaPystrTest, CaseMappingsFollowPython) {
  EXPECT_EQ(Upper("\xC3\x9F"), "SS");  // 'ß'.upper()
  EXPECT_EQ(Upper("\xCE\xA9\xCE\xBC\xCE\xAD\xCE\xB3\xCE\xB1"),
            "\xCE\xA9\xCE\x9C\xCE\x88\xCE\x93\xCE\x91");  // 'Ωμέγα' -> 'ΩΜΈΓΑ'
  EXPECT_EQ(Lower("\xD0\x9F\xD0\xA0\xD0\x98\xD0\x92\xD0\x95\xD0\xA2"),
            "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82");  // 'ПРИВЕТ' -> 'привет'
  EXPECT_EQ(Upper("\xEA\xAD\xB0"), "\xE1\x8E\xA0");               // Cherokee 'ꭰ' -> 'Ꭰ'
  EXPECT_EQ(Upper("\xE2\x93\x90"), "\xE2\x92\xB6");               // 'ⓐ' -> 'Ⓐ'
  EXPECT_EQ(Lower("\xE1\xBA\x9E"), "\xC3\x9F");                   // 'ẞ' -> 'ß'
  EXPECT_EQ(Title("\xC7\x86"
                  "a"),
            "\xC7\x85"
            "a");  // 'ǆa' -> 'ǅa'
  EXPECT_EQ(Capitalize("\xC7\x86"
                       "A"),
            "\xC7\x85"
            "a");  // 'ǆA' -> 'ǅa'
  EXPECT_EQ(Title("hello w\xC3\xB6rld"), "Hello W\xC3\xB6rld");
  EXPECT_EQ(Title("a\xE3\x80\x82"
                  "b"),
            "A\xE3\x80\x82"
            "B");  // '。' is not cased
  EXPECT_EQ(Render("{{ '\xEF\xBD\x81\xEF\xBD\x82'|upper }}"), "\xEF\xBC\xA1\xEF\xBC\xA2");
}

TEST(JinjaPystrTest, StrHelpers) {
  EXPECT_EQ(CodepointLength("h\xC3\xA9llo"), 5);
  EXPECT_EQ(ReprString("it's"), "\"it's\"");
  EXPECT_EQ(ReprString("a\nb\x7f"), "'a\\nb\\x7f'");
  EXPECT_EQ(Strip("\xE3\x80\x80 x \xE3\x80\x80", nullptr, true, true), "x");
  EXPECT_EQ(SplitLines("a\nb\r\nc\rd"), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(ParseInt(" 1_000 ", 10), 1000);
  EXPECT_FALSE(ParseInt("x", 10).has_value());
}

}  // namespace
}  // namespace retort::jinja
