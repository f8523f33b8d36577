// quantizer.cpp - the cpu_quantizer op: group-wise int8 / packed int4 quantization.
//
// The format, the formulas and the C interface are in kernels/include/dsrs_quantizer.h
// (and docs/quantizer.md). The CUDA kernels (kernels/cuda/quantizer.cu) and the Rust
// reference (src/ops/quantizer/reference.rs) evaluate the same IEEE operations and agree
// bit for bit.
//
// Structure:
//   * Work is split into segments: the part of one group inside one tile. A segment is
//     quantized by seg_quantize (stats were computed before) and dequantized by
//     seg_dequantize; both handle an odd start (int4: the element shares its byte with the
//     previous segment, which the same thread wrote just before) and call a "bulk"
//     function of the build's SIMD path for the rest.
//   * Groups of up to kFuseMax elements are quantized in one pass per tile of K whole groups
//     (K even, so every tile starts at an even element and no int4 byte spans two tiles):
//     stats then quantize, while the group is in cache. Larger groups take two phases:
//     stats of each group (its chunks in parallel, reduced by OpenMP), then quantization
//     over tiles of the flat tensor.
//   * SIMD paths: AVX-512 (F, BW, VL; masked tails), AVX2 (+F16C; scalar tails), scalar.
//     They are compiled through target attributes, so -march is not required. Defining
//     DSRS_QUANTIZER_FORCE_AVX2 selects the AVX2 path on any x86 build (tests use it to
//     check that path on AVX-512 machines). AArch64 builds use the scalar path.
//   * Stochastic rounding reads Philox words for a chunk of up to kWords elements into a
//     stack buffer (4 x 16 blocks per step on AVX-512), then quantizes the chunk.
//
// Reductions are order-independent: the absolute maximum is an integer maximum of bit
// patterns, minimum and maximum of finite floats are unique up to the sign of zero, which
// `+ 0.0f` removes. Every element operation is a correctly rounded IEEE operation, and
// fused multiply-add is disabled for this file, so results do not depend on the SIMD
// path, the thread count or the alignment. (The default rounding mode and no
// flush-to-zero are assumed, as everywhere in the crate.)

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "dsrs_quantizer.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#if defined(DSRS_QUANTIZER_FORCE_AVX2)
#define DSRS_QZ_PATH_AVX2 1
#elif defined(DSRS_SIMD_AVX512)
#define DSRS_QZ_PATH_AVX512 1
#elif defined(DSRS_SIMD_AVX2)
#define DSRS_QZ_PATH_AVX2 1
#endif
#endif

#if defined(DSRS_QZ_PATH_AVX512) || defined(DSRS_QZ_PATH_AVX2)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_epi32() (self-initialized) as the
// pass-through operand of full-mask builtins, which -Wall reports as uninitialized once
// they are inlined (GCC PR105593, fixed in later releases). The values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#endif

namespace {

// ---- constants ---------------------------------------------------------------------------

constexpr uint32_t kNaNBits = 0x7fc00000u;  // the canonical NaN every implementation stores
constexpr uint32_t kInfBits = 0x7f800000u;
constexpr uint64_t kFuseMax = 65536;         // largest group quantized in one pass per tile
constexpr uint64_t kTile = 32768;            // elements per tile (even)
constexpr uint64_t kChunk = 65536;           // elements per parallel stats chunk (phase 1)
constexpr uint64_t kWords = 1024;            // elements per Philox word buffer (even)

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;

// ---- scalar helpers ------------------------------------------------------------------------

inline uint32_t f2u(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float u2f(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// float16 bits -> float, exact.
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t man = h & 0x3ffu;
    if (exp == 0x1fu) {
        return u2f(sign | 0x7f800000u | (man << 13)); // Inf, NaN (payload kept)
    }
    if (exp == 0) {
        const float v = (float)man * 5.9604644775390625e-08f; // man * 2^-24, exact
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

// float -> float16 bits, round to nearest even; overflow gives Inf; NaN stays a quiet NaN
// (sign | 0x7e00 | top payload bits), as F16C's vcvtps2ph.
inline uint16_t f32_to_f16(float f) {
    const uint32_t x = f2u(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return (uint16_t)(sign | 0x7e00u | ((ax & 0x007fffffu) >> 13));
    }
    if (ax >= 0x477ff000u) { // >= 65520: rounds to Inf
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) { // normal float16
        const uint32_t r = ax - 0x38000000u;
        return (uint16_t)(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
    }
    if (ax <= 0x33000000u) { // <= 2^-25: zero
        return (uint16_t)sign;
    }
    const uint32_t e = ax >> 23;
    const uint32_t mant = (ax & 0x007fffffu) | 0x00800000u;
    const uint32_t shift = 126u - e;
    uint32_t q = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (q & 1u))) {
        ++q;
    }
    return (uint16_t)(sign | q);
}

inline float bf16_to_f32(uint16_t h) {
    return u2f((uint32_t)h << 16);
}

// float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
inline uint16_t f32_to_bf16(float f) {
    const uint32_t b = f2u(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((b >> 16) | 0x0040u);
    }
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

template <int DT>
inline float load1(const void* in, uint64_t i) {
    if (DT == DSRS_QUANTIZER_F32) {
        return static_cast<const float*>(in)[i];
    } else if (DT == DSRS_QUANTIZER_F16) {
        return f16_to_f32(static_cast<const uint16_t*>(in)[i]);
    } else {
        return bf16_to_f32(static_cast<const uint16_t*>(in)[i]);
    }
}

template <int DT>
inline void store1(void* out, uint64_t i, float y) {
    if (DT == DSRS_QUANTIZER_F32) {
        static_cast<float*>(out)[i] = y;
    } else if (DT == DSRS_QUANTIZER_F16) {
        static_cast<uint16_t*>(out)[i] = f32_to_f16(y);
    } else {
        static_cast<uint16_t*>(out)[i] = f32_to_bf16(y);
    }
}

// One Philox4x32-10 block: counter [block lo, block hi, 0, 0], key [seed lo, seed hi].
inline void philox_block(uint64_t seed, uint64_t block, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += kW0;
            k1 += kW1;
        }
        const uint64_t p0 = (uint64_t)kM0 * c0;
        const uint64_t p1 = (uint64_t)kM1 * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// The Philox word of element i.
inline uint32_t philox_word(uint64_t seed, uint64_t offset, uint64_t i) {
    uint32_t w[4];
    philox_block(seed, offset + i / 4, w);
    return w[i % 4];
}

// ---- per-group parameters ---------------------------------------------------------------------

struct Stats {
    uint32_t amax; // max of (bits & 0x7fffffff)
    float mn;      // min (asymmetric)
    float mx;      // max (asymmetric)
};

inline Stats stats_empty() {
    Stats s;
    s.amax = 0;
    s.mn = INFINITY;
    s.mx = -INFINITY;
    return s;
}

[[maybe_unused]] inline void stats_merge(Stats& a, const Stats& b) {
    a.amax = a.amax > b.amax ? a.amax : b.amax;
    a.mn = b.mn < a.mn ? b.mn : a.mn;
    a.mx = b.mx > a.mx ? b.mx : a.mx;
}

// What one group's elements need.
struct Group {
    float scale;
    float mn;   // asymmetric: the offset; symmetric: 0
    float lo;   // clamp bounds
    float hi;
    bool asym;
    bool active; // scale > 0 (else every q is 0)
};

struct Job {
    int dt;
    int bits;
    bool sym;
    bool stoch;
    uint64_t gs;
    uint64_t n;
    uint64_t seed;
    uint64_t offset;
    const void* in;
    uint8_t* q;
    float* scales;
    float* offsets;
    void* out;
    const uint8_t* qin;
    const float* scales_in;
    const float* offsets_in;
};

inline float qmax_of(const Job& j) {
    if (j.sym) {
        return j.bits == 8 ? 127.0f : 7.0f;
    }
    return j.bits == 8 ? 255.0f : 15.0f;
}

// Scale and offset of a group from its stats (the header's formulas).
inline void finish_group(const Job& j, const Stats& s, float* scale, float* offset) {
    if (s.amax >= kInfBits) {
        *scale = u2f(kNaNBits);
        *offset = u2f(kNaNBits);
        return;
    }
    const double qmax = (double)qmax_of(j);
    if (j.sym) {
        *scale = (float)((double)u2f(s.amax) / qmax);
        *offset = 0.0f;
    } else {
        const float mn = s.mn + 0.0f;
        const float mx = s.mx + 0.0f;
        *scale = (float)(((double)mx - (double)mn) / qmax);
        *offset = mn;
    }
}

inline Group make_group(const Job& j, float scale, float offset) {
    Group g;
    g.scale = scale;
    g.asym = !j.sym;
    g.mn = j.sym ? 0.0f : offset;
    g.lo = j.sym ? -qmax_of(j) : 0.0f;
    g.hi = qmax_of(j);
    g.active = scale > 0.0f;
    return g;
}

// One element (the header's formulas); `w` is its Philox word when stochastic.
inline int32_t quant1(float x, const Group& g, bool stoch, uint32_t w) {
    const float t = g.asym ? x - g.mn : x;
    const float v = t / g.scale;
    if (!stoch) {
        float r = std::rint(v);
        r = r > g.lo ? r : g.lo;
        r = r < g.hi ? r : g.hi;
        return (int32_t)r;
    }
    const double s = (double)v + (double)(w >> 8) * 5.9604644775390625e-08;
    double r = std::floor(s);
    r = r > (double)g.lo ? r : (double)g.lo;
    r = r < (double)g.hi ? r : (double)g.hi;
    return (int32_t)r;
}

inline float dequant1(int32_t qv, const Group& g) {
    float y = (float)qv * g.scale;
    if (g.asym) {
        y = y + g.mn;
    }
    return y != y ? u2f(kNaNBits) : y;
}

inline int32_t q_at(const Job& j, const uint8_t* q, uint64_t i) {
    if (j.bits == 8) {
        return j.sym ? (int32_t)(int8_t)q[i] : (int32_t)q[i];
    }
    const uint32_t nib = (q[i >> 1] >> ((i & 1) * 4)) & 0xFu;
    return j.sym ? (int32_t)(nib ^ 8u) - 8 : (int32_t)nib;
}

// ---- scalar bulk functions (also the tails of the AVX2 path) -------------------------------------

template <int DT>
void stats_scalar(const void* in, uint64_t s, uint64_t e, Stats& st) {
    for (uint64_t i = s; i < e; ++i) {
        const float x = load1<DT>(in, i);
        const uint32_t a = f2u(x) & 0x7fffffffu;
        st.amax = a > st.amax ? a : st.amax;
        st.mn = x < st.mn ? x : st.mn;
        st.mx = x > st.mx ? x : st.mx;
    }
}

// Quantizes [i, e) with i even when int4; words[k] is the word of element wbase + k.
template <int DT>
void quant_scalar(const Job& j, const Group& g, uint64_t i, uint64_t e, const uint32_t* words,
                  uint64_t wbase) {
    const void* in = j.in;
    if (j.bits == 8) {
        for (; i < e; ++i) {
            const uint32_t w = j.stoch ? words[i - wbase] : 0u;
            j.q[i] = (uint8_t)quant1(load1<DT>(in, i), g, j.stoch, w);
        }
        return;
    }
    for (; i < e; i += 2) {
        const uint32_t w0 = j.stoch ? words[i - wbase] : 0u;
        const uint32_t lo = (uint32_t)quant1(load1<DT>(in, i), g, j.stoch, w0) & 0xFu;
        uint32_t hi = 0;
        if (i + 1 < e) {
            const uint32_t w1 = j.stoch ? words[i + 1 - wbase] : 0u;
            hi = (uint32_t)quant1(load1<DT>(in, i + 1), g, j.stoch, w1) & 0xFu;
        }
        j.q[i >> 1] = (uint8_t)(lo | (hi << 4));
    }
}

template <int DT>
void dequant_scalar(const Job& j, const Group& g, uint64_t i, uint64_t e) {
    for (; i < e; ++i) {
        store1<DT>(j.out, i, dequant1(q_at(j, j.qin, i), g));
    }
}

// Words of elements [i0, i0 + count) into buf; returns the element of buf[0] (4 * (i0 / 4)).
[[maybe_unused]] uint64_t fill_words_scalar(const Job& j, uint64_t i0, uint64_t count, uint32_t* buf) {
    const uint64_t b0 = i0 / 4;
    const uint64_t b1 = (i0 + count - 1) / 4;
    for (uint64_t b = b0; b <= b1; ++b) {
        philox_block(j.seed, j.offset + b, buf + 4 * (b - b0));
    }
    return 4 * b0;
}

// ---- AVX-512 ------------------------------------------------------------------------------------

#if defined(DSRS_QZ_PATH_AVX512)
#define DSRS_QZ_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define DSRS_QZ_LEVEL "avx512"

DSRS_QZ_TARGET inline __mmask16 mask16(uint64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)left) - 1u);
}

template <int DT>
DSRS_QZ_TARGET inline __m512 load16(const void* in, uint64_t i, __mmask16 k) {
    if (DT == DSRS_QUANTIZER_F32) {
        return _mm512_maskz_loadu_ps(k, static_cast<const float*>(in) + i);
    } else if (DT == DSRS_QUANTIZER_F16) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(in) + i));
    } else {
        const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(in) + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
}

template <int DT>
DSRS_QZ_TARGET inline void store16(void* out, uint64_t i, __mmask16 k, __m512 y) {
    if (DT == DSRS_QUANTIZER_F32) {
        _mm512_mask_storeu_ps(static_cast<float*>(out) + i, k, y);
    } else if (DT == DSRS_QUANTIZER_F16) {
        const __m256i h = _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, k, h);
    } else {
        // Round to nearest even on the bits (y is never a non-canonical NaN here, and the
        // canonical NaN 0x7fc00000 gives 0x7fc0 by the same formula).
        const __m512i b = _mm512_castps_si512(y);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        const __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, k, _mm512_cvtepi32_epi16(r));
    }
}

template <int DT>
DSRS_QZ_TARGET void stats_bulk(const void* in, uint64_t s, uint64_t e, Stats& st) {
    __m512i amax = _mm512_setzero_si512();
    __m512 mn = _mm512_set1_ps(INFINITY);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    for (uint64_t i = s; i < e; i += 16) {
        const __mmask16 k = mask16(e - i);
        const __m512 x = load16<DT>(in, i, k);
        amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_castps_si512(x), abs_mask));
        mn = _mm512_mask_min_ps(mn, k, mn, x);
        mx = _mm512_mask_max_ps(mx, k, mx, x);
    }
    Stats part;
    part.amax = _mm512_reduce_max_epu32(amax);
    part.mn = _mm512_reduce_min_ps(mn);
    part.mx = _mm512_reduce_max_ps(mx);
    stats_merge(st, part);
}

// S x 16 Philox blocks (first .. first + 16 S - 1) as 64 S words in element order. The S
// sets are independent, so their multiply chains overlap (one set alone is bound by the
// latency of vpmulld).
template <int S>
DSRS_QZ_TARGET inline void philox_x16(uint64_t seed, uint64_t first, uint32_t* out) {
    __m512i c0[S], c1[S], c2[S], c3[S];
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int s = 0; s < S; ++s) {
        // Counters as (lo, hi) 32-bit halves, carrying into hi where lo wraps.
        const uint64_t base = first + 16 * (uint64_t)s;
        const __m512i base_lo = _mm512_set1_epi32((int)(uint32_t)base);
        const __m512i base_hi = _mm512_set1_epi32((int)(uint32_t)(base >> 32));
        c0[s] = _mm512_add_epi32(base_lo, iota);
        const __mmask16 carry = _mm512_cmplt_epu32_mask(c0[s], base_lo);
        c1[s] = _mm512_mask_add_epi32(base_hi, carry, base_hi, _mm512_set1_epi32(1));
        c2[s] = _mm512_setzero_si512();
        c3[s] = _mm512_setzero_si512();
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const __m512i m0 = _mm512_set1_epi32((int)kM0);
    const __m512i m1 = _mm512_set1_epi32((int)kM1);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += kW0;
            k1 += kW1;
        }
        const __m512i key0 = _mm512_set1_epi32((int)k0);
        const __m512i key1 = _mm512_set1_epi32((int)k1);
        for (int s = 0; s < S; ++s) {
            const __m512i lo0 = _mm512_mullo_epi32(m0, c0[s]);
            const __m512i lo1 = _mm512_mullo_epi32(m1, c2[s]);
            // 32x32 -> high 32: even lanes from vpmuludq >> 32, odd lanes from vpmuludq of
            // the odd halves (already in the high half of each 64-bit lane).
            const __m512i hi0 = _mm512_mask_blend_epi32(
                (__mmask16)0xAAAA, _mm512_srli_epi64(_mm512_mul_epu32(m0, c0[s]), 32),
                _mm512_mul_epu32(m0, _mm512_srli_epi64(c0[s], 32)));
            const __m512i hi1 = _mm512_mask_blend_epi32(
                (__mmask16)0xAAAA, _mm512_srli_epi64(_mm512_mul_epu32(m1, c2[s]), 32),
                _mm512_mul_epu32(m1, _mm512_srli_epi64(c2[s], 32)));
            c0[s] = _mm512_ternarylogic_epi32(hi1, c1[s], key0, 0x96); // hi1 ^ c1 ^ k0
            c2[s] = _mm512_ternarylogic_epi32(hi0, c3[s], key1, 0x96); // hi0 ^ c3 ^ k1
            c1[s] = lo1;
            c3[s] = lo0;
        }
    }
    for (int s = 0; s < S; ++s) {
        // Transpose: per 128-bit lane l, blocks 4l..4l+3 -> A (4l), B, C, D (4l+3).
        const __m512i t01l = _mm512_unpacklo_epi32(c0[s], c1[s]);
        const __m512i t23l = _mm512_unpacklo_epi32(c2[s], c3[s]);
        const __m512i t01h = _mm512_unpackhi_epi32(c0[s], c1[s]);
        const __m512i t23h = _mm512_unpackhi_epi32(c2[s], c3[s]);
        const __m512i A = _mm512_unpacklo_epi64(t01l, t23l);
        const __m512i B = _mm512_unpackhi_epi64(t01l, t23l);
        const __m512i C = _mm512_unpacklo_epi64(t01h, t23h);
        const __m512i D = _mm512_unpackhi_epi64(t01h, t23h);
        const __m512i ab01 = _mm512_shuffle_i32x4(A, B, _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i cd01 = _mm512_shuffle_i32x4(C, D, _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i ab23 = _mm512_shuffle_i32x4(A, B, _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i cd23 = _mm512_shuffle_i32x4(C, D, _MM_SHUFFLE(3, 2, 3, 2));
        uint32_t* o = out + 64 * s;
        _mm512_storeu_si512(o + 0, _mm512_shuffle_i32x4(ab01, cd01, _MM_SHUFFLE(2, 0, 2, 0)));
        _mm512_storeu_si512(o + 16, _mm512_shuffle_i32x4(ab01, cd01, _MM_SHUFFLE(3, 1, 3, 1)));
        _mm512_storeu_si512(o + 32, _mm512_shuffle_i32x4(ab23, cd23, _MM_SHUFFLE(2, 0, 2, 0)));
        _mm512_storeu_si512(o + 48, _mm512_shuffle_i32x4(ab23, cd23, _MM_SHUFFLE(3, 1, 3, 1)));
    }
}

// Words of elements [i0, i0 + count) into buf (whole 16-block steps: up to 63 blocks more);
// returns the element of buf[0] (4 * (i0 / 4)).
uint64_t fill_words(const Job& j, uint64_t i0, uint64_t count, uint32_t* buf) {
    const uint64_t b0 = i0 / 4;
    const uint64_t nblocks = (i0 + count - 1) / 4 - b0 + 1;
    uint64_t b = 0;
    for (; b + 64 <= nblocks; b += 64) {
        philox_x16<4>(j.seed, j.offset + b0 + b, buf + 4 * b);
    }
    for (; b < nblocks; b += 16) {
        philox_x16<1>(j.seed, j.offset + b0 + b, buf + 4 * b);
    }
    return 4 * b0;
}

// The q values of 16 lanes (inactive lanes 0).
DSRS_QZ_TARGET inline __m512i quant16(__m512 x, __mmask16 k, const Group& g, bool stoch,
                                      const uint32_t* w) {
    const __m512 t = g.asym ? _mm512_sub_ps(x, _mm512_set1_ps(g.mn)) : x;
    const __m512 v = _mm512_div_ps(t, _mm512_set1_ps(g.scale));
    __m512i qi;
    if (!stoch) {
        __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_max_ps(r, _mm512_set1_ps(g.lo)); // r > lo ? r : lo
        r = _mm512_min_ps(r, _mm512_set1_ps(g.hi)); // r < hi ? r : hi
        qi = _mm512_cvttps_epi32(r);
    } else {
        // Equivalent to the specification's floor(f64(v) + u) clamped in double, in fewer
        // operations: v is first clamped to [lo - 1, hi + 1] (which cannot change the
        // clamped result, and keeps the conversion in range); the product u24 * 2^-24 is
        // exact, so the fused multiply-add rounds exactly as the separate addition; the
        // conversion rounds toward -inf (floor); the final clamp is on integers.
        const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(g.lo - 1.0f)),
                                        _mm512_set1_ps(g.hi + 1.0f));
        const __m512i u24 = _mm512_srli_epi32(_mm512_maskz_loadu_epi32(k, w), 8);
        const __m512d scale24 = _mm512_set1_pd(5.9604644775390625e-08);
        const __m512d s_a = _mm512_fmadd_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(u24)),
                                            scale24, _mm512_cvtps_pd(_mm512_castps512_ps256(vc)));
        const __m512d s_b = _mm512_fmadd_pd(
            _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(u24, 1)), scale24,
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vc), 1))));
        const __m256i r_a = _mm512_cvt_roundpd_epi32(s_a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m256i r_b = _mm512_cvt_roundpd_epi32(s_b, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        qi = _mm512_inserti64x4(_mm512_castsi256_si512(r_a), r_b, 1);
        qi = _mm512_min_epi32(_mm512_max_epi32(qi, _mm512_set1_epi32((int)g.lo)),
                              _mm512_set1_epi32((int)g.hi));
    }
    return _mm512_maskz_mov_epi32(k, qi);
}

// Quantizes [i, e) (i even for int4) in 16-lane steps with masked tails.
template <int DT>
DSRS_QZ_TARGET void quant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e,
                               const uint32_t* words, uint64_t wbase) {
    const __m512i nib = _mm512_set1_epi32(0xF);
    for (; i < e; i += 16) {
        const uint64_t left = e - i;
        const __mmask16 k = mask16(left);
        const __m512 x = load16<DT>(j.in, i, k);
        const __m512i qi = quant16(x, k, g, j.stoch, j.stoch ? words + (i - wbase) : nullptr);
        if (j.bits == 8) {
            _mm512_mask_cvtepi32_storeu_epi8(j.q + i, k, qi);
        } else {
            const __m512i t = _mm512_and_si512(qi, nib);
            const __m512i p = _mm512_or_si512(t, _mm512_srli_epi64(t, 28));
            const uint64_t bytes = left >= 16 ? 8 : (left + 1) / 2;
            const __mmask8 k8 = (__mmask8)((1u << (unsigned)bytes) - 1u);
            _mm512_mask_cvtepi64_storeu_epi8(j.q + (i >> 1), k8, p);
        }
    }
}

// Dequantizes [i, e) (i even for int4).
template <int DT>
DSRS_QZ_TARGET void dequant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e) {
    const __m512 scale = _mm512_set1_ps(g.scale);
    const __m512 mn = _mm512_set1_ps(g.mn);
    const __m512 nan = _mm512_castsi512_ps(_mm512_set1_epi32((int)kNaNBits));
    const __m512i nib = _mm512_set1_epi64(0xF);
    const __m512i eight = _mm512_set1_epi32(8);
    for (; i < e; i += 16) {
        const uint64_t left = e - i;
        const __mmask16 k = mask16(left);
        __m512i qi;
        if (j.bits == 8) {
            const __m128i b = _mm_maskz_loadu_epi8(k, j.qin + i);
            qi = j.sym ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
        } else {
            const uint64_t bytes = left >= 16 ? 8 : (left + 1) / 2;
            const __m128i b =
                _mm_maskz_loadu_epi8((__mmask16)((1u << (unsigned)bytes) - 1u), j.qin + (i >> 1));
            const __m512i x = _mm512_cvtepu8_epi64(b);
            const __m512i lo = _mm512_and_si512(x, nib);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi64(x, 4), nib);
            qi = _mm512_or_si512(lo, _mm512_slli_epi64(hi, 32));
            if (j.sym) {
                qi = _mm512_sub_epi32(_mm512_xor_si512(qi, eight), eight);
            }
        }
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(qi), scale);
        if (g.asym) {
            y = _mm512_add_ps(y, mn);
        }
        y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), y, nan);
        store16<DT>(j.out, i, k, y);
    }
}

// ---- AVX2 -----------------------------------------------------------------------------------------

#elif defined(DSRS_QZ_PATH_AVX2)
#define DSRS_QZ_TARGET __attribute__((target("avx2,f16c")))
#define DSRS_QZ_LEVEL "avx2"

template <int DT>
DSRS_QZ_TARGET inline __m256 load8(const void* in, uint64_t i) {
    if (DT == DSRS_QUANTIZER_F32) {
        return _mm256_loadu_ps(static_cast<const float*>(in) + i);
    } else if (DT == DSRS_QUANTIZER_F16) {
        return _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(in) + i)));
    } else {
        const __m128i h =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(in) + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
}

template <int DT>
DSRS_QZ_TARGET inline void store8(void* out, uint64_t i, __m256 y) {
    if (DT == DSRS_QUANTIZER_F32) {
        _mm256_storeu_ps(static_cast<float*>(out) + i, y);
    } else if (DT == DSRS_QUANTIZER_F16) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                         _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else {
        const __m256i b = _mm256_castps_si256(y);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
        const __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb), 16);
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                         _mm256_castsi256_si128(p));
    }
}

template <int DT>
DSRS_QZ_TARGET void stats_bulk(const void* in, uint64_t s, uint64_t e, Stats& st) {
    __m256i amax = _mm256_setzero_si256();
    __m256 mn = _mm256_set1_ps(INFINITY);
    __m256 mx = _mm256_set1_ps(-INFINITY);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    uint64_t i = s;
    for (; i + 8 <= e; i += 8) {
        const __m256 x = load8<DT>(in, i);
        amax = _mm256_max_epu32(amax, _mm256_and_si256(_mm256_castps_si256(x), abs_mask));
        mn = _mm256_min_ps(mn, x);
        mx = _mm256_max_ps(mx, x);
    }
    alignas(32) uint32_t a[8];
    alignas(32) float lo[8], hi[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(a), amax);
    _mm256_store_ps(lo, mn);
    _mm256_store_ps(hi, mx);
    for (int k = 0; k < 8; ++k) {
        Stats p;
        p.amax = a[k];
        p.mn = lo[k];
        p.mx = hi[k];
        stats_merge(st, p);
    }
    stats_scalar<DT>(in, i, e, st);
}

uint64_t fill_words(const Job& j, uint64_t i0, uint64_t count, uint32_t* buf) {
    return fill_words_scalar(j, i0, count, buf);
}

// The q values of 8 elements as int32.
DSRS_QZ_TARGET inline __m256i quant8(__m256 x, const Group& g, bool stoch, const uint32_t* w) {
    const __m256 t = g.asym ? _mm256_sub_ps(x, _mm256_set1_ps(g.mn)) : x;
    const __m256 v = _mm256_div_ps(t, _mm256_set1_ps(g.scale));
    if (!stoch) {
        __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_max_ps(r, _mm256_set1_ps(g.lo));
        r = _mm256_min_ps(r, _mm256_set1_ps(g.hi));
        return _mm256_cvttps_epi32(r);
    }
    const __m256i u24 =
        _mm256_srli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)), 8);
    const __m256d scale24 = _mm256_set1_pd(5.9604644775390625e-08);
    const __m256d lo = _mm256_set1_pd((double)g.lo);
    const __m256d hi = _mm256_set1_pd((double)g.hi);
    const __m256d u_a = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(u24)), scale24);
    const __m256d u_b = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(u24, 1)), scale24);
    const __m256d v_a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d v_b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    __m256d r_a = _mm256_round_pd(_mm256_add_pd(v_a, u_a), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256d r_b = _mm256_round_pd(_mm256_add_pd(v_b, u_b), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    r_a = _mm256_min_pd(_mm256_max_pd(r_a, lo), hi);
    r_b = _mm256_min_pd(_mm256_max_pd(r_b, lo), hi);
    return _mm256_set_m128i(_mm256_cvttpd_epi32(r_b), _mm256_cvttpd_epi32(r_a));
}

template <int DT>
DSRS_QZ_TARGET void quant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e,
                               const uint32_t* words, uint64_t wbase) {
    alignas(32) int32_t qv[8];
    for (; i + 8 <= e; i += 8) {
        const __m256i qi =
            quant8(load8<DT>(j.in, i), g, j.stoch, j.stoch ? words + (i - wbase) : nullptr);
        _mm256_store_si256(reinterpret_cast<__m256i*>(qv), qi);
        if (j.bits == 8) {
            for (int k = 0; k < 8; ++k) {
                j.q[i + k] = (uint8_t)qv[k];
            }
        } else {
            for (int k = 0; k < 8; k += 2) {
                j.q[(i + k) >> 1] =
                    (uint8_t)(((uint32_t)qv[k] & 0xFu) | (((uint32_t)qv[k + 1] & 0xFu) << 4));
            }
        }
    }
    quant_scalar<DT>(j, g, i, e, words, wbase);
}

template <int DT>
DSRS_QZ_TARGET void dequant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e) {
    const __m256 scale = _mm256_set1_ps(g.scale);
    const __m256 mn = _mm256_set1_ps(g.mn);
    const __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32((int)kNaNBits));
    const __m256i nib = _mm256_set1_epi64x(0xF);
    const __m256i eight = _mm256_set1_epi32(8);
    for (; i + 8 <= e; i += 8) {
        __m256i qi;
        if (j.bits == 8) {
            const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(j.qin + i));
            qi = j.sym ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
        } else {
            int32_t four;
            std::memcpy(&four, j.qin + (i >> 1), 4);
            const __m256i x = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(four));
            const __m256i lo = _mm256_and_si256(x, nib);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi64(x, 4), nib);
            qi = _mm256_or_si256(lo, _mm256_slli_epi64(hi, 32));
            if (j.sym) {
                qi = _mm256_sub_epi32(_mm256_xor_si256(qi, eight), eight);
            }
        }
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(qi), scale);
        if (g.asym) {
            y = _mm256_add_ps(y, mn);
        }
        y = _mm256_blendv_ps(y, nan, _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
        store8<DT>(j.out, i, y);
    }
    dequant_scalar<DT>(j, g, i, e);
}

// ---- scalar -----------------------------------------------------------------------------------------

#else
#define DSRS_QZ_LEVEL "scalar"

template <int DT>
inline void stats_bulk(const void* in, uint64_t s, uint64_t e, Stats& st) {
    stats_scalar<DT>(in, s, e, st);
}

uint64_t fill_words(const Job& j, uint64_t i0, uint64_t count, uint32_t* buf) {
    return fill_words_scalar(j, i0, count, buf);
}

template <int DT>
inline void quant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e,
                       const uint32_t* words, uint64_t wbase) {
    quant_scalar<DT>(j, g, i, e, words, wbase);
}

template <int DT>
inline void dequant_bulk(const Job& j, const Group& g, uint64_t i, uint64_t e) {
    dequant_scalar<DT>(j, g, i, e);
}

#endif

// ---- segments ----------------------------------------------------------------------------------------

template <int DT>
Stats seg_stats(const Job& j, uint64_t s, uint64_t e) {
    Stats st = stats_empty();
    stats_bulk<DT>(j.in, s, e, st);
    return st;
}

// Quantizes the elements [s, e) of one group. With int4 and an odd s, element s goes into
// the high nibble of byte (s - 1) / 2, whose low nibble this thread wrote just before (the
// high nibble was left 0).
template <int DT>
void seg_quantize(const Job& j, const Group& g, uint64_t s, uint64_t e) {
    uint64_t i = s;
    if (!g.active) {
        if (j.bits == 8) {
            std::memset(j.q + s, 0, (size_t)(e - s));
        } else {
            if (i & 1) {
                ++i; // 0 into a high nibble that is already 0
            }
            if (i < e) {
                std::memset(j.q + (i >> 1), 0, (size_t)((e - i + 1) / 2));
            }
        }
        return;
    }
    if (j.bits == 4 && (i & 1)) {
        const uint32_t w = j.stoch ? philox_word(j.seed, j.offset, i) : 0u;
        const uint32_t v = (uint32_t)quant1(load1<DT>(j.in, i), g, j.stoch, w) & 0xFu;
        j.q[i >> 1] = (uint8_t)(j.q[i >> 1] | (v << 4));
        ++i;
    }
    if (!j.stoch) {
        quant_bulk<DT>(j, g, i, e, nullptr, 0);
        return;
    }
    // 64 spare words: the vector generator writes whole 16-block steps.
    alignas(64) uint32_t words[kWords + 4 + 64];
    while (i < e) {
        const uint64_t ce = e - i > kWords ? i + kWords : e;
        const uint64_t wbase = fill_words(j, i, ce - i, words);
        quant_bulk<DT>(j, g, i, ce, words, wbase);
        i = ce;
    }
}

template <int DT>
void seg_dequantize(const Job& j, const Group& g, uint64_t s, uint64_t e) {
    uint64_t i = s;
    if (j.bits == 4 && (i & 1)) {
        store1<DT>(j.out, i, dequant1(q_at(j, j.qin, i), g));
        ++i;
    }
    dequant_bulk<DT>(j, g, i, e);
}

inline int32_t thread_count(int32_t requested, uint64_t items) {
#if defined(_OPENMP)
    int32_t t = requested > 0 ? requested : omp_get_max_threads();
    if ((uint64_t)t > items) {
        t = (int32_t)items;
    }
    return t < 1 ? 1 : t;
#else
    (void)requested;
    (void)items;
    return 1;
#endif
}

// body(a, b) for the tiles [a, b) of `size` items that cover [0, n) (the last one may be
// shorter), in parallel when more than one thread is asked for (0: OpenMP's default) and
// there is more than one tile; otherwise body(0, n), once.
template <typename Body>
void for_tiles(uint64_t n, uint64_t size, int32_t requested_threads, const Body& body) {
    const uint64_t tiles = (n + size - 1) / size;
    const int32_t threads = thread_count(requested_threads, tiles);
#if defined(_OPENMP)
    if (threads > 1) {
        const int64_t nt = (int64_t)tiles;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t t = 0; t < nt; ++t) {
            const uint64_t a = (uint64_t)t * size;
            body(a, n - a > size ? a + size : n);
        }
        return;
    }
#endif
    (void)threads;
    body(0, n);
}

// The end of the group that starts at element s.
inline uint64_t group_end(const Job& j, uint64_t s) {
    return j.n - s > j.gs ? s + j.gs : j.n;
}

// Writes the scale (and, asymmetric, the offset) of group g from its stats; returns what
// its elements need.
inline Group store_group(const Job& j, uint64_t g, const Stats& st) {
    float scale, offset;
    finish_group(j, st, &scale, &offset);
    j.scales[g] = scale;
    if (!j.sym) {
        j.offsets[g] = offset;
    }
    return make_group(j, scale, offset);
}

// Tile t of the fused path: K whole groups, stats then quantize each.
template <int DT>
void fused_tile(const Job& j, uint64_t g0, uint64_t g1) {
    for (uint64_t g = g0; g < g1; ++g) {
        const uint64_t s = g * j.gs;
        const uint64_t e = group_end(j, s);
        seg_quantize<DT>(j, store_group(j, g, seg_stats<DT>(j, s, e)), s, e);
    }
}

// Quantizes (QUANTIZE: with the scales and offsets written to j.scales and j.offsets) or
// dequantizes (with j.scales_in and j.offsets_in) the flat range [a, b) (a even), one
// segment per group.
template <int DT, bool QUANTIZE>
void flat_range(const Job& j, uint64_t a, uint64_t b) {
    const float* scales = QUANTIZE ? j.scales : j.scales_in;
    const float* offsets = QUANTIZE ? j.offsets : j.offsets_in;
    uint64_t i = a;
    while (i < b) {
        const uint64_t g = i / j.gs;
        const uint64_t ge = (g + 1) * j.gs;
        const uint64_t e = ge < b ? ge : b;
        const Group grp = make_group(j, scales[g], j.sym ? 0.0f : offsets[g]);
        if constexpr (QUANTIZE) {
            seg_quantize<DT>(j, grp, i, e);
        } else {
            seg_dequantize<DT>(j, grp, i, e);
        }
        i = e;
    }
}

template <int DT>
void run_quantize(const Job& j, int32_t requested_threads) {
    const uint64_t groups = j.n / j.gs + (j.n % j.gs != 0 ? 1 : 0);
    if (j.gs <= kFuseMax) {
        uint64_t k = (kTile + j.gs - 1) / j.gs;
        if (k < 2) {
            k = 2;
        }
        k += k & 1;
        for_tiles(groups, k, requested_threads,
                  [&](uint64_t g0, uint64_t g1) { fused_tile<DT>(j, g0, g1); });
        return;
    }
    // Phase 1: the stats of every group, its chunks in parallel.
    for (uint64_t g = 0; g < groups; ++g) {
        const uint64_t s = g * j.gs;
        const uint64_t e = group_end(j, s);
        const uint64_t chunks = (e - s + kChunk - 1) / kChunk;
        Stats st = stats_empty();
        const int32_t threads = thread_count(requested_threads, chunks);
#if defined(_OPENMP)
        if (threads > 1) {
            uint32_t amax = 0;
            float mn = INFINITY, mx = -INFINITY;
            const int64_t nc = (int64_t)chunks;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(max : amax) \
    reduction(min : mn) reduction(max : mx)
            for (int64_t c = 0; c < nc; ++c) {
                const uint64_t cs = s + (uint64_t)c * kChunk;
                const uint64_t ce = e - cs > kChunk ? cs + kChunk : e;
                const Stats p = seg_stats<DT>(j, cs, ce);
                amax = p.amax > amax ? p.amax : amax;
                mn = p.mn < mn ? p.mn : mn;
                mx = p.mx > mx ? p.mx : mx;
            }
            st.amax = amax;
            st.mn = mn;
            st.mx = mx;
        } else
#endif
        {
            (void)threads;
            st = seg_stats<DT>(j, s, e);
        }
        store_group(j, g, st);
    }
    // Phase 2: quantize over tiles of the flat tensor (even starts).
    for_tiles(j.n, kChunk, requested_threads,
              [&](uint64_t a, uint64_t b) { flat_range<DT, true>(j, a, b); });
}

template <int DT>
void run_dequantize(const Job& j, int32_t requested_threads) {
    for_tiles(j.n, kChunk, requested_threads,
              [&](uint64_t a, uint64_t b) { flat_range<DT, false>(j, a, b); });
}

// f(std::integral_constant<int, DT>()) for the dtype dt (one that dtype_ok accepts).
template <typename F>
void with_dtype(int32_t dt, const F& f) {
    switch (dt) {
    case DSRS_QUANTIZER_F32:
        f(std::integral_constant<int, DSRS_QUANTIZER_F32>());
        break;
    case DSRS_QUANTIZER_F16:
        f(std::integral_constant<int, DSRS_QUANTIZER_F16>());
        break;
    default:
        f(std::integral_constant<int, DSRS_QUANTIZER_BF16>());
        break;
    }
}

bool config_ok(const dsrs_quantizer_config* cfg) {
    return (cfg->bits == 8 || cfg->bits == 4) && (cfg->symmetric == 0 || cfg->symmetric == 1) &&
           cfg->group_size >= 1 &&
           (cfg->rounding == DSRS_QUANTIZER_NEAREST || cfg->rounding == DSRS_QUANTIZER_STOCHASTIC) &&
           cfg->num_threads >= 0;
}

bool dtype_ok(int32_t dt) {
    return dt == DSRS_QUANTIZER_F32 || dt == DSRS_QUANTIZER_F16 || dt == DSRS_QUANTIZER_BF16;
}

// What both entry points check, in this order: no config (DSRS_OP_ERR_NULL), a bad config
// or dtype (DSRS_OP_ERR_CONFIG), then, when n > 0, a missing array (DSRS_OP_ERR_NULL): `a`,
// `b` and `c` are the arrays every call needs, `offsets` the one an asymmetric config needs.
// DSRS_OP_OK: go on.
int32_t check_call(const dsrs_quantizer_config* cfg, int32_t dt, uint64_t n, const void* a,
                   const void* b, const void* c, const void* offsets) {
    if (cfg == nullptr) {
        return DSRS_OP_ERR_NULL;
    }
    if (!config_ok(cfg) || !dtype_ok(dt)) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (n > 0 && (a == nullptr || b == nullptr || c == nullptr ||
                  (cfg->symmetric == 0 && offsets == nullptr))) {
        return DSRS_OP_ERR_NULL;
    }
    return DSRS_OP_OK;
}

// The job of a checked call.
Job job_of(const dsrs_quantizer_config* cfg, int32_t dt, uint64_t n) {
    Job j;
    std::memset(&j, 0, sizeof j);
    j.dt = dt;
    j.bits = cfg->bits;
    j.sym = cfg->symmetric == 1;
    j.stoch = cfg->rounding == DSRS_QUANTIZER_STOCHASTIC;
    j.gs = cfg->group_size;
    j.n = n;
    j.seed = cfg->seed;
    j.offset = cfg->offset;
    return j;
}

} // namespace

DSRS_OP_EXPORT int32_t dsrs_quantizer_quantize(const dsrs_quantizer_config* cfg, int32_t in_dtype,
                                               const void* input, uint64_t n, uint8_t* q,
                                               float* scales, float* offsets) {
    const int32_t status = check_call(cfg, in_dtype, n, input, q, scales, offsets);
    if (status != DSRS_OP_OK || n == 0) {
        return status;
    }
    Job j = job_of(cfg, in_dtype, n);
    j.in = input;
    j.q = q;
    j.scales = scales;
    j.offsets = offsets;
    with_dtype(in_dtype,
               [&](auto dt) { run_quantize<decltype(dt)::value>(j, cfg->num_threads); });
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT int32_t dsrs_quantizer_dequantize(const dsrs_quantizer_config* cfg,
                                                 const uint8_t* q, const float* scales,
                                                 const float* offsets, uint64_t n,
                                                 int32_t out_dtype, void* output) {
    const int32_t status = check_call(cfg, out_dtype, n, q, scales, output, offsets);
    if (status != DSRS_OP_OK || n == 0) {
        return status;
    }
    Job j = job_of(cfg, out_dtype, n);
    j.qin = q;
    j.scales_in = scales;
    j.offsets_in = offsets;
    j.out = output;
    with_dtype(out_dtype,
               [&](auto dt) { run_dequantize<decltype(dt)::value>(j, cfg->num_threads); });
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT const char* dsrs_quantizer_simd_level(void) {
    return DSRS_QZ_LEVEL;
}

DSRS_OP_EXPORT int32_t dsrs_quantizer_max_threads(void) {
#if defined(_OPENMP)
    return (int32_t)omp_get_max_threads();
#else
    return 1;
#endif
}

// The layout the header documents (the Rust side mirrors it with #[repr(C)]); 64-bit
// targets only (i386 aligns uint64_t members to 4).
#if defined(__x86_64__) || defined(__aarch64__) || defined(_M_X64) || defined(_M_ARM64)
static_assert(sizeof(dsrs_quantizer_config) == 40, "dsrs_quantizer_config is 40 bytes");
static_assert(offsetof(dsrs_quantizer_config, symmetric) == 4, "symmetric at 4");
static_assert(offsetof(dsrs_quantizer_config, group_size) == 8, "group_size at 8");
static_assert(offsetof(dsrs_quantizer_config, rounding) == 16, "rounding at 16");
static_assert(offsetof(dsrs_quantizer_config, num_threads) == 20, "num_threads at 20");
static_assert(offsetof(dsrs_quantizer_config, seed) == 24, "seed at 24");
static_assert(offsetof(dsrs_quantizer_config, offset) == 32, "offset at 32");
#endif
