/*
 * dsrs_cpu_adagrad.h - the cpu_adagrad op: one Adagrad step with DeepSpeed's CPU-Adagrad
 * semantics, fp32/fp16/bf16 parameters with an fp32 sum of squares (dsrs_cpu_optim.h).
 *
 * Per element i (float arithmetic, in this order, no fused multiply-add):
 *
 *   g0 = grad[i] * inv_scale                       (inv_scale = 1/grad_scale, as cpu_adam)
 *   g  = weight_decay > 0 ? g0 + weight_decay * p : g0
 *   v  = v + g * g
 *   p  = p + (-lr) * (g0 / (sqrt(v) + eps))
 *
 * As in DeepSpeed, the weight-decayed gradient feeds the accumulator while the step uses
 * the raw gradient. There is no step count, learning-rate decay or initial accumulator
 * value: initialize exp_avg_sq to the value you want (torch: initial_accumulator_value).
 */
#ifndef DSRS_CPU_ADAGRAD_H
#define DSRS_CPU_ADAGRAD_H

#include <stdint.h>

#include "dsrs_cpu_optim.h"

#if defined(__cplusplus)
extern "C" {
#endif

/* Layout (C; 20 bytes, align 4): 0 lr, 4 eps, 8 weight_decay, 12 grad_scale (float), 16 num_threads. */
typedef struct dsrs_cpu_adagrad_config {
    float lr;           /* finite and >= 0 */
    float eps;          /* finite and > 0 */
    float weight_decay; /* finite and >= 0 */
    float grad_scale;   /* finite and > 0; 1 = none */
    int32_t num_threads;/* 0 = OpenMP default; >= 0 */
} dsrs_cpu_adagrad_config;

/* One step over b->n elements (exp_avg_sq required, exp_avg ignored). Statuses as
 * dsrs_cpu_adam_step. */
DSRS_OP_EXPORT int32_t dsrs_cpu_adagrad_step(const dsrs_cpu_adagrad_config* cfg,
                                             const dsrs_cpu_optim_buffers* b);

/* The SIMD level this library was built for. */
DSRS_OP_EXPORT const char* dsrs_cpu_adagrad_simd_level(void);

#if defined(__cplusplus)
}
#endif

#endif /* DSRS_CPU_ADAGRAD_H */
