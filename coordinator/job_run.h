// JobRun: one job as the coordinator runs it, and the progress figures derived from it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/timestamp.pb.h>

#include "coordinator/job_driver.h"
#include "coordinator/job_spec.h"
#include "coordinator/task_table.h"
#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"

namespace dtm {

struct SparsifyRunPlan;  // sparsify_run.h

enum class JobPhase {
  kWaitingForModel,  // PENDING until a worker serving the model registers (or the job resolved before a
                     // restart)
  kBaseline,         // the baseline shards (and the ppl text's windows) are planned; their tasks are outstanding
  kStages,           // a stage of configs is planned; its tasks are outstanding
  kTraining,         // a train job's task is outstanding (waiting for its gang, or running)
  kRounds,           // a sparsify job's rounds run as stage jobs of their own (sparsify_planner.h)
  kEnded,            // SUCCEEDED, FAILED or CANCELLED
  kDormant,          // unfinished in the store, loaded but not resumed by this coordinator
                     // (CoordinatorOptions::resume_job): its record stays as stored until cancelled
};

// The fields fall in two groups, so that the scheduler thread can plan a job without holding the
// lock that RPC handlers wait for:
//   - shared: read and written under CoordinatorState::mu, by RPC handlers and the scheduler thread;
//   - planner's: the scheduler thread's alone (JobPlanner); no RPC handler touches them.
struct JobRun {
  using TimePoint = std::chrono::steady_clock::time_point;

  // --- shared (guarded by CoordinatorState::mu) ---
  dtm::v1::Job job;  // the record as the store holds it (once persisted)
  JobPhase phase = JobPhase::kWaitingForModel;
  std::string pool;                                   // the workers' pool, once resolved
  // With `reference:`, the pool of the workers serving the reference (its baseline and noise floor).
  std::string reference_pool;
  // model, probes, n, completion, dtype and calibration fingerprint, once resolved (ShardKey); with a
  // reference of other weights, the probe set is ReferenceBaselineFingerprint's (store_keys.h)
  dtm::v1::CacheKey base_key;
  // The key of the baseline's shards: base_key, or with a reference of other weights the reference's
  // model and the probe file's fingerprint (its own noise floor's key, too)
  dtm::v1::CacheKey baseline_key;
  std::vector<std::pair<uint32_t, uint32_t>> shards;  // probe ranges [begin, end), once resolved
  std::set<std::string> outstanding;                  // task ids the current stage waits for
  // The results so far of a running job (no per-probe rows), remade by the planner after each stage.
  std::shared_ptr<const dtm::v1::GetResultsResponse> results;
  uint64_t version = 1;  // bumped on every progress change, for WaitProgress
  bool dirty = false;    // the record changed since it was last written
  TimePoint last_persist;
  TimePoint started;                // of this coordinator's run of the job
  int64_t tasks_computed_here = 0;  // results accepted since `started`, for rates
  // Tasks of the stages not planned yet, an upper bound from the driver (JobDriver::LaterConfigs),
  // so that the ETA covers the whole job and not only the stage under way.
  uint64_t later_tasks = 0;
  int64_t probes_computed_here = 0;

  // Serializes writes of this job's record, so that an older snapshot never overwrites a newer one.
  // Held across the store write, and by nothing but the writers of this one record.
  std::mutex persist_mu;

  // --- set before the run is shared, then read-only ---
  JobSpec spec;  // paths resolved under the data root

  // --- the planner's (scheduler thread only) ---
  std::unique_ptr<JobDriver> driver;
  std::vector<std::shared_ptr<const Rows>> probe_rows;     // per shard
  std::vector<std::shared_ptr<const Rows>> baseline_rows;  // per shard, once the baseline is in
  std::vector<std::string> stage_configs;
  // Racing: per config of the stage, how many shards (the first ones) it was planned on; absent = all.
  // `evaluated` then holds its metrics over those shards.
  std::map<std::string, size_t> stage_shards;
  std::map<std::string, dtm::v1::Metrics> evaluated;
  // With a reference of other weights: whether its noise floor (config "" on baseline_key) was
  // planned, and its metrics once they are in. (Config "" in `evaluated` is the job's model.)
  bool reference_floor_planned = false;
  std::optional<dtm::v1::Metrics> reference_floor;
  std::map<std::string, uint32_t> cached_shards;  // per config: shards found in the cache when planned
  // `ppl:` (SPEC `ppl`), for a job that has it: the text-windows task (planned with the baseline),
  // then its windows cut into shards whose eval tasks every config gets beside its probe shards.
  std::shared_ptr<const dtm::v1::TextWindowsInput> ppl_text;
  dtm::v1::CacheKey ppl_text_key;  // the text-windows task's key
  dtm::v1::CacheKey ppl_key;       // base_key with the windows' fingerprint, prefix 1, completion window - 1
  std::vector<std::pair<uint32_t, uint32_t>> ppl_shards;  // window ranges [begin, end)
  std::vector<std::shared_ptr<const Rows>> ppl_rows;      // per ppl shard
  // A train job (train_planner.h): its task, and since when too few workers could form its gang.
  std::string train_task_id;
  std::optional<TimePoint> gang_short_since;
  // A sparsify job (sparsify_planner.h): its plan once resolved, and its stage jobs that ended, with
  // their results, by job id (read from the store once).
  std::shared_ptr<const SparsifyRunPlan> sparsify_plan;
  std::map<std::string, std::pair<dtm::v1::Job, dtm::v1::GetResultsResponse>> sparsify_stages;
};

// Now, to the nanosecond. (Debian's protobuf TimeUtil::GetCurrentTime has whole seconds only: jobs
// created within one second would list in id order, and lease expiries would be off by up to 1 s.)
google::protobuf::Timestamp WallClockNow();

bool IsFinal(dtm::v1::JobState state);
// "pending", "running", ...: the `state` label of dtm_jobs and the word in logs.
std::string JobStateLabel(dtm::v1::JobState state);

// base_key, baseline_key and shards from the record's summary, once it names the model (resolved,
// maybe by an earlier coordinator run); requires the fields it writes to be writable (mu held, or the
// run not shared yet).
void RestoreResolution(JobRun& run);

// Whether the job's baseline comes from a reference of other weights than its model's: then its
// baseline and noise floor run in reference_pool and config "" is the model against that baseline.
bool HasSeparateReference(const JobRun& run);

// The progress fields that follow from the record and the clock: job id, state, update time, probes
// per second and the ETA (computed tasks only, since this coordinator started the job).
void RefreshProgress(JobRun& run, JobRun::TimePoint now);

}  // namespace dtm
