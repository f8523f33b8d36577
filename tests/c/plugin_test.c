/*
 * plugin_test.c — accelerator plugins through the deepspeed_rs C ABI only, with the example
 * plugin examples/plugin_hostmem (a "device" whose memory is host RAM behind the plugin's
 * own caching allocator, declared as device memory so that everything crosses the plugin
 * table) and the broken libraries of fake_plugin.c. tests/c/CMakeLists.txt builds them and
 * passes their paths as DSRS_TEST_PLUGIN_<VARIANT>.
 *
 *   plugin_test                    loading (twice, by symlink; every PLUGIN_INVALID case:
 *                                  missing file, not ELF, no entry, ABI 99, NULL table,
 *                                  short table, required entries NULL, half a stream group,
 *                                  bad name, name clashes), names in detection order,
 *                                  creation with options, devices and properties, buffers
 *                                  on both devices against host mirrors, device-to-device
 *                                  copies, fills, memory statistics (granules, peaks, cache,
 *                                  empty_cache, out of memory), DLPack, streams that count
 *                                  their work, timed events, ranges, the same random numbers
 *                                  as the cpu accelerator, dtype support, stream_wrap and
 *                                  graph capture unsupported, a failing init, probe
 *                                  "unavailable", a plugin with events but no streams,
 *                                  copies between plugin instances, lifetimes, detection
 *                                  and the report, the training engine refused
 *                                  (DSRS_STATUS_UNSUPPORTED)
 *   plugin_test env-detect         DSRS_ACCELERATOR_PLUGINS=good:bad-abi: detection picks
 *                                  the plugin; the report lists the bad one with its reason
 *   plugin_test env-override-cpu   ... and DSRS_ACCELERATOR=cpu still selects cpu
 *   plugin_test env-override-hostmem   DSRS_ACCELERATOR=HOSTMEM selects the plugin
 *   plugin_test env-failinit-first DSRS_ACCELERATOR_PLUGINS=fail-init:good: detection skips
 *                                  the plugin whose init fails, and says why
 *   plugin_test env-unavailable    HOSTMEM_UNAVAILABLE=1: the probe says no; cpu is selected
 *
 * Data are random (the seed is printed; DSRS_TEST_SEED=<seed> reproduces a run).
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "tmpdir.h"

#if !defined(DSRS_TEST_PLUGIN_GOOD) || !defined(DSRS_TEST_PLUGIN_BAD_ABI) ||                \
    !defined(DSRS_TEST_PLUGIN_FAIL_INIT) || !defined(DSRS_TEST_PLUGIN_NO_ENTRY) ||          \
    !defined(DSRS_TEST_PLUGIN_EVENTS_ONLY)
#error "tests/c/CMakeLists.txt defines the DSRS_TEST_PLUGIN_* paths"
#endif

#define SECTION(name) printf("-- %s\n", name)
#define GRANULE 512u /* hostmem rounds allocations up to this */

static size_t round_granule(size_t n) { return (n + GRANULE - 1) / GRANULE * GRANULE; }

static DLDataType dt(uint8_t code, uint8_t bits) {
  DLDataType t = {code, bits, 1};
  return t;
}

/* The canonical path of a file (what the library's messages name), malloc'd. */
static char *canonical(const char *path) {
  char *p = realpath(path, NULL);
  REQUIRE(p != NULL);
  return p;
}

/* Checks a failure: status, dsrs_last_error_status, the "function: " prefix, and that the
 * message contains every needle (a NULL-terminated list). */
static void expect_failure(int line, const char *what, dsrs_status got, dsrs_status want,
                           const char *function, const char *const *needles) {
  const char *msg = last_error();
  printf("%-52s -> %s | %s\n", what, status_name(got), msg);
  if (got != want) {
    fprintf(stderr, "plugin_test.c:%d: %s: expected %s, got %s\n", line, what,
            status_name(want), status_name(got));
    check_failures_++;
    return;
  }
  dsrs_status recorded = DSRS_STATUS_OK;
  CHECK_OK(dsrs_last_error_status(&recorded));
  CHECK(recorded == want);
  size_t fl = strlen(function);
  if (strncmp(msg, function, fl) != 0 || strncmp(msg + fl, ": ", 2) != 0) {
    fprintf(stderr, "plugin_test.c:%d: %s: the message does not start with \"%s: \"\n", line,
            what, function);
    check_failures_++;
  }
  for (const char *const *n = needles; *n != NULL; n++) {
    if (strstr(msg, *n) == NULL) {
      fprintf(stderr, "plugin_test.c:%d: %s: the message lacks \"%s\"\n", line, what, *n);
      check_failures_++;
    }
  }
}

/* EXPECT_FAIL(description, call, expected status, "function", "needle", ...) */
#define EXPECT_FAIL(what, call, want, function, ...)                                      \
  expect_failure(__LINE__, what, (call), want, function, (const char *const[]){__VA_ARGS__, NULL})

/* The names of every accelerator, comma-separated (malloc'd). */
static char *names_now(void) {
  char *names = NULL;
  READ_STRING(names, dsrs_accelerator_names(buf_, len_, &needed_));
  return names;
}

static void check_names(const char *expect) {
  char *names = names_now();
  printf("accelerators: %s\n", names);
  if (strcmp(names, expect) != 0) {
    fprintf(stderr, "accelerator names are \"%s\", expected \"%s\"\n", names, expect);
    check_failures_++;
  }
  free(names);
}

static char *accel_name(const dsrs_accelerator *a) {
  char *name = NULL;
  READ_STRING(name, dsrs_accelerator_name(a, buf_, len_, &needed_));
  return name;
}

/* The unsigned number after "key": in a flat JSON text; UINT64_MAX if absent. */
static uint64_t json_u64(const char *json, const char *key) {
  char pattern[128];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char *p = strstr(json, pattern);
  if (p == NULL) return UINT64_MAX;
  return strtoull(p + strlen(pattern), NULL, 10);
}

/* The flat JSON object ({...} without nested objects) of `json` that contains `needle`,
 * malloc'd; NULL if none. */
static char *json_object_with(const char *json, const char *needle) {
  const char *at = strstr(json, needle);
  if (at == NULL) return NULL;
  const char *open = at, *close = strchr(at, '}');
  while (open > json && *open != '{') open--;
  if (*open != '{' || close == NULL) return NULL;
  size_t n = (size_t)(close - open) + 1;
  char *out = (char *)malloc(n + 1);
  REQUIRE(out != NULL);
  memcpy(out, open, n);
  out[n] = '\0';
  return out;
}

static char *report_now(void) {
  char *report = NULL;
  READ_STRING(report, dsrs_report_json(buf_, len_, &needed_));
  return report;
}

/* Checks the report's "selection" object: the accelerator's name, the method, and (if not
 * NULL) a fragment of the reason. */
static void check_selection(const char *report, const char *name, const char *method,
                            const char *reason_part) {
  const char *sel = strstr(report, "\"selection\":{");
  REQUIRE(sel != NULL);
  char *obj = json_object_with(sel, "\"method\"");
  REQUIRE(obj != NULL);
  printf("selection: %s\n", obj);
  char want[128];
  snprintf(want, sizeof want, "\"name\":\"%s\"", name);
  CHECK(strstr(obj, want) != NULL);
  snprintf(want, sizeof want, "\"method\":\"%s\"", method);
  CHECK(strstr(obj, want) != NULL);
  if (reason_part != NULL) CHECK(strstr(obj, reason_part) != NULL);
  free(obj);
  CHECK(strstr(report, "\"error\":null") != NULL);
}

/* Checks the report's candidate named `name`: available or not, and fragments of its
 * detail (a NULL-terminated list). */
static void check_candidate_(const char *report, const char *name, bool available,
                             const char *const *parts) {
  char needle[PATH_MAX + 32];
  snprintf(needle, sizeof needle, "\"name\":\"%s\"", name);
  const char *cands = strstr(report, "\"candidates\":[");
  REQUIRE(cands != NULL);
  char *obj = json_object_with(cands, needle);
  if (obj == NULL) {
    fprintf(stderr, "the report has no candidate %s\n", name);
    check_failures_++;
    return;
  }
  printf("candidate: %s\n", obj);
  CHECK(strstr(obj, available ? "\"available\":true" : "\"available\":false") != NULL);
  CHECK(strstr(obj, "\"builtin\":false") != NULL);
  for (const char *const *p = parts; *p != NULL; p++) {
    if (strstr(obj, *p) == NULL) {
      fprintf(stderr, "candidate %s: the detail lacks \"%s\"\n", name, *p);
      check_failures_++;
    }
  }
  free(obj);
}
/* check_candidate(report, name, available, "detail fragment", ...) */
#define check_candidate(report, name, available, ...)                                      \
  check_candidate_(report, name, available, (const char *const[]){__VA_ARGS__, NULL})

/* Memory figures of one device. */
typedef dsrs_status (*u64_fn)(const dsrs_accelerator *, int32_t, uint64_t *);
static uint64_t figure(const dsrs_accelerator *a, u64_fn fn, int32_t device) {
  uint64_t v = 0;
  REQUIRE_OK(fn(a, device, &v));
  return v;
}
#define ALLOCATED(a, d) figure(a, dsrs_accelerator_memory_allocated, d)
#define MAX_ALLOCATED(a, d) figure(a, dsrs_accelerator_max_memory_allocated, d)
#define RESERVED(a, d) figure(a, dsrs_accelerator_memory_reserved, d)
#define MAX_RESERVED(a, d) figure(a, dsrs_accelerator_max_memory_reserved, d)
#define AVAILABLE(a, d) figure(a, dsrs_accelerator_available_memory, d)

static uint64_t stat_json(const dsrs_accelerator *a, int32_t device, const char *key) {
  char *json = NULL;
  READ_STRING(json, dsrs_accelerator_memory_stats_json(a, device, buf_, len_, &needed_));
  uint64_t v = json_u64(json, key);
  free(json);
  return v;
}

/* Random power of two in [lo, hi]. */
static size_t random_pow2(size_t lo, size_t hi) {
  size_t a = lo, steps = 0;
  for (size_t x = lo; x < hi; x <<= 1) steps++;
  for (size_t i = test_rng_next() % (steps + 1); i > 0; i--) a <<= 1;
  return a;
}

static unsigned char *read_all(const dsrs_buffer *b, size_t n) {
  unsigned char *out = (unsigned char *)malloc(n ? n : 1);
  REQUIRE(out != NULL);
  REQUIRE_OK(dsrs_buffer_read(b, 0, out, n, NULL));
  return out;
}

static void sleep_ms(long ms) {
  struct timespec nap = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&nap, &nap) != 0) {
  }
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Copies file `from` to `to` (bytes). */
static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  REQUIRE(in != NULL && out != NULL);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, in)) > 0) REQUIRE(fwrite(chunk, 1, n, out) == n);
  fclose(in);
  REQUIRE(fclose(out) == 0);
}

/* A random round trip through a fresh buffer of `a`. */
static void round_trip(dsrs_accelerator *a) {
  size_t n = 1 + (size_t)(test_rng_next() % 10000);
  unsigned char *src = (unsigned char *)malloc(n), *dst = (unsigned char *)malloc(n);
  test_rng_bytes(src, n);
  dsrs_buffer *b = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, n, 0, DSRS_MEMORY_DEVICE, &b));
  CHECK_OK(dsrs_buffer_write(b, 0, src, n, NULL));
  CHECK_OK(dsrs_buffer_read(b, 0, dst, n, NULL));
  CHECK(memcmp(src, dst, n) == 0);
  CHECK_OK(dsrs_buffer_free(b));
  free(src);
  free(dst);
}

/* ---------------------------------------------------------------------------------- */
/* Loading.                                                                             */

#define LOAD_FAIL(what, path, ...)                                                         \
  EXPECT_FAIL(what, dsrs_accelerator_load_plugin(path), DSRS_STATUS_PLUGIN_INVALID,          \
              "dsrs_accelerator_load_plugin", __VA_ARGS__)

static void test_loading(const char *tmp) {
  SECTION("loading plugins");
  check_names("cuda,cpu"); /* nothing registered yet */

  char *good = canonical(DSRS_TEST_PLUGIN_GOOD), *bad_abi = canonical(DSRS_TEST_PLUGIN_BAD_ABI);
  /* A plugin that declares another plugin ABI version: refused, naming the file and both
   * versions; nothing is registered, and a second try fails the same way. */
  for (int i = 0; i < 2; i++) {
    LOAD_FAIL("plugin declaring ABI version 99", DSRS_TEST_PLUGIN_BAD_ABI, bad_abi,
              "plugin ABI version 99", "implements version 1", "rebuild");
  }
  check_names("cuda,cpu");
  dsrs_accelerator *never = NULL;
  EXPECT_FAIL("creating the refused plugin's accelerator",
              dsrs_accelerator_new("hostmem_badabi", NULL, &never),
              DSRS_STATUS_UNKNOWN_ACCELERATOR, "dsrs_accelerator_new", "hostmem_badabi", "cpu");

  /* The good plugin; loading the same file again, or through a symlink, is a no-op. */
  REQUIRE_OK(dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_GOOD));
  CHECK_OK(dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_GOOD));
  char link[PATH_MAX];
  snprintf(link, sizeof link, "%s/link-to-hostmem.so", tmp);
  REQUIRE(symlink(DSRS_TEST_PLUGIN_GOOD, link) == 0);
  CHECK_OK(dsrs_accelerator_load_plugin(link));
  check_names("hostmem,cuda,cpu"); /* plugins come before the built-in accelerators */

  /* Another file with the same accelerator name, and a plugin named like a built-in one
   * (names are case-insensitive): refused. */
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s/libcopy-of-hostmem.so", tmp);
  copy_file(DSRS_TEST_PLUGIN_GOOD, copy);
  char *copy_c = canonical(copy);
  LOAD_FAIL("a second plugin named \"hostmem\"", copy, copy_c, "\"hostmem\"", "already registered");
  free(copy_c);
  char *named_cpu = canonical(DSRS_TEST_PLUGIN_NAMED_CPU);
  LOAD_FAIL("a plugin named \"CPU\"", DSRS_TEST_PLUGIN_NAMED_CPU, named_cpu, "\"CPU\"",
            "already registered");
  free(named_cpu);

  /* A plugin whose init fails loads fine (its probe is fine); creating it fails later. */
  REQUIRE_OK(dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_FAIL_INIT));
  check_names("hostmem,hostmem_failinit,cuda,cpu");

  /* Files that are not plugins. */
  char missing[PATH_MAX];
  snprintf(missing, sizeof missing, "%s/no-such-plugin-%08x.so", tmp, (unsigned)test_rng_next());
  LOAD_FAIL("a path that does not exist", missing, missing, "cannot load accelerator plugin",
            "No such file");
  char text[PATH_MAX];
  snprintf(text, sizeof text, "%s/not-elf.so", tmp);
  FILE *f = fopen(text, "w");
  REQUIRE(f != NULL);
  fprintf(f, "this is not a shared library %016" PRIx64 "\n", test_rng_next());
  REQUIRE(fclose(f) == 0);
  char *text_c = canonical(text), *tmp_c = canonical(tmp);
  dsrs_status st = dsrs_accelerator_load_plugin(text);
  EXPECT_FAIL("a text file", st, DSRS_STATUS_PLUGIN_INVALID, "dsrs_accelerator_load_plugin",
              text_c, "cannot load accelerator plugin");
  /* The message carries dlerror's reason ("<path>: file too short"). */
  CHECK(strstr(last_error(), "dlopen failed: ") != NULL);
  LOAD_FAIL("a directory", tmp, tmp_c, "cannot load accelerator plugin");
  LOAD_FAIL("the plugin's C source", DSRS_TEST_HOSTMEM_SOURCE, "hostmem_plugin.c",
            "cannot load accelerator plugin");
  free(text_c);
  free(tmp_c);

  char *p = canonical(DSRS_TEST_PLUGIN_NO_ENTRY);
  LOAD_FAIL("a shared library without the entry symbol", DSRS_TEST_PLUGIN_NO_ENTRY, p,
            "does not export dsrs_accelerator_plugin_entry",
            "not a deepspeed_rs accelerator plugin");
  free(p);
  p = canonical(DSRS_TEST_PLUGIN_NULL_TABLE);
  LOAD_FAIL("an entry that returns NULL", DSRS_TEST_PLUGIN_NULL_TABLE, p,
            "dsrs_accelerator_plugin_entry returned NULL", "plugin ABI 1");
  free(p);
  p = canonical(DSRS_TEST_PLUGIN_SMALL_TABLE);
  char needs[64];
  snprintf(needs, sizeof needs, "needs %zu", sizeof(dsrs_accelerator_plugin_v1));
  LOAD_FAIL("a table of 16 bytes", DSRS_TEST_PLUGIN_SMALL_TABLE, p, "table is 16 bytes", needs);
  free(p);
  p = canonical(DSRS_TEST_PLUGIN_MISSING_REQUIRED);
  LOAD_FAIL("required entries NULL", DSRS_TEST_PLUGIN_MISSING_REQUIRED, p, "fake_missing",
            "required entries are NULL: memory_info, allocate, deallocate, copy, synchronize");
  free(p);
  p = canonical(DSRS_TEST_PLUGIN_HALF_STREAMS);
  LOAD_FAIL("stream_create without its group", DSRS_TEST_PLUGIN_HALF_STREAMS, p,
            "stream entries come together", "stream_destroy, stream_synchronize");
  free(p);
  p = canonical(DSRS_TEST_PLUGIN_BAD_NAME);
  LOAD_FAIL("the name \"bad name!\"", DSRS_TEST_PLUGIN_BAD_NAME, p, "\"bad name!\"",
            "letters, digits");
  free(p);

  check_names("hostmem,hostmem_failinit,cuda,cpu"); /* none of the failures registered */
  free(good);
  free(bad_abi);
}

/* ---------------------------------------------------------------------------------- */
/* Creation, devices, properties.                                                       */

static void test_creation(uint64_t cap) {
  SECTION("creating plugin accelerators");
  dsrs_accelerator *a = NULL, *never = NULL;
  /* A failing init: the plugin's own message comes through; nothing is written. */
  EXPECT_FAIL("creating the plugin whose init fails",
              dsrs_accelerator_new("hostmem_failinit", NULL, &never), DSRS_STATUS_UNAVAILABLE,
              "dsrs_accelerator_new", "hostmem_failinit", "failed to initialize", "simulated fault",
              "code 0x2a");
  CHECK(never == NULL);
  /* Options the plugin refuses (its INVALID_CONFIG keeps its meaning), and JSON the library refuses before the plugin sees it. */
  EXPECT_FAIL("options {\"devices\": 0}",
              dsrs_accelerator_new("hostmem", "{\"devices\": 0}", &never),
              DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "options.devices must be 1..16");
  EXPECT_FAIL("options {\"capacity\": \"lots\"}",
              dsrs_accelerator_new("hostmem", "{\"capacity\": \"lots\"}", &never),
              DSRS_STATUS_INVALID_CONFIG, "dsrs_accelerator_new", "options.capacity");
  EXPECT_FAIL("malformed options", dsrs_accelerator_new("hostmem", "{\"devices\": ", &never),
              DSRS_STATUS_INVALID_JSON, "dsrs_accelerator_new", "accelerator options");
  CHECK(never == NULL);
  /* The probe decides availability at each creation. */
  REQUIRE(setenv("HOSTMEM_UNAVAILABLE", "1", 1) == 0);
  EXPECT_FAIL("creating it with HOSTMEM_UNAVAILABLE set",
              dsrs_accelerator_new("hostmem", NULL, &never),
              DSRS_STATUS_UNAVAILABLE, "dsrs_accelerator_new", "HOSTMEM_UNAVAILABLE is set",
              "available accelerators:", "cpu");
  REQUIRE(unsetenv("HOSTMEM_UNAVAILABLE") == 0);
  /* Names are case-insensitive; defaults are 2 devices of 1 GiB. */
  REQUIRE_OK(dsrs_accelerator_new("HostMem", NULL, &a));
  uint32_t count = 0;
  CHECK_OK(dsrs_accelerator_device_count(a, &count));
  CHECK(count == 2);
  CHECK(figure(a, dsrs_accelerator_total_memory, 1) == (1ull << 30));
  CHECK_OK(dsrs_accelerator_free(a));
  /* Options: 3 devices of `cap` bytes. */
  char options[128];
  snprintf(options, sizeof options, "{\"devices\": 3, \"capacity\": %" PRIu64 "}", cap);
  REQUIRE_OK(dsrs_accelerator_new("hostmem", options, &a));
  CHECK_OK(dsrs_accelerator_device_count(a, &count));
  CHECK(count == 3);
  CHECK(figure(a, dsrs_accelerator_total_memory, 2) == cap);
  CHECK_OK(dsrs_accelerator_free(a));
}

/* The training engine runs on host-memory accelerators only: on the plugin, creating one
 * fails (DSRS_STATUS_UNSUPPORTED) and writes nothing. */
static void test_engine_unsupported(dsrs_accelerator *a) {
  SECTION("the training engine on a plugin accelerator");
  const char *config = "{\"train_batch_size\": 1, \"optimizer\": {\"type\": \"AdamW\", "
                       "\"params\": {\"lr\": 0.1}}}";
  dsrs_engine *const sentinel = (dsrs_engine *)(uintptr_t)0x5e5e;
  dsrs_engine *e = sentinel;
  EXPECT_FAIL("dsrs_engine_new on hostmem", dsrs_engine_new(a, config, &e), DSRS_STATUS_UNSUPPORTED,
              "dsrs_engine_new", "hostmem");
  CHECK(e == sentinel);
  /* The accelerator is unharmed, and the same config makes an engine on cpu. */
  uint32_t count = 0;
  CHECK_OK(dsrs_accelerator_device_count(a, &count));
  CHECK(count == 2);
  dsrs_accelerator *cpu = NULL;
  REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &cpu));
  e = NULL;
  CHECK_OK(dsrs_engine_new(cpu, config, &e));
  CHECK(e != NULL && e != sentinel);
  CHECK_OK(dsrs_engine_free(e));
  CHECK_OK(dsrs_accelerator_free(cpu));
}

static void test_identity(dsrs_accelerator *a, uint64_t cap) {
  SECTION("identity, devices, properties");
  char *name = accel_name(a);
  CHECK(strcmp(name, "hostmem") == 0);
  free(name);
  bool b = false;
  CHECK_OK(dsrs_accelerator_is_available(a, &b));
  CHECK(b);
  int32_t type = 0;
  CHECK_OK(dsrs_accelerator_device_type(a, &type));
  CHECK(type == kDLExtDev);
  char *backend = NULL;
  READ_STRING(backend, dsrs_accelerator_communication_backend(a, buf_, len_, &needed_));
  CHECK(strcmp(backend, "gloo") == 0);
  free(backend);
  b = true;
  CHECK_OK(dsrs_accelerator_is_synchronized_device(a, &b));
  CHECK(!b); /* flags 0: work is "queued" */

  uint32_t count = 0;
  REQUIRE_OK(dsrs_accelerator_device_count(a, &count));
  REQUIRE(count == 2);
  for (int32_t d = 0; d < 2; d++) {
    char *dev = NULL, *props = NULL, want[64];
    READ_STRING(dev, dsrs_accelerator_device_name(a, d, buf_, len_, &needed_));
    snprintf(want, sizeof want, "hostmem device %d (host RAM)", (int)d);
    CHECK(strcmp(dev, want) == 0);
    READ_STRING(props, dsrs_accelerator_device_properties_json(a, d, buf_, len_, &needed_));
    printf("device %d: %s\n", (int)d, props);
    CHECK(props[0] == '{' && props[strlen(props) - 1] == '}');
    CHECK(json_u64(props, "index") == (uint64_t)d);
    CHECK(json_u64(props, "total_memory") == cap);
    snprintf(want, sizeof want, "\"name\":\"hostmem device %d (host RAM)\"", (int)d);
    CHECK(strstr(props, want) != NULL);
    CHECK(strstr(props, "\"uuid\":null") != NULL);
    CHECK(strstr(props, "\"compute_capability\":null") != NULL);
    CHECK(strstr(props, "\"pci_bus_id\":null") != NULL);
    /* -1 is the current device. */
    char *cur = NULL;
    CHECK_OK(dsrs_accelerator_set_device(a, d));
    READ_STRING(cur, dsrs_accelerator_device_properties_json(a, -1, buf_, len_, &needed_));
    CHECK(strcmp(cur, props) == 0);
    free(cur);
    free(props);
    free(dev);
    CHECK(figure(a, dsrs_accelerator_total_memory, d) == cap);
    CHECK_OK(dsrs_accelerator_synchronize(a, d));
  }
  char small[4];
  size_t needed = 0;
  EXPECT_FAIL("properties of device 2",
              dsrs_accelerator_device_properties_json(a, 2, small, 4, &needed),
              DSRS_STATUS_OUT_OF_RANGE, "dsrs_accelerator_device_properties_json", "device 2");
  CHECK_OK(dsrs_accelerator_set_device(a, 0));

  char *info = NULL;
  READ_STRING(info, dsrs_accelerator_info_json(a, buf_, len_, &needed_));
  CHECK(strstr(info, "\"name\":\"hostmem\"") != NULL);
  CHECK(strstr(info, "\"dlpack_device_type\":12") != NULL);
  CHECK(strstr(info, "\"graphs\":false") != NULL);
  CHECK(strstr(info, "\"plugin_abi_version\":1") != NULL);
  CHECK(strstr(info, "\"plugin_path\":\"") != NULL);
  CHECK(json_u64(info, "device_count") == 2);
  free(info);
}

/* ---------------------------------------------------------------------------------- */
/* Buffers.                                                                             */

static void test_buffers(dsrs_accelerator *a, int32_t device) {
  printf("-- buffers on device %d: write/read/copy/fill against host mirrors\n", (int)device);
  CHECK_OK(dsrs_accelerator_set_device(a, device));
  for (int round = 0; round < 3; round++) {
    size_t size = 16 + (size_t)(test_rng_next() % 20000);
    size_t align = random_pow2(8, 4096);
    dsrs_buffer *b = NULL, *c = NULL, *h = NULL;
    REQUIRE_OK(dsrs_buffer_new(a, size, align, DSRS_MEMORY_DEVICE, &b));
    size_t got_size = 0;
    void *data = NULL;
    dsrs_memory_kind kind = -1;
    DLDevice dev = {kDLCPU, -1};
    CHECK_OK(dsrs_buffer_size(b, &got_size));
    CHECK(got_size == size);
    REQUIRE_OK(dsrs_buffer_data(b, &data));
    REQUIRE(data != NULL);
    CHECK((uintptr_t)data % align == 0);
    CHECK_OK(dsrs_buffer_kind(b, &kind));
    CHECK(kind == DSRS_MEMORY_DEVICE);
    CHECK_OK(dsrs_buffer_device(b, &dev));
    CHECK(dev.device_type == kDLExtDev && dev.device_id == device);

    /* Zeroed at allocation, then random contents, whole and in pieces. */
    unsigned char *mirror = (unsigned char *)calloc(size, 1), *got = read_all(b, size);
    CHECK(memcmp(got, mirror, size) == 0);
    free(got);
    test_rng_bytes(mirror, size);
    CHECK_OK(dsrs_buffer_write(b, 0, mirror, size, NULL));
    got = read_all(b, size);
    CHECK(memcmp(got, mirror, size) == 0);
    free(got);
    for (int k = 0; k < 8; k++) {
      size_t off = (size_t)(test_rng_next() % size);
      size_t n = (size_t)(test_rng_next() % (size - off + 1));
      unsigned char *src = (unsigned char *)malloc(n + 1), *part = (unsigned char *)malloc(n + 1);
      test_rng_bytes(src, n);
      CHECK_OK(dsrs_buffer_write(b, off, src, n, NULL));
      memcpy(mirror + off, src, n);
      CHECK_OK(dsrs_buffer_read(b, off, part, n, NULL));
      CHECK(memcmp(part, src, n) == 0);
      free(src);
      free(part);
    }

    /* Device-to-device copies into a second buffer, and overlapping ones inside one. */
    REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_DEVICE, &c));
    unsigned char *mirror_c = (unsigned char *)calloc(size, 1);
    CHECK_OK(dsrs_buffer_copy(c, 0, b, 0, size, NULL));
    memcpy(mirror_c, mirror, size);
    for (int k = 0; k < 6; k++) {
      size_t n = 1 + (size_t)(test_rng_next() % (size / 2));
      size_t so = (size_t)(test_rng_next() % (size - n + 1));
      size_t doff = (size_t)(test_rng_next() % (size - n + 1));
      test_rng_bytes(mirror + so, n); /* fresh bytes, so the copy has something to move */
      CHECK_OK(dsrs_buffer_write(b, so, mirror + so, n, NULL));
      CHECK_OK(dsrs_buffer_copy(c, doff, b, so, n, NULL));
      memmove(mirror_c + doff, mirror + so, n);
      size_t shift = 1 + (size_t)(test_rng_next() % 7);
      size_t src_off = (size_t)(test_rng_next() % (size - n - shift + 1));
      size_t dst_off = (k % 2) ? src_off + shift : src_off;
      if (!(k % 2)) src_off += shift;
      CHECK_OK(dsrs_buffer_copy(b, dst_off, b, src_off, n, NULL));
      memmove(mirror + dst_off, mirror + src_off, n);
    }
    got = read_all(b, size);
    CHECK(memcmp(got, mirror, size) == 0);
    free(got);
    got = read_all(c, size);
    CHECK(memcmp(got, mirror_c, size) == 0);
    free(got);

    /* Pageable host memory of the same accelerator: the library's, visible to the CPU. */
    REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_HOST, &h));
    void *hd = NULL;
    REQUIRE_OK(dsrs_buffer_data(h, &hd));
    CHECK_OK(dsrs_buffer_device(h, &dev));
    CHECK(dev.device_type == kDLCPU && dev.device_id == 0);
    CHECK_OK(dsrs_buffer_copy(h, 0, b, 0, size, NULL)); /* device to host */
    CHECK(memcmp(hd, mirror, size) == 0);
    test_rng_bytes(hd, size);
    CHECK_OK(dsrs_buffer_copy(c, 0, h, 0, size, NULL)); /* host to device */
    got = read_all(c, size);
    CHECK(memcmp(got, hd, size) == 0);
    free(got);

    /* Fills with random 1-, 2-, 4- and 8-byte patterns, checked by reading back. */
    static const size_t pattern_sizes[] = {1, 2, 4, 8};
    for (size_t k = 0; k < 4; k++) {
      size_t ps = pattern_sizes[k];
      unsigned char pattern[8];
      test_rng_bytes(pattern, ps);
      size_t off = (size_t)(test_rng_next() % (size / 2));
      size_t reps = 1 + (size_t)(test_rng_next() % ((size - off) / ps));
      CHECK_OK(dsrs_buffer_fill(b, off, reps * ps, pattern, ps, NULL));
      for (size_t r = 0; r < reps; r++) memcpy(mirror + off + r * ps, pattern, ps);
      got = read_all(b, size);
      CHECK(memcmp(got, mirror, size) == 0);
      free(got);
    }

    /* Tensor copies from and to host DLTensors. */
    int64_t elems = (int64_t)(size / 4);
    uint32_t *in = (uint32_t *)malloc(size), *out = (uint32_t *)malloc(size);
    test_rng_bytes(in, (size_t)elems * 4);
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.data = in;
    t.device.device_type = kDLCPU;
    t.ndim = 1;
    t.dtype = dt(kDLUInt, 32);
    t.shape = &elems;
    CHECK_OK(dsrs_buffer_copy_from_tensor(c, 0, &t, NULL));
    t.data = out;
    CHECK_OK(dsrs_buffer_copy_to_tensor(c, 0, &t, NULL));
    CHECK(memcmp(in, out, (size_t)elems * 4) == 0);
    free(in);
    free(out);

    free(mirror);
    free(mirror_c);
    CHECK_OK(dsrs_buffer_free(h));
    CHECK_OK(dsrs_buffer_free(c));
    CHECK_OK(dsrs_buffer_free(b));
  }
  /* An empty buffer never reaches the plugin: data NULL. */
  dsrs_buffer *e = NULL;
  void *p = (void *)&e;
  CHECK_OK(dsrs_buffer_new(a, 0, 0, DSRS_MEMORY_DEVICE, &e));
  CHECK_OK(dsrs_buffer_data(e, &p));
  CHECK(p == NULL);
  CHECK_OK(dsrs_buffer_free(e));
  /* Pinned memory: the plugin does not offer it, and says so. */
  dsrs_buffer *never = NULL;
  EXPECT_FAIL("pinned memory from hostmem", dsrs_buffer_new(a, 4096, 0, DSRS_MEMORY_PINNED, &never),
              DSRS_STATUS_UNSUPPORTED, "dsrs_buffer_new", "accelerator plugin 'hostmem'",
              "memory kind 2 is not supported");
  CHECK(never == NULL);
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
}

/* A buffer of device 1 used while device 0 is current (and a copy between devices). */
static void test_cross_device(dsrs_accelerator *a) {
  SECTION("buffers used while another device is current");
  CHECK_OK(dsrs_accelerator_set_device(a, 1));
  dsrs_buffer *b1 = NULL, *b0 = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, 4096, 0, DSRS_MEMORY_DEVICE, &b1));
  uint64_t words[8], back[8];
  test_rng_bytes(words, sizeof words);
  CHECK_OK(dsrs_buffer_write(b1, 0, words, sizeof words, NULL));
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
  REQUIRE_OK(dsrs_buffer_new(a, 4096, 0, DSRS_MEMORY_DEVICE, &b0));
  memset(back, 0, sizeof back);
  dsrs_status s = dsrs_buffer_read(b1, 0, back, sizeof back, NULL);
  /* Operations go to the device that owns the memory, whatever the current device. */
  CHECK_OK(s);
  CHECK(memcmp(back, words, sizeof back) == 0);
  CHECK_OK(dsrs_buffer_write(b1, 0, words, sizeof words, NULL));
  CHECK_OK(dsrs_buffer_fill(b1, 0, 64, words, 8, NULL));
  CHECK_OK(dsrs_buffer_write(b1, 0, words, sizeof words, NULL));
  /* Device 1 to device 0: staged through the host (one call names one device). */
  CHECK_OK(dsrs_buffer_copy(b0, 0, b1, 0, sizeof words, NULL));
  memset(back, 0, sizeof back);
  CHECK_OK(dsrs_buffer_read(b0, 0, back, sizeof back, NULL));
  CHECK(memcmp(back, words, sizeof back) == 0);
  /* With its own device current, everything works. */
  CHECK_OK(dsrs_accelerator_set_device(a, 1));
  CHECK_OK(dsrs_buffer_read(b1, 0, back, sizeof back, NULL));
  CHECK(memcmp(back, words, sizeof back) == 0);
  CHECK_OK(dsrs_buffer_free(b1)); /* freed on its own device, whatever is current */
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
  CHECK_OK(dsrs_buffer_free(b0));
}

/* ---------------------------------------------------------------------------------- */
/* Memory statistics.                                                                   */

static void test_memory_stats(dsrs_accelerator *a, int32_t d, int32_t other, uint64_t cap) {
  printf("-- memory statistics of device %d (granules of %u bytes, cache, peaks)\n", (int)d,
         GRANULE);
  CHECK_OK(dsrs_accelerator_set_device(a, d));
  CHECK_OK(dsrs_accelerator_empty_cache(a));
  const uint64_t base = ALLOCATED(a, d), base_res = RESERVED(a, d);
  const uint64_t base_count = stat_json(a, d, "allocation.all.current");
  const uint64_t other_alloc = ALLOCATED(a, other), other_res = RESERVED(a, other);
  CHECK(base_res == base); /* nothing cached after empty_cache */
  CHECK(AVAILABLE(a, d) == cap - base_res);

  size_t n1 = 1 + (size_t)(test_rng_next() % 40000), n2 = 1 + (size_t)(test_rng_next() % 40000);
  uint64_t r1 = round_granule(n1), r2 = round_granule(n2);
  dsrs_buffer *b1 = NULL, *b2 = NULL, *b3 = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, n1, 0, DSRS_MEMORY_DEVICE, &b1));
  CHECK(ALLOCATED(a, d) == base + r1);
  CHECK(RESERVED(a, d) == base_res + r1);
  REQUIRE_OK(dsrs_buffer_new(a, n2, 0, DSRS_MEMORY_DEVICE, &b2));
  const uint64_t both = base + r1 + r2;
  CHECK(ALLOCATED(a, d) == both);
  CHECK(RESERVED(a, d) == base_res + r1 + r2);
  CHECK(MAX_ALLOCATED(a, d) >= both);
  CHECK(MAX_RESERVED(a, d) >= base_res + r1 + r2);
  CHECK(AVAILABLE(a, d) == cap - (base_res + r1 + r2));
  CHECK(stat_json(a, d, "allocated_bytes.all.current") == both);
  CHECK(stat_json(a, d, "reserved_bytes.all.current") == base_res + r1 + r2);
  CHECK(stat_json(a, d, "allocation.all.current") == base_count + 2);
  CHECK(stat_json(a, d, "total_bytes") == cap);
  /* The other device's figures did not move. */
  CHECK(ALLOCATED(a, other) == other_alloc);
  CHECK(RESERVED(a, other) == other_res);

  /* Freeing keeps the block cached: allocated drops, reserved stays; the peak remembers. */
  CHECK_OK(dsrs_buffer_free(b1));
  CHECK(ALLOCATED(a, d) == base + r2);
  CHECK(RESERVED(a, d) == base_res + r1 + r2);
  CHECK(MAX_ALLOCATED(a, d) >= both);
  CHECK_OK(dsrs_accelerator_reset_peak_memory_stats(a, d));
  CHECK(MAX_ALLOCATED(a, d) == base + r2);
  CHECK(MAX_RESERVED(a, d) == base_res + r1 + r2);
  CHECK(stat_json(a, d, "allocation.all.peak") == base_count + 1);
  /* The same rounded size again reuses the cached block: reserved does not grow. */
  size_t n3 = (size_t)r1 - (size_t)(test_rng_next() % GRANULE); /* rounds up to r1 too */
  REQUIRE_OK(dsrs_buffer_new(a, n3, 0, DSRS_MEMORY_DEVICE, &b3));
  CHECK(ALLOCATED(a, d) == both);
  CHECK(RESERVED(a, d) == base_res + r1 + r2);
  CHECK(MAX_ALLOCATED(a, d) == both);
  CHECK_OK(dsrs_buffer_free(b3));
  /* empty_cache gives the cached block back; the live one stays. */
  CHECK_OK(dsrs_accelerator_empty_cache(a));
  CHECK(RESERVED(a, d) == base_res + r2);
  CHECK(ALLOCATED(a, d) == base + r2);
  CHECK(AVAILABLE(a, d) == cap - (base_res + r2));
  CHECK_OK(dsrs_buffer_free(b2));
  CHECK(ALLOCATED(a, d) == base);
  CHECK(RESERVED(a, d) == base_res + r2);
  CHECK_OK(dsrs_accelerator_empty_cache(a));
  CHECK(RESERVED(a, d) == base_res);
  CHECK_OK(dsrs_accelerator_reset_peak_memory_stats(a, -1)); /* -1: the current device, d */
  CHECK(MAX_ALLOCATED(a, d) == base);
  CHECK(MAX_RESERVED(a, d) == base_res);
  printf("allocated moved by %" PRIu64 " + %" PRIu64 " (%zu and %zu bytes rounded up to %u); "
         "reserved stayed until empty_cache\n",
         r1, r2, n1, n2, GRANULE);

  SECTION("out of memory past the capacity");
  const uint64_t room = cap - RESERVED(a, d), ooms = stat_json(a, d, "num_ooms");
  REQUIRE(room % GRANULE == 0 && room > GRANULE);
  size_t too_much = (size_t)room + 1 + (size_t)(test_rng_next() % 4096);
  char requested[64];
  snprintf(requested, sizeof requested, "%zu bytes requested", too_much);
  dsrs_buffer *never = NULL;
  EXPECT_FAIL("a buffer larger than what is left",
              dsrs_buffer_new(a, too_much, 0, DSRS_MEMORY_DEVICE, &never),
              DSRS_STATUS_OUT_OF_MEMORY, "dsrs_buffer_new", "accelerator plugin 'hostmem'",
              "allocate failed", "hostmem: out of device memory", requested);
  CHECK(never == NULL);
  CHECK(ALLOCATED(a, d) == base);
  CHECK(stat_json(a, d, "num_ooms") == ooms + 1);
  dsrs_buffer *all = NULL, *one = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, (size_t)room, 0, DSRS_MEMORY_DEVICE, &all)); /* exactly fits */
  CHECK(AVAILABLE(a, d) == 0);
  EXPECT_FAIL("one more byte", dsrs_buffer_new(a, 1, 0, DSRS_MEMORY_DEVICE, &one),
              DSRS_STATUS_OUT_OF_MEMORY, "dsrs_buffer_new", "out of device memory");
  CHECK(stat_json(a, d, "num_ooms") == ooms + 2);
  CHECK(ALLOCATED(a, other) == other_alloc); /* per device */
  CHECK_OK(dsrs_buffer_free(all));
  CHECK_OK(dsrs_accelerator_empty_cache(a));
  CHECK(AVAILABLE(a, d) == cap - base_res);
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
}

/* ---------------------------------------------------------------------------------- */
/* DLPack.                                                                              */

static void test_dlpack(dsrs_accelerator *a) {
  SECTION("DLPack views and exports: kDLExtDev");
  for (int32_t d = 0; d < 2; d++) {
    CHECK_OK(dsrs_accelerator_set_device(a, d));
    int64_t rows = 1 + (int64_t)(test_rng_next() % 32), cols = 1 + (int64_t)(test_rng_next() % 32);
    int64_t shape[2] = {rows, cols};
    size_t size = (size_t)(rows * cols) * sizeof(float);
    dsrs_buffer *b = NULL;
    REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_DEVICE, &b));
    void *data = NULL;
    REQUIRE_OK(dsrs_buffer_data(b, &data));
    DLTensor v;
    REQUIRE_OK(dsrs_buffer_view(b, 0, dt(kDLFloat, 32), shape, 2, &v));
    CHECK(v.device.device_type == kDLExtDev && v.device.device_id == d);
    CHECK(v.data == data && v.ndim == 2 && v.shape == shape);
    uint64_t before = ALLOCATED(a, d);
    DLManagedTensorVersioned *m = NULL;
    REQUIRE_OK(dsrs_buffer_to_dlpack_versioned(b, 0, dt(kDLFloat, 32), shape, 2, false, &m));
    CHECK(m->dl_tensor.device.device_type == kDLExtDev && m->dl_tensor.device.device_id == d);
    CHECK(m->dl_tensor.data == data);
    CHECK((m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) == 0);
    CHECK_OK(dsrs_buffer_free(b)); /* the export keeps the plugin's allocation */
    CHECK(ALLOCATED(a, d) == before);
    m->deleter(m); /* the last reference: the plugin frees it now */
    CHECK(ALLOCATED(a, d) == before - round_granule(size));
  }
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
}

/* ---------------------------------------------------------------------------------- */
/* Streams, events, ranges.                                                             */

/* hostmem's streams are counters of the operations submitted to them, and the native
 * handle is the counter's address (host memory). */
static unsigned long long ops_on(const dsrs_stream *s) {
  void *native = NULL;
  REQUIRE_OK(dsrs_stream_native_handle(s, &native));
  REQUIRE(native != NULL);
  return *(const unsigned long long *)native;
}

static void *pop_on_other_thread(void *arg) {
  dsrs_status s = dsrs_accelerator_range_pop((dsrs_accelerator *)arg);
  return (void *)(intptr_t)s;
}

static void test_streams_events(dsrs_accelerator *a) {
  SECTION("streams");
  dsrs_stream *s = NULL, *def = NULL, *cur = NULL;
  REQUIRE_OK(dsrs_stream_new(a, &s));
  REQUIRE_OK(dsrs_accelerator_default_stream(a, &def));
  void *native = (void *)&native;
  CHECK_OK(dsrs_stream_native_handle(def, &native));
  CHECK(native == NULL); /* the plugin's default stream is NULL */
  CHECK(ops_on(s) == 0);
  bool done = false;
  CHECK_OK(dsrs_stream_query(s, &done));
  CHECK(done);
  CHECK_OK(dsrs_stream_synchronize(s));
  CHECK_OK(dsrs_stream_synchronize(def));

  /* Work submitted on the stream reaches the plugin with that stream. */
  dsrs_buffer *b = NULL;
  uint64_t src[32], dst[32];
  test_rng_bytes(src, sizeof src);
  REQUIRE_OK(dsrs_buffer_new(a, sizeof src, 0, DSRS_MEMORY_DEVICE, &b));
  CHECK_OK(dsrs_buffer_write(b, 0, src, sizeof src, s));
  CHECK_OK(dsrs_stream_synchronize(s));
  CHECK_OK(dsrs_buffer_read(b, 0, dst, sizeof dst, s));
  CHECK(memcmp(src, dst, sizeof src) == 0);
  uint32_t pattern = (uint32_t)test_rng_next() | 1u;
  CHECK_OK(dsrs_buffer_fill(b, 0, 64, &pattern, 4, s));
  CHECK(ops_on(s) == 3);
  CHECK_OK(dsrs_buffer_write(b, 0, src, sizeof src, def)); /* not on s */
  CHECK_OK(dsrs_buffer_write(b, 0, src, sizeof src, NULL)); /* the current stream: default */
  CHECK(ops_on(s) == 3);
  /* As the current stream, NULL means s. */
  CHECK_OK(dsrs_accelerator_set_current_stream(a, s));
  REQUIRE_OK(dsrs_accelerator_current_stream(a, &cur));
  CHECK(ops_on(cur) == 3);
  CHECK_OK(dsrs_buffer_read(b, 0, dst, sizeof dst, NULL));
  CHECK(memcmp(src, dst, sizeof src) == 0);
  CHECK(ops_on(s) == 4);
  CHECK_OK(dsrs_accelerator_set_current_stream(a, def));
  CHECK_OK(dsrs_buffer_read(b, 0, dst, sizeof dst, NULL));
  CHECK(ops_on(s) == 4);
  printf("the plugin counted %llu operations on the stream\n", ops_on(s));

  /* A stream of device 1 makes device 1 current. */
  CHECK_OK(dsrs_accelerator_set_device(a, 1));
  dsrs_stream *s1 = NULL;
  REQUIRE_OK(dsrs_stream_new(a, &s1));
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
  CHECK_OK(dsrs_accelerator_set_current_stream(a, s1));
  int32_t current = -1;
  CHECK_OK(dsrs_accelerator_current_device(a, &current));
  CHECK(current == 1);
  CHECK_OK(dsrs_accelerator_set_device(a, 0)); /* forgets s1 as the current stream */
  CHECK_OK(dsrs_stream_free(s1));

  SECTION("events");
  dsrs_event *start = NULL, *end = NULL, *plain = NULL;
  REQUIRE_OK(dsrs_event_new(a, true, &start));
  REQUIRE_OK(dsrs_event_new(a, true, &end));
  REQUIRE_OK(dsrs_event_new(a, false, &plain));
  double ms = -1;
  EXPECT_FAIL("elapsed_ms before recording", dsrs_event_elapsed_ms(start, end, &ms),
              DSRS_STATUS_INVALID_STATE, "dsrs_event_elapsed_ms", "recorded");
  CHECK_OK(dsrs_event_query(plain, &done));
  CHECK(done);
  CHECK_OK(dsrs_event_synchronize(plain));
  long nap = 15 + (long)(test_rng_next() % 20);
  CHECK_OK(dsrs_event_record(start, s));
  double t0 = now_ms();
  sleep_ms(nap);
  double t1 = now_ms();
  CHECK_OK(dsrs_event_record(end, NULL)); /* the current stream */
  double t2 = now_ms();
  CHECK_OK(dsrs_event_synchronize(end));
  CHECK_OK(dsrs_event_query(end, &done));
  CHECK(done);
  CHECK_OK(dsrs_stream_wait_event(s, end));
  CHECK_OK(dsrs_event_record(plain, s));
  double back = 0;
  CHECK_OK(dsrs_event_elapsed_ms(start, end, &ms));
  CHECK_OK(dsrs_event_elapsed_ms(end, start, &back));
  printf("elapsed %.3f ms over a %ld ms sleep (wall %.3f..%.3f ms); reversed %.3f\n", ms, nap,
         t1 - t0, t2 - t0, back);
  CHECK(ms >= 0);
  CHECK(ms >= (double)nap);
  CHECK(ms <= (t2 - t0) + 50.0); /* the two records bracket the sleep; slack for the clock */
  CHECK(fabs(ms + back) < 1e-6);
  EXPECT_FAIL("elapsed_ms to an event without timing", dsrs_event_elapsed_ms(start, plain, &ms),
              DSRS_STATUS_INVALID_STATE, "dsrs_event_elapsed_ms", "timing");
  CHECK_OK(dsrs_event_free(start));
  CHECK_OK(dsrs_event_free(end));
  CHECK_OK(dsrs_event_free(plain));

  SECTION("profiling ranges");
  CHECK_OK(dsrs_accelerator_range_push(a, "outer"));
  CHECK_OK(dsrs_accelerator_range_push(a, "inner \xc3\xa9"));
  CHECK_OK(dsrs_accelerator_range_pop(a));
  /* Ranges belong to their thread: another thread has none to pop. */
  pthread_t th;
  void *res = NULL;
  REQUIRE(pthread_create(&th, NULL, pop_on_other_thread, a) == 0);
  REQUIRE(pthread_join(th, &res) == 0);
  CHECK((dsrs_status)(intptr_t)res == DSRS_STATUS_INVALID_STATE);
  CHECK_OK(dsrs_accelerator_range_pop(a));
  EXPECT_FAIL("range_pop without range_push", dsrs_accelerator_range_pop(a),
              DSRS_STATUS_INVALID_STATE, "dsrs_accelerator_range_pop", "range_pop", "range_push");

  SECTION("stream_wrap and graph capture: unsupported");
  dsrs_stream *wrapped = NULL;
  int host_thing = 0;
  EXPECT_FAIL("stream_wrap(NULL) on hostmem", dsrs_stream_wrap(a, NULL, &wrapped),
              DSRS_STATUS_UNSUPPORTED, "dsrs_stream_wrap", "hostmem", "native streams");
  EXPECT_FAIL("stream_wrap(ptr) on hostmem", dsrs_stream_wrap(a, &host_thing, &wrapped),
              DSRS_STATUS_UNSUPPORTED, "dsrs_stream_wrap", "hostmem");
  CHECK(wrapped == NULL);
  EXPECT_FAIL("begin_capture on a hostmem stream", dsrs_stream_begin_capture(s),
              DSRS_STATUS_UNSUPPORTED, "dsrs_stream_begin_capture", "hostmem", "graph capture");
  dsrs_graph *graph = NULL;
  EXPECT_FAIL("end_capture on a hostmem stream", dsrs_stream_end_capture(s, &graph),
              DSRS_STATUS_UNSUPPORTED, "dsrs_stream_end_capture", "hostmem", "graph capture");
  CHECK(graph == NULL);
  CHECK_OK(dsrs_graph_free(NULL));
  CHECK(ops_on(s) == 4); /* nothing ran */

  CHECK_OK(dsrs_buffer_free(b));
  CHECK_OK(dsrs_stream_free(cur));
  CHECK_OK(dsrs_stream_free(def));
  CHECK_OK(dsrs_stream_free(s));
}

/* ---------------------------------------------------------------------------------- */
/* Random numbers: the same seed, the same bits as the cpu accelerator.                  */

struct rng_case {
  const char *what;
  DLDataType dtype;
  dsrs_distribution dist;
  double a, b;
};

/* Fills `count` elements on the plugin (a device buffer, through a view) and on the cpu
 * accelerator (host memory); both must give the same bytes. */
static void compare_fill(dsrs_accelerator *plugin, dsrs_accelerator *cpu, const struct rng_case *c,
                         int64_t count, dsrs_stream *stream) {
  size_t bytes = (size_t)count * c->dtype.bits / 8;
  dsrs_buffer *b = NULL;
  REQUIRE_OK(dsrs_buffer_new(plugin, bytes, 0, DSRS_MEMORY_DEVICE, &b));
  DLTensor v;
  REQUIRE_OK(dsrs_buffer_view(b, 0, c->dtype, &count, 1, &v));
  CHECK_OK(dsrs_accelerator_rng_fill(plugin, &v, c->dist, c->a, c->b, stream));
  unsigned char *on_plugin = read_all(b, bytes), *on_cpu = (unsigned char *)malloc(bytes);
  DLTensor h = v;
  h.data = on_cpu;
  h.device.device_type = kDLCPU;
  h.device.device_id = 0;
  CHECK_OK(dsrs_accelerator_rng_fill(cpu, &h, c->dist, c->a, c->b, NULL));
  bool same = memcmp(on_plugin, on_cpu, bytes) == 0;
  printf("%-26s x %5" PRId64 ": %s\n", c->what, count, same ? "same bits" : "DIFFERENT");
  CHECK(same);
  free(on_plugin);
  free(on_cpu);
  CHECK_OK(dsrs_buffer_free(b));
}

static void test_rng(dsrs_accelerator *a) {
  SECTION("random numbers: the same seed gives the same bits as on cpu");
  dsrs_accelerator *cpu = NULL;
  REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &cpu));
  double lo = -(double)(test_rng_next() % 100) / 10.0;
  double hi = lo + 0.5 + (double)(test_rng_next() % 50);
  double mu = (double)(test_rng_next() % 200) / 10.0 - 10.0;
  double sigma = 0.1 + (double)(test_rng_next() % 50) / 10.0;
  const struct rng_case cases[] = {
      {"bits uint32", dt(kDLUInt, 32), DSRS_DISTRIBUTION_BITS, 0, 0},
      {"bits int64", dt(kDLInt, 64), DSRS_DISTRIBUTION_BITS, 0, 0},
      {"uniform float32", dt(kDLFloat, 32), DSRS_DISTRIBUTION_UNIFORM, lo, hi},
      {"uniform bfloat16", dt(kDLBfloat, 16), DSRS_DISTRIBUTION_UNIFORM, lo, hi},
      {"normal float64", dt(kDLFloat, 64), DSRS_DISTRIBUTION_NORMAL, mu, sigma},
      {"normal float16", dt(kDLFloat, 16), DSRS_DISTRIBUTION_NORMAL, mu, sigma},
  };
  const size_t ncases = sizeof cases / sizeof cases[0];

  for (int32_t d = 0; d < 2; d++) {
    CHECK_OK(dsrs_accelerator_set_device(a, d));
    uint64_t seed = test_rng_next();
    printf("device %d, seed %" PRIu64 "\n", (int)d, seed);
    CHECK_OK(dsrs_accelerator_manual_seed(a, seed));
    CHECK_OK(dsrs_accelerator_manual_seed(cpu, seed));
    uint64_t got = 0;
    CHECK_OK(dsrs_accelerator_initial_seed(a, &got));
    CHECK(got == seed);
    /* One after the other: both generators advance alike. */
    for (size_t i = 0; i < ncases; i++) {
      compare_fill(a, cpu, &cases[i], 1 + (int64_t)(test_rng_next() % 5000), NULL);
    }
    /* On an explicit plugin stream: the staged copy goes to that stream. */
    dsrs_stream *s = NULL;
    REQUIRE_OK(dsrs_stream_new(a, &s));
    compare_fill(a, cpu, &cases[0], 1 + (int64_t)(test_rng_next() % 999), s);
    CHECK(ops_on(s) == 1); /* the staged copy (read_all reads on the current stream) */
    CHECK_OK(dsrs_stream_free(s));
    /* The plugin also fills host memory, with the same numbers. */
    int64_t n = 1 + (int64_t)(test_rng_next() % 777);
    uint32_t *x = (uint32_t *)malloc((size_t)n * 4), *y = (uint32_t *)malloc((size_t)n * 4);
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.device.device_type = kDLCPU;
    t.ndim = 1;
    t.dtype = dt(kDLUInt, 32);
    t.shape = &n;
    t.data = x;
    CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
    t.data = y;
    CHECK_OK(dsrs_accelerator_rng_fill(cpu, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
    CHECK(memcmp(x, y, (size_t)n * 4) == 0);
    free(x);
    free(y);
    /* Same state at the end: seed and offset. */
    uint8_t sa[24], sc[24];
    size_t needed = 0;
    CHECK_OK(dsrs_accelerator_rng_state(a, sa, sizeof sa, &needed));
    CHECK_OK(dsrs_accelerator_rng_state(cpu, sc, sizeof sc, &needed));
    CHECK(memcmp(sa, sc, sizeof sa) == 0);
  }
  /* Each device has its own generator. */
  uint64_t s0 = 0, s1 = 0;
  CHECK_OK(dsrs_accelerator_initial_seed(a, &s1));
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
  CHECK_OK(dsrs_accelerator_initial_seed(a, &s0));
  CHECK(s0 != s1);

  /* The cpu accelerator cannot fill the plugin's memory. */
  dsrs_buffer *b = NULL;
  int64_t n = 16;
  REQUIRE_OK(dsrs_buffer_new(a, 64, 0, DSRS_MEMORY_DEVICE, &b));
  DLTensor v;
  REQUIRE_OK(dsrs_buffer_view(b, 0, dt(kDLUInt, 32), &n, 1, &v));
  EXPECT_FAIL("cpu filling a hostmem tensor",
              dsrs_accelerator_rng_fill(cpu, &v, DSRS_DISTRIBUTION_BITS, 0, 0, NULL),
              DSRS_STATUS_INVALID_ARGUMENT, "dsrs_accelerator_rng_fill", "cpu", "device type 12");
  CHECK_OK(dsrs_buffer_free(b));
  CHECK_OK(dsrs_accelerator_free(cpu));
}

/* ---------------------------------------------------------------------------------- */

static void test_dtypes(dsrs_accelerator *a) {
  SECTION("dtype support");
  bool s = true, n = true, flag = true;
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLComplex, 64), &s, &n));
  CHECK(!s && !n);
  s = n = true;
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLComplex, 128), &s, &n));
  CHECK(!s && !n);
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLBfloat, 16), &s, &n));
  CHECK(s && !n); /* stored, computed in float32 */
  CHECK_OK(dsrs_accelerator_is_bf16_supported(a, &flag));
  CHECK(!flag);
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLFloat, 16), &s, &n));
  CHECK(s && !n);
  flag = true;
  CHECK_OK(dsrs_accelerator_is_fp16_supported(a, &flag));
  CHECK(!flag);
  static const struct {
    uint8_t code, bits;
  } native[] = {{kDLFloat, 32}, {kDLFloat, 64}, {kDLInt, 8},  {kDLInt, 64},
                {kDLUInt, 8},   {kDLUInt, 32},  {kDLBool, 8}};
  for (size_t i = 0; i < sizeof native / sizeof native[0]; i++) {
    s = n = false;
    CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(native[i].code, native[i].bits), &s, &n));
    CHECK(s && n);
  }
}

/* A plugin with the event entries but no stream entries (the table allows that), and
 * copies between the memory of different plugin instances: two hostmem instances, and
 * hostmem and fake_events (all kDLExtDev, but no instance can reach another's memory). */
static void test_other_plugins(dsrs_accelerator *a) {
  SECTION("a plugin with events but without streams");
  REQUIRE_OK(dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_EVENTS_ONLY));
  dsrs_accelerator *ev = NULL, *h2 = NULL;
  REQUIRE_OK(dsrs_accelerator_new("fake_events", NULL, &ev));
  round_trip(ev);
  bool sync = false;
  CHECK_OK(dsrs_accelerator_is_synchronized_device(ev, &sync));
  CHECK(sync);
  dsrs_stream *s = NULL;
  REQUIRE_OK(dsrs_stream_new(ev, &s)); /* a host stream */
  void *native = (void *)&native;
  CHECK_OK(dsrs_stream_native_handle(s, &native));
  CHECK(native == NULL);
  dsrs_event *start = NULL, *end = NULL;
  REQUIRE_OK(dsrs_event_new(ev, true, &start));
  REQUIRE_OK(dsrs_event_new(ev, true, &end));
  dsrs_status st = dsrs_event_record(start, NULL);
  CHECK_OK(st); /* a plugin without stream entries records on its NULL stream */
  st = dsrs_event_record(start, s);
  CHECK_OK(st); /* an explicit (host) stream of that plugin */
  if (st == DSRS_STATUS_OK) {
    sleep_ms(5);
    CHECK_OK(dsrs_event_record(end, s));
    double ms = -1;
    CHECK_OK(dsrs_event_elapsed_ms(start, end, &ms));
    CHECK(ms >= 5.0);
  }
  CHECK_OK(dsrs_event_free(start));
  CHECK_OK(dsrs_event_free(end));
  CHECK_OK(dsrs_stream_free(s));

  SECTION("copies between the memory of different plugin instances");
  REQUIRE_OK(dsrs_accelerator_new("hostmem", "{\"devices\": 1}", &h2));
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
  enum { N = 256 };
  unsigned char src[N], back[N];
  test_rng_bytes(src, N);
  dsrs_buffer *x = NULL, *y = NULL, *z = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, N, 0, DSRS_MEMORY_DEVICE, &x));  /* hostmem, instance 1 */
  REQUIRE_OK(dsrs_buffer_new(h2, N, 0, DSRS_MEMORY_DEVICE, &y)); /* hostmem, instance 2 */
  REQUIRE_OK(dsrs_buffer_new(ev, N, 0, DSRS_MEMORY_DEVICE, &z)); /* fake_events */
  CHECK_OK(dsrs_buffer_write(x, 0, src, N, NULL));
  CHECK_OK(dsrs_buffer_write(z, 0, src, N, NULL));
  /* Device memory of another instance or another plugin is never handed to a plugin:
   * the library stages the bytes through host memory. */
  CHECK_OK(dsrs_buffer_copy(y, 0, x, 0, N, NULL));
  memset(back, 0, N);
  CHECK_OK(dsrs_buffer_read(y, 0, back, N, NULL));
  CHECK(memcmp(back, src, N) == 0);
  unsigned char other[N];
  test_rng_bytes(other, N);
  CHECK_OK(dsrs_buffer_write(z, 0, other, N, NULL));
  CHECK_OK(dsrs_buffer_copy(x, 0, z, 0, N, NULL));
  memset(back, 0, N);
  CHECK_OK(dsrs_buffer_read(x, 0, back, N, NULL));
  CHECK(memcmp(back, other, N) == 0);
  CHECK_OK(dsrs_buffer_write(x, 0, src, N, NULL));
  CHECK_OK(dsrs_buffer_copy(z, 0, x, 0, N, NULL));
  memset(back, 0, N);
  CHECK_OK(dsrs_buffer_read(z, 0, back, N, NULL));
  CHECK(memcmp(back, src, N) == 0);
  CHECK_OK(dsrs_buffer_free(x));
  CHECK_OK(dsrs_buffer_free(y));
  CHECK_OK(dsrs_buffer_free(z));
  CHECK_OK(dsrs_accelerator_free(h2));
  CHECK_OK(dsrs_accelerator_free(ev));
}

/* Handles of objects outlive the accelerator handle; the plugin instance goes with the
 * last of them (LeakSanitizer checks that it does). */
static void test_lifetime(uint64_t cap) {
  SECTION("objects outlive the accelerator handle");
  char options[96];
  snprintf(options, sizeof options, "{\"devices\": 1, \"capacity\": %" PRIu64 "}", cap);
  dsrs_accelerator *a = NULL, *owner = NULL;
  REQUIRE_OK(dsrs_accelerator_new("hostmem", options, &a));
  dsrs_buffer *b = NULL;
  dsrs_stream *s = NULL;
  dsrs_event *e = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, 1000, 0, DSRS_MEMORY_DEVICE, &b));
  REQUIRE_OK(dsrs_stream_new(a, &s));
  REQUIRE_OK(dsrs_event_new(a, true, &e));
  CHECK_OK(dsrs_accelerator_free(a));
  uint64_t words[4], back[4];
  test_rng_bytes(words, sizeof words);
  CHECK_OK(dsrs_buffer_write(b, 8, words, sizeof words, s));
  CHECK_OK(dsrs_event_record(e, s));
  CHECK_OK(dsrs_buffer_read(b, 8, back, sizeof back, NULL));
  CHECK(memcmp(words, back, sizeof back) == 0);
  REQUIRE_OK(dsrs_buffer_accelerator(b, &owner));
  CHECK(ALLOCATED(owner, 0) == round_granule(1000));
  CHECK_OK(dsrs_accelerator_free(owner));
  CHECK_OK(dsrs_event_free(e));
  CHECK_OK(dsrs_stream_free(s));
  CHECK_OK(dsrs_buffer_free(b)); /* the last reference: destroy() runs */
}

static void test_detection_and_report(void) {
  SECTION("detection and the report with plugins loaded");
  dsrs_accelerator *cur = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&cur));
  char *name = accel_name(cur);
  CHECK(strcmp(name, "hostmem") == 0); /* the first registered plugin wins */
  free(name);
  CHECK_OK(dsrs_accelerator_free(cur));
  char *report = report_now();
  check_selection(report, "hostmem", "detected", "\"reason\":\"detected\"");
  char *good = canonical(DSRS_TEST_PLUGIN_GOOD);
  check_candidate(report, "hostmem", true, good);
  check_candidate(report, "hostmem_failinit", true, "host RAM"); /* its probe is fine */
  CHECK(strstr(report, "\"name\":\"hostmem_badabi\"") == NULL);
  free(good);
  free(report);
}

static int run_main_suite(void) {
  char *tmp = test_tmpdir_new("dsrs_plugin_test");
  /* The plugins must come from this test, not from an inherited environment. */
  REQUIRE(unsetenv("DSRS_ACCELERATOR_PLUGINS") == 0);
  REQUIRE(unsetenv("HOSTMEM_UNAVAILABLE") == 0);

  test_loading(tmp);
  uint64_t cap = (uint64_t)(2048 + test_rng_next() % 6144) * GRANULE; /* 1 to 4 MiB */
  printf("capacity %" PRIu64 " bytes per device\n", cap);
  test_creation(cap);

  char options[96];
  snprintf(options, sizeof options, "{\"devices\": 2, \"capacity\": %" PRIu64 "}", cap);
  dsrs_accelerator *a = NULL;
  REQUIRE_OK(dsrs_accelerator_new("hostmem", options, &a));
  test_identity(a, cap);
  test_buffers(a, 0);
  test_buffers(a, 1);
  test_cross_device(a);
  test_memory_stats(a, 0, 1, cap);
  test_memory_stats(a, 1, 0, cap);
  test_dlpack(a);
  test_streams_events(a);
  test_rng(a);
  test_dtypes(a);
  test_other_plugins(a);
  test_engine_unsupported(a);
  CHECK_OK(dsrs_accelerator_empty_cache(a));
  CHECK(ALLOCATED(a, 0) == 0 && ALLOCATED(a, 1) == 0); /* everything was freed */
  CHECK(RESERVED(a, 0) == 0 && RESERVED(a, 1) == 0);
  CHECK_OK(dsrs_accelerator_free(a));
  test_lifetime(cap);

  /* The cpu accelerator has no native streams or graphs either. */
  SECTION("cpu: stream_wrap and graph capture unsupported");
  dsrs_accelerator *cpu = NULL;
  dsrs_stream *s = NULL, *wrapped = NULL;
  dsrs_graph *graph = NULL;
  REQUIRE_OK(dsrs_accelerator_new("cpu", NULL, &cpu));
  REQUIRE_OK(dsrs_stream_new(cpu, &s));
  EXPECT_FAIL("stream_wrap on cpu", dsrs_stream_wrap(cpu, NULL, &wrapped), DSRS_STATUS_UNSUPPORTED,
              "dsrs_stream_wrap", "cpu", "native streams");
  EXPECT_FAIL("begin_capture on cpu", dsrs_stream_begin_capture(s), DSRS_STATUS_UNSUPPORTED,
              "dsrs_stream_begin_capture", "cpu", "graph capture");
  EXPECT_FAIL("end_capture on cpu", dsrs_stream_end_capture(s, &graph), DSRS_STATUS_UNSUPPORTED,
              "dsrs_stream_end_capture", "cpu", "graph capture");
  CHECK(wrapped == NULL && graph == NULL);
  CHECK_OK(dsrs_stream_free(s));
  CHECK_OK(dsrs_accelerator_free(cpu));

  test_detection_and_report();
  test_tmpdir_remove(tmp);
  free(tmp);
  return check_exit_code("plugin_test");
}

/* ---------------------------------------------------------------------------------- */
/* Environment modes (one fresh process each; see tests/c/CMakeLists.txt).              */

static char captured_log[16384];
static size_t captured_len = 0;
static void capture_log(void *user_data, dsrs_log_level level, const char *target,
                        const char *message) {
  (void)user_data;
  if (level > DSRS_LOG_WARN) return;
  size_t room = sizeof captured_log - captured_len;
  int n = snprintf(captured_log + captured_len, room, "[%s] %s\n", target, message);
  if (n > 0) captured_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* The current accelerator's name (dsrs_accelerator_get), malloc'd. */
static char *current_name(void) {
  dsrs_accelerator *cur = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&cur));
  char *name = accel_name(cur);
  CHECK_OK(dsrs_accelerator_free(cur));
  return name;
}

static int run_env_mode(const char *mode) {
  const char *plugins = getenv("DSRS_ACCELERATOR_PLUGINS"), *over = getenv("DSRS_ACCELERATOR");
  printf("mode %s, DSRS_ACCELERATOR_PLUGINS=%s, DSRS_ACCELERATOR=%s\n", mode,
         plugins ? plugins : "(unset)", over ? over : "(unset)");
  REQUIRE(plugins != NULL);
  char *good = canonical(DSRS_TEST_PLUGIN_GOOD);
  /* Only what CMakeLists.txt sets for this mode counts; nothing inherited (both variables
   * are read live: DSRS_ACCELERATOR on the first selection, HOSTMEM_UNAVAILABLE by every
   * probe). */
  if (strncmp(mode, "env-override-", 13) != 0) REQUIRE(unsetenv("DSRS_ACCELERATOR") == 0);
  if (strcmp(mode, "env-unavailable") != 0) REQUIRE(unsetenv("HOSTMEM_UNAVAILABLE") == 0);

  if (strcmp(mode, "env-detect") == 0 || strcmp(mode, "env-override-cpu") == 0) {
    bool override_cpu = strcmp(mode, "env-override-cpu") == 0;
    if (override_cpu) REQUIRE(over != NULL && strcmp(over, "cpu") == 0);
    /* The failure of the bad plugin is logged (at WARN) when the list is loaded, on the
     * factory's first use. */
    REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_WARN));
    REQUIRE_OK(dsrs_set_log_callback(capture_log, NULL));
    check_names("hostmem,cuda,cpu");
    REQUIRE_OK(dsrs_set_log_callback(NULL, NULL));
    printf("captured log:\n%s", captured_log);
    CHECK(strstr(captured_log, "DSRS_ACCELERATOR_PLUGINS") != NULL);
    CHECK(strstr(captured_log, "plugin ABI version 99") != NULL);

    char *name = current_name();
    CHECK(strcmp(name, override_cpu ? "cpu" : "hostmem") == 0);
    free(name);
    dsrs_accelerator *cur = NULL, *h = NULL;
    REQUIRE_OK(dsrs_accelerator_get(&cur));
    round_trip(cur);
    if (!override_cpu) {
      int32_t type = 0;
      CHECK_OK(dsrs_accelerator_device_type(cur, &type));
      CHECK(type == kDLExtDev);
      CHECK(figure(cur, dsrs_accelerator_total_memory, -1) == (1ull << 30)); /* no options */
    }
    CHECK_OK(dsrs_accelerator_free(cur));
    /* Either way the plugin can be created by name. */
    REQUIRE_OK(dsrs_accelerator_new("hostmem", "{\"devices\": 1}", &h));
    round_trip(h);
    CHECK_OK(dsrs_accelerator_free(h));

    char *report = report_now();
    if (override_cpu) {
      check_selection(report, "cpu", "override", "DSRS_ACCELERATOR=cpu");
    } else {
      check_selection(report, "hostmem", "detected", NULL);
    }
    check_candidate(report, "hostmem", true, good);
    /* The plugin that failed to load: listed as unavailable, with its reason. */
    char *bad = canonical(DSRS_TEST_PLUGIN_BAD_ABI), label[PATH_MAX + 16];
    snprintf(label, sizeof label, "plugin:%s", DSRS_TEST_PLUGIN_BAD_ABI);
    check_candidate(report, label, false, bad, "declares plugin ABI version 99",
                    "implements version 1");
    free(report);
    /* Loading explicitly: the good one again is a no-op, the bad one fails again. */
    CHECK_OK(dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_GOOD));
    EXPECT_FAIL("loading the bad plugin explicitly",
                dsrs_accelerator_load_plugin(DSRS_TEST_PLUGIN_BAD_ABI),
                DSRS_STATUS_PLUGIN_INVALID, "dsrs_accelerator_load_plugin", bad, "99");
    check_names("hostmem,cuda,cpu");
    free(bad);
  } else if (strcmp(mode, "env-override-hostmem") == 0) {
    char *name = current_name();
    CHECK(strcmp(name, "hostmem") == 0);
    free(name);
    dsrs_accelerator *cur = NULL;
    REQUIRE_OK(dsrs_accelerator_get(&cur));
    round_trip(cur);
    CHECK_OK(dsrs_accelerator_free(cur));
    char *report = report_now();
    check_selection(report, "hostmem", "override", "DSRS_ACCELERATOR=HOSTMEM");
    free(report);
  } else if (strcmp(mode, "env-failinit-first") == 0) {
    check_names("hostmem_failinit,hostmem,cuda,cpu");
    char *name = current_name();
    CHECK(strcmp(name, "hostmem") == 0);
    free(name);
    char *report = report_now();
    check_selection(report, "hostmem", "detected",
                    "hostmem_failinit unavailable: failed to initialize");
    CHECK(strstr(report, "simulated fault") != NULL);
    check_candidate(report, "hostmem_failinit", true, "host RAM"); /* its probe is fine */
    free(report);
  } else if (strcmp(mode, "env-unavailable") == 0) {
    REQUIRE(getenv("HOSTMEM_UNAVAILABLE") != NULL);
    check_names("hostmem,cuda,cpu");
    /* The first available built-in accelerator: cpu (cuda where a GPU is usable). */
    char *name = current_name();
    CHECK(strcmp(name, "cpu") == 0 || strcmp(name, "cuda") == 0);
    char *report = report_now();
    check_selection(report, name, "detected", "hostmem unavailable: HOSTMEM_UNAVAILABLE is set");
    free(name);
    check_candidate(report, "hostmem", false, "HOSTMEM_UNAVAILABLE is set");
    free(report);
    dsrs_accelerator *h = NULL;
    EXPECT_FAIL("creating the unavailable plugin", dsrs_accelerator_new("hostmem", NULL, &h),
                DSRS_STATUS_UNAVAILABLE, "dsrs_accelerator_new", "HOSTMEM_UNAVAILABLE is set",
                "available accelerators:", "cpu");
    CHECK(h == NULL);
    /* The probe runs again at each creation. */
    REQUIRE(unsetenv("HOSTMEM_UNAVAILABLE") == 0);
    REQUIRE_OK(dsrs_accelerator_new("hostmem", NULL, &h));
    round_trip(h);
    CHECK_OK(dsrs_accelerator_free(h));
  } else {
    fprintf(stderr, "plugin_test: unknown mode %s\n", mode);
    return 2;
  }
  free(good);
  return check_exit_code(mode);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("plugin_test: seed %" PRIu64 " (DSRS_TEST_SEED=%" PRIu64 " reproduces this run)\n", seed,
         seed);
  test_rng_seed(seed);
  if (argc > 1) return run_env_mode(argv[1]);
  /* Failures below log at WARN (a stale free, a refused plugin); keep to what we print. */
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_ERROR));
  return run_main_suite();
}
