// Typed reading of fields of a parsed JSON document (config.json, a JSONL
// line, a quantization_config block) with errors that name the document and
// the field path: "<source>: <field>: <problem>", e.g.
//   "model/config.json: quantization_config.bits: expected an integer, got "4""
//   "traces.jsonl:7: messages[0].role: expected a string, got an integer"
// Every reader of such files goes through JsonFields so the messages read the
// same everywhere. A JSON null counts as absent: optional getters return their
// fallback, required ones say "missing".
//
// Works on nlohmann::json and nlohmann::ordered_json alike.
// Thread safety: immutable after construction.
#ifndef RETORT_FORMATS_JSON_FIELDS_H_
#define RETORT_FORMATS_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace retort {

class JsonFields {
 public:
  // How a value of the wrong type is shown after "got": its JSON text
  // ("got "4"", config files, where the value is short) or its type ("got a
  // string", JSONL lines, where values can be whole conversations).
  enum class Shown { kValue, kType };

  // `source` names the document ("<path>" or "<path>:<line>").
  explicit JsonFields(std::string source, Shown shown = Shown::kValue)
      : source_(std::move(source)), shown_(shown) {}

  const std::string& source() const { return source_; }

  // InvalidArgument "<source>: <field>: <parts...>" ("<source>: <parts...>"
  // when `field` is empty).
  template <typename... Args>
  absl::Status Bad(const std::string& field, const Args&... parts) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, field.empty() ? "" : ": ", field, ": ", parts...));
  }

  // "<path>.<key>", or "<key>" at the top level (empty path).
  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : absl::StrCat(path, ".", key);
  }

  // The member `key` of `obj`, or nullptr when it is absent, null, or `obj`
  // is not an object.
  template <typename Json>
  static const Json* Find(const Json& obj, const std::string& key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  // "an integer", "a number", or nlohmann's type name ("string", "array", ...).
  template <typename Json>
  static const char* TypeName(const Json& v) {
    if (v.is_number_integer()) return "an integer";
    if (v.is_number()) return "a number";
    return v.type_name();
  }

  // "expected <what>, got <value or type>" about `field`.
  template <typename Json>
  absl::Status Mistyped(const std::string& field, const std::string& what, const Json& v) const {
    if (shown_ == Shown::kType) return Bad(field, "expected ", what, ", got ", TypeName(v));
    return Bad(field, "expected ", what, ", got ", v.dump());
  }

  // --- A value at hand, named by `field` (the full path). ---

  template <typename Json>
  absl::StatusOr<std::string> String(const Json& v, const std::string& field) const {
    if (!v.is_string()) return Mistyped(field, "a string", v);
    return v.template get<std::string>();
  }
  template <typename Json>
  absl::StatusOr<int64_t> Int(const Json& v, const std::string& field) const {
    if (!v.is_number_integer()) return Mistyped(field, "an integer", v);
    return v.template get<int64_t>();
  }
  template <typename Json>
  absl::StatusOr<double> Number(const Json& v, const std::string& field) const {
    if (!v.is_number()) return Mistyped(field, "a number", v);
    return v.template get<double>();
  }
  template <typename Json>
  absl::StatusOr<bool> Bool(const Json& v, const std::string& field) const {
    if (!v.is_boolean()) return Mistyped(field, "true/false", v);
    return v.template get<bool>();
  }
  // A list of strings; a lone string is a list of one.
  template <typename Json>
  absl::StatusOr<std::vector<std::string>> Strings(const Json& v, const std::string& field) const {
    if (v.is_string()) return std::vector<std::string>{v.template get<std::string>()};
    std::vector<std::string> out;
    if (!v.is_array()) return Mistyped(field, "a list of strings", v);
    for (const Json& e : v) {
      if (!e.is_string()) return Mistyped(field, "a list of strings", v);
      out.push_back(e.template get<std::string>());
    }
    return out;
  }

  // --- Members of an object at `path`: required (no fallback: "missing
  // (expected ...)" when absent) or optional (the fallback when absent). ---

  template <typename Json>
  absl::StatusOr<std::string> String(const Json& obj, const std::string& path,
                                     const std::string& key,
                                     std::optional<std::string> fallback) const {
    return Member<std::string>(obj, path, key, std::move(fallback), "a string",
                               [&](const Json& v, const std::string& f) { return String(v, f); });
  }
  template <typename Json>
  absl::StatusOr<int64_t> Int(const Json& obj, const std::string& path, const std::string& key,
                              std::optional<int64_t> fallback) const {
    return Member<int64_t>(obj, path, key, fallback, "an integer",
                           [&](const Json& v, const std::string& f) { return Int(v, f); });
  }
  template <typename Json>
  absl::StatusOr<double> Number(const Json& obj, const std::string& path, const std::string& key,
                                std::optional<double> fallback) const {
    return Member<double>(obj, path, key, fallback, "a number",
                          [&](const Json& v, const std::string& f) { return Number(v, f); });
  }
  template <typename Json>
  absl::StatusOr<bool> Bool(const Json& obj, const std::string& path, const std::string& key,
                            bool fallback) const {
    const Json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    return Bool(*v, Join(path, key));
  }
  // Absent: an empty list.
  template <typename Json>
  absl::StatusOr<std::vector<std::string>> Strings(const Json& obj, const std::string& path,
                                                   const std::string& key) const {
    const Json* v = Find(obj, key);
    if (v == nullptr) return std::vector<std::string>();
    return Strings(*v, Join(path, key));
  }

 private:
  // The member `key` read by `get`, or `fallback` when absent (an error
  // naming `what` when there is none).
  template <typename T, typename Json, typename Get>
  absl::StatusOr<T> Member(const Json& obj, const std::string& path, const std::string& key,
                           std::optional<T> fallback, const char* what, const Get& get) const {
    const Json* v = Find(obj, key);
    if (v == nullptr) {
      if (fallback.has_value()) return *std::move(fallback);
      return Bad(Join(path, key), "missing (expected ", what, ")");
    }
    return get(*v, Join(path, key));
  }

  std::string source_;
  Shown shown_;
};

}  // namespace retort

#endif  // RETORT_FORMATS_JSON_FIELDS_H_
