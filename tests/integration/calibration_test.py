"""GPTQ's calibration set is part of the result (issue 12, item 1; SPEC, gptq): a job names it, its
fingerprint is in the key of every gptq task, and workers fetch it from the coordinator.

Checks, on real redis-server, dtm-coordinator and two dtm-workers (the tiny model, loopback):
  - one gptq config under two calibration sets: other task ids (new results in the store), other
    numbers, each equal to `dtmctl eval --calibration FILE` with the same count and seq_len;
  - the same set again: one task id, every task a cache hit, the same numbers;
  - a gptq job without `calibration:` is refused at submit.

Run by CTest (calibration_integration_test) after the tiny_model fixture.
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 8
PREFIX = 8
COMPLETION = 16
SHARD = 4
SEQ_LEN = 32
COUNT = 6
CONFIG = "model.layers.1.mlp.down_proj=gptq:2,model.layers.2.self_attn.v_proj=gptq:2"
JOB_TIMEOUT_S = 600


class CalibrationTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def set_up_cluster(cls):
        cls.stubs = dtm_cluster.load_stubs()
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        # Two calibration files of real text: the reference's probes are too short, so rows of held-out
        # text are cut by make-probes with a longer prefix (rows 0..7 and 8..15 of one file).
        text = os.path.join(cls.ref.dir, "held-out.txt")
        both = os.path.join(cls.cluster.tmp, "calibration-both.jsonl")
        dtm_cluster.run_dtmctl("make-probes", "--model", cls.cluster.model, "--corpus", text, "--count", 2 * COUNT,
                               "--prefix", SEQ_LEN, "--out", both)
        with open(both) as f:
            rows = [line for line in f if line.strip()]
        cls.sets = {}
        for name, part in (("a", rows[:COUNT]), ("b", rows[COUNT:])):
            path = os.path.join(cls.cluster.tmp, f"calibration-{name}.jsonl")
            with open(path, "w") as f:
                f.writelines(part)
            cls.sets[name] = path

    def submit(self, name, calibration):
        fields = dict(name=name, kind="evaluate", model=self.cluster.model, dtype="float32", probes=self.ref.probes,
                      prefix=PREFIX, completion=COMPLETION, shard_size=SHARD, evaluate={"configs": [CONFIG]})
        if calibration:
            fields["calibration"] = {"probes": calibration, "count": COUNT, "seq_len": SEQ_LEN}
        return self.cluster.dtmctl("submit", self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(**fields)),
                                   "--watch", check=False, timeout=JOB_TIMEOUT_S)

    def run_job(self, name, calibration):
        proc = self.submit(name, calibration)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        job_id = proc.stdout.strip().splitlines()[0]
        doc = json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)
        row = [r for r in doc["results"] if r["config"] == CONFIG][0]
        return self.cluster.get_job(job_id), row

    def stored_results(self):
        return len(self.cluster.redis_client.command("KEYS", "dtm:v1:result:*"))

    def eval_with(self, calibration):
        return json.loads(dtm_cluster.run_dtmctl(
            "eval", "--model", self.cluster.model, "--baseline", self.ref.baseline, "--compress", CONFIG,
            "--calibration", calibration, "--calibration-count", COUNT, "--calibration-seq-len", SEQ_LEN,
            "--threads", "1", "--no-noise-floor").stdout)

    @staticmethod
    def numbers(row):
        return (row["fdt75"], row["fdt_mean"], row["sdt_mean"])

    def assert_same_dppl(self, a, b):
        # Exact divergences, but NLLs summed in another batch order may differ in the last bits.
        self.assertLess(abs(a - b), 1e-6 * abs(b), (a, b))

    def test_1_the_calibration_set_decides_the_task_id_and_the_numbers(self):
        job_a, row_a = self.run_job("calibrated-a", self.sets["a"])
        after_a = self.stored_results()
        job_b, row_b = self.run_job("calibrated-b", self.sets["b"])
        # The noise floor is shared; the gptq config's shards are new tasks under set b.
        self.assertEqual(self.stored_results(), after_a + PROBES // SHARD)
        self.assertNotEqual(job_a.summary.calibration_fingerprint, job_b.summary.calibration_fingerprint)
        self.assertGreater(abs(row_a["dppl"] - row_b["dppl"]), 1e-4 * row_a["dppl"], "the two sets gave one model")
        for job, row, name in ((job_a, row_a, "a"), (job_b, row_b, "b")):
            ref = self.eval_with(self.sets[name])
            self.assertEqual(ref["calibration_fingerprint"], job.summary.calibration_fingerprint)
            self.assertEqual(self.numbers(row), self.numbers(ref))
            self.assert_same_dppl(row["dppl"], ref["dppl"])
        for worker in self.cluster.workers.values():
            if "calibration set" in worker.log_text():
                self.assertRegex(worker.log_text(), r"calibration set [0-9a-f]{12} \(6 x 32 tokens\) fetched")

        # Set a again, in another job: one task id per shard, every task from the cache.
        job_again, row_again = self.run_job("calibrated-a-again", self.sets["a"])
        self.assertEqual(self.stored_results(), after_a + PROBES // SHARD)
        self.assertEqual(job_again.progress.tasks_cached, job_again.progress.tasks_total)
        self.assertEqual(self.numbers(row_again), self.numbers(row_a))
        self.assertEqual(row_again["dppl"], row_a["dppl"])  # the same stored shards

    def test_2_a_gptq_job_without_a_calibration_set_is_refused_at_submit(self):
        proc = self.submit("uncalibrated", None)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("calibration: missing; gptq needs a calibration set", proc.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
