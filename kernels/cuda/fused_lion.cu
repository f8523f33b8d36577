// fused_lion.cu - the fused_lion op: one Lion step over many tensors per launch
// (DeepSpeed's cpu_lion / FusedLion semantics).
//
// Compiled by NVRTC with the op's headers on the include path: the only #include is
// dsrs_mt_apply.cuh (kernels/include, listed in the op's spec), which includes nothing.
//
// Per element, the same formula and the same order of float operations as the CPU op and
// the pure-Rust reference (src/ops/optim/reference.rs):
//
//   g = grad * inv_grad_scale
//   c = beta1 * m + (1 - beta1) * g
//   u = copysign(lr, c)
//   if (weight_decay > 0)  p = p * (1 - lr * weight_decay) - u
//   else                   p = p - u
//   m = beta2 * m + (1 - beta2) * g
//
// The host (src/ops/optim/cuda.rs) derives 1 - beta1, 1 - beta2 and 1 - lr * weight_decay
// with f32 operations in exactly this form and passes them in dsrs_lion_hyper. Every
// per-element operation is an explicitly rounded intrinsic, so nothing is contracted into
// an FMA. Do not build with --use_fast_math or --ftz=true. copysign takes the sign bit of c
// as it is (c = -0 gives -lr; a NaN's sign bit decides, and GPU NaNs are positive).
//
// Parameters are fp32, fp16 or bf16 (loaded as float, updated, stored rounded to nearest
// even); gradients are fp32 or the parameters' dtype (fp32 parameters also take fp16/bf16
// gradients); exp_avg is fp32 (exp_avg_sq is not used).
//
// Kernels, one per (parameter dtype, gradient dtype):
//   dsrs_fused_lion_f32_f32  dsrs_fused_lion_f32_f16  dsrs_fused_lion_f32_bf16
//   dsrs_fused_lion_f16_f16  dsrs_fused_lion_f16_f32
//   dsrs_fused_lion_bf16_bf16  dsrs_fused_lion_bf16_f32
// Signature: (dsrs_mt_args args, dsrs_lion_hyper hyper), both by value in the parameter
// block (3464 + 32 bytes). Launch with gridDim.x = args.num_blocks (<= 384) and exactly
// blockDim = (512, 1, 1), no dynamic shared memory.

// The multi-tensor apply machinery (argument block, fp16/bf16, vectors, chunk loop) shared
// with the other fused_* ops.
#include "dsrs_mt_apply.cuh"

// Per-launch constants, derived on the host (layout mirrored by `LionHyper` in cuda.rs).
struct dsrs_lion_hyper {
    float lr;
    float beta1;
    float one_minus_beta1;  // 1 - beta1
    float beta2;
    float one_minus_beta2;  // 1 - beta2
    float decay;            // 1 - lr * weight_decay (used when use_decay != 0)
    float inv_grad_scale;
    dsrs_u32 use_decay;     // weight_decay > 0
};

static_assert(sizeof(dsrs_lion_hyper) == 32, "dsrs_lion_hyper must match LionHyper in cuda.rs");

// copysign(magnitude, sign) on bits (magnitude >= 0).
static __device__ __forceinline__ float dsrs_copysign(float magnitude, float sign) {
    return __uint_as_float((__float_as_uint(magnitude) & 0x7fffffffu) |
                           (__float_as_uint(sign) & 0x80000000u));
}

// One element, in registers.
static __device__ __forceinline__ void dsrs_lion_update(float& p, float g, float& m,
                                                        const dsrs_lion_hyper& h) {
    g = __fmul_rn(g, h.inv_grad_scale);
    const float c = __fadd_rn(__fmul_rn(h.beta1, m), __fmul_rn(h.one_minus_beta1, g));
    const float u = dsrs_copysign(h.lr, c);
    if (h.use_decay != 0u) {
        p = __fsub_rn(__fmul_rn(p, h.decay), u);
    } else {
        p = __fsub_rn(p, u);
    }
    m = __fadd_rn(__fmul_rn(h.beta2, m), __fmul_rn(h.one_minus_beta2, g));
}

template <typename P, typename G>
struct dsrs_lion_body {
    P* p;
    const G* g;
    float* m;
    dsrs_lion_hyper h;

    __device__ __forceinline__ void one(dsrs_u64 i) {
        float pp = dsrs_load(p[i]);
        float mm = m[i];
        dsrs_lion_update(pp, dsrs_load(g[i]), mm, h);
        dsrs_store(p[i], pp);
        m[i] = mm;
    }

    __device__ __forceinline__ void four(dsrs_u64 i) {
        dsrs_vec4<P> pv = *reinterpret_cast<const dsrs_vec4<P>*>(p + i);
        const dsrs_vec4<G> gv = *reinterpret_cast<const dsrs_vec4<G>*>(g + i);
        dsrs_vec4<float> mv = *reinterpret_cast<const dsrs_vec4<float>*>(m + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            float pp = dsrs_load(pv.e[k]);
            dsrs_lion_update(pp, dsrs_load(gv.e[k]), mv.e[k], h);
            dsrs_store(pv.e[k], pp);
        }
        *reinterpret_cast<dsrs_vec4<P>*>(p + i) = pv;
        *reinterpret_cast<dsrs_vec4<float>*>(m + i) = mv;
    }
};

template <typename P, typename G>
static __device__ __forceinline__ void dsrs_lion_chunk(const dsrs_mt_args& a,
                                                       const dsrs_lion_hyper& h) {
    const dsrs_mt_chunk c = dsrs_mt_this_chunk(a);
    dsrs_lion_body<P, G> body;
    body.p = reinterpret_cast<P*>(a.params[c.slot]);
    body.g = reinterpret_cast<const G*>(a.grads[c.slot]);
    body.m = reinterpret_cast<float*>(a.exp_avg[c.slot]);
    body.h = h;
    const bool vectorized = dsrs_aligned(a.params[c.slot], 4 * sizeof(P)) &&
                            dsrs_aligned(a.grads[c.slot], 4 * sizeof(G)) &&
                            dsrs_aligned(a.exp_avg[c.slot], 16);
    dsrs_mt_for_each(c.begin, c.end, vectorized, body);
}

#define DSRS_LION_KERNEL(NAME, P, G)                                                       \
    extern "C" __global__ void __launch_bounds__(DSRS_MT_THREADS)                          \
        NAME(const dsrs_mt_args args, const dsrs_lion_hyper hyper) {                       \
        dsrs_lion_chunk<P, G>(args, hyper);                                                \
    }

DSRS_MT_DTYPE_PAIRS(DSRS_LION_KERNEL, dsrs_fused_lion)
