#include "common/metrics_http_server.h"

#include "common/host_port.h"

#include <httplib.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>
#include <utility>

namespace dtm {

namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr auto kStartTimeout = std::chrono::seconds(5);
// httplib serves each connection on a pool thread until the client is done with it. Its defaults (8
// threads, idle connections kept 5 s) let 8 clients that connect and send nothing starve every
// scrape; with these, 31 such clients still leave a thread, and each is dropped within 2 s.
constexpr size_t kServerThreads = 32;
constexpr time_t kIdleTimeoutSeconds = 2;

}  // namespace

MetricsHttpServer::MetricsHttpServer(std::shared_ptr<prometheus::Registry> registry,
                                     std::unique_ptr<httplib::Server> server)
    : registry_(std::move(registry)), server_(std::move(server)) {}

StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Listen(
    std::shared_ptr<prometheus::Registry> registry, const std::string& address, std::vector<HttpPage> pages) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(address, &host, &port)) return InvalidArgumentError("'" + address + "' is not HOST:PORT");
  // ":9100" would bind every interface without saying so: every interface must be asked for.
  if (host.empty()) {
    return InvalidArgumentError("'" + address + "' names no host: use 127.0.0.1:PORT, or 0.0.0.0:PORT for every interface");
  }
  return Start(std::move(registry), host, port, std::move(pages));
}

StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    std::shared_ptr<prometheus::Registry> registry, const std::string& host, int port, std::vector<HttpPage> pages) {
  if (registry == nullptr) return InvalidArgumentError("MetricsHttpServer needs a registry");
  if (port < 0 || port > 65535)
    return InvalidArgumentError("metrics port " + std::to_string(port) + " is not in 0..65535");
  std::unique_ptr<MetricsHttpServer> metrics(
      new MetricsHttpServer(std::move(registry), std::make_unique<httplib::Server>()));
  httplib::Server& server = *metrics->server_;
  // The handlers run on the server's thread and read only the registry, which outlives them.
  prometheus::Registry* collectable = metrics->registry_.get();
  server.Get("/metrics", [collectable](const httplib::Request&, httplib::Response& response) {
    response.set_content(prometheus::TextSerializer().Serialize(collectable->Collect()), kMetricsContentType);
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok", "text/plain");
  });
  for (HttpPage& page : pages) {
    server.Get(page.pattern, [handler = std::move(page.handler)](const httplib::Request& request,
                                                               httplib::Response& response) {
      HttpRequest in;
      in.path = request.path;
      for (size_t i = 1; i < request.matches.size(); ++i) in.captures.push_back(request.matches[i].str());
      in.authorization = request.get_header_value("Authorization");
      const HttpReply out = handler(in);
      response.status = out.status;
      for (const auto& [name, value] : out.headers) response.set_header(name, value);
      response.set_content(out.body, out.content_type);
    });
  }
  server.new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
  server.set_read_timeout(kIdleTimeoutSeconds, 0);
  server.set_keep_alive_timeout(kIdleTimeoutSeconds);

  // httplib's default is SO_REUSEPORT, with which a second daemon on the same port would bind too
  // and silently take half the scrapes; SO_REUSEADDR alone still allows a quick restart.
  server.set_socket_options([](socket_t socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });

  const std::string address = host + ":" + std::to_string(port);
  const int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return UnavailableError("metrics server cannot bind " + address);
  metrics->port_ = bound;
  if (host != "127.0.0.1" && host != "localhost" && host != "::1") {
    spdlog::warn("metrics: /metrics on {}:{} is reachable from other hosts", host, bound);
  }
  metrics->thread_ = std::thread([&server] { server.listen_after_bind(); });
  // stop() is a no-op on a server that is not yet running, so the destructor could otherwise
  // join a thread that goes on to listen forever.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (!server.is_running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return UnavailableError("metrics server on " + address + " did not start listening");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return metrics;
}

MetricsHttpServer::~MetricsHttpServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dtm
