// dtm-worker: one model replica that pulls shard tasks from dtm-coordinator (ARCHITECTURE "Processes").
//
// Exit codes: 0 after a drain (SIGTERM/SIGINT); 1 when the coordinator refuses the registration for
// good; 2 for bad flags, an unreadable model or a port that cannot be bound.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "common/command_line.h"
#include "common/grpc_security.h"
#include "common/health_service.h"
#include "common/logging.h"
#include "common/metrics_http_server.h"
#include "common/shutdown_signals.h"
#include "common/version.h"
#include "worker/task_executor.h"
#include "worker/worker.h"
#include "worker/worker_metrics.h"
#include "common/host_port.h"
#include "worker/engine/gang.h"
#include "worker/engine/host_allocator.h"
#include "worker/engine/tensor_util.h"

namespace {

struct Flags {
  std::string coordinator;
  std::string metrics_listen = "127.0.0.1:9101";
  std::string health_listen = "127.0.0.1:0";
  std::string log_level = "info";
  int threads = 0;
  int report_retry_s = 300;
  std::string gang_address = "127.0.0.1:0";
  std::string gang_bind;
  std::string model_root;
  dtm::EngineExecutorOptions engine;
  dtm::WorkerOptions worker;
  dtm::ClientSecurityOptions security;
};

// $HOSTNAME-pid: stable per pod (its name) and distinct for several workers on one host.
std::string DefaultWorkerId() {
  std::string host;
  if (const char* env = std::getenv("HOSTNAME"); env != nullptr && *env != '\0') {
    host = env;
  } else {
    char name[256] = {};
    host = gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? name : "worker";
  }
  return host + "-" + std::to_string(getpid());
}

// The standard health service on its own small plaintext server: kubelet and load-balancer probes
// carry no certificates, and the worker has no other server to put it on.
std::unique_ptr<grpc::Server> StartHealthServer(const std::string& address, dtm::HealthService* health, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port is an error, not shared
  builder.RegisterService(health);
  return builder.BuildAndStart();
}

int Run(Flags flags) {
  if (dtm::Status s = dtm::InitLogging(flags.log_level); !s.ok()) {
    std::fprintf(stderr, "dtm-worker: --log-level: %s\n", s.message().c_str());
    return 2;
  }
  // SIGTERM and SIGINT reach the drain logic below through a pipe (common/shutdown_signals.h).
  dtm::ShutdownSignals::Install();

  if (flags.worker.worker_id.empty()) flags.worker.worker_id = DefaultWorkerId();
  const std::string& id = flags.worker.worker_id;
  if (flags.threads > 0) torch::set_num_threads(flags.threads);
  if (flags.worker.capacity < 1) {
    spdlog::critical("dtm-worker: --capacity must be at least 1, got {}", flags.worker.capacity);
    return 2;
  }
  flags.worker.report_retry_ms = static_cast<int64_t>(flags.report_retry_s) * 1000;
  flags.worker.model_path = flags.engine.model_path;

  // Health and metrics first: a 70B model takes minutes to load, and probes should see NOT_SERVING
  // (not a refused connection) meanwhile.
  dtm::HealthService health;
  int health_port = 0;
  std::unique_ptr<grpc::Server> health_server;
  if (!flags.health_listen.empty()) {
    health_server = StartHealthServer(flags.health_listen, &health, &health_port);
    if (!health_server) {
      spdlog::critical("dtm-worker: --health-listen {}: cannot listen there", flags.health_listen);
      return 2;
    }
    if (!dtm::IsLoopbackAddress(flags.health_listen)) {
      spdlog::warn("dtm-worker: the health service on {} is reachable from other hosts", flags.health_listen);
    }
  }
  auto registry = std::make_shared<prometheus::Registry>();
  dtm::WorkerMetrics metrics(registry.get(), id);
  std::unique_ptr<dtm::MetricsHttpServer> metrics_server;
  if (!flags.metrics_listen.empty()) {
    auto server = dtm::MetricsHttpServer::Listen(registry, flags.metrics_listen);
    if (!server.ok()) {
      spdlog::critical("dtm-worker: --metrics-listen: {}", server.status().message());
      return 2;
    }
    metrics_server = std::move(server).value();
  }

  auto channel = dtm::MakeChannel(flags.coordinator, flags.security);
  if (!channel.ok()) {
    spdlog::critical("dtm-worker: --coordinator {}: {}", flags.coordinator, channel.status().message());
    return 2;
  }

  if (!flags.gang_address.empty()) {
    std::string host;
    int port = 0;
    if (!dtm::SplitHostPort(flags.gang_address, &host, &port)) {
      spdlog::critical("dtm-worker: --gang-address: expected HOST:PORT, got '{}'", flags.gang_address);
      return 2;
    }
    // Port 0: one this machine has free now (the gangs of one machine: tests, `dtmctl local`).
    if (port == 0 && (port = dtm::FreeLoopbackPort()) == 0) {
      spdlog::critical("dtm-worker: --gang-address {}: no free port found", flags.gang_address);
      return 2;
    }
    flags.gang_address = host + ":" + std::to_string(port);
    flags.engine.gang_bind_host = flags.gang_bind.empty() ? host : flags.gang_bind;
    flags.worker.gang_address = flags.gang_address;
  }
  spdlog::info("dtm-worker {}: loading model {} on {}", id, flags.engine.model_path, flags.engine.device);
  double load_seconds = 0;
  auto executor = dtm::CreateEngineExecutor(flags.engine, &load_seconds);
  if (!executor.ok()) {
    spdlog::critical("dtm-worker: {}", executor.status().ToString());
    return 2;
  }
  metrics.SetModelLoadSeconds(load_seconds);
  metrics.SetDeviceMemoryBytes((*executor)->device_memory_bytes());

  flags.worker.on_registered = [&health] { health.SetStatus("", true); };
  if (!flags.security.tls_ca_file.empty()) {
    // A TLS handshake the coordinator refuses shows here only as "Socket closed", like a coordinator that is down.
    flags.worker.connection_hint = "check that --tls-ca (" + flags.security.tls_ca_file +
                                   ") signed the coordinator's certificate" +
                                   (flags.security.tls_cert_file.empty()
                                        ? std::string()
                                        : " and that the coordinator's --tls-client-ca signed this worker's --tls-cert (" +
                                              flags.security.tls_cert_file + ")");
  }
  if (!flags.model_root.empty()) {
    std::error_code ec;
    const std::filesystem::path root = std::filesystem::canonical(flags.model_root, ec);
    if (ec || !std::filesystem::is_directory(root)) {
      spdlog::critical("dtm-worker: --model-root {}: {}", flags.model_root, ec ? ec.message() : "not a folder");
      return 2;
    }
    flags.worker.model_root = root.string();
    // Same device, precision and batch as the first model; the replica is freed when replaced.
    flags.worker.load_model = [engine = flags.engine, &metrics](const std::string& path)
        -> dtm::StatusOr<std::unique_ptr<dtm::TaskExecutor>> {
      dtm::EngineExecutorOptions options = engine;
      options.model_path = path;
      double seconds = 0;
      spdlog::info("dtm-worker: loading model {} (asked by the coordinator)", path);
      auto loaded = dtm::CreateEngineExecutor(options, &seconds);
      if (loaded.ok()) metrics.SetModelLoadSeconds(seconds);
      return loaded;
    };
    flags.worker.release_initial_executor = [&executor] { executor->reset(); };
  }
  dtm::Worker worker(flags.worker, *channel, executor->get(), &metrics);

  // First signal: drain (finish and report the running task). A second: leave at once.
  std::atomic<bool> finished{false};
  std::thread signal_thread([&] {
    int drains = 0;
    for (;;) {
      const int signal = dtm::ShutdownSignals::Wait();
      if (finished) return;
      if (drains++ == 0) {
        spdlog::info("dtm-worker {}: signal {}; draining", id, signal);
        health.SetStatus("", false);
        worker.Drain();
      } else {
        spdlog::warn("dtm-worker {}: second signal {}; exiting without finishing the running task", id, signal);
        spdlog::default_logger()->flush();
        std::_Exit(1);
      }
    }
  });

  // One line that scripts and tests wait for, with the ports actually bound.
  const dtm::v1::DeviceInfo device = (*executor)->device();
  spdlog::info("dtm-worker {} ready: model {} fingerprint {} dtype {} device {} layers {} loaded in {:.1f} s; "
               "coordinator {} capacity {}; metrics port {} health port {} gang address {}",
               id, flags.engine.model_path, (*executor)->model_fingerprint().substr(0, 12),
               dtm::v1::Dtype_Name((*executor)->dtype()), device.description(), (*executor)->num_layers(),
               load_seconds, flags.coordinator, flags.worker.capacity, metrics_server ? metrics_server->port() : 0,
               health_port, flags.gang_address.empty() ? "none" : flags.gang_address);

  const dtm::Status result = worker.Run();
  finished = true;
  dtm::ShutdownSignals::Wake();  // the signal thread sees `finished` and returns
  signal_thread.join();

  health.Shutdown();
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!result.ok()) {
    spdlog::critical("dtm-worker {}: {}", id, result.ToString());
    return 1;
  }
  spdlog::info("dtm-worker {}: drained; exiting", id);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dtm::TuneHostAllocator(argv);
  Flags flags;
  CLI::App app{"dtm-worker: evaluates dtm shard tasks on one model replica, pulled from dtm-coordinator"};
  app.add_option("--coordinator", flags.coordinator, "Coordinator gRPC address HOST:PORT")->required();
  app.add_option("--model", flags.engine.model_path, "Hugging Face Llama checkpoint folder")->required();
  app.add_option("--dtype", flags.engine.dtype, "float32, float16 or bfloat16 (default: the device's)");
  app.add_option("--device", flags.engine.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--worker-id", flags.worker.worker_id, "Stable id of this worker (default: $HOSTNAME-pid)");
  app.add_option("--capacity", flags.worker.capacity, "Tasks leased at once (they run one after the other)")
      ->capture_default_str();
  app.add_option("--batch-size", flags.engine.batch_size, "Sequences per forward pass")->capture_default_str();
  app.add_option("--activation-cache-bytes", flags.engine.activation_cache_bytes,
                 "Residual streams kept on the model's device for reuse by later configs of the same probes "
                 "(0: none; -1: a quarter of the device's free memory once the model is loaded)")
      ->capture_default_str();
  app.add_option("--activation-cache-every", flags.engine.activation_cache_every,
                 "Keep the streams of every k-th layer only (less memory; a config then starts at most k-1 layers lower)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--gang-address", flags.gang_address,
                 "HOST:PORT where the other members of a training gang reach this worker's rendezvous store when it is "
                 "rank 0 (port 0: a free one; '' takes no train task)")
      ->capture_default_str();
  app.add_option("--model-root", flags.model_root,
                 "A folder of models: the coordinator may ask this worker, when idle, to load another model under it "
                 "(one a job needs that no worker serves); paths outside it are refused. Default: serve --model only");
  app.add_option("--gang-bind", flags.gang_bind,
                 "Interface this worker's gang connections listen on (default: the host of --gang-address)");
  app.add_option("--threads", flags.threads, "CPU threads (0: libtorch's default)");
  app.add_option("--metrics-listen", flags.metrics_listen, "Prometheus /metrics HOST:PORT ('' disables)")
      ->capture_default_str();
  app.add_option("--health-listen", flags.health_listen, "grpc.health.v1 HOST:PORT, plaintext ('' disables)")
      ->capture_default_str();
  app.add_option("--report-retry-seconds", flags.report_retry_s,
                 "How long a result is retried while the coordinator is unavailable")
      ->capture_default_str();
  app.add_option("--rpc-timeout-ms", flags.worker.rpc_timeout_ms, "Deadline of each call to the coordinator")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn or error")->capture_default_str();
  dtm::AddClientSecurityFlags(&app, &flags.security);
  app.set_version_flag("--version", dtm::VersionText("dtm-worker", dtm::LibtorchBuildText()));
  if (std::optional<int> code = dtm::ParseCommandLine(app, argc, argv)) return *code;
  return Run(std::move(flags));
}
