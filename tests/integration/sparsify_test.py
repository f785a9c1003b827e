"""The balanced sparsification round on the tiny model, end to end: a real redis-server,
dtm-coordinator and two dtm-workers over loopback, then a second round with `dtmctl local`.

Checked independently of the coordinator's code:
- the round's probes are every component at step/2 and 3*step/2 (the paper's), and their numbers equal
  `dtmctl eval` of the same configs;
- the component sizes are the tiny model's shapes from its config.json;
- each predicted FDT75 is SPEC's interpolation of the probes, recomputed here in Python;
- the allocation's parameter-weighted average increase equals the step, and so does the sparsity
  measured in the checkpoint that `dtmctl apply` writes from `dtmctl export-config`;
- the uniform baseline from the same probes costs nothing (all from the cache) and does not beat
  the balanced allocation's smallest predicted FDT75;
- round 2, on round 1's pruned checkpoint with round 1's results as `previous:`, starts from round 1's
  targets and ends at the sum of the two steps;
- bad rounds are refused at submit: a step beyond what is left, a previous round of another model,
  a filter matching nothing.

Run by CTest (sparsify_integration_test) after the tiny_model fixture.
"""
import array
import copy
import glob
import json
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 16
PREFIX = 16
COMPLETION = 48
SHARD = 8
# Large steps: the tiny model's FDT75 on 16 probes of 48 tokens only falls below 48 past ~40% pruning
# of a component, and an allocation over flat curves would prove little.
STEP = 0.5
STEP2 = 0.2
LAYERS = 4
COMPONENTS = dtm_cluster.component_names(LAYERS)
JOB_TIMEOUT_S = 900


def expected_params(model_dir):
    """Weights per component from config.json's shapes (Llama: q/o hidden x heads*head_dim, k/v
    hidden x kv_heads*head_dim, MLP hidden x intermediate)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    q = c["hidden_size"] * c["num_attention_heads"] * head_dim
    kv = c["hidden_size"] * c.get("num_key_value_heads", c["num_attention_heads"]) * head_dim
    mlp = c["hidden_size"] * c["intermediate_size"]
    sizes = {"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv, "self_attn.o_proj": q,
             "mlp.gate_proj": mlp, "mlp.up_proj": mlp, "mlp.down_proj": mlp}
    return {name: sizes[name.split(".", 3)[3]] for name in COMPONENTS}


def interpolate(points, s):
    """SPEC: the curve through (0, completion), the probes and (room, 0), made non-increasing,
    linear in between."""
    xs, ys = [], []
    running = float("inf")
    for x, y in sorted(points):
        running = min(running, y)
        if xs and x == xs[-1]:
            ys[-1] = running
        else:
            xs.append(x)
            ys.append(running)
    if s <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if s <= x1:
            return y0 + (y1 - y0) * (s - x0) / (x1 - x0)
    return ys[-1]


def measured_sparsity(model_dir):
    """{component: fraction of exact zeros in its weight}, read from the safetensors files."""
    zeros = {}
    for path in glob.glob(os.path.join(model_dir, "*.safetensors")):
        with open(path, "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        body = data[8 + n:]
        for name, info in header.items():
            component = name[:-len(".weight")] if name.endswith(".weight") else None
            if component not in COMPONENTS:
                continue
            assert info["dtype"] == "F32", f"{name} is {info['dtype']}; the test reads F32"
            values = array.array("f")
            begin, end = info["data_offsets"]
            values.frombytes(body[begin:end])
            zeros[component] = values.count(0.0) / len(values)
    return zeros


class SparsifyRoundTest(dtm_cluster.ClusterTestCase):
    round1 = None  # (job id, results JSON, pruned checkpoint) once test_1 has run

    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        cls.params = expected_params(cls.cluster.model)

    def round_spec(self, name, model=None, **section):
        return self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(
            name=name, kind="sparsify-round", model=model or self.cluster.model, probes=self.ref.probes,
            prefix=PREFIX, completion=COMPLETION, shard_size=SHARD, **{"sparsify-round": section}))

    def run_round(self, spec):
        job_id = self.cluster.dtmctl("submit", spec).stdout.strip()
        self.cluster.dtmctl("watch", job_id, timeout=JOB_TIMEOUT_S)
        doc = json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)
        self.assertEqual(doc["state"], "SUCCEEDED")
        return job_id, doc

    def assert_allocation_sound(self, doc, step, current):
        """The allocation's rows against the probes (re-interpolated here), the sizes and the step."""
        alloc = doc["allocation"]
        self.assertEqual(alloc["step"], step)
        self.assertEqual(alloc["completion_len"], COMPLETION)
        self.assertEqual(alloc["num_layers"], LAYERS)
        self.assertEqual([row["component"] for row in alloc["components"]], COMPONENTS)
        probes = {}
        for row in doc["results"]:
            component, target = row["config"].split("=prune:")
            probes.setdefault(component, []).append((float(target) - current[component], row["fdt75"]))
        weighted = 0.0
        for row in alloc["components"]:
            name = row["component"]
            with self.subTest(component=name):
                self.assertEqual(row["params"], self.params[name])
                self.assertEqual(row["current"], current[name])
                self.assertAlmostEqual(row["target"], row["current"] + row["extra"], delta=1e-12)
                self.assertGreaterEqual(row["extra"], 0)
                room = 1 - current[name]
                points = [(0.0, float(COMPLETION)), *probes[name], (room, 0.0)]
                self.assertAlmostEqual(row["predicted_fdt75"], interpolate(points, row["extra"]), delta=1e-6)
                self.assertGreaterEqual(row["predicted_fdt75"], alloc["min_fdt75"] - 1e-9)
            weighted += row["extra"] * row["params"]
        increase = weighted / sum(self.params.values())
        self.assertAlmostEqual(increase, step, delta=1e-6)
        self.assertAlmostEqual(alloc["achieved_step"], step, delta=1e-6)
        self.assertAlmostEqual(alloc["min_fdt75"], min(r["predicted_fdt75"] for r in alloc["components"]), delta=1e-9)
        return increase

    def write_json(self, name, doc):
        """`doc` as a file in the cluster's folder, e.g. a round's results for the next one's `previous:`."""
        path = os.path.join(self.cluster.tmp, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def apply_and_measure(self, job_id, out_name, model):
        config = self.cluster.dtmctl("export-config", job_id).stdout.strip()
        out = os.path.join(self.cluster.tmp, out_name)
        dtm_cluster.run_dtmctl("apply", "--model", model, "--config", config, "--out", out)
        return out, measured_sparsity(out)

    def test_1_round_on_the_dense_model_prunes_the_step_on_average(self):
        job_id, doc = self.run_round(self.round_spec("round 1", step=STEP))
        # The probes: every component at step/2 and 3*step/2, equal to dtmctl eval's numbers.
        configs = [row["config"] for row in doc["results"]]
        self.assertEqual(configs, [f"{c}=prune:{t}" for c in COMPONENTS for t in ("0.25", "0.75")])
        self.assertTrue(any(row["fdt75"] < COMPLETION for row in doc["results"]), "every probe curve is flat")
        sample = configs[::17]
        ref = self.ref.eval_many(sample)
        for row in doc["results"]:
            if row["config"] in sample:
                want = ref[row["config"]]
                self.assertEqual((row["fdt75"], row["fdt_mean"], row["sdt_mean"]),
                                 (want["fdt75"], want["fdt_mean"], want["sdt_mean"]), row["config"])
        self.assert_allocation_sound(doc, STEP, {c: 0.0 for c in COMPONENTS})
        job = self.cluster.get_job(job_id)
        self.assertEqual(doc["allocation"]["model_fingerprint"], job.summary.model_fingerprint)
        table = self.cluster.dtmctl("results", job_id).stdout
        self.assertIn("balanced allocation: step 50%", table)
        extras = [row["extra"] for row in doc["allocation"]["components"]]
        self.assertGreater(max(extras) - min(extras), 0.01, "the balanced allocation is uniform")

        # The written checkpoint holds the allocation: its measured sparsity averages to the step.
        pruned, zeros = self.apply_and_measure(job_id, "round1-model", self.cluster.model)
        targets = {row["component"]: row["target"] for row in doc["allocation"]["components"]}
        for name in COMPONENTS:
            self.assertAlmostEqual(zeros[name], targets[name], delta=1.0 / self.params[name] + 1e-12, msg=name)
        measured = sum(zeros[c] * self.params[c] for c in COMPONENTS) / sum(self.params.values())
        print(f"\nround 1: min predicted fdt75 {doc['allocation']['min_fdt75']:.2f} of {COMPLETION}, "
              f"measured average sparsity {measured:.6f} (step {STEP})", file=sys.stderr)
        self.assertAlmostEqual(measured, STEP, delta=1e-4)
        type(self).round1 = (job_id, doc, pruned)

    def test_2_uniform_baseline_reuses_the_probes_and_does_no_better(self):
        self.assertIsNotNone(self.round1, "needs test_1's round")
        job_id, doc = self.run_round(self.round_spec("round 1 uniform", step=STEP, allocation="uniform"))
        job = self.cluster.get_job(job_id)
        self.assertEqual(job.progress.tasks_cached, job.progress.tasks_total)
        self.assertEqual(doc["allocation"]["method"], "uniform")
        self.assertEqual({row["extra"] for row in doc["allocation"]["components"]}, {STEP})
        self.assert_allocation_sound(doc, STEP, {c: 0.0 for c in COMPONENTS})
        balanced = self.round1[1]["allocation"]["min_fdt75"]
        print(f"\nuniform min predicted fdt75 {doc['allocation']['min_fdt75']:.2f}, balanced {balanced:.2f}",
              file=sys.stderr)
        self.assertLessEqual(doc["allocation"]["min_fdt75"], balanced + 1e-9)

    def test_3_bad_rounds_are_refused_at_submit(self):
        self.assertIsNotNone(self.round1, "needs test_1's round")
        _, doc, _ = self.round1
        previous = self.write_json("round1.json", doc)

        def refused(spec, *parts):
            proc = self.cluster.dtmctl("submit", spec, check=False)
            self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
            for part in parts:
                self.assertIn(part, proc.stderr)

        refused(self.round_spec("too far", step=0.95, previous=previous),
                "sparsify-round.step: 95% exceeds what is left to prune", "leaving 50%")
        other = copy.deepcopy(doc)
        for row in other["allocation"]["components"]:
            row["params"] *= 2
        other_path = self.write_json("other-model-round.json", other)
        refused(self.round_spec("other model", step=STEP, previous=other_path),
                "sparsify-round.previous", "the file is for another model")
        refused(self.round_spec("no match", step=STEP, components=["*.lm_head"]),
                "sparsify-round.components[0] '*.lm_head': matches no component")
        refused(self.round_spec("no step", allocation="balanced"), "sparsify-round.step")

    def test_4_second_round_on_the_pruned_model_adds_its_step(self):
        self.assertIsNotNone(self.round1, "needs test_1's round")
        _, doc, pruned = self.round1
        previous = self.write_json("round1-for-round2.json", doc)
        spec = self.round_spec("round 2", model=pruned, step=STEP2, previous=previous)
        # The embedded default: coordinator and workers in one process, on the pruned checkpoint.
        proc = dtm_cluster.run_dtmctl("local", spec, "--workers", "2", "--format", "json", timeout=JOB_TIMEOUT_S)
        round2 = json.loads(proc.stdout)
        current = {row["component"]: row["target"] for row in doc["allocation"]["components"]}
        self.assert_allocation_sound(round2, STEP2, current)
        total = sum(row["target"] * row["params"] for row in round2["allocation"]["components"])
        self.assertAlmostEqual(total / sum(self.params.values()), STEP + STEP2, delta=1e-6)
        print(f"\nround 2: min predicted fdt75 {round2['allocation']['min_fdt75']:.2f} of {COMPLETION}",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
