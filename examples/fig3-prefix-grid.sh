#!/usr/bin/env bash
# The paper's Fig. 3 grid on the tiny model: examples/fig3-prefix-sparsity-grid.yaml for prefix
# lengths n = 8, 16, 32 (the probes scripts/demo.sh cut have 32 tokens), each run embedded; prints the
# spread of FDT75 (and of the mean FDT) over the 28 components (min, quartiles, max) per
# (n, sparsity).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
dtmctl="$build/cli/dtmctl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in 8 16 32; do
  sed "s/^prefix: 32$/prefix: $n/" examples/fig3-prefix-sparsity-grid.yaml >"$work/n$n.yaml"
  "$dtmctl" local "$work/n$n.yaml" --workers 2 --format json >"$work/n$n.json"
done
python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
print("spread over the 28 components: min / quartiles / max; fdt75 saturates at the completion length")
print("on the tiny model, so fdt_mean is printed beside it")
print(f"{'n':>3} {'sparsity':>8}  {'fdt75':^34}  {'fdt_mean':^34}")
for n in (8, 16, 32):
    doc = json.load(open(f"{work}/n{n}.json"))
    by = {}
    for r in doc["results"]:
        by.setdefault(r["config"].split("=prune:")[1], []).append((r["fdt75"], r["fdt_mean"]))
    for sparsity, values in sorted(by.items()):
        cells = []
        for k in (0, 1):
            v = [x[k] for x in values]
            q = statistics.quantiles(v, n=4, method="inclusive")
            cells.append(" ".join(f"{x:>6.1f}" for x in (min(v), q[0], q[1], q[2], max(v))))
        print(f"{n:>3} {sparsity:>8}  {cells[0]}  {cells[1]}")
PY
