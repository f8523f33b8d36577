// quantizer.cu - the cuda_quantizer op: group-wise int8 / packed int4 quantization and
// dequantization on the GPU, bit-identical to the cpu_quantizer op and the Rust reference.
//
// Specification: kernels/include/dsrs_quantizer.h and docs/quantizer.md (format, formulas,
// rounding, Philox keying). Compiled by NVRTC with the op's headers on the include path:
// the only #include is dsrs_philox.cuh (kernels/include, listed in the op's spec: the
// accelerators' Philox4x32-10, as philox_random.cu uses it), which includes nothing. Every
// float operation the specification fixes is written with an explicitly rounded intrinsic
// (__fdiv_rn, __fsub_rn, __dadd_rn, ...), so NVRTC's default --fmad=true cannot contract
// anything into a fused multiply-add. Build without --use_fast_math / --ftz=true.
//
// Kernels (T is float, or unsigned short holding fp16 / bf16 bits):
//
//   dsrs_quantizer_quantize_{f32,f16,bf16}(const T* in, n, group_size, unsigned char* q,
//       float* scales, float* offsets, int bits, int symmetric, int stochastic, seed, offset)
//     One block per group, grid-stride over groups: a block-wide reduction loops over the
//     group (any group size works), thread 0 derives the scale (and offset), then the block
//     quantizes the group four elements (one Philox block) per thread at a time. Any
//     blockDim.x that is a multiple of 32, up to 1024, works; any grid size works.
//     With int4 and an odd group size, the byte holding the last element of one group and
//     the first of the next is not written here (two blocks would race on it): the fixup
//     kernel writes it afterwards, on the same stream.
//   dsrs_quantizer_fixup_{f32,f16,bf16}(same parameters)
//     int4 with an odd group size only (the host launches it then, after quantize): one
//     thread per odd group index g, writing byte (g * group_size - 1) / 2 from the scales
//     and offsets quantize wrote. Any 1-D launch shape works.
//   dsrs_quantizer_dequantize_{f32,f16,bf16}(const unsigned char* q, const float* scales,
//       const float* offsets, n, group_size, T* out, int bits, int symmetric)
//     One thread per element, grid-stride; any 1-D launch shape works.
//
// with n, group_size, seed and offset `unsigned long long`; offsets may be NULL when
// symmetric. The host validates every argument beforehand; the kernels do not.

#include "dsrs_philox.cuh"

typedef unsigned short dsrs_u16;
typedef unsigned char dsrs_u8;

#define DSRS_QZ_NAN_BITS 0x7fc00000u
#define DSRS_QZ_INF_BITS 0x7f800000u
#define DSRS_QZ_TWO_M24 5.9604644775390625e-08 // 2^-24, exactly

// ---- Philox4x32-10 (dsrs_philox.cuh, as src/accelerator/rng.rs) -------------------------------

// The word of element i: word i % 4 of block offset + i / 4.
static __device__ __forceinline__ dsrs_u32 dsrs_qz_word(dsrs_u64 seed, dsrs_u64 offset,
                                                        dsrs_u64 i) {
    const dsrs_philox_words4 r = dsrs_philox_block(seed, offset + i / 4);
    return r.w[i % 4];
}

// ---- element types --------------------------------------------------------------------------------

// float16 bits -> float, exact.
static __device__ __forceinline__ float dsrs_qz_f16_to_f32(dsrs_u16 h) {
    const dsrs_u32 sign = (dsrs_u32)(h & 0x8000u) << 16;
    const dsrs_u32 exp = (h >> 10) & 0x1fu;
    const dsrs_u32 man = h & 0x3ffu;
    if (exp == 0x1fu) {
        return __uint_as_float(sign | 0x7f800000u | (man << 13));
    }
    if (exp == 0u) {
        const float v = __fmul_rn((float)man, 5.9604644775390625e-08f); // exact
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// float -> float16 bits, round to nearest even; NaN -> sign | 0x7e00 | top payload bits.
static __device__ __forceinline__ dsrs_u16 dsrs_qz_f32_to_f16(float f) {
    const dsrs_u32 x = __float_as_uint(f);
    const dsrs_u32 sign = (x >> 16) & 0x8000u;
    const dsrs_u32 ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return (dsrs_u16)(sign | 0x7e00u | ((ax & 0x007fffffu) >> 13));
    }
    if (ax >= 0x477ff000u) {
        return (dsrs_u16)(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) {
        const dsrs_u32 r = ax - 0x38000000u;
        return (dsrs_u16)(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
    }
    if (ax <= 0x33000000u) {
        return (dsrs_u16)sign;
    }
    const dsrs_u32 e = ax >> 23;
    const dsrs_u32 mant = (ax & 0x007fffffu) | 0x00800000u;
    const dsrs_u32 shift = 126u - e;
    dsrs_u32 q = mant >> shift;
    const dsrs_u32 rest = mant & ((1u << shift) - 1u);
    const dsrs_u32 half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (q & 1u))) {
        ++q;
    }
    return (dsrs_u16)(sign | q);
}

// float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
static __device__ __forceinline__ dsrs_u16 dsrs_qz_f32_to_bf16(float f) {
    const dsrs_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (dsrs_u16)((b >> 16) | 0x0040u);
    }
    return (dsrs_u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

struct dsrs_qz_f32 {
    typedef float T;
    static __device__ __forceinline__ float load(const float* p, dsrs_u64 i) { return p[i]; }
    static __device__ __forceinline__ void store(float* p, dsrs_u64 i, float y) { p[i] = y; }
};
struct dsrs_qz_f16 {
    typedef dsrs_u16 T;
    static __device__ __forceinline__ float load(const dsrs_u16* p, dsrs_u64 i) {
        return dsrs_qz_f16_to_f32(p[i]);
    }
    static __device__ __forceinline__ void store(dsrs_u16* p, dsrs_u64 i, float y) {
        p[i] = dsrs_qz_f32_to_f16(y);
    }
};
struct dsrs_qz_bf16 {
    typedef dsrs_u16 T;
    static __device__ __forceinline__ float load(const dsrs_u16* p, dsrs_u64 i) {
        return __uint_as_float((dsrs_u32)p[i] << 16);
    }
    static __device__ __forceinline__ void store(dsrs_u16* p, dsrs_u64 i, float y) {
        p[i] = dsrs_qz_f32_to_bf16(y);
    }
};

// ---- the element formulas --------------------------------------------------------------------------

struct dsrs_qz_group {
    float scale;
    float mn; // asymmetric: the offset; symmetric: 0
    float lo; // clamp bounds
    float hi;
    int asym;
    int active; // scale > 0, else every q is 0
};

static __device__ __forceinline__ float dsrs_qz_qmax(int bits, int sym) {
    return sym ? (bits == 8 ? 127.0f : 7.0f) : (bits == 8 ? 255.0f : 15.0f);
}

static __device__ __forceinline__ dsrs_qz_group dsrs_qz_make_group(float scale, float offset,
                                                                   int bits, int sym) {
    dsrs_qz_group g;
    g.scale = scale;
    g.asym = !sym;
    g.mn = sym ? 0.0f : offset;
    g.hi = dsrs_qz_qmax(bits, sym);
    g.lo = sym ? -g.hi : 0.0f;
    g.active = scale > 0.0f;
    return g;
}

static __device__ __forceinline__ int dsrs_qz_quant1(float x, const dsrs_qz_group& g, int stoch,
                                                     dsrs_u32 w) {
    if (!g.active) {
        return 0;
    }
    const float t = g.asym ? __fsub_rn(x, g.mn) : x;
    const float v = __fdiv_rn(t, g.scale);
    if (!stoch) {
        float r = rintf(v);
        r = r > g.lo ? r : g.lo;
        r = r < g.hi ? r : g.hi;
        return (int)r;
    }
    const double s = __dadd_rn((double)v, __dmul_rn((double)(w >> 8), DSRS_QZ_TWO_M24));
    double r = floor(s);
    r = r > (double)g.lo ? r : (double)g.lo;
    r = r < (double)g.hi ? r : (double)g.hi;
    return (int)r;
}

static __device__ __forceinline__ float dsrs_qz_dequant1(int qv, const dsrs_qz_group& g) {
    float y = __fmul_rn((float)qv, g.scale);
    if (g.asym) {
        y = __fadd_rn(y, g.mn);
    }
    return y != y ? __uint_as_float(DSRS_QZ_NAN_BITS) : y;
}

static __device__ __forceinline__ dsrs_u64 dsrs_qz_groups(dsrs_u64 n, dsrs_u64 gs) {
    return n / gs + (n % gs != 0 ? 1u : 0u);
}

// ---- quantize ----------------------------------------------------------------------------------------

template <typename In>
static __device__ __forceinline__ void dsrs_qz_quantize(
    const typename In::T* in, dsrs_u64 n, dsrs_u64 gs, dsrs_u8* q, float* scales, float* offsets,
    int bits, int sym, int stoch, dsrs_u64 seed, dsrs_u64 offset) {
    __shared__ dsrs_u32 s_amax[32];
    __shared__ float s_mn[32];
    __shared__ float s_mx[32];
    __shared__ float s_scale;
    __shared__ float s_offset;
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    const unsigned warps = (blockDim.x + 31u) >> 5;
    const dsrs_u64 groups = dsrs_qz_groups(n, gs);
    for (dsrs_u64 g = blockIdx.x; g < groups; g += gridDim.x) {
        const dsrs_u64 s = g * gs;
        const dsrs_u64 e = n - s > gs ? s + gs : n;

        // Stats: absolute maximum as bit patterns, minimum, maximum.
        dsrs_u32 amax = 0u;
        float mn = __uint_as_float(0x7f800000u);
        float mx = __uint_as_float(0xff800000u);
        for (dsrs_u64 i = s + threadIdx.x; i < e; i += blockDim.x) {
            const float x = In::load(in, i);
            const dsrs_u32 a = __float_as_uint(x) & 0x7fffffffu;
            amax = a > amax ? a : amax;
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
        }
#pragma unroll
        for (int d = 16; d > 0; d >>= 1) {
            const dsrs_u32 oa = __shfl_xor_sync(0xffffffffu, amax, d);
            const float omn = __shfl_xor_sync(0xffffffffu, mn, d);
            const float omx = __shfl_xor_sync(0xffffffffu, mx, d);
            amax = oa > amax ? oa : amax;
            mn = omn < mn ? omn : mn;
            mx = omx > mx ? omx : mx;
        }
        if (lane == 0u) {
            s_amax[warp] = amax;
            s_mn[warp] = mn;
            s_mx[warp] = mx;
        }
        __syncthreads();
        if (threadIdx.x == 0u) {
            for (unsigned k = 1; k < warps; ++k) {
                amax = s_amax[k] > amax ? s_amax[k] : amax;
                mn = s_mn[k] < mn ? s_mn[k] : mn;
                mx = s_mx[k] > mx ? s_mx[k] : mx;
            }
            float scale;
            float off;
            if (amax >= DSRS_QZ_INF_BITS) {
                scale = __uint_as_float(DSRS_QZ_NAN_BITS);
                off = scale;
            } else if (sym) {
                scale = __double2float_rn(
                    __ddiv_rn((double)__uint_as_float(amax), (double)dsrs_qz_qmax(bits, sym)));
                off = 0.0f;
            } else {
                const float mnc = __fadd_rn(mn, 0.0f); // -0 -> +0
                const float mxc = __fadd_rn(mx, 0.0f);
                scale = __double2float_rn(__ddiv_rn(__dsub_rn((double)mxc, (double)mnc),
                                                    (double)dsrs_qz_qmax(bits, sym)));
                off = mnc;
            }
            scales[g] = scale;
            if (!sym) {
                offsets[g] = off;
            }
            s_scale = scale;
            s_offset = off;
        }
        __syncthreads();
        const dsrs_qz_group grp = dsrs_qz_make_group(s_scale, s_offset, bits, sym);

        // Quantize: quads of elements 4j .. 4j + 3 (one Philox block each).
        const dsrs_u64 j0 = s / 4;
        const dsrs_u64 j1 = (e - 1) / 4;
        for (dsrs_u64 j = j0 + threadIdx.x; j <= j1; j += blockDim.x) {
            dsrs_philox_words4 w;
            if (stoch) {
                w = dsrs_philox_block(seed, offset + j);
            } else {
                w.w[0] = w.w[1] = w.w[2] = w.w[3] = 0u;
            }
            int qv[4];
            bool inside[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const dsrs_u64 i = 4 * j + (dsrs_u64)k;
                inside[k] = i >= s && i < e;
                qv[k] = inside[k] ? dsrs_qz_quant1(In::load(in, i), grp, stoch, w.w[k]) : 0;
            }
            if (bits == 8) {
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    if (inside[k]) {
                        q[4 * j + (dsrs_u64)k] = (dsrs_u8)qv[k];
                    }
                }
            } else {
#pragma unroll
                for (int b = 0; b < 2; ++b) {
                    const dsrs_u64 e0 = 4 * j + 2 * (dsrs_u64)b;
                    const bool in0 = inside[2 * b];
                    const bool in1 = inside[2 * b + 1];
                    // Both nibbles ours, or the low one ours and the high one past the end.
                    // A byte shared with a neighbouring group is the fixup kernel's.
                    if (in0 && (in1 || e0 + 1 >= n)) {
                        const dsrs_u32 lo = (dsrs_u32)qv[2 * b] & 0xFu;
                        const dsrs_u32 hi = in1 ? ((dsrs_u32)qv[2 * b + 1] & 0xFu) : 0u;
                        q[e0 >> 1] = (dsrs_u8)(lo | (hi << 4));
                    }
                }
            }
        }
        __syncthreads(); // the shared values are rewritten for the next group
    }
}

// int4, odd group size: byte (s - 1) / 2 for every boundary s = g * gs with g odd.
template <typename In>
static __device__ __forceinline__ void dsrs_qz_fixup(
    const typename In::T* in, dsrs_u64 n, dsrs_u64 gs, dsrs_u8* q, const float* scales,
    const float* offsets, int bits, int sym, int stoch, dsrs_u64 seed, dsrs_u64 offset) {
    const dsrs_u64 groups = dsrs_qz_groups(n, gs);
    const dsrs_u64 stride = (dsrs_u64)gridDim.x * (dsrs_u64)blockDim.x;
    for (dsrs_u64 t = (dsrs_u64)blockIdx.x * blockDim.x + threadIdx.x; 2 * t + 1 < groups;
         t += stride) {
        const dsrs_u64 g = 2 * t + 1;
        const dsrs_u64 s = g * gs; // odd
        const dsrs_qz_group prev =
            dsrs_qz_make_group(scales[g - 1], sym ? 0.0f : offsets[g - 1], bits, sym);
        const dsrs_qz_group cur = dsrs_qz_make_group(scales[g], sym ? 0.0f : offsets[g], bits, sym);
        const dsrs_u32 w0 = stoch ? dsrs_qz_word(seed, offset, s - 1) : 0u;
        const dsrs_u32 w1 = stoch ? dsrs_qz_word(seed, offset, s) : 0u;
        const dsrs_u32 lo = (dsrs_u32)dsrs_qz_quant1(In::load(in, s - 1), prev, stoch, w0) & 0xFu;
        const dsrs_u32 hi = (dsrs_u32)dsrs_qz_quant1(In::load(in, s), cur, stoch, w1) & 0xFu;
        q[(s - 1) >> 1] = (dsrs_u8)(lo | (hi << 4));
    }
}

// ---- dequantize ---------------------------------------------------------------------------------------

template <typename Out>
static __device__ __forceinline__ void dsrs_qz_dequantize(const dsrs_u8* q, const float* scales,
                                                          const float* offsets, dsrs_u64 n,
                                                          dsrs_u64 gs, typename Out::T* out,
                                                          int bits, int sym) {
    const dsrs_u64 stride = (dsrs_u64)gridDim.x * (dsrs_u64)blockDim.x;
    for (dsrs_u64 i = (dsrs_u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const dsrs_u64 g = i / gs;
        const dsrs_qz_group grp =
            dsrs_qz_make_group(scales[g], sym ? 0.0f : offsets[g], bits, sym);
        int qv;
        if (bits == 8) {
            qv = sym ? (int)(signed char)q[i] : (int)q[i];
        } else {
            const dsrs_u32 nib = ((dsrs_u32)q[i >> 1] >> ((i & 1u) * 4u)) & 0xFu;
            qv = sym ? (int)(nib ^ 8u) - 8 : (int)nib;
        }
        Out::store(out, i, dsrs_qz_dequant1(qv, grp));
    }
}

// ---- exported kernels -----------------------------------------------------------------------------------

#define DSRS_QZ_KERNELS(SUFFIX, TYPE, ELEM)                                                        \
    extern "C" __global__ void dsrs_quantizer_quantize_##SUFFIX(                                   \
        const ELEM* in, unsigned long long n, unsigned long long group_size, unsigned char* q,    \
        float* scales, float* offsets, int bits, int symmetric, int stochastic,                  \
        unsigned long long seed, unsigned long long offset) {                                     \
        dsrs_qz_quantize<TYPE>(in, n, group_size, q, scales, offsets, bits, symmetric,           \
                               stochastic, seed, offset);                                         \
    }                                                                                             \
    extern "C" __global__ void dsrs_quantizer_fixup_##SUFFIX(                                      \
        const ELEM* in, unsigned long long n, unsigned long long group_size, unsigned char* q,    \
        float* scales, float* offsets, int bits, int symmetric, int stochastic,                  \
        unsigned long long seed, unsigned long long offset) {                                     \
        dsrs_qz_fixup<TYPE>(in, n, group_size, q, scales, offsets, bits, symmetric, stochastic,  \
                            seed, offset);                                                        \
    }                                                                                             \
    extern "C" __global__ void dsrs_quantizer_dequantize_##SUFFIX(                                 \
        const unsigned char* q, const float* scales, const float* offsets,                       \
        unsigned long long n, unsigned long long group_size, ELEM* out, int bits,                 \
        int symmetric) {                                                                          \
        dsrs_qz_dequantize<TYPE>(q, scales, offsets, n, group_size, out, bits, symmetric);       \
    }

DSRS_QZ_KERNELS(f32, dsrs_qz_f32, float)
DSRS_QZ_KERNELS(f16, dsrs_qz_f16, unsigned short)
DSRS_QZ_KERNELS(bf16, dsrs_qz_bf16, unsigned short)
