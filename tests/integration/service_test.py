"""End-to-end tests of the dtm service: a real redis-server, dtm-coordinator and two dtm-workers on the
tiny model, over loopback, driven by dtmctl (and GetJob through the Python stubs while waiting).

The service's numbers must equal what the single-process tools give: the same probes, a baseline from
`dtmctl baseline`, `dtmctl eval` per config. shard_size is a multiple of dtmctl's batch size (8), so
both sides run the same float32 batches: FDT/SDT statistics must match exactly; DPPL and NLL to 1e-9
relative (the largest difference seen is printed at the end).

The tests share one cluster and run in name order (test_1 ... test_5); each leaves every process
running. Run by CTest (service_integration_test) after the tiny_model fixture.
"""
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as dtm_cluster  # noqa: E402

PROBES = 48
PREFIX = 16
COMPLETION = 48
SHARD = 8
SHARDS = PROBES // SHARD
LAYERS = 4
COMPONENTS = [f"model.layers.{layer}.{name}" for layer in range(LAYERS)
              for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
REL_TOL = 1e-9
JOB_TIMEOUT_S = 600


def probe_configs(method):
    """A probe job's configs, in the spec's result order (docs/job-spec.md)."""
    return [f"{component}={method}" for component in COMPONENTS]


def probe_job_tasks(methods):
    """Tasks of a probe job: the baseline shards, then every config (and the noise floor) per shard."""
    return SHARDS + (len(methods) * len(COMPONENTS) + 1) * SHARDS


def rel_diff(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


class ServiceTest(dtm_cluster.ClusterTestCase):
    # Largest relative differences service vs dtmctl eval, for the report at the end.
    worst = {"dppl": (0.0, ""), "nll_mean": (0.0, ""), "nll": (0.0, "")}
    compared = 0
    exact_dppl = 0

    @classmethod
    def set_up_cluster(cls):
        cls.ref = dtm_cluster.Reference(cls.cluster.tmp, PROBES, PREFIX, COMPLETION, threads=1)
        cls.stubs = dtm_cluster.load_stubs()
        cls._first_probe_job = None

    @classmethod
    def tearDownClass(cls):
        print(f"\nnumbers compared with dtmctl eval: {cls.compared} configs; dppl bit-identical in "
              f"{cls.exact_dppl}; largest relative differences: "
              + ", ".join(f"{k} {v[0]:.3g} ({v[1] or '-'})" for k, v in cls.worst.items()), file=sys.stderr)
        super().tearDownClass()


    # -- helpers

    def spec(self, name, **fields):
        text = dtm_cluster.spec_yaml(name=name, model=self.cluster.model, dtype="float32", probes=self.ref.probes,
                                     prefix=PREFIX, completion=COMPLETION, shard_size=SHARD, **fields)
        return self.cluster.write_spec(name.replace(" ", "-") + ".yaml", text)

    def probe_spec(self, name, methods):
        return self.spec(name, kind="probe", probe={"methods": methods})

    def submit(self, spec_path, watch=False):
        args = ["submit", spec_path] + (["--watch"] if watch else [])
        proc = self.cluster.dtmctl(*args, check=False, timeout=JOB_TIMEOUT_S)
        self.assertEqual(proc.returncode, 0, f"dtmctl submit {spec_path} failed:\n{proc.stderr}")
        job_id = proc.stdout.strip().splitlines()[0]
        self.assertRegex(job_id, r"^\S+$")
        return job_id

    def watch(self, job_id):
        proc = self.cluster.dtmctl("watch", job_id, check=False, timeout=JOB_TIMEOUT_S)
        self.assertEqual(proc.returncode, 0, f"dtmctl watch {job_id} failed:\n{proc.stderr}")

    def results(self, job_id):
        proc = self.cluster.dtmctl("results", job_id, "--format", "json", "--probes")
        doc = __import__("json").loads(proc.stdout)
        self.assertEqual(doc["job_id"], job_id)
        self.assertEqual(doc["state"], "SUCCEEDED")
        return doc

    def succeeded_job(self, job_id):
        job = self.cluster.get_job(job_id)
        job_pb2 = self.stubs.job_pb2
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED,
                         f"job {job_id}: {job_pb2.JobState.Name(job.state)} {job.error.message}")
        self.assertEqual(job.progress.tasks_done, job.progress.tasks_total)
        self.assertEqual(job.progress.tasks_failed, 0)
        self.assertEqual(job.summary.num_layers, LAYERS)
        self.assertEqual(job.summary.num_probes, PROBES)
        return job

    def result_keys(self):
        return set(self.cluster.redis_client.keys("dtm:v1:result:*"))

    def stored_keys(self):
        """Result and baseline keys: one per task ever computed."""
        return self.result_keys() | set(self.cluster.redis_client.keys("dtm:v1:baseline:*"))

    def note(self, kind, diff, where):
        if diff > self.worst[kind][0]:
            type(self).worst[kind] = (diff, where)

    def assert_metrics_equal(self, ours, ref, where):
        """Aggregates of the service (results JSON) against dtmctl eval's JSON."""
        for key in ("fdt75", "fdt_mean", "sdt_mean", "fdt_histogram"):
            self.assertEqual(ours[key], ref[key], f"{where}: {key}")
        self.assertEqual(ours["num_probes"], PROBES, where)
        for key in ("dppl", "nll_mean"):
            diff = rel_diff(ours[key], ref[key])
            self.note(key, diff, where)
            self.assertLessEqual(diff, REL_TOL, f"{where}: {key} {ours[key]!r} vs dtmctl eval {ref[key]!r}")

    def assert_matches_eval(self, row, where):
        ref = self.ref.eval(row["config"])
        self.assertEqual(ref["config"], row["config"])
        self.assertTrue(row["complete"], where)
        self.assert_metrics_equal(row, ref, where)
        type(self).compared += 1
        if row["dppl"] == ref["dppl"]:
            type(self).exact_dppl += 1
        probes = row.get("probe_results")
        self.assertIsNotNone(probes, f"{where}: no per-probe rows (--probes)")
        self.assertEqual([p["probe_index"] for p in probes], list(range(PROBES)), where)
        self.assertEqual([(p["probe_id"], p["fdt"], p["sdt"]) for p in probes],
                         [(p["id"], p["fdt"], p["sdt"]) for p in ref["per_probe"]], f"{where}: per-probe fdt/sdt")
        for ours, theirs in zip(probes, ref["per_probe"]):
            diff = rel_diff(ours["nll"], theirs["nll"])
            self.note("nll", diff, f"{where} {theirs['id']}")
            self.assertLessEqual(diff, REL_TOL, f"{where} {theirs['id']}: nll {ours['nll']!r} vs {theirs['nll']!r}")

    def assert_results_match_eval(self, doc, configs):
        by_config = {row["config"]: row for row in doc["results"]}
        self.assertEqual(len(by_config), len(doc["results"]), "a config is reported twice")
        missing = [c for c in configs if c not in by_config]
        self.assertFalse(missing, f"configs missing from the results: {missing}")
        self.ref.eval_many(configs)
        for config in configs:
            with self.subTest(config=config):
                self.assert_matches_eval(by_config[config], config)

    def assert_in_job_order(self, rows, configs):
        # docs/job-spec.md: results come in the job's order (a probe job: method by method, then
        # component by component), not ranked; ranking is the reader's choice.
        self.assertEqual([r["config"] for r in rows], configs, "results are not in the job's order")

    def assert_noise_floor(self, doc):
        ref = self.ref.eval("")
        self.assertIsNotNone(doc["noise_floor"])
        self.assert_metrics_equal(doc["noise_floor"], ref, "noise floor")
        # float32 on CPU is deterministic: the uncompressed model reproduces its own baseline.
        self.assertEqual(doc["noise_floor"]["fdt75"], COMPLETION)

    def wait_computed(self, job_id, at_least):
        """GetJob until at least `at_least` of the job's tasks were computed (not from the cache)."""
        return self.cluster.wait_job(
            job_id, timeout=JOB_TIMEOUT_S,
            until=lambda j: j.progress.tasks_done - j.progress.tasks_cached >= at_least)

    def first_probe_job(self):
        """The int8-absmax probe job of test 1, run once for the tests that build on it."""
        cls = type(self)
        if cls._first_probe_job is None:
            keys_before = self.stored_keys()
            before = self.cluster.counters("dtm_tasks_completed_total", "dtm_cache_misses_total")
            spec = self.probe_spec("probe int8", ["int8-absmax"])
            job_id = self.submit(spec, watch=True)
            job = self.succeeded_job(job_id)
            doc = self.results(job_id)
            after = self.cluster.counters("dtm_tasks_completed_total", "dtm_cache_misses_total")
            cls._first_probe_job = dict(spec=spec, job_id=job_id, job=job, doc=doc, before=before, after=after,
                                        new_keys=self.stored_keys() - keys_before)
        return cls._first_probe_job

    # -- 1. a probe job on two workers gives dtmctl eval's numbers

    def test_1_probe_job_equals_dtmctl_eval(self):
        first = self.first_probe_job()
        job, doc = first["job"], first["doc"]
        self.assertEqual(job.summary.kind, self.stubs.job_pb2.JOB_KIND_PROBE)
        self.assertEqual(job.progress.tasks_total, probe_job_tasks(["int8-absmax"]))
        # Every task the job did not find in the cache was computed once, and is a new result key.
        computed = job.progress.tasks_total - job.progress.tasks_cached
        completed = first["after"]["dtm_tasks_completed_total"] - first["before"]["dtm_tasks_completed_total"]
        self.assertEqual(completed, computed)
        self.assertEqual(len(first["new_keys"]), completed)
        self.assertEqual(first["after"]["dtm_cache_misses_total"] - first["before"]["dtm_cache_misses_total"], computed)

        configs = probe_configs("int8-absmax")
        self.assert_in_job_order(doc["results"], configs)
        self.assert_results_match_eval(doc, configs)
        self.assert_noise_floor(doc)

        # Both workers took part.
        log = self.cluster.coordinator.log_text()
        for worker in ("w1", "w2"):
            self.assertRegex(log, rf"task [0-9a-f]{{12}}: accepted from {worker} .*\(job {re.escape(first['job_id'])}\)")

    def test_1b_service_baseline_equals_dtmctl_baseline(self):
        self.first_probe_job()
        stubs = self.stubs
        keys = self.cluster.redis_client.keys("dtm:v1:baseline:*")
        self.assertEqual(len(keys), SHARDS, keys)  # every job of this test shares one probe set
        rows = []
        for key in keys:
            self.assertRegex(key, r"^dtm:v1:baseline:[0-9a-f]{64}$")
            shard = stubs.worker_service_pb2.BaselineShardOutput.FromString(self.cluster.redis_client.get(key))
            rows.extend(shard.rows)
        rows.sort(key=lambda r: r.probe_index)
        self.assertEqual([r.probe_index for r in rows], list(range(PROBES)))
        self.assertEqual([(r.probe_id, r.prefix_len, list(r.tokens)) for r in rows],
                         [(r["id"], r["prefix_len"], r["tokens"]) for r in self.ref.baseline_rows])

    # -- 2. the same spec again: everything from the cache

    def test_2_resubmitted_job_is_answered_from_the_cache(self):
        first = self.first_probe_job()
        keys_before = self.result_keys()
        names = ("dtm_tasks_completed_total", "dtm_cache_hits_total", "dtm_cache_misses_total")
        before = self.cluster.counters(*names)
        job_id = self.submit(first["spec"], watch=True)
        self.assertNotEqual(job_id, first["job_id"])
        job = self.succeeded_job(job_id)
        after = self.cluster.counters(*names)

        total = job.progress.tasks_total
        self.assertEqual(total, first["job"].progress.tasks_total)
        self.assertEqual(job.progress.tasks_cached, total)
        self.assertEqual(after["dtm_tasks_completed_total"], before["dtm_tasks_completed_total"])
        self.assertEqual(after["dtm_cache_misses_total"], before["dtm_cache_misses_total"])
        self.assertEqual(after["dtm_cache_hits_total"] - before["dtm_cache_hits_total"], total)
        self.assertEqual(self.result_keys(), keys_before)

        # The same numbers, bit for bit.
        doc = self.results(job_id)
        strip = lambda d: {k: v for k, v in d.items() if k not in ("job_id",)}  # noqa: E731
        self.assertEqual(strip(doc), strip(first["doc"]))

        # dtmctl jobs lists it as done from the cache: SUCCEEDED, total/total.
        listing = self.cluster.dtmctl("jobs").stdout
        line = next((l for l in listing.splitlines() if l.startswith(job_id)), None)
        self.assertIsNotNone(line, listing)
        self.assertIn("SUCCEEDED", line)
        self.assertIn(f"{total}/{total}", line.split())

    # -- 3. a worker killed mid-job

    def test_3_job_survives_a_worker_killed_with_sigkill(self):
        method = "prune:0.5"
        keys_before = self.result_keys()
        expired_before = self.cluster.counters("dtm_leases_expired_total")["dtm_leases_expired_total"]
        job_id = self.submit(self.probe_spec("probe prune", [method]))
        to_compute = len(COMPONENTS) * SHARDS  # the baseline and the noise floor are cached
        try:
            seen = self.wait_computed(job_id, to_compute // 4)
            self.cluster.kill_worker("w2")
            at_kill = self.cluster.get_job(job_id).progress
            self.assertLess(at_kill.tasks_done, at_kill.tasks_total,
                            f"the job was done before w2 was killed (done at the poll: {seen.progress.tasks_done}); "
                            "make it larger")
            log = self.cluster.coordinator.log_text()
            self.assertRegex(log, rf"accepted from w2 .*\(job {re.escape(job_id)}\)", "w2 took no part before the kill")
            self.watch(job_id)
            job = self.succeeded_job(job_id)
            self.assertEqual(job.progress.tasks_total - job.progress.tasks_cached, to_compute)
            self.assertEqual(len(self.result_keys() - keys_before), to_compute)

            # What w2 held at its death: leases granted to it that no report of its closed.
            log = self.cluster.coordinator.log_text()
            leased = dict((m.group(2), m.group(1)) for m in
                          re.finditer(r"task ([0-9a-f]{12}): leased to w2 as (\S+) \(attempt", log))
            self.assertTrue(leased, "no 'leased to w2' lines: is the coordinator logging at debug level?")
            closed = {m.group(1) for m in re.finditer(r"task [0-9a-f]{12}: \w+ from w2 under (\S+) ", log)}
            closed |= {m.group(1) for m in re.finditer(r"task ([0-9a-f]{12}): failed on w2", log)}
            held = {lease: task for lease, task in leased.items() if lease not in closed}
            expired = self.cluster.counters("dtm_leases_expired_total")["dtm_leases_expired_total"] - expired_before
            print(f"\nw2 held {len(held)} lease(s) when killed: {sorted(held.values())}; leases expired: {expired}",
                  file=sys.stderr)
            self.assertEqual(expired, len(held), "leases expired != leases the killed worker held")
            for task in held.values():
                self.assertIn(f"task {task}: lease expired; re-queued", log)
                self.assertRegex(log, rf"task {task}: accepted from w1 ", f"task {task} was not redone by w1")

            # w2 is forgotten once it has been silent for two lease timeouts.
            deadline = time.monotonic() + 30
            while self.cluster.metric("dtm_workers_connected") != 1.0 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(self.cluster.metric("dtm_workers_connected"), 1.0)

            doc = self.results(job_id)
            configs = probe_configs(method)
            self.assert_in_job_order(doc["results"], configs)
            self.assert_results_match_eval(doc, configs)
            self.assert_noise_floor(doc)
        finally:
            if not self.cluster.workers["w2"].alive():
                self.cluster.start_worker("w2")
        self.assertEqual(self.cluster.metric("dtm_workers_connected"), 2.0)

    # -- 3b. a worker stopped with SIGTERM mid-job drains: finishes or hands back, no lease expires

    def test_3b_worker_stopped_with_sigterm_hands_back_its_leases(self):
        method = "random-prune:0.5:3"
        names = ("dtm_leases_expired_total", "dtm_tasks_duplicate_total")
        before = self.cluster.counters(*names)
        job_id = self.submit(self.probe_spec("probe random prune", [method]))
        to_compute = len(COMPONENTS) * SHARDS
        try:
            self.wait_computed(job_id, to_compute // 4)
            w2 = self.cluster.workers["w2"]
            w2.stop(grace_s=60)
            self.assertEqual(w2.popen.returncode, 0, w2.tail())
            self.assertRegex(w2.log_text(), r"signal 15; draining")
            self.assertRegex(w2.log_text(), r"drained; exiting")
            self.assertLess(self.cluster.get_job(job_id).progress.tasks_done,
                            self.cluster.get_job(job_id).progress.tasks_total, "the job ended before w2 was stopped")
            self.assertRegex(self.cluster.coordinator.log_text(), r"worker w2: drained, \d+ tasks back in the queue")
            self.watch(job_id)
            job = self.succeeded_job(job_id)
            self.assertEqual(job.progress.tasks_total - job.progress.tasks_cached, to_compute)
            after = self.cluster.counters(*names)
            # Handed back, not abandoned: no lease ran out, no task was computed twice.
            self.assertEqual(after, before)
            doc = self.results(job_id)
            configs = probe_configs(method)
            self.assert_in_job_order(doc["results"], configs)
            self.assert_results_match_eval(doc, configs)
        finally:
            if not self.cluster.workers["w2"].alive():
                self.cluster.start_worker("w2")

    # -- 4. the coordinator killed mid-job and restarted on the same Redis and port

    def test_4_job_resumes_after_the_coordinator_is_killed_and_restarted(self):
        method = "int8-absmax-row"
        keys_before = self.result_keys()
        job_id = self.submit(self.probe_spec("probe int8 row", [method]))
        to_compute = len(COMPONENTS) * SHARDS
        seen = self.wait_computed(job_id, to_compute // 4)
        self.cluster.kill_coordinator()
        # Only the coordinator writes to Redis, so this is exactly what the store held at the kill.
        redis = self.cluster.redis_client
        at_kill = set(redis.keys("dtm:v1:result:*")) | set(redis.keys("dtm:v1:baseline:*"))
        new_at_kill = self.result_keys() - keys_before
        self.assertGreater(len(new_at_kill), 0)
        self.assertLess(len(new_at_kill), to_compute,
                        f"the job was done before the coordinator was killed (done at the poll: "
                        f"{seen.progress.tasks_done}/{seen.progress.tasks_total}); make it larger")

        self.cluster.start_coordinator()
        self.assertRegex(self.cluster.coordinator.log_text(), rf"job {re.escape(job_id)}: resuming")
        self.watch(job_id)
        job = self.succeeded_job(job_id)
        self.assertEqual(job.progress.tasks_total, probe_job_tasks([method]))

        final_new = self.result_keys() - keys_before
        self.assertEqual(len(final_new), to_compute)
        log = self.cluster.coordinator.log_text()
        accepted = re.findall(r"task ([0-9a-f]{12}): accepted from ", log)
        self.assertEqual(len(accepted), len(set(accepted)), "a task was accepted twice")
        prefix = lambda key: key.rsplit(":", 1)[1][:12]  # noqa: E731
        recomputed = set(accepted) & {prefix(k) for k in at_kill}
        self.assertFalse(recomputed, f"tasks in Redis at the kill were computed again: {sorted(recomputed)}")
        # Everything the job lacked at the kill, and nothing else, was accepted by the new coordinator.
        self.assertEqual(set(accepted), {prefix(k) for k in final_new - new_at_kill})
        counters = self.cluster.counters("dtm_tasks_completed_total", "dtm_cache_misses_total", "dtm_cache_hits_total")
        self.assertEqual(counters["dtm_tasks_completed_total"], to_compute - len(new_at_kill))
        self.assertEqual(counters["dtm_cache_misses_total"], to_compute - len(new_at_kill))
        self.assertEqual(counters["dtm_cache_hits_total"], job.progress.tasks_total - (to_compute - len(new_at_kill)))

        doc = self.results(job_id)
        configs = probe_configs(method)
        self.assert_in_job_order(doc["results"], configs)
        self.assert_results_match_eval(doc, configs)
        self.assert_noise_floor(doc)
        # The jobs of the earlier tests are still known, with their state, after the restart.
        if self._first_probe_job is not None:
            self.succeeded_job(self._first_probe_job["job_id"])

    # -- 4b. Redis killed mid-job and restarted on the same data

    def test_4b_job_survives_redis_going_away(self):
        method = "prune:0.25"
        keys_before = self.result_keys()
        job_id = self.submit(self.probe_spec("probe prune quarter", [method]))
        to_compute = len(COMPONENTS) * SHARDS
        self.wait_computed(job_id, to_compute // 4)
        self.cluster.kill_redis()
        outage_s = 3.0
        time.sleep(outage_s)
        # Meanwhile the coordinator runs on: it answers with UNAVAILABLE where it needs the store.
        self.assertTrue(self.cluster.coordinator.alive())
        self.cluster.restart_redis()
        self.watch(job_id)
        job = self.succeeded_job(job_id)
        self.assertTrue(self.cluster.coordinator.alive())
        for worker in self.cluster.workers.values():
            self.assertTrue(worker.alive(), f"{worker.name} died during the Redis outage")
        # No result was lost: every task of the job has its key, computed ones once each.
        self.assertEqual(job.progress.tasks_total - job.progress.tasks_cached, to_compute)
        self.assertEqual(len(self.result_keys() - keys_before), to_compute)
        log = self.cluster.coordinator.log_text()
        self.assertRegex(log, r"Redis at 127\.0\.0\.1:\d+ is unreachable", "the outage was not noticed")
        self.assertEqual(self.cluster.metric("dtm_store_up"), 1.0)
        doc = self.results(job_id)
        configs = probe_configs(method)
        self.assert_in_job_order(doc["results"], configs)
        self.assert_results_match_eval(doc, configs)

    # -- 5. bad specs are refused with a message that names the problem; the service goes on

    def list_job_ids(self):
        reply = self.cluster.stub().ListJobs(self.stubs.dtm_service_pb2.ListJobsRequest(), timeout=10)
        return {job.job_id for job in reply.jobs}

    def test_5_bad_specs_are_refused_and_the_coordinator_goes_on(self):
        common = dict(model=self.cluster.model, probes=self.ref.probes, prefix=PREFIX, completion=COMPLETION,
                      shard_size=SHARD)
        evaluate = {"configs": ["model.layers.0.mlp.up_proj=int8-absmax"]}
        cases = {
            "malformed-yaml": ("kind: probe\nmodel: [unclosed\nprobes: x\n", ["malformed YAML", "line"]),
            "unknown-kind": (dtm_cluster.spec_yaml(kind="evaluat", **common, evaluate=evaluate),
                             ["kind", "unknown kind 'evaluat'"]),
            "unknown-component": (dtm_cluster.spec_yaml(
                kind="evaluate", **common, evaluate={"configs": ["model.layers.9.mlp.up_proj=int8-absmax"]}),
                ["model.layers.9.mlp.up_proj", "4 layers"]),
            "shard-size-0": (dtm_cluster.spec_yaml(kind="evaluate", **dict(common, shard_size=0), evaluate=evaluate),
                             ["shard_size", "at least 1", "0"]),
            "prefix-too-long": (dtm_cluster.spec_yaml(kind="evaluate", **dict(common, prefix=PREFIX + 1),
                                                      evaluate=evaluate),
                                ["prefix", str(PREFIX + 1), os.path.basename(self.ref.probes)]),
            "missing-probes": (dtm_cluster.spec_yaml(kind="evaluate", **dict(common, probes="/nonexistent/p.jsonl"),
                                                     evaluate=evaluate), ["/nonexistent/p.jsonl"]),
        }
        jobs_before = self.list_job_ids()
        for name, (text, needles) in cases.items():
            with self.subTest(case=name):
                path = self.cluster.write_spec(f"bad-{name}.yaml", text)
                proc = self.cluster.dtmctl("submit", path, check=False)
                self.assertNotEqual(proc.returncode, 0, f"{name}: accepted:\n{proc.stdout}")
                self.assertEqual(proc.stdout, "", f"{name}: printed a job id")
                lines = [l for l in proc.stderr.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, proc.stderr)
                self.assertIn(path, lines[0])
                for needle in needles:
                    self.assertIn(needle, lines[0])
        self.assertEqual(self.list_job_ids(), jobs_before, "a refused spec left a job behind")
        self.assertTrue(self.cluster.coordinator.alive())

        # A good job still runs to the end, with dtmctl eval's numbers.
        config = "model.layers.2.mlp.gate_proj=prune:0.25"
        job_id = self.submit(self.spec("good after bad", kind="evaluate", evaluate={"configs": [config]}), watch=True)
        self.succeeded_job(job_id)
        doc = self.results(job_id)
        self.assertEqual([r["config"] for r in doc["results"]], [config])
        self.assert_results_match_eval(doc, [config])


if __name__ == "__main__":
    unittest.main(verbosity=2)
