#include "cli/embedded_coordinator.h"

#include <filesystem>
#include <system_error>

#include <grpcpp/grpcpp.h>

#include "common/grpc_security.h"
#include "common/store.h"
#include "common/store_url.h"
#include "common/xdg_dirs.h"

namespace dtm::cli {

StatusOr<std::string> DefaultLocalStoreUrl() {
  const std::optional<std::string> data = XdgDir("XDG_DATA_HOME", "/.local/share");
  if (!data) {
    return FailedPreconditionError("no XDG_DATA_HOME or HOME to keep the store in: name one with --store "
                                   "sqlite://PATH (or --store memory)");
  }
  return "sqlite://" + *data + "/dtm/local.sqlite";
}

CoordinatorOptions EmbeddedCoordinatorOptions(int64_t lease_timeout_ms) {
  CoordinatorOptions options;
  options.lease_timeout_ms = lease_timeout_ms;
  options.heartbeat_interval_ms = std::max<int64_t>(100, lease_timeout_ms / 6);
  options.idle_poll_interval_ms = 100;
  options.tick_ms = 100;
  options.data_root = "/";
  options.model_wait_ms = 0;
  return options;
}

StatusOr<std::unique_ptr<EmbeddedCoordinator>> EmbeddedCoordinator::Start(const std::string& store_url,
                                                                          const CoordinatorOptions& options,
                                                                          prometheus::Registry* registry) {
  if (StatusOr<std::string> path = SqlitePathOfUrl(store_url); path.ok()) {
    // The default store's folder does not exist on a fresh machine; a named one's usually does.
    const std::filesystem::path folder = std::filesystem::path(*path).parent_path();
    std::error_code error;
    if (!folder.empty()) std::filesystem::create_directories(folder, error);
    if (error) return UnavailableError("store " + store_url + ": cannot create " + folder.string() + ": " + error.message());
  }
  std::unique_ptr<EmbeddedCoordinator> embedded(new EmbeddedCoordinator());
  ASSIGN_OR_RETURN(embedded->store_, OpenStoreUrl(store_url));
  ASSIGN_OR_RETURN(embedded->coordinator_, Coordinator::Create(embedded->store_.get(), registry, options));
  RETURN_IF_ERROR(embedded->coordinator_->Start());
  grpc::ServerBuilder builder;
  int port = 0;
  RETURN_IF_ERROR(ConfigureServer(&builder, "127.0.0.1:0", ServerSecurityOptions{}, &port));
  builder.RegisterService(embedded->coordinator_->client_service());
  builder.RegisterService(embedded->coordinator_->worker_service());
  embedded->server_ = builder.BuildAndStart();
  if (!embedded->server_) return UnavailableError("cannot listen on 127.0.0.1");
  embedded->address_ = "127.0.0.1:" + std::to_string(port);
  return embedded;
}

EmbeddedCoordinator::~EmbeddedCoordinator() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (coordinator_) coordinator_->Stop();
}

}  // namespace dtm::cli
