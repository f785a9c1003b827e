#!/usr/bin/env bash
# The checks that need a GPU machine with a CUDA libtorch in python3 (torch, transformers), run
# from the repository root:
#   bench/gpu_checks.sh MODEL_DIR PROBES_FILE [OUT_DIR]
# 1. builds the engine, dtmctl and engine_bench against python3's CUDA libtorch (DTM_ENGINE_ONLY;
#    header-only nlohmann-json and CLI11 from DTM_EXTRA_INCLUDE when the machine lacks them);
# 2. compares dtmctl's baseline and eval with transformers' LlamaForCausalLM on CPU in float32;
# 3. measures the bfloat16 noise floor on the GPU against the float32 baseline;
# 4. runs engine_bench on the model and on a synthetic Llama-2-7B shape;
# 5. loads a `dtmctl apply --format compressed-tensors` export in transformers (when python3 has the
#    compressed-tensors package) and compares its eval with dtmctl's of the same folder.
set -uo pipefail
model=$1 probes=$2 out=${3:-/tmp/gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
# nccl.h from the nvidia-nccl wheel: gangs of CUDA members then run on NCCL (worker/engine/CMakeLists.txt).
nccl_include=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null)
cmake -S . -B build-cuda -DDTM_ENGINE_ONLY=ON -DDTM_WERROR=OFF -DCMAKE_BUILD_TYPE=Release \
  -DDTM_EXTRA_INCLUDE="$PWD/.devdeps/include" -DCMAKE_PREFIX_PATH="$torch_prefix" \
  ${nccl_include:+-DNCCL_INCLUDE_DIR="$nccl_include"} >"$out/cmake.log" 2>&1 ||
  { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-cuda -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
dtmctl=build-cuda/cli/dtmctl
ref=tests/reference
m=${COMPLETION:-64}
echo "== build ok ($(grep -o 'dtm: [A-Za-z]* gangs[^(]*' "$out/cmake.log")): $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"

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
