// The coordinator's gRPC services: thin translations between the wire API and the Scheduler's two
// APIs. Nothing throws across them, and every status crosses through the one converter
// (common/grpc_status.h), which bounds its message.
#pragma once

#include <grpcpp/grpcpp.h>

#include "coordinator/scheduler.h"
#include "dtm/v1/dtm_service.grpc.pb.h"
#include "dtm/v1/worker_service.grpc.pb.h"

namespace dtm {

class DtmServiceImpl final : public dtm::v1::DtmService::Service {
 public:
  explicit DtmServiceImpl(ClientApi* api) : api_(api) {}

  grpc::Status SubmitJob(grpc::ServerContext*, const dtm::v1::SubmitJobRequest*, dtm::v1::Job*) override;
  grpc::Status GetJob(grpc::ServerContext*, const dtm::v1::GetJobRequest*, dtm::v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const dtm::v1::ListJobsRequest*, dtm::v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const dtm::v1::CancelJobRequest*, dtm::v1::Job*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const dtm::v1::WatchJobRequest*,
                        grpc::ServerWriter<dtm::v1::JobProgress>*) override;
  grpc::Status GetResults(grpc::ServerContext*, const dtm::v1::GetResultsRequest*,
                          dtm::v1::GetResultsResponse*) override;
  grpc::Status PurgeWorkerResults(grpc::ServerContext*, const dtm::v1::PurgeWorkerResultsRequest*,
                                  dtm::v1::PurgeWorkerResultsResponse*) override;

 private:
  ClientApi* api_;
};

class WorkerServiceImpl final : public dtm::v1::WorkerService::Service {
 public:
  explicit WorkerServiceImpl(WorkerApi* api) : api_(api) {}

  grpc::Status RegisterWorker(grpc::ServerContext*, const dtm::v1::RegisterWorkerRequest*,
                              dtm::v1::RegisterWorkerResponse*) override;
  grpc::Status LeaseTasks(grpc::ServerContext*, const dtm::v1::LeaseTasksRequest*,
                          dtm::v1::LeaseTasksResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const dtm::v1::HeartbeatRequest*, dtm::v1::HeartbeatResponse*) override;
  grpc::Status CompleteTask(grpc::ServerContext*, const dtm::v1::CompleteTaskRequest*,
                            dtm::v1::CompleteTaskResponse*) override;
  grpc::Status FailTask(grpc::ServerContext*, const dtm::v1::FailTaskRequest*, dtm::v1::FailTaskResponse*) override;
  grpc::Status DrainWorker(grpc::ServerContext*, const dtm::v1::DrainWorkerRequest*,
                           dtm::v1::DrainWorkerResponse*) override;
  grpc::Status GetCalibrationSet(grpc::ServerContext*, const dtm::v1::GetCalibrationSetRequest*,
                                 dtm::v1::CalibrationSet*) override;

 private:
  WorkerApi* api_;
};

}  // namespace dtm
