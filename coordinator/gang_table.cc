#include "coordinator/gang_table.h"

#include <algorithm>

namespace dtm {

Status GangTable::Enqueue(const std::string& task_id, const std::string& pool, int size) {
  if (size < 1) return InvalidArgumentError("a gang needs at least 1 member, got " + std::to_string(size));
  auto it = tasks_.find(task_id);
  if (it != tasks_.end() && (it->second.state == State::kWaiting || it->second.state == State::kRunning)) {
    return Status(StatusCode::kAlreadyExists, "gang task " + task_id + " is waiting or running");
  }
  Task task;
  task.pool = pool;
  task.size = size;
  tasks_[task_id] = std::move(task);
  return OkStatus();
}

bool GangTable::IsGangLease(const std::string& lease_id) const {
  return lease_id.rfind(options_.lease_id_prefix, 0) == 0;
}

std::optional<GangLease> GangTable::FindLease(const std::string& lease_id) const {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return std::nullopt;
  return GangLease{it->second.task_id, it->second.worker_id, it->second.rank};
}

GangGrant GangTable::GrantOf(const std::string& task_id, const Task& task, int rank) const {
  const Member& m = task.members[static_cast<size_t>(rank)];
  return GangGrant{task_id, m.lease_id, rank, task.size, task.attempt, task.rendezvous, m.expires_at};
}

std::optional<GangGrant> GangTable::Offer(const std::string& worker_id, const std::string& pool,
                                          const std::string& gang_address, bool* reserved) {
  *reserved = false;
  const TimePoint now = clock_->Now();
  // A member of a formed gang gets its grant (again, if the reply was lost: it asks only when idle).
  for (auto& [task_id, task] : tasks_) {
    if (task.state != State::kRunning) continue;
    for (size_t r = 0; r < task.members.size(); ++r) {
      Member& m = task.members[r];
      if (m.worker_id == worker_id && !m.finished) {
        m.delivered = true;
        *reserved = true;
        return GrantOf(task_id, task, static_cast<int>(r));
      }
    }
  }
  auto& pool_candidates = candidates_[pool];
  // Candidates that stopped asking are gone (dead, or busy with other work).
  for (auto it = pool_candidates.begin(); it != pool_candidates.end();) {
    if (now - it->second.last_seen > std::chrono::milliseconds(options_.candidate_ttl_ms)) {
      it = pool_candidates.erase(it);
    } else {
      ++it;
    }
  }
  bool waiting = false;
  for (const auto& [id, task] : tasks_) waiting = waiting || (task.state == State::kWaiting && task.pool == pool);
  if (!waiting || gang_address.empty()) {
    pool_candidates.erase(worker_id);
    return std::nullopt;
  }
  Candidate& candidate = pool_candidates[worker_id];
  if (candidate.last_seen == TimePoint{}) candidate.order = next_order_++;
  candidate.address = gang_address;
  candidate.last_seen = now;
  *reserved = true;
  // The pool's waiting tasks in task id order; the first takes the candidates before any other.
  for (auto& [task_id, task] : tasks_) {
    if (task.state != State::kWaiting || task.pool != pool) continue;
    TryForm(task_id, task);
    if (task.state != State::kRunning) break;  // the first waiting task takes every candidate first
    for (size_t r = 0; r < task.members.size(); ++r) {
      if (task.members[r].worker_id == worker_id) {
        task.members[r].delivered = true;
        return GrantOf(task_id, task, static_cast<int>(r));
      }
    }
  }
  return std::nullopt;
}

void GangTable::TryForm(const std::string& task_id, Task& task) {
  auto& pool_candidates = candidates_[task.pool];
  if (static_cast<int>(pool_candidates.size()) < task.size) return;
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [worker_id, c] : pool_candidates) order.emplace_back(c.order, worker_id);
  std::sort(order.begin(), order.end());
  order.resize(static_cast<size_t>(task.size));
  const TimePoint now = clock_->Now();
  task.members.clear();
  task.rendezvous = pool_candidates.at(order[0].second).address;
  for (size_t r = 0; r < order.size(); ++r) {
    Member m;
    m.worker_id = order[r].second;
    m.lease_id = options_.lease_id_prefix + std::to_string(next_lease_++);
    m.expires_at = now + std::chrono::milliseconds(options_.lease_timeout_ms);
    leases_[m.lease_id] = LeaseRecord{task_id, m.worker_id, static_cast<int>(r), task.attempt};
    task.members.push_back(std::move(m));
    pool_candidates.erase(order[r].second);
  }
  task.state = State::kRunning;
}

HeartbeatResult GangTable::Heartbeat(const std::string& worker_id, const std::string& lease_id) {
  auto lease = leases_.find(lease_id);
  if (lease == leases_.end() || lease->second.worker_id != worker_id) return HeartbeatResult::kUnknown;
  auto it = tasks_.find(lease->second.task_id);
  if (it == tasks_.end()) return HeartbeatResult::kUnknown;
  Task& task = it->second;
  if (task.state == State::kCancelled || task.state == State::kFailed) return HeartbeatResult::kCancelled;
  if (task.state != State::kRunning || lease->second.attempt != task.attempt) return HeartbeatResult::kRevoked;
  Member& m = task.members[static_cast<size_t>(lease->second.rank)];
  if (m.lease_id != lease_id || m.finished) return HeartbeatResult::kRevoked;
  const TimePoint now = clock_->Now();
  if (now > m.expires_at) {
    // Past its expiry: as the sweep would, and this member hears it.
    EndAttempt(it->first, task, /*count_attempt=*/true, "member " + worker_id + "'s lease expired");
    return HeartbeatResult::kExpired;
  }
  m.expires_at = now + std::chrono::milliseconds(options_.lease_timeout_ms);
  return HeartbeatResult::kValid;
}

StatusOr<CompleteResult> GangTable::Complete(const std::string& task_id, const std::string& lease_id, int rank) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return NotFoundError("gang task " + task_id + " is not held here");
  Task& task = it->second;
  if (task.state == State::kDone) return CompleteResult::kDuplicate;
  if (task.state == State::kCancelled) return CompleteResult::kCancelled;
  if (task.state == State::kFailed) return FailedPreconditionError("gang task " + task_id + " failed for good");
  auto lease = leases_.find(lease_id);
  const bool current = lease != leases_.end() && lease->second.task_id == task_id &&
                       task.state == State::kRunning && lease->second.attempt == task.attempt;
  if (rank == 0) {
    task.state = State::kDone;  // the others hear REVOKED: their part is done
    return CompleteResult::kAccepted;
  }
  if (!current) return CompleteResult::kDuplicate;
  task.members[static_cast<size_t>(lease->second.rank)].finished = true;
  return CompleteResult::kAccepted;
}

StatusOr<FailResult> GangTable::Fail(const std::string& lease_id, FailCause cause, const std::string& why) {
  auto lease = leases_.find(lease_id);
  if (lease == leases_.end()) return NotFoundError("no gang lease " + lease_id);
  auto it = tasks_.find(lease->second.task_id);
  if (it == tasks_.end() || it->second.state != State::kRunning || lease->second.attempt != it->second.attempt) {
    return FailedPreconditionError("gang lease " + lease_id + "'s attempt has ended already");
  }
  Task& task = it->second;
  if (cause == FailCause::kTask) {
    EndAttempt(it->first, task, /*count_attempt=*/false, why);
    task.state = State::kFailed;
    failed_.emplace_back(it->first, why);
    return FailResult::kFailed;
  }
  // A member that cannot run it (kWorker) counts like a fault here: the gang formed with it, and
  // another formation may leave it out.
  return EndAttempt(it->first, task, /*count_attempt=*/cause != FailCause::kWorker, why) ? FailResult::kRequeued
                                                                                       : FailResult::kFailed;
}

bool GangTable::EndAttempt(const std::string& task_id, Task& task, bool count_attempt, const std::string& why) {
  task.members.clear();
  task.rendezvous.clear();
  if (count_attempt && ++task.faults >= options_.max_attempts) {
    task.state = State::kFailed;
    failed_.emplace_back(task_id, "the gang's attempts ran out (" + std::to_string(options_.max_attempts) +
                                      "); the last ended so: " + why);
    return false;
  }
  ++task.attempt;
  task.state = State::kWaiting;
  return true;
}

std::vector<std::string> GangTable::ReleaseWorker(const std::string& worker_id, ReleaseReason reason) {
  std::vector<std::string> requeued;
  for (auto& [pool, pool_candidates] : candidates_) pool_candidates.erase(worker_id);
  for (auto& [task_id, task] : tasks_) {
    if (task.state != State::kRunning) continue;
    const bool member = std::any_of(task.members.begin(), task.members.end(), [&](const Member& m) {
      return m.worker_id == worker_id && !m.finished;
    });
    if (!member) continue;
    const std::string why = "member " + worker_id + (reason == ReleaseReason::kDrained ? " drained" : " restarted");
    if (EndAttempt(task_id, task, reason == ReleaseReason::kLost, why)) requeued.push_back(task_id);
  }
  return requeued;
}

Status GangTable::Cancel(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return NotFoundError("gang task " + task_id + " is not held here");
  it->second.state = State::kCancelled;
  it->second.members.clear();
  return OkStatus();
}

std::vector<std::string> GangTable::Expire() {
  std::vector<std::string> requeued;
  const TimePoint now = clock_->Now();
  for (auto& [task_id, task] : tasks_) {
    if (task.state != State::kRunning) continue;
    for (const Member& m : task.members) {
      if (m.finished || now <= m.expires_at) continue;
      // A member that never came for its grant (died between asking and being picked) also ends here.
      if (EndAttempt(task_id, task, /*count_attempt=*/true,
                     "member " + m.worker_id + (m.delivered ? " stopped heartbeating" : " never took its lease"))) {
        requeued.push_back(task_id);
      }
      break;
    }
  }
  return requeued;
}

std::vector<std::pair<std::string, std::string>> GangTable::TakeFailed() {
  std::vector<std::pair<std::string, std::string>> out;
  out.swap(failed_);
  return out;
}

void GangTable::Forget(const std::string& task_id) {
  tasks_.erase(task_id);
  for (auto it = leases_.begin(); it != leases_.end();) {
    it = it->second.task_id == task_id ? leases_.erase(it) : std::next(it);
  }
}

std::pair<int64_t, int64_t> GangTable::WaitingAndRunning() const {
  int64_t waiting = 0, running = 0;
  for (const auto& [task_id, task] : tasks_) {
    waiting += task.state == State::kWaiting;
    running += task.state == State::kRunning;
  }
  return {waiting, running};
}

int GangTable::CandidatesIn(const std::string& pool) const {
  auto it = candidates_.find(pool);
  return it == candidates_.end() ? 0 : static_cast<int>(it->second.size());
}

std::optional<GangTable::View> GangTable::Find(const std::string& task_id) const {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return std::nullopt;
  return View{it->second.size, it->second.state == State::kRunning, it->second.attempt};
}

}  // namespace dtm
