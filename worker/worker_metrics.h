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
// | dtm_worker_layer_forwards_total     | counter   | worker              | decoder-layer forwards run by eval tasks     |
// | dtm_worker_full_layer_forwards_total| counter   | worker              | those full forwards would have run           |
// | dtm_worker_activation_cache_hits_total   | counter | worker         | eval batches started from a kept stream      |
// | dtm_worker_activation_cache_misses_total | counter | worker         | eval batches run from the embedding          |
// | dtm_worker_activation_cache_bytes   | gauge     | worker              | bytes of residual streams kept               |
// | dtm_worker_activation_cache_budget_bytes | gauge | worker            | their budget (0: no cache)                   |
//
// The layer-forward counters are one per layer per sequence: 1 - computed/full is the share of the
// work that kept streams saved (worker/engine/activation_cache.h).
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
#include "worker/task_executor.h"

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
  void AddLayerForwards(uint64_t computed, uint64_t full);
  // The executor's cache as it stands; hits and misses count from the executor's start, so a
  // replaced executor (another model) starts them again.
  void SetActivationCache(const ActivationCacheStats& stats);

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
  prometheus::Counter* layer_forwards_;
  prometheus::Counter* full_layer_forwards_;
  prometheus::Counter* cache_hits_;
  prometheus::Counter* cache_misses_;
  prometheus::Gauge* cache_bytes_;
  prometheus::Gauge* cache_budget_;
  ActivationCacheStats last_cache_;  // the counts already added
};

}  // namespace dtm
