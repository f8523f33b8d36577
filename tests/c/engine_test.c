/*
 * engine_test.c — the training engine through the C ABI (dsrs_engine_*, dsrs_config_*), on
 * the default accelerator (CPU), through the public header only.
 *
 *  1. Lifecycle: create, register (shapes, indices, names), finalize, views (dtype, shape,
 *     NULL strides, initial values, zero gradients), free; NULL is a no-op free.
 *  2. Zero copy: a value written into a parameter view is what the next step starts from;
 *     the optimizer's update shows in views taken before the step.
 *  3. AdamW, 3 steps on random data, against a double-precision statement of DeepSpeed's
 *     formula (parameters and both moments).
 *  4. Accumulation: 4 micro batches accumulated (GAS 4) equal one micro batch of their mean
 *     (GAS 1), SGD with momentum over two windows; records off and on the boundary;
 *     gradients zeroed after each boundary.
 *  5. Overflow: a NaN and an inf gradient skip the step: record (overflow, applied,
 *     skipped_steps, NaN norm), parameters and optimizer state bit-identical, lr unchanged;
 *     the next clean step is applied.
 *  6. Clipping (gradient_clipping) against g * max_norm / (||g|| + 1e-6) in double; the
 *     record's norm; no clipping below the threshold.
 *  7. fp16: fp16 views, loss scale 2^initial_scale_power, hysteresis then halving on
 *     overflow, DSRS_STATUS_INVALID_STATE at the minimum scale; bf16 views.
 *  8. Errors: exact statuses, out-parameters untouched, messages naming the function and
 *     the culprit.
 *  9. dsrs_config_check, dsrs_config_auto_paths, dsrs_config_fill_auto.
 * 10. Misuse: every NULL argument, bad values (trainable, device, strides, NULL data,
 *     indices past the end, non-finite lr, a file of invalid JSON), the step's stream
 *     (its own accelerator's streams, a freed one, another instance's), the config
 *     helpers' errors; exact statuses, out-parameters untouched.
 *
 * Data are random: the seed is printed, DSRS_TEST_SEED=<seed> reproduces a run.
 */
#include <float.h>
#include <math.h>

#include "check.h"
#include "tmpdir.h"

/* ---------------------------------------------------------------------------------- */
/* Helpers.                                                                             */

/* CHECK_FAILS(call, status, "needle"): `call` returns `status`, dsrs_last_error_status
 * agrees, and the message contains `needle` (NULL: not checked). */
static void check_fails_(int line, const char *expr, dsrs_status got, dsrs_status want,
                         const char *needle) {
  const char *msg = last_error();
  printf("  %-70.70s -> %s | %.160s\n", expr, status_name(got), got == DSRS_STATUS_OK ? "" : msg);
  if (got != want) {
    fprintf(stderr, "engine_test.c:%d: %s: expected %s, got %s (%s)\n", line, expr,
            status_name(want), status_name(got), msg);
    check_failures_++;
    return;
  }
  dsrs_status recorded = DSRS_STATUS_OK;
  CHECK_OK(dsrs_last_error_status(&recorded));
  if (recorded != want) {
    fprintf(stderr, "engine_test.c:%d: dsrs_last_error_status is %s\n", line, status_name(recorded));
    check_failures_++;
  }
  if (needle != NULL && strstr(msg, needle) == NULL) {
    fprintf(stderr, "engine_test.c:%d: %s: the message lacks \"%s\": %s\n", line, expr, needle, msg);
    check_failures_++;
  }
}
#define CHECK_FAILS(call, want, needle) check_fails_(__LINE__, #call, (call), (want), (needle))

static double rnd(void) { /* uniform in [-1, 1) */
  return (double)(test_rng_next() >> 11) * 0x1p-52 - 1.0;
}

static DLTensor host_tensor(void *data, DLDataType dtype, int64_t *shape, int32_t ndim) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype = dtype;
  t.shape = shape;
  return t;
}

static const DLDataType F32 = {kDLFloat, 32, 1};

static dsrs_engine *engine_from(const char *json) {
  dsrs_engine *e = NULL;
  dsrs_status st = dsrs_engine_new(NULL, json, &e);
  if (st != DSRS_STATUS_OK) {
    fprintf(stderr, "dsrs_engine_new(%s) returned %s: %s\n", json, status_name(st), last_error());
    exit(1);
  }
  REQUIRE(e != NULL);
  return e;
}

/* Registers a 1-D fp32 parameter of n values; returns its index. */
static size_t reg_f32(dsrs_engine *e, const char *name, const float *values, int64_t n, int trainable) {
  int64_t shape[1] = {n};
  DLTensor t = host_tensor((void *)values, F32, shape, 1);
  size_t index = (size_t)-1;
  REQUIRE_OK(dsrs_engine_register_param(e, name, &t, trainable, &index));
  return index;
}

static float *view_f32(dsrs_engine *e, size_t index, int grad) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  if (grad)
    REQUIRE_OK(dsrs_engine_grad(e, index, &t));
  else
    REQUIRE_OK(dsrs_engine_param(e, index, &t));
  REQUIRE(t.dtype.code == kDLFloat && t.dtype.bits == 32 && t.dtype.lanes == 1);
  return (float *)((char *)t.data + t.byte_offset);
}

static float *state_f32(dsrs_engine *e, size_t index, const char *state) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  REQUIRE_OK(dsrs_engine_optimizer_state(e, index, state, &t));
  REQUIRE(t.dtype.code == kDLFloat && t.dtype.bits == 32);
  return (float *)((char *)t.data + t.byte_offset);
}

static dsrs_step_record step(dsrs_engine *e) {
  dsrs_step_record r;
  memset(&r, 0xab, sizeof r);
  REQUIRE_OK(dsrs_engine_step(e, NULL, &r));
  return r;
}

static void *xmalloc(size_t n) {
  void *p = calloc(1, n > 0 ? n : 1);
  REQUIRE(p != NULL);
  return p;
}

/* |got - want| <= atol + rtol * max(|want|, mag[i]) (mag may be NULL: the magnitude of the
 * terms want[i] was computed from, for results of cancellation), reporting the worst
 * element. */
static void check_close_mag(const char *what, const float *got, const double *want,
                            const double *mag, size_t n, double atol, double rtol) {
  double worst = 0.0;
  size_t at = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)got[i] - want[i]);
    double m = fabs(want[i]);
    if (mag != NULL && mag[i] > m) m = mag[i];
    double tol = atol + rtol * m;
    if (!(err <= tol)) bad++;
    double ratio = err / tol;
    if (!(ratio <= worst)) {
      worst = ratio;
      at = i;
    }
  }
  printf("  %-44s worst error/tolerance %.3g at [%zu]\n", what, worst, at);
  if (bad) {
    fprintf(stderr, "%s: %d of %zu elements out of tolerance; [%zu]: got %.9g want %.9g\n", what,
            bad, n, at, (double)got[at], want[at]);
    check_failures_++;
  }
}

static void check_close(const char *what, const float *got, const double *want, size_t n,
                        double atol, double rtol) {
  check_close_mag(what, got, want, NULL, n, atol, rtol);
}

static uint16_t f32_to_f16(float f) { /* round to nearest even; finite inputs in range */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax < 0x38800000u) return sign; /* tests use normal values only */
  uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
  return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static float f16_to_f32(uint16_t h) { /* normal values and zero */
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits = exp == 0 ? sign : sign | ((exp + 112) << 23) | (man << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* ---------------------------------------------------------------------------------- */
/* 1. Lifecycle and views.                                                              */

static void test_lifecycle(void) {
  printf("lifecycle and views\n");
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 2, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.001}}}");
  size_t n = 99;
  REQUIRE_OK(dsrs_engine_num_params(e, &n));
  CHECK(n == 0);

  float a[12], b[5], c[8];
  for (int i = 0; i < 12; i++) a[i] = (float)i * 0.5f;
  for (int i = 0; i < 5; i++) b[i] = -(float)i;
  for (int i = 0; i < 8; i++) c[i] = (float)(i * i);
  int64_t sa[2] = {3, 4}, sb[1] = {5}, sc[3] = {2, 2, 2};
  DLTensor ta = host_tensor(a, F32, sa, 2), tb = host_tensor(b, F32, sb, 1),
           tc = host_tensor(c, F32, sc, 3);
  size_t ia = 9, ib = 9, ic = 9;
  REQUIRE_OK(dsrs_engine_register_param(e, "layer.weight", &ta, 1, &ia));
  REQUIRE_OK(dsrs_engine_register_param(e, "layer.bias", &tb, 1, &ib));
  REQUIRE_OK(dsrs_engine_register_param(e, "frozen.table", &tc, 0, NULL));
  REQUIRE_OK(dsrs_engine_param_index(e, "frozen.table", &ic));
  CHECK(ia == 0 && ib == 1 && ic == 2);
  /* The engine copied the values: changing the host arrays now changes nothing. */
  a[0] = 1234.0f;

  char *name = NULL;
  READ_STRING(name, dsrs_engine_param_name(e, 1, buf_, len_, &needed_));
  CHECK(strcmp(name, "layer.bias") == 0);
  free(name);
  REQUIRE_OK(dsrs_engine_finalize(e));
  REQUIRE_OK(dsrs_engine_num_params(e, &n));
  CHECK(n == 3);

  DLTensor v;
  memset(&v, 0, sizeof v);
  REQUIRE_OK(dsrs_engine_param(e, 0, &v));
  CHECK(v.dtype.code == kDLFloat && v.dtype.bits == 32 && v.dtype.lanes == 1);
  CHECK(v.ndim == 2 && v.shape != NULL && v.shape[0] == 3 && v.shape[1] == 4);
  CHECK(v.strides == NULL);
  CHECK(v.device.device_type == kDLCPU || v.device.device_type == kDLCUDAHost);
  const float *pa = (const float *)((char *)v.data + v.byte_offset);
  CHECK(pa[0] == 0.0f && pa[11] == 5.5f);
  memset(&v, 0, sizeof v);
  REQUIRE_OK(dsrs_engine_param(e, 2, &v));
  CHECK(v.ndim == 3 && v.shape[0] == 2 && v.shape[1] == 2 && v.shape[2] == 2);
  CHECK(((const float *)v.data)[7] == 49.0f);
  memset(&v, 0, sizeof v);
  REQUIRE_OK(dsrs_engine_grad(e, 1, &v));
  CHECK(v.ndim == 1 && v.shape[0] == 5 && v.strides == NULL);
  CHECK(v.dtype.code == kDLFloat && v.dtype.bits == 32);
  for (int i = 0; i < 5; i++) CHECK(((const float *)v.data)[i] == 0.0f);
  const float *m = state_f32(e, 0, "exp_avg");
  const float *s = state_f32(e, 0, "exp_avg_sq");
  for (int i = 0; i < 12; i++) CHECK(m[i] == 0.0f && s[i] == 0.0f);

  uint64_t tbs = 0, mbs = 0, gas = 0;
  REQUIRE_OK(dsrs_engine_batch_sizes(e, &tbs, &mbs, &gas));
  CHECK(tbs == 2 && mbs == 2 && gas == 1);
  REQUIRE_OK(dsrs_engine_batch_sizes(e, NULL, NULL, &gas)); /* any out may be NULL */
  double ls = 0.0, lr = 0.0;
  REQUIRE_OK(dsrs_engine_loss_scale(e, &ls));
  REQUIRE_OK(dsrs_engine_get_lr(e, &lr));
  CHECK(ls == 1.0 && lr == 0.001);
  char *cfg = NULL;
  READ_STRING(cfg, dsrs_engine_config_json(e, buf_, len_, &needed_));
  CHECK(strstr(cfg, "train_batch_size") != NULL);
  free(cfg);
  char *stats = NULL;
  READ_STRING(stats, dsrs_engine_stats_json(e, buf_, len_, &needed_));
  CHECK(stats[0] == '{');
  free(stats);

  REQUIRE_OK(dsrs_engine_free(e));
  CHECK_OK(dsrs_engine_free(NULL));
}

/* ---------------------------------------------------------------------------------- */
/* 2. Zero copy.                                                                        */

static void test_zero_copy(void) {
  printf("zero copy\n");
  /* AdamW with weight decay and a zero gradient: m = v = 0, so the step is the decay alone,
   * p <- p + (-lr * wd) * p, from whatever the view holds. */
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", \"params\": "
      "{\"lr\": 0.5, \"weight_decay\": 0.5}}}");
  float init[4] = {1, 2, 3, 4};
  reg_f32(e, "p", init, 4, 1);
  REQUIRE_OK(dsrs_engine_finalize(e));
  float *p = view_f32(e, 0, 0);
  p[0] = 8.0f;
  p[3] = -2.0f;
  dsrs_step_record r = step(e);
  CHECK(r.applied == 1);
  float *p2 = view_f32(e, 0, 0);
  CHECK(p2 == p); /* the view is stable */
  CHECK(p[0] == 6.0f && p[1] == 1.5f && p[2] == 2.25f && p[3] == -1.5f);
  printf("  p after step: %g %g %g %g\n", p[0], p[1], p[2], p[3]);
  REQUIRE_OK(dsrs_engine_free(e));
}

/* ---------------------------------------------------------------------------------- */
/* 3. AdamW against double.                                                             */

static void test_adamw(void) {
  printf("AdamW against a double reference\n");
  /* DeepSpeed's Adam kernels (cpu_adam, FusedAdam) take their hyper-parameters as float:
   * the reference uses the float values of 0.9, 0.99, ... in double arithmetic. */
  const double lr = (float)2e-3, b1 = (float)0.9, b2 = (float)0.99, eps = (float)1e-8,
               wd = (float)0.01;
  const size_t n = 1000;
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 8, \"train_micro_batch_size_per_gpu\": 8, \"optimizer\": "
      "{\"type\": \"AdamW\", \"params\": {\"lr\": 2e-3, \"betas\": [0.9, 0.99], \"eps\": 1e-8, "
      "\"weight_decay\": 0.01}}}");
  float *init = (float *)xmalloc(n * sizeof(float));
  double *p = (double *)xmalloc(n * sizeof(double)), *m = (double *)xmalloc(n * sizeof(double)),
         *v = (double *)xmalloc(n * sizeof(double)), *mag = (double *)xmalloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    init[i] = (float)rnd();
    p[i] = init[i];
  }
  reg_f32(e, "w", init, (int64_t)n, 1);
  REQUIRE_OK(dsrs_engine_finalize(e));
  float *gv = view_f32(e, 0, 1), *pv = view_f32(e, 0, 0);
  for (int t = 1; t <= 3; t++) {
    for (size_t i = 0; i < n; i++) {
      float g = (float)(rnd() * (i % 7 == 0 ? 1e-3 : 1.0));
      gv[i] += g;
      /* DeepSpeed's AdamW (adam_w_mode): decoupled decay, then the bias-corrected step */
      m[i] = b1 * m[i] + (1 - b1) * g;
      mag[i] = b1 * mag[i] + (1 - b1) * fabs((double)g); /* m's terms, for its tolerance */
      v[i] = b2 * v[i] + (1 - b2) * (double)g * g;
      double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
      p[i] = p[i] - lr * wd * p[i];
      p[i] = p[i] - lr * (m[i] / bc1) / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
    dsrs_step_record r = step(e);
    CHECK(r.boundary == 1 && r.applied == 1 && r.overflow == 0);
    CHECK(r.global_step == (uint64_t)t && r.micro_step == (uint64_t)t && r.skipped_steps == 0);
    CHECK(r.lr == 2e-3 && r.loss_scale == 1.0);
    for (size_t i = 0; i < n; i++) CHECK(gv[i] == 0.0f); /* zeroed at the boundary */
  }
  check_close("params after 3 AdamW steps", pv, p, n, 1e-9, 5e-7);
  check_close_mag("exp_avg", state_f32(e, 0, "exp_avg"), m, mag, n, 0.0, 1e-6);
  check_close("exp_avg_sq", state_f32(e, 0, "exp_avg_sq"), v, n, 1e-15, 1e-6);
  REQUIRE_OK(dsrs_engine_free(e));
  free(init);
  free(p);
  free(m);
  free(v);
  free(mag);
}

/* ---------------------------------------------------------------------------------- */
/* 4. Accumulation.                                                                     */

static void test_accumulation(void) {
  printf("gradient accumulation\n");
  const char *sgd = "\"optimizer\": {\"type\": \"SGD\", \"params\": {\"lr\": 0.1, \"momentum\": 0.9}}";
  char json4[512], json1[512];
  snprintf(json4, sizeof json4,
           "{\"train_batch_size\": 16, \"train_micro_batch_size_per_gpu\": 4, %s}", sgd);
  snprintf(json1, sizeof json1, "{\"train_batch_size\": 4, %s}", sgd);
  dsrs_engine *e4 = engine_from(json4), *e1 = engine_from(json1);
  uint64_t gas = 0;
  REQUIRE_OK(dsrs_engine_batch_sizes(e4, NULL, NULL, &gas));
  CHECK(gas == 4);
  const size_t n = 257;
  float *init = (float *)xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) init[i] = (float)rnd();
  reg_f32(e4, "p", init, (int64_t)n, 1);
  reg_f32(e1, "p", init, (int64_t)n, 1);
  REQUIRE_OK(dsrs_engine_finalize(e4));
  REQUIRE_OK(dsrs_engine_finalize(e1));
  float *g4 = view_f32(e4, 0, 1), *g1 = view_f32(e1, 0, 1);
  double *mean = (double *)xmalloc(n * sizeof(double));
  for (int window = 1; window <= 2; window++) {
    memset(mean, 0, n * sizeof(double));
    for (int k = 0; k < 4; k++) {
      for (size_t i = 0; i < n; i++) {
        float g = (float)rnd();
        g4[i] += g;
        mean[i] += (double)g / 4.0;
      }
      dsrs_step_record r = step(e4);
      CHECK(r.micro_step == (uint64_t)(4 * (window - 1) + k + 1));
      if (k < 3) {
        CHECK(r.boundary == 0 && r.applied == 0 && r.overflow == 0 && r.grad_norm == -1.0);
        CHECK(r.global_step == (uint64_t)(window - 1));
      } else {
        CHECK(r.boundary == 1 && r.applied == 1 && r.global_step == (uint64_t)window);
        CHECK(r.grad_norm > 0.0);
      }
    }
    for (size_t i = 0; i < n; i++) {
      CHECK(g4[i] == 0.0f);
      g1[i] = (float)mean[i];
    }
    dsrs_step_record r1 = step(e1);
    CHECK(r1.boundary == 1 && r1.applied == 1 && r1.global_step == (uint64_t)window);
  }
  float *p4 = view_f32(e4, 0, 0), *p1 = view_f32(e1, 0, 0);
  double *want = (double *)xmalloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) want[i] = p1[i];
  check_close("GAS 4 vs GAS 1 on the mean", p4, want, n, 1e-6, 1e-6);
  const float *mb4 = state_f32(e4, 0, "momentum_buffer"), *mb1 = state_f32(e1, 0, "momentum_buffer");
  for (size_t i = 0; i < n; i++) want[i] = mb1[i];
  check_close("momentum_buffer", mb4, want, n, 1e-6, 1e-6);
  REQUIRE_OK(dsrs_engine_free(e4));
  REQUIRE_OK(dsrs_engine_free(e1));
  free(init);
  free(mean);
  free(want);
}

/* ---------------------------------------------------------------------------------- */
/* 5. Overflow.                                                                         */

static void test_overflow(void) {
  printf("non-finite gradients skip the step\n");
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 2, \"train_micro_batch_size_per_gpu\": 1, \"optimizer\": "
      "{\"type\": \"Adam\", \"params\": {\"lr\": 0.01}}, \"scheduler\": {\"type\": \"WarmupLR\", "
      "\"params\": {\"warmup_min_lr\": 0, \"warmup_max_lr\": 0.01, \"warmup_num_steps\": 10, "
      "\"warmup_type\": \"linear\"}}}");
  const size_t n = 100;
  float init[100];
  for (size_t i = 0; i < n; i++) init[i] = (float)rnd();
  reg_f32(e, "p", init, (int64_t)n, 1);
  REQUIRE_OK(dsrs_engine_finalize(e));
  float *p = view_f32(e, 0, 0), *g = view_f32(e, 0, 1);
  const float *m = state_f32(e, 0, "exp_avg"), *v = state_f32(e, 0, "exp_avg_sq");
  /* Two clean windows first, so that the state is not trivially zero. */
  for (int k = 0; k < 4; k++) {
    for (size_t i = 0; i < n; i++) g[i] += (float)rnd();
    step(e);
  }
  float sp[100], sm[100], sv[100];
  const float bad[2] = {NAN, INFINITY};
  for (int b = 0; b < 2; b++) {
    memcpy(sp, p, sizeof sp);
    memcpy(sm, m, sizeof sm);
    memcpy(sv, v, sizeof sv);
    double lr_before = -1.0, lr_after = -2.0;
    REQUIRE_OK(dsrs_engine_get_lr(e, &lr_before));
    for (size_t i = 0; i < n; i++) g[i] += (float)rnd();
    dsrs_step_record r = step(e);
    CHECK(r.boundary == 0);
    for (size_t i = 0; i < n; i++) g[i] += (float)rnd();
    g[17] = bad[b];
    r = step(e);
    printf("  %s: global %" PRIu64 " skipped %" PRIu64 " applied %d overflow %d norm %g lr %g\n",
           b ? "inf" : "NaN", r.global_step, r.skipped_steps, r.applied, r.overflow, r.grad_norm,
           r.lr);
    CHECK(r.boundary == 1 && r.applied == 0 && r.overflow == 1);
    CHECK(r.skipped_steps == (uint64_t)(b + 1) && r.global_step == (uint64_t)(3 + b));
    CHECK(isnan(r.grad_norm));
    CHECK(memcmp(sp, p, sizeof sp) == 0);
    CHECK(memcmp(sm, m, sizeof sm) == 0);
    CHECK(memcmp(sv, v, sizeof sv) == 0);
    REQUIRE_OK(dsrs_engine_get_lr(e, &lr_after));
    CHECK(lr_after == lr_before);
    int zero = 1;
    for (size_t i = 0; i < n; i++) zero &= g[i] == 0.0f;
    CHECK(zero);
  }
  /* A clean window afterwards is applied. */
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; i < n; i++) g[i] += (float)rnd();
    dsrs_step_record r = step(e);
    if (k == 1) CHECK(r.applied == 1 && r.overflow == 0 && r.skipped_steps == 2 && r.global_step == 5);
  }
  CHECK(memcmp(sp, p, sizeof sp) != 0);
  REQUIRE_OK(dsrs_engine_free(e));
}

/* ---------------------------------------------------------------------------------- */
/* 6. Clipping.                                                                         */

static void test_clipping(void) {
  printf("gradient clipping\n");
  /* SGD (no momentum), lr 1: p_new = p - clip(mean of the 2 micro gradients). */
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 2, \"train_micro_batch_size_per_gpu\": 1, \"gradient_clipping\": 1.0, "
      "\"optimizer\": {\"type\": \"SGD\", \"params\": {\"lr\": 1.0}}}");
  const size_t n1 = 300, n2 = 41;
  float *i1 = (float *)xmalloc(n1 * 4), *i2 = (float *)xmalloc(n2 * 4);
  for (size_t i = 0; i < n1; i++) i1[i] = (float)rnd();
  for (size_t i = 0; i < n2; i++) i2[i] = (float)rnd();
  reg_f32(e, "a", i1, (int64_t)n1, 1);
  reg_f32(e, "b", i2, (int64_t)n2, 1);
  REQUIRE_OK(dsrs_engine_finalize(e));
  float *p1 = view_f32(e, 0, 0), *p2 = view_f32(e, 1, 0), *g1 = view_f32(e, 0, 1),
        *g2 = view_f32(e, 1, 1);
  double *w1 = (double *)xmalloc(n1 * 8), *w2 = (double *)xmalloc(n2 * 8),
         *a1 = (double *)xmalloc(n1 * 8), *a2 = (double *)xmalloc(n2 * 8);
  for (int round = 0; round < 2; round++) {
    /* round 0: norm ~ 0.05 * sqrt(341) ~ 0.5 < 1 (no clipping); round 1: norm ~ 10. */
    double mag = round == 0 ? 0.05 : 1.0;
    memset(a1, 0, n1 * 8);
    memset(a2, 0, n2 * 8);
    for (int k = 0; k < 2; k++) {
      for (size_t i = 0; i < n1; i++) {
        float g = (float)(mag * rnd());
        g1[i] += g;
        a1[i] += (double)g / 2.0;
      }
      for (size_t i = 0; i < n2; i++) {
        float g = (float)(mag * rnd());
        g2[i] += g;
        a2[i] += (double)g / 2.0;
      }
      if (k == 0) step(e);
    }
    double sq = 0.0;
    for (size_t i = 0; i < n1; i++) sq += a1[i] * a1[i];
    for (size_t i = 0; i < n2; i++) sq += a2[i] * a2[i];
    double norm = sqrt(sq), coef = 1.0 / (norm + 1e-6);
    if (coef > 1.0) coef = 1.0;
    for (size_t i = 0; i < n1; i++) w1[i] = (double)p1[i] - a1[i] * coef;
    for (size_t i = 0; i < n2; i++) w2[i] = (double)p2[i] - a2[i] * coef;
    dsrs_step_record r = step(e);
    printf("  norm %.9g (engine %.9g), clip coefficient %.6g\n", norm, r.grad_norm, coef);
    CHECK(r.applied == 1);
    CHECK(fabs(r.grad_norm - norm) <= 1e-6 * norm);
    CHECK((round == 0) == (norm < 1.0));
    check_close(round ? "clipped SGD step (a)" : "unclipped SGD step (a)", p1, w1, n1, 1e-7, 1e-6);
    check_close(round ? "clipped SGD step (b)" : "unclipped SGD step (b)", p2, w2, n2, 1e-7, 1e-6);
  }
  REQUIRE_OK(dsrs_engine_free(e));
  free(i1);
  free(i2);
  free(w1);
  free(w2);
  free(a1);
  free(a2);
}

/* ---------------------------------------------------------------------------------- */
/* 7. fp16 and bf16.                                                                    */

static void test_fp16(void) {
  printf("fp16: views and the dynamic loss scale\n");
  dsrs_engine *e = engine_from(
      "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}, "
      "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 8, \"hysteresis\": 2, "
      "\"loss_scale_window\": 1000, \"min_loss_scale\": 64}}");
  float init[10];
  for (int i = 0; i < 10; i++) init[i] = (float)(i + 1) * 0.25f;
  reg_f32(e, "p", init, 10, 1);
  REQUIRE_OK(dsrs_engine_finalize(e));
  DLTensor pv, gv;
  memset(&pv, 0, sizeof pv);
  memset(&gv, 0, sizeof gv);
  REQUIRE_OK(dsrs_engine_param(e, 0, &pv));
  REQUIRE_OK(dsrs_engine_grad(e, 0, &gv));
  CHECK(pv.dtype.code == kDLFloat && pv.dtype.bits == 16);
  CHECK(gv.dtype.code == kDLFloat && gv.dtype.bits == 16);
  uint16_t *p = (uint16_t *)pv.data, *g = (uint16_t *)gv.data;
  for (int i = 0; i < 10; i++) CHECK(f16_to_f32(p[i]) == init[i]);
  const float *master = state_f32(e, 0, "master");
  for (int i = 0; i < 10; i++) CHECK(master[i] == init[i]);
  double scale = 0.0;
  REQUIRE_OK(dsrs_engine_loss_scale(e, &scale));
  CHECK(scale == 256.0);

  /* A clean step with gradients scaled by 256: applied, reported scale 256. */
  for (int i = 0; i < 10; i++) g[i] = f32_to_f16((float)(0.5 * 256.0));
  dsrs_step_record r = step(e);
  CHECK(r.applied == 1 && r.loss_scale == 256.0);
  CHECK(fabs(r.grad_norm - 0.5 * sqrt(10.0)) < 1e-6);
  for (int i = 0; i < 10; i++) CHECK(fabs(f16_to_f32(p[i]) - (double)master[i]) <= 1e-3 * fabs(master[i]));

  /* Overflows: hysteresis 2 keeps the scale once, then it halves: 256, 256 -> 128. */
  const double want_after[3] = {256.0, 128.0, 64.0};
  for (int k = 0; k < 3; k++) {
    g[3] = 0x7c00; /* +inf */
    r = step(e);
    REQUIRE_OK(dsrs_engine_loss_scale(e, &scale));
    printf("  overflow %d: skipped %d, carried scale %g, next scale %g\n", k + 1, r.overflow,
           r.loss_scale, scale);
    CHECK(r.overflow == 1 && r.applied == 0 && r.skipped_steps == (uint64_t)(k + 1));
    CHECK(scale == want_after[k]);
  }
  /* At the minimum (64) another overflow is DeepSpeed's error. */
  g[0] = 0x7e00; /* NaN */
  dsrs_step_record untouched;
  memset(&untouched, 0x5a, sizeof untouched);
  dsrs_step_record copy = untouched;
  CHECK_FAILS(dsrs_engine_step(e, NULL, &untouched), DSRS_STATUS_INVALID_STATE,
              "Current loss scale already at minimum");
  CHECK(memcmp(&untouched, &copy, sizeof copy) == 0);
  REQUIRE_OK(dsrs_engine_free(e));

  printf("bf16: views\n");
  e = engine_from(
      "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}, "
      "\"bf16\": {\"enabled\": true}}");
  float fr[3] = {1.0f, 3.0f, 0.1f};
  reg_f32(e, "w", fr, 3, 1);
  reg_f32(e, "frozen", fr, 3, 0);
  REQUIRE_OK(dsrs_engine_finalize(e));
  memset(&pv, 0, sizeof pv);
  memset(&gv, 0, sizeof gv);
  REQUIRE_OK(dsrs_engine_param(e, 0, &pv));
  REQUIRE_OK(dsrs_engine_grad(e, 0, &gv));
  CHECK(pv.dtype.code == kDLBfloat && pv.dtype.bits == 16);
  CHECK(gv.dtype.code == kDLFloat && gv.dtype.bits == 32);
  CHECK(((uint16_t *)pv.data)[0] == 0x3f80 && ((uint16_t *)pv.data)[1] == 0x4040);
  CHECK(((uint16_t *)pv.data)[2] == 0x3dcd); /* 0.1 rounded to nearest even */
  memset(&pv, 0, sizeof pv);
  REQUIRE_OK(dsrs_engine_param(e, 1, &pv)); /* frozen: keeps fp32 */
  CHECK(pv.dtype.code == kDLFloat && pv.dtype.bits == 32 && ((float *)pv.data)[2] == 0.1f);
  REQUIRE_OK(dsrs_engine_loss_scale(e, &scale));
  CHECK(scale == 1.0);
  REQUIRE_OK(dsrs_engine_free(e));
}

/* ---------------------------------------------------------------------------------- */
/* 8. Errors.                                                                           */

static void test_errors(void) {
  printf("errors\n");
  const char *good = "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.1}}}";
  dsrs_engine *const sentinel = (dsrs_engine *)(uintptr_t)0x1234;
  dsrs_engine *out = sentinel;
  CHECK_FAILS(dsrs_engine_new(NULL, NULL, &out), DSRS_STATUS_NULL_ARGUMENT, "config_json");
  CHECK(out == sentinel);
  CHECK_FAILS(dsrs_engine_new(NULL, good, NULL), DSRS_STATUS_NULL_ARGUMENT, "out");
  CHECK_FAILS(dsrs_engine_new(NULL, "{\"train_batch_size\": ", &out), DSRS_STATUS_INVALID_JSON,
              "dsrs_engine_new");
  CHECK_FAILS(dsrs_engine_new(NULL,
                              "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", "
                              "\"params\": {\"lr\": -1}}}",
                              &out),
              DSRS_STATUS_INVALID_CONFIG, "optimizer.params.lr");
  CHECK_FAILS(dsrs_engine_new(NULL, "{\"train_batch_size\": 1}", &out), DSRS_STATUS_INVALID_CONFIG,
              "optimizer");
  CHECK_FAILS(dsrs_engine_new(NULL,
                              "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", "
                              "\"params\": {\"lr\": 0.1}}, \"scheduler\": {\"type\": "
                              "\"WarmupDecayLR\", \"params\": {\"total_num_steps\": \"auto\"}}}",
                              &out),
              DSRS_STATUS_INVALID_CONFIG, "scheduler.params.total_num_steps");
  CHECK_FAILS(dsrs_engine_new_from_file(NULL, "/nonexistent/ds_config.json", &out), DSRS_STATUS_IO,
              "/nonexistent/ds_config.json");
  CHECK(out == sentinel);
  {
    dsrs_accelerator *acc = NULL;
    REQUIRE_OK(dsrs_accelerator_get(&acc));
    dsrs_engine *via_accel = NULL;
    REQUIRE_OK(dsrs_engine_new(acc, good, &via_accel));
    REQUIRE_OK(dsrs_accelerator_free(acc)); /* the engine keeps its accelerator */
    float x[2] = {1, 2};
    reg_f32(via_accel, "x", x, 2, 1);
    REQUIRE_OK(dsrs_engine_finalize(via_accel));
    REQUIRE_OK(dsrs_engine_free(via_accel));
  }

  dsrs_engine *e = engine_from(good);
  float x[4] = {1, 2, 3, 4};
  int64_t s4[1] = {4};
  DLTensor t = host_tensor(x, F32, s4, 1);
  size_t idx = 777;
  DLTensor v;
  memset(&v, 0x11, sizeof v);
  DLTensor v0 = v;
  /* Before finalize. */
  CHECK_FAILS(dsrs_engine_param(e, 0, &v), DSRS_STATUS_INVALID_STATE, "dsrs_engine_param");
  CHECK(memcmp(&v, &v0, sizeof v) == 0);
  CHECK_FAILS(dsrs_engine_step(e, NULL, NULL), DSRS_STATUS_INVALID_STATE, "finalize");
  CHECK_FAILS(dsrs_engine_register_param(e, NULL, &t, 1, &idx), DSRS_STATUS_NULL_ARGUMENT, "name");
  CHECK_FAILS(dsrs_engine_register_param(e, "x", NULL, 1, &idx), DSRS_STATUS_NULL_ARGUMENT, "initial");
  CHECK(idx == 777);
  int32_t ints[4] = {1, 2, 3, 4};
  DLTensor ti = host_tensor(ints, (DLDataType){kDLInt, 32, 1}, s4, 1);
  dsrs_status st = dsrs_engine_register_param(e, "ints", &ti, 1, &idx);
  printf("  register an int32 tensor -> %s | %s\n", status_name(st), last_error());
  CHECK(st == DSRS_STATUS_UNSUPPORTED || st == DSRS_STATUS_INVALID_ARGUMENT);
  CHECK(idx == 777);
  REQUIRE_OK(dsrs_engine_register_param(e, "x", &t, 1, &idx));
  CHECK(idx == 0);
  idx = 777;
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &t, 1, &idx), DSRS_STATUS_INVALID_ARGUMENT,
              "already registered");
  CHECK(idx == 777);
  REQUIRE_OK(dsrs_engine_register_param(e, "frozen", &t, 0, NULL));
  REQUIRE_OK(dsrs_engine_finalize(e));
  /* After finalize. */
  CHECK_FAILS(dsrs_engine_register_param(e, "late", &t, 1, &idx), DSRS_STATUS_INVALID_STATE,
              "finalize");
  CHECK_FAILS(dsrs_engine_finalize(e), DSRS_STATUS_INVALID_STATE, "dsrs_engine_finalize");
  CHECK_FAILS(dsrs_engine_param_index(e, "nope", &idx), DSRS_STATUS_INVALID_ARGUMENT, "nope");
  CHECK(idx == 777);
  CHECK_FAILS(dsrs_engine_param(e, 2, &v), DSRS_STATUS_OUT_OF_RANGE, "2");
  CHECK_FAILS(dsrs_engine_param(e, 0, NULL), DSRS_STATUS_NULL_ARGUMENT, "out");
  CHECK_FAILS(dsrs_engine_grad(e, 1, &v), DSRS_STATUS_INVALID_ARGUMENT, "frozen");
  CHECK(memcmp(&v, &v0, sizeof v) == 0);
  CHECK_FAILS(dsrs_engine_optimizer_state(e, 0, "bogus", &v), DSRS_STATUS_INVALID_ARGUMENT, "bogus");
  CHECK_FAILS(dsrs_engine_optimizer_state(e, 0, "momentum_buffer", &v), DSRS_STATUS_INVALID_ARGUMENT,
              "momentum_buffer");
  CHECK_FAILS(dsrs_engine_optimizer_state(e, 0, "master", &v), DSRS_STATUS_INVALID_ARGUMENT, "master");
  CHECK(memcmp(&v, &v0, sizeof v) == 0);
  char small[3];
  size_t needed = 0;
  CHECK_FAILS(dsrs_engine_param_name(e, 1, small, sizeof small, &needed),
              DSRS_STATUS_BUFFER_TOO_SMALL, NULL);
  CHECK(needed == strlen("frozen") + 1);
  double lr = 0.0;
  CHECK_FAILS(dsrs_engine_set_lr(e, -1.0), DSRS_STATUS_OUT_OF_RANGE, "lr");
  CHECK_FAILS(dsrs_engine_set_lr(e, NAN), DSRS_STATUS_OUT_OF_RANGE, "lr");
  REQUIRE_OK(dsrs_engine_get_lr(e, &lr));
  CHECK(lr == 0.1);
  REQUIRE_OK(dsrs_engine_set_lr(e, 0.25));
  REQUIRE_OK(dsrs_engine_get_lr(e, &lr));
  CHECK(lr == 0.25);
  dsrs_step_record r = step(e);
  CHECK(r.lr == 0.25);
  CHECK_FAILS(dsrs_engine_loss_scale(e, NULL), DSRS_STATUS_NULL_ARGUMENT, "out");

  /* Handles. */
  REQUIRE_OK(dsrs_engine_free(e));
  size_t n = 5;
  CHECK_FAILS(dsrs_engine_num_params(e, &n), DSRS_STATUS_STALE_HANDLE, "dsrs_engine_num_params");
  CHECK(n == 5);
  CHECK_FAILS(dsrs_engine_step(e, NULL, NULL), DSRS_STATUS_STALE_HANDLE, NULL);
  CHECK_FAILS(dsrs_engine_free(e), DSRS_STATUS_STALE_HANDLE, "dsrs_engine_free");
  dsrs_accelerator *acc = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&acc));
  CHECK_FAILS(dsrs_engine_num_params((const dsrs_engine *)(void *)acc, &n),
              DSRS_STATUS_WRONG_HANDLE_TYPE, "accelerator");
  CHECK_FAILS(dsrs_engine_free((dsrs_engine *)(void *)acc), DSRS_STATUS_WRONG_HANDLE_TYPE, NULL);
  REQUIRE_OK(dsrs_accelerator_free(acc));
  int on_stack = 0;
  CHECK_FAILS(dsrs_engine_num_params((const dsrs_engine *)(void *)&on_stack, &n),
              DSRS_STATUS_INVALID_HANDLE, NULL);
  CHECK(n == 5);
}

/* ---------------------------------------------------------------------------------- */
/* 9. Config functions.                                                                 */

static void test_config_functions(void) {
  printf("dsrs_config_*\n");
  const char *doc =
      "// a comment\n{\"train_batch_size\": 64, \"train_micro_batch_size_per_gpu\": 8,\n"
      " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3, \"betas\": [\"auto\", 0.999],}},\n"
      " \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"total_num_steps\": \"auto\"}},}";
  char *paths = NULL;
  READ_STRING(paths, dsrs_config_auto_paths(doc, buf_, len_, &needed_));
  printf("  auto paths: %s\n", paths);
  CHECK(strstr(paths, "\"optimizer.params.betas[0]\"") != NULL);
  CHECK(strstr(paths, "\"scheduler.params.total_num_steps\"") != NULL);
  CHECK(paths[0] == '[');
  free(paths);

  char *filled = NULL;
  READ_STRING(filled, dsrs_config_fill_auto(doc, "scheduler.params.total_num_steps", "500", buf_,
                                            len_, &needed_));
  char *filled2 = NULL;
  READ_STRING(filled2, dsrs_config_fill_auto(filled, "optimizer.params.betas[0]", "0.9", buf_, len_,
                                             &needed_));
  char *rest = NULL;
  READ_STRING(rest, dsrs_config_auto_paths(filled2, buf_, len_, &needed_));
  CHECK(strcmp(rest, "[]") == 0);
  free(rest);

  char *resolved = NULL;
  READ_STRING(resolved, dsrs_config_check(filled2, 2, buf_, len_, &needed_));
  printf("  resolved (world 2): %.200s...\n", resolved);
  CHECK(strstr(resolved, "\"gradient_accumulation_steps\":4") != NULL ||
        strstr(resolved, "\"gradient_accumulation_steps\": 4") != NULL);
  free(resolved);
  dsrs_engine *e = engine_from(filled2);
  uint64_t gas = 0;
  REQUIRE_OK(dsrs_engine_batch_sizes(e, NULL, NULL, &gas));
  CHECK(gas == 8);
  REQUIRE_OK(dsrs_engine_free(e));

  size_t needed = 12345;
  CHECK_FAILS(dsrs_config_fill_auto(filled, "optimizer.params.lr", "0.1", NULL, 0, &needed),
              DSRS_STATUS_INVALID_CONFIG, "optimizer.params.lr");
  CHECK_FAILS(dsrs_config_fill_auto(filled, "optimizer.params.betas[0]", "not json", NULL, 0, &needed),
              DSRS_STATUS_INVALID_JSON, NULL);
  CHECK(needed == 12345);
  free(filled);
  free(filled2);

  /* Every error at once, one "path: message" per line. */
  CHECK_FAILS(dsrs_config_check("{\"train_batch_size\": \"many\", \"optimizer\": {\"type\": \"AdamW\", "
                                "\"params\": {\"lr\": -0.5}}, \"gradient_clipping\": -1}",
                                1, NULL, 0, &needed),
              DSRS_STATUS_INVALID_CONFIG, "train_batch_size");
  const char *msg = last_error();
  CHECK(strstr(msg, "optimizer.params.lr") != NULL);
  CHECK(strstr(msg, "gradient_clipping") != NULL);
  CHECK(strchr(msg, '\n') != NULL);
  CHECK(needed == 12345);
  CHECK_FAILS(dsrs_config_check("{\"train_batch_size\": 8,,}", 1, NULL, 0, &needed),
              DSRS_STATUS_INVALID_JSON, NULL);
  CHECK_FAILS(dsrs_config_check(NULL, 1, NULL, 0, &needed), DSRS_STATUS_NULL_ARGUMENT, "config_json");
  /* Batch sizes that do not divide. */
  CHECK_FAILS(dsrs_config_check("{\"train_batch_size\": 10, \"train_micro_batch_size_per_gpu\": 4, "
                                "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1}}}",
                                1, NULL, 0, &needed),
              DSRS_STATUS_INVALID_CONFIG, "train_batch_size");
}

/* ---------------------------------------------------------------------------------- */
/* 10. Misuse.                                                                          */

/* CHECK_UNTOUCHED(x, sentinel): x still holds the bytes of sentinel (same type). */
#define CHECK_UNTOUCHED(x, sentinel) CHECK(memcmp(&(x), &(sentinel), sizeof(x)) == 0)

static void test_misuse(void) {
  printf("misuse\n");
  const char *good = "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.1}}}";
  dsrs_accelerator *acc = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&acc));
  dsrs_engine *const sentinel = (dsrs_engine *)(uintptr_t)0x1234;
  dsrs_engine *out = sentinel;

  /* Creation: NULL arguments, a file of invalid JSON. */
  CHECK_FAILS(dsrs_engine_new(acc, NULL, &out), DSRS_STATUS_NULL_ARGUMENT, "'config_json'");
  CHECK_FAILS(dsrs_engine_new(acc, good, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK_FAILS(dsrs_engine_new_from_file(acc, NULL, &out), DSRS_STATUS_NULL_ARGUMENT, "'path'");
  CHECK_FAILS(dsrs_engine_new_from_file(NULL, NULL, &out), DSRS_STATUS_NULL_ARGUMENT, "'path'");
  CHECK(out == sentinel);
  char *dir = test_tmpdir_new("dsrs_engine_test");
  size_t plen = strlen(dir) + 32;
  char *path = (char *)xmalloc(plen);
  snprintf(path, plen, "%s/good_config.json", dir);
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs(good, f);
  REQUIRE(fclose(f) == 0);
  CHECK_FAILS(dsrs_engine_new_from_file(acc, path, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  snprintf(path, plen, "%s/broken_config.json", dir);
  f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs("{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\",,}", f);
  REQUIRE(fclose(f) == 0);
  CHECK_FAILS(dsrs_engine_new_from_file(acc, path, &out), DSRS_STATUS_INVALID_JSON,
              "broken_config.json");
  CHECK(strncmp(last_error(), "dsrs_engine_new_from_file: ", 27) == 0);
  CHECK(out == sentinel);
  test_tmpdir_remove(dir);
  free(dir);
  free(path);

  /* Registration. */
  dsrs_engine *e = NULL;
  REQUIRE_OK(dsrs_engine_new(acc, good, &e));
  float x[4] = {1, 2, 3, 4};
  int64_t s4[1] = {4};
  DLTensor t = host_tensor(x, F32, s4, 1);
  const size_t idx0 = (size_t)0x5e5e5e5e;
  size_t idx = idx0;
  CHECK_FAILS(dsrs_engine_register_param(e, NULL, &t, 1, &idx), DSRS_STATUS_NULL_ARGUMENT, "'name'");
  CHECK_FAILS(dsrs_engine_register_param(e, "x", NULL, 1, &idx), DSRS_STATUS_NULL_ARGUMENT,
              "'initial'");
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &t, 2, &idx), DSRS_STATUS_OUT_OF_RANGE, "'trainable'");
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &t, -1, &idx), DSRS_STATUS_OUT_OF_RANGE,
              "'trainable'");
  DLTensor on_cuda = t;
  on_cuda.device.device_type = kDLCUDA;
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &on_cuda, 1, &idx), DSRS_STATUS_INVALID_ARGUMENT,
              "'initial'");
  int64_t every_other[1] = {2}, s2[1] = {2};
  DLTensor strided = t;
  strided.shape = s2;
  strided.strides = every_other;
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &strided, 1, &idx), DSRS_STATUS_INVALID_ARGUMENT,
              "contiguous");
  DLTensor no_data = t;
  no_data.data = NULL;
  CHECK_FAILS(dsrs_engine_register_param(e, "x", &no_data, 1, &idx), DSRS_STATUS_INVALID_ARGUMENT,
              "NULL");
  CHECK(idx == idx0);
  size_t n = idx0;
  REQUIRE_OK(dsrs_engine_num_params(e, &n));
  CHECK(n == 0); /* none of the failures registered anything */
  REQUIRE_OK(dsrs_engine_register_param(e, "x", &t, 1, &idx));
  CHECK(idx == 0);
  /* An empty tensor may have NULL data (DLPack allows it). */
  int64_t s0[1] = {0};
  DLTensor empty = host_tensor(NULL, F32, s0, 1);
  CHECK_OK(dsrs_engine_register_param(e, "empty", &empty, 1, &idx));
  CHECK(idx == 1);
  REQUIRE_OK(dsrs_engine_finalize(e));

  /* NULL out-parameters and names. */
  n = idx0;
  CHECK_FAILS(dsrs_engine_num_params(e, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  idx = idx0;
  CHECK_FAILS(dsrs_engine_param_index(e, NULL, &idx), DSRS_STATUS_NULL_ARGUMENT, "'name'");
  CHECK_FAILS(dsrs_engine_param_index(e, "x", NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK(idx == idx0);
  DLTensor v;
  memset(&v, 0x5e, sizeof v);
  const DLTensor v0 = v;
  CHECK_FAILS(dsrs_engine_param(e, 0, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK_FAILS(dsrs_engine_grad(e, 0, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK_FAILS(dsrs_engine_optimizer_state(e, 0, NULL, &v), DSRS_STATUS_NULL_ARGUMENT, "'state'");
  CHECK_FAILS(dsrs_engine_optimizer_state(e, 0, "exp_avg", NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK_UNTOUCHED(v, v0);
  CHECK_FAILS(dsrs_engine_get_lr(e, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  CHECK_FAILS(dsrs_engine_loss_scale(e, NULL), DSRS_STATUS_NULL_ARGUMENT, "'out'");
  size_t needed = idx0;
  CHECK_FAILS(dsrs_engine_config_json(e, NULL, 16, &needed), DSRS_STATUS_NULL_ARGUMENT, "'buf'");
  CHECK_FAILS(dsrs_engine_stats_json(e, NULL, 16, &needed), DSRS_STATUS_NULL_ARGUMENT, "'buf'");
  CHECK_FAILS(dsrs_engine_param_name(e, 0, NULL, 16, &needed), DSRS_STATUS_NULL_ARGUMENT, "'buf'");
  CHECK(needed == idx0);

  /* Indices past the end (2 parameters). */
  char name[32];
  memset(name, 0x5e, sizeof name);
  const size_t past[2] = {2, SIZE_MAX};
  for (int i = 0; i < 2; i++) {
    CHECK_FAILS(dsrs_engine_param(e, past[i], &v), DSRS_STATUS_OUT_OF_RANGE, "out of range");
    CHECK_FAILS(dsrs_engine_grad(e, past[i], &v), DSRS_STATUS_OUT_OF_RANGE, "out of range");
    CHECK_FAILS(dsrs_engine_optimizer_state(e, past[i], "exp_avg", &v), DSRS_STATUS_OUT_OF_RANGE,
                "out of range");
    CHECK_FAILS(dsrs_engine_param_name(e, past[i], name, sizeof name, &needed),
                DSRS_STATUS_OUT_OF_RANGE, "out of range");
  }
  CHECK_UNTOUCHED(v, v0);
  CHECK(needed == idx0);
  CHECK(name[0] == 0x5e && name[sizeof name - 1] == 0x5e);

  /* The learning rate: finite and >= 0. */
  CHECK_FAILS(dsrs_engine_set_lr(e, INFINITY), DSRS_STATUS_OUT_OF_RANGE, "'lr'");
  CHECK_FAILS(dsrs_engine_set_lr(e, -INFINITY), DSRS_STATUS_OUT_OF_RANGE, "'lr'");
  CHECK_FAILS(dsrs_engine_set_lr(e, NAN), DSRS_STATUS_OUT_OF_RANGE, "'lr'");
  double lr = -1.0;
  REQUIRE_OK(dsrs_engine_get_lr(e, &lr));
  CHECK(lr == 0.1);

  /* The step's stream: its accelerator's streams work, a freed stream or another
   * instance's does not, and a failed step counts nothing. */
  dsrs_stream *mine = NULL, *dflt = NULL, *freed = NULL, *foreign = NULL;
  dsrs_accelerator *other = NULL;
  REQUIRE_OK(dsrs_stream_new(acc, &mine));
  REQUIRE_OK(dsrs_accelerator_default_stream(acc, &dflt));
  REQUIRE_OK(dsrs_stream_new(acc, &freed));
  REQUIRE_OK(dsrs_stream_free(freed));
  REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &other));
  REQUIRE_OK(dsrs_stream_new(other, &foreign));
  dsrs_step_record r;
  memset(&r, 0, sizeof r);
  CHECK_OK(dsrs_engine_step(e, mine, &r));
  CHECK(r.global_step == 1 && r.applied == 1);
  CHECK_OK(dsrs_engine_step(e, dflt, &r));
  CHECK(r.global_step == 2 && r.applied == 1);
  dsrs_step_record r0;
  memset(&r0, 0x5e, sizeof r0);
  r = r0;
  CHECK_FAILS(dsrs_engine_step(e, freed, &r), DSRS_STATUS_STALE_HANDLE, "'stream'");
  CHECK_FAILS(dsrs_engine_step(e, foreign, &r), DSRS_STATUS_INVALID_ARGUMENT, "'stream'");
  CHECK(strstr(last_error(), "another accelerator") != NULL);
  CHECK_FAILS(dsrs_engine_step(e, (dsrs_stream *)(void *)other, &r), DSRS_STATUS_WRONG_HANDLE_TYPE,
              "'stream'");
  CHECK_UNTOUCHED(r, r0);
  CHECK_OK(dsrs_engine_step(e, NULL, &r));
  CHECK(r.global_step == 3 && r.micro_step == 3); /* the failures counted nothing */
  CHECK_OK(dsrs_stream_free(foreign));
  CHECK_OK(dsrs_accelerator_free(other));
  CHECK_OK(dsrs_stream_free(dflt));
  CHECK_OK(dsrs_stream_free(mine));
  REQUIRE_OK(dsrs_engine_free(e));
  REQUIRE_OK(dsrs_accelerator_free(acc));

  /* The config helpers. */
  const char *with_auto =
      "{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\"}}}";
  char text[16];
  memset(text, 0x5e, sizeof text);
  needed = idx0;
  CHECK_FAILS(dsrs_config_auto_paths(NULL, text, sizeof text, &needed), DSRS_STATUS_NULL_ARGUMENT,
              "'config_json'");
  CHECK_FAILS(dsrs_config_auto_paths("{\"train_batch_size\": ", text, sizeof text, &needed),
              DSRS_STATUS_INVALID_JSON, "config_json");
  CHECK_FAILS(dsrs_config_fill_auto(NULL, "optimizer.params.lr", "0.1", text, sizeof text, &needed),
              DSRS_STATUS_NULL_ARGUMENT, "'config_json'");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, NULL, "0.1", text, sizeof text, &needed),
              DSRS_STATUS_NULL_ARGUMENT, "'path'");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, "optimizer.params.lr", NULL, text, sizeof text, &needed),
              DSRS_STATUS_NULL_ARGUMENT, "'value_json'");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, "optimizer.params.no_such_key", "0.1", text,
                                    sizeof text, &needed),
              DSRS_STATUS_INVALID_CONFIG, "optimizer.params.no_such_key");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, "scheduler.params.warmup_num_steps", "10", text,
                                    sizeof text, &needed),
              DSRS_STATUS_INVALID_CONFIG, "scheduler.params.warmup_num_steps");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, "train_batch_size", "16", text, sizeof text, &needed),
              DSRS_STATUS_INVALID_CONFIG, "not \"auto\"");
  CHECK_FAILS(dsrs_config_fill_auto(with_auto, "optimizer.type", "\"Adam\"", text, sizeof text, &needed),
              DSRS_STATUS_INVALID_CONFIG, "optimizer.type");
  CHECK(needed == idx0);
  CHECK(text[0] == 0x5e && text[sizeof text - 1] == 0x5e);
  /* world_size 0 is taken as 1. */
  const char *doc = "{\"train_batch_size\": 8, \"train_micro_batch_size_per_gpu\": 2, "
                    "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.1}}}";
  char *one = NULL, *zero = NULL;
  READ_STRING(one, dsrs_config_check(doc, 1, buf_, len_, &needed_));
  READ_STRING(zero, dsrs_config_check(doc, 0, buf_, len_, &needed_));
  CHECK(strcmp(one, zero) == 0);
  CHECK(strstr(zero, "\"gradient_accumulation_steps\":4") != NULL ||
        strstr(zero, "\"gradient_accumulation_steps\": 4") != NULL);
  free(one);
  free(zero);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const uint64_t seed = test_seed_from_env_or_time();
  printf("engine_test: seed %" PRIu64 " (DSRS_TEST_SEED=%" PRIu64 " reproduces this run)\n", seed,
         seed);
  test_rng_seed(seed);
  test_lifecycle();
  test_zero_copy();
  test_adamw();
  test_accumulation();
  test_overflow();
  test_clipping();
  test_fp16();
  test_errors();
  test_config_functions();
  test_misuse();
  return check_exit_code("engine_test");
}
