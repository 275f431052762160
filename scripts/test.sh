#!/usr/bin/env bash
# Sets up, builds and runs every test: the Release build (with CUDA compiled in when nvcc is
# present; GPU tests skip without a GPU), the ASan+UBSan build of the suite, and a short
# fuzzing smoke run. Usage: scripts/test.sh [--quick]   (--quick: Release tests only)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
jobs=$(nproc)
cuda=OFF; command -v nvcc >/dev/null 2>&1 && cuda=ON
[ -x /usr/local/cuda/bin/nvcc ] && cuda=ON && export PATH=/usr/local/cuda/bin:$PATH

echo "== Release build (CUDA=$cuda)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAO_CUDA=$cuda >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)
[ "${1:-}" = "--quick" ] && exit 0

echo "== ASan+UBSan build"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAO_CUDA=OFF -DAO_SANITIZE=ON \
  -DAO_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs" --target ao ao_tests
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs" --timeout 900)

echo "== fuzz smoke run"
bash scripts/fuzz.sh "${AO_FUZZ_SECONDS:-20}"
