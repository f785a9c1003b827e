#!/usr/bin/env python3
"""Quant-search throughput and cache reuse, end to end through `dtmctl local` (stdlib only).

    python3 bench/search_bench.py --dtmctl build/cli/dtmctl --model build/tiny-model \
        --probes build/demo/probes.jsonl [--workers 1,2] [--beam 3 --depth 3 --num-probes 64]

1. Nodes evaluated per second: the same quant-search, run with `dtmctl local --workers K` for each K
   (in-memory store, so nothing is cached between runs).
2. Cache share of a repeated search: a throwaway redis-server on a free loopback port (`--save ''
   --appendonly no`, deleted afterwards), the search run twice with `dtmctl local --store redis://...`; the
   second run's tasks_cached / tasks_total (and, in nodes, the same share).

Counting nodes. A node is a config the search evaluates: a distinct child of one of the beam nodes
of the level above (a set reached twice is evaluated once). Each config is ceil(num_probes /
shard_size) shard tasks, as is the baseline (the greedy completions) and, when noise_floor is on
(the default; the results then have a level-0 row), the uncompressed model. The final progress line
of `dtmctl local` (stderr) gives tasks_total and tasks_cached, so

    nodes = tasks_total / shards - 1 (baseline) - 1 (noise floor, when on)

The progress line names the configs each level evaluates ("evaluating N configs", the noise floor
counted in level 1); in a run without cache hits their sum, less the noise floor, must give the same
number, which is checked. A task answered from the cache counts in tasks_cached; in the repeated
search the baseline and the noise floor are cached too, so nodes cached = (tasks_cached - tasks
of baseline and noise floor) / shards.

Timing: "wall" is the whole command (model load, baseline, search, results); "search" starts when the
first "evaluating" progress line arrives (the baseline done) and ends when the command exits. Each
figure comes from one run: on a shared machine, compare runs of the same invocation only.
"""
import argparse
import json
import math
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PROGRESS = re.compile(r"(\d+)/(\d+) tasks(?:\s+\((\d+) cached)?")
EVALUATING = re.compile(r"\blevel (\d+)\b.*\bevaluating (\d+) configs")


def spec_text(args):
    comps = ", ".join(json.dumps(c) for c in args.components) if args.components else ""
    return "\n".join([
        "name: search-bench",
        "kind: quant-search",
        f"model: {json.dumps(os.path.abspath(args.model))}",
        f"probes: {json.dumps(os.path.abspath(args.probes))}",
        f"num_probes: {args.num_probes}",
        f"prefix: {args.prefix}",
        f"completion: {args.completion}",
        f"shard_size: {args.shard_size}",
        "quant-search:",
        f"  method: {json.dumps(args.method)}",
        f"  beam: {args.beam}",
        f"  depth: {args.depth}",
    ] + ([f"  components: [{comps}]"] if comps else [])) + "\n"


def run_search(args, spec, workers, redis=None):
    """Runs the search once; returns a dict of its counts and timings."""
    # An in-memory store unless Redis is given: each throughput run computes every node.
    cmd = [args.dtmctl, "local", spec, "--workers", str(workers), "--format", "json", "--store", redis or "memory"]
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        lines, pending, search_start = [], b"", None
        levels = {}  # level -> configs it evaluates
        while True:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            for raw in complete:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                lines.append(line)
                m = EVALUATING.search(line)
                if m:
                    levels[int(m.group(1))] = int(m.group(2))
                    if search_start is None:
                        search_start = time.monotonic()
        rc = proc.wait()
        end = time.monotonic()
        if pending.strip():
            lines.append(pending.decode(errors="replace").strip())
        out.seek(0)
        stdout = out.read().decode()
    if rc != 0:
        sys.exit(f"search_bench: {' '.join(cmd)} exited {rc}:\n" + "\n".join(lines[-20:]))
    doc = json.loads(stdout)
    final = [PROGRESS.search(l) for l in lines if PROGRESS.search(l)][-1]
    tasks_done, tasks_total = int(final.group(1)), int(final.group(2))
    tasks_cached = int(final.group(3) or 0)
    shards = math.ceil(args.num_probes / args.shard_size)
    noise_floor = any(r.get("search_level") == 0 for r in doc["results"])
    if tasks_total % shards:
        sys.exit(f"search_bench: {tasks_total} tasks is not a multiple of {shards} shards")
    nodes = tasks_total // shards - 1 - (1 if noise_floor else 0)
    from_levels = sum(levels.values()) - (1 if noise_floor else 0)
    if tasks_cached == 0 and from_levels != nodes:  # a level answered from the cache may print no line
        sys.exit(f"search_bench: {nodes} nodes from the task count, {from_levels} from the levels {levels}")
    return {
        "workers": workers, "state": doc.get("state"), "tasks_done": tasks_done, "tasks_total": tasks_total,
        "tasks_cached": tasks_cached, "shards": shards, "nodes": nodes, "levels": levels,
        "wall_s": end - start, "search_s": end - (search_start or start),
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(binary, workdir):
    for _ in range(5):  # a free port can be taken before redis binds it
        port = free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return proc, port
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    sys.exit("search_bench: redis-server did not start")


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).rjust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtmctl", default="build/cli/dtmctl")
    ap.add_argument("--model", default="build/tiny-model")
    ap.add_argument("--probes", default="build/demo/probes.jsonl")
    ap.add_argument("--num-probes", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--completion", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--method", default="int8-absmax")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--components", nargs="*", default=[], help="globs (default: every component)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts for the throughput runs")
    ap.add_argument("--cache-workers", type=int, default=2, help="workers for the two runs on Redis")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--no-cache", action="store_true", help="skip the Redis runs")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="search-bench-")
    try:
        spec = os.path.join(tmp, "search.yaml")
        with open(spec, "w") as f:
            f.write(spec_text(args))
        print(f"quant-search on {args.model}: method {args.method}, beam {args.beam}, depth {args.depth}, "
              f"{args.num_probes} probes in shards of {args.shard_size}, prefix {args.prefix}, "
              f"completion {args.completion}", flush=True)

        rows, first = [], None
        for k in [int(x) for x in args.workers.split(",")]:
            r = run_search(args, spec, k)
            first = first or r
            levels = " + ".join(str(n) for _, n in sorted(r["levels"].items()))
            rows.append([k, r["nodes"], levels, r["tasks_total"], f"{r['wall_s']:.1f}", f"{r['search_s']:.1f}",
                         f"{r['nodes'] / r['wall_s']:.2f}", f"{r['nodes'] / r['search_s']:.2f}",
                         f"{first['search_s'] / r['search_s']:.2f}x"])
            print(f"  {k} worker(s): done", flush=True)
        print()
        print("nodes evaluated per second (dtmctl local, in-memory store; level configs include the noise floor)")
        print(table(["workers", "nodes", "configs per level", "tasks", "wall s", "search s", "nodes/s wall",
                     "nodes/s search", "speed-up"], rows))

        if not args.no_cache:
            redis, port = start_redis(args.redis_server, tmp)
            try:
                url = f"redis://127.0.0.1:{port}"
                runs = [run_search(args, spec, args.cache_workers, url) for _ in range(2)]
            finally:
                redis.terminate()
                redis.wait()
            rows = []
            for name, r in zip(["first (empty Redis)", "second (same search)"], runs):
                # Cached shards of the search's nodes: the cached tasks less the baseline's and the
                # noise floor's, which a repeat finds in the cache too.
                overhead = r["tasks_total"] - r["nodes"] * r["shards"]
                cached_nodes = max(r["tasks_cached"] - overhead, 0) / r["shards"]
                rows.append([name, r["tasks_total"], r["tasks_cached"], f"{r['tasks_cached'] / r['tasks_total']:.1%}",
                             r["nodes"], f"{cached_nodes:g}", f"{cached_nodes / r['nodes']:.1%}",
                             f"{r['wall_s']:.1f}"])
            print()
            print(f"cache share of a repeated search (dtmctl local --store redis://..., {args.cache_workers} workers)")
            print(table(["run", "tasks", "cached", "share", "nodes", "nodes cached", "node share", "wall s"], rows))
        print()
        print(f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
