// GangTable: tasks that run on several workers at once (a training gang, SPEC "Recovery training"),
// and the member leases under which they run. The LeaseTable's counterpart for tasks of more than
// one worker; the TaskTable owns one and routes a gang task's calls here.
//
// The algorithm:
//   1. Enqueue makes a task wait for `size` workers of its pool.
//   2. Offer is a worker's LeaseTasks call: a worker asks only when it runs nothing, so an offer
//      says the worker is idle. An idle worker of a pool with a waiting gang, and with a gang
//      address (where its rendezvous store listens if it becomes rank 0), is held as a candidate
//      (it is told it is reserved, and gets no other task) until `size` candidates are there; then
//      the gang forms: ranks in the order the candidates came, the rendezvous at rank 0's address,
//      one lease per member expiring lease_timeout_ms from now. Each member gets its grant at its
//      next offer (the one that completed the gang, at once). A candidate not heard from for
//      candidate_ttl_ms is dropped (it died, or took other work).
//   3. Heartbeat extends a member's lease while its attempt stands.
//   4. An attempt ends for every member when one member's lease expires, a member fails, or its
//      worker registers again or drains: the other members hear REVOKED and stop (a member stuck
//      in a collective ends by the gang's timeout), and the task waits for a new gang, which
//      resumes from the run's checkpoint. A fault (expiry, transient failure, a lost worker) counts
//      an attempt, and the task fails after max_attempts; a drain does not. A failure that is the
//      task's (FailCause::kTask) fails it at once.
//   5. Complete: rank 0's result finishes the task (the others report only that they are done);
//      a rank-0 result under a lease of an ended attempt, or of none this table knows (an earlier
//      coordinator run), is accepted as long as the task is not finished: the model it names was
//      written whole.
//   6. Cancel ends the task; its members hear CANCELLED.
//
// Thread-safety: not thread-safe; its owner (the TaskTable, under the coordinator's mutex) calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/lease_table.h"

namespace dtm {

struct GangGrant {
  std::string task_id;
  std::string lease_id;
  int rank = 0;
  int size = 0;
  int attempt = 0;
  std::string rendezvous;  // rank 0's gang address
  std::chrono::steady_clock::time_point expires_at;
};

// What became of a gang task's lease, for its holder's report.
struct GangLease {
  std::string task_id;
  std::string worker_id;
  int rank = 0;
};

class GangTable {
 public:
  struct Options {
    int64_t lease_timeout_ms = 30000;
    int max_attempts = 5;
    std::string lease_id_prefix = "gang-";
    int64_t candidate_ttl_ms = 5000;
  };

  GangTable(Options options, const Clock* clock) : options_(std::move(options)), clock_(clock) {}

  // ALREADY_EXISTS when the task is waiting or running.
  Status Enqueue(const std::string& task_id, const std::string& pool, int size);
  bool Holds(const std::string& task_id) const { return tasks_.count(task_id) > 0; }

  // See the class comment (2). `*reserved` is true when the worker must take no other task now.
  std::optional<GangGrant> Offer(const std::string& worker_id, const std::string& pool,
                                 const std::string& gang_address, bool* reserved);

  // Whether this table made the lease (its id has the prefix).
  bool IsGangLease(const std::string& lease_id) const;
  std::optional<GangLease> FindLease(const std::string& lease_id) const;

  HeartbeatResult Heartbeat(const std::string& worker_id, const std::string& lease_id);

  // Rank 0 under any lease of the task (or none: `lease_id` unknown) while it is unfinished: kAccepted,
  // and the task is done (its other members hear REVOKED). Another rank: kAccepted while its attempt
  // stands (its lease ends), kDuplicate otherwise. kDuplicate for a finished task, kCancelled for a
  // cancelled one. NOT_FOUND for a task this table does not hold.
  StatusOr<CompleteResult> Complete(const std::string& task_id, const std::string& lease_id, int rank);

  // Ends the lease's attempt (4). NOT_FOUND for an unknown lease, FAILED_PRECONDITION for one whose
  // attempt ended already (the failure is its consequence, not a new fault).
  StatusOr<FailResult> Fail(const std::string& lease_id, FailCause cause, const std::string& why);

  // A worker registered again (kLost) or drained (kDrained): the attempts it was in end. Returns
  // the tasks that went back to waiting.
  std::vector<std::string> ReleaseWorker(const std::string& worker_id, ReleaseReason reason);

  // The task ends: its members hear CANCELLED. Its record stays (a few hundred bytes, until the
  // coordinator restarts) so that a member still training keeps hearing it. NOT_FOUND when not held.
  Status Cancel(const std::string& task_id);

  // Ends attempts with an expired member lease. Returns the tasks that went back to waiting; those
  // out of attempts go to TakeFailed.
  std::vector<std::string> Expire();
  // Tasks that failed for good since the last call, each once, with why.
  std::vector<std::pair<std::string, std::string>> TakeFailed();

  // Forgets a finished (done) task once its result is stored and its job knows.
  void Forget(const std::string& task_id);

  // The candidates of `pool` held now.
  int CandidatesIn(const std::string& pool) const;
  // The task's gang size, whether a gang runs it now, and its attempt number.
  struct View {
    int size = 0;
    bool running = false;
    int attempt = 0;
  };
  std::optional<View> Find(const std::string& task_id) const;
  // Tasks waiting for a gang, and tasks a gang runs now (each counted once, whatever its size).
  std::pair<int64_t, int64_t> WaitingAndRunning() const;

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  enum class State { kWaiting, kRunning, kDone, kCancelled, kFailed };

  struct Member {
    std::string worker_id;
    std::string lease_id;
    TimePoint expires_at;
    bool delivered = false;  // the worker has its grant
    bool finished = false;   // the worker reported the task done
  };
  struct Task {
    std::string pool;
    int size = 0;
    int attempt = 1;  // numbers the gangs, so that an ended attempt's leases are told apart
    int faults = 0;   // attempts ended by a fault; max_attempts of them fail the task
    State state = State::kWaiting;
    std::vector<Member> members;  // the running attempt's, by rank
    std::string rendezvous;
  };
  struct Candidate {
    std::string address;
    TimePoint last_seen;
    uint64_t order = 0;
  };
  struct LeaseRecord {
    std::string task_id;
    std::string worker_id;
    int rank = 0;
    int attempt = 0;
  };

  // Starts the task's gang from its pool's candidates when there are enough.
  void TryForm(const std::string& task_id, Task& task);
  // Ends the task's running attempt: a fault is counted (the task fails at max_attempts of them).
  // True when the task waits again.
  bool EndAttempt(const std::string& task_id, Task& task, bool count_attempt, const std::string& why);
  GangGrant GrantOf(const std::string& task_id, const Task& task, int rank) const;

  const Options options_;
  const Clock* const clock_;
  std::map<std::string, Task> tasks_;                                // by task id
  std::map<std::string, std::map<std::string, Candidate>> candidates_;  // pool -> worker id -> candidate
  std::map<std::string, LeaseRecord> leases_;                        // every lease made, by id
  std::vector<std::pair<std::string, std::string>> failed_;          // not yet taken
  uint64_t next_lease_ = 1;
  uint64_t next_order_ = 0;
};

}  // namespace dtm
