// Writing a Hugging Face tokenizer.json for a BPE model. Every tokenizer
// retort writes (the byte tokenizer of `retort init`, a GGUF model's
// vocabulary exported as a Hugging Face directory) is one of these documents;
// what differs between them is in BpeTokenizerJson. Keys come in the order the
// `tokenizers` library writes them.
#ifndef RETORT_TEXT_TOKENIZER_JSON_H_
#define RETORT_TEXT_TOKENIZER_JSON_H_

#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"

namespace retort {

// A ByteLevel pre-tokenizer, post-processor or decoder.
nlohmann::ordered_json ByteLevelJson(bool add_prefix_space, bool trim_offsets,
                                     bool use_regex = true);

// One entry of "added_tokens": matched whole, never normalized.
nlohmann::ordered_json AddedTokenJson(int64_t id, const std::string& content, bool special);

// The parts of a BPE tokenizer.json that are the tokenizer's own.
struct BpeTokenizerJson {
  nlohmann::ordered_json added_tokens = nlohmann::ordered_json::array();  // of AddedTokenJson
  nlohmann::ordered_json normalizer;                                      // null: none
  nlohmann::ordered_json pre_tokenizer;
  nlohmann::ordered_json post_processor;
  nlohmann::ordered_json decoder;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();  // piece -> id
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();  // "left right" strings
  bool ignore_merges = false;
};

// The whole document: version 1.0, no truncation or padding, and a BPE model
// without dropout, unknown token, affixes or byte fallback.
nlohmann::ordered_json TokenizerJson(BpeTokenizerJson parts);

}  // namespace retort

#endif  // RETORT_TEXT_TOKENIZER_JSON_H_
