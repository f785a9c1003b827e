"""Runs dtmctl (the binary named by $DTMCTL) for the CLI tests: `run` returns the finished process and,
with check, fails the test on a non-zero exit naming the command and its stderr; `run_json` parses
stdout."""
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
