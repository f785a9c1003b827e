// Scheduler: the coordinator's control plane, composed the way Ray's GcsServer composes its
// managers over table storage:
//   - CoordinatorState: what is known in memory (jobs, the worker registry, the task table with its
//     lease pools), under one mutex that guards memory only;
//   - TableStorage: the durable tables in the store (job records, results, models, the cache);
//   - JobFiles: the files job specs name, read within the data root and the read limits;
//   - ClientApi and WorkerApi: the two gRPC APIs;
//   - JobPlanner: moves each job through its phases (job_planner.h says how a job runs);
// and the scheduler thread, whose tick
//   1. expires leases (their tasks go back to the queue, or fail after max_attempts) and forgets
//      workers not heard from for two lease timeouts;
//   2. gives up on a queued task that every registered worker of its pool said it cannot run, once
//      that has lasted model_wait_ms (meanwhile its jobs say what they wait for);
//   3. lets the planner advance every job;
//   4. writes the job records that changed (each at most once a second);
//   5. asks the store whether it answers (dtm_store_up; on_store_reachable on a change);
//   6. updates the gauges.
// No lock is held across a store call or a file read, so RPCs answer from memory while the store is
// slow or away, and Stop() returns within one store command timeout whatever the store does.
//
// Thread-safety: thread-safe. Ticks never overlap (tick_mu_, which nothing else takes), so the
// scheduler thread and a test calling Tick() may both tick.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "coordinator/client_api.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/job_files.h"
#include "coordinator/job_planner.h"
#include "coordinator/table_storage.h"
#include "coordinator/worker_api.h"

namespace dtm {

class Store;

class Scheduler {
 public:
  // `store`, `metrics` (nullable) and `clock` are not owned and must outlive the scheduler.
  // INVALID_ARGUMENT / NOT_FOUND for a data root that is not a folder.
  static StatusOr<std::unique_ptr<Scheduler>> Create(Store* store, CoordinatorMetrics* metrics,
                                                     CoordinatorOptions options, const Clock* clock);
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Loads the model registry and every job from the store (the unfinished ones are resumed by the
  // ticks that follow), then starts the scheduler thread. UNAVAILABLE when the store cannot be read.
  Status Start();
  // Stops the scheduler thread, then writes the job records that changed since their last write
  // (a store that is away fails those writes at once; nothing acknowledged depends on them).
  void Stop();

  // One tick of the scheduler thread (the class comment). Public so that tests can drive the
  // scheduler on a fake clock without the thread.
  void Tick();

  ClientApi& client() { return client_; }
  WorkerApi& worker() { return worker_; }

 private:
  Scheduler(Store* store, CoordinatorMetrics* metrics, CoordinatorOptions options, const Clock* clock,
            JobFiles files, std::string instance);

  void Loop();
  // Tick step 2. Requires state_.mu.
  void GiveUpOnUnrunnableTasks();
  void PersistChanged(bool force);
  void CheckStore();

  TableStorage storage_;
  JobFiles files_;
  const std::string instance_;  // names this run's leases
  CoordinatorState state_;
  ClientApi client_;
  WorkerApi worker_;
  JobPlanner planner_;
  std::thread thread_;
  // Held for a whole tick, store calls included: it orders ticks, and no RPC ever waits for it.
  std::mutex tick_mu_;
  // Jobs whose message says they wait for a worker that can run a task, with the message before;
  // guarded by state_.mu.
  std::map<std::string, std::string> blocked_;
  int store_reachable_ = -1;  // the last answer of the store (-1: not asked yet); guarded by tick_mu_
};

}  // namespace dtm
