#!/usr/bin/env python3
"""Self-test of the NumPy reference and the compare scripts (Python 3 + NumPy, no torch).

    /usr/bin/python3 -m unittest discover -s tests/reference -p 'test_*.py'

Every check is an independent closed form or invariant:
  * safetensors: a hand-assembled file (header bytes, F32/F16/BF16 bit patterns) decodes to the known
    values; bf16 rounding ties-to-even; writer/reader round trips; malformed headers are refused.
  * checkpoint variants give identical logits: sharded vs single file, BF16 (or F16) storage vs F32
    storage of the same rounded values, tied vs untied-with-lm_head=embed copy, GQA vs MHA whose k/v
    weights repeat each kv head (head h uses kv head h // (H/KVH)).
  * the vectorized forward equals a naive per-position, per-head loop implementation in float64
    (written here with an explicit pairwise-rotation RoPE), also with head_dim != hidden/heads;
    float32 agrees with float64 to float32 noise; causality; RoPE closed forms (inv_freq for
    theta=10000, hd=8 is 1, 0.1, 0.01, 0.001), attention scores depend only on relative position,
    and the whole model's logits are invariant under a shift of all positions.
  * metrics on hand-made logits: no divergence, at the first / last / several positions,
    argmax ties -> lowest index, uniform logits -> nll = log V, a hand nll, stability for large logits;
    quantile type 7 = numpy.percentile; aggregate hand example.
  * compression against hand examples (prune ties, round-half-away counts, absmax half-to-even,
    per-row scales, all-zero rows), and `--compress` equals a checkpoint holding the compressed weights.
  * training_reference: packing, the stop rule and the fingerprint on a hand example; documents of
    JSON lines and raw text; the lm_head gradient against central differences of the loss; the
    first-step check accepts a hand-made AdamW first step and refuses one with the decay twice.
  * end to end: FDT of the model against its own greedy baseline = completion length, SDT = 0
    (float32 and float64, tied/untied/BF16/sharded); a perturbed baseline token at completion index j
    gives FDT = j; FDT symmetry FDT(F, F') = FDT(F', F) = first index where the two greedy
    completions differ; SDT <= M * NLL / log 2 (the paper's Prop. 3.3); CLI runs incl. .gz files,
    compare_eval / compare_baseline accept equal inputs and name the first mismatch otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare_eval  # noqa: E402
import llama_reference as ref  # noqa: E402
import training_reference as tref  # noqa: E402

TMP = None
MODELS = {}   # name -> folder
TENSORS = {}  # name -> float32 tensors as written (before any storage rounding)
CONFIGS = {}  # name -> config dict

SMALL = dict(vocab=64, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48)
PROBES = [[1, 5, 7, 9], [3, 3], [10, 20, 30, 40, 50, 60], [63, 0, 17]]
M = 12  # completion length used in the tests


def bf16_round(t):
    return {k: ref.bf16_bits_to_float32(ref.float32_to_bf16_bits(v)) for k, v in t.items()}


def _add(name, tensors, config, dtype="F32", shards=1):
    d = os.path.join(TMP, name)
    ref.write_checkpoint(d, config, tensors, dtype=dtype, shards=shards)
    MODELS[name], TENSORS[name], CONFIGS[name] = d, tensors, config


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="dtm_ref_test_")
    gqa = ref.tiny_tensors(seed=1, **SMALL)
    _add("gqa", gqa, ref.tiny_config(**SMALL))
    _add("gqa_sharded", gqa, ref.tiny_config(**SMALL), shards=3)
    _add("gqa_bf16", gqa, ref.tiny_config(dtype="BF16", **SMALL), dtype="BF16")
    _add("gqa_bf16_as_f32", bf16_round(gqa), ref.tiny_config(**SMALL))
    f16 = {k: v.astype(np.float16).astype(np.float32) for k, v in gqa.items()}
    _add("gqa_f16", gqa, ref.tiny_config(dtype="F16", **SMALL), dtype="F16")
    _add("gqa_f16_as_f32", f16, ref.tiny_config(**SMALL))
    # MHA copy of the GQA model: each kv head's k/v rows repeated for the H/KVH query heads using it
    hd, rep = SMALL["hidden"] // SMALL["heads"], SMALL["heads"] // SMALL["kv_heads"]
    mha = dict(gqa)
    for i in range(SMALL["layers"]):
        for p in ("k_proj", "v_proj"):
            n = f"model.layers.{i}.self_attn.{p}.weight"
            w = gqa[n].reshape(SMALL["kv_heads"], hd, SMALL["hidden"])
            mha[n] = np.repeat(w, rep, axis=0).reshape(SMALL["heads"] * hd, SMALL["hidden"])
    _add("mha_of_gqa", mha, ref.tiny_config(**dict(SMALL, kv_heads=SMALL["heads"])))
    tied_kw = dict(SMALL, tied=True)
    tied = ref.tiny_tensors(seed=2, **tied_kw)
    _add("tied", tied, ref.tiny_config(**tied_kw))
    _add("tied_bf16_sharded", tied, ref.tiny_config(dtype="BF16", **tied_kw), dtype="BF16", shards=2)
    untied = dict(tied, **{"lm_head.weight": tied["model.embed_tokens.weight"].copy()})
    _add("untied_copy_of_tied", untied, ref.tiny_config(**SMALL))
    # tie_word_embeddings wins over a stored lm_head.weight (HF ties it to embed_tokens after loading)
    stale = dict(tied, **{"lm_head.weight": ref.tiny_tensors(seed=9, **SMALL)["lm_head.weight"]})
    _add("tied_with_stale_lm_head", stale, ref.tiny_config(**tied_kw))
    hd_kw = dict(SMALL, head_dim=16)  # q_proj [64, 32]: head_dim != hidden / heads
    _add("headdim16", ref.tiny_tensors(seed=3, **hd_kw), dict(ref.tiny_config(**hd_kw), rope_theta=500.0))


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# naive float64 implementation (loops; explicit pairwise rotation)
# ----------------------------------------------------------------------------------------------

def naive_logits(tensors, config, tokens):
    """Llama logits [T, V] written as plain loops over positions and heads, in float64."""
    W = {k: v.astype(np.float64) for k, v in tensors.items()}
    D, H = config["hidden_size"], config["num_attention_heads"]
    KVH = config["num_key_value_heads"]
    hd = config.get("head_dim") or D // H
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    half = hd // 2

    def rms(v, w):
        return w * (v / math.sqrt(sum(float(a) * float(a) for a in v) / len(v) + eps))

    def rope(vec, pos):
        out = vec.copy()
        for j in range(half):  # dims j and j + hd/2 rotate together by angle pos * theta^(-2j/hd)
            ang = pos * theta ** (-2.0 * j / hd)
            c, s = math.cos(ang), math.sin(ang)
            out[j] = vec[j] * c - vec[j + half] * s
            out[j + half] = vec[j + half] * c + vec[j] * s
        return out

    xs = [W["model.embed_tokens.weight"][t].copy() for t in tokens]
    T = len(tokens)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        hs = [rms(x, W[p + "input_layernorm.weight"]) for x in xs]
        q = [W[p + "self_attn.q_proj.weight"] @ h for h in hs]
        k = [W[p + "self_attn.k_proj.weight"] @ h for h in hs]
        v = [W[p + "self_attn.v_proj.weight"] @ h for h in hs]
        new = []
        for t in range(T):
            o = np.zeros(H * hd)
            for h in range(H):
                g = h // (H // KVH)
                qh = rope(q[t][h * hd:(h + 1) * hd], t)
                sc = [float(qh @ rope(k[u][g * hd:(g + 1) * hd], u)) / math.sqrt(hd) for u in range(t + 1)]
                mx = max(sc)
                e = [math.exp(s - mx) for s in sc]
                z = sum(e)
                for u in range(t + 1):
                    o[h * hd:(h + 1) * hd] += (e[u] / z) * v[u][g * hd:(g + 1) * hd]
            new.append(xs[t] + W[p + "self_attn.o_proj.weight"] @ o)
        xs = new
        for t in range(T):
            h = rms(xs[t], W[p + "post_attention_layernorm.weight"])
            g = W[p + "mlp.gate_proj.weight"] @ h
            a = np.array([x / (1.0 + math.exp(-x)) for x in g])
            xs[t] = xs[t] + W[p + "mlp.down_proj.weight"] @ (a * (W[p + "mlp.up_proj.weight"] @ h))
    lm = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    if config.get("tie_word_embeddings"):
        lm = W["model.embed_tokens.weight"]
    return np.stack([lm @ rms(x, W["model.norm.weight"]) for x in xs])


def model(name, precision="float64", compress=""):
    m = ref.LlamaReference(MODELS[name], precision)
    m.set_compression(compress)
    return m


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def run_cli(script, *args):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *args],
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------

class SafetensorsTest(unittest.TestCase):
    def test_hand_assembled_file(self):
        header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},
                  "c": {"dtype": "F16", "shape": [1, 2], "data_offsets": [14, 18]}}
        h = json.dumps(header).encode()
        data = struct.pack("<ff", 1.5, -2.0) + struct.pack("<HHH", 0x3F80, 0xC040, 0x4049) + struct.pack("<HH", 0x3C00, 0xC000)
        path = os.path.join(TMP, "hand.safetensors")
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + data)
        st = ref.SafetensorsFile(path)
        np.testing.assert_array_equal(st.get("a"), [1.5, -2.0])
        np.testing.assert_array_equal(st.get("b"), [1.0, -3.0, 3.140625])
        self.assertEqual(st.get("b").dtype, np.float32)
        np.testing.assert_array_equal(st.get("c"), [[1.0, -2.0]])

    def test_bf16_round_to_nearest_even(self):
        x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.0], dtype=np.float32)
        np.testing.assert_array_equal(ref.float32_to_bf16_bits(x), [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000])

    def test_round_trip_all_dtypes(self):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((3, 5)).astype(np.float32)
        path = os.path.join(TMP, "rt.safetensors")
        ref.write_safetensors(path, {"f32": (a, "F32"), "f16": (a, "F16"), "bf16": (a, "BF16"), "f64": (a, "F64")})
        st = ref.SafetensorsFile(path)
        np.testing.assert_array_equal(st.get("f32"), a)
        np.testing.assert_array_equal(st.get("f16"), a.astype(np.float16))
        np.testing.assert_array_equal(st.get("bf16"), bf16_round({"x": a})["x"])
        np.testing.assert_array_equal(st.get("f64"), a.astype(np.float64))
        self.assertLess(np.max(np.abs(st.get("bf16") - a) / np.abs(a)), 2 ** -8)

    def test_malformed_files_are_refused(self):
        path = os.path.join(TMP, "bad.safetensors")
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", 1000) + b"{}")
        with self.assertRaises(ref.ReferenceError):
            ref.SafetensorsFile(path)
        h = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"\0" * 8)
        with self.assertRaises(ref.ReferenceError):
            ref.SafetensorsFile(path)


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------

TOKS = [5, 17, 3, 60, 22, 9, 41]


class ForwardTest(unittest.TestCase):
    def test_matches_naive_loops_float64(self):
        for name in ("gqa", "tied", "headdim16"):
            with self.subTest(name):
                got = model(name).forward(TOKS)
                want = naive_logits(TENSORS[name], CONFIGS[name], TOKS)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)

    def test_float32_close_to_float64(self):
        a = model("gqa", "float32").forward(TOKS)
        self.assertEqual(a.dtype, np.float32)
        np.testing.assert_allclose(a, model("gqa", "float64").forward(TOKS), rtol=0, atol=2e-5)

    def test_storage_variants_identical(self):
        for x, y in (("gqa", "gqa_sharded"), ("gqa_bf16", "gqa_bf16_as_f32"), ("gqa_f16", "gqa_f16_as_f32"),
                     ("tied", "untied_copy_of_tied"), ("tied", "tied_with_stale_lm_head")):
            for prec in ("float32", "float64"):
                with self.subTest(x=x, y=y, prec=prec):
                    np.testing.assert_array_equal(model(x, prec).forward(TOKS), model(y, prec).forward(TOKS))
        self.assertFalse(ref.Checkpoint(MODELS["tied"]).has("lm_head.weight"))
        # the bf16 model really differs from the unrounded one
        self.assertGreater(np.max(np.abs(model("gqa_bf16").forward(TOKS) - model("gqa").forward(TOKS))), 1e-4)

    def test_gqa_equals_repeated_mha(self):
        np.testing.assert_allclose(model("gqa").forward(TOKS), model("mha_of_gqa").forward(TOKS), rtol=0, atol=1e-12)
        np.testing.assert_allclose(model("gqa", "float32").forward(TOKS), model("mha_of_gqa", "float32").forward(TOKS),
                                   rtol=0, atol=1e-5)

    def test_causal(self):
        m = model("gqa")
        a, b = m.forward(TOKS), m.forward(TOKS[:-1] + [TOKS[-1] + 1])
        np.testing.assert_allclose(a[:-1], b[:-1], rtol=0, atol=1e-12)
        self.assertGreater(np.max(np.abs(a[-1] - b[-1])), 1e-3)
        np.testing.assert_allclose(m.forward(TOKS[:4]), a[:4], rtol=0, atol=1e-12)

    def test_rope_inv_freq_closed_form(self):
        cfg = ref.LlamaConfig.from_dict(dict(ref.tiny_config(hidden=16, heads=2), rope_theta=10000.0))
        self.assertEqual(cfg.head_dim, 8)
        np.testing.assert_allclose(ref.rope_inv_freq(cfg, np.float64), [1, 0.1, 0.01, 0.001], rtol=1e-15)
        cos, sin = ref.rope_cos_sin(cfg, np.array([0, 2]), np.float64)
        np.testing.assert_allclose(cos[0], 1)
        np.testing.assert_allclose(sin[0], 0)
        np.testing.assert_allclose(cos[1], np.cos(2 * np.array([1, .1, .01, .001] * 2)), rtol=1e-14)

    def test_rope_scores_depend_on_relative_position_only(self):
        cfg = ref.LlamaConfig.from_dict(ref.tiny_config(**SMALL))
        rng = np.random.default_rng(5)
        q = rng.standard_normal((1, 1, cfg.head_dim))
        k = rng.standard_normal((1, 1, cfg.head_dim))

        def score(pq, pk):
            cq, sq = ref.rope_cos_sin(cfg, np.array([pq]), np.float64)
            ck, sk = ref.rope_cos_sin(cfg, np.array([pk]), np.float64)
            return float(np.sum(ref.apply_rope(q, cq, sq) * ref.apply_rope(k, ck, sk)))

        for pq, pk in ((3, 1), (10, 10), (7, 0)):
            for shift in (1, 13, 250):
                self.assertAlmostEqual(score(pq, pk), score(pq + shift, pk + shift), places=10)
        self.assertGreater(abs(score(3, 1) - score(3, 2)), 1e-3)  # but relative position matters

    def test_model_invariant_under_position_shift(self):
        m = model("gqa")
        base = m.forward(TOKS)
        for shift in (1, 37, 500):
            np.testing.assert_allclose(m.forward(TOKS, position_offset=shift), base, rtol=0, atol=1e-9)

    def test_rms_norm_closed_form(self):
        x = np.array([[3.0, 4.0]])
        np.testing.assert_allclose(ref.rms_norm(x, np.array([1.0, 2.0]), 0.0), [[3 / math.sqrt(12.5), 8 / math.sqrt(12.5)]])
        np.testing.assert_allclose(ref.rms_norm(x, np.ones(2), 87.5), [[3 / 10, 4 / 10]])  # sqrt(12.5 + 87.5)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------

def onehot_logits(pred_tokens, V=5, big=10.0):
    """Logits [len, V] whose argmax row r is pred_tokens[r]."""
    lg = np.zeros((len(pred_tokens), V))
    lg[np.arange(len(pred_tokens)), pred_tokens] = big
    return lg


class MetricsTest(unittest.TestCase):
    TOK = [0, 1, 2, 3, 4, 0]  # N = 6, n = 2: completion tokens 2, 3, 4, 0 (M = 4)

    def metrics(self, preds):
        """preds[r] = argmax of logits row r (row r predicts token r+1)."""
        return ref.probe_metrics(onehot_logits(preds), self.TOK, 2)

    def test_no_divergence(self):
        fdt, sdt, nll = self.metrics([0, 2, 3, 4, 0, 0])  # rows 1..4 predict 2, 3, 4, 0
        self.assertEqual((fdt, sdt), (4, 0))
        self.assertAlmostEqual(nll, -math.log(math.exp(10) / (math.exp(10) + 4)), places=12)

    def test_divergence_first_last_several(self):
        # rows 1..4 are scored against tokens 2, 3, 4, 0; rows 0 and 5 are not scored
        self.assertEqual(self.metrics([0, 1, 3, 4, 0, 0])[:2], (0, 1))    # only the first
        self.assertEqual(self.metrics([0, 1, 2, 3, 4, 0])[:2], (0, 4))    # all four
        self.assertEqual(self.metrics([0, 2, 3, 4, 0, 1])[:2], (4, 0))    # row 5 (predicts beyond N) ignored
        self.assertEqual(self.metrics([3, 2, 3, 4, 0, 0])[:2], (4, 0))    # row 0 (inside the prefix) ignored
        self.assertEqual(self.metrics([0, 2, 3, 4, 1, 0])[:2], (3, 1))    # only the last
        self.assertEqual(self.metrics([0, 2, 0, 4, 1, 0])[:2], (1, 2))    # completion indices 1 and 3
        self.assertEqual(self.metrics([0, 2, 3, 0, 0, 0])[:2], (2, 1))    # only index 2

    def test_argmax_ties_go_to_lowest_index(self):
        lg = np.zeros((2, 5))
        lg[0, [2, 4]] = 1.0
        self.assertEqual(ref.probe_metrics(lg, [0, 2], 1)[:2], (1, 0))
        self.assertEqual(ref.probe_metrics(lg, [0, 4], 1)[:2], (0, 1))

    def test_uniform_logits(self):
        V = 7
        fdt, sdt, nll = ref.probe_metrics(np.zeros((5, V), dtype=np.float32), [1, 2, 0, 0, 3], 2)
        self.assertAlmostEqual(nll, math.log(V), places=12)
        # argmax is 0 everywhere (ties -> lowest); targets are tokens 2..4 = 0, 0, 3
        self.assertEqual((fdt, sdt), (2, 1))

    def test_hand_nll_and_large_logits(self):
        lg = np.array([[0.0, math.log(3.0)], [1000.0, 0.0], [5.0, 6.0]])  # last row is not scored
        fdt, sdt, nll = ref.probe_metrics(lg, [0, 1, 0], 1)
        self.assertEqual((fdt, sdt), (2, 0))
        self.assertAlmostEqual(nll, math.log(4 / 3) / 2, places=14)

    def test_bad_prefix(self):
        with self.assertRaises(ref.ReferenceError):
            ref.probe_metrics(np.zeros((3, 4)), [0, 1, 2], 0)
        with self.assertRaises(ref.ReferenceError):
            ref.probe_metrics(np.zeros((3, 4)), [0, 1, 2], 3)

    def test_quantile_matches_numpy(self):
        rng = np.random.default_rng(3)
        for size in list(range(1, 25)) + [100, 1000]:
            ints = rng.integers(0, 500, size)
            floats = rng.standard_normal(size)
            for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
                self.assertEqual(ref.quantile_type7(ints, q), float(np.quantile(ints, q)))
                self.assertEqual(ref.quantile_type7(floats, q), float(np.quantile(floats, q)))
            self.assertEqual(ref.quantile_type7(ints, 0.75), float(np.percentile(ints, 75)))
            self.assertEqual(compare_eval.quantile_type7(ints, 0.75), float(np.percentile(ints, 75)))

    def test_aggregate_hand_example(self):
        pp = [{"id": str(i), "fdt": f, "sdt": s, "nll": l}
              for i, (f, s, l) in enumerate([(0, 3, 0.0), (10, 1, math.log(2)), (20, 0, 0.0), (30, 0, math.log(2))])]
        a = ref.aggregate(pp)
        self.assertEqual((a["fdt75"], a["fdt_mean"], a["sdt_mean"]), (22.5, 15.0, 1.0))
        self.assertAlmostEqual(a["dppl"], 1.5, places=14)


# ----------------------------------------------------------------------------------------------
# compression
# ----------------------------------------------------------------------------------------------

class CompressionTest(unittest.TestCase):
    def test_prune_hand(self):
        w = np.array([[3, -1], [0.5, -2]], dtype=np.float32)
        np.testing.assert_array_equal(ref.prune_magnitude(w, 0.5), [[3, 0], [0, -2]])
        np.testing.assert_array_equal(ref.prune_magnitude(np.array([1, -1, 1, 2], np.float32), 0.5), [0, 0, 1, 2])
        np.testing.assert_array_equal(ref.prune_magnitude(np.array([2, -1, 1, -1], np.float32), 0.5), [2, 0, 0, -1])
        np.testing.assert_array_equal(ref.prune_magnitude(w, 0.0), w)
        np.testing.assert_array_equal(ref.prune_magnitude(w, 1.0), np.zeros((2, 2)))

    def test_prune_count_rounds_half_away(self):
        w = np.array([5, -4, 3, -2, 1], dtype=np.float32)
        for frac, k in ((0.5, 3), (0.1, 1), (0.09, 0), (0.3, 2), (0.7, 4), (0.2, 1)):
            got = ref.prune_magnitude(w, frac)
            self.assertEqual(int(np.sum(got == 0)), k, frac)
            np.testing.assert_array_equal(got[: 5 - k], w[: 5 - k])
        self.assertEqual([ref.round_half_away(x) for x in (0.5, 1.5, 2.5, 2.49, -0.5)], [1, 2, 3, 2, -1])

    def test_absmax_hand(self):
        w = np.array([[127, -63.5, 1.5], [0.5, -0.5, 2.5]], dtype=np.float32)  # scale 1, half-to-even
        got = ref.quantize_absmax(w)
        self.assertEqual(got.dtype, np.float32)
        np.testing.assert_array_equal(got, [[127, -64, 2], [0, 0, 2]])
        np.testing.assert_array_equal(ref.quantize_absmax(np.zeros((2, 3), np.float32)), np.zeros((2, 3)))

    def test_absmax_properties(self):
        w = np.random.default_rng(4).standard_normal((16, 9)).astype(np.float32)
        s = np.float32(np.abs(w).max()) / np.float32(127)
        got = ref.quantize_absmax(w)
        q = got / s
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
        self.assertLessEqual(np.abs(q).max(), 127 + 1e-3)
        self.assertLessEqual(np.abs(got - w).max(), s / 2 * (1 + 1e-5))
        self.assertEqual(len(np.unique(np.round(q))), len(np.unique(np.round(w / s))))

    def test_absmax_row_hand(self):
        w = np.array([[254, 1, 3], [127, 63.5, -127], [0, 0, 0]], dtype=np.float32)
        np.testing.assert_array_equal(ref.quantize_absmax_row(w), [[254, 0, 4], [127, 64, -127], [0, 0, 0]])

    def test_compress_equals_precompressed_checkpoint(self):
        spec = ("model.layers.1.mlp.down_proj=int8-absmax,model.layers.0.self_attn.q_proj=prune:0.5,"
                "model.layers.0.mlp.gate_proj=int8-absmax-row,model.layers.1.self_attn.v_proj=prune:0.25")
        t = dict(TENSORS["gqa"])
        for comp, method in ref.parse_compression(spec):
            t[comp + ".weight"] = ref.parse_method(method)(t[comp + ".weight"])
        d = os.path.join(TMP, "precompressed")
        ref.write_checkpoint(d, CONFIGS["gqa"], t)
        for prec in ("float32", "float64"):
            m = model("gqa", prec, spec)
            np.testing.assert_array_equal(m.forward(TOKS), ref.LlamaReference(d, prec).forward(TOKS))
            m.set_compression("")
            np.testing.assert_array_equal(m.forward(TOKS), model("gqa", prec).forward(TOKS))
        self.assertEqual([c for c, _ in ref.parse_compression(spec)], sorted(c for c, _ in ref.parse_compression(spec)))

    def test_bad_specs(self):
        m = model("gqa")
        for spec, msg in (("model.layers.0.mlp.up_proj=gptq:4", "not implemented in the reference"),
                          ("model.layers.0.mlp.up_proj=llm-int8", "not implemented in the reference"),
                          ("model.layers.0.mlp.up_proj=random-prune:0.5:1", "not implemented in the reference"),
                          ("model.layers.0.mlp.up_proj=foo", "unknown"),
                          ("model.layers.0.mlp.up_proj=prune:1.5", "[0, 1]"),
                          ("model.layers.9.mlp.up_proj=prune:0.5", "layers"),
                          ("model.embed_tokens=prune:0.5", "bad component"),
                          ("model.layers.0.mlp.up_proj=prune:0.1,model.layers.0.mlp.up_proj=int8-absmax", "twice")):
            with self.subTest(spec):
                with self.assertRaises(ref.ReferenceError) as cm:
                    m.set_compression(spec)
                self.assertIn(msg, str(cm.exception))


# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------

HEAVY = ",".join(f"model.layers.{i}.{c}=prune:0.4" for i in range(2)
                 for c in ("self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj"))


def rows_for(m, probes=PROBES, completion=M):
    return [{"id": f"p{i}", "prefix_len": len(p), "tokens": m.greedy(p, completion)} for i, p in enumerate(probes)]


class EndToEndTest(unittest.TestCase):
    def test_self_fdt_is_completion_length(self):
        for name in ("gqa", "tied", "gqa_bf16", "tied_bf16_sharded", "headdim16"):
            for prec in ("float32", "float64"):
                with self.subTest(name=name, prec=prec):
                    m = model(name, prec)
                    out = ref.evaluate(m, rows_for(m))
                    self.assertEqual([p["fdt"] for p in out["per_probe"]], [M] * len(PROBES))
                    self.assertEqual([p["sdt"] for p in out["per_probe"]], [0] * len(PROBES))
                    self.assertEqual((out["fdt75"], out["fdt_mean"], out["sdt_mean"]), (M, M, 0))
                    self.assertAlmostEqual(out["dppl"], np.mean([math.exp(p["nll"]) for p in out["per_probe"]]), 12)
                    self.assertTrue(all(0 < p["nll"] < math.log(64) for p in out["per_probe"]))

    def test_perturbed_token_gives_fdt_at_that_index(self):
        m = model("gqa", "float32")
        row = rows_for(m, PROBES[:1])[0]
        n = row["prefix_len"]
        for j in (0, 5, M - 1):
            toks = list(row["tokens"])
            toks[n + j] = (toks[n + j] + 1) % 64
            fdt, sdt, _ = ref.probe_metrics(m.forward(toks), toks, n)
            self.assertEqual(fdt, j)
            self.assertGreaterEqual(sdt, 1)
            if j == M - 1:
                self.assertEqual(sdt, 1)

    def test_fdt_symmetry_and_prop_3_3(self):
        for prec in ("float32", "float64"):
            f, g = model("gqa", prec), model("gqa", prec, HEAVY)
            base_f, base_g = rows_for(f), rows_for(g)
            fdt_g_on_f = ref.evaluate(g, base_f)["per_probe"]
            fdt_f_on_g = ref.evaluate(f, base_g)["per_probe"]
            for a, b, rf, rg in zip(fdt_g_on_f, fdt_f_on_g, base_f, base_g):
                n = rf["prefix_len"]
                # first position where the two greedy completions differ (n + M when none)
                d = next((i for i in range(n, n + M) if rf["tokens"][i] != rg["tokens"][i]), n + M)
                self.assertEqual(a["fdt"], d - n)
                self.assertEqual(b["fdt"], d - n)
                for p in (a, b):  # SDT <= M * NLL / log 2
                    self.assertLessEqual(p["sdt"], M * p["nll"] / math.log(2) + 1e-9)
            self.assertLess(min(p["fdt"] for p in fdt_g_on_f), M, "the compressed model should diverge somewhere")

    def test_cli_and_compare_scripts(self):
        d = os.path.join(TMP, "cli")
        os.makedirs(d, exist_ok=True)
        probes = os.path.join(d, "probes.jsonl.gz")
        with gzip.open(probes, "wt") as f:
            for i, p in enumerate(PROBES):
                f.write(json.dumps({"id": f"p{i}", "tokens": p}) + "\n")
        base = os.path.join(d, "base.jsonl.gz")
        r = run_cli("llama_reference.py", "baseline", "--model", MODELS["gqa"], "--probes", probes,
                    "--completion", str(M), "--out", base)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = ref.read_jsonl(base)
        self.assertEqual(rows, rows_for(model("gqa", "float32")))
        self.assertEqual(list(rows[0]), ["id", "prefix_len", "tokens"])
        evals = {}
        for tag, extra in (("plain", []), ("heavy", ["--compress", HEAVY])):
            r = run_cli("llama_reference.py", "eval", "--model", MODELS["gqa"], "--baseline", base, *extra)
            self.assertEqual(r.returncode, 0, r.stderr)
            evals[tag] = os.path.join(d, tag + ".json")
            with open(evals[tag], "w") as f:
                f.write(r.stdout)
        r = run_cli("llama_reference.py", "eval", "--model", MODELS["gqa"], "--baseline", base,
                    "--compress", "", "--compress", HEAVY)  # one line per config
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([json.loads(x) for x in r.stdout.splitlines()],
                         [read_json(evals["plain"]), read_json(evals["heavy"])])
        out = read_json(evals["plain"])
        self.assertEqual(set(out), {"per_probe", "fdt75", "fdt_mean", "sdt_mean", "dppl"})
        self.assertEqual(out["fdt75"], M)
        r = run_cli("llama_reference.py", "logits", "--model", MODELS["gqa"], "--tokens", ",".join(map(str, TOKS)))
        np.testing.assert_array_equal(np.array(json.loads(r.stdout), np.float32),
                                      model("gqa", "float32").forward(TOKS)[-1])
        r = run_cli("llama_reference.py", "eval", "--model", MODELS["gqa"], "--baseline", base,
                    "--compress", "model.layers.0.mlp.up_proj=gptq:4")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not implemented in the reference", r.stderr)

        # compare_eval: equal -> 0; fdt / nll / aggregate mismatches -> 1 naming the probe
        r = run_cli("compare_eval.py", evals["plain"], evals["plain"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("max |dnll| = 0", r.stdout)
        r = run_cli("compare_eval.py", evals["plain"], evals["heavy"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("MISMATCH: probe", r.stderr)
        bumped = read_json(evals["plain"])
        bumped["per_probe"][2]["nll"] += 5e-5
        bumped["dppl"] = ref.aggregate(bumped["per_probe"])["dppl"]
        p = os.path.join(d, "bumped.json")
        write_json(p, bumped)
        self.assertEqual(run_cli("compare_eval.py", evals["plain"], p).returncode, 0)
        r = run_cli("compare_eval.py", evals["plain"], p, "--nll-tol", "1e-5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("'p2': nll", r.stderr)
        bumped["fdt75"] = 3.0
        write_json(p, bumped)
        r = run_cli("compare_eval.py", evals["plain"], p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("fdt75", r.stderr)

        # compare_baseline: equal -> 0 (gz vs plain), changed token -> 1 with row and position
        plain = os.path.join(d, "base.jsonl")
        ref.write_jsonl(plain, rows)
        r = run_cli("compare_baseline.py", base, plain)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows[1]["tokens"][rows[1]["prefix_len"] + 3] += 1
        ref.write_jsonl(plain, rows)
        r = run_cli("compare_baseline.py", base, plain)
        self.assertEqual(r.returncode, 1)
        self.assertIn("row 'p1'", r.stderr)
        self.assertIn("completion index 3", r.stderr)


class TrainingReferenceTest(unittest.TestCase):
    def test_pack_hand_example(self):
        docs = [[5, 6], [7], [8, 9, 10]]
        # stream 1 5 6 2 | 1 7 2 | 1 8 9 10 2 (12 tokens): four sequences of 3, nothing dropped
        p = tref.pack(docs, bos=1, eos=2, seq_len=2)
        self.assertEqual(p["sequences"].tolist(), [[1, 5, 6], [2, 1, 7], [2, 1, 8], [9, 10, 2]])
        self.assertEqual((p["documents"], p["tokens"]), (3, 12))
        # two sequences need 6 tokens: the second document (stream at 7) completes them, reading stops
        p = tref.pack(docs, bos=1, eos=2, seq_len=2, max_sequences=2)
        self.assertEqual(p["sequences"].tolist(), [[1, 5, 6], [2, 1, 7]])
        self.assertEqual((p["documents"], p["tokens"]), (2, 7))
        raw = bytes([2, 0, 0, 0, 0, 0, 0, 0]) + b"".join(bytes([t, 0, 0, 0]) for t in (1, 5, 6, 2, 1, 7))
        self.assertEqual(p["fingerprint"], hashlib.sha256(raw).hexdigest())
        p = tref.pack(docs, bos=1, eos=2, seq_len=4)  # 12 // 5 = 2, the last 2 tokens dropped
        self.assertEqual(p["sequences"].tolist(), [[1, 5, 6, 2, 1], [7, 2, 1, 8, 9]])
        with self.assertRaises(ref.ReferenceError):
            tref.pack([[5]], bos=1, eos=2, seq_len=3)

    def test_documents_of_both_formats(self):
        d = tempfile.mkdtemp(dir=TMP)
        text = os.path.join(d, "a.txt")
        with open(text, "w") as f:
            f.write("one\ntwo\n \t\nthree\n\n\n   \n\nfour")
        self.assertEqual(tref.read_documents(text), ["one\ntwo", "three", "four"])
        jsonl = os.path.join(d, "a.jsonl.gz")
        with gzip.open(jsonl, "wt") as f:
            f.write('{"text": "x y"}\n\n  \n{"text": " \\t "}\n{"text": "z", "url": 1}\n')
        self.assertEqual(tref.read_documents(jsonl), ["x y", "z"])
        named_txt = os.path.join(d, "c.txt")
        with open(named_txt, "w") as f:
            f.write('{"text": "x y"}\n')
        self.assertEqual(tref.read_documents(named_txt, "jsonl"), ["x y"])
        self.assertEqual(tref.read_documents(named_txt), ['{"text": "x y"}'])  # auto: by the name, raw text
        bad = os.path.join(d, "b.jsonl")
        with open(bad, "w") as f:
            f.write('{"text": "ok"}\n{"txt": "no"}\n')
        with self.assertRaisesRegex(ref.ReferenceError, "b.jsonl:2"):
            tref.read_documents(bad)

    def test_lm_head_gradient_is_the_derivative_of_the_loss(self):
        model = ref.LlamaReference(MODELS["gqa"], "float64")
        seqs = np.array([[1, 5, 9, 3, 3, 7], [2, 60, 17, 0, 4, 4]])
        loss, count, g = tref.mean_loss(model, seqs, head_grad=True)
        self.assertEqual(count, 10)
        w = model.weight("lm_head.weight").copy()
        h = 1e-5
        for v, j in ((3, 0), (7, 5), (60, 31), (11, 2)):
            for sign in (1, -1):
                bumped = w.copy()
                bumped[v, j] += sign * h
                model._overrides["lm_head.weight"] = bumped
                if sign == 1:
                    up = tref.mean_loss(model, seqs)[0]
                else:
                    down = tref.mean_loss(model, seqs)[0]
            model._overrides.clear()
            self.assertAlmostEqual((up - down) / (2 * h), g[v, j], delta=1e-8 + 1e-6 * abs(g[v, j]))

    def test_first_step_check_on_a_hand_made_step(self):
        lr, wd, eps = 1e-3, 10.0, 1e-8
        tol = {"bound": 1e-4, "head": 1e-6, "moved": 0.9}
        seqs = np.array([[1, 5, 9, 3, 3, 7], [2, 60, 17, 0, 4, 4]])
        model = ref.LlamaReference(MODELS["gqa"], "float64")
        g_head = tref.mean_loss(model, seqs, head_grad=True)[2]
        rng = np.random.default_rng(0)
        seen = np.unique(seqs[:, :-1])

        def stepped(decay):
            out = {}
            for name, w0 in TENSORS["gqa"].items():
                w0 = w0.astype(np.float64)
                if name == "lm_head.weight":
                    u = g_head / (np.abs(g_head) + eps)
                else:
                    u = rng.choice([-1.0, 1.0], size=w0.shape) * (1 - 1e-3 * rng.random(w0.shape))
                    if name == "model.embed_tokens.weight":
                        u[np.setdiff1d(np.arange(w0.shape[0]), seen)] = 0.0
                out[name] = (w0 * decay - lr * u).astype(np.float32)
            return out

        for decay, ok in ((1 - lr * wd, True), ((1 - lr * wd) ** 2, False)):
            d = os.path.join(TMP, f"first-step-{ok}")
            ref.write_checkpoint(d, CONFIGS["gqa"], stepped(decay))
            r = tref.first_step_report(model, d, seqs, lr, wd, eps, tol)
            self.assertEqual(r["ok"], ok, r["failures"])
            self.assertEqual(r["still_rows"], 64 - len(seen))


if __name__ == "__main__":
    unittest.main()
