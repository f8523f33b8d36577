// cpu_adagrad.cpp - the cpu_adagrad op: Adagrad, fp32/fp16/bf16 parameters, fp32 state.
//
// The formula and the C interface are in kernels/include/dsrs_cpu_adagrad.h; the vector
// layer, dtype conversions and threading in kernels/include/dsrs_simd.h.

// No FMA contraction (see cpu_adam.cpp); before the includes.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "dsrs_cpu_adagrad.h"

#include <cstddef>

#include "dsrs_simd.h"

namespace {

using namespace dsrs_simd;

template <bool Decay>
struct AdagradOp {
    static constexpr int kStates = 1;
    float inv, neg_lr, eps, wd;

    template <class V>
    DSRS_VEC_TARGET void apply(V& p, V g, V& v, V&) const {
        const V g0 = mul(g, splat<V>(inv));
        V gd = g0;
        if (Decay) {
            gd = add(g0, mul(splat<V>(wd), p));
        }
        v = add(v, mul(gd, gd));
        p = add(p, mul(splat<V>(neg_lr), div(g0, add(sqrt_(v), splat<V>(eps)))));
    }
};

} // namespace

DSRS_OP_EXPORT int32_t dsrs_cpu_adagrad_step(const dsrs_cpu_adagrad_config* cfg,
                                             const dsrs_cpu_optim_buffers* b) {
    if (cfg == nullptr || b == nullptr) {
        return DSRS_OP_ERR_NULL;
    }
    const int32_t s = check_buffers(b->params, b->grads, b->exp_avg, b->exp_avg_sq, b->param_copy,
                                    b->n, b->params_dtype, b->grads_dtype, b->copy_dtype,
                                    b->flags, false, true);
    if (s != DSRS_OP_OK) {
        return s;
    }
    if (!finite_nonneg(cfg->lr) || !finite_pos(cfg->eps) || !finite_nonneg(cfg->weight_decay) ||
        !finite_pos(cfg->grad_scale) || cfg->num_threads < 0) {
        return DSRS_OP_ERR_CONFIG;
    }
    if (b->n == 0) {
        return DSRS_OP_OK;
    }
    const float inv = inv_scale(cfg->grad_scale);
    // exp_avg_sq is the op's only state: it goes in the first state slot.
    if (cfg->weight_decay > 0.0f) {
        const AdagradOp<true> op{inv, -cfg->lr, cfg->eps, cfg->weight_decay};
        dispatch(op, b->params_dtype, b->grads_dtype, b->copy_dtype, b->params, b->grads,
                 b->exp_avg_sq, nullptr, b->param_copy, b->n, cfg->num_threads,
                 (b->flags & DSRS_OPTIM_ZERO_GRADS) != 0);
    } else {
        const AdagradOp<false> op{inv, -cfg->lr, cfg->eps, 0.0f};
        dispatch(op, b->params_dtype, b->grads_dtype, b->copy_dtype, b->params, b->grads,
                 b->exp_avg_sq, nullptr, b->param_copy, b->n, cfg->num_threads,
                 (b->flags & DSRS_OPTIM_ZERO_GRADS) != 0);
    }
    return DSRS_OP_OK;
}

DSRS_OP_EXPORT const char* dsrs_cpu_adagrad_simd_level(void) {
    return DSRS_SIMD_LEVEL;
}

static_assert(sizeof(dsrs_cpu_adagrad_config) == 20, "dsrs_cpu_adagrad_config is 20 bytes");
static_assert(offsetof(dsrs_cpu_adagrad_config, num_threads) == 16, "num_threads at 16");
