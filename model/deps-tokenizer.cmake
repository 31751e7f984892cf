# Unicode normalization (NFC for Qwen2) comes from utf8proc (Debian: libutf8proc-dev).
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
list(APPEND RETORT_TOKENIZER_DEPS PkgConfig::UTF8PROC absl::flat_hash_map absl::strings absl::status absl::statusor)
