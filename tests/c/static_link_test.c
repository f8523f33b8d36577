/*
 * static_link_test.c — the C ABI through libdeepspeed_rs.a, linked via
 * deepspeed_rs::deepspeed_rs_static (whose INTERFACE_LINK_LIBRARIES carry Rust's native
 * dependencies). Exercises code that needs them: threads and thread-locals (last error),
 * unwinding (a caught panic: libgcc_s), the clock (events), dlopen (CUDA probing: libdl).
 * Also checks that the shared library is NOT loaded into the process.
 */
#include "check.h"

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0); /* keep stdout and stderr in order */
  uint64_t seed = test_seed_from_env_or_time();
  printf("static_link_test: seed %" PRIu64 "\n", seed);
  test_rng_seed(seed);

  /* The shared library must not be in the process: this binary carries the code. */
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps != NULL) {
    char line[1024];
    int shared_loaded = 0;
    while (fgets(line, sizeof line, maps) != NULL) shared_loaded |= strstr(line, "libdeepspeed_rs.so") != NULL;
    fclose(maps);
    CHECK(!shared_loaded);
    printf("libdeepspeed_rs.so is %s\n", shared_loaded ? "LOADED (wrong)" : "not loaded (static link)");
  }

  REQUIRE(strcmp(dsrs_version(), DSRS_VERSION_STRING) == 0);
  dsrs_accelerator *a = NULL;
  REQUIRE_OK(dsrs_accelerator_get(&a));
  size_t size = 1 + (size_t)(test_rng_next() % 100000);
  unsigned char *src = (unsigned char *)malloc(size), *dst = (unsigned char *)malloc(size);
  test_rng_bytes(src, size);
  dsrs_buffer *b = NULL;
  REQUIRE_OK(dsrs_buffer_new(a, size, 0, DSRS_MEMORY_DEVICE, &b));
  CHECK_OK(dsrs_buffer_write(b, 0, src, size, NULL));
  CHECK_OK(dsrs_buffer_read(b, 0, dst, size, NULL));
  CHECK(memcmp(src, dst, size) == 0);
  printf("%zu random bytes round-trip through a buffer\n", size);

  /* A panic is caught at the boundary (needs the unwinder), and the library goes on. */
  CHECK(dsrs_debug_panic("static boom") == DSRS_STATUS_PANIC);
  CHECK(strstr(last_error(), "static boom") != NULL);
  CHECK(dsrs_buffer_size(NULL, &size) == DSRS_STATUS_NULL_ARGUMENT);
  CHECK(strstr(last_error(), "dsrs_buffer_size") != NULL);

  dsrs_event *e0 = NULL, *e1 = NULL;
  REQUIRE_OK(dsrs_event_new(a, true, &e0));
  REQUIRE_OK(dsrs_event_new(a, true, &e1));
  CHECK_OK(dsrs_event_record(e0, NULL));
  struct timespec nap = {0, 5 * 1000 * 1000};
  while (nanosleep(&nap, &nap) != 0) {
  }
  CHECK_OK(dsrs_event_record(e1, NULL));
  double ms = 0;
  CHECK_OK(dsrs_event_elapsed_ms(e0, e1, &ms));
  CHECK(ms >= 5.0);

  char *report = NULL;
  READ_STRING(report, dsrs_report_json(buf_, len_, &needed_)); /* probes CUDA via dlopen */
  CHECK(strstr(report, "\"candidates\"") != NULL);
  free(report);

  CHECK_OK(dsrs_event_free(e0));
  CHECK_OK(dsrs_event_free(e1));
  CHECK_OK(dsrs_buffer_free(b));
  CHECK_OK(dsrs_accelerator_free(a));
  free(src);
  free(dst);
  return check_exit_code("static_link_test");
}
