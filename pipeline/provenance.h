// Provenance of a `retort run`: content hashes of files and folders, and
// the records of RUN_DIR/manifest.json and RUN_DIR/<stage>/provenance.json
// (the run directory contract of issue 8; docs in pipeline/README.md).
#ifndef RETORT_PIPELINE_PROVENANCE_H_
#define RETORT_PIPELINE_PROVENANCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort::pipeline {

struct PathDigest {
  std::string sha256;  // lowercase hex
  uint64_t bytes = 0;  // file size, or the sum over a folder's files
};

// A file's SHA-256, or a folder's: SHA-256 over its regular files (found
// recursively, symlinks followed) sorted by relative path ('/'-separated,
// compared bytewise), each contributing "PATH\0SHA256HEX\n".
absl::StatusOr<PathDigest> HashPath(const std::string& path);

// Bytes of a model's weights: the file's size for a .gguf (any file), the
// sum of the *.safetensors files for a folder.
absl::StatusOr<uint64_t> ModelBytes(const std::string& path);

// One file or folder a stage read or wrote.
struct FileRecord {
  std::string path;  // relative to RUN_DIR, or absolute when outside it
  std::string sha256;
  int64_t bytes = -1;  // outputs only (-1: not written)
};

// One stage's entry of manifest.json (and its provenance.json).
struct StageRecord {
  std::string name, kind;
  std::string status;  // "done", "skipped" (outputs reused) or "failed"
  std::string fingerprint;
  std::string started;  // UTC, "2026-11-23T21:00:00Z"
  double seconds = 0;
  nlohmann::ordered_json settings = nlohmann::ordered_json::object();
  std::vector<FileRecord> inputs, outputs;
  nlohmann::ordered_json metrics = nlohmann::ordered_json::object();  // numbers only
  std::string label;
  std::string error;  // failed stages: the command's message

  nlohmann::ordered_json ToJson() const;
  // `where` names the file in errors.
  static absl::StatusOr<StageRecord> FromJson(const nlohmann::ordered_json& j,
                                              const std::string& where);
};

struct Manifest {
  std::string recipe_name, recipe_path, recipe_sha256;
  std::string retort_version;
  // What ran it: the CPU and the kernel paths (MachineDescription()). Training
  // is deterministic for one SIMD path, not across paths (AVX-512 vs AVX2).
  std::string machine;
  std::string status;  // "running", "done" or "failed"
  std::vector<StageRecord> stages;

  nlohmann::ordered_json ToJson() const;
  static absl::StatusOr<Manifest> FromJson(const nlohmann::ordered_json& j,
                                           const std::string& where);
};

// Atomic JSON writes (temporary file, fsync, rename) and checked reads.
absl::Status WriteManifest(const std::string& path, const Manifest& manifest);
absl::StatusOr<Manifest> ReadManifest(const std::string& path);
absl::Status WriteProvenance(const std::string& path, const StageRecord& record);
absl::StatusOr<StageRecord> ReadProvenance(const std::string& path);

// The fingerprint of a stage run: SHA-256 over the retort version, the
// stage's settings (deterministic JSON, the label left out: it is only a
// name for tables) and the SHA-256 of every input in order.
std::string StageFingerprint(const std::string& retort_version,
                             const nlohmann::ordered_json& settings,
                             const std::vector<FileRecord>& inputs);

// "CPU model | the default backend's Describe()", e.g. "AMD EPYC 7B13 | cpu
// (avx2 sgemm, avx2 integer dots, 2 threads)".
std::string MachineDescription();

// "YYYY-MM-DDTHH:MM:SSZ" for now.
std::string UtcNow();

}  // namespace retort::pipeline

#endif  // RETORT_PIPELINE_PROVENANCE_H_
