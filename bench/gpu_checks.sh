#!/usr/bin/env bash
# The checks that need a GPU machine with a CUDA libtorch in python3 (torch, transformers), run
# from the repository root:
#   bench/gpu_checks.sh MODEL_DIR PROBES_FILE [OUT_DIR]
# bench/prepare_gpu_checks.sh fills .devdeps/ here with what the machine lacks (headers, the tiny
# model, probes, training text); carry .devdeps there and run
#   bench/gpu_checks.sh .devdeps/tiny-model .devdeps/probes.jsonl
# 0. prints the machine's facts: GPU, compiler, torch/transformers, and how many protobuf symbols
#    the libtorch exports (pytorch#14573: a worker linking gRPC beside it must not trust it then);
# 1. builds the engine, dtmctl and engine_bench against python3's CUDA libtorch (DTM_ENGINE_ONLY;
#    header-only nlohmann-json and CLI11 from .devdeps/include when the machine lacks them);
# 2. compares dtmctl's baseline and eval with transformers' LlamaForCausalLM on CPU in float32;
# 3. measures the bfloat16 noise floor on the GPU against the float32 baseline;
# 4. runs engine_bench on the model and on a synthetic Llama-2-7B shape;
# 5. loads a `dtmctl apply --format compressed-tensors` export in transformers (when python3 has the
#    compressed-tensors package) and compares its eval with dtmctl's of the same folder;
# 6. trains the model a few steps on CPU in float32, on the GPU in float32 and in bfloat16 (when
#    .devdeps/train.txt exists) and compares the losses.
set -uo pipefail
model=$1 probes=$2 out=${3:-/tmp/gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$(date +%s)
elapsed() { echo "+$(($(date +%s) - start)) s"; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
c++ --version | head -1
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
echo "google::protobuf symbols exported by libtorch_cpu.so: $(nm -DC "$torch_dir/lib/libtorch_cpu.so" | grep -c google::protobuf)"

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
# nccl.h from the nvidia-nccl wheel: gangs of CUDA members then run on NCCL (worker/engine/CMakeLists.txt).
nccl_include=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null)
# The pip wheel ships no Gloo headers (torch 2.11), which ProcessGroupGloo.hpp includes: Debian's
# libgloo-dev headers, copied to .devdeps/gloo, then stand in. A folder of their own: beside a copy
# of nlohmann-json they once shadowed the machine's own json headers in gang.cc's library, and two
# json versions met at link time. Gloo gangs (CPU members) of such a build use headers of another
# Gloo version than the libtorch's: NCCL gangs (CUDA members) do not touch them.
gloo_arg=()
if [ ! -d "$torch_dir/include/gloo" ] && [ -d .devdeps/gloo/gloo ]; then gloo_arg=(-DGLOO_INCLUDE_DIR="$PWD/.devdeps/gloo"); fi
# Ninja when the machine has it (the CUDA image does); every translation unit is tried (-k 0) so
# that one build reports every error.
generator=() keep_going=(-k)
if command -v ninja >/dev/null; then generator=(-G Ninja) keep_going=(-k 0); fi
cmake -S . -B build-cuda "${generator[@]}" -DDTM_ENGINE_ONLY=ON -DDTM_WERROR=OFF -DCMAKE_BUILD_TYPE=Release \
  -DDTM_EXTRA_INCLUDE="$PWD/.devdeps/include" -DCMAKE_PREFIX_PATH="$torch_prefix" "${gloo_arg[@]}" \
  ${nccl_include:+-DNCCL_INCLUDE_DIR="$nccl_include"} >"$out/cmake.log" 2>&1 ||
  { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-cuda -j"$(nproc)" -- "${keep_going[@]}" >"$out/build.log" 2>&1 ||
  { grep -E "error|FAILED" "$out/build.log" | head -60; exit 1; }
dtmctl=build-cuda/cli/dtmctl
ref=tests/reference
m=${COMPLETION:-64}
echo "== build ok at $(elapsed) ($(grep -o 'dtm: [A-Za-z]* gangs[^(]*' "$out/cmake.log")): $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"

echo "== float32 CPU: dtmctl vs transformers"
$dtmctl baseline --model "$model" --probes "$probes" --completion "$m" --out "$out/base-f32.jsonl" --device cpu >/dev/null
python3 $ref/hf_reference.py baseline --model "$model" --probes "$probes" --completion "$m" --device cpu \
  --out "$out/base-hf.jsonl" >/dev/null
python3 $ref/compare_baseline.py "$out/base-f32.jsonl" "$out/base-hf.jsonl"
specs=("" "model.layers.0.self_attn.v_proj=int8-absmax" "model.layers.1.mlp.down_proj=int8-absmax-row"
       "model.layers.2.self_attn.k_proj=prune:0.6")
hf_args=()
for s in "${specs[@]}"; do hf_args+=(--compress "$s"); done
python3 $ref/hf_reference.py eval --model "$model" --baseline "$out/base-f32.jsonl" --device cpu "${hf_args[@]}" \
  >"$out/hf-evals.jsonl"
i=0
for s in "${specs[@]}"; do
  i=$((i + 1))
  $dtmctl eval --model "$model" --baseline "$out/base-f32.jsonl" --compress "$s" --device cpu --no-noise-floor \
    >"$out/ours-$i.json" 2>/dev/null
  sed -n "${i}p" "$out/hf-evals.jsonl" >"$out/hf-$i.json"
  echo -n "[${s:-uncompressed}] "; python3 $ref/compare_eval.py "$out/ours-$i.json" "$out/hf-$i.json" --nll-tol 1e-4
done

echo "== bfloat16 on the GPU against the float32 baseline (noise floor) and against its own baseline"
$dtmctl eval --model "$model" --baseline "$out/base-f32.jsonl" --device cuda \
  | python3 -c "import json,sys; d=json.load(sys.stdin); print('bf16 vs f32 baseline:', {k: round(d[k], 3) for k in ('fdt75','fdt_mean','sdt_mean','dppl')})"
$dtmctl baseline --model "$model" --probes "$probes" --completion "$m" --out "$out/base-bf16.jsonl" --device cuda >/dev/null
$dtmctl eval --model "$model" --baseline "$out/base-bf16.jsonl" --device cuda \
  | python3 -c "import json,sys; d=json.load(sys.stdin); print('bf16 vs bf16 baseline:', {k: round(d[k], 3) for k in ('fdt75','fdt_mean','sdt_mean','dppl')})"
$dtmctl eval --model "$model" --baseline "$out/base-bf16.jsonl" --device cuda \
  --compress "model.layers.1.mlp.up_proj=llm-int8,model.layers.2.mlp.gate_proj=gptq:4:g64" \
  | python3 -c "import json,sys; d=json.load(sys.stdin); print('bf16 llm-int8+gptq:', d['config'], {k: round(d[k], 3) for k in ('fdt75','fdt_mean','dppl')})"

echo "== engine_bench"
build-cuda/bench/engine_bench --model "$model" --device cuda --batch 32 --prefix 100 --completion 500 --repeats 3
build-cuda/bench/engine_bench --synthetic llama2-7b --device cuda --dtype bfloat16 --batch 8 --prefix 100 \
  --completion 500 --repeats 2

echo "== compressed-tensors export: transformers (compressed-tensors package) vs dtmctl, float32 CPU"
ct_spec="model.layers.0.mlp.down_proj=int8-absmax-row,model.layers.1.self_attn.q_proj=int8-absmax"
$dtmctl apply --model "$model" --config "$ct_spec" --format compressed-tensors --out "$out/ct" --device cpu \
  | python3 -c "import json,sys; d=json.load(sys.stdin); print('export:', d['bytes'], 'of', d['original_bytes'], 'bytes')"
if python3 -c 'import compressed_tensors' 2>/dev/null; then
  python3 $ref/hf_reference.py eval --model "$out/ct" --baseline "$out/base-f32.jsonl" --device cpu --compress "" \
    >"$out/hf-ct.json"
  $dtmctl eval --model "$out/ct" --baseline "$out/base-f32.jsonl" --compress "" --device cpu --no-noise-floor \
    >"$out/ours-ct.json" 2>/dev/null
  python3 $ref/compare_eval.py "$out/ours-ct.json" "$out/hf-ct.json" --nll-tol 1e-4
else
  echo "python3 has no compressed_tensors: skipped (pip install compressed-tensors)"
fi

echo "== training, 8 steps of 8 x 128 tokens: float32 CPU vs float32 GPU vs bfloat16 GPU ($(elapsed))"
if [ -f .devdeps/train.txt ]; then
  train=(train --model "$model" --data .devdeps/train.txt --data-format text --phases masked:6,unmasked:2 --batch 8
         --seq-len 128 --prune model.layers.0.mlp.up_proj=prune:0.5)
  $dtmctl "${train[@]}" --out "$out/train-cpu" --device cpu >"$out/train-cpu.json" 2>"$out/train-cpu.err"
  $dtmctl "${train[@]}" --out "$out/train-f32" --device cuda --compute-dtype float32 >"$out/train-f32.json" \
    2>"$out/train-f32.err"
  $dtmctl "${train[@]}" --out "$out/train-bf16" --device cuda >"$out/train-bf16.json" 2>"$out/train-bf16.err"
  python3 - "$out" <<'PY'
import json, sys
runs = {}
for name in ("cpu", "f32", "bf16"):
    try:
        runs[name] = json.load(open(f"{sys.argv[1]}/train-{name}.json"))
    except (OSError, ValueError):
        print(name, "failed:", open(f"{sys.argv[1]}/train-{name}.err").read()[-400:])
for name, run in runs.items():
    print(name, "losses", [round(x, 4) for x in run["losses"]], "tokens/s", round(run["tokens_per_second"]))
    if name != "cpu" and "cpu" in runs:
        print(" ", name, "max |loss - cpu loss|:", max(abs(a - b) for a, b in zip(run["losses"], runs["cpu"]["losses"])))
PY
else
  echo "no .devdeps/train.txt: skipped (bench/prepare_gpu_checks.sh makes it)"
fi
echo "== done ($(elapsed))"
