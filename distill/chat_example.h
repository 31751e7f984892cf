// Chat and trace samples as training examples: a chat whose last message is
// the assistant's is rendered through the STUDENT's chat template.
// prompt = Render(messages before the final assistant turn,
// add_generation_prompt=true), tokenized with the tokenizer's BOS rules (a
// BOS the template already rendered is not doubled); completion = what the
// model must write, tokenized without added special tokens but with special
// tokens written in the text recognised. Mask 0 on the prompt, 1 on the
// completion. See ChatExampleBuilder for how the completion text is found.
//
// Thread-safety: ChatExampleBuilder::Build is const and may run on several
// threads.
#ifndef RETORT_DISTILL_CHAT_EXAMPLE_H_
#define RETORT_DISTILL_CHAT_EXAMPLE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distill/train_example.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

struct ChatExampleOptions {
  // false: only the final assistant turn is trained (the default; what
  // reasoning SFT wants). true: every assistant turn is trained as the
  // template renders it in the history (earlier turns without their
  // reasoning when the template drops it), the final turn as below. Needs a
  // template whose renderings of successive prefixes extend each other.
  bool train_all_assistant_turns = false;
  // true: every assistant message loses its reasoning before rendering (the
  // reasoning_content / reasoning / thinking fields and the <think>...</think>
  // blocks of its content, see WithoutReasoning), so the student learns to
  // write the answer alone: the "answers only" baseline of a distillation
  // experiment. A sample left with no answer is skipped ("empty completion").
  bool answers_only = false;
};

// RemoveThinkBlocks (formats/reasoning.h) strips reasoning from one text.

// A copy of `messages` (an OpenAI chat array) whose assistant messages carry
// no reasoning: no reasoning_content / reasoning / thinking field and their
// string content passed through RemoveThinkBlocks. Other messages, and
// anything that is not an object with a string role, are copied unchanged.
nlohmann::ordered_json WithoutReasoning(const nlohmann::ordered_json& messages);

// Turns a chat (a JSON array of {"role", "content", "reasoning_content"?})
// whose last message is the assistant's into a TrainExample.
//
// The completion text of the final assistant turn is, in this order:
//   1. the template's own rendering of that turn, when rendering the whole
//      conversation gives prompt + X and X contains the turn's reasoning (or
//      it has none): templates that know reasoning_content (Qwen3) are
//      followed exactly, empty <think></think> included;
//   2. otherwise constructed: ("<think>\n" + reasoning + "\n</think>\n\n" +
//      content, or content alone) + the template's end-of-turn text. The
//      reasoning loses leading/trailing newlines and the content its leading
//      ones (as Qwen3 renders them). The end-of-turn text is what follows a
//      sentinel content in Render([user, assistant{sentinel}]) (e.g.
//      "<|im_end|>\n" for ChatML, "<｜end▁of▁sentence｜>" for R1-Distill);
//      the final turn is never rendered through the template's history
//      path, which drops <think> in R1-style templates.
// When the generation prompt ends with "<think>\n" (R1-Distill) and the
// completion starts with it, the completion's copy is dropped.
class ChatExampleBuilder {
 public:
  // `tmpl` and `tokenizer` must outlive the builder. Fails when the
  // template's end-of-turn text cannot be found.
  static absl::StatusOr<ChatExampleBuilder> Create(const ChatTemplate* tmpl,
                                                   const Tokenizer* tokenizer,
                                                   ChatExampleOptions options = {});

  // The rendered text pieces of the final turn (for tests and inspection).
  struct Texts {
    std::string prompt;
    std::string completion;
    bool from_template = false;  // case 1 above
  };
  // Errors (InvalidArgument) name `where` (e.g. "data.jsonl:12"): no messages,
  // a message without string role/content, last message not the assistant's,
  // an empty completion, non-UTF-8 text, a template error.
  absl::StatusOr<Texts> RenderFinalTurn(const nlohmann::ordered_json& messages,
                                        const std::string& where) const;
  absl::StatusOr<TrainExample> Build(const nlohmann::ordered_json& messages, const std::string& id,
                                     const std::string& where) const;

  const std::string& end_of_turn() const { return end_of_turn_; }

 private:
  ChatExampleBuilder() = default;
  absl::Status AppendEarlierTurns(const nlohmann::ordered_json& messages, const std::string& where,
                                  TrainExample* ex, std::string* rendered) const;

  const ChatTemplate* tmpl_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  ChatExampleOptions options_;
  std::string end_of_turn_;
};

}  // namespace retort

#endif  // RETORT_DISTILL_CHAT_EXAMPLE_H_
