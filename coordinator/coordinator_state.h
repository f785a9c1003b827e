// CoordinatorState: what the coordinator knows in memory, shared by the client API, the worker API
// and the planner (the parts the Scheduler composes), and the transitions all of them make on it:
// a job changed, a job ended, a task's result is in, a task failed for good.
//
// Thread-safety: `mu` guards every field below it and every JobRun's shared fields; the methods
// marked "requires mu" must be called with it held. Nothing is read from or written to the store
// with `mu` held: the store may be slow or away, and RPCs must still answer (Persist, which writes,
// takes it only to copy the record).
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/job_run.h"
#include "coordinator/table_storage.h"
#include "coordinator/shard_affinity.h"
#include "coordinator/task_table.h"
#include "coordinator/worker_registry.h"

namespace dtm {

class CoordinatorState {
 public:
  // None of the pointers is owned; all must outlive the state. `metrics` may be null.
  CoordinatorState(const CoordinatorOptions& options, const Clock* clock, CoordinatorMetrics* metrics,
                   TableStorage* storage, const std::string& lease_id_prefix);

  CoordinatorState(const CoordinatorState&) = delete;
  CoordinatorState& operator=(const CoordinatorState&) = delete;

  const CoordinatorOptions& options() const { return options_; }
  const Clock& clock() const { return *clock_; }
  CoordinatorMetrics* metrics() const { return metrics_; }
  TableStorage& storage() const { return *storage_; }

  std::mutex mu;
  std::condition_variable changed;  // some job's progress changed, or there is work for the tick
  // Runs are never erased while the coordinator lives, so a JobRun* stays valid without mu.
  std::map<std::string, std::unique_ptr<JobRun>> jobs;  // guarded by mu
  WorkerRegistry workers;                               // guarded by mu
  TaskTable tasks;                                      // guarded by mu
  ShardAffinity affinity;                               // guarded by mu: what workers keep streams of
  bool wake = false;                                    // guarded by mu: the tick should run now
  bool stopping = false;                                // guarded by mu

  // The job, or nullptr. Requires mu.
  JobRun* FindJob(const std::string& job_id);
  // Wakes the scheduler thread. Requires mu.
  void Wake();
  // The job's progress changed: refreshes its derived fields, bumps its version, marks it to be
  // written and wakes its watchers. Requires mu.
  void Touch(JobRun& run);
  // Ends a job: releases its outstanding tasks, records the state and error (message bounded), drops
  // its per-job metrics. Its record is written by the next Persist. Requires mu.
  void EndJob(JobRun& run, dtm::v1::JobState state, const Status& error);
  // A task's result is in: every job waiting for it counts it done. Requires mu.
  void TaskDone(const std::string& task_id);
  // A task went back to the queue: every job waiting for it counts a re-queue. Requires mu.
  void TaskRequeued(const std::string& task_id);
  // A task failed for good: every job waiting for it fails, naming the task. No-op for a task the
  // table no longer holds. Requires mu.
  void TaskFailed(const std::string& task_id, const Status& error);
  // A job that waits for a worker serving `wanted` (its spec's `field`): OK, with the job's message
  // saying what it waits for, until --model-wait-seconds have passed since it started; then
  // FAILED_PRECONDITION naming the field and the models workers serve. Requires mu.
  Status WaitForModel(JobRun& run, const std::string& field, const std::string& wanted);
  // dtm_jobs, dtm_tasks and dtm_workers_connected from the state. Requires mu.
  void UpdateGauges();

  // Writes the job's record if it changed since the last write and (unless `force`) the last write
  // is a second old. Must be called WITHOUT mu. UNAVAILABLE when the store cannot take it (the
  // record stays marked, for the next try).
  Status Persist(const std::string& job_id, bool force);

 private:
  const CoordinatorOptions options_;
  const Clock* const clock_;
  CoordinatorMetrics* const metrics_;
  TableStorage* const storage_;
};

}  // namespace dtm
