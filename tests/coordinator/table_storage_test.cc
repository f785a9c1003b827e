// TableStorage against every Store: InMemoryStore and RedisStore on a real redis-server (skipped
// when the binary is missing), as in tests/common/store_test.cc.
#include "coordinator/table_storage.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/in_memory_store.h"
#include "common/redis_store.h"
#include "common/redis_test_server.h"
#include "coordinator/store_keys.h"

namespace dtm {
namespace {

using google::protobuf::util::MessageDifferencer;
using Strings = std::vector<std::string>;

// Bytes that no protobuf message parses: field 1, length 5, then only two bytes.
const std::string kUnreadable(
    "\x0a\x05"
    "ab",
    4);

// A Store that forwards to another and runs `after_list_range` once, after the next ListRange: a
// report that lands while a purge is under way.
class InterleavingStore : public Store {
 public:
  explicit InterleavingStore(Store* inner) : inner_(inner) {}

  std::function<void()> after_list_range;

  StatusOr<std::optional<std::string>> Get(const std::string& key) override { return inner_->Get(key); }
  Status Set(const std::string& key, const std::string& value) override { return inner_->Set(key, value); }
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override {
    return inner_->SetIfAbsent(key, value);
  }
  Status Delete(const std::string& key) override { return inner_->Delete(key); }
  StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) override {
    return inner_->Exist(keys);
  }
  Status HashSet(const std::string& key, const std::string& field, const std::string& value) override {
    return inner_->HashSet(key, field, value);
  }
  StatusOr<std::map<std::string, std::string>> HashGetAll(const std::string& key) override {
    return inner_->HashGetAll(key);
  }
  Status HashDelete(const std::string& key, const std::string& field) override {
    return inner_->HashDelete(key, field);
  }
  Status ListPush(const std::string& key, const std::string& value) override {
    return inner_->ListPush(key, value);
  }
  StatusOr<std::vector<std::string>> ListRange(const std::string& key) override {
    StatusOr<std::vector<std::string>> range = inner_->ListRange(key);
    if (after_list_range) std::exchange(after_list_range, nullptr)();
    return range;
  }
  Status ListTrimFront(const std::string& key, size_t count) override { return inner_->ListTrimFront(key, count); }
  StatusOr<std::vector<std::string>> Keys(const std::string& prefix) override { return inner_->Keys(prefix); }
  Status Ping() override { return inner_->Ping(); }

 private:
  Store* const inner_;
};

template <typename T>
class TableStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (std::is_same_v<T, RedisStore>) {
      StatusOr<std::unique_ptr<RedisTestServer>> server = RedisTestServer::Start();
      if (server.status().code() == StatusCode::kFailedPrecondition)
        GTEST_SKIP() << server.status().ToString();
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      server_ = std::move(server).value();
      RedisOptions options;
      options.port = server_->port();
      StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Connect(options);
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      store_ = std::move(store).value();
    } else {
      store_ = std::make_unique<T>();
    }
    storage_ = std::make_unique<TableStorage>(store_.get());
  }

  static v1::Job Job(const std::string& id, const std::string& spec = "kind: probe\n") {
    v1::Job job;
    job.set_job_id(id);
    job.set_client_request_id("req-" + id);
    job.set_state(v1::JOB_STATE_PENDING);
    job.set_spec_yaml(spec);
    return job;
  }

  // A worker's report of an eval shard of one probe with `nll`, claiming `computed_by`.
  static v1::CompleteTaskRequest EvalReport(double nll, const std::string& computed_by = "") {
    v1::CompleteTaskRequest request;
    request.set_worker_id(computed_by);
    v1::ProbeResult* result = request.mutable_eval()->add_results();
    result->set_probe_index(0);
    result->set_fdt(3);
    result->set_nll(nll);
    request.mutable_eval()->set_computed_by(computed_by);
    return request;
  }

  static v1::CompleteTaskRequest BaselineReport(uint32_t token, const std::string& computed_by = "") {
    v1::CompleteTaskRequest request;
    v1::BaselineRow* row = request.mutable_baseline()->add_rows();
    row->set_probe_index(0);
    row->set_prefix_len(1);
    row->add_tokens(1);
    row->add_tokens(token);
    request.mutable_baseline()->set_computed_by(computed_by);
    return request;
  }

  static v1::CompleteTaskRequest TextWindowsReport(uint32_t token, const std::string& computed_by = "") {
    v1::CompleteTaskRequest request;
    v1::TokenSequence* window = request.mutable_text_windows()->add_windows();
    window->add_tokens(1);
    window->add_tokens(token);
    request.mutable_text_windows()->set_text_tokens(3);
    request.mutable_text_windows()->set_computed_by(computed_by);
    return request;
  }

  bool Exists(const std::string& key) { return store_->Get(key).value().has_value(); }

  // The task ids PurgeWorker deleted, sorted; expects success.
  Strings Purge(const std::string& worker, TableStorage* storage = nullptr) {
    StatusOr<Strings> deleted = (storage != nullptr ? storage : storage_.get())->PurgeWorker(worker);
    EXPECT_TRUE(deleted.ok()) << deleted.status().ToString();
    if (!deleted.ok()) return {};
    std::sort(deleted->begin(), deleted->end());
    return *deleted;
  }

  // Declared before store_, so destroyed after it.
  std::unique_ptr<RedisTestServer> server_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<TableStorage> storage_;
};

struct StoreName {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, RedisStore> ? "RedisStore" : "InMemoryStore";
  }
};

using StoreTypes = ::testing::Types<InMemoryStore, RedisStore>;
TYPED_TEST_SUITE(TableStorageTest, StoreTypes, StoreName);

// ---------------------------------------------------------------------------------------------
// Jobs and their results

TYPED_TEST(TableStorageTest, CreateJobCreatesARecordOnce) {
  EXPECT_TRUE(this->storage_->CreateJob(this->Job("j-1", "first")).value());
  EXPECT_FALSE(this->storage_->CreateJob(this->Job("j-1", "second")).value());
  std::optional<v1::Job> loaded = this->storage_->LoadJob("j-1").value();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*loaded, this->Job("j-1", "first")));
}

TYPED_TEST(TableStorageTest, LoadJobOfAnUnknownIdIsNullopt) {
  StatusOr<std::optional<v1::Job>> loaded = this->storage_->LoadJob("j-none");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_FALSE(loaded->has_value());
}

TYPED_TEST(TableStorageTest, LoadJobOfAnUnreadableRecordIsDataLossNamingTheJob) {
  ASSERT_TRUE(this->store_->Set(JobStoreKey("j-bad"), kUnreadable).ok());
  Status status = this->storage_->LoadJob("j-bad").status();
  EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status.ToString();
  EXPECT_NE(status.message().find("j-bad"), std::string::npos) << status.message();
}

TYPED_TEST(TableStorageTest, SaveJobReplacesTheRecord) {
  ASSERT_TRUE(this->storage_->CreateJob(this->Job("j-1")).value());
  v1::Job running = this->Job("j-1");
  running.set_state(v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(this->storage_->SaveJob(running).ok());
  EXPECT_EQ(this->storage_->LoadJob("j-1").value()->state(), v1::JOB_STATE_RUNNING);
}

TYPED_TEST(TableStorageTest, LoadJobsSkipsAnUnreadableRecordAndLeavesItInTheStore) {
  ASSERT_TRUE(this->storage_->CreateJob(this->Job("j-1")).value());
  ASSERT_TRUE(this->storage_->CreateJob(this->Job("j-2")).value());
  ASSERT_TRUE(this->store_->Set(JobStoreKey("j-bad"), kUnreadable).ok());
  ASSERT_TRUE(this->store_->Set(JobStoreKey("j-no-id"), v1::Job().SerializeAsString()).ok());
  // Results of a job are not a job record.
  v1::GetResultsResponse results;
  results.set_job_id("j-1");
  ASSERT_TRUE(this->storage_->SaveResults(results).ok());

  StatusOr<std::vector<v1::Job>> jobs = this->storage_->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  Strings ids;
  for (const v1::Job& job : *jobs) ids.push_back(job.job_id());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (Strings{"j-1", "j-2"}));
  EXPECT_EQ(this->store_->Get(JobStoreKey("j-bad")).value(), std::optional<std::string>(kUnreadable));
}

// The header promises that unreadable records are skipped. A key under the job prefix that holds a
// hash (or a list) cannot be read as a job either; today LoadJobs fails as a whole on it
// (FAILED_PRECONDITION from the store's Get), so one stray key keeps every job from loading.
TYPED_TEST(TableStorageTest, LoadJobsSkipsARecordOfAnotherType) {
  ASSERT_TRUE(this->storage_->CreateJob(this->Job("j-1")).value());
  ASSERT_TRUE(this->store_->HashSet(JobStoreKey("j-hash"), "state", "running").ok());
  StatusOr<std::vector<v1::Job>> jobs = this->storage_->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].job_id(), "j-1");
}

TYPED_TEST(TableStorageTest, ResultsRoundTripAndAreDataLossWhenMissing) {
  v1::GetResultsResponse results;
  results.set_job_id("j-1");
  results.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* row = results.add_results();
  row->set_config("model.layers.0.mlp.up_proj=int8-absmax");
  row->mutable_metrics()->set_fdt75(12.5);
  row->set_complete(true);
  ASSERT_TRUE(this->storage_->SaveResults(results).ok());
  StatusOr<v1::GetResultsResponse> loaded = this->storage_->LoadResults("j-1");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(MessageDifferencer::Equals(*loaded, results));

  Status missing = this->storage_->LoadResults("j-2").status();
  EXPECT_EQ(missing.code(), StatusCode::kDataLoss) << missing.ToString();
  EXPECT_NE(missing.message().find("j-2"), std::string::npos) << missing.message();
}

// ---------------------------------------------------------------------------------------------
// Models

TYPED_TEST(TableStorageTest, ModelsRoundTrip) {
  const ModelInfo f32{"fp-a",
                      {2, {{"model.layers.0.mlp.up_proj", 4096}, {"model.layers.1.mlp.up_proj", 4096}}}};
  const ModelInfo bf16{"fp-a", {2, {}}};
  const ModelInfo other{"fp-b", {32, {{"model.layers.0.self_attn.q_proj", uint64_t{1} << 40}}}};
  ASSERT_TRUE(this->storage_->SaveModel("/models/a", v1::DTYPE_F32, f32).ok());
  ASSERT_TRUE(this->storage_->SaveModel("/models/a", v1::DTYPE_BF16, bf16).ok());
  ASSERT_TRUE(this->storage_->SaveModel("/models/with\ttab", v1::DTYPE_F16, other).ok());

  StatusOr<std::map<std::pair<std::string, v1::Dtype>, ModelInfo>> models = this->storage_->LoadModels();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 3u);
  const std::pair<std::string, v1::Dtype> keys[] = {
      {"/models/a", v1::DTYPE_F32}, {"/models/a", v1::DTYPE_BF16}, {"/models/with\ttab", v1::DTYPE_F16}};
  const ModelInfo* want[] = {&f32, &bf16, &other};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(keys[i].first + " " + v1::Dtype_Name(keys[i].second));
    ASSERT_EQ(models->count(keys[i]), 1u);
    const ModelInfo& got = models->at(keys[i]);
    EXPECT_EQ(got.fingerprint, want[i]->fingerprint);
    EXPECT_EQ(got.geometry.num_layers, want[i]->geometry.num_layers);
    EXPECT_EQ(got.geometry.component_params, want[i]->geometry.component_params);
  }
  // Saving again replaces.
  ASSERT_TRUE(this->storage_->SaveModel("/models/a", v1::DTYPE_F32, ModelInfo{"fp-new", {3, {}}}).ok());
  EXPECT_EQ(this->storage_->LoadModels().value().at({"/models/a", v1::DTYPE_F32}).fingerprint, "fp-new");
}

TYPED_TEST(TableStorageTest, LoadModelsSkipsMalformedEntries) {
  ASSERT_TRUE(this->storage_->SaveModel("/models/good", v1::DTYPE_F32, ModelInfo{"fp-good", {2, {}}}).ok());
  const std::string valid = R"({"fingerprint":"fp","num_layers":2})";
  const std::map<std::string, std::string> malformed = {
      {"/models/no-tab", valid},
      {"/models/bad-dtype\tDTYPE_F64", valid},
      {"/models/not-json\tDTYPE_F32", "{not json"},
      {"/models/array\tDTYPE_F32", "[1, 2]"},
      {"/models/no-fingerprint\tDTYPE_F32", R"({"num_layers":2})"},
      {"/models/number-fingerprint\tDTYPE_F32", R"({"fingerprint":7,"num_layers":2})"},
      {"/models/no-layers\tDTYPE_F32", R"({"fingerprint":"fp"})"},
      {"/models/string-layers\tDTYPE_F32", R"({"fingerprint":"fp","num_layers":"2"})"},
  };
  for (const auto& [field, value] : malformed)
    ASSERT_TRUE(this->store_->HashSet(kModelsStoreKey, field, value).ok());

  StatusOr<std::map<std::pair<std::string, v1::Dtype>, ModelInfo>> models = this->storage_->LoadModels();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ(models->begin()->first, (std::pair<std::string, v1::Dtype>{"/models/good", v1::DTYPE_F32}));
  EXPECT_EQ(models->begin()->second.fingerprint, "fp-good");
}

// A registry entry whose layer count no worker can have registered (Validate admits 1..4096) is
// malformed too. Today 0 and -3 load as they are, and 4294967298 loads as 2: get<int> truncates it.
TYPED_TEST(TableStorageTest, LoadModelsSkipsAnEntryWithAnImpossibleLayerCount) {
  for (const char* layers : {"0", "-3", "4294967298"}) {
    ASSERT_TRUE(this->store_
                    ->HashSet(kModelsStoreKey, std::string("/models/layers") + layers + "\tDTYPE_F32",
                              std::string(R"({"fingerprint":"fp","num_layers":)") + layers + "}")
                    .ok());
  }
  StatusOr<std::map<std::pair<std::string, v1::Dtype>, ModelInfo>> models = this->storage_->LoadModels();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  for (const auto& [key, model] : *models) {
    ADD_FAILURE() << key.first << " loaded with num_layers " << model.geometry.num_layers;
  }
}

// ---------------------------------------------------------------------------------------------
// The result cache

TYPED_TEST(TableStorageTest, StoreResultKeepsTheFirstResult) {
  EXPECT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.5)).value());
  EXPECT_FALSE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w2", this->EvalReport(2.5)).value());
  StatusOr<v1::EvalShardOutput> stored = this->storage_->ReadEval("t1", "shard");
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  ASSERT_EQ(stored->results_size(), 1);
  EXPECT_EQ(stored->results(0).nll(), 1.5);
  EXPECT_EQ(stored->computed_by(), "w1");

  EXPECT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "t1", "w2", this->BaselineReport(7)).value());
  EXPECT_FALSE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "t1", "w1", this->BaselineReport(8)).value());
  StatusOr<v1::BaselineShardOutput> baseline = this->storage_->ReadBaseline("t1", "shard");
  ASSERT_TRUE(baseline.ok()) << baseline.status().ToString();
  EXPECT_EQ(baseline->rows(0).tokens(1), 7u);
  EXPECT_EQ(baseline->computed_by(), "w2");
}

TYPED_TEST(TableStorageTest, StoreResultRecordsTheReportingWorkerWhateverTheRequestClaims) {
  ASSERT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0, "w-victim"))
          .value());
  EXPECT_EQ(this->storage_->ReadEval("t1", "shard").value().computed_by(), "w1");
  ASSERT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "t2", "w1", this->BaselineReport(5, "w-victim"))
          .value());
  EXPECT_EQ(this->storage_->ReadBaseline("t2", "shard").value().computed_by(), "w1");
  // The victim's purge leaves them alone.
  EXPECT_TRUE(this->Purge("w-victim").empty());
  EXPECT_TRUE(this->Exists(ResultStoreKey("t1")));
  EXPECT_TRUE(this->Exists(BaselineStoreKey("t2")));
}

TYPED_TEST(TableStorageTest, StoreResultIndexesEveryReportUnderItsWorker) {
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).ok());
  ASSERT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "t2", "w1", this->BaselineReport(5)).ok());
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w2", this->EvalReport(2.0)).ok());
  EXPECT_EQ(this->store_->ListRange(WorkerResultsStoreKey("w1")).value(),
            (Strings{ResultStoreKey("t1"), BaselineStoreKey("t2")}));
  // A duplicate report is indexed too (PurgeWorker checks whose the stored result is).
  EXPECT_EQ(this->store_->ListRange(WorkerResultsStoreKey("w2")).value(), Strings{ResultStoreKey("t1")});
}

TYPED_TEST(TableStorageTest, HaveResultsTellsWhichTasksHaveAResultOfTheirKind) {
  ASSERT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "b1", "w1", this->BaselineReport(5)).ok());
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "e1", "w1", this->EvalReport(1.0)).ok());
  StatusOr<std::vector<bool>> have = this->storage_->HaveResults({{TaskKindForKey::kBaseline, "b1"},
                                                                  {TaskKindForKey::kEval, "b1"},
                                                                  {TaskKindForKey::kEval, "e1"},
                                                                  {TaskKindForKey::kBaseline, "e1"},
                                                                  {TaskKindForKey::kEval, "missing"}});
  ASSERT_TRUE(have.ok()) << have.status().ToString();
  EXPECT_EQ(*have, (std::vector<bool>{true, false, true, false, false}));
  EXPECT_TRUE(this->storage_->HaveResults({}).value().empty());
}

TYPED_TEST(TableStorageTest, ReadingAMissingOrUnreadableShardIsDataLossNamingWhat) {
  Status baseline = this->storage_->ReadBaseline("t-none", "baseline shard 0..16").status();
  EXPECT_EQ(baseline.code(), StatusCode::kDataLoss) << baseline.ToString();
  EXPECT_NE(baseline.message().find("baseline shard 0..16"), std::string::npos) << baseline.message();
  Status eval = this->storage_->ReadEval("t-none", "result of 'x' on shard 16..32").status();
  EXPECT_EQ(eval.code(), StatusCode::kDataLoss) << eval.ToString();
  EXPECT_NE(eval.message().find("result of 'x' on shard 16..32"), std::string::npos) << eval.message();

  ASSERT_TRUE(this->store_->Set(ResultStoreKey("t-bad"), kUnreadable).ok());
  EXPECT_EQ(this->storage_->ReadEval("t-bad", "shard").status().code(), StatusCode::kDataLoss);
}

TYPED_TEST(TableStorageTest, PurgeWorkerDeletesOnlyThatWorkersResults) {
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  ASSERT_TRUE(
      this->storage_->StoreResult(TaskKindForKey::kBaseline, "b1", "w1", this->BaselineReport(5)).value());
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t2", "w2", this->EvalReport(2.0)).value());
  // w2 reports t1 after w1: a duplicate, indexed under w2 but computed by w1.
  ASSERT_FALSE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w2", this->EvalReport(3.0)).value());

  EXPECT_EQ(this->Purge("w2"), Strings{"t2"});
  EXPECT_FALSE(this->Exists(ResultStoreKey("t2")));
  EXPECT_TRUE(this->Exists(ResultStoreKey("t1")));
  EXPECT_TRUE(this->store_->ListRange(WorkerResultsStoreKey("w2")).value().empty());

  // w1's results go, also the one w2 reported later.
  EXPECT_EQ(this->Purge("w1"), (Strings{"b1", "t1"}));
  EXPECT_FALSE(this->Exists(ResultStoreKey("t1")));
  EXPECT_FALSE(this->Exists(BaselineStoreKey("b1")));
  EXPECT_TRUE(this->store_->ListRange(WorkerResultsStoreKey("w1")).value().empty());
  EXPECT_EQ(this->storage_->HaveResults({{TaskKindForKey::kEval, "t1"}}).value(), std::vector<bool>{false});
}

// SPEC `ppl`: a text's windows are cached like any result, under a kind of their own.
TYPED_TEST(TableStorageTest, TextWindowsAreStoredOnceReadBackAndPurgedWithTheirWorker) {
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kTextWindows, "x1", "w1", this->TextWindowsReport(7, "w9"))
                  .value());
  ASSERT_FALSE(
      this->storage_->StoreResult(TaskKindForKey::kTextWindows, "x1", "w2", this->TextWindowsReport(8)).value());
  EXPECT_TRUE(this->Exists(TextWindowsStoreKey("x1")));
  EXPECT_EQ(this->storage_->HaveResults({{TaskKindForKey::kTextWindows, "x1"}, {TaskKindForKey::kEval, "x1"}}).value(),
            (std::vector<bool>{true, false}));
  StatusOr<v1::TextWindowsOutput> read = this->storage_->ReadTextWindows("x1", "the windows");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->windows_size(), 1);
  EXPECT_EQ(read->windows(0).tokens(1), 7u);  // the first report's
  EXPECT_EQ(read->text_tokens(), 3u);
  EXPECT_EQ(read->computed_by(), "w1");       // the reporting worker, not the claim
  EXPECT_EQ(this->storage_->ReadTextWindows("x2", "the windows of t.txt").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(this->Purge("w2"), Strings{});    // w2's report was a duplicate
  EXPECT_EQ(this->Purge("w1"), Strings{"x1"});
  EXPECT_FALSE(this->Exists(TextWindowsStoreKey("x1")));
}

TYPED_TEST(TableStorageTest, PurgeWorkerIsIdempotent) {
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  // The same task reported twice by w1 (a retried call) is one result.
  ASSERT_FALSE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  EXPECT_EQ(this->Purge("w1"), Strings{"t1"});
  EXPECT_TRUE(this->Purge("w1").empty());
  EXPECT_TRUE(this->Purge("never-seen").empty());
}

TYPED_TEST(TableStorageTest, PurgeWorkerLeavesAResultComputedAgainByAnotherWorker) {
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  ASSERT_EQ(this->Purge("w1"), Strings{"t1"});
  ASSERT_TRUE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w2", this->EvalReport(2.0)).value());
  // w1 reports it late, after its purge: still w2's result.
  ASSERT_FALSE(this->storage_->StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  EXPECT_TRUE(this->Purge("w1").empty());
  EXPECT_EQ(this->storage_->ReadEval("t1", "shard").value().computed_by(), "w2");
}

// A result the worker stores while its purge runs (after the purge read the index, before it
// deleted it) may stay, but a later purge must still find it. Today the purge deletes the whole
// index, the new entry with it, so that result can never be purged.
TYPED_TEST(TableStorageTest, PurgeWorkerKeepsTheIndexOfAResultStoredWhileItRuns) {
  InterleavingStore interleaving(this->store_.get());
  TableStorage storage(&interleaving);
  ASSERT_TRUE(storage.StoreResult(TaskKindForKey::kEval, "t1", "w1", this->EvalReport(1.0)).value());
  interleaving.after_list_range = [&] {
    ASSERT_TRUE(storage.StoreResult(TaskKindForKey::kEval, "t2", "w1", this->EvalReport(2.0)).value());
  };
  EXPECT_EQ(this->Purge("w1", &storage), Strings{"t1"});
  EXPECT_FALSE(this->Exists(ResultStoreKey("t1")));
  if (this->Exists(ResultStoreKey("t2"))) {
    EXPECT_EQ(this->Purge("w1", &storage), Strings{"t2"});
    EXPECT_FALSE(this->Exists(ResultStoreKey("t2")));
  }
}

TYPED_TEST(TableStorageTest, ReadConfigResultsJoinsTheShardsInProbeOrder) {
  v1::CacheKey base;
  base.set_model_fingerprint("fp-a");
  base.set_probe_set_fingerprint("probes-1");
  base.set_prefix_len(3);
  base.set_completion_len(4);
  base.set_dtype(v1::DTYPE_F32);
  const std::string config = "model.layers.0.mlp.up_proj=int8-absmax";
  const std::vector<std::pair<uint32_t, uint32_t>> shards = {{0, 2}, {2, 3}};
  for (const auto& [begin, end] : shards) {
    v1::CacheKey key = base;
    key.mutable_config()->set_canonical(config);
    key.mutable_shard()->set_begin(begin);
    key.mutable_shard()->set_end(end);
    v1::CompleteTaskRequest report;
    for (uint32_t p = begin; p < end; ++p) {
      v1::ProbeResult* r = report.mutable_eval()->add_results();
      r->set_probe_index(p);
      r->set_fdt(p);
    }
    ASSERT_TRUE(this->storage_
                    ->StoreResult(TaskKindForKey::kEval, TaskIdFor(TaskKindForKey::kEval, key), "w1", report)
                    .value());
  }

  StatusOr<std::vector<v1::ProbeResult>> results = this->storage_->ReadConfigResults(base, shards, config);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), 3u);
  for (uint32_t p = 0; p < 3; ++p) {
    EXPECT_EQ((*results)[p].probe_index(), p);
    EXPECT_EQ((*results)[p].fdt(), p);
  }

  // Another config, or a shard nobody computed: DATA_LOSS naming the config and the shard.
  Status other =
      this->storage_->ReadConfigResults(base, shards, "model.layers.1.mlp.up_proj=int8-absmax").status();
  EXPECT_EQ(other.code(), StatusCode::kDataLoss) << other.ToString();
  EXPECT_NE(other.message().find("model.layers.1.mlp.up_proj=int8-absmax"), std::string::npos)
      << other.message();
  Status missing = this->storage_->ReadConfigResults(base, {{0, 2}, {2, 4}}, config).status();
  EXPECT_EQ(missing.code(), StatusCode::kDataLoss) << missing.ToString();
  EXPECT_NE(missing.message().find("2..4"), std::string::npos) << missing.message();
}

}  // namespace
}  // namespace dtm
