"""Bad input at the daemons' edges, with real processes: an unreachable Redis at the coordinator's
start, a /metrics address without a host, a model folder a worker cannot load, a worker whose client
certificate the coordinator does not trust, and a job whose model no worker serves. Each must end in
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


# A CA, a server certificate for localhost, and a client certificate of another CA (openssl CLI).
OPENSSL_CONFIG = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


def make_certificates(folder):
    """ca.pem signs server.pem; rogue-ca.pem signs rogue-client.pem. None when openssl is missing."""
    if shutil.which("openssl") is None:
        return None
    cnf = os.path.join(folder, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(OPENSSL_CONFIG)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-config", cnf]
    for ca in ("ca", "rogue-ca"):
        subprocess.run(["openssl", "req", "-x509", "-new", *key, "-days", "2", "-subj", f"/CN={ca}", "-extensions",
                        "ca_ext", "-keyout", path(f"{ca}.key"), "-out", path(f"{ca}.pem")], check=True,
                       capture_output=True)
    for serial, (leaf, ca, ext) in enumerate((("server", "ca", "server_ext"), ("rogue-client", "rogue-ca", "client_ext")), 2):
        subprocess.run(["openssl", "req", "-new", *key, "-subj", "/CN=localhost", "-keyout", path(f"{leaf}.key"), "-out",
                        path(f"{leaf}.csr")], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-days", "2", "-set_serial", str(serial), "-in", path(f"{leaf}.csr"),
                        "-CA", path(f"{ca}.pem"), "-CAkey", path(f"{ca}.key"), "-extfile", cnf, "-extensions", ext,
                        "-out", path(f"{leaf}.pem")], check=True, capture_output=True)
    return path


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

    def test_daemons_print_their_version_and_exit_2_on_a_usage_error(self):
        # Issue 13: --version on every binary; a mistyped flag exits 2 (bad input) and names the flag meant.
        for binary, name, engine, typo, meant in ((dtm_cluster.COORDINATOR_BIN, "dtm-coordinator", False, "--redsi",
                                                   "--redis"),
                                                  (dtm_cluster.WORKER_BIN, "dtm-worker", True, "--modle", "--model")):
            with self.subTest(daemon=name):
                proc = run([binary, "--version"])
                self.assertEqual(proc.returncode, 0, proc.stderr)
                pattern = rf"^{name} \d+\.\d+\.\d+ \(commit ([0-9a-f]{{12}}|unknown), \w+ build"
                pattern += r", libtorch \d+\.\d+\.\d+.*\)$" if engine else r"\)$"
                self.assertRegex(proc.stdout.strip(), pattern)
                proc = run([binary, typo, "x"])
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn(f"unknown flag {typo}; did you mean {meant}?", proc.stderr)

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

    def test_metrics_address_without_a_host_is_refused(self):
        proc = run([dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--redis", "memory",
                    "--metrics-listen", ":0"])
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("names no host", proc.stdout + proc.stderr)

    def test_worker_with_a_certificate_of_another_ca_says_what_to_check(self):
        path = make_certificates(self.tmp)
        if path is None:
            self.skipTest("no openssl")
        coordinator = dtm_cluster.Process("tls-coordinator", [], self.tmp).start(
            [dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--redis", "memory",
             "--tls-cert", path("server.pem"), "--tls-key", path("server.key"), "--tls-client-ca", path("ca.pem")])
        worker = None
        try:
            m = coordinator.wait_for_log(dtm_cluster.COORDINATOR_READY)
            worker = dtm_cluster.Process("rogue-worker", [], self.tmp).start(
                [dtm_cluster.WORKER_BIN, "--coordinator", f"localhost:{m.group(1)}", "--model", dtm_cluster.MODEL,
                 "--worker-id", "rogue", "--metrics-listen", "", "--health-listen", "", "--tls-ca", path("ca.pem"),
                 "--tls-cert", path("rogue-client.pem"), "--tls-key", path("rogue-client.key")])
            # The handshake fails as "Socket closed", as a coordinator that is down would: the worker says what
            # else to check, naming its certificate.
            line = worker.wait_for_log(r"registrations failed in a row; if the coordinator is up: .*", timeout=TIMEOUT_S)
            self.assertIn("--tls-client-ca signed this worker's --tls-cert", line.group(0))
            self.assertIn(path("rogue-client.pem"), line.group(0))
            self.assertTrue(worker.alive())
            self.assertNotIn("worker rogue: registered", coordinator.log_text())
        finally:
            for proc in (worker, coordinator):
                if proc is not None:
                    proc.kill()

    # -- a job on a model that no worker serves

    def test_job_on_a_model_no_worker_serves_fails_with_the_reason(self):
        coordinator = dtm_cluster.Process("coordinator", [], self.tmp).start(
            [dtm_cluster.COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--redis", "memory",
             "--model-wait-seconds", "2", "--data-root", self.tmp])
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
