#!/usr/bin/env bash
# Builds the fuzzers of fuzz/ with clang and runs each over its seed corpus.
#
#   fuzz/run_fuzzers.sh [--build DIR] [--seconds N] [--fresh] [--parallel N] [FUZZER...]
#
#   --build DIR   where to build (default: build/fuzz); each fuzzer's run corpus, logs and crashing
#                 inputs go to DIR/runs/NAME/
#   --seconds N   how long each fuzzer runs (default 5)
#   --fresh       start from the seed corpus alone, forgetting inputs found by earlier runs
#   --parallel N  how many fuzzers run at a time (default: one per core)
#   FUZZER        e.g. safetensors (default: every fuzzer built)
#
# New inputs go to DIR/runs/NAME/corpus, never into fuzz/corpus, which is read only. Exit status: 0
# when no fuzzer crashed, 1 when one did (its input: DIR/runs/NAME/crash-*, leak-*, timeout-*, ...),
# 77 when clang++ or libFuzzer is missing (the `fuzz` CTest test then reports SKIPPED), 2 on bad
# usage or a failed build. `DTM_FUZZ_CXX` names another clang++.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$src/build/fuzz"
seconds=5
fresh=0
parallel=$(nproc)
selected=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --parallel) parallel="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "run_fuzzers: unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done

build=$(realpath -m "$build")  # the fuzzers run from their own folders

cxx="${DTM_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null; then
  echo "SKIP: $cxx not found; the fuzzers need clang and libFuzzer (apt-get install clang libclang-rt-14-dev)"
  exit 77
fi
# libFuzzer and the sanitizer runtimes ship apart from clang on Debian (libclang-rt-N-dev, only
# recommended by clang): try to link a fuzzer.
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe_dir/probe.cc"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cc" -o "$probe_dir/probe" 2>"$probe_dir/err"; then
  echo "SKIP: $cxx cannot link with -fsanitize=fuzzer,address,undefined (apt-get install libclang-rt-14-dev):"
  head -3 "$probe_dir/err"
  exit 77
fi

echo "run_fuzzers: building in $build"
mkdir -p "$build"
build_start=$(date +%s)
cmake -S "$src/fuzz" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 2; }
cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 2; }
echo "run_fuzzers: built in $(( $(date +%s) - build_start )) s"

if [ ${#selected[@]} -eq 0 ]; then mapfile -t selected < "$build/fuzzers.txt"; fi

# Every sanitizer report ends the run with a failure; libFuzzer's own default exit code for a crash
# (77) is CTest's code for a skipped test, hence -error_exitcode=1.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
# Runs one fuzzer; its report (one line, then the sanitizer's summary on a failure) goes to
# $run/report, its exit status to $run/status.
run_one() {
  local name=$1 bin="$build/${1}_fuzzer" seeds="$src/fuzz/corpus/$1" run="$build/runs/$1"
  local dict=() start status=0 runs cov
  [ -f "$src/fuzz/dictionaries/$name.dict" ] && dict=("-dict=$src/fuzz/dictionaries/$name.dict")
  start=$(date +%s)
  (cd "$run" && "$bin" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$run/" \
      corpus "$seeds") >"$run/log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$run/log" | tail -1 || true)
  if [ $status -ne 0 ]; then
    echo "run_fuzzers: $name FAILED (exit $status) after $(( $(date +%s) - start )) s; log: $run/log" >"$run/report"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)|artifact_prefix|Test unit written' "$run/log" |
      head -20 >>"$run/report" || true
  else
    echo "run_fuzzers: $name ok: ${runs:-?} runs in $(( $(date +%s) - start )) s, ${cov:-cov: ?}" >"$run/report"
  fi
  echo $status >"$run/status"
}

for name in "${selected[@]}"; do
  [ -x "$build/${name}_fuzzer" ] || { echo "run_fuzzers: no fuzzer $build/${name}_fuzzer" >&2; exit 2; }
  [ -d "$src/fuzz/corpus/$name" ] || { echo "run_fuzzers: no seed corpus $src/fuzz/corpus/$name" >&2; exit 2; }
  [ $fresh -eq 1 ] && rm -rf "$build/runs/$name"
  mkdir -p "$build/runs/$name/corpus"
  rm -f "$build/runs/$name/report" "$build/runs/$name/status"
done
# As many fuzzers at a time as --parallel says; each is one process.
for name in "${selected[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  run_one "$name" &
done
wait
failed=()
for name in "${selected[@]}"; do
  cat "$build/runs/$name/report"
  [ "$(cat "$build/runs/$name/status")" = 0 ] || failed+=("$name")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzzers: failed: ${failed[*]}"
  exit 1
fi
