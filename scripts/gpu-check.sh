#!/bin/bash
# Build, test and benchmark the CUDA backend on the GPU machine in one go (run from the project
# root, with .gpu/ from ../shared/scripts/gpu-prep.sh beside it). Logs and JSON go to $OUT (or
# ./out). Stages: STAGES="build test bench peer" (default), "ncu" (stall reasons of the decode
# GEMVs), "trace" (a timeline of decode steps from the kernels' own clocks, docs/CUDA.md lab
# note 19), "ab" (tuning variants alternated on one engine: bench_cuda_decode --ab), "full";
# BENCH_ARGS, PEER_VARIANTS, PEER_ARGS (e.g. "--pp 512": the peer's prefill too), NCU_FORMATS,
# TRACE_ARGS, AB_VARIANTS, AB_ARGS tune them.
# BENCH_BIN picks the benchmark binary (default: the lab's; build-gpu/bench_cuda_decode after
# stage "full"). Stage "full" builds the whole project with CUDA (build-gpu), runs its Cuda* tests (incl. the
# CLI / TorchAO-checkpoint ones), `ao generate --device cuda` on stories260K (plain and an int4
# TorchAO checkpoint) and `ao bench --device cuda` (real model and synthetic llama3-8b); it
# needs ICU in .gpu/ as well (`../shared/scripts/gpu-prep.sh libicu-dev libicu72`), and the
# shared data's text/ and tokenizers/ beside models/ (`cp -r ../shared/data/{text,tokenizers}
# .gpu/shared/data/`), else the tests that read them fail.
# Builds the stand-alone CUDA lab project (bench/kernels/CMakeLists.txt), which needs only CUDA,
# fmt, nlohmann-json and GoogleTest: build-lab with the product's kernels (-DAO_LAB_INSTRUMENTED=OFF)
# for the tests and every timing, and, for stage "trace" only, build-lab-trace with the trace
# points and lab switches (its kernels measured ~3% slower: docs/CUDA.md lab note 58).
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STAGES=${STAGES:-"build test bench peer"}
BENCH_ARGS=${BENCH_ARGS:-"--models llama3-8b,llama3-1b --formats bf16,int8wo,int4wo-g128,fp8-row --pp 512 --tg 128"}
PEER_VARIANTS=${PEER_VARIANTS:-"llama3-8b:eager:bf16,llama3-8b:compile:bf16,llama3-8b:compile:int8,llama3-8b:compile:int4,llama3-1b:compile:bf16,llama3-1b:compile:int4"}
has() { [[ " $STAGES " == *" $1 "* ]]; }
t0=$(date +%s)
stamp() { echo "[gpu-check +$(( $(date +%s) - t0 ))s] $*"; }

[ -f .gpu/gpu-env.sh ] && . .gpu/gpu-env.sh
# CUTLASS's headers travel packed (`tar -C .deps -cJf .gpu/cutlass.tar.xz cutlass` after
# scripts/setup-deps.sh: 1 MB instead of 27); without them quantized prefill dequantizes for cuBLAS.
if [ -f .gpu/cutlass.tar.xz ] && [ ! -f .deps/cutlass/include/cutlass/cutlass.h ]; then
  mkdir -p .deps && tar -C .deps -xJf .gpu/cutlass.tar.xz
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee "$OUT/card.txt"
nvcc --version | tail -1

if has build; then
  stamp "configure + build (Release, sm_90a)"
  cmake -S bench/kernels -B build-lab -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_ARCHITECTURES=90a -DAO_LAB_INSTRUMENTED=OFF > "$OUT/build.log" 2>&1 &&
    cmake --build build-lab -j"$(nproc)" >> "$OUT/build.log" 2>&1
  rc=$?
  tail -5 "$OUT/build.log"
  [ $rc -eq 0 ] || { grep -E "error" "$OUT/build.log" | head -30; stamp "BUILD FAILED"; exit 1; }
fi

if has test; then
  stamp "tests"
  timeout 150 ./build-lab/ao_cuda_tests --gtest_brief=1 2>&1 | tee "$OUT/tests.log" | grep -vE "^\[ +(OK|RUN) " | tail -60
fi

if has bench; then
  stamp "bench (ours)"
  timeout ${BENCH_TIMEOUT:-180} ${BENCH_BIN:-./build-lab/bench_cuda_decode} $BENCH_ARGS --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
fi

if has peer; then
  stamp "peer (PyTorch)"
  PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-330} python3 bench/peers/gpt_fast_decode.py \
      --variants "$PEER_VARIANTS" $PEER_ARGS --json "$OUT/peer.json" 2>&1 | grep -v Warning | tee "$OUT/peer.log" | tail -20
fi
if has ncu; then
  # Stall reasons of the batch-1 decode GEMVs (NCU_FORMATS, default int8wo,int4wo-g128): per
  # kernel time, DRAM throughput, issue rate, eligible/active warps and every stall reason per
  # issued instruction (the method of docs/CUDA.md lab notes 12 and 16).
  stamp "ncu (decode GEMVs, batch 1)"
  timeout ${NCU_TIMEOUT:-200} ncu --clock-control none -k regex:gemv --launch-count ${NCU_COUNT:-20} \
      --metrics "gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.per_cycle_active,smsp__warps_eligible.avg.per_cycle_active,smsp__warps_active.avg.per_cycle_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
      ${BENCH_BIN:-./build-lab/bench_cuda_decode} --models none --kernels --kernel-m1 --kernel-reps 1 \
      --formats ${NCU_FORMATS:-int8wo,int4wo-g128} > "$OUT/ncu.txt" 2>&1
  tail -3 "$OUT/ncu.txt"
fi
if has ab; then
  # Tuning variants A/B on one engine per model and format, alternated in each round
  # (bench_cuda_decode --ab; docs/CUDA.md session 9 lab notes). AB_VARIANTS, AB_ARGS tune it.
  stamp "A/B of tuning variants (${AB_VARIANTS:-base,attn-late,latenorm})"
  timeout ${AB_TIMEOUT:-200} ${BENCH_BIN:-./build-lab/bench_cuda_decode} \
      ${AB_ARGS:-"--models llama3-8b --formats int8wo,bf16,int4wo-g128 --tg 128 --reps 3"} \
      --ab "${AB_VARIANTS:-base,attn-late,latenorm}" 2>&1 | grep "^|" | tee "$OUT/ab.md"
fi
if has trace; then
  stamp "trace build (build-lab-trace: trace points and lab switches)"
  cmake -S bench/kernels -B build-lab-trace -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_ARCHITECTURES=90a -DAO_LAB_INSTRUMENTED=ON > "$OUT/build-trace.log" 2>&1 &&
    cmake --build build-lab-trace -j"$(nproc)" --target bench_cuda_decode >> "$OUT/build-trace.log" 2>&1 ||
    { tail -20 "$OUT/build-trace.log"; stamp "TRACE BUILD FAILED"; exit 1; }
  stamp "trace (decode-step timeline at position ${TRACE_POS:-64})"
  timeout ${TRACE_TIMEOUT:-120} ./build-lab-trace/bench_cuda_decode --trace ${TRACE_POS:-64} \
      ${TRACE_ARGS:-"--models llama3-8b --formats int4wo-g128,int8wo,bf16"} 2>&1 |
    grep -v "^device\|^d2d\|^cuBLAS" | tee "$OUT/trace.md"
fi
if has full; then
  stamp "full project build with CUDA"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DAO_BUILD_BENCH=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/full.log" 2>&1 &&
    cmake --build build-gpu -j"$(nproc)" >> "$OUT/full.log" 2>&1
  rc=$?
  tail -3 "$OUT/full.log"
  if [ $rc -eq 0 ]; then
    stamp "all tests (ctest: CPU and CUDA)"
    (cd build-gpu && OMP_WAIT_POLICY=passive timeout 300 ctest -j"$(nproc)" --timeout 200 --output-on-failure 2>&1) |
      tee "$OUT/full-tests.log" | grep -vE "^ +Start |Passed" | tail -30
    S260=${AO_SHARED:-../shared}/data/models/stories260K/stories260K.bin
    [ -f "$S260" ] || S260=.gpu/shared/data/models/stories260K/stories260K.bin
    stamp "ao generate --device cuda (stories260K, bf16 greedy; then a TorchAO int4 checkpoint)"
    timeout 60 ./build-gpu/ao generate --device cuda -m "$S260" --temp 0 -n 48 2>&1 | tail -8
    timeout 60 ./build-gpu/ao quantize "$S260" "$OUT/s260-int4" --config int4wo-g32 --force \
      > "$OUT/quantize.log" 2>&1 &&
      timeout 60 ./build-gpu/ao generate --device cuda -m "$OUT/s260-int4" --temp 0 -n 48 2>&1 | tail -10
    rm -rf "$OUT/s260-int4"
    timeout 60 ./build-gpu/ao bench --device cuda -m "$S260" -p 128 -n 64 -r 2 2>&1 | tail -6
    timeout 120 ./build-gpu/ao bench --device cuda --synthetic llama3-8b --format int4wo-g128 2>&1 | tail -6
  else
    grep -E "error" "$OUT/full.log" | head -20
  fi
fi
stamp "done"
