#!/usr/bin/env bash
# Tests the installed CMake package the way a user meets it:
#   1. copies the cargo-built artifacts into a temporary staging directory;
#   2. configures, builds and installs this project with DSRS_PREBUILT_DIR=<staging> into a
#      temporary prefix, then DELETES the staging directory (and the build tree), so
#      nothing can silently come from them;
#   3. checks the installed files: the real .so, its SONAME symlinks, SONAME
#      libdeepspeed_rs.so.0.1, only dsrs_* symbols exported, pkg-config --cflags/--libs;
#   4. builds and runs tests/cmake_consumer against the prefix (CMAKE_PREFIX_PATH) with the
#      shared target — which must load the library from the prefix (ldd) — and with the
#      static target — which must not need it at all;
#   5. checks that find_package(deepspeed_rs 0.2) FAILS (0.x: only 0.1.y is compatible).
#
#   scripts/test-cmake-package.sh [ARTIFACT_DIR]     (default: target/debug)
#
# Works on a fresh machine: cmake is installed with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

artifacts=${1:-target/debug}
jobs=2
soname=libdeepspeed_rs.so.0.1
realname=libdeepspeed_rs.so.0.1.0

die() {
  echo "test-cmake-package.sh: FAILED: $*" >&2
  exit 1
}
step() { printf '\n--- %s\n' "$*"; }

# cmake, and pkg-config for its check, installed with apt-get when missing.
source "$(dirname "$0")/common.sh"

for f in libdeepspeed_rs.so libdeepspeed_rs.a; do
  [ -f "$artifacts/$f" ] || die "$artifacts/$f is missing; run \`cargo build\` first"
done
artifacts=$(cd "$artifacts" && pwd)
ensure_commands cmake pkg-config

# Everything temporary lives under one directory, removed on exit (success or failure).
work=$(mktemp -d "${TMPDIR:-/tmp}/dsrs-package-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
staging="$work/staging"
prefix="$work/prefix"
build="$work/build"

step "staging the artifacts of $artifacts"
mkdir -p "$staging"
cp "$artifacts/libdeepspeed_rs.so" "$artifacts/libdeepspeed_rs.a" "$artifacts/dsrs" "$staging/"

step "configure, build, install into $prefix"
cmake -S "$root" -B "$build" -DDSRS_PREBUILT_DIR="$staging" -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$jobs"
cmake --install "$build"
rm -rf "$staging" "$build" # from here on, only the prefix exists
(cd "$prefix" && find . -type f -o -type l | sort | sed 's/^/  /')

step "installed files"
lib="$prefix/lib"
for f in "$realname" libdeepspeed_rs.a; do
  [ -f "$lib/$f" ] && [ ! -L "$lib/$f" ] || die "$lib/$f is not a regular file"
done
[ "$(readlink "$lib/$soname")" = "$realname" ] || die "$lib/$soname is not a symlink to $realname"
[ "$(readlink "$lib/libdeepspeed_rs.so")" = "$soname" ] ||
  die "$lib/libdeepspeed_rs.so is not a symlink to $soname"
for f in include/deepspeed_rs.h include/deepspeed_rs.hpp lib/pkgconfig/deepspeed_rs.pc \
  lib/cmake/deepspeed_rs/deepspeed_rsConfig.cmake \
  lib/cmake/deepspeed_rs/deepspeed_rsConfigVersion.cmake; do
  [ -f "$prefix/$f" ] || die "$prefix/$f was not installed"
done
echo "real file, SONAME and development symlinks, headers, CMake and pkg-config files: ok"
if [ -x "$prefix/bin/dsrs" ]; then
  "$prefix/bin/dsrs" --version | grep -q "^dsrs 0\.1\." || die "installed bin/dsrs --version failed"
  echo "installed bin/dsrs runs: ok"
else
  die "bin/dsrs was not installed (the artifact dir has a dsrs binary)"
fi

step "SONAME"
got_soname=$(readelf -d "$lib/$realname" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$got_soname" = "$soname" ] || die "SONAME is '$got_soname', expected '$soname'"
echo "SONAME $got_soname: ok"

step "exported symbols"
# Every defined dynamic symbol must be dsrs_*. rustc links a cdylib with a version script
# that makes everything else local, so nothing else appears — not even the _edata, _end or
# __bss_start markers GNU ld adds by default — and no exception is needed.
exported=$(nm -D --defined-only "$lib/$realname" | awk '{print $NF}')
unexpected=$(printf '%s\n' "$exported" | grep -v '^dsrs_' || true)
[ -z "$unexpected" ] || die "non-dsrs_ symbols exported: $(echo "$unexpected" | tr '\n' ' ')"
echo "$(printf '%s\n' "$exported" | grep -c '^dsrs_') symbols, all dsrs_*: ok"

step "pkg-config"
export PKG_CONFIG_PATH="$lib/pkgconfig"
cflags=$(pkg-config --cflags deepspeed_rs)
libs=$(pkg-config --libs deepspeed_rs)
static_libs=$(pkg-config --static --libs deepspeed_rs)
echo "version: $(pkg-config --modversion deepspeed_rs)"
echo "--cflags: $cflags"
echo "--libs: $libs"
echo "--static --libs: $static_libs"
[ "$(pkg-config --modversion deepspeed_rs)" = "0.1.0" ] || die "pkg-config version is not 0.1.0"
# The flags must point into the prefix and build a working program.
pc_bin="$work/pc_consumer"
# shellcheck disable=SC2086 # the flags are word lists
"${CC:-cc}" $cflags "$root/tests/cmake_consumer/main.c" -o "$pc_bin" $libs -Wl,-rpath,"$lib"
"$pc_bin" || die "the program built with pkg-config flags failed"
# shellcheck disable=SC2086
"${CC:-cc}" -DDSRS_CONSUMER_STATIC=1 $cflags "$root/tests/cmake_consumer/main.c" -o "$pc_bin.static" \
  "$lib/libdeepspeed_rs.a" $(pkg-config --static --libs-only-l deepspeed_rs | sed 's/-ldeepspeed_rs//')
"$pc_bin.static" || die "the program linked statically with pkg-config's Libs.private failed"
echo "pkg-config --cflags/--libs (shared) and Libs.private (static): ok"

consumer() { # consumer <name> <extra cmake args...>
  local name=$1
  shift
  cmake -S "$root/tests/cmake_consumer" -B "$work/$name" -DCMAKE_PREFIX_PATH="$prefix" "$@"
  cmake --build "$work/$name" --parallel "$jobs"
}

step "find_package consumer, shared library"
consumer consumer-shared
"$work/consumer-shared/dsrs_consumer" || die "the shared consumer failed"
resolved=$(ldd "$work/consumer-shared/dsrs_consumer" | awk -v so="$soname" '$1 == so {print $3}')
echo "ldd: $soname => $resolved"
[ "$resolved" = "$lib/$soname" ] || die "the shared consumer resolves $soname to '$resolved', not the prefix"

step "find_package consumer, static library"
consumer consumer-static -DDSRS_CONSUMER_STATIC=ON
"$work/consumer-static/dsrs_consumer" || die "the static consumer failed"
if ldd "$work/consumer-static/dsrs_consumer" | grep -q libdeepspeed_rs; then
  die "the static consumer still needs libdeepspeed_rs.so"
fi
echo "the static consumer does not need libdeepspeed_rs.so: ok"

step "find_package(deepspeed_rs 0.2) must fail"
if cmake -S "$root/tests/cmake_consumer" -B "$work/consumer-0.2" -DCMAKE_PREFIX_PATH="$prefix" \
  -DDSRS_CONSUMER_WANT_VERSION=0.2 >"$work/v02.log" 2>&1; then
  cat "$work/v02.log"
  die "find_package(deepspeed_rs 0.2) succeeded against 0.1.0"
fi
grep -q "0.1.0" "$work/v02.log" || die "the version failure does not mention 0.1.0"
sed -n '/Could not find a configuration file\|version:\|not compatible\|0\.1\.0/p' "$work/v02.log" | head -n 6
echo "find_package(deepspeed_rs 0.2) refused: ok"

step "relocation: the prefix moved elsewhere still works"
moved="$work/moved-prefix"
mv "$prefix" "$moved"
cmake -S "$root/tests/cmake_consumer" -B "$work/consumer-moved" -DCMAKE_PREFIX_PATH="$moved" >/dev/null
cmake --build "$work/consumer-moved" --parallel "$jobs" >/dev/null
"$work/consumer-moved/dsrs_consumer" || die "the consumer of a moved prefix failed"
PKG_CONFIG_PATH="$moved/lib/pkgconfig" pkg-config --cflags deepspeed_rs | grep -q "$moved" ||
  die "pkg-config does not follow the moved prefix"
echo "CMake package and pkg-config file are relocatable: ok"

printf '\ntest-cmake-package.sh: all package checks passed\n'
