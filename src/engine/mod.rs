//! The training engine (DeepSpeed's `deepspeed.runtime` surface), being built.
//!
//! * [`lr_schedule`] — DeepSpeed's learning-rate schedules (`WarmupLR`, `WarmupDecayLR`,
//!   `WarmupCosineLR`, `OneCycle`, `LRRangeTest`) parsed from the ds_config `scheduler`
//!   block, with their step counter and checkpoint state.
//! * [`loss_scaler`] — DeepSpeed's static and dynamic loss scaling (`DynamicLossScaler`:
//!   window, hysteresis, minimum scale) parsed from the ds_config `fp16` block, with its
//!   checkpoint state.
//!
//! * [`config`] — DeepSpeed's `ds_config.json`, parsed, validated and resolved.
//!
//! The engine itself (parameters in flat buffers, the step, the C ABI) is issue 6's work in
//! progress; these pieces are pure Rust and used by it.

pub mod config;
pub mod loss_scaler;
pub mod lr_schedule;
