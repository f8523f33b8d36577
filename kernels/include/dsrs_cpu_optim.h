/*
 * dsrs_cpu_optim.h - what the CPU optimizer ops (cpu_adam, cpu_adagrad, cpu_lion) share:
 * the buffers of one step and the dtype codes.
 *
 * Parameters are fp32, fp16 or bf16; gradients fp32 or the parameters' dtype (fp32
 * parameters take fp16 and bf16 gradients too: mixed-precision master weights); optimizer
 * states are fp32. With fp32 parameters a step may also write a copy of the updated
 * parameters rounded to fp16 or bf16 (DeepSpeed's "param copy" for ZeRO-Offload), in the
 * same pass. Rounding to fp16/bf16 is to nearest, ties to even.
 *
 * The arrays must not overlap; they need no particular alignment; any length works.
 */
#ifndef DSRS_CPU_OPTIM_H
#define DSRS_CPU_OPTIM_H

#include <stdint.h>

#include "dsrs_op.h"

#if defined(__cplusplus)
extern "C" {
#endif

/* Element types of params, grads and param_copy. */
#define DSRS_OPTIM_F32 0
#define DSRS_OPTIM_F16 1
#define DSRS_OPTIM_BF16 2

/* flags: zero the gradients after the step has read them (the training engine's zero_grad,
 * fused into the step's pass: each tile is zeroed while it is in cache). grads must then be
 * writable. The step's results do not change. */
#define DSRS_OPTIM_ZERO_GRADS 1

/* A status beyond dsrs_op.h's: an unsupported dtype combination. */
#define DSRS_OP_ERR_DTYPE 3

/*
 * The arrays of one step. Layout (C, natural alignment; 64 bytes, align 8):
 *   0 params, 8 grads, 16 exp_avg, 24 exp_avg_sq, 32 param_copy (pointers),
 *   40 n (uint64), 48 params_dtype, 52 grads_dtype, 56 copy_dtype, 60 flags (int32)
 */
typedef struct dsrs_cpu_optim_buffers {
    void* params;           /* n elements of params_dtype, updated in place */
    const void* grads;      /* n elements of grads_dtype */
    float* exp_avg;         /* n floats: Adam's first moment, Lion's momentum; NULL for Adagrad */
    float* exp_avg_sq;      /* n floats: Adam's second moment, Adagrad's sum of squares; NULL for Lion */
    void* param_copy;       /* NULL, or n elements of copy_dtype receiving the updated params */
    uint64_t n;             /* number of elements (0 is a no-op) */
    int32_t params_dtype;   /* DSRS_OPTIM_* */
    int32_t grads_dtype;    /* DSRS_OPTIM_* */
    int32_t copy_dtype;     /* DSRS_OPTIM_F16 or DSRS_OPTIM_BF16; ignored when param_copy is NULL */
    int32_t flags;          /* 0, or DSRS_OPTIM_ZERO_GRADS */
} dsrs_cpu_optim_buffers;

#if defined(__cplusplus)
}
#endif

#endif /* DSRS_CPU_OPTIM_H */
