# retort_library(NAME SOURCES ... DEPS ...): one static library per module folder.
function(retort_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# retort_test(NAME SOURCES ... DEPS ...): a GoogleTest binary
# registered with ctest. Tests run from the source root so fixture paths are
# stable (tests/reference/...). The source and build folders are compiled in
# (RETORT_SOURCE_DIR_PATH / RETORT_BINARY_DIR_PATH): CMake 3.25's
# gtest_discover_tests drops all but the first entry of an ENVIRONMENT list.
function(retort_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE
    RETORT_SOURCE_DIR_PATH="${PROJECT_SOURCE_DIR}" RETORT_BINARY_DIR_PATH="${PROJECT_BINARY_DIR}")
  # Test names start with the binary's name (core_convert_test.ConvertTest.X)
  # so `ctest -R <module>_` selects a module's tests.
  gtest_discover_tests(${name}
    TEST_PREFIX "${name}."
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES ENVIRONMENT "RETORT_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()
include(GoogleTest)
