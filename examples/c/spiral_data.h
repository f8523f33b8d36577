/*
 * spiral_data.h — the demo dataset: three interleaved spiral arms in the plane, generated
 * from a seed (header-only; examples/README.md states the algorithm).
 *
 * Bit-identical to examples/python/spiral_data.py: both use only IEEE-754 double
 * additions, subtractions, multiplications, divisions and floor() (no libm sine, cosine or
 * logarithm, whose last bits may differ between libraries), in the same order. Compile with
 * -ffp-contract=off so that no a * b + c becomes a fused multiply-add (x86-64 compilers do
 * not fuse without -mfma; AArch64 GCC does by default).
 *
 *   float *x = malloc(4000 * 2 * sizeof *x); int32_t *y = malloc(4000 * sizeof *y);
 *   spiral_generate(SPIRAL_SEED, 4000, x, y);   // first 3000 train, last 1000 held out
 *   uint64_t h = spiral_fnv1a64(SPIRAL_FNV_OFFSET, x, 4000 * 2 * sizeof *x);
 */
#ifndef DSRS_EXAMPLES_SPIRAL_DATA_H
#define DSRS_EXAMPLES_SPIRAL_DATA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* The default seed and sizes of the demos. */
#define SPIRAL_SEED 20240607u
#define SPIRAL_N_TRAIN 3000
#define SPIRAL_N_TEST 1000
#define SPIRAL_CLASSES 3
/* Noise: standard deviation of the angle (radians) and of each coordinate. */
#define SPIRAL_ANGLE_NOISE 0.3
#define SPIRAL_XY_NOISE 0.02
/* How far each arm turns from the centre to the rim (radians). */
#define SPIRAL_TURN 10.0

#define SPIRAL_TWO_PI 6.283185307179586
#define SPIRAL_SQRT3 1.7320508075688772
#define SPIRAL_FNV_OFFSET 0xCBF29CE484222325ull

/* Sebastiano Vigna's splitmix64. */
typedef struct {
  uint64_t state;
} spiral_rng;

static inline uint64_t spiral_next_u64(spiral_rng *g) {
  uint64_t z = (g->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A double in [0, 1): the top 53 bits times 2^-53. */
static inline double spiral_uniform(spiral_rng *g) {
  return (double)(spiral_next_u64(g) >> 11) * (1.0 / 9007199254740992.0);
}

/* An approximately standard normal double: (u1 + u2 + u3 + u4 - 2) * sqrt(3). */
static inline double spiral_normal(spiral_rng *g) {
  double s = spiral_uniform(g);
  s = s + spiral_uniform(g);
  s = s + spiral_uniform(g);
  s = s + spiral_uniform(g);
  return (s - 2.0) * SPIRAL_SQRT3;
}

/* sin and cos from their Taylor series after reducing x to [-pi, pi] (17 terms each). */
static inline void spiral_sin_cos(double x, double *sin_out, double *cos_out) {
  double k = floor(x / SPIRAL_TWO_PI + 0.5);
  double r = x - k * SPIRAL_TWO_PI;
  double r2 = r * r;
  double s = r, c = 1.0, ts = r, tc = 1.0;
  for (int n = 1; n < 18; n++) {
    ts = ts * -r2 / (double)((2 * n) * (2 * n + 1));
    tc = tc * -r2 / (double)((2 * n - 1) * (2 * n));
    s = s + ts;
    c = c + tc;
  }
  *sin_out = s;
  *cos_out = c;
}

/* `count` points of the stream of `seed`: xy[2 i], xy[2 i + 1] and label[i]. */
static inline void spiral_generate(uint64_t seed, size_t count, float *xy, int32_t *label) {
  spiral_rng g = {seed};
  for (size_t i = 0; i < count; i++) {
    int32_t c = (int32_t)(i % SPIRAL_CLASSES);
    double r = 0.05 + 0.95 * spiral_uniform(&g);
    double angle = (double)c * (SPIRAL_TWO_PI / SPIRAL_CLASSES) + SPIRAL_TURN * r +
                   SPIRAL_ANGLE_NOISE * spiral_normal(&g);
    double s, co;
    spiral_sin_cos(angle, &s, &co);
    double x = r * co + SPIRAL_XY_NOISE * spiral_normal(&g);
    double y = r * s + SPIRAL_XY_NOISE * spiral_normal(&g);
    xy[2 * i] = (float)x;
    xy[2 * i + 1] = (float)y;
    label[i] = c;
  }
}

/* FNV-1a (64-bit) of n bytes, continuing from `h` (start with SPIRAL_FNV_OFFSET). The bytes
 * are those of the host's representation: little-endian on the machines this runs on. */
static inline uint64_t spiral_fnv1a64(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}

#endif /* DSRS_EXAMPLES_SPIRAL_DATA_H */
