// SHA-256 (FIPS 180-4) for the provenance of `retort run`: fingerprints of
// stage settings and content hashes of the files and folders a stage reads
// and writes. Incremental: Update() any number of times, then HexDigest().
// The compression runs in OpenSSL's libcrypto (EVP), which uses the CPU's
// SHA extensions where there are any: hashing a model folder is disk-bound,
// not hash-bound.
// Thread-safety: one Sha256 per thread; the free functions are reentrant.
#ifndef RETORT_PIPELINE_SHA256_H_
#define RETORT_PIPELINE_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

// OpenSSL's EVP_MD_CTX, declared here so that callers need no OpenSSL headers.
struct evp_md_ctx_st;

namespace retort::pipeline {

class Sha256 {
 public:
  Sha256();
  Sha256(Sha256&&) noexcept = default;
  Sha256& operator=(Sha256&&) noexcept = default;
  ~Sha256();
  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // The digest of everything passed to Update(). REQUIRES: called once.
  std::array<uint8_t, 32> Digest();
  // Digest() as 64 lowercase hex digits.
  std::string HexDigest();

 private:
  struct FreeContext {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, FreeContext> ctx_;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// SHA-256 of a file's bytes (streamed, not held in memory).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_SHA256_H_
