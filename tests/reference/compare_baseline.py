#!/usr/bin/env python3
"""Compare two baseline files (JSON lines, gzip ok: {"id", "prefix_len", "tokens"} per row).

    compare_baseline.py A.jsonl B.jsonl

Checks the same set of ids (no duplicates), and per id the same prefix_len and tokens. On any
difference it names the first mismatching row (in A's order) with the first differing position
(and its completion index), lists up to 10 mismatching rows with their first completion divergence
(a quick view of the numeric noise floor), and exits 1. Identical files print one OK line, exit 0;
unreadable input exits 2. Row order is not compared (a note is printed when it differs).
Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys


def read_rows(path: str) -> list:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        for k in ("id", "prefix_len", "tokens"):
            if k not in r:
                raise ValueError(f"{path}: row lacks {k!r}: {str(r)[:120]}")
    return rows


def first_diff(x: list, y: list) -> int:
    """First index where x and y differ (len of the shorter when one is a prefix of the other)."""
    for i, (u, v) in enumerate(zip(x, y)):
        if u != v:
            return i
    return min(len(x), len(y)) if len(x) != len(y) else -1


def compare(rows_a: list, rows_b: list, name_a: str = "A", name_b: str = "B"):
    """Return (ok, lines): lines are the messages to print."""
    maps = []
    for rows, name in ((rows_a, name_a), (rows_b, name_b)):
        m = {}
        for r in rows:
            if r["id"] in m:
                return False, [f"MISMATCH: {name}: id {r['id']!r} appears twice"]
            m[r["id"]] = r
        maps.append(m)
    ma, mb = maps
    only_a = [i for i in ma if i not in mb]
    only_b = [i for i in mb if i not in ma]
    if only_a or only_b:
        return False, [f"MISMATCH: ids differ: {len(only_a)} only in {name_a} (first {only_a[:1]}), "
                       f"{len(only_b)} only in {name_b} (first {only_b[:1]})"]
    bad = []
    for pid, ra in ma.items():
        rb = mb[pid]
        if ra["prefix_len"] != rb["prefix_len"]:
            bad.append((pid, f"prefix_len {ra['prefix_len']} ({name_a}) vs {rb['prefix_len']} ({name_b})"))
            continue
        i = first_diff(ra["tokens"], rb["tokens"])
        if i >= 0:
            n = ra["prefix_len"]
            where = f"prefix position {i}" if i < n else f"completion index {i - n}"
            ta = ra["tokens"][i] if i < len(ra["tokens"]) else "<end>"
            tb = rb["tokens"][i] if i < len(rb["tokens"]) else "<end>"
            bad.append((pid, f"tokens differ first at position {i} ({where}): {ta} ({name_a}) vs {tb} ({name_b}); "
                             f"lengths {len(ra['tokens'])} vs {len(rb['tokens'])}"))
    notes = []
    if [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
        notes.append("note: row order differs (not an error)")
    if not bad:
        return True, notes + [f"OK: {len(ma)} rows, identical ids, prefix_len and tokens"]
    lines = [f"MISMATCH: row {bad[0][0]!r}: {bad[0][1]}",
             f"{len(bad)} of {len(ma)} rows differ; first {min(10, len(bad))}:"]
    lines += [f"  {pid!r}: {msg}" for pid, msg in bad[:10]]
    return False, notes + lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compare two dtm baseline files")
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args(argv)
    try:
        ra, rb = read_rows(args.a), read_rows(args.b)
    except (OSError, ValueError) as e:
        print(f"compare_baseline: bad input: {e}", file=sys.stderr)
        return 2
    ok, lines = compare(ra, rb, args.a, args.b)
    print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
