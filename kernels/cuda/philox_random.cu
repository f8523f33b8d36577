// philox_random.cu - the philox_random op: random fills on the GPU that reproduce the CPU
// accelerator's generator (src/accelerator/rng.rs) bit for bit.
//
// Specification: docs/accelerators.md, section "Random numbers". Section references below
// ("spec: ...") name the bullet of that section a piece of code implements.
//
// Compiled by NVRTC with the op's headers on the include path: the only #include is
// dsrs_philox.cuh (kernels/include, listed in the op's spec: the generator itself), which
// includes nothing. The double-precision arithmetic that the spec fixes is written with
// explicitly rounded intrinsics (__dmul_rn, __dadd_rn, ...), so NVRTC's default
// --fmad=true cannot contract low + span*u or mean + std*z into a fused multiply-add.
// Build without --use_fast_math / --ftz=true.
//
// Kernels (one thread per Philox block, grid-stride; any 1-D launch shape works):
//
//   dsrs_philox_bits_u32    (unsigned int*       out, n, seed, offset)   uint32 / int32
//   dsrs_philox_bits_u64    (unsigned long long* out, n, seed, offset)   uint64 / int64
//   dsrs_philox_uniform_f32 (float*              out, n, seed, offset, double low, double high)
//   dsrs_philox_uniform_f64 (double*             out, n, seed, offset, double low, double high)
//   dsrs_philox_uniform_f16 (unsigned short*     out, n, seed, offset, double low, double high)
//   dsrs_philox_uniform_bf16(unsigned short*     out, n, seed, offset, double low, double high)
//   dsrs_philox_normal_f32  (float*              out, n, seed, offset, double mean, double std)
//   dsrs_philox_normal_f64  (double*             out, n, seed, offset, double mean, double std)
//   dsrs_philox_normal_f16  (unsigned short*     out, n, seed, offset, double mean, double std)
//   dsrs_philox_normal_bf16 (unsigned short*     out, n, seed, offset, double mean, double std)
//
// with n, seed and offset `unsigned long long`; f16/bf16 outputs are raw bits. `offset` is
// the generator state's offset (the first block to use). The kernels do not advance the
// state: the host does, by ceil(words / 4) blocks, words as in "Words per element" (the
// same as Distribution::words in rng.rs):
//   bits/uniform, 32-bit and narrower types: n words     -> blocks = ceil(n / 4)
//   bits/uniform, 64-bit types:              2n words    -> blocks = ceil(n / 2)
//   normal, float32 and narrower:   2*ceil(n/2) words    -> blocks = ceil(n / 4)
//   normal, float64:                4*ceil(n/2) words    -> blocks = ceil(n / 2)
// and validates the parameters beforehand as the CPU does (finite bounds, low <= high,
// std >= 0, within the element type's range); the kernels do not check them.
//
// Bit-exactness: bits and uniform values are bit-identical to the CPU. Normal values use
// log, sin and cos; CUDA's double versions are within 1-2 ulp and may round differently
// from the host libm in rare cases, so a float64 normal value may differ in its last bit
// and, far more rarely, a narrower one after rounding (as the spec says).

#include "dsrs_philox.cuh" // spec: the generator; "Key" and "Block"

typedef unsigned short dsrs_u16;

// ---- words -> unit values (spec: "Uniform", "Normal") -----------------------------------

#define DSRS_TWO_M24 5.9604644775390625e-08 // 2^-24, exactly
#define DSRS_TWO_M53 1.1102230246251565404236316680908203125e-16 // 2^-53, exactly
// 2 * (double)pi = 0x1.921fb54442d18p+2, the value 2.0 * std::f64::consts::PI folds to.
#define DSRS_TWO_PI 6.283185307179586476925286766559

// u = (w >> 8) * 2^-24, exact in double.
static __device__ __forceinline__ double dsrs_unit24(dsrs_u32 w) {
    return __dmul_rn((double)(w >> 8), DSRS_TWO_M24);
}

// u = ((w0 * 2^32 + w1) >> 11) * 2^-53, exact in double.
static __device__ __forceinline__ double dsrs_unit53(dsrs_u32 w0, dsrs_u32 w1) {
    const dsrs_u64 x = (((dsrs_u64)w0 << 32) | (dsrs_u64)w1) >> 11;
    return __dmul_rn(__ull2double_rn(x), DSRS_TWO_M53);
}

// u1 = ((w0 >> 8) + 1) * 2^-24, in (0, 1].
static __device__ __forceinline__ double dsrs_unit24_open0(dsrs_u32 w) {
    return __dmul_rn(__dadd_rn((double)(w >> 8), 1.0), DSRS_TWO_M24);
}

// u1 = (((w0 * 2^32 + w1) >> 11) + 1) * 2^-53, in (0, 1].
static __device__ __forceinline__ double dsrs_unit53_open0(dsrs_u32 w0, dsrs_u32 w1) {
    const dsrs_u64 x = (((dsrs_u64)w0 << 32) | (dsrs_u64)w1) >> 11;
    return __dmul_rn(__dadd_rn(__ull2double_rn(x), 1.0), DSRS_TWO_M53);
}

// Box-Muller: r = sqrt(-2 ln u1), theta = (2 pi) u2, z0 = r cos theta, z1 = r sin theta.
static __device__ __forceinline__ void dsrs_box_muller(double u1, double u2, double& z0,
                                                       double& z1) {
    const double r = __dsqrt_rn(__dmul_rn(-2.0, log(u1)));
    const double theta = __dmul_rn(DSRS_TWO_PI, u2);
    z0 = __dmul_rn(r, cos(theta));
    z1 = __dmul_rn(r, sin(theta));
}

// ---- rounding into the element type (spec: "Uniform": "rounded to nearest-even into the
// element type"; rng.rs: narrow types go through float32 rounded to odd) ------------------

// float64 -> float32 rounded to odd: truncate toward zero, then set the last bit if the
// truncation lost anything. Rounding this to nearest-even at <= 22 bits of precision equals
// rounding the float64 directly (no double rounding). Beyond float32's range the
// truncation saturates at the largest finite float32, as on the CPU.
static __device__ __forceinline__ float dsrs_f32_round_to_odd(double v) {
    const float t = __double2float_rz(v);
    if (t != t || (double)t == v) {
        return t;
    }
    return __uint_as_float(__float_as_uint(t) | 1u);
}

// float32 -> float16 bits, round to nearest, ties to even; overflow gives infinity; a NaN
// becomes a quiet NaN with the top mantissa bits kept.
static __device__ __forceinline__ dsrs_u16 dsrs_f32_to_f16_rne(float f) {
    const dsrs_u32 x = __float_as_uint(f);
    const dsrs_u32 sign = (x >> 16) & 0x8000u;
    const dsrs_u32 ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) { // NaN
        return (dsrs_u16)(sign | 0x7e00u | ((ax & 0x007fffffu) >> 13));
    }
    if (ax >= 0x477ff000u) { // >= 65520 (halfway above 65504, ties to the even infinity)
        return (dsrs_u16)(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) { // >= 2^-14: a normal float16
        // Re-bias the exponent (127 -> 15) in place and drop 13 mantissa bits with RNE; a
        // carry out of the mantissa correctly bumps the exponent.
        const dsrs_u32 r = ax - 0x38000000u;
        return (dsrs_u16)(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
    }
    if (ax <= 0x33000000u) { // <= 2^-25: rounds to zero (2^-25 itself ties to even 0)
        return (dsrs_u16)sign;
    }
    // Subnormal float16: count units of 2^-24. ax is a normal float32 here, value
    // mant * 2^(e - 150) with the implicit bit in mant, so units = mant >> (126 - e).
    const dsrs_u32 e = ax >> 23;                        // 102 .. 112
    const dsrs_u32 mant = (ax & 0x007fffffu) | 0x00800000u;
    const dsrs_u32 shift = 126u - e;                    // 14 .. 24
    dsrs_u32 q = mant >> shift;
    const dsrs_u32 rest = mant & ((1u << shift) - 1u);
    const dsrs_u32 half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (q & 1u))) {
        ++q; // may carry into 0x400, the smallest normal: the right encoding
    }
    return (dsrs_u16)(sign | q);
}

// float32 -> bfloat16 bits, round to nearest, ties to even; NaN kept quiet (as rng.rs).
static __device__ __forceinline__ dsrs_u16 dsrs_f32_to_bf16_rne(float f) {
    const dsrs_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (dsrs_u16)((b >> 16) | 0x0040u);
    }
    return (dsrs_u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// Element stores, one per output type: the float64 value rounded as rng.rs `store` does.
struct dsrs_out_f32 {
    typedef float type;
    static __device__ __forceinline__ float from(double v) { return __double2float_rn(v); }
};
struct dsrs_out_f64 {
    typedef double type;
    static __device__ __forceinline__ double from(double v) { return v; }
};
struct dsrs_out_f16 {
    typedef dsrs_u16 type;
    static __device__ __forceinline__ dsrs_u16 from(double v) {
        return dsrs_f32_to_f16_rne(dsrs_f32_round_to_odd(v));
    }
};
struct dsrs_out_bf16 {
    typedef dsrs_u16 type;
    static __device__ __forceinline__ dsrs_u16 from(double v) {
        return dsrs_f32_to_bf16_rne(dsrs_f32_round_to_odd(v));
    }
};

// ---- fills ------------------------------------------------------------------------------

static __device__ __forceinline__ dsrs_u64 dsrs_thread_index() {
    return (dsrs_u64)blockIdx.x * (dsrs_u64)blockDim.x + (dsrs_u64)threadIdx.x;
}

static __device__ __forceinline__ dsrs_u64 dsrs_grid_stride() {
    return (dsrs_u64)gridDim.x * (dsrs_u64)blockDim.x;
}

// ceil(n / d) without overflow.
static __device__ __forceinline__ dsrs_u64 dsrs_ceil_div(dsrs_u64 n, dsrs_u64 d) {
    return n / d + (n % d != 0 ? 1u : 0u);
}

// Spec "Words per element": element i of a 32-bit-or-narrower uniform fill uses word i,
// i.e. word i % 4 of block offset + i / 4 (spec "Block": blocks are read in order from
// `offset`; a block's 4 words are used in order).
template <typename Out>
static __device__ __forceinline__ void dsrs_uniform_narrow(typename Out::type* out, dsrs_u64 n,
                                                           dsrs_u64 seed, dsrs_u64 offset,
                                                           double low, double high) {
    const double span = __dsub_rn(high, low);
    const dsrs_u64 blocks = dsrs_ceil_div(n, 4);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        const dsrs_u64 base = j * 4;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (base + k < n) {
                const double u = dsrs_unit24(r.w[k]);
                out[base + k] = Out::from(__dadd_rn(low, __dmul_rn(span, u)));
            }
        }
    }
}

// float64 uniform: element i uses words 2i, 2i+1: block offset + i / 2, words (0,1) or (2,3).
static __device__ __forceinline__ void dsrs_uniform_wide(double* out, dsrs_u64 n, dsrs_u64 seed,
                                                         dsrs_u64 offset, double low,
                                                         double high) {
    const double span = __dsub_rn(high, low);
    const dsrs_u64 blocks = dsrs_ceil_div(n, 2);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        const dsrs_u64 base = j * 2;
        out[base] = __dadd_rn(low, __dmul_rn(span, dsrs_unit53(r.w[0], r.w[1])));
        if (base + 1 < n) {
            out[base + 1] = __dadd_rn(low, __dmul_rn(span, dsrs_unit53(r.w[2], r.w[3])));
        }
    }
}

// Spec "Normal": elements 2k, 2k+1 share words 2k (u1), 2k+1 (u2). A block holds pairs
// 2j and 2j+1, i.e. elements 4j .. 4j+3: z0, z1 of words (0,1), then z0, z1 of (2,3).
template <typename Out>
static __device__ __forceinline__ void dsrs_normal_narrow(typename Out::type* out, dsrs_u64 n,
                                                          dsrs_u64 seed, dsrs_u64 offset,
                                                          double mean, double stddev) {
    const dsrs_u64 blocks = dsrs_ceil_div(n, 4);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        const dsrs_u64 base = j * 4;
#pragma unroll
        for (int pair = 0; pair < 2; ++pair) {
            const dsrs_u64 i = base + 2 * pair;
            if (i < n) {
                double z0, z1;
                dsrs_box_muller(dsrs_unit24_open0(r.w[2 * pair]), dsrs_unit24(r.w[2 * pair + 1]),
                                z0, z1);
                out[i] = Out::from(__dadd_rn(mean, __dmul_rn(stddev, z0)));
                if (i + 1 < n) {
                    out[i + 1] = Out::from(__dadd_rn(mean, __dmul_rn(stddev, z1)));
                }
            }
        }
    }
}

// float64 normal: pair k uses words 4k .. 4k+3, one whole block: u1 from (w0, w1),
// u2 from (w2, w3); elements 2k, 2k+1.
static __device__ __forceinline__ void dsrs_normal_wide(double* out, dsrs_u64 n, dsrs_u64 seed,
                                                        dsrs_u64 offset, double mean,
                                                        double stddev) {
    const dsrs_u64 blocks = dsrs_ceil_div(n, 2);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        double z0, z1;
        dsrs_box_muller(dsrs_unit53_open0(r.w[0], r.w[1]), dsrs_unit53(r.w[2], r.w[3]), z0, z1);
        const dsrs_u64 base = j * 2;
        out[base] = __dadd_rn(mean, __dmul_rn(stddev, z0));
        if (base + 1 < n) {
            out[base + 1] = __dadd_rn(mean, __dmul_rn(stddev, z1));
        }
    }
}

// ---- exported kernels ---------------------------------------------------------------------

// Spec "Bits": uint32/int32 take one word per element.
extern "C" __global__ void dsrs_philox_bits_u32(unsigned int* out, unsigned long long n,
                                                unsigned long long seed,
                                                unsigned long long offset) {
    const dsrs_u64 blocks = dsrs_ceil_div(n, 4);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        const dsrs_u64 base = j * 4;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (base + k < n) {
                out[base + k] = r.w[k];
            }
        }
    }
}

// Spec "Bits": uint64/int64 take w0 | w1 << 32 (low word first).
extern "C" __global__ void dsrs_philox_bits_u64(unsigned long long* out, unsigned long long n,
                                                unsigned long long seed,
                                                unsigned long long offset) {
    const dsrs_u64 blocks = dsrs_ceil_div(n, 2);
    for (dsrs_u64 j = dsrs_thread_index(); j < blocks; j += dsrs_grid_stride()) {
        const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + j);
        const dsrs_u64 base = j * 2;
        out[base] = (dsrs_u64)r.w[0] | ((dsrs_u64)r.w[1] << 32);
        if (base + 1 < n) {
            out[base + 1] = (dsrs_u64)r.w[2] | ((dsrs_u64)r.w[3] << 32);
        }
    }
}

extern "C" __global__ void dsrs_philox_uniform_f32(float* out, unsigned long long n,
                                                   unsigned long long seed,
                                                   unsigned long long offset, double low,
                                                   double high) {
    dsrs_uniform_narrow<dsrs_out_f32>(out, n, seed, offset, low, high);
}

extern "C" __global__ void dsrs_philox_uniform_f64(double* out, unsigned long long n,
                                                   unsigned long long seed,
                                                   unsigned long long offset, double low,
                                                   double high) {
    dsrs_uniform_wide(out, n, seed, offset, low, high);
}

extern "C" __global__ void dsrs_philox_uniform_f16(unsigned short* out, unsigned long long n,
                                                   unsigned long long seed,
                                                   unsigned long long offset, double low,
                                                   double high) {
    dsrs_uniform_narrow<dsrs_out_f16>(out, n, seed, offset, low, high);
}

extern "C" __global__ void dsrs_philox_uniform_bf16(unsigned short* out, unsigned long long n,
                                                    unsigned long long seed,
                                                    unsigned long long offset, double low,
                                                    double high) {
    dsrs_uniform_narrow<dsrs_out_bf16>(out, n, seed, offset, low, high);
}

extern "C" __global__ void dsrs_philox_normal_f32(float* out, unsigned long long n,
                                                  unsigned long long seed,
                                                  unsigned long long offset, double mean,
                                                  double stddev) {
    dsrs_normal_narrow<dsrs_out_f32>(out, n, seed, offset, mean, stddev);
}

extern "C" __global__ void dsrs_philox_normal_f64(double* out, unsigned long long n,
                                                  unsigned long long seed,
                                                  unsigned long long offset, double mean,
                                                  double stddev) {
    dsrs_normal_wide(out, n, seed, offset, mean, stddev);
}

extern "C" __global__ void dsrs_philox_normal_f16(unsigned short* out, unsigned long long n,
                                                  unsigned long long seed,
                                                  unsigned long long offset, double mean,
                                                  double stddev) {
    dsrs_normal_narrow<dsrs_out_f16>(out, n, seed, offset, mean, stddev);
}

extern "C" __global__ void dsrs_philox_normal_bf16(unsigned short* out, unsigned long long n,
                                                   unsigned long long seed,
                                                   unsigned long long offset, double mean,
                                                   double stddev) {
    dsrs_normal_narrow<dsrs_out_bf16>(out, n, seed, offset, mean, stddev);
}
