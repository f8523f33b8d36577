#!/usr/bin/env bash
# Provides NVRTC on a machine without the CUDA toolkit (CI has no GPU and no CUDA): installs
# NVIDIA's NVRTC wheel from PyPI into .venv-nvrtc (once) and prints the path of its
# libnvrtc.so.*, for DSRS_NVRTC_LIB. No GPU, nvcc or driver is needed to compile kernels.
#
#   export DSRS_NVRTC_LIB="$(scripts/ensure-nvrtc.sh)"
#
# The version is pinned so the kernels are checked against a known compiler.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-nvrtc"
pkg="nvidia-cuda-nvrtc-cu12==12.9.86"
find_lib() { find "$venv" -path '*nvidia/cuda_nvrtc/lib/libnvrtc.so.1*' -name 'libnvrtc.so.[0-9]*' 2>/dev/null | sort | head -n 1; }
lib="$(find_lib || true)"
if [[ -z "$lib" ]]; then
    echo "ensure-nvrtc.sh: installing $pkg into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "$pkg" >&2
    lib="$(find_lib)"
fi
[[ -n "$lib" && -f "$lib" ]] || { echo "ensure-nvrtc.sh: libnvrtc not found after installing $pkg" >&2; exit 1; }
echo "$lib"
