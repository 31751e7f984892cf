// A small SVG chart writer for the run report: line charts (loss curves), bar
// charts (accuracy per stage) and labelled scatter plots (size vs quality).
//
// Each function returns one self-contained <svg> element (no scripts, no
// external references) meant to be inlined in an HTML page. All text that
// reaches the SVG (titles, axis names, labels) is HTML-escaped. Points with a
// NaN or infinite coordinate, and on a log axis points <= 0, are skipped;
// a chart with no drawable point still has its frame and says "no data".
//
// Geometry: the plot area is the chart minus its margins; data map linearly
// (or by log10) onto it, y growing upwards. Coordinates are written with one
// decimal. Domains are widened to "nice" tick values (steps of 1, 2 or 5
// times a power of ten) so the axes start and end on a labelled tick.
//
// Thread-safety: the functions are pure.
#ifndef RETORT_REPORT_SVG_CHART_H_
#define RETORT_REPORT_SVG_CHART_H_

#include <string>
#include <vector>

namespace retort::report {

// Maps a data interval onto a pixel interval, linearly or by log10.
class Scale {
 public:
  // REQUIRES: lo < hi (and 0 < lo for Log10).
  static Scale Linear(double lo, double hi, double px_lo, double px_hi);
  static Scale Log10(double lo, double hi, double px_lo, double px_hi);

  double Map(double v) const;
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  bool log() const { return log_; }

 private:
  double lo_ = 0, hi_ = 1, px_lo_ = 0, px_hi_ = 1;
  bool log_ = false;
};

// Tick values covering [lo, hi] for a linear axis: about `target` ticks at a
// step of 1, 2 or 5 times a power of ten, the first <= lo and the last >= hi
// (so the axis domain is [front, back]). lo == hi gives ticks around that
// value; a non-finite bound gives {0, 1}.
std::vector<double> LinearTicks(double lo, double hi, int target = 5);

// Tick values for a log axis over [lo, hi] (0 < lo <= hi): the powers of ten
// from the one at or below lo to the one at or above hi; when that gives
// fewer than three ticks, the 2x and 5x multiples between them are added.
std::vector<double> LogTicks(double lo, double hi);

// True when the finite positive values span more than a factor of 10 (the
// size axis of the trade-off plot switches to log10 then).
bool WantsLogScale(const std::vector<double>& values);

enum class TickFormat { kNumber, kBytes };

struct ChartOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 760;
  int height = 360;
  double margin_left = 64;
  double margin_right = 24;  // the legend of a line chart is drawn here
  double margin_top = 36;
  double margin_bottom = 52;
  bool log_x = false;
  TickFormat x_format = TickFormat::kNumber;
  // Optional fixed value domain (fixed_y and y_min < y_max): the y axis, or
  // the value axis of a bar chart, spans at least [y_min, y_max] and is not
  // widened to nice ticks.
  double y_min = 0, y_max = 0;
  bool fixed_y = false;
  // The id attribute of the <svg> (empty: none).
  std::string id;
  // LineChart: a last, grey legend row (e.g. "dots: eval loss").
  std::string legend_note;
};

// One line (or set of markers) of a line chart.
struct Series {
  enum class Style { kLine, kPoints };
  std::string label;
  std::vector<double> x, y;  // same length; extra entries of the longer are ignored
  Style style = Style::kLine;
  // Index into the palette; -1 picks the series' position.
  int color = -1;
  // False: no legend row (e.g. eval points drawn in their training line's colour).
  bool in_legend = true;
};

// Lines as <polyline class="series">, a line with a single drawable point and
// kPoints series as <circle class="point">; a legend entry per series in the
// right margin (when margin_right leaves room for it).
std::string LineChart(const ChartOptions& options, const std::vector<Series>& series);

struct Bar {
  std::string label;
  double value = 0;
};

// Horizontal bars (<rect class="bar">), one per entry top to bottom, labels at
// the left (in margin_left), the value written at the end of each bar. The
// value axis starts at min(0, smallest value). Non-finite values draw no bar
// and are written as "n/a".
std::string BarChart(const ChartOptions& options, const std::vector<Bar>& bars);

struct LabelledPoint {
  std::string label;
  double x = 0, y = 0;
};

// One <circle class="point"> with a <text class="point-label"> per point.
std::string ScatterChart(const ChartOptions& options, const std::vector<LabelledPoint>& points);

// The colour of palette entry i (cycled), "#rrggbb".
std::string PaletteColor(int i);

}  // namespace retort::report

#endif  // RETORT_REPORT_SVG_CHART_H_
