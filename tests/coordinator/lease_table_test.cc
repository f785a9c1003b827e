#include "coordinator/lease_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/clock.h"

namespace dtm {
namespace {

using std::chrono::milliseconds;

class LeaseTableTest : public ::testing::Test {
 protected:
  static constexpr int64_t kTimeoutMs = 1000;

  void SetUp() override { table_ = Make(/*max_attempts=*/3); }

  std::unique_ptr<LeaseTable> Make(int max_attempts) {
    LeaseTable::Options options;
    options.lease_timeout_ms = kTimeoutMs;
    options.max_attempts = max_attempts;
    auto table = LeaseTable::Create(options, &clock_);
    EXPECT_TRUE(table.ok()) << table.status().ToString();
    return std::move(table).value();
  }

  // Leases under a fresh request id; expects success.
  std::vector<LeaseGrant> LeaseNew(const std::string& worker, int max_tasks) {
    auto grants = table_->Lease(worker, max_tasks, "req-" + std::to_string(next_request_++));
    EXPECT_TRUE(grants.ok()) << grants.status().ToString();
    return grants.ok() ? *grants : std::vector<LeaseGrant>{};
  }

  LeaseGrant LeaseOne(const std::string& worker) {
    auto grants = LeaseNew(worker, 1);
    EXPECT_EQ(grants.size(), 1u);
    return grants.empty() ? LeaseGrant{} : grants[0];
  }

  FakeClock clock_;
  std::unique_ptr<LeaseTable> table_;
  int next_request_ = 0;
};

TEST_F(LeaseTableTest, RejectsNonPositiveOptions) {
  LeaseTable::Options options;
  options.lease_timeout_ms = 0;
  EXPECT_EQ(LeaseTable::Create(options, &clock_).status().code(), StatusCode::kInvalidArgument);
  options = {};
  options.max_attempts = 0;
  EXPECT_EQ(LeaseTable::Create(options, &clock_).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LeaseTableTest, EnqueueRejectsATaskThatIsStillPending) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  EXPECT_EQ(table_->Enqueue("t1", 0).code(), StatusCode::kAlreadyExists);
  LeaseGrant g = LeaseOne("w1");
  EXPECT_EQ(table_->Enqueue("t1", 0).code(), StatusCode::kAlreadyExists);
  ASSERT_EQ(*table_->Complete(g.lease_id, "t1"), CompleteResult::kAccepted);
  // Finished: it may run again, and the old lease's result is stale.
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  EXPECT_EQ(*table_->Complete(g.lease_id, "t1"), CompleteResult::kDuplicate);
  EXPECT_EQ(LeaseOne("w1").attempt, 1);
}

TEST_F(LeaseTableTest, ReQueuesTaskWhenLeaseExpires) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant g = LeaseOne("w1");
  EXPECT_EQ(g.attempt, 1);
  EXPECT_EQ(g.expires_at, clock_.Now() + milliseconds(kTimeoutMs));

  clock_.Advance(milliseconds(kTimeoutMs - 1));
  EXPECT_TRUE(table_->ExpireLeases().empty());
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(table_->ExpireLeases(), std::vector<std::string>{"t1"});

  EXPECT_EQ(table_->Heartbeat("w1", {g.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kExpired});
  LeaseGrant again = LeaseOne("w2");
  EXPECT_EQ(again.task_id, "t1");
  EXPECT_EQ(again.attempt, 2);
  EXPECT_NE(again.lease_id, g.lease_id);
}

TEST_F(LeaseTableTest, HeartbeatOnALeasePastExpiryExpiresItWithoutWaitingForTheSweep) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant g = LeaseOne("w1");
  clock_.Advance(milliseconds(kTimeoutMs));
  EXPECT_EQ(table_->Heartbeat("w1", {g.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kExpired});
  EXPECT_EQ(table_->Stats().queued, 1);
  EXPECT_EQ(table_->Stats().expired_total, 1);
  EXPECT_TRUE(table_->ExpireLeases().empty());
}

TEST_F(LeaseTableTest, HeartbeatExtendsTheLease) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant g = LeaseOne("w1");
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(milliseconds(kTimeoutMs - 1));
    EXPECT_EQ(table_->Heartbeat("w1", {g.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kValid});
    EXPECT_TRUE(table_->ExpireLeases().empty());
  }
  // Another worker cannot keep it alive, nor learn about it.
  EXPECT_EQ(table_->Heartbeat("w2", {g.lease_id, "nope"}),
            (std::vector<HeartbeatResult>{HeartbeatResult::kUnknown, HeartbeatResult::kUnknown}));
  clock_.Advance(milliseconds(kTimeoutMs));
  EXPECT_EQ(table_->ExpireLeases(), std::vector<std::string>{"t1"});
}

TEST_F(LeaseTableTest, AcceptsAResultOnce) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant dead = LeaseOne("w1");
  clock_.Advance(milliseconds(kTimeoutMs));
  ASSERT_EQ(table_->ExpireLeases(), std::vector<std::string>{"t1"});
  LeaseGrant alive = LeaseOne("w2");

  EXPECT_EQ(*table_->Complete(alive.lease_id, "t1"), CompleteResult::kAccepted);
  LeaseTableStats before = table_->Stats();
  // The presumed-dead worker's late result changes nothing.
  EXPECT_EQ(*table_->Complete(dead.lease_id, "t1"), CompleteResult::kDuplicate);
  EXPECT_EQ(*table_->Complete(alive.lease_id, "t1"), CompleteResult::kDuplicate);
  LeaseTableStats after = table_->Stats();
  EXPECT_EQ(after.done, 1);
  EXPECT_EQ(after.done, before.done);
  EXPECT_EQ(after.queued, before.queued);
  EXPECT_EQ(after.leased, before.leased);
  EXPECT_EQ(after.requeued_total, before.requeued_total);
  EXPECT_TRUE(LeaseNew("w3", 5).empty());

  EXPECT_EQ(table_->Complete("nope", "t1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(table_->Complete(alive.lease_id, "t2").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LeaseTableTest, LateResultFromAnExpiredLeaseWinsIfFirstAndRevokesTheOtherLease) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant slow = LeaseOne("w1");
  clock_.Advance(milliseconds(kTimeoutMs));
  ASSERT_EQ(table_->ExpireLeases(), std::vector<std::string>{"t1"});
  LeaseGrant other = LeaseOne("w2");

  EXPECT_EQ(*table_->Complete(slow.lease_id, "t1"), CompleteResult::kAccepted);
  EXPECT_EQ(table_->Heartbeat("w2", {other.lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kRevoked});
  EXPECT_EQ(*table_->Complete(other.lease_id, "t1"), CompleteResult::kDuplicate);
  EXPECT_EQ(table_->Stats().done, 1);
  EXPECT_EQ(table_->Stats().leased, 0);
}

TEST_F(LeaseTableTest, LeaseRequestsAreIdempotent) {
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(table_->Enqueue("t" + std::to_string(i), 0).ok());
  auto first = table_->Lease("w1", 2, "r1");
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  auto retry = table_->Lease("w1", 2, "r1");
  ASSERT_TRUE(retry.ok());
  ASSERT_EQ(retry->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*retry)[i].lease_id, (*first)[i].lease_id);
    EXPECT_EQ((*retry)[i].task_id, (*first)[i].task_id);
    EXPECT_EQ((*retry)[i].expires_at, (*first)[i].expires_at);
  }
  EXPECT_EQ(table_->Stats().leased, 2);
  EXPECT_EQ(table_->Stats().queued, 2);
  // The same id from another worker is another request.
  auto other = table_->Lease("w2", 2, "r1");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->size(), 2u);
  EXPECT_EQ(table_->Stats().queued, 0);

  EXPECT_EQ(table_->Lease("w1", 0, "r9").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(table_->Lease("w1", 1, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(table_->Lease("", 1, "r9").status().code(), StatusCode::kInvalidArgument);
}

// A reply must fit a message whatever its tasks carry (a ppl text-windows task holds up to 4 MiB).
TEST_F(LeaseTableTest, GrantsStopBeforeTheTaskThatWouldPassTheByteBudget) {
  const std::map<std::string, uint64_t> bytes = {{"t0", 40}, {"t1", 50}, {"t2", 20}, {"t3", 200}, {"t4", 5}};
  for (const auto& [id, size] : bytes) ASSERT_TRUE(table_->Enqueue(id, 0).ok());
  auto bytes_of = [&bytes](const std::string& id) { return bytes.at(id); };
  // 40 + 50 fit 100; t2 would make 110: the reply stops there, in queue order, t2 first next time.
  auto first = table_->Lease("w1", 10, "r1", bytes_of, 100);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].task_id, "t0");
  EXPECT_EQ((*first)[1].task_id, "t1");
  // A task larger than the budget still goes, alone: it could never go otherwise.
  auto second = table_->Lease("w1", 10, "r2", bytes_of, 100);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].task_id, "t2");
  auto third = table_->Lease("w1", 10, "r3", bytes_of, 100);
  ASSERT_TRUE(third.ok());
  ASSERT_EQ(third->size(), 1u);
  EXPECT_EQ((*third)[0].task_id, "t3");
  // Without a budget, max_tasks alone bounds the reply.
  EXPECT_EQ(LeaseNew("w2", 10).size(), 1u);
  EXPECT_EQ(table_->Stats().queued, 0);
}

TEST_F(LeaseTableTest, LowerPriorityRunsFirstThenFifo) {
  ASSERT_TRUE(table_->Enqueue("eval-a", 1).ok());
  ASSERT_TRUE(table_->Enqueue("base-a", 0).ok());
  ASSERT_TRUE(table_->Enqueue("eval-b", 1).ok());
  ASSERT_TRUE(table_->Enqueue("base-b", 0).ok());
  std::vector<std::string> order;
  for (const LeaseGrant& g : LeaseNew("w1", 10)) order.push_back(g.task_id);
  EXPECT_EQ(order, (std::vector<std::string>{"base-a", "base-b", "eval-a", "eval-b"}));
}

TEST_F(LeaseTableTest, ARequeuedTaskKeepsItsPlaceInTheQueue) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant g = LeaseOne("w1");
  ASSERT_TRUE(table_->Enqueue("t2", 0).ok());
  ASSERT_EQ(*table_->Fail(g.lease_id, FailCause::kTransient), FailResult::kRequeued);
  EXPECT_EQ(LeaseOne("w1").task_id, "t1");
}

TEST_F(LeaseTableTest, FailRetriesThenGivesUp) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    LeaseGrant g = LeaseOne("w1");
    EXPECT_EQ(g.attempt, attempt);
    EXPECT_EQ(*table_->Fail(g.lease_id, FailCause::kTransient),
              attempt < 3 ? FailResult::kRequeued : FailResult::kFailed);
    // Reporting the same failure twice must not count it twice.
    EXPECT_EQ(table_->Fail(g.lease_id, FailCause::kTransient).status().code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(LeaseNew("w1", 1).empty());
  EXPECT_EQ(table_->Stats().failed, 1);
  EXPECT_EQ(table_->Stats().requeued_total, 2);

  ASSERT_TRUE(table_->Enqueue("t2", 0).ok());
  LeaseGrant g = LeaseOne("w1");
  EXPECT_EQ(*table_->Fail(g.lease_id, FailCause::kTask), FailResult::kFailed);
  EXPECT_EQ(table_->Complete(g.lease_id, "t2").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_->Fail("nope", FailCause::kTransient).status().code(), StatusCode::kNotFound);
}

TEST_F(LeaseTableTest, ExpiryCountsAsAnAttempt) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    EXPECT_EQ(LeaseOne("w1").attempt, attempt);
    clock_.Advance(milliseconds(kTimeoutMs));
    EXPECT_EQ(table_->ExpireLeases().size(), attempt < 3 ? 1u : 0u);
  }
  EXPECT_EQ(table_->Stats().failed, 1);
  EXPECT_EQ(table_->Stats().expired_total, 3);
}

TEST_F(LeaseTableTest, ReleaseWorkerReturnsLeasesWithoutCountingAnAttempt) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  ASSERT_TRUE(table_->Enqueue("t2", 0).ok());
  ASSERT_TRUE(table_->Enqueue("t3", 0).ok());
  auto drained = table_->Lease("w1", 2, "r1");
  ASSERT_TRUE(drained.ok());
  LeaseGrant kept = LeaseOne("w2");

  std::vector<std::string> released = table_->ReleaseWorker("w1", ReleaseReason::kDrained);
  EXPECT_EQ(released.size(), 2u);
  EXPECT_EQ(table_->Heartbeat("w1", {(*drained)[0].lease_id}),
            std::vector<HeartbeatResult>{HeartbeatResult::kRevoked});
  EXPECT_EQ(table_->Heartbeat("w2", {kept.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kValid});

  // A retried request after the drain leases afresh; the attempt is unchanged.
  auto again = table_->Lease("w1", 5, "r1");
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 2u);
  for (const LeaseGrant& g : *again) {
    EXPECT_EQ(g.attempt, 1);
    EXPECT_NE(g.lease_id, (*drained)[0].lease_id);
  }
  EXPECT_EQ(table_->Stats().requeued_total, 2);
  EXPECT_EQ(table_->Stats().expired_total, 0);
}

TEST_F(LeaseTableTest, CancelledTaskIsNotLeasedAndItsLeaseReportsCancelled) {
  ASSERT_TRUE(table_->Enqueue("queued", 0).ok());
  ASSERT_TRUE(table_->Enqueue("leased", -1).ok());
  LeaseGrant g = LeaseOne("w1");
  ASSERT_EQ(g.task_id, "leased");

  ASSERT_TRUE(table_->Cancel("queued").ok());
  ASSERT_TRUE(table_->Cancel("leased").ok());
  EXPECT_TRUE(table_->Cancel("leased").ok());
  EXPECT_EQ(table_->Cancel("nope").code(), StatusCode::kNotFound);

  EXPECT_TRUE(LeaseNew("w2", 5).empty());
  EXPECT_EQ(table_->Heartbeat("w1", {g.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kCancelled});
  EXPECT_EQ(*table_->Complete(g.lease_id, "leased"), CompleteResult::kCancelled);
  clock_.Advance(milliseconds(kTimeoutMs));
  EXPECT_TRUE(table_->ExpireLeases().empty());
  EXPECT_EQ(table_->Stats().cancelled, 2);
  EXPECT_EQ(table_->Stats().done, 0);

  ASSERT_TRUE(table_->Enqueue("done", 0).ok());
  LeaseGrant d = LeaseOne("w1");
  ASSERT_EQ(*table_->Complete(d.lease_id, "done"), CompleteResult::kAccepted);
  EXPECT_EQ(table_->Cancel("done").code(), StatusCode::kFailedPrecondition);
}

TEST_F(LeaseTableTest, StatsCountEveryTransition) {
  auto expect = [&](int64_t queued, int64_t leased, int64_t done, int64_t failed, int64_t cancelled,
                    int64_t requeued, int64_t expired) {
    LeaseTableStats s = table_->Stats();
    EXPECT_EQ(s.queued, queued);
    EXPECT_EQ(s.leased, leased);
    EXPECT_EQ(s.done, done);
    EXPECT_EQ(s.failed, failed);
    EXPECT_EQ(s.cancelled, cancelled);
    EXPECT_EQ(s.requeued_total, requeued);
    EXPECT_EQ(s.expired_total, expired);
  };
  expect(0, 0, 0, 0, 0, 0, 0);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(table_->Enqueue("t" + std::to_string(i), 0).ok());
  expect(5, 0, 0, 0, 0, 0, 0);
  std::vector<LeaseGrant> g = LeaseNew("w1", 4);  // t0..t3
  expect(1, 4, 0, 0, 0, 0, 0);
  ASSERT_EQ(*table_->Complete(g[0].lease_id, "t0"), CompleteResult::kAccepted);
  expect(1, 3, 1, 0, 0, 0, 0);
  ASSERT_EQ(*table_->Fail(g[1].lease_id, FailCause::kTransient), FailResult::kRequeued);
  expect(2, 2, 1, 0, 0, 1, 0);
  ASSERT_EQ(*table_->Fail(g[2].lease_id, FailCause::kTask), FailResult::kFailed);
  expect(2, 1, 1, 1, 0, 1, 0);
  clock_.Advance(milliseconds(kTimeoutMs));
  ASSERT_EQ(table_->ExpireLeases(), std::vector<std::string>{"t3"});
  expect(3, 0, 1, 1, 0, 2, 1);
  ASSERT_TRUE(table_->Cancel("t4").ok());
  expect(2, 0, 1, 1, 1, 2, 1);
  ASSERT_EQ(LeaseNew("w2", 5).size(), 2u);
  expect(0, 2, 1, 1, 1, 2, 1);
  EXPECT_EQ(table_->ReleaseWorker("w2", ReleaseReason::kDrained).size(), 2u);
  expect(2, 0, 1, 1, 1, 4, 1);
  ASSERT_TRUE(table_->Enqueue("t0", 0).ok());  // done, so it may run again
  expect(3, 0, 0, 1, 1, 4, 1);
}

TEST_F(LeaseTableTest, ReleaseOfARestartedWorkerCountsAnAttemptLikeAnExpiry) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    EXPECT_EQ(LeaseOne("w1").attempt, attempt);
    EXPECT_EQ(table_->ReleaseWorker("w1", ReleaseReason::kLost).size(), attempt < 3 ? 1u : 0u);
  }
  // A task that kills its worker each time fails in the end, as it would by expiring.
  EXPECT_EQ(table_->TakeFailedTasks(), std::vector<std::string>{"t1"});
  EXPECT_EQ(table_->Stats().failed, 1);
}

TEST_F(LeaseTableTest, AWorkerThatCannotRunATaskIsKeptOffItWithoutSpendingAnAttempt) {
  ASSERT_TRUE(table_->Enqueue("gptq", 0).ok());
  ASSERT_TRUE(table_->Enqueue("int8", 1).ok());
  LeaseGrant g = LeaseOne("w1");
  ASSERT_EQ(g.task_id, "gptq");
  EXPECT_EQ(*table_->Fail(g.lease_id, FailCause::kWorker, "w1: no calibration"), FailResult::kRequeued);
  EXPECT_EQ(LeaseOne("w1").task_id, "int8");
  // w1 skips it, keeping its place for others; w2 gets it on its first attempt.
  std::vector<ExcludedTask> excluded = table_->QueuedWithExclusions();
  ASSERT_EQ(excluded.size(), 1u);
  EXPECT_EQ(excluded[0].task_id, "gptq");
  EXPECT_EQ(excluded[0].unable, (std::map<std::string, std::string>{{"w1", "w1: no calibration"}}));
  EXPECT_TRUE(LeaseNew("w1", 5).empty());
  LeaseGrant other = LeaseOne("w2");
  EXPECT_EQ(other.task_id, "gptq");
  EXPECT_EQ(other.attempt, 1);
  EXPECT_EQ(table_->Stats().failed, 0);
}

TEST_F(LeaseTableTest, GiveUpFailsAQueuedTaskOnly) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  ASSERT_TRUE(table_->Enqueue("t2", 0).ok());
  LeaseGrant leased = LeaseOne("w1");
  EXPECT_EQ(table_->GiveUp(leased.task_id).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(table_->GiveUp("t2").ok());
  EXPECT_TRUE(LeaseNew("w2", 5).empty());
  EXPECT_EQ(table_->Stats().failed, 1);
  EXPECT_TRUE(table_->TakeFailedTasks().empty()) << "the caller reports what it gave up";
}

TEST_F(LeaseTableTest, FindLeaseTellsItsWorkerAndWhenItWasGranted) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  const auto granted = clock_.Now();
  LeaseGrant g = LeaseOne("w1");
  clock_.Advance(milliseconds(10));
  std::optional<LeaseInfo> info = table_->FindLease(g.lease_id);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->task_id, "t1");
  EXPECT_EQ(info->worker_id, "w1");
  EXPECT_EQ(info->leased_at, granted);
  EXPECT_TRUE(info->active);
  ASSERT_EQ(*table_->Complete(g.lease_id, "t1"), CompleteResult::kAccepted);
  EXPECT_FALSE(table_->FindLease(g.lease_id)->active);
  EXPECT_FALSE(table_->FindLease("nope").has_value());
}

TEST_F(LeaseTableTest, AResultUnderNoKnownLeaseIsAcceptedOnceAndRevokesTheHolder) {
  ASSERT_TRUE(table_->Enqueue("t1", 0).ok());
  LeaseGrant holder = LeaseOne("w1");
  EXPECT_EQ(*table_->CompleteWithoutLease("t1"), CompleteResult::kAccepted);
  EXPECT_EQ(table_->Heartbeat("w1", {holder.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kRevoked});
  EXPECT_EQ(*table_->CompleteWithoutLease("t1"), CompleteResult::kDuplicate);
  EXPECT_EQ(*table_->Complete(holder.lease_id, "t1"), CompleteResult::kDuplicate);
  EXPECT_TRUE(table_->IsDone("t1"));
  EXPECT_EQ(table_->CompleteWithoutLease("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(LeaseTableTest, ForgetsEndedLeasesAndFinishedTasksAfterTheRetention) {
  LeaseTable::Options options;
  options.lease_timeout_ms = kTimeoutMs;
  options.retention_ms = 5 * kTimeoutMs;
  table_ = std::move(LeaseTable::Create(options, &clock_)).value();
  ASSERT_TRUE(table_->Enqueue("done", 0).ok());
  ASSERT_TRUE(table_->Enqueue("running", 0).ok());
  LeaseGrant d = LeaseOne("w1");
  ASSERT_EQ(*table_->Complete(d.lease_id, "done"), CompleteResult::kAccepted);
  LeaseGrant r = LeaseOne("w1");

  // Within the retention a late report gets a precise answer.
  clock_.Advance(milliseconds(4 * kTimeoutMs));
  EXPECT_EQ(table_->Heartbeat("w1", {r.lease_id}), std::vector<HeartbeatResult>{HeartbeatResult::kExpired});
  ASSERT_EQ(table_->ExpireLeases().size(), 0u);
  EXPECT_EQ(*table_->Complete(d.lease_id, "done"), CompleteResult::kDuplicate);
  EXPECT_TRUE(table_->IsDone("done"));

  // Past it, the finished task and its lease are gone; the task still in the queue is not.
  clock_.Advance(milliseconds(2 * kTimeoutMs));
  (void)table_->ExpireLeases();
  EXPECT_FALSE(table_->IsDone("done"));
  EXPECT_FALSE(table_->FindLease(d.lease_id).has_value());
  EXPECT_EQ(table_->Complete(d.lease_id, "done").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(LeaseOne("w2").task_id, "running");
  // Forgotten, a task may be enqueued afresh.
  EXPECT_TRUE(table_->Enqueue("done", 0).ok());
}

TEST_F(LeaseTableTest, ConcurrentWorkersHaveEachTaskAcceptedExactlyOnce) {
  constexpr int kTasks = 1000;
  constexpr int kThreads = 8;
  // Enough attempts that no task fails, so every task must end with exactly one accepted result.
  table_ = Make(/*max_attempts=*/1000000);
  for (int i = 0; i < kTasks; ++i) ASSERT_TRUE(table_->Enqueue("t" + std::to_string(i), i % 3).ok());

  std::vector<std::map<std::string, int>> accepted_by_thread(kThreads);
  std::vector<std::thread> threads;
  std::atomic<bool> stop_clock{false};
  // Time moves and leases expire while workers run, so duplicates and re-leases really happen.
  std::thread ticker([&] {
    while (!stop_clock.load()) {
      clock_.Advance(milliseconds(kTimeoutMs / 4));
      table_->ExpireLeases();
      std::this_thread::yield();
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string worker = "w" + std::to_string(t);
      int request = 0;
      while (true) {
        auto grants = table_->Lease(worker, 3, "r" + std::to_string(request++));
        ASSERT_TRUE(grants.ok());
        if (grants->empty()) {
          LeaseTableStats s = table_->Stats();
          if (s.queued == 0 && s.leased == 0) return;
          std::this_thread::yield();
          continue;
        }
        for (const LeaseGrant& g : *grants) {
          table_->Heartbeat(worker, {g.lease_id});
          auto result = table_->Complete(g.lease_id, g.task_id);
          if (result.ok() && *result == CompleteResult::kAccepted) ++accepted_by_thread[t][g.task_id];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  stop_clock = true;
  ticker.join();

  std::map<std::string, int> accepted;
  for (const auto& m : accepted_by_thread) {
    for (const auto& [task, n] : m) accepted[task] += n;
  }
  LeaseTableStats s = table_->Stats();
  EXPECT_EQ(s.done, kTasks);
  EXPECT_EQ(static_cast<int>(accepted.size()), kTasks);
  for (const auto& [task, n] : accepted) EXPECT_EQ(n, 1) << task;
  EXPECT_EQ(s.queued, 0);
  EXPECT_EQ(s.leased, 0);
}

// Shard affinity (step 2 of the class comment): a worker's own shards first, others' only after the
// wait or when it would otherwise idle.
TEST_F(LeaseTableTest, AffinityLeasesAWorkersOwnShardsFirstAndOthersOnlyAfterTheWait) {
  ASSERT_TRUE(table_->Enqueue("a-mine", 1).ok());
  ASSERT_TRUE(table_->Enqueue("b-theirs", 1).ok());
  ASSERT_TRUE(table_->Enqueue("c-free", 1).ok());
  ASSERT_TRUE(table_->Enqueue("d-mine", 1).ok());
  // Seen from worker w1: "mine" are held by w1, "theirs" by another worker.
  auto affinity = [](const std::string& task) {
    if (task.find("mine") != std::string::npos) return LeaseAffinity::kHeld;
    if (task.find("theirs") != std::string::npos) return LeaseAffinity::kHeldElsewhere;
    return LeaseAffinity::kFree;
  };
  auto lease = [&](int n) {
    auto grants = table_->Lease("w1", n, "req-" + std::to_string(next_request_++), nullptr, 0, affinity);
    EXPECT_TRUE(grants.ok()) << grants.status().ToString();
    std::vector<std::string> ids;
    for (const LeaseGrant& g : grants.ok() ? *grants : std::vector<LeaseGrant>{}) ids.push_back(g.task_id);
    return ids;
  };
  EXPECT_EQ(lease(1), std::vector<std::string>({"a-mine"}));
  EXPECT_EQ(lease(4), std::vector<std::string>({"d-mine", "c-free"}));  // "theirs" waits for its holder
  ASSERT_TRUE(table_->Enqueue("g-theirs", 1).ok());
  ASSERT_TRUE(table_->Enqueue("h-theirs", 1).ok());
  // With nothing of its own or free left, w1 takes the oldest of the others' rather than idle; one
  // per request, so that their holder keeps the rest.
  EXPECT_EQ(lease(4), std::vector<std::string>({"b-theirs"}));
  clock_.Advance(milliseconds(LeaseTable::Options().affinity_wait_ms));
  // Locality never holds work back for longer than the wait: then all of them.
  EXPECT_EQ(lease(4), std::vector<std::string>({"g-theirs", "h-theirs"}));
  // Without an affinity, the queue's order.
  ASSERT_TRUE(table_->Enqueue("e-theirs", 1).ok());
  ASSERT_TRUE(table_->Enqueue("f-mine", 1).ok());
  EXPECT_EQ(LeaseNew("w1", 1)[0].task_id, "e-theirs");
}

TEST_F(LeaseTableTest, AffinityKeepsPriorityOrderAmongEqualsAndSkipsTasksAWorkerCannotRun) {
  ASSERT_TRUE(table_->Enqueue("late-mine", 2).ok());
  ASSERT_TRUE(table_->Enqueue("early-mine", 1).ok());
  ASSERT_TRUE(table_->Enqueue("cannot-mine", 0).ok());
  const LeaseGrant first = LeaseOne("w1");
  ASSERT_EQ(first.task_id, "cannot-mine");
  ASSERT_TRUE(table_->Fail(first.lease_id, FailCause::kWorker, "no calibration set").ok());
  auto all_mine = [](const std::string&) { return LeaseAffinity::kHeld; };
  auto grants = table_->Lease("w1", 3, "req-x", nullptr, 0, all_mine);
  ASSERT_TRUE(grants.ok());
  ASSERT_EQ(grants->size(), 2u);
  EXPECT_EQ((*grants)[0].task_id, "early-mine");
  EXPECT_EQ((*grants)[1].task_id, "late-mine");
}

}  // namespace
}  // namespace dtm
