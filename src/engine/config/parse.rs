//! The document-level parse: the batch rule, the top-level keys and the sections other
//! than `optimizer` and `zero_optimization`.

use serde_json::{Map, Value};

use super::ctx::{Ctx, Obj, integral, is_auto, section, show};
use super::optimizer::Family;
use super::{
    BatchConfig, Checked, CheckpointConfig, CommsLoggerConfig, Diagnostic, DsConfig, MonitorConfig,
    ParseOptions, Precision, SchedulerConfig, TagValidation, ThroughputTimerConfig, suggest,
};
use crate::dtype::DType;
use crate::engine::loss_scaler::LossScalerConfig;
use crate::engine::lr_schedule::{Schedule, VALID_SCHEDULES};

/// Every top-level key DeepSpeed reads (current and legacy).
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "optimizer",
    "scheduler",
    "fp16",
    "bf16",
    "bfloat16",
    "amp",
    "data_types",
    "communication_data_type",
    "seq_parallel_communication_data_type",
    "seq_parallel_comm_data_type",
    "gradient_clipping",
    "prescale_gradients",
    "gradient_predivide_factor",
    "sparse_gradients",
    "disable_allgather",
    "steps_per_print",
    "wall_clock_breakdown",
    "memory_breakdown",
    "dump_state",
    "zero_optimization",
    "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer",
    "allgather_size",
    "checkpoint",
    "tensorboard",
    "csv_monitor",
    "wandb",
    "comet",
    "timers",
    "comms_logger",
    "flops_profiler",
    "activation_checkpointing",
    "aio",
    "pipeline",
    "hybrid_engine",
    "tensor_parallel",
    "dataloader_drop_last",
    "elasticity",
    "autotuning",
    "sparse_attention",
    "progressive_layer_drop",
    "eigenvalue",
    "quantize_training",
    "compression_training",
    "data_efficiency",
    "curriculum_learning",
    "vocabulary_size",
    "graph_harvesting",
    "use_data_before_expert_parallelism",
    "weight_quantization",
    "nebula",
    "compile",
    "torch_autocast",
];

const FP16_KEYS: &[&str] = &[
    "enabled",
    "auto_cast",
    "loss_scale",
    "initial_scale_power",
    "loss_scale_window",
    "hysteresis",
    "consecutive_hysteresis",
    "min_loss_scale",
    "fp16_master_weights_and_grads",
    "raise_error_at_min_scale",
];
const BF16_KEYS: &[&str] = &[
    "enabled",
    "immediate_grad_update",
    "check_grad_overflow",
    "bf16_master_weights_and_grads",
    "bf16_optimizer_states",
];

/// The message for an `"auto"` value.
pub(crate) const AUTO_MESSAGE: &str = "\"auto\" must be resolved by the host before the engine sees the config (Hugging Face's Trainer does this); use dsrs_config_fill_auto or deepspeed_rs.config.fill_auto";

/// Turns an `Error::config("path: message")` from an existing parser into a diagnostic.
fn diag_from(prefix: &str, e: &crate::Error) -> Diagnostic {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((path, msg)) if path.starts_with(prefix) && !path.contains(' ') => Diagnostic {
            path: path.to_string(),
            message: msg.to_string(),
        },
        _ => Diagnostic {
            path: prefix.to_string(),
            message: text,
        },
    }
}

/// The whole parse.
pub(crate) fn check(doc: &Value, opts: &ParseOptions) -> Checked {
    let mut ctx = Ctx::default();
    let Some(map) = doc.as_object() else {
        ctx.err(
            "<top>",
            format!("expected a JSON object, got {}", show(doc)),
        );
        return Checked {
            config: None,
            errors: ctx.errors,
            warnings: ctx.warnings,
        };
    };
    for p in super::auto_paths(doc) {
        ctx.err(p, AUTO_MESSAGE);
    }
    let top = Obj::new(map, "");
    unknown_top_level(&mut ctx, &top);

    let batch = batch(&mut ctx, &top, opts.world_size);
    let optimizer = super::optimizer::parse(&mut ctx, &top);
    let scheduler = scheduler(&mut ctx, &top);
    let zero = super::zero::parse(&mut ctx, &top);
    let (precision, fp16_auto_cast, bf16_immediate_grad_update) = precision(&mut ctx, &top, &zero);

    let grad_accum_dtype = match section(&mut ctx, &top, "data_types") {
        Some(dt) => {
            dt.warn_extra(&mut ctx, &["grad_accum_dtype"]);
            match dt.get("grad_accum_dtype") {
                None | Some(Value::Null) => None,
                Some(v) => grad_accum(&mut ctx, &dt.at("grad_accum_dtype"), v),
            }
        }
        None => None,
    };
    let communication_data_type = comm_dtype(&mut ctx, &top, "communication_data_type");
    let seq_parallel_communication_data_type = {
        let (a, b) = (
            "seq_parallel_communication_data_type",
            "seq_parallel_comm_data_type",
        );
        if top.has(a) && top.has(b) {
            ctx.err(
                b,
                format!("given twice, as {a} and as {b} (the same setting); keep one"),
            );
        }
        let key = if top.has(b) { b } else { a };
        comm_dtype(&mut ctx, &top, key).unwrap_or(DType::F32)
    };

    let nonneg = |x: f64| x >= 0.0;
    let gradient_clipping = top.num(
        &mut ctx,
        "gradient_clipping",
        0.0,
        "a non-negative number",
        nonneg,
    );
    let prescale_gradients = top.bool(&mut ctx, "prescale_gradients", false);
    let gradient_predivide_factor = top.num(
        &mut ctx,
        "gradient_predivide_factor",
        1.0,
        "a positive number",
        |x| x > 0.0,
    );
    let steps_per_print = match top.get("steps_per_print") {
        None | Some(Value::Null) => None,
        Some(_) => Some(top.int(&mut ctx, "steps_per_print", 1, 1, u64::MAX as i128) as u64),
    };
    if top.bool(&mut ctx, "sparse_gradients", false) {
        ctx.err(
            "sparse_gradients",
            "deepspeed_rs does not support sparse gradients yet; set it to false",
        );
    }
    let vocabulary_size = match top.get("vocabulary_size") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let v = top.uint(&mut ctx, "vocabulary_size", 0);
            if v % 8 != 0 {
                ctx.warn(
                    "vocabulary_size",
                    format!("DeepSpeedConfig: vocabulary size {v} is not aligned to 8, may import tensor core utilization."),
                );
            }
            Some(v)
        }
    };

    let csv_monitor = monitors(&mut ctx, &top);
    unsupported(&mut ctx, &top);

    let cfg = DsConfig {
        batch,
        optimizer: optimizer.as_ref().map(|(o, _)| o.clone()),
        scheduler,
        precision,
        grad_accum_dtype,
        gradient_clipping,
        prescale_gradients,
        gradient_predivide_factor,
        steps_per_print,
        wall_clock_breakdown: top.bool(&mut ctx, "wall_clock_breakdown", false),
        csv_monitor,
        zero,
        fp16_auto_cast,
        bf16_immediate_grad_update,
        communication_data_type,
        seq_parallel_communication_data_type,
        memory_breakdown: top.bool(&mut ctx, "memory_breakdown", false),
        dump_state: top.bool(&mut ctx, "dump_state", false),
        disable_allgather: top.bool(&mut ctx, "disable_allgather", false),
        zero_allow_untested_optimizer: top.bool(&mut ctx, "zero_allow_untested_optimizer", false),
        zero_force_ds_cpu_optimizer: top.bool(&mut ctx, "zero_force_ds_cpu_optimizer", true),
        dataloader_drop_last: top.bool(&mut ctx, "dataloader_drop_last", false),
        checkpoint: checkpoint(&mut ctx, &top),
        throughput_timer: timers(&mut ctx, &top),
        comms_logger: comms_logger(&mut ctx, &top),
        vocabulary_size,
        warnings: Vec::new(),
    };
    cross_checks(&mut ctx, &cfg, optimizer.map(|(_, f)| f));

    let Ctx { errors, warnings } = ctx;
    let config = errors.is_empty().then(|| DsConfig {
        warnings: warnings.clone(),
        ..cfg
    });
    Checked {
        config,
        errors,
        warnings,
    }
}

fn unknown_top_level(ctx: &mut Ctx, top: &Obj) {
    for k in top.map.keys() {
        if TOP_LEVEL_KEYS.contains(&k.as_str()) {
            continue;
        }
        let message = match k.as_str() {
            "monitor_config" => "not a DeepSpeed key: DeepSpeed ignores it, so monitors nested in it do nothing; put csv_monitor, tensorboard or wandb at the top level".to_string(),
            "comms_config" => "not a DeepSpeed key: DeepSpeed ignores it; the communication logger is the top-level comms_logger".to_string(),
            "cuda_visible_devices" => "not a DeepSpeed key: DeepSpeed ignores it (choose devices with CUDA_VISIBLE_DEVICES in the environment)".to_string(),
            "moe" => continue, // an unsupported feature, reported by `unsupported`
            _ if k.contains("expert") => continue,
            _ => format!(
                "unknown key, ignored as DeepSpeed ignores it{}",
                suggest::did_you_mean(k, TOP_LEVEL_KEYS.iter().copied())
            ),
        };
        ctx.warn(k.clone(), message);
    }
}

/// A batch key: `None` when absent or `null`; `Err(())` when `"auto"` or invalid (reported).
fn batch_key(ctx: &mut Ctx, top: &Obj, key: &str) -> Result<Option<u64>, ()> {
    match top.map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if is_auto(v) => Err(()),
        Some(v) => match integral(v) {
            Some(n) if (0..=u64::MAX as i128).contains(&n) => Ok(Some(n as u64)),
            _ => {
                let why = if v
                    .as_f64()
                    .is_some_and(|x| x.fract() != 0.0 && x.is_finite())
                {
                    " (a batch size is a whole number)"
                } else {
                    ""
                };
                ctx.err(
                    key,
                    format!("expected a non-negative integer, got {}{why}", show(v)),
                );
                Err(())
            }
        },
    }
}

/// DeepSpeed's `_set_batch_related_parameters` and `_batch_assertion`.
fn batch(ctx: &mut Ctx, top: &Obj, w: u64) -> BatchConfig {
    let fallback = BatchConfig {
        train_batch_size: 1,
        train_micro_batch_size_per_gpu: 1,
        gradient_accumulation_steps: 1,
        world_size: w.max(1),
    };
    let tb = batch_key(ctx, top, "train_batch_size");
    let mb = batch_key(ctx, top, "train_micro_batch_size_per_gpu");
    let gas = batch_key(ctx, top, "gradient_accumulation_steps");
    if w == 0 {
        ctx.err("<top>", "the world size must be at least 1");
        return fallback;
    }
    let (Ok(tb), Ok(mb), Ok(gas)) = (tb, mb, gas) else {
        return fallback;
    };
    let zero_div = |ctx: &mut Ctx, key: &str, msg: String| {
        ctx.err(key, msg);
        fallback
    };
    let (tb, mb, gas) = match (tb, mb, gas) {
        (Some(tb), Some(mb), Some(gas)) => (tb, mb, gas),
        (Some(tb), Some(mb), None) => {
            if mb == 0 {
                return zero_div(ctx, "train_micro_batch_size_per_gpu", "Micro batch size per gpu: 0 has to be greater than 0".into());
            }
            (tb, mb, tb / mb / w)
        }
        (Some(tb), None, Some(gas)) => {
            if gas == 0 {
                return zero_div(ctx, "gradient_accumulation_steps", "Gradient accumulation steps: 0 has to be greater than 0".into());
            }
            (tb, tb / w / gas, gas)
        }
        (None, Some(mb), Some(gas)) => match mb.checked_mul(gas).and_then(|x| x.checked_mul(w)) {
            Some(tb) => (tb, mb, gas),
            None => return zero_div(ctx, "<top>", "train_batch_size = train_micro_batch_size_per_gpu * gradient_accumulation_steps * world_size overflows".into()),
        },
        (Some(tb), None, None) => (tb, tb / w, 1),
        (None, Some(mb), None) => match mb.checked_mul(w) {
            Some(tb) => (tb, mb, 1),
            None => return zero_div(ctx, "<top>", "train_batch_size = train_micro_batch_size_per_gpu * world_size overflows".into()),
        },
        (None, None, _) => {
            ctx.err("<top>", "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided");
            return fallback;
        }
    };
    let mut ok = true;
    for (key, what, v) in [
        ("train_batch_size", "Train batch size", tb),
        (
            "train_micro_batch_size_per_gpu",
            "Micro batch size per gpu",
            mb,
        ),
        (
            "gradient_accumulation_steps",
            "Gradient accumulation steps",
            gas,
        ),
    ] {
        if v == 0 {
            ctx.err(key, format!("{what}: {v} has to be greater than 0"));
            ok = false;
        }
    }
    if ok && tb as u128 != mb as u128 * gas as u128 * w as u128 {
        ctx.err(
            "<top>",
            format!("Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size {tb} != {mb} * {gas} * {w}"),
        );
    }
    BatchConfig {
        train_batch_size: tb,
        train_micro_batch_size_per_gpu: mb,
        gradient_accumulation_steps: gas,
        world_size: w,
    }
}

/// `torch.optim.lr_scheduler` classes (DeepSpeed's fallback for `scheduler.type`).
const TORCH_SCHEDULERS: &[&str] = &[
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "PolynomialLR",
];

fn scheduler(ctx: &mut Ctx, top: &Obj) -> Option<SchedulerConfig> {
    let block = section(ctx, top, "scheduler")?;
    block.warn_extra(ctx, &["type", "params"]);
    let type_name = match block.map.get("type") {
        Some(Value::String(s)) if s == "auto" => return None,
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    if !type_name.is_empty() && !VALID_SCHEDULES.contains(&type_name.as_str()) {
        let msg = if TORCH_SCHEDULERS.contains(&type_name.as_str()) {
            format!(
                "torch.optim.lr_scheduler.{type_name} is not supported by deepspeed_rs yet; supported: {}",
                VALID_SCHEDULES.join(", ")
            )
        } else {
            format!(
                "DeepSpeed does not recognize LR scheduler {type_name}{}",
                suggest::did_you_mean(&type_name, VALID_SCHEDULES.iter().copied())
            )
        };
        ctx.err(block.at("type"), msg);
        return None;
    }
    // "auto" values were reported already; the schedule cannot be built without them.
    let value = Value::Object(block.map.clone());
    if !super::auto_paths(&value).is_empty() {
        return None;
    }
    match Schedule::from_json(&value) {
        Ok(schedule) => Some(SchedulerConfig {
            type_name: schedule.name().to_string(),
            schedule,
        }),
        Err(e) => {
            ctx.errors.push(diag_from("scheduler", &e));
            None
        }
    }
}

/// A section spelled `bf16` or `bfloat16`.
fn bf16_section<'a>(ctx: &mut Ctx, top: &Obj<'a>) -> Option<Obj<'a>> {
    if top.has("bf16") && top.has("bfloat16") {
        ctx.err("bfloat16", "bf16 and bfloat16 are the same section (bfloat16 is the legacy spelling); give only one");
    }
    if top.has("bf16") {
        section(ctx, top, "bf16")
    } else {
        section(ctx, top, "bfloat16")
    }
}

fn precision(ctx: &mut Ctx, top: &Obj, zero: &super::ZeroConfig) -> (Precision, bool, bool) {
    let mut fp16 = None;
    let mut auto_cast = false;
    if let Some(f) = section(ctx, top, "fp16") {
        f.forbid_extra(ctx, FP16_KEYS);
        auto_cast = f.bool(ctx, "auto_cast", false);
        let master = f.bool(ctx, "fp16_master_weights_and_grads", false);
        let clean: Map<String, Value> = f
            .map
            .iter()
            .filter(|(k, v)| !is_auto(v) && FP16_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match LossScalerConfig::from_json(&Value::Object(clean)) {
            Ok(c) => {
                if c.enabled && master {
                    let msg = if zero.stage == 2 && zero.cpu_offload_optimizer() {
                        "fp16_master_weights_and_grads is not supported by deepspeed_rs yet; set it to false"
                    } else {
                        "Fp16_master_weights_and_grads is only supported with ZeRO Stage 2 for now."
                    };
                    ctx.err(f.at("fp16_master_weights_and_grads"), msg);
                }
                if c.enabled {
                    fp16 = Some(c);
                }
            }
            Err(e) => ctx.errors.push(diag_from("fp16", &e)),
        }
    }
    let mut bf16 = None;
    let mut immediate = false;
    if let Some(b) = bf16_section(ctx, top) {
        b.forbid_extra(ctx, BF16_KEYS);
        immediate = b.bool(ctx, "immediate_grad_update", false);
        let check = b.bool(ctx, "check_grad_overflow", true);
        for k in ["bf16_master_weights_and_grads", "bf16_optimizer_states"] {
            if b.bool(ctx, k, false) {
                ctx.err(b.at(k), format!("{k} is not supported by deepspeed_rs yet; set it to false (master weights and optimizer states are fp32)"));
            }
        }
        if b.bool(ctx, "enabled", false) {
            bf16 = Some(check);
        }
    }
    if let Some(a) = section(ctx, top, "amp")
        && a.bool(ctx, "enabled", false)
    {
        ctx.err(
            "amp.enabled",
            "deepspeed_rs does not support Apex AMP; use the \"fp16\" or \"bf16\" section instead",
        );
    }
    let p = match (fp16, bf16) {
        (Some(_), Some(_)) => {
            ctx.err(
                "<top>",
                "bfloat16 and fp16 modes cannot be simultaneously enabled",
            );
            Precision::Fp32
        }
        (Some(loss_scaler), None) => Precision::Fp16 { loss_scaler },
        (None, Some(check_grad_overflow)) => Precision::Bf16 {
            check_grad_overflow,
        },
        (None, None) => Precision::Fp32,
    };
    (p, auto_cast, immediate)
}

/// `data_types.grad_accum_dtype` (DeepSpeed's `DtypeEnum` spellings, case-sensitive).
fn grad_accum(ctx: &mut Ctx, path: &str, v: &Value) -> Option<DType> {
    let s = v.as_str().unwrap_or_default();
    let t = match s {
        "fp32" | "float32" | "float" | "torch.float32" => DType::F32,
        "fp16" | "float16" | "half" | "torch.float16" => DType::F16,
        "bf16" | "bfloat16" | "bfloat" | "torch.bfloat16" => DType::BF16,
        _ => {
            ctx.err(
                path,
                format!("{} is not a valid DtypeEnum; expected \"fp32\", \"fp16\" or \"bf16\" (or float32, float, float16, half, bfloat16, torch.float32, ...)", show(v)),
            );
            return None;
        }
    };
    Some(t)
}

/// `communication_data_type` and the sequence-parallel one (DeepSpeed's validation).
fn comm_dtype(ctx: &mut Ctx, top: &Obj, key: &str) -> Option<DType> {
    match top.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let got = v.as_str().map(str::to_lowercase).unwrap_or_else(|| show(v));
            match got.as_str() {
                "fp32" => Some(DType::F32),
                "fp16" => Some(DType::F16),
                "bf16" => Some(DType::BF16),
                _ => {
                    ctx.err(key, format!("Invalid communication_data_type. Supported data types: ['fp16', 'bf16', 'fp32']. Got: {got}"));
                    None
                }
            }
        }
    }
}

fn monitor(ctx: &mut Ctx, top: &Obj, key: &str) -> Option<MonitorConfig> {
    let m = section(ctx, top, key)?;
    let known: &[&str] = match key {
        "wandb" => &["enabled", "group", "team", "project"],
        "comet" => &[
            "enabled",
            "samples_log_interval",
            "project",
            "workspace",
            "api_key",
            "experiment_name",
            "experiment_key",
            "online",
            "mode",
        ],
        _ => &["enabled", "output_path", "job_name"],
    };
    m.forbid_extra(ctx, known);
    let enabled = m.bool(ctx, "enabled", false);
    match key {
        "csv_monitor" | "tensorboard" => {
            let c = MonitorConfig {
                enabled,
                output_path: m.str(ctx, "output_path", "").to_string(),
                job_name: m.str(ctx, "job_name", "DeepSpeedJobName").to_string(),
            };
            if key == "csv_monitor" {
                return Some(c);
            }
        }
        "wandb" => {
            for k in ["group", "team", "project"] {
                let _ = m.opt_str(ctx, k);
            }
        }
        _ => {}
    }
    if enabled {
        ctx.err(
            format!("{key}.enabled"),
            format!("deepspeed_rs does not support the {key} monitor yet (only csv_monitor); set enabled to false"),
        );
    }
    None
}

fn monitors(ctx: &mut Ctx, top: &Obj) -> MonitorConfig {
    for key in ["tensorboard", "wandb", "comet"] {
        let _ = monitor(ctx, top, key);
    }
    monitor(ctx, top, "csv_monitor").unwrap_or(MonitorConfig {
        enabled: false,
        output_path: String::new(),
        job_name: "DeepSpeedJobName".into(),
    })
}

fn checkpoint(ctx: &mut Ctx, top: &Obj) -> CheckpointConfig {
    let mut c = CheckpointConfig {
        tag_validation: TagValidation::Warn,
        load_universal: false,
        use_node_local_storage: false,
        parallel_write_pipeline_stage: false,
    };
    let Some(b) = section(ctx, top, "checkpoint") else {
        return c;
    };
    b.warn_extra(
        ctx,
        &[
            "tag_validation",
            "load_universal",
            "use_node_local_storage",
            "parallel_write",
        ],
    );
    if let Some(v) = b.get("tag_validation") {
        let up = v.as_str().map(str::to_uppercase).unwrap_or_else(|| show(v));
        match up.as_str() {
            "WARN" => c.tag_validation = TagValidation::Warn,
            "IGNORE" => c.tag_validation = TagValidation::Ignore,
            "FAIL" => c.tag_validation = TagValidation::Fail,
            _ => ctx.err(
                b.at("tag_validation"),
                format!("Checkpoint config contains invalid tag_validation value of {up}, expecting one of ['WARN', 'IGNORE', 'FAIL']"),
            ),
        }
    }
    c.load_universal = b.bool(ctx, "load_universal", false);
    c.use_node_local_storage = b.bool(ctx, "use_node_local_storage", false);
    if let Some(pw) = section(ctx, &b, "parallel_write") {
        pw.warn_extra(ctx, &["pipeline_stage"]);
        c.parallel_write_pipeline_stage = pw.bool(ctx, "pipeline_stage", false);
    }
    c
}

fn timers(ctx: &mut Ctx, top: &Obj) -> ThroughputTimerConfig {
    let mut c = ThroughputTimerConfig {
        enabled: true,
        synchronized: true,
    };
    if let Some(t) = section(ctx, top, "timers") {
        t.warn_extra(ctx, &["throughput"]);
        if let Some(th) = section(ctx, &t, "throughput") {
            th.forbid_extra(ctx, &["enabled", "synchronized"]);
            c.enabled = th.bool(ctx, "enabled", true);
            c.synchronized = th.bool(ctx, "synchronized", true);
        }
    }
    c
}

fn comms_logger(ctx: &mut Ctx, top: &Obj) -> CommsLoggerConfig {
    let mut c = CommsLoggerConfig {
        enabled: false,
        verbose: false,
        prof_all: true,
        prof_ops: Vec::new(),
        debug: false,
    };
    if let Some(b) = section(ctx, top, "comms_logger") {
        b.forbid_extra(
            ctx,
            &["enabled", "verbose", "prof_all", "prof_ops", "debug"],
        );
        c.enabled = b.bool(ctx, "enabled", false);
        c.verbose = b.bool(ctx, "verbose", false);
        c.prof_all = b.bool(ctx, "prof_all", true);
        c.debug = b.bool(ctx, "debug", false);
        match b.get("prof_ops") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                c.prof_ops = a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
            }
            Some(v) => ctx.err(
                b.at("prof_ops"),
                format!("expected a list of op names, got {}", show(v)),
            ),
        }
    }
    c
}

/// Whether a value configures something: not null, false, 0, "" or an empty object/array.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Features deepspeed_rs does not have: an error naming the key when configured.
fn unsupported(ctx: &mut Ctx, top: &Obj) {
    let sections: &[(&str, &str)] = &[
        ("pipeline", "pipeline parallelism"),
        ("sparse_attention", "sparse attention"),
        ("aio", "asynchronous I/O (it serves NVMe offload)"),
        ("compression_training", "compression training"),
        (
            "weight_quantization",
            "weight quantization (an inference feature)",
        ),
        ("moe", "mixture of experts (expert parallelism)"),
    ];
    for (key, what) in sections {
        if top.get(key).is_some_and(truthy) {
            ctx.err(
                *key,
                format!("deepspeed_rs does not support {what} yet; remove the {key:?} section"),
            );
        }
    }
    for k in top.map.keys() {
        if k != "use_data_before_expert_parallelism"
            && k.contains("expert")
            && top.get(k).is_some_and(truthy)
        {
            ctx.err(k.clone(), "deepspeed_rs does not support mixture of experts (expert parallelism) yet; remove the key");
        }
    }
    let enabled: &[(&str, &str)] = &[
        ("elasticity", "elastic training"),
        ("autotuning", "autotuning"),
        ("hybrid_engine", "the hybrid engine"),
        (
            "data_efficiency",
            "data efficiency (curriculum learning, random-LTD)",
        ),
        ("curriculum_learning", "curriculum learning"),
        ("progressive_layer_drop", "progressive layer drop"),
        ("eigenvalue", "eigenvalue computation"),
        ("quantize_training", "quantization-aware training"),
        ("flops_profiler", "the flops profiler"),
        ("nebula", "Nebula checkpointing"),
        ("torch_autocast", "torch autocast"),
    ];
    for (key, what) in enabled {
        if let Some(s) = section(ctx, top, key)
            && s.get("enabled").is_some_and(truthy)
        {
            ctx.err(format!("{key}.enabled"), format!("deepspeed_rs does not support {what} yet; set enabled to false or remove the {key:?} section"));
        }
    }
    if let Some(c) = section(ctx, top, "compile")
        && (c.get("deepcompile").is_some_and(truthy) || c.get("enabled").is_some_and(truthy))
    {
        ctx.err(
            "compile",
            "deepspeed_rs does not support DeepCompile yet; remove the \"compile\" section",
        );
    }
    if let Some(tp) = section(ctx, top, "tensor_parallel") {
        let n = tp.uint(ctx, "autotp_size", 0);
        if n > 1 {
            ctx.err(tp.at("autotp_size"), format!("deepspeed_rs does not support tensor parallelism (AutoTP) yet; got {n}, use 0 or 1"));
        }
    }
    for key in ["graph_harvesting", "use_data_before_expert_parallelism"] {
        if top.bool(ctx, key, false) {
            ctx.err(
                key,
                format!("deepspeed_rs does not support {key} yet; set it to false"),
            );
        }
    }
    if let Some(ac) = section(ctx, top, "activation_checkpointing") {
        let known = [
            "partition_activations",
            "cpu_checkpointing",
            "contiguous_memory_optimization",
            "number_checkpoints",
            "synchronize_checkpoint_boundary",
            "profile",
        ];
        ac.warn_extra(ctx, &known);
        if known.iter().any(|k| ac.get(k).is_some_and(truthy)) {
            ctx.warn(
                "activation_checkpointing",
                "has no effect in deepspeed_rs: the host runs the forward pass, so activation checkpointing is the host's to do (DeepSpeed applies these settings only through deepspeed.checkpointing, which the model calls)",
            );
        }
    }
}

/// Checks across sections (DeepSpeed's `_do_error_check`, the engine's optimizer sanity
/// check, ZeRO-2's reduce-scatter assertions).
fn cross_checks(ctx: &mut Ctx, cfg: &DsConfig, family: Option<Family>) {
    let stage = cfg.zero.stage;
    if let Some(f) = family {
        if stage > 0 && !f.zero_tested() && !cfg.zero_allow_untested_optimizer {
            ctx.err(
                "optimizer.type",
                "You are using an untested ZeRO Optimizer. Please add <\"zero_allow_untested_optimizer\": true> in the configuration file to use it.",
            );
        }
        if stage > 0 && cfg.zero.cpu_offload_optimizer() && !f.has_cpu_optimizer() {
            ctx.err(
                "zero_optimization.offload_optimizer.device",
                format!(
                    "optimizer offload needs a CPU optimizer, and there is none for {} (offload works with Adam, AdamW, Adagrad and Lion)",
                    cfg.optimizer.as_ref().map_or("", |o| o.type_name.as_str())
                ),
            );
        }
    }
    if stage == 2 && cfg.zero.reduce_scatter {
        if cfg.gradient_predivide_factor != 1.0 {
            ctx.err("gradient_predivide_factor", "gradient_predivide_factor != 1.0 is not yet supported with ZeRO-2 with reduce scatter enabled");
        }
        if cfg.prescale_gradients {
            ctx.err(
                "prescale_gradients",
                "pre-scale gradients is not yet supported with ZeRO-2 with reduce scatter enabled",
            );
        }
    }
}
