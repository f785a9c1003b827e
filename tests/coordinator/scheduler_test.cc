// The Scheduler driven directly, without gRPC and without its thread: fake workers lease tasks and
// complete them with synthetic outputs that are deterministic functions of (config, probe), so that
// every metric the scheduler reports can be predicted here without its aggregation code.
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

namespace dtm {
namespace {

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
std::vector<std::string> ExpectedProbeConfigs() {
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

uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

int32_t ProbeToken(uint32_t probe, uint32_t k) { return static_cast<int32_t>(100 + probe * 10 + k); }
uint32_t CompletionToken(uint32_t probe, uint32_t k, uint32_t salt) { return 5000 + probe * 100 + k + salt; }

// A valid (fdt, sdt, nll) for the probe under the config: sdt is 0 exactly when fdt is the completion
// length, else in [1, completion - fdt]. `salt` makes a different answer for the same task.
v1::ProbeResult SyntheticResult(const std::string& config, uint32_t probe, uint32_t salt) {
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

ExpectedMetrics Expected(const std::string& config) {
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

void ExpectMetrics(const v1::Metrics& got, const std::string& config) {
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
void ExpectProbeJobResults(const v1::GetResultsResponse& results) {
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
std::string Replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// ---------------------------------------------------------------------------------------------

class SchedulerTest : public ::testing::Test {
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

TEST_F(SchedulerTest, RunsAProbeJobThroughBaselineAndEvalTasks) {
  Register(*scheduler_, "w1");
  StatusOr<v1::Job> submitted = scheduler_->client().Submit(ProbeSpec(), NewRequestId());
  ASSERT_TRUE(submitted.ok()) << submitted.status().ToString();
  const std::string id = submitted->job_id();
  // Submission stores the job; the scheduler's tick resolves and plans it.
  EXPECT_EQ(submitted->state(), v1::JOB_STATE_PENDING);
  scheduler_->Tick();
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_RUNNING);

  std::vector<v1::Task> leased;
  Drive(*scheduler_, id, "w1", &leased);

  const v1::Job job = Job(*scheduler_, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.summary().model_fingerprint(), kFingerprint);
  EXPECT_EQ(job.summary().num_layers(), static_cast<uint32_t>(kLayers));
  EXPECT_EQ(job.summary().num_probes(), kNumProbes);
  EXPECT_EQ(job.summary().dtype(), v1::DTYPE_F32);
  EXPECT_EQ(job.progress().tasks_total(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_done(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_cached(), 0u);
  EXPECT_EQ(job.progress().tasks_failed(), 0u);

  // Every baseline shard first, then every (config, shard) exactly once.
  ASSERT_EQ(leased.size(), static_cast<size_t>(kTasksTotal));
  std::set<std::pair<std::string, uint32_t>> eval;
  for (size_t i = 0; i < leased.size(); ++i) {
    const bool baseline = leased[i].kind() == v1::TASK_KIND_BASELINE_SHARD;
    EXPECT_EQ(baseline, i < kShards) << "task " << i;
    EXPECT_EQ(leased[i].attempt(), 1u);
    if (!baseline) eval.insert({leased[i].key().config().canonical(), leased[i].key().shard().begin()});
  }
  std::set<std::pair<std::string, uint32_t>> want_eval;
  std::vector<std::string> configs = ExpectedProbeConfigs();
  configs.push_back("");
  for (const std::string& config : configs) {
    for (uint32_t begin = 0; begin < kNumProbes; begin += kShardSize) want_eval.insert({config, begin});
  }
  EXPECT_EQ(eval, want_eval);

  ExpectProbeJobResults(Results(*scheduler_, id));
}

TEST_F(SchedulerTest, ResubmittedSpecIsAnsweredFromTheCache) {
  Register(*scheduler_, "w1");
  const std::string first = Submit(*scheduler_, ProbeSpec());
  std::vector<v1::Task> leased;
  Drive(*scheduler_, first, "w1", &leased);
  ASSERT_EQ(Job(*scheduler_, first).state(), v1::JOB_STATE_SUCCEEDED);

  const std::string second = Submit(*scheduler_, ProbeSpec());
  ASSERT_NE(second, first);
  scheduler_->Tick();
  EXPECT_TRUE(Lease(*scheduler_, "w1", 8).empty());
  const v1::Job job = Job(*scheduler_, second);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.progress().tasks_total(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_cached(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_done(), static_cast<uint32_t>(kTasksTotal));
  ExpectProbeJobResults(Results(*scheduler_, second));
}

// The value of the series `name` whose labels include `labels`; nullopt when there is none.
std::optional<double> MetricValue(prometheus::Registry& registry, const std::string& name,
                                  const std::map<std::string, std::string>& labels = {}) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      size_t matched = 0;
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        auto it = labels.find(label.name);
        if (it != labels.end() && it->second == label.value) ++matched;
      }
      if (matched != labels.size()) continue;
      if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
      if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
    }
  }
  return std::nullopt;
}

TEST_F(SchedulerTest, MetricsFollowTheJobAndItsSeriesGoWhenItEnds) {
  prometheus::Registry registry;
  CoordinatorMetrics metrics(registry);
  std::unique_ptr<Scheduler> owned = Make(&store_, Options(), &metrics);
  Scheduler& s = *owned;
  ASSERT_TRUE(s.Start().ok());
  Register(s, "w1");
  // Counted at registration, not at the next tick: tests and scripts that saw the worker register
  // read the gauge right away.
  EXPECT_EQ(MetricValue(registry, "dtm_workers_connected"), 1.0);
  const std::string id = Submit(s, ProbeSpec());
  s.Tick();
  EXPECT_EQ(MetricValue(registry, "dtm_workers_connected"), 1.0);
  EXPECT_EQ(MetricValue(registry, "dtm_jobs", {{"state", "running"}}), 1.0);
  // The baseline stage is planned: its shards are the job's tasks so far, none done.
  EXPECT_EQ(MetricValue(registry, "dtm_job_tasks", {{"job_id", id}}), static_cast<double>(kShards));
  EXPECT_EQ(MetricValue(registry, "dtm_job_tasks_done", {{"job_id", id}}), 0.0);
  EXPECT_EQ(MetricValue(registry, "dtm_tasks", {{"state", "queued"}}), static_cast<double>(kShards));

  std::vector<v1::Task> leased;
  Drive(s, id, "w1", &leased);
  s.Tick();
  ASSERT_EQ(Job(s, id).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(MetricValue(registry, "dtm_job_tasks", {{"job_id", id}}), std::nullopt);
  EXPECT_EQ(MetricValue(registry, "dtm_job_tasks_done", {{"job_id", id}}), std::nullopt);
  EXPECT_EQ(MetricValue(registry, "dtm_jobs", {{"state", "succeeded"}}), 1.0);
  EXPECT_EQ(MetricValue(registry, "dtm_jobs", {{"state", "running"}}), 0.0);
  EXPECT_EQ(MetricValue(registry, "dtm_tasks_completed_total"), static_cast<double>(kTasksTotal));
  EXPECT_EQ(MetricValue(registry, "dtm_cache_misses_total"), static_cast<double>(kTasksTotal));
  EXPECT_EQ(MetricValue(registry, "dtm_cache_hits_total"), 0.0);
  // Every probe once per task kind: the baseline, 14 configs and the noise floor.
  EXPECT_EQ(MetricValue(registry, "dtm_probes_evaluated_total"), (1.0 + 2 * 7 + 1) * kNumProbes);

  // The same spec again: every task a cache hit, nothing computed.
  const std::string again = Submit(s, ProbeSpec());
  s.Tick();
  ASSERT_EQ(Job(s, again).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(MetricValue(registry, "dtm_cache_hits_total"), static_cast<double>(kTasksTotal));
  EXPECT_EQ(MetricValue(registry, "dtm_tasks_completed_total"), static_cast<double>(kTasksTotal));
  EXPECT_EQ(MetricValue(registry, "dtm_jobs_submitted_total"), 2.0);
  s.Stop();
}

// An InMemoryStore whose reads of eval results fail with UNAVAILABLE while `down`: exactly the reads
// that plan an eval stage, as if Redis went away then. Atomic: the scheduler's own thread ticks too.
class FlakyStore : public InMemoryStore {
 public:
  std::atomic<bool> down{false};
  StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    if (down && key.rfind("dtm:v1:result:", 0) == 0) return UnavailableError("store down (test)");
    return InMemoryStore::Get(key);
  }
  StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) override {
    for (const std::string& key : keys) {
      if (down && key.rfind("dtm:v1:result:", 0) == 0) return UnavailableError("store down (test)");
    }
    return InMemoryStore::Exist(keys);
  }
};

TEST_F(SchedulerTest, AStageThatCannotBePlannedForTheStoreIsPlannedWholeLater) {
  FlakyStore store;
  std::unique_ptr<Scheduler> owned = Make(&store);
  Scheduler& s = *owned;
  ASSERT_TRUE(s.Start().ok());
  Register(s, "w1");
  const std::string id = Submit(s, ProbeSpec());
  // The baseline stage: take the store away, then complete its shards; the eval stage (planned by
  // whichever tick comes after the last shard) cannot read the cache.
  std::vector<v1::Task> baseline = Lease(s, "w1", kShards);
  ASSERT_EQ(baseline.size(), static_cast<size_t>(kShards));
  store.down = true;
  for (const v1::Task& task : baseline) ASSERT_EQ(Complete(s, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  s.Tick();
  s.Tick();
  EXPECT_TRUE(Lease(s, "w1", 8).empty());
  v1::Job job = Job(s, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.progress().tasks_total(), static_cast<uint32_t>(kShards)) << "a half-planned stage was counted";

  store.down = false;
  std::vector<v1::Task> leased;
  Drive(s, id, "w1", &leased);
  job = Job(s, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.progress().tasks_total(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_done(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(leased.size() + kShards, static_cast<size_t>(kTasksTotal));
  ExpectProbeJobResults(Results(s, id));
  s.Stop();
}

TEST_F(SchedulerTest, RejectsAComponentBeyondTheModelAtSubmit) {
  const std::string config = "model.layers.5.mlp.up_proj=int8-absmax";
  // The layer count from the model folder's config.json, with no worker yet.
  StatusOr<v1::Job> job = scheduler_->client().Submit(EvaluateSpec(config), "r1");
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr(config));

  // The layer count from a worker serving the model, when the coordinator cannot read the folder.
  CoordinatorOptions options = Options();
  options.read_model_configs = false;
  InMemoryStore store;
  std::unique_ptr<Scheduler> blind = Make(&store, options);
  Register(*blind, "w1");
  job = blind->client().Submit(EvaluateSpec(config), "r2");
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr(config));

  EXPECT_EQ(JobCount(*scheduler_), 0u);
  EXPECT_EQ(JobCount(*blind), 0u);
  // Layer 1 exists: the same spec otherwise is fine.
  EXPECT_TRUE(blind->client().Submit(EvaluateSpec("model.layers.1.mlp.up_proj=int8-absmax"), "r3").ok());
}

TEST_F(SchedulerTest, RejectsBadSpecsAtSubmit) {
  struct Case {
    std::string spec;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {"kind: probe\nmodel: [unclosed\n", "malformed YAML"},
      {Replaced(ProbeSpec(), "shard_size: 4", "shard_size: 0"), "shard_size"},
      // The probes hold 5 tokens each.
      {Replaced(ProbeSpec(), "prefix: 3", "prefix: 6"), "prefix"},
      {ProbeSpec("num_probes: 11\n"), "num_probes"},
      {Replaced(ProbeSpec(), probes_path_, probes_path_ + ".missing"), "probes"},
  };
  for (const Case& c : cases) {
    StatusOr<v1::Job> job = scheduler_->client().Submit(c.spec, NewRequestId());
    ASSERT_FALSE(job.ok()) << c.spec;
    EXPECT_EQ(job.status().code(), StatusCode::kInvalidArgument) << job.status().ToString();
    EXPECT_THAT(job.status().message(), HasSubstr(c.mentions));
  }
  EXPECT_EQ(JobCount(*scheduler_), 0u);
}

TEST_F(SchedulerTest, ReLeasesATaskWhoseLeaseExpiredAndIgnoresTheLateResult) {
  Register(*scheduler_, "w1");
  Register(*scheduler_, "w2");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  std::vector<v1::Task> first = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].attempt(), 1u);

  // w1 never heartbeats; its lease runs out and the task goes to w2.
  clock_.Advance(std::chrono::milliseconds(kLeaseTimeoutMs + 1));
  scheduler_->Tick();
  EXPECT_EQ(Job(*scheduler_, id).progress().tasks_requeued(), 1u);
  std::vector<v1::Task> second = Lease(*scheduler_, "w2", 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].task_id(), first[0].task_id());
  EXPECT_NE(second[0].lease_id(), first[0].lease_id());
  EXPECT_EQ(second[0].attempt(), 2u);
  EXPECT_EQ(Complete(*scheduler_, second[0], "w2"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);

  // w1 reports late, with other numbers: a duplicate, and nothing changes.
  const std::string store_key = BaselineStoreKey(first[0].task_id());
  const std::optional<std::string> stored = *store_.Get(store_key);
  ASSERT_TRUE(stored.has_value());
  const v1::JobProgress before = Job(*scheduler_, id).progress();
  EXPECT_EQ(Complete(*scheduler_, first[0], "w1", /*salt=*/7), v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  EXPECT_EQ(*store_.Get(store_key), stored);
  const v1::JobProgress after = Job(*scheduler_, id).progress();
  EXPECT_EQ(after.tasks_done(), before.tasks_done());
  EXPECT_EQ(after.tasks_total(), before.tasks_total());

  std::vector<v1::Task> leased;
  Drive(*scheduler_, id, "w2", &leased);
  EXPECT_EQ(leased.size(), static_cast<size_t>(kTasksTotal - 1));
  const v1::Job job = Job(*scheduler_, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(job.progress().tasks_done(), static_cast<uint32_t>(kTasksTotal));
  ExpectProbeJobResults(Results(*scheduler_, id));
  // Once the job is over, still a duplicate.
  EXPECT_EQ(Complete(*scheduler_, first[0], "w1", /*salt=*/7), v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  EXPECT_EQ(*store_.Get(store_key), stored);
}

TEST_F(SchedulerTest, RequeuesARetryableFailureAndFailsTheJobOnANonRetryableOne) {
  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  std::vector<v1::Task> tasks = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(tasks.size(), 1u);

  v1::FailTaskRequest request;
  request.set_worker_id("w1");
  request.set_lease_id(tasks[0].lease_id());
  request.set_task_id(tasks[0].task_id());
  request.set_request_id("fail-1");
  request.mutable_error()->set_code(static_cast<int>(StatusCode::kResourceExhausted));
  request.mutable_error()->set_message("CUDA out of memory");
  request.set_retryable(true);
  StatusOr<v1::FailTaskResponse> response = scheduler_->worker().FailTask(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->requeued());
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_RUNNING);

  tasks = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].task_id(), request.task_id());
  EXPECT_EQ(tasks[0].attempt(), 2u);
  request.set_lease_id(tasks[0].lease_id());
  request.set_request_id("fail-2");
  request.mutable_error()->set_code(static_cast<int>(StatusCode::kInternal));
  request.mutable_error()->set_message("checkpoint shard 3 is truncated");
  request.set_retryable(false);
  response = scheduler_->worker().FailTask(request);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_FALSE(response->requeued());

  const v1::Job job = Job(*scheduler_, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().code(), static_cast<int>(StatusCode::kInternal));
  EXPECT_THAT(job.error().message(), HasSubstr("checkpoint shard 3 is truncated"));
  EXPECT_THAT(job.error().message(), HasSubstr("w1"));
  EXPECT_EQ(job.progress().tasks_failed(), 1u);
  EXPECT_TRUE(Lease(*scheduler_, "w1", 8).empty());
}

TEST_F(SchedulerTest, CancelEndsTheJobAndRevokesItsLeases) {
  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  std::vector<v1::Task> tasks = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(tasks.size(), 1u);

  StatusOr<v1::Job> cancelled = scheduler_->client().Cancel(id, "wrong probe set");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(Job(*scheduler_, id).error().message(), HasSubstr("wrong probe set"));

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("w1");
  heartbeat.add_lease_ids(tasks[0].lease_id());
  StatusOr<v1::HeartbeatResponse> answer = scheduler_->worker().Heartbeat(heartbeat);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_FALSE(answer->reregister());
  ASSERT_EQ(answer->leases_size(), 1);
  EXPECT_EQ(answer->leases(0).state(), v1::LEASE_STATE_CANCELLED);
  // The shards still queued are gone too.
  EXPECT_TRUE(Lease(*scheduler_, "w1", 8).empty());
  // Cancelling again is a no-op.
  cancelled = scheduler_->client().Cancel(id, "again");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(SchedulerTest, ResumesAfterARestartWithoutRecomputingFinishedTasks) {
  // What an uninterrupted run gives, on a store of its own.
  InMemoryStore other_store;
  std::unique_ptr<Scheduler> uninterrupted = Make(&other_store);
  Register(*uninterrupted, "w0");
  const std::string other_id = Submit(*uninterrupted, ProbeSpec());
  std::vector<v1::Task> other_leased;
  Drive(*uninterrupted, other_id, "w0", &other_leased);
  v1::GetResultsResponse want = Results(*uninterrupted, other_id);
  ASSERT_EQ(want.state(), v1::JOB_STATE_SUCCEEDED);

  // The first coordinator computes the baseline and 21 of the 45 eval tasks, leases two more, and
  // dies.
  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  int completed = 0;
  for (int round = 0; round < 10 && completed < static_cast<int>(kShards); ++round) {
    for (const v1::Task& task : Lease(*scheduler_, "w1", 1)) {
      EXPECT_EQ(Complete(*scheduler_, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
      ++completed;
    }
  }
  scheduler_->Tick();
  constexpr int kEvalDone = 21;
  for (const v1::Task& task : Lease(*scheduler_, "w1", kEvalDone)) {
    EXPECT_EQ(task.kind(), v1::TASK_KIND_EVAL_SHARD);
    EXPECT_EQ(Complete(*scheduler_, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
    ++completed;
  }
  ASSERT_EQ(completed, static_cast<int>(kShards) + kEvalDone);
  // Its progress reaches the store (records are written at most once a second), so the restarted
  // coordinator finds counts it must not add to.
  clock_.Advance(std::chrono::milliseconds(1500));
  scheduler_->Tick();
  v1::Job persisted;
  ASSERT_TRUE(persisted.ParseFromString(**store_.Get(JobStoreKey(id))));
  EXPECT_EQ(persisted.progress().tasks_done(), static_cast<uint32_t>(completed));
  EXPECT_EQ(Lease(*scheduler_, "w1", 2).size(), 2u);
  scheduler_.reset();

  std::unique_ptr<Scheduler> restarted = Make(&store_);
  ASSERT_TRUE(restarted->Start().ok());
  Register(*restarted, "w1");
  std::vector<v1::Task> leased;
  Drive(*restarted, id, "w1", &leased);
  const v1::Job job = Job(*restarted, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(leased.size(), static_cast<size_t>(kTasksTotal - completed));
  for (const v1::Task& task : leased) EXPECT_EQ(task.kind(), v1::TASK_KIND_EVAL_SHARD);
  EXPECT_EQ(job.progress().tasks_total(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_done(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(job.progress().tasks_cached(), static_cast<uint32_t>(completed));

  v1::GetResultsResponse got = Results(*restarted, id);
  ExpectProbeJobResults(got);
  got.clear_job_id();
  want.clear_job_id();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
      << got.DebugString() << "\nvs\n" << want.DebugString();
  restarted->Stop();
}

TEST_F(SchedulerTest, TellsAnUnregisteredWorkerToRegisterInsteadOfLeasing) {
  Submit(*scheduler_, ProbeSpec());
  Register(*scheduler_, "w1");
  scheduler_->Tick();
  StatusOr<v1::LeaseTasksResponse> response = TryLease(*scheduler_, "stranger", 1);
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_TRUE(response->reregister());
  EXPECT_EQ(response->tasks_size(), 0);
}

TEST_F(SchedulerTest, LeasesTasksOnlyToWorkersServingTheJobsModel) {
  const std::string other_model = (dir_ / "other-model").string();
  fs::create_directories(other_model);
  Register(*scheduler_, "other", other_model, "fingerprint-of-another-model");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  scheduler_->Tick();
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_PENDING);
  EXPECT_TRUE(Lease(*scheduler_, "other", 8).empty());
  Register(*scheduler_, "w1");
  scheduler_->Tick();
  EXPECT_TRUE(Lease(*scheduler_, "other", 8).empty());
  EXPECT_EQ(Lease(*scheduler_, "w1", 8).size(), kShards);
}

TEST_F(SchedulerTest, JobWaitsForAWorkerThenRuns) {
  const std::string id = Submit(*scheduler_, ProbeSpec());
  scheduler_->Tick();
  v1::Job job = Job(*scheduler_, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_THAT(job.progress().message(), HasSubstr("waiting for a worker"));
  EXPECT_THAT(job.progress().message(), HasSubstr(model_dir_));

  Register(*scheduler_, "w1");
  scheduler_->Tick();
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_RUNNING);
  std::vector<v1::Task> leased;
  Drive(*scheduler_, id, "w1", &leased);
  job = Job(*scheduler_, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_EQ(leased.size(), static_cast<size_t>(kTasksTotal));
  ExpectProbeJobResults(Results(*scheduler_, id));
}

TEST_F(SchedulerTest, JobFailsWhenNoWorkerServesItsModelInTime) {
  CoordinatorOptions options = Options();
  options.model_wait_ms = 1000;
  std::unique_ptr<Scheduler> s = Make(&store_, options);
  ASSERT_TRUE(s->Start().ok());
  Register(*s, "w-other", "/elsewhere/model", "other-fingerprint");
  const std::string id = Submit(*s, ProbeSpec());
  s->Tick();
  clock_.Advance(std::chrono::milliseconds(999));
  s->Tick();
  v1::Job job = Job(*s, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_THAT(job.progress().message(), HasSubstr("workers serve /elsewhere/model"));

  clock_.Advance(std::chrono::milliseconds(2));
  s->Tick();
  job = Job(*s, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr("no worker has registered serving " + model_dir_ + " within 1 s"));
  EXPECT_THAT(job.error().message(), HasSubstr("workers serve /elsewhere/model"));
  s->Stop();
}

TEST_F(SchedulerTest, SubmitIsIdempotentOnTheClientRequestId) {
  const std::string a = Submit(*scheduler_, ProbeSpec(), "req-a");
  const std::string again = Submit(*scheduler_, ProbeSpec(), "req-a");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(again, a);
  EXPECT_EQ(JobCount(*scheduler_), 1u);
  const std::string b = Submit(*scheduler_, ProbeSpec(), "req-b");
  EXPECT_NE(b, a);
  EXPECT_EQ(JobCount(*scheduler_), 2u);
  EXPECT_EQ(Job(*scheduler_, a).client_request_id(), "req-a");
}

}  // namespace
}  // namespace dtm
