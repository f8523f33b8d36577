/*
 * quantizer_test.c — dsrs_quantize, dsrs_dequantize and dsrs_quantize_sizes on host tensors,
 * through the public header only, against a C reference written here from
 * docs/quantizer.md (not from the library's code).
 *
 *  1. The matrix: lengths 1, 7, 1023, 100003 x group sizes 1, 7, 64, 4096, n x int8/int4 x
 *     symmetric/asymmetric x nearest/stochastic x fp32/fp16 input (random data, magnitudes
 *     2^-20..2^20 varying every few dozen elements, some runs shifted away from zero):
 *       - q, scales and offsets bit for bit equal to the C reference, with the
 *         DSRS_QUANTIZE_BACKEND_KERNEL (num_threads 0..3, input at a byte_offset) and
 *         _REFERENCE backends (and _AUTO for some), which also equal each other; stochastic
 *         rounding with the documented Philox4x32-10 keying (this file's Philox passes
 *         Random123's known-answer vectors);
 *       - dequantized values bit for bit (fp32 out, the input's type, bf16/fp16 out of fp32
 *         inputs), both backends;
 *       - the documented error bounds in double against the exact inputs: nearest
 *         |x - y| <= scale/2 + 2^-20 A, stochastic |x - y| < scale + 2^-20 A (plus half an
 *         ulp of fp16 for fp16 outputs); nearest q is the double-rounded quotient wherever
 *         that quotient is not within 1e-3 of a tie, stochastic q is floor or floor + 1 of
 *         it; the largest error / bound ratio is printed;
 *       - stochastic: the same seed and offset reproduce the bits, another seed or offset
 *         changes q (n >= 1023, groups of more than one) but not the scales.
 *  2. Format details: the documented int4 example; nibble order (low nibble first, across
 *     group boundaries, odd n leaves the last high nibble 0, two's complement nibbles);
 *     all-zero, -0 and constant groups (asymmetric constants dequantize exactly;
 *     symmetric ones c != 0 have scale |c|/qmax and codes +-qmax, so they dequantize to
 *     qmax * f32(|c|/qmax), within 2^-20 |c| but not always c: counted and printed);
 *     NaN / +-Inf groups (scale and offset 0x7fc00000,
 *     q 0, NaN out in every output type, neighbours unaffected); arbitrary stored codes
 *     (int8 -128, nibble 8, scales 0 / NaN / Inf / subnormal) dequantized; huge group sizes
 *     (2^32 + 1, 2^63, UINT64_MAX); stochastic keying by offset (a shifted call reproduces
 *     a suffix; the offset wraps at 2^64) and its mean (unbiased within 6 standard errors);
 *     groups around the kernel's one-pass limit (65535..131071 elements, 1..16 threads);
 *     subnormal inputs and scales, ranges of +-FLT_MAX (float32 x - mn overflows).
 *  3. Shapes and placements: empty tensors, a 2-D input, kDLCUDAHost tensors, a CPU
 *     stream, dsrs_quantize_sizes for assorted n.
 *  4. Every error path: status, dsrs_last_error_status, a message that starts with the
 *     function's name and names the argument, and not one byte written.
 *
 * This file is compiled with -ffp-contract=off: the reference's float operations are the
 * specified ones (checked at run time). The cpu_quantizer op is JIT-built into a private
 * cache (DSRS_CACHE_DIR under a mkdtemp() directory, removed at the end); CTest also runs
 * this program with DSRS_JIT_SIMD=scalar and =avx2 (a level this CPU cannot run prints
 * "SKIPPED:"). Data are random: the seed is printed, DSRS_TEST_SEED=<seed> reproduces a
 * run.
 */
#include <float.h>
#include <math.h>

#include "host_op_test.h"

/* The canonical NaN of the format (docs/quantizer.md). */
static const uint32_t NAN_BITS = 0x7FC00000u;

/* Half an ulp of fp16 at |y| (the rounding of a dequantized value to fp16). */
static double f16_half_ulp(double y) {
  double a = fabs(y);
  if (a < 0x1p-14) return 0x1p-25;
  int e;
  (void)frexp(a, &e); /* a = m * 2^e, 0.5 <= m < 1: the binade [2^(e-1), 2^e) */
  return ldexp(1.0, e - 12);
}

/* ---------------------------------------------------------------------------------- */
/* Philox4x32-10 (Salmon et al., Random123), from docs/quantizer.md and accelerators.md. */

static void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* The words of block `block` under key `seed`: counter [lo, hi, 0, 0], key [lo, hi]. */
static void philox_block(uint64_t seed, uint64_t block, uint32_t out[4]) {
  uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  philox4x32_10(ctr, key, out);
}

static void philox_known_answers(void) {
  /* Random123's kat_vectors, "philox4x32 10". */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627E8D5u, 0xE169C58Du, 0xBC57AC4Cu, 0x9B00DBD8u},
      {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0x408F276Du,
       0x41C83B0Eu, 0xA20BC7C6u, 0x6D5451FDu},
      {0x243F6A88u, 0x85A308D3u, 0x13198A2Eu, 0x03707344u, 0xA4093822u, 0x299F31D0u,
       0xD16CFE09u, 0x94FDCCEBu, 0x5001E420u, 0x24126EA1u},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    philox4x32_10(kat[k], kat[k] + 4, out);
    REQUIRE(memcmp(out, kat[k] + 6, sizeof out) == 0);
  }
}

/* ---------------------------------------------------------------------------------- */
/* The C reference of docs/quantizer.md.                                                */

typedef struct {
  int bits, sym, stoch;
  uint64_t gs, seed, offset;
} qp;

static int qmax_of(const qp *p) {
  return p->sym ? (p->bits == 8 ? 127 : 7) : (p->bits == 8 ? 255 : 15);
}
static int qmin_of(const qp *p) { return p->sym ? -qmax_of(p) : 0; }
static size_t q_bytes_of(int bits, size_t n) { return bits == 8 ? n : n / 2 + n % 2; }
static size_t groups_of(size_t n, uint64_t gs) { return (size_t)(n / gs + (n % gs != 0)); }

/* Group g is elements [s, e). */
static void group_range(size_t n, uint64_t gs, size_t g, size_t *s, size_t *e) {
  *s = (size_t)(g * gs); /* < n for a group that exists: no overflow */
  *e = (gs > (uint64_t)(n - *s)) ? n : *s + (size_t)gs;
}

/* The scale and offset of group [s, e) of x (the widened inputs). */
static void ref_group(const qp *p, const float *x, size_t s, size_t e, float *scale,
                      float *offset) {
  uint32_t amax = 0;
  float mn = INFINITY, mx = -INFINITY;
  for (size_t i = s; i < e; i++) {
    uint32_t a = f2u(x[i]) & 0x7FFFFFFFu;
    if (a > amax) amax = a;
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  if (amax >= 0x7F800000u) {
    *scale = *offset = u2f(NAN_BITS);
    return;
  }
  double qmax = (double)qmax_of(p);
  if (p->sym) {
    *scale = (float)((double)u2f(amax) / qmax);
    *offset = 0.0f;
  } else {
    mn = mn + 0.0f; /* -0 -> +0 */
    mx = mx + 0.0f;
    *scale = (float)(((double)mx - (double)mn) / qmax);
    *offset = mn;
  }
}

/* The quantized value of x in a group (scale, offset); word: its Philox word. */
static int ref_qvalue(const qp *p, float x, float scale, float offset, uint32_t word) {
  if (!(scale > 0.0f)) return 0;
  float t = p->sym ? x : x - offset;
  float v = t / scale;
  float lo = (float)qmin_of(p), hi = (float)qmax_of(p);
  if (!p->stoch) {
    float r = rintf(v); /* ties to even in the default rounding mode */
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    return (int)r;
  }
  double sum = (double)v + (double)(word >> 8) * 0x1p-24;
  double r = floor(sum);
  r = r > (double)lo ? r : (double)lo;
  r = r < (double)hi ? r : (double)hi;
  return (int)r;
}

/* q of n widened inputs x: q (q_bytes_of), scales and offsets (groups_of; offsets may be
 * NULL when symmetric). */
static void ref_quantize(const qp *p, const float *x, size_t n, uint8_t *q, float *scales,
                         float *offsets) {
  size_t groups = groups_of(n, p->gs);
  if (p->bits == 4) memset(q, 0, q_bytes_of(4, n));
  uint64_t cached = 0;
  int have = 0;
  uint32_t words[4] = {0, 0, 0, 0};
  for (size_t g = 0; g < groups; g++) {
    size_t s, e;
    group_range(n, p->gs, g, &s, &e);
    float scale, offset;
    ref_group(p, x, s, e, &scale, &offset);
    scales[g] = scale;
    if (!p->sym) offsets[g] = offset;
    for (size_t i = s; i < e; i++) {
      uint32_t w = 0;
      if (p->stoch) {
        uint64_t block = p->offset + (uint64_t)(i / 4); /* wraps */
        if (!have || cached != block) {
          philox_block(p->seed, block, words);
          cached = block;
          have = 1;
        }
        w = words[i % 4];
      }
      unsigned v = (unsigned)ref_qvalue(p, x[i], scale, offset, w);
      if (p->bits == 8) {
        q[i] = (uint8_t)v;
      } else {
        q[i / 2] = (uint8_t)(q[i / 2] | ((v & 0xFu) << ((i % 2) * 4)));
      }
    }
  }
}

/* The code stored for element i (sign-extended when symmetric). */
static int q_at(int bits, int sym, const uint8_t *q, size_t i) {
  if (bits == 8) return sym ? (int)(int8_t)q[i] : (int)q[i];
  unsigned nib = (unsigned)(q[i / 2] >> ((i % 2) * 4)) & 0xFu;
  return sym ? (int)(nib ^ 8u) - 8 : (int)nib;
}

static float ref_dqvalue(int sym, int q, float scale, float offset) {
  float y = (float)q * scale;
  if (!sym) y = y + offset;
  if (y != y) y = u2f(NAN_BITS);
  return y;
}

/* Dequantizes into `out` of type t. */
static void ref_dequantize(const qp *p, const uint8_t *q, const float *scales,
                           const float *offsets, size_t n, void *out, etype t) {
  for (size_t i = 0; i < n; i++) {
    size_t g = (size_t)(i / p->gs);
    float y = ref_dqvalue(p->sym, q_at(p->bits, p->sym, q, i), scales[g],
                          p->sym ? 0.0f : offsets[g]);
    estore(out, t, i, y);
  }
}

/* ---------------------------------------------------------------------------------- */
/* Calls and comparisons.                                                                */

static int g_calls;   /* successful library calls */
static int g_cases;   /* configurations of the matrix */
static long g_values; /* elements compared bit for bit */

#define CALL_OK(call)                                                                      \
  do {                                                                                     \
    REQUIRE_OK(call);                                                                      \
    g_calls++;                                                                             \
  } while (0)

static dsrs_quantize_config make_config(const qp *p, int backend, int threads) {
  dsrs_quantize_config c;
  memset(&c, 0, sizeof c);
  c.bits = p->bits;
  c.symmetric = p->sym;
  c.group_size = p->gs;
  c.rounding = p->stoch ? DSRS_ROUNDING_STOCHASTIC : DSRS_ROUNDING_NEAREST;
  c.seed = p->seed;
  c.offset = p->offset;
  c.num_threads = threads;
  c.backend = backend;
  return c;
}

/* Whether `len` bytes at a and b agree; prints the first difference (as `elem`-byte
 * elements) and counts a failure. */
static int same_bytes(const void *a, const void *b, size_t len, size_t elem, const char *what) {
  if (len == 0 || memcmp(a, b, len) == 0) return 1;
  for (size_t i = 0; i < len; i += elem) {
    if (memcmp((const char *)a + i, (const char *)b + i, elem) != 0) {
      uint64_t x = 0, y = 0;
      memcpy(&x, (const char *)a + i, elem);
      memcpy(&y, (const char *)b + i, elem);
      fprintf(stderr, "  %s: element %zu differs: %#" PRIx64 " vs %#" PRIx64 "\n", what,
              i / elem, x, y);
      break;
    }
  }
  check_failures_++;
  return 0;
}

/* Quantized output arrays. `pad` elements precede each array in its allocation (the
 * tensors address them through byte_offset); every byte starts as 0xA5 so an unwritten
 * byte shows. */
typedef struct {
  size_t n, qb, groups, pad;
  uint8_t *qa;
  float *sa, *oa;
  uint8_t *q;
  float *s, *o;
  tens tq, ts, to;
} qout;

static void qout_init(qout *r, size_t n, size_t qb, size_t groups, int sym, size_t pad) {
  memset(r, 0, sizeof *r);
  r->n = n;
  r->qb = qb;
  r->groups = groups;
  r->pad = pad;
  r->qa = (uint8_t *)xmalloc(qb + pad);
  r->sa = (float *)xmalloc((groups + pad) * 4);
  r->oa = (float *)xmalloc((groups + pad) * 4);
  memset(r->qa, 0xA5, qb + pad);
  memset(r->sa, 0xA5, (groups + pad) * 4);
  memset(r->oa, 0xA5, (groups + pad) * 4);
  r->q = r->qa + pad;
  r->s = r->sa + pad;
  r->o = r->oa + pad;
  /* q as uint8 for asymmetric int8 (0..255), int8 otherwise: both are accepted. */
  tens_set(&r->tq, r->qa, dl(sym ? kDLInt : kDLUInt, 8), qb);
  tens_set(&r->ts, r->sa, edl(T_F32), groups);
  tens_set(&r->to, r->oa, edl(T_F32), groups);
  r->tq.t.byte_offset = pad;
  r->ts.t.byte_offset = pad * 4;
  r->to.t.byte_offset = pad * 4;
}

static void qout_free(qout *r) {
  free(r->qa);
  free(r->sa);
  free(r->oa);
  memset(r, 0, sizeof *r);
}

static dsrs_status lib_quantize(const dsrs_quantize_config *c, const DLTensor *input, qout *r) {
  return dsrs_quantize(c, input, &r->tq.t, &r->ts.t, c->symmetric ? NULL : &r->to.t, NULL);
}

/* Whether r holds the reference's bits. */
static int qout_equal(const qout *r, const uint8_t *q, const float *s, const float *o, int sym,
                      const char *what) {
  char w[256];
  int ok = 1;
  snprintf(w, sizeof w, "%s: q", what);
  ok &= same_bytes(r->q, q, r->qb, 1, w);
  snprintf(w, sizeof w, "%s: scales", what);
  ok &= same_bytes(r->s, s, r->groups * 4, 4, w);
  if (!sym) {
    snprintf(w, sizeof w, "%s: offsets", what);
    ok &= same_bytes(r->o, o, r->groups * 4, 4, w);
  }
  g_values += (long)(r->n + r->groups * (sym ? 1 : 2));
  return ok;
}

static dsrs_status lib_dequantize(const dsrs_quantize_config *c, const qout *r, void *out,
                                  etype t) {
  tens ty;
  tens_set(&ty, out, edl(t), r->n);
  return dsrs_dequantize(c, &r->tq.t, &r->ts.t, c->symmetric ? NULL : &r->to.t, &ty.t, NULL);
}

/* ---------------------------------------------------------------------------------- */
/* 1. The matrix.                                                                        */

static const size_t LENGTHS[] = {1, 7, 1023, 100003};
#define NLENGTHS (sizeof LENGTHS / sizeof LENGTHS[0])

/* Worst |x - y| / bound per mode (nearest, stochastic) and output type (fp32, fp16), and
 * the worst use of the slack: (|x - y| - scale/2 or scale) / (2^-20 A), fp32 out. */
static double worst_ratio[2][2];
static double worst_slack[2] = {-INFINITY, -INFINITY};

/* Random data: runs of 1..97 elements share a magnitude 2^e (e in [emin, emax]); a quarter
 * of the runs are shifted away from zero (one-signed data); some exact zeros and repeats.
 * Never all zero. */
static void gen_values(float *x, size_t n, int emin, int emax) {
  size_t i = 0;
  while (i < n) {
    size_t run = 1 + (size_t)(test_rng_next() % 97);
    int e = emin + (int)(test_rng_next() % (uint64_t)(emax - emin + 1));
    double mag = ldexp(1.0, e);
    double shift = (test_rng_next() % 4 == 0) ? 1.5 * mag * rnd() : 0.0;
    for (size_t k = 0; k < run && i < n; k++, i++) {
      uint64_t r = test_rng_next() % 64;
      if (r == 0) {
        x[i] = 0.0f;
      } else if (r == 1 && i > 0) {
        x[i] = x[i - 1];
      } else {
        x[i] = (float)(shift + mag * rnd());
      }
    }
  }
  if (n > 0 && x[0] == 0.0f) x[0] = 1.0f;
}

/* The error bound checks of docs/quantizer.md for one quantization (q, scales, offsets)
 * of the widened inputs x, with y32 its fp32 dequantization and y16 (or NULL) its fp16
 * one. */
static void check_bounds(const qp *p, const float *x, size_t n, const uint8_t *q,
                         const float *scales, const float *offsets, const float *y32,
                         const uint16_t *y16, const char *what) {
  size_t groups = groups_of(n, p->gs);
  int bad = 0;
  for (size_t g = 0; g < groups; g++) {
    size_t s, e;
    group_range(n, p->gs, g, &s, &e);
    float scale = scales[g], mn = p->sym ? 0.0f : offsets[g];
    double A = 0.0, range = 0.0;
    double gmin = INFINITY, gmax = -INFINITY;
    for (size_t i = s; i < e; i++) {
      double a = fabs((double)x[i]);
      if (a > A) A = a;
      if (x[i] < gmin) gmin = x[i];
      if (x[i] > gmax) gmax = x[i];
    }
    range = gmax - gmin;
    if (!isfinite(A)) continue; /* section 2 checks non-finite groups */
    /* The bounds hold for a normal scale: A >= qmax * 2^-126 (asymmetric: the range). */
    double need = (double)qmax_of(p) * 0x1p-126;
    if (p->sym ? A < need : range < need) continue;
    if (!(scale >= FLT_MIN)) continue; /* (a range rounded below the limit) */
    double slack = 0x1p-20 * A;
    double bound = p->stoch ? (double)scale + slack : (double)scale / 2 + slack;
    for (size_t i = s; i < e; i++) {
      double xi = x[i];
      double err = fabs(xi - (double)y32[i]);
      double ratio = err / bound;
      if (ratio > worst_ratio[p->stoch][0]) worst_ratio[p->stoch][0] = ratio;
      double used = (err - (p->stoch ? (double)scale : (double)scale / 2)) / slack;
      if (used > worst_slack[p->stoch]) worst_slack[p->stoch] = used;
      int ok = p->stoch ? err < bound : err <= bound;
      if (y16 != NULL) {
        double y = (double)f16_to_f32(y16[i]);
        double b16 = bound + f16_half_ulp((double)y32[i]);
        double e16 = fabs(xi - y);
        if (e16 / b16 > worst_ratio[p->stoch][1]) worst_ratio[p->stoch][1] = e16 / b16;
        ok &= p->stoch ? e16 < b16 : e16 <= b16;
      }
      /* The code against the quotient computed in double. */
      double vd = ((p->sym ? xi : xi - (double)mn)) / (double)scale;
      int code = q_at(p->bits, p->sym, q, i);
      double lo = qmin_of(p), hi = qmax_of(p);
      if (!p->stoch) {
        double f = vd - floor(vd);
        if (fabs(f - 0.5) > 1e-3) {
          double want = fmin(fmax(nearbyint(vd), lo), hi);
          ok &= (double)code == want;
        }
      } else {
        double f = vd - floor(vd);
        if (f > 1e-3 && f < 1 - 1e-3) {
          double a = fmin(fmax(floor(vd), lo), hi), b = fmin(fmax(floor(vd) + 1, lo), hi);
          ok &= (double)code == a || (double)code == b;
        } else {
          ok &= fabs((double)code - fmin(fmax(vd, lo), hi)) < 1 + 1e-3;
        }
      }
      if (!ok && bad++ < 3) {
        fprintf(stderr,
                "  %s: element %zu (group %zu): x %.9g q %d y %.9g y16 %.9g scale %.9g offset "
                "%.9g: error %.3g, bound %.3g, quotient %.9g\n",
                what, i, g, xi, code, (double)y32[i],
                y16 ? (double)f16_to_f32(y16[i]) : 0.0, (double)scale, (double)mn, err, bound,
                vd);
        check_failures_++;
      }
    }
  }
}

/* One configuration of the matrix: x (n elements of type t) and xw (widened). */
static void run_case(const qp *p0, etype t, const void *x, const float *xw, size_t n,
                     int variant) {
  qp p = *p0;
  char what[200];
  snprintf(what, sizeof what, "n=%zu gs=%" PRIu64 " int%d %s %s %s", n, p.gs, p.bits,
           p.sym ? "sym" : "asym", p.stoch ? "stochastic" : "nearest", etype_name(t));
  g_cases++;

  /* dsrs_quantize_sizes */
  dsrs_quantize_config cfg = make_config(&p, DSRS_QUANTIZE_BACKEND_KERNEL, variant % 4);
  uint64_t qb64 = 0, g64 = 0;
  CALL_OK(dsrs_quantize_sizes((uint64_t)n, &cfg, &qb64, &g64));
  size_t qb = q_bytes_of(p.bits, n), groups = groups_of(n, p.gs);
  if (qb64 != qb || g64 != groups) {
    fprintf(stderr, "  %s: dsrs_quantize_sizes gave %" PRIu64 " bytes, %" PRIu64
                    " groups; expected %zu, %zu\n", what, qb64, g64, qb, groups);
    check_failures_++;
  }

  /* The C reference. */
  uint8_t *rq = (uint8_t *)xmalloc(qb);
  float *rs = (float *)xmalloc(groups * 4), *ro = (float *)xmalloc(groups * 4);
  ref_quantize(&p, xw, n, rq, rs, ro);

  /* The input at a byte offset of one element (kernel calls), and plain (reference). */
  void *xa = xmalloc((n + 1) * esize(t));
  memcpy((char *)xa + esize(t), x, n * esize(t));
  tens tx, tx_plain;
  tens_set(&tx, xa, edl(t), n);
  tx.t.byte_offset = esize(t);
  tens_set(&tx_plain, (void *)(uintptr_t)x, edl(t), n);

  qout k, r;
  qout_init(&k, n, qb, groups, p.sym, 1 + (size_t)(variant % 3));
  qout_init(&r, n, qb, groups, p.sym, 0);
  char w[256];

  CALL_OK(lib_quantize(&cfg, &tx.t, &k));
  snprintf(w, sizeof w, "%s: KERNEL (%d threads) vs C reference", what, cfg.num_threads);
  qout_equal(&k, rq, rs, ro, p.sym, w);

  dsrs_quantize_config rcfg = make_config(&p, DSRS_QUANTIZE_BACKEND_REFERENCE, 0);
  CALL_OK(lib_quantize(&rcfg, &tx_plain.t, &r));
  snprintf(w, sizeof w, "%s: REFERENCE backend vs C reference", what);
  qout_equal(&r, rq, rs, ro, p.sym, w);
  snprintf(w, sizeof w, "%s: KERNEL vs REFERENCE backend", what);
  same_bytes(k.q, r.q, qb, 1, w);
  same_bytes(k.s, r.s, groups * 4, 4, w);
  if (!p.sym) same_bytes(k.o, r.o, groups * 4, 4, w);

  if (variant % 5 == 0) {
    qout a;
    qout_init(&a, n, qb, groups, p.sym, 0);
    dsrs_quantize_config acfg = make_config(&p, DSRS_QUANTIZE_BACKEND_AUTO, 0);
    CALL_OK(lib_quantize(&acfg, &tx_plain.t, &a));
    snprintf(w, sizeof w, "%s: AUTO backend vs C reference", what);
    qout_equal(&a, rq, rs, ro, p.sym, w);
    qout_free(&a);
  }

  /* Dequantize: fp32 out with both backends, and the input's type. */
  float *ry = (float *)xmalloc(n * 4), *ky = (float *)xmalloc(n * 4);
  float *kry = (float *)xmalloc(n * 4);
  ref_dequantize(&p, rq, rs, ro, n, ry, T_F32);
  memset(ky, 0xA5, n * 4);
  memset(kry, 0xA5, n * 4);
  CALL_OK(lib_dequantize(&cfg, &k, ky, T_F32));
  CALL_OK(lib_dequantize(&rcfg, &r, kry, T_F32));
  snprintf(w, sizeof w, "%s: dequantize fp32 (KERNEL) vs C reference", what);
  same_bytes(ky, ry, n * 4, 4, w);
  snprintf(w, sizeof w, "%s: dequantize fp32 (REFERENCE) vs C reference", what);
  same_bytes(kry, ry, n * 4, 4, w);
  g_values += 2 * (long)n;
  uint16_t *r16 = NULL;
  for (int ot = T_F16; ot <= T_BF16; ot++) {
    /* fp16 inputs: fp16 out; fp32 inputs: fp16 and bf16 out every other case. */
    if (!((t == T_F16 && ot == T_F16) || (t == T_F32 && variant % 2 == 0))) continue;
    uint16_t *want = (uint16_t *)xmalloc(n * 2), *got = (uint16_t *)xmalloc(n * 2);
    ref_dequantize(&p, rq, rs, ro, n, want, (etype)ot);
    memset(got, 0xA5, n * 2);
    CALL_OK(lib_dequantize(&cfg, &k, got, (etype)ot));
    snprintf(w, sizeof w, "%s: dequantize %s (KERNEL) vs C reference", what, etype_name(ot));
    same_bytes(got, want, n * 2, 2, w);
    memset(got, 0xA5, n * 2);
    CALL_OK(lib_dequantize(&rcfg, &r, got, (etype)ot));
    snprintf(w, sizeof w, "%s: dequantize %s (REFERENCE) vs C reference", what, etype_name(ot));
    same_bytes(got, want, n * 2, 2, w);
    g_values += 2 * (long)n;
    if (ot == T_F16 && t == T_F16) {
      r16 = want;
      want = NULL;
    }
    free(want);
    free(got);
  }

  /* The documented bounds in double against the exact inputs. */
  check_bounds(&p, xw, n, rq, rs, ro, ry, r16, what);
  free(r16);

  if (p.stoch) {
    /* Reproducible; another seed or offset changes q but not the scales. */
    qout again;
    qout_init(&again, n, qb, groups, p.sym, 0);
    CALL_OK(lib_quantize(&cfg, &tx_plain.t, &again));
    snprintf(w, sizeof w, "%s: the same seed and offset again", what);
    qout_equal(&again, k.q, k.s, k.o, p.sym, w);
    for (int which = 0; which < 2; which++) {
      dsrs_quantize_config other = cfg;
      if (which == 0) {
        other.seed ^= 0x100000001ull;
      } else {
        other.offset += 1;
      }
      memset(again.qa, 0xA5, qb);
      CALL_OK(lib_quantize(&other, &tx_plain.t, &again));
      snprintf(w, sizeof w, "%s: scales with another %s", what, which ? "offset" : "seed");
      same_bytes(again.s, k.s, groups * 4, 4, w);
      /* (Groups of 1 have v = +-qmax or scale 0: the noise cannot change them.) */
      if (n >= 1023 && p.gs > 1 && memcmp(again.q, k.q, qb) == 0) {
        fprintf(stderr, "  %s: another %s gave the same q\n", what, which ? "offset" : "seed");
        check_failures_++;
      }
    }
    qout_free(&again);
  }

  qout_free(&k);
  qout_free(&r);
  free(rq);
  free(rs);
  free(ro);
  free(xa);
  free(ry);
  free(ky);
  free(kry);
}

static void section_matrix(void) {
  printf("-- 1. the matrix: C reference (bit-exact), KERNEL / REFERENCE / AUTO, bounds\n");
  int variant = 0;
  for (size_t li = 0; li < NLENGTHS; li++) {
    size_t n = LENGTHS[li];
    float *base = (float *)xmalloc(n * 4), *w16 = (float *)xmalloc(n * 4);
    uint16_t *h = (uint16_t *)xmalloc(n * 2);
    gen_values(base, n, -20, 20);
    /* fp16: its own values in fp16's range (2^-12..2^10, some subnormal). */
    float *b16 = (float *)xmalloc(n * 4);
    gen_values(b16, n, -12, 10);
    for (size_t i = 0; i < n; i++) {
      h[i] = f32_to_f16(b16[i]);
      w16[i] = f16_to_f32(h[i]);
    }
    if (n > 0 && w16[0] == 0.0f) {
      h[0] = 0x3C00;
      w16[0] = 1.0f;
    }
    uint64_t gss[5] = {1, 7, 64, 4096, (uint64_t)n};
    for (int gi = 0; gi < 5; gi++) {
      for (int bits = 8; bits >= 4; bits -= 4) {
        for (int sym = 1; sym >= 0; sym--) {
          for (int stoch = 0; stoch < 2; stoch++) {
            for (int t = T_F32; t <= T_F16; t++) {
              qp p;
              p.bits = bits;
              p.sym = sym;
              p.stoch = stoch;
              p.gs = gss[gi];
              p.seed = test_rng_next();
              /* Offsets anywhere, some about to wrap around 2^64. */
              p.offset = (variant % 7 == 0) ? UINT64_MAX - (uint64_t)(test_rng_next() % 8)
                                            : test_rng_next();
              if (t == T_F32) {
                run_case(&p, T_F32, base, base, n, variant);
              } else {
                run_case(&p, T_F16, h, w16, n, variant);
              }
              variant++;
            }
          }
        }
      }
    }
    printf("  n=%-6zu group sizes 1, 7, 64, 4096, n: %d cases so far, bit-exact\n", n, g_cases);
    free(base);
    free(w16);
    free(b16);
    free(h);
  }
  printf("  largest |x - y| / bound: nearest %.7f (fp32 out), %.7f (fp16 out); stochastic "
         "%.7f (fp32 out), %.7f (fp16 out)\n",
         worst_ratio[0][0], worst_ratio[0][1], worst_ratio[1][0], worst_ratio[1][1]);
  printf("  largest use of the slack 2^-20 A beyond scale/2 (nearest) or scale (stochastic), "
         "fp32 out: %.4f, %.4f\n", worst_slack[0], worst_slack[1]);
}

/* ---------------------------------------------------------------------------------- */
/* 2. Format details.                                                                    */

/* Quantizes float32 x with both backends, checks them against the C reference and each
 * other, and returns the KERNEL result in `out` (initialized here; qout_free it). */
static void quantize_threads(const qp *p, const float *x, size_t n, qout *out, int threads,
                             const char *what) {
  size_t qb = q_bytes_of(p->bits, n), groups = groups_of(n, p->gs);
  tens tx;
  tens_set(&tx, (void *)(uintptr_t)x, edl(T_F32), n);
  uint8_t *rq = (uint8_t *)xmalloc(qb);
  float *rs = (float *)xmalloc(groups * 4), *ro = (float *)xmalloc(groups * 4);
  ref_quantize(p, x, n, rq, rs, ro);
  qout r;
  qout_init(out, n, qb, groups, p->sym, 0);
  qout_init(&r, n, qb, groups, p->sym, 0);
  dsrs_quantize_config kc = make_config(p, DSRS_QUANTIZE_BACKEND_KERNEL, threads);
  dsrs_quantize_config rc = make_config(p, DSRS_QUANTIZE_BACKEND_REFERENCE, 0);
  CALL_OK(lib_quantize(&kc, &tx.t, out));
  CALL_OK(lib_quantize(&rc, &tx.t, &r));
  char w[256];
  snprintf(w, sizeof w, "%s: KERNEL vs C reference", what);
  qout_equal(out, rq, rs, ro, p->sym, w);
  snprintf(w, sizeof w, "%s: REFERENCE vs C reference", what);
  qout_equal(&r, rq, rs, ro, p->sym, w);
  qout_free(&r);
  free(rq);
  free(rs);
  free(ro);
}

static void quantize_both(const qp *p, const float *x, size_t n, qout *out, const char *what) {
  quantize_threads(p, x, n, out, 0, what);
}

/* Dequantizes `k` into type t with both backends; both must equal the C reference; the
 * result goes to `out` (n elements of t). */
static void dequantize_both(const qp *p, const qout *k, void *out, etype t, const char *what) {
  size_t n = k->n;
  void *want = xmalloc(n * esize(t)), *other = xmalloc(n * esize(t));
  ref_dequantize(p, k->q, k->s, k->o, n, want, t);
  dsrs_quantize_config kc = make_config(p, DSRS_QUANTIZE_BACKEND_KERNEL, 0);
  dsrs_quantize_config rc = make_config(p, DSRS_QUANTIZE_BACKEND_REFERENCE, 0);
  memset(out, 0xA5, n * esize(t));
  memset(other, 0xA5, n * esize(t));
  CALL_OK(lib_dequantize(&kc, k, out, t));
  CALL_OK(lib_dequantize(&rc, k, other, t));
  char w[256];
  snprintf(w, sizeof w, "%s: dequantize %s (KERNEL) vs C reference", what, etype_name(t));
  same_bytes(out, want, n * esize(t), esize(t), w);
  snprintf(w, sizeof w, "%s: dequantize %s (REFERENCE) vs C reference", what, etype_name(t));
  same_bytes(other, want, n * esize(t), esize(t), w);
  free(want);
  free(other);
}

static qp mode(int bits, int sym, int stoch, uint64_t gs) {
  qp p;
  p.bits = bits;
  p.sym = sym;
  p.stoch = stoch;
  p.gs = gs;
  p.seed = test_rng_next();
  p.offset = test_rng_next();
  return p;
}

static void section_documented_example_and_nibbles(void) {
  printf("-- 2a. the documented int4 example and nibble order\n");
  {
    /* docs/quantizer.md, "Format": symmetric int4, group size 3. */
    const float x[7] = {0.35f, -1.4f, 0.7f, 2.0f, -0.5f, 1.0f, 3.0f};
    qp p = mode(4, 1, 0, 3);
    qout k;
    quantize_both(&p, x, 7, &k, "documented example");
    const uint8_t want_q[4] = {0x92, 0x74, 0x3E, 0x07};
    const float want_s[3] = {0.2f, 0.2857143f, 0.42857143f};
    same_bytes(k.q, want_q, 4, 1, "documented example: bytes");
    same_bytes(k.s, want_s, 12, 4, "documented example: scales");
    const int want_codes[7] = {2, -7, 4, 7, -2, 3, 7};
    for (size_t i = 0; i < 7; i++) CHECK(q_at(4, 1, k.q, i) == want_codes[i]);
    qout_free(&k);
    printf("  symmetric int4 [0.35, -1.4, 0.7 | 2, -0.5, 1 | 3] -> 92 74 3E 07, scales 0.2, "
           "0.2857143, 0.42857143 (the tie 3.5 to 4)\n");
  }
  {
    /* Asymmetric int4, one group 0..15 (scale 1, offset 0): q_i = i, element 2i low. */
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (float)i;
    qp p = mode(4, 0, 0, 16);
    qout k;
    quantize_both(&p, x, 16, &k, "asymmetric int4 0..15");
    const uint8_t want[8] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE};
    same_bytes(k.q, want, 8, 1, "asymmetric int4 0..15: bytes");
    CHECK(k.s[0] == 1.0f && k.o[0] == 0.0f);
    qout_free(&k);
    /* Odd n: [15, 0, 1, ..., 13] -> the last byte's high nibble stays 0. */
    float y[15];
    y[0] = 15.0f;
    for (int i = 1; i < 15; i++) y[i] = (float)(i - 1);
    p = mode(4, 0, 1, 15); /* stochastic: every v is an integer, u < 1 cannot move it */
    quantize_both(&p, y, 15, &k, "asymmetric int4 odd n");
    const uint8_t want_odd[8] = {0x0F, 0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB, 0x0D};
    same_bytes(k.q, want_odd, 8, 1, "asymmetric int4 odd n: bytes");
    qout_free(&k);
  }
  {
    /* Symmetric int4: two's complement nibbles. */
    const float x[4] = {-7.0f, 7.0f, -1.0f, 1.0f};
    qp p = mode(4, 1, 0, 4);
    qout k;
    quantize_both(&p, x, 4, &k, "symmetric int4 +-7, +-1");
    const uint8_t want[2] = {0x79, 0x1F};
    same_bytes(k.q, want, 2, 1, "symmetric int4 +-7, +-1: bytes");
    qout_free(&k);
    /* Group size 1 (every element its own group and scale): bytes span groups. */
    const float z[3] = {2.0f, -3.0f, 5.0f};
    p = mode(4, 1, 0, 1);
    quantize_both(&p, z, 3, &k, "symmetric int4 group size 1");
    const uint8_t want_z[2] = {0x97, 0x07};
    same_bytes(k.q, want_z, 2, 1, "symmetric int4 group size 1: bytes");
    qout_free(&k);
    /* Group size 7 (odd): byte 3 holds element 6 (group 0) and 7 (group 1). */
    float u[14];
    for (int i = 0; i < 7; i++) {
      u[i] = (float)(i - 3);      /* -3..3, scale 3/7: codes -7, ..., 7 */
      u[7 + i] = (float)(3 - i);  /* 3..-3 */
    }
    p = mode(4, 1, 0, 7);
    quantize_both(&p, u, 14, &k, "symmetric int4 group size 7");
    /* Element 6 (group 0) is 3 -> 7 and element 7 (group 1) is 3 -> 7: byte 3 = 0x77. */
    CHECK(k.q[3] == 0x77);
    CHECK(q_at(4, 1, k.q, 0) == -7 && q_at(4, 1, k.q, 13) == -7);
    qout_free(&k);
  }
  {
    /* Symmetric int8: two's complement bytes; asymmetric int8: unsigned. */
    const float x[4] = {-127.0f, 127.0f, -1.0f, 0.0f};
    qp p = mode(8, 1, 0, 4);
    qout k;
    quantize_both(&p, x, 4, &k, "symmetric int8");
    const uint8_t want[4] = {0x81, 0x7F, 0xFF, 0x00};
    same_bytes(k.q, want, 4, 1, "symmetric int8: bytes");
    qout_free(&k);
    const float y[3] = {-10.0f, 245.0f, 0.0f};
    p = mode(8, 0, 0, 3);
    quantize_both(&p, y, 3, &k, "asymmetric int8");
    const uint8_t want_a[3] = {0x00, 0xFF, 0x0A};
    same_bytes(k.q, want_a, 3, 1, "asymmetric int8: bytes");
    CHECK(k.s[0] == 1.0f && k.o[0] == -10.0f);
    qout_free(&k);
  }
  printf("  low nibble first across group boundaries, odd n, two's complement: as documented\n");
}

static void section_special_groups(void) {
  printf("-- 2b. zero, -0 and constant groups; NaN and Inf groups\n");
  int inexact_sym_constant = 0, sym_constant = 0;
  float inexact_example = 0.0f;
  int inexact_bits = 0;
  for (int bits = 8; bits >= 4; bits -= 4) {
    for (int sym = 1; sym >= 0; sym--) {
      for (int stoch = 0; stoch < 2; stoch++) {
        for (int trial = 0; trial < 40; trial++) {
          /* Groups of 5: +0 x5 | c1 x5 | -0 x5 | +0/-0 | c2 x3 (partial). */
          float x[23];
          float c1 = (float)(ldexp(rnd(), (int)(test_rng_next() % 40) - 20));
          float c2 = -fabsf((float)(100.0 * rnd())) - 1e-3f;
          if (c1 == 0.0f) c1 = 0.75f;
          for (int i = 0; i < 5; i++) {
            x[i] = 0.0f;
            x[5 + i] = c1;
            x[10 + i] = -0.0f;
            x[15 + i] = (i & 1) ? -0.0f : 0.0f;
          }
          x[20] = x[21] = x[22] = c2;
          qp p = mode(bits, sym, stoch, 5);
          char what[96];
          snprintf(what, sizeof what, "special groups int%d %s %s", bits, sym ? "sym" : "asym",
                   stoch ? "stochastic" : "nearest");
          qout k;
          quantize_both(&p, x, 23, &k, what);
          /* Zero groups (0, 2, 3): scale +0, (offset +0), q 0. */
          static const int zero_groups[3] = {0, 2, 3};
          for (int j = 0; j < 3; j++) {
            int g = zero_groups[j];
            CHECK(f2u(k.s[g]) == 0u);
            if (!sym) CHECK(f2u(k.o[g]) == 0u); /* -0 + 0 = +0 */
            for (int i = 5 * g; i < 5 * g + 5; i++) CHECK(q_at(bits, sym, k.q, (size_t)i) == 0);
          }
          if (!sym) {
            /* Constant groups: scale 0, offset c, q 0. */
            CHECK(k.s[1] == 0.0f && k.o[1] == c1 && k.s[4] == 0.0f && k.o[4] == c2);
            for (int i = 5; i < 10; i++) CHECK(q_at(bits, sym, k.q, (size_t)i) == 0);
          } else {
            /* Symmetric: A = |c| > 0, so the scale is |c| / qmax and q = +-qmax. */
            int qm = bits == 8 ? 127 : 7;
            CHECK(k.s[1] == (float)((double)fabsf(c1) / qm));
            for (int i = 5; i < 10; i++) {
              CHECK(q_at(bits, 1, k.q, (size_t)i) == (c1 > 0 ? qm : -qm));
            }
          }
          float y[23];
          dequantize_both(&p, &k, y, T_F32, what);
          for (int i = 0; i < 5; i++) {
            CHECK(y[i] == 0.0f && y[10 + i] == 0.0f && y[15 + i] == 0.0f);
          }
          static const int constant_elements[8] = {5, 6, 7, 8, 9, 20, 21, 22};
          for (int j = 0; j < 8; j++) {
            int i = constant_elements[j];
            float c = i < 10 ? c1 : c2;
            if (!sym) {
              CHECK(f2u(y[i]) == f2u(c)); /* 0 * 0 + c = c exactly */
            } else {
              /* qmax * f32(|c| / qmax): within the documented slack, not always c. */
              sym_constant++;
              CHECK(fabs((double)y[i] - (double)c) <= 0x1p-20 * fabs((double)c));
              if (y[i] != c) {
                inexact_sym_constant++;
                if (inexact_example == 0.0f) {
                  inexact_example = c;
                  inexact_bits = bits;
                }
              }
            }
          }
          qout_free(&k);
        }
      }
    }
  }
  printf("  all-zero and -0 groups: scale +0 (offset +0), q 0, dequantized exactly 0; "
         "asymmetric constant groups: scale 0, offset c, dequantized exactly c\n");
  printf("  symmetric constant groups (A = |c| > 0, scale |c|/qmax, q = +-qmax): %d of %d "
         "values not dequantized exactly (all within 2^-20 |c|)",
         inexact_sym_constant, sym_constant);
  if (inexact_example != 0.0f) {
    printf(", e.g. int%d c = %a", inexact_bits, (double)inexact_example);
  }
  printf("\n");

  /* NaN and Inf groups. */
  const uint32_t specials[4] = {0x7FC00000u, 0x7F800000u, 0xFF800000u, 0xFFC12345u};
  for (int bits = 8; bits >= 4; bits -= 4) {
    for (int sym = 1; sym >= 0; sym--) {
      for (int stoch = 0; stoch < 2; stoch++) {
        for (uint64_t gs = 7; gs <= 8; gs++) {
          size_t n = 45;
          float x[45], clean[45];
          for (size_t i = 0; i < n; i++) x[i] = clean[i] = (float)(10.0 * rnd());
          /* Group 1 (first element): NaN; group 3 (middle): +Inf; group 4 (last): -Inf;
           * group 5: a negative NaN with payload next to an Inf. */
          x[gs] = u2f(specials[0]);
          x[3 * gs + 3] = u2f(specials[1]);
          x[5 * gs - 1] = u2f(specials[2]);
          x[5 * gs + 1] = u2f(specials[3]);
          x[5 * gs + 2] = u2f(specials[1]);
          const int bad_group[6] = {0, 1, 0, 1, 1, 1};
          qp p = mode(bits, sym, stoch, gs);
          char what[96];
          snprintf(what, sizeof what, "non-finite groups int%d %s %s gs=%" PRIu64, bits,
                   sym ? "sym" : "asym", stoch ? "stochastic" : "nearest", gs);
          qout k, c;
          quantize_both(&p, x, n, &k, what);
          quantize_both(&p, clean, n, &c, what);
          size_t groups = groups_of(n, gs);
          for (size_t g = 0; g < groups; g++) {
            int bad = g < 6 && bad_group[g];
            if (bad) {
              CHECK(f2u(k.s[g]) == NAN_BITS);
              if (!sym) CHECK(f2u(k.o[g]) == NAN_BITS);
            } else {
              /* Neighbours are unaffected: as without the non-finite values. */
              CHECK(f2u(k.s[g]) == f2u(c.s[g]));
              if (!sym) CHECK(f2u(k.o[g]) == f2u(c.o[g]));
            }
            size_t s, e;
            group_range(n, gs, g, &s, &e);
            for (size_t i = s; i < e; i++) {
              int qa = q_at(bits, sym, k.q, i), qc = q_at(bits, sym, c.q, i);
              if (bad ? qa != 0 : qa != qc) {
                fprintf(stderr, "  %s: element %zu (group %zu): q %d, %d without the "
                                "non-finite values\n", what, i, g, qa, qc);
                check_failures_++;
              }
            }
          }
          float y[45];
          uint16_t h[45], b[45];
          dequantize_both(&p, &k, y, T_F32, what);
          dequantize_both(&p, &k, h, T_F16, what);
          dequantize_both(&p, &k, b, T_BF16, what);
          for (size_t i = 0; i < n; i++) {
            size_t g = (size_t)(i / gs);
            int bad = g < 6 && bad_group[g];
            if (bad) {
              CHECK(f2u(y[i]) == NAN_BITS && h[i] == 0x7E00u && b[i] == 0x7FC0u);
            } else {
              CHECK(isfinite(y[i]));
            }
          }
          qout_free(&k);
          qout_free(&c);
        }
      }
    }
  }
  printf("  NaN, -NaN, +Inf, -Inf groups: scale (offset) 0x7fc00000, q 0, dequantized to "
         "0x7fc00000 / fp16 0x7e00 / bf16 0x7fc0; neighbours as without them\n");
}

/* Dequantization of arbitrary stored codes and scales (not produced by quantize). */
static void section_arbitrary_codes(void) {
  printf("-- 2c. arbitrary stored codes and scales, dequantized\n");
  const uint32_t odd_scales[] = {0x00000000u, 0x80000000u, 0x7FC00000u, 0x7F800000u,
                                 0xFF800000u, 0x00000001u, 0x00400000u, 0x7F7FFFFFu};
  int cases = 0;
  for (int bits = 8; bits >= 4; bits -= 4) {
    for (int sym = 1; sym >= 0; sym--) {
      for (uint64_t gs = 1; gs <= 9; gs += 4) {
        size_t n = 301, qb = q_bytes_of(bits, n), groups = groups_of(n, gs);
        qp p = mode(bits, sym, 0, gs);
        qout k;
        qout_init(&k, n, qb, groups, sym, 0);
        test_rng_bytes(k.q, qb);
        if (bits == 8) {
          k.q[0] = 0x80; /* -128 symmetric, 128 asymmetric */
        } else {
          k.q[0] = 0x88; /* nibble 8: -8 symmetric, 8 asymmetric */
        }
        for (size_t g = 0; g < groups; g++) {
          uint64_t r = test_rng_next() % 4;
          k.s[g] = r == 0 ? u2f(odd_scales[test_rng_next() % 8])
                          : (float)ldexp(rnd(), (int)(test_rng_next() % 60) - 30);
          k.o[g] = r == 1 ? u2f(odd_scales[test_rng_next() % 8]) : (float)(100.0 * rnd());
        }
        for (int t = T_F32; t <= T_BF16; t++) {
          void *y = xmalloc(n * esize((etype)t));
          dequantize_both(&p, &k, y, (etype)t, "arbitrary codes");
          free(y);
          cases++;
        }
        qout_free(&k);
      }
    }
  }
  printf("  %d cases (int8 -128, nibble 8, scales 0, -0, NaN, +-Inf, subnormal, FLT_MAX; "
         "fp32/fp16/bf16 out): bit-exact\n", cases);
}

static void section_huge_groups_and_keying(void) {
  printf("-- 2d. huge group sizes; stochastic keying by offset; stochastic mean\n");
  {
    size_t n = 1023;
    float *x = (float *)xmalloc(n * 4);
    gen_values(x, n, -5, 5);
    const uint64_t huge[3] = {(1ull << 32) + 1, 1ull << 63, UINT64_MAX};
    for (int h = 0; h < 3; h++) {
      for (int bits = 8; bits >= 4; bits -= 4) {
        for (int sym = 1; sym >= 0; sym--) {
          qp p = mode(bits, sym, h == 1, huge[h]);
          uint64_t qb = 0, g = 0;
          dsrs_quantize_config c = make_config(&p, 0, 0);
          CALL_OK(dsrs_quantize_sizes((uint64_t)n, &c, &qb, &g));
          CHECK(g == 1 && qb == q_bytes_of(bits, n));
          char what[96];
          snprintf(what, sizeof what, "group size %#" PRIx64 " int%d %s", huge[h], bits,
                   sym ? "sym" : "asym");
          qout k;
          quantize_both(&p, x, n, &k, what);
          float *y = (float *)xmalloc(n * 4);
          dequantize_both(&p, &k, y, T_F32, what);
          free(y);
          qout_free(&k);
        }
      }
    }
    free(x);
    printf("  group sizes 2^32 + 1, 2^63, 2^64 - 1 (one group of 1023): bit-exact\n");
  }
  {
    /* Groups around the kernel's one-pass limit (65536) and odd ones larger than it: int4
     * bytes shared by groups and by tiles, 1..16 threads. */
    size_t n = 262147;
    float *x = (float *)xmalloc(n * 4);
    gen_values(x, n, -6, 6);
    const uint64_t gss[4] = {65535, 65536, 65537, 131071};
    int threads = 1;
    for (int gi = 0; gi < 4; gi++) {
      for (int bits = 8; bits >= 4; bits -= 4) {
        for (int sym = 1; sym >= 0; sym--) {
          for (int stoch = 0; stoch < 2; stoch++) {
            qp p = mode(bits, sym, stoch, gss[gi]);
            char what[96];
            snprintf(what, sizeof what, "n=%zu gs=%" PRIu64 " int%d %s %s, %d threads", n,
                     gss[gi], bits, sym ? "sym" : "asym", stoch ? "stochastic" : "nearest",
                     threads);
            qout k;
            quantize_threads(&p, x, n, &k, threads, what);
            float *y = (float *)xmalloc(n * 4);
            dequantize_both(&p, &k, y, T_F32, what);
            free(y);
            qout_free(&k);
            threads = threads % 16 + 1;
          }
        }
      }
    }
    free(x);
    printf("  n=%zu, group sizes 65535, 65536, 65537, 131071, 1..16 threads: bit-exact\n", n);
  }
  {
    /* Element i takes word i % 4 of block offset + i / 4: quantizing x[4m..] with offset
     * + m reproduces the tail of q when groups align (group size divides 4m). */
    size_t n = 1000, m = 3;
    float *x = (float *)xmalloc(n * 4);
    gen_values(x, n, -3, 3);
    for (int bits = 8; bits >= 4; bits -= 4) {
      for (uint64_t gs = 1; gs <= 4; gs *= 2) {
        qp p = mode(bits, bits == 8, 1, gs);
        p.offset = UINT64_MAX - 1; /* the blocks wrap around 2^64 within the call */
        qout a, b;
        quantize_both(&p, x, n, &a, "offset keying (whole)");
        qp ps = p;
        ps.offset = p.offset + m; /* wraps */
        quantize_both(&ps, x + 4 * m, n - 4 * m, &b, "offset keying (tail)");
        size_t skip = bits == 8 ? 4 * m : 2 * m;
        same_bytes(b.q, a.q + skip, b.qb, 1, "q of the tail with offset + m");
        qout_free(&a);
        qout_free(&b);
      }
    }
    free(x);
    printf("  a call on x[12:] with offset + 3 reproduces q[12:] (offset 2^64 - 2: wraps)\n");
  }
  {
    /* Unbiased: with scale 1 (x[0] = 127), every other element at v = 10.3f; the mean of
     * floor(v + u) is v up to 2^-24, within 6 standard errors of the sample mean. */
    size_t n = 1u << 16;
    float *x = (float *)xmalloc(n * 4);
    x[0] = 127.0f;
    for (size_t i = 1; i < n; i++) x[i] = 10.3f;
    qp p = mode(8, 1, 1, n);
    qout k;
    quantize_both(&p, x, n, &k, "stochastic mean");
    CHECK(k.s[0] == 1.0f);
    double sum = 0;
    for (size_t i = 1; i < n; i++) sum += (double)(int8_t)k.q[i];
    double mean = sum / (double)(n - 1), v = (double)10.3f, f = v - 10.0;
    double se = sqrt(f * (1 - f) / (double)(n - 1));
    CHECK(fabs(mean - v) < 6 * se);
    printf("  mean of %zu stochastic codes of v = %.7f: %.7f (%.2f standard errors)\n", n - 1,
           v, mean, fabs(mean - v) / se);
    qout_free(&k);
    free(x);
  }
}

/* Extreme magnitudes: subnormal inputs and scales (bit-exact; the bounds do not apply),
 * and ranges near FLT_MAX whose float32 difference overflows (asymmetric: x - mn is +Inf
 * for some elements, clamped to the top code). */
static void section_extremes(void) {
  printf("-- 2e. subnormal and huge magnitudes\n");
  size_t n = 16 * 24;
  float *x = (float *)xmalloc(n * 4);
  for (size_t g = 0; g < 24; g++) {
    for (size_t k = 0; k < 16; k++) {
      double r = rnd();
      float v;
      switch (g % 6) {
        case 0: v = (float)(r * 0x1p-140); break;              /* subnormals */
        case 1: v = (float)(r * 0x1p-120); break;              /* tiny normals: subnormal scales */
        case 2: v = u2f((uint32_t)(test_rng_next() % 64)); break; /* the smallest subnormals */
        case 3: v = (float)(r * 3.0e38); break;                /* near FLT_MAX, both signs */
        case 4: v = k % 2 ? FLT_MAX : -FLT_MAX; break;         /* the full range */
        default: v = k == 0 ? 3.0e38f : (float)(r * 0x1p-130); break; /* huge and subnormal */
      }
      x[16 * g + k] = v;
    }
  }
  int cases = 0;
  for (int bits = 8; bits >= 4; bits -= 4) {
    for (int sym = 1; sym >= 0; sym--) {
      for (int stoch = 0; stoch < 2; stoch++) {
        for (uint64_t gs = 5; gs <= 16; gs += 11) {
          qp p = mode(bits, sym, stoch, gs);
          char what[96];
          snprintf(what, sizeof what, "extremes int%d %s %s gs=%" PRIu64, bits,
                   sym ? "sym" : "asym", stoch ? "stochastic" : "nearest", gs);
          qout k;
          quantize_threads(&p, x, n, &k, cases % 3 + 1, what);
          for (int t = T_F32; t <= T_BF16; t++) {
            void *y = xmalloc(n * esize((etype)t));
            dequantize_both(&p, &k, y, (etype)t, what);
            free(y);
          }
          qout_free(&k);
          cases++;
        }
      }
    }
  }
  free(x);
  printf("  %d cases (subnormal inputs and scales, ranges of +-FLT_MAX): bit-exact\n", cases);
}

/* ---------------------------------------------------------------------------------- */
/* 3. Shapes and placements.                                                             */

static void section_shapes(dsrs_accelerator *acc) {
  printf("-- 3. shapes and placements\n");
  /* dsrs_quantize_sizes. */
  const uint64_t ns[] = {0, 1, 2, 3, 7, 8, 1023, 100003, (1ull << 40) + 1};
  const uint64_t gss[] = {1, 2, 3, 7, 64, 4096, 1ull << 40, UINT64_MAX};
  for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
    for (size_t b = 0; b < sizeof gss / sizeof gss[0]; b++) {
      for (int bits = 8; bits >= 4; bits -= 4) {
        dsrs_quantize_config c;
        memset(&c, 0, sizeof c);
        c.bits = bits;
        c.group_size = gss[b];
        /* Only bits and group_size are read: the others may be anything. */
        c.symmetric = 7;
        c.rounding = 99;
        c.num_threads = -5;
        c.backend = 42;
        uint64_t qb = 0, g = 0;
        CALL_OK(dsrs_quantize_sizes(ns[a], &c, &qb, &g));
        uint64_t want_qb = bits == 8 ? ns[a] : ns[a] / 2 + ns[a] % 2;
        uint64_t want_g = ns[a] / gss[b] + (ns[a] % gss[b] != 0);
        CHECK(qb == want_qb && g == want_g);
      }
    }
  }
  printf("  dsrs_quantize_sizes: %zu (n, group size, bits) combinations; other fields ignored\n",
         2 * (sizeof ns / sizeof ns[0]) * (sizeof gss / sizeof gss[0]));

  /* Empty tensors (data NULL). */
  for (int sym = 1; sym >= 0; sym--) {
    qp p = mode(4, sym, 1, 3);
    dsrs_quantize_config c = make_config(&p, DSRS_QUANTIZE_BACKEND_KERNEL, 0);
    tens tx, tq, ts, to, ty;
    tens_set(&tx, NULL, edl(T_F16), 0);
    tens_set(&tq, NULL, dl(kDLUInt, 8), 0);
    tens_set(&ts, NULL, edl(T_F32), 0);
    tens_set(&to, NULL, edl(T_F32), 0);
    tens_set(&ty, NULL, edl(T_BF16), 0);
    CALL_OK(dsrs_quantize(&c, &tx.t, &tq.t, &ts.t, sym ? NULL : &to.t, NULL));
    CALL_OK(dsrs_dequantize(&c, &tq.t, &ts.t, sym ? NULL : &to.t, &ty.t, NULL));
    c.backend = DSRS_QUANTIZE_BACKEND_REFERENCE;
    CALL_OK(dsrs_quantize(&c, &tx.t, &tq.t, &ts.t, sym ? NULL : &to.t, NULL));
    CALL_OK(dsrs_dequantize(&c, &tq.t, &ts.t, sym ? NULL : &to.t, &ty.t, NULL));
  }
  printf("  empty tensors (data NULL): OK for both backends\n");

  /* A 2-D input (3 x 37, row-major, with explicit compact strides), a 2-D q; host memory
   * labelled kDLCUDAHost; a CPU stream (synchronized first). */
  {
    size_t n = 111;
    float *x = (float *)xmalloc(n * 4);
    gen_values(x, n, -4, 4);
    qp p = mode(4, 0, 1, 10);
    size_t qb = q_bytes_of(4, n), groups = groups_of(n, 10);
    uint8_t *rq = (uint8_t *)xmalloc(qb);
    float rs[12], ro[12];
    ref_quantize(&p, x, n, rq, rs, ro);
    int64_t shape_x[2] = {3, 37}, strides_x[2] = {37, 1}, shape_q[2] = {8, 7};
    REQUIRE(qb == 56);
    dsrs_stream *stream = NULL;
    REQUIRE_OK(dsrs_stream_new(acc, &stream));
    for (int placement = 0; placement < 3; placement++) {
      qout k;
      qout_init(&k, n, qb, groups, 0, 0);
      tens tx;
      tens_set(&tx, x, edl(T_F32), n);
      tx.t.ndim = 2;
      tx.t.shape = shape_x;
      tx.t.strides = placement == 0 ? strides_x : NULL;
      k.tq.t.ndim = 2;
      k.tq.t.shape = shape_q;
      dsrs_stream *s = NULL;
      if (placement == 1) {
        tx.t.device.device_type = kDLCUDAHost;
        k.tq.t.device.device_type = kDLCUDAHost;
        k.ts.t.device.device_type = kDLCUDAHost;
        k.to.t.device.device_type = kDLCUDAHost;
      } else if (placement == 2) {
        s = stream;
      }
      dsrs_quantize_config c = make_config(&p, DSRS_QUANTIZE_BACKEND_KERNEL, 0);
      CALL_OK(dsrs_quantize(&c, &tx.t, &k.tq.t, &k.ts.t, &k.to.t, s));
      const char *names[3] = {"2-D input and q", "kDLCUDAHost tensors", "a CPU stream"};
      qout_equal(&k, rq, rs, ro, 0, names[placement]);
      float y[111], ry[111];
      tens ty;
      tens_set(&ty, y, edl(T_F32), n);
      ty.t.device.device_type = tx.t.device.device_type;
      ref_dequantize(&p, rq, rs, ro, n, ry, T_F32);
      CALL_OK(dsrs_dequantize(&c, &k.tq.t, &k.ts.t, &k.to.t, &ty.t, s));
      same_bytes(y, ry, n * 4, 4, names[placement]);
      qout_free(&k);
    }
    CHECK_OK(dsrs_stream_free(stream));
    free(rq);
    free(x);
    printf("  a 3 x 37 input into an 8 x 7 q; kDLCUDAHost tensors; a CPU stream: bit-exact\n");
  }
}

/* ---------------------------------------------------------------------------------- */
/* 4. Errors.                                                                            */

/* The fixture of the error cases: n = 19 fp32 inputs, group size 4 (5 groups), all arrays
 * in one arena whose every byte is snapshotted; after each failure nothing may differ.
 *   input  at   0 (76 bytes)      q      at 256 (19 bytes int8 / 10 int4)
 *   scales at 512 (20 bytes)      offsets at 768 (20 bytes)      output at 1024 (76 bytes) */
enum { E_N = 19, E_GS = 4, E_GROUPS = 5, E_ARENA = 2048 };
typedef struct {
  uint8_t *arena, *snap;
  float *x, *s, *o, *y;
  uint8_t *q;
  tens tx, tq, ts, to, ty;
  dsrs_quantize_config sym8, asym4;
} efix;

static void efix_reset(efix *f) {
  tens_set(&f->tx, f->x, edl(T_F32), E_N);
  tens_set(&f->tq, f->q, dl(kDLInt, 8), E_N);
  tens_set(&f->ts, f->s, edl(T_F32), E_GROUPS);
  tens_set(&f->to, f->o, edl(T_F32), E_GROUPS);
  tens_set(&f->ty, f->y, edl(T_F32), E_N);
  memset(&f->sym8, 0, sizeof f->sym8);
  f->sym8.bits = 8;
  f->sym8.symmetric = 1;
  f->sym8.group_size = E_GS;
  f->sym8.rounding = DSRS_ROUNDING_NEAREST;
  f->sym8.backend = DSRS_QUANTIZE_BACKEND_KERNEL;
  f->asym4 = f->sym8;
  f->asym4.bits = 4;
  f->asym4.symmetric = 0;
  f->asym4.rounding = DSRS_ROUNDING_STOCHASTIC;
  f->asym4.seed = 5;
}

static void efix_init(efix *f) {
  f->arena = (uint8_t *)xmalloc(E_ARENA);
  f->snap = (uint8_t *)xmalloc(E_ARENA);
  test_rng_bytes(f->arena, E_ARENA);
  f->x = (float *)(void *)f->arena;
  f->q = f->arena + 256;
  f->s = (float *)(void *)(f->arena + 512);
  f->o = (float *)(void *)(f->arena + 768);
  f->y = (float *)(void *)(f->arena + 1024);
  for (int i = 0; i < E_N; i++) f->x[i] = (float)(4.0 * rnd());
  /* Valid quantized data for the dequantize cases (sym8 and asym4 alike read it). */
  for (int g = 0; g < E_GROUPS; g++) {
    f->s[g] = (float)(0.01 + rnd01());
    f->o[g] = (float)rnd();
  }
  memcpy(f->snap, f->arena, E_ARENA);
  efix_reset(f);
}

static void efix_unchanged(int line, efix *f, const char *what) {
  if (memcmp(f->arena, f->snap, E_ARENA) != 0) {
    for (size_t i = 0; i < E_ARENA; i++) {
      if (f->arena[i] != f->snap[i]) {
        fprintf(stderr, "quantizer_test.c:%d: %s: byte %zu of the arena was written by a "
                        "failing call\n", line, what, i);
        break;
      }
    }
    check_failures_++;
    memcpy(f->arena, f->snap, E_ARENA);
  }
  efix_reset(f);
}

#define ERROR_CASE2(what, call, want, alt, function, ...)                                  \
  do {                                                                                     \
    EXPECT_ERROR2(what, call, want, alt, function, __VA_ARGS__);                           \
    efix_unchanged(__LINE__, &f, what);                                                    \
  } while (0)
#define ERROR_CASE(what, call, want, function, ...)                                        \
  ERROR_CASE2(what, call, want, want, function, __VA_ARGS__)

/* The usual calls on the fixture (the tensors as they are when the macro runs). */
#define Q8() dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, NULL, NULL)
#define Q4() dsrs_quantize(&f.asym4, &f.tx.t, &f.tq.t, &f.ts.t, &f.to.t, NULL)
#define D8() dsrs_dequantize(&f.sym8, &f.tq.t, &f.ts.t, NULL, &f.ty.t, NULL)
#define D4() dsrs_dequantize(&f.asym4, &f.tq.t, &f.ts.t, &f.to.t, &f.ty.t, NULL)

static void section_errors(dsrs_accelerator *acc) {
  printf("-- 4. errors: status, message naming the argument, nothing written\n");
  efix f;
  efix_init(&f);
  const char *Q = "dsrs_quantize", *D = "dsrs_dequantize", *S = "dsrs_quantize_sizes";
  uint64_t qb = 777, ng = 888;

  /* dsrs_quantize_sizes */
  ERROR_CASE("sizes: NULL config", dsrs_quantize_sizes(19, NULL, &qb, &ng),
             DSRS_STATUS_NULL_ARGUMENT, S, "'config'");
  ERROR_CASE("sizes: NULL q_bytes", dsrs_quantize_sizes(19, &f.sym8, NULL, &ng),
             DSRS_STATUS_NULL_ARGUMENT, S, "'q_bytes'");
  ERROR_CASE("sizes: NULL num_groups", dsrs_quantize_sizes(19, &f.sym8, &qb, NULL),
             DSRS_STATUS_NULL_ARGUMENT, S, "'num_groups'");
  f.sym8.bits = 3;
  ERROR_CASE("sizes: bits = 3", dsrs_quantize_sizes(19, &f.sym8, &qb, &ng),
             DSRS_STATUS_OUT_OF_RANGE, S, "config->bits", "8 (int8) or 4", "got 3");
  f.sym8.group_size = 0;
  ERROR_CASE("sizes: group_size = 0", dsrs_quantize_sizes(19, &f.sym8, &qb, &ng),
             DSRS_STATUS_OUT_OF_RANGE, S, "config->group_size", "got 0");
  CHECK(qb == 777 && ng == 888); /* out-parameters are written only on success */

  /* NULL pointers. */
  ERROR_CASE("quantize: NULL config", dsrs_quantize(NULL, &f.tx.t, &f.tq.t, &f.ts.t, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, Q, "'config'");
  ERROR_CASE("quantize: NULL input", dsrs_quantize(&f.sym8, NULL, &f.tq.t, &f.ts.t, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, Q, "'input'");
  ERROR_CASE("quantize: NULL q", dsrs_quantize(&f.sym8, &f.tx.t, NULL, &f.ts.t, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, Q, "'q'");
  ERROR_CASE("quantize: NULL scales", dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, NULL, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, Q, "'scales'");
  ERROR_CASE("dequantize: NULL config",
             dsrs_dequantize(NULL, &f.tq.t, &f.ts.t, NULL, &f.ty.t, NULL),
             DSRS_STATUS_NULL_ARGUMENT, D, "'config'");
  ERROR_CASE("dequantize: NULL q", dsrs_dequantize(&f.sym8, NULL, &f.ts.t, NULL, &f.ty.t, NULL),
             DSRS_STATUS_NULL_ARGUMENT, D, "'q'");
  ERROR_CASE("dequantize: NULL scales",
             dsrs_dequantize(&f.sym8, &f.tq.t, NULL, NULL, &f.ty.t, NULL),
             DSRS_STATUS_NULL_ARGUMENT, D, "'scales'");
  ERROR_CASE("dequantize: NULL output",
             dsrs_dequantize(&f.sym8, &f.tq.t, &f.ts.t, NULL, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, D, "'output'");

  /* Configuration fields. */
  f.sym8.bits = 3;
  ERROR_CASE("quantize: bits = 3", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->bits", "got 3");
  f.sym8.bits = 16;
  ERROR_CASE("dequantize: bits = 16", D8(), DSRS_STATUS_OUT_OF_RANGE, D, "config->bits", "16");
  f.sym8.symmetric = 2;
  ERROR_CASE("quantize: symmetric = 2", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->symmetric",
             "2");
  f.sym8.group_size = 0;
  ERROR_CASE("quantize: group_size = 0", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->group_size",
             ">= 1", "got 0");
  f.asym4.group_size = 0;
  ERROR_CASE("dequantize: group_size = 0", D4(), DSRS_STATUS_OUT_OF_RANGE, D,
             "config->group_size");
  f.sym8.rounding = 2;
  ERROR_CASE("quantize: rounding = 2", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->rounding",
             "got 2");
  f.asym4.rounding = -1;
  ERROR_CASE("quantize: rounding = -1", Q4(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->rounding");
  f.sym8.num_threads = -1;
  ERROR_CASE("quantize: num_threads = -1", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q,
             "config->num_threads", "-1");
  f.sym8.backend = 3;
  ERROR_CASE("quantize: backend = 3", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "config->backend",
             "got 3");
  f.asym4.backend = -1;
  ERROR_CASE("dequantize: backend = -1", D4(), DSRS_STATUS_OUT_OF_RANGE, D, "config->backend");

  /* Lengths. */
  f.tq.shape[0] = E_N - 1;
  ERROR_CASE("quantize: q of 18 bytes for 19 int8", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'q' has 18 elements but 19 are expected", "8 bits");
  ERROR_CASE("quantize: q of 19 bytes for 19 int4", Q4(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'q' has 19 elements but 10 are expected", "4 bits, two per byte");
  f.tq.shape[0] = 9;
  ERROR_CASE("dequantize: q of 9 bytes for 19 int4", D4(), DSRS_STATUS_INVALID_ARGUMENT, D,
             "'q' has 9 elements but 10");
  f.ts.shape[0] = 4;
  ERROR_CASE("quantize: 4 scales for 5 groups", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'scales' has 4 elements but 5 are expected", "groups of 4");
  f.tq.shape[0] = 10;
  f.to.shape[0] = 6;
  ERROR_CASE("quantize: 6 offsets for 5 groups", Q4(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'offsets' has 6 elements but 5");
  f.ty.shape[0] = 21; /* 21 elements: 6 groups, so scales (5) are wrong */
  ERROR_CASE("dequantize: output of 21 elements", D8(), DSRS_STATUS_INVALID_ARGUMENT, D,
             "'q' has 19 elements but 21");

  /* Offsets NULL exactly when symmetric. */
  ERROR_CASE("quantize: offsets for symmetric",
             dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, &f.to.t, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, Q, "'offsets' must be NULL", "symmetric");
  f.tq.shape[0] = 10;
  ERROR_CASE("quantize: no offsets for asymmetric",
             dsrs_quantize(&f.asym4, &f.tx.t, &f.tq.t, &f.ts.t, NULL, NULL),
             DSRS_STATUS_NULL_ARGUMENT, Q, "'offsets'", "asymmetric");
  ERROR_CASE("dequantize: offsets for symmetric",
             dsrs_dequantize(&f.sym8, &f.tq.t, &f.ts.t, &f.to.t, &f.ty.t, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, D, "'offsets' must be NULL");
  f.tq.shape[0] = 10;
  ERROR_CASE("dequantize: no offsets for asymmetric",
             dsrs_dequantize(&f.asym4, &f.tq.t, &f.ts.t, NULL, &f.ty.t, NULL),
             DSRS_STATUS_NULL_ARGUMENT, D, "'offsets'");

  /* Types. */
  f.tq.t.dtype = dl(kDLInt, 32);
  f.tq.shape[0] = 5; /* 20 bytes: the dtype, not the size, is wrong */
  ERROR_CASE("quantize: int32 q", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'q' must be int8 or uint8, got int32");
  f.ts.t.dtype = dl(kDLFloat, 64);
  ERROR_CASE("quantize: float64 scales", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'scales' must be float32", "float64");
  f.tq.shape[0] = 10;
  f.to.t.dtype = edl(T_F16);
  ERROR_CASE("quantize: float16 offsets", Q4(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'offsets' must be float32", "float16");
  f.tx.t.dtype = dl(kDLInt, 32);
  ERROR_CASE("quantize: int32 input", Q8(), DSRS_STATUS_UNSUPPORTED, Q,
             "argument 'input' must be float32, float16 or bfloat16, got int32");
  f.ty.t.dtype = dl(kDLFloat, 64);
  f.ty.shape[0] = 9; /* 72 bytes (of 256) */
  f.tq.shape[0] = 9;
  f.ts.shape[0] = 3;
  ERROR_CASE("dequantize: float64 output", D8(), DSRS_STATUS_UNSUPPORTED, D, "'output'",
             "float64");
  f.tx.t.dtype.lanes = 2;
  ERROR_CASE("quantize: 2-lane input dtype", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "input->dtype");

  /* Tensor structure. */
  {
    int64_t strides[1] = {2}, shape2[2] = {2, 5}, strides2[2] = {8, 1};
    f.tx.shape[0] = 9;
    f.tx.t.strides = strides; /* every other float: not contiguous */
    f.tq.shape[0] = 9;
    f.ts.shape[0] = 3;
    ERROR_CASE("quantize: strided input", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
               "argument 'input' is not contiguous");
    f.tq.t.strides = strides;
    ERROR_CASE("quantize: strided q", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
               "argument 'q' is not contiguous");
    f.ty.t.ndim = 2; /* rows of 5 with a padded row stride of 8 */
    f.ty.t.shape = shape2;
    f.ty.t.strides = strides2;
    f.tq.shape[0] = 10;
    f.ts.shape[0] = 3;
    ERROR_CASE("dequantize: padded 2-D output", D8(), DSRS_STATUS_INVALID_ARGUMENT, D,
               "argument 'output' is not contiguous");
  }
  f.tx.t.ndim = -1;
  ERROR_CASE("quantize: input ndim -1", Q8(), DSRS_STATUS_OUT_OF_RANGE, Q, "input->ndim", "-1");
  f.tx.t.data = NULL;
  ERROR_CASE("quantize: input data NULL", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "input->data is NULL");
  f.tx.shape[0] = -3;
  ERROR_CASE("quantize: negative extent", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "input->shape[0] is negative");

  /* Alignment. */
  f.tx.t.data = f.arena + 1;
  ERROR_CASE("quantize: input at an odd address", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'input'", "not aligned", "4 bytes");
  f.tx.t.byte_offset = 2;
  ERROR_CASE("quantize: input byte_offset 2", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'input'", "not aligned");
  f.ts.t.byte_offset = 6;
  ERROR_CASE("quantize: scales byte_offset 6", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'scales'", "not aligned");
  f.ty.t.dtype = edl(T_BF16);
  f.ty.t.byte_offset = 1;
  ERROR_CASE("dequantize: bf16 output at an odd address", D8(), DSRS_STATUS_INVALID_ARGUMENT, D,
             "argument 'output'", "not aligned", "2 bytes");

  /* Overlaps. */
  f.ts.t.data = f.q + 8; /* scales inside q */
  ERROR_CASE("quantize: scales overlap q", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "arguments 'q' and 'scales' overlap");
  f.tq.t.data = (uint8_t *)f.x + 60; /* q overlaps the end of the input */
  ERROR_CASE("quantize: q overlaps input", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "arguments 'input' and 'q' overlap");
  f.to.t.data = f.s + 2;
  f.tq.shape[0] = 10;
  ERROR_CASE("quantize: offsets overlap scales", Q4(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "'scales' and 'offsets' overlap");
  f.ty.t.data = f.s;
  ERROR_CASE("dequantize: output overlaps scales", D8(), DSRS_STATUS_INVALID_ARGUMENT, D,
             "'output' and", "'scales'", "overlap");

  /* Devices. */
  f.tq.t.device.device_type = kDLCUDA;
  ERROR_CASE("quantize: host input, CUDA q", Q8(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "argument 'q' is in CUDA device 0 but 'input' is in host memory", "one device");
  f.tq.shape[0] = 10;
  f.to.t.device.device_type = kDLCUDA;
  f.to.t.device.device_id = 1;
  ERROR_CASE("quantize: offsets on CUDA device 1", Q4(), DSRS_STATUS_INVALID_ARGUMENT, Q,
             "'offsets' is in CUDA device 1");
  f.ty.t.device.device_type = kDLCUDA;
  ERROR_CASE("dequantize: CUDA output, host q", D8(), DSRS_STATUS_INVALID_ARGUMENT, D,
             "'q' is in host memory but 'output' is in CUDA device 0");
  f.tx.t.device.device_type = kDLOpenCL;
  ERROR_CASE("quantize: an OpenCL input", Q8(), DSRS_STATUS_UNSUPPORTED, Q, "argument 'input'",
             "DLPack device type 4");
  f.ts.t.device.device_type = kDLVulkan;
  ERROR_CASE("dequantize: Vulkan scales", D8(), DSRS_STATUS_UNSUPPORTED, D, "argument 'scales'",
             "device type 7");

  /* kDLCUDA tensors (host memory so labelled: nothing may touch it). */
  char accel_name[64];
  size_t needed = 0;
  REQUIRE_OK(dsrs_accelerator_name(acc, accel_name, sizeof accel_name, &needed));
  dsrs_stream *cpu_stream = NULL, *dead_stream = NULL;
  REQUIRE_OK(dsrs_stream_new(acc, &cpu_stream));
  REQUIRE_OK(dsrs_stream_new(acc, &dead_stream));
  REQUIRE_OK(dsrs_stream_free(dead_stream));
#define ALL_CUDA()                                                                         \
  do {                                                                                     \
    f.tx.t.device.device_type = kDLCUDA;                                                   \
    f.tq.t.device.device_type = kDLCUDA;                                                   \
    f.ts.t.device.device_type = kDLCUDA;                                                   \
    f.to.t.device.device_type = kDLCUDA;                                                   \
    f.ty.t.device.device_type = kDLCUDA;                                                   \
  } while (0)
  if (strcmp(accel_name, "cuda") != 0) {
    ALL_CUDA();
    ERROR_CASE("quantize: kDLCUDA tensors, no GPU (NULL stream)", Q8(),
               DSRS_STATUS_INVALID_ARGUMENT, Q, "'stream' is NULL", "current accelerator is cpu",
               "CUDA device 0");
    ALL_CUDA();
    f.tq.shape[0] = 10;
    ERROR_CASE("dequantize: kDLCUDA tensors, no GPU (NULL stream)", D4(),
               DSRS_STATUS_INVALID_ARGUMENT, D, "'stream' is NULL", "current accelerator is cpu");
  } else {
    printf("  (the current accelerator is cuda: the no-GPU cases are skipped)\n");
  }
  ALL_CUDA();
  ERROR_CASE("quantize: kDLCUDA tensors, a CPU stream",
             dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, NULL, cpu_stream),
             DSRS_STATUS_INVALID_ARGUMENT, Q, "'stream' is not a stream of the CUDA accelerator");
  ALL_CUDA();
  f.sym8.backend = DSRS_QUANTIZE_BACKEND_REFERENCE;
  ERROR_CASE("quantize: kDLCUDA tensors, REFERENCE backend", Q8(), DSRS_STATUS_UNSUPPORTED, Q,
             "DSRS_QUANTIZE_BACKEND_REFERENCE", "host memory only");
  ERROR_CASE("quantize: host tensors, a freed stream",
             dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, NULL, dead_stream),
             DSRS_STATUS_STALE_HANDLE, Q, "'stream'");
  ERROR_CASE("dequantize: host tensors, a garbage stream",
             dsrs_dequantize(&f.sym8, &f.tq.t, &f.ts.t, NULL, &f.ty.t,
                             (dsrs_stream *)(void *)(uintptr_t)0x1234),
             DSRS_STATUS_INVALID_HANDLE, D, "'stream'");
  ERROR_CASE("quantize: an accelerator as the stream",
             dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, NULL, (dsrs_stream *)(void *)acc),
             DSRS_STATUS_WRONG_HANDLE_TYPE, Q, "'stream'", "dsrs_accelerator");
#undef ALL_CUDA

  /* And the fixture still works, through both functions, with the same stream. */
  {
    qp p8 = {8, 1, 0, E_GS, 0, 0};
    uint8_t rq[E_N];
    float rs[E_GROUPS], ry[E_N];
    ref_quantize(&p8, f.x, E_N, rq, rs, NULL);
    CHECK_OK(dsrs_quantize(&f.sym8, &f.tx.t, &f.tq.t, &f.ts.t, NULL, cpu_stream));
    CHECK(memcmp(f.q, rq, E_N) == 0 && memcmp(f.s, rs, sizeof rs) == 0);
    ref_dequantize(&p8, rq, rs, NULL, E_N, ry, T_F32);
    CHECK_OK(dsrs_dequantize(&f.sym8, &f.tq.t, &f.ts.t, NULL, &f.ty.t, cpu_stream));
    CHECK(memcmp(f.y, ry, sizeof ry) == 0);
  }
  CHECK_OK(dsrs_stream_free(cpu_stream));
  free(f.arena);
  free(f.snap);
  printf("  %d error cases\n", error_count);
}

/* ---------------------------------------------------------------------------------- */

_Static_assert(sizeof(dsrs_quantize_config) == 48, "dsrs_quantize_config is 48 bytes");

/* One call with the kernel backend: it builds cpu_quantizer (at DSRS_JIT_SIMD's level). */
static dsrs_status simd_probe(void) {
  float x = 0.5f, s = 0.0f;
  uint8_t q = 0;
  tens tx, tq, ts;
  tens_set(&tx, &x, edl(T_F32), 1);
  tens_set(&tq, &q, dl(kDLInt, 8), 1);
  tens_set(&ts, &s, edl(T_F32), 1);
  qp p = {8, 1, 0, 1, 0, 0};
  dsrs_quantize_config c = make_config(&p, DSRS_QUANTIZE_BACKEND_KERNEL, 0);
  return dsrs_quantize(&c, &tx.t, &tq.t, &ts.t, NULL, NULL);
}

int main(void) {
  /* The op (cpu_quantizer) is built into a private cache. */
  op_cache cache;
  if (!host_op_test_begin("quantizer_test", simd_probe, &cache)) return 0;
  philox_known_answers();
  dsrs_accelerator *acc = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&acc));

  section_matrix();
  section_documented_example_and_nibbles();
  section_special_groups();
  section_arbitrary_codes();
  section_huge_groups_and_keying();
  section_extremes();
  section_shapes(acc);
  section_errors(acc);
  print_simd_level("cpu_quantizer", "dsrs_quantizer_simd_level");

  CHECK_OK(dsrs_accelerator_free(acc));
  printf("quantizer_test: %d matrix cases, %d successful calls, %ld values compared bit for "
         "bit, %d error cases\n", g_cases, g_calls, g_values, error_count);
  host_op_test_end("quantizer_test", &cache);
  return check_exit_code("quantizer_test");
}
