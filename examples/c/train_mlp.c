/*
 * train_mlp.c — a C host that trains a small classifier with the deepspeed_rs training
 * engine, the way a PyTorch script trains with deepspeed.initialize: the host owns the model
 * (forward and backward in plain C loops), the engine owns the parameters, gradients,
 * optimizer, learning-rate schedule, gradient clipping, accumulation and loss scaling, all
 * configured by a DeepSpeed ds_config file.
 *
 *   train_mlp [CONFIG] [--epochs N] [--min-accuracy PERCENT] [--quiet] [--dataset-hash]
 *
 * CONFIG defaults to examples/c/ds_config.json. The model is an MLP 2 -> 64 -> 64 -> 3
 * (ReLU, softmax cross-entropy) on the spiral dataset of spiral_data.h (3000 training and
 * 1000 held-out points; examples/README.md). At the end it prints the held-out accuracy and
 * exits with status 1 when it is below --min-accuracy (default 95).
 *
 * Each micro batch: read the parameters through the engine's zero-copy views (in the
 * compute dtype: fp32, or bf16/fp16 when the config enables them), run forward and
 * backward, ADD the gradients (times dsrs_engine_loss_scale, for fp16) into the engine's
 * gradient views, report the loss, and call dsrs_engine_step; at every accumulation
 * boundary the engine averages, unscales, checks for overflow, clips, steps the optimizer
 * and the schedule, and zeroes the gradients. The engine's progress lines (steps_per_print)
 * are INFO log records: this program turns INFO on unless DSRS_LOG is set.
 *
 * "auto" values of the config (as Hugging Face's integration uses them) are filled here
 * with dsrs_config_fill_auto: scheduler.params.total_num_steps becomes the number of
 * optimizer steps of the run.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <deepspeed_rs.h>

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spiral_data.h"

#define DEFAULT_CONFIG "examples/c/ds_config.json"
#define DEFAULT_EPOCHS 40
#define DEFAULT_MIN_ACCURACY 95.0
#define HIDDEN 64
#define IN 2
#define OUT SPIRAL_CLASSES

/* ---------------------------------------------------------------------------------- */
/* Errors: every dsrs_status is checked; a failure prints the library's message.        */

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("train_mlp: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void check(dsrs_status st, const char *what) {
  if (st == DSRS_STATUS_OK) return;
  char msg[4096];
  size_t needed = 0;
  if (dsrs_last_error_message(msg, sizeof msg, &needed) != DSRS_STATUS_OK) msg[0] = '\0';
  die("%s failed: %s [%s]", what, msg, dsrs_status_str((int32_t)st));
}
#define CHECK(call) check((call), #call)

static void *xmalloc(size_t n) {
  void *p = calloc(1, n > 0 ? n : 1);
  if (p == NULL) die("out of memory (%zu bytes)", n);
  return p;
}


/* ---------------------------------------------------------------------------------- */
/* fp16 and bf16 conversions (round to nearest even), for the compute-dtype views.      */

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else { /* subnormal: normalize */
    int e = -1;
    do {
      e++;
      man <<= 1;
    } while ((man & 0x400) == 0);
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
  if (ax < 0x38800000u) {                                  /* subnormal or zero in fp16 */
    if (ax < 0x33000000u) return sign;                     /* below half the smallest */
    uint32_t man = (ax & 0x7fffff) | 0x800000;
    int shift = 126 - (int)(ax >> 23); /* 14..24: value = man24 * 2^(E - 126) in 2^-24 units */
    uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ax + 0xfff + ((ax >> 13) & 1); /* round to nearest even on bit 13 */
  return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t float_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

typedef enum { DT_F32, DT_F16, DT_BF16 } dtype_kind;

static dtype_kind kind_of(DLDataType t, const char *what) {
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 32) return DT_F32;
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 16) return DT_F16;
  if (t.lanes == 1 && t.code == kDLBfloat && t.bits == 16) return DT_BF16;
  die("%s has dtype code %d bits %d; this demo handles float32, float16 and bfloat16", what,
      t.code, t.bits);
  return DT_F32;
}

static const char *kind_name(dtype_kind k) {
  return k == DT_F32 ? "float32" : k == DT_F16 ? "float16" : "bfloat16";
}

static float load_elem(const void *data, dtype_kind k, size_t i) {
  switch (k) {
    case DT_F32: return ((const float *)data)[i];
    case DT_F16: return half_to_float(((const uint16_t *)data)[i]);
    default: return bf16_to_float(((const uint16_t *)data)[i]);
  }
}

static void store_elem(void *data, dtype_kind k, size_t i, float v) {
  switch (k) {
    case DT_F32: ((float *)data)[i] = v; break;
    case DT_F16: ((uint16_t *)data)[i] = float_to_half(v); break;
    default: ((uint16_t *)data)[i] = float_to_bf16(v); break;
  }
}

/* ---------------------------------------------------------------------------------- */
/* The model: parameters registered with the engine, float copies for the math.         */

typedef struct {
  const char *name;
  int64_t shape[2];
  int32_t ndim;
  size_t n;
  float *w;       /* the parameter as float (read from the view every micro batch) */
  float *g;       /* this micro batch's gradient (float) */
  DLTensor view;  /* the engine's parameter (compute dtype) */
  DLTensor grad;  /* the engine's gradient accumulator */
  dtype_kind pkind, gkind;
} param;

enum { W1, B1, W2, B2, W3, B3, NPARAMS };

static param model[NPARAMS] = {
    {"fc1.weight", {HIDDEN, IN}, 2, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
    {"fc1.bias", {HIDDEN, 0}, 1, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
    {"fc2.weight", {HIDDEN, HIDDEN}, 2, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
    {"fc2.bias", {HIDDEN, 0}, 1, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
    {"fc3.weight", {OUT, HIDDEN}, 2, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
    {"fc3.bias", {OUT, 0}, 1, 0, 0, 0, {0}, {0}, DT_F32, DT_F32},
};

/* He-normal weights (Xavier for the output layer), zero biases, from splitmix64. */
static void init_model(uint64_t seed) {
  spiral_rng g = {seed};
  for (int p = 0; p < NPARAMS; p++) {
    param *m = &model[p];
    m->n = (size_t)m->shape[0] * (size_t)(m->ndim == 2 ? m->shape[1] : 1);
    m->w = (float *)xmalloc(m->n * sizeof(float));
    m->g = (float *)xmalloc(m->n * sizeof(float));
    if (m->ndim == 2) {
      double fan_in = (double)m->shape[1];
      double std = sqrt((p == W3 ? 1.0 : 2.0) / fan_in);
      for (size_t i = 0; i < m->n; i++) m->w[i] = (float)(std * spiral_normal(&g));
    }
  }
}

static void read_params(void) {
  for (int p = 0; p < NPARAMS; p++)
    for (size_t i = 0; i < model[p].n; i++)
      model[p].w[i] = load_elem(model[p].view.data, model[p].pkind, i);
}

/* grad view += scale * g (in the view's dtype). */
static void accumulate_grads(float scale) {
  for (int p = 0; p < NPARAMS; p++) {
    param *m = &model[p];
    for (size_t i = 0; i < m->n; i++) {
      float cur = load_elem(m->grad.data, m->gkind, i);
      store_elem(m->grad.data, m->gkind, i, cur + scale * m->g[i]);
    }
  }
}

/* Forward (and, when `train`, backward into model[].g) of `b` samples; returns the summed
 * cross-entropy loss and counts correct predictions into *correct. */
static double forward_backward(const float *xy, const int32_t *label, const size_t *idx,
                               size_t b, int train, size_t *correct) {
  static float h1[HIDDEN], h2[HIDDEN], z[OUT], dz[OUT], dh2[HIDDEN], dh1[HIDDEN];
  const float *w1 = model[W1].w, *b1 = model[B1].w, *w2 = model[W2].w, *b2 = model[B2].w,
              *w3 = model[W3].w, *b3 = model[B3].w;
  double loss = 0.0;
  if (train)
    for (int p = 0; p < NPARAMS; p++) memset(model[p].g, 0, model[p].n * sizeof(float));
  for (size_t s = 0; s < b; s++) {
    size_t k = idx != NULL ? idx[s] : s;
    const float x0 = xy[2 * k], x1 = xy[2 * k + 1];
    for (int j = 0; j < HIDDEN; j++) {
      float a = w1[j * IN] * x0 + w1[j * IN + 1] * x1 + b1[j];
      h1[j] = a > 0.0f ? a : 0.0f;
    }
    for (int j = 0; j < HIDDEN; j++) {
      float a = b2[j];
      for (int i = 0; i < HIDDEN; i++) a += w2[j * HIDDEN + i] * h1[i];
      h2[j] = a > 0.0f ? a : 0.0f;
    }
    float zmax = -INFINITY;
    int best = 0;
    for (int c = 0; c < OUT; c++) {
      float a = b3[c];
      for (int i = 0; i < HIDDEN; i++) a += w3[c * HIDDEN + i] * h2[i];
      z[c] = a;
      if (a > zmax) {
        zmax = a;
        best = c;
      }
    }
    if (best == label[k]) (*correct)++;
    double sum = 0.0;
    for (int c = 0; c < OUT; c++) sum += exp((double)(z[c] - zmax));
    loss += log(sum) - (double)(z[label[k]] - zmax);
    if (!train) continue;
    /* d loss_mean / d z = (softmax - onehot) / b */
    for (int c = 0; c < OUT; c++)
      dz[c] = (float)((exp((double)(z[c] - zmax)) / sum - (c == label[k] ? 1.0 : 0.0)) / (double)b);
    float *g1 = model[W1].g, *gb1 = model[B1].g, *g2 = model[W2].g, *gb2 = model[B2].g,
          *g3 = model[W3].g, *gb3 = model[B3].g;
    for (int i = 0; i < HIDDEN; i++) dh2[i] = 0.0f;
    for (int c = 0; c < OUT; c++) {
      gb3[c] += dz[c];
      for (int i = 0; i < HIDDEN; i++) {
        g3[c * HIDDEN + i] += dz[c] * h2[i];
        dh2[i] += w3[c * HIDDEN + i] * dz[c];
      }
    }
    for (int i = 0; i < HIDDEN; i++) {
      dh2[i] = h2[i] > 0.0f ? dh2[i] : 0.0f;
      dh1[i] = 0.0f;
    }
    for (int j = 0; j < HIDDEN; j++) {
      if (dh2[j] == 0.0f) continue;
      gb2[j] += dh2[j];
      for (int i = 0; i < HIDDEN; i++) {
        g2[j * HIDDEN + i] += dh2[j] * h1[i];
        dh1[i] += w2[j * HIDDEN + i] * dh2[j];
      }
    }
    for (int j = 0; j < HIDDEN; j++) {
      float d = h1[j] > 0.0f ? dh1[j] : 0.0f;
      gb1[j] += d;
      g1[j * IN] += d * x0;
      g1[j * IN + 1] += d * x1;
    }
  }
  return loss;
}

/* ---------------------------------------------------------------------------------- */
/* The config: read, "auto" filled.                                                     */

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) die("cannot open the config %s (pass its path as the first argument)", path);
  size_t cap = 4096, len = 0;
  char *s = (char *)xmalloc(cap);
  size_t got;
  while ((got = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += got;
    if (cap - len - 1 == 0) {
      cap *= 2;
      s = (char *)realloc(s, cap);
      if (s == NULL) die("out of memory");
    }
  }
  fclose(f);
  s[len] = '\0';
  return s;
}

/* The first string of a JSON array of strings (no escapes in paths), malloc'd; NULL if the
 * array is empty. */
static char *first_json_string(const char *array) {
  const char *q = strchr(array, '"');
  if (q == NULL) return NULL;
  const char *e = strchr(q + 1, '"');
  if (e == NULL) die("malformed JSON array from dsrs_config_auto_paths: %s", array);
  size_t n = (size_t)(e - q - 1);
  char *s = (char *)xmalloc(n + 1);
  memcpy(s, q + 1, n);
  s[n] = '\0';
  return s;
}

static char *auto_paths(const char *json) {
  size_t needed = 0;
  CHECK(dsrs_config_auto_paths(json, NULL, 0, &needed));
  char *out = (char *)xmalloc(needed);
  CHECK(dsrs_config_auto_paths(json, out, needed, &needed));
  return out;
}

/* Replaces every "auto" the demo knows how to fill, scheduler.params.total_num_steps, with
 * `total_steps`; any other "auto" is an error. */
static char *fill_autos(char *json, uint64_t total_steps) {
  for (;;) {
    char *paths = auto_paths(json);
    char *path = first_json_string(paths);
    free(paths);
    if (path == NULL) return json;
    const char *suffix = "total_num_steps";
    size_t lp = strlen(path), ls = strlen(suffix);
    if (lp < ls || strcmp(path + lp - ls, suffix) != 0)
      die("the config has \"auto\" at %s, which this demo cannot fill (it fills "
          "scheduler.params.total_num_steps)",
          path);
    char value[32];
    snprintf(value, sizeof value, "%" PRIu64, total_steps);
    size_t needed = 0;
    CHECK(dsrs_config_fill_auto(json, path, value, NULL, 0, &needed));
    char *filled = (char *)xmalloc(needed);
    CHECK(dsrs_config_fill_auto(json, path, value, filled, needed, &needed));
    free(json);
    free(path);
    json = filled;
  }
}

/* ---------------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(void) {
  fprintf(stderr,
          "usage: train_mlp [CONFIG] [--epochs N] [--min-accuracy PERCENT] [--quiet] "
          "[--dataset-hash]\n"
          "  CONFIG           a ds_config file (default %s)\n"
          "  --epochs N       passes over the training set (default %d)\n"
          "  --min-accuracy P exit with status 1 below P %% held-out accuracy (default %.0f)\n"
          "  --quiet          no engine progress lines (INFO log records)\n"
          "  --dataset-hash   print the dataset's FNV-1a hash and exit\n",
          DEFAULT_CONFIG, DEFAULT_EPOCHS, DEFAULT_MIN_ACCURACY);
  exit(2);
}

int main(int argc, char **argv) {
  const char *config_path = DEFAULT_CONFIG;
  long epochs = DEFAULT_EPOCHS;
  double min_accuracy = DEFAULT_MIN_ACCURACY;
  int quiet = 0, hash_only = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--epochs") == 0 && i + 1 < argc) {
      char *end;
      epochs = strtol(argv[++i], &end, 10);
      if (*end != '\0' || epochs < 1) die("--epochs needs a positive integer, got %s", argv[i]);
    } else if (strcmp(argv[i], "--min-accuracy") == 0 && i + 1 < argc) {
      char *end;
      min_accuracy = strtod(argv[++i], &end);
      if (*end != '\0') die("--min-accuracy needs a number (percent), got %s", argv[i]);
    } else if (strcmp(argv[i], "--quiet") == 0) {
      quiet = 1;
    } else if (strcmp(argv[i], "--dataset-hash") == 0) {
      hash_only = 1;
    } else if (argv[i][0] == '-') {
      usage();
    } else {
      config_path = argv[i];
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* The dataset: 3000 training points, 1000 held out. */
  const size_t n_all = SPIRAL_N_TRAIN + SPIRAL_N_TEST;
  float *xy = (float *)xmalloc(n_all * 2 * sizeof(float));
  int32_t *label = (int32_t *)xmalloc(n_all * sizeof(int32_t));
  spiral_generate(SPIRAL_SEED, n_all, xy, label);
  uint64_t h = SPIRAL_FNV_OFFSET;
  h = spiral_fnv1a64(h, xy, SPIRAL_N_TRAIN * 2 * sizeof(float));
  h = spiral_fnv1a64(h, label, SPIRAL_N_TRAIN * sizeof(int32_t));
  h = spiral_fnv1a64(h, xy + 2 * SPIRAL_N_TRAIN, SPIRAL_N_TEST * 2 * sizeof(float));
  h = spiral_fnv1a64(h, label + SPIRAL_N_TRAIN, SPIRAL_N_TEST * sizeof(int32_t));
  printf("dataset: spiral, %d classes, %d training + %d held-out points, fnv1a64 0x%016" PRIx64
         "\n",
         SPIRAL_CLASSES, SPIRAL_N_TRAIN, SPIRAL_N_TEST, h);
  if (hash_only) return 0;
  const float *x_test = xy + 2 * SPIRAL_N_TRAIN;
  const int32_t *y_test = label + SPIRAL_N_TRAIN;

  if (!quiet && getenv("DSRS_LOG") == NULL) CHECK(dsrs_set_log_level(DSRS_LOG_INFO));
  if (quiet) CHECK(dsrs_set_log_level(DSRS_LOG_WARN));

  /* The default accelerator (DSRS_ACCELERATOR, else detection). This demo computes on the
   * host and the engine runs on host-memory accelerators, so where detection picks a device
   * (CUDA, a device plugin) it trains on the CPU accelerator instead. */
  dsrs_accelerator *accel = NULL;
  CHECK(dsrs_accelerator_get(&accel));
  int32_t device_type = 0;
  CHECK(dsrs_accelerator_device_type(accel, &device_type));
  if (device_type != kDLCPU) {
    char name[64];
    size_t n = 0;
    CHECK(dsrs_accelerator_name(accel, name, sizeof name, &n));
    printf("the default accelerator (%s) keeps memory on its device; the engine trains on "
           "host memory, so this demo uses the cpu accelerator\n",
           name);
    CHECK(dsrs_accelerator_free(accel));
    accel = NULL;
    CHECK(dsrs_accelerator_new("cpu", NULL, &accel));
  }
  char accel_name[64];
  size_t needed = 0;
  CHECK(dsrs_accelerator_name(accel, accel_name, sizeof accel_name, &needed));

  /* The config: batch sizes first (from an engine on a placeholder-filled copy), then the
   * "auto" values filled for this run. */
  char *config = read_file(config_path);
  uint64_t tbs = 0, mbs = 0, gas = 0;
  {
    /* The number of steps is not known yet: a placeholder (larger than any warmup). */
    char *probe_json = (char *)xmalloc(strlen(config) + 1);
    strcpy(probe_json, config);
    probe_json = fill_autos(probe_json, 1000000);
    dsrs_engine *probe = NULL;
    CHECK(dsrs_engine_new(accel, probe_json, &probe));
    CHECK(dsrs_engine_batch_sizes(probe, &tbs, &mbs, &gas));
    CHECK(dsrs_engine_free(probe));
    free(probe_json);
  }
  if (mbs == 0 || gas == 0 || mbs * gas > SPIRAL_N_TRAIN)
    die("batch sizes %" PRIu64 " x %" PRIu64 " do not fit %d training points", mbs, gas,
        SPIRAL_N_TRAIN);
  const uint64_t steps_per_epoch = SPIRAL_N_TRAIN / (mbs * gas); /* the rest is dropped */
  const uint64_t total_steps = steps_per_epoch * (uint64_t)epochs;
  config = fill_autos(config, total_steps);

  dsrs_engine *engine = NULL;
  CHECK(dsrs_engine_new(accel, config, &engine));
  free(config);

  /* Register the parameters (fp32 initial values; the engine stores trainable ones in the
   * training precision), then finalize: flat buffers, master weights, optimizer state. */
  init_model(SPIRAL_SEED + 1);
  for (int p = 0; p < NPARAMS; p++) {
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.data = model[p].w;
    t.device.device_type = kDLCPU;
    t.ndim = model[p].ndim;
    t.dtype.code = kDLFloat;
    t.dtype.bits = 32;
    t.dtype.lanes = 1;
    t.shape = model[p].shape;
    CHECK(dsrs_engine_register_param(engine, model[p].name, &t, 1, NULL));
  }
  CHECK(dsrs_engine_finalize(engine));
  for (int p = 0; p < NPARAMS; p++) {
    CHECK(dsrs_engine_param(engine, (size_t)p, &model[p].view));
    CHECK(dsrs_engine_grad(engine, (size_t)p, &model[p].grad));
    model[p].pkind = kind_of(model[p].view.dtype, model[p].name);
    model[p].gkind = kind_of(model[p].grad.dtype, model[p].name);
  }
  size_t nparams = 0;
  for (int p = 0; p < NPARAMS; p++) nparams += model[p].n;
  printf("model: MLP %d-%d-%d-%d, %zu parameters, %s weights, %s gradients; accelerator %s\n",
         IN, HIDDEN, HIDDEN, OUT, nparams, kind_name(model[0].pkind), kind_name(model[0].gkind),
         accel_name);
  printf("training: %ld epochs x %" PRIu64 " optimizer steps (batch %" PRIu64 " = micro %" PRIu64
         " x %" PRIu64 " accumulation steps) from %s\n",
         epochs, steps_per_epoch, tbs, mbs, gas, config_path);

  size_t *order = (size_t *)xmalloc(SPIRAL_N_TRAIN * sizeof(size_t));
  for (size_t i = 0; i < SPIRAL_N_TRAIN; i++) order[i] = i;
  spiral_rng shuffle = {SPIRAL_SEED + 2};
  dsrs_step_record rec;
  memset(&rec, 0, sizeof rec);
  const double t0 = now_s();
  for (long epoch = 1; epoch <= epochs; epoch++) {
    /* Fisher-Yates shuffle with splitmix64 (the Python demo draws the same permutation). */
    for (size_t i = SPIRAL_N_TRAIN - 1; i > 0; i--) {
      size_t j = (size_t)(spiral_next_u64(&shuffle) % (uint64_t)(i + 1));
      size_t tmp = order[i];
      order[i] = order[j];
      order[j] = tmp;
    }
    double epoch_loss = 0.0;
    size_t correct = 0, seen = 0, skipped = 0;
    for (uint64_t m = 0; m < steps_per_epoch * gas; m++) {
      const size_t *idx = order + m * mbs;
      read_params();
      double scale = 0.0;
      CHECK(dsrs_engine_loss_scale(engine, &scale));
      double loss = forward_backward(xy, label, idx, (size_t)mbs, 1, &correct) / (double)mbs;
      accumulate_grads((float)scale); /* fp16: the loss (so its gradients) times the scale */
      CHECK(dsrs_engine_report_loss(engine, loss));
      CHECK(dsrs_engine_step(engine, NULL, &rec));
      if (rec.boundary && rec.overflow) skipped++;
      epoch_loss += loss;
      seen += (size_t)mbs;
    }
    size_t test_correct = 0;
    read_params();
    double test_loss = forward_backward(x_test, y_test, NULL, SPIRAL_N_TEST, 0, &test_correct);
    if (!quiet || epoch == epochs)
      printf("epoch %3ld/%ld: step %5" PRIu64 ", loss %.4f, train acc %5.1f%%, held-out loss %.4f "
             "acc %5.1f%%, lr %.3e, loss scale %g%s\n",
             epoch, epochs, rec.global_step, epoch_loss / (double)(steps_per_epoch * gas),
             100.0 * (double)correct / (double)seen, test_loss / SPIRAL_N_TEST,
             100.0 * (double)test_correct / SPIRAL_N_TEST, rec.lr, rec.loss_scale,
             skipped ? " (overflow steps skipped)" : "");
  }
  const double elapsed = now_s() - t0;

  read_params();
  size_t test_correct = 0;
  forward_backward(x_test, y_test, NULL, SPIRAL_N_TEST, 0, &test_correct);
  const double acc = 100.0 * (double)test_correct / SPIRAL_N_TEST;
  printf("trained %" PRIu64 " optimizer steps (%" PRIu64 " skipped) in %.2f s\n", rec.global_step,
         rec.skipped_steps, elapsed);
  printf("held-out accuracy: %.1f%% (%zu/%d)\n", acc, test_correct, SPIRAL_N_TEST);

  CHECK(dsrs_engine_free(engine));
  CHECK(dsrs_accelerator_free(accel));
  for (int p = 0; p < NPARAMS; p++) {
    free(model[p].w);
    free(model[p].g);
  }
  free(order);
  free(xy);
  free(label);
  if (acc < min_accuracy) {
    fprintf(stderr, "train_mlp: held-out accuracy %.1f%% is below --min-accuracy %.1f%%\n", acc,
            min_accuracy);
    return 1;
  }
  return 0;
}
