// SHA-256 throughput of pipeline/sha256.h (OpenSSL's EVP, which uses the
// CPU's SHA extensions where there are any) beside the hand-written FIPS
// 180-4 code it replaced (copied below as the baseline), on one buffer of
// --mib MiB, single-threaded. The two are timed alternately, --rounds times
// each, so that load from other processes hits both alike; both digests are
// checked against each other and a FIPS 180-2 example before anything is
// timed. Provenance hashes every file a stage reads and writes, models
// included, so this is the rate a resume check runs at when the file is in
// the page cache.
// Output: one JSON object on stdout (and --out FILE): the CPU (model name,
// sha_ni), best and median seconds and GB/s of each, and the EVP speedup
// (hand-written time / EVP time).
//
//   sha256_bench [--mib 256] [--rounds 5] [--out FILE]
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "benchmarks/bench_flags.h"
#include "benchmarks/bench_output.h"
#include "nlohmann/json.hpp"
#include "pipeline/sha256.h"

namespace retort {
namespace {

// The hand-written SHA-256 that pipeline/sha256.cc held before it moved to
// OpenSSL (commit aa7a95c), unchanged but for the class name.
class HandWrittenSha256 {
 public:
  HandWrittenSha256();
  void Update(const void* data, size_t n);
  std::array<uint8_t, 32> Digest();

 private:
  void Compress(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// First 32 bits of the fractional parts of the cube roots of the first 64 primes.
constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

HandWrittenSha256::HandWrittenSha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void HandWrittenSha256::Compress(const uint8_t* block) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t{block[4 * i]} << 24) | (uint32_t{block[4 * i + 1]} << 16) |
           (uint32_t{block[4 * i + 2]} << 8) | uint32_t{block[4 * i + 3]};
  }
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t s1 = Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25);
    const uint32_t choose = (e & f) ^ (~e & g);
    const uint32_t t1 = h + s1 + choose + kRoundConstants[i] + w[i];
    const uint32_t s0 = Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22);
    const uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
    const uint32_t t2 = s0 + majority;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a;
  h_[1] += b;
  h_[2] += c;
  h_[3] += d;
  h_[4] += e;
  h_[5] += f;
  h_[6] += g;
  h_[7] += h;
}

void HandWrittenSha256::Update(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_bytes_ += n;
  if (buffered_ > 0) {
    const size_t take = std::min(n, buffer_.size() - buffered_);
    std::memcpy(buffer_.data() + buffered_, p, take);
    buffered_ += take;
    p += take;
    n -= take;
    if (buffered_ < buffer_.size()) return;
    Compress(buffer_.data());
    buffered_ = 0;
  }
  for (; n >= 64; p += 64, n -= 64) Compress(p);
  std::memcpy(buffer_.data(), p, n);
  buffered_ = n;
}

std::array<uint8_t, 32> HandWrittenSha256::Digest() {
  const uint64_t bits = total_bytes_ * 8;
  // Padding: 0x80, zeros up to 56 mod 64, then the bit length big-endian.
  uint8_t pad[72] = {0x80};
  const size_t pad_len = (buffered_ < 56 ? 56 : 120) - buffered_;
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  Update(pad, pad_len + 8);
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(h_[i] >> (24 - 8 * j));
  }
  return out;
}

std::string Hex(const std::array<uint8_t, 32>& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t byte : digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 15]);
  }
  return hex;
}

std::string HandWrittenHex(const void* data, size_t n) {
  HandWrittenSha256 h;
  h.Update(data, n);
  return Hex(h.Digest());
}

std::string EvpHex(const void* data, size_t n) {
  pipeline::Sha256 h;
  h.Update(data, n);
  return h.HexDigest();
}

struct Timing {
  std::vector<double> seconds;
  std::string digest;
};

nlohmann::ordered_json Summary(const Timing& t, size_t bytes) {
  const double best = *std::min_element(t.seconds.begin(), t.seconds.end());
  const double median = Median(t.seconds);
  return {{"best_seconds", best},
          {"median_seconds", median},
          {"best_gbps", bytes / best / 1e9},
          {"median_gbps", bytes / median / 1e9},
          {"sha256", t.digest}};
}

int Main(int argc, char** argv) {
  int64_t mib = 256;
  int rounds = 5;
  std::string out_path;
  BenchArgs args("sha256_bench");
  args.Add()("mib", po::value(&mib)->default_value(mib), "MiB hashed per timing")(
      "rounds", po::value(&rounds)->default_value(rounds), "alternating rounds per implementation");
  args.AddOut(&out_path);
  args.Parse(&argc, argv, UnknownFlags::kError);
  if (mib < 1) args.Fail("--mib " + std::to_string(mib) + ": expected a positive size");
  if (rounds < 1) args.Fail("--rounds " + std::to_string(rounds) + ": expected at least 1");

  // Check before timing: the FIPS 180-2 "abc" example, then agreement on the
  // whole buffer (an odd length, so the final partial block is exercised).
  const std::string kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  if (HandWrittenHex("abc", 3) != kAbc || EvpHex("abc", 3) != kAbc) {
    std::cerr << "sha256_bench: a SHA-256 of \"abc\" is wrong\n";
    return 1;
  }
  const size_t bytes = (static_cast<size_t>(mib) << 20) + 13;
  std::vector<uint8_t> data(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>((i * 7 + 3) % 256);

  Timing hand, evp;
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    hand.digest = HandWrittenHex(data.data(), bytes);
    hand.seconds.push_back(Since(t));
    t = Clock::now();
    evp.digest = EvpHex(data.data(), bytes);
    evp.seconds.push_back(Since(t));
  }
  if (hand.digest != evp.digest) {
    std::cerr << "sha256_bench: the digests differ: hand-written " << hand.digest << ", EVP "
              << evp.digest << "\n";
    return 1;
  }
  const auto best = [](const Timing& t) {
    return *std::min_element(t.seconds.begin(), t.seconds.end());
  };
  nlohmann::ordered_json out = {
      {"cpu", {{"model_name", CpuModelName()}, {"sha_ni", CpuHasFlag("sha_ni")}}},
      {"openssl", OpenSSL_version(OPENSSL_VERSION)},
      {"bytes", bytes},
      {"rounds", rounds},
      {"hand_written", Summary(hand, bytes)},
      {"openssl_evp", Summary(evp, bytes)},
      {"evp_speedup",
       {{"best", best(hand) / best(evp)}, {"median", Median(hand.seconds) / Median(evp.seconds)}}}};
  EmitBenchJson(out, out_path);
  return 0;
}

}  // namespace
}  // namespace retort

int main(int argc, char** argv) { return retort::Main(argc, argv); }
