"""`dtmctl ppl --text` (the literature's perplexity protocol, SPEC `ppl`) on the tiny model against
the independent reference tests/reference/perplexity_reference.py: the rows joined in Python, the
text tokenized by transformers.js (tests/tokenizer/encode.js), the forward in NumPy float64.

Run by CTest (labels `model`, `reference`) after the `tiny_model` fixture; needs DTMCTL,
DTM_TINY_MODEL and DTM_BROWN_DIR, node, and tests/tokenizer's npm packages (setup_node.sh installs
them, from the network on a first run; without them the test fails, it never skips).
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import run, run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]
HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "reference", "perplexity_reference.py")
SETUP_NODE = os.path.join(HERE, "..", "tokenizer", "setup_node.sh")

# dtm computes in float32, the reference in float64: their perplexities agree to this, relatively.
REL_TOL = 1e-6
LINES = 60  # held-out Brown sentences: about 2,600 tokens once joined


def reference(text, window, *extra):
    proc = subprocess.run([sys.executable, REFERENCE, "--model", MODEL, "--text", text, "--window", str(window),
                           *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"perplexity_reference.py failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


class DtmctlPplTest(unittest.TestCase):
    max_rel_diff = 0.0

    @classmethod
    def setUpClass(cls):
        subprocess.run(["sh", SETUP_NODE], check=True)
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-ppl-test-")
        held_out = os.path.join(cls.tmp, "held-out.txt")
        run("brown-text", "--corpus", BROWN, "--split", "held-out", "--out", held_out)
        with open(held_out, encoding="utf-8") as f:
            lines = f.read().splitlines()[:LINES]
        # Lines the row rule turns into empty rows (empty, spaces, U+00A0), and a CRLF line ending.
        lines[3:3] = ["", "   ", "\u00a0"]
        cls.text = os.path.join(cls.tmp, "text.txt")
        with open(cls.text, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines[:10]) + "\r\n" + "\n".join(lines[10:]) + "\n")

    @classmethod
    def tearDownClass(cls):
        print(f"\nmax relative |ppl - reference| / reference: {cls.max_rel_diff:.3g}", file=sys.stderr)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check_against_reference(self, ours, theirs, window):
        self.assertEqual(ours["window"], window)
        for key in ("windows", "tokens_scored", "text_tokens"):
            self.assertEqual(ours[key], theirs[key], key)
        self.assertGreater(ours["windows"], 1)
        self.assertEqual(ours["windows"], ours["text_tokens"] // window)
        self.assertEqual(ours["tokens_scored"], ours["windows"] * (window - 1))
        self.assertEqual(ours["tokens_dropped"], ours["text_tokens"] % window)
        self.assertAlmostEqual(ours["ppl"], math.exp(ours["nll_mean"]), delta=1e-12 * ours["ppl"])
        rel = abs(ours["ppl"] - theirs["ppl"]) / theirs["ppl"]
        DtmctlPplTest.max_rel_diff = max(DtmctlPplTest.max_rel_diff, rel)
        self.assertLessEqual(rel, REL_TOL, f"ppl {ours['ppl']!r} vs reference {theirs['ppl']!r}")

    def expect_error(self, args, *needles):
        proc = run(*args, check=False)
        self.assertEqual(proc.returncode, 2, f"dtmctl {args}: exit {proc.returncode}\n{proc.stderr}")
        self.assertEqual(proc.stdout, "")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, proc.stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])
        return lines[0]

    # -- the numbers

    def test_uncompressed_matches_the_reference_for_two_window_lengths(self):
        results = {}
        for window in (64, 256):
            with self.subTest(window=window):
                ours = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", str(window))
                self.assertEqual(ours["config"], "")
                self.check_against_reference(ours, reference(self.text, window), window)
                results[window] = ours
        # Longer windows give each token more context: a language model does better, not worse.
        self.assertLess(results[256]["ppl"], results[64]["ppl"])
        print(f"\ntiny model ppl: W=64 {results[64]['ppl']:.6f} ({results[64]['windows']} windows), "
              f"W=256 {results[256]['ppl']:.6f} ({results[256]['windows']} windows), "
              f"{results[64]['text_tokens']} text tokens", file=sys.stderr)

    def test_compressed_matches_the_reference_applying_the_same_compression(self):
        spec = "model.layers.0.self_attn.v_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5"
        ours = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", "128", "--compress", spec)
        self.assertEqual(ours["config"], spec)
        self.check_against_reference(ours, reference(self.text, 128, "--compress", spec), 128)
        plain = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", "128")
        self.assertGreater(abs(ours["ppl"] - plain["ppl"]) / plain["ppl"], 100 * REL_TOL,
                           "the compression should move ppl by far more than the tolerance")

    def test_compress_file_gives_each_config_the_ppl_compress_gives_it(self):
        configs = ["model.layers.1.mlp.down_proj=prune:0.5", "model.layers.1.mlp.down_proj=int8-absmax",
                   "model.layers.0.self_attn.q_proj=int8-absmax-row,model.layers.3.mlp.up_proj=random-prune:0.3:5"]
        path = os.path.join(self.tmp, "ppl-configs.txt")
        with open(path, "w") as f:
            f.write("# three configs\n" + "\n".join(configs) + "\n")
        proc = run("ppl", "--model", MODEL, "--text", self.text, "--window", "64", "--compress-file", path)
        batch = [json.loads(line) for line in proc.stdout.splitlines()]
        self.assertEqual([b["config"] for b in batch], configs)
        for config, got in zip(configs, batch):
            alone = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", "64", "--compress", config)
            for key in ("ppl", "nll_mean", "windows", "tokens_scored", "text_tokens"):
                self.assertEqual(got[key], alone[key], f"{config}: {key}")
        self.assertNotEqual(batch[0]["ppl"], batch[1]["ppl"])  # the pruned weights were restored in between
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--window", "64", "--compress-file", path,
                           "--compress", configs[0]], "not both")
        with open(path, "a") as f:
            f.write("model.layers.2.mlp.gate_proj=gptq:4\n")
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--window", "64", "--compress-file", path],
                          f"{path}:5", "gptq", "--calibration")

    def test_as_is_reads_text_already_joined(self):
        # The file holding Python's "\n\n".join(rows) gives, read as is, the same windows and ppl.
        with open(self.text, encoding="utf-8") as f:
            rows = [row if row.strip() else "" for row in f]
        joined = os.path.join(self.tmp, "joined.txt")
        with open(joined, "w", encoding="utf-8", newline="") as f:
            f.write("\n\n".join(rows))
        rows_mode = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", "64")
        as_is = run_json("ppl", "--model", MODEL, "--text", joined, "--join", "as-is", "--window", "64")
        for key in ("ppl", "windows", "text_tokens"):
            self.assertEqual(rows_mode[key], as_is[key], key)
        # Joined twice, the text differs, and so does the tokenization.
        twice = run_json("ppl", "--model", MODEL, "--text", joined, "--window", "64")
        self.assertNotEqual(twice["text_tokens"], rows_mode["text_tokens"])

    def test_gptq_runs_with_an_explicit_calibration_file(self):
        probes = os.path.join(self.tmp, "calibration.jsonl")
        run("make-probes", "--model", MODEL, "--corpus", self.text, "--count", "8", "--prefix", "64", "--out", probes)
        out = run_json("ppl", "--model", MODEL, "--text", self.text, "--window", "256", "--compress",
                       "model.layers.2.mlp.gate_proj=gptq:4", "--calibration", probes, "--calibration-count", "8",
                       "--calibration-seq-len", "64")
        self.assertTrue(math.isfinite(out["ppl"]) and out["ppl"] > 1.0, out)
        self.assertEqual(len(out["calibration_fingerprint"]), 64)

    # -- bad input: exit 2, one line naming what is wrong, nothing on stdout

    def test_modes_do_not_mix(self):
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--corpus", self.text], "--text", "--corpus")
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--count", "3", "--prefix", "5"],
                          "--count, --prefix belong to the --corpus mode")
        self.expect_error(["ppl", "--model", MODEL, "--corpus", self.text, "--window", "64"],
                          "--window belongs to the --text mode")
        self.expect_error(["ppl", "--model", MODEL, "--corpus", self.text, "--compress",
                           "model.layers.0.mlp.up_proj=int8-absmax"], "--compress belongs to the --text mode")
        self.expect_error(["ppl", "--model", MODEL], "--text", "--corpus")

    def test_window_outside_two_to_the_context(self):
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--window", "1"], "--window 1", "at least 2")
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--window", "1025"], "--window 1025",
                          "max_position_embeddings 1024")

    def test_text_shorter_than_one_window_names_its_token_count(self):
        short = os.path.join(self.tmp, "short.txt")
        with open(short, "w", encoding="utf-8") as f:
            f.write("A short line.\n")
        line = self.expect_error(["ppl", "--model", MODEL, "--text", short, "--window", "64"], short,
                                 "fewer than one window of 64 tokens")
        self.assertRegex(line, r": \d+ tokens \(BOS included\)")

    def test_gptq_without_calibration_is_refused(self):
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--window", "64", "--compress",
                           "model.layers.2.mlp.gate_proj=gptq:4"], "gptq", "--calibration")

    def test_missing_text_file_and_bad_join(self):
        self.expect_error(["ppl", "--model", MODEL, "--text", "/nonexistent/wiki.test.raw", "--window", "64"],
                          "/nonexistent/wiki.test.raw")
        self.expect_error(["ppl", "--model", MODEL, "--text", self.text, "--join", "lines"], "--join", "lines")


if __name__ == "__main__":
    unittest.main(verbosity=2)
