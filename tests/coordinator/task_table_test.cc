#include "coordinator/task_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/clock.h"

namespace dtm {
namespace {

using std::chrono::milliseconds;

constexpr char kPool[] = "fp-a|DTYPE_F32";
constexpr char kOtherPool[] = "fp-b|DTYPE_BF16";
constexpr char kModel[] = "/models/a";

class TaskTableTest : public ::testing::Test {
 protected:
  static constexpr int64_t kTimeoutMs = 1000;

  static LeaseTable::Options Options() {
    LeaseTable::Options options;
    options.lease_timeout_ms = kTimeoutMs;
    options.max_attempts = 2;
    options.lease_id_prefix = "run7-";
    options.retention_ms = 60000;
    return options;
  }

  // An eval task of shard [begin, begin + 2), with two rows.
  static PlannedTask Planned(uint32_t begin, TaskKindForKey kind = TaskKindForKey::kEval) {
    PlannedTask task;
    task.kind = kind;
    task.key.set_model_fingerprint("fp-a");
    task.key.set_prefix_len(3);
    task.key.set_completion_len(4);
    task.key.mutable_shard()->set_begin(begin);
    task.key.mutable_shard()->set_end(begin + 2);
    auto rows = std::make_shared<Rows>(2);
    (*rows)[0].set_probe_index(begin);
    (*rows)[1].set_probe_index(begin + 1);
    task.rows = rows;
    task.task_id = TaskIdFor(kind, task.key);
    return task;
  }

  // Adds `task` to `pool` for `job`; expects success.
  void Add(const PlannedTask& task, const std::string& job, const std::string& pool = kPool) {
    Status added = table_.Add(task, pool, kModel, /*priority=*/0, job);
    ASSERT_TRUE(added.ok()) << added.ToString();
  }

  // Leases up to `max_tasks` of `pool` for `worker`.
  std::vector<LeaseGrant> Lease(const std::string& worker, int max_tasks = 1,
                                const std::string& pool = kPool) {
    auto grants = table_.Pool(pool).Lease(worker, max_tasks, "req-" + std::to_string(next_request_++));
    EXPECT_TRUE(grants.ok()) << grants.status().ToString();
    return grants.ok() ? *grants : std::vector<LeaseGrant>{};
  }

  FakeClock clock_;
  TaskTable table_{Options(), &clock_};
  int next_request_ = 0;
};

TEST_F(TaskTableTest, AddHoldsTheTaskForItsJobAndQueuesItInItsPool) {
  const PlannedTask task = Planned(0, TaskKindForKey::kBaseline);
  Add(task, "job-1");
  const TaskEntry* entry = table_.Find(task.task_id);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->kind, TaskKindForKey::kBaseline);
  EXPECT_EQ(entry->pool, kPool);
  EXPECT_EQ(entry->model_path, kModel);
  EXPECT_EQ(entry->key.SerializeAsString(), task.key.SerializeAsString());
  EXPECT_EQ(entry->rows, task.rows);
  EXPECT_EQ(entry->jobs, std::set<std::string>{"job-1"});
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{1, 0}));

  std::vector<LeaseGrant> grants = Lease("w1", 5);
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0].task_id, task.task_id);
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{0, 1}));
}

TEST_F(TaskTableTest, AddingATaskForASecondJobQueuesItOnce) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  Add(task, "job-2");
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.Find(task.task_id)->jobs, (std::set<std::string>{"job-1", "job-2"}));
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{1, 0}));
  EXPECT_EQ(Lease("w1", 5).size(), 1u);
  // Also while it is leased.
  Add(task, "job-3");
  EXPECT_EQ(table_.Find(task.task_id)->jobs.size(), 3u);
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{0, 1}));
}

TEST_F(TaskTableTest, AddQueuesByPriority) {
  const PlannedTask eval = Planned(0);
  const PlannedTask baseline = Planned(0, TaskKindForKey::kBaseline);
  ASSERT_TRUE(table_.Add(eval, kPool, kModel, /*priority=*/5, "job-1").ok());
  ASSERT_TRUE(table_.Add(baseline, kPool, kModel, /*priority=*/1, "job-1").ok());
  std::vector<LeaseGrant> grants = Lease("w1", 2);
  ASSERT_EQ(grants.size(), 2u);
  EXPECT_EQ(grants[0].task_id, baseline.task_id);
  EXPECT_EQ(grants[1].task_id, eval.task_id);
}

TEST_F(TaskTableTest, JoinAddsAWaiterOnlyToATaskTheTableHolds) {
  const PlannedTask task = Planned(0);
  EXPECT_FALSE(table_.Join(task.task_id, "job-1"));
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.Find(task.task_id), nullptr);
  Add(task, "job-1");
  EXPECT_TRUE(table_.Join(task.task_id, "job-2"));
  EXPECT_EQ(table_.Find(task.task_id)->jobs, (std::set<std::string>{"job-1", "job-2"}));
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{1, 0}));
}

TEST_F(TaskTableTest, FinishReturnsTheWaitingJobsAndForgetsTheTask) {
  const PlannedTask task = Planned(0);
  const PlannedTask other = Planned(2);
  Add(task, "job-1");
  Add(task, "job-2");
  Add(other, "job-1");
  EXPECT_EQ(table_.Finish(task.task_id), (std::set<std::string>{"job-1", "job-2"}));
  EXPECT_EQ(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_TRUE(table_.Finish(task.task_id).empty());
  EXPECT_FALSE(table_.Join(task.task_id, "job-3"));
  EXPECT_NE(table_.Find(other.task_id), nullptr);
}

TEST_F(TaskTableTest, ReleaseCancelsALeasedTaskNobodyWaitsFor) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  std::vector<LeaseGrant> grants = Lease("w1");
  ASSERT_EQ(grants.size(), 1u);
  table_.Release("job-1", {task.task_id});
  EXPECT_EQ(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.Pool(kPool).Heartbeat("w1", {grants[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kCancelled});
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{0, 0}));
}

TEST_F(TaskTableTest, ReleaseTakesAQueuedTaskNobodyWaitsForOffTheQueue) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  table_.Release("job-1", {task.task_id});
  EXPECT_EQ(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{0, 0}));
  EXPECT_TRUE(Lease("w1", 5).empty());
  // Planned again later, it runs again.
  Add(task, "job-2");
  EXPECT_EQ(Lease("w1", 5).size(), 1u);
}

TEST_F(TaskTableTest, ReleaseKeepsATaskAnotherJobWaitsFor) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  Add(task, "job-2");
  std::vector<LeaseGrant> grants = Lease("w1");
  ASSERT_EQ(grants.size(), 1u);
  table_.Release("job-1", {task.task_id});
  ASSERT_NE(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.Find(task.task_id)->jobs, std::set<std::string>{"job-2"});
  EXPECT_EQ(table_.Pool(kPool).Heartbeat("w1", {grants[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kValid});
  // Its last waiter gone, it is cancelled.
  table_.Release("job-2", {task.task_id});
  EXPECT_EQ(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.Pool(kPool).Heartbeat("w1", {grants[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kCancelled});
}

TEST_F(TaskTableTest, ReleaseIgnoresTasksTheTableDoesNotHoldOrTheJobDoesNotWaitFor) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  table_.Release("job-1", {"no-such-task"});
  table_.Release("job-2", {task.task_id});
  ASSERT_NE(table_.Find(task.task_id), nullptr);
  EXPECT_EQ(table_.Find(task.task_id)->jobs, std::set<std::string>{"job-1"});
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{1, 0}));
}

TEST_F(TaskTableTest, RecentlyDoneAfterACompletionInThePool) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  EXPECT_FALSE(table_.RecentlyDone(task.task_id, kPool));
  std::vector<LeaseGrant> grants = Lease("w1");
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_FALSE(table_.RecentlyDone(task.task_id, kPool));
  ASSERT_EQ(table_.Pool(kPool).Complete(grants[0].lease_id, task.task_id).value(), CompleteResult::kAccepted);
  EXPECT_TRUE(table_.RecentlyDone(task.task_id, kPool));
  // Only in its own pool, and a pool never used knows nothing.
  EXPECT_FALSE(table_.RecentlyDone(task.task_id, kOtherPool));
  EXPECT_FALSE(table_.RecentlyDone(Planned(2).task_id, kPool));
}

TEST_F(TaskTableTest, ForgetDoneForgetsThatATaskIsDoneAndKeepsTasksInFlight) {
  const PlannedTask done = Planned(0);
  const PlannedTask queued = Planned(2);
  Add(done, "job-1");
  std::vector<LeaseGrant> grants = Lease("w1");
  ASSERT_EQ(grants.size(), 1u);
  ASSERT_EQ(table_.Pool(kPool).Complete(grants[0].lease_id, done.task_id).value(), CompleteResult::kAccepted);
  Add(queued, "job-1");
  ASSERT_TRUE(table_.RecentlyDone(done.task_id, kPool));

  table_.ForgetDone({done.task_id, queued.task_id, "no-such-task"});
  EXPECT_FALSE(table_.RecentlyDone(done.task_id, kPool));
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{1, 0}));
  std::vector<LeaseGrant> next = Lease("w1");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].task_id, queued.task_id);
}

// After ForgetDone (its result was purged) the task may be planned again; a late report under a
// lease of its earlier run (the purged worker retrying) must then be a duplicate, as LeaseTable
// promises for a task enqueued again. Today the forgotten task starts over at the same generation,
// so the old lease's report is accepted and the new run's lease is revoked.
TEST_F(TaskTableTest, AReportUnderALeaseFromBeforeForgetDoneIsADuplicate) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  std::vector<LeaseGrant> old = Lease("w-bad");
  ASSERT_EQ(old.size(), 1u);
  ASSERT_EQ(table_.Pool(kPool).Complete(old[0].lease_id, task.task_id).value(), CompleteResult::kAccepted);
  ASSERT_TRUE(table_.Finish(task.task_id).count("job-1"));

  table_.ForgetDone({task.task_id});
  Add(task, "job-2");
  std::vector<LeaseGrant> rerun = Lease("w-good");
  ASSERT_EQ(rerun.size(), 1u);
  EXPECT_EQ(table_.Pool(kPool).Complete(old[0].lease_id, task.task_id).value(), CompleteResult::kDuplicate);
  EXPECT_EQ(table_.Pool(kPool).Heartbeat("w-good", {rerun[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kValid});
}

TEST_F(TaskTableTest, ExpireReQueuesExpiredLeasesAndReportsTasksOutOfAttempts) {
  const PlannedTask first = Planned(0);
  const PlannedTask second = Planned(2);
  Add(first, "job-1");
  Add(second, "job-1");
  ASSERT_EQ(Lease("w1", 2).size(), 2u);
  clock_.Advance(milliseconds(kTimeoutMs - 1));
  EXPECT_TRUE(table_.Expire().requeued.empty());

  clock_.Advance(milliseconds(1));
  TaskTable::Sweep sweep = table_.Expire();
  EXPECT_EQ(std::set<std::string>(sweep.requeued.begin(), sweep.requeued.end()),
            (std::set<std::string>{first.task_id, second.task_id}));
  EXPECT_TRUE(sweep.failed.empty());
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{2, 0}));

  // The second expiry uses the last of max_attempts = 2.
  ASSERT_EQ(Lease("w2", 2).size(), 2u);
  clock_.Advance(milliseconds(kTimeoutMs));
  sweep = table_.Expire();
  EXPECT_TRUE(sweep.requeued.empty());
  EXPECT_EQ(std::set<std::string>(sweep.failed.begin(), sweep.failed.end()),
            (std::set<std::string>{first.task_id, second.task_id}));
  // Each failure is reported once.
  sweep = table_.Expire();
  EXPECT_TRUE(sweep.requeued.empty());
  EXPECT_TRUE(sweep.failed.empty());
}

TEST_F(TaskTableTest, ExpireSweepsEveryPool) {
  const PlannedTask in_a = Planned(0);
  const PlannedTask in_b = Planned(4);
  Add(in_a, "job-1", kPool);
  Add(in_b, "job-2", kOtherPool);
  ASSERT_EQ(Lease("w1", 1, kPool).size(), 1u);
  ASSERT_EQ(Lease("w2", 1, kOtherPool).size(), 1u);
  clock_.Advance(milliseconds(kTimeoutMs));
  TaskTable::Sweep sweep = table_.Expire();
  EXPECT_EQ(std::set<std::string>(sweep.requeued.begin(), sweep.requeued.end()),
            (std::set<std::string>{in_a.task_id, in_b.task_id}));
}

TEST_F(TaskTableTest, ExpireReportsATaskThatFailedForGood) {
  const PlannedTask task = Planned(0);
  Add(task, "job-1");
  std::vector<LeaseGrant> grants = Lease("w1");
  ASSERT_EQ(grants.size(), 1u);
  ASSERT_EQ(table_.Pool(kPool).Fail(grants[0].lease_id, FailCause::kTask, "bad config").value(),
            FailResult::kFailed);
  TaskTable::Sweep sweep = table_.Expire();
  EXPECT_EQ(sweep.failed, std::vector<std::string>{task.task_id});
  EXPECT_TRUE(sweep.requeued.empty());
}

TEST_F(TaskTableTest, ExcludedListsTasksSomeWorkerCannotRunWithTheirPools) {
  const PlannedTask task = Planned(0);
  const PlannedTask other = Planned(2);
  Add(task, "job-1", kOtherPool);
  Add(other, "job-1", kPool);
  EXPECT_TRUE(table_.Excluded().empty());
  std::vector<LeaseGrant> grants = Lease("w1", 1, kOtherPool);
  ASSERT_EQ(grants.size(), 1u);
  ASSERT_EQ(table_.Pool(kOtherPool).Fail(grants[0].lease_id, FailCause::kWorker, "no GPU memory").value(),
            FailResult::kRequeued);

  std::vector<std::pair<std::string, ExcludedTask>> excluded = table_.Excluded();
  ASSERT_EQ(excluded.size(), 1u);
  EXPECT_EQ(excluded[0].first, kOtherPool);
  EXPECT_EQ(excluded[0].second.task_id, task.task_id);
  EXPECT_EQ(excluded[0].second.unable, (std::map<std::string, std::string>{{"w1", "no GPU memory"}}));
  EXPECT_EQ(excluded[0].second.since, clock_.Now());
}

TEST_F(TaskTableTest, QueuedAndLeasedCountsEveryPool) {
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{0, 0}));
  Add(Planned(0), "job-1", kPool);
  Add(Planned(2), "job-1", kPool);
  Add(Planned(4), "job-2", kOtherPool);
  ASSERT_EQ(Lease("w1", 1, kPool).size(), 1u);
  EXPECT_EQ(table_.QueuedAndLeased(), (std::pair<int64_t, int64_t>{2, 1}));
}

TEST_F(TaskTableTest, PoolsAreSeparateWithDistinctLeaseIds) {
  const PlannedTask in_a = Planned(0);
  const PlannedTask in_b = Planned(4);
  Add(in_a, "job-1", kPool);
  Add(in_b, "job-1", kOtherPool);
  EXPECT_EQ(&table_.Pool(kPool), &table_.Pool(kPool));
  EXPECT_NE(&table_.Pool(kPool), &table_.Pool(kOtherPool));

  // A worker of one pool is never handed the other pool's task.
  std::vector<LeaseGrant> from_a = Lease("w1", 5, kPool);
  std::vector<LeaseGrant> from_b = Lease("w2", 5, kOtherPool);
  ASSERT_EQ(from_a.size(), 1u);
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_a[0].task_id, in_a.task_id);
  EXPECT_EQ(from_b[0].task_id, in_b.task_id);

  // Both are each pool's first lease, yet their ids differ, both under the coordinator's prefix,
  // and neither pool knows the other's.
  EXPECT_NE(from_a[0].lease_id, from_b[0].lease_id);
  EXPECT_EQ(from_a[0].lease_id.rfind("run7-", 0), 0u) << from_a[0].lease_id;
  EXPECT_EQ(from_b[0].lease_id.rfind("run7-", 0), 0u) << from_b[0].lease_id;
  EXPECT_FALSE(table_.Pool(kPool).FindLease(from_b[0].lease_id).has_value());
  EXPECT_FALSE(table_.Pool(kOtherPool).FindLease(from_a[0].lease_id).has_value());
  EXPECT_EQ(table_.Pool(kPool).Heartbeat("w2", {from_b[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kUnknown});
}

}  // namespace
}  // namespace dtm
