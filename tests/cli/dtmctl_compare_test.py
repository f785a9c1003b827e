"""End-to-end tests of `dtmctl compare` on the tiny model, and of eval's warning about a baseline of
another model: the reference compared with itself gives exactly eval's noise floor; the reference
compared with its int8 (and pruned) checkpoint written by `dtmctl apply` gives exactly what `dtmctl eval
--compress` gives; the reference's baseline is cached and the second run takes it from the cache;
a stale cache file is recomputed; eval warns for a foreign baseline and not for its own; a
`dtmctl local` job with `reference:` gives what `compare` gives.

Run by CTest (label `model`) after the `tiny_model` fixture; needs DTMCTL, DTM_TINY_MODEL and
DTM_BROWN_DIR in the environment. XDG_CACHE_HOME points into the test's temporary folder, so the
default cache location is exercised without touching the user's.
"""
import gzip
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import run, run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]

# Small: CI has 2 cores.
PREFIX = 16
COMPLETION = 24
PROBES = 6
# int8 alone changes no greedy token of probes this short on the tiny model (only the NLL), so a
# prune rides along: FDT and SDT then differ from the completion length and from 0, and their
# equality with eval's says something.
CONFIG = "model.layers.0.mlp.down_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.7"
METRICS = ("fdt75", "fdt_mean", "sdt_mean", "dppl", "nll_mean")


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_rows(path, rows):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


class DtmctlCompareTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-compare-test-")
        cls.cache_home = os.path.join(cls.tmp, "xdg-cache")
        os.environ["XDG_CACHE_HOME"] = cls.cache_home  # inherited by every dtmctl run below
        text = os.path.join(cls.tmp, "held-out.txt")
        run("brown-text", "--corpus", BROWN, "--split", "held-out", "--out", text)
        cls.probes = os.path.join(cls.tmp, "probes.jsonl")
        run("make-probes", "--model", MODEL, "--corpus", text, "--count", str(PROBES), "--prefix", str(PREFIX),
            "--out", cls.probes)
        cls.baseline = os.path.join(cls.tmp, "baseline.jsonl")
        cls.baseline_summary = run_json("baseline", "--model", MODEL, "--probes", cls.probes, "--completion",
                                        str(COMPLETION), "--out", cls.baseline)
        cls.int8 = os.path.join(cls.tmp, "int8")
        run("apply", "--model", MODEL, "--config", CONFIG, "--out", cls.int8)
        # In this order: the first comparison computes the reference's baseline, the second finds it cached.
        cls.first = cls.compare(MODEL)
        cls.second_proc = run(*cls.compare_args(cls.int8))
        cls.second = json.loads(cls.second_proc.stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def compare_args(cls, candidate, *extra, fmt="json"):
        return ("compare", "--reference", MODEL, "--model", candidate, "--probes", cls.probes, "--completion",
                str(COMPLETION), "--format", fmt, *extra)

    @classmethod
    def compare(cls, candidate, *extra):
        return run_json(*cls.compare_args(candidate, *extra))

    def eval(self, model, *extra, baseline=None):
        proc = run("eval", "--model", model, "--baseline", baseline or self.baseline, *extra)
        return json.loads(proc.stdout), proc.stderr

    # -- the numbers

    def test_reference_against_itself_is_evals_noise_floor(self):
        ours = self.first
        theirs, _ = self.eval(MODEL)
        self.assertEqual(ours["reference"]["fingerprint"], ours["candidate"]["fingerprint"])
        self.assertTrue(ours["same_weights"])
        for key in METRICS:
            self.assertEqual(ours["reference"]["noise_floor"][key], theirs["noise_floor"][key], key)
            self.assertEqual(ours["candidate"][key], theirs[key], key)
        self.assertEqual(ours["candidate"]["per_probe"], theirs["per_probe"])
        self.assertEqual(ours["probes"], PROBES)
        self.assertEqual(ours["prefix"], PREFIX)
        self.assertEqual(ours["completion"], COMPLETION)
        self.assertEqual(ours["warnings"], [])

    def test_int8_checkpoint_equals_eval_with_the_config(self):
        ours = self.second
        theirs, _ = self.eval(MODEL, "--compress", CONFIG)
        for key in METRICS:
            self.assertEqual(ours["candidate"][key], theirs[key], key)
            # The reference's noise floor, not the candidate against itself.
            self.assertEqual(ours["reference"]["noise_floor"][key], theirs["noise_floor"][key], key)
        self.assertEqual(ours["candidate"]["per_probe"], theirs["per_probe"])
        self.assertEqual(ours["candidate"]["fdt_histogram"], theirs["fdt_histogram"])
        self.assertFalse(ours["same_weights"])
        self.assertEqual(ours["reference"]["model"], MODEL)
        self.assertEqual(ours["candidate"]["model"], self.int8)
        self.assertEqual(ours["reference"]["fingerprint"], self.first["reference"]["fingerprint"])
        self.assertNotEqual(ours["candidate"]["fingerprint"], ours["reference"]["fingerprint"])
        # And the config moved the greedy tokens of these probes, so the equality above says something.
        self.assertLess(ours["candidate"]["fdt_mean"], COMPLETION)
        self.assertGreater(ours["candidate"]["sdt_mean"], 0)
        self.assertNotEqual([p["nll"] for p in ours["candidate"]["per_probe"]],
                            [p["nll"] for p in self.first["candidate"]["per_probe"]])

    def test_table_names_reference_and_candidate_with_fingerprints(self):
        proc = run(*self.compare_args(self.int8, fmt="table"))
        lines = proc.stdout.splitlines()
        s = self.second
        self.assertEqual(lines[0].split(), ["reference", MODEL])
        self.assertEqual(lines[1].split(), ["fingerprint", s["reference"]["fingerprint"]])
        self.assertEqual(lines[2].split(), ["candidate", self.int8])
        self.assertEqual(lines[3].split(), ["fingerprint", s["candidate"]["fingerprint"]])
        rows = {line.split(" (")[0]: line.split()[-5:] for line in lines if line.startswith(("reference (", "candidate ("))}

        def printed(m):
            return [f"{m['fdt75']:.2f}", f"{m['fdt_mean']:.2f}", f"{m['sdt_mean']:.2f}", f"{m['dppl']:.4f}",
                    f"{m['nll_mean']:.4f}"]
        self.assertEqual(rows["reference"], printed(s["reference"]["noise_floor"]))
        self.assertEqual(rows["candidate"], printed(s["candidate"]))

    # -- the cache

    def test_second_run_takes_the_baseline_from_the_cache(self):
        first, second = self.first["baseline"], self.second["baseline"]
        self.assertEqual(first["source"], "computed")
        self.assertEqual(second["source"], "cache")
        self.assertIn("from the cache", self.second_proc.stderr)
        self.assertEqual(second["cache_file"], first["cache_file"])
        self.assertEqual(os.path.dirname(first["cache_file"]), os.path.join(self.cache_home, "dtm", "baselines"))
        self.assertEqual(second["fingerprint"], first["fingerprint"])
        # The cached file is what `dtmctl baseline` writes, and says whose completions it holds.
        self.assertEqual(first["fingerprint"], self.baseline_summary["fingerprint"])
        cached = read_rows(first["cache_file"])
        self.assertEqual([r["tokens"] for r in cached], [r["tokens"] for r in read_rows(self.baseline)])
        self.assertEqual({r["model_fingerprint"] for r in cached}, {self.first["reference"]["fingerprint"]})

    def test_stale_cache_file_is_recomputed_and_no_cache_writes_nothing(self):
        cache_dir = os.path.join(self.tmp, "stale-cache")
        os.mkdir(cache_dir)
        name = os.path.basename(self.first["baseline"]["cache_file"])
        rows = read_rows(self.first["baseline"]["cache_file"])
        for r in rows:
            r["model_fingerprint"] = "0" * 64
        write_rows(os.path.join(cache_dir, name), rows)
        proc = run(*self.compare_args(self.int8, "--cache-dir", cache_dir))
        out = json.loads(proc.stdout)
        self.assertEqual(out["baseline"]["source"], "computed")
        self.assertEqual(len(out["warnings"]), 1)
        self.assertIn("ignoring the cached baseline", out["warnings"][0])
        self.assertIn("warning: ignoring the cached baseline", proc.stderr)
        self.assertEqual(out["candidate"]["per_probe"], self.second["candidate"]["per_probe"])
        # Replaced by the right one.
        self.assertEqual({r["model_fingerprint"] for r in read_rows(os.path.join(cache_dir, name))},
                         {self.first["reference"]["fingerprint"]})

        none_dir = os.path.join(self.tmp, "no-cache-home")
        env_before = os.environ["XDG_CACHE_HOME"]
        os.environ["XDG_CACHE_HOME"] = none_dir
        try:
            out = self.compare(MODEL, "--no-cache")
        finally:
            os.environ["XDG_CACHE_HOME"] = env_before
        self.assertEqual(out["baseline"]["source"], "computed")
        self.assertIsNone(out["baseline"]["cache_file"])
        self.assertFalse(os.path.exists(none_dir))

    # -- the same comparison as a service job: `reference:` in a spec, run by `dtmctl local`

    def local_against(self, model, configs, fmt="json"):
        # One shard of every probe, batched as `compare` batches them: float32 sums depend on the batch
        # shape (shards of 4 gave a dppl 2e-8 away), and this test wants the numbers exactly equal.
        spec = os.path.join(self.tmp, "against-reference.yaml")
        with open(spec, "w") as f:
            f.write(f"kind: evaluate\nmodel: {model}\nreference: {MODEL}\nprobes: {self.probes}\n"
                    f"prefix: {PREFIX}\ncompletion: {COMPLETION}\nshard_size: 6\n"
                    f"evaluate:\n  configs: {json.dumps(configs)}\n")
        return run("local", spec, "--store", "sqlite://" + os.path.join(self.tmp, "local.sqlite"), "--format", fmt)

    def assert_metrics(self, got, want, what):
        for key in METRICS:
            self.assertEqual(got[key], want[key], f"{what}: {key}")

    def test_a_job_with_a_reference_equals_compare(self):
        extra = "model.layers.2.mlp.up_proj=prune:0.5"
        both = os.path.join(self.tmp, "int8-then-prune")
        run("apply", "--model", self.int8, "--config", extra, "--out", both)
        out = json.loads(self.local_against(self.int8, [extra]).stdout)
        reference_fp = self.first["reference"]["fingerprint"]
        self.assertEqual(out["state"], "SUCCEEDED")
        self.assertEqual(out["reference_model_fingerprint"], reference_fp)
        self.assertEqual([r["config"] for r in out["results"]], ["", extra])
        # The reference's noise floor; the int8 checkpoint as it is; and with a config applied on top,
        # each equal to `compare` of the checkpoint holding those weights.
        self.assert_metrics(out["noise_floor"], self.second["reference"]["noise_floor"], "noise floor")
        self.assert_metrics(out["results"][0], self.second["candidate"], "the int8 checkpoint")
        self.assert_metrics(out["results"][1], self.compare(both)["candidate"], "int8 then the prune")
        self.assertNotEqual(out["results"][1]["fdt_histogram"], out["results"][0]["fdt_histogram"])

        # The table says whose baseline it is; a second run is answered from the store's cache.
        proc = self.local_against(self.int8, [extra], fmt="table")
        lines = proc.stdout.splitlines()
        reference_row = next(line for line in lines if line.startswith("(reference)"))
        self.assertEqual(reference_row.split()[1], f"{out['noise_floor']['fdt75']:.2f}")
        own_row = next(line for line in lines if line.startswith("(uncompressed)"))
        self.assertEqual(own_row.split()[2], f"{out['results'][0]['fdt_mean']:.2f}")
        self.assertIn("baseline: the greedy completions of the reference " + reference_fp[:12], proc.stdout)

        # No configs: the checkpoint as it is against the reference, alone (a sparsification round's
        # evaluation), the same numbers as the row above.
        alone = json.loads(self.local_against(self.int8, []).stdout)
        self.assertEqual(alone["state"], "SUCCEEDED")
        self.assertEqual([r["config"] for r in alone["results"]], [""])
        self.assert_metrics(alone["results"][0], self.second["candidate"], "the int8 checkpoint alone")

        # A reference with the model's own weights is the model's own baseline: its row is the noise floor.
        same = json.loads(self.local_against(MODEL, [extra]).stdout)
        self.assertEqual(same["reference_model_fingerprint"], reference_fp)
        self.assert_metrics(same["results"][0], self.first["reference"]["noise_floor"], "the reference as it is")
        self.assert_metrics(same["noise_floor"], self.first["reference"]["noise_floor"], "its noise floor")

    # -- eval's check of the baseline's model

    def test_eval_warns_for_another_models_baseline_only(self):
        reference_fp = self.first["reference"]["fingerprint"]
        own, stderr = self.eval(MODEL)
        self.assertEqual(own["warnings"], [])
        self.assertNotIn("warning", stderr)
        self.assertEqual(own["model_fingerprint"], reference_fp)
        self.assertEqual(own["baseline_model_fingerprint"], reference_fp)
        self.assertEqual(self.baseline_summary["model_fingerprint"], reference_fp)

        foreign, stderr = self.eval(self.int8)
        self.assertEqual(foreign["model_fingerprint"], self.second["candidate"]["fingerprint"])
        self.assertEqual(foreign["baseline_model_fingerprint"], reference_fp)
        self.assertEqual(len(foreign["warnings"]), 1)
        self.assertIn("another model", foreign["warnings"][0])
        self.assertIn("noise floor", foreign["warnings"][0])
        self.assertIn("dtmctl eval: warning: baseline " + self.baseline, stderr)

        # A file that does not say whose it is (older files, other tools): nothing to compare, no warning.
        anonymous = os.path.join(self.tmp, "anonymous.jsonl")
        write_rows(anonymous, [{k: v for k, v in r.items() if k != "model_fingerprint"} for r in read_rows(self.baseline)])
        unknown, stderr = self.eval(self.int8, baseline=anonymous)
        self.assertIsNone(unknown["baseline_model_fingerprint"])
        self.assertEqual(unknown["warnings"], [])
        self.assertNotIn("warning", stderr)

    def test_baseline_rows_of_two_models_are_refused(self):
        rows = read_rows(self.baseline)
        rows[2]["model_fingerprint"] = "0" * 64
        mixed = os.path.join(self.tmp, "mixed.jsonl")
        write_rows(mixed, rows)
        proc = run("eval", "--model", MODEL, "--baseline", mixed, check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertIn(mixed + ": row 3: \"model_fingerprint\"", proc.stderr)

    # -- usage errors: exit 2, nothing on stdout

    def test_bad_input_exits_2(self):
        for args in (self.compare_args(MODEL, fmt="xml"),
                     ("compare", "--model", MODEL, "--probes", self.probes),
                     self.compare_args(MODEL, "--no-cache", "--cache-dir", self.tmp),
                     self.compare_args(os.path.join(self.tmp, "missing"))):
            with self.subTest(args=args):
                proc = run(*args, check=False)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertEqual(proc.stdout, "")


if __name__ == "__main__":
    unittest.main(verbosity=2)
