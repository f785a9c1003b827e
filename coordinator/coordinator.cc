#include "coordinator/coordinator.h"

#include "coordinator/scheduler.h"
#include "coordinator/services.h"

namespace dtm {

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(Store* store, prometheus::Registry* registry,
                                                           CoordinatorOptions options, const Clock* clock) {
  if (store == nullptr) return InvalidArgumentError("coordinator: no store");
  if (options.lease_timeout_ms <= 0 || options.heartbeat_interval_ms <= 0 || options.tick_ms <= 0 ||
      options.max_attempts <= 0) {
    return InvalidArgumentError("coordinator: lease timeout, heartbeat interval, tick and attempts must be positive");
  }
  if (options.heartbeat_interval_ms * 2 > options.lease_timeout_ms) {
    return InvalidArgumentError("coordinator: the lease timeout (" + std::to_string(options.lease_timeout_ms) +
                                " ms) must be at least twice the heartbeat interval (" +
                                std::to_string(options.heartbeat_interval_ms) + " ms)");
  }
  if (options.max_stage_tasks <= 0 || options.max_spec_bytes == 0 || options.max_file_bytes == 0 ||
      options.lease_retention_ms < 0 || options.affinity_wait_ms < 0) {
    return InvalidArgumentError("coordinator: the stage, spec and file limits must be positive");
  }
  static const SystemClock system_clock;
  auto metrics = registry ? std::make_unique<CoordinatorMetrics>(*registry) : nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler,
                   Scheduler::Create(store, metrics.get(), std::move(options), clock ? clock : &system_clock));
  std::unique_ptr<Coordinator> coordinator(new Coordinator(std::move(scheduler)));
  coordinator->metrics_ = std::move(metrics);
  return coordinator;
}

Coordinator::Coordinator(std::unique_ptr<Scheduler> scheduler)
    : scheduler_(std::move(scheduler)),
      client_service_(std::make_unique<DtmServiceImpl>(&scheduler_->client())),
      worker_service_(std::make_unique<WorkerServiceImpl>(&scheduler_->worker())) {}

Coordinator::~Coordinator() { Stop(); }

Status Coordinator::Start() { return scheduler_->Start(); }

void Coordinator::Stop() { scheduler_->Stop(); }

v1::DtmService::Service* Coordinator::client_service() { return client_service_.get(); }

v1::WorkerService::Service* Coordinator::worker_service() { return worker_service_.get(); }

}  // namespace dtm
