#include "coordinator/services.h"

#include <exception>
#include <utility>

#include <spdlog/spdlog.h>

#include "common/grpc_status.h"

namespace dtm {
namespace {

// Runs `call` and moves its value into `*out`, or returns its error. An exception (a bug, or
// std::bad_alloc) becomes INTERNAL here rather than crossing into gRPC.
template <typename T, typename F>
grpc::Status Answer(T* out, F&& call) {
  try {
    StatusOr<T> result = call();
    if (!result.ok()) return ToGrpcStatus(result.status());
    *out = std::move(result).value();
    return grpc::Status::OK;
  } catch (const std::exception& e) {
    spdlog::error("rpc handler threw: {}", e.what());
    return ToGrpcStatus(InternalError(std::string("the coordinator failed: ") + e.what()));
  }
}

}  // namespace

grpc::Status DtmServiceImpl::SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return api_->Submit(request->spec_yaml(), request->client_request_id()); });
}

grpc::Status DtmServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return api_->GetJob(request->job_id()); });
}

grpc::Status DtmServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  return Answer(response, [&] { return api_->ListJobs(*request); });
}

grpc::Status DtmServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return api_->Cancel(request->job_id(), request->reason()); });
}

grpc::Status DtmServiceImpl::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobProgress>* writer) {
  uint64_t seen = 0;
  while (!context->IsCancelled()) {
    auto progress = api_->WaitProgress(request->job_id(), seen, std::chrono::seconds(1));
    if (!progress.ok()) return ToGrpcStatus(progress.status());
    if (progress->second == seen) continue;
    seen = progress->second;
    if (!writer->Write(progress->first)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    const v1::JobState state = progress->first.state();
    if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
}

grpc::Status DtmServiceImpl::GetResults(grpc::ServerContext*, const v1::GetResultsRequest* request,
                                        v1::GetResultsResponse* response) {
  return Answer(response, [&] { return api_->Results(*request); });
}

grpc::Status DtmServiceImpl::PurgeWorkerResults(grpc::ServerContext*, const v1::PurgeWorkerResultsRequest* request,
                                                v1::PurgeWorkerResultsResponse* response) {
  return Answer(response, [&] { return api_->PurgeWorkerResults(request->worker_id()); });
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Answer(response, [&] { return api_->RegisterWorker(*request); });
}

grpc::Status WorkerServiceImpl::LeaseTasks(grpc::ServerContext*, const v1::LeaseTasksRequest* request,
                                           v1::LeaseTasksResponse* response) {
  return Answer(response, [&] { return api_->LeaseTasks(*request); });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return Answer(response, [&] { return api_->Heartbeat(*request); });
}

grpc::Status WorkerServiceImpl::CompleteTask(grpc::ServerContext*, const v1::CompleteTaskRequest* request,
                                             v1::CompleteTaskResponse* response) {
  return Answer(response, [&] { return api_->CompleteTask(*request); });
}

grpc::Status WorkerServiceImpl::FailTask(grpc::ServerContext*, const v1::FailTaskRequest* request,
                                         v1::FailTaskResponse* response) {
  return Answer(response, [&] { return api_->FailTask(*request); });
}

grpc::Status WorkerServiceImpl::DrainWorker(grpc::ServerContext*, const v1::DrainWorkerRequest* request,
                                            v1::DrainWorkerResponse* response) {
  return Answer(response, [&] { return api_->DrainWorker(*request); });
}

grpc::Status WorkerServiceImpl::GetCalibrationSet(grpc::ServerContext*, const v1::GetCalibrationSetRequest* request,
                                                  v1::CalibrationSet* response) {
  return Answer(response, [&] { return api_->GetCalibrationSet(*request); });
}

}  // namespace dtm
