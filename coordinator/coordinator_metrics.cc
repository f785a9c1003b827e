#include "coordinator/coordinator_metrics.h"

#include <vector>

namespace dtm {
namespace {

prometheus::Counter& NewCounter(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Family<prometheus::Gauge>& NewGaugeFamily(prometheus::Registry& registry, const std::string& name,
                                                      const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

// Tasks take from a fraction of a second (a tiny model's shard) to minutes (a 70B shard on one GPU).
prometheus::Histogram::BucketBoundaries TaskDurationBuckets() {
  return {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry)
    : tasks_completed(NewCounter(registry, "dtm_tasks_completed_total", "Task results accepted from workers.")),
      tasks_duplicate(NewCounter(registry, "dtm_tasks_duplicate_total",
                                 "Task results discarded because the task already had one.")),
      tasks_failed(NewCounter(registry, "dtm_tasks_failed_total", "Tasks that failed for good.")),
      tasks_requeued(NewCounter(registry, "dtm_tasks_requeued_total",
                                "Tasks put back in the queue after a lease expiry or a retryable failure.")),
      leases_expired(NewCounter(registry, "dtm_leases_expired_total", "Leases that ran out without a heartbeat.")),
      tasks_leased(NewCounter(registry, "dtm_tasks_leased_total", "Leases granted to workers.")),
      cache_hits(NewCounter(registry, "dtm_cache_hits_total", "Tasks answered from the result cache when planned.")),
      cache_misses(NewCounter(registry, "dtm_cache_misses_total", "Tasks not in the cache when planned.")),
      probes_evaluated(NewCounter(registry, "dtm_probes_evaluated_total", "Probes in accepted task results.")),
      tokens_evaluated(NewCounter(registry, "dtm_tokens_evaluated_total", "Tokens processed by accepted tasks.")),
      jobs_submitted(NewCounter(registry, "dtm_jobs_submitted_total", "Jobs accepted by SubmitJob.")),
      task_duration(prometheus::BuildHistogram()
                        .Name("dtm_task_duration_seconds")
                        .Help("Time from lease to accepted result.")
                        .Register(registry)
                        .Add({}, TaskDurationBuckets())),
      jobs_(NewGaugeFamily(registry, "dtm_jobs", "Jobs known to the coordinator, by state.")),
      tasks_(NewGaugeFamily(registry, "dtm_tasks", "Tasks now queued or leased, by state.")),
      workers_(NewGaugeFamily(registry, "dtm_workers_connected", "Workers heard from within the lease timeout.")
                   .Add({})),
      store_up_(NewGaugeFamily(registry, "dtm_store_up", "1 when the last store operation succeeded.").Add({})),
      job_done_(NewGaugeFamily(registry, "dtm_job_tasks_done", "Tasks of a running job with results.")),
      job_total_(NewGaugeFamily(registry, "dtm_job_tasks", "Tasks of a running job planned so far.")),
      job_search_level_(NewGaugeFamily(registry, "dtm_job_search_level",
                                       "Level a running search job is evaluating (1 = single components).")),
      job_best_fdt75_(NewGaugeFamily(registry, "dtm_job_best_fdt75",
                                     "fdt75 of the best node of a running search's deepest finished level.")),
      job_train_step_(NewGaugeFamily(registry, "dtm_job_train_step",
                                     "Optimizer steps a running train job has taken, as its rank 0 last reported.")),
      job_train_loss_(NewGaugeFamily(registry, "dtm_job_train_loss",
                                     "Training loss of a running train job's last reported step.")),
      job_sparsify_round_(NewGaugeFamily(registry, "dtm_job_sparsify_round",
                                         "Round (1-based) a running sparsify run is in.")),
      job_sparsify_stage_(NewGaugeFamily(registry, "dtm_job_sparsify_stage",
                                         "1 for the stage (probe, train, evaluate) a running sparsify run is in, "
                                         "0 for the others.")) {
  // Every state is present from the start, so that dashboards see zeros rather than no series.
  for (const char* state : {"pending", "running", "succeeded", "failed", "cancelled"}) jobs_.Add({{"state", state}});
  for (const char* state : {"queued", "leased"}) tasks_.Add({{"state", state}});
  store_up_.Set(1);
}

void CoordinatorMetrics::SetJobsByState(const std::map<std::string, int>& counts) {
  for (const char* state : {"pending", "running", "succeeded", "failed", "cancelled"}) {
    auto it = counts.find(state);
    jobs_.Add({{"state", state}}).Set(it == counts.end() ? 0 : it->second);
  }
}

void CoordinatorMetrics::SetTaskGauges(double queued, double leased) {
  tasks_.Add({{"state", "queued"}}).Set(queued);
  tasks_.Add({{"state", "leased"}}).Set(leased);
}

void CoordinatorMetrics::SetWorkersConnected(double workers) { workers_.Set(workers); }

void CoordinatorMetrics::SetStoreUp(bool up) { store_up_.Set(up ? 1 : 0); }

void CoordinatorMetrics::SetJobProgress(const std::string& job_id, double done, double total) {
  job_done_.Add({{"job_id", job_id}}).Set(done);
  job_total_.Add({{"job_id", job_id}}).Set(total);
}

void CoordinatorMetrics::SetJobSearch(const std::string& job_id, double level, double best_fdt75) {
  job_search_level_.Add({{"job_id", job_id}}).Set(level);
  job_best_fdt75_.Add({{"job_id", job_id}}).Set(best_fdt75);
}

void CoordinatorMetrics::SetJobTraining(const std::string& job_id, double step, double loss) {
  job_train_step_.Add({{"job_id", job_id}}).Set(step);
  job_train_loss_.Add({{"job_id", job_id}}).Set(loss);
}

namespace {

constexpr const char* kSparsifyStages[] = {"probe", "train", "evaluate"};

void RemoveSeries(prometheus::Family<prometheus::Gauge>* family, const std::map<std::string, std::string>& labels) {
  // Has() first: Add() would create the series of a job of another kind only to remove it.
  if (family->Has(labels)) family->Remove(&family->Add(labels));
}

}  // namespace

void CoordinatorMetrics::RemoveJobTraining(const std::string& job_id) {
  RemoveSeries(&job_train_step_, {{"job_id", job_id}});
  RemoveSeries(&job_train_loss_, {{"job_id", job_id}});
}

void CoordinatorMetrics::SetJobSparsify(const std::string& job_id, double round, const std::string& stage) {
  job_sparsify_round_.Add({{"job_id", job_id}}).Set(round);
  for (const char* s : kSparsifyStages) job_sparsify_stage_.Add({{"job_id", job_id}, {"stage", s}}).Set(stage == s);
}

void CoordinatorMetrics::RemoveJob(const std::string& job_id) {
  for (prometheus::Family<prometheus::Gauge>* family : {&job_done_, &job_total_, &job_search_level_, &job_best_fdt75_,
                                                        &job_train_step_, &job_train_loss_, &job_sparsify_round_}) {
    RemoveSeries(family, {{"job_id", job_id}});
  }
  for (const char* s : kSparsifyStages) RemoveSeries(&job_sparsify_stage_, {{"job_id", job_id}, {"stage", s}});
}

}  // namespace dtm
