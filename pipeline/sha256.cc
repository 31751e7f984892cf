#include "pipeline/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace retort::pipeline {
namespace {

// SHA-256 from the default provider, fetched once: EVP_sha256() would look
// it up again on every Sha256 (a lock and a table search per fingerprint).
const EVP_MD* Sha256Md() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

// libcrypto fails SHA-256 only when it cannot allocate or has no provider
// for it; the digest API has no error path, and a wrong hash would silently
// break every resume decision, so stop loudly.
void CheckEvp(int ok, const char* what) {
  if (ok == 1) return;
  std::fprintf(stderr, "retort: OpenSSL %s failed for SHA-256\n", what);
  std::abort();
}

}  // namespace

void Sha256::FreeContext::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  CheckEvp(ctx_ != nullptr, "EVP_MD_CTX_new");
  CheckEvp(EVP_DigestInit_ex(ctx_.get(), Sha256Md(), nullptr), "EVP_DigestInit_ex");
}

Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t n) {
  if (n == 0) return;
  CheckEvp(EVP_DigestUpdate(ctx_.get(), data, n), "EVP_DigestUpdate");
}

std::array<uint8_t, 32> Sha256::Digest() {
  std::array<uint8_t, 32> out;
  unsigned int len = 0;
  CheckEvp(EVP_DigestFinal_ex(ctx_.get(), out.data(), &len), "EVP_DigestFinal_ex");
  CheckEvp(len == out.size(), "digest length");
  return out;
}

std::string Sha256::HexDigest() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint8_t byte : Digest()) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 15]);
  }
  return hex;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (f == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open for hashing: ", std::strerror(errno)));
  }
  Sha256 h;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) h.Update(buf.data(), n);
  if (std::ferror(f.get()))
    return absl::DataLossError(absl::StrCat(path, ": read error while hashing"));
  return h.HexDigest();
}

}  // namespace retort::pipeline
