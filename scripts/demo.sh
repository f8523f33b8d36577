#!/usr/bin/env bash
# Builds deepspeed_rs (release) and runs the C demo host on the default accelerator.
#   ./scripts/demo.sh            (DSRS_ACCELERATOR=cpu ./scripts/demo.sh to force one)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --lib
out=target/release/examples-c
mkdir -p "$out"
# Cargo does not create the SONAME link that executables look up at run time.
ln -sf ../libdeepspeed_rs.so "$out/libdeepspeed_rs.so.0.1"
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror -Iinclude examples/c/accelerator_demo.c \
  -Ltarget/release -ldeepspeed_rs -Wl,-rpath,"$PWD/$out" -lm \
  -o "$out/accelerator_demo"
exec "$out/accelerator_demo"
