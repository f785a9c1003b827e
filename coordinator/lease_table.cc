#include "coordinator/lease_table.h"

#include <algorithm>
#include <utility>

namespace dtm {

StatusOr<std::unique_ptr<LeaseTable>> LeaseTable::Create(Options options, const Clock* clock) {
  if (options.lease_timeout_ms <= 0) {
    return InvalidArgumentError("lease_timeout_ms must be positive, got " +
                                std::to_string(options.lease_timeout_ms));
  }
  if (options.max_attempts < 1) {
    return InvalidArgumentError("max_attempts must be at least 1, got " +
                                std::to_string(options.max_attempts));
  }
  if (options.retention_ms < 0) {
    return InvalidArgumentError("retention_ms must not be negative, got " +
                                std::to_string(options.retention_ms));
  }
  if (clock == nullptr) return InvalidArgumentError("clock must not be null");
  return std::unique_ptr<LeaseTable>(new LeaseTable(options, clock));
}

Status LeaseTable::Enqueue(const std::string& task_id, int priority) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = tasks_.try_emplace(task_id);
  Task& task = it->second;
  if (!inserted) {
    if (task.state == TaskState::kQueued || task.state == TaskState::kLeased) {
      return Status(StatusCode::kAlreadyExists, "task " + task_id + " is already queued or leased");
    }
    // A finished task starts over.
    SetState(task, TaskState::kQueued);
  } else {
    ++stats_.queued;  // a new Task starts in kQueued, so SetState would not count it
  }
  task.priority = priority;
  task.seq = next_seq_++;
  // Unique over the table's life, not per task: a task forgotten and enqueued afresh must not take a
  // generation one of its old leases still carries.
  task.generation = ++generations_;
  task.attempt = 1;
  task.lease_id.clear();
  task.unable.clear();
  with_exclusions_.erase(task_id);
  task.queued_at = clock_->Now();
  queue_.emplace(task.priority, task.seq, task_id);
  return OkStatus();
}

StatusOr<std::vector<LeaseGrant>> LeaseTable::Lease(const std::string& worker_id, int max_tasks,
                                                    const std::string& lease_request_id,
                                                    const std::function<uint64_t(const std::string&)>& bytes_of,
                                                    uint64_t max_bytes,
                                                    const std::function<LeaseAffinity(const std::string&)>& affinity) {
  if (worker_id.empty()) return InvalidArgumentError("worker_id must not be empty");
  if (lease_request_id.empty()) return InvalidArgumentError("lease_request_id must not be empty");
  if (max_tasks <= 0)
    return InvalidArgumentError("max_tasks must be positive, got " + std::to_string(max_tasks));

  std::lock_guard<std::mutex> lock(mu_);
  LeaseRequest& last = last_request_[worker_id];
  if (last.id == lease_request_id) return last.grants;

  std::vector<LeaseGrant> grants;
  const auto now = clock_->Now();
  const auto expires_at = now + std::chrono::milliseconds(options_.lease_timeout_ms);
  uint64_t bytes = 0;
  for (const std::string& task_id : Candidates(worker_id, max_tasks, affinity, now)) {
    Task& task = tasks_.at(task_id);
    if (bytes_of) {
      const uint64_t size = bytes_of(task_id);
      if (!grants.empty() && bytes + size > max_bytes) break;
      bytes += size;
    }
    EraseFromQueue(task_id, task);

    std::string lease_id = options_.lease_id_prefix + std::to_string(next_lease_++);
    LeaseRecord& lease = leases_[lease_id];
    lease.task_id = task_id;
    lease.worker_id = worker_id;
    lease.generation = task.generation;
    lease.attempt = task.attempt;
    lease.leased_at = now;
    lease.expires_at = expires_at;
    active_leases_.insert(lease_id);

    SetState(task, TaskState::kLeased);
    task.lease_id = lease_id;
    grants.push_back({task_id, lease_id, task.attempt, expires_at});
  }
  last.id = lease_request_id;
  last.grants = grants;
  return grants;
}

std::vector<std::string> LeaseTable::Candidates(const std::string& worker_id, int max_tasks,
                                                const std::function<LeaseAffinity(const std::string&)>& affinity,
                                                TimePoint now) {
  const size_t want = static_cast<size_t>(max_tasks);
  std::vector<std::string> held, others;
  std::string oldest_elsewhere;  // the first task held elsewhere still within its wait
  const auto waited = std::chrono::milliseconds(options_.affinity_wait_ms);
  int scanned = 0;
  // Tasks this worker cannot run are skipped where they stand, keeping their place for others.
  for (auto next = queue_.begin(); next != queue_.end(); ++next) {
    const std::string& task_id = std::get<2>(*next);
    const Task& task = tasks_.at(task_id);
    if (task.unable.count(worker_id) != 0) continue;
    if (!affinity) {
      others.push_back(task_id);
      if (others.size() >= want) break;
      continue;
    }
    if (scanned++ >= kAffinityScan) break;
    switch (affinity(task_id)) {
      case LeaseAffinity::kHeld: held.push_back(task_id); break;
      case LeaseAffinity::kFree: others.push_back(task_id); break;
      case LeaseAffinity::kHeldElsewhere:
        if (now - task.queued_at >= waited) {
          others.push_back(task_id);
        } else if (oldest_elsewhere.empty()) {
          oldest_elsewhere = task_id;
        }
        break;
    }
    if (held.size() >= want) break;
  }
  // A worker that would get nothing takes one task another holds rather than idle: reuse saves part
  // of a task, an idle worker loses all of its time (a race's rounds of a few tasks, a stage's tail).
  if (held.empty() && others.empty() && !oldest_elsewhere.empty()) others.push_back(oldest_elsewhere);
  for (std::string& task_id : others) {
    if (held.size() >= want) break;
    held.push_back(std::move(task_id));
  }
  return held;
}

std::vector<HeartbeatResult> LeaseTable::Heartbeat(const std::string& worker_id,
                                                   const std::vector<std::string>& lease_ids) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = clock_->Now();
  std::vector<HeartbeatResult> results;
  results.reserve(lease_ids.size());
  for (const std::string& lease_id : lease_ids) {
    auto it = leases_.find(lease_id);
    // Another worker's lease is UNKNOWN to this one: a worker must not keep someone else's lease alive.
    if (it == leases_.end() || it->second.worker_id != worker_id) {
      results.push_back(HeartbeatResult::kUnknown);
      continue;
    }
    LeaseRecord& lease = it->second;
    if (lease.end == LeaseEnd::kActive && now >= lease.expires_at) ExpireLease(lease_id, lease);
    switch (lease.end) {
      case LeaseEnd::kActive:
        lease.expires_at = now + std::chrono::milliseconds(options_.lease_timeout_ms);
        results.push_back(HeartbeatResult::kValid);
        break;
      case LeaseEnd::kExpired:
        results.push_back(HeartbeatResult::kExpired);
        break;
      case LeaseEnd::kCancelled:
        results.push_back(HeartbeatResult::kCancelled);
        break;
      case LeaseEnd::kReleased:
      case LeaseEnd::kSuperseded:
        results.push_back(HeartbeatResult::kRevoked);
        break;
      case LeaseEnd::kCompleted:
      case LeaseEnd::kFailed:
        // The worker itself ended it; a heartbeat for it is a worker bug, not a task to drop.
        results.push_back(HeartbeatResult::kUnknown);
        break;
    }
  }
  return results;
}

CompleteResult LeaseTable::Accept(const std::string& task_id, Task& task, const std::string& by_lease) {
  switch (task.state) {
    case TaskState::kDone:
      return CompleteResult::kDuplicate;
    case TaskState::kCancelled:
      return CompleteResult::kCancelled;
    case TaskState::kFailed:
      break;  // the callers refuse this before
    case TaskState::kQueued:
      // Its lease expired or was released and the task waits for another worker: this result wins.
      EraseFromQueue(task_id, task);
      break;
    case TaskState::kLeased:
      // Under another worker's lease, or under this one past expiry but not yet swept: the result is
      // still the first, so it is accepted, and no expiry is counted because no work was lost.
      if (task.lease_id != by_lease) {
        EndLease(task.lease_id, leases_.at(task.lease_id), LeaseEnd::kSuperseded);
      }
      break;
  }
  task.lease_id.clear();
  Finish(task_id, task, TaskState::kDone);
  return CompleteResult::kAccepted;
}

StatusOr<CompleteResult> LeaseTable::Complete(const std::string& lease_id, const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return NotFoundError("no lease " + lease_id);
  LeaseRecord& lease = it->second;
  if (lease.task_id != task_id) {
    return InvalidArgumentError("lease " + lease_id + " is for task " + lease.task_id + ", not " + task_id);
  }
  auto task = tasks_.find(task_id);
  if (task == tasks_.end() || lease.generation != task->second.generation) return CompleteResult::kDuplicate;
  if (task->second.state == TaskState::kFailed)
    return FailedPreconditionError("task " + task_id + " already failed");
  const CompleteResult result = Accept(task_id, task->second, lease_id);
  if (result == CompleteResult::kAccepted && lease.end == LeaseEnd::kActive) {
    EndLease(lease_id, lease, LeaseEnd::kCompleted);
  }
  return result;
}

StatusOr<CompleteResult> LeaseTable::CompleteWithoutLease(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto task = tasks_.find(task_id);
  if (task == tasks_.end()) return NotFoundError("no task " + task_id);
  if (task->second.state == TaskState::kFailed)
    return FailedPreconditionError("task " + task_id + " already failed");
  return Accept(task_id, task->second, /*by_lease=*/"");
}

std::optional<LeaseInfo> LeaseTable::FindLease(const std::string& lease_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return std::nullopt;
  return LeaseInfo{it->second.task_id, it->second.worker_id, it->second.leased_at,
                   it->second.end == LeaseEnd::kActive};
}

StatusOr<FailResult> LeaseTable::Fail(const std::string& lease_id, FailCause cause, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return NotFoundError("no lease " + lease_id);
  LeaseRecord& lease = it->second;
  if (lease.end != LeaseEnd::kActive) {
    return FailedPreconditionError("lease " + lease_id + " already ended");
  }
  EndLease(lease_id, lease, LeaseEnd::kFailed);
  Task& task = tasks_.at(lease.task_id);
  task.lease_id.clear();
  switch (cause) {
    case FailCause::kTask:
      return RetryOrFail(lease.task_id, task, /*retryable=*/false) ? FailResult::kRequeued
                                                                   : FailResult::kFailed;
    case FailCause::kTransient:
      return RetryOrFail(lease.task_id, task, /*retryable=*/true) ? FailResult::kRequeued
                                                                  : FailResult::kFailed;
    case FailCause::kWorker:
      break;
  }
  // Not the task's fault: it keeps its attempt, and this worker never gets it again. That ends: each
  // worker can be excluded once, and the owner gives up on a task no live worker can run.
  task.unable[lease.worker_id] = why;
  with_exclusions_.insert(lease.task_id);
  task.unable_since = clock_->Now();
  PushQueue(lease.task_id, task);
  ++stats_.requeued_total;
  return FailResult::kRequeued;
}

std::vector<std::string> LeaseTable::ReleaseWorker(const std::string& worker_id, ReleaseReason reason) {
  std::lock_guard<std::mutex> lock(mu_);
  // A retried lease request after a release must lease afresh, not get back the leases just released.
  last_request_.erase(worker_id);
  std::vector<std::string> released;
  for (auto it = active_leases_.begin(); it != active_leases_.end();) {
    const std::string lease_id = *it++;  // EndLease erases it from active_leases_
    LeaseRecord& lease = leases_.at(lease_id);
    if (lease.worker_id != worker_id) continue;
    EndLease(lease_id, lease, LeaseEnd::kReleased);
    Task& task = tasks_.at(lease.task_id);
    task.lease_id.clear();
    if (reason == ReleaseReason::kLost) {
      if (RetryOrFail(lease.task_id, task, /*retryable=*/true)) released.push_back(lease.task_id);
      continue;
    }
    PushQueue(lease.task_id, task);
    ++stats_.requeued_total;
    released.push_back(lease.task_id);
  }
  return released;
}

void LeaseTable::ForgetWorker(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  last_request_.erase(worker_id);
}

std::vector<ExcludedTask> LeaseTable::QueuedWithExclusions() const {
  std::lock_guard<std::mutex> lock(mu_);
  // Only the tasks some worker said it cannot run: the scheduler asks at every tick, and the queue
  // may hold a stage of 100,000 tasks.
  std::vector<std::pair<QueueKey, const Task*>> queued;
  for (const std::string& task_id : with_exclusions_) {
    auto it = tasks_.find(task_id);
    if (it == tasks_.end() || it->second.state != TaskState::kQueued) continue;
    queued.emplace_back(QueueKey(it->second.priority, it->second.seq, task_id), &it->second);
  }
  std::sort(queued.begin(), queued.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<ExcludedTask> out;
  for (const auto& [key, task] : queued) out.push_back({std::get<2>(key), task->unable, task->unable_since});
  return out;
}

Status LeaseTable::GiveUp(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end() || it->second.state != TaskState::kQueued) {
    return FailedPreconditionError("task " + task_id + " is not queued");
  }
  EraseFromQueue(task_id, it->second);
  Finish(task_id, it->second, TaskState::kFailed);
  return OkStatus();
}

bool LeaseTable::IsDone(const std::string& task_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  return it != tasks_.end() && it->second.state == TaskState::kDone;
}

void LeaseTable::ForgetFinished(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end() || it->second.state == TaskState::kQueued || it->second.state == TaskState::kLeased) return;
  // Its ended leases stay until their retention; a late result under one finds no task and is a
  // duplicate, which the store then decides.
  tasks_.erase(it);
  with_exclusions_.erase(task_id);
}

Status LeaseTable::Cancel(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return NotFoundError("no task " + task_id);
  Task& task = it->second;
  switch (task.state) {
    case TaskState::kCancelled:
      return OkStatus();
    case TaskState::kDone:
    case TaskState::kFailed:
      return FailedPreconditionError("task " + task_id + " already finished");
    case TaskState::kQueued:
      EraseFromQueue(task_id, task);
      break;
    case TaskState::kLeased:
      EndLease(task.lease_id, leases_.at(task.lease_id), LeaseEnd::kCancelled);
      task.lease_id.clear();
      break;
  }
  Finish(task_id, task, TaskState::kCancelled);
  return OkStatus();
}

std::vector<std::string> LeaseTable::ExpireLeases() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = clock_->Now();
  std::vector<std::string> requeued;
  for (auto it = active_leases_.begin(); it != active_leases_.end();) {
    const std::string lease_id = *it++;  // ExpireLease erases it from active_leases_
    LeaseRecord& lease = leases_.at(lease_id);
    if (now < lease.expires_at) continue;
    if (ExpireLease(lease_id, lease)) requeued.push_back(lease.task_id);
  }
  Forget(now);
  return requeued;
}

std::vector<std::string> LeaseTable::TakeFailedTasks() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> failed;
  failed.swap(failed_unreported_);
  return failed;
}

LeaseTableStats LeaseTable::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void LeaseTable::SetState(Task& task, TaskState state) {
  auto count = [this](TaskState s) -> int64_t& {
    switch (s) {
      case TaskState::kQueued:
        return stats_.queued;
      case TaskState::kLeased:
        return stats_.leased;
      case TaskState::kDone:
        return stats_.done;
      case TaskState::kFailed:
        return stats_.failed;
      case TaskState::kCancelled:
        break;
    }
    return stats_.cancelled;
  };
  --count(task.state);
  ++count(state);
  task.state = state;
}

void LeaseTable::PushQueue(const std::string& task_id, Task& task) {
  SetState(task, TaskState::kQueued);
  task.queued_at = clock_->Now();
  queue_.emplace(task.priority, task.seq, task_id);
}

void LeaseTable::EraseFromQueue(const std::string& task_id, const Task& task) {
  queue_.erase(QueueKey(task.priority, task.seq, task_id));
}

void LeaseTable::EndLease(const std::string& lease_id, LeaseRecord& lease, LeaseEnd end) {
  lease.end = end;
  active_leases_.erase(lease_id);
  ended_leases_.emplace_back(clock_->Now(), lease_id);
}

void LeaseTable::Finish(const std::string& task_id, Task& task, TaskState state) {
  SetState(task, state);
  finished_tasks_.emplace_back(clock_->Now(), task_id, task.generation);
}

void LeaseTable::Forget(TimePoint now) {
  const TimePoint cutoff = now - std::chrono::milliseconds(options_.retention_ms);
  // Every lease of a task ends no later than the task finishes, so a task is forgotten no earlier
  // than its leases: no remembered lease ever names a forgotten task's current generation.
  while (!ended_leases_.empty() && ended_leases_.front().first <= cutoff) {
    auto it = leases_.find(ended_leases_.front().second);
    if (it != leases_.end() && it->second.end != LeaseEnd::kActive) leases_.erase(it);
    ended_leases_.pop_front();
  }
  while (!finished_tasks_.empty() && std::get<0>(finished_tasks_.front()) <= cutoff) {
    const auto& [when, task_id, generation] = finished_tasks_.front();
    auto it = tasks_.find(task_id);
    // A task enqueued again since has another generation, and is not forgotten.
    if (it != tasks_.end() && it->second.generation == generation &&
        (it->second.state == TaskState::kDone || it->second.state == TaskState::kFailed ||
         it->second.state == TaskState::kCancelled)) {
      with_exclusions_.erase(task_id);
      tasks_.erase(it);
    }
    finished_tasks_.pop_front();
  }
}

bool LeaseTable::ExpireLease(const std::string& lease_id, LeaseRecord& lease) {
  EndLease(lease_id, lease, LeaseEnd::kExpired);
  ++stats_.expired_total;
  Task& task = tasks_.at(lease.task_id);
  task.lease_id.clear();
  return RetryOrFail(lease.task_id, task, /*retryable=*/true);
}

bool LeaseTable::RetryOrFail(const std::string& task_id, Task& task, bool retryable) {
  if (!retryable || task.attempt >= options_.max_attempts) {
    Finish(task_id, task, TaskState::kFailed);
    failed_unreported_.push_back(task_id);
    return false;
  }
  ++task.attempt;
  PushQueue(task_id, task);
  ++stats_.requeued_total;
  return true;
}

}  // namespace dtm
