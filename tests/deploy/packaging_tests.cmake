# Checks of docker/ and helm/dtm/ that run without helm, docker or a cluster
# (tests/deploy/packaging_test.py): yamllint on the chart's plain YAML, template structure against
# values.yaml, every flag and DTM_* variable the images and templates pass checked against the real
# binaries' --help, and the image's health-check script against a real coordinator. Needs
# /usr/bin/yamllint and Debian's python3-yaml and python3-grpcio (scripts/install_deps.sh).
if(TARGET dtm-coordinator AND TARGET dtm-worker AND TARGET dtmctl)
  set(DTM_PACKAGING_TEST ${CMAKE_CURRENT_SOURCE_DIR}/deploy/packaging_test.py)
  set(DTM_PACKAGING_ENV
    "DTMCTL=$<TARGET_FILE:dtmctl>"
    "DTM_COORDINATOR_BIN=$<TARGET_FILE:dtm-coordinator>"
    "DTM_WORKER_BIN=$<TARGET_FILE:dtm-worker>"
    "DTM_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

  add_test(NAME packaging_yamllint_test COMMAND /usr/bin/python3 ${DTM_PACKAGING_TEST} yamllint)
  add_test(NAME packaging_structure_test COMMAND /usr/bin/python3 ${DTM_PACKAGING_TEST} structure)
  add_test(NAME packaging_flags_test COMMAND /usr/bin/python3 ${DTM_PACKAGING_TEST} flags)
  add_test(NAME packaging_healthcheck_test COMMAND /usr/bin/python3 ${DTM_PACKAGING_TEST} healthcheck)
  set_tests_properties(packaging_yamllint_test packaging_structure_test packaging_flags_test
    packaging_healthcheck_test PROPERTIES
    LABELS "fast;deploy"
    TIMEOUT 120
    ENVIRONMENT "${DTM_PACKAGING_ENV}")
endif()
