// EmbeddedCoordinator: a coordinator inside dtmctl, on a store the user names, serving both its
// gRPC services on a free loopback port. `dtmctl local` runs its job on one; `dtmctl results | jobs
// | export-config | cancel | purge-worker --store URL` start one to read a store without a daemon.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/coordinator.h"

namespace grpc {
class Server;
}
namespace prometheus {
class Registry;
}

namespace dtm {
class Store;
}

namespace dtm::cli {

// The store `dtmctl local` keeps its jobs and results in unless --store says otherwise:
// sqlite://$XDG_DATA_HOME/dtm/local.sqlite, XDG_DATA_HOME defaulting to ~/.local/share.
// FAILED_PRECONDITION when neither XDG_DATA_HOME nor HOME is set.
StatusOr<std::string> DefaultLocalStoreUrl();

// CoordinatorOptions for a coordinator that serves one user on loopback: the user's own files
// (data root "/"), quick polls, and jobs that wait for a worker for ever (a store may hold a job
// of a model this process serves no worker for: it stays until a run that does).
CoordinatorOptions EmbeddedCoordinatorOptions(int64_t lease_timeout_ms);

class EmbeddedCoordinator {
 public:
  // Opens `store_url` (common/store_url.h; an sqlite:// file's folder is created when absent),
  // starts a coordinator on it, which resumes the unfinished jobs `options.resume_job` selects, and
  // listens on 127.0.0.1. `registry` (may be null) receives the coordinator's metrics and must outlive it.
  static StatusOr<std::unique_ptr<EmbeddedCoordinator>> Start(const std::string& store_url,
                                                              const CoordinatorOptions& options,
                                                              prometheus::Registry* registry);
  // Stops serving (calls in flight get 2 s) and the coordinator; the store keeps every job.
  ~EmbeddedCoordinator();
  EmbeddedCoordinator(const EmbeddedCoordinator&) = delete;
  EmbeddedCoordinator& operator=(const EmbeddedCoordinator&) = delete;

  // host:port of its services.
  const std::string& address() const { return address_; }
  Coordinator* coordinator() { return coordinator_.get(); }

 private:
  EmbeddedCoordinator() = default;

  std::unique_ptr<Store> store_;
  std::unique_ptr<Coordinator> coordinator_;  // declared after store_: destroyed before it
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace dtm::cli
