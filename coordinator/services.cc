#include "coordinator/services.h"

#include <set>
#include <utility>

namespace dtm {
namespace {

grpc::Status ToGrpc(const Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

// Runs `call` and moves its value into `*out`, or returns its error.
template <typename T, typename F>
grpc::Status Answer(T* out, F&& call) {
  StatusOr<T> result = call();
  if (!result.ok()) return ToGrpc(result.status());
  *out = std::move(result).value();
  return grpc::Status::OK;
}

}  // namespace

grpc::Status DtmServiceImpl::SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return scheduler_->Submit(request->spec_yaml(), request->client_request_id()); });
}

grpc::Status DtmServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return scheduler_->GetJob(request->job_id()); });
}

grpc::Status DtmServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  std::set<v1::JobState> states;
  for (int s : request->states()) states.insert(static_cast<v1::JobState>(s));
  StatusOr<std::vector<v1::Job>> jobs = scheduler_->ListJobs(states);
  if (!jobs.ok()) return ToGrpc(jobs.status());
  // Pages are offsets into the id-ordered list: simple, and stable enough for listings.
  size_t offset = request->page_token().empty() ? 0 : std::strtoul(request->page_token().c_str(), nullptr, 10);
  const size_t page = request->page_size() == 0 ? 1000 : request->page_size();
  for (size_t i = offset; i < jobs->size() && i < offset + page; ++i) *response->add_jobs() = (*jobs)[i];
  if (offset + page < jobs->size()) response->set_next_page_token(std::to_string(offset + page));
  return grpc::Status::OK;
}

grpc::Status DtmServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request, v1::Job* job) {
  return Answer(job, [&] { return scheduler_->Cancel(request->job_id(), request->reason()); });
}

grpc::Status DtmServiceImpl::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobProgress>* writer) {
  uint64_t seen = 0;
  while (!context->IsCancelled()) {
    auto progress = scheduler_->WaitProgress(request->job_id(), seen, std::chrono::seconds(1));
    if (!progress.ok()) return ToGrpc(progress.status());
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
  return Answer(response, [&] { return scheduler_->Results(*request); });
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Answer(response, [&] { return scheduler_->RegisterWorker(*request); });
}

grpc::Status WorkerServiceImpl::LeaseTasks(grpc::ServerContext*, const v1::LeaseTasksRequest* request,
                                           v1::LeaseTasksResponse* response) {
  return Answer(response, [&] { return scheduler_->LeaseTasks(*request); });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return Answer(response, [&] { return scheduler_->Heartbeat(*request); });
}

grpc::Status WorkerServiceImpl::CompleteTask(grpc::ServerContext*, const v1::CompleteTaskRequest* request,
                                             v1::CompleteTaskResponse* response) {
  return Answer(response, [&] { return scheduler_->CompleteTask(*request); });
}

grpc::Status WorkerServiceImpl::FailTask(grpc::ServerContext*, const v1::FailTaskRequest* request,
                                         v1::FailTaskResponse* response) {
  return Answer(response, [&] { return scheduler_->FailTask(*request); });
}

grpc::Status WorkerServiceImpl::DrainWorker(grpc::ServerContext*, const v1::DrainWorkerRequest* request,
                                            v1::DrainWorkerResponse* response) {
  return Answer(response, [&] { return scheduler_->DrainWorker(*request); });
}

}  // namespace dtm
