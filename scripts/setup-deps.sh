#!/usr/bin/env bash
# Installs the Debian packages ao.cpp builds against, and fetches CUTLASS's headers (NVIDIA's
# nvidia-cutlass wheel from PyPI, checked against its SHA-256, unpacked into the git-ignored
# .deps/cutlass) for the CUDA build's quantized prefill GEMMs. Nothing is vendored or downloaded at
# build time. Safe to re-run; uses sudo when not root.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config python3 python3-pip
      nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev googletest libbenchmark-dev
      libsentencepiece-dev libpcre2-dev libicu-dev libopenblas-dev clang libclang-rt-dev jq)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# CUTLASS (headers only). Without them the CUDA build still works: quantized prefill then takes the
# dequantize + cuBLAS path (docs/CUDA.md lab notes 96, 98), so a failed download is only a warning.
root=$(cd "$(dirname "$0")/.." && pwd)
cutlass_ver=4.2.0.0
cutlass_sha=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6
dest="$root/.deps/cutlass"
if [ "$(cat "$dest/VERSION" 2>/dev/null)" != "$cutlass_ver" ] || [ ! -f "$dest/include/cutlass/cutlass.h" ]; then
  tmp=$(mktemp -d)
  if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cutlass==$cutlass_ver" &&
     echo "$cutlass_sha  $(ls "$tmp"/nvidia_cutlass-*.whl)" | sha256sum -c --quiet; then
    rm -rf "$dest" && mkdir -p "$dest"
    python3 - "$tmp"/nvidia_cutlass-*.whl "$dest" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, "include", name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
    echo "$cutlass_ver" > "$dest/VERSION"
    echo "CUTLASS $cutlass_ver headers in .deps/cutlass"
  else
    echo "warning: could not fetch CUTLASS $cutlass_ver (quantized prefill will dequantize + cuBLAS)" >&2
  fi
  rm -rf "$tmp"
fi
echo "dependencies ready"
