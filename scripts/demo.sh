#!/usr/bin/env bash
# The main job on the default model (stories260K from ../shared/data, or $AO_MODEL with a text
# in $AO_TEXT): set up and build, then quantize the model into several TorchAO formats, print
# what each costs (size, perplexity, KL divergence vs fp32, CPU decode speed) and generate a
# sample with the most accurate 4-bit format.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh >/dev/null
# The CUDA backend is built only where a GPU is visible (compiling it takes minutes on 2 cores).
cuda=OFF; nvidia-smi -L >/dev/null 2>&1 && cuda=ON
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAO_CUDA=$cuda >/dev/null
cmake --build build -j"$(nproc)" --target ao
model=${AO_MODEL:-../shared/data/models/stories260K/stories260K.bin}
text=${AO_TEXT:-../shared/data/text/tinystories_valid_a.txt}
out=build/demo
formats=${AO_FORMATS:-"int8wo int8dq int4wo-g32 int4wo-g128 8da4w fp8dq-row mxfp8 mxfp4 nvfp4"}

echo "== the model"
./build/ao info --no-tensors "$model"
echo
echo "== what each format costs (scripts/quant_table.sh)"
bash scripts/quant_table.sh --model "$model" --text "$text" --out "$out" --formats "$formats"
best=$(jq -rs 'map(select(.format != "fp32" and .bits_per_weight != null and .bits_per_weight < 6.5))
               | min_by(.kl) | .dir' "$out/results.jsonl")
echo
echo "== a sample from the most accurate 4-bit format: $best"
./build/ao generate -m "$best" -p "Once upon a time" -n 120 --temp 0.7 --seed 42
