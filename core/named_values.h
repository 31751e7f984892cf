// The names of an enum's values as flags, recipes and files spell them, in
// one table per enum, so that parsing, printing and the list of names an
// error offers cannot drift apart:
//
//   constexpr NamedValue<PruneMethod> kPruneMethods[] = {
//       {PruneMethod::kMagnitude, "magnitude"}, {PruneMethod::kWanda, "wanda"}};
//   FindNamedValue(kPruneMethods, "wanda");            // PruneMethod::kWanda
//   NameOfValue(kPruneMethods, PruneMethod::kWanda);   // "wanda"
//   NamesOf(kPruneMethods);                            // "magnitude or wanda"
#ifndef RETORT_CORE_NAMED_VALUES_H_
#define RETORT_CORE_NAMED_VALUES_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace retort {

template <typename E>
struct NamedValue {
  E value;
  const char* name;
};

// The value spelled `name` (exactly), or nullopt.
template <typename E, size_t N>
std::optional<E> FindNamedValue(const NamedValue<E> (&table)[N], std::string_view name) {
  for (const NamedValue<E>& v : table) {
    if (name == v.name) return v.value;
  }
  return std::nullopt;
}

// The name of `value` (its first entry); `if_missing` for a value the table lacks.
template <typename E, size_t N>
const char* NameOfValue(const NamedValue<E> (&table)[N], E value, const char* if_missing = "?") {
  for (const NamedValue<E>& v : table) {
    if (v.value == value) return v.name;
  }
  return if_missing;
}

// The names in table order as a sentence lists them: "a", "a or b", "a, b or c".
template <typename E, size_t N>
std::string NamesOf(const NamedValue<E> (&table)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += table[i].name;
  }
  return out;
}

// FindNamedValue, or InvalidArgument `unknown WHAT "NAME" (expected a, b or c)`.
template <typename E, size_t N>
absl::StatusOr<E> ParseNamedValue(const NamedValue<E> (&table)[N], std::string_view name,
                                  std::string_view what) {
  if (std::optional<E> v = FindNamedValue(table, name)) return *v;
  // This Abseil's StrCat takes no std::string_view.
  return absl::InvalidArgumentError(absl::StrCat("unknown ", std::string(what), " \"",
                                                 std::string(name), "\" (expected ", NamesOf(table),
                                                 ")"));
}

}  // namespace retort

#endif  // RETORT_CORE_NAMED_VALUES_H_
