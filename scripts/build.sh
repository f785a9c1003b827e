#!/usr/bin/env bash
# Configures and builds dtm into BUILD_DIR (default build/): every target, or only the targets named
# (`scripts/build.sh dtmctl`: what the demo runs, without the tests). ccache serves repeated
# compiles when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # Sources compiled with a precompiled header (cmake/DtmPrecompiledHeaders.cmake) are cached only
  # with these (ccache's manual, "Precompiled headers").
  export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
fi
# Release at -O2 (the optimization the tests and figures were always built with; CMake's Release
# would be -O3) and without debug information, which with precompiled headers costs about as much
# compile time again in every libtorch source, and link time. BUILD_TYPE=RelWithDebInfo (or Debug)
# for a build to debug.
build_type=${BUILD_TYPE:-Release}
flags=()
[ "$build_type" = Release ] && flags=(-DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG")
# Ninja for a new build folder: it starts a library's sources while the libraries it links are still
# compiling, where Make waits for each target's dependencies first. A folder configured before keeps
# its generator (CMake refuses to switch one).
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE="$build_type" "${flags[@]}" "${launcher[@]}" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" -j "$jobs" "${targets[@]}"
