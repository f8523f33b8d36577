# cli_test.cmake — `DSRS_ACCELERATOR=bogus dsrs report` must fail, and its standard error
# must name the valid accelerators (cpu and cuda).
#   cmake -DDSRS_CLI=<path to dsrs> -P cli_test.cmake
# Without DSRS_CLI the test prints "SKIPPED:" (CTest's SKIP_REGULAR_EXPRESSION).

if(NOT DSRS_CLI)
  message(STATUS "SKIPPED: DSRS_CLI is not set (configure with -DDSRS_CLI=<path to dsrs>)")
  return()
endif()
if(NOT EXISTS "${DSRS_CLI}")
  message(FATAL_ERROR "DSRS_CLI=${DSRS_CLI} does not exist")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" -E env DSRS_ACCELERATOR=bogus "${DSRS_CLI}" report
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  TIMEOUT 50)
message(STATUS "exit status: ${rc}")
message(STATUS "stderr: ${err}")

if(rc EQUAL 0)
  message(FATAL_ERROR "dsrs report accepted DSRS_ACCELERATOR=bogus (exit status 0)")
endif()
foreach(needle bogus cpu cuda)
  string(FIND "${err}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "dsrs report's standard error does not mention '${needle}'")
  endif()
endforeach()
message(STATUS "dsrs report refused DSRS_ACCELERATOR=bogus and listed the valid accelerators")
