#!/usr/bin/env python3
"""dtm metrics and greedy baselines computed with the real Hugging Face ``LlamaForCausalLM``.

The same ``eval`` / ``baseline`` / ``logits`` subcommands and output formats as
``llama_reference.py``, but the forward is transformers' own (``torch``, ``transformers``,
``numpy`` needed; meant for the GPU machine). It does not import the NumPy reference.

    hf_reference.py eval --model DIR --baseline FILE [--compress SPEC]... [--device cpu|cuda]
                         [--dtype float32|bfloat16] [--attn eager|sdpa] [--limit K]
    hf_reference.py baseline --model DIR --probes FILE --completion M [--device ...] [--dtype ...]
                             [--no-kv-cache] [--out FILE] [--limit K]
    hf_reference.py logits --model DIR --tokens 1,2,3 [--compress SPEC] [--device ...] [--dtype ...]

* The model is always loaded in float32; compression is computed from the float32 weights with
  torch ops (prune:F, int8-absmax, int8-absmax-row, same definitions as the NumPy reference) and
  written into the model cast to --dtype on --device. ``eval`` may take --compress several times:
  the model is loaded once, each config applied in place and undone, and one JSON object printed
  per config, one per line, in the order given (with one --compress, the output is exactly
  llama_reference.py's).
* TF32 is switched off (``torch.backends.cuda.matmul.allow_tf32 = False``,
  ``set_float32_matmul_precision("highest")``) so float32 means float32.
* ``baseline`` is a manual greedy loop (argmax, ties to the lowest index) that always produces
  exactly M tokens, never stopping at EOS; with the KV cache by default, or by full recomputation
  with --no-kv-cache (the NumPy reference's way).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
import transformers
from transformers import LlamaForCausalLM

COMPONENT_RE = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")


class RefError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# compression with torch ops (float32)
# ---------------------------------------------------------------------------------------------

def prune_magnitude(w: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero k = round-half-away(fraction*numel) entries of smallest |w|, ties by lower flat index."""
    k = int(math.floor(fraction * w.numel() + 0.5))
    flat = w.reshape(-1).clone()
    order = torch.sort(flat.abs(), stable=True).indices
    flat[order[:k]] = 0
    return flat.reshape(w.shape)


def quantize_absmax(w: torch.Tensor) -> torch.Tensor:
    s = w.abs().max() / 127.0
    if s.item() == 0:
        return w.clone()
    return torch.clamp(torch.round(w / s), -127, 127) * s


def quantize_absmax_row(w: torch.Tensor) -> torch.Tensor:
    s = w.abs().amax(dim=1, keepdim=True) / 127.0                      # [out, 1]
    safe = torch.where(s == 0, torch.ones_like(s), s)
    q = torch.clamp(torch.round(w / safe), -127, 127) * s
    return torch.where(s == 0, w, q)


def method_fn(method: str):
    if method.startswith("prune:"):
        frac = float(method[len("prune:"):])
        if not 0.0 <= frac <= 1.0:
            raise RefError(f"prune fraction must be in [0, 1]: {method!r}")
        return lambda w: prune_magnitude(w, frac)
    if method == "int8-absmax":
        return quantize_absmax
    if method == "int8-absmax-row":
        return quantize_absmax_row
    raise RefError(f"method {method!r} is not implemented in hf_reference")


def parse_spec(spec: str) -> List[tuple]:
    """``COMPONENT=METHOD[,...]`` -> sorted [(component, method)], validated."""
    pairs = {}
    for item in (s.strip() for s in (spec or "").split(",")):
        if not item:
            continue
        if "=" not in item:
            raise RefError(f"bad compression item {item!r} (want COMPONENT=METHOD)")
        comp, method = (x.strip() for x in item.split("=", 1))
        if not COMPONENT_RE.match(comp):
            raise RefError(f"bad component name {comp!r}")
        if comp in pairs:
            raise RefError(f"component {comp} given twice")
        method_fn(method)
        pairs[comp] = method
    return sorted(pairs.items())


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------

class Replica:
    """The model on its device and dtype, plus float32 originals of every component any config
    touches, so that configs are applied in place and undone without reloading (as SPEC asks)."""

    def __init__(self, model_dir: str, device: str, dtype: str, attn: str, specs: Sequence[str]):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        ver = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
        dtype_kw = "dtype" if ver >= (4, 56) else "torch_dtype"
        self.configs = [parse_spec(s) for s in specs]
        model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation=attn, **{dtype_kw: torch.float32})
        model.eval()
        params = dict(model.named_parameters())
        comps = sorted({c for cfg in self.configs for c, _ in cfg})
        for c in comps:
            if c + ".weight" not in params:
                raise RefError(f"model has no component {c}")
        self.orig = {c: params[c + ".weight"].detach().clone().cpu() for c in comps}  # float32
        self.model = model.to(device=device, dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
        self.params = dict(self.model.named_parameters())
        self.device = device
        self.touched: List[str] = []

    @torch.no_grad()
    def apply(self, config: List[tuple]) -> None:
        """Restore the previous config's components, then compress (in float32) this config's."""
        for c in self.touched:
            self.params[c + ".weight"].copy_(self.orig[c])
        self.touched = []
        for comp, method in config:
            w = self.orig[comp].to(self.device)
            self.params[comp + ".weight"].copy_(method_fn(method)(w))
            self.touched.append(comp)


@torch.inference_mode()
def full_logits(model, tokens: Sequence[int]) -> torch.Tensor:
    """[N, V] logits of one sequence (no cache)."""
    dev = next(model.parameters()).device
    ids = torch.tensor([list(tokens)], dtype=torch.long, device=dev)
    return model(input_ids=ids, use_cache=False).logits[0]


def probe_metrics(logits: torch.Tensor, tokens: Sequence[int], n: int):
    """fdt, sdt, nll for positions n..N-1 (logits row i-1 predicts token i); see SPEC."""
    N = len(tokens)
    if not 1 <= n < N:
        raise RefError(f"need 1 <= prefix_len < len(tokens), got {n}, {N}")
    pred = logits[n - 1 : N - 1]                                       # [M, V]
    target = torch.tensor(tokens[n:], dtype=torch.long, device=pred.device)
    diff = pred.argmax(dim=-1) != target
    sdt = int(diff.sum().item())
    fdt = int(torch.nonzero(diff)[0, 0].item()) if sdt else N - n
    lp = torch.log_softmax(pred.double(), dim=-1)
    nll = float(-lp.gather(1, target[:, None])[:, 0].mean().item())
    return fdt, sdt, nll


@torch.inference_mode()
def greedy(model, prefix: Sequence[int], m: int, kv_cache: bool = True) -> List[int]:
    """prefix + exactly m greedy tokens (no EOS stop)."""
    dev = next(model.parameters()).device
    seq = [int(t) for t in prefix]
    if m <= 0:
        return seq
    if not kv_cache:
        for _ in range(m):
            seq.append(int(full_logits(model, seq)[-1].argmax().item()))
        return seq
    out = model(input_ids=torch.tensor([seq], dtype=torch.long, device=dev), use_cache=True)
    for step in range(m):
        nxt = int(out.logits[0, -1].argmax().item())
        seq.append(nxt)
        if step + 1 < m:
            out = model(input_ids=torch.tensor([[nxt]], dtype=torch.long, device=dev),
                        past_key_values=out.past_key_values, use_cache=True)
    return seq


# ---------------------------------------------------------------------------------------------
# I/O and CLI
# ---------------------------------------------------------------------------------------------

def read_jsonl(path: str) -> List[dict]:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Optional[str], rows: Iterable[dict]) -> None:
    if not path or path == "-":
        f = sys.stdout
    else:
        f = gzip.open(path, "wt", encoding="utf-8") if path.endswith(".gz") else open(path, "w", encoding="utf-8")
    try:
        for r in rows:
            f.write(json.dumps(r, separators=(", ", ": ")) + "\n")
            f.flush()
    finally:
        if f is not sys.stdout:
            f.close()


def aggregate(per_probe: List[dict]) -> dict:
    fdt = np.array([p["fdt"] for p in per_probe], dtype=np.float64)
    sdt = np.array([p["sdt"] for p in per_probe], dtype=np.float64)
    nll = np.array([p["nll"] for p in per_probe], dtype=np.float64)
    return {
        "per_probe": per_probe,
        "fdt75": float(np.percentile(fdt, 75)),
        "fdt_mean": float(fdt.mean()),
        "sdt_mean": float(sdt.mean()),
        "dppl": float(np.exp(nll).mean()),
    }


def _cmd_eval(a) -> None:
    rep = Replica(a.model, a.device, a.dtype, a.attn, a.compress or [""])
    rows = read_jsonl(a.baseline)[: a.limit]
    for config in rep.configs:  # one output line per --compress
        rep.apply(config)
        per_probe = []
        for r in rows:
            fdt, sdt, nll = probe_metrics(full_logits(rep.model, r["tokens"]), r["tokens"], int(r["prefix_len"]))
            per_probe.append({"id": r["id"], "fdt": fdt, "sdt": sdt, "nll": nll})
        print(json.dumps(aggregate(per_probe)), flush=True)


def _single(a) -> Replica:
    if a.compress and len(a.compress) > 1:
        raise RefError("only eval takes --compress more than once")
    rep = Replica(a.model, a.device, a.dtype, a.attn, a.compress or [""])
    rep.apply(rep.configs[0])
    return rep


def _cmd_baseline(a) -> None:
    model = _single(a).model
    probes = read_jsonl(a.probes)[: a.limit]
    write_jsonl(a.out, ({"id": p["id"], "prefix_len": len(p["tokens"]),
                         "tokens": greedy(model, p["tokens"], a.completion, kv_cache=not a.no_kv_cache)}
                        for p in probes))


def _cmd_logits(a) -> None:
    model = _single(a).model
    tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    print(json.dumps([float(v) for v in full_logits(model, tokens)[-1].float().cpu()]))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="dtm metrics with transformers' LlamaForCausalLM")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--model", required=True)
        p.add_argument("--compress", action="append", default=None,
                       help="COMPONENT=METHOD[,COMPONENT=METHOD...]; eval takes it repeatedly "
                            "and prints one JSON object (line) per config, in order")
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
        p.add_argument("--attn", choices=["eager", "sdpa"], default="eager")

    p = sub.add_parser("eval")
    common(p)
    p.add_argument("--baseline", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("baseline")
    common(p)
    p.add_argument("--probes", required=True)
    p.add_argument("--completion", type=int, required=True)
    p.add_argument("--no-kv-cache", action="store_true", help="full recomputation per token")
    p.add_argument("--out", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser("logits")
    common(p)
    p.add_argument("--tokens", required=True)
    p.set_defaults(func=_cmd_logits)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        a.func(a)
    except RefError as e:
        print(f"hf_reference: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
