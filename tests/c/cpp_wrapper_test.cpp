// cpp_wrapper_test.cpp — exercises include/deepspeed_rs.hpp (the header-only C++17 RAII
// wrapper) against the shared library: handles, errors as exceptions, buffers, random
// numbers, streams, events, ranges, moves and destructors. Data are random; the seed is
// printed (DSRS_TEST_SEED=<seed> reproduces a run).
#include "deepspeed_rs.hpp"
#include "check.hpp"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

uint64_t seed_from_env_or_clock() {
  if (const char *s = std::getenv("DSRS_TEST_SEED"); s != nullptr && *s != '\0')
    return std::strtoull(s, nullptr, 0);
  return static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // keep stdout and stderr in order
  const uint64_t seed = seed_from_env_or_clock();
  std::printf("cpp_wrapper_test: seed %" PRIu64 "\n", seed);
  std::mt19937_64 rng(seed);

  std::printf("-- library\n");
  EXPECT(dsrs::version() == DSRS_VERSION_STRING);
  EXPECT(dsrs::abi_version() == DSRS_ABI_VERSION);
  auto names = dsrs::accelerator_names();
  EXPECT(std::find(names.begin(), names.end(), "cpu") != names.end());
  EXPECT(std::find(names.begin(), names.end(), "cuda") != names.end());
  EXPECT(dsrs::report_json().find("\"candidates\"") != std::string::npos);
  const dsrs_log_level old_level = dsrs::log_level();
  dsrs::set_log_level(DSRS_LOG_ERROR);
  EXPECT(dsrs::log_level() == DSRS_LOG_ERROR);
  dsrs::log(DSRS_LOG_INFO, "", "filtered out");

  std::printf("-- the current accelerator\n");
  dsrs::Accelerator accel = dsrs::Accelerator::current();
  EXPECT(accel.name() == "cpu");
  EXPECT(dsrs::read_string([&](char *b, size_t l, size_t *n) {
           return dsrs_accelerator_name(accel.get(), b, l, n);
         }) == "cpu");  // the public two-call helper, on a raw C function
  EXPECT(accel.is_available());
  EXPECT(accel.device_type() == kDLCPU);
  EXPECT(!accel.communication_backend().empty());
  EXPECT(accel.device_count() >= 1);
  EXPECT(!accel.device_name().empty());
  EXPECT(accel.device_name(0) == accel.device_name(-1));
  accel.set_device(0);
  EXPECT(accel.current_device() == 0);
  accel.synchronize();
  EXPECT(accel.total_memory() > 0);
  EXPECT(accel.available_memory() <= accel.total_memory());
  EXPECT(accel.info_json().find("\"name\":\"cpu\"") != std::string::npos);
  EXPECT(accel.memory_stats_json().find("allocated_bytes.all.current") != std::string::npos);
  EXPECT(accel.dtype_supported(dsrs::dtype_of<float>()).first);
  EXPECT(dsrs::dtype_of<double>().code == kDLFloat && dsrs::dtype_of<double>().bits == 64);
  EXPECT(dsrs::dtype_of<int16_t>().code == kDLInt && dsrs::dtype_of<uint8_t>().code == kDLUInt);
  EXPECT(dsrs::dtype_of<bool>().code == kDLBool && dsrs::dtype_of<bool>().bits == 8);

  std::printf("-- buffers\n");
  const uint64_t baseline = accel.memory_allocated();
  {
    const size_t count = 1 + rng() % 4096;
    std::vector<uint32_t> values(count);
    for (auto &v : values) v = static_cast<uint32_t>(rng()) | 1u;
    dsrs::Buffer buf(accel, count * sizeof(uint32_t), 64);
    EXPECT(buf.size() == count * sizeof(uint32_t));
    EXPECT(reinterpret_cast<uintptr_t>(buf.data()) % 64 == 0);
    EXPECT(buf.kind() == DSRS_MEMORY_DEVICE);
    EXPECT(buf.device().device_type == kDLCPU);
    EXPECT(buf.accelerator().name() == "cpu");
    EXPECT(accel.memory_allocated() == baseline + buf.size());
    EXPECT(buf.read<uint32_t>(0, count) == std::vector<uint32_t>(count, 0));  // zeroed
    buf.write(0, values);
    EXPECT(buf.read<uint32_t>(0, count) == values);
    EXPECT(std::memcmp(buf.data(), values.data(), buf.size()) == 0);

    // fill_value and copy_from against a host model.
    const uint16_t pattern = static_cast<uint16_t>(rng() | 1u);
    const size_t first = rng() % count, n = rng() % (count - first + 1);
    buf.fill_value<uint16_t>(first * 4, 2 * n, pattern);
    for (size_t i = first; i < first + n; ++i)
      values[i] = static_cast<uint32_t>(pattern) | (static_cast<uint32_t>(pattern) << 16);
    EXPECT(buf.read<uint32_t>(0, count) == values);
    dsrs::Buffer other(accel, buf.size(), 0, DSRS_MEMORY_HOST);
    other.copy_from(0, buf, 0, buf.size());
    EXPECT(other.read<uint32_t>(0, count) == values);
    if (count > 1) {  // overlapping copy inside one buffer: a memmove
      buf.copy_from(4, buf, 0, (count - 1) * 4);
      std::memmove(values.data() + 1, values.data(), (count - 1) * 4);
      EXPECT(buf.read<uint32_t>(0, count) == values);
    }

    // Tensor copies and a typed view.
    std::vector<int64_t> shape{static_cast<int64_t>(count)};
    std::vector<uint32_t> out(count);
    DLTensor host{};
    host.data = out.data();
    host.device.device_type = kDLCPU;
    host.ndim = 1;
    host.dtype = dsrs::dtype_of<uint32_t>();
    host.shape = shape.data();
    buf.copy_to_tensor(0, host);
    EXPECT(out == values);
    DLTensor v = buf.view(dsrs::dtype_of<uint32_t>(), shape);
    EXPECT(v.data == buf.data() && v.shape == shape.data() && v.ndim == 1);

    // A DLPack export outlives the Buffer object.
    DLManagedTensor *m = buf.to_dlpack(dsrs::dtype_of<uint32_t>(), shape);
    dsrs::Buffer moved = std::move(buf);
    EXPECT(buf.get() == nullptr);  // NOLINT(bugprone-use-after-move): checked on purpose
    expect_error("size() of a moved-from Buffer", DSRS_STATUS_NULL_ARGUMENT, "'buf'",
                 [&] { (void)buf.size(); });
    { dsrs::Buffer sink = std::move(moved); }  // destroyed: handle freed
    EXPECT(std::memcmp(m->dl_tensor.data, values.data(), count * 4) == 0);
    m->deleter(m);
  }
  EXPECT(accel.memory_allocated() == baseline);  // destructors freed everything
  std::printf("memory back to %" PRIu64 " bytes after the buffers went out of scope\n", baseline);

  std::printf("-- random numbers\n");
  {
    accel.manual_seed(rng());
    const uint64_t s = accel.initial_seed();
    const std::vector<uint8_t> state = accel.rng_state();
    EXPECT(state.size() == 24);
    EXPECT(std::memcmp(state.data(), "DSRSPHX1", 8) == 0);
    std::vector<int64_t> shape{1000};
    dsrs::Buffer buf(accel, 1000 * sizeof(double));
    DLTensor t = buf.view(dsrs::dtype_of<double>(), shape);
    accel.rng_fill(t, DSRS_DISTRIBUTION_NORMAL, 3.0, 0.5);
    const auto first = buf.read<double>(0, 1000);
    double mean = 0;
    for (double x : first) mean += x / 1000;
    EXPECT(std::fabs(mean - 3.0) < 0.1);
    accel.set_rng_state(state);
    EXPECT(accel.initial_seed() == s);
    accel.rng_fill(t, DSRS_DISTRIBUTION_NORMAL, 3.0, 0.5);
    EXPECT(buf.read<double>(0, 1000) == first);  // same state, same numbers
    std::vector<uint8_t> bad(state);
    bad[3] ^= 0xFF;
    expect_error("set_rng_state with a bad magic", DSRS_STATUS_FORMAT, "DSRSPHX1",
                 [&] { accel.set_rng_state(bad); });
    expect_error("rng_fill of bits into float64", DSRS_STATUS_UNSUPPORTED, "dsrs_accelerator_rng_fill",
                 [&] { accel.rng_fill(t, DSRS_DISTRIBUTION_BITS); });
  }

  std::printf("-- streams, events, ranges\n");
  {
    dsrs::Stream stream(accel);
    EXPECT(stream.query());
    EXPECT(stream.native_handle() == nullptr);
    stream.synchronize();
    dsrs::Stream def = accel.default_stream();
    accel.set_current_stream(stream);
    accel.set_current_stream(def);
    dsrs::Event start(accel), end(accel);
    start.record(stream);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    end.record();
    end.synchronize();
    EXPECT(end.query());
    stream.wait_event(end);
    const double ms = start.elapsed_ms(end);
    std::printf("elapsed %.3f ms over a 20 ms sleep\n", ms);
    EXPECT(ms >= 20.0 && ms < 2000.0);
    dsrs::Event untimed(accel, false);
    untimed.record();
    expect_error("elapsed_ms to an untimed event", DSRS_STATUS_INVALID_STATE, "without timing",
                 [&] { (void)start.elapsed_ms(untimed); });
    {
      dsrs::Range outer(accel, "outer");
      dsrs::Range inner(accel, "inner");
    }  // both popped
    expect_error("range_pop with nothing open", DSRS_STATUS_INVALID_STATE, "range_pop",
                 [&] { accel.range_pop(); });
  }

  std::printf("-- a configured accelerator, errors, make_current\n");
  {
    dsrs::Accelerator limited =
        dsrs::Accelerator::create("cpu", R"({"devices": 2, "memory_limit": 65536})");
    EXPECT(limited.device_count() == 2);
    EXPECT(limited.total_memory() == 65536);
    expect_error("a buffer over the memory_limit", DSRS_STATUS_OUT_OF_MEMORY, "memory_limit",
                 [&] { dsrs::Buffer big(limited, 65537); });
    expect_error("an unknown accelerator", DSRS_STATUS_UNKNOWN_ACCELERATOR, "cpu",
                 [] { (void)dsrs::Accelerator::create("tpu9000"); });
    expect_error("bad options", DSRS_STATUS_INVALID_CONFIG, "colour",
                 [] { (void)dsrs::Accelerator::create("cpu", R"({"colour": 1})"); });
    limited.make_current();
    EXPECT(dsrs::Accelerator::current().total_memory() == 65536);
    accel.make_current();
    EXPECT(dsrs::Accelerator::current().total_memory() == accel.total_memory());
    // Moving an accelerator keeps the handle; the moved-from one is empty.
    dsrs::Accelerator moved = std::move(limited);
    EXPECT(limited.get() == nullptr);  // NOLINT(bugprone-use-after-move)
    EXPECT(moved.device_count() == 2);
    dsrs_accelerator *raw = moved.release();
    EXPECT(raw != nullptr && moved.get() == nullptr);
    dsrs::Accelerator adopted(raw);  // adopts and frees it
    EXPECT(adopted.name() == "cpu");
  }
  expect_error("debug panic", DSRS_STATUS_PANIC, "boom", [] { dsrs::check(dsrs_debug_panic("boom")); });
  EXPECT(accel.device_count() >= 1);  // still works

  dsrs::set_log_level(old_level);
  if (dsrs_test::failures != 0) {
    std::fprintf(stderr, "cpp_wrapper_test: %d check(s) FAILED\n", dsrs_test::failures);
    return 1;
  }
  std::printf("cpp_wrapper_test: all checks passed\n");
  return 0;
}
