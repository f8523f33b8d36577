/*
 * header_double_a.c — with header_double_b.c: a program of two translation units that
 * each include deepspeed_rs.h twice. Linking proves the header defines no objects or
 * functions (only declarations, types and macros); running proves the declarations
 * match the library.
 */
#include <stdio.h>
#include <string.h>

#include "deepspeed_rs.h"
#include "deepspeed_rs.h"

const char *dsrs_double_b(void);

int main(void) {
  const char *b = dsrs_double_b();
  printf("translation unit a: %s, translation unit b: %s\n", dsrs_version(), b);
  if (strcmp(dsrs_version(), DSRS_VERSION_STRING) != 0 || strcmp(b, DSRS_VERSION_STRING) != 0)
    return 1;
  return dsrs_abi_version() == DSRS_ABI_VERSION ? 0 : 1;
}
