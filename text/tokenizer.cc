#include "text/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "text/unicode.h"

namespace retort {
namespace {

constexpr uint8_t kAddedFlag = 1;
constexpr uint8_t kSpecialFlag = 2;
// Words longer than this are encoded without caching; the cache is emptied
// when it reaches kMaxCacheEntries.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

absl::Status Bad(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

// Prefixes a status message with the source, keeping its code.
absl::Status WithSource(const std::string& source, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(source, ": ", s.message()));
}

bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool IsWordChar(char32_t c) {
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  return !IsWhitespace(c);  // approximation: non-ASCII non-space counts as a word char
}

// The code point ending just before byte offset i (0 if none).
char32_t CharBefore(std::string_view s, size_t i) {
  if (i == 0) return 0;
  char32_t cp = 0;
  return DecodeUtf8Char(s, PrevUtf8CharStart(s, i), &cp) > 0 ? cp : 0;
}

}  // namespace

// Leftmost-longest matching of added-token contents.
struct Tokenizer::AddedMatcher {
  // Candidates by first byte, longest first.
  std::vector<std::vector<const AddedToken*>> by_first_byte =
      std::vector<std::vector<const AddedToken*>>(256);
  bool empty = true;

  void Add(const AddedToken* t) {
    if (t->content.empty()) return;
    by_first_byte[static_cast<unsigned char>(t->content[0])].push_back(t);
    empty = false;
  }
  void Sort() {
    for (auto& v : by_first_byte) {
      std::stable_sort(v.begin(), v.end(), [](const AddedToken* a, const AddedToken* b) {
        return a->content.size() > b->content.size();
      });
    }
  }
  // Finds the first (leftmost, then longest) match at or after `from`.
  // Returns false if none. *begin/*end are the match's byte range after
  // lstrip/rstrip widening, never reaching before `from`.
  bool Find(std::string_view text, size_t from, bool split_special, const AddedToken** token,
            size_t* begin, size_t* end) const {
    for (size_t i = from; i < text.size(); ++i) {
      const auto& candidates = by_first_byte[static_cast<unsigned char>(text[i])];
      for (const AddedToken* t : candidates) {
        if (split_special && t->special) continue;
        if (t->content.size() > text.size() - i) continue;
        if (std::memcmp(text.data() + i, t->content.data(), t->content.size()) != 0) continue;
        size_t b = i, e = i + t->content.size();
        if (t->single_word) {
          char32_t after = 0;
          if (e < text.size()) DecodeUtf8Char(text, e, &after);
          if ((after != 0 && IsWordChar(after)) || IsWordChar(CharBefore(text, b))) continue;
        }
        if (t->lstrip) {
          while (b > from) {
            const char32_t c = CharBefore(text, b);
            if (c == 0 || !IsWhitespace(c)) break;
            b = std::max(PrevUtf8CharStart(text, b), from);
          }
        }
        if (t->rstrip) {
          char32_t c = 0;
          while (e < text.size()) {
            const int len = DecodeUtf8Char(text, e, &c);
            if (len == 0 || !IsWhitespace(c)) break;
            e += len;
          }
        }
        *token = t;
        *begin = b;
        *end = e;
        return true;
      }
    }
    return false;
  }
};

Tokenizer::Tokenizer() { std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1); }
Tokenizer::~Tokenizer() = default;

// ------------------------------------------------------------------- loading

namespace {

// Reads "a b" or ["a", "b"].
absl::Status ParseMerge(const nlohmann::json& m, size_t index, std::string* left,
                        std::string* right) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.merges[", index, "] = \"", s, "\": expected two tokens separated by one space"));
    }
    *left = s.substr(0, space);
    *right = s.substr(space + 1);
    return absl::OkStatus();
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    *left = m[0].get<std::string>();
    *right = m[1].get<std::string>();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "model.merges[", index, "]: expected a string \"a b\" or a pair [\"a\", \"b\"]"));
}

bool JsonBool(const nlohmann::json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->is_boolean() ? it->get<bool>() : fallback;
}

}  // namespace

absl::Status Tokenizer::AddMerge(const std::string& left, const std::string& right, int32_t rank,
                                 const std::string& where) {
  auto l = vocab_.find(left);
  if (l == vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": token \"", left, "\" is not in the vocabulary"));
  }
  auto r = vocab_.find(right);
  if (r == vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": token \"", right, "\" is not in the vocabulary"));
  }
  auto m = vocab_.find(left + right);
  if (m == vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": merged token \"", left, right, "\" is not in the vocabulary"));
  }
  // Like the reference, a repeated pair keeps its last rank.
  merges_[PairKey(l->second, r->second)] = {rank, m->second};
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return FromJsonString(*text, path);
}

namespace {

struct PostProcessorIds {
  std::vector<int32_t> prefix, suffix;
};

absl::Status ParsePostProcessor(const nlohmann::json& j, int depth, PostProcessorIds* out) {
  if (j.is_null()) return absl::OkStatus();
  if (depth > 8) return absl::InvalidArgumentError("post_processor: nested too deeply");
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("post_processor: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) {
      return absl::InvalidArgumentError("post_processor Sequence: missing array \"processors\"");
    }
    for (const auto& p : j["processors"]) RETURN_IF_ERROR(ParsePostProcessor(p, depth + 1, out));
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array()) {
      return absl::InvalidArgumentError(
          "post_processor TemplateProcessing: missing array \"single\"");
    }
    const nlohmann::json empty = nlohmann::json::object();
    const nlohmann::json& specials = j.contains("special_tokens") && j["special_tokens"].is_object()
                                         ? j["special_tokens"]
                                         : empty;
    bool seen_sequence = false;
    for (const auto& item : j["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id") ||
          !item["SpecialToken"]["id"].is_string()) {
        return absl::InvalidArgumentError(
            "post_processor TemplateProcessing: each \"single\" item must be a Sequence or a "
            "SpecialToken with a string \"id\"");
      }
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") ||
          !specials[name]["ids"].is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor TemplateProcessing: special token \"", name,
                         "\" has no entry with \"ids\" in \"special_tokens\""));
      }
      for (const auto& id : specials[name]["ids"]) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
          return absl::InvalidArgumentError(absl::StrCat(
              "post_processor TemplateProcessing: special token \"", name, "\" has a bad id"));
        }
        (seen_sequence ? out->suffix : out->prefix).push_back(id.get<int32_t>());
      }
    }
    return absl::OkStatus();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 ||
          !j[key][1].is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor ", type, ": \"", key, "\" must be [token, id]"));
      }
    }
    out->prefix.push_back(j["cls"][1].get<int32_t>());
    out->suffix.push_back(j["sep"][1].get<int32_t>());
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("post_processor type \"", type,
                   "\" is not supported (supported: ByteLevel, TemplateProcessing, Sequence, "
                   "RobertaProcessing, BertProcessing)"));
}

// Returns whether the decoder is byte-level (false: tokens joined by spaces).
absl::StatusOr<bool> ParseDecoder(const nlohmann::json& j) {
  if (j.is_null()) return false;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("decoder: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return true;
  if (type == "Sequence" && j.contains("decoders") && j["decoders"].is_array() &&
      j["decoders"].size() == 1) {
    return ParseDecoder(j["decoders"][0]);
  }
  return absl::UnimplementedError(
      absl::StrCat("decoder type \"", type, "\" is not supported (supported: ByteLevel)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonString(const std::string& json,
                                                                     const std::string& source) {
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json, source));
  if (!j.is_object()) return Bad(source, "expected a JSON object at the top level");
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  try {
    // ---- model
    if (!j.contains("model") || !j["model"].is_object()) {
      return Bad(source, "missing object \"model\"");
    }
    const nlohmann::json& model = j["model"];
    if (model.contains("type")) {
      if (!model["type"].is_string()) return Bad(source, "model.type must be a string");
      const std::string type = model["type"].get<std::string>();
      if (type != "BPE") {
        return absl::UnimplementedError(absl::StrCat(
            source, ": model.type \"", type, "\" is not supported (only byte-level \"BPE\")"));
      }
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) {
      return Bad(source, "model.vocab: missing or not an object of token -> id");
    }
    if (!model.contains("merges") || !model["merges"].is_array()) {
      return Bad(source, "model.merges: missing or not an array");
    }
    if (JsonBool(model, "byte_fallback", false)) {
      return absl::UnimplementedError(
          absl::StrCat(source, ": model.byte_fallback (SentencePiece-style BPE) is not supported"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null() &&
          !(model[key].is_string() && model[key].get<std::string>().empty())) {
        return absl::UnimplementedError(absl::StrCat(source, ": model.", key, " is not supported"));
      }
    }
    if (model.contains("dropout") && model["dropout"].is_number() &&
        model["dropout"].get<double>() > 0) {
      return absl::UnimplementedError(absl::StrCat(source, ": model.dropout > 0 is not supported"));
    }
    t->ignore_merges_ = JsonBool(model, "ignore_merges", false);
    t->fuse_unk_ = JsonBool(model, "fuse_unk", false);

    int32_t max_id = -1;
    t->vocab_.reserve(model["vocab"].size());
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
          it.value().get<int64_t>() >= INT32_MAX) {
        return Bad(source, absl::StrCat("model.vocab[\"", it.key(),
                                        "\"]: expected a non-negative integer id"));
      }
      const int32_t id = it.value().get<int32_t>();
      t->vocab_.emplace(it.key(), id);
      max_id = std::max(max_id, id);
    }
    // ---- added tokens
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) return Bad(source, "added_tokens must be an array");
      size_t index = 0;
      for (const auto& a : j["added_tokens"]) {
        const std::string where = absl::StrCat("added_tokens[", index++, "]");
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
            a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() >= INT32_MAX ||
            !a.contains("content") || !a["content"].is_string()) {
          return Bad(source, absl::StrCat(where, ": expected {\"id\": int, \"content\": string}"));
        }
        AddedToken tok;
        tok.id = a["id"].get<int32_t>();
        tok.content = a["content"].get<std::string>();
        if (tok.content.empty()) return Bad(source, absl::StrCat(where, ": empty content"));
        tok.special = JsonBool(a, "special", false);
        // The reference defaults `normalized` to the opposite of `special`.
        tok.normalized = JsonBool(a, "normalized", !tok.special);
        tok.lstrip = JsonBool(a, "lstrip", false);
        tok.rstrip = JsonBool(a, "rstrip", false);
        tok.single_word = JsonBool(a, "single_word", false);
        max_id = std::max(max_id, tok.id);
        t->added_.push_back(std::move(tok));
      }
    }
    // Ids index dense tables; refuse ones far beyond any real vocabulary
    // rather than allocating gigabytes for a corrupt file.
    constexpr int32_t kMaxId = 1 << 24;
    if (max_id >= kMaxId) {
      return Bad(source,
                 absl::StrCat("token id ", max_id, " is implausibly large (limit ", kMaxId, ")"));
    }
    t->vocab_size_ = max_id + 1;
    t->id_to_token_.assign(t->vocab_size_, std::string());
    t->id_flags_.assign(t->vocab_size_, 0);
    for (const auto& [piece, id] : t->vocab_) t->id_to_token_[id] = piece;
    // ---- merges
    const auto& merges = model["merges"];
    t->merges_.reserve(merges.size());
    std::string left, right;
    for (size_t i = 0; i < merges.size(); ++i) {
      absl::Status s = ParseMerge(merges[i], i, &left, &right);
      if (s.ok()) {
        s = t->AddMerge(left, right, static_cast<int32_t>(i),
                        absl::StrCat("model.merges[", i, "]"));
      }
      if (!s.ok()) return WithSource(source, s);
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const std::string unk = model["unk_token"].get<std::string>();
      auto it = t->vocab_.find(unk);
      if (it == t->vocab_.end()) {
        return Bad(source, absl::StrCat("model.unk_token \"", unk, "\" is not in the vocabulary"));
      }
      t->unk_id_ = it->second;
    }
    // ---- pipeline
    const nlohmann::json null_json;
    auto field = [&](const char* key) -> const nlohmann::json& {
      auto it = j.find(key);
      return it == j.end() ? null_json : *it;
    };
    auto normalizer = Normalizer::FromJson(field("normalizer"));
    if (!normalizer.ok()) return WithSource(source, normalizer.status());
    t->normalizer_ = std::move(*normalizer);
    auto pre = PreTokenizer::FromJson(field("pre_tokenizer"));
    if (!pre.ok()) return WithSource(source, pre.status());
    t->pre_tokenizer_ = std::move(*pre);
    PostProcessorIds post;
    absl::Status s = ParsePostProcessor(field("post_processor"), 0, &post);
    if (!s.ok()) return WithSource(source, s);
    t->prefix_ids_ = std::move(post.prefix);
    t->suffix_ids_ = std::move(post.suffix);
    auto decoder = ParseDecoder(field("decoder"));
    if (!decoder.ok()) return WithSource(source, decoder.status());
    t->byte_level_decoder_ = *decoder;
  } catch (const nlohmann::json::exception& e) {
    // Only reached for shapes the checks above did not foresee.
    return Bad(source, absl::StrCat("unexpected JSON structure: ", e.what()));
  }
  RETURN_IF_ERROR(t->Finish(source));
  return t;
}

absl::Status Tokenizer::Finish(const std::string& source) {
  for (const AddedToken& a : added_) {
    added_ids_.emplace(a.content, a.id);
    if (a.id >= vocab_size_) continue;
    id_to_token_[a.id] = a.content;
    id_flags_[a.id] |= kAddedFlag | (a.special ? kSpecialFlag : 0);
  }
  for (int32_t id : prefix_ids_) {
    if (id < 0 || id >= vocab_size_) {
      return Bad(source,
                 absl::StrCat("post-processor token id ", id, " is outside the vocabulary"));
    }
  }
  for (int32_t id : suffix_ids_) {
    if (id < 0 || id >= vocab_size_) {
      return Bad(source,
                 absl::StrCat("post-processor token id ", id, " is outside the vocabulary"));
    }
  }
  if (prefix_ids_.size() == 1) bos_id_ = prefix_ids_[0];
  raw_matcher_ = std::make_unique<AddedMatcher>();
  normalized_matcher_ = std::make_unique<AddedMatcher>();
  for (const AddedToken& a : added_) {
    // With no normalizer, "normalized" tokens match the raw text just the same.
    if (a.normalized && !normalizer_.empty()) {
      normalized_matcher_->Add(&a);
    } else {
      raw_matcher_->Add(&a);
    }
  }
  raw_matcher_->Sort();
  normalized_matcher_->Sort();
  const auto& table = ByteToUnicodeTable();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(table[b]);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromParts(const TokenizerParts& parts) {
  const std::string source = "GGUF tokenizer";
  if (parts.tokens.empty()) return Bad(source, "tokenizer.ggml.tokens is empty");
  if (!parts.token_types.empty() && parts.token_types.size() != parts.tokens.size()) {
    return Bad(source, absl::StrCat("tokenizer.ggml.token_type has ", parts.token_types.size(),
                                    " entries for ", parts.tokens.size(), " tokens"));
  }
  if (parts.tokens.size() >= static_cast<size_t>(INT32_MAX)) return Bad(source, "too many tokens");
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  auto pre = PreTokenizer::FromName(parts.pre_tokenizer);
  if (!pre.ok()) return WithSource(source, pre.status());
  t->pre_tokenizer_ = std::move(*pre);
  const std::string& name = parts.pre_tokenizer;
  if (name == "qwen2" || name == "deepseek-r1-qwen" || name == "megrez") {
    t->normalizer_.AddNormalForm(NormalForm::kNfc);
  }
  t->ignore_merges_ = name == "llama-bpe" || name == "llama3" || name == "llama-v3";
  const int32_t n = static_cast<int32_t>(parts.tokens.size());
  t->vocab_size_ = n;
  t->id_to_token_ = parts.tokens;
  t->id_flags_.assign(n, 0);
  t->vocab_.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    const int32_t type = parts.token_types.empty() ? 1 : parts.token_types[id];
    if (type == static_cast<int32_t>(GgufTokenType::kControl) ||
        type == static_cast<int32_t>(GgufTokenType::kUserDefined)) {
      AddedToken a;
      a.id = id;
      a.content = parts.tokens[id];
      a.special = type == static_cast<int32_t>(GgufTokenType::kControl);
      a.normalized = false;
      a.lstrip = a.rstrip = a.single_word = false;
      if (!a.content.empty()) t->added_.push_back(std::move(a));
      continue;
    }
    // First occurrence wins for duplicated pieces (padding tokens in some GGUFs).
    t->vocab_.emplace(parts.tokens[id], id);
  }
  std::string left, right;
  for (size_t i = 0; i < parts.merges.size(); ++i) {
    const std::string where = absl::StrCat("tokenizer.ggml.merges[", i, "]");
    absl::Status s = ParseMerge(nlohmann::json(parts.merges[i]), i, &left, &right);
    if (s.ok()) s = t->AddMerge(left, right, static_cast<int32_t>(i), where);
    if (!s.ok()) return WithSource(source, s);
  }
  for (int32_t id : {parts.bos_id, parts.eos_id}) {
    if (id >= n) return Bad(source, absl::StrCat("bos/eos id ", id, " is outside the vocabulary"));
  }
  if (parts.add_bos && parts.bos_id >= 0) t->prefix_ids_ = {parts.bos_id};
  if (parts.add_eos && parts.eos_id >= 0) t->suffix_ids_ = {parts.eos_id};
  RETURN_IF_ERROR(t->Finish(source));
  t->bos_id_ = parts.bos_id;
  t->eos_id_ = parts.eos_id;
  return t;
}

absl::Status Tokenizer::LoadSpecialTokensFromConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(text, path));
  if (!j.is_object()) return Bad(path, "expected a JSON object at the top level");
  auto token_id = [&](const char* key, int32_t* id) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return absl::OkStatus();
    std::string content;
    if (it->is_string()) {
      content = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      content = (*it)["content"].get<std::string>();
    } else {
      return Bad(path, absl::StrCat(key, ": expected a string or {\"content\": string}"));
    }
    const int32_t found = TokenId(content);
    if (found < 0) {
      return Bad(path, absl::StrCat(key, " \"", content, "\" is not in the vocabulary"));
    }
    *id = found;
    return absl::OkStatus();
  };
  int32_t bos = bos_id_, eos = eos_id_;
  RETURN_IF_ERROR(token_id("bos_token", &bos));
  RETURN_IF_ERROR(token_id("eos_token", &eos));
  bos_id_ = bos;
  eos_id_ = eos;
  return absl::OkStatus();
}

// ------------------------------------------------------------------ encoding

void Tokenizer::Bpe(const std::string& word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto push = [&](int32_t id) {
    const int32_t i = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, i - 1, -1, true});
    if (i > 0) symbols[i - 1].next = i;
  };
  const bool byte_level = pre_tokenizer_.byte_level();
  bool last_was_unk = false;
  auto push_unknown = [&]() {
    // Unknown characters become unk_token when there is one (fused when asked),
    // and are dropped otherwise, as in the reference.
    if (unk_id_ < 0) return;
    if (fuse_unk_ && last_was_unk) return;
    push(unk_id_);
    last_was_unk = true;
  };
  if (byte_level) {
    for (char c : word) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
      if (id < 0) {
        push_unknown();
      } else {
        push(id);
        last_was_unk = false;
      }
    }
  } else {
    char32_t cp;
    for (size_t i = 0; i < word.size();) {
      int len = DecodeUtf8Char(word, i, &cp);
      if (len == 0) len = 1;
      auto it = vocab_.find(absl::string_view(word.data() + i, len));
      if (it == vocab_.end()) {
        push_unknown();
      } else {
        push(it->second);
        last_was_unk = false;
      }
      i += len;
    }
  }
  if (symbols.empty()) return;

  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue(
      std::greater<Candidate>(), std::move(heap_storage));
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) {
      queue.push({it->second.first, pos, symbols[pos].id, symbols[next].id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& s = symbols[c.pos];
    if (!s.alive || s.next < 0 || s.id != c.left || symbols[s.next].id != c.right) continue;
    Symbol& right = symbols[s.next];
    s.id = merges_.find(PairKey(c.left, c.right))->second.second;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) symbols[s.next].prev = c.pos;
    consider(s.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void Tokenizer::EncodeWord(const std::string& word, std::vector<int32_t>* ids) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> out;
  const bool byte_level = pre_tokenizer_.byte_level();
  std::string mapped;
  if (byte_level) {
    mapped.reserve(word.size() * 2);
    AppendByteLevel(word, &mapped);
  }
  const std::string& piece = byte_level ? mapped : word;
  bool done = false;
  if (ignore_merges_) {
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      done = true;
    }
  }
  if (!done) Bpe(word, &out);
  ids->insert(ids->end(), out.begin(), out.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(word, std::move(out));
  }
}

void Tokenizer::EncodeSegment(std::string_view text, std::vector<int32_t>* ids) const {
  std::vector<std::string> words;
  pre_tokenizer_.Split(text, &words);
  for (const std::string& w : words) EncodeWord(w, ids);
}

void Tokenizer::SplitOnAdded(std::string_view text, bool normalized_pass, bool split_special,
                             std::vector<int32_t>* ids) const {
  const AddedMatcher& matcher = normalized_pass ? *normalized_matcher_ : *raw_matcher_;
  auto plain = [&](std::string_view segment) {
    if (segment.empty()) return;
    if (normalized_pass) {
      EncodeSegment(segment, ids);
    } else if (normalizer_.empty()) {
      SplitOnAdded(segment, true, split_special, ids);
    } else {
      const std::string normalized = normalizer_.Apply(segment);
      SplitOnAdded(normalized, true, split_special, ids);
    }
  };
  size_t pos = 0;
  const AddedToken* token = nullptr;
  size_t begin = 0, end = 0;
  while (!matcher.empty && matcher.Find(text, pos, split_special, &token, &begin, &end)) {
    plain(text.substr(pos, begin - pos));
    ids->push_back(token->id);
    pos = end;
  }
  plain(text.substr(pos));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  EncodeOptions options;
  options.add_special_tokens = add_special_tokens;
  return Encode(text, options);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> body;
  body.reserve(text.size() / 3 + 4);
  SplitOnAdded(text, false, options.split_special_tokens, &body);
  if (!options.add_special_tokens) return body;
  std::vector<int32_t> ids;
  ids.reserve(body.size() + prefix_ids_.size() + suffix_ids_.size());
  const bool skip_prefix = options.avoid_double_bos && !prefix_ids_.empty() &&
                           body.size() >= prefix_ids_.size() &&
                           std::equal(prefix_ids_.begin(), prefix_ids_.end(), body.begin());
  if (!skip_prefix) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

bool Tokenizer::HasDoubleBos(const std::vector<int32_t>& ids) const {
  const size_t n = prefix_ids_.size();
  if (n == 0 || ids.size() < 2 * n) return false;
  return std::equal(prefix_ids_.begin(), prefix_ids_.end(), ids.begin()) &&
         std::equal(prefix_ids_.begin(), prefix_ids_.end(), ids.begin() + n);
}

bool Tokenizer::StartsWithBos(std::string_view text) const {
  if (prefix_ids_.empty()) return false;
  std::string prefix;
  for (int32_t id : prefix_ids_) prefix += id_to_token_[id];
  return !prefix.empty() && text.substr(0, prefix.size()) == prefix;
}

// ------------------------------------------------------------------ decoding

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) continue;
    if (skip_special_tokens && (id_flags_[id] & kSpecialFlag)) continue;
    const std::string& token = id_to_token_[id];
    if (!byte_level_decoder_) {
      if (!first) bytes.push_back(' ');
      bytes += token;
      first = false;
      continue;
    }
    // Each token decodes through the byte table when all its characters are
    // byte characters, and stays as written otherwise (added tokens like
    // "<｜User｜>").
    const size_t mark = bytes.size();
    bool all_bytes = true;
    char32_t cp;
    for (size_t i = 0; i < token.size();) {
      const int len = DecodeUtf8Char(token, i, &cp);
      const int b = len > 0 ? UnicodeToByte(cp) : -1;
      if (b < 0) {
        all_bytes = false;
        break;
      }
      bytes.push_back(static_cast<char>(b));
      i += len;
    }
    if (!all_bytes) {
      bytes.resize(mark);
      bytes += token;
    }
  }
  return Utf8Lossy(bytes);
}

std::string Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return "";
  return id_to_token_[id];
}

int32_t Tokenizer::TokenId(std::string_view piece) const {
  const absl::string_view key(piece.data(), piece.size());
  if (auto added = added_ids_.find(key); added != added_ids_.end()) return added->second;
  auto it = vocab_.find(key);
  return it == vocab_.end() ? -1 : it->second;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size_ && (id_flags_[id] & kSpecialFlag);
}

bool Tokenizer::IsAddedToken(int32_t id) const {
  return id >= 0 && id < vocab_size_ && (id_flags_[id] & kAddedFlag);
}

}  // namespace retort
