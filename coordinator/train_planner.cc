#include "coordinator/train_planner.h"

#include <spdlog/spdlog.h>

#include "common/compression_config.h"
#include "coordinator/store_keys.h"

namespace dtm {

v1::TrainInput TrainInputOf(const JobSpec& spec) {
  const TrainSpec& t = spec.train;
  v1::TrainInput in;
  in.set_data_path(t.data);
  in.set_data_format(t.data_format);
  in.set_output_dir(t.output);
  in.set_checkpoint_dir(t.checkpoint_dir);
  in.set_phases(t.phases);
  in.set_prune(t.prune);
  in.set_remask(t.remask);
  in.set_batch(static_cast<uint32_t>(t.batch));
  in.set_micro_batch(static_cast<uint32_t>(t.micro_batch));
  in.set_seq_len(static_cast<uint32_t>(t.seq_len));
  in.set_max_sequences(static_cast<uint64_t>(t.max_sequences));
  in.set_learning_rate(t.learning_rate);
  in.set_warmup_steps(static_cast<uint32_t>(t.warmup));
  in.set_schedule(t.schedule);
  in.set_weight_decay(t.weight_decay);
  in.set_clip_grad_norm(t.clip);
  in.set_seed(static_cast<uint64_t>(t.seed));
  in.set_checkpoint_every(static_cast<uint32_t>(t.checkpoint_every));
  in.set_shard_optimizer(t.shard_optimizer);
  in.set_activation_checkpointing(t.activation_checkpointing);
  in.set_gang_size(static_cast<uint32_t>(t.workers));
  in.set_timeout_seconds(static_cast<uint32_t>(t.timeout_seconds));
  return in;
}

Status TrainPlanner::Start(JobRun& run, bool* resolved) {
  *resolved = false;
  const std::string job_id = run.job.job_id();
  auto train = std::make_shared<v1::TrainInput>(TrainInputOf(run.spec));
  PlannedTask task;
  task.kind = TaskKindForKey::kTrain;
  task.train = train;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    const v1::JobSummary& summary = run.job.summary();
    std::string fingerprint = summary.model_fingerprint();
    v1::Dtype dtype = summary.dtype();
    if (fingerprint.empty()) {
      auto found = state_->workers.FindModel(run.spec.model, DtypeToProto(run.spec.dtype));
      if (!found.ok()) return state_->WaitForModel(run, "model", run.spec.model);
      fingerprint = found->first.fingerprint;
      dtype = found->second;
      v1::JobSummary& s = *run.job.mutable_summary();
      s.set_model_fingerprint(fingerprint);
      s.set_num_layers(static_cast<uint32_t>(found->first.geometry.num_layers));
      s.set_dtype(dtype);
    }
    // The spec's syntax was checked at submission; its layers are checkable once the model is known.
    if (!train->prune().empty()) {
      StatusOr<CompressionConfig> prune =
          ParsePruneTargets(train->prune(), static_cast<int>(run.job.summary().num_layers()));
      if (!prune.ok()) return InvalidArgumentError("job spec: train.prune: " + prune.status().message());
    }
    task.key.set_model_fingerprint(fingerprint);
    task.key.set_dtype(dtype);
    task.key.set_probe_set_fingerprint(TrainRunFingerprint(job_id, *train));
    run.pool = PoolName(fingerprint, dtype);
  }
  task.task_id = TaskIdFor(task.kind, task.key);
  ASSIGN_OR_RETURN(std::vector<bool> stored, state_->storage().HaveResults({{task.kind, task.task_id}}));
  *resolved = true;
  if (stored[0]) return FinishWith(run, task.task_id);  // finished before a restart
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    if (!state_->tasks.Join(task.task_id, job_id)) {
      RETURN_IF_ERROR(state_->tasks.Add(task, run.pool, run.spec.model, run.spec.priority, job_id));
    }
    run.outstanding = {task.task_id};
    run.train_task_id = task.task_id;
    run.phase = JobPhase::kTraining;
    if (run.job.state() == v1::JOB_STATE_PENDING) {
      run.job.set_state(v1::JOB_STATE_RUNNING);
      *run.job.mutable_start_time() = WallClockNow();
    }
    v1::JobProgress& progress = *run.job.mutable_progress();
    progress.set_tasks_total(1);
    progress.set_message("waiting for a gang of " + std::to_string(train->gang_size()) + " idle workers serving " +
                         run.spec.model);
    spdlog::info("job {}: training {} ({}) on a gang of {} into {}", job_id, run.spec.model,
                 task.key.model_fingerprint().substr(0, 12), train->gang_size(), train->output_dir());
    state_->Touch(run);
    state_->Wake();
  }
  (void)state_->Persist(job_id, /*force=*/true);
  return OkStatus();
}

Status TrainPlanner::CheckGang(JobRun& run) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (run.phase != JobPhase::kTraining || run.outstanding.empty()) return OkStatus();
  std::optional<GangTable::View> gang = state_->tasks.Gangs().Find(*run.outstanding.begin());
  if (!gang || gang->running) {
    run.gang_short_since.reset();
    // The steps and loss come with rank 0's heartbeats (WorkerApi); the message says what runs.
    const std::string message = gang ? "training on a gang of " + std::to_string(gang->size) + " (attempt " +
                                           std::to_string(gang->attempt) + ")"
                                     : run.job.progress().message();
    if (run.job.progress().message() != message) {
      run.job.mutable_progress()->set_message(message);
      state_->Touch(run);
    }
    return OkStatus();
  }
  const int capable = state_->workers.GangCapableIn(run.pool);
  if (capable >= gang->size) {
    run.gang_short_since.reset();
    const std::string message = "waiting for a gang of " + std::to_string(gang->size) + " idle workers serving " +
                                run.spec.model + " (attempt " + std::to_string(gang->attempt) + ")";
    if (run.job.progress().message() != message) {
      run.job.mutable_progress()->set_message(message);
      state_->Touch(run);
    }
    return OkStatus();
  }
  const auto now = state_->clock().Now();
  if (!run.gang_short_since) run.gang_short_since = now;
  const int64_t wait_ms = state_->options().model_wait_ms;
  const std::string have = std::to_string(capable) + " of the " + std::to_string(gang->size) +
                           " workers it needs serve " + run.spec.model + " with a gang address (--gang-address)";
  if (wait_ms > 0 && now - *run.gang_short_since > std::chrono::milliseconds(wait_ms)) {
    return FailedPreconditionError("train.workers: only " + have + ", for " + std::to_string(wait_ms / 1000) +
                                   " s (--model-wait-seconds); start more workers, or ask for fewer");
  }
  const std::string message = "waiting for workers: " + have;
  if (run.job.progress().message() != message) {
    run.job.mutable_progress()->set_message(message);
    state_->Touch(run);
  }
  return OkStatus();
}

Status TrainPlanner::Finish(JobRun& run) {
  std::string task_id;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase != JobPhase::kTraining) return OkStatus();
    task_id = run.train_task_id;
  }
  return FinishWith(run, task_id);
}

Status TrainPlanner::FinishWith(JobRun& run, const std::string& task_id) {
  ASSIGN_OR_RETURN(v1::TrainingResult training, state_->storage().ReadTraining(task_id, "the run's result"));
  v1::GetResultsResponse results;
  results.set_job_id(run.job.job_id());
  results.set_state(v1::JOB_STATE_SUCCEEDED);
  *results.mutable_training() = std::move(training);
  RETURN_IF_ERROR(state_->storage().SaveResults(results));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    v1::JobProgress& progress = *run.job.mutable_progress();
    const v1::TrainingResult& r = results.training();
    progress.set_train_step(r.steps());
    progress.set_train_steps(r.steps());
    if (r.losses_size() > 0) progress.set_train_loss(r.losses(r.losses_size() - 1));
    progress.set_tasks_total(1);
    progress.set_tasks_done(1);
    spdlog::info("job {}: trained {} steps, last loss {:.4f}; model {} ({})", run.job.job_id(), r.steps(),
                 progress.train_loss(), r.output_dir(), r.output_fingerprint().substr(0, 12));
    run.results = std::make_shared<const v1::GetResultsResponse>(std::move(results));
    state_->EndJob(run, v1::JOB_STATE_SUCCEEDED, OkStatus());
  }
  (void)state_->Persist(run.job.job_id(), /*force=*/true);
  return OkStatus();
}

}  // namespace dtm
