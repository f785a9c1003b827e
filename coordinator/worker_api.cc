#include "coordinator/worker_api.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "common/user_text.h"
#include "coordinator/task_wire.h"

namespace dtm {
namespace {

// Tasks one LeaseTasks reply carries at most: a task's rows are up to ~100 KB (50 probes x 600
// tokens), so 64 stay well within the message limit.
constexpr int kMaxTasksPerLease = 64;
// And bytes of tasks, a margin under the message limit (kMaxMessageBytes, 16 MiB).
constexpr uint64_t kMaxLeaseReplyBytes = 12 << 20;
// FailTask replies remembered for retries.
constexpr size_t kRememberedFailReplies = 10000;
// Bytes of a worker's failure message kept with the task (it travels in job errors and logs).
constexpr size_t kMaxFailureBytes = 500;

StatusCode CodeOf(int32_t code) {
  return code >= 1 && code <= 16 ? static_cast<StatusCode>(code) : StatusCode::kUnknown;
}

}  // namespace

StatusOr<v1::RegisterWorkerResponse> WorkerApi::RegisterWorker(const v1::RegisterWorkerRequest& request) {
  RETURN_IF_ERROR(WorkerRegistry::Validate(request));
  std::optional<std::pair<std::string, ModelInfo>> changed_model;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    WorkerRegistry::Registration registration = state_->workers.Register(request, state_->clock().Now());
    if (registration.replaced) {
      // A restarted worker has lost the work of its earlier registration's leases.
      const std::vector<std::string> released = state_->tasks.Pool(registration.previous_pool)
                                                    .ReleaseWorker(request.worker_id(), ReleaseReason::kLost);
      for (const std::string& task_id : released) state_->TaskRequeued(task_id);
      for (const std::string& task_id : state_->tasks.Gangs().ReleaseWorker(request.worker_id(), ReleaseReason::kLost)) {
        spdlog::warn("task {}: gang member {} registered again; the gang's attempt ends", task_id.substr(0, 12),
                     request.worker_id());
        state_->TaskRequeued(task_id);
      }
      if (!released.empty()) {
        spdlog::warn(
            "worker {}: registered again; {} leases of its earlier registration go back to the queue",
            request.worker_id(), released.size());
      }
    }
    if (registration.model_changed) {
      changed_model.emplace(registration.model_path,
                            *state_->workers.Model(registration.model_path, request.dtype()));
    }
    // Counted now, not at the next tick, so that the gauge already holds the worker once the line below is
    // logged.
    if (state_->metrics() != nullptr)
      state_->metrics()->SetWorkersConnected(static_cast<double>(state_->workers.size()));
    spdlog::info("worker {}: registered ({}, model {} fingerprint {}, {}, capacity {}, dtm {})",
                 request.worker_id(), Bounded(request.device().description()),
                 NormalModelPath(request.model_path()), request.model_fingerprint().substr(0, 12),
                 v1::Dtype_Name(request.dtype()), request.capacity(), request.version());
    state_->Wake();  // a pending job may be waiting for this model
  }
  if (changed_model) {
    Status saved = state_->storage().SaveModel(changed_model->first, request.dtype(), changed_model->second);
    if (!saved.ok())
      spdlog::warn("store: could not record model {}: {}", changed_model->first, saved.message());
  }
  v1::RegisterWorkerResponse response;
  response.set_heartbeat_interval_ms(static_cast<uint32_t>(state_->options().heartbeat_interval_ms));
  response.set_lease_timeout_ms(static_cast<uint32_t>(state_->options().lease_timeout_ms));
  response.set_idle_poll_interval_ms(static_cast<uint32_t>(state_->options().idle_poll_interval_ms));
  return response;
}

StatusOr<v1::LeaseTasksResponse> WorkerApi::LeaseTasks(const v1::LeaseTasksRequest& request) {
  const int max_tasks = std::clamp(
      static_cast<int>(std::min<uint32_t>(request.max_tasks(), kMaxTasksPerLease)), 1, kMaxTasksPerLease);
  v1::LeaseTasksResponse response;
  std::vector<std::pair<LeaseGrant, TaskEntry>> granted;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    WorkerRegistry::Worker* worker = state_->workers.Touch(request.worker_id(), state_->clock().Now());
    if (worker == nullptr) {
      response.set_reregister(true);
      return response;
    }
    // A gang waiting for this pool's idle workers comes first: it can start only when enough of them
    // are idle at once.
    bool reserved = false;
    std::optional<GangGrant> gang = state_->tasks.Gangs().Offer(request.worker_id(), worker->pool, worker->gang_address,
                                                                 &reserved);
    if (gang) {
      const TaskEntry* entry = state_->tasks.Find(gang->task_id);
      if (entry != nullptr) {
        const int64_t now_unix_ms = google::protobuf::util::TimeUtil::TimestampToMilliseconds(WallClockNow());
        const int64_t expire_ms =
            now_unix_ms +
            std::chrono::duration_cast<std::chrono::milliseconds>(gang->expires_at - state_->clock().Now()).count();
        *response.add_tasks() = ToWireGangTask(*entry, *gang, *entry->jobs.begin(), expire_ms);
        spdlog::info("task {}: leased to {} as {}, rank {} of {} (attempt {}, rendezvous {})",
                     gang->task_id.substr(0, 12), request.worker_id(), gang->lease_id, gang->rank, gang->size,
                     gang->attempt, gang->rendezvous);
      }
      return response;
    }
    if (reserved) return response;  // held for a gang that is not complete yet
    // A worker that may switch models loads one that a job needs and too few connected workers
    // serve (none, or fewer than a train job's gang), when its own pool has nothing queued: a model
    // in use is never left for one that is not.
    if (!worker->model_root.empty() && state_->tasks.Pool(worker->pool).Stats().queued == 0) {
      std::vector<WorkerRegistry::ModelNeed> wanted;
      for (const auto& [id, run] : state_->jobs) {
        if (run->phase == JobPhase::kEnded || run->phase == JobPhase::kDormant) continue;
        if (run->spec.kind == JobKind::kSparsify) continue;  // runs no task: its stage jobs name their models
        const bool gang = run->spec.kind == JobKind::kTrain;
        wanted.push_back({run->spec.model, gang ? static_cast<int>(run->spec.train.workers) : 1, gang});
        if (!run->spec.reference.empty()) wanted.push_back({run->spec.reference, 1, false});
      }
      const std::string load = state_->workers.ModelToLoad(*worker, wanted);
      if (!load.empty()) {
        spdlog::info("worker {}: asked to load {} (under its model root {}), which a job needs and too few "
                     "workers serve",
                     request.worker_id(), load, worker->model_root);
        response.set_load_model(load);
        return response;
      }
    }
    LeaseTable& pool = state_->tasks.Pool(worker->pool);
    // A reply stays within the message limit whatever its tasks carry (a text-windows task up to
    // 4 MiB of text).
    auto bytes_of = [this](const std::string& task_id) -> uint64_t {
      const TaskEntry* entry = state_->tasks.Find(task_id);
      return entry == nullptr ? 0 : WireBytesEstimate(*entry);
    };
    const auto now = state_->clock().Now();
    state_->affinity.Report(request.worker_id(),
                            std::vector<std::string>(request.held_shards().begin(), request.held_shards().end()), now);
    // A report older than a lease timeout is of a worker that may be gone.
    auto affinity = [this, &request, now](const std::string& task_id) {
      const TaskEntry* entry = state_->tasks.Find(task_id);
      return state_->affinity.Of(request.worker_id(), entry == nullptr ? "" : entry->shard_tag, now,
                                 std::chrono::milliseconds(state_->options().lease_timeout_ms));
    };
    ASSIGN_OR_RETURN(std::vector<LeaseGrant> grants,
                     pool.Lease(request.worker_id(), max_tasks, request.request_id(), bytes_of, kMaxLeaseReplyBytes,
                                state_->affinity.AnyHeld() ? std::function<LeaseAffinity(const std::string&)>(affinity)
                                                           : nullptr));
    for (LeaseGrant& grant : grants) {
      const TaskEntry* entry = state_->tasks.Find(grant.task_id);
      if (entry == nullptr) {
        // No job needs it any more (cancelled between planning and now).
        (void)pool.Cancel(grant.task_id);
        continue;
      }
      granted.emplace_back(std::move(grant), *entry);
    }
  }
  // The rows are copied into the reply here, without the lock.
  const auto now = state_->clock().Now();
  const int64_t now_unix_ms = google::protobuf::util::TimeUtil::TimestampToMilliseconds(WallClockNow());
  for (const auto& [grant, entry] : granted) {
    const int64_t expire_ms =
        now_unix_ms + std::chrono::duration_cast<std::chrono::milliseconds>(grant.expires_at - now).count();
    *response.add_tasks() = ToWireTask(entry, grant, *entry.jobs.begin(), expire_ms);
    if (state_->metrics() != nullptr) state_->metrics()->tasks_leased.Increment();
    spdlog::debug("task {}: leased to {} as {} (attempt {})", grant.task_id.substr(0, 12),
                  request.worker_id(), grant.lease_id, grant.attempt);
  }
  return response;
}

StatusOr<v1::HeartbeatResponse> WorkerApi::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(state_->mu);
  v1::HeartbeatResponse response;
  WorkerRegistry::Worker* worker = state_->workers.Touch(request.worker_id(), state_->clock().Now());
  std::vector<std::string> ids(request.lease_ids().begin(), request.lease_ids().end());
  std::vector<HeartbeatResult> results;
  if (worker == nullptr) {
    response.set_reregister(true);
    results.assign(ids.size(), HeartbeatResult::kUnknown);
  } else {
    // Gang leases and pool leases in one list: each to its table, in order.
    std::vector<std::string> pool_ids;
    for (const std::string& id : ids) {
      if (!state_->tasks.Gangs().IsGangLease(id)) pool_ids.push_back(id);
    }
    std::vector<HeartbeatResult> pool_results = state_->tasks.Pool(worker->pool).Heartbeat(request.worker_id(), pool_ids);
    size_t next = 0;
    for (const std::string& id : ids) {
      results.push_back(state_->tasks.Gangs().IsGangLease(id) ? state_->tasks.Gangs().Heartbeat(request.worker_id(), id)
                                                             : pool_results[next++]);
    }
    RecordProgress(request, ids, results);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    v1::LeaseStatus* status = response.add_leases();
    status->set_lease_id(ids[i]);
    status->set_state(ToWireLeaseState(results[i]));
  }
  return response;
}

StatusOr<v1::CompleteTaskResponse> WorkerApi::CompleteTask(const v1::CompleteTaskRequest& request) {
  const std::string& worker_id = request.worker_id();
  const std::string& task_id = request.task_id();
  const std::string& lease_id = request.lease_id();
  v1::CompleteTaskResponse response;
  std::optional<TaskEntry> entry;
  std::optional<LeaseInfo> lease;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    WorkerRegistry::Worker* worker = state_->workers.Touch(worker_id, state_->clock().Now());
    if (worker == nullptr) {
      response.set_reregister(true);
      return response;
    }
    lease = state_->tasks.Pool(worker->pool).FindLease(lease_id);
    if (lease && lease->worker_id != worker_id) {
      return Status(StatusCode::kPermissionDenied, "lease " + Bounded(lease_id) + " is another worker's");
    }
    if (lease && lease->task_id != task_id) {
      return InvalidArgumentError("lease " + Bounded(lease_id) + " is for task " + lease->task_id + ", not " +
                                  Bounded(task_id));
    }
    if (state_->tasks.Gangs().IsGangLease(lease_id)) lease.reset();  // a gang's: its own table's
    if (const TaskEntry* found = state_->tasks.Find(task_id)) {
      if (found->pool != worker->pool) {
        return Status(
            StatusCode::kPermissionDenied,
            "task " + task_id.substr(0, 12) + " is for another model or precision than this worker serves");
      }
      entry = *found;
    }
  }
  if (!entry) {
    // Finished already, or not planned by this coordinator run (a report from before a restart that
    // no job needs now): the store says whether the task has its result.
    ASSIGN_OR_RETURN(std::vector<bool> stored,
                     state_->storage().HaveResults({{TaskKindForKey::kBaseline, task_id},
                                                    {TaskKindForKey::kEval, task_id},
                                                    {TaskKindForKey::kTextWindows, task_id},
                                                    {TaskKindForKey::kTrain, task_id}}));
    if (!stored[0] && !stored[1] && !stored[2] && !stored[3]) {
      return NotFoundError("task " + Bounded(task_id) +
                           " is not planned by this coordinator (no job needs it now)");
    }
    if (state_->metrics() != nullptr) state_->metrics()->tasks_duplicate.Increment();
    spdlog::info("task {}: duplicate from {} (its result is stored already)", task_id.substr(0, 12),
                 worker_id);
    response.set_outcome(v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
    return response;
  }
  RETURN_IF_ERROR(ValidateTaskOutput(*entry, request));
  if (entry->kind == TaskKindForKey::kTrain) return CompleteGangTask(*entry, request);
  // UNAVAILABLE goes back to the worker, which keeps the result and reports it again.
  ASSIGN_OR_RETURN(bool first, state_->storage().StoreResult(entry->kind, task_id, worker_id, request));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    LeaseTable& table = state_->tasks.Pool(entry->pool);
    // A lease of an earlier coordinator run (or one forgotten since): the result is as good.
    (void)(lease ? table.Complete(lease_id, task_id) : table.CompleteWithoutLease(task_id));
    if (CoordinatorMetrics* metrics = state_->metrics()) {
      if (first) {
        metrics->tasks_completed.Increment();
        metrics->probes_evaluated.Increment(static_cast<double>(entry->rows->size()));
        metrics->tokens_evaluated.Increment(static_cast<double>(request.timing().tokens_processed()));
        if (lease) {
          metrics->task_duration.Observe(
              std::chrono::duration<double>(state_->clock().Now() - lease->leased_at).count());
        }
      } else {
        metrics->tasks_duplicate.Increment();
      }
    }
    state_->TaskDone(task_id);
  }
  spdlog::info("task {}: {} from {} under {} (job {})", task_id.substr(0, 12),
               first ? "accepted" : "duplicate", worker_id, Bounded(lease_id), *entry->jobs.begin());
  response.set_outcome(first ? v1::CompleteTaskResponse::OUTCOME_ACCEPTED
                             : v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  return response;
}

StatusOr<v1::FailTaskResponse> WorkerApi::FailTask(const v1::FailTaskRequest& request) {
  const std::string& worker_id = request.worker_id();
  std::lock_guard<std::mutex> lock(state_->mu);
  v1::FailTaskResponse response;
  WorkerRegistry::Worker* worker = state_->workers.Touch(worker_id, state_->clock().Now());
  if (worker == nullptr) {
    response.set_reregister(true);
    return response;
  }
  if (!request.request_id().empty()) {
    auto it = fail_replies_.find(worker_id + "\n" + request.request_id());
    if (it != fail_replies_.end()) return it->second;
  }
  if (state_->tasks.Gangs().IsGangLease(request.lease_id())) return FailGangTask(request);
  LeaseTable& pool = state_->tasks.Pool(worker->pool);
  std::optional<LeaseInfo> lease = pool.FindLease(request.lease_id());
  if (!lease)
    return NotFoundError("no lease " + Bounded(request.lease_id()) +
                         " (it may be of an earlier coordinator run)");
  if (lease->worker_id != worker_id) {
    return Status(StatusCode::kPermissionDenied,
                  "lease " + Bounded(request.lease_id()) + " is another worker's");
  }
  const FailCause cause = FailCauseOf(request);
  const std::string message = Bounded(request.error().message(), kMaxFailureBytes);
  ASSIGN_OR_RETURN(FailResult result, pool.Fail(request.lease_id(), cause, worker_id + ": " + message));
  const std::string task = lease->task_id.substr(0, 12);
  if (result == FailResult::kRequeued) {
    if (cause == FailCause::kWorker) {
      spdlog::warn("task {}: worker {} cannot run it ({}); it goes to another worker", task, worker_id,
                   message);
    } else {
      spdlog::warn("task {}: failed on {} ({}); re-queued", task, worker_id, message);
    }
    state_->TaskRequeued(lease->task_id);
  } else {
    state_->TaskFailed(lease->task_id,
                       Status(CodeOf(request.error().code()), "worker " + worker_id + ": " + message));
  }
  response.set_requeued(result == FailResult::kRequeued);
  if (!request.request_id().empty()) {
    const std::string key = worker_id + "\n" + request.request_id();
    fail_replies_[key] = response;
    fail_reply_order_.push_back(key);
    if (fail_reply_order_.size() > kRememberedFailReplies) {
      fail_replies_.erase(fail_reply_order_.front());
      fail_reply_order_.pop_front();
    }
  }
  return response;
}

void WorkerApi::RecordProgress(const v1::HeartbeatRequest& request, const std::vector<std::string>& ids,
                               const std::vector<HeartbeatResult>& results) {
  for (const v1::TaskProgress& progress : request.progress()) {
    const auto at = std::find(ids.begin(), ids.end(), progress.lease_id());
    if (at == ids.end() || results[static_cast<size_t>(at - ids.begin())] != HeartbeatResult::kValid) continue;
    std::optional<GangLease> lease = state_->tasks.Gangs().FindLease(progress.lease_id());
    if (!lease || lease->rank != 0) continue;  // rank 0 speaks for the gang (its loss is the gang's)
    const TaskEntry* entry = state_->tasks.Find(lease->task_id);
    if (entry == nullptr || progress.total_steps() == 0 || !std::isfinite(progress.loss())) continue;
    for (const std::string& job_id : entry->jobs) {
      JobRun* run = state_->FindJob(job_id);
      if (run == nullptr || run->phase == JobPhase::kEnded) continue;
      v1::JobProgress& p = *run->job.mutable_progress();
      if (p.has_train_step() && p.train_step() == progress.step()) continue;
      p.set_train_step(std::min(progress.step(), progress.total_steps()));
      p.set_train_steps(progress.total_steps());
      p.set_train_loss(progress.loss());
      state_->Touch(*run);
    }
  }
}

StatusOr<v1::CompleteTaskResponse> WorkerApi::CompleteGangTask(const TaskEntry& entry,
                                                               const v1::CompleteTaskRequest& request) {
  const std::string& task_id = request.task_id();
  const int rank = static_cast<int>(request.train().rank());
  v1::CompleteTaskResponse response;
  {
    // A lease this table made speaks for one worker and one rank; one it does not know (an earlier
    // coordinator run's) is taken at its word, as any late result is.
    std::lock_guard<std::mutex> lock(state_->mu);
    std::optional<GangLease> lease = state_->tasks.Gangs().FindLease(request.lease_id());
    if (lease && (lease->worker_id != request.worker_id() || lease->task_id != task_id)) {
      return Status(StatusCode::kPermissionDenied, "lease " + Bounded(request.lease_id()) +
                                                       " is not this worker's lease of task " + task_id.substr(0, 12));
    }
    if (lease && lease->rank != rank) {
      return InvalidArgumentError("lease " + Bounded(request.lease_id()) + " is rank " + std::to_string(lease->rank) +
                                  "'s, not rank " + std::to_string(rank) + "'s");
    }
  }
  if (rank == 0) {
    // Stored first, without the lock: UNAVAILABLE goes back to the worker, which reports again.
    ASSIGN_OR_RETURN(bool first, state_->storage().StoreResult(entry.kind, task_id, request.worker_id(), request));
    (void)first;  // a second store of the same run's result keeps the first
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  StatusOr<CompleteResult> result = state_->tasks.Gangs().Complete(task_id, request.lease_id(), rank);
  if (!result.ok()) return result.status();
  const bool accepted = *result == CompleteResult::kAccepted;
  if (accepted && rank == 0) {
    if (state_->metrics() != nullptr) state_->metrics()->tasks_completed.Increment();
    state_->TaskDone(task_id);
  }
  spdlog::info("task {}: rank {} {} from {} under {}", task_id.substr(0, 12), rank,
               accepted ? (rank == 0 ? "finished the run" : "is done") : "reported late (duplicate)", request.worker_id(),
               Bounded(request.lease_id()));
  response.set_outcome(accepted ? v1::CompleteTaskResponse::OUTCOME_ACCEPTED : v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  return response;
}

StatusOr<v1::FailTaskResponse> WorkerApi::FailGangTask(const v1::FailTaskRequest& request) {
  // Requires state_->mu (FailTask's caller holds it).
  v1::FailTaskResponse response;
  GangTable& gangs = state_->tasks.Gangs();
  std::optional<GangLease> lease = gangs.FindLease(request.lease_id());
  if (!lease) return NotFoundError("no gang lease " + Bounded(request.lease_id()));
  if (lease->worker_id != request.worker_id()) {
    return Status(StatusCode::kPermissionDenied, "lease " + Bounded(request.lease_id()) + " is another worker's");
  }
  const std::string message = request.worker_id() + " (rank " + std::to_string(lease->rank) +
                              "): " + Bounded(request.error().message(), kMaxFailureBytes);
  StatusOr<FailResult> result = gangs.Fail(request.lease_id(), FailCauseOf(request), message);
  if (result.status().code() == StatusCode::kFailedPrecondition) {
    // The attempt had ended already: this failure is its echo (a member whose peer died).
    response.set_requeued(true);
    return response;
  }
  if (!result.ok()) return result.status();
  if (*result == FailResult::kRequeued) {
    spdlog::warn("task {}: a gang member failed ({}); the gang's attempt ends and the task waits for a new gang",
                 lease->task_id.substr(0, 12), message);
    state_->TaskRequeued(lease->task_id);
  } else {
    for (const auto& [task_id, why] : gangs.TakeFailed()) {
      state_->TaskFailed(task_id, Status(CodeOf(request.error().code()), why));
    }
  }
  response.set_requeued(*result == FailResult::kRequeued);
  return response;
}

StatusOr<v1::DrainWorkerResponse> WorkerApi::DrainWorker(const v1::DrainWorkerRequest& request) {
  std::lock_guard<std::mutex> lock(state_->mu);
  v1::DrainWorkerResponse response;
  const WorkerRegistry::Worker* worker = state_->workers.Find(request.worker_id());
  if (worker == nullptr) return response;  // nothing held here (a restart, or drained already)
  LeaseTable& pool = state_->tasks.Pool(worker->pool);
  std::vector<std::string> released = pool.ReleaseWorker(request.worker_id(), ReleaseReason::kDrained);
  for (std::string& task_id : state_->tasks.Gangs().ReleaseWorker(request.worker_id(), ReleaseReason::kDrained)) {
    released.push_back(std::move(task_id));
  }
  pool.ForgetWorker(request.worker_id());
  state_->workers.Remove(request.worker_id());
  // A drain stops work on purpose: counted by the metric, not as a job's re-queue (a fault).
  if (state_->metrics() != nullptr)
    state_->metrics()->tasks_requeued.Increment(static_cast<double>(released.size()));
  spdlog::info("worker {}: drained, {} tasks back in the queue", request.worker_id(), released.size());
  response.set_tasks_released(static_cast<uint32_t>(released.size()));
  state_->Wake();
  return response;
}

StatusOr<v1::CalibrationSet> WorkerApi::GetCalibrationSet(const v1::GetCalibrationSetRequest& request) {
  const std::string& fingerprint = request.fingerprint();
  const bool hex = fingerprint.size() == 64 &&
                   std::all_of(fingerprint.begin(), fingerprint.end(),
                               [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (!hex) return InvalidArgumentError("fingerprint " + Quoted(fingerprint) + " is not 64 lowercase hex digits");
  ASSIGN_OR_RETURN(std::optional<v1::CalibrationSet> set, state_->storage().LoadCalibration(fingerprint));
  if (!set) return NotFoundError("no calibration set " + fingerprint + " is stored here");
  return std::move(*set);
}

}  // namespace dtm
