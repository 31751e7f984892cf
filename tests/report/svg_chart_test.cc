#include "report/svg_chart.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "report/escape.h"

namespace retort::report {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// A 400x300 chart with 50px margins: the plot area is x 50..350, y 50..250.
ChartOptions Square() {
  ChartOptions o;
  o.width = 400;
  o.height = 300;
  o.margin_left = o.margin_right = o.margin_top = o.margin_bottom = 50;
  o.title = "t";
  return o;
}

void ExpectTicks(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-9) << "tick " << i;
}

TEST(TicksTest, LinearNiceSteps) {
  ExpectTicks(LinearTicks(0, 1, 5), {0, 0.2, 0.4, 0.6, 0.8, 1.0});
  ExpectTicks(LinearTicks(0.3, 9.7, 5), {0, 2, 4, 6, 8, 10});
  ExpectTicks(LinearTicks(1, 20, 5), {0, 5, 10, 15, 20});
  ExpectTicks(LinearTicks(0.6, 1.0, 4), {0.6, 0.7, 0.8, 0.9, 1.0});
  ExpectTicks(LinearTicks(-3, 3, 6), {-3, -2, -1, 0, 1, 2, 3});
  ExpectTicks(LinearTicks(10, 0, 5), {0, 2, 4, 6, 8, 10});  // swapped bounds
}

TEST(TicksTest, LinearDegenerateInputs) {
  const std::vector<double> one = LinearTicks(5, 5);
  ASSERT_GE(one.size(), 2u);
  EXPECT_LT(one.front(), 5);
  EXPECT_GT(one.back(), 5);
  const std::vector<double> zero = LinearTicks(0, 0);
  EXPECT_LT(zero.front(), 0);
  EXPECT_GT(zero.back(), 0);
  EXPECT_THAT(LinearTicks(kNaN, 1), ElementsAre(0, 1));
  EXPECT_THAT(LinearTicks(0, kInf), ElementsAre(0, 1));
}

TEST(TicksTest, LogPowersOfTenAndMultiples) {
  ExpectTicks(LogTicks(2e6, 3e7), {1e6, 1e7, 1e8});
  ExpectTicks(LogTicks(3, 7), {1, 2, 5, 10});
  ExpectTicks(LogTicks(1e6, 1e7), {1e6, 2e6, 5e6, 1e7});
  ExpectTicks(LogTicks(0.5, 500), {0.1, 1, 10, 100, 1000});
  EXPECT_THAT(LogTicks(0, 10), ElementsAre(1, 10));
  EXPECT_THAT(LogTicks(-1, 10), ElementsAre(1, 10));
}

TEST(TicksTest, WantsLogScaleOnlyPastTenfold) {
  EXPECT_FALSE(WantsLogScale({1e6, 2e6, 9e6}));
  EXPECT_TRUE(WantsLogScale({1e6, 2e7}));
  EXPECT_FALSE(WantsLogScale({1e6, kNaN, -5e9, 0, 3e6}));  // only finite positive values count
  EXPECT_FALSE(WantsLogScale({}));
  EXPECT_FALSE(WantsLogScale({4e6}));
}

TEST(ScaleTest, LinearAndLogMaps) {
  const Scale lin = Scale::Linear(0, 10, 100, 200);
  EXPECT_DOUBLE_EQ(lin.Map(0), 100);
  EXPECT_DOUBLE_EQ(lin.Map(5), 150);
  EXPECT_DOUBLE_EQ(lin.Map(10), 200);
  const Scale flipped = Scale::Linear(0, 1, 250, 50);  // y grows upwards
  EXPECT_DOUBLE_EQ(flipped.Map(0.25), 200);
  const Scale log = Scale::Log10(1, 100, 0, 100);
  EXPECT_NEAR(log.Map(10), 50, 1e-9);
  EXPECT_NEAR(log.Map(100), 100, 1e-9);
  EXPECT_TRUE(log.log());
}

TEST(LineChartTest, KnownCoordinatesAndTicks) {
  const std::string svg = LineChart(Square(), {{"a", {0, 5, 10}, {0, 0.5, 1}}});
  // x ticks 0..10 step 2 map onto 50..350, y ticks 0..1 step 0.2 onto 250..50.
  EXPECT_THAT(svg, HasSubstr("points=\"50.0,250.0 200.0,150.0 350.0,50.0\""));
  EXPECT_EQ(Count(svg, "<polyline class=\"series\""), 1);
  EXPECT_EQ(Count(svg, "class=\"tick\""), 6 + 6);
  EXPECT_THAT(svg, HasSubstr(">10</text>"));
  EXPECT_THAT(svg, HasSubstr(">0.4</text>"));
  // The x=4 grid line sits at 50 + 4/10 * 300.
  EXPECT_THAT(svg, HasSubstr("<line class=\"grid\" x1=\"170.0\" y1=\"50.0\""));
  EXPECT_THAT(svg, HasSubstr("xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(svg, HasSubstr("viewBox=\"0 0 400 300\""));
  EXPECT_THAT(svg, Not(HasSubstr("no data")));
}

TEST(LineChartTest, NonFiniteValuesAreSkipped) {
  const std::string svg =
      LineChart(Square(), {{"a", {0, 5, 7, kInf, 10, kNaN}, {0, 0.5, kNaN, 0.7, 1, 0.2}}});
  EXPECT_THAT(svg, HasSubstr("points=\"50.0,250.0 200.0,150.0 350.0,50.0\""));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
  EXPECT_THAT(svg, Not(HasSubstr("inf")));
}

TEST(LineChartTest, EmptyChartSaysNoData) {
  for (const std::vector<Series>& series :
       {std::vector<Series>{}, std::vector<Series>{{"all bad", {kNaN, 1}, {1, kInf}}},
        std::vector<Series>{{"empty", {}, {}}}}) {
    const std::string svg = LineChart(Square(), series);
    EXPECT_THAT(svg, HasSubstr("class=\"no-data\""));
    EXPECT_EQ(Count(svg, "<polyline"), 0);
    EXPECT_EQ(Count(svg, "<circle class=\"point\""), 0);
    EXPECT_THAT(svg, HasSubstr("</svg>"));
  }
}

TEST(LineChartTest, SinglePointIsAMarkerInTheMiddle) {
  const std::string svg = LineChart(Square(), {{"one", {3}, {2}}});
  EXPECT_EQ(Count(svg, "<polyline"), 0);
  EXPECT_THAT(svg, HasSubstr("<circle class=\"point\" cx=\"200.0\" cy=\"150.0\""));
}

TEST(LineChartTest, PointSeriesAndLegend) {
  ChartOptions o = Square();
  o.width = 600;
  o.margin_right = 250;  // room for a legend
  const std::string svg = LineChart(o, {{"train", {1, 2, 3}, {3, 2, 1}},
                                        {"eval", {1, 3}, {2.5, 1.5}, Series::Style::kPoints, 0}});
  EXPECT_EQ(Count(svg, "<polyline class=\"series\""), 1);
  EXPECT_EQ(Count(svg, "<circle class=\"point\""), 2);
  EXPECT_EQ(Count(svg, "class=\"legend-label\""), 2);
  // The points series asked for palette colour 0, the line's colour.
  // line stroke, points fill, and the two legend swatches
  EXPECT_EQ(Count(svg, PaletteColor(0)), 4);
}

TEST(LineChartTest, SeriesLeftOutOfTheLegendAndANote) {
  ChartOptions o = Square();
  o.width = 600;
  o.margin_right = 250;
  o.legend_note = "dots: <eval>";
  Series eval{"eval", {1, 3}, {2.5, 1.5}, Series::Style::kPoints, 0};
  eval.in_legend = false;
  const std::string svg = LineChart(o, {{"train", {1, 2, 3}, {3, 2, 1}}, eval});
  EXPECT_EQ(Count(svg, "<circle class=\"point\""), 2);
  EXPECT_EQ(Count(svg, "class=\"legend-label\""), 1);
  EXPECT_EQ(Count(svg, "class=\"legend-swatch\""), 1);
  EXPECT_THAT(svg, HasSubstr(">dots: &lt;eval&gt;</text>"));
}

TEST(LineChartTest, LogXSkipsNonPositive) {
  ChartOptions o = Square();
  o.log_x = true;
  const std::string svg = LineChart(o, {{"a", {0, 1, 10, 100}, {1, 2, 3, 4}}});
  // x in 1..100 -> 50..350 (log), y 2..4 -> ticks 2..4, 250..50.
  EXPECT_THAT(svg, HasSubstr("points=\"50.0,250.0 200.0,150.0 350.0,50.0\""));
}

TEST(LineChartTest, TextIsEscaped) {
  ChartOptions o = Square();
  o.width = 700;
  o.margin_right = 300;
  o.title = "<b>title</b>";
  o.x_label = "x & \"y\"";
  const std::string svg = LineChart(o, {{"<script>alert(1)</script>", {1, 2}, {1, 2}}});
  EXPECT_THAT(svg, Not(HasSubstr("<script")));
  EXPECT_THAT(svg, Not(HasSubstr("<b>")));
  EXPECT_THAT(svg, HasSubstr("&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_THAT(svg, HasSubstr("&lt;b&gt;title&lt;/b&gt;"));
  EXPECT_THAT(svg, HasSubstr("x &amp; &quot;y&quot;"));
}

TEST(BarChartTest, KnownGeometry) {
  ChartOptions o = Square();
  o.fixed_y = true;
  o.y_min = 0;
  o.y_max = 1;
  const std::string svg = BarChart(o, {{"half", 0.5}, {"full", 1.0}});
  // Two bands of 100px; each bar is 60% of its band, starting 20% in.
  EXPECT_THAT(
      svg, HasSubstr("<rect class=\"bar\" x=\"50.0\" y=\"70.0\" width=\"150.0\" height=\"60.0\""));
  EXPECT_THAT(
      svg, HasSubstr("<rect class=\"bar\" x=\"50.0\" y=\"170.0\" width=\"300.0\" height=\"60.0\""));
  EXPECT_EQ(Count(svg, "<rect class=\"bar\""), 2);
  EXPECT_EQ(Count(svg, "class=\"bar-label\""), 2);
  EXPECT_EQ(Count(svg, "class=\"tick\""), 6);  // 0, 0.2, ..., 1
}

TEST(BarChartTest, NonFiniteEmptyAndNegative) {
  ChartOptions o = Square();
  const std::string svg = BarChart(o, {{"ok", 2}, {"missing", kNaN}, {"neg", -2}});
  EXPECT_EQ(Count(svg, "<rect class=\"bar\""), 2);
  EXPECT_THAT(svg, HasSubstr(">n/a</text>"));
  // Domain -2..2 on 50..350: zero at 200; the negative bar spans 50..200.
  EXPECT_THAT(svg, HasSubstr("x=\"200.0\" y=\"63.3\" width=\"150.0\""));
  EXPECT_THAT(svg, HasSubstr("x=\"50.0\" y=\"196.7\" width=\"150.0\""));

  EXPECT_THAT(BarChart(o, {}), HasSubstr("class=\"no-data\""));
  const std::string all_bad = BarChart(o, {{"x", kNaN}});
  EXPECT_THAT(all_bad, HasSubstr("class=\"no-data\""));
  EXPECT_EQ(Count(all_bad, "<rect class=\"bar\""), 0);
}

TEST(ScatterChartTest, LogAxisLabelsAndSkips) {
  ChartOptions o = Square();
  o.log_x = true;
  o.x_format = TickFormat::kBytes;
  const std::string svg = ScatterChart(
      o, {{"small", 1e6, 0.5}, {"big <&>", 1e7, 1.0}, {"zero size", 0, 0.7}, {"nan", 5e6, kNaN}});
  // x ticks 1e6, 2e6, 5e6, 1e7 (log) on 50..350; y ticks 0.5..1.0 on 250..50.
  EXPECT_THAT(svg, HasSubstr("<circle class=\"point\" cx=\"50.0\" cy=\"250.0\""));
  EXPECT_THAT(svg, HasSubstr("<circle class=\"point\" cx=\"350.0\" cy=\"50.0\""));
  EXPECT_EQ(Count(svg, "<circle class=\"point\""), 2);
  EXPECT_EQ(Count(svg, "class=\"point-label\""), 2);
  EXPECT_THAT(svg, HasSubstr(">small</text>"));
  EXPECT_THAT(svg, HasSubstr(">big &lt;&amp;&gt;</text>"));
  EXPECT_THAT(svg, HasSubstr(">1 MB</text>"));
  EXPECT_THAT(svg, HasSubstr(">2 MB</text>"));
  EXPECT_THAT(svg, HasSubstr(">10 MB</text>"));
  // 2e6 sits at log10(2) of the way across.
  EXPECT_THAT(svg, HasSubstr("x1=\"140.3\""));
}

TEST(ScatterChartTest, EmptyAndSinglePoint) {
  EXPECT_THAT(ScatterChart(Square(), {}), HasSubstr("class=\"no-data\""));
  const std::string one = ScatterChart(Square(), {{"only", 3456789, 0.81}});
  EXPECT_EQ(Count(one, "<circle class=\"point\""), 1);
  // x ticks 3.1e6..3.9e6 (step 1e5), y ticks 0.70..0.90 (step 0.05).
  EXPECT_THAT(one, HasSubstr("cx=\"183.8\" cy=\"140.0\""));
}

TEST(ScatterChartTest, CoincidentPointsGetSeparateLabelLines) {
  const std::string svg =
      ScatterChart(Square(), {{"first", 1, 0.5}, {"second", 1, 0.5}, {"far away", 3, 1.0}});
  // x 1..3 on 50..350 and y 0.5..1 on 250..50: both labels start at 58, the
  // second a line (13px) over the first; the far label stays by its point.
  EXPECT_THAT(svg, HasSubstr("x=\"58.0\" y=\"243.0\" font-size=\"11\">first<"));
  EXPECT_THAT(svg, HasSubstr("x=\"58.0\" y=\"230.0\" font-size=\"11\">second<"));
  EXPECT_THAT(svg,
              HasSubstr("x=\"342.0\" y=\"43.0\" font-size=\"11\" text-anchor=\"end\">far away<"));
}

TEST(EscapeTest, HtmlSpecialsAndBadBytes) {
  EXPECT_EQ(EscapeHtml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(EscapeHtml("tab\tnl\n"), "tab\tnl\n");
  EXPECT_EQ(EscapeHtml(std::string("x\x01y", 3)), "x\xEF\xBF\xBDy");
  EXPECT_EQ(EscapeHtml("\xC3\xA9"), "\xC3\xA9");                  // é stays
  EXPECT_EQ(EscapeHtml("\xC3"), "\xEF\xBF\xBD");                  // truncated sequence
  EXPECT_EQ(EscapeHtml("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(EscapeHtml("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(EscapeTest, TruncateAndFormat) {
  EXPECT_EQ(TruncateText("abcdef", 10), "abcdef");
  EXPECT_EQ(TruncateText("abcdef", 4), "abc\xE2\x80\xA6");
  EXPECT_EQ(TruncateText("\xC3\xA9\xC3\xA9\xC3\xA9", 2), "\xC3\xA9\xE2\x80\xA6");
  EXPECT_EQ(FormatNumber(0.93), "0.93");
  EXPECT_EQ(FormatNumber(186), "186");
  EXPECT_EQ(FormatNumber(kNaN), "nan");
  EXPECT_EQ(FormatBytes(812), "812 B");
  EXPECT_EQ(FormatBytes(3456789), "3.46 MB");
  EXPECT_EQ(FormatBytes(45678), "45.7 kB");
  EXPECT_EQ(FormatSeconds(9.25), "9.2 s");
  EXPECT_EQ(FormatSeconds(93.2), "1 min 33 s");
  EXPECT_EQ(FormatSeconds(3725), "1 h 2 min");
}

}  // namespace
}  // namespace retort::report
