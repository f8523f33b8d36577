#!/usr/bin/env bash
# Builds deepspeed_rs (release) and the C demo hosts, then trains a small classifier with
# the training engine from C on the default accelerator (examples/c/train_mlp.c, configured
# by examples/c/ds_config.json; examples/README.md says what to expect).
#   ./scripts/demo.sh                         (DSRS_ACCELERATOR=cpu ./scripts/demo.sh to force one)
#   ./scripts/demo.sh examples/c/ds_config_bf16.json --epochs 20    (arguments go to train_mlp)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --lib
out=target/release/examples-c
mkdir -p "$out"
# Cargo does not create the SONAME link that executables look up at run time.
ln -sf ../libdeepspeed_rs.so "$out/libdeepspeed_rs.so.0.1"
cflags=(-std=c11 -O2 -Wall -Wextra -Werror -Iinclude)
ldflags=(-Ltarget/release -ldeepspeed_rs -Wl,-rpath,"$PWD/$out" -lm)
"${CC:-cc}" "${cflags[@]}" examples/c/accelerator_demo.c "${ldflags[@]}" -o "$out/accelerator_demo"
# -ffp-contract=off: the dataset generator must not fuse multiply-adds (same bits as Python).
"${CC:-cc}" "${cflags[@]}" -ffp-contract=off examples/c/train_mlp.c "${ldflags[@]}" \
  -o "$out/train_mlp"
exec "$out/train_mlp" "$@"
