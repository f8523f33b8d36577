/*
 * dsrs_cpu_adam.h - the cpu_adam op: one Adam / AdamW step with DeepSpeed's CPU-Adam
 * semantics, fp32/fp16/bf16 parameters with fp32 states (dsrs_cpu_optim.h).
 *
 * Per element i (float arithmetic, evaluated exactly in this order, no fused multiply-add):
 *
 *   g  = grad[i] * inv_scale                       (inv_scale = 1/grad_scale, see below)
 *   if (weight_decay > 0 && !adamw_mode)  g = g + weight_decay * p        (L2)
 *   m  = beta1 * m + (1 - beta1) * g
 *   v  = beta2 * v + ((1 - beta2) * g) * g
 *   denom = sqrt(v) * bc2 + eps
 *   if (weight_decay > 0 && adamw_mode)   p = p + (-lr * weight_decay) * p (decoupled)
 *   p  = p + (-lr / bc1) * (m / denom)
 *
 * with, computed once per call in double and then rounded to float:
 *   bc1 = bias_correction ? 1 - pow(beta1, step)          : 1
 *   bc2 = bias_correction ? 1 / sqrt(1 - pow(beta2, step)) : 1
 *   inv_scale = 1 / grad_scale      (gradients are unscaled by multiplying, as DeepSpeed's
 *                                    engine does; exact for grad_scale 1 and powers of two)
 * (1 - beta1), (1 - beta2), (-lr * weight_decay) and (-lr / bc1) are float operations.
 * p is read from the parameters' dtype and the result rounded back to it.
 *
 * The result does not depend on the SIMD level, the thread count or the alignment (every
 * operation is a correctly rounded IEEE float operation and elements are independent), and
 * it matches the fused_adam CUDA kernel and the Rust reference bit for bit.
 */
#ifndef DSRS_CPU_ADAM_H
#define DSRS_CPU_ADAM_H

#include <stdint.h>

#include "dsrs_cpu_optim.h"

#if defined(__cplusplus)
extern "C" {
#endif

/*
 * The step's configuration. Layout (C, natural alignment; 48 bytes, align 8):
 *   0 lr, 4 beta1, 8 beta2, 12 eps, 16 weight_decay (float)
 *   20 adamw_mode, 24 bias_correction (int32), [28: 4 bytes padding]
 *   32 step (int64), 40 grad_scale (float), 44 num_threads (int32)
 */
typedef struct dsrs_cpu_adam_config {
    float lr;                /* learning rate, finite and >= 0 */
    float beta1;             /* in [0, 1) */
    float beta2;             /* in [0, 1) */
    float eps;               /* finite and > 0 */
    float weight_decay;      /* finite and >= 0 */
    int32_t adamw_mode;      /* 1: decoupled weight decay (AdamW), 0: L2 added to the gradient */
    int32_t bias_correction; /* 1: apply bias correction, 0: do not */
    int64_t step;            /* the step being taken, 1-based (>= 1) */
    float grad_scale;        /* gradients are divided by this inside the step (1 = none); finite and > 0 */
    int32_t num_threads;     /* 0 = OpenMP default; ignored without OpenMP; >= 0 */
} dsrs_cpu_adam_config;

/*
 * One step over b->n elements, in place on params, exp_avg and exp_avg_sq (both required),
 * writing param_copy when it is not NULL.
 * Returns DSRS_OP_OK; DSRS_OP_ERR_NULL when cfg or b is NULL or, with n > 0, a required
 * array is NULL; DSRS_OP_ERR_CONFIG when a field is out of range (see the struct;
 * adamw_mode and bias_correction must be 0 or 1; flags must be 0 or DSRS_OPTIM_ZERO_GRADS); DSRS_OP_ERR_DTYPE for
 * a dtype combination dsrs_cpu_optim.h does not list. Nothing is written on error.
 */
DSRS_OP_EXPORT int32_t dsrs_cpu_adam_step(const dsrs_cpu_adam_config* cfg,
                                          const dsrs_cpu_optim_buffers* b);

/* The fp32-only entry point: dsrs_cpu_adam_step with fp32 params and grads, no copy. */
DSRS_OP_EXPORT int32_t dsrs_cpu_adam_step_f32(float* params, const float* grads, float* exp_avg,
                                              float* exp_avg_sq, uint64_t n,
                                              const dsrs_cpu_adam_config* cfg);

/* The SIMD level this library was built for: "avx512", "avx2", "neon" or "scalar". */
DSRS_OP_EXPORT const char* dsrs_cpu_adam_simd_level(void);

/* omp_get_max_threads() in an OpenMP build, else 1. */
DSRS_OP_EXPORT int32_t dsrs_cpu_adam_max_threads(void);

#if defined(__cplusplus)
}
#endif

#endif /* DSRS_CPU_ADAM_H */
