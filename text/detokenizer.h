// IncrementalDecoder: the text of a token stream as the tokens arrive, for
// printing or sending while a model generates.
//
// Decoding the whole output again for every token costs O(n^2); this keeps
// only the undecided tail: the tokens whose bytes may still end inside a
// multi-byte character (their text ends in U+FFFD). Once the tail's text
// ends on a whole character it is final and the tail is dropped, keeping the
// last decoded token as context so the text joins exactly as
// Tokenizer::Decode would join it (a tokenizer without a byte-level decoder
// puts a space between tokens).
//
// With max_pending_tokens = 0 the concatenation of everything Push() and
// Finish() return equals Tokenizer::Decode(all ids). A limit > 0 flushes a
// tail that is still incomplete after that many tokens (its broken bytes
// become U+FFFD), so a stream of invalid bytes cannot stall the output.
//
// Not thread-safe; one per generated sequence. The tokenizer must outlive it.
#ifndef RETORT_TEXT_DETOKENIZER_H_
#define RETORT_TEXT_DETOKENIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace retort {

class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                     int max_pending_tokens = 0);

  // Adds a token; returns the text it made final ("" while the tail waits).
  std::string Push(int32_t id);
  // Decodes the tail as it is (incomplete bytes become U+FFFD) and returns it.
  std::string Finish();
  // Tokens pushed but not yet turned into text.
  size_t pending_tokens() const { return tail_.size(); }

 private:
  std::string DecodeTail() const;
  bool Skipped(int32_t id) const;

  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  const int max_pending_tokens_;
  // The last token already decoded that produced text (-1: none): decoding
  // it in front of the tail reproduces the separator Decode() would write.
  int32_t anchor_ = -1;
  std::string anchor_text_;
  std::vector<int32_t> tail_;
};

}  // namespace retort

#endif  // RETORT_TEXT_DETOKENIZER_H_
