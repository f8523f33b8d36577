// fused_lion.cu - the fused_lion op: one Lion step over many tensors per launch
// (DeepSpeed's cpu_lion / FusedLion semantics).
//
// Compiled by NVRTC alone, with no include path: nothing is #included, every type and
// helper used here is defined in this file.
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

// ---- multi-tensor common: begin (identical in fused_adam.cu, fused_lamb.cu, fused_lion.cu)
//
// Multi-tensor apply. One launch updates up to DSRS_MT_MAX_TENSORS tensors; the host splits
// every tensor into chunks of args.chunk_size elements (a multiple of 4) and gives each block
// one (tensor slot, chunk) pair through the block table. A tensor too large for one launch
// continues in the next with higher chunk numbers; all tensors of a launch share dtypes.
// Within a chunk, 4 elements per thread per iteration with 16-byte (fp32) or 8-byte
// (fp16/bf16) loads when every pointer of the tensor is aligned for that, one element per
// thread otherwise and for the tail.
//
// The layout is mirrored by `MtArgs` in src/ops/optim/cuda.rs (#[repr(C)]); the sizes are
// asserted on both sides.

typedef unsigned long long dsrs_u64;
typedef unsigned int dsrs_u32;
typedef unsigned short dsrs_u16;
typedef unsigned char dsrs_u8;

#define DSRS_MT_THREADS 512
#define DSRS_MT_MAX_TENSORS 32
#define DSRS_MT_MAX_BLOCKS 384

struct dsrs_mt_args {
    dsrs_u64 params[DSRS_MT_MAX_TENSORS];      // device addresses
    dsrs_u64 grads[DSRS_MT_MAX_TENSORS];       // (unused by the LAMB apply kernels)
    dsrs_u64 exp_avg[DSRS_MT_MAX_TENSORS];
    dsrs_u64 exp_avg_sq[DSRS_MT_MAX_TENSORS];  // (unused by Lion)
    dsrs_u64 len[DSRS_MT_MAX_TENSORS];         // elements
    dsrs_u32 partial_base[DSRS_MT_MAX_TENSORS];  // LAMB: first partial-sum slot of the tensor
    dsrs_u32 tensor_index[DSRS_MT_MAX_TENSORS];  // LAMB: the tensor's index in the step
    dsrs_u32 block_chunk[DSRS_MT_MAX_BLOCKS];    // block -> chunk number within its tensor
    dsrs_u8 block_tensor[DSRS_MT_MAX_BLOCKS];    // block -> tensor slot
    dsrs_u32 chunk_size;                         // elements per chunk, a multiple of 4
    dsrs_u32 num_blocks;                         // gridDim.x
};

static_assert(sizeof(dsrs_mt_args) == 3464, "dsrs_mt_args must match MtArgs in cuda.rs");

// 16-bit floats as raw bits, in distinct types so overloads can tell them apart.
struct dsrs_f16 {
    dsrs_u16 bits;
};
struct dsrs_bf16 {
    dsrs_u16 bits;
};

// Four consecutive elements, aligned to their size (16 bytes of fp32, 8 of fp16/bf16).
template <typename T>
struct alignas(4 * sizeof(T)) dsrs_vec4 {
    T e[4];
};

static __device__ __forceinline__ float dsrs_load(float x) { return x; }

static __device__ __forceinline__ float dsrs_load(dsrs_bf16 x) {
    return __uint_as_float(((dsrs_u32)x.bits) << 16);
}

// The hardware fp16 conversions (as __half2float and __float2half_rn). The tests in
// src/ops/optim/cuda.rs compile this file as host C++ (DSRS_HOST_EMULATION) and run the
// kernels on the CPU; they define these two macros themselves.
#ifndef DSRS_HOST_EMULATION
#define DSRS_F16_TO_F32(h, f) asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h))
#define DSRS_F32_TO_F16(f, h) asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f))
#endif

// Exact for every fp16 value (subnormals included).
static __device__ __forceinline__ float dsrs_load(dsrs_f16 x) {
    float f;
    DSRS_F16_TO_F32(x.bits, f);
    return f;
}

static __device__ __forceinline__ void dsrs_store(float& d, float f) { d = f; }

// Round to nearest, ties to even; a NaN keeps its sign and top payload bits and is made
// quiet (so it cannot round into an infinity) - as the `half` crate's bf16::from_f32.
static __device__ __forceinline__ void dsrs_store(dsrs_bf16& d, float f) {
    const dsrs_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        d.bits = (dsrs_u16)((b >> 16) | 0x0040u);
        return;
    }
    const dsrs_u32 lsb = (b >> 16) & 1u;
    d.bits = (dsrs_u16)((b + 0x7fffu + lsb) >> 16);
}

// IEEE round to nearest even with subnormals and overflow to infinity (the hardware
// conversion, as __float2half_rn); a NaN keeps its sign and top payload bits and is made
// quiet - as the `half` crate's f16::from_f32.
static __device__ __forceinline__ void dsrs_store(dsrs_f16& d, float f) {
    const dsrs_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        d.bits = (dsrs_u16)(((b >> 16) & 0x8000u) | 0x7e00u | ((b >> 13) & 0x03ffu));
        return;
    }
    dsrs_u16 h;
    DSRS_F32_TO_F16(f, h);
    d.bits = h;
}

// The chunk this block owns: tensor slot and element range [begin, end).
struct dsrs_mt_chunk {
    int slot;
    dsrs_u64 begin;
    dsrs_u64 end;
};

static __device__ __forceinline__ dsrs_mt_chunk dsrs_mt_this_chunk(const dsrs_mt_args& a) {
    dsrs_mt_chunk c;
    const dsrs_u32 b = blockIdx.x;
    c.slot = (int)a.block_tensor[b];
    const dsrs_u64 n = a.len[c.slot];
    const dsrs_u64 size = (dsrs_u64)a.chunk_size;
    c.begin = (dsrs_u64)a.block_chunk[b] * size;
    c.end = c.begin + size < n ? c.begin + size : n;
    return c;
}

static __device__ __forceinline__ bool dsrs_aligned(dsrs_u64 addr, dsrs_u64 bytes) {
    return (addr & (bytes - 1)) == 0;
}

// Calls body.four(i) for i = begin, begin + 4, ... (4 elements at i) when `vectorized`, then
// body.one(i) for every remaining element. begin is a multiple of 4.
template <typename Body>
static __device__ __forceinline__ void dsrs_mt_for_each(dsrs_u64 begin, dsrs_u64 end,
                                                        bool vectorized, Body& body) {
    dsrs_u64 rest = begin;
    if (vectorized) {
        const dsrs_u64 vend = begin + ((end - begin) & ~(dsrs_u64)3);
        for (dsrs_u64 i = begin + 4 * (dsrs_u64)threadIdx.x; i < vend;
             i += 4 * (dsrs_u64)DSRS_MT_THREADS) {
            body.four(i);
        }
        rest = vend;
    }
    for (dsrs_u64 i = rest + (dsrs_u64)threadIdx.x; i < end; i += (dsrs_u64)DSRS_MT_THREADS) {
        body.one(i);
    }
}

// ---- multi-tensor common: end

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

DSRS_LION_KERNEL(dsrs_fused_lion_f32_f32, float, float)
DSRS_LION_KERNEL(dsrs_fused_lion_f32_f16, float, dsrs_f16)
DSRS_LION_KERNEL(dsrs_fused_lion_f32_bf16, float, dsrs_bf16)
DSRS_LION_KERNEL(dsrs_fused_lion_f16_f16, dsrs_f16, dsrs_f16)
DSRS_LION_KERNEL(dsrs_fused_lion_f16_f32, dsrs_f16, float)
DSRS_LION_KERNEL(dsrs_fused_lion_bf16_bf16, dsrs_bf16, dsrs_bf16)
DSRS_LION_KERNEL(dsrs_fused_lion_bf16_f32, dsrs_bf16, float)
