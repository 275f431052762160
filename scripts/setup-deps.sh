#!/usr/bin/env bash
# Installs the Debian packages ao.cpp builds against (nothing is vendored or downloaded at
# build time). Safe to re-run; uses sudo when not root.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config python3
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
echo "dependencies ready"
