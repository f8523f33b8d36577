// fused_adam.cu - the fused_adam op: one Adam / AdamW step over many tensors per launch.
//
// Compiled by NVRTC with the op's headers on the include path: the only #include is
// dsrs_mt_apply.cuh (kernels/include, listed in the op's spec), which includes nothing.
//
// Per element, the same formula and the same order of float operations as the CPU op and
// the pure-Rust reference (src/ops/optim/reference.rs):
//
//   g  = grad * inv_grad_scale
//   if (weight_decay > 0 && !adamw_mode)  g = g + weight_decay * p
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + ((1 - beta2) * g) * g
//   denom = sqrt(v) * bc2 + eps
//   if (weight_decay > 0 && adamw_mode)   p = p + (-lr * weight_decay) * p
//   p  = p + (-lr / bc1) * (m / denom)
//
// The host (src/ops/optim/cuda.rs) derives every constant once, with f32 operations in
// exactly this form: 1 - beta1, 1 - beta2, -lr * weight_decay, -lr / bc1, and passes them
// in dsrs_adam_hyper. Every per-element operation is an explicitly rounded intrinsic
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn), so NVRTC's default --fmad=true cannot
// contract anything into an FMA. Do not build with --use_fast_math or --ftz=true.
//
// Parameters are fp32, fp16 or bf16 (loaded as float, updated, stored rounded to nearest
// even); gradients are fp32 or the parameters' dtype (fp32 parameters also take fp16/bf16
// gradients); exp_avg and exp_avg_sq are fp32.
//
// Kernels, one per (parameter dtype, gradient dtype):
//   dsrs_fused_adam_f32_f32  dsrs_fused_adam_f32_f16  dsrs_fused_adam_f32_bf16
//   dsrs_fused_adam_f16_f16  dsrs_fused_adam_f16_f32
//   dsrs_fused_adam_bf16_bf16  dsrs_fused_adam_bf16_f32
// Signature: (dsrs_mt_args args, dsrs_adam_hyper hyper), both by value in the parameter
// block (3464 + 48 bytes). Launch with gridDim.x = args.num_blocks (<= 384) and exactly
// blockDim = (512, 1, 1), no dynamic shared memory.

// The multi-tensor apply machinery (argument block, fp16/bf16, vectors, chunk loop) shared
// with the other fused_* ops.
#include "dsrs_mt_apply.cuh"

// Per-launch constants, derived on the host (layout mirrored by `AdamHyper` in cuda.rs).
struct dsrs_adam_hyper {
    float beta1;
    float one_minus_beta1;  // 1 - beta1
    float beta2;
    float one_minus_beta2;  // 1 - beta2
    float eps;
    float bc2;              // 1 / sqrt(1 - beta2^step), or 1
    float step_size;        // -lr / bc1
    float weight_decay;     // the L2 coefficient (used when mode == 1)
    float decoupled;        // -lr * weight_decay (used when mode == 2)
    float inv_grad_scale;
    dsrs_u32 mode;          // 0: no weight decay, 1: L2 (Adam), 2: decoupled (AdamW)
    dsrs_u32 reserved;
};

static_assert(sizeof(dsrs_adam_hyper) == 48, "dsrs_adam_hyper must match AdamHyper in cuda.rs");

// One element, in registers.
static __device__ __forceinline__ void dsrs_adam_update(float& p, float g, float& m, float& v,
                                                        const dsrs_adam_hyper& h) {
    g = __fmul_rn(g, h.inv_grad_scale);
    if (h.mode == 1u) {
        g = __fadd_rn(g, __fmul_rn(h.weight_decay, p));
    }
    m = __fadd_rn(__fmul_rn(h.beta1, m), __fmul_rn(h.one_minus_beta1, g));
    v = __fadd_rn(__fmul_rn(h.beta2, v), __fmul_rn(__fmul_rn(h.one_minus_beta2, g), g));
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v), h.bc2), h.eps);
    if (h.mode == 2u) {
        p = __fadd_rn(p, __fmul_rn(h.decoupled, p));
    }
    p = __fadd_rn(p, __fmul_rn(h.step_size, __fdiv_rn(m, denom)));
}

template <typename P, typename G>
struct dsrs_adam_body {
    P* p;
    const G* g;
    float* m;
    float* v;
    dsrs_adam_hyper h;

    __device__ __forceinline__ void one(dsrs_u64 i) {
        float pp = dsrs_load(p[i]);
        float mm = m[i];
        float vv = v[i];
        dsrs_adam_update(pp, dsrs_load(g[i]), mm, vv, h);
        dsrs_store(p[i], pp);
        m[i] = mm;
        v[i] = vv;
    }

    __device__ __forceinline__ void four(dsrs_u64 i) {
        dsrs_vec4<P> pv = *reinterpret_cast<const dsrs_vec4<P>*>(p + i);
        const dsrs_vec4<G> gv = *reinterpret_cast<const dsrs_vec4<G>*>(g + i);
        dsrs_vec4<float> mv = *reinterpret_cast<const dsrs_vec4<float>*>(m + i);
        dsrs_vec4<float> vv = *reinterpret_cast<const dsrs_vec4<float>*>(v + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            float pp = dsrs_load(pv.e[k]);
            dsrs_adam_update(pp, dsrs_load(gv.e[k]), mv.e[k], vv.e[k], h);
            dsrs_store(pv.e[k], pp);
        }
        *reinterpret_cast<dsrs_vec4<P>*>(p + i) = pv;
        *reinterpret_cast<dsrs_vec4<float>*>(m + i) = mv;
        *reinterpret_cast<dsrs_vec4<float>*>(v + i) = vv;
    }
};

template <typename P, typename G>
static __device__ __forceinline__ void dsrs_adam_chunk(const dsrs_mt_args& a,
                                                       const dsrs_adam_hyper& h) {
    const dsrs_mt_chunk c = dsrs_mt_this_chunk(a);
    dsrs_adam_body<P, G> body;
    body.p = reinterpret_cast<P*>(a.params[c.slot]);
    body.g = reinterpret_cast<const G*>(a.grads[c.slot]);
    body.m = reinterpret_cast<float*>(a.exp_avg[c.slot]);
    body.v = reinterpret_cast<float*>(a.exp_avg_sq[c.slot]);
    body.h = h;
    const bool vectorized = dsrs_aligned(a.params[c.slot], 4 * sizeof(P)) &&
                            dsrs_aligned(a.grads[c.slot], 4 * sizeof(G)) &&
                            dsrs_aligned(a.exp_avg[c.slot], 16) &&
                            dsrs_aligned(a.exp_avg_sq[c.slot], 16);
    dsrs_mt_for_each(c.begin, c.end, vectorized, body);
}

#define DSRS_ADAM_KERNEL(NAME, P, G)                                                       \
    extern "C" __global__ void __launch_bounds__(DSRS_MT_THREADS)                          \
        NAME(const dsrs_mt_args args, const dsrs_adam_hyper hyper) {                       \
        dsrs_adam_chunk<P, G>(args, hyper);                                                \
    }

DSRS_MT_DTYPE_PAIRS(DSRS_ADAM_KERNEL, dsrs_fused_adam)
