#include "coordinator/job_planner.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "coordinator/aggregate.h"
#include "coordinator/store_keys.h"

namespace dtm {
namespace {

using v1::JobState;

// Baseline shards and text windows run before the eval shards that need them; within each, the
// spec's priority.
int TaskPriority(const JobSpec& spec, TaskKindForKey kind) {
  return spec.priority * 2 + (kind == TaskKindForKey::kEval ? 1 : 0);
}

// The key of a text's windows, or of their eval shards: `base`'s model and dtype, `fingerprint` as
// the probe set, every window's first token the prefix and its other window - 1 the completion.
v1::CacheKey PplKey(const v1::CacheKey& base, const std::string& fingerprint, int64_t window) {
  v1::CacheKey key;
  key.set_model_fingerprint(base.model_fingerprint());
  key.set_dtype(base.dtype());
  key.set_calibration_fingerprint(base.calibration_fingerprint());
  key.set_probe_set_fingerprint(fingerprint);
  key.set_prefix_len(1);
  key.set_completion_len(static_cast<uint32_t>(window - 1));
  return key;
}

// A float32 noise floor below this share of the completion length is reported as suspect: a healthy
// float32 replica reproduces its own greedy baseline exactly (fdt75 = completion), while one that
// computes wrong numbers, or a worker that makes them up, does not.
constexpr double kSuspectNoiseFloorShare = 0.9;

// The eval task ids of `config` on each of `shards` under `key`, appended to `out`.
void AppendEvalTaskIds(const v1::CacheKey& key, const std::vector<std::pair<uint32_t, uint32_t>>& shards,
                       const std::string& config, std::vector<std::pair<TaskKindForKey, std::string>>* out) {
  for (const auto& [begin, end] : shards) {
    out->emplace_back(TaskKindForKey::kEval, TaskIdFor(TaskKindForKey::kEval, ShardKey(key, config, begin, end)));
  }
}

// The probe shards `config` was planned on in the run's stage: the first run.stage_shards[config]
// ones when racing planned it on part of them, else all.
std::vector<std::pair<uint32_t, uint32_t>> StageShardsOf(const JobRun& run, const std::string& config) {
  auto prefix = run.stage_shards.find(config);
  if (prefix == run.stage_shards.end()) return run.shards;
  return {run.shards.begin(), run.shards.begin() + static_cast<std::ptrdiff_t>(prefix->second)};
}

}  // namespace

Status CheckStageSize(const JobDriver& driver, size_t shards, int64_t max_tasks, bool reference) {
  // The noise floor, and with a reference its own noise floor beside the model's config "".
  const uint64_t tasks = (driver.MaxStageConfigs() + (reference ? 2 : 1)) * shards;
  if (tasks > static_cast<uint64_t>(max_tasks)) {
    return InvalidArgumentError("job spec: a stage of this job could plan " + std::to_string(tasks) +
                                " tasks (" + std::to_string(driver.MaxStageConfigs()) +
                                (reference ? " configs, the uncompressed model and the reference's noise floor, x "
                                           : " configs and the noise floor, x ") +
                                std::to_string(shards) +
                                " shards); this coordinator plans at most " + std::to_string(max_tasks) +
                                " per stage (--max-stage-tasks): use fewer configs or a larger shard_size");
  }
  return OkStatus();
}

void JobPlanner::AdvanceAll() {
  std::vector<JobRun*> runs;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    for (auto& [id, run] : state_->jobs) {
      // Ended jobs that still hold planner state are visited once more, to free it.
      if (run->phase == JobPhase::kDormant) continue;
      if (run->phase != JobPhase::kEnded || run->driver != nullptr || !run->probe_rows.empty() ||
          run->sparsify_plan != nullptr) {
        runs.push_back(run.get());
      }
    }
  }
  for (JobRun* run : runs) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->stopping) return;
    }
    Advance(*run);
  }
}

bool JobPlanner::Ended(JobRun& run) {
  std::lock_guard<std::mutex> lock(state_->mu);
  return run.phase == JobPhase::kEnded;
}

void JobPlanner::Advance(JobRun& run) {
  // Loops while a stage completes at once (everything cached), so a resumed job replays up to its
  // first stage with work left in one call.
  for (;;) {
    JobPhase phase;
    bool waiting;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      phase = run.phase;
      waiting = phase != JobPhase::kEnded && phase != JobPhase::kWaitingForModel && !run.outstanding.empty();
    }
    if (waiting) {
      // A train job whose gang cannot form fails after the model wait, like a job without workers.
      if (Status gang = train_.CheckGang(run); !gang.ok()) Fail(run, gang);
      return;
    }
    Status status = OkStatus();
    switch (phase) {
      case JobPhase::kDormant:
        return;  // never advanced here (AdvanceAll does not even visit it)
      case JobPhase::kEnded:
        if (Status saved = SaveUnfinishedResults(run); saved.code() == StatusCode::kUnavailable) {
          return;  // the store is away: the next tick saves them
        } else if (!saved.ok()) {
          spdlog::warn("job {}: its finished results could not be kept: {}", run.job.job_id(), saved.message());
        }
        sparsify_.Release(run);
        // Free what the job held; its record and results stay in the store.
        run.driver.reset();
        run.probe_rows.clear();
        run.baseline_rows.clear();
        run.evaluated.clear();
        run.ppl_text.reset();
        run.ppl_rows.clear();
        return;
      case JobPhase::kWaitingForModel: {
        bool resolved = false;
        if (run.spec.kind == JobKind::kTrain) {
          status = train_.Start(run, &resolved);
          if (status.ok() && !resolved) return;
          break;
        }
        if (run.spec.kind == JobKind::kSparsify) {
          status = sparsify_.Start(run, &resolved);
          if (status.ok() && !resolved) return;
          break;
        }
        status = Resolve(run, &resolved);
        if (status.ok() && !resolved) return;
        if (status.ok()) status = PlanBaseline(run);
        break;
      }
      case JobPhase::kBaseline:
        status = LoadBaselineRows(run);
        if (status.ok()) status = StartStage(run);
        break;
      case JobPhase::kStages:
        status = AggregateStage(run);
        if (status.ok()) status = StartStage(run);
        break;
      case JobPhase::kTraining:
        status = train_.Finish(run);
        break;
      case JobPhase::kRounds:
        status = sparsify_.Advance(run);
        if (status.ok() && !Ended(run)) return;  // a stage job under way: looked at again next tick
        break;
    }
    if (status.code() == StatusCode::kUnavailable) {
      // The store is away: try again at the next tick, nothing lost. Logged by the store itself.
      spdlog::debug("job {}: {}; will retry", run.job.job_id(), status.message());
      return;
    }
    if (!status.ok()) {
      Fail(run, status);
      return;
    }
    if (Ended(run)) return;
  }
}

void JobPlanner::Fail(JobRun& run, const Status& error) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return;
    state_->EndJob(run, v1::JOB_STATE_FAILED, error);
  }
  (void)state_->Persist(run.job.job_id(), /*force=*/true);
}

Status JobPlanner::Resolve(JobRun& run, bool* resolved) {
  *resolved = false;
  const std::string job_id = run.job.job_id();
  ModelInfo model;
  v1::Dtype dtype;
  std::string reference_fp;
  std::string stored_probe_fingerprint, stored_calibration_fingerprint, stored_ppl_fingerprint;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    const v1::JobSummary& summary = run.job.summary();
    stored_probe_fingerprint = summary.probe_set_fingerprint();
    stored_calibration_fingerprint = summary.calibration_fingerprint();
    stored_ppl_fingerprint = summary.ppl_text_fingerprint();
    if (!summary.model_fingerprint().empty()) {
      // Resolved before a restart: the job keeps the models it started with.
      model = ModelInfo{summary.model_fingerprint(), {static_cast<int>(summary.num_layers()), {}}};
      model.geometry.component_params = state_->workers.ComponentParamsOf(model.fingerprint);
      dtype = summary.dtype();
      reference_fp = summary.reference_model_fingerprint();
    } else {
      auto found = state_->workers.FindModel(run.spec.model, DtypeToProto(run.spec.dtype));
      if (!found.ok()) {
        return state_->WaitForModel(run, "model",
                                    run.spec.model + (run.spec.dtype.empty() ? "" : " in " + run.spec.dtype));
      }
      model = found->first;
      dtype = found->second;
    }
    if (!run.spec.reference.empty() && reference_fp.empty()) {
      // In the model's precision: the comparison is of weights, not of precisions.
      auto found = state_->workers.FindModel(run.spec.reference, dtype);
      if (!found.ok()) {
        return state_->WaitForModel(run, "reference", run.spec.reference + " in " + v1::Dtype_Name(dtype));
      }
      reference_fp = found->first.fingerprint;
    }
  }
  // The files and the driver, without the lock: a probe file of 1000 x 600 tokens takes a moment.
  ASSIGN_OR_RETURN(ProbeSet probes, files_->LoadProbes(run.spec));
  const std::string probe_fp = probes.Fingerprint();
  if (!stored_probe_fingerprint.empty() && stored_probe_fingerprint != probe_fp) {
    return FailedPreconditionError(
        "probes: " + run.spec.probes + " changed since the job started (fingerprint " +
        stored_probe_fingerprint.substr(0, 12) + ", now " + probe_fp.substr(0, 12) + ")");
  }
  std::string calibration_fp;
  if (SpecUsesGptq(run.spec)) {
    // Stored before any task names it, so that every worker can fetch it by its fingerprint.
    ASSIGN_OR_RETURN(CalibrationSequences calibration, files_->LoadCalibration(run.spec));
    calibration_fp = calibration.fingerprint;
    if (!stored_calibration_fingerprint.empty() && stored_calibration_fingerprint != calibration_fp) {
      return FailedPreconditionError("calibration: " + run.spec.calibration +
                                     " changed since the job started (fingerprint " +
                                     stored_calibration_fingerprint.substr(0, 12) + ", now " +
                                     calibration_fp.substr(0, 12) + ")");
    }
    v1::CalibrationSet set;
    set.set_fingerprint(calibration_fp);
    set.set_seq_len(static_cast<uint32_t>(calibration.seq_len));
    for (const std::vector<int32_t>& sequence : calibration.sequences) {
      v1::TokenSequence* out = set.add_sequences();
      for (int32_t t : sequence) out->add_tokens(static_cast<uint32_t>(t));
    }
    RETURN_IF_ERROR(state_->storage().StoreCalibration(set));
  }
  std::shared_ptr<v1::TextWindowsInput> ppl_text;
  std::string ppl_fp;
  if (!run.spec.ppl_text.empty()) {
    ASSIGN_OR_RETURN(std::string text, files_->LoadPplText(run.spec));
    ppl_fp = PplTextFingerprint(run.spec.ppl_join, text);
    if (!stored_ppl_fingerprint.empty() && stored_ppl_fingerprint != ppl_fp) {
      return FailedPreconditionError("ppl.text: " + run.spec.ppl_text + " changed since the job started (fingerprint " +
                                     stored_ppl_fingerprint.substr(0, 12) + ", now " + ppl_fp.substr(0, 12) + ")");
    }
    ppl_text = std::make_shared<v1::TextWindowsInput>();
    ppl_text->set_text(std::move(text));
    ppl_text->set_window(static_cast<uint32_t>(run.spec.ppl_window));
    ppl_text->set_join(run.spec.ppl_join);
  }
  if (model.geometry.component_params.empty()) {
    // Where no worker reported the sizes (one older than the field), the config's, if it has the same layers.
    std::optional<ModelGeometry> config = files_->ModelConfigGeometry(run.spec.model);
    if (config && config->num_layers == model.geometry.num_layers) {
      model.geometry.component_params = std::move(config->component_params);
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<JobDriver> driver,
                   CreateJobDriver(run.spec, model.geometry, files_->limits(),
                                   static_cast<uint32_t>(probes.probes.size())));
  const uint32_t n = static_cast<uint32_t>(probes.probes.size());
  const uint32_t shard_size = static_cast<uint32_t>(run.spec.shard_size);
  RETURN_IF_ERROR(
      CheckStageSize(*driver, (n + shard_size - 1) / shard_size, state_->options().max_stage_tasks,
                     !run.spec.reference.empty()));
  std::vector<std::shared_ptr<const Rows>> probe_rows;
  for (uint32_t begin = 0; begin < n; begin += shard_size) {
    const uint32_t end = std::min(n, begin + shard_size);
    auto rows = std::make_shared<Rows>();
    for (uint32_t i = begin; i < end; ++i) {
      v1::BaselineRow row;
      row.set_probe_id(probes.probes[i].id);
      row.set_probe_index(i);
      row.set_prefix_len(static_cast<uint32_t>(run.spec.prefix_len));
      for (int32_t t : probes.probes[i].tokens) row.add_tokens(static_cast<uint32_t>(t));
      rows->push_back(std::move(row));
    }
    probe_rows.push_back(std::move(rows));
  }
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    v1::JobSummary& summary = *run.job.mutable_summary();
    summary.set_model_fingerprint(model.fingerprint);
    summary.set_num_layers(static_cast<uint32_t>(model.geometry.num_layers));
    summary.set_dtype(dtype);
    summary.set_probe_set_fingerprint(probe_fp);
    summary.set_calibration_fingerprint(calibration_fp);
    summary.set_ppl_text_fingerprint(ppl_fp);
    summary.set_num_probes(n);
    summary.set_reference_model_fingerprint(reference_fp);
    RestoreResolution(run);
    run.pool = PoolName(model.fingerprint, dtype);
    if (!reference_fp.empty()) run.reference_pool = PoolName(reference_fp, dtype);
    if (run.job.state() == v1::JOB_STATE_PENDING) {
      run.job.set_state(v1::JOB_STATE_RUNNING);
      *run.job.mutable_start_time() = WallClockNow();
    }
    run.job.mutable_progress()->set_message("baseline");
    spdlog::info("job {}: running on model {} ({}){}, {} probes in {} shards, {} layers", job_id,
                 model.fingerprint.substr(0, 12), v1::Dtype_Name(dtype),
                 reference_fp.empty() ? "" : " against reference " + reference_fp.substr(0, 12), n,
                 run.shards.size(), model.geometry.num_layers);
    state_->Touch(run);
  }
  run.driver = std::move(driver);
  run.probe_rows = std::move(probe_rows);
  run.ppl_text = std::move(ppl_text);
  if (run.ppl_text) {
    run.ppl_text_key = PplKey(run.base_key, ppl_fp, run.spec.ppl_window);
    run.ppl_text_key.clear_calibration_fingerprint();  // tokenizing uses no calibration set
  }
  *resolved = true;
  (void)state_->Persist(job_id, /*force=*/true);
  return OkStatus();
}

Status JobPlanner::PlanTasks(JobRun& run, std::vector<PlannedTask> planned, JobPhase next,
                             const std::string& message) {
  if (static_cast<int64_t>(planned.size()) > state_->options().max_stage_tasks) {
    return InvalidArgumentError("a stage of " + std::to_string(planned.size()) +
                                " tasks exceeds this coordinator's " +
                                std::to_string(state_->options().max_stage_tasks) + " (--max-stage-tasks)");
  }
  std::vector<std::pair<TaskKindForKey, std::string>> ids;
  ids.reserve(planned.size());
  for (PlannedTask& p : planned) {
    p.task_id = TaskIdFor(p.kind, p.key);
    ids.emplace_back(p.kind, p.task_id);
  }
  // Every store read first: if Redis is away, nothing has changed and the next tick plans again.
  ASSIGN_OR_RETURN(std::vector<bool> cached, state_->storage().HaveResults(ids));

  std::lock_guard<std::mutex> lock(state_->mu);
  if (run.phase == JobPhase::kEnded) return OkStatus();
  CoordinatorMetrics* metrics = state_->metrics();
  const std::string& job_id = run.job.job_id();
  run.outstanding.clear();
  v1::JobProgress& progress = *run.job.mutable_progress();
  for (size_t i = 0; i < planned.size(); ++i) {
    const PlannedTask& p = planned[i];
    progress.set_tasks_total(progress.tasks_total() + 1);
    if (state_->tasks.Join(p.task_id, job_id)) {
      run.outstanding.insert(p.task_id);
      continue;
    }
    const std::string& pool = p.on_reference ? run.reference_pool : run.pool;
    // A task accepted since the read above is in the store too.
    if (cached[i] || state_->tasks.RecentlyDone(p.task_id, pool)) {
      if (p.kind == TaskKindForKey::kEval && !p.on_reference) ++run.cached_shards[p.key.config().canonical()];
      progress.set_tasks_done(progress.tasks_done() + 1);
      progress.set_tasks_cached(progress.tasks_cached() + 1);
      if (metrics != nullptr) metrics->cache_hits.Increment();
      continue;
    }
    if (metrics != nullptr) metrics->cache_misses.Increment();
    RETURN_IF_ERROR(state_->tasks.Add(p, pool, p.on_reference ? run.spec.reference : run.spec.model,
                                      TaskPriority(run.spec, p.kind), job_id));
    run.outstanding.insert(p.task_id);
  }
  run.phase = next;
  progress.set_message(message);
  state_->Touch(run);
  if (!run.outstanding.empty()) state_->Wake();
  return OkStatus();
}

Status JobPlanner::PlanBaseline(JobRun& run) {
  std::vector<PlannedTask> planned;
  const bool reference = HasSeparateReference(run);
  for (size_t s = 0; s < run.shards.size(); ++s) {
    planned.push_back({TaskKindForKey::kBaseline,
                       ShardKey(run.baseline_key, "", run.shards[s].first, run.shards[s].second), run.probe_rows[s],
                       "", nullptr, reference});
  }
  if (run.ppl_text) planned.push_back({TaskKindForKey::kTextWindows, run.ppl_text_key, nullptr, "", run.ppl_text});
  return PlanTasks(run, std::move(planned), JobPhase::kBaseline, run.ppl_text ? "baseline and ppl text windows" : "baseline");
}

Status JobPlanner::LoadBaselineRows(JobRun& run) {
  std::vector<std::shared_ptr<const Rows>> rows;
  for (const auto& [begin, end] : run.shards) {
    ASSIGN_OR_RETURN(v1::BaselineShardOutput output,
                     state_->storage().ReadBaseline(
                         TaskIdFor(TaskKindForKey::kBaseline, ShardKey(run.baseline_key, "", begin, end)),
                         "baseline shard " + std::to_string(begin) + ".." + std::to_string(end)));
    rows.push_back(std::make_shared<Rows>(output.rows().begin(), output.rows().end()));
  }
  run.baseline_rows = std::move(rows);
  return run.ppl_text ? LoadPplWindows(run) : OkStatus();
}

Status JobPlanner::LoadPplWindows(JobRun& run) {
  ASSIGN_OR_RETURN(v1::TextWindowsOutput output,
                   state_->storage().ReadTextWindows(TaskIdFor(TaskKindForKey::kTextWindows, run.ppl_text_key),
                                                     "the windows of ppl.text " + run.spec.ppl_text));
  const uint32_t window = static_cast<uint32_t>(run.spec.ppl_window);
  run.ppl_key = PplKey(run.base_key, PplWindowsFingerprint(window, output), window);
  run.ppl_shards.clear();
  run.ppl_rows.clear();
  const uint32_t n = static_cast<uint32_t>(output.windows_size());
  const uint32_t shard_size = static_cast<uint32_t>(run.spec.ppl_shard_size);
  for (uint32_t begin = 0; begin < n; begin += shard_size) {
    const uint32_t end = std::min(n, begin + shard_size);
    auto rows = std::make_shared<Rows>();
    for (uint32_t i = begin; i < end; ++i) {
      v1::BaselineRow row;
      // Named by the offset of the window's first token in the tokenized text, as `dtmctl ppl` does.
      row.set_probe_id("ppl:" + std::to_string(static_cast<uint64_t>(i) * window));
      row.set_probe_index(i);
      row.set_prefix_len(1);
      *row.mutable_tokens() = std::move(*output.mutable_windows(static_cast<int>(i))->mutable_tokens());
      rows->push_back(std::move(row));
    }
    run.ppl_shards.emplace_back(begin, end);
    run.ppl_rows.push_back(std::move(rows));
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  run.job.mutable_summary()->set_ppl_windows(n);
  state_->Touch(run);
  return OkStatus();
}

Status JobPlanner::StartStage(JobRun& run) {
  Publish(run);
  ASSIGN_OR_RETURN(std::optional<std::vector<std::string>> next, run.driver->NextStage(run.evaluated));
  if (!next) return Finish(run);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    run.later_tasks = run.driver->LaterConfigs(run.evaluated) * (run.shards.size() + run.ppl_shards.size());
  }
  // Racing: each config's shards are the fewest first ones that hold the probes it must reach.
  const std::map<std::string, uint32_t> probes = run.driver->StageProbes(run.evaluated);
  auto shards_for = [&](const std::string& config) {
    auto it = probes.find(config);
    if (it == probes.end()) return run.shards.size();
    size_t count = 0;
    while (count < run.shards.size() && (count == 0 || run.shards[count - 1].second < it->second)) ++count;
    return count;
  };
  auto done = [&](const std::string& config) {
    auto it = run.evaluated.find(config);
    const size_t count = shards_for(config);
    return it != run.evaluated.end() && count > 0 && it->second.num_probes() >= run.shards[count - 1].second;
  };
  std::vector<std::string> configs;
  // The noise floor runs with the first stage, so that it is beside every result; against a
  // reference, config "" is the model as it is, the comparison's answer, and always runs.
  if ((run.spec.noise_floor || !run.spec.reference.empty()) && !run.evaluated.count("")) configs.push_back("");
  for (std::string& c : *next) {
    if (!done(c) && std::find(configs.begin(), configs.end(), c) == configs.end()) configs.push_back(std::move(c));
  }
  const std::map<std::string, std::string> parents = run.driver->StageParents(run.evaluated);
  std::vector<PlannedTask> planned;
  planned.reserve(configs.size() * run.shards.size());
  run.stage_shards.clear();
  for (const std::string& config : configs) {
    auto parent = parents.find(config);
    const std::string parent_config = parent != parents.end() ? parent->second : "";
    const size_t count = shards_for(config);
    if (count < run.shards.size()) run.stage_shards[config] = count;
    for (size_t s = 0; s < count; ++s) {
      planned.push_back({TaskKindForKey::kEval, ShardKey(run.base_key, config, run.shards[s].first, run.shards[s].second),
                         run.baseline_rows[s], "", nullptr});
      planned.back().parent_config = parent_config;
    }
    for (size_t s = 0; s < run.ppl_shards.size(); ++s) {
      planned.push_back({TaskKindForKey::kEval,
                         ShardKey(run.ppl_key, config, run.ppl_shards[s].first, run.ppl_shards[s].second),
                         run.ppl_rows[s], "", nullptr});
      planned.back().parent_config = parent_config;
    }
  }
  // The reference's own noise floor, in its pool: the same tasks as its noise floor in a job of its own.
  const bool reference_floor = HasSeparateReference(run) && run.spec.noise_floor && !run.reference_floor_planned;
  for (size_t s = 0; reference_floor && s < run.shards.size(); ++s) {
    planned.push_back({TaskKindForKey::kEval, ShardKey(run.baseline_key, "", run.shards[s].first, run.shards[s].second),
                       run.baseline_rows[s], "", nullptr, /*on_reference=*/true});
  }
  run.reference_floor_planned = run.reference_floor_planned || reference_floor;
  const size_t count = configs.size();
  run.stage_configs = std::move(configs);
  return PlanTasks(run, std::move(planned), JobPhase::kStages,
                   "evaluating " + std::to_string(count) + " configs");
}

StatusOr<v1::Metrics> JobPlanner::AggregateConfig(const JobRun& run, const std::string& config) {
  ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> results,
                   state_->storage().ReadConfigResults(run.base_key, StageShardsOf(run, config), config));
  ASSIGN_OR_RETURN(v1::Metrics metrics, AggregateProbeResults(results, run.spec.completion_len));
  if (run.ppl_text) {
    ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> windows,
                     state_->storage().ReadConfigResults(run.ppl_key, run.ppl_shards, config));
    ASSIGN_OR_RETURN(double ppl, PerplexityOfWindows(windows, run.spec.ppl_window));
    metrics.set_ppl(ppl);
  }
  return metrics;
}

Status JobPlanner::AggregateStage(JobRun& run) {
  for (const std::string& config : run.stage_configs) {
    ASSIGN_OR_RETURN(run.evaluated[config], AggregateConfig(run, config));
  }
  if (run.reference_floor_planned && !run.reference_floor) {
    ASSIGN_OR_RETURN(run.reference_floor, AggregateReferenceFloor(run));
  }
  return OkStatus();
}

StatusOr<v1::Metrics> JobPlanner::AggregateReferenceFloor(const JobRun& run) {
  ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> results,
                   state_->storage().ReadConfigResults(run.baseline_key, run.shards, ""));
  return AggregateProbeResults(results, run.spec.completion_len);
}

Status JobPlanner::SaveUnfinishedResults(JobRun& run) {
  v1::JobState state;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state = run.job.state();
  }
  if (run.driver == nullptr || state == v1::JOB_STATE_SUCCEEDED) return OkStatus();
  for (const std::string& config : run.stage_configs) {
    if (run.evaluated.count(config)) continue;
    std::vector<std::pair<TaskKindForKey, std::string>> tasks;
    AppendEvalTaskIds(run.base_key, StageShardsOf(run, config), config, &tasks);
    if (run.ppl_text) AppendEvalTaskIds(run.ppl_key, run.ppl_shards, config, &tasks);
    ASSIGN_OR_RETURN(std::vector<bool> stored, state_->storage().HaveResults(tasks));
    if (std::find(stored.begin(), stored.end(), false) != stored.end()) continue;
    ASSIGN_OR_RETURN(run.evaluated[config], AggregateConfig(run, config));
  }
  if (run.reference_floor_planned && !run.reference_floor) {
    std::vector<std::pair<TaskKindForKey, std::string>> tasks;
    AppendEvalTaskIds(run.baseline_key, run.shards, "", &tasks);
    ASSIGN_OR_RETURN(std::vector<bool> stored, state_->storage().HaveResults(tasks));
    if (std::find(stored.begin(), stored.end(), false) == stored.end()) {
      ASSIGN_OR_RETURN(run.reference_floor, AggregateReferenceFloor(run));
    }
  }
  v1::GetResultsResponse results = ResultsOf(run);
  results.set_state(state);
  RETURN_IF_ERROR(state_->storage().SaveResults(results));
  std::lock_guard<std::mutex> lock(state_->mu);
  run.results = std::make_shared<const v1::GetResultsResponse>(std::move(results));
  state_->Touch(run);
  return OkStatus();
}

v1::GetResultsResponse JobPlanner::ResultsOf(const JobRun& run) const {
  v1::GetResultsResponse response;
  response.set_job_id(run.job.job_id());
  if (run.driver == nullptr) return response;
  for (v1::ConfigResult& row : run.driver->Results(run.evaluated)) *response.add_results() = std::move(row);
  auto own = run.evaluated.find("");
  if (!run.spec.reference.empty()) {
    response.set_reference_model_fingerprint(run.baseline_key.model_fingerprint());
    // The model as it is, against the reference: the comparison's answer, on top (a search's level 0
    // is that row already).
    const bool listed = std::any_of(response.results().begin(), response.results().end(),
                                    [](const v1::ConfigResult& r) { return r.config().empty(); });
    if (own != run.evaluated.end() && !listed) {
      v1::ConfigResult row;
      *row.mutable_metrics() = own->second;
      row.set_complete(true);
      *response.add_results() = std::move(row);
      std::rotate(response.mutable_results()->rbegin(), response.mutable_results()->rbegin() + 1,
                  response.mutable_results()->rend());
    }
  }
  std::set<std::string> cached;
  for (const auto& [config, shards] : run.cached_shards) {
    if (shards == run.shards.size() + run.ppl_shards.size()) cached.insert(config);
  }
  for (v1::SearchLevel& level : run.driver->SearchLevels(run.evaluated, cached)) {
    *response.add_search_levels() = std::move(level);
  }
  if (run.spec.kind == JobKind::kQuantSearch) response.set_rank_by(run.spec.rank_by);
  if (std::optional<v1::RacingSummary> racing = run.driver->Racing(run.evaluated)) {
    *response.mutable_racing() = std::move(*racing);
  }
  if (std::optional<v1::SparsityAllocation> allocation = run.driver->Allocation(run.evaluated)) {
    allocation->set_model_fingerprint(run.base_key.model_fingerprint());
    *response.mutable_allocation() = std::move(*allocation);
  }
  std::vector<const v1::Metrics*> configs;
  for (const v1::ConfigResult& row : response.results()) {
    if (!row.config().empty()) configs.push_back(&row.metrics());
  }
  if (std::optional<std::string> warning = SaturationWarning(configs, run.spec.completion_len)) {
    response.add_warnings(*warning);
  }
  for (std::string& warning : run.driver->Warnings(run.evaluated)) response.add_warnings(std::move(warning));
  // After the warning, which speaks of the rows a reader sees by default: a search's nodes outside
  // its beams (no rank) come back only for GetResultsRequest.all_nodes (ClientApi::Results).
  for (v1::ConfigResult& row : run.driver->OtherNodes(run.evaluated)) *response.add_results() = std::move(row);
  // The noise floor is the baseline's model against its own baseline: with a reference of other
  // weights, the reference's; else config "" (when the spec asked for it, or a reference with the
  // model's weights made it run).
  const v1::Metrics* floor = nullptr;
  if (HasSeparateReference(run)) {
    if (run.reference_floor) floor = &*run.reference_floor;
  } else if (own != run.evaluated.end() && run.spec.noise_floor) {
    floor = &own->second;
  }
  if (floor != nullptr) {
    *response.mutable_noise_floor() = *floor;
    const double completion = static_cast<double>(run.spec.completion_len);
    if (run.base_key.dtype() == v1::DTYPE_F32 && floor->fdt75() < kSuspectNoiseFloorShare * completion) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%.2f of %.0f", floor->fdt75(), completion);
      response.add_warnings(
          std::string(
              "suspect noise floor: in float32 the uncompressed model keeps its own baseline only for "
              "fdt75 ") +
          buf +
          " tokens, where a healthy worker reproduces all of it; some results may come from a broken or "
          "forged "
          "worker (stored results name their worker; `dtmctl purge-worker ID` deletes one worker's)");
    }
  }
  return response;
}

void JobPlanner::Publish(JobRun& run) {
  auto results = std::make_shared<const v1::GetResultsResponse>(ResultsOf(run));
  v1::JobProgress search;
  run.driver->FillProgress(run.evaluated, &search);
  std::lock_guard<std::mutex> lock(state_->mu);
  run.results = std::move(results);
  v1::JobProgress& progress = *run.job.mutable_progress();
  if (search.has_search_level()) progress.set_search_level(search.search_level());
  if (search.has_best_fdt75()) progress.set_best_fdt75(search.best_fdt75());
  if (search.has_best_config()) progress.set_best_config(search.best_config());
  state_->Touch(run);
}

Status JobPlanner::Finish(JobRun& run) {
  v1::GetResultsResponse results = ResultsOf(run);
  results.set_state(v1::JOB_STATE_SUCCEEDED);
  RETURN_IF_ERROR(state_->storage().SaveResults(results));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    run.results = std::make_shared<const v1::GetResultsResponse>(std::move(results));
    state_->EndJob(run, v1::JOB_STATE_SUCCEEDED, OkStatus());
  }
  (void)state_->Persist(run.job.job_id(), /*force=*/true);
  return OkStatus();
}

}  // namespace dtm
