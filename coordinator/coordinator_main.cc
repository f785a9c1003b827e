// dtm-coordinator: the daemon that schedules jobs over workers (ARCHITECTURE "Processes").
#include <signal.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "common/grpc_security.h"
#include "common/health_service.h"
#include "common/command_line.h"
#include "common/logging.h"
#include "common/shutdown_signals.h"
#include "common/metrics_http_server.h"
#include "common/redis_options.h"
#include "common/redis_store.h"
#include "common/store_url.h"
#include "common/version.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_pages.h"
#include "coordinator/scheduler.h"

namespace {

// How long calls in flight may finish after SIGTERM.
constexpr int kShutdownGraceSeconds = 5;

struct Flags {
  std::string listen = "127.0.0.1:7070";
  // --store, or --redis (the older name, which takes the same URLs).
  std::string store = "redis://127.0.0.1:6379";
  std::string metrics_listen = "127.0.0.1:9100";
  std::string log_level = "info";
  int redis_wait_s = 30;
  int64_t model_wait_s = 600;
  dtm::CoordinatorOptions coordinator;
  dtm::ServerSecurityOptions security;
};

// Redis may start after the coordinator (a pod restart, a compose file): wait for it a while, then
// give up with the address in the message. An SQLite file is there or not: no wait.
dtm::StatusOr<std::unique_ptr<dtm::Store>> OpenStore(const Flags& flags) {
  if (flags.store == "memory") {
    spdlog::warn("store: in memory; jobs and results are lost when the coordinator stops");
  }
  if (flags.store.rfind("redis://", 0) != 0) return dtm::OpenStoreUrl(flags.store);
  ASSIGN_OR_RETURN(dtm::RedisOptions options, dtm::ParseRedisUrl(flags.store));
  // Probe with single attempts so that --redis-wait-seconds is the whole wait; the store that is
  // kept has the configured retries for the outages that come later.
  dtm::RedisOptions probe = options;
  probe.max_retries = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(flags.redis_wait_s);
  for (;;) {
    auto reachable = dtm::RedisStore::Connect(probe);
    if (reachable.ok()) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      return dtm::UnavailableError(reachable.status().message() + " (waited " + std::to_string(flags.redis_wait_s) +
                                   " s, --redis-wait-seconds)");
    }
    spdlog::warn("store: {}; retrying", reachable.status().message());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  auto store = dtm::RedisStore::Connect(options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<dtm::Store>(std::move(store).value());
}

int Run(const Flags& flags) {
  if (dtm::Status s = dtm::InitLogging(flags.log_level); !s.ok()) {
    std::fprintf(stderr, "dtm-coordinator: --log-level: %s\n", s.message().c_str());
    return 2;
  }
  // SIGTERM and SIGINT end the wait at the bottom (common/shutdown_signals.h).
  dtm::ShutdownSignals::Install();

  auto store = OpenStore(flags);
  if (!store.ok()) {
    spdlog::critical("dtm-coordinator: cannot open the store: {}", store.status().message());
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  // SERVING only while the store answers, so that a load balancer or kubelet sees an outage. The
  // scheduler thread reports the store's state; the services start SERVING once the port is up.
  dtm::HealthService health;
  std::mutex health_mu;
  bool listening = false;  // guarded by health_mu
  bool store_up = true;    // guarded by health_mu
  const auto set_health = [&health](bool serving) {
    for (const char* service : {"", "dtm.v1.DtmService", "dtm.v1.WorkerService"}) health.SetStatus(service, serving);
  };
  dtm::CoordinatorOptions options = flags.coordinator;
  options.model_wait_ms = flags.model_wait_s * 1000;
  options.on_store_reachable = [&](bool reachable) {
    std::lock_guard<std::mutex> lock(health_mu);
    store_up = reachable;
    if (listening) set_health(reachable);
  };
  auto coordinator = dtm::Coordinator::Create(store->get(), registry.get(), options);
  if (!coordinator.ok()) {
    spdlog::critical("dtm-coordinator: {}", coordinator.status().message());
    return 2;
  }
  if (dtm::Status s = (*coordinator)->Start(); !s.ok()) {
    spdlog::critical("dtm-coordinator: cannot load jobs from the store: {}", s.message());
    return 2;
  }

  std::unique_ptr<dtm::MetricsHttpServer> metrics;
  if (!flags.metrics_listen.empty()) {
    // The job pages need what the client API needs: its token, when there is one.
    std::string token;
    if (!flags.security.token_file.empty()) {
      auto read = dtm::ReadTokenFile(flags.security.token_file);
      if (!read.ok()) {
        spdlog::critical("dtm-coordinator: {}", read.status().message());
        return 2;
      }
      token = *read;
    }
    auto server = dtm::MetricsHttpServer::Listen(registry, flags.metrics_listen,
                                                 dtm::JobPages(&(*coordinator)->scheduler()->client(), token));
    if (!server.ok()) {
      spdlog::critical("dtm-coordinator: --metrics-listen: {}", server.status().message());
      return 2;
    }
    metrics = std::move(server).value();
  }

  grpc::ServerBuilder builder;
  int port = 0;
  if (dtm::Status s = dtm::ConfigureServer(&builder, flags.listen, flags.security, &port); !s.ok()) {
    spdlog::critical("dtm-coordinator: --listen {}: {}", flags.listen, s.message());
    return 2;
  }
  builder.RegisterService((*coordinator)->client_service());
  builder.RegisterService((*coordinator)->worker_service());
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    spdlog::critical("dtm-coordinator: --listen {}: cannot listen there (is another process on that port?)",
                     flags.listen);
    return 2;
  }
  {
    std::lock_guard<std::mutex> lock(health_mu);
    listening = true;
    set_health(store_up);
  }
  // One line that scripts and tests wait for, with the ports actually bound.
  spdlog::info("dtm-coordinator ready: grpc port {} metrics port {}", port, metrics ? metrics->port() : 0);

  const int signal = dtm::ShutdownSignals::Wait();
  spdlog::info("dtm-coordinator: signal {}; shutting down", signal);
  // The bound README promises: calls in flight get kShutdownGraceSeconds, then are cancelled; the
  // scheduler stops within one store command timeout. Every acknowledged job and result is in the
  // store already.
  health.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(kShutdownGraceSeconds));
  (*coordinator)->Stop();
  spdlog::info("dtm-coordinator: stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{"dtm-coordinator: schedules dtm jobs as shard tasks over workers"};
  app.add_option("--listen", flags.listen, "gRPC address (client and worker APIs)")->capture_default_str();
  CLI::Option* store = app.add_option("--store", flags.store,
                                      "redis://[:password@]host[:port][/db] (a cluster), sqlite://PATH (one box; one "
                                      "coordinator per file) or memory (nothing survives)")
                           ->capture_default_str();
  app.add_option("--redis", flags.store, "the same as --store (its older name)")->excludes(store);
  app.add_option("--redis-wait-seconds", flags.redis_wait_s, "How long to wait for Redis at start")
      ->capture_default_str();
  app.add_option("--metrics-listen", flags.metrics_listen, "HTTP HOST:PORT of Prometheus /metrics and the job pages /jobs and /jobs/ID ('' disables)")
      ->capture_default_str();
  app.add_option("--model-wait-seconds", flags.model_wait_s,
                 "How long a job waits for a worker serving its model before it fails (0: for ever)")
      ->capture_default_str();
  app.add_option("--lease-timeout-ms", flags.coordinator.lease_timeout_ms, "Lease length without a heartbeat")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", flags.coordinator.heartbeat_interval_ms, "Heartbeat interval asked of workers")
      ->capture_default_str();
  app.add_option("--affinity-wait-ms", flags.coordinator.affinity_wait_ms,
                 "How long an eval task whose shard's residual streams one worker keeps waits for it before any "
                 "worker gets it; a worker that would otherwise idle takes one sooner (0: no waiting)")
      ->capture_default_str();
  app.add_option("--max-attempts", flags.coordinator.max_attempts, "Attempts per task before its job fails")
      ->capture_default_str();
  app.add_option("--data-root", flags.coordinator.data_root,
                 "Folder under which the files job specs name (probes, a previous round) must lie; '/' admits any")
      ->capture_default_str();
  app.add_option("--max-file-bytes", flags.coordinator.max_file_bytes,
                 "Bytes read at most from one file a job spec names (after gunzip)")
      ->capture_default_str();
  app.add_option("--max-spec-bytes", flags.coordinator.max_spec_bytes, "Largest job spec accepted, in bytes")
      ->capture_default_str();
  app.add_option("--max-stage-tasks", flags.coordinator.max_stage_tasks,
                 "Tasks one stage of a job may plan (configs x shards); larger specs are refused at submit")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn or error")->capture_default_str();
  dtm::AddServerSecurityFlags(&app, &flags.security);
  app.set_version_flag("--version", dtm::VersionText("dtm-coordinator"));
  if (std::optional<int> code = dtm::ParseCommandLine(app, argc, argv)) return *code;
  return Run(flags);
}
