#!/usr/bin/env bash
# Regenerates the accuracy / size / speed table of docs/QUANTIZATION.md on stories260K:
# quantizes the model into each format with `ao quantize`, then measures perplexity on
# TinyStories (valid_a, first 100000 characters), KL divergence of next-token distributions
# against the fp32 model, and single-thread CPU decode speed with `ao qeval`.
#
#   scripts/quant_table.sh [AO_BINARY] [WORK_DIR]     (prints the markdown table)
#
# Environment: MODEL (default ../shared/data/models/stories260K/stories260K.bin),
# TEXT (default ../shared/data/text/tinystories_valid_a.txt), CONFIGS (space-separated),
# THREADS (default 1: the numbers are per core and do not depend on machine load).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ao="${1:-$root/build/ao}"
work="${2:-$(mktemp -d)}"
model="${MODEL:-$root/../shared/data/models/stories260K/stories260K.bin}"
text="${TEXT:-$root/../shared/data/text/tinystories_valid_a.txt}"
threads="${THREADS:-1}"
configs="${CONFIGS:-int8wo int8dq int4wo-g32 int4wo-g64 int4wo-g128 intx4wo-g32 intx2wo-g32-asym 8da4w fp8wo fp8dq-row fp8dq-tensor mxfp8 mxfp6 mxfp4 nvfp4 nvfp4wo}"
for f in "$ao" "$model" "$text"; do [[ -e "$f" ]] || { echo "quant_table.sh: $f not found" >&2; exit 1; }; done
command -v jq >/dev/null || { echo "quant_table.sh: needs jq" >&2; exit 1; }

base=$("$ao" qeval "$model" --text "$text" --json -t "$threads" 2>/dev/null)
base_ppl=$(jq -r .ppl <<<"$base")
echo "| format | TorchAO config | bits/weight (Linear) | file size | PPL | ΔPPL | KL vs fp32 | decode tok/s (1 thread) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
printf '| fp32 | (none) | 32.00 | %.1f KiB | %.4f | 0 | 0 | %.0f |\n' \
  "$(jq -r '.file_bytes / 1024' <<<"$base")" "$base_ppl" "$(jq -r .decode_tok_s <<<"$base")"
for c in $configs; do
  q=$("$ao" quantize "$model" "$work/$c" --config "$c" --force --json 2>/dev/null)
  e=$("$ao" qeval "$work/$c" --text "$text" --base "$model" --json -t "$threads" 2>/dev/null)
  printf '| %s | `%s` | %.2f | %.1f KiB | %.4f | %+.4f | %.5f | %.0f |\n' "$c" "$(jq -r .config <<<"$q")" \
    "$(jq -r .bits_per_quantized_weight <<<"$q")" "$(jq -r '.file_bytes / 1024' <<<"$q")" "$(jq -r .ppl <<<"$e")" \
    "$(jq -r --argjson b "$base_ppl" '.ppl - $b' <<<"$e")" "$(jq -r .kl <<<"$e")" "$(jq -r .decode_tok_s <<<"$e")"
done
