"""Ground-truth perplexity inside jobs (issue 12, items 2 and 3; SPEC `ppl`), end to end on real
redis-server, dtm-coordinator and two dtm-workers (the tiny model, loopback).

Checks:
  - a job's `ppl:` gives every config (and the noise floor) the perplexity `dtmctl ppl --text` prints
    for it, for two window lengths, and the windows count it prints;
  - the same job again computes nothing: the text's windows and every window shard are cache hits;
  - quant-searches ranked by `ppl` and by `dppl` each keep, at every level, the best `beam` of the
    children of the level above, as an exhaustive ranking of those children by that metric computed
    by `dtmctl ppl` / `dtmctl eval` alone (ties by the config string) gives them.

`dtmctl ppl` is the independent computation here: the engine run in one process, without the
coordinator's planning, sharding, caching or aggregation (tests/cli/dtmctl_ppl_test.py checks it
against a NumPy float64 forward). The job runs the windows in other batches and sums them in another
order, so the two agree to REL_TOL relative, not bit for bit; the largest difference seen is printed.

Run by CTest (ppl_integration_test) after the tiny_model fixture.
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 8
PREFIX = 8
COMPLETION = 24
SHARD = 4
LINES = 40  # held-out Brown sentences: about 1,800 tokens once joined
WINDOWS = (64, 128)
PPL_SHARD = 5
CONFIGS = ["model.layers.0.mlp.down_proj=int8-absmax,model.layers.3.self_attn.o_proj=prune:0.5",
           "model.layers.2.mlp.up_proj=random-prune:0.2:3"]
LAYERS = 4
COMPONENTS = dtm_cluster.component_names(LAYERS)
BEAM = 2
DEPTH = 2
SEARCH_WINDOW = 128
REL_TOL = 1e-6
JOB_TIMEOUT_S = 900


class PplTest(dtm_cluster.ClusterTestCase):
    max_rel_diff = 0.0

    @classmethod
    def tearDownClass(cls):
        print(f"\nmax relative |job - dtmctl| / dtmctl over ppl and dppl: {cls.max_rel_diff:.3g}", file=sys.stderr)
        super().tearDownClass()

    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        with open(os.path.join(cls.ref.dir, "held-out.txt"), encoding="utf-8") as f:
            lines = f.read().splitlines()[:LINES]
        cls.text = os.path.join(cls.cluster.tmp, "ppl-text.txt")
        with open(cls.text, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        cls._ppl = {}

    def ppl(self, config, window):
        """`dtmctl ppl --text`'s JSON for `config` ("" = the uncompressed model)."""
        if (config, window) not in self._ppl:
            self._ppl[config, window] = json.loads(dtm_cluster.run_dtmctl(
                "ppl", "--model", self.cluster.model, "--text", self.text, "--window", window, "--compress", config,
                "--threads", "1").stdout)
        return self._ppl[config, window]

    def ppl_many(self, configs, window):
        """ppl() of each config, by `dtmctl ppl --compress-file` (dtm_cluster.dtmctl_per_config)."""
        todo = [c for c in dict.fromkeys(configs) if (c, window) not in self._ppl]
        for config in [c for c in todo if not c]:
            self.ppl(config, window)
        results = dtm_cluster.dtmctl_per_config(
            ["ppl", "--model", self.cluster.model, "--text", self.text, "--window", window, "--threads", "1"],
            [c for c in todo if c], self.cluster.tmp)
        self._ppl.update({(c, window): r for c, r in results.items()})
        return {c: self._ppl[c, window]["ppl"] for c in configs}

    def run_job(self, name, kind, section, window):
        spec = self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(
            name=name, kind=kind, model=self.cluster.model, dtype="float32", probes=self.ref.probes, prefix=PREFIX,
            completion=COMPLETION, shard_size=SHARD, **{kind: section},
            ppl={"text": self.text, "window": window, "shard_size": PPL_SHARD}))
        proc = self.cluster.dtmctl("submit", spec, "--watch", check=False, timeout=JOB_TIMEOUT_S)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        job_id = proc.stdout.strip().splitlines()[0]
        doc = json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)
        self.assertEqual(doc["state"], "SUCCEEDED")
        return self.cluster.get_job(job_id), doc

    def assert_close(self, actual, expected, what):
        PplTest.max_rel_diff = max(PplTest.max_rel_diff, abs(actual - expected) / expected)
        self.assertLessEqual(abs(actual - expected), REL_TOL * expected, f"{what}: {actual!r} vs {expected!r}")

    def stored(self, kind):
        return len(self.cluster.redis_client.keys(f"dtm:v1:{kind}:*"))

    def test_1_every_config_gets_the_ppl_dtmctl_ppl_prints_and_a_rerun_is_all_cache(self):
        for window in WINDOWS:
            with self.subTest(window=window):
                text_windows_before = self.stored("text-windows")
                job, doc = self.run_job(f"ppl-{window}", "evaluate", {"configs": CONFIGS}, window)
                self.assertEqual(self.stored("text-windows"), text_windows_before + 1)
                uncompressed = self.ppl("", window)
                self.assertEqual(job.summary.ppl_windows, uncompressed["windows"])
                self.assertGreaterEqual(uncompressed["windows"], 10)
                self.assertEqual(len(job.summary.ppl_text_fingerprint), 64)
                self.assert_close(doc["noise_floor"]["ppl"], uncompressed["ppl"], "noise floor")
                rows = {r["config"]: r for r in doc["results"]}
                self.assertEqual(sorted(rows), sorted(CONFIGS))
                for config in CONFIGS:
                    self.assert_close(rows[config]["ppl"], self.ppl(config, window)["ppl"], config)
                    # The probes' metrics are still the probes' (dtmctl eval on the baseline).
                    self.assertEqual(rows[config]["fdt75"], self.ref.eval(config)["fdt75"])
                # Compression moves the perplexity: the numbers are not the uncompressed model's.
                self.assertNotEqual(rows[CONFIGS[1]]["ppl"], doc["noise_floor"]["ppl"])

                # Again, as another job: the windows and every shard come from the cache.
                results_before = self.stored("result")
                again, doc_again = self.run_job(f"ppl-{window}-again", "evaluate", {"configs": CONFIGS}, window)
                self.assertEqual(again.progress.tasks_cached, again.progress.tasks_total)
                self.assertEqual(self.stored("result"), results_before)
                self.assertEqual([r["ppl"] for r in doc_again["results"]], [r["ppl"] for r in doc["results"]])
        # Two windows, two perplexities of one text.
        self.assertNotEqual(self.ppl("", WINDOWS[0])["ppl"], self.ppl("", WINDOWS[1])["ppl"])

    def assert_levels_rank_by(self, doc, metric, reference):
        self.assertEqual(doc["rank_by"], metric)
        levels = dtm_cluster.search_levels(doc)
        self.assertEqual(sorted(levels), list(range(DEPTH + 1)))
        for level in range(1, DEPTH + 1):
            with self.subTest(metric=metric, level=level):
                candidates = dtm_cluster.level_candidates(levels[level - 1], COMPONENTS, "int8-absmax")
                values = reference(candidates)
                ranked = sorted(candidates, key=lambda c: (values[c], c))
                rows = levels[level]
                self.assertEqual([r["config"] for r in rows], ranked[:BEAM])
                for row in rows:
                    self.assert_close(row[metric], values[row["config"]], row["config"])
        return levels

    def test_2_searches_ranked_by_ppl_and_by_dppl_keep_each_levels_best_by_that_metric(self):
        section = {"method": "int8-absmax", "beam": BEAM, "depth": DEPTH}
        _, by_ppl = self.run_job("search-by-ppl", "quant-search", dict(section, rank_by="ppl"), SEARCH_WINDOW)
        ppl_levels = self.assert_levels_rank_by(by_ppl, "ppl", lambda cs: self.ppl_many(cs, SEARCH_WINDOW))
        _, by_dppl = self.run_job("search-by-dppl", "quant-search", dict(section, rank_by="dppl"), SEARCH_WINDOW)
        dppl_levels = self.assert_levels_rank_by(
            by_dppl, "dppl", lambda cs: {c: r["dppl"] for c, r in self.ref.eval_many(cs).items()})
        # Every node of either search carries both metrics (Table 1: each arm's choice by every metric).
        for doc in (by_ppl, by_dppl):
            for row in doc["results"]:
                self.assertIn("ppl", row)
                self.assertIn("dppl", row)
        picked = {metric: [r["config"] for r in levels[DEPTH]] for metric, levels in
                  (("ppl", ppl_levels), ("dppl", dppl_levels))}
        print(f"\ndepth-{DEPTH} beams: by ppl {picked['ppl']}, by dppl {picked['dppl']}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
