// engine_cpp_test.cpp — the training engine through include/deepspeed_rs.hpp: dsrs::Engine
// (RAII, move-only, from JSON and from a file), dsrs::StepRecord, the config helpers, and
// failures as dsrs::Error with the C status. A small linear regression trains to its
// target with SGD, through views obtained from the wrapper.
#include "deepspeed_rs.hpp"
#include "check.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tmpdir.h"

namespace {

const char *kConfig = R"({
  // y = 3 x - 1, one weight and one bias
  "train_batch_size": 8,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_clipping": 0,
  "optimizer": {"type": "SGD", "params": {"lr": 0.2, "momentum": 0.5}},
})";

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  static_assert(!std::is_copy_constructible<dsrs::Engine>::value, "Engine is move-only");
  static_assert(std::is_nothrow_move_constructible<dsrs::Engine>::value, "Engine moves");

  // Config helpers.
  const std::string with_auto =
      R"({"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}})";
  std::vector<std::string> autos = dsrs::config_auto_paths(with_auto);
  EXPECT(autos.size() == 1 && autos[0] == "optimizer.params.lr");
  const std::string filled = dsrs::config_fill_auto(with_auto, "optimizer.params.lr", "0.01");
  EXPECT(dsrs::config_auto_paths(filled).empty());
  const std::string resolved = dsrs::config_check(filled, 2);
  EXPECT(resolved.find("train_micro_batch_size_per_gpu") != std::string::npos);
  expect_error("config_check(bad)", DSRS_STATUS_INVALID_CONFIG, "optimizer.params.lr", [] {
    dsrs::config_check(R"({"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": -2}}})");
  });
  expect_error("Engine(auto)", DSRS_STATUS_INVALID_CONFIG, "optimizer.params.lr",
               [&] { dsrs::Engine e(with_auto); });
  expect_error("Engine::from_file(missing)", DSRS_STATUS_IO, "/no/such/dir/ds.json",
               [] { dsrs::Engine::from_file("/no/such/dir/ds.json"); });

  // An engine from a file, on an explicit accelerator.
  char *dir = test_tmpdir_new("dsrs-engine-cpp");
  const std::string path = std::string(dir) + "/ds_config.json";
  {
    FILE *f = std::fopen(path.c_str(), "w");
    EXPECT(f != nullptr);
    std::fputs(kConfig, f);
    std::fclose(f);
  }
  dsrs::Accelerator accel = dsrs::Accelerator::current();
  dsrs::Engine engine = dsrs::Engine::from_file(path, &accel);
  dsrs::BatchSizes bs = engine.batch_sizes();
  EXPECT(bs.train_batch_size == 8 && bs.micro_batch_size == 4 && bs.gradient_accumulation_steps == 2);
  const float w0 = 0.0f, b0[1] = {0.5f};
  const double d0[1] = {0.25};
  EXPECT(engine.register_param("w", &w0, {}) == 0);  // a scalar (ndim 0)
  EXPECT(engine.register_param("b", b0, {1}) == 1);
  EXPECT(engine.register_param("frozen", d0, {1}, false) == 2);
  expect_error("register_param(duplicate)", DSRS_STATUS_INVALID_ARGUMENT, "w",
               [&] { engine.register_param("w", &w0, {}); });
  expect_error("param before finalize", DSRS_STATUS_INVALID_STATE, "dsrs_engine_param",
               [&] { engine.param(0); });
  engine.finalize();
  EXPECT(engine.num_params() == 3);
  EXPECT((engine.param_names() == std::vector<std::string>{"w", "b", "frozen"}));
  EXPECT(engine.param_index("b") == 1);
  DLTensor frozen = engine.param("frozen");
  EXPECT(frozen.dtype.code == kDLFloat && frozen.dtype.bits == 64);  // keeps its dtype
  EXPECT(static_cast<const double *>(frozen.data)[0] == 0.25);
  expect_error("grad(frozen)", DSRS_STATUS_INVALID_ARGUMENT, "frozen", [&] { engine.grad("frozen"); });
  expect_error("param_index(unknown)", DSRS_STATUS_INVALID_ARGUMENT, "nope",
               [&] { engine.param_index("nope"); });

  // Move: the handle moves, the moved-from object holds none.
  dsrs::Engine moved = std::move(engine);
  EXPECT(engine.get() == nullptr && moved.get() != nullptr);
  expect_error("moved-from", DSRS_STATUS_NULL_ARGUMENT, "engine", [&] { engine.num_params(); });

  DLTensor wt = moved.param("w"), bt = moved.param(1);
  DLTensor gw = moved.grad("w"), gb = moved.grad(1);
  EXPECT(wt.ndim == 0 && dsrs::numel(wt) == 1 && bt.ndim == 1 && dsrs::numel(bt) == 1);
  float *w = static_cast<float *>(wt.data), *b = static_cast<float *>(bt.data);
  float *dw = static_cast<float *>(gw.data), *db = static_cast<float *>(gb.data);

  // y = 3 x - 1 on x in {-1, -0.5, 0, 0.5, ...}: mean squared error, gradients by hand.
  dsrs::StepRecord rec;
  double loss = 0.0;
  for (int micro = 0; micro < 200; ++micro) {
    loss = 0.0;
    for (int k = 0; k < 4; ++k) {
      const float x = -1.0f + 0.5f * static_cast<float>((micro * 4 + k) % 5);
      const float err = (*w * x + *b) - (3.0f * x - 1.0f);
      loss += err * err / 4.0;
      *dw += 2.0f * err * x / 4.0f;
      *db += 2.0f * err / 4.0f;
    }
    moved.report_loss(loss);
    rec = moved.step();
    EXPECT(rec.boundary == (micro % 2 == 1));
  }
  std::printf("linear regression: w %.5f b %.5f, last loss %.3g, global step %llu\n", *w, *b, loss,
              static_cast<unsigned long long>(rec.global_step));
  EXPECT(std::fabs(*w - 3.0f) < 1e-3f && std::fabs(*b + 1.0f) < 1e-3f);
  EXPECT(rec.global_step == 100 && rec.micro_step == 200 && rec.skipped_steps == 0);
  EXPECT(rec.applied && !rec.overflow && rec.loss_scale == 1.0 && rec.lr == 0.2);
  DLTensor mom = moved.optimizer_state("b", "momentum_buffer");
  EXPECT(mom.dtype.code == kDLFloat && mom.dtype.bits == 32);
  expect_error("optimizer_state(exp_avg) under SGD", DSRS_STATUS_INVALID_ARGUMENT, "exp_avg",
               [&] { moved.optimizer_state(0, "exp_avg"); });

  EXPECT(moved.lr() == 0.2);
  moved.set_lr(0.05);
  EXPECT(moved.lr() == 0.05);
  expect_error("set_lr(-1)", DSRS_STATUS_OUT_OF_RANGE, "lr", [&] { moved.set_lr(-1.0); });
  EXPECT(moved.loss_scale() == 1.0);
  EXPECT(moved.config_json().find("\"train_batch_size\"") != std::string::npos);
  EXPECT(moved.stats_json().front() == '{');

  // Release and adopt.
  dsrs_engine *raw = moved.release();
  EXPECT(moved.get() == nullptr);
  {
    dsrs::Engine adopted(raw);
    EXPECT(adopted.num_params() == 3);
  }  // freed here
  size_t n = 0;
  EXPECT(dsrs_engine_num_params(raw, &n) == DSRS_STATUS_STALE_HANDLE);

  // Engine from JSON text on the current accelerator.
  dsrs::Engine from_json{std::string(kConfig)};
  EXPECT(from_json.batch_sizes().gradient_accumulation_steps == 2);

  test_tmpdir_remove(dir);
  std::free(dir);
  if (dsrs_test::failures != 0) {
    std::fprintf(stderr, "engine_cpp_test: %d check(s) FAILED\n", dsrs_test::failures);
    return 1;
  }
  std::printf("engine_cpp_test: all checks passed\n");
  return 0;
}
