"""Tests of compressed_tensors_reference.py on hand-made data (no dtm binary, runs in a second).

The expected values here are worked out by hand from the compressed-tensors format (packing
docstring, ``(q - z) * s``), so the reader is checked against the format, not against itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compressed_tensors_reference as ct  # noqa: E402
import llama_reference as ref  # noqa: E402

Q = "model.layers.0.self_attn.q_proj"
K = "model.layers.0.self_attn.k_proj"
D = "model.layers.0.mlp.down_proj"

# int-quantized, per tensor: scale 0.5
Q_INT = np.array([[1, -2, 3, -4], [127, -128, 0, 5]])
Q_DENSE = np.array([[0.5, -1, 1.5, -2], [63.5, -64, 0, 2.5]], dtype=np.float32)
# int-quantized, per channel; 0.1 is not a dyadic number, so row 2 is one float32 rounding each
K_INT = np.array([[1, 2, 3, 4], [-1, -2, -3, -4], [0, 10, -10, 7]])
K_SCALE = np.array([[0.25], [2.0], [0.1]], dtype=np.float32)
K_DENSE = np.vstack([[0.25, 0.5, 0.75, 1.0], [-2, -4, -6, -8],
                     np.float32([0, 10, -10, 7]) * np.float32(0.1)]).astype(np.float32)
# pack-quantized, 4 bits, groups of 4 columns, asymmetric
D_INT = np.array([[-8, -7, -6, -5, 4, 5, 6, 7], [0, 1, 2, 3, -1, -2, -3, -4], [7, 7, 7, 7, -8, -8, -8, -8]])
D_ZP = np.array([[-8, 4], [0, -1], [1, -2]])
D_SCALE = np.array([[0.5, 0.25], [1.0, 2.0], [0.125, 4.0]], dtype=np.float32)
D_DENSE = np.array([[0, 0.5, 1, 1.5, 0, 0.25, 0.5, 0.75],      # (q+8)*0.5 | (q-4)*0.25
                    [0, 1, 2, 3, 0, -2, -4, -6],               # q*1      | (q+1)*2
                    [.75, .75, .75, .75, -24, -24, -24, -24]],  # (7-1)/8  | (-8+2)*4
                   dtype=np.float32)

EMBED = np.arange(16, dtype=np.float32).reshape(4, 4) / 8
LM_HEAD = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4)
NORM = np.array([1.0, 0.5, -2.0, 3.0], dtype=np.float32)


def weights(bits, strategy, symmetric, group_size=None):
    return {"num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": strategy,
            "group_size": group_size, "dynamic": False, "actorder": None, "observer": "minmax"}


def make_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "quantization_config": {
        "quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
        "config_groups": {
            "group_0": {"targets": [Q], "weights": weights(8, "tensor", True), "format": "int-quantized",
                        "input_activations": None, "output_activations": None},
            "group_1": {"targets": ["re:.*k_proj$"], "weights": weights(8, "channel", True), "format": "int-quantized"},
            "group_2": {"targets": ["Linear"], "weights": weights(4, "group", False, 4), "format": "pack-quantized"},
        },
        "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}, "version": "0.12.2"}}


def make_tensors():
    return {
        "model.embed_tokens.weight": (EMBED, "F16"),
        "model.norm.weight": (NORM, "BF16"),
        "lm_head.weight": (LM_HEAD, "F32"),
        Q + ".weight": (Q_INT, "I8"), Q + ".weight_scale": (np.float32([0.5]), "F32"),
        K + ".weight": (K_INT, "I8"), K + ".weight_scale": (K_SCALE, "F32"),
        D + ".weight_packed": (ct.pack_to_int32(D_INT, 4), "I32"),
        D + ".weight_shape": (np.array([3, 8]), "I64"),
        D + ".weight_scale": (D_SCALE, "F32"),
        D + ".weight_zero_point": (ct.pack_to_int32(D_ZP, 4, packed_dim=0), "I32"),
    }


def write_checkpoint(directory, config, tensors, shards=1):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    if shards == 1:
        ct.write_safetensors(os.path.join(directory, "model.safetensors"), tensors)
        return
    names, weight_map = sorted(tensors), {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        ct.write_safetensors(os.path.join(directory, fname), part)
        weight_map.update({n: fname for n in part})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def run_cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = ct.main(list(argv))
    return rc, out.getvalue()


class PackingTest(unittest.TestCase):
    def check(self, values, bits, packed, packed_dim=1):
        values, packed = np.array(values), np.array(packed, dtype=np.int32)
        got = ct.pack_to_int32(values, bits, packed_dim)
        self.assertEqual(got.dtype, np.int32)
        np.testing.assert_array_equal(got, packed)
        back = ct.unpack_from_int32(packed, bits, values.shape, packed_dim)
        self.assertEqual(back.dtype, np.int8)
        np.testing.assert_array_equal(back, values)

    def test_docstring_example_8_bits(self):
        # pack_to_int32's docstring: [1, 2] -> unsigned [129, 130] -> 0x00008281 = 33409
        self.check([[1, 2]], 8, [[33409]])

    def test_4_bits_full_range(self):
        # -8..7 -> unsigned 0..15, eight nibbles per word, the first in the lowest bits:
        # 0x76543210 and 0xFEDCBA98 (= 4275878552 - 2**32 as int32)
        self.check([list(range(-8, 8))], 4, [[0x76543210, 0xFEDCBA98 - 2**32]])

    def test_padding(self):
        # three 4-bit values -> one word, five zero nibbles of padding: 0 + 8<<4 + 15<<8
        self.check([[-8, 0, 7]], 4, [[3968]])
        # 3 bits: ten values per word (30 bits used): [-4, 3] -> [0, 7] -> 7<<3
        self.check([[-4, 3]], 3, [[56]])
        # 2 bits: [-2, -1, 0, 1] -> [0, 1, 2, 3] -> 1<<2 + 2<<4 + 3<<6
        self.check([[-2, -1, 0, 1]], 2, [[228]])

    def test_packed_dim_0_for_zero_points(self):
        # columns are packed: [1, 2, 3] -> [9, 10, 11] -> 9 + 10<<4 + 11<<8; [-1, 0, -8] -> 7 + 8<<4
        self.check([[1, -1], [2, 0], [3, -8]], 4, [[2985, 135]], packed_dim=0)
        self.assertEqual(ct.pack_to_int32(D_ZP, 4, packed_dim=0).shape, (1, 2))

    def test_round_trips(self):
        rng = np.random.default_rng(0)
        for bits in (2, 3, 4, 8):
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
            for shape in ((5, 7), (3, 32), (1, 33), (17, 2)):
                v = rng.integers(lo, hi, size=shape)
                for dim in (0, 1):
                    p = ct.pack_to_int32(v, bits, dim)
                    words = -(-shape[dim] // (32 // bits))
                    self.assertEqual(p.shape[dim], words)
                    np.testing.assert_array_equal(ct.unpack_from_int32(p, bits, shape, dim), v)

    def test_out_of_range_refused(self):
        with self.assertRaises(ct.CompressedTensorsError):
            ct.pack_to_int32(np.array([[8]]), 4)


class MatchingTest(unittest.TestCase):
    def setUp(self):
        qc = make_config()["quantization_config"]
        _, self.t2g, self.ignore = ct.parse_quantization_config(qc)

    def group(self, name, ignore=None):
        return ct.scheme_group(name, self.t2g, self.ignore if ignore is None else ignore)

    def test_most_specific_target_wins(self):
        self.assertEqual(self.group(Q), "group_0")  # exact name beats Linear
        self.assertEqual(self.group(K), "group_1")  # re: beats Linear
        self.assertEqual(self.group("model.layers.3.self_attn.v_proj"), "group_2")  # Linear only
        self.assertEqual(self.group("model.layers.3.mlp.gate_proj"), "group_2")

    def test_ignore_and_non_linear(self):
        self.assertIsNone(self.group("lm_head"))  # Linear, but ignored
        self.assertEqual(self.group("lm_head", ignore=[]), "group_2")
        self.assertIsNone(self.group(Q, ignore=["re:.*self_attn"]))  # ignore wins over an exact target
        self.assertIsNone(self.group("model.embed_tokens"))
        self.assertIsNone(self.group("model.layers.0.input_layernorm"))

    def test_match_name(self):
        self.assertTrue(ct.match_name(K, "re:.*k_proj$"))
        self.assertFalse(ct.match_name(K, "re:k_proj"))  # re.match anchors at the start
        self.assertTrue(ct.match_name(K, "re:model\\.layers\\.0\\."))
        self.assertFalse(ct.match_name(K, "k_proj"))  # plain targets are whole names


class CheckpointTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.export = os.path.join(self.tmp.name, "export")
        write_checkpoint(self.export, make_config(), make_tensors())

    def write_float(self, overrides=None, dtypes=None):
        dense = {"model.embed_tokens.weight": EMBED, "model.norm.weight": NORM, "lm_head.weight": LM_HEAD,
                 Q + ".weight": Q_DENSE, K + ".weight": K_DENSE, D + ".weight": D_DENSE}
        dense.update(overrides or {})
        dt = {"model.embed_tokens.weight": "F16", "model.norm.weight": "BF16"}
        dt.update(dtypes or {})
        path = os.path.join(self.tmp.name, "float")
        write_checkpoint(path, {"model_type": "llama"}, {n: (a, dt.get(n, "F32")) for n, a in dense.items()})
        return path

    def bits_equal(self, a, b):
        np.testing.assert_array_equal(np.asarray(a, np.float32).view(np.uint32),
                                      np.asarray(b, np.float32).view(np.uint32))

    def test_dequantized_values(self):
        config, sd = ct.read_compressed_checkpoint(self.export)
        self.assertIn("quantization_config", config)
        self.assertEqual(sorted(sd), sorted(["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                                             Q + ".weight", K + ".weight", D + ".weight"]))
        self.bits_equal(sd[Q + ".weight"], Q_DENSE)
        self.bits_equal(sd[K + ".weight"], K_DENSE)
        self.bits_equal(sd[D + ".weight"], D_DENSE)
        self.bits_equal(sd["lm_head.weight"], LM_HEAD)
        self.bits_equal(sd["model.embed_tokens.weight"], EMBED)
        dense = ct.decompress_checkpoint(self.export)
        self.assertEqual(dense.dtypes["model.embed_tokens.weight"], "F16")
        self.assertEqual(dense.dtypes["model.norm.weight"], "BF16")
        self.assertEqual(dense.schemes[D].format, "pack-quantized")

    def test_sharded_checkpoint(self):
        path = os.path.join(self.tmp.name, "sharded")
        write_checkpoint(path, make_config(), make_tensors(), shards=3)
        _, sd = ct.read_compressed_checkpoint(path)
        self.bits_equal(sd[D + ".weight"], D_DENSE)

    def test_half_precision_scales_round_once(self):
        s = ct.Scheme("g", "int-quantized", 8, "tensor", None, True)
        # bf16: 127 * (1 + 2**-7) = 127.9921875 needs 14 significant bits -> 128.0
        t = {"m.weight": ("I8", np.array([[127, 1]])),
             "m.weight_scale": ("BF16", ref.float32_to_bf16_bits(np.float32([1.0078125])))}
        w, dt = ct.dequantize_module("m", s, t)
        self.assertEqual((dt, w.tolist()), ("BF16", [[128.0, 1.0078125]]))
        # f16: 127 * (1 + 2**-10) = 127.1240234375 -> 127.125 (f16 spacing 1/16 there)
        t["m.weight_scale"] = ("F16", np.float16([1.0009765625]))
        w, dt = ct.dequantize_module("m", s, t)
        self.assertEqual((dt, w.tolist()), ("F16", [[127.125, 1.0009765625]]))

    def test_compare_identical_and_different(self):
        rc, out = run_cli("compare", "--export", self.export, "--float", self.write_float())
        report = json.loads(out)
        self.assertEqual(rc, 0, out)
        self.assertEqual((report["tensors"], report["identical"], report["mismatches"]), (6, 6, []))
        self.assertEqual(report["dequantized"], sorted([Q, K, D]))
        # -0.0 where the export holds +0.0 is a difference of bits, not of value
        q = Q_DENSE.copy()
        q[1, 2] = -0.0
        rc, out = run_cli("compare", "--export", self.export, "--float",
                          self.write_float({Q + ".weight": q}, {"model.embed_tokens.weight": "F32"}))
        report = json.loads(out)
        self.assertEqual(rc, 1)
        by_name = {m["tensor"]: m for m in report["mismatches"]}
        self.assertEqual((by_name[Q + ".weight"]["count"], by_name[Q + ".weight"]["max_abs_diff"]), (1, 0.0))
        self.assertIn("dtype F16 vs F32", by_name["model.embed_tokens.weight"]["problem"])

    def test_dequantize_and_summary(self):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(self.export, name), "w") as f:
                f.write("{}")
        out = os.path.join(self.tmp.name, "dense")
        self.assertEqual(run_cli("dequantize", "--export", self.export, "--out", out)[0], 0)
        with open(os.path.join(out, "config.json")) as f:
            self.assertNotIn("quantization_config", json.load(f))
        self.assertTrue(os.path.exists(os.path.join(out, "tokenizer.json")))
        st = ref.SafetensorsFile(os.path.join(out, "model.safetensors"))  # llama_reference's reader
        self.assertEqual({st.dtype(n) for n in st.keys()}, {"F32"})
        self.bits_equal(st.get(D + ".weight"), D_DENSE)
        rc, text = run_cli("summary", "--export", self.export)
        info = json.loads(text)
        self.assertEqual(rc, 0)
        self.assertEqual(info["ignore"], ["lm_head"])
        self.assertEqual(info["modules"][D], {"group": "group_2", "format": "pack-quantized", "num_bits": 4,
                                              "strategy": "group", "group_size": 4, "symmetric": False})
        self.assertEqual(info["stored_bytes"], os.path.getsize(os.path.join(self.export, "model.safetensors")))


class RefusalTest(unittest.TestCase):
    """Each unsupported or inconsistent input raises, naming the tensor, module or group."""

    def refused(self, message, config=None, tensors=None):
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(d, config or make_config(), tensors or make_tensors())
            with self.assertRaises(ct.CompressedTensorsError) as cm:
                ct.read_compressed_checkpoint(d)
        self.assertIn(message, str(cm.exception))
        return str(cm.exception)

    def edit_group(self, group, key, value, where="weights"):
        c = copy.deepcopy(make_config())
        g = c["quantization_config"]["config_groups"][group]
        (g if where is None else g[where])[key] = value
        return c

    def test_activation_quantization(self):
        msg = self.refused("group_0", self.edit_group("group_0", "input_activations", weights(8, "token", True), None))
        self.assertIn("input_activations", msg)

    def test_missing_scale(self):
        t = make_tensors()
        del t[Q + ".weight_scale"]
        self.refused(Q + ".weight_scale", tensors=t)

    def test_weight_shape_disagrees_with_packed_width(self):
        t = make_tensors()
        t[D + ".weight_shape"] = (np.array([3, 20]), "I64")  # 20 columns need 3 words, 1 is stored
        self.refused(D + ".weight_shape", tensors=t)

    def test_other_refusals(self):
        self.refused("group_2", self.edit_group("group_2", "actorder", "group"))
        self.refused("group_1", self.edit_group("group_1", "type", "float"))
        self.refused("group_1", self.edit_group("group_1", "strategy", "block"))
        t = make_tensors()
        t[D + ".weight_g_idx"] = (np.zeros(8), "I32")
        self.refused(D + ".weight_g_idx", tensors=t)
        t = make_tensors()
        t["model.layers.0.self_attn.v_proj.weight"] = (LM_HEAD, "F32")  # a Linear left in float
        self.refused("model.layers.0.self_attn.v_proj is quantized by group_2", tensors=t)
        t = make_tensors()
        t[Q + ".weight_zero_point"] = (np.array([0], np.int8), "I8")
        self.refused(Q + ".weight_zero_point", tensors=t)
        # K_INT holds 10 and -10, outside the 4-bit range [-8, 7]
        self.refused(K + ".weight", self.edit_group("group_1", "num_bits", 4))


if __name__ == "__main__":
    unittest.main()
