#include "worker/worker.h"

#include <spdlog/spdlog.h>

#include "common/grpc_status.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

namespace dtm {
namespace {

namespace v1 = dtm::v1;
using dtm::v1::Task;

// Default intervals for a coordinator that leaves them unset.
constexpr int64_t kDefaultHeartbeatIntervalMs = 5000;
constexpr int64_t kDefaultIdlePollIntervalMs = 500;
// Re-registrations one report may cause before the worker stops believing "not registered".
constexpr int kMaxReregistrationsPerReport = 3;

Status FromGrpc(const char* rpc, const grpc::Status& status) {
  return FromGrpcStatus(status, std::string(rpc) + " to the coordinator");
}

// Whose fault an executor's error is (TaskExecutor::Execute's codes), which decides where the task
// runs next (worker_service.proto FailureCause).
v1::FailureCause CauseOf(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
      return v1::FAILURE_CAUSE_TASK;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kResourceExhausted:
      return v1::FAILURE_CAUSE_WORKER;
    default:
      return v1::FAILURE_CAUSE_TRANSIENT;
  }
}

// Consecutive failed registrations after which the worker says what else than a down coordinator
// may be the cause, and how often it repeats it.
constexpr int kRegistrationFailuresBeforeHint = 3;
constexpr int kRegistrationHintEvery = 20;

// The coordinator may be restarting or overloaded: worth asking again later.
bool IsTransient(StatusCode code) {
  switch (code) {
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kResourceExhausted:
    case StatusCode::kAborted:
    case StatusCode::kInternal:
    case StatusCode::kUnknown:
    case StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

// A report is retried only where the result may not have arrived and the coordinator may come back.
bool IsRetryableReportError(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

std::string Describe(const Task& task) {
  return "task " + task.task_id() + " lease " + task.lease_id() + " job " + task.job_id();
}

uint64_t MsSince(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace

Worker::Worker(WorkerOptions options, std::shared_ptr<grpc::Channel> channel, TaskExecutor* executor,
               WorkerMetrics* metrics)
    : options_(std::move(options)),
      stub_(dtm::v1::WorkerService::NewStub(std::move(channel))),
      executor_(executor),
      model_path_(options_.model_path),
      metrics_(metrics),
      rng_(std::random_device{}()) {}

Worker::~Worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

Status Worker::Run() {
  UpdateMemoryGauge();
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
  Status result = Loop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  heartbeat_thread_.join();
  // Only after the heartbeat thread is gone: a heartbeat after DrainWorker would be told to register
  // again, and would.
  if (result.ok()) ReturnLeases();
  return result;
}

void Worker::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return;
    draining_ = true;
  }
  spdlog::info("worker {}: draining: no new leases; the running task is finished and reported", options_.worker_id);
  wake_.notify_all();
}

Status Worker::Loop() {
  int64_t backoff_ms = options_.initial_backoff_ms;
  int failures = 0;          // consecutive failed registrations
  int unknown_in_a_row = 0;  // consecutive leases answered "register again"
  while (!draining()) {
    uint64_t gen = 0;
    Status registered = EnsureRegistered(&gen);
    if (!registered.ok()) {
      if (!IsTransient(registered.code())) {
        spdlog::error("worker {}: the coordinator refused the registration: {}", options_.worker_id,
                      registered.ToString());
        return registered;
      }
      spdlog::warn("worker {}: cannot register ({}); retrying", options_.worker_id, registered.ToString());
      ++failures;
      if (!options_.connection_hint.empty() && failures >= kRegistrationFailuresBeforeHint &&
          (failures - kRegistrationFailuresBeforeHint) % kRegistrationHintEvery == 0) {
        spdlog::error("worker {}: {} registrations failed in a row; if the coordinator is up: {}", options_.worker_id,
                      failures, options_.connection_hint);
      }
      if (!WaitUnlessDraining(Jittered(backoff_ms))) break;
      backoff_ms = NextBackoff(backoff_ms);
      continue;
    }

    if (failures > 0 && failures >= kRegistrationFailuresBeforeHint) {
      spdlog::info("worker {}: registered after {} failed attempts", options_.worker_id, failures);
    }
    failures = 0;
    bool reregister = false;
    std::string load_model;
    StatusOr<std::vector<Task>> leased = Lease(&reregister, &load_model);
    if (reregister) {
      ++unknown_in_a_row;
      spdlog::info("worker {}: the coordinator does not know this worker; registering again", options_.worker_id);
      MarkUnregistered(gen);
      // At once the first time (the coordinator restarted); with backoff if it keeps saying so.
      if (unknown_in_a_row == 1) continue;
      if (!WaitUnlessDraining(Jittered(backoff_ms))) break;
      backoff_ms = NextBackoff(backoff_ms);
      continue;
    }
    unknown_in_a_row = 0;
    if (!leased.ok()) {
      spdlog::warn("worker {}: cannot lease tasks ({}); retrying", options_.worker_id, leased.status().ToString());
      if (!WaitUnlessDraining(Jittered(backoff_ms))) break;
      backoff_ms = NextBackoff(backoff_ms);
      continue;
    }
    backoff_ms = options_.initial_backoff_ms;
    if (!load_model.empty()) {
      SwitchModel(load_model);
      continue;
    }

    std::vector<Task>& tasks = *leased;
    if (tasks.empty()) {
      int64_t idle_ms;
      {
        std::lock_guard<std::mutex> lock(mu_);
        idle_ms = idle_poll_interval_ms_;
      }
      WaitUnlessDraining(idle_ms);
      continue;
    }
    const Clock::time_point leased_at = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Task& task : tasks) {
        HeldLease& held = held_[task.lease_id()];
        held.task_id = task.task_id();
        held.job_id = task.job_id();
        held.gang = task.kind() == dtm::v1::TASK_KIND_TRAIN;
      }
    }
    for (const Task& task : tasks) {
      spdlog::info("{}: leased ({}, attempt {}, {} rows, config '{}')", Describe(task),
                   TaskKindLabel(task.kind()), task.attempt(), task.rows_size(), task.key().config().canonical());
    }
    // One replica: the tasks of a lease run one after the other. Those not started when a drain
    // begins stay held and go back with DrainWorker.
    for (const Task& task : tasks) {
      if (draining()) break;
      RunTask(task, leased_at);
    }
  }
  return OkStatus();
}

Status Worker::EnsureRegistered(uint64_t* generation) {
  std::lock_guard<std::mutex> serialize(register_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (registered_) {
      if (generation != nullptr) *generation = generation_;
      return OkStatus();
    }
  }
  dtm::v1::RegisterWorkerRequest request;
  request.set_worker_id(options_.worker_id);
  *request.mutable_device() = executor_->device();
  request.set_model_fingerprint(executor_->model_fingerprint());
  request.set_capacity(static_cast<uint32_t>(std::max(1, options_.capacity)));
  request.set_dtype(executor_->dtype());
  request.set_version(options_.version);
  request.set_model_path(model_path_);
  request.set_gang_address(options_.gang_address);
  request.set_model_root(options_.model_root);
  request.set_refused_model_path(refused_path_);
  request.set_refused_reason(refused_reason_);
  request.set_num_layers(static_cast<uint32_t>(executor_->num_layers()));
  const std::map<std::string, uint64_t> component_params = executor_->component_params();
  request.mutable_component_params()->insert(component_params.begin(), component_params.end());
  dtm::v1::RegisterWorkerResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stub_->RegisterWorker(&context, request, &response);
  if (!status.ok()) return FromGrpc("RegisterWorker", status);

  int64_t heartbeat_ms, idle_ms;
  {
    std::lock_guard<std::mutex> lock(mu_);
    registered_ = true;
    ++generation_;
    heartbeat_interval_ms_ =
        response.heartbeat_interval_ms() > 0 ? response.heartbeat_interval_ms() : kDefaultHeartbeatIntervalMs;
    idle_poll_interval_ms_ =
        response.idle_poll_interval_ms() > 0 ? response.idle_poll_interval_ms() : kDefaultIdlePollIntervalMs;
    lease_request_id_.clear();  // the new registration starts its own lease attempts
    heartbeat_ms = heartbeat_interval_ms_;
    idle_ms = idle_poll_interval_ms_;
    if (generation != nullptr) *generation = generation_;
  }
  wake_.notify_all();
  spdlog::info("worker {}: registered (model {} fingerprint {}, {}, capacity {}; heartbeat every {} ms, "
               "lease timeout {} ms, idle poll {} ms)",
               options_.worker_id, model_path_, request.model_fingerprint().substr(0, 12),
               dtm::v1::Dtype_Name(request.dtype()), request.capacity(), heartbeat_ms, response.lease_timeout_ms(),
               idle_ms);
  if (options_.on_registered) options_.on_registered();
  return OkStatus();
}

void Worker::MarkUnregistered(uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (generation_ != generation) return;
  registered_ = false;
  for (auto& [lease_id, lease] : held_) {
    if (!lease.gang || lease.cancelled) continue;
    lease.cancelled = true;
    lease.drop_reason = "the coordinator does not know this worker, so not its gang either (it restarted?); the run "
                        "resumes from its checkpoint on a gang the coordinator forms";
    spdlog::info("task {} lease {} job {}: {}", lease.task_id, lease_id, lease.job_id, lease.drop_reason);
  }
}

uint64_t Worker::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

StatusOr<std::vector<Task>> Worker::Lease(bool* reregister, std::string* load_model) {
  dtm::v1::LeaseTasksRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_max_tasks(static_cast<uint32_t>(std::max(1, options_.capacity)));
  for (const std::string& tag : executor_->held_shards()) {
    if (request.held_shards_size() >= 1024) break;
    request.add_held_shards(tag);
  }
  std::string fresh_id = NewRequestId();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lease_request_id_.empty()) lease_request_id_ = std::move(fresh_id);
    request.set_request_id(lease_request_id_);
  }
  dtm::v1::LeaseTasksResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stub_->LeaseTasks(&context, request, &response);
  // A lost reply is retried under the same id, so that the coordinator hands back the same leases;
  // a worker it does not know starts afresh.
  if (!status.ok()) return FromGrpc("LeaseTasks", status);
  {
    std::lock_guard<std::mutex> lock(mu_);
    lease_request_id_.clear();
  }
  *reregister = response.reregister();
  *load_model = response.load_model();
  return std::vector<Task>(response.tasks().begin(), response.tasks().end());
}

void Worker::SwitchModel(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::string refused;
  // The real paths, symlinks resolved: a link under the root to a folder outside it is outside.
  std::error_code path_error, root_error;
  const fs::path real = fs::canonical(model_path, path_error);
  const fs::path root = options_.model_root.empty() ? fs::path() : fs::canonical(options_.model_root, root_error);
  if (options_.model_root.empty() || !options_.load_model) {
    refused = "this worker has no --model-root";
  } else if (path_error) {
    refused = "cannot resolve it: " + path_error.message();
  } else if (root_error) {
    refused = "cannot resolve --model-root " + options_.model_root + ": " + root_error.message();
  } else if (std::mismatch(root.begin(), root.end(), real.begin(), real.end()).first != root.end()) {
    refused = "it resolves to " + real.string() + ", outside --model-root " + root.string();
  }
  StatusOr<std::unique_ptr<TaskExecutor>> loaded =
      refused.empty() ? options_.load_model(real.string())
                      : StatusOr<std::unique_ptr<TaskExecutor>>(FailedPreconditionError(refused));
  std::unique_ptr<TaskExecutor> replaced;  // freed below, outside the lock
  bool initial = false;
  {
    std::lock_guard<std::mutex> serialize(register_mu_);
    if (loaded.ok()) {
      initial = owned_executor_ == nullptr;
      replaced = std::move(owned_executor_);
      owned_executor_ = std::move(*loaded);
      executor_ = owned_executor_.get();
      model_path_ = model_path;
      refused_path_.clear();
      refused_reason_.clear();
    } else {
      refused_path_ = model_path;
      refused_reason_ = loaded.status().message();
    }
  }
  replaced.reset();
  if (initial && options_.release_initial_executor) options_.release_initial_executor();
  if (loaded.ok()) {
    spdlog::info("worker {}: now serving {} (fingerprint {})", options_.worker_id, model_path,
                 executor_->model_fingerprint().substr(0, 12));
  } else {
    spdlog::error("worker {}: refused to load {}: {}", options_.worker_id, model_path, loaded.status().message());
  }
  UpdateMemoryGauge();
  // Registered again either way: with the new model, or to tell the coordinator of the refusal.
  MarkUnregistered(generation());
}

void Worker::RunTask(const Task& task, Clock::time_point leased_at) {
  const std::string& lease_id = task.lease_id();
  if (IsCancelled(lease_id)) {
    spdlog::info("{}: dropped before it ran: {}", Describe(task), DropReason(lease_id));
    if (metrics_ != nullptr) metrics_->CountTask(task.kind(), TaskOutcome::kCancelled);
    ForgetLease(lease_id);
    return;
  }
  spdlog::info("{}: running", Describe(task));
  dtm::v1::CompleteTaskRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_lease_id(lease_id);
  request.set_task_id(task.task_id());

  if (metrics_ != nullptr) metrics_->SetBusy(true);
  const Clock::time_point started = Clock::now();
  Status executed;
  try {
    executed = EnsureCalibration(task);
    TaskHooks hooks;
    hooks.cancelled = [this, &lease_id] { return IsCancelled(lease_id); };
    hooks.progress = [this, &lease_id](uint32_t step, uint32_t total, double loss) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = held_.find(lease_id);
      if (it == held_.end()) return;
      dtm::v1::TaskProgress& p = it->second.progress.emplace();
      p.set_lease_id(lease_id);
      p.set_step(step);
      p.set_total_steps(total);
      p.set_loss(loss);
    };
    hooks.log = [&task](const std::string& line) { spdlog::info("{}: {}", Describe(task), line); };
    if (executed.ok()) executed = executor_->Execute(task, &request, hooks);
  } catch (const std::exception& e) {
    executed = InternalError(Describe(task) + ": the executor threw: " + e.what());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  if (metrics_ != nullptr) {
    metrics_->SetBusy(false);
    metrics_->ObserveTaskDuration(task.kind(), seconds);
  }
  UpdateMemoryGauge();

  TaskOutcome outcome;
  if (IsCancelled(lease_id)) {
    spdlog::info("{}: result dropped after {:.3f} s: {}", Describe(task), seconds, DropReason(lease_id));
    outcome = TaskOutcome::kCancelled;
  } else if (!executed.ok()) {
    spdlog::warn("{}: failed after {:.3f} s: {}", Describe(task), seconds, executed.ToString());
    ReportFailure(task, executed);
    outcome = TaskOutcome::kFailed;
  } else {
    if (metrics_ != nullptr) {
      metrics_->AddProcessed(request.timing().tokens_processed(), static_cast<uint64_t>(task.rows_size()));
      metrics_->AddLayerForwards(request.timing().layer_forwards(), request.timing().full_layer_forwards());
    }
    spdlog::info("{}: executed in {:.3f} s; reporting", Describe(task), seconds);
    outcome = ReportCompletion(task, &request, leased_at);
  }
  if (metrics_ != nullptr) metrics_->CountTask(task.kind(), outcome);
  ForgetLease(lease_id);
}

TaskOutcome Worker::ReportCompletion(const Task& task, dtm::v1::CompleteTaskRequest* request,
                                     Clock::time_point leased_at) {
  const Clock::time_point give_up_at = Clock::now() + std::chrono::milliseconds(options_.report_retry_ms);
  int64_t backoff_ms = options_.initial_backoff_ms;
  int reregistrations = 0;
  while (true) {
    if (IsCancelled(task.lease_id())) {
      spdlog::info("{}: result dropped: {}", Describe(task), DropReason(task.lease_id()));
      return TaskOutcome::kCancelled;
    }
    request->mutable_timing()->set_total_ms(MsSince(leased_at));
    const uint64_t gen = generation();
    dtm::v1::CompleteTaskResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = stub_->CompleteTask(&context, *request, &response);
    if (status.ok() && !response.reregister()) {
      if (response.outcome() == dtm::v1::CompleteTaskResponse::OUTCOME_DUPLICATE) {
        spdlog::info("{}: completed; the coordinator already had a result (duplicate)", Describe(task));
        return TaskOutcome::kDuplicate;
      }
      spdlog::info("{}: completed; result accepted ({} ms from lease)", Describe(task),
                   request->timing().total_ms());
      return TaskOutcome::kCompleted;
    }
    Status last = status.ok() ? FailedPreconditionError("the coordinator does not know this worker")
                              : FromGrpc("CompleteTask", status);
    if (status.ok() && reregistrations < kMaxReregistrationsPerReport) {
      ++reregistrations;
      spdlog::info("{}: the coordinator does not know this worker; registering again", Describe(task));
      MarkUnregistered(gen);
      last = EnsureRegistered();
      if (last.ok()) continue;
      if (!IsTransient(last.code())) {
        spdlog::error("{}: result lost: cannot register again: {}", Describe(task), last.ToString());
        return TaskOutcome::kFailed;
      }
    } else if (!IsRetryableReportError(status)) {
      spdlog::error("{}: the coordinator rejected the result: {}", Describe(task), last.ToString());
      return TaskOutcome::kFailed;
    }
    if (Clock::now() + std::chrono::milliseconds(backoff_ms) > give_up_at) {
      spdlog::error("{}: result lost: not delivered within {} ms: {}", Describe(task), options_.report_retry_ms,
                    last.ToString());
      return TaskOutcome::kFailed;
    }
    spdlog::warn("{}: cannot report the result ({}); retrying in {} ms", Describe(task), last.ToString(), backoff_ms);
    // Not cut short by a drain: finishing the running task includes delivering its result.
    std::this_thread::sleep_for(std::chrono::milliseconds(Jittered(backoff_ms)));
    backoff_ms = NextBackoff(backoff_ms);
  }
}

void Worker::ReportFailure(const Task& task, const Status& error) {
  dtm::v1::FailTaskRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_lease_id(task.lease_id());
  request.set_task_id(task.task_id());
  request.mutable_error()->set_code(static_cast<int32_t>(error.code()));
  request.mutable_error()->set_message(error.message());
  request.set_cause(CauseOf(error.code()));
  // For a coordinator older than `cause`: anything but the task's own fault may pass elsewhere.
  request.set_retryable(request.cause() != v1::FAILURE_CAUSE_TASK);
  request.set_request_id(NewRequestId());  // one per failure, reused by the retries below

  const Clock::time_point give_up_at = Clock::now() + std::chrono::milliseconds(options_.report_retry_ms);
  int64_t backoff_ms = options_.initial_backoff_ms;
  int reregistrations = 0;
  while (true) {
    if (IsCancelled(task.lease_id())) return;
    const uint64_t gen = generation();
    dtm::v1::FailTaskResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = stub_->FailTask(&context, request, &response);
    if (status.ok() && !response.reregister()) {
      spdlog::info("{}: failure reported ({}); {}", Describe(task), v1::FailureCause_Name(request.cause()),
                   response.requeued() ? "the task was re-queued" : "the task failed for good");
      return;
    }
    Status last = status.ok() ? FailedPreconditionError("the coordinator does not know this worker")
                              : FromGrpc("FailTask", status);
    if (status.ok() && reregistrations < kMaxReregistrationsPerReport) {
      ++reregistrations;
      MarkUnregistered(gen);
      last = EnsureRegistered();
      if (last.ok()) continue;
      if (!IsTransient(last.code())) {
        spdlog::error("{}: failure not reported: cannot register again: {}", Describe(task), last.ToString());
        return;
      }
    } else if (!IsRetryableReportError(status)) {
      spdlog::error("{}: the coordinator rejected the failure report: {}", Describe(task), last.ToString());
      return;
    }
    if (Clock::now() + std::chrono::milliseconds(backoff_ms) > give_up_at) {
      // The lease expires and the coordinator re-queues the task: the failure only goes uncounted.
      spdlog::error("{}: failure not reported within {} ms: {}", Describe(task), options_.report_retry_ms,
                    last.ToString());
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(Jittered(backoff_ms)));
    backoff_ms = NextBackoff(backoff_ms);
  }
}

Status Worker::EnsureCalibration(const Task& task) {
  const std::string& fingerprint = task.key().calibration_fingerprint();
  if (fingerprint.empty() || executor_->calibration_fingerprint() == fingerprint) return OkStatus();
  dtm::v1::GetCalibrationSetRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_fingerprint(fingerprint);
  dtm::v1::CalibrationSet set;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stub_->GetCalibrationSet(&context, request, &set);
  if (!status.ok()) {
    const Status fetched = FromGrpc("GetCalibrationSet", status);
    // Whatever the coordinator said, the task itself may be fine: another try may fetch the set.
    return UnavailableError(Describe(task) + ": cannot fetch calibration set " + fingerprint.substr(0, 12) + ": " +
                            fetched.message());
  }
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(executor_->SetCalibration(set));
  spdlog::info("{}: calibration set {} ({} x {} tokens) fetched and loaded in {:.3f} s", Describe(task),
               fingerprint.substr(0, 12), set.sequences_size(), set.seq_len(),
               std::chrono::duration<double>(Clock::now() - t0).count());
  return OkStatus();
}

void Worker::ReturnLeases() {
  size_t held;
  bool registered;
  {
    std::lock_guard<std::mutex> lock(mu_);
    held = held_.size();
    registered = registered_;
    held_.clear();
  }
  if (!registered) {
    spdlog::info("worker {}: drained; not registered, so {} held leases will expire", options_.worker_id, held);
    return;
  }
  dtm::v1::DrainWorkerRequest request;
  request.set_worker_id(options_.worker_id);
  dtm::v1::DrainWorkerResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stub_->DrainWorker(&context, request, &response);
  if (!status.ok()) {
    spdlog::warn("worker {}: DrainWorker failed ({}); its {} leases will expire instead", options_.worker_id,
                 FromGrpc("DrainWorker", status).ToString(), held);
    return;
  }
  spdlog::info("worker {}: drained; {} tasks went back to the queue", options_.worker_id, response.tasks_released());
}

void Worker::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (!registered_) {
      wake_.wait(lock, [this] { return stopping_ || registered_; });
      continue;
    }
    // Heartbeats go out even with no leases held: the reply is how the worker learns that the
    // coordinator has forgotten it.
    if (wake_.wait_for(lock, std::chrono::milliseconds(heartbeat_interval_ms_), [this] { return stopping_; })) break;
    if (!registered_) continue;
    std::vector<std::string> lease_ids;
    for (const auto& [lease_id, lease] : held_) lease_ids.push_back(lease_id);
    const uint64_t gen = generation_;
    lock.unlock();
    HeartbeatOnce(lease_ids, gen);
    lock.lock();
  }
}

void Worker::HeartbeatOnce(const std::vector<std::string>& lease_ids, uint64_t generation) {
  dtm::v1::HeartbeatRequest request;
  request.set_worker_id(options_.worker_id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& id : lease_ids) {
      request.add_lease_ids(id);
      auto it = held_.find(id);
      if (it != held_.end() && it->second.progress) *request.add_progress() = *it->second.progress;
    }
  }
  dtm::v1::HeartbeatResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stub_->Heartbeat(&context, request, &response);
  if (!status.ok()) {
    spdlog::warn("worker {}: heartbeat failed: {}", options_.worker_id, FromGrpc("Heartbeat", status).ToString());
    return;
  }
  if (response.reregister()) {
    spdlog::info("worker {}: the coordinator does not know this worker; registering again", options_.worker_id);
    MarkUnregistered(generation);
    const Status registered = EnsureRegistered();
    if (!registered.ok()) {
      spdlog::warn("worker {}: cannot register again: {}", options_.worker_id, registered.ToString());
    }
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const dtm::v1::LeaseStatus& state : response.leases()) {
    auto it = held_.find(state.lease_id());
    if (it == held_.end()) continue;  // reported meanwhile
    HeldLease& lease = it->second;
    const std::string what = "task " + lease.task_id + " lease " + state.lease_id() + " job " + lease.job_id;
    const bool drop =
        state.state() == dtm::v1::LEASE_STATE_CANCELLED || state.state() == dtm::v1::LEASE_STATE_REVOKED;
    if (drop && !lease.cancelled) {
      lease.cancelled = true;
      lease.drop_reason = state.state() == dtm::v1::LEASE_STATE_CANCELLED
                              ? "no job needs the task any more (its jobs were cancelled or failed)"
                              : "the coordinator took the lease back (the task was completed under another lease, "
                                "or handed back)";
      spdlog::info("{}: {}; its work will be dropped", what, lease.drop_reason);
    } else if ((state.state() == dtm::v1::LEASE_STATE_EXPIRED || state.state() == dtm::v1::LEASE_STATE_UNKNOWN) &&
               !lease.stale_logged) {
      lease.stale_logged = true;
      spdlog::info("{}: lease {} at the coordinator; the result will still be reported", what,
                   dtm::v1::LeaseState_Name(state.state()));
    }
  }
}

std::string Worker::DropReason(const std::string& lease_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(lease_id);
  return it == held_.end() ? std::string("the lease ended") : it->second.drop_reason;
}

bool Worker::IsCancelled(const std::string& lease_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(lease_id);
  return it != held_.end() && it->second.cancelled;
}

void Worker::ForgetLease(const std::string& lease_id) {
  std::lock_guard<std::mutex> lock(mu_);
  held_.erase(lease_id);
}

bool Worker::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

bool Worker::WaitUnlessDraining(int64_t ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return !wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return draining_; });
}

int64_t Worker::Jittered(int64_t ms) {
  std::lock_guard<std::mutex> lock(mu_);
  // +-20%, so that workers cut off together do not come back in step.
  std::uniform_real_distribution<double> factor(0.8, 1.2);
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(ms) * factor(rng_)));
}

int64_t Worker::NextBackoff(int64_t ms) const { return std::min(options_.max_backoff_ms, std::max<int64_t>(1, ms * 2)); }

std::string Worker::NewRequestId() {
  std::lock_guard<std::mutex> lock(mu_);
  char nonce[17];
  std::snprintf(nonce, sizeof(nonce), "%016" PRIx64, static_cast<uint64_t>(rng_()));
  return options_.worker_id + "-" + nonce + "-" + std::to_string(++next_request_);
}

void Worker::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.rpc_timeout_ms));
}

void Worker::UpdateMemoryGauge() {
  if (metrics_ == nullptr) return;
  metrics_->SetDeviceMemoryBytes(executor_->device_memory_bytes());
  metrics_->SetActivationCache(executor_->activation_cache_stats());
}

}  // namespace dtm
