// Python str semantics for the Jinja engine: character classes, case
// mapping, strip/split/replace, repr() and the number parsing of int()/float().
// Strings are UTF-8; positions and lengths count code points, as Python does.
//
// Character classes and case mappings come from utf8proc's Unicode tables,
// checked against CPython's str methods (see tests/text/jinja_pystr_test.cc).
// Known gaps, all outside what chat templates meet: upper() maps one code
// point to one except 'ß' -> "SS" (no other SpecialCasing expansion such as
// 'ﬁ' -> "FI"), lower() has no final-sigma rule, and isnumeric() misses
// Han numerals ('一'), which Unicode gives a numeric value but no N* category.
//
// Internal to the Jinja engine (see jinja.h). All functions are thread-safe.
#ifndef RETORT_TEXT_JINJA_PYSTR_H_
#define RETORT_TEXT_JINJA_PYSTR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace retort::jinja {

// One code point, as the str predicates see it.
bool IsPyWhitespace(char32_t c);  // str.isspace()
bool IsPyAlpha(char32_t c);       // str.isalpha(): categories Lu Ll Lt Lm Lo
bool IsPyDecimal(char32_t c);     // str.isdecimal(): category Nd
bool IsPyDigit(char32_t c);       // str.isdigit(): Nd and the digits of No ('²', '①')
bool IsPyNumeric(char32_t c);     // str.isnumeric(): Nd Nl No
bool IsPyAlnum(char32_t c);       // str.isalnum()
bool IsPyUpper(char32_t c);       // an uppercase character
bool IsPyLower(char32_t c);       // a lowercase character
bool IsPyTitle(char32_t c);       // a titlecase character ('ǅ')
bool IsPyCased(char32_t c);       // upper, lower or title

// The str methods of the same names.
std::string Upper(const std::string& s);
std::string Lower(const std::string& s);
std::string Capitalize(const std::string& s);
std::string Title(const std::string& s);
bool IsUpperString(const std::string& s);  // str.isupper()
bool IsLowerString(const std::string& s);  // str.islower()
bool IsTitleString(const std::string& s);  // str.istitle()

// str.strip / lstrip / rstrip; `chars` null strips whitespace.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right);
// str.split() without a separator (runs of whitespace); maxsplit < 0: all.
std::vector<std::string> SplitWhitespace(const std::string& s, int64_t maxsplit);
// str.split(sep) / str.rsplit(sep). REQUIRES: !sep.empty().
std::vector<std::string> SplitSep(const std::string& s, const std::string& sep, int64_t maxsplit);
std::vector<std::string> RSplitSep(const std::string& s, const std::string& sep, int64_t maxsplit);
// str.splitlines() for \n, \r and \r\n.
std::vector<std::string> SplitLines(const std::string& s);
// str.replace; count < 0 replaces all.
std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count);

// len() of a str.
int64_t CodepointLength(const std::string& s);

// Python repr() of a str: single quotes unless the text has a single quote
// and no double quote; escapes for backslash, the quote, control characters.
std::string ReprString(const std::string& s);

// Python int(text, base) and float(text) as Jinja's int/float filters try
// them (surrounding whitespace allowed); nullopt where Python raises.
std::optional<int64_t> ParseInt(const std::string& text, int base);
std::optional<double> ParseFloat(const std::string& text);

}  // namespace retort::jinja

#endif  // RETORT_TEXT_JINJA_PYSTR_H_
