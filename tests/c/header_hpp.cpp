// header_hpp.cpp — deepspeed_rs.hpp compiled on its own as C++17 (-Wall -Wextra -Werror
// -pedantic; see CMakeLists.txt), included twice.
#include "deepspeed_rs.hpp"
#include "deepspeed_rs.hpp"

#include <type_traits>

static_assert(!std::is_copy_constructible<dsrs::Accelerator>::value, "handles are move-only");
static_assert(std::is_nothrow_move_constructible<dsrs::Buffer>::value, "moves do not throw");
static_assert(std::is_base_of<std::runtime_error, dsrs::Error>::value, "Error is a runtime_error");
