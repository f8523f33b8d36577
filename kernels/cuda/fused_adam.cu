// fused_adam.cu - the fused_adam op: one Adam / AdamW step on the GPU.
//
// Compiled by NVRTC alone, with no include path: nothing is #included, every type and
// helper used here is defined in this file.
//
// Per element, the same formula and the same order of float operations as the CPU op
// (kernels/include/dsrs_cpu_adam.h):
//
//   g  = grad * inv_grad_scale
//   if (weight_decay > 0 && !adamw_mode)  g = g + weight_decay * p
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + ((1 - beta2) * g) * g
//   denom = sqrt(v) * bc2 + eps
//   if (weight_decay > 0 && adamw_mode)   p = p + (-lr * weight_decay) * p
//   p  = p + (-lr / bc1) * (m / denom)
//
// The host passes bc1 and bc2 exactly as the CPU op derives them, in double, then rounded
// to float:
//   bc1 = bias_correction ? 1 - pow(beta1, step)          : 1
//   bc2 = bias_correction ? 1 / sqrt(1 - pow(beta2, step)) : 1
//
// Every operation is an explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn,
// __fsqrt_rn), so NVRTC's default --fmad=true cannot contract anything into an FMA. With
// the default --ftz=false (do not build with --use_fast_math or --ftz=true) the results are
// bit-identical to the CPU op whenever inv_grad_scale is exactly 1/grad_scale, i.e. for
// grad_scale 1 or a power of two (dynamic loss scales are powers of two). For any other
// scale the CPU divides by grad_scale and this kernel multiplies by its reciprocal, which
// may differ in the last bit of g.
//
// Kernels (launch with any 1-D grid; every kernel is a grid-stride loop):
//   dsrs_fused_adam_f32   p, g, m, v all float
//   dsrs_fused_adam_bf16  p and g bfloat16 (raw bits in unsigned short), m and v float;
//                         p is widened to float, updated, and rounded back to nearest-even
//                         (NaN stays NaN)
// Each has a 4-wide path (16-byte float loads) when every pointer allows it, and a scalar
// path otherwise and for the tail.

typedef unsigned long long dsrs_u64;
typedef unsigned int dsrs_u32;
typedef unsigned short dsrs_u16;

struct alignas(16) dsrs_float4 {
    float x, y, z, w;
};

struct alignas(8) dsrs_ushort4 {
    dsrs_u16 x, y, z, w;
};

// Per-launch constants, derived identically by every thread.
struct dsrs_adam_consts {
    float beta1;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps;
    float bc2;
    float step_size;     // -lr / bc1
    float l2;            // weight_decay when L2 applies, else 0
    float decoupled;     // -lr * weight_decay when decoupled decay applies, else 0
    float inv_grad_scale;
    bool use_l2;
    bool use_decoupled;
};

static __device__ __forceinline__ dsrs_adam_consts dsrs_adam_make_consts(
    float lr, float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
    int adamw_mode, float inv_grad_scale) {
    dsrs_adam_consts c;
    c.beta1 = beta1;
    c.one_minus_beta1 = __fsub_rn(1.0f, beta1);
    c.beta2 = beta2;
    c.one_minus_beta2 = __fsub_rn(1.0f, beta2);
    c.eps = eps;
    c.bc2 = bc2;
    c.step_size = __fdiv_rn(-lr, bc1);
    c.use_l2 = weight_decay > 0.0f && adamw_mode == 0;
    c.use_decoupled = weight_decay > 0.0f && adamw_mode != 0;
    c.l2 = weight_decay;
    c.decoupled = __fmul_rn(-lr, weight_decay);
    c.inv_grad_scale = inv_grad_scale;
    return c;
}

// One element, in registers.
static __device__ __forceinline__ void dsrs_adam_update(float& p, float g, float& m, float& v,
                                                        const dsrs_adam_consts& c) {
    g = __fmul_rn(g, c.inv_grad_scale);
    if (c.use_l2) {
        g = __fadd_rn(g, __fmul_rn(c.l2, p));
    }
    m = __fadd_rn(__fmul_rn(c.beta1, m), __fmul_rn(c.one_minus_beta1, g));
    v = __fadd_rn(__fmul_rn(c.beta2, v), __fmul_rn(__fmul_rn(c.one_minus_beta2, g), g));
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v), c.bc2), c.eps);
    if (c.use_decoupled) {
        p = __fadd_rn(p, __fmul_rn(c.decoupled, p));
    }
    p = __fadd_rn(p, __fmul_rn(c.step_size, __fdiv_rn(m, denom)));
}

// bfloat16 <-> float on raw bits.
static __device__ __forceinline__ float dsrs_bf16_to_f32(dsrs_u16 h) {
    return __uint_as_float(((dsrs_u32)h) << 16);
}

// Round to nearest, ties to even; a NaN keeps its sign and top payload bits and is made
// quiet (so it cannot round into an infinity).
static __device__ __forceinline__ dsrs_u16 dsrs_f32_to_bf16_rne(float f) {
    const dsrs_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (dsrs_u16)((b >> 16) | 0x0040u);
    }
    const dsrs_u32 lsb = (b >> 16) & 1u;
    return (dsrs_u16)((b + 0x7fffu + lsb) >> 16);
}

static __device__ __forceinline__ dsrs_u64 dsrs_thread_index() {
    return (dsrs_u64)blockIdx.x * (dsrs_u64)blockDim.x + (dsrs_u64)threadIdx.x;
}

static __device__ __forceinline__ dsrs_u64 dsrs_grid_stride() {
    return (dsrs_u64)gridDim.x * (dsrs_u64)blockDim.x;
}

extern "C" __global__ void dsrs_fused_adam_f32(float* p, const float* g, float* m, float* v,
                                               unsigned long long n, float lr, float beta1,
                                               float beta2, float eps, float weight_decay,
                                               float bc1, float bc2, int adamw_mode,
                                               float inv_grad_scale) {
    const dsrs_adam_consts c = dsrs_adam_make_consts(lr, beta1, beta2, eps, weight_decay, bc1,
                                                     bc2, adamw_mode, inv_grad_scale);
    const dsrs_u64 start = dsrs_thread_index();
    const dsrs_u64 stride = dsrs_grid_stride();

    dsrs_u64 scalar_from = 0;
    const dsrs_u64 addr_bits = (dsrs_u64)p | (dsrs_u64)g | (dsrs_u64)m | (dsrs_u64)v;
    if ((addr_bits & 15u) == 0) {
        const dsrs_u64 n4 = n / 4;
        dsrs_float4* p4 = reinterpret_cast<dsrs_float4*>(p);
        const dsrs_float4* g4 = reinterpret_cast<const dsrs_float4*>(g);
        dsrs_float4* m4 = reinterpret_cast<dsrs_float4*>(m);
        dsrs_float4* v4 = reinterpret_cast<dsrs_float4*>(v);
        for (dsrs_u64 i = start; i < n4; i += stride) {
            dsrs_float4 pp = p4[i];
            const dsrs_float4 gg = g4[i];
            dsrs_float4 mm = m4[i];
            dsrs_float4 vv = v4[i];
            dsrs_adam_update(pp.x, gg.x, mm.x, vv.x, c);
            dsrs_adam_update(pp.y, gg.y, mm.y, vv.y, c);
            dsrs_adam_update(pp.z, gg.z, mm.z, vv.z, c);
            dsrs_adam_update(pp.w, gg.w, mm.w, vv.w, c);
            p4[i] = pp;
            m4[i] = mm;
            v4[i] = vv;
        }
        scalar_from = n4 * 4;
    }
    for (dsrs_u64 i = scalar_from + start; i < n; i += stride) {
        float pp = p[i];
        float mm = m[i];
        float vv = v[i];
        dsrs_adam_update(pp, g[i], mm, vv, c);
        p[i] = pp;
        m[i] = mm;
        v[i] = vv;
    }
}

extern "C" __global__ void dsrs_fused_adam_bf16(dsrs_u16* p, const dsrs_u16* g, float* m,
                                                float* v, unsigned long long n, float lr,
                                                float beta1, float beta2, float eps,
                                                float weight_decay, float bc1, float bc2,
                                                int adamw_mode, float inv_grad_scale) {
    const dsrs_adam_consts c = dsrs_adam_make_consts(lr, beta1, beta2, eps, weight_decay, bc1,
                                                     bc2, adamw_mode, inv_grad_scale);
    const dsrs_u64 start = dsrs_thread_index();
    const dsrs_u64 stride = dsrs_grid_stride();

    dsrs_u64 scalar_from = 0;
    // 4 elements: 8 bytes of p and g, 16 bytes of m and v.
    const dsrs_u64 misaligned =
        (((dsrs_u64)p | (dsrs_u64)g) & 7u) | (((dsrs_u64)m | (dsrs_u64)v) & 15u);
    if (misaligned == 0) {
        const dsrs_u64 n4 = n / 4;
        dsrs_ushort4* p4 = reinterpret_cast<dsrs_ushort4*>(p);
        const dsrs_ushort4* g4 = reinterpret_cast<const dsrs_ushort4*>(g);
        dsrs_float4* m4 = reinterpret_cast<dsrs_float4*>(m);
        dsrs_float4* v4 = reinterpret_cast<dsrs_float4*>(v);
        for (dsrs_u64 i = start; i < n4; i += stride) {
            dsrs_ushort4 ph = p4[i];
            const dsrs_ushort4 gh = g4[i];
            dsrs_float4 mm = m4[i];
            dsrs_float4 vv = v4[i];
            float px = dsrs_bf16_to_f32(ph.x), py = dsrs_bf16_to_f32(ph.y);
            float pz = dsrs_bf16_to_f32(ph.z), pw = dsrs_bf16_to_f32(ph.w);
            dsrs_adam_update(px, dsrs_bf16_to_f32(gh.x), mm.x, vv.x, c);
            dsrs_adam_update(py, dsrs_bf16_to_f32(gh.y), mm.y, vv.y, c);
            dsrs_adam_update(pz, dsrs_bf16_to_f32(gh.z), mm.z, vv.z, c);
            dsrs_adam_update(pw, dsrs_bf16_to_f32(gh.w), mm.w, vv.w, c);
            ph.x = dsrs_f32_to_bf16_rne(px);
            ph.y = dsrs_f32_to_bf16_rne(py);
            ph.z = dsrs_f32_to_bf16_rne(pz);
            ph.w = dsrs_f32_to_bf16_rne(pw);
            p4[i] = ph;
            m4[i] = mm;
            v4[i] = vv;
        }
        scalar_from = n4 * 4;
    }
    for (dsrs_u64 i = scalar_from + start; i < n; i += stride) {
        float pp = dsrs_bf16_to_f32(p[i]);
        float mm = m[i];
        float vv = v[i];
        dsrs_adam_update(pp, dsrs_bf16_to_f32(g[i]), mm, vv, c);
        p[i] = dsrs_f32_to_bf16_rne(pp);
        m[i] = mm;
        v[i] = vv;
    }
}
