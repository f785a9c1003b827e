// TaskTable: the tasks the coordinator has planned and not yet finished (Ray's task manager), with
// the lease pools that hand them to workers. A task is content-addressed (store_keys.h): two jobs
// that need the same shard wait on one task, which runs once.
//
// Each pool (one per model fingerprint and dtype, worker_registry.h) has its own LeaseTable, so a
// worker is only ever handed tasks of the model it holds. Pools are created on first use and live
// as long as the coordinator: there is one per model served, and each forgets its finished tasks
// and ended leases after the retention time (lease_table.h).
//
// Thread-safety: not thread-safe; its owner (the Scheduler) calls it under its own mutex. It does no
// I/O. (The LeaseTables lock for themselves too; they are only reached through this table.)
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/gang_table.h"
#include "coordinator/lease_table.h"
#include "coordinator/store_keys.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

using Rows = std::vector<dtm::v1::BaselineRow>;

struct TaskEntry {
  TaskKindForKey kind = TaskKindForKey::kEval;
  std::string pool;
  std::string model_path;
  dtm::v1::CacheKey key;
  std::shared_ptr<const Rows> rows;  // the shard's probes (baseline), baseline rows or windows (eval);
                                     // empty for a text-windows task
  std::shared_ptr<const dtm::v1::TextWindowsInput> text;  // a text-windows task's input; else null
  std::set<std::string> jobs;        // the jobs waiting for it
  // A train task's settings (all but the member's rank and rendezvous); null for other kinds.
  std::shared_ptr<const dtm::v1::TrainInput> train;
  std::string parent_config;  // Task.parent_config: the first planning job's
  std::string shard_tag;      // an eval task's ShardTag (common/shard_tag.h); "" for other kinds
};

// A task a job's stage needs, before the table decides whether to queue it.
struct PlannedTask {
  TaskKindForKey kind = TaskKindForKey::kEval;
  dtm::v1::CacheKey key;
  std::shared_ptr<const Rows> rows;
  std::string task_id;  // TaskIdFor(kind, key)
  std::shared_ptr<const dtm::v1::TextWindowsInput> text;  // a text-windows task's input
  bool on_reference = false;  // runs on the job's `reference:` model (its baseline and noise floor)
  std::shared_ptr<const dtm::v1::TrainInput> train = nullptr;  // a train task's settings; it runs on a gang
  std::string parent_config = "";  // an eval task of a tree search: the node it extends (Task.parent_config)
};

class TaskTable {
 public:
  // `lease_options` are every pool's (the lease id prefix gets a pool number appended); `clock` is
  // not owned and must outlive the table.
  TaskTable(LeaseTable::Options lease_options, const Clock* clock)
      : lease_options_(std::move(lease_options)), clock_(clock), gangs_(GangOptionsOf(lease_options_), clock) {}

  TaskTable(const TaskTable&) = delete;
  TaskTable& operator=(const TaskTable&) = delete;

  const TaskEntry* Find(const std::string& task_id) const;
  size_t size() const { return tasks_.size(); }

  // Adds `job_id` to the waiters of the task when the table holds it: true; false otherwise.
  bool Join(const std::string& task_id, const std::string& job_id);
  // Whether the task was accepted in `pool` lately, so that its result is in the store although a
  // cache read made before may have missed it.
  bool RecentlyDone(const std::string& task_id, const std::string& pool) const;
  // Holds `task` for `job_id` and queues it in `pool`, before the tasks of higher `priority`; a
  // train task waits for its gang in the gang table instead.
  Status Add(const PlannedTask& task, const std::string& pool, const std::string& model_path, int priority,
             const std::string& job_id);

  // The pool's lease table, created on first use.
  LeaseTable& Pool(const std::string& pool);
  // The tasks that run on gangs (train tasks), over every pool.
  GangTable& Gangs() { return gangs_; }

  // Forgets a task that has its result (or failed for good): the jobs that waited for it.
  std::set<std::string> Finish(const std::string& task_id);
  // `job_id` no longer waits for `task_ids`; a task nobody waits for any more is cancelled (its
  // holder hears CANCELLED at its next heartbeat) and forgotten.
  void Release(const std::string& job_id, const std::set<std::string>& task_ids);

  // One sweep of every pool: expired leases' tasks re-queued, and the tasks that failed for good
  // (out of attempts) since the last sweep.
  struct Sweep {
    std::vector<std::string> requeued;
    std::vector<std::string> failed;  // out of attempts
    std::vector<std::pair<std::string, std::string>> gangs_failed;  // gang tasks that failed for good, with why
  };
  Sweep Expire();

  // Queued tasks that some worker said it cannot run, with their pools.
  std::vector<std::pair<std::string, ExcludedTask>> Excluded() const;

  // Forgets, in every pool, that these tasks are done: their results were deleted (PurgeWorker).
  void ForgetDone(const std::vector<std::string>& task_ids);

  // Tasks queued and leased over every pool.
  std::pair<int64_t, int64_t> QueuedAndLeased() const;

 private:
  static GangTable::Options GangOptionsOf(const LeaseTable::Options& lease);

  const LeaseTable::Options lease_options_;
  const Clock* const clock_;
  GangTable gangs_;
  std::map<std::string, TaskEntry> tasks_;                    // by task id
  std::map<std::string, std::unique_ptr<LeaseTable>> pools_;  // by pool name
  uint64_t pools_created_ = 0;                                // numbers each pool's lease ids
};

}  // namespace dtm
