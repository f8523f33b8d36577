// fused_lamb.cu - the fused_lamb op: one LAMB step over many tensors (DeepSpeed's FusedLamb
// semantics: deepspeed/ops/lamb/fused_lamb.py, csrc/lamb/fused_lamb_cuda_kernel.cu), with a
// per-tensor trust ratio and a deterministic reduction.
//
// Compiled by NVRTC with the op's headers on the include path: the only #include is
// dsrs_mt_apply.cuh (kernels/include, listed in the op's spec), which includes nothing.
//
// A step is three kinds of launches on one stream (src/ops/optim/cuda.rs):
//
// 1. dsrs_fused_lamb_moments_<P>_<G>(args, hyper, partials): per element
//      g = grad * inv_grad_scale
//      m = beta1 * m + (1 - beta1) * g
//      v = beta2 * v + ((1 - beta2) * g) * g
//      denom = eps_inside_sqrt ? sqrt(v + eps) : sqrt(v) + eps
//      u = m / denom
//      if (weight_decay > 0)  u = u + weight_decay * p
//    m and v are stored; p is not changed. Each block sums p*p and u*u over its chunk in
//    double (each product is exact in double) and writes the pair to
//    partials[2 * (args.partial_base[slot] + chunk)] (+1), after a fixed-shape tree
//    reduction in shared memory: no atomics, so the sums are the same on every run.
// 2. dsrs_fused_lamb_ratios(ratio_args): one block per tensor sums its chunks' partials in a
//    fixed order and writes the trust ratio, as DeepSpeed clamps it:
//      w = sqrt(sum p^2), n = sqrt(sum u^2)           (double)
//      ratio = (w != 0 && n != 0) ? clamp(float(w / n), min_coeff, max_coeff) : 1
//    (a NaN norm gives a NaN ratio, as in DeepSpeed).
// 3. dsrs_fused_lamb_apply_<P>(args, hyper, ratios): recomputes u from the stored m, v and
//    the unchanged p (the same operations as in 1), then
//      p = p - (step_size * ratio) * u
//    with step_size = lr * sqrt(1 - beta2^step) / (1 - beta1^step) (lr without bias
//    correction), derived on the host in double and rounded to float.
//
// The host derives 1 - beta1 and 1 - beta2 with f32 operations in exactly this form. Every
// per-element operation is an explicitly rounded intrinsic, so nothing is contracted into
// an FMA. Do not build with --use_fast_math or --ftz=true.
//
// Parameters are fp32, fp16 or bf16 (loaded as float, stored rounded to nearest even);
// gradients are fp32 or the parameters' dtype (fp32 parameters also take fp16/bf16
// gradients); exp_avg and exp_avg_sq are fp32.
//
// Kernels:
//   dsrs_fused_lamb_moments_f32_f32  dsrs_fused_lamb_moments_f32_f16
//   dsrs_fused_lamb_moments_f32_bf16 dsrs_fused_lamb_moments_f16_f16
//   dsrs_fused_lamb_moments_f16_f32  dsrs_fused_lamb_moments_bf16_bf16
//   dsrs_fused_lamb_moments_bf16_f32
//       (dsrs_mt_args args, dsrs_lamb_hyper hyper, double* partials)
//   dsrs_fused_lamb_ratios (dsrs_lamb_ratio_args args)
//   dsrs_fused_lamb_apply_f32  dsrs_fused_lamb_apply_f16  dsrs_fused_lamb_apply_bf16
//       (dsrs_mt_args args, dsrs_lamb_hyper hyper, const float* ratios)
// Launch every kernel with exactly blockDim = (512, 1, 1) and no dynamic shared memory;
// gridDim.x = args.num_blocks (<= 384).

// The multi-tensor apply machinery (argument block, fp16/bf16, vectors, chunk loop) shared
// with the other fused_* ops.
#include "dsrs_mt_apply.cuh"

// Per-step constants, derived on the host (layout mirrored by `LambHyper` in cuda.rs).
struct dsrs_lamb_hyper {
    float beta1;
    float one_minus_beta1;  // 1 - beta1
    float beta2;
    float one_minus_beta2;  // 1 - beta2
    float eps;
    float weight_decay;
    float step_size;        // lr * sqrt(1 - beta2^step) / (1 - beta1^step), or lr
    float inv_grad_scale;
    dsrs_u32 eps_inside_sqrt;
    dsrs_u32 use_weight_decay;  // weight_decay > 0
};

static_assert(sizeof(dsrs_lamb_hyper) == 40, "dsrs_lamb_hyper must match LambHyper in cuda.rs");

// The trust-ratio launch: block b handles tensor first_tensor + b.
#define DSRS_LAMB_MAX_RATIOS 384

struct dsrs_lamb_ratio_args {
    dsrs_u64 partials;                    // const double*: (sum p^2, sum u^2) per chunk
    dsrs_u64 ratios;                      // float*: one per tensor of the step
    dsrs_u32 begin[DSRS_LAMB_MAX_RATIOS];  // first partial slot of the block's tensor
    dsrs_u32 count[DSRS_LAMB_MAX_RATIOS];  // its number of chunks (0: an empty tensor)
    dsrs_u32 first_tensor;
    dsrs_u32 num_blocks;
    float max_coeff;
    float min_coeff;
};

static_assert(sizeof(dsrs_lamb_ratio_args) == 3104,
              "dsrs_lamb_ratio_args must match LambRatioArgs in cuda.rs");

// The update direction of one element (before the trust ratio).
static __device__ __forceinline__ float dsrs_lamb_direction(float p, float m, float v,
                                                            const dsrs_lamb_hyper& h) {
    const float denom = h.eps_inside_sqrt != 0u ? __fsqrt_rn(__fadd_rn(v, h.eps))
                                                : __fadd_rn(__fsqrt_rn(v), h.eps);
    float u = __fdiv_rn(m, denom);
    if (h.use_weight_decay != 0u) {
        u = __fadd_rn(u, __fmul_rn(h.weight_decay, p));
    }
    return u;
}

// Sums a and b over the block (DSRS_MT_THREADS threads), in a fixed order; every thread
// must call it. The results are valid in thread 0.
static __device__ __forceinline__ void dsrs_block_sum2(double& a, double& b) {
    __shared__ double sa[DSRS_MT_THREADS];
    __shared__ double sb[DSRS_MT_THREADS];
    const unsigned t = threadIdx.x;
    sa[t] = a;
    sb[t] = b;
    __syncthreads();
#pragma unroll
    for (unsigned s = DSRS_MT_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) {
            sa[t] = __dadd_rn(sa[t], sa[t + s]);
            sb[t] = __dadd_rn(sb[t], sb[t + s]);
        }
        __syncthreads();
    }
    a = sa[0];
    b = sb[0];
}

template <typename P, typename G>
struct dsrs_lamb_moments_body {
    const P* p;
    const G* g;
    float* m;
    float* v;
    dsrs_lamb_hyper h;
    double sum_p;
    double sum_u;

    __device__ __forceinline__ void element(float pp, float gg, float& mm, float& vv) {
        gg = __fmul_rn(gg, h.inv_grad_scale);
        mm = __fadd_rn(__fmul_rn(h.beta1, mm), __fmul_rn(h.one_minus_beta1, gg));
        vv = __fadd_rn(__fmul_rn(h.beta2, vv), __fmul_rn(__fmul_rn(h.one_minus_beta2, gg), gg));
        const float u = dsrs_lamb_direction(pp, mm, vv, h);
        const double pd = (double)pp;
        const double ud = (double)u;
        sum_p = __dadd_rn(sum_p, __dmul_rn(pd, pd));
        sum_u = __dadd_rn(sum_u, __dmul_rn(ud, ud));
    }

    __device__ __forceinline__ void one(dsrs_u64 i) {
        float mm = m[i];
        float vv = v[i];
        element(dsrs_load(p[i]), dsrs_load(g[i]), mm, vv);
        m[i] = mm;
        v[i] = vv;
    }

    __device__ __forceinline__ void four(dsrs_u64 i) {
        const dsrs_vec4<P> pv = *reinterpret_cast<const dsrs_vec4<P>*>(p + i);
        const dsrs_vec4<G> gv = *reinterpret_cast<const dsrs_vec4<G>*>(g + i);
        dsrs_vec4<float> mv = *reinterpret_cast<const dsrs_vec4<float>*>(m + i);
        dsrs_vec4<float> vv = *reinterpret_cast<const dsrs_vec4<float>*>(v + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            element(dsrs_load(pv.e[k]), dsrs_load(gv.e[k]), mv.e[k], vv.e[k]);
        }
        *reinterpret_cast<dsrs_vec4<float>*>(m + i) = mv;
        *reinterpret_cast<dsrs_vec4<float>*>(v + i) = vv;
    }
};

template <typename P, typename G>
static __device__ __forceinline__ void dsrs_lamb_moments_chunk(const dsrs_mt_args& a,
                                                               const dsrs_lamb_hyper& h,
                                                               double* partials) {
    const dsrs_mt_chunk c = dsrs_mt_this_chunk(a);
    dsrs_lamb_moments_body<P, G> body;
    body.p = reinterpret_cast<const P*>(a.params[c.slot]);
    body.g = reinterpret_cast<const G*>(a.grads[c.slot]);
    body.m = reinterpret_cast<float*>(a.exp_avg[c.slot]);
    body.v = reinterpret_cast<float*>(a.exp_avg_sq[c.slot]);
    body.h = h;
    body.sum_p = 0.0;
    body.sum_u = 0.0;
    const bool vectorized = dsrs_aligned(a.params[c.slot], 4 * sizeof(P)) &&
                            dsrs_aligned(a.grads[c.slot], 4 * sizeof(G)) &&
                            dsrs_aligned(a.exp_avg[c.slot], 16) &&
                            dsrs_aligned(a.exp_avg_sq[c.slot], 16);
    dsrs_mt_for_each(c.begin, c.end, vectorized, body);
    double sp = body.sum_p;
    double su = body.sum_u;
    dsrs_block_sum2(sp, su);
    if (threadIdx.x == 0) {
        const dsrs_u64 slot =
            (dsrs_u64)a.partial_base[c.slot] + (dsrs_u64)a.block_chunk[blockIdx.x];
        partials[2 * slot] = sp;
        partials[2 * slot + 1] = su;
    }
}

template <typename P>
struct dsrs_lamb_apply_body {
    P* p;
    const float* m;
    const float* v;
    dsrs_lamb_hyper h;
    float scale;  // step_size * ratio

    __device__ __forceinline__ float element(float pp, float mm, float vv) {
        const float u = dsrs_lamb_direction(pp, mm, vv, h);
        return __fsub_rn(pp, __fmul_rn(scale, u));
    }

    __device__ __forceinline__ void one(dsrs_u64 i) {
        dsrs_store(p[i], element(dsrs_load(p[i]), m[i], v[i]));
    }

    __device__ __forceinline__ void four(dsrs_u64 i) {
        dsrs_vec4<P> pv = *reinterpret_cast<const dsrs_vec4<P>*>(p + i);
        const dsrs_vec4<float> mv = *reinterpret_cast<const dsrs_vec4<float>*>(m + i);
        const dsrs_vec4<float> vv = *reinterpret_cast<const dsrs_vec4<float>*>(v + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            dsrs_store(pv.e[k], element(dsrs_load(pv.e[k]), mv.e[k], vv.e[k]));
        }
        *reinterpret_cast<dsrs_vec4<P>*>(p + i) = pv;
    }
};

template <typename P>
static __device__ __forceinline__ void dsrs_lamb_apply_chunk(const dsrs_mt_args& a,
                                                             const dsrs_lamb_hyper& h,
                                                             const float* ratios) {
    const dsrs_mt_chunk c = dsrs_mt_this_chunk(a);
    dsrs_lamb_apply_body<P> body;
    body.p = reinterpret_cast<P*>(a.params[c.slot]);
    body.m = reinterpret_cast<const float*>(a.exp_avg[c.slot]);
    body.v = reinterpret_cast<const float*>(a.exp_avg_sq[c.slot]);
    body.h = h;
    body.scale = __fmul_rn(h.step_size, ratios[a.tensor_index[c.slot]]);
    const bool vectorized = dsrs_aligned(a.params[c.slot], 4 * sizeof(P)) &&
                            dsrs_aligned(a.exp_avg[c.slot], 16) &&
                            dsrs_aligned(a.exp_avg_sq[c.slot], 16);
    dsrs_mt_for_each(c.begin, c.end, vectorized, body);
}

#define DSRS_LAMB_MOMENTS_KERNEL(NAME, P, G)                                               \
    extern "C" __global__ void __launch_bounds__(DSRS_MT_THREADS)                          \
        NAME(const dsrs_mt_args args, const dsrs_lamb_hyper hyper, double* partials) {     \
        dsrs_lamb_moments_chunk<P, G>(args, hyper, partials);                              \
    }

DSRS_MT_DTYPE_PAIRS(DSRS_LAMB_MOMENTS_KERNEL, dsrs_fused_lamb_moments)

extern "C" __global__ void __launch_bounds__(DSRS_MT_THREADS)
    dsrs_fused_lamb_ratios(const dsrs_lamb_ratio_args args) {
    const dsrs_u32 b = blockIdx.x;
    const double* partials = reinterpret_cast<const double*>(args.partials);
    const dsrs_u64 begin = (dsrs_u64)args.begin[b];
    const dsrs_u64 count = (dsrs_u64)args.count[b];
    double sp = 0.0;
    double su = 0.0;
    for (dsrs_u64 i = threadIdx.x; i < count; i += DSRS_MT_THREADS) {
        sp = __dadd_rn(sp, partials[2 * (begin + i)]);
        su = __dadd_rn(su, partials[2 * (begin + i) + 1]);
    }
    dsrs_block_sum2(sp, su);
    if (threadIdx.x == 0) {
        const double w = __dsqrt_rn(sp);
        const double n = __dsqrt_rn(su);
        float ratio = 1.0f;
        if (w != 0.0 && n != 0.0) {
            ratio = __double2float_rn(__ddiv_rn(w, n));
            if (ratio > args.max_coeff) {
                ratio = args.max_coeff;
            }
            if (ratio < args.min_coeff) {
                ratio = args.min_coeff;
            }
        }
        reinterpret_cast<float*>(args.ratios)[args.first_tensor + b] = ratio;
    }
}

#define DSRS_LAMB_APPLY_KERNEL(NAME, P)                                                    \
    extern "C" __global__ void __launch_bounds__(DSRS_MT_THREADS)                          \
        NAME(const dsrs_mt_args args, const dsrs_lamb_hyper hyper, const float* ratios) {  \
        dsrs_lamb_apply_chunk<P>(args, hyper, ratios);                                     \
    }

DSRS_LAMB_APPLY_KERNEL(dsrs_fused_lamb_apply_f32, float)
DSRS_LAMB_APPLY_KERNEL(dsrs_fused_lamb_apply_f16, dsrs_f16)
DSRS_LAMB_APPLY_KERNEL(dsrs_fused_lamb_apply_bf16, dsrs_bf16)
