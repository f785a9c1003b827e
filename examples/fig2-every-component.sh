#!/usr/bin/env bash
# The paper's Fig. 2 with every metric: runs examples/fig2-every-component-at-once.yaml embedded
# (FDT, SDT, DPPL over the probes), then ground-truth PPL (`dtmctl ppl --text`, SPEC's protocol with
# windows of 256 tokens, the tiny model's scale) of the uncompressed model and of each config on the
# held-out Brown text scripts/demo.sh wrote. Prints one table. Needs scripts/demo.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
dtmctl="$build/cli/dtmctl"
spec=examples/fig2-every-component-at-once.yaml
text="$build/demo/brown-held-out.txt"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
"$dtmctl" local "$spec" --workers 2 --format json >"$results"
python3 - "$dtmctl" "$build/tiny-model" "$text" "$results" <<'PY'
import json, subprocess, sys
dtmctl, model, text, results = sys.argv[1:]
doc = json.load(open(results))
rows = [("uncompressed", doc["noise_floor"], "")] + [
    ("magnitude" if "=prune:" in r["config"] else "random", r, r["config"]) for r in doc["results"]]
print(f"{'pruning 0.1% of all':<14} {'fdt75':>6} {'fdt_mean':>8} {'sdt_mean':>8} {'dppl':>8} {'ppl':>9}")
for name, m, config in rows:
    ppl = json.loads(subprocess.run([dtmctl, "ppl", "--model", model, "--text", text, "--window", "256",
                                     "--compress", config], capture_output=True, text=True, check=True).stdout)
    print(f"{name:<14} {m['fdt75']:>6.1f} {m['fdt_mean']:>8.2f} {m['sdt_mean']:>8.2f} {m['dppl']:>8.4f} "
          f"{ppl['ppl']:>9.4f}")
PY
