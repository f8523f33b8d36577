// header_cxx.cpp — deepspeed_rs.h compiled on its own as C++17 (-Wall -Wextra -Werror
// -pedantic; see CMakeLists.txt), included twice.
#include "deepspeed_rs.h"
#include "deepspeed_rs.h"

#include <type_traits>

static_assert(std::is_same<std::underlying_type<dsrs_status>::type, int32_t>::value,
              "dsrs_status is an int32_t enum in C++");
static_assert(sizeof(DLTensor) == 48, "DLTensor layout (64-bit)");
static_assert(sizeof(DLDataType) == 4, "DLDataType layout");

int dsrs_header_cxx_probe();
int dsrs_header_cxx_probe() {
  dsrs_accelerator *accel = nullptr;
  dsrs_status st = DSRS_STATUS_OK;
  auto fn = &dsrs_accelerator_get;
  (void)accel;
  (void)fn;
  return static_cast<int>(st) + DSRS_ABI_VERSION;
}
