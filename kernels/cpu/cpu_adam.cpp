// cpu_adam.cpp - the cpu_adam op: Adam / AdamW, fp32/fp16/bf16 parameters, fp32 states.
//
// The per-element formula and the C interface are in kernels/include/dsrs_cpu_adam.h; the
// vector layer, dtype conversions, tiling and threading in kernels/include/dsrs_simd.h.
// The element math is written once (AdamOp::apply) and instantiated for the scalar and the
// vector path, per weight-decay mode (so the loop has no branches) and dtype combination.

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

#include "dsrs_simd.h"

namespace {

using namespace dsrs_simd;

enum DecayMode : int {
    kDecayNone = 0,      // weight_decay == 0
    kDecayL2 = 1,        // g += weight_decay * p
    kDecayDecoupled = 2, // p += (-lr * weight_decay) * p
};

template <int D>
struct AdamOp {
    static constexpr int kStates = 2;
    float inv;
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float eps, bc2, step_size;
    float decay; // L2: weight_decay; decoupled: -lr * weight_decay

    template <class V>
    DSRS_VEC_TARGET void apply(V& p, V g, V& m, V& v) const {
        g = mul(g, splat<V>(inv));
        if (D == kDecayL2) {
            g = add(g, mul(splat<V>(decay), p));
        }
        m = add(mul(splat<V>(beta1), m), mul(splat<V>(one_minus_beta1), g));
        v = add(mul(splat<V>(beta2), v), mul(mul(splat<V>(one_minus_beta2), g), g));
        const V denom = add(mul(sqrt_(v), splat<V>(bc2)), splat<V>(eps));
        if (D == kDecayDecoupled) {
            p = add(p, mul(splat<V>(decay), p));
        }
        p = add(p, mul(splat<V>(step_size), div(m, denom)));
    }
};

template <int D>
void step(const AdamOp<D>& op, const dsrs_cpu_optim_buffers* b, int32_t threads) {
    dispatch(op, b->params_dtype, b->grads_dtype, b->copy_dtype, b->params, b->grads, b->exp_avg,
             b->exp_avg_sq, b->param_copy, b->n, threads,
                 (b->flags & DSRS_OPTIM_ZERO_GRADS) != 0);
}

} // namespace

DSRS_OP_EXPORT int32_t dsrs_cpu_adam_step(const dsrs_cpu_adam_config* cfg,
                                          const dsrs_cpu_optim_buffers* b) {
    if (cfg == nullptr || b == nullptr) {
        return DSRS_OP_ERR_NULL;
    }
    const int32_t s = check_buffers(b->params, b->grads, b->exp_avg, b->exp_avg_sq, b->param_copy,
                                    b->n, b->params_dtype, b->grads_dtype, b->copy_dtype,
                                    b->flags, true, true);
    if (s != DSRS_OP_OK) {
        return s;
    }
    const float lr = cfg->lr;
    const float wd = cfg->weight_decay;
    if (!finite_nonneg(lr) || !in_unit_interval(cfg->beta1) || !in_unit_interval(cfg->beta2) ||
        !finite_pos(cfg->eps) || !finite_nonneg(wd) || cfg->step < 1 ||
        !finite_pos(cfg->grad_scale) || cfg->num_threads < 0 ||
        (cfg->adamw_mode != 0 && cfg->adamw_mode != 1) ||
        (cfg->bias_correction != 0 && cfg->bias_correction != 1)) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (b->n == 0) {
        return DSRS_OP_OK;
    }

    double bc1 = 1.0;
    double bc2 = 1.0;
    if (cfg->bias_correction) {
        const double t = (double)cfg->step;
        bc1 = 1.0 - std::pow((double)cfg->beta1, t);
        bc2 = 1.0 / std::sqrt(1.0 - std::pow((double)cfg->beta2, t));
    }
    const float bc1f = (float)bc1;
    const float inv = inv_scale(cfg->grad_scale);
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    const float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
    const float step_size = -lr / bc1f;
    const int32_t threads = cfg->num_threads;
    if (wd > 0.0f && cfg->adamw_mode) {
        const AdamOp<kDecayDecoupled> op{inv, b1, omb1, b2, omb2, cfg->eps, (float)bc2, step_size, -lr * wd};
        step(op, b, threads);
    } else if (wd > 0.0f) {
        const AdamOp<kDecayL2> op{inv, b1, omb1, b2, omb2, cfg->eps, (float)bc2, step_size, wd};
        step(op, b, threads);
    } else {
        const AdamOp<kDecayNone> op{inv, b1, omb1, b2, omb2, cfg->eps, (float)bc2, step_size, 0.0f};
        step(op, b, threads);
    }
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT int32_t dsrs_cpu_adam_step_f32(float* params, const float* grads, float* exp_avg,
                                              float* exp_avg_sq, uint64_t n,
                                              const dsrs_cpu_adam_config* cfg) {
    const dsrs_cpu_optim_buffers b = {params, grads,          exp_avg,        exp_avg_sq, nullptr,
                                      n,      DSRS_OPTIM_F32, DSRS_OPTIM_F32, 0,          0};
    return dsrs_cpu_adam_step(cfg, &b);
}

DSRS_OP_EXPORT const char* dsrs_cpu_adam_simd_level(void) {
    return DSRS_SIMD_LEVEL;
}

DSRS_OP_EXPORT int32_t dsrs_cpu_adam_max_threads(void) {
    return dsrs_simd::max_threads();
}

// The layouts the headers document (the Rust side mirrors them with #[repr(C)]); 64-bit
// targets only (i386 aligns int64_t members to 4).
#if defined(__x86_64__) || defined(__aarch64__) || defined(_M_X64) || defined(_M_ARM64)
static_assert(sizeof(dsrs_cpu_adam_config) == 48, "dsrs_cpu_adam_config is 48 bytes");
static_assert(offsetof(dsrs_cpu_adam_config, adamw_mode) == 20, "adamw_mode at 20");
static_assert(offsetof(dsrs_cpu_adam_config, step) == 32, "step at 32");
static_assert(offsetof(dsrs_cpu_adam_config, grad_scale) == 40, "grad_scale at 40");
static_assert(offsetof(dsrs_cpu_adam_config, num_threads) == 44, "num_threads at 44");
static_assert(sizeof(dsrs_cpu_optim_buffers) == 64, "dsrs_cpu_optim_buffers is 64 bytes");
static_assert(offsetof(dsrs_cpu_optim_buffers, n) == 40, "n at 40");
static_assert(offsetof(dsrs_cpu_optim_buffers, flags) == 60, "flags at 60");
#endif
