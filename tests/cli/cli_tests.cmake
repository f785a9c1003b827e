# dtmctl service-command tests (cli/).
set(DTM_CLI_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/cli)
dtm_add_test(results_format_test ${DTM_CLI_TESTS}/results_format_test.cc LABELS fast LIBS dtm_cli_service)
dtm_add_test(service_commands_test ${DTM_CLI_TESTS}/service_commands_test.cc LABELS fast
  LIBS dtm_cli_service nlohmann_json::nlohmann_json)
