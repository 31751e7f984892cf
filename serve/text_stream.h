// TextStream: turns one choice's generated tokens into the text a client
// sees, as the tokens arrive.
//
// Three stages, in order:
//   1. decoding (text/detokenizer.h), incremental and UTF-8 safe: a token
//      group whose bytes end inside a character waits for the next token,
//      up to 4 tokens, then its broken bytes become U+FFFD;
//   2. stop strings: the text is cut before the earliest match, and a
//      suffix that may still grow into a stop string is held back until it
//      either does (cut) or cannot (released);
//   3. for chat, the reasoning split (<think>...</think> goes to
//      reasoning_content, distill/endpoint.h's ReasoningSplitter); for
//      /v1/completions the mode is kNone and everything is content.
// Stop strings match the raw text, so a stop string inside the reasoning
// ends the generation too.
//
// Not thread-safe; one per choice. The tokenizer must outlive it.
#ifndef RETORT_SERVE_TEXT_STREAM_H_
#define RETORT_SERVE_TEXT_STREAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "distill/endpoint.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

namespace retort::serve {

struct TextStreamOptions {
  std::vector<std::string> stop;  // non-empty strings
  ReasoningSplitter::Mode reasoning = ReasoningSplitter::Mode::kNone;
  bool starts_in_reasoning = false;  // the prompt ended with <think>
  // Tokens a group may wait for a character to complete.
  int max_pending_tokens = 4;
};

// Text that became final: `text` as generated (what /v1/completions sends)
// and the same text split into reasoning and content (for chat).
struct TextDelta {
  std::string text;
  std::string reasoning;
  std::string content;
  bool empty() const { return text.empty() && reasoning.empty() && content.empty(); }
};

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, TextStreamOptions options);

  // Adds a generated token; false once a stop string has appeared (the
  // generation should end; later tokens are ignored).
  bool Push(int32_t id);
  // The final text not yet taken (a possible stop-string start held back).
  TextDelta TakeReady();
  // At the end of the generation: decodes what is pending and returns the
  // rest of the text. Then FinishReasoning() returns what the reasoning
  // split still held (a partial tag).
  TextDelta TakeRest();
  TextDelta FinishReasoning();

  // Code points of text decoded so far (a token's text_offset).
  size_t chars() const { return chars_; }
  // All text so far, cut at a stop string.
  const std::string& text() const { return text_; }
  bool stopped() const { return stopped_; }
  // The stop string that cut the text ("" if none did).
  const std::string& stop_string() const { return stop_string_; }
  // True once any reasoning was seen (chat's message.reasoning_content).
  bool saw_reasoning() const { return splitter_.saw_reasoning(); }

 private:
  bool Append(const std::string& t);
  TextDelta Split(std::string text);

  IncrementalDecoder decoder_;
  const std::vector<std::string> stop_;
  ReasoningSplitter splitter_;
  std::string text_;
  std::string stop_string_;
  size_t chars_ = 0;
  size_t sent_ = 0;
  bool stopped_ = false;
};

}  // namespace retort::serve

#endif  // RETORT_SERVE_TEXT_STREAM_H_
