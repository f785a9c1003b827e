"""Recovery training as a service job, end to end: a real redis-server, dtm-coordinator and two
dtm-workers over loopback train the tiny model as a gang of two (Gloo), as issue 14 asks.

Checked against what does not share the service's code path:
- the job's loss curve equals `dtmctl train` in one process with the same global batch (1e-5
  relative per step), and the pruned weights are still exactly 0 in the trained model;
- kill -9 of one member mid-run: the other member's attempt ends within the gang's timeout (no
  hang), the task waits for a gang again, resumes from the run's checkpoint once the worker is back,
  and the job's trained model is the undisturbed job's bit for bit (same fingerprint); the same
  after kill -9 of the coordinator mid-run (the old gang stops, a new one resumes);
- the trained model is a model like any other: an evaluate job names it by its output path, and a
  worker started with --model-root loads it because the job needs it, and two such workers both load
  it for a train job of two that trains it again; a path under the root that
  leads outside it (a symlink) is refused by the worker, and the job fails saying so;
- bad input: an output folder in use and a spec field that does not apply are refused at submit;
  unusable data and a seq_len beyond the model's positions fail the job naming the cause, leaving
  no output folder; a gang larger than the workers that serve the model fails after the model wait.

Run by CTest (train_integration_test) after the tiny_model fixture. About a minute on 2 cores.
"""
import json
import os
import re
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

# 24 steps of 4 sequences of 64 tokens: long enough to kill a member mid-run, short for CI.
STEPS_MASKED, STEPS_UNMASKED = 16, 8
SETTINGS = {"batch": 4, "seq_len": 64, "max_sequences": 48, "lr": 2e-3, "checkpoint_every": 4}
PRUNED = ["model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"]
MODEL_WAIT_S = 8
GANG_TIMEOUT_S = 20


def train_spec(data, output, workers=2, **overrides):
    fields = dict(SETTINGS, data=data, output=output, workers=workers,
                  phases=f"masked:{STEPS_MASKED},unmasked:{STEPS_UNMASKED}", timeout_seconds=GANG_TIMEOUT_S)
    fields.update(overrides)
    body = "".join(f"  {k}: {json.dumps(v) if isinstance(v, (str, bool)) else v}\n" for k, v in fields.items())
    return f"kind: train\nmodel: {TrainTest.model}\ntrain:\n{body}"


def zeros_of(model_dir, name):
    """Indices of the exact zeros of a float32 tensor in MODEL/model.safetensors."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        begin, end = header[name + ".weight"]["data_offsets"]
        f.seek(8 + size + begin)
        values = struct.unpack(f"<{(end - begin) // 4}f", f.read(end - begin))
    return {i for i, v in enumerate(values) if v == 0.0}


class TrainTest(dtm_cluster.ClusterTestCase):
    model = None

    @classmethod
    def new_cluster(cls):
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="dtm-train-test-")
        text = os.path.join(cls.tmp, "brown.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "train", "--out", text)
        cls.data = os.path.join(cls.tmp, "c4-like.jsonl")
        with open(text) as src, open(cls.data, "w") as out:
            for line in src:
                if line.strip():
                    out.write(json.dumps({"text": line.strip()}) + "\n")
        cls.model = os.path.join(cls.tmp, "pruned")
        dtm_cluster.run_dtmctl("apply", "--model", dtm_cluster.MODEL, "--config",
                               ",".join(f"{c}=prune:0.5" for c in PRUNED), "--out", cls.model)
        return dtm_cluster.Cluster(num_workers=2, model=cls.model,
                                   coordinator_args=["--model-wait-seconds", str(MODEL_WAIT_S)])

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def submit(self, name, spec):
        path = self.cluster.write_spec(name, spec)
        return self.cluster.dtmctl("submit", path).stdout.strip()

    def finished(self, job_id, timeout=300):
        return self.succeeded(job_id, timeout)["training"]

    def test_1_a_gang_trains_as_one_process_does(self):
        out = os.path.join(self.tmp, "gang-out")
        job = self.submit("train.yaml", train_spec(self.data, out))
        training = self.finished(job)
        type(self).undisturbed = training
        self.assertEqual(training["steps"], STEPS_MASKED + STEPS_UNMASKED)
        self.assertEqual(training["gang_size"], 2)
        self.assertEqual(training["output_dir"], out)
        # One process with the same global batch: the same curve.
        alone = json.loads(dtm_cluster.run_dtmctl(
            "train", "--model", self.model, "--data", self.data, "--out", os.path.join(self.tmp, "alone"),
            "--phases", f"masked:{STEPS_MASKED},unmasked:{STEPS_UNMASKED}", "--batch", "4", "--seq-len", "64",
            "--max-sequences", "48", "--lr", "2e-3", "--threads", "1").stdout)
        self.assertEqual(len(alone["losses"]), len(training["losses"]))
        for step, (a, b) in enumerate(zip(training["losses"], alone["losses"])):
            self.assertAlmostEqual(a, b, delta=1e-5 * b, msg=f"step {step + 1}")
        self.assertLess(sum(training["losses"][-4:]), sum(training["losses"][:4]))  # it learns
        self.assertEqual(training["data_fingerprint"], alone["data"]["fingerprint"])
        # The unmasked phase lets pruned weights move; the run's masks were the model's zeros.
        self.assertEqual(training["masked_weights"], alone["pruned_entries"])
        csv = self.cluster.dtmctl("results", job, "--format", "csv").stdout
        self.assertEqual(csv.splitlines()[0], "step,loss")
        self.assertEqual(len(csv.splitlines()) - 1, STEPS_MASKED + STEPS_UNMASKED)

    def test_2_a_killed_member_ends_the_attempt_and_the_run_resumes_from_its_checkpoint(self):
        out = os.path.join(self.tmp, "killed-out")
        job = self.submit("train-kill.yaml", train_spec(self.data, out))
        # Past the first checkpoint (step 4), before the end.
        self.cluster.wait_job(job, timeout=120, until=lambda j: j.progress.train_step >= 6)
        # Prometheus sees the run: its step and loss, and its one gang task as leased.
        metrics = self.cluster.metrics()
        self.assertGreaterEqual(metrics[("dtm_job_train_step", (("job_id", job),))], 6)
        self.assertGreater(metrics[("dtm_job_train_loss", (("job_id", job),))], 0)
        self.assertGreaterEqual(metrics[("dtm_tasks", (("state", "leased"),))], 1)
        log_w1 = self.cluster.workers["w1"].count_log(r"dropped|failed after")
        killed_at = time.monotonic()
        self.cluster.kill_worker("w2")
        # The survivor's attempt ends (the coordinator revokes it, or its collective fails) well within the timeout.
        self.cluster.workers["w1"].wait_for_log(r"task \w+ lease \S+ job \S+: (result dropped|failed after|dropped)",
                                                timeout=GANG_TIMEOUT_S + 10, after=log_w1,
                                                what="the surviving member's attempt ending")
        self.assertLess(time.monotonic() - killed_at, GANG_TIMEOUT_S + 10)
        waiting = self.cluster.wait_job(job, timeout=30, until=lambda j: "waiting" in j.progress.message)
        self.assertGreaterEqual(waiting.progress.tasks_requeued, 1)
        self.cluster.start_worker("w2")
        training = self.finished(job)
        self.assertIsNone(self.cluster.metric("dtm_job_train_step", job_id=job))  # gone with the job
        self.assertGreater(training["resumed_from_step"], 0)
        self.assertEqual(training["losses"], self.undisturbed["losses"])
        self.assertEqual(training["output_fingerprint"], self.undisturbed["output_fingerprint"])
        for name in PRUNED:  # masked phase then unmasked: the zeros moved, but the files hold the trained weights
            self.assertLess(len(zeros_of(out, name)), len(zeros_of(self.model, name)))

    def test_2b_a_coordinator_killed_mid_run_resumes_it_from_the_checkpoint(self):
        out = os.path.join(self.tmp, "restart-out")
        job = self.submit("train-restart.yaml", train_spec(self.data, out))
        self.cluster.wait_job(job, timeout=120, until=lambda j: j.progress.train_step >= 6)
        self.cluster.restart_coordinator()  # kill -9, then a new one on the same store
        training = self.finished(job)
        # The old gang's members stop (the new coordinator never formed their gang) and a new gang
        # resumes from the checkpoint; or, when the old gang finished before its members heard of
        # the new coordinator (a slow restart), the new gang finds the model it wrote and adopts it
        # (resumed at the last step). Either way the model is the undisturbed one bit for bit.
        adopted = training["resumed_from_step"] == training["steps"]
        log = self.cluster.workers["w1"].log_text() + self.cluster.workers["w2"].log_text()
        self.assertEqual(adopted, "already holds this run's trained model" in log)
        self.assertGreater(training["resumed_from_step"], 0)
        self.assertEqual(training["losses"], self.undisturbed["losses"])
        self.assertEqual(training["output_fingerprint"], self.undisturbed["output_fingerprint"])

    def test_2c_a_job_prunes_to_its_targets_before_training_and_remasks_after(self):
        # A sparsification run's last round: every member prunes by magnitude, trains masked then
        # unmasked, and the masks are put back before the model is written.
        out = os.path.join(self.tmp, "prune-out")
        target = 0.7
        component = PRUNED[0]  # 50 % pruned in the job's model
        training = self.finished(self.submit("prune.yaml", train_spec(
            self.data, out, phases="masked:2,unmasked:2", prune=f"{component}=prune:{target}", remask=True)))
        self.assertEqual(training["steps"], 4)
        with open(os.path.join(dtm_cluster.MODEL, "config.json")) as f:
            config = json.load(f)
        entries = config["hidden_size"] * config["intermediate_size"]
        self.assertEqual(len(zeros_of(out, component)), round(target * entries))
        self.assertTrue(zeros_of(self.model, component) <= zeros_of(out, component))

    def test_3_a_worker_under_a_model_root_loads_the_trained_model_when_a_job_names_it(self):
        out = os.path.join(self.tmp, "gang-out")
        # Serves the pruned model until a job needs another under its root; takes no train task.
        self.cluster.worker_args = {"w-root": ["--model-root", self.tmp, "--gang-address", ""]}
        self.cluster.start_worker("w-root")
        probes = os.path.join(self.tmp, "probes.jsonl")
        text = os.path.join(self.tmp, "held-out.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "held-out", "--out", text)
        dtm_cluster.run_dtmctl("make-probes", "--model", out, "--corpus", text, "--count", "4", "--prefix", "8",
                               "--out", probes)

        def evaluate(name, model):
            spec = f"kind: evaluate\nmodel: {model}\nprobes: {probes}\nprefix: 8\ncompletion: 8\nevaluate:\n" \
                   f"  configs: [\"{PRUNED[0]}=int8-absmax\"]\n"
            return self.cluster.wait_job(self.submit(name, spec), timeout=MODEL_WAIT_S + 120)

        done = evaluate("eval-trained.yaml", out)
        self.assertEqual(done.state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_SUCCEEDED, done.error.message)
        self.assertEqual(done.summary.model_fingerprint, self.undisturbed["output_fingerprint"])
        self.assertRegex(self.cluster.workers["w-root"].log_text(), r"now serving " + re.escape(out))
        # A path under the root that leads outside it (a symlink): the worker refuses, the coordinator
        # does not ask again, and the job fails after the model wait saying why.
        link = os.path.join(self.tmp, "link-to-outside")
        os.symlink(dtm_cluster.MODEL, link)
        refused = evaluate("eval-outside.yaml", link)
        self.assertEqual(refused.state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_FAILED)
        self.assertIn("refused it: w-root", refused.error.message)
        self.assertIn("outside --model-root", refused.error.message)
        self.assertEqual(self.cluster.workers["w-root"].count_log(r"refused to load " + re.escape(link)), 1)
        self.cluster.kill_worker("w-root")
        self.cluster.worker_args = ()

    def test_3b_a_gang_of_workers_under_a_model_root_loads_the_model_it_trains(self):
        # Round r+1 of a sparsification run trains round r's model, which nobody serves yet: as many
        # workers with --model-root switch to it as the gang needs.
        trained = os.path.join(self.tmp, "gang-out")
        self.cluster.worker_args = {w: ["--model-root", self.tmp] for w in ("w-gang-a", "w-gang-b")}
        for worker in ("w-gang-a", "w-gang-b"):
            self.cluster.start_worker(worker)
        out = os.path.join(self.tmp, "retrained")
        spec = train_spec(self.data, out, phases="masked:2").replace(f"model: {self.model}", f"model: {trained}")
        job = self.submit("retrain.yaml", spec)
        training = self.finished(job)
        self.assertEqual(training["steps"], 2)
        self.assertEqual(self.cluster.get_job(job).summary.model_fingerprint, self.undisturbed["output_fingerprint"])
        for worker in ("w-gang-a", "w-gang-b"):
            self.assertRegex(self.cluster.workers[worker].log_text(), r"now serving " + re.escape(trained))
            self.cluster.kill_worker(worker)
        self.cluster.worker_args = ()

    def test_4_bad_input_is_refused_or_fails_the_job_naming_it(self):
        used = os.path.join(self.tmp, "gang-out")  # holds test 1's model
        proc = self.cluster.dtmctl("submit", self.cluster.write_spec("used.yaml", train_spec(self.data, used)),
                                   check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("train.output", proc.stderr)
        self.assertIn("not an empty folder", proc.stderr)
        proc = self.cluster.dtmctl("submit", self.cluster.write_spec(
            "probes.yaml", "probes: p.jsonl\n" + train_spec(self.data, os.path.join(self.tmp, "x"))), check=False)
        self.assertIn("does not apply to kind train", proc.stderr)

        empty = os.path.join(self.tmp, "empty.jsonl")
        with open(empty, "w") as f:
            f.write('{"text": "   "}\n\n')
        for name, spec, cause in [
                ("no-text", train_spec(empty, os.path.join(self.tmp, "no-text-out")), "fewer than one sequence"),
                ("too-long", train_spec(self.data, os.path.join(self.tmp, "too-long-out"), seq_len=100000),
                 "exceeds the model's positions"),
        ]:
            job = self.submit(name + ".yaml", spec)
            ended = self.cluster.wait_job(job, timeout=120)
            self.assertEqual(ended.state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_FAILED, name)
            self.assertIn(cause, ended.error.message, name)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, name + "-out")), name)

        # A prune of layers the model does not have fails the job once the model is known.
        job = self.submit("prune-layer.yaml", train_spec(self.data, os.path.join(self.tmp, "prune-layer-out"),
                                                         prune="model.layers.9.mlp.up_proj=prune:0.5"))
        ended = self.cluster.wait_job(job, timeout=60)
        self.assertEqual(ended.state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_FAILED)
        self.assertIn("train.prune", ended.error.message)

        job = self.submit("three.yaml", train_spec(self.data, os.path.join(self.tmp, "three-out"), workers=3, batch=6))
        ended = self.cluster.wait_job(job, timeout=MODEL_WAIT_S + 60)
        self.assertEqual(ended.state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_FAILED)
        self.assertRegex(ended.error.message, r"train\.workers: only 2 of the 3 workers")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "three-out")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
