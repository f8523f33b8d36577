#!/usr/bin/env bash
# Every SIMD path of the CPU kernels (cpu_adam, cpu_adagrad, cpu_lion, the quantizer) must
# give the same bits (docs/optimizers.md). This builds tests/cross/kernel_digest.cpp with the
# kernel sources once per SIMD level — on x86-64: AVX-512 (when the CPU has it), AVX2 and
# scalar natively, and NEON with the aarch64 cross compiler, run under qemu-aarch64 — and
# fails unless every build prints the same digests. It is the only test of the NEON path
# (CI machines are x86-64). On an aarch64 machine: NEON and scalar, natively.
#
# Works on a fresh Debian/Ubuntu machine: g++-aarch64-linux-gnu and qemu-user are
# installed with apt-get when missing (x86-64 only).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

out="target/cross"
mkdir -p "$out"
srcs=(tests/cross/kernel_digest.cpp kernels/cpu/cpu_adam.cpp kernels/cpu/cpu_adagrad.cpp
      kernels/cpu/cpu_lion.cpp kernels/cpu/quantizer.cpp)
flags=(-std=c++17 -O2 -fopenmp -Wall -Wextra -Werror -Ikernels/include)
cxx="${CXX:-c++}"
levels=()

build_native() { # LEVEL
  "$cxx" "${flags[@]}" -march=native "-DDSRS_SIMD_$1" "${srcs[@]}" -o "$out/digest-$1"
  "$out/digest-$1" > "$out/$1.txt"
  levels+=("$1")
}

case "$(uname -m)" in
  x86_64)
    if grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
      build_native AVX512
    else
      echo "test-cross.sh: this CPU has no AVX-512; that level is not checked here"
    fi
    grep -qw avx2 /proc/cpuinfo && grep -qw f16c /proc/cpuinfo && build_native AVX2
    build_native SCALAR
    ensure_command_from aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
    ensure_command_from qemu-aarch64 qemu-user
    aarch64-linux-gnu-g++ "${flags[@]}" -static -DDSRS_SIMD_NEON "${srcs[@]}" \
      -o "$out/digest-NEON" 2> "$out/neon-link.log" || { cat "$out/neon-link.log" >&2; exit 1; }
    qemu-aarch64 "$out/digest-NEON" > "$out/NEON.txt"
    levels+=(NEON)
    ;;
  aarch64)
    build_native NEON
    build_native SCALAR
    ;;
  *)
    echo "test-cross.sh: no SIMD paths to compare on $(uname -m)"; exit 0 ;;
esac

first="${levels[0]}"
cases=$(wc -l < "$out/$first.txt")
for l in "${levels[@]:1}"; do
  if ! diff -u "$out/$first.txt" "$out/$l.txt" > "$out/$first-vs-$l.diff"; then
    echo "test-cross.sh: the $l build differs from the $first build:" >&2
    head -20 "$out/$first-vs-$l.diff" >&2
    exit 1
  fi
done
echo "test-cross.sh: ${levels[*]}: identical digests in all $cases cases"
