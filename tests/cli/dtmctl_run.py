"""Runs dtmctl (the binary named by $DTMCTL) for the CLI tests: `run` returns the finished process and,
with check, fails the test on a non-zero exit naming the command and its stderr; `run_json` parses
stdout; `probes_and_baseline` makes a model's probes and greedy baseline; `expect_one_error` checks a
refusal; `expect_same_eval` compares two eval outputs."""
import atexit
import json
import os
import shutil
import subprocess
import tempfile

DTMCTL = os.environ["DTMCTL"]
# Tests never touch the user's own store (dtmctl local's default, in $XDG_DATA_HOME/dtm).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="dtm-test-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)


def run(*args, check=True):
    proc = subprocess.run([DTMCTL, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dtmctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def run_json(*args):
    return json.loads(run(*args).stdout)


def probes_and_baseline(tmp, model, brown_dir, count, prefix, completion):
    """`count` probes of `prefix` tokens from the Brown corpus's held-out split and `model`'s greedy
    baseline of `completion` tokens, written in `tmp`: (probes path, baseline path, baseline's output)."""
    text = os.path.join(tmp, "held-out.txt")
    run("brown-text", "--corpus", brown_dir, "--split", "held-out", "--out", text)
    probes = os.path.join(tmp, "probes.jsonl")
    run("make-probes", "--model", model, "--corpus", text, "--count", str(count), "--prefix", str(prefix), "--out",
        probes)
    baseline = os.path.join(tmp, "baseline.jsonl")
    summary = run_json("baseline", "--model", model, "--probes", probes, "--completion", str(completion), "--out",
                       baseline)
    return probes, baseline, summary


def expect_one_error(test, args, *needles):
    """dtmctl ARGS fails with one error line on stderr that contains every needle."""
    proc = run(*args, check=False)
    test.assertNotEqual(proc.returncode, 0, f"dtmctl {args} succeeded")
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    test.assertEqual(len(lines), 1, proc.stderr)
    for needle in needles:
        test.assertIn(needle, lines[0])


def expect_same_eval(test, ours, theirs, original, probes):
    """Two `dtmctl eval` outputs give exactly the same numbers per probe and in aggregate (same weights,
    same forward), over `probes` probes, and differ from `original`'s (the config did something)."""
    test.assertEqual(len(ours["per_probe"]), probes)
    test.assertEqual(ours["per_probe"], theirs["per_probe"])
    for key in ("fdt75", "fdt_mean", "sdt_mean", "dppl", "nll_mean", "fdt_histogram"):
        test.assertEqual(ours[key], theirs[key], key)
    test.assertNotEqual([p["nll"] for p in ours["per_probe"]], [p["nll"] for p in original["per_probe"]])
