#!/usr/bin/env bash
# GPU Adam(W) step, ours (dsrs_adam_step -> fused_adam) vs torch.optim.AdamW(fused=True), with the
# device's copy bandwidth as the anchor: benches/gpu_adam_peers.py (its --help says what it does).
#
# This wrapper prepares a run on the lent GPU machine (the `device` tool's `run`), from THIS
# machine. It does NOT call the device tool (only an agent session can); it builds, stages and
# prints the call to make:
#
#   benches/gpu_adam_peers.sh              build, stage .gpu/adam-peers/, print the device call
#   benches/gpu_adam_peers.sh --local ARGS also run the script here with ${PYTHON:-python3}
#                                          (a machine without a GPU: exits 2, "cannot run here")
#
# Steps:
#   1. cargo build --release --lib                      (the .so is x86-64 glibc >= 2.34, like the
#                                                         device machine's Ubuntu image)
#   2. stage into .gpu/adam-peers/ (git-ignored: the /.gpu/ line of .gitignore, so no new entry
#      is needed; an ignored folder travels only when named in `carry`):
#        libdeepspeed_rs.so                               target/release/libdeepspeed_rs.so
#        python/deepspeed_rs/                             the Python binding, the .so next to it
#                                                         (for ad-hoc checks there:
#                                                          PYTHONPATH=.gpu/adam-peers/python)
#      benches/gpu_adam_peers.py itself travels with the working tree (tracked or untracked-not-
#      ignored files do).
#   3. the device call, printed at the end (copy it into the `run` tool):
#        command:   see DEVICE_CMD below (one line; writes the log, the JSON and nvidia-smi's
#                   output under $OUT, which the tool brings back)
#        carry:     [".gpu/adam-peers"]
#        timeout_s: 600 (the full run takes a few minutes: the JIT build, the check at 1e6, then
#                   1e8 and 1e9 fp32 + bf16 and 1e8 in 256 tensors, 7 rounds each)
#
# On the device machine (CUDA 13 toolkit, torch cu130, python3 = the one with torch, no network,
# no Rust): the script finds libnvrtc.so.N under /usr/local/cuda* or torch's nvidia wheels, sets
# DSRS_NVRTC_LIB (the library loads that file, any version suffix). If the JIT build fails, add --use-nvcc
# (the toolkit's nvcc builds the kernels) or --nvrtc /path/libnvrtc.so.N. Exit status: 0 ran,
# 1 error, 2 cannot run there, 3 a correctness check failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
stage=".gpu/adam-peers"

local_run=0
if [[ "${1:-}" == "--local" ]]; then
    local_run=1
    shift
fi

if ! git check-ignore -q "$stage"; then
    echo "gpu_adam_peers.sh: $stage is not git-ignored (expected the /.gpu/ line of .gitignore); refusing to stage" >&2
    exit 1
fi
if git check-ignore -q benches/gpu_adam_peers.py; then
    echo "gpu_adam_peers.sh: benches/gpu_adam_peers.py is git-ignored, so it would not travel" >&2
    exit 1
fi
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' benches/gpu_adam_peers.py

cargo build --release --lib
so=target/release/libdeepspeed_rs.so
[[ -f "$so" ]] || { echo "gpu_adam_peers.sh: $so was not built" >&2; exit 1; }

rm -rf "$stage"
mkdir -p "$stage/python"
cp -L "$so" "$stage/libdeepspeed_rs.so"
cp -R bindings/python/deepspeed_rs "$stage/python/"
find "$stage/python" -name __pycache__ -type d -prune -exec rm -rf {} +
cp -L "$so" "$stage/python/deepspeed_rs/libdeepspeed_rs.so"

# What travels: tracked + untracked-not-ignored files, plus the carried folder (64 MiB in all).
stage_bytes=$(du -sb "$stage" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -n1 | cut -f1)
total=$((stage_bytes + tree_bytes))
awk -v s="$stage_bytes" -v t="$tree_bytes" -v d="$stage" 'BEGIN {
    printf "staged %s: %.1f MiB; working tree that travels: %.1f MiB; together %.1f MiB (limit 64 MiB)\n",
        d, s / 1048576, t / 1048576, (s + t) / 1048576 }'
if (( total > 60 * 1048576 )); then
    echo "gpu_adam_peers.sh: WARNING: close to or over the device tool's 64 MiB limit" >&2
fi

# The device call. $OUT is expanded there, not here (single quotes).
DEVICE_CMD='set -o pipefail; export PYTHONUNBUFFERED=1; nvidia-smi > $OUT/nvidia-smi.txt 2>&1; python3 benches/gpu_adam_peers.py --lib .gpu/adam-peers/libdeepspeed_rs.so --json $OUT/gpu_adam_peers.json 2>&1 | tee $OUT/gpu_adam_peers.log'
cat <<EOF

Device call (the run tool; this script does not call it):
  command:   $DEVICE_CMD
  carry:     ["$stage"]
  timeout_s: 600
Fallbacks: append --use-nvcc (nvcc instead of NVRTC) or --nvrtc /path/libnvrtc.so.N; --quick for a
~1-minute smoke run (1e7, 3 rounds); --skip-bench for the correctness check alone.
Results come back as \$OUT/gpu_adam_peers.log, \$OUT/gpu_adam_peers.json and \$OUT/nvidia-smi.txt;
record them in docs/gpu-validation.md.
EOF

if (( local_run )); then
    echo
    echo "running here: ${PYTHON:-python3} benches/gpu_adam_peers.py --lib $stage/libdeepspeed_rs.so $*"
    exec "${PYTHON:-python3}" benches/gpu_adam_peers.py --lib "$stage/libdeepspeed_rs.so" "$@"
fi
