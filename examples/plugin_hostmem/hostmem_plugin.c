/*
 * hostmem — an example deepspeed_rs accelerator plugin.
 *
 * A "device" whose memory is host RAM behind its own caching allocator. It declares its
 * memory as device memory (not host-accessible to deepspeed_rs), so everything crosses the
 * plugin table: allocation with statistics, copies in both directions with pointer checks,
 * fills, streams that count their work, events with timing, profiling ranges, dtype
 * support and errors with messages. Build:
 *
 *   cc -std=c11 -O2 -fPIC -shared -I include -o libdsrs_hostmem.so \
 *      examples/plugin_hostmem/hostmem_plugin.c -lpthread
 *
 * then load it with dsrs_accelerator_load_plugin("./libdsrs_hostmem.so") or
 * DSRS_ACCELERATOR_PLUGINS=./libdsrs_hostmem.so, and create it as "hostmem".
 *
 * Options (JSON object): "devices" (default 2), "capacity" (bytes per device, default
 * 1 GiB). The environment variable HOSTMEM_UNAVAILABLE makes probe() answer "unavailable".
 *
 * Test variants (compile-time): -DHOSTMEM_ABI_VERSION=N declares another plugin ABI
 * version; -DHOSTMEM_FAIL_INIT makes init fail; -DHOSTMEM_NAME='"x"' renames it.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deepspeed_rs.h"

#ifndef HOSTMEM_ABI_VERSION
#define HOSTMEM_ABI_VERSION DSRS_ACCELERATOR_PLUGIN_ABI_VERSION
#endif
#ifndef HOSTMEM_NAME
#define HOSTMEM_NAME "hostmem"
#endif

#if defined(__GNUC__)
#define HOSTMEM_EXPORT __attribute__((visibility("default")))
#else
#define HOSTMEM_EXPORT
#endif

#define MAX_DEVICES 16
#define GRANULE 512u   /* allocations are rounded up to this */
#define MIN_ALIGN 256u /* and aligned to at least this */

/* ---- errors: a per-thread message ----------------------------------------------------- */

static _Thread_local char last_error_text[512];

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int32_t fail(int32_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error_text, sizeof last_error_text, fmt, ap);
    va_end(ap);
    return status;
}

static const char *hm_last_error(void *state) {
    (void)state;
    return last_error_text;
}

/* ---- the allocator ---------------------------------------------------------------------- */

typedef struct block {
    struct block *next;
    void *ptr;
    size_t size;  /* rounded size */
    size_t align;
} block;

typedef struct {
    block *live;   /* handed out */
    block *cached; /* freed, kept for reuse */
    uint64_t capacity;
    dsrs_plugin_memory_stats stats;
} device_mem;

typedef struct {
    pthread_mutex_t lock;
    uint32_t devices;
    device_mem mem[MAX_DEVICES];
    long ranges_open;
    unsigned long long streams_live, events_live;
} hostmem;

static size_t round_up(size_t n) { return (n + GRANULE - 1) / GRANULE * GRANULE; }

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The live block that contains [p, p + n), or NULL. Caller holds the lock. */
static block *find_range(device_mem *m, const void *p, size_t n) {
    const char *c = (const char *)p;
    for (block *b = m->live; b; b = b->next) {
        const char *start = (const char *)b->ptr;
        if (c >= start && c <= start + b->size && n <= (size_t)(start + b->size - c)) return b;
    }
    return NULL;
}

/* ---- options ---------------------------------------------------------------------------- */

#ifndef HOSTMEM_FAIL_INIT
/* Reads a non-negative integer option "key": N from a flat JSON object (enough for the two
 * numeric options; anything else is rejected with a message). */
static int read_option(const char *json, const char *key, unsigned long long *out) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *at = strstr(json, pattern);
    if (!at) return 0;
    at = strchr(at + strlen(pattern), ':');
    if (!at) return -1;
    char *end = NULL;
    unsigned long long v = strtoull(at + 1, &end, 10);
    if (end == at + 1) return -1;
    *out = v;
    return 1;
}
#endif

/* ---- table entries ---------------------------------------------------------------------- */

static int32_t hm_probe(char *detail, size_t len) {
    if (getenv("HOSTMEM_UNAVAILABLE")) {
        snprintf(detail, len, "HOSTMEM_UNAVAILABLE is set");
        return 0;
    }
    snprintf(detail, len, "host RAM behind a caching allocator");
    return 1;
}

static int32_t hm_init(const char *options_json, void **state) {
#ifdef HOSTMEM_FAIL_INIT
    (void)options_json;
    (void)state;
    return fail(DSRS_STATUS_DEVICE_ERROR,
                "%s: the device did not answer its reset (simulated fault, code 0x2a)", HOSTMEM_NAME);
#else
    unsigned long long devices = 2, capacity = 1ULL << 30;
    if (options_json) {
        int r = read_option(options_json, "devices", &devices);
        if (r < 0 || (r > 0 && (devices == 0 || devices > MAX_DEVICES)))
            return fail(DSRS_STATUS_INVALID_CONFIG, "%s: options.devices must be 1..%d",
                        HOSTMEM_NAME, MAX_DEVICES);
        if (read_option(options_json, "capacity", &capacity) < 0)
            return fail(DSRS_STATUS_INVALID_CONFIG, "%s: options.capacity must be a byte count",
                        HOSTMEM_NAME);
    }
    hostmem *h = calloc(1, sizeof *h);
    if (!h) return fail(DSRS_STATUS_OUT_OF_MEMORY, "%s: out of host memory", HOSTMEM_NAME);
    pthread_mutex_init(&h->lock, NULL);
    h->devices = (uint32_t)devices;
    for (uint32_t d = 0; d < h->devices; d++) h->mem[d].capacity = capacity;
    *state = h;
    return 0;
#endif
}

static void free_list(block *b) {
    while (b) {
        block *next = b->next;
        free(b->ptr);
        free(b);
        b = next;
    }
}

static void hm_destroy(void *state) {
    hostmem *h = state;
    for (uint32_t d = 0; d < h->devices; d++) {
        free_list(h->mem[d].live); /* leaks of the host would show here; none expected */
        free_list(h->mem[d].cached);
    }
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static int32_t check_device(hostmem *h, uint32_t device) {
    if (device >= h->devices)
        return fail(DSRS_STATUS_OUT_OF_RANGE, "%s: no device %u", HOSTMEM_NAME, device);
    return 0;
}

static int32_t hm_device_count(void *state, uint32_t *out) {
    *out = ((hostmem *)state)->devices;
    return 0;
}

static int32_t hm_device_name(void *state, uint32_t device, char *buf, size_t len) {
    int32_t st = check_device(state, device);
    if (st) return st;
    snprintf(buf, len, "hostmem device %u (host RAM)", device);
    return 0;
}

static int32_t hm_memory_info(void *state, uint32_t device, uint64_t *total, uint64_t *available) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    device_mem *m = &h->mem[device];
    *total = m->capacity;
    *available = m->capacity - m->stats.reserved_bytes;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static int32_t hm_allocate(void *state, uint32_t device, size_t size, size_t align, int32_t kind,
                           void **out) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    if (kind != DSRS_MEMORY_DEVICE)
        return fail(DSRS_STATUS_UNSUPPORTED, "%s: memory kind %d is not supported (device memory only)",
                    HOSTMEM_NAME, (int)kind);
    size_t rounded = round_up(size);
    size_t a = align < MIN_ALIGN ? MIN_ALIGN : align;
    pthread_mutex_lock(&h->lock);
    device_mem *m = &h->mem[device];
    /* Reuse a cached block of the same size and sufficient alignment. */
    block **link = &m->cached, *b = NULL;
    for (; *link; link = &(*link)->next) {
        if ((*link)->size == rounded && (*link)->align >= a) {
            b = *link;
            *link = b->next;
            break;
        }
    }
    if (!b) {
        if (m->stats.reserved_bytes + rounded > m->capacity) {
            m->stats.num_ooms++;
            pthread_mutex_unlock(&h->lock);
            return fail(DSRS_STATUS_OUT_OF_MEMORY, "%s: out of device memory: %zu bytes requested, %llu of %llu reserved",
                        HOSTMEM_NAME, size, (unsigned long long)m->stats.reserved_bytes,
                        (unsigned long long)m->capacity);
        }
        b = malloc(sizeof *b);
        void *p = NULL;
        if (!b || posix_memalign(&p, a, rounded) != 0) {
            free(b);
            m->stats.num_ooms++;
            pthread_mutex_unlock(&h->lock);
            return fail(DSRS_STATUS_OUT_OF_MEMORY, "%s: the host refused %zu bytes", HOSTMEM_NAME, rounded);
        }
        b->ptr = p;
        b->size = rounded;
        b->align = a;
        m->stats.reserved_bytes += rounded;
        m->stats.peak_reserved_bytes = max_u64(m->stats.peak_reserved_bytes, m->stats.reserved_bytes);
    }
    memset(b->ptr, 0, rounded);
    b->next = m->live;
    m->live = b;
    m->stats.allocated_bytes += rounded;
    m->stats.peak_allocated_bytes = max_u64(m->stats.peak_allocated_bytes, m->stats.allocated_bytes);
    m->stats.allocations++;
    m->stats.peak_allocations = max_u64(m->stats.peak_allocations, m->stats.allocations);
    *out = b->ptr;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static int32_t hm_deallocate(void *state, uint32_t device, void *ptr, size_t size, int32_t kind) {
    hostmem *h = state;
    (void)kind;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    device_mem *m = &h->mem[device];
    for (block **link = &m->live; *link; link = &(*link)->next) {
        block *b = *link;
        if (b->ptr == ptr) {
            *link = b->next;
            b->next = m->cached;
            m->cached = b;
            m->stats.allocated_bytes -= b->size;
            m->stats.allocations--;
            pthread_mutex_unlock(&h->lock);
            (void)size;
            return 0;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return fail(DSRS_STATUS_INVALID_ARGUMENT, "%s: %p is not a live allocation", HOSTMEM_NAME, ptr);
}

static int32_t hm_copy(void *state, uint32_t device, void *dst, bool dst_on_device, const void *src,
                       bool src_on_device, size_t n, void *stream) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    device_mem *m = &h->mem[device];
    const char *bad = NULL;
    if (dst_on_device && !find_range(m, dst, n)) bad = "destination";
    if (src_on_device && !find_range(m, src, n)) bad = "source";
    pthread_mutex_unlock(&h->lock);
    if (bad)
        return fail(DSRS_STATUS_INVALID_ARGUMENT,
                    "%s: the copy's %s (%zu bytes) is not inside a live allocation", HOSTMEM_NAME, bad, n);
    memmove(dst, src, n);
    if (stream) __atomic_add_fetch((unsigned long long *)stream, 1, __ATOMIC_RELAXED);
    return 0;
}

static int32_t hm_synchronize(void *state, uint32_t device) { return check_device(state, device); }

static int32_t hm_fill(void *state, uint32_t device, void *dst, size_t n, const void *pattern,
                       size_t pattern_size, void *stream) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    int ok = find_range(&h->mem[device], dst, n) != NULL;
    pthread_mutex_unlock(&h->lock);
    if (!ok)
        return fail(DSRS_STATUS_INVALID_ARGUMENT, "%s: the fill's %zu bytes are not inside a live allocation",
                    HOSTMEM_NAME, n);
    for (size_t i = 0; i < n; i += pattern_size) memcpy((char *)dst + i, pattern, pattern_size);
    if (stream) __atomic_add_fetch((unsigned long long *)stream, 1, __ATOMIC_RELAXED);
    return 0;
}

static int32_t hm_memory_stats(void *state, uint32_t device, dsrs_plugin_memory_stats *out) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    *out = h->mem[device].stats;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static int32_t hm_reset_peak(void *state, uint32_t device) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    pthread_mutex_lock(&h->lock);
    dsrs_plugin_memory_stats *s = &h->mem[device].stats;
    s->peak_allocated_bytes = s->allocated_bytes;
    s->peak_reserved_bytes = s->reserved_bytes;
    s->peak_allocations = s->allocations;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static int32_t hm_empty_cache(void *state) {
    hostmem *h = state;
    pthread_mutex_lock(&h->lock);
    for (uint32_t d = 0; d < h->devices; d++) {
        for (block *b = h->mem[d].cached; b; b = b->next) h->mem[d].stats.reserved_bytes -= b->size;
        free_list(h->mem[d].cached);
        h->mem[d].cached = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static uint32_t hm_dtype_support(void *state, DLDataType dtype) {
    (void)state;
    if (dtype.code == kDLComplex) return 0;
    if (dtype.bits == 16 && (dtype.code == kDLFloat || dtype.code == kDLBfloat))
        return DSRS_PLUGIN_DTYPE_SUPPORTED; /* stored, computed in float32 */
    return DSRS_PLUGIN_DTYPE_SUPPORTED | DSRS_PLUGIN_DTYPE_NATIVE;
}

/* A stream is a counter of the operations submitted to it; work runs at submission. */
static int32_t hm_stream_create(void *state, uint32_t device, void **out) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    unsigned long long *s = calloc(1, sizeof *s);
    if (!s) return fail(DSRS_STATUS_OUT_OF_MEMORY, "%s: no memory for a stream", HOSTMEM_NAME);
    __atomic_add_fetch(&h->streams_live, 1, __ATOMIC_RELAXED);
    *out = s;
    return 0;
}

static void hm_stream_destroy(void *state, uint32_t device, void *stream) {
    (void)device;
    __atomic_sub_fetch(&((hostmem *)state)->streams_live, 1, __ATOMIC_RELAXED);
    free(stream);
}

static int32_t hm_stream_synchronize(void *state, uint32_t device, void *stream) {
    (void)stream;
    return check_device(state, device);
}

typedef struct {
    bool timing, recorded;
    struct timespec at;
} hm_event;

static int32_t hm_event_create(void *state, uint32_t device, bool timing, void **out) {
    hostmem *h = state;
    int32_t st = check_device(h, device);
    if (st) return st;
    hm_event *e = calloc(1, sizeof *e);
    if (!e) return fail(DSRS_STATUS_OUT_OF_MEMORY, "%s: no memory for an event", HOSTMEM_NAME);
    e->timing = timing;
    __atomic_add_fetch(&h->events_live, 1, __ATOMIC_RELAXED);
    *out = e;
    return 0;
}

static void hm_event_destroy(void *state, void *event) {
    __atomic_sub_fetch(&((hostmem *)state)->events_live, 1, __ATOMIC_RELAXED);
    free(event);
}

static int32_t hm_event_record(void *state, void *event, void *stream) {
    (void)state;
    (void)stream;
    hm_event *e = event;
    clock_gettime(CLOCK_MONOTONIC, &e->at);
    e->recorded = true;
    return 0;
}

static int32_t hm_event_synchronize(void *state, void *event) {
    (void)state;
    (void)event;
    return 0;
}

static int32_t hm_event_elapsed_ms(void *state, void *start, void *end, double *out) {
    (void)state;
    hm_event *a = start, *b = end;
    if (!a->timing || !b->timing || !a->recorded || !b->recorded)
        return fail(DSRS_STATUS_INVALID_STATE, "%s: elapsed time needs two recorded timing events",
                    HOSTMEM_NAME);
    *out = (double)(b->at.tv_sec - a->at.tv_sec) * 1e3 + (double)(b->at.tv_nsec - a->at.tv_nsec) / 1e6;
    return 0;
}

static int32_t hm_range_push(void *state, const char *name) {
    (void)name;
    __atomic_add_fetch(&((hostmem *)state)->ranges_open, 1, __ATOMIC_RELAXED);
    return 0;
}

static int32_t hm_range_pop(void *state) {
    hostmem *h = state;
    if (__atomic_sub_fetch(&h->ranges_open, 1, __ATOMIC_RELAXED) < 0) {
        __atomic_add_fetch(&h->ranges_open, 1, __ATOMIC_RELAXED);
        return fail(DSRS_STATUS_INVALID_STATE, "%s: range_pop without range_push", HOSTMEM_NAME);
    }
    return 0;
}

static const dsrs_accelerator_plugin_v1 table = {
    .abi_version = HOSTMEM_ABI_VERSION,
    .struct_size = sizeof(dsrs_accelerator_plugin_v1),
    .name = HOSTMEM_NAME,
    .flags = 0, /* device memory is not host-accessible to the library; work is "queued" */
    .dlpack_device_type = kDLExtDev,
    .communication_backend = "gloo",
    .probe = hm_probe,
    .init = hm_init,
    .destroy = hm_destroy,
    .last_error = hm_last_error,
    .device_count = hm_device_count,
    .device_name = hm_device_name,
    .memory_info = hm_memory_info,
    .allocate = hm_allocate,
    .deallocate = hm_deallocate,
    .copy = hm_copy,
    .synchronize = hm_synchronize,
    .fill = hm_fill,
    .memory_stats = hm_memory_stats,
    .reset_peak_memory_stats = hm_reset_peak,
    .empty_cache = hm_empty_cache,
    .dtype_support = hm_dtype_support,
    .stream_create = hm_stream_create,
    .stream_destroy = hm_stream_destroy,
    .stream_synchronize = hm_stream_synchronize,
    .stream_query = NULL, /* deepspeed_rs synchronizes and answers "done" */
    .stream_wait_event = NULL,
    .event_create = hm_event_create,
    .event_destroy = hm_event_destroy,
    .event_record = hm_event_record,
    .event_synchronize = hm_event_synchronize,
    .event_query = NULL,
    .event_elapsed_ms = hm_event_elapsed_ms,
    .range_push = hm_range_push,
    .range_pop = hm_range_pop,
};

HOSTMEM_EXPORT const dsrs_accelerator_plugin_v1 *dsrs_accelerator_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version; /* one table; the library checks abi_version */
    return &table;
}
