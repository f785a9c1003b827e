# The fuzzers of fuzz/, built with clang into <build>/fuzz (a project of their own: libFuzzer needs
# clang, this build may be g++) and run 5 seconds each over the seed corpus. Fails when a fuzzer
# finds a crash, a sanitizer report, a leak or a timeout; SKIPPED when clang or libFuzzer is missing.
# Long runs: fuzz/run_fuzzers.sh --seconds 600 (README, "Fuzzing").
add_test(NAME fuzz_smoke
  COMMAND ${PROJECT_SOURCE_DIR}/fuzz/run_fuzzers.sh --build ${PROJECT_BINARY_DIR}/fuzz --seconds 5 --fresh)
set_tests_properties(fuzz_smoke PROPERTIES LABELS fuzz SKIP_RETURN_CODE 77 TIMEOUT 900)
if(CMAKE_CXX_COMPILER_LAUNCHER)
  # CMake reads the launcher (ccache) from the environment when it configures the fuzz project.
  set_property(TEST fuzz_smoke APPEND PROPERTY ENVIRONMENT "CMAKE_CXX_COMPILER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}")
endif()
