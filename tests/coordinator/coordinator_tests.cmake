# Coordinator unit tests beyond the lease table.
# Job specs and shard aggregation; the aggregation is cross-checked against the engine's Summarize.
dtm_add_test(job_spec_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/job_spec_test.cc LABELS fast
  LIBS dtm_job_spec GTest::gmock)
dtm_add_test(aggregate_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/aggregate_test.cc LABELS fast
  LIBS dtm_job_spec dtm_engine GTest::gmock)
# The scheduler driven by fake workers on a fake clock and an in-memory store: no gRPC, no thread.
dtm_add_test(scheduler_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/scheduler_test.cc LABELS fast
  LIBS dtm_coordinator_service dtm_common GTest::gmock)
# The two APIs' promises on the same fixture (scheduler_fixture.h): limits, idempotency, pages, store
# outages, purging; registration, failure causes, leases of other workers, late reports.
dtm_add_test(client_api_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/client_api_test.cc LABELS fast
  LIBS dtm_coordinator_service dtm_common GTest::gmock)
dtm_add_test(worker_api_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/worker_api_test.cc LABELS fast
  LIBS dtm_coordinator_service dtm_common GTest::gmock)
# A train job through the worker API: the gang, checked reports, progress, attempts; --model-root.
dtm_add_test(train_service_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/train_service_test.cc LABELS fast
  LIBS dtm_coordinator_service dtm_common GTest::gmock)
# The quantization tree search's driver against exhaustive rankings of made-up metrics.
dtm_add_test(quant_search_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/quant_search_test.cc LABELS fast
  LIBS dtm_coordinator_service GTest::gmock)
# Probe racing: order-statistic bounds (against an independent binomial computation, and their coverage),
# the drop rule on hand-made metrics, racing searches and probe jobs on synthetic probes.
dtm_add_test(racing_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/racing_test.cc LABELS fast
  LIBS dtm_coordinator_service GTest::gmock)
# The balanced sparsity allocation: known optima, the constraint, monotonicity, brute force.
dtm_add_test(sparsity_allocation_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/sparsity_allocation_test.cc
  LABELS fast LIBS dtm_sparsity GTest::gmock)
# The sparsify-round driver: probes, the previous-round file, the allocation against the solver.
dtm_add_test(sparsify_round_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/sparsify_round_test.cc LABELS fast
  LIBS dtm_coordinator_service GTest::gmock)
# Which workers keep which shards' residual streams (shard affinity), and the shard tag both sides compute.
dtm_add_test(shard_affinity_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/shard_affinity_test.cc LABELS fast
  LIBS dtm_coordinator_service)
# Who may read the job pages: the token as Bearer or as HTTP Basic's password.
dtm_add_test(job_pages_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/job_pages_test.cc LABELS fast
  LIBS dtm_job_pages)
# Component sizes from config.json (Llama shapes, HF defaults).
dtm_add_test(model_geometry_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/model_geometry_test.cc LABELS fast
  LIBS dtm_coordinator_service)
# The parts of the scheduler, each on its own: the worker registry, the task table over its lease
# pools, the wire conversions and the spec files under the data root, on a fake clock and no I/O but files.
dtm_add_test(worker_registry_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/worker_registry_test.cc LABELS fast
  LIBS dtm_coordinator_service)
dtm_add_test(task_table_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/task_table_test.cc LABELS fast
  LIBS dtm_coordinator_service)
# Task ids: unchanged for old configs, new for llm-int8 ones, naming the calibration set of gptq ones.
dtm_add_test(store_keys_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/store_keys_test.cc LABELS fast
  LIBS dtm_coordinator_service)
dtm_add_test(task_wire_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/task_wire_test.cc LABELS fast
  LIBS dtm_coordinator_service)
dtm_add_test(job_files_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/job_files_test.cc LABELS fast
  LIBS dtm_coordinator_service)
# The typed store tables against every Store, as store_test: the Redis half needs a redis-server.
dtm_add_test(table_storage_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/table_storage_test.cc LABELS redis
  LIBS dtm_coordinator_service dtm_common dtm_test_support)
set_property(TEST table_storage_test APPEND PROPERTY ENVIRONMENT "GTEST_FILTER=TableStorageTest/RedisStore.*")
add_test(NAME table_storage_test_in_memory COMMAND table_storage_test --gtest_filter=TableStorageTest/InMemoryStore.*)
set_tests_properties(table_storage_test_in_memory PROPERTIES LABELS fast)
# The sparsification run's round driver as a pure function of stored results.
dtm_add_test(sparsify_run_test ${CMAKE_CURRENT_SOURCE_DIR}/coordinator/sparsify_run_test.cc LABELS fast
  LIBS dtm_coordinator_service GTest::gmock)
