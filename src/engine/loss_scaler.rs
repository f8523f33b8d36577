//! Loss scaling for fp16 training: DeepSpeed's static and dynamic loss scalers.
//!
//! fp16 gradients underflow when the loss is small, so the loss is multiplied by a *loss scale*
//! before the backward pass and the gradients are divided by it again before the optimizer
//! step. A [`LossScaler`] owns that scale:
//!
//! * [`LossScaler::Static`] keeps one scale for the whole run (`fp16.loss_scale > 0`, or 1.0
//!   when fp16 is off: bf16 and fp32 training do not scale).
//! * [`LossScaler::Dynamic`] (`fp16.loss_scale == 0`, the default) follows DeepSpeed's
//!   `DynamicLossScaler` (`deepspeed/runtime/fp16/loss_scaler.py`, the scaler ZeRO stages 1, 2
//!   and 3 use) step for step: it halves the scale when gradients overflow (after
//!   `hysteresis` tolerated overflows), and doubles it after `loss_scale_window` clean steps.
//!   [`DynamicLossScaler`] describes the exact rule.
//!
//! The engine calls [`LossScaler::update`] once per optimizer step, at the gradient
//! accumulation boundary, with whether any gradient held an inf or NaN (reduced over every
//! rank). The returned [`UpdateOutcome`] says whether the step must be skipped and which scale
//! the next step uses.
//!
//! ```
//! use deepspeed_rs::engine::loss_scaler::{LossScaler, LossScalerConfig};
//! use serde_json::json;
//!
//! let config = LossScalerConfig::from_json(&json!({
//!     "enabled": true,
//!     "loss_scale_window": 3,
//!     "hysteresis": 1
//! }))
//! .unwrap();
//! let mut scaler = LossScaler::from_config(&config).unwrap();
//! assert_eq!(scaler.scale(), 65536.0); // 2^initial_scale_power
//!
//! let outcome = scaler.update(true).unwrap(); // overflow: skip the step, halve the scale
//! assert!(outcome.skipped);
//! assert_eq!(outcome.scale, 32768.0);
//!
//! for _ in 0..3 {
//!     scaler.update(false).unwrap(); // three clean steps: the scale doubles again
//! }
//! assert_eq!(scaler.scale(), 65536.0);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Default of `fp16.initial_scale_power`: the dynamic scaler starts at 2^16.
pub const DEFAULT_INITIAL_SCALE_POWER: u32 = 16;
/// Default of `fp16.loss_scale_window`: clean steps before the scale doubles.
pub const DEFAULT_LOSS_SCALE_WINDOW: u64 = 1000;
/// Default of `fp16.hysteresis`: overflows tolerated before the scale halves.
pub const DEFAULT_HYSTERESIS: u32 = 2;
/// Default of `fp16.min_loss_scale`: the scale never goes below it.
pub const DEFAULT_MIN_LOSS_SCALE: f64 = 1.0;
/// The factor the dynamic scale is divided by on overflow and multiplied by on growth.
/// DeepSpeed's configuration cannot change it.
pub const SCALE_FACTOR: f64 = 2.0;
/// The largest accepted `fp16.initial_scale_power` (2^127 is the largest power of two an `f32`
/// holds).
pub const MAX_INITIAL_SCALE_POWER: u32 = 127;

/// The loss-scaling settings of a ds_config `fp16` block.
///
/// Keys, defaults and meanings are DeepSpeed's:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `enabled` | `false` | fp16 training; when false the scale is a static 1.0 |
/// | `loss_scale` | `0` | 0 = dynamic scaling, otherwise a static scale |
/// | `initial_scale_power` | `16` | the dynamic scaler starts at 2^p |
/// | `loss_scale_window` | `1000` | clean steps before the scale doubles |
/// | `hysteresis` | `2` | overflows tolerated before the scale halves ("delayed shift") |
/// | `consecutive_hysteresis` | `false` | refill the hysteresis on every clean step |
/// | `min_loss_scale` | `1` | the scale never goes below it |
/// | `raise_error_at_min_scale` | `true` | see below |
///
/// `raise_error_at_min_scale` is **not** read by DeepSpeed from the config (its
/// `DynamicLossScaler` always raises at the minimum there); deepspeed_rs accepts it as an
/// extension, since users set it (Lightning's DeepSpeed examples do) to keep training
/// at the minimum scale instead of stopping.
///
/// Other keys of the block (`auto_cast`, `fp16_master_weights_and_grads`, ...) are not
/// loss-scaling settings and are ignored here, as DeepSpeed's `fp16` parser ignores unknown
/// keys. Integer keys accept JSON numbers with an integral value (`1e3`); the string `"auto"`
/// (which Hugging Face replaces before DeepSpeed sees the config) is rejected like any other
/// value of the wrong type.
///
/// DeepSpeed releases before PR #6976 used the ZeRO scaler's own defaults (2^32, hysteresis 1)
/// when none of the dynamic keys was given; this parser always uses the documented defaults
/// above, as DeepSpeed does since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScalerConfig {
    /// `fp16.enabled`.
    pub enabled: bool,
    /// `fp16.loss_scale`: 0 for dynamic scaling, otherwise the static scale.
    pub loss_scale: f32,
    /// `fp16.initial_scale_power`: the dynamic scaler starts at `2^initial_scale_power`.
    pub initial_scale_power: u32,
    /// `fp16.loss_scale_window`: clean steps (at least 1) before the dynamic scale doubles.
    pub loss_scale_window: u64,
    /// `fp16.hysteresis`: overflows (at least 1) that must happen before the dynamic scale
    /// halves; DeepSpeed's `delayed_shift`.
    pub hysteresis: u32,
    /// `fp16.consecutive_hysteresis`: refill the hysteresis on every clean step instead of
    /// only when the scale grows.
    pub consecutive_hysteresis: bool,
    /// `fp16.min_loss_scale`: the positive floor of the dynamic scale.
    pub min_loss_scale: f64,
    /// Whether an overflow at the minimum scale (with the hysteresis used up) is an error
    /// (`fp16.raise_error_at_min_scale`, a deepspeed_rs extension; DeepSpeed always errors).
    pub raise_error_at_min_scale: bool,
}

impl Default for LossScalerConfig {
    /// DeepSpeed's defaults, with fp16 disabled.
    fn default() -> Self {
        LossScalerConfig {
            enabled: false,
            loss_scale: 0.0,
            initial_scale_power: DEFAULT_INITIAL_SCALE_POWER,
            loss_scale_window: DEFAULT_LOSS_SCALE_WINDOW,
            hysteresis: DEFAULT_HYSTERESIS,
            consecutive_hysteresis: false,
            min_loss_scale: DEFAULT_MIN_LOSS_SCALE,
            raise_error_at_min_scale: true,
        }
    }
}

impl LossScalerConfig {
    /// Parses the ds_config `fp16` block (the value of the `"fp16"` key, not the whole
    /// config). `null` (no block) gives the defaults, with fp16 disabled.
    ///
    /// Every error is an [`Error::Config`] naming the key, for example
    /// `fp16.loss_scale_window: expected a positive integer, got 0`.
    pub fn from_json(fp16: &Value) -> Result<Self> {
        let obj = match fp16 {
            Value::Null => return Ok(Self::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(Error::config(format!(
                    "fp16: expected an object, got {}",
                    describe(other)
                )));
            }
        };
        let d = Self::default();
        let loss_scale = match obj.get("loss_scale") {
            None => d.loss_scale,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 && x <= f32::MAX as f64 => x as f32,
                _ => return Err(expected("loss_scale", "a non-negative finite number", v)),
            },
        };
        let initial_scale_power = match obj.get("initial_scale_power") {
            None => d.initial_scale_power,
            Some(v) => match integral(v) {
                Some(p) if (0..=MAX_INITIAL_SCALE_POWER as i128).contains(&p) => p as u32,
                _ => {
                    return Err(expected(
                        "initial_scale_power",
                        &format!("an integer from 0 to {MAX_INITIAL_SCALE_POWER}"),
                        v,
                    ));
                }
            },
        };
        let loss_scale_window = match obj.get("loss_scale_window") {
            None => d.loss_scale_window,
            Some(v) => match integral(v) {
                Some(n) if n >= 1 && n <= u64::MAX as i128 => n as u64,
                _ => return Err(expected("loss_scale_window", "a positive integer", v)),
            },
        };
        let hysteresis = match obj.get("hysteresis") {
            None => d.hysteresis,
            Some(v) => match integral(v) {
                Some(n) if n >= 1 && n <= u32::MAX as i128 => n as u32,
                _ => return Err(expected("hysteresis", "a positive integer", v)),
            },
        };
        let min_loss_scale = match obj.get("min_loss_scale") {
            None => d.min_loss_scale,
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 && x <= f32::MAX as f64 => x,
                _ => return Err(expected("min_loss_scale", "a positive finite number", v)),
            },
        };
        Ok(LossScalerConfig {
            enabled: boolean(obj, "enabled", d.enabled)?,
            loss_scale,
            initial_scale_power,
            loss_scale_window,
            hysteresis,
            consecutive_hysteresis: boolean(
                obj,
                "consecutive_hysteresis",
                d.consecutive_hysteresis,
            )?,
            min_loss_scale,
            raise_error_at_min_scale: boolean(
                obj,
                "raise_error_at_min_scale",
                d.raise_error_at_min_scale,
            )?,
        })
    }

    /// Whether this configuration selects dynamic scaling: fp16 enabled and `loss_scale` 0.
    pub fn is_dynamic(&self) -> bool {
        self.enabled && self.loss_scale == 0.0
    }

    /// The dynamic scaler's starting scale, `2^initial_scale_power`.
    pub fn initial_scale(&self) -> f64 {
        2f64.powi(self.initial_scale_power as i32)
    }
}

/// A JSON value as an error message shows it (`0`, `2.5`, `"auto"`, `null`).
fn describe(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".to_string())
}

fn expected(key: &str, what: &str, got: &Value) -> Error {
    Error::config(format!(
        "fp16.{key}: expected {what}, got {}",
        describe(got)
    ))
}

/// A JSON number with an integral value (`3`, `-1`, `1e3`), else `None`.
fn integral(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = v.as_u64() {
        return Some(u as i128);
    }
    let x = v.as_f64()?;
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 1e30).then_some(x as i128)
}

fn boolean(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match obj.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(expected(key, "true or false", v)),
    }
}

/// What one [`LossScaler::update`] did to the scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleChange {
    /// The scale stayed as it was (a clean step before the window is full, or any step of a
    /// static scaler).
    Unchanged,
    /// An overflow with the hysteresis used up divided the scale by the scale factor
    /// (clamped to the minimum).
    Decreased,
    /// An overflow at the minimum scale, with `raise_error_at_min_scale` off: the scale stays
    /// at the minimum.
    HeldAtMinimum,
    /// An overflow was absorbed by the hysteresis, which went down to `remaining`; the scale
    /// stayed.
    HysteresisDecremented {
        /// The hysteresis left after this overflow.
        remaining: u32,
    },
    /// `loss_scale_window` clean steps since the last overflow multiplied the scale by the
    /// scale factor.
    Increased,
}

/// The result of one [`LossScaler::update`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    /// Whether the optimizer step must be skipped: true exactly when the gradients
    /// overflowed (the gradients are then discarded and the LR schedule is not stepped).
    pub skipped: bool,
    /// The scale the step that was just checked used.
    pub previous_scale: f32,
    /// The scale the next step uses.
    pub scale: f32,
    /// What happened to the scale.
    pub change: ScaleChange,
}

/// DeepSpeed's `DynamicLossScaler`, update for update.
///
/// State (DeepSpeed's names): `cur_scale` (starts at the initial scale), `cur_iter` (0),
/// `last_overflow_iter` (-1), `scale_factor` (2), `scale_window`, `min_scale`,
/// `delayed_shift` (the configured hysteresis), `cur_hysteresis` (starts at
/// `delayed_shift`), `consecutive_hysteresis` and `raise_error_at_min_scale`.
///
/// [`update`](Self::update)`(overflow)`, once per optimizer step:
///
/// * **Overflow.** If `delayed_shift == 1` or `cur_hysteresis == 1` (the hysteresis is used
///   up): when `cur_scale == min_scale` and `raise_error_at_min_scale` is set, this is an
///   error and *nothing* changes (not even `cur_iter`); otherwise
///   `cur_scale = max(cur_scale / scale_factor, min_scale)`. If the hysteresis is not used up,
///   `cur_hysteresis -= 1` and the scale stays. Either way `last_overflow_iter = cur_iter`.
/// * **No overflow.** With `consecutive_hysteresis`, `cur_hysteresis = delayed_shift`. Then,
///   if `(cur_iter - last_overflow_iter) % scale_window == 0`, the hysteresis is refilled
///   (`cur_hysteresis = delayed_shift`) and `cur_scale *= scale_factor`. There is no upper
///   bound.
/// * Finally `cur_iter += 1`.
///
/// So the scale grows after every `scale_window` consecutive clean steps (counted from
/// iteration 0 at the start, since `last_overflow_iter` starts at -1), the hysteresis is
/// refilled only on growth unless `consecutive_hysteresis` is set, and with hysteresis 1
/// every overflow halves the scale.
///
/// The scale is kept as an `f64` (a Python float in DeepSpeed), so long clean runs cannot
/// push it to infinity and strand it there; [`scale`](Self::scale) gives it as the `f32` the
/// loss is multiplied by.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicLossScaler {
    state: DynamicScalerState,
}

/// The complete state of a [`DynamicLossScaler`], as saved in checkpoints (DeepSpeed pickles
/// the whole scaler object; these are its fields, with its names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicScalerState {
    /// The current scale.
    pub cur_scale: f64,
    /// Updates done so far.
    pub cur_iter: u64,
    /// The `cur_iter` of the last overflow, -1 before the first.
    pub last_overflow_iter: i64,
    /// Divisor on overflow and multiplier on growth (2).
    pub scale_factor: f64,
    /// Clean steps before growth.
    pub scale_window: u64,
    /// The floor of the scale.
    pub min_scale: f64,
    /// The configured hysteresis.
    pub delayed_shift: u32,
    /// The hysteresis left, from 1 to `delayed_shift`.
    pub cur_hysteresis: u32,
    /// Refill the hysteresis on every clean step.
    pub consecutive_hysteresis: bool,
    /// Error on an overflow at the minimum scale.
    pub raise_error_at_min_scale: bool,
}

impl DynamicScalerState {
    /// Checks the invariants the update rule relies on; errors are [`Error::Format`].
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Format(format!("dynamic loss scaler state: {what}")));
        if !(self.cur_scale.is_finite() && self.cur_scale > 0.0) {
            return bad(format!(
                "cur_scale must be positive and finite, got {}",
                self.cur_scale
            ));
        }
        if !(self.scale_factor.is_finite() && self.scale_factor > 1.0) {
            return bad(format!(
                "scale_factor must be finite and greater than 1, got {}",
                self.scale_factor
            ));
        }
        if self.scale_window == 0 {
            return bad("scale_window must be at least 1, got 0".to_string());
        }
        if !(self.min_scale.is_finite() && self.min_scale > 0.0) {
            return bad(format!(
                "min_scale must be positive and finite, got {}",
                self.min_scale
            ));
        }
        if self.delayed_shift == 0 {
            return bad("delayed_shift must be at least 1, got 0".to_string());
        }
        if self.cur_hysteresis == 0 || self.cur_hysteresis > self.delayed_shift {
            return bad(format!(
                "cur_hysteresis must be from 1 to delayed_shift ({}), got {}",
                self.delayed_shift, self.cur_hysteresis
            ));
        }
        if self.cur_iter > i64::MAX as u64 {
            return bad(format!("cur_iter is too large: {}", self.cur_iter));
        }
        if self.last_overflow_iter < -1 || self.last_overflow_iter >= self.cur_iter as i64 {
            return bad(format!(
                "last_overflow_iter must be from -1 to cur_iter - 1 ({}), got {}",
                self.cur_iter as i64 - 1,
                self.last_overflow_iter
            ));
        }
        Ok(())
    }
}

impl DynamicLossScaler {
    /// A scaler at iteration 0 with scale `init_scale`, growth after `scale_window` clean
    /// steps, floor `min_scale`, `hysteresis` (DeepSpeed's `delayed_shift`) tolerated
    /// overflows and the scale factor 2. Errors ([`Error::InvalidArgument`]) for a
    /// non-positive or non-finite scale, a zero window or a zero hysteresis.
    pub fn new(
        init_scale: f64,
        scale_window: u64,
        min_scale: f64,
        hysteresis: u32,
        consecutive_hysteresis: bool,
        raise_error_at_min_scale: bool,
    ) -> Result<Self> {
        let state = DynamicScalerState {
            cur_scale: init_scale,
            cur_iter: 0,
            last_overflow_iter: -1,
            scale_factor: SCALE_FACTOR,
            scale_window,
            min_scale,
            delayed_shift: hysteresis,
            cur_hysteresis: hysteresis,
            consecutive_hysteresis,
            raise_error_at_min_scale,
        };
        state
            .validate()
            .map_err(|e| Error::invalid(e.to_string()))?;
        Ok(DynamicLossScaler { state })
    }

    /// The scaler a [`LossScalerConfig`] describes (its dynamic settings; `enabled` and
    /// `loss_scale` are not consulted).
    pub fn from_config(config: &LossScalerConfig) -> Result<Self> {
        Self::new(
            config.initial_scale(),
            config.loss_scale_window,
            config.min_loss_scale,
            config.hysteresis,
            config.consecutive_hysteresis,
            config.raise_error_at_min_scale,
        )
    }

    /// The current scale as the `f32` the loss is multiplied by (infinite only if the exact
    /// scale has grown past `f32::MAX`).
    pub fn scale(&self) -> f32 {
        self.state.cur_scale as f32
    }

    /// The current scale, exactly (DeepSpeed's `cur_scale`).
    pub fn cur_scale(&self) -> f64 {
        self.state.cur_scale
    }

    /// Updates done so far (DeepSpeed's `cur_iter`).
    pub fn cur_iter(&self) -> u64 {
        self.state.cur_iter
    }

    /// The iteration of the last overflow, -1 before the first.
    pub fn last_overflow_iter(&self) -> i64 {
        self.state.last_overflow_iter
    }

    /// The hysteresis left: overflows, counting the one that reduces the scale, before the
    /// scale is divided.
    pub fn cur_hysteresis(&self) -> u32 {
        self.state.cur_hysteresis
    }

    /// The configured hysteresis (DeepSpeed's `delayed_shift`).
    pub fn delayed_shift(&self) -> u32 {
        self.state.delayed_shift
    }

    /// Clean steps before the scale grows.
    pub fn scale_window(&self) -> u64 {
        self.state.scale_window
    }

    /// The floor of the scale.
    pub fn min_scale(&self) -> f64 {
        self.state.min_scale
    }

    /// Whether clean steps refill the hysteresis.
    pub fn consecutive_hysteresis(&self) -> bool {
        self.state.consecutive_hysteresis
    }

    /// Whether an overflow at the minimum scale is an error.
    pub fn raise_error_at_min_scale(&self) -> bool {
        self.state.raise_error_at_min_scale
    }

    /// Turns the error at the minimum scale on or off (what users do in DeepSpeed by setting
    /// `optimizer.loss_scaler.raise_error_at_min_scale`).
    pub fn set_raise_error_at_min_scale(&mut self, raise: bool) {
        self.state.raise_error_at_min_scale = raise;
    }

    /// Applies one optimizer step's overflow flag, by the rule in the type's documentation.
    ///
    /// Errors with [`Error::InvalidState`] when the gradients overflow with the hysteresis
    /// used up, the scale already at the minimum and `raise_error_at_min_scale` set; the
    /// scaler is then left exactly as it was.
    pub fn update(&mut self, overflow: bool) -> Result<UpdateOutcome> {
        let s = &mut self.state;
        let previous = s.cur_scale;
        let change = if overflow {
            let change = if s.delayed_shift == 1 || s.cur_hysteresis == 1 {
                if s.cur_scale == s.min_scale && s.raise_error_at_min_scale {
                    return Err(Error::InvalidState(format!(
                        "Current loss scale already at minimum ({}) - cannot decrease scale \
                         anymore: the gradients overflowed at iteration {} with the \
                         hysteresis used up. Lower fp16.min_loss_scale, look for inf/NaN in \
                         the model or data, or set fp16.raise_error_at_min_scale to false to \
                         keep skipping steps at the minimum",
                        s.min_scale, s.cur_iter
                    )));
                }
                let next = (s.cur_scale / s.scale_factor).max(s.min_scale);
                let change = if next == s.cur_scale {
                    ScaleChange::HeldAtMinimum
                } else {
                    ScaleChange::Decreased
                };
                s.cur_scale = next;
                change
            } else {
                s.cur_hysteresis -= 1;
                ScaleChange::HysteresisDecremented {
                    remaining: s.cur_hysteresis,
                }
            };
            s.last_overflow_iter = s.cur_iter as i64;
            change
        } else {
            if s.consecutive_hysteresis {
                s.cur_hysteresis = s.delayed_shift;
            }
            // cur_iter > last_overflow_iter always, so the difference is positive.
            let since = (s.cur_iter as i64 - s.last_overflow_iter) as u64;
            if since % s.scale_window == 0 {
                if !s.consecutive_hysteresis {
                    s.cur_hysteresis = s.delayed_shift;
                }
                s.cur_scale *= s.scale_factor;
                ScaleChange::Increased
            } else {
                ScaleChange::Unchanged
            }
        };
        s.cur_iter += 1;
        Ok(UpdateOutcome {
            skipped: overflow,
            previous_scale: previous as f32,
            scale: s.cur_scale as f32,
            change,
        })
    }

    /// The complete state, for a checkpoint.
    pub fn state_dict(&self) -> DynamicScalerState {
        self.state.clone()
    }

    /// Replaces the whole state (settings included, as DeepSpeed restores the pickled scaler)
    /// with a checkpoint's. Errors with [`Error::Format`], leaving the scaler unchanged, when
    /// the state breaks an invariant (a zero window, a hysteresis outside 1 to
    /// `delayed_shift`, a non-positive scale, an overflow iteration not before `cur_iter`).
    pub fn load_state_dict(&mut self, state: DynamicScalerState) -> Result<()> {
        state.validate()?;
        self.state = state;
        Ok(())
    }
}

/// A checkpointed [`LossScaler`]: `{"type": "static", "scale": ...}` or
/// `{"type": "dynamic", "cur_scale": ..., ...}` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LossScalerState {
    /// A static scaler and its scale.
    Static {
        /// The scale.
        scale: f32,
    },
    /// A dynamic scaler's complete state.
    Dynamic(DynamicScalerState),
}

/// The loss scaler of a training engine: DeepSpeed's `CreateLossScaler`.
///
/// * fp16 with `loss_scale == 0`: [`Dynamic`](Self::Dynamic) (see [`DynamicLossScaler`]).
/// * fp16 with `loss_scale > 0`: [`Static`](Self::Static) with that scale.
/// * fp16 disabled (bf16 or fp32 training): `Static(1.0)`, which does not scale.
#[derive(Debug, Clone, PartialEq)]
pub enum LossScaler {
    /// A scale that never changes; overflowing steps are still skipped.
    Static(f32),
    /// DeepSpeed's dynamic loss scaling.
    Dynamic(DynamicLossScaler),
}

impl LossScaler {
    /// The scaler a parsed `fp16` block selects (see the type's documentation).
    pub fn from_config(config: &LossScalerConfig) -> Result<Self> {
        if !config.enabled {
            Ok(LossScaler::Static(1.0))
        } else if config.loss_scale > 0.0 {
            Ok(LossScaler::Static(config.loss_scale))
        } else {
            Ok(LossScaler::Dynamic(DynamicLossScaler::from_config(config)?))
        }
    }

    /// The scale to multiply the next step's loss by (after dividing it by the gradient
    /// accumulation steps).
    pub fn scale(&self) -> f32 {
        match self {
            LossScaler::Static(s) => *s,
            LossScaler::Dynamic(d) => d.scale(),
        }
    }

    /// Whether the scale is dynamic.
    pub fn is_dynamic(&self) -> bool {
        matches!(self, LossScaler::Dynamic(_))
    }

    /// Applies one optimizer step's overflow flag. The step is skipped exactly when it
    /// overflowed; a static scale never changes, a dynamic one follows
    /// [`DynamicLossScaler::update`] (and its error at the minimum scale).
    pub fn update(&mut self, overflow: bool) -> Result<UpdateOutcome> {
        match self {
            LossScaler::Static(s) => Ok(UpdateOutcome {
                skipped: overflow,
                previous_scale: *s,
                scale: *s,
                change: ScaleChange::Unchanged,
            }),
            LossScaler::Dynamic(d) => d.update(overflow),
        }
    }

    /// The scaler's state, for a checkpoint (serialize it with serde).
    pub fn state_dict(&self) -> LossScalerState {
        match self {
            LossScaler::Static(s) => LossScalerState::Static { scale: *s },
            LossScaler::Dynamic(d) => LossScalerState::Dynamic(d.state_dict()),
        }
    }

    /// Restores a checkpoint's state, which replaces the scaler entirely (a static checkpoint
    /// makes it static, a dynamic one dynamic, as DeepSpeed restores the pickled scaler).
    /// Errors with [`Error::Format`], leaving the scaler unchanged, for an invalid state.
    pub fn load_state_dict(&mut self, state: LossScalerState) -> Result<()> {
        *self = match state {
            LossScalerState::Static { scale } => {
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(Error::Format(format!(
                        "static loss scaler state: scale must be positive and finite, got {scale}"
                    )));
                }
                LossScaler::Static(scale)
            }
            LossScalerState::Dynamic(d) => {
                d.validate()?;
                LossScaler::Dynamic(DynamicLossScaler { state: d })
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// SplitMix64: a small deterministic generator for the random overflow sequences.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn chance(&mut self, p: f64) -> bool {
            ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
        }
    }

    /// An independent re-statement of the documented rule, in terms of a count of clean steps
    /// since the last overflow and a hysteresis "budget":
    /// - overflow: if the budget is 1, halve the scale (floored at the minimum; at the
    ///   minimum with `raise` it is an error and nothing changes), else spend one unit of
    ///   budget; the clean run restarts from 0.
    /// - clean: the run grows by 1; with `consecutive` the budget refills; when the run is a
    ///   multiple of the window the scale doubles and the budget refills.
    struct Reference {
        scale: f64,
        min: f64,
        window: u64,
        hysteresis: u32,
        consecutive: bool,
        raise: bool,
        clean_run: u64,
        budget: u32,
    }

    impl Reference {
        /// `Ok(new scale)` or `Err(())` at the minimum.
        fn step(&mut self, overflow: bool) -> std::result::Result<f64, ()> {
            if overflow {
                if self.budget == 1 {
                    if self.raise && self.scale == self.min {
                        return Err(());
                    }
                    self.scale = f64::max(self.scale / 2.0, self.min);
                } else {
                    self.budget -= 1;
                }
                self.clean_run = 0;
            } else {
                self.clean_run += 1;
                if self.consecutive {
                    self.budget = self.hysteresis;
                }
                if self.clean_run % self.window == 0 {
                    self.scale *= 2.0;
                    self.budget = self.hysteresis;
                }
            }
            Ok(self.scale)
        }
    }

    fn dynamic(
        init: f64,
        window: u64,
        min: f64,
        hysteresis: u32,
        consecutive: bool,
        raise: bool,
    ) -> DynamicLossScaler {
        DynamicLossScaler::new(init, window, min, hysteresis, consecutive, raise).unwrap()
    }

    fn parse_err(block: Value) -> String {
        LossScalerConfig::from_json(&block).unwrap_err().to_string()
    }

    #[test]
    fn matches_reference_over_random_sequences() {
        let mut grew = 0u64;
        let mut decreased = 0u64;
        let mut errors = 0u64;
        let mut held = 0u64;
        let mut hysteresis_used = 0u64;
        for &hysteresis in &[1u32, 2, 4] {
            for &consecutive in &[false, true] {
                for &window in &[3u64, 10] {
                    for &(init_power, min) in &[(16i32, 1.0f64), (4, 0.25), (5, 3.0)] {
                        for &raise in &[true, false] {
                            for &p in &[0.05f64, 0.3, 0.6] {
                                for seed in 0..3u64 {
                                    let init = 2f64.powi(init_power);
                                    let mut s =
                                        dynamic(init, window, min, hysteresis, consecutive, raise);
                                    let mut r = Reference {
                                        scale: init,
                                        min,
                                        window,
                                        hysteresis,
                                        consecutive,
                                        raise,
                                        clean_run: 0,
                                        budget: hysteresis,
                                    };
                                    let mut rng = Rng(seed * 7919 + window + hysteresis as u64);
                                    for i in 0..4000 {
                                        // Bursts of overflows now and then reach the minimum.
                                        let overflow = if i % 500 < 20 {
                                            rng.chance(0.9)
                                        } else {
                                            rng.chance(p)
                                        };
                                        let before = s.clone();
                                        let ctx = format!(
                                            "h={hysteresis} c={consecutive} w={window} \
                                             init=2^{init_power} min={min} raise={raise} \
                                             p={p} seed={seed} i={i}"
                                        );
                                        match (s.update(overflow), r.step(overflow)) {
                                            (Ok(out), Ok(scale)) => {
                                                assert_eq!(s.cur_scale(), scale, "{ctx}");
                                                assert_eq!(out.scale, scale as f32, "{ctx}");
                                                assert_eq!(out.skipped, overflow, "{ctx}");
                                                assert_eq!(
                                                    out.previous_scale,
                                                    before.scale(),
                                                    "{ctx}"
                                                );
                                                assert_eq!(s.cur_hysteresis(), r.budget, "{ctx}");
                                                match out.change {
                                                    ScaleChange::Increased => grew += 1,
                                                    ScaleChange::Decreased => decreased += 1,
                                                    ScaleChange::HeldAtMinimum => held += 1,
                                                    ScaleChange::HysteresisDecremented {
                                                        ..
                                                    } => hysteresis_used += 1,
                                                    ScaleChange::Unchanged => {}
                                                }
                                            }
                                            (Err(e), Err(())) => {
                                                errors += 1;
                                                assert_eq!(
                                                    e.kind(),
                                                    crate::ErrorKind::InvalidState
                                                );
                                                assert_eq!(s, before, "{ctx}: state changed");
                                            }
                                            (a, b) => {
                                                panic!("{ctx}: scaler {a:?}, reference {b:?}")
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(grew > 1000 && decreased > 1000, "{grew} {decreased}");
        assert!(errors > 100 && held > 100 && hysteresis_used > 1000);
    }

    #[test]
    fn exact_scales_hysteresis_one() {
        let mut s = dynamic(65536.0, 3, 1.0, 1, false, true);
        // The first growth comes after `window` clean steps counted from iteration 0.
        assert_eq!(s.update(false).unwrap().change, ScaleChange::Unchanged);
        assert_eq!(s.update(false).unwrap().change, ScaleChange::Unchanged);
        let out = s.update(false).unwrap();
        assert_eq!(
            (out.scale, out.change, out.skipped),
            (131072.0, ScaleChange::Increased, false)
        );
        // Overflow: skip and halve.
        let out = s.update(true).unwrap();
        assert_eq!(out.previous_scale, 131072.0);
        assert_eq!(
            (out.scale, out.change, out.skipped),
            (65536.0, ScaleChange::Decreased, true)
        );
        assert_eq!(s.last_overflow_iter(), 3);
        assert_eq!(s.update(true).unwrap().scale, 32768.0);
        // `window` clean steps after the last overflow: growth on the third.
        assert_eq!(s.update(false).unwrap().scale, 32768.0);
        assert_eq!(s.update(false).unwrap().scale, 32768.0);
        assert_eq!(s.update(false).unwrap().scale, 65536.0);
        assert_eq!(s.update(false).unwrap().scale, 65536.0);
        assert_eq!(s.update(false).unwrap().scale, 65536.0);
        assert_eq!(s.update(false).unwrap().scale, 131072.0);
        assert_eq!(s.cur_iter(), 11);
    }

    #[test]
    fn exact_scales_with_hysteresis() {
        // Hysteresis 2, refilled only on growth.
        let mut s = dynamic(65536.0, 10, 1.0, 2, false, true);
        let out = s.update(true).unwrap();
        assert!(out.skipped);
        assert_eq!(out.scale, 65536.0);
        assert_eq!(
            out.change,
            ScaleChange::HysteresisDecremented { remaining: 1 }
        );
        assert_eq!(s.update(true).unwrap().scale, 32768.0);
        // A clean step does not refill it: the next overflow halves again.
        s.update(false).unwrap();
        assert_eq!(s.cur_hysteresis(), 1);
        assert_eq!(s.update(true).unwrap().scale, 16384.0);
        // Growth refills it.
        for _ in 0..10 {
            s.update(false).unwrap();
        }
        assert_eq!(s.cur_scale(), 32768.0);
        assert_eq!(s.cur_hysteresis(), 2);
        assert_eq!(s.update(true).unwrap().scale, 32768.0);
        assert_eq!(s.update(true).unwrap().scale, 16384.0);

        // With consecutive hysteresis every clean step refills it.
        let mut s = dynamic(65536.0, 10, 1.0, 2, true, true);
        assert_eq!(s.update(true).unwrap().scale, 65536.0);
        s.update(false).unwrap();
        assert_eq!(s.cur_hysteresis(), 2);
        assert_eq!(s.update(true).unwrap().scale, 65536.0);
        assert_eq!(s.update(true).unwrap().scale, 32768.0);

        // Hysteresis 4: three overflows absorbed, the fourth halves.
        let mut s = dynamic(1024.0, 10, 1.0, 4, false, true);
        for remaining in [3, 2, 1] {
            let out = s.update(true).unwrap();
            assert_eq!(out.change, ScaleChange::HysteresisDecremented { remaining });
            assert_eq!(out.scale, 1024.0);
        }
        assert_eq!(s.update(true).unwrap().scale, 512.0);
        assert_eq!(s.update(true).unwrap().scale, 256.0);
    }

    #[test]
    fn minimum_scale() {
        let mut s = dynamic(4.0, 1000, 1.0, 1, false, true);
        assert_eq!(s.update(true).unwrap().scale, 2.0);
        assert_eq!(s.update(true).unwrap().scale, 1.0);
        let before = s.clone();
        let err = s.update(true).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidState);
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "Current loss scale already at minimum (1) - cannot decrease scale anymore"
            ),
            "{msg}"
        );
        assert!(msg.contains("iteration 2"), "{msg}");
        assert_eq!(s, before);
        // Clean steps still work afterwards.
        assert_eq!(s.update(false).unwrap().scale, 1.0);

        // Without the error the scale stays at the minimum and the step is skipped.
        let mut s = dynamic(2.0, 1000, 1.0, 1, false, false);
        assert_eq!(s.update(true).unwrap().scale, 1.0);
        let out = s.update(true).unwrap();
        assert_eq!(
            (out.skipped, out.scale, out.change),
            (true, 1.0, ScaleChange::HeldAtMinimum)
        );
        assert_eq!(s.last_overflow_iter(), 1);
        s.set_raise_error_at_min_scale(true);
        assert!(s.update(true).is_err());

        // A minimum that is not a power of two: the halving is clamped to it.
        let mut s = dynamic(8.0, 1000, 3.0, 1, false, true);
        assert_eq!(s.update(true).unwrap().scale, 4.0);
        let out = s.update(true).unwrap();
        assert_eq!((out.scale, out.change), (3.0, ScaleChange::Decreased));
        assert!(s.update(true).is_err());

        // With hysteresis left, an overflow at the minimum only spends hysteresis.
        let mut s = dynamic(1.0, 1000, 1.0, 2, false, true);
        assert_eq!(
            s.update(true).unwrap().change,
            ScaleChange::HysteresisDecremented { remaining: 1 }
        );
        assert!(s.update(true).is_err());
    }

    #[test]
    fn static_scale_never_changes() {
        let mut s = LossScaler::Static(128.0);
        let mut rng = Rng(42);
        for _ in 0..5000 {
            let overflow = rng.chance(0.5);
            let out = s.update(overflow).unwrap();
            assert_eq!(out.skipped, overflow);
            assert_eq!((out.scale, out.previous_scale), (128.0, 128.0));
            assert_eq!(out.change, ScaleChange::Unchanged);
        }
        assert_eq!(s.scale(), 128.0);
        assert!(!s.is_dynamic());
    }

    #[test]
    fn config_defaults_and_selection() {
        let c = LossScalerConfig::from_json(&json!({"enabled": true})).unwrap();
        assert_eq!(
            c,
            LossScalerConfig {
                enabled: true,
                loss_scale: 0.0,
                initial_scale_power: 16,
                loss_scale_window: 1000,
                hysteresis: 2,
                consecutive_hysteresis: false,
                min_loss_scale: 1.0,
                raise_error_at_min_scale: true,
            }
        );
        assert!(c.is_dynamic());
        let s = LossScaler::from_config(&c).unwrap();
        assert_eq!(s.scale(), 65536.0);
        let LossScaler::Dynamic(d) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(
            (d.scale_window(), d.delayed_shift(), d.min_scale()),
            (1000, 2, 1.0)
        );
        assert!(!d.consecutive_hysteresis() && d.raise_error_at_min_scale());

        let c = LossScalerConfig::from_json(&json!({
            "enabled": true, "loss_scale": 0, "initial_scale_power": 12,
            "loss_scale_window": 1e3, "hysteresis": 4.0, "consecutive_hysteresis": true,
            "min_loss_scale": 0.5, "raise_error_at_min_scale": false,
            "auto_cast": false, "fp16_master_weights_and_grads": false, "unknown": "ignored"
        }))
        .unwrap();
        assert_eq!(c.initial_scale(), 4096.0);
        assert_eq!((c.loss_scale_window, c.hysteresis), (1000, 4));
        assert!(c.consecutive_hysteresis && !c.raise_error_at_min_scale);
        assert_eq!(c.min_loss_scale, 0.5);

        // A static scale.
        let c = LossScalerConfig::from_json(&json!({"enabled": true, "loss_scale": 128})).unwrap();
        assert_eq!(
            LossScaler::from_config(&c).unwrap(),
            LossScaler::Static(128.0)
        );
        // fp16 off (bf16 or fp32): a static 1.0, whatever the other keys say.
        let c = LossScalerConfig::from_json(&json!({"enabled": false, "loss_scale": 128})).unwrap();
        assert_eq!(
            LossScaler::from_config(&c).unwrap(),
            LossScaler::Static(1.0)
        );
        let c = LossScalerConfig::from_json(&Value::Null).unwrap();
        assert_eq!(c, LossScalerConfig::default());
        assert_eq!(
            LossScaler::from_config(&c).unwrap(),
            LossScaler::Static(1.0)
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (
                json!({"loss_scale_window": 0}),
                "fp16.loss_scale_window: expected a positive integer, got 0",
            ),
            (
                json!({"loss_scale_window": 2.5}),
                "fp16.loss_scale_window: expected a positive integer, got 2.5",
            ),
            (
                json!({"loss_scale_window": "auto"}),
                "fp16.loss_scale_window: expected a positive integer, got \"auto\"",
            ),
            (
                json!({"loss_scale_window": -5}),
                "fp16.loss_scale_window: expected a positive integer, got -5",
            ),
            (
                json!({"hysteresis": 0}),
                "fp16.hysteresis: expected a positive integer, got 0",
            ),
            (
                json!({"hysteresis": null}),
                "fp16.hysteresis: expected a positive integer, got null",
            ),
            (
                json!({"initial_scale_power": 200}),
                "fp16.initial_scale_power: expected an integer from 0 to 127, got 200",
            ),
            (
                json!({"initial_scale_power": 1.5}),
                "fp16.initial_scale_power: expected an integer from 0 to 127, got 1.5",
            ),
            (
                json!({"min_loss_scale": 0}),
                "fp16.min_loss_scale: expected a positive finite number, got 0",
            ),
            (
                json!({"min_loss_scale": -1.0}),
                "fp16.min_loss_scale: expected a positive finite number, got -1.0",
            ),
            (
                json!({"loss_scale": -1}),
                "fp16.loss_scale: expected a non-negative finite number, got -1",
            ),
            (
                json!({"loss_scale": "auto"}),
                "fp16.loss_scale: expected a non-negative finite number, got \"auto\"",
            ),
            (
                json!({"enabled": "auto"}),
                "fp16.enabled: expected true or false, got \"auto\"",
            ),
            (
                json!({"consecutive_hysteresis": 1}),
                "fp16.consecutive_hysteresis: expected true or false, got 1",
            ),
            (
                json!({"raise_error_at_min_scale": "no"}),
                "fp16.raise_error_at_min_scale: expected true or false, got \"no\"",
            ),
            (json!(true), "fp16: expected an object, got true"),
            (json!([1]), "fp16: expected an object, got [1]"),
        ];
        for (block, want) in cases {
            let err = LossScalerConfig::from_json(&block).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
            assert_eq!(err.to_string(), want, "{block}");
        }
        assert!(parse_err(json!({"loss_scale": 1e39})).starts_with("fp16.loss_scale:"));
    }

    #[test]
    fn new_rejects_invalid_settings() {
        for (r, want) in [
            (
                DynamicLossScaler::new(0.0, 10, 1.0, 1, false, true),
                "cur_scale",
            ),
            (
                DynamicLossScaler::new(f64::INFINITY, 10, 1.0, 1, false, true),
                "cur_scale",
            ),
            (
                DynamicLossScaler::new(8.0, 0, 1.0, 1, false, true),
                "scale_window",
            ),
            (
                DynamicLossScaler::new(8.0, 10, 0.0, 1, false, true),
                "min_scale",
            ),
            (
                DynamicLossScaler::new(8.0, 10, 1.0, 0, false, true),
                "delayed_shift",
            ),
        ] {
            let err = r.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn state_round_trip() {
        let config = LossScalerConfig::from_json(&json!({
            "enabled": true, "loss_scale_window": 5, "hysteresis": 3, "min_loss_scale": 0.25,
            "initial_scale_power": 8, "raise_error_at_min_scale": false
        }))
        .unwrap();
        let mut a = LossScaler::from_config(&config).unwrap();
        let mut rng = Rng(7);
        for _ in 0..200 {
            a.update(rng.chance(0.3)).unwrap();
        }
        let text = serde_json::to_string(&a.state_dict()).unwrap();
        assert!(
            text.starts_with("{\"type\":\"dynamic\",\"cur_scale\":"),
            "{text}"
        );
        let mut b = LossScaler::Static(1.0);
        b.load_state_dict(serde_json::from_str(&text).unwrap())
            .unwrap();
        assert_eq!(a, b);
        for _ in 0..2000 {
            let overflow = rng.chance(0.3);
            assert_eq!(a.update(overflow).unwrap(), b.update(overflow).unwrap());
        }
        assert_eq!(a.state_dict(), b.state_dict());

        // Static round trip, and loading a static state replaces a dynamic scaler.
        let text = serde_json::to_string(&LossScaler::Static(512.0).state_dict()).unwrap();
        assert_eq!(text, r#"{"type":"static","scale":512.0}"#);
        b.load_state_dict(serde_json::from_str(&text).unwrap())
            .unwrap();
        assert_eq!(b, LossScaler::Static(512.0));
    }

    #[test]
    fn invalid_states_are_rejected() {
        let good = match LossScaler::from_config(
            &LossScalerConfig::from_json(&json!({"enabled": true})).unwrap(),
        )
        .unwrap()
        .state_dict()
        {
            LossScalerState::Dynamic(d) => d,
            s => panic!("{s:?}"),
        };
        let mut scaler = LossScaler::Static(2.0);
        type Edit = fn(&mut DynamicScalerState);
        let edits: [(Edit, &str); 7] = [
            (|s| s.scale_window = 0, "scale_window must be at least 1"),
            (
                |s| s.cur_hysteresis = 0,
                "cur_hysteresis must be from 1 to delayed_shift (2), got 0",
            ),
            (
                |s| s.cur_hysteresis = 3,
                "cur_hysteresis must be from 1 to delayed_shift (2), got 3",
            ),
            (
                |s| s.cur_scale = f64::NAN,
                "cur_scale must be positive and finite",
            ),
            (
                |s| s.min_scale = -1.0,
                "min_scale must be positive and finite",
            ),
            (
                |s| s.scale_factor = 1.0,
                "scale_factor must be finite and greater than 1",
            ),
            (
                |s| s.last_overflow_iter = 0,
                "last_overflow_iter must be from -1 to cur_iter - 1 (-1), got 0",
            ),
        ];
        for (edit, want) in edits {
            let mut state = good.clone();
            edit(&mut state);
            let err = scaler
                .load_state_dict(LossScalerState::Dynamic(state))
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Format);
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(scaler, LossScaler::Static(2.0));
        }
        let err = scaler
            .load_state_dict(LossScalerState::Static { scale: 0.0 })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("scale must be positive and finite"),
            "{err}"
        );
        assert!(serde_json::from_str::<LossScalerState>(r#"{"type":"other"}"#).is_err());
    }
}
