#include "coordinator/task_wire.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace dtm {
namespace {

using google::protobuf::util::MessageDifferencer;

constexpr uint32_t kPrefix = 3;
constexpr uint32_t kCompletion = 4;
constexpr uint32_t kFirstProbe = 8;  // the shard is probes 8 and 9
constexpr char kTaskId[] = "0123456789abcdef0123456789abcdef";

class TaskWireTest : public ::testing::Test {
 protected:
  // A shard of two probes: for a baseline task its prefixes, for an eval task its baseline rows.
  static TaskEntry Entry(TaskKindForKey kind) {
    TaskEntry entry;
    entry.kind = kind;
    entry.pool = "fp-a|DTYPE_F32";
    entry.model_path = "/models/a";
    entry.key.set_model_fingerprint("fp-a");
    entry.key.set_probe_set_fingerprint("probes-1");
    entry.key.set_prefix_len(kPrefix);
    entry.key.set_completion_len(kCompletion);
    entry.key.set_dtype(v1::DTYPE_F32);
    entry.key.mutable_shard()->set_begin(kFirstProbe);
    entry.key.mutable_shard()->set_end(kFirstProbe + 2);
    if (kind == TaskKindForKey::kEval)
      entry.key.mutable_config()->set_canonical("model.layers.0.mlp.up_proj=int8-absmax");
    auto rows = std::make_shared<Rows>();
    for (uint32_t p = kFirstProbe; p < kFirstProbe + 2; ++p) {
      v1::BaselineRow& row = rows->emplace_back();
      row.set_probe_id("probe-" + std::to_string(p));
      row.set_probe_index(p);
      row.set_prefix_len(kPrefix);
      const uint32_t length = kind == TaskKindForKey::kBaseline ? kPrefix : kPrefix + kCompletion;
      for (uint32_t k = 0; k < length; ++k) row.add_tokens(100 * p + k);
    }
    entry.rows = rows;
    entry.jobs = {"job-1"};
    return entry;
  }

  // What a correct worker answers for the entry's task.
  static v1::CompleteTaskRequest GoodOutput(const TaskEntry& entry) {
    v1::CompleteTaskRequest request;
    request.set_worker_id("w1");
    request.set_lease_id("lease-1");
    request.set_task_id(kTaskId);
    for (const v1::BaselineRow& probe : *entry.rows) {
      if (entry.kind == TaskKindForKey::kBaseline) {
        v1::BaselineRow* row = request.mutable_baseline()->add_rows();
        *row = probe;
        for (uint32_t k = 0; k < kCompletion; ++k) row->add_tokens(7000 + k);
      } else {
        v1::ProbeResult* result = request.mutable_eval()->add_results();
        result->set_probe_id(probe.probe_id());
        result->set_probe_index(probe.probe_index());
        result->set_fdt(1);
        result->set_sdt(2);
        result->set_nll(0.5);
      }
    }
    return request;
  }

  // Expects INVALID_ARGUMENT naming the task and `misfit`.
  static void ExpectMisfit(const TaskEntry& entry, const v1::CompleteTaskRequest& request,
                           const std::string& misfit) {
    Status status = ValidateTaskOutput(entry, request);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
    EXPECT_NE(status.message().find(std::string(kTaskId).substr(0, 12)), std::string::npos)
        << status.message();
    EXPECT_NE(status.message().find(misfit), std::string::npos) << status.message();
  }
};

// ---------------------------------------------------------------------------------------------
// ToWireTask

TEST_F(TaskWireTest, ToWireTaskCarriesTheGrantTheKeyAndTheRows) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  LeaseGrant grant;
  grant.task_id = kTaskId;
  grant.lease_id = "run7-0-12";
  grant.attempt = 3;
  v1::Task task = ToWireTask(entry, grant, "job-9", 1700000000123);
  EXPECT_EQ(task.task_id(), kTaskId);
  EXPECT_EQ(task.lease_id(), "run7-0-12");
  EXPECT_EQ(task.job_id(), "job-9");
  EXPECT_EQ(task.kind(), v1::TASK_KIND_EVAL_SHARD);
  EXPECT_TRUE(MessageDifferencer::Equals(task.key(), entry.key));
  EXPECT_EQ(task.model_path(), "/models/a");
  EXPECT_EQ(task.attempt(), 3u);
  EXPECT_EQ(task.lease_expire_unix_ms(), 1700000000123);
  ASSERT_EQ(task.rows_size(), 2);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(MessageDifferencer::Equals(task.rows(i), (*entry.rows)[i])) << i;

  EXPECT_EQ(ToWireTask(Entry(TaskKindForKey::kBaseline), grant, "job-9", 0).kind(),
            v1::TASK_KIND_BASELINE_SHARD);
  EXPECT_EQ(task.parent_config(), "");
  entry.parent_config = "model.layers.0.mlp.up_proj=int8-absmax";
  EXPECT_EQ(ToWireTask(entry, grant, "job-9", 0).parent_config(), "model.layers.0.mlp.up_proj=int8-absmax");
}

TEST_F(TaskWireTest, ToWireTaskCopiesTheRows) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  auto rows = std::make_shared<Rows>(*entry.rows);
  entry.rows = rows;
  v1::Task task = ToWireTask(entry, LeaseGrant{kTaskId, "lease-1", 1, {}}, "job-1", 5);
  (*rows)[0].set_tokens(0, 424242);
  EXPECT_NE(task.rows(0).tokens(0), 424242u);
  EXPECT_EQ(task.rows(0).tokens(0), 100 * kFirstProbe);
}

// ---------------------------------------------------------------------------------------------
// ValidateTaskOutput: baseline shards

TEST_F(TaskWireTest, AcceptsABaselineOutputThatFits) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  Status status = ValidateTaskOutput(entry, GoodOutput(entry));
  EXPECT_TRUE(status.ok()) << status.ToString();
}

TEST_F(TaskWireTest, RefusesAnOutputOfTheWrongKind) {
  TaskEntry baseline = Entry(TaskKindForKey::kBaseline);
  TaskEntry eval = Entry(TaskKindForKey::kEval);
  ExpectMisfit(baseline, GoodOutput(eval), "baseline output");
  ExpectMisfit(eval, GoodOutput(baseline), "eval output");
  // No output at all.
  v1::CompleteTaskRequest empty;
  empty.set_task_id(kTaskId);
  ExpectMisfit(baseline, empty, "baseline output");
  ExpectMisfit(eval, empty, "eval output");
}

TEST_F(TaskWireTest, RefusesABaselineOutputWithAnotherRowCount) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  v1::CompleteTaskRequest fewer = GoodOutput(entry);
  fewer.mutable_baseline()->mutable_rows()->RemoveLast();
  ExpectMisfit(entry, fewer, "1 baseline rows for 2 probes");
  v1::CompleteTaskRequest more = GoodOutput(entry);
  *more.mutable_baseline()->add_rows() = more.baseline().rows(1);
  ExpectMisfit(entry, more, "3 baseline rows for 2 probes");
}

TEST_F(TaskWireTest, RefusesABaselineRowOfAnotherProbe) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  v1::CompleteTaskRequest request = GoodOutput(entry);
  request.mutable_baseline()->mutable_rows(1)->set_probe_index(kFirstProbe);
  ExpectMisfit(entry, request, "baseline row 1");
  // Rows swapped: each is some probe of the shard, but not in order.
  v1::CompleteTaskRequest swapped = GoodOutput(entry);
  swapped.mutable_baseline()->mutable_rows()->SwapElements(0, 1);
  ExpectMisfit(entry, swapped, "baseline row 0");
}

TEST_F(TaskWireTest, RefusesABaselineRowOfAnotherPrefixLength) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  v1::CompleteTaskRequest request = GoodOutput(entry);
  request.mutable_baseline()->mutable_rows(0)->set_prefix_len(kPrefix - 1);
  ExpectMisfit(entry, request, "baseline row 0");
}

TEST_F(TaskWireTest, RefusesABaselineRowOfTheWrongLength) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  v1::CompleteTaskRequest shorter = GoodOutput(entry);
  shorter.mutable_baseline()->mutable_rows(1)->mutable_tokens()->RemoveLast();
  ExpectMisfit(entry, shorter, "baseline row 1");
  v1::CompleteTaskRequest longer = GoodOutput(entry);
  longer.mutable_baseline()->mutable_rows(1)->add_tokens(1);
  ExpectMisfit(entry, longer, "baseline row 1");
}

TEST_F(TaskWireTest, RefusesABaselineRowThatChangedTheProbesPrefix) {
  TaskEntry entry = Entry(TaskKindForKey::kBaseline);
  for (uint32_t k = 0; k < kPrefix; ++k) {
    SCOPED_TRACE("token " + std::to_string(k));
    v1::CompleteTaskRequest request = GoodOutput(entry);
    request.mutable_baseline()->mutable_rows(1)->set_tokens(static_cast<int>(k), 1);
    ExpectMisfit(entry, request, "baseline row 1 changed the probe's prefix");
  }
  // The completion is the worker's to choose.
  v1::CompleteTaskRequest request = GoodOutput(entry);
  request.mutable_baseline()->mutable_rows(1)->set_tokens(kPrefix, 1);
  EXPECT_TRUE(ValidateTaskOutput(entry, request).ok());
}

// ---------------------------------------------------------------------------------------------
// ValidateTaskOutput: eval shards

TEST_F(TaskWireTest, AcceptsAnEvalOutputThatFitsIncludingTheBounds) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  v1::CompleteTaskRequest request = GoodOutput(entry);
  EXPECT_TRUE(ValidateTaskOutput(entry, request).ok());
  // Never diverged: fdt equals the completion length; diverged everywhere: sdt does.
  request.mutable_eval()->mutable_results(0)->set_fdt(kCompletion);
  request.mutable_eval()->mutable_results(0)->set_sdt(0);
  request.mutable_eval()->mutable_results(1)->set_fdt(0);
  request.mutable_eval()->mutable_results(1)->set_sdt(kCompletion);
  request.mutable_eval()->mutable_results(1)->set_nll(0);
  Status status = ValidateTaskOutput(entry, request);
  EXPECT_TRUE(status.ok()) << status.ToString();
}

TEST_F(TaskWireTest, RefusesAnEvalOutputWithAnotherResultCount) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  v1::CompleteTaskRequest fewer = GoodOutput(entry);
  fewer.mutable_eval()->mutable_results()->RemoveLast();
  ExpectMisfit(entry, fewer, "1 results for 2 probes");
  v1::CompleteTaskRequest none = GoodOutput(entry);
  none.mutable_eval()->clear_results();
  ExpectMisfit(entry, none, "0 results for 2 probes");
}

TEST_F(TaskWireTest, RefusesAnEvalResultOfAnotherProbe) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  v1::CompleteTaskRequest request = GoodOutput(entry);
  request.mutable_eval()->mutable_results(1)->set_probe_index(kFirstProbe + 2);
  ExpectMisfit(entry, request, "result 1");
}

TEST_F(TaskWireTest, RefusesFdtOrSdtBeyondTheCompletion) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  v1::CompleteTaskRequest fdt = GoodOutput(entry);
  fdt.mutable_eval()->mutable_results(0)->set_fdt(kCompletion + 1);
  ExpectMisfit(entry, fdt, "result 0");
  v1::CompleteTaskRequest sdt = GoodOutput(entry);
  sdt.mutable_eval()->mutable_results(1)->set_sdt(kCompletion + 1);
  ExpectMisfit(entry, sdt, "result 1");
  v1::CompleteTaskRequest huge = GoodOutput(entry);
  huge.mutable_eval()->mutable_results(1)->set_fdt(std::numeric_limits<uint32_t>::max());
  ExpectMisfit(entry, huge, "result 1");
}

TEST_F(TaskWireTest, RefusesANonFiniteNll) {
  TaskEntry entry = Entry(TaskKindForKey::kEval);
  for (double nll :
       {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(std::to_string(nll));
    v1::CompleteTaskRequest request = GoodOutput(entry);
    request.mutable_eval()->mutable_results(1)->set_nll(nll);
    ExpectMisfit(entry, request, "result 1");
  }
}

// ---------------------------------------------------------------------------------------------
// FailCauseOf, ToWireLeaseState

// ---------------------------------------------------------------------------------------------
// Text windows (SPEC `ppl`)

// A text-windows task: its text cut into windows of 4 tokens.
TaskEntry TextWindowsEntry() {
  TaskEntry entry;
  entry.kind = TaskKindForKey::kTextWindows;
  entry.pool = "fp-a|DTYPE_F32";
  entry.key.set_model_fingerprint("fp-a");
  entry.key.set_probe_set_fingerprint("text-1");
  entry.key.set_prefix_len(1);
  entry.key.set_completion_len(3);
  entry.rows = std::make_shared<Rows>();
  auto text = std::make_shared<v1::TextWindowsInput>();
  text->set_text("0123456789");
  text->set_window(4);
  text->set_join("as-is");
  entry.text = text;
  return entry;
}

// A worker's answer: `windows` windows of 4 tokens, of a text of `text_tokens` tokens.
v1::CompleteTaskRequest WindowsReport(int windows, uint64_t text_tokens) {
  v1::CompleteTaskRequest request;
  request.set_task_id(kTaskId);
  for (int w = 0; w < windows; ++w) {
    v1::TokenSequence* seq = request.mutable_text_windows()->add_windows();
    for (uint32_t t = 0; t < 4; ++t) seq->add_tokens(4 * w + t + 1);
  }
  request.mutable_text_windows()->set_text_tokens(text_tokens);
  return request;
}

TEST_F(TaskWireTest, ATextWindowsTaskCarriesItsTextAndNoRows) {
  const TaskEntry entry = TextWindowsEntry();
  v1::Task task = ToWireTask(entry, LeaseGrant{kTaskId, "lease-1", 1, {}}, "job-1", 5);
  EXPECT_EQ(task.kind(), v1::TASK_KIND_TEXT_WINDOWS);
  EXPECT_EQ(task.rows_size(), 0);
  EXPECT_TRUE(MessageDifferencer::Equals(task.text_windows(), *entry.text));
  EXPECT_FALSE(ToWireTask(Entry(TaskKindForKey::kEval), LeaseGrant{kTaskId, "l", 1, {}}, "j", 5).has_text_windows());
  // The estimate bounds what goes on the wire.
  EXPECT_GE(WireBytesEstimate(entry), task.ByteSizeLong());
  const TaskEntry eval = Entry(TaskKindForKey::kEval);
  EXPECT_GE(WireBytesEstimate(eval), ToWireTask(eval, LeaseGrant{kTaskId, "l", 1, {}}, "j", 5).ByteSizeLong());
}

TEST_F(TaskWireTest, AcceptsWindowsThatFitTheTextAndRefusesOthers) {
  const TaskEntry entry = TextWindowsEntry();
  // 11 tokens: two windows of 4, three tokens dropped.
  Status status = ValidateTaskOutput(entry, WindowsReport(2, 11));
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_TRUE(ValidateTaskOutput(entry, WindowsReport(2, 8)).ok());  // nothing dropped
  ExpectMisfit(entry, WindowsReport(0, 3), "no windows");
  ExpectMisfit(entry, WindowsReport(2, 12), "do not fit a text of 12 tokens");  // a third window is missing
  ExpectMisfit(entry, WindowsReport(2, 7), "do not fit a text of 7 tokens");
  v1::CompleteTaskRequest short_window = WindowsReport(2, 11);
  short_window.mutable_text_windows()->mutable_windows(1)->mutable_tokens()->RemoveLast();
  ExpectMisfit(entry, short_window, "window 1 has 3 tokens, not 4");
  v1::CompleteTaskRequest eval = GoodOutput(Entry(TaskKindForKey::kEval));
  eval.set_task_id(kTaskId);
  ExpectMisfit(entry, eval, "needs a text-windows output");
}

TEST_F(TaskWireTest, FailCauseOfTakesTheCauseOverTheRetryableFlag) {
  for (bool retryable : {false, true}) {
    SCOPED_TRACE(retryable ? "retryable" : "not retryable");
    v1::FailTaskRequest request;
    request.set_retryable(retryable);
    request.set_cause(v1::FAILURE_CAUSE_TASK);
    EXPECT_EQ(FailCauseOf(request), FailCause::kTask);
    request.set_cause(v1::FAILURE_CAUSE_WORKER);
    EXPECT_EQ(FailCauseOf(request), FailCause::kWorker);
    request.set_cause(v1::FAILURE_CAUSE_TRANSIENT);
    EXPECT_EQ(FailCauseOf(request), FailCause::kTransient);
  }
}

TEST_F(TaskWireTest, FailCauseOfFallsBackOnTheRetryableFlagOfAnOlderWorker) {
  v1::FailTaskRequest request;
  request.set_retryable(true);
  EXPECT_EQ(FailCauseOf(request), FailCause::kTransient);
  request.set_retryable(false);
  EXPECT_EQ(FailCauseOf(request), FailCause::kTask);
  // A cause this coordinator does not know (a newer worker's) reads as unspecified.
  request.set_cause(static_cast<v1::FailureCause>(77));
  request.set_retryable(true);
  EXPECT_EQ(FailCauseOf(request), FailCause::kTransient);
}

TEST_F(TaskWireTest, ToWireLeaseStateMapsEveryHeartbeatResult) {
  EXPECT_EQ(ToWireLeaseState(HeartbeatResult::kValid), v1::LEASE_STATE_VALID);
  EXPECT_EQ(ToWireLeaseState(HeartbeatResult::kExpired), v1::LEASE_STATE_EXPIRED);
  EXPECT_EQ(ToWireLeaseState(HeartbeatResult::kUnknown), v1::LEASE_STATE_UNKNOWN);
  EXPECT_EQ(ToWireLeaseState(HeartbeatResult::kCancelled), v1::LEASE_STATE_CANCELLED);
  EXPECT_EQ(ToWireLeaseState(HeartbeatResult::kRevoked), v1::LEASE_STATE_REVOKED);
}

}  // namespace
}  // namespace dtm
