#include "report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "report/escape.h"

namespace retort::report {
namespace {

// Roughly the width of one character of the 12px sans-serif labels; used to
// cut labels so they stay inside their margin.
constexpr double kCharWidthPx = 6.8;

// Point labels (11px): the approximate width of a character and a line.
constexpr double kLabelCharWidthPx = 6.2;
constexpr double kLabelLineHeightPx = 13;

// The box a point label covers: x from `x` to `x + w`, one line ending at baseline `y`.
struct LabelBox {
  double x, y, w;
  bool Overlaps(const LabelBox& o) const {
    return x < o.x + o.w && o.x < x + w && std::fabs(y - o.y) < kLabelLineHeightPx;
  }
};

size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

struct Frame {
  double left, top, right, bottom;
  double width() const { return right - left; }
  double height() const { return bottom - top; }
};

Frame PlotArea(const ChartOptions& o) {
  Frame f{o.margin_left, o.margin_top, o.width - o.margin_right, o.height - o.margin_bottom};
  // A degenerate size still gives a (tiny) valid frame rather than a negative one.
  if (f.right <= f.left) f.right = f.left + 1;
  if (f.bottom <= f.top) f.bottom = f.top + 1;
  return f;
}

std::string Px(double v) { return absl::StrFormat("%.1f", v); }

std::string Esc(const std::string& s) { return EscapeHtml(s); }

size_t CharsThatFit(double px) {
  return px <= kCharWidthPx ? 1 : static_cast<size_t>(px / kCharWidthPx);
}

std::string TickLabel(double v, TickFormat format) {
  if (std::fabs(v) < 1e-12) v = 0;  // -0 and rounding residue print as 0
  if (format == TickFormat::kBytes) {
    // Tick values are round numbers: "2 MB", "500 kB", "10 MB".
    static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB"};
    int unit = 0;
    while (std::fabs(v) >= 1000 && unit < 4) {
      v /= 1000;
      ++unit;
    }
    return absl::StrCat(FormatNumber(v, 3), " ", kUnits[unit]);
  }
  return FormatNumber(v, 4);
}

bool Finite(double v) { return std::isfinite(v); }

std::string SvgOpen(const ChartOptions& o, const std::string& kind) {
  std::string out =
      absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart ", kind, "\"",
                   o.id.empty() ? "" : absl::StrCat(" id=\"", Esc(o.id), "\""), " width=\"",
                   o.width, "\" height=\"", o.height, "\" viewBox=\"0 0 ", o.width, " ", o.height,
                   "\" role=\"img\" aria-label=\"", Esc(o.title), "\">\n");
  absl::StrAppend(&out, "<title>", Esc(o.title), "</title>\n");
  absl::StrAppend(&out, "<rect class=\"background\" x=\"0\" y=\"0\" width=\"", o.width,
                  "\" height=\"", o.height, "\" fill=\"#ffffff\"/>\n");
  if (!o.title.empty()) {
    absl::StrAppend(&out, "<text class=\"chart-title\" x=\"", Px(o.width / 2.0),
                    "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">",
                    Esc(TruncateText(o.title, CharsThatFit(o.width * 0.9) * 10 / 12)), "</text>\n");
  }
  return out;
}

void FrameRect(const Frame& f, std::string* out) {
  absl::StrAppend(out, "<rect class=\"frame\" x=\"", Px(f.left), "\" y=\"", Px(f.top),
                  "\" width=\"", Px(f.width()), "\" height=\"", Px(f.height()),
                  "\" fill=\"none\" stroke=\"#888888\"/>\n");
}

void NoData(const Frame& f, std::string* out) {
  absl::StrAppend(out, "<text class=\"no-data\" x=\"", Px((f.left + f.right) / 2), "\" y=\"",
                  Px((f.top + f.bottom) / 2),
                  "\" text-anchor=\"middle\" fill=\"#888888\" font-size=\"14\">no data</text>\n");
}

// Vertical grid lines, tick labels under the frame and the axis name.
void XAxis(const Scale& scale, const std::vector<double>& ticks, const Frame& f, TickFormat fmt,
           const std::string& label, std::string* out) {
  absl::StrAppend(out, "<g class=\"x-axis\" font-size=\"11\" fill=\"#333333\">\n");
  for (double t : ticks) {
    const std::string x = Px(scale.Map(t));
    absl::StrAppend(out, "<line class=\"grid\" x1=\"", x, "\" y1=\"", Px(f.top), "\" x2=\"", x,
                    "\" y2=\"", Px(f.bottom + 4), "\" stroke=\"#e3e3e3\"/>\n");
    absl::StrAppend(out, "<text class=\"tick\" x=\"", x, "\" y=\"", Px(f.bottom + 17),
                    "\" text-anchor=\"middle\">", Esc(TickLabel(t, fmt)), "</text>\n");
  }
  if (!label.empty()) {
    absl::StrAppend(out, "<text class=\"axis-label\" x=\"", Px((f.left + f.right) / 2), "\" y=\"",
                    Px(f.bottom + 38), "\" text-anchor=\"middle\" font-size=\"12\">", Esc(label),
                    "</text>\n");
  }
  absl::StrAppend(out, "</g>\n");
}

// Horizontal grid lines, tick labels left of the frame and the rotated axis name.
void YAxis(const Scale& scale, const std::vector<double>& ticks, const Frame& f,
           const std::string& label, std::string* out) {
  absl::StrAppend(out, "<g class=\"y-axis\" font-size=\"11\" fill=\"#333333\">\n");
  for (double t : ticks) {
    const std::string y = Px(scale.Map(t));
    absl::StrAppend(out, "<line class=\"grid\" x1=\"", Px(f.left - 4), "\" y1=\"", y, "\" x2=\"",
                    Px(f.right), "\" y2=\"", y, "\" stroke=\"#e3e3e3\"/>\n");
    absl::StrAppend(out, "<text class=\"tick\" x=\"", Px(f.left - 7), "\" y=\"",
                    Px(scale.Map(t) + 4), "\" text-anchor=\"end\">",
                    Esc(TickLabel(t, TickFormat::kNumber)), "</text>\n");
  }
  if (!label.empty()) {
    const double cy = (f.top + f.bottom) / 2;
    absl::StrAppend(out, "<text class=\"axis-label\" x=\"14\" y=\"", Px(cy),
                    "\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 14 ", Px(cy),
                    ")\">", Esc(label), "</text>\n");
  }
  absl::StrAppend(out, "</g>\n");
}

// The ticks and scale of one axis over the finite values [lo, hi].
struct AxisFit {
  std::vector<double> ticks;
  Scale scale;
};

AxisFit FitAxis(double lo, double hi, bool log, double px_lo, double px_hi) {
  AxisFit fit;
  fit.ticks = log ? LogTicks(lo, hi) : LinearTicks(lo, hi);
  const double a = fit.ticks.front(), b = fit.ticks.back();
  fit.scale = log ? Scale::Log10(a, b, px_lo, px_hi) : Scale::Linear(a, b, px_lo, px_hi);
  return fit;
}

// min/max of the values accepted by `keep`; false when there is none.
template <typename Keep>
bool Range(const std::vector<double>& values, Keep keep, double* lo, double* hi) {
  *lo = std::numeric_limits<double>::infinity();
  *hi = -std::numeric_limits<double>::infinity();
  for (double v : values) {
    if (!keep(v)) continue;
    *lo = std::min(*lo, v);
    *hi = std::max(*hi, v);
  }
  return *lo <= *hi;
}

bool Drawable(double v, bool log) { return Finite(v) && (!log || v > 0); }

// A value axis: the fixed domain of the options when one is given (widened
// to the data), the nice ticks around the data otherwise.
AxisFit FitValueAxis(const ChartOptions& o, double lo, double hi, double px_lo, double px_hi) {
  if (!(o.fixed_y && o.y_min < o.y_max)) return FitAxis(lo, hi, false, px_lo, px_hi);
  lo = std::min(lo, o.y_min);
  hi = std::max(hi, o.y_max);
  AxisFit fit;
  // The fixed ends stay exact; nice ticks outside them are dropped.
  const double eps = 1e-9 * (hi - lo);
  for (double t : LinearTicks(lo, hi)) {
    if (t >= lo - eps && t <= hi + eps) fit.ticks.push_back(t);
  }
  fit.scale = Scale::Linear(lo, hi, px_lo, px_hi);
  return fit;
}

}  // namespace

Scale Scale::Linear(double lo, double hi, double px_lo, double px_hi) {
  Scale s;
  s.lo_ = lo;
  s.hi_ = hi;
  s.px_lo_ = px_lo;
  s.px_hi_ = px_hi;
  return s;
}

Scale Scale::Log10(double lo, double hi, double px_lo, double px_hi) {
  Scale s = Linear(lo, hi, px_lo, px_hi);
  s.log_ = true;
  return s;
}

double Scale::Map(double v) const {
  double t;
  if (log_) {
    t = (std::log10(v) - std::log10(lo_)) / (std::log10(hi_) - std::log10(lo_));
  } else {
    t = (v - lo_) / (hi_ - lo_);
  }
  return px_lo_ + t * (px_hi_ - px_lo_);
}

std::vector<double> LinearTicks(double lo, double hi, int target) {
  if (!Finite(lo) || !Finite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (target < 1) target = 1;
  if (lo == hi) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  // Thresholds at the geometric means of 1, 2, 5, 10 pick the nearest step.
  const double step = mag * (norm >= std::sqrt(50.0)   ? 10
                             : norm >= std::sqrt(10.0) ? 5
                             : norm >= std::sqrt(2.0)  ? 2
                                                       : 1);
  const double first = std::floor(lo / step + 1e-9);
  const double last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = first; k <= last + 0.5; k += 1) ticks.push_back(k * step);
  if (ticks.size() < 2) ticks.push_back(ticks.back() + step);
  return ticks;
}

std::vector<double> LogTicks(double lo, double hi) {
  if (!(lo > 0) || !Finite(lo) || !Finite(hi) || hi < lo) return {1, 10};
  int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (e1 <= e0) e1 = e0 + 1;
  std::vector<double> ticks;
  if (e1 - e0 + 1 >= 3) {
    for (int e = e0; e <= e1; ++e) ticks.push_back(std::pow(10.0, e));
    return ticks;
  }
  for (int e = e0; e < e1; ++e) {
    for (double m : {1.0, 2.0, 5.0}) ticks.push_back(m * std::pow(10.0, e));
  }
  ticks.push_back(std::pow(10.0, e1));
  return ticks;
}

bool WantsLogScale(const std::vector<double>& values) {
  double lo, hi;
  if (!Range(
          values, [](double v) { return Finite(v) && v > 0; }, &lo, &hi))
    return false;
  return hi > 10 * lo;
}

std::string PaletteColor(int i) {
  static constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                             "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  constexpr int n = sizeof(kPalette) / sizeof(kPalette[0]);
  return kPalette[((i % n) + n) % n];
}

std::string LineChart(const ChartOptions& o, const std::vector<Series>& series) {
  const Frame f = PlotArea(o);
  std::vector<double> xs, ys;
  for (const Series& s : series) {
    const size_t n = std::min(s.x.size(), s.y.size());
    for (size_t i = 0; i < n; ++i) {
      if (Drawable(s.x[i], o.log_x) && Finite(s.y[i])) {
        xs.push_back(s.x[i]);
        ys.push_back(s.y[i]);
      }
    }
  }
  std::string out = SvgOpen(o, "line-chart");
  double xlo, xhi, ylo, yhi;
  if (!Range(xs, Finite, &xlo, &xhi) || !Range(ys, Finite, &ylo, &yhi)) {
    FrameRect(f, &out);
    NoData(f, &out);
  } else {
    const AxisFit x = FitAxis(xlo, xhi, o.log_x, f.left, f.right);
    const AxisFit y = FitValueAxis(o, ylo, yhi, f.bottom, f.top);
    XAxis(x.scale, x.ticks, f, o.x_format, o.x_label, &out);
    YAxis(y.scale, y.ticks, f, o.y_label, &out);
    FrameRect(f, &out);
    for (size_t si = 0; si < series.size(); ++si) {
      const Series& s = series[si];
      const std::string color = PaletteColor(s.color >= 0 ? s.color : static_cast<int>(si));
      std::vector<std::pair<double, double>> pts;
      const size_t n = std::min(s.x.size(), s.y.size());
      for (size_t i = 0; i < n; ++i) {
        if (Drawable(s.x[i], o.log_x) && Finite(s.y[i])) {
          pts.emplace_back(x.scale.Map(s.x[i]), y.scale.Map(s.y[i]));
        }
      }
      if (pts.empty()) continue;
      const std::string title = absl::StrCat("<title>", Esc(s.label), "</title>");
      if (s.style == Series::Style::kLine && pts.size() >= 2) {
        std::string points;
        for (const auto& [px, py] : pts) {
          if (!points.empty()) points += ' ';
          absl::StrAppend(&points, Px(px), ",", Px(py));
        }
        absl::StrAppend(
            &out, "<polyline class=\"series\" points=\"", points, "\" fill=\"none\" stroke=\"",
            color, "\" stroke-width=\"1.8\" stroke-linejoin=\"round\">", title, "</polyline>\n");
      } else {
        absl::StrAppend(&out, "<g class=\"points\" fill=\"", color, "\">\n");
        for (const auto& [px, py] : pts) {
          absl::StrAppend(&out, "<circle class=\"point\" cx=\"", Px(px), "\" cy=\"", Px(py),
                          "\" r=\"3.5\">", title, "</circle>\n");
        }
        absl::StrAppend(&out, "</g>\n");
      }
    }
  }
  // Legend in the right margin, one row per series shown there.
  const double legend_width = o.width - f.right - 16;
  if (legend_width >= 40) {
    absl::StrAppend(&out, "<g class=\"legend\" font-size=\"12\">\n");
    const double x = f.right + 12;
    double y = f.top + 8;
    for (size_t si = 0; si < series.size(); ++si) {
      const Series& s = series[si];
      if (!s.in_legend) continue;
      const std::string color = PaletteColor(s.color >= 0 ? s.color : static_cast<int>(si));
      if (s.style == Series::Style::kLine) {
        absl::StrAppend(&out, "<line class=\"legend-swatch\" x1=\"", Px(x), "\" y1=\"", Px(y),
                        "\" x2=\"", Px(x + 18), "\" y2=\"", Px(y), "\" stroke=\"", color,
                        "\" stroke-width=\"2.5\"/>\n");
      } else {
        absl::StrAppend(&out, "<circle class=\"legend-swatch\" cx=\"", Px(x + 9), "\" cy=\"", Px(y),
                        "\" r=\"3.5\" fill=\"", color, "\"/>\n");
      }
      absl::StrAppend(&out, "<text class=\"legend-label\" x=\"", Px(x + 24), "\" y=\"", Px(y + 4),
                      "\">", Esc(TruncateText(s.label, CharsThatFit(legend_width - 24))), "<title>",
                      Esc(s.label), "</title></text>\n");
      y += 18;
    }
    if (!o.legend_note.empty()) {
      absl::StrAppend(&out, "<text class=\"legend-note\" x=\"", Px(x), "\" y=\"", Px(y + 8),
                      "\" fill=\"#666666\">",
                      Esc(TruncateText(o.legend_note, CharsThatFit(legend_width))), "</text>\n");
    }
    absl::StrAppend(&out, "</g>\n");
  }
  absl::StrAppend(&out, "</svg>\n");
  return out;
}

std::string BarChart(const ChartOptions& o, const std::vector<Bar>& bars) {
  const Frame f = PlotArea(o);
  std::string out = SvgOpen(o, "bar-chart");
  std::vector<double> values;
  for (const Bar& b : bars) values.push_back(b.value);
  double lo, hi;
  if (bars.empty() || !Range(values, Finite, &lo, &hi)) {
    FrameRect(f, &out);
    NoData(f, &out);
    absl::StrAppend(&out, "</svg>\n");
    return out;
  }
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  // The value axis runs horizontally; y_min/y_max fix its domain.
  const AxisFit x = FitValueAxis(o, lo, hi, f.left, f.right);
  XAxis(x.scale, x.ticks, f, TickFormat::kNumber, o.x_label, &out);
  FrameRect(f, &out);
  const double band = f.height() / static_cast<double>(bars.size());
  const double zero = x.scale.Map(std::clamp(0.0, x.scale.lo(), x.scale.hi()));
  const size_t label_chars = CharsThatFit(o.margin_left - 12);
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double top = f.top + band * static_cast<double>(i) + band * 0.2;
    const double h = band * 0.6;
    const double mid = top + h / 2 + 4;
    absl::StrAppend(&out, "<text class=\"bar-label\" x=\"", Px(f.left - 8), "\" y=\"", Px(mid),
                    "\" text-anchor=\"end\" font-size=\"12\">",
                    Esc(TruncateText(b.label, label_chars)), "<title>", Esc(b.label),
                    "</title></text>\n");
    if (!Finite(b.value)) {
      absl::StrAppend(&out, "<text class=\"bar-value\" x=\"", Px(zero + 4), "\" y=\"", Px(mid),
                      "\" font-size=\"11\" fill=\"#888888\">n/a</text>\n");
      continue;
    }
    const double end = x.scale.Map(b.value);
    const double x0 = std::min(zero, end), w = std::fabs(end - zero);
    const std::string color = PaletteColor(static_cast<int>(i));
    absl::StrAppend(&out, "<rect class=\"bar\" x=\"", Px(x0), "\" y=\"", Px(top), "\" width=\"",
                    Px(w), "\" height=\"", Px(h), "\" fill=\"", color, "\"><title>", Esc(b.label),
                    ": ", Esc(FormatNumber(b.value)), "</title></rect>\n");
    // The value sits after the bar's end, or inside it when the bar reaches the frame.
    const bool inside = end > f.right - 48;
    absl::StrAppend(&out, "<text class=\"bar-value\" x=\"", Px(inside ? end - 4 : end + 4),
                    "\" y=\"", Px(mid), "\" font-size=\"11\"",
                    inside ? " text-anchor=\"end\" fill=\"#ffffff\"" : " fill=\"#333333\"", ">",
                    Esc(FormatNumber(b.value, 3)), "</text>\n");
  }
  absl::StrAppend(&out, "</svg>\n");
  return out;
}

std::string ScatterChart(const ChartOptions& o, const std::vector<LabelledPoint>& points) {
  const Frame f = PlotArea(o);
  std::string out = SvgOpen(o, "scatter-chart");
  std::vector<const LabelledPoint*> kept;
  std::vector<double> xs, ys;
  for (const LabelledPoint& p : points) {
    if (Drawable(p.x, o.log_x) && Finite(p.y)) {
      kept.push_back(&p);
      xs.push_back(p.x);
      ys.push_back(p.y);
    }
  }
  double xlo, xhi, ylo, yhi;
  if (kept.empty()) {
    FrameRect(f, &out);
    NoData(f, &out);
    absl::StrAppend(&out, "</svg>\n");
    return out;
  }
  Range(xs, Finite, &xlo, &xhi);
  Range(ys, Finite, &ylo, &yhi);
  const AxisFit x = FitAxis(xlo, xhi, o.log_x, f.left, f.right);
  const AxisFit y = FitValueAxis(o, ylo, yhi, f.bottom, f.top);
  XAxis(x.scale, x.ticks, f, o.x_format, o.x_label, &out);
  YAxis(y.scale, y.ticks, f, o.y_label, &out);
  FrameRect(f, &out);
  std::vector<LabelBox> placed;
  for (size_t i = 0; i < kept.size(); ++i) {
    const LabelledPoint& p = *kept[i];
    const double px = x.scale.Map(p.x), py = y.scale.Map(p.y);
    const std::string color = PaletteColor(static_cast<int>(i));
    absl::StrAppend(&out, "<circle class=\"point\" cx=\"", Px(px), "\" cy=\"", Px(py),
                    "\" r=\"5\" fill=\"", color, "\"><title>", Esc(p.label), " (",
                    Esc(TickLabel(p.x, o.x_format)), ", ", Esc(FormatNumber(p.y)),
                    ")</title></circle>\n");
    // Labels go right of their point, or left of it in the right part of the plot.
    const bool left = px > f.left + f.width() * 0.6;
    const double room = left ? px - f.left - 10 : f.right - px - 10;
    const std::string text = TruncateText(p.label, CharsThatFit(std::max(room, 60.0)));
    const double w = kLabelCharWidthPx * static_cast<double>(CodePoints(text));
    LabelBox box{left ? px - 8 - w : px + 8, 0, w};
    // Points at (nearly) the same place would print their labels over each
    // other: try a line up, a line down, two lines up, ... until the label is
    // clear of those placed, staying off the title and the x tick labels.
    const double y0 = py - 7;
    double y = y0;
    for (int k = 0; k < 16; ++k) {
      const double candidate = y0 + kLabelLineHeightPx * ((k + 1) / 2) * (k % 2 == 1 ? -1 : 1);
      if (candidate < 36 || candidate > f.bottom - 2) continue;
      box.y = candidate;
      if (std::none_of(placed.begin(), placed.end(),
                       [&](const LabelBox& o) { return o.Overlaps(box); })) {
        y = candidate;
        break;
      }
    }
    box.y = y;
    placed.push_back(box);
    absl::StrAppend(&out, "<text class=\"point-label\" x=\"", Px(left ? px - 8 : px + 8), "\" y=\"",
                    Px(y), "\" font-size=\"11\"", left ? " text-anchor=\"end\"" : "", ">",
                    Esc(text), "</text>\n");
  }
  absl::StrAppend(&out, "</svg>\n");
  return out;
}

}  // namespace retort::report
