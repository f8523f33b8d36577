// plugin_test.cpp — accelerator plugins through include/deepspeed_rs.hpp: dsrs::load_plugin,
// creating the example plugin (examples/plugin_hostmem) by name with options, device
// properties, a buffer round trip against host data, device-to-device copies and fills,
// memory statistics (the plugin's allocator: 512-byte granules, a cache, empty_cache), and
// the error path — dsrs::Error carrying the status and the library's message — for a
// plugin declaring another ABI version, a plugin whose init fails, and out of memory.
// tests/c/CMakeLists.txt passes the plugins' paths (DSRS_TEST_PLUGIN_*). Data are random;
// the seed is printed (DSRS_TEST_SEED=<seed> reproduces a run).
#include "deepspeed_rs.hpp"
#include "check.hpp"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

uint64_t seed_from_env_or_clock() {
  if (const char *s = std::getenv("DSRS_TEST_SEED"); s != nullptr && *s != '\0')
    return std::strtoull(s, nullptr, 0);
  return static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
}

std::string canonical(const char *path) {
  char *p = realpath(path, nullptr);
  if (p == nullptr) {
    std::fprintf(stderr, "realpath(%s) failed\n", path);
    std::exit(1);
  }
  std::string s(p);
  std::free(p);
  return s;
}

constexpr uint64_t kGranule = 512;  // hostmem rounds allocations up to this
uint64_t round_granule(uint64_t n) { return (n + kGranule - 1) / kGranule * kGranule; }

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // keep stdout and stderr in order
  const uint64_t seed = seed_from_env_or_clock();
  std::printf("plugin_cpp_test: seed %" PRIu64 "\n", seed);
  std::mt19937_64 rng(seed);
  dsrs::set_log_level(DSRS_LOG_ERROR);

  std::printf("-- loading\n");
  const std::string bad_abi = canonical(DSRS_TEST_PLUGIN_BAD_ABI);
  expect_error("load_plugin of a plugin declaring ABI version 99", DSRS_STATUS_PLUGIN_INVALID,
               {"dsrs_accelerator_load_plugin: ", bad_abi, "plugin ABI version 99", "version 1"},
               [] { dsrs::load_plugin(DSRS_TEST_PLUGIN_BAD_ABI); });
  expect_error("load_plugin of a library without the entry symbol", DSRS_STATUS_PLUGIN_INVALID,
               {canonical(DSRS_TEST_PLUGIN_NO_ENTRY), "dsrs_accelerator_plugin_entry"},
               [] { dsrs::load_plugin(DSRS_TEST_PLUGIN_NO_ENTRY); });
  dsrs::load_plugin(DSRS_TEST_PLUGIN_GOOD);
  dsrs::load_plugin(DSRS_TEST_PLUGIN_GOOD);  // again: a no-op
  dsrs::load_plugin(DSRS_TEST_PLUGIN_FAIL_INIT);
  const auto names = dsrs::accelerator_names();
  EXPECT((names == std::vector<std::string>{"hostmem", "hostmem_failinit", "cuda", "cpu"}));
  expect_error("creating the plugin whose init fails", DSRS_STATUS_UNAVAILABLE,
               {"dsrs_accelerator_new: ", "hostmem_failinit", "simulated fault"},
               [] { (void)dsrs::Accelerator::create("hostmem_failinit"); });
  expect_error("creating the refused plugin", DSRS_STATUS_UNKNOWN_ACCELERATOR, {"hostmem_badabi"},
               [] { (void)dsrs::Accelerator::create("hostmem_badabi"); });

  std::printf("-- creating, devices\n");
  const uint64_t cap = (2048 + rng() % 2048) * kGranule;  // 1 to 2 MiB
  dsrs::Accelerator accel = dsrs::Accelerator::create(
      "hostmem", "{\"devices\": 2, \"capacity\": " + std::to_string(cap) + "}");
  EXPECT(accel.name() == "hostmem");
  EXPECT(accel.device_type() == kDLExtDev);
  EXPECT(accel.device_count() == 2);
  EXPECT(accel.communication_backend() == "gloo");
  EXPECT(!accel.is_synchronized_device());
  for (int32_t d = 0; d < 2; ++d) {
    const std::string props = accel.device_properties_json(d);
    std::printf("device %d: %s\n", static_cast<int>(d), props.c_str());
    EXPECT(props.find("\"index\":" + std::to_string(d)) != std::string::npos);
    EXPECT(props.find("\"total_memory\":" + std::to_string(cap)) != std::string::npos);
    EXPECT(props.find("\"name\":\"" + accel.device_name(d) + "\"") != std::string::npos);
    EXPECT(accel.total_memory(d) == cap);
  }
  EXPECT(accel.device_properties_json(-1) == accel.device_properties_json(accel.current_device()));
  expect_error("properties of device 5", DSRS_STATUS_OUT_OF_RANGE,
               {"dsrs_accelerator_device_properties_json: "},
               [&] { (void)accel.device_properties_json(5); });
  EXPECT(!accel.dtype_supported(DLDataType{kDLComplex, 64, 1}).first);
  EXPECT(accel.dtype_supported(DLDataType{kDLBfloat, 16, 1}) == std::make_pair(true, false));

  for (int32_t d = 0; d < 2; ++d) {
    std::printf("-- buffers and statistics on device %d\n", static_cast<int>(d));
    accel.set_device(d);
    accel.empty_cache();
    const uint64_t base = accel.memory_allocated(d), base_res = accel.memory_reserved(d);
    const size_t count = 1 + rng() % 8000;
    std::vector<uint32_t> values(count);
    for (auto &v : values) v = static_cast<uint32_t>(rng()) | 1u;
    const uint64_t rounded = round_granule(count * 4);
    {
      dsrs::Buffer buf(accel, count * sizeof(uint32_t), 512);
      EXPECT(buf.size() == count * 4);
      EXPECT(reinterpret_cast<uintptr_t>(buf.data()) % 512 == 0);
      EXPECT(buf.device().device_type == kDLExtDev && buf.device().device_id == d);
      EXPECT(buf.accelerator().name() == "hostmem");
      EXPECT(accel.memory_allocated(d) == base + rounded);
      EXPECT(accel.memory_reserved(d) == base_res + rounded);
      EXPECT(accel.max_memory_allocated(d) >= base + rounded);
      EXPECT(buf.read<uint32_t>(0, count) == std::vector<uint32_t>(count, 0));  // zeroed
      buf.write(0, values);
      EXPECT(buf.read<uint32_t>(0, count) == values);

      // Device-to-device copy, a fill, and a stream.
      dsrs::Buffer other(accel, buf.size());
      dsrs::Stream stream(accel);
      other.copy_from(0, buf, 0, buf.size(), &stream);
      stream.synchronize();
      EXPECT(other.read<uint32_t>(0, count) == values);
      const uint64_t pattern = rng() | 1u;
      const size_t words = count / 2;  // 8-byte words
      other.fill_value<uint64_t>(0, words, pattern);
      std::vector<uint32_t> expect(values);
      std::memcpy(expect.data(), std::vector<uint64_t>(words, pattern).data(), words * 8);
      EXPECT(other.read<uint32_t>(0, count) == expect);
      EXPECT(accel.memory_allocated(d) == base + 2 * rounded);
    }
    // The destructors freed both; the plugin keeps the blocks cached until empty_cache.
    EXPECT(accel.memory_allocated(d) == base);
    EXPECT(accel.memory_reserved(d) == base_res + 2 * rounded);
    EXPECT(accel.max_memory_allocated(d) >= base + 2 * rounded);
    accel.reset_peak_memory_stats(d);
    EXPECT(accel.max_memory_allocated(d) == base);
    accel.empty_cache();
    EXPECT(accel.memory_reserved(d) == base_res);
    EXPECT(accel.available_memory(d) == cap - base_res);
    EXPECT(accel.memory_stats_json(d).find("\"num_ooms\":0") != std::string::npos);
    expect_error("a buffer over the capacity", DSRS_STATUS_OUT_OF_MEMORY,
                 {"dsrs_buffer_new: ", "accelerator plugin 'hostmem'", "out of device memory",
                  std::to_string(cap + 1) + " bytes requested"},
                 [&] { dsrs::Buffer big(accel, cap + 1); });
    EXPECT(accel.memory_stats_json(d).find("\"num_ooms\":1") != std::string::npos);
    EXPECT(accel.memory_allocated(d) == base);
  }
  accel.set_device(0);
  expect_error("pinned memory from hostmem", DSRS_STATUS_UNSUPPORTED, {"memory kind 2"},
               [&] { dsrs::Buffer pinned(accel, 64, 0, DSRS_MEMORY_PINNED); });

  std::printf("-- random numbers: the same as cpu\n");
  {
    dsrs::Accelerator cpu = dsrs::Accelerator::create("cpu");
    const uint64_t s = rng();
    accel.manual_seed(s);
    cpu.manual_seed(s);
    const size_t n = 1 + rng() % 4096;
    std::vector<int64_t> shape{static_cast<int64_t>(n)};
    dsrs::Buffer on_plugin(accel, n * sizeof(float));
    accel.rng_fill(on_plugin.view(dsrs::dtype_of<float>(), shape), DSRS_DISTRIBUTION_NORMAL, 1.0,
                   2.0);
    std::vector<float> host(n);
    DLTensor t{};
    t.data = host.data();
    t.device.device_type = kDLCPU;
    t.ndim = 1;
    t.dtype = dsrs::dtype_of<float>();
    t.shape = shape.data();
    cpu.rng_fill(t, DSRS_DISTRIBUTION_NORMAL, 1.0, 2.0);
    EXPECT(on_plugin.read<float>(0, n) == host);
    EXPECT(accel.rng_state() == cpu.rng_state());
  }

  if (dsrs_test::failures != 0) {
    std::fprintf(stderr, "plugin_cpp_test: %d check(s) FAILED\n", dsrs_test::failures);
    return 1;
  }
  std::printf("plugin_cpp_test: all checks passed\n");
  return 0;
}
