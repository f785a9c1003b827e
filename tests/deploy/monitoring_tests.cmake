# The monitoring deployment: deploy/prometheus (scrape config, alert rules and their promtool unit
# tests) and the Grafana dashboards in dashboards/, whose every query is run against a real
# Prometheus scraping a real service (tests/deploy/dashboards_test.py). Needs promtool/prometheus
# (Debian's prometheus package, 2.42); the dashboards test also everything the integration tests need,
# and reuses their environment, so include this file after integration/integration_tests.cmake.
find_program(DTM_PROMTOOL promtool)
find_program(DTM_PROMETHEUS prometheus PATHS /usr/bin NO_DEFAULT_PATH)
set(DTM_DEPLOY_PROMETHEUS ${PROJECT_SOURCE_DIR}/deploy/prometheus)

if(DTM_PROMTOOL)
  add_test(NAME promtool_config_test
    COMMAND /bin/bash ${CMAKE_CURRENT_SOURCE_DIR}/deploy/promtool_check.sh ${DTM_PROMTOOL} ${DTM_DEPLOY_PROMETHEUS})
  add_test(NAME promtool_rules_test COMMAND ${DTM_PROMTOOL} test rules ${DTM_DEPLOY_PROMETHEUS}/alerts_test.yml)
  set_tests_properties(promtool_config_test promtool_rules_test PROPERTIES LABELS "deploy" TIMEOUT 60)
else()
  message(STATUS "promtool not found: promtool_config_test and promtool_rules_test not registered")
endif()

if(TARGET dtm-coordinator AND TARGET dtm-worker AND TARGET dtmctl)
  if(NOT DEFINED DTM_INTEGRATION_ENV)
    message(FATAL_ERROR "monitoring_tests.cmake: include integration/integration_tests.cmake first")
  endif()
  if(DTM_PROMETHEUS)
    add_test(NAME dashboards_test COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/deploy/dashboards_test.py)
    set_tests_properties(dashboards_test PROPERTIES
      LABELS "integration;model;redis"
      FIXTURES_REQUIRED tiny_model
      TIMEOUT 600
      ENVIRONMENT "${DTM_INTEGRATION_ENV};DTM_PROMETHEUS_BIN=${DTM_PROMETHEUS}")
  else()
    message(STATUS "/usr/bin/prometheus not found: dashboards_test not registered")
  endif()
endif()
