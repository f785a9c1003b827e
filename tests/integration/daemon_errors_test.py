"""Bad input at the daemons' edges, with real processes: an unreachable Redis at the coordinator's
start, a model folder a worker cannot load, and a job whose model no worker serves. Each must end in
one clear message that names what is wrong, and nothing may crash.

Run by CTest (daemon_errors_test) after the tiny_model fixture.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

TIMEOUT_S = 60


def run(argv, timeout=TIMEOUT_S):
    return subprocess.run(**dtm_cluster.child(argv), capture_output=True, text=True, timeout=timeout)


def critical_lines(text):
    return [line for line in text.splitlines() if " critical " in line]


class DaemonErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dtm_cluster.require_env()
        cls.tmp = tempfile.mkdtemp(prefix="dtm-errors-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- the coordinator

    def test_coordinator_refuses_to_start_without_redis_after_its_wait(self):
        port = dtm_cluster.free_port()  # nothing listens there
        started = time.monotonic()
        proc = run([dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                    "--redis", f"redis://127.0.0.1:{port}", "--redis-wait-seconds", "2"])
        elapsed = time.monotonic() - started
        self.assertEqual(proc.returncode, 2, proc.stderr)
        lines = critical_lines(proc.stderr)
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn(f"127.0.0.1:{port}", lines[0])
        self.assertIn("--redis-wait-seconds", lines[0])
        # It waited about as long as it was told (single connection attempts, 0.5 s apart).
        self.assertGreaterEqual(elapsed, 2.0)
        self.assertLess(elapsed, 10.0)

    def test_coordinator_names_a_malformed_redis_url(self):
        proc = run([dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                    "--redis", "http://127.0.0.1:6379"])
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("http://127.0.0.1:6379", proc.stderr)

    def test_second_coordinator_on_a_taken_port_refuses_to_start(self):
        first = dtm_cluster.Process("coordinator-first", [], self.tmp).start(
            [dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--redis", "memory"])
        try:
            port = first.wait_for_log(dtm_cluster.COORDINATOR_READY).group(1)
            # gRPC would share the port (SO_REUSEPORT) and split the connections between the two.
            proc = run([dtm_cluster.COORDINATOR_BIN, "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
                        "--redis", "memory"])
            self.assertEqual(proc.returncode, 2, proc.stderr)
            lines = critical_lines(proc.stderr)
            self.assertEqual(len(lines), 1, proc.stderr)
            self.assertIn(f"--listen 127.0.0.1:{port}: cannot listen there", lines[0])
            self.assertTrue(first.alive())
        finally:
            first.kill()

    # -- the worker

    def worker(self, model):
        # No coordinator is needed: the model is loaded before the first call to it.
        return run([dtm_cluster.WORKER_BIN, "--coordinator", f"127.0.0.1:{dtm_cluster.free_port()}",
                    "--model", model, "--metrics-listen", "", "--health-listen", ""])

    def assert_refused(self, proc, *needles):
        self.assertEqual(proc.returncode, 2, proc.stderr)
        lines = critical_lines(proc.stderr)
        self.assertEqual(len(lines), 1, proc.stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])

    def test_worker_names_a_missing_model_folder(self):
        missing = os.path.join(self.tmp, "no-such-model")
        self.assert_refused(self.worker(missing), missing, "no such checkpoint folder")

    def test_worker_names_a_truncated_checkpoint_file(self):
        model = os.path.join(self.tmp, "truncated-model")
        os.makedirs(model)
        shutil.copy(os.path.join(dtm_cluster.MODEL, "config.json"), model)
        with open(os.path.join(dtm_cluster.MODEL, "model.safetensors"), "rb") as f:
            head = f.read(4096)
        weights = os.path.join(model, "model.safetensors")
        with open(weights, "wb") as f:
            f.write(head)
        self.assert_refused(self.worker(model), weights, "exceeds the file size")

    def test_worker_names_a_malformed_config(self):
        model = os.path.join(self.tmp, "bad-config-model")
        os.makedirs(model)
        with open(os.path.join(dtm_cluster.MODEL, "config.json")) as f:
            config = json.load(f)
        del config["num_hidden_layers"]
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump(config, f)
        os.symlink(os.path.join(dtm_cluster.MODEL, "model.safetensors"), os.path.join(model, "model.safetensors"))
        self.assert_refused(self.worker(model), os.path.join(model, "config.json"), "num_hidden_layers")

    # -- a job on a model that no worker serves

    def test_job_on_a_model_no_worker_serves_fails_with_the_reason(self):
        coordinator = dtm_cluster.Process("coordinator", [], self.tmp).start(
            [dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--redis", "memory",
             "--model-wait-seconds", "2"])
        worker = None
        try:
            m = coordinator.wait_for_log(dtm_cluster.COORDINATOR_READY)
            address = f"127.0.0.1:{m.group(1)}"
            worker = dtm_cluster.Process("worker", [], self.tmp).start(
                [dtm_cluster.WORKER_BIN, "--coordinator", address, "--model", dtm_cluster.MODEL, "--worker-id", "w1",
                 "--metrics-listen", "", "--health-listen", ""])
            coordinator.wait_for_log(r"worker w1: registered")

            probes = os.path.join(self.tmp, "probes.jsonl")
            with open(probes, "w") as f:
                for i in range(4):
                    f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [10 + i + k for k in range(7)]}) + "\n")
            unreadable = os.path.join(self.tmp, "model-the-workers-cannot-read")
            spec = os.path.join(self.tmp, "unserved.yaml")
            with open(spec, "w") as f:
                f.write(dtm_cluster.spec_yaml(kind="evaluate", model=unreadable, probes=probes, prefix=4, completion=4,
                                              shard_size=2,
                                              evaluate={"configs": ["model.layers.0.mlp.up_proj=int8-absmax"]}))
            submitted = dtm_cluster.run_dtmctl("submit", spec, "--coordinator", address)
            job_id = submitted.stdout.strip()
            watched = dtm_cluster.run_dtmctl("watch", job_id, "--coordinator", address, check=False, timeout=TIMEOUT_S)
            self.assertNotEqual(watched.returncode, 0, watched.stdout)
            text = watched.stdout + watched.stderr
            self.assertIn("FAILED", text)
            self.assertRegex(text, re.escape(f"no worker has registered serving {unreadable} within 2 s"))
            self.assertIn(f"workers serve {dtm_cluster.MODEL}", text)
            self.assertIn(f"job {job_id}", coordinator.log_text())
            self.assertTrue(coordinator.alive())
            self.assertTrue(worker.alive())
        finally:
            for proc in (worker, coordinator):
                if proc is not None:
                    proc.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
