// Byte-level BPE tokenizer compatible with Hugging Face `tokenizers`.
//
// Loads a tokenizer.json (model type BPE: GPT-2, Llama-3, Qwen2/2.5,
// SmolLM2, DeepSeek-V3/R1 and R1-Distill families), or is built from the raw
// parts a GGUF file carries (tokenizer.ggml.tokens / merges / token_type /
// pre). Encode and Decode give the same ids and text as the `tokenizers`
// library, token for token, including the traps that silently change ids:
//   * added tokens (<|im_start|>, <｜User｜>, ...) are cut out of the raw
//     text before normalization and pre-tokenization;
//   * the normalizer runs (Qwen2's NFC);
//   * the pre-tokenizer regex is the file's own, run with Unicode classes and
//     lookahead (PCRE2);
//   * Llama-3's `ignore_merges`: a word that is itself in the vocabulary is
//     one token even when the merges would split it;
//   * the post-processor's BOS: Encode(text, true) adds it the way the
//     reference does, so a chat template rendered with its own BOS gets two;
//     EncodeOptions::avoid_double_bos and StartsWithBos() handle that case.
//
// Thread-safety: a Tokenizer is immutable after loading except for an
// internal word cache guarded by a mutex; all const methods may be called from
// many threads at once.
#ifndef RETORT_TEXT_TOKENIZER_H_
#define RETORT_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "text/pretokenizer.h"

namespace retort {

// GGUF tokenizer.ggml.token_type values.
enum class GgufTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The pieces a GGUF file stores, enough to rebuild the model's tokenizer.
struct TokenizerParts {
  std::vector<std::string> tokens;   // id -> piece (byte-level characters)
  std::vector<std::string> merges;   // "left right", rank = index
  std::vector<int32_t> token_types;  // GgufTokenType per id; empty = all normal
  std::string pre_tokenizer;         // tokenizer.ggml.pre, e.g. "llama-bpe", "qwen2"
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = false;  // tokenizer.ggml.add_bos_token
  bool add_eos = false;  // tokenizer.ggml.add_eos_token
};

struct EncodeOptions {
  // Run the post-processor (e.g. Llama-3 prepends <|begin_of_text|>).
  bool add_special_tokens = true;
  // transformers' split_special_tokens: special added tokens written in the
  // text are tokenized as plain text instead of becoming their ids. Use it on
  // untrusted text so a user cannot inject <|im_end|>.
  bool split_special_tokens = false;
  // Skip the post-processor's leading tokens (BOS) when the encoded text
  // already starts with them, e.g. a rendered chat template that begins with
  // "<|begin_of_text|>". The reference library does not do this; it yields
  // a doubled BOS.
  bool avoid_double_bos = false;
};

class Tokenizer {
 public:
  // Loads a Hugging Face tokenizer.json. Errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // `source` names the text in error messages (a path or "<memory>").
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonString(
      const std::string& json, const std::string& source = "<memory>");
  // Builds the tokenizer from GGUF metadata. Control (3) and user-defined (4)
  // tokens become added tokens (control ones special); the pre-tokenizer
  // name selects the regexes, the normalizer (NFC for qwen2) and
  // ignore_merges (llama-bpe), as in the models' tokenizer.json files.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromParts(const TokenizerParts& parts);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Reads bos_token / eos_token (string or {"content": ...}) from a
  // tokenizer_config.json and sets bos_id()/eos_id(). The post-processor is
  // left as tokenizer.json defines it: transformers 5 ignores the config's
  // add_bos_token for byte-level tokenizers too (checked by make_fixtures.py);
  // the files of Llama-3 and R1-Distill already carry their BOS template.
  absl::Status LoadSpecialTokensFromConfig(const std::string& path);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options) const;
  // Invalid ids are skipped. Bytes that do not form UTF-8 (a token cut inside
  // a character) become U+FFFD, as in the reference.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // The piece as stored (byte-level characters, e.g. "Ġthe"); "" if unknown.
  std::string TokenText(int32_t id) const;
  // Id of a stored piece or added token's content; -1 if none.
  int32_t TokenId(std::string_view piece) const;
  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const { return vocab_size_; }
  bool IsSpecial(int32_t id) const;
  bool IsAddedToken(int32_t id) const;

  // -1 when unknown. Taken from the post-processor / GGUF parts, and from
  // tokenizer_config.json after LoadSpecialTokensFromConfig.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  // The ids the post-processor puts before / after the text (single sequence).
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }
  // True if ids begin with the post-processor's non-empty prefix twice in a row.
  bool HasDoubleBos(const std::vector<int32_t>& ids) const;
  // True if text starts with the content of the prefix tokens (e.g. a rendered
  // template that already carries "<|begin_of_text|>").
  bool StartsWithBos(std::string_view text) const;

  // For tests and diagnostics: "NFC", "Split(...) ByteLevel", ...
  std::string DescribeNormalizer() const { return normalizer_.Describe(); }
  std::string DescribePreTokenizer() const { return pre_tokenizer_.Describe(); }
  bool ignore_merges() const { return ignore_merges_; }

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
    bool normalized;  // matched against normalized text rather than raw text
    bool lstrip, rstrip, single_word;
  };
  // Ordered by content for matching.
  struct AddedMatcher;

  Tokenizer();
  absl::Status Finish(const std::string& source);
  absl::Status AddMerge(const std::string& left, const std::string& right, int32_t rank,
                        const std::string& where);
  void EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const;
  void EncodeWord(const std::string& word, std::vector<int32_t>* ids) const;
  void Bpe(const std::string& word, std::vector<int32_t>* ids) const;
  // Splits text around added tokens; calls fn(segment) for plain text and
  // pushes the ids of tokens matched. `normalized_pass` selects which added
  // tokens are considered.
  void SplitOnAdded(std::string_view text, bool normalized_pass, bool split_special,
                    std::vector<int32_t>* ids) const;

  // Vocabulary (model) and added tokens.
  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // includes added tokens' content
  std::vector<uint8_t> id_flags_;         // kAddedFlag | kSpecialFlag
  std::vector<AddedToken> added_;
  absl::flat_hash_map<std::string, int32_t> added_ids_;  // content -> id
  std::unique_ptr<AddedMatcher> raw_matcher_, normalized_matcher_;
  // Merges: (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  // Byte-level: id of the one-character token of each byte, or -1.
  int32_t byte_ids_[256];
  int32_t unk_id_ = -1;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  bool byte_level_decoder_ = true;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  int32_t bos_id_ = -1, eos_id_ = -1;
  int32_t vocab_size_ = 0;

  // Word -> ids cache (bounded); BPE on a long word is the costly part.
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace retort

#endif  // RETORT_TEXT_TOKENIZER_H_
