#include "common/health_service.h"

#include <chrono>

namespace dtm {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// A sync handler cannot be woken by the call's cancellation, so an idle Watch looks at
// IsCancelled() this often; it is woken at once by status changes and Shutdown().
constexpr std::chrono::milliseconds kCancelPollInterval(100);

}  // namespace

HealthService::HealthService() { statuses_[""] = HealthCheckResponse::NOT_SERVING; }

HealthService::~HealthService() { Shutdown(); }

void HealthService::SetStatus(const std::string& service_name, bool serving) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    statuses_[service_name] = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  }
  changed_.notify_all();
}

void HealthService::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
    for (auto& [name, status] : statuses_) status = HealthCheckResponse::NOT_SERVING;
  }
  changed_.notify_all();
}

HealthService::ServingStatus HealthService::StatusOf(const std::string& service_name) const {
  auto it = statuses_.find(service_name);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

grpc::Status HealthService::Check(grpc::ServerContext* /*context*/, const HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  const ServingStatus status = StatusOf(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'");
  }
  response->set_status(status);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context, const HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  std::unique_lock<std::mutex> lock(mu_);
  bool sent_any = false;
  ServingStatus last_sent = HealthCheckResponse::UNKNOWN;
  while (true) {
    const ServingStatus status = StatusOf(request->service());
    if (!sent_any || status != last_sent) {
      HealthCheckResponse response;
      response.set_status(status);
      lock.unlock();  // a slow client must not block SetStatus
      const bool written = writer->Write(response);
      lock.lock();
      if (!written) return grpc::Status(grpc::StatusCode::CANCELLED, "health watcher went away");
      sent_any = true;
      last_sent = status;
      continue;  // the status may have changed while writing
    }
    if (shutdown_) return grpc::Status::OK;
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "health watch cancelled");
    changed_.wait_for(lock, kCancelPollInterval);
  }
}

}  // namespace dtm
