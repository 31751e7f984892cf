// The names users spell an enum's values with ("cosine", "gptq", "auto"), on
// a command line or in a recipe, as one table that serves the parser, the
// printer and the list of choices an error message gives:
//
//   constexpr EnumName<Schedule> kSchedules[] = {{"cosine", Schedule::kCosine},
//                                                {"linear", Schedule::kLinear}};
//   ParseEnumName(kSchedules, "schedule", "cos")
//     -> InvalidArgument `schedule "cos": expected cosine or linear`
//
// Names match exactly (case matters). Thread-safety: pure functions.
#ifndef RETORT_CORE_ENUM_NAMES_H_
#define RETORT_CORE_ENUM_NAMES_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace retort {

template <typename E>
struct EnumName {
  const char* name;
  E value;
};

// The value `name` names, or nullopt.
template <typename E, size_t N>
std::optional<E> FindEnumByName(const EnumName<E> (&names)[N], std::string_view name) {
  for (const EnumName<E>& n : names) {
    if (name == n.name) return n.value;
  }
  return std::nullopt;
}

// The name of `value`; `unknown` for a value the table does not list.
template <typename E, size_t N>
const char* EnumValueName(const EnumName<E> (&names)[N], E value, const char* unknown = "?") {
  for (const EnumName<E>& n : names) {
    if (n.value == value) return n.name;
  }
  return unknown;
}

// The names in table order, as a message lists choices: "a", "a or b",
// "a, b or c".
template <typename E, size_t N>
std::string EnumNameChoices(const EnumName<E> (&names)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += names[i].name;
  }
  return out;
}

// The value `name` names; else InvalidArgument
// `<what> "<name>": expected <choices>`.
template <typename E, size_t N>
absl::StatusOr<E> ParseEnumName(const EnumName<E> (&names)[N], const char* what,
                                const std::string& name) {
  if (std::optional<E> value = FindEnumByName(names, name)) return *value;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " \"", name, "\": expected ", EnumNameChoices(names)));
}

}  // namespace retort

#endif  // RETORT_CORE_ENUM_NAMES_H_
