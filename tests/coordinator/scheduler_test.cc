// The Scheduler's job runs: a probe job through its stages, a job against a reference model, the
// cache, metrics, store outages while planning, lease expiry, failures, cancellation, restarts and
// waiting for a model (scheduler_fixture.h drives it).
#include <algorithm>
#include <map>

#include "tests/coordinator/scheduler_fixture.h"

namespace dtm {
namespace {

using namespace scheduler_testing;  // NOLINT: the fixture's vocabulary

using SchedulerTest = SchedulerFixture;

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

// Issue 13: a job that fails part way keeps the configs it finished, and says it failed.
TEST_F(SchedulerTest, AFailedJobKeepsTheConfigsItFinishedAfterARestartToo) {
  const v1::GetResultsResponse want = UninterruptedProbeResults();
  ASSERT_EQ(want.state(), v1::JOB_STATE_SUCCEEDED);

  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  for (const v1::Task& task : Lease(*scheduler_, "w1", kShards)) {
    ASSERT_EQ(task.kind(), v1::TASK_KIND_BASELINE_SHARD);
    EXPECT_EQ(Complete(*scheduler_, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  }
  scheduler_->Tick();
  // About half the eval tasks done, then one fails for good.
  std::map<std::string, uint32_t> shards_done;  // serialized config -> shards completed
  std::vector<v1::Task> tasks = Lease(*scheduler_, "w1", kTasksTotal / 2 + 1);
  ASSERT_GT(tasks.size(), 2u);
  const v1::Task failing = tasks.back();
  tasks.pop_back();
  for (const v1::Task& task : tasks) {
    EXPECT_EQ(Complete(*scheduler_, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
    ++shards_done[task.key().config().SerializeAsString()];
  }
  size_t finished = 0;
  for (const auto& [config, done] : shards_done) finished += done == kShards;
  ASSERT_GT(finished, 0u) << "no config has all its shards: lease more before failing";
  v1::FailTaskRequest fail;
  fail.set_worker_id("w1");
  fail.set_lease_id(failing.lease_id());
  fail.set_task_id(failing.task_id());
  fail.set_request_id("fail-for-good");
  fail.mutable_error()->set_code(static_cast<int>(StatusCode::kInternal));
  fail.mutable_error()->set_message("checkpoint shard 3 is truncated");
  fail.set_retryable(false);
  ASSERT_TRUE(scheduler_->worker().FailTask(fail).ok());
  scheduler_->Tick();  // the planner keeps what the job finished

  // Every finished config, with the numbers of the uninterrupted run; the rest marked incomplete.
  auto check = [&](const v1::GetResultsResponse& got) {
    EXPECT_EQ(got.state(), v1::JOB_STATE_FAILED);
    size_t complete = got.has_noise_floor() ? 1 : 0;
    for (const v1::ConfigResult& row : got.results()) {
      if (!row.complete()) continue;
      ++complete;
      const auto same = std::find_if(want.results().begin(), want.results().end(),
                                     [&](const v1::ConfigResult& w) { return w.config() == row.config(); });
      ASSERT_NE(same, want.results().end()) << row.config();
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(row.metrics(), same->metrics())) << row.config();
    }
    EXPECT_EQ(complete, finished);
    if (got.has_noise_floor()) {
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got.noise_floor(), want.noise_floor()));
    }
  };
  check(Results(*scheduler_, id));
  EXPECT_THAT(Job(*scheduler_, id).error().message(), HasSubstr("checkpoint shard 3 is truncated"));
  scheduler_.reset();

  std::unique_ptr<Scheduler> restarted = Make(&store_);
  ASSERT_TRUE(restarted->Start().ok());
  check(Results(*restarted, id));
  restarted->Stop();
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
  v1::GetResultsResponse want = UninterruptedProbeResults();
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

// Issue 13: a coordinator told not to resume a job (dtmctl results --store, or dtmctl local for
// another spec's job) leaves it as stored: not advanced, its files not read, still cancellable.
TEST_F(SchedulerTest, AJobNotToResumeStaysAsStoredAndCanBeCancelled) {
  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, ProbeSpec());
  for (const v1::Task& task : Lease(*scheduler_, "w1", kShards)) {
    EXPECT_EQ(Complete(*scheduler_, task, "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  }
  scheduler_->Tick();
  clock_.Advance(std::chrono::milliseconds(1500));
  scheduler_->Tick();  // the record reaches the store
  scheduler_.reset();
  // A reader whose working folder would not find the probes: resuming would fail the job.
  fs::remove(probes_path_);
  CoordinatorOptions options = Options();
  options.resume_job = [](const v1::Job&) { return false; };
  std::unique_ptr<Scheduler> reader = Make(&store_, options);
  ASSERT_TRUE(reader->Start().ok());
  Register(*reader, "w1");
  for (int i = 0; i < 3; ++i) reader->Tick();
  EXPECT_EQ(Job(*reader, id).state(), v1::JOB_STATE_RUNNING) << Job(*reader, id).error().message();
  EXPECT_TRUE(Lease(*reader, "w1", 8).empty());
  StatusOr<v1::Job> cancelled = reader->client().Cancel(id, "not wanted");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  reader->Stop();
  reader.reset();
  v1::Job stored;
  ASSERT_TRUE(stored.ParseFromString(**store_.Get(JobStoreKey(id))));
  EXPECT_EQ(stored.state(), v1::JOB_STATE_CANCELLED);
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

// `reference:`: the reference's workers compute the baseline and its noise floor, the model's
// workers every config (the uncompressed one too) against that baseline, under keys of their own.
TEST_F(SchedulerTest, AReferenceJobMeasuresTheModelAgainstTheReferencesBaseline) {
  const std::string reference_dir = (dir_ / "reference").string();
  fs::create_directories(reference_dir);
  const std::string reference_fp = "fingerprint-of-the-reference";
  const std::string config = "model.layers.0.mlp.up_proj=int8-absmax";
  // Named as a user might write it: the workers' paths and the spec's are compared normalized.
  const std::string spec =
      Replaced(EvaluateSpec(config), "evaluate:", "reference: " + reference_dir + "/./\nevaluate:");
  const std::string id = Submit(*scheduler_, spec);
  Register(*scheduler_, "model-worker");
  scheduler_->Tick();
  v1::Job job = Job(*scheduler_, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_THAT(job.progress().message(), HasSubstr("waiting for a worker serving reference " + reference_dir));
  EXPECT_EQ(job.summary().reference_model_path(), reference_dir);
  Register(*scheduler_, "reference-worker", reference_dir, reference_fp);

  // The reference's completions carry salt 7 and its results salt 3, so that the rows and numbers
  // of each side can be told apart from the model's.
  scheduler_->Tick();
  const std::string probe_fp = Job(*scheduler_, id).summary().probe_set_fingerprint();  // of the prefixes
  ASSERT_EQ(probe_fp.size(), 64u);
  const std::string against_reference = ReferenceBaselineFingerprint(reference_fp, probe_fp);
  std::map<std::string, int> tasks_of;  // "worker kind config" -> count
  bool restarted = false;
  for (int round = 0; round < 100 && !IsFinal(Job(*scheduler_, id).state()); ++round) {
    if (!restarted && Job(*scheduler_, id).progress().tasks_done() >= kShards) {
      // A coordinator restart once the baseline is in: the job resumes with both pools from its
      // record, and computes nothing twice (the counts below).
      scheduler_ = Make(&store_);
      ASSERT_TRUE(scheduler_->Start().ok());
      Register(*scheduler_, "model-worker");
      Register(*scheduler_, "reference-worker", reference_dir, reference_fp);
      restarted = true;
    }
    bool leased = false;
    for (const std::string worker : {"model-worker", "reference-worker"}) {
      StatusOr<v1::LeaseTasksResponse> response = TryLease(*scheduler_, worker, 4);
      ASSERT_TRUE(response.ok()) << response.status().ToString();
      for (const v1::Task& task : response->tasks()) {
        leased = true;
        const bool on_reference = worker == "reference-worker";
        const std::string& canonical = task.key().config().canonical();
        ++tasks_of[worker + " " + v1::TaskKind_Name(task.kind()) + " '" + canonical + "'"];
        EXPECT_EQ(task.key().model_fingerprint(), on_reference ? reference_fp : kFingerprint);
        EXPECT_EQ(task.key().probe_set_fingerprint(), on_reference ? probe_fp : against_reference);
        if (task.kind() == v1::TASK_KIND_EVAL_SHARD) {
          for (const v1::BaselineRow& row : task.rows()) {
            EXPECT_EQ(row.tokens(kPrefix), CompletionToken(row.probe_index(), 0, 7)) << "the reference's baseline";
          }
        }
        const uint32_t salt = task.kind() == v1::TASK_KIND_BASELINE_SHARD ? 7 : on_reference ? 3 : 0;
        EXPECT_EQ(Complete(*scheduler_, task, worker, salt), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
      }
    }
    if (!leased) scheduler_->Tick();
  }
  job = Job(*scheduler_, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message();
  EXPECT_TRUE(restarted);
  EXPECT_EQ(job.summary().reference_model_fingerprint(), reference_fp);
  const std::map<std::string, int> want = {
      {"reference-worker TASK_KIND_BASELINE_SHARD ''", kShards},
      {"reference-worker TASK_KIND_EVAL_SHARD ''", kShards},
      {"model-worker TASK_KIND_EVAL_SHARD ''", kShards},
      {"model-worker TASK_KIND_EVAL_SHARD '" + config + "'", kShards}};
  EXPECT_EQ(tasks_of, want);

  const v1::GetResultsResponse results = Results(*scheduler_, id);
  EXPECT_EQ(results.reference_model_fingerprint(), reference_fp);
  ASSERT_EQ(results.results_size(), 2);
  EXPECT_EQ(results.results(0).config(), "");  // the model as it is, first
  ExpectMetrics(results.results(0).metrics(), "");
  EXPECT_EQ(results.results(1).config(), config);
  ExpectMetrics(results.results(1).metrics(), config);
  // The noise floor is the reference's (salt 3), not the model's uncompressed row (salt 0).
  double fdt_mean = 0;
  for (uint32_t p = 0; p < kNumProbes; ++p) fdt_mean += SyntheticResult("", p, 3).fdt() / double(kNumProbes);
  EXPECT_NEAR(results.noise_floor().fdt_mean(), fdt_mean, 1e-12);
  EXPECT_NE(results.noise_floor().fdt_mean(), Expected("").fdt_mean);

  // The reference's own job finds its baseline and noise floor in the cache: the same tasks.
  const std::string own = Submit(*scheduler_, Replaced(EvaluateSpec(config), model_dir_, reference_dir));
  EXPECT_EQ(Job(*scheduler_, own).progress().tasks_cached(), 2 * kShards);
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
