#!/usr/bin/env bash
# The training engine's step at 10M parameters: deepspeed_rs's engine vs the bare cpu_adam
# kernel on the engine's own buffers (the engine's overhead), vs DeepSpeed's engine
# (deepspeed.initialize on its CPU accelerator, engine.step() after a backward), fp32 and
# bf16 with gradient_clipping on, and peak resident bytes per parameter. See
# benches/README.md; results in docs/performance.md.
#
#   benches/engine_peers.sh                                 (5 rounds, fp32 and bf16)
#   benches/engine_peers.sh --rounds 3 --precisions fp32 --params 1000000
#
# Arguments go to benches/engine_peers.py (--help lists them). Every measurement runs in a
# fresh worker process (one OpenMP runtime per process), interleaved over rounds. Builds
# the release library and makes the peer venv with ../shared/bench/setup-peers.sh if
# PEER_VENV (default ./.peer-venv) has no python yet. DeepSpeed JIT-builds its CPU Adam op
# on first use (about 40-80 s, cached). A benchmark, not a test: nothing fails on a number.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
peer_dir="${PEER_BENCH_DIR:-$root/../shared/bench}"
venv="${PEER_VENV:-$root/.peer-venv}"
cargo build --release --lib -q
if [[ ! -x "$venv/bin/python" ]]; then
    echo "engine_peers.sh: no peer venv at $venv; making it (setup-peers.sh)" >&2
    bash "$peer_dir/setup-peers.sh" "$venv"
fi
export PATH="$venv/bin:$PATH"  # DeepSpeed JIT-builds its ops with the venv's ninja
export DSRS_LIBRARY="$root/target/release/libdeepspeed_rs.so"
exec "$venv/bin/python" "$root/benches/engine_peers.py" --peer-python "$venv/bin/python" "$@"
