// cpu_adam.cpp - the cpu_adam op: Adam / AdamW on fp32 parameters and fp32 states.
//
// The per-element formula and the C interface are in kernels/include/dsrs_cpu_adam.h.
//
// Structure:
//   * dsrs_cpu_adam_step_f32 validates, derives the per-call constants (Consts) and picks
//     one of nine instantiations <GradMode, DecayMode>, so the element loop has no
//     branches.
//   * run<> splits the array into kTile-element tiles handed to OpenMP threads
//     (schedule(static): each thread gets one contiguous run of tiles).
//   * adam_range<> processes one contiguous range with the widest code the build's SIMD
//     level allows: AVX-512F or AVX (chosen by DSRS_SIMD_AVX512 / DSRS_SIMD_AVX2, compiled
//     through target attributes so -march is not required), NEON on AArch64, else a
//     scalar loop. GCC will not auto-vectorize sqrtf without -fno-math-errno, which the
//     build flags do not give us, hence the intrinsics.
//
// Every path evaluates the same IEEE operations in the same order (mul, add, div, sqrt
// are correctly rounded in scalar and vector form alike) and fused multiply-add is
// disabled for this file, so results are bit-identical across SIMD levels, thread counts
// and alignments, and match the CUDA kernel in kernels/cuda/fused_adam.cu.

// No contraction of a*b+c into an FMA anywhere in this file (GCC's default outside ISO
// modes is -ffp-contract=fast). Must precede the includes so inline helpers get it too.
// (Clang honours its pragma under its default -ffp-contract=on; an explicit
// -ffp-contract=fast on Clang's command line overrides it, so do not pass that.)
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "dsrs_cpu_adam.h"

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if (defined(DSRS_SIMD_AVX512) || defined(DSRS_SIMD_AVX2)) && \
    (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#if defined(DSRS_SIMD_AVX512)
#define DSRS_CPU_ADAM_PATH_AVX512 1
#else
#define DSRS_CPU_ADAM_PATH_AVX2 1
#endif
#elif defined(DSRS_SIMD_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define DSRS_CPU_ADAM_PATH_NEON 1
#endif

namespace {

#if defined(_OPENMP)
// Elements per tile handed to a thread (32 KiB per array).
constexpr uint64_t kTile = 8192;
#endif

// How the gradient is unscaled.
enum GradMode : int {
    kGradAsIs = 0, // grad_scale == 1
    kGradMul = 1,  // grad_scale is a power of two: g * (1/grad_scale) is exactly g / grad_scale
    kGradDiv = 2,  // general grad_scale: g / grad_scale
};

// How weight decay is applied.
enum DecayMode : int {
    kDecayNone = 0,       // weight_decay == 0
    kDecayL2 = 1,         // g += weight_decay * p
    kDecayDecoupled = 2,  // p += (-lr * weight_decay) * p
};

// Per-call constants, all float.
struct Consts {
    float beta1;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps;
    float bc2;        // 1/sqrt(1 - beta2^step), or 1
    float step_size;  // -lr / bc1
    float decay;      // L2: weight_decay; decoupled: -lr * weight_decay
    float grad;       // kGradMul: 1/grad_scale; kGradDiv: grad_scale
};

// ---- scalar ------------------------------------------------------------------------

template <int G, int D>
inline void adam_one(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g,
                     float* DSRS_RESTRICT m, float* DSRS_RESTRICT v, const Consts& c) {
    float gi = *g;
    if (G == kGradMul) {
        gi = gi * c.grad;
    } else if (G == kGradDiv) {
        gi = gi / c.grad;
    }
    float pi = *p;
    if (D == kDecayL2) {
        gi = gi + c.decay * pi;
    }
    const float mi = c.beta1 * *m + c.one_minus_beta1 * gi;
    const float vi = c.beta2 * *v + c.one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(vi) * c.bc2 + c.eps;
    if (D == kDecayDecoupled) {
        pi = pi + c.decay * pi;
    }
    pi = pi + c.step_size * (mi / denom);
    *m = mi;
    *v = vi;
    *p = pi;
}

template <int G, int D>
void adam_range_scalar(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g,
                       float* DSRS_RESTRICT m, float* DSRS_RESTRICT v, uint64_t n,
                       const Consts& c) {
    for (uint64_t i = 0; i < n; ++i) {
        adam_one<G, D>(p + i, g + i, m + i, v + i, c);
    }
}

// ---- AVX-512F ------------------------------------------------------------------------

#if defined(DSRS_CPU_ADAM_PATH_AVX512)
#define DSRS_CPU_ADAM_TARGET __attribute__((target("avx512f")))

// The vector form of adam_one on 16 lanes; returns the new p, m, v through references.
template <int G, int D>
DSRS_CPU_ADAM_TARGET inline void adam_vec16(__m512& p, __m512 g, __m512& m, __m512& v,
                                            const Consts& c) {
    if (G == kGradMul) {
        g = _mm512_mul_ps(g, _mm512_set1_ps(c.grad));
    } else if (G == kGradDiv) {
        g = _mm512_div_ps(g, _mm512_set1_ps(c.grad));
    }
    if (D == kDecayL2) {
        g = _mm512_add_ps(g, _mm512_mul_ps(_mm512_set1_ps(c.decay), p));
    }
    m = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c.beta1), m),
                      _mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta1), g));
    v = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c.beta2), v),
                      _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta2), g), g));
    // (maskz form with a full mask: the same vsqrtps, without the _mm512_undefined_ps
    // operand of _mm512_sqrt_ps that trips GCC 12's -Wmaybe-uninitialized.)
    const __m512 root = _mm512_maskz_sqrt_ps((__mmask16)0xFFFF, v);
    const __m512 denom =
        _mm512_add_ps(_mm512_mul_ps(root, _mm512_set1_ps(c.bc2)), _mm512_set1_ps(c.eps));
    if (D == kDecayDecoupled) {
        p = _mm512_add_ps(p, _mm512_mul_ps(_mm512_set1_ps(c.decay), p));
    }
    p = _mm512_add_ps(p, _mm512_mul_ps(_mm512_set1_ps(c.step_size), _mm512_div_ps(m, denom)));
}

template <int G, int D>
DSRS_CPU_ADAM_TARGET void adam_range(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g,
                                     float* DSRS_RESTRICT m, float* DSRS_RESTRICT v,
                                     uint64_t n, const Consts& c) {
    uint64_t i = 0;
    // Two independent vectors per iteration keep the divider and sqrt units busy.
    for (; i + 32 <= n; i += 32) {
        __m512 p0 = _mm512_loadu_ps(p + i), p1 = _mm512_loadu_ps(p + i + 16);
        __m512 m0 = _mm512_loadu_ps(m + i), m1 = _mm512_loadu_ps(m + i + 16);
        __m512 v0 = _mm512_loadu_ps(v + i), v1 = _mm512_loadu_ps(v + i + 16);
        adam_vec16<G, D>(p0, _mm512_loadu_ps(g + i), m0, v0, c);
        adam_vec16<G, D>(p1, _mm512_loadu_ps(g + i + 16), m1, v1, c);
        _mm512_storeu_ps(p + i, p0);
        _mm512_storeu_ps(p + i + 16, p1);
        _mm512_storeu_ps(m + i, m0);
        _mm512_storeu_ps(m + i + 16, m1);
        _mm512_storeu_ps(v + i, v0);
        _mm512_storeu_ps(v + i + 16, v1);
    }
    // The rest (< 32) in masked 16-lane steps; inactive lanes are zero and never stored.
    while (i < n) {
        const uint64_t left = n - i;
        const __mmask16 k =
            left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)left) - 1u);
        __m512 pv = _mm512_maskz_loadu_ps(k, p + i);
        __m512 mv = _mm512_maskz_loadu_ps(k, m + i);
        __m512 vv = _mm512_maskz_loadu_ps(k, v + i);
        adam_vec16<G, D>(pv, _mm512_maskz_loadu_ps(k, g + i), mv, vv, c);
        _mm512_mask_storeu_ps(p + i, k, pv);
        _mm512_mask_storeu_ps(m + i, k, mv);
        _mm512_mask_storeu_ps(v + i, k, vv);
        i += 16;
    }
}
#undef DSRS_CPU_ADAM_TARGET

// ---- AVX (AVX2 level) ------------------------------------------------------------------

#elif defined(DSRS_CPU_ADAM_PATH_AVX2)
#define DSRS_CPU_ADAM_TARGET __attribute__((target("avx2")))

template <int G, int D>
DSRS_CPU_ADAM_TARGET inline void adam_vec8(__m256& p, __m256 g, __m256& m, __m256& v,
                                           const Consts& c) {
    if (G == kGradMul) {
        g = _mm256_mul_ps(g, _mm256_set1_ps(c.grad));
    } else if (G == kGradDiv) {
        g = _mm256_div_ps(g, _mm256_set1_ps(c.grad));
    }
    if (D == kDecayL2) {
        g = _mm256_add_ps(g, _mm256_mul_ps(_mm256_set1_ps(c.decay), p));
    }
    m = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c.beta1), m),
                      _mm256_mul_ps(_mm256_set1_ps(c.one_minus_beta1), g));
    v = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c.beta2), v),
                      _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(c.one_minus_beta2), g), g));
    const __m256 denom = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), _mm256_set1_ps(c.bc2)),
                                       _mm256_set1_ps(c.eps));
    if (D == kDecayDecoupled) {
        p = _mm256_add_ps(p, _mm256_mul_ps(_mm256_set1_ps(c.decay), p));
    }
    p = _mm256_add_ps(p, _mm256_mul_ps(_mm256_set1_ps(c.step_size), _mm256_div_ps(m, denom)));
}

template <int G, int D>
DSRS_CPU_ADAM_TARGET void adam_range(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g,
                                     float* DSRS_RESTRICT m, float* DSRS_RESTRICT v,
                                     uint64_t n, const Consts& c) {
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 p0 = _mm256_loadu_ps(p + i), p1 = _mm256_loadu_ps(p + i + 8);
        __m256 m0 = _mm256_loadu_ps(m + i), m1 = _mm256_loadu_ps(m + i + 8);
        __m256 v0 = _mm256_loadu_ps(v + i), v1 = _mm256_loadu_ps(v + i + 8);
        adam_vec8<G, D>(p0, _mm256_loadu_ps(g + i), m0, v0, c);
        adam_vec8<G, D>(p1, _mm256_loadu_ps(g + i + 8), m1, v1, c);
        _mm256_storeu_ps(p + i, p0);
        _mm256_storeu_ps(p + i + 8, p1);
        _mm256_storeu_ps(m + i, m0);
        _mm256_storeu_ps(m + i + 8, m1);
        _mm256_storeu_ps(v + i, v0);
        _mm256_storeu_ps(v + i + 8, v1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 p0 = _mm256_loadu_ps(p + i), m0 = _mm256_loadu_ps(m + i);
        __m256 v0 = _mm256_loadu_ps(v + i);
        adam_vec8<G, D>(p0, _mm256_loadu_ps(g + i), m0, v0, c);
        _mm256_storeu_ps(p + i, p0);
        _mm256_storeu_ps(m + i, m0);
        _mm256_storeu_ps(v + i, v0);
    }
    adam_range_scalar<G, D>(p + i, g + i, m + i, v + i, n - i, c);
}
#undef DSRS_CPU_ADAM_TARGET

// ---- NEON (AArch64) ----------------------------------------------------------------------

#elif defined(DSRS_CPU_ADAM_PATH_NEON)

template <int G, int D>
inline void adam_vec4(float32x4_t& p, float32x4_t g, float32x4_t& m, float32x4_t& v,
                      const Consts& c) {
    if (G == kGradMul) {
        g = vmulq_f32(g, vdupq_n_f32(c.grad));
    } else if (G == kGradDiv) {
        g = vdivq_f32(g, vdupq_n_f32(c.grad));
    }
    if (D == kDecayL2) {
        g = vaddq_f32(g, vmulq_f32(vdupq_n_f32(c.decay), p));
    }
    m = vaddq_f32(vmulq_f32(vdupq_n_f32(c.beta1), m), vmulq_f32(vdupq_n_f32(c.one_minus_beta1), g));
    v = vaddq_f32(vmulq_f32(vdupq_n_f32(c.beta2), v),
                  vmulq_f32(vmulq_f32(vdupq_n_f32(c.one_minus_beta2), g), g));
    const float32x4_t denom =
        vaddq_f32(vmulq_f32(vsqrtq_f32(v), vdupq_n_f32(c.bc2)), vdupq_n_f32(c.eps));
    if (D == kDecayDecoupled) {
        p = vaddq_f32(p, vmulq_f32(vdupq_n_f32(c.decay), p));
    }
    p = vaddq_f32(p, vmulq_f32(vdupq_n_f32(c.step_size), vdivq_f32(m, denom)));
}

template <int G, int D>
void adam_range(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g, float* DSRS_RESTRICT m,
                float* DSRS_RESTRICT v, uint64_t n, const Consts& c) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t p0 = vld1q_f32(p + i), p1 = vld1q_f32(p + i + 4);
        float32x4_t m0 = vld1q_f32(m + i), m1 = vld1q_f32(m + i + 4);
        float32x4_t v0 = vld1q_f32(v + i), v1 = vld1q_f32(v + i + 4);
        adam_vec4<G, D>(p0, vld1q_f32(g + i), m0, v0, c);
        adam_vec4<G, D>(p1, vld1q_f32(g + i + 4), m1, v1, c);
        vst1q_f32(p + i, p0);
        vst1q_f32(p + i + 4, p1);
        vst1q_f32(m + i, m0);
        vst1q_f32(m + i + 4, m1);
        vst1q_f32(v + i, v0);
        vst1q_f32(v + i + 4, v1);
    }
    adam_range_scalar<G, D>(p + i, g + i, m + i, v + i, n - i, c);
}

// ---- scalar build ----------------------------------------------------------------------

#else

template <int G, int D>
inline void adam_range(float* DSRS_RESTRICT p, const float* DSRS_RESTRICT g,
                       float* DSRS_RESTRICT m, float* DSRS_RESTRICT v, uint64_t n,
                       const Consts& c) {
    adam_range_scalar<G, D>(p, g, m, v, n, c);
}

#endif

// ---- threading ---------------------------------------------------------------------------

template <int G, int D>
void run(float* p, const float* g, float* m, float* v, uint64_t n, const Consts& c,
         int32_t requested_threads) {
#if defined(_OPENMP)
    const uint64_t tiles = (n + kTile - 1) / kTile;
    int32_t threads = requested_threads > 0 ? requested_threads : omp_get_max_threads();
    if ((uint64_t)threads > tiles) {
        threads = (int32_t)tiles;
    }
    if (threads > 1) {
        const int64_t ntiles = (int64_t)tiles;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t t = 0; t < ntiles; ++t) {
            const uint64_t begin = (uint64_t)t * kTile;
            const uint64_t len = n - begin < kTile ? n - begin : kTile;
            adam_range<G, D>(p + begin, g + begin, m + begin, v + begin, len, c);
        }
        return;
    }
#else
    (void)requested_threads;
#endif
    // One thread: a single streaming pass (tiling would change nothing).
    adam_range<G, D>(p, g, m, v, n, c);
}

template <int G>
void run_decay(int decay, float* p, const float* g, float* m, float* v, uint64_t n,
               const Consts& c, int32_t threads) {
    switch (decay) {
    case kDecayL2:
        run<G, kDecayL2>(p, g, m, v, n, c, threads);
        break;
    case kDecayDecoupled:
        run<G, kDecayDecoupled>(p, g, m, v, n, c, threads);
        break;
    default:
        run<G, kDecayNone>(p, g, m, v, n, c, threads);
        break;
    }
}

bool in_unit_interval(float b) { // [0, 1); false for NaN
    return b >= 0.0f && b < 1.0f;
}

// True when 1/x is exactly representable, i.e. x is a power of two (normal, finite > 0)
// whose reciprocal is representable: then g * (1/x) rounds the same real number as g / x.
bool has_exact_reciprocal(float x) {
    int e = 0;
    const float frac = std::frexp(x, &e); // x = frac * 2^e, frac in [0.5, 1)
    if (frac != 0.5f) {
        return false;
    }
    // 1/x = 2^(1-e); require a normal reciprocal (2^-126 .. 2^127), so the product is
    // the same even where denormals-are-zero is switched on.
    return 1 - e >= -126 && 1 - e <= 127;
}

} // namespace

DSRS_OP_EXPORT int32_t dsrs_cpu_adam_step_f32(float* params, const float* grads, float* exp_avg,
                                              float* exp_avg_sq, uint64_t n,
                                              const dsrs_cpu_adam_config* cfg) {
    if (cfg == nullptr) {
        return DSRS_OP_ERR_NULL;
    }
    if (n > 0 && (params == nullptr || grads == nullptr || exp_avg == nullptr ||
                  exp_avg_sq == nullptr)) {
        return DSRS_OP_ERR_NULL;
    }
    const float lr = cfg->lr;
    const float wd = cfg->weight_decay;
    if (!std::isfinite(lr) || lr < 0.0f || !in_unit_interval(cfg->beta1) ||
        !in_unit_interval(cfg->beta2) || !std::isfinite(cfg->eps) || !(cfg->eps > 0.0f) ||
        !std::isfinite(wd) || wd < 0.0f || cfg->step < 1 || !std::isfinite(cfg->grad_scale) ||
        !(cfg->grad_scale > 0.0f) || cfg->num_threads < 0 ||
        (cfg->adamw_mode != 0 && cfg->adamw_mode != 1) ||
        (cfg->bias_correction != 0 && cfg->bias_correction != 1)) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (n == 0) {
        return DSRS_OP_OK;
    }

    double bc1 = 1.0;
    double bc2 = 1.0;
    if (cfg->bias_correction) {
        const double step = (double)cfg->step;
        bc1 = 1.0 - std::pow((double)cfg->beta1, step);
        bc2 = 1.0 / std::sqrt(1.0 - std::pow((double)cfg->beta2, step));
    }

    Consts c;
    c.beta1 = cfg->beta1;
    c.one_minus_beta1 = 1.0f - cfg->beta1;
    c.beta2 = cfg->beta2;
    c.one_minus_beta2 = 1.0f - cfg->beta2;
    c.eps = cfg->eps;
    c.bc2 = (float)bc2;
    c.step_size = -lr / (float)bc1;
    c.decay = 0.0f;
    c.grad = 1.0f;

    int decay = kDecayNone;
    if (wd > 0.0f) {
        if (cfg->adamw_mode) {
            decay = kDecayDecoupled;
            c.decay = -lr * wd;
        } else {
            decay = kDecayL2;
            c.decay = wd;
        }
    }

    const float gs = cfg->grad_scale;
    const int32_t threads = cfg->num_threads;
    if (gs == 1.0f) {
        run_decay<kGradAsIs>(decay, params, grads, exp_avg, exp_avg_sq, n, c, threads);
    } else if (has_exact_reciprocal(gs)) {
        c.grad = 1.0f / gs;
        run_decay<kGradMul>(decay, params, grads, exp_avg, exp_avg_sq, n, c, threads);
    } else {
        c.grad = gs;
        run_decay<kGradDiv>(decay, params, grads, exp_avg, exp_avg_sq, n, c, threads);
    }
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT const char* dsrs_cpu_adam_simd_level(void) {
    return DSRS_SIMD_LEVEL;
}

DSRS_OP_EXPORT int32_t dsrs_cpu_adam_max_threads(void) {
#if defined(_OPENMP)
    return (int32_t)omp_get_max_threads();
#else
    return 1;
#endif
}

// The layout the header documents (the Rust side mirrors it with #[repr(C)]); 64-bit
// targets only (i386 aligns int64_t members to 4).
#if defined(__x86_64__) || defined(__aarch64__) || defined(_M_X64) || defined(_M_ARM64)
static_assert(sizeof(dsrs_cpu_adam_config) == 48, "dsrs_cpu_adam_config is 48 bytes");
static_assert(offsetof(dsrs_cpu_adam_config, adamw_mode) == 20, "adamw_mode at 20");
static_assert(offsetof(dsrs_cpu_adam_config, step) == 32, "step at 32");
static_assert(offsetof(dsrs_cpu_adam_config, grad_scale) == 40, "grad_scale at 40");
static_assert(offsetof(dsrs_cpu_adam_config, num_threads) == 44, "num_threads at 44");
#endif
