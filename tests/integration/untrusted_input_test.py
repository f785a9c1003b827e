"""The coordinator against what a client may send it: files it must not read, specs too large or
not UTF-8, jobs too large to plan, replies that would pass the message limit, a retried submission.

A real redis-server, dtm-coordinator (with --data-root, and a small --max-stage-tasks) and one
dtm-worker on the tiny model, over loopback, driven by dtmctl and by the Python gRPC stubs. Each case
is one reproduced failure of issue 11 (F2, F3, F4, F6) or one promise of dtm_service.proto.

Run by CTest (untrusted_input_integration_test) after the tiny_model fixture.
"""
import json
import os
import stat
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 8
PREFIX = 8
COMPLETION = 8
SHARD = 4
MAX_STAGE_TASKS = 200
DEADLINE_S = 10
SECRET = "SECRET-6f1c0d"
# The coordinator answers a refused file within this, never blocking on it (a FIFO, /dev/zero).
QUICK_S = 5


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class UntrustedInputTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def new_cluster(cls):
        # The data root is made before the coordinator starts, so it is a folder of the cluster's tmp.
        cls.root = dtm_cluster.tempfile.mkdtemp(prefix="dtm-data-root-")
        return dtm_cluster.Cluster(num_workers=1, data_root=cls.root,
                                   coordinator_args=["--max-stage-tasks", str(MAX_STAGE_TASKS)])

    @classmethod
    def set_up_cluster(cls):
        cls.stubs = dtm_cluster.load_stubs()
        cls.probes = os.path.join(cls.root, "probes.jsonl")
        with open(cls.probes, "w") as f:
            for i in range(PROBES):
                f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [100 + 7 * i + k for k in range(PREFIX - 1)]}) + "\n")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        dtm_cluster.shutil.rmtree(cls.root, ignore_errors=True)

    # -- helpers

    def spec_text(self, **fields):
        base = dict(kind="evaluate", model=self.cluster.model, dtype="float32", probes=self.probes, prefix=PREFIX,
                    completion=COMPLETION, shard_size=SHARD, evaluate={"configs": ["model.layers.0.mlp.up_proj=int8-absmax"]})
        base.update(fields)
        return dtm_cluster.spec_yaml(**{k: v for k, v in base.items() if v is not None})

    def submit(self, text, request_id=None, timeout=DEADLINE_S):
        """SubmitJob through the stubs: (job or None, grpc code name, details, seconds)."""
        pb = self.stubs.dtm_service_pb2
        data = text if isinstance(text, bytes) else text.encode()
        start = time.monotonic()
        try:
            job = self.cluster.stub().SubmitJob(
                pb.SubmitJobRequest(spec_yaml=data, client_request_id=request_id or str(uuid.uuid4())),
                timeout=timeout)
            return job, "OK", "", time.monotonic() - start
        except self.stubs.grpc.RpcError as e:
            return None, e.code().name, e.details() or "", time.monotonic() - start

    def list_jobs(self, **request):
        pb = self.stubs.dtm_service_pb2
        return self.cluster.stub().ListJobs(pb.ListJobsRequest(**request), timeout=DEADLINE_S)

    def assert_refused(self, text, *needles, code="INVALID_ARGUMENT"):
        jobs_before = len(self.list_jobs(page_size=1000).jobs)
        job, got, details, seconds = self.submit(text)
        self.assertIsNone(job, "accepted")
        self.assertEqual(got, code, details)
        for needle in needles:
            self.assertIn(needle, details)
        self.assertNotIn(SECRET, details)
        self.assertLess(seconds, QUICK_S, f"the refusal took {seconds:.1f} s")
        self.assertEqual(len(self.list_jobs(page_size=1000).jobs), jobs_before, "a refused spec left a job")
        self.assertTrue(self.cluster.coordinator.alive())
        return details

    # -- F2: files named by a spec

    def test_f2_probe_files_outside_the_root_or_not_regular_are_refused_at_once(self):
        outside = os.path.join(self.cluster.tmp, "secret.jsonl")
        with open(outside, "w") as f:
            f.write(SECRET + "\n")
        fifo = os.path.join(self.root, "fifo.jsonl")
        os.mkfifo(fifo)
        inside = os.path.join(self.root, "not-json.jsonl")
        with open(inside, "w") as f:
            f.write(SECRET + "\n")
        rss_before = rss_bytes(self.cluster.coordinator.pid)
        self.assert_refused(self.spec_text(probes="/dev/zero"), "probes", "outside the data root")
        self.assert_refused(self.spec_text(probes="/proc/self/environ"), "outside the data root")
        self.assert_refused(self.spec_text(probes=outside), "outside the data root")
        self.assert_refused(self.spec_text(probes=fifo), "not a regular file")
        # Within the root, the file's bytes stay out of the error.
        self.assert_refused(self.spec_text(probes=inside), "not-json.jsonl", "invalid JSON")
        # A symlink in the root that leads out of it is as far as its target.
        link = os.path.join(self.root, "link.jsonl")
        os.symlink("/dev/zero", link)
        self.assert_refused(self.spec_text(probes=link), "outside the data root")
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        grown = rss_bytes(self.cluster.coordinator.pid) - rss_before
        self.assertLess(grown, 64 << 20, f"the coordinator grew by {grown >> 20} MB on refused files")

    def test_f2_without_a_data_root_dev_zero_is_still_refused_as_not_a_regular_file(self):
        # `dtmctl local` reads the user's own files (its data root is "/"): the read itself refuses.
        spec = self.cluster.write_spec("dev-zero.yaml", self.spec_text(probes="/dev/zero"))
        start = time.monotonic()
        proc = dtm_cluster.run_dtmctl("local", spec, "--workers", "1", check=False, timeout=120)
        seconds = time.monotonic() - start
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("/dev/zero: not a regular file", proc.stderr)
        self.assertEqual(proc.stdout, "")
        print(f"\ndtmctl local refused probes: /dev/zero in {seconds:.1f} s", file=sys.stderr)

    # -- F3 and F4: specs too large to take or to plan

    def test_f3_a_10_mb_spec_is_refused_and_every_listing_still_works(self):
        details = self.assert_refused(self.spec_text(name="x" * (10 << 20)), "1048576", "--max-spec-bytes")
        self.assertLess(len(details), 1000)
        listed = self.cluster.dtmctl("jobs", check=False)
        self.assertEqual(listed.returncode, 0, listed.stderr)

    def test_f4_a_spec_of_100k_configs_or_more_tasks_than_a_stage_may_plan_is_refused(self):
        many = [f"model.layers.{i % 4}.mlp.up_proj=prune:0.{i:05d}" for i in range(100000)]
        self.assert_refused(self.spec_text(evaluate={"configs": many}), "--max-spec-bytes")
        # Small enough to send, too many tasks for one stage: (120 configs + the noise floor) x 2 shards.
        configs = [f"model.layers.0.mlp.up_proj=prune:0.{i:03d}" for i in range(1, 121)]
        self.assert_refused(self.spec_text(evaluate={"configs": configs}), "242", str(MAX_STAGE_TASKS),
                            "--max-stage-tasks")
        # A probe job too: 28 components x 3 methods + 1, x 2 shards = 170 fits; x 4 methods = 226 does not.
        methods = ["int8-absmax", "int8-absmax-row", "prune:0.5", "prune:0.25"]
        self.assert_refused(self.spec_text(kind="probe", evaluate=None, probe={"methods": methods}),
                            "226", "--max-stage-tasks")

    # -- F6: text that is not UTF-8, input echoed without bound

    def test_f6_a_spec_that_is_not_utf8_is_refused_naming_the_byte(self):
        # "caf" and a Latin-1 e-acute: a byte that starts no UTF-8 sequence.
        text = self.spec_text(name="cafe").encode().replace(b"cafe", b"caf\xe9")
        self.assert_refused(text, "not valid UTF-8", "byte")

    def test_f6_a_100k_character_glob_is_quoted_bounded(self):
        glob = "model.layers.*" + "x" * 100000
        details = self.assert_refused(self.spec_text(kind="probe", evaluate=None,
                                                     probe={"methods": ["int8-absmax"], "components": [glob]}),
                                      "matches no component", "100014 bytes")
        self.assertLess(len(details), 1000)

    # -- promises of dtm_service.proto

    def test_a_retried_submission_returns_the_job_the_first_one_made(self):
        text = self.spec_text(name="retried", evaluate={"configs": ["model.layers.1.mlp.up_proj=int8-absmax"]})
        request_id = str(uuid.uuid4())
        first, code, _, _ = self.submit(text, request_id, timeout=0.001)  # may or may not be answered in time
        again, code, details, _ = self.submit(text, request_id)
        self.assertEqual(code, "OK", details)
        if first is not None:
            self.assertEqual(again.job_id, first.job_id)
        jobs = [j for j in self.list_jobs(page_size=1000).jobs if j.client_request_id == request_id]
        self.assertEqual([j.job_id for j in jobs], [again.job_id])
        # The same id with another spec names the job instead of making a second.
        other, code, details, _ = self.submit(self.spec_text(name="another"), request_id)
        self.assertEqual(code, "INVALID_ARGUMENT", details)
        self.assertIn(again.job_id, details)

    def test_list_jobs_pages_newest_first_without_specs(self):
        made = []
        for i in range(5):
            job, code, details, _ = self.submit(self.spec_text(name=f"listed-{i}"))
            self.assertEqual(code, "OK", details)
            made.append(job.job_id)
            time.sleep(0.01)  # distinct create times
        seen, token = [], ""
        while True:
            page = self.list_jobs(page_size=2, page_token=token)
            self.assertLessEqual(len(page.jobs), 2)
            for job in page.jobs:
                self.assertEqual(job.spec_yaml, "", "ListJobs carries a spec")
            seen.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        ids = [j.job_id for j in seen]
        self.assertEqual(len(ids), len(set(ids)), "a job listed twice across pages")
        self.assertEqual([i for i in ids if i in made], list(reversed(made)))
        times = [(j.create_time.seconds, j.create_time.nanos) for j in seen]
        self.assertEqual(times, sorted(times, reverse=True))
        # GetJob still returns the spec.
        got = self.cluster.get_job(made[0])
        self.assertIn("listed-0", got.spec_yaml)

    def test_results_come_in_pages_within_the_message_limit(self):
        configs = [f"model.layers.{layer}.{kind}=int8-absmax" for layer in range(4)
                   for kind in dtm_cluster.COMPONENT_KINDS[:5]]
        job, code, details, _ = self.submit(self.spec_text(name="paged", evaluate={"configs": configs}))
        self.assertEqual(code, "OK", details)
        self.cluster.wait_job(job.job_id)
        pb = self.stubs.dtm_service_pb2
        rows, token, pages = [], "", 0
        while True:
            page = self.cluster.stub().GetResults(pb.GetResultsRequest(job_id=job.job_id, page_size=3, page_token=token,
                                                                       include_probe_results=True),
                                                  timeout=DEADLINE_S)
            pages += 1
            self.assertLessEqual(len(page.results), 3)
            self.assertTrue(page.HasField("noise_floor"))
            rows.extend(page.results)
            token = page.next_page_token
            if not token:
                break
        self.assertEqual([r.config for r in rows], configs)
        self.assertEqual(pages, (len(configs) + 2) // 3)
        self.assertTrue(all(len(r.probe_results) == PROBES for r in rows))
        # dtmctl reads every page.
        doc = json.loads(self.cluster.dtmctl("results", job.job_id, "--format", "json").stdout)
        self.assertEqual([r["config"] for r in doc["results"]], configs)


if __name__ == "__main__":
    unittest.main(verbosity=2)
