#include "cli/local_command.h"

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <memory>
#include <system_error>
#include <sstream>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "cli/results_format.h"
#include "common/grpc_security.h"
#include "common/jsonl.h"
#include "common/metrics_http_server.h"
#include "common/store_url.h"
#include "cli/embedded_coordinator.h"
#include "coordinator/client_api.h"
#include "coordinator/coordinator.h"
#include "coordinator/scheduler.h"
#include "coordinator/job_pages.h"
#include "coordinator/job_spec.h"
#include "worker/task_executor.h"
#include "worker/worker.h"
#include "worker/worker_metrics.h"
#include "worker/engine/gang.h"

namespace dtm::cli {
namespace {

// `what` prefixes the message unless it is empty (a message that names its flag or file itself).
int Fail(const Console& console, const std::string& what, const Status& status) {
  *console.err << "dtmctl local: " << (what.empty() ? "" : what + ": ") << status.message() << "\n";
  return status.code() == StatusCode::kUnavailable ? 3 : 2;
}

// The spec file as the coordinator would take it: a regular file (a folder or /dev/zero is refused
// with the reason) of at most its default --max-spec-bytes.
StatusOr<std::string> ReadSpecFile(const std::string& path) {
  ReadLimits limits;
  limits.max_bytes = CoordinatorOptions().max_spec_bytes;
  limits.regular_file_only = true;
  return ReadTextFile(path, limits);
}

// Whether `job` is this run's: its spec is `spec_yaml`, byte for byte. The one rule both for which
// stored job the coordinator resumes and for which one this run then watches.
bool IsThisSpecsJob(const v1::Job& job, const std::string& spec_yaml) { return job.spec_yaml() == spec_yaml; }

// The id of an unfinished (pending or running) job of this spec in the store; "" when there is none.
StatusOr<std::string> FindUnfinishedJob(ClientApi* client, const std::string& spec_yaml) {
  v1::ListJobsRequest request;
  request.add_states(v1::JOB_STATE_PENDING);
  request.add_states(v1::JOB_STATE_RUNNING);
  while (true) {
    ASSIGN_OR_RETURN(v1::ListJobsResponse page, client->ListJobs(request));
    for (const v1::Job& listed : page.jobs()) {
      // A page carries no specs: the job itself does.
      ASSIGN_OR_RETURN(v1::Job job, client->GetJob(listed.job_id()));
      if (IsThisSpecsJob(job, spec_yaml)) return job.job_id();
    }
    if (page.next_page_token().empty()) return std::string();
    request.set_page_token(page.next_page_token());
  }
}

// The sum over this process's workers of a family of `registry` (0 when absent): counters' and
// gauges' values, histograms' sums of observations.
double SumFamily(prometheus::Registry& registry, const std::string& family) {
  double sum = 0;
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != family) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      sum += f.type == prometheus::MetricType::Histogram ? m.histogram.sample_sum
             : f.type == prometheus::MetricType::Gauge   ? m.gauge.value
                                                         : m.counter.value;
    }
  }
  return sum;
}

// Where this command's time went, on stderr: the workers' engine time (tasks as they measured them,
// and loading their models) against the command's wall time; the rest is start-up, planning, the
// store, gRPC and waiting. With K workers the engine time can exceed the wall time up to K times.
void PrintTime(prometheus::Registry& registry, double wall_seconds, const Console& console) {
  std::ostringstream line;
  line << std::fixed << std::setprecision(2) << "time: " << wall_seconds << " s in this command; its workers "
       << "ran tasks for " << SumFamily(registry, "dtm_worker_task_duration_seconds")
       << " s and loaded models for " << SumFamily(registry, "dtm_worker_model_load_seconds") << " s\n";
  *console.err << line.str();
}

// What reused residual streams saved this run (worker/engine/activation_cache.h), on stderr: the
// share of decoder-layer forwards that did not run.
void PrintLayerForwards(prometheus::Registry& registry, const Console& console) {
  const double computed = SumFamily(registry, "dtm_worker_layer_forwards_total");
  const double full = SumFamily(registry, "dtm_worker_full_layer_forwards_total");
  if (full <= 0) return;
  std::ostringstream line;
  line << "layer forwards: " << static_cast<uint64_t>(computed) << " run, " << static_cast<uint64_t>(full)
       << " in full forwards (" << std::fixed << std::setprecision(1) << 100.0 * (1.0 - computed / full)
       << "% saved by reused streams; " << static_cast<uint64_t>(SumFamily(registry, "dtm_worker_activation_cache_hits_total"))
       << " batches started from a kept stream, "
       << static_cast<uint64_t>(SumFamily(registry, "dtm_worker_activation_cache_misses_total"))
       << " from the embedding)\n";
  *console.err << line.str();
}

// The workers of this process, each on its own thread with its own replica.
class LocalWorkers {
 public:
  ~LocalWorkers() { DrainAndJoin(); }

  Status Start(const LocalOptions& options, const JobSpec& spec, const std::string& address,
               prometheus::Registry* registry) {
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(address, ClientSecurityOptions{}));
    // With `reference:`, as many workers again serve the reference (its baseline and noise floor):
    // two replicas in memory per worker pair, e.g. 2 x 13.5 GB for Llama-2-7B in bfloat16.
    std::vector<std::pair<std::string, std::string>> served = {{spec.model, "local-"}};
    if (!spec.reference.empty() && spec.reference != spec.model) served.emplace_back(spec.reference, "local-reference-");
    // A train job's gang: `train.workers` of them in this process, meeting over loopback (Gloo),
    // each with its serving replica and, while it trains, a float32 copy with AdamW's state.
    const bool trains = spec.kind == JobKind::kTrain || spec.kind == JobKind::kSparsify;
    const int per_model = trains ? std::max(options.workers, static_cast<int>(spec.train.workers)) : options.workers;
    // A sparsify run's rounds write models under its output, which its stage jobs then name: the
    // workers load them there as --model-root workers do (one replica each, swapped).
    std::string model_root;
    if (spec.kind == JobKind::kSparsify) {
      std::error_code ec;
      std::filesystem::create_directories(spec.sparsify_output, ec);
      model_root = std::filesystem::canonical(spec.sparsify_output, ec).string();
      if (ec) return InvalidArgumentError("sparsify.output: " + spec.sparsify_output + ": " + ec.message());
    }
    for (int k = 0; k < per_model * static_cast<int>(served.size()); ++k) {
      const auto& [model_path, id_prefix] = served[k / per_model];
      EngineExecutorOptions engine;
      engine.model_path = model_path;
      engine.dtype = spec.dtype.empty() ? options.dtype : spec.dtype;
      engine.device = options.device;
      engine.batch_size = options.batch_size;
      engine.activation_cache_bytes = options.activation_cache_bytes;
      engine.activation_cache_every = options.activation_cache_every;
      engine.activation_cache_sharers = options.workers;
      double load_seconds = 0;
      ASSIGN_OR_RETURN(std::unique_ptr<TaskExecutor> executor, CreateEngineExecutor(engine, &load_seconds));
      WorkerOptions worker_options;
      worker_options.worker_id = id_prefix + std::to_string(k % per_model);
      worker_options.model_path = model_path;
      if (!model_root.empty()) {
        worker_options.model_root = model_root;
        worker_options.load_model = [engine](const std::string& path) -> StatusOr<std::unique_ptr<TaskExecutor>> {
          EngineExecutorOptions switched = engine;
          switched.model_path = path;
          double seconds = 0;
          return CreateEngineExecutor(switched, &seconds);
        };
        const size_t slot = executors_.size();  // where this worker's first executor goes, below
        worker_options.release_initial_executor = [this, slot] { executors_[slot].reset(); };
      }
      if (trains) {
        const int port = FreeLoopbackPort();
        if (port == 0) return UnavailableError("no free loopback port for a gang member's rendezvous");
        worker_options.gang_address = "127.0.0.1:" + std::to_string(port);
      }
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
  const auto started = std::chrono::steady_clock::now();
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

  std::string store_url = options.store;
  if (store_url.empty()) {
    StatusOr<std::string> url = DefaultLocalStoreUrl();
    if (!url.ok()) return Fail(console, "--store", url.status());
    store_url = *url;
  } else if (StatusOr<std::string> path = SqlitePathOfUrl(store_url); path.ok()) {
    store_url = "sqlite://" + std::filesystem::absolute(*path).string();
  }
  // Relative paths in the spec name files beside it, so that an example runs from any folder: the
  // process works from the spec's folder (after the command line's own paths were made absolute).
  // `submit` cannot do this: its spec's paths are the cluster's.
  const std::string spec_path = std::filesystem::absolute(options.spec_path).string();
  const std::string report_path =
      options.report.empty() || options.report == "-" ? options.report : std::filesystem::absolute(options.report).string();
  std::error_code error;
  std::filesystem::current_path(std::filesystem::path(spec_path).parent_path(), error);
  if (error) return Fail(console, "job spec", UnavailableError("cannot work from its folder: " + error.message()));
  auto registry = std::make_shared<prometheus::Registry>();
  CoordinatorOptions coordinator_options = EmbeddedCoordinatorOptions(options.lease_timeout_ms);
  // Only this spec's unfinished job is resumed (below): the store's others are other specs', whose
  // relative paths and model this process does not serve; they stay as stored for their own runs.
  coordinator_options.resume_job = [spec_yaml = *yaml](const v1::Job& job) { return IsThisSpecsJob(job, spec_yaml); };
  StatusOr<std::unique_ptr<EmbeddedCoordinator>> embedded =
      EmbeddedCoordinator::Start(store_url, coordinator_options, registry.get());
  if (!embedded.ok()) return Fail(console, "store", embedded.status());
  const std::string address = (*embedded)->address();

  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!options.metrics_listen.empty()) {
    auto started = MetricsHttpServer::Listen(registry, options.metrics_listen,
                                             JobPages(&(*embedded)->coordinator()->scheduler()->client(), ""));
    if (!started.ok()) return Fail(console, "--metrics-listen", started.status());
    metrics_server = std::move(started).value();
  }

  int code = 0;
  bool ran_job = false;
  {
    LocalWorkers workers;
    if (Status s = workers.Start(options, *spec, address, registry.get()); !s.ok()) {
      return Fail(console, "worker", s);
    }
    // A job of this very spec that a killed run left unfinished is resumed, not submitted again:
    // its finished tasks are in the store and are not computed again.
    StatusOr<std::string> unfinished = FindUnfinishedJob(&(*embedded)->coordinator()->scheduler()->client(), *yaml);
    if (!unfinished.ok()) {
      workers.DrainAndJoin();
      return Fail(console, "store", unfinished.status());
    }
    std::string job_id = *unfinished;
    if (!job_id.empty()) {
      *console.err << "dtmctl local: resuming job " << job_id << " of this spec, left unfinished in " << store_url
                   << "\n";
      WatchOptions watch;
      watch.connection.coordinator = address;
      watch.job_id = job_id;
      code = WatchCommand(watch, console);
    } else {
      // Submit and watch as `dtmctl submit --watch` would; the job id goes to stderr, so that stdout
      // holds nothing but the results (JSON and CSV stay parseable).
      std::ostringstream id_out;
      SubmitOptions submit;
      submit.connection.coordinator = address;
      submit.spec_path = spec_path;
      submit.watch = true;
      Console submit_console = console;
      submit_console.out = &id_out;
      code = SubmitCommand(submit, submit_console);
      job_id = id_out.str();
      while (!job_id.empty() && (job_id.back() == '\n' || job_id.back() == '\r')) job_id.pop_back();
      if (!job_id.empty()) *console.err << "job " << job_id << " (kept in " << store_url << ")\n";
    }
    ran_job = !job_id.empty();
    if (!job_id.empty()) {
      // A failed job's finished results are shown too (the exit code stays the failure's).
      ResultsOptions results;
      results.connection.coordinator = address;
      results.job_id = job_id;
      results.format = options.format;
      results.partial = code != 0;
      const int results_code = ResultsCommand(results, console);
      if (code == 0) code = results_code;
      if (!report_path.empty()) {
        ReportOptions report;
        report.connection.coordinator = address;
        report.job_id = job_id;
        report.out = report_path;
        const int report_code = ReportCommand(report, console);
        if (code == 0) code = report_code;
      }
    }
    workers.DrainAndJoin();
  }
  PrintLayerForwards(*registry, console);
  // Only after a job ran: a spec refused at submission gets its one error line and nothing else.
  if (ran_job) {
    PrintTime(*registry, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), console);
  }
  return code;
}

}  // namespace dtm::cli
