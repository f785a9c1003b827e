// LeaseTable: the coordinator's queue of pending tasks and the leases under which workers run them.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"

namespace dtm {

// One task handed to a worker.
struct LeaseGrant {
  std::string task_id;
  std::string lease_id;
  int attempt = 0;  // 1 for the first run of a task
  std::chrono::steady_clock::time_point expires_at;
};

enum class HeartbeatResult {
  kValid,      // the lease is held and its expiry was pushed back
  kExpired,    // the lease ran out; its task went back to the queue (or failed), drop the work
  kUnknown,    // no such lease for this worker, or the lease already ended by its own Complete or Fail
  kCancelled,  // the task was cancelled, completed under another lease, or released: drop the work
};

enum class CompleteResult {
  kAccepted,   // the first result for the task; keep it
  kDuplicate,  // the task already has a result; discard this one
  kCancelled,  // the task was cancelled; discard this one
};

enum class FailResult {
  kRequeued,  // the task will run again
  kFailed,    // the task gave up (not retryable, or out of attempts)
};

struct LeaseTableStats {
  // Tasks in each state now.
  int64_t queued = 0;
  int64_t leased = 0;
  int64_t done = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
  // Counters since creation.
  int64_t requeued_total = 0;  // every return to the queue: expiry, retryable failure, release
  int64_t expired_total = 0;   // leases that ran out
};

// Hands tasks to workers under leases that expire unless renewed, so that a worker that dies costs
// one lease timeout and its tasks run elsewhere. The algorithm:
//   1. Enqueue puts a task in the queue, ordered by priority (lower first: baseline tasks before the
//      eval tasks that need them), then by first-enqueue order. A re-queued task keeps its place, so
//      the shard a job has waited on longest is not sent to the back.
//   2. Lease pops up to max_tasks tasks for one worker and grants each a lease that expires
//      lease_timeout_ms from now. The worker names each request; a retry with the same name (its
//      reply was lost) gets the same grants instead of leasing more tasks.
//   3. Heartbeat pushes a held lease's expiry back by lease_timeout_ms, and tells the worker when to
//      drop a task: its lease expired, or the task was cancelled or completed elsewhere.
//   4. ExpireLeases (called periodically) ends every lease past its expiry. Heartbeat also expires a
//      lease it finds past expiry, so the answer does not depend on when the sweep last ran. Expiry
//      counts as an attempt: a task that kills its worker every time must eventually fail.
//   5. Complete accepts the first result for a task, under any lease of it, even one that expired
//      (results are keyed by what determines them, so a late result is as good as a fresh one).
//      Every later result is a duplicate. Any other lease of the task ends, and its holder hears
//      CANCELLED at its next heartbeat.
//   6. Fail re-queues the task with attempt + 1, or marks it FAILED when not retryable or after
//      max_attempts attempts.
//   7. ReleaseWorker (graceful drain) returns a worker's tasks to the queue without counting an
//      attempt: the work was stopped, not lost to a fault.
//   8. Cancel removes a task from the queue, or ends its lease (CANCELLED at the next heartbeat).
//
// Ended leases are remembered so that a late heartbeat or result gets a precise answer rather than
// UNKNOWN; the table therefore grows with the tasks it has seen, and is meant to live for one job's
// tasks, not the life of the coordinator.
//
// Thread-safety: thread-safe; one mutex guards all state and is held for the length of each call.
// The clock is called with the mutex held, so it must not call back into the table.
class LeaseTable {
 public:
  struct Options {
    int64_t lease_timeout_ms = 30000;
    int max_attempts = 5;
    // Lease ids are this prefix and a counter. A coordinator picks a prefix per start, so that a
    // lease id from before a restart never names a lease of the new table.
    std::string lease_id_prefix = "lease-";
  };

  // `clock` is not owned and must outlive the table. INVALID_ARGUMENT on a non-positive option.
  static StatusOr<std::unique_ptr<LeaseTable>> Create(Options options, const Clock* clock);

  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // ALREADY_EXISTS if the task is queued or leased. A task that finished (done, failed, cancelled)
  // may be enqueued again: it starts over at attempt 1, and results under its old leases are
  // duplicates.
  Status Enqueue(const std::string& task_id, int priority);

  // Up to max_tasks grants, possibly none. INVALID_ARGUMENT on an empty worker or request id or a
  // non-positive max_tasks. Only each worker's latest request is remembered: a worker has one lease
  // request in flight at a time, so only that one can be retried.
  StatusOr<std::vector<LeaseGrant>> Lease(const std::string& worker_id, int max_tasks,
                                          const std::string& lease_request_id);

  // One result per lease id, in order.
  std::vector<HeartbeatResult> Heartbeat(const std::string& worker_id,
                                         const std::vector<std::string>& lease_ids);

  // NOT_FOUND for an unknown lease; INVALID_ARGUMENT if the lease is for another task;
  // FAILED_PRECONDITION if the task already failed for good.
  StatusOr<CompleteResult> Complete(const std::string& lease_id, const std::string& task_id);

  // NOT_FOUND for an unknown lease; FAILED_PRECONDITION if the lease already ended (its task has
  // been re-queued or finished, so this failure must not count a second time).
  StatusOr<FailResult> Fail(const std::string& lease_id, bool retryable);

  // The task ids returned to the queue.
  std::vector<std::string> ReleaseWorker(const std::string& worker_id);

  // NOT_FOUND for an unknown task; FAILED_PRECONDITION if it is done or failed. Cancelling a
  // cancelled task is OK.
  Status Cancel(const std::string& task_id);

  // The task ids re-queued because their lease expired (tasks that ran out of attempts are not
  // listed; they are FAILED).
  std::vector<std::string> ExpireLeases();

  // The tasks that failed for good (Fail, or an expiry that used the last attempt) since the last
  // call, each once: the owner of the tasks' jobs learns of failures that happen inside Heartbeat
  // and ExpireLeases this way.
  std::vector<std::string> TakeFailedTasks();

  LeaseTableStats Stats() const;

 private:
  enum class TaskState { kQueued, kLeased, kDone, kFailed, kCancelled };

  // Why a lease ended; decides what a late heartbeat hears.
  enum class LeaseEnd { kActive, kCompleted, kFailed, kExpired, kReleased, kCancelled, kSuperseded };

  struct Task {
    int priority = 0;
    uint64_t seq = 0;         // first-enqueue order, the FIFO tie-break
    uint64_t generation = 0;  // bumped by each Enqueue, so old leases of a re-enqueued task are stale
    int attempt = 1;          // the attempt the next lease runs
    TaskState state = TaskState::kQueued;
    std::string lease_id;  // the active lease when kLeased
  };

  struct LeaseRecord {
    std::string task_id;
    std::string worker_id;
    uint64_t generation = 0;
    int attempt = 0;
    std::chrono::steady_clock::time_point expires_at;
    LeaseEnd end = LeaseEnd::kActive;
  };

  struct LeaseRequest {
    std::string id;
    std::vector<LeaseGrant> grants;
  };

  // (priority, seq, task id): the queue's order.
  using QueueKey = std::tuple<int, uint64_t, std::string>;

  LeaseTable(Options options, const Clock* clock) : options_(options), clock_(clock) {}

  // The helpers below require mu_.
  void SetState(Task& task, TaskState state);
  // Returns a leased task to the queue, in its old place.
  void PushQueue(const std::string& task_id, Task& task);
  void EraseFromQueue(const std::string& task_id, const Task& task);
  // Ends an active lease; the caller decides what happens to its task.
  void EndLease(const std::string& lease_id, LeaseRecord& lease, LeaseEnd end);
  // Ends an expired lease and re-queues its task, or fails it when out of attempts. True if
  // re-queued.
  bool ExpireLease(const std::string& lease_id, LeaseRecord& lease);
  // Counts an attempt: re-queues the task with attempt + 1, or fails it if it has no attempts left
  // or `retryable` is false. True if re-queued.
  bool RetryOrFail(const std::string& task_id, Task& task, bool retryable);

  const Options options_;
  const Clock* const clock_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Task> tasks_;                 // guarded by mu_
  std::set<QueueKey> queue_;                                    // guarded by mu_
  std::unordered_map<std::string, LeaseRecord> leases_;         // guarded by mu_
  std::set<std::string> active_leases_;                         // guarded by mu_
  std::unordered_map<std::string, LeaseRequest> last_request_;  // by worker id; guarded by mu_
  uint64_t next_seq_ = 0;                                       // guarded by mu_
  uint64_t next_lease_ = 1;                                     // guarded by mu_
  LeaseTableStats stats_;                                       // guarded by mu_
  std::vector<std::string> failed_unreported_;                  // guarded by mu_
};

}  // namespace dtm
