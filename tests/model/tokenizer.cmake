# Tokenizer tests read zstd-compressed real tokenizer.json files from
# tests/reference/tokenizers/ (see make_fixtures.py there).
if(TARGET retort_tokenizer)
  if(NOT TARGET PkgConfig::RETORT_TOK_ZSTD)
    pkg_check_modules(RETORT_TOK_ZSTD REQUIRED IMPORTED_TARGET libzstd)
  endif()
  retort_test(model_tokenizer_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.cc
              DEPS retort_tokenizer PkgConfig::RETORT_TOK_ZSTD)
endif()
