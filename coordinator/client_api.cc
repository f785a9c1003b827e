#include "coordinator/client_api.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <tuple>
#include <vector>

#include "common/user_text.h"
#include "coordinator/job_planner.h"
#include "coordinator/sparsify_planner.h"

namespace dtm {
namespace {

constexpr size_t kMaxRequestIdBytes = 128;
constexpr size_t kMaxWorkerIdBytes = 256;
constexpr uint32_t kDefaultListPage = 100;
constexpr uint32_t kMaxListPage = 1000;

// Newest first: by create time, then by job id, both descending.
using ListKey = std::tuple<int64_t, int32_t, std::string>;

ListKey KeyOf(const v1::Job& job) {
  return {job.create_time().seconds(), job.create_time().nanos(), job.job_id()};
}

std::string TokenOf(const ListKey& key) {
  return std::to_string(std::get<0>(key)) + ":" + std::to_string(std::get<1>(key)) + ":" + std::get<2>(key);
}

StatusOr<ListKey> ParseToken(const std::string& token) {
  const size_t first = token.find(':');
  const size_t second = first == std::string::npos ? first : token.find(':', first + 1);
  long long seconds = 0;
  int nanos = 0;
  if (second == std::string::npos ||
      std::sscanf(token.substr(0, second).c_str(), "%lld:%d", &seconds, &nanos) != 2) {
    return InvalidArgumentError("page_token " + Quoted(token) + " is not one this coordinator made");
  }
  return ListKey{seconds, nanos, token.substr(second + 1)};
}

StatusOr<size_t> ParseOffset(const std::string& token) {
  if (token.empty()) return size_t{0};
  size_t offset = 0;
  for (char c : token) {
    if (c < '0' || c > '9' || offset > (1u << 30)) {
      return InvalidArgumentError("page_token " + Quoted(token) + " is not one this coordinator made");
    }
    offset = offset * 10 + static_cast<size_t>(c - '0');
  }
  return offset;
}

}  // namespace

Status ClientApi::Validate(JobSpec* spec) {
  RETURN_IF_ERROR(files_->ResolvePaths(spec));
  // The data is read by the gang's workers, which say what is wrong with it; the output must be
  // free now, so that no job is accepted that can only fail after its gang has formed.
  if (spec->kind == JobKind::kTrain) return files_->CheckOutputIsFree(*spec);
  if (spec->kind == JobKind::kSparsify) RETURN_IF_ERROR(files_->CheckOutputIsFree(*spec));
  ASSIGN_OR_RETURN(ProbeSet probes, files_->LoadProbes(*spec));
  // Read now so that a bad calibration file is refused at submit, not when the job starts.
  if (SpecUsesGptq(*spec)) RETURN_IF_ERROR(files_->LoadCalibration(*spec).status());
  const size_t shards = (probes.probes.size() + spec->shard_size - 1) / spec->shard_size;
  const int64_t max_tasks = state_->options().max_stage_tasks;
  if (static_cast<int64_t>(shards) > max_tasks) {
    return InvalidArgumentError("job spec: the baseline alone would plan " + std::to_string(shards) +
                                " tasks; this coordinator plans at most " + std::to_string(max_tasks) +
                                " per stage (--max-stage-tasks): use a larger shard_size");
  }
  // The noise floor, and against a reference its noise floor too.
  const size_t floors = spec->reference.empty() ? 1 : 2;
  if (spec->kind == JobKind::kEvaluate &&
      static_cast<int64_t>((spec->configs.size() + floors) * shards) > max_tasks) {
    return InvalidArgumentError("job spec: evaluate.configs: " + std::to_string(spec->configs.size()) +
                                " configs and the noise floor on " + std::to_string(shards) +
                                " shards make " + std::to_string((spec->configs.size() + floors) * shards) +
                                " tasks; this coordinator plans at most " + std::to_string(max_tasks) +
                                " per stage (--max-stage-tasks)");
  }
  // The components can be checked now when the model's geometry is known: from a worker serving
  // it, or from its config.json when this coordinator may read it.
  std::optional<ModelGeometry> geometry;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto found = state_->workers.FindModel(spec->model, DtypeToProto(spec->dtype));
    if (found.ok()) geometry = found->first.geometry;
  }
  std::optional<ModelGeometry> config = files_->ModelConfigGeometry(spec->model);
  if (!geometry) {
    geometry = std::move(config);
  } else if (geometry->component_params.empty() && config && config->num_layers == geometry->num_layers) {
    geometry->component_params = std::move(config->component_params);
  }
  if (!geometry) return OkStatus();  // checked when a worker serving the model registers
  // A round needs the component sizes; without them it is checked once a worker reports them.
  const bool sparsifies = spec->kind == JobKind::kSparsifyRound || spec->kind == JobKind::kSparsify;
  if (sparsifies && geometry->component_params.empty()) return OkStatus();
  // A run's rounds are jobs of their own, each checked when the run submits it.
  if (spec->kind == JobKind::kSparsify) {
    ASSIGN_OR_RETURN(SparsifyRunPlan plan, SparsifyRunPlanOf(*spec, *geometry, files_->limits()));
    const size_t probes_per_round = plan.uniform ? 0 : plan.components.size() * plan.probe_multiples.size();
    if (static_cast<int64_t>(probes_per_round * shards) > max_tasks) {
      return InvalidArgumentError("job spec: a round's probes (" + std::to_string(probes_per_round) + " configs on " +
                                  std::to_string(shards) + " shards) make " + std::to_string(probes_per_round * shards) +
                                  " tasks; this coordinator plans at most " + std::to_string(max_tasks) +
                                  " per stage (--max-stage-tasks): use a larger shard_size");
    }
    return OkStatus();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<JobDriver> driver, CreateJobDriver(*spec, *geometry, files_->limits()));
  return CheckStageSize(*driver, shards, max_tasks, !spec->reference.empty());
}

StatusOr<v1::Job> ClientApi::Submit(const std::string& spec_yaml, const std::string& client_request_id) {
  const uint64_t max_bytes = state_->options().max_spec_bytes;
  if (spec_yaml.size() > max_bytes) {
    return InvalidArgumentError("the job spec is " + std::to_string(spec_yaml.size()) +
                                " bytes; this coordinator takes at most " + std::to_string(max_bytes) +
                                " (--max-spec-bytes)");
  }
  if (size_t bad = InvalidUtf8Offset(spec_yaml); bad != std::string::npos) {
    return InvalidArgumentError("the job spec is not valid UTF-8 (byte " + std::to_string(bad) +
                                "); YAML specs are UTF-8 text");
  }
  if (client_request_id.empty())
    return InvalidArgumentError("client_request_id is required (a fresh UUID per job)");
  if (client_request_id.size() > kMaxRequestIdBytes) {
    return InvalidArgumentError("client_request_id is longer than " + std::to_string(kMaxRequestIdBytes) +
                                " bytes");
  }
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(spec_yaml));
  spec.model = NormalModelPath(spec.model);
  if (!spec.reference.empty()) spec.reference = NormalModelPath(spec.reference);
  const std::string job_id = JobIdFor(client_request_id);
  {
    // A retry whose first call is still being validated (the client gave up waiting) waits for
    // that call's outcome instead of failing: it then returns the job, or validates again.
    std::unique_lock<std::mutex> lock(state_->mu);
    const auto give_up = std::chrono::steady_clock::now() + kSubmitRetryWait;
    while (true) {
      if (JobRun* run = state_->FindJob(job_id)) {
        if (run->job.spec_yaml() != spec_yaml) {
          return InvalidArgumentError("client_request_id " + Quoted(client_request_id) +
                                      " was used for another spec (job " + job_id +
                                      "); use a fresh id per job");
        }
        return run->job;
      }
      if (submitting_.insert(job_id).second) break;
      if (submitted_.wait_until(lock, give_up) == std::cv_status::timeout) {
        return UnavailableError("a submission with client_request_id " + Quoted(client_request_id) +
                                " is still under way; retry to get its job");
      }
    }
  }
  struct Done {
    ClientApi* api;
    std::string id;
    ~Done() {
      {
        std::lock_guard<std::mutex> lock(api->state_->mu);
        api->submitting_.erase(id);
      }
      api->submitted_.notify_all();
    }
  } done{this, job_id};

  RETURN_IF_ERROR(Validate(&spec));

  auto run = std::make_unique<JobRun>();
  v1::Job& job = run->job;
  job.set_job_id(job_id);
  job.set_client_request_id(client_request_id);
  job.set_state(v1::JOB_STATE_PENDING);
  job.set_spec_yaml(spec_yaml);
  *job.mutable_create_time() = WallClockNow();
  v1::JobSummary& summary = *job.mutable_summary();
  summary.set_kind(ToProto(spec.kind));
  summary.set_model_path(spec.model);
  summary.set_reference_model_path(spec.reference);
  summary.set_prefix_len(static_cast<uint32_t>(spec.prefix_len));
  summary.set_completion_len(static_cast<uint32_t>(spec.completion_len));
  summary.set_shard_size(static_cast<uint32_t>(spec.shard_size));
  summary.set_name(spec.name);
  job.mutable_progress()->set_job_id(job_id);
  job.mutable_progress()->set_state(v1::JOB_STATE_PENDING);
  run->spec = std::move(spec);
  run->started = state_->clock().Now();

  // The record is the job: created once, by whichever call stores it first.
  ASSIGN_OR_RETURN(bool created, state_->storage().CreateJob(job));
  if (!created) {
    // Stored by an earlier call whose reply was lost before this coordinator knew the job (it
    // restarted in between): that record is the job.
    ASSIGN_OR_RETURN(std::optional<v1::Job> stored, state_->storage().LoadJob(job_id));
    if (!stored) return UnavailableError("job " + job_id + " was created and removed meanwhile; retry");
    if (stored->spec_yaml() != spec_yaml) {
      return InvalidArgumentError("client_request_id " + Quoted(client_request_id) +
                                  " was used for another spec (job " + job_id + "); use a fresh id per job");
    }
    job = *stored;
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  if (JobRun* existing = state_->FindJob(job_id)) return existing->job;
  if (state_->metrics() != nullptr && created) state_->metrics()->jobs_submitted.Increment();
  spdlog::info("job {}: submitted ({} on {}, {})", job_id, JobKindName(run->spec.kind), run->spec.model,
               run->spec.probes);
  JobRun& ref = *run;
  state_->jobs[job_id] = std::move(run);
  if (IsFinal(ref.job.state())) ref.phase = JobPhase::kEnded;
  RestoreResolution(ref);
  state_->Touch(ref);
  ref.dirty = false;  // the record was just written
  state_->Wake();
  return ref.job;
}

StatusOr<v1::Job> ClientApi::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(state_->mu);
  JobRun* run = state_->FindJob(job_id);
  if (run == nullptr) return NotFoundError("no job " + Quoted(job_id));
  return run->job;
}

StatusOr<v1::ListJobsResponse> ClientApi::ListJobs(const v1::ListJobsRequest& request) {
  std::set<v1::JobState> states;
  for (int s : request.states()) states.insert(static_cast<v1::JobState>(s));
  const uint32_t page =
      request.page_size() == 0 ? kDefaultListPage : std::min(request.page_size(), kMaxListPage);
  std::optional<ListKey> after;
  if (!request.page_token().empty()) {
    ASSIGN_OR_RETURN(ListKey key, ParseToken(request.page_token()));
    after = std::move(key);
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<std::pair<ListKey, const v1::Job*>> matching;
  for (const auto& [id, run] : state_->jobs) {
    if (!states.empty() && !states.count(run->job.state())) continue;
    ListKey key = KeyOf(run->job);
    if (after && !(key < *after)) continue;
    matching.emplace_back(std::move(key), &run->job);
  }
  std::sort(matching.begin(), matching.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  v1::ListJobsResponse response;
  size_t bytes = 0;
  for (size_t i = 0; i < matching.size(); ++i) {
    v1::Job job = *matching[i].second;
    job.clear_spec_yaml();
    bytes += job.ByteSizeLong() + 8;
    if (response.jobs_size() == static_cast<int>(page) ||
        (response.jobs_size() > 0 && bytes > kMaxReplyPageBytes)) {
      response.set_next_page_token(TokenOf(matching[i - 1].first));
      break;
    }
    *response.add_jobs() = std::move(job);
  }
  return response;
}

StatusOr<v1::Job> ClientApi::Cancel(const std::string& job_id, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    JobRun* run = state_->FindJob(job_id);
    if (run == nullptr) return NotFoundError("no job " + Quoted(job_id));
    if (IsFinal(run->job.state()) && run->job.state() != v1::JOB_STATE_CANCELLED) {
      return FailedPreconditionError("job '" + job_id +
                                     "' already ended: " + JobStateLabel(run->job.state()));
    }
    if (!IsFinal(run->job.state())) {
      state_->EndJob(
          *run, v1::JOB_STATE_CANCELLED,
          CancelledError(reason.empty() ? "cancelled by the user" : Bounded(reason, 500)));
    }
  }
  // Answered once stored, so that a coordinator that restarts does not resume a job it said it cancelled.
  if (Status stored = state_->Persist(job_id, /*force=*/true); !stored.ok()) {
    return UnavailableError("job " + job_id + " is cancelled, but the store cannot record it yet (" +
                            stored.message() + "); it is recorded when the store is back: retry to confirm");
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->FindJob(job_id)->job;
}

StatusOr<std::pair<v1::JobProgress, uint64_t>> ClientApi::WaitProgress(const std::string& job_id,
                                                                       uint64_t seen_version,
                                                                       std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  JobRun* run = state_->FindJob(job_id);
  if (run == nullptr) return NotFoundError("no job " + Quoted(job_id));
  state_->changed.wait_for(lock, timeout, [&] { return run->version > seen_version || state_->stopping; });
  return std::make_pair(run->job.progress(), run->version);
}

StatusOr<v1::GetResultsResponse> ClientApi::Results(const v1::GetResultsRequest& request) {
  v1::JobState job_state;
  std::shared_ptr<const v1::GetResultsResponse> snapshot;
  v1::CacheKey base_key;
  std::vector<std::pair<uint32_t, uint32_t>> shards;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    JobRun* run = state_->FindJob(request.job_id());
    if (run == nullptr) return NotFoundError("no job " + Quoted(request.job_id()));
    job_state = run->job.state();
    snapshot = run->results;
    base_key = run->base_key;
    shards = run->shards;
  }
  ASSIGN_OR_RETURN(size_t offset, ParseOffset(request.page_token()));
  v1::GetResultsResponse all;
  if (job_state == v1::JOB_STATE_SUCCEEDED) {
    ASSIGN_OR_RETURN(all, state_->storage().LoadResults(request.job_id()));
  } else if (IsFinal(job_state) && snapshot == nullptr) {
    // A failed or cancelled job's finished results, stored when it ended (JobPlanner::
    // SaveUnfinishedResults); none for a job that ended before it had any, or under an older dtm.
    StatusOr<v1::GetResultsResponse> stored = state_->storage().LoadResults(request.job_id());
    if (stored.ok()) {
      all = std::move(stored).value();
    } else if (stored.status().code() != StatusCode::kDataLoss) {
      return stored.status();
    }
  } else if (snapshot != nullptr) {
    all = *snapshot;
  }
  all.set_job_id(request.job_id());
  all.set_state(job_state);

  const std::set<std::string> wanted(request.configs().begin(), request.configs().end());
  std::vector<int> rows;
  for (int i = 0; i < all.results_size(); ++i) {
    const v1::ConfigResult& row = all.results(i);
    // A search stores its nodes outside the beams too (level, no rank): only for all_nodes.
    if (!request.all_nodes() && row.has_search_level() && !row.has_rank()) continue;
    if (wanted.empty() || wanted.count(row.config())) rows.push_back(i);
  }
  if (request.all_nodes()) {
    // Stored beams first, then the other nodes: level by level instead, each level's beam (by rank)
    // before its other nodes (in ranking order). The same request pages the same order.
    std::stable_sort(rows.begin(), rows.end(), [&](int a, int b) {
      return all.results(a).search_level() < all.results(b).search_level();
    });
  }
  v1::GetResultsResponse page = all;
  page.clear_results();
  size_t bytes = page.ByteSizeLong();
  for (size_t r = offset; r < rows.size(); ++r) {
    if (request.page_size() > 0 && page.results_size() == static_cast<int>(request.page_size())) {
      page.set_next_page_token(std::to_string(r));
      break;
    }
    v1::ConfigResult row = all.results(rows[r]);
    if (request.include_probe_results() && row.complete() && !shards.empty()) {
      ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> probes,
                       state_->storage().ReadConfigResults(base_key, shards, row.config()));
      for (v1::ProbeResult& p : probes) *row.add_probe_results() = std::move(p);
    }
    bytes += row.ByteSizeLong() + 8;
    if (page.results_size() > 0 && bytes > kMaxReplyPageBytes) {
      page.set_next_page_token(std::to_string(r));
      break;
    }
    *page.add_results() = std::move(row);
  }
  return page;
}

StatusOr<v1::PurgeWorkerResultsResponse> ClientApi::PurgeWorkerResults(const std::string& worker_id) {
  if (worker_id.empty() || worker_id.size() > kMaxWorkerIdBytes) {
    return InvalidArgumentError("worker_id must be 1 to " + std::to_string(kMaxWorkerIdBytes) + " bytes");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> deleted, state_->storage().PurgeWorker(worker_id));
  {
    // Planning takes a task the table remembers as done for cached: not any more.
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->tasks.ForgetDone(deleted);
  }
  spdlog::warn("worker {}: {} cached results it computed were purged", Bounded(worker_id), deleted.size());
  v1::PurgeWorkerResultsResponse response;
  response.set_results_deleted(static_cast<uint32_t>(deleted.size()));
  return response;
}

}  // namespace dtm
