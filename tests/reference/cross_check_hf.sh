#!/usr/bin/env bash
# Cross-check the NumPy reference against transformers' LlamaForCausalLM on tiny random checkpoints.
# Needs python3 with numpy, torch and transformers (the GPU machine).
#
#   tests/reference/cross_check_hf.sh [WORKDIR]      (env: PYTHON=python3 DEVICE=cuda|cpu M=24)
#
# For each tiny model (GQA untied F32; tied BF16 in 2 shards; MHA with head_dim != hidden/heads and
# rope_theta 500; a wider GQA model): greedy baselines from both (HF with and without KV cache) must
# be identical, and eval outputs for several compression configs must agree (fdt/sdt identical,
# |dnll| <= 1e-4), also float64 reference vs HF and HF eager vs sdpa. Prints one line per check
# (60 in all) and exits 1 if any check failed. About 6.5 min on an H100, mostly transformers'
# start-up (run 2025-11-23: 60 PASS with torch 2.11 / transformers 5.17).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${1:-$(mktemp -d)}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
M=${M:-24}
mkdir -p "$W"
fails=0
check() {  # check NAME CMD... : run, print PASS/FAIL with the command's last line
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then echo "PASS $name: $(echo "$out" | tail -1)"
  else echo "FAIL $name: $(echo "$out" | tail -5)"; fails=$((fails + 1)); fi
}
REF="$PY $HERE/llama_reference.py"
HF="$PY $HERE/hf_reference.py"

$REF make-tiny --out "$W/gqa" --seed 1
$REF make-tiny --out "$W/tied_bf16" --seed 2 --tied --dtype BF16 --shards 2
$REF make-tiny --out "$W/mha_hd16" --seed 3 --kv-heads 4 --head-dim 16 --rope-theta 500
$REF make-tiny --out "$W/wide" --seed 4 --vocab 512 --hidden 128 --layers 3 --heads 8 --kv-heads 2 --intermediate 344

$PY - "$W/probes.jsonl" <<'EOF'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(8):
        f.write(json.dumps({"id": f"p{i}", "tokens": [rng.randrange(64) for _ in range(rng.randint(1, 12))]}) + "\n")
EOF

for m in gqa tied_bf16 mha_hd16 wide; do
  d="$W/$m"
  $REF baseline --model "$d" --probes "$W/probes.jsonl" --completion "$M" --out "$d.ref.base.jsonl"
  $HF baseline --model "$d" --probes "$W/probes.jsonl" --completion "$M" --device "$DEVICE" --out "$d.hf.base.jsonl"
  $HF baseline --model "$d" --probes "$W/probes.jsonl" --completion "$M" --device "$DEVICE" --no-kv-cache --out "$d.hfnc.base.jsonl"
  check "$m baseline ref vs hf(kv cache)" $PY "$HERE/compare_baseline.py" "$d.ref.base.jsonl" "$d.hf.base.jsonl"
  check "$m baseline ref vs hf(no cache)" $PY "$HERE/compare_baseline.py" "$d.ref.base.jsonl" "$d.hfnc.base.jsonl"
  check "$m logits" $PY - "$d" "$DEVICE" <<EOF
import json, subprocess, sys
toks = "3,1,4,1,5,9,2,6,5,3,5"
a = json.loads(subprocess.check_output([*"$REF".split(), "logits", "--model", sys.argv[1], "--tokens", toks]))
b = json.loads(subprocess.check_output([*"$HF".split(), "logits", "--model", sys.argv[1], "--tokens", toks, "--device", sys.argv[2]]))
d = max(abs(x - y) for x, y in zip(a, b))
print(f"max |dlogit| = {d:.3g} over {len(a)} logits")
sys.exit(0 if d < 1e-4 and len(a) == len(b) else 1)
EOF
  specs=("" \
    "model.layers.0.self_attn.q_proj=prune:0.5" \
    "model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.self_attn.k_proj=int8-absmax-row,model.layers.1.mlp.down_proj=prune:0.3" \
    "model.layers.0.self_attn.v_proj=prune:0.7,model.layers.0.self_attn.o_proj=int8-absmax,model.layers.1.mlp.gate_proj=prune:0.6")
  cargs=(); for spec in "${specs[@]}"; do cargs+=(--compress "$spec"); done
  # each eval run prints one JSON line per --compress, in order
  $REF eval --model "$d" --baseline "$d.ref.base.jsonl" "${cargs[@]}" > "$d.ref.eval.jsonl"
  $REF eval --model "$d" --baseline "$d.ref.base.jsonl" "${cargs[@]}" --precision float64 > "$d.ref64.eval.jsonl"
  $HF eval --model "$d" --baseline "$d.ref.base.jsonl" "${cargs[@]}" --device "$DEVICE" > "$d.hf.eval.jsonl"
  $HF eval --model "$d" --baseline "$d.ref.base.jsonl" "${cargs[@]}" --device "$DEVICE" --attn sdpa > "$d.hfsdpa.eval.jsonl"
  for i in "${!specs[@]}"; do
    for k in ref ref64 hf hfsdpa; do sed -n "$((i + 1))p" "$d.$k.eval.jsonl" > "$d.$k.eval$i.json"; done
    check "$m eval$i ref32 vs hf [${specs[$i]:-none}]" $PY "$HERE/compare_eval.py" "$d.ref.eval$i.json" "$d.hf.eval$i.json"
    check "$m eval$i ref64 vs hf" $PY "$HERE/compare_eval.py" "$d.ref64.eval$i.json" "$d.hf.eval$i.json"
    check "$m eval$i hf eager vs sdpa" $PY "$HERE/compare_eval.py" "$d.hf.eval$i.json" "$d.hfsdpa.eval$i.json"
  done
  # bf16 noise floor (informational): the uncompressed model in bf16 against its float32 baseline
  echo "INFO $m bf16 self-eval: $($HF eval --model "$d" --baseline "$d.ref.base.jsonl" --device "$DEVICE" --dtype bfloat16 \
      | $PY -c 'import json,sys; o=json.load(sys.stdin); print({k: o[k] for k in ("fdt75","fdt_mean","sdt_mean","dppl")})')"
done
echo "cross_check_hf: $fails failed check(s); work dir $W"
[ "$fails" -eq 0 ]
