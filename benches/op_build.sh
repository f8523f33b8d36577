#!/usr/bin/env bash
# Cold build and warm load of the cpu_adam op: deepspeed_rs vs DeepSpeed, side by side.
#
#   benches/op_build.sh [RUNS]            (default 5 cold runs, 30 warm runs)
#
# * cold: an empty cache (compiler identity and OpenMP probe included), `dsrs build cpu_adam`
#   in a new process — DeepSpeed's equivalent is a first `CPUAdamBuilder().load()` with an
#   empty TORCH_EXTENSIONS_DIR;
# * warm: a new process that finds the op in the cache, verifies its SHA-256 and loads it.
#
# Needs hyperfine (apt-get install hyperfine). DeepSpeed runs when a peer venv exists
# (PEER_VENV, default ./.peer-venv, made by ../shared/bench/setup-peers.sh); otherwise its
# figures from ../shared/perf-anchors.md are printed for comparison, marked as such.
# This is a benchmark, not a test: nothing here fails on a number.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${1:-5}"
command -v hyperfine >/dev/null || { echo "op_build.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --bin dsrs -q
dsrs="$root/target/release/dsrs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export DSRS_PREBUILT=0 DSRS_PROGRESS=0
cache="$work/cache"

echo "== deepspeed_rs $("$dsrs" --version | cut -d' ' -f2), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
hyperfine -N --style basic --runs "$runs" --prepare "rm -rf $cache" \
    --export-json "$work/cold.json" "env DSRS_CACHE_DIR=$cache $dsrs build cpu_adam" >/dev/null
DSRS_CACHE_DIR=$cache "$dsrs" build cpu_adam >/dev/null
hyperfine -N --style basic --warmup 3 --runs 30 \
    --export-json "$work/warm.json" "env DSRS_CACHE_DIR=$cache $dsrs build cpu_adam" >/dev/null
size=$(find "$cache" -name 'libcpu_adam.so' -printf '%s')

peer_cold="" ; peer_warm="" ; peer_src="perf-anchors.md (not run here)"
venv="${PEER_VENV:-$root/.peer-venv}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import deepspeed" 2>/dev/null; then
    ext="$work/torch_ext"
    load='from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()'
    hyperfine -N --style basic --runs "$runs" --prepare "rm -rf $ext" --export-json "$work/peer_cold.json" \
        "env TORCH_EXTENSIONS_DIR=$ext $venv/bin/python -c '$load'" >/dev/null
    hyperfine -N --style basic --warmup 1 --runs 10 --export-json "$work/peer_warm.json" \
        "env TORCH_EXTENSIONS_DIR=$ext $venv/bin/python -c '$load'" >/dev/null
    peer_cold=$(python3 -c "import json;print(json.load(open('$work/peer_cold.json'))['results'][0]['median'])")
    peer_warm=$(python3 -c "import json;print(json.load(open('$work/peer_warm.json'))['results'][0]['median'])")
    peer_src="measured in this run ($venv)"
fi
python3 - "$work" "$size" "$peer_cold" "$peer_warm" "$peer_src" <<'PY'
import json, sys
work, size, pc, pw, src = sys.argv[1:]
def med(name):
    r = json.load(open(f"{work}/{name}.json"))["results"][0]
    return r["median"], r["min"], r["max"]
cold, warm = med("cold"), med("warm")
peer_cold = float(pc) if pc else 42.75   # 42.0-43.5 s, ../shared/perf-anchors.md
peer_warm = float(pw) if pw else 2.43
print(f"{'':26}{'deepspeed_rs':>16}{'DeepSpeed':>14}{'ratio':>10}")
print(f"{'cold build cpu_adam':26}{cold[0]*1e3:>13.1f} ms{peer_cold:>12.2f} s{peer_cold/cold[0]:>9.0f}x   (min {cold[1]*1e3:.1f}, max {cold[2]*1e3:.1f} ms; target < 10 s)")
print(f"{'warm load, new process':26}{warm[0]*1e3:>13.2f} ms{peer_warm:>12.2f} s{peer_warm/warm[0]:>9.0f}x   (min {warm[1]*1e3:.2f}, max {warm[2]*1e3:.2f} ms; target < 20 ms)")
print(f"{'built library':26}{int(size)/1024:>13.1f} KiB{'17 MB':>14}")
print(f"DeepSpeed figures: {src}")
PY
