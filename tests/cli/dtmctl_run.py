"""Runs dtmctl (the binary named by $DTMCTL) for the CLI tests: `run` returns the finished process and,
with check, fails the test on a non-zero exit naming the command and its stderr; `run_json` parses
stdout."""
import json
import os
import subprocess

DTMCTL = os.environ["DTMCTL"]


def run(*args, check=True):
    proc = subprocess.run([DTMCTL, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dtmctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def run_json(*args):
    return json.loads(run(*args).stdout)
