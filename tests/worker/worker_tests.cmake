# dtm-worker tests (worker/), and the health service the worker and the coordinator share
# (common/health_service, built in proto/ as dtm_health).
dtm_add_test(health_service_test ${CMAKE_CURRENT_SOURCE_DIR}/common/health_service_test.cc
  LABELS fast LIBS dtm_health)

# The engine-backed executor against the engine called directly, on a small random checkpoint.
dtm_add_test(task_executor_test ${CMAKE_CURRENT_SOURCE_DIR}/worker/task_executor_test.cc
  LABELS fast LIBS dtm_worker_engine)

# The Worker against an in-process fake coordinator and a fake executor: no model, no torch.
dtm_add_test(worker_test ${CMAKE_CURRENT_SOURCE_DIR}/worker/worker_test.cc LABELS fast LIBS dtm_worker)
