// check.hpp — assertion helpers shared by the deepspeed_rs C++ tests (check.h's C++ twin).
//
//  EXPECT(cond)                                non-fatal: prints the failed condition, counts it.
//  expect_error(what, status, needles, f)      runs f, which must throw dsrs::Error with
//                                              `status` and a message containing every needle
//                                              (one needle may be given as a plain string).
//  dsrs_test::failures                         how many checks failed (main returns 1 if any).
#ifndef DSRS_TESTS_CHECK_HPP
#define DSRS_TESTS_CHECK_HPP

#include "deepspeed_rs.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace dsrs_test {

inline int failures = 0;

}  // namespace dsrs_test

#define EXPECT(cond)                                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
      ++dsrs_test::failures;                                                         \
    }                                                                                \
  } while (0)

template <class F>
void expect_error(const char *what, dsrs_status status, const std::vector<std::string> &needles,
                  F &&f) {
  try {
    f();
    std::fprintf(stderr, "%s: no exception (expected %s)\n", what, dsrs::status_name(status));
    ++dsrs_test::failures;
  } catch (const dsrs::Error &e) {
    std::printf("%s -> %s\n", what, e.what());
    EXPECT(e.status() == status);
    EXPECT(std::string(e.status_name()) == dsrs::status_name(status));
    EXPECT(std::string(e.what()).find(dsrs::status_name(status)) != std::string::npos);
    for (const auto &n : needles) {
      if (e.message().find(n) == std::string::npos) {
        std::fprintf(stderr, "%s: the message lacks \"%s\"\n", what, n.c_str());
        ++dsrs_test::failures;
      }
    }
  }
}

template <class F>
void expect_error(const char *what, dsrs_status status, const char *needle, F &&f) {
  expect_error(what, status, std::vector<std::string>{needle}, static_cast<F &&>(f));
}

#endif  // DSRS_TESTS_CHECK_HPP
