#!/usr/bin/env python3
"""What reused residual streams save, end to end through `dtmctl local` (stdlib only).

    python3 bench/reuse_bench.py --dtmctl build/cli/dtmctl --model build/tiny-model \
        --probes build/demo/probes.jsonl [--deep-layers 16] [--workers 1]

On the tiny model and on a deeper one (the tiny model's layers stacked to --deep-layers, written to a
temporary folder: a 16-layer model whose layers are trained ones, so that compressing one still
changes what it generates), each job runs twice on a fresh in-memory store: with
`--activation-cache-bytes 0` (every forward from the embedding) and with the default cache:

  (a) a probe job of every component under int8-absmax (with the noise floor, which runs first and
      keeps every layer's uncompressed stream);
  (b) a quant-search of every component under int8-absmax, beam 3, depth --depth.

For each it prints the decoder-layer forwards (`dtmctl local`'s "layer forwards" line: one per
layer per sequence, from the workers' counters) and the wall time of the whole command (model load,
baseline and results included), and checks that both runs' results (every config's metrics, as
`--format json` prints them) are identical. One run per figure: on a shared machine, compare runs of
the same invocation only. OpenBLAS picks kernels per CPU, so the numbers are per machine.
"""
import argparse
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from search_bench import table  # this folder's: a right-aligned text table

LAYER_FORWARDS = re.compile(r"layer forwards: (\d+) run, (\d+) in full forwards")
COMMAND_TIME = re.compile(r"time: ([\d.]+) s in this command; its workers ran tasks for ([\d.]+) s and loaded "
                          r"models for ([\d.]+) s")


def stack_layers(src, dst, layers):
    """Writes to `dst` the model of `src` with its decoder layers repeated to `layers` layers."""
    os.makedirs(dst)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    source_layers = config["num_hidden_layers"]
    config["num_hidden_layers"] = layers
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in os.listdir(src):
        if name.startswith("tokenizer") or name == "special_tokens_map.json":
            shutil.copy(os.path.join(src, name), dst)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = []  # (name, dtype, shape, bytes)
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        m = re.match(r"model\.layers\.(\d+)\.(.*)", name)
        if m is None:
            tensors.append((name, meta["dtype"], meta["shape"], data[begin:end]))
            continue
        layer, rest = int(m.group(1)), m.group(2)
        for target in range(layer, layers, source_layers):
            tensors.append((f"model.layers.{target}.{rest}", meta["dtype"], meta["shape"], data[begin:end]))
    out_header, offset = {}, 0
    for name, dtype, shape, raw in tensors:
        out_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(out_header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in tensors:
            f.write(raw)
    return source_layers


def spec_text(args, model, kind):
    lines = [f"name: reuse-bench {kind}", f"kind: {kind}", f"model: {json.dumps(os.path.abspath(model))}",
             f"probes: {json.dumps(os.path.abspath(args.probes))}", f"num_probes: {args.num_probes}",
             f"prefix: {args.prefix}", f"completion: {args.completion}", f"shard_size: {args.shard_size}"]
    if kind == "probe":
        lines += ["probe:", "  methods: [int8-absmax]"]
    else:
        lines += ["quant-search:", "  method: int8-absmax", f"  beam: {args.beam}", f"  depth: {args.depth}"]
    return "\n".join(lines) + "\n"


def run_local(dtmctl, spec, workers, *extra, store="memory", forwards_required=True):
    """`dtmctl local SPEC` on `store` (a fresh in-memory one by default), JSON results. Returns a dict:
    wall_s (the whole process, start-up included), user_s and system_s (its CPU seconds in user
    space and in the kernel), computed and full (the layer forwards run and those full forwards
    would have run), command_s, tasks_s and load_s (its `time:` line: the command's own wall time,
    its workers' task and model-load seconds) and doc (the results document). Exits on failure. A job answered wholly from the store prints no layer forwards:
    without `forwards_required` both counts are then 0."""
    cmd = [dtmctl, "local", spec, "--workers", str(workers), "--format", "json", "--store", store, *extra]
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    name = os.path.basename(sys.argv[0])
    if proc.returncode != 0:
        sys.exit(f"{name}: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    m = LAYER_FORWARDS.search(proc.stderr)
    if m is None and forwards_required:
        sys.exit(f"{name}: no 'layer forwards' line from {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    t = COMMAND_TIME.search(proc.stderr)
    if t is None:
        sys.exit(f"{name}: no 'time:' line from {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "computed": int(m.group(1)) if m else 0, "full": int(m.group(2)) if m else 0,
            "command_s": float(t.group(1)), "tasks_s": float(t.group(2)), "load_s": float(t.group(3)),
            "user_s": after.ru_utime - before.ru_utime, "system_s": after.ru_stime - before.ru_stime,
            "doc": json.loads(proc.stdout)}


def result_rows(doc):
    """Every result row (metrics, FDT histogram, level, rank), sorted by config: what two runs of the
    same job must agree on (the rest of the document, job id, times, cache counts, differs by
    nature)."""
    return sorted((r["config"], json.dumps(r, sort_keys=True)) for r in doc["results"])


def run(args, spec, cache_bytes):
    out = run_local(args.dtmctl, spec, args.workers, "--activation-cache-bytes", str(cache_bytes))
    out["metrics"] = result_rows(out.pop("doc"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtmctl", default="build/cli/dtmctl")
    ap.add_argument("--model", default="build/tiny-model")
    ap.add_argument("--probes", default="build/demo/probes.jsonl")
    ap.add_argument("--deep-layers", type=int, default=16)
    ap.add_argument("--num-probes", type=int, default=32)
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--jobs", default="probe,quant-search", help="comma-separated: probe, quant-search")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="reuse-bench-")
    try:
        deep = os.path.join(tmp, f"stacked-{args.deep_layers}")
        source_layers = stack_layers(args.model, deep, args.deep_layers)
        print(f"{args.num_probes} probes in shards of {args.shard_size}, prefix {args.prefix}, completion "
              f"{args.completion}, {args.workers} worker(s); models: {args.model} ({source_layers} layers) and its "
              f"layers stacked to {args.deep_layers}", flush=True)
        rows, failures = [], []
        for model, label in [(args.model, f"tiny ({source_layers} layers)"), (deep, f"stacked ({args.deep_layers})")]:
            for kind in args.jobs.split(","):
                spec = os.path.join(tmp, f"{kind}.yaml")
                with open(spec, "w") as f:
                    f.write(spec_text(args, model, kind))
                full = run(args, spec, 0)
                reused = run(args, spec, -1)
                same = full["metrics"] == reused["metrics"]
                if not same:
                    failures.append(f"{label} {kind}")
                rows.append([label, kind, len(full["metrics"]), full["full"], full["computed"], reused["computed"],
                             f"{reused['computed'] / full['computed']:.3f}", f"{full['wall_s']:.1f}",
                             f"{reused['wall_s']:.1f}", f"{reused['wall_s'] / full['wall_s']:.3f}",
                             "identical" if same else "DIFFER"])
                print(f"  {label} {kind}: done", flush=True)
        print()
        print("decoder-layer forwards (one per layer per sequence) and wall time of `dtmctl local`, "
              "without and with reused streams")
        print(table(["model", "job", "result rows", "full fwd", "no reuse", "reuse", "ratio", "wall s no reuse",
                     "wall s reuse", "ratio", "results"], rows))
        if failures:
            sys.exit("reuse_bench: results differ with reuse: " + ", ".join(failures))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
