/*
 * dsrs_cpu_lion.h - the cpu_lion op: one Lion step with DeepSpeed's CPU-Lion semantics,
 * fp32/fp16/bf16 parameters with fp32 momentum (dsrs_cpu_optim.h).
 *
 * Per element i (float arithmetic, in this order, no fused multiply-add):
 *
 *   g = grad[i] * inv_scale                        (inv_scale = 1/grad_scale, as cpu_adam)
 *   c = beta1 * m + (1 - beta1) * g
 *   u = copysign(lr, c)                            (c == +-0 steps by -+lr, as DeepSpeed)
 *   p = weight_decay > 0 ? p * (1 - lr * weight_decay) - u : p - u
 *   m = beta2 * m + (1 - beta2) * g
 */
#ifndef DSRS_CPU_LION_H
#define DSRS_CPU_LION_H

#include <stdint.h>

#include "dsrs_cpu_optim.h"

#if defined(__cplusplus)
extern "C" {
#endif

/* Layout (C; 24 bytes, align 4): 0 lr, 4 beta1, 8 beta2, 12 weight_decay, 16 grad_scale
 * (float), 20 num_threads. */
typedef struct dsrs_cpu_lion_config {
    float lr;           /* finite and >= 0 */
    float beta1;        /* in [0, 1] */
    float beta2;        /* in [0, 1] */
    float weight_decay; /* finite and >= 0 */
    float grad_scale;   /* finite and > 0; 1 = none */
    int32_t num_threads;/* 0 = OpenMP default; >= 0 */
} dsrs_cpu_lion_config;

/* One step over b->n elements (exp_avg required, exp_avg_sq ignored). Statuses as
 * dsrs_cpu_adam_step. */
DSRS_OP_EXPORT int32_t dsrs_cpu_lion_step(const dsrs_cpu_lion_config* cfg,
                                          const dsrs_cpu_optim_buffers* b);

/* The SIMD level this library was built for. */
DSRS_OP_EXPORT const char* dsrs_cpu_lion_simd_level(void);

#if defined(__cplusplus)
}
#endif

#endif /* DSRS_CPU_LION_H */
