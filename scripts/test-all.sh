#!/usr/bin/env bash
# Runs every test of deepspeed_rs. Works on a fresh machine: the steps that need cmake or
# numpy/pytest install them first (cmake through apt-get, Python packages into .venv).
#
#   1. Rust: unit, integration (CLI, threads, header regeneration check, the op JIT and
#      cache, every .cu kernel through NVRTC — installed from PyPI into .venv-nvrtc, no GPU
#      or CUDA toolkit needed), doc tests; then the ops compiled in ahead of time
#      (DSRS_BUILD_OPS=1, a second build in target/aot)
#   2. C harness through CTest under AddressSanitizer + UndefinedBehaviorSanitizer: happy
#      paths, the misuse suite, log callbacks, header compile tests (C99/C11/C++17, double
#      include), the C++ wrapper, the training engine and its demo host, the CLI
#   3. The CMake package: install, then a separate project with find_package (shared and
#      static), with the build tree removed
#   4. Python binding: pip install ./bindings/python, pytest
#   5. Every SIMD path of the CPU kernels gives the same bits: AVX-512, AVX2, scalar and NEON
#      (cross-compiled, run under qemu-aarch64; g++-aarch64-linux-gnu and qemu-user through
#      apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s ====\n' "$*"; }

step "Rust: build and test"
# NVRTC for the CUDA kernels' compile checks; a missing NVRTC then fails instead of skipping.
DSRS_NVRTC_LIB="${DSRS_NVRTC_LIB:-$(scripts/ensure-nvrtc.sh)}"
export DSRS_NVRTC_LIB DSRS_REQUIRE_NVRTC=1
cargo build --lib --bins
cargo test

step "Ops compiled into the library (DSRS_BUILD_OPS=1)"
DSRS_BUILD_OPS=1 cargo test --target-dir target/aot --test ops -- prebuilt cpu_adam

step "C harness (CTest, ASan + UBSan)"
scripts/test-c.sh target/debug

step "CMake package and find_package consumer"
scripts/test-cmake-package.sh target/debug

step "Python binding (pytest)"
scripts/test-python.sh target/debug

step "CPU kernels: every SIMD path, NEON under qemu"
scripts/test-cross.sh

step "all tests passed"
