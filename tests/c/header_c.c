/*
 * header_c.c — deepspeed_rs.h compiled on its own (C99 and C11, -Wall -Wextra -Werror
 * -pedantic; see CMakeLists.txt), included twice to exercise its include guard.
 */
#include "deepspeed_rs.h"
#include "deepspeed_rs.h"

/* Use a little of everything the header declares, so that it is really parsed. */
int dsrs_header_c_probe(void);
int dsrs_header_c_probe(void) {
  dsrs_accelerator *accel = NULL;
  dsrs_buffer *buf = NULL;
  dsrs_stream *stream = NULL;
  dsrs_event *event = NULL;
  DLTensor tensor = {0};
  DLManagedTensorVersioned *versioned = NULL;
  dsrs_status status = DSRS_STATUS_OK;
  dsrs_distribution dist = DSRS_DISTRIBUTION_NORMAL;
  dsrs_memory_kind kind = DSRS_MEMORY_PINNED;
  dsrs_log_level level = DSRS_LOG_TRACE;
  dsrs_log_callback cb = NULL;
  dsrs_status (*fn)(dsrs_accelerator *, size_t, size_t, dsrs_memory_kind, dsrs_buffer **) =
      dsrs_buffer_new;
  (void)accel, (void)buf, (void)stream, (void)event, (void)tensor, (void)versioned;
  (void)dist, (void)kind, (void)level, (void)cb, (void)fn;
  return (int)status + DSRS_VERSION_NUMBER + DSRS_ABI_VERSION + DLPACK_MAJOR_VERSION +
         (int)sizeof(DSRS_VERSION_STRING);
}
