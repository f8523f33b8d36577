// dsrs_philox.cuh - the accelerators' Philox4x32-10 generator on the GPU, shared by the CUDA
// ops that draw from it (philox_random.cu, quantizer.cu). Bit-identical to the CPU
// accelerator's (src/accelerator/rng.rs); specification: docs/accelerators.md, section
// "Random numbers" ("Key" and "Block").
//
// Included as "dsrs_philox.cuh": NVRTC gets the op's work directory's include/ as its include
// path (src/ops/nvrtc.rs), nvcc -I<build>/src/include; every op that includes it lists it in
// its spec's headers (src/ops/builders/philox_random.rs, cuda_quantizer.rs). It #includes
// nothing itself: NVRTC has no standard library here.

#ifndef DSRS_PHILOX_CUH
#define DSRS_PHILOX_CUH

typedef unsigned long long dsrs_u64;
typedef unsigned int dsrs_u32;

#define DSRS_PHILOX_M0 0xD2511F53u
#define DSRS_PHILOX_M1 0xCD9E8D57u
#define DSRS_PHILOX_W0 0x9E3779B9u
#define DSRS_PHILOX_W1 0xBB67AE85u

// One Philox block: four 32-bit words, used in order.
struct dsrs_philox_words4 {
    dsrs_u32 w[4];
};

// Block `block` (absolute: offset + index) under `seed`: counter [block lo, block hi, 0, 0],
// key [seed lo, seed hi], ten rounds, the key bumped by (W0, W1) before rounds 2..10.
static __device__ __forceinline__ dsrs_philox_words4 dsrs_philox_block(dsrs_u64 seed,
                                                                       dsrs_u64 block) {
    dsrs_u32 c0 = (dsrs_u32)block;
    dsrs_u32 c1 = (dsrs_u32)(block >> 32);
    dsrs_u32 c2 = 0u;
    dsrs_u32 c3 = 0u;
    dsrs_u32 k0 = (dsrs_u32)seed;
    dsrs_u32 k1 = (dsrs_u32)(seed >> 32);
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += DSRS_PHILOX_W0;
            k1 += DSRS_PHILOX_W1;
        }
        const dsrs_u32 hi0 = __umulhi(DSRS_PHILOX_M0, c0);
        const dsrs_u32 lo0 = DSRS_PHILOX_M0 * c0;
        const dsrs_u32 hi1 = __umulhi(DSRS_PHILOX_M1, c2);
        const dsrs_u32 lo1 = DSRS_PHILOX_M1 * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    dsrs_philox_words4 r;
    r.w[0] = c0;
    r.w[1] = c1;
    r.w[2] = c2;
    r.w[3] = c3;
    return r;
}

#endif // DSRS_PHILOX_CUH
