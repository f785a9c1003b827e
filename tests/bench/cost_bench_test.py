#!/usr/bin/env python3
"""bench/cost_bench.py end to end on the tiny model, small enough for CI: it runs, finds the results
with reused streams identical to full forwards (it exits 1 where they differ), and its figures agree
with the arithmetic of reuse (a one-component config at layer L runs the layers from L up) and with
one another. Needs DTMCTL, DTM_TINY_MODEL and DTM_BROWN_DIR (tests/integration's environment)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)
import cost_bench  # noqa: E402  (bench/ is not a package)

DTMCTL = os.environ.get("DTMCTL", "build/cli/dtmctl")
MODEL = os.environ.get("DTM_TINY_MODEL", "build/tiny-model")
PROBES = 16  # the probe job's; the search's are twice as many


class CostBenchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cost-bench-test-")
        text = os.path.join(cls.tmp.name, "held-out.txt")
        probes = os.path.join(cls.tmp.name, "probes.jsonl")
        subprocess.run([DTMCTL, "brown-text", "--corpus", os.environ["DTM_BROWN_DIR"], "--split", "held-out",
                        "--out", text], check=True, capture_output=True)
        subprocess.run([DTMCTL, "make-probes", "--model", MODEL, "--corpus", text, "--sample", "random", "--seed", "1",
                        "--count", str(2 * PROBES), "--prefix", "16", "--out", probes], check=True, capture_output=True)
        with open(os.path.join(MODEL, "config.json")) as f:
            cls.layers = json.load(f)["num_hidden_layers"]
        cls.json_path = os.path.join(cls.tmp.name, "figures.json")
        cls.proc = subprocess.run(
            [sys.executable, os.path.join(BENCH, "cost_bench.py"), "--dtmctl", DTMCTL, "--model", MODEL,
             "--probes", probes, "--probe-models", "tiny", "--search-models", "tiny", "--probe-job-probes", str(PROBES),
             "--num-probes", str(2 * PROBES), "--prefix", "16", "--completion", "32", "--shard-size", "8", "--depth", "2", "--first", "8",
             "--step", "8", "--json", cls.json_path], capture_output=True, text=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def record(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
        with open(self.json_path) as f:
            return json.load(f)

    def test_prints_every_table(self):
        self.record()
        for heading in ("(a) probe job", "(b) quant-search", "racing: overlap", "where the time went"):
            self.assertIn(heading, self.proc.stdout)
        self.assertNotIn("DIFFER", self.proc.stdout)

    def test_probe_job_forwards_follow_the_arithmetic(self):
        [job] = self.record()["probe_jobs"]
        self.assertTrue(job["identical"])
        n = self.layers
        self.assertEqual(job["configs"], 7 * n)  # a result row per component
        # Without reuse every config and the noise floor (the uncompressed model, which runs first)
        # run every layer on every probe; with it a config at layer L runs n - L layers, and the
        # noise floor all n.
        self.assertEqual(job["no_reuse"]["computed"], (7 * n + 1) * n * PROBES)
        self.assertEqual(job["reuse"]["computed"], (n + 7 * sum(n - layer for layer in range(n))) * PROBES)
        self.assertEqual(job["no_reuse"]["full"], job["no_reuse"]["computed"])
        self.assertEqual(job["reuse"]["full"], job["no_reuse"]["full"])

    def test_search_reuse_and_racing(self):
        [search] = self.record()["searches"]
        self.assertTrue(search["identical"])
        self.assertEqual(search["exact_probe_evaluations"], search["nodes"] * 2 * PROBES)
        self.assertEqual(search["no_reuse"]["computed"], search["no_reuse"]["full"])
        self.assertLess(search["reuse"]["computed"], search["no_reuse"]["computed"])
        self.assertLessEqual(search["racing_summary"]["probe_evaluations"], search["exact_probe_evaluations"])
        self.assertEqual(set(search["beams"]["exact"]), {"1", "2"})  # a beam per level (JSON keys)

    def test_time_accounting(self):
        record = self.record()
        runs = [job[k] for job in record["probe_jobs"] for k in ("no_reuse", "reuse")]
        runs += [s[k] for s in record["searches"] for k in ("no_reuse", "reuse", "racing")]
        for run in runs:
            self.assertGreater(run["tasks_s"], 0)
            self.assertLessEqual(run["command_s"], run["wall_s"])
            self.assertLessEqual(run["tasks_s"], run["command_s"])  # one worker
            self.assertGreater(run["user_s"], 0)

    def test_where_time_went(self):
        out = {"wall_s": 10.0, "command_s": 9.0, "tasks_s": 8.0, "load_s": 0.5, "user_s": 15.0, "system_s": 2.0}
        self.assertEqual(cost_bench.where_time_went("m", "probe", "reuse", out, 1),
                         ["m", "probe", "reuse", "10.0", "1.0", "8.0", "0.50", "0.5", "5.6%", "15.0", "2.0"])
        # Two workers' seconds are spread over two threads.
        out = {**out, "tasks_s": 16.0, "load_s": 1.0}
        self.assertEqual(cost_bench.where_time_went("m", "probe", "reuse", out, 2)[7:9], ["0.5", "5.6%"])


if __name__ == "__main__":
    unittest.main()
