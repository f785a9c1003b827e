#include "coordinator/sparsify_planner.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <utility>

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "coordinator/store_keys.h"

namespace dtm {
namespace {

using google::protobuf::util::TimeUtil;

std::string RoundStageText(int round, int rounds, SparsifyStage stage) {
  return "round " + std::to_string(round) + " of " + std::to_string(rounds) + ": " + SparsifyStageName(stage);
}

// From a stage job's creation to its end: the stage's wall time as the run saw it, waits for
// workers and model loads included.
double StageSeconds(const v1::Job& job) {
  if (!job.has_end_time() || !job.has_create_time()) return 0;
  return static_cast<double>(TimeUtil::DurationToMilliseconds(job.end_time() - job.create_time())) / 1000.0;
}

// The fields every stage job of the run shares with it.
void EmitCommon(YAML::Emitter& out, const JobSpec& spec, const std::string& name, const std::string& kind,
                const std::string& model) {
  out << YAML::Key << "name" << YAML::Value << name;
  out << YAML::Key << "kind" << YAML::Value << kind;
  out << YAML::Key << "model" << YAML::Value << model;
  if (!spec.dtype.empty()) out << YAML::Key << "dtype" << YAML::Value << spec.dtype;
  if (spec.priority != 0) out << YAML::Key << "priority" << YAML::Value << spec.priority;
}

void EmitProbeFields(YAML::Emitter& out, const JobSpec& spec) {
  out << YAML::Key << "probes" << YAML::Value << spec.probes;
  if (spec.num_probes > 0) out << YAML::Key << "num_probes" << YAML::Value << spec.num_probes;
  out << YAML::Key << "prefix" << YAML::Value << spec.prefix_len;
  out << YAML::Key << "completion" << YAML::Value << spec.completion_len;
  out << YAML::Key << "shard_size" << YAML::Value << spec.shard_size;
  out << YAML::Key << "noise_floor" << YAML::Value << false;
}

void EmitTrain(YAML::Emitter& out, const TrainSpec& t, const SparsifyAction& action) {
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "data" << YAML::Value << t.data;
  out << YAML::Key << "format" << YAML::Value << t.data_format;
  out << YAML::Key << "output" << YAML::Value << action.output;
  if (!action.prune_config.empty()) out << YAML::Key << "prune" << YAML::Value << action.prune_config;
  out << YAML::Key << "remask" << YAML::Value << action.remask;
  out << YAML::Key << "phases" << YAML::Value << t.phases;
  out << YAML::Key << "batch" << YAML::Value << t.batch;
  out << YAML::Key << "micro_batch" << YAML::Value << t.micro_batch;
  out << YAML::Key << "seq_len" << YAML::Value << t.seq_len;
  out << YAML::Key << "max_sequences" << YAML::Value << t.max_sequences;
  out << YAML::Key << "lr" << YAML::Value << YAML::Precision(17) << t.learning_rate;
  out << YAML::Key << "warmup" << YAML::Value << t.warmup;
  out << YAML::Key << "schedule" << YAML::Value << t.schedule;
  out << YAML::Key << "weight_decay" << YAML::Value << YAML::Precision(17) << t.weight_decay;
  out << YAML::Key << "clip" << YAML::Value << YAML::Precision(17) << t.clip;
  out << YAML::Key << "seed" << YAML::Value << t.seed;
  out << YAML::Key << "workers" << YAML::Value << t.workers;
  out << YAML::Key << "checkpoint_every" << YAML::Value << t.checkpoint_every;
  out << YAML::Key << "shard_optimizer" << YAML::Value << t.shard_optimizer;
  out << YAML::Key << "activation_checkpointing" << YAML::Value << t.activation_checkpointing;
  out << YAML::Key << "timeout_seconds" << YAML::Value << t.timeout_seconds;
  out << YAML::EndMap;
}

// The round-model row of an evaluate stage's results: config "", the model as it is.
const v1::ConfigResult* ModelAsItIs(const v1::GetResultsResponse& results) {
  for (const v1::ConfigResult& row : results.results()) {
    if (row.config().empty()) return &row;
  }
  return nullptr;
}

}  // namespace

StatusOr<SparsifyRunPlan> SparsifyRunPlanOf(const JobSpec& spec, const ModelGeometry& geometry,
                                            const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<std::string> names,
                   SelectComponents(spec.components, geometry.num_layers, "sparsify.components"));
  std::map<std::string, double> current;
  if (!spec.previous.empty()) {
    StatusOr<std::map<std::string, double>> previous = ReadPreviousRound(spec.previous, geometry, limits);
    if (!previous.ok()) {
      // The round's reader names its own field; a run's is sparsify.previous.
      std::string why = previous.status().message();
      const std::string round_field = "job spec: sparsify-round.previous: ";
      if (why.rfind(round_field, 0) == 0) why = why.substr(round_field.size());
      return InvalidArgumentError("job spec: sparsify.previous: " + why);
    }
    current = *std::move(previous);
  }
  SparsifyRunPlan plan;
  plan.model = spec.model;
  plan.output = spec.sparsify_output;
  plan.schedule = spec.schedule;
  plan.uniform = spec.uniform_allocation;
  plan.probe_multiples = spec.probe_multiples;
  plan.completion_len = spec.completion_len;
  plan.num_layers = geometry.num_layers;
  ASSIGN_OR_RETURN(plan.components, SizedComponents(names, geometry, current, "a sparsify run"));
  Status checked = CheckSparsifyRunPlan(plan);
  if (!checked.ok()) return InvalidArgumentError("job spec: " + checked.message());
  return plan;
}

std::string SparsifyStageRequestId(const std::string& run_job_id, int round, SparsifyStage stage) {
  return run_job_id + "/round-" + std::to_string(round) + "/" + SparsifyStageName(stage);
}

std::string SparsifyRunOfStage(const std::string& client_request_id) {
  const size_t at = client_request_id.find("/round-");
  if (at == std::string::npos || client_request_id.rfind("j-", 0) != 0) return "";
  return client_request_id.substr(0, at);
}

Status SparsifyPlanner::Start(JobRun& run, bool* resolved) {
  *resolved = false;
  ModelGeometry geometry;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    auto found = state_->workers.FindModel(run.spec.model, DtypeToProto(run.spec.dtype));
    if (found.ok()) {
      geometry = found->first.geometry;
      v1::JobSummary& s = *run.job.mutable_summary();
      s.set_model_fingerprint(found->first.fingerprint);
      s.set_num_layers(static_cast<uint32_t>(geometry.num_layers));
      s.set_dtype(found->second);
    }
  }
  if (geometry.component_params.empty()) {
    std::optional<ModelGeometry> config = files_->ModelConfigGeometry(run.spec.model);
    if (config && (geometry.num_layers == 0 || config->num_layers == geometry.num_layers)) geometry = *std::move(config);
  }
  if (geometry.component_params.empty()) {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->WaitForModel(run, "model", run.spec.model);
  }
  ASSIGN_OR_RETURN(SparsifyRunPlan plan, SparsifyRunPlanOf(run.spec, geometry, files_->limits()));
  // The stage jobs' output folders are made under this one (their parent must exist).
  std::error_code ec;
  std::filesystem::create_directories(plan.output, ec);
  if (ec) return FailedPreconditionError("sparsify.output: cannot create " + plan.output + ": " + ec.message());
  *resolved = true;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    run.sparsify_plan = std::make_shared<const SparsifyRunPlan>(std::move(plan));
    run.phase = JobPhase::kRounds;
    if (run.job.state() == v1::JOB_STATE_PENDING) {
      run.job.set_state(v1::JOB_STATE_RUNNING);
      *run.job.mutable_start_time() = WallClockNow();
    }
    run.job.mutable_progress()->set_sparsify_rounds(static_cast<uint32_t>(run.sparsify_plan->schedule.size()));
    spdlog::info("job {}: sparsifying {} in {} rounds ({}) into {}", run.job.job_id(), run.spec.model,
                 run.sparsify_plan->schedule.size(), run.spec.uniform_allocation ? "uniform" : "balanced",
                 run.sparsify_plan->output);
    state_->Touch(run);
  }
  (void)state_->Persist(run.job.job_id(), /*force=*/true);
  return OkStatus();
}

std::string SparsifyPlanner::StageSpec(const JobRun& run, const SparsifyAction& action) const {
  const JobSpec& spec = run.spec;
  // Within a job name's 256 bytes, cut on a UTF-8 character boundary.
  std::string base = spec.name.empty() ? run.job.job_id() : spec.name;
  if (base.size() > 200) {
    size_t cut = 200;
    while (cut > 0 && (static_cast<unsigned char>(base[cut]) & 0xC0) == 0x80) --cut;
    base.resize(cut);
  }
  const std::string name = base + " round " + std::to_string(action.round) + " " + SparsifyStageName(action.stage);
  YAML::Emitter out;
  out << YAML::BeginMap;
  switch (action.stage) {
    case SparsifyStage::kProbe:
      // Against the round's own model: each probe's FDT75 starts at the completion length.
      EmitCommon(out, spec, name, "evaluate", action.model);
      EmitProbeFields(out, spec);
      out << YAML::Key << "evaluate" << YAML::Value << YAML::BeginMap << YAML::Key << "configs" << YAML::Value
          << YAML::Flow << action.configs << YAML::EndMap;
      break;
    case SparsifyStage::kTrain:
      EmitCommon(out, spec, name, "train", action.model);
      EmitTrain(out, spec.train, action);
      break;
    case SparsifyStage::kEvaluate:
      // Against the starting model, so that the rounds are comparable.
      EmitCommon(out, spec, name, "evaluate", action.model);
      EmitProbeFields(out, spec);
      out << YAML::Key << "reference" << YAML::Value << run.sparsify_plan->model;
      if (!spec.ppl_text.empty()) {
        out << YAML::Key << "ppl" << YAML::Value << YAML::BeginMap;
        out << YAML::Key << "text" << YAML::Value << spec.ppl_text;
        out << YAML::Key << "window" << YAML::Value << spec.ppl_window;
        out << YAML::Key << "join" << YAML::Value << spec.ppl_join;
        out << YAML::Key << "shard_size" << YAML::Value << spec.ppl_shard_size;
        out << YAML::EndMap;
      }
      out << YAML::Key << "evaluate" << YAML::Value << YAML::BeginMap << YAML::Key << "configs" << YAML::Value
          << YAML::Flow << YAML::BeginSeq << YAML::EndSeq << YAML::EndMap;
      break;
    case SparsifyStage::kDone:
      break;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Status SparsifyPlanner::Advance(JobRun& run) {
  const std::string job_id = run.job.job_id();
  std::shared_ptr<const SparsifyRunPlan> plan;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase != JobPhase::kRounds) return OkStatus();
    plan = run.sparsify_plan;
  }
  const int rounds = static_cast<int>(plan->schedule.size());
  SparsifyRunRecord record;
  v1::GetResultsResponse results;
  results.set_job_id(job_id);
  results.set_state(v1::JOB_STATE_RUNNING);
  std::pair<int, SparsifyStage> last_filled{0, SparsifyStage::kDone};
  for (;;) {
    ASSIGN_OR_RETURN(SparsifyAction action, NextSparsifyAction(*plan, record));
    if (action.stage == SparsifyStage::kDone) break;
    if (std::make_pair(action.round, action.stage) == last_filled) {
      return InternalError(RoundStageText(action.round, rounds, action.stage) +
                           ": its job succeeded without the results the run needs from it");
    }
    if (static_cast<int>(record.rounds.size()) < action.round) record.rounds.resize(action.round);
    while (results.rounds_size() < action.round) {
      v1::SparsifyRoundResult& round = *results.add_rounds();
      round.set_round(static_cast<uint32_t>(results.rounds_size()));
      round.set_input_model(RoundInputModel(*plan, results.rounds_size()));
    }
    v1::SparsifyRoundResult& round = *results.mutable_rounds(action.round - 1);
    if (action.allocation) *round.mutable_allocation() = *action.allocation;
    const std::string request_id = SparsifyStageRequestId(job_id, action.round, action.stage);
    const std::string stage_id = JobIdFor(request_id);
    switch (action.stage) {
      case SparsifyStage::kProbe: round.set_probe_job_id(stage_id); break;
      case SparsifyStage::kTrain: round.set_train_job_id(stage_id); break;
      case SparsifyStage::kEvaluate: round.set_evaluate_job_id(stage_id); break;
      case SparsifyStage::kDone: break;
    }

    // A stage job that ended is read once and kept; one under way is read at every tick.
    auto done = run.sparsify_stages.find(stage_id);
    if (done == run.sparsify_stages.end()) {
      ASSIGN_OR_RETURN(std::optional<v1::Job> stage, state_->storage().LoadJob(stage_id));
      if (!stage) {
        StatusOr<v1::Job> submitted = api_.Submit(StageSpec(run, action), request_id);
        if (!submitted.ok()) {
          if (submitted.status().code() == StatusCode::kUnavailable) return submitted.status();
          return Status(submitted.status().code(), RoundStageText(action.round, rounds, action.stage) +
                                                       ": its job was refused: " + submitted.status().message());
        }
        spdlog::info("job {}: {}: job {}", job_id, RoundStageText(action.round, rounds, action.stage), stage_id);
        stage = *std::move(submitted);
      }
      if (stage->state() == v1::JOB_STATE_FAILED || stage->state() == v1::JOB_STATE_CANCELLED) {
        return FailedPreconditionError(RoundStageText(action.round, rounds, action.stage) + ": job " + stage_id +
                                       " " + JobStateLabel(stage->state()) + ": " + stage->error().message());
      }
      if (stage->state() != v1::JOB_STATE_SUCCEEDED) {
        // Under way: the run's progress is the stage's.
        std::lock_guard<std::mutex> lock(state_->mu);
        if (run.phase != JobPhase::kRounds) return OkStatus();
        if (const JobRun* live = state_->FindJob(stage_id)) stage = live->job;
        v1::JobProgress& progress = *run.job.mutable_progress();
        const std::string message =
            RoundStageText(action.round, rounds, action.stage) + " (job " + stage_id + "): " + stage->progress().message();
        const bool changed = progress.sparsify_round() != static_cast<uint32_t>(action.round) ||
                             progress.sparsify_stage() != SparsifyStageName(action.stage) ||
                             progress.message() != message || progress.train_step() != stage->progress().train_step();
        progress.set_sparsify_round(static_cast<uint32_t>(action.round));
        progress.set_sparsify_rounds(static_cast<uint32_t>(rounds));
        progress.set_sparsify_stage(SparsifyStageName(action.stage));
        progress.set_stage_job_id(stage_id);
        progress.set_message(message);
        if (stage->progress().has_train_step()) {
          progress.set_train_step(stage->progress().train_step());
          progress.set_train_steps(stage->progress().train_steps());
          progress.set_train_loss(stage->progress().train_loss());
        } else {  // not the last round's figures
          progress.clear_train_step();
          progress.clear_train_steps();
          progress.clear_train_loss();
        }
        run.results = std::make_shared<const v1::GetResultsResponse>(std::move(results));
        if (changed) state_->Touch(run);
        return OkStatus();
      }
      ASSIGN_OR_RETURN(v1::GetResultsResponse stage_results, state_->storage().LoadResults(stage_id));
      done = run.sparsify_stages.emplace(stage_id, std::make_pair(*std::move(stage), std::move(stage_results))).first;
    }
    const v1::Job& stage = done->second.first;
    const v1::GetResultsResponse& stage_results = done->second.second;
    SparsifyRoundRecord& stored = record.rounds[action.round - 1];
    switch (action.stage) {
      case SparsifyStage::kProbe:
        for (const v1::ConfigResult& row : stage_results.results()) {
          if (row.complete() && !row.config().empty()) stored.probes[row.config()] = row.metrics();
        }
        round.set_probe_seconds(StageSeconds(stage));
        break;
      case SparsifyStage::kTrain:
        stored.trained_fingerprint = stage_results.training().output_fingerprint();
        *round.mutable_training() = stage_results.training();
        round.set_train_seconds(StageSeconds(stage));
        break;
      case SparsifyStage::kEvaluate: {
        const v1::ConfigResult* row = ModelAsItIs(stage_results);
        if (row == nullptr || !row->complete()) break;  // caught as a stage without its results
        stored.evaluated = true;
        *round.mutable_metrics() = row->metrics();
        round.set_evaluate_seconds(StageSeconds(stage));
        break;
      }
      case SparsifyStage::kDone:
        break;
    }
    last_filled = {action.round, action.stage};
  }

  results.set_state(v1::JOB_STATE_SUCCEEDED);
  RETURN_IF_ERROR(state_->storage().SaveResults(results));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (run.phase == JobPhase::kEnded) return OkStatus();
    v1::JobProgress& progress = *run.job.mutable_progress();
    progress.set_sparsify_round(static_cast<uint32_t>(rounds));
    progress.set_sparsify_stage(SparsifyStageName(SparsifyStage::kDone));
    progress.clear_stage_job_id();
    spdlog::info("job {}: {} rounds done; the final model is {}", job_id, rounds, RoundModelDir(*plan, rounds));
    run.results = std::make_shared<const v1::GetResultsResponse>(std::move(results));
    state_->EndJob(run, v1::JOB_STATE_SUCCEEDED, OkStatus());
  }
  (void)state_->Persist(job_id, /*force=*/true);
  return OkStatus();
}

void SparsifyPlanner::Release(JobRun& run) {
  if (run.sparsify_plan == nullptr) return;
  std::string stage_id;
  std::string why;
  std::shared_ptr<const v1::GetResultsResponse> so_far;
  v1::JobState state;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state = run.job.state();
    if (state != v1::JOB_STATE_SUCCEEDED) stage_id = run.job.progress().stage_job_id();
    why = "its sparsify run, job " + run.job.job_id() + ", " + JobStateLabel(state);
    so_far = run.results;
  }
  // The rounds a failed or cancelled run finished stay readable (`dtmctl results`), after a restart too.
  if (so_far != nullptr && state != v1::JOB_STATE_SUCCEEDED) {
    v1::GetResultsResponse results = *so_far;
    results.set_state(state);
    if (state_->storage().SaveResults(results).code() == StatusCode::kUnavailable) return;  // next tick
  }
  if (!stage_id.empty()) {
    StatusOr<v1::Job> cancelled = api_.Cancel(stage_id, why);
    // A stage job that ended meanwhile is FAILED_PRECONDITION: nothing to stop.
    if (cancelled.status().code() == StatusCode::kUnavailable) return;  // the store is away: next tick
  }
  run.sparsify_plan.reset();
  run.sparsify_stages.clear();
}

}  // namespace dtm
