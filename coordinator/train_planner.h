// TrainPlanner: how a train job runs (SPEC "Recovery training"), on the scheduler thread; the
// JobPlanner hands it every train job.
//   1. Resolve: once a worker serving the model has registered, the job learns the model's
//      fingerprint and makes its one task: the TrainInput of the spec (paths resolved under the data
//      root), keyed by TrainRunFingerprint (store_keys.h).
//   2. When the store holds the task's result (the run finished before a coordinator restart), the
//      job ends with it. Otherwise the task waits in the gang table for `workers` idle workers of
//      the model's pool; each attempt's gang resumes from the run's checkpoint folder.
//   3. While no gang runs it and fewer workers that can join a gang serve the model than it needs,
//      the job says so, and fails after --model-wait-seconds.
//   4. When rank 0's result is in, it is the job's result (GetResultsResponse.training) and the job
//      SUCCEEDED; its output folder is a model like any other.
//
// Thread-safety: as JobPlanner: the scheduler thread only; it takes CoordinatorState::mu to look at
// and change a job, never across a store call.
#pragma once

#include "common/status.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/job_files.h"

namespace dtm {

class TrainPlanner {
 public:
  TrainPlanner(CoordinatorState* state, const JobFiles* files) : state_(state), files_(files) {}

  // Steps 1 and 2 for a job waiting for its model: `*resolved` is false while it waits.
  Status Start(JobRun& run, bool* resolved);
  // Step 3, for a job whose task is outstanding: FAILED_PRECONDITION once the wait is over.
  Status CheckGang(JobRun& run);
  // Step 4, once the task is no longer outstanding.
  Status Finish(JobRun& run);

 private:
  Status FinishWith(JobRun& run, const std::string& task_id);

  CoordinatorState* const state_;
  const JobFiles* const files_;
};

// The TrainInput of a resolved train spec (no rank or rendezvous: each member's grant adds them).
dtm::v1::TrainInput TrainInputOf(const JobSpec& spec);

}  // namespace dtm
