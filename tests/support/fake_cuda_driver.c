/*
 * A stand-in CUDA driver (libcuda.so.1) for machines without a GPU: "device" memory is host
 * memory, streams run work at submission, events read CLOCK_MONOTONIC, memory pools keep
 * the statistics CUDA's do (used/reserved, high-water marks, release threshold, trim).
 * Kernel launches and graph capture answer CUDA_ERROR_NOT_SUPPORTED.
 *
 * It lets tests/cuda_fake.rs drive the CUDA accelerator's own logic (contexts, pools,
 * statistics, copies, the fill patterns, streams, events, error mapping) in CI. It checks
 * what a real driver checks where that catches our mistakes: unknown pointers, a freed
 * pointer, misaligned memsets, bad device indices. Environment: FAKE_CUDA_DEVICES (default
 * 2), FAKE_CUDA_DRIVER_VERSION (default 12080), FAKE_CUDA_TOTAL_MEM (default 1 GiB).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
enum {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    INVALID_DEVICE = 101,
    NOT_READY = 600,
    NOT_SUPPORTED = 801,
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;

static int env_int(const char *name, long long def) {
    const char *v = getenv(name);
    return v ? atoi(v) : (int)def;
}
static unsigned long long total_mem(void) {
    const char *v = getenv("FAKE_CUDA_TOTAL_MEM");
    return v ? strtoull(v, NULL, 10) : (1ULL << 30);
}
static int devices(void) { return env_int("FAKE_CUDA_DEVICES", 2); }

CUresult cuInit(unsigned flags) {
    (void)flags;
    initialized = 1;
    return OK;
}
CUresult cuDriverGetVersion(int *v) {
    *v = env_int("FAKE_CUDA_DRIVER_VERSION", 12080);
    return OK;
}
CUresult cuDeviceGetCount(int *n) {
    if (!initialized) return NOT_INITIALIZED;
    *n = devices();
    return OK;
}
CUresult cuDeviceGet(int *dev, int ordinal) {
    if (ordinal < 0 || ordinal >= devices()) return INVALID_DEVICE;
    *dev = ordinal;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    if (dev < 0 || dev >= devices()) return INVALID_DEVICE;
    char buf[64];
    int n = 0;
    const char *base = "Fake GPU ";
    while (base[n]) { buf[n] = base[n]; n++; }
    buf[n++] = (char)('0' + dev);
    buf[n] = 0;
    strncpy(name, buf, (size_t)len);
    name[len - 1] = 0;
    return OK;
}
typedef struct { char bytes[16]; } CUuuid;
CUresult cuDeviceGetUuid_v2(CUuuid *u, int dev) {
    for (int i = 0; i < 16; i++) u->bytes[i] = (char)(0x10 * dev + i);
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
    (void)dev;
    *bytes = (size_t)total_mem();
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    if (dev < 0 || dev >= devices()) return INVALID_DEVICE;
    switch (attr) {
    case 16: *v = 132; return OK;               /* multiprocessors */
    case 33: *v = 0x40 + dev; return OK;        /* PCI bus */
    case 34: *v = 0; return OK;                 /* PCI device */
    case 50: *v = 0; return OK;                 /* PCI domain */
    case 75: *v = dev == 0 ? 9 : 7; return OK;  /* compute capability major: 9.0 and 7.5 */
    case 76: *v = dev == 0 ? 0 : 5; return OK;
    case 115: *v = 1; return OK;                /* memory pools supported */
    default: return INVALID_VALUE;
    }
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
    *ctx = (void *)(uintptr_t)(0x1000 + dev);
    return OK;
}
static _Thread_local void *current_ctx;
CUresult cuCtxSetCurrent(void *ctx) {
    current_ctx = ctx;
    return OK;
}
CUresult cuCtxSynchronize(void) { return current_ctx ? OK : INVALID_VALUE; }

/* ---- memory pools --------------------------------------------------------------------- */

typedef struct alloc {
    struct alloc *next;
    char *ptr;
    size_t size;
    int pool; /* -1: pinned host */
} alloc;
static alloc *live;
typedef struct {
    int used;
    unsigned long long used_cur, used_high, reserved_cur, reserved_high, threshold;
} pool;
static pool pools[16];

static int pool_index(void *p) { return (int)((uintptr_t)p - 0x2000); }

CUresult cuMemPoolCreate(void **p, const void *props) {
    /* props: allocType(u32) handleTypes(u32) location{type(u32), id(i32)} */
    const int *f = props;
    int dev = f[3];
    if (f[0] != 1 || f[2] != 1 || dev < 0 || dev >= devices()) return INVALID_VALUE;
    pools[dev].used = 1;
    *p = (void *)(uintptr_t)(0x2000 + dev);
    return OK;
}
CUresult cuMemPoolDestroy(void *p) {
    pools[pool_index(p)].used = 0;
    return OK;
}
static void trim(pool *q, unsigned long long keep) {
    if (q->reserved_cur > q->used_cur + keep) q->reserved_cur = q->used_cur + keep;
}
CUresult cuMemPoolSetAttribute(void *p, int attr, void *value) {
    pool *q = &pools[pool_index(p)];
    unsigned long long v = *(unsigned long long *)value;
    pthread_mutex_lock(&lock);
    CUresult r = OK;
    switch (attr) {
    case 4: q->threshold = v; break;
    case 6: if (v) r = INVALID_VALUE; else q->reserved_high = q->reserved_cur; break;
    case 8: if (v) r = INVALID_VALUE; else q->used_high = q->used_cur; break;
    default: r = INVALID_VALUE;
    }
    pthread_mutex_unlock(&lock);
    return r;
}
CUresult cuMemPoolGetAttribute(void *p, int attr, void *value) {
    pool *q = &pools[pool_index(p)];
    unsigned long long *out = value;
    pthread_mutex_lock(&lock);
    CUresult r = OK;
    switch (attr) {
    case 4: *out = q->threshold; break;
    case 5: *out = q->reserved_cur; break;
    case 6: *out = q->reserved_high; break;
    case 7: *out = q->used_cur; break;
    case 8: *out = q->used_high; break;
    default: r = INVALID_VALUE;
    }
    pthread_mutex_unlock(&lock);
    return r;
}
CUresult cuMemPoolTrimTo(void *p, size_t keep) {
    pthread_mutex_lock(&lock);
    trim(&pools[pool_index(p)], keep);
    pthread_mutex_unlock(&lock);
    return OK;
}
#define GRAN (2u << 20) /* pools grow in 2 MiB steps */
CUresult cuMemAllocFromPoolAsync(unsigned long long *dptr, size_t size, void *p, void *stream) {
    (void)stream;
    pool *q = &pools[pool_index(p)];
    if (!q->used || size == 0) return INVALID_VALUE;
    size_t rounded = (size + 511) / 512 * 512;
    pthread_mutex_lock(&lock);
    if (q->used_cur + rounded > total_mem()) {
        pthread_mutex_unlock(&lock);
        return OUT_OF_MEMORY;
    }
    void *mem = NULL;
    if (posix_memalign(&mem, 256, rounded) != 0) {
        pthread_mutex_unlock(&lock);
        return OUT_OF_MEMORY;
    }
    memset(mem, 0xcd, rounded); /* garbage, as fresh device memory may be */
    alloc *a = malloc(sizeof *a);
    a->ptr = mem;
    a->size = rounded;
    a->pool = pool_index(p);
    a->next = live;
    live = a;
    q->used_cur += rounded;
    if (q->used_cur > q->used_high) q->used_high = q->used_cur;
    while (q->reserved_cur < q->used_cur) q->reserved_cur += GRAN;
    if (q->reserved_cur > q->reserved_high) q->reserved_high = q->reserved_cur;
    *dptr = (unsigned long long)(uintptr_t)mem;
    pthread_mutex_unlock(&lock);
    return OK;
}
static alloc *take(char *ptr, int pinned) {
    for (alloc **l = &live; *l; l = &(*l)->next) {
        if ((*l)->ptr == ptr && ((*l)->pool < 0) == pinned) {
            alloc *a = *l;
            *l = a->next;
            return a;
        }
    }
    return NULL;
}
CUresult cuMemFreeAsync(unsigned long long dptr, void *stream) {
    (void)stream;
    pthread_mutex_lock(&lock);
    alloc *a = take((char *)(uintptr_t)dptr, 0);
    if (!a) {
        pthread_mutex_unlock(&lock);
        return INVALID_VALUE;
    }
    pool *q = &pools[a->pool];
    q->used_cur -= a->size;
    trim(q, q->threshold); /* reserved memory above the threshold goes back */
    pthread_mutex_unlock(&lock);
    free(a->ptr);
    free(a);
    return OK;
}
/* Whether [p, p+n) lies inside one live allocation (device or pinned). */
static int valid_range(const char *p, size_t n) {
    pthread_mutex_lock(&lock);
    int ok = 0;
    for (alloc *a = live; a; a = a->next)
        if (p >= a->ptr && p + n <= a->ptr + a->size) ok = 1;
    pthread_mutex_unlock(&lock);
    return ok;
}
CUresult cuMemHostAlloc(void **p, size_t size, unsigned flags) {
    if (flags & 4) return INVALID_VALUE; /* this stand-in refuses write-combined memory */
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, size) != 0) return OUT_OF_MEMORY;
    alloc *a = malloc(sizeof *a);
    a->ptr = mem;
    a->size = size;
    a->pool = -1;
    pthread_mutex_lock(&lock);
    a->next = live;
    live = a;
    pthread_mutex_unlock(&lock);
    *p = mem;
    return OK;
}
CUresult cuMemFreeHost(void *p) {
    pthread_mutex_lock(&lock);
    alloc *a = take(p, 1);
    pthread_mutex_unlock(&lock);
    if (!a) return INVALID_VALUE;
    free(a->ptr);
    free(a);
    return OK;
}
CUresult cuMemHostGetFlags(unsigned *flags, void *p) {
    pthread_mutex_lock(&lock);
    CUresult r = INVALID_VALUE;
    for (alloc *a = live; a; a = a->next)
        if (a->pool < 0 && (char *)p >= a->ptr && (char *)p < a->ptr + a->size) r = OK;
    pthread_mutex_unlock(&lock);
    if (r == OK) *flags = 1;
    return r;
}
CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total) {
    if (!current_ctx) return INVALID_VALUE;
    int dev = (int)((uintptr_t)current_ctx - 0x1000);
    *total = (size_t)total_mem();
    *free_b = (size_t)(total_mem() - pools[dev].reserved_cur);
    return OK;
}
CUresult cuMemcpyAsync(unsigned long long dst, unsigned long long src, size_t n, void *stream) {
    (void)stream;
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return OK;
}
CUresult cuMemsetD8Async(unsigned long long dst, unsigned char v, size_t n, void *stream) {
    (void)stream;
    if (!valid_range((char *)(uintptr_t)dst, n)) return INVALID_VALUE;
    memset((void *)(uintptr_t)dst, v, n);
    return OK;
}
CUresult cuMemsetD16Async(unsigned long long dst, unsigned short v, size_t n, void *stream) {
    (void)stream;
    if (dst % 2 || !valid_range((char *)(uintptr_t)dst, n * 2)) return INVALID_VALUE;
    for (size_t i = 0; i < n; i++) memcpy((char *)(uintptr_t)dst + 2 * i, &v, 2);
    return OK;
}
CUresult cuMemsetD32Async(unsigned long long dst, unsigned v, size_t n, void *stream) {
    (void)stream;
    if (dst % 4 || !valid_range((char *)(uintptr_t)dst, n * 4)) return INVALID_VALUE;
    for (size_t i = 0; i < n; i++) memcpy((char *)(uintptr_t)dst + 4 * i, &v, 4);
    return OK;
}
CUresult cuMemsetD2D32Async(unsigned long long dst, size_t pitch, unsigned v, size_t width,
                            size_t height, void *stream) {
    (void)stream;
    if (dst % 4 || pitch < width * 4) return INVALID_VALUE;
    if (height && !valid_range((char *)(uintptr_t)dst, (height - 1) * pitch + width * 4))
        return INVALID_VALUE;
    for (size_t r = 0; r < height; r++)
        for (size_t w = 0; w < width; w++) memcpy((char *)(uintptr_t)dst + r * pitch + 4 * w, &v, 4);
    return OK;
}

/* ---- streams and events --------------------------------------------------------------- */

static int streams_live, events_live;
CUresult cuStreamCreate(void **s, unsigned flags) {
    if (flags != 1) return INVALID_VALUE; /* we always ask for CU_STREAM_NON_BLOCKING */
    *s = malloc(16);
    __atomic_add_fetch(&streams_live, 1, __ATOMIC_RELAXED);
    return OK;
}
CUresult cuStreamDestroy_v2(void *s) {
    if (!s) return INVALID_VALUE; /* never the NULL stream */
    free(s);
    __atomic_sub_fetch(&streams_live, 1, __ATOMIC_RELAXED);
    return OK;
}
CUresult cuStreamSynchronize(void *s) { (void)s; return OK; }
CUresult cuStreamQuery(void *s) { (void)s; return OK; }
CUresult cuStreamWaitEvent(void *s, void *e, unsigned f) { (void)s; (void)e; (void)f; return OK; }
CUresult cuStreamIsCapturing(void *s, int *status) { (void)s; *status = 0; return OK; }
CUresult cuStreamBeginCapture_v2(void *s, int mode) { (void)s; (void)mode; return NOT_SUPPORTED; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shm, void *s, void **params, void **extra) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shm; (void)s;
    (void)params; (void)extra;
    return NOT_SUPPORTED;
}
typedef struct { int timing; struct timespec at; } event;
CUresult cuEventCreate(void **e, unsigned flags) {
    event *ev = calloc(1, sizeof *ev);
    ev->timing = !(flags & 2);
    *e = ev;
    __atomic_add_fetch(&events_live, 1, __ATOMIC_RELAXED);
    return OK;
}
CUresult cuEventDestroy_v2(void *e) {
    free(e);
    __atomic_sub_fetch(&events_live, 1, __ATOMIC_RELAXED);
    return OK;
}
CUresult cuEventRecord(void *e, void *s) {
    (void)s;
    clock_gettime(CLOCK_MONOTONIC, &((event *)e)->at);
    return OK;
}
CUresult cuEventSynchronize(void *e) { (void)e; return OK; }
CUresult cuEventQuery(void *e) { (void)e; return OK; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) {
    event *x = a, *y = b;
    if (!x->timing || !y->timing) return INVALID_VALUE;
    *ms = (float)((double)(y->at.tv_sec - x->at.tv_sec) * 1e3 +
                  (double)(y->at.tv_nsec - x->at.tv_nsec) / 1e6);
    return OK;
}

/* For the test: how many streams and events are alive (leak checks). */
int fake_cuda_live_streams(void) { return __atomic_load_n(&streams_live, __ATOMIC_RELAXED); }
int fake_cuda_live_events(void) { return __atomic_load_n(&events_live, __ATOMIC_RELAXED); }

CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) {
    case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    default: *s = "CUDA_ERROR_UNKNOWN";
    }
    return OK;
}
CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case OUT_OF_MEMORY: *s = "out of memory"; break;
    case INVALID_VALUE: *s = "invalid argument"; break;
    case NOT_SUPPORTED: *s = "operation not supported"; break;
    default: *s = "unknown error";
    }
    return OK;
}
