// Scheduler: the coordinator's state and logic behind both gRPC services. It turns jobs into shard
// tasks, answers what it can from the cache, leases the rest to workers, takes their results once,
// aggregates them and advances each job's driver.
//
// How a job runs:
//   1. Submit parses and validates the spec (and the probe file, and the components when the model's
//      layer count is known), persists the job PENDING and returns.
//   2. Resolve: once a worker serving the spec's model has registered (or the job was resolved before
//      a restart), the job learns the model fingerprint and layer count, reads the probes, fixes its
//      shards and becomes RUNNING.
//   3. Baseline stage: one task per shard of the probe set, unless its result is cached.
//   4. Config stages: the driver names configs (with "" first, the uncompressed model's noise floor);
//      every (config, shard) is a task unless cached. When a stage's tasks are all in, its configs are
//      aggregated and the driver is asked for the next stage, until it has none: SUCCEEDED.
// Tasks are content-addressed (store_keys.h), so two jobs needing the same shard share one task, and
// a restarted coordinator replays each job's stages from the cache without computing anything twice.
//
// Workers are grouped in pools by (model fingerprint, dtype); each pool has its own LeaseTable, so a
// worker is only ever handed tasks for the model it holds.
//
// Thread-safety: thread-safe. One mutex guards the scheduler's state; LeaseTables lock their own.
// Store calls are made with the mutex held, which keeps the state and the store in step at the cost
// of stalling RPCs while the store is slow; a store error leaves the state unchanged where it can.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/job_driver.h"
#include "coordinator/job_spec.h"
#include "coordinator/lease_table.h"
#include "coordinator/store_keys.h"
#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

class Store;

class Scheduler {
 public:
  // `store`, `metrics` (nullable) and `clock` are not owned and must outlive the scheduler.
  Scheduler(Store* store, CoordinatorMetrics* metrics, CoordinatorOptions options, const Clock* clock);
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Loads the model registry and every unfinished job from the store and replays them up to their
  // first stage with work left, then starts the scheduler thread.
  Status Start();
  void Stop();

  // The client API (DtmService).
  StatusOr<dtm::v1::Job> Submit(const std::string& spec_yaml, const std::string& client_request_id);
  StatusOr<dtm::v1::Job> GetJob(const std::string& job_id);
  StatusOr<std::vector<dtm::v1::Job>> ListJobs(const std::set<dtm::v1::JobState>& states);
  StatusOr<dtm::v1::Job> Cancel(const std::string& job_id, const std::string& reason);
  StatusOr<dtm::v1::GetResultsResponse> Results(const dtm::v1::GetResultsRequest& request);
  // The job's progress once its version is past `seen_version`, or after `timeout` whatever it is;
  // the returned version is what to pass next time.
  StatusOr<std::pair<dtm::v1::JobProgress, uint64_t>> WaitProgress(const std::string& job_id, uint64_t seen_version,
                                                                   std::chrono::milliseconds timeout);

  // The worker API (WorkerService).
  StatusOr<dtm::v1::RegisterWorkerResponse> RegisterWorker(const dtm::v1::RegisterWorkerRequest& request);
  StatusOr<dtm::v1::LeaseTasksResponse> LeaseTasks(const dtm::v1::LeaseTasksRequest& request);
  StatusOr<dtm::v1::HeartbeatResponse> Heartbeat(const dtm::v1::HeartbeatRequest& request);
  StatusOr<dtm::v1::CompleteTaskResponse> CompleteTask(const dtm::v1::CompleteTaskRequest& request);
  StatusOr<dtm::v1::FailTaskResponse> FailTask(const dtm::v1::FailTaskRequest& request);
  StatusOr<dtm::v1::DrainWorkerResponse> DrainWorker(const dtm::v1::DrainWorkerRequest& request);

  // One pass of the scheduler thread: expires leases, resolves and advances jobs, persists progress,
  // updates gauges. Public so that tests can drive the scheduler on a fake clock without the thread.
  void Tick();

 private:
  struct ModelInfo {
    std::string fingerprint;
    ModelGeometry geometry;
  };

  struct WorkerEntry {
    std::string pool;
    std::string model_path;
    dtm::v1::Dtype dtype = dtm::v1::DTYPE_UNSPECIFIED;
    std::chrono::steady_clock::time_point last_seen;
  };

  using Rows = std::vector<dtm::v1::BaselineRow>;

  struct TaskEntry {
    TaskKindForKey kind = TaskKindForKey::kEval;
    std::string pool;
    std::string model_path;
    dtm::v1::CacheKey key;
    std::shared_ptr<const Rows> rows;  // the shard's probes (baseline) or baseline rows (eval)
    std::set<std::string> jobs;        // jobs waiting for this task
  };

  enum class Phase { kWaitingForModel, kBaseline, kStages, kEnded };

  struct JobRun {
    dtm::v1::Job job;  // the persisted record
    JobSpec spec;
    Phase phase = Phase::kWaitingForModel;
    std::unique_ptr<JobDriver> driver;
    std::string pool;
    dtm::v1::CacheKey base_key;  // model, probes, n, completion, dtype; no config, no shard
    std::vector<std::pair<uint32_t, uint32_t>> shards;
    std::vector<std::shared_ptr<const Rows>> probe_rows;     // per shard
    std::vector<std::shared_ptr<const Rows>> baseline_rows;  // per shard, once the baseline is in
    std::vector<std::string> stage_configs;
    std::set<std::string> outstanding;  // task ids the current stage waits for
    std::map<std::string, dtm::v1::Metrics> evaluated;
    std::map<std::string, uint32_t> cached_shards;  // per config: shards found in the cache when planned
    uint64_t version = 1;  // bumped on every progress change, for WaitProgress
    bool dirty = false;    // the record changed since it was last persisted
    std::chrono::steady_clock::time_point last_persist;
    std::chrono::steady_clock::time_point started;  // of this coordinator's run of the job
    int64_t tasks_computed_here = 0;                 // results accepted since `started`, for rates
    int64_t probes_computed_here = 0;
  };

  // All helpers below require mu_.
  StatusOr<ModelInfo> FindModel(const JobSpec& spec, dtm::v1::Dtype* dtype) const;
  // The component sizes a worker reported for the model with this fingerprint; empty when none did.
  std::map<std::string, uint64_t> ComponentParamsOf(const std::string& fingerprint) const;
  // Where no worker reported the component sizes (one older than the field), those of the model's
  // config.json, when this coordinator may read it and it has the same layer count.
  void AddSizesFromConfig(const std::string& model_path, ModelGeometry* geometry) const;
  // "workers serve A, B" or "no worker is connected", for errors about a model nobody serves.
  std::string ServedModels() const;
  Status ValidateAtSubmit(const JobSpec& spec);
  // The cache keys of a job resolved in an earlier run, from its persisted summary.
  void RestoreKeys(JobRun& run);
  void Advance(JobRun& run);
  Status Resolve(JobRun& run, bool* resolved);
  Status PlanBaseline(JobRun& run);
  Status LoadBaselineRows(JobRun& run);
  Status StartStage(JobRun& run);
  Status AggregateStage(JobRun& run);
  StatusOr<std::vector<dtm::v1::ProbeResult>> ReadConfigResults(const JobRun& run, const std::string& config);
  Status Finish(JobRun& run);
  // The driver's rows, per-level statistics and the noise floor of a job as it stands.
  void FillResults(const JobRun& run, dtm::v1::GetResultsResponse* response) const;
  struct PlannedTask {
    TaskKindForKey kind;
    dtm::v1::CacheKey key;
    std::shared_ptr<const Rows> rows;
    std::string task_id;  // filled by PlanTasks
  };
  // Plans a stage's tasks (they become the run's outstanding set): each is counted cached when its
  // result is in the store, joins the task another job already waits on, or is queued. All store
  // reads come first, so an unreachable store fails the call before anything changed.
  Status PlanTasks(JobRun& run, std::vector<PlannedTask> planned);
  void EndJob(JobRun& run, dtm::v1::JobState state, const Status& error);
  void ReleaseTasksOf(JobRun& run);
  void MarkTaskDone(const std::string& task_id);
  void FailTaskForGood(const std::string& task_id, const Status& error);
  void Touch(JobRun& run);
  void Persist(JobRun& run, bool force);
  void UpdateProgressFields(JobRun& run);
  LeaseTable& Pool(const std::string& pool);
  StatusOr<WorkerEntry*> FindWorker(const std::string& worker_id);
  Status ValidateOutput(const TaskEntry& task, const dtm::v1::CompleteTaskRequest& request) const;
  void ExpireAndCollect();
  void UpdateGauges();
  Status NoteStore(const Status& status);
  std::string NewJobId();

  void Loop();

  Store* const store_;
  CoordinatorMetrics* const metrics_;
  const CoordinatorOptions options_;
  const Clock* const clock_;
  const std::string instance_;

  std::mutex mu_;
  std::condition_variable changed_;  // progress of some job changed, or there is work for Tick
  std::map<std::string, std::unique_ptr<JobRun>> jobs_;       // guarded by mu_
  std::map<std::string, TaskEntry> tasks_;                    // guarded by mu_
  std::map<std::string, std::unique_ptr<LeaseTable>> pools_;  // guarded by mu_
  std::map<std::string, WorkerEntry> workers_;                // guarded by mu_
  std::map<std::pair<std::string, int>, ModelInfo> models_;   // (path, dtype) -> model; guarded by mu_
  std::map<std::string, std::chrono::steady_clock::time_point> lease_started_;  // guarded by mu_
  bool wake_ = false;                                         // guarded by mu_
  bool stopping_ = false;                                     // guarded by mu_
  uint64_t next_job_ = 0;                                     // guarded by mu_
  std::thread thread_;
};

}  // namespace dtm
