#!/usr/bin/env bash
# Builds and runs the C/C++ test harness (tests/c) through CTest, under AddressSanitizer +
# UndefinedBehaviorSanitizer (LeakSanitizer included):
#   accelerator_test, log_callback_test, misuse_test, ops_test (JIT-built ops, cpu_adam),
#   optim_test, optim_test_avx2, optim_test_scalar (the optimizer steps through the C ABI,
#   with the ops built at the machine's SIMD level, AVX2 and scalar),
#   quantizer_test, quantizer_test_avx2, quantizer_test_scalar (dsrs_quantize and
#   dsrs_dequantize against a C reference written from docs/quantizer.md),
#   engine_test, engine_cpp_test (the training engine through the C ABI and the C++
#   wrapper, against double-precision references), train_mlp_dataset_hash and
#   train_mlp_fp32/_bf16/_fp16 (the demo host trained to its accuracy threshold),
#   cpp_wrapper_test, static_link_test,
#   plugin_test and plugin_cpp_test (accelerator plugins: the example plugin
#   examples/plugin_hostmem and broken variants, built here with the same sanitizers),
#   plugin_env_detect, plugin_env_override_cpu, plugin_env_override_hostmem,
#   plugin_env_failinit_first, plugin_env_unavailable (DSRS_ACCELERATOR_PLUGINS,
#   DSRS_ACCELERATOR and the report, one fresh process each),
#   the header compile tests (C99, C11, C++17, double include, the C++ wrapper) and the
#   CLI test.
#
#   scripts/test-c.sh [ARTIFACT_DIR]
#
# ARTIFACT_DIR (default target/debug) holds what `cargo build` produced: libdeepspeed_rs.so,
# libdeepspeed_rs.a and the dsrs CLI. The build directory is build/c-tests. Works on a fresh
# machine: cmake is installed with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

artifacts=${1:-target/debug}
build_dir=build/c-tests
jobs=2

# cmake installed with apt-get when missing.
source "$(dirname "$0")/common.sh"

# The artifacts must exist; the CLI is optional (its test is skipped without it).
for f in libdeepspeed_rs.so libdeepspeed_rs.a; do
  if [ ! -f "$artifacts/$f" ]; then
    echo "test-c.sh: $artifacts/$f is missing; run \`cargo build\` first (or pass the directory" \
         "that holds it, e.g. target/release)" >&2
    exit 1
  fi
done
artifacts=$(cd "$artifacts" && pwd)
cli="$artifacts/dsrs"
if [ ! -x "$cli" ]; then
  echo "test-c.sh: warning: $cli not found; the CLI test will be skipped"
  cli=""
fi

ensure_commands cmake
echo "test-c.sh: $(cmake --version | head -n1); artifacts from $artifacts"

# Does LeakSanitizer work here? It needs ptrace, which some containers forbid; then the
# tests still run under ASan + UBSan, and this says so.
detect_leaks=ON
probe_dir=$(mktemp -d)
printf 'int main(void) { return 0; }\n' >"$probe_dir/p.c"
if ${CC:-cc} -fsanitize=address -o "$probe_dir/p" "$probe_dir/p.c" 2>/dev/null; then
  if ! ASAN_OPTIONS=detect_leaks=1 "$probe_dir/p" >"$probe_dir/out" 2>&1; then
    echo "test-c.sh: WARNING: LeakSanitizer does not work on this machine; running without" \
         "leak detection: $(head -n 2 "$probe_dir/out" | tr '\n' ' ')"
    detect_leaks=OFF
  fi
fi
rm -rf "$probe_dir"

cmake -S . -B "$build_dir" \
  -DDSRS_PREBUILT_DIR="$artifacts" \
  -DDSRS_BUILD_TESTS=ON \
  -DDSRS_SANITIZE=ON \
  -DDSRS_DETECT_LEAKS="$detect_leaks" \
  -DDSRS_CLI="$cli"
cmake --build "$build_dir" --parallel "$jobs"

# The tests pick their accelerator by detection; an inherited override, plugin list or
# plugin switch would change that (the plugin tests set their own).
unset DSRS_ACCELERATOR DSRS_ACCELERATOR_PLUGINS HOSTMEM_UNAVAILABLE DSRS_LOG
cd "$build_dir"
ctest --output-on-failure --parallel "$jobs"
