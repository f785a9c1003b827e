// Coordinator: the dtm-coordinator daemon's state and its two gRPC services, independent of how it
// is served (a TCP port in dtm-coordinator, an in-process channel in `dtmctl local`).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "dtm/v1/dtm_service.grpc.pb.h"
#include "dtm/v1/worker_service.grpc.pb.h"

namespace prometheus {
class Registry;
}

namespace dtm {

class Clock;
class Store;

struct CoordinatorOptions {
  // A worker's lease ends this long after its last heartbeat; its tasks then run elsewhere.
  int64_t lease_timeout_ms = 30000;
  int64_t heartbeat_interval_ms = 5000;
  // How long a worker waits before asking again after an empty LeaseTasks reply.
  int64_t idle_poll_interval_ms = 500;
  // Shard affinity (coordinator/shard_affinity.h): how long an eval task whose shard's residual
  // streams another worker keeps waits for that worker before any worker gets it (a worker that
  // would otherwise idle takes one sooner). 0: no waiting.
  int64_t affinity_wait_ms = 2000;
  // Attempts per task (lease expiries and retryable failures) before its job fails.
  int max_attempts = 5;
  // How often the scheduler advances jobs and expires leases when nothing wakes it sooner.
  int64_t tick_ms = 200;
  // Names this coordinator's leases; a fresh one per start when empty.
  std::string instance_id;
  // Whether a model folder's config.json may be read (when it lies under the data root) to check a
  // job's components at submit before any worker serving the model has registered.
  bool read_model_configs = true;
  // A job whose model no registered worker serves fails after waiting this long (0: waits forever),
  // so that a path the workers cannot read ends in an error instead of a job pending for ever. A
  // task that every registered worker of its pool said it cannot run fails after as long.
  int64_t model_wait_ms = 600000;

  // Bounds on what a client may make the coordinator read, hold and answer (README "Limits"):
  // files a job spec names (probes, a previous round) must be regular files under `data_root`
  // ("/" admits every path) of at most `max_file_bytes` after gunzip;
  std::string data_root = ".";
  uint64_t max_file_bytes = uint64_t{256} << 20;
  // a spec is at most `max_spec_bytes`;
  uint64_t max_spec_bytes = 1 << 20;
  // one stage of a job plans at most `max_stage_tasks` tasks (configs x shards, the noise floor
  // included; the baseline is one stage of shards): a spec whose stages could exceed it is refused.
  int64_t max_stage_tasks = 100000;
  // How long finished tasks and ended leases are remembered, to answer late reports precisely.
  int64_t lease_retention_ms = 300000;
  // Which unfinished jobs found in the store at Start() this coordinator resumes; the others stay
  // as stored, readable and cancellable but never advanced (their files are not even read). Unset:
  // all. `dtmctl local` resumes only its own spec's job (its workers serve that model alone, from
  // that spec's folder); `dtmctl results --store` none (it has no workers).
  std::function<bool(const dtm::v1::Job&)> resume_job;
  // Called on the scheduler thread when the store stops answering (false) and answers again (true),
  // e.g. to turn the daemon's health to NOT_SERVING. Must not call into the coordinator.
  std::function<void(bool reachable)> on_store_reachable;
};

class CoordinatorMetrics;
class Scheduler;

class Coordinator {
 public:
  // `store` holds the durable job state and the result cache (Redis, or in memory for `dtmctl
  // local`); `registry` receives the coordinator's metrics (may be null). Neither is owned; both
  // must outlive the coordinator. Unfinished jobs found in the store are resumed by Start().
  static StatusOr<std::unique_ptr<Coordinator>> Create(Store* store, prometheus::Registry* registry,
                                                       CoordinatorOptions options, const Clock* clock = nullptr);
  ~Coordinator();

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Loads the jobs from the store and starts the scheduler thread, which resumes the unfinished
  // ones. UNAVAILABLE when the store cannot be reached.
  Status Start();
  // Stops the scheduler thread within about one store command timeout, whatever the store does;
  // jobs stay in the store, to be resumed by the next Start().
  void Stop();

  dtm::v1::DtmService::Service* client_service();
  dtm::v1::WorkerService::Service* worker_service();
  // The scheduler behind both services, for benchmarks and tests that call it without gRPC.
  Scheduler* scheduler() { return scheduler_.get(); }

 private:
  explicit Coordinator(std::unique_ptr<Scheduler> scheduler);

  std::unique_ptr<CoordinatorMetrics> metrics_;  // declared first: the scheduler uses it
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<dtm::v1::DtmService::Service> client_service_;
  std::unique_ptr<dtm::v1::WorkerService::Service> worker_service_;
};

}  // namespace dtm
