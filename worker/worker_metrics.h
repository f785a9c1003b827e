// WorkerMetrics: every Prometheus metric dtm-worker exports, registered in one place.
//
// | metric                              | type      | labels              | meaning                                      |
// | dtm_worker_model_load_seconds       | gauge     | worker              | time to open, fingerprint and load the model |
// | dtm_worker_device_memory_bytes      | gauge     | worker              | CUDA bytes allocated, or process RSS on CPU  |
// | dtm_worker_tasks_total              | counter   | worker,kind,outcome | tasks finished, by how they ended            |
// | dtm_worker_task_duration_seconds    | histogram | worker,kind         | execution time of each task that ran         |
// | dtm_worker_tokens_total             | counter   | worker              | tokens run through the model                 |
// | dtm_worker_probes_total             | counter   | worker              | probes (rows) of the tasks that ran          |
// | dtm_worker_busy                     | gauge     | worker              | 1 while a task executes, else 0              |
//
// kind is "baseline" or "eval"; outcome is "completed" (accepted), "duplicate" (another attempt's
// result was there first), "failed" (execution failed, or the report could not be delivered) or
// "cancelled" (the job was cancelled, the result dropped). Every series carries worker="<id>",
// because `dtmctl local` runs several workers in one process on one registry: the families are
// shared (prometheus-cpp merges a family registered twice under one name) and the series are not.
//
// Torch-free: the daemon passes the numbers in. Thread-safe, as prometheus-cpp's metrics are.
#pragma once

#include <cstdint>
#include <string>

#include "dtm/v1/worker_service.pb.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace dtm {

enum class TaskOutcome { kCompleted, kDuplicate, kFailed, kCancelled };

// "completed", "duplicate", "failed", "cancelled": the outcome label values.
const char* TaskOutcomeName(TaskOutcome outcome);
// "baseline", "eval": the kind label values ("unspecified" for anything else).
const char* TaskKindLabel(dtm::v1::TaskKind kind);

inline constexpr char kWorkerLabel[] = "worker";
inline constexpr char kKindLabel[] = "kind";
inline constexpr char kOutcomeLabel[] = "outcome";

class WorkerMetrics {
 public:
  // Registers (or joins) the families on `registry`, which must outlive this object, and creates
  // every series of this worker at zero, so that dashboards see them before the first task.
  WorkerMetrics(prometheus::Registry* registry, const std::string& worker_id);

  void SetModelLoadSeconds(double seconds);
  void SetDeviceMemoryBytes(uint64_t bytes);
  void SetBusy(bool busy);
  void CountTask(dtm::v1::TaskKind kind, TaskOutcome outcome);
  void ObserveTaskDuration(dtm::v1::TaskKind kind, double seconds);
  void AddProcessed(uint64_t tokens, uint64_t probes);

 private:
  static constexpr int kKinds = 3;     // baseline, eval, text_windows
  static constexpr int kOutcomes = 4;  // TaskOutcome's values
  static int KindIndex(dtm::v1::TaskKind kind);

  prometheus::Gauge* model_load_seconds_;
  prometheus::Gauge* device_memory_bytes_;
  prometheus::Gauge* busy_;
  prometheus::Counter* tokens_;
  prometheus::Counter* probes_;
  prometheus::Counter* tasks_[kKinds][kOutcomes];
  prometheus::Histogram* duration_[kKinds];
};

}  // namespace dtm
