#!/usr/bin/env bash
# One CPU Adam(W) step: deepspeed_rs (dsrs_adam_step) vs DeepSpeed's DeepSpeedCPUAdam vs torch
# AdamW(fused=True), side by side in one run, at 1 and 2 threads, fp32 and bf16 parameters,
# with the Adam-pattern bandwidth ceiling (peer_stream r4w3). See benches/README.md.
#
#   benches/cpu_adam_peers.sh --quick                       (smoke test: 1e6, 1e7; 3 rounds)
#   benches/cpu_adam_peers.sh --sizes 1e6,1e7,1e8 --dtypes fp32,bf16 --json /tmp/cpu_adam.json
#
# Arguments go to benches/cpu_adam_peers.py (--help lists them). Steps: builds the release
# library, compiles ../shared/bench/peer_stream.c (gcc -O3 -march=native -fopenmp) into
# target/bench/, makes the peer venv with ../shared/bench/setup-peers.sh if PEER_VENV (default
# ./.peer-venv, git-ignored) has no python yet (about 3 GB, a few minutes), and runs the script
# with the venv's python. DeepSpeed JIT-builds its cpu_adam op on first use (about 40-80 s,
# cached in ~/.cache/torch_extensions). This is a benchmark, not a test: nothing here fails
# on a number.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
peer_dir="${PEER_BENCH_DIR:-$root/../shared/bench}"
venv="${PEER_VENV:-$root/.peer-venv}"
for f in peer_cpu_adam.py peer_stream.c setup-peers.sh; do
    [[ -f "$peer_dir/$f" ]] || { echo "cpu_adam_peers.sh: $peer_dir/$f not found (set PEER_BENCH_DIR)" >&2; exit 1; }
done

cargo build --release --lib -q
mkdir -p target/bench
stream="$root/target/bench/peer_stream"
if [[ ! -x "$stream" || "$peer_dir/peer_stream.c" -nt "$stream" ]]; then
    gcc -O3 -march=native -fopenmp -o "$stream" "$peer_dir/peer_stream.c"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "cpu_adam_peers.sh: no peer venv at $venv; making it (setup-peers.sh)" >&2
    bash "$peer_dir/setup-peers.sh" "$venv"
fi
export PEER_BENCH_DIR="$peer_dir" PEER_STREAM="$stream" DSRS_LIBRARY="$root/target/release/libdeepspeed_rs.so"
exec "$venv/bin/python" "$root/benches/cpu_adam_peers.py" "$@"
