// MetricsHttpServer: serves a daemon's Prometheus metrics over HTTP.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace httplib {
class Server;
}
namespace prometheus {
class Registry;
}

namespace dtm {

// Serves GET /metrics (the registry in Prometheus text format 0.0.4) and GET /healthz ("ok") on its
// own thread, until destroyed; every other path is 404. It uses cpp-httplib rather than
// prometheus-cpp's Exposer because the Exposer's civetweb cannot start in a process that has loaded
// libtorch and OpenBLAS (the worker).
//
// Thread-safety: the registry is collected on the server's thread while the daemon updates its
// metrics on others, which prometheus-cpp allows. The object itself is created and destroyed by
// one thread.
class MetricsHttpServer {
 public:
  // Binds host:port (port 0: a free port, see port()) before returning, so that a bind failure is
  // an error here (UNAVAILABLE naming host:port), not on the server's thread.
  static StatusOr<std::unique_ptr<MetricsHttpServer>> Start(std::shared_ptr<prometheus::Registry> registry,
                                                            const std::string& host, int port);
  // Stops the server and joins its thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Start on a "HOST:PORT" address (a daemon's --metrics-listen); INVALID_ARGUMENT quoting it when it
  // is not one.
  static StatusOr<std::unique_ptr<MetricsHttpServer>> Listen(std::shared_ptr<prometheus::Registry> registry,
                                                             const std::string& address);

  // The port bound, the chosen one when Start was given 0.
  int port() const { return port_; }

 private:
  MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry, std::unique_ptr<httplib::Server> server);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace dtm
