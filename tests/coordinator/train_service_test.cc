// A train job through the worker API, on a fake clock with fake workers (no model, no training):
// the gang forms from idle workers with gang addresses, reports are checked against the gang's
// leases, rank 0's heartbeats are the job's progress, a failed member ends the attempt for all, and
// rank 0's result is the job's. And --model-root: an idle worker is asked to load a model a job needs
// and nobody serves, and is not asked again for one it refused; a train job's model is loaded by as
// many gang-capable workers as its gang needs.
#include "coordinator/worker_api.h"

#include <fstream>

#include "tests/coordinator/scheduler_fixture.h"

namespace dtm {
namespace {

using namespace scheduler_testing;  // NOLINT: the fixture's vocabulary

class TrainServiceTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    data_ = (dir_ / "c4.jsonl").string();
    std::ofstream(data_) << "{\"text\": \"a document\"}\n";
    output_ = (dir_ / "trained").string();
  }

  WorkerApi& api() { return scheduler_->worker(); }

  void RegisterWith(const std::string& worker, const std::string& model_path, const std::string& gang_address,
                    const std::string& model_root = "", const std::string& refused = "") {
    v1::RegisterWorkerRequest request;
    request.set_worker_id(worker);
    request.set_model_fingerprint(model_path == model_dir_ ? kFingerprint : "other-fingerprint");
    request.set_model_path(model_path);
    request.set_dtype(v1::DTYPE_F32);
    request.set_num_layers(kLayers);
    request.set_capacity(1);
    request.set_version(kDtmVersion);
    request.set_gang_address(gang_address);
    request.set_model_root(model_root);
    request.set_refused_model_path(refused);
    request.set_refused_reason(refused.empty() ? "" : "it resolves outside the root");
    ASSERT_TRUE(api().RegisterWorker(request).ok());
  }

  std::string TrainSpec() const {
    return "kind: train\nmodel: " + model_dir_ + "\ntrain:\n  data: " + data_ + "\n  output: " + output_ +
           "\n  workers: 2\n  batch: 4\n  seq_len: 8\n  phases: masked:3,unmasked:1\n";
  }

  v1::CompleteTaskRequest Report(const v1::Task& task, const std::string& worker, uint32_t rank) {
    v1::CompleteTaskRequest request;
    request.set_worker_id(worker);
    request.set_lease_id(task.lease_id());
    request.set_task_id(task.task_id());
    v1::TrainingResult& out = *request.mutable_train();
    out.set_rank(rank);
    if (rank == 0) {
      for (double loss : {4.0, 3.5, 3.0, 2.9}) out.add_losses(loss);
      out.set_steps(4);
      out.set_output_dir(task.train().output_dir());
      out.set_output_fingerprint(std::string(64, 'f'));
      out.set_gang_size(2);
    }
    return request;
  }

  // w1 asks first and waits; w2 completes the gang; w1 then gets its grant.
  std::pair<v1::Task, v1::Task> FormGang() {
    EXPECT_TRUE(Lease(*scheduler_, "w1", 1).empty());
    std::vector<v1::Task> second = LeaseTrain("w2");
    std::vector<v1::Task> first = LeaseTrain("w1");
    EXPECT_EQ(first.size(), 1u);
    EXPECT_EQ(second.size(), 1u);
    return {first.empty() ? v1::Task() : first[0], second.empty() ? v1::Task() : second[0]};
  }

  std::vector<v1::Task> LeaseTrain(const std::string& worker) {
    StatusOr<v1::LeaseTasksResponse> response = TryLease(*scheduler_, worker, 1);
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    return response.ok() ? std::vector<v1::Task>(response->tasks().begin(), response->tasks().end())
                         : std::vector<v1::Task>{};
  }

  std::string data_, output_;
};

TEST_F(TrainServiceTest, AGangFormsReportsAreCheckedAndRankZerosResultIsTheJobs) {
  RegisterWith("w1", model_dir_, "127.0.0.1:4001");
  RegisterWith("w2", model_dir_, "127.0.0.1:4002");
  RegisterWith("w3", model_dir_, "");  // takes no train task
  const std::string job = Submit(*scheduler_, TrainSpec());
  ASSERT_EQ(Job(*scheduler_, job).state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(LeaseTrain("w3").empty());
  auto [rank0, rank1] = FormGang();
  EXPECT_EQ(rank0.kind(), v1::TASK_KIND_TRAIN);
  EXPECT_EQ(rank0.train().rank(), 0u);
  EXPECT_EQ(rank1.train().rank(), 1u);
  EXPECT_EQ(rank0.train().gang_size(), 2u);
  EXPECT_EQ(rank0.train().rendezvous(), "127.0.0.1:4001");  // the first to wait is rank 0
  EXPECT_EQ(rank1.train().rendezvous(), "127.0.0.1:4001");
  EXPECT_EQ(rank0.train().output_dir(), output_);
  EXPECT_EQ(rank0.train().checkpoint_dir(), output_ + ".checkpoints");
  EXPECT_EQ(rank0.train().phases(), "masked:3,unmasked:1");

  // Reports that do not fit the lease are refused, and change nothing.
  EXPECT_EQ(api().CompleteTask(Report(rank1, "w2", 0)).status().code(), StatusCode::kInvalidArgument);
  v1::CompleteTaskRequest stolen = Report(rank0, "w3", 0);
  EXPECT_EQ(api().CompleteTask(stolen).status().code(), StatusCode::kPermissionDenied);
  v1::CompleteTaskRequest no_loss = Report(rank0, "w1", 0);
  no_loss.mutable_train()->clear_losses();
  EXPECT_EQ(api().CompleteTask(no_loss).status().code(), StatusCode::kInvalidArgument);

  // Rank 0's heartbeat is the job's progress.
  v1::HeartbeatRequest beat;
  beat.set_worker_id("w1");
  beat.add_lease_ids(rank0.lease_id());
  v1::TaskProgress* progress = beat.add_progress();
  progress->set_lease_id(rank0.lease_id());
  progress->set_step(2);
  progress->set_total_steps(4);
  progress->set_loss(3.5);
  ASSERT_EQ(api().Heartbeat(beat)->leases(0).state(), v1::LEASE_STATE_VALID);
  v1::Job running = Job(*scheduler_, job);
  EXPECT_EQ(running.progress().train_step(), 2u);
  EXPECT_EQ(running.progress().train_steps(), 4u);
  EXPECT_DOUBLE_EQ(running.progress().train_loss(), 3.5);

  // Rank 1 fails: the attempt ends for rank 0 too, and a new gang forms.
  v1::FailTaskRequest fail;
  fail.set_worker_id("w2");
  fail.set_lease_id(rank1.lease_id());
  fail.set_task_id(rank1.task_id());
  fail.set_cause(v1::FAILURE_CAUSE_TRANSIENT);
  fail.mutable_error()->set_code(static_cast<int>(StatusCode::kUnavailable));
  fail.mutable_error()->set_message("gloo: connection closed by peer");
  ASSERT_TRUE(api().FailTask(fail)->requeued());
  beat.clear_progress();
  EXPECT_EQ(api().Heartbeat(beat)->leases(0).state(), v1::LEASE_STATE_REVOKED);
  EXPECT_EQ(Job(*scheduler_, job).progress().tasks_requeued(), 1u);
  auto [again0, again1] = FormGang();
  EXPECT_EQ(again0.attempt(), 2u);
  EXPECT_NE(again0.lease_id(), rank0.lease_id());

  EXPECT_EQ(api().CompleteTask(Report(again1, "w2", 1))->outcome(), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  EXPECT_EQ(Job(*scheduler_, job).state(), v1::JOB_STATE_RUNNING);  // rank 1 alone does not finish it
  EXPECT_EQ(api().CompleteTask(Report(again0, "w1", 0))->outcome(), v1::CompleteTaskResponse::OUTCOME_ACCEPTED);
  scheduler_->Tick();
  ASSERT_EQ(Job(*scheduler_, job).state(), v1::JOB_STATE_SUCCEEDED);
  v1::GetResultsResponse results = Results(*scheduler_, job);
  ASSERT_TRUE(results.has_training());
  EXPECT_EQ(results.training().losses_size(), 4);
  EXPECT_EQ(results.training().output_dir(), output_);
  // A late report of the first attempt's rank 0 is a duplicate.
  EXPECT_EQ(api().CompleteTask(Report(rank0, "w1", 0))->outcome(), v1::CompleteTaskResponse::OUTCOME_DUPLICATE);
}

TEST_F(TrainServiceTest, AnIdleWorkerUnderAModelRootIsAskedToLoadAModelNobodyServesAndNotAgainAfterARefusal) {
  const std::string wanted = (dir_ / "wanted").string();
  RegisterWith("w1", model_dir_, "", dir_.string());
  std::string spec = EvaluateSpec("model.layers.0.mlp.up_proj=int8-absmax");
  spec.replace(spec.find(model_dir_), model_dir_.size(), wanted);
  const std::string job = Submit(*scheduler_, spec);
  StatusOr<v1::LeaseTasksResponse> asked = TryLease(*scheduler_, "w1", 1);
  ASSERT_TRUE(asked.ok());
  EXPECT_EQ(asked->load_model(), wanted);
  EXPECT_EQ(asked->tasks_size(), 0);
  // The worker refused it (it registers again saying so): it is not asked again.
  RegisterWith("w1", model_dir_, "", dir_.string(), wanted);
  asked = TryLease(*scheduler_, "w1", 1);
  ASSERT_TRUE(asked.ok());
  EXPECT_EQ(asked->load_model(), "");
  // Workers without a root, or whose root does not hold the path, are never asked.
  RegisterWith("w2", model_dir_, "");
  RegisterWith("w3", model_dir_, "", (dir_ / "elsewhere").string());
  EXPECT_EQ(TryLease(*scheduler_, "w2", 1)->load_model(), "");
  EXPECT_EQ(TryLease(*scheduler_, "w3", 1)->load_model(), "");
  EXPECT_EQ(Job(*scheduler_, job).state(), v1::JOB_STATE_PENDING);
}

TEST_F(TrainServiceTest, AGangsModelIsLoadedByAsManyGangCapableWorkersUnderTheRootAsItNeeds) {
  // A train job of 2 on a model under the root that nobody serves (a round's trained model).
  const std::string wanted = (dir_ / "round-1").string();
  std::string spec = TrainSpec();
  spec.replace(spec.find(model_dir_), model_dir_.size(), wanted);
  RegisterWith("w0", model_dir_, "", dir_.string());           // no gang address: never asked for a gang
  RegisterWith("w1", model_dir_, "127.0.0.1:1", dir_.string());
  RegisterWith("w2", model_dir_, "127.0.0.1:2", dir_.string());
  const std::string job = Submit(*scheduler_, spec);
  EXPECT_EQ(TryLease(*scheduler_, "w0", 1)->load_model(), "");
  EXPECT_EQ(TryLease(*scheduler_, "w1", 1)->load_model(), wanted);
  // w1 switched: one serves it, the gang needs two, so w2 is asked too; w1 is not asked again.
  RegisterWith("w1", wanted, "127.0.0.1:1", dir_.string());
  EXPECT_EQ(TryLease(*scheduler_, "w2", 1)->load_model(), wanted);
  RegisterWith("w2", wanted, "127.0.0.1:2", dir_.string());
  // Enough now: a further gang-capable worker is not asked, and the two form the gang.
  RegisterWith("w3", model_dir_, "127.0.0.1:3", dir_.string());
  EXPECT_EQ(TryLease(*scheduler_, "w3", 1)->load_model(), "");
  scheduler_->Tick();
  StatusOr<v1::LeaseTasksResponse> first = TryLease(*scheduler_, "w1", 1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->load_model(), "");
  EXPECT_EQ(first->tasks_size(), 0);  // held for the gang
  const std::vector<v1::Task> second = LeaseTrain("w2");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].train().gang_size(), 2u);
  EXPECT_EQ(Job(*scheduler_, job).state(), v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace dtm
