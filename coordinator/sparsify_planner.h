// SparsifyPlanner: how a sparsify job runs (SPEC "Sparsification run"), on the scheduler thread; the
// JobPlanner hands it every sparsify job.
//   1. Resolve: once the model's component sizes are known (from a worker serving it, or its
//      config.json), the job fixes its plan (sparsify_run.h): components, their starting sparsity
//      (`previous:`), the schedule.
//   2. Each round's stages are jobs of their own, submitted by the coordinator like a client's: an
//      evaluate job of the round's probe configs on the round's model (skipped by a uniform run), a
//      train job that prunes the round's model to the allocation's targets and trains it into
//      OUTPUT/round-r (OUTPUT/final for the last round, re-masked), and an evaluate job of that model
//      against the starting model (`reference:`, with the run's `ppl:`). Their client_request_ids
//      are derived from the run's job id, round and stage, so submitting again returns the same job.
//   3. At every tick the run reads its stage jobs' records and results from the store and asks
//      NextSparsifyAction what comes next: a coordinator restarted at any point resumes at the stage
//      it was in (the stage job itself resumes as any job does) and recomputes nothing stored.
//   4. A stage job that failed or was cancelled fails the run naming it; once the last round is
//      evaluated the run's results (GetResultsResponse.rounds) are stored and it SUCCEEDED.
// The stage jobs need workers that serve the round models: workers started with --model-root over
// the run's output folder load them when a job names them (worker_registry.h).
//
// Thread-safety: as JobPlanner: the scheduler thread only; it takes CoordinatorState::mu to look at
// and change a job, never across a store call or a submission.
#pragma once

#include "common/jsonl.h"
#include "common/status.h"
#include "coordinator/client_api.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/job_files.h"
#include "coordinator/model_geometry.h"
#include "coordinator/sparsify_run.h"

namespace dtm {

// The plan of a sparsify spec (paths resolved) on a model of `geometry` (with component sizes):
// the selected components with their starting sparsity from `previous:` (checked against the
// model), checked by CheckSparsifyRunPlan. INVALID_ARGUMENT naming the field otherwise.
StatusOr<SparsifyRunPlan> SparsifyRunPlanOf(const JobSpec& spec, const ModelGeometry& geometry,
                                            const ReadLimits& limits);

// The client_request_id of a run's stage job: RUN_JOB_ID/round-R/STAGE.
std::string SparsifyStageRequestId(const std::string& run_job_id, int round, SparsifyStage stage);
// The run's job id of a stage job's client_request_id; "" for any other.
std::string SparsifyRunOfStage(const std::string& client_request_id);

class SparsifyPlanner {
 public:
  // Neither is owned; both must outlive the planner.
  SparsifyPlanner(CoordinatorState* state, const JobFiles* files) : state_(state), files_(files), api_(state, files) {}

  // Step 1 for a job waiting for its model: `*resolved` is false while it waits.
  Status Start(JobRun& run, bool* resolved);
  // Steps 2 to 4, once resolved: OK while a stage job runs; an error fails the run.
  Status Advance(JobRun& run);
  // For a run that ended: a stage job still under way is cancelled (the run was cancelled or
  // failed), and what the run held is freed.
  void Release(JobRun& run);

 private:
  // The stage job's spec for `action`, as YAML.
  std::string StageSpec(const JobRun& run, const SparsifyAction& action) const;

  CoordinatorState* const state_;
  const JobFiles* const files_;
  ClientApi api_;  // submits the stage jobs
};

}  // namespace dtm
