#include "pipeline/sha256.h"

#include <unistd.h>

#include <array>
#include <filesystem>
#include <string>

#include "absl/strings/str_format.h"
#include "core/file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pipeline/provenance.h"

namespace retort::pipeline {
namespace {
namespace fs = std::filesystem;

const char kFixtures[] = "tests/reference/pipeline";

nlohmann::json Expected() {
  return nlohmann::json::parse(*ReadFileToString(std::string(kFixtures) + "/expected.json"));
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + 3) % 256);
  return s;
}

TEST(Sha256Test, Fips180Examples) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, MatchesHashlibAroundPaddingBoundaries) {
  for (const auto& [length, hex] : Expected()["pattern_sha256"].items()) {
    EXPECT_EQ(Sha256Hex(Pattern(std::stoul(length))), hex.get<std::string>()) << length;
  }
}

TEST(Sha256Test, MatchesHashlibOnRepeatedTexts) {
  for (const auto& c : Expected()["text_sha256"]) {
    std::string text;
    for (int i = 0; i < c["repeat"].get<int>(); ++i) text += c["text"].get<std::string>();
    EXPECT_EQ(Sha256Hex(text), c["sha256"].get<std::string>())
        << '"' << c["text"].get<std::string>() << "\" x " << c["repeat"];
  }
}

TEST(Sha256Test, MillionBytesInUnevenPiecesMatchHashlib) {
  const std::string data = Pattern(1000000);
  Sha256 h;
  // Pieces that straddle block boundaries in every phase, then the rest.
  size_t at = 0;
  for (size_t piece = 1; at + piece <= data.size(); at += piece, piece = piece * 3 % 4099 + 1) {
    h.Update(data.data() + at, piece);
  }
  h.Update(data.data() + at, data.size() - at);
  EXPECT_EQ(h.HexDigest(), Expected()["pattern_sha256"]["1000000"].get<std::string>());
}

TEST(Sha256Test, DigestIsTheHexDigestsBytes) {
  Sha256 raw, hex;
  raw.Update("abc");
  hex.Update("abc");
  const std::array<uint8_t, 32> d = raw.Digest();
  std::string from_bytes;
  for (uint8_t b : d) from_bytes += absl::StrFormat("%02x", b);
  EXPECT_EQ(from_bytes, hex.HexDigest());
}

TEST(Sha256Test, IncrementalUpdatesInAnySplitGiveTheSameDigest) {
  const std::string data = Pattern(300);
  const std::string whole = Sha256Hex(data);
  for (size_t split : {0, 1, 55, 63, 64, 65, 128, 299, 300}) {
    Sha256 h;
    h.Update(data.substr(0, split));
    h.Update(data.substr(split));
    EXPECT_EQ(h.HexDigest(), whole) << split;
  }
  Sha256 bytewise;
  for (char c : data) bytewise.Update(&c, 1);
  EXPECT_EQ(bytewise.HexDigest(), whole);
}

TEST(Sha256Test, FileHashEqualsContentHash) {
  nlohmann::json e = Expected();
  for (const auto& [rel, hex] : e["files"].items()) {
    auto h = Sha256File(std::string(kFixtures) + "/tree/" + rel);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(*h, hex.get<std::string>()) << rel;
  }
  auto missing = Sha256File("no/such/file");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("no/such/file"), std::string::npos);
}

TEST(HashPathTest, FolderHashFollowsTheRunDirectoryContract) {
  nlohmann::json e = Expected();
  auto d = HashPath(std::string(kFixtures) + "/tree");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->sha256, e["tree_sha256"].get<std::string>());
  EXPECT_EQ(d->bytes, e["tree_bytes"].get<uint64_t>());
  // A trailing slash names the same folder.
  EXPECT_EQ(HashPath(std::string(kFixtures) + "/tree/")->sha256, d->sha256);
  // A file is hashed as its bytes.
  auto f = HashPath(std::string(kFixtures) + "/tree/config.json");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->sha256, e["files"]["config.json"].get<std::string>());
}

class ScratchDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pipeline_sha_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& rel, const std::string& text) {
    fs::create_directories((dir_ / rel).parent_path());
    ASSERT_TRUE(WriteFileAtomically((dir_ / rel).string(), text).ok());
  }
  fs::path dir_;
};

using HashPathScratchTest = ScratchDir;
using Sha256FileTest = ScratchDir;

TEST_F(Sha256FileTest, FileLongerThanTheReadBufferMatchesHashlib) {
  const nlohmann::json c = Expected()["chunked_file"];
  Write("big.bin", Pattern(c["bytes"].get<size_t>()));
  auto h = Sha256File((dir_ / "big.bin").string());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, c["sha256"].get<std::string>());
}

TEST_F(HashPathScratchTest, FolderHashChangesWithContentsNamesAndNewFilesOnly) {
  Write("m/a.txt", "one");
  Write("m/b/c.txt", "two");
  const std::string m = (dir_ / "m").string();
  const std::string base = HashPath(m)->sha256;
  EXPECT_EQ(HashPath(m)->sha256, base);  // stable
  fs::create_directories(dir_ / "m" / "empty");
  EXPECT_EQ(HashPath(m)->sha256, base);  // empty folders hold no files
  Write("m/a.txt", "One");
  const std::string edited = HashPath(m)->sha256;
  EXPECT_NE(edited, base);
  Write("m/a.txt", "one");
  EXPECT_EQ(HashPath(m)->sha256, base);  // content, not timestamps
  fs::rename(dir_ / "m" / "a.txt", dir_ / "m" / "a2.txt");
  EXPECT_NE(HashPath(m)->sha256, base);
  fs::rename(dir_ / "m" / "a2.txt", dir_ / "m" / "a.txt");
  Write("m/new.txt", "");
  EXPECT_NE(HashPath(m)->sha256, base);
  EXPECT_FALSE(HashPath((dir_ / "nothing").string()).ok());
}

TEST_F(HashPathScratchTest, ModelBytesCountsWeightFilesOnly) {
  Write("hf/model.safetensors", std::string(100, 'x'));
  Write("hf/model-2.safetensors", std::string(20, 'x'));
  Write("hf/tokenizer.json", std::string(999, 'x'));
  Write("m.gguf", std::string(77, 'x'));
  EXPECT_EQ(*ModelBytes((dir_ / "hf").string()), 120u);
  EXPECT_EQ(*ModelBytes((dir_ / "m.gguf").string()), 77u);
  EXPECT_FALSE(ModelBytes((dir_ / "none").string()).ok());
}

}  // namespace
}  // namespace retort::pipeline
