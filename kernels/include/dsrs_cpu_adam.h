/*
 * dsrs_cpu_adam.h - the cpu_adam op: one Adam / AdamW step on fp32 parameters with fp32
 * optimizer states, with DeepSpeed's CPU-Adam semantics.
 *
 * Per element i (float arithmetic, evaluated exactly in this order, no fused multiply-add):
 *
 *   g  = grad[i] / grad_scale                     (skipped when grad_scale == 1)
 *   if (weight_decay > 0 && !adamw_mode)  g = g + weight_decay * p        (L2)
 *   m  = beta1 * m + (1 - beta1) * g
 *   v  = beta2 * v + (1 - beta2) * g * g          (i.e. ((1 - beta2) * g) * g)
 *   denom = sqrt(v) * bc2 + eps
 *   if (weight_decay > 0 && adamw_mode)   p = p + (-lr * weight_decay) * p (decoupled)
 *   p  = p + (-lr / bc1) * (m / denom)
 *
 * with, computed once per call in double and then rounded to float:
 *   bc1 = bias_correction ? 1 - pow(beta1, step)          : 1
 *   bc2 = bias_correction ? 1 / sqrt(1 - pow(beta2, step)) : 1
 * (1 - beta1), (1 - beta2), (-lr * weight_decay) and (-lr / bc1) are float operations.
 *
 * The four arrays must not overlap; they need no particular alignment.
 * The result does not depend on the SIMD level or the thread count (every operation is
 * a correctly rounded IEEE float operation and elements are independent).
 */
#ifndef DSRS_CPU_ADAM_H
#define DSRS_CPU_ADAM_H

#include <stdint.h>

#include "dsrs_op.h"

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
 * One step over n elements, in place on params, exp_avg and exp_avg_sq.
 * Returns DSRS_OP_OK; DSRS_OP_ERR_NULL when cfg is NULL or, with n > 0, an array is NULL;
 * DSRS_OP_ERR_CONFIG when a field is out of range (see the struct; adamw_mode and
 * bias_correction must be 0 or 1). Nothing is written on error. n == 0 is a no-op.
 */
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
