// SHA-256 (FIPS 180-4) for the provenance of `retort run`: fingerprints of
// stage settings and content hashes of the files and folders a stage reads
// and writes. Incremental: Update() any number of times, then HexDigest().
// Thread-safety: one Sha256 per thread; the free functions are reentrant.
#ifndef RETORT_PIPELINE_SHA256_H_
#define RETORT_PIPELINE_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace retort::pipeline {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // The digest of everything passed to Update(). REQUIRES: called once.
  std::array<uint8_t, 32> Digest();
  // Digest() as 64 lowercase hex digits.
  std::string HexDigest();

 private:
  void Compress(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// SHA-256 of a file's bytes (streamed, not held in memory).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_SHA256_H_
