// MetricsHttpServer: serves a daemon's Prometheus metrics over HTTP.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"

namespace httplib {
class Server;
}
namespace prometheus {
class Registry;
}

namespace dtm {

// A GET request to one of the pages a daemon adds (below), and what it answers.
struct HttpRequest {
  std::string path;
  // The pattern's capture groups, in order (e.g. the job id of "/jobs/([^/]+)").
  std::vector<std::string> captures;
  // The Authorization header, "" when absent.
  std::string authorization;
};
struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};
// A page: GET requests whose whole path matches `pattern` (ECMAScript regex) go to `handler`, which
// runs on one of the server's threads (several at once) and must be thread-safe.
struct HttpPage {
  std::string pattern;
  std::function<HttpReply(const HttpRequest&)> handler;
};

// Serves GET /metrics (the registry in Prometheus text format 0.0.4) and GET /healthz ("ok") on its
// own thread, until destroyed, and the pages it is given (the coordinator's job pages); every other
// path is 404. It uses cpp-httplib rather than
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
                                                            const std::string& host, int port,
                                                            std::vector<HttpPage> pages = {});
  // Stops the server and joins its thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Start on a "HOST:PORT" address (a daemon's --metrics-listen); INVALID_ARGUMENT quoting it when it
  // is not one.
  static StatusOr<std::unique_ptr<MetricsHttpServer>> Listen(std::shared_ptr<prometheus::Registry> registry,
                                                             const std::string& address,
                                                             std::vector<HttpPage> pages = {});

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
