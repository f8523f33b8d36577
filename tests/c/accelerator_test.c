/*
 * accelerator_test.c — happy paths through the deepspeed_rs C ABI.
 *
 * Runs the same suite on the default accelerator (dsrs_accelerator_get) and on a CPU
 * accelerator created with options (2 devices, 1 MiB memory limit), then checks that
 * dsrs_accelerator_set makes another accelerator current. Data are random (the seed is
 * printed; set DSRS_TEST_SEED=<seed> to reproduce a run) and every result is compared with
 * an independent reference: a host mirror of each buffer, a reference Philox4x32-10,
 * moments of the distributions, the wall clock.
 */
#include <math.h>

#include "check.h"

#define SECTION(name) printf("-- %s: %s\n", label, name)

/* ---------------------------------------------------------------------------------- */
/* Reference Philox4x32-10 (Salmon et al., SC'11; constants of Random123).              */

static void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += 0x9E3779B9u; /* golden ratio */
      k1 += 0xBB67AE85u; /* sqrt(3) - 1 */
    }
    uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* Word `i` of the stream for (seed, first block): block = first + i/4, word i%4. */
static uint32_t philox_word(uint64_t seed, uint64_t first_block, uint64_t i) {
  uint64_t block = first_block + i / 4;
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  return out[i % 4];
}

static void check_philox_known_answers(void) {
  /* Random123's kat_vectors for philox4x32_10. */
  static const struct {
    uint32_t ctr[4], key[2], expect[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
    uint32_t out[4];
    philox4x32_10(kat[k].ctr, kat[k].key, out);
    CHECK(memcmp(out, kat[k].expect, sizeof out) == 0);
  }
  printf("reference Philox4x32-10 matches Random123 known-answer vectors\n");
}

/* ---------------------------------------------------------------------------------- */
/* Helpers.                                                                             */

static DLDataType dt(uint8_t code, uint8_t bits) {
  DLDataType t = {code, bits, 1};
  return t;
}

/* A 1-D contiguous host tensor over `data`. */
static DLTensor host_tensor(void *data, int64_t *shape, DLDataType dtype) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.device.device_id = 0;
  t.ndim = 1;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = NULL;
  t.byte_offset = 0;
  return t;
}

static uint64_t allocated(const dsrs_accelerator *a) {
  uint64_t v = 0;
  REQUIRE_OK(dsrs_accelerator_memory_allocated(a, -1, &v));
  return v;
}

static uint64_t max_allocated(const dsrs_accelerator *a) {
  uint64_t v = 0;
  REQUIRE_OK(dsrs_accelerator_max_memory_allocated(a, -1, &v));
  return v;
}

/* The unsigned number after "key": in a flat JSON text; UINT64_MAX if absent. */
static uint64_t json_u64(const char *json, const char *key) {
  char pattern[128];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char *p = strstr(json, pattern);
  if (p == NULL) return UINT64_MAX;
  return strtoull(p + strlen(pattern), NULL, 10);
}

/* Random power of two in [lo, hi]. */
static size_t random_pow2(size_t lo, size_t hi) {
  size_t a = lo;
  size_t steps = 0;
  for (size_t x = lo; x < hi; x <<= 1) steps++;
  for (size_t i = test_rng_next() % (steps + 1); i > 0; i--) a <<= 1;
  return a;
}

/* Bytes of the buffer, read through the ABI. */
static unsigned char *read_all(const dsrs_buffer *b, size_t n) {
  unsigned char *out = (unsigned char *)malloc(n ? n : 1);
  REQUIRE(out != NULL);
  REQUIRE_OK(dsrs_buffer_read(b, 0, out, n, NULL));
  return out;
}

/* ---------------------------------------------------------------------------------- */
/* Sections.                                                                            */

static void test_identity(dsrs_accelerator *a, const char *label, uint32_t expect_devices) {
  SECTION("identity and devices");
  char *name = NULL;
  READ_STRING(name, dsrs_accelerator_name(a, buf_, len_, &needed_));
  printf("name = %s\n", name);
  REQUIRE(strcmp(name, "cpu") == 0); /* this build drives the CPU only; the rest assumes host memory */
  free(name);

  bool b = false;
  CHECK_OK(dsrs_accelerator_is_available(a, &b));
  CHECK(b);
  int32_t type = 0;
  CHECK_OK(dsrs_accelerator_device_type(a, &type));
  CHECK(type == kDLCPU);
  char *backend = NULL;
  READ_STRING(backend, dsrs_accelerator_communication_backend(a, buf_, len_, &needed_));
  CHECK(strlen(backend) > 0);
  printf("communication backend = %s\n", backend);
  free(backend);
  CHECK_OK(dsrs_accelerator_is_synchronized_device(a, &b));
  CHECK(b); /* the CPU runs work when it is submitted */

  uint32_t count = 0;
  REQUIRE_OK(dsrs_accelerator_device_count(a, &count));
  printf("device count = %u\n", count);
  REQUIRE(count >= 1);
  if (expect_devices != 0) CHECK(count == expect_devices);
  for (int32_t d = -1; d < (int32_t)count; d++) {
    char *dev = NULL;
    READ_STRING(dev, dsrs_accelerator_device_name(a, d, buf_, len_, &needed_));
    CHECK(strlen(dev) > 0);
    if (d == -1) printf("device -1 (current) name = %s\n", dev);
    free(dev);
  }
  for (int32_t d = (int32_t)count - 1; d >= 0; d--) {
    int32_t cur = -7;
    CHECK_OK(dsrs_accelerator_set_device(a, d));
    CHECK_OK(dsrs_accelerator_current_device(a, &cur));
    CHECK(cur == d);
    CHECK_OK(dsrs_accelerator_synchronize(a, d));
  }
  CHECK_OK(dsrs_accelerator_synchronize(a, -1));
  CHECK_OK(dsrs_accelerator_empty_cache(a));
}

/* Buffers allocated while a later logical CPU device (NUMA node) is current are still
 * host memory: DLPack device {kDLCPU, 0}, in views and exports too. */
static void test_dlpack_device_of_host_memory(dsrs_accelerator *a, const char *label) {
  SECTION("DLPack device of CPU memory on every logical device");
  uint32_t count = 0;
  CHECK_OK(dsrs_accelerator_device_count(a, &count));
  for (int32_t d = 0; d < (int32_t)count; d++) {
    CHECK_OK(dsrs_accelerator_set_device(a, d));
    dsrs_buffer *b = NULL;
    REQUIRE_OK(dsrs_buffer_new(a, 64, 0, DSRS_MEMORY_DEVICE, &b));
    DLDevice dev = {kDLCUDA, -1};
    CHECK_OK(dsrs_buffer_device(b, &dev));
    CHECK(dev.device_type == kDLCPU && dev.device_id == 0);
    int64_t shape[1] = {16};
    DLDataType f32 = {kDLFloat, 32, 1};
    DLManagedTensor *m = NULL;
    REQUIRE_OK(dsrs_buffer_to_dlpack(b, 0, f32, shape, 1, &m));
    CHECK(m->dl_tensor.device.device_type == kDLCPU && m->dl_tensor.device.device_id == 0);
    m->deleter(m);
    CHECK_OK(dsrs_buffer_free(b));
  }
  CHECK_OK(dsrs_accelerator_set_device(a, 0));
}

static void test_memory_info(dsrs_accelerator *a, const char *label, uint64_t limit) {
  SECTION("memory totals");
  uint64_t total = 0, avail = 0;
  CHECK_OK(dsrs_accelerator_total_memory(a, -1, &total));
  CHECK_OK(dsrs_accelerator_available_memory(a, -1, &avail));
  printf("total = %" PRIu64 " bytes, available = %" PRIu64 " bytes\n", total, avail);
  CHECK(total > 0);
  CHECK(avail <= total);
  if (limit != 0) {
    CHECK(total == limit);
    CHECK(avail == limit - allocated(a));
  }
}

static void test_buffers(dsrs_accelerator *a, const char *label) {
  SECTION("buffers: new/write/read/copy/fill against a host mirror");
  for (int round = 0; round < 4; round++) {
    size_t size = 64 + (size_t)(test_rng_next() % 8192);
    size_t align = random_pow2(8, 4096);
    dsrs_buffer *b = NULL;
    REQUIRE_OK(dsrs_buffer_new(a, size, align, DSRS_MEMORY_DEVICE, &b));
    size_t got_size = 0;
    void *data = NULL;
    dsrs_memory_kind kind = -1;
    DLDevice dev;
    CHECK_OK(dsrs_buffer_size(b, &got_size));
    CHECK(got_size == size);
    REQUIRE_OK(dsrs_buffer_data(b, &data));
    REQUIRE(data != NULL);
    CHECK(((uintptr_t)data % align) == 0);
    CHECK_OK(dsrs_buffer_kind(b, &kind));
    CHECK(kind == DSRS_MEMORY_DEVICE);
    CHECK_OK(dsrs_buffer_device(b, &dev));
    CHECK(dev.device_type == kDLCPU);
    CHECK(dev.device_id == 0); /* DLPack: host memory is device 0 */
    dsrs_accelerator *owner = NULL;
    CHECK_OK(dsrs_buffer_accelerator(b, &owner));
    uint32_t n1 = 0, n2 = 0;
    CHECK_OK(dsrs_accelerator_device_count(owner, &n1));
    CHECK_OK(dsrs_accelerator_device_count(a, &n2));
    CHECK(n1 == n2);
    CHECK_OK(dsrs_accelerator_free(owner));

    /* New buffers are zeroed. */
    unsigned char *mirror = (unsigned char *)calloc(size, 1);
    unsigned char *got = read_all(b, size);
    CHECK(memcmp(got, mirror, size) == 0);
    free(got);

    /* Full write, read back; the host pointer sees the same bytes. */
    test_rng_bytes(mirror, size);
    CHECK_OK(dsrs_buffer_write(b, 0, mirror, size, NULL));
    got = read_all(b, size);
    CHECK(memcmp(got, mirror, size) == 0);
    CHECK(memcmp(data, mirror, size) == 0);
    free(got);

    /* Partial writes and reads at random offsets. */
    for (int k = 0; k < 8; k++) {
      size_t off = (size_t)(test_rng_next() % size);
      size_t n = (size_t)(test_rng_next() % (size - off + 1));
      unsigned char *src = (unsigned char *)malloc(n + 1);
      test_rng_bytes(src, n);
      CHECK_OK(dsrs_buffer_write(b, off, src, n, NULL));
      memcpy(mirror + off, src, n);
      unsigned char *part = (unsigned char *)malloc(n + 1);
      CHECK_OK(dsrs_buffer_read(b, off, part, n, NULL));
      CHECK(memcmp(part, src, n) == 0);
      free(src);
      free(part);
    }
    /* (NULL, 0) is an empty write, not an error. */
    CHECK_OK(dsrs_buffer_write(b, 0, NULL, 0, NULL));
    CHECK_OK(dsrs_buffer_read(b, size, NULL, 0, NULL));

    /* Copy to a second buffer, and overlapping copies inside one buffer (memmove). */
    dsrs_buffer *c = NULL;
    REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_HOST, &c));
    unsigned char *mirror_c = (unsigned char *)calloc(size, 1);
    for (int k = 0; k < 6; k++) {
      size_t n = 1 + (size_t)(test_rng_next() % (size / 2));
      size_t so = (size_t)(test_rng_next() % (size - n + 1));
      size_t doff = (size_t)(test_rng_next() % (size - n + 1));
      CHECK_OK(dsrs_buffer_copy(c, doff, b, so, n, NULL));
      memmove(mirror_c + doff, mirror + so, n);
      /* Overlap: destination shifted by a few bytes from the source, both directions. */
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

    /* Fills with 1-, 2-, 4- and 8-byte random patterns. */
    static const size_t pattern_sizes[] = {1, 2, 4, 8};
    for (size_t k = 0; k < 4; k++) {
      size_t ps = pattern_sizes[k];
      unsigned char pattern[8];
      test_rng_bytes(pattern, ps);
      size_t off = (size_t)(test_rng_next() % (size / 2));
      size_t reps = (size_t)(test_rng_next() % ((size - off) / ps + 1));
      CHECK_OK(dsrs_buffer_fill(b, off, reps * ps, pattern, ps, NULL));
      for (size_t r = 0; r < reps; r++) memcpy(mirror + off + r * ps, pattern, ps);
      got = read_all(b, size);
      CHECK(memcmp(got, mirror, size) == 0);
      free(got);
    }
    free(mirror);
    free(mirror_c);
    CHECK_OK(dsrs_buffer_free(c));
    CHECK_OK(dsrs_buffer_free(b));
  }
  /* An empty buffer is valid; its data pointer is NULL. */
  dsrs_buffer *e = NULL;
  void *p = (void *)&e;
  CHECK_OK(dsrs_buffer_new(a, 0, 0, DSRS_MEMORY_DEVICE, &e));
  CHECK_OK(dsrs_buffer_data(e, &p));
  CHECK(p == NULL);
  CHECK_OK(dsrs_buffer_free(e));
  CHECK_OK(dsrs_buffer_free(NULL)); /* NULL is a no-op */
  printf("buffer contents match the host mirror\n");
}

static void test_memory_stats(dsrs_accelerator *a, const char *label) {
  SECTION("memory statistics");
  uint64_t before = allocated(a);
  size_t n1 = 1000 + (size_t)(test_rng_next() % 50000);
  size_t n2 = 1000 + (size_t)(test_rng_next() % 50000);
  dsrs_buffer *b1 = NULL, *b2 = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, n1, 0, DSRS_MEMORY_DEVICE, &b1));
  CHECK(allocated(a) == before + n1);
  REQUIRE_OK(dsrs_buffer_new(a, n2, 64, DSRS_MEMORY_HOST, &b2));
  uint64_t both = allocated(a);
  CHECK(both == before + n1 + n2);
  CHECK(max_allocated(a) >= both);
  uint64_t reserved = 0, max_reserved = 0;
  CHECK_OK(dsrs_accelerator_memory_reserved(a, -1, &reserved));
  CHECK_OK(dsrs_accelerator_max_memory_reserved(a, -1, &max_reserved));
  CHECK(reserved == both); /* no caching allocator on the host */
  CHECK(max_reserved >= reserved);

  char *json = NULL;
  READ_STRING(json, dsrs_accelerator_memory_stats_json(a, -1, buf_, len_, &needed_));
  CHECK(json_u64(json, "allocated_bytes.all.current") == both);
  CHECK(json_u64(json, "allocated_bytes.all.peak") >= both);
  CHECK(json_u64(json, "total_bytes") != UINT64_MAX);
  CHECK(json_u64(json, "available_bytes") != UINT64_MAX);
  free(json);

  CHECK_OK(dsrs_buffer_free(b1));
  CHECK(allocated(a) == before + n2);
  CHECK(max_allocated(a) >= both); /* the peak remembers */
  CHECK_OK(dsrs_accelerator_reset_peak_memory_stats(a, -1));
  CHECK(max_allocated(a) == before + n2); /* reset to the current value */
  CHECK_OK(dsrs_buffer_free(b2));
  CHECK(allocated(a) == before);
  CHECK(max_allocated(a) == before + n2);
  CHECK_OK(dsrs_accelerator_reset_peak_memory_stats(a, -1));
  CHECK(max_allocated(a) == before);
  printf("allocated moved by exactly %zu + %zu bytes and back; peak and reset behave\n", n1, n2);
}

static void test_memory_limit(dsrs_accelerator *a, const char *label, uint64_t limit) {
  SECTION("memory_limit");
  uint64_t before = allocated(a);
  REQUIRE(before < limit);
  size_t room = (size_t)(limit - before);
  size_t first = room - 1 - (size_t)(test_rng_next() % (room / 2));
  dsrs_buffer *b = NULL, *c = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, first, 0, DSRS_MEMORY_DEVICE, &b));
  size_t too_much = room - first + 1 + (size_t)(test_rng_next() % 4096);
  dsrs_status s = dsrs_buffer_new(a, too_much, 0, DSRS_MEMORY_DEVICE, &c);
  CHECK(s == DSRS_STATUS_OUT_OF_MEMORY);
  CHECK(strstr(last_error(), "memory_limit") != NULL);
  printf("over the limit: %s: %s\n", status_name(s), last_error());
  CHECK(allocated(a) == before + first); /* the failure allocated nothing */
  /* Exactly up to the limit is fine. */
  REQUIRE_OK(dsrs_buffer_new(a, room - first, 0, DSRS_MEMORY_DEVICE, &c));
  CHECK(allocated(a) == limit);
  uint64_t avail = 1;
  CHECK_OK(dsrs_accelerator_available_memory(a, -1, &avail));
  CHECK(avail == 0);
  CHECK_OK(dsrs_buffer_free(c));
  CHECK_OK(dsrs_buffer_free(b));
  CHECK(allocated(a) == before);
}

static void test_pinned(dsrs_accelerator *a, const char *label) {
  SECTION("pinned memory");
  size_t size = 4096 + (size_t)(test_rng_next() % 20000);
  dsrs_buffer *b = NULL;
  dsrs_status s = dsrs_buffer_new(a, size, 0, DSRS_MEMORY_PINNED, &b);
  if (s == DSRS_STATUS_OUT_OF_MEMORY) {
    /* A tight RLIMIT_MEMLOCK is legitimate; the message must say so. */
    printf("pinning refused (accepted): %s\n", last_error());
    CHECK(strstr(last_error(), "RLIMIT_MEMLOCK") != NULL);
    return;
  }
  REQUIRE_OK(s);
  void *data = NULL;
  dsrs_memory_kind kind = -1;
  REQUIRE_OK(dsrs_buffer_data(b, &data));
  CHECK_OK(dsrs_buffer_kind(b, &kind));
  CHECK(kind == DSRS_MEMORY_PINNED);
  bool pinned = false;
  CHECK_OK(dsrs_accelerator_is_pinned(a, data, &pinned));
  CHECK(pinned);
  CHECK_OK(dsrs_accelerator_is_pinned(a, (char *)data + size - 1, &pinned));
  CHECK(pinned);
  CHECK_OK(dsrs_accelerator_is_pinned(a, (char *)data - 1, &pinned));
  CHECK(!pinned);
  int local = 0;
  CHECK_OK(dsrs_accelerator_is_pinned(a, &local, &pinned));
  CHECK(!pinned);
  CHECK_OK(dsrs_accelerator_is_pinned(a, NULL, &pinned));
  CHECK(!pinned);
  /* Pinned memory works like any other buffer. */
  unsigned char *src = (unsigned char *)malloc(size);
  test_rng_bytes(src, size);
  CHECK_OK(dsrs_buffer_write(b, 0, src, size, NULL));
  CHECK(memcmp(data, src, size) == 0);
  /* Pageable memory is not pinned. */
  dsrs_buffer *h = NULL;
  void *hd = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, 256, 0, DSRS_MEMORY_HOST, &h));
  REQUIRE_OK(dsrs_buffer_data(h, &hd));
  CHECK_OK(dsrs_accelerator_is_pinned(a, hd, &pinned));
  CHECK(!pinned);
  CHECK_OK(dsrs_buffer_free(h));
  CHECK_OK(dsrs_buffer_free(b));
  /* The pointer value is not dereferenced: after the free it is simply not pinned. */
  CHECK_OK(dsrs_accelerator_is_pinned(a, data, &pinned));
  CHECK(!pinned);
  free(src);
  printf("pinned buffer of %zu bytes is recognised by dsrs_accelerator_is_pinned\n", size);
}

static void test_dtypes(dsrs_accelerator *a, const char *label) {
  SECTION("dtype support");
  static const struct {
    uint8_t code, bits;
  } types[] = {{kDLFloat, 16}, {kDLBfloat, 16}, {kDLFloat, 32}, {kDLFloat, 64}, {kDLInt, 8},
               {kDLInt, 16},   {kDLInt, 32},    {kDLInt, 64},   {kDLUInt, 8},   {kDLUInt, 16},
               {kDLUInt, 32},  {kDLUInt, 64},   {kDLBool, 8},   {kDLComplex, 64},
               {kDLComplex, 128}};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    bool supported = false, native = false;
    CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(types[i].code, types[i].bits), &supported,
                                              &native));
    CHECK(supported);
    if (types[i].code == kDLFloat && types[i].bits == 32) CHECK(native);
  }
  bool s = false, n = false, flag = false;
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLBfloat, 16), &s, &n));
  CHECK_OK(dsrs_accelerator_is_bf16_supported(a, &flag));
  CHECK(flag == n);
  CHECK_OK(dsrs_accelerator_dtype_supported(a, dt(kDLFloat, 16), &s, &n));
  CHECK_OK(dsrs_accelerator_is_fp16_supported(a, &flag));
  CHECK(flag == n);
}

/* IEEE binary16 and bfloat16 to float, for checking narrow random fills. */
static float half_to_float(uint16_t h) {
  unsigned exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = ldexpf((float)man, -24); /* subnormal */
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = ldexpf((float)(man | 0x400u), (int)exp - 25);
  }
  return (h & 0x8000u) ? -v : v;
}
static float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Reads the generator's 24-byte state. */
static void rng_state(dsrs_accelerator *a, uint8_t state[24]) {
  size_t needed = 0;
  CHECK_OK(dsrs_accelerator_rng_state(a, NULL, 0, &needed));
  CHECK(needed == 24);
  REQUIRE_OK(dsrs_accelerator_rng_state(a, state, 24, &needed));
}

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void test_rng(dsrs_accelerator *a, const char *label) {
  SECTION("random numbers");
  uint64_t seed = test_rng_next();
  uint64_t got_seed = 0;
  CHECK_OK(dsrs_accelerator_manual_seed(a, seed));
  CHECK_OK(dsrs_accelerator_initial_seed(a, &got_seed));
  CHECK(got_seed == seed);
  uint8_t st[24];
  rng_state(a, st);
  CHECK(memcmp(st, "DSRSPHX1", 8) == 0);
  CHECK(le64(st + 8) == seed);
  CHECK(le64(st + 16) == 0);

  /* BITS on uint32: word i of Philox(key = seed, counter = block) from block 0 on. */
  int64_t n = 1 + (int64_t)(test_rng_next() % 999);
  uint32_t *bits = (uint32_t *)malloc((size_t)n * sizeof *bits);
  DLTensor t = host_tensor(bits, &n, dt(kDLUInt, 32));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
  int mismatches = 0;
  for (int64_t i = 0; i < n; i++) mismatches += bits[i] != philox_word(seed, 0, (uint64_t)i);
  CHECK(mismatches == 0);
  uint64_t blocks = ((uint64_t)n + 3) / 4; /* unused words of the last block are dropped */
  rng_state(a, st);
  CHECK(le64(st + 16) == blocks);
  /* uint64 continues at the next block: w0 | w1 << 32. */
  int64_t m = 1 + (int64_t)(test_rng_next() % 99);
  uint64_t *wide = (uint64_t *)malloc((size_t)m * sizeof *wide);
  t = host_tensor(wide, &m, dt(kDLUInt, 64));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
  for (int64_t i = 0; i < m; i++) {
    uint64_t expect = (uint64_t)philox_word(seed, blocks, 2 * (uint64_t)i) |
                      ((uint64_t)philox_word(seed, blocks, 2 * (uint64_t)i + 1) << 32);
    mismatches += wide[i] != expect;
  }
  CHECK(mismatches == 0);
  printf("BITS output equals the reference Philox4x32-10 (seed %" PRIu64 ", %" PRId64
         " + %" PRId64 " elements)\n",
         seed, n, m);
  free(bits);
  free(wide);

  /* Save, draw, restore, draw again: the same numbers. */
  uint8_t saved[24];
  rng_state(a, saved);
  int64_t k = 257;
  float first[257], again[257];
  t = host_tensor(first, &k, dt(kDLFloat, 32));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_UNIFORM, -1.0, 1.0, NULL));
  CHECK_OK(dsrs_accelerator_set_rng_state(a, saved, sizeof saved));
  t = host_tensor(again, &k, dt(kDLFloat, 32));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_UNIFORM, -1.0, 1.0, NULL));
  CHECK(memcmp(first, again, sizeof first) == 0);
  /* manual_seed with the same seed replays from block 0. */
  CHECK_OK(dsrs_accelerator_manual_seed(a, seed));
  uint32_t replay[8];
  int64_t eight = 8;
  t = host_tensor(replay, &eight, dt(kDLUInt, 32));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_BITS, 0, 0, NULL));
  for (int i = 0; i < 8; i++) CHECK(replay[i] == philox_word(seed, 0, (uint64_t)i));

  /* Uniform: range, mean and variance (float32 and float64). */
  int64_t big = 200000;
  double lo = -10.0 + (double)(test_rng_next() % 1000) / 100.0;
  double hi = lo + 0.5 + (double)(test_rng_next() % 1000) / 100.0;
  float *uf = (float *)malloc((size_t)big * sizeof *uf);
  double *ud = (double *)malloc((size_t)big * sizeof *ud);
  t = host_tensor(uf, &big, dt(kDLFloat, 32));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_UNIFORM, lo, hi, NULL));
  t = host_tensor(ud, &big, dt(kDLFloat, 64));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_UNIFORM, lo, hi, NULL));
  for (int pass = 0; pass < 2; pass++) {
    double sum = 0, sq = 0;
    int out_of_range = 0;
    /* Rounding to float32 may land on (or just past) the double bounds: compare with the
     * bounds rounded the same way. */
    double lo_t = pass ? lo : (double)(float)lo, hi_t = pass ? hi : (double)(float)hi;
    for (int64_t i = 0; i < big; i++) {
      double v = pass ? ud[i] : (double)uf[i];
      out_of_range += !(v >= lo_t && v <= hi_t);
      sum += v;
      sq += v * v;
    }
    double mean = sum / (double)big, var = sq / (double)big - mean * mean;
    double expect_mean = (lo + hi) / 2, expect_var = (hi - lo) * (hi - lo) / 12;
    double mean_tol = 6 * sqrt(expect_var / (double)big); /* 6 standard errors */
    printf("uniform[%.2f, %.2f) %s: mean %.5f (expect %.5f +- %.5f), var %.5f (expect %.5f)\n",
           lo, hi, pass ? "float64" : "float32", mean, expect_mean, mean_tol, var, expect_var);
    CHECK(out_of_range == 0);
    CHECK(fabs(mean - expect_mean) < mean_tol);
    CHECK(fabs(var - expect_var) < 0.03 * expect_var);
  }
  free(uf);
  free(ud);

  /* float16 and bfloat16 uniform: in range (up to their rounding) with the right mean. */
  int64_t small = 20000;
  uint16_t *narrow = (uint16_t *)malloc((size_t)small * sizeof *narrow);
  for (int pass = 0; pass < 2; pass++) {
    t = host_tensor(narrow, &small, pass ? dt(kDLBfloat, 16) : dt(kDLFloat, 16));
    CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_UNIFORM, lo, hi, NULL));
    double rel = pass ? 1.0 / 256 : 1.0 / 2048; /* half an ulp, relative */
    double slack = rel * fmax(fabs(lo), fabs(hi));
    double sum = 0;
    int out_of_range = 0;
    for (int64_t i = 0; i < small; i++) {
      double v = pass ? bf16_to_float(narrow[i]) : half_to_float(narrow[i]);
      out_of_range += !(v >= lo - slack && v <= hi + slack);
      sum += v;
    }
    double mean = sum / (double)small, expect_mean = (lo + hi) / 2;
    double tol = 6 * (hi - lo) / sqrt(12.0 * (double)small) + slack;
    printf("uniform[%.2f, %.2f) %s: mean %.4f (expect %.4f +- %.4f)\n", lo, hi,
           pass ? "bfloat16" : "float16", mean, expect_mean, tol);
    CHECK(out_of_range == 0);
    CHECK(fabs(mean - expect_mean) < tol);
  }
  free(narrow);

  /* Normal: mean, standard deviation, and the 68% within one sigma. */
  double mu = (double)(test_rng_next() % 2000) / 100.0 - 10.0;
  double sigma = 0.1 + (double)(test_rng_next() % 500) / 100.0;
  double *nd = (double *)malloc((size_t)big * sizeof *nd);
  t = host_tensor(nd, &big, dt(kDLFloat, 64));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &t, DSRS_DISTRIBUTION_NORMAL, mu, sigma, NULL));
  double sum = 0, sq = 0;
  int64_t within = 0;
  for (int64_t i = 0; i < big; i++) {
    sum += nd[i];
    sq += nd[i] * nd[i];
    within += fabs(nd[i] - mu) <= sigma;
  }
  double mean = sum / (double)big, sd = sqrt(sq / (double)big - mean * mean);
  double frac = (double)within / (double)big;
  printf("normal(%.2f, %.2f): mean %.4f, std %.4f, %.4f within 1 std (expect 0.6827)\n", mu,
         sigma, mean, sd, frac);
  CHECK(fabs(mean - mu) < 6 * sigma / sqrt((double)big));
  CHECK(fabs(sd - sigma) < 0.02 * sigma);
  CHECK(fabs(frac - 0.6827) < 0.01);
  free(nd);

  /* A fill into a dsrs buffer through a view, read back through the ABI. */
  dsrs_buffer *b = NULL;
  int64_t shape[2] = {3, 5};
  REQUIRE_OK(dsrs_buffer_new(a, 15 * sizeof(float), 0, DSRS_MEMORY_DEVICE, &b));
  DLTensor view;
  REQUIRE_OK(dsrs_buffer_view(b, 0, dt(kDLFloat, 32), shape, 2, &view));
  CHECK_OK(dsrs_accelerator_rng_fill(a, &view, DSRS_DISTRIBUTION_UNIFORM, 2.0, 3.0, NULL));
  float vals[15];
  CHECK_OK(dsrs_buffer_read(b, 0, vals, sizeof vals, NULL));
  int bad = 0;
  for (int i = 0; i < 15; i++) bad += !(vals[i] >= 2.0f && vals[i] <= 3.0f);
  CHECK(bad == 0);
  CHECK_OK(dsrs_buffer_free(b));
}

static void test_streams_events(dsrs_accelerator *a, const char *label) {
  SECTION("streams and events");
  dsrs_stream *s = NULL, *def = NULL, *cur = NULL;
  REQUIRE_OK(dsrs_stream_new(a, &s));
  REQUIRE_OK(dsrs_accelerator_default_stream(a, &def));
  REQUIRE_OK(dsrs_accelerator_current_stream(a, &cur));
  bool idle = false;
  CHECK_OK(dsrs_stream_query(s, &idle));
  CHECK(idle);
  CHECK_OK(dsrs_stream_synchronize(s));
  void *native = (void *)&idle;
  CHECK_OK(dsrs_stream_native_handle(s, &native));
  CHECK(native == NULL); /* host accelerators have no native stream */
  CHECK_OK(dsrs_accelerator_set_current_stream(a, s));
  CHECK_OK(dsrs_accelerator_set_current_stream(a, def));

  /* Work on an explicit stream. */
  dsrs_buffer *b = NULL;
  uint64_t src[16], dst[16];
  test_rng_bytes(src, sizeof src);
  REQUIRE_OK(dsrs_buffer_new(a, sizeof src, 0, DSRS_MEMORY_DEVICE, &b));
  CHECK_OK(dsrs_buffer_write(b, 0, src, sizeof src, s));
  CHECK_OK(dsrs_stream_synchronize(s));
  CHECK_OK(dsrs_buffer_read(b, 0, dst, sizeof dst, s));
  CHECK(memcmp(src, dst, sizeof src) == 0);
  CHECK_OK(dsrs_buffer_free(b));

  dsrs_event *start = NULL, *end = NULL, *plain = NULL;
  REQUIRE_OK(dsrs_event_new(a, true, &start));
  REQUIRE_OK(dsrs_event_new(a, true, &end));
  REQUIRE_OK(dsrs_event_new(a, false, &plain));
  bool done = false;
  CHECK_OK(dsrs_event_query(plain, &done));
  CHECK(done);                               /* never recorded: complete */
  CHECK_OK(dsrs_event_synchronize(plain)); /* returns at once */
  CHECK_OK(dsrs_event_record(start, s));
  struct timespec before, after, nap = {0, 20 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &before);
  while (nanosleep(&nap, &nap) != 0) {
  }
  CHECK_OK(dsrs_event_record(end, NULL)); /* NULL: the current stream */
  clock_gettime(CLOCK_MONOTONIC, &after);
  CHECK_OK(dsrs_event_synchronize(end));
  CHECK_OK(dsrs_event_query(end, &done));
  CHECK(done);
  CHECK_OK(dsrs_stream_wait_event(s, end));
  CHECK_OK(dsrs_event_record(plain, s));
  double ms = -1, back = 0;
  CHECK_OK(dsrs_event_elapsed_ms(start, end, &ms));
  CHECK_OK(dsrs_event_elapsed_ms(end, start, &back));
  double wall = (double)(after.tv_sec - before.tv_sec) * 1e3 +
                (double)(after.tv_nsec - before.tv_nsec) / 1e6;
  printf("elapsed %.3f ms after a 20 ms nanosleep (wall %.3f ms; reversed %.3f)\n", ms, wall,
         back);
  CHECK(ms >= 20.0 && ms < 2000.0);
  CHECK(fabs(ms + back) < 1e-6);
  CHECK_OK(dsrs_event_free(start));
  CHECK_OK(dsrs_event_free(end));
  CHECK_OK(dsrs_event_free(plain));
  CHECK_OK(dsrs_stream_free(s));
  CHECK_OK(dsrs_stream_free(def));
  CHECK_OK(dsrs_stream_free(cur));
  CHECK_OK(dsrs_stream_free(NULL));
  CHECK_OK(dsrs_event_free(NULL));

  SECTION("profiling ranges");
  CHECK_OK(dsrs_accelerator_range_push(a, "outer"));
  CHECK_OK(dsrs_accelerator_range_push(a, "inner \xc3\xa9")); /* UTF-8 is fine */
  CHECK_OK(dsrs_accelerator_range_pop(a));
  CHECK_OK(dsrs_accelerator_range_pop(a));
}

static void test_views_and_dlpack(dsrs_accelerator *a, const char *label) {
  SECTION("views, DLPack exports, tensor copies");
  int64_t rows = 1 + (int64_t)(test_rng_next() % 16), cols = 1 + (int64_t)(test_rng_next() % 16);
  int64_t shape[2] = {rows, cols};
  size_t elems = (size_t)(rows * cols);
  size_t pad = 4 * (size_t)(test_rng_next() % 8); /* a float-aligned byte offset */
  size_t size = pad + elems * sizeof(float) + (size_t)(test_rng_next() % 64);
  dsrs_buffer *b = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_DEVICE, &b));
  void *data = NULL;
  REQUIRE_OK(dsrs_buffer_data(b, &data));

  /* DLPack: an empty tensor's data pointer is NULL, even at an offset inside the buffer. */
  {
    int64_t empty_shape[2] = {rows, 0};
    DLTensor e;
    DLManagedTensor *m = NULL;
    CHECK_OK(dsrs_buffer_view(b, 4, (DLDataType){kDLFloat, 32, 1}, empty_shape, 2, &e));
    CHECK(e.data == NULL && e.ndim == 2 && e.shape[1] == 0);
    REQUIRE_OK(dsrs_buffer_to_dlpack(b, 4, (DLDataType){kDLFloat, 32, 1}, empty_shape, 2, &m));
    CHECK(m->dl_tensor.data == NULL);
    m->deleter(m);
  }

  DLTensor v;
  REQUIRE_OK(dsrs_buffer_view(b, pad, dt(kDLFloat, 32), shape, 2, &v));
  CHECK(v.data == (char *)data + pad);
  CHECK(v.ndim == 2 && v.shape == shape && v.strides == NULL && v.byte_offset == 0);
  CHECK(v.dtype.code == kDLFloat && v.dtype.bits == 32 && v.dtype.lanes == 1);
  CHECK(v.device.device_type == kDLCPU);
  DLTensor scalar;
  CHECK_OK(dsrs_buffer_view(b, 0, dt(kDLInt, 64), NULL, 0, &scalar)); /* 0-d view */
  CHECK(scalar.ndim == 0 && scalar.data == data);

  /* Copy a random host tensor in, out, and compare. */
  float *src = (float *)malloc(elems * sizeof *src), *dst = (float *)malloc(elems * sizeof *dst);
  for (size_t i = 0; i < elems; i++) src[i] = (float)((double)test_rng_next() / 1e18) + 0.5f;
  DLTensor ts, td;
  memset(&ts, 0, sizeof ts);
  ts.data = src;
  ts.device.device_type = kDLCPU;
  ts.ndim = 2;
  ts.dtype = dt(kDLFloat, 32);
  ts.shape = shape;
  td = ts;
  td.data = dst;
  int64_t row_major[2] = {cols, 1}; /* explicit compact strides are accepted too */
  td.strides = row_major;
  CHECK_OK(dsrs_buffer_copy_from_tensor(b, pad, &ts, NULL));
  CHECK(memcmp((char *)data + pad, src, elems * sizeof *src) == 0);
  CHECK_OK(dsrs_buffer_copy_to_tensor(b, pad, &td, NULL));
  CHECK(memcmp(dst, src, elems * sizeof *src) == 0);

  /* Legacy DLManagedTensor: explicit row-major strides, memory outlives the handle. */
  uint64_t before = allocated(a);
  DLManagedTensor *m = NULL;
  REQUIRE_OK(dsrs_buffer_to_dlpack(b, pad, dt(kDLFloat, 32), shape, 2, &m));
  REQUIRE(m != NULL && m->deleter != NULL);
  CHECK(m->dl_tensor.data == (char *)data + pad);
  CHECK(m->dl_tensor.ndim == 2);
  CHECK(m->dl_tensor.shape != shape); /* the export owns its shape */
  CHECK(m->dl_tensor.shape[0] == rows && m->dl_tensor.shape[1] == cols);
  CHECK(m->dl_tensor.strides != NULL);
  CHECK(m->dl_tensor.strides[0] == cols && m->dl_tensor.strides[1] == 1);
  DLManagedTensorVersioned *mv = NULL;
  REQUIRE_OK(dsrs_buffer_to_dlpack_versioned(b, 0, dt(kDLUInt, 8), (int64_t[]){(int64_t)size},
                                             1, true, &mv));
  CHECK(mv->version.major == DLPACK_MAJOR_VERSION && mv->version.minor == DLPACK_MINOR_VERSION);
  CHECK((mv->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0);
  CHECK(mv->dl_tensor.shape[0] == (int64_t)size);

  CHECK_OK(dsrs_buffer_free(b)); /* the exports keep the memory alive */
  CHECK(allocated(a) == before);
  const float *exported = (const float *)m->dl_tensor.data;
  CHECK(memcmp(exported, src, elems * sizeof *src) == 0); /* ASan would flag a dangling read */
  mv->deleter(mv);
  CHECK(allocated(a) == before); /* one export left */
  CHECK(memcmp(exported, src, elems * sizeof *src) == 0);
  m->deleter(m); /* the last reference: now the memory goes */
  CHECK(allocated(a) == before - size);
  free(src);
  free(dst);
  printf("%" PRId64 "x%" PRId64 " float32 view at byte %zu: copies round-trip; exports outlive "
         "the buffer handle\n",
         rows, cols, pad);
}

static void test_json(dsrs_accelerator *a, const char *label, uint32_t expect_devices) {
  SECTION("JSON outputs (two-call pattern)");
  char *info = NULL, *report = NULL;
  READ_STRING(info, dsrs_accelerator_info_json(a, buf_, len_, &needed_));
  CHECK(info[0] == '{' && info[strlen(info) - 1] == '}');
  CHECK(strstr(info, "\"name\":\"cpu\"") != NULL);
  if (expect_devices) CHECK(json_u64(info, "device_count") == expect_devices);
  free(info);
  READ_STRING(report, dsrs_report_json(buf_, len_, &needed_));
  CHECK(report[0] == '{' && report[strlen(report) - 1] == '}');
  CHECK(strstr(report, "\"version\":\"" DSRS_VERSION_STRING "\"") != NULL);
  CHECK(strstr(report, "\"candidates\"") != NULL);
  CHECK(json_u64(report, "abi_version") == DSRS_ABI_VERSION);
  free(report);
}

static void run_suite(dsrs_accelerator *a, const char *label, uint32_t devices, uint64_t limit) {
  printf("== suite on the %s accelerator\n", label);
  test_identity(a, label, devices);
  test_memory_info(a, label, limit);
  test_buffers(a, label);
  test_dlpack_device_of_host_memory(a, label);
  test_memory_stats(a, label);
  if (limit != 0) test_memory_limit(a, label, limit);
  test_pinned(a, label);
  test_dtypes(a, label);
  test_rng(a, label);
  test_streams_events(a, label);
  test_views_and_dlpack(a, label);
  test_json(a, label, devices);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("accelerator_test: seed %" PRIu64 " (DSRS_TEST_SEED=%" PRIu64 " reproduces this run)\n",
         seed, seed);
  test_rng_seed(seed);

  /* Versions. */
  printf("library %s (ABI %u), header %s (ABI %d)\n", dsrs_version(), dsrs_abi_version(),
         DSRS_VERSION_STRING, DSRS_ABI_VERSION);
  REQUIRE(strcmp(dsrs_version(), DSRS_VERSION_STRING) == 0);
  REQUIRE(dsrs_abi_version() == DSRS_ABI_VERSION);
  CHECK(DSRS_VERSION_NUMBER ==
        DSRS_VERSION_MAJOR * 10000 + DSRS_VERSION_MINOR * 100 + DSRS_VERSION_PATCH);
  CHECK(strcmp(dsrs_status_str(DSRS_STATUS_OK), "DSRS_STATUS_OK") == 0);
  CHECK(strcmp(dsrs_status_str(DSRS_STATUS_OUT_OF_RANGE), "DSRS_STATUS_OUT_OF_RANGE") == 0);
  dsrs_status last = DSRS_STATUS_PANIC;
  CHECK_OK(dsrs_clear_last_error());
  CHECK_OK(dsrs_last_error_status(&last));
  CHECK(last == DSRS_STATUS_OK);
  CHECK(strcmp(last_error(), "") == 0); /* no failure yet on this thread */
  check_philox_known_answers();

  char *names = NULL;
  READ_STRING(names, dsrs_accelerator_names(buf_, len_, &needed_));
  printf("accelerators: %s\n", names);
  CHECK(strstr(names, "cpu") != NULL && strstr(names, "cuda") != NULL);
  free(names);

  dsrs_accelerator *def = NULL, *custom = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&def));
  run_suite(def, "default", 0, 0);

  REQUIRE_OK(dsrs_accelerator_new("cpu", "{\"devices\": 2, \"memory_limit\": 1048576}", &custom));
  run_suite(custom, "custom cpu", 2, 1048576);

  /* dsrs_accelerator_set: the new one becomes current; old objects stay valid. */
  printf("== dsrs_accelerator_set\n");
  dsrs_buffer *old = NULL;
  uint32_t word = (uint32_t)test_rng_next() | 1u, back = 0;
  REQUIRE_OK(dsrs_buffer_new(def, sizeof word, 0, DSRS_MEMORY_DEVICE, &old));
  CHECK_OK(dsrs_buffer_write(old, 0, &word, sizeof word, NULL));
  CHECK_OK(dsrs_accelerator_set(custom));
  dsrs_accelerator *now = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&now));
  uint32_t count = 0;
  CHECK_OK(dsrs_accelerator_device_count(now, &count));
  CHECK(count == 2);
  uint64_t total = 0;
  CHECK_OK(dsrs_accelerator_total_memory(now, -1, &total));
  CHECK(total == 1048576); /* it is the custom instance, not a new default one */
  CHECK_OK(dsrs_buffer_read(old, 0, &back, sizeof back, NULL));
  CHECK(back == word);
  CHECK_OK(dsrs_buffer_free(old));
  CHECK_OK(dsrs_accelerator_free(now));
  CHECK_OK(dsrs_accelerator_set(def)); /* and back */
  CHECK_OK(dsrs_accelerator_free(custom));
  CHECK_OK(dsrs_accelerator_free(def));
  CHECK_OK(dsrs_accelerator_free(NULL));
  return check_exit_code("accelerator_test");
}
