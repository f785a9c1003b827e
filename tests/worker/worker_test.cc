// The Worker against an in-process fake coordinator (a real gRPC server on loopback) and a fake
// executor: registration, leasing, reporting, re-registration, retries, cancellation and drain.
// Every wait is on a condition the fakes signal, bounded so a broken worker fails instead of hanging.
#include "worker/worker.h"

#include "common/version.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dtm {
namespace {

using dtm::v1::Task;

constexpr char kWorkerId[] = "w-1";
constexpr char kModelPath[] = "/models/tiny";
constexpr char kFingerprint[] = "f00dfeed0123456789abcdef";
constexpr auto kWaitLimit = std::chrono::seconds(20);

// The coordinator's side of worker_service.proto, scripted by the tests. Its fields are guarded by
// mu; tests read them inside WaitUntil or under the lock.
class FakeCoordinator final : public dtm::v1::WorkerService::Service {
 public:
  grpc::Status RegisterWorker(grpc::ServerContext*, const dtm::v1::RegisterWorkerRequest* request,
                              dtm::v1::RegisterWorkerResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    registrations.push_back(*request);
    events.push_back("register");
    response->set_heartbeat_interval_ms(20);
    response->set_lease_timeout_ms(1000);
    response->set_idle_poll_interval_ms(5);
    changed.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status LeaseTasks(grpc::ServerContext*, const dtm::v1::LeaseTasksRequest* request,
                          dtm::v1::LeaseTasksResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++lease_calls;
    lease_requests.push_back(*request);
    if (lease_not_registered > 0) {
      --lease_not_registered;
      response->set_reregister(true);
      changed.notify_all();
      return grpc::Status::OK;
    }
    while (!queue.empty() && response->tasks_size() < static_cast<int>(request->max_tasks())) {
      *response->add_tasks() = queue.front();
      queue.pop_front();
    }
    changed.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const dtm::v1::HeartbeatRequest* request,
                         dtm::v1::HeartbeatResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++heartbeats;
    if (reregister_next_heartbeat) {
      reregister_next_heartbeat = false;
      response->set_reregister(true);
    }
    for (const std::string& id : request->lease_ids()) {
      dtm::v1::LeaseStatus* status = response->add_leases();
      status->set_lease_id(id);
      auto it = lease_states.find(id);
      status->set_state(it == lease_states.end() ? dtm::v1::LEASE_STATE_VALID : it->second);
      const bool drop =
          status->state() == dtm::v1::LEASE_STATE_CANCELLED || status->state() == dtm::v1::LEASE_STATE_REVOKED;
      if (drop && !cancel_sent_at.count(id)) cancel_sent_at[id] = heartbeats;
    }
    changed.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status CompleteTask(grpc::ServerContext*, const dtm::v1::CompleteTaskRequest* request,
                            dtm::v1::CompleteTaskResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    ++complete_calls[request->task_id()];
    changed.notify_all();
    if (unavailable_completions > 0 || always_unavailable.count(request->task_id())) {
      if (unavailable_completions > 0) --unavailable_completions;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    if (complete_not_registered > 0) {
      // A coordinator that restarted: it stores nothing and says so.
      --complete_not_registered;
      events.push_back("complete refused " + request->task_id());
      response->set_reregister(true);
      return grpc::Status::OK;
    }
    completions.push_back(*request);
    events.push_back("complete " + request->task_id());
    response->set_outcome(dtm::v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
    return grpc::Status::OK;
  }

  grpc::Status FailTask(grpc::ServerContext*, const dtm::v1::FailTaskRequest* request,
                        dtm::v1::FailTaskResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    failures.push_back(*request);
    events.push_back("fail " + request->task_id());
    response->set_requeued(request->retryable());
    changed.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status DrainWorker(grpc::ServerContext*, const dtm::v1::DrainWorkerRequest* request,
                           dtm::v1::DrainWorkerResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    drained.push_back(request->worker_id());
    events.push_back("drain");
    response->set_tasks_released(1);
    changed.notify_all();
    return grpc::Status::OK;
  }

  // Waits until `done()` (called under mu) holds; false after kWaitLimit.
  bool WaitUntil(const std::function<bool()>& done) {
    std::unique_lock<std::mutex> lock(mu);
    return changed.wait_for(lock, kWaitLimit, done);
  }

  std::mutex mu;
  std::condition_variable changed;
  // Script.
  std::deque<Task> queue;
  std::map<std::string, dtm::v1::LeaseState> lease_states;
  int lease_not_registered = 0;
  int complete_not_registered = 0;
  int unavailable_completions = 0;
  std::set<std::string> always_unavailable;  // task ids whose completion never gets through
  bool reregister_next_heartbeat = false;
  // Record.
  std::vector<dtm::v1::RegisterWorkerRequest> registrations;
  std::vector<dtm::v1::LeaseTasksRequest> lease_requests;
  int lease_calls = 0;
  int heartbeats = 0;
  std::map<std::string, int> cancel_sent_at;  // lease id -> heartbeat that first said CANCELLED
  std::map<std::string, int> complete_calls;  // by task id
  std::vector<dtm::v1::CompleteTaskRequest> completions;
  std::vector<dtm::v1::FailTaskRequest> failures;
  std::vector<std::string> drained;
  std::vector<std::string> events;
};

// Fills outputs derived from the rows, so the test can tell exactly what was reported; can hold a
// task until released, and fail chosen tasks.
class FakeExecutor final : public TaskExecutor {
 public:
  Status Execute(const Task& task, dtm::v1::CompleteTaskRequest* request) override {
    std::unique_lock<std::mutex> lock(mu_);
    executed_.push_back(task.task_id());
    changed_.notify_all();
    changed_.wait(lock, [this] { return !hold_; });
    auto error = errors_.find(task.task_id());
    if (error != errors_.end()) return error->second;
    for (int i = 0; i < task.rows_size(); ++i) {
      if (task.kind() == dtm::v1::TASK_KIND_EVAL_SHARD) {
        dtm::v1::ProbeResult* r = request->mutable_eval()->add_results();
        r->set_probe_id(task.rows(i).probe_id());
        r->set_probe_index(task.rows(i).probe_index());
        r->set_fdt(static_cast<uint32_t>(i + 1));
        r->set_sdt(static_cast<uint32_t>(2 * i));
        r->set_nll(0.25 * i);
      } else {
        *request->mutable_baseline()->add_rows() = task.rows(i);
      }
    }
    request->mutable_timing()->set_compute_ms(3);
    request->mutable_timing()->set_tokens_processed(10 * static_cast<uint64_t>(task.rows_size()));
    return OkStatus();
  }

  std::string model_fingerprint() const override { return kFingerprint; }
  dtm::v1::Dtype dtype() const override { return dtm::v1::DTYPE_BF16; }
  int num_layers() const override { return 32; }
  dtm::v1::DeviceInfo device() const override {
    dtm::v1::DeviceInfo d;
    d.set_description("Fake GPU 80GB");
    d.set_type("cuda");
    d.set_memory_bytes(80ull << 30);
    return d;
  }
  uint64_t device_memory_bytes() const override { return 4242; }
  std::map<std::string, uint64_t> component_params() const override {
    return {{"model.layers.0.self_attn.q_proj", 16777216}, {"model.layers.31.mlp.down_proj", 45088768}};
  }

  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = false;
    changed_.notify_all();
  }
  void FailWith(const std::string& task_id, Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    errors_[task_id] = std::move(status);
  }
  bool WaitStarted(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, kWaitLimit, [&] { return executed_.size() >= n; });
  }
  std::vector<std::string> executed() {
    std::lock_guard<std::mutex> lock(mu_);
    return executed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool hold_ = false;
  std::map<std::string, Status> errors_;
  std::vector<std::string> executed_;
};

Task MakeTask(const std::string& id, int rows) {
  Task task;
  task.set_task_id(id);
  task.set_lease_id("lease-" + id);
  task.set_job_id("job-1");
  task.set_kind(dtm::v1::TASK_KIND_EVAL_SHARD);
  task.set_attempt(1);
  task.mutable_key()->set_model_fingerprint(kFingerprint);
  task.mutable_key()->mutable_config()->set_canonical("model.layers.0.mlp.up_proj=int8-absmax");
  for (int i = 0; i < rows; ++i) {
    dtm::v1::BaselineRow* row = task.add_rows();
    row->set_probe_id("p" + std::to_string(i));
    row->set_probe_index(static_cast<uint32_t>(100 + i));
  }
  return task;
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&coordinator_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    options_.worker_id = kWorkerId;
    options_.model_path = kModelPath;
    options_.capacity = 1;
    options_.rpc_timeout_ms = 5000;
    options_.report_retry_ms = 10000;
    options_.initial_backoff_ms = 5;
    options_.max_backoff_ms = 40;
    metrics_ = std::make_unique<WorkerMetrics>(&registry_, kWorkerId);
  }

  void TearDown() override {
    if (worker_ != nullptr) worker_->Drain();
    executor_.Release();
    if (thread_.joinable()) thread_.join();
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  void StartWorker() {
    worker_ = std::make_unique<Worker>(options_, channel_, &executor_, metrics_.get());
    thread_ = std::thread([this] { run_status_ = worker_->Run(); });
  }

  Status DrainAndJoin() {
    worker_->Drain();
    thread_.join();
    return run_status_;
  }

  // The value of one series of this worker; -1 when absent.
  double Metric(const std::string& name, const std::map<std::string, std::string>& labels = {}) {
    for (const prometheus::MetricFamily& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        std::map<std::string, std::string> have;
        for (const prometheus::ClientMetric::Label& l : metric.label) have[l.name] = l.value;
        bool match = have["worker"] == kWorkerId;
        for (const auto& [k, v] : labels) match = match && have[k] == v;
        if (!match) continue;
        if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
        if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
        if (family.type == prometheus::MetricType::Histogram) return static_cast<double>(metric.histogram.sample_count);
      }
    }
    return -1;
  }

  double Tasks(const std::string& outcome) {
    return Metric("dtm_worker_tasks_total", {{"kind", "eval"}, {"outcome", outcome}});
  }

  FakeCoordinator coordinator_;
  FakeExecutor executor_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  WorkerOptions options_;
  prometheus::Registry registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
  Status run_status_ = InternalError("Run() has not returned");
};

TEST_F(WorkerTest, RegistersTheReplicaAndCompletesATaskWithTheExecutorsOutput) {
  options_.capacity = 2;
  coordinator_.queue.push_back(MakeTask("t1", 3));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok()) << run_status_.ToString();

  std::lock_guard<std::mutex> lock(coordinator_.mu);
  ASSERT_EQ(coordinator_.registrations.size(), 1u);
  const dtm::v1::RegisterWorkerRequest& reg = coordinator_.registrations[0];
  EXPECT_EQ(reg.worker_id(), kWorkerId);
  EXPECT_EQ(reg.model_fingerprint(), kFingerprint);
  EXPECT_EQ(reg.model_path(), kModelPath);
  EXPECT_EQ(reg.capacity(), 2u);
  EXPECT_EQ(reg.num_layers(), 32u);
  EXPECT_EQ(reg.dtype(), dtm::v1::DTYPE_BF16);
  EXPECT_EQ(reg.device().description(), "Fake GPU 80GB");
  EXPECT_EQ(reg.version(), kDtmVersion);
  const std::map<std::string, uint64_t> component_params(reg.component_params().begin(),
                                                         reg.component_params().end());
  const std::map<std::string, uint64_t> expected_params = FakeExecutor().component_params();
  EXPECT_EQ(component_params, expected_params);
  ASSERT_FALSE(coordinator_.lease_requests.empty());
  EXPECT_EQ(coordinator_.lease_requests[0].max_tasks(), 2u);
  EXPECT_EQ(coordinator_.lease_requests[0].worker_id(), kWorkerId);
  EXPECT_FALSE(coordinator_.lease_requests[0].request_id().empty());

  const dtm::v1::CompleteTaskRequest& done = coordinator_.completions[0];
  EXPECT_EQ(done.worker_id(), kWorkerId);
  EXPECT_EQ(done.task_id(), "t1");
  EXPECT_EQ(done.lease_id(), "lease-t1");
  ASSERT_TRUE(done.has_eval());
  ASSERT_EQ(done.eval().results_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(done.eval().results(i).probe_id(), "p" + std::to_string(i));
    EXPECT_EQ(done.eval().results(i).probe_index(), static_cast<uint32_t>(100 + i));
    EXPECT_EQ(done.eval().results(i).fdt(), static_cast<uint32_t>(i + 1));
    EXPECT_EQ(done.eval().results(i).sdt(), static_cast<uint32_t>(2 * i));
    EXPECT_EQ(done.eval().results(i).nll(), 0.25 * i);
  }
  EXPECT_EQ(done.timing().compute_ms(), 3u);
  EXPECT_EQ(done.timing().tokens_processed(), 30u);
  EXPECT_EQ(coordinator_.drained, std::vector<std::string>{kWorkerId});

  EXPECT_EQ(Tasks("completed"), 1);
  EXPECT_EQ(Tasks("failed"), 0);
  EXPECT_EQ(Metric("dtm_worker_probes_total"), 3);
  EXPECT_EQ(Metric("dtm_worker_tokens_total"), 30);
  EXPECT_EQ(Metric("dtm_worker_task_duration_seconds", {{"kind", "eval"}}), 1);
  EXPECT_EQ(Metric("dtm_worker_busy"), 0);
  EXPECT_EQ(Metric("dtm_worker_device_memory_bytes"), 4242);
}

TEST_F(WorkerTest, RegistersAgainWhenALeaseCallSaysItIsNotRegistered) {
  coordinator_.lease_not_registered = 1;
  coordinator_.queue.push_back(MakeTask("t1", 1));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.registrations.size(), 2u);
  EXPECT_EQ(coordinator_.events[0], "register");
  EXPECT_EQ(coordinator_.events[1], "register");
}

TEST_F(WorkerTest, RegistersAgainAndReportsAgainWhenACompletionSaysItIsNotRegistered) {
  coordinator_.complete_not_registered = 1;
  coordinator_.queue.push_back(MakeTask("t1", 1));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.registrations.size(), 2u);
  ASSERT_GE(coordinator_.events.size(), 4u);
  EXPECT_EQ(coordinator_.events[1], "complete refused t1");
  EXPECT_EQ(coordinator_.events[2], "register");
  EXPECT_EQ(coordinator_.events[3], "complete t1");
  EXPECT_EQ(Tasks("completed"), 1);
}

TEST_F(WorkerTest, RegistersAgainWhenAHeartbeatSaysSo) {
  coordinator_.reregister_next_heartbeat = true;
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.registrations.size() == 2; }));
  ASSERT_TRUE(DrainAndJoin().ok());
}

TEST_F(WorkerTest, RetriesACompletionWhileTheCoordinatorIsUnavailable) {
  coordinator_.unavailable_completions = 2;
  coordinator_.queue.push_back(MakeTask("t1", 2));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.complete_calls["t1"], 3);
  EXPECT_EQ(coordinator_.completions[0].eval().results_size(), 2);
  EXPECT_EQ(Tasks("completed"), 1);
}

TEST_F(WorkerTest, GivesUpOnAResultAfterTheReportRetryTimeAndGoesOn) {
  options_.report_retry_ms = 100;
  coordinator_.always_unavailable.insert("lost");
  coordinator_.queue.push_back(MakeTask("lost", 1));
  coordinator_.queue.push_back(MakeTask("next", 1));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.completions[0].task_id(), "next");
  EXPECT_GE(coordinator_.complete_calls["lost"], 2);
  EXPECT_EQ(Tasks("failed"), 1);
  EXPECT_EQ(Tasks("completed"), 1);
}

class LeaseEndTest : public WorkerTest, public ::testing::WithParamInterface<dtm::v1::LeaseState> {};

TEST_P(LeaseEndTest, DropsTheResultOfATaskWhoseLeaseTheCoordinatorEnded) {
  executor_.Hold();
  coordinator_.queue.push_back(MakeTask("t1", 1));
  StartWorker();
  ASSERT_TRUE(executor_.WaitStarted(1));
  {
    std::lock_guard<std::mutex> lock(coordinator_.mu);
    coordinator_.lease_states["lease-t1"] = GetParam();
  }
  // The heartbeat thread handles one reply before it sends the next heartbeat, so a heartbeat after
  // the one that ended the lease means the worker knows.
  ASSERT_TRUE(coordinator_.WaitUntil([&] {
    auto it = coordinator_.cancel_sent_at.find("lease-t1");
    return it != coordinator_.cancel_sent_at.end() && coordinator_.heartbeats > it->second;
  }));
  int leases_before;
  {
    std::lock_guard<std::mutex> lock(coordinator_.mu);
    leases_before = coordinator_.lease_calls;
  }
  executor_.Release();
  // Back to leasing: the task is behind it.
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.lease_calls > leases_before; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.complete_calls.count("t1"), 0u);
  EXPECT_TRUE(coordinator_.failures.empty());
  EXPECT_EQ(Tasks("cancelled"), 1);
  EXPECT_EQ(Tasks("completed"), 0);
}

// CANCELLED: no job needs the task; REVOKED: it was completed under another lease, or handed back.
INSTANTIATE_TEST_SUITE_P(CancelledOrRevoked, LeaseEndTest,
                         ::testing::Values(dtm::v1::LEASE_STATE_CANCELLED, dtm::v1::LEASE_STATE_REVOKED),
                         [](const auto& info) { return dtm::v1::LeaseState_Name(info.param); });

TEST_F(WorkerTest, ReportsEachFailureWithItsCause) {
  executor_.FailWith("bad", InvalidArgumentError("config names model.layers.99.mlp.up_proj"));
  executor_.FailWith("oom", Status(StatusCode::kResourceExhausted, "out of memory"));
  executor_.FailWith("gptq", FailedPreconditionError("this worker has no calibration set"));
  executor_.FailWith("flaky", InternalError("NCCL timeout"));
  for (const char* id : {"bad", "oom", "gptq", "flaky"}) coordinator_.queue.push_back(MakeTask(id, 1));
  StartWorker();
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.failures.size() == 4; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  const dtm::v1::FailTaskRequest& bad = coordinator_.failures[0];
  EXPECT_EQ(bad.task_id(), "bad");
  EXPECT_EQ(bad.lease_id(), "lease-bad");
  EXPECT_EQ(bad.worker_id(), kWorkerId);
  EXPECT_FALSE(bad.retryable());
  EXPECT_EQ(bad.error().code(), static_cast<int>(StatusCode::kInvalidArgument));
  EXPECT_EQ(bad.error().message(), "config names model.layers.99.mlp.up_proj");
  EXPECT_FALSE(bad.request_id().empty());
  EXPECT_EQ(bad.cause(), dtm::v1::FAILURE_CAUSE_TASK);
  const dtm::v1::FailTaskRequest& oom = coordinator_.failures[1];
  EXPECT_TRUE(oom.retryable());
  EXPECT_EQ(oom.cause(), dtm::v1::FAILURE_CAUSE_WORKER);
  EXPECT_EQ(oom.error().code(), static_cast<int>(StatusCode::kResourceExhausted));
  EXPECT_NE(oom.request_id(), bad.request_id());
  // A capability this worker lacks: another worker may run the task.
  EXPECT_EQ(coordinator_.failures[2].cause(), dtm::v1::FAILURE_CAUSE_WORKER);
  EXPECT_TRUE(coordinator_.failures[2].retryable());
  EXPECT_EQ(coordinator_.failures[3].cause(), dtm::v1::FAILURE_CAUSE_TRANSIENT);
  EXPECT_TRUE(coordinator_.failures[3].retryable());
  EXPECT_TRUE(coordinator_.completions.empty());
  EXPECT_EQ(Tasks("failed"), 4);
}

TEST_F(WorkerTest, DrainDuringATaskFinishesAndReportsItThenReturnsTheRestWithDrainWorker) {
  options_.capacity = 2;
  executor_.Hold();
  coordinator_.queue.push_back(MakeTask("t1", 1));
  coordinator_.queue.push_back(MakeTask("t2", 1));
  StartWorker();
  ASSERT_TRUE(executor_.WaitStarted(1));
  worker_->Drain();
  executor_.Release();
  thread_.join();
  ASSERT_TRUE(run_status_.ok()) << run_status_.ToString();

  EXPECT_EQ(executor_.executed(), std::vector<std::string>{"t1"});
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  ASSERT_EQ(coordinator_.completions.size(), 1u);
  EXPECT_EQ(coordinator_.completions[0].task_id(), "t1");
  EXPECT_EQ(coordinator_.drained, std::vector<std::string>{kWorkerId});
  // The result first, then the drain that hands t2 back.
  ASSERT_GE(coordinator_.events.size(), 2u);
  EXPECT_EQ(coordinator_.events[coordinator_.events.size() - 2], "complete t1");
  EXPECT_EQ(coordinator_.events.back(), "drain");
}

TEST_F(WorkerTest, DrainBeforeRunReturnsWithoutRegistering) {
  worker_ = std::make_unique<Worker>(options_, channel_, &executor_, metrics_.get());
  worker_->Drain();
  EXPECT_TRUE(worker_->Run().ok());
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_TRUE(coordinator_.registrations.empty());
  EXPECT_TRUE(coordinator_.drained.empty());
}

TEST_F(WorkerTest, RetriesRegistrationUntilTheCoordinatorComesUp) {
  // Nothing listens on the channel's address at first.
  grpc::ServerBuilder probe;
  int port = 0;
  probe.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  FakeCoordinator late;
  probe.RegisterService(&late);
  std::unique_ptr<grpc::Server> placeholder = probe.BuildAndStart();
  ASSERT_NE(placeholder, nullptr);
  placeholder->Shutdown();
  placeholder.reset();  // the port is free again, and refuses connections
  channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  StartWorker();
  ASSERT_TRUE(executor_.executed().empty());
  // Let a few attempts fail, then start a coordinator on that port.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // not a synchronisation: attempts fail either way
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials());
  builder.RegisterService(&late);
  late.queue.push_back(MakeTask("t1", 1));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(late.WaitUntil([&] { return late.completions.size() == 1; }));
  ASSERT_TRUE(DrainAndJoin().ok());
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace dtm
