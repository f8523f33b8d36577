# DsrsNativeLibs.cmake — the native libraries a program must link besides
# libdeepspeed_rs.a (Rust's standard library needs them; the shared library links them
# itself).
#
# Source of truth, recorded with rustc 1.95 for x86_64-unknown-linux-gnu:
#   $ cargo rustc --lib --crate-type staticlib -- --print native-static-libs
#   note: native-static-libs: -ldl -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
# (-lc is implicit; -lpthread is Threads::Threads; -ldl is ${CMAKE_DL_LIBS}.) Re-run the
# command after a Rust toolchain or dependency upgrade and update the lists below;
# scripts/test-cmake-package.sh links a static consumer to prove the list is sufficient.
#
# Defines:
#   DSRS_NATIVE_STATIC_LIBS         the linker flags, as rustc prints them (pkg-config's
#                                   Libs.private)
#   DSRS_NATIVE_STATIC_LIBS_OTHER   the libraries other than threads and dl, as names
#   DSRS_NATIVE_STATIC_LIBS_CMAKE   the CMake link list: Threads::Threads, ${CMAKE_DL_LIBS},
#                                   then DSRS_NATIVE_STATIC_LIBS_OTHER

set(DSRS_NATIVE_STATIC_LIBS "-ldl -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc" CACHE STRING
    "Native link flags needed with libdeepspeed_rs.a (rustc --print native-static-libs)")
set(DSRS_NATIVE_STATIC_LIBS_OTHER gcc_s util rt m CACHE STRING
    "Libraries needed with libdeepspeed_rs.a besides Threads::Threads and CMAKE_DL_LIBS")
set(DSRS_NATIVE_STATIC_LIBS_CMAKE Threads::Threads ${CMAKE_DL_LIBS} ${DSRS_NATIVE_STATIC_LIBS_OTHER})
