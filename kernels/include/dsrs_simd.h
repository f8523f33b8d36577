/*
 * dsrs_simd.h - the vector layer shared by the CPU optimizer ops (C++17, internal).
 *
 * An op writes its per-element math once, as a template over a "vector" type V, with the
 * free functions below (add, sub, mul, div, sqrt_, copysign_, splat<V>); the same template
 * then runs on
 *   float   (the scalar path: tails, and the whole array in a scalar build),
 *   VecF    (16 lanes of AVX-512F, 8 of AVX2, 4 of NEON, chosen by DSRS_SIMD_*).
 * Every function is one correctly rounded IEEE operation in every form, and fused
 * multiply-add is disabled (the .cpp puts the fp-contract pragma before its includes), so a
 * result does not depend on the path that computed it.
 *
 * Element types cross as tags: F32 (float), F16 (IEEE binary16 bits) and BF16 (bfloat16
 * bits); a NoCopy tag stands for "no parameter copy". load<D>/store<D> widen to float
 * exactly and round back to nearest-even:
 *   f16   F16C / AVX-512 vcvtph2ps, vcvtps2ph (RNE, subnormals kept), NEON vcvt, or the
 *         scalar code below: all identical, NaN payloads quieted as the hardware does;
 *   bf16  widening is a shift; rounding is integer round-to-nearest-even (NaN quieted),
 *         or VCVTNEPS2BF16 on AVX-512 BF16 builds, which is the same except that it
 *         flushes results below 2^-126 in magnitude to zero.
 *
 * drive<P, G, C>(op, ...) runs an op over one contiguous range: full vectors, then the tail
 * (masked AVX-512 vectors, or the scalar path).
 */
#ifndef DSRS_SIMD_H
#define DSRS_SIMD_H

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dsrs_op.h"

#if (defined(DSRS_SIMD_AVX512) || defined(DSRS_SIMD_AVX2)) && \
    (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge operand, which
// its -Wmaybe-uninitialized reports at every inlined use: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(DSRS_SIMD_AVX512)
#define DSRS_VEC_AVX512 1
#if defined(__AVX512BF16__)
#define DSRS_VEC_AVX512_BF16 1
#define DSRS_VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define DSRS_VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif
#else
#define DSRS_VEC_AVX2 1
#define DSRS_VEC_TARGET __attribute__((target("avx2,f16c")))
#endif
#elif defined(DSRS_SIMD_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define DSRS_VEC_NEON 1
#define DSRS_VEC_TARGET
#else
#define DSRS_VEC_TARGET
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace dsrs_simd {
namespace {

// ---- element types -------------------------------------------------------------------

struct F32 {
    typedef float T;
};
struct F16 {
    typedef uint16_t T;
};
struct BF16 {
    typedef uint16_t T;
};
struct NoCopy {
    typedef void T;
};

// The dtype codes of the optimizer ABI (dsrs_cpu_optim.h).
enum : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) { // inf / NaN
        return float_of(sign | 0x7F800000u | (man << 13));
    }
    if (exp == 0) {
        // zero or subnormal: man * 2^-24, exact in float
        const float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return float_of(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest even, subnormals kept, overflow to infinity, NaN quieted with the top
// payload bits kept (what vcvtps2ph does).
inline uint16_t f32_to_f16(float f) {
    uint32_t x = bits_of(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7FFFFFFFu;
    if (x > 0x7F800000u) {
        return (uint16_t)(sign | 0x7E00u | ((x >> 13) & 0x3FFu));
    }
    if (x >= 0x47800000u) { // >= 2^16: infinity (65520 and up round to it below)
        return (uint16_t)(sign | 0x7C00u);
    }
    if (x < 0x38800000u) {
        // below 2^-14: a subnormal result. Adding 0.5 (2^-1) aligns the value's bits so the
        // FP adder's own round-to-nearest-even does the rounding at 2^-24.
        const float magic = 0.5f;
        const uint32_t r = bits_of(float_of(x) + magic) - bits_of(magic);
        return (uint16_t)(sign | r);
    }
    const uint32_t odd = (x >> 13) & 1u;
    x += 0xC8000FFFu + odd; // rebias the exponent (-112 << 23) and round
    return (uint16_t)(sign | (x >> 13));
}

inline float bf16_to_f32(uint16_t b) {
    return float_of((uint32_t)b << 16);
}

inline uint16_t f32_to_bf16(float f) {
    const uint32_t x = bits_of(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((x >> 16) | 0x40u);
    }
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// ---- the scalar "vector" ----------------------------------------------------------------

inline float add(float a, float b) { return a + b; }
inline float sub(float a, float b) { return a - b; }
inline float mul(float a, float b) { return a * b; }
inline float div(float a, float b) { return a / b; }
inline float sqrt_(float a) { return std::sqrt(a); }
// |mag| with the sign of sgn (mag is non-negative in every caller).
inline float copysign_(float mag, float sgn) { return std::copysign(mag, sgn); }

template <class V> inline V splat(float x);
template <> inline float splat<float>(float x) { return x; }

template <class D> inline float load1(const typename D::T* p);
template <> inline float load1<F32>(const float* p) { return *p; }
template <> inline float load1<F16>(const uint16_t* p) { return f16_to_f32(*p); }
template <> inline float load1<BF16>(const uint16_t* p) { return bf16_to_f32(*p); }

template <class D> inline void store1(typename D::T* p, float x);
template <> inline void store1<F32>(float* p, float x) { *p = x; }
template <> inline void store1<F16>(uint16_t* p, float x) { *p = f32_to_f16(x); }
template <> inline void store1<BF16>(uint16_t* p, float x) { *p = f32_to_bf16(x); }
template <> inline void store1<NoCopy>(void*, float) {}

// ---- vectors ------------------------------------------------------------------------------

#if defined(DSRS_VEC_AVX512)
constexpr uint64_t kLanes = 16;
struct VecF {
    __m512 v;
};
DSRS_VEC_TARGET inline VecF add(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF sub(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF mul(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF div(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
// (maskz with a full mask: the same vsqrtps without _mm512_sqrt_ps's undefined operand,
// which trips GCC 12's -Wmaybe-uninitialized)
DSRS_VEC_TARGET inline VecF sqrt_(VecF a) { return {_mm512_maskz_sqrt_ps((__mmask16)0xFFFF, a.v)}; }
DSRS_VEC_TARGET inline VecF copysign_(VecF mag, VecF sgn) {
    const __m512i s = _mm512_set1_epi32((int)0x80000000u);
    return {_mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(s, _mm512_castps_si512(mag.v)),
                                                _mm512_and_si512(s, _mm512_castps_si512(sgn.v))))};
}
template <> DSRS_VEC_TARGET inline VecF splat<VecF>(float x) { return {_mm512_set1_ps(x)}; }

DSRS_VEC_TARGET inline __mmask16 tail_mask(uint64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)left) - 1u);
}

// Full loads/stores, and masked ones for the tail (inactive lanes read as 0, never stored).
template <class D> DSRS_VEC_TARGET inline VecF loadv(const typename D::T* p, __mmask16 k);
template <> DSRS_VEC_TARGET inline VecF loadv<F32>(const float* p, __mmask16 k) {
    return {k == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p)};
}
template <> DSRS_VEC_TARGET inline VecF loadv<F16>(const uint16_t* p, __mmask16 k) {
    const __m256i h = k == 0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(k, p);
    return {_mm512_cvtph_ps(h)};
}
template <> DSRS_VEC_TARGET inline VecF loadv<BF16>(const uint16_t* p, __mmask16 k) {
    const __m256i h = k == 0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(k, p);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}

DSRS_VEC_TARGET inline __m256i bf16_round(VecF x) {
#if defined(DSRS_VEC_AVX512_BF16)
    return (__m256i)_mm512_cvtneps_pbh(x.v);
#else
    const __m512i u = _mm512_castps_si512(x.v);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __m512i q = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q);
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q));
#endif
}

template <class D> DSRS_VEC_TARGET inline void storev(typename D::T* p, VecF x, __mmask16 k);
template <> DSRS_VEC_TARGET inline void storev<F32>(float* p, VecF x, __mmask16 k) {
    if (k == 0xFFFF) {
        _mm512_storeu_ps(p, x.v);
    } else {
        _mm512_mask_storeu_ps(p, k, x.v);
    }
}
template <> DSRS_VEC_TARGET inline void storev<F16>(uint16_t* p, VecF x, __mmask16 k) {
    const __m256i h = _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (k == 0xFFFF) {
        _mm256_storeu_si256((__m256i*)p, h);
    } else {
        _mm256_mask_storeu_epi16(p, k, h);
    }
}
template <> DSRS_VEC_TARGET inline void storev<BF16>(uint16_t* p, VecF x, __mmask16 k) {
    const __m256i h = bf16_round(x);
    if (k == 0xFFFF) {
        _mm256_storeu_si256((__m256i*)p, h);
    } else {
        _mm256_mask_storeu_epi16(p, k, h);
    }
}
template <> DSRS_VEC_TARGET inline void storev<NoCopy>(void*, VecF, __mmask16) {}

#elif defined(DSRS_VEC_AVX2)
constexpr uint64_t kLanes = 8;
struct VecF {
    __m256 v;
};
DSRS_VEC_TARGET inline VecF add(VecF a, VecF b) { return {_mm256_add_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF sub(VecF a, VecF b) { return {_mm256_sub_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF mul(VecF a, VecF b) { return {_mm256_mul_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF div(VecF a, VecF b) { return {_mm256_div_ps(a.v, b.v)}; }
DSRS_VEC_TARGET inline VecF sqrt_(VecF a) { return {_mm256_sqrt_ps(a.v)}; }
DSRS_VEC_TARGET inline VecF copysign_(VecF mag, VecF sgn) {
    const __m256 s = _mm256_set1_ps(-0.0f);
    return {_mm256_or_ps(_mm256_andnot_ps(s, mag.v), _mm256_and_ps(s, sgn.v))};
}
template <> DSRS_VEC_TARGET inline VecF splat<VecF>(float x) { return {_mm256_set1_ps(x)}; }

template <class D> DSRS_VEC_TARGET inline VecF loadv(const typename D::T* p);
template <> DSRS_VEC_TARGET inline VecF loadv<F32>(const float* p) { return {_mm256_loadu_ps(p)}; }
template <> DSRS_VEC_TARGET inline VecF loadv<F16>(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p))};
}
template <> DSRS_VEC_TARGET inline VecF loadv<BF16>(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
}

template <class D> DSRS_VEC_TARGET inline void storev(typename D::T* p, VecF x);
template <> DSRS_VEC_TARGET inline void storev<F32>(float* p, VecF x) { _mm256_storeu_ps(p, x.v); }
template <> DSRS_VEC_TARGET inline void storev<F16>(uint16_t* p, VecF x) {
    _mm_storeu_si128((__m128i*)p, _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
template <> DSRS_VEC_TARGET inline void storev<BF16>(uint16_t* p, VecF x) {
    const __m256i u = _mm256_castps_si256(x.v);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    const __m256i q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, q, nan);
    // 8 x u32 (each <= 0xFFFF) -> 8 x u16: pack within lanes, then gather the two halves.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
    _mm_storeu_si128((__m128i*)p, _mm256_castsi256_si128(packed));
}
template <> DSRS_VEC_TARGET inline void storev<NoCopy>(void*, VecF) {}

#elif defined(DSRS_VEC_NEON)
constexpr uint64_t kLanes = 4;
struct VecF {
    float32x4_t v;
};
inline VecF add(VecF a, VecF b) { return {vaddq_f32(a.v, b.v)}; }
inline VecF sub(VecF a, VecF b) { return {vsubq_f32(a.v, b.v)}; }
inline VecF mul(VecF a, VecF b) { return {vmulq_f32(a.v, b.v)}; }
inline VecF div(VecF a, VecF b) { return {vdivq_f32(a.v, b.v)}; }
inline VecF sqrt_(VecF a) { return {vsqrtq_f32(a.v)}; }
inline VecF copysign_(VecF mag, VecF sgn) {
    return {vbslq_f32(vdupq_n_u32(0x80000000u), sgn.v, mag.v)};
}
template <> inline VecF splat<VecF>(float x) { return {vdupq_n_f32(x)}; }

template <class D> inline VecF loadv(const typename D::T* p);
template <> inline VecF loadv<F32>(const float* p) { return {vld1q_f32(p)}; }
template <> inline VecF loadv<F16>(const uint16_t* p) {
    return {vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)))};
}
template <> inline VecF loadv<BF16>(const uint16_t* p) {
    return {vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16))};
}

template <class D> inline void storev(typename D::T* p, VecF x);
template <> inline void storev<F32>(float* p, VecF x) { vst1q_f32(p, x.v); }
template <> inline void storev<F16>(uint16_t* p, VecF x) {
    vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(x.v)));
}
template <> inline void storev<BF16>(uint16_t* p, VecF x) {
    const uint32x4_t u = vreinterpretq_u32_f32(x.v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint16x4_t r = vshrn_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7FFF))), 16);
    const uint16x4_t q = vorr_u16(vshrn_n_u32(u, 16), vdup_n_u16(0x40));
    const uint16x4_t is_num = vmovn_u32(vceqq_f32(x.v, x.v));
    vst1_u16(p, vbsl_u16(is_num, r, q));
}
template <> inline void storev<NoCopy>(void*, VecF) {}
#endif

// p + i for a typed pointer; the "no copy" pointer (void*) stays as it is.
template <class T> inline T* at(T* p, uint64_t i) { return p + i; }
inline void* at(void* p, uint64_t) { return p; }

// ---- driving an op over a range ---------------------------------------------------------
//
// Op provides:  static constexpr int kStates (1 or 2) and
//   template <class V> void apply(V& p, V g, V& s0, V& s1) const
// p is the parameter (updated), g the gradient, s0/s1 the fp32 states (s1 unused when
// kStates == 1). The updated p is stored to the parameters and, unless C is NoCopy, to the
// copy.

template <class Op, class P, class G, class C>
DSRS_VEC_TARGET void drive(const Op& op, typename P::T* DSRS_RESTRICT p, const typename G::T* DSRS_RESTRICT g,
                           float* DSRS_RESTRICT s0, float* DSRS_RESTRICT s1, typename C::T* DSRS_RESTRICT c,
                           uint64_t n) {
    uint64_t i = 0;
#if defined(DSRS_VEC_AVX512)
    for (; i < n; i += kLanes) {
        const __mmask16 k = tail_mask(n - i);
        VecF pv = loadv<P>(p + i, k);
        const VecF gv = loadv<G>(g + i, k);
        VecF a = loadv<F32>(s0 + i, k);
        VecF b = a;
        if (Op::kStates == 2) {
            b = loadv<F32>(s1 + i, k);
        }
        op.apply(pv, gv, a, b);
        storev<P>(p + i, pv, k);
        storev<F32>(s0 + i, a, k);
        if (Op::kStates == 2) {
            storev<F32>(s1 + i, b, k);
        }
        storev<C>(at(c, i), pv, k);
    }
    return;
#elif defined(DSRS_VEC_AVX2) || defined(DSRS_VEC_NEON)
    for (; i + kLanes <= n; i += kLanes) {
        VecF pv = loadv<P>(p + i);
        const VecF gv = loadv<G>(g + i);
        VecF a = loadv<F32>(s0 + i);
        VecF b = a;
        if (Op::kStates == 2) {
            b = loadv<F32>(s1 + i);
        }
        op.apply(pv, gv, a, b);
        storev<P>(p + i, pv);
        storev<F32>(s0 + i, a);
        if (Op::kStates == 2) {
            storev<F32>(s1 + i, b);
        }
        storev<C>(at(c, i), pv);
    }
#endif
    for (; i < n; ++i) {
        float pv = load1<P>(p + i);
        const float gv = load1<G>(g + i);
        float a = s0[i];
        float b = Op::kStates == 2 ? s1[i] : 0.0f;
        op.apply(pv, gv, a, b);
        store1<P>(p + i, pv);
        s0[i] = a;
        if (Op::kStates == 2) {
            s1[i] = b;
        }
        store1<C>(at(c, i), pv);
    }
}

// Elements per tile handed to a thread (32 KiB of fp32 per array).
constexpr uint64_t kTile = 8192;

// Zeroes len gradients from g on: the engine's zero_grad fused into the step's pass, done
// per tile right after the tile was read, while it is in cache.
template <class G>
inline void zero_tile(const typename G::T* g, uint64_t len) {
    std::memset((void*)g, 0, (size_t)len * sizeof(typename G::T));
}

// Runs drive<> over n elements: one streaming pass on one thread, or kTile-element tiles
// split statically over OpenMP threads (each thread one contiguous run of tiles). With
// zero_g the gradients are zeroed tile by tile after use (DSRS_OPTIM_ZERO_GRADS).
template <class Op, class P, class G, class C>
void run(const Op& op, void* p, const void* g, float* s0, float* s1, void* c, uint64_t n, int32_t threads,
         bool zero_g) {
    typedef typename P::T PT;
    typedef typename G::T GT;
    typedef typename C::T CT;
    PT* pp = (PT*)p;
    const GT* gp = (const GT*)g;
    CT* cp = (CT*)c;
#if defined(_OPENMP)
    const uint64_t tiles = (n + kTile - 1) / kTile;
    int32_t nt = threads > 0 ? threads : omp_get_max_threads();
    if ((uint64_t)nt > tiles) {
        nt = (int32_t)tiles;
    }
    if (nt > 1) {
        const int64_t ntiles = (int64_t)tiles;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t t = 0; t < ntiles; ++t) {
            const uint64_t b = (uint64_t)t * kTile;
            const uint64_t len = n - b < kTile ? n - b : kTile;
            drive<Op, P, G, C>(op, pp + b, gp + b, s0 + b, s1 == nullptr ? nullptr : s1 + b,
                               cp == nullptr ? cp : at(cp, b), len);
            if (zero_g) {
                zero_tile<G>(gp + b, len);
            }
        }
        return;
    }
#else
    (void)threads;
#endif
    if (!zero_g) {
        drive<Op, P, G, C>(op, pp, gp, s0, s1, cp, n);
        return;
    }
    for (uint64_t b = 0; b < n; b += kTile) {
        const uint64_t len = n - b < kTile ? n - b : kTile;
        drive<Op, P, G, C>(op, pp + b, gp + b, s0 + b, s1 == nullptr ? nullptr : s1 + b,
                           cp == nullptr ? cp : at(cp, b), len);
        zero_tile<G>(gp + b, len);
    }
}

// Picks the instantiation for the dtype codes. The combinations (checked by the caller with
// valid_dtypes): gradients in the parameters' dtype or fp32, or any with fp32 parameters; a
// copy (fp16 or bf16) only of fp32 parameters.
template <class Op, class P, class G>
void run_copy(const Op& op, int32_t copy_dtype, void* p, const void* g, float* s0, float* s1, void* c,
              uint64_t n, int32_t threads, bool zero_g) {
    if (c == nullptr) {
        run<Op, P, G, NoCopy>(op, p, g, s0, s1, nullptr, n, threads, zero_g);
    } else if (copy_dtype == kF16) {
        run<Op, P, G, F16>(op, p, g, s0, s1, c, n, threads, zero_g);
    } else {
        run<Op, P, G, BF16>(op, p, g, s0, s1, c, n, threads, zero_g);
    }
}

inline bool valid_dtypes(int32_t pd, int32_t gd, bool has_copy, int32_t cd) {
    const bool p_ok = pd == kF32 || pd == kF16 || pd == kBF16;
    const bool g_ok = gd == kF32 || gd == kF16 || gd == kBF16;
    if (!p_ok || !g_ok) {
        return false;
    }
    if (pd != kF32 && gd != pd && gd != kF32) {
        return false;
    }
    if (has_copy && (pd != kF32 || (cd != kF16 && cd != kBF16))) {
        return false;
    }
    return true;
}

template <class Op>
void dispatch(const Op& op, int32_t pd, int32_t gd, int32_t cd, void* p, const void* g, float* s0, float* s1,
              void* c, uint64_t n, int32_t threads, bool zero_g) {
    if (pd == kF32) {
        if (gd == kF32) {
            run_copy<Op, F32, F32>(op, cd, p, g, s0, s1, c, n, threads, zero_g);
        } else if (gd == kF16) {
            run_copy<Op, F32, F16>(op, cd, p, g, s0, s1, c, n, threads, zero_g);
        } else {
            run_copy<Op, F32, BF16>(op, cd, p, g, s0, s1, c, n, threads, zero_g);
        }
    } else if (pd == kF16) {
        if (gd == kF16) {
            run<Op, F16, F16, NoCopy>(op, p, g, s0, s1, nullptr, n, threads, zero_g);
        } else {
            run<Op, F16, F32, NoCopy>(op, p, g, s0, s1, nullptr, n, threads, zero_g);
        }
    } else {
        if (gd == kBF16) {
            run<Op, BF16, BF16, NoCopy>(op, p, g, s0, s1, nullptr, n, threads, zero_g);
        } else {
            run<Op, BF16, F32, NoCopy>(op, p, g, s0, s1, nullptr, n, threads, zero_g);
        }
    }
}

// Checks the arrays of an optimizer step (see dsrs_cpu_optim.h). need_m / need_v: whether
// exp_avg / exp_avg_sq are required. Returns a DSRS_OP_* status.
inline int32_t check_buffers(const void* params, const void* grads, const void* exp_avg,
                             const void* exp_avg_sq, const void* copy, uint64_t n, int32_t pd,
                             int32_t gd, int32_t cd, int32_t flags, bool need_m, bool need_v) {
    if (n > 0 && (params == nullptr || grads == nullptr || (need_m && exp_avg == nullptr) ||
                  (need_v && exp_avg_sq == nullptr))) {
        return DSRS_OP_ERR_NULL;
    }
    if ((flags & ~DSRS_OPTIM_ZERO_GRADS) != 0) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (!valid_dtypes(pd, gd, copy != nullptr, cd)) {
        return 3; /* DSRS_OP_ERR_DTYPE */
    }
    return DSRS_OP_OK;
}

inline bool in_unit_interval(float b) { // [0, 1); false for NaN
    return b >= 0.0f && b < 1.0f;
}

inline bool finite_nonneg(float x) { return std::isfinite(x) && x >= 0.0f; }
inline bool finite_pos(float x) { return std::isfinite(x) && x > 0.0f; }

// 1/grad_scale in double, rounded to float: what every implementation multiplies by.
inline float inv_scale(float grad_scale) { return (float)(1.0 / (double)grad_scale); }

inline int32_t max_threads() {
#if defined(_OPENMP)
    return (int32_t)omp_get_max_threads();
#else
    return 1;
#endif
}

} // namespace
} // namespace dsrs_simd

#endif /* DSRS_SIMD_H */
