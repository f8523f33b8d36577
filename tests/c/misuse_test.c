/*
 * misuse_test.c — abuses of the deepspeed_rs C ABI.
 *
 * Each abuse must return its exact documented status, record the same status for
 * dsrs_last_error_status, and leave a last-error message that starts with the failing
 * function's name and names the argument or value at fault. Nothing may crash (the suite
 * runs under AddressSanitizer and UndefinedBehaviorSanitizer in scripts/test-c.sh). One
 * line is printed per abuse, and the count at the end.
 */
#include <math.h>

#include "check.h"
#include "tmpdir.h"

static int abuse_count = 0;

/* Checks one abuse: status, dsrs_last_error_status, and the message's contents. `needles`
 * is a NULL-terminated list of substrings the message must contain. */
static void expect_failure(int line, const char *what, dsrs_status got, dsrs_status want,
                           const char *function, const char *const *needles) {
  abuse_count++;
  const char *msg = last_error();
  printf("[%2d] %-58s -> %s | %s\n", abuse_count, what, status_name(got), msg);
  if (got != want) {
    fprintf(stderr, "misuse_test.c:%d: %s: expected %s, got %s\n", line, what,
            status_name(want), status_name(got));
    check_failures_++;
    return;
  }
  dsrs_status recorded = DSRS_STATUS_OK;
  CHECK_OK(dsrs_last_error_status(&recorded));
  if (recorded != want) {
    fprintf(stderr, "misuse_test.c:%d: %s: dsrs_last_error_status is %s\n", line, what,
            status_name(recorded));
    check_failures_++;
  }
  size_t fl = strlen(function);
  if (strncmp(msg, function, fl) != 0 || strncmp(msg + fl, ": ", 2) != 0) {
    fprintf(stderr, "misuse_test.c:%d: %s: the message does not start with \"%s: \"\n", line,
            what, function);
    check_failures_++;
  }
  for (const char *const *n = needles; *n != NULL; n++) {
    if (strstr(msg, *n) == NULL) {
      fprintf(stderr, "misuse_test.c:%d: %s: the message lacks \"%s\"\n", line, what, *n);
      check_failures_++;
    }
  }
}

/* ABUSE(description, call, expected status, "function", "needle", ...) */
#define ABUSE(what, call, want, function, ...)                                            \
  expect_failure(__LINE__, what, (call), want, function, (const char *const[]){__VA_ARGS__, NULL})

/* A non-failure abuse (the call must cope, no message to check). */
#define ABUSE_OK(what, cond)                                                               \
  do {                                                                                     \
    abuse_count++;                                                                         \
    printf("[%2d] %-58s -> %s\n", abuse_count, what, (cond) ? "ok" : "FAILED");            \
    CHECK(cond);                                                                           \
  } while (0)

static DLDataType dt(uint8_t code, uint8_t bits, uint16_t lanes) {
  DLDataType t = {code, bits, lanes};
  return t;
}

/* The next `n` BITS words of the generator (advances it). */
static void draw(dsrs_accelerator *a, uint32_t *out, int64_t n) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = out;
  t.device.device_type = kDLCPU;
  t.ndim = 1;
  t.dtype = dt(kDLUInt, 32, 1);
  t.shape = &n;
  REQUIRE_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
}

/* Every dsrs_engine_* function that takes an engine, called with otherwise valid arguments
 * and out-parameters in `engine_outs` (pre-filled with a sentinel by the caller): the
 * table of the stale and wrong-type engine handle abuses. */
typedef struct {
  size_t index, needed;
  double value;
  uint64_t sizes[3];
  DLTensor view;
  dsrs_step_record record;
  char text[64];
} engine_outs;

static float engine_call_values[2] = {1.0f, 2.0f};
static int64_t engine_call_shape[1] = {2};

static dsrs_status ec_register_param(dsrs_engine *e, engine_outs *o) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = engine_call_values;
  t.device.device_type = kDLCPU;
  t.ndim = 1;
  t.dtype = dt(kDLFloat, 32, 1);
  t.shape = engine_call_shape;
  return dsrs_engine_register_param(e, "w", &t, 1, &o->index);
}
static dsrs_status ec_finalize(dsrs_engine *e, engine_outs *o) {
  (void)o;
  return dsrs_engine_finalize(e);
}
static dsrs_status ec_num_params(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_num_params(e, &o->index);
}
static dsrs_status ec_param_index(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_param_index(e, "w", &o->index);
}
static dsrs_status ec_param_name(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_param_name(e, 0, o->text, sizeof o->text, &o->needed);
}
static dsrs_status ec_param(dsrs_engine *e, engine_outs *o) { return dsrs_engine_param(e, 0, &o->view); }
static dsrs_status ec_grad(dsrs_engine *e, engine_outs *o) { return dsrs_engine_grad(e, 0, &o->view); }
static dsrs_status ec_optimizer_state(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_optimizer_state(e, 0, "exp_avg", &o->view);
}
static dsrs_status ec_step(dsrs_engine *e, engine_outs *o) { return dsrs_engine_step(e, NULL, &o->record); }
static dsrs_status ec_loss_scale(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_loss_scale(e, &o->value);
}
static dsrs_status ec_get_lr(dsrs_engine *e, engine_outs *o) { return dsrs_engine_get_lr(e, &o->value); }
static dsrs_status ec_set_lr(dsrs_engine *e, engine_outs *o) {
  (void)o;
  return dsrs_engine_set_lr(e, 0.5);
}
static dsrs_status ec_report_loss(dsrs_engine *e, engine_outs *o) {
  (void)o;
  return dsrs_engine_report_loss(e, 1.5);
}
static dsrs_status ec_batch_sizes(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_batch_sizes(e, &o->sizes[0], &o->sizes[1], &o->sizes[2]);
}
static dsrs_status ec_config_json(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_config_json(e, o->text, sizeof o->text, &o->needed);
}
static dsrs_status ec_stats_json(dsrs_engine *e, engine_outs *o) {
  return dsrs_engine_stats_json(e, o->text, sizeof o->text, &o->needed);
}

static const struct {
  const char *function;
  dsrs_status (*call)(dsrs_engine *, engine_outs *);
} ENGINE_CALLS[] = {
    {"dsrs_engine_register_param", ec_register_param},
    {"dsrs_engine_finalize", ec_finalize},
    {"dsrs_engine_num_params", ec_num_params},
    {"dsrs_engine_param_index", ec_param_index},
    {"dsrs_engine_param_name", ec_param_name},
    {"dsrs_engine_param", ec_param},
    {"dsrs_engine_grad", ec_grad},
    {"dsrs_engine_optimizer_state", ec_optimizer_state},
    {"dsrs_engine_step", ec_step},
    {"dsrs_engine_loss_scale", ec_loss_scale},
    {"dsrs_engine_get_lr", ec_get_lr},
    {"dsrs_engine_set_lr", ec_set_lr},
    {"dsrs_engine_report_loss", ec_report_loss},
    {"dsrs_engine_batch_sizes", ec_batch_sizes},
    {"dsrs_engine_config_json", ec_config_json},
    {"dsrs_engine_stats_json", ec_stats_json},
};

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("misuse_test: seed %" PRIu64 " (DSRS_TEST_SEED reproduces it)\n", seed);
  test_rng_seed(seed);
  /* Free functions log stale handles at WARN; keep the output to what this test prints. */
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_ERROR));

  dsrs_accelerator *acc = NULL, *other = NULL, *nope = NULL;

  printf("-- accelerator selection\n");
  /* Before the first successful selection, DSRS_ACCELERATOR decides; a bad name fails (and
   * is not cached: the next call selects again). */
  REQUIRE(setenv("DSRS_ACCELERATOR", "bogus", 1) == 0);
  ABUSE("DSRS_ACCELERATOR=bogus", dsrs_accelerator_get(&nope), DSRS_STATUS_UNKNOWN_ACCELERATOR,
        "dsrs_accelerator_get", "DSRS_ACCELERATOR=\"bogus\"", "cpu", "cuda");
  REQUIRE(unsetenv("DSRS_ACCELERATOR") == 0);
  CHECK(nope == NULL);
  ABUSE("an accelerator this machine/build cannot drive (cuda)",
        dsrs_accelerator_new("cuda", NULL, &nope), DSRS_STATUS_UNAVAILABLE, "dsrs_accelerator_new",
        "cuda", "available accelerators: cpu");
  REQUIRE_OK(dsrs_accelerator_get(&acc));
  REQUIRE_OK(dsrs_accelerator_new("cpu", "{\"devices\": 2}", &other));
  size_t size = 256 + (size_t)(test_rng_next() % 1024);
  dsrs_buffer *buf = NULL;
  REQUIRE_OK(dsrs_buffer_new(acc, size, 0, DSRS_MEMORY_DEVICE, &buf));
  unsigned char *data = (unsigned char *)malloc(size);
  test_rng_bytes(data, size);
  REQUIRE_OK(dsrs_buffer_write(buf, 0, data, size, NULL));
  size_t n = 0;
  uint32_t u32 = 0;
  char text[256];
  unsigned char *sink = (unsigned char *)malloc(size + 1); /* room for any read below */
  int64_t shape2[2] = {2, 3};

  printf("-- NULL arguments and handles\n");
  ABUSE("NULL out-param of dsrs_accelerator_get", dsrs_accelerator_get(NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_get", "'out'");
  ABUSE("NULL out-param of dsrs_buffer_size", dsrs_buffer_size(buf, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_size", "'out'", "NULL");
  ABUSE("NULL 'needed' of a two-call function", dsrs_accelerator_name(acc, text, sizeof text, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_name", "'needed'");
  ABUSE("NULL accelerator handle", dsrs_accelerator_device_count(NULL, &u32),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_device_count", "'accel'");
  ABUSE("NULL buffer handle", dsrs_buffer_write(NULL, 0, data, 1, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_write", "'buf'");
  ABUSE("NULL accelerator name", dsrs_accelerator_new(NULL, NULL, &nope),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_new", "'name'");
  ABUSE("(NULL, n > 0) host pointer", dsrs_buffer_write(buf, 0, NULL, 16, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_write", "'src'", "16");
  ABUSE_OK("(NULL, 0) host pointer is an empty write",
           dsrs_buffer_write(buf, 0, NULL, 0, NULL) == DSRS_STATUS_OK);
  ABUSE("(NULL, len > 0) output buffer of a two-call function",
        dsrs_accelerator_name(acc, NULL, 5, &n), DSRS_STATUS_NULL_ARGUMENT,
        "dsrs_accelerator_name", "'buf'", "5");
  ABUSE("NULL stream for set_current_stream", dsrs_accelerator_set_current_stream(acc, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_set_current_stream", "'stream'");
  ABUSE("NULL config of dsrs_adam_step", dsrs_adam_step(NULL, NULL, 1, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_adam_step", "'config'");
  ABUSE("NULL config of dsrs_adagrad_step", dsrs_adagrad_step(NULL, NULL, 1, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_adagrad_step", "'config'");
  ABUSE("NULL config of dsrs_lion_step", dsrs_lion_step(NULL, NULL, 1, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_lion_step", "'config'");
  ABUSE("NULL config of dsrs_lamb_step", dsrs_lamb_step(NULL, NULL, 1, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_lamb_step", "'config'");
  ABUSE("NULL config of dsrs_quantize_sizes",
        dsrs_quantize_sizes(8, NULL, &(uint64_t){0}, &(uint64_t){0}), DSRS_STATUS_NULL_ARGUMENT,
        "dsrs_quantize_sizes", "'config'");
  ABUSE("NULL config of dsrs_quantize", dsrs_quantize(NULL, NULL, NULL, NULL, NULL, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_quantize", "'config'");
  ABUSE("NULL config of dsrs_dequantize", dsrs_dequantize(NULL, NULL, NULL, NULL, NULL, NULL),
        DSRS_STATUS_NULL_ARGUMENT, "dsrs_dequantize", "'config'");

  printf("-- stale, foreign and mistyped handles\n");
  dsrs_buffer *gone = NULL;
  REQUIRE_OK(dsrs_buffer_new(acc, 64, 0, DSRS_MEMORY_DEVICE, &gone));
  REQUIRE_OK(dsrs_buffer_free(gone));
  ABUSE("stale buffer handle after free", dsrs_buffer_size(gone, &n), DSRS_STATUS_STALE_HANDLE,
        "dsrs_buffer_size", "'buf'", "stale", "dsrs_buffer");
  ABUSE("double free of a buffer", dsrs_buffer_free(gone), DSRS_STATUS_STALE_HANDLE,
        "dsrs_buffer_free", "'buf'", "already freed");
  /* The slot is reused by the next buffer: the old handle must stay stale. */
  dsrs_buffer *reuse = NULL;
  REQUIRE_OK(dsrs_buffer_new(acc, 32, 0, DSRS_MEMORY_DEVICE, &reuse));
  ABUSE("stale handle whose slot was reused", dsrs_buffer_free(gone), DSRS_STATUS_STALE_HANDLE,
        "dsrs_buffer_free", "'buf'", "stale");
  CHECK_OK(dsrs_buffer_size(reuse, &n)); /* and the new one is untouched */
  CHECK(n == 32);
  REQUIRE_OK(dsrs_buffer_free(reuse));
  dsrs_accelerator *acc2 = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&acc2));
  REQUIRE_OK(dsrs_accelerator_free(acc2));
  ABUSE("double free of an accelerator handle", dsrs_accelerator_free(acc2),
        DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_free", "'accel'", "stale");
  ABUSE("buffer passed as an accelerator",
        dsrs_accelerator_device_count((dsrs_accelerator *)buf, &u32),
        DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_accelerator_device_count", "'accel'", "dsrs_buffer",
        "dsrs_accelerator");
  dsrs_event *ev = NULL;
  REQUIRE_OK(dsrs_event_new(acc, true, &ev));
  ABUSE("event passed as a stream", dsrs_stream_synchronize((dsrs_stream *)ev),
        DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_stream_synchronize", "'stream'", "dsrs_event",
        "dsrs_stream");
  ABUSE("garbage pointer (void*)0x1234", dsrs_accelerator_free((dsrs_accelerator *)(void *)0x1234),
        DSRS_STATUS_INVALID_HANDLE, "dsrs_accelerator_free", "'accel'", "0x1234",
        "not a dsrs_accelerator handle");
  _Alignas(16) unsigned char on_stack[32]; /* 16-aligned: its low byte is never a type tag */
  memset(on_stack, 0xA2, sizeof on_stack);
  char addr[32];
  snprintf(addr, sizeof addr, "%#zx", (size_t)(uintptr_t)on_stack);
  ABUSE("address of a stack variable as a buffer", dsrs_buffer_size((dsrs_buffer *)(void *)on_stack, &n),
        DSRS_STATUS_INVALID_HANDLE, "dsrs_buffer_size", "'buf'", addr);
  ABUSE("buffer freed with dsrs_stream_free", dsrs_stream_free((dsrs_stream *)buf),
        DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_stream_free", "'stream'", "dsrs_buffer");
  ABUSE("buffer freed with dsrs_accelerator_free", dsrs_accelerator_free((dsrs_accelerator *)buf),
        DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_accelerator_free", "'accel'", "dsrs_buffer");
  {
    unsigned char *back = (unsigned char *)malloc(size);
    bool usable = dsrs_buffer_read(buf, 0, back, size, NULL) == DSRS_STATUS_OK &&
                  memcmp(back, data, size) == 0;
    ABUSE_OK("... and the buffer is still usable, contents intact", usable);
    free(back);
  }

  printf("-- out-of-range enumerations and devices\n");
  dsrs_buffer *never = NULL;
  ABUSE("memory kind 42", dsrs_buffer_new(acc, 16, 0, 42, &never), DSRS_STATUS_OUT_OF_RANGE,
        "dsrs_buffer_new", "'kind'", "42");
  {
    float f[4];
    int64_t four = 4;
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.data = f;
    t.device.device_type = kDLCPU;
    t.ndim = 1;
    t.dtype = dt(kDLFloat, 32, 1);
    t.shape = &four;
    ABUSE("distribution 7", dsrs_accelerator_rng_fill(acc, &t, 7, 0, 1, NULL),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_rng_fill", "'distribution'", "7");
  }
  ABUSE("log level 99", dsrs_set_log_level(99), DSRS_STATUS_OUT_OF_RANGE, "dsrs_set_log_level",
        "'level'", "99");
  ABUSE("record level 0 for dsrs_log", dsrs_log(0, "t", "m"), DSRS_STATUS_OUT_OF_RANGE, "dsrs_log",
        "'level'", "0");
  ABUSE("device -5 for set_device", dsrs_accelerator_set_device(acc, -5), DSRS_STATUS_OUT_OF_RANGE,
        "dsrs_accelerator_set_device", "'device'", "-5");
  ABUSE("device 999 for set_device", dsrs_accelerator_set_device(other, 999),
        DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_set_device", "device 999", "2 device(s)");
  ABUSE("device -5 for device_name", dsrs_accelerator_device_name(acc, -5, text, sizeof text, &n),
        DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_device_name", "'device'", "-5");
  {
    uint64_t v = 0;
    ABUSE("device 999 for total_memory", dsrs_accelerator_total_memory(acc, 999, &v),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_total_memory", "device 999");
  }

  printf("-- two-call outputs\n");
  {
    char small[3];
    memset(small, '#', sizeof small);
    size_t needed = 0;
    ABUSE("undersized buffer for dsrs_accelerator_name",
          dsrs_accelerator_name(acc, small, sizeof small, &needed), DSRS_STATUS_BUFFER_TOO_SMALL,
          "dsrs_accelerator_name", "'buf'", "3 bytes", "4");
    CHECK(needed == 4); /* "cpu" + NUL */
    CHECK(small[0] == '#' && small[1] == '#' && small[2] == '#'); /* untouched */
    uint8_t st[5];
    memset(st, 0x5A, sizeof st);
    needed = 0;
    ABUSE("undersized buffer for dsrs_accelerator_rng_state",
          dsrs_accelerator_rng_state(acc, st, sizeof st, &needed), DSRS_STATUS_BUFFER_TOO_SMALL,
          "dsrs_accelerator_rng_state", "'buf'", "24");
    CHECK(needed == 24);
    for (size_t i = 0; i < sizeof st; i++) CHECK(st[i] == 0x5A);
    char tiny[8];
    memset(tiny, '#', sizeof tiny);
    needed = 0;
    ABUSE("undersized buffer for dsrs_report_json", dsrs_report_json(tiny, sizeof tiny, &needed),
          DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs_report_json", "'buf'", "8 bytes");
    CHECK(needed > sizeof tiny);
    for (size_t i = 0; i < sizeof tiny; i++) CHECK(tiny[i] == '#');

    /* dsrs_last_error_message with a too-small buffer keeps the stored message. */
    char full[512], part[4];
    size_t need_full = 0, need_part = 0;
    REQUIRE_OK(dsrs_last_error_message(full, sizeof full, &need_full));
    memset(part, '#', sizeof part);
    dsrs_status s = dsrs_last_error_message(part, sizeof part, &need_part);
    char again[512];
    size_t need_again = 0;
    REQUIRE_OK(dsrs_last_error_message(again, sizeof again, &need_again));
    dsrs_status recorded = DSRS_STATUS_OK;
    CHECK_OK(dsrs_last_error_status(&recorded));
    ABUSE_OK("last_error_message into 4 bytes: TOO_SMALL, message kept",
             s == DSRS_STATUS_BUFFER_TOO_SMALL && need_part == need_full &&
                 strcmp(full, again) == 0 && recorded == DSRS_STATUS_BUFFER_TOO_SMALL &&
                 part[0] == '#' && strstr(again, "dsrs_report_json") != NULL);
    ABUSE_OK("last_error_message(NULL, 4): NULL_ARGUMENT, message kept",
             dsrs_last_error_message(NULL, 4, &need_part) == DSRS_STATUS_NULL_ARGUMENT &&
                 dsrs_last_error_message(again, sizeof again, &need_again) == DSRS_STATUS_OK &&
                 strcmp(full, again) == 0);
  }

  printf("-- strings, JSON options, accelerator names\n");
  ABUSE("invalid UTF-8 accelerator name", dsrs_accelerator_new("\xff\xfe", NULL, &nope),
        DSRS_STATUS_INVALID_UTF8, "dsrs_accelerator_new", "'name'", "UTF-8");
  ABUSE("invalid UTF-8 range name", dsrs_accelerator_range_push(acc, "ok\xc3"),
        DSRS_STATUS_INVALID_UTF8, "dsrs_accelerator_range_push", "'name'", "offset 2");
  ABUSE("malformed JSON options", dsrs_accelerator_new("cpu", "{\"devices\": 2", &nope),
        DSRS_STATUS_INVALID_JSON, "dsrs_accelerator_new", "accelerator options", "line 1");
  ABUSE("options not an object", dsrs_accelerator_new("cpu", "[1, 2]", &nope),
        DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "options", "JSON object");
  ABUSE("wrong option type {\"memory_limit\":\"lots\"}",
        dsrs_accelerator_new("cpu", "{\"memory_limit\":\"lots\"}", &nope),
        DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "memory_limit", "lots");
  ABUSE("unknown option {\"colour\": 3}", dsrs_accelerator_new("cpu", "{\"colour\": 3}", &nope),
        DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "colour", "devices, memory_limit, seed");
  ABUSE("devices 0", dsrs_accelerator_new("cpu", "{\"devices\": 0}", &nope),
        DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "devices", "0");
  ABUSE("unknown accelerator name", dsrs_accelerator_new("tpu9000", NULL, &nope),
        DSRS_STATUS_UNKNOWN_ACCELERATOR, "dsrs_accelerator_new", "tpu9000", "cpu", "cuda");
  CHECK(nope == NULL); /* out-params are written only on success */

  printf("-- allocation, bounds, fills\n");
  ABUSE("alignment 3", dsrs_buffer_new(acc, 16, 3, DSRS_MEMORY_DEVICE, &never),
        DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_new", "alignment", "3");
  ABUSE("SIZE_MAX bytes", dsrs_buffer_new(acc, SIZE_MAX, 0, DSRS_MEMORY_DEVICE, &never),
        DSRS_STATUS_OUT_OF_MEMORY, "dsrs_buffer_new", "18446744073709551615");
  CHECK(never == NULL);
  char sz[32];
  snprintf(sz, sizeof sz, "%zu bytes", size);
  ABUSE("write past the end", dsrs_buffer_write(buf, size - 3, data, 4, NULL),
        DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_write", "write", sz);
  ABUSE("read past the end", dsrs_buffer_read(buf, 1, sink, size, NULL), DSRS_STATUS_OUT_OF_RANGE,
        "dsrs_buffer_read", "read", sz);
  ABUSE("SIZE_MAX offset (offset + n overflows)", dsrs_buffer_read(buf, SIZE_MAX, sink, 2, NULL),
        DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_read", "18446744073709551615");
  ABUSE("copy source range past the end", dsrs_buffer_copy(buf, 0, buf, size - 1, 2, NULL),
        DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_copy", "copy source");
  {
    uint32_t pattern = 0xDEADBEEF;
    ABUSE("fill pattern_size 3", dsrs_buffer_fill(buf, 0, 6, &pattern, 3, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_fill", "pattern_size", "3");
    ABUSE("fill length not a multiple of the pattern", dsrs_buffer_fill(buf, 0, 6, &pattern, 4, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_fill", "pattern_size", "6 bytes");
    ABUSE("fill with a NULL pattern", dsrs_buffer_fill(buf, 0, 4, NULL, 4, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_fill", "'pattern'");
  }
  {
    unsigned char *back = (unsigned char *)malloc(size);
    REQUIRE_OK(dsrs_buffer_read(buf, 0, back, size, NULL));
    ABUSE_OK("... failed writes and fills left the buffer untouched",
             memcmp(back, data, size) == 0);
    free(back);
  }

  printf("-- views and DLPack exports\n");
  DLTensor view;
  memset(&view, 0x77, sizeof view);
  {
    int64_t big[2] = {(int64_t)size, 2};
    ABUSE("view larger than the buffer", dsrs_buffer_view(buf, 0, dt(kDLFloat, 32, 1), big, 2, &view),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_view", sz, "float32");
    int64_t neg[2] = {2, -3};
    ABUSE("negative extent", dsrs_buffer_view(buf, 0, dt(kDLFloat, 32, 1), neg, 2, &view),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_view", "'shape'", "shape[1] = -3");
    int64_t many[33];
    for (int i = 0; i < 33; i++) many[i] = 1;
    ABUSE("ndim 33", dsrs_buffer_view(buf, 0, dt(kDLFloat, 32, 1), many, 33, &view),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_view", "'ndim'", "33");
    ABUSE("dtype with 4 lanes", dsrs_buffer_view(buf, 0, dt(kDLFloat, 32, 4), shape2, 2, &view),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_view", "lanes", "4");
    ABUSE("dtype code 99", dsrs_buffer_view(buf, 0, dt(99, 32, 1), shape2, 2, &view),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_view", "code 99");
    ABUSE("misaligned byte_offset (2 for float32)",
          dsrs_buffer_view(buf, 2, dt(kDLFloat, 32, 1), shape2, 2, &view),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_view", "'byte_offset'", "2");
    ABUSE("view with NULL shape and ndim 2", dsrs_buffer_view(buf, 0, dt(kDLFloat, 32, 1), NULL, 2, &view),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_view", "'shape'");
    DLManagedTensor *m = NULL;
    ABUSE("DLPack export with a misaligned offset",
          dsrs_buffer_to_dlpack(buf, 6, dt(kDLFloat, 64, 1), shape2, 2, &m),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_to_dlpack", "'byte_offset'", "6");
    CHECK(m == NULL);
    unsigned char pristine[sizeof view];
    memset(pristine, 0x77, sizeof pristine);
    CHECK(memcmp(&view, pristine, sizeof view) == 0); /* out-param untouched */
  }

  printf("-- tensors and random fills\n");
  {
    int8_t bytes[6];
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.data = bytes;
    t.device.device_type = kDLCPU;
    t.ndim = 2;
    t.dtype = dt(kDLInt, 8, 1);
    t.shape = shape2;
    ABUSE("normal numbers into int8", dsrs_accelerator_rng_fill(acc, &t, DSRS_DISTRIBUTION_NORMAL, 0, 1, NULL),
          DSRS_STATUS_UNSUPPORTED, "dsrs_accelerator_rng_fill", "normal", "int8");
    float f[6];
    t.dtype = dt(kDLFloat, 32, 1);
    t.data = f;
    ABUSE("uniform with low > high", dsrs_accelerator_rng_fill(acc, &t, DSRS_DISTRIBUTION_UNIFORM, 2, 1, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_rng_fill", "low=2", "high=1");
    ABUSE("normal with NaN std", dsrs_accelerator_rng_fill(acc, &t, DSRS_DISTRIBUTION_NORMAL, 0, NAN, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_rng_fill", "std=NaN");
    t.data = NULL;
    ABUSE("NULL data with 6 elements", dsrs_accelerator_rng_fill(acc, &t, DSRS_DISTRIBUTION_UNIFORM, 0, 1, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_rng_fill", "tensor->data", "6 elements");
    t.data = f;
    int64_t column_major[2] = {1, 2};
    t.strides = column_major;
    ABUSE("non-contiguous strides", dsrs_accelerator_rng_fill(acc, &t, DSRS_DISTRIBUTION_UNIFORM, 0, 1, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_rng_fill", "contiguous", "tensor");
    ABUSE("non-contiguous source tensor", dsrs_buffer_copy_from_tensor(buf, 0, &t, NULL),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_buffer_copy_from_tensor", "'src'", "contiguous");
    t.strides = NULL;
    t.device.device_type = kDLCUDA;
    ABUSE("device (CUDA) tensor as a host tensor", dsrs_buffer_copy_to_tensor(buf, 0, &t, NULL),
          DSRS_STATUS_UNSUPPORTED, "dsrs_buffer_copy_to_tensor", "'dst'", "device type 2");
    ABUSE("NULL tensor", dsrs_accelerator_rng_fill(acc, NULL, DSRS_DISTRIBUTION_UNIFORM, 0, 1, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_rng_fill", "'tensor'");
  }

  printf("-- generator state\n");
  {
    uint8_t saved[24];
    size_t needed = 0;
    REQUIRE_OK(dsrs_accelerator_manual_seed(acc, test_rng_next()));
    REQUIRE_OK(dsrs_accelerator_rng_state(acc, saved, sizeof saved, &needed));
    uint32_t expect[16], got[16];
    draw(acc, expect, 16); /* what the generator gives from `saved` */
    REQUIRE_OK(dsrs_accelerator_set_rng_state(acc, saved, sizeof saved));
    ABUSE("set_rng_state with 5 bytes", dsrs_accelerator_set_rng_state(acc, saved, 5),
          DSRS_STATUS_FORMAT, "dsrs_accelerator_set_rng_state", "24 bytes", "got 5");
    uint8_t bad[24];
    memcpy(bad, saved, sizeof bad);
    bad[0] = 'X';
    ABUSE("set_rng_state with a bad magic", dsrs_accelerator_set_rng_state(acc, bad, sizeof bad),
          DSRS_STATUS_FORMAT, "dsrs_accelerator_set_rng_state", "DSRSPHX1");
    ABUSE("set_rng_state (NULL, 24)", dsrs_accelerator_set_rng_state(acc, NULL, 24),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_set_rng_state", "'state'", "24");
    draw(acc, got, 16);
    ABUSE_OK("... the refused states left the generator unchanged",
             memcmp(expect, got, sizeof got) == 0);
  }

  printf("-- events, ranges, streams\n");
  {
    dsrs_event *end = NULL, *untimed = NULL;
    REQUIRE_OK(dsrs_event_new(acc, true, &end));
    REQUIRE_OK(dsrs_event_new(acc, false, &untimed));
    double ms = 0;
    ABUSE("elapsed_ms on unrecorded events", dsrs_event_elapsed_ms(ev, end, &ms),
          DSRS_STATUS_INVALID_STATE, "dsrs_event_elapsed_ms", "start event", "not been recorded");
    REQUIRE_OK(dsrs_event_record(ev, NULL));
    ABUSE("elapsed_ms with an unrecorded end event", dsrs_event_elapsed_ms(ev, end, &ms),
          DSRS_STATUS_INVALID_STATE, "dsrs_event_elapsed_ms", "end event", "not been recorded");
    REQUIRE_OK(dsrs_event_record(untimed, NULL));
    ABUSE("elapsed_ms on an event without timing", dsrs_event_elapsed_ms(ev, untimed, &ms),
          DSRS_STATUS_INVALID_STATE, "dsrs_event_elapsed_ms", "end event", "without timing");
    CHECK_OK(dsrs_event_free(end));
    CHECK_OK(dsrs_event_free(untimed));
  }
  ABUSE("range_pop with nothing pushed", dsrs_accelerator_range_pop(acc), DSRS_STATUS_INVALID_STATE,
        "dsrs_accelerator_range_pop", "range_pop", "range_push");
  {
    dsrs_stream *foreign = NULL;
    REQUIRE_OK(dsrs_stream_new(other, &foreign));
    ABUSE("stream of accelerator B with a buffer of accelerator A",
          dsrs_buffer_write(buf, 0, data, 8, foreign), DSRS_STATUS_INVALID_ARGUMENT,
          "dsrs_buffer_write", "'stream'", "another accelerator");
    ABUSE("stream of B made current on A", dsrs_accelerator_set_current_stream(acc, foreign),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_set_current_stream", "'stream'");
    ABUSE("event of A recorded on a stream of B", dsrs_event_record(ev, foreign),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_event_record", "'stream'");
    CHECK_OK(dsrs_stream_free(foreign));
  }

  printf("-- status names, panics\n");
  ABUSE_OK("dsrs_status_str(12345) is \"DSRS_STATUS_UNKNOWN\"",
           strcmp(dsrs_status_str(12345), "DSRS_STATUS_UNKNOWN") == 0 &&
               strcmp(dsrs_status_str(-1), "DSRS_STATUS_UNKNOWN") == 0);
  ABUSE("dsrs_debug_panic(\"boom\")", dsrs_debug_panic("boom"), DSRS_STATUS_PANIC,
        "dsrs_debug_panic", "panic", "boom");
  {
    /* The library still works after the panic. */
    uint32_t count = 0;
    unsigned char back[16];
    bool ok = dsrs_accelerator_device_count(acc, &count) == DSRS_STATUS_OK && count >= 1 &&
              dsrs_buffer_read(buf, 0, back, sizeof back, NULL) == DSRS_STATUS_OK &&
              memcmp(back, data, sizeof back) == 0;
    dsrs_buffer *fresh = NULL;
    ok = ok && dsrs_buffer_new(acc, 64, 0, DSRS_MEMORY_DEVICE, &fresh) == DSRS_STATUS_OK &&
         dsrs_buffer_free(fresh) == DSRS_STATUS_OK;
    ABUSE_OK("... the library still works after the panic", ok);
  }

  printf("-- every other entry point: stale, wrong-type and NULL arguments\n");
  {
    /* Freed handles of every type. */
    dsrs_accelerator *dead_acc = NULL;
    dsrs_buffer *dead_buf = NULL;
    dsrs_stream *dead_stream = NULL, *live_stream = NULL;
    dsrs_event *dead_ev = NULL;
    REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &dead_acc));
    REQUIRE_OK(dsrs_buffer_new(acc, 64, 0, DSRS_MEMORY_DEVICE, &dead_buf));
    REQUIRE_OK(dsrs_stream_new(acc, &dead_stream));
    REQUIRE_OK(dsrs_event_new(acc, true, &dead_ev));
    REQUIRE_OK(dsrs_stream_new(acc, &live_stream));
    CHECK_OK(dsrs_accelerator_free(dead_acc));
    CHECK_OK(dsrs_buffer_free(dead_buf));
    CHECK_OK(dsrs_stream_free(dead_stream));
    CHECK_OK(dsrs_event_free(dead_ev));
    dsrs_accelerator *buf_as_acc = (dsrs_accelerator *)(void *)buf;
    uint64_t u64 = 0;
    int32_t i32 = 0;
    bool flag = false;
    void *ptr = NULL;
    dsrs_memory_kind kind = 0;
    dsrs_stream *got_stream = NULL;
    dsrs_accelerator *got_acc = NULL;
    DLManagedTensorVersioned *mtv = NULL;
    double ms = 0;

    ABUSE("available_memory on a freed accelerator", dsrs_accelerator_available_memory(dead_acc, -1, &u64),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_available_memory", "'accel'", "stale");
    ABUSE("memory_allocated with NULL out", dsrs_accelerator_memory_allocated(acc, -1, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_memory_allocated", "'out'");
    ABUSE("max_memory_allocated on device 999", dsrs_accelerator_max_memory_allocated(acc, 999, &u64),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_max_memory_allocated", "device 999");
    ABUSE("memory_reserved on a buffer handle", dsrs_accelerator_memory_reserved(buf_as_acc, -1, &u64),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_accelerator_memory_reserved", "dsrs_buffer");
    ABUSE("max_memory_reserved on device -2", dsrs_accelerator_max_memory_reserved(acc, -2, &u64),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_max_memory_reserved", "'device'", "-2");
    ABUSE("reset_peak_memory_stats on device 999", dsrs_accelerator_reset_peak_memory_stats(acc, 999),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_reset_peak_memory_stats", "device 999");
    ABUSE("synchronize device 999", dsrs_accelerator_synchronize(acc, 999), DSRS_STATUS_OUT_OF_RANGE,
          "dsrs_accelerator_synchronize", "device 999");
    ABUSE("empty_cache on a freed accelerator", dsrs_accelerator_empty_cache(dead_acc),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_empty_cache", "'accel'");
    ABUSE("memory_stats_json on device -2",
          dsrs_accelerator_memory_stats_json(acc, -2, text, sizeof text, &n), DSRS_STATUS_OUT_OF_RANGE,
          "dsrs_accelerator_memory_stats_json", "'device'");
    ABUSE("info_json with NULL 'needed'", dsrs_accelerator_info_json(acc, text, sizeof text, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_info_json", "'needed'");
    ABUSE("communication_backend on a freed accelerator",
          dsrs_accelerator_communication_backend(dead_acc, text, sizeof text, &n),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_communication_backend", "'accel'");
    ABUSE("names into a 2-byte buffer", dsrs_accelerator_names(text, 2, &n),
          DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs_accelerator_names", "2 bytes");
    ABUSE("current_device with NULL out", dsrs_accelerator_current_device(acc, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_current_device", "'out'");
    ABUSE("device_type on a buffer handle", dsrs_accelerator_device_type(buf_as_acc, &i32),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_accelerator_device_type", "dsrs_buffer");
    ABUSE("is_available with NULL out", dsrs_accelerator_is_available(acc, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_is_available", "'out'");
    ABUSE("is_synchronized_device on a freed accelerator",
          dsrs_accelerator_is_synchronized_device(dead_acc, &flag), DSRS_STATUS_STALE_HANDLE,
          "dsrs_accelerator_is_synchronized_device", "'accel'");
    ABUSE("is_bf16_supported with NULL out", dsrs_accelerator_is_bf16_supported(acc, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_is_bf16_supported", "'out'");
    ABUSE("is_fp16_supported on a freed accelerator", dsrs_accelerator_is_fp16_supported(dead_acc, &flag),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_is_fp16_supported", "'accel'");
    ABUSE("dtype_supported with NULL 'native'",
          dsrs_accelerator_dtype_supported(acc, dt(kDLFloat, 32, 1), &flag, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_dtype_supported", "'native'");
    ABUSE("dtype_supported of code 99", dsrs_accelerator_dtype_supported(acc, dt(99, 32, 1), &flag, &flag),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_dtype_supported", "dtype.code 99");
    ABUSE("initial_seed with NULL out", dsrs_accelerator_initial_seed(acc, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_initial_seed", "'out'");
    ABUSE("is_pinned with NULL out", dsrs_accelerator_is_pinned(acc, data, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_is_pinned", "'out'");
    ABUSE("default_stream with NULL out", dsrs_accelerator_default_stream(acc, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_default_stream", "'out'");
    ABUSE("current_stream of a freed accelerator", dsrs_accelerator_current_stream(dead_acc, &got_stream),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_current_stream", "'accel'");
    ABUSE("buffer_data of a freed buffer", dsrs_buffer_data(dead_buf, &ptr), DSRS_STATUS_STALE_HANDLE,
          "dsrs_buffer_data", "'buf'", "stale dsrs_buffer");
    ABUSE("buffer_kind of an accelerator handle", dsrs_buffer_kind((dsrs_buffer *)(void *)acc, &kind),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_buffer_kind", "dsrs_accelerator");
    ABUSE("buffer_device with NULL out", dsrs_buffer_device(buf, NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_buffer_device", "'out'");
    ABUSE("buffer_accelerator of a freed buffer", dsrs_buffer_accelerator(dead_buf, &got_acc),
          DSRS_STATUS_STALE_HANDLE, "dsrs_buffer_accelerator", "'buf'");
    ABUSE("to_dlpack_versioned with NULL out",
          dsrs_buffer_to_dlpack_versioned(buf, 0, dt(kDLFloat, 32, 1), shape2, 2, false, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_buffer_to_dlpack_versioned", "'out'");
    int64_t too_big[2] = {(int64_t)size, 8}; /* 8 * size float64 > size bytes */
    ABUSE("to_dlpack_versioned larger than the buffer",
          dsrs_buffer_to_dlpack_versioned(buf, 0, dt(kDLFloat, 64, 1), too_big, 2, true, &mtv),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_buffer_to_dlpack_versioned", "exceed");
    CHECK(mtv == NULL); /* not written on failure */
    ABUSE("stream_query of a freed stream", dsrs_stream_query(dead_stream, &flag),
          DSRS_STATUS_STALE_HANDLE, "dsrs_stream_query", "'stream'");
    ABUSE("stream_native_handle with NULL out", dsrs_stream_native_handle(live_stream, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_native_handle", "'out'");
    ABUSE("stream_wait_event with a NULL event", dsrs_stream_wait_event(live_stream, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_wait_event", "'event'");
    ABUSE("stream_wait_event on a freed event", dsrs_stream_wait_event(live_stream, dead_ev),
          DSRS_STATUS_STALE_HANDLE, "dsrs_stream_wait_event", "'event'");
    ABUSE("event_query of a freed event", dsrs_event_query(dead_ev, &flag), DSRS_STATUS_STALE_HANDLE,
          "dsrs_event_query", "'event'");
    ABUSE("event_synchronize on a stream handle",
          dsrs_event_synchronize((dsrs_event *)(void *)live_stream), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_event_synchronize", "dsrs_stream");
    ABUSE("event_elapsed_ms with a freed end event", dsrs_event_elapsed_ms(ev, dead_ev, &ms),
          DSRS_STATUS_STALE_HANDLE, "dsrs_event_elapsed_ms", "'end'");
    ABUSE("get_log_level with NULL out", dsrs_get_log_level(NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_get_log_level", "'out'");
    ABUSE_OK("set_log_callback(NULL, NULL) restores standard error",
             dsrs_set_log_callback(NULL, NULL) == DSRS_STATUS_OK);
    ABUSE_OK("clear_last_error forgets the message",
             dsrs_clear_last_error() == DSRS_STATUS_OK && strcmp(last_error(), "") == 0);
    CHECK_OK(dsrs_stream_free(live_stream));
  }

  printf("-- plugins, device properties, wrapped streams, graphs\n");
  {
    dsrs_accelerator *dead_acc = NULL;
    dsrs_stream *dead_stream = NULL, *live_stream = NULL, *wrapped = NULL;
    dsrs_event *live_ev = NULL;
    dsrs_graph *graph = NULL;
    REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &dead_acc));
    REQUIRE_OK(dsrs_stream_new(acc, &dead_stream));
    REQUIRE_OK(dsrs_stream_new(acc, &live_stream));
    REQUIRE_OK(dsrs_event_new(acc, false, &live_ev));
    CHECK_OK(dsrs_accelerator_free(dead_acc));
    CHECK_OK(dsrs_stream_free(dead_stream));
    /* No accelerator here makes graphs (cpu has none; CUDA is unavailable, see above), so
     * no dsrs_graph handle can exist: graph-tagged values are garbage, and other handles
     * passed as graphs are of the wrong type. (Stale graph handles need CUDA.) */
    dsrs_graph *garbage_graph = (dsrs_graph *)(uintptr_t)0x5a5aA6u; /* tag 0xA6, no slot */
    dsrs_graph *buf_as_graph = (dsrs_graph *)(void *)buf;
    size_t nodes = 12345;
    char names_before[256], names_after[256];
    REQUIRE_OK(dsrs_accelerator_names(names_before, sizeof names_before, &n));

    ABUSE("load_plugin with NULL path", dsrs_accelerator_load_plugin(NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_load_plugin", "'path'");
    ABUSE("load_plugin with an invalid UTF-8 path", dsrs_accelerator_load_plugin("lib\xff.so"),
          DSRS_STATUS_INVALID_UTF8, "dsrs_accelerator_load_plugin", "'path'");
    ABUSE("load_plugin with an empty path", dsrs_accelerator_load_plugin(""),
          DSRS_STATUS_PLUGIN_INVALID, "dsrs_accelerator_load_plugin", "cannot load accelerator plugin");
    ABUSE("load_plugin of a missing relative path",
          dsrs_accelerator_load_plugin("no/such/dir/libdsrs_nothing.so"), DSRS_STATUS_PLUGIN_INVALID,
          "dsrs_accelerator_load_plugin", "no/such/dir/libdsrs_nothing.so", "No such file");
    ABUSE_OK("... and nothing was registered",
             dsrs_accelerator_names(names_after, sizeof names_after, &n) == DSRS_STATUS_OK &&
                 strcmp(names_before, names_after) == 0);

    ABUSE("device_properties_json with NULL 'needed'",
          dsrs_accelerator_device_properties_json(acc, -1, text, sizeof text, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_accelerator_device_properties_json", "'needed'");
    ABUSE("device_properties_json of device 999",
          dsrs_accelerator_device_properties_json(acc, 999, text, sizeof text, &n),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_device_properties_json", "device 999");
    ABUSE("device_properties_json of device -2",
          dsrs_accelerator_device_properties_json(acc, -2, text, sizeof text, &n),
          DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_device_properties_json", "'device'", "-2");
    ABUSE("device_properties_json of a freed accelerator",
          dsrs_accelerator_device_properties_json(dead_acc, 0, text, sizeof text, &n),
          DSRS_STATUS_STALE_HANDLE, "dsrs_accelerator_device_properties_json", "'accel'");
    ABUSE("device_properties_json of a buffer handle",
          dsrs_accelerator_device_properties_json((dsrs_accelerator *)(void *)buf, 0, text,
                                                  sizeof text, &n),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_accelerator_device_properties_json", "dsrs_buffer");
    {
      char two[2] = {'#', '#'};
      size_t needed = 0;
      ABUSE("device_properties_json into 2 bytes",
            dsrs_accelerator_device_properties_json(acc, 0, two, sizeof two, &needed),
            DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs_accelerator_device_properties_json", "2 bytes");
      CHECK(needed > 2);                   /* the size needed is reported */
      CHECK(two[0] == '#' && two[1] == '#'); /* untouched */
    }
    ABUSE("device_properties_json (NULL, 5)",
          dsrs_accelerator_device_properties_json(acc, 0, NULL, 5, &n), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_accelerator_device_properties_json", "'buf'");

    ABUSE("stream_wrap with NULL out", dsrs_stream_wrap(acc, NULL, NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_stream_wrap", "'out'");
    ABUSE("stream_wrap with NULL accel", dsrs_stream_wrap(NULL, NULL, &wrapped),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_wrap", "'accel'");
    ABUSE("stream_wrap on a freed accelerator", dsrs_stream_wrap(dead_acc, NULL, &wrapped),
          DSRS_STATUS_STALE_HANDLE, "dsrs_stream_wrap", "'accel'");
    ABUSE("stream_wrap on a stream handle",
          dsrs_stream_wrap((dsrs_accelerator *)(void *)live_stream, NULL, &wrapped),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_stream_wrap", "dsrs_stream", "dsrs_accelerator");
    ABUSE("stream_wrap of a host pointer on cpu", dsrs_stream_wrap(acc, data, &wrapped),
          DSRS_STATUS_UNSUPPORTED, "dsrs_stream_wrap", "cpu", "native streams");
    CHECK(wrapped == NULL);

    ABUSE("begin_capture with NULL stream", dsrs_stream_begin_capture(NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_begin_capture", "'stream'");
    ABUSE("begin_capture on a freed stream", dsrs_stream_begin_capture(dead_stream),
          DSRS_STATUS_STALE_HANDLE, "dsrs_stream_begin_capture", "'stream'", "stale dsrs_stream");
    ABUSE("begin_capture on an event handle",
          dsrs_stream_begin_capture((dsrs_stream *)(void *)live_ev), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_stream_begin_capture", "dsrs_event");
    ABUSE("begin_capture on a cpu stream", dsrs_stream_begin_capture(live_stream),
          DSRS_STATUS_UNSUPPORTED, "dsrs_stream_begin_capture", "cpu", "graph capture");
    ABUSE("end_capture with NULL out", dsrs_stream_end_capture(live_stream, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_end_capture", "'out'");
    ABUSE("end_capture with NULL stream", dsrs_stream_end_capture(NULL, &graph),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_stream_end_capture", "'stream'");
    ABUSE("end_capture on a freed stream", dsrs_stream_end_capture(dead_stream, &graph),
          DSRS_STATUS_STALE_HANDLE, "dsrs_stream_end_capture", "'stream'");
    ABUSE("end_capture without a capture (cpu)", dsrs_stream_end_capture(live_stream, &graph),
          DSRS_STATUS_UNSUPPORTED, "dsrs_stream_end_capture", "cpu");
    CHECK(graph == NULL);

    ABUSE("graph_replay with NULL graph", dsrs_graph_replay(NULL, NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_graph_replay", "'graph'");
    ABUSE("graph_replay with NULL graph and a stream", dsrs_graph_replay(NULL, live_stream),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_graph_replay", "'graph'");
    ABUSE("graph_replay of a garbage graph handle", dsrs_graph_replay(garbage_graph, NULL),
          DSRS_STATUS_INVALID_HANDLE, "dsrs_graph_replay", "'graph'", "0x5a5aa6",
          "not a dsrs_graph handle");
    ABUSE("graph_replay of a buffer handle", dsrs_graph_replay(buf_as_graph, NULL),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_graph_replay", "'graph'", "dsrs_buffer", "dsrs_graph");
    ABUSE("graph_replay of a freed stream handle",
          dsrs_graph_replay((dsrs_graph *)(void *)dead_stream, NULL), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_graph_replay", "dsrs_stream");
    ABUSE("graph_node_count with NULL graph", dsrs_graph_node_count(NULL, &nodes),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_graph_node_count", "'graph'");
    ABUSE("graph_node_count with NULL out", dsrs_graph_node_count(garbage_graph, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_graph_node_count", "'out'");
    ABUSE("graph_node_count of an event handle",
          dsrs_graph_node_count((const dsrs_graph *)(void *)live_ev, &nodes),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_graph_node_count", "dsrs_event");
    ABUSE("graph_node_count of a garbage graph handle", dsrs_graph_node_count(garbage_graph, &nodes),
          DSRS_STATUS_INVALID_HANDLE, "dsrs_graph_node_count", "not a dsrs_graph handle");
    CHECK(nodes == 12345); /* not written on failure */
    ABUSE_OK("graph_free(NULL) is a no-op", dsrs_graph_free(NULL) == DSRS_STATUS_OK);
    ABUSE("graph_free of a garbage graph handle", dsrs_graph_free(garbage_graph),
          DSRS_STATUS_INVALID_HANDLE, "dsrs_graph_free", "'graph'", "not a dsrs_graph handle");
    ABUSE("graph_free of an accelerator handle", dsrs_graph_free((dsrs_graph *)(void *)acc),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_graph_free", "dsrs_accelerator", "dsrs_graph");
    ABUSE("a graph handle freed with dsrs_stream_free",
          dsrs_stream_free((dsrs_stream *)(void *)garbage_graph), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_stream_free", "'stream'", "dsrs_graph");
    ABUSE("a graph handle as a buffer", dsrs_buffer_size((const dsrs_buffer *)(void *)garbage_graph, &n),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_buffer_size", "'buf'", "dsrs_graph", "dsrs_buffer");
    {
      /* The accelerator and its stream still work after all that. */
      size_t before = 0;
      bool ok = dsrs_buffer_size(buf, &before) == DSRS_STATUS_OK && before == size &&
                dsrs_stream_synchronize(live_stream) == DSRS_STATUS_OK;
      ABUSE_OK("... and the stream and buffer still work", ok);
    }
    CHECK_OK(dsrs_event_free(live_ev));
    CHECK_OK(dsrs_stream_free(live_stream));
  }

  printf("-- ops (dsrs_op_*): NULL, stale, wrong-type and malformed arguments\n");
  {
    /* One tiny op, built into a private cache (the library refuses caches others can write). */
    char *root = test_tmpdir_new("dsrs_misuse_ops");
    char options[1024];
    snprintf(options, sizeof options, "{\"cache_dir\": \"%s/cache\"}", root);
    /* Calls without options use $DSRS_CACHE_DIR: private too, never the user's cache. */
    char env_cache[1024];
    snprintf(env_cache, sizeof env_cache, "%s/env-cache", root);
    const char *saved_env = getenv("DSRS_CACHE_DIR");
    char *keep_env = saved_env != NULL ? strdup(saved_env) : NULL;
    REQUIRE(setenv("DSRS_CACHE_DIR", env_cache, 1) == 0);
    REQUIRE_OK(dsrs_op_define(
        "{\"name\": \"dsrs_misuse_op\", \"sources\": [{\"name\": \"m.cpp\", \"text\":"
        " \"#include \\\"dsrs_op.h\\\"\\nDSRS_OP_EXPORT int dsrs_misuse_answer(void) { return 42; }\\n\"}],"
        " \"symbols\": [\"dsrs_misuse_answer\"]}"));
    dsrs_op *op = NULL, *dead_op = NULL, *never_op = NULL;
    REQUIRE_OK(dsrs_op_load("dsrs_misuse_op", options, &op));
    REQUIRE_OK(dsrs_op_load("dsrs_misuse_op", options, &dead_op));
    REQUIRE_OK(dsrs_op_free(dead_op));
    dsrs_op *buf_as_op = (dsrs_op *)(void *)buf;
    void *sym = NULL;
    const uint8_t *image = NULL;
    size_t image_len = 0;

    ABUSE("op_define with NULL spec", dsrs_op_define(NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_define", "'spec_json'");
    ABUSE("op_define with invalid UTF-8", dsrs_op_define("{\"name\": \"\xff\"}"),
          DSRS_STATUS_INVALID_UTF8, "dsrs_op_define", "'spec_json'");
    ABUSE("op_define with malformed JSON", dsrs_op_define("{\"name\":"), DSRS_STATUS_INVALID_JSON,
          "dsrs_op_define", "op definition");
    ABUSE("op_define with an empty name",
          dsrs_op_define("{\"name\": \"\", \"sources\": [{\"name\": \"a.cpp\", \"text\": \"\"}]}"),
          DSRS_STATUS_INVALID_CONFIG, "dsrs_op_define", "op name", "invalid");
    ABUSE("op_load with NULL name", dsrs_op_load(NULL, options, &never_op), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_load", "'name'");
    ABUSE("op_load with NULL out", dsrs_op_load("dsrs_misuse_op", options, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_op_load", "'out'");
    ABUSE("op_load with an invalid UTF-8 name", dsrs_op_load("op\xc3", options, &never_op),
          DSRS_STATUS_INVALID_UTF8, "dsrs_op_load", "'name'");
    ABUSE("op_load with invalid UTF-8 options", dsrs_op_load("dsrs_misuse_op", "{\"\xfe\": 1}", &never_op),
          DSRS_STATUS_INVALID_UTF8, "dsrs_op_load", "'options_json'");
    ABUSE("op_load with options not an object", dsrs_op_load("dsrs_misuse_op", "[true]", &never_op),
          DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "op build options", "JSON object");
    ABUSE("op_load with lock_timeout_s \"soon\"",
          dsrs_op_load("dsrs_misuse_op", "{\"lock_timeout_s\": \"soon\"}", &never_op),
          DSRS_STATUS_INVALID_CONFIG, "dsrs_op_load", "soon");
    ABUSE("op_load of an unknown op", dsrs_op_load("dsrs_misuse_nope", options, &never_op),
          DSRS_STATUS_UNKNOWN_OP, "dsrs_op_load", "dsrs_misuse_nope", "cpu_adam", "dsrs_misuse_op");
    CHECK(never_op == NULL); /* out-params are written only on success */
    ABUSE_OK("op_free(NULL) is a no-op", dsrs_op_free(NULL) == DSRS_STATUS_OK);
    ABUSE("double free of an op", dsrs_op_free(dead_op), DSRS_STATUS_STALE_HANDLE, "dsrs_op_free",
          "'op'", "already freed");
    ABUSE("buffer freed with dsrs_op_free", dsrs_op_free(buf_as_op), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_op_free", "'op'", "dsrs_buffer", "dsrs_op");
    ABUSE("garbage pointer (void*)0x1234 as an op",
          dsrs_op_symbol((const dsrs_op *)(void *)0x1234, "dsrs_misuse_answer", &sym),
          DSRS_STATUS_INVALID_HANDLE, "dsrs_op_symbol", "'op'", "0x1234", "not a dsrs_op handle");
    ABUSE("op_symbol on a freed op", dsrs_op_symbol(dead_op, "dsrs_misuse_answer", &sym),
          DSRS_STATUS_STALE_HANDLE, "dsrs_op_symbol", "'op'", "stale dsrs_op");
    ABUSE("op_symbol on a buffer handle", dsrs_op_symbol(buf_as_op, "dsrs_misuse_answer", &sym),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_op_symbol", "'op'", "dsrs_buffer", "dsrs_op");
    ABUSE("op_symbol with NULL symbol", dsrs_op_symbol(op, NULL, &sym), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_symbol", "'symbol'");
    ABUSE("op_symbol with NULL out", dsrs_op_symbol(op, "dsrs_misuse_answer", NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_op_symbol", "'out'");
    ABUSE("op_symbol with an invalid UTF-8 symbol", dsrs_op_symbol(op, "f\xff", &sym),
          DSRS_STATUS_INVALID_UTF8, "dsrs_op_symbol", "'symbol'");
    ABUSE("op_symbol of a name the op lacks", dsrs_op_symbol(op, "dsrs_misuse_question", &sym),
          DSRS_STATUS_SYMBOL_NOT_FOUND, "dsrs_op_symbol", "dsrs_misuse_question", "dsrs_misuse_answer");
    CHECK(sym == NULL);
    ABUSE("op_kernel on device -1", dsrs_op_kernel(op, -1, "k", &sym), DSRS_STATUS_OUT_OF_RANGE,
          "dsrs_op_kernel", "'device'", "-1");
    ABUSE("op_kernel on an accelerator handle",
          dsrs_op_kernel((const dsrs_op *)(void *)acc, 0, "k", &sym), DSRS_STATUS_WRONG_HANDLE_TYPE,
          "dsrs_op_kernel", "'op'", "dsrs_accelerator");
    ABUSE("op_kernel with NULL symbol", dsrs_op_kernel(op, 0, NULL, &sym), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_kernel", "'symbol'");
    ABUSE("op_kernel of a CPU op", dsrs_op_kernel(op, 0, "dsrs_misuse_answer", &sym),
          DSRS_STATUS_INVALID_ARGUMENT, "dsrs_op_kernel", "CPU op", "dsrs_op_symbol");
    ABUSE("op_image with NULL data", dsrs_op_image(op, NULL, &image_len), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_image", "'data'");
    ABUSE("op_image with NULL len", dsrs_op_image(op, &image, NULL), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_image", "'len'");
    ABUSE("op_image of a freed op", dsrs_op_image(dead_op, &image, &image_len),
          DSRS_STATUS_STALE_HANDLE, "dsrs_op_image", "'op'");
    ABUSE("op_image of a CPU op", dsrs_op_image(op, &image, &image_len), DSRS_STATUS_INVALID_ARGUMENT,
          "dsrs_op_image", "CPU op");
    CHECK(sym == NULL && image == NULL && image_len == 0);
    ABUSE("op_info_json with NULL 'needed'", dsrs_op_info_json(op, text, sizeof text, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_op_info_json", "'needed'");
    ABUSE("op_info_json into 2 bytes", dsrs_op_info_json(op, text, 2, &n), DSRS_STATUS_BUFFER_TOO_SMALL,
          "dsrs_op_info_json", "'buf'", "2 bytes");
    ABUSE("op_info_json (NULL, 5)", dsrs_op_info_json(op, NULL, 5, &n), DSRS_STATUS_NULL_ARGUMENT,
          "dsrs_op_info_json", "'buf'", "5");
    ABUSE("op_info_json on an event handle",
          dsrs_op_info_json((const dsrs_op *)(void *)ev, text, sizeof text, &n),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_op_info_json", "'op'", "dsrs_event");
    ABUSE("op_info_json of a freed op", dsrs_op_info_json(dead_op, text, sizeof text, &n),
          DSRS_STATUS_STALE_HANDLE, "dsrs_op_info_json", "'op'");
    ABUSE("op_list_json with NULL 'needed'", dsrs_op_list_json(options, text, sizeof text, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_op_list_json", "'needed'");
    ABUSE("op_list_json into 2 bytes", dsrs_op_list_json(options, text, 2, &n),
          DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs_op_list_json", "2 bytes");
    ABUSE("op_list_json with malformed options", dsrs_op_list_json("{", text, sizeof text, &n),
          DSRS_STATUS_INVALID_JSON, "dsrs_op_list_json", "op build options");
    ABUSE("op_list_json with an unknown option",
          dsrs_op_list_json("{\"colour\": 1}", text, sizeof text, &n), DSRS_STATUS_INVALID_CONFIG,
          "dsrs_op_list_json", "colour");
    ABUSE("op_cache_dir with NULL 'needed'", dsrs_op_cache_dir(text, sizeof text, NULL),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_op_cache_dir", "'needed'");
    {
      char two[2] = {'#', '#'};
      ABUSE("op_cache_dir into 2 bytes", dsrs_op_cache_dir(two, sizeof two, &n),
            DSRS_STATUS_BUFFER_TOO_SMALL, "dsrs_op_cache_dir", "2 bytes");
      CHECK(two[0] == '#' && two[1] == '#'); /* untouched */
    }
    REQUIRE(setenv("DSRS_CACHE_DIR", "relative/cache", 1) == 0);
    ABUSE("op_cache_dir with DSRS_CACHE_DIR relative", dsrs_op_cache_dir(text, sizeof text, &n),
          DSRS_STATUS_INVALID_CONFIG, "dsrs_op_cache_dir", "DSRS_CACHE_DIR", "relative/cache");
    REQUIRE(setenv("DSRS_CACHE_DIR", env_cache, 1) == 0);
    ABUSE("live op passed as a buffer", dsrs_buffer_size((dsrs_buffer *)(void *)op, &n),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_buffer_size", "'buf'", "dsrs_op", "dsrs_buffer");
    ABUSE("live op freed with dsrs_stream_free", dsrs_stream_free((dsrs_stream *)(void *)op),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_stream_free", "'stream'", "dsrs_op");
    {
      /* After all that, the op still works. */
      int (*answer)(void) = NULL;
      bool ok = dsrs_op_symbol(op, "dsrs_misuse_answer", &sym) == DSRS_STATUS_OK && sym != NULL;
      if (ok) {
        memcpy(&answer, &sym, sizeof answer); /* object to function pointer, as dlsym */
        ok = answer() == 42;
      }
      ABUSE_OK("... and the op still works", ok);
    }
    CHECK_OK(dsrs_op_free(op));
    if (keep_env != NULL) {
      REQUIRE(setenv("DSRS_CACHE_DIR", keep_env, 1) == 0);
    } else {
      REQUIRE(unsetenv("DSRS_CACHE_DIR") == 0);
    }
    free(keep_env);
    test_tmpdir_remove(root);
    free(root);
  }

  printf("-- the training engine (dsrs_engine_*): NULL, stale and wrong-type handles\n");
  {
    dsrs_engine *eng = NULL;
    CHECK_OK(dsrs_engine_new(acc,
                             "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", "
                             "\"params\": {\"lr\": 0.1}}}",
                             &eng));
    CHECK_OK(dsrs_engine_free(eng));
    size_t count = 0;
    dsrs_step_record rec;
    ABUSE("engine_num_params of a freed engine", dsrs_engine_num_params(eng, &count),
          DSRS_STATUS_STALE_HANDLE, "dsrs_engine_num_params", "'engine'", "stale dsrs_engine");
    ABUSE("engine_step of a freed engine", dsrs_engine_step(eng, NULL, &rec),
          DSRS_STATUS_STALE_HANDLE, "dsrs_engine_step", "'engine'", "stale dsrs_engine");
    ABUSE("engine_free twice", dsrs_engine_free(eng), DSRS_STATUS_STALE_HANDLE, "dsrs_engine_free",
          "'engine'", "stale dsrs_engine");
    ABUSE("engine_step with a NULL engine", dsrs_engine_step(NULL, NULL, &rec),
          DSRS_STATUS_NULL_ARGUMENT, "dsrs_engine_step", "'engine'");
    ABUSE("engine_finalize of a buffer handle", dsrs_engine_finalize((dsrs_engine *)(void *)buf),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_engine_finalize", "'engine'", "dsrs_buffer",
          "dsrs_engine");
    ABUSE("engine_free of an accelerator handle", dsrs_engine_free((dsrs_engine *)(void *)acc),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_engine_free", "'engine'", "dsrs_accelerator");
    ABUSE("buffer_size of a freed engine handle", dsrs_buffer_size((dsrs_buffer *)(void *)eng, &count),
          DSRS_STATUS_WRONG_HANDLE_TYPE, "dsrs_buffer_size", "'buf'", "dsrs_engine");
    int local = 0;
    ABUSE("engine_set_lr of a stack address", dsrs_engine_set_lr((dsrs_engine *)(void *)&local, 1.0),
          DSRS_STATUS_INVALID_HANDLE, "dsrs_engine_set_lr", "'engine'");
  }

  printf("-- every dsrs_engine_* function: a freed engine, an accelerator as an engine\n");
  {
    /* A finalized engine with a parameter, so that each call below would succeed on it. */
    dsrs_engine *eng = NULL;
    REQUIRE_OK(dsrs_engine_new(acc,
                               "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", "
                               "\"params\": {\"lr\": 0.1}}}",
                               &eng));
    engine_outs live;
    memset(&live, 0, sizeof live);
    CHECK_OK(ec_register_param(eng, &live));
    CHECK_OK(dsrs_engine_finalize(eng));
    REQUIRE_OK(dsrs_engine_free(eng));
    const size_t ncalls = sizeof ENGINE_CALLS / sizeof ENGINE_CALLS[0];
    CHECK(ncalls == 16);
    for (size_t i = 0; i < ncalls; i++) {
      engine_outs outs, before;
      memset(&outs, 0x5e, sizeof outs);
      before = outs;
      char what[96];
      snprintf(what, sizeof what, "%s of a freed engine", ENGINE_CALLS[i].function + 5);
      ABUSE(what, ENGINE_CALLS[i].call(eng, &outs), DSRS_STATUS_STALE_HANDLE,
            ENGINE_CALLS[i].function, "'engine'", "stale dsrs_engine");
      if (memcmp(&outs, &before, sizeof outs) != 0) {
        fprintf(stderr, "misuse_test.c: %s wrote an out-parameter on failure\n", what);
        check_failures_++;
      }
    }
    /* The same calls with an accelerator handle where the engine goes. */
    for (size_t i = 0; i < ncalls; i++) {
      engine_outs outs, before;
      memset(&outs, 0x5e, sizeof outs);
      before = outs;
      char what[96];
      snprintf(what, sizeof what, "%s of an accelerator handle", ENGINE_CALLS[i].function + 5);
      ABUSE(what, ENGINE_CALLS[i].call((dsrs_engine *)(void *)other, &outs),
            DSRS_STATUS_WRONG_HANDLE_TYPE, ENGINE_CALLS[i].function, "'engine'",
            "dsrs_accelerator", "dsrs_engine");
      if (memcmp(&outs, &before, sizeof outs) != 0) {
        fprintf(stderr, "misuse_test.c: %s wrote an out-parameter on failure\n", what);
        check_failures_++;
      }
    }
    /* The accelerator is unharmed. */
    uint32_t devices = 0;
    CHECK_OK(dsrs_accelerator_device_count(other, &devices));
    CHECK(devices == 2);
  }

  CHECK_OK(dsrs_event_free(ev));
  CHECK_OK(dsrs_buffer_free(buf));
  CHECK_OK(dsrs_accelerator_free(other));
  CHECK_OK(dsrs_accelerator_free(acc));
  free(data);
  free(sink);
  printf("misuse_test: %d abuses checked\n", abuse_count);
  CHECK(abuse_count >= 200);
  return check_exit_code("misuse_test");
}
