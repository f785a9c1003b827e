// The generated stubs and Debian's gRPC 1.51 behave as the daemons will rely on: a server on a
// kernel-picked loopback port, unary and server-streaming calls, the standard health service,
// deadlines and the receive-size limit, all with exact status codes.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "dtm/v1/dtm_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dtm::v1 {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using std::chrono::milliseconds;

constexpr int kMaxReceiveBytes = 64 * 1024;
constexpr int kWatchMessages = 3;

// Just enough of DtmService to exercise each call shape; unimplemented methods answer UNIMPLEMENTED.
class FakeDtmService final : public DtmService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const SubmitJobRequest* req, Job* job) override {
    job->set_job_id("job-" + req->client_request_id());
    job->set_client_request_id(req->client_request_id());
    job->set_state(JOB_STATE_PENDING);
    return grpc::Status::OK;
  }

  // Never answers in time: stands in for a handler stuck behind a slow store, so the client's
  // deadline is what ends the call. Bounded so a broken deadline fails the test instead of hanging.
  grpc::Status GetJob(grpc::ServerContext* ctx, const GetJobRequest*, Job*) override {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ctx->IsCancelled() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(5));
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }

  grpc::Status WatchJob(grpc::ServerContext*, const WatchJobRequest* req,
                        grpc::ServerWriter<JobProgress>* writer) override {
    for (int i = 1; i <= kWatchMessages; ++i) {
      JobProgress p;
      p.set_job_id(req->job_id());
      p.set_tasks_total(kWatchMessages);
      p.set_tasks_done(i);
      p.set_state(i == kWatchMessages ? JOB_STATE_SUCCEEDED : JOB_STATE_RUNNING);
      if (!writer->Write(p)) return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
    }
    return grpc::Status::OK;
  }
};

std::chrono::system_clock::time_point In(milliseconds ms) { return std::chrono::system_clock::now() + ms; }

class GrpcLoopbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A process-wide switch read by BuildAndStart; the daemons flip it the same way.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    server_->GetHealthCheckService()->SetServingStatus(DtmService::service_full_name(), true);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    stub_ = DtmService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(In(milliseconds(1000)));
  }

  grpc::Status CheckHealth(const std::string& service, HealthCheckResponse* reply) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(milliseconds(5000)));
    HealthCheckRequest req;
    req.set_service(service);
    return Health::NewStub(channel_)->Check(&ctx, req, reply);
  }

  FakeDtmService service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<DtmService::Stub> stub_;
};

TEST_F(GrpcLoopbackTest, UnaryCallReturnsTheServersReply) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(milliseconds(5000)));
  SubmitJobRequest req;
  req.set_spec_yaml("kind: evaluate\n");
  req.set_client_request_id("abc");
  Job job;
  const grpc::Status status = stub_->SubmitJob(&ctx, req, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(job.job_id(), "job-abc");
  EXPECT_EQ(job.state(), JOB_STATE_PENDING);
}

TEST_F(GrpcLoopbackTest, WatchStreamsEveryProgressMessageThenEndsOk) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(milliseconds(5000)));
  WatchJobRequest req;
  req.set_job_id("job-1");
  auto reader = stub_->WatchJob(&ctx, req);
  JobProgress p;
  int n = 0;
  while (reader->Read(&p)) {
    ++n;
    EXPECT_EQ(p.job_id(), "job-1");
    EXPECT_EQ(p.tasks_done(), static_cast<uint32_t>(n));
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(n, kWatchMessages);
  EXPECT_EQ(p.state(), JOB_STATE_SUCCEEDED);
}

TEST_F(GrpcLoopbackTest, HealthServiceAnswersServingForServerAndService) {
  HealthCheckResponse reply;
  grpc::Status status = CheckHealth("", &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.status(), HealthCheckResponse::SERVING);

  status = CheckHealth("dtm.v1.DtmService", &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.status(), HealthCheckResponse::SERVING);
}

TEST_F(GrpcLoopbackTest, HealthServiceReportsDrainingAndUnknownServices) {
  // How a daemon tells load balancers and Kubernetes probes to stop sending work before shutdown.
  server_->GetHealthCheckService()->SetServingStatus(DtmService::service_full_name(), false);
  HealthCheckResponse reply;
  grpc::Status status = CheckHealth("dtm.v1.DtmService", &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.status(), HealthCheckResponse::NOT_SERVING);

  EXPECT_EQ(CheckHealth("dtm.v1.NoSuchService", &reply).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcLoopbackTest, CallPastItsDeadlineFailsWithDeadlineExceeded) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(milliseconds(100)));
  GetJobRequest req;
  req.set_job_id("job-1");
  Job job;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = stub_->GetJob(&ctx, req, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  // The deadline, not the handler's own 10 s bound, ended the call.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(GrpcLoopbackTest, MessageAboveMaxReceiveSizeIsRejectedWithResourceExhausted) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(milliseconds(5000)));
  SubmitJobRequest req;
  req.set_spec_yaml(std::string(2 * kMaxReceiveBytes, 'x'));
  req.set_client_request_id("big");
  Job job;
  const grpc::Status status = stub_->SubmitJob(&ctx, req, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();

  // The limit rejects the one call, not the connection: a small request still goes through.
  grpc::ClientContext ctx2;
  ctx2.set_deadline(In(milliseconds(5000)));
  req.set_spec_yaml("kind: evaluate\n");
  EXPECT_TRUE(stub_->SubmitJob(&ctx2, req, &job).ok());
}

TEST_F(GrpcLoopbackTest, UnimplementedMethodAnswersUnimplemented) {
  grpc::ClientContext ctx;
  ctx.set_deadline(In(milliseconds(5000)));
  CancelJobRequest req;
  req.set_job_id("job-1");
  Job job;
  EXPECT_EQ(stub_->CancelJob(&ctx, req, &job).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// gRPC 1.51 refuses to build a server without a registered service ("At least one of the
// completion queues must be frequently polled"), and the default health service does not count: a
// daemon that wants only a health endpoint must still register a service of its own.
TEST(GrpcServerTest, ServerWithOnlyTheHealthServiceFailsToStart) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  EXPECT_EQ(builder.BuildAndStart(), nullptr);
}

}  // namespace
}  // namespace dtm::v1
