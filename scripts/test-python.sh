#!/usr/bin/env bash
# Tests the Python binding against a built library.
#
#   scripts/test-python.sh [ARTIFACT_DIR]     (default: target/debug)
#
# ARTIFACT_DIR holds libdeepspeed_rs.so (run `cargo build` first). Creates .venv when it is
# missing, installs numpy and pytest into it when they are not importable, reinstalls the
# binding from bindings/python, and runs pytest on tests/python with DSRS_LIBRARY pointing
# at the library. Extra pytest arguments can be given in PYTEST_ARGS.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# ARTIFACT_DIR is relative to the caller's directory; the default to the repository root.
artifacts="${1:-$root/target/debug}"
lib="$(cd "$artifacts" 2>/dev/null && pwd)/libdeepspeed_rs.so" || {
    echo "test-python.sh: artifact directory '$artifacts' does not exist (run cargo build?)" >&2
    exit 1
}
cd "$root"
if [[ ! -f "$lib" ]]; then
    echo "test-python.sh: $lib not found (run cargo build?)" >&2
    exit 1
fi

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "test-python.sh: creating .venv"
    "$python" -m venv .venv
fi
venv_python="$PWD/.venv/bin/python"

if ! "$venv_python" -c "import numpy, pytest" >/dev/null 2>&1; then
    echo "test-python.sh: installing numpy and pytest into .venv"
    "$venv_python" -m pip install -q --disable-pip-version-check numpy pytest
fi

# Reinstall every time, so the tests always run the binding's current sources. When the
# venv has setuptools and wheel, build without an isolated (downloaded) build environment.
isolation=()
if "$venv_python" -c "import setuptools, wheel" >/dev/null 2>&1; then
    isolation=(--no-build-isolation)
fi
"$venv_python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    ${isolation[@]+"${isolation[@]}"} ./bindings/python

# Run from the repository root with the installed package (not the source tree) on the
# path: tests/python has no __init__.py, so pytest puts only tests/python on sys.path.
export DSRS_LIBRARY="$lib"
# shellcheck disable=SC2086
exec "$venv_python" -m pytest -q tests/python ${PYTEST_ARGS:-}
