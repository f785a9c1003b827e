"""What the coordinator takes from workers: only authenticated callers (F8), results that name their
worker and can be purged, warnings when numbers cannot be right, late reports answered from the
store, and tasks that one worker cannot run going to another (F5).

Real redis-server, dtm-coordinator and dtm-workers on the tiny model, over loopback; the misbehaving
worker is written with the Python stubs (fake_worker.py), since a real one does not lie.

Run by CTest (worker_trust_integration_test) after the tiny_model fixture.
"""
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402
from fake_worker import FakeWorker  # noqa: E402

PROBES = 8
PREFIX = 8
COMPLETION = 16
SHARD = 4
SHARDS = PROBES // SHARD
TOKEN = "s3cret-cluster-token"
JOB_TIMEOUT_S = 600


class ForgedWorkerTest(dtm_cluster.ClusterTestCase):
    """A coordinator that requires a token; one real worker; a fake one that reports made-up numbers."""

    @classmethod
    def new_cluster(cls):
        return dtm_cluster.Cluster(num_workers=1, token=TOKEN)

    @classmethod
    def set_up_cluster(cls):
        cls.stubs = dtm_cluster.load_stubs()
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        models = cls.cluster.redis_client.command("HGETALL", "dtm:v1:models")
        values = [json.loads(v) for v in models[1::2]]
        cls.fingerprint = values[0]["fingerprint"]

    def spec(self, name, config):
        text = dtm_cluster.spec_yaml(name=name, kind="evaluate", model=self.cluster.model, dtype="float32",
                                     probes=self.ref.probes, prefix=PREFIX, completion=COMPLETION, shard_size=SHARD,
                                     evaluate={"configs": [config]})
        return self.cluster.write_spec(f"{name}.yaml", text)

    def fake(self, worker_id, token=TOKEN, version=None):
        return FakeWorker(self.stubs, self.cluster.address, worker_id, self.fingerprint, self.cluster.model,
                          token=token, version=version)

    def forge_until_done(self, forger, job_id):
        """The fake worker leases and reports made-up results until the job ends; the ids it stored."""
        stored = []
        while self.cluster.get_job(job_id).state == self.stubs.job_pb2.JOB_STATE_RUNNING or not stored:
            for task in forger.lease().tasks:
                reply = forger.complete(forger.forged_result(task))
                self.assertFalse(reply.reregister)
                if reply.outcome == self.stubs.worker_service_pb2.CompleteTaskResponse.OUTCOME_ACCEPTED:
                    stored.append((task.kind, task.task_id))
        return stored

    def test_1_a_caller_without_the_token_cannot_act_as_a_worker(self):
        grpc = self.stubs.grpc
        for token in (None, "a-guess"):
            with self.subTest(token=token), self.assertRaises(grpc.RpcError) as refused:
                self.fake("intruder", token=token).register()
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertNotIn("intruder", self.cluster.coordinator.log_text())

    def test_2_a_worker_of_another_minor_version_is_refused(self):
        grpc = self.stubs.grpc
        with self.assertRaises(grpc.RpcError) as refused:
            self.fake("old", version="0.1.9").register()
        self.assertEqual(refused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("0.1.9", refused.exception.details())
        self.assertIn(FakeWorker.dtm_version(), refused.exception.details())

    def test_3_forged_results_are_flagged_named_and_purged_then_recomputed(self):
        # The real worker steps aside, so that the forger gets every task.
        self.cluster.workers["w1"].stop()
        forger = self.fake("forger")
        forger.register()
        spec = self.spec("forged", "model.layers.0.mlp.up_proj=int8-absmax")
        job_id = self.cluster.dtmctl("submit", spec).stdout.strip()
        stored = self.forge_until_done(forger, job_id)
        self.assertEqual(len(stored), SHARDS * 3)  # the baseline, the noise floor, the config
        job = self.cluster.wait_job(job_id)
        self.assertEqual(job.state, self.stubs.job_pb2.JOB_STATE_SUCCEEDED, job.error.message)

        # Every stored result names the worker that reported it, whatever the report said.
        pb = self.stubs.worker_service_pb2
        for kind, task_id in stored:
            baseline = kind == pb.TASK_KIND_BASELINE_SHARD
            raw = self.cluster.redis_client.get(f"dtm:v1:{'baseline' if baseline else 'result'}:{task_id}")
            output = (pb.BaselineShardOutput if baseline else pb.EvalShardOutput).FromString(raw)
            self.assertEqual(output.computed_by, "forger")
        # The noise floor a float32 worker cannot have gets a warning, on stderr and in the JSON.
        results = self.cluster.dtmctl("results", job_id, "--format", "json")
        doc = json.loads(results.stdout)
        self.assertEqual(doc["noise_floor"]["fdt75"], 0)
        self.assertTrue(any("suspect noise floor" in w for w in doc["warnings"]), doc.get("warnings"))
        self.assertIn("warning: suspect noise floor", results.stderr)

        purged = json.loads(self.cluster.dtmctl("purge-worker", "forger").stdout)
        self.assertEqual(purged, {"worker_id": "forger", "results_deleted": len(stored)})
        self.assertEqual(json.loads(self.cluster.dtmctl("purge-worker", "forger").stdout)["results_deleted"], 0)

        # An honest worker computes them again: nothing of the forger's is served.
        forger.close()
        self.cluster.start_worker("w1")
        again = self.cluster.dtmctl("submit", spec, "--watch", timeout=JOB_TIMEOUT_S).stdout.strip().splitlines()[0]
        job = self.cluster.wait_job(again)
        self.assertEqual(job.progress.tasks_cached, 0)
        doc = json.loads(self.cluster.dtmctl("results", again, "--format", "json").stdout)
        self.assertEqual(doc["noise_floor"]["fdt75"], COMPLETION)
        # No warning about the numbers' source (a saturated fdt75, if any, is another warning).
        self.assertFalse(any("suspect noise floor" in w for w in doc.get("warnings", [])), doc.get("warnings"))
        row = doc["results"][0]
        ref = self.ref.eval(row["config"])
        self.assertEqual((row["fdt75"], row["fdt_mean"], row["sdt_mean"]), (ref["fdt75"], ref["fdt_mean"], ref["sdt_mean"]))

    def test_4_a_report_after_a_coordinator_restart_is_a_duplicate_when_the_result_is_stored(self):
        self.cluster.workers["w1"].stop()
        late = self.fake("late")
        late.register()
        job_id = self.cluster.dtmctl("submit", self.spec("late", "model.layers.1.mlp.up_proj=prune:0.5")).stdout.strip()
        self.cluster.wait_job(job_id, until=lambda j: j.state == self.stubs.job_pb2.JOB_STATE_RUNNING)
        tasks = []
        while not tasks:
            tasks = list(late.lease(max_tasks=1).tasks)
        report = late.forged_result(tasks[0])
        self.assertEqual(late.complete(report).outcome, self.stubs.worker_service_pb2.CompleteTaskResponse.OUTCOME_ACCEPTED)
        self.cluster.restart_coordinator(wait_workers=False)
        late.close()
        late = self.fake("late")
        late.register()
        # The reply was lost, say: the same report again, to a coordinator that never leased it.
        again = late.complete(report)
        self.assertEqual(again.outcome, self.stubs.worker_service_pb2.CompleteTaskResponse.OUTCOME_DUPLICATE)
        self.assertIn(f"task {tasks[0].task_id[:12]}: duplicate from late", self.cluster.coordinator.log_text())
        self.assertNotRegex(self.cluster.coordinator.log_text(), r"\[error\].*not planned")
        late.close()
        self.cluster.dtmctl("cancel", job_id)
        self.cluster.start_worker("w1")


class IncapableWorkerTest(dtm_cluster.ClusterTestCase):
    """A worker that says it cannot run what it leases (cause WORKER, as a real one out of memory or
    without a capability does): its tasks go to w1, and with w1 gone the job fails after the wait
    naming its reason (F5). The incapable worker is a fake: no real one lacks a capability today."""

    REASON = "this worker lacks what the task needs (test)"

    @classmethod
    def new_cluster(cls):
        return dtm_cluster.Cluster(num_workers=1, coordinator_args=["--model-wait-seconds", "8"])

    @classmethod
    def set_up_cluster(cls):
        cls.stubs = dtm_cluster.load_stubs()
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        models = cls.cluster.redis_client.command("HGETALL", "dtm:v1:models")
        cls.fingerprint = json.loads(models[1])["fingerprint"]

    def spec(self, name, config):
        text = dtm_cluster.spec_yaml(name=name, kind="evaluate", model=self.cluster.model, dtype="float32",
                                     probes=self.ref.probes, prefix=PREFIX, completion=COMPLETION, shard_size=SHARD,
                                     evaluate={"configs": [config]})
        return self.cluster.write_spec(f"{name}.yaml", text)

    def refuse_until_done(self, job_id):
        """The incapable worker leases and refuses tasks until the job ends; how many it refused."""
        incapable = FakeWorker(self.stubs, self.cluster.address, "incapable", self.fingerprint, self.cluster.model)
        incapable.register()
        refused = 0
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while self.cluster.get_job(job_id).state in (self.stubs.job_pb2.JOB_STATE_PENDING,
                                                      self.stubs.job_pb2.JOB_STATE_RUNNING):
            self.assertLess(time.monotonic(), deadline)
            incapable.heartbeat()
            for task in incapable.lease(max_tasks=1).tasks:
                reply = incapable.fail(task, self.REASON)
                self.assertTrue(reply.requeued)
                refused += 1
            time.sleep(0.1)
        incapable.close()
        return refused

    def test_1_a_pool_with_one_incapable_worker_finishes_the_job(self):
        config = "model.layers.0.self_attn.v_proj=int8-absmax"
        job_id = self.cluster.dtmctl("submit", self.spec("refused", config)).stdout.strip()
        refused = self.refuse_until_done(job_id)
        job = self.cluster.get_job(job_id)
        self.assertEqual(self.stubs_state(job), "JOB_STATE_SUCCEEDED", job.error.message)
        self.assertEqual(job.progress.tasks_failed, 0)
        if refused:
            self.assertIn("worker incapable cannot run it", self.cluster.coordinator.log_text())
        doc = json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)
        row = doc["results"][0]
        self.assertEqual(row["config"], config)
        ref = json.loads(dtm_cluster.run_dtmctl("eval", "--model", self.cluster.model, "--baseline", self.ref.baseline,
                                                "--compress", config, "--threads", "1", "--no-noise-floor").stdout)
        self.assertEqual((row["fdt75"], row["fdt_mean"], row["sdt_mean"]), (ref["fdt75"], ref["fdt_mean"], ref["sdt_mean"]))

    def test_2_a_task_no_registered_worker_can_run_fails_after_the_wait_with_every_reason(self):
        self.cluster.workers["w1"].stop()
        job_id = self.cluster.dtmctl("submit", self.spec("refused-alone", "model.layers.1.mlp.down_proj=prune:0.5")).stdout.strip()
        self.assertGreater(self.refuse_until_done(job_id), 0)
        job = self.cluster.get_job(job_id)
        self.assertEqual(self.stubs_state(job), "JOB_STATE_FAILED")
        self.assertIn("no registered worker can run it within 8 s", job.error.message)
        self.assertRegex(job.error.message, re.compile(r"incapable: .*" + re.escape(self.REASON)))
        self.cluster.start_worker("w1")

    def stubs_state(self, job):
        return dtm_cluster.load_stubs().job_pb2.JobState.Name(job.state)


if __name__ == "__main__":
    unittest.main(verbosity=2)
