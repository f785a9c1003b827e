"""The paper's sparsification run as one job (issue 15), end to end: a real redis-server,
dtm-coordinator and two dtm-workers started with --model-root over the test's folder run `kind:
sparsify` on the tiny model, 3 rounds of probe -> allocate -> prune -> train (a gang of two over
Gloo) -> evaluate, each stage a job of its own.

Checked against what does not share the service's code path:
- every round's masks hold exactly its allocation (the training's masked weights, to one weight per
  component), and the final model, re-masked, holds each component's target in exact zeros, counted
  here from the safetensors file;
- round r+1's probes ran on round r's trained model (the probe job's model fingerprint is round r's
  training output fingerprint), and its evaluation against the starting model (the `reference:`);
- kill -9 of the coordinator while round 2 trains: the run resumes and ends with the undisturbed
  run's final model bit for bit (same fingerprint), its finished stage jobs not run again;
- `allocation: uniform` probes nothing and prunes every component by each step;
- cancelling a run cancels its stage job under way;
- bad input is refused at submit naming the field: a schedule reaching 100 %, a negative step, an
  unknown allocation, a `previous:` round of another model, per-round train fields.

Run by CTest (sparsify_run_integration_test) after the tiny_model fixture. About 3 minutes on 2 cores.
"""
import copy
import json
import os
import shutil
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

SCHEDULE = [0.3, 0.2, 0.1]
TRAIN = {"phases": "masked:8,unmasked:4", "batch": 4, "seq_len": 64, "max_sequences": 16, "lr": 2e-3,
         "workers": 2, "checkpoint_every": 2, "timeout_seconds": 20}
MODEL_WAIT_S = 30


def zeros_of(model_dir, name):
    """The number of exact zeros of a float32 tensor in MODEL/model.safetensors, read here."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        begin, end = header[name + ".weight"]["data_offsets"]
        f.seek(8 + size + begin)
        values = struct.unpack(f"<{(end - begin) // 4}f", f.read(end - begin))
    return sum(1 for v in values if v == 0.0)


class SparsifyRunTest(dtm_cluster.ClusterTestCase):
    runs = {}

    @classmethod
    def new_cluster(cls):
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="dtm-sparsify-run-test-")
        cls.model = os.path.join(cls.tmp, "dense")
        shutil.copytree(dtm_cluster.MODEL, cls.model)
        text = os.path.join(cls.tmp, "brown.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "train", "--out", text)
        cls.data = os.path.join(cls.tmp, "c4-like.jsonl")
        with open(text) as src, open(cls.data, "w") as out:
            for line in src:
                if line.strip():
                    out.write(json.dumps({"text": line.strip()}) + "\n")
        held_out = os.path.join(cls.tmp, "held-out.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "held-out", "--out", held_out)
        cls.ppl_text = os.path.join(cls.tmp, "ppl.txt")
        with open(held_out) as src, open(cls.ppl_text, "w") as out:
            out.writelines(src.readlines()[:40])
        cls.probes = os.path.join(cls.tmp, "probes.jsonl")
        dtm_cluster.run_dtmctl("make-probes", "--model", cls.model, "--corpus", held_out, "--count", "4",
                               "--prefix", "8", "--out", cls.probes)
        return dtm_cluster.Cluster(num_workers=2, model=cls.model,
                                   coordinator_args=["--model-wait-seconds", str(MODEL_WAIT_S)],
                                   worker_args=["--model-root", cls.tmp])

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def spec(self, output, allocation="balanced", schedule=SCHEDULE, previous=None, train_extra="", **train_fields):
        fields = dict(TRAIN, **train_fields)
        train = "".join(f"  {k}: {json.dumps(v) if isinstance(v, str) else v}\n" for k, v in fields.items())
        sparsify = f"  schedule: {json.dumps(schedule)}\n  allocation: {allocation}\n  output: {output}\n"
        if previous:
            sparsify += f"  previous: {previous}\n"
        return (f"kind: sparsify\nmodel: {self.model}\nprobes: {self.probes}\nprefix: 8\ncompletion: 8\n"
                f"ppl:\n  text: {self.ppl_text}\n  window: 64\n  shard_size: 16\n"
                f"sparsify:\n{sparsify}train:\n  data: {self.data}\n{train}{train_extra}")

    def submit(self, name, spec, check=True):
        proc = self.cluster.dtmctl("submit", self.cluster.write_spec(name, spec), check=check)
        return proc.stdout.strip() if check else proc

    def finished(self, job_id, timeout=600):
        return self.succeeded(job_id, timeout)["rounds"]

    def test_1_a_balanced_run_prunes_trains_and_evaluates_each_round(self):
        output = os.path.join(self.tmp, "run-a")
        job = self.submit("run-a.yaml", self.spec(output))
        rounds = self.finished(job)
        type(self).runs["balanced"] = (job, rounds)
        self.assertEqual([r["round"] for r in rounds], [1, 2, 3])
        total = sum(c["params"] for c in rounds[0]["allocation"]["components"])
        cumulative = 0
        for r, step in zip(rounds, SCHEDULE):
            cumulative += step
            allocation = r["allocation"]
            self.assertEqual(allocation["method"], "balanced")
            self.assertAlmostEqual(allocation["step"], step)
            # The masks hold the allocation: every component's target, to one weight each.
            pruned = sum(round(c["target"] * c["params"]) for c in allocation["components"])
            self.assertLessEqual(abs(r["training"]["masked_weights"] - pruned), len(allocation["components"]))
            self.assertAlmostEqual(r["sparsity"], cumulative, delta=1e-4)
            self.assertAlmostEqual(r["measured_sparsity"], pruned / total, delta=1e-6)
            self.assertEqual(r["training"]["steps"], 12)
            self.assertEqual(r["training"]["gang_size"], 2)
            self.assertGreater(r["metrics"]["num_probes"], 0)
            self.assertGreater(r["metrics"]["ppl"], 1)
            self.assertGreater(r["probe_seconds"], 0)
            self.assertGreater(r["train_seconds"], 0)
        self.assertEqual(rounds[-1]["training"]["output_dir"], os.path.join(output, "final"))
        self.assertEqual(rounds[0]["training"]["output_dir"], os.path.join(output, "round-1"))
        # Round r+1's probes ran on round r's trained model.
        for before, after in zip(rounds, rounds[1:]):
            probe_job = self.cluster.get_job(after["probe_job_id"])
            self.assertEqual(probe_job.summary.model_fingerprint, before["training"]["output_fingerprint"])
            self.assertEqual(after["input_model"], before["training"]["output_dir"])
        # Evaluated against the starting model, whatever round.
        evaluate = self.cluster.get_job(rounds[1]["evaluate_job_id"])
        self.assertEqual(evaluate.summary.reference_model_path, self.model)
        # The final model, re-masked, holds exactly the last round's targets (one weight of rounding).
        final = os.path.join(output, "final")
        reported = rounds[-1]["training"]["output_zeros"]
        self.assertEqual(len(reported), len(rounds[-1]["allocation"]["components"]))
        for c in rounds[-1]["allocation"]["components"]:
            expected = round(c["target"] * c["params"])
            counted = zeros_of(final, c["component"])
            self.assertLessEqual(abs(counted - expected), 1, c["component"])
            # What the run reports as measured is what is in the file.
            self.assertEqual(reported[c["component"]], {"zeros": counted, "params": c["params"]})
            self.assertAlmostEqual(rounds[-1]["output_sparsity"][c["component"]], counted / c["params"])
        # export-config prints a round's cumulative targets; watch-style progress names the end.
        config = self.cluster.dtmctl("export-config", job, "--round", "2").stdout.strip()
        self.assertEqual(len(config.split(",")), len([c for c in rounds[1]["allocation"]["components"]
                                                      if c["target"] > 0]))
        table = self.cluster.dtmctl("results", job).stdout
        lines = table.splitlines()
        self.assertIn("measured", lines[0])
        self.assertIn("largest difference from a component's target: ", table)
        self.assertEqual([line.split()[0] for line in lines[2:5]], ["1", "2", "3"])  # under the header's rule
        self.assertIn(os.path.join(output, "final"), lines[4])
        # Its stage jobs are jobs like any other, named after the run.
        self.assertEqual(self.cluster.get_job(rounds[0]["train_job_id"]).client_request_id, f"{job}/round-1/train")

    def test_2_a_coordinator_killed_while_a_round_trains_resumes_the_run(self):
        self.assertIn("balanced", self.runs, "needs test_1's run")
        output = os.path.join(self.tmp, "run-b")
        job = self.submit("run-b.yaml", self.spec(output))
        self.cluster.wait_job(job, timeout=300, until=lambda j: j.progress.sparsify_round == 2 and
                              j.progress.sparsify_stage == "train")
        # Prometheus sees where the run is.
        self.assertEqual(self.cluster.metric("dtm_job_sparsify_round", job_id=job), 2)
        self.assertEqual(self.cluster.metric("dtm_job_sparsify_stage", job_id=job, stage="train"), 1)
        self.assertEqual(self.cluster.metric("dtm_job_sparsify_stage", job_id=job, stage="probe"), 0)
        self.cluster.restart_coordinator()  # kill -9, then a new one on the same store
        rounds = self.finished(job)
        self.assertIsNone(self.cluster.metric("dtm_job_sparsify_round", job_id=job))  # gone with the run
        undisturbed = self.runs["balanced"][1]
        self.assertEqual(rounds[-1]["training"]["output_fingerprint"],
                         undisturbed[-1]["training"]["output_fingerprint"])
        for mine, theirs in zip(rounds, undisturbed):
            self.assertEqual(mine["training"]["losses"], theirs["training"]["losses"])
            self.assertEqual(mine["metrics"]["fdt75"], theirs["metrics"]["fdt75"])
        # The stage jobs submitted before the kill are the same jobs after it: the new coordinator
        # submitted only those after round 2's training.
        log = self.cluster.coordinator.log_text()
        self.assertEqual(log.count(f"job {job}: round 1 of 3: "), 0)
        self.assertEqual(log.count(f"job {job}: round 2 of 3: train: job"), 0)
        self.assertEqual(log.count(f"job {job}: round 3 of 3: train: job"), 1)

    def test_3_a_uniform_run_probes_nothing_and_prunes_every_component_alike(self):
        output = os.path.join(self.tmp, "run-uniform")
        job = self.submit("run-u.yaml", self.spec(output, allocation="uniform", schedule=[0.3, 0.2]))
        rounds = self.finished(job)
        self.assertEqual([r["probe_job_id"] for r in rounds], ["", ""])
        self.assertEqual({c["target"] for c in rounds[-1]["allocation"]["components"]}, {0.5})
        final = os.path.join(output, "final")
        for c in rounds[-1]["allocation"]["components"]:
            self.assertLessEqual(abs(zeros_of(final, c["component"]) - round(0.5 * c["params"])), 1, c["component"])
        print("\nbalanced run:\n" + self.cluster.dtmctl("results", self.runs["balanced"][0]).stdout +
              "uniform run:\n" + self.cluster.dtmctl("results", job).stdout, file=sys.stderr)

    def test_4_cancelling_a_run_cancels_its_stage_job(self):
        # Long enough a training that the cancel comes while it runs.
        job = self.submit("run-c.yaml", self.spec(os.path.join(self.tmp, "run-c"), schedule=[0.1], phases="masked:5000"))
        running = self.cluster.wait_job(job, timeout=120, until=lambda j: j.progress.sparsify_stage == "train")
        stage = running.progress.stage_job_id
        self.cluster.dtmctl("cancel", job)
        job_pb2 = dtm_cluster.load_stubs().job_pb2
        self.cluster.wait_job(stage, timeout=60, until=lambda j: j.state == job_pb2.JOB_STATE_CANCELLED)
        self.assertIn(job, self.cluster.get_job(stage).error.message)

    def test_5_bad_input_is_refused_at_submit_naming_it(self):
        out = os.path.join(self.tmp, "never")

        def refused(name, spec, *parts):
            proc = self.submit(name, spec, check=False)
            self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
            for part in parts:
                self.assertIn(part, proc.stderr)

        refused("sum.yaml", self.spec(out, schedule=[0.6, 0.4]), "sparsify.schedule", "sums to 100%")
        refused("negative.yaml", self.spec(out, schedule=[0.2, -0.1]), "sparsify.schedule[1]", "(0, 1)")
        refused("greedy.yaml", self.spec(out, allocation="greedy"), "sparsify.allocation", "balanced or uniform")
        refused("output.yaml", self.spec(out, train_extra="  output: /tmp/x\n"), "train.output",
                "set by each round")
        self.assertIn("balanced", self.runs, "needs test_1's run")
        other = {"allocation": copy.deepcopy(self.runs["balanced"][1][0]["allocation"])}
        for row in other["allocation"]["components"]:
            row["params"] *= 2
        path = os.path.join(self.tmp, "other-model.json")
        with open(path, "w") as f:
            json.dump(other, f)
        refused("other.yaml", self.spec(out, previous=path), "sparsify.previous", "another model")
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main(verbosity=2)
