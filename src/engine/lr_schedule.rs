//! DeepSpeed's learning-rate schedules (`deepspeed/runtime/lr_schedules.py`).
//!
//! A [`Schedule`] is parsed from the ds_config `scheduler` block,
//! `{"type": "WarmupLR", "params": {...}}`, with DeepSpeed's parameter names and defaults.
//! An [`LrScheduler`] holds a schedule, the optimizer's original learning rate and the step
//! counter `last_batch_iteration`, which starts at -1; each [`LrScheduler::step`] advances it
//! by one, and [`LrScheduler::get_lr`] is the learning rate the optimizer holds after that
//! step (DeepSpeed calls `step()` once per *applied* optimizer step, skipping overflowed
//! ones).
//!
//! Throughout, `t` is `last_batch_iteration` and every value is computed in `f64` in the
//! same operation order as DeepSpeed's Python floats. Per-parameter-group lists of learning
//! rates (which DeepSpeed accepts for some parameters) are not supported yet: one value
//! applies to every group.
//!
//! ```
//! use deepspeed_rs::engine::lr_schedule::LrScheduler;
//!
//! let block = serde_json::json!({
//!     "type": "WarmupLR",
//!     "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.001,
//!                "warmup_num_steps": 100, "warmup_type": "linear"}
//! });
//! let mut sched = LrScheduler::from_config(&block, 0.01).unwrap();
//! assert_eq!(sched.get_lr(), 0.0); // before the first step: warmup_min_lr
//! sched.step();
//! assert_eq!(sched.last_batch_iteration(), 0);
//! for _ in 0..100 {
//!     sched.step();
//! }
//! assert_eq!(sched.get_lr(), 0.001); // warmup done
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The schedule names DeepSpeed's `lr_schedules` module defines (case-sensitive).
pub const VALID_SCHEDULES: [&str; 5] = [
    "WarmupLR",
    "WarmupDecayLR",
    "WarmupCosineLR",
    "OneCycle",
    "LRRangeTest",
];

/// The warmup curve of `WarmupLR`, `WarmupDecayLR` and `WarmupCosineLR` (`warmup_type`).
///
/// With `N = max(2, warmup_num_steps)` and `t < N`, the warmup fraction is
/// `(1 / ln N) · ln(t + 1)` for [`Log`](WarmupType::Log) and `t / N` for
/// [`Linear`](WarmupType::Linear). An unknown `warmup_type` string is accepted with a warning
/// and means `Log`, as in DeepSpeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WarmupType {
    /// `"log"` (the default): `(1 / ln N) · ln(t + 1)`.
    Log,
    /// `"linear"`: `t / N`.
    Linear,
}

impl WarmupType {
    /// The warmup fraction at `t` (`0 <= t < n`, `n >= 2`).
    fn fraction(self, t: i64, n: i64) -> f64 {
        match self {
            WarmupType::Log => (1.0 / (n as f64).ln()) * ((t + 1) as f64).ln(),
            WarmupType::Linear => t as f64 / n as f64,
        }
    }
}

/// One of DeepSpeed's learning-rate schedules with its parameters (DeepSpeed's names).
///
/// Each variant documents its formula; `t` is `last_batch_iteration` and
/// `N = max(2, warmup_num_steps)`. At `t < 0` (before the first step) every schedule reports
/// the value DeepSpeed writes into the optimizer at construction, see [`Schedule::lr_at`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// `WarmupLR`: warm up from `warmup_min_lr` to `warmup_max_lr`, then hold.
    ///
    /// `lr = min + (max - min) · γ` with `γ` the [`WarmupType`] fraction while `t < N` and
    /// `γ = 1` after; `lr = min` at `t < 0`.
    WarmupLR {
        /// `warmup_min_lr`, default 0.0.
        warmup_min_lr: f64,
        /// `warmup_max_lr`; `None` (the default, or JSON `null`) means the optimizer's lr.
        warmup_max_lr: Option<f64>,
        /// `warmup_num_steps`, a non-negative integer (`max(2, n)` is used), default 1000.
        warmup_num_steps: u64,
        /// `warmup_type`, default `"log"`.
        warmup_type: WarmupType,
    },
    /// `WarmupDecayLR`: `WarmupLR`'s warmup, then a linear decay to 0 at `total_num_steps`.
    ///
    /// After warmup (`t >= N`), `γ = max(0, (total - t) / max(1, total - N))` and
    /// `lr = min + (max - min) · γ`. A `total_num_steps` below the warmup only logs a
    /// warning, as in DeepSpeed.
    WarmupDecayLR {
        /// `total_num_steps`, required.
        total_num_steps: u64,
        /// `warmup_min_lr`, default 0.0.
        warmup_min_lr: f64,
        /// `warmup_max_lr`, default 0.001; JSON `null` (`None`) means the optimizer's lr.
        warmup_max_lr: Option<f64>,
        /// `warmup_num_steps`, a non-negative integer (`max(2, n)` is used), default 1000.
        warmup_num_steps: u64,
        /// `warmup_type`, default `"log"`.
        warmup_type: WarmupType,
    },
    /// `WarmupCosineLR`: scales the optimizer's original lr by a ratio that warms up from
    /// `warmup_min_ratio` to 1, then follows a cosine down to `cos_min_ratio`.
    ///
    /// `lr = base_lr · ratio`. Warmup (`0 <= t < N`): `ratio = wmin + r · (1 - wmin)` with
    /// `r` the [`WarmupType`] fraction. After: `s = t - N + 1`, `T = max(1, total - N)`,
    /// `p = min(1, s / T)`, `ratio = max(0, cmin + (1 - cmin) · (1 + cos(π·p)) / 2)` (the
    /// ratio stays at `cos_min_ratio` past the end). `lr = 0` at `t < 0`.
    WarmupCosineLR {
        /// `total_num_steps`, required.
        total_num_steps: u64,
        /// `warmup_min_ratio`, default 0.0.
        warmup_min_ratio: f64,
        /// `warmup_num_steps`, a non-negative integer (`max(2, n)` is used), default 1000.
        warmup_num_steps: u64,
        /// `cos_min_ratio`, default 0.0001.
        cos_min_ratio: f64,
        /// `warmup_type`, default `"log"`.
        warmup_type: WarmupType,
    },
    /// `OneCycle` (1Cycle): one triangular cycle of lr (and, inversely, momentum), then
    /// decay.
    ///
    /// `F = first`, `S = second` (default `F`), `total = F + S`, `ratio = F / total`,
    /// `b = t + 1`, `cycle = floor(1 + b / total)`, `x = 1 + b / total - cycle`,
    /// `scale = x / ratio` if `x <= ratio` else `(x - 1) / (ratio - 1)`. With a stair count
    /// `k > 0` for the half (`cycle_first_stair_count` while `b mod total <= F`, else
    /// `cycle_second_stair_count`, default the first): `c = b mod total`,
    /// `scale = floor(c·k / F) / k` (first half) or `floor((total - c)·k / S) / k`.
    ///
    /// While `t < total`: `lr = min_lr + (max_lr - min_lr) · scale` and
    /// `momentum = max_mom - (max_mom - min_mom) · scale`. After, with
    /// `d = t - total + 1`: `lr = min_lr / (1 + decay_lr_rate · d / decay_step_size)` and
    /// `momentum = max_mom · (1 + decay_mom_rate · d / decay_step_size)`; a zero
    /// `decay_step_size` turns both decays off (`lr = min_lr`, `momentum = max_mom`), a zero
    /// rate turns its own off. At `t < 0`: `lr = min_lr`, `momentum = min_mom`.
    OneCycle {
        /// `cycle_min_lr`, required.
        cycle_min_lr: f64,
        /// `cycle_max_lr`, required.
        cycle_max_lr: f64,
        /// `decay_lr_rate`, default 0.0.
        decay_lr_rate: f64,
        /// `cycle_first_step_size`, a positive integer, default 2000.
        cycle_first_step_size: u64,
        /// `cycle_second_step_size`, default `None` (= `cycle_first_step_size`).
        cycle_second_step_size: Option<u64>,
        /// `cycle_first_stair_count`, default 0 (no stairs; any value <= 0 means none).
        cycle_first_stair_count: i64,
        /// `cycle_second_stair_count`, default `None` (= `cycle_first_stair_count`).
        cycle_second_stair_count: Option<i64>,
        /// `decay_step_size`, default 0 (no post-cycle decay).
        decay_step_size: u64,
        /// `cycle_momentum`, default true: also cycle the optimizer's beta1.
        cycle_momentum: bool,
        /// `cycle_min_mom`, default 0.8.
        cycle_min_mom: f64,
        /// `cycle_max_mom`, default 0.9.
        cycle_max_mom: f64,
        /// `decay_mom_rate`, default 0.0.
        decay_mom_rate: f64,
    },
    /// `LRRangeTest`: grows the lr linearly (or in stairs) from `lr_range_test_min_lr`.
    ///
    /// `i = (t + 1) / step_size` (floored when `staircase`), `lr = min_lr · (1 + rate · i)`.
    LRRangeTest {
        /// `lr_range_test_min_lr`, default 0.001.
        lr_range_test_min_lr: f64,
        /// `lr_range_test_step_size`, a positive integer, default 2000.
        lr_range_test_step_size: u64,
        /// `lr_range_test_step_rate`, default 1.0.
        lr_range_test_step_rate: f64,
        /// `lr_range_test_staircase`, default false.
        lr_range_test_staircase: bool,
    },
}

/// The `params` keys each schedule accepts.
fn valid_params(kind: &str) -> &'static [&'static str] {
    match kind {
        "WarmupLR" => &[
            "warmup_min_lr",
            "warmup_max_lr",
            "warmup_num_steps",
            "warmup_type",
        ],
        "WarmupDecayLR" => &[
            "total_num_steps",
            "warmup_min_lr",
            "warmup_max_lr",
            "warmup_num_steps",
            "warmup_type",
        ],
        "WarmupCosineLR" => &[
            "total_num_steps",
            "warmup_min_ratio",
            "warmup_num_steps",
            "cos_min_ratio",
            "warmup_type",
        ],
        "OneCycle" => &[
            "cycle_min_lr",
            "cycle_max_lr",
            "decay_lr_rate",
            "cycle_first_step_size",
            "cycle_second_step_size",
            "cycle_first_stair_count",
            "cycle_second_stair_count",
            "decay_step_size",
            "cycle_momentum",
            "cycle_min_mom",
            "cycle_max_mom",
            "decay_mom_rate",
        ],
        _ => &[
            "lr_range_test_min_lr",
            "lr_range_test_step_size",
            "lr_range_test_step_rate",
            "lr_range_test_staircase",
        ],
    }
}

/// Typed access to `scheduler.params`, with errors naming the key.
struct Params<'a> {
    map: &'a Map<String, Value>,
}

impl Params<'_> {
    fn bad(key: &str, expected: &str, got: &Value) -> Error {
        let hint = if got.as_str() == Some("auto") {
            " (\"auto\" must be resolved before the config reaches DeepSpeed, as the Hugging Face integration does)"
        } else {
            ""
        };
        Error::config(format!(
            "scheduler.params.{key}: expected {expected}, got {got}{hint}"
        ))
    }

    fn list_hint(key: &str, v: &Value) -> Option<Error> {
        v.is_array().then(|| {
            Error::config(format!(
                "scheduler.params.{key}: per-parameter-group lists are not supported yet, give one number (got {v})"
            ))
        })
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        self.opt_f64(key, Some(default), false)
            .map(|v| v.unwrap_or(default))
    }

    fn required_f64(&self, key: &str, kind: &str) -> Result<f64> {
        match self.map.get(key) {
            None => Err(Error::config(format!(
                "scheduler.params.{key}: required for {kind}"
            ))),
            Some(_) => self.opt_f64(key, None, false).map(|v| v.unwrap_or(0.0)),
        }
    }

    /// A number; `null` gives `None` when `null_ok`, a missing key gives `default`.
    fn opt_f64(&self, key: &str, default: Option<f64>, null_ok: bool) -> Result<Option<f64>> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) if null_ok => Ok(None),
            Some(v) => {
                if let Some(e) = Self::list_hint(key, v) {
                    return Err(e);
                }
                v.as_f64()
                    .map(Some)
                    .ok_or_else(|| Self::bad(key, "a number", v))
            }
        }
    }

    /// An integer `>= min`; `null` gives `None` when `null_ok`, a missing key `default`.
    fn opt_int(
        &self,
        key: &str,
        default: Option<i64>,
        min: Option<i64>,
        null_ok: bool,
    ) -> Result<Option<i64>> {
        let expected = match min {
            Some(1) => "a positive integer",
            Some(0) => "a non-negative integer",
            _ => "an integer",
        };
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) if null_ok => Ok(None),
            // Integral floats (`1e3`) count as integers, as in Python.
            Some(v) => match v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }) {
                Some(n) if min.is_none_or(|m| n >= m) => Ok(Some(n)),
                _ => Err(Self::bad(key, expected, v)),
            },
        }
    }

    fn uint_or(&self, key: &str, default: u64, min: u64) -> Result<u64> {
        self.opt_int(key, Some(default as i64), Some(min as i64), false)
            .map(|v| v.unwrap_or(default as i64) as u64)
    }

    fn required_uint(&self, key: &str, kind: &str) -> Result<u64> {
        match self.map.get(key) {
            None => Err(Error::config(format!(
                "scheduler.params.{key}: required for {kind}"
            ))),
            Some(_) => self
                .opt_int(key, None, Some(0), false)
                .map(|v| v.unwrap_or(0) as u64),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| Self::bad(key, "true or false", v)),
        }
    }

    fn warmup_type(&self) -> Result<WarmupType> {
        match self.map.get("warmup_type") {
            None => Ok(WarmupType::Log),
            Some(Value::String(s)) => Ok(match s.as_str() {
                "log" => WarmupType::Log,
                "linear" => WarmupType::Linear,
                other => {
                    crate::dsrs_warn!(
                        "engine",
                        "scheduler.params.warmup_type: unknown warmup_type {other:?} (valid: \"log\", \"linear\"); using \"log\" as DeepSpeed does"
                    );
                    WarmupType::Log
                }
            }),
            Some(v) => Err(Self::bad("warmup_type", "\"log\" or \"linear\"", v)),
        }
    }
}

impl Schedule {
    /// Parses the ds_config `scheduler` block, `{"type": ..., "params": {...}}`.
    ///
    /// `type` must be one of [`VALID_SCHEDULES`] (case-sensitive; `torch.optim.lr_scheduler`
    /// classes, which DeepSpeed falls back to, are not supported). `params` must be an
    /// object (DeepSpeed passes it as keyword arguments, so it is required, though it may
    /// be `{}`); an unknown or ill-typed parameter is an error naming the key. Other keys
    /// of the block are ignored, as DeepSpeed's old-style sections do.
    pub fn from_json(block: &Value) -> Result<Schedule> {
        let obj = block.as_object().ok_or_else(|| {
            Error::config(format!(
                "scheduler: expected an object {{\"type\": ..., \"params\": {{...}}}}, got {block}"
            ))
        })?;
        let kind = match obj.get("type") {
            None => return Err(Error::config("scheduler.type: missing")),
            Some(Value::String(s)) if VALID_SCHEDULES.contains(&s.as_str()) => s.as_str(),
            Some(v) => {
                return Err(Error::config(format!(
                    "scheduler.type: {v} is not a DeepSpeed LR schedule (valid: {})",
                    VALID_SCHEDULES.join(", ")
                )));
            }
        };
        let map = match obj.get("params") {
            None => {
                return Err(Error::config(format!(
                    "scheduler.params: missing (an object of {kind} parameters, possibly {{}})"
                )));
            }
            Some(Value::Object(m)) => m,
            Some(v) => {
                return Err(Error::config(format!(
                    "scheduler.params: expected an object, got {v}"
                )));
            }
        };
        let valid = valid_params(kind);
        if let Some(key) = map.keys().find(|k| !valid.contains(&k.as_str())) {
            return Err(Error::config(format!(
                "scheduler.params.{key}: unknown parameter for {kind} (valid: {})",
                valid.join(", ")
            )));
        }
        let p = Params { map };
        let schedule = match kind {
            "WarmupLR" => Schedule::WarmupLR {
                warmup_min_lr: p.f64_or("warmup_min_lr", 0.0)?,
                warmup_max_lr: p.opt_f64("warmup_max_lr", None, true)?,
                warmup_num_steps: p.uint_or("warmup_num_steps", 1000, 0)?,
                warmup_type: p.warmup_type()?,
            },
            "WarmupDecayLR" => Schedule::WarmupDecayLR {
                total_num_steps: p.required_uint("total_num_steps", kind)?,
                warmup_min_lr: p.f64_or("warmup_min_lr", 0.0)?,
                warmup_max_lr: p.opt_f64("warmup_max_lr", Some(0.001), true)?,
                warmup_num_steps: p.uint_or("warmup_num_steps", 1000, 0)?,
                warmup_type: p.warmup_type()?,
            },
            "WarmupCosineLR" => Schedule::WarmupCosineLR {
                total_num_steps: p.required_uint("total_num_steps", kind)?,
                warmup_min_ratio: p.f64_or("warmup_min_ratio", 0.0)?,
                warmup_num_steps: p.uint_or("warmup_num_steps", 1000, 0)?,
                cos_min_ratio: p.f64_or("cos_min_ratio", 0.0001)?,
                warmup_type: p.warmup_type()?,
            },
            "OneCycle" => Schedule::OneCycle {
                cycle_min_lr: p.required_f64("cycle_min_lr", kind)?,
                cycle_max_lr: p.required_f64("cycle_max_lr", kind)?,
                decay_lr_rate: p.f64_or("decay_lr_rate", 0.0)?,
                cycle_first_step_size: p.uint_or("cycle_first_step_size", 2000, 1)?,
                cycle_second_step_size: p
                    .opt_int("cycle_second_step_size", None, Some(0), true)?
                    .map(|n| n as u64),
                cycle_first_stair_count: p
                    .opt_int("cycle_first_stair_count", Some(0), None, false)?
                    .unwrap_or(0),
                cycle_second_stair_count: p.opt_int(
                    "cycle_second_stair_count",
                    None,
                    None,
                    true,
                )?,
                decay_step_size: p.uint_or("decay_step_size", 0, 0)?,
                cycle_momentum: p.bool_or("cycle_momentum", true)?,
                cycle_min_mom: p.f64_or("cycle_min_mom", 0.8)?,
                cycle_max_mom: p.f64_or("cycle_max_mom", 0.9)?,
                decay_mom_rate: p.f64_or("decay_mom_rate", 0.0)?,
            },
            _ => Schedule::LRRangeTest {
                lr_range_test_min_lr: p.f64_or("lr_range_test_min_lr", 1e-3)?,
                lr_range_test_step_size: p.uint_or("lr_range_test_step_size", 2000, 1)?,
                lr_range_test_step_rate: p.f64_or("lr_range_test_step_rate", 1.0)?,
                lr_range_test_staircase: p.bool_or("lr_range_test_staircase", false)?,
            },
        };
        if let Schedule::WarmupDecayLR {
            total_num_steps,
            warmup_num_steps,
            ..
        }
        | Schedule::WarmupCosineLR {
            total_num_steps,
            warmup_num_steps,
            ..
        } = schedule
            && total_num_steps < warmup_num_steps.max(2)
        {
            crate::dsrs_warn!(
                "engine",
                "scheduler.params.total_num_steps {total_num_steps} is less than warmup_num_steps {warmup_num_steps}"
            );
        }
        Ok(schedule)
    }

    /// The schedule's DeepSpeed name (`"WarmupLR"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::WarmupLR { .. } => "WarmupLR",
            Schedule::WarmupDecayLR { .. } => "WarmupDecayLR",
            Schedule::WarmupCosineLR { .. } => "WarmupCosineLR",
            Schedule::OneCycle { .. } => "OneCycle",
            Schedule::LRRangeTest { .. } => "LRRangeTest",
        }
    }

    /// The learning rate at `last_batch_iteration = t`, for an optimizer whose original lr
    /// (the `optimizer.params.lr` the schedule scales or defaults to) is `base_lr`.
    ///
    /// At `t < 0` it is the value DeepSpeed writes at construction: `warmup_min_lr` (WarmupLR,
    /// WarmupDecayLR), 0 (WarmupCosineLR), `cycle_min_lr` (OneCycle),
    /// `lr_range_test_min_lr` (LRRangeTest). Otherwise see each [`Schedule`] variant.
    pub fn lr_at(&self, t: i64, base_lr: f64) -> f64 {
        match *self {
            Schedule::WarmupLR {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => {
                if t < 0 {
                    return warmup_min_lr;
                }
                let n = (warmup_num_steps as i64).max(2);
                let gamma = if t < n {
                    warmup_type.fraction(t, n)
                } else {
                    1.0
                };
                let max = warmup_max_lr.unwrap_or(base_lr);
                warmup_min_lr + (max - warmup_min_lr) * gamma
            }
            Schedule::WarmupDecayLR {
                total_num_steps,
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => {
                if t < 0 {
                    return warmup_min_lr;
                }
                let n = (warmup_num_steps as i64).max(2);
                let total = total_num_steps as i64;
                let gamma = if t < n {
                    warmup_type.fraction(t, n)
                } else {
                    let remaining = (total - t) as f64;
                    let span = ((total - n) as f64).max(1.0);
                    (remaining / span).max(0.0)
                };
                let max = warmup_max_lr.unwrap_or(base_lr);
                warmup_min_lr + (max - warmup_min_lr) * gamma
            }
            Schedule::WarmupCosineLR {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                warmup_type,
            } => {
                if t < 0 {
                    return 0.0;
                }
                let n = (warmup_num_steps as i64).max(2);
                let ratio = if t < n {
                    let r = warmup_type.fraction(t, n);
                    warmup_min_ratio + r * (1.0 - warmup_min_ratio)
                } else {
                    let real_last = t - n + 1;
                    let real_total = (total_num_steps as i64 - n).max(1);
                    let progress = (real_last as f64 / real_total as f64).min(1.0);
                    let cosine = (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0;
                    (cos_min_ratio + (1.0 - cos_min_ratio) * cosine).max(0.0)
                };
                base_lr * ratio
            }
            Schedule::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                decay_step_size,
                ..
            } => {
                if t < 0 {
                    return cycle_min_lr;
                }
                let total = self.one_cycle_total();
                if (t as f64) < total {
                    let scale = self.one_cycle_scale(t);
                    cycle_min_lr + (cycle_max_lr - cycle_min_lr) * scale
                } else if decay_step_size == 0 || decay_lr_rate == 0.0 {
                    cycle_min_lr
                } else {
                    let d = t as f64 - total + 1.0;
                    let interval = d / decay_step_size as f64;
                    cycle_min_lr / (1.0 + decay_lr_rate * interval)
                }
            }
            Schedule::LRRangeTest {
                lr_range_test_min_lr,
                lr_range_test_step_size,
                lr_range_test_step_rate,
                lr_range_test_staircase,
            } => {
                if t < 0 {
                    return lr_range_test_min_lr;
                }
                let mut interval = (t + 1) as f64 / lr_range_test_step_size as f64;
                if lr_range_test_staircase {
                    interval = interval.floor();
                }
                lr_range_test_min_lr * (1.0 + lr_range_test_step_rate * interval)
            }
        }
    }

    /// The momentum (the optimizer's beta1) at `last_batch_iteration = t`: `Some` only for
    /// `OneCycle` with `cycle_momentum` (DeepSpeed writes `betas = (momentum, 0.99)`).
    ///
    /// At `t < 0` it is `cycle_min_mom` (what DeepSpeed writes at construction); otherwise
    /// see [`Schedule::OneCycle`].
    pub fn momentum_at(&self, t: i64) -> Option<f64> {
        let Schedule::OneCycle {
            decay_step_size,
            cycle_momentum,
            cycle_min_mom,
            cycle_max_mom,
            decay_mom_rate,
            ..
        } = *self
        else {
            return None;
        };
        if !cycle_momentum {
            return None;
        }
        if t < 0 {
            return Some(cycle_min_mom);
        }
        let total = self.one_cycle_total();
        Some(if (t as f64) < total {
            let scale = self.one_cycle_scale(t);
            cycle_max_mom - (cycle_max_mom - cycle_min_mom) * scale
        } else if decay_step_size == 0 || decay_mom_rate == 0.0 {
            cycle_max_mom
        } else {
            let d = t as f64 - total + 1.0;
            let interval = d / decay_step_size as f64;
            cycle_max_mom * (1.0 + decay_mom_rate * interval)
        })
    }

    /// OneCycle's `(first, second)` step sizes as floats.
    fn one_cycle_steps(&self) -> (f64, f64) {
        match *self {
            Schedule::OneCycle {
                cycle_first_step_size,
                cycle_second_step_size,
                ..
            } => {
                let first = cycle_first_step_size as f64;
                (first, cycle_second_step_size.map_or(first, |s| s as f64))
            }
            _ => (1.0, 1.0),
        }
    }

    fn one_cycle_total(&self) -> f64 {
        let (first, second) = self.one_cycle_steps();
        first + second
    }

    /// OneCycle's scale factor in `[0, 1]` at `t` (see [`Schedule::OneCycle`]).
    fn one_cycle_scale(&self, t: i64) -> f64 {
        let Schedule::OneCycle {
            cycle_first_stair_count,
            cycle_second_stair_count,
            ..
        } = *self
        else {
            return 0.0;
        };
        let (first, second) = self.one_cycle_steps();
        let total = first + second;
        let ratio = first / total;
        let b = (t + 1) as f64;
        let cycle = (1.0 + b / total).floor();
        let x = 1.0 + b / total - cycle;
        let second_stairs = cycle_second_stair_count.unwrap_or(cycle_first_stair_count);
        let (scale, stairs) = if x <= ratio {
            (x / ratio, cycle_first_stair_count)
        } else {
            ((x - 1.0) / (ratio - 1.0), second_stairs)
        };
        if stairs <= 0 {
            return scale;
        }
        let k = stairs as f64;
        let c = b.rem_euclid(total);
        let position = if c <= first {
            c * k / first
        } else {
            (total - c) * k / second
        };
        position.floor() / k
    }
}

/// The checkpointed state of an [`LrScheduler`], DeepSpeed's
/// `{"last_batch_iteration": t}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrSchedulerState {
    /// `last_batch_iteration`: -1 before the first step.
    pub last_batch_iteration: i64,
}

/// A [`Schedule`] with its step counter, DeepSpeed's scheduler object.
///
/// `last_batch_iteration` starts at -1; [`step`](Self::step) sets it to `t + 1` and the
/// optimizer then takes [`get_lr`](Self::get_lr) (and [`get_momentum`](Self::get_momentum)
/// as beta1, when `Some`).
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduler {
    schedule: Schedule,
    base_lr: f64,
    last_batch_iteration: i64,
}

impl LrScheduler {
    /// A scheduler at `last_batch_iteration = -1`. `base_lr` is the optimizer's original
    /// lr (`optimizer.params.lr`): WarmupCosineLR scales it, and WarmupLR's
    /// `warmup_max_lr` defaults to it.
    pub fn new(schedule: Schedule, base_lr: f64) -> Self {
        LrScheduler {
            schedule,
            base_lr,
            last_batch_iteration: -1,
        }
    }

    /// [`Schedule::from_json`] on the ds_config `scheduler` block, then [`LrScheduler::new`].
    pub fn from_config(block: &Value, base_lr: f64) -> Result<Self> {
        Ok(Self::new(Schedule::from_json(block)?, base_lr))
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The optimizer's original lr given to [`LrScheduler::new`].
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// `last_batch_iteration` (-1 before the first step).
    pub fn last_batch_iteration(&self) -> i64 {
        self.last_batch_iteration
    }

    /// Advances one step: `last_batch_iteration += 1` (DeepSpeed's `step()`).
    pub fn step(&mut self) {
        self.last_batch_iteration += 1;
    }

    /// Sets `last_batch_iteration` to `iteration` (DeepSpeed's `step(iteration)`).
    pub fn step_to(&mut self, iteration: i64) {
        self.last_batch_iteration = iteration;
    }

    /// The current learning rate, [`Schedule::lr_at`] at `last_batch_iteration`.
    pub fn get_lr(&self) -> f64 {
        self.schedule.lr_at(self.last_batch_iteration, self.base_lr)
    }

    /// The current momentum (beta1), [`Schedule::momentum_at`] at `last_batch_iteration`:
    /// `Some` only for OneCycle with `cycle_momentum`.
    pub fn get_momentum(&self) -> Option<f64> {
        self.schedule.momentum_at(self.last_batch_iteration)
    }

    /// The state to checkpoint, `{"last_batch_iteration": t}`.
    pub fn state_dict(&self) -> LrSchedulerState {
        LrSchedulerState {
            last_batch_iteration: self.last_batch_iteration,
        }
    }

    /// Restores a checkpointed state (only `last_batch_iteration`, as DeepSpeed does; the
    /// schedule comes from the config).
    pub fn load_state_dict(&mut self, state: &LrSchedulerState) {
        self.last_batch_iteration = state.last_batch_iteration;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn close(a: f64, b: f64, what: &str) {
        let tol = 1e-12 * a.abs().max(b.abs()).max(1e-300);
        assert!((a - b).abs() <= tol, "{what}: got {a}, expected {b}");
    }

    fn sched(block: Value, base_lr: f64) -> LrScheduler {
        LrScheduler::from_config(&block, base_lr).unwrap()
    }

    fn err(block: Value) -> String {
        Schedule::from_json(&block).unwrap_err().to_string()
    }

    /// Steps 0..=2200 (`t` = 0..2200) and checks lr (and momentum) after each step.
    fn check(
        mut s: LrScheduler,
        lr: impl Fn(i64) -> f64,
        mom: impl Fn(i64) -> Option<f64>,
        name: &str,
    ) {
        for t in 0..=2200 {
            s.step();
            assert_eq!(s.last_batch_iteration(), t);
            close(s.get_lr(), lr(t), &format!("{name} lr at t={t}"));
            match (s.get_momentum(), mom(t)) {
                (None, None) => {}
                (Some(a), Some(b)) => close(a, b, &format!("{name} momentum at t={t}")),
                (a, b) => panic!("{name} momentum at t={t}: {a:?} vs {b:?}"),
            }
        }
    }

    /// Python's warmup fraction, written out.
    fn warm(t: i64, steps: i64, linear: bool) -> f64 {
        let n = steps.max(2) as f64;
        if linear {
            t as f64 / n
        } else {
            ((t + 1) as f64).ln() / n.ln()
        }
    }

    #[test]
    fn warmup_lr_both_types() {
        for (ty, linear) in [("log", false), ("linear", true)] {
            let s = sched(
                json!({"type": "WarmupLR", "params": {"warmup_min_lr": 0.0001,
                    "warmup_max_lr": 0.01, "warmup_num_steps": 500, "warmup_type": ty}}),
                0.5,
            );
            assert_eq!(s.get_lr(), 0.0001);
            assert_eq!(s.get_momentum(), None);
            let f = |t: i64| {
                let g = if t < 500 { warm(t, 500, linear) } else { 1.0 };
                0.0001 + (0.01 - 0.0001) * g
            };
            check(s, f, |_| None, ty);
        }
        // Boundaries, exactly.
        let mut s = sched(
            json!({"type": "WarmupLR", "params": {"warmup_max_lr": 0.01,
                "warmup_num_steps": 10, "warmup_type": "linear"}}),
            0.5,
        );
        s.step_to(0);
        assert_eq!(s.get_lr(), 0.0);
        s.step_to(9);
        close(s.get_lr(), 0.009, "last warmup step");
        s.step_to(10);
        assert_eq!(s.get_lr(), 0.01);
        s.step_to(100_000);
        assert_eq!(s.get_lr(), 0.01);
    }

    #[test]
    fn warmup_lr_defaults() {
        let s = Schedule::from_json(&json!({"type": "WarmupLR", "params": {}})).unwrap();
        assert_eq!(
            s,
            Schedule::WarmupLR {
                warmup_min_lr: 0.0,
                warmup_max_lr: None,
                warmup_num_steps: 1000,
                warmup_type: WarmupType::Log
            }
        );
        // warmup_max_lr defaults to the optimizer's lr.
        let mut s = LrScheduler::new(s, 0.02);
        assert_eq!(s.get_lr(), 0.0);
        s.step_to(999);
        close(s.get_lr(), 0.02, "log warmup ends at max");
        s.step_to(1000);
        assert_eq!(s.get_lr(), 0.02);
        s.step_to(1);
        close(s.get_lr(), 0.02 * 2f64.ln() / 1000f64.ln(), "t=1");
        // warmup_num_steps 1 acts as 2; unknown warmup_type means log.
        let s = sched(
            json!({"type": "WarmupLR", "params": {"warmup_max_lr": 1.0,
                "warmup_num_steps": 1, "warmup_type": "cosine"}}),
            0.5,
        );
        check(
            s,
            |t| if t < 2 { warm(t, 2, false) } else { 1.0 },
            |_| None,
            "N=max(2,1)",
        );
    }

    #[test]
    fn warmup_decay_lr() {
        for (ty, linear) in [("log", false), ("linear", true)] {
            let s = sched(
                json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 1500,
                    "warmup_min_lr": 0.001, "warmup_max_lr": 0.1, "warmup_num_steps": 300,
                    "warmup_type": ty}}),
                0.5,
            );
            assert_eq!(s.get_lr(), 0.001);
            let f = |t: i64| {
                let g = if t < 300 {
                    warm(t, 300, linear)
                } else {
                    ((1500 - t) as f64 / ((1500 - 300) as f64).max(1.0)).max(0.0)
                };
                0.001 + (0.1 - 0.001) * g
            };
            check(s, f, |_| None, ty);
        }
        let mut s = sched(
            json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 20,
                "warmup_num_steps": 10, "warmup_type": "linear"}}),
            0.5,
        );
        s.step_to(10);
        assert_eq!(s.get_lr(), 0.001, "first decay step is the peak");
        s.step_to(15);
        close(s.get_lr(), 0.0005, "half way down");
        s.step_to(20);
        assert_eq!(s.get_lr(), 0.0, "zero at total_num_steps");
        s.step_to(25);
        assert_eq!(s.get_lr(), 0.0, "stays zero past the end");
        // Defaults: warmup_max_lr 0.001 (not the optimizer's lr), null means the optimizer's.
        assert_eq!(
            Schedule::from_json(&json!({"type": "WarmupDecayLR",
                "params": {"total_num_steps": 5000}}))
            .unwrap(),
            Schedule::WarmupDecayLR {
                total_num_steps: 5000,
                warmup_min_lr: 0.0,
                warmup_max_lr: Some(0.001),
                warmup_num_steps: 1000,
                warmup_type: WarmupType::Log
            }
        );
        let mut s = sched(
            json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 50,
                "warmup_max_lr": null, "warmup_num_steps": 10}}),
            0.3,
        );
        s.step_to(10);
        assert_eq!(s.get_lr(), 0.3);
        // total < warmup only warns: the decay span is max(1, total - N).
        let mut s = sched(
            json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 5,
                "warmup_max_lr": 1.0, "warmup_num_steps": 10}}),
            0.3,
        );
        s.step_to(10);
        assert_eq!(s.get_lr(), 0.0);
    }

    #[test]
    fn warmup_cosine_lr() {
        for (ty, linear) in [("log", false), ("linear", true)] {
            let s = sched(
                json!({"type": "WarmupCosineLR", "params": {"total_num_steps": 1800,
                    "warmup_min_ratio": 0.1, "warmup_num_steps": 200, "cos_min_ratio": 0.05,
                    "warmup_type": ty}}),
                0.04,
            );
            assert_eq!(s.get_lr(), 0.0);
            let f = |t: i64| {
                let ratio = if t < 200 {
                    0.1 + warm(t, 200, linear) * 0.9
                } else {
                    let p = ((t - 200 + 1) as f64 / 1600.0).min(1.0);
                    0.05 + 0.95 * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
                };
                0.04 * ratio
            };
            check(s, f, |_| None, ty);
        }
        let mut s = sched(
            json!({"type": "WarmupCosineLR", "params": {"total_num_steps": 110,
                "warmup_num_steps": 10, "warmup_type": "linear"}}),
            1.0,
        );
        s.step_to(0);
        assert_eq!(s.get_lr(), 0.0);
        s.step_to(9);
        close(s.get_lr(), 0.9, "last warmup step");
        s.step_to(109);
        close(s.get_lr(), 0.0001, "cos_min_ratio at the end");
        s.step_to(5000);
        close(s.get_lr(), 0.0001, "stays at cos_min_ratio");
        assert_eq!(
            Schedule::from_json(&json!({"type": "WarmupCosineLR",
                "params": {"total_num_steps": 10}}))
            .unwrap(),
            Schedule::WarmupCosineLR {
                total_num_steps: 10,
                warmup_min_ratio: 0.0,
                warmup_num_steps: 1000,
                cos_min_ratio: 0.0001,
                warmup_type: WarmupType::Log
            }
        );
    }

    /// OneCycle written out from DeepSpeed's description (no stairs).
    fn one_cycle(t: i64, first: f64, second: f64, p: [f64; 6], decay: f64) -> (f64, f64) {
        let [min_lr, max_lr, lr_rate, min_mom, max_mom, mom_rate] = p;
        let total = first + second;
        if (t as f64) < total {
            let b = (t + 1) as f64;
            let cycle = (1.0 + b / total).floor();
            let x = 1.0 + b / total - cycle;
            let ratio = first / total;
            let s = if x <= ratio {
                x / ratio
            } else {
                (x - 1.0) / (ratio - 1.0)
            };
            (
                min_lr + (max_lr - min_lr) * s,
                max_mom - (max_mom - min_mom) * s,
            )
        } else {
            let d = t as f64 - total + 1.0;
            let lr = if decay == 0.0 || lr_rate == 0.0 {
                min_lr
            } else {
                min_lr / (1.0 + lr_rate * d / decay)
            };
            let mom = if decay == 0.0 || mom_rate == 0.0 {
                max_mom
            } else {
                max_mom * (1.0 + mom_rate * d / decay)
            };
            (lr, mom)
        }
    }

    #[test]
    fn one_cycle_lr_and_momentum() {
        let s = sched(
            json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01,
                "decay_lr_rate": 0.5, "cycle_first_step_size": 600,
                "cycle_second_step_size": 400, "decay_step_size": 100,
                "cycle_min_mom": 0.85, "cycle_max_mom": 0.95, "decay_mom_rate": 0.01}}),
            0.5,
        );
        assert_eq!(s.get_lr(), 0.001);
        assert_eq!(
            s.get_momentum(),
            Some(0.85),
            "construction writes cycle_min_mom"
        );
        let p = [0.001, 0.01, 0.5, 0.85, 0.95, 0.01];
        check(
            s,
            |t| one_cycle(t, 600.0, 400.0, p, 100.0).0,
            |t| Some(one_cycle(t, 600.0, 400.0, p, 100.0).1),
            "OneCycle",
        );
        // Peak and end of cycle, exactly.
        let mut s = sched(
            json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.1, "cycle_max_lr": 1.0,
                "cycle_first_step_size": 10}}),
            0.5,
        );
        s.step_to(9);
        assert_eq!(s.get_lr(), 1.0);
        assert_eq!(s.get_momentum(), Some(0.8));
        s.step_to(19);
        close(s.get_lr(), 0.1, "end of the cycle");
        assert_eq!(s.get_momentum(), Some(0.9));
        // No decay by default: min lr and max momentum forever.
        s.step_to(20);
        assert_eq!(s.get_lr(), 0.1);
        assert_eq!(s.get_momentum(), Some(0.9));
        s.step_to(1_000_000);
        assert_eq!(s.get_lr(), 0.1);
        // Defaults and cycle_momentum false.
        let s = sched(
            json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.0, "cycle_max_lr": 1.0,
                "cycle_momentum": false}}),
            0.5,
        );
        assert_eq!(s.get_momentum(), None);
        let p = [0.0, 1.0, 0.0, 0.8, 0.9, 0.0];
        check(
            s,
            |t| one_cycle(t, 2000.0, 2000.0, p, 0.0).0,
            |_| None,
            "OneCycle defaults",
        );
        assert_eq!(
            Schedule::from_json(&json!({"type": "OneCycle",
                "params": {"cycle_min_lr": 0.0, "cycle_max_lr": 1.0}}))
            .unwrap(),
            Schedule::OneCycle {
                cycle_min_lr: 0.0,
                cycle_max_lr: 1.0,
                decay_lr_rate: 0.0,
                cycle_first_step_size: 2000,
                cycle_second_step_size: None,
                cycle_first_stair_count: 0,
                cycle_second_stair_count: None,
                decay_step_size: 0,
                cycle_momentum: true,
                cycle_min_mom: 0.8,
                cycle_max_mom: 0.9,
                decay_mom_rate: 0.0,
            }
        );
    }

    #[test]
    fn one_cycle_stairs() {
        // 10 up in 2 stairs of 5, 6 down in 3 stairs of 2.
        let mut s = sched(
            json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.0, "cycle_max_lr": 1.0,
                "cycle_first_step_size": 10, "cycle_second_step_size": 6,
                "cycle_first_stair_count": 2, "cycle_second_stair_count": 3}}),
            0.5,
        );
        let mut got = Vec::new();
        for _ in 0..16 {
            s.step();
            got.push(s.get_lr());
        }
        let t3 = 1.0 / 3.0;
        let want = [
            0.0,
            0.0,
            0.0,
            0.0,
            0.5,
            0.5,
            0.5,
            0.5,
            0.5,
            1.0, // b = 1..10
            2.0 * t3,
            2.0 * t3,
            t3,
            t3,
            0.0,
            0.0, // b = 11..16
        ];
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            close(*g, w, &format!("stair lr at t={i}"));
        }
    }

    #[test]
    fn lr_range_test() {
        for staircase in [false, true] {
            let s = sched(
                json!({"type": "LRRangeTest", "params": {"lr_range_test_min_lr": 0.0002,
                    "lr_range_test_step_size": 300, "lr_range_test_step_rate": 2.5,
                    "lr_range_test_staircase": staircase}}),
                0.5,
            );
            assert_eq!(s.get_lr(), 0.0002);
            let f = |t: i64| {
                let mut i = (t + 1) as f64 / 300.0;
                if staircase {
                    i = i.floor();
                }
                0.0002 * (1.0 + 2.5 * i)
            };
            check(s, f, |_| None, "LRRangeTest");
        }
        let s = Schedule::from_json(&json!({"type": "LRRangeTest", "params": {}})).unwrap();
        assert_eq!(
            s,
            Schedule::LRRangeTest {
                lr_range_test_min_lr: 1e-3,
                lr_range_test_step_size: 2000,
                lr_range_test_step_rate: 1.0,
                lr_range_test_staircase: false
            }
        );
        let mut s = LrScheduler::new(s, 0.5);
        s.step_to(1999);
        close(s.get_lr(), 0.002, "doubles after one step size");
    }

    #[test]
    fn state_round_trip() {
        let block = json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 100,
            "warmup_num_steps": 10}});
        let mut a = sched(block.clone(), 0.5);
        for _ in 0..37 {
            a.step();
        }
        let text = serde_json::to_string(&a.state_dict()).unwrap();
        assert_eq!(text, r#"{"last_batch_iteration":36}"#);
        let state: LrSchedulerState = serde_json::from_str(&text).unwrap();
        let mut b = sched(block, 0.5);
        assert_eq!(b.last_batch_iteration(), -1);
        b.load_state_dict(&state);
        assert_eq!(a, b);
        a.step();
        b.step();
        assert_eq!(a.get_lr(), b.get_lr());
        // The schedule itself serializes too.
        let s = a.schedule().clone();
        let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.name(), "WarmupDecayLR");
    }

    #[test]
    fn invalid_configs() {
        assert_eq!(
            err(json!({"type": "StepLR", "params": {}})),
            "scheduler.type: \"StepLR\" is not a DeepSpeed LR schedule (valid: WarmupLR, \
             WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest)"
        );
        assert_eq!(
            err(json!({"type": "warmuplr", "params": {}})),
            "scheduler.type: \"warmuplr\" is not a DeepSpeed LR schedule (valid: WarmupLR, \
             WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest)"
        );
        assert_eq!(err(json!({"params": {}})), "scheduler.type: missing");
        assert_eq!(
            err(json!("WarmupLR")),
            "scheduler: expected an object {\"type\": ..., \"params\": {...}}, got \"WarmupLR\""
        );
        assert_eq!(
            err(json!({"type": "WarmupLR"})),
            "scheduler.params: missing (an object of WarmupLR parameters, possibly {})"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": []})),
            "scheduler.params: expected an object, got []"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"warmup_num_steps": -3}})),
            "scheduler.params.warmup_num_steps: expected a non-negative integer, got -3"
        );
        // DeepSpeed takes max(2, n): 0 is accepted, and so are integral floats.
        let s = Schedule::from_json(
            &json!({"type": "WarmupLR", "params": {"warmup_num_steps": 0, "warmup_max_lr": 0.1}}),
        )
        .unwrap();
        // N = max(2, 0) = 2: log warmup reaches the peak at t = 1.
        assert_eq!(s.lr_at(0, 0.1), 0.0);
        assert_eq!(s.lr_at(1, 0.1), 0.1);
        assert!(
            Schedule::from_json(
                &json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 1e5}})
            )
            .is_ok()
        );
        assert_eq!(
            err(json!({"type": "WarmupDecayLR", "params": {"total_num_steps": 1.5}})),
            "scheduler.params.total_num_steps: expected a non-negative integer, got 1.5"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"warmup_num_steps": 10.5}})),
            "scheduler.params.warmup_num_steps: expected a non-negative integer, got 10.5"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"warmup_max_lr": "auto"}})),
            "scheduler.params.warmup_max_lr: expected a number, got \"auto\" (\"auto\" must be \
             resolved before the config reaches DeepSpeed, as the Hugging Face integration does)"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"warmup_min_lr": [0.0, 0.1]}})),
            "scheduler.params.warmup_min_lr: per-parameter-group lists are not supported yet, \
             give one number (got [0.0,0.1])"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"warmup_type": 1}})),
            "scheduler.params.warmup_type: expected \"log\" or \"linear\", got 1"
        );
        assert_eq!(
            err(json!({"type": "WarmupLR", "params": {"total_num_steps": 10}})),
            "scheduler.params.total_num_steps: unknown parameter for WarmupLR (valid: \
             warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type)"
        );
        assert_eq!(
            err(json!({"type": "WarmupDecayLR", "params": {}})),
            "scheduler.params.total_num_steps: required for WarmupDecayLR"
        );
        assert_eq!(
            err(json!({"type": "WarmupCosineLR", "params": {"total_num_steps": -1}})),
            "scheduler.params.total_num_steps: expected a non-negative integer, got -1"
        );
        assert_eq!(
            err(json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.1}})),
            "scheduler.params.cycle_max_lr: required for OneCycle"
        );
        assert_eq!(
            err(json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.1,
                "cycle_max_lr": 1, "cycle_momentum": "yes"}})),
            "scheduler.params.cycle_momentum: expected true or false, got \"yes\""
        );
        assert_eq!(
            err(json!({"type": "OneCycle", "params": {"cycle_min_lr": 0.1,
                "cycle_max_lr": 1, "cycle_first_step_size": 0}})),
            "scheduler.params.cycle_first_step_size: expected a positive integer, got 0"
        );
        assert_eq!(
            err(json!({"type": "LRRangeTest", "params": {"lr_range_test_step_size": 0}})),
            "scheduler.params.lr_range_test_step_size: expected a positive integer, got 0"
        );
        // Errors are configuration errors.
        let e = Schedule::from_json(&json!({"type": "X", "params": {}})).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidConfig);
        // Unknown keys next to type/params are ignored, as DeepSpeed does.
        assert!(
            Schedule::from_json(&json!({"type": "WarmupLR", "params": {}, "comment": 1})).is_ok()
        );
    }
}
