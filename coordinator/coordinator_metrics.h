// The coordinator's Prometheus metrics (prometheus-cpp core families on one registry). Names follow
// Prometheus conventions: counters end in _total, durations are in seconds, and the only unbounded
// label, job_id, is on the per-job series that are removed when the job ends.
#pragma once

#include <map>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace dtm {

class CoordinatorMetrics {
 public:
  // Registers every family on `registry` (not owned; must outlive this object).
  explicit CoordinatorMetrics(prometheus::Registry& registry);

  void SetJobsByState(const std::map<std::string, int>& counts);  // state name -> jobs
  void SetTaskGauges(double queued, double leased);
  void SetWorkersConnected(double workers);
  void SetStoreUp(bool up);

  prometheus::Counter& tasks_completed;  // results accepted (computed by a worker)
  prometheus::Counter& tasks_duplicate;  // results that arrived after another
  prometheus::Counter& tasks_failed;     // failures for good
  prometheus::Counter& tasks_requeued;   // lease expiries and retryable failures
  prometheus::Counter& leases_expired;
  prometheus::Counter& tasks_leased;
  prometheus::Counter& cache_hits;       // tasks answered from the cache when planned
  prometheus::Counter& cache_misses;     // tasks that had to be computed
  prometheus::Counter& probes_evaluated;
  prometheus::Counter& tokens_evaluated;
  prometheus::Counter& jobs_submitted;
  prometheus::Histogram& task_duration;  // lease to accepted result, seconds

  // Per-job progress, labelled by job id; RemoveJob drops the series when the job ends.
  void SetJobProgress(const std::string& job_id, double done, double total);
  // Search jobs: the level under evaluation and the best fdt75 of the deepest finished level (NaN
  // before the first level is done).
  void SetJobSearch(const std::string& job_id, double level, double best_fdt75);
  // Train jobs: the last step rank 0 reported and that step's loss.
  void SetJobTraining(const std::string& job_id, double step, double loss);
  // Drops a job's training series (a sparsify run between its training stages).
  void RemoveJobTraining(const std::string& job_id);
  // Sparsify runs: the round under way (1-based) and its stage: 1 for "probe", "train" or
  // "evaluate", 0 for the other two.
  void SetJobSparsify(const std::string& job_id, double round, const std::string& stage);
  void RemoveJob(const std::string& job_id);

 private:
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& tasks_;
  prometheus::Gauge& workers_;
  prometheus::Gauge& store_up_;
  prometheus::Family<prometheus::Gauge>& job_done_;
  prometheus::Family<prometheus::Gauge>& job_total_;
  prometheus::Family<prometheus::Gauge>& job_search_level_;
  prometheus::Family<prometheus::Gauge>& job_best_fdt75_;
  prometheus::Family<prometheus::Gauge>& job_train_step_;
  prometheus::Family<prometheus::Gauge>& job_train_loss_;
  prometheus::Family<prometheus::Gauge>& job_sparsify_round_;
  prometheus::Family<prometheus::Gauge>& job_sparsify_stage_;
};

}  // namespace dtm
