"""A client that is not dtmctl: Python stubs from proto/gen_python.sh (protoc + grpc_python_plugin)
against a real dtm-coordinator with a real worker and Redis (tests/integration/cluster.py).

Submits an evaluate job through dtm.v1.DtmService, follows WatchJob to its end, reads GetResults, and
calls the standard grpc.health.v1.Health service. Run by CTest (python_client_test).
"""
import math
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 16
PREFIX = 16
COMPLETION = 24
SHARD = 8
DEADLINE_S = 10
JOB_TIMEOUT_S = 600

# As submitted (not canonical), and the canonical forms the service must report them under.
CONFIGS = [
    "model.layers.3.mlp.down_proj=prune:0.50",
    "model.layers.1.self_attn.v_proj=int8-absmax,model.layers.0.mlp.up_proj=int8-absmax-row",
    "model.layers.2.self_attn.o_proj=random-prune:0.3:7",
]
CANONICAL = [
    "model.layers.3.mlp.down_proj=prune:0.5",
    "model.layers.0.mlp.up_proj=int8-absmax-row,model.layers.1.self_attn.v_proj=int8-absmax",
    "model.layers.2.self_attn.o_proj=random-prune:0.3:7",
]


class PythonClientTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def new_cluster(cls):
        return dtm_cluster.Cluster(num_workers=1, coordinator_log_level="info")

    @classmethod
    def set_up_cluster(cls):
        cls.stubs = dtm_cluster.load_stubs()
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        cls.channel = cls.stubs.grpc.insecure_channel(cls.cluster.address)
        cls.dtm = cls.stubs.dtm_service_pb2_grpc.DtmServiceStub(cls.channel)
        cls.health = cls.stubs.health_pb2_grpc.HealthStub(cls.channel)
        cls._job = None

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        super().tearDownClass()

    def spec_text(self, **overrides):
        fields = dict(name="python client", kind="evaluate", model=self.cluster.model, probes=self.ref.probes,
                      prefix=PREFIX, completion=COMPLETION, shard_size=SHARD, evaluate={"configs": CONFIGS})
        fields.update(overrides)
        return dtm_cluster.spec_yaml(**fields)

    def submit(self, spec_yaml, request_id=None):
        pb = self.stubs.dtm_service_pb2
        # spec_yaml is bytes on the wire (UTF-8 text), so that the coordinator can refuse text that is not.
        request = pb.SubmitJobRequest(spec_yaml=spec_yaml.encode(), client_request_id=request_id or str(uuid.uuid4()))
        return self.dtm.SubmitJob(request, timeout=DEADLINE_S)

    def watched_job(self):
        """Submits the job once and follows WatchJob to the end: (job, [progress messages])."""
        cls = type(self)
        if cls._job is None:
            job = self.submit(self.spec_text())
            stream = self.dtm.WatchJob(self.stubs.dtm_service_pb2.WatchJobRequest(job_id=job.job_id),
                                       timeout=JOB_TIMEOUT_S)
            # Iterating to the end raises unless the server closes the stream with OK.
            cls._job = (job, list(stream))
        return cls._job

    # -- the job, end to end

    def test_submit_returns_a_pending_job_with_its_summary(self):
        job, _ = self.watched_job()
        job_pb2 = self.stubs.job_pb2
        self.assertTrue(job.job_id)
        self.assertIn(job.state, (job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_RUNNING))
        self.assertEqual(job.summary.kind, job_pb2.JOB_KIND_EVALUATE)
        self.assertEqual(job.summary.prefix_len, PREFIX)
        self.assertEqual(job.summary.completion_len, COMPLETION)
        self.assertEqual(job.summary.shard_size, SHARD)
        self.assertEqual(job.summary.name, "python client")
        self.assertEqual(job.spec_yaml, self.spec_text())

    def test_watch_streams_progress_until_the_job_succeeds(self):
        job, messages = self.watched_job()
        job_pb2 = self.stubs.job_pb2
        self.assertGreaterEqual(len(messages), 2, messages)
        self.assertTrue(all(m.job_id == job.job_id for m in messages))
        terminal = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
        self.assertEqual([m.state in terminal for m in messages], [False] * (len(messages) - 1) + [True],
                         "only the last message may (and must) be terminal")
        last = messages[-1]
        self.assertEqual(last.state, job_pb2.JOB_STATE_SUCCEEDED, last)
        # The baseline shards, then (configs + the noise floor) x shards; nothing cached on a fresh Redis.
        shards = PROBES // SHARD
        self.assertEqual(last.tasks_total, shards + (len(CONFIGS) + 1) * shards)
        self.assertEqual(last.tasks_done, last.tasks_total)
        self.assertEqual(last.tasks_failed, 0)
        self.assertEqual(last.tasks_cached, 0)
        self.assertFalse(last.HasField("search_level"))
        done = [m.tasks_done for m in messages]
        self.assertEqual(done, sorted(done), "tasks_done went backwards")
        self.assertTrue(any(m.tasks_done < last.tasks_total for m in messages), "no progress before the end")
        for m in messages:
            self.assertLessEqual(m.tasks_done, m.tasks_total)

    def test_results_hold_one_sane_row_per_config(self):
        job, _ = self.watched_job()
        pb = self.stubs.dtm_service_pb2
        response = self.dtm.GetResults(pb.GetResultsRequest(job_id=job.job_id), timeout=DEADLINE_S)
        self.assertEqual(response.job_id, job.job_id)
        self.assertEqual(response.state, self.stubs.job_pb2.JOB_STATE_SUCCEEDED)
        # In the order of the spec's configs, under their canonical names (docs/job-spec.md).
        self.assertEqual([r.config for r in response.results], CANONICAL)
        for r in response.results:
            with self.subTest(config=r.config):
                self.assertTrue(r.complete)
                self.assertEqual(len(r.probe_results), 0)  # not asked for
                self.assert_sane(r.metrics)
        # The noise floor: float32 on CPU reproduces its own baseline exactly.
        self.assert_sane(response.noise_floor)
        self.assertEqual(response.noise_floor.fdt75, COMPLETION)
        self.assertEqual(response.noise_floor.sdt_mean, 0)
        # Numbers of the service for one config equal dtmctl eval's (same probes, same batches).
        row = next(r for r in response.results if r.config == CANONICAL[0])
        ref = self.ref.eval(CANONICAL[0])
        self.assertEqual((row.metrics.fdt75, row.metrics.fdt_mean, row.metrics.sdt_mean),
                         (ref["fdt75"], ref["fdt_mean"], ref["sdt_mean"]))
        self.assertAlmostEqual(row.metrics.dppl, ref["dppl"], delta=1e-9 * ref["dppl"])

    def assert_sane(self, m):
        self.assertEqual(m.num_probes, PROBES)
        self.assertTrue(0 <= m.fdt75 <= COMPLETION, m)
        self.assertTrue(0 <= m.fdt_mean <= COMPLETION, m)
        self.assertTrue(0 <= m.sdt_mean <= COMPLETION, m)
        self.assertTrue(math.isfinite(m.dppl) and m.dppl >= 1.0, m)  # mean of exp(nll), nll >= 0
        self.assertTrue(math.isfinite(m.nll_mean) and m.nll_mean >= 0, m)
        self.assertGreaterEqual(m.dppl, math.exp(m.nll_mean) * (1 - 1e-12))  # Jensen
        self.assertEqual(len(m.fdt_histogram), COMPLETION + 1)
        self.assertEqual(sum(m.fdt_histogram), PROBES)
        self.assertAlmostEqual(sum(i * n for i, n in enumerate(m.fdt_histogram)) / PROBES, m.fdt_mean, places=12)

    def test_results_with_probe_rows_and_a_config_filter(self):
        job, _ = self.watched_job()
        pb = self.stubs.dtm_service_pb2
        response = self.dtm.GetResults(pb.GetResultsRequest(job_id=job.job_id, include_probe_results=True,
                                                            configs=[CANONICAL[1]]), timeout=DEADLINE_S)
        self.assertEqual([r.config for r in response.results], [CANONICAL[1]])
        rows = response.results[0].probe_results
        self.assertEqual([p.probe_index for p in rows], list(range(PROBES)))
        for p in rows:
            self.assertLessEqual(p.fdt, COMPLETION)
            self.assertLessEqual(p.sdt, COMPLETION - p.fdt if p.fdt < COMPLETION else 0)
            self.assertTrue(math.isfinite(p.nll) and p.nll >= 0)
        self.assertEqual(sum(p.fdt for p in rows) / PROBES, response.results[0].metrics.fdt_mean)
        self.assertEqual([p.probe_id for p in rows], [r["id"] for r in self.ref.baseline_rows])

    def test_get_job_after_the_end(self):
        job, messages = self.watched_job()
        got = self.dtm.GetJob(self.stubs.dtm_service_pb2.GetJobRequest(job_id=job.job_id), timeout=DEADLINE_S)
        self.assertEqual(got.state, self.stubs.job_pb2.JOB_STATE_SUCCEEDED)
        self.assertEqual(got.progress.tasks_done, messages[-1].tasks_total)
        self.assertEqual(got.summary.num_layers, 4)
        self.assertEqual(got.summary.num_probes, PROBES)
        self.assertEqual(len(got.summary.model_fingerprint), 64)
        self.assertEqual(len(got.summary.probe_set_fingerprint), 64)
        self.assertTrue(got.HasField("end_time"))
        self.assertGreaterEqual(got.end_time.ToNanoseconds(), got.create_time.ToNanoseconds())

    # -- the API's contract beyond the happy path

    def test_submit_is_idempotent_on_the_client_request_id(self):
        self.watched_job()  # first, so that its counts (nothing cached) hold in any test order
        request_id = str(uuid.uuid4())
        text = self.spec_text(name="idempotent", evaluate={"configs": ["model.layers.1.mlp.up_proj=prune:0.1"]})
        first = self.submit(text, request_id)
        again = self.submit(text, request_id)
        self.assertEqual(again.job_id, first.job_id)
        listed = self.dtm.ListJobs(self.stubs.dtm_service_pb2.ListJobsRequest(), timeout=DEADLINE_S)
        self.assertEqual(sum(1 for j in listed.jobs if j.client_request_id == request_id), 1)

    def test_errors_have_exact_codes(self):
        grpc, pb = self.stubs.grpc, self.stubs.dtm_service_pb2
        with self.assertRaises(grpc.RpcError) as caught:
            self.dtm.GetJob(pb.GetJobRequest(job_id="no-such-job"), timeout=DEADLINE_S)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("no-such-job", caught.exception.details())
        with self.assertRaises(grpc.RpcError) as caught:
            self.submit(self.spec_text(shard_size=0))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("shard_size", caught.exception.details())

    # -- health

    def test_health_check_answers_serving(self):
        health_pb2 = self.stubs.health_pb2
        for service in ("", "dtm.v1.DtmService"):
            with self.subTest(service=service):
                reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE_S)
                self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)

    def test_health_check_of_an_unknown_service_is_not_found(self):
        grpc = self.stubs.grpc
        with self.assertRaises(grpc.RpcError) as caught:
            self.health.Check(self.stubs.health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=DEADLINE_S)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main(verbosity=2)
