// dtmctl's service commands against an in-process fake DtmService on a loopback port: what each
// command sends, prints and exits with, including retries, reconnects and error codes.
#include "cli/service_commands.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli/progress_bar.h"
#include "dtm/v1/dtm_service.grpc.pb.h"

namespace dtm::cli {
namespace {

v1::JobProgress Progress(v1::JobState state, uint32_t done, uint32_t total) {
  v1::JobProgress p;
  p.set_job_id("j-1");
  p.set_state(state);
  p.set_tasks_done(done);
  p.set_tasks_total(total);
  return p;
}

// Scripted answers; records what it was sent. The test sets the script before calling a command.
class FakeDtmService final : public v1::DtmService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* job) override {
    std::lock_guard<std::mutex> lock(mu);
    submits.push_back(*request);
    const auto auth = context->client_metadata().find("authorization");
    if (auth != context->client_metadata().end())
      authorization.assign(auth->second.data(), auth->second.size());
    if (unavailable_submits > 0) {
      --unavailable_submits;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    if (!reject_message.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, reject_message);
    job->set_job_id("j-1");
    job->set_client_request_id(request->client_request_id());
    job->set_state(v1::JOB_STATE_PENDING);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* job) override {
    std::lock_guard<std::mutex> lock(mu);
    if (request->job_id() != "j-1")
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    *job = stored_job;
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    list_requests.push_back(*request);
    // Two pages of one job each.
    v1::Job* job = response->add_jobs();
    if (request->page_token().empty()) {
      job->set_job_id("j-2");
      job->set_state(v1::JOB_STATE_RUNNING);
      job->mutable_summary()->set_kind(v1::JOB_KIND_EVALUATE);
      job->mutable_summary()->set_name("int8 sweep");
      job->mutable_progress()->set_tasks_done(3);
      job->mutable_progress()->set_tasks_total(8);
      response->set_next_page_token("page-2");
    } else {
      job->set_job_id("j-1");
      job->set_state(v1::JOB_STATE_RUNNING);
      job->mutable_summary()->set_kind(v1::JOB_KIND_PROBE);
    }
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request, v1::Job* job) override {
    std::lock_guard<std::mutex> lock(mu);
    cancels.push_back(*request);
    if (request->job_id() != "j-1")
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    job->set_job_id("j-1");
    job->set_state(v1::JOB_STATE_CANCELLED);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobProgress>* writer) override {
    std::vector<v1::JobProgress> script;
    bool break_stream = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++watch_calls;
      if (request->job_id() != "j-1")
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
      script = watch_script;
      if (broken_watches > 0) {
        --broken_watches;
        break_stream = true;
      }
    }
    // A broken stream delivers the first message, then the connection "drops".
    if (break_stream) {
      writer->Write(script.front());
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
    }
    for (const v1::JobProgress& p : script) {
      if (!writer->Write(p)) return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
    }
    return grpc::Status::OK;
  }

  grpc::Status GetResults(grpc::ServerContext*, const v1::GetResultsRequest* request,
                          v1::GetResultsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    results_requests.push_back(*request);
    if (request->job_id() != "j-1")
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->job_id());
    *response = results;
    return grpc::Status::OK;
  }

  std::mutex mu;
  // Script.
  int unavailable_submits = 0;
  std::string reject_message;
  v1::Job stored_job;
  std::vector<v1::JobProgress> watch_script;
  int broken_watches = 0;
  v1::GetResultsResponse results;
  // Record.
  std::vector<v1::SubmitJobRequest> submits;
  std::string authorization;
  std::vector<v1::ListJobsRequest> list_requests;
  std::vector<v1::CancelJobRequest> cancels;
  std::vector<v1::GetResultsRequest> results_requests;
  int watch_calls = 0;
};

class ServiceCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    connection_.coordinator = "127.0.0.1:" + std::to_string(port);
    connection_.timeout_s = 10;
    // Retries at once: the tests check that they happen, not how long they wait.
    connection_.retry = RetryPolicy{3, 1, 4};
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    for (const std::string& path : temp_files_) std::remove(path.c_str());
  }

  std::string WriteTempFile(const std::string& content) {
    std::string path = ::testing::TempDir() + "dtmctl_spec_" + std::to_string(getpid()) + "_" +
                       std::to_string(temp_files_.size()) + ".yaml";
    std::ofstream(path) << content;
    temp_files_.push_back(path);
    return path;
  }

  SubmitOptions Submit(const std::string& spec_path) {
    SubmitOptions options;
    options.connection = connection_;
    options.spec_path = spec_path;
    return options;
  }

  WatchOptions Watch(const std::string& job_id) {
    WatchOptions options;
    options.connection = connection_;
    options.job_id = job_id;
    options.bar_width = 4;
    return options;
  }

  ResultsOptions Results(const std::string& format) {
    ResultsOptions options;
    options.connection = connection_;
    options.job_id = "j-1";
    options.format = format;
    return options;
  }

  FakeDtmService service_;
  std::unique_ptr<grpc::Server> server_;
  ConnectionOptions connection_;
  std::ostringstream out_, err_;
  Console console_{&out_, &err_};
  std::vector<std::string> temp_files_;
};

constexpr char kSpec[] =
    "kind: evaluate\nname: int8 sweep\nmodel: /models/tiny\nconfigs: [\"a=int8,b=int4\"]\n";

TEST_F(ServiceCommandsTest, SubmitSendsTheFileAndPrintsOnlyTheJobId) {
  EXPECT_EQ(SubmitCommand(Submit(WriteTempFile(kSpec)), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "j-1\n");
  ASSERT_EQ(service_.submits.size(), 1u);
  EXPECT_EQ(service_.submits[0].spec_yaml(), kSpec);
  EXPECT_TRUE(
      std::regex_match(service_.submits[0].client_request_id(),
                       std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
      << service_.submits[0].client_request_id();
  EXPECT_EQ(service_.authorization, "");
}

TEST_F(ServiceCommandsTest, EachSubmitGetsAFreshRequestId) {
  const std::string spec = WriteTempFile(kSpec);
  ASSERT_EQ(SubmitCommand(Submit(spec), console_), 0);
  ASSERT_EQ(SubmitCommand(Submit(spec), console_), 0);
  ASSERT_EQ(service_.submits.size(), 2u);
  EXPECT_NE(service_.submits[0].client_request_id(), service_.submits[1].client_request_id());
}

TEST_F(ServiceCommandsTest, SubmitRetriedAfterUnavailableReusesTheRequestId) {
  service_.unavailable_submits = 1;
  EXPECT_EQ(SubmitCommand(Submit(WriteTempFile(kSpec)), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "j-1\n");
  ASSERT_EQ(service_.submits.size(), 2u);
  EXPECT_EQ(service_.submits[0].client_request_id(), service_.submits[1].client_request_id());
  EXPECT_NE(err_.str().find("retrying"), std::string::npos) << err_.str();
}

TEST_F(ServiceCommandsTest, SubmitGivesUpWithExitCode3WhenTheCoordinatorStaysUnavailable) {
  service_.unavailable_submits = 100;
  EXPECT_EQ(SubmitCommand(Submit(WriteTempFile(kSpec)), console_), 3);
  EXPECT_EQ(service_.submits.size(), 3u);  // the policy's attempts
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(err_.str().find("dtmctl submit: UNAVAILABLE: cannot reach the coordinator at " +
                            connection_.coordinator + ": coordinator restarting"),
            std::string::npos)
      << err_.str();
}

TEST_F(ServiceCommandsTest, RejectedSpecPrintsTheServersMessageAndExits2) {
  service_.reject_message = "spec: `kind` must be one of evaluate, probe, quant-search, sparsify-round";
  const std::string spec = WriteTempFile("kind: nonsense\n");
  EXPECT_EQ(SubmitCommand(Submit(spec), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "dtmctl submit: " + spec + ": " + service_.reject_message + "\n");
}

TEST_F(ServiceCommandsTest, UnreadableSpecNamesTheFileAndSendsNothing) {
  EXPECT_EQ(SubmitCommand(Submit("/nonexistent/spec.yaml"), console_), 2);
  EXPECT_NE(err_.str().find("dtmctl submit: cannot read /nonexistent/spec.yaml"), std::string::npos)
      << err_.str();
  EXPECT_TRUE(service_.submits.empty());
}

TEST_F(ServiceCommandsTest, SubmitSendsTheBearerTokenFromTheTokenFile) {
  SubmitOptions options = Submit(WriteTempFile(kSpec));
  options.connection.security.token_file = WriteTempFile("s3cret\n");
  EXPECT_EQ(SubmitCommand(options, console_), 0) << err_.str();
  EXPECT_EQ(service_.authorization, "Bearer s3cret");
}

TEST_F(ServiceCommandsTest, UnreachableCoordinatorExits3NamingTheAddress) {
  server_->Shutdown();
  server_.reset();  // nothing listens on the port any more
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 3);
  EXPECT_NE(err_.str().find("dtmctl watch: UNAVAILABLE: cannot reach the coordinator at " +
                            connection_.coordinator),
            std::string::npos)
      << err_.str();
}

TEST_F(ServiceCommandsTest, SubmitWithWatchPrintsTheIdThenFollowsTheJob) {
  service_.watch_script = {Progress(v1::JOB_STATE_RUNNING, 1, 2), Progress(v1::JOB_STATE_SUCCEEDED, 2, 2)};
  SubmitOptions options = Submit(WriteTempFile(kSpec));
  options.watch = true;
  options.bar_width = 4;
  EXPECT_EQ(SubmitCommand(options, console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "j-1\n");
  EXPECT_EQ(err_.str(), "[##..] 1/2 tasks  RUNNING\n[####] 2/2 tasks  SUCCEEDED\n");
}

TEST_F(ServiceCommandsTest, WatchEndsWith0WhenTheJobSucceeds) {
  service_.watch_script = {Progress(v1::JOB_STATE_PENDING, 0, 4), Progress(v1::JOB_STATE_RUNNING, 1, 4),
                           Progress(v1::JOB_STATE_RUNNING, 2, 4), Progress(v1::JOB_STATE_SUCCEEDED, 4, 4)};
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 0) << err_.str();
  // Not a terminal: a line per state change or tenth of the tasks, never a '\r'.
  EXPECT_EQ(err_.str(),
            "[....] 0/4 tasks  PENDING\n"
            "[#...] 1/4 tasks  RUNNING\n"
            "[##..] 2/4 tasks  RUNNING\n"
            "[####] 4/4 tasks  SUCCEEDED\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(ServiceCommandsTest, WatchEndsWith1AndTheJobsErrorWhenItFails) {
  service_.watch_script = {Progress(v1::JOB_STATE_RUNNING, 1, 4), Progress(v1::JOB_STATE_RUNNING, 2, 4),
                           Progress(v1::JOB_STATE_FAILED, 2, 4)};
  service_.stored_job.set_job_id("j-1");
  service_.stored_job.set_state(v1::JOB_STATE_FAILED);
  service_.stored_job.mutable_error()->set_code(13);
  service_.stored_job.mutable_error()->set_message("task 3 failed 3 times: CUDA out of memory");
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 1);
  EXPECT_EQ(err_.str(),
            "[#...] 1/4 tasks  RUNNING\n"
            "[##..] 2/4 tasks  RUNNING\n"
            "[##..] 2/4 tasks  FAILED\n"
            "dtmctl watch: job j-1 FAILED: task 3 failed 3 times: CUDA out of memory\n");
}

TEST_F(ServiceCommandsTest, WatchReconnectsWhenTheStreamBreaks) {
  service_.watch_script = {Progress(v1::JOB_STATE_RUNNING, 1, 2), Progress(v1::JOB_STATE_SUCCEEDED, 2, 2)};
  service_.broken_watches = 2;
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 0) << err_.str();
  EXPECT_EQ(service_.watch_calls, 3);
  EXPECT_NE(err_.str().find("lost the watch stream from " + connection_.coordinator + " (connection reset)"),
            std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("[####] 2/2 tasks  SUCCEEDED\n"), std::string::npos) << err_.str();
}

TEST_F(ServiceCommandsTest, WatchRedrawsOneLineOnATerminal) {
  v1::JobProgress waiting = Progress(v1::JOB_STATE_RUNNING, 1, 4);
  waiting.set_message("waiting for a worker");
  service_.watch_script = {waiting, Progress(v1::JOB_STATE_RUNNING, 2, 4),
                           Progress(v1::JOB_STATE_SUCCEEDED, 4, 4)};
  console_.err_is_tty = true;
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 0);
  // Each message redraws the line; a shorter one is padded over what the longer one left, and the
  // line is ended once the job is.
  EXPECT_EQ(err_.str(),
            "\r[#...] 1/4 tasks  RUNNING  waiting for a worker"
            "\r[##..] 2/4 tasks  RUNNING" +
                std::string(22, ' ') + "\r[####] 4/4 tasks  SUCCEEDED\n");
}

TEST_F(ServiceCommandsTest, WatchCutsTheLineToTheTerminalWidth) {
  v1::JobProgress waiting = Progress(v1::JOB_STATE_SUCCEEDED, 4, 4);
  waiting.set_message("a message far too long for a narrow terminal");
  service_.watch_script = {waiting};
  console_.err_is_tty = true;
  console_.columns = 20;
  EXPECT_EQ(WatchCommand(Watch("j-1"), console_), 0);
  EXPECT_EQ(err_.str(), "\r[####] 4/4 tasks  S\n");
}

TEST_F(ServiceCommandsTest, WatchOfAnUnknownJobExits2WithNotFound) {
  EXPECT_EQ(WatchCommand(Watch("j-404"), console_), 2);
  EXPECT_EQ(err_.str(), "dtmctl watch: NOT_FOUND: no job j-404\n");
  EXPECT_EQ(service_.watch_calls, 1);  // an answer, not something to retry
}

v1::GetResultsResponse OneCompleteOneRunning() {
  v1::GetResultsResponse r;
  r.set_job_id("j-1");
  r.set_state(v1::JOB_STATE_RUNNING);
  r.mutable_noise_floor()->set_fdt75(4);
  r.mutable_noise_floor()->set_num_probes(4);
  v1::ConfigResult* done = r.add_results();
  done->set_config("a=int8,b=int4");
  done->mutable_metrics()->set_fdt75(2.5);
  done->mutable_metrics()->set_dppl(1.25);
  done->mutable_metrics()->set_num_probes(4);
  done->set_complete(true);
  v1::ConfigResult* running = r.add_results();
  running->set_config("c=int4");
  running->mutable_metrics()->set_fdt75(1);
  running->mutable_metrics()->set_num_probes(2);
  return r;
}

TEST_F(ServiceCommandsTest, ResultsAsJsonThroughTheService) {
  service_.results = OneCompleteOneRunning();
  service_.results.set_state(v1::JOB_STATE_SUCCEEDED);
  service_.results.mutable_results(1)->set_complete(true);
  ResultsOptions options = Results("json");
  options.probes = true;
  EXPECT_EQ(ResultsCommand(options, console_), 0) << err_.str();
  ASSERT_EQ(service_.results_requests.size(), 1u);
  EXPECT_TRUE(service_.results_requests[0].include_probe_results());
  const nlohmann::json doc = nlohmann::json::parse(out_.str());
  EXPECT_EQ(doc["job_id"], "j-1");
  EXPECT_EQ(doc["state"], "SUCCEEDED");
  EXPECT_EQ(doc["noise_floor"]["fdt75"].get<double>(), 4.0);
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][0]["config"], "a=int8,b=int4");
  EXPECT_EQ(doc["results"][0]["dppl"].get<double>(), 1.25);
  EXPECT_EQ(err_.str(), "");  // a finished job: nothing to warn about
}

TEST_F(ServiceCommandsTest, ResultsOfARunningJobPrintTheCompleteConfigsAndWarn) {
  service_.results = OneCompleteOneRunning();
  EXPECT_EQ(ResultsCommand(Results("csv"), console_), 0) << err_.str();
  EXPECT_FALSE(service_.results_requests[0].include_probe_results());
  EXPECT_EQ(out_.str(),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            ",4,0,0,0,0,4,true,0,,,,,,,\n"
            "\"a=int8,b=int4\",2.5,0,0,1.25,0,4,true,0,,,,,,,\n");
  EXPECT_EQ(err_.str(),
            "dtmctl results: warning: job j-1 is RUNNING: showing 1 of 2 configs (1 incomplete left out; "
            "--partial shows them)\n");
}

TEST_F(ServiceCommandsTest, PartialResultsIncludeIncompleteConfigs) {
  service_.results = OneCompleteOneRunning();
  ResultsOptions options = Results("csv");
  options.partial = true;
  EXPECT_EQ(ResultsCommand(options, console_), 0) << err_.str();
  EXPECT_NE(out_.str().find("c=int4,1,0,0,0,0,2,false,0,,,,,,,\n"), std::string::npos) << out_.str();
  EXPECT_EQ(err_.str(), "dtmctl results: warning: job j-1 is RUNNING: showing 2 of 2 configs\n");
}

TEST_F(ServiceCommandsTest, ResultsRefuseAnUnknownFormatAndProbesOutsideJsonBeforeCalling) {
  EXPECT_EQ(ResultsCommand(Results("xml"), console_), 2);
  ResultsOptions options = Results("csv");
  options.probes = true;
  EXPECT_EQ(ResultsCommand(options, console_), 2);
  EXPECT_NE(err_.str().find("dtmctl results: INVALID_ARGUMENT: --format: unknown format 'xml'"),
            std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("dtmctl results: INVALID_ARGUMENT: --probes"), std::string::npos) << err_.str();
  EXPECT_TRUE(service_.results_requests.empty());
}

TEST_F(ServiceCommandsTest, ResultsSortAndTopApplyToTheConfigsBelowTheNoiseFloor) {
  service_.results = OneCompleteOneRunning();
  service_.results.mutable_results(1)->set_complete(true);
  v1::ConfigResult* third = service_.results.add_results();
  third->set_config("model.layers.2.mlp.up_proj=int8-absmax");
  third->mutable_metrics()->set_fdt75(3);
  third->mutable_metrics()->set_dppl(1.5);
  third->mutable_metrics()->set_num_probes(4);
  third->set_complete(true);
  ResultsOptions options = Results("csv");
  options.sort = "fdt75";
  options.top = 2;
  EXPECT_EQ(ResultsCommand(options, console_), 0) << err_.str();
  EXPECT_FALSE(service_.results_requests[0].all_nodes());
  EXPECT_EQ(out_.str(),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            ",4,0,0,0,0,4,true,0,,,,,,,\n"
            "model.layers.2.mlp.up_proj=int8-absmax,3,0,0,1.5,0,4,true,0,,,,,2,mlp.up_proj,int8-absmax\n"
            "\"a=int8,b=int4\",2.5,0,0,1.25,0,4,true,0,,,,,,,\n");
  out_.str("");
  options.format = "json";
  options.sort = "dppl";
  options.top.reset();
  options.all_nodes = true;
  EXPECT_EQ(ResultsCommand(options, console_), 0) << err_.str();
  EXPECT_TRUE(service_.results_requests[1].all_nodes());
  const nlohmann::json doc = nlohmann::json::parse(out_.str());
  ASSERT_EQ(doc["results"].size(), 3u);
  EXPECT_EQ(doc["results"][0]["config"], "c=int4");  // dppl 0, lower first
  EXPECT_EQ(doc["results"][1]["config"], "a=int8,b=int4");
  EXPECT_EQ(doc["results"][2]["config"], "model.layers.2.mlp.up_proj=int8-absmax");
}

TEST_F(ServiceCommandsTest, ResultsRefuseABadSortOrTopBeforeCallingAndPplWithoutPpl) {
  ResultsOptions options = Results("table");
  options.sort = "fdt90";
  EXPECT_EQ(ResultsCommand(options, console_), 2);
  EXPECT_NE(err_.str().find("--sort: unknown metric 'fdt90' (fdt75, fdt_mean, never_diverged"), std::string::npos)
      << err_.str();
  options.sort = "fdt75";
  options.top = 0;
  EXPECT_EQ(ResultsCommand(options, console_), 2);
  EXPECT_NE(err_.str().find("--top: must be at least 1, got 0"), std::string::npos) << err_.str();
  EXPECT_TRUE(service_.results_requests.empty());
  // Whether the job has ppl shows only in its results.
  service_.results = OneCompleteOneRunning();
  options.sort = "ppl";
  options.top.reset();
  EXPECT_EQ(ResultsCommand(options, console_), 2);
  EXPECT_NE(err_.str().find("--sort ppl: job j-1 has no ppl"), std::string::npos) << err_.str();
  EXPECT_EQ(out_.str(), "");
}

TEST_F(ServiceCommandsTest, ResultsOfAnUnknownJobExit2) {
  ResultsOptions options = Results("table");
  options.job_id = "j-123";
  EXPECT_EQ(ResultsCommand(options, console_), 2);
  EXPECT_EQ(err_.str(), "dtmctl results: NOT_FOUND: no job j-123\n");
}

TEST_F(ServiceCommandsTest, CancelSendsTheReasonAndPrintsTheNewState) {
  CancelOptions options;
  options.connection = connection_;
  options.job_id = "j-1";
  options.reason = "wrong model";
  EXPECT_EQ(CancelCommand(options, console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "j-1 CANCELLED\n");
  ASSERT_EQ(service_.cancels.size(), 1u);
  EXPECT_EQ(service_.cancels[0].reason(), "wrong model");
  options.job_id = "j-9";
  EXPECT_EQ(CancelCommand(options, console_), 2);
  EXPECT_EQ(err_.str(), "dtmctl cancel: NOT_FOUND: no job j-9\n");
}

TEST_F(ServiceCommandsTest, JobsFollowsEveryPageAndFiltersByState) {
  JobsOptions options;
  options.connection = connection_;
  options.states = {"running", "pending"};
  EXPECT_EQ(JobsCommand(options, console_), 0) << err_.str();
  ASSERT_EQ(service_.list_requests.size(), 2u);
  EXPECT_EQ(service_.list_requests[1].page_token(), "page-2");
  ASSERT_EQ(service_.list_requests[0].states_size(), 2);
  EXPECT_EQ(service_.list_requests[0].states(0), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(service_.list_requests[0].states(1), v1::JOB_STATE_PENDING);
  EXPECT_EQ(out_.str(),
            "id   state    kind      name        done/total  created  why\n"
            "---  -------  --------  ----------  ----------  -------  ---\n"
            "j-2  RUNNING  evaluate  int8 sweep         3/8  -        -\n"
            "j-1  RUNNING  probe     -                  0/0  -        -\n");
}

TEST_F(ServiceCommandsTest, JobsRejectsAnUnknownStateWithExit2) {
  JobsOptions options;
  options.connection = connection_;
  options.states = {"finished"};
  EXPECT_EQ(JobsCommand(options, console_), 2);
  EXPECT_NE(err_.str().find("dtmctl jobs: INVALID_ARGUMENT: --state: unknown state 'finished'"),
            std::string::npos)
      << err_.str();
  EXPECT_TRUE(service_.list_requests.empty());
}

TEST(ConnectionOptionsTest, DefaultAddressComesFromTheEnvironment) {
  ASSERT_EQ(setenv("DTM_COORDINATOR", "coord.example:9000", 1), 0);
  EXPECT_EQ(ConnectionOptions().coordinator, "coord.example:9000");
  ASSERT_EQ(unsetenv("DTM_COORDINATOR"), 0);
  EXPECT_EQ(ConnectionOptions().coordinator, "127.0.0.1:7070");
}

// -- export-config: the chosen config of a finished search

constexpr char kLevel0Best[] = "model.layers.2.mlp.up_proj=int8-absmax";
constexpr char kLevel1Best[] = "model.layers.0.self_attn.k_proj=int8-absmax,model.layers.2.mlp.up_proj=int8-absmax";
constexpr char kLevel2Best[] =
    "model.layers.0.self_attn.k_proj=int8-absmax,model.layers.1.mlp.down_proj=int8-absmax,"
    "model.layers.2.mlp.up_proj=int8-absmax";

class ExportConfigTest : public ServiceCommandsTest {
 protected:
  void SetUp() override {
    ServiceCommandsTest::SetUp();
    service_.stored_job.set_job_id("j-1");
    service_.stored_job.set_state(v1::JOB_STATE_SUCCEEDED);
    service_.stored_job.mutable_summary()->set_kind(v1::JOB_KIND_QUANT_SEARCH);
    service_.results.set_job_id("j-1");
    service_.results.set_state(v1::JOB_STATE_SUCCEEDED);
    // Each level ordered by rank as the coordinator sends it, except level 1, whose rank-0 row
    // comes second (the rank decides, not the position); unranked rows did not make the beam.
    Add(0, 0, kLevel0Best, 30);
    Add(0, 1, "model.layers.0.self_attn.k_proj=int8-absmax", 28);
    Add(0, std::nullopt, "model.layers.1.mlp.down_proj=int8-absmax", 12);
    Add(1, 1, "model.layers.1.mlp.down_proj=int8-absmax,model.layers.2.mlp.up_proj=int8-absmax", 22);
    Add(1, 0, kLevel1Best, 25);
    Add(2, 0, kLevel2Best, 18);
    Add(2, std::nullopt, "model.layers.0.mlp.gate_proj=int8-absmax,model.layers.0.self_attn.k_proj=int8-absmax,"
                         "model.layers.2.mlp.up_proj=int8-absmax", 9);
  }

  void Add(uint32_t level, std::optional<uint32_t> rank, const std::string& config, double fdt75) {
    v1::ConfigResult* r = service_.results.add_results();
    r->set_config(config);
    r->set_complete(true);
    r->mutable_metrics()->set_fdt75(fdt75);
    r->set_search_level(level);
    if (rank.has_value()) r->set_rank(*rank);
  }

  ExportConfigOptions Export(int level = -1, const std::string& job_id = "j-1") {
    ExportConfigOptions options;
    options.connection = connection_;
    options.job_id = job_id;
    options.level = level;
    return options;
  }
};

TEST_F(ExportConfigTest, DefaultIsTheRankZeroConfigOfTheDeepestLevel) {
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), std::string(kLevel2Best) + "\n");
  EXPECT_EQ(err_.str(), "");
  // All configs asked for, no per-probe rows.
  ASSERT_EQ(service_.results_requests.size(), 1u);
  EXPECT_EQ(service_.results_requests[0].job_id(), "j-1");
  EXPECT_FALSE(service_.results_requests[0].include_probe_results());
  EXPECT_EQ(service_.results_requests[0].configs_size(), 0);
}

TEST_F(ExportConfigTest, DeepestLevelDoesNotDependOnRowOrder) {
  // The deepest level first in the response: still level 2.
  v1::GetResultsResponse reordered = service_.results;
  std::reverse(reordered.mutable_results()->begin(), reordered.mutable_results()->end());
  service_.results = reordered;
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), std::string(kLevel2Best) + "\n");
}

TEST_F(ExportConfigTest, LevelPicksThatLevelsRankZeroConfig) {
  EXPECT_EQ(ExportConfigCommand(Export(1), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), std::string(kLevel1Best) + "\n");
  out_.str("");
  EXPECT_EQ(ExportConfigCommand(Export(0), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), std::string(kLevel0Best) + "\n");
}

TEST_F(ExportConfigTest, LevelBeyondTheDeepestExits2NamingTheLevels) {
  EXPECT_EQ(ExportConfigCommand(Export(3), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "dtmctl export-config: job j-1 has no level 3 (levels 0, 1, 2; the deepest is 2)\n");
}

TEST_F(ExportConfigTest, UnknownJobExits2WithNotFound) {
  EXPECT_EQ(ExportConfigCommand(Export(-1, "j-404"), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "dtmctl export-config: NOT_FOUND: no job j-404\n");
}

TEST_F(ExportConfigTest, JobThatHasNotSucceededExits2SayingItsState) {
  for (v1::JobState state : {v1::JOB_STATE_RUNNING, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    out_.str("");
    err_.str("");
    service_.stored_job.set_state(state);
    service_.results.set_state(state);
    EXPECT_EQ(ExportConfigCommand(Export(), console_), 2) << JobStateName(state);
    EXPECT_EQ(out_.str(), "");
    EXPECT_EQ(err_.str(), "dtmctl export-config: job j-1 is " + JobStateName(state) +
                              "; export-config needs a job that SUCCEEDED\n");
  }
}

TEST_F(ExportConfigTest, ProbeAndEvaluateJobsAreRefused) {
  service_.results.clear_results();
  service_.results.add_results()->set_config(kLevel0Best);
  service_.stored_job.mutable_summary()->set_kind(v1::JOB_KIND_PROBE);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(err_.str(),
            "dtmctl export-config: job j-1 is a probe job; export-config needs a search (quant-search or "
            "sparsify-round)\n");
  err_.str("");
  service_.stored_job.mutable_summary()->set_kind(v1::JOB_KIND_EVALUATE);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(err_.str(),
            "dtmctl export-config: job j-1 is an evaluate job; export-config needs a search (quant-search or "
            "sparsify-round)\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(ExportConfigTest, SearchResultsWithoutLevelsAreRefused) {
  service_.results.clear_results();
  service_.results.add_results()->set_config(kLevel0Best);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(err_.str().find("job j-1 (quant-search) has no search levels"), std::string::npos) << err_.str();
}

TEST_F(ExportConfigTest, UncompressedRankZeroPrintsAnEmptyLine) {
  service_.results.clear_results();
  Add(0, 0, "", 32);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "\n");
  EXPECT_EQ(err_.str(), "dtmctl export-config: note: level 0 is the uncompressed model (an empty config)\n");
}

// -- export-config of a sparsify-round: its allocation as a prune config

class ExportSparsifyRoundTest : public ExportConfigTest {
 protected:
  void SetUp() override {
    ExportConfigTest::SetUp();
    service_.stored_job.mutable_summary()->set_kind(v1::JOB_KIND_SPARSIFY_ROUND);
    service_.results.clear_results();
    // The probes, as the coordinator sends them: no level, no rank.
    v1::ConfigResult* probe = service_.results.add_results();
    probe->set_config("model.layers.0.mlp.up_proj=prune:0.05");
    probe->set_complete(true);
    v1::SparsityAllocation* a = service_.results.mutable_allocation();
    a->set_method("balanced");
    a->set_step(0.1);
    a->set_achieved_step(0.1);
    a->set_num_layers(2);
    // In component order (layer-major), which is not the canonical (name) order: layer 1's
    // self_attn.q_proj sorts after its mlp.down_proj.
    Add(a, "model.layers.0.self_attn.q_proj", 0, 0);
    Add(a, "model.layers.0.mlp.up_proj", 0.1, 0.1 + 0.2);
    Add(a, "model.layers.1.self_attn.q_proj", 0, 0.05);
    Add(a, "model.layers.1.mlp.down_proj", 0.25, 0);
  }

  static void Add(v1::SparsityAllocation* a, const std::string& component, double current, double extra) {
    v1::ComponentSparsity* c = a->add_components();
    c->set_component(component);
    c->set_params(1000);
    c->set_current(current);
    c->set_extra(extra);
    c->set_target(current + extra);
    c->set_predicted_fdt75(40);
  }
};

TEST_F(ExportSparsifyRoundTest, PrintsEveryPrunedComponentsTargetInCanonicalOrder) {
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  // 0.1 + (0.1 + 0.2) is 0.4 exactly in doubles; 0.30000000000000004 would show if it were not.
  // layers.0.self_attn.q_proj (target 0) is left out.
  EXPECT_EQ(out_.str(),
            "model.layers.0.mlp.up_proj=prune:0.4,model.layers.1.mlp.down_proj=prune:0.25,"
            "model.layers.1.self_attn.q_proj=prune:0.05\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(ExportSparsifyRoundTest, TargetsKeepEveryDigit) {
  v1::ComponentSparsity* c = service_.results.mutable_allocation()->mutable_components(2);
  c->set_target(0.1 + 0.2);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  EXPECT_NE(out_.str().find("model.layers.1.self_attn.q_proj=prune:0.30000000000000004"), std::string::npos)
      << out_.str();
}

TEST_F(ExportSparsifyRoundTest, LevelIsAnErrorNamingTheJob) {
  EXPECT_EQ(ExportConfigCommand(Export(1), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(
      err_.str(),
      "dtmctl export-config: job j-1: sparsify-round has no levels; export-config prints its allocation "
      "(drop --level)\n");
  EXPECT_TRUE(service_.results_requests.empty());
}

TEST_F(ExportSparsifyRoundTest, ResultsWithoutAnAllocationAreRefused) {
  service_.results.clear_allocation();
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(
      err_.str(),
      "dtmctl export-config: job j-1 (sparsify-round) SUCCEEDED without an allocation in its results\n");
}

TEST_F(ExportSparsifyRoundTest, RunningRoundIsRefusedSayingItsState) {
  service_.stored_job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(err_.str(),
            "dtmctl export-config: job j-1 is RUNNING; export-config needs a job that SUCCEEDED\n");
}

TEST_F(ExportSparsifyRoundTest, AllocationThatPrunesNothingPrintsAnEmptyLineWithANote) {
  for (v1::ComponentSparsity& c : *service_.results.mutable_allocation()->mutable_components())
    c.set_target(0);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 0) << err_.str();
  EXPECT_EQ(out_.str(), "\n");
  EXPECT_EQ(err_.str(),
            "dtmctl export-config: note: the allocation prunes nothing (every target is 0): the uncompressed "
            "model (an empty config)\n");
}

TEST_F(ExportSparsifyRoundTest, ComponentBeyondTheModelsLayersIsRefused) {
  Add(service_.results.mutable_allocation(), "model.layers.2.mlp.up_proj", 0, 0.1);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(
      err_.str().find("dtmctl export-config: job j-1: the allocation is not a valid config for a model of "
                      "2 layers: compression config item 'model.layers.2.mlp.up_proj=prune:0.1'"),
      std::string::npos)
      << err_.str();
}

TEST_F(ExportSparsifyRoundTest, TargetAboveOneIsRefused) {
  service_.results.mutable_allocation()->mutable_components(1)->set_target(1.5);
  EXPECT_EQ(ExportConfigCommand(Export(), console_), 2);
  EXPECT_EQ(out_.str(), "");
  EXPECT_NE(err_.str().find("outside [0, 1]"), std::string::npos) << err_.str();
}

}  // namespace
}  // namespace dtm::cli
