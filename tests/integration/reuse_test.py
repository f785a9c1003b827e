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

The search_integration_test checks every node of a deeper search against `dtmctl eval` too, on
workers that keep streams by default. Run by CTest (reuse_integration_test) after the tiny_model
fixture.
"""
import json
import os
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


if __name__ == "__main__":
    unittest.main()
