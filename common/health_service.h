// HealthService: the standard gRPC health protocol (grpc.health.v1.Health) as a service each daemon
// registers on its gRPC server, so that Kubernetes probes and load balancers see whether it serves.
//
// We register our own rather than rely on grpc::EnableDefaultHealthCheckService: a gRPC 1.51 server
// with no registered service refuses to start and the built-in health service does not count, so the
// worker's health-only server needs a real one; and the daemons want Watch to end on shutdown.
//
// Protocol (https://github.com/grpc/grpc/blob/master/doc/health-checking.md): "" is the server's
// overall status; a service never given a status is NOT_FOUND in Check and SERVICE_UNKNOWN in Watch;
// Watch sends the current status at once and then every change, until the call is cancelled or the
// service shuts down.
//
// Thread-safe: SetStatus and Shutdown may be called from any thread while calls are served.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"

namespace dtm {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  // The overall status "" starts NOT_SERVING: a daemon says SERVING once it can do its work.
  HealthService();
  ~HealthService() override;

  // Sets `service_name` ("" for the whole server) to SERVING or NOT_SERVING and wakes its watchers.
  // Ignored after Shutdown(), so that a late update cannot revive a server on its way down.
  void SetStatus(const std::string& service_name, bool serving);

  // Every known service becomes NOT_SERVING for good and every Watch call ends (after sending that
  // change), so that grpc::Server::Shutdown does not wait on open watches.
  void Shutdown();

  grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  ServingStatus StatusOf(const std::string& service_name) const;  // requires mu_

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, ServingStatus> statuses_;
  bool shutdown_ = false;
};

}  // namespace dtm
