#!/usr/bin/env python3
"""Independent NumPy reader of "compressed-tensors" checkpoints (an outside check of dtm's writer).

Written from compressed-tensors 0.12.x (neuralmagic/compressed-tensors, source read at commit
52792be: ``pack_quantized.py``, ``naive_quantized.py``, ``quantized_compressors/base.py``,
``quantization/lifecycle/forward.py`` (``dequantize``, ``_dequantize``, ``_process_quantization``),
``quantization/lifecycle/apply.py`` and ``utils/match.py``), never from dtm's C++ sources.
Python 3 and NumPy only.

What it checks
--------------
* ``quantization_config``: quant_method ``compressed-tensors``, status ``compressed``, formats
  int-quantized / naive-quantized / pack-quantized (globally, or per group under mixed-precision),
  integer weights of 1..8 bits, strategies tensor / channel / group, static, no actorder; no
  activation, kv-cache, sparsity or transform schemes (all refused, naming the group).
* Which module is quantized by which group, as ``apply.py`` decides it: a module is quantized when a
  target matches and no ``ignore`` entry does; its scheme is that of the most specific matching
  target (exact names, then ``re:`` patterns in sorted order, then class names), a target listed by
  two groups belonging to the later one. Class names are resolved by Llama naming (a checkpoint
  holds no classes): ``Linear`` = q/k/v/o_proj, gate/up/down_proj and lm_head; ``Embedding`` =
  embed_tokens. Every module a group claims must be stored compressed and vice versa.
* Tensor layouts: shapes and dtypes of ``weight`` / ``weight_packed`` / ``weight_shape`` /
  ``weight_scale`` / ``weight_zero_point``, integer values inside the ``num_bits`` range, a zero
  point present exactly when asymmetric (packed along dim 0 for pack-quantized channel/group).
* Dequantization as ``_dequantize``: ``(q - z) * s`` in the scale's dtype. For F32 scales that is
  float32 arithmetic. For F16 / BF16 scales we compute in float32 and round once to the scale's
  dtype (round to nearest even); this equals torch's half-precision arithmetic because, with
  ``num_bits <= 8``, ``q - z`` is an integer of at most 9 bits (exact in F16 and BF16) and its
  product with an F16/BF16 scale is exact in float32, so there is a single rounding either way.
  Dequantized weights are returned as float32 arrays holding those values; ``dtypes`` says F16/BF16.

Command lines
-------------
    compressed_tensors_reference.py compare --export DIR --float DIR
    compressed_tensors_reference.py dequantize --export DIR --out DIR2
    compressed_tensors_reference.py summary --export DIR
Errors print ``error: ...`` on stderr and exit 2; ``compare`` exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import shutil
import struct
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_reference as _llama  # noqa: E402  (ReferenceError, bf16 encode/decode)


class CompressedTensorsError(_llama.ReferenceError):
    """Unsupported or inconsistent checkpoint; the message names the tensor, module or group."""


# ---------------------------------------------------------------------------------------------
# safetensors with integer dtypes (llama_reference's reader/writer only know float dtypes)
# ---------------------------------------------------------------------------------------------

_DT = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
       "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}
_INT_DTYPES = ("I64", "I32", "I16", "I8", "U8")


def read_safetensors(path: str) -> Dict[str, Tuple[str, np.ndarray]]:
    """``{name: (dtype, array)}``; BF16 arrives as raw uint16 bits (decode with ``_as_float32``)."""
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(bytes(buf[8:8 + hlen]))
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        if e["dtype"] not in _DT:
            raise CompressedTensorsError(f"{path}: tensor {name}: unsupported dtype {e['dtype']}")
        dt = np.dtype(_DT[e["dtype"]])
        begin, end = e["data_offsets"]
        n = int(np.prod(e["shape"], dtype=np.int64))
        if end - begin != n * dt.itemsize or 8 + hlen + end > len(buf):
            raise CompressedTensorsError(f"{path}: tensor {name}: byte range does not match shape")
        arr = np.frombuffer(buf, dtype=dt, count=n, offset=8 + hlen + begin)
        out[name] = (e["dtype"], arr.astype(dt.newbyteorder("="), copy=True).reshape(e["shape"]))
    return out


def write_safetensors(path: str, tensors: Dict[str, Tuple[np.ndarray, str]]) -> None:
    """Write ``{name: (array, dtype)}``; any dtype of ``_DT`` (BF16 from float values, RNE)."""
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr, dt = tensors[name]
        arr = np.asarray(arr)
        if dt == "BF16":
            raw = _llama.float32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(arr, dtype=_DT[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs))


def checkpoint_files(directory: str) -> List[str]:
    """The safetensors files of a checkpoint: the shards of the index, else model.safetensors."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(directory, n) for n in names]
    return [os.path.join(directory, "model.safetensors")]


def load_checkpoint(directory: str) -> Tuple[dict, Dict[str, Tuple[str, np.ndarray]]]:
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    tensors: Dict[str, Tuple[str, np.ndarray]] = {}
    for path in checkpoint_files(directory):
        for name, value in read_safetensors(path).items():
            if name in tensors:
                raise CompressedTensorsError(f"tensor {name} is stored in two shards")
            tensors[name] = value
    return config, tensors


def _as_float32(dtype: str, arr: np.ndarray, name: str = "?") -> np.ndarray:
    """Float tensors to float32 (exact for F16/BF16); F64 is kept as float64."""
    if dtype == "BF16":
        return _llama.bf16_bits_to_float32(arr)
    if dtype in ("F32", "F16"):
        return arr.astype(np.float32)
    if dtype == "F64":
        return arr
    raise CompressedTensorsError(f"tensor {name}: expected a float tensor, got {dtype}")


# ---------------------------------------------------------------------------------------------
# Packing (pack_quantized.pack_to_int32 / unpack_from_int32)
# ---------------------------------------------------------------------------------------------

def pack_to_int32(values: np.ndarray, num_bits: int, packed_dim: int = 1) -> np.ndarray:
    """Pack signed ``num_bits`` integers (2-D) into int32, ``32 // num_bits`` per word, low bits first."""
    if not 1 <= num_bits <= 8:
        raise CompressedTensorsError(f"packing supports 1..8 bits, got {num_bits}")
    v = np.asarray(values, dtype=np.int64)
    offset = 1 << (num_bits - 1)
    if v.size and (v.min() < -offset or v.max() >= offset):
        raise CompressedTensorsError(f"values outside the signed {num_bits}-bit range")
    u = (v + offset).astype(np.uint64)  # unsigned, as the format stores them
    if packed_dim == 0:
        u = u.T
    rows, cols = u.shape
    pf = 32 // num_bits
    words = -(-cols // pf)
    u = np.pad(u, ((0, 0), (0, words * pf - cols)))  # zero padding at the end of each row
    shifts = np.arange(pf, dtype=np.uint64) * np.uint64(num_bits)
    packed = (u.reshape(rows, words, pf) << shifts).sum(axis=2, dtype=np.uint64)
    packed = packed.astype(np.uint32).view(np.int32)  # bit 31 may be set: a negative int32
    return np.ascontiguousarray(packed.T if packed_dim == 0 else packed)


def unpack_from_int32(packed: np.ndarray, num_bits: int, shape, packed_dim: int = 1) -> np.ndarray:
    """Inverse of ``pack_to_int32``: signed int8 of ``shape`` (padding past it dropped)."""
    if not 1 <= num_bits <= 8:
        raise CompressedTensorsError(f"unpacking supports 1..8 bits, got {num_bits}")
    p = np.ascontiguousarray(packed, dtype=np.int32).view(np.uint32)
    if packed_dim == 0:
        p = p.T
    pf, mask = 32 // num_bits, np.uint32((1 << num_bits) - 1)
    out = np.empty((p.shape[0], p.shape[1] * pf), dtype=np.int64)
    for j in range(pf):
        out[:, j::pf] = (p >> np.uint32(num_bits * j)) & mask
    keep = int(shape[packed_dim])
    out = out[:, :keep] - (1 << (num_bits - 1))
    return (out.T if packed_dim == 0 else out).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Configuration and target matching (utils/match.py, lifecycle/apply.py)
# ---------------------------------------------------------------------------------------------

_LLAMA_LINEAR = re.compile(r"(?:.*\.)?(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$|^lm_head$")
_LLAMA_EMBEDDING = re.compile(r"(?:.*\.)?embed_tokens$")
_FORMATS = ("int-quantized", "naive-quantized", "pack-quantized")


def match_name(name: str, target: str) -> bool:
    """``_match_name``: ``re:`` = ``re.match`` (anchored at the start only), else equality."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


def match_class(name: str, target: str) -> bool:
    """``_match_class``, with classes inferred from Llama module names."""
    if target == "Linear":
        return _LLAMA_LINEAR.match(name) is not None
    if target == "Embedding":
        return _LLAMA_EMBEDDING.match(name) is not None
    return False


@dataclass
class Scheme:
    group: str
    format: str
    num_bits: int
    strategy: str
    group_size: Optional[int]
    symmetric: bool


def parse_quantization_config(qc: dict) -> Tuple[Dict[str, Scheme], Dict[str, str], List[str]]:
    """Validate; return (schemes by group, target -> group in CT's override order, ignore)."""
    if qc.get("quant_method") != "compressed-tensors":
        raise CompressedTensorsError(f"quant_method is {qc.get('quant_method')!r}, not compressed-tensors")
    if qc.get("quantization_status") != "compressed":
        raise CompressedTensorsError(f"quantization_status is {qc.get('quantization_status')!r}, not 'compressed'")
    for key in ("kv_cache_scheme", "transform_config"):
        if qc.get(key):
            raise CompressedTensorsError(f"{key} is set; not supported")
    sparsity = qc.get("sparsity_config") or {}
    if sparsity and sparsity.get("format", "dense") != "dense":
        raise CompressedTensorsError(f"sparsity_config format {sparsity.get('format')!r} is not supported")
    schemes: Dict[str, Scheme] = {}
    target_to_group: Dict[str, str] = {}
    for gname, g in (qc.get("config_groups") or {}).items():
        if not isinstance(g, dict):
            raise CompressedTensorsError(f"group {gname}: preset schemes ({g!r}) are not supported")
        for key in ("input_activations", "output_activations"):
            if g.get(key) is not None:
                raise CompressedTensorsError(f"group {gname}: {key} is set (activation quantization is not supported)")
        w = g.get("weights")
        if w is None:
            raise CompressedTensorsError(f"group {gname}: no weights scheme")
        fmt = g.get("format") or qc.get("format")
        if fmt not in _FORMATS:
            raise CompressedTensorsError(f"group {gname}: format {fmt!r} is not supported")
        if w.get("type", "int") != "int":
            raise CompressedTensorsError(f"group {gname}: weights type {w.get('type')!r} (only int is supported)")
        bits = w.get("num_bits", 8)
        if not (isinstance(bits, int) and 1 <= bits <= 8):
            raise CompressedTensorsError(f"group {gname}: num_bits {bits!r} (only 1..8 supported)")
        if w.get("dynamic", False) is not False:
            raise CompressedTensorsError(f"group {gname}: dynamic weights are not supported")
        if w.get("actorder") not in (None, False):
            raise CompressedTensorsError(f"group {gname}: actorder {w.get('actorder')!r} (g_idx) is not supported")
        if w.get("block_structure") is not None:
            raise CompressedTensorsError(f"group {gname}: block_structure is not supported")
        gs, strategy = w.get("group_size"), w.get("strategy")
        if strategy is None:  # QuantizationArgs' inference
            strategy = "tensor" if gs is None else "group" if gs > 0 else "channel"
        if strategy not in ("tensor", "channel", "group"):
            raise CompressedTensorsError(f"group {gname}: strategy {strategy!r} is not supported")
        if strategy == "group" and not (isinstance(gs, int) and gs > 0):
            raise CompressedTensorsError(f"group {gname}: strategy group needs a positive group_size, got {gs!r}")
        schemes[gname] = Scheme(gname, fmt, bits, strategy, gs if strategy == "group" else None,
                                bool(w.get("symmetric", True)))
        for t in g.get("targets") or []:
            target_to_group[t] = gname  # a later group takes over a repeated target, as in apply.py
    return schemes, target_to_group, list(qc.get("ignore") or [])


def scheme_group(name: str, target_to_group: Dict[str, str], ignore: List[str]) -> Optional[str]:
    """The group quantizing module ``name`` (None: not targeted, or ignored)."""
    def hit(t):
        return match_name(name, t) or match_class(name, t)
    if not any(hit(t) for t in target_to_group) or any(hit(t) for t in ignore):
        return None
    # match_targets: name matches sorted by ("re:" in target, target), then class matches
    ordered = [t for t in sorted(target_to_group, key=lambda t: ("re:" in t, t)) if match_name(name, t)]
    ordered += [t for t in target_to_group if match_class(name, t) and t not in ordered]
    return target_to_group[ordered[0]]


# ---------------------------------------------------------------------------------------------
# Decompression
# ---------------------------------------------------------------------------------------------

_PARAMS = ("weight_packed", "weight_shape", "weight_scale", "weight_zero_point")
_REFUSED = ("weight_g_idx", "weight_global_scale", "input_scale", "input_zero_point",
            "output_scale", "output_zero_point", "k_scale", "v_scale")


@dataclass
class DenseCheckpoint:
    config: dict
    tensors: Dict[str, np.ndarray]  # float32 (float64 only where stored F64)
    dtypes: Dict[str, str]          # the dtype each value is exact in (stored, or the scale's)
    schemes: Dict[str, Scheme] = field(default_factory=dict)  # dequantized module -> scheme


def _int_values(tensors, tname: str, bits: int, allowed=_INT_DTYPES) -> np.ndarray:
    if tname not in tensors:
        raise CompressedTensorsError(f"tensor {tname} is missing")
    dt, arr = tensors[tname]
    if dt not in allowed:
        raise CompressedTensorsError(f"tensor {tname}: dtype {dt}, expected one of {list(allowed)}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise CompressedTensorsError(f"tensor {tname}: values outside [{lo}, {hi}] of {bits} bits")
    return arr.astype(np.int64)


def dequantize_module(module: str, s: Scheme, tensors) -> Tuple[np.ndarray, str]:
    """Dense weight of one compressed module (float32 array, dtype it is exact in)."""
    p = module + "."
    if s.format == "pack-quantized":
        if p + "weight" in tensors:
            raise CompressedTensorsError(f"tensor {p}weight is stored next to {p}weight_packed")
        if p + "weight_packed" not in tensors or tensors[p + "weight_packed"][0] != "I32":
            raise CompressedTensorsError(f"tensor {p}weight_packed is missing or not I32 ({s.group})")
        packed = tensors[p + "weight_packed"][1]
        if p + "weight_shape" not in tensors or tensors[p + "weight_shape"][1].shape != (2,):
            raise CompressedTensorsError(f"tensor {p}weight_shape is missing or not of shape [2]")
        out_f, in_f = (int(x) for x in _int_values(tensors, p + "weight_shape", 64, ("I64", "I32")))
        pf = 32 // s.num_bits
        if packed.ndim != 2 or packed.shape != (out_f, -(-in_f // pf)):
            raise CompressedTensorsError(
                f"tensor {p}weight_shape [{out_f}, {in_f}] disagrees with {p}weight_packed "
                f"{list(packed.shape)} ({pf} values of {s.num_bits} bits per int32)")
        q = unpack_from_int32(packed, s.num_bits, (out_f, in_f)).astype(np.int64)
    else:
        for extra in ("weight_packed", "weight_shape"):
            if p + extra in tensors:
                raise CompressedTensorsError(f"tensor {p}{extra} is stored but {s.group} is {s.format}")
        if p + "weight" not in tensors or tensors[p + "weight"][0] not in _INT_DTYPES:
            raise CompressedTensorsError(f"tensor {p}weight is missing or not an integer tensor ({s.group}, {s.format})")
        q = _int_values(tensors, p + "weight", s.num_bits)
        if q.ndim != 2:
            raise CompressedTensorsError(f"tensor {p}weight: expected 2-D, got {list(q.shape)}")
        out_f, in_f = q.shape
    if p + "weight_scale" not in tensors:
        raise CompressedTensorsError(f"tensor {p}weight_scale is missing ({s.group})")
    sdt, sraw = tensors[p + "weight_scale"]
    if sdt not in ("F32", "F16", "BF16"):
        raise CompressedTensorsError(f"tensor {p}weight_scale: dtype {sdt} (F32/F16/BF16 supported)")
    scale = _as_float32(sdt, sraw)
    if s.strategy == "group" and in_f % s.group_size:
        raise CompressedTensorsError(f"module {module}: {in_f} columns not divisible by group_size {s.group_size}")
    want = {"tensor": [(1,), ()], "channel": [(out_f, 1)],
            "group": [(out_f, in_f // (s.group_size or 1))]}[s.strategy]
    if scale.shape not in want:
        raise CompressedTensorsError(f"tensor {p}weight_scale: shape {list(scale.shape)}, expected "
                                     f"{list(want[0])} for strategy {s.strategy}")
    zname = p + "weight_zero_point"
    if s.symmetric:
        if zname in tensors:
            raise CompressedTensorsError(f"tensor {zname} is stored but group {s.group} is symmetric")
        zp = None
    elif s.format == "pack-quantized" and s.strategy != "tensor":
        # packed along the output dimension: [ceil(out / pf), groups]
        zshape = (-(-out_f // (32 // s.num_bits)), scale.shape[1])
        if zname not in tensors or tensors[zname][0] != "I32" or tensors[zname][1].shape != zshape:
            raise CompressedTensorsError(f"tensor {zname} is missing or not I32 of shape {list(zshape)}")
        zp = unpack_from_int32(tensors[zname][1], s.num_bits, (out_f, scale.shape[1]), packed_dim=0)
    else:
        zp = _int_values(tensors, zname, s.num_bits)
        if zp.shape != scale.shape:
            raise CompressedTensorsError(f"tensor {zname}: shape {list(zp.shape)} != scale {list(scale.shape)}")
    # _dequantize: (q - z) * s; q - z is exact in float32 and so is its product with an F16/BF16
    # scale, so one rounding to the scale's dtype at the end reproduces half-precision arithmetic.
    def spread(a):  # per tensor: a scalar; per channel: [out, 1]; per group: over its columns
        a = a.astype(np.float32)
        if s.strategy == "tensor":
            return a.reshape(())
        return np.repeat(a, s.group_size, axis=1) if s.strategy == "group" else a
    w = q.astype(np.float32)
    if zp is not None:
        w = w - spread(zp)
    w = w * spread(scale)
    if sdt == "F16":
        w = w.astype(np.float16).astype(np.float32)
    elif sdt == "BF16":
        w = _llama.bf16_bits_to_float32(_llama.float32_to_bf16_bits(w))
    return w, sdt


def decompress_checkpoint(directory: str) -> DenseCheckpoint:
    config, tensors = load_checkpoint(directory)
    qc = config.get("quantization_config")
    if qc is None:
        raise CompressedTensorsError(f"{directory}/config.json has no quantization_config")
    schemes, target_to_group, ignore = parse_quantization_config(qc)
    for name in tensors:
        if name.rsplit(".", 1)[-1] in _REFUSED:
            raise CompressedTensorsError(f"tensor {name}: not supported (g_idx, global or activation scales)")
    modules = {n.rsplit(".", 1)[0] for n in tensors if n.rsplit(".", 1)[-1] in ("weight",) + _PARAMS}
    dense = DenseCheckpoint(config, {}, {})
    for module in sorted(modules):
        group = scheme_group(module, target_to_group, ignore)
        # an integer .weight (int/naive formats) or any compression tensor marks a compressed module
        compressed = any(module + "." + k in tensors for k in _PARAMS) or \
            tensors.get(module + ".weight", ("F32",))[0] in _INT_DTYPES
        if group is None and compressed:
            raise CompressedTensorsError(f"module {module} holds compression tensors but no group quantizes it")
        if group is not None and not compressed:
            raise CompressedTensorsError(f"module {module} is quantized by {group} but stored uncompressed")
        if group is not None:
            w, dt = dequantize_module(module, schemes[group], tensors)
            dense.tensors[module + ".weight"], dense.dtypes[module + ".weight"] = w, dt
            dense.schemes[module] = schemes[group]
    for name, (dt, arr) in tensors.items():
        module, leaf = name.rsplit(".", 1) if "." in name else ("", name)
        if module in dense.schemes and (leaf in _PARAMS or leaf == "weight"):
            continue
        if dt not in ("F64", "F32", "F16", "BF16"):
            raise CompressedTensorsError(f"tensor {name}: {dt} outside any quantized module")
        dense.tensors[name], dense.dtypes[name] = _as_float32(dt, arr), dt
    return dense


def read_compressed_checkpoint(directory: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """(config, dense state dict): quantized weights dequantized, compression tensors removed."""
    d = decompress_checkpoint(directory)
    return d.config, d.tensors


def read_float_checkpoint(directory: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    _, tensors = load_checkpoint(directory)
    return ({n: _as_float32(dt, a, n) for n, (dt, a) in tensors.items()},
            {n: dt for n, (dt, _) in tensors.items()})


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def compare(export_dir: str, float_dir: str) -> dict:
    """Bit-level comparison of the dequantized export with a float checkpoint."""
    dense = decompress_checkpoint(export_dir)
    ref, ref_dtypes = read_float_checkpoint(float_dir)
    mismatches: List[dict] = []
    identical = 0
    for name in sorted(set(dense.tensors) | set(ref)):
        if name not in dense.tensors or name not in ref:
            mismatches.append({"tensor": name, "problem": "only in " + ("float" if name in ref else "export")})
            continue
        a, b = dense.tensors[name], ref[name]
        if a.shape != b.shape:
            mismatches.append({"tensor": name, "problem": f"shape {list(a.shape)} vs {list(b.shape)}"})
            continue
        if name.endswith(".weight") and name[:-7] in dense.schemes:
            problem = None  # a dequantized weight is compared by value only
        else:
            problem = None if dense.dtypes[name] == ref_dtypes[name] else \
                f"dtype {dense.dtypes[name]} vs {ref_dtypes[name]}"
        if a.dtype != b.dtype:  # F64 on one side only: compare as float64
            a, b = a.astype(np.float64), b.astype(np.float64)
        differ = _bits(a) != _bits(b)
        count = int(differ.sum())
        if count or problem:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            entry = {"tensor": name, "max_abs_diff": float(np.nanmax(diff)) if diff.size else 0.0, "count": count}
            if problem:
                entry["problem"] = problem
            mismatches.append(entry)
        else:
            identical += 1
    return {"tensors": len(set(dense.tensors) | set(ref)), "dequantized": sorted(dense.schemes),
            "identical": identical, "mismatch_count": len(mismatches), "mismatches": mismatches[:10]}


def dequantize_to(export_dir: str, out_dir: str) -> None:
    dense = decompress_checkpoint(export_dir)
    os.makedirs(out_dir, exist_ok=True)
    config = {k: v for k, v in dense.config.items() if k != "quantization_config"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      {n: (a.astype(np.float32), "F32") for n, a in dense.tensors.items()})
    for extra in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                  "special_tokens_map.json", "generation_config.json"):
        if os.path.exists(os.path.join(export_dir, extra)):
            shutil.copyfile(os.path.join(export_dir, extra), os.path.join(out_dir, extra))


def summary(export_dir: str) -> dict:
    dense = decompress_checkpoint(export_dir)
    qc = dense.config["quantization_config"]
    files = {os.path.basename(p): os.path.getsize(p) for p in checkpoint_files(export_dir)}
    return {"format": qc.get("format"), "ignore": list(qc.get("ignore") or []),
            "modules": {m: {"group": s.group, "format": s.format, "num_bits": s.num_bits,
                            "strategy": s.strategy, "group_size": s.group_size, "symmetric": s.symmetric}
                        for m, s in sorted(dense.schemes.items())},
            "weight_files": files, "stored_bytes": sum(files.values())}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="dequantize --export and compare bit for bit with --float")
    c.add_argument("--export", required=True)
    c.add_argument("--float", dest="float_dir", required=True)
    d = sub.add_parser("dequantize", help="write the dense float32 checkpoint of --export to --out")
    d.add_argument("--export", required=True)
    d.add_argument("--out", required=True)
    s = sub.add_parser("summary", help="schemes, ignore list and stored bytes of --export")
    s.add_argument("--export", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "compare":
            report = compare(args.export, args.float_dir)
            print(json.dumps(report, indent=1))
            return 0 if report["mismatch_count"] == 0 else 1
        if args.cmd == "dequantize":
            dequantize_to(args.export, args.out)
            return 0
        print(json.dumps(summary(args.export), indent=1))
        return 0
    except (_llama.ReferenceError, OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
