"""The Grafana dashboards (dashboards/*.json) and alert rules (deploy/prometheus/alerts.yml) against a
real Prometheus scraping a real service: redis-server, dtm-coordinator and two dtm-workers on the tiny
model (tests/integration/cluster.py), and /usr/bin/prometheus scraping all three every second with the
alert rules loaded.

Every panel query of every dashboard must evaluate without error and return at least one series:
while a quant-search job runs (all of them; the per-job ones, on dtm_job_tasks{job_id} and the search's
dtm_job_search_level{job_id} and dtm_job_best_fdt75{job_id}, exist only then) and after it has ended
(all but the per-job ones, which must then be gone); the panels of a run that trains (a sparsify run's
round and stage, dtm_job_train_loss{job_id}) while a one-round sparsify run trains, then cancelled. Grafana's variables are substituted as Grafana
would: template variables by their "All" value, $__rate_interval by 1m. A panel on a metric the
daemons do not export, or with a typo, fails here. Each alert rule must be loaded by
Prometheus, evaluate without error, and its expression must run as a query.

The job is a quant-search over all 28 components of the tiny model with beam 10 and no depth limit:
level 1 is 29 configs (the noise floor with them), level 2 about 250, each 2 shards of 8 probes. The
queries run as soon as level 2 starts (dtm_job_best_fdt75 then holds level 1's best, no longer NaN),
so the job is still running whatever the machine's speed; it is then cancelled. Run by CTest (dashboards_test), environment as in
tests/integration/integration_tests.cmake plus DTM_PROMETHEUS_BIN (default /usr/bin/prometheus).
"""
import glob
import json
import os
import re
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import cluster as dtm_cluster  # noqa: E402

PROMETHEUS = os.environ.get("DTM_PROMETHEUS_BIN", "/usr/bin/prometheus")
DASHBOARDS = sorted(glob.glob(os.path.join(dtm_cluster.SOURCE_DIR, "dashboards", "*.json")))
ALERTS = os.path.abspath(os.path.join(dtm_cluster.SOURCE_DIR, "deploy", "prometheus", "alerts.yml"))
EXPECTED_DASHBOARDS = {"dtm-jobs.json", "dtm-workers.json", "dtm-cache.json"}
WORKER_METRICS_PORT = re.compile(r"dtm-worker \S+ ready: .*\bmetrics port (\d+)")
# Series that exist only while a job runs; of those, the ones of a job that trains (a train job, or a
# sparsify run while a round trains) and of a sparsify run.
PER_JOB = re.compile(r"\bdtm_job_(tasks|search_level|best_fdt75|train_step|train_loss|sparsify_round|sparsify_stage)")
RUN_ONLY = re.compile(r"\bdtm_job_(train_step|train_loss|sparsify_round|sparsify_stage)")
SEARCH_METRICS = ["dtm_job_search_level", "dtm_job_best_fdt75"]  # per running search job
RUN_METRICS = ["dtm_job_sparsify_round", "dtm_job_sparsify_stage", "dtm_job_train_loss"]  # per running sparsify run
# Grafana's built-in interval variables, as Grafana would fill them in for a short range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
PROBES, PREFIX, COMPLETION, SHARD = 48, 16, 48, 8
SEARCH_PROBES = 16                                  # 2 shards a config: level 1 is short, level 2 long
SCRAPES_BEFORE_CHECK = 4                            # samples of the job's series, so that rate() has points


class MonitoredCluster(dtm_cluster.Cluster):
    """The cluster plus a Prometheus scraping its coordinator and workers."""

    def start(self):
        super().start()
        self.worker_metrics_ports = [int(w.wait_for_log(WORKER_METRICS_PORT, what="metrics port").group(1))
                                     for w in self.workers.values()]
        self.prometheus = None
        self.start_prometheus()

    def processes(self):
        return super().processes() + ([self.prometheus] if getattr(self, "prometheus", None) else [])

    def close(self):
        if getattr(self, "prometheus", None) is not None:
            self.prometheus.kill()
        super().close()

    def start_prometheus(self):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [ALERTS],
            "scrape_configs": [
                {"job_name": "dtm-coordinator", "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]},
                {"job_name": "dtm-worker",
                 "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in self.worker_metrics_ports]}]},
            ],
        }
        path = os.path.join(self.tmp, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        for _ in range(5):  # a free port can be taken before Prometheus binds it
            self.prometheus_port = dtm_cluster.free_port()
            self.prometheus = dtm_cluster.Process("prometheus", [
                PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={os.path.join(self.tmp, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}"], self.tmp).start()
            try:
                self.prometheus.wait_for_log(r"Server is ready to receive web requests", what="Prometheus ready")
                return
            except dtm_cluster.ClusterError:
                if self.prometheus.alive():
                    raise
        raise dtm_cluster.ClusterError(f"prometheus did not start; its log:\n{self.prometheus.tail()}")

    def api(self, path, **params):
        """The `data` of a Prometheus HTTP API answer; raises AssertionError with its error otherwise."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                doc = json.load(reply)
        except urllib.error.HTTPError as e:
            doc = json.load(e)
        if doc.get("status") != "success":
            raise AssertionError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]


def substitute(expr, variables):
    """`expr` as Grafana sends it: $var, ${var} and [[var]] replaced."""
    for name, value in variables.items():
        expr = re.sub(r"\$\{" + name + r"(?::[a-z]+)?\}|\$" + name + r"\b|\[\[" + name + r"\]\]", lambda _: value, expr)
    return expr


def dashboard_queries():
    """[(where, expr as sent)] of every panel target, and [(where, metric, label)] of variable queries."""
    queries, variables = [], []
    for path in DASHBOARDS:
        with open(path) as f:
            dash = json.load(f)
        name = os.path.basename(path)
        values = dict(BUILTINS)
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                values[var["name"]] = var.get("allValue") or ".*"
                definition = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition)
                assert m, f"{name}: variable {var['name']}: unexpected query {definition!r}"
                variables.append((f"{name} variable {var['name']}", m.group(1), m.group(2)))
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                queries.append((f"{name} panel {panel['title']!r} {target['refId']}", substitute(target["expr"], values)))
    return queries, variables


class DashboardsTest(dtm_cluster.ClusterTestCase):
    @classmethod
    def new_cluster(cls):
        # A sparsify run's round models go under the workers' model root (test 4).
        import tempfile
        cls.runs = tempfile.mkdtemp(prefix="dtm-dashboards-runs-")
        return MonitoredCluster(num_workers=2, worker_args=["--model-root", cls.runs])

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.runs, ignore_errors=True)

    @classmethod
    def set_up_cluster(cls):
        text = os.path.join(cls.cluster.tmp, "held-out.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "held-out", "--out", text)
        cls.probes = os.path.join(cls.cluster.tmp, "probes.jsonl")
        dtm_cluster.run_dtmctl("make-probes", "--model", cls.cluster.model, "--corpus", text, "--count", PROBES,
                               "--prefix", PREFIX, "--out", cls.probes)
        cls.queries, cls.variables = dashboard_queries()

    def check(self, queries):
        """Every query must succeed with at least one series; all failures in one message."""
        failures = []
        for where, expr in queries:
            try:
                if not self.cluster.query(expr):
                    failures.append(f"{where}: no series: {expr}")
            except AssertionError as e:
                failures.append(f"{where}: {e}: {expr}")
        self.assertFalse(failures, f"{len(failures)} of {len(queries)} dashboard queries failed:\n" + "\n".join(failures))

    def wait_query(self, expr, timeout=60):
        deadline = time.monotonic() + timeout
        while not self.cluster.query(expr):
            self.assertLess(time.monotonic(), deadline, f"no series for {expr} within {timeout} s")
            time.sleep(0.5)

    def test_1_dashboards_are_well_formed(self):
        self.assertEqual({os.path.basename(p) for p in DASHBOARDS}, EXPECTED_DASHBOARDS)
        for path in DASHBOARDS:
            with open(path) as f:
                dash = json.load(f)
            self.assertGreaterEqual(dash["schemaVersion"], 36, path)
            self.assertIn("DS_PROMETHEUS", [v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"], path)
            for panel in dash["panels"]:
                self.assertTrue(panel.get("targets"), f"{path}: panel {panel['title']!r} has no query")
                self.assertEqual(panel["datasource"]["uid"], "${DS_PROMETHEUS}", f"{path}: {panel['title']}")
        self.assertTrue(any(PER_JOB.search(e) for _, e in self.queries))
        for metric in SEARCH_METRICS + RUN_METRICS:
            self.assertTrue(any(re.search(r"\b" + metric + r"\b", e) for _, e in self.queries), f"no panel on {metric}")
        self.assertGreater(len(self.queries), 20)

    def test_2_prometheus_scrapes_every_daemon_and_loads_the_alerts(self):
        deadline = time.monotonic() + 30
        while True:
            targets = self.cluster.api("targets")["activeTargets"]
            if len(targets) == 3 and all(t["health"] == "up" for t in targets):
                break
            self.assertLess(time.monotonic(), deadline, f"targets not all up: {json.dumps(targets, indent=1)}")
            time.sleep(0.5)
        self.assertEqual(sorted(t["labels"]["job"] for t in targets), ["dtm-coordinator", "dtm-worker", "dtm-worker"])
        with open(ALERTS) as f:
            rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
        self.assertEqual(len(rules), 6)
        for rule in rules:  # each expression runs as a query (its result depends on the moment)
            self.cluster.query(rule["expr"])
        deadline = time.monotonic() + 30
        while True:  # health is "unknown" until the rule group's first evaluation
            loaded = [r for g in self.cluster.api("rules")["groups"] for r in g["rules"]]
            if loaded and all(r["health"] != "unknown" for r in loaded):
                break
            self.assertLess(time.monotonic(), deadline, f"rules not evaluated: {loaded}")
            time.sleep(0.5)
        self.assertEqual(sorted(r["name"] for r in loaded), sorted(r["alert"] for r in rules))
        for r in loaded:
            self.assertEqual(r["health"], "ok", f"alert {r['name']}: {r.get('lastError')}")
        # A healthy service: nothing firing or pending.
        self.assertEqual(self.cluster.api("alerts")["alerts"], [])

    def test_3_every_panel_returns_series_during_and_after_a_job(self):
        spec = dtm_cluster.spec_yaml(name="dashboards", kind="quant-search", model=self.cluster.model,
                                     dtype="float32", probes=self.probes, num_probes=SEARCH_PROBES, prefix=PREFIX,
                                     completion=COMPLETION, shard_size=SHARD,
                                     **{"quant-search": {"method": "int8-absmax", "beam": 10, "depth": 0}})
        submitted = time.monotonic()
        job_id = self.cluster.dtmctl("submit", self.cluster.write_spec("dashboards.yaml", spec)).stdout.split()[0]
        # Enough scrapes of the job's own series (and of the completion counters moving) for rate().
        self.wait_query(f'count_over_time(dtm_job_tasks_done{{job_id="{job_id}"}}[1m]) >= {SCRAPES_BEFORE_CHECK} '
                        f'and dtm_job_tasks_done{{job_id="{job_id}"}} > 0')
        # Level 1 finished: the search is in level 2 and its best fdt75 is a number (NaN compares false).
        self.wait_query(f'dtm_job_search_level{{job_id="{job_id}"}} >= 2 '
                        f'and dtm_job_best_fdt75{{job_id="{job_id}"}} >= 0', timeout=120)
        during = time.monotonic()
        self.check([(w, e) for w, e in self.queries if not RUN_ONLY.search(e)])  # test 4 runs those
        for where, metric, label in self.variables:  # label_values(metric, label) must offer a value
            self.assertTrue(self.cluster.api("series", **{"match[]": f'{metric}{{{label}!=""}}'}),
                            f"{where}: no {metric} series with a {label} label")
        self.assertEqual(self.cluster.get_job(job_id).state, dtm_cluster.load_stubs().job_pb2.JOB_STATE_RUNNING,
                         "the job ended before the queries during it were done: make it larger")
        progress = self.cluster.get_job(job_id).progress
        print(f"search in level 2 {during - submitted:.1f} s after submission; queries during the job: "
              f"{len(self.queries)} in {time.monotonic() - during:.1f} s; then {progress.tasks_done}/"
              f"{progress.tasks_total} tasks done", file=sys.stderr)

        self.cluster.dtmctl("cancel", job_id)
        self.cluster.wait_job(job_id, timeout=120)
        self.wait_query('dtm_jobs{state="cancelled"} == 1')
        for metric in ["dtm_job_tasks", "dtm_job_tasks_done"] + SEARCH_METRICS:  # gone with the job
            self.wait_query(f"absent({metric})")
        self.check([(w, e) for w, e in self.queries if not PER_JOB.search(e)])

    def test_4_the_run_panels_return_series_while_a_sparsify_run_trains(self):
        data = os.path.join(self.cluster.tmp, "train.txt")
        dtm_cluster.run_dtmctl("brown-text", "--corpus", dtm_cluster.BROWN, "--split", "train", "--out", data)
        # One round whose training is far longer than the check: cancelled after it.
        spec = (f"kind: sparsify\nmodel: {self.cluster.model}\nprobes: {self.probes}\nnum_probes: {SHARD}\n"
                f"prefix: {PREFIX}\ncompletion: {COMPLETION}\nshard_size: {SHARD}\n"
                f"sparsify:\n  schedule: [0.2]\n  output: {os.path.join(self.runs, 'run')}\n"
                f"train:\n  data: {data}\n  format: text\n  phases: masked:5000\n  batch: 4\n  seq_len: 64\n"
                f"  max_sequences: 16\n  workers: 2\n  checkpoint_every: 0\n")
        job_id = self.cluster.dtmctl("submit", self.cluster.write_spec("run.yaml", spec)).stdout.split()[0]
        self.wait_query(f'count_over_time(dtm_job_train_loss{{job_id="{job_id}"}}[1m]) >= {SCRAPES_BEFORE_CHECK} '
                        f'and on(job_id) dtm_job_sparsify_stage{{job_id="{job_id}",stage="train"}} == 1', timeout=180)
        self.check([(w, e) for w, e in self.queries if RUN_ONLY.search(e)])
        self.assertEqual(self.cluster.get_job(job_id).progress.sparsify_stage, "train")
        self.cluster.dtmctl("cancel", job_id)
        self.cluster.wait_job(job_id, timeout=120)
        for metric in RUN_METRICS:  # gone with the run
            self.wait_query(f"absent({metric})")


if __name__ == "__main__":
    unittest.main(verbosity=2)
