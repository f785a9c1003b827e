#include "coordinator/worker_api.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
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
    LeaseTable& pool = state_->tasks.Pool(worker->pool);
    // A reply stays within the message limit whatever its tasks carry (a text-windows task up to
    // 4 MiB of text).
    auto bytes_of = [this](const std::string& task_id) -> uint64_t {
      const TaskEntry* entry = state_->tasks.Find(task_id);
      return entry == nullptr ? 0 : WireBytesEstimate(*entry);
    };
    ASSIGN_OR_RETURN(std::vector<LeaseGrant> grants,
                     pool.Lease(request.worker_id(), max_tasks, request.request_id(), bytes_of, kMaxLeaseReplyBytes));
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
    results = state_->tasks.Pool(worker->pool).Heartbeat(request.worker_id(), ids);
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
                                                    {TaskKindForKey::kTextWindows, task_id}}));
    if (!stored[0] && !stored[1] && !stored[2]) {
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

StatusOr<v1::DrainWorkerResponse> WorkerApi::DrainWorker(const v1::DrainWorkerRequest& request) {
  std::lock_guard<std::mutex> lock(state_->mu);
  v1::DrainWorkerResponse response;
  const WorkerRegistry::Worker* worker = state_->workers.Find(request.worker_id());
  if (worker == nullptr) return response;  // nothing held here (a restart, or drained already)
  LeaseTable& pool = state_->tasks.Pool(worker->pool);
  std::vector<std::string> released = pool.ReleaseWorker(request.worker_id(), ReleaseReason::kDrained);
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
