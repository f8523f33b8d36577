/*
 * main.c — the find_package consumer: prints the accelerator's name and checks a buffer
 * write/read round trip with random bytes. Exits 0 on success.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <deepspeed_rs.h>

static int fail(const char *what, dsrs_status status) {
  char msg[1024];
  size_t needed = 0;
  if (dsrs_last_error_message(msg, sizeof msg, &needed) != DSRS_STATUS_OK) msg[0] = '\0';
  fprintf(stderr, "dsrs_consumer: %s failed: %s: %s\n", what, dsrs_status_str(status), msg);
  return 1;
}

int main(void) {
#ifdef DSRS_CONSUMER_STATIC
  const char *linkage = "static";
#else
  const char *linkage = "shared";
#endif
  if (dsrs_abi_version() != DSRS_ABI_VERSION || strcmp(dsrs_version(), DSRS_VERSION_STRING) != 0) {
    fprintf(stderr, "dsrs_consumer: header %s (ABI %d) but library %s (ABI %u)\n",
            DSRS_VERSION_STRING, DSRS_ABI_VERSION, dsrs_version(), dsrs_abi_version());
    return 1;
  }
  dsrs_accelerator *accel = NULL;
  dsrs_status s = dsrs_accelerator_get(&accel);
  if (s != DSRS_STATUS_OK) return fail("dsrs_accelerator_get", s);
  char name[64];
  size_t needed = 0;
  s = dsrs_accelerator_name(accel, name, sizeof name, &needed);
  if (s != DSRS_STATUS_OK) return fail("dsrs_accelerator_name", s);
  printf("deepspeed_rs %s (%s library), accelerator: %s\n", dsrs_version(), linkage, name);

  /* Round trip of random bytes. */
  size_t size = 4096;
  unsigned char *src = malloc(size), *dst = malloc(size);
  srand((unsigned)time(NULL));
  for (size_t i = 0; i < size; i++) src[i] = (unsigned char)(rand() & 0xFF);
  src[0] |= 1;
  dsrs_buffer *buf = NULL;
  if ((s = dsrs_buffer_new(accel, size, 0, DSRS_MEMORY_DEVICE, &buf)) != DSRS_STATUS_OK)
    return fail("dsrs_buffer_new", s);
  if ((s = dsrs_buffer_write(buf, 0, src, size, NULL)) != DSRS_STATUS_OK)
    return fail("dsrs_buffer_write", s);
  if ((s = dsrs_buffer_read(buf, 0, dst, size, NULL)) != DSRS_STATUS_OK)
    return fail("dsrs_buffer_read", s);
  int same = memcmp(src, dst, size) == 0;
  printf("buffer round trip of %zu bytes: %s\n", size, same ? "ok" : "MISMATCH");
  dsrs_buffer_free(buf);
  dsrs_accelerator_free(accel);
  free(src);
  free(dst);
  return same ? 0 : 1;
}
