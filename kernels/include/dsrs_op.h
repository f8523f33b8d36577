/*
 * dsrs_op.h - conventions shared by every deepspeed_rs CPU op source.
 *
 * Included by the C/C++ sources under kernels/cpu/. Works from C and C++.
 * An op's sources are compiled either by the run-time JIT (one shared library per
 * op, -fvisibility=hidden) or ahead of time into the main library by the `cc` crate,
 * with the same defines in both cases:
 *
 *   exactly one of DSRS_SIMD_AVX512 / DSRS_SIMD_AVX2 / DSRS_SIMD_NEON / DSRS_SIMD_SCALAR
 *   DSRS_SIMD_LEVEL  the level as a string literal: "avx512", "avx2", "neon", "scalar"
 *
 * Every exported function is marked DSRS_OP_EXPORT and named dsrs_<op>_...; nothing
 * else in an op source may have external linkage (use static / anonymous namespaces),
 * so that several ops can be linked into one library.
 *
 * CUDA sources (kernels/cuda/) do NOT include this header: NVRTC compiles them with only
 * their op's own headers (e.g. dsrs_mt_apply.cuh) on the include path.
 */
#ifndef DSRS_OP_H
#define DSRS_OP_H

/* ---- export ------------------------------------------------------------------- */
#if defined(__cplusplus)
#define DSRS_OP_EXTERN_C extern "C"
#else
#define DSRS_OP_EXTERN_C
#endif

#if defined(_WIN32)
#define DSRS_OP_VISIBLE __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define DSRS_OP_VISIBLE __attribute__((visibility("default")))
#else
#define DSRS_OP_VISIBLE
#endif

/* Marks a function that the Rust side looks up by name (dlsym or static link). */
#define DSRS_OP_EXPORT DSRS_OP_EXTERN_C DSRS_OP_VISIBLE

/* ---- SIMD level --------------------------------------------------------------- */
/* A build without any level define (e.g. a hand compile) is a scalar build. */
#if !defined(DSRS_SIMD_AVX512) && !defined(DSRS_SIMD_AVX2) && !defined(DSRS_SIMD_NEON) && \
    !defined(DSRS_SIMD_SCALAR)
#define DSRS_SIMD_SCALAR 1
#endif

#if (defined(DSRS_SIMD_AVX512) + defined(DSRS_SIMD_AVX2) + defined(DSRS_SIMD_NEON) + \
     defined(DSRS_SIMD_SCALAR)) != 1
#error "define exactly one of DSRS_SIMD_AVX512, DSRS_SIMD_AVX2, DSRS_SIMD_NEON, DSRS_SIMD_SCALAR"
#endif

#if !defined(DSRS_SIMD_LEVEL)
#if defined(DSRS_SIMD_AVX512)
#define DSRS_SIMD_LEVEL "avx512"
#elif defined(DSRS_SIMD_AVX2)
#define DSRS_SIMD_LEVEL "avx2"
#elif defined(DSRS_SIMD_NEON)
#define DSRS_SIMD_LEVEL "neon"
#else
#define DSRS_SIMD_LEVEL "scalar"
#endif
#endif

/* ---- restrict ----------------------------------------------------------------- */
#if defined(__cplusplus)
#if defined(__GNUC__) || defined(__clang__)
#define DSRS_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define DSRS_RESTRICT __restrict
#else
#define DSRS_RESTRICT
#endif
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L
#define DSRS_RESTRICT restrict
#else
#define DSRS_RESTRICT
#endif

/* ---- status codes returned by op entry points ------------------------------------ */
#define DSRS_OP_OK 0         /* success */
#define DSRS_OP_ERR_NULL 1   /* a required pointer was NULL */
#define DSRS_OP_ERR_CONFIG 2 /* a configuration value is out of range */

#endif /* DSRS_OP_H */
