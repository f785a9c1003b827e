#!/usr/bin/env python3
"""Compare two eval outputs (one JSON object each: per_probe + fdt75/fdt_mean/sdt_mean/dppl).

    compare_eval.py A.json B.json [--nll-tol 1e-4]

Checks, in order, and stops at the first failure with a message naming it (exit 1):
  * both files hold the same probe ids (no duplicates);
  * per probe: identical fdt and sdt, |nll_a - nll_b| <= nll-tol;
  * each file's aggregates agree with its own per-probe values (fdt75 = R type-7 75% quantile of
    fdt, fdt_mean, sdt_mean, dppl = mean exp(nll), relative tolerance 1e-9);
  * the aggregates of A and B agree: fdt75, fdt_mean, sdt_mean to 1e-9 relative, and dppl within
    the bound the per-probe nll tolerance implies (mean of exp(max nll) * (exp(tol) - 1)).
On success prints one line with max |Δnll| and exits 0. Bad input (unreadable, missing keys): exit 2.
Extra keys in either file are ignored. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from llama_reference import quantile_type7  # the one R-type-7 quantile of the reference

AGG_KEYS = ("fdt75", "fdt_mean", "sdt_mean", "dppl")


class Mismatch(Exception):
    pass


class BadInput(Exception):
    pass


def load(path: str) -> dict:
    """One JSON object; if the file has other lines (logs), the last line that parses as an object."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadInput(f"{path}: {e}") from None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
        for line in reversed(text.splitlines()):
            if line.strip().startswith("{"):
                try:
                    obj = json.loads(line)
                    break
                except ValueError:
                    continue
    if not isinstance(obj, dict) or not isinstance(obj.get("per_probe"), list):
        raise BadInput(f"{path}: no JSON object with a per_probe list")
    for k in AGG_KEYS:
        if k not in obj:
            raise BadInput(f"{path}: missing aggregate {k!r}")
    for p in obj["per_probe"]:
        for k in ("id", "fdt", "sdt", "nll"):
            if k not in p:
                raise BadInput(f"{path}: per_probe entry {p!r} lacks {k!r}")
    return obj


def close(a: float, b: float, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= max(abs_tol, rel * max(abs(a), abs(b)))


def recompute(per_probe: list) -> dict:
    k = len(per_probe)
    fdt = [p["fdt"] for p in per_probe]
    return {
        "fdt75": quantile_type7(fdt, 0.75),
        "fdt_mean": sum(fdt) / k if k else float("nan"),
        "sdt_mean": sum(p["sdt"] for p in per_probe) / k if k else float("nan"),
        "dppl": sum(math.exp(p["nll"]) for p in per_probe) / k if k else float("nan"),
    }


def compare(a: dict, b: dict, tol: float, name_a: str = "A", name_b: str = "B") -> str:
    """Raise Mismatch naming the first difference; return the summary line otherwise."""
    maps = []
    for obj, name in ((a, name_a), (b, name_b)):
        m = {}
        for p in obj["per_probe"]:
            if p["id"] in m:
                raise Mismatch(f"{name}: probe id {p['id']!r} appears twice")
            m[p["id"]] = p
        maps.append(m)
    ma, mb = maps
    only_a = [i for i in ma if i not in mb]
    only_b = [i for i in mb if i not in ma]
    if only_a or only_b:
        raise Mismatch(f"probe ids differ: {len(only_a)} only in {name_a} (first {only_a[:1]}), "
                       f"{len(only_b)} only in {name_b} (first {only_b[:1]})")
    max_d, max_id = 0.0, None
    for pid, pa in ma.items():
        pb = mb[pid]
        for k in ("fdt", "sdt"):
            if pa[k] != pb[k]:
                raise Mismatch(f"probe {pid!r}: {k} {pa[k]} ({name_a}) vs {pb[k]} ({name_b})")
        d = abs(float(pa["nll"]) - float(pb["nll"]))
        if not d <= tol:  # also catches NaN
            raise Mismatch(f"probe {pid!r}: nll {pa['nll']!r} ({name_a}) vs {pb['nll']!r} ({name_b}), "
                           f"|diff| {d:.3g} > tol {tol:g}")
        if max_id is None or d > max_d:
            max_d, max_id = d, pid
    for obj, name in ((a, name_a), (b, name_b)):
        r = recompute(obj["per_probe"])
        for k in AGG_KEYS:
            if not close(float(obj[k]), r[k]):
                raise Mismatch(f"{name}: {k} = {obj[k]!r} but its per_probe values give {r[k]!r}")
    for k in ("fdt75", "fdt_mean", "sdt_mean"):
        if not close(float(a[k]), float(b[k])):
            raise Mismatch(f"aggregate {k}: {a[k]!r} ({name_a}) vs {b[k]!r} ({name_b})")
    n = len(ma)
    bound = sum(math.exp(max(ma[i]["nll"], mb[i]["nll"])) for i in ma) / n * math.expm1(tol) if n else 0.0
    bound += 1e-9 * max(abs(float(a["dppl"])), abs(float(b["dppl"])), 1.0)
    dd = abs(float(a["dppl"]) - float(b["dppl"]))
    if not dd <= bound:
        raise Mismatch(f"aggregate dppl: {a['dppl']!r} ({name_a}) vs {b['dppl']!r} ({name_b}), "
                       f"|diff| {dd:.3g} > bound {bound:.3g}")
    return (f"OK: {n} probes, fdt/sdt identical, max |dnll| = {max_d:.3g} (probe {max_id!r}, tol {tol:g}); "
            f"fdt75 {a['fdt75']}, fdt_mean {a['fdt_mean']}, sdt_mean {a['sdt_mean']}, "
            f"dppl {a['dppl']:.10g} vs {b['dppl']:.10g}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compare two dtm eval outputs")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--nll-tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    try:
        print(compare(load(args.a), load(args.b), args.nll_tol, args.a, args.b))
    except BadInput as e:
        print(f"compare_eval: bad input: {e}", file=sys.stderr)
        return 2
    except Mismatch as e:
        print(f"compare_eval: MISMATCH: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
