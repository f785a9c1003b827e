// JobPlanner: moves each job through its phases, on the scheduler thread.
//
// How a job runs:
//   1. Resolve: once a worker serving the spec's model has registered (or the job was resolved by
//      an earlier coordinator run), the job learns the model's fingerprint and geometry, reads its
//      probes, fixes its shards and becomes RUNNING.
//   2. Baseline stage: one task per shard of the probe set, and with `ppl:` one task that cuts the
//      text into windows (SPEC `ppl`), unless their results are cached.
//   3. Config stages: the driver names configs (with "" first, the uncompressed model's noise
//      floor); every (config, shard) is a task unless cached, and with `ppl:` so is every (config,
//      shard of windows): its ground-truth perplexity (Metrics.ppl). When a stage's tasks are all in, its
//      configs are aggregated and the driver is asked for the next stage, until it has none:
//      the results are stored and the job SUCCEEDED.
// Tasks are content-addressed (store_keys.h), so two jobs needing the same shard share one task,
// and a restarted coordinator replays each job's stages from the cache without computing anything
// twice.
//
// The planner reads the store and the job's files, and computes each stage, without
// CoordinatorState::mu; it takes the lock only to look at a job and to apply what it computed. A job
// that ended meanwhile (cancelled) is noticed when applying, and nothing more is applied to it. A
// store error leaves the job where it was, to be tried again at the next tick.
//
// Thread-safety: AdvanceAll is called by one thread at a time (the scheduler thread); it owns the
// planner's fields of every JobRun (job_run.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/job_files.h"
#include "coordinator/sparsify_planner.h"
#include "coordinator/train_planner.h"

namespace dtm {

// OK when a stage of the driver's largest (plus the noise floor, and with a `reference` its noise
// floor too) on `shards` shards stays within `max_tasks`; INVALID_ARGUMENT naming the numbers and
// the limit otherwise.
Status CheckStageSize(const JobDriver& driver, size_t shards, int64_t max_tasks, bool reference);

class JobPlanner {
 public:
  // Neither is owned; both must outlive the planner.
  JobPlanner(CoordinatorState* state, const JobFiles* files)
      : state_(state), files_(files), train_(state, files), sparsify_(state, files) {}

  // Moves every unfinished job as far as it can go now, and frees what ended jobs held. Returns
  // early when the state is stopping.
  void AdvanceAll();

 private:
  void Advance(JobRun& run);
  // Step 1. `*resolved` is false while the job waits for its model.
  Status Resolve(JobRun& run, bool* resolved);
  Status PlanBaseline(JobRun& run);
  // The baseline's rows, and the ppl text's windows when the job has `ppl:`.
  Status LoadBaselineRows(JobRun& run);
  Status LoadPplWindows(JobRun& run);
  // Step 3: the results so far published, then the driver's next stage planned; or the end of the job.
  Status StartStage(JobRun& run);
  Status AggregateStage(JobRun& run);
  // With a reference of other weights: its noise floor (config "" on baseline_key) from the store.
  StatusOr<dtm::v1::Metrics> AggregateReferenceFloor(const JobRun& run);
  // The metrics of `config` from its stored shards (and its ppl from its stored windows).
  StatusOr<dtm::v1::Metrics> AggregateConfig(const JobRun& run, const std::string& config);
  Status Finish(JobRun& run);
  // A job that ended FAILED or CANCELLED keeps what it finished: the configs of its last stage whose
  // every shard is in the store join those of the stages before, and the lot is stored as the job's
  // results (with its state), so that `dtmctl results` shows them, after a restart too.
  Status SaveUnfinishedResults(JobRun& run);
  // Reads the cache for `planned`, then (under mu) makes them the run's outstanding tasks: each is
  // counted cached when its result is in the store, joins the task another job already waits on, or
  // is queued. The reads come first, so a store error changes nothing.
  Status PlanTasks(JobRun& run, std::vector<PlannedTask> planned, JobPhase next, const std::string& message);
  // The job's results as they stand (no per-probe rows), with its warnings.
  dtm::v1::GetResultsResponse ResultsOf(const JobRun& run) const;
  // Publishes ResultsOf and the search progress to RPC readers.
  void Publish(JobRun& run);
  // Ends the job FAILED unless it ended already, and writes its record.
  void Fail(JobRun& run, const Status& error);
  bool Ended(JobRun& run);

  CoordinatorState* const state_;
  const JobFiles* const files_;
  TrainPlanner train_;  // train jobs (they have no baseline and no stages)
  SparsifyPlanner sparsify_;  // sparsify jobs (their stages are jobs of their own)
};

}  // namespace dtm
