// kernel_digest.cpp - runs every CPU kernel (cpu_adam, cpu_adagrad, cpu_lion, the
// quantizer) on deterministic pseudo-random inputs and prints one FNV-1a digest of the
// outputs per case. Every SIMD path must produce the same bits (docs/optimizers.md,
// docs/quantizer.md), so the output of this program is the same whatever the build:
// scripts/test-cross.sh compares the AVX-512, AVX2 and scalar builds on this machine with
// the NEON build run under qemu-aarch64 (the NEON path has no other test: CI is x86).
//
// Built from the kernel sources themselves (one program, all four ops), e.g.
//   g++ -std=c++17 -O2 -fopenmp -DDSRS_SIMD_AVX2 -Ikernels/include
//       tests/cross/kernel_digest.cpp kernels/cpu/cpu_adam.cpp kernels/cpu/cpu_adagrad.cpp
//       kernels/cpu/cpu_lion.cpp kernels/cpu/quantizer.cpp -o digest

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "dsrs_cpu_adagrad.h"
#include "dsrs_cpu_adam.h"
#include "dsrs_cpu_lion.h"
#include "dsrs_quantizer.h"

namespace {

struct Rng {
    uint64_t s;
    uint64_t next() {
        s += 0x9E3779B97F4A7C15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // uniform in [-a, a): 24 random bits, exact in float
    float sym(float a) { return ((float)(next() >> 40) / 16777216.0f * 2.0f - 1.0f) * a; }
};

uint64_t fnv(uint64_t h, const void* p, size_t n) {
    const unsigned char* b = (const unsigned char*)p;
    for (size_t i = 0; i < n; ++i) {
        h ^= b[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

// float -> fp16 / bf16 bits, round to nearest even (inputs here are normal and finite)
uint16_t to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

uint16_t to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7FFFFFFFu;
    // |f| <= 1 here: normal fp16 unless below 2^-14, which these inputs avoid (flushed to 0)
    if (x < 0x38800000u) {
        return (uint16_t)sign;
    }
    x += 0xC8000FFFu + ((x >> 13) & 1u);
    return (uint16_t)(sign | (x >> 13));
}

struct Arr {
    int dtype; // 0 f32, 1 f16, 2 bf16
    std::vector<unsigned char> bytes;
    Arr(int d, const std::vector<float>& v) : dtype(d) {
        const size_t es = d == 0 ? 4 : 2;
        bytes.resize(v.size() * es);
        for (size_t i = 0; i < v.size(); ++i) {
            if (d == 0) {
                std::memcpy(&bytes[i * 4], &v[i], 4);
            } else {
                const uint16_t h = d == 1 ? to_f16(v[i]) : to_bf16(v[i]);
                std::memcpy(&bytes[i * 2], &h, 2);
            }
        }
    }
};

std::vector<float> rand_vec(Rng& r, size_t n, float a) {
    std::vector<float> v(n);
    for (auto& x : v) {
        x = r.sym(a);
    }
    return v;
}

const char* kName[] = {"f32", "f16", "bf16"};

int failures = 0;

void check(int32_t s, const char* what) {
    if (s != 0) {
        std::printf("FAILED: %s returned %d\n", what, s);
        ++failures;
    }
}

// opt: 0 adam (adamw, wd), 1 adam (L2, wd, grad_scale 3), 2 adagrad, 3 lion
void optim_case(int opt, int pd, int gd, int cd, size_t n, int threads) {
    Rng r{n * 1000003u + (uint64_t)(opt * 97 + pd * 31 + gd * 7 + cd)};
    Arr p(pd, rand_vec(r, n, 1.0f));
    std::vector<float> m = rand_vec(r, n, 0.01f);
    std::vector<float> v = rand_vec(r, n, 1e-4f);
    for (auto& x : v) {
        x = x < 0 ? -x : x;
    }
    std::vector<unsigned char> copy(cd >= 0 ? n * 2 : 0);
    for (int step = 1; step <= 3; ++step) {
        Arr g(gd, rand_vec(r, n, 0.1f));
        dsrs_cpu_optim_buffers b = {p.bytes.data(), g.bytes.data(), m.data(), v.data(),
                                    cd >= 0 ? copy.data() : nullptr, n, pd, gd, cd >= 0 ? cd : 0,
                                    0};
        if (opt <= 1) {
            dsrs_cpu_adam_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, opt == 0 ? 0.01f : 0.05f,
                                      opt == 0 ? 1 : 0, 1, step, opt == 0 ? 1.0f : 3.0f, threads};
            check(dsrs_cpu_adam_step(&c, &b), "dsrs_cpu_adam_step");
        } else if (opt == 2) {
            b.exp_avg = nullptr;
            dsrs_cpu_adagrad_config c = {1e-2f, 1e-10f, 0.1f, 6.0f, threads};
            check(dsrs_cpu_adagrad_step(&c, &b), "dsrs_cpu_adagrad_step");
        } else {
            b.exp_avg_sq = nullptr;
            dsrs_cpu_lion_config c = {3e-4f, 0.95f, 0.98f, 0.1f, 256.0f, threads};
            check(dsrs_cpu_lion_step(&c, &b), "dsrs_cpu_lion_step");
        }
    }
    uint64_t h = 0xCBF29CE484222325ull;
    h = fnv(h, p.bytes.data(), p.bytes.size());
    h = fnv(h, m.data(), m.size() * 4);
    h = fnv(h, v.data(), v.size() * 4);
    h = fnv(h, copy.data(), copy.size());
    static const char* opts[] = {"adamw", "adam_l2", "adagrad", "lion"};
    std::printf("%-8s params %-4s grads %-4s copy %-4s n %-5zu threads %d  %016llx\n", opts[opt],
                kName[pd], kName[gd], cd >= 0 ? kName[cd] : "-", n, threads,
                (unsigned long long)h);
}

void quantizer_case(int bits, int sym, int rounding, int dtype, size_t n, uint64_t gs) {
    Rng r{n * 7919u + gs * 31u + (uint64_t)(bits * 5 + sym * 3 + rounding + dtype * 11)};
    Arr x(dtype, rand_vec(r, n, 2.0f));
    const size_t groups = (n + gs - 1) / gs;
    std::vector<uint8_t> q(bits == 8 ? n : (n + 1) / 2);
    std::vector<float> scales(groups), offsets(groups);
    std::vector<float> out(n);
    dsrs_quantizer_config c = {bits, sym, gs, rounding, 0, 1234567u, 99u};
    check(dsrs_quantizer_quantize(&c, dtype, x.bytes.data(), n, q.data(), scales.data(),
                                  sym ? nullptr : offsets.data()),
          "dsrs_quantizer_quantize");
    check(dsrs_quantizer_dequantize(&c, q.data(), scales.data(), sym ? nullptr : offsets.data(), n,
                                    0, out.data()),
          "dsrs_quantizer_dequantize");
    uint64_t h = 0xCBF29CE484222325ull;
    h = fnv(h, q.data(), q.size());
    h = fnv(h, scales.data(), scales.size() * 4);
    if (!sym) {
        h = fnv(h, offsets.data(), offsets.size() * 4);
    }
    h = fnv(h, out.data(), out.size() * 4);
    std::printf("quantize int%d %s %s input %-4s n %-5zu group %-4llu  %016llx\n", bits,
                sym ? "sym " : "asym", rounding ? "stoch  " : "nearest", kName[dtype], n,
                (unsigned long long)gs, (unsigned long long)h);
}

} // namespace

int main() {
    const int combos[][3] = {{0, 0, -1}, {0, 0, 1}, {0, 0, 2}, {0, 1, -1}, {0, 2, 2},
                             {1, 1, -1}, {1, 0, -1}, {2, 2, -1}, {2, 0, -1}};
    const size_t lengths[] = {1, 7, 33, 1023, 20011};
    for (int opt = 0; opt < 4; ++opt) {
        for (const auto& c : combos) {
            for (size_t n : lengths) {
                optim_case(opt, c[0], c[1], c[2], n, n > 10000 ? 2 : 1);
            }
        }
    }
    for (int bits : {8, 4}) {
        for (int sym : {1, 0}) {
            for (int rounding : {0, 1}) {
                for (int dtype : {0, 1, 2}) {
                    for (size_t n : {(size_t)7, (size_t)1023, (size_t)20011}) {
                        for (uint64_t gs : {(uint64_t)1, (uint64_t)64, (uint64_t)4096}) {
                            quantizer_case(bits, sym, rounding, dtype, n, gs);
                        }
                    }
                }
            }
        }
    }
    return failures == 0 ? 0 : 1;
}
