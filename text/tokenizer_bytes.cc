#include "text/tokenizer_bytes.h"

#include <cstdint>
#include <utility>

#include "text/tokenizer_json.h"
#include "text/unicode.h"

namespace retort {

nlohmann::json ByteTokenizerJson() {
  BpeTokenizerJson t;
  for (int b = 0; b < 256; ++b) t.vocab[ByteToUnicodeTable()[b]] = b;
  for (size_t i = 0; i < ByteTokenizerSpecials().size(); ++i) {
    t.added_tokens.push_back(
        AddedTokenJson(256 + static_cast<int>(i), ByteTokenizerSpecials()[i], /*special=*/true));
  }
  t.pre_tokenizer = t.post_processor = t.decoder =
      ByteLevelJson(/*add_prefix_space=*/false, /*trim_offsets=*/true);
  // nlohmann::json: the file lists keys sorted, as it always has.
  return TokenizerJson(std::move(t));
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
