// cpu_lion.cpp - the cpu_lion op: Lion, fp32/fp16/bf16 parameters, fp32 momentum.
//
// The formula and the C interface are in kernels/include/dsrs_cpu_lion.h; the vector layer,
// dtype conversions and threading in kernels/include/dsrs_simd.h.

// No FMA contraction (see cpu_adam.cpp); before the includes.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "dsrs_cpu_lion.h"

#include <cstddef>

#include "dsrs_simd.h"

namespace {

using namespace dsrs_simd;

template <bool Decay>
struct LionOp {
    static constexpr int kStates = 1;
    float inv, beta1, one_minus_beta1, beta2, one_minus_beta2, lr, after_decay;

    template <class V>
    DSRS_VEC_TARGET void apply(V& p, V g, V& m, V&) const {
        g = mul(g, splat<V>(inv));
        const V c = add(mul(splat<V>(beta1), m), mul(splat<V>(one_minus_beta1), g));
        const V u = copysign_(splat<V>(lr), c);
        if (Decay) {
            p = sub(mul(p, splat<V>(after_decay)), u);
        } else {
            p = sub(p, u);
        }
        m = add(mul(splat<V>(beta2), m), mul(splat<V>(one_minus_beta2), g));
    }
};

bool in_closed_unit(float b) { // [0, 1]; false for NaN
    return b >= 0.0f && b <= 1.0f;
}

} // namespace

DSRS_OP_EXPORT int32_t dsrs_cpu_lion_step(const dsrs_cpu_lion_config* cfg,
                                          const dsrs_cpu_optim_buffers* b) {
    if (cfg == nullptr || b == nullptr) {
        return DSRS_OP_ERR_NULL;
    }
    const int32_t s = check_buffers(b->params, b->grads, b->exp_avg, b->exp_avg_sq, b->param_copy,
                                    b->n, b->params_dtype, b->grads_dtype, b->copy_dtype,
                                    b->flags, true, false);
    if (s != DSRS_OP_OK) {
        return s;
    }
    if (!finite_nonneg(cfg->lr) || !in_closed_unit(cfg->beta1) || !in_closed_unit(cfg->beta2) ||
        !finite_nonneg(cfg->weight_decay) || !finite_pos(cfg->grad_scale) || cfg->num_threads < 0) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (b->n == 0) {
        return DSRS_OP_OK;
    }
    const float lr = cfg->lr;
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    const float inv = inv_scale(cfg->grad_scale);
    if (cfg->weight_decay > 0.0f) {
        const LionOp<true> op{inv, b1, 1.0f - b1, b2, 1.0f - b2, lr, 1.0f - lr * cfg->weight_decay};
        dispatch(op, b->params_dtype, b->grads_dtype, b->copy_dtype, b->params, b->grads,
                 b->exp_avg, nullptr, b->param_copy, b->n, cfg->num_threads,
                 (b->flags & DSRS_OPTIM_ZERO_GRADS) != 0);
    } else {
        const LionOp<false> op{inv, b1, 1.0f - b1, b2, 1.0f - b2, lr, 1.0f};
        dispatch(op, b->params_dtype, b->grads_dtype, b->copy_dtype, b->params, b->grads,
                 b->exp_avg, nullptr, b->param_copy, b->n, cfg->num_threads,
                 (b->flags & DSRS_OPTIM_ZERO_GRADS) != 0);
    }
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT const char* dsrs_cpu_lion_simd_level(void) {
    return DSRS_SIMD_LEVEL;
}

static_assert(sizeof(dsrs_cpu_lion_config) == 24, "dsrs_cpu_lion_config is 24 bytes");
static_assert(offsetof(dsrs_cpu_lion_config, num_threads) == 20, "num_threads at 20");
