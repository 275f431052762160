#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a short time on the
# malformed-file corpus. Usage: scripts/fuzz.sh [seconds per target, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAO_CUDA=OFF \
  -DAO_FUZZ=ON -DAO_BUILD_TESTS=OFF -DAO_BUILD_BENCH=OFF -DAO_SANITIZE=ON >/dev/null
targets=$(ls fuzz/*.cpp | xargs -n1 basename | sed 's/\.cpp$//')
ninja -C build-fuzz $targets
for t in $targets; do
  corpus=build-fuzz/corpus-$t
  mkdir -p "$corpus"
  cp tests/fixtures/malformed/* "$corpus"/ 2>/dev/null || true
  [ -f ../shared/data/models/stories260K/stories260K.bin ] && [ "$t" = fuzz_llama2c ] && \
    cp ../shared/data/models/stories260K/stories260K.bin "$corpus"/
  if [ "$t" = fuzz_gguf ]; then
    for g in ../shared/data/tokenizers/llamacpp-vocab/*.gguf; do [ -f "$g" ] && head -c 65536 "$g" > "$corpus/$(basename "$g")"; done
  fi
  echo "== $t: ${secs}s"
  ./build-fuzz/$t -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 "$corpus" 2>&1 | tail -3
done
