#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/probe_file.h"
#include "common/store.h"
#include "coordinator/aggregate.h"
#include "coordinator/model_geometry.h"

namespace dtm {
namespace {

using dtm::v1::JobState;
using Steady = std::chrono::steady_clock;

// Baseline shards run before the eval shards that need them; within each, the spec's priority.
int TaskPriority(const JobSpec& spec, TaskKindForKey kind) {
  return spec.priority * 2 + (kind == TaskKindForKey::kBaseline ? 0 : 1);
}

bool IsFinal(JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

std::string StateName(JobState state) {
  switch (state) {
    case v1::JOB_STATE_PENDING: return "pending";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_FAILED: return "failed";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

StatusOr<v1::Dtype> DtypeFromName(const std::string& name) {
  if (name == "float32") return v1::DTYPE_F32;
  if (name == "float16") return v1::DTYPE_F16;
  if (name == "bfloat16") return v1::DTYPE_BF16;
  return InvalidArgumentError("dtype: unknown '" + name + "'");
}

// Job specs and workers name models by path; both are made absolute and normal so that
// "build/tiny-model/" and "/work/build/tiny-model" match.
std::string NormalPath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec) p = path;
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string ModelsField(const std::string& path, v1::Dtype dtype) {
  return path + "\t" + v1::Dtype_Name(dtype);
}

google::protobuf::Timestamp Now() {
  return google::protobuf::util::TimeUtil::GetCurrentTime();
}

// The first `count` probes of the file (all when 0), each cut to its first `prefix_len` tokens.
StatusOr<ProbeSet> LoadProbes(const JobSpec& spec) {
  StatusOr<ProbeSet> file = ReadProbeFile(spec.probes);
  if (!file.ok()) return InvalidArgumentError("probes: " + file.status().message());
  ProbeSet set = std::move(file).value();
  if (spec.num_probes > 0) {
    if (static_cast<int64_t>(set.probes.size()) < spec.num_probes) {
      return InvalidArgumentError("num_probes: " + std::to_string(spec.num_probes) + " asked for, but " + spec.probes +
                                  " holds " + std::to_string(set.probes.size()));
    }
    set.probes.resize(spec.num_probes);
  }
  for (size_t i = 0; i < set.probes.size(); ++i) {
    Probe& p = set.probes[i];
    if (static_cast<int64_t>(p.tokens.size()) < spec.prefix_len) {
      return InvalidArgumentError("prefix: " + std::to_string(spec.prefix_len) + " tokens is beyond probe '" + p.id +
                                  "' (#" + std::to_string(i + 1) + " of " + spec.probes + "), which has " +
                                  std::to_string(p.tokens.size()));
    }
    p.tokens.resize(spec.prefix_len);
  }
  return set;
}

}  // namespace

Scheduler::Scheduler(Store* store, CoordinatorMetrics* metrics, CoordinatorOptions options, const Clock* clock)
    : store_(store), metrics_(metrics), options_(std::move(options)), clock_(clock), instance_([this] {
        if (!options_.instance_id.empty()) return options_.instance_id;
        std::random_device rd;
        char buf[16];
        std::snprintf(buf, sizeof buf, "%08x", rd());
        return std::string(buf);
      }()) {}

Scheduler::~Scheduler() { Stop(); }

// ---------------------------------------------------------------------------------------------
// Start, stop, the loop

Status Scheduler::Start() {
  std::unique_lock<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(auto models, store_->HashGetAll(kModelsStoreKey));
  for (const auto& [field, value] : models) {
    size_t tab = field.rfind('\t');
    v1::Dtype dtype;
    nlohmann::json info = nlohmann::json::parse(value, nullptr, false);
    if (tab == std::string::npos || !v1::Dtype_Parse(field.substr(tab + 1), &dtype) || !info.is_object()) {
      spdlog::warn("store: ignoring malformed model registry entry '{}'", field);
      continue;
    }
    ModelInfo model{info.value("fingerprint", ""), {info.value("num_layers", 0), {}}};
    if (info.contains("component_params") && info["component_params"].is_object()) {
      for (const auto& [name, count] : info["component_params"].items()) {
        if (count.is_number_unsigned()) model.geometry.component_params[name] = count.get<uint64_t>();
      }
    }
    models_[{field.substr(0, tab), dtype}] = std::move(model);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->Keys(kJobKeyPrefix));
  int resumed = 0;
  for (const std::string& key : keys) {
    ASSIGN_OR_RETURN(std::optional<std::string> bytes, store_->Get(key));
    auto run = std::make_unique<JobRun>();
    if (!bytes || !run->job.ParseFromString(*bytes)) {
      spdlog::error("store: job record {} is unreadable; left as it is", key);
      continue;
    }
    const std::string id = run->job.job_id();
    if (IsFinal(run->job.state())) {
      run->phase = Phase::kEnded;
      RestoreKeys(*run);
      jobs_[id] = std::move(run);
      continue;
    }
    StatusOr<JobSpec> spec = ParseJobSpec(run->job.spec_yaml());
    run->started = clock_->Now();
    if (!spec.ok()) {
      jobs_[id] = std::move(run);
      EndJob(*jobs_[id], v1::JOB_STATE_FAILED, spec.status());
      continue;
    }
    run->spec = std::move(spec).value();
    run->spec.model = NormalPath(run->spec.model);
    // The replay below plans every task again and counts each once more (the finished ones as
    // cached), so the counts of the earlier run must not stay underneath. Failures and re-queues are
    // events, not plan counts: they are kept.
    v1::JobProgress& progress = *run->job.mutable_progress();
    progress.clear_tasks_total();
    progress.clear_tasks_done();
    progress.clear_tasks_cached();
    JobRun& ref = *run;
    jobs_[id] = std::move(run);
    ++resumed;
    spdlog::info("job {}: resuming ({})", id, StateName(ref.job.state()));
    Advance(ref);
  }
  spdlog::info("scheduler {}: {} jobs in the store, {} resumed", instance_, jobs_.size(), resumed);
  UpdateGauges();
  thread_ = std::thread([this] { Loop(); });
  return OkStatus();
}

void Scheduler::RestoreKeys(JobRun& run) {
  const v1::JobSummary& summary = run.job.summary();
  if (summary.model_fingerprint().empty() || summary.shard_size() == 0) return;
  run.base_key.set_model_fingerprint(summary.model_fingerprint());
  run.base_key.set_probe_set_fingerprint(summary.probe_set_fingerprint());
  run.base_key.set_prefix_len(summary.prefix_len());
  run.base_key.set_completion_len(summary.completion_len());
  run.base_key.set_dtype(summary.dtype());
  for (uint32_t begin = 0; begin < summary.num_probes(); begin += summary.shard_size()) {
    run.shards.emplace_back(begin, std::min(summary.num_probes(), begin + summary.shard_size()));
  }
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    wake_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    changed_.wait_for(lock, std::chrono::milliseconds(options_.tick_ms), [this] { return wake_ || stopping_; });
    if (stopping_) break;
    wake_ = false;
    lock.unlock();
    Tick();
    lock.lock();
  }
}

void Scheduler::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireAndCollect();
  for (auto& [id, run] : jobs_) {
    if (run->phase == Phase::kEnded) continue;
    Advance(*run);
    Persist(*run, /*force=*/false);
  }
  // Workers not heard from for two lease timeouts are gone; their leases have expired already.
  const auto now = clock_->Now();
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.last_seen > std::chrono::milliseconds(2 * options_.lease_timeout_ms)) {
      spdlog::warn("worker {}: not heard from for {} ms; forgotten", it->first, 2 * options_.lease_timeout_ms);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  UpdateGauges();
}

void Scheduler::ExpireAndCollect() {
  for (auto& [pool, table] : pools_) {
    for (const std::string& task_id : table->ExpireLeases()) {
      spdlog::warn("task {}: lease expired; re-queued", task_id.substr(0, 12));
      if (metrics_) {
        metrics_->leases_expired.Increment();
        metrics_->tasks_requeued.Increment();
      }
      auto it = tasks_.find(task_id);
      if (it == tasks_.end()) continue;
      for (const std::string& job_id : it->second.jobs) {
        JobRun& run = *jobs_.at(job_id);
        run.job.mutable_progress()->set_tasks_requeued(run.job.progress().tasks_requeued() + 1);
        Touch(run);
      }
    }
    for (const std::string& task_id : table->TakeFailedTasks()) {
      FailTaskForGood(task_id, UnavailableError("task " + task_id.substr(0, 12) + " ran out of attempts (" +
                                                std::to_string(options_.max_attempts) +
                                                "): its leases expired or it failed each time"));
    }
  }
}

void Scheduler::UpdateGauges() {
  if (!metrics_) return;
  std::map<std::string, int> by_state;
  for (const auto& [id, run] : jobs_) ++by_state[StateName(run->job.state())];
  metrics_->SetJobsByState(by_state);
  double queued = 0, leased = 0;
  for (const auto& [pool, table] : pools_) {
    LeaseTableStats stats = table->Stats();
    queued += stats.queued;
    leased += stats.leased;
  }
  metrics_->SetTaskGauges(queued, leased);
  metrics_->SetWorkersConnected(static_cast<double>(workers_.size()));
}

Status Scheduler::NoteStore(const Status& status) {
  if (metrics_) metrics_->SetStoreUp(status.ok() || status.code() != StatusCode::kUnavailable);
  return status;
}

// ---------------------------------------------------------------------------------------------
// The client API

std::string Scheduler::NewJobId() {
  std::random_device rd;
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::snprintf(buf, sizeof buf, "j-%02d%02d%02d-%04x%04x", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, rd() & 0xffff,
                rd() & 0xffff);
  return buf;
}

Status Scheduler::ValidateAtSubmit(const JobSpec& spec) {
  ASSIGN_OR_RETURN(ProbeSet probes, LoadProbes(spec));
  (void)probes;
  // The components can be checked now when the model's layer count is known: from a worker serving
  // it, or from its config.json when this coordinator can read the folder.
  v1::Dtype dtype = v1::DTYPE_UNSPECIFIED;
  std::optional<ModelGeometry> geometry;
  StatusOr<ModelInfo> model = FindModel(spec, &dtype);
  if (model.ok()) {
    geometry = model->geometry;
    AddSizesFromConfig(spec.model, &*geometry);
  } else if (options_.read_model_configs) {
    geometry = ReadModelGeometry(spec.model);
  }
  if (!geometry) return OkStatus();  // checked when a worker serving the model registers
  // A round needs the component sizes; without them it is checked once a worker reports them.
  if (spec.kind == JobKind::kSparsifyRound && geometry->component_params.empty()) return OkStatus();
  return CreateJobDriver(spec, *geometry).status();
}

StatusOr<v1::Job> Scheduler::Submit(const std::string& spec_yaml, const std::string& client_request_id) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(spec_yaml));
  spec.model = NormalPath(spec.model);
  std::lock_guard<std::mutex> lock(mu_);
  if (!client_request_id.empty()) {
    StatusOr<std::optional<std::string>> existing = store_->Get(RequestStoreKey(client_request_id));
    RETURN_IF_ERROR(NoteStore(existing.status()));
    if (existing->has_value()) {
      auto it = jobs_.find(**existing);
      if (it != jobs_.end()) return it->second->job;
    }
  }
  RETURN_IF_ERROR(ValidateAtSubmit(spec));

  auto run = std::make_unique<JobRun>();
  v1::Job& job = run->job;
  job.set_job_id(NewJobId());
  job.set_client_request_id(client_request_id);
  job.set_state(v1::JOB_STATE_PENDING);
  job.set_spec_yaml(spec_yaml);
  *job.mutable_create_time() = Now();
  v1::JobSummary& summary = *job.mutable_summary();
  summary.set_kind(ToProto(spec.kind));
  summary.set_model_path(spec.model);
  summary.set_prefix_len(spec.prefix_len);
  summary.set_completion_len(spec.completion_len);
  summary.set_shard_size(spec.shard_size);
  summary.set_name(spec.name);
  job.mutable_progress()->set_job_id(job.job_id());
  job.mutable_progress()->set_state(v1::JOB_STATE_PENDING);
  run->spec = std::move(spec);
  run->started = clock_->Now();

  RETURN_IF_ERROR(NoteStore(store_->Set(JobStoreKey(job.job_id()), job.SerializeAsString())));
  if (!client_request_id.empty()) {
    ASSIGN_OR_RETURN(bool first, store_->SetIfAbsent(RequestStoreKey(client_request_id), job.job_id()));
    if (!first) {
      // Another submit with this request id won the race; this job never existed.
      RETURN_IF_ERROR(store_->Delete(JobStoreKey(job.job_id())));
      ASSIGN_OR_RETURN(std::optional<std::string> other, store_->Get(RequestStoreKey(client_request_id)));
      auto it = other ? jobs_.find(*other) : jobs_.end();
      if (it != jobs_.end()) return it->second->job;
      return AbortedError("a concurrent submit with client_request_id '" + client_request_id + "' is in progress");
    }
  }
  if (metrics_) metrics_->jobs_submitted.Increment();
  const std::string id = job.job_id();
  spdlog::info("job {}: submitted ({} on {}, {})", id, JobKindName(run->spec.kind), run->spec.model,
               run->spec.probes);
  JobRun& ref = *run;
  jobs_[id] = std::move(run);
  Advance(ref);
  Persist(ref, /*force=*/true);
  wake_ = true;
  changed_.notify_all();
  return ref.job;
}

StatusOr<v1::Job> Scheduler::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("no job '" + job_id + "'");
  return it->second->job;
}

StatusOr<std::vector<v1::Job>> Scheduler::ListJobs(const std::set<v1::JobState>& states) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Job> jobs;
  for (const auto& [id, run] : jobs_) {
    if (states.empty() || states.count(run->job.state())) jobs.push_back(run->job);
  }
  std::sort(jobs.begin(), jobs.end(), [](const v1::Job& a, const v1::Job& b) {
    return std::make_pair(a.create_time().seconds(), a.job_id()) < std::make_pair(b.create_time().seconds(), b.job_id());
  });
  return jobs;
}

StatusOr<v1::Job> Scheduler::Cancel(const std::string& job_id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("no job '" + job_id + "'");
  JobRun& run = *it->second;
  if (IsFinal(run.job.state())) {
    if (run.job.state() == v1::JOB_STATE_CANCELLED) return run.job;
    return FailedPreconditionError("job '" + job_id + "' already ended: " + StateName(run.job.state()));
  }
  EndJob(run, v1::JOB_STATE_CANCELLED, CancelledError(reason.empty() ? "cancelled by the user" : reason));
  return run.job;
}

StatusOr<std::pair<v1::JobProgress, uint64_t>> Scheduler::WaitProgress(const std::string& job_id,
                                                                        uint64_t seen_version,
                                                                        std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("no job '" + job_id + "'");
  JobRun* run = it->second.get();  // runs are never erased while the scheduler lives
  changed_.wait_for(lock, timeout, [&] { return run->version > seen_version || stopping_; });
  return std::make_pair(run->job.progress(), run->version);
}

StatusOr<v1::GetResultsResponse> Scheduler::Results(const v1::GetResultsRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end()) return NotFoundError("no job '" + request.job_id() + "'");
  JobRun& run = *it->second;
  v1::GetResultsResponse response;
  if (run.job.state() == v1::JOB_STATE_SUCCEEDED) {
    StatusOr<std::optional<std::string>> bytes = store_->Get(JobResultsStoreKey(run.job.job_id()));
    RETURN_IF_ERROR(NoteStore(bytes.status()));
    if (!bytes->has_value() || !response.ParseFromString(**bytes)) {
      return DataLossError("the results of job '" + run.job.job_id() + "' are missing from the store");
    }
  } else {
    response.set_job_id(run.job.job_id());
    if (run.driver) FillResults(run, &response);
  }
  response.set_state(run.job.state());
  // Filter, then attach per-probe results read back from the cache.
  std::set<std::string> wanted(request.configs().begin(), request.configs().end());
  v1::GetResultsResponse out = response;
  out.clear_results();
  for (const v1::ConfigResult& row : response.results()) {
    if (!wanted.empty() && !wanted.count(row.config())) continue;
    v1::ConfigResult* copy = out.add_results();
    *copy = row;
    if (request.include_probe_results() && row.complete() && !run.shards.empty()) {
      ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> probes, ReadConfigResults(run, row.config()));
      for (v1::ProbeResult& p : probes) *copy->add_probe_results() = std::move(p);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Jobs: resolve, plan, aggregate, finish

StatusOr<Scheduler::ModelInfo> Scheduler::FindModel(const JobSpec& spec, v1::Dtype* dtype) const {
  if (!spec.dtype.empty()) {
    ASSIGN_OR_RETURN(v1::Dtype wanted, DtypeFromName(spec.dtype));
    auto it = models_.find({spec.model, wanted});
    if (it == models_.end()) return NotFoundError("no worker has served " + spec.model + " in " + spec.dtype);
    *dtype = wanted;
    return it->second;
  }
  for (const auto& [key, info] : models_) {
    if (key.first == spec.model) {
      *dtype = static_cast<v1::Dtype>(key.second);
      return info;
    }
  }
  return NotFoundError("no worker has served " + spec.model);
}

std::map<std::string, uint64_t> Scheduler::ComponentParamsOf(const std::string& fingerprint) const {
  for (const auto& [key, info] : models_) {
    if (info.fingerprint == fingerprint && !info.geometry.component_params.empty()) return info.geometry.component_params;
  }
  return {};
}

void Scheduler::AddSizesFromConfig(const std::string& model_path, ModelGeometry* geometry) const {
  if (!geometry->component_params.empty() || !options_.read_model_configs) return;
  std::optional<ModelGeometry> read = ReadModelGeometry(model_path);
  if (read && read->num_layers == geometry->num_layers) geometry->component_params = std::move(read->component_params);
}

std::string Scheduler::ServedModels() const {
  std::set<std::string> served;
  for (const auto& [id, worker] : workers_) served.insert(worker.model_path);
  if (served.empty()) return "no worker is connected";
  std::string out = "workers serve";
  const char* separator = " ";
  for (const std::string& path : served) {
    out += separator + path;
    separator = ", ";
  }
  return out;
}

void Scheduler::Advance(JobRun& run) {
  // Loops while a stage completes at once (everything cached), so a resumed job replays up to its
  // first stage with work left in one call.
  for (;;) {
    Status status = OkStatus();
    switch (run.phase) {
      case Phase::kEnded:
        return;
      case Phase::kWaitingForModel: {
        bool resolved = false;
        status = Resolve(run, &resolved);
        if (status.ok() && !resolved) return;
        if (status.ok()) status = PlanBaseline(run);
        break;
      }
      case Phase::kBaseline:
        if (!run.outstanding.empty()) return;
        status = LoadBaselineRows(run);
        if (status.ok()) {
          run.phase = Phase::kStages;
          status = StartStage(run);
        }
        break;
      case Phase::kStages:
        if (!run.outstanding.empty()) return;
        status = AggregateStage(run);
        if (status.ok()) status = StartStage(run);
        break;
    }
    if (status.code() == StatusCode::kUnavailable) {
      // The store is away: try again at the next tick, nothing lost.
      spdlog::warn("job {}: {}; will retry", run.job.job_id(), status.message());
      return;
    }
    if (!status.ok()) {
      EndJob(run, v1::JOB_STATE_FAILED, status);
      return;
    }
  }
}

Status Scheduler::Resolve(JobRun& run, bool* resolved) {
  v1::JobSummary& summary = *run.job.mutable_summary();
  ModelInfo model;
  v1::Dtype dtype = summary.dtype();
  if (!summary.model_fingerprint().empty()) {
    // Resolved before a restart: the job keeps the model it started with.
    model = ModelInfo{summary.model_fingerprint(), {static_cast<int>(summary.num_layers()), {}}};
    model.geometry.component_params = ComponentParamsOf(model.fingerprint);
  } else {
    StatusOr<ModelInfo> found = FindModel(run.spec, &dtype);
    if (!found.ok()) {
      const std::string wanted = run.spec.model + (run.spec.dtype.empty() ? "" : " in " + run.spec.dtype);
      if (options_.model_wait_ms > 0 &&
          clock_->Now() - run.started > std::chrono::milliseconds(options_.model_wait_ms)) {
        return FailedPreconditionError("model: no worker has registered serving " + wanted + " within " +
                                       std::to_string(options_.model_wait_ms / 1000) + " s (" + ServedModels() +
                                       "); is the path readable on the workers? their logs say why they did not start");
      }
      const std::string message = "waiting for a worker serving model " + wanted + " (" + ServedModels() + ")";
      if (run.job.progress().message() != message) {
        run.job.mutable_progress()->set_message(message);
        Touch(run);
      }
      return OkStatus();
    }
    model = *found;
  }
  ASSIGN_OR_RETURN(ProbeSet probes, LoadProbes(run.spec));
  const std::string probe_fp = probes.Fingerprint();
  if (!summary.probe_set_fingerprint().empty() && summary.probe_set_fingerprint() != probe_fp) {
    return FailedPreconditionError("probes: " + run.spec.probes + " changed since the job started (fingerprint " +
                                   summary.probe_set_fingerprint().substr(0, 12) + ", now " + probe_fp.substr(0, 12) +
                                   ")");
  }
  AddSizesFromConfig(run.spec.model, &model.geometry);
  ASSIGN_OR_RETURN(run.driver, CreateJobDriver(run.spec, model.geometry));

  summary.set_model_fingerprint(model.fingerprint);
  summary.set_num_layers(model.geometry.num_layers);
  summary.set_dtype(dtype);
  summary.set_probe_set_fingerprint(probe_fp);
  summary.set_num_probes(probes.probes.size());
  run.pool = model.fingerprint + "|" + v1::Dtype_Name(dtype);
  run.base_key.set_model_fingerprint(model.fingerprint);
  run.base_key.set_probe_set_fingerprint(probe_fp);
  run.base_key.set_prefix_len(run.spec.prefix_len);
  run.base_key.set_completion_len(run.spec.completion_len);
  run.base_key.set_dtype(dtype);

  run.shards.clear();
  run.probe_rows.clear();
  const uint32_t n = probes.probes.size();
  for (uint32_t begin = 0; begin < n; begin += run.spec.shard_size) {
    const uint32_t end = std::min<uint32_t>(n, begin + run.spec.shard_size);
    auto rows = std::make_shared<Rows>();
    for (uint32_t i = begin; i < end; ++i) {
      v1::BaselineRow row;
      row.set_probe_id(probes.probes[i].id);
      row.set_probe_index(i);
      row.set_prefix_len(run.spec.prefix_len);
      for (int32_t t : probes.probes[i].tokens) row.add_tokens(t);
      rows->push_back(std::move(row));
    }
    run.shards.emplace_back(begin, end);
    run.probe_rows.push_back(std::move(rows));
  }
  if (run.job.state() == v1::JOB_STATE_PENDING) {
    run.job.set_state(v1::JOB_STATE_RUNNING);
    *run.job.mutable_start_time() = Now();
  }
  run.job.mutable_progress()->set_message("baseline");
  spdlog::info("job {}: running on model {} ({}), {} probes in {} shards, {} layers", run.job.job_id(),
               model.fingerprint.substr(0, 12), v1::Dtype_Name(dtype), n, run.shards.size(), model.geometry.num_layers);
  *resolved = true;
  Touch(run);
  Persist(run, /*force=*/true);
  return OkStatus();
}

Status Scheduler::PlanTasks(JobRun& run, std::vector<PlannedTask> planned) {
  // Every store read first: if Redis is away, nothing has changed and the next tick plans again.
  std::vector<bool> cached(planned.size(), false);
  for (size_t i = 0; i < planned.size(); ++i) {
    PlannedTask& p = planned[i];
    p.task_id = TaskIdFor(p.kind, p.key);
    if (tasks_.count(p.task_id) != 0) continue;  // another job (or this one) already waits for it
    const std::string store_key =
        p.kind == TaskKindForKey::kBaseline ? BaselineStoreKey(p.task_id) : ResultStoreKey(p.task_id);
    StatusOr<std::optional<std::string>> stored = store_->Get(store_key);
    RETURN_IF_ERROR(NoteStore(stored.status()));
    cached[i] = stored->has_value();
  }
  run.outstanding.clear();
  v1::JobProgress& progress = *run.job.mutable_progress();
  for (size_t i = 0; i < planned.size(); ++i) {
    PlannedTask& p = planned[i];
    progress.set_tasks_total(progress.tasks_total() + 1);
    auto it = tasks_.find(p.task_id);
    if (it != tasks_.end()) {
      it->second.jobs.insert(run.job.job_id());
      run.outstanding.insert(p.task_id);
      continue;
    }
    if (cached[i]) {
      if (p.kind == TaskKindForKey::kEval) ++run.cached_shards[p.key.config().canonical()];
      progress.set_tasks_done(progress.tasks_done() + 1);
      progress.set_tasks_cached(progress.tasks_cached() + 1);
      if (metrics_) metrics_->cache_hits.Increment();
      continue;
    }
    if (metrics_) metrics_->cache_misses.Increment();
    TaskEntry entry;
    entry.kind = p.kind;
    entry.pool = run.pool;
    entry.model_path = run.spec.model;
    entry.key = std::move(p.key);
    entry.rows = std::move(p.rows);
    entry.jobs.insert(run.job.job_id());
    Status enqueued = Pool(run.pool).Enqueue(p.task_id, TaskPriority(run.spec, p.kind));
    if (!enqueued.ok() && enqueued.code() != StatusCode::kAlreadyExists) return enqueued;
    tasks_.emplace(p.task_id, std::move(entry));
    run.outstanding.insert(p.task_id);
  }
  return OkStatus();
}

Status Scheduler::PlanBaseline(JobRun& run) {
  std::vector<PlannedTask> planned;
  for (size_t s = 0; s < run.shards.size(); ++s) {
    v1::CacheKey key = run.base_key;
    key.mutable_shard()->set_begin(run.shards[s].first);
    key.mutable_shard()->set_end(run.shards[s].second);
    planned.push_back({TaskKindForKey::kBaseline, std::move(key), run.probe_rows[s], ""});
  }
  RETURN_IF_ERROR(PlanTasks(run, std::move(planned)));
  run.phase = Phase::kBaseline;
  Touch(run);
  return OkStatus();
}

Status Scheduler::LoadBaselineRows(JobRun& run) {
  run.baseline_rows.clear();
  for (const auto& [begin, end] : run.shards) {
    v1::CacheKey key = run.base_key;
    key.mutable_shard()->set_begin(begin);
    key.mutable_shard()->set_end(end);
    const std::string store_key = BaselineStoreKey(TaskIdFor(TaskKindForKey::kBaseline, key));
    StatusOr<std::optional<std::string>> bytes = store_->Get(store_key);
    RETURN_IF_ERROR(NoteStore(bytes.status()));
    v1::BaselineShardOutput output;
    if (!bytes->has_value() || !output.ParseFromString(**bytes)) {
      return DataLossError("baseline shard " + std::to_string(begin) + ".." + std::to_string(end) + " (" + store_key +
                           ") is missing or unreadable in the store");
    }
    run.baseline_rows.push_back(std::make_shared<Rows>(output.rows().begin(), output.rows().end()));
  }
  return OkStatus();
}

Status Scheduler::StartStage(JobRun& run) {
  ASSIGN_OR_RETURN(std::optional<std::vector<std::string>> next, run.driver->NextStage(run.evaluated));
  if (!next) return Finish(run);
  std::vector<std::string> configs;
  // The noise floor runs with the first stage, so that it is beside every result.
  if (run.spec.noise_floor && !run.evaluated.count("")) configs.push_back("");
  for (std::string& c : *next) {
    if (!run.evaluated.count(c) && std::find(configs.begin(), configs.end(), c) == configs.end()) {
      configs.push_back(std::move(c));
    }
  }
  std::vector<PlannedTask> planned;
  for (const std::string& config : configs) {
    for (size_t s = 0; s < run.shards.size(); ++s) {
      v1::CacheKey key = run.base_key;
      key.mutable_config()->set_canonical(config);
      key.mutable_shard()->set_begin(run.shards[s].first);
      key.mutable_shard()->set_end(run.shards[s].second);
      planned.push_back({TaskKindForKey::kEval, std::move(key), run.baseline_rows[s], ""});
    }
  }
  RETURN_IF_ERROR(PlanTasks(run, std::move(planned)));
  run.stage_configs = configs;
  run.job.mutable_progress()->set_message("evaluating " + std::to_string(configs.size()) + " configs");
  Touch(run);
  return OkStatus();
}

StatusOr<std::vector<v1::ProbeResult>> Scheduler::ReadConfigResults(const JobRun& run, const std::string& config) {
  std::vector<v1::ProbeResult> results;
  for (const auto& [begin, end] : run.shards) {
    v1::CacheKey key = run.base_key;
    key.mutable_config()->set_canonical(config);
    key.mutable_shard()->set_begin(begin);
    key.mutable_shard()->set_end(end);
    const std::string store_key = ResultStoreKey(TaskIdFor(TaskKindForKey::kEval, key));
    StatusOr<std::optional<std::string>> bytes = store_->Get(store_key);
    RETURN_IF_ERROR(NoteStore(bytes.status()));
    v1::EvalShardOutput output;
    if (!bytes->has_value() || !output.ParseFromString(**bytes)) {
      return DataLossError("result of '" + config + "' on shard " + std::to_string(begin) + ".." + std::to_string(end) +
                           " (" + store_key + ") is missing or unreadable in the store");
    }
    for (const v1::ProbeResult& r : output.results()) results.push_back(r);
  }
  return results;
}

Status Scheduler::AggregateStage(JobRun& run) {
  for (const std::string& config : run.stage_configs) {
    ASSIGN_OR_RETURN(std::vector<v1::ProbeResult> results, ReadConfigResults(run, config));
    ASSIGN_OR_RETURN(v1::Metrics metrics, AggregateProbeResults(results, run.spec.completion_len));
    run.evaluated[config] = std::move(metrics);
  }
  return OkStatus();
}

void Scheduler::FillResults(const JobRun& run, v1::GetResultsResponse* response) const {
  for (v1::ConfigResult& row : run.driver->Results(run.evaluated)) *response->add_results() = std::move(row);
  std::set<std::string> cached;
  for (const auto& [config, shards] : run.cached_shards) {
    if (shards == run.shards.size()) cached.insert(config);
  }
  for (v1::SearchLevel& level : run.driver->SearchLevels(run.evaluated, cached)) {
    *response->add_search_levels() = std::move(level);
  }
  if (std::optional<v1::SparsityAllocation> allocation = run.driver->Allocation(run.evaluated)) {
    allocation->set_model_fingerprint(run.job.summary().model_fingerprint());
    *response->mutable_allocation() = std::move(*allocation);
  }
  auto nf = run.evaluated.find("");
  if (nf != run.evaluated.end()) *response->mutable_noise_floor() = nf->second;
}

Status Scheduler::Finish(JobRun& run) {
  v1::GetResultsResponse results;
  results.set_job_id(run.job.job_id());
  results.set_state(v1::JOB_STATE_SUCCEEDED);
  FillResults(run, &results);
  RETURN_IF_ERROR(NoteStore(store_->Set(JobResultsStoreKey(run.job.job_id()), results.SerializeAsString())));
  EndJob(run, v1::JOB_STATE_SUCCEEDED, OkStatus());
  return OkStatus();
}

void Scheduler::EndJob(JobRun& run, JobState state, const Status& error) {
  ReleaseTasksOf(run);
  run.phase = Phase::kEnded;
  run.job.set_state(state);
  *run.job.mutable_end_time() = Now();
  run.job.mutable_progress()->set_state(state);
  run.job.mutable_progress()->clear_eta_seconds();
  if (!error.ok()) {
    run.job.mutable_error()->set_code(static_cast<int>(error.code()));
    run.job.mutable_error()->set_message(error.message());
    run.job.mutable_progress()->set_message(error.message());
  } else {
    run.job.mutable_progress()->set_message("");
  }
  if (state == v1::JOB_STATE_SUCCEEDED) {
    spdlog::info("job {}: succeeded ({} tasks, {} from the cache)", run.job.job_id(), run.job.progress().tasks_total(),
                 run.job.progress().tasks_cached());
  } else {
    spdlog::warn("job {}: {}: {}", run.job.job_id(), StateName(state), error.message());
  }
  if (metrics_) metrics_->RemoveJob(run.job.job_id());
  // Free what the job held; its record and results stay in the store.
  run.driver.reset();
  run.probe_rows.clear();
  run.baseline_rows.clear();
  Touch(run);
  Persist(run, /*force=*/true);
}

void Scheduler::ReleaseTasksOf(JobRun& run) {
  for (const std::string& task_id : run.outstanding) {
    auto it = tasks_.find(task_id);
    if (it == tasks_.end()) continue;
    it->second.jobs.erase(run.job.job_id());
    if (!it->second.jobs.empty()) continue;
    // Nobody needs it any more: off the queue, and its holder hears CANCELLED.
    (void)Pool(it->second.pool).Cancel(task_id);
    tasks_.erase(it);
  }
  run.outstanding.clear();
}

void Scheduler::MarkTaskDone(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return;
  const int64_t probes = it->second.rows ? static_cast<int64_t>(it->second.rows->size()) : 0;
  for (const std::string& job_id : it->second.jobs) {
    JobRun& run = *jobs_.at(job_id);
    if (!run.outstanding.erase(task_id)) continue;
    v1::JobProgress& progress = *run.job.mutable_progress();
    progress.set_tasks_done(progress.tasks_done() + 1);
    ++run.tasks_computed_here;
    run.probes_computed_here += probes;
    Touch(run);
  }
  tasks_.erase(it);
  wake_ = true;
  changed_.notify_all();
}

void Scheduler::FailTaskForGood(const std::string& task_id, const Status& error) {
  if (metrics_) metrics_->tasks_failed.Increment();
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return;
  const TaskEntry& task = it->second;
  const std::string what = "task " + task_id.substr(0, 12) + " (" +
                           (task.kind == TaskKindForKey::kBaseline ? std::string("baseline")
                                                                    : "config '" + task.key.config().canonical() + "'") +
                           ", probes " + std::to_string(task.key.shard().begin()) + ".." +
                           std::to_string(task.key.shard().end()) + ")";
  const std::set<std::string> jobs = task.jobs;
  spdlog::error("{}: failed for good: {}", what, error.message());
  // EndJob releases each job's tasks, which may erase this one: only ids are used from here on.
  for (const std::string& job_id : jobs) {
    JobRun& run = *jobs_.at(job_id);
    if (run.phase == Phase::kEnded) continue;
    v1::JobProgress& progress = *run.job.mutable_progress();
    progress.set_tasks_failed(progress.tasks_failed() + 1);
    EndJob(run, v1::JOB_STATE_FAILED, Status(error.code(), what + ": " + error.message()));
  }
  tasks_.erase(task_id);
}

void Scheduler::Touch(JobRun& run) {
  UpdateProgressFields(run);
  ++run.version;
  run.dirty = true;
  changed_.notify_all();
}

void Scheduler::UpdateProgressFields(JobRun& run) {
  v1::JobProgress& progress = *run.job.mutable_progress();
  progress.set_job_id(run.job.job_id());
  progress.set_state(run.job.state());
  *progress.mutable_update_time() = Now();
  const double elapsed = std::chrono::duration<double>(clock_->Now() - run.started).count();
  if (elapsed > 0 && run.probes_computed_here > 0) {
    progress.set_probes_per_second(run.probes_computed_here / elapsed);
    const double tasks_per_second = run.tasks_computed_here / elapsed;
    const double left = static_cast<double>(progress.tasks_total()) - progress.tasks_done();
    if (left > 0 && tasks_per_second > 0) {
      progress.set_eta_seconds(left / tasks_per_second);
    } else {
      progress.clear_eta_seconds();
    }
  }
  if (run.driver) run.driver->FillProgress(run.evaluated, &progress);
  if (metrics_ && run.phase != Phase::kEnded && run.job.state() == v1::JOB_STATE_RUNNING) {
    metrics_->SetJobProgress(run.job.job_id(), progress.tasks_done(), progress.tasks_total());
    if (progress.has_search_level()) {
      metrics_->SetJobSearch(run.job.job_id(), progress.search_level(),
                             progress.has_best_fdt75() ? progress.best_fdt75() : std::nan(""));
    }
  }
}

void Scheduler::Persist(JobRun& run, bool force) {
  if (!run.dirty) return;
  const auto now = clock_->Now();
  if (!force && now - run.last_persist < std::chrono::seconds(1)) return;
  Status status = NoteStore(store_->Set(JobStoreKey(run.job.job_id()), run.job.SerializeAsString()));
  if (!status.ok()) {
    spdlog::warn("job {}: could not persist its record: {}; will retry", run.job.job_id(), status.message());
    return;
  }
  run.dirty = false;
  run.last_persist = now;
}

LeaseTable& Scheduler::Pool(const std::string& pool) {
  auto it = pools_.find(pool);
  if (it != pools_.end()) return *it->second;
  LeaseTable::Options options;
  options.lease_timeout_ms = options_.lease_timeout_ms;
  options.max_attempts = options_.max_attempts;
  options.lease_id_prefix = instance_ + "-" + std::to_string(pools_.size()) + "-";
  auto table = LeaseTable::Create(options, clock_);
  // Options come from validated flags; a failure here is a programming error.
  if (!table.ok()) {
    spdlog::critical("lease table: {}", table.status().message());
    std::abort();
  }
  return *(pools_[pool] = std::move(table).value());
}

// ---------------------------------------------------------------------------------------------
// The worker API

StatusOr<Scheduler::WorkerEntry*> Scheduler::FindWorker(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return FailedPreconditionError("worker " + worker_id + " is not registered");
  it->second.last_seen = clock_->Now();
  return &it->second;
}

StatusOr<v1::RegisterWorkerResponse> Scheduler::RegisterWorker(const v1::RegisterWorkerRequest& request) {
  if (request.worker_id().empty()) return InvalidArgumentError("worker_id is empty");
  if (request.model_fingerprint().empty()) return InvalidArgumentError("model_fingerprint is empty");
  if (request.dtype() == v1::DTYPE_UNSPECIFIED) return InvalidArgumentError("dtype is unspecified");
  if (request.num_layers() == 0) return InvalidArgumentError("num_layers is 0");
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = NormalPath(request.model_path());
  WorkerEntry& worker = workers_[request.worker_id()];
  worker.pool = request.model_fingerprint() + "|" + v1::Dtype_Name(request.dtype());
  worker.model_path = path;
  worker.dtype = request.dtype();
  worker.last_seen = clock_->Now();
  ModelInfo info{request.model_fingerprint(), {static_cast<int>(request.num_layers()), {}}};
  info.geometry.component_params.insert(request.component_params().begin(), request.component_params().end());
  auto& known = models_[{path, request.dtype()}];
  if (known.fingerprint != info.fingerprint || known.geometry.num_layers != info.geometry.num_layers ||
      known.geometry.component_params != info.geometry.component_params) {
    known = info;
    nlohmann::json value = {{"fingerprint", info.fingerprint},
                            {"num_layers", info.geometry.num_layers},
                            {"component_params", info.geometry.component_params}};
    Status status = NoteStore(store_->HashSet(kModelsStoreKey, ModelsField(path, request.dtype()), value.dump()));
    if (!status.ok()) spdlog::warn("store: could not record model {}: {}", path, status.message());
  }
  // Counted now, not at the next tick, so that the gauge already holds the worker once the line below is logged.
  if (metrics_) metrics_->SetWorkersConnected(static_cast<double>(workers_.size()));
  spdlog::info("worker {}: registered ({}, model {} fingerprint {}, {}, capacity {})", request.worker_id(),
               request.device().description(), path, request.model_fingerprint().substr(0, 12),
               v1::Dtype_Name(request.dtype()), request.capacity());
  wake_ = true;  // a pending job may be waiting for this model
  changed_.notify_all();
  v1::RegisterWorkerResponse response;
  response.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  response.set_lease_timeout_ms(options_.lease_timeout_ms);
  response.set_idle_poll_interval_ms(options_.idle_poll_interval_ms);
  return response;
}

StatusOr<v1::LeaseTasksResponse> Scheduler::LeaseTasks(const v1::LeaseTasksRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(WorkerEntry * worker, FindWorker(request.worker_id()));
  LeaseTable& table = Pool(worker->pool);
  ASSIGN_OR_RETURN(std::vector<LeaseGrant> grants,
                   table.Lease(request.worker_id(), std::max<int>(1, request.max_tasks()), request.request_id()));
  v1::LeaseTasksResponse response;
  const auto now = clock_->Now();
  const int64_t now_unix_ms = google::protobuf::util::TimeUtil::TimestampToMilliseconds(Now());
  for (const LeaseGrant& grant : grants) {
    auto it = tasks_.find(grant.task_id);
    if (it == tasks_.end()) {
      // No job needs it any more (cancelled between planning and now).
      (void)table.Cancel(grant.task_id);
      continue;
    }
    const TaskEntry& entry = it->second;
    v1::Task* task = response.add_tasks();
    task->set_task_id(grant.task_id);
    task->set_lease_id(grant.lease_id);
    task->set_job_id(*entry.jobs.begin());
    task->set_kind(entry.kind == TaskKindForKey::kBaseline ? v1::TASK_KIND_BASELINE_SHARD : v1::TASK_KIND_EVAL_SHARD);
    *task->mutable_key() = entry.key;
    task->set_model_path(entry.model_path);
    task->set_attempt(grant.attempt);
    task->set_lease_expire_unix_ms(
        now_unix_ms + std::chrono::duration_cast<std::chrono::milliseconds>(grant.expires_at - now).count());
    for (const v1::BaselineRow& row : *entry.rows) *task->add_rows() = row;
    lease_started_.emplace(grant.lease_id, now);
    if (metrics_) metrics_->tasks_leased.Increment();
    spdlog::debug("task {}: leased to {} as {} (attempt {})", grant.task_id.substr(0, 12), request.worker_id(),
                  grant.lease_id, grant.attempt);
  }
  return response;
}

StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::HeartbeatResponse response;
  StatusOr<WorkerEntry*> worker = FindWorker(request.worker_id());
  if (!worker.ok()) {
    response.set_reregister(true);
    for (const std::string& lease : request.lease_ids()) {
      v1::LeaseStatus* s = response.add_leases();
      s->set_lease_id(lease);
      s->set_state(v1::LEASE_STATE_UNKNOWN);
    }
    return response;
  }
  std::vector<std::string> ids(request.lease_ids().begin(), request.lease_ids().end());
  std::vector<HeartbeatResult> results = Pool((*worker)->pool).Heartbeat(request.worker_id(), ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    v1::LeaseStatus* s = response.add_leases();
    s->set_lease_id(ids[i]);
    switch (results[i]) {
      case HeartbeatResult::kValid: s->set_state(v1::LEASE_STATE_VALID); break;
      case HeartbeatResult::kExpired: s->set_state(v1::LEASE_STATE_EXPIRED); break;
      case HeartbeatResult::kCancelled: s->set_state(v1::LEASE_STATE_CANCELLED); break;
      case HeartbeatResult::kUnknown: s->set_state(v1::LEASE_STATE_UNKNOWN); break;
    }
  }
  return response;
}

Status Scheduler::ValidateOutput(const TaskEntry& task, const v1::CompleteTaskRequest& request) const {
  const std::string where = "task " + request.task_id().substr(0, 12) + ": ";
  const Rows& rows = *task.rows;
  if (task.kind == TaskKindForKey::kBaseline) {
    if (!request.has_baseline()) return InvalidArgumentError(where + "a baseline shard needs a baseline output");
    const auto& out = request.baseline().rows();
    if (out.size() != static_cast<int>(rows.size())) {
      return InvalidArgumentError(where + std::to_string(out.size()) + " baseline rows for " +
                                  std::to_string(rows.size()) + " probes");
    }
    for (int i = 0; i < out.size(); ++i) {
      const v1::BaselineRow& r = out[i];
      if (r.probe_index() != rows[i].probe_index() || r.prefix_len() != task.key.prefix_len() ||
          r.tokens_size() != static_cast<int>(task.key.prefix_len() + task.key.completion_len())) {
        return InvalidArgumentError(where + "baseline row " + std::to_string(i) + " does not match probe " +
                                    std::to_string(rows[i].probe_index()) + " (index, prefix or length)");
      }
      for (int k = 0; k < static_cast<int>(r.prefix_len()); ++k) {
        if (r.tokens(k) != rows[i].tokens(k)) {
          return InvalidArgumentError(where + "baseline row " + std::to_string(i) + " changed the probe's prefix");
        }
      }
    }
    return OkStatus();
  }
  if (!request.has_eval()) return InvalidArgumentError(where + "an eval shard needs an eval output");
  const auto& out = request.eval().results();
  if (out.size() != static_cast<int>(rows.size())) {
    return InvalidArgumentError(where + std::to_string(out.size()) + " results for " + std::to_string(rows.size()) +
                                " probes");
  }
  for (int i = 0; i < out.size(); ++i) {
    const v1::ProbeResult& r = out[i];
    if (r.probe_index() != rows[i].probe_index() || r.fdt() > task.key.completion_len() ||
        r.sdt() > task.key.completion_len() || !std::isfinite(r.nll())) {
      return InvalidArgumentError(where + "result " + std::to_string(i) + " is not a valid result for probe " +
                                  std::to_string(rows[i].probe_index()));
    }
  }
  return OkStatus();
}

StatusOr<v1::CompleteTaskResponse> Scheduler::CompleteTask(const v1::CompleteTaskRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::CompleteTaskResponse response;
  auto it = tasks_.find(request.task_id());
  auto worker = workers_.find(request.worker_id());
  if (worker != workers_.end()) worker->second.last_seen = clock_->Now();
  if (it == tasks_.end()) {
    // Finished or dropped already. The lease table of the worker's pool tells a duplicate from a
    // task this coordinator never planned (e.g. one from before a restart that no job needs now).
    if (worker != workers_.end()) {
      StatusOr<CompleteResult> r = Pool(worker->second.pool).Complete(request.lease_id(), request.task_id());
      if (r.ok()) {
        if (metrics_) metrics_->tasks_duplicate.Increment();
        response.set_outcome(v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
        return response;
      }
    }
    return NotFoundError("task " + request.task_id() + " is not planned by this coordinator");
  }
  TaskEntry& task = it->second;
  RETURN_IF_ERROR(ValidateOutput(task, request));
  const bool baseline = task.kind == TaskKindForKey::kBaseline;
  const std::string bytes = baseline ? request.baseline().SerializeAsString() : request.eval().SerializeAsString();
  StatusOr<bool> first =
      store_->SetIfAbsent(baseline ? BaselineStoreKey(request.task_id()) : ResultStoreKey(request.task_id()), bytes);
  // UNAVAILABLE goes back to the worker, which keeps the result and reports it again.
  RETURN_IF_ERROR(NoteStore(first.status()));
  LeaseTable& table = Pool(task.pool);
  StatusOr<CompleteResult> result = table.Complete(request.lease_id(), request.task_id());
  if (!result.ok() && result.status().code() == StatusCode::kNotFound) {
    // A lease of an earlier coordinator: the result is as good, so the queued copy is dropped.
    (void)table.Cancel(request.task_id());
  }
  auto started = lease_started_.find(request.lease_id());
  if (started != lease_started_.end()) {
    if (metrics_ && *first) {
      metrics_->task_duration.Observe(std::chrono::duration<double>(clock_->Now() - started->second).count());
    }
    lease_started_.erase(started);
  }
  if (metrics_) {
    if (*first) {
      metrics_->tasks_completed.Increment();
      metrics_->probes_evaluated.Increment(static_cast<double>(task.rows->size()));
      metrics_->tokens_evaluated.Increment(static_cast<double>(request.timing().tokens_processed()));
    } else {
      metrics_->tasks_duplicate.Increment();
    }
  }
  spdlog::info("task {}: {} from {} under {} (job {})", request.task_id().substr(0, 12),
               *first ? "accepted" : "duplicate", request.worker_id(), request.lease_id(), *task.jobs.begin());
  response.set_outcome(*first ? v1::CompleteTaskResponse::OUTCOME_ACCEPTED : v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  MarkTaskDone(request.task_id());
  return response;
}

StatusOr<v1::FailTaskResponse> Scheduler::FailTask(const v1::FailTaskRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(WorkerEntry * worker, FindWorker(request.worker_id()));
  LeaseTable& table = Pool(worker->pool);
  ASSIGN_OR_RETURN(FailResult result, table.Fail(request.lease_id(), request.retryable()));
  lease_started_.erase(request.lease_id());
  v1::FailTaskResponse response;
  const Status error(static_cast<StatusCode>(request.error().code()),
                     "worker " + request.worker_id() + ": " + request.error().message());
  if (result == FailResult::kRequeued) {
    spdlog::warn("task {}: failed on {} ({}); re-queued", request.task_id().substr(0, 12), request.worker_id(),
                 request.error().message());
    if (metrics_) metrics_->tasks_requeued.Increment();
    auto it = tasks_.find(request.task_id());
    if (it != tasks_.end()) {
      for (const std::string& job_id : it->second.jobs) {
        JobRun& run = *jobs_.at(job_id);
        run.job.mutable_progress()->set_tasks_requeued(run.job.progress().tasks_requeued() + 1);
        Touch(run);
      }
    }
    response.set_requeued(true);
  } else {
    (void)table.TakeFailedTasks();  // reported here, not by the tick
    FailTaskForGood(request.task_id(), error);
    response.set_requeued(false);
  }
  return response;
}

StatusOr<v1::DrainWorkerResponse> Scheduler::DrainWorker(const v1::DrainWorkerRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(WorkerEntry * worker, FindWorker(request.worker_id()));
  std::vector<std::string> released = Pool(worker->pool).ReleaseWorker(request.worker_id());
  workers_.erase(request.worker_id());
  spdlog::info("worker {}: drained, {} tasks back in the queue", request.worker_id(), released.size());
  if (metrics_) metrics_->tasks_requeued.Increment(static_cast<double>(released.size()));
  v1::DrainWorkerResponse response;
  response.set_tasks_released(released.size());
  return response;
}

}  // namespace dtm
