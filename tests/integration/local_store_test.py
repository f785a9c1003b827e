"""`dtmctl local` keeps its jobs and results in an SQLite file (issue 13): a run killed with -9 mid-job
and started again resumes that job without recomputing what the store holds, and `dtmctl results |
jobs | export-config --store` read the file afterwards without any daemon. One store file has one
owner at a time. A spec's relative paths are read against its own folder, from any working folder.

Real processes only: dtmctl on the tiny model (the tiny_model fixture), the store a real SQLite file
read back here with Python's sqlite3 module. Run by CTest (local_store_integration_test).
"""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 32
PREFIX = 8
COMPLETION = 48
SHARD = 4
# At least this many results stored before the kill, so that the resume has something to reuse.
KILL_AFTER_RESULTS = 20
PROGRESS = re.compile(r"(\d+)/(\d+) tasks\s+\((\d+) cached\)")


def stored_results(path):
    """Result keys in the store file, read as another process would (WAL: never blocks the writer)."""
    if not os.path.exists(path):
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM entries WHERE key >= CAST('dtm:v1:result:' AS BLOB) "
                              "AND key < CAST('dtm:v1:result;' AS BLOB)").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the tables are not made yet


class LocalStoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dtm_cluster.require_env()
        cls.tmp = tempfile.mkdtemp(prefix="dtm-local-store-")
        probes = os.path.join(cls.tmp, "probes.jsonl")
        with open(probes, "w") as f:
            for i in range(PROBES):
                f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [200 + 11 * i + k for k in range(PREFIX - 1)]}) + "\n")
        cls.spec = os.path.join(cls.tmp, "probe.yaml")
        with open(cls.spec, "w") as f:
            # The probes by a relative path: read against the spec's folder, whatever the working one.
            f.write(f"kind: probe\nmodel: {dtm_cluster.MODEL}\nprobes: probes.jsonl\nnum_probes: {PROBES}\n"
                    f"prefix: {PREFIX}\ncompletion: {COMPLETION}\nshard_size: {SHARD}\n"
                    "probe:\n  methods: [int8-absmax]\n")

    @classmethod
    def tearDownClass(cls):
        dtm_cluster.shutil.rmtree(cls.tmp, ignore_errors=True)

    def store(self, name):
        path = os.path.join(self.tmp, name)
        return path, f"sqlite://{path}"

    def test_a_killed_run_resumes_from_the_store_and_the_store_answers_afterwards(self):
        path, url = self.store("resume.sqlite")
        proc = subprocess.Popen(**dtm_cluster.child([dtm_cluster.DTMCTL, "local", self.spec, "--store", url,
                                                     "--format", "json"]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while stored_results(path) < KILL_AFTER_RESULTS:
            if proc.poll() is not None:
                self.fail(f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            self.assertLess(time.monotonic(), deadline, "no results stored in 300 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        before = stored_results(path)
        print(f"\nkilled with {before} results stored", file=sys.stderr)

        # Read from another folder, the unfinished job is left as it is: not resumed by that reader
        # (whose working folder would not find its relative paths), so not failed either.
        listed = subprocess.run([dtm_cluster.DTMCTL, "jobs", "--store", url], cwd="/", capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertRegex(listed.stdout, r"j-[0-9a-f]+\s+RUNNING", listed.stdout)

        resumed = dtm_cluster.run_dtmctl("local", self.spec, "--store", url, "--format", "json", timeout=600)
        self.assertRegex(resumed.stderr, r"resuming job j-[0-9a-f]+ of this spec, left unfinished in " + re.escape(url))
        job_id = re.search(r"resuming job (j-[0-9a-f]+)", resumed.stderr).group(1)
        done, total, cached = map(int, PROGRESS.findall(resumed.stderr)[-1])
        self.assertEqual(done, total)
        # Every result stored before the kill was reused (the kill may have stored a few more than
        # were read above: never fewer); the baseline tasks count as cached too.
        self.assertGreaterEqual(cached, before)
        self.assertLess(cached, total, "the kill left nothing to compute: make KILL_AFTER_RESULTS smaller")
        resumed_results = json.loads(resumed.stdout)

        # The same numbers as a run that was never interrupted, on a store of its own.
        fresh = dtm_cluster.run_dtmctl("local", self.spec, "--store", "memory", "--format", "json", timeout=600)
        self.assertEqual(resumed_results["results"], json.loads(fresh.stdout)["results"])
        self.assertEqual(resumed_results["noise_floor"], json.loads(fresh.stdout)["noise_floor"])

        # Afterwards, without a coordinator: the job, its results, its config.
        jobs = dtm_cluster.run_dtmctl("jobs", "--store", url)
        self.assertRegex(jobs.stdout, job_id + r"\s+SUCCEEDED")
        self.assertEqual(jobs.stdout.count("\nj-"), 1, f"one job, resumed, not a second: {jobs.stdout}")
        read_back = dtm_cluster.run_dtmctl("results", job_id, "--store", url, "--format", "json")
        self.assertEqual(json.loads(read_back.stdout)["results"], resumed_results["results"])

        # A second run of the same spec is a new job whose every task is a cache hit.
        again = dtm_cluster.run_dtmctl("local", self.spec, "--store", url, "--format", "json", timeout=600)
        self.assertNotIn("resuming", again.stderr)
        done, total, cached = map(int, PROGRESS.findall(again.stderr)[-1])
        self.assertEqual((done, cached), (total, total))

    def test_one_owner_per_store_file(self):
        path, url = self.store("owner.sqlite")
        proc = subprocess.Popen(**dtm_cluster.child([dtm_cluster.DTMCTL, "local", self.spec, "--store", url]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(path + "-lock") or stored_results(path) == 0:
                self.assertIsNone(proc.poll())
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            other = dtm_cluster.run_dtmctl("jobs", "--store", url, check=False)
            self.assertEqual(other.returncode, 2, other.stderr)
            self.assertIn(f"is in use by process {proc.pid}", other.stderr)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        # The lock died with its process: the store answers now.
        self.assertEqual(dtm_cluster.run_dtmctl("jobs", "--store", url).returncode, 0)

    def test_the_default_store_is_in_the_xdg_data_folder(self):
        data_home = os.path.join(self.tmp, "xdg")
        env = dict(os.environ, XDG_DATA_HOME=data_home)
        proc = subprocess.run([dtm_cluster.DTMCTL, "local", self.spec, "--format", "csv"], env=env,
                              capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        store = os.path.join(data_home, "dtm", "local.sqlite")
        self.assertIn(f"(kept in sqlite://{store})", proc.stderr)
        self.assertGreater(stored_results(store), 0)

    def test_an_example_runs_from_another_working_directory(self):
        """The shipped example's relative paths (../build/...) are read against the spec's folder, not
        the working directory: a copy of the repository's layout, run from /."""
        root = os.path.join(self.tmp, "checkout")
        os.makedirs(os.path.join(root, "examples"))
        os.makedirs(os.path.join(root, "build", "demo"))
        os.symlink(dtm_cluster.MODEL, os.path.join(root, "build", "tiny-model"))
        with open(os.path.join(root, "build", "demo", "probes.jsonl"), "w") as f:
            for i in range(8):
                f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [300 + 5 * i + k for k in range(31)]}) + "\n")
        with open(os.path.join(dtm_cluster.SOURCE_DIR, "examples", "tiny-probe.yaml")) as f:
            example = f.read()
        self.assertIn("model: ../build/tiny-model", example)
        # The example's own paths; fewer probes and tokens, so that it runs in seconds.
        small = re.sub(r"(?m)^num_probes: \d+$", "num_probes: 8", example)
        small = re.sub(r"(?m)^completion: \d+$", "completion: 8", small)
        small = re.sub(r"(?m)^shard_size: \d+$", "shard_size: 8", small)
        spec = os.path.join(root, "examples", "tiny-probe.yaml")
        with open(spec, "w") as f:
            f.write(small)
        proc = subprocess.run([dtm_cluster.DTMCTL, "local", os.path.relpath(spec, "/"), "--store", "memory",
                               "--format", "json"], cwd="/", capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        results = json.loads(proc.stdout)
        self.assertEqual(results["state"], "SUCCEEDED")
        self.assertEqual(len(results["results"]), 56)  # 28 components x 2 methods
        self.assertEqual(results["noise_floor"]["num_probes"], 8)

    def test_a_store_that_is_not_one_is_refused_and_left_alone(self):
        for url, reason in ((f"sqlite://{self.spec}", "not an SQLite database"),
                            ("sqlite:///dev/zero", "not a regular file"),
                            ("postgres://x", "expected memory, redis://")):
            before = open(self.spec).read()
            proc = dtm_cluster.run_dtmctl("local", self.spec, "--store", url, check=False)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertIn(reason, proc.stderr)
            self.assertEqual(open(self.spec).read(), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
