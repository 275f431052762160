#!/usr/bin/env bash
# The main job on the default model (stories260K from ../shared/data, or $AO_MODEL):
# set up, build, then show what ao does with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh >/dev/null
# The CUDA backend is built only where a GPU is visible (compiling it takes minutes on 2 cores).
cuda=OFF; nvidia-smi -L >/dev/null 2>&1 && cuda=ON
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAO_CUDA=$cuda >/dev/null
cmake --build build -j"$(nproc)" --target ao
model=${AO_MODEL:-../shared/data/models/stories260K/stories260K.bin}
./build/ao info --no-tensors "$model"
