/*
 * dsrs_quantizer.h - the cpu_quantizer op: group-wise int8 / packed int4 quantization and
 * dequantization of fp32, fp16 and bf16 tensors (DeepSpeed's quantizer op, for every group
 * size). The full specification is docs/quantizer.md; the summary below is normative for
 * this op, the CUDA op (kernels/cuda/quantizer.cu) and the Rust reference
 * (src/ops/quantizer/reference.rs), which agree bit for bit.
 *
 * Layout. The n input elements (flattened) form G = ceil(n / group_size) groups; group g is
 * elements [g * group_size, min(n, (g + 1) * group_size)) (the last one may be partial).
 *   q        int8: n bytes, byte i = q_i (two's complement when symmetric, 0..255 when not);
 *            int4: ceil(n / 2) bytes, byte i = (q_2i & 0xF) | (q_2i+1 & 0xF) << 4 (element 2i
 *            in the low nibble); packing runs over the whole tensor regardless of group
 *            boundaries; an odd n leaves the high nibble of the last byte 0.
 *   scales   G floats.
 *   offsets  G floats (asymmetric only: the group's minimum).
 *
 * Per group (every value widened exactly to float first; "f64(...)" is a double operation,
 * "f32(...)" rounds a double to float, round to nearest even):
 *   A      = max |x_i| compared as bit patterns (bits & 0x7fffffff), so NaN is the largest
 *   if A >= 0x7f800000 (an Inf or NaN in the group):  scale = offset = NaN (0x7fc00000),
 *                                                      every q_i = 0
 *   symmetric  (qmin, qmax) = (-127, 127) / (-7, 7):   scale = f32(f64(absmax) / qmax)
 *   asymmetric (qmin, qmax) = (0, 255)    / (0, 15):   mn = min x_i + 0.0f, mx = max x_i + 0.0f
 *                                                      scale = f32((f64(mx) - f64(mn)) / qmax)
 *                                                      offset = mn
 *   if !(scale > 0) every q_i = 0 (all values equal, or a range that underflows)
 * Per element (float operations, no fused multiply-add):
 *   v = x / scale  (symmetric)   or   v = (x - mn) / scale  (asymmetric)
 *   nearest:    r = rint(v) (ties to even), clamped to [qmin, qmax] in float
 *   stochastic: u = (w >> 8) * 2^-24, w the Philox word of element i (below);
 *               r = floor(f64(v) + u), clamped to [qmin, qmax] in double
 *   q = (int)r   (clamping is "v > lo ? v : lo" then "v < hi ? v : hi")
 * Dequantize:
 *   y = (float)q * scale  [+ offset when asymmetric];  a NaN y becomes 0x7fc00000;
 *   y is rounded to the output dtype (round to nearest even; NaN stays NaN).
 *
 * Stochastic rounding uses Philox4x32-10 exactly as the accelerators' generator does
 * (src/accelerator/rng.rs): key = [seed lo32, seed hi32]; element i (global, flattened)
 * takes word i % 4 of block b = offset + i / 4 (u64, wrapping), whose counter is
 * [b lo32, b hi32, 0, 0]. So u_i is the value a float32 uniform fill on [0, 1) would give
 * element i from a generator at (seed, offset); a caller advances its offset by
 * ceil(n / 4) blocks per call.
 *
 * The result does not depend on the SIMD level, the thread count or the alignment.
 * Arrays must not overlap (input, q, scales, offsets; output and q, scales, offsets).
 * They need no particular alignment beyond their element type's.
 */
#ifndef DSRS_QUANTIZER_H
#define DSRS_QUANTIZER_H

#include <stdint.h>

#include "dsrs_op.h"

#if defined(__cplusplus)
extern "C" {
#endif

/* Element types of the input (quantize) and output (dequantize) arrays. */
#define DSRS_QUANTIZER_F32 0  /* IEEE binary32 */
#define DSRS_QUANTIZER_F16 1  /* IEEE binary16 */
#define DSRS_QUANTIZER_BF16 2 /* bfloat16 */

/* Rounding modes. */
#define DSRS_QUANTIZER_NEAREST 0    /* round to nearest, ties to even */
#define DSRS_QUANTIZER_STOCHASTIC 1 /* floor(v + u), u from Philox (seed, offset) */

/*
 * The configuration. Layout (C, natural alignment; 40 bytes, align 8):
 *   0 bits, 4 symmetric (int32), 8 group_size (uint64),
 *   16 rounding, 20 num_threads (int32), 24 seed, 32 offset (uint64)
 */
typedef struct dsrs_quantizer_config {
    int32_t bits;        /* 8 (int8) or 4 (packed int4) */
    int32_t symmetric;   /* 1: symmetric (scales only), 0: asymmetric (scales and offsets) */
    uint64_t group_size; /* elements per group, >= 1 (any value; the last group may be partial) */
    int32_t rounding;    /* DSRS_QUANTIZER_NEAREST or DSRS_QUANTIZER_STOCHASTIC */
    int32_t num_threads; /* 0 = OpenMP default; ignored without OpenMP; >= 0 */
    uint64_t seed;       /* stochastic rounding: the Philox key */
    uint64_t offset;     /* stochastic rounding: the first Philox block */
} dsrs_quantizer_config;

/*
 * Quantizes n elements of `input` (of type in_dtype, a DSRS_QUANTIZER_F* value) into q
 * (n bytes for int8, ceil(n / 2) for int4), scales (G floats) and, when asymmetric, offsets
 * (G floats; ignored and may be NULL when symmetric).
 * Returns DSRS_OP_OK; DSRS_OP_ERR_NULL when cfg is NULL or, with n > 0, a required array is
 * NULL; DSRS_OP_ERR_CONFIG when a field or in_dtype is out of range. Nothing is written on
 * error. n == 0 is a no-op.
 */
DSRS_OP_EXPORT int32_t dsrs_quantizer_quantize(const dsrs_quantizer_config* cfg, int32_t in_dtype,
                                               const void* input, uint64_t n, uint8_t* q,
                                               float* scales, float* offsets);

/*
 * Dequantizes n elements from q, scales and (asymmetric) offsets into `output` of type
 * out_dtype. cfg's rounding, seed and offset are ignored. Errors as for quantize.
 */
DSRS_OP_EXPORT int32_t dsrs_quantizer_dequantize(const dsrs_quantizer_config* cfg,
                                                 const uint8_t* q, const float* scales,
                                                 const float* offsets, uint64_t n,
                                                 int32_t out_dtype, void* output);

/* The SIMD level this library was built for: "avx512", "avx2", "neon" or "scalar" (the
 * code path actually used; "avx2" also when DSRS_QUANTIZER_FORCE_AVX2 is defined). */
DSRS_OP_EXPORT const char* dsrs_quantizer_simd_level(void);

/* omp_get_max_threads() in an OpenMP build, else 1. */
DSRS_OP_EXPORT int32_t dsrs_quantizer_max_threads(void);

#if defined(__cplusplus)
}
#endif

#endif /* DSRS_QUANTIZER_H */
