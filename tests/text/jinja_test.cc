// Jinja interpreter tests. jinja_cases.json holds small templates rendered by
// the jinja2 environment transformers compiles chat templates in (see
// tests/reference/chat_templates/make_fixtures.py); the rest pins down error
// handling: line numbers, limits, hostile input.
#include "text/jinja.h"

#include <ctime>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "core/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace retort::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> Render(const std::string& src, const ValueDict& ctx = {},
                                   const RenderOptions& opts = RenderOptions()) {
  absl::StatusOr<Template> t = Template::Parse(src);
  if (!t.ok()) return t.status();
  return t->Render(ctx, opts);
}

std::tm FixedNow(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  in >> std::get_time(&tm, "%Y-%m-%d %H:%M:%S");
  std::tm copy = tm;
  timegm(&copy);
  tm.tm_wday = copy.tm_wday;
  tm.tm_yday = copy.tm_yday;
  return tm;
}

TEST(JinjaTest, MatchesJinja2OnSnippets) {
  absl::StatusOr<std::string> text =
      ReadFileToString("tests/reference/chat_templates/jinja_cases.json");
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(*text);
  ValueDict ctx = Value::FromJson(doc["context"]).as_dict();
  RenderOptions opts;
  opts.fixed_now = FixedNow(doc["fixed_now"].get<std::string>());
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string src = c["template"].get<std::string>();
    SCOPED_TRACE(src);
    absl::StatusOr<std::string> out = Render(src, ctx, opts);
    if (c.contains("error")) {
      const std::string err = c["error"].get<std::string>();
      EXPECT_FALSE(out.ok()) << "expected " << err << ", got: " << (out.ok() ? *out : "");
      if (!out.ok() &&
          (absl::StartsWith(err, "UndefinedError: ") || absl::StartsWith(err, "TemplateError: "))) {
        EXPECT_THAT(std::string(out.status().message()), HasSubstr(err.substr(err.find(": ") + 2)));
      }
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    }
    ++n;
  }
  EXPECT_GE(n, 80);
}

TEST(JinjaTest, ParseErrorsNameTheLine) {
  struct Case {
    const char* src;
    const char* line;
  } cases[] = {
      {"{% if x %}\nno end", "line 2"},
      {"a\nb\n{{ 1 + }}", "line 3"},
      {"{% for x in y %}\n{% endif %}", "line 2"},
      {"\n\n{{ 'unterminated }}", "line 3"},
      {"{# never closed", "line 1"},
      {"{% set %}", "line 1"},
      {"x\n{% unknown_tag %}", "line 2"},
      {"{{ a ]] }}", "line 1"},
      {"{% break %}", "line 1"},
      {"{{ f(a=1, 2) }}", "line 1"},
      {"{% macro m( %}{% endmacro %}", "line 1"},
      {"{{ x", "line 1"},
      {"{% raw %}abc", "line 1"},
      {"{{ 'a' $ 'b' }}", "line 1"},
      {"{{ 99999999999999999999 }}", "line 1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.src);
    absl::StatusOr<Template> t = Template::Parse(c.src);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.line));
  }
}

TEST(JinjaTest, RuntimeErrorsNameTheLine) {
  absl::StatusOr<std::string> out = Render("a\n\n{{ raise_exception('boom') }}");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("line 3"));
  EXPECT_TRUE(absl::EndsWith(out.status().message(), "boom"));
}

TEST(JinjaTest, RunawayTemplatesHitLimits) {
  RenderOptions opts;
  opts.max_steps = 100000;
  absl::StatusOr<std::string> loops =
      Render("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
             {}, opts);
  ASSERT_FALSE(loops.ok());
  EXPECT_THAT(std::string(loops.status().message()), HasSubstr("steps"));

  absl::StatusOr<std::string> recursion =
      Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(recursion.ok());
  EXPECT_THAT(std::string(recursion.status().message()), HasSubstr("nested"));

  RenderOptions small;
  small.max_output_bytes = 1000;
  absl::StatusOr<std::string> big =
      Render("{% for i in range(100) %}{{ 'x' * 100 }}{% endfor %}", {}, small);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("output"));

  absl::StatusOr<std::string> huge = Render("{{ 'x' * 1000000000 }}");
  EXPECT_FALSE(huge.ok());
  absl::StatusOr<std::string> range = Render("{{ range(1000000000000)|length }}");
  EXPECT_FALSE(range.ok());
}

// The cases of the 2026-12 audit that crashed, hung or exhausted memory: each
// is now an error naming the limit (or, for a namespace that holds itself,
// Python's output).
TEST(JinjaTest, HostileValuesAreErrorsNotCrashes) {
  auto expect_error = [](const std::string& src, const std::string& words) {
    absl::StatusOr<std::string> out = Render(src);
    ASSERT_FALSE(out.ok()) << src;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(words)) << src;
  };
  // A list nested 100,000 deep, then printed (segfault before).
  expect_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}"
      "{% endfor %}{{ ns.x }}",
      "nested deeper than 200");
  expect_error(
      "{% set ns = namespace(d={}) %}{% for i in range(1000) %}{% set ns.d = {'a': ns.d} %}"
      "{% endfor %}",
      "nested deeper than 200");
  // A string doubled 64 times (hang and 8 GB before).
  expect_error(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
      "{% endfor %}",
      "exceeds the limit of 67108864");
  expect_error(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
      "{% endfor %}",
      "exceeds the limit of 67108864");
  expect_error(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
      "{% set ns.s = ns.s|replace('a', 'aaaa') %}{% endfor %}",
      "replace() result exceeds");
  expect_error(
      "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
      "{% endfor %}",
      "exceeds the limit of 1048576 items");
  expect_error("{{ ('x\n' * 1000000)|indent('y' * 100) }}", "indent result exceeds");
  expect_error("{{ [0] * 100000000 }}", "limit of 1048576 items");
  // Iterating a 100 MB string (9 GB before).
  expect_error("{% for c in 'x' * 60000000 %}{% endfor %}", "iterating a string");
  // range() as jinja2's sandbox bounds it, and without overflow near INT64_MAX.
  expect_error("{{ range(100001)|length }}", "more than 100000 items");
  expect_error("{{ range(-9223372036854775807, 9223372036854775807, 2)|length }}",
               "more than 100000");
  absl::StatusOr<std::string> top = Render(
      "{{ range(9223372036854775800, 9223372036854775807, 3)|list }}"
      "{{ range(9223372036854775807, 9223372036854775800, -4)|list }}");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(*top,
            "[9223372036854775800, 9223372036854775803, 9223372036854775806]"
            "[9223372036854775807, 9223372036854775803]");
  // Slices whose step would overflow the index (read before the buffer).
  absl::StatusOr<std::string> slices = Render(
      "{{ 'abc'[::9223372036854775807] }}|{{ 'abc'[::-9223372036854775807] }}|"
      "{{ [1, 2, 3][-9223372036854775807::-9223372036854775807] }}|"
      "{{ [1, 2, 3][1::9223372036854775807] }}|{{ [1, 2, 3][::-2] }}");
  ASSERT_TRUE(slices.ok()) << slices.status();
  EXPECT_EQ(*slices, "a|c|[]|[2]|[3, 1]");
  // A namespace assigned into itself prints as Python prints a recursive dict.
  absl::StatusOr<std::string> cycle =
      Render("{% set ns = namespace(a=1) %}{% set ns.b = ns %}{{ ns }}");
  ASSERT_TRUE(cycle.ok()) << cycle.status();
  EXPECT_EQ(*cycle, "<Namespace {'a': 1, 'b': <Namespace {...}>}>");
  // unique is linear, and keeps Python's equality (1 == 1.0 == True).
  absl::StatusOr<std::string> unique = Render(
      "{{ (range(100000)|list + range(100000)|list)|unique|list|length }}"
      "{{ [1, 1.0, True, 'a', 'a', none, none, 2.5, [1], [1]]|unique|list }}");
  ASSERT_TRUE(unique.ok()) << unique.status();
  EXPECT_EQ(*unique, "100000[1, 'a', None, 2.5, [1]]");
}

TEST(JinjaTest, DeepNestingIsAnErrorNotACrash) {
  std::string deep_expr = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  EXPECT_FALSE(Template::Parse(deep_expr).ok());
  std::string deep_not = "{{ " + std::string(0, ' ');
  for (int i = 0; i < 5000; ++i) deep_not += "not ";
  deep_not += "1 }}";
  EXPECT_FALSE(Template::Parse(deep_not).ok());
  std::string deep_if;
  for (int i = 0; i < 5000; ++i) deep_if += "{% if true %}";
  EXPECT_FALSE(Template::Parse(deep_if).ok());
  std::string deep_list = "{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}";
  EXPECT_FALSE(Template::Parse(deep_list).ok());
  std::string long_chain = "{{ x";
  for (int i = 0; i < 5000; ++i) long_chain += "|trim";
  long_chain += " }}";
  EXPECT_FALSE(Template::Parse(long_chain).ok());
  std::string long_sum = "{{ 1";
  for (int i = 0; i < 5000; ++i) long_sum += " + 1";
  long_sum += " }}";
  EXPECT_FALSE(Template::Parse(long_sum).ok());
  std::string ok_sum = "{{ 1";
  for (int i = 0; i < 150; ++i) ok_sum += " + 1";
  ok_sum += " }}";
  absl::StatusOr<std::string> sum = Render(ok_sum);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, "151");
  // Deep blocks inside deep macro recursion: an error, never a stack overflow.
  std::string blocks = "{% macro f(n) %}";
  for (int i = 0; i < 90; ++i) blocks += "{% if true %}";
  blocks += "{{ f(n + 1) }}";
  for (int i = 0; i < 90; ++i) blocks += "{% endif %}";
  blocks += "{% endmacro %}{{ f(0) }}";
  absl::StatusOr<std::string> nested = Render(blocks);
  ASSERT_FALSE(nested.ok());
  EXPECT_THAT(std::string(nested.status().message()), HasSubstr("nested"));
}

TEST(JinjaTest, RandomInputNeverCrashes) {
  const std::string alphabet = "{}%#-+ ()[]|.,:'\"\\\nabxif elsendorsetin12~*/=<>!";
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> len(1, 60);
  ValueDict ctx;
  ctx.Set("x", Value::String("v"));
  ctx.Set("a", Value::List({Value::Int(1), Value::Int(2)}));
  RenderOptions opts;
  opts.max_steps = 10000;
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string src;
    int n = len(rng);
    for (int k = 0; k < n; ++k) src.push_back(alphabet[pick(rng)]);
    absl::StatusOr<Template> t = Template::Parse(src);
    if (!t.ok()) continue;
    ++parsed;
    (void)t->Render(ctx, opts);
  }
  EXPECT_GT(parsed, 100);
}

TEST(JinjaTest, PythonFloatRepr) {
  EXPECT_EQ(PythonFloatRepr(1.0), "1.0");
  EXPECT_EQ(PythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(PythonFloatRepr(-0.0), "-0.0");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(123456789012345678.0), "1.2345678901234568e+17");
  EXPECT_EQ(PythonFloatRepr(1e-5), "1e-05");
  EXPECT_EQ(PythonFloatRepr(0.00012), "0.00012");
  EXPECT_EQ(PythonFloatRepr(1.5e300), "1.5e+300");
  EXPECT_EQ(PythonFloatRepr(5e-324), "5e-324");
  EXPECT_EQ(PythonFloatRepr(1.0 / 0.0), "inf");
}

TEST(JinjaTest, JsonKeepsKeyOrderAndUnicode) {
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(R"({"z": 1, "a": {"é": [true, null, 1.5]}})");
  absl::StatusOr<std::string> s = ToJson(Value::FromJson(j));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "{\"z\": 1, \"a\": {\"é\": [true, null, 1.5]}}");
  EXPECT_FALSE(ToJson(Value::Undefined()).ok());
}

TEST(JinjaTest, NamespaceRejectsUnderscoreNames) {
  EXPECT_FALSE(Render("{% set ns = namespace(_x=1) %}").ok());
  EXPECT_FALSE(Render("{% set ns = namespace() %}{% set ns._y = 1 %}").ok());
}

TEST(JinjaTest, GenerationTagRendersItsBody) {
  absl::StatusOr<std::string> out = Render("a{% generation %}b{% endgeneration %}c");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "abc");
}

// Tag ends, block bodies up to their end tag, each left-associative operator
// level and the item-or-attribute step of join and sum; the expected strings
// are jinja2 3.1's (trim_blocks, lstrip_blocks, as transformers renders).
TEST(JinjaTest, TagEndsBlockBodiesAndOperatorLevelsMatchJinja2) {
  nlohmann::json items = nlohmann::json::parse(R"([{"n": 1, "a": {"b": "x"}},
                                                   {"n": 2, "a": {"b": "y"}}])");
  ValueDict ctx;
  ctx.Set("items", Value::FromJson(items));
  struct Case {
    const char* src;
    const char* expected;
  } cases[] = {
      {"a {{- 'b' -}} c{{ 'd' }} e", "abcd e"},
      {"{% if true %}\nx{% endif %}|{% if true -%}\n  y{% endif %}|{% if true +%}\nz{% endif %}",
       "x|y|\nz"},
      {"{% set x | upper %}ab{% endset %}{{ x }}", "AB"},
      {"{% macro m(a) %}<{{ a }}>{% endmacro %}{{ m(1) }}", "<1>"},
      {"{% filter upper %}q{% endfilter %}", "Q"},
      {"{% for i in [] %}{{ i }}{% else %}none{% endfor %}|{% if false %}t{% else %}f{% endif %}",
       "none|f"},
      {"{{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ 7 // 2 * 3 % 4 }} {{ 'a' ~ 'b' ~ 'c' }} "
       "{{ false or 0 or 'x' }} {{ 1 and 2 and 3 }}",
       "5 64 1 abc x 3"},
      {"{{ items|sum(attribute='n') }} {{ items|sum(attribute='n', start=10) }} "
       "{{ items|join(',', attribute='a.b') }}",
       "3 13 x,y"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.src);
    absl::StatusOr<std::string> out = Render(c.src, ctx);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, c.expected);
  }
  // An end tag that does not close the block, and a dotted filter name that
  // names no filter.
  EXPECT_FALSE(Render("{% filter upper %}q{% endfilter x %}").ok());
  EXPECT_FALSE(Render("{{ 1|a.b }}").ok());
}

TEST(JinjaTest, StrftimeNowUsesLocalTimeByDefault) {
  absl::StatusOr<std::string> out = Render("{{ strftime_now('%Y') }}");
  ASSERT_TRUE(out.ok());
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  EXPECT_EQ(*out, std::to_string(tm.tm_year + 1900));
}

}  // namespace
}  // namespace retort::jinja
