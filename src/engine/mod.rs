//! The training engine (DeepSpeed's `deepspeed.runtime` surface) for one process.
//!
//! * [`engine`] — [`Engine`]: parameters in flat buffers, zero-copy views of parameters and
//!   gradients, and the step at each gradient-accumulation boundary (averaging, unscaling,
//!   overflow check, global norm, clipping, the optimizer through the op registry's
//!   kernels, the LR schedule, the copy to the compute dtype).
//! * [`config`] — DeepSpeed's `ds_config.json`, parsed, validated and resolved.
//! * [`lr_schedule`] — DeepSpeed's learning-rate schedules (`WarmupLR`, `WarmupDecayLR`,
//!   `WarmupCosineLR`, `OneCycle`, `LRRangeTest`) parsed from the ds_config `scheduler`
//!   block, with their step counter and checkpoint state.
//! * [`loss_scaler`] — DeepSpeed's static and dynamic loss scaling (`DynamicLossScaler`:
//!   window, hysteresis, minimum scale) parsed from the ds_config `fp16` block, with its
//!   checkpoint state.
//!
//! The design is in `docs/engine.md`.

pub mod config;
#[allow(clippy::module_inception)]
pub mod engine;
pub mod loss_scaler;
pub mod lr_schedule;

pub use config::DsConfig;
pub use engine::{Engine, ParamData, StepRecord, TensorView};
