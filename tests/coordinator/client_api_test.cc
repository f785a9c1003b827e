// The client API's promises (dtm_service.proto, client_api.h): what submission refuses and names,
// idempotency on the client request id, pages that stay within the message limit, answers from
// memory while the store is away, purging a worker's results, and the warning of a noise floor no
// healthy float32 worker produces.
#include "coordinator/client_api.h"

#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "tests/coordinator/scheduler_fixture.h"

namespace dtm {
namespace {

using namespace scheduler_testing;  // NOLINT: the fixture's vocabulary
using ::testing::Not;

// An InMemoryStore that is unreachable while `down`, as Redis is during an outage.
class SwitchableStore : public InMemoryStore {
 public:
  bool down = false;
  StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    if (down) return UnavailableError("store down (test)");
    return InMemoryStore::Get(key);
  }
  Status Set(const std::string& key, const std::string& value) override {
    if (down) return UnavailableError("store down (test)");
    return InMemoryStore::Set(key, value);
  }
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override {
    if (down) return UnavailableError("store down (test)");
    return InMemoryStore::SetIfAbsent(key, value);
  }
};

class ClientApiTest : public SchedulerFixture {
 protected:
  StatusOr<v1::Job> TrySubmit(const std::string& spec, const std::string& request_id = "") {
    return scheduler_->client().Submit(spec, request_id.empty() ? NewRequestId() : request_id);
  }

  // Submitting `spec` fails with INVALID_ARGUMENT whose message holds every one of `needles`, and no
  // job is left behind.
  std::string ExpectRefused(const std::string& spec, const std::vector<std::string>& needles) {
    StatusOr<v1::Job> job = TrySubmit(spec);
    EXPECT_FALSE(job.ok());
    if (job.ok()) return "";
    EXPECT_EQ(job.status().code(), StatusCode::kInvalidArgument) << job.status().ToString();
    for (const std::string& needle : needles) EXPECT_THAT(job.status().message(), HasSubstr(needle));
    EXPECT_EQ(JobCount(*scheduler_), 0u);
    return job.status().message();
  }

  v1::ListJobsResponse List(uint32_t page_size, const std::string& token = "") {
    v1::ListJobsRequest request;
    request.set_page_size(page_size);
    request.set_page_token(token);
    StatusOr<v1::ListJobsResponse> response = scheduler_->client().ListJobs(request);
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    return response.ok() ? *response : v1::ListJobsResponse();
  }

  // A job run to its end by worker w1, with the synthetic outputs.
  std::string RunProbeJob(Scheduler& s, const std::string& request_id = "") {
    Register(s, "w1");
    const std::string id = Submit(s, ProbeSpec(), request_id);
    std::vector<v1::Task> leased;
    Drive(s, id, "w1", &leased);
    EXPECT_EQ(Job(s, id).state(), v1::JOB_STATE_SUCCEEDED);
    return id;
  }
};

TEST_F(ClientApiTest, RefusesASpecLargerThanTheLimitNamingIt) {
  CoordinatorOptions options = Options();
  options.max_spec_bytes = 200;
  scheduler_ = Make(&store_, options);
  const std::string spec = ProbeSpec("name: " + std::string(300, 'x') + "\n");
  StatusOr<v1::Job> job = TrySubmit(spec);
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr(std::to_string(spec.size()) + " bytes"));
  EXPECT_THAT(job.status().message(), HasSubstr("--max-spec-bytes"));
}

TEST_F(ClientApiTest, RefusesTextThatIsNotUtf8NamingTheByte) {
  std::string spec = ProbeSpec("name: caf\xe9\n");
  const size_t at = spec.find('\xe9');
  ExpectRefused(spec, {"not valid UTF-8", "byte " + std::to_string(at)});
}

TEST_F(ClientApiTest, RefusesAStageOfMoreTasksThanTheLimitBeforeCreatingTheJob) {
  CoordinatorOptions options = Options();
  options.max_stage_tasks = 40;  // the probe job's stage: (14 configs + the noise floor) x 3 shards = 45
  scheduler_ = Make(&store_, options);
  ExpectRefused(ProbeSpec(), {"45 tasks", "14 configs", "3 shards", "40", "--max-stage-tasks"});
  // An evaluate job says so even before the model's layers are known.
  CoordinatorOptions blind = options;
  blind.read_model_configs = false;
  scheduler_ = Make(&store_, blind);
  std::string many;
  for (int i = 1; i <= 20; ++i) {
    many += std::string(i > 1 ? ", " : "") + "model.layers.0.mlp.up_proj=prune:0." + std::to_string(100 + i).substr(1);
  }
  ExpectRefused(EvaluateSpec(many), {"evaluate.configs", "20 configs", "63 tasks", "--max-stage-tasks"});
}

TEST_F(ClientApiTest, QuotesAHugeGlobBoundedInItsError) {
  const std::string glob = "model.layers.*" + std::string(100000, 'x');
  const std::string message =
      ExpectRefused(Replaced(ProbeSpec(), "methods: [int8-absmax]", "methods: [int8-absmax]\n  components: [" + glob + "]"),
                    {"matches no component", "(100014 bytes)"});
  EXPECT_LT(message.size(), 1000u);
}

TEST_F(ClientApiTest, RefusesProbeFilesOutsideTheDataRootOrNotRegular) {
  const std::string outside = (fs::temp_directory_path() / ("dtm-outside-" + std::to_string(getpid()))).string();
  std::ofstream(outside) << "SECRET-abc123\n";
  ExpectRefused(Replaced(ProbeSpec(), probes_path_, outside), {"probes", "outside the data root"});
  ExpectRefused(Replaced(ProbeSpec(), probes_path_, "/dev/zero"), {"outside the data root"});
  std::remove(outside.c_str());
  const std::string fifo = (dir_ / "fifo.jsonl").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectRefused(Replaced(ProbeSpec(), probes_path_, fifo), {"not a regular file"});
  const std::string garbage = (dir_ / "garbage.jsonl").string();
  std::ofstream(garbage) << "SECRET-abc123\n";
  const std::string message = ExpectRefused(Replaced(ProbeSpec(), probes_path_, garbage), {"invalid JSON"});
  EXPECT_THAT(message, Not(HasSubstr("SECRET")));
}

TEST_F(ClientApiTest, TheSameRequestIdReturnsTheSameJobAndRefusesAnotherSpec) {
  const std::string id = Submit(*scheduler_, ProbeSpec(), "request-1");
  EXPECT_EQ(id, JobIdFor("request-1"));
  StatusOr<v1::Job> again = TrySubmit(ProbeSpec(), "request-1");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->job_id(), id);
  StatusOr<v1::Job> other = TrySubmit(ProbeSpec("name: other\n"), "request-1");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr(id));
  EXPECT_EQ(TrySubmit(ProbeSpec(), std::string(129, 'r')).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->client().Submit(ProbeSpec(), "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(JobCount(*scheduler_), 1u);
}

TEST_F(ClientApiTest, AJobStoredByAnEarlierRunIsWhatARetriedSubmitReturns) {
  // The first coordinator stored the job and died before answering; the retry reaches a new one
  // that learnt of the job only from the store.
  const std::string id = Submit(*scheduler_, ProbeSpec(), "lost-reply");
  scheduler_.reset();
  std::unique_ptr<Scheduler> restarted = Make(&store_);
  ASSERT_TRUE(restarted->Start().ok());
  StatusOr<v1::Job> again = restarted->client().Submit(ProbeSpec(), "lost-reply");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->job_id(), id);
  EXPECT_EQ(JobCount(*restarted), 1u);
  restarted->Stop();
}

// An InMemoryStore whose SetIfAbsent (how a job is created) waits until `release` is set, so that a
// Submit can be held in the middle while a retry arrives.
class GatedStore : public InMemoryStore {
 public:
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool release = false;
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override {
    {
      std::unique_lock<std::mutex> lock(mu);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [this] { return release; });
    }
    return InMemoryStore::SetIfAbsent(key, value);
  }
};

TEST_F(ClientApiTest, ARetryWhileTheFirstCallIsUnderWayWaitsForItAndReturnsItsJob) {
  // The client gave up on its first call (a short deadline) and retried while the coordinator was
  // still storing the job: the retry is answered with that job, not told to retry again.
  GatedStore store;
  std::unique_ptr<Scheduler> s = Make(&store);
  StatusOr<v1::Job> first = InternalError("not answered");
  std::thread first_call([&] { first = s->client().Submit(ProbeSpec(), "slow-first"); });
  {
    std::unique_lock<std::mutex> lock(store.mu);
    store.cv.wait(lock, [&] { return store.entered; });
  }
  StatusOr<v1::Job> retry = InternalError("not answered");
  std::thread retry_call([&] { retry = s->client().Submit(ProbeSpec(), "slow-first"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the retry is waiting by now
  {
    std::lock_guard<std::mutex> lock(store.mu);
    store.release = true;
  }
  store.cv.notify_all();
  first_call.join();
  retry_call.join();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->job_id(), first->job_id());
  EXPECT_EQ(JobCount(*s), 1u);
}

TEST_F(ClientApiTest, ListsJobsNewestFirstInPagesWithoutTheirSpecs) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(Submit(*scheduler_, ProbeSpec("name: job-" + std::to_string(i) + "\n")));
    usleep(2000);  // distinct create times, to the nanosecond
  }
  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsResponse page = List(2, token);
    ++pages;
    EXPECT_LE(page.jobs_size(), 2);
    for (const v1::Job& job : page.jobs()) {
      EXPECT_TRUE(job.spec_yaml().empty());
      listed.push_back(job.job_id());
    }
    token = page.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(listed, std::vector<std::string>(ids.rbegin(), ids.rend()));
  EXPECT_THAT(Job(*scheduler_, ids[0]).spec_yaml(), HasSubstr("job-0"));
  // A page starts after the last job of the one before, whatever was submitted meanwhile.
  const v1::ListJobsResponse first = List(2);
  Submit(*scheduler_, ProbeSpec("name: newer\n"));
  EXPECT_EQ(List(2, first.next_page_token()).jobs(0).job_id(), ids[2]);
  v1::ListJobsRequest bad;
  bad.set_page_token("not a token");
  EXPECT_EQ(scheduler_->client().ListJobs(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ClientApiTest, ResultsComeInPagesAndEveryPageCarriesTheNoiseFloor) {
  const std::string id = RunProbeJob(*scheduler_);
  const std::vector<std::string> configs = ExpectedProbeConfigs();
  std::vector<std::string> rows;
  v1::GetResultsRequest request;
  request.set_job_id(id);
  request.set_page_size(4);
  request.set_include_probe_results(true);
  int pages = 0;
  do {
    StatusOr<v1::GetResultsResponse> page = scheduler_->client().Results(request);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ++pages;
    EXPECT_LE(page->results_size(), 4);
    EXPECT_TRUE(page->has_noise_floor());
    for (const v1::ConfigResult& row : page->results()) {
      rows.push_back(row.config());
      EXPECT_EQ(row.probe_results_size(), static_cast<int>(kNumProbes));
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  EXPECT_EQ(pages, 4);  // 14 rows, 4 a page
  EXPECT_EQ(rows, configs);
  request.set_page_token("x");
  EXPECT_EQ(scheduler_->client().Results(request).status().code(), StatusCode::kInvalidArgument);
}

// SPEC's fdt75 order (ties: fdt_mean higher, dppl lower, then the config string) over the synthetic
// metrics, written out again rather than taken from the driver.
bool SearchRanksBefore(const std::string& a, const std::string& b) {
  const ExpectedMetrics ma = Expected(a), mb = Expected(b);
  if (ma.fdt75 != mb.fdt75) return ma.fdt75 > mb.fdt75;
  if (ma.fdt_mean != mb.fdt_mean) return ma.fdt_mean > mb.fdt_mean;
  if (ma.dppl != mb.dppl) return ma.dppl < mb.dppl;
  return a < b;
}

std::vector<v1::ConfigResult> AllPages(Scheduler& s, v1::GetResultsRequest request) {
  std::vector<v1::ConfigResult> rows;
  for (int pages = 0; pages < 100; ++pages) {
    StatusOr<v1::GetResultsResponse> page = s.client().Results(request);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) break;
    if (request.page_size() > 0) {
      EXPECT_LE(page->results_size(), static_cast<int>(request.page_size()));
    }
    rows.insert(rows.end(), page->results().begin(), page->results().end());
    if (page->next_page_token().empty()) break;
    request.set_page_token(page->next_page_token());
  }
  return rows;
}

std::vector<std::string> ConfigsOf(const std::vector<v1::ConfigResult>& rows) {
  std::vector<std::string> configs;
  for (const v1::ConfigResult& row : rows) configs.push_back(row.config());
  return configs;
}

TEST_F(ClientApiTest, AllNodesReturnsEveryEvaluatedNodeOfASearchLevelByLevelAndPages) {
  Register(*scheduler_, "w1");
  const std::string spec = Replaced(ProbeSpec(), "kind: probe", "kind: quant-search");
  const std::string id = Submit(*scheduler_, Replaced(spec, "probe:\n  methods: [int8-absmax]\n",
                                                      "quant-search:\n  beam: 2\n  depth: 2\n"
                                                      "  components: ['*.self_attn.*']\n"));
  std::vector<v1::Task> leased;
  Drive(*scheduler_, id, "w1", &leased);
  ASSERT_EQ(Job(*scheduler_, id).state(), v1::JOB_STATE_SUCCEEDED);

  // Level 1: the 8 attention components alone; level 2: the beam's two nodes grown by each of the
  // 7 components they lack, the pair they share counted once. Each level ranked independently.
  std::vector<std::string> level1;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (const char* kind : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      level1.push_back("model.layers." + std::to_string(layer) + ".self_attn." + kind + "=int8-absmax");
    }
  }
  std::sort(level1.begin(), level1.end(), SearchRanksBefore);
  std::set<std::string> children;
  for (size_t parent = 0; parent < 2; ++parent) {
    for (const std::string& other : level1) {
      if (other == level1[parent]) continue;
      children.insert(std::min(other, level1[parent]) + "," + std::max(other, level1[parent]));
    }
  }
  std::vector<std::string> level2(children.begin(), children.end());
  ASSERT_EQ(level2.size(), 13u);
  std::sort(level2.begin(), level2.end(), SearchRanksBefore);

  v1::GetResultsRequest request;
  request.set_job_id(id);
  const std::vector<v1::ConfigResult> beams = AllPages(*scheduler_, request);
  EXPECT_EQ(ConfigsOf(beams), (std::vector<std::string>{"", level1[0], level1[1], level2[0], level2[1]}));
  for (const v1::ConfigResult& row : beams) EXPECT_TRUE(row.has_rank()) << row.config();

  request.set_all_nodes(true);
  const std::vector<v1::ConfigResult> all = AllPages(*scheduler_, request);
  std::vector<std::string> want = {""};
  want.insert(want.end(), level1.begin(), level1.end());
  want.insert(want.end(), level2.begin(), level2.end());
  ASSERT_EQ(ConfigsOf(all), want);
  const std::vector<uint32_t> levels = {0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
  for (size_t i = 0; i < all.size(); ++i) {
    SCOPED_TRACE("row " + std::to_string(i) + " '" + all[i].config() + "'");
    ASSERT_TRUE(all[i].has_search_level());
    EXPECT_EQ(all[i].search_level(), levels[i]);
    // Only the beam has a rank: level 0's one node and each level's first two.
    const size_t first_of_level = levels[i] == 0 ? 0 : levels[i] == 1 ? 1 : 9;
    const size_t place = i - first_of_level;
    EXPECT_EQ(all[i].has_rank(), place < 2);
    if (all[i].has_rank()) {
      EXPECT_EQ(all[i].rank(), place);
    }
    EXPECT_TRUE(all[i].complete());
    ExpectMetrics(all[i].metrics(), all[i].config());
  }
  // Pages of 3 (the last one short) give the same rows in the same order.
  request.set_page_size(3);
  EXPECT_EQ(ConfigsOf(AllPages(*scheduler_, request)), want);
  // The levels' node counts agree with the rows.
  const v1::GetResultsResponse summary = Results(*scheduler_, id);
  ASSERT_EQ(summary.search_levels_size(), 2);
  EXPECT_EQ(summary.search_levels(0).nodes(), 8u);
  EXPECT_EQ(summary.search_levels(1).nodes(), 13u);
  // With a config filter, a node outside the beam is found only with all_nodes.
  request.set_page_size(0);
  request.add_configs(level2[5]);
  EXPECT_EQ(ConfigsOf(AllPages(*scheduler_, request)), std::vector<std::string>{level2[5]});
  request.set_all_nodes(false);
  EXPECT_TRUE(AllPages(*scheduler_, request).empty());
}

TEST_F(ClientApiTest, AllNodesHasNoEffectOnAProbeJob) {
  const std::string id = RunProbeJob(*scheduler_);
  v1::GetResultsRequest request;
  request.set_job_id(id);
  request.set_all_nodes(true);
  EXPECT_EQ(ConfigsOf(AllPages(*scheduler_, request)), ExpectedProbeConfigs());
}

TEST_F(ClientApiTest, AnswersFromMemoryWhileTheStoreIsAwayAndStoresACancellationBeforeConfirmingIt) {
  SwitchableStore store;
  std::unique_ptr<Scheduler> s = Make(&store);
  ASSERT_TRUE(s->Start().ok());
  Register(*s, "w1");
  const std::string id = Submit(*s, ProbeSpec());
  store.down = true;
  EXPECT_EQ(Job(*s, id).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(JobCount(*s), 1u);
  StatusOr<v1::Job> refused = s->client().Submit(ProbeSpec("name: during\n"), "during");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  // Cancelled in memory at once, confirmed only once the store has it.
  StatusOr<v1::Job> cancel = s->client().Cancel(id, "outage");
  EXPECT_EQ(cancel.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(cancel.status().message(), HasSubstr("retry to confirm"));
  EXPECT_EQ(Job(*s, id).state(), v1::JOB_STATE_CANCELLED);
  store.down = false;
  cancel = s->client().Cancel(id, "outage");
  ASSERT_TRUE(cancel.ok()) << cancel.status().ToString();
  v1::Job stored;
  ASSERT_TRUE(stored.ParseFromString(**store.Get(JobStoreKey(id))));
  EXPECT_EQ(stored.state(), v1::JOB_STATE_CANCELLED);
  s->Stop();
}

TEST_F(ClientApiTest, PurgingAWorkerDeletesItsResultsAndTheNextJobComputesThemAgain) {
  const std::string first = RunProbeJob(*scheduler_);
  StatusOr<v1::PurgeWorkerResultsResponse> purged = scheduler_->client().PurgeWorkerResults("w1");
  ASSERT_TRUE(purged.ok()) << purged.status().ToString();
  EXPECT_EQ(purged->results_deleted(), static_cast<uint32_t>(kTasksTotal));
  EXPECT_EQ(scheduler_->client().PurgeWorkerResults("w1")->results_deleted(), 0u);
  EXPECT_EQ(scheduler_->client().PurgeWorkerResults("").status().code(), StatusCode::kInvalidArgument);
  // The finished job keeps its results; a new one computes every task again.
  ExpectProbeJobResults(Results(*scheduler_, first));
  const std::string second = Submit(*scheduler_, ProbeSpec());
  std::vector<v1::Task> leased;
  Drive(*scheduler_, second, "w1", &leased);
  EXPECT_EQ(leased.size(), static_cast<size_t>(kTasksTotal));
  EXPECT_EQ(Job(*scheduler_, second).progress().tasks_cached(), 0u);
}

TEST_F(ClientApiTest, WarnsOfAFloat32NoiseFloorNoHealthyWorkerProduces) {
  // The synthetic outputs diverge for the uncompressed model too: in float32 that cannot be right.
  const std::string id = RunProbeJob(*scheduler_);
  const v1::GetResultsResponse results = Results(*scheduler_, id);
  ASSERT_LT(results.noise_floor().fdt75(), 0.9 * kCompletion);
  // The synthetic outputs also saturate fdt75 for some configs: that is a warning of its own.
  ASSERT_EQ(results.warnings_size(), 2);
  EXPECT_THAT(results.warnings(0), HasSubstr("fdt75 is saturated for"));
  EXPECT_THAT(results.warnings(1), HasSubstr("suspect noise floor"));
  EXPECT_THAT(results.warnings(1), HasSubstr("of 6"));
  EXPECT_THAT(results.warnings(1), HasSubstr("purge-worker"));
}

}  // namespace
}  // namespace dtm
