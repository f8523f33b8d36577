/*
 * accelerator_demo.c — a C host using deepspeed_rs on the default accelerator.
 *
 * Selects the accelerator (DSRS_ACCELERATOR overrides detection), prints its devices and
 * memory, allocates a parameter buffer and fills it with seeded normal numbers from the
 * Philox generator, checks their statistics, times a device-to-device copy with events,
 * shows the memory statistics move, exports a DLPack view, and shows what an error looks
 * like. Run it with ./scripts/demo.sh.
 */
#include <deepspeed_rs.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the failing call's status and message, then exits. */
static void check(dsrs_status st, const char *what) {
  if (st == DSRS_STATUS_OK) return;
  char msg[1024];
  size_t needed = 0;
  dsrs_last_error_message(msg, sizeof msg, &needed);
  fprintf(stderr, "%s failed: %s: %s\n", what, dsrs_status_str(st), msg);
  exit(1);
}

static void print_memory(const dsrs_accelerator *acc, const char *when) {
  uint64_t allocated = 0, peak = 0;
  check(dsrs_accelerator_memory_allocated(acc, -1, &allocated), "memory_allocated");
  check(dsrs_accelerator_max_memory_allocated(acc, -1, &peak), "max_memory_allocated");
  printf("  memory %-22s allocated %8.2f MiB, peak %8.2f MiB\n", when, allocated / 1048576.0,
         peak / 1048576.0);
}

int main(void) {
  printf("deepspeed_rs %s (ABI %u; header %s)\n", dsrs_version(), dsrs_abi_version(),
         DSRS_VERSION_STRING);
  if (dsrs_abi_version() != DSRS_ABI_VERSION) {
    fprintf(stderr, "ABI mismatch: library %u, header %u\n", dsrs_abi_version(), DSRS_ABI_VERSION);
    return 1;
  }

  /* 1. The default accelerator. */
  dsrs_accelerator *acc = NULL;
  check(dsrs_accelerator_get(&acc), "dsrs_accelerator_get");
  char name[64], device[256], backend[32];
  size_t needed = 0;
  check(dsrs_accelerator_name(acc, name, sizeof name, &needed), "name");
  check(dsrs_accelerator_communication_backend(acc, backend, sizeof backend, &needed), "backend");
  uint32_t devices = 0;
  check(dsrs_accelerator_device_count(acc, &devices), "device_count");
  printf("accelerator: %s, %u device(s), collectives over %s\n", name, devices, backend);
  for (uint32_t d = 0; d < devices; d++) {
    uint64_t total = 0, avail = 0;
    check(dsrs_accelerator_device_name(acc, (int32_t)d, device, sizeof device, &needed), "device_name");
    check(dsrs_accelerator_total_memory(acc, (int32_t)d, &total), "total_memory");
    check(dsrs_accelerator_available_memory(acc, (int32_t)d, &avail), "available_memory");
    printf("  device %u: %s — %.1f GiB total, %.1f GiB available\n", d, device,
           total / 1073741824.0, avail / 1073741824.0);
  }
  bool bf16 = false, fp16 = false;
  check(dsrs_accelerator_is_bf16_supported(acc, &bf16), "bf16");
  check(dsrs_accelerator_is_fp16_supported(acc, &fp16), "fp16");
  printf("  native bf16: %s, native fp16: %s\n", bf16 ? "yes" : "no", fp16 ? "yes" : "no");

  /* 2. A parameter buffer of 4M floats, initialized N(0, 0.02) from a fixed seed. */
  const int64_t n = 4 * 1024 * 1024;
  const size_t bytes = (size_t)n * sizeof(float);
  print_memory(acc, "at start:");
  dsrs_buffer *params = NULL, *copy = NULL;
  check(dsrs_buffer_new(acc, bytes, 0, DSRS_MEMORY_DEVICE, &params), "buffer_new");
  check(dsrs_buffer_new(acc, bytes, 0, DSRS_MEMORY_DEVICE, &copy), "buffer_new");
  print_memory(acc, "after 2 x 16 MiB:");

  check(dsrs_accelerator_manual_seed(acc, 42), "manual_seed");
  DLTensor view;
  int64_t shape[1] = {n};
  DLDataType f32 = {kDLFloat, 32, 1};
  check(dsrs_buffer_view(params, 0, f32, shape, 1, &view), "buffer_view");
  check(dsrs_accelerator_range_push(acc, "init"), "range_push");
  check(dsrs_accelerator_rng_fill(acc, &view, DSRS_DISTRIBUTION_NORMAL, 0.0, 0.02, NULL), "rng_fill");
  check(dsrs_accelerator_range_pop(acc), "range_pop");

  float *host = malloc(bytes);
  if (!host) return 1;
  check(dsrs_buffer_read(params, 0, host, bytes, NULL), "buffer_read");
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; i++) {
    sum += host[i];
    sq += (double)host[i] * host[i];
  }
  double mean = sum / (double)n, std = sqrt(sq / (double)n - mean * mean);
  printf("init N(0, 0.02) over %lld values: mean %+.5f, std %.5f\n", (long long)n, mean, std);

  /* 3. Time a device-to-device copy with events. */
  dsrs_event *start = NULL, *end = NULL;
  check(dsrs_event_new(acc, true, &start), "event_new");
  check(dsrs_event_new(acc, true, &end), "event_new");
  const int reps = 20;
  check(dsrs_event_record(start, NULL), "event_record");
  for (int r = 0; r < reps; r++) check(dsrs_buffer_copy(copy, 0, params, 0, bytes, NULL), "copy");
  check(dsrs_event_record(end, NULL), "event_record");
  check(dsrs_event_synchronize(end), "event_synchronize");
  double ms = 0;
  check(dsrs_event_elapsed_ms(start, end, &ms), "elapsed_ms");
  printf("copy %d x 16 MiB: %.2f ms (%.1f GB/s read+write)\n", reps, ms,
         2.0 * bytes * reps / (ms * 1e6));

  /* 4. A DLPack export keeps the memory alive after the handle is freed. */
  DLManagedTensor *exported = NULL;
  int64_t shape2[2] = {2048, 2048};
  check(dsrs_buffer_to_dlpack(copy, 0, f32, shape2, 2, &exported), "to_dlpack");
  check(dsrs_buffer_free(copy), "buffer_free");
  const float *rows = (const float *)exported->dl_tensor.data;
  printf("DLPack export: %lld x %lld float32, element [1][0] = %+.5f (equals param %+.5f)\n",
         (long long)exported->dl_tensor.shape[0], (long long)exported->dl_tensor.shape[1],
         rows[2048], host[2048]);
  print_memory(acc, "with the export alive:");
  exported->deleter(exported);
  print_memory(acc, "after its deleter:");

  /* 5. What an error looks like. */
  dsrs_accelerator *bogus = NULL;
  dsrs_status st = dsrs_accelerator_new("tpu", NULL, &bogus);
  char msg[512];
  dsrs_last_error_message(msg, sizeof msg, &needed);
  printf("dsrs_accelerator_new(\"tpu\") -> %s\n  \"%s\"\n", dsrs_status_str(st), msg);

  free(host);
  dsrs_event_free(start);
  dsrs_event_free(end);
  dsrs_buffer_free(params);
  print_memory(acc, "at the end:");
  dsrs_accelerator_free(acc);
  return fabs(mean) < 1e-3 && fabs(std - 0.02) < 1e-3 ? 0 : 1;
}
