# Job reports (report/): the page's pieces without a browser, and every page in headless Chromium
# (Debian's chromium, chromium-driver and python3-selenium) with the network off. Screenshots of the
# browser test are kept in ${PROJECT_BINARY_DIR}/test-artifacts/report.
dtm_add_test(report_page_test ${CMAKE_CURRENT_SOURCE_DIR}/report/report_page_test.cc LABELS fast LIBS dtm_report)
if(TARGET dtm-coordinator AND TARGET dtm-worker AND TARGET dtmctl)
  add_test(NAME report_browser_test COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/report/report_browser_test.py)
  set_tests_properties(report_browser_test PROPERTIES
    LABELS "integration;model;browser"
    FIXTURES_REQUIRED tiny_model
    TIMEOUT 1500
    ENVIRONMENT "${DTM_INTEGRATION_ENV};DTM_ARTIFACTS_DIR=${PROJECT_BINARY_DIR}/test-artifacts/report")
endif()
