// Text that goes into the report page: HTML escaping and number formatting.
//
// Everything the report shows that came from a run directory (stage names,
// labels, settings, the recipe text) passes through EscapeHtml before it is
// written into HTML or inline SVG, so no file in a run can inject markup.
#ifndef RETORT_REPORT_ESCAPE_H_
#define RETORT_REPORT_ESCAPE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace retort::report {

// Escapes & < > " ' so the result is safe as element text and as a quoted
// attribute value, in HTML and in SVG. Bytes that are not valid UTF-8 and
// control characters other than tab/newline/CR become U+FFFD, so the page
// always parses as UTF-8.
std::string EscapeHtml(std::string_view text);

// At most `max_chars` code points of `text`; a cut text ends with "…"
// (counted in the limit). Cuts only at UTF-8 sequence boundaries.
std::string TruncateText(std::string_view text, size_t max_chars);

// A short human form of a number: integers as integers, others with up to
// `significant` significant digits ("0.93", "1.25e+05"); "nan"/"inf" as is.
std::string FormatNumber(double v, int significant = 4);

// "812 B", "3.46 MB", "1.2 GB" (decimal SI units, as the axes of the size
// plot use).
std::string FormatBytes(double bytes);

// "93.2 s", "2 min 5 s", "1 h 3 min".
std::string FormatSeconds(double seconds);

}  // namespace retort::report

#endif  // RETORT_REPORT_ESCAPE_H_
