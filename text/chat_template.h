// Renders a model's own chat template the way transformers'
// `tokenizer.apply_chat_template(messages, tokenize=False, ...)` does, so a
// prompt built here is byte-identical to the one the model was trained and
// evaluated with (role markers, BOS, generation prompt, tool blocks, the R1
// templates' removal of <think> reasoning from earlier turns).
//
// What transformers does around the Jinja template, and so this class too:
//   * each message drops its keys whose value is null (content: null becomes
//     a missing key);
//   * a message with `reasoning_content`, `thinking` or `reasoning` gets the
//     same text under `thinking` and `reasoning_content` as well;
//   * the template sees `messages`, `tools` and `documents` (none unless
//     given), `add_generation_prompt`, the tokenizer's special tokens
//     (bos_token, eos_token, ...) and every key of `extra_context` (which
//     wins over the special tokens; put `tools`, `date_string`,
//     `enable_thinking`, ... there).
//
// Time: strftime_now() formats the local time unless SetFixedNow was called
// (tests pin it so rendered dates are reproducible).
//
// Thread-safety: Render is const and may be called from several threads;
// SetFixedNow / SetSpecialTokens must not race with it.
#ifndef RETORT_TEXT_CHAT_TEMPLATE_H_
#define RETORT_TEXT_CHAT_TEMPLATE_H_

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "text/jinja.h"

namespace retort {

class ChatTemplate {
 public:
  // Parses a Jinja chat template. Errors name the template line.
  static absl::StatusOr<ChatTemplate> Parse(const std::string& source);

  // Loads the chat template and special tokens of a Hugging Face tokenizer:
  // `tokenizer_config_path` is a tokenizer_config.json. Its "chat_template"
  // may be a string or a list of {"name", "template"}; `name` picks one from
  // a list ("" means "default"). A chat_template.jinja file next to the
  // config takes precedence, as in transformers. Special tokens
  // (bos/eos/unk/pad/sep/cls/mask) may be strings or AddedToken objects
  // ({"content": ...}).
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(const std::string& tokenizer_config_path,
                                                          const std::string& name = "");

  // Renders `messages` (a JSON array of message objects). With ordered_json
  // the key order of objects (tool schemas!) is kept, as Python keeps it;
  // nlohmann::json sorts keys, so prefer ordered_json when a template prints
  // objects with tojson.
  absl::StatusOr<std::string> Render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& extra_context = nlohmann::ordered_json::object()) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& messages, bool add_generation_prompt,
                                     const nlohmann::json& extra_context) const;

  // strftime_now() returns this instant instead of the local time.
  void SetFixedNow(const std::tm& now) { options_.fixed_now = now; }
  // Render limits (steps, output size, macro depth).
  jinja::RenderOptions& mutable_options() { return options_; }

  // Special tokens the template sees (bos_token, eos_token, ...); from the
  // tokenizer config, or set here. Keys of extra_context override them.
  void SetSpecialTokens(const nlohmann::ordered_json& tokens) { special_tokens_ = tokens; }
  const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }
  const std::string& source() const { return source_; }

 private:
  absl::StatusOr<std::string> RenderValues(const jinja::Value& messages, bool add_generation_prompt,
                                           const jinja::Value& extra_context) const;

  std::string source_;
  jinja::Template template_;
  jinja::RenderOptions options_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
};

}  // namespace retort

#endif  // RETORT_TEXT_CHAT_TEMPLATE_H_
