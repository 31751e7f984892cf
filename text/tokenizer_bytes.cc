#include "text/tokenizer_bytes.h"

#include <cstdint>

#include "text/unicode.h"

namespace retort {

nlohmann::json ByteTokenizerJson() {
  using json = nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicodeTable()[b]] = b;
  json added = json::array();
  for (size_t i = 0; i < ByteTokenizerSpecials().size(); ++i) {
    added.push_back({{"id", 256 + static_cast<int>(i)},
                     {"content", ByteTokenizerSpecials()[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", false},
                     {"trim_offsets", true},
                     {"use_regex", true}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", byte_level},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array()}}}};
}

nlohmann::json ByteTokenizerConfigJson() {
  return {{"tokenizer_class", "PreTrainedTokenizerFast"},
          {"bos_token", nullptr},
          {"eos_token", "<|im_end|>"},
          {"pad_token", "<|endoftext|>"},
          {"unk_token", nullptr},
          {"model_max_length", 8192},
          {"clean_up_tokenization_spaces", false},
          {"chat_template",
           "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
           "message['content'] + "
           "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
           "'<|im_start|>assistant\\n' }}{% endif %}"}};
}

}  // namespace retort
