#!/usr/bin/env python3
"""What a search costs, side by side in one run: reused streams and probe racing (stdlib only).

    python3 bench/cost_bench.py --dtmctl build/cli/dtmctl --model build/tiny-model \
        --probes PROBES.jsonl [--probe-job-probes 128] [--num-probes 256] \
        [--probe-models tiny,random:16,random:32] [--search-models tiny,random:16]

Models: `tiny`, the trained tiny model, and `random:L`, a deeper synthetic one of L layers of N(0,
--random-std) weights with the tiny model's tokenizer and shapes (racing_bench.py says why random
weights: the tiny model's FDTs saturate; 32 layers is Llama-2-7B's depth). Through `dtmctl local`
(--workers, each run on a fresh in-memory store):

  (a) on each of --probe-models, a probe job of every component under int8-absmax on
      --probe-job-probes probes, without reused streams (`--activation-cache-bytes 0`) and with them;
  (b) on each of --search-models, a quant-search (--method over --components, beam --beam, depth
      --depth) on --num-probes probes: exact without reuse, exact with reuse, and racing with reuse
      (`racing: {first, step, confidence, epsilon}`).

Printed: decoder-layer forwards (one per layer per sequence) and wall time of every run with their
ratios to the run without reuse; whether the runs with and without reuse give identical results
(every config's metrics and histogram, as `--format json` prints them; the benchmark fails if not);
racing's probe evaluations (one config on one probe, the noise floor not counted) against the exact
search's and each level's beam overlap with the exact one; and where each run's time went, from
`dtmctl local`'s `time:` line: the process start-up (libtorch and the allocator's re-exec), the
workers' task seconds, and the rest (coordinator, store, gRPC, planning, waits) as a share of the
command's wall time, with the process's CPU seconds in user space and in the kernel.

A race saves only when the probe set is much larger than its first group: its ratio falls with
--num-probes (README, "Probe racing", has 1000-probe figures from racing_bench.py). One run per
figure: layer forwards and probe evaluations are exact counts, wall times vary from run to run on a
shared machine (README, "The cost benchmark in one run"). OpenBLAS picks kernels per CPU, so the
numbers are per machine.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import racing_bench  # this folder's: the random model, the search's spec, beams and their overlap
import reuse_bench  # this folder's: the probe job's spec, `dtmctl local` timed with its counters
from search_bench import table  # this folder's: a right-aligned text table


def timed(args, spec, *extra):
    """`dtmctl local SPEC` on a fresh in-memory store: run_local's dict plus `metrics` (the result
    rows two runs must agree on) and, for a search, `beams`, `nodes` and `racing`."""
    out = reuse_bench.run_local(args.dtmctl, spec, args.workers, *extra)
    doc = out.pop("doc")
    out["metrics"] = reuse_bench.result_rows(doc)
    out.update(racing_bench.search_outcome(doc))
    return out


def where_time_went(label, job, run_name, out, workers):
    """A row: start-up (the process's wall time outside the command), the workers' task seconds,
    and the rest of the command's wall time, its share. With K workers the task seconds are spread
    over K threads, so the rest is the command's time less tasks / K and model loads / K."""
    rest = out["command_s"] - (out["tasks_s"] + out["load_s"]) / workers
    return [label, job, run_name, f"{out['wall_s']:.1f}", f"{out['wall_s'] - out['command_s']:.1f}",
            f"{out['tasks_s']:.1f}", f"{out['load_s']:.2f}", f"{rest:.1f}", f"{100 * rest / out['command_s']:.1f}%",
            f"{out['user_s']:.1f}", f"{out['system_s']:.1f}"]


def figures(out):
    """A run's numbers for --json: its times and layer forwards (not its result rows)."""
    return {k: out[k] for k in ("wall_s", "user_s", "system_s", "command_s", "tasks_s", "load_s", "computed", "full")}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtmctl", default="build/cli/dtmctl")
    ap.add_argument("--model", default="build/tiny-model")
    ap.add_argument("--probes", required=True, help="at least --num-probes probes, in random order "
                                                    "(`dtmctl make-probes --sample random --seed S`)")
    ap.add_argument("--probe-models", default="tiny,random:16,random:32", help="comma-separated: tiny, random:LAYERS")
    ap.add_argument("--search-models", default="tiny,random:16", help="comma-separated: tiny, random:LAYERS")
    ap.add_argument("--random-std", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--probe-job-probes", type=int, default=128)
    ap.add_argument("--num-probes", type=int, default=256, help="the quant-search's probes")
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--method", default="prune:0.5", help="the quant-search's method")
    ap.add_argument("--components", default="*.self_attn.o_proj", help="comma-separated globs a node may hold ('' for all)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--first", type=int, default=32)
    ap.add_argument("--step", type=int, default=32)
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--epsilon", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default="", help="also write every run's figures to this file")
    args = ap.parse_args()
    with open(args.probes) as f:
        available = sum(1 for line in f if line.strip())
    if available < max(args.num_probes, args.probe_job_probes):
        sys.exit(f"cost_bench: {args.probes} holds {available} probes, fewer than --num-probes / --probe-job-probes")
    probe_args = argparse.Namespace(**{**vars(args), "num_probes": args.probe_job_probes})
    race = (args.first, args.step, args.confidence, args.epsilon)

    tmp = tempfile.mkdtemp(prefix="cost-bench-")
    try:
        models = {}  # name -> (path, label)
        for name in dict.fromkeys(filter(None, f"{args.probe_models},{args.search_models}".split(","))):
            layers = name[len("random:"):] if name.startswith("random:") else ""
            if name == "tiny":
                models[name] = (args.model, "tiny (trained)")
            elif layers.isdigit() and int(layers) >= 1:
                path = os.path.join(tmp, f"random-{layers}")
                racing_bench.random_model(args.model, path, int(layers), args.random_std, args.seed)
                models[name] = (path, f"random ({layers} layers)")
            else:
                sys.exit(f"cost_bench: unknown model {name!r}; expected tiny or random:LAYERS (e.g. random:16)")
        print(f"{args.workers} worker(s); prefix {args.prefix}, completion {args.completion}, shards of "
              f"{args.shard_size}; (a) probe job: int8-absmax, every component, {args.probe_job_probes} probes; "
              f"(b) quant-search: {args.method} over {args.components or 'every component'}, beam {args.beam}, depth "
              f"{args.depth}, {args.num_probes} probes, racing first {args.first}, step {args.step}, confidence "
              f"{args.confidence}, epsilon {args.epsilon}", flush=True)
        probe_rows, search_rows, overlap_rows, time_rows, failures = [], [], [], [], []
        record = {"options": vars(args), "probe_jobs": [], "searches": []}
        for index, name in enumerate(filter(None, args.probe_models.split(","))):
            model, label = models[name]
            spec = write(os.path.join(tmp, f"probe-{index}.yaml"), reuse_bench.spec_text(probe_args, model, "probe"))
            full, reused = timed(args, spec, "--activation-cache-bytes", "0"), timed(args, spec)
            same = full["metrics"] == reused["metrics"]
            if not same:
                failures.append(f"{label} probe job")
            probe_rows.append([label, len(full["metrics"]), full["computed"], reused["computed"],
                               f"{reused['computed'] / full['computed']:.3f}", f"{full['wall_s']:.1f}",
                               f"{reused['wall_s']:.1f}", f"{reused['wall_s'] / full['wall_s']:.3f}",
                               "identical" if same else "DIFFER"])
            record["probe_jobs"].append({"model": label, "configs": len(full["metrics"]), "identical": same,
                                         "no_reuse": figures(full), "reuse": figures(reused)})
            time_rows += [where_time_went(label, "probe", "no reuse", full, args.workers),
                          where_time_went(label, "probe", "reuse", reused, args.workers)]
            print(f"  {label} probe job: {full['wall_s']:.1f} s and {full['computed']} layer forwards without reuse, "
                  f"{reused['wall_s']:.1f} s and {reused['computed']} with; {probe_rows[-1][-1]}", flush=True)
        for index, name in enumerate(filter(None, args.search_models.split(","))):
            model, label = models[name]
            exact_spec = write(os.path.join(tmp, f"exact-{index}.yaml"), racing_bench.spec_text(args, model, None))
            race_spec = write(os.path.join(tmp, f"race-{index}.yaml"), racing_bench.spec_text(args, model, race))
            plain = timed(args, exact_spec, "--activation-cache-bytes", "0")
            exact = timed(args, exact_spec)
            raced = timed(args, race_spec)
            same = plain["metrics"] == exact["metrics"]
            if not same:
                failures.append(f"{label} quant-search")
            exact_evals = exact["nodes"] * args.num_probes
            spent = raced["racing"]["probe_evaluations"]
            search_rows.append([label, exact["nodes"], plain["computed"], f"{plain['wall_s']:.1f}", exact["computed"],
                                f"{exact['computed'] / plain['computed']:.3f}", f"{exact['wall_s']:.1f}",
                                f"{exact['wall_s'] / plain['wall_s']:.3f}", "identical" if same else "DIFFER",
                                exact_evals, spent, f"{spent / exact_evals:.3f}", raced["racing"]["nodes_dropped"], raced["computed"],
                                f"{raced['computed'] / plain['computed']:.3f}", f"{raced['wall_s']:.1f}",
                                f"{raced['wall_s'] / plain['wall_s']:.3f}"])
            overlap_rows.append([label] + racing_bench.agreement(exact, raced))
            record["searches"].append({"model": label, "nodes": exact["nodes"], "identical": same,
                                       "exact_probe_evaluations": exact_evals, "racing_summary": raced["racing"],
                                       "beams": {"exact": exact["beams"], "racing": raced["beams"]},
                                       "no_reuse": figures(plain), "reuse": figures(exact), "racing": figures(raced)})
            time_rows += [where_time_went(label, "search", "no reuse", plain, args.workers),
                          where_time_went(label, "search", "reuse", exact, args.workers),
                          where_time_went(label, "search", "racing", raced, args.workers)]
            print(f"  {label} quant-search: {plain['wall_s']:.1f} s and {plain['computed']} layer forwards exact without "
                  f"reuse, {exact['wall_s']:.1f} s and {exact['computed']} with, {raced['wall_s']:.1f} s and "
                  f"{raced['computed']} racing ({spent} of {exact_evals} probe evaluations); overlap "
                  f"{' / '.join(overlap_rows[-1][1:])}", flush=True)
        if probe_rows:
            print()
            print("(a) probe job: decoder-layer forwards and wall time without and with reused streams")
            print(table(["model", "result rows", "fwd no reuse", "fwd reuse", "ratio", "wall s no reuse",
                         "wall s reuse", "ratio", "results"], probe_rows))
        if search_rows:
            print()
            print("(b) quant-search: exact without reuse, exact with reuse, racing with reuse; ratios to the first; "
                  "racing's probe evaluations against the exact search's")
            print(table(["model", "nodes", "fwd exact", "wall s", "fwd reuse", "ratio", "wall s", "ratio", "results",
                         "evals exact", "evals racing", "ratio", "dropped", "fwd racing", "ratio", "wall s", "ratio"],
                        search_rows))
            print()
            print("racing: overlap of each level's beam with the exact search's, and level 1's winner")
            print(table(["model"] + [f"level {l}" for l in range(1, args.depth + 1)] + ["mean", "same winner"],
                        overlap_rows))
        print()
        print("where the time went: the process's wall time; its start-up before the command; the workers' task "
              "and model-load seconds; the rest of the command (coordinator, store, gRPC, waits) and its share; "
              "the process's CPU seconds in user space and in the kernel")
        print(table(["model", "job", "run", "wall s", "start-up s", "tasks s", "load s", "rest s", "rest", "user s",
                     "system s"], time_rows))
        if args.json:
            write(args.json, json.dumps(record, indent=1) + "\n")
        if failures:
            sys.exit("cost_bench: results differ with reuse: " + ", ".join(failures))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
