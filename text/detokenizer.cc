#include "text/detokenizer.h"

#include <string_view>

namespace retort {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool EndsWithReplacement(std::string_view text) {
  return text.size() >= kReplacement.size() &&
         text.substr(text.size() - kReplacement.size()) == kReplacement;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                                       int max_pending_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      max_pending_tokens_(max_pending_tokens) {}

bool IncrementalDecoder::Skipped(int32_t id) const {
  return id < 0 || id >= tokenizer_.vocab_size() ||
         (skip_special_tokens_ && tokenizer_.IsSpecial(id));
}

std::string IncrementalDecoder::DecodeTail() const {
  if (anchor_ < 0) return tokenizer_.Decode(tail_, skip_special_tokens_);
  std::vector<int32_t> ids;
  ids.reserve(tail_.size() + 1);
  ids.push_back(anchor_);
  ids.insert(ids.end(), tail_.begin(), tail_.end());
  // The anchor's text ended on a whole character, so Decode() gives it back
  // unchanged in front of the tail's text.
  std::string text = tokenizer_.Decode(ids, skip_special_tokens_);
  return text.size() < anchor_text_.size() ? "" : text.substr(anchor_text_.size());
}

std::string IncrementalDecoder::Push(int32_t id) {
  tail_.push_back(id);
  std::string text = DecodeTail();
  const bool incomplete = EndsWithReplacement(text);
  if (incomplete &&
      (max_pending_tokens_ <= 0 || static_cast<int>(tail_.size()) < max_pending_tokens_)) {
    return "";
  }
  if (incomplete) {
    // A forced flush: the broken bytes are final, nothing may join them.
    anchor_ = -1;
    anchor_text_.clear();
  } else {
    for (auto it = tail_.rbegin(); it != tail_.rend(); ++it) {
      if (Skipped(*it)) continue;
      anchor_ = *it;
      anchor_text_ = tokenizer_.Decode({anchor_}, skip_special_tokens_);
      break;
    }
  }
  tail_.clear();
  return text;
}

std::string IncrementalDecoder::Finish() {
  if (tail_.empty()) return "";
  std::string text = DecodeTail();
  tail_.clear();
  anchor_ = -1;
  anchor_text_.clear();
  return text;
}

}  // namespace retort
