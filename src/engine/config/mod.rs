//! DeepSpeed's `ds_config.json`, parsed, validated and resolved.
//!
//! [`DsConfig::parse_str`] reads a config the way DeepSpeed does (JSON with `//`, `#` and
//! `/* */` comments and trailing commas, see [`read_lenient_json`]), applies DeepSpeed's
//! batch rule, defaults, aliases and deprecated names, and reports **every** problem at once
//! as a [`Diagnostic`] naming the JSON path at fault. Strictness follows DeepSpeed's two
//! tiers: unknown top-level keys are warnings (DeepSpeed ignores them), unknown keys in the
//! sections DeepSpeed validates with pydantic (`zero_optimization`, its offload blocks, the
//! monitors, `fp16`/`bf16`, `timers.throughput`, `comms_logger`) are errors. Features
//! deepspeed_rs does not have yet are errors naming the key, never silently ignored.
//! `"auto"` values (Hugging Face's placeholders) are errors until the host fills them in
//! ([`auto_paths`], [`fill_auto`]). `docs/config.md` is the full description.
//!
//! ```
//! use deepspeed_rs::engine::config::{DsConfig, ParseOptions, Precision};
//!
//! let text = r#"{
//!     // DeepSpeedExamples style: comments and trailing commas are fine
//!     "train_batch_size": 32,
//!     "gradient_accumulation_steps": 4,
//!     "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.01}},
//!     "bf16": {"enabled": true},
//!     "zero_optimization": {"stage": 2},
//! }"#;
//! let cfg = DsConfig::parse_str(text, &ParseOptions { world_size: 2 }).unwrap();
//! assert_eq!(cfg.batch.train_micro_batch_size_per_gpu, 4); // 32 // 2 // 4
//! assert!(matches!(cfg.precision, Precision::Bf16 { check_grad_overflow: true }));
//!
//! let err = DsConfig::parse_str(r#"{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
//!     "gradient_accumulation_steps": 1}"#, &ParseOptions::default()).unwrap_err();
//! assert_eq!(err.0[0].message, "Check batch related parameters. train_batch_size is not equal \
//!     to micro_batch_per_gpu * gradient_acc_step * world_size 8 != 2 * 1 * 1");
//! ```

mod auto;
mod ctx;
mod lenient;
mod optimizer;
mod output;
mod parse;
mod suggest;
mod zero;

pub(crate) use parse::TOP_LEVEL_KEYS;

use serde::Serialize;
use serde_json::Value;

use crate::dtype::DType;
use crate::engine::loss_scaler::LossScalerConfig;
use crate::engine::lr_schedule::Schedule;
use crate::error::{Error, Result};

/// One finding of the parser: where (a JSON path such as `zero_optimization.stage`, or
/// `<top>` for the document) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// JSON path of the key at fault.
    pub path: String,
    /// What is wrong, and what to do.
    pub message: String,
}

/// How a ds_config is read.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The data-parallel world size `W` of DeepSpeed's batch rule (1 for one process).
    pub world_size: u64,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { world_size: 1 }
    }
}

/// The batch-size triple after DeepSpeed's resolution rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchConfig {
    /// `train_batch_size`.
    pub train_batch_size: u64,
    /// `train_micro_batch_size_per_gpu`.
    pub train_micro_batch_size_per_gpu: u64,
    /// `gradient_accumulation_steps`.
    pub gradient_accumulation_steps: u64,
    /// The world size the rule used.
    pub world_size: u64,
}

/// The optimizer family and its hyper-parameters (all but `lr`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `Adam` / `AdamW` (effective AdamW when `type == adamw` or `adam_w_mode`).
    Adam {
        /// `betas[0]`.
        beta1: f64,
        /// `betas[1]`.
        beta2: f64,
        /// eps.
        eps: f64,
        /// weight_decay.
        weight_decay: f64,
        /// Decoupled weight decay.
        adamw_mode: bool,
        /// bias_correction.
        bias_correction: bool,
        /// `torch_adam` (accepted; same math here).
        torch_adam: bool,
    },
    /// `Lamb` (FusedLamb).
    Lamb {
        /// `betas[0]`.
        beta1: f64,
        /// `betas[1]`.
        beta2: f64,
        /// eps.
        eps: f64,
        /// weight_decay.
        weight_decay: f64,
        /// bias_correction.
        bias_correction: bool,
        /// eps_inside_sqrt.
        eps_inside_sqrt: bool,
        /// max_coeff.
        max_coeff: f64,
        /// min_coeff.
        min_coeff: f64,
    },
    /// `Lion`.
    Lion {
        /// `betas[0]`.
        beta1: f64,
        /// `betas[1]`.
        beta2: f64,
        /// weight_decay.
        weight_decay: f64,
    },
    /// `Adagrad`.
    Adagrad {
        /// eps.
        eps: f64,
        /// weight_decay.
        weight_decay: f64,
    },
    /// `SGD` (torch.optim.SGD semantics).
    Sgd {
        /// momentum.
        momentum: f64,
        /// dampening.
        dampening: f64,
        /// weight_decay.
        weight_decay: f64,
        /// nesterov.
        nesterov: bool,
    },
}

/// The `optimizer` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizerConfig {
    /// `type` as written in the config.
    pub type_name: String,
    /// `params.lr`.
    pub lr: f64,
    /// The family and the other parameters.
    pub kind: OptimizerKind,
}

/// The `scheduler` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerConfig {
    /// `type`.
    pub type_name: String,
    /// The parsed schedule.
    pub schedule: Schedule,
}

/// Training precision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Precision {
    /// fp32 throughout.
    Fp32,
    /// `fp16.enabled`: fp16 compute copy, fp32 master weights, loss scaling.
    Fp16 {
        /// The `fp16` block's scaler settings.
        loss_scaler: LossScalerConfig,
    },
    /// `bf16.enabled` (or `bfloat16`): bf16 compute copy, fp32 master weights.
    Bf16 {
        /// `bf16.check_grad_overflow` (default true here: skip and report non-finite
        /// gradients).
        check_grad_overflow: bool,
    },
}

/// A monitor block (`csv_monitor`, `tensorboard`, `wandb`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorConfig {
    /// `enabled`.
    pub enabled: bool,
    /// `output_path` ("" = the current directory).
    pub output_path: String,
    /// `job_name` (default `DeepSpeedJobName`).
    pub job_name: String,
}

/// `zero_optimization.offload_optimizer` / `offload_param`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffloadConfig {
    /// "none", "cpu" or "nvme".
    pub device: String,
    /// `nvme_path`.
    pub nvme_path: Option<String>,
    /// `buffer_count`.
    pub buffer_count: u64,
    /// `pin_memory`.
    pub pin_memory: bool,
    /// `ratio` (optimizer only; 1.0 for params).
    pub ratio: f64,
    /// The block's other fields with their defaults filled in: `pipeline_read`,
    /// `pipeline_write`, `fast_init` (optimizer); `buffer_size`, `max_in_cpu` (params).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl OffloadConfig {
    /// Whether the block offloads anywhere (`device` is not `"none"`).
    pub fn is_enabled(&self) -> bool {
        self.device != "none"
    }
}

/// `zero_optimization`, every field validated (the partitioning arrives with data
/// parallelism; with one process every stage runs unpartitioned).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroConfig {
    /// `stage`, 0–3.
    pub stage: u8,
    /// `contiguous_gradients`.
    pub contiguous_gradients: bool,
    /// `overlap_comm` (None → true for stage 3, else false).
    pub overlap_comm: bool,
    /// `reduce_scatter`.
    pub reduce_scatter: bool,
    /// `reduce_bucket_size`.
    pub reduce_bucket_size: u64,
    /// `allgather_partitions`.
    pub allgather_partitions: bool,
    /// `allgather_bucket_size`.
    pub allgather_bucket_size: u64,
    /// `offload_optimizer`.
    pub offload_optimizer: Option<OffloadConfig>,
    /// `offload_param`.
    pub offload_param: Option<OffloadConfig>,
    /// Every other field, resolved (aliases and deprecated names mapped), by its canonical
    /// name: the documented `stage3_*` spelling where DeepSpeed has one
    /// (`stage3_prefetch_bucket_size`, not `prefetch_bucket_size`), defaults filled in.
    pub other: serde_json::Map<String, Value>,
}

impl ZeroConfig {
    /// Whether the optimizer state is offloaded to the CPU (`offload_optimizer.device` is
    /// `"cpu"`; the deprecated `cpu_offload: true` is mapped to this).
    pub fn cpu_offload_optimizer(&self) -> bool {
        self.offload_optimizer
            .as_ref()
            .is_some_and(|o| o.device == "cpu")
    }
}

/// `checkpoint.tag_validation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TagValidation {
    /// `"Warn"` (the default): log when ranks save under different tags.
    Warn,
    /// `"Ignore"`: do not check.
    Ignore,
    /// `"Fail"`: error when ranks save under different tags.
    Fail,
}

impl TagValidation {
    /// DeepSpeed's spelling (`"Warn"`, `"Ignore"`, `"Fail"`).
    pub fn name(self) -> &'static str {
        match self {
            TagValidation::Warn => "Warn",
            TagValidation::Ignore => "Ignore",
            TagValidation::Fail => "Fail",
        }
    }
}

/// The `checkpoint` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointConfig {
    /// `tag_validation` (case-insensitive in the config).
    pub tag_validation: TagValidation,
    /// `load_universal`.
    pub load_universal: bool,
    /// `use_node_local_storage`.
    pub use_node_local_storage: bool,
    /// `parallel_write.pipeline_stage`.
    pub parallel_write_pipeline_stage: bool,
}

/// `timers.throughput`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThroughputTimerConfig {
    /// `enabled` (default true).
    pub enabled: bool,
    /// `synchronized` (default true): synchronize the device around each measurement.
    pub synchronized: bool,
}

/// The `comms_logger` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommsLoggerConfig {
    /// `enabled`.
    pub enabled: bool,
    /// `verbose`.
    pub verbose: bool,
    /// `prof_all` (default true).
    pub prof_all: bool,
    /// `prof_ops`.
    pub prof_ops: Vec<String>,
    /// `debug`.
    pub debug: bool,
}

/// A parsed, validated and resolved ds_config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DsConfig {
    /// The batch triple.
    pub batch: BatchConfig,
    /// `optimizer` (None when absent).
    pub optimizer: Option<OptimizerConfig>,
    /// `scheduler` (None when absent).
    pub scheduler: Option<SchedulerConfig>,
    /// fp32, fp16 or bf16.
    pub precision: Precision,
    /// `data_types.grad_accum_dtype` (None: the default for the precision).
    #[serde(serialize_with = "ser_dtype")]
    pub grad_accum_dtype: Option<DType>,
    /// `gradient_clipping` (0: off).
    pub gradient_clipping: f64,
    /// `prescale_gradients`.
    pub prescale_gradients: bool,
    /// `gradient_predivide_factor`.
    pub gradient_predivide_factor: f64,
    /// `steps_per_print` (None: no progress lines).
    pub steps_per_print: Option<u64>,
    /// `wall_clock_breakdown`.
    pub wall_clock_breakdown: bool,
    /// `csv_monitor`.
    pub csv_monitor: MonitorConfig,
    /// `zero_optimization`.
    pub zero: ZeroConfig,
    /// `fp16.auto_cast` (the host casts forward inputs; recorded for it).
    pub fp16_auto_cast: bool,
    /// `bf16.immediate_grad_update`.
    pub bf16_immediate_grad_update: bool,
    /// `communication_data_type` (None: the precision's type).
    #[serde(serialize_with = "ser_dtype")]
    pub communication_data_type: Option<DType>,
    /// `seq_parallel_communication_data_type` (or `seq_parallel_comm_data_type`), default
    /// fp32.
    #[serde(serialize_with = "ser_dtype1")]
    pub seq_parallel_communication_data_type: DType,
    /// `memory_breakdown`.
    pub memory_breakdown: bool,
    /// `dump_state`.
    pub dump_state: bool,
    /// `disable_allgather`.
    pub disable_allgather: bool,
    /// `zero_allow_untested_optimizer`.
    pub zero_allow_untested_optimizer: bool,
    /// `zero_force_ds_cpu_optimizer` (default true).
    pub zero_force_ds_cpu_optimizer: bool,
    /// `dataloader_drop_last`.
    pub dataloader_drop_last: bool,
    /// `checkpoint`.
    pub checkpoint: CheckpointConfig,
    /// `timers.throughput`.
    pub throughput_timer: ThroughputTimerConfig,
    /// `comms_logger`.
    pub comms_logger: CommsLoggerConfig,
    /// `vocabulary_size` (only checked: a warning when not a multiple of 8).
    pub vocabulary_size: Option<u64>,
    /// Warnings (unknown top-level keys with a suggestion, deprecated names).
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

fn ser_dtype1<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

fn ser_dtype<S: serde::Serializer>(
    d: &Option<DType>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(d.name()),
        None => s.serialize_none(),
    }
}

/// Every error found in a document (not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl From<ConfigErrors> for Error {
    fn from(e: ConfigErrors) -> Error {
        let lines: Vec<String> =
            e.0.iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
        Error::config(lines.join("\n"))
    }
}

/// A parse's full outcome: the configuration when there were no errors, every error and
/// every warning (what `dsrs config check` prints).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The resolved configuration (`None` when `errors` is not empty).
    pub config: Option<DsConfig>,
    /// Every error.
    pub errors: Vec<Diagnostic>,
    /// Every warning (also in `config.warnings`).
    pub warnings: Vec<Diagnostic>,
}

/// `parent.key` (or `key` at the top).
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Reads JSON the way DeepSpeed's hjson reader accepts it: `//` and `#` line comments,
/// `/* */` block comments, trailing commas.
///
/// Text inside strings is never touched (`"a // b"` stays). A key given twice in one object
/// is an error naming the key and the object's path (DeepSpeed rejects duplicates too).
/// Syntax errors name `what` (a file name) with the line and column of the original text.
pub fn read_lenient_json(text: &str, what: &str) -> Result<Value> {
    lenient::read(text, what)
}

impl DsConfig {
    /// Parses and validates a ds_config document (lenient JSON text).
    ///
    /// A syntax error is one [`Diagnostic`] at `<top>`.
    pub fn parse_str(
        text: &str,
        opts: &ParseOptions,
    ) -> std::result::Result<DsConfig, ConfigErrors> {
        let doc = read_lenient_json(text, "ds_config").map_err(|e| {
            ConfigErrors(vec![Diagnostic {
                path: "<top>".into(),
                message: e.to_string(),
            }])
        })?;
        DsConfig::from_value(&doc, opts)
    }

    /// Parses and validates ds_config text into the crate's error type, for callers that
    /// need one error: a syntax error is [`Error::Json`] (`DSRS_STATUS_INVALID_JSON`, naming
    /// `what` with line and column), schema errors one [`Error::Config`] listing every
    /// `path: message`. Warnings are in [`DsConfig::warnings`].
    pub fn load(text: &str, what: &str, opts: &ParseOptions) -> Result<DsConfig> {
        let doc = read_lenient_json(text, what)?;
        Ok(DsConfig::from_value(&doc, opts)?)
    }

    /// Parses and validates an already-read JSON value.
    ///
    /// Every error is collected (not only the first); warnings are in
    /// [`DsConfig::warnings`].
    pub fn from_value(
        doc: &Value,
        opts: &ParseOptions,
    ) -> std::result::Result<DsConfig, ConfigErrors> {
        let c = DsConfig::check(doc, opts);
        match c.config {
            Some(cfg) => Ok(cfg),
            None => Err(ConfigErrors(c.errors)),
        }
    }

    /// Parses and validates `doc`, returning the errors *and* the warnings (the warnings
    /// are wanted even when there are errors).
    pub fn check(doc: &Value, opts: &ParseOptions) -> Checked {
        parse::check(doc, opts)
    }

    /// The resolved configuration as JSON (what `dsrs config check` prints): a ds_config
    /// with every default filled in and every key under its canonical name, which parses
    /// back to the same [`DsConfig`].
    pub fn to_json(&self) -> Value {
        output::to_json(self)
    }
}

/// The JSON paths of every `"auto"` value in a document (`optimizer.params.betas[0]`), in
/// document order (keys sorted within an object).
///
/// `pipeline.stages` and `replace_method`, where `"auto"` is a real DeepSpeed value, are
/// not listed.
pub fn auto_paths(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    auto::collect(doc, "", &mut out);
    out
}

/// Replaces the `"auto"` at `path` (dotted, e.g. `optimizer.params.lr`, with `[i]` for
/// array elements: `optimizer.params.betas[0]`) by `value`; an error naming the path if it
/// does not exist or does not hold `"auto"`.
pub fn fill_auto(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    auto::fill(doc, path, value)
}
