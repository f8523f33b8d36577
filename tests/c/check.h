/*
 * check.h — tiny assertion helpers shared by the deepspeed_rs C tests.
 *
 *  CHECK(cond)              non-fatal: prints the failed condition, counts it, goes on.
 *  REQUIRE(cond)            fatal: prints and exits(1) at once (use when later code would
 *                           crash or be meaningless without it).
 *  REQUIRE_OK(call)         fatal unless `call` returns DSRS_STATUS_OK; prints the status
 *                           name and dsrs_last_error_message().
 *  CHECK_OK(call)           the non-fatal variant.
 *  check_exit_code()        what main() returns: 0 if no CHECK failed, else 1.
 *  READ_STRING(out, expr)   the two-call pattern with retries (see below).
 *  test_rng_*()             a seeded xorshift64* generator for random test data.
 */
#ifndef DSRS_TESTS_CHECK_H
#define DSRS_TESTS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deepspeed_rs.h"

static int check_failures_ = 0;

/* The calling thread's last error message, copied into a static buffer (two-call
 * pattern). Not thread-safe: only the main thread of a test uses it. */
static inline const char *last_error(void) {
  static char msg[4096];
  size_t needed = 0;
  msg[0] = '\0';
  if (dsrs_last_error_message(msg, sizeof msg, &needed) != DSRS_STATUS_OK) {
    snprintf(msg, sizeof msg, "<last error message unavailable (needs %zu bytes)>", needed);
  }
  return msg;
}

/* dsrs_status as a name, for messages. */
static inline const char *status_name(dsrs_status s) { return dsrs_status_str((int32_t)s); }

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
      check_failures_++;                                                                   \
    }                                                                                      \
  } while (0)

#define REQUIRE(cond)                                                                      \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);           \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)

#define CHECK_OK_IMPL_(call, fatal)                                                        \
  do {                                                                                     \
    dsrs_status st_ = (call);                                                              \
    if (st_ != DSRS_STATUS_OK) {                                                           \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call,            \
              status_name(st_), last_error());                                             \
      check_failures_++;                                                                   \
      if (fatal) exit(1);                                                                  \
    }                                                                                      \
  } while (0)

#define CHECK_OK(call) CHECK_OK_IMPL_(call, 0)
#define REQUIRE_OK(call) CHECK_OK_IMPL_(call, 1)

/* What main() returns. */
static inline int check_exit_code(const char *test) {
  if (check_failures_ != 0) {
    fprintf(stderr, "%s: %d check(s) FAILED\n", test, check_failures_);
    return 1;
  }
  printf("%s: all checks passed\n", test);
  return 0;
}

/* A reproducible xorshift64* generator for test data; the seed is printed by the test. */
static uint64_t test_rng_state_ = 0x9E3779B97F4A7C15ull;
static inline void test_rng_seed(uint64_t seed) { test_rng_state_ = seed ? seed : 0x9E3779B97F4A7C15ull; }
static inline uint64_t test_rng_next(void) {
  uint64_t x = test_rng_state_;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  test_rng_state_ = x;
  return x * 0x2545F4914F6CDD1Dull;
}
/* Random bytes, guaranteed not all zero. */
static inline void test_rng_bytes(void *dst, size_t n) {
  unsigned char *p = (unsigned char *)dst;
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(test_rng_next() >> 56);
  if (n > 0) p[0] |= 1;
}
/* The seed: $DSRS_TEST_SEED if set (to reproduce a failure), else time-based. */
static inline uint64_t test_seed_from_env_or_time(void) {
  const char *env = getenv("DSRS_TEST_SEED");
  if (env != NULL && *env != '\0') return strtoull(env, NULL, 0);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec;
}

/*
 * READ_STRING(out, expr): runs `expr` — a two-call function using the variables buf_,
 * len_ and needed_ as its (buf, len, needed) arguments — first as a size query, then with a
 * buffer of the size needed, retrying while the result is DSRS_STATUS_BUFFER_TOO_SMALL
 * (live figures may grow between calls). `out` (a char*) receives a malloc'd,
 * NUL-terminated string to free(). Fatal on any other failure. Also checks that the
 * reported size is exactly strlen + 1.
 */
#define READ_STRING(out, expr)                                                             \
  do {                                                                                     \
    char *buf_ = NULL;                                                                     \
    size_t len_ = 0, needed_ = 0;                                                          \
    dsrs_status rs_;                                                                       \
    for (int try_ = 0;; try_++) {                                                          \
      rs_ = (expr);                                                                        \
      if (try_ < 8 && (rs_ == DSRS_STATUS_BUFFER_TOO_SMALL ||                              \
                       (rs_ == DSRS_STATUS_OK && buf_ == NULL))) {                         \
        free(buf_);                                                                        \
        len_ = needed_;                                                                    \
        buf_ = (char *)malloc(len_);                                                       \
        REQUIRE(buf_ != NULL);                                                             \
        continue;                                                                          \
      }                                                                                    \
      break;                                                                               \
    }                                                                                      \
    if (rs_ != DSRS_STATUS_OK) {                                                           \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr,            \
              status_name(rs_), last_error());                                             \
      exit(1);                                                                             \
    }                                                                                      \
    CHECK(strlen(buf_) + 1 == needed_);                                                    \
    (out) = buf_;                                                                          \
  } while (0)

#endif /* DSRS_TESTS_CHECK_H */
