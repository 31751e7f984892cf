#include "text/tokenizer_json.h"

#include <utility>

namespace retort {

using oj = nlohmann::ordered_json;

oj ByteLevelJson(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return oj{{"type", "ByteLevel"},
            {"add_prefix_space", add_prefix_space},
            {"trim_offsets", trim_offsets},
            {"use_regex", use_regex}};
}

oj AddedTokenJson(int64_t id, const std::string& content, bool special) {
  return oj{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
            {"rstrip", false}, {"normalized", false}, {"special", special}};
}

oj TokenizerJson(BpeTokenizerJson parts) {
  return oj{{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", std::move(parts.added_tokens)},
            {"normalizer", std::move(parts.normalizer)},
            {"pre_tokenizer", std::move(parts.pre_tokenizer)},
            {"post_processor", std::move(parts.post_processor)},
            {"decoder", std::move(parts.decoder)},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"ignore_merges", parts.ignore_merges},
              {"vocab", std::move(parts.vocab)},
              {"merges", std::move(parts.merges)}}}};
}

}  // namespace retort
