"""End-to-end tests of `dtmctl apply` on the tiny model: the written checkpoint, evaluated
uncompressed, gives exactly what `dtmctl eval --compress CONFIG` gives on the original; untouched
tensors are bit-identical; config.json and the tokenizer files come along; bad --out and methods are
refused.

Run by CTest (label `model`) after the `tiny_model` fixture; needs DTMCTL, DTM_TINY_MODEL and
DTM_BROWN_DIR in the environment.
"""
import json
import os
import shutil
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import expect_one_error, expect_same_eval, probes_and_baseline, run, run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]

PREFIX = 16
COMPLETION = 32
PROBES = 8
# Every baseline row, whole: `apply --calibration BASELINE` and `eval --calibration baseline` cut the same set.
CALIBRATION_SHAPE = ("--calibration-count", str(PROBES), "--calibration-seq-len", str(PREFIX + COMPLETION))

# Every weight-rewriting method, gptq included (calibrated on the baseline: the same set for apply and eval).
CONFIG = ("model.layers.2.self_attn.k_proj=prune:0.6,"
          "model.layers.1.mlp.down_proj=int8-absmax-row,"
          "model.layers.0.mlp.gate_proj=gptq:4:g64,"
          "model.layers.3.self_attn.o_proj=int8-absmax,"
          "model.layers.1.self_attn.q_proj=random-prune:0.3:7")
CHANGED = {
    "model.layers.2.self_attn.k_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.3.self_attn.o_proj.weight",
    "model.layers.1.self_attn.q_proj.weight",
}


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} and the metadata, straight from the file format."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
    return tensors, metadata


class DtmctlApplyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-apply-test-")
        cls.probes, cls.baseline, _ = probes_and_baseline(cls.tmp, MODEL, BROWN, PROBES, PREFIX, COMPLETION)
        cls.out = os.path.join(cls.tmp, "applied")
        cls.summary = run_json("apply", "--model", MODEL, "--config", CONFIG, "--out", cls.out, "--calibration",
                               cls.baseline, *CALIBRATION_SHAPE)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def eval_per_probe(self, model, config, *extra):
        calibration = ("--calibration", "baseline", *CALIBRATION_SHAPE) if "gptq" in config else ()
        result = run_json("eval", "--model", model, "--baseline", self.baseline, "--compress", config,
                          "--no-noise-floor", *calibration, *extra)
        return result

    def test_summary_names_the_config_and_the_output(self):
        s = self.summary
        self.assertEqual(s["out"], self.out)
        self.assertEqual(s["components_changed"], len(CHANGED))
        self.assertEqual(sorted(c.split("=")[0] + ".weight" for c in s["components"]), sorted(CHANGED))
        self.assertEqual(s["dtype"], "float32")
        self.assertEqual(s["bytes"], os.path.getsize(os.path.join(self.out, "model.safetensors")))
        # The canonical form, which eval prints too.
        self.assertEqual(s["config"], self.eval_per_probe(MODEL, CONFIG)["config"])

    def test_applied_checkpoint_evaluates_like_eval_with_the_config(self):
        # Exactly the same numbers (same weights, same forward), and not the original model's.
        expect_same_eval(self, self.eval_per_probe(self.out, ""), self.eval_per_probe(MODEL, CONFIG),
                         self.eval_per_probe(MODEL, ""), PROBES)

    def test_untouched_tensors_are_bit_identical_and_compressed_ones_changed(self):
        src, _ = read_safetensors(os.path.join(MODEL, "model.safetensors"))
        out, metadata = read_safetensors(os.path.join(self.out, "model.safetensors"))
        self.assertEqual(metadata.get("format"), "pt")  # transformers requires it
        self.assertEqual(sorted(out), sorted(src))
        for name, (dtype, shape, raw) in src.items():
            with self.subTest(tensor=name):
                self.assertEqual(out[name][0], dtype)
                self.assertEqual(out[name][1], shape)
                if name in CHANGED:
                    self.assertNotEqual(out[name][2], raw)
                else:
                    self.assertEqual(out[name][2], raw)
        # Pruning at 0.6 leaves at least 60% zeros (float32 +0.0 or -0.0).
        k = out["model.layers.2.self_attn.k_proj.weight"][2]
        zeros = sum(1 for i in range(0, len(k), 4) if k[i:i + 4] in (b"\0\0\0\0", b"\0\0\0\x80"))
        self.assertGreaterEqual(zeros, round(0.6 * len(k) / 4))

    def test_config_and_tokenizer_files_are_copied(self):
        with open(os.path.join(MODEL, "config.json")) as f:
            src = json.load(f)
        with open(os.path.join(self.out, "config.json")) as f:
            self.assertEqual(json.load(f), src)
        for name in ("tokenizer.json", "tokenizer.model"):
            with self.subTest(file=name):
                with open(os.path.join(MODEL, name), "rb") as a, open(os.path.join(self.out, name), "rb") as b:
                    self.assertEqual(a.read(), b.read())
        self.assertFalse(os.path.exists(os.path.join(self.out, "dtm_training.json")))

    def test_bfloat16_output_matches_eval_in_bfloat16(self):
        out = os.path.join(self.tmp, "applied-bf16")
        config = "model.layers.1.mlp.up_proj=int8-absmax,model.layers.0.self_attn.v_proj=prune:0.5"
        summary = run_json("apply", "--model", MODEL, "--config", config, "--out", out, "--dtype", "bfloat16")
        self.assertEqual(summary["dtype"], "bfloat16")
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["torch_dtype"], "bfloat16")
        tensors, _ = read_safetensors(os.path.join(out, "model.safetensors"))
        self.assertEqual({dtype for dtype, _, _ in tensors.values()}, {"BF16"})
        ours = self.eval_per_probe(out, "", "--dtype", "bfloat16")
        theirs = self.eval_per_probe(MODEL, config, "--dtype", "bfloat16")
        self.assertEqual(ours["per_probe"], theirs["per_probe"])

    # -- refusals: one error line naming what is wrong, non-zero exit, nothing written

    def expect_error(self, args, *needles):
        expect_one_error(self, args, *needles)

    def test_non_empty_out_is_refused_and_left_alone(self):
        before = {name: os.path.getmtime(os.path.join(self.out, name)) for name in os.listdir(self.out)}
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=int8-absmax", "--out",
                           self.out], self.out, "not empty")
        after = {name: os.path.getmtime(os.path.join(self.out, name)) for name in os.listdir(self.out)}
        self.assertEqual(before, after)

    def test_empty_out_folder_is_fine(self):
        out = os.path.join(self.tmp, "empty")
        os.mkdir(out)
        run("apply", "--model", MODEL, "--config", "", "--out", out)
        # The empty config writes the model unchanged.
        src, _ = read_safetensors(os.path.join(MODEL, "model.safetensors"))
        written, _ = read_safetensors(os.path.join(out, "model.safetensors"))
        self.assertEqual(src, written)

    def test_llm_int8_and_gptq_without_calibration_are_refused(self):
        out = os.path.join(self.tmp, "never")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=llm-int8", "--out", out],
                          "llm-int8")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=gptq:4", "--out", out],
                          "--calibration")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.9.mlp.up_proj=int8-absmax", "--out",
                           out], "model.layers.9.mlp.up_proj")
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main(verbosity=2)
