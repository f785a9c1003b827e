"""The coordinator through a Redis outage: a real redis-server killed -9 mid-job for longer than any
retry, a client polling all the while, then SIGTERM during a second outage.

What must hold (issue F1): every call that needs only what the coordinator holds in memory (GetJob,
ListJobs, `dtmctl jobs`) answers within its deadline; a call that needs a write (SubmitJob) answers
UNAVAILABLE at once; health says NOT_SERVING while the store is away and SERVING once it is back; the
job then finishes with every result stored once; and SIGTERM ends the coordinator within the bound
the README documents (15 s) while Redis is still down, losing nothing acknowledged.

Run by CTest (outage_integration_test) after the tiny_model fixture.
"""
import os
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 16
PREFIX = 8
COMPLETION = 16
SHARD = 4
SHARDS = PROBES // SHARD
LAYERS = 4
# Longer than the old retries of one store call under the scheduler's lock (about 11 s).
OUTAGE_S = 14
# The client's deadline on each call while polling: the coordinator must answer within it.
DEADLINE_S = 5
# README "Health and security": dtm-coordinator exits within this after SIGTERM, whatever Redis does.
SIGTERM_BOUND_S = 15
JOB_TIMEOUT_S = 600


class Poller(threading.Thread):
    """GetJob and ListJobs in a loop, each with a deadline, recording every outcome and latency."""

    def __init__(self, cluster, stubs, job_id):
        super().__init__(daemon=True)
        self.cluster, self.stubs, self.job_id = cluster, stubs, job_id
        self.stop = threading.Event()
        self.calls = []  # (rpc, code name, seconds)

    def run(self):
        pb = self.stubs.dtm_service_pb2
        stub = self.cluster.stub()
        while not self.stop.is_set():
            for rpc, call in (("GetJob", lambda: stub.GetJob(pb.GetJobRequest(job_id=self.job_id), timeout=DEADLINE_S)),
                              ("ListJobs", lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=DEADLINE_S))):
                start = time.monotonic()
                try:
                    call()
                    code = "OK"
                except self.stubs.grpc.RpcError as e:
                    code = e.code().name
                self.calls.append((rpc, code, time.monotonic() - start))
            time.sleep(0.2)


class OutageTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        cls.stubs = dtm_cluster.load_stubs()

    def spec(self, name, method):
        text = dtm_cluster.spec_yaml(name=name, kind="probe", model=self.cluster.model, dtype="float32",
                                     probes=self.ref.probes, prefix=PREFIX, completion=COMPLETION, shard_size=SHARD,
                                     probe={"methods": [method]})
        return self.cluster.write_spec(f"{name}.yaml", text)

    def health(self):
        stubs = self.stubs
        stub = stubs.health_pb2_grpc.HealthStub(stubs.grpc.insecure_channel(self.cluster.address))
        reply = stub.Check(stubs.health_pb2.HealthCheckRequest(service="dtm.v1.DtmService"), timeout=DEADLINE_S)
        return stubs.health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_health(self, want, timeout=10):
        deadline = time.monotonic() + timeout
        while self.health() != want:
            self.assertLess(time.monotonic(), deadline, f"health did not turn {want}")
            time.sleep(0.1)

    def result_keys(self):
        return set(self.cluster.redis_client.keys("dtm:v1:result:*"))

    def test_1_calls_answer_within_their_deadline_through_an_outage_and_the_job_finishes(self):
        method = "int8-absmax-row"
        keys_before = self.result_keys()
        job_id = self.cluster.dtmctl("submit", self.spec("through-outage", method)).stdout.strip()
        to_compute = 7 * LAYERS * SHARDS + SHARDS + SHARDS  # configs x shards, the noise floor, the baseline
        self.cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S,
                              until=lambda j: j.progress.tasks_done - j.progress.tasks_cached >= 2 * SHARDS)
        self.assertEqual(self.health(), "SERVING")
        poller = Poller(self.cluster, self.stubs, job_id)
        poller.start()

        self.cluster.kill_redis()
        outage_start = time.monotonic()
        self.wait_health("NOT_SERVING")
        # A call that needs the store fails at once, naming it; the memory answers the rest.
        pb = self.stubs.dtm_service_pb2
        start = time.monotonic()
        with open(self.spec("during", "prune:0.5"), "rb") as f:
            text = f.read()
        with self.assertRaises(self.stubs.grpc.RpcError) as refused:
            self.cluster.stub().SubmitJob(pb.SubmitJobRequest(spec_yaml=text, client_request_id=str(uuid.uuid4())),
                                          timeout=DEADLINE_S)
        self.assertEqual(refused.exception.code(), self.stubs.grpc.StatusCode.UNAVAILABLE, refused.exception.details())
        self.assertIn("Redis", refused.exception.details())
        submit_s = time.monotonic() - start
        listed = self.cluster.dtmctl("jobs", "--timeout", str(DEADLINE_S), check=False)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(job_id, listed.stdout)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
        self.assertTrue(self.cluster.coordinator.alive())
        self.cluster.restart_redis()
        self.wait_health("SERVING")
        poller.stop.set()
        poller.join()

        failed = [c for c in poller.calls if c[1] != "OK"]
        self.assertFalse(failed, f"calls that failed during the outage: {failed[:5]}")
        slowest = max(c[2] for c in poller.calls)
        self.assertLess(slowest, DEADLINE_S)
        print(f"\nduring a {OUTAGE_S} s Redis outage: {len(poller.calls)} GetJob/ListJobs calls, all OK, slowest "
              f"{slowest * 1000:.0f} ms; SubmitJob refused in {submit_s * 1000:.0f} ms", file=sys.stderr)

        watched = self.cluster.dtmctl("watch", job_id, check=False, timeout=JOB_TIMEOUT_S)
        self.assertEqual(watched.returncode, 0, watched.stderr)
        job = self.cluster.get_job(job_id)
        self.assertEqual(job.progress.tasks_done, job.progress.tasks_total)
        # Every result stored once: nothing lost in the outage, nothing computed twice into the cache.
        self.assertEqual(len(self.result_keys() - keys_before), to_compute - SHARDS)
        self.assertEqual(self.cluster.metric("dtm_store_up"), 1.0)

    def test_2_sigterm_during_an_outage_ends_the_coordinator_within_the_bound(self):
        job_id = self.cluster.dtmctl("submit", self.spec("sigterm", "prune:0.25")).stdout.strip()
        self.cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S,
                              until=lambda j: j.progress.tasks_done - j.progress.tasks_cached >= SHARDS)
        watcher = dtm_cluster.Process("watcher", [dtm_cluster.DTMCTL, "watch", job_id, "--coordinator",
                                                  self.cluster.address], self.cluster.tmp).start()
        self.cluster.kill_redis()
        self.wait_health("NOT_SERVING")
        coordinator = self.cluster.coordinator
        start = time.monotonic()
        coordinator.popen.terminate()
        coordinator.popen.wait(timeout=60)
        took = time.monotonic() - start
        print(f"\nSIGTERM with Redis down (and a client watching): exited {coordinator.popen.returncode} after "
              f"{took:.1f} s", file=sys.stderr)
        self.assertEqual(coordinator.popen.returncode, 0, coordinator.tail())
        self.assertLess(took, SIGTERM_BOUND_S)
        self.assertIn("dtm-coordinator: stopped", coordinator.log_text())
        watcher.kill()

        # Nothing acknowledged was lost: on Redis again, a new coordinator finishes the job from the store.
        self.cluster.restart_redis()
        self.cluster.restart_coordinator()
        watched = self.cluster.dtmctl("watch", job_id, check=False, timeout=JOB_TIMEOUT_S)
        self.assertEqual(watched.returncode, 0, watched.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
