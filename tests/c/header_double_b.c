/* header_double_b.c — the second translation unit of header_double_include (see a). */
#include "deepspeed_rs.h"
#include "deepspeed_rs.h"

const char *dsrs_double_b(void);
const char *dsrs_double_b(void) {
  dsrs_accelerator *accel = NULL;
  if (dsrs_accelerator_get(&accel) != DSRS_STATUS_OK) return "dsrs_accelerator_get failed";
  dsrs_accelerator_free(accel);
  return dsrs_version();
}
