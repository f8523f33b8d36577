/*
 * ops_test.c — the op registry and JIT through the C ABI (dsrs_op_*).
 *
 *  1. a custom CPU op defined at run time (sources, a header, a define), built, loaded and
 *     called on random data against a plain C computation; a native build may use the
 *     instruction set its DSRS_SIMD_LEVEL announces; a second load in the same process
 *     (same key, same code); debug and portable builds (other keys); a redefinition (new
 *     key, new code; the old code stays loaded); dsrs_op_free makes the handle stale while
 *     function pointers stay valid;
 *  2. the built-in cpu_adam op: 3 Adam and 3 AdamW steps against a long-double reference of
 *     DeepSpeed's formula; the kernel's own argument checks; the prebuilt and JIT builds
 *     agree bit for bit when both exist (a library built with DSRS_BUILD_OPS=1);
 *  3. a compile error: DSRS_STATUS_BUILD_FAILED quoting the compiler, the command, the log;
 *  4. unknown ops, bad specs and options, a cache directory that others can write;
 *  5. missing symbols, dsrs_op_kernel / dsrs_op_image on a CPU op;
 *  6. dsrs_op_list_json and dsrs_op_cache_dir.
 *
 * Every load uses a private cache under a mkdtemp() directory (passed as "cache_dir"), which is
 * removed at the end when every check passed (kept, and its path printed, otherwise). Data
 * are random: the seed is printed, DSRS_TEST_SEED=<seed> reproduces a run.
 */
#include <math.h>
#include <stdarg.h>

#include "check.h"
#include "tmpdir.h"
#include "dsrs_cpu_adam.h" /* kernels/include: the cpu_adam op's real signature and config */

/* ---------------------------------------------------------------------------------- */
/* Helpers.                                                                             */

/* printf into a new malloc'd string. */
static char *xasprintf(const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  REQUIRE(n >= 0);
  char *s = (char *)malloc((size_t)n + 1);
  REQUIRE(s != NULL);
  vsnprintf(s, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

/* `s` as a JSON string literal, quotes included (malloc'd). */
static char *json_quote(const char *s) {
  size_t cap = 6 * strlen(s) + 3, n = 0; /* worst case: every byte as \u00XX */
  char *out = (char *)malloc(cap);
  REQUIRE(out != NULL);
  out[n++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
      case '"': out[n++] = '\\'; out[n++] = '"'; break;
      case '\\': out[n++] = '\\'; out[n++] = '\\'; break;
      case '\n': out[n++] = '\\'; out[n++] = 'n'; break;
      case '\t': out[n++] = '\\'; out[n++] = 't'; break;
      default:
        if (*p < 0x20) {
          n += (size_t)snprintf(out + n, 7, "\\u%04x", *p);
        } else {
          out[n++] = (char)*p;
        }
    }
  }
  out[n++] = '"';
  out[n] = '\0';
  return out;
}

/* The value of the first `"key":"..."` in a compact JSON text (malloc'd; NULL if absent).
 * Good enough for the library's serde_json output, whose strings here hold no escapes. */
static char *json_string_field(const char *json, const char *key) {
  char pattern[128];
  snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
  const char *p = strstr(json, pattern);
  if (p == NULL) return NULL;
  p += strlen(pattern);
  const char *end = strchr(p, '"');
  if (end == NULL) return NULL;
  char *v = (char *)malloc((size_t)(end - p) + 1);
  REQUIRE(v != NULL);
  memcpy(v, p, (size_t)(end - p));
  v[end - p] = '\0';
  return v;
}

/* Whether the first `"key":"..."` of `json` is exactly `want`. */
static int json_field_is(const char *json, const char *key, const char *want) {
  char *v = json_string_field(json, key);
  int ok = v != NULL && strcmp(v, want) == 0;
  if (!ok) fprintf(stderr, "  \"%s\" is %s%s%s, expected \"%s\"\n", key, v ? "\"" : "", v ? v : "absent", v ? "\"" : "", want);
  free(v);
  return ok;
}

/* A uniform double in [-1, 1). */
static double rnd(void) { return (double)(test_rng_next() >> 11) * 0x1.0p-52 - 1.0; }

/* A JSON description of the op (two-call output), malloc'd. */
static char *op_info(const dsrs_op *op) {
  char *s = NULL;
  READ_STRING(s, dsrs_op_info_json(op, buf_, len_, &needed_));
  return s;
}

/* Object pointers returned by dsrs_op_symbol, as function pointers: ISO C has no cast
 * between the two, POSIX guarantees they have the same representation (dlsym). */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function and object pointers differ");
#define AS_FN(fn, ptr) memcpy(&(fn), &(ptr), sizeof(fn))

static void *symbol_or_die(const dsrs_op *op, const char *name) {
  void *p = NULL;
  REQUIRE_OK(dsrs_op_symbol(op, name, &p));
  REQUIRE(p != NULL);
  return p;
}

/* One expected failure: the status (`want`, or `alt`), dsrs_last_error_status, and
 * substrings of the message. */
static void expect_failure(int line, const char *what, dsrs_status got, dsrs_status want,
                           dsrs_status alt, const char *const *needles) {
  const char *msg = last_error();
  printf("  %-52s -> %s | %.300s%s\n", what, status_name(got), msg, strlen(msg) > 300 ? "..." : "");
  if (got != want && got != alt) {
    fprintf(stderr, "ops_test.c:%d: %s: expected %s, got %s\n", line, what, status_name(want),
            status_name(got));
    check_failures_++;
    return;
  }
  dsrs_status recorded = DSRS_STATUS_OK;
  CHECK_OK(dsrs_last_error_status(&recorded));
  if (recorded != got) {
    fprintf(stderr, "ops_test.c:%d: %s: dsrs_last_error_status is %s\n", line, what,
            status_name(recorded));
    check_failures_++;
  }
  for (const char *const *n = needles; *n != NULL; n++) {
    if (strstr(msg, *n) == NULL) {
      fprintf(stderr, "ops_test.c:%d: %s: the message lacks \"%s\":\n%s\n", line, what, *n, msg);
      check_failures_++;
    }
  }
}

/* EXPECT_FAILURE(description, call, expected status, "needle", ...) */
#define EXPECT_FAILURE(what, call, want, ...)                                              \
  expect_failure(__LINE__, what, (call), want, want, (const char *const[]){__VA_ARGS__, NULL})

/* A spec that is valid JSON but not a valid op definition: dsrs_op_define documents both
 * DSRS_STATUS_INVALID_JSON and DSRS_STATUS_INVALID_CONFIG; either is accepted here. */
#define EXPECT_SCHEMA_FAILURE(what, call, ...)                                             \
  expect_failure(__LINE__, what, (call), DSRS_STATUS_INVALID_CONFIG, DSRS_STATUS_INVALID_JSON, \
                 (const char *const[]){__VA_ARGS__, NULL})

/* The test's private cache directories. */
static char *g_root;    /* the mkdtemp() directory */
static char *g_cache;   /* <root>/cache: the cache every load below uses */
static char *g_options; /* {"cache_dir": <g_cache>} */

/* {"cache_dir": <g_cache>, <extra>} (malloc'd). */
static char *options_with(const char *extra) {
  char *q = json_quote(g_cache);
  char *o = xasprintf("{\"cache_dir\": %s, %s}", q, extra);
  free(q);
  return o;
}

/* ---------------------------------------------------------------------------------- */
/* 1. A custom CPU op defined at run time.                                               */

static const char LINALG_SOURCE[] =
    "// dsrs_test_linalg: defined at run time by tests/c/ops_test.c\n"
    "#include <stdint.h>\n"
    "#include \"dsrs_op.h\"\n"
    "#include \"dsrs_test_linalg.h\"\n"
    "\n"
    "DSRS_OP_EXPORT double dsrs_test_dot(const double *a, const double *b, uint64_t n) {\n"
    "  double s = 0.0;\n"
    "  for (uint64_t i = 0; i < n; i++) s += a[i] * b[i];\n"
    "  return s;\n"
    "}\n"
    "\n"
    "DSRS_OP_EXPORT void dsrs_test_axpy(double alpha, const double *x, double *y, uint64_t n) {\n"
    "  for (uint64_t i = 0; i < n; i++) y[i] = alpha * x[i] + y[i];\n"
    "}\n"
    "\n"
    "DSRS_OP_EXPORT int dsrs_test_magic(void) { return DSRS_TEST_MAGIC * DSRS_TEST_SCALE; }\n"
    "\n"
    "DSRS_OP_EXPORT const char *dsrs_test_simd_level(void) { return DSRS_SIMD_LEVEL; }\n"
    "\n"
    "// The widest instruction set the compiler was allowed to use (-march).\n"
    "DSRS_OP_EXPORT const char *dsrs_test_compiler_isa(void) {\n"
    "#if defined(__AVX512F__)\n"
    "  return \"avx512\";\n"
    "#elif defined(__AVX2__)\n"
    "  return \"avx2\";\n"
    "#elif defined(__ARM_NEON)\n"
    "  return \"neon\";\n"
    "#else\n"
    "  return \"scalar\";\n"
    "#endif\n"
    "}\n"
    "\n"
    "// extern \"C\" but not DSRS_OP_EXPORT: hidden (-fvisibility=hidden), so not found.\n"
    "extern \"C\" int dsrs_test_hidden(void) { return 7; }\n";

static const char LINALG_HEADER[] = "#define DSRS_TEST_MAGIC 42\n";

/* The op's spec, with DSRS_TEST_SCALE = `scale`. */
static char *linalg_spec(int scale) {
  char *src = json_quote(LINALG_SOURCE);
  char *hdr = json_quote(LINALG_HEADER);
  char *spec = xasprintf(
      "{\"name\": \"dsrs_test_linalg\", \"kind\": \"cpu\","
      " \"description\": \"ops_test.c: dot, axpy\","
      " \"sources\": [{\"name\": \"dsrs_test_linalg.cpp\", \"text\": %s}],"
      " \"headers\": [{\"name\": \"dsrs_test_linalg.h\", \"text\": %s}],"
      " \"defines\": {\"DSRS_TEST_SCALE\": \"%d\"},"
      " \"flags\": [\"-Wall\"],"
      " \"symbols\": [\"dsrs_test_dot\", \"dsrs_test_axpy\", \"dsrs_test_magic\"]}",
      src, hdr, scale);
  free(src);
  free(hdr);
  return spec;
}

typedef double (*dot_fn)(const double *, const double *, uint64_t);
typedef void (*axpy_fn)(double, const double *, double *, uint64_t);
typedef int (*magic_fn)(void);
typedef const char *(*level_fn)(void);

/* Checks dot and axpy on random data of length n against plain C. */
static void check_linalg(dot_fn dot, axpy_fn axpy, uint64_t n) {
  double *a = (double *)malloc(n * sizeof *a), *b = (double *)malloc(n * sizeof *b);
  double *y = (double *)malloc(n * sizeof *y), *y_ref = (double *)malloc(n * sizeof *y_ref);
  REQUIRE(a && b && y && y_ref);
  double abs_sum = 0, ref = 0;
  for (uint64_t i = 0; i < n; i++) {
    a[i] = rnd() * 10;
    b[i] = rnd();
    y[i] = y_ref[i] = rnd();
  }
  for (uint64_t i = 0; i < n; i++) {
    ref += a[i] * b[i];
    abs_sum += fabs(a[i] * b[i]);
  }
  double got = dot(a, b, n);
  /* The op may contract to FMA (-march=native): allow n ulps of the absolute sum. */
  double tol = (double)(n + 1) * 0x1.0p-52 * abs_sum;
  if (!(fabs(got - ref) <= tol)) {
    fprintf(stderr, "dsrs_test_dot(n=%" PRIu64 ") = %.17g, reference %.17g (tolerance %g)\n", n,
            got, ref, tol);
    check_failures_++;
  }
  double alpha = rnd() * 4;
  axpy(alpha, a, y, n);
  uint64_t bad = 0;
  for (uint64_t i = 0; i < n; i++) {
    double r = alpha * a[i] + y_ref[i];
    if (!(fabs(y[i] - r) <= 4 * 0x1.0p-52 * (fabs(alpha * a[i]) + fabs(y_ref[i])))) bad++;
  }
  if (bad != 0) {
    fprintf(stderr, "dsrs_test_axpy: %" PRIu64 " of %" PRIu64 " elements differ\n", bad, n);
    check_failures_++;
  }
  free(a);
  free(b);
  free(y);
  free(y_ref);
}

static void test_custom_op(void) {
  printf("-- 1. a custom CPU op defined at run time\n");
  char *spec = linalg_spec(3);
  REQUIRE_OK(dsrs_op_define(spec));
  free(spec);

  dsrs_op *op = NULL;
  REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", g_options, &op));
  REQUIRE(op != NULL);
  char *info = op_info(op);
  printf("  info: %s\n", info);
  CHECK(json_field_is(info, "origin", "built")); /* a fresh private cache */
  CHECK(json_field_is(info, "name", "dsrs_test_linalg"));
  CHECK(json_field_is(info, "kind", "cpu"));
  CHECK(strstr(info, "\"dsrs_test_axpy\"") != NULL); /* "symbols" */
  char *key = json_string_field(info, "key");
  REQUIRE(key != NULL);
  CHECK(strlen(key) >= 16);
  char *dir = json_string_field(info, "dir");
  REQUIRE(dir != NULL);
  /* The build lives in the cache_dir of the options, not in $DSRS_CACHE_DIR. */
  CHECK(strncmp(dir, g_cache, strlen(g_cache)) == 0 && dir[strlen(g_cache)] == '/');
  struct stat st;
  CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));

  void *p_dot = symbol_or_die(op, "dsrs_test_dot");
  void *p_axpy = symbol_or_die(op, "dsrs_test_axpy");
  void *p_magic = symbol_or_die(op, "dsrs_test_magic");
  /* Exported but not declared in "symbols": found all the same. */
  void *p_level = symbol_or_die(op, "dsrs_test_simd_level");
  dot_fn dot;
  axpy_fn axpy;
  magic_fn magic;
  level_fn level;
  AS_FN(dot, p_dot);
  AS_FN(axpy, p_axpy);
  AS_FN(magic, p_magic);
  AS_FN(level, p_level);
  check_linalg(dot, axpy, 1 + test_rng_next() % 4096);
  check_linalg(dot, axpy, 1);
  CHECK(dot(NULL, NULL, 0) == 0.0);
  CHECK(magic() == 42 * 3); /* the header and the define reached the compiler */
  const char *simd = level();
  printf("  DSRS_SIMD_LEVEL = %s\n", simd);
  CHECK(strcmp(simd, "avx512") == 0 || strcmp(simd, "avx2") == 0 || strcmp(simd, "neon") == 0 ||
        strcmp(simd, "scalar") == 0);
  {
    char *target = json_string_field(info, "target"); /* "native:<simd>" */
    CHECK(target != NULL && strchr(target, ':') != NULL && strcmp(strchr(target, ':') + 1, simd) == 0);
    free(target);
    /* Not portable: built for this CPU (-march=native), so the compiler itself may use the
     * instruction set that DSRS_SIMD_LEVEL announces. */
    level_fn isa;
    void *pi = symbol_or_die(op, "dsrs_test_compiler_isa");
    AS_FN(isa, pi);
    printf("  instruction set enabled in the compiler: %s\n", isa());
    if (strcmp(isa(), simd) != 0) {
      fprintf(stderr, "ops_test.c:%d: a native build announces DSRS_SIMD_LEVEL \"%s\" but the "
                      "compiler's widest enabled instruction set was \"%s\"\n",
              __LINE__, simd, isa());
      check_failures_++;
    }
  }

  /* Loading again in this process: a new handle on the same build and code. */
  dsrs_op *again = NULL;
  REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", g_options, &again));
  CHECK(again != op);
  char *info2 = op_info(again);
  char *origin2 = json_string_field(info2, "origin");
  printf("  second load: origin %s\n", origin2 ? origin2 : "?");
  CHECK(origin2 != NULL && (strcmp(origin2, "built") == 0 || strcmp(origin2, "cached") == 0));
  CHECK(json_field_is(info2, "key", key));
  CHECK(symbol_or_die(again, "dsrs_test_dot") == p_dot);
  free(origin2);
  free(info2);

  /* Other build options (debug) are another key, hence another build. */
  {
    char *debug_options = options_with("\"debug\": true");
    dsrs_op *dbg = NULL;
    REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", debug_options, &dbg));
    char *info3 = op_info(dbg);
    char *key3 = json_string_field(info3, "key");
    CHECK(json_field_is(info3, "origin", "built"));
    CHECK(key3 != NULL && strcmp(key3, key) != 0);
    dot_fn dot3;
    void *p = symbol_or_die(dbg, "dsrs_test_dot");
    AS_FN(dot3, p);
    check_linalg(dot3, axpy, 257);
    free(key3);
    free(info3);
    free(debug_options);
    CHECK_OK(dsrs_op_free(dbg));
  }

  /* A portable build: the baseline instruction set, SIMD level "scalar", another key. */
  {
    char *portable_options = options_with("\"portable\": true");
    dsrs_op *port = NULL;
    REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", portable_options, &port));
    char *info5 = op_info(port);
    char *key5 = json_string_field(info5, "key");
    CHECK(json_field_is(info5, "origin", "built"));
    CHECK(json_field_is(info5, "target", "portable:scalar"));
    CHECK(key5 != NULL && strcmp(key5, key) != 0);
    level_fn plevel;
    void *pp = symbol_or_die(port, "dsrs_test_simd_level");
    AS_FN(plevel, pp);
    CHECK(strcmp(plevel(), "scalar") == 0);
    free(key5);
    free(info5);
    free(portable_options);
    CHECK_OK(dsrs_op_free(port));
  }

  /* Redefining the op (another define): a new key and new code; the old code stays. */
  {
    char *spec5 = linalg_spec(5);
    REQUIRE_OK(dsrs_op_define(spec5));
    free(spec5);
    dsrs_op *v2 = NULL;
    REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", g_options, &v2));
    char *info4 = op_info(v2);
    char *key4 = json_string_field(info4, "key");
    CHECK(json_field_is(info4, "origin", "built"));
    CHECK(key4 != NULL && strcmp(key4, key) != 0);
    magic_fn magic2;
    void *p = symbol_or_die(v2, "dsrs_test_magic");
    AS_FN(magic2, p);
    int got = magic2();
    if (got != 42 * 5) {
      fprintf(stderr, "ops_test.c:%d: the redefined op's dsrs_test_magic() returned %d, expected %d "
                      "(the first build's code?)\n", __LINE__, got, 42 * 5);
      check_failures_++;
    }
    CHECK(magic() == 42 * 3); /* the first build is still loaded */
    free(key4);
    free(info4);
    CHECK_OK(dsrs_op_free(v2));
  }

  /* After dsrs_op_free the handle is stale, but the code stays loaded. */
  CHECK_OK(dsrs_op_free(op));
  void *p = NULL;
  EXPECT_FAILURE("dsrs_op_symbol on a freed op", dsrs_op_symbol(op, "dsrs_test_dot", &p),
                 DSRS_STATUS_STALE_HANDLE, "dsrs_op_symbol", "'op'", "stale");
  CHECK(p == NULL);
  check_linalg(dot, axpy, 100 + test_rng_next() % 100);
  CHECK(magic() == 42 * 3);
  CHECK(symbol_or_die(again, "dsrs_test_axpy") == p_axpy); /* the other handle is alive */
  CHECK_OK(dsrs_op_free(again));

  free(dir);
  free(key);
  free(info);
}

/* ---------------------------------------------------------------------------------- */
/* 2. cpu_adam.                                                                         */

typedef int32_t (*adam_fn)(float *, const float *, float *, float *, uint64_t,
                           const dsrs_cpu_adam_config *);

/* DeepSpeed's CPU-Adam step in long double, on the same inputs. */
static void adam_reference(long double *p, const float *grad, long double *m, long double *v,
                           size_t n, const dsrs_cpu_adam_config *c) {
  long double b1 = c->beta1, b2 = c->beta2, lr = c->lr, eps = c->eps, wd = c->weight_decay;
  long double bc1 = 1, bc2 = 1;
  if (c->bias_correction) {
    bc1 = 1 - powl(b1, (long double)c->step);
    bc2 = 1 / sqrtl(1 - powl(b2, (long double)c->step));
  }
  for (size_t i = 0; i < n; i++) {
    long double g = (long double)grad[i] / c->grad_scale;
    if (wd > 0 && !c->adamw_mode) g += wd * p[i];
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    long double denom = sqrtl(v[i]) * bc2 + eps;
    if (wd > 0 && c->adamw_mode) p[i] += -lr * wd * p[i];
    p[i] += (-lr / bc1) * (m[i] / denom);
  }
}

/* Runs `steps` steps of `adam` from random state and compares with the reference. Fills
 * `out` (n floats) with the final parameters when not NULL. */
static void check_adam(adam_fn adam, int32_t adamw_mode, int32_t bias_correction, uint64_t seed,
                       float *out) {
  enum { N = 1023, STEPS = 3 };
  test_rng_seed(seed);
  float *p = (float *)malloc(N * sizeof *p), *g = (float *)malloc(N * sizeof *g);
  float *m = (float *)malloc(N * sizeof *m), *v = (float *)malloc(N * sizeof *v);
  long double *rp = (long double *)malloc(N * sizeof *rp);
  long double *rm = (long double *)malloc(N * sizeof *rm);
  long double *rv = (long double *)malloc(N * sizeof *rv);
  REQUIRE(p && g && m && v && rp && rm && rv);
  for (size_t i = 0; i < N; i++) {
    /* Parameters of magnitude 0.5..2 (random sign), so that a relative tolerance is fair. */
    double u = rnd();
    p[i] = (float)((u < 0 ? -1 : 1) * (0.5 + 1.5 * fabs(u)));
    rp[i] = p[i];
    m[i] = v[i] = 0.0f;
    rm[i] = rv[i] = 0.0L;
  }
  dsrs_cpu_adam_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.lr = 1e-2f;
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.999f;
  cfg.eps = 1e-8f;
  cfg.weight_decay = 0.01f;
  cfg.adamw_mode = adamw_mode;
  cfg.bias_correction = bias_correction;
  cfg.grad_scale = 1.5f;
  cfg.num_threads = 0;
  for (int s = 1; s <= STEPS; s++) {
    for (size_t i = 0; i < N; i++) g[i] = (float)rnd();
    cfg.step = s;
    CHECK(adam(p, g, m, v, N, &cfg) == DSRS_OP_OK);
    adam_reference(rp, g, rm, rv, N, &cfg);
  }
  /* Tolerance: relative 1e-5 on the parameters (|p| >= ~0.5 here) — float arithmetic in
   * the kernel against long double in the reference, over 3 steps. The moments: relative
   * 1e-5, with an absolute floor of 1e-7 for m (a sum of signed terms can cancel). */
  size_t bad_p = 0, bad_m = 0, bad_v = 0;
  double worst = 0;
  for (size_t i = 0; i < N; i++) {
    double dp = fabs((double)(p[i] - rp[i])), rel = dp / fabs((double)rp[i]);
    if (rel > worst) worst = rel;
    if (!(dp <= 1e-5 * fabsl(rp[i]))) {
      if (bad_p++ < 5)
        fprintf(stderr, "  p[%zu] = %.9g, reference %.12Lg\n", i, (double)p[i], rp[i]);
    }
    if (!(fabs((double)(m[i] - rm[i])) <= 1e-5 * fabsl(rm[i]) + 1e-7)) bad_m++;
    if (!(fabs((double)(v[i] - rv[i])) <= 1e-5 * fabsl(rv[i]))) bad_v++;
  }
  printf("  adamw_mode=%d bias_correction=%d: worst relative error on params %.3g\n", adamw_mode,
         bias_correction, worst);
  if (bad_p || bad_m || bad_v) {
    fprintf(stderr, "cpu_adam (adamw_mode=%d, bias_correction=%d): %zu params, %zu exp_avg, %zu "
                    "exp_avg_sq of %d differ from the reference\n",
            adamw_mode, bias_correction, bad_p, bad_m, bad_v, N);
    check_failures_++;
  }
  if (out != NULL) memcpy(out, p, N * sizeof *p);
  free(p);
  free(g);
  free(m);
  free(v);
  free(rp);
  free(rm);
  free(rv);
}

static void test_cpu_adam(uint64_t seed) {
  printf("-- 2. the built-in cpu_adam op\n");
  dsrs_op *op = NULL;
  CHECK_OK(dsrs_op_load("cpu_adam", g_options, &op));
  if (op == NULL) return; /* the other sections do not need it */
  char *info = op_info(op);
  char *origin = json_string_field(info, "origin");
  REQUIRE(origin != NULL);
  printf("  cpu_adam: origin %s\n", origin);
  CHECK(strcmp(origin, "prebuilt") == 0 || strcmp(origin, "built") == 0);
  void *sym = symbol_or_die(op, "dsrs_cpu_adam_step_f32");
  adam_fn adam;
  AS_FN(adam, sym);
  {
    level_fn level;
    void *pl = symbol_or_die(op, "dsrs_cpu_adam_simd_level");
    AS_FN(level, pl);
    printf("  dsrs_cpu_adam_simd_level() = %s\n", level());
  }
  for (int32_t adamw = 0; adamw <= 1; adamw++) check_adam(adam, adamw, 1, seed + 17 * (uint64_t)adamw, NULL);
  check_adam(adam, 1, 0, seed + 99, NULL);

  /* Argument checks of the kernel itself: nothing written on error. */
  {
    float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
    dsrs_cpu_adam_config cfg = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1, 1, 1.0f, 0};
    CHECK(adam(&p, &g, &m, &v, 1, NULL) == DSRS_OP_ERR_NULL);
    CHECK(adam(NULL, &g, &m, &v, 1, &cfg) == DSRS_OP_ERR_NULL);
    CHECK(adam(NULL, NULL, NULL, NULL, 0, &cfg) == DSRS_OP_OK); /* n == 0: a no-op */
    cfg.beta1 = 1.0f;
    CHECK(adam(&p, &g, &m, &v, 1, &cfg) == DSRS_OP_ERR_CONFIG);
    cfg.beta1 = 0.9f;
    cfg.step = 0;
    CHECK(adam(&p, &g, &m, &v, 1, &cfg) == DSRS_OP_ERR_CONFIG);
    CHECK(p == 1.0f && m == 0.0f && v == 0.0f);
  }

  /* The op compiled into the library (DSRS_BUILD_OPS=1) and the JIT build give the same
   * bits: every operation is a correctly rounded float operation (dsrs_cpu_adam.h). */
  if (strcmp(origin, "prebuilt") == 0) {
    char *jit_options = options_with("\"prebuilt\": false");
    dsrs_op *jit = NULL;
    REQUIRE_OK(dsrs_op_load("cpu_adam", jit_options, &jit));
    char *jit_info = op_info(jit);
    CHECK(json_field_is(jit_info, "origin", "built"));
    void *js = symbol_or_die(jit, "dsrs_cpu_adam_step_f32");
    CHECK(js != sym);
    adam_fn jit_adam;
    AS_FN(jit_adam, js);
    static float a[1023], b[1023];
    check_adam(adam, 1, 1, seed + 5, a);
    check_adam(jit_adam, 1, 1, seed + 5, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    printf("  prebuilt and JIT builds agree bit for bit\n");
    free(jit_info);
    free(jit_options);
    CHECK_OK(dsrs_op_free(jit));
  } else {
    printf("  (no prebuilt cpu_adam in this library: the JIT build was tested)\n");
  }
  free(origin);
  free(info);
  CHECK_OK(dsrs_op_free(op));
}

/* ---------------------------------------------------------------------------------- */
/* 3. Compile errors.                                                                    */

static void test_build_failure(void) {
  printf("-- 3. an op that does not compile\n");
  char *src = json_quote(
      "#include \"dsrs_op.h\"\n"
      "DSRS_OP_EXPORT int dsrs_test_broken(void) {\n"
      "  return dsrs_undeclared_thing + ;\n"
      "}\n");
  char *spec = xasprintf("{\"name\": \"dsrs_test_broken\", \"sources\": [{\"name\": "
                         "\"broken.cpp\", \"text\": %s}], \"symbols\": [\"dsrs_test_broken\"]}",
                         src);
  REQUIRE_OK(dsrs_op_define(spec));
  dsrs_op *op = NULL;
  EXPECT_FAILURE("load an op with a syntax error", dsrs_op_load("dsrs_test_broken", g_options, &op),
                 DSRS_STATUS_BUILD_FAILED, "dsrs_op_load", "dsrs_test_broken", "error",
                 "dsrs_undeclared_thing", "broken.cpp", "command:", "full log:");
  CHECK(op == NULL);
  /* The full log named in the message exists and holds the compiler's output. */
  const char *msg = last_error();
  const char *at = strstr(msg, "full log: ");
  if (at != NULL) {
    char path[1024];
    at += strlen("full log: ");
    size_t len = strcspn(at, "\n");
    REQUIRE(len < sizeof path);
    memcpy(path, at, len);
    path[len] = '\0';
    CHECK(strncmp(path, g_cache, strlen(g_cache)) == 0);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f != NULL) {
      char text[8192];
      size_t got = fread(text, 1, sizeof text - 1, f);
      text[got] = '\0';
      CHECK(strstr(text, "dsrs_undeclared_thing") != NULL);
      fclose(f);
    }
  }
  /* A second attempt fails the same way (nothing half-built was committed). */
  EXPECT_FAILURE("... and again", dsrs_op_load("dsrs_test_broken", g_options, &op),
                 DSRS_STATUS_BUILD_FAILED, "dsrs_undeclared_thing");
  free(spec);

  /* It compiles, but a declared symbol is missing (not extern "C" + DSRS_OP_EXPORT). */
  free(src);
  src = json_quote(
      "#include \"dsrs_op.h\"\n"
      "DSRS_OP_EXPORT int dsrs_test_present(void) { return 1; }\n"
      "int dsrs_test_mangled(void) { return 2; }\n");
  spec = xasprintf("{\"name\": \"dsrs_test_undeclared\", \"sources\": [{\"name\": \"u.cpp\", "
                   "\"text\": %s}], \"symbols\": [\"dsrs_test_present\", \"dsrs_test_mangled\"]}",
                   src);
  REQUIRE_OK(dsrs_op_define(spec));
  EXPECT_FAILURE("load an op missing a declared symbol",
                 dsrs_op_load("dsrs_test_undeclared", g_options, &op), DSRS_STATUS_LOAD_FAILED,
                 "dsrs_op_load", "dsrs_test_mangled");
  CHECK(op == NULL);
  free(spec);
  free(src);
}

/* ---------------------------------------------------------------------------------- */
/* 4. Unknown ops, bad specs and options, unsafe caches.                                 */

static void test_bad_inputs(void) {
  printf("-- 4. unknown ops, bad specs and options, unsafe caches\n");
  dsrs_op *op = NULL;
  EXPECT_FAILURE("unknown op", dsrs_op_load("no_such_op", g_options, &op), DSRS_STATUS_UNKNOWN_OP,
                 "dsrs_op_load", "no_such_op", "cpu_adam", "dsrs_test_linalg");
  CHECK(op == NULL);

  EXPECT_FAILURE("spec: malformed JSON", dsrs_op_define("{\"name\": \"x\", \"sources\": ["),
                 DSRS_STATUS_INVALID_JSON, "dsrs_op_define", "op definition");
  EXPECT_SCHEMA_FAILURE("spec: a number", dsrs_op_define("42"), "dsrs_op_define");
  EXPECT_SCHEMA_FAILURE("spec: no sources", dsrs_op_define("{\"name\": \"dsrs_test_x\"}"),
                        "dsrs_op_define", "sources");
  EXPECT_FAILURE("spec: empty sources", dsrs_op_define("{\"name\": \"dsrs_test_x\", \"sources\": []}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "'sources' is empty");
  EXPECT_FAILURE("spec: invalid name",
                 dsrs_op_define("{\"name\": \"Bad-Name\", \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "Bad-Name", "lowercase");
  EXPECT_FAILURE("spec: redefine a built-in op",
                 dsrs_op_define("{\"name\": \"cpu_adam\", \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "cpu_adam", "built in");
  EXPECT_FAILURE("spec: unknown kind",
                 dsrs_op_define("{\"name\": \"dsrs_test_x\", \"kind\": \"tpu\", \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "tpu");
  EXPECT_SCHEMA_FAILURE("spec: unknown field",
                 dsrs_op_define("{\"name\": \"dsrs_test_x\", \"colour\": 1, \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}]}"),
                 "dsrs_op_define", "colour");
  EXPECT_FAILURE("spec: source path escaping the build dir",
                 dsrs_op_define("{\"name\": \"dsrs_test_x\", \"sources\": [{\"name\": \"../a.cpp\", \"text\": \"\"}]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "../a.cpp");
  EXPECT_FAILURE("spec: symbol not a C identifier",
                 dsrs_op_define("{\"name\": \"dsrs_test_x\", \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}], \"symbols\": [\"a b\"]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "C identifier");
  EXPECT_FAILURE("spec: source with neither text nor path",
                 dsrs_op_define("{\"name\": \"dsrs_test_x\", \"sources\": [{\"name\": \"a.cpp\"}]}"),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "sources[0]");
  /* None of those was registered. */
  EXPECT_FAILURE("... none was registered", dsrs_op_load("dsrs_test_x", g_options, &op),
                 DSRS_STATUS_UNKNOWN_OP, "dsrs_test_x");

  EXPECT_FAILURE("options: malformed JSON", dsrs_op_load("cpu_adam", "{\"debug\": tru", &op),
                 DSRS_STATUS_INVALID_JSON, "dsrs_op_load", "op build options");
  EXPECT_FAILURE("options: unknown field", dsrs_op_load("cpu_adam", "{\"colour\": 3}", &op),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "colour");
  EXPECT_FAILURE("options: wrong type", dsrs_op_load("cpu_adam", "{\"debug\": \"yes\"}", &op),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "op build options", "yes", "boolean");
  EXPECT_FAILURE("options: relative cache_dir",
                 dsrs_op_load("cpu_adam", "{\"cache_dir\": \"relative/dir\"}", &op),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "relative/dir", "absolute");
  EXPECT_FAILURE("options: negative lock_timeout_s",
                 dsrs_op_load("cpu_adam", "{\"lock_timeout_s\": -1}", &op),
                 DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "lock_timeout_s");
  CHECK(op == NULL);

  /* Cache directories others can write into are refused (the code is loaded from them). */
  const char *modes_what[2] = {"world-writable", "group-writable"};
  const mode_t modes[2] = {0777, 0770};
  for (int k = 0; k < 2; k++) {
    char *dir = xasprintf("%s/open-%o", g_root, (unsigned)modes[k]);
    REQUIRE(mkdir(dir, 0700) == 0);
    REQUIRE(chmod(dir, modes[k]) == 0); /* chmod: the umask does not apply */
    char *qdir = json_quote(dir);
    char *opts = xasprintf("{\"cache_dir\": %s}", qdir);
    char what[96];
    snprintf(what, sizeof what, "cache_dir with mode %04o", (unsigned)modes[k]);
    EXPECT_FAILURE(what, dsrs_op_load("dsrs_test_linalg", opts, &op), DSRS_STATUS_UNSAFE_CACHE,
                   "dsrs_op_load", dir, modes_what[k], "chmod 700");
    CHECK(op == NULL);
    /* Nothing was written into it. */
    DIR *d = opendir(dir);
    REQUIRE(d != NULL);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
    closedir(d);
    CHECK(entries == 0);
    /* The same directory as DSRS_CACHE_DIR, for dsrs_op_cache_dir. */
    char *saved = getenv("DSRS_CACHE_DIR") ? xasprintf("%s", getenv("DSRS_CACHE_DIR")) : NULL;
    REQUIRE(setenv("DSRS_CACHE_DIR", dir, 1) == 0);
    char text[16];
    size_t needed = 0;
    EXPECT_FAILURE("dsrs_op_cache_dir on that directory", dsrs_op_cache_dir(text, sizeof text, &needed),
                   DSRS_STATUS_UNSAFE_CACHE, "dsrs_op_cache_dir", modes_what[k]);
    if (saved != NULL) {
      REQUIRE(setenv("DSRS_CACHE_DIR", saved, 1) == 0);
    } else {
      REQUIRE(unsetenv("DSRS_CACHE_DIR") == 0);
    }
    free(saved);
    free(opts);
    free(qdir);
    free(dir);
  }
}

/* ---------------------------------------------------------------------------------- */
/* 5. Symbols, kernels, images.                                                         */

static void test_symbols(void) {
  printf("-- 5. symbols, kernels and images of a CPU op\n");
  dsrs_op *op = NULL;
  REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", g_options, &op));
  void *p = NULL;
  EXPECT_FAILURE("missing symbol", dsrs_op_symbol(op, "dsrs_test_nope", &p),
                 DSRS_STATUS_SYMBOL_NOT_FOUND, "dsrs_op_symbol", "dsrs_test_nope",
                 "dsrs_test_linalg", "dsrs_test_dot"); /* the message lists the declared ones */
  EXPECT_FAILURE("hidden symbol (extern \"C\" without DSRS_OP_EXPORT)",
                 dsrs_op_symbol(op, "dsrs_test_hidden", &p), DSRS_STATUS_SYMBOL_NOT_FOUND,
                 "dsrs_test_hidden");
  EXPECT_FAILURE("empty symbol name", dsrs_op_symbol(op, "", &p), DSRS_STATUS_INVALID_ARGUMENT,
                 "dsrs_op_symbol");
  CHECK(p == NULL);
  EXPECT_FAILURE("dsrs_op_kernel on a CPU op", dsrs_op_kernel(op, 0, "dsrs_test_dot", &p),
                 DSRS_STATUS_INVALID_ARGUMENT, "dsrs_op_kernel", "CPU op", "dsrs_op_symbol");
  CHECK(p == NULL);
  const uint8_t *data = (const uint8_t *)"untouched";
  size_t len = 12345;
  EXPECT_FAILURE("dsrs_op_image on a CPU op", dsrs_op_image(op, &data, &len),
                 DSRS_STATUS_INVALID_ARGUMENT, "dsrs_op_image", "CPU op");
  CHECK(len == 12345 && strcmp((const char *)data, "untouched") == 0);
  CHECK_OK(dsrs_op_free(op));
}

/* ---------------------------------------------------------------------------------- */
/* 6. The op list and the cache directory.                                              */

static void test_list_and_cache_dir(void) {
  printf("-- 6. dsrs_op_list_json, dsrs_op_cache_dir\n");
  /* The explicit two-call protocol: size query, too small, exact. */
  size_t needed = 0;
  dsrs_status s = dsrs_op_list_json(g_options, NULL, 0, &needed);
  CHECK(s == DSRS_STATUS_OK || s == DSRS_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed > 2);
  char small[4] = "###";
  size_t needed2 = 0;
  CHECK(dsrs_op_list_json(g_options, small, sizeof small, &needed2) == DSRS_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed2 == needed && strcmp(small, "###") == 0);
  char *exact = (char *)malloc(needed);
  REQUIRE(exact != NULL);
  size_t needed3 = 0;
  CHECK_OK(dsrs_op_list_json(g_options, exact, needed, &needed3));
  CHECK(needed3 == needed && strlen(exact) + 1 == needed);

  char *list = NULL;
  READ_STRING(list, dsrs_op_list_json(g_options, buf_, len_, &needed_));
  printf("  list: %.400s%s\n", list, strlen(list) > 400 ? "..." : "");
  CHECK(strcmp(list, exact) == 0);
  CHECK(list[0] == '[');
  CHECK(strstr(list, "\"name\":\"cpu_adam\"") != NULL);
  /* The custom op: not built in, and cached in this cache (built by test 1, current
   * definition) under the key its load reports. */
  const char *mine = strstr(list, "\"name\":\"dsrs_test_linalg\"");
  CHECK(mine != NULL);
  if (mine != NULL) {
    size_t obj_len = strcspn(mine, "}");
    char *obj = (char *)malloc(obj_len + 1);
    REQUIRE(obj != NULL);
    memcpy(obj, mine, obj_len);
    obj[obj_len] = '\0';
    CHECK(strstr(obj, "\"builtin\":false") != NULL);
    CHECK(strstr(obj, "\"cached\":true") != NULL);
    dsrs_op *op = NULL;
    REQUIRE_OK(dsrs_op_load("dsrs_test_linalg", g_options, &op));
    char *info = op_info(op);
    char *key = json_string_field(info, "key");
    CHECK(key != NULL && json_field_is(obj, "key", key));
    free(key);
    free(info);
    CHECK_OK(dsrs_op_free(op));
    free(obj);
  }
  /* NULL options: the defaults (the cache of $DSRS_CACHE_DIR, set by main). */
  char *list_default = NULL;
  READ_STRING(list_default, dsrs_op_list_json(NULL, buf_, len_, &needed_));
  CHECK(strstr(list_default, "\"name\":\"cpu_adam\"") != NULL);
  free(list_default);
  free(list);
  free(exact);

  char *dir = NULL;
  READ_STRING(dir, dsrs_op_cache_dir(buf_, len_, &needed_));
  printf("  dsrs_op_cache_dir: %s\n", dir);
  CHECK(strcmp(dir, getenv("DSRS_CACHE_DIR")) == 0);
  struct stat st;
  CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0077) == 0); /* created private */
  free(dir);
}

/* ---------------------------------------------------------------------------------- */

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("ops_test: seed %" PRIu64 " (DSRS_TEST_SEED reproduces it)\n", seed);
  test_rng_seed(seed);
  /* dsrs_op_free logs stale handles at WARN and builds log progress: keep to errors. */
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_ERROR));

  g_root = test_tmpdir_new("dsrs_ops_test"); /* mkdtemp: mode 0700 */
  g_cache = xasprintf("%s/cache", g_root);
  char *q = json_quote(g_cache);
  g_options = xasprintf("{\"cache_dir\": %s}", q);
  free(q);
  /* The default cache, for calls without options: also private, and never the user's. */
  char *env_cache = xasprintf("%s/env-cache", g_root);
  REQUIRE(setenv("DSRS_CACHE_DIR", env_cache, 1) == 0);
  printf("ops_test: cache %s\n", g_cache);

  test_custom_op();
  test_cpu_adam(seed);
  test_build_failure();
  test_bad_inputs();
  test_symbols();
  test_list_and_cache_dir();

  if (check_failures_ == 0) {
    test_tmpdir_remove(g_root);
  } else {
    fprintf(stderr, "ops_test: keeping %s for inspection\n", g_root);
  }
  free(env_cache);
  free(g_options);
  free(g_cache);
  free(g_root);
  return check_exit_code("ops_test");
}
