//! `zero_optimization` (DeepSpeed's pydantic `DeepSpeedZeroConfig`: strict keys, aliases,
//! deprecated names) and its offload blocks.

use serde_json::{Map, Value};

use super::ctx::{Ctx, Obj, section, show};
use super::{OffloadConfig, ZeroConfig, suggest};

/// A field's type and default.
#[derive(Clone, Copy)]
enum Kind {
    Bool(bool),
    /// An integer with its default and minimum.
    Int(i128, i128),
    /// An optional object (`null` by default).
    Dict,
}

/// The fields that land in [`ZeroConfig::other`]: (canonical name, un-prefixed field name
/// accepted through `populate_by_name`, kind).
const OTHER: &[(&str, Option<&str>, Kind)] = &[
    ("use_multi_rank_bucket_allreduce", None, Kind::Bool(true)),
    ("load_from_fp32_weights", None, Kind::Bool(true)),
    ("elastic_checkpoint", None, Kind::Bool(false)),
    ("sub_group_size", None, Kind::Int(1_000_000_000, 0)),
    (
        "stage3_prefetch_bucket_size",
        Some("prefetch_bucket_size"),
        Kind::Int(50_000_000, 0),
    ),
    (
        "stage3_param_persistence_threshold",
        Some("param_persistence_threshold"),
        Kind::Int(100_000, 0),
    ),
    (
        "stage3_model_persistence_threshold",
        Some("model_persistence_threshold"),
        Kind::Int(i64::MAX as i128, 0),
    ),
    (
        "stage3_max_live_parameters",
        Some("max_live_parameters"),
        Kind::Int(1_000_000_000, 0),
    ),
    (
        "stage3_max_reuse_distance",
        Some("max_reuse_distance"),
        Kind::Int(1_000_000_000, 0),
    ),
    (
        "stage3_gather_16bit_weights_on_model_save",
        Some("gather_16bit_weights_on_model_save"),
        Kind::Bool(false),
    ),
    (
        "stage3_module_granularity_threshold",
        Some("module_granularity_threshold"),
        Kind::Int(0, i64::MIN as i128),
    ),
    (
        "stage3_use_all_reduce_for_fetch_params",
        Some("use_all_reduce_for_fetch_params"),
        Kind::Bool(false),
    ),
    ("ignore_unused_parameters", None, Kind::Bool(true)),
    ("legacy_stage1", None, Kind::Bool(false)),
    ("round_robin_gradients", None, Kind::Bool(false)),
    ("zero_hpz_partition_size", None, Kind::Int(1, 0)),
    ("zero_quantized_weights", None, Kind::Bool(false)),
    (
        "zero_quantized_nontrainable_weights",
        None,
        Kind::Bool(false),
    ),
    ("zero_quantized_gradients", None, Kind::Bool(false)),
    ("zeropp_loco_param", None, Kind::Dict),
    ("mics_shard_size", None, Kind::Int(-1, i64::MIN as i128)),
    ("mics_hierarchical_params_gather", None, Kind::Bool(false)),
    ("memory_efficient_linear", None, Kind::Bool(true)),
    ("pipeline_loading_checkpoint", None, Kind::Bool(false)),
    ("override_module_apply", None, Kind::Bool(true)),
    ("log_trace_cache_warnings", None, Kind::Bool(false)),
];

/// The fields held in [`ZeroConfig`]'s own members, and the deprecated names.
const OWN: &[&str] = &[
    "stage",
    "contiguous_gradients",
    "overlap_comm",
    "reduce_scatter",
    "reduce_bucket_size",
    "allgather_partitions",
    "allgather_bucket_size",
    "offload_optimizer",
    "offload_param",
];
const DEPRECATED: &[&str] = &[
    "cpu_offload",
    "cpu_offload_param",
    "cpu_offload_use_pin_memory",
    "stage3_gather_fp16_weights_on_model_save",
];

const OPT_KEYS: &[&str] = &[
    "device",
    "nvme_path",
    "buffer_count",
    "pin_memory",
    "pipeline_read",
    "pipeline_write",
    "fast_init",
    "ratio",
];
const PARAM_KEYS: &[&str] = &[
    "device",
    "nvme_path",
    "buffer_count",
    "buffer_size",
    "max_in_cpu",
    "pin_memory",
];

/// Every key `zero_optimization` accepts (canonical, un-prefixed and deprecated names).
pub(crate) fn known_keys() -> Vec<&'static str> {
    let mut k: Vec<&str> = OWN.to_vec();
    k.extend(DEPRECATED);
    for (name, alt, _) in OTHER {
        k.push(name);
        k.extend(alt.iter());
    }
    k
}

/// DeepSpeed's default offload block for `device`.
fn default_offload(device: &str, optimizer: bool) -> OffloadConfig {
    let mut other = Map::new();
    if optimizer {
        for k in ["pipeline_read", "pipeline_write", "fast_init"] {
            other.insert(k.into(), Value::Bool(false));
        }
    } else {
        other.insert("buffer_size".into(), Value::from(100_000_000u64));
        other.insert("max_in_cpu".into(), Value::from(1_000_000_000u64));
    }
    OffloadConfig {
        device: device.to_string(),
        nvme_path: None,
        buffer_count: if optimizer { 4 } else { 5 },
        pin_memory: false,
        ratio: 1.0,
        other,
    }
}

fn offload(ctx: &mut Ctx, o: &Obj, optimizer: bool) -> OffloadConfig {
    o.forbid_extra(ctx, if optimizer { OPT_KEYS } else { PARAM_KEYS });
    let mut c = default_offload("none", optimizer);
    let device = o.str(ctx, "device", "none");
    if ["none", "cpu", "nvme"].contains(&device) {
        c.device = device.to_string();
    } else {
        ctx.err(
            o.at("device"),
            format!("expected \"none\", \"cpu\" or \"nvme\", got {device:?}"),
        );
    }
    c.nvme_path = o.opt_str(ctx, "nvme_path").map(str::to_string);
    c.buffer_count = o.uint(ctx, "buffer_count", c.buffer_count);
    c.pin_memory = o.bool(ctx, "pin_memory", false);
    if optimizer {
        for k in ["pipeline_read", "pipeline_write", "fast_init"] {
            c.other.insert(k.into(), Value::Bool(o.bool(ctx, k, false)));
        }
        c.ratio = o.num(ctx, "ratio", 1.0, "a number from 0 to 1", |x| {
            (0.0..=1.0).contains(&x)
        });
    } else {
        for (k, d) in [
            ("buffer_size", 100_000_000u64),
            ("max_in_cpu", 1_000_000_000),
        ] {
            c.other.insert(k.into(), Value::from(o.uint(ctx, k, d)));
        }
    }
    c
}

/// The value given under the canonical name or the other accepted name (an error when both
/// are given).
fn aliased(
    ctx: &mut Ctx,
    z: &Obj,
    name: &'static str,
    alt: Option<&'static str>,
) -> Option<&'static str> {
    let a = z.has(name);
    let b = alt.is_some_and(|x| z.has(x));
    match (a, b) {
        (true, true) => {
            let alt = alt.unwrap_or_default();
            ctx.err(
                z.at(alt),
                format!("given twice, as {name} and as {alt} (the same field); keep one"),
            );
            None
        }
        (true, false) => Some(name),
        (false, true) => alt,
        (false, false) => None,
    }
}

/// Parses `zero_optimization` (or its old bool form); `top` is the document.
pub(crate) fn parse(ctx: &mut Ctx, top: &Obj) -> ZeroConfig {
    let empty = Map::new();
    let mut z_obj = Obj::new(&empty, "zero_optimization");
    let mut stage: u8 = 0;
    let mut old_form = false;
    match top.get("zero_optimization") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            old_form = true;
            stage = u8::from(*b);
            ctx.warn(
                "zero_optimization",
                "this format of ZeRO optimization setup is deprecated (a bool means stage 1); use {\"stage\": 1} and the other zero_optimization keys",
            );
        }
        Some(Value::Object(m)) => z_obj = Obj::new(m, "zero_optimization"),
        Some(v) => ctx.err(
            "zero_optimization",
            format!(
                "expected an object (or the deprecated true/false), got {}",
                show(v)
            ),
        ),
    }
    let z = &z_obj;

    // Unknown keys: errors (pydantic extra="forbid"), with a hint for top-level keys.
    let known = known_keys();
    for k in z.map.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        let hint = if super::TOP_LEVEL_KEYS.contains(&k.as_str()) {
            format!("; {k} is a top-level key, not part of zero_optimization")
        } else {
            suggest::did_you_mean(k, known.iter().copied())
        };
        ctx.err(
            z.at(k),
            format!("Extra inputs are not permitted ({k:?} is not a zero_optimization key{hint})"),
        );
    }

    if !old_form && let Some(v) = z.get("stage") {
        match super::ctx::integral(v) {
            Some(n @ 0..=3) => stage = n as u8,
            Some(n) if n > 3 => ctx.err(
                z.at("stage"),
                format!("DeepSpeedConfig: Maximum supported ZeRO stage is 3 (got {n})"),
            ),
            _ => ctx.err(
                z.at("stage"),
                format!("expected 0, 1, 2 or 3, got {}", show(v)),
            ),
        }
    }

    let allgather_default = if old_form {
        top.uint(ctx, "allgather_size", 500_000_000)
    } else {
        500_000_000
    };
    let mut cfg = ZeroConfig {
        stage,
        contiguous_gradients: z.bool(ctx, "contiguous_gradients", true),
        overlap_comm: z.opt_bool(ctx, "overlap_comm").unwrap_or(stage == 3),
        reduce_scatter: z.bool(ctx, "reduce_scatter", true),
        reduce_bucket_size: z.uint(ctx, "reduce_bucket_size", 500_000_000),
        allgather_partitions: z.bool(ctx, "allgather_partitions", true),
        allgather_bucket_size: z.uint(ctx, "allgather_bucket_size", allgather_default),
        offload_optimizer: section(ctx, z, "offload_optimizer").map(|o| offload(ctx, &o, true)),
        offload_param: section(ctx, z, "offload_param").map(|o| offload(ctx, &o, false)),
        other: Map::new(),
    };

    // Deprecated names.
    let deprecated_pair = |ctx: &mut Ctx, old: &str, new: &str, present: bool| {
        if present {
            ctx.err(
                z.at(old),
                format!("Cannot provide deprecated parameter '{old}' and replacing parameter '{new}' together"),
            );
        } else {
            ctx.warn(
                z.at(old),
                format!("Config parameter {old} is deprecated use {new} instead"),
            );
        }
    };
    if z.has("cpu_offload") {
        deprecated_pair(
            ctx,
            "cpu_offload",
            "offload_optimizer",
            z.has("offload_optimizer"),
        );
        if z.opt_bool(ctx, "cpu_offload") == Some(true) && cfg.offload_optimizer.is_none() {
            cfg.offload_optimizer = Some(default_offload("cpu", true));
        }
    }
    if z.has("cpu_offload_param") {
        deprecated_pair(
            ctx,
            "cpu_offload_param",
            "offload_param",
            z.has("offload_param"),
        );
        if z.opt_bool(ctx, "cpu_offload_param") == Some(true) && cfg.offload_param.is_none() {
            cfg.offload_param = Some(default_offload("cpu", false));
        }
    }
    if z.has("cpu_offload_use_pin_memory") {
        let _ = z.opt_bool(ctx, "cpu_offload_use_pin_memory");
        ctx.warn(
            z.at("cpu_offload_use_pin_memory"),
            "Config parameter cpu_offload_use_pin_memory is deprecated use offload_param or offload_optimizer instead (ignored; set pin_memory in those blocks)",
        );
    }

    for &(name, alt, kind) in OTHER {
        let given = aliased(ctx, z, name, alt);
        let v = match kind {
            Kind::Bool(d) => Value::Bool(given.map_or(d, |k| z.bool(ctx, k, d))),
            Kind::Int(d, min) => {
                Value::from(given.map_or(d, |k| z.int(ctx, k, d, min, i64::MAX as i128)) as i64)
            }
            Kind::Dict => match given.and_then(|k| z.get(k)) {
                None | Some(Value::Null) => Value::Null,
                Some(v @ Value::Object(_)) => v.clone(),
                Some(v) => {
                    ctx.err(
                        z.at(given.unwrap_or(name)),
                        format!("expected an object or null, got {}", show(v)),
                    );
                    Value::Null
                }
            },
        };
        cfg.other.insert(name.to_string(), v);
    }
    let fp16_name = "stage3_gather_fp16_weights_on_model_save";
    if z.has(fp16_name) {
        let new = "stage3_gather_16bit_weights_on_model_save";
        let given_new = z.has(new) || z.has("gather_16bit_weights_on_model_save");
        deprecated_pair(ctx, fp16_name, new, given_new);
        if !given_new {
            let b = z.bool(ctx, fp16_name, false);
            cfg.other.insert(new.into(), Value::Bool(b));
        }
    }

    checks(ctx, &cfg);
    cfg
}

fn other_bool(cfg: &ZeroConfig, k: &str) -> bool {
    cfg.other.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn other_int(cfg: &ZeroConfig, k: &str) -> i64 {
    cfg.other.get(k).and_then(Value::as_i64).unwrap_or(0)
}

/// Checks across fields, and the features deepspeed_rs does not have.
fn checks(ctx: &mut Ctx, cfg: &ZeroConfig) {
    let p = "zero_optimization";
    if let Some(o) = &cfg.offload_optimizer {
        if o.ratio < 1.0 && cfg.stage != 3 {
            ctx.err(
                format!("{p}.offload_optimizer.ratio"),
                "Partial offloading only supported for ZeRO Stage 3.",
            );
        }
        if o.device == "nvme" {
            ctx.err(
                format!("{p}.offload_optimizer.device"),
                "deepspeed_rs does not support NVMe offload (ZeRO-Infinity) yet; use \"cpu\" or \"none\"",
            );
        }
        if o.device == "cpu" && cfg.stage == 0 {
            ctx.err(
                format!("{p}.offload_optimizer.device"),
                "optimizer offload needs ZeRO stage 1, 2 or 3 (zero_optimization.stage is 0)",
            );
        }
    }
    if let Some(o) = &cfg.offload_param
        && o.device != "none"
    {
        ctx.err(
            format!("{p}.offload_param.device"),
            format!(
                "deepspeed_rs does not support parameter offload (ZeRO-3 offload_param to {}) yet; remove offload_param or set its device to \"none\"",
                o.device
            ),
        );
    }
    for k in [
        "zero_quantized_weights",
        "zero_quantized_nontrainable_weights",
        "zero_quantized_gradients",
    ] {
        if other_bool(cfg, k) {
            ctx.err(
                format!("{p}.{k}"),
                "deepspeed_rs does not support ZeRO++ quantized communication yet; set it to false",
            );
        }
    }
    let hpz = other_int(cfg, "zero_hpz_partition_size");
    if hpz > 1 {
        ctx.err(
            format!("{p}.zero_hpz_partition_size"),
            format!("deepspeed_rs does not support ZeRO++ hierarchical partitioning (hpZ) yet; got {hpz}, use 1"),
        );
    }
    if !cfg
        .other
        .get("zeropp_loco_param")
        .is_none_or(Value::is_null)
    {
        ctx.err(
            format!("{p}.zeropp_loco_param"),
            "deepspeed_rs does not support ZeRO++ LoCo yet; remove the key",
        );
    }
    let mics = other_int(cfg, "mics_shard_size");
    if mics > 0 {
        ctx.err(
            format!("{p}.mics_shard_size"),
            format!("deepspeed_rs does not support MiCS yet; got {mics}, use -1"),
        );
    }
    if other_bool(cfg, "legacy_stage1") {
        ctx.err(
            format!("{p}.legacy_stage1"),
            "the legacy stage 1 implementation is no longer supported (DeepSpeed raises too); remove the key",
        );
    }
    if other_bool(cfg, "elastic_checkpoint") {
        ctx.warn(
            format!("{p}.elastic_checkpoint"),
            "elastic_checkpoint is a legacy option that DeepSpeed no longer supports; ignored",
        );
    }
    if matches!(cfg.stage, 1 | 2) && cfg.allgather_bucket_size % 2 != 0 {
        ctx.err(
            format!("{p}.allgather_bucket_size"),
            "allgather_bucket_size must be a multiple of nccl_start_alignment_factor, 2",
        );
    }
}
