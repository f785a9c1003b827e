#include "coordinator/scheduler.h"

#include <spdlog/spdlog.h>

#include <random>
#include <set>
#include <vector>

#include "common/store.h"
#include "common/user_text.h"
#include "coordinator/sparsify_planner.h"

namespace dtm {
namespace {

std::string NewInstanceId(const CoordinatorOptions& options) {
  if (!options.instance_id.empty()) return options.instance_id;
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", rd());
  return buf;
}

}  // namespace

StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Store* store, CoordinatorMetrics* metrics,
                                                       CoordinatorOptions options, const Clock* clock) {
  if (store == nullptr || clock == nullptr) return InvalidArgumentError("scheduler: no store or clock");
  StatusOr<JobFiles> files =
      JobFiles::Create(options.data_root, options.max_file_bytes, options.read_model_configs);
  if (!files.ok()) return Status(files.status().code(), "--data-root: " + files.status().message());
  const std::string instance = NewInstanceId(options);
  return std::unique_ptr<Scheduler>(
      new Scheduler(store, metrics, std::move(options), clock, std::move(files).value(), instance));
}

Scheduler::Scheduler(Store* store, CoordinatorMetrics* metrics, CoordinatorOptions options,
                     const Clock* clock, JobFiles files, std::string instance)
    : storage_(store),
      files_(std::move(files)),
      instance_(std::move(instance)),
      state_(options, clock, metrics, &storage_, instance_ + "-"),
      client_(&state_, &files_),
      worker_(&state_),
      planner_(&state_, &files_) {}

Scheduler::~Scheduler() { Stop(); }

Status Scheduler::Start() {
  ASSIGN_OR_RETURN(auto models, storage_.LoadModels());
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, storage_.LoadJobs());
  std::lock_guard<std::mutex> lock(state_.mu);
  for (auto& [key, model] : models) state_.workers.LoadModel(key.first, key.second, std::move(model));
  int resumed = 0;
  // A sparsify run's stage jobs are resumed with their run, whatever the filter says of their own
  // specs (sparsify_planner.h): a run whose stage job stayed dormant would wait for it forever.
  std::set<std::string> chosen;
  for (const v1::Job& job : jobs) {
    if (!state_.options().resume_job || state_.options().resume_job(job)) chosen.insert(job.job_id());
  }
  for (v1::Job& job : jobs) {
    auto run = std::make_unique<JobRun>();
    run->job = std::move(job);
    run->started = state_.clock().Now();
    JobRun& ref = *run;
    const std::string id = ref.job.job_id();
    state_.jobs[id] = std::move(run);
    RestoreResolution(ref);
    if (IsFinal(ref.job.state())) {
      ref.phase = JobPhase::kEnded;
      continue;
    }
    const std::string run_id = SparsifyRunOfStage(ref.job.client_request_id());
    if (!chosen.count(id) && !(!run_id.empty() && chosen.count(run_id))) {
      ref.phase = JobPhase::kDormant;
      continue;
    }
    // The replay plans every task again and counts each once more (the finished ones as cached), so
    // the counts of the earlier run must not stay underneath. Failures and re-queues are events, not
    // plan counts: they are kept.
    v1::JobProgress& progress = *ref.job.mutable_progress();
    progress.clear_tasks_total();
    progress.clear_tasks_done();
    progress.clear_tasks_cached();
    StatusOr<JobSpec> spec = ParseJobSpec(ref.job.spec_yaml());
    Status usable = spec.ok() ? files_.ResolvePaths(&*spec) : spec.status();
    if (!usable.ok()) {
      state_.EndJob(ref, v1::JOB_STATE_FAILED, usable);
      continue;
    }
    ref.spec = std::move(spec).value();
    ref.spec.model = NormalModelPath(ref.spec.model);
    if (!ref.spec.reference.empty()) ref.spec.reference = NormalModelPath(ref.spec.reference);
    ++resumed;
    spdlog::info("job {}: resuming ({})", id, JobStateLabel(ref.job.state()));
  }
  spdlog::info("scheduler {}: {} jobs in the store, {} resumed", instance_, state_.jobs.size(), resumed);
  state_.UpdateGauges();
  state_.wake = true;  // the first tick resumes them
  thread_ = std::thread([this] { Loop(); });
  return OkStatus();
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(state_.mu);
    if (state_.stopping && !thread_.joinable()) return;
    state_.stopping = true;
    state_.wake = true;
  }
  state_.changed.notify_all();
  if (thread_.joinable()) thread_.join();
  PersistChanged(/*force=*/true);
}

void Scheduler::Loop() {
  std::unique_lock<std::mutex> lock(state_.mu);
  while (!state_.stopping) {
    state_.changed.wait_for(lock, std::chrono::milliseconds(state_.options().tick_ms),
                            [this] { return state_.wake || state_.stopping; });
    if (state_.stopping) break;
    state_.wake = false;
    lock.unlock();
    Tick();
    lock.lock();
  }
}

void Scheduler::Tick() {
  std::lock_guard<std::mutex> ticking(tick_mu_);
  {
    std::lock_guard<std::mutex> lock(state_.mu);
    TaskTable::Sweep sweep = state_.tasks.Expire();
    for (const std::string& task_id : sweep.requeued) {
      spdlog::warn("task {}: lease expired; re-queued", task_id.substr(0, 12));
      if (state_.metrics() != nullptr) state_.metrics()->leases_expired.Increment();
      state_.TaskRequeued(task_id);
    }
    for (const std::string& task_id : sweep.failed) {
      state_.TaskFailed(task_id, UnavailableError("it ran out of attempts (" +
                                                  std::to_string(state_.options().max_attempts) +
                                                  "): its leases expired or it failed each time"));
    }
    for (const auto& [task_id, why] : sweep.gangs_failed) state_.TaskFailed(task_id, UnavailableError(why));
    // Workers not heard from for two lease timeouts are gone; their leases have expired already.
    const auto cutoff =
        state_.clock().Now() - std::chrono::milliseconds(2 * state_.options().lease_timeout_ms);
    for (const auto& [worker_id, pool] : state_.workers.RemoveSilentSince(cutoff)) {
      spdlog::warn("worker {}: not heard from for {} ms; forgotten", worker_id,
                   2 * state_.options().lease_timeout_ms);
      state_.tasks.Pool(pool).ForgetWorker(worker_id);
    }
    GiveUpOnUnrunnableTasks();
    state_.UpdateGauges();
  }
  planner_.AdvanceAll();
  PersistChanged(/*force=*/false);
  CheckStore();
}

void Scheduler::GiveUpOnUnrunnableTasks() {
  const auto now = state_.clock().Now();
  const int64_t wait_ms = state_.options().model_wait_ms;
  std::map<std::string, std::string> blocked;  // job id -> what it waits for
  for (const auto& [pool, task] : state_.tasks.Excluded()) {
    const std::set<std::string> live = state_.workers.WorkersOf(pool);
    // With no worker at all the pool waits for workers, as a job waits for its model's.
    if (live.empty()) continue;
    bool none_can = true;
    for (const std::string& id : live) none_can = none_can && task.unable.count(id) != 0;
    if (!none_can) continue;
    std::string reasons;
    for (const auto& [worker_id, why] : task.unable) {
      if (live.count(worker_id)) reasons += (reasons.empty() ? "" : "; ") + why;
    }
    const std::string what = "task " + task.task_id.substr(0, 12);
    if (wait_ms > 0 && now - task.since >= std::chrono::milliseconds(wait_ms)) {
      (void)state_.tasks.Pool(pool).GiveUp(task.task_id);
      state_.TaskFailed(task.task_id, FailedPreconditionError("no registered worker can run it within " +
                                                              std::to_string(wait_ms / 1000) +
                                                              " s (--model-wait-seconds): " + reasons));
      continue;
    }
    if (const TaskEntry* entry = state_.tasks.Find(task.task_id)) {
      for (const std::string& job_id : entry->jobs) {
        blocked.emplace(job_id,
                        "waiting for a worker that can run " + what + " (" + Bounded(reasons, 400) + ")");
      }
    }
  }
  // Jobs no longer blocked get their message back; blocked ones say why.
  for (auto it = blocked_.begin(); it != blocked_.end();) {
    JobRun* run = state_.FindJob(it->first);
    if (blocked.count(it->first) || run == nullptr) {
      ++it;
      continue;
    }
    if (run->phase != JobPhase::kEnded) {
      run->job.mutable_progress()->set_message(it->second);
      state_.Touch(*run);
    }
    it = blocked_.erase(it);
  }
  for (const auto& [job_id, message] : blocked) {
    JobRun* run = state_.FindJob(job_id);
    if (run == nullptr || run->job.progress().message() == message) continue;
    blocked_.emplace(job_id, run->job.progress().message());
    run->job.mutable_progress()->set_message(message);
    state_.Touch(*run);
  }
}

void Scheduler::PersistChanged(bool force) {
  std::vector<std::string> dirty;
  {
    std::lock_guard<std::mutex> lock(state_.mu);
    for (const auto& [id, run] : state_.jobs) {
      if (run->dirty) dirty.push_back(id);
    }
  }
  for (const std::string& id : dirty) {
    // A store that is away fails each write at once (RedisStore): the remaining ones are left for
    // the next tick rather than tried one by one.
    if (state_.Persist(id, force).code() == StatusCode::kUnavailable) break;
  }
}

void Scheduler::CheckStore() {
  const bool reachable = storage_.Ping().ok();
  if (state_.metrics() != nullptr) state_.metrics()->SetStoreUp(reachable);
  if (store_reachable_ == static_cast<int>(reachable)) return;
  if (store_reachable_ != -1) {
    if (reachable) {
      spdlog::info("store: reachable again");
    } else {
      spdlog::error("store: unreachable; answering from memory, and UNAVAILABLE where a write is needed");
    }
  }
  store_reachable_ = reachable;
  if (state_.options().on_store_reachable) state_.options().on_store_reachable(reachable);
}

}  // namespace dtm
