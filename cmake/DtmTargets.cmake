# Warnings for dtm's own targets only (third-party headers are included as system headers).
function(dtm_target_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(DTM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# dtm_add_test(NAME SOURCE LABELS label...): one GoogleTest executable per unit, registered with
# CTest under its labels (e.g. `ctest -L fast`).
function(dtm_add_test name source)
  cmake_parse_arguments(ARG "" "" "LABELS;LIBS" ${ARGN})
  add_executable(${name} ${source})
  if(NOT ARG_LIBS)
    set(ARG_LIBS dtm_engine)
  endif()
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  dtm_target_warnings(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}"
    ENVIRONMENT "DTM_SOURCE_DIR=${PROJECT_SOURCE_DIR};DTM_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
