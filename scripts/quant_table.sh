#!/usr/bin/env bash
# What each quantization format costs on a model: size, accuracy and CPU decode speed, as the
# markdown table of docs/QUANTIZATION.md. For each format it runs
#   ao quantize MODEL OUT/FORMAT --config FORMAT --json
#   ao perplexity -m OUT/FORMAT -f TEXT --protocol paragraphs --kl-base OUT/fp32.lp --json
#   ao bench -m OUT/FORMAT -p 0 -n 256 -r 5 --json          (decode: best of the 5 runs)
# after one fp32 run that saves the base log-probs (--save-logits). The table goes to stdout
# (also OUT/table.md), progress to stderr; the quantized folders stay in OUT/FORMAT and one
# JSON line per row goes to OUT/results.jsonl (format, dir, config, bits_per_weight, file_bytes,
# ppl, delta_ppl, kl, top1, decode_tok_s), e.g. to pick the best 4-bit format:
#   jq -rs 'map(select(.format | test("int4"))) | min_by(.ppl) | .dir' OUT/results.jsonl
#
#   scripts/quant_table.sh [--model PATH] [--text FILE] [--out DIR] [--formats "int8wo int4wo-g32 ..."]
#                          [--ao BINARY] [--threads N] [--decode-tokens N]
#
# Defaults: stories260K and TinyStories valid_a from ../shared/data, OUT = build/quant_table,
# one thread (per-core numbers, less sensitive to a shared machine's load). A format that
# fails prints a row saying so; the script then exits non-zero after the table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$root/../shared/data/models/stories260K/stories260K.bin"
text="$root/../shared/data/text/tinystories_valid_a.txt"
out="$root/build/quant_table"
ao="$root/build/ao"
threads=1
decode_tokens=256
formats="int8wo int8dq int4wo-g32 int4wo-g128 int4wo-g32-tp int4wo-g32-hqq int4wo-g128-tp int4wo-g128-hqq intx4wo-g32 intx2wo-g32-asym 8da4w fp8wo fp8dq-row fp8dq-tensor mxfp8 mxfp6 mxfp4 nvfp4 nvfp4wo"

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --text) text="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --formats) formats="$2"; shift 2 ;;
    --ao) ao="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --decode-tokens) decode_tokens="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "quant_table.sh: unknown option '$1'" >&2; usage ;;
  esac
done
for f in "$ao" "$model" "$text"; do
  [[ -e "$f" ]] || { echo "quant_table.sh: $f not found" >&2; exit 1; }
done
[[ "$threads" =~ ^[0-9]+$ && "$decode_tokens" =~ ^[1-9][0-9]*$ ]] ||
  { echo "quant_table.sh: --threads and --decode-tokens take numbers" >&2; exit 1; }
command -v jq >/dev/null || { echo "quant_table.sh: needs jq" >&2; exit 1; }
mkdir -p "$out"
export OMP_WAIT_POLICY=passive  # shared machines: no busy-waiting OpenMP workers

aot=("$ao")
[[ "$threads" -gt 0 ]] && aot=("$ao" -t "$threads")
log="$out/log.txt"
: >"$log"
step() { echo "quant_table.sh: $*" >&2; }
load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
load_start=$(load)
t_start=$SECONDS

# Prints tg tok/s of MODEL: the best of 5 runs after a warm-up (shared machines are noisy).
decode_speed() {
  "${aot[@]}" bench -m "$1" -p 0 -n "$decode_tokens" -r 5 --json 2>>"$log" | jq -r '.[0].samples_ts | max'
}

step "fp32 base run ($model)"
base_json=$("${aot[@]}" perplexity -m "$model" -f "$text" --protocol paragraphs \
  --save-logits "$out/fp32.lp" --json 2>>"$log") && base_tps=$(decode_speed "$model") ||
  { echo "quant_table.sh: the fp32 run failed:" >&2; tail -3 "$log" >&2; exit 1; }
base_ppl=$(jq -r .ppl <<<"$base_json")
base_bytes=$(stat -c %s "$model")

rows=()
jq -nc --arg dir "$model" --argjson e "$base_json" --argjson tps "$base_tps" --argjson bytes "$base_bytes" \
  '{format: "fp32", dir: $dir, config: null, bits_per_weight: 32, file_bytes: $bytes, ppl: $e.ppl,
    delta_ppl: 0, kl: 0, top1: 1, decode_tok_s: $tps}' >"$out/results.jsonl"
rows+=("$(printf '| fp32 | (none) | 32.00 | %.1f KiB | %.4f | 0 | 0 | 100 %% | %.0f |' \
  "$(jq -n "$base_bytes / 1024")" "$base_ppl" "$base_tps")")
failed=0
for c in $formats; do
  step "$c"
  dir="$out/$c"
  if ! q=$("${aot[@]}" quantize "$model" "$dir" --config "$c" --force --json 2>"$out/err.txt"); then
    cat "$out/err.txt" >>"$log"
    rows+=("| $c | failed: $(grep -m1 'error' "$out/err.txt" | cut -c1-100 | tr '|' '/') (see $log) | | | | | | | |")
    failed=1
    continue
  fi
  if ! e=$("${aot[@]}" perplexity -m "$dir" -f "$text" --protocol paragraphs \
    --kl-base "$out/fp32.lp" --json 2>>"$log") || ! tps=$(decode_speed "$dir"); then
    rows+=("| $c | failed: ao perplexity or ao bench (see $log) | | | | | | | |")
    failed=1
    continue
  fi
  cat "$out/err.txt" >>"$log"
  file_bytes=$(du -b --apparent-size -c "$dir"/*.safetensors | tail -1 | cut -f1)
  jq -nc --arg f "$c" --arg dir "$dir" --argjson q "$q" --argjson e "$e" --argjson tps "$tps" \
    --argjson bytes "$file_bytes" '{format: $f, dir: $dir, config: $q.config,
      bits_per_weight: $q.bits_per_quantized_weight, file_bytes: $bytes, ppl: $e.ppl,
      delta_ppl: $e.kl.delta_ppl, kl: $e.kl.mean_kl, top1: $e.kl.top1_agreement,
      decode_tok_s: $tps}' >>"$out/results.jsonl"
  rows+=("$(printf '| %s | `%s` | %.2f | %.1f KiB | %.4f | %+.4f | %.5f | %.2f %% | %.0f |' "$c" \
    "$(jq -r .config <<<"$q")" "$(jq -r .bits_per_quantized_weight <<<"$q")" \
    "$(jq -n "$file_bytes / 1024")" "$(jq -r .ppl <<<"$e")" "$(jq -r .kl.delta_ppl <<<"$e")" \
    "$(jq -r .kl.mean_kl <<<"$e")" "$(jq -r '.kl.top1_agreement * 100' <<<"$e")" "$tps")")
done

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || echo "unknown CPU")
{
  echo "| format | TorchAO config | bits/weight (Linear) | weights file | PPL | ΔPPL | KL vs fp32 | top-1 agreement | decode tok/s |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$(basename "$model"), $(basename "$text") (ao perplexity --protocol paragraphs: first 100000 characters," \
    "$(jq -r .tokens <<<"$base_json") tokens scored in windows of 255 after BOS); decode = ao bench tg$decode_tokens," \
    "best of 5 runs, $([[ $threads -gt 0 ]] && echo "$threads thread(s)" || echo "all threads");" \
    "$cpu, $(nproc) CPUs, load average $load_start at start and $(load) at the end; $((SECONDS - t_start)) s."
} | tee "$out/table.md"
rm -f "$out/err.txt"
exit "$failed"
