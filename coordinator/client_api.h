// ClientApi: the client API (DtmService) over the coordinator's state: submit, get, list, cancel,
// watch, results and purge. Every call answers from memory where it can (GetJob, ListJobs,
// WaitProgress: also while the store is away), reads or writes the store without holding
// CoordinatorState::mu, and is bounded: what it reads (specs, files), plans at submit and answers.
//
// Thread-safety: thread-safe; called by gRPC's handler threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <set>
#include <string>
#include <utility>

#include "common/status.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/job_files.h"
#include "dtm/v1/dtm_service.pb.h"

namespace dtm {

// A reply page is cut before its encoded size passes this, well within the 16 MiB message limit.
inline constexpr size_t kMaxReplyPageBytes = 8 << 20;
// How long Submit waits for an earlier call with the same client_request_id to finish.
inline constexpr std::chrono::seconds kSubmitRetryWait{10};

class ClientApi {
 public:
  // Neither is owned; both must outlive the API.
  ClientApi(CoordinatorState* state, const JobFiles* files) : state_(state), files_(files) {}

  // Validates the spec (its size, UTF-8, syntax, files, components and stage sizes, each against
  // the coordinator's limits), then creates the job in the store, PENDING, and returns it; the
  // scheduler thread runs it. Idempotent on client_request_id (required): the job id is derived
  // from it, so a retried call returns the job the first call created, and the same id with another
  // spec is INVALID_ARGUMENT. A call made while another with the same id is still being validated
  // waits for it (up to kSubmitRetryWait) and returns its job. UNAVAILABLE when the store cannot
  // take the job (nothing was created), or when that wait runs out.
  StatusOr<dtm::v1::Job> Submit(const std::string& spec_yaml, const std::string& client_request_id);
  StatusOr<dtm::v1::Job> GetJob(const std::string& job_id);
  // Newest first, in pages without specs (dtm_service.proto).
  StatusOr<dtm::v1::ListJobsResponse> ListJobs(const dtm::v1::ListJobsRequest& request);
  // Ends the job CANCELLED and answers once that is stored; UNAVAILABLE while the store cannot take
  // it (the job is cancelled in memory meanwhile, and stored when the store is back: retry to
  // confirm). Cancelling a cancelled job returns it; another ended job is FAILED_PRECONDITION.
  StatusOr<dtm::v1::Job> Cancel(const std::string& job_id, const std::string& reason);
  // One page of the job's results (dtm_service.proto GetResultsRequest).
  StatusOr<dtm::v1::GetResultsResponse> Results(const dtm::v1::GetResultsRequest& request);
  // The job's progress once its version is past `seen_version`, or after `timeout` whatever it is;
  // the returned version is what to pass next time.
  StatusOr<std::pair<dtm::v1::JobProgress, uint64_t>> WaitProgress(const std::string& job_id,
                                                                   uint64_t seen_version,
                                                                   std::chrono::milliseconds timeout);
  StatusOr<dtm::v1::PurgeWorkerResultsResponse> PurgeWorkerResults(const std::string& worker_id);

 private:
  // What Submit checks once the spec has parsed: the files (resolving the spec's paths), the
  // components against the model (when its geometry is known yet) and the stage sizes.
  Status Validate(JobSpec* spec);

  CoordinatorState* const state_;
  const JobFiles* const files_;
  std::set<std::string> submitting_;  // job ids of Submit calls under way; guarded by state_->mu
  std::condition_variable submitted_;  // notified when one leaves submitting_
};

}  // namespace dtm
