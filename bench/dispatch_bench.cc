// Dispatch benchmark: the coordinator's own cost per task, with no model and no network. N simulated
// workers (threads calling the Scheduler directly, as the gRPC handlers do) lease one task at a time
// and "evaluate" it instantly with synthetic outputs, so that the wall time of a job is the
// scheduler's: planning, leasing, validating and storing results, advancing stages. Runs on an
// in-memory store, or on the one --store names (Redis, an SQLite file). Prints one table row per
// worker count; never a timed test.
//
//   dispatch_bench [--workers 1,4,16] [--layers 32] [--methods int8-absmax,prune:0.5] [--probes 1000]
//                  [--shard-size 50] [--prefix 100] [--completion 500] [--store memory|redis://..|sqlite://..]
//                  [--idle-poll-us 1000] [--log-level warn]
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <prometheus/registry.h>

#include "common/logging.h"
#include "common/probe_file.h"
#include "common/store_url.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator_metrics.h"
#include "common/version.h"
#include "coordinator/scheduler.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

struct BenchOptions {
  std::vector<int> workers = {1, 4, 16};
  int layers = 32;
  std::vector<std::string> methods = {"int8-absmax", "prune:0.5"};
  int probes = 1000;
  int shard_size = 50;
  int prefix = 100;
  int completion = 500;
  std::string store = "memory";  // a --store URL (common/store_url.h)
  // How long a worker waits after an empty lease reply. Real workers wait 500 ms; here a short wait,
  // so that the gaps between stages measure the scheduler rather than the poll interval.
  int idle_poll_us = 1000;
  std::string log_level = "warn";  // info logs a line per task, as the daemon does by default
};

struct RunResult {
  int workers = 0;
  int64_t tasks = 0;        // tasks leased and completed
  int64_t empty_polls = 0;  // lease replies without a task
  double wall_s = 0;        // submit to SUCCEEDED
  std::vector<double> lease_us, complete_us, pair_us;
};

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "dispatch_bench: error: %s\n", message.c_str());
  std::exit(1);
}

void Check(const Status& status, const std::string& what) {
  if (!status.ok()) Fail(what + ": " + status.ToString());
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t at = std::min(values.size() - 1, static_cast<size_t>(q * static_cast<double>(values.size())));
  return values[at];
}

double MicrosSince(Steady::time_point start) {
  return std::chrono::duration<double, std::micro>(Steady::now() - start).count();
}

// A model folder with just config.json, and a probe file of `probes` distinct probes; the folder name
// is unique per run, so that jobs of earlier runs in a shared Redis never match this run's workers.
struct Inputs {
  fs::path dir;
  std::string model_dir;
  std::string probes_path;
  std::string fingerprint;
};

Inputs MakeInputs(const BenchOptions& o, int run) {
  std::string tmpl = (fs::temp_directory_path() / "dtm-dispatch-bench-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) Fail("cannot create a temporary folder under " + tmpl);
  Inputs in;
  in.dir = tmpl;
  in.model_dir = (in.dir / "model").string();
  fs::create_directories(in.model_dir);
  std::ofstream(fs::path(in.model_dir) / "config.json") << "{\"num_hidden_layers\": " << o.layers << "}";
  ProbeSet set;
  for (int p = 0; p < o.probes; ++p) {
    Probe probe;
    probe.id = "probe-" + std::to_string(p);
    for (int k = 0; k < o.prefix; ++k) probe.tokens.push_back((p * 31 + k * 7) % 32000);
    set.probes.push_back(std::move(probe));
  }
  in.probes_path = (in.dir / "probes.jsonl").string();
  Check(WriteProbeFile(in.probes_path, set), "writing " + in.probes_path);
  // Unique per run: every run computes everything, even against a Redis holding earlier runs' results.
  in.fingerprint = "bench-" + std::to_string(std::random_device{}()) + "-" + std::to_string(run);
  return in;
}

std::string Spec(const BenchOptions& o, const Inputs& in) {
  std::string methods;
  for (const std::string& m : o.methods) methods += (methods.empty() ? "\"" : ", \"") + m + "\"";
  return "name: dispatch bench\nkind: probe\nmodel: " + in.model_dir + "\nprobes: " + in.probes_path +
         "\nprefix: " + std::to_string(o.prefix) + "\ncompletion: " + std::to_string(o.completion) +
         "\nshard_size: " + std::to_string(o.shard_size) + "\nprobe:\n  methods: [" + methods + "]\n";
}

// What an instant worker answers: the probes with a made-up completion, or a valid made-up
// (fdt, sdt, nll) per probe (sdt is 0 exactly when fdt is the completion length).
v1::CompleteTaskRequest InstantOutput(const v1::Task& task, const std::string& worker, uint32_t completion) {
  v1::CompleteTaskRequest request;
  request.set_worker_id(worker);
  request.set_lease_id(task.lease_id());
  request.set_task_id(task.task_id());
  for (const v1::BaselineRow& row : task.rows()) {
    if (task.kind() == v1::TASK_KIND_BASELINE_SHARD) {
      v1::BaselineRow* out = request.mutable_baseline()->add_rows();
      *out = row;
      for (uint32_t k = 0; k < completion; ++k) out->add_tokens((row.probe_index() + k) % 32000);
    } else {
      v1::ProbeResult* r = request.mutable_eval()->add_results();
      r->set_probe_id(row.probe_id());
      r->set_probe_index(row.probe_index());
      r->set_fdt(row.probe_index() % (completion + 1));
      r->set_sdt(r->fdt() == completion ? 0 : 1);
      r->set_nll(0.01 * (row.probe_index() % 100));
    }
  }
  request.mutable_timing()->set_tokens_processed(static_cast<uint64_t>(task.rows_size()) * completion);
  return request;
}

void WorkerLoop(Scheduler* scheduler, const std::string& worker, const BenchOptions& o, const std::atomic<bool>* done,
                RunResult* out) {
  uint64_t request = 0;
  while (!done->load(std::memory_order_relaxed)) {
    v1::LeaseTasksRequest lease;
    lease.set_worker_id(worker);
    lease.set_max_tasks(1);
    lease.set_request_id(worker + "-" + std::to_string(++request));
    const Steady::time_point lease_start = Steady::now();
    StatusOr<v1::LeaseTasksResponse> tasks = scheduler->worker().LeaseTasks(lease);
    const double lease_us = MicrosSince(lease_start);
    if (!tasks.ok()) Fail("LeaseTasks for " + worker + ": " + tasks.status().ToString());
    if (tasks->tasks().empty()) {
      ++out->empty_polls;
      std::this_thread::sleep_for(std::chrono::microseconds(o.idle_poll_us));
      continue;
    }
    for (const v1::Task& task : tasks->tasks()) {
      v1::CompleteTaskRequest result = InstantOutput(task, worker, static_cast<uint32_t>(o.completion));
      const Steady::time_point complete_start = Steady::now();
      StatusOr<v1::CompleteTaskResponse> answer = scheduler->worker().CompleteTask(result);
      const double complete_us = MicrosSince(complete_start);
      if (!answer.ok()) Fail("CompleteTask for " + worker + ": " + answer.status().ToString());
      out->lease_us.push_back(lease_us);
      out->complete_us.push_back(complete_us);
      out->pair_us.push_back(lease_us + complete_us);
      ++out->tasks;
    }
  }
}

std::unique_ptr<Store> OpenStore(const BenchOptions& o) {
  StatusOr<std::unique_ptr<Store>> store = OpenStoreUrl(o.store);
  Check(store.status(), "--store " + o.store);
  return std::move(store).value();
}

RunResult RunOnce(const BenchOptions& o, int workers, int run) {
  const Inputs in = MakeInputs(o, run);
  std::unique_ptr<Store> store = OpenStore(o);
  prometheus::Registry registry;
  CoordinatorMetrics metrics(registry);
  SystemClock clock;
  CoordinatorOptions coordinator_options;
  coordinator_options.data_root = "/";  // the inputs live in a temporary folder
  StatusOr<std::unique_ptr<Scheduler>> made = Scheduler::Create(store.get(), &metrics, coordinator_options, &clock);
  Check(made.status(), "creating the scheduler");
  Scheduler& scheduler = **made;
  Check(scheduler.Start(), "starting the scheduler");

  std::vector<std::string> names;
  for (int w = 0; w < workers; ++w) {
    names.push_back("bench-worker-" + std::to_string(w));
    v1::RegisterWorkerRequest request;
    request.set_worker_id(names.back());
    request.set_model_fingerprint(in.fingerprint);
    request.set_model_path(in.model_dir);
    request.set_dtype(v1::DTYPE_F32);
    request.set_num_layers(o.layers);
    request.set_capacity(1);
    request.set_version(kDtmVersion);
    Check(scheduler.worker().RegisterWorker(request).status(), "registering " + names.back());
  }

  std::atomic<bool> done{false};
  std::vector<RunResult> per_worker(workers);
  const Steady::time_point start = Steady::now();
  StatusOr<v1::Job> job = scheduler.client().Submit(Spec(o, in), "bench-run-" + std::to_string(run) + "-" +
                                                                        std::to_string(workers) + "-" +
                                                                        std::to_string(Steady::now().time_since_epoch().count()));
  Check(job.status(), "submitting the job");
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back(WorkerLoop, &scheduler, names[w], std::cref(o), &done, &per_worker[w]);
  }
  uint64_t version = 0;
  v1::JobProgress progress;
  for (;;) {
    StatusOr<std::pair<v1::JobProgress, uint64_t>> seen =
        scheduler.client().WaitProgress(job->job_id(), version, std::chrono::milliseconds(100));
    Check(seen.status(), "watching the job");
    progress = seen->first;
    version = seen->second;
    if (progress.state() >= v1::JOB_STATE_SUCCEEDED) break;
  }
  const double wall_s = std::chrono::duration<double>(Steady::now() - start).count();
  done = true;
  for (std::thread& t : threads) t.join();
  if (progress.state() != v1::JOB_STATE_SUCCEEDED) {
    Fail("job " + job->job_id() + " ended " + v1::JobState_Name(progress.state()) + ": " + progress.message());
  }
  scheduler.Stop();

  RunResult result;
  result.workers = workers;
  result.wall_s = wall_s;
  for (const RunResult& r : per_worker) {
    result.tasks += r.tasks;
    result.empty_polls += r.empty_polls;
    result.lease_us.insert(result.lease_us.end(), r.lease_us.begin(), r.lease_us.end());
    result.complete_us.insert(result.complete_us.end(), r.complete_us.begin(), r.complete_us.end());
    result.pair_us.insert(result.pair_us.end(), r.pair_us.begin(), r.pair_us.end());
  }
  if (result.tasks != progress.tasks_total()) {
    Fail("the workers completed " + std::to_string(result.tasks) + " tasks, the job counts " +
         std::to_string(progress.tasks_total()));
  }
  std::error_code ec;
  fs::remove_all(in.dir, ec);
  return result;
}

int Main(int argc, char** argv) {
  BenchOptions o;
  CLI::App app{"dtm dispatch benchmark: the coordinator's cost per task with instant in-process workers"};
  app.add_option("--workers", o.workers, "worker counts to run, one table row each")->delimiter(',');
  app.add_option("--layers", o.layers, "num_hidden_layers of the simulated model (7 components per layer)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--methods", o.methods, "methods of the probe job")->delimiter(',');
  app.add_option("--probes", o.probes, "probes in the job")->check(CLI::Range(1, 10000000));
  app.add_option("--shard-size", o.shard_size, "probes per task")->check(CLI::Range(1, 10000000));
  app.add_option("--prefix", o.prefix, "prefix tokens per probe")->check(CLI::Range(1, 100000));
  app.add_option("--completion", o.completion, "completion tokens per probe")->check(CLI::Range(1, 100000));
  CLI::Option* store = app.add_option("--store", o.store, "memory, redis://host:port[/db] or sqlite://PATH")
                           ->capture_default_str();
  app.add_option("--redis", o.store, "the same as --store (its older name)")->excludes(store);
  app.add_option("--idle-poll-us", o.idle_poll_us, "a worker's wait after an empty lease reply")
      ->check(CLI::Range(0, 10000000));
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn or error");
  CLI11_PARSE(app, argc, argv);
  for (int w : o.workers) {
    if (w < 1 || w > 1024) Fail("--workers: each count must be in [1, 1024], got " + std::to_string(w));
  }
  Check(InitLogging(o.log_level), "--log-level");

  const int shards = (o.probes + o.shard_size - 1) / o.shard_size;
  const int configs = 7 * o.layers * static_cast<int>(o.methods.size()) + 1;
  std::printf("dispatch_bench: %d layers x 7 components x %zu methods + noise floor = %d configs; %d probes in "
              "%d shards of %d => %d tasks (%d baseline); prefix %d, completion %d; store: %s\n",
              o.layers, o.methods.size(), configs, o.probes, shards, o.shard_size, shards * (configs + 1), shards,
              o.prefix, o.completion, o.store.c_str());
  std::printf("%7s %7s %8s %10s %12s %9s %9s %9s %9s %9s %9s %8s\n", "workers", "tasks", "wall_s", "tasks/s",
              "us/task", "pair_p50", "pair_p99", "lease_p50", "lease_p99", "compl_p50", "compl_p99", "idle");
  for (size_t i = 0; i < o.workers.size(); ++i) {
    const RunResult r = RunOnce(o, o.workers[i], static_cast<int>(i));
    std::printf("%7d %7lld %8.3f %10.0f %12.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8lld\n", r.workers,
                static_cast<long long>(r.tasks), r.wall_s, r.tasks / r.wall_s, r.wall_s * 1e6 / r.tasks,
                Percentile(r.pair_us, 0.5), Percentile(r.pair_us, 0.99), Percentile(r.lease_us, 0.5),
                Percentile(r.lease_us, 0.99), Percentile(r.complete_us, 0.5), Percentile(r.complete_us, 0.99),
                static_cast<long long>(r.empty_polls));
    std::fflush(stdout);
  }
  std::printf("us/task = wall time / tasks (submit to SUCCEEDED); pair = LeaseTasks + CompleteTask latency of one "
              "task in us; idle = empty lease replies (each followed by a %d us wait)\n",
              o.idle_poll_us);
  return 0;
}

}  // namespace
}  // namespace dtm

int main(int argc, char** argv) { return dtm::Main(argc, argv); }
