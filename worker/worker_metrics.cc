#include "worker/worker_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace dtm {
namespace {

constexpr dtm::v1::TaskKind kKindsInOrder[] = {dtm::v1::TASK_KIND_BASELINE_SHARD, dtm::v1::TASK_KIND_EVAL_SHARD,
                                               dtm::v1::TASK_KIND_TEXT_WINDOWS};
constexpr TaskOutcome kOutcomesInOrder[] = {TaskOutcome::kCompleted, TaskOutcome::kDuplicate, TaskOutcome::kFailed,
                                            TaskOutcome::kCancelled};

// From a tiny model's shard (tens of ms) to a 7B baseline shard on a slow device (minutes).
const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                                                   10,   30,  60,   120, 300, 600};
  return kBuckets;
}

}  // namespace

const char* TaskOutcomeName(TaskOutcome outcome) {
  switch (outcome) {
    case TaskOutcome::kCompleted: return "completed";
    case TaskOutcome::kDuplicate: return "duplicate";
    case TaskOutcome::kFailed: return "failed";
    case TaskOutcome::kCancelled: return "cancelled";
  }
  return "unknown";
}

const char* TaskKindLabel(dtm::v1::TaskKind kind) {
  switch (kind) {
    case dtm::v1::TASK_KIND_BASELINE_SHARD: return "baseline";
    case dtm::v1::TASK_KIND_EVAL_SHARD: return "eval";
    case dtm::v1::TASK_KIND_TEXT_WINDOWS: return "text_windows";
    default: return "unspecified";
  }
}

WorkerMetrics::WorkerMetrics(prometheus::Registry* registry, const std::string& worker_id) {
  const prometheus::Labels worker = {{kWorkerLabel, worker_id}};
  model_load_seconds_ = &prometheus::BuildGauge()
                             .Name("dtm_worker_model_load_seconds")
                             .Help("Seconds to open, fingerprint and load the model replica")
                             .Register(*registry)
                             .Add(worker);
  device_memory_bytes_ = &prometheus::BuildGauge()
                              .Name("dtm_worker_device_memory_bytes")
                              .Help("CUDA memory allocated by the replica, or the process's resident set on CPU")
                              .Register(*registry)
                              .Add(worker);
  busy_ = &prometheus::BuildGauge()
               .Name("dtm_worker_busy")
               .Help("1 while the worker executes a task, else 0")
               .Register(*registry)
               .Add(worker);
  tokens_ = &prometheus::BuildCounter()
                 .Name("dtm_worker_tokens_total")
                 .Help("Tokens run through the model by tasks that ran")
                 .Register(*registry)
                 .Add(worker);
  probes_ = &prometheus::BuildCounter()
                 .Name("dtm_worker_probes_total")
                 .Help("Probes (task rows) of tasks that ran")
                 .Register(*registry)
                 .Add(worker);
  auto& tasks = prometheus::BuildCounter()
                    .Name("dtm_worker_tasks_total")
                    .Help("Tasks finished by this worker, by kind and outcome")
                    .Register(*registry);
  auto& duration = prometheus::BuildHistogram()
                       .Name("dtm_worker_task_duration_seconds")
                       .Help("Execution time of each task that ran, by kind")
                       .Register(*registry);
  for (int k = 0; k < kKinds; ++k) {
    const std::string kind = TaskKindLabel(kKindsInOrder[k]);
    for (int o = 0; o < kOutcomes; ++o) {
      tasks_[k][o] = &tasks.Add(
          {{kWorkerLabel, worker_id}, {kKindLabel, kind}, {kOutcomeLabel, TaskOutcomeName(kOutcomesInOrder[o])}});
    }
    duration_[k] = &duration.Add({{kWorkerLabel, worker_id}, {kKindLabel, kind}}, DurationBuckets());
  }
  const auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry).Add(worker);
  };
  const auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add(worker);
  };
  layer_forwards_ = counter("dtm_worker_layer_forwards_total",
                            "Decoder-layer forwards run by eval tasks, one per layer per sequence");
  full_layer_forwards_ = counter("dtm_worker_full_layer_forwards_total",
                                 "Decoder-layer forwards a full forward of the same eval tasks would have run");
  cache_hits_ = counter("dtm_worker_activation_cache_hits_total", "Eval batches started from a kept residual stream");
  cache_misses_ = counter("dtm_worker_activation_cache_misses_total", "Eval batches run from the embedding");
  cache_bytes_ = gauge("dtm_worker_activation_cache_bytes", "Bytes of residual streams kept for reuse");
  cache_budget_ = gauge("dtm_worker_activation_cache_budget_bytes", "Budget of the kept residual streams (0: none)");
}

int WorkerMetrics::KindIndex(dtm::v1::TaskKind kind) {
  for (int k = 0; k < kKinds; ++k) {
    if (kKindsInOrder[k] == kind) return k;
  }
  return -1;
}

void WorkerMetrics::SetModelLoadSeconds(double seconds) { model_load_seconds_->Set(seconds); }

void WorkerMetrics::SetDeviceMemoryBytes(uint64_t bytes) { device_memory_bytes_->Set(static_cast<double>(bytes)); }

void WorkerMetrics::SetBusy(bool busy) { busy_->Set(busy ? 1 : 0); }

void WorkerMetrics::CountTask(dtm::v1::TaskKind kind, TaskOutcome outcome) {
  const int k = KindIndex(kind);
  if (k >= 0) tasks_[k][static_cast<int>(outcome)]->Increment();
}

void WorkerMetrics::ObserveTaskDuration(dtm::v1::TaskKind kind, double seconds) {
  const int k = KindIndex(kind);
  if (k >= 0) duration_[k]->Observe(seconds);
}

void WorkerMetrics::AddLayerForwards(uint64_t computed, uint64_t full) {
  layer_forwards_->Increment(static_cast<double>(computed));
  full_layer_forwards_->Increment(static_cast<double>(full));
}

void WorkerMetrics::SetActivationCache(const ActivationCacheStats& stats) {
  // Counts below the last seen ones come from a new executor, which counts from zero.
  const auto delta = [](int64_t now, int64_t before) { return static_cast<double>(now >= before ? now - before : now); };
  cache_hits_->Increment(delta(stats.hits, last_cache_.hits));
  cache_misses_->Increment(delta(stats.misses, last_cache_.misses));
  cache_bytes_->Set(static_cast<double>(stats.bytes));
  cache_budget_->Set(static_cast<double>(stats.budget_bytes));
  last_cache_ = stats;
}

void WorkerMetrics::AddProcessed(uint64_t tokens, uint64_t probes) {
  tokens_->Increment(static_cast<double>(tokens));
  probes_->Increment(static_cast<double>(probes));
}

}  // namespace dtm
