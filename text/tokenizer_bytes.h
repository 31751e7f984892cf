// A byte-level tokenizer with no merges: one token per byte plus a few
// special tokens. It is what `retort init` gives a fresh random model when no
// real tokenizer is named, so every command works offline. The files are
// ordinary tokenizer.json / tokenizer_config.json that the `tokenizers`
// library and transformers load as well.
#ifndef RETORT_TEXT_TOKENIZER_BYTES_H_
#define RETORT_TEXT_TOKENIZER_BYTES_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace retort {

// Special tokens of the byte tokenizer, ids 256.. in this order.
inline const std::vector<std::string>& ByteTokenizerSpecials() {
  static const std::vector<std::string> kSpecials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  return kSpecials;
}
inline constexpr int kByteTokenizerVocab = 259;

// tokenizer.json: byte b has id b and the GPT-2 byte-level character as its piece.
nlohmann::json ByteTokenizerJson();
// tokenizer_config.json: ChatML chat template, eos = <|im_end|>, bos = none.
nlohmann::json ByteTokenizerConfigJson();

}  // namespace retort

#endif  // RETORT_TEXT_TOKENIZER_BYTES_H_
