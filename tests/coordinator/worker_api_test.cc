// The worker API's promises (worker_service.proto, worker_api.h): "register again" as a reply field,
// registration releasing a restarted worker's leases, the version check, failures by cause, FailTask
// idempotent on its request id, leases and tasks of other workers refused, results naming their
// worker, late reports answered from the store, bounded replies.
#include "coordinator/worker_api.h"

#include "common/calibration_set.h"
#include "common/shard_tag.h"
#include "tests/coordinator/scheduler_fixture.h"

namespace dtm {
namespace {

using namespace scheduler_testing;  // NOLINT: the fixture's vocabulary

class WorkerApiTest : public SchedulerFixture {
 protected:
  WorkerApi& api() { return scheduler_->worker(); }

  v1::FailTaskRequest Failure(const v1::Task& task, const std::string& worker, v1::FailureCause cause,
                              const std::string& request_id, const std::string& message = "it broke") {
    v1::FailTaskRequest request;
    request.set_worker_id(worker);
    request.set_lease_id(task.lease_id());
    request.set_task_id(task.task_id());
    request.set_request_id(request_id);
    request.set_cause(cause);
    request.mutable_error()->set_code(static_cast<int>(StatusCode::kFailedPrecondition));
    request.mutable_error()->set_message(message);
    return request;
  }

  // A probe job submitted and planned up to its baseline stage, with w1 and w2 registered.
  std::string StartedJob() {
    Register(*scheduler_, "w1");
    Register(*scheduler_, "w2");
    return Submit(*scheduler_, ProbeSpec());
  }
};

TEST_F(WorkerApiTest, TellsAnUnknownWorkerToRegisterOnEveryCallThatNeedsIt) {
  StartedJob();
  std::vector<v1::Task> tasks = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(tasks.size(), 1u);
  StatusOr<v1::LeaseTasksResponse> lease = TryLease(*scheduler_, "stranger", 1);
  ASSERT_TRUE(lease.ok());
  EXPECT_TRUE(lease->reregister());
  EXPECT_EQ(lease->tasks_size(), 0);
  StatusOr<v1::CompleteTaskResponse> complete = api().CompleteTask(Output(tasks[0], "stranger"));
  ASSERT_TRUE(complete.ok());
  EXPECT_TRUE(complete->reregister());
  EXPECT_EQ(complete->outcome(), v1::CompleteTaskResponse::OUTCOME_UNSPECIFIED);
  StatusOr<v1::FailTaskResponse> fail = api().FailTask(Failure(tasks[0], "stranger", v1::FAILURE_CAUSE_TASK, "f"));
  ASSERT_TRUE(fail.ok());
  EXPECT_TRUE(fail->reregister());
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("stranger");
  heartbeat.add_lease_ids(tasks[0].lease_id());
  StatusOr<v1::HeartbeatResponse> beat = api().Heartbeat(heartbeat);
  ASSERT_TRUE(beat.ok());
  EXPECT_TRUE(beat->reregister());
  EXPECT_EQ(beat->leases(0).state(), v1::LEASE_STATE_UNKNOWN);
  v1::DrainWorkerRequest drain;
  drain.set_worker_id("stranger");
  StatusOr<v1::DrainWorkerResponse> drained = api().DrainWorker(drain);
  ASSERT_TRUE(drained.ok());
  EXPECT_EQ(drained->tasks_released(), 0u);
  // Nothing a stranger sent changed the task: w1 still completes it.
  EXPECT_EQ(Complete(*scheduler_, tasks[0], "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
}

// SPEC, gptq: a gptq job's calibration set is stored when the job starts, named in the key of its
// gptq tasks only, and served to workers by its fingerprint.
TEST_F(WorkerApiTest, GptqTasksNameTheJobsCalibrationSetAndWorkersFetchIt) {
  const std::string calibration = (dir_ / "calibration.jsonl").string();
  ProbeSet rows;
  for (int i = 0; i < 3; ++i) rows.probes.push_back({"c" + std::to_string(i), {1, 2 + i, 3, 4 + i, 5}});
  ASSERT_TRUE(WriteProbeFile(calibration, rows).ok());
  const std::vector<std::vector<int32_t>> expected = {{1, 2, 3, 4}, {1, 3, 3, 5}};
  const std::string fingerprint = CalibrationFingerprint(4, expected);

  Register(*scheduler_, "w1");
  const std::string gptq = "model.layers.1.mlp.down_proj=gptq:4";
  std::string spec = EvaluateSpec(gptq + ", model.layers.0.mlp.up_proj=int8-absmax");
  spec = spec.substr(0, spec.find("evaluate:")) + "calibration: {probes: " + calibration +
         ", count: 2, seq_len: 4}\n" + spec.substr(spec.find("evaluate:"));
  const std::string id = Submit(*scheduler_, spec);
  std::vector<v1::Task> leased;
  Drive(*scheduler_, id, "w1", &leased);
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Job(*scheduler_, id).summary().calibration_fingerprint(), fingerprint);
  int gptq_tasks = 0;
  for (const v1::Task& task : leased) {
    const bool uses_gptq = task.key().config().canonical().find("gptq") != std::string::npos;
    EXPECT_EQ(task.key().calibration_fingerprint(), uses_gptq ? fingerprint : "") << task.key().config().canonical();
    gptq_tasks += uses_gptq;
  }
  EXPECT_GT(gptq_tasks, 0);

  v1::GetCalibrationSetRequest request;
  request.set_worker_id("w1");
  request.set_fingerprint(fingerprint);
  StatusOr<v1::CalibrationSet> set = scheduler_->worker().GetCalibrationSet(request);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->fingerprint(), fingerprint);
  EXPECT_EQ(set->seq_len(), 4u);
  ASSERT_EQ(set->sequences_size(), 2);
  for (int i = 0; i < 2; ++i) {
    std::vector<int32_t> tokens(set->sequences(i).tokens().begin(), set->sequences(i).tokens().end());
    EXPECT_EQ(tokens, expected[i]);
  }
  request.set_fingerprint(std::string(64, '0'));
  EXPECT_EQ(scheduler_->worker().GetCalibrationSet(request).status().code(), StatusCode::kNotFound);
  request.set_fingerprint("../../etc");
  EXPECT_EQ(scheduler_->worker().GetCalibrationSet(request).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(WorkerApiTest, RefusesAWorkerOfAnotherMinorVersion) {
  v1::RegisterWorkerRequest request;
  request.set_worker_id("old");
  request.set_model_fingerprint(kFingerprint);
  request.set_model_path(model_dir_);
  request.set_dtype(v1::DTYPE_F32);
  request.set_num_layers(kLayers);
  for (const std::string version : {"0.1.0", "0.2.0", "1.3.0", "", "0.3"}) {
    request.set_version(version);
    StatusOr<v1::RegisterWorkerResponse> response = api().RegisterWorker(request);
    ASSERT_FALSE(response.ok()) << version;
    EXPECT_EQ(response.status().code(), StatusCode::kFailedPrecondition) << version;
    EXPECT_THAT(response.status().message(), HasSubstr(kDtmVersion));
  }
}

TEST_F(WorkerApiTest, RegisteringAgainReleasesTheEarlierLeasesAndCountsAnAttempt) {
  const std::string id = StartedJob();
  std::vector<v1::Task> held = Lease(*scheduler_, "w1", 2);
  ASSERT_EQ(held.size(), 2u);
  Register(*scheduler_, "w1");  // the worker restarted: its work is lost
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("w1");
  heartbeat.add_lease_ids(held[0].lease_id());
  EXPECT_EQ(api().Heartbeat(heartbeat)->leases(0).state(), v1::LEASE_STATE_REVOKED);
  EXPECT_EQ(Job(*scheduler_, id).progress().tasks_requeued(), 2u);
  std::vector<v1::Task> again = Lease(*scheduler_, "w2", 3);
  ASSERT_EQ(again.size(), 3u);
  std::set<std::string> released = {held[0].task_id(), held[1].task_id()};
  for (const v1::Task& task : again) {
    if (released.count(task.task_id())) {
      EXPECT_EQ(task.attempt(), 2u) << "a lost lease counts as an attempt";
    }
  }
}

// Shard affinity: a worker that reports a shard's residual streams (LeaseTasksRequest.held_shards)
// is leased that shard's eval tasks first; another worker gets them only after the wait.
TEST_F(WorkerApiTest, AWorkerThatReportsAShardIsLeasedItsEvalTasksFirstAndOthersWait) {
  StartedJob();
  for (int round = 0; round < 20; ++round) {  // every baseline shard, then the first eval stage
    std::vector<v1::Task> tasks = Lease(*scheduler_, "w1", 8);
    if (tasks.empty()) break;
    for (const v1::Task& task : tasks) Complete(*scheduler_, task, "w1");
  }
  scheduler_->Tick();
  std::vector<v1::Task> queued = Lease(*scheduler_, "w1", 8);
  ASSERT_FALSE(queued.empty());
  ASSERT_EQ(queued[0].kind(), v1::TASK_KIND_EVAL_SHARD);
  // A shard other than the queue's first: its tasks come later in plain order.
  std::string later;
  for (const v1::Task& task : queued) {
    if (ShardTag(task.key()) != ShardTag(queued[0].key())) later = ShardTag(task.key());
  }
  ASSERT_FALSE(later.empty()) << "the probe spec has one shard";
  Register(*scheduler_, "w1");  // hands the leases back to the queue, in their places
  v1::LeaseTasksRequest request;
  request.set_worker_id("w2");
  request.set_max_tasks(2);
  request.set_request_id("affinity-1");
  request.add_held_shards(later);
  StatusOr<v1::LeaseTasksResponse> w2 = api().LeaseTasks(request);
  ASSERT_TRUE(w2.ok()) << w2.status().ToString();
  ASSERT_EQ(w2->tasks_size(), 2);
  for (const v1::Task& task : w2->tasks()) EXPECT_EQ(ShardTag(task.key()), later);
  // w1 holds nothing: the free shards' tasks, never w2's while they wait for it.
  for (const v1::Task& task : Lease(*scheduler_, "w1", 8)) EXPECT_NE(ShardTag(task.key()), later);
}

TEST_F(WorkerApiTest, ATaskOneWorkerCannotRunGoesToAnotherThatWorkerIsKeptOffAndNoAttemptIsSpent) {
  const std::string id = StartedJob();
  std::vector<v1::Task> first = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(first.size(), 1u);
  StatusOr<v1::FailTaskResponse> failed =
      api().FailTask(Failure(first[0], "w1", v1::FAILURE_CAUSE_WORKER, "f1", "this worker has no calibration set"));
  ASSERT_TRUE(failed.ok()) << failed.status().ToString();
  EXPECT_TRUE(failed->requeued());
  // w1 gets the other shards, never this one; w2 gets it, on its first attempt.
  for (const v1::Task& task : Lease(*scheduler_, "w1", 8)) EXPECT_NE(task.task_id(), first[0].task_id());
  std::vector<v1::Task> second = Lease(*scheduler_, "w2", 8);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].task_id(), first[0].task_id());
  EXPECT_EQ(second[0].attempt(), 1u);
  EXPECT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Job(*scheduler_, id).progress().tasks_failed(), 0u);
}

TEST_F(WorkerApiTest, ATaskNoRegisteredWorkerCanRunWaitsThenFailsWithEveryReason) {
  CoordinatorOptions options = Options();
  options.model_wait_ms = 1000;
  scheduler_ = Make(&store_, options);
  const std::string id = StartedJob();
  std::vector<v1::Task> task = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(task.size(), 1u);
  ASSERT_TRUE(api().FailTask(Failure(task[0], "w1", v1::FAILURE_CAUSE_WORKER, "f1", "no calibration on w1")).ok());
  std::vector<v1::Task> other = Lease(*scheduler_, "w2", 8);
  v1::Task* same = nullptr;
  for (v1::Task& t : other) {
    if (t.task_id() == task[0].task_id()) same = &t;
  }
  ASSERT_NE(same, nullptr);
  ASSERT_TRUE(api().FailTask(Failure(*same, "w2", v1::FAILURE_CAUSE_WORKER, "f2", "out of memory on w2")).ok());
  scheduler_->Tick();
  v1::Job job = Job(*scheduler_, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_THAT(job.progress().message(), HasSubstr("waiting for a worker that can run task"));
  EXPECT_THAT(job.progress().message(), HasSubstr("no calibration on w1"));
  clock_.Advance(std::chrono::milliseconds(1001));
  scheduler_->Tick();
  job = Job(*scheduler_, id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error().message(), HasSubstr("no registered worker can run it within 1 s"));
  EXPECT_THAT(job.error().message(), HasSubstr("w1: no calibration on w1"));
  EXPECT_THAT(job.error().message(), HasSubstr("w2: out of memory on w2"));
}

TEST_F(WorkerApiTest, FailTaskIsIdempotentOnItsRequestId) {
  const std::string id = StartedJob();
  std::vector<v1::Task> task = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(task.size(), 1u);
  const v1::FailTaskRequest request = Failure(task[0], "w1", v1::FAILURE_CAUSE_TRANSIENT, "once");
  StatusOr<v1::FailTaskResponse> first = api().FailTask(request);
  StatusOr<v1::FailTaskResponse> retried = api().FailTask(request);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ(first->requeued(), retried->requeued());
  EXPECT_EQ(Job(*scheduler_, id).progress().tasks_requeued(), 1u);
  // Another request id for the same ended lease is a second report: refused, counted nowhere.
  EXPECT_EQ(api().FailTask(Failure(task[0], "w1", v1::FAILURE_CAUSE_TRANSIENT, "twice")).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(WorkerApiTest, RefusesReportsUnderAnotherWorkersLease) {
  StartedJob();
  std::vector<v1::Task> task = Lease(*scheduler_, "w1", 1);
  ASSERT_EQ(task.size(), 1u);
  EXPECT_EQ(api().CompleteTask(Output(task[0], "w2")).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(api().FailTask(Failure(task[0], "w2", v1::FAILURE_CAUSE_TASK, "f")).status().code(),
            StatusCode::kPermissionDenied);
  // A worker of another model cannot report a task of this one, under any lease.
  Register(*scheduler_, "other", (dir_ / "other").string(), "another-fingerprint");
  v1::CompleteTaskRequest forged = Output(task[0], "other");
  forged.set_lease_id("lease-of-an-earlier-run");
  EXPECT_EQ(api().CompleteTask(forged).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Complete(*scheduler_, task[0], "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
}

TEST_F(WorkerApiTest, StoresTheReportingWorkersIdWithTheResult) {
  StartedJob();
  std::vector<v1::Task> task = Lease(*scheduler_, "w2", 1);
  ASSERT_EQ(task.size(), 1u);
  v1::CompleteTaskRequest request = Output(task[0], "w2");
  request.mutable_baseline()->set_computed_by("w1");  // a worker cannot name another
  ASSERT_TRUE(api().CompleteTask(request).ok());
  v1::BaselineShardOutput stored;
  ASSERT_TRUE(stored.ParseFromString(**store_.Get(BaselineStoreKey(task[0].task_id()))));
  EXPECT_EQ(stored.computed_by(), "w2");
  EXPECT_EQ(*store_.ListRange(WorkerResultsStoreKey("w2")), std::vector<std::string>{BaselineStoreKey(task[0].task_id())});
}

TEST_F(WorkerApiTest, AReportAfterARestartIsADuplicateWhenStoredAndNotFoundWhenNoJobNeedsIt) {
  StartedJob();
  std::vector<v1::Task> task = Lease(*scheduler_, "w1", 2);
  ASSERT_EQ(task.size(), 2u);
  ASSERT_EQ(Complete(*scheduler_, task[0], "w1"), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  scheduler_.reset();
  InMemoryStore empty;
  std::unique_ptr<Scheduler> restarted = Make(&store_);
  ASSERT_TRUE(restarted->Start().ok());
  Register(*restarted, "w1");
  // The same report again, to a coordinator that never leased it: the store has its result.
  StatusOr<v1::CompleteTaskResponse> again = restarted->worker().CompleteTask(Output(task[0], "w1", /*salt=*/3));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->outcome(), v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
  restarted->Stop();
  // A coordinator on another store knows neither the task nor its result.
  std::unique_ptr<Scheduler> elsewhere = Make(&empty);
  Register(*elsewhere, "w1");
  EXPECT_EQ(elsewhere->worker().CompleteTask(Output(task[1], "w1")).status().code(), StatusCode::kNotFound);
}

TEST_F(WorkerApiTest, OneLeaseReplyCarriesAtMost64Tasks) {
  // 100 configs (prune:0.001 ... prune:0.1, each distinct) on 3 shards.
  std::string configs;
  for (int i = 1; i <= 100; ++i) {
    char fraction[16];
    std::snprintf(fraction, sizeof fraction, "%.3f", i / 1000.0);
    configs += std::string(i > 1 ? ", " : "") + "model.layers.0.mlp.up_proj=prune:" + fraction;
  }
  Register(*scheduler_, "w1");
  const std::string id = Submit(*scheduler_, EvaluateSpec(configs));
  for (const v1::Task& task : Lease(*scheduler_, "w1", kShards)) Complete(*scheduler_, task, "w1");
  scheduler_->Tick();
  ASSERT_EQ(Job(*scheduler_, id).progress().tasks_total(), kShards + 101 * kShards);
  EXPECT_EQ(Lease(*scheduler_, "w1", 1000).size(), 64u);
}

}  // namespace
}  // namespace dtm
