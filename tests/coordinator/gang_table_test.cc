#include "coordinator/gang_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "coordinator/clock.h"

namespace dtm {
namespace {

using std::chrono::milliseconds;

class GangTableTest : public ::testing::Test {
 protected:
  static constexpr int64_t kTimeoutMs = 1000;

  GangTableTest() : table_(Options(3), &clock_) {}

  static GangTable::Options Options(int max_attempts) {
    GangTable::Options options;
    options.lease_timeout_ms = kTimeoutMs;
    options.max_attempts = max_attempts;
    options.candidate_ttl_ms = 500;
    return options;
  }

  // One offer; `reserved` receives whether the worker was held for a gang.
  std::optional<GangGrant> Offer(const std::string& worker, bool* reserved = nullptr) {
    bool held = false;
    std::optional<GangGrant> grant = table_.Offer(worker, "pool", worker + ":29500", &held);
    if (reserved != nullptr) *reserved = held;
    return grant;
  }

  // Forms the gang of `t` from w0, w1: returns their grants (rank 0, rank 1).
  std::pair<GangGrant, GangGrant> Form() {
    EXPECT_FALSE(Offer("w0"));
    std::optional<GangGrant> second = Offer("w1");
    EXPECT_TRUE(second);
    std::optional<GangGrant> first = Offer("w0");
    EXPECT_TRUE(first);
    return {first.value_or(GangGrant{}), second.value_or(GangGrant{})};
  }

  FakeClock clock_;
  GangTable table_;
};

TEST_F(GangTableTest, AGangFormsWhenEnoughIdleWorkersHaveAskedAndRankZeroHostsTheRendezvous) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  EXPECT_EQ(table_.WaitingAndRunning(), (std::pair<int64_t, int64_t>{1, 0}));  // the dtm_tasks gauges
  bool reserved = false;
  EXPECT_FALSE(Offer("w0", &reserved));
  EXPECT_TRUE(reserved);  // held for the gang: it must take no other task meanwhile
  EXPECT_EQ(table_.CandidatesIn("pool"), 1);
  EXPECT_FALSE(table_.Find("t")->running);
  std::optional<GangGrant> w1 = Offer("w1");
  ASSERT_TRUE(w1);
  EXPECT_EQ(w1->rank, 1);  // in the order the candidates came
  EXPECT_EQ(w1->size, 2);
  EXPECT_EQ(w1->rendezvous, "w0:29500");
  std::optional<GangGrant> w0 = Offer("w0");
  ASSERT_TRUE(w0);
  EXPECT_EQ(w0->rank, 0);
  EXPECT_NE(w0->lease_id, w1->lease_id);
  EXPECT_EQ(w0->rendezvous, "w0:29500");
  // A lost reply: asking again gives the same grant, not a second gang.
  EXPECT_EQ(Offer("w0")->lease_id, w0->lease_id);
  EXPECT_TRUE(table_.Find("t")->running);
  EXPECT_EQ(table_.WaitingAndRunning(), (std::pair<int64_t, int64_t>{0, 1}));  // one task, however many members
  EXPECT_TRUE(table_.IsGangLease(w0->lease_id));
  EXPECT_FALSE(table_.IsGangLease("lease-0-1"));
}

TEST_F(GangTableTest, WorkersOfOtherPoolsOrWithoutAGangAddressAreNotHeld) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  bool reserved = true;
  EXPECT_FALSE(table_.Offer("x", "other-pool", "x:1", &reserved));
  EXPECT_FALSE(reserved);
  EXPECT_FALSE(table_.Offer("y", "pool", "", &reserved));
  EXPECT_FALSE(reserved);
  EXPECT_EQ(table_.CandidatesIn("pool"), 0);
}

TEST_F(GangTableTest, ACandidateThatStopsAskingIsDropped) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  EXPECT_FALSE(Offer("w0"));
  clock_.Advance(milliseconds(600));  // past candidate_ttl_ms: w0 died, or went away
  EXPECT_FALSE(Offer("w1"));
  EXPECT_EQ(table_.CandidatesIn("pool"), 1);
}

TEST_F(GangTableTest, HeartbeatsKeepTheGangAndAnExpiredMemberEndsTheAttemptForAll) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  auto [g0, g1] = Form();
  clock_.Advance(milliseconds(800));
  EXPECT_EQ(table_.Heartbeat("w0", g0.lease_id), HeartbeatResult::kValid);
  EXPECT_EQ(table_.Heartbeat("w1", g1.lease_id), HeartbeatResult::kValid);
  EXPECT_EQ(table_.Heartbeat("w0", g1.lease_id), HeartbeatResult::kUnknown);  // another worker's
  clock_.Advance(milliseconds(800));
  EXPECT_EQ(table_.Heartbeat("w0", g0.lease_id), HeartbeatResult::kValid);  // w1 silent since
  clock_.Advance(milliseconds(300));
  EXPECT_EQ(table_.Expire(), std::vector<std::string>{"t"});
  // The survivor hears that its attempt is over; the task waits for a new gang, attempt 2.
  EXPECT_EQ(table_.Heartbeat("w0", g0.lease_id), HeartbeatResult::kRevoked);
  EXPECT_FALSE(table_.Find("t")->running);
  EXPECT_EQ(table_.Find("t")->attempt, 2);
  // A failure reported after the attempt ended is its echo, not a second fault.
  EXPECT_EQ(table_.Fail(g0.lease_id, FailCause::kTransient, "peer gone").status().code(),
            StatusCode::kFailedPrecondition);
  auto [h0, h1] = Form();
  EXPECT_EQ(h0.attempt, 2);
  EXPECT_NE(h0.lease_id, g0.lease_id);
}

TEST_F(GangTableTest, RankZerosResultFinishesTheTaskAndTheOthersJustReportDone) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  auto [g0, g1] = Form();
  EXPECT_EQ(table_.Complete("t", g1.lease_id, 1).value(), CompleteResult::kAccepted);
  EXPECT_EQ(table_.Heartbeat("w1", g1.lease_id), HeartbeatResult::kRevoked);  // its part is done
  EXPECT_EQ(table_.Complete("t", g0.lease_id, 0).value(), CompleteResult::kAccepted);
  EXPECT_EQ(table_.Complete("t", g0.lease_id, 0).value(), CompleteResult::kDuplicate);
  EXPECT_EQ(table_.Heartbeat("w0", g0.lease_id), HeartbeatResult::kRevoked);
  table_.Forget("t");
  EXPECT_FALSE(table_.Find("t"));
  EXPECT_EQ(table_.Complete("t", g0.lease_id, 0).status().code(), StatusCode::kNotFound);
}

TEST_F(GangTableTest, RankZeroOfAnEndedAttemptOrOfAnEarlierCoordinatorStillFinishesTheTask) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  auto [g0, g1] = Form();
  ASSERT_EQ(table_.Fail(g1.lease_id, FailCause::kTransient, "w1: out of memory").value(), FailResult::kRequeued);
  // Its model was written whole before it reported: accepted, and the task is done.
  EXPECT_EQ(table_.Complete("t", g0.lease_id, 0).value(), CompleteResult::kAccepted);
  ASSERT_TRUE(table_.Enqueue("u", "pool", 2).ok());
  EXPECT_EQ(table_.Complete("u", "lease-of-a-coordinator-before", 0).value(), CompleteResult::kAccepted);
}

TEST_F(GangTableTest, FaultsCountAttemptsUntilTheTaskFailsButADrainDoesNot) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  Form();
  EXPECT_EQ(table_.ReleaseWorker("w1", ReleaseReason::kDrained), std::vector<std::string>{"t"});
  EXPECT_EQ(table_.Find("t")->attempt, 2);  // a new number for the new gang; no fault counted
  auto [a0, a1] = Form();
  EXPECT_EQ(table_.Fail(a0.lease_id, FailCause::kTransient, "gloo: connection reset").value(), FailResult::kRequeued);
  auto [b0, b1] = Form();
  EXPECT_EQ(table_.ReleaseWorker("w0", ReleaseReason::kLost), std::vector<std::string>{"t"});
  auto [c0, c1] = Form();
  EXPECT_EQ(c0.attempt, 4);
  // The third fault (max_attempts) fails it; the drain was not one.
  EXPECT_EQ(table_.Fail(c1.lease_id, FailCause::kTransient, "gloo: timeout").value(), FailResult::kFailed);
  auto failed = table_.TakeFailed();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].first, "t");
  EXPECT_NE(failed[0].second.find("gloo: timeout"), std::string::npos);
  EXPECT_TRUE(table_.TakeFailed().empty());
  EXPECT_EQ(table_.Heartbeat("w0", c0.lease_id), HeartbeatResult::kCancelled);
}

TEST_F(GangTableTest, TheTasksOwnFaultFailsItAtOnceAndCancelTellsTheMembers) {
  ASSERT_TRUE(table_.Enqueue("t", "pool", 2).ok());
  auto [g0, g1] = Form();
  EXPECT_EQ(table_.Fail(g0.lease_id, FailCause::kTask, "data: no text").value(), FailResult::kFailed);
  EXPECT_EQ(table_.TakeFailed().size(), 1u);
  ASSERT_TRUE(table_.Enqueue("u", "pool", 2).ok());
  auto [h0, h1] = Form();
  ASSERT_TRUE(table_.Cancel("u").ok());
  EXPECT_EQ(table_.WaitingAndRunning(), (std::pair<int64_t, int64_t>{0, 0}));
  EXPECT_EQ(table_.Heartbeat("w1", h1.lease_id), HeartbeatResult::kCancelled);
  EXPECT_EQ(table_.Complete("u", h0.lease_id, 0).value(), CompleteResult::kCancelled);
  EXPECT_EQ(table_.Enqueue("u", "pool", 2).code(), StatusCode::kOk);  // a cancelled task may start over
  EXPECT_EQ(table_.Enqueue("u", "pool", 2).code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace dtm
