/*
 * optim_test.c — the optimizer steps of the C ABI (dsrs_adam_step, dsrs_adagrad_step,
 * dsrs_lion_step, dsrs_lamb_step) on host tensors, through the public header only.
 *
 *  1. Adam on fp32 parameters (both adamw modes, with and without weight decay, bias
 *     correction on and off, grad_scale 1 and 3), 5 steps with fresh gradients each step,
 *     lengths 1, 7, 1023 and 100003:
 *       - bit for bit against a float reference written here with the library's exact
 *         operation order (this file is compiled with -ffp-contract=off, so no FMA);
 *       - DSRS_OPTIM_BACKEND_KERNEL and DSRS_OPTIM_BACKEND_REFERENCE bit for bit alike;
 *       - against a double-precision Adam written from the textbook formula, propagated
 *         independently over the 5 steps, within a running first-order rounding-error
 *         bound (see adam_double_step: every float rounding contributes at most u = 2^-24
 *         of the magnitude of the term it rounds; errors of m, v and p carried from the
 *         previous steps are propagated with their factors; the check is |float - double|
 *         <= 2 * bound, and the largest ratio is printed).
 *  2. Mixed precision: bf16 parameters with fp32 gradients, fp16 parameters with fp16 and
 *     fp32 gradients, fp32 parameters with fp16/bf16 gradients and a bf16/fp16 param_copy,
 *     bit for bit against the float reference with round-to-nearest-even stores.
 *  3. Adagrad and Lion (weight decay on/off, grad_scale 1/3, fp32/bf16/copy) bit for bit
 *     against float references, kernel and reference backends; Lion with planted +-0
 *     momentum and gradients (copysign of a signed zero).
 *  4. Multi-tensor calls: count = 3 entries of different lengths and dtypes, each equal to
 *     the float reference; LAMB's per-tensor trust ratio (3 entries = 3 single calls).
 *  5. LAMB on host tensors: bit for bit against a float reference (sums of squares in
 *     double, element order), and against a double LAMB within a first-order bound.
 *  6. Every error path: status, dsrs_last_error_status, a message that starts with the
 *     function's name and names the field, and no tensor written; the REFERENCE backend
 *     refuses CUDA tensors (UNSUPPORTED, before any device use); empty tensors with NULL
 *     data are an empty step for every optimizer and backend.
 *
 * The ops are JIT-built into a private cache (DSRS_CACHE_DIR under a mkdtemp() directory,
 * removed at the end); the SIMD level they report is printed. CTest also runs this program
 * with DSRS_JIT_SIMD=scalar and =avx2 (optim_test_scalar, optim_test_avx2), so every code
 * path of the kernels meets the same references; a level this CPU cannot run prints
 * "SKIPPED:". Data are random: the seed is printed, DSRS_TEST_SEED=<seed> reproduces a run.
 */
#include <float.h>
#include <math.h>

#include "host_op_test.h"

/* The unit roundoff of float. */
static const double U = 0x1p-24;

/* ---------------------------------------------------------------------------------- */
/* A parameter with its gradients, states and optional copy.                            */

typedef struct {
  size_t n;
  etype pt, gt, ct;
  int has_m, has_v, has_copy;
  void *p, *g, *c;
  float *m, *v;
  tens tp, tg, tm, tv, tc;
} pset;

static void pset_views(pset *s) {
  tens_set(&s->tp, s->p, edl(s->pt), s->n);
  tens_set(&s->tg, s->g, edl(s->gt), s->n);
  tens_set(&s->tm, s->m, edl(T_F32), s->n);
  tens_set(&s->tv, s->v, edl(T_F32), s->n);
  tens_set(&s->tc, s->c, edl(s->ct), s->n);
}

/* Random parameters and states (gradients: pset_grads). */
static void pset_init(pset *s, size_t n, etype pt, etype gt, int has_m, int has_v, int has_copy,
                      etype ct) {
  memset(s, 0, sizeof *s);
  s->n = n;
  s->pt = pt;
  s->gt = gt;
  s->ct = ct;
  s->has_m = has_m;
  s->has_v = has_v;
  s->has_copy = has_copy;
  s->p = xmalloc(n * esize(pt));
  s->g = xmalloc(n * esize(gt));
  s->m = (float *)xmalloc(n * 4);
  s->v = (float *)xmalloc(n * 4);
  s->c = xmalloc(n * esize(ct));
  for (size_t i = 0; i < n; i++) {
    estore(s->p, pt, i, (float)rnd());
    estore(s->g, gt, i, 0.0f);
    s->m[i] = has_m ? (float)(0.1 * rnd()) : 0.0f;
    s->v[i] = has_v ? (float)(0.01 * rnd01()) : 0.0f;
    estore(s->c, ct, i, -7.0f); /* overwritten by a step that writes the copy */
  }
  pset_views(s);
}

static void pset_clone(pset *dst, const pset *src) {
  *dst = *src;
  size_t n = src->n;
  dst->p = xmalloc(n * esize(src->pt));
  dst->g = xmalloc(n * esize(src->gt));
  dst->c = xmalloc(n * esize(src->ct));
  dst->m = (float *)xmalloc(n * 4);
  dst->v = (float *)xmalloc(n * 4);
  memcpy(dst->p, src->p, n * esize(src->pt));
  memcpy(dst->g, src->g, n * esize(src->gt));
  memcpy(dst->c, src->c, n * esize(src->ct));
  memcpy(dst->m, src->m, n * 4);
  memcpy(dst->v, src->v, n * 4);
  pset_views(dst);
}

static void pset_free(pset *s) {
  free(s->p);
  free(s->g);
  free(s->c);
  free(s->m);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* Fresh gradients of magnitude `mag` into s (and the same values into the others). */
static void pset_grads(pset *s, double mag, pset *same1, pset *same2) {
  for (size_t i = 0; i < s->n; i++) estore(s->g, s->gt, i, (float)(mag * rnd()));
  if (same1) memcpy(same1->g, s->g, s->n * esize(s->gt));
  if (same2) memcpy(same2->g, s->g, s->n * esize(s->gt));
}

/* The entry of one step. */
static dsrs_optim_tensors pset_entry(pset *s) {
  dsrs_optim_tensors e;
  e.params = &s->tp.t;
  e.grads = &s->tg.t;
  e.exp_avg = s->has_m ? &s->tm.t : NULL;
  e.exp_avg_sq = s->has_v ? &s->tv.t : NULL;
  e.param_copy = s->has_copy ? &s->tc.t : NULL;
  return e;
}

/* Whether a and b hold the same bits (params, states, copy); prints the first difference. */
static int pset_same_bits(const pset *a, const pset *b, const char *what) {
  size_t n = a->n;
  struct {
    const char *name;
    const void *x, *y;
    size_t size;
    etype t;
    int used;
  } arrays[] = {
      {"params", a->p, b->p, esize(a->pt), a->pt, 1},
      {"exp_avg", a->m, b->m, 4, T_F32, a->has_m},
      {"exp_avg_sq", a->v, b->v, 4, T_F32, a->has_v},
      {"param_copy", a->c, b->c, esize(a->ct), a->ct, a->has_copy},
  };
  int ok = 1;
  for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
    if (!arrays[k].used) continue;
    if (memcmp(arrays[k].x, arrays[k].y, n * arrays[k].size) == 0) continue;
    for (size_t i = 0; i < n; i++) {
      if (memcmp((const char *)arrays[k].x + i * arrays[k].size,
                 (const char *)arrays[k].y + i * arrays[k].size, arrays[k].size) != 0) {
        fprintf(stderr, "  %s: %s[%zu] differs: %.9g vs %.9g\n", what, arrays[k].name, i,
                (double)eload(arrays[k].x, arrays[k].t, i),
                (double)eload(arrays[k].y, arrays[k].t, i));
        break;
      }
    }
    ok = 0;
  }
  if (!ok) check_failures_++;
  return ok;
}

/* ---------------------------------------------------------------------------------- */
/* Float references: the library's operation order (src/ops/optim/reference.rs).        */

static float inv_grad_scale(float grad_scale) { return (float)(1.0 / (double)grad_scale); }

static void ref_adam(const dsrs_adam_config *c, pset *s) {
  float bc1 = 1.0f, bc2 = 1.0f;
  if (c->bias_correction) {
    double t = (double)c->step;
    bc1 = (float)(1.0 - pow((double)c->beta1, t));
    bc2 = (float)(1.0 / sqrt(1.0 - pow((double)c->beta2, t)));
  }
  const float inv = inv_grad_scale(c->grad_scale);
  const float b1 = c->beta1, b2 = c->beta2, omb1 = 1.0f - b1, omb2 = 1.0f - b2;
  const float step_size = -c->lr / bc1, wd = c->weight_decay, eps = c->eps;
  const int l2 = wd > 0.0f && !c->adamw_mode, decoupled = wd > 0.0f && c->adamw_mode;
  const float decay = -c->lr * wd;
  for (size_t i = 0; i < s->n; i++) {
    float p = eload(s->p, s->pt, i);
    float g = eload(s->g, s->gt, i) * inv;
    if (l2) g = g + wd * p;
    float m = b1 * s->m[i] + omb1 * g;
    float v = b2 * s->v[i] + (omb2 * g) * g;
    float denom = sqrtf(v) * bc2 + eps;
    if (decoupled) p = p + decay * p;
    p = p + step_size * (m / denom);
    s->m[i] = m;
    s->v[i] = v;
    estore(s->p, s->pt, i, p);
    if (s->has_copy) estore(s->c, s->ct, i, p);
  }
}

static void ref_adagrad(const dsrs_adagrad_config *c, pset *s) {
  const float inv = inv_grad_scale(c->grad_scale), wd = c->weight_decay, neg_lr = -c->lr;
  const float eps = c->eps;
  for (size_t i = 0; i < s->n; i++) {
    float p = eload(s->p, s->pt, i);
    float g0 = eload(s->g, s->gt, i) * inv;
    float g = wd > 0.0f ? g0 + wd * p : g0;
    float v = s->v[i] + g * g;
    s->v[i] = v;
    p = p + neg_lr * (g0 / (sqrtf(v) + eps));
    estore(s->p, s->pt, i, p);
    if (s->has_copy) estore(s->c, s->ct, i, p);
  }
}

static void ref_lion(const dsrs_lion_config *c, pset *s) {
  const float inv = inv_grad_scale(c->grad_scale), b1 = c->beta1, b2 = c->beta2;
  const float omb1 = 1.0f - b1, omb2 = 1.0f - b2, lr = c->lr, wd = c->weight_decay;
  const float after_decay = 1.0f - lr * wd;
  for (size_t i = 0; i < s->n; i++) {
    float p = eload(s->p, s->pt, i);
    float g = eload(s->g, s->gt, i) * inv;
    float m = s->m[i];
    float cc = b1 * m + omb1 * g;
    float u = copysignf(lr, cc);
    p = wd > 0.0f ? p * after_decay - u : p - u;
    s->m[i] = b2 * m + omb2 * g;
    estore(s->p, s->pt, i, p);
    if (s->has_copy) estore(s->c, s->ct, i, p);
  }
}

/* LAMB's update direction (src/ops/optim/lamb.rs, Consts::direction). */
static float lamb_direction(const dsrs_lamb_config *c, float p, float m, float v) {
  float denom = c->eps_inside_sqrt ? sqrtf(v + c->eps) : sqrtf(v) + c->eps;
  float u = m / denom;
  if (c->weight_decay > 0.0f) u = u + c->weight_decay * p;
  return u;
}

/* LAMB in float with the library's order; the sums of squares in double, element order. */
static void ref_lamb(const dsrs_lamb_config *c, pset *s) {
  const float inv = inv_grad_scale(c->grad_scale), b1 = c->beta1, b2 = c->beta2;
  const float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
  float *old = (float *)xmalloc(s->n * 4);
  double sp = 0.0, su = 0.0;
  for (size_t i = 0; i < s->n; i++) {
    old[i] = eload(s->p, s->pt, i);
    float g = eload(s->g, s->gt, i) * inv;
    float m = b1 * s->m[i] + omb1 * g;
    float v = b2 * s->v[i] + (omb2 * g) * g;
    s->m[i] = m;
    s->v[i] = v;
    double u = (double)lamb_direction(c, old[i], m, v), pd = (double)old[i];
    sp += pd * pd;
    su += u * u;
  }
  float ratio = 1.0f;
  double w = sqrt(sp), un = sqrt(su);
  if (w != 0.0 && un != 0.0) {
    ratio = (float)(w / un);
    if (ratio > c->max_coeff) ratio = c->max_coeff;
    if (ratio < c->min_coeff) ratio = c->min_coeff;
  }
  float step_size = c->lr;
  if (c->bias_correction) {
    double t = (double)c->step;
    double bc1 = 1.0 - pow((double)c->beta1, t), bc2 = 1.0 - pow((double)c->beta2, t);
    step_size = (float)((double)c->lr * sqrt(bc2) / bc1);
  }
  float scale = step_size * ratio;
  for (size_t i = 0; i < s->n; i++) {
    float np_ = old[i] - scale * lamb_direction(c, old[i], s->m[i], s->v[i]);
    estore(s->p, s->pt, i, np_);
  }
  free(old);
}

/* ---------------------------------------------------------------------------------- */
/* Calls.                                                                                */

static int g_steps; /* API calls that succeeded */

#define STEP_OK(call)                                                                      \
  do {                                                                                     \
    REQUIRE_OK(call);                                                                      \
    g_steps++;                                                                             \
  } while (0)

/* ---------------------------------------------------------------------------------- */
/* 1. Adam on fp32 parameters against the float and the double reference.               */

/* The double state of one element and the bounds of the float path's errors. */
typedef struct {
  double p, m, v;    /* double Adam, from the same float inputs */
  double ep, em, ev; /* running first-order bounds of |float - double| */
} adam_dbl;

/* One double Adam step of element i (g: the float gradient, before unscaling), with the
 * bound of the float path's rounding errors:
 *   - each float operation rounds its result: at most u times the magnitude of that result
 *     (u = 2^-24); sums are bounded through the magnitudes of their terms;
 *   - errors carried from the previous step are propagated by the step's own factors
 *     (beta1 for m, beta2 for v, 1 + lr * wd for p, the derivatives for g^2 and m/denom);
 *   - bias corrections and 1/grad_scale are rounded once to float (u each). */
static void adam_double_step(const dsrs_adam_config *c, adam_dbl *d, float gf) {
  const double b1 = c->beta1, b2 = c->beta2, lr = c->lr, wd = c->weight_decay,
               eps = c->eps, gs = c->grad_scale;
  const int l2 = wd > 0 && !c->adamw_mode, decoupled = wd > 0 && c->adamw_mode;
  double g = (double)gf / gs;
  double eg = (gs != 1.0 ? 2 * U : 0.0) * fabs(g);
  if (l2) {
    double t = wd * d->p;
    eg += wd * d->ep + 2 * U * fabs(t) + U * (fabs(g) + fabs(t));
    g = g + t;
  }
  double tm = fabs(b1 * d->m) + fabs((1 - b1) * g);
  double m = b1 * d->m + (1 - b1) * g;
  d->em = b1 * d->em + (1 - b1) * eg + 3 * U * tm;
  double tv = b2 * d->v + (1 - b2) * g * g;
  d->ev = b2 * d->ev + (1 - b2) * 2 * fabs(g) * eg + 4 * U * tv;
  double v = tv;
  double bc1 = 1, bc2 = 1;
  if (c->bias_correction) {
    bc1 = 1 - pow(b1, (double)c->step);
    bc2 = 1 / sqrt(1 - pow(b2, (double)c->step));
  }
  double denom = sqrt(v) * bc2 + eps;
  double upd = lr / bc1 * (m / denom);
  double rel_denom = (v > 0 ? d->ev / (2 * v) : 0) + 4 * U;
  double eupd = lr / bc1 * d->em / denom + fabs(upd) * (rel_denom + 4 * U);
  double p = d->p, ep = d->ep;
  if (decoupled) {
    double t = lr * wd * p;
    ep = ep * (1 + lr * wd) + 2 * U * fabs(t);
    p = p - t;
    ep += U * fabs(p);
  }
  p = p - upd;
  ep += eupd + U * fabs(p);
  d->p = p;
  d->m = m;
  d->v = v;
  d->ep = ep;
}

static double worst_adam_ratio = 0.0;

static int within(double got, double want, double bound, double *worst) {
  double err = fabs(got - want), tol = 2 * bound + 1e-37;
  if (err / tol > *worst) *worst = err / tol;
  return err <= tol;
}

static void test_adam_fp32(size_t n, const dsrs_adam_config *base, const char *name) {
  pset k, r, f;
  pset_init(&k, n, T_F32, T_F32, 1, 1, 0, T_BF16);
  pset_clone(&r, &k);
  pset_clone(&f, &k);
  adam_dbl *d = (adam_dbl *)xmalloc(n * sizeof *d);
  for (size_t i = 0; i < n; i++) {
    d[i].p = ((float *)k.p)[i];
    d[i].m = k.m[i];
    d[i].v = k.v[i];
    d[i].ep = d[i].em = d[i].ev = 0;
  }
  char what[160];
  double worst = 0.0;
  int bad = 0;
  for (int64_t step = 1; step <= 5; step++) {
    pset_grads(&k, base->grad_scale, &r, &f);
    dsrs_adam_config cfg = *base;
    cfg.step = step;
    dsrs_optim_tensors ek = pset_entry(&k), er = pset_entry(&r);
    cfg.backend = DSRS_OPTIM_BACKEND_KERNEL;
    STEP_OK(dsrs_adam_step(&cfg, &ek, 1, NULL));
    cfg.backend = DSRS_OPTIM_BACKEND_REFERENCE;
    STEP_OK(dsrs_adam_step(&cfg, &er, 1, NULL));
    ref_adam(&cfg, &f);
    snprintf(what, sizeof what, "adam %s n=%zu step %d: kernel vs float reference", name, n,
             (int)step);
    pset_same_bits(&k, &f, what);
    snprintf(what, sizeof what, "adam %s n=%zu step %d: REFERENCE backend vs float reference",
             name, n, (int)step);
    pset_same_bits(&r, &f, what);
    const float *pk = (const float *)k.p;
    for (size_t i = 0; i < n; i++) {
      adam_double_step(&cfg, &d[i], ((const float *)k.g)[i]);
      int ok = within(pk[i], d[i].p, d[i].ep, &worst) && within(k.m[i], d[i].m, d[i].em, &worst) &&
               within(k.v[i], d[i].v, d[i].ev, &worst);
      if (!ok && bad++ < 3) {
        fprintf(stderr,
                "  adam %s n=%zu step %d [%zu]: p %.9g vs %.17g (bound %.3g), m %.9g vs %.17g "
                "(bound %.3g), v %.9g vs %.17g (bound %.3g)\n",
                name, n, (int)step, i, (double)pk[i], d[i].p, d[i].ep, (double)k.m[i], d[i].m,
                d[i].em, (double)k.v[i], d[i].v, d[i].ev);
        check_failures_++;
      }
    }
  }
  printf("  adam fp32 %-34s n=%-6zu 5 steps: bit-exact; max |float-double|/(2*bound) = %.3f\n",
         name, n, worst);
  if (worst > worst_adam_ratio) worst_adam_ratio = worst;
  free(d);
  pset_free(&k);
  pset_free(&r);
  pset_free(&f);
}

static dsrs_adam_config adam_config(float lr, float wd, int adamw, int bc, float gs, int threads) {
  dsrs_adam_config c;
  memset(&c, 0, sizeof c);
  c.lr = lr;
  c.beta1 = 0.9f;
  c.beta2 = 0.999f;
  c.eps = 1e-8f;
  c.weight_decay = wd;
  c.adamw_mode = adamw;
  c.bias_correction = bc;
  c.step = 1;
  c.grad_scale = gs;
  c.num_threads = threads;
  c.backend = DSRS_OPTIM_BACKEND_AUTO;
  return c;
}

static const size_t LENGTHS[] = {1, 7, 1023, 100003};
#define NLENGTHS (sizeof LENGTHS / sizeof LENGTHS[0])

static void section_adam_fp32(void) {
  printf("-- 1. adam, fp32 parameters: float reference (bit-exact), backends, double reference\n");
  for (size_t li = 0; li < NLENGTHS; li++) {
    for (int adamw = 1; adamw >= 0; adamw--) {
      for (int bc = 1; bc >= 0; bc--) {
        for (int gsi = 0; gsi < 2; gsi++) {
          float gs = gsi ? 3.0f : 1.0f;
          dsrs_adam_config c = adam_config(0.01f, 0.01f, adamw, bc, gs, (int)(li % 3));
          char name[96];
          snprintf(name, sizeof name, "%s wd=0.01 bc=%d gs=%g", adamw ? "adamw" : "adam+l2", bc,
                   (double)gs);
          test_adam_fp32(LENGTHS[li], &c, name);
        }
      }
    }
    dsrs_adam_config c = adam_config(1e-3f, 0.0f, 1, 1, 1.0f, 0);
    test_adam_fp32(LENGTHS[li], &c, "adamw wd=0 lr=1e-3");
    c.adamw_mode = 0;
    c.grad_scale = 1024.0f; /* a power of two: an exact unscale */
    test_adam_fp32(LENGTHS[li], &c, "adam wd=0 gs=1024");
  }
  printf("  largest |float-double|/(2*bound) over every Adam case: %.3f\n", worst_adam_ratio);
}

/* ---------------------------------------------------------------------------------- */
/* 2.-3. Mixed precision, Adagrad and Lion: bit for bit, kernel and reference backends.  */

typedef enum { OPT_ADAM, OPT_ADAGRAD, OPT_LION, OPT_LAMB } opt_kind;
static const char *const OPT_NAME[] = {"adam", "adagrad", "lion", "lamb"};

typedef struct {
  dsrs_adam_config adam;
  dsrs_adagrad_config adagrad;
  dsrs_lion_config lion;
  dsrs_lamb_config lamb;
} configs;

static dsrs_adagrad_config adagrad_config(float lr, float wd, float gs, int threads) {
  dsrs_adagrad_config c;
  memset(&c, 0, sizeof c);
  c.lr = lr;
  c.eps = 1e-10f;
  c.weight_decay = wd;
  c.grad_scale = gs;
  c.num_threads = threads;
  c.backend = DSRS_OPTIM_BACKEND_AUTO;
  return c;
}

static dsrs_lion_config lion_config(float lr, float wd, float gs, int threads) {
  dsrs_lion_config c;
  memset(&c, 0, sizeof c);
  c.lr = lr;
  c.beta1 = 0.9f;
  c.beta2 = 0.99f;
  c.weight_decay = wd;
  c.grad_scale = gs;
  c.num_threads = threads;
  c.backend = DSRS_OPTIM_BACKEND_AUTO;
  return c;
}

static dsrs_lamb_config lamb_config(float lr, float wd, int bc, int inside, float gs) {
  dsrs_lamb_config c;
  memset(&c, 0, sizeof c);
  c.lr = lr;
  c.beta1 = 0.9f;
  c.beta2 = 0.999f;
  c.eps = 1e-8f;
  c.weight_decay = wd;
  c.max_coeff = 10.0f;
  c.min_coeff = 0.01f;
  c.grad_scale = gs;
  c.bias_correction = bc;
  c.eps_inside_sqrt = inside;
  c.step = 1;
  c.backend = DSRS_OPTIM_BACKEND_AUTO;
  c.reserved = 0;
  return c;
}

/* One API step of `kind` over `count` entries with `backend`. */
static dsrs_status api_step(opt_kind kind, configs *c, int64_t step, int backend,
                            const dsrs_optim_tensors *e, size_t count) {
  switch (kind) {
    case OPT_ADAM:
      c->adam.step = step;
      c->adam.backend = backend;
      return dsrs_adam_step(&c->adam, e, count, NULL);
    case OPT_ADAGRAD:
      c->adagrad.backend = backend;
      return dsrs_adagrad_step(&c->adagrad, e, count, NULL);
    case OPT_LION:
      c->lion.backend = backend;
      return dsrs_lion_step(&c->lion, e, count, NULL);
    default:
      c->lamb.step = step;
      c->lamb.backend = backend;
      return dsrs_lamb_step(&c->lamb, e, count, NULL);
  }
}

static void ref_step(opt_kind kind, configs *c, int64_t step, pset *s) {
  switch (kind) {
    case OPT_ADAM: c->adam.step = step; ref_adam(&c->adam, s); break;
    case OPT_ADAGRAD: ref_adagrad(&c->adagrad, s); break;
    case OPT_LION: ref_lion(&c->lion, s); break;
    default: c->lamb.step = step; ref_lamb(&c->lamb, s); break;
  }
}

static float grad_scale_of(opt_kind kind, const configs *c) {
  switch (kind) {
    case OPT_ADAM: return c->adam.grad_scale;
    case OPT_ADAGRAD: return c->adagrad.grad_scale;
    case OPT_LION: return c->lion.grad_scale;
    default: return c->lamb.grad_scale;
  }
}

/* `steps` steps of one parameter with the given dtypes, kernel (when the optimizer has a CPU
 * kernel) and reference backends, each bit for bit equal to the float reference. Lion gets
 * planted signed zeros in its momentum and gradients. */
static void test_bits(opt_kind kind, configs *c, size_t n, etype pt, etype gt, int has_copy,
                      etype ct, const char *name) {
  const int has_m = kind != OPT_ADAGRAD, has_v = kind != OPT_LION;
  const int has_kernel = kind != OPT_LAMB;
  pset k, r, f;
  pset_init(&k, n, pt, gt, has_m, has_v, has_copy, ct);
  pset_clone(&r, &k);
  pset_clone(&f, &k);
  char what[192];
  for (int64_t step = 1; step <= 3; step++) {
    pset_grads(&k, grad_scale_of(kind, c), &r, &f);
    if (kind == OPT_LION && n >= 4) {
      /* c = beta1 * m + (1 - beta1) * g is +0 or -0: the step is -lr or +lr. */
      for (size_t i = 0; i < 4; i++) {
        float z = (i & 1) ? -0.0f : 0.0f;
        estore(k.g, gt, i, z);
        k.m[i] = r.m[i] = f.m[i] = (i < 2) ? z : k.m[i];
      }
      memcpy(r.g, k.g, n * esize(gt));
      memcpy(f.g, k.g, n * esize(gt));
    }
    dsrs_optim_tensors ek = pset_entry(&k), er = pset_entry(&r);
    if (has_kernel) {
      STEP_OK(api_step(kind, c, step, DSRS_OPTIM_BACKEND_KERNEL, &ek, 1));
    } else {
      STEP_OK(api_step(kind, c, step, DSRS_OPTIM_BACKEND_AUTO, &ek, 1));
    }
    STEP_OK(api_step(kind, c, step, DSRS_OPTIM_BACKEND_REFERENCE, &er, 1));
    ref_step(kind, c, step, &f);
    snprintf(what, sizeof what, "%s %s n=%zu step %d: %s vs float reference", OPT_NAME[kind],
             name, n, (int)step, has_kernel ? "kernel" : "auto");
    pset_same_bits(&k, &f, what);
    snprintf(what, sizeof what, "%s %s n=%zu step %d: REFERENCE backend vs float reference",
             OPT_NAME[kind], name, n, (int)step);
    pset_same_bits(&r, &f, what);
  }
  pset_free(&k);
  pset_free(&r);
  pset_free(&f);
}

static void section_mixed_adagrad_lion(void) {
  printf("-- 2. adam, mixed precision (bit-exact, kernel and reference backends)\n");
  struct {
    etype pt, gt;
    int copy;
    etype ct;
  } combos[] = {
      {T_BF16, T_F32, 0, T_BF16}, {T_BF16, T_BF16, 0, T_BF16}, {T_F16, T_F16, 0, T_F16},
      {T_F16, T_F32, 0, T_F16},   {T_F32, T_BF16, 0, T_BF16},  {T_F32, T_F16, 0, T_F16},
      {T_F32, T_F32, 1, T_BF16},  {T_F32, T_F32, 1, T_F16},    {T_F32, T_BF16, 1, T_BF16},
  };
  configs c;
  for (size_t ci = 0; ci < sizeof combos / sizeof combos[0]; ci++) {
    for (size_t li = 0; li < NLENGTHS; li++) {
      for (int v = 0; v < 2; v++) {
        c.adam = v ? adam_config(0.01f, 0.01f, 1, 1, 3.0f, 0) : adam_config(1e-3f, 0.1f, 0, 0, 1.0f, 2);
        char name[96];
        snprintf(name, sizeof name, "params %s grads %s%s%s (%s)", etype_name(combos[ci].pt),
                 etype_name(combos[ci].gt), combos[ci].copy ? " copy " : "",
                 combos[ci].copy ? etype_name(combos[ci].ct) : "",
                 v ? "adamw gs=3" : "adam+l2 no bias correction");
        test_bits(OPT_ADAM, &c, LENGTHS[li], combos[ci].pt, combos[ci].gt, combos[ci].copy,
                  combos[ci].ct, name);
      }
    }
    printf("  adam params %s grads %s%s%s: lengths 1..100003, 2 configs, 3 steps\n",
           etype_name(combos[ci].pt), etype_name(combos[ci].gt),
           combos[ci].copy ? " + param_copy " : "", combos[ci].copy ? etype_name(combos[ci].ct) : "");
  }

  printf("-- 3. adagrad and lion (bit-exact, kernel and reference backends)\n");
  struct {
    etype pt, gt;
    int copy;
    etype ct;
  } small[] = {{T_F32, T_F32, 0, T_BF16}, {T_BF16, T_BF16, 0, T_BF16}, {T_F16, T_F32, 0, T_F16},
               {T_F32, T_F32, 1, T_BF16}, {T_F32, T_F16, 1, T_F16}};
  for (int kind = OPT_ADAGRAD; kind <= OPT_LION; kind++) {
    for (size_t ci = 0; ci < sizeof small / sizeof small[0]; ci++) {
      for (size_t li = 0; li < NLENGTHS; li++) {
        for (int wdi = 0; wdi < 2; wdi++) {
          for (int gsi = 0; gsi < 2; gsi++) {
            float wd = wdi ? 0.1f : 0.0f, gs = gsi ? 3.0f : 1.0f;
            c.adagrad = adagrad_config(0.01f, wd, gs, (int)li % 3);
            c.lion = lion_config(1e-3f, wd, gs, (int)li % 3);
            char name[96];
            snprintf(name, sizeof name, "params %s grads %s%s%s wd=%g gs=%g",
                     etype_name(small[ci].pt), etype_name(small[ci].gt),
                     small[ci].copy ? " copy " : "", small[ci].copy ? etype_name(small[ci].ct) : "",
                     (double)wd, (double)gs);
            test_bits((opt_kind)kind, &c, LENGTHS[li], small[ci].pt, small[ci].gt,
                      small[ci].copy, small[ci].ct, name);
          }
        }
      }
      printf("  %s params %s grads %s%s%s: lengths 1..100003, wd 0/0.1, gs 1/3, 3 steps\n",
             OPT_NAME[kind], etype_name(small[ci].pt), etype_name(small[ci].gt),
             small[ci].copy ? " + param_copy " : "", small[ci].copy ? etype_name(small[ci].ct) : "");
    }
  }
}

/* ---------------------------------------------------------------------------------- */
/* 4. Multi-tensor calls.                                                               */

static void section_multi(void) {
  printf("-- 4. multi-tensor calls: count = 3, different lengths and dtypes\n");
  const size_t lens[3] = {7, 1023, 4099};
  configs c;
  c.adam = adam_config(0.01f, 0.01f, 1, 1, 3.0f, 0);
  c.adagrad = adagrad_config(0.01f, 0.1f, 3.0f, 0);
  c.lion = lion_config(1e-3f, 0.1f, 3.0f, 0);
  c.lamb = lamb_config(0.01f, 0.01f, 1, 0, 3.0f);
  for (int kind = OPT_ADAM; kind <= OPT_LAMB; kind++) {
    const int has_m = kind != OPT_ADAGRAD, has_v = kind != OPT_LION;
    const int copy_ok = kind != OPT_LAMB;
    /* Entry 0 fp32, entry 1 bf16 parameters with fp32 gradients, entry 2 fp32 parameters
     * with fp16 gradients and (not for LAMB) a bf16 copy. */
    pset a[3], f[3];
    pset_init(&a[0], lens[0], T_F32, T_F32, has_m, has_v, 0, T_BF16);
    pset_init(&a[1], lens[1], T_BF16, T_F32, has_m, has_v, 0, T_BF16);
    pset_init(&a[2], lens[2], T_F32, T_F16, has_m, has_v, copy_ok, T_BF16);
    for (int i = 0; i < 3; i++) pset_clone(&f[i], &a[i]);
    char what[128];
    for (int64_t step = 1; step <= 3; step++) {
      dsrs_optim_tensors e[3];
      for (int i = 0; i < 3; i++) {
        pset_grads(&a[i], grad_scale_of((opt_kind)kind, &c), &f[i], NULL);
        e[i] = pset_entry(&a[i]);
      }
      STEP_OK(api_step((opt_kind)kind, &c, step, DSRS_OPTIM_BACKEND_AUTO, e, 3));
      for (int i = 0; i < 3; i++) {
        ref_step((opt_kind)kind, &c, step, &f[i]); /* LAMB: one trust ratio per tensor */
        snprintf(what, sizeof what, "%s multi-tensor step %d entry %d", OPT_NAME[kind], (int)step, i);
        pset_same_bits(&a[i], &f[i], what);
      }
    }
    printf("  %s: 3 entries (fp32 n=7; bf16 n=1023; fp32 + fp16 grads%s n=4099), 3 steps, "
           "each equal to its own float reference\n",
           OPT_NAME[kind], copy_ok ? " + bf16 copy" : "");
    for (int i = 0; i < 3; i++) {
      pset_free(&a[i]);
      pset_free(&f[i]);
    }
  }
}

/* ---------------------------------------------------------------------------------- */
/* 5. LAMB against a double reference.                                                  */

/* One double LAMB step from the float state of `s` before the step (g: its gradients),
 * checked against the float state `after` within a first-order bound (see the file's
 * comment). Returns the largest |float - double| / (2 * bound). */
static double lamb_check_double(const dsrs_lamb_config *c, const pset *before, const pset *after) {
  const size_t n = before->n;
  const double b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay,
               gs = c->grad_scale;
  double *m = (double *)xmalloc(n * 8), *v = (double *)xmalloc(n * 8), *u = (double *)xmalloc(n * 8);
  double *em = (double *)xmalloc(n * 8), *ev = (double *)xmalloc(n * 8);
  double *eu = (double *)xmalloc(n * 8);
  double sp = 0, su = 0, sue = 0;
  for (size_t i = 0; i < n; i++) {
    double p = eload(before->p, before->pt, i);
    double g = (double)eload(before->g, before->gt, i) / gs;
    double eg = (gs != 1.0 ? 2 * U : 0.0) * fabs(g);
    double tm = fabs(b1 * before->m[i]) + fabs((1 - b1) * g);
    m[i] = b1 * before->m[i] + (1 - b1) * g;
    em[i] = (1 - b1) * eg + 3 * U * tm;
    v[i] = b2 * before->v[i] + (1 - b2) * g * g;
    ev[i] = (1 - b2) * 2 * fabs(g) * eg + 4 * U * v[i];
    double den = c->eps_inside_sqrt ? sqrt(v[i] + eps) : sqrt(v[i]) + eps;
    double rel_den = (v[i] > 0 ? ev[i] / (2 * v[i]) : 0) + 3 * U;
    double q = m[i] / den;
    u[i] = q + (wd > 0 ? wd * p : 0);
    eu[i] = em[i] / den + fabs(q) * (rel_den + U) + (wd > 0 ? 2 * U * fabs(wd * p) + U * fabs(u[i]) : 0);
    sp += p * p;
    su += u[i] * u[i];
    sue += fabs(u[i]) * eu[i];
  }
  double pn = sqrt(sp), un = sqrt(su), ratio = 1, rel_ratio = 0;
  if (pn != 0 && un != 0) {
    ratio = pn / un;
    rel_ratio = sue / su + 2 * U; /* d||u||/||u|| <= sum |u_i| e_i / ||u||^2; one rounding */
    if (ratio > c->max_coeff) ratio = c->max_coeff;
    if (ratio < c->min_coeff) ratio = c->min_coeff;
  }
  double step_size = c->lr;
  if (c->bias_correction) {
    double t = (double)c->step;
    step_size = c->lr * sqrt(1 - pow(b2, t)) / (1 - pow(b1, t));
  }
  double scale = step_size * ratio, worst = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double p0 = eload(before->p, before->pt, i);
    double delta = scale * u[i];
    double p = p0 - delta;
    double ep = fabs(delta) * (rel_ratio + 4 * U) + scale * eu[i] + U * fabs(p);
    int ok = within(eload(after->p, after->pt, i), p, ep, &worst) &&
             within(after->m[i], m[i], em[i], &worst) && within(after->v[i], v[i], ev[i], &worst);
    if (!ok && bad++ < 3) {
      fprintf(stderr, "  lamb double reference [%zu]: p %.9g vs %.17g (bound %.3g), m %.9g vs "
              "%.17g, v %.9g vs %.17g\n", i, (double)eload(after->p, after->pt, i), p, ep,
              (double)after->m[i], m[i], (double)after->v[i], v[i]);
      check_failures_++;
    }
  }
  free(m);
  free(v);
  free(u);
  free(em);
  free(ev);
  free(eu);
  return worst;
}

static void section_lamb(void) {
  printf("-- 5. lamb on host tensors: float reference (bit-exact) and double reference\n");
  struct {
    float lr, wd, max_coeff;
    int bc, inside;
    float gs;
    const char *name;
  } cases[] = {
      {1e-3f, 0.0f, 10.0f, 1, 0, 1.0f, "defaults"},
      {0.01f, 0.01f, 10.0f, 1, 0, 3.0f, "wd=0.01 gs=3"},
      {0.01f, 0.0f, 10.0f, 0, 1, 1.0f, "eps inside sqrt, no bias correction"},
      {0.01f, 0.1f, 0.3f, 1, 0, 1024.0f, "trust ratio clamped to max_coeff=0.3"},
  };
  configs c;
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    for (size_t li = 0; li < NLENGTHS; li++) {
      size_t n = LENGTHS[li];
      c.lamb = lamb_config(cases[ci].lr, cases[ci].wd, cases[ci].bc, cases[ci].inside, cases[ci].gs);
      c.lamb.max_coeff = cases[ci].max_coeff;
      if (c.lamb.min_coeff > c.lamb.max_coeff) c.lamb.min_coeff = c.lamb.max_coeff;
      test_bits(OPT_LAMB, &c, n, T_F32, T_F32, 0, T_BF16, cases[ci].name);
      /* Double reference: 3 steps, each from the float state before it. */
      pset s, before;
      pset_init(&s, n, T_F32, T_F32, 1, 1, 0, T_BF16);
      double worst = 0;
      for (int64_t step = 1; step <= 3; step++) {
        pset_grads(&s, cases[ci].gs, NULL, NULL);
        pset_clone(&before, &s);
        c.lamb.step = step;
        c.lamb.backend = DSRS_OPTIM_BACKEND_AUTO;
        dsrs_optim_tensors e = pset_entry(&s);
        STEP_OK(dsrs_lamb_step(&c.lamb, &e, 1, NULL));
        double w = lamb_check_double(&c.lamb, &before, &s);
        if (w > worst) worst = w;
        pset_free(&before);
      }
      pset_free(&s);
      printf("  lamb %-40s n=%-6zu: bit-exact; max |float-double|/(2*bound) = %.3f\n",
             cases[ci].name, n, worst);
    }
  }
  /* bf16 and fp16 parameters, bit for bit. */
  c.lamb = lamb_config(0.01f, 0.01f, 1, 0, 1.0f);
  for (size_t li = 0; li < NLENGTHS; li++) {
    test_bits(OPT_LAMB, &c, LENGTHS[li], T_BF16, T_F32, 0, T_BF16, "bf16 params");
    test_bits(OPT_LAMB, &c, LENGTHS[li], T_F16, T_F16, 0, T_F16, "fp16 params fp16 grads");
    test_bits(OPT_LAMB, &c, LENGTHS[li], T_F32, T_BF16, 0, T_BF16, "fp32 params bf16 grads");
  }
  printf("  lamb bf16 params, fp16 params + grads, fp32 params + bf16 grads: bit-exact\n");
}

/* ---------------------------------------------------------------------------------- */
/* 6. Errors.                                                                           */

/* The fixture of the error cases: two valid entries (fp32, n = 17) whose every byte is
 * snapshotted; after each failing call, nothing may have changed. */
typedef struct {
  pset s[2];
  pset snap[2];
  dsrs_optim_tensors e[2];
} fixture;

static void fixture_init(fixture *x, int has_m, int has_v) {
  for (int i = 0; i < 2; i++) {
    pset_init(&x->s[i], 17, T_F32, T_F32, has_m, has_v, 0, T_BF16);
    pset_grads(&x->s[i], 1.0, NULL, NULL);
    pset_clone(&x->snap[i], &x->s[i]);
    x->e[i] = pset_entry(&x->s[i]);
  }
}

/* Entries valid again (an error case may have changed them). */
static void fixture_reset(fixture *x) {
  for (int i = 0; i < 2; i++) {
    pset_views(&x->s[i]);
    x->e[i] = pset_entry(&x->s[i]);
  }
}

static void fixture_unchanged(int line, fixture *x, const char *what) {
  for (int i = 0; i < 2; i++) {
    size_t n = x->s[i].n;
    if (memcmp(x->s[i].p, x->snap[i].p, n * 4) != 0 || memcmp(x->s[i].m, x->snap[i].m, n * 4) != 0 ||
        memcmp(x->s[i].v, x->snap[i].v, n * 4) != 0 || memcmp(x->s[i].g, x->snap[i].g, n * 4) != 0 ||
        memcmp(x->s[i].c, x->snap[i].c, n * 2) != 0) {
      fprintf(stderr, "optim_test.c:%d: %s: tensors[%d] was written by a failing call\n", line, what, i);
      check_failures_++;
    }
  }
  fixture_reset(x);
}

static void fixture_free(fixture *x) {
  for (int i = 0; i < 2; i++) {
    pset_free(&x->s[i]);
    pset_free(&x->snap[i]);
  }
}

/* ERROR_CASE(what, call, status, function, needles...): the failure, then nothing written. */
#define ERROR_CASE(what, call, want, function, ...)                                        \
  do {                                                                                     \
    EXPECT_ERROR(what, call, want, function, __VA_ARGS__);                                 \
    fixture_unchanged(__LINE__, &fx, what);                                                \
  } while (0)
#define ERROR_CASE2(what, call, want, alt, function, ...)                                  \
  do {                                                                                     \
    EXPECT_ERROR2(what, call, want, alt, function, __VA_ARGS__);                           \
    fixture_unchanged(__LINE__, &fx, what);                                                \
  } while (0)

static void section_errors(void) {
  printf("-- 6. errors: status, message naming the field, nothing written\n");
  dsrs_adam_config adam = adam_config(0.01f, 0.01f, 1, 1, 1.0f, 0);
  dsrs_adagrad_config adagrad = adagrad_config(0.01f, 0.0f, 1.0f, 0);
  dsrs_lion_config lion = lion_config(1e-3f, 0.0f, 1.0f, 0);
  dsrs_lamb_config lamb = lamb_config(0.01f, 0.0f, 1, 0, 1.0f);
  fixture fx;
  fixture_init(&fx, 1, 1);
  const char *A = "dsrs_adam_step";

  /* NULL and empty arguments. */
  ERROR_CASE("adam: NULL config", dsrs_adam_step(NULL, fx.e, 2, NULL), DSRS_STATUS_NULL_ARGUMENT,
             A, "'config'");
  ERROR_CASE("adagrad: NULL config", dsrs_adagrad_step(NULL, fx.e, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, "dsrs_adagrad_step", "'config'");
  ERROR_CASE("lion: NULL config", dsrs_lion_step(NULL, fx.e, 2, NULL), DSRS_STATUS_NULL_ARGUMENT,
             "dsrs_lion_step", "'config'");
  ERROR_CASE("lamb: NULL config", dsrs_lamb_step(NULL, fx.e, 2, NULL), DSRS_STATUS_NULL_ARGUMENT,
             "dsrs_lamb_step", "'config'");
  ERROR_CASE("adam: NULL tensors, count 2", dsrs_adam_step(&adam, NULL, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, A, "'tensors'");
  ERROR_CASE("lamb: NULL tensors, count 1", dsrs_lamb_step(&lamb, NULL, 1, NULL),
             DSRS_STATUS_NULL_ARGUMENT, "dsrs_lamb_step", "'tensors'");
  CHECK_OK(dsrs_adam_step(&adam, NULL, 0, NULL));
  CHECK_OK(dsrs_adagrad_step(&adagrad, NULL, 0, NULL));
  CHECK_OK(dsrs_lion_step(&lion, NULL, 0, NULL));
  CHECK_OK(dsrs_lamb_step(&lamb, NULL, 0, NULL));
  CHECK_OK(dsrs_adam_step(&adam, fx.e, 0, NULL)); /* count 0 reads no entry */
  fixture_unchanged(__LINE__, &fx, "count = 0");
  printf("  count = 0 (NULL or non-NULL tensors): DSRS_STATUS_OK for all four, nothing written\n");

  fx.e[1].params = NULL;
  ERROR_CASE("adam: tensors[1].params NULL", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, A, "tensors[1].params");
  fx.e[0].grads = NULL;
  ERROR_CASE("adam: tensors[0].grads NULL", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, A, "tensors[0].grads");
  fx.e[1].exp_avg_sq = NULL;
  ERROR_CASE("adam: tensors[1].exp_avg_sq NULL", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, A, "tensors[1].exp_avg_sq");
  fx.e[0].exp_avg = NULL;
  ERROR_CASE("lion: tensors[0].exp_avg NULL", dsrs_lion_step(&lion, fx.e, 1, NULL),
             DSRS_STATUS_NULL_ARGUMENT, "dsrs_lion_step", "tensors[0].exp_avg");
  fx.e[0].exp_avg = NULL;
  ERROR_CASE("lamb: tensors[0].exp_avg NULL", dsrs_lamb_step(&lamb, fx.e, 1, NULL),
             DSRS_STATUS_NULL_ARGUMENT, "dsrs_lamb_step", "tensors[0].exp_avg");
  fx.e[0].exp_avg = NULL;
  fx.e[1].exp_avg = NULL;
  fx.e[0].exp_avg_sq = NULL;
  ERROR_CASE("adagrad: tensors[0].exp_avg_sq NULL", dsrs_adagrad_step(&adagrad, fx.e, 2, NULL),
             DSRS_STATUS_NULL_ARGUMENT, "dsrs_adagrad_step", "tensors[0].exp_avg_sq");

  /* Shapes, dtypes, places. */
  fx.s[0].tm.shape[0] = 16;
  ERROR_CASE("adam: exp_avg with 16 elements, params 17", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[0].exp_avg", "16", "17");
  fx.s[1].tg.shape[0] = 18;
  ERROR_CASE("adam: tensors[1].grads 18 elements", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[1].grads", "18");
  fx.s[0].tm.t.dtype = edl(T_F16);
  ERROR_CASE("adam: fp16 exp_avg", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_UNSUPPORTED, A,
             "tensors[0].exp_avg", "float32");
  fx.s[1].tv.t.dtype = edl(T_BF16);
  ERROR_CASE("adam: bf16 exp_avg_sq in tensors[1]", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_UNSUPPORTED, A, "tensors[1].exp_avg_sq", "float32");
  fx.s[0].tv.t.dtype = edl(T_F16);
  ERROR_CASE("adagrad: fp16 exp_avg_sq", dsrs_adagrad_step(&adagrad, (fx.e[0].exp_avg = NULL, fx.e), 1, NULL),
             DSRS_STATUS_UNSUPPORTED, "dsrs_adagrad_step", "tensors[0].exp_avg_sq", "float32");
  {
    DLDataType i32 = {kDLInt, 32, 1};
    fx.s[0].tp.t.dtype = i32;
    fx.s[0].tg.t.dtype = i32;
    ERROR_CASE("adam: int32 params", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_UNSUPPORTED,
               A, "int32");
  }
  fx.s[0].tp.t.dtype = edl(T_F16);
  fx.s[0].tg.t.dtype = edl(T_BF16);
  ERROR_CASE("adam: bf16 grads with fp16 params", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_UNSUPPORTED, A, "tensors[0].grads is bfloat16 but tensors[0].params is float16");
  fx.s[1].tp.t.dtype = edl(T_BF16);
  fx.s[1].tg.t.dtype = edl(T_BF16);
  fx.e[1].param_copy = &fx.s[1].tc.t;
  ERROR_CASE("adam: param_copy with bf16 params", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_UNSUPPORTED, A, "tensors[1].param_copy", "needs float32 parameters");
  fx.s[0].tc.t.dtype = edl(T_F32); /* its 34 bytes are never touched: the dtype is refused */
  fx.e[0].param_copy = &fx.s[0].tc.t;
  ERROR_CASE("adam: fp32 param_copy", dsrs_adam_step(&adam, fx.e, 1, NULL), DSRS_STATUS_UNSUPPORTED,
             A, "tensors[0].param_copy is float32", "float16 or bfloat16");
  fx.e[0].param_copy = &fx.s[0].tc.t;
  ERROR_CASE("lamb: param_copy", dsrs_lamb_step(&lamb, fx.e, 2, NULL), DSRS_STATUS_UNSUPPORTED,
             "dsrs_lamb_step", "tensors[0].param_copy");

  fx.s[0].tg.t.data = (char *)fx.s[0].p + 8; /* grads overlap params by 15 elements */
  ERROR_CASE("adam: grads overlap params", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[0].params and tensors[0].grads overlap");
  fx.s[1].tv.t.data = fx.s[1].m; /* exp_avg_sq is exp_avg */
  ERROR_CASE("adam: exp_avg_sq is exp_avg", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[1].exp_avg and tensors[1].exp_avg_sq overlap");

  fx.e[0].exp_avg = &fx.s[0].tm.t;
  ERROR_CASE("adagrad: exp_avg given", dsrs_adagrad_step(&adagrad, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, "dsrs_adagrad_step", "tensors[0].exp_avg must be NULL");
  ERROR_CASE("lion: exp_avg_sq given", dsrs_lion_step(&lion, (fx.e[1].exp_avg_sq = NULL, fx.e), 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, "dsrs_lion_step", "tensors[0].exp_avg_sq must be NULL");

  {
    int64_t strides[1] = {2};
    fx.s[1].tm.shape[0] = 8;
    fx.s[1].tp.shape[0] = 8;
    fx.s[1].tg.shape[0] = 8;
    fx.s[1].tv.shape[0] = 8;
    fx.s[1].tm.t.strides = strides; /* every other float: not contiguous */
    ERROR_CASE("adam: non-contiguous exp_avg", dsrs_adam_step(&adam, fx.e, 2, NULL),
               DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[1].exp_avg", "not contiguous");
    int64_t shape2[2] = {4, 4}, strides2[2] = {5, 1}; /* rows of a 4x5 array */
    fx.s[0].tp.t.ndim = 2;
    fx.s[0].tp.t.shape = shape2;
    fx.s[0].tp.t.strides = strides2;
    ERROR_CASE("lion: 2-d params with padded rows", dsrs_lion_step(&lion, (fx.e[0].exp_avg_sq = NULL, fx.e), 1, NULL),
               DSRS_STATUS_INVALID_ARGUMENT, "dsrs_lion_step", "tensors[0].params", "not contiguous");
    /* Compact strides and 2-d shapes are fine: 17 = 1 x 17. */
    int64_t shape3[2] = {1, 17}, strides3[2] = {17, 1};
    fx.s[0].tp.t.ndim = 2;
    fx.s[0].tp.t.shape = shape3;
    fx.s[0].tp.t.strides = strides3;
    pset ref;
    pset_clone(&ref, &fx.s[0]);
    dsrs_optim_tensors one = fx.e[0];
    one.exp_avg_sq = NULL;
    CHECK_OK(dsrs_lion_step(&lion, &one, 1, NULL));
    ref_lion(&lion, &ref);
    pset_same_bits(&fx.s[0], &ref, "lion: 1x17 params with explicit compact strides");
    pset_free(&ref);
    /* Restore the fixture's data (the step above wrote it). */
    for (int i = 0; i < 2; i++) {
      memcpy(fx.s[i].p, fx.snap[i].p, 17 * 4);
      memcpy(fx.s[i].m, fx.snap[i].m, 17 * 4);
      memcpy(fx.s[i].v, fx.snap[i].v, 17 * 4);
    }
    fixture_reset(&fx);
  }

  fx.s[1].tv.t.data = NULL;
  ERROR_CASE("adam: exp_avg_sq data NULL", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[1].exp_avg_sq", "NULL");
  fx.s[0].tp.t.ndim = -1;
  ERROR_CASE("adam: ndim -1", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_OUT_OF_RANGE, A,
             "tensors[0].params", "ndim");

  /* Devices. */
  fx.s[1].tg.t.device.device_type = kDLOpenCL;
  ERROR_CASE("adam: an OpenCL gradient", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_UNSUPPORTED, A, "tensors[1].grads", "device type");
  fx.s[1].tg.t.device.device_type = kDLCUDA;
  ERROR_CASE("adam: host params, CUDA grads", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_ARGUMENT, A, "tensors[1].grads", "one device");
  for (int i = 0; i < 2; i++) {
    fx.s[i].tp.t.device.device_type = kDLCUDA;
    fx.s[i].tg.t.device.device_type = kDLCUDA;
    fx.s[i].tm.t.device.device_type = kDLCUDA;
    fx.s[i].tv.t.device.device_type = kDLCUDA;
  }
  /* CUDA tensors with a NULL stream: an error naming the stream (host memory labelled
   * kDLCUDA: nothing may touch it). */
  EXPECT_ERROR2("adam: kDLCUDA tensors, NULL stream", dsrs_adam_step(&adam, fx.e, 2, NULL),
                DSRS_STATUS_NULL_ARGUMENT, DSRS_STATUS_INVALID_ARGUMENT, A, "stream");
  EXPECT_ERROR2("lamb: kDLCUDA tensors, NULL stream", dsrs_lamb_step(&lamb, fx.e, 2, NULL),
                DSRS_STATUS_NULL_ARGUMENT, DSRS_STATUS_INVALID_ARGUMENT, "dsrs_lamb_step", "stream");
  fx.e[0].exp_avg_sq = NULL;
  fx.e[1].exp_avg_sq = NULL;
  EXPECT_ERROR2("lion: kDLCUDA tensors, NULL stream", dsrs_lion_step(&lion, fx.e, 2, NULL),
                DSRS_STATUS_NULL_ARGUMENT, DSRS_STATUS_INVALID_ARGUMENT, "dsrs_lion_step", "stream");
  fx.e[0].exp_avg_sq = &fx.s[0].tv.t;
  fx.e[1].exp_avg_sq = &fx.s[1].tv.t;
  fx.e[0].exp_avg = NULL;
  fx.e[1].exp_avg = NULL;
  EXPECT_ERROR("adagrad: kDLCUDA tensors", dsrs_adagrad_step(&adagrad, fx.e, 2, NULL),
               DSRS_STATUS_UNSUPPORTED, "dsrs_adagrad_step", "CUDA");
  /* The REFERENCE backend runs on host memory only: CUDA tensors are refused before any
   * stream or device is looked at (so this holds without a GPU, with or without a stream). */
  fx.e[0].exp_avg = &fx.s[0].tm.t;
  fx.e[1].exp_avg = &fx.s[1].tm.t;
  adam.backend = DSRS_OPTIM_BACKEND_REFERENCE;
  EXPECT_ERROR("adam: REFERENCE backend, kDLCUDA tensors", dsrs_adam_step(&adam, fx.e, 2, NULL),
               DSRS_STATUS_UNSUPPORTED, A, "REFERENCE", "CUDA");
  {
    dsrs_accelerator *cpu = NULL;
    dsrs_stream *s = NULL;
    REQUIRE_OK(dsrs_accelerator_get(&cpu));
    REQUIRE_OK(dsrs_stream_new(cpu, &s));
    EXPECT_ERROR("adam: REFERENCE backend, kDLCUDA tensors, a stream", dsrs_adam_step(&adam, fx.e, 2, s),
                 DSRS_STATUS_UNSUPPORTED, A, "REFERENCE");
    CHECK_OK(dsrs_stream_free(s));
    CHECK_OK(dsrs_accelerator_free(cpu));
  }
  adam.backend = DSRS_OPTIM_BACKEND_AUTO;
  lamb.backend = DSRS_OPTIM_BACKEND_REFERENCE;
  EXPECT_ERROR("lamb: REFERENCE backend, kDLCUDA tensors", dsrs_lamb_step(&lamb, fx.e, 2, NULL),
               DSRS_STATUS_UNSUPPORTED, "dsrs_lamb_step", "REFERENCE");
  lamb.backend = DSRS_OPTIM_BACKEND_AUTO;
  lion.backend = DSRS_OPTIM_BACKEND_REFERENCE;
  fx.e[0].exp_avg_sq = NULL;
  fx.e[1].exp_avg_sq = NULL;
  EXPECT_ERROR("lion: REFERENCE backend, kDLCUDA tensors", dsrs_lion_step(&lion, fx.e, 2, NULL),
               DSRS_STATUS_UNSUPPORTED, "dsrs_lion_step", "REFERENCE");
  lion.backend = DSRS_OPTIM_BACKEND_AUTO;
  fixture_unchanged(__LINE__, &fx, "CUDA cases");

  /* Empty tensors (shape [0], data NULL, as DLPack allows) are an empty step for every
   * optimizer and backend: nothing is read or written (no slice is made of NULL). */
  {
    tens ep, eg, em, ev;
    tens_set(&ep, NULL, edl(T_F32), 0);
    tens_set(&eg, NULL, edl(T_F32), 0);
    tens_set(&em, NULL, edl(T_F32), 0);
    tens_set(&ev, NULL, edl(T_F32), 0);
    dsrs_optim_tensors both = {&ep.t, &eg.t, &em.t, &ev.t, NULL};
    dsrs_optim_tensors m_only = {&ep.t, &eg.t, &em.t, NULL, NULL};
    dsrs_optim_tensors v_only = {&ep.t, &eg.t, NULL, &ev.t, NULL};
    const int backends[3] = {DSRS_OPTIM_BACKEND_AUTO, DSRS_OPTIM_BACKEND_KERNEL,
                             DSRS_OPTIM_BACKEND_REFERENCE};
    for (int b = 0; b < 3; b++) {
      dsrs_adam_config ac = adam;
      ac.backend = backends[b];
      CHECK_OK(dsrs_adam_step(&ac, &both, 1, NULL));
      dsrs_adagrad_config gc = adagrad;
      gc.backend = backends[b];
      CHECK_OK(dsrs_adagrad_step(&gc, &v_only, 1, NULL));
      dsrs_lion_config lc = lion;
      lc.backend = backends[b];
      CHECK_OK(dsrs_lion_step(&lc, &m_only, 1, NULL));
    }
    dsrs_lamb_config lc = lamb;
    lc.backend = DSRS_OPTIM_BACKEND_REFERENCE;
    CHECK_OK(dsrs_lamb_step(&lc, &both, 1, NULL));
    CHECK_OK(dsrs_lamb_step(&lamb, &both, 1, NULL));
    /* An empty entry next to a real one: the real one is stepped as alone. */
    fixture_reset(&fx);
    dsrs_optim_tensors mixed[2] = {both, fx.e[0]};
    pset ref;
    pset_clone(&ref, &fx.s[0]);
    CHECK_OK(dsrs_adam_step(&adam, mixed, 2, NULL));
    ref_adam(&adam, &ref);
    pset_same_bits(&fx.s[0], &ref, "adam: an empty entry, then tensors[1]");
    pset_free(&ref);
    memcpy(fx.s[0].p, fx.snap[0].p, 17 * 4);
    memcpy(fx.s[0].m, fx.snap[0].m, 17 * 4);
    memcpy(fx.s[0].v, fx.snap[0].v, 17 * 4);
    fixture_reset(&fx);
    printf("  empty tensors with NULL data: DSRS_STATUS_OK (adam, adagrad, lion: every backend; "
           "lamb)\n");
  }

  /* Hyper-parameters. */
  adam.adamw_mode = 2;
  ERROR_CASE("adam: adamw_mode = 2", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_OUT_OF_RANGE,
             A, "config->adamw_mode", "2");
  adam.adamw_mode = 1;
  adam.bias_correction = -1;
  ERROR_CASE("adam: bias_correction = -1", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_OUT_OF_RANGE, A, "config->bias_correction");
  adam.bias_correction = 1;
  adam.beta1 = 1.0f;
  ERROR_CASE("adam: beta1 = 1.0", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG,
             A, "beta1", "[0, 1)");
  adam.beta1 = 0.9f;
  adam.beta2 = -0.5f;
  ERROR_CASE("adam: beta2 = -0.5", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG,
             A, "beta2");
  adam.beta2 = 0.999f;
  adam.lr = NAN;
  ERROR_CASE("adam: lr = NaN", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG, A,
             "lr");
  adam.lr = 0.01f;
  adam.eps = 0.0f;
  ERROR_CASE("adam: eps = 0", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG, A,
             "eps");
  adam.eps = 1e-8f;
  adam.weight_decay = -1.0f;
  ERROR_CASE("adam: weight_decay = -1", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, A, "weight_decay");
  adam.weight_decay = 0.01f;
  adam.step = 0;
  ERROR_CASE("adam: step = 0", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG, A,
             "step");
  adam.step = -3;
  ERROR_CASE("adam: step = -3", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_INVALID_CONFIG, A,
             "step");
  adam.step = 1;
  adam.grad_scale = 0.0f;
  ERROR_CASE("adam: grad_scale = 0", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, A, "grad_scale");
  adam.grad_scale = INFINITY;
  ERROR_CASE("adam: grad_scale = inf", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, A, "grad_scale");
  adam.grad_scale = 1.0f;
  adam.backend = 7;
  ERROR_CASE("adam: backend = 7", dsrs_adam_step(&adam, fx.e, 2, NULL), DSRS_STATUS_OUT_OF_RANGE, A,
             "config->backend", "7");
  adam.backend = DSRS_OPTIM_BACKEND_AUTO;
  adam.num_threads = -1;
  ERROR_CASE("adam: num_threads = -1", dsrs_adam_step(&adam, fx.e, 2, NULL),
             DSRS_STATUS_OUT_OF_RANGE, A, "config->num_threads");
  adam.num_threads = 0;
  adagrad.eps = -1.0f;
  ERROR_CASE("adagrad: eps = -1", dsrs_adagrad_step(&adagrad, (fx.e[0].exp_avg = NULL, fx.e[1].exp_avg = NULL, fx.e), 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, "dsrs_adagrad_step", "eps");
  adagrad.eps = 1e-10f;
  adagrad.backend = -1;
  ERROR_CASE("adagrad: backend = -1", dsrs_adagrad_step(&adagrad, (fx.e[0].exp_avg = NULL, fx.e[1].exp_avg = NULL, fx.e), 2, NULL),
             DSRS_STATUS_OUT_OF_RANGE, "dsrs_adagrad_step", "config->backend");
  adagrad.backend = DSRS_OPTIM_BACKEND_AUTO;
  lion.beta1 = 1.5f;
  ERROR_CASE("lion: beta1 = 1.5", dsrs_lion_step(&lion, (fx.e[0].exp_avg_sq = NULL, fx.e[1].exp_avg_sq = NULL, fx.e), 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, "dsrs_lion_step", "beta1", "[0, 1]");
  lion.beta1 = 0.9f;
  lamb.reserved = 1;
  ERROR_CASE("lamb: reserved = 1", dsrs_lamb_step(&lamb, fx.e, 2, NULL), DSRS_STATUS_OUT_OF_RANGE,
             "dsrs_lamb_step", "config->reserved");
  lamb.reserved = 0;
  lamb.eps_inside_sqrt = 3;
  ERROR_CASE("lamb: eps_inside_sqrt = 3", dsrs_lamb_step(&lamb, fx.e, 2, NULL),
             DSRS_STATUS_OUT_OF_RANGE, "dsrs_lamb_step", "config->eps_inside_sqrt");
  lamb.eps_inside_sqrt = 0;
  lamb.min_coeff = 20.0f;
  ERROR_CASE("lamb: min_coeff > max_coeff", dsrs_lamb_step(&lamb, fx.e, 2, NULL),
             DSRS_STATUS_INVALID_CONFIG, "dsrs_lamb_step", "min_coeff");
  lamb.min_coeff = 0.01f;
  lamb.backend = DSRS_OPTIM_BACKEND_KERNEL;
  ERROR_CASE("lamb: KERNEL backend on host tensors", dsrs_lamb_step(&lamb, fx.e, 2, NULL),
             DSRS_STATUS_UNSUPPORTED, "dsrs_lamb_step", "no CPU kernel");
  lamb.backend = DSRS_OPTIM_BACKEND_AUTO;

  /* And the fixture still steps after all of that. */
  CHECK_OK(dsrs_adam_step(&adam, fx.e, 2, NULL));
  for (int i = 0; i < 2; i++) {
    adam.step = 1;
    ref_adam(&adam, &fx.snap[i]);
    pset_same_bits(&fx.s[i], &fx.snap[i], "adam after the error cases");
  }
  fixture_free(&fx);
  printf("  %d error cases\n", error_count);
}

/* ---------------------------------------------------------------------------------- */

/* One step with the kernel backend: it builds cpu_adam (at DSRS_JIT_SIMD's level). */
static dsrs_status simd_probe(void) {
  float p = 0.5f, g = 0.25f, m = 0.0f, v = 0.0f;
  tens tp, tg, tm, tv;
  tens_set(&tp, &p, edl(T_F32), 1);
  tens_set(&tg, &g, edl(T_F32), 1);
  tens_set(&tm, &m, edl(T_F32), 1);
  tens_set(&tv, &v, edl(T_F32), 1);
  dsrs_optim_tensors e = {&tp.t, &tg.t, &tm.t, &tv.t, NULL};
  dsrs_adam_config c = adam_config(0.01f, 0.0f, 1, 1, 1.0f, 0);
  c.backend = DSRS_OPTIM_BACKEND_KERNEL;
  return dsrs_adam_step(&c, &e, 1, NULL);
}

int main(void) {
  /* The ops (cpu_adam, cpu_adagrad, cpu_lion) are built into a private cache. */
  op_cache cache;
  if (!host_op_test_begin("optim_test", simd_probe, &cache)) return 0;

  section_adam_fp32();
  section_mixed_adagrad_lion();
  section_multi();
  section_lamb();
  section_errors();
  print_simd_level("cpu_adam", "dsrs_cpu_adam_simd_level");
  print_simd_level("cpu_adagrad", "dsrs_cpu_adagrad_simd_level");
  print_simd_level("cpu_lion", "dsrs_cpu_lion_simd_level");

  printf("optim_test: %d successful steps, %d error cases\n", g_steps, error_count);
  host_op_test_end("optim_test", &cache);
  return check_exit_code("optim_test");
}
