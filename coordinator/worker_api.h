// WorkerApi: the worker API (WorkerService) over the coordinator's state: register, lease,
// heartbeat, complete, fail and drain (worker_service.proto's protocol). Leasing and heartbeats
// answer from memory; a result is stored (without CoordinatorState::mu) before it is acknowledged.
//
// What a worker cannot make the coordinator do: lease or renew another worker's leases, report or
// fail a task under another worker's lease (PERMISSION_DENIED), store a result that does not fit its
// task, or have its results stored under another worker's name (computed_by is the caller's id).
// Which callers are workers at all is the transport's check (common/grpc_security.h).
//
// Thread-safety: thread-safe; called by gRPC's handler threads.
#pragma once

#include <deque>
#include <map>
#include <string>

#include "common/status.h"
#include "coordinator/coordinator_state.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

class WorkerApi {
 public:
  // Not owned; must outlive the API.
  explicit WorkerApi(CoordinatorState* state) : state_(state) {}

  StatusOr<dtm::v1::RegisterWorkerResponse> RegisterWorker(const dtm::v1::RegisterWorkerRequest& request);
  StatusOr<dtm::v1::LeaseTasksResponse> LeaseTasks(const dtm::v1::LeaseTasksRequest& request);
  StatusOr<dtm::v1::HeartbeatResponse> Heartbeat(const dtm::v1::HeartbeatRequest& request);
  StatusOr<dtm::v1::CompleteTaskResponse> CompleteTask(const dtm::v1::CompleteTaskRequest& request);
  StatusOr<dtm::v1::FailTaskResponse> FailTask(const dtm::v1::FailTaskRequest& request);
  StatusOr<dtm::v1::DrainWorkerResponse> DrainWorker(const dtm::v1::DrainWorkerRequest& request);
  // From the store, without the lock: INVALID_ARGUMENT for a fingerprint that is not 64 hex
  // digits, NOT_FOUND for one no job stored, UNAVAILABLE while the store is away.
  StatusOr<dtm::v1::CalibrationSet> GetCalibrationSet(const dtm::v1::GetCalibrationSetRequest& request);

 private:
  // Heartbeat's: a gang's rank 0 reports its step and loss, which become its job's progress.
  // Requires state_->mu.
  void RecordProgress(const dtm::v1::HeartbeatRequest& request, const std::vector<std::string>& ids,
                      const std::vector<HeartbeatResult>& results);
  // CompleteTask of a train task (a validated result): rank 0's is stored and ends the task.
  StatusOr<dtm::v1::CompleteTaskResponse> CompleteGangTask(const TaskEntry& entry,
                                                           const dtm::v1::CompleteTaskRequest& request);
  // FailTask under a gang lease: the gang's attempt ends. Requires state_->mu.
  StatusOr<dtm::v1::FailTaskResponse> FailGangTask(const dtm::v1::FailTaskRequest& request);

  // The replies to the latest FailTask request ids (a retry gets the first reply); guarded by
  // state_->mu, and bounded: the oldest are forgotten first.
  std::map<std::string, dtm::v1::FailTaskResponse> fail_replies_;
  std::deque<std::string> fail_reply_order_;

  CoordinatorState* const state_;
};

}  // namespace dtm
