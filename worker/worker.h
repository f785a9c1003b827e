// Worker: the dtm-worker daemon's loop around one model replica, independent of how the replica
// runs tasks (TaskExecutor) and of how the coordinator is reached (a gRPC channel: TCP in dtm-worker,
// in-process in `dtmctl local`).
//
// Algorithm (worker_service.proto's protocol):
//   1. RegisterWorker with the replica's fingerprint, dtype, layers, device and capacity; retry with
//      backoff while the coordinator is away.
//   2. LeaseTasks (up to capacity, one request id per attempt, reused on retry); when none come, wait
//      idle_poll_interval_ms.
//   3. Run the leased tasks one after the other on the single replica; report each with CompleteTask
//      (or FailTask, with the failure's cause from the executor's code: INVALID_ARGUMENT is the
//      task's fault, FAILED_PRECONDITION and RESOURCE_EXHAUSTED this worker's, anything else
//      transient). A report that meets
//      UNAVAILABLE or DEADLINE_EXCEEDED is retried with backoff for report_retry_ms: the coordinator
//      may be restarting, and a result is content-addressed, so a late one is still worth giving.
//   4. Meanwhile a heartbeat thread renews the held leases every heartbeat_interval_ms. A lease the
//      coordinator calls CANCELLED or REVOKED has its work dropped (not run, or its result not
//      reported); EXPIRED and UNKNOWN leases are still reported, since the coordinator accepts a late
//      valid result.
//   5. Any reply with `reregister` set (the coordinator does not know this worker) makes the worker
//      register again and go on.
//   6. Drain(): stop leasing, finish and report the running task, return the leases not started with
//      DrainWorker; Run() then returns OK.
//
// Thread-safety: Run() is called once, on one thread; Drain() may be called from any thread, any
// time (before Run() too, which then returns at once). The executor is used by Run()'s thread only.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"
#include "common/version.h"
#include "dtm/v1/worker_service.grpc.pb.h"
#include "worker/task_executor.h"
#include "worker/worker_metrics.h"

namespace dtm {

struct WorkerOptions {
  std::string worker_id;
  std::string model_path;  // the --model folder, reported at registration
  int capacity = 1;        // tasks leased at once
  std::string version = kDtmVersion;
  int64_t rpc_timeout_ms = 10000;     // deadline of every RPC
  int64_t report_retry_ms = 300000;   // how long an undeliverable result is retried
  // Backoff while the coordinator is away: doubles from initial to max, each wait jittered by +-20%.
  int64_t initial_backoff_ms = 200;
  int64_t max_backoff_ms = 10000;
  // Logged (with the failures' count) when registration keeps failing with a transient error, as
  // what to check besides a coordinator that is down; e.g. for TLS, which certificates must match.
  // Empty: nothing to add.
  std::string connection_hint;
  // HOST:PORT where this worker's rendezvous store listens when it is a training gang's rank 0,
  // reported at registration; empty: it takes no train task.
  std::string gang_address;
  // --model-root (canonical) and how to load a model under it: when the coordinator asks an idle
  // worker to load another model (LeaseTasksResponse.load_model), the Worker checks that the path
  // resolves under the root, calls load_model, keeps the executor it returns and registers again
  // with it; the replaced executor is freed (the one the Worker was constructed with, by calling
  // release_initial_executor once), so a switch holds two replicas only while the new one loads.
  // Empty root: the worker never switches.
  std::string model_root;
  std::function<StatusOr<std::unique_ptr<TaskExecutor>>(const std::string& model_path)> load_model;
  std::function<void()> release_initial_executor;
  // Called on Run()'s or the heartbeat thread after each successful registration (e.g. to turn the
  // daemon's health to SERVING). Must not call back into the Worker.
  std::function<void()> on_registered;
};

class Worker {
 public:
  // `executor` and `metrics` (nullable) are not owned and must outlive the Worker.
  Worker(WorkerOptions options, std::shared_ptr<grpc::Channel> channel, TaskExecutor* executor,
         WorkerMetrics* metrics);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Registers, then leases -> executes -> reports until Drain(). Returns OK after a drain, or the
  // error of a registration the coordinator refused for good (e.g. PERMISSION_DENIED, an
  // incompatible version); transient errors are retried, not returned.
  Status Run();
  // Thread-safe; see the class comment.
  void Drain();

 private:
  using Clock = std::chrono::steady_clock;

  // A lease the worker holds, from LeaseTasks until its task is reported, dropped or drained.
  struct HeldLease {
    std::string task_id;
    std::string job_id;
    bool gang = false;           // a train task: one member of a gang the coordinator formed
    bool cancelled = false;      // the coordinator said CANCELLED or REVOKED, or forgot the gang: drop the work
    std::string drop_reason;     // why, in words, for the logs
    bool stale_logged = false;   // an EXPIRED/UNKNOWN state was logged once
    std::optional<dtm::v1::TaskProgress> progress;  // a train task's latest step, for the heartbeat
  };

  Status Loop();
  // Registers unless registered; OK when registered. `*generation` (if set) receives the current
  // registration generation.
  Status EnsureRegistered(uint64_t* generation = nullptr);
  // Forgets the registration a "not registered" reply was about, unless a newer one replaced it
  // meanwhile (so that a stale reply does not release the leases of a fresh registration). A gang
  // task held then stops: a coordinator that does not know this worker does not know its gang
  // either (it restarted, or it expired the worker and revoked the gang), and another gang may be
  // formed to resume the run from its checkpoint; this member must not write beside that one.
  void MarkUnregistered(uint64_t generation);
  uint64_t generation() const;

  // One LeaseTasks call, with request id reuse across retries; `*reregister` tells that the
  // coordinator does not know this worker (no tasks then), `*load_model` a model to switch to.
  StatusOr<std::vector<dtm::v1::Task>> Lease(bool* reregister, std::string* load_model);
  // The coordinator's load_model, on Run()'s thread while no task runs: the new replica and a new
  // registration, or the refusal sent with the next registration.
  void SwitchModel(const std::string& model_path);
  void RunTask(const dtm::v1::Task& task, Clock::time_point leased_at);
  TaskOutcome ReportCompletion(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request,
                               Clock::time_point leased_at);
  void ReportFailure(const dtm::v1::Task& task, const Status& error);
  // Gives the executor the calibration set the task's key names, fetched from the coordinator
  // (GetCalibrationSet) unless it holds it already. The status is the task's failure when not OK:
  // transient for a coordinator that cannot answer now, INVALID_ARGUMENT for a set that is not
  // what it claims or does not fit the model.
  Status EnsureCalibration(const dtm::v1::Task& task);
  void ReturnLeases();

  void HeartbeatLoop();
  void HeartbeatOnce(const std::vector<std::string>& lease_ids, uint64_t generation);

  bool IsCancelled(const std::string& lease_id) const;
  std::string DropReason(const std::string& lease_id) const;
  void ForgetLease(const std::string& lease_id);
  bool draining() const;
  // Waits `ms` or until Drain(); false when draining.
  bool WaitUnlessDraining(int64_t ms);
  int64_t Jittered(int64_t ms);
  int64_t NextBackoff(int64_t ms) const;
  std::string NewRequestId();
  void SetDeadline(grpc::ClientContext* context) const;
  void UpdateMemoryGauge();

  const WorkerOptions options_;
  std::unique_ptr<dtm::v1::WorkerService::Stub> stub_;
  // Replaced by SwitchModel under register_mu_ (registration reads it from the heartbeat thread too);
  // otherwise used by Run()'s thread only.
  TaskExecutor* executor_;
  std::unique_ptr<TaskExecutor> owned_executor_;  // the one SwitchModel loaded last, if any
  std::string model_path_;     // the folder executor_ serves; guarded by register_mu_
  std::string refused_path_;   // a load_model refused, reported at the next registration; guarded by register_mu_
  std::string refused_reason_;
  WorkerMetrics* const metrics_;

  // Serializes RegisterWorker calls of Run()'s and the heartbeat thread.
  std::mutex register_mu_;

  mutable std::mutex mu_;
  std::condition_variable wake_;  // Drain(), stop, registration
  bool draining_ = false;
  bool stopping_ = false;  // the heartbeat thread must exit
  bool registered_ = false;
  uint64_t generation_ = 0;  // incremented by every successful registration
  int64_t heartbeat_interval_ms_ = 5000;
  int64_t idle_poll_interval_ms_ = 500;
  std::map<std::string, HeldLease> held_;  // by lease id
  std::string lease_request_id_;  // of the LeaseTasks attempt to retry; empty: start a new one
  std::mt19937_64 rng_;
  uint64_t next_request_ = 0;

  std::thread heartbeat_thread_;
};

}  // namespace dtm
