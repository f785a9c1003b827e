// LeaseTable: the coordinator's queue of pending tasks and the leases under which workers run them.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
  kExpired,    // the lease ran out; its task went back to the queue (or failed)
  kUnknown,    // no such lease for this worker, or the lease already ended by its own Complete or Fail
  kCancelled,  // the task was cancelled (no job needs it): drop the work
  kRevoked,    // the task was completed under another lease, or the lease was released: drop the work
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

// Whose fault a failure is (worker_service.proto FailureCause).
enum class FailCause {
  kTask,       // the task can never succeed: it fails for good
  kWorker,     // this worker cannot run it: re-queued, never leased to this worker again, no attempt counted
  kTransient,  // may pass on another try: re-queued, an attempt counted
};

// Why a worker's leases are released all at once.
enum class ReleaseReason {
  kDrained,  // the worker stopped on purpose and handed them back: no attempt is counted
  kLost,     // the worker restarted and lost the work: each counts as an attempt, like an expiry
};

// What the table knows of one lease.
struct LeaseInfo {
  std::string task_id;
  std::string worker_id;
  std::chrono::steady_clock::time_point leased_at;
  bool active = false;  // not yet completed, failed, expired, released or cancelled
};

// Where a queued task's state lives, as seen from the worker asking for tasks (shard affinity,
// coordinator/shard_affinity.h).
enum class LeaseAffinity {
  kHeld,          // this worker keeps the task's shard's residual streams: leased to it first
  kFree,          // no live worker keeps them (or the task has no shard)
  kHeldElsewhere  // another worker keeps them: leased to this one after affinity_wait_ms queued, or
                  // one at a time when it would otherwise get nothing
};

// A queued task that some workers cannot run (FailCause::kWorker), with each one's reason.
struct ExcludedTask {
  std::string task_id;
  std::map<std::string, std::string> unable;       // worker id -> why
  std::chrono::steady_clock::time_point since;      // of the latest exclusion
};

struct LeaseTableStats {
  // Tasks queued and leased now.
  int64_t queued = 0;
  int64_t leased = 0;
  // Tasks that ended so, and did not start over (Enqueue) since; forgetting one does not uncount it.
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
//      lease_timeout_ms from now, skipping tasks that worker said it cannot run (6). The worker
//      names each request; a retry with the same name (its reply was lost) gets the same grants
//      instead of leasing more tasks. With an affinity, the first kAffinityScan queued tasks are
//      looked at: those whose state the worker holds go first, then the free ones and those held
//      elsewhere that have waited affinity_wait_ms, in queue order; a worker that would get none of
//      these gets the first task held elsewhere (one per request) instead of idling. Locality saves
//      work; it never holds a task back longer than the wait, nor leaves a worker idle.
//   3. Heartbeat pushes a held lease's expiry back by lease_timeout_ms, and tells the worker when to
//      drop a task: its lease expired, or the task was cancelled or completed elsewhere.
//   4. ExpireLeases (called periodically) ends every lease past its expiry. Heartbeat also expires a
//      lease it finds past expiry, so the answer does not depend on when the sweep last ran. Expiry
//      counts as an attempt: a task that kills its worker every time must eventually fail.
//   5. Complete accepts the first result for a task, under any lease of it, even one that expired
//      (results are keyed by what determines them, so a late result is as good as a fresh one).
//      Every later result is a duplicate. Any other lease of the task ends, and its holder hears
//      CANCELLED at its next heartbeat.
//   6. Fail, by cause: kTransient re-queues the task with attempt + 1, or marks it FAILED after
//      max_attempts attempts; kTask marks it FAILED; kWorker re-queues it without counting an
//      attempt and excludes that worker from it for good (QueuedWithExclusions lists such tasks,
//      so that the owner can give up on one no live worker can run).
//   7. ReleaseWorker returns a worker's tasks to the queue: without counting an attempt after a
//      graceful drain (the work was stopped, not lost to a fault), counting one when the worker
//      restarted (the work was lost, as on an expiry).
//   8. Cancel removes a task from the queue, or ends its lease (CANCELLED at the next heartbeat).
//
// Ended leases and finished tasks are remembered for retention_ms, so that a late heartbeat or
// result gets a precise answer rather than UNKNOWN, and then forgotten by the periodic
// ExpireLeases, so that the table's memory follows the tasks in flight, not every task the
// coordinator has ever run. A result under a forgotten lease is the owner's to judge (its store says
// whether the task has a result); CompleteWithoutLease then records it.
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
    // How long ended leases and finished tasks are remembered (see the class comment).
    int64_t retention_ms = 300000;
    // How long a task whose shard another worker holds waits for that worker before anyone gets it.
    int64_t affinity_wait_ms = 2000;
  };

  // Queued tasks an affinity looks at per lease request: the cost of one request stays bounded
  // whatever the queue's length.
  static constexpr int kAffinityScan = 1024;

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
  // request in flight at a time, so only that one can be retried. With `bytes_of` (called under
  // this table's lock), grants stop before the one that would take their sum past `max_bytes`,
  // the first always granted: a reply must fit a message whatever its tasks carry. With `affinity`
  // (called under this table's lock), tasks are chosen as the class comment's step 2 says.
  StatusOr<std::vector<LeaseGrant>> Lease(
      const std::string& worker_id, int max_tasks, const std::string& lease_request_id,
      const std::function<uint64_t(const std::string& task_id)>& bytes_of = nullptr, uint64_t max_bytes = 0,
      const std::function<LeaseAffinity(const std::string& task_id)>& affinity = nullptr);

  // One result per lease id, in order.
  std::vector<HeartbeatResult> Heartbeat(const std::string& worker_id,
                                         const std::vector<std::string>& lease_ids);

  // NOT_FOUND for an unknown lease; INVALID_ARGUMENT if the lease is for another task;
  // FAILED_PRECONDITION if the task already failed for good.
  StatusOr<CompleteResult> Complete(const std::string& lease_id, const std::string& task_id);

  // A result for a task that came under no lease this table knows (one of an earlier coordinator
  // run, or one forgotten after retention_ms): accepted as Complete would accept it, ending the
  // task's active lease if another worker holds one (REVOKED at its next heartbeat). NOT_FOUND for an
  // unknown task; FAILED_PRECONDITION if the task already failed for good.
  StatusOr<CompleteResult> CompleteWithoutLease(const std::string& task_id);

  // The lease, or nullopt when the table does not know it (any more).
  std::optional<LeaseInfo> FindLease(const std::string& lease_id) const;

  // NOT_FOUND for an unknown lease; FAILED_PRECONDITION if the lease already ended (its task has
  // been re-queued or finished, so this failure must not count a second time). `why` is kept for
  // kWorker (QueuedWithExclusions).
  StatusOr<FailResult> Fail(const std::string& lease_id, FailCause cause, const std::string& why = "");

  // The task ids returned to the queue (not those that a kLost release failed for running out of
  // attempts: TakeFailedTasks lists them).
  std::vector<std::string> ReleaseWorker(const std::string& worker_id, ReleaseReason reason);

  // Forgets what the table remembers of a worker (its last lease request), once it is gone.
  void ForgetWorker(const std::string& worker_id);

  // Queued tasks that at least one worker cannot run, in queue order.
  std::vector<ExcludedTask> QueuedWithExclusions() const;

  // Fails a queued task for good, e.g. one that no live worker can run. FAILED_PRECONDITION unless
  // it is queued; it is not listed by TakeFailedTasks (the caller reports it).
  Status GiveUp(const std::string& task_id);

  // Whether the task finished with a result (and is still remembered).
  bool IsDone(const std::string& task_id) const;

  // Forgets a finished task now (its result was deleted from the store, so that "done" no longer
  // holds); a task still queued or leased is kept.
  void ForgetFinished(const std::string& task_id);

  // NOT_FOUND for an unknown task; FAILED_PRECONDITION if it is done or failed. Cancelling a
  // cancelled task is OK.
  Status Cancel(const std::string& task_id);

  // The task ids re-queued because their lease expired (tasks that ran out of attempts are not
  // listed; they are FAILED). Also forgets leases and tasks past retention_ms.
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

  using TimePoint = std::chrono::steady_clock::time_point;

  struct Task {
    int priority = 0;
    uint64_t seq = 0;         // first-enqueue order, the FIFO tie-break
    uint64_t generation = 0;  // new at each Enqueue, so old leases of a re-enqueued task are stale
    int attempt = 1;          // the attempt the next lease runs
    TaskState state = TaskState::kQueued;
    std::string lease_id;                         // the active lease when kLeased
    std::map<std::string, std::string> unable;    // workers that cannot run it (FailCause::kWorker), and why
    TimePoint unable_since;                       // of the latest exclusion
    TimePoint queued_at;                          // when it last entered the queue
  };

  struct LeaseRecord {
    std::string task_id;
    std::string worker_id;
    uint64_t generation = 0;
    int attempt = 0;
    TimePoint leased_at;
    TimePoint expires_at;
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
  // The queued tasks Lease grants to `worker_id`, in order, at most max_tasks (more may be skipped
  // by the byte limit).
  std::vector<std::string> Candidates(const std::string& worker_id, int max_tasks,
                                      const std::function<LeaseAffinity(const std::string&)>& affinity, TimePoint now);
  // Ends an active lease; the caller decides what happens to its task.
  void EndLease(const std::string& lease_id, LeaseRecord& lease, LeaseEnd end);
  // Marks a task finished (done, failed or cancelled), to be forgotten after retention_ms.
  void Finish(const std::string& task_id, Task& task, TaskState state);
  // Accepts the first result of `task`, whose leases other than `by_lease` are superseded.
  CompleteResult Accept(const std::string& task_id, Task& task, const std::string& by_lease);
  // Forgets ended leases and finished tasks older than retention_ms.
  void Forget(TimePoint now);
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
  uint64_t generations_ = 0;                                    // the last generation given; guarded by mu_
  LeaseTableStats stats_;                                       // guarded by mu_
  std::vector<std::string> failed_unreported_;                  // guarded by mu_
  std::set<std::string> with_exclusions_;  // tasks with a non-empty `unable` (maybe no longer queued); guarded by mu_
  // In the order they ended: (when, lease id) and (when, task id, generation); guarded by mu_.
  std::deque<std::pair<TimePoint, std::string>> ended_leases_;
  std::deque<std::tuple<TimePoint, std::string, uint64_t>> finished_tasks_;
};

}  // namespace dtm
