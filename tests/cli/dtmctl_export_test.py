"""End-to-end tests of `dtmctl apply --format compressed-tensors` on the tiny model: every supported
method's exported tensors dequantize, by the independent NumPy reader
(tests/reference/compressed_tensors_reference.py, written from the format's source), to exactly the
weights `--format float` writes; `dtmctl eval` of the export (dtm's own reader) gives exactly the
per-probe numbers of `eval --compress CONFIG` on the original; config.json's quantization_config has
one group per distinct scheme naming exactly its modules and everything else in `ignore`; the sizes
are reported and smaller; the NumPy Llama on the reader's dequantized model agrees with dtm; llm-int8, a group the format cannot hold, an existing folder and an
unknown format are refused.

Run by CTest (label `model`) after the `tiny_model` fixture; needs DTMCTL, DTM_TINY_MODEL and
DTM_BROWN_DIR in the environment.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from dtmctl_run import expect_one_error, expect_same_eval, probes_and_baseline, run, run_json  # noqa: E402

READER = os.path.join(HERE, "..", "reference", "compressed_tensors_reference.py")
MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]

PREFIX = 16
COMPLETION = 32
PROBES = 8
CALIBRATION_SHAPE = ("--calibration-count", str(PROBES), "--calibration-seq-len", str(PREFIX + COMPLETION))

# Every method the format holds, two modules sharing one scheme, and pruning (written dense).
# The tiny model: hidden 128, intermediate 384, so every group size here divides the inputs.
QUANTIZED = {
    "model.layers.0.mlp.down_proj": "int8-absmax",
    "model.layers.1.self_attn.q_proj": "int8-absmax-row",
    "model.layers.3.mlp.up_proj": "int8-absmax-row",
    "model.layers.0.mlp.gate_proj": "gptq:4:g64",
    "model.layers.2.self_attn.o_proj": "gptq:8",
    "model.layers.2.mlp.up_proj": "gptq:4",
    "model.layers.3.self_attn.v_proj": "gptq:3:g32",
    "model.layers.1.self_attn.k_proj": "gptq:2",
    "model.layers.3.mlp.down_proj": "gptq:8:g128",
}
PRUNED = {
    "model.layers.2.self_attn.k_proj": "prune:0.6",
    "model.layers.1.mlp.down_proj": "random-prune:0.3:7",
}
CONFIG = ",".join(f"{m}={method}" for m, method in {**QUANTIZED, **PRUNED}.items())
# The scheme each method is stored with: (format, bits, symmetric, strategy, group_size).
SCHEMES = {
    "int8-absmax": ("pack-quantized", 8, True, "tensor", None),
    "int8-absmax-row": ("pack-quantized", 8, True, "channel", None),
    "gptq:4:g64": ("pack-quantized", 4, False, "group", 64),
    "gptq:8": ("pack-quantized", 8, False, "channel", None),
    "gptq:4": ("pack-quantized", 4, False, "channel", None),
    "gptq:3:g32": ("naive-quantized", 3, False, "group", 32),
    "gptq:2": ("naive-quantized", 2, False, "channel", None),
    "gptq:8:g128": ("pack-quantized", 8, False, "group", 128),
}
LINEAR = [f"model.layers.{i}.{m}" for i in range(4)
          for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")] + ["lm_head"]


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def reader(*args):
    return subprocess.run(["/usr/bin/python3", READER, *args], capture_output=True, text=True)


class DtmctlExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-export-test-")
        cls.probes, cls.baseline, _ = probes_and_baseline(cls.tmp, MODEL, BROWN, PROBES, PREFIX, COMPLETION)
        calibration = ("--calibration", cls.baseline, *CALIBRATION_SHAPE)
        cls.exported = os.path.join(cls.tmp, "compressed")
        cls.summary = run_json("apply", "--model", MODEL, "--config", CONFIG, "--out", cls.exported, "--format",
                               "compressed-tensors", *calibration)
        cls.dense = os.path.join(cls.tmp, "float")
        cls.dense_summary = run_json("apply", "--model", MODEL, "--config", CONFIG, "--out", cls.dense,
                                     *calibration)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def eval_json(self, model, config, *extra):
        calibration = ("--calibration", "baseline", *CALIBRATION_SHAPE) if "gptq" in config else ()
        return run_json("eval", "--model", model, "--baseline", self.baseline, "--compress", config,
                        "--no-noise-floor", *calibration, *extra)

    def test_export_dequantizes_to_exactly_the_float_export(self):
        proc = reader("compare", "--export", self.exported, "--float", self.dense)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        result = json.loads(proc.stdout)
        self.assertEqual(sorted(result["dequantized"]), sorted(QUANTIZED))
        self.assertEqual(result["identical"], result["tensors"])
        self.assertEqual(result["mismatches"], [])

    def test_eval_of_the_export_equals_eval_with_the_config(self):
        expect_same_eval(self, self.eval_json(self.exported, ""), self.eval_json(MODEL, CONFIG),
                         self.eval_json(MODEL, ""), PROBES)

    def test_quantization_config_names_exactly_the_chosen_modules(self):
        with open(os.path.join(self.exported, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(MODEL, "config.json")) as f:
            source = json.load(f)
        q = config.pop("quantization_config")
        self.assertEqual(config, source)  # nothing else changed
        self.assertEqual(q["quant_method"], "compressed-tensors")
        self.assertEqual(q["quantization_status"], "compressed")
        self.assertEqual(q["format"], "mixed-precision")  # naive-quantized and pack-quantized groups
        self.assertEqual(q["version"], "0.12.2")
        self.assertIsNone(q["kv_cache_scheme"])
        by_scheme = {}
        for name, group in q["config_groups"].items():
            w = group["weights"]
            self.assertIsNone(group["input_activations"], name)
            self.assertEqual(w["type"], "int")
            scheme = (group["format"], w["num_bits"], w["symmetric"], w["strategy"], w["group_size"])
            self.assertNotIn(scheme, by_scheme, "one group per distinct scheme")
            by_scheme[scheme] = group["targets"]
        expected = {}
        for module, method in QUANTIZED.items():
            expected.setdefault(SCHEMES[method], []).append(module)
        self.assertEqual({k: sorted(v) for k, v in by_scheme.items()}, {k: sorted(v) for k, v in expected.items()})
        self.assertEqual(sorted(q["ignore"]), sorted(m for m in LINEAR if m not in QUANTIZED))

    def test_stored_tensors_are_integers_and_the_rest_is_as_the_float_export(self):
        header = safetensors_header(os.path.join(self.exported, "model.safetensors"))
        dense = safetensors_header(os.path.join(self.dense, "model.safetensors"))
        self.assertEqual(header["model.layers.0.mlp.down_proj.weight_packed"]["shape"], [128, 96])  # 4 per word
        self.assertEqual(header["model.layers.0.mlp.down_proj.weight_scale"]["shape"], [1])
        self.assertNotIn("model.layers.0.mlp.down_proj.weight_zero_point", header)  # symmetric
        self.assertEqual(header["model.layers.1.self_attn.q_proj.weight_scale"]["shape"], [128, 1])
        self.assertEqual(header["model.layers.0.mlp.gate_proj.weight_packed"]["dtype"], "I32")
        self.assertEqual(header["model.layers.0.mlp.gate_proj.weight_packed"]["shape"], [384, 16])  # 8 per word
        self.assertEqual(header["model.layers.0.mlp.gate_proj.weight_scale"]["shape"], [384, 2])
        self.assertEqual(header["model.layers.0.mlp.gate_proj.weight_zero_point"]["shape"], [48, 2])
        # 3 bits: one int8 per code (as compressed-tensors stores widths it does not pack), zero points too.
        self.assertEqual(header["model.layers.3.self_attn.v_proj.weight"]["dtype"], "I8")
        self.assertEqual(header["model.layers.3.self_attn.v_proj.weight"]["shape"], [64, 128])
        self.assertEqual(header["model.layers.3.self_attn.v_proj.weight_zero_point"]["dtype"], "I8")
        self.assertEqual(header["model.layers.3.self_attn.v_proj.weight_zero_point"]["shape"], [64, 4])
        for module in QUANTIZED:
            self.assertNotIn(module + ".weight_g_idx", header)
        for module in PRUNED:  # pruned weights stay dense floats
            self.assertEqual(header[module + ".weight"]["dtype"], "F32")
        untouched = [n for n in dense if not any(n.startswith(m + ".") for m in QUANTIZED)]
        for name in untouched:
            self.assertEqual(header[name]["shape"], dense[name]["shape"], name)

    def test_sizes_are_reported_and_smaller(self):
        s = self.summary
        self.assertEqual(s["format"], "compressed-tensors")
        self.assertEqual(s["bytes"], os.path.getsize(os.path.join(self.exported, "model.safetensors")))
        self.assertEqual(s["original_bytes"], os.path.getsize(os.path.join(MODEL, "model.safetensors")))
        self.assertAlmostEqual(s["bytes_ratio"], s["bytes"] / s["original_bytes"])
        self.assertLess(s["bytes"], self.dense_summary["bytes"])
        # The saving is the float32 weights less what replaced them (headers aside).
        header = safetensors_header(os.path.join(self.exported, "model.safetensors"))
        dense = safetensors_header(os.path.join(self.dense, "model.safetensors"))

        def nbytes(h, names):
            return sum(h[n]["data_offsets"][1] - h[n]["data_offsets"][0] for n in names)
        replaced = nbytes(dense, [m + ".weight" for m in QUANTIZED])
        stored = nbytes(header, [n for n in header if any(n.startswith(m + ".") for m in QUANTIZED)])
        self.assertLess(stored, replaced / 3)
        self.assertLess(abs((self.dense_summary["bytes"] - s["bytes"]) - (replaced - stored)), 4096)
        self.assertEqual(sorted((g["scheme"], g["modules"]) for g in s["quantized"]),
                         sorted([("pack-quantized int8 symmetric tensor", 1), ("pack-quantized int8 symmetric channel", 2),
                                 ("pack-quantized int4 asymmetric group 64", 1),
                                 ("pack-quantized int8 asymmetric channel", 1),
                                 ("pack-quantized int4 asymmetric channel", 1),
                                 ("naive-quantized int3 asymmetric group 32", 1),
                                 ("naive-quantized int2 asymmetric channel", 1),
                                 ("pack-quantized int8 asymmetric group 128", 1)]))

    def test_pruned_sizes_estimate_a_sparse_bitmask_export(self):
        # Counted here from the float export's bytes: nonzeros * 4 + a bit per entry + 8 bytes per row.
        with open(os.path.join(self.dense, "model.safetensors"), "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = safetensors_header(os.path.join(self.dense, "model.safetensors"))
        dense_bytes = sparse = 0
        for module in PRUNED:
            info = header[module + ".weight"]
            begin, end = info["data_offsets"]
            raw = data[8 + n + begin:8 + n + end]
            rows, cols = info["shape"]
            nonzero = sum(1 for i in range(0, len(raw), 4) if raw[i:i + 4] not in (b"\0\0\0\0", b"\0\0\0\x80"))
            dense_bytes += len(raw)
            sparse += nonzero * 4 + rows * ((cols + 7) // 8) + rows * 8
        self.assertEqual(self.summary["pruned"],
                         {"components": 2, "dense_bytes": dense_bytes, "sparse_bitmask_bytes": sparse})

    def test_numpy_llama_on_the_reader_s_dense_model_agrees_with_dtm_eval_of_the_export(self):
        # Two independent paths: the NumPy reader's dequantization and the NumPy Llama forward, against
        # dtm's reader and forward.
        dense = os.path.join(self.tmp, "dequantized-by-reader")
        proc = reader("dequantize", "--export", self.exported, "--out", dense)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        ours = os.path.join(self.tmp, "dtm-eval.json")
        with open(ours, "w") as f:
            json.dump(self.eval_json(self.exported, ""), f)
        theirs = os.path.join(self.tmp, "numpy-eval.json")
        reference = os.path.join(HERE, "..", "reference")
        with open(theirs, "w") as f:
            subprocess.run(["/usr/bin/python3", os.path.join(reference, "llama_reference.py"), "eval", "--model", dense,
                            "--baseline", self.baseline], stdout=f, check=True)
        proc = subprocess.run(["/usr/bin/python3", os.path.join(reference, "compare_eval.py"), ours, theirs],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    def test_a_float_export_of_the_export_is_the_float_export(self):
        # dtm reads its own export as the dense model: applying nothing writes the float weights back.
        out = os.path.join(self.tmp, "round-trip")
        run("apply", "--model", self.exported, "--config", "", "--out", out)
        with open(os.path.join(out, "model.safetensors"), "rb") as a, \
                open(os.path.join(self.dense, "model.safetensors"), "rb") as b:
            ours, theirs = a.read(), b.read()
        # Same tensors and bytes; the metadata's config differs (empty here).
        self.assertEqual(safetensors_header(os.path.join(out, "model.safetensors")).keys(),
                         safetensors_header(os.path.join(self.dense, "model.safetensors")).keys())
        (n1,) = struct.unpack("<Q", ours[:8])
        (n2,) = struct.unpack("<Q", theirs[:8])
        self.assertEqual(ours[8 + n1:], theirs[8 + n2:])
        with open(os.path.join(out, "config.json")) as f:
            self.assertNotIn("quantization_config", json.load(f))

    def test_bfloat16_export_evaluates_like_eval_in_bfloat16(self):
        out = os.path.join(self.tmp, "compressed-bf16")
        config = "model.layers.1.mlp.up_proj=int8-absmax,model.layers.0.self_attn.v_proj=int8-absmax-row"
        run("apply", "--model", MODEL, "--config", config, "--out", out, "--dtype", "bfloat16", "--format",
            "compressed-tensors")
        header = safetensors_header(os.path.join(out, "model.safetensors"))
        self.assertEqual(header["model.layers.1.mlp.up_proj.weight_scale"]["dtype"], "F32")  # scales stay exact
        self.assertEqual(header["model.norm.weight"]["dtype"], "BF16")
        ours = self.eval_json(out, "", "--dtype", "bfloat16")
        theirs = self.eval_json(MODEL, config, "--dtype", "bfloat16")
        self.assertEqual(ours["per_probe"], theirs["per_probe"])

    # -- refusals: one error line naming what is wrong, non-zero exit, nothing written

    def expect_error(self, args, *needles):
        expect_one_error(self, args, *needles)

    def test_refusals(self):
        out = os.path.join(self.tmp, "never")
        ct = ("--format", "compressed-tensors")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=llm-int8", "--out", out,
                           *ct], "llm-int8", "int8-absmax-row")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=gptq:4:g100", "--out",
                           out, *ct, "--calibration", self.baseline, *CALIBRATION_SHAPE],
                          "model.layers.0.mlp.up_proj", "100", "128")
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=int8-absmax", "--out",
                           out, "--format", "gguf"], "--format", "gguf")
        self.assertFalse(os.path.exists(out))
        before = sorted(os.listdir(self.exported))
        self.expect_error(["apply", "--model", MODEL, "--config", "model.layers.0.mlp.up_proj=int8-absmax", "--out",
                           self.exported, *ct], self.exported, "not empty")
        self.assertEqual(sorted(os.listdir(self.exported)), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
