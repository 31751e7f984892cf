// Setting a job's options from a recipe stage's typed fields (the
// JobCommand::FromStage implementations): a field left out keeps the option's
// value (its default, or what the stage's extra_args said); a field given
// while extra_args give the same option is an error, as a repeated option is
// on a command line.
#ifndef RETORT_PIPELINE_STAGE_FIELDS_H_
#define RETORT_PIPELINE_STAGE_FIELDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "boost/program_options.hpp"
#include "core/status.h"
#include "google/protobuf/repeated_ptr_field.h"

namespace retort::pipeline {

class StageFields {
 public:
  explicit StageFields(const boost::program_options::variables_map& vm) : vm_(vm) {}

  // A text field; empty means left out.
  void Text(const char* option, const std::string& value, std::string* to) {
    if (!value.empty() && Free(option)) *to = value;
  }
  // An optional number (`has`: the field is set).
  template <typename T, typename U>
  void Num(const char* option, bool has, U value, T* to) {
    if (has && Free(option)) *to = static_cast<T>(value);
  }
  // A switch; false means left out.
  void Flag(const char* option, bool on, bool* to) {
    if (on && Free(option)) *to = true;
  }
  // A repeated field; empty means left out.
  void List(const char* option, const google::protobuf::RepeatedPtrField<std::string>& values,
            std::vector<std::string>* to) {
    if (!values.empty() && Free(option)) to->assign(values.begin(), values.end());
  }
  // Sets a value the stage decides (its output folder, its threads): extra_args may not.
  template <typename T, typename U>
  void Fixed(const char* option, const U& value, T* to) {
    if (Free(option)) *to = value;
  }

  // The first conflict (an OptionError), or OK.
  const absl::Status& status() const { return status_; }

 private:
  bool Free(const char* option) {
    auto it = vm_.find(option);
    if (it == vm_.end() || it->second.defaulted()) return true;
    if (status_.ok()) {
      status_ = OptionError(
          absl::StrCat("--", option, " is set by the stage and again in its extra_args"));
    }
    return false;
  }

  const boost::program_options::variables_map& vm_;
  absl::Status status_;
};

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_STAGE_FIELDS_H_
