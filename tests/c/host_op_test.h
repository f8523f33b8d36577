/*
 * host_op_test.h — what the tests of the host ops through the C ABI share (optim_test.c,
 * quantizer_test.c): element types, random data, host tensors, expected failures, the
 * private op cache and the SIMD variants. It includes check.h and tmpdir.h.
 *
 *  etype, etype_name, esize, edl, dl   fp32 / fp16 / bf16 and their DLDataType
 *  f2u, u2f                            the bits of a float, and back
 *  f32_to_bf16, f32_to_f16             round to nearest, ties to even (a NaN stays a quiet
 *  bf16_to_f32, f16_to_f32             NaN); exact widening
 *  eload, estore                       element i of an array of an etype, as a float
 *  rnd, rnd01                          uniform doubles in [-1, 1) and [0, 1) (test_rng_*)
 *  xmalloc                             malloc, fatal on failure (0 bytes allowed)
 *  tens, tens_set                      a one-dimensional host DLTensor and its shape
 *  EXPECT_ERROR, EXPECT_ERROR2         an expected failure: the status, the recorded
 *                                      status, "<function>: " and needles in the message
 *  print_simd_level(op, symbol)        the SIMD level a loaded op reports
 *  host_op_test_begin(test, probe, &c) main()'s start: the seed, this file's float
 *                                      operations checked, a private DSRS_CACHE_DIR, and
 *                                      the DSRS_JIT_SIMD variant probed (0: skip the test)
 *  host_op_test_end(test, &c)          the cache removed (kept after a failed check)
 *
 * The conversions are the references' stores: a test that includes this header is
 * compiled with -ffp-contract=off (tests/c/CMakeLists.txt), and host_op_test_begin checks
 * at run time that no a * b - c was contracted into a fused multiply-add.
 */
#ifndef DSRS_TESTS_HOST_OP_TEST_H
#define DSRS_TESTS_HOST_OP_TEST_H

#include <math.h>

#include "check.h"
#include "tmpdir.h"

/* ---------------------------------------------------------------------------------- */
/* Element types and conversions (round to nearest, ties to even).                      */

typedef enum { T_F32 = 0, T_F16 = 1, T_BF16 = 2 } etype;

static inline const char *etype_name(etype t) {
  return t == T_F32 ? "fp32" : t == T_F16 ? "fp16" : "bf16";
}

static inline size_t esize(etype t) { return t == T_F32 ? 4 : 2; }

static inline DLDataType dl(uint8_t code, uint8_t bits) {
  DLDataType d;
  d.code = code;
  d.bits = bits;
  d.lanes = 1;
  return d;
}

static inline DLDataType edl(etype t) {
  return dl((uint8_t)(t == T_BF16 ? kDLBfloat : kDLFloat), (uint8_t)(t == T_F32 ? 32 : 16));
}

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static inline float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

static inline uint16_t f32_to_f16(float f) {
  uint32_t x = f2u(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((ax & 0x7FFFFFu) >> 13)); /* NaN */
  if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to infinity */
  if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal */
    /* |f| * 2^24 is exact; rintf rounds it to nearest even (default rounding mode).
     * 1024 is the smallest normal's encoding, as it should be. */
    return (uint16_t)(sign | (uint16_t)rintf(u2f(ax) * 0x1p24f));
  }
  uint32_t h = ((((ax >> 23) - 127u + 15u) << 10) | ((ax & 0x7FFFFFu) >> 13));
  uint32_t rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry bumps the exponent */
  return (uint16_t)(sign | h);
}

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  uint32_t e = ((uint32_t)h >> 10) & 0x1Fu, m = (uint32_t)h & 0x3FFu;
  float mag;
  if (e == 0) {
    mag = ldexpf((float)m, -24);
  } else if (e == 31) {
    return u2f(sign | 0x7F800000u | (m << 13));
  } else {
    mag = u2f(((e - 15u + 127u) << 23) | (m << 13));
  }
  return u2f(sign | f2u(mag));
}

static inline float eload(const void *a, etype t, size_t i) {
  switch (t) {
    case T_F32: return ((const float *)a)[i];
    case T_F16: return f16_to_f32(((const uint16_t *)a)[i]);
    default: return bf16_to_f32(((const uint16_t *)a)[i]);
  }
}

static inline void estore(void *a, etype t, size_t i, float x) {
  switch (t) {
    case T_F32: ((float *)a)[i] = x; break;
    case T_F16: ((uint16_t *)a)[i] = f32_to_f16(x); break;
    default: ((uint16_t *)a)[i] = f32_to_bf16(x); break;
  }
}

/* ---------------------------------------------------------------------------------- */
/* Random data, memory and host tensors.                                                */

/* A uniform double in [-1, 1), and in [0, 1). */
static inline double rnd(void) { return (double)(test_rng_next() >> 11) * 0x1.0p-52 - 1.0; }
static inline double rnd01(void) { return (double)(test_rng_next() >> 11) * 0x1.0p-53; }

static inline void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  REQUIRE(p != NULL);
  return p;
}

/* A one-dimensional host DLTensor with its shape storage (never copied by value). */
typedef struct {
  DLTensor t;
  int64_t shape[1];
} tens;

static inline void tens_set(tens *x, void *data, DLDataType dt, size_t n) {
  memset(x, 0, sizeof *x);
  x->shape[0] = (int64_t)n;
  x->t.data = data;
  x->t.device.device_type = kDLCPU;
  x->t.device.device_id = 0;
  x->t.ndim = 1;
  x->t.dtype = dt;
  x->t.shape = x->shape;
  x->t.strides = NULL;
  x->t.byte_offset = 0;
}

/* ---------------------------------------------------------------------------------- */
/* Expected failures.                                                                   */

static int error_count = 0; /* expected failures checked */

/* One expected failure: the status (want, or alt), dsrs_last_error_status, a message that
 * starts with "<function>: " and contains every needle. Problems are reported at
 * file:line (the file's name without its directory). */
static inline void expect_failure(const char *file, int line, const char *what, dsrs_status got,
                                  dsrs_status want, dsrs_status alt, const char *function,
                                  const char *const *needles) {
  const char *slash = strrchr(file, '/');
  if (slash != NULL) file = slash + 1;
  error_count++;
  const char *msg = last_error();
  printf("  [%2d] %-52s -> %s | %.260s%s\n", error_count, what, status_name(got), msg,
         strlen(msg) > 260 ? "..." : "");
  if (got == DSRS_STATUS_OK || (got != want && got != alt)) {
    fprintf(stderr, "%s:%d: %s: expected %s, got %s\n", file, line, what, status_name(want),
            status_name(got));
    check_failures_++;
    return;
  }
  dsrs_status recorded = DSRS_STATUS_OK;
  CHECK_OK(dsrs_last_error_status(&recorded));
  if (recorded != got) {
    fprintf(stderr, "%s:%d: %s: dsrs_last_error_status is %s\n", file, line, what,
            status_name(recorded));
    check_failures_++;
  }
  size_t fl = strlen(function);
  if (strncmp(msg, function, fl) != 0 || strncmp(msg + fl, ": ", 2) != 0) {
    fprintf(stderr, "%s:%d: %s: the message does not start with \"%s: \"\n", file, line, what,
            function);
    check_failures_++;
  }
  for (const char *const *nd = needles; *nd != NULL; nd++) {
    if (strstr(msg, *nd) == NULL) {
      fprintf(stderr, "%s:%d: %s: the message lacks \"%s\"\n", file, line, what, *nd);
      check_failures_++;
    }
  }
}

/* EXPECT_ERROR(what, call, status, function, needles...); EXPECT_ERROR2 accepts either of
 * two statuses. */
#define EXPECT_ERROR(what, call, want, function, ...)                                      \
  expect_failure(__FILE__, __LINE__, what, (call), want, want, function,                  \
                 (const char *const[]){__VA_ARGS__, NULL})
#define EXPECT_ERROR2(what, call, want, alt, function, ...)                                \
  expect_failure(__FILE__, __LINE__, what, (call), want, alt, function,                   \
                 (const char *const[]){__VA_ARGS__, NULL})

/* ---------------------------------------------------------------------------------- */
/* The ops: SIMD levels, the private cache, the start and end of main().                */

/* Object pointers returned by dsrs_op_symbol, as function pointers: ISO C has no cast
 * between the two, POSIX guarantees they have the same representation (dlsym). */
_Static_assert(sizeof(void *) == sizeof(const char *(*)(void)), "function and object pointers differ");

/* The SIMD level the loaded op reports (informational), or why it has none. */
static inline void print_simd_level(const char *op_name, const char *symbol) {
  dsrs_op *op = NULL;
  void *p = NULL;
  if (dsrs_op_load(op_name, NULL, &op) != DSRS_STATUS_OK) {
    printf("  %s: cannot be loaded: %s\n", op_name, last_error());
    return;
  }
  if (dsrs_op_symbol(op, symbol, &p) == DSRS_STATUS_OK && p != NULL) {
    const char *(*fn)(void);
    memcpy(&fn, &p, sizeof fn);
    printf("  %s kernel: SIMD level %s\n", op_name, fn());
  }
  CHECK_OK(dsrs_op_free(op));
}

/* a * a - b: 0 for the probe's inputs unless the compiler contracted it into an FMA (the
 * including file must be built with -ffp-contract=off). */
static inline float contract_probe(volatile float *a, volatile float *b) {
  float x = *a, y = *b;
  return x * x - y;
}

/* The float operations of this translation unit are the written ones, and the converters
 * give exactly known values (fatal otherwise). */
static inline void require_exact_float_ops(void) {
  volatile float pa = 1.0f + 0x1p-12f, pb = 1.0f + 0x1p-11f;
  REQUIRE(contract_probe(&pa, &pb) == 0.0f); /* an FMA would give 2^-24 */
  REQUIRE(rintf(2.5f) == 2.0f && rintf(3.5f) == 4.0f && rintf(-2.5f) == -2.0f);
  REQUIRE(f32_to_bf16(1.0f) == 0x3F80 && f32_to_bf16(u2f(0x3F808000u)) == 0x3F80 &&
          f32_to_bf16(u2f(0x3F818000u)) == 0x3F82 && f32_to_bf16(u2f(0x3F808001u)) == 0x3F81 &&
          f32_to_bf16(u2f(0x7FC00000u)) == 0x7FC0 && bf16_to_f32(0xC0A0) == -5.0f);
  REQUIRE(f32_to_f16(1.0f) == 0x3C00 && f32_to_f16(65504.0f) == 0x7BFF &&
          f32_to_f16(65520.0f) == 0x7C00 && f32_to_f16(0x1p-24f) == 0x0001 &&
          f32_to_f16(0x1p-25f) == 0x0000 && f32_to_f16(0x1.8p-25f) == 0x0001 &&
          f32_to_f16(1.0f + 0x1p-11f) == 0x3C00 && f32_to_f16(1.0f + 0x3p-11f) == 0x3C02 &&
          f32_to_f16(-2.5f) == 0xC100 && f32_to_f16(u2f(0x7FC00000u)) == 0x7E00);
  for (uint32_t h = 0; h < 0x7C00u; h++) REQUIRE(f32_to_f16(f16_to_f32((uint16_t)h)) == h);
}

/* A private op cache: <new temporary directory>/cache. */
typedef struct {
  char *root, *dir;
} op_cache;

/* main()'s start: unbuffered stdout, the seed (printed), require_exact_float_ops, the ops
 * built into a private cache (DSRS_CACHE_DIR), warnings logged. With DSRS_JIT_SIMD set
 * (the CTest variants) the ops must build at that level: `probe` makes one call that
 * builds them (kernel backend); when it fails, this machine cannot run the level, which
 * is printed as "SKIPPED: ..." and 0 returned (the cache is removed then). */
static inline int host_op_test_begin(const char *test, dsrs_status (*probe)(void),
                                     op_cache *cache) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("%s: seed %" PRIu64 " (DSRS_TEST_SEED reproduces it)\n", test, seed);
  test_rng_seed(seed);
  require_exact_float_ops();

  char prefix[64]; /* dsrs-<test>, with dashes */
  snprintf(prefix, sizeof prefix, "dsrs-%s", test);
  for (char *c = prefix; *c != '\0'; c++) {
    if (*c == '_') *c = '-';
  }
  cache->root = test_tmpdir_new(prefix);
  size_t cl = strlen(cache->root) + 8;
  cache->dir = (char *)xmalloc(cl);
  snprintf(cache->dir, cl, "%s/cache", cache->root);
  REQUIRE(setenv("DSRS_CACHE_DIR", cache->dir, 1) == 0);
  printf("%s: op cache %s\n", test, cache->dir);
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_WARN));

  const char *simd = getenv("DSRS_JIT_SIMD");
  if (simd == NULL || *simd == '\0') return 1;
  dsrs_status st = probe();
  if (st == DSRS_STATUS_OK) return 1;
  printf("SKIPPED: DSRS_JIT_SIMD=%s cannot be used on this machine: %s: %s\n", simd,
         status_name(st), last_error());
  test_tmpdir_remove(cache->root);
  free(cache->dir);
  free(cache->root);
  return 0;
}

/* The cache removed, or kept (and named) after a failed check. */
static inline void host_op_test_end(const char *test, op_cache *cache) {
  if (check_failures_ == 0) {
    test_tmpdir_remove(cache->root);
  } else {
    fprintf(stderr, "%s: keeping %s\n", test, cache->root);
  }
  free(cache->dir);
  free(cache->root);
}

#endif /* DSRS_TESTS_HOST_OP_TEST_H */
