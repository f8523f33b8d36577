// dsrs_mt_apply.cuh - what the multi-tensor CUDA optimizer ops (fused_adam.cu, fused_lamb.cu,
// fused_lion.cu) share: the integer types, the launch argument block, fp16/bf16 as raw bits
// with their conversions, 4-element vectors, the chunk loop and the dtype pairs.
//
// Included as "dsrs_mt_apply.cuh": NVRTC gets the op's work directory's include/ as its
// include path (src/ops/nvrtc.rs), nvcc -I<build>/src/include, and the host-emulation tests
// in src/ops/optim/cuda.rs -I<their directory>/include; every op that includes it lists it
// in its spec's headers (src/ops/builders/fused_*.rs). It #includes nothing itself: NVRTC
// has no standard library here.

#ifndef DSRS_MT_APPLY_CUH
#define DSRS_MT_APPLY_CUH

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
// src/ops/optim/cuda.rs compile the kernels and this header as host C++
// (DSRS_HOST_EMULATION) and run them on the CPU; they define these two macros themselves.
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

// KERNEL(PREFIX_<params>_<grads>, P, G) for every supported (parameter dtype, gradient
// dtype) pair: fp32 parameters with fp32, fp16 or bf16 gradients, fp16 and bf16 parameters
// with gradients of their own dtype or fp32 - the pairs the host accepts
// (ops::optim::check_dtypes), with the names it launches (dtype_tag in
// src/ops/optim/cuda.rs).
#define DSRS_MT_DTYPE_PAIRS(KERNEL, PREFIX)              \
    KERNEL(PREFIX##_f32_f32, float, float)               \
    KERNEL(PREFIX##_f32_f16, float, dsrs_f16)            \
    KERNEL(PREFIX##_f32_bf16, float, dsrs_bf16)          \
    KERNEL(PREFIX##_f16_f16, dsrs_f16, dsrs_f16)         \
    KERNEL(PREFIX##_f16_f32, dsrs_f16, float)            \
    KERNEL(PREFIX##_bf16_bf16, dsrs_bf16, dsrs_bf16)     \
    KERNEL(PREFIX##_bf16_f32, dsrs_bf16, float)

#endif  // DSRS_MT_APPLY_CUH
