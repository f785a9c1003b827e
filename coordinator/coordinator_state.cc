#include "coordinator/coordinator_state.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <cmath>

#include "common/user_text.h"

namespace dtm {
namespace {

// Bytes of an error kept in a job record: records are listed many at a time (ListJobs pages).
constexpr size_t kMaxJobErrorBytes = 2048;

LeaseTable::Options LeaseOptions(const CoordinatorOptions& options, const std::string& lease_id_prefix) {
  LeaseTable::Options lease;
  lease.lease_timeout_ms = options.lease_timeout_ms;
  lease.max_attempts = options.max_attempts;
  lease.lease_id_prefix = lease_id_prefix;
  lease.retention_ms = options.lease_retention_ms;
  lease.affinity_wait_ms = options.affinity_wait_ms;
  return lease;
}

}  // namespace

CoordinatorState::CoordinatorState(const CoordinatorOptions& options, const Clock* clock,
                                   CoordinatorMetrics* metrics, TableStorage* storage,
                                   const std::string& lease_id_prefix)
    : tasks(LeaseOptions(options, lease_id_prefix), clock),
      options_(options),
      clock_(clock),
      metrics_(metrics),
      storage_(storage) {}

JobRun* CoordinatorState::FindJob(const std::string& job_id) {
  auto it = jobs.find(job_id);
  return it == jobs.end() ? nullptr : it->second.get();
}

void CoordinatorState::Wake() {
  wake = true;
  changed.notify_all();
}

void CoordinatorState::Touch(JobRun& run) {
  RefreshProgress(run, clock_->Now());
  ++run.version;
  run.dirty = true;
  const v1::JobProgress& progress = run.job.progress();
  if (metrics_ != nullptr && run.phase != JobPhase::kEnded && run.job.state() == v1::JOB_STATE_RUNNING) {
    metrics_->SetJobProgress(run.job.job_id(), progress.tasks_done(), progress.tasks_total());
    if (progress.has_search_level()) {
      metrics_->SetJobSearch(run.job.job_id(), progress.search_level(),
                             progress.has_best_fdt75() ? progress.best_fdt75() : std::nan(""));
    }
    if (progress.has_train_step() && progress.has_train_loss()) {
      metrics_->SetJobTraining(run.job.job_id(), progress.train_step(), progress.train_loss());
    } else if (progress.has_sparsify_stage()) {
      metrics_->RemoveJobTraining(run.job.job_id());  // a run between its training stages
    }
    if (progress.has_sparsify_round() && progress.has_sparsify_stage()) {
      metrics_->SetJobSparsify(run.job.job_id(), progress.sparsify_round(), progress.sparsify_stage());
    }
  }
  changed.notify_all();
}

void CoordinatorState::EndJob(JobRun& run, v1::JobState state, const Status& error) {
  tasks.Release(run.job.job_id(), run.outstanding);
  run.outstanding.clear();
  run.phase = JobPhase::kEnded;
  run.job.set_state(state);
  *run.job.mutable_end_time() = WallClockNow();
  v1::JobProgress& progress = *run.job.mutable_progress();
  progress.set_state(state);
  progress.clear_eta_seconds();
  if (!error.ok()) {
    const std::string message = Bounded(error.message(), kMaxJobErrorBytes);
    run.job.mutable_error()->set_code(static_cast<int>(error.code()));
    run.job.mutable_error()->set_message(message);
    progress.set_message(message);
  } else {
    progress.set_message("");
  }
  if (state == v1::JOB_STATE_SUCCEEDED) {
    spdlog::info("job {}: succeeded ({} tasks, {} from the cache)", run.job.job_id(), progress.tasks_total(),
                 progress.tasks_cached());
  } else {
    spdlog::warn("job {}: {}: {}", run.job.job_id(), JobStateLabel(state), Bounded(error.message(), 1000));
  }
  if (metrics_ != nullptr) metrics_->RemoveJob(run.job.job_id());
  Touch(run);
  Wake();  // the planner frees what the job held
}

void CoordinatorState::TaskDone(const std::string& task_id) {
  const TaskEntry* entry = tasks.Find(task_id);
  if (entry == nullptr) return;
  const int64_t probes = entry->rows ? static_cast<int64_t>(entry->rows->size()) : 0;
  for (const std::string& job_id : tasks.Finish(task_id)) {
    JobRun* run = FindJob(job_id);
    if (run == nullptr || !run->outstanding.erase(task_id)) continue;
    v1::JobProgress& progress = *run->job.mutable_progress();
    progress.set_tasks_done(progress.tasks_done() + 1);
    ++run->tasks_computed_here;
    run->probes_computed_here += probes;
    Touch(*run);
  }
  Wake();
}

void CoordinatorState::TaskRequeued(const std::string& task_id) {
  if (metrics_ != nullptr) metrics_->tasks_requeued.Increment();
  const TaskEntry* entry = tasks.Find(task_id);
  if (entry == nullptr) return;
  for (const std::string& job_id : entry->jobs) {
    JobRun* run = FindJob(job_id);
    if (run == nullptr) continue;
    run->job.mutable_progress()->set_tasks_requeued(run->job.progress().tasks_requeued() + 1);
    Touch(*run);
  }
}

Status CoordinatorState::WaitForModel(JobRun& run, const std::string& field, const std::string& wanted) {
  const int64_t wait_ms = options_.model_wait_ms;
  if (wait_ms > 0 && clock_->Now() - run.started > std::chrono::milliseconds(wait_ms)) {
    return FailedPreconditionError(field + ": no worker has registered serving " + wanted + " within " +
                                   std::to_string(wait_ms / 1000) + " s (" + workers.ServedModels() +
                                   workers.RefusalsOf(field == "reference" ? run.spec.reference : run.spec.model) +
                                   "); is the path readable on the workers, or under a --model-root? their logs say "
                                   "why they did not start");
  }
  const std::string message = "waiting for a worker serving " + field + " " + wanted + " (" + workers.ServedModels() + ")";
  if (run.job.progress().message() != message) {
    run.job.mutable_progress()->set_message(message);
    Touch(run);
  }
  return OkStatus();
}

void CoordinatorState::TaskFailed(const std::string& task_id, const Status& error) {
  const TaskEntry* entry = tasks.Find(task_id);
  if (entry == nullptr) return;
  if (metrics_ != nullptr) metrics_->tasks_failed.Increment();
  std::string what = "task " + task_id.substr(0, 12) + " (";
  switch (entry->kind) {
    case TaskKindForKey::kBaseline: what += "baseline"; break;
    case TaskKindForKey::kEval: what += "config '" + entry->key.config().canonical() + "'"; break;
    case TaskKindForKey::kTextWindows: what += "ppl text windows"; break;
    case TaskKindForKey::kTrain: what += "training"; break;
  }
  what += entry->kind == TaskKindForKey::kTextWindows || entry->kind == TaskKindForKey::kTrain
              ? ")"
              : ", rows " + std::to_string(entry->key.shard().begin()) + ".." + std::to_string(entry->key.shard().end()) + ")";
  spdlog::error("{}: failed for good: {}", what, Bounded(error.message(), 1000));
  // EndJob releases each job's tasks, which may forget this one: only ids are used from here on.
  for (const std::string& job_id : tasks.Finish(task_id)) {
    JobRun* run = FindJob(job_id);
    if (run == nullptr || run->phase == JobPhase::kEnded) continue;
    v1::JobProgress& progress = *run->job.mutable_progress();
    progress.set_tasks_failed(progress.tasks_failed() + 1);
    EndJob(*run, v1::JOB_STATE_FAILED, Status(error.code(), what + ": " + error.message()));
  }
}

void CoordinatorState::UpdateGauges() {
  if (metrics_ == nullptr) return;
  std::map<std::string, int> by_state;
  for (const auto& [id, run] : jobs) ++by_state[JobStateLabel(run->job.state())];
  metrics_->SetJobsByState(by_state);
  const auto [queued, leased] = tasks.QueuedAndLeased();
  metrics_->SetTaskGauges(static_cast<double>(queued), static_cast<double>(leased));
  metrics_->SetWorkersConnected(static_cast<double>(workers.size()));
}

Status CoordinatorState::Persist(const std::string& job_id, bool force) {
  JobRun* run;
  {
    std::lock_guard<std::mutex> lock(mu);
    run = FindJob(job_id);
    if (run == nullptr) return NotFoundError("no job '" + job_id + "'");
  }
  std::lock_guard<std::mutex> writing(run->persist_mu);
  v1::Job snapshot;
  uint64_t version;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!run->dirty) return OkStatus();
    if (!force && clock_->Now() - run->last_persist < std::chrono::seconds(1)) return OkStatus();
    snapshot = run->job;
    version = run->version;
  }
  Status status = storage_->SaveJob(snapshot);
  std::lock_guard<std::mutex> lock(mu);
  if (!status.ok()) {
    spdlog::warn("job {}: could not write its record: {}; will retry", job_id, status.message());
    return status;
  }
  // A change made while the record was written keeps it marked for the next write.
  if (run->version == version) run->dirty = false;
  run->last_persist = clock_->Now();
  return OkStatus();
}

}  // namespace dtm
