#include "serve/text_stream.h"

#include <algorithm>
#include <utility>

#include "core/utf8.h"
#include "formats/reasoning.h"
#include "serve/text_util.h"

namespace retort::serve {

TextStream::TextStream(const Tokenizer& tokenizer, TextStreamOptions options)
    : decoder_(tokenizer, /*skip_special_tokens=*/true, options.max_pending_tokens),
      stop_(std::move(options.stop)),
      splitter_(options.reasoning, options.starts_in_reasoning) {}

bool TextStream::Push(int32_t id) {
  if (stopped_) return false;
  std::string t = decoder_.Push(id);
  if (t.empty()) return true;
  return Append(t);
}

bool TextStream::Append(const std::string& t) {
  const size_t from = text_.size();
  text_ += t;
  chars_ += Utf8Length(t);
  // Only a match that ends in the new text is new.
  size_t cut = std::string::npos;
  for (const std::string& s : stop_) {
    const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    const size_t at = text_.find(s, start);
    if (at != std::string::npos && (cut == std::string::npos || at < cut)) {
      cut = at;
      stop_string_ = s;
    }
  }
  if (cut == std::string::npos) return true;
  text_.resize(std::max(cut, sent_));
  stopped_ = true;
  return false;
}

TextDelta TextStream::Split(std::string text) {
  ReasoningSplitter::Delta d = splitter_.Push(text);
  return TextDelta{std::move(text), std::move(d.reasoning), std::move(d.content)};
}

TextDelta TextStream::TakeReady() {
  size_t limit = text_.size();
  if (!stopped_) {
    size_t hold = 0;
    for (const std::string& s : stop_) hold = std::max(hold, PartialSuffixLength(text_, s));
    limit -= hold;
  }
  if (limit <= sent_) return TextDelta{};
  std::string out = text_.substr(sent_, limit - sent_);
  sent_ = limit;
  return Split(std::move(out));
}

TextDelta TextStream::TakeRest() {
  if (!stopped_) {
    std::string t = decoder_.Finish();
    if (!t.empty()) Append(t);
  }
  stopped_ = true;
  return TakeReady();
}

TextDelta TextStream::FinishReasoning() {
  ReasoningSplitter::Delta d = splitter_.Finish();
  return TextDelta{"", std::move(d.reasoning), std::move(d.content)};
}

}  // namespace retort::serve
