"""End-to-end tests of dtmctl on the tiny model: the commands' JSON, the numbers against the
independent numpy reference (tests/reference/llama_reference.py), and bad input.

Run by CTest (label `model`) after the `tiny_model` fixture; needs DTMCTL, DTM_TINY_MODEL and
DTM_BROWN_DIR in the environment.
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import run, run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]
REFERENCE = os.path.join(os.path.dirname(__file__), "..", "reference")

PREFIX = 24
COMPLETION = 48
PROBES = 12


def read_jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


class DtmctlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-test-")
        cls.text = os.path.join(cls.tmp, "held-out.txt")
        run("brown-text", "--corpus", BROWN, "--split", "held-out", "--out", cls.text)
        cls.probes = os.path.join(cls.tmp, "probes.jsonl.gz")
        made = run_json("make-probes", "--model", MODEL, "--corpus", cls.text, "--count", str(PROBES),
                        "--prefix", str(PREFIX), "--out", cls.probes)
        assert made["probes"] == PROBES, made
        cls.baseline = os.path.join(cls.tmp, "baseline.jsonl")
        run("baseline", "--model", MODEL, "--probes", cls.probes, "--completion", str(COMPLETION),
            "--out", cls.baseline, "--batch-size", "5")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def expect_error(self, args, *needles):
        proc = run(*args, check=False)
        self.assertNotEqual(proc.returncode, 0, f"dtmctl {args} succeeded")
        self.assertNotIn("Traceback", proc.stderr)
        lines = [l for l in proc.stderr.splitlines() if l.strip() and "error" in l]
        self.assertEqual(len(lines), 1, proc.stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])
        return lines[0]

    # -- the numbers

    def test_probe_and_baseline_files_have_the_shared_format(self):
        probes = read_jsonl(self.probes)
        self.assertEqual(len(probes), PROBES)
        for p in probes:
            self.assertIsInstance(p["id"], str)
            self.assertEqual(len(p["tokens"]), PREFIX)
            self.assertEqual(p["tokens"][0], 1)  # BOS
        rows = read_jsonl(self.baseline)
        self.assertEqual([r["id"] for r in rows], [p["id"] for p in probes])
        for r, p in zip(rows, probes):
            self.assertEqual(r["prefix_len"], PREFIX)
            self.assertEqual(r["tokens"][:PREFIX], p["tokens"])
            self.assertEqual(len(r["tokens"]), PREFIX + COMPLETION)

    def test_uncompressed_model_has_fdt_equal_to_the_completion_length_for_every_probe(self):
        result = run_json("eval", "--model", MODEL, "--baseline", self.baseline, "--compress", "")
        self.assertEqual(len(result["per_probe"]), PROBES)
        for p in result["per_probe"]:
            self.assertEqual(p["fdt"], COMPLETION, p)
            self.assertEqual(p["sdt"], 0, p)
        self.assertEqual(result["fdt75"], COMPLETION)
        self.assertEqual(result["noise_floor"]["fdt75"], COMPLETION)

    def test_baseline_matches_the_reference_greedy_generation(self):
        ref = subprocess.run([sys.executable, os.path.join(REFERENCE, "llama_reference.py"), "baseline", "--model", MODEL,
                              "--probes", self.probes, "--completion", str(COMPLETION)],
                             capture_output=True, text=True, check=True)
        ref_path = os.path.join(self.tmp, "ref-baseline.jsonl")
        with open(ref_path, "w") as f:
            f.write(ref.stdout)
        subprocess.run([sys.executable, os.path.join(REFERENCE, "compare_baseline.py"), self.baseline, ref_path], check=True)

    def test_eval_matches_the_independent_reference(self):
        for spec in ["", "model.layers.0.self_attn.v_proj=int8-absmax",
                     "model.layers.1.mlp.down_proj=int8-absmax-row,model.layers.2.self_attn.k_proj=prune:0.6",
                     "model.layers.3.mlp.up_proj=prune:0.9"]:
            with self.subTest(spec=spec):
                ours = os.path.join(self.tmp, "ours.json")
                theirs = os.path.join(self.tmp, "theirs.json")
                with open(ours, "w") as f:
                    f.write(run("eval", "--model", MODEL, "--baseline", self.baseline, "--compress", spec,
                                "--no-noise-floor").stdout)
                ref = subprocess.run([sys.executable, os.path.join(REFERENCE, "llama_reference.py"), "eval", "--model",
                                      MODEL, "--baseline", self.baseline, "--compress", spec],
                                     capture_output=True, text=True, check=True)
                with open(theirs, "w") as f:
                    f.write(ref.stdout)
                subprocess.run([sys.executable, os.path.join(REFERENCE, "compare_eval.py"), ours, theirs,
                                "--nll-tol", "1e-4"], check=True)

    def test_every_method_runs_and_compression_diverges(self):
        for spec in ["model.layers.0.self_attn.q_proj=random-prune:0.5:3", "model.layers.1.mlp.up_proj=llm-int8",
                     "model.layers.2.mlp.gate_proj=gptq:4:g64", "model.layers.2.mlp.gate_proj=gptq:2"]:
            with self.subTest(spec=spec):
                calibration = ["--calibration", "baseline", "--calibration-count", str(PROBES),
                               "--calibration-seq-len", str(PREFIX + COMPLETION)] if "gptq" in spec else []
                result = run_json("eval", "--model", MODEL, "--baseline", self.baseline, "--compress", spec,
                                  *calibration)
                self.assertEqual(result["config"], spec)
                for key in ("fdt75", "fdt_mean", "sdt_mean", "dppl", "per_probe", "fdt_histogram", "noise_floor",
                            "outlier_columns_mean"):
                    self.assertIn(key, result)
                counts = [p["outlier_columns"] for p in result["per_probe"]]
                self.assertAlmostEqual(result["outlier_columns_mean"], sum(counts) / len(counts))
                if "llm-int8" not in spec:
                    self.assertEqual(counts, [0] * PROBES)
                self.assertEqual(sum(result["fdt_histogram"]), PROBES)
                self.assertLessEqual(result["fdt_mean"], COMPLETION)
        # Removing a whole MLP matrix is far from free.
        heavy = run_json("eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                         "model.layers.0.mlp.down_proj=prune:1")
        self.assertLess(heavy["fdt_mean"], COMPLETION)

    def test_compress_file_scores_each_line_as_compress_does(self):
        # Methods whose weights the evaluator must restore exactly between configs: a pruned matrix
        # scored before an int8 one of the same component, a gptq config in the middle.
        configs = ["model.layers.0.mlp.down_proj=prune:0.9", "model.layers.0.mlp.down_proj=int8-absmax",
                   "model.layers.2.mlp.gate_proj=gptq:4:g64",
                   "model.layers.1.self_attn.v_proj=int8-absmax-row,model.layers.3.mlp.up_proj=prune:0.5"]
        calibration = ["--calibration", "baseline", "--calibration-count", str(PROBES),
                       "--calibration-seq-len", str(PREFIX + COMPLETION)]
        path = os.path.join(self.tmp, "configs.txt")
        with open(path, "w") as f:
            f.write(f"# the configs of one run\n{configs[0]}\n\n  {configs[1]}  \n{configs[2]}\r\n{configs[3]}")
        lines = run("eval", "--model", MODEL, "--baseline", self.baseline, "--compress-file", path,
                    *calibration).stdout.splitlines()
        self.assertEqual(len(lines), len(configs), lines)
        batch = [json.loads(line) for line in lines]
        floor = run_json("eval", "--model", MODEL, "--baseline", self.baseline, "--compress", "")["noise_floor"]
        for config, got in zip(configs, batch):
            with self.subTest(config=config):
                alone = run_json("eval", "--model", MODEL, "--baseline", self.baseline, "--compress", config,
                                 *calibration)
                self.assertEqual(got["config"], config)
                for key in ("per_probe", "fdt75", "fdt_mean", "sdt_mean", "dppl", "fdt_histogram", "noise_floor"):
                    self.assertEqual(got[key], alone[key], key)
                # The calibration set's fingerprint only beside the config that used it, as alone.
                self.assertEqual(got.get("calibration_fingerprint"), alone.get("calibration_fingerprint"))
                self.assertEqual("calibration_fingerprint" in got, "gptq" in config)
                self.assertEqual(got["noise_floor"], floor)
        # Bad lines are named by file and line; --compress beside it is a usage error.
        with open(path, "a") as f:
            f.write("\nmodel.layers.9.mlp.up_proj=int8-absmax\n")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress-file", path,
                           *calibration], f"{path}:7", "model.layers.9.mlp.up_proj")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress-file", path,
                           "--compress", configs[0]], "not both")
        empty = os.path.join(self.tmp, "no-configs.txt")
        with open(empty, "w") as f:
            f.write("# nothing\n\n")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress-file", empty],
                          empty, "holds no config")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress-file", "/dev/zero"],
                          "/dev/zero")

    def test_baseline_and_eval_need_no_tokenizer(self):
        bare = os.path.join(self.tmp, "bare-model")
        shutil.copytree(MODEL, bare)
        for name in ("tokenizer.json", "tokenizer.model"):
            os.remove(os.path.join(bare, name))
        out = os.path.join(self.tmp, "bare-baseline.jsonl")
        run("baseline", "--model", bare, "--probes", self.probes, "--completion", "8", "--out", out)
        result = run_json("eval", "--model", bare, "--baseline", out)
        self.assertEqual(result["fdt75"], 8)

    def test_reads_a_probe_file_written_by_another_tool(self):
        path = os.path.join(self.tmp, "foreign.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"id": "x", "tokens": [1, 50, 60, 70]}) + "\n\n")
            f.write(json.dumps({"tokens": [1, 80, 90, 100], "id": "y", "note": "extra keys are fine"}) + "\n")
        out = os.path.join(self.tmp, "foreign-baseline.jsonl.gz")
        run("baseline", "--model", MODEL, "--probes", path, "--completion", "5", "--out", out)
        rows = read_jsonl(out)
        self.assertEqual([(r["id"], r["prefix_len"], len(r["tokens"])) for r in rows], [("x", 4, 9), ("y", 4, 9)])

    def test_ground_truth_perplexity_is_finite_and_reasonable(self):
        ppl = run_json("ppl", "--model", MODEL, "--corpus", self.text, "--count", "8", "--prefix", "16",
                       "--completion", "64")
        self.assertEqual(ppl["tokens_scored"], 8 * 64)
        self.assertGreater(ppl["ppl"], 1.0)
        self.assertLess(ppl["ppl"], 2048)  # better than uniform over the vocabulary

    def test_make_probes_samples_documents_at_random_by_seed(self):
        # 40 C4-style documents, each far longer than the 8-token prefix, so every one is a candidate
        # and the sample can be predicted here with an independent SplitMix64.
        with open(self.text) as f:
            words = f.read().split()
        corpus = os.path.join(self.tmp, "c4-sample.jsonl")
        with open(corpus, "w") as f:
            for d in range(40):
                f.write(json.dumps({"text": " ".join(words[d * 40:(d + 1) * 40])}) + "\n")

        def make(*extra):
            out = os.path.join(self.tmp, "sampled.jsonl")
            made = run_json("make-probes", "--model", MODEL, "--corpus", corpus, "--prefix", "8", "--out", out, *extra)
            return made, [row["id"] for row in read_jsonl(out)]

        def splitmix64(seed, index):
            mask = (1 << 64) - 1
            z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & mask
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            return z ^ (z >> 31)

        made, ids = make("--count", "10", "--sample", "random", "--seed", "2024")
        self.assertEqual((made["sample"], made["seed"], made["probes"]), ("random", 2024, 10))
        lines = sorted(range(1, 41), key=lambda line: splitmix64(2024, line))
        self.assertEqual(ids, [f"c4-sample.jsonl:{line}" for line in lines[:10]])
        self.assertEqual(len(set(ids)), 10)
        again, ids_again = make("--count", "10", "--sample", "random", "--seed", "2024")
        self.assertEqual((ids_again, again["fingerprint"]), (ids, made["fingerprint"]))
        _, other = make("--count", "10", "--sample", "random", "--seed", "2025")
        self.assertNotEqual(other, ids)
        _, first = make("--count", "10")
        self.assertEqual(first, [f"c4-sample.jsonl:{line}" for line in range(1, 11)])  # the default: corpus order
        _, everything = make("--count", "40", "--sample", "random", "--seed", "1")
        self.assertEqual(sorted(everything), sorted(f"c4-sample.jsonl:{line}" for line in range(1, 41)))

        out = os.path.join(self.tmp, "never.jsonl")
        base = ["make-probes", "--model", MODEL, "--corpus", corpus, "--prefix", "8", "--out", out]
        self.expect_error(base + ["--count", "41", "--sample", "random", "--seed", "1"], "c4-sample.jsonl",
                          "only 40 probes", "41 asked for")
        self.expect_error(base + ["--count", "5", "--sample", "random"], "--seed")
        self.expect_error(base + ["--count", "5", "--seed", "3"], "--seed", "random only")
        self.expect_error(base + ["--count", "5", "--sample", "shuffle", "--seed", "3"], "'shuffle'")
        self.assertFalse(os.path.exists(out))

    # -- bad input: one line naming what is wrong, non-zero exit

    def test_missing_model_folder(self):
        self.expect_error(["eval", "--model", "/nonexistent/model", "--baseline", self.baseline], "/nonexistent/model")

    def test_corrupt_checkpoint_names_the_file(self):
        broken = os.path.join(self.tmp, "broken-model")
        shutil.copytree(MODEL, broken, dirs_exist_ok=True)
        weights = os.path.join(broken, "model.safetensors")
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
        self.expect_error(["eval", "--model", broken, "--baseline", self.baseline], "model.safetensors")

    def test_unknown_component_and_method(self):
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                           "model.layers.9.mlp.up_proj=int8-absmax"], "model.layers.9.mlp.up_proj")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                           "model.layers.0.mlp.up_proj=int4-magic"], "int4-magic")

    def test_prefix_longer_than_the_text(self):
        tiny_text = os.path.join(self.tmp, "tiny.txt")
        with open(tiny_text, "w") as f:
            f.write("A short line.\n")
        self.expect_error(["make-probes", "--model", MODEL, "--corpus", tiny_text, "--count", "1", "--prefix", "100",
                           "--out", os.path.join(self.tmp, "p.jsonl")], "tiny.txt")

    def test_completion_longer_than_the_context(self):
        self.expect_error(["baseline", "--model", MODEL, "--probes", self.probes, "--completion", "5000", "--out",
                           os.path.join(self.tmp, "b.jsonl")], "context")

    def test_malformed_baseline_file(self):
        bad = os.path.join(self.tmp, "bad-baseline.jsonl")
        with open(bad, "w") as f:
            f.write('{"id": "a", "prefix_len": 2, "tokens": [1, 2, 3]}\n{"id": "b", "tokens": [1]}\n')
        self.expect_error(["eval", "--model", MODEL, "--baseline", bad], "bad-baseline.jsonl")

    # -- inconsistent token files (issue F7): exit 2, one line naming the file, the row and the
    # problem, nothing on stdout. A baseline is G(F, y[:n], N): one n and one N for every row.

    def expect_input_error(self, args, *needles):
        proc = run(*args, check=False)
        self.assertEqual(proc.returncode, 2, f"dtmctl {args}: exit {proc.returncode}\n{proc.stderr}")
        self.assertEqual(proc.stdout, "")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, proc.stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])
        self.assertNotIn("index out of range", lines[0])
        return lines[0]

    def write_rows(self, name, rows):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return path

    def damaged_baseline(self, name, damage):
        """The good baseline with `damage(rows)` applied, written to `name`."""
        rows = read_jsonl(self.baseline)
        damage(rows)
        return self.write_rows(name, rows)

    def vocab_size(self):
        with open(os.path.join(MODEL, "config.json")) as f:
            return json.load(f)["vocab_size"]

    def test_baseline_row_cut_short(self):
        def cut(rows):
            rows[4]["tokens"] = rows[4]["tokens"][:-5]
        path = self.damaged_baseline("cut-short.jsonl", cut)
        ids = [r["id"] for r in read_jsonl(path)]
        line = self.expect_input_error(["eval", "--model", MODEL, "--baseline", path])
        self.assertEqual(line, f"dtmctl eval: error: {path}: row 5 (id '{ids[4]}') has {PREFIX + COMPLETION - 5} "
                               f"tokens and row 1 has {PREFIX + COMPLETION}: every row of a baseline holds prefix + "
                               "completion = N tokens, one N for all rows")

    def test_baseline_row_with_another_prefix_len(self):
        def shift(rows):
            rows[3]["prefix_len"] = PREFIX - 1
        path = self.damaged_baseline("other-prefix.jsonl", shift)
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", path], path, "row 4 (id ",
                                f"has prefix_len {PREFIX - 1} and row 1 has {PREFIX}", "one prefix length n")

    def test_baseline_with_duplicate_ids(self):
        def duplicate(rows):
            rows[6]["id"] = rows[1]["id"]
        path = self.damaged_baseline("duplicate-ids.jsonl", duplicate)
        ids = [r["id"] for r in read_jsonl(path)]
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", path], path,
                                f"row 7 (id '{ids[1]}') repeats the id of row 2; ids must be unique")

    def test_baseline_with_an_empty_id(self):
        def empty(rows):
            rows[2]["id"] = ""
        path = self.damaged_baseline("empty-id.jsonl", empty)
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", path], path, "row 3 has an empty id")

    def test_baseline_token_outside_the_vocabulary(self):
        vocab = self.vocab_size()
        def out_of_vocab(rows):
            rows[5]["tokens"][PREFIX + 2] = vocab
        path = self.damaged_baseline("out-of-vocab.jsonl", out_of_vocab)
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", path], path, "row 6 (id ",
                                f"token id {vocab} at position {PREFIX + 2} is outside the model's vocabulary of "
                                f"{vocab} ids (0..{vocab - 1})")

    def test_calibration_token_outside_the_vocabulary(self):
        vocab = self.vocab_size()
        path = self.write_rows("bad-calibration.jsonl", [{"id": "c1", "tokens": [1, 50, 60]},
                                                         {"id": "c2", "tokens": [1, vocab + 7, 60]}])
        needles = (f"calibration file {path}: probe 2 (id 'c2'): token id {vocab + 7} at position 1 is outside",)
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                                 "model.layers.2.mlp.gate_proj=gptq:4", "--calibration", path], *needles)
        out = os.path.join(self.tmp, "never-applied")
        self.expect_input_error(["apply", "--model", MODEL, "--config", "model.layers.2.mlp.gate_proj=gptq:4", "--out",
                                 out, "--calibration", path], *needles)
        self.assertFalse(os.path.exists(out))

    def test_gptq_needs_a_calibration_set_named_explicitly(self):
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                                 "model.layers.2.mlp.gate_proj=gptq:4"], "--calibration FILE",
                                "--calibration baseline")
        self.expect_input_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--compress",
                                 "model.layers.2.mlp.gate_proj=gptq:4", "--calibration", "baseline",
                                 "--calibration-count", str(PROBES)],
                                f"has {PREFIX + COMPLETION} tokens, fewer than seq_len 2048")

    def test_local_refuses_a_gptq_spec_without_or_with_a_short_calibration_set_before_running_anything(self):
        spec = os.path.join(self.tmp, "local-gptq.yaml")
        head = (f"kind: evaluate\nmodel: {MODEL}\nprobes: {self.probes}\nprefix: {PREFIX}\ncompletion: 8\n"
                "evaluate:\n  configs: [model.layers.2.mlp.gate_proj=gptq:4]\n")
        with open(spec, "w") as f:
            f.write(head)
        self.expect_input_error(["local", spec], "calibration: missing; gptq needs a calibration set")
        path = self.write_rows("local-calibration.jsonl", [{"id": "c1", "tokens": [1, 50, 7]},
                                                           {"id": "c2", "tokens": [1, 60]}])
        with open(spec, "w") as f:
            f.write(head + f"calibration: {{probes: {path}, count: 2, seq_len: 3}}\n")
        self.expect_input_error(["local", spec], f"calibration: {path}: row 2 ('c2') has 2 tokens, fewer than seq_len 3")

    def test_probe_file_with_duplicate_ids(self):
        path = self.write_rows("duplicate-probes.jsonl", [{"id": "p", "tokens": [1, 50, 60]},
                                                          {"id": "q", "tokens": [1, 70, 80]},
                                                          {"id": "p", "tokens": [1, 90, 100]}])
        out = os.path.join(self.tmp, "never-baseline.jsonl")
        self.expect_input_error(["baseline", "--model", MODEL, "--probes", path, "--completion", "4", "--out", out],
                                f"{path}: probe 3 (id 'p') repeats the id of probe 1; ids must be unique")
        self.assertFalse(os.path.exists(out))

    def test_probe_file_of_unequal_lengths(self):
        # The baseline written from it would have rows of two prefix lengths, which eval refuses.
        path = self.write_rows("ragged-probes.jsonl", [{"id": "p", "tokens": [1, 50, 60]},
                                                       {"id": "q", "tokens": [1, 70]}])
        self.expect_input_error(["baseline", "--model", MODEL, "--probes", path, "--completion", "4", "--out",
                                 os.path.join(self.tmp, "ragged-baseline.jsonl")],
                                f"{path}: probe 2 (id 'q') has 2 tokens and probe 1 has 3")

    # -- the command line itself (issue 13): usage errors exit 2, with a suggestion when one is close

    def test_usage_errors_exit_2_and_suggest_the_name_meant(self):
        proc = run("reslts", check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("did you mean 'results'?", proc.stderr)
        proc = run("eval", "--modle", MODEL, "--baseline", self.baseline, check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("unknown flag --modle; did you mean --model?", proc.stderr)
        proc = run("jobs", "--bogus-flag-nothing-like-it", check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertNotIn("did you mean", proc.stderr)  # nothing close: no guess
        proc = run("eval", "--model", MODEL, check=False)  # a required flag missing
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--baseline", proc.stderr)
        proc = run("--help")
        self.assertIn("Usage:", proc.stdout)

    def test_version_names_the_release_commit_build_and_libtorch(self):
        proc = run("--version")
        self.assertRegex(proc.stdout.strip(),
                         r"^dtmctl \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown), \w+ build, libtorch \d+\.\d+\.\d+.*, "
                         r"(no CUDA|CUDA runtime \d+\.\d+)\)$")
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "common", "version.h")) as f:
            release = re.search(r'kDtmVersion\[\] = "([0-9.]+)"', f.read()).group(1)
        self.assertTrue(proc.stdout.startswith(f"dtmctl {release} "), proc.stdout)

    def test_local_names_why_it_cannot_read_the_spec(self):
        self.expect_input_error(["local", os.path.join(self.tmp, "none.yaml")], "dtmctl local: job spec:",
                                "none.yaml: no such file")
        self.expect_input_error(["local", self.tmp], "dtmctl local: job spec:", "not a regular file")

    def test_local_refuses_what_it_can_check_before_loading_anything(self):
        spec = os.path.join(self.tmp, "local-format.yaml")
        with open(spec, "w") as f:
            f.write(f"kind: evaluate\nmodel: {MODEL}\nprobes: {self.probes}\nprefix: {PREFIX}\ncompletion: 8\n"
                    "evaluate:\n  configs: [model.layers.0.mlp.up_proj=int8-absmax]\n")
        self.expect_input_error(["local", spec, "--format", "xml"], "dtmctl local: --format", "'xml'")
        self.expect_input_error(["local", spec, "--threads", "-1"], "--threads")
        self.assertIn("--threads", run("local", "--help").stdout)

    def test_a_dtype_the_device_cannot_compute_is_refused_before_the_model_loads(self):
        # Debian's libtorch 1.13 has no float16 matmul on CPU; a libtorch that has one runs the command.
        args = ["baseline", "--model", MODEL, "--probes", self.probes, "--completion", "2", "--dtype", "float16",
                "--out", os.path.join(self.tmp, "f16.jsonl")]
        proc = run(*args, check=False)
        if proc.returncode != 0:
            self.expect_input_error(args, "--dtype float16 does not run on cpu", "use float32")

    def test_bad_dtype_and_device(self):
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--dtype", "float8"], "float8")
        self.expect_error(["eval", "--model", MODEL, "--baseline", self.baseline, "--device", "tpu"], "tpu")


if __name__ == "__main__":
    unittest.main(verbosity=2)
