#!/usr/bin/env python3
"""What probe racing saves and what it changes, end to end through `dtmctl local` (stdlib only).

    python3 bench/racing_bench.py --dtmctl build/cli/dtmctl --model build/tiny-model \
        --probes PROBES.jsonl [--num-probes 256] [--deep-layers 16] [--models tiny,random] \
        [--epsilon E] [--variants FIRST/STEP/CONFIDENCE/EPSILON,...]

PROBES must hold at least --num-probes probes (`dtmctl make-probes --count 512 ...`): a race saves
only when the probe set is much larger than its first group.

Two models: the trained tiny model, and a deeper synthetic one (--deep-layers layers of random
weights, N(0, --random-std), the tiny model's tokenizer and shapes) whose FDTs spread over the
whole completion where the tiny model's saturate (more than a quarter of its probes never diverge
under one int8 component, so fdt75 is the completion length and ranks nothing). On each, the same
quant-search (--method, beam --beam, depth --depth) runs twice, each on a fresh store, reused
streams on in both: exact, and with `racing: {first, step, confidence, epsilon}`. Printed per model:

  - probe evaluations (one config on one probe; the noise floor not counted): the exact search's
    (its levels' nodes x probes) and the race's (RacingSummary), and their ratio;
  - decoder-layer forwards and wall time of both;
  - per level, the overlap of the race's beam with the exact search's (shared nodes / beam), their
    mean, and whether level 1's winner is the same.

--variants races the same search with other racing parameters on the exact run's store: every node
the exact search evaluated is answered from its shards, so a variant costs seconds (plus any node
outside the exact beams) and its probe evaluations, drops and overlaps are what a fresh run would
report (a race depends only on the metrics), while its wall time and layer forwards mean nothing and
are not printed.

Levels below the first grow from their own beams, so a level-1 difference carries on. One run per
figure; OpenBLAS picks kernels per CPU, so the numbers are per machine. Both timed runs use a fresh
SQLite store in a temporary folder; --work-dir keeps it, and --variants-only later races more
variants on the exact run's store there (the exact search's answer then also comes from its cache).
"""
import argparse
import array
import json
import os
import random
import shutil
import struct
import sys
import tempfile

from reuse_bench import run_local  # this folder's: `dtmctl local`, timed, its layer forwards and results
from search_bench import table  # this folder's: a right-aligned text table


def random_model(src, dst, layers, std, seed):
    """Writes to `dst` a model of `src`'s shapes and tokenizer with `layers` layers of N(0, std)
    weights (embeddings N(0, 1), norms 1)."""
    os.makedirs(dst)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config["num_hidden_layers"] = layers
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in os.listdir(src):
        if name.startswith("tokenizer") or name == "special_tokens_map.json":
            shutil.copy(os.path.join(src, name), dst)
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim", h // config["num_attention_heads"])
    kv = config["num_key_value_heads"] * head_dim
    q = config["num_attention_heads"] * head_dim
    shapes = [("model.embed_tokens.weight", [vocab, h], 1.0), ("model.norm.weight", [h], None),
              ("lm_head.weight", [vocab, h], std)]
    for layer in range(layers):
        p = f"model.layers.{layer}."
        shapes += [(p + "input_layernorm.weight", [h], None), (p + "post_attention_layernorm.weight", [h], None),
                   (p + "self_attn.q_proj.weight", [q, h], std), (p + "self_attn.k_proj.weight", [kv, h], std),
                   (p + "self_attn.v_proj.weight", [kv, h], std), (p + "self_attn.o_proj.weight", [h, q], std),
                   (p + "mlp.gate_proj.weight", [inter, h], std), (p + "mlp.up_proj.weight", [inter, h], std),
                   (p + "mlp.down_proj.weight", [h, inter], std)]
    rng = random.Random(seed)
    header, blobs, offset = {}, [], 0
    for name, shape, scale in shapes:
        count = 1
        for d in shape:
            count *= d
        values = [1.0] * count if scale is None else [rng.gauss(0, scale) for _ in range(count)]
        raw = array.array("f", values).tobytes()
        if sys.byteorder != "little":
            sys.exit("racing_bench: safetensors are little-endian; this machine is not")
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def spec_text(args, model, racing):
    """The search's spec; `racing` is None (exact) or (first, step, confidence, epsilon)."""
    lines = [f"name: racing-bench {'racing' if racing else 'exact'}", "kind: quant-search",
             f"model: {json.dumps(os.path.abspath(model))}", f"probes: {json.dumps(os.path.abspath(args.probes))}",
             f"num_probes: {args.num_probes}", f"prefix: {args.prefix}", f"completion: {args.completion}",
             f"shard_size: {args.shard_size}", "quant-search:", f"  method: {args.method}", f"  beam: {args.beam}",
             f"  depth: {args.depth}"]
    if args.components:
        lines.append(f"  components: {json.dumps(args.components.split(','))}")
    if racing:
        first, step, confidence, epsilon = racing
        lines.append(f"  racing: {{first: {first}, step: {step}, confidence: {confidence}, epsilon: {epsilon}}}")
    return "\n".join(lines) + "\n"


def search_outcome(doc):
    """What a quant-search's results document says of its levels: `beams` (level -> its beam's
    configs, by rank), `nodes` (evaluated in all) and `racing` (its RacingSummary, or None)."""
    beams = {}
    for r in doc["results"]:
        if r.get("search_level", 0) >= 1 and "rank" in r:
            beams.setdefault(r["search_level"], []).append((r["rank"], r["config"]))
    return {"beams": {level: [c for _, c in sorted(rows)] for level, rows in beams.items()},
            "nodes": sum(level["nodes"] for level in doc.get("search_levels", [])), "racing": doc.get("racing")}


def run(args, spec, store, forwards_required=True):
    out = run_local(args.dtmctl, spec, args.workers, store=store, forwards_required=forwards_required)
    return {"wall_s": out["wall_s"], "layer_forwards": out["computed"], **search_outcome(out["doc"])}


def agreement(exact, raced):
    """Per level, the share of the exact beam that the race's beam holds; their mean; and whether
    level 1's winner is the same ("yes"/"NO"), as table cells."""
    overlaps = []
    for level in sorted(exact["beams"]):
        theirs = exact["beams"][level]
        overlaps.append(len(set(raced["beams"].get(level, [])) & set(theirs)) / len(theirs))
    same_winner = exact["beams"].get(1, [None])[0] == raced["beams"].get(1, [None])[0]
    return [f"{o:.2f}" for o in overlaps] + [f"{sum(overlaps) / len(overlaps):.2f}", "yes" if same_winner else "NO"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtmctl", default="build/cli/dtmctl")
    ap.add_argument("--model", default="build/tiny-model")
    ap.add_argument("--probes", required=True)
    ap.add_argument("--models", default="tiny,random", help="comma-separated: tiny, random")
    ap.add_argument("--deep-layers", type=int, default=16)
    ap.add_argument("--random-std", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--num-probes", type=int, default=256)
    ap.add_argument("--prefix", type=int, default=32)
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--method", default="int8-absmax")
    ap.add_argument("--components", default="", help="comma-separated globs a node may hold (default: all)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--first", type=int, default=16)
    ap.add_argument("--step", type=int, default=32)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--epsilon", type=float, default=0.0)
    ap.add_argument("--work-dir", default="", help="keep the models, specs and stores here (an empty folder) "
                                                    "instead of a temporary one removed at the end")
    ap.add_argument("--variants", default="",
                    help="comma-separated FIRST/STEP/CONFIDENCE/EPSILON racing parameters, each raced on the "
                         "exact run's store")
    ap.add_argument("--variants-only", action="store_true",
                    help="race only --variants, on the exact stores an earlier run left in --work-dir "
                         "(same model, probe and search options)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with open(args.probes) as f:
        available = sum(1 for line in f if line.strip())
    if available < args.num_probes:
        sys.exit(f"racing_bench: {args.probes} holds {available} probes, fewer than --num-probes {args.num_probes}")
    variants = []
    for text in filter(None, args.variants.split(",")):
        parts = text.split("/")
        try:
            if len(parts) != 4:
                raise ValueError
            variants.append((int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])))
        except ValueError:
            sys.exit(f"racing_bench: --variants: {text!r} is not FIRST/STEP/CONFIDENCE/EPSILON (e.g. 64/64/0.95/1)")

    if args.variants_only:
        if not args.work_dir or not variants:
            sys.exit("racing_bench: --variants-only needs --work-dir (of an earlier run) and --variants")
    elif args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        if os.listdir(args.work_dir):
            sys.exit(f"racing_bench: --work-dir {args.work_dir} is not empty; name a new or empty folder")
    tmp = args.work_dir or tempfile.mkdtemp(prefix="racing-bench-")
    try:
        models = []
        for name in args.models.split(","):
            if name == "tiny":
                models.append((args.model, "tiny (trained)"))
            elif name == "random":
                path = os.path.join(tmp, f"random-{args.deep_layers}")
                if not args.variants_only:
                    random_model(args.model, path, args.deep_layers, args.random_std, args.seed)
                models.append((path, f"random ({args.deep_layers} layers, std {args.random_std})"))
            else:
                sys.exit(f"racing_bench: --models: unknown model {name!r}; expected tiny or random")
        main_race = (args.first, args.step, args.confidence, args.epsilon)
        print(f"quant-search {args.method} over {args.components or 'every component'}, beam {args.beam}, depth {args.depth}; {args.num_probes} probes in shards "
              f"of {args.shard_size}, prefix {args.prefix}, completion {args.completion}; racing: first {args.first}, "
              f"step {args.step}, confidence {args.confidence}, epsilon {args.epsilon}; {args.workers} worker(s)", flush=True)
        cost_rows, overlap_rows, variant_rows = [], [], []
        for index, (model, label) in enumerate(models):
            runs = {}
            stores = {}
            for racing in (None,) if args.variants_only else (None, main_race):
                name = f"{'racing' if racing else 'exact'}-{index}"
                spec = os.path.join(tmp, f"{name}.yaml")
                stores[racing] = "sqlite://" + os.path.join(tmp, f"{name}.sqlite")
                if args.variants_only:  # the earlier exact run's answer, from its own store's cache
                    if not os.path.exists(os.path.join(tmp, f"{name}.sqlite")):
                        sys.exit(f"racing_bench: --variants-only: no {name}.sqlite in {tmp} (run without it first)")
                    with open(spec) as f:
                        if f.read() != spec_text(args, model, None):
                            sys.exit(f"racing_bench: --variants-only: {spec} is another search than these options "
                                     "describe; give the earlier run's model, probe and search options")
                    runs[racing] = run(args, spec, stores[racing], forwards_required=False)
                    continue
                with open(spec, "w") as f:
                    f.write(spec_text(args, model, racing))
                runs[racing] = run(args, spec, stores[racing])
                print(f"  {label} {'racing' if racing else 'exact'}: {runs[racing]['wall_s']:.1f} s", flush=True)
            exact = runs[None]
            exact_evals = exact["nodes"] * args.num_probes
            for variant in variants:
                spec = os.path.join(tmp, f"variant-{index}.yaml")
                with open(spec, "w") as f:
                    f.write(spec_text(args, model, variant))
                # The exact run's store: its shards are cached (a variant may run none of its own).
                other = run(args, spec, stores[None], forwards_required=False)
                spent = other["racing"]["probe_evaluations"]
                variant_rows.append([label, "/".join(str(v) for v in variant), spent, f"{spent / exact_evals:.3f}",
                                     other["racing"]["nodes_dropped"]] + agreement(exact, other))
            if args.variants_only:
                continue
            raced = runs[main_race]
            spent = raced["racing"]["probe_evaluations"]
            cost_rows.append([label, exact_evals, spent, f"{spent / exact_evals:.3f}", raced["racing"]["nodes_dropped"],
                              exact["layer_forwards"], raced["layer_forwards"], f"{exact['wall_s']:.1f}",
                              f"{raced['wall_s']:.1f}", f"{raced['wall_s'] / exact['wall_s']:.3f}"])
            overlap_rows.append([label] + agreement(exact, raced))
        if cost_rows:
            print()
            print("probe evaluations (noise floor not counted), layer forwards and wall time: exact vs racing "
                  "(reused streams in both)")
            print(table(["model", "exact evals", "racing evals", "ratio", "dropped", "fwd exact", "fwd racing",
                         "wall s exact", "wall s racing", "ratio"], cost_rows))
            print()
            print("overlap of each level's beam with the exact search's, and level 1's winner")
            print(table(["model"] + [f"level {l}" for l in range(1, args.depth + 1)] + ["mean", "same winner"],
                        overlap_rows))
        if variant_rows:
            print()
            print("other racing parameters (first/step/confidence/epsilon), raced on the exact run's store: probe "
                  "evaluations against the exact search's, beam overlap per level, level 1's winner")
            print(table(["model", "racing", "racing evals", "ratio", "dropped"] +
                        [f"level {l}" for l in range(1, args.depth + 1)] + ["mean", "same winner"], variant_rows))
    finally:
        if not args.work_dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
