"""Reused residual streams and shard affinity on real processes (worker/engine/activation_cache.h):
a real redis-server, dtm-coordinator and two dtm-workers over loopback, each keeping the streams of
the shards it evaluates under its default budget.

- A probe job whose worker is killed (-9) while it holds streams ends with exactly the metrics of the
  same job run by `dtmctl local --activation-cache-bytes 0` (every forward from the embedding): a
  lost cache costs time, never a number. The surviving worker's counters show the saving (fewer
  layer forwards than full forwards, batches started from kept streams) within its budget.
- A quant-search of llm-int8 nodes (outlier counts carried below a kept stream) on workers that
  keep streams, its level-2 tasks naming their parents (Task.parent_config), gives the same results
  as the same search without any cache. (Which layer each child starts at is unit-tested:
  tests/worker/engine/activation_cache_test.cc.)

- A quant-search with `racing:` states exactly what it skipped: its summary's probe evaluations are
  the probes of the nodes it lists, every drop follows the rule, with and without an epsilon
  (recomputed here from the nodes' FDT histograms with Python's own binomial sums), a dropped node's metrics are `dtmctl eval`'s on
  its first probes, and the last level's beam saw every probe.

The search_integration_test checks every node of a deeper search against `dtmctl eval` too, on
workers that keep streams by default. Run by CTest (reuse_integration_test) after the tiny_model
fixture.
"""
import json
import math
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 16
PREFIX = 16
COMPLETION = 32
SHARD = 8
LAYERS = 4
RACE_PROBES = 64


def fdt75_bounds(metrics, confidence, completion):
    """SPEC racing's order-statistic bounds on the 0.75 quantile, from the FDT histogram (an
    independent reading of coordinator/racing.h's rule)."""
    n = metrics["num_probes"]
    tail = [sum(math.comb(n, j) * 0.75 ** j * 0.25 ** (n - j) for j in range(k, n + 1)) for k in range(n + 2)]
    values = [v for v, count in enumerate(metrics["fdt_histogram"]) for _ in range(count)]
    lower = max((values[k - 1] for k in range(1, n + 1) if tail[k] >= confidence), default=0)
    upper = min((values[k - 1] for k in range(1, n + 1) if 1 - tail[k] >= confidence), default=completion)
    return lower, upper


def level_race(nodes, level, confidence, beam):
    """A search level's nodes, each one's fdt75 bounds by config, and the bar: the beam-th highest
    lower bound."""
    at = [r for r in nodes if r["search_level"] == level]
    bounds = {r["config"]: fdt75_bounds(r, confidence, COMPLETION) for r in at}
    bar = sorted((lo for lo, _ in bounds.values()), reverse=True)[beam - 1]
    return at, bounds, bar


def metrics_by_config(doc):
    """Every result row (its metrics, FDT histogram, level and rank) by config."""
    return {r["config"]: r for r in doc["results"]}


class ReuseTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)

    def spec(self, name, **fields):
        return self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(
            name=name, model=self.cluster.model, probes=self.ref.probes, prefix=PREFIX, completion=COMPLETION,
            shard_size=SHARD, **fields))

    def without_cache(self, spec):
        """The spec's results from `dtmctl local` on a fresh in-memory store, every forward full."""
        out = dtm_cluster.run_dtmctl("local", spec, "--store", "memory", "--format", "json", "--threads", 1,
                                     "--activation-cache-bytes", 0, timeout=900)
        self.assertIn("layer forwards:", out.stderr)
        self.assertIn("(0.0% saved", out.stderr)  # nothing reused: it is the full-forward reference
        # Where the command's time went: its wall time against the engine's (one worker: at most the wall).
        m = re.search(r"time: ([\d.]+) s in this command; its workers ran tasks for ([\d.]+) s and loaded models for "
                      r"([\d.]+) s", out.stderr)
        self.assertIsNotNone(m, out.stderr[-1000:])
        wall, tasks, load = (float(g) for g in m.groups())
        self.assertGreater(tasks, 0)
        self.assertGreater(load, 0)
        self.assertLessEqual(tasks + load, wall)
        return json.loads(out.stdout)

    def worker_counters(self, worker_id):
        samples = self.cluster.worker_metrics(worker_id)
        label = (("worker", worker_id),)
        return {name: samples[(name, label)] for name in (
            "dtm_worker_layer_forwards_total", "dtm_worker_full_layer_forwards_total",
            "dtm_worker_activation_cache_hits_total", "dtm_worker_activation_cache_misses_total",
            "dtm_worker_activation_cache_bytes", "dtm_worker_activation_cache_budget_bytes")}

    def test_a_killed_worker_loses_only_time(self):
        globs = [f"model.layers.{layer}.*" for layer in range(LAYERS)]
        spec = self.spec("probe", kind="probe", probe={"methods": ["int8-absmax", "llm-int8"], "components": globs})
        before = self.worker_counters("w2")
        job_id = self.cluster.dtmctl("submit", spec).stdout.strip()
        # Once a fifth of the tasks are in, w1 holds streams of the shards it evaluated: kill it.
        self.cluster.wait_job(job_id, timeout=600,
                              until=lambda job: job.progress.tasks_done * 5 >= max(job.progress.tasks_total, 1)
                              and job.progress.tasks_total > 0)
        self.cluster.kill_worker("w1")
        self.addCleanup(self.cluster.start_worker, "w1")
        doc = self.succeeded(job_id, timeout=600)
        expected = self.without_cache(spec)
        self.assertEqual(len(doc["results"]), LAYERS * 7 * 2)  # every (component, method)
        self.assertEqual(metrics_by_config(doc), metrics_by_config(expected))
        self.assertEqual(doc["noise_floor"], expected["noise_floor"])

        after = self.worker_counters("w2")
        ran = {k: after[k] - before[k] for k in after if k.endswith("_total")}
        self.assertGreater(ran["dtm_worker_full_layer_forwards_total"], 0)
        # A one-component config at layer L runs LAYERS - L of the model's layers once the shard's
        # uncompressed streams are kept: well under the full forwards over the job.
        self.assertLess(ran["dtm_worker_layer_forwards_total"], 0.8 * ran["dtm_worker_full_layer_forwards_total"])
        self.assertGreater(ran["dtm_worker_activation_cache_hits_total"], 0)
        self.assertGreater(after["dtm_worker_activation_cache_budget_bytes"], 0)
        self.assertLessEqual(after["dtm_worker_activation_cache_bytes"], after["dtm_worker_activation_cache_budget_bytes"])

    def test_search_children_reuse_their_parents_streams(self):
        components = dtm_cluster.component_names(2)
        spec = self.spec("search", kind="quant-search",
                         **{"quant-search": {"method": "llm-int8", "beam": 2, "depth": 2, "components": components}})
        before = {w: self.worker_counters(w) for w in ("w1", "w2")}
        doc = self.succeeded(self.cluster.dtmctl("submit", spec).stdout.strip(), timeout=600)
        self.assertEqual(metrics_by_config(doc), metrics_by_config(self.without_cache(spec)))
        after = {w: self.worker_counters(w) for w in ("w1", "w2")}
        saved = sum((after[w]["dtm_worker_full_layer_forwards_total"] - after[w]["dtm_worker_layer_forwards_total"])
                    - (before[w]["dtm_worker_full_layer_forwards_total"] - before[w]["dtm_worker_layer_forwards_total"])
                    for w in ("w1", "w2"))
        self.assertGreater(saved, 0)

    def race(self, ref, name, confidence, beam, epsilon):
        """A depth-2 quant-search raced on `ref`'s probes: its results with every node."""
        spec = self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(
            name=name, model=self.cluster.model, probes=ref.probes, prefix=PREFIX, completion=COMPLETION,
            shard_size=SHARD, kind="quant-search",
            **{"quant-search": {"method": "prune:0.85", "beam": beam, "depth": 2,
                                "racing": {"first": SHARD, "step": SHARD, "confidence": confidence,
                                           "epsilon": epsilon}}}))
        job_id = self.cluster.dtmctl("submit", spec).stdout.strip()
        self.succeeded(job_id, timeout=900)
        return json.loads(self.cluster.dtmctl("results", job_id, "--all-nodes", "--format", "json").stdout)

    def test_racing_states_exactly_what_it_skipped(self):
        ref = dtm_cluster.Reference(os.path.join(self.cluster.tmp, "race"), RACE_PROBES, PREFIX, COMPLETION,
                                    threads=1)
        confidence, beam = 0.8, 2
        doc = self.race(ref, "race", confidence, beam, 0)
        nodes = [r for r in doc["results"] if r["config"]]
        racing = doc["racing"]
        # What it spent is the probes of the nodes it lists; the exact search, the same nodes on all.
        self.assertEqual(racing["probe_evaluations"], sum(r["num_probes"] for r in nodes))
        self.assertEqual(racing["exact_probe_evaluations"], RACE_PROBES * len(nodes))
        self.assertLess(racing["probe_evaluations"], racing["exact_probe_evaluations"])
        dropped = [r for r in nodes if r.get("dropped_by_racing")]
        self.assertGreater(len(dropped), 0)
        self.assertEqual(racing["nodes_dropped"], len(dropped))
        counts = {}
        for r in dropped:
            counts[r["num_probes"]] = counts.get(r["num_probes"], 0) + 1
        self.assertEqual(racing["drops"], [{"probes": p, "nodes": n} for p, n in sorted(counts.items())])
        self.assertEqual(sum(level["nodes_dropped"] for level in doc["search_levels"]), len(dropped))
        # Every level's drops follow the rule: upper bound below the beam-th best lower bound.
        for level in (1, 2):
            at, bounds, bar = level_race(nodes, level, confidence, beam)
            for r in at:
                self.assertEqual(bool(r.get("dropped_by_racing")), bounds[r["config"]][1] < bar, r["config"])
                if r.get("dropped_by_racing"):
                    self.assertFalse(r["complete"])
                    self.assertLess(r["num_probes"], RACE_PROBES)
                    self.assertNotIn("rank", r)
            if level == 2:  # the search's answer saw every probe
                for r in at:
                    if "rank" in r:
                        self.assertEqual(r["num_probes"], RACE_PROBES)
                        self.assertTrue(r["complete"])
        # With an epsilon of 2 tokens (the same search, its shards now cached): the leaders by lower
        # bound (then fdt75, then fdt_mean) keep their places, and any other node short of every probe
        # whose upper bound is below the bar + 2 is dropped; it spends less than the strict race (912
        # probe evaluations against 4,136 when written).
        epsilon = 2
        loose = self.race(ref, "race-epsilon", confidence, beam, epsilon)
        self.assertEqual(loose["racing"]["epsilon"], epsilon)
        self.assertLess(loose["racing"]["probe_evaluations"], racing["probe_evaluations"])
        loose_nodes = [r for r in loose["results"] if r["config"]]
        for level in (1, 2):
            at, bounds, bar = level_race(loose_nodes, level, confidence, beam)
            key = {r["config"]: (bounds[r["config"]][0], r["fdt75"], r["fdt_mean"]) for r in at}
            for r in at:
                c = r["config"]
                above = sum(1 for other in at if key[other["config"]] > key[c])  # surely ahead of it
                level_with = sum(1 for other in at if key[other["config"]] >= key[c]) - 1  # ahead or tied
                droppable = bounds[c][1] < bar + epsilon and r["num_probes"] < RACE_PROBES
                if r.get("dropped_by_racing"):
                    self.assertTrue(droppable, c)
                    self.assertGreaterEqual(level_with, beam, c)  # not a leader
                elif droppable:
                    self.assertLess(above, beam, c)  # kept only as a leader
        # A dropped node's metrics are dtmctl eval's on the first probes it saw.
        for r in dropped[:2]:
            first = os.path.join(self.cluster.tmp, f"baseline-{r['num_probes']}.jsonl")
            with open(first, "w") as f:
                for row in ref.baseline_rows[:r["num_probes"]]:
                    f.write(json.dumps(row) + "\n")
            expected = json.loads(dtm_cluster.run_dtmctl("eval", "--model", self.cluster.model, "--baseline", first,
                                                          "--compress", r["config"], "--threads", 1,
                                                          "--no-noise-floor").stdout)
            self.assertEqual(r["fdt_histogram"], expected["fdt_histogram"], r["config"])
            self.assertEqual(r["fdt75"], expected["fdt75"], r["config"])
            self.assertEqual(r["num_probes"], len(expected["per_probe"]), r["config"])


if __name__ == "__main__":
    unittest.main()
