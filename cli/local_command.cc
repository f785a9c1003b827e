#include "cli/local_command.h"

#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "cli/results_format.h"
#include "common/grpc_security.h"
#include "common/in_memory_store.h"
#include "common/jsonl.h"
#include "common/metrics_http_server.h"
#include "common/redis_options.h"
#include "common/redis_store.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_spec.h"
#include "worker/task_executor.h"
#include "worker/worker.h"
#include "worker/worker_metrics.h"

namespace dtm::cli {
namespace {

// `what` prefixes the message unless it is empty (a message that names its flag or file itself).
int Fail(const Console& console, const std::string& what, const Status& status) {
  *console.err << "dtmctl local: " << (what.empty() ? "" : what + ": ") << status.message() << "\n";
  return status.code() == StatusCode::kUnavailable ? 3 : 2;
}

StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& redis) {
  if (redis.empty()) return std::unique_ptr<Store>(std::make_unique<InMemoryStore>());
  ASSIGN_OR_RETURN(RedisOptions options, ParseRedisUrl(redis));
  ASSIGN_OR_RETURN(std::unique_ptr<RedisStore> store, RedisStore::Connect(options));
  return std::unique_ptr<Store>(std::move(store));
}

// The spec file as the coordinator would take it: a regular file (a folder or /dev/zero is refused
// with the reason) of at most its default --max-spec-bytes.
StatusOr<std::string> ReadSpecFile(const std::string& path) {
  ReadLimits limits;
  limits.max_bytes = CoordinatorOptions().max_spec_bytes;
  limits.regular_file_only = true;
  return ReadTextFile(path, limits);
}

// The workers of this process, each on its own thread with its own replica.
class LocalWorkers {
 public:
  ~LocalWorkers() { DrainAndJoin(); }

  Status Start(const LocalOptions& options, const JobSpec& spec, const std::string& address,
               prometheus::Registry* registry) {
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(address, ClientSecurityOptions{}));
    for (int k = 0; k < options.workers; ++k) {
      EngineExecutorOptions engine;
      engine.model_path = spec.model;
      engine.dtype = spec.dtype.empty() ? options.dtype : spec.dtype;
      engine.device = options.device;
      engine.batch_size = options.batch_size;
      double load_seconds = 0;
      ASSIGN_OR_RETURN(std::unique_ptr<TaskExecutor> executor, CreateEngineExecutor(engine, &load_seconds));
      WorkerOptions worker_options;
      worker_options.worker_id = "local-" + std::to_string(k);
      worker_options.model_path = spec.model;
      auto metrics = registry ? std::make_unique<WorkerMetrics>(registry, worker_options.worker_id) : nullptr;
      if (metrics) metrics->SetModelLoadSeconds(load_seconds);
      auto worker = std::make_unique<Worker>(worker_options, channel, executor.get(), metrics.get());
      Worker* raw = worker.get();
      executors_.push_back(std::move(executor));
      metrics_.push_back(std::move(metrics));
      workers_.push_back(std::move(worker));
      threads_.emplace_back([raw] {
        Status status = raw->Run();
        if (!status.ok()) spdlog::error("local worker: {}", status.message());
      });
    }
    return OkStatus();
  }

  void DrainAndJoin() {
    for (auto& worker : workers_) worker->Drain();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    workers_.clear();
  }

 private:
  std::vector<std::unique_ptr<TaskExecutor>> executors_;
  std::vector<std::unique_ptr<WorkerMetrics>> metrics_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
};

}  // namespace

int LocalCommand(const LocalOptions& options, const Console& console) {
  // Everything checkable is checked before any model loads or any task runs.
  if (options.workers < 1) return Fail(console, "--workers", InvalidArgumentError("must be at least 1"));
  if (StatusOr<ResultsFormat> format = ParseResultsFormat(options.format); !format.ok()) {
    return Fail(console, "", format.status());  // "--format: unknown format ..."
  }
  if (options.threads < 0) return Fail(console, "--threads", InvalidArgumentError("must be at least 0"));
  if (options.threads > 0) at::set_num_threads(options.threads);
  StatusOr<std::string> yaml = ReadSpecFile(options.spec_path);
  if (!yaml.ok()) return Fail(console, "job spec", yaml.status());
  StatusOr<JobSpec> spec = ParseJobSpec(*yaml);
  if (!spec.ok()) return Fail(console, options.spec_path, spec.status());

  StatusOr<std::unique_ptr<Store>> store = OpenStore(options.redis);
  if (!store.ok()) return Fail(console, "store", store.status());
  auto registry = std::make_shared<prometheus::Registry>();
  CoordinatorOptions coordinator_options;
  coordinator_options.lease_timeout_ms = options.lease_timeout_ms;
  coordinator_options.heartbeat_interval_ms = std::max<int64_t>(100, options.lease_timeout_ms / 6);
  coordinator_options.idle_poll_interval_ms = 100;
  coordinator_options.tick_ms = 100;
  // The files are the user's own, read by the user's own process: no data root to keep them in.
  coordinator_options.data_root = "/";
  auto coordinator = Coordinator::Create(store->get(), registry.get(), coordinator_options);
  if (!coordinator.ok()) return Fail(console, "coordinator", coordinator.status());
  if (Status s = (*coordinator)->Start(); !s.ok()) return Fail(console, "coordinator", s);

  grpc::ServerBuilder builder;
  int port = 0;
  if (Status s = ConfigureServer(&builder, "127.0.0.1:0", ServerSecurityOptions{}, &port); !s.ok()) {
    return Fail(console, "coordinator", s);
  }
  builder.RegisterService((*coordinator)->client_service());
  builder.RegisterService((*coordinator)->worker_service());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return Fail(console, "coordinator", UnavailableError("cannot listen on 127.0.0.1"));
  const std::string address = "127.0.0.1:" + std::to_string(port);

  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!options.metrics_listen.empty()) {
    auto started = MetricsHttpServer::Listen(registry, options.metrics_listen);
    if (!started.ok()) return Fail(console, "--metrics-listen", started.status());
    metrics_server = std::move(started).value();
  }

  int code = 0;
  {
    LocalWorkers workers;
    if (Status s = workers.Start(options, *spec, address, registry.get()); !s.ok()) {
      server->Shutdown();
      return Fail(console, "worker", s);
    }
    // Submit and watch as `dtmctl submit --watch` would; the job id goes to stderr, so that stdout
    // holds nothing but the results (JSON and CSV stay parseable).
    std::ostringstream id_out;
    SubmitOptions submit;
    submit.connection.coordinator = address;
    submit.spec_path = options.spec_path;
    submit.watch = true;
    Console submit_console = console;
    submit_console.out = &id_out;
    code = SubmitCommand(submit, submit_console);
    std::string job_id = id_out.str();
    while (!job_id.empty() && (job_id.back() == '\n' || job_id.back() == '\r')) job_id.pop_back();
    if (!job_id.empty()) *console.err << "job " << job_id << "\n";
    if (code == 0) {
      ResultsOptions results;
      results.connection.coordinator = address;
      results.job_id = job_id;
      results.format = options.format;
      code = ResultsCommand(results, console);
    }
    workers.DrainAndJoin();
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  (*coordinator)->Stop();
  return code;
}

}  // namespace dtm::cli
