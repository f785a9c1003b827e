"""The quantization tree search on the tiny model, end to end: a real redis-server, dtm-coordinator
and two dtm-workers over loopback.

The check is independent of the coordinator's search code: for every level, the candidates are the
children of the previous level's reported nodes (level 0: the uncompressed model), each is evaluated
alone by `dtmctl eval`, ranked by SPEC's rule (fdt75, then fdt_mean, descending, then dppl,
ascending, then the config string; eval's dppl may differ from the job's in the last bits, which
orders two nodes differently only if their dppl agree to about 1e-8), and the best `beam` must be exactly the nodes the search reports for that level, in order,
with the same numbers. A second search is killed (coordinator kill -9) half-way, resumed on the same
Redis, and must pass the same check without computing any finished task again.

Run by CTest (search_integration_test) after the tiny_model fixture.
"""
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 16
PREFIX = 16
COMPLETION = 48
SHARD = 8
LAYERS = 4
COMPONENTS = dtm_cluster.component_names(LAYERS)
BEAM = 3
DEPTH = 4
JOB_TIMEOUT_S = 900


class SearchTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)

    def search_spec(self, name, method):
        return self.cluster.write_spec(f"{name}.yaml", dtm_cluster.spec_yaml(
            name=name, kind="quant-search", model=self.cluster.model, probes=self.ref.probes, prefix=PREFIX,
            completion=COMPLETION, shard_size=SHARD,
            **{"quant-search": {"method": method, "beam": BEAM, "depth": DEPTH}}))

    def submit(self, spec):
        return self.cluster.dtmctl("submit", spec).stdout.strip()

    def results(self, job_id):
        doc = json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)
        self.assertEqual(doc["state"], "SUCCEEDED")
        self.assertEqual(doc["rank_by"], "fdt75")  # the spec's default, named in the results
        return doc

    def assert_levels_match_exhaustive_eval(self, doc, method):
        levels = dtm_cluster.search_levels(doc)
        self.assertEqual(sorted(levels), list(range(DEPTH + 1)))
        self.assertEqual([r["config"] for r in levels[0]], [""])
        evaluated = 0
        stats = {entry["level"]: entry for entry in doc["search_levels"]}
        self.assertEqual(sorted(stats), list(range(1, DEPTH + 1)))
        for level in range(1, DEPTH + 1):
            with self.subTest(level=level):
                candidates = dtm_cluster.level_candidates(levels[level - 1], COMPONENTS, method)
                ref = self.ref.eval_many(candidates)
                evaluated += len(candidates)
                self.assertEqual(stats[level]["nodes"], len(candidates))
                ranked = sorted(candidates, key=lambda c: (-ref[c]["fdt75"], -ref[c]["fdt_mean"], ref[c]["dppl"], c))
                rows = levels[level]
                self.assertEqual([r["config"] for r in rows], ranked[:BEAM])
                self.assertEqual([r["rank"] for r in rows], list(range(len(rows))))
                for row in rows:
                    want = ref[row["config"]]
                    self.assertEqual((row["fdt75"], row["fdt_mean"], row["sdt_mean"]),
                                     (want["fdt75"], want["fdt_mean"], want["sdt_mean"]), row["config"])
                    self.assertAlmostEqual(row["dppl"], want["dppl"], delta=1e-9 * want["dppl"])
        print(f"\n{method}: {evaluated} candidates evaluated by dtmctl eval over {DEPTH} levels", file=sys.stderr)
        return stats

    def test_1_search_equals_an_exhaustive_evaluation_of_every_level(self):
        job_id = self.submit(self.search_spec("search int8", "int8-absmax"))
        self.cluster.dtmctl("watch", job_id, timeout=JOB_TIMEOUT_S)
        job = self.cluster.get_job(job_id)
        self.assertEqual(job.progress.search_level, DEPTH)
        stats = self.assert_levels_match_exhaustive_eval(self.results(job_id), "int8-absmax")
        # A fresh Redis: every node was computed.
        self.assertEqual([stats[level]["nodes_cached"] for level in sorted(stats)], [0] * DEPTH)

    def test_2_search_killed_half_way_resumes_without_recomputing(self):
        method = "prune:0.5"
        job_id = self.submit(self.search_spec("search prune", method))
        # Kill the coordinator once level 2 is under way, so finished levels must be replayed.
        self.cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S, until=lambda j: j.progress.search_level >= 2)
        self.cluster.kill_coordinator()
        redis = self.cluster.redis_client
        at_kill = {key.rsplit(":", 1)[1][:12] for key in redis.keys("dtm:v1:result:*")}
        self.cluster.start_coordinator()
        self.cluster.wait_workers_registered()
        self.assertRegex(self.cluster.coordinator.log_text(), rf"job {re.escape(job_id)}: resuming")
        self.cluster.dtmctl("watch", job_id, timeout=JOB_TIMEOUT_S)
        accepted = re.findall(r"task ([0-9a-f]{12}): accepted from ", self.cluster.coordinator.log_text())
        self.assertTrue(accepted, "the resumed search computed nothing: was it finished before the kill?")
        self.assertFalse(set(accepted) & at_kill, "tasks stored before the kill were computed again")
        stats = self.assert_levels_match_exhaustive_eval(self.results(job_id), method)
        # The resumed coordinator found level 1 (finished before the kill) in the cache.
        self.assertEqual(stats[1]["nodes_cached"], stats[1]["nodes"])
        self.assertLess(sum(e["nodes_cached"] for e in stats.values()), sum(e["nodes"] for e in stats.values()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
