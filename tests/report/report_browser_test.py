"""Job reports (issue 17) in a real browser: `dtmctl local SPEC --report FILE` on the tiny model for a
probe job, a quant-search and a sparsify-round, each page opened in headless Chromium (Debian's
chromium + chromium-driver, driven by python3-selenium) with the network switched off, and checked
against `dtmctl results --format json` of the same job:

- no console errors, and no request but the file itself (the Content-Security-Policy would block
  one; the performance log would show it);
- the probe job's heatmaps: layers x 7 cells per method and metric, each cell's value equal to the
  JSON result of that component; a click on a cell shows that config's FDT histogram, whose bars
  are the JSON histogram; the table sorts;
- the quant-search's best-per-level points equal each level's rank-0 row, and the level grid colours
  exactly the components of the deepest winner;
- the sparsify-round's allocation grid equals the JSON allocation;
- an evaluate job's histograms side by side, and a two-round sparsification run's sparsity per
  kind, fdt75 per round and training losses, equal the JSON results;
- every figure has a non-zero size at 1280 px and at 390 px, and nothing is wider than the phone's
  screen.

Then the live pages: a real coordinator (with a token) and worker over loopback, a job running; its
/jobs/ID page, opened once with the token as HTTP Basic credentials, shows its progress grow without
being reloaded, /jobs lists it, and both refuse a request without the token.

Screenshots of each page at both widths are kept in $DTM_ARTIFACTS_DIR (default: a temporary
folder, printed). Run by CTest (report_browser_test).
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import cluster as dtm_cluster  # noqa: E402

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError as e:  # a failure, not a skip: scripts/install_deps.sh installs python3-selenium
    raise SystemExit(f"report_browser_test: python3-selenium is missing ({e}); run scripts/install_deps.sh")

KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
HEATMAP_METRICS = ["fdt75", "fdt_mean", "sdt_mean", "dppl"]
PROBES = 16
PREFIX = 8
COMPLETION = 32
WIDTHS = [(1280, 900), (390, 844)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # No network at all: a page that needed any would show it as an error or a missing figure.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    return driver


class ReportBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dtm_cluster.require_env()
        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.path.exists(path):
                raise SystemExit(f"report_browser_test: {path} is missing; run scripts/install_deps.sh")
        cls.tmp = tempfile.mkdtemp(prefix="dtm-report-")
        cls.artifacts = os.environ.get("DTM_ARTIFACTS_DIR") or os.path.join(cls.tmp, "artifacts")
        os.makedirs(cls.artifacts, exist_ok=True)
        print(f"screenshots in {cls.artifacts}", flush=True)
        with open(os.path.join(cls.tmp, "probes.jsonl"), "w") as f:
            for i in range(PROBES):
                f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [300 + 13 * i + 7 * k for k in range(PREFIX - 1)]}) + "\n")
        common = (f"model: {dtm_cluster.MODEL}\nprobes: probes.jsonl\nnum_probes: {PROBES}\nprefix: {PREFIX}\n"
                  f"completion: {COMPLETION}\nshard_size: 8\n")
        cls.jobs = {}
        specs = {
            "probe": "kind: probe\nname: 'probe <b>&\"x\"</b>'\n" + common + "probe:\n  methods: [int8-absmax, prune:0.9]\n",
            "search": "kind: quant-search\n" + common +
                      "quant-search: {method: prune:0.5, beam: 2, depth: 2, components: ['*.mlp.*', '*.self_attn.o_proj']}\n",
            "round": "kind: sparsify-round\n" + common + "sparsify-round: {step: 0.1, components: ['*.mlp.*']}\n",
        }
        # An evaluate job (Fig. 2's side-by-side histograms) and a two-round sparsification run with
        # a few training steps a round (Fig. 4's rounds and the training loss).
        specs["evaluate"] = ("kind: evaluate\n" + common + "evaluate:\n  configs:\n    - model.layers.0.mlp.down_proj=prune:0.9\n"
                             "    - model.layers.1.self_attn.q_proj=prune:0.9,model.layers.2.mlp.up_proj=prune:0.9\n")
        train_text = os.path.join(cls.tmp, "train.txt")
        subprocess.run([dtm_cluster.DTMCTL, "brown-text", "--corpus", dtm_cluster.BROWN, "--split", "train", "--out",
                        train_text], check=True, capture_output=True, timeout=300)
        with open(train_text) as src, open(os.path.join(cls.tmp, "train.jsonl"), "w") as out:
            for line in src.readlines()[:400]:
                if line.strip():
                    out.write(json.dumps({"text": line.strip()}) + "\n")
        specs["run"] = ("kind: sparsify\n" + common +
                        "sparsify:\n  schedule: [0.2, 0.1]\n  output: run-output\n  components: ['*.mlp.*']\n"
                        "train:\n  data: train.jsonl\n  phases: masked:3,unmasked:1\n  batch: 2\n  seq_len: 32\n"
                        "  max_sequences: 8\n  lr: 0.002\n  workers: 1\n")
        cls.driver = browser()
        for name, spec in specs.items():
            spec_path = os.path.join(cls.tmp, name + ".yaml")
            with open(spec_path, "w") as f:
                f.write(spec)
            report = os.path.join(cls.tmp, name + ".html")
            proc = subprocess.run(
                [dtm_cluster.DTMCTL, "local", spec_path, "--store", "memory", "--format", "json", "--report", report],
                capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise AssertionError(f"dtmctl local {name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            cls.jobs[name] = {"report": report, "results": json.loads(proc.stdout), "stderr": proc.stderr}

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ----
    def open(self, name, width=1280, height=900):
        self.driver.set_window_size(width, height)
        self.driver.get_log("performance")  # drop what earlier pages logged
        self.driver.get_log("browser")
        self.driver.get("file://" + self.jobs[name]["report"])
        self.assertIsNotNone(self.driver.find_element(By.ID, "summary"))
        return self.jobs[name]["results"]

    def check_clean(self, name):
        errors = [e for e in self.driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR", "WARNING")]
        self.assertEqual(errors, [], f"{name}: console messages")
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        own = "file://" + self.jobs[name]["report"]
        self.assertEqual([u for u in urls if u != own and not u.startswith("data:")], [],
                         f"{name}: requests beyond the file itself")
        self.assertIn(own, urls, "the performance log saw no request at all: it cannot vouch for the others")

    def value(self, element):
        text = element.get_attribute("data-value")
        self.assertTrue(text, element.get_attribute("outerHTML")[:200])
        return float(text)

    def check_layout(self, name, width, height):
        """Every shown figure has a size; nothing is wider than the window; a screenshot is kept."""
        self.driver.set_window_size(width, height)
        figures = [f for f in self.driver.find_elements(By.CSS_SELECTOR, "figure.figure") if f.is_displayed()]
        self.assertGreater(len(figures), 0, f"{name}: no figure shown at {width} px")
        for f in figures:
            svg = f.find_element(By.CSS_SELECTOR, "svg")
            size = svg.size
            self.assertGreater(size["width"], 20, f"{name} at {width} px: {f.text[:80]!r} has width {size}")
            self.assertGreater(size["height"], 20, f"{name} at {width} px: {f.text[:80]!r} has height {size}")
            self.assertLessEqual(f.size["width"], width, f"{name}: a figure wider than the {width} px window")
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 1, f"{name}: the page scrolls sideways at {width} px")
        full = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, min(max(full + 120, height), 12000))
        self.driver.save_screenshot(os.path.join(self.artifacts, f"{name}-{width}px.png"))
        self.driver.set_window_size(width, height)
        return len(figures)

    # ---- the checks ----
    def test_probe_job_heatmaps_equal_the_json_results(self):
        results = self.open("probe")
        rows = {r["config"]: r for r in results["results"]}
        layers = max(r["layer"] for r in rows.values() if r["layer"] is not None) + 1
        self.assertEqual(layers, 4)
        self.assertEqual(self.driver.title, 'dtm probe ' + results["job_id"] + ' (probe <b>&"x"</b>)',
                         "the name from the spec shows as text, never as markup")
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "header b"), [])
        checked = 0
        for method in ("int8-absmax", "prune:0.9"):
            for metric in HEATMAP_METRICS:
                maps = self.driver.find_elements(
                    By.CSS_SELECTOR, f'svg.heatmap[data-method="{method}"][data-metric="{metric}"]')
                self.assertEqual(len(maps), 1, (method, metric))
                cells = maps[0].find_elements(By.CSS_SELECTOR, "rect.cell")
                self.assertEqual(len(cells), layers * 7, (method, metric))
                seen = set()
                for cell in cells:
                    layer = int(cell.get_attribute("data-layer"))
                    component = cell.get_attribute("data-component")
                    config = f"model.layers.{layer}.{component}={method}"
                    self.assertEqual(cell.get_attribute("data-config"), config)
                    self.assertEqual(self.value(cell), rows[config][metric], (config, metric))
                    seen.add((layer, component))
                    checked += 1
                self.assertEqual(seen, {(l, k) for l in range(layers) for k in KINDS})
        self.assertEqual(checked, 2 * 4 * layers * 7)
        # Values that differ from cell to cell, so that a cell drawn in another's place would show.
        self.assertGreater(len({r["fdt_mean"] for r in rows.values() if r["method"] == "prune:0.9"}), 10)

        # Only the fdt75 maps show until another metric is chosen; then only that one's.
        shown = lambda: {f.get_attribute("data-metric") for f in self.driver.find_elements(By.CSS_SELECTOR, "#heatmaps figure") if f.is_displayed()}
        self.assertEqual(shown(), {"fdt75"})
        for width, height in WIDTHS:
            self.check_layout("probe-fdt75", width, height)
        for metric in HEATMAP_METRICS[1:]:
            self.driver.find_element(By.CSS_SELECTOR, f'#heatmaps button[data-metric="{metric}"]').click()
            self.assertEqual(shown(), {metric})
            for width, height in WIDTHS:
                self.check_layout(f"probe-{metric}", width, height)
        self.driver.find_element(By.CSS_SELECTOR, '#heatmaps button[data-metric="fdt75"]').click()

        # A click on a cell shows its histogram: the JSON histogram, bar by bar.
        cell = self.driver.find_element(
            By.CSS_SELECTOR, 'svg.heatmap[data-method="prune:0.9"][data-metric="fdt75"] rect.cell[data-layer="2"][data-component="mlp.up_proj"]')
        cell.click()
        config = "model.layers.2.mlp.up_proj=prune:0.9"
        hist = self.driver.find_element(By.CSS_SELECTOR, "svg.selected-histogram")
        self.assertEqual(hist.get_attribute("data-config"), config)
        bars = {int(b.get_attribute("data-fdt")): int(b.get_attribute("data-count"))
                for b in hist.find_elements(By.CSS_SELECTOR, "rect.bar")}
        expected = {i: c for i, c in enumerate(rows[config]["fdt_histogram"]) if c > 0}
        self.assertEqual(bars, expected)
        self.assertEqual(sum(bars.values()), PROBES)
        self.assertEqual(len(rows[config]["fdt_histogram"]), COMPLETION + 1)
        self.assertEqual(self.driver.find_element(By.CSS_SELECTOR, "#results tr.selected").get_attribute("data-config"), config)

        # The table: every row, and sorting by fdt75 puts the largest first.
        table_rows = self.driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        self.assertEqual(len(table_rows), len(results["results"]))
        self.driver.find_element(By.CSS_SELECTOR, '#results th[data-key="fdt75"]').click()
        first = self.driver.find_element(By.CSS_SELECTOR, '#results tbody tr td[data-key="fdt75"]')
        self.assertEqual(float(first.get_attribute("data-value")), max(r["fdt75"] for r in results["results"]))
        self.driver.find_element(By.CSS_SELECTOR, '#results th[data-key="fdt75"]').click()
        first = self.driver.find_element(By.CSS_SELECTOR, '#results tbody tr td[data-key="fdt75"]')
        self.assertEqual(float(first.get_attribute("data-value")), min(r["fdt75"] for r in results["results"]))

        # The noise floor as the JSON has it.
        facts = self.driver.find_element(By.ID, "noise-floor").text
        self.assertIn(str(results["noise_floor"]["fdt75"]).rstrip("0").rstrip("."), facts)
        self.check_clean("probe")

    def test_quant_search_levels_and_grid_equal_the_json_results(self):
        results = self.open("search")
        rows = results["results"]
        bests = {r["search_level"]: r for r in rows if r.get("rank") == 0}
        self.assertEqual(set(bests), {0, 1, 2})
        for metric in HEATMAP_METRICS:
            chart = self.driver.find_element(By.CSS_SELECTOR, f'#search svg.level-chart[data-metric="{metric}"]')
            points = {int(float(p.get_attribute("data-x"))): self.value(p)
                      for p in chart.find_elements(By.CSS_SELECTOR, "circle.point")}
            self.assertEqual(points, {level: r[metric] for level, r in bests.items()}, metric)
        grid = self.driver.find_element(By.CSS_SELECTOR, "#search svg.level-grid")
        coloured = {(int(c.get_attribute("data-layer")), c.get_attribute("data-component")): int(self.value(c))
                    for c in grid.find_elements(By.CSS_SELECTOR, "rect.cell")}
        winner = bests[2]["config"].split(",")
        self.assertEqual(len(winner), 2)
        want = {}
        for part in winner:
            component = part.split("=")[0]
            layer = int(component.split(".")[2])
            kind = ".".join(component.split(".")[3:])
            # Level 1 added the component level 1's winner holds when it is one of the two; the
            # report found the parent among level 1's beam, which the JSON names by rank.
            want[(layer, kind)] = None
        parents = [r for r in rows if r.get("search_level") == 1 and r.get("rank") is not None
                   and r["config"] in winner]
        self.assertTrue(parents, "the level-2 winner has a ranked level-1 parent")
        parent = min(parents, key=lambda r: r["rank"])
        for key in want:
            want[key] = 1 if parent["config"].startswith(f"model.layers.{key[0]}.{key[1]}=") else 2
        self.assertEqual(coloured, want)
        self.assertEqual(len(grid.find_elements(By.CSS_SELECTOR, "rect.missing")), 4 * 7 - 2)
        for width, height in WIDTHS:
            self.check_layout("search", width, height)
        self.check_clean("search")

    def test_sparsify_round_allocation_equals_the_json_results(self):
        results = self.open("round")
        allocation = {c["component"]: c for c in results["allocation"]["components"]}
        self.assertEqual(len(allocation), 4 * 3)
        for field in ("target", "predicted_fdt75"):
            grid = self.driver.find_element(By.CSS_SELECTOR, f'svg.allocation-grid[data-field="{field}"]')
            cells = {f'model.layers.{c.get_attribute("data-layer")}.{c.get_attribute("data-component")}': self.value(c)
                     for c in grid.find_elements(By.CSS_SELECTOR, "rect.cell")}
            self.assertEqual(cells, {k: v[field] for k, v in allocation.items()}, field)
        curves = self.driver.find_elements(By.CSS_SELECTOR, "svg.curve-chart")
        self.assertEqual(sorted(c.get_attribute("data-component") for c in curves),
                         ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"])
        # Each curve's probe points are the round's probe rows.
        rows = {r["config"]: r for r in results["results"]}
        for chart in curves:
            kind = chart.get_attribute("data-component")
            for p in chart.find_elements(By.CSS_SELECTOR, "circle.point"):
                x, y = float(p.get_attribute("data-x")), self.value(p)
                layer = int(p.get_attribute("data-series").split()[-1])
                component = f"model.layers.{layer}.{kind}"
                if (x, y) in ((allocation[component]["current"], COMPLETION), (1.0, 0.0)):
                    continue  # the curve's fixed ends (SPEC "Balanced sparsification round")
                config = f"{component}=prune:{x:g}"
                self.assertIn(config, rows)
                self.assertEqual(y, rows[config]["fdt75"])
        for width, height in WIDTHS:
            self.check_layout("sparsify-round", width, height)
        self.check_clean("round")

    def test_evaluate_job_histograms_side_by_side_equal_the_json_results(self):
        results = self.open("evaluate")
        histograms = self.driver.find_elements(By.CSS_SELECTOR, "#distributions svg.distribution")
        expected = {r["config"]: r["fdt_histogram"] for r in results["results"]}
        expected[""] = results["noise_floor"]["fdt_histogram"]  # the noise floor comes first
        self.assertEqual(len(expected), 3)
        self.assertEqual([h.get_attribute("data-config") for h in histograms][0], "")
        drawn = {}
        for h in histograms:
            drawn[h.get_attribute("data-config")] = {int(b.get_attribute("data-fdt")): int(b.get_attribute("data-count"))
                                                     for b in h.find_elements(By.CSS_SELECTOR, "rect.bar")}
        self.assertEqual(drawn, {c: {i: n for i, n in enumerate(h) if n > 0} for c, h in expected.items()})
        self.assertNotEqual(drawn[results["results"][0]["config"]], drawn[""], "the configs diverge where the model does not")
        for width, height in WIDTHS:
            self.check_layout("evaluate", width, height)
        self.check_clean("evaluate")

    def test_sparsify_run_rounds_and_training_equal_the_json_results(self):
        results = self.open("run")
        rounds = results["rounds"]
        self.assertEqual([r["round"] for r in rounds], [1, 2])
        chart = self.driver.find_element(By.CSS_SELECTOR, "#rounds svg.round-sparsity")
        drawn = {(p.get_attribute("data-series"), int(float(p.get_attribute("data-x")))): self.value(p)
                 for p in chart.find_elements(By.CSS_SELECTOR, "circle.point")}
        want = {}
        for r in rounds:
            for kind in KINDS:
                mine = [c for c in r["allocation"]["components"] if c["component"].endswith("." + kind)]
                if mine:
                    want[(kind, r["round"])] = sum(c["target"] * c["params"] for c in mine) / sum(c["params"] for c in mine)
        self.assertEqual(set(drawn), set(want))
        for key, value in want.items():
            self.assertAlmostEqual(drawn[key], value, places=12, msg=key)  # summed in another order
        fdt = self.driver.find_element(By.CSS_SELECTOR, "#rounds svg.round-fdt75")
        self.assertEqual({int(float(p.get_attribute("data-x"))): self.value(p) for p in fdt.find_elements(By.CSS_SELECTOR, "circle.point")},
                         {r["round"]: r["metrics"]["fdt75"] for r in rounds})
        loss = self.driver.find_element(By.CSS_SELECTOR, "#training svg.training-loss")
        points = [(p.get_attribute("data-series"), self.value(p)) for p in loss.find_elements(By.CSS_SELECTOR, "circle.point")]
        self.assertEqual(points, [(f"round {r['round']}", l) for r in rounds for l in r["training"]["losses"]])
        self.assertEqual(len(points), 2 * 4)
        for width, height in WIDTHS:
            self.check_layout("sparsify-run", width, height)
        self.check_clean("run")

    def test_report_command_on_the_store_writes_the_same_data(self):
        """`dtmctl report` of a job kept in a store draws from the same document as `local --report`."""
        store = "sqlite://" + os.path.join(self.tmp, "kept.sqlite")
        spec = os.path.join(self.tmp, "probe.yaml")
        env = None
        proc = subprocess.run([dtm_cluster.DTMCTL, "local", spec, "--store", store, "--format", "json"],
                              capture_output=True, text=True, timeout=900, env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        job_id = json.loads(proc.stdout)["job_id"]
        out = os.path.join(self.tmp, "from-store.html")
        proc = subprocess.run([dtm_cluster.DTMCTL, "report", job_id, "--store", store, "--out", out],
                              capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("wrote " + out, proc.stderr)
        with open(out, encoding="utf-8") as f:
            page = f.read()
        start = page.index('<script type="application/json" id="dtm-data">') + len('<script type="application/json" id="dtm-data">')
        doc = json.loads(page[start:page.index("</script>", start)])
        self.assertEqual(doc["job"]["job_id"], job_id)
        self.assertEqual(doc["job"]["kind"], "probe")
        self.assertEqual(doc["job"]["state"], "SUCCEEDED")
        with_store = {r["config"]: r for r in doc["results"]["results"]}
        local = {r["config"]: r for r in self.jobs["probe"]["results"]["results"]}
        self.assertEqual(with_store, local)
        self.assertLess(len(page), 2_000_000)
        # An unknown job and an unwritable file fail with exit 2 and say why; nothing is left behind.
        proc = subprocess.run([dtm_cluster.DTMCTL, "report", "j-nope", "--store", store, "--out", out + ".2"],
                              capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("NOT_FOUND", proc.stderr)
        self.assertFalse(os.path.exists(out + ".2"))
        proc = subprocess.run([dtm_cluster.DTMCTL, "report", job_id, "--store", store, "--out",
                               os.path.join(self.tmp, "no-such-folder", "r.html")],
                              capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("no-such-folder", proc.stderr)


class LivePageTest(unittest.TestCase):
    TOKEN = "live-page-token-7f3a"

    def get(self, url, authorization=None):
        request = urllib.request.Request(url)
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, dict(reply.headers), reply.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def test_the_live_page_of_a_running_job_shows_progress_and_needs_the_token(self):
        with dtm_cluster.Cluster(num_workers=1, token=self.TOKEN) as cluster:
            tmp = tempfile.mkdtemp(prefix="dtm-live-", dir=cluster.tmp)
            with open(os.path.join(tmp, "probes.jsonl"), "w") as f:
                for i in range(256):  # token ids within the tiny model's 2048
                    f.write(json.dumps({"id": f"p{i}", "tokens": [1] + [100 + (13 * i + 7 * k) % 1900 for k in range(PREFIX - 1)]}) + "\n")
            spec = os.path.join(tmp, "probe.yaml")
            with open(spec, "w") as f:
                # 2 methods x 28 components x 64 shards + the noise floor: about a minute on one worker
                # here, many refreshes; the test cancels it once it has seen three.
                f.write(f"kind: probe\nmodel: {dtm_cluster.MODEL}\nprobes: {tmp}/probes.jsonl\nnum_probes: 256\n"
                        f"prefix: {PREFIX}\ncompletion: 48\nshard_size: 4\nprobe:\n  methods: [int8-absmax, prune:0.5]\n")
            job_id = cluster.dtmctl("submit", spec).stdout.strip()
            base = f"http://127.0.0.1:{cluster.metrics_port}"
            basic = "Basic " + base64.b64encode(f"anyone:{self.TOKEN}".encode()).decode()

            # Without the token, or with a wrong one: 401 and a Basic challenge, no job data.
            for path in ("/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/report.json"):
                for auth in (None, "Bearer wrong", "Basic " + base64.b64encode(b"x:wrong").decode(), "Basic %%%"):
                    status, headers, body = self.get(base + path, auth)
                    self.assertEqual(status, 401, (path, auth))
                    self.assertIn("Basic", headers.get("WWW-Authenticate", ""))
                    self.assertNotIn(job_id, body)
            status, _, body = self.get(f"{base}/jobs/{job_id}/report.json", "Bearer " + self.TOKEN)
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["job"]["job_id"], job_id)
            status, _, body = self.get(f"{base}/jobs/j-does-not-exist", basic)
            self.assertEqual(status, 404)
            # /metrics stays open for Prometheus.
            self.assertEqual(self.get(base + "/metrics")[0], 200)

            driver = browser()
            try:
                # The browser's network is on here (the page talks to the coordinator); the token
                # goes as a browser would send it after its login prompt.
                driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                                       {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
                driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic}})
                driver.get(f"{base}/jobs")
                link = driver.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{job_id}"]')
                link.click()
                driver.execute_script("window.__sameDocument = true;")
                progress = lambda: int(driver.find_element(By.CSS_SELECTOR, "#progress .progress").get_attribute("data-done"))
                first = progress()
                total = int(driver.find_element(By.CSS_SELECTOR, "#progress .progress").get_attribute("data-total"))
                self.assertGreater(total, first, "the job ended before the page could watch it")
                seen = [first]
                deadline = time.monotonic() + 240
                while len(set(seen)) < 3 and time.monotonic() < deadline:
                    time.sleep(1)
                    seen.append(progress())
                self.assertGreaterEqual(len(set(seen)), 3, f"progress did not move on the page: {seen}")
                self.assertEqual(seen, sorted(seen))
                self.assertTrue(driver.execute_script("return window.__sameDocument === true"),
                                "the page was reloaded rather than redrawn")
                self.assertIn("RUNNING", driver.find_element(By.ID, "job-state").text)
                driver.set_window_size(1280, 900)
                driver.save_screenshot(os.path.join(os.environ.get("DTM_ARTIFACTS_DIR") or tmp, "live-1280px.png"))
                errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
                self.assertEqual(errors, [])
            finally:
                driver.quit()
            cluster.dtmctl("cancel", job_id)


if __name__ == "__main__":
    unittest.main(verbosity=2)
