// What the coordinator's tests share: a Scheduler driven directly, without gRPC and without its
// thread, on a fake clock and an in-memory store; fake workers lease tasks and complete them with
// synthetic outputs that are deterministic functions of (config, probe), so that every metric the
// scheduler reports can be predicted without its aggregation code.
#pragma once

#include "coordinator/scheduler.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/in_memory_store.h"
#include "common/probe_file.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/store_keys.h"
#include "common/version.h"

namespace dtm::scheduler_testing {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr uint32_t kNumProbes = 10;
constexpr uint32_t kProbeTokens = 5;  // each probe in the file; the spec uses a shorter prefix
constexpr uint32_t kPrefix = 3;
constexpr uint32_t kCompletion = 6;
constexpr uint32_t kShardSize = 4;  // shards [0,4) [4,8) [8,10)
constexpr uint32_t kShards = 3;
constexpr int64_t kLeaseTimeoutMs = 1000;
constexpr char kFingerprint[] = "fingerprint-of-the-test-model";
// 14 probe configs + the noise floor, each on 3 shards, after 3 baseline shards.
constexpr int kTasksTotal = kShards + (2 * 7 + 1) * kShards;

// The probe job's configs in result order, written out rather than taken from ExpandConfigs.
inline std::vector<std::string> ExpectedProbeConfigs() {
  const char* kinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  std::vector<std::string> configs;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (const char* kind : kinds) configs.push_back("model.layers." + std::to_string(layer) + "." + kind + "=int8-absmax");
  }
  return configs;
}

// ---------------------------------------------------------------------------------------------
// The synthetic model: what fake workers answer, and the metrics that follows from it.

inline uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

inline int32_t ProbeToken(uint32_t probe, uint32_t k) { return static_cast<int32_t>(100 + probe * 10 + k); }
inline uint32_t CompletionToken(uint32_t probe, uint32_t k, uint32_t salt) { return 5000 + probe * 100 + k + salt; }

// A valid (fdt, sdt, nll) for the probe under the config: sdt is 0 exactly when fdt is the completion
// length, else in [1, completion - fdt]. `salt` makes a different answer for the same task.
inline v1::ProbeResult SyntheticResult(const std::string& config, uint32_t probe, uint32_t salt) {
  const uint32_t h = Fnv1a(config) + salt;
  v1::ProbeResult r;
  r.set_probe_index(probe);
  r.set_probe_id("p" + std::to_string(probe));
  r.set_fdt((probe * 7 + h) % (kCompletion + 1));
  r.set_sdt(r.fdt() == kCompletion ? 0 : 1 + (probe + h) % (kCompletion - r.fdt()));
  r.set_nll(0.05 * (probe + 1) + 0.001 * (h % 97));
  return r;
}

struct ExpectedMetrics {
  double fdt75 = 0, fdt_mean = 0, sdt_mean = 0, dppl = 0, nll_mean = 0;
  std::vector<uint32_t> histogram;
};

inline ExpectedMetrics Expected(const std::string& config) {
  ExpectedMetrics m;
  m.histogram.assign(kCompletion + 1, 0);
  std::vector<double> fdts;
  for (uint32_t p = 0; p < kNumProbes; ++p) {
    v1::ProbeResult r = SyntheticResult(config, p, 0);
    fdts.push_back(r.fdt());
    m.fdt_mean += r.fdt() / double(kNumProbes);
    m.sdt_mean += r.sdt() / double(kNumProbes);
    m.dppl += std::exp(r.nll()) / kNumProbes;
    m.nll_mean += r.nll() / kNumProbes;
    ++m.histogram[r.fdt()];
  }
  // 75% quantile, linear interpolation between order statistics: position (n - 1) * 0.75.
  std::sort(fdts.begin(), fdts.end());
  const double pos = (kNumProbes - 1) * 0.75;
  const size_t lo = static_cast<size_t>(pos);
  m.fdt75 = fdts[lo] + (pos - lo) * (fdts[lo + 1] - fdts[lo]);
  return m;
}

inline void ExpectMetrics(const v1::Metrics& got, const std::string& config) {
  SCOPED_TRACE("config '" + config + "'");
  const ExpectedMetrics want = Expected(config);
  EXPECT_EQ(got.num_probes(), kNumProbes);
  EXPECT_NEAR(got.fdt75(), want.fdt75, 1e-12);
  EXPECT_NEAR(got.fdt_mean(), want.fdt_mean, 1e-12);
  EXPECT_NEAR(got.sdt_mean(), want.sdt_mean, 1e-12);
  EXPECT_NEAR(got.dppl(), want.dppl, 1e-12);
  EXPECT_NEAR(got.nll_mean(), want.nll_mean, 1e-12);
  EXPECT_EQ(std::vector<uint32_t>(got.fdt_histogram().begin(), got.fdt_histogram().end()), want.histogram);
}

// The results of the probe job: 14 rows in ExpandConfigs order, each with its predicted metrics,
// and the noise floor.
inline void ExpectProbeJobResults(const v1::GetResultsResponse& results) {
  const std::vector<std::string> configs = ExpectedProbeConfigs();
  ASSERT_EQ(results.results_size(), static_cast<int>(configs.size()));
  for (size_t i = 0; i < configs.size(); ++i) {
    const v1::ConfigResult& row = results.results(static_cast<int>(i));
    EXPECT_EQ(row.config(), configs[i]) << "row " << i;
    EXPECT_TRUE(row.complete()) << "row " << i;
    ExpectMetrics(row.metrics(), row.config());
  }
  ASSERT_TRUE(results.has_noise_floor());
  ExpectMetrics(results.noise_floor(), "");
}

// `text` with its first `from` replaced by `to`.
inline std::string Replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// ---------------------------------------------------------------------------------------------

class SchedulerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::warn);
    std::string tmpl = (fs::temp_directory_path() / "dtm-scheduler-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    model_dir_ = (dir_ / "model").string();
    fs::create_directories(model_dir_);
    std::ofstream(fs::path(model_dir_) / "config.json") << R"({"num_hidden_layers": 2})";
    probes_path_ = (dir_ / "probes.jsonl").string();
    ProbeSet probes;
    for (uint32_t p = 0; p < kNumProbes; ++p) {
      Probe probe;
      probe.id = "p" + std::to_string(p);
      for (uint32_t k = 0; k < kProbeTokens; ++k) probe.tokens.push_back(ProbeToken(p, k));
      probes.probes.push_back(probe);
    }
    ASSERT_TRUE(WriteProbeFile(probes_path_, probes).ok());
    scheduler_ = Make(&store_);
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  CoordinatorOptions Options() const {
    CoordinatorOptions options;
    options.lease_timeout_ms = kLeaseTimeoutMs;
    options.heartbeat_interval_ms = 100;
    options.max_attempts = 3;
    options.data_root = dir_.string();
    return options;
  }

  std::unique_ptr<Scheduler> Make(Store* store, CoordinatorOptions options, CoordinatorMetrics* metrics = nullptr) {
    StatusOr<std::unique_ptr<Scheduler>> made = Scheduler::Create(store, metrics, std::move(options), &clock_);
    EXPECT_TRUE(made.ok()) << made.status().ToString();
    return made.ok() ? std::move(made).value() : nullptr;
  }
  std::unique_ptr<Scheduler> Make(Store* store) { return Make(store, Options()); }

  std::string ProbeSpec(const std::string& extra = "") const {
    return "kind: probe\nmodel: " + model_dir_ + "\nprobes: " + probes_path_ + "\nprefix: " +
           std::to_string(kPrefix) + "\ncompletion: " + std::to_string(kCompletion) +
           "\nshard_size: " + std::to_string(kShardSize) + "\n" + extra + "probe:\n  methods: [int8-absmax]\n";
  }

  std::string EvaluateSpec(const std::string& config) const {
    return "kind: evaluate\nmodel: " + model_dir_ + "\nprobes: " + probes_path_ + "\nprefix: " +
           std::to_string(kPrefix) + "\ncompletion: " + std::to_string(kCompletion) +
           "\nshard_size: " + std::to_string(kShardSize) + "\nevaluate:\n  configs: [" + config + "]\n";
  }

  void Register(Scheduler& s, const std::string& worker, const std::string& model_path,
                const std::string& fingerprint = kFingerprint) {
    v1::RegisterWorkerRequest request;
    request.set_worker_id(worker);
    request.set_model_fingerprint(fingerprint);
    request.set_model_path(model_path);
    request.set_dtype(v1::DTYPE_F32);
    request.set_num_layers(kLayers);
    request.set_capacity(1);
    request.set_version(kDtmVersion);
    StatusOr<v1::RegisterWorkerResponse> response = s.worker().RegisterWorker(request);
    ASSERT_TRUE(response.ok()) << response.status().ToString();
    EXPECT_EQ(response->lease_timeout_ms(), kLeaseTimeoutMs);
  }
  void Register(Scheduler& s, const std::string& worker) { Register(s, worker, model_dir_); }

  // Submits under `request_id` (or a fresh one), then ticks once, so that the job is planned as far
  // as it can be, as the scheduler thread would.
  std::string Submit(Scheduler& s, const std::string& spec, const std::string& request_id = "") {
    StatusOr<v1::Job> job = s.client().Submit(spec, request_id.empty() ? NewRequestId() : request_id);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    s.Tick();
    return job.ok() ? job->job_id() : "";
  }

  v1::Job Job(Scheduler& s, const std::string& id) {
    StatusOr<v1::Job> job = s.client().GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    return job.ok() ? *job : v1::Job();
  }

  v1::GetResultsResponse Results(Scheduler& s, const std::string& id) {
    v1::GetResultsRequest request;
    request.set_job_id(id);
    StatusOr<v1::GetResultsResponse> results = s.client().Results(request);
    EXPECT_TRUE(results.ok()) << results.status().ToString();
    return results.ok() ? *results : v1::GetResultsResponse();
  }

  StatusOr<v1::LeaseTasksResponse> TryLease(Scheduler& s, const std::string& worker, int max_tasks) {
    v1::LeaseTasksRequest request;
    request.set_worker_id(worker);
    request.set_max_tasks(max_tasks);
    request.set_request_id("req-" + std::to_string(++next_request_));
    return s.worker().LeaseTasks(request);
  }

  // Leases and checks that each task carries what the fake worker needs and nothing else.
  std::vector<v1::Task> Lease(Scheduler& s, const std::string& worker, int max_tasks) {
    StatusOr<v1::LeaseTasksResponse> response = TryLease(s, worker, max_tasks);
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    if (!response.ok()) return {};
    std::vector<v1::Task> tasks(response->tasks().begin(), response->tasks().end());
    for (const v1::Task& task : tasks) CheckTask(task);
    return tasks;
  }

  // A task's key names the test model, and its rows are the shard's probe prefixes (baseline) or the
  // baseline rows the workers returned (eval).
  void CheckTask(const v1::Task& task) {
    SCOPED_TRACE("task " + task.task_id() + " config '" + task.key().config().canonical() + "'");
    EXPECT_EQ(task.key().model_fingerprint(), kFingerprint);
    EXPECT_EQ(task.key().prefix_len(), kPrefix);
    EXPECT_EQ(task.key().completion_len(), kCompletion);
    EXPECT_EQ(task.key().dtype(), v1::DTYPE_F32);
    const uint32_t begin = task.key().shard().begin();
    const uint32_t end = task.key().shard().end();
    EXPECT_EQ(begin % kShardSize, 0u);
    EXPECT_EQ(end, std::min(begin + kShardSize, kNumProbes));
    ASSERT_EQ(task.rows_size(), static_cast<int>(end - begin));
    const bool baseline = task.kind() == v1::TASK_KIND_BASELINE_SHARD;
    EXPECT_TRUE(baseline || task.kind() == v1::TASK_KIND_EVAL_SHARD);
    if (baseline) {
      EXPECT_EQ(task.key().config().canonical(), "");
    }
    for (int i = 0; i < task.rows_size(); ++i) {
      const v1::BaselineRow& row = task.rows(i);
      const uint32_t probe = begin + i;
      EXPECT_EQ(row.probe_index(), probe);
      EXPECT_EQ(row.probe_id(), "p" + std::to_string(probe));
      EXPECT_EQ(row.prefix_len(), kPrefix);
      std::vector<uint32_t> want;
      for (uint32_t k = 0; k < kPrefix; ++k) want.push_back(ProbeToken(probe, k));
      if (!baseline) {
        for (uint32_t k = 0; k < kCompletion; ++k) want.push_back(CompletionToken(probe, k, 0));
      }
      EXPECT_EQ(std::vector<uint32_t>(row.tokens().begin(), row.tokens().end()), want) << "row " << i;
    }
  }

  static v1::CompleteTaskRequest Output(const v1::Task& task, const std::string& worker, uint32_t salt = 0) {
    v1::CompleteTaskRequest request;
    request.set_worker_id(worker);
    request.set_lease_id(task.lease_id());
    request.set_task_id(task.task_id());
    for (const v1::BaselineRow& row : task.rows()) {
      if (task.kind() == v1::TASK_KIND_BASELINE_SHARD) {
        v1::BaselineRow* out = request.mutable_baseline()->add_rows();
        *out = row;
        for (uint32_t k = 0; k < kCompletion; ++k) out->add_tokens(CompletionToken(row.probe_index(), k, salt));
      } else {
        *request.mutable_eval()->add_results() =
            SyntheticResult(task.key().config().canonical(), row.probe_index(), salt);
      }
    }
    return request;
  }

  v1::CompleteTaskResponse::Outcome Complete(Scheduler& s, const v1::Task& task, const std::string& worker,
                                             uint32_t salt = 0) {
    StatusOr<v1::CompleteTaskResponse> response = s.worker().CompleteTask(Output(task, worker, salt));
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    return response.ok() ? response->outcome() : v1::CompleteTaskResponse::OUTCOME_UNSPECIFIED;
  }

  // A fake worker serving `job_id` until it ends: leases up to 4 tasks at a time, completes each, and
  // ticks when there is nothing to lease (a stage's tasks are planned by the tick). Every task leased
  // is appended to `leased`.
  void Drive(Scheduler& s, const std::string& job_id, const std::string& worker, std::vector<v1::Task>* leased) {
    for (int round = 0; round < 500; ++round) {
      const v1::JobState state = Job(s, job_id).state();
      if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) {
        return;
      }
      std::vector<v1::Task> tasks = Lease(s, worker, 4);
      if (tasks.empty()) s.Tick();
      for (const v1::Task& task : tasks) {
        EXPECT_EQ(task.job_id(), job_id);
        EXPECT_EQ(Complete(s, task, worker), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
        leased->push_back(task);
      }
    }
    ADD_FAILURE() << "job " << job_id << " did not end after 500 rounds";
  }

  std::string NewRequestId() { return "request-" + std::to_string(++next_submit_); }
  // ProbeSpec() run to its end without interruption, on a store of its own: what an interrupted
  // run must come to.
  v1::GetResultsResponse UninterruptedProbeResults() {
    InMemoryStore store;
    std::unique_ptr<Scheduler> s = Make(&store);
    Register(*s, "w0");
    const std::string id = Submit(*s, ProbeSpec());
    std::vector<v1::Task> leased;
    Drive(*s, id, "w0", &leased);
    return Results(*s, id);
  }

  size_t JobCount(Scheduler& s) {
    StatusOr<v1::ListJobsResponse> listed = s.client().ListJobs(v1::ListJobsRequest());
    EXPECT_TRUE(listed.ok()) << listed.status().ToString();
    return listed.ok() ? static_cast<size_t>(listed->jobs_size()) : 0;
  }

  fs::path dir_;
  std::string model_dir_;
  std::string probes_path_;
  FakeClock clock_;
  InMemoryStore store_;
  std::unique_ptr<Scheduler> scheduler_;
  int next_request_ = 0;
  int next_submit_ = 0;
};

}  // namespace dtm::scheduler_testing
