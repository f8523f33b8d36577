/*
 * log_callback_test.c — dsrs_set_log_callback, dsrs_set_log_level, dsrs_log.
 *
 * The callback counts records and calls back into the library on every record
 * (dsrs_version, dsrs_accelerator_get + free, dsrs_get/set_log_level, a nested dsrs_log,
 * and optionally a failing call): none of this may deadlock or recurse, and a failing call
 * inside the callback must not replace the last error of the call being logged. Then
 * several threads log concurrently and every record must arrive exactly once, intact.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

#define THREADS 4
#define PER_THREAD 250

typedef struct {
  atomic_int total;
  atomic_int by_level[6];
  atomic_int accelerator_records; /* target "accelerator" */
  atomic_int ffi_records;         /* target "ffi" */
  atomic_int nested_seen;         /* records of the nested dsrs_log: must stay 0 */
  atomic_int reentry_errors;      /* unexpected results of calls made from the callback */
  atomic_int selection_refusals;  /* dsrs_accelerator_get refused during selection */
  atomic_int fail_inside;         /* when set, the callback also makes a failing call */
  atomic_int seen[THREADS][PER_THREAD];
  atomic_int malformed;
  pthread_mutex_t lock;
  char last_target[64];
  char last_message[512];
} counters;

static void on_log(void *user_data, dsrs_log_level level, const char *target,
                   const char *message) {
  counters *c = (counters *)user_data;
  atomic_fetch_add(&c->total, 1);
  if (level >= DSRS_LOG_ERROR && level <= DSRS_LOG_TRACE) atomic_fetch_add(&c->by_level[level], 1);
  if (target == NULL || message == NULL) {
    atomic_fetch_add(&c->malformed, 1);
    return;
  }
  if (strcmp(target, "accelerator") == 0) atomic_fetch_add(&c->accelerator_records, 1);
  if (strcmp(target, "ffi") == 0) atomic_fetch_add(&c->ffi_records, 1);
  if (strcmp(target, "nested") == 0) atomic_fetch_add(&c->nested_seen, 1);
  if (strcmp(target, "test-thread") == 0) {
    int t = -1, i = -1;
    if (sscanf(message, "thread %d record %d", &t, &i) == 2 && t >= 0 && t < THREADS && i >= 0 &&
        i < PER_THREAD) {
      atomic_fetch_add(&c->seen[t][i], 1);
    } else {
      atomic_fetch_add(&c->malformed, 1);
    }
  }
  pthread_mutex_lock(&c->lock);
  snprintf(c->last_target, sizeof c->last_target, "%s", target);
  snprintf(c->last_message, sizeof c->last_message, "%s", message);
  pthread_mutex_unlock(&c->lock);

  /* Call back into the library. */
  if (strcmp(dsrs_version(), DSRS_VERSION_STRING) != 0) atomic_fetch_add(&c->reentry_errors, 1);
  dsrs_accelerator *a = NULL;
  dsrs_status s = dsrs_accelerator_get(&a);
  if (s == DSRS_STATUS_OK) {
    if (dsrs_accelerator_free(a) != DSRS_STATUS_OK) atomic_fetch_add(&c->reentry_errors, 1);
  } else if (s == DSRS_STATUS_INVALID_STATE) {
    /* Documented: during the first selection on this thread the accelerator is not yet
     * available to a callback (the alternative would be a deadlock). */
    atomic_fetch_add(&c->selection_refusals, 1);
  } else {
    atomic_fetch_add(&c->reentry_errors, 1);
  }
  dsrs_log_level lvl = -1;
  if (dsrs_get_log_level(&lvl) != DSRS_STATUS_OK || dsrs_set_log_level(lvl) != DSRS_STATUS_OK)
    atomic_fetch_add(&c->reentry_errors, 1);
  if (dsrs_log(DSRS_LOG_ERROR, "nested", "logged from inside the callback") != DSRS_STATUS_OK)
    atomic_fetch_add(&c->reentry_errors, 1);
  if (atomic_load(&c->fail_inside)) {
    size_t n = 0;
    if (dsrs_buffer_size(NULL, &n) != DSRS_STATUS_NULL_ARGUMENT)
      atomic_fetch_add(&c->reentry_errors, 1);
  }
}

static counters C;

static void *logging_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  char msg[64];
  for (int i = 0; i < PER_THREAD; i++) {
    snprintf(msg, sizeof msg, "thread %d record %d", t, i);
    if (dsrs_log(DSRS_LOG_INFO, "test-thread", msg) != DSRS_STATUS_OK) {
      atomic_fetch_add(&C.reentry_errors, 1);
    }
    if (i % 50 == 0) { /* some library work interleaved with the logging */
      dsrs_accelerator *a = NULL;
      if (dsrs_accelerator_get(&a) == DSRS_STATUS_OK) dsrs_accelerator_free(a);
    }
  }
  return NULL;
}

static int get_level(void) {
  dsrs_log_level l = -1;
  REQUIRE_OK(dsrs_get_log_level(&l));
  return l;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  pthread_mutex_init(&C.lock, NULL);

  printf("-- callback installed at TRACE; first accelerator selection under the callback\n");
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_TRACE));
  CHECK(get_level() == DSRS_LOG_TRACE);
  REQUIRE_OK(dsrs_set_log_callback(on_log, &C));
  dsrs_accelerator *a = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&a));
  printf("records so far: %d (accelerator: %d; selection refusals inside the callback: %d)\n",
         atomic_load(&C.total), atomic_load(&C.accelerator_records),
         atomic_load(&C.selection_refusals));
  CHECK(atomic_load(&C.accelerator_records) >= 1); /* "Setting accelerator to ..." */
  CHECK(atomic_load(&C.reentry_errors) == 0);
  CHECK(atomic_load(&C.nested_seen) == 0);

  printf("-- a failing call is logged (ffi, DEBUG); the callback's own failure does not "
         "clobber the last error\n");
  atomic_store(&C.fail_inside, 1);
  int ffi_before = atomic_load(&C.ffi_records);
  uint32_t count = 0;
  CHECK(dsrs_accelerator_device_count(a, NULL) == DSRS_STATUS_NULL_ARGUMENT);
  atomic_store(&C.fail_inside, 0);
  CHECK(atomic_load(&C.ffi_records) == ffi_before + 1);
  const char *err = last_error();
  printf("last error after the callback ran: %s\n", err);
  CHECK(strstr(err, "dsrs_accelerator_device_count") != NULL);
  CHECK(strstr(err, "'out'") != NULL);
  pthread_mutex_lock(&C.lock);
  CHECK(strcmp(C.last_target, "ffi") == 0);
  CHECK(strstr(C.last_message, "dsrs_accelerator_device_count") != NULL);
  pthread_mutex_unlock(&C.lock);
  CHECK_OK(dsrs_accelerator_device_count(a, &count));
  CHECK(atomic_load(&C.reentry_errors) == 0);

  printf("-- dsrs_log emits; the level filter applies\n");
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_WARN));
  CHECK(get_level() == DSRS_LOG_WARN);
  int before = atomic_load(&C.total);
  CHECK_OK(dsrs_log(DSRS_LOG_INFO, "filter", "filtered out"));
  CHECK_OK(dsrs_log(DSRS_LOG_DEBUG, "filter", "filtered out"));
  CHECK_OK(dsrs_log(DSRS_LOG_TRACE, "filter", "filtered out"));
  CHECK(atomic_load(&C.total) == before);
  CHECK_OK(dsrs_log(DSRS_LOG_WARN, "filter", "warn passes \xc3\xa9"));
  CHECK(atomic_load(&C.total) == before + 1);
  pthread_mutex_lock(&C.lock);
  CHECK(strcmp(C.last_target, "filter") == 0);
  CHECK(strcmp(C.last_message, "warn passes \xc3\xa9") == 0); /* UTF-8 intact */
  pthread_mutex_unlock(&C.lock);
  int errors_before = atomic_load(&C.by_level[DSRS_LOG_ERROR]);
  CHECK_OK(dsrs_log(DSRS_LOG_ERROR, NULL, "error passes; NULL target"));
  CHECK(atomic_load(&C.total) == before + 2);
  CHECK(atomic_load(&C.by_level[DSRS_LOG_ERROR]) == errors_before + 1);
  pthread_mutex_lock(&C.lock);
  CHECK(strcmp(C.last_target, "host") == 0); /* documented default target */
  pthread_mutex_unlock(&C.lock);
  /* A failed call at WARN is not logged (failed calls are DEBUG records). */
  int ffi_now = atomic_load(&C.ffi_records);
  CHECK(dsrs_accelerator_device_count(a, NULL) == DSRS_STATUS_NULL_ARGUMENT);
  CHECK(atomic_load(&C.ffi_records) == ffi_now);
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_OFF));
  CHECK(get_level() == DSRS_LOG_OFF);
  CHECK_OK(dsrs_log(DSRS_LOG_ERROR, "filter", "off means off"));
  CHECK(atomic_load(&C.total) == before + 2);
  CHECK(atomic_load(&C.nested_seen) == 0);

  printf("-- %d threads x %d records, concurrently, with library calls in the callback\n",
         THREADS, PER_THREAD);
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_INFO));
  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) {
    REQUIRE(pthread_create(&threads[t], NULL, logging_thread, (void *)(intptr_t)t) == 0);
  }
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  int missing = 0, duplicated = 0;
  for (int t = 0; t < THREADS; t++) {
    for (int i = 0; i < PER_THREAD; i++) {
      int n = atomic_load(&C.seen[t][i]);
      missing += n == 0;
      duplicated += n > 1;
    }
  }
  printf("missing %d, duplicated %d, malformed %d, reentry errors %d\n", missing, duplicated,
         atomic_load(&C.malformed), atomic_load(&C.reentry_errors));
  CHECK(missing == 0 && duplicated == 0);
  CHECK(atomic_load(&C.malformed) == 0);
  CHECK(atomic_load(&C.reentry_errors) == 0);
  CHECK(atomic_load(&C.nested_seen) == 0);

  printf("-- NULL restores the standard-error sink\n");
  REQUIRE_OK(dsrs_set_log_callback(NULL, NULL));
  int final_count = atomic_load(&C.total);
  CHECK_OK(dsrs_log(DSRS_LOG_ERROR, "test", "this line goes to standard error (expected)"));
  CHECK(atomic_load(&C.total) == final_count);
  printf("the callback received %d records in all\n", final_count);

  /* Out-of-range levels are refused; the filter is unchanged. */
  CHECK(dsrs_set_log_level(6) == DSRS_STATUS_OUT_OF_RANGE);
  CHECK(get_level() == DSRS_LOG_INFO);
  CHECK(dsrs_log(0, "test", "level 0 is a filter, not a record level") ==
        DSRS_STATUS_OUT_OF_RANGE);
  CHECK(dsrs_get_log_level(NULL) == DSRS_STATUS_NULL_ARGUMENT);
  CHECK(dsrs_log(DSRS_LOG_ERROR, "test", NULL) == DSRS_STATUS_NULL_ARGUMENT);
  REQUIRE_OK(dsrs_set_log_level(DSRS_LOG_WARN));

  CHECK_OK(dsrs_accelerator_free(a));
  pthread_mutex_destroy(&C.lock);
  return check_exit_code("log_callback_test");
}
