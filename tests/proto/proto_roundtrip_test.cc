// Every message of the wire API survives serialization unchanged, and the optional fields keep
// "absent" apart from zero, which clients rely on (e.g. no search level vs level 0).
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>

#include "dtm/v1/common.pb.h"
#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"
#include "dtm/v1/worker_service.pb.h"
#include "grpc/health/v1/health.pb.h"

namespace dtm::v1 {
namespace {

using google::protobuf::Message;
using google::protobuf::util::MessageDifferencer;

// Serializes `in`, parses the bytes into a fresh message of the same type and expects equality.
template <typename T>
T RoundTrip(const T& in) {
  std::string bytes;
  EXPECT_TRUE(in.SerializeToString(&bytes));
  T out;
  EXPECT_TRUE(out.ParseFromString(bytes));
  EXPECT_TRUE(MessageDifferencer::Equals(in, out)) << in.DebugString() << "\nvs\n" << out.DebugString();
  return out;
}

CacheKey MakeKey() {
  CacheKey key;
  key.set_model_fingerprint("sha256:model");
  key.set_probe_set_fingerprint("sha256:probes");
  key.set_prefix_len(100);
  key.set_completion_len(500);
  key.set_dtype(DTYPE_BF16);
  key.mutable_config()->set_canonical("model.layers.0.mlp.up_proj=int8-absmax");
  key.mutable_shard()->set_begin(64);
  key.mutable_shard()->set_end(128);
  return key;
}

ProbeResult MakeProbe(uint32_t index) {
  ProbeResult p;
  p.set_probe_id("c4-" + std::to_string(index));
  p.set_probe_index(index);
  p.set_fdt(37);
  p.set_sdt(12);
  p.set_nll(0.8125);
  return p;
}

Metrics MakeMetrics() {
  Metrics m;
  m.set_fdt75(123.5);
  m.set_fdt_mean(98.25);
  m.set_sdt_mean(17.0);
  m.set_dppl(1.07);
  m.set_nll_mean(0.0625);
  for (uint32_t i = 0; i <= 500; ++i) m.add_fdt_histogram(i % 7);
  m.set_num_probes(1000);
  return m;
}

TEST(ProtoRoundTripTest, CommonTypesSurvive) {
  RoundTrip(MakeKey());
  RoundTrip(MakeProbe(3));
  const Metrics m = RoundTrip(MakeMetrics());
  EXPECT_EQ(m.fdt_histogram_size(), 501);
  ErrorStatus e;
  e.set_code(8);
  e.set_message("CUDA out of memory");
  RoundTrip(e);
}

TEST(ProtoRoundTripTest, OptionalFieldsKeepAbsentApartFromZero) {
  Metrics m = MakeMetrics();
  EXPECT_FALSE(RoundTrip(m).has_ppl());
  m.set_ppl(0.0);
  EXPECT_TRUE(RoundTrip(m).has_ppl());

  JobProgress p;
  p.set_job_id("j1");
  EXPECT_FALSE(RoundTrip(p).has_search_level());
  EXPECT_FALSE(RoundTrip(p).has_eta_seconds());
  p.set_search_level(0);
  p.set_best_fdt75(0.0);
  const JobProgress out = RoundTrip(p);
  EXPECT_TRUE(out.has_search_level());
  EXPECT_TRUE(out.has_best_fdt75());
  EXPECT_FALSE(out.has_best_config());
}

TEST(ProtoRoundTripTest, ClientApiMessagesSurvive) {
  SubmitJobRequest submit;
  submit.set_spec_yaml("kind: evaluate\nmodel: /models/llama-2-7b\nconfigs: [\"\"]\n");
  submit.set_client_request_id("5f0c7a4e-0000-4000-8000-000000000001");
  RoundTrip(submit);

  Job job;
  job.set_job_id("job-42");
  job.set_client_request_id(submit.client_request_id());
  job.set_state(JOB_STATE_RUNNING);
  job.set_spec_yaml(submit.spec_yaml());
  JobSummary* s = job.mutable_summary();
  s->set_kind(JOB_KIND_QUANT_SEARCH);
  s->set_model_path("/models/llama-2-7b");
  s->set_model_fingerprint("sha256:model");
  s->set_probe_set_fingerprint("sha256:probes");
  s->set_num_probes(1000);
  s->set_prefix_len(100);
  s->set_completion_len(500);
  s->set_dtype(DTYPE_F16);
  s->set_shard_size(64);
  s->set_num_configs(224);
  s->set_name("quant tree");
  JobProgress* p = job.mutable_progress();
  p->set_job_id("job-42");
  p->set_state(JOB_STATE_RUNNING);
  p->set_tasks_total(3584);
  p->set_tasks_done(1200);
  p->set_tasks_failed(1);
  p->set_tasks_requeued(4);
  p->set_tasks_cached(300);
  p->set_probes_per_second(812.5);
  p->set_eta_seconds(3600);
  p->set_search_level(2);
  p->set_best_fdt75(241.0);
  p->set_best_config("model.layers.1.mlp.up_proj=int8-absmax");
  p->mutable_update_time()->set_seconds(1'790'000'000);
  job.mutable_create_time()->set_seconds(1'789'999'000);
  job.mutable_start_time()->set_seconds(1'789'999'010);
  job.mutable_error()->set_code(1);
  job.mutable_error()->set_message("cancelled by user");
  RoundTrip(job);

  ListJobsRequest list;
  list.add_states(JOB_STATE_PENDING);
  list.add_states(JOB_STATE_RUNNING);
  list.set_page_size(50);
  list.set_page_token("opaque");
  RoundTrip(list);
  ListJobsResponse listed;
  *listed.add_jobs() = job;
  listed.set_next_page_token("next");
  RoundTrip(listed);

  GetJobRequest get;
  get.set_job_id("job-42");
  RoundTrip(get);
  CancelJobRequest cancel;
  cancel.set_job_id("job-42");
  cancel.set_reason("wrong model");
  RoundTrip(cancel);
  WatchJobRequest watch;
  watch.set_job_id("job-42");
  RoundTrip(watch);

  GetResultsRequest results_req;
  results_req.set_job_id("job-42");
  results_req.set_include_probe_results(true);
  results_req.add_configs("model.layers.0.mlp.up_proj=int8-absmax");
  RoundTrip(results_req);
  GetResultsResponse results;
  results.set_job_id("job-42");
  results.set_state(JOB_STATE_SUCCEEDED);
  ConfigResult* r = results.add_results();
  r->set_config("model.layers.0.mlp.up_proj=int8-absmax");
  *r->mutable_metrics() = MakeMetrics();
  for (uint32_t i = 0; i < 4; ++i) *r->add_probe_results() = MakeProbe(i);
  r->set_complete(true);
  r->set_search_level(1);
  r->set_rank(0);
  *results.mutable_noise_floor() = MakeMetrics();
  RoundTrip(results);
}

TEST(ProtoRoundTripTest, WorkerApiMessagesSurvive) {
  RegisterWorkerRequest reg;
  reg.set_worker_id("dtm-worker-0/gpu0");
  reg.mutable_device()->set_description("NVIDIA H100 80GB HBM3");
  reg.mutable_device()->set_type("cuda");
  reg.mutable_device()->set_memory_bytes(80ull << 30);
  reg.set_model_fingerprint("sha256:model");
  reg.set_capacity(2);
  reg.set_dtype(DTYPE_BF16);
  reg.set_version("0.1.0");
  RoundTrip(reg);
  RegisterWorkerResponse reg_reply;
  reg_reply.set_heartbeat_interval_ms(5000);
  reg_reply.set_lease_timeout_ms(30000);
  reg_reply.set_idle_poll_interval_ms(1000);
  RoundTrip(reg_reply);

  LeaseTasksRequest lease;
  lease.set_worker_id(reg.worker_id());
  lease.set_max_tasks(2);
  lease.set_request_id("lease-req-1");
  RoundTrip(lease);
  LeaseTasksResponse leased;
  Task* t = leased.add_tasks();
  t->set_task_id("job-42/cfg-7/shard-1");
  t->set_lease_id("lease-99");
  t->set_job_id("job-42");
  t->set_kind(TASK_KIND_EVAL_SHARD);
  *t->mutable_key() = MakeKey();
  t->set_model_path("/models/llama-2-7b");
  BaselineRow* task_row = t->add_rows();
  task_row->set_probe_id("c4:17");
  task_row->set_probe_index(17);
  task_row->set_prefix_len(2);
  task_row->add_tokens(1);
  task_row->add_tokens(450);
  t->set_attempt(2);
  t->set_lease_expire_unix_ms(1'790'000'030'000);
  RoundTrip(leased);

  HeartbeatRequest hb;
  hb.set_worker_id(reg.worker_id());
  hb.add_lease_ids("lease-99");
  hb.add_lease_ids("lease-100");
  RoundTrip(hb);
  HeartbeatResponse hb_reply;
  LeaseStatus* ls = hb_reply.add_leases();
  ls->set_lease_id("lease-99");
  ls->set_state(LEASE_STATE_VALID);
  ls = hb_reply.add_leases();
  ls->set_lease_id("lease-100");
  ls->set_state(LEASE_STATE_CANCELLED);
  hb_reply.set_reregister(false);
  RoundTrip(hb_reply);

  FailTaskRequest fail;
  fail.set_worker_id(reg.worker_id());
  fail.set_lease_id("lease-99");
  fail.set_task_id(t->task_id());
  fail.mutable_error()->set_code(8);
  fail.mutable_error()->set_message("CUDA out of memory");
  fail.set_retryable(true);
  fail.set_request_id("fail-1");
  RoundTrip(fail);
  FailTaskResponse fail_reply;
  fail_reply.set_requeued(true);
  RoundTrip(fail_reply);

  CompleteTaskResponse done;
  done.set_outcome(CompleteTaskResponse::OUTCOME_DUPLICATE);
  RoundTrip(done);
}

TEST(ProtoRoundTripTest, CompleteTaskCarriesEitherOutputKind) {
  CompleteTaskRequest eval;
  eval.set_worker_id("w0");
  eval.set_lease_id("lease-99");
  eval.set_task_id("t1");
  for (uint32_t i = 64; i < 68; ++i) *eval.mutable_eval()->add_results() = MakeProbe(i);
  TaskTiming* timing = eval.mutable_timing();
  timing->set_apply_ms(120);
  timing->set_restore_ms(80);
  timing->set_compute_ms(4100);
  timing->set_total_ms(4350);
  timing->set_tokens_processed(4 * 600);
  EXPECT_EQ(RoundTrip(eval).output_case(), CompleteTaskRequest::kEval);

  CompleteTaskRequest baseline;
  baseline.set_task_id("t0");
  BaselineRow* row = baseline.mutable_baseline()->add_rows();
  row->set_probe_id("c4-0");
  row->set_probe_index(0);
  row->set_prefix_len(3);
  for (uint32_t tok : {1u, 450u, 31999u, 2u, 2u}) row->add_tokens(tok);
  const CompleteTaskRequest out = RoundTrip(baseline);
  EXPECT_EQ(out.output_case(), CompleteTaskRequest::kBaseline);
  EXPECT_EQ(out.baseline().rows(0).tokens(2), 31999u);

  // Setting the other member of the oneof replaces the first, so a report never carries both.
  baseline.mutable_eval();
  EXPECT_FALSE(baseline.has_baseline());
}

TEST(ProtoRoundTripTest, UnknownEnumValuesFromNewerPeersArePreserved) {
  // A newer coordinator may send a job kind this build does not know; proto3 keeps the number so
  // that listing and re-sending the job loses nothing.
  Job job;
  job.mutable_summary()->set_kind(static_cast<JobKind>(17));
  EXPECT_EQ(RoundTrip(job).summary().kind(), 17);
}

TEST(ProtoRoundTripTest, HealthMessagesMatchTheStandardWireFormat) {
  grpc::health::v1::HealthCheckResponse reply;
  reply.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
  std::string bytes;
  ASSERT_TRUE(reply.SerializeToString(&bytes));
  // Field 1, varint, value 1: what every gRPC health server sends for SERVING.
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("dtm.v1.DtmService");
  RoundTrip(req);
}

}  // namespace
}  // namespace dtm::v1
