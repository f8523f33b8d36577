/*
 * fake_plugin.c — shared libraries that are not valid deepspeed_rs accelerator plugins, for
 * plugin_test's DSRS_STATUS_PLUGIN_INVALID cases, and one minimal valid plugin with an
 * unusual table. One variant per build (tests/c/CMakeLists.txt defines one of these):
 *
 *   FAKE_PLUGIN_NO_ENTRY          exports a function, but not dsrs_accelerator_plugin_entry
 *   FAKE_PLUGIN_NULL_TABLE        the entry returns NULL (it cannot serve the host's version)
 *   FAKE_PLUGIN_SMALL_TABLE       the table declares struct_size 16
 *   FAKE_PLUGIN_MISSING_REQUIRED  memory_info, allocate, deallocate, copy, synchronize NULL
 *   FAKE_PLUGIN_HALF_STREAMS      stream_create without stream_destroy, stream_synchronize
 *   FAKE_PLUGIN_BAD_NAME          the accelerator's name is "bad name!"
 *   FAKE_PLUGIN_EVENTS_ONLY       valid: "fake_events", synchronous, device memory from
 *                                 malloc, the event entries but no stream entries (allowed:
 *                                 its streams are then host streams)
 *
 * The library refuses the other variants while loading them, so none of their entries is
 * ever called; their stubs only make the tables look plausible.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deepspeed_rs.h"

#if defined(__GNUC__)
#define FAKE_EXPORT __attribute__((visibility("default")))
#define FAKE_MAYBE_UNUSED __attribute__((unused)) /* not every variant uses every stub */
#else
#define FAKE_EXPORT
#define FAKE_MAYBE_UNUSED
#endif

#if defined(FAKE_PLUGIN_NO_ENTRY)

/* A shared library like any other: one exported function, no plugin entry. */
FAKE_EXPORT int fake_plugin_answer(void) { return 42; }

#elif defined(FAKE_PLUGIN_EVENTS_ONLY)

static int32_t ev_init(const char *options_json, void **state) {
  (void)options_json;
  static int instance;
  *state = &instance;
  return 0;
}
static void ev_destroy(void *state) { (void)state; }
static int32_t ev_device_count(void *state, uint32_t *out) {
  (void)state;
  *out = 1;
  return 0;
}
static int32_t ev_memory_info(void *state, uint32_t device, uint64_t *total, uint64_t *available) {
  (void)state, (void)device;
  *total = *available = 1u << 30;
  return 0;
}
static int32_t ev_allocate(void *state, uint32_t device, size_t size, size_t align, int32_t kind,
                           void **out) {
  (void)state, (void)device, (void)kind;
  void *p = NULL;
  if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) != 0)
    return DSRS_STATUS_OUT_OF_MEMORY;
  memset(p, 0, size);
  *out = p;
  return 0;
}
static int32_t ev_deallocate(void *state, uint32_t device, void *ptr, size_t size, int32_t kind) {
  (void)state, (void)device, (void)size, (void)kind;
  free(ptr);
  return 0;
}
static int32_t ev_copy(void *state, uint32_t device, void *dst, bool dst_on_device, const void *src,
                       bool src_on_device, size_t n, void *stream) {
  (void)state, (void)device, (void)dst_on_device, (void)src_on_device, (void)stream;
  memmove(dst, src, n);
  return 0;
}
typedef struct {
  struct timespec at;
} ev_event;
static int32_t ev_event_create(void *state, uint32_t device, bool timing, void **out) {
  (void)state, (void)device, (void)timing;
  ev_event *e = (ev_event *)calloc(1, sizeof *e);
  if (e == NULL) return DSRS_STATUS_OUT_OF_MEMORY;
  *out = e;
  return 0;
}
static void ev_event_destroy(void *state, void *event) {
  (void)state;
  free(event);
}
static int32_t ev_event_record(void *state, void *event, void *stream) {
  (void)state, (void)stream;
  clock_gettime(CLOCK_MONOTONIC, &((ev_event *)event)->at);
  return 0;
}
static int32_t ev_event_synchronize(void *state, void *event) {
  (void)state, (void)event;
  return 0;
}
static int32_t ev_event_elapsed_ms(void *state, void *start, void *end, double *out) {
  (void)state;
  const ev_event *a = (const ev_event *)start, *b = (const ev_event *)end;
  *out = (double)(b->at.tv_sec - a->at.tv_sec) * 1e3 +
         (double)(b->at.tv_nsec - a->at.tv_nsec) / 1e6;
  return 0;
}

static const dsrs_accelerator_plugin_v1 table = {
    .abi_version = DSRS_ACCELERATOR_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(dsrs_accelerator_plugin_v1),
    .name = "fake_events",
    .flags = DSRS_PLUGIN_SYNCHRONOUS, /* so synchronize may be NULL */
    .dlpack_device_type = kDLExtDev,
    .init = ev_init,
    .destroy = ev_destroy,
    .device_count = ev_device_count,
    .memory_info = ev_memory_info,
    .allocate = ev_allocate,
    .deallocate = ev_deallocate,
    .copy = ev_copy,
    .event_create = ev_event_create,
    .event_destroy = ev_event_destroy,
    .event_record = ev_event_record,
    .event_synchronize = ev_event_synchronize,
    .event_elapsed_ms = ev_event_elapsed_ms,
};

FAKE_EXPORT const dsrs_accelerator_plugin_v1 *dsrs_accelerator_plugin_entry(
    uint32_t host_abi_version) {
  (void)host_abi_version;
  return &table;
}

#else

FAKE_MAYBE_UNUSED
static int32_t stub_init(const char *options_json, void **state) {
  (void)options_json;
  *state = NULL;
  return DSRS_STATUS_DEVICE_ERROR;
}
FAKE_MAYBE_UNUSED
static void stub_destroy(void *state) { (void)state; }
FAKE_MAYBE_UNUSED
static int32_t stub_device_count(void *state, uint32_t *out) {
  (void)state;
  *out = 1;
  return 0;
}
FAKE_MAYBE_UNUSED
static int32_t stub_memory_info(void *state, uint32_t device, uint64_t *total,
                                uint64_t *available) {
  (void)state, (void)device;
  *total = *available = 0;
  return 0;
}
FAKE_MAYBE_UNUSED
static int32_t stub_allocate(void *state, uint32_t device, size_t size, size_t align, int32_t kind,
                             void **out) {
  (void)state, (void)device, (void)size, (void)align, (void)kind, (void)out;
  return DSRS_STATUS_OUT_OF_MEMORY;
}
FAKE_MAYBE_UNUSED
static int32_t stub_deallocate(void *state, uint32_t device, void *ptr, size_t size, int32_t kind) {
  (void)state, (void)device, (void)ptr, (void)size, (void)kind;
  return 0;
}
FAKE_MAYBE_UNUSED
static int32_t stub_copy(void *state, uint32_t device, void *dst, bool dst_on_device,
                         const void *src, bool src_on_device, size_t n, void *stream) {
  (void)state, (void)device, (void)dst, (void)dst_on_device, (void)src, (void)src_on_device;
  (void)n, (void)stream;
  return DSRS_STATUS_DEVICE_ERROR;
}
FAKE_MAYBE_UNUSED
static int32_t stub_synchronize(void *state, uint32_t device) {
  (void)state, (void)device;
  return 0;
}
FAKE_MAYBE_UNUSED
static int32_t stub_stream_create(void *state, uint32_t device, void **out) {
  (void)state, (void)device;
  *out = NULL;
  return DSRS_STATUS_DEVICE_ERROR;
}

#if defined(FAKE_PLUGIN_BAD_NAME)
#define FAKE_NAME "bad name!"
#elif defined(FAKE_PLUGIN_MISSING_REQUIRED)
#define FAKE_NAME "fake_missing"
#elif defined(FAKE_PLUGIN_HALF_STREAMS)
#define FAKE_NAME "fake_half_streams"
#else
#define FAKE_NAME "fake"
#endif

FAKE_MAYBE_UNUSED
static const dsrs_accelerator_plugin_v1 table = {
    .abi_version = DSRS_ACCELERATOR_PLUGIN_ABI_VERSION,
#if defined(FAKE_PLUGIN_SMALL_TABLE)
    .struct_size = 16,
#else
    .struct_size = sizeof(dsrs_accelerator_plugin_v1),
#endif
    .name = FAKE_NAME,
    .flags = 0,
    .dlpack_device_type = kDLExtDev,
    .init = stub_init,
    .destroy = stub_destroy,
    .device_count = stub_device_count,
#if !defined(FAKE_PLUGIN_MISSING_REQUIRED)
    .memory_info = stub_memory_info,
    .allocate = stub_allocate,
    .deallocate = stub_deallocate,
    .copy = stub_copy,
    .synchronize = stub_synchronize,
#endif
#if defined(FAKE_PLUGIN_HALF_STREAMS)
    .stream_create = stub_stream_create,
#endif
};

FAKE_EXPORT const dsrs_accelerator_plugin_v1 *dsrs_accelerator_plugin_entry(
    uint32_t host_abi_version) {
  (void)host_abi_version;
#if defined(FAKE_PLUGIN_NULL_TABLE)
  return NULL;
#else
  return &table;
#endif
}

#endif
