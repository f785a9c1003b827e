#!/usr/bin/env python3
"""Independent NumPy reference of Hugging Face ``LlamaForCausalLM`` and of the dtm metrics.

This file exists to cross-check the C++ engine. It is written from the public definitions only
(HF's Llama modelling code as documented, ``shared/SPEC.md`` and the paper, Sec. 3), never from the
engine sources. It needs Python 3 and NumPy, nothing else.

What it implements
------------------
* A safetensors reader and writer (8-byte little-endian header length, JSON header, raw data;
  dtypes F32, F16, BF16 and F64) and an HF checkpoint reader (``config.json`` plus one
  ``model.safetensors`` or shards listed in ``model.safetensors.index.json``).
* The Llama forward pass, as HF computes it: RMSNorm ``x * 1/sqrt(mean(x^2) + eps) * weight``,
  rotate-half RoPE, grouped-query attention with a causal mask, SwiGLU MLP, final norm, ``lm_head``
  (or ``embed_tokens`` when ``tie_word_embeddings``). Precision float32 (HF's float32 path, the
  default) or float64 (a more exact reference).
* Compression of components before the forward: ``prune:F``, ``int8-absmax``, ``int8-absmax-row``
  (the other SPEC methods exit with an error saying they are not implemented here).
* The metrics of SPEC (FDT, SDT, NLL per probe; fdt75, fdt_mean, sdt_mean, dppl over probes).

Command lines
-------------
    llama_reference.py eval --model DIR --baseline FILE [--compress SPEC]... [--precision P]
    llama_reference.py baseline --model DIR --probes FILE --completion M [--precision P]
    llama_reference.py logits --model DIR --tokens 1,2,3 [--compress SPEC] [--precision P]
    llama_reference.py make-tiny --out DIR [--tied] [--dtype F32|F16|BF16] [--shards K] ...

Decisions written down here (the places where SPEC is silent):
* ``prune:F`` zeroes k = round-half-away-from-zero(F * numel) entries, those of smallest |w|,
  ties broken by the lower flat (row-major) index.
* ``int8-absmax`` and ``int8-absmax-row`` are computed in float32 on the float32 weights (after
  decoding F16/BF16); rounding is half-to-even (``np.round``, like ``torch.round``). A matrix (or
  row) whose max |w| is 0 has scale 0 and stays all zeros.
* Compression always works on float32 weights; in float64 precision the compressed float32 weights
  are then widened to float64.
* argmax ties go to the lowest index (``np.argmax``, like ``torch.argmax``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import mmap
import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np


class ReferenceError(Exception):
    """A user-facing error (bad input, unsupported feature); the CLI prints it and exits 2."""


# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------

#: safetensors dtype name -> (bytes per element, NumPy dtype used to view the raw bytes)
_ST_DTYPES = {
    "F64": (8, np.dtype("<f8")),
    "F32": (4, np.dtype("<f4")),
    "F16": (2, np.dtype("<f2")),
    "BF16": (2, np.dtype("<u2")),  # decoded by hand: bf16 is the upper 16 bits of a float32
}


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Decode raw bfloat16 bit patterns (uint16) to float32 (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Encode float32 values as bfloat16 bit patterns (uint16), round to nearest even.

    (NaN/Inf are not handled specially; only used to write finite test weights.)
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bias = ((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    return ((u + bias) >> np.uint32(16)).astype(np.uint16)


class SafetensorsFile:
    """Read-only, memory-mapped view of one ``.safetensors`` file."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise ReferenceError(f"{path}: too short for a safetensors file")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (header_len,) = struct.unpack("<Q", self._map[:8])
        if header_len > size - 8:
            raise ReferenceError(f"{path}: header length {header_len} exceeds file size {size}")
        try:
            header = json.loads(bytes(self._map[8 : 8 + header_len]).decode("utf-8"))
        except ValueError as e:
            raise ReferenceError(f"{path}: bad JSON header: {e}") from None
        self.metadata = header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        self._entries: Dict[str, dict] = header
        data_len = size - self._data_start
        for name, e in header.items():
            if e.get("dtype") not in _ST_DTYPES:
                raise ReferenceError(f"{path}: tensor {name}: unsupported dtype {e.get('dtype')}")
            begin, end = e["data_offsets"]
            itemsize = _ST_DTYPES[e["dtype"]][0]
            if not (0 <= begin <= end <= data_len):
                raise ReferenceError(f"{path}: tensor {name}: offsets {begin},{end} out of range")
            if end - begin != itemsize * int(np.prod(e["shape"], dtype=np.int64)):
                raise ReferenceError(f"{path}: tensor {name}: byte size does not match shape")

    def keys(self) -> List[str]:
        return list(self._entries)

    def dtype(self, name: str) -> str:
        return self._entries[name]["dtype"]

    def get(self, name: str) -> np.ndarray:
        """Return the tensor decoded to a NumPy array (a copy).

        F32 -> float32, F16 -> float16, BF16 -> float32 (exact), F64 -> float64.
        """
        e = self._entries[name]
        begin, end = e["data_offsets"]
        _, view_dtype = _ST_DTYPES[e["dtype"]]
        raw = np.frombuffer(
            self._map, dtype=view_dtype, count=(end - begin) // view_dtype.itemsize,
            offset=self._data_start + begin,
        )
        if e["dtype"] == "BF16":
            arr = bf16_bits_to_float32(raw)
        else:
            arr = raw.astype(view_dtype.newbyteorder("="), copy=True)
        return arr.reshape(e["shape"])


def write_safetensors(path: str, tensors: Dict[str, Tuple[np.ndarray, str]],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``{name: (array, dtype)}`` (dtype in F32/F16/BF16/F64) as a safetensors file.

    Tensors are laid out contiguously in name order, the header is padded with spaces to a
    multiple of 8 bytes, as the official writer does.
    """
    header: Dict[str, object] = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    blobs: List[bytes] = []
    offset = 0
    for name in sorted(tensors):
        arr, dt = tensors[name]
        arr = np.asarray(arr)
        if dt == "BF16":
            raw = float32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
        elif dt in _ST_DTYPES:
            raw = np.ascontiguousarray(arr, dtype=_ST_DTYPES[dt][1]).tobytes()
        else:
            raise ReferenceError(f"cannot write dtype {dt}")
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------
# Checkpoint and config
# ----------------------------------------------------------------------------------------------

@dataclass
class LlamaConfig:
    """The fields of an HF ``config.json`` the forward needs (defaults as HF's LlamaConfig)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict]
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool

    @staticmethod
    def from_dict(c: dict) -> "LlamaConfig":
        heads = int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise ReferenceError(f"hidden_act {act!r} not supported (only silu)")
        if heads % kv:
            raise ReferenceError(f"num_attention_heads {heads} not a multiple of num_key_value_heads {kv}")
        # transformers 5 may store RoPE settings in "rope_parameters"; older files use rope_theta
        # and rope_scaling at top level.
        rp = c.get("rope_parameters") or {}
        theta = c.get("rope_theta", rp.get("rope_theta", 10000.0))
        scaling = c.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
        return LlamaConfig(
            vocab_size=int(c["vocab_size"]), hidden_size=int(c["hidden_size"]),
            intermediate_size=int(c["intermediate_size"]), num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
            rope_scaling=scaling, tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            attention_bias=bool(c.get("attention_bias", False)), mlp_bias=bool(c.get("mlp_bias", False)),
        )


class Checkpoint:
    """An HF checkpoint folder: config plus tensors from one or several safetensors files."""

    def __init__(self, model_dir: str):
        self.dir = model_dir
        cfg_path = os.path.join(model_dir, "config.json")
        if not os.path.exists(cfg_path):
            raise ReferenceError(f"{model_dir}: no config.json")
        with open(cfg_path) as f:
            self.raw_config = json.load(f)
        self.config = LlamaConfig.from_dict(self.raw_config)
        index = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        self._files: Dict[str, SafetensorsFile] = {}
        self._where: Dict[str, str] = {}
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            for name, fname in weight_map.items():
                if fname not in self._files:
                    self._files[fname] = SafetensorsFile(os.path.join(model_dir, fname))
                if name not in self._files[fname].keys():
                    raise ReferenceError(f"index names {name} in {fname}, which does not hold it")
                self._where[name] = fname
        elif os.path.exists(single):
            self._files["model.safetensors"] = SafetensorsFile(single)
            self._where = {n: "model.safetensors" for n in self._files["model.safetensors"].keys()}
        else:
            raise ReferenceError(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")

    def names(self) -> List[str]:
        return sorted(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def tensor(self, name: str) -> np.ndarray:
        """The stored tensor decoded (see ``SafetensorsFile.get``)."""
        if name not in self._where:
            raise ReferenceError(f"checkpoint has no tensor {name}")
        return self._files[self._where[name]].get(name)


# ----------------------------------------------------------------------------------------------
# Compression
# ----------------------------------------------------------------------------------------------

COMPONENT_RE = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")
NOT_IMPLEMENTED_METHODS = ("random-prune", "llm-int8", "gptq")


def round_half_away(x: float) -> int:
    """Round to the nearest integer, halves away from zero."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def prune_magnitude(w: np.ndarray, fraction: float) -> np.ndarray:
    """Zero the k = round-half-away(fraction * numel) entries of smallest |w|.

    Ties in |w| are broken by the lower flat (row-major) index. Returns a new float32 array.
    """
    w = np.asarray(w, dtype=np.float32)
    k = round_half_away(fraction * w.size)
    flat = w.reshape(-1).copy()
    order = np.argsort(np.abs(flat), kind="stable")  # stable: equal |w| keep index order
    flat[order[:k]] = 0.0
    return flat.reshape(w.shape)


def quantize_absmax(w: np.ndarray) -> np.ndarray:
    """AbsMax int8 of the whole matrix: s = max|w|/127; clamp(round(w/s), -127, 127) * s (float32)."""
    w = np.asarray(w, dtype=np.float32)
    s = np.float32(np.max(np.abs(w))) / np.float32(127.0)
    if s == 0:
        return w.copy()
    q = np.clip(np.round(w / s), -127, 127).astype(np.float32)
    return q * s


def quantize_absmax_row(w: np.ndarray) -> np.ndarray:
    """AbsMax int8 with one scale per output row (row r of the [out, in] weight)."""
    w = np.asarray(w, dtype=np.float32)
    s = (np.max(np.abs(w), axis=1, keepdims=True) / np.float32(127.0)).astype(np.float32)  # [out, 1]
    safe = np.where(s == 0, np.float32(1.0), s)
    q = np.clip(np.round(w / safe), -127, 127).astype(np.float32)
    return np.where(s == 0, w, q * s).astype(np.float32)


def parse_method(method: str):
    """Return a function float32 matrix -> compressed float32 matrix for one SPEC method string."""
    if method.startswith("prune:"):
        try:
            frac = float(method[len("prune:"):])
        except ValueError:
            raise ReferenceError(f"bad fraction in {method!r}") from None
        if not (0.0 <= frac <= 1.0):
            raise ReferenceError(f"prune fraction must be in [0, 1]: {method!r}")
        return lambda w: prune_magnitude(w, frac)
    if method == "int8-absmax":
        return quantize_absmax
    if method == "int8-absmax-row":
        return quantize_absmax_row
    if method.split(":")[0] in NOT_IMPLEMENTED_METHODS:
        raise ReferenceError(f"method {method!r} is not implemented in the reference")
    raise ReferenceError(f"unknown compression method {method!r}")


def parse_compression(spec: str) -> List[Tuple[str, str]]:
    """Parse ``COMPONENT=METHOD[,COMPONENT=METHOD...]`` into a list sorted by component."""
    pairs: Dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise ReferenceError(f"bad compression item {item!r} (want COMPONENT=METHOD)")
        comp, method = item.split("=", 1)
        comp, method = comp.strip(), method.strip()
        if not COMPONENT_RE.match(comp):
            raise ReferenceError(f"bad component name {comp!r}")
        if comp in pairs:
            raise ReferenceError(f"component {comp} given twice")
        parse_method(method)  # validate early
        pairs[comp] = method
    return sorted(pairs.items())


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

def rope_inv_freq(cfg: LlamaConfig, dtype) -> np.ndarray:
    """inv_freq[j] = 1 / theta^(2j/hd), j < hd/2, with HF's rope_scaling variants linear/llama3."""
    hd = cfg.head_dim
    exponent = np.arange(0, hd, 2).astype(dtype) / dtype(hd)            # [hd/2]
    inv = (dtype(1.0) / (dtype(cfg.rope_theta) ** exponent)).astype(dtype)
    sc = cfg.rope_scaling
    if not sc:
        return inv
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return (inv / dtype(sc["factor"])).astype(dtype)
    if kind == "llama3":
        factor, lo_f, hi_f = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old_len = sc["original_max_position_embeddings"]
        lo_wl, hi_wl = old_len / lo_f, old_len / hi_f
        wl = 2 * math.pi / inv
        scaled = np.where(wl > lo_wl, inv / factor, inv)
        smooth = (old_len / wl - lo_f) / (hi_f - lo_f)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        return np.where(medium, smoothed, scaled).astype(dtype)
    raise ReferenceError(f"rope_scaling type {kind!r} not supported by the reference")


def rope_cos_sin(cfg: LlamaConfig, positions: np.ndarray, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """cos and sin of cat(freqs, freqs), freqs = positions x inv_freq: each [T, hd]."""
    inv = rope_inv_freq(cfg, dtype)                                      # [hd/2]
    freqs = positions.astype(dtype)[:, None] * inv[None, :]              # [T, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                        # [T, hd]
    return np.cos(emb).astype(dtype), np.sin(emb).astype(dtype)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[..., hd] -> cat(-x2, x1) with x1, x2 the two halves of the last axis."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [heads, T, hd]; cos, sin: [T, hd]."""
    return x * cos[None] + rotate_half(x) * sin[None]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """HF LlamaRMSNorm: x * 1/sqrt(mean(x^2) + eps), then * weight. x: [T, D]."""
    dt = x.dtype
    var = np.mean(x * x, axis=-1, keepdims=True)                         # [T, 1]
    return weight * (x * (dt.type(1.0) / np.sqrt(var + dt.type(eps))))


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x / (x.dtype.type(1.0) + np.exp(-x))


def softmax_last(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


class LlamaReference:
    """Llama forward in NumPy, with optional per-component compression.

    Weights are decoded lazily and cached in the compute dtype.
    """

    def __init__(self, model_dir: str, precision: str = "float32"):
        if precision not in ("float32", "float64"):
            raise ReferenceError(f"precision must be float32 or float64, not {precision!r}")
        self.ckpt = Checkpoint(model_dir)
        self.cfg = self.ckpt.config
        self.dtype = np.float32 if precision == "float32" else np.float64
        self._cache: Dict[str, np.ndarray] = {}
        self._overrides: Dict[str, np.ndarray] = {}
        self.compression: List[Tuple[str, str]] = []

    # -- weights
    def weight(self, name: str) -> np.ndarray:
        """Tensor ``name`` in the compute dtype (the compressed version where one is set)."""
        if name in self._overrides:
            return self._overrides[name]
        if name not in self._cache:
            self._cache[name] = self.ckpt.tensor(name).astype(self.dtype)
        return self._cache[name]

    def maybe_weight(self, name: str) -> Optional[np.ndarray]:
        return self.weight(name) if self.ckpt.has(name) else None

    def lm_head(self) -> np.ndarray:
        if self.cfg.tie_word_embeddings or not self.ckpt.has("lm_head.weight"):
            return self.weight("model.embed_tokens.weight")
        return self.weight("lm_head.weight")

    def set_compression(self, spec: str) -> None:
        """Apply a SPEC compression config (replacing any previous one)."""
        self._overrides.clear()
        self.compression = parse_compression(spec or "")
        for comp, method in self.compression:
            layer = int(COMPONENT_RE.match(comp).group(1))
            if layer >= self.cfg.num_hidden_layers:
                raise ReferenceError(f"component {comp}: model has {self.cfg.num_hidden_layers} layers")
            w32 = self.ckpt.tensor(comp + ".weight").astype(np.float32)
            self._overrides[comp + ".weight"] = parse_method(method)(w32).astype(self.dtype)

    # -- forward
    def _linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        """x: [T, in] -> [T, out] with W: [out, in] (and bias if the checkpoint has one)."""
        y = x @ self.weight(prefix + ".weight").T
        b = self.maybe_weight(prefix + ".bias")
        return y if b is None else y + b

    def hidden_states(self, tokens: Sequence[int], position_offset: int = 0) -> np.ndarray:
        """Final-normed hidden states [T, D] for token ids [T] at positions offset..offset+T-1."""
        cfg, dt = self.cfg, self.dtype
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ReferenceError("need a non-empty 1-D token sequence")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ReferenceError(f"token id out of range [0, {cfg.vocab_size})")
        T, H, KVH, hd = ids.size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        rep = H // KVH
        x = self.weight("model.embed_tokens.weight")[ids]                 # [T, D]
        cos, sin = rope_cos_sin(cfg, np.arange(T) + position_offset, dt)  # [T, hd]
        causal = np.tril(np.ones((T, T), dtype=bool))                     # [T(query), T(key)]
        scale = dt(hd ** -0.5)                                            # HF: head_dim ** -0.5
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            # --- self-attention
            h = rms_norm(x, self.weight(p + "input_layernorm.weight"), cfg.rms_norm_eps)
            q = self._linear(h, p + "self_attn.q_proj").reshape(T, H, hd).transpose(1, 0, 2)    # [H, T, hd]
            k = self._linear(h, p + "self_attn.k_proj").reshape(T, KVH, hd).transpose(1, 0, 2)  # [KVH, T, hd]
            v = self._linear(h, p + "self_attn.v_proj").reshape(T, KVH, hd).transpose(1, 0, 2)  # [KVH, T, hd]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k = np.repeat(k, rep, axis=0)                                 # [H, T, hd]; head h -> kv h // rep
            v = np.repeat(v, rep, axis=0)
            scores = (q @ k.transpose(0, 2, 1)) * scale                   # [H, T, T]
            scores = np.where(causal[None], scores, dt(-np.inf))
            probs = softmax_last(scores)                                  # [H, T, T]
            o = (probs @ v).transpose(1, 0, 2).reshape(T, H * hd)         # [T, H*hd]
            x = x + self._linear(o, p + "self_attn.o_proj")
            # --- MLP
            h = rms_norm(x, self.weight(p + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
            gate = silu(self._linear(h, p + "mlp.gate_proj"))             # [T, I]
            up = self._linear(h, p + "mlp.up_proj")                       # [T, I]
            x = x + self._linear(gate * up, p + "mlp.down_proj")          # [T, D]
        return rms_norm(x, self.weight("model.norm.weight"), cfg.rms_norm_eps)

    def forward(self, tokens: Sequence[int], position_offset: int = 0, last_only: bool = False) -> np.ndarray:
        """Logits [T, V] (or [1, V] with last_only) in the compute dtype."""
        h = self.hidden_states(tokens, position_offset)
        if last_only:
            h = h[-1:]
        return h @ self.lm_head().T

    def greedy(self, prefix: Sequence[int], completion: int) -> List[int]:
        """Greedy completion by full recomputation: prefix + `completion` argmax tokens (no EOS stop)."""
        seq = [int(t) for t in prefix]
        for _ in range(completion):
            # full logits then the last row: the same arithmetic as the eval forward (a 1-row
            # lm_head product may round differently from the N-row one)
            seq.append(int(np.argmax(self.forward(seq)[-1])))
        return seq


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

def probe_metrics(logits: np.ndarray, tokens: Sequence[int], prefix_len: int) -> Tuple[int, int, float]:
    """FDT, SDT and NLL of one baseline sequence under a model's logits.

    logits: [N, V] of the whole sequence (row i predicts token i+1); tokens: [N]; prefix_len n.
    Positions i = n..N-1 are scored with logits row i-1.
      fdt = first completion index j (0-based from token n) where argmax(logits[n-1+j]) != tokens[n+j],
            = N-n when there is none;  sdt = count of such j;  nll = mean of -log softmax(...)[token].
    """
    toks = np.asarray(tokens, dtype=np.int64)
    N, n = toks.size, int(prefix_len)
    if not (1 <= n < N):
        raise ReferenceError(f"need 1 <= prefix_len < len(tokens), got prefix_len={n}, len={N}")
    if logits.shape[0] != N:
        raise ReferenceError(f"logits rows {logits.shape[0]} != tokens {N}")
    pred = logits[n - 1 : N - 1]                                          # [M, V]
    target = toks[n:N]                                                    # [M]
    diff = np.argmax(pred, axis=-1) != target                             # [M]
    sdt = int(diff.sum())
    fdt = int(np.argmax(diff)) if sdt else int(N - n)
    lp = pred.astype(np.float64)
    m = lp.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(lp - m), axis=-1, keepdims=True)))[:, 0]  # [M]
    nll = float(np.mean(lse - lp[np.arange(target.size), target]))
    return fdt, sdt, nll


def quantile_type7(values: Sequence[float], q: float) -> float:
    """Quantile by linear interpolation between order statistics (R type 7, NumPy's default)."""
    x = sorted(float(v) for v in values)
    if not x:
        return float("nan")
    h = (len(x) - 1) * q                       # virtual index, as numpy computes it
    lo = int(math.floor(h))
    hi = min(lo + 1, len(x) - 1)
    t, d = h - lo, x[hi] - x[lo]
    # numpy's _lerp: a + d*t, or b - d*(1-t) when t >= 0.5 (same value up to the last ulp)
    return x[hi] - d * (1 - t) if t >= 0.5 else x[lo] + d * t


def aggregate(per_probe: List[dict]) -> dict:
    """The eval output object: per_probe plus fdt75, fdt_mean, sdt_mean, dppl."""
    fdt = [p["fdt"] for p in per_probe]
    sdt = [p["sdt"] for p in per_probe]
    nll = [p["nll"] for p in per_probe]
    k = len(per_probe)
    return {
        "per_probe": per_probe,
        "fdt75": quantile_type7(fdt, 0.75),
        "fdt_mean": sum(fdt) / k if k else float("nan"),
        "sdt_mean": sum(sdt) / k if k else float("nan"),
        "dppl": sum(math.exp(v) for v in nll) / k if k else float("nan"),
    }


def evaluate(model: LlamaReference, rows: Iterable[dict]) -> dict:
    """One forward per baseline row; returns the eval output object."""
    per_probe = []
    for row in rows:
        tokens = row["tokens"]
        fdt, sdt, nll = probe_metrics(model.forward(tokens), tokens, row["prefix_len"])
        per_probe.append({"id": row["id"], "fdt": fdt, "sdt": sdt, "nll": nll})
    return aggregate(per_probe)


# ----------------------------------------------------------------------------------------------
# JSON lines I/O
# ----------------------------------------------------------------------------------------------

def open_text(path: str, mode: str = "rt"):
    """Open a text file; gzip when reading a gzip stream or writing a name ending in .gz."""
    if path == "-":
        return sys.stdin if "r" in mode else sys.stdout
    if "r" in mode:
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(path, mode, encoding="utf-8")
        return open(path, mode, encoding="utf-8")
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_jsonl(path: str) -> List[dict]:
    f = open_text(path, "rt")
    try:
        return [json.loads(line) for line in f if line.strip()]
    finally:
        if f is not sys.stdin:
            f.close()


def write_jsonl(path: Optional[str], rows: Iterable[dict]) -> None:
    f = open_text(path or "-", "wt")
    try:
        for r in rows:
            f.write(json.dumps(r, separators=(", ", ": ")) + "\n")
            f.flush()
    finally:
        if f is not sys.stdout:
            f.close()


# ----------------------------------------------------------------------------------------------
# Tiny random checkpoints (for tests and for cross-checking other implementations)
# ----------------------------------------------------------------------------------------------

def tiny_tensors(seed: int = 0, vocab: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, intermediate: int = 48, tied: bool = False, head_dim: Optional[int] = None,
                 ) -> Dict[str, np.ndarray]:
    """Random float32 Llama weights {HF name: array}, scaled so logits are O(1..10)."""
    rng = np.random.default_rng(seed)
    hd = head_dim or hidden // heads

    def lin(out_f: int, in_f: int) -> np.ndarray:
        return (rng.standard_normal((out_f, in_f)) / math.sqrt(in_f)).astype(np.float32)

    def norm(d: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "self_attn.q_proj.weight"] = lin(heads * hd, hidden)
        t[p + "self_attn.k_proj.weight"] = lin(kv_heads * hd, hidden)
        t[p + "self_attn.v_proj.weight"] = lin(kv_heads * hd, hidden)
        t[p + "self_attn.o_proj.weight"] = lin(hidden, heads * hd)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        t[p + "mlp.gate_proj.weight"] = lin(intermediate, hidden)
        t[p + "mlp.up_proj.weight"] = lin(intermediate, hidden)
        t[p + "mlp.down_proj.weight"] = lin(hidden, intermediate)
    t["model.norm.weight"] = norm(hidden)
    if not tied:
        t["lm_head.weight"] = (3.0 * lin(vocab, hidden)).astype(np.float32)
    return t


def tiny_config(vocab: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int = 48, tied: bool = False, dtype: str = "F32", rope_theta: float = 10000.0,
                rms_norm_eps: float = 1e-5, head_dim: Optional[int] = None) -> dict:
    """An HF-loadable config.json dict for ``tiny_tensors``."""
    torch_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": rms_norm_eps,
        "rope_theta": rope_theta, "rope_scaling": None, "tie_word_embeddings": tied,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1,
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": torch_dtype,
    }
    if head_dim is not None:
        c["head_dim"] = head_dim
    return c


def write_checkpoint(out_dir: str, config: dict, tensors: Dict[str, np.ndarray], dtype: str = "F32",
                     shards: int = 1) -> None:
    """Write config.json and the tensors (one file, or `shards` files plus an index)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = sorted(tensors)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), {n: (tensors[n], dtype) for n in names})
        return
    weight_map, total = {}, 0
    itemsize = _ST_DTYPES[dtype][0]
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        write_safetensors(os.path.join(out_dir, fname), {n: (tensors[n], dtype) for n in part})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].size * itemsize
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _single_model(a) -> LlamaReference:
    if a.compress and len(a.compress) > 1:
        raise ReferenceError("only eval takes --compress more than once")
    model = LlamaReference(a.model, a.precision)
    model.set_compression((a.compress or [""])[0])
    return model


def _cmd_eval(a) -> None:
    model = LlamaReference(a.model, a.precision)
    specs = a.compress or [""]
    for spec in specs:  # validate every config before the (slow) evaluations
        parse_compression(spec)
    rows = read_jsonl(a.baseline)
    if a.limit is not None:
        rows = rows[: a.limit]
    for spec in specs:  # one JSON object (line) per config
        model.set_compression(spec)
        print(json.dumps(evaluate(model, rows)), flush=True)


def _cmd_baseline(a) -> None:
    model = _single_model(a)
    probes = read_jsonl(a.probes)
    if a.limit is not None:
        probes = probes[: a.limit]

    def rows():
        for p in probes:
            yield {"id": p["id"], "prefix_len": len(p["tokens"]), "tokens": model.greedy(p["tokens"], a.completion)}

    write_jsonl(a.out, rows())


def _cmd_logits(a) -> None:
    model = _single_model(a)
    tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    print(json.dumps([float(v) for v in model.forward(tokens)[-1]]))


def _cmd_make_tiny(a) -> None:
    kw = dict(vocab=a.vocab, hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
              intermediate=a.intermediate, tied=a.tied, head_dim=a.head_dim)
    tensors = tiny_tensors(seed=a.seed, **kw)
    cfg = tiny_config(dtype=a.dtype, rope_theta=a.rope_theta, **kw)
    write_checkpoint(a.out, cfg, tensors, dtype=a.dtype, shards=a.shards)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--model", required=True, help="HF checkpoint folder")
        p.add_argument("--precision", choices=["float32", "float64"], default="float32")
        p.add_argument("--compress", action="append", default=None,
                       help="COMPONENT=METHOD[,COMPONENT=METHOD...]; eval takes it repeatedly and "
                            "prints one JSON object (line) per config, in order")

    p = sub.add_parser("eval", help="FDT/SDT/NLL of a baseline file under the (compressed) model")
    common(p)
    p.add_argument("--baseline", required=True, help="baseline JSON lines (.gz ok)")
    p.add_argument("--limit", type=int, default=None, help="only the first K rows")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("baseline", help="greedy completions of a probe file (JSON lines to stdout)")
    common(p)
    p.add_argument("--probes", required=True, help="probe JSON lines (.gz ok)")
    p.add_argument("--completion", type=int, required=True, help="tokens to generate per probe")
    p.add_argument("--out", default=None, help="write here instead of stdout (.gz -> gzip)")
    p.add_argument("--limit", type=int, default=None, help="only the first K probes")
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser("logits", help="logits of the last position, as a JSON list")
    common(p)
    p.add_argument("--tokens", required=True, help="comma-separated token ids")
    p.set_defaults(func=_cmd_logits)

    p = sub.add_parser("make-tiny", help="write a small random Llama checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=48)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--tied", action="store_true")
    p.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="F32")
    p.add_argument("--shards", type=int, default=1)
    p.set_defaults(func=_cmd_make_tiny)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ReferenceError as e:
        print(f"llama_reference: error: {e}", file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
