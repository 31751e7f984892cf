#include "pipeline/recipe.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/device.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "core/utf8.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "pipeline/sha256.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;
using google::protobuf::FieldDescriptor;
using google::protobuf::TextFormat;

// Collects the text-format parser's errors as "where:LINE:COL: message".
class RecipeErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit RecipeErrorCollector(std::string where) : where_(std::move(where)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!errors_.empty()) return;  // the first error is the useful one
    errors_ = absl::StrCat(where_, ":", line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& errors() const { return errors_; }

 private:
  std::string where_, errors_;
};

// Where stage `index` (and optionally one of its step's fields) was written:
// "recipe.textproto:12" from the parse tree, "recipe.json: stage[3]" without one.
class Locator {
 public:
  Locator(std::string where, const TextFormat::ParseInfoTree* tree)
      : where_(std::move(where)), tree_(tree) {}

  const std::string& where() const { return where_; }

  // A field of the recipe itself ("device"): "recipe.textproto:3", or the
  // file name alone without a parse tree.
  std::string Field(const std::string& name) const {
    const FieldDescriptor* f = proto::Recipe::descriptor()->FindFieldByName(name);
    if (tree_ == nullptr || f == nullptr) return where_;
    const int line = tree_->GetLocation(f, f->is_repeated() ? 0 : -1).line;
    return line >= 0 ? absl::StrCat(where_, ":", line + 1) : where_;
  }

  std::string Stage(int index, const std::string& field = "") const {
    const FieldDescriptor* stage_field = proto::Recipe::descriptor()->FindFieldByName("stage");
    if (tree_ == nullptr) return absl::StrCat(where_, ": stage[", index, "]");
    int line = tree_->GetLocation(stage_field, index).line;
    if (!field.empty()) {
      const TextFormat::ParseInfoTree* stage_tree = tree_->GetTreeForNested(stage_field, index);
      if (stage_tree != nullptr) {
        if (int l = FieldLine(stage_tree, proto::Stage::descriptor(), field); l >= 0) line = l;
      }
    }
    return line >= 0 ? absl::StrCat(where_, ":", line + 1) : where_;
  }

 private:
  // A field of the stage itself ("name") or of its step ("distill.student").
  static int FieldLine(const TextFormat::ParseInfoTree* tree,
                       const google::protobuf::Descriptor* descriptor, const std::string& path) {
    const size_t dot = path.find('.');
    const FieldDescriptor* f = descriptor->FindFieldByName(path.substr(0, dot));
    if (f == nullptr) return -1;
    const int index = f->is_repeated() ? 0 : -1;
    if (dot == std::string::npos) return tree->GetLocation(f, index).line;
    const TextFormat::ParseInfoTree* nested = tree->GetTreeForNested(f, index);
    if (nested == nullptr || f->message_type() == nullptr) return tree->GetLocation(f, index).line;
    const int line = FieldLine(nested, f->message_type(), path.substr(dot + 1));
    return line >= 0 ? line : tree->GetLocation(f, index).line;
  }

  std::string where_;
  const TextFormat::ParseInfoTree* tree_;
};

bool ValidStageName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

// The step's required inputs, as (field, value) pairs to check for emptiness.
std::vector<std::pair<std::string, bool>> RequiredFields(const proto::Stage& s) {
  switch (s.step_case()) {
    case proto::Stage::kGenerate:
      return {{"generate.model (or generate.endpoint)",
               !s.generate().model().empty() || !s.generate().endpoint().empty()},
              {"generate.prompts", !s.generate().prompts().empty()}};
    case proto::Stage::kDistill:
      // On-policy at lambda 1 trains on the student's samples of its prompts
      // alone; off-policy batches need data.
      if (s.distill().on_policy()) {
        const bool all_on_policy = !s.distill().has_lambda() || s.distill().lambda() >= 1;
        return {{"distill.student", !s.distill().student().empty()},
                {"distill.teacher (or distill.teacher_endpoint)",
                 !s.distill().teacher().empty() || !s.distill().teacher_endpoint().empty()},
                {"distill.prompts", !s.distill().prompts().empty()},
                {"distill.data (lambda below 1)", all_on_policy || s.distill().data_size() > 0}};
      }
      return {{"distill.student", !s.distill().student().empty()},
              {"distill.data", s.distill().data_size() > 0}};
    case proto::Stage::kPrune:
      return {{"prune.model", !s.prune().model().empty()}};
    case proto::Stage::kQuantize:
      return {{"quantize.model", !s.quantize().model().empty()}};
    case proto::Stage::kConvert:
      return {{"convert.model", !s.convert().model().empty()}};
    case proto::Stage::kEval:
      return {{"eval.model", !s.eval().model().empty()},
              {"eval.prompts", !s.eval().prompts().empty()}};
    case proto::Stage::kInit:
    case proto::Stage::STEP_NOT_SET:
      return {};
  }
  return {};
}

// The first string field of `m` (recursively) that is not well-formed UTF-8:
// its path below `path` ("distill.student", "eval.tasks[1]") and the offset
// of the first bad byte. Recipe strings end up in JSON (provenance, stage
// settings), whose writer cannot hold them, so they are refused at load.
bool FindBadUtf8(const google::protobuf::Message& m, const std::string& path, std::string* bad_path,
                 size_t* offset) {
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = path.empty() ? f->name() : absl::StrCat(path, ".", f->name());
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int j = 0; j < n; ++j) {
      const std::string item = f->is_repeated() ? absl::StrCat(name, "[", j, "]") : name;
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING &&
          f->type() != FieldDescriptor::TYPE_BYTES) {
        const std::string s = f->is_repeated() ? r->GetRepeatedString(m, f, j) : r->GetString(m, f);
        if (const size_t bad = ValidUtf8Prefix(s); bad < s.size()) {
          *bad_path = item;
          *offset = bad;
          return true;
        }
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const google::protobuf::Message& sub =
            f->is_repeated() ? r->GetRepeatedMessage(m, f, j) : r->GetMessage(m, f);
        if (FindBadUtf8(sub, item, bad_path, offset)) return true;
      }
    }
  }
  return false;
}

absl::Status CheckRecipeUtf8(const proto::Recipe& recipe, const Locator& at) {
  std::string field;
  size_t offset = 0;
  for (int i = 0; i < recipe.stage_size(); ++i) {
    if (FindBadUtf8(recipe.stage(i), "", &field, &offset)) {
      return absl::InvalidArgumentError(absl::StrCat(at.Stage(i, field), ": stage[", i, "].", field,
                                                     " is not valid UTF-8 (byte ", offset, ")"));
    }
  }
  proto::Recipe top = recipe;
  top.clear_stage();
  if (FindBadUtf8(top, "", &field, &offset)) {
    const std::string top_field = field.substr(0, field.find_first_of(".["));
    return absl::InvalidArgumentError(
        absl::StrCat(at.Field(top_field), ": ", field, " is not valid UTF-8 (byte ", offset, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRecipe(const proto::Recipe& recipe, const Locator& at) {
  if (recipe.stage_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(at.where(), ": the recipe has no stage"));
  }
  if (!recipe.device().empty()) {
    // ParseDevice's message names the value ("device 'x' is not one of: ...").
    if (absl::StatusOr<Device> d = ParseDevice(recipe.device()); !d.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(at.Field("device"), ": ", d.status().message()));
    }
  }
  std::map<std::string, int> index_of;
  for (int i = 0; i < recipe.stage_size(); ++i) {
    const proto::Stage& s = recipe.stage(i);
    if (!ValidStageName(s.name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          at.Stage(i, "name"), ": stage name \"", s.name(),
          "\" is not valid: expected 1 to 64 characters of A-Z a-z 0-9 _ - (it names the stage's "
          "folder)"));
    }
    if (auto [it, inserted] = index_of.emplace(s.name(), i); !inserted) {
      return absl::InvalidArgumentError(absl::StrCat(at.Stage(i, "name"), ": stage name \"",
                                                     s.name(), "\" is used twice (also stage ",
                                                     it->second + 1, ")"));
    }
    if (s.step_case() == proto::Stage::STEP_NOT_SET) {
      return absl::InvalidArgumentError(absl::StrCat(
          at.Stage(i), ": stage \"", s.name(),
          "\" has no step: give one of generate, distill, prune, quantize, convert, eval, init"));
    }
    for (const auto& [field, present] : RequiredFields(s)) {
      if (!present) {
        return absl::InvalidArgumentError(
            absl::StrCat(at.Stage(i, StageKind(s)), ": stage \"", s.name(), "\" needs ", field));
      }
    }
    if (!s.device().empty()) {
      if (!StageTakesDevice(s)) {
        return absl::InvalidArgumentError(
            absl::StrCat(at.Stage(i, "device"), ": stage \"", s.name(), "\" (", StageKind(s),
                         ") has no device: init and convert stages run on the CPU"));
      }
      if (absl::StatusOr<Device> d = ParseDevice(s.device()); !d.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(at.Stage(i, "device"), ": stage \"",
                                                       s.name(), "\" ", d.status().message()));
      }
    }
    if (s.has_distill() && s.distill().has_ranks() && s.distill().ranks() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(at.Stage(i, "distill.ranks"), ": stage \"",
                                                     s.name(), "\" ranks must be >= 1"));
    }
    for (const StageInput& in : StageInputs(s)) {
      const std::string field_path = absl::StrCat(StageKind(s), ".", in.field);
      absl::StatusOr<InputRef> ref = ParseInputRef(in.value);
      if (!ref.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(at.Stage(i, field_path), ": stage \"",
                                                       s.name(), "\" ", in.field, ": ",
                                                       ref.status().message()));
      }
      if (!ref->is_stage) continue;
      auto target = index_of.find(ref->stage);
      if (target == index_of.end() || target->second >= i) {
        bool later = target != index_of.end();
        for (int j = i; j < recipe.stage_size(); ++j) later |= recipe.stage(j).name() == ref->stage;
        return absl::InvalidArgumentError(absl::StrCat(
            at.Stage(i, field_path), ": stage \"", s.name(), "\" ", in.field, " refers to @",
            ref->stage,
            later ? ", which does not run before it (a stage can only use earlier stages' outputs)"
                  : ", which is not a stage of this recipe"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<proto::Recipe> ParseRecipe(const std::string& text, const std::string& where,
                                          RecipeSyntax syntax) {
  proto::Recipe recipe;
  if (syntax == RecipeSyntax::kJson) {
    // protobuf's JSON parser refuses ill-formed UTF-8 too, but quotes the
    // raw bytes in its message; say where instead.
    if (const size_t bad = ValidUtf8Prefix(text); bad < text.size()) {
      const size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
      const size_t column = line_start == std::string::npos ? bad : bad - line_start - 1;
      return absl::InvalidArgumentError(
          absl::StrCat(where, ":", 1 + std::count(text.begin(), text.begin() + bad, '\n'), ":",
                       column + 1, ": not valid UTF-8 (recipe strings must be UTF-8)"));
    }
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(text, &recipe, options);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not a valid recipe: ", std::string(status.message())));
    }
    RETURN_IF_ERROR(CheckRecipeUtf8(recipe, Locator(where, nullptr)));
    RETURN_IF_ERROR(ValidateRecipe(recipe, Locator(where, nullptr)));
    return recipe;
  }
  TextFormat::Parser parser;
  RecipeErrorCollector errors(where);
  TextFormat::ParseInfoTree tree;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&tree);
  if (!parser.ParseFromString(text, &recipe)) {
    return absl::InvalidArgumentError(
        errors.errors().empty() ? absl::StrCat(where, ": not a valid recipe") : errors.errors());
  }
  RETURN_IF_ERROR(CheckRecipeUtf8(recipe, Locator(where, &tree)));
  RETURN_IF_ERROR(ValidateRecipe(recipe, Locator(where, &tree)));
  return recipe;
}

absl::StatusOr<LoadedRecipe> LoadRecipe(const std::string& path) {
  LoadedRecipe r;
  r.path = path;
  ASSIGN_OR_RETURN(r.text, ReadFileToString(path));
  r.syntax = absl::EndsWithIgnoreCase(path, ".json") ? RecipeSyntax::kJson : RecipeSyntax::kText;
  ASSIGN_OR_RETURN(r.recipe, ParseRecipe(r.text, path, r.syntax));
  r.sha256 = Sha256Hex(r.text);
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  r.dir = (ec ? fs::path(path) : abs).parent_path().lexically_normal().string();
  return r;
}

std::string StageKind(const proto::Stage& stage) {
  switch (stage.step_case()) {
    case proto::Stage::kGenerate:
      return "generate";
    case proto::Stage::kDistill:
      return "distill";
    case proto::Stage::kPrune:
      return "prune";
    case proto::Stage::kQuantize:
      return "quantize";
    case proto::Stage::kConvert:
      return "convert";
    case proto::Stage::kEval:
      return "eval";
    case proto::Stage::kInit:
      return "init";
    case proto::Stage::STEP_NOT_SET:
      return "";
  }
  return "";
}

std::string StageLabel(const proto::Stage& stage) {
  return stage.label().empty() ? stage.name() : stage.label();
}

std::string StageMainOutput(const proto::Stage& stage) {
  switch (stage.step_case()) {
    case proto::Stage::kGenerate:
      return "traces.jsonl";
    case proto::Stage::kConvert:
      return stage.convert().to() == "hf" ? "final" : "out.gguf";
    case proto::Stage::kEval:
      return "result.json";
    default:
      return "final";
  }
}

namespace {

// Calls `fn` with each input field of the stage that is set.
void ForEachStageInput(proto::Stage* s,
                       const std::function<void(const char* field, std::string* value)>& fn) {
  auto visit = [&](const char* field, std::string* value) {
    if (!value->empty()) fn(field, value);
  };
  auto visit_all = [&](const char* field, google::protobuf::RepeatedPtrField<std::string>* values) {
    for (std::string& v : *values) visit(field, &v);
  };
  switch (s->step_case()) {
    case proto::Stage::kGenerate:
      visit("model", s->mutable_generate()->mutable_model());
      visit("prompts", s->mutable_generate()->mutable_prompts());
      break;
    case proto::Stage::kDistill:
      visit("student", s->mutable_distill()->mutable_student());
      visit_all("data", s->mutable_distill()->mutable_data());
      visit("teacher", s->mutable_distill()->mutable_teacher());
      visit("prompts", s->mutable_distill()->mutable_prompts());
      break;
    case proto::Stage::kPrune:
      visit("model", s->mutable_prune()->mutable_model());
      visit_all("calib", s->mutable_prune()->mutable_calib());
      break;
    case proto::Stage::kQuantize:
      visit("model", s->mutable_quantize()->mutable_model());
      visit_all("calib", s->mutable_quantize()->mutable_calib());
      break;
    case proto::Stage::kConvert:
      visit("model", s->mutable_convert()->mutable_model());
      break;
    case proto::Stage::kEval:
      visit("model", s->mutable_eval()->mutable_model());
      visit("prompts", s->mutable_eval()->mutable_prompts());
      break;
    case proto::Stage::kInit:
      if (s->init().tokenizer() != "bytes")
        visit("tokenizer", s->mutable_init()->mutable_tokenizer());
      break;
    case proto::Stage::STEP_NOT_SET:
      break;
  }
}

}  // namespace

std::vector<StageInput> StageInputs(const proto::Stage& stage) {
  std::vector<StageInput> in;
  proto::Stage copy = stage;
  ForEachStageInput(&copy, [&](const char* field, std::string* value) {
    in.push_back({field, *value});
  });
  return in;
}

proto::Stage ResolveStageInputs(const proto::Stage& stage,
                                const std::function<std::string(const std::string&)>& resolve) {
  proto::Stage resolved = stage;
  ForEachStageInput(&resolved, [&](const char*, std::string* value) { *value = resolve(*value); });
  return resolved;
}

absl::StatusOr<InputRef> ParseInputRef(const std::string& value) {
  InputRef ref;
  if (value.empty()) return absl::InvalidArgumentError("empty path");
  if (value[0] != '@') {
    ref.path = value;
    return ref;
  }
  ref.is_stage = true;
  const size_t slash = value.find('/');
  ref.stage = value.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
  if (slash != std::string::npos) ref.relative = value.substr(slash + 1);
  if (ref.stage.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", value, "\": expected @STAGE or @STAGE/PATH after the @"));
  }
  fs::path rel(ref.relative);
  for (const fs::path& part : rel) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", value, "\": the path inside a stage's folder may not use .."));
    }
  }
  if (rel.is_absolute()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", value, "\": the path after @", ref.stage, "/ must be relative"));
  }
  while (!ref.relative.empty() && ref.relative.back() == '/') ref.relative.pop_back();
  return ref;
}

bool StageTakesDevice(const proto::Stage& stage) {
  switch (stage.step_case()) {
    case proto::Stage::kGenerate:
    case proto::Stage::kDistill:
    case proto::Stage::kPrune:
    case proto::Stage::kQuantize:
    case proto::Stage::kEval:
      return true;
    case proto::Stage::kConvert:
    case proto::Stage::kInit:
    case proto::Stage::STEP_NOT_SET:
      return false;
  }
  return false;
}

std::string StageDevice(const proto::Recipe& recipe, const proto::Stage& stage) {
  if (!StageTakesDevice(stage)) return "cpu";
  const std::string& text = !stage.device().empty() ? stage.device() : recipe.device();
  if (text.empty()) return "cpu";
  absl::StatusOr<Device> d = ParseDevice(text);
  return d.ok() ? DeviceName(*d) : text;
}

nlohmann::ordered_json StageSettingsJson(const proto::Stage& stage, const std::string& device) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(stage, &text, options).ok()) return {};
  nlohmann::ordered_json j =
      ParseOrderedJson(text, "the stage").value_or(nlohmann::ordered_json::value_t::discarded);
  if (!j.is_object()) return j;
  // The device the stage runs on, however the recipe says it; none for the
  // CPU, so a recipe that names it hashes as one that leaves it out.
  j.erase("device");
  if (!device.empty() && device != "cpu") j["device"] = device;
  return j;
}

std::string RecipeToText(const proto::Recipe& recipe) {
  std::string text;
  TextFormat::PrintToString(recipe, &text);
  return text;
}

}  // namespace retort::pipeline
